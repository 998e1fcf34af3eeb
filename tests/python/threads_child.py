# SPDX-License-Identifier: MIT
"""The child process of test_threads.py: Python threads hammer one fabric_shm handle while
another thread closes it (or its pool), round after round.

    python3 threads_child.py SCENARIO POOL_NAME ROUNDS BUDGET_S

It runs ROUNDS rounds, or fewer once BUDGET_S seconds have passed (at least MIN_ROUNDS), so that a
loaded machine keeps the test's time instead of its round count.

Every call must return or raise the closed error (fabric_shm.Closed); once close() has returned,
every call must raise it. Exit 0: so it was. Exit 1: another outcome (printed). Exit 2: a thread
still ran 10 s after the close (a hang or a deadlock). A crash of the bindings is the signal that
killed this process, which the test reports without taking pytest down with it.
"""
import os
import random
import sys
import threading
import time
import traceback

import fabric_shm as fs

HANG_S = 10.0
TOPIC = "race"
MIN_ROUNDS = 3
_budget_end = float("inf")


def rounds_of(n):
    for r in range(n):
        if r >= MIN_ROUNDS and time.monotonic() > _budget_end:
            return
        yield r


class Failed(Exception):
    pass


def race(make, allowed=(fs.Closed,), warmup=3, threads_per_op=1, close_allowed=()):
    """One round. make() -> (ops, close): each op runs in a loop on threads_per_op threads of its
    own; once every thread made `warmup` calls (or stopped), close() runs after a random pause of
    up to 1 ms. A thread stops after its second allowed exception. Calls that began after close()
    returned must raise."""
    ops, close = make()
    threads = []
    failures = []
    warm = threading.Semaphore(0)
    closed_at = [None]  # monotonic time close() returned
    start = threading.Barrier(len(ops) * threads_per_op + 1)

    def hammer(op):
        calls = refused = 0
        try:
            start.wait()
            while True:
                began = time.monotonic()
                try:
                    op()
                except allowed:
                    refused += 1
                    if refused >= 2:
                        return
                    continue
                finally:
                    calls += 1
                    if calls == warmup:
                        warm.release()
                done_after = closed_at[0]
                if done_after is not None and began > done_after:
                    failures.append(f"{op.__name__}: a call made after close() returned succeeded")
                    return
        except BaseException:  # noqa: B036 -- anything else is the failure under test
            failures.append(f"{op.__name__}: " + traceback.format_exc())
        finally:
            if calls < warmup:
                warm.release()

    for op in ops:
        for _ in range(threads_per_op):
            t = threading.Thread(target=hammer, args=(op,), daemon=True)
            t.start()
            threads.append(t)
    start.wait()
    for _ in threads:
        warm.acquire()
    time.sleep(random.uniform(0, 0.001))
    while True:
        try:
            close()
            break
        except close_allowed:
            time.sleep(0.0005)
    closed_at[0] = time.monotonic()
    deadline = time.monotonic() + HANG_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            print(f"a thread still runs {HANG_S:.0f} s after close(): hang", file=sys.stderr, flush=True)
            os._exit(2)
    if failures:
        raise Failed("\n".join(failures))


# ---- Set-up -------------------------------------------------------------------------------------


def setup(pool):
    topics = pool.topics()
    topics.create(TOPIC, fs.TopicConfig(num_partitions=2, partition_capacity=64, partition_stride=256,
                                        on_full=fs.OnFull.OVERWRITE))
    producer = fs.Producer(pool, TOPIC)
    for i in range(64):
        producer.send(b"m%d" % i)
    producer.close()
    pool.store().put(f"fabric://{pool.name}/b/seed", b"seed")


