# SPDX-License-Identifier: MIT
# Topics from Python: producers, consumers (views into the poll's own buffer), the recipe's
# group sequence, GroupConsumer, DlqRouter, Waiter and its file descriptor, Ctrl-C.
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import fabric_shm as fs
from conftest import child_blocked_then_interrupted, child_stopped_at, python_env


def make_topic(pool, name="t", **config):
    pool.topics().create(name, fs.TopicConfig(**config))
    return name


def test_send_and_poll_with_keys_and_headers(pool):
    make_topic(pool, num_partitions=2)
    producer = fs.Producer(pool, "t")
    r = producer.send(b"plain", headers={"h1": "v1", "h2": b"\x00\x01"})
    assert isinstance(r, fs.SendResult) and r.offset == 0
    partition, offset = producer.send_keyed("key-a", b"keyed")
    assert producer.send_keyed("key-a", b"again").partition == partition
    consumer = fs.Consumer(pool, "t")  # an observer
    consumer.assign_all()
    consumer.seek("earliest")
    messages = consumer.poll(max=10, timeout=1)
    assert sorted(bytes(m.value) for m in messages) == [b"again", b"keyed", b"plain"]
    plain = next(m for m in messages if bytes(m.value) == b"plain")
    assert [(n, bytes(v)) for n, v in plain.headers] == [("h1", b"v1"), ("h2", b"\x00\x01")]
    assert bytes(plain.header("h1")) == b"v1" and plain.header("absent") is None
    assert plain.timestamp_ns > 0 and plain.key.nbytes == 0
    keyed = [m for m in messages if m.key_str() == "key-a"]
    assert [m.value_str() for m in sorted(keyed, key=lambda m: m.offset)] == ["keyed", "again"]
    assert consumer.poll(timeout=0) == []


def test_a_poll_with_no_partition_assigned_returns_at_once_without_spinning(pool):
    make_topic(pool, num_partitions=2)
    consumer = fs.Consumer(pool, "t", "g")  # assign() forgotten: nothing can arrive
    cpu, start = time.process_time(), time.monotonic()
    assert consumer.poll(timeout=3) == []
    # As the library's poll: at once, not a busy loop of empty slices until the timeout (with
    # timeout=None, for ever).
    assert time.monotonic() - start < 1.0 and time.process_time() - cpu < 0.5
    consumer.assign_all()
    start = time.monotonic()
    assert consumer.poll(timeout=0.2) == [] and time.monotonic() - start >= 0.15  # assigned: it waits


def test_a_poll_of_max_0_is_invalid_instead_of_spinning(pool):
    make_topic(pool, num_partitions=1)
    consumer = fs.Consumer(pool, "t", "g")
    consumer.assign_all()
    with fs.GroupConsumer(pool, "t", "g2") as member:
        for c in (consumer, member):
            start = time.monotonic()
            with pytest.raises(fs.InvalidArgument, match="max 0"):
                c.poll(max=0, timeout=3)
            assert time.monotonic() - start < 1.0


def test_seek_to_a_time_before_1970_reads_everything_retained(pool):
    import datetime

    make_topic(pool, num_partitions=1)
    producer = fs.Producer(pool, "t")
    producer.send(b"a")
    producer.send(b"b")
    consumer = fs.Consumer(pool, "t")
    consumer.assign_all()
    # Every message was sent after 1960: the seek is the earliest retained one, not a wrapped
    # far-future time past them all.
    consumer.seek(fs.SeekPolicy.Timestamp(datetime.datetime(1960, 1, 1, tzinfo=datetime.timezone.utc)))
    assert [m.value_str() for m in consumer.poll(max=10, timeout=0.2)] == ["a", "b"]
    with pytest.raises(fs.InvalidArgument, match="Timestamp"):
        fs.SeekPolicy.Timestamp(datetime.datetime(9999, 1, 1, tzinfo=datetime.timezone.utc))


def a_and_b_on_two_partitions(pool):
    """Topic "t" of two partitions: a0..a2 on partition 0, b0..b2 on partition 1."""
    make_topic(pool, num_partitions=2)
    producer = fs.Producer(pool, "t")
    for i in range(3):
        producer.send_to(0, f"a{i}".encode())
        producer.send_to(1, f"b{i}".encode())


