#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Shared by run-demo.sh and demo-*.sh (sourced, not run): locates the executables, runs
# workers in the background, waits for results, and cleans up on any exit (workers get
# SIGTERM, then SIGKILL after 5 s; the pool is removed when this script created it).
# Environment: FABRIC_SHM_POOL (pool name), FABRIC_SHM_BUILD_DIR (default <repo>/build, built
# with scripts/build.sh when its executables are missing), FABRIC_SHM_KEEP=1 keeps the pool.
# Ctrl-C (or SIGTERM) stops the demo within about two seconds: workers get SIGTERM (finish
# the object in flight), then a second SIGTERM after 1 s (a worker kills its --exec command
# and exits), then SIGKILL; the pool goes when this demo created it.

demo_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
demo_build="${FABRIC_SHM_BUILD_DIR:-$demo_repo/build}"
demo_pids=()
demo_helper_pid=""  # a long wait run in the background (wait_results), killed on cleanup
demo_created_pool=0
demo_tmp="$(mktemp -d "${TMPDIR:-/tmp}/fabric-demo.XXXXXX")"

demo_bins() {
    if [ ! -x "$demo_build/workers/fabric-shm-worker" ] || [ ! -x "$demo_build/tools/fabric-shm" ]; then
        bash "$demo_repo/scripts/build.sh" "$demo_build" >/dev/null
    fi
    cli="$demo_build/tools/fabric-shm"
    dump="$demo_build/tools/dump/fabric-shm-dump"
    reaper="$demo_build/tools/reaper/fabric-shm-reaper"
    producer="$demo_build/workers/fabric-shm-producer"
    worker="$demo_build/workers/fabric-shm-worker"
}

say() { echo "[$demo_name] $*"; }

# demo_init NAME DEFAULT_POOL [fresh]: sets $pool; "fresh" refuses an existing pool (demos
# remove their pool at the end and must not remove someone else's).
demo_init() {
    demo_name="$1"
    pool="${FABRIC_SHM_POOL:-$2}"
    export FABRIC_SHM_POOL="$pool"
    demo_bins
    if "$cli" pool ls --json 2>/dev/null | grep -q "\"name\":\"$pool\""; then
        if [ "${3:-}" = fresh ]; then
            echo "[$demo_name] pool '$pool' exists already; this demo needs a fresh pool (it removes it at the end)." >&2
            echo "[$demo_name] use another: FABRIC_SHM_POOL=demo-\$\$ bash $0, or remove it: $cli pool rm --force --pool $pool" >&2
            exit 1
        fi
    else
        "$cli" pool create --pool "$pool" ${DEMO_POOL_OPTS:-} >/dev/null
        demo_created_pool=1
    fi
    demo_traps
}

# Cleanup on any exit; Ctrl-C and SIGTERM exit 130 through it.
demo_traps() {
    trap demo_cleanup EXIT
    trap 'say "interrupted: stopping the workers and cleaning up"; exit 130' INT TERM
}

# demo_wait_gone SECONDS: until every process in demo_pids has exited (0), or the time is up (1).
demo_wait_gone() {
    local end=$((SECONDS + $1)) pid alive
    while :; do
        alive=0
        for pid in "${demo_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && return 0
        [ "$SECONDS" -ge "$end" ] && return 1
        sleep 0.05
    done
}

demo_cleanup() {
    local rc=$?
    trap - INT TERM  # a second Ctrl-C must not cut the cleanup short
    if [ -n "$demo_helper_pid" ]; then
        kill -TERM "$demo_helper_pid" 2>/dev/null || true
        wait "$demo_helper_pid" 2>/dev/null || true
    fi
    if [ "${#demo_pids[@]}" -gt 0 ]; then
        # SIGTERM: finish the object in flight and leave the group. A worker still busy after
        # 1 s gets a second SIGTERM: it kills its --exec command and exits. Then SIGKILL.
        for pid in "${demo_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        if ! demo_wait_gone 1; then
            for pid in "${demo_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
            demo_wait_gone 1 || for pid in "${demo_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
        fi
        for pid in "${demo_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    fi
    if [ "$demo_created_pool" = 1 ] && [ "${FABRIC_SHM_KEEP:-0}" != 1 ]; then
        "$cli" pool rm --force --pool "$pool" >/dev/null 2>&1 || true
    fi
    rm -rf "$demo_tmp"
    exit $rc
}

# start_worker NAME ARGS...: a worker in the background, log in $demo_tmp/NAME.log, summary
# JSON in $demo_tmp/NAME.json; its pid goes to demo_pids and $last_pid.
start_worker() {
    local name="$1"
    shift
    # 9<&-: run-demo.sh's lock descriptor (an fd on the pool's segment) stays with the script.
    "$worker" --pool "$pool" --id "$name" --json "$@" >"$demo_tmp/$name.json" 2>"$demo_tmp/$name.log" 9<&- &
    last_pid=$!
    demo_pids+=("$last_pid")
}

