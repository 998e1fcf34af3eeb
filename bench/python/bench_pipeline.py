#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The recipe's job from Python, in two processes (producer, worker): fabric_shm against redis-py
on Redis Streams. A benchmark (scripts/bench-python.sh runs it), never a test.

    bench_pipeline.py fabric [N]                  put_and_notify | fabric_shm.Worker; the producer's
                                                  cost per object one at a time and in batches
    bench_pipeline.py fabric-waiting [N]          handlers that wait 10 ms: one at a time, concurrency 8
    bench_pipeline.py redis PORT [N] [--pipeline] SET+XADD | XREADGROUP, GET, SET, XACK

Each prints JSON lines: the end-to-end rate (producer and worker running at once, from the
producer's start to the worker's last result) and the worker-only rate (every object and
notification in place before the worker starts). Objects are 1 KiB; the worker's job is
bytes(data).upper(), written back as the result.
"""
import json
import os
import subprocess
import sys
import time

SIZE = 1024
BATCH = 100


def emit(**fields):
    print(json.dumps(fields), flush=True)


# ---- fabric_shm -------------------------------------------------------------------------------

def fabric_produce(pool_name, n, start_index=0):
    import fabric_shm as fs
    with fs.Pool.open(pool_name) as pool:
        store = pool.store()
        producer = fs.Producer(pool, "events", block_timeout=60)
        data = b"x" * SIZE
        for i in range(start_index, start_index + n):
            fs.put_and_notify(store, producer, f"fabric://{pool_name}/in/{i}", data)


# Worker-only runs besides the one-at-a-time worker: (group, concurrency, handler kind).
CONCURRENT = [("async-8", 8, "async"), ("async-64", 64, "async"), ("threads-8", 8, "threads")]


def fabric_work(pool_name, n, group, concurrency=1, kind="plain"):
    import fabric_shm as fs
    with fs.Pool.open(pool_name) as pool:
        worker = fs.Worker(pool, topic="events", group=group, batch=64, result_bucket=group,
                           concurrency=concurrency, order="none" if concurrency > 1 else None)
        if kind == "async":
            async def upper(item):
                return bytes(item.data).upper()
            worker.handler(upper)
        else:
            worker.handler(lambda item: bytes(item.data).upper())
        t0 = time.perf_counter()
        worker.run(count=n)
        return time.perf_counter() - t0, worker.stats["processed"]


def fabric(n):
    import fabric_shm as fs
    name = f"bench-py-{os.getpid()}"
    pool = fs.Pool.create(name, size="1G", ttl=600)
    try:
        pool.topics().create("events", fs.TopicConfig(num_partitions=4, partition_capacity=1 << 15))
        fs.TopicManager(pool).register_group("events", "e2e")
        fs.TopicManager(pool).register_group("events", "only")
        for group, _, _ in CONCURRENT:
            fs.TopicManager(pool).register_group("events", group)
        # End to end: the producer in a child process, the worker here.
        t0 = time.perf_counter()
        child = subprocess.Popen([sys.executable, __file__, "fabric-produce", name, str(n)])
        _, processed = fabric_work(name, n, "e2e")
        elapsed = time.perf_counter() - t0
        assert child.wait() == 0 and processed == n
        emit(system="fabric_shm", mode="end-to-end", objects=n, seconds=round(elapsed, 3), rate=round(n / elapsed))
        # Worker only: group "only" has the same n notifications waiting.
        seconds, processed = fabric_work(name, n, "only")
        assert processed == n
        emit(system="fabric_shm", mode="worker only", objects=n, seconds=round(seconds, 3), rate=round(n / seconds))
        for group, concurrency, kind in CONCURRENT:
            seconds, processed = fabric_work(name, n, group, concurrency, kind)
            assert processed == n
            emit(system="fabric_shm", mode=f"worker only, concurrency {concurrency} ({kind} handler)", objects=n,
                 seconds=round(seconds, 3), rate=round(n / seconds))
        # Producer side only, one process, in its steady state (the keys exist, their URIs and
        # tuples are built beforehand): put_and_notify or put + send per object against
        # put_many + send_batch per BATCH objects. Best of 3 rounds; a topic nobody reads.
        store = pool.store()
        pool.topics().create("produce", fs.TopicConfig(num_partitions=4, partition_capacity=1 << 15,
                                                       on_full=fs.OnFull.OVERWRITE))
        producer = fs.Producer(pool, "produce")
        data = b"x" * SIZE
        uris = [f"fabric://{name}/p/{i}" for i in range(n)]
        items = [(u, data) for u in uris]
        notes = [(u.rsplit("/", 1)[1], u) for u in uris]

        def one_by_one():
            for u in uris:
                fs.put_and_notify(store, producer, u, data)

        def plain():
            for (u, d), (k, v) in zip(items, notes):
                store.put(u, d)
                producer.send_keyed(k, v)

        def batched():
            for base in range(0, n, BATCH):
                store.put_many(items[base:base + BATCH])
                producer.send_batch(notes[base:base + BATCH])

        one_by_one()  # warm-up: every key exists
        for label, run in (("put_and_notify per object", one_by_one), ("put + send_keyed per object", plain),
                           (f"put_many + send_batch of {BATCH}", batched)):
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - t)
            emit(system="fabric_shm", mode=f"produce: {label}", objects=n, us=round(best / n * 1e6, 2))
        # get: 1 KiB, 64 KiB and 1 MiB (a pin and a view: no copy, so no size dependence; the
        # copy grows with the size).
        for size in (SIZE, 1 << 16, 1 << 20):
            uri = f"fabric://{name}/get/{size}"
            store.put(uri, b"y" * size)
            reps = 20000
            t = time.perf_counter()
            for _ in range(reps):
                with store.get(uri) as obj:
                    obj.data
            emit(system="fabric_shm", mode=f"get+view {size} B", us=round((time.perf_counter() - t) / reps * 1e6, 2))
            t = time.perf_counter()
            for _ in range(200):
                store.get_bytes(uri)
            emit(system="fabric_shm", mode=f"get_bytes (copy) {size} B", us=round((time.perf_counter() - t) / 200 * 1e6, 2))
        # What opening the pool costs a new process here (every object of the runs above stored,
        # the topics' slots written): the open's reap walks regions only after a process died.
        t = time.perf_counter()
        for _ in range(10):
            fs.Pool.open(name).close()
        emit(system="fabric_shm", mode=f"Pool.open ({store.stats()['objects']} objects stored)",
             ms=round((time.perf_counter() - t) / 10 * 1e3, 2))
    finally:
        pool.close()
        fs.Pool.remove(name, force=True)


def fabric_waiting(n):
    """Handlers that wait 10 ms per object (I/O, a model server): one at a time against
    concurrency 8 (async def awaiting, or threads sleeping). Worker only, 4 partitions."""
    import asyncio
    import fabric_shm as fs
    name = f"bench-py-wait-{os.getpid()}"
    pool = fs.Pool.create(name, size="64M", ttl=600)
    try:
        pool.topics().create("events", fs.TopicConfig(num_partitions=4))
        runs = [("one-at-a-time", 1, "plain"), ("async-8", 8, "async"), ("threads-8", 8, "plain")]
        for group, _, _ in runs:
            fs.TopicManager(pool).register_group("events", group)
        store, producer = pool.store(), fs.Producer(pool, "events")
        for i in range(n):
            fs.put_and_notify(store, producer, f"fabric://{name}/in/{i}", b"x" * SIZE)
        for group, concurrency, kind in runs:
            worker = fs.Worker(pool, topic="events", group=group, result_bucket=group, concurrency=concurrency,
                               order="none")
            if kind == "async":
                async def handle(item):
                    await asyncio.sleep(0.01)
                    return bytes(item.data).upper()
            else:
                def handle(item):
                    time.sleep(0.01)
                    return bytes(item.data).upper()
            worker.handler(handle)
            t = time.perf_counter()
            worker.run(count=n)
            seconds = time.perf_counter() - t
            emit(system="fabric_shm", mode=f"handler waiting 10 ms, {group} ({kind})", objects=n,
                 seconds=round(seconds, 3), rate=round(n / seconds))
    finally:
        pool.close()
        fs.Pool.remove(name, force=True)


# ---- redis-py ---------------------------------------------------------------------------------

def redis_client(port):
    import redis
    return redis.Redis(host="127.0.0.1", port=port)


def redis_produce(port, n, pipeline, prefix):
    r = redis_client(port)
    data = b"x" * SIZE
    if not pipeline:
        for i in range(n):
            key = f"{prefix}:in:{i}"
            r.set(key, data)
            r.xadd(f"{prefix}:events", {"uri": key})
        return
    for base in range(0, n, BATCH):
        p = r.pipeline(transaction=False)
        for i in range(base, min(n, base + BATCH)):
            key = f"{prefix}:in:{i}"
            p.set(key, data)
            p.xadd(f"{prefix}:events", {"uri": key})
        p.execute()


def redis_work(port, n, pipeline, prefix, group):
    r = redis_client(port)
    stream = f"{prefix}:events"
    done = 0
    t0 = time.perf_counter()
    while done < n:
        resp = r.xreadgroup(group, "w1", {stream: ">"}, count=BATCH, block=1000)
        if not resp:
            continue
        entries = resp[0][1]
        if not pipeline:
            for entry_id, fields in entries:
                key = fields[b"uri"]
                data = r.get(key)
                r.set(b"result:" + key, data.upper())
                r.xack(stream, group, entry_id)
        else:
            p = r.pipeline(transaction=False)
            for _, fields in entries:
                p.get(fields[b"uri"])
            values = p.execute()
            p = r.pipeline(transaction=False)
            for (entry_id, fields), data in zip(entries, values):
                p.set(b"result:" + fields[b"uri"], data.upper())
            p.xack(stream, group, *[entry_id for entry_id, _ in entries])
            p.execute()
        done += len(entries)
    return time.perf_counter() - t0


def redis_bench(port, n, pipeline):
    r = redis_client(port)
    prefix = f"bench{os.getpid()}{'p' if pipeline else ''}"
    stream = f"{prefix}:events"
    r.xgroup_create(stream, "e2e", id="0", mkstream=True)
    r.xgroup_create(stream, "only", id="0", mkstream=True)
    label = "redis-py pipelined" if pipeline else "redis-py"
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "redis-produce", str(port), str(n), prefix,
                              "1" if pipeline else "0"])
    redis_work(port, n, pipeline, prefix, "e2e")
    elapsed = time.perf_counter() - t0
    assert child.wait() == 0
    emit(system=label, mode="end-to-end", objects=n, seconds=round(elapsed, 3), rate=round(n / elapsed))
    seconds = redis_work(port, n, pipeline, prefix, "only")
    emit(system=label, mode="worker only", objects=n, seconds=round(seconds, 3), rate=round(n / seconds))
    for size in (SIZE, 1 << 20):
        r.set(f"{prefix}:get:{size}", b"y" * size)
        reps = 2000
        t = time.perf_counter()
        for _ in range(reps):
            r.get(f"{prefix}:get:{size}")
        emit(system=label, mode=f"GET {size} B", us=round((time.perf_counter() - t) / reps * 1e6, 2))
    r.flushall()


def main():
    what = sys.argv[1]
    if what == "fabric":
        fabric(int(sys.argv[2]) if len(sys.argv) > 2 else 50000)
    elif what == "fabric-waiting":
        fabric_waiting(int(sys.argv[2]) if len(sys.argv) > 2 else 400)
    elif what == "fabric-produce":
        fabric_produce(sys.argv[2], int(sys.argv[3]))
    elif what == "redis":
        port = int(sys.argv[2])
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
        redis_bench(port, n, "--pipeline" in sys.argv)
    elif what == "redis-produce":
        redis_produce(int(sys.argv[2]), int(sys.argv[3]), sys.argv[5] == "1", sys.argv[4])
    else:
        sys.exit(f"unknown mode {what!r}: fabric | redis PORT")


if __name__ == "__main__":
    main()