def test_a_paused_partition_is_skipped_and_resumes_where_it_stopped(pool):
    a_and_b_on_two_partitions(pool)
    consumer = fs.Consumer(pool, "t", "g")
    consumer.assign_all()
    consumer.pause(1)
    assert consumer.paused(1) and not consumer.paused(0)
    assert [m.value_str() for m in consumer.poll(max=10, timeout=0.03)] == ["a0", "a1", "a2"]
    assert consumer.poll(max=10, timeout=0.03) == [] and consumer.position(1) == 0
    consumer.resume(1)
    assert [m.value_str() for m in consumer.poll(max=10, timeout=0)] == ["b0", "b1", "b2"]
    consumer.assign([0])
    with pytest.raises(fs.InvalidArgument, match="partition 1: not assigned"):
        consumer.pause(1)


def test_a_group_member_pauses_one_of_its_partitions_and_resumes_it_where_it_stopped(pool):
    a_and_b_on_two_partitions(pool)
    with fs.GroupConsumer(pool, "t", "g", "m") as member:
        assert sorted(member.partitions) == [0, 1]  # the only member owns both from its join
        member.pause(1)
        assert member.paused(1) and not member.paused(0)
        assert [m.value_str() for m in member.poll(max=10, timeout=0.05)] == ["a0", "a1", "a2"]
        assert member.poll(max=10, timeout=0.03) == []
        member.resume(1)
        assert [m.value_str() for m in member.poll(max=10, timeout=0.05)] == ["b0", "b1", "b2"]
        with pytest.raises(fs.InvalidArgument, match=r"member .m. owns partitions \[0, 1\] of topic .t., not 7"):
            member.pause(7)


def test_send_batch_returns_one_result_each_and_reports_what_was_sent(pool):
    make_topic(pool, num_partitions=1, partition_capacity=4, on_full=fs.OnFull.REJECT)
    producer = fs.Producer(pool, "t")
    fs.TopicManager(pool).register_group("t", "slow")  # holds back the ring: nothing committed
    results = producer.send_batch([b"a", ("k", b"b"), (None, b"c", {"h": "v"})])
    assert [r.offset for r in results] == [0, 1, 2]
    with pytest.raises(fs.BackPressure) as info:
        producer.send_batch([b"d", b"e", b"f"])
    assert [r.offset for r in info.value.sent] == [3]


def test_send_batch_goes_on_past_a_full_partition_and_keeps_key_order(pool):
    make_topic(pool, num_partitions=2, partition_capacity=4, on_full=fs.OnFull.REJECT)
    fs.TopicManager(pool).register_group("t", "slow")  # holds back the ring: nothing committed
    producer = fs.Producer(pool, "t")
    # Two keys in different partitions, learnt from a topic of the same partition count.
    probe = fs.Producer(pool, make_topic(pool, "probe", num_partitions=2))
    full = b"k0"
    home = probe.send_keyed(full, b"").partition
    other = next(k for k in (b"k%d" % i for i in range(1, 64)) if probe.send_keyed(k, b"").partition != home)
    for _ in range(4):
        producer.send_keyed(full, b"fill")
    with pytest.raises(fs.BackPressure) as info:
        producer.send_batch([(full, b"a1"), (other, b"b1"), (full, b"a2"), (other, b"b2")])
    results, errors = info.value.results, info.value.errors
    assert results[0] is None and results[2] is None
    assert results[3].offset == results[1].offset + 1
    assert [r.offset for r in info.value.sent] == [results[1].offset, results[3].offset]
    assert errors[1] is None and errors[3] is None
    assert "is full" in errors[0] and errors[2].startswith("not sent: message 0 to partition")


def test_put_and_notify_notifies_every_producer_even_after_one_fails(pool):
    # Fan-out: a full topic (REJECT) first, a healthy one second. The object is stored once, the
    # healthy topic is told of it, and the failure is raised with the version and each outcome.
    make_topic(pool, "full", num_partitions=1, partition_capacity=4, on_full=fs.OnFull.REJECT)
    make_topic(pool, "ok", num_partitions=2)
    fs.TopicManager(pool).register_group("full", "slow")  # holds the ring: nothing is committed
    full, ok = fs.Producer(pool, "full"), fs.Producer(pool, "ok")
    for i in range(4):
        full.send(b"filler %d" % i)
    store = pool.store()
    uri = f"fabric://{pool.name}/uploads/a.png"
    with pytest.raises(fs.BackPressure) as info:
        fs.put_and_notify(store, [full, ok], uri, b"png bytes")
    assert info.value.version == 1 and isinstance(info.value.notified[0], str)
    assert isinstance(info.value.notified[1], fs.SendResult)
    assert store.get_bytes(uri) == b"png bytes"
    version, sent = fs.put_and_notify(store, ok, uri, b"png bytes 2", metadata={"who": "test"})
    assert version == 2 and len(sent) == 1 and store.head(uri).metadata["who"] == "test"
    consumer = fs.Consumer(pool, "ok")
    consumer.assign_all()
    consumer.seek("earliest")
    messages = sorted(consumer.poll(max=10, timeout=1), key=lambda m: m.header("fabric-version").tobytes())
    assert [(m.value_str(), m.key_str(), m.header("fabric-version").tobytes()) for m in messages] == \
        [(uri, "a.png", b"1"), (uri, "a.png", b"2")]  # keyed by the object's key: one partition, in order
    assert int(bytes(messages[0].header("fabric-put-ts"))) > 0