def store_ops(pool_name, store, producer=None):
    uri = f"fabric://{pool_name}/b/k"

    def put():
        store.put(uri, b"x" * 64)

    def get():
        obj = store.get(f"fabric://{pool_name}/b/seed")
        if obj is not None:
            with obj:
                assert bytes(obj.data) == b"seed"

    def get_bytes():
        store.get_bytes(uri)

    def head():
        store.head(uri)

    def loan_commit():
        with store.loan(f"fabric://{pool_name}/b/loaned", 32) as loan:
            view = loan.data
            view[:4] = b"abcd"
            view.release()
            loan.commit()

    def listing():
        store.list("b")
        store.stats()

    ops = [put, get, get_bytes, head, loan_commit, listing]
    if producer is not None:
        def ingest():
            fs.put_and_notify(store, producer, f"fabric://{pool_name}/b/n", b"n")
        ops.append(ingest)
    return ops


def producer_ops(producer):
    def send():
        producer.send(b"v")

    def send_keyed():
        producer.send_keyed(b"k", b"v", headers={"h": b"1"})

    def send_batch():
        producer.send_batch([b"a", (b"k", b"b"), (None, b"c", [("h", b"2")])])

    def properties():
        assert producer.num_partitions == 2 and producer.topic == TOPIC

    return [send, send_keyed, send_batch, properties]


def consumer_ops(consumer):
    def poll():
        # Two 20 ms slices when the topic is drained: a close() can land between them.
        for m in consumer.poll(max=8, timeout=0.025):
            bytes(m.value)

    def poll_now():
        for m in consumer.poll(max=8, timeout=0):
            bytes(m.value)

    def commit():
        consumer.commit()

    def position():
        consumer.position(0)
        consumer.lag(1)
        consumer.assignment

    def seek():
        consumer.seek("earliest")

    return [poll, poll_now, commit, position, seek]


# ---- Scenarios ----------------------------------------------------------------------------------


def scenario_store_close(pool, rounds):
    def make():
        store = pool.store()
        return store_ops(pool.name, store), store.close
    for _ in rounds_of(rounds):
        race(make)


def scenario_store_pool_close(pool, rounds):
    def make():
        p = fs.Pool.open(pool.name)
        return store_ops(pool.name, p.store(), fs.Producer(p, TOPIC)), p.close
    for _ in rounds_of(rounds):
        race(make)


def scenario_producer_close(pool, rounds):
    store = pool.store()

    def make():
        producer = fs.Producer(pool, TOPIC)

        def ingest():
            fs.put_and_notify(store, [producer, producer], f"fabric://{pool.name}/b/n", b"n")
        return producer_ops(producer) + [ingest], producer.close
    for _ in rounds_of(rounds):
        race(make)


def scenario_producer_pool_close(pool, rounds):
    def make():
        p = fs.Pool.open(pool.name)
        return producer_ops(fs.Producer(p, TOPIC)), p.close
    for _ in rounds_of(rounds):
        race(make)


def scenario_consumer_close(pool, rounds):
    pool.topics().register_group(TOPIC, "cg")

    def make():
        consumer = fs.Consumer(pool, TOPIC, "cg")
        consumer.assign_all()
        return consumer_ops(consumer), consumer.close
    for _ in rounds_of(rounds):
        race(make, warmup=1)


def scenario_consumer_pool_close(pool, rounds):
    def make():
        p = fs.Pool.open(pool.name)
        consumer = fs.Consumer(p, TOPIC)
        consumer.assign_all()
        return [op for op in consumer_ops(consumer) if op.__name__ != "commit"], p.close
    for _ in rounds_of(rounds):
        race(make, warmup=1)


def scenario_group_consumer_close(pool, rounds):
    members = iter(range(rounds))

    def make():
        member = fs.GroupConsumer(pool, TOPIC, "gc", f"m{next(members)}", session_timeout=5)

        def poll():
            for m in member.poll(max=8, timeout=0.025):
                bytes(m.value)

        def commit():
            member.commit()

        def state():
            member.partitions
            member.epoch
            member.heartbeat()

        def leave_and_close():  # the end of a `with` block: leave(), then close()
            member.__exit__(None, None, None)

        return [poll, poll, commit, state], random.choice([member.close, leave_and_close])
    for _ in rounds_of(rounds):
        race(make, warmup=1)


