#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Crash torture and stall torture, long mode (docs/reliability.md):
#   scripts/torture.sh [--kills 5000] [--seed N] [--producers 2] [--workers 3]
#                      [--session-timeout-ms 2000] [--interval-ms 120] [--crash-point-percent 35]
#                      [--keep] [--verbose]
#   scripts/torture.sh --stalls [--kills 1000] [--stall-count 1000] [--seed N] ...
# Builds what the harness needs in $FABRIC_SHM_BUILD_DIR (default build/), then runs
# build/tests/torture/torture with the arguments (default --kills 5000, or with --stalls
# --kills 1000 and as many stalls: SIGSTOPs and held pause points). The harness prints its
# seed first; `--seed N` replays the same schedule of decisions. Exit status 0 only when
# every invariant held; the last line is "torture: PASSED|FAILED (seed N)". The short forms
# are the meson tests `torture` and `torture-stalls` (suite torture), run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir="${FABRIC_SHM_BUILD_DIR:-build}"
[ -f "$dir/build.ninja" ] || bash scripts/build.sh "$dir" >/dev/null
ninja -C "$dir" tests/torture/torture workers/fabric-shm-worker tools/dump/fabric-shm-dump \
    tools/reaper/fabric-shm-reaper >/dev/null

args=("$@")
have_kills=0
stalls=0
for a in "${args[@]}"; do
    [ "$a" = "--kills" ] && have_kills=1
    [ "$a" = "--stalls" ] && stalls=1
done
if [ "$have_kills" = 0 ]; then
    if [ "$stalls" = 1 ]; then args+=(--kills 1000); else args+=(--kills 5000); fi
fi
echo "torture: $(uptime)"
FABRIC_SHM_TEST_BUILD_DIR="$(cd "$dir" && pwd)" exec "$dir/tests/torture/torture" "${args[@]}"
