#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What the public headers may show. Usage: public_headers_test.py INCLUDE_DIR HEADER...

Every header in INCLUDE_DIR/fabric_shm must be in the list meson compiles alone (the build
of this test compiled each of them on its own, see tests/api/meson.build), and none may
expose the library's internals: a shared-memory layout, an Impl defined beyond its opaque
forward declaration, a region-kind registration hook, a private header or a fault point.
"""
import os
import re
import sys

include_dir, listed = sys.argv[1], set(sys.argv[2:])
header_dir = os.path.join(include_dir, "fabric_shm")
present = {f for f in os.listdir(header_dir) if f.endswith(".h")}
failures = []
for missing in sorted(present - listed):
    failures.append(f"{missing}: not in tests/api/meson.build's public_headers (not compiled alone)")
for gone in sorted(listed - present):
    failures.append(f"{gone}: listed in tests/api/meson.build but not in {header_dir}")

FORBIDDEN = [
    (re.compile(r"\blayout::"), "names a shared-memory layout type"),
    (re.compile(r'#include\s+"(layout|store|mq|worker|jobs)/'), "includes a private header"),
    (re.compile(r'#include\s+"(pool_impl|region_kinds|crash_point|private|owner_lock|futex|seqlock_copy|cpu_relax)\.h"'),
     "includes a private header"),
    (re.compile(r"\bstruct\s+Impl\s*\{"), "defines an Impl (only `struct Impl;` may appear)"),
    (re.compile(r"\bregister_\w*region_kind"), "exposes a region-kind registration hook"),
    (re.compile(r"\bRegionKindOps\b"), "exposes the region-kind hook table"),
    (re.compile(r"\bg_mq_after_claim_hook\b|\bFABRIC_(CRASH|PAUSE)_POINT\b"), "exposes a fault point"),
    (re.compile(r"\bstd::byte\*\s+base\(\)|\bheader\(\)\s*const|\btemplate\s*<class T>\s*T\*\s*at\("),
     "exposes the mapping (base/header/at)"),
]
for name in sorted(present):
    with open(os.path.join(header_dir, name), encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            code = line.split("//")[0]
            for pattern, why in FORBIDDEN:
                if pattern.search(code):
                    failures.append(f"{name}:{lineno}: {why}: {line.strip()}")
for f in failures:
    print("FAIL:", f)
print(f"{len(present)} public headers checked, {len(failures)} problems")
sys.exit(1 if failures else 0)
