#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Prints the ninja targets that the named meson tests need (their programs and `depends:`),
# one per line, relative to the build directory:
#   scripts/test-targets.py BUILD_DIR TEST...
# scripts/test.sh builds them ahead of `meson test NAME...`, which would build the same set.
# Exit status 2 names a test the build directory does not define.
import json
import os
import subprocess
import sys


def introspect(build_dir, what):
    return json.loads(subprocess.check_output(["meson", "introspect", what, build_dir]))


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: test-targets.py BUILD_DIR TEST...")
    build_dir, names = sys.argv[1], sys.argv[2:]
    files = {t["id"]: t["filename"] for t in introspect(build_dir, "--targets")}
    tests = {t["name"]: t for t in introspect(build_dir, "--tests")}
    missing = [n for n in names if n not in tests]
    if missing:
        print(f"test-targets.py: no test named {', '.join(missing)} in {build_dir}", file=sys.stderr)
        sys.exit(2)
    root = os.path.realpath(build_dir)
    wanted = []
    for name in names:
        for target_id in tests[name]["depends"]:
            for path in files.get(target_id, []):
                rel = os.path.relpath(os.path.realpath(path), root)
                if rel not in wanted:
                    wanted.append(rel)
    print("\n".join(wanted))


main()