def test_message_views_never_dangle_across_polls(pool):
    make_topic(pool, num_partitions=1)
    producer = fs.Producer(pool, "t")
    consumer = fs.Consumer(pool, "t")
    consumer.assign([0])
    producer.send(b"first message")
    (first,) = consumer.poll(timeout=1)
    kept = first.value  # kept past the next poll: that poll must not reuse this buffer
    del first
    for i in range(20):
        producer.send(b"overwrite %02d" % i)
        (m,) = consumer.poll(timeout=1)
        assert bytes(m.value) == b"overwrite %02d" % i
    assert bytes(kept) == b"first message"


def test_a_poll_reports_what_was_overwritten_before_it_was_read(pool):
    make_topic(pool, num_partitions=1, partition_capacity=4, on_full="overwrite")
    producer = fs.Producer(pool, "t")
    member = fs.GroupConsumer(pool, "t", "g", "m")  # registered at offset 0
    for i in range(12):  # the ring keeps 8..11
        producer.send(b"%d" % i)
    assert [m.offset for m in member.poll(max=64, timeout=1)] == [8, 9, 10, 11]
    assert member.last_gaps == [(0, 0, 8)] and member.lost == 8
    assert member.poll(timeout=0) == [] and member.last_gaps == [] and member.lost == 8
    other = fs.Consumer(pool, "t", "g2")  # registered at the oldest offset held, 8
    other.assign([0])
    for i in range(12, 20):  # 8..15 overwritten before g2 read them
        producer.send(b"%d" % i)
    assert [m.offset for m in other.poll(max=64, timeout=1)] == [16, 17, 18, 19]
    assert other.last_gaps == [(0, 8, 16)] and other.lost == 8


def producer_stopped_after_its_claim(pool):
    """A child process that claims the topic's next offset and stops there (SIGSTOP at the
    pause point mq.send.after_claim): readers wait before that claim until its timeout."""
    script = f"import fabric_shm as fs\nfs.Producer(fs.Pool.open({pool.name!r}), 't').send(b'claimed')\n"
    return child_stopped_at("mq.send.after_claim", script, "the producer")


@pytest.mark.parametrize("kind", ["consumer", "group consumer"])
def test_a_poll_that_finds_only_a_loss_returns_it(pool, kind):
    make_topic(pool, num_partitions=1, partition_capacity=4, on_full="overwrite")
    producer = fs.Producer(pool, "t")
    if kind == "consumer":
        reader = fs.Consumer(pool, "t", "g")
        reader.assign([0])
    else:
        reader = fs.GroupConsumer(pool, "t", "g", "m")
    for i in range(4):
        producer.send(b"early")  # 0..3
    stopped = producer_stopped_after_its_claim(pool)  # claims 4
    try:
        for i in range(3):
            producer.send(b"late")  # 5..7: 0..3 overwritten; 4 stays claimed
        # Nothing can be delivered before the claim times out, but 0..3 are known lost: the poll
        # returns with that, well before its timeout.
        start = time.monotonic()
        assert reader.poll(timeout=1.5) == []
        assert time.monotonic() - start < 1.0
        assert reader.last_gaps == [(0, 0, 4)] and reader.lost == 4
    finally:
        stopped.kill()
        stopped.wait()



def test_a_commit_or_seek_with_a_negative_offset_or_partition_is_invalid_argument_naming_it(pool):
    make_topic(pool, num_partitions=2)
    consumer = fs.Consumer(pool, "t", "g")
    with pytest.raises(fs.InvalidArgument, match=r"next_offset -1: must not be negative"):
        consumer.commit(0, -1)
    with pytest.raises(fs.InvalidArgument, match=r"partition 4294967296: must be at most 4294967295"):
        consumer.commit(2**32, 0)
    with pytest.raises(fs.InvalidArgument, match=r"partition -1"):
        consumer.seek(fs.SeekPolicy.Earliest(), -1)
    with pytest.raises(fs.InvalidArgument, match=r"SeekPolicy.Timestamp -5: must not be negative"):
        fs.SeekPolicy.Timestamp(-5)


