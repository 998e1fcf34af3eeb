#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main command (README): installs what is missing, builds, and runs the recipe end to end
# on pool ${FABRIC_SHM_POOL:-default} (created if missing; re-created when an older build left
# an incompatible layout behind): two workers join group 'processors' on topic 'object-events'
# (the first creates the topic), the producer ingests scripts/samples/, the script waits for
# every result, prints a few and the dump, and stops the workers with SIGTERM. A pool this
# script created is removed at the end (FABRIC_SHM_KEEP=1 keeps it for fabric-shm-dump).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# FABRIC_SHM_BUILD_DIR=DIR uses an existing build as is (the e2e tests run this script so).
own_build=0
if [ -n "${FABRIC_SHM_BUILD_DIR:-}" ]; then
    builddir="$FABRIC_SHM_BUILD_DIR"
else
    own_build=1
    builddir="$PWD/build"
    bash scripts/install-deps.sh
    # Only the demo's programs: the tests and the benchmark are built by scripts/test.sh.
    FABRIC_SHM_TARGETS="tools/fabric-shm tools/dump/fabric-shm-dump tools/reaper/fabric-shm-reaper
        workers/fabric-shm-worker workers/fabric-shm-producer" bash scripts/build.sh build
fi

pool="${FABRIC_SHM_POOL:-default}"
cli="$builddir/tools/fabric-shm"
dump="$builddir/tools/dump/fabric-shm-dump"
topic=object-events
group=processors

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"; }
create() { "$cli" pool create --exist-ok --pool "$pool" --json 2>&1; }

if out=$(create); then
    :
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
created=$(json_field created <<<"$out")
segment=$(json_field path <<<"$out")

# One demo per pool at a time: two would share group '$group' and take each other's
# notifications, and the one that created the pool would remove it under the other. The
# lock is an flock on the pool's segment (it goes with the segment; nothing to clean up),
# on descriptor 9, which the workers do not inherit (demo-lib.sh closes it for them).
exec 9<"$segment"
if ! flock -n 9; then
    echo "run-demo: another run-demo.sh is running on pool '$pool'; wait for it to finish, or run this one on a" >&2
    echo "run-demo: pool of its own: FABRIC_SHM_POOL=demo-\$\$ bash scripts/run-demo.sh" >&2
    exit 1
fi
# Workers of the group that are not a demo's (started by hand) would take the notifications too.
members=$("$cli" group describe "$group" --topic "$topic" --json 2>/dev/null |
    python3 -c 'import json,sys; print(" ".join(m["id"] for m in json.load(sys.stdin).get("members", []) if m.get("alive")))' 2>/dev/null || true)
if [ -n "$members" ]; then
    echo "run-demo: pool '$pool' already has live workers in group '$group' on topic '$topic': $members" >&2
    echo "run-demo: they would process this demo's objects; stop them, or run on a pool of its own: FABRIC_SHM_POOL=demo-\$\$ bash scripts/run-demo.sh" >&2
    exit 1
fi
echo "run-demo: pool '$pool' is ready$([ "$created" = True ] && echo " (created; removed at the end unless FABRIC_SHM_KEEP=1)")"

# ---- The recipe: store -> topic -> worker group -> results ------------------------------
# shellcheck source=scripts/demo-lib.sh
source scripts/demo-lib.sh
FABRIC_SHM_BUILD_DIR="$builddir" demo_init recipe "$pool"
[ "$created" = True ] && demo_created_pool=1  # made above: remove it at the end
topic=object-events
group=processors
samples=scripts/samples
mapfile -t keys < <(keys_of "$samples")

processor="${DEMO_EXEC:-tr a-z A-Z}"
say "1. two workers join group '$group' on topic '$topic' (the first creates it, 4 partitions);"
say "   each runs \`$processor\` on every object (--exec: any program is the \"Lambda\")"
start_worker worker-1 --topic "$topic" --group "$group" --exec "$processor"
w1=$last_pid
wait_members "$topic" "$group" 1
start_worker worker-2 --topic "$topic" --group "$group" --exec "$processor"
w2=$last_pid
wait_members "$topic" "$group" 2

say "2. the producer puts ${#keys[@]} files into fabric://$pool/uploads/ and notifies '$topic'"
"$producer" --pool "$pool" --bucket uploads --topic "$topic" "$samples"

say "3. waiting for every result in fabric://$pool/results/"
wait_results uploads results 30 "${keys[@]}"
say "   all ${#keys[@]} results written; a few of them:"
for k in "${keys[@]:0:3}"; do
    echo "--- fabric://$pool/results/uploads/$k"
    "$cli" get "fabric://$pool/results/uploads/$k"
done

say "4. the pool (fabric-shm-dump):"
"$dump" --pool "$pool"

say "5. stopping the workers (SIGTERM: finish in-flight work, commit, leave the group)"
for pid in "$w1" "$w2"; do stop_worker "$pid"; done
for w in worker-1 worker-2; do summary_line "$w"; done
# The Python package is built after the demo's result (the demo does not need it), and linked
# for python3 so that `python3 -c 'import fabric_shm'` works next (README, "Python").
if [ "$own_build" = 1 ] && [ "${FABRIC_SHM_NO_PYTHON:-0}" != 1 ]; then
    say "6. the Python package: building it and linking it for python3 (scripts/install-python.sh; FABRIC_SHM_NO_PYTHON=1 skips this)"
    bash scripts/install-python.sh build ||
        say "   the Python package is not set up (see above); the demo itself succeeded"
fi
if [ "$demo_created_pool" = 1 ] && [ "${FABRIC_SHM_KEEP:-0}" != 1 ]; then
    say "done; pool '$pool' is removed on exit (FABRIC_SHM_KEEP=1 keeps it)"
else
    say "done; pool '$pool' is kept: $dump --pool $pool"
fi
