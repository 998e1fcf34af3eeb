#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Two builds of fabric-shm-bench against each other, in alternating pairs. On the 2-vCPU VM the
# host's speed moves by 1.5-2x within minutes (docs/benchmarks.md), more than most changes
# gain, so "before" and "after" are only comparable when they run seconds apart, many times:
#   - cost: the pipeline scenario's one-process step costs (`pipeline --sizes 1K --configs
#     none`, on one CPU), every step, each pair's ratio after / before;
#   - each pipeline configuration given (`pipeline --pin --repeat 3 --configs C`): the median
#     of its three closed loops, each pair's ratio after / before.
# Within a pair the order alternates (before first, then after first), so a drift of the host
# during a pair does not always favour the same build. It prints, per measure, the median ratio,
# in how many pairs "after" was better and the two builds' medians.
# Usage: scripts/bench-ab.sh BEFORE_BUILD AFTER_BUILD [--pairs N] [--configs C1,C2] [--no-cost]
#   BEFORE_BUILD, AFTER_BUILD   meson build directories with bench/fabric-shm-bench built
#                               (e.g. a `git worktree` of the base commit built with meson)
#   --pairs N     pairs per measure (default 12)
#   --configs     pipeline configurations to compare (default spin-1w; "" for none)
#   --no-cost     skip the one-process step costs
# Nothing is installed and no server is started; the processes' pools are removed by the bench.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '3,21p' "$0"; exit 2; }
[ $# -ge 2 ] || usage
BEFORE="$1/bench/fabric-shm-bench"
AFTER="$2/bench/fabric-shm-bench"
shift 2
PAIRS=12
CONFIGS=spin-1w
COST=1
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) PAIRS="$2"; shift 2 ;;
        --configs) CONFIGS="$2"; shift 2 ;;
        --no-cost) COST=0; shift ;;
        -h|--help) usage ;;
        *) echo "bench-ab: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for b in "$BEFORE" "$AFTER"; do
    [ -x "$b" ] || { echo "bench-ab: $b not built (ninja -C <build> bench/fabric-shm-bench)" >&2; exit 2; }
done
case "$PAIRS" in ''|*[!0-9]*|0) echo "bench-ab: --pairs must be a whole number from 1" >&2; exit 2 ;; esac

TMPD=$(mktemp -d /tmp/bench-ab.XXXXXX)
trap 'rm -rf "$TMPD"' EXIT
RESULTS="$TMPD/pairs.jsonl"
: >"$RESULTS"

cost_run() {  # BIN: writes its report to $OUT
    taskset -c 1 "$1" pipeline --sizes 1K --configs none --out "$OUT"
}
pipeline_run() {  # BIN: writes its report to $OUT
    "$1" pipeline --pin --repeat 3 --sizes 1K --configs "$CONFIG" --no-open-loop --no-cost --result-bucket ab \
        --out "$OUT"
}
# run_pair MEASURE PAIR_INDEX RUNNER: both builds once, in the pair's order, each report in
# $TMPD/MEASURE-PAIR-{before,after}.json; appends the pair to the results.
run_pair() {
    local measure="$1" i="$2" runner="$3"
    local order=(before after)
    [ $((i % 2)) -eq 1 ] && order=(after before)
    for which in "${order[@]}"; do
        local bin="$BEFORE"
        [ "$which" = after ] && bin="$AFTER"
        if ! OUT="$TMPD/$measure-$i-$which.json" "$runner" "$bin" >"$TMPD/$measure-$i-$which.log" 2>&1; then
            echo "bench-ab: $measure pair $((i + 1)), $which build failed:" >&2
            tail -5 "$TMPD/$measure-$i-$which.log" >&2
            exit 1
        fi
    done
    printf '{"measure":"%s","pair":%d,"before":"%s","after":"%s"}\n' "$measure" "$i" \
        "$TMPD/$measure-$i-before.json" "$TMPD/$measure-$i-after.json" >>"$RESULTS"
}

for ((i = 0; i < PAIRS; ++i)); do
    if [ "$COST" -eq 1 ]; then
        echo "bench-ab: cost pair $((i + 1)) of $PAIRS" >&2
        run_pair cost "$i" cost_run
    fi
    IFS=, read -r -a CONFIG_LIST <<<"$CONFIGS"
    for CONFIG in "${CONFIG_LIST[@]}"; do
        [ -n "$CONFIG" ] || continue
        echo "bench-ab: $CONFIG pair $((i + 1)) of $PAIRS" >&2
        run_pair "$CONFIG" "$i" pipeline_run
    done
done

python3 - "$RESULTS" "$BEFORE" "$AFTER" <<'PY'
import json, statistics, sys
results, before_bin, after_bin = sys.argv[1:4]
pairs = [json.loads(l) for l in open(results) if l.strip()]

def cost_rows(path):  # step name -> ns per object
    rep = json.load(open(path))
    return {m["name"].removeprefix("cost 1KiB "): m["ns_per_op"]
            for m in rep.get("results", []) if m.get("kind") == "cost" and m.get("ns_per_op")}

def closed_loop_median(path):  # objects/s, median of the configuration's closed loops
    rep = json.load(open(path))
    for m in rep.get("results", []):
        runs = m.get("closed_loop_runs_ops_s") or (m.get("extra") or {}).get("closed_loop_runs_ops_s")
        if runs:
            return statistics.median(runs)
    raise SystemExit(f"bench-ab: no closed-loop runs in {path}")

rows = {}  # measure -> list of (before, after); lower is better for costs, higher for rates
for p in pairs:
    if p["measure"] == "cost":
        b, a = cost_rows(p["before"]), cost_rows(p["after"])
        for step in b.keys() & a.keys():
            rows.setdefault(("cost", step), []).append((b[step], a[step]))
    else:
        rows.setdefault(("pipeline", p["measure"]), []).append(
            (closed_loop_median(p["before"]), closed_loop_median(p["after"])))

print(f"before: {before_bin}\nafter:  {after_bin}\n")
print("| measure | pairs | before (median) | after (median) | ratio after ÷ before (median of pairs) | after better in |")
print("|---|---:|---:|---:|---:|---:|")
for (kind, name), v in sorted(rows.items()):
    ratios = [a / b for b, a in v if b > 0]
    if kind == "cost":
        better = sum(a < b for b, a in v)
        unit = lambda x: f"{x:,.0f} ns"
        label = f"one process: {name}"
    else:
        better = sum(a > b for b, a in v)
        unit = lambda x: f"{x / 1e3:,.0f} k/s"
        label = f"pipeline {name} (--pin, median of 3 closed loops)"
    print(f"| {label} | {len(v)} | {unit(statistics.median(b for b, _ in v))} | "
          f"{unit(statistics.median(a for _, a in v))} | {statistics.median(ratios):.3f} | {better} of {len(v)} |")
print("\nCosts: lower is better (a ratio below 1); pipeline rates: higher is better (a ratio above 1).")
PY
