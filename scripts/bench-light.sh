#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The light-load row held against its floor in pairs. On the 2-vCPU VM the hand-off time of both
# moves by 2x within minutes (docs/benchmarks.md), and scripts/bench.sh runs the floor a few
# minutes after fabric-shm's notify scenario, so its light-load ratio can land anywhere
# between about 1.2 and 2.4 for the same code. This alternates the two, round by round:
#   1. the floor's spin_light (bench/floor/floor_spin_pingpong.cpp: a bare ring of the notify
#      topic's shape, variants store and claim_publish, 1 s each at the same rate);
#   2. `fabric-shm-bench notify --modes spin` (its light-load run at the same rate; the short
#      closed- and open-loop runs before it are not reported here).
# It prints each round's p50s and ratio, then the median ratio over the rounds. Each ratio
# pairs runs less than a minute apart.
# Usage: scripts/bench-light.sh [--rounds N] [--rate MSGS_PER_S] [--build DIR] [--pin]
#   --rounds  pairs to run (default 7)
#   --rate    the light rate, messages/s (default 10000, the bench's)
#   --build   the meson build with fabric-shm-bench (default build)
#   --pin     both programs' consumer on CPU 0 and producer on CPU 1 (the floor's --cpu-b 0
#             --cpu-a 1, fabric-shm-bench --pin)
# The floor program is built with g++ into build-peers/ when missing (as scripts/bench-peers.sh
# builds it); nothing is installed and no server is started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=7
RATE=10000
BUILD=build
FLOOR_PIN=()
BENCH_PIN=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --build) BUILD="$2"; shift 2 ;;
        --pin) FLOOR_PIN=(--cpu-a 1 --cpu-b 0); BENCH_PIN=(--pin); shift ;;
        -h|--help) sed -n '3,20p' "$0"; exit 0 ;;
        *) echo "bench-light: unknown option '$1' (--rounds N, --rate R, --build DIR, --pin)" >&2; exit 2 ;;
    esac
done
case "$ROUNDS" in ''|*[!0-9]*|0) echo "bench-light: --rounds '$ROUNDS' must be a whole number >= 1" >&2; exit 2 ;; esac
case "$RATE" in ''|*[!0-9]*|0) echo "bench-light: --rate '$RATE' must be a whole number of messages/s >= 1" >&2; exit 2 ;; esac

BENCH="$BUILD/bench/fabric-shm-bench"
[ -x "$BENCH" ] || { echo "bench-light: $BENCH not built (ninja -C $BUILD bench/fabric-shm-bench)" >&2; exit 2; }
FLOOR=build-peers/floor_spin_pingpong
if [ ! -x "$FLOOR" ] || [ bench/floor/floor_spin_pingpong.cpp -nt "$FLOOR" ]; then
    mkdir -p build-peers
    g++ -std=c++20 -O2 -Wall -Wextra -c bench/harness/histogram.cpp -o build-peers/histogram.o
    g++ -std=c++20 -O2 -Wall -Wextra bench/floor/floor_spin_pingpong.cpp build-peers/histogram.o -o "$FLOOR"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for r in $(seq 1 "$ROUNDS"); do
    "$FLOOR" --seconds 1 --rate "$RATE" --only spin_light "${FLOOR_PIN[@]}" >"$work/floor.$r.jsonl"
    "$BENCH" notify --modes spin --count 20000 --low-rate "$RATE" "${BENCH_PIN[@]}" --out "$work/notify.$r.json" \
        >/dev/null 2>&1
done
python3 - "$work" "$ROUNDS" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
rows = []
for r in range(1, rounds + 1):
    floor = {}
    for line in open(f"{work}/floor.{r}.jsonl"):
        line = line.strip()
        if line.startswith("{"):
            j = json.loads(line)
            floor[j["variant"]] = j["p50_ns"]
    light = next(m for m in json.load(open(f"{work}/notify.{r}.json"))["results"]
                 if m.get("kind") == "light-load" and m.get("mode") == "spin")
    rows.append((floor["store"], floor["claim_publish"], light["latency_ns"]["p50"], light["latency_ns"]["p99"]))
print("| round | floor store p50 | floor claim_publish p50 | notify light-load p50 | p99 | ÷ store | ÷ claim_publish |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for i, (s, c, n, p99) in enumerate(rows, 1):
    print(f"| {i} | {s} ns | {c} ns | {n} ns | {p99 / 1000:.1f} µs | {n / s:.2f} | {n / c:.2f} |")
med = lambda xs: statistics.median(xs)
print(f"| median | {med([r[0] for r in rows]):.0f} ns | {med([r[1] for r in rows]):.0f} ns | "
      f"{med([r[2] for r in rows]):.0f} ns | {med([r[3] for r in rows]) / 1000:.1f} µs | "
      f"**{med([r[2] / r[0] for r in rows]):.2f}** | {med([r[2] / r[1] for r in rows]):.2f} |")
EOF
