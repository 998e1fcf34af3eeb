# SPDX-License-Identifier: MIT
# The Python Worker with concurrency > 1 or an `async def` handler: the library's asynchronous
# form driven from asyncio (handlers as tasks, plain functions in threads). A slow item does not
# hold up the rest with order='none' and holds up its own key with order='key'; failures are
# retried and dead-lettered; stop() drains; a worker SIGKILLed with items in flight loses
# nothing; Ctrl-C stops it within 100 ms.
import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fabric_shm as fs
from conftest import CLI, python_env


def notify(store, producer, uri, data, key=None):
    """The recipe's put and notify, with a chosen key (default: the URI)."""
    version = store.put(uri, data)
    producer.send_keyed(key if key is not None else uri, uri,
                        headers={"fabric-version": str(version), "fabric-put-ts": str(time.time_ns())})
    return version


def one_partition_topic(pool, keys, key_of=lambda k: None):
    pool.topics().create("t", fs.TopicConfig(num_partitions=1))
    store = pool.store()
    producer = fs.Producer(pool, "t")
    for k in keys:
        notify(store, producer, f"fabric://{pool.name}/in/{k}", k, key_of(k))
    return store


def results(store, pool):
    return {k: store.get_bytes(f"fabric://{pool.name}/results/{k}") for k in store.list("results")}


@pytest.mark.parametrize("order", ["none", "key"])
def test_a_slow_item_holds_up_only_what_its_order_mode_says(pool, order):
    # One partition; a1..a3 share key A, b1..b2 key B. a1 is slow: it finishes only after both B
    # items did (so other keys are never held up). With order='none' the other A items pass it
    # too; with order='key' they start only after it completed.
    keys = ["a1", "b1", "a2", "b2", "a3"]
    store = one_partition_topic(pool, keys, key_of=lambda k: k[0].upper())
    worker = fs.Worker(pool, topic="t", group="g", concurrency=4, order=order)
    events = []
    others_done = asyncio.Event()
    waiting_for = {"b1", "b2"} | ({"a2", "a3"} if order == "none" else set())

    @worker.handler
    async def handle(item):
        key = item.uri.key
        events.append(("start", key))
        if key == "a1":
            await asyncio.wait_for(others_done.wait(), timeout=10)
        else:
            await asyncio.sleep(0)
        events.append(("end", key))
        if waiting_for <= {k for e, k in events if e == "end"}:
            others_done.set()
        return key.upper().encode()

    assert worker.run(count=5) == "count_reached"
    assert results(store, pool) == {f"in/{k}": k.upper().encode() for k in keys}
    end_a1 = events.index(("end", "a1"))
    assert events.index(("end", "b1")) < end_a1 and events.index(("end", "b2")) < end_a1
    if order == "none":
        assert events.index(("end", "a2")) < end_a1 and events.index(("end", "a3")) < end_a1
    else:
        assert events.index(("start", "a2")) > end_a1 and events.index(("start", "a3")) > events.index(("end", "a2"))
    assert worker.stats["processed"] == 5


def test_a_plain_function_handler_runs_in_a_thread_pool_of_the_concurrency(pool):
    keys = [f"k{i}" for i in range(6)]
    store = one_partition_topic(pool, keys, key_of=lambda k: "same")
    worker = fs.Worker(pool, topic="t", group="g", concurrency=4, order="none")
    lock = threading.Lock()
    finished = []
    others_done = threading.Event()
    threads = set()

    @worker.handler
    def handle(item):
        threads.add(threading.current_thread().name)
        if item.uri.key == "k0":  # slow: waits for the five others, which run on the other threads
            assert others_done.wait(timeout=10), "the other items were held up behind the slow one"
        with lock:
            finished.append(item.uri.key)
            if len(finished) == 5 and "k0" not in finished:
                others_done.set()
        return bytes(item.data) + b"!"

    assert worker.run(count=6) == "count_reached"
    assert finished[-1] == "k0"
    assert all(name.startswith("fabric-shm-handler") for name in threads) and len(threads) > 1
    assert results(store, pool) == {f"in/{k}": k.encode() + b"!" for k in keys}


def test_async_handler_failures_are_retried_then_dead_lettered(pool):
    keys = ["ok", "flaky", "bad", "perm", "notbytes"]
    store = one_partition_topic(pool, keys)
    worker = fs.Worker(pool, topic="t", group="g", concurrency=4, order="none", max_attempts=3,
                       backoff_initial=0.001)
    attempts = {}

    @worker.handler
    async def handle(item):
        key = item.uri.key
        attempts[key] = item.attempt
        if key == "flaky" and item.attempt < 3:
            raise RuntimeError("try again")
        if key == "bad":
            raise RuntimeError("always broken")
        if key == "perm":
            raise fs.InvalidArgument("not an image")  # permanent: dead-lettered at once
        if key == "notbytes":
            return 42  # not bytes-like: a bug of the handler, retried like any exception
        return b"fine"

    assert worker.run(count=5) == "count_reached"
    assert attempts == {"ok": 1, "flaky": 3, "bad": 3, "perm": 1, "notbytes": 3}
    stats = worker.stats
    assert stats["processed"] == 2 and stats["dead_lettered"] == 3
    assert stats["failed_attempts"] == 2 + 3 + 1 + 3
    assert results(store, pool) == {"in/ok": b"fine", "in/flaky": b"fine"}
    assert fs.dead_letter_count(pool, "t.dlq") == 3


