#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Throughput and put->result latency of one worker per processor kind, 1 KiB objects, 4
# partitions: --builtin upper, --handler with the C helper, --handler with the Python helper
# (K=64 and K=1), --exec 'tr a-z A-Z', --exec python3. Two runs per processor:
#  - alongside: fabric-shm-producer in another process, started after the worker joined (the
#    producer's rate bounds the fast processors; latencies are put -> result under that load);
#  - backlog: the producer first fills the topic, then the worker drains it (what the
#    processor itself can do; latencies include the time waiting in the backlog).
# Results/s are results per second of work: from the worker's first hand-out to its last result
# (its JSON `busy_s`), so neither start-up (a 512 MiB store created, python3 started) nor the
# idle exit counts. Usage: scripts/bench-handlers.sh [BUILD_DIR] [N] (default build, 20000;
# --exec runs use N/50 and N/100). Prints a Markdown table; removes its pool.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${1:-build}"
n="${2:-20000}"
pool="bench-handlers-$$"
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
cli="$build/tools/fabric-shm"
trap '"$cli" pool rm --pool "$pool" --force >/dev/null 2>&1 || true' EXIT
"$cli" pool create --pool "$pool" --size 512M >/dev/null
# The store exists before any timed worker runs (creating it zero-fills its heap).
echo warm | "$cli" put --pool "$pool" "fabric://$pool/warm/x" >/dev/null
echo "| processor | run | objects | results/s | p50 put->result | p99 put->result |"
echo "|---|---|---:|---:|---:|---:|"
i=0
# A topic big enough for the whole backlog, and the group registered on it (a topic keeps
# messages back only for registered groups): a worker that joins and leaves at once.
prepare() {
    local topic="$1" count="$2" cap=128
    while [ $((cap * 4)) -lt "$count" ]; do cap=$((cap * 2)); done
    "$cli" topic create --pool "$pool" --partitions 4 --capacity "$cap" "$topic" >/dev/null
    "$build/workers/fabric-shm-worker" --pool "$pool" --no-create --topic "$topic" --group g \
        --builtin upper --exit-when-idle 50ms --quiet >/dev/null
}
produce() {
    "$build/workers/fabric-shm-producer" --pool "$pool" --no-create --topic "$1" --bucket "b$1" \
        --synthetic "$2" --size 1K --wait 300s >/dev/null 2>&1
}
# Each run's inputs, results and topic go once it is reported: the store holds one run at a time.
cleanup() {
    "$cli" rm --pool "$pool" --prefix "fabric://$pool/b$1/" >/dev/null
    "$cli" rm --pool "$pool" --prefix "fabric://$pool/results/b$1/" >/dev/null
    "$cli" topic rm --pool "$pool" "$1" >/dev/null
}
report() {
    python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
busy = d.get("busy_s") or max(d["elapsed_s"] - 1.0, 1e-9)
us = lambda ns: "%.0f us" % (ns / 1000) if ns < 10_000_000 else "%.1f ms" % (ns / 1e6)
print("| %s | %s | %d | %.0f | %s | %s |" % (sys.argv[2], sys.argv[3], d["processed"], d["processed"] / busy,
      us(d["latency_ns"]["p50"]), us(d["latency_ns"]["p99"])))
PY
}
# The next run's topic, in $topic: sized for $1 messages, the group registered.
new_topic() {
    i=$((i + 1))
    topic="t$i"
    prepare "$topic" "$1"
}
# The measured worker on $topic with the processor options "$@" (JSON into $out), in the
# background ($wpid), joined when it returns.
start_worker() {
    "$build/workers/fabric-shm-worker" --pool "$pool" --no-create --topic "$topic" --group g \
        --exit-when-idle 1s --json --quiet "$@" >"$out" &
    wpid=$!
    sleep 0.3  # joined, handlers started
}
run() {
    local label="$1" count="$2" out topic wpid
    shift 2
    out=$(mktemp)
    new_topic "$count"
    start_worker "$@"
    produce "$topic" "$count"
    wait "$wpid"
    report "$out" "$label" alongside "$count"
    cleanup "$topic"
    new_topic "$count"
    produce "$topic" "$count"
    start_worker "$@"
    wait "$wpid"
    report "$out" "$label" backlog "$count"
    cleanup "$topic"
    rm -f "$out"
}
run "--builtin upper" "$n" --builtin upper
run "--handler C helper, K=64" "$n" --handler "$build/examples/upper_handler" --concurrency 1 --max-inflight 64 --order none
run "--handler Python helper, K=64" "$n" --handler "python3 examples/handlers/upper.py" --concurrency 1 --max-inflight 64 --order none
run "--handler Python helper, K=1" "$n" --handler "python3 examples/handlers/upper.py" --concurrency 1 --max-inflight 1 --order none
run "--exec 'tr a-z A-Z'" $((n / 50)) --exec 'tr a-z A-Z'
run "--exec python3 (3 lines)" $((n / 100)) --exec "python3 -c 'import sys; sys.stdout.buffer.write(sys.stdin.buffer.read().upper())'"

# Light load: one object every 5 ms from one long-lived producer (Python's put_and_notify), so
# every object finds the worker parked: put -> result is the wake-ups (topic -> worker, worker ->
# handler, handler -> worker) plus the work. Beside it, the floor: a shared-futex ping-pong's
# one-way hand-off (bench/floor), built and run in this run.
light="${LIGHT_N:-200}"
floor_bin=$(mktemp)
g++ -O2 -std=c++20 -Ibench -Ibench/harness -o "$floor_bin" bench/floor/floor_futex_pingpong.cpp bench/harness/histogram.cpp -pthread
floor_json=$("$floor_bin" --seconds 2)
rm -f "$floor_bin"
floor_p50=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["p50_ns"])' "$floor_json")
echo
echo "| processor, light load (one object every 5 ms) | objects | p50 put->result | p99 put->result | p50 - 3 futex wake-ups |"
echo "|---|---:|---:|---:|---:|"
light_run() {
    local label="$1" out topic wpid
    shift
    out=$(mktemp)
    new_topic "$light"
    start_worker "$@"
    PYTHONPATH="$build/python" /usr/bin/python3 - "$pool" "$topic" "$light" <<'PY'
import sys, time
import fabric_shm as fs
pool_name, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with fs.Pool.open(pool_name) as pool:
    store = pool.store()
    producer = fs.Producer(pool, topic)
    for k in range(n):
        fs.put_and_notify(store, producer, f"fabric://{pool_name}/b{topic}/k{k}", b"light object %06d" % k)
        time.sleep(0.005)
PY
    wait "$wpid"
    python3 - "$out" "$label" "$floor_p50" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
f = float(sys.argv[3])
us = lambda ns: "%.0f us" % (ns / 1000)
print("| %s | %d | %s | %s | %s |" % (sys.argv[2], d["processed"], us(d["latency_ns"]["p50"]),
      us(d["latency_ns"]["p99"]), us(d["latency_ns"]["p50"] - 3 * f)))
PY
    cleanup "$topic"
    rm -f "$out"
}
light_run "--builtin upper" --builtin upper
light_run "--handler C helper, K=64" --handler "$build/examples/upper_handler" --concurrency 1 --max-inflight 64 --order none
light_run "--handler Python helper, K=64" --handler "python3 examples/handlers/upper.py" --concurrency 1 --max-inflight 64 --order none
echo
echo "floor (shared futex ping-pong, one-way): p50 $((floor_p50 / 1000)) us; target: p50 - 3 wake-ups <= 30 us"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
