#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks that the torture knows every fault point of the library, and only those.

usage: check_points.py SOURCE_ROOT TORTURE_EXECUTABLE

The library's points are the string literals of FABRIC_CRASH_POINT("...") and
FABRIC_PAUSE_POINT("...") under libfabric_shm/, tools/ and workers/ (a point named by a
variable cannot be listed, so it is an error). The torture's are what `torture --list-points`
prints (tests/torture/torture_points.cpp, one "name roles" line each). A point missing from
the torture could never be armed by it; a name the library no longer has would arm nothing.
"""
import re
import subprocess
import sys
from pathlib import Path

MACRO = re.compile(r'\bFABRIC_(?:CRASH|PAUSE)_POINT\s*\(([^)]*)\)')
LITERAL = re.compile(r'^\s*"([a-z0-9_.]+)"\s*$')


def library_points(root: Path):
    points, errors = {}, []
    for sub in ("libfabric_shm", "tools", "workers"):
        for path in sorted((root / sub).rglob("*")):
            if path.suffix not in (".cpp", ".h") or not path.is_file():
                continue
            for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                for m in MACRO.finditer(line):
                    arg = m.group(1)
                    if arg.strip() == "name":  # the macro's own definition
                        continue
                    lit = LITERAL.match(arg)
                    where = f"{path.relative_to(root)}:{lineno}"
                    if not lit:
                        errors.append(f"{where}: fault point named by an expression ({arg.strip()}); "
                                      "use a string literal so that the torture can list it")
                        continue
                    points.setdefault(lit.group(1), []).append(where)
    return points, errors


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, exe = Path(sys.argv[1]), sys.argv[2]
    lib, errors = library_points(root)
    out = subprocess.run([exe, "--list-points"], check=True, capture_output=True, text=True).stdout
    torture = {line.split()[0] for line in out.splitlines() if line.strip()}
    for name in sorted(set(lib) - torture):
        errors.append(f"{name} ({', '.join(lib[name])}) is not in tests/torture/torture_points.cpp: "
                      "give it the roles that reach it")
    for name in sorted(torture - set(lib)):
        errors.append(f"{name} is in tests/torture/torture_points.cpp but not in the library: remove it")
    for e in errors:
        print("check_points: " + e, file=sys.stderr)
    print(f"check_points: library {len(lib)} points, torture {len(torture)}, {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
