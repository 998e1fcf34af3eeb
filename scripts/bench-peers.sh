#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The physical floor and the peer systems, same jobs, one run, one table.
#
#   scripts/bench-peers.sh [--seconds S] [--no-install] [--pin] [--only NAME]
#
# 1. Installs the peers from Debian when missing (not test dependencies; through
#    scripts/install-deps.sh, which skips installed packages): redis-server, libhiredis-dev,
#    iceoryx, libiceoryx-posh-dev, libzmq3-dev.
# 2. Builds bench/floor/*.cpp and bench/peers/*.cpp with plain g++ lines into build-peers/
#    (not meson: nothing here touches the project build or the test path).
# 3. Starts redis-server on 127.0.0.1, a random free port, persistence off, --dir in a mktemp
#    dir, and iox-roudi; runs every program (S seconds of measurement per run, default 2,
#    after 0.2 s of warm-up); stops each server by its PID at the end, also on failure
#    (trap EXIT), and removes what they leave: /tmp/roudi*, /tmp/iox-unique-roudi.lock, the
#    per-app /tmp/fsb-* sockets, /dev/shm/iceoryx_mgmt and the RouDi user segment, zmq ipc
#    files (kept in the mktemp dir), Boost message queues (/dev/shm/peer_bipmq_*).
# 4. Writes every JSON line to bench-results/peers-<UTC date>.jsonl and prints a markdown
#    table (scenario x system: throughput, p50, p99, ratio to the floor) on stdout.
# A peer that fails to build or run is reported and skipped; the others still run.
#   --pin     pin producer to CPU 0 and consumer to CPU 1 (floor and peer client processes)
#   --only    run only the programs whose name contains NAME (e.g. floor, redis, iceoryx)
#   --fabric-json FILE   (repeatable) a `fabric-shm-bench <notify|pipeline> --json` report
#             from the same machine: its results join the table as system fabric-shm, and
#             every peer row gets its ratio to the best fabric-shm row of the same scenario
#             and mode (mode = the result's "mode" field, else "park" in its name -> parked).
#   --results DIR   write peers.jsonl, peers.log, peers-failed.txt and peers-load.txt into DIR
#             (scripts/bench.sh uses it) instead of bench-results/peers-<UTC date>.*
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

ARGS="$*"
SECS=2
INSTALL=1
PIN_ARGS=()
ONLY=""
FABRIC_JSON=()
RESULTS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECS="$2"; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --pin) PIN_ARGS=(--cpu-a 1 --cpu-b 0); shift ;;  # consumer side on CPU 0, as fabric-shm-bench --pin
        --only) ONLY="$2"; shift 2 ;;
        --fabric-json) FABRIC_JSON+=("$2"); shift 2 ;;
        --results) RESULTS="$2"; shift 2 ;;
        -h|--help) sed -n '3,31p' "$0"; exit 0 ;;
        *) echo "bench-peers: unknown option $1" >&2; exit 2 ;;
    esac
done

log() { echo "bench-peers: $*" >&2; }

# ---------------------------------------------------------------- 1. install
if [ "$INSTALL" -eq 1 ]; then
    scripts/install-deps.sh redis-server libhiredis-dev iceoryx libiceoryx-posh-dev libzmq3-dev >&2
fi

