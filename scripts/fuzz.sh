#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every libFuzzer target in tests/fuzz for SECONDS each (default 30):
#   scripts/fuzz.sh [SECONDS]
# Configures its own build directory `build-fuzz` with clang (meson cannot switch compilers
# per target), ASan+UBSan and -Dfuzz=true, builds only the fuzz targets, and prints per
# target the executions, the corpus size and any crash (the reproducer is written to
# build-fuzz/fuzz-artifacts/). New inputs go to build-fuzz/fuzz-corpus/<target>; the seed
# corpus tests/fuzz/corpus/<target> is only read (copy a useful find there by hand).
# Ends with "fuzz: <N> passed, <N> failed"; exit status non-zero on any failure.
# Targets run one per CPU at a time. scripts/test-extended.sh runs `scripts/fuzz.sh 60` (the clang
# build takes 50-80 s on 2 CPUs); the test command runs the same targets without libFuzzer
# (tests/fuzz/replay_main.cpp).
# Reproduce a crash: build-fuzz/tests/fuzz/<target> build-fuzz/fuzz-artifacts/<target>-crash-...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-30}"
dir=build-fuzz
bash scripts/install-deps.sh clang

if [ ! -f "$dir/build.ninja" ]; then
    [ -d "$dir" ] && rm -rf "$dir"   # left half-configured: start over
    CXX=clang++ meson setup "$dir" -Dfuzz=true -Db_lundef=false -Db_sanitize=address,undefined \
        -Dbuildtype=debugoptimized >/dev/null
fi
targets=()
for src in tests/fuzz/fuzz_*.cpp; do
    targets+=("$(basename "$src" .cpp)")
done
start=$(date +%s)
ninja -C "$dir" -j "$(nproc)" "${targets[@]/#/tests/fuzz/}"
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - start )) s"

mkdir -p "$dir/fuzz-artifacts" "$dir/fuzz-logs"
# Targets that map a pool make a private directory /dev/shm/fabric-fuzz-<name>-XXXXXX (fuzz_pool:
# fabric-fuzz-pool-*) and remove it at exit; libFuzzer's exit on a timeout or crash skips that.
# What a target left under its own prefix is removed after it, so targets can run side by side.
shm_before=$(ls -d /dev/shm/fabric-fuzz-* 2>/dev/null || true)

# run_target T: runs one target, then writes its report lines to fuzz-logs/T.result (first
# line OK or FAILED).
run_target() {
    local t="$1" log="$dir/fuzz-logs/$1.log" rc=0 seeds=()
    mkdir -p "$dir/fuzz-corpus/$t"
    [ -d "tests/fuzz/corpus/$t" ] && seeds=("tests/fuzz/corpus/$t")
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        "$dir/tests/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$dir/fuzz-artifacts/$t-" \
        "$dir/fuzz-corpus/$t" "${seeds[@]}" >"$log" 2>&1 || rc=$?
    for d in /dev/shm/fabric-fuzz-"${t#fuzz_}"-*; do
        [ -e "$d" ] && ! grep -qxF "$d" <<<"$shm_before" && rm -rf "$d"
    done
    local execs corpus
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    corpus=$(ls "$dir/fuzz-corpus/$t" | wc -l)
    if [ "$rc" -eq 0 ]; then
        echo "fuzz: $t: OK, ${execs:-?} executions in ${seconds} s, corpus $corpus inputs"
    else
        echo "fuzz: $t: FAILED (exit $rc) after ${execs:-?} executions; log $log"
        grep -E "^(==[0-9]+==ERROR|SUMMARY|.*runtime error|artifact_prefix|Test unit written)" "$log" | head -20 || true
    fi >"$dir/fuzz-logs/$t.result"
}

# One target per CPU at a time: each is single-threaded and runs for exactly SECONDS.
jobs=$(nproc)
running=0
for t in "${targets[@]}"; do
    rm -f "$dir/fuzz-logs/$t.result"
    run_target "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait
        running=0
    fi
done
wait
passed=0
failed=0
for t in "${targets[@]}"; do
    if [ -f "$dir/fuzz-logs/$t.result" ]; then
        cat "$dir/fuzz-logs/$t.result"
        if head -1 "$dir/fuzz-logs/$t.result" | grep -q ': OK,'; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    else
        echo "fuzz: $t: FAILED (no result; log $dir/fuzz-logs/$t.log)"
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
