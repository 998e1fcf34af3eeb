#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The scaling curve: the recipe's pipeline (1 KiB objects) with N producers and N workers, one
# partition and one key ring per producer, closed loop, for N = 1, 2, 4, 8 (`fabric-shm-bench
# pipeline --configs scale-N`). Each N is reported as objects/s and as its efficiency: its rate
# over N times scale-1's rate in the same run (the target is 0.7 or more). The workers spin
# where the machine has a CPU for every process (2N CPUs) and park otherwise; an N that needs
# more CPUs than the machine has is still run, and its row says so: on the 2-vCPU development
# VM only N = 1 is a measurement, so this is meant for a machine with 16 cores or more.
# Usage: scripts/bench-scaling.sh [--ns 1,2,4,8] [--repeat K] [--build DIR] [--pin] [--results DIR]
#   --ns       the N to run, scale-1 always included (default 1,2,4,8; at most 8)
#   --repeat   closed-loop runs per N, the median reported (default 3)
#   --build    the meson build with fabric-shm-bench (default build)
#   --pin      every process on a CPU of its own, in order: the N workers, then the N producers
#   --results  where the JSON report and the table go (default bench-results/scaling-<UTC time>)
# Nothing is installed and no server is started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NS=1,2,4,8
REPEAT=3
BUILD=build
PIN=()
RESULTS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --ns) NS="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        --build) BUILD="$2"; shift 2 ;;
        --pin) PIN=(--pin); shift ;;
        --results) RESULTS="$2"; shift 2 ;;
        -h|--help) sed -n '3,16p' "$0"; exit 0 ;;
        *) echo "bench-scaling: unknown option '$1' (--ns LIST, --repeat K, --build DIR, --pin, --results DIR)" >&2; exit 2 ;;
    esac
done
case "$REPEAT" in ''|*[!0-9]*|0) echo "bench-scaling: --repeat '$REPEAT' must be a whole number >= 1" >&2; exit 2 ;; esac
configs="scale-1"
IFS=, read -ra wanted <<<"$NS"
for n in "${wanted[@]}"; do
    case "$n" in
        [1-8]) [ "$n" = 1 ] || configs="$configs,scale-$n" ;;
        *) echo "bench-scaling: --ns '$NS': each N must be 1 to 8" >&2; exit 2 ;;
    esac
done

BENCH="$BUILD/bench/fabric-shm-bench"
[ -x "$BENCH" ] || { echo "bench-scaling: $BENCH not built (ninja -C $BUILD bench/fabric-shm-bench)" >&2; exit 2; }
RESULTS=${RESULTS:-bench-results/scaling-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
echo "bench-scaling: $configs on $(nproc) CPUs, $REPEAT closed-loop run(s) each -> $RESULTS" >&2
"$BENCH" pipeline --sizes 1K --configs "$configs" --no-cost --no-open-loop --repeat "$REPEAT" "${PIN[@]}" \
    --out "$RESULTS/scaling.json" >"$RESULTS/scaling.log" 2>&1 || {
    echo "bench-scaling: fabric-shm-bench failed; its output:" >&2
    cat "$RESULTS/scaling.log" >&2
    exit 1
}
python3 - "$RESULTS/scaling.json" <<'EOF' | tee "$RESULTS/scaling.md"
import json, sys
report = json.load(open(sys.argv[1]))
cpus = report["machine"].get("nproc", 0)
print(f"CPU: {report['machine'].get('cpu_model', '?')}, {cpus} CPUs")
print()
print("| N (producers = workers = partitions) | objects/s | runs | efficiency (÷ N × scale-1) | workers wait | CPUs per process |")
print("|---:|---:|---|---:|---|---|")
for m in report["results"]:
    n = m["producers"]
    runs = ", ".join(f"{r / 1e3:.0f} k" for r in m.get("closed_loop_runs_ops_s", []))
    eff = m.get("scaling_efficiency")
    eff_text = "1 (the unit)" if n == 1 else (f"**{eff:.2f}**" if eff is not None else "-")
    room = "one each" if 2 * n <= cpus else f"{2 * n} processes on {cpus} CPUs: not a measurement"
    print(f"| {n} | {m['throughput_ops_s'] / 1e3:.0f} k | {runs} | {eff_text} | {m.get('workers_wait', '?')} | {room} |")
EOF