def test_recipe_claim_assign_seek_poll_commit_heartbeat_resumes_after_the_commit(pool):
    make_topic(pool, "object-events", num_partitions=4)
    producer = fs.Producer(pool, "object-events")
    for i in range(8):
        producer.send(f"fabric://{pool.name}/uploads/{i}".encode())
    group = fs.ConsumerGroup(pool, "object-events", "processors")
    claim = group.claim("worker-1")
    assert claim.partitions == [0, 1, 2, 3] and claim.epoch > 0
    consumer = fs.Consumer(pool, "object-events", "processors")
    consumer.assign(claim)
    consumer.seek(fs.SeekPolicy.Earliest())
    got = consumer.poll(max=5, timeout=1)
    consumer.commit()
    group.heartbeat("worker-1")
    consumer.close()
    again = fs.Consumer(pool, "object-events", "processors")
    again.assign(group.claim("worker-1"))
    again.seek(fs.SeekPolicy.Earliest())
    rest = []
    while batch := again.poll(timeout=0.2):
        rest += batch
    assert len(got) + len(rest) == 8
    assert {m.value_str() for m in got}.isdisjoint({m.value_str() for m in rest})


def test_opening_a_group_on_a_topic_still_being_created_lets_other_threads_run(pool):
    import threading

    # A creator stopped before it publishes the topic: ConsumerGroup (num_partitions from the
    # topic) waits for it, and must wait without the GIL, as every other blocking call does.
    env = python_env()
    env["FABRIC_SHM_PAUSE_POINT"] = "topic.create.before_publish"
    script = f"import fabric_shm as fs\nfs.Pool.open({pool.name!r}).topics().create('t')\n"
    creator = subprocess.Popen([sys.executable, "-c", script], env=env)
    ticks, done = [], threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.005)

    thread = threading.Thread(target=ticker)
    try:
        for _ in range(1000):  # bounded: 10 s
            with open(f"/proc/{creator.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            time.sleep(0.01)
        else:
            raise AssertionError("the creator never stopped before publishing")
        # Resumed from outside this process: a thread of ours would need the GIL to do it.
        resumer = subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -CONT {creator.pid}"])
        thread.start()
        start = time.monotonic()
        group = fs.ConsumerGroup(pool, "t", "g")
        waited = time.monotonic() - start
        done.set()
        thread.join()
        assert group.num_partitions == 4 and waited >= 0.3
        during = [t for t in ticks if start + 0.05 < t < start + waited - 0.05]
        assert len(during) >= 10, f"{len(during)} ticks of another thread in {waited:.2f} s"
        assert resumer.wait(timeout=10) == 0 and creator.wait(timeout=10) == 0
    finally:
        done.set()
        if thread.is_alive():
            thread.join()
        if creator.poll() is None:
            creator.kill()
            creator.wait()


def test_group_consumer_polls_and_commits_fenced(pool):
    make_topic(pool, num_partitions=2)
    producer = fs.Producer(pool, "t")
    for i in range(6):
        producer.send(b"%d" % i)
    with fs.GroupConsumer(pool, "t", "g", "m1") as member:
        seen = []
        while batch := member.poll(max=4, timeout=0.3):
            seen += [m.value_str() for m in batch]
            member.commit(batch[-1]) if len({m.partition for m in batch}) == 1 else member.commit()
        assert sorted(seen) == [str(i) for i in range(6)]
        assert member.partitions == [0, 1] and member.epoch > 0
    description = pool.topics().describe("t")
    (g,) = description["groups"]
    assert sum(p["lag"] for p in g["partitions"]) == 0


def test_dlq_router_retries_then_dead_letters(pool):
    make_topic(pool, num_partitions=1)
    fs.Producer(pool, "t").send(b"poison")
    fs.Producer(pool, "t").send(b"bad input")
    group = fs.ConsumerGroup(pool, "t", "g")
    claim = group.claim("m")
    consumer = fs.Consumer(pool, "t", "g")
    consumer.assign(claim)
    router = fs.DlqRouter(pool, "t", "g", max_attempts=2, initial_backoff=0.001)
    router.assign(claim)
    poison, bad = consumer.poll(max=2, timeout=1)
    calls = []

    def flaky(message):
        calls.append(message.value_str())
        raise RuntimeError("handler failed")

    out = router.handle(poison, flaky)
    assert out["dead_lettered"] and out["attempts"] == 2 and "RuntimeError: handler failed" in out["reason"]
    out = router.handle(bad, lambda m: (_ for _ in ()).throw(fs.InvalidArgument("not an image")))
    assert out["dead_lettered"] and out["attempts"] == 1  # permanent: no retry
    assert calls == ["poison", "poison"]
    assert fs.dead_letter_count(pool, router.dlq_topic) == 2
    dlq = fs.Consumer(pool, router.dlq_topic)
    dlq.assign_all()
    letters = dlq.poll(max=10, timeout=1)
    assert [m.value_str() for m in letters] == ["poison", "bad input"]
    assert bytes(letters[0].header("dlq.attempts")) == b"2"


def test_waiter_fd_becomes_readable_when_a_watched_topic_has_data(pool):
    make_topic(pool, "a", num_partitions=1)
    make_topic(pool, "b", num_partitions=2)
    ca, cb = fs.Consumer(pool, "a"), fs.Consumer(pool, "b")
    ca.assign_all()
    cb.assign_all()
    waiter = fs.Waiter()
    waiter.add(ca)
    waiter.add(cb)
    assert waiter.wait(timeout=0.01) == "timeout"
    fd = waiter.fd()
    waiter.arm()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    assert sel.select(timeout=0.05) == []
    fs.Producer(pool, "b").send(b"wake")
    assert sel.select(timeout=2), "the fd must become readable after a send"
    assert [m.value_str() for m in cb.poll(timeout=0)] == ["wake"]
    assert ca.poll(timeout=0) == []
    waiter.arm()
    assert sel.select(timeout=0.05) == []
    with pytest.raises(fs.Busy, match="Waiter"):
        ca.close()
    waiter.remove(ca)
    ca.close()
    sel.close()


def test_ctrl_c_interrupts_a_blocking_poll_within_100_ms(pool):
    make_topic(pool, num_partitions=1)
    delay = child_blocked_then_interrupted(pool.name, """
        consumer = fs.Consumer(pool, "t", "g")
        consumer.assign_all()
        def block():
            consumer.poll(timeout=None)
    """)
    assert delay < 0.1


def test_ctrl_c_interrupts_a_send_blocked_on_a_full_partition(pool):
    make_topic(pool, num_partitions=1, partition_capacity=2)
    pool.topics().register_group("t", "stuck")
    delay = child_blocked_then_interrupted(pool.name, """
        producer = fs.Producer(pool, "t", block_timeout=30)
        producer.send(b"1"); producer.send(b"2")
        def block():
            producer.send(b"3")
    """)
    assert delay < 0.1


def test_ctrl_c_interrupts_a_waiter_wait(pool):
    make_topic(pool, num_partitions=1)
    delay = child_blocked_then_interrupted(pool.name, """
        consumer = fs.Consumer(pool, "t")
        consumer.assign_all()
        waiter = fs.Waiter()
        waiter.add(consumer)
        def block():
            waiter.wait()
    """)
    assert delay < 0.1


def test_ctrl_c_interrupts_a_dlq_handle_waiting_out_a_long_backoff_without_a_heartbeat(pool):
    make_topic(pool, num_partitions=1)
    fs.Producer(pool, "t").send(b"poison")
    delay = child_blocked_then_interrupted(pool.name, """
        consumer = fs.Consumer(pool, "t", "g")
        consumer.assign_all()
        message = consumer.poll(timeout=5)[0]
        router = fs.DlqRouter(pool, "t", "g", max_attempts=3, initial_backoff=600, max_backoff=600)
        def fail(m):
            raise RuntimeError("always")
        def block():
            router.handle(message, fail)
    """)
    assert delay < 0.3


def test_blocking_calls_release_the_gil(pool):
    import threading
    make_topic(pool, num_partitions=1)
    consumer = fs.Consumer(pool, "t")
    consumer.assign_all()
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    thread = threading.Thread(target=count)
    thread.start()
    consumer.poll(timeout=0.3)
    stop.set()
    thread.join()
    assert len(ticks) > 50  # the other thread ran while poll waited


def test_two_threads_on_one_producer_and_consumer_serialize_instead_of_racing(pool):
    import threading
    make_topic(pool, num_partitions=2, partition_capacity=1024)
    producer = fs.Producer(pool, "t")
    consumer = fs.Consumer(pool, "t")
    consumer.assign_all()
    got = []
    errors = []

    def send(tag):
        try:
            for i in range(300):
                producer.send(b"%s-%d" % (tag, i))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    deadline = time.monotonic() + 10

    def poll():
        try:
            while len(got) < 600 and time.monotonic() < deadline:
                got.extend(m.value_str() for m in consumer.poll(max=50, timeout=0.05))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=send, args=(t,)) for t in (b"a", b"b")]
    threads += [threading.Thread(target=poll), threading.Thread(target=poll)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sorted(got) == sorted([f"a-{i}" for i in range(300)] + [f"b-{i}" for i in range(300)])
