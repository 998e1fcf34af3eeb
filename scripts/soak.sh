#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Soak, long mode (docs/reliability.md):
#   scripts/soak.sh [--seconds 1800] [--warmup S] [--sample-ms 1000] [--keys 300] [--churners 2]
#                   [--workers 2] [--rss-tolerance-kib 128] [--csv FILE] [--seed N]
# Builds what it needs in $FABRIC_SHM_BUILD_DIR (default build/), then runs
# build/tests/soak/soak (default --seconds 1800, warm-up a quarter of the run, at least 10 s)
# and writes every sample to --csv (default build/soak-<date>.csv). Prints one line per
# sampled quantity (first and last third of the samples after the warm-up) and ends with
# "soak: PASSED|FAILED". The short form is the meson test `soak` (suite soak).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir="${FABRIC_SHM_BUILD_DIR:-build}"
[ -f "$dir/build.ninja" ] || bash scripts/build.sh "$dir" >/dev/null
ninja -C "$dir" tests/soak/soak workers/fabric-shm-worker tools/dump/fabric-shm-dump \
    tools/reaper/fabric-shm-reaper >/dev/null

args=("$@")
have_seconds=0 have_csv=0
for a in "${args[@]}"; do
    [ "$a" = "--seconds" ] && have_seconds=1
    [ "$a" = "--csv" ] && have_csv=1
done
[ "$have_seconds" = 1 ] || args+=(--seconds 1800)
[ "$have_csv" = 1 ] || args+=(--csv "$dir/soak-$(date -u +%Y%m%dT%H%M%SZ).csv")
echo "soak: $(uptime)"
status=0
FABRIC_SHM_TEST_BUILD_DIR="$(cd "$dir" && pwd)" "$dir/tests/soak/soak" "${args[@]}" || status=$?
echo "soak: $(uptime)"
exit $status
