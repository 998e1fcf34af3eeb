# SPDX-License-Identifier: MIT
# Pools, errors and durations from Python: one exception class per library code, a closed
# pool raises everywhere (never crashes), durations as timedelta or seconds.
import datetime

import pytest

import fabric_shm as fs

ERROR_CODES = ["invalid_argument", "invalid_name", "invalid_uri", "not_found", "already_exists",
               "version_mismatch", "corrupt", "permission_denied", "too_small", "no_space",
               "capacity_exceeded", "lease_expired", "stale_generation", "busy", "timeout", "io_error",
               "conflict", "stale_epoch", "message_too_large", "object_too_large", "back_pressure",
               "unsupported", "skipped", "not_ready", "interrupted", "closed"]


def class_name(code):
    return "".join(part.capitalize() for part in code.split("_"))


def test_one_exception_class_per_error_code_under_error():
    for code in ERROR_CODES:
        cls = getattr(fs, class_name(code))
        assert issubclass(cls, fs.Error) and cls.code == code
        assert cls.__module__ == "fabric_shm"
    assert issubclass(fs.InvalidArgument, ValueError)
    assert issubclass(fs.Timeout, TimeoutError)
    assert issubclass(fs.PermissionDenied, PermissionError)
    e = fs.NotFound("gone")
    assert e.message == "gone" and str(e) == "gone" and e.code == "not_found"


def test_errors_carry_the_library_code_and_message(pool_name):
    with pytest.raises(fs.NotFound) as info:
        fs.Pool.open(pool_name)
    assert info.value.code == "not_found" and pool_name in info.value.message
    with pytest.raises(fs.InvalidName, match="pool"):
        fs.Pool.create("bad/name")
    with fs.Pool.create(pool_name, size="4M"):
        with pytest.raises(fs.AlreadyExists):
            fs.Pool.create(pool_name, size="4M")


def test_pool_is_a_context_manager_and_open_attaches(pool_name):
    with fs.Pool.open(pool_name, create_if_missing=True, size=8 << 20) as pool:
        assert pool.created and pool.name == pool_name and pool.size == 8 << 20
        with fs.Pool.open(pool_name) as again:
            assert not again.created and again.incarnation == pool.incarnation
        assert pool_name in fs.Pool.list()
    assert pool.closed and pool.lifecycle == "closed"


def test_using_a_closed_pool_raises_closed_everywhere(pool):
    store = pool.store()
    topics = pool.topics()
    topics.create("t", fs.TopicConfig(num_partitions=2))
    producer = fs.Producer(pool, "t")
    consumer = fs.Consumer(pool, "t", "g")
    store.put(f"fabric://{pool.name}/b/k", b"kept")
    obj = store.get(f"fabric://{pool.name}/b/k")
    view = obj.data
    pool.close()
    calls = [
        lambda: store.put(f"fabric://{pool.name}/b/k", b"x"),
        lambda: store.get(f"fabric://{pool.name}/b/k"),
        lambda: store.stats(),
        lambda: store.list("b"),
        lambda: topics.list(),
        lambda: topics.create("u"),
        lambda: producer.send(b"x"),
        lambda: consumer.poll(timeout=0),
        lambda: consumer.commit(),
        lambda: pool.size,
        lambda: pool.leases(),
        lambda: pool.reap(),
        lambda: fs.MemObjectStore(pool),
        lambda: fs.Producer(pool, "t"),
        lambda: fs.Worker(pool, topic="t", group="w"),
    ]
    for call in calls:
        with pytest.raises(fs.Closed):
            call()
    assert bytes(view) == b"kept"  # a pinned view stays readable after close


def test_durations_accept_timedelta_and_seconds(pool_name):
    with fs.Pool.create(pool_name, size="4M", ttl=datetime.timedelta(minutes=2)) as a:
        (lease,) = [l for l in a.leases() if l.is_pool]
        assert lease.ttl_ns == 120 * 10**9
        assert 0 < lease.remaining <= 120
        assert a.renew_lease(lease.lease_id, ttl=2.5) > 0
        assert a.lease(lease.lease_id).ttl_ns == 2_500_000_000
    for bad in (-1, float("nan"), datetime.timedelta(seconds=-1), "5s", True):
        with pytest.raises((fs.InvalidArgument, TypeError)):
            fs.Pool.open(pool_name, create_if_missing=True, ttl=bad)


def test_renewal_manager_registers_the_pool_leases_and_ticks(pool):
    store = pool.store()
    pool.topics().create("t")
    renewals = fs.RenewalManager(pool)
    n = renewals.register_pool_leases()
    assert n == len(renewals) and n >= 1 + len(store.lease_ids()) + 1
    summary = renewals.tick()
    assert summary["failed"] == 0 and summary["next_due"] is not None
    assert 0 < renewals.remaining(pool.pool_lease_id) <= 120


def test_fabric_uri_parses_and_compares():
    u = fs.FabricUri("fabric://p/b/k/x.txt")
    assert (u.pool, u.bucket, u.key) == ("p", "b", "k/x.txt")
    assert u == "fabric://p/b/k/x.txt" and u == fs.FabricUri.make("p", "b", "k/x.txt")
    assert str(u) == "fabric://p/b/k/x.txt" and u.object_key() == "b/k/x.txt"
    assert len({u, fs.FabricUri.parse(str(u))}) == 1
    with pytest.raises(fs.InvalidUri, match="\\.\\."):
        fs.FabricUri("fabric://p/b/../k")