def test_stop_drains_the_items_in_flight_and_run_async_joins_a_running_event_loop(pool):
    keys = [f"k{i}" for i in range(8)]
    store = one_partition_topic(pool, keys)
    worker = fs.Worker(pool, topic="t", group="g", concurrency=3, order="none")
    started = []

    @worker.handler
    async def handle(item):
        started.append(item.uri.key)
        if len(started) == 1:
            worker.stop()  # no new items; the ones in flight still finish
        await asyncio.sleep(0.01)
        return b"done"

    async def main():
        with pytest.raises(RuntimeError, match="run_async"):
            worker.run()  # inside a running event loop: says what to use instead
        return await worker.run_async()

    assert asyncio.run(main()) == "stopped"
    assert 1 <= len(started) <= 3 and worker.stats["processed"] == len(started)
    assert sorted(results(store, pool)) == sorted(f"in/{k}" for k in started)
    assert worker.run(idle=0.3) == "idle"  # a second run takes the rest
    assert sorted(results(store, pool)) == [f"in/{k}" for k in keys]


ASYNC_CHILD = """
import asyncio, sys
import fabric_shm as fs
pool = fs.Pool.open({pool!r})
worker = fs.Worker(pool, topic="t", group="g", member_id="victim", concurrency=4, order="none")

@worker.handler
async def handle(item):
    if item.uri.key >= "k04":
        print("hanging", item.uri.key, flush=True)
        await asyncio.sleep(60)  # SIGKILLed here, four items in flight
    return b"done by victim"

worker.run()
"""


def test_a_concurrent_python_worker_sigkilled_with_items_in_flight_loses_nothing(pool):
    keys = [f"k{i:02d}" for i in range(8)]
    store = one_partition_topic(pool, keys)
    child = subprocess.Popen([sys.executable, "-c", ASYNC_CHILD.format(pool=pool.name)], stdout=subprocess.PIPE,
                             text=True, env=python_env())
    try:
        hanging = {child.stdout.readline().split()[1] for _ in range(4)}
        assert hanging == {"k04", "k05", "k06", "k07"}
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # The survivor takes the partition over (the victim's death is seen by its pid) and redoes
    # the four items that were in flight; the first four were done by the victim and are not
    # redone (committed, or redelivered and skipped: their results record the same version).
    survivor = fs.Worker(pool, topic="t", group="g", member_id="survivor", concurrency=4)
    attempts = {}

    @survivor.handler
    async def handle(item):
        attempts[item.uri.key] = item.attempt
        return b"done by survivor"

    assert survivor.run(idle=1.0) == "idle"
    done = results(store, pool)
    assert done == {f"in/{k}": b"done by victim" if k < "k04" else b"done by survivor" for k in keys}
    assert attempts == {k: 2 for k in keys[4:]}  # the victim's attempt was counted in the pool
    assert survivor.stats["processed"] == 4


HANDLERS = {
    "async": "async def handle(item):\n    print('started', flush=True)\n    await asyncio.sleep(60)\n",
    "threads": "def handle(item):\n    print('started', flush=True)\n    time.sleep(60)\n",
}


@pytest.mark.parametrize("kind", ["async", "threads"])
def test_ctrl_c_stops_a_concurrent_worker_with_items_in_flight_within_100_ms(pool, kind):
    one_partition_topic(pool, ["slow"])
    script = textwrap.dedent(f"""
        import asyncio, time
        import fabric_shm as fs
        pool = fs.Pool.open({pool.name!r})
        worker = fs.Worker(pool, topic="t", group="g", concurrency=4)
    """) + HANDLERS[kind] + textwrap.dedent("""
        worker.handler(handle)
        try:
            worker.run()
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=python_env())
    try:
        assert child.stdout.readline().strip() == "started"
        time.sleep(0.2)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        line = child.stdout.readline().split()
        assert child.wait(timeout=5) == 0  # a handler thread still sleeping does not hold the exit
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert line[0] == "interrupted" and float(line[1]) - sent < 0.1
    out = subprocess.run([str(CLI), "group", "describe", "g", "--topic", "t", "--pool", pool.name, "--json"],
                         capture_output=True, text=True, check=True)
    assert not any(m["alive"] for m in json.loads(out.stdout)["members"])  # it left the group
    # The cancelled item was not completed: the next worker gets it (its second attempt).
    worker = fs.Worker(pool, topic="t", group="g")
    seen = []
    worker.handler(lambda item: seen.append(item.attempt) or b"")
    assert worker.run(count=1) == "count_reached" and seen == [2]


def heartbeat_ages(pool_name):
    out = subprocess.run([str(CLI), "group", "describe", "g", "--topic", "t", "--pool", pool_name, "--json"],
                         capture_output=True, text=True, check=True)
    return [m["heartbeat_age_ns"] / 1e9 for m in json.loads(out.stdout)["members"] if m["alive"]]


@pytest.mark.parametrize("kind", ["async", "threads"])
def test_the_driver_heartbeats_while_every_slot_is_busy_past_the_session_timeout(pool, kind):
    # Both slots busy for two session timeouts: the driver keeps servicing the loop meanwhile,
    # so the member's heartbeat stays fresh (what keeps it from being evicted) and the results
    # are written under its epoch.
    store = one_partition_topic(pool, ["a", "b"])
    worker = fs.Worker(pool, topic="t", group="g", concurrency=2, order="none", session_timeout=0.2)
    ages = []
    if kind == "async":
        async def handle(item):
            await asyncio.sleep(0.4)
            ages.extend(heartbeat_ages(pool.name))
            return b"slow"
    else:
        def handle(item):
            time.sleep(0.4)
            ages.extend(heartbeat_ages(pool.name))
            return b"slow"
    worker.handler(handle)
    assert worker.run(count=2) == "count_reached"
    assert len(ages) == 2 and max(ages) < 0.2, ages
    stats = worker.stats
    assert stats["processed"] == 2 and stats["abandoned"] == 0, stats
    assert results(store, pool) == {"in/a": b"slow", "in/b": b"slow"}
