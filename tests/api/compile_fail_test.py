#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Misuses of the API that must not compile. Usage:
    compile_fail_test.py SNIPPET_DIR -- COMPILER... -- COMPILE_ARGS...

Each SNIPPET_DIR/*.cpp is compiled with -fsyntax-only. A snippet whose first line is
`// expect-error: REGEX` must fail to compile with a diagnostic matching REGEX (so it fails
for the reason it was written for, not a typo); one whose first line is `// expect-ok` must
compile (it proves the include paths and flags are right, so the failures mean something).
"""
import glob
import os
import re
import subprocess
import sys

args = sys.argv[1:]
snippet_dir = args[0]
sep = args.index("--", 1)
sep2 = args.index("--", sep + 1)
compiler, compile_args = args[sep + 1:sep2], args[sep2 + 1:]
failures = 0
snippets = sorted(glob.glob(os.path.join(snippet_dir, "*.cpp")))
for path in snippets:
    name = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
    proc = subprocess.run(compiler + ["-std=c++20", "-fsyntax-only"] + compile_args + [path],
                          capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if first == "// expect-ok":
        if proc.returncode != 0:
            print(f"FAIL {name}: must compile, but:\n{output}")
            failures += 1
        else:
            print(f"ok   {name}: compiles")
        continue
    m = re.match(r"// expect-error: (.+)", first)
    if not m:
        print(f"FAIL {name}: first line is neither `// expect-ok` nor `// expect-error: REGEX`")
        failures += 1
        continue
    if proc.returncode == 0:
        print(f"FAIL {name}: compiled, but must fail with /{m.group(1)}/")
        failures += 1
    elif not re.search(m.group(1), output):
        print(f"FAIL {name}: failed, but not with /{m.group(1)}/:\n{output}")
        failures += 1
    else:
        print(f"ok   {name}: refused (/{m.group(1)}/)")
print(f"{len(snippets)} snippets, {failures} failures")
sys.exit(1 if failures or not snippets else 0)
