#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Counts test cases from a meson testlog.json: "<passed> <failed>". Each doctest executable
# contributes its own case counts ("[doctest] test cases: 11 | 10 passed | 1 failed");
# a test that failed without a doctest summary (crash, timeout, sanitizer report at exit)
# counts as one failure, and a failed test whose summary shows no failed case adds one.
# A pytest run (the Python package's tests, suite 'python') contributes the counts of its summary
# line ("3 failed, 40 passed, 1 skipped in 2.1s"): errors count as failed, skips not at all.
import json
import re
import sys

SUMMARY = re.compile(r"\[doctest\] test cases:\s*\d+\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed")
PYTEST = re.compile(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in [0-9.]+s(?: \([0-9:]+\))?\s*=*$", re.M)


def pytest_counts(stdout):
    """(passed, failed) from pytest's last summary line, or None when there is none."""
    found = PYTEST.findall(stdout)
    if not found:
        return None
    counts = {}
    for part in found[-1].split(", "):
        n, what = part.split(" ", 1)
        counts[what] = counts.get(what, 0) + int(n)
    passed = counts.get("passed", 0) + counts.get("xpassed", 0)
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    return passed, failed


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
    py_counts = None if m else pytest_counts(test.get("stdout") or "")
    if m or py_counts:
        p, f = (int(x) for x in m[-1]) if m else py_counts
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