# ---------------------------------------------------------------- 2. build
BUILD="$ROOT/build-peers"
mkdir -p "$BUILD"
CXX=${CXX:-g++}
CXXFLAGS=(-std=c++20 -O2 -Wall -Wextra)
IOX_INC=$(ls -d /usr/include/iceoryx/v* 2>/dev/null | sort -V | tail -1 || true)
declare -A BUILT=()
build() {  # name source libs...
    local name="$1" src="$2"; shift 2
    if "$CXX" "${CXXFLAGS[@]}" "$src" "$BUILD/histogram.o" -o "$BUILD/$name" "$@" 2>"$BUILD/$name.build.log"; then
        BUILT[$name]=1
    else
        log "BUILD FAILED: $name (see $BUILD/$name.build.log)"; tail -5 "$BUILD/$name.build.log" >&2
    fi
}
log "building into $BUILD"
"$CXX" "${CXXFLAGS[@]}" -c bench/harness/histogram.cpp -o "$BUILD/histogram.o"
build floor_spin_pingpong  bench/floor/floor_spin_pingpong.cpp
build floor_futex_pingpong bench/floor/floor_futex_pingpong.cpp
build floor_memcpy         bench/floor/floor_memcpy.cpp -lisal
build floor_spsc_pipeline  bench/floor/floor_spsc_pipeline.cpp -lisal
build floor_store_pipeline bench/floor/floor_store_pipeline.cpp -lisal
build floor_first_touch    bench/floor/floor_first_touch.cpp
build peer_redis           bench/peers/peer_redis.cpp -lhiredis -lisal
build peer_zmq             bench/peers/peer_zmq.cpp $(pkg-config --libs libzmq 2>/dev/null || echo -lzmq)
build peer_bipmq           bench/peers/peer_bipmq.cpp -pthread
if [ -n "$IOX_INC" ]; then
    build peer_iceoryx bench/peers/peer_iceoryx.cpp -I"$IOX_INC" \
        -liceoryx_posh -liceoryx_hoofs -liceoryx_platform -lisal -pthread
else
    log "iceoryx headers not found under /usr/include/iceoryx: skipping peer_iceoryx"
fi

