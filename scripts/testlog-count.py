#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Counts test cases from a meson testlog.json: "<passed> <failed>". Each doctest executable
# contributes its own case counts ("[doctest] test cases: 11 | 10 passed | 1 failed");
# a test that failed without a doctest summary (crash, timeout, sanitizer report at exit)
# counts as one failure, and a failed test whose summary shows no failed case adds one.
import json
import re
import sys

SUMMARY = re.compile(r"\[doctest\] test cases:\s*\d+\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed")
passed = failed = 0
try:
    lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
except OSError:
    print("0 1")  # no log: the test run itself failed
    sys.exit(0)
for line in lines:
    if not line.strip():
        continue
    test = json.loads(line)
    result = test.get("result", "ERROR")
    ok = result in ("OK", "EXPECTEDFAIL")
    if result == "SKIP":
        continue
    m = SUMMARY.findall(test.get("stdout") or "")
    if m:
        p, f = (int(x) for x in m[-1])
        passed += p
        failed += f
        if not ok and f == 0:
            failed += 1
    elif ok:
        passed += 1
    else:
        failed += 1
    if not ok:
        # The last lines of its output name the reason (a CI log may show only its tail).
        tail = [l for l in (test.get("stdout") or "").splitlines() if l.strip()][-3:]
        print(f"FAILED: {test.get('name')} ({result})" + "".join(f"\n    | {l}" for l in tail), file=sys.stderr)
print(passed, failed)
