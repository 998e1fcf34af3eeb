# SPDX-License-Identifier: MIT
# The Python Worker with concurrency > 1 or an `async def` handler: the library's asynchronous
# form driven from asyncio (handlers as tasks, plain functions in threads). A slow item does not
# hold up the rest with order='none' and holds up its own key with order='key'; failures are
# retried and dead-lettered; stop() drains; a worker SIGKILLed with items in flight loses
# nothing; Ctrl-C stops it within 100 ms.
import asyncio
import gc
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings

import pytest

import fabric_shm as fs
import fabric_shm._async_worker as driver
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


def dead_letter_reasons(pool, dlq_topic="t.dlq"):
    dlq = fs.Consumer(pool, dlq_topic)
    dlq.assign_all()
    return [bytes(m.header("dlq.reason")).decode() for m in dlq.poll(max=10, timeout=1)]


def member_alive(pool_name):
    out = subprocess.run([str(CLI), "group", "describe", "g", "--topic", "t", "--pool", pool_name, "--json"],
                         capture_output=True, text=True, check=True)
    return any(m["alive"] for m in json.loads(out.stdout)["members"])


@pytest.mark.parametrize("kind", ["async", "threads"])
def test_a_result_that_cannot_be_encoded_is_a_failed_attempt_not_a_crash(pool, kind):
    # A str with a lone surrogate (what surrogateescape makes of invalid UTF-8) cannot be written:
    # a poison message must be retried and dead-lettered, never end the run of every worker.
    pool.topics().create("t", fs.TopicConfig(num_partitions=1))
    store, producer = pool.store(), fs.Producer(pool, "t")
    notify(store, producer, f"fabric://{pool.name}/in/poison", b"\x80")
    notify(store, producer, f"fabric://{pool.name}/in/fine", b"ok")
    worker = fs.Worker(pool, topic="t", group="g", concurrency=2, order="none", max_attempts=2,
                       backoff_initial=0.001)

    def decode(item):
        return bytes(item.data).decode("utf-8", "surrogateescape")

    if kind == "async":
        async def handle(item):
            return decode(item)
    else:
        handle = decode
    worker.handler(handle)
    assert worker.run(count=2) == "count_reached"
    stats = worker.stats
    assert stats["processed"] == 1 and stats["dead_lettered"] == 1 and stats["failed_attempts"] == 2, stats
    assert results(store, pool) == {"in/fine": b"ok"}
    assert ["UnicodeEncodeError" in r for r in dead_letter_reasons(pool)] == [True]


def test_an_async_handler_raising_cancelled_error_itself_fails_its_attempt(pool):
    # The handler awaits something another party cancelled: its CancelledError is an outcome of
    # the item (retried, then dead-lettered), not the end of the worker task holding a slot.
    store = one_partition_topic(pool, ["victim", "fine"])
    worker = fs.Worker(pool, topic="t", group="g", concurrency=2, order="none", max_attempts=2,
                       backoff_initial=0.001)

    @worker.handler
    async def handle(item):
        if item.uri.key == "victim":
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(fut.cancel)
            await fut
        return b"done"

    async def main():
        return await asyncio.wait_for(worker.run_async(count=2), timeout=10)

    assert asyncio.run(main()) == "count_reached"  # before: the item stayed in flight, the run never ended
    stats = worker.stats
    assert stats["processed"] == 1 and stats["dead_lettered"] == 1 and stats["failed_attempts"] == 2, stats
    assert results(store, pool) == {"in/fine": b"done"}
    assert ["CancelledError" in r for r in dead_letter_reasons(pool)] == [True]


def test_a_handler_that_swallows_its_cancellation_does_not_hold_up_cancelling_the_run(pool):
    store = one_partition_topic(pool, ["stubborn"])
    worker = fs.Worker(pool, topic="t", group="g", concurrency=2)
    started = asyncio.Event()

    @worker.handler
    async def handle(item):
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass  # swallowed: the handler returns normally
        return b"finished anyway"

    async def main():
        run = asyncio.create_task(worker.run_async())
        await asyncio.wait_for(started.wait(), timeout=10)
        run.cancel()
        done, _ = await asyncio.wait({run}, timeout=5)
        return run in done

    assert asyncio.run(main()), "the cancelled run waited for the next item of a handler task"
    assert results(store, pool) == {"in/stubborn": b"finished anyway"}  # what it returned was written
    assert not member_alive(pool.name)