# ---------------------------------------------------------------- 3. servers + runs
TMPD=$(mktemp -d /tmp/fsb-peers.XXXXXX)
REDIS_PID=""
ROUDI_PID=""
STARTED_ROUDI=0
cleanup() {
    local rc=$?
    if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    if [ -n "$ROUDI_PID" ] && kill -0 "$ROUDI_PID" 2>/dev/null; then
        kill -TERM "$ROUDI_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$ROUDI_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$ROUDI_PID" 2>/dev/null || true
        wait "$ROUDI_PID" 2>/dev/null || true
    fi
    if [ "$STARTED_ROUDI" -eq 1 ]; then
        # What RouDi and its apps leave when killed; RouDi removes them itself on SIGTERM.
        rm -f /tmp/roudi /tmp/roudi.lock /tmp/iox-unique-roudi.lock /dev/shm/iceoryx_mgmt \
              "/dev/shm/$(id -un)" 2>/dev/null || true
        rm -f /tmp/fsb-pub-[0-9]* /tmp/fsb-sub-[0-9]* /tmp/fsb-producer-[0-9]* /tmp/fsb-worker-[0-9]* 2>/dev/null || true
    fi
    rm -f /dev/shm/peer_bipmq_[0-9]* 2>/dev/null || true
    rm -rf "$TMPD"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
if [ -n "$RESULTS" ]; then
    mkdir -p "$RESULTS"
    OUT="$RESULTS/peers.jsonl"
    ERRLOG="$RESULTS/peers.log"
    echo "start $(cut -d' ' -f1-3 /proc/loadavg)" >"$RESULTS/peers-load.txt"
else
    mkdir -p bench-results
    OUT="bench-results/peers-$STAMP.jsonl"
    ERRLOG="bench-results/peers-$STAMP.log"
fi
: >"$OUT"
: >"$ERRLOG"
FAILED=()
want() { [ -z "$ONLY" ] || [[ "$1" == *"$ONLY"* ]]; }
run() {  # name args...  (env passed through)
    local name="$1"; shift
    want "$name" || return 0
    if [ -z "${BUILT[$name]:-}" ]; then FAILED+=("$name (not built)"); return 0; fi
    log "running $name"
    echo "== $name $*" >>"$ERRLOG"
    local rc=0
    timeout --kill-after=5 $(( ${SECS%.*} * 10 + 60 )) "$BUILD/$name" --seconds "$SECS" "${PIN_ARGS[@]}" "$@" \
        >"$TMPD/$name.out" 2>>"$ERRLOG" || rc=$?
    grep '^{' "$TMPD/$name.out" >>"$OUT" || true
    grep -v '^{' "$TMPD/$name.out" >>"$ERRLOG" || true
    if [ "$rc" -ne 0 ]; then FAILED+=("$name (exit $rc)"); log "$name exited with $rc (see $ERRLOG)"; fi
}

run floor_spin_pingpong
# The topic protocol's closed loop again, with a producer that spends 80 ns per message first:
# about the notify bench producer's clock read and the library's send, measured in one process.
run floor_spin_pingpong --only claim_stream --producer-work 80
run floor_futex_pingpong
run floor_memcpy --seconds 0.25
run floor_spsc_pipeline  # fixed count (2,000,000 objects + warm-up), --seconds is ignored
# What a process pays per page the first time it touches a pool's page (a worker started on
# a backlog, each run of a command-line producer): a fresh mapping of a 64 MiB tmpfs file.
run floor_first_touch  # one pass per variant, --seconds is ignored
# The same job in the store's shape (index word -> block, key after the payload, the result an
# object too), bare; then again with each side also spending, in work that shares no line, what
# the library's steps cost in one process (the pipeline report's cost rows, less the 1 KiB CRC
# the floor computes itself on each side; the producer's 1 KiB copy, which the floor also
# does, stays counted twice: ~10-20 ns). What the library loses beyond that second row is what
# its own shared lines cost.
run floor_store_pipeline
if [ ${#FABRIC_JSON[@]} -gt 0 ]; then
    WORK=$(python3 - "${FABRIC_JSON[@]}" <<'PY' || true
import json, sys
for path in sys.argv[1:]:
    try:
        rep = json.load(open(path))
    except (OSError, ValueError):
        continue
    cost = {m["name"]: m["ns_per_op"] for m in rep.get("results", [])
            if m.get("kind") == "cost" and m.get("size") == 1024 and m.get("ns_per_op")}
    step = lambda s: cost.get("cost 1KiB " + s)
    producer = [step("producer: put (copy in, CRC, publish)"), step("producer: send URI notification + placement")]
    worker = [step("worker: " + s) for s in ("poll 16 + commit", "parse URI (view)", "prefetch + pin + unpin",
                                             "crc32 of the object", "format result URI (view)", "put 4-byte result")]
    crc = step("worker: crc32 of the object")
    if None in producer or None in worker or crc is None:
        continue
    print(max(0, round(sum(producer) - crc)), max(0, round(sum(worker) - crc)))
    break
PY
)
    if [ -n "$WORK" ]; then
        read -r PRODUCER_WORK CONSUMER_WORK <<<"$WORK"
        run floor_store_pipeline --producer-work "$PRODUCER_WORK" --consumer-work "$CONSUMER_WORK"
    elif want floor_store_pipeline; then
        log "no 1 KiB cost rows in ${FABRIC_JSON[*]}: floor_store_pipeline runs without the library's step costs only"
    fi
fi

# Redis: dedicated server, loopback, random free port, persistence off.
if want peer_redis && [ -n "${BUILT[peer_redis]:-}" ]; then
    if command -v redis-server >/dev/null; then
        PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        redis-server --bind 127.0.0.1 --port "$PORT" --save '' --appendonly no --daemonize no \
            --protected-mode yes --dir "$TMPD" --logfile "$TMPD/redis.log" &
        REDIS_PID=$!
        for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
        if redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1; then
            PEER_REDIS_PORT="$PORT" run peer_redis
        else
            FAILED+=("peer_redis (redis-server did not start)")
        fi
        kill -TERM "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; REDIS_PID=""
    else
        FAILED+=("peer_redis (no redis-server)")
    fi
fi

# iceoryx: RouDi (only if none is running already: it is a per-host singleton).
if want peer_iceoryx && [ -n "${BUILT[peer_iceoryx]:-}" ]; then
    if pgrep -x iox-roudi >/dev/null 2>&1; then
        FAILED+=("peer_iceoryx (another iox-roudi is running; not touching it)")
    elif command -v iox-roudi >/dev/null; then
        rm -f /tmp/roudi /tmp/roudi.lock /tmp/iox-unique-roudi.lock  # stale, no RouDi alive
        STARTED_ROUDI=1
        iox-roudi -l warning >"$TMPD/roudi.log" 2>&1 &
        ROUDI_PID=$!
        for _ in $(seq 100); do grep -q "RouDi is ready" "$TMPD/roudi.log" && break; sleep 0.1; done
        if grep -q "RouDi is ready" "$TMPD/roudi.log"; then
            run peer_iceoryx
        else
            FAILED+=("peer_iceoryx (iox-roudi did not start)"); cat "$TMPD/roudi.log" >>"$ERRLOG"
        fi
        kill -TERM "$ROUDI_PID" 2>/dev/null || true; wait "$ROUDI_PID" 2>/dev/null || true; ROUDI_PID=""
        cat "$TMPD/roudi.log" >>"$ERRLOG"
    else
        FAILED+=("peer_iceoryx (no iox-roudi)")
    fi
fi

PEER_ZMQ_DIR="$TMPD" run peer_zmq
run peer_bipmq

# ---------------------------------------------------------------- 4. table
if [ -n "$RESULTS" ]; then
    echo "end $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/peers-load.txt"
    : >"$RESULTS/peers-failed.txt"
    for f in "${FAILED[@]}"; do echo "$f" >>"$RESULTS/peers-failed.txt"; done
fi
python3 - "$OUT" "$SECS" "$ARGS" "${FABRIC_JSON[@]}" <<'PY'
import json, os, platform, sys
path, secs, args = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(path) if l.strip()]
fabric = []
for fp in sys.argv[4:]:  # fabric-shm-bench --json reports (harness format)
    rep = json.load(open(fp))
    for m in rep.get("results", []):
        lat = m.get("latency_ns", {})
        name = m.get("name", "?")
        mode = m.get("mode") or ("parked" if "park" in name else "spin")
        fabric.append({"system": "fabric-shm", "scenario": rep.get("scenario", "?"), "variant": name, "mode": mode,
                       "size": m.get("bytes_per_op") or m.get("size") or (64 if rep.get("scenario") == "notify" else 1024),
                       "throughput": m.get("throughput_ops_s", 0.0), "unit": "ops/s", "cpu_ns_per_op": m.get("cpu_ns_per_op"),
                       "p50_ns": lat.get("p50"), "p99_ns": lat.get("p99")})
best = {}
for f in fabric:
    k = (f["scenario"], f["mode"])
    b = best.setdefault(k, {"p50": None, "thr": 0.0})
    if f["p50_ns"] and (b["p50"] is None or f["p50_ns"] < b["p50"]): b["p50"] = f["p50_ns"]
    b["thr"] = max(b["thr"], f["throughput"] or 0.0)
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
load = open("/proc/loadavg").read().split()[:3]
print(f"Machine: {os.cpu_count()} vCPUs, {model}, kernel {platform.release()}, load average {' '.join(load)} at the start of the table")
print(f"Run: scripts/bench-peers.sh {args}  ({secs} s measured per run after 0.2 s warm-up); JSON: {path}\n")

def ns(v):
    if v is None: return "-"
    return f"{v/1e6:.2f} ms" if v >= 1e6 else (f"{v/1e3:.1f} µs" if v >= 1e3 else f"{v} ns")
def rate(v, unit):
    if unit == "B/s": return f"{v/1e9:.2f} GB/s"
    return f"{v/1e6:.2f} M/s" if v >= 1e6 else (f"{v/1e3:.1f} k/s" if v >= 1e3 else f"{v:.0f}/s")

fl = {r["scenario"]: r for r in rows if r["system"] == "floor" and r["scenario"] in ("spin_pingpong", "futex_pingpong", "spin_stream")}
print("Floor (this machine, this run):\n")
print("| floor | size | throughput | p50 | p99 | max |")
print("|---|---:|---:|---:|---:|---:|")
for r in rows:
    if r["system"] != "floor": continue
    if r["scenario"] in ("memcpy", "crc32") and r["size"] not in (1024, 65536, 1048576, 16777216): continue
    p = lambda k: ns(r.get(k)) if r.get("latency") != "none" else "-"
    name = r["scenario"] + (" (one-way = RTT/2)" if r.get("latency") == "one_way=rtt/2" else "")
    if r["scenario"] == "spin_light": name += f" {r['variant']} (one-way at a light {r.get('offered_rate', 0):.0f}/s)"
    if r["scenario"] == "claim_stream": name += f" (topic slot protocol, closed loop, producer work {r.get('producer_work_ns', 0)} ns)"
    if r["scenario"] == "store_pipeline": name += f" (producer work {r.get('producer_work_ns', 0)} ns, worker work {r.get('consumer_work_ns', 0)} ns)"
    print(f"| {name} | {r['size']} B | {rate(r['throughput'], r['unit'])}{'' if r['unit']=='B/s' else ' (' + r['unit'].replace('/s', '') + ')'} | {p('p50_ns')} | {p('p99_ns')} | {p('max_ns')} |")

print("\nPeers (throughput = consumer-side completions/s; latency = one-way for notify, end to end for pipeline;")
print("client CPU/msg = producer + consumer process CPU time / messages, servers such as redis-server and RouDi not included):\n")
print("| scenario | system | variant | mode | throughput | p50 | p99 | client CPU/msg | p50 ÷ floor p50 | floor throughput ÷ throughput | p50 ÷ fabric-shm p50 | fabric-shm throughput ÷ throughput |")
print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in sorted([r for r in rows if r["system"] != "floor"] + fabric, key=lambda r: (r["scenario"], r["system"] != "fabric-shm", r["system"], r.get("window", 0), r["variant"])):
    fk = "spin_pingpong" if r["mode"] == "spin" else "futex_pingpong"
    f = fl.get(fk)
    lat = f"{r['p50_ns']/f['p50_ns']:.3g}× ({'spin' if fk=='spin_pingpong' else 'futex'})" if f and f.get("p50_ns") and r.get("p50_ns") else "-"
    st = fl.get("spin_stream")
    thr = f"{st['throughput']/r['throughput']:.3g}×" if st and r.get("throughput") else "-"
    b = best.get((r["scenario"], r["mode"]))
    fl50 = f"{r['p50_ns']/b['p50']:.3g}×" if b and b["p50"] and r.get("p50_ns") and r["system"] != "fabric-shm" else "-"
    fthr = f"{b['thr']/r['throughput']:.3g}×" if b and b["thr"] and r.get("throughput") and r["system"] != "fabric-shm" else "-"
    lat = lat if r.get("p50_ns") else "-"
    c = r.get("client_cpu_ns_per_msg", r.get("cpu_ns_per_op"))
    cpu = ns(int(c)) if c else "-"
    print(f"| {r['scenario']} {r['size']} B | {r['system']} | {r['variant']} | {r['mode']} | {rate(r['throughput'], r['unit'])} | {ns(r['p50_ns'])} | {ns(r['p99_ns'])} | {cpu} | {lat} | {thr} | {fl50} | {fthr} |")
if not fabric:
    print("\n(no --fabric-json report given: the fabric-shm columns are empty)")
PY

if [ "${#FAILED[@]}" -gt 0 ]; then
    echo
    echo "Failed or skipped: ${FAILED[*]}"
    exit 1
fi
