#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A stream longer than the store holds: N (default 1,000,000) objects of 1 KiB through one
# pool of the default 32 MiB by fabric-shm-producer (waiting for space) into one
# fabric-shm-worker --delete-input --result-ttl 10s. It must complete with no dead letter and
# no message handed back for a full store; it prints both programs' JSON summaries and a
# line with the rate. The run is bound by the result TTL: the store holds about
# (table entries) results, so it sustains ~table/TTL results per second (see docs/store.md,
# Retention). The CI form (50,000 objects) is the e2e test 'streaming: ...' (suite e2e).
#
#   scripts/bench-stream.sh [--objects N] [--size 1K] [--result-ttl 10s] [--builtin crc32]
#                           [--build DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=1000000
SIZE=1K
TTL=10s
BUILTIN=crc32
BUILD=build
while [ $# -gt 0 ]; do
    case "$1" in
        --objects) N="$2"; shift 2 ;;
        --size) SIZE="$2"; shift 2 ;;
        --result-ttl) TTL="$2"; shift 2 ;;
        --builtin) BUILTIN="$2"; shift 2 ;;
        --build) BUILD="$2"; shift 2 ;;
        -h|--help) sed -n '3,13p' "$0"; exit 0 ;;
        *) echo "bench-stream.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -x "$BUILD/workers/fabric-shm-worker" ] || bash scripts/build.sh "$BUILD" >&2
WORKER="$BUILD/workers/fabric-shm-worker"
PRODUCER="$BUILD/workers/fabric-shm-producer"
FS="$BUILD/tools/fabric-shm"
[ -x "$WORKER" ] || WORKER="$(find "$BUILD" -name fabric-shm-worker -type f -perm -u+x | head -1)"
[ -x "$PRODUCER" ] || PRODUCER="$(find "$BUILD" -name fabric-shm-producer -type f -perm -u+x | head -1)"

POOL="bench-stream-$$"
OUT="$(mktemp -d /tmp/bench-stream.XXXXXX)"
WPID=""
cleanup() {
    [ -n "$WPID" ] && kill "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null
    "$FS" pool rm --pool "$POOL" --force >/dev/null 2>&1 || true
    rm -rf "$OUT"
}
trap cleanup EXIT

"$FS" pool create --pool "$POOL" >/dev/null
"$WORKER" --pool "$POOL" --topic stream --group g --builtin "$BUILTIN" --delete-input --result-ttl "$TTL" \
    --count "$N" --quiet --json >"$OUT/worker.json" 2>"$OUT/worker.err" &
WPID=$!
# The group must exist before the first notification (a topic without a group keeps nothing back).
for _ in $(seq 1 500); do
    "$FS" group describe g --topic stream --pool "$POOL" --json 2>/dev/null | grep -q '"alive":true' && break
    sleep 0.02
done
START=$(date +%s.%N)
"$PRODUCER" --pool "$POOL" --topic stream --synthetic "$N" --size "$SIZE" --wait 120s --quiet --json \
    >"$OUT/producer.json" 2>"$OUT/producer.err" || { cat "$OUT/producer.err" >&2; exit 1; }
wait "$WPID" || { WPID=""; cat "$OUT/worker.err" >&2; exit 1; }
WPID=""
END=$(date +%s.%N)
echo "producer: $(cat "$OUT/producer.json")"
echo "worker:   $(tail -1 "$OUT/worker.json")"
python3 - "$OUT/worker.json" "$N" "$START" "$END" <<'PY'
import json, sys
w = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
n, secs = int(sys.argv[2]), float(sys.argv[4]) - float(sys.argv[3])
print(f"{n} objects in {secs:.1f} s: {n / secs:.0f} objects/s; dead letters {w['dead_lettered']}, "
      f"handed back for a full store {w['store_full']}, result puts that waited {w['store_waits']}, "
      f"inputs deleted {w['inputs_deleted']}")
ok = w["dead_lettered"] == 0 and w["store_full"] == 0 and w["processed"] + w["skipped"] == n
sys.exit(0 if ok else 1)
PY
