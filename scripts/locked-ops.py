#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Locked instructions per object and step, counted from callgrind dumps made with
# --dump-instr=yes (scripts/profile-steps.sh --locked): callgrind gives the execution count of
# every instruction address; objdump says which of those instructions are locked (a `lock`
# prefix, or `xchg` with a memory operand, which locks implicitly). Callgrind's addresses are
# relative to each object's load address, as objdump's are. x86-64 only.
# Usage: scripts/locked-ops.py DIR [OBJECTS_PER_STEP]
import collections
import glob
import os
import re
import subprocess
import sys

out = sys.argv[1]
per_step = int(sys.argv[2]) if len(sys.argv) > 2 else 4096


# Compressed names ("fn=(12) name" once, then "fn=(12)") are numbered across all dumps of a run.
names = {"ob": {}, "fn": {}, "fl": {}}


def parse_dump(path):
    """{(object, function): {address: count}} of self cost (Ir), and the trigger name."""
    ob = fn = None
    trigger = None
    costs = collections.defaultdict(lambda: collections.defaultdict(int))
    last = 0
    skip_next = False
    with open(path, errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line.startswith("desc: Trigger:"):
                m = re.search(r"Client Request: (.*)$", line)
                trigger = m.group(1) if m else None
                continue
            m = re.match(r"^(ob|fn|fl|fi|fe|cob|cfn|cfl|cfi)=\((\d+)\)(?: (.*))?$", line)
            if m:
                kind, ident, name = m.group(1), m.group(2), m.group(3)
                table = names["ob" if kind in ("ob", "cob") else "fn" if kind in ("fn", "cfn") else "fl"]
                if name is not None:
                    table[ident] = name
                if kind == "ob":
                    ob = names["ob"].get(ident)
                elif kind == "fn":
                    fn = names["fn"].get(ident)
                continue
            if line.startswith("calls="):
                skip_next = True
                continue
            # positions "instr line" (--dump-instr=yes), then the Ir cost
            m = re.match(r"^(0x[0-9a-fA-F]+|[+-]\d+|\*)\s+(?:0x[0-9a-fA-F]+|[+-]?\d+|\*)\s+(\d+)", line)
            if not m:
                continue
            pos = m.group(1)
            if pos.startswith("0x"):
                addr = int(pos, 16)
            elif pos == "*":
                addr = last
            else:
                addr = last + int(pos)
            last = addr
            if skip_next:
                skip_next = False
                continue
            costs[(ob, fn)][addr] += int(m.group(2))
    return trigger, costs


_disasm = {}


def disasm(obj):
    """({address: is_locked}, {demangled function: entry address}) of an object file."""
    if obj in _disasm:
        return _disasm[obj]
    locked, syms = {}, {}
    try:
        text = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", obj], capture_output=True, text=True,
                              check=False).stdout
    except OSError:
        text = ""
    for line in text.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
        if m:
            syms[m.group(2)] = int(m.group(1), 16)
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
        if m:
            ins = m.group(2).strip()
            is_locked = ins.startswith("lock ") or (ins.startswith("xchg") and "(" in ins)
            locked[int(m.group(1), 16)] = is_locked
    _disasm[obj] = (locked, syms)
    return _disasm[obj]


steps = collections.OrderedDict()
for f in sorted(glob.glob(os.path.join(out, "callgrind.out.*")), key=lambda p: [int(x) for x in re.findall(r"\d+", p)]):
    trigger, costs = parse_dump(f)
    if not trigger or trigger == "round start":
        continue
    total = 0
    where = collections.Counter()
    for obj in {o for (o, _) in costs}:
        if not obj or not os.path.exists(obj):
            continue
        # callgrind writes addresses relative to each object's load address (as objdump shows
        # them); a position-dependent executable has no offset either.
        base = 0
        locked, _ = disasm(obj)
        for (o, fn), addrs in costs.items():
            if o != obj:
                continue
            for a, c in addrs.items():
                if locked.get(a - base):
                    total += c
                    where[fn] += c
    steps.setdefault(trigger, []).append((total, where))

print("| step | locked instructions per object | where (per object) |")
print("|---|---:|---|")
for step, runs in steps.items():
    total, where = runs[-1]  # the last round: the steady state (the first one creates keys)
    if "--all" in sys.argv: print(step, [r[0] / per_step for r in runs])
    detail = ", ".join(f"{fn.split('(')[0]} {c / per_step:.2f}" for fn, c in where.most_common(12))
    print(f"| {step} | {total / per_step:.2f} | {detail} |")
