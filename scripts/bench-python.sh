#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Python package against redis-py on Redis Streams (docs/benchmarks.md, "Python"): the
# recipe's job (1 KiB objects, producer and worker in separate processes, all in Python).
# A benchmark, not a test: installs redis-server and python3-redis (benchmark-only peers),
# starts redis-server on 127.0.0.1 at a free port with persistence off and stops it by PID.
#   bash scripts/bench-python.sh [N_FABRIC] [N_REDIS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

n_fabric="${1:-50000}"
n_redis="${2:-20000}"
bash scripts/install-deps.sh redis-server python3-redis >&2
bash scripts/build.sh build >&2
export PYTHONPATH="$PWD/build/python"
py=/usr/bin/python3   # the interpreter the package is built for (meson's; see docs/python.md)

"$py" bench/python/bench_pipeline.py fabric "$n_fabric"
"$py" bench/python/bench_pipeline.py fabric-waiting 400

tmp=$(mktemp -d)
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no --protected-mode yes \
    --dir "$tmp" --logfile "$tmp/redis.log" &
redis_pid=$!
cleanup() {
    kill -TERM "$redis_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$py" bench/python/bench_pipeline.py redis "$port" "$n_redis"
"$py" bench/python/bench_pipeline.py redis "$port" "$n_redis" --pipeline
