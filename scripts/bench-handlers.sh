#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Throughput and put->result latency of one worker per processor kind, 1 KiB objects, the
# producer in another process started after the worker joined: --builtin upper, --handler
# with the C helper, --handler with the Python helper (K=64 and K=1), --exec 'tr a-z A-Z',
# --exec python3. Usage: scripts/bench-handlers.sh [BUILD_DIR] [N] (default build, 20000;
# --exec runs use N/50). Throughput = results / (worker run time - its 1 s idle exit).
# Latencies are put -> result under this backlog (the producer outruns most processors), not
# light-load latencies. Prints a Markdown table; removes its pool.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${1:-build}"
n="${2:-20000}"
pool="bench-handlers-$$"
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
trap '"$build/tools/fabric-shm" pool rm --pool "$pool" --force >/dev/null 2>&1 || true' EXIT
"$build/tools/fabric-shm" pool create --pool "$pool" --size 512M >/dev/null
echo "| processor | objects | results/s | p50 put->result | p99 put->result |"
echo "|---|---:|---:|---:|---:|"
i=0
run() {
    local label="$1" count="$2"
    shift 2
    i=$((i + 1))
    local topic="t$i" out
    out=$(mktemp)
    "$build/workers/fabric-shm-worker" --pool "$pool" --no-create --topic "$topic" --partitions 4 --group g \
        --exit-when-idle 1s --json --quiet "$@" >"$out" &
    local wpid=$!
    sleep 0.3  # joined (the group is registered before the first notification)
    "$build/workers/fabric-shm-producer" --pool "$pool" --no-create --topic "$topic" --bucket "b$i" \
        --synthetic "$count" --size 1K --wait 300s >/dev/null 2>&1
    wait "$wpid"
    python3 - "$out" "$label" "$count" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
busy = max(d["elapsed_s"] - 1.0, 1e-9)
us = lambda ns: "%.0f us" % (ns / 1000) if ns < 10_000_000 else "%.1f ms" % (ns / 1e6)
print("| %s | %d | %.0f | %s | %s |" % (sys.argv[2], d["processed"], d["processed"] / busy,
      us(d["latency_ns"]["p50"]), us(d["latency_ns"]["p99"])))
PY
    rm -f "$out"
}
run "--builtin upper" "$n" --builtin upper
run "--handler C helper, K=64" "$n" --handler "$build/examples/upper_handler" --concurrency 1 --max-inflight 64 --order none
run "--handler Python helper, K=64" "$n" --handler "python3 examples/handlers/upper.py" --concurrency 1 --max-inflight 64 --order none
run "--handler Python helper, K=1" "$n" --handler "python3 examples/handlers/upper.py" --concurrency 1 --max-inflight 1 --order none
run "--exec 'tr a-z A-Z'" $((n / 50)) --exec 'tr a-z A-Z'
run "--exec python3 (3 lines)" $((n / 100)) --exec "python3 -c 'import sys; sys.stdout.buffer.write(sys.stdin.buffer.read().upper())'"
echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
