#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The test command (README, .ci/run): installs what is missing, builds, runs every test suite
# in `build`, and the hostile-input suites (corruption, the fuzz targets' corpora and mutations)
# in an ASan+UBSan build (`build-asan`, compiled at idle priority while `build`'s suites run).
# Ends with one line "<N> passed, <N> failed" counting test cases of both runs. Exit status
# non-zero on any failure. The budget is 10 minutes cold on 2 vCPUs; phases, measurements and
# what was cut: docs/build.md. Every suite under ASan+UBSan, TSan, valgrind and libFuzzer:
# scripts/test-extended.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

total_passed=0
total_failed=0
start=$(date +%s)
failures=$(mktemp)  # testlog-count.py's FAILED lines of both builds, repeated at the end
background_log=$(mktemp)
asan_pid=""  # the background sanitizer build, stopped if the script ends first (error, Ctrl-C)
trap '[ -n "$asan_pid" ] && kill "$asan_pid" 2>/dev/null; rm -f "$failures" "$background_log"' EXIT

# Elapsed seconds since the start, for the "===" lines (where a slow CI run spent its time).
at() { echo "[$(( $(date +%s) - start )) s]"; }

# run_tests DIR [TEST...]: run every suite of DIR (or the named tests), add the case counts.
run_tests() {
    local dir="$1"
    shift
    echo "=== $dir: meson test ${*:-(every suite)} $(at)"
    rm -f "$dir/meson-logs/testlog.json"
    meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes "$(nproc)" "$@" || true
    local counts
    counts=$(python3 scripts/testlog-count.py "$dir/meson-logs/testlog.json" 2> >(tee -a "$failures" >&2))
    local p="${counts% *}" f="${counts#* }"
    echo "=== $dir: $p passed, $f failed $(at)"
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
}

# ASan+UBSan on the suites that hand the library hostile bytes: damaged and foreign segments
# (corruption, with fabric-shm-dump --check over them) and the fuzz targets' corpora and
# mutations (tests/fuzz/replay_main.cpp). Every suite under ASan+UBSan does not fit the budget
# beside the optimised build (a test TU takes 9.5 s of CPU under ASan+UBSan at -O0): it is in
# scripts/test-extended.sh. b_lundef=false: clang refuses -Wl,--no-undefined with sanitizers
# (harmless with gcc). -O0 with the project's -g1 line tables: ASan still reports file:line.
sanitized_tests=(corruption fuzz_uri fuzz_cli_parsers fuzz_pool fuzz_topic fuzz_store)
sanitized_options=(-Db_sanitize=address,undefined -Db_lundef=false -Doptimization=0 -Dbench=false -Dpython=disabled)

echo "=== build: build $(at)"
build_ok=1
bash scripts/build.sh build || build_ok=0

# The sanitizer build compiles while build's suites run: those wait on processes and timeouts
# for about half their wall time, and SCHED_IDLE (nice 19 where chrt cannot set it) gives the
# compiler only CPU time the tests leave unused, so their timing sees an idle machine.
echo "=== build-asan: configure, then build at idle priority beside build's suites $(at)"
asan_ok=1
if ! FABRIC_SHM_TARGETS=none bash scripts/build.sh build-asan "${sanitized_options[@]}" >"$background_log" 2>&1; then
    asan_ok=0
elif ! asan_targets=$(python3 scripts/test-targets.py build-asan "${sanitized_tests[@]}" 2>"$background_log"); then
    asan_ok=0   # a name in sanitized_tests that the build does not define: the log says which
else
    idle=(nice -n 19)
    chrt --idle 0 true 2>/dev/null && idle=(chrt --idle 0)
    # shellcheck disable=SC2086  # one target per word
    "${idle[@]}" ninja -C build-asan -j "$(nproc)" $asan_targets >"$background_log" 2>&1 &
    asan_pid=$!
fi

if [ "$build_ok" -eq 1 ]; then
    run_tests build
else
    echo "=== build: BUILD FAILED $(at)"
    total_failed=$((total_failed + 1))
fi

if [ -n "$asan_pid" ]; then
    wait "$asan_pid" || asan_ok=0
    asan_pid=""
fi
echo "=== build-asan: build finished $(at)"
if [ "$asan_ok" -eq 1 ]; then
    run_tests build-asan "${sanitized_tests[@]}"
else
    cat "$background_log"
    echo "=== build-asan: BUILD FAILED (configure, target list or compile; the lines above say which) $(at)"
    total_failed=$((total_failed + 1))
fi

echo "=== took $(( $(date +%s) - start )) s"
leftover=$(ls /dev/shm 2>/dev/null | grep -c '^fabric-shm\.t-' || true)
[ "$leftover" -eq 0 ] || echo "=== warning: $leftover test segments left in /dev/shm (fabric-shm.t-*)"
if [ -s "$failures" ]; then echo "=== failed tests:"; cat "$failures"; fi
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
