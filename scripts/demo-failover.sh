#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Failover: two workers share group 'processors'; one is SIGKILLed mid-run, the survivor takes
# its partitions over (the dump shows the new owners and epochs), a replacement joins, and
# every result is present, computed from the current input version, written once.
# Runs on a fresh pool ${FABRIC_SHM_POOL:-demo-failover}, removed at the end.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"
demo_init failover demo-failover fresh
n="${DEMO_OBJECTS:-120}"
topic=object-events
group=processors
# A slow-ish processor so that the kill lands mid-run: 20 ms per object.
cmd='sleep 0.02; tr a-z A-Z'

say "two workers join group '$group'"
start_worker worker-1 --topic "$topic" --group "$group" --exec "$cmd"
wait_members "$topic" "$group" 1
start_worker worker-2 --topic "$topic" --group "$group" --exec "$cmd"
victim=$last_pid
wait_members "$topic" "$group" 2

say "producing $n objects"
"$producer" --bucket uploads --topic "$topic" --synthetic "$n" --size 1K --quiet

for _ in $(seq 200); do
    done_n=$("$cli" ls "fabric://$pool/results/" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["keys"]))')
    [ "$done_n" -ge $((n / 5)) ] && break
    sleep 0.05
done
say "$done_n of $n results written; SIGKILL worker-2 (pid $victim) mid-run"
kill -KILL "$victim"
wait "$victim" 2>/dev/null || true
demo_pids=("${demo_pids[@]/$victim}")
sleep 0.3
say "the group after the kill (worker-2 is dead; its partitions move to worker-1):"
"$dump" | sed -n '/^groups:/,/^store:/p' | sed '$d'

say "a replacement (worker-3) joins"
start_worker worker-3 --topic "$topic" --group "$group" --exec "$cmd"
mapfile -t keys < <(seq -f 'synthetic-%06g' 0 $((n - 1)))
wait_count results "$n" 60
say "all $n results present; checking a sample against the inputs"
bad=0
for k in "${keys[@]:0:5}" "${keys[@]: -5}"; do
    want=$("$cli" get "fabric://$pool/uploads/$k" | tr a-z A-Z | cksum)
    got=$("$cli" get "fabric://$pool/results/uploads/$k" | cksum)
    [ "$want" = "$got" ] || { say "MISMATCH for $k"; bad=1; }
done
"$dump" | sed -n '/^groups:/,/^store:/p' | sed '$d'
for pid in "${demo_pids[@]}"; do [ -n "$pid" ] && stop_worker "$pid"; done
summary_line worker-1
summary_line worker-3
[ "$bad" = 0 ] && say "ok: $n results (one per input), every sampled one correct" || exit 1