def scenario_dlq_close(pool, rounds):
    group = fs.ConsumerGroup(pool, TOPIC, "dg")
    claim = group.claim("m")
    consumer = fs.Consumer(pool, TOPIC, "dg")
    consumer.assign(claim)
    messages = consumer.poll(max=8, timeout=1)
    assert messages

    def make():
        router = fs.DlqRouter(pool, TOPIC, "dg", max_attempts=1000, initial_backoff=0)
        router.assign(claim)

        def begin_ack():
            m = random.choice(messages)
            router.begin(m)
            router.ack(m)

        def decided():
            router.decided(random.choice(messages))
            router.dead_lettered

        def handle():
            router.handle(random.choice(messages), lambda m: None)

        return [begin_ack, decided, handle], router.close
    for _ in rounds_of(rounds):
        race(make)


def scenario_renewals_pool_close(pool, rounds):
    def make():
        p = fs.Pool.open(pool.name)
        renewals = fs.RenewalManager(p)
        renewals.register_pool_leases()
        topics = fs.TopicManager(p)

        def tick():
            renewals.tick()
            len(renewals)

        def register():
            renewals.register_pool_leases()

        def describe():
            topics.describe(TOPIC)
            topics.list()

        return [tick, register, describe], p.close
    for _ in rounds_of(rounds):
        race(make)


def scenario_waiter_consumer_close(pool, rounds):
    # close() of a watched consumer is refused (Busy); it succeeds once the waiter let go.
    def make():
        consumer = fs.Consumer(pool, TOPIC)
        consumer.assign_all()
        waiter = fs.Waiter()

        def watch():
            waiter.add(consumer)
            try:
                waiter.wait(0)
            finally:
                waiter.remove(consumer)
            time.sleep(0.0002)  # unwatched for a moment: the closer's chance

        def poll():
            consumer.poll(max=4, timeout=0)

        return [watch, poll], consumer.close
    for _ in rounds_of(rounds):
        race(make, close_allowed=(fs.Busy,))


def jobs_topic(pool):
    """A topic of object notifications only (the race topic's messages are no URIs)."""
    pool.topics().create("jobs", fs.TopicConfig(num_partitions=2, partition_capacity=256))
    return pool.store(), fs.Producer(pool, "jobs")


def scenario_worker_close(pool, rounds):
    store, producer = jobs_topic(pool)
    for r in rounds_of(rounds):
        worker = fs.Worker(pool, topic="jobs", group=f"w{r}", session_timeout=5)
        handled = threading.Event()

        @worker.handler
        def handle(item):
            handled.set()
            time.sleep(0.0005)
            return b"done"

        outcome = []

        def run():
            try:
                outcome.append(worker.run())
            except fs.Closed:
                outcome.append("closed")
            except BaseException:  # noqa: B036
                outcome.append(traceback.format_exc())

        for i in range(8):
            fs.put_and_notify(store, producer, f"fabric://{pool.name}/in/{r}-{i}", b"x")
        t = threading.Thread(target=run, daemon=True)
        t.start()
        handled.wait(HANG_S)
        time.sleep(random.uniform(0, 0.002))
        worker.close()
        t.join(HANG_S)
        if t.is_alive():
            print("Worker.run still runs after close(): hang", file=sys.stderr, flush=True)
            os._exit(2)
        if outcome[0] not in ("stopped", "closed"):
            raise Failed(f"run() after close(): {outcome[0]!r}")
        try:
            worker.run()
            raise Failed("run() after close() did not raise Closed")
        except fs.Closed:
            pass
        pool.topics().remove_group("jobs", f"w{r}")  # a topic holds 16 groups