def test_a_second_cancellation_while_waiting_for_the_handlers_still_leaves_the_group(pool):
    one_partition_topic(pool, ["stubborn"])
    worker = fs.Worker(pool, topic="t", group="g", concurrency=2)
    started, swallowed = asyncio.Event(), asyncio.Event()

    @worker.handler
    async def handle(item):
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.sleep(60)  # cleaning up slowly: only the second Ctrl-C ends it

    async def main():
        run = asyncio.create_task(worker.run_async())
        await asyncio.wait_for(started.wait(), timeout=10)
        run.cancel()
        await asyncio.wait_for(swallowed.wait(), timeout=10)  # the run now waits for the handler
        run.cancel()
        done, _ = await asyncio.wait({run}, timeout=5)
        assert run in done and run.cancelled()

    asyncio.run(main())
    assert not member_alive(pool.name)  # before: loop.close() was skipped, the member stayed alive
    worker = fs.Worker(pool, topic="t", group="g")
    seen = []
    worker.handler(lambda item: seen.append(item.attempt) or b"")
    assert worker.run(count=1) == "count_reached" and seen == [2]


def test_a_handler_thread_that_fails_to_start_leaves_nothing_behind(pool, monkeypatch):
    one_partition_topic(pool, ["k"])
    worker = fs.Worker(pool, topic="t", group="g", concurrency=3)
    worker.handler(lambda item: b"")
    started = []

    class SecondStartFails(threading.Thread):
        def start(self):
            if started:
                raise RuntimeError("can't start new thread")
            super().start()
            started.append(self)

    monkeypatch.setattr(driver, "threading", types.SimpleNamespace(Thread=SecondStartFails, Event=threading.Event))
    with pytest.raises(RuntimeError, match="can't start new thread"):
        worker.run()
    started[0].join(timeout=5)
    assert not started[0].is_alive()  # it got its stop sentinel instead of waiting forever
    assert not member_alive(pool.name)  # the loop was closed: it left the group


def test_a_plain_function_returning_a_coroutine_fails_with_a_reason_that_says_so(pool):
    one_partition_topic(pool, ["k"])
    worker = fs.Worker(pool, topic="t", group="g", concurrency=2, max_attempts=1)

    async def really_async(item):
        return b"never run"

    worker.handler(lambda item: really_async(item))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert worker.run(count=1) == "count_reached"
        gc.collect()
    assert worker.stats["dead_lettered"] == 1
    assert ["declare it async def" in r for r in dead_letter_reasons(pool)] == [True]
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_a_rebalance_while_every_slot_is_busy_does_not_spin_the_event_loop(pool, monkeypatch):
    # Both slots busy; a second member joins and takes a partition. The rebalance drops our
    # rings, so the library hands our partition's items out again (its in-flight count is 0)
    # while the driver's two slots still hold the stale tickets: the wait fd is readable for
    # items the driver cannot take. Watching it would wake the event loop continuously (tens of
    # thousands of times a second) until the stale handlers finish.
    pool.topics().create("t", fs.TopicConfig(num_partitions=2))
    store, producer = pool.store(), fs.Producer(pool, "t")
    for p in range(2):
        for i in range(3):
            uri = f"fabric://{pool.name}/in/p{p}-{i}"
            version = store.put(uri, b"x")
            producer.send_to(p, uri, headers={"fabric-version": str(version), "fabric-put-ts": str(time.time_ns())})
    wakeups = [0]
    on_fd = driver._Driver._on_fd

    def counting_on_fd(self):
        wakeups[0] += 1
        on_fd(self)

    monkeypatch.setattr(driver._Driver, "_on_fd", counting_on_fd)
    worker = fs.Worker(pool, topic="t", group="g", member_id="first", concurrency=2, order="none")
    second = fs.Worker(pool, topic="t", group="g", member_id="second")
    second.handler(lambda item: b"")
    started, measured = [], {}
    release = asyncio.Event()

    @worker.handler
    async def handle(item):
        started.append(item.uri.key)
        if len(started) == 2:  # both slots busy: the second member joins (its first rebalance is ours within 50 ms)
            measured["second"] = second._open_async(0, None, asyncio.get_running_loop(), threading.Event(), 0)
            before, cpu = wakeups[0], time.thread_time()
            await asyncio.sleep(0.3)
            measured["wakeups"], measured["cpu"] = wakeups[0] - before, time.thread_time() - cpu
            release.set()
        await release.wait()
        return b"done"

    async def main():
        run = asyncio.create_task(worker.run_async())
        await asyncio.wait_for(release.wait(), timeout=10)
        worker.stop()
        return await asyncio.wait_for(run, timeout=10)

    try:
        assert asyncio.run(main()) == "stopped"
    finally:
        if "second" in measured:
            measured["second"].close()
    assert worker.stats["rebalances"] >= 1 and len(worker.stats["partitions"]) == 1, worker.stats
    # One wake-up stops the watching; the 50 ms timer services the loop (before: thousands, and
    # ~40% of a CPU).
    assert measured["wakeups"] < 20 and measured["cpu"] < 0.1, measured
