#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main command (README): installs what is missing, builds, and runs what exists of the
# pipeline. For now: create the pool ${FABRIC_SHM_POOL:-default} if missing (re-creating it
# when an older build left an incompatible layout behind) and show it with fabric-shm-dump.
# Later issues extend this to the recipe pipeline (producer -> topic -> worker group).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
bash scripts/build.sh build

pool="${FABRIC_SHM_POOL:-default}"
cli=build/tools/fabric-shm
dump=build/tools/dump/fabric-shm-dump

create() { "$cli" pool create --exist-ok --pool "$pool" --json 2>&1; }

if out=$(create); then
    echo "run-demo: pool '$pool' is ready"
elif grep -q '"code":"version_mismatch"' <<<"$out"; then
    echo "run-demo: pool '$pool' was made by an incompatible build (layout changed, e.g. after a git pull):"
    echo "run-demo:   $(sed -n 's/.*"message":"\([^"]*\)".*/\1/p' <<<"$out")"
    echo "run-demo: removing and re-creating it"
    "$cli" pool rm --force --pool "$pool"
    out=$(create) || { echo "$out" >&2; exit 1; }
else
    echo "$out" >&2
    echo "run-demo: could not create or attach pool '$pool' (see above; \`$cli pool rm --force --pool $pool\` discards it)" >&2
    exit 1
fi

"$dump" --pool "$pool"