def scenario_nested_calls(pool, rounds):
    """Callbacks that use the handle whose call is running them: a worker's handler closing its
    worker or reading its stats, a DLQ router's process function acking through the router."""
    store, producer = jobs_topic(pool)
    for r in rounds_of(rounds):
        fs.put_and_notify(store, producer, f"fabric://{pool.name}/in/n{r}", b"x")
        worker = fs.Worker(pool, topic="jobs", group=f"n{r}", session_timeout=5)
        seen = []

        @worker.handler
        def handle(item):
            try:
                worker.stats
                seen.append("stats")
            except fs.Busy:
                seen.append("busy")
            worker.close()
            return b"done"

        if worker.run() != "stopped":
            raise Failed("a worker closed by its own handler did not stop")
        if seen != ["busy"]:
            raise Failed(f"worker.stats inside its handler: {seen}")
        try:
            worker.run()
            raise Failed("run() after close() from the handler did not raise Closed")
        except fs.Closed:
            pass
        pool.topics().remove_group("jobs", f"n{r}")

    group = fs.ConsumerGroup(pool, TOPIC, "nd")
    claim = group.claim("m")
    consumer = fs.Consumer(pool, TOPIC, "nd")
    consumer.assign(claim)
    (message,) = consumer.poll(max=1, timeout=1)
    router = fs.DlqRouter(pool, TOPIC, "nd", max_attempts=1)
    router.assign(claim)
    inner = []

    def process(m):
        try:
            router.ack(m)
        except fs.Busy as e:
            inner.append(e)
        router.close()

    out = router.handle(message, process)
    if len(inner) != 1 or out["dead_lettered"]:
        raise Failed(f"DlqRouter.handle with a callback using the router: {inner} {out}")
    try:
        router.begin(message)
        raise Failed("a router closed inside its own handle() still works")
    except fs.Closed:
        pass


def scenario_blocked_calls_close(pool, rounds):
    """close() from another thread ends a poll waiting for messages and a send waiting for space in
    a full partition: both raise Closed long before their timeouts."""
    topics = pool.topics()
    topics.create("full", fs.TopicConfig(num_partitions=1, partition_capacity=4, partition_stride=256))
    topics.register_group("full", "slow")  # never commits: the partition stays full
    filler = fs.Producer(pool, "full")
    for i in range(4):
        filler.send(b"%d" % i)
    topics.create("empty", fs.TopicConfig(num_partitions=1))

    def blocked_until_closed(handle, call):
        started = threading.Event()
        outcome = []

        def run():
            started.set()
            t0 = time.monotonic()
            try:
                call()
                outcome.append("returned")
            except fs.Closed:
                outcome.append(time.monotonic() - t0)
            except BaseException:  # noqa: B036
                outcome.append(traceback.format_exc())

        t = threading.Thread(target=run, daemon=True)
        t.start()
        started.wait()
        time.sleep(0.05)  # (not a barrier: the call is inside the library) most likely blocked by now
        handle.close()
        t.join(HANG_S)
        if t.is_alive():
            print("a blocked call still runs after close(): hang", file=sys.stderr, flush=True)
            os._exit(2)
        if not isinstance(outcome[0], float) or outcome[0] > 5:
            raise Failed(f"{call.__name__} blocked (timeout 10 s) and closed: {outcome[0]!r}")

    for _ in rounds_of(rounds):
        producer = fs.Producer(pool, "full", block_timeout=10)

        def send():
            producer.send(b"no room")
        blocked_until_closed(producer, send)

        consumer = fs.Consumer(pool, "empty")
        consumer.assign_all()

        def poll():
            consumer.poll(timeout=10)
        blocked_until_closed(consumer, poll)


SCENARIOS = {name[len("scenario_"):]: f for name, f in globals().items() if name.startswith("scenario_")}


def main():
    global _budget_end
    scenario, pool_name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _budget_end = time.monotonic() + float(sys.argv[4])
    random.seed(os.getpid())
    sys.setswitchinterval(0.0002)  # threads take turns at the GIL often: more interleavings, faster rounds
    pool = fs.Pool.create(pool_name, size="16M", ttl=120)
    try:
        setup(pool)
        SCENARIOS[scenario](pool, rounds)
    except Failed as e:
        print(f"{scenario}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        pool.close()
        fs.Pool.remove(pool_name, force=True)


if __name__ == "__main__":
    main()
