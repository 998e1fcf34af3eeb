#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every benchmark in one run, one table: the fabric-shm scenarios (fabric-shm-bench notify,
# pipeline, large), the floor and the peers (scripts/bench-peers.sh), on the same machine.
#
#   scripts/bench.sh [--quick] [--seconds S] [--no-peers] [--no-install] [--no-plots] [--pin]
#                    [--build DIR] [--results DIR] [--pipeline-args "..."] [--notify-args "..."]
#
# --pin: the processes a scenario, floor or peer forks are pinned to the CPUs in turn, one each
# while there are enough (fabric-shm-bench --pin, scripts/bench-peers.sh --pin). Unpinned, the
# scheduler may run the two spinning sides of a run on one vCPU of a 2-vCPU machine, taking
# turns (the table's "CPUs" figure reads ~1).
#
# 1. Builds fabric-shm-bench in DIR (default build; `scripts/build.sh DIR` when missing).
# 2. Runs notify, pipeline and large with --json into the results folder
#    (default bench-results/<UTC date>/, git-ignored). --quick: each scenario's smoke sizes.
#    The pipeline's closed loops run five times each (--repeat 5; the median is reported).
# 3. Runs scripts/bench-peers.sh (floor + Redis, iceoryx, ZeroMQ, Boost message_queue; it
#    installs the peers from Debian unless --no-install) into the same folder. A peer that
#    cannot be installed, built or run gets a "not measured" row; the run goes on.
# 4. Prints the combined markdown table (bench/report.py) on stdout and saves it as
#    summary.md; writes gnuplot plots (throughput bars, latency CDFs) under plots/. gnuplot
#    is installed here (apt, through scripts/install-deps.sh) only when missing and only
#    for this script: it is not a build or test dependency.
# Progress and the scenarios' own tables go to stderr and to <results>/*.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUICK=()
PIN=()
SECS=1
PEERS=1
INSTALL=1
PLOTS=1
BUILD=build
RESULTS=""
# Each pipeline configuration's closed loop five times, the median reported (fabric-shm-bench
# pipeline --repeat): on a shared VM one run is not a measurement. --pipeline-args replaces it.
PIPELINE_ARGS="--repeat 5"
NOTIFY_ARGS=""
ARGS="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=(--quick); shift ;;
        --pin) PIN=(--pin); shift ;;
        --seconds) SECS="$2"; shift 2 ;;
        --no-peers) PEERS=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        --no-plots) PLOTS=0; shift ;;
        --build) BUILD="$2"; shift 2 ;;
        --results) RESULTS="$2"; shift 2 ;;
        --pipeline-args) PIPELINE_ARGS="$2"; shift 2 ;;
        --notify-args) NOTIFY_ARGS="$2"; shift 2 ;;
        -h|--help) sed -n '3,24p' "$0"; exit 0 ;;
        *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
log() { echo "bench: $*" >&2; }

RESULTS=${RESULTS:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
log "results in $RESULTS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo "scripts/bench.sh $ARGS" >"$RESULTS/command.txt"

# ---------------------------------------------------------------- 1. build
[ -f "$BUILD/build.ninja" ] || scripts/build.sh "$BUILD" >&2
ninja -C "$BUILD" bench/fabric-shm-bench >&2
BENCH="$BUILD/bench/fabric-shm-bench"
# The optimisation level, not the buildtype: the project default is buildtype "debug" with
# optimization=2 (meson.build), which is what the numbers are for.
# And whether it was compiled with profile feedback (b_pgo): the report says which build its
# numbers are for (build.txt). docs/benchmarks.md says why the project does not ship one.
build_option() {  # NAME: the build's value of a meson option, or "?"
    meson introspect "$BUILD" --buildoptions 2>/dev/null |
        python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]==sys.argv[1]))' "$1" \
        2>/dev/null || echo "?"
}
OPT=$(build_option optimization)
PGO=$(build_option b_pgo)
case "$OPT" in 0|g|plain) log "WARNING: $BUILD is built with -O$OPT: numbers are not representative" ;; esac
case "$PGO" in
    use) BUILD_TEXT="-O$OPT, compiled from a profile (b_pgo=use: its numbers hold for the trained paths only)" ;;
    generate) BUILD_TEXT="-O$OPT, instrumented for a profile (b_pgo=generate: slower than any shipped build)"
              log "WARNING: $BUILD is instrumented (b_pgo=generate): numbers are not representative" ;;
    *) BUILD_TEXT="-O$OPT, without profile feedback (the project's build)" ;;
esac
echo "$BUILD_TEXT" >"$RESULTS/build.txt"
log "build $BUILD: $BUILD_TEXT"

# ---------------------------------------------------------------- 2. fabric-shm scenarios
FAILED=0
scenario() {  # name args...
    local name="$1"; shift
    log "fabric-shm-bench $name $* (load $(cut -d' ' -f1-3 /proc/loadavg))"
    # word splitting of the extra args is intended
    if ! "$BENCH" "$name" "${QUICK[@]}" "${PIN[@]}" --out "$RESULTS/$name.json" "$@" \
            >"$RESULTS/$name.txt" 2>"$RESULTS/$name.log"; then
        log "fabric-shm-bench $name FAILED (see $RESULTS/$name.log)"; tail -5 "$RESULTS/$name.log" >&2
        FAILED=1
    fi
    cat "$RESULTS/$name.txt" >&2
}
# shellcheck disable=SC2086
scenario notify $NOTIFY_ARGS
# shellcheck disable=SC2086
scenario pipeline $PIPELINE_ARGS
if [ "${#QUICK[@]}" -gt 0 ]; then scenario large --sizes 64K,1M; else scenario large --sizes 64K,1M,16M; fi

# ---------------------------------------------------------------- 3. floor + peers
if [ "$PEERS" -eq 1 ]; then
    PEER_ARGS=(--seconds "$SECS" --results "$RESULTS")
    [ "$INSTALL" -eq 0 ] && PEER_ARGS+=(--no-install)
    [ "${#PIN[@]}" -gt 0 ] && PEER_ARGS+=(--pin)
    for s in notify pipeline; do
        [ -f "$RESULTS/$s.json" ] && PEER_ARGS+=(--fabric-json "$RESULTS/$s.json")
    done
    log "scripts/bench-peers.sh ${PEER_ARGS[*]}"
    # Exit 1 = some peer failed (listed in peers-failed.txt and shown in the table).
    scripts/bench-peers.sh "${PEER_ARGS[@]}" >"$RESULTS/peers-table.md" 2>"$RESULTS/peers-run.log" ||
        log "bench-peers reported failures (see $RESULTS/peers-failed.txt, $RESULTS/peers-run.log)"
else
    log "--no-peers: floor and peers not run"
fi

# ---------------------------------------------------------------- 4. table + plots
PLOT_ARG=()
if [ "$PLOTS" -eq 1 ]; then
    if ! command -v gnuplot >/dev/null 2>&1 && [ "$INSTALL" -eq 1 ]; then
        scripts/install-deps.sh gnuplot-nox >&2 || log "gnuplot could not be installed: no PNGs"
    fi
    PLOT_ARG=(--plots)
fi
python3 bench/report.py "$RESULTS" "${PLOT_ARG[@]}" | tee "$RESULTS/summary.md"
log "table: $RESULTS/summary.md; JSON: $RESULTS/*.json, peers.jsonl; plots: $RESULTS/plots/"
exit "$FAILED"