# stop_worker PID: SIGTERM (finish in-flight work, commit, leave), wait, return its status.
stop_worker() {
    kill -TERM "$1" 2>/dev/null || true
    local rc=0
    wait "$1" || rc=$?
    local kept=()
    for p in "${demo_pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    demo_pids=("${kept[@]+"${kept[@]}"}")
    return $rc
}

# wait_member_count TOPIC GROUP N: until N members are alive in the group (5 s at most).
wait_members() {
    local topic="$1" group="$2" want="$3"
    for _ in $(seq 100); do
        local doc n
        doc=$("$cli" group describe "$group" --topic "$topic" --json 2>/dev/null) || doc='{}'
        n=$(python3 -c 'import json,sys; print(sum(1 for m in json.load(sys.stdin).get("members",[]) if m.get("alive")))' <<<"$doc" 2>/dev/null) || n=0
        [ "$n" -ge "$want" ] && return 0
        sleep 0.05
    done
    say "warning: $want members of '$group' not seen alive within 5 s"
}

# wait_results IN_BUCKET OUT_BUCKET TIMEOUT_S KEY...: until the result of every IN_BUCKET/KEY,
# OUT_BUCKET/IN_BUCKET/KEY (the worker's default result key: input bucket and key), exists and
# records the current version of IN_BUCKET/KEY as its input (so re-runs wait for new results).
wait_results() {
    local in="$1" out="$2" timeout="$3"
    shift 3
    # In the background and waited for with `wait`, which returns at once when the INT/TERM trap
    # fires. Waiting on it in the foreground, bash acts on a Ctrl-C only once the child dies of
    # it, and the child may never see it: one landing while python3 was still starting (pyenv's
    # shims are bash scripts waiting on their own children) was swallowed there, and the demo
    # waited out the whole timeout.
    python3 - "$cli" "$pool" "$in" "$out" "$timeout" "$@" <<'PY' &
import json, signal, subprocess, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))  # Ctrl-C: the script's trap reports it
cli, pool, src, dst, timeout, keys = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6:]
def head(bucket, key):
    r = subprocess.run([cli, "head", f"fabric://{pool}/{bucket}/{key}", "--json"], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None
want = {}
for k in keys:
    h = head(src, k)
    if h is None:
        sys.exit(f"input fabric://{pool}/{src}/{k} does not exist")
    want[k] = str(h["version"])
deadline = time.time() + timeout
pending = set(keys)
while pending and time.time() < deadline:
    # one `ls` per round; `head` only for keys that appeared
    r = subprocess.run([cli, "ls", f"fabric://{pool}/{dst}/", "--json"], capture_output=True, text=True)
    present = set(json.loads(r.stdout).get("keys", [])) if r.returncode == 0 else set()
    for k in sorted(k for k in pending if f"{src}/{k}" in present):
        h = head(dst, f"{src}/{k}")
        if h and h.get("metadata", {}).get("input-version") == want[k]:
            pending.discard(k)
    if pending:
        time.sleep(0.05)
if pending:
    sys.exit(f"timed out after {timeout:g}s waiting for {len(pending)} result(s) in '{dst}': {', '.join(sorted(pending)[:5])}")
PY
    demo_helper_pid=$!
    local rc=0
    wait "$demo_helper_pid" || rc=$?
    demo_helper_pid=""
    return $rc
}

# summary_line NAME: one line from a worker's --json summary.
summary_line() {
    python3 - "$demo_tmp/$1.json" "$demo_name" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"[{sys.argv[2]}] no summary in {sys.argv[1]}: {e}")
l = d["latency_ns"]
err = d.get("error", {}).get("message", "")
print(f"[{sys.argv[2]}] {d['member']}: {d['processed']} results, {d['skipped']} skipped, "
      f"{d['dead_lettered']} dead-lettered, partitions {d['partitions']}, exit {d.get('exit', 'error: ' + err)}, "
      f"latency p50 {l['p50']/1e6:.2f} ms, max {l['max']/1e6:.2f} ms")
PY
}

# wait_count BUCKET N TIMEOUT_S: until the bucket holds N keys (fresh pools: one `ls` per round).
wait_count() {
    local bucket="$1" want="$2" timeout="$3" n=0
    local end=$((SECONDS + timeout))
    while [ "$SECONDS" -lt "$end" ]; do
        n=$("$cli" ls "fabric://$pool/$bucket/" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["keys"]))')
        [ "$n" -ge "$want" ] && return 0
        sleep 0.1
    done
    say "timed out after ${timeout}s: $n of $want results in '$bucket'"
    return 1
}

# keys_of DIR: the file names the producer will use as keys.
keys_of() { (cd "$1" && find . -maxdepth 1 -type f -printf '%f\n' | sort); }
