#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Instructions per object for each step of the recipe's pipeline, counted by callgrind (this VM
# has no PMU, so `perf stat -e instructions` is "not supported"). Runs the pipeline scenario's
# one-process cost breakdown (1 KiB objects, 4096 per step and round) under
# `valgrind --tool=callgrind`; the bench dumps the counters after every step
# (bench/scenario_pipeline.cpp, FABRIC_BENCH_STEP_DUMP), and this script prints, per step, the
# fewest instructions per object over the rounds, and the most. The rounds reuse their keys: the
# first finds no stored object under them, the later ones overwrite (the pipeline benchmark's
# steady state, where the keys cycle). Deterministic (no timing), so it compares
# builds on a loaded machine. The last step is the worker side run by the library's WorkerLoop
# (what fabric-shm-worker pays per message besides the handler); its untimed set-up is dumped as
# "setup: ..." and skipped. The batched steps (put_many, send_batch of 16) are listed too; the
# sum covers the hand-written job's steps only.
# Usage: scripts/profile-steps.sh [--locked] [BUILD_DIR] [OUT_DIR]
#   --locked   also count locked instructions per object and step (callgrind --dump-instr=yes,
#              then scripts/locked-ops.py on the same dumps; slower)
#   BUILD_DIR  default build (must have the bench: -Dbench=true, the default)
#   OUT_DIR    where callgrind's files go (default: a temporary directory, removed)
# Needs valgrind (scripts/install-deps.sh valgrind).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
locked=""
if [ "${1:-}" = "--locked" ]; then locked=1; shift; fi
build="${1:-build}"
out="${2:-}"
bench="$build/bench/fabric-shm-bench"
[ -x "$bench" ] || { echo "profile-steps: $bench not built (ninja -C $build bench/fabric-shm-bench)" >&2; exit 2; }
command -v valgrind >/dev/null || bash scripts/install-deps.sh valgrind
cleanup=""
if [ -z "$out" ]; then
    out=$(mktemp -d)
    cleanup="$out"
fi
trap '[ -n "$cleanup" ] && rm -rf "$cleanup"' EXIT
mkdir -p "$out"
# --collect-systime=no and no cache simulation: instruction counts only (Ir).
valgrind --tool=callgrind ${locked:+--dump-instr=yes} --callgrind-out-file="$out/callgrind.out.%p" \
    "$bench" pipeline --sizes 1K --configs none --quick --out "$out/cost.json" >"$out/valgrind.log" 2>&1 || {
    tail -20 "$out/valgrind.log" >&2
    exit 1
}
python3 - "$out" <<'EOF'
import glob, os, re, sys
out = sys.argv[1]
best = {}
worst = {}
order = []
def dump_number(path):  # callgrind.out.PID.N: dumps in the order they were taken
    tail = path.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0
for f in sorted(glob.glob(os.path.join(out, "callgrind.out.*")), key=dump_number):
    trigger = total = None
    with open(f, errors="replace") as fh:
        for line in fh:
            if line.startswith("desc: Trigger:"):
                m = re.search(r"Client Request: (.*)$", line.strip())
                trigger = m.group(1) if m else None
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    if not trigger or total is None or trigger == "round start" or trigger.startswith("setup:"):
        continue
    if trigger not in best:
        order.append(trigger)
        best[trigger] = worst[trigger] = total
    best[trigger] = min(best[trigger], total)
    worst[trigger] = max(worst[trigger], total)
if not best:
    sys.exit("profile-steps: no step dumps found (was the bench built with valgrind/callgrind.h?)")
n = 4096
print("| step | instructions per object | most, in any round |")
print("|---|---:|---:|")
s = 0
for t in order:
    print(f"| {t} | {best[t] / n:.0f} | {worst[t] / n:.0f} |")
    # The WorkerLoop step and the batched steps (put_many, send_batch) do some of the
    # hand-written steps again: the sum leaves them out.
    if not any(w in t for w in ("WorkerLoop", "put_many", "send_batch")):
        s += best[t] / n
print(f"| sum (the hand-written job's steps) | {s:.0f} | |")
EOF
if [ -n "$locked" ]; then
    echo
    python3 scripts/locked-ops.py "$out"
fi
