// SPDX-License-Identifier: MIT
// Process registry: registration, certainly-dead detection (gone, reused, zombie, heartbeat),
// reaping of dead slots, crash while registering, lock takeover from a dead holder.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/test_support.h"
#include "fabric_shm/counters.h"
#include "fabric_shm/crash_point.h"
#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"
#include "owner_lock.h"

using namespace fabric_shm;

namespace {
layout::ProcessSlot& slot_of(const Pool& pool, OwnerToken t) {
    auto* slots = reinterpret_cast<layout::ProcessSlot*>(pool.base() + layout::kRegistryOffset);
    return slots[layout::token_slot(t)];
}
/// Forks a child that registers in the pool, writes its token into a pipe and exits
/// (when `linger` is false) or waits to be killed.
OwnerToken child_token(const std::string& name, pid_t* pid, bool linger) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    *pid = test::fork_child([&] {
        auto p = Pool::open(name);
        OwnerToken t = p ? p->self() : 0;
        if (write(fds[1], &t, sizeof t) != sizeof t) return 2;
        if (linger) pause();
        // Leave without unregistering, as a crash would.
        _exit(0);
    });
    OwnerToken t = 0;
    REQUIRE(read(fds[0], &t, sizeof t) == sizeof t);
    close(fds[0]);
    close(fds[1]);
    return t;
}
}  // namespace

TEST_CASE("registry: a live process is maybe_alive, and it leaves the registry on close") {
    test::PoolCleanup cleanup(test::unique_pool_name("reg"));
    auto pool = Pool::create({cleanup.name(), 2 << 20});
    REQUIRE(pool);
    CHECK(pool->registry().liveness(pool->self(), mono_now_ns()) == Liveness::maybe_alive);
    OwnerToken second_token = 0;
    {
        auto second = Pool::open(cleanup.name());
        REQUIRE(second);
        second_token = second->self();
        CHECK(pool->registry().list(mono_now_ns()).size() == 2);
    }
    CHECK(pool->registry().list(mono_now_ns()).size() == 1);
    std::string why;
    CHECK(pool->registry().liveness(second_token, mono_now_ns(), &why) == Liveness::certainly_dead);
    CHECK(why.find("registration ended") != std::string::npos);
}

TEST_CASE("registry: a process whose pid is gone is certainly dead and its slot is reaped") {
    test::PoolCleanup cleanup(test::unique_pool_name("gone"));
    auto pool = Pool::create({cleanup.name(), 2 << 20});
    REQUIRE(pool);
    pid_t kid;
    const OwnerToken t = child_token(cleanup.name(), &kid, false);
    REQUIRE(t != 0);
    CHECK(test::wait_child(kid) == 0);
    std::string why;
    CHECK(pool->registry().liveness(t, mono_now_ns(), &why) == Liveness::certainly_dead);
    CHECK(why.find("gone") != std::string::npos);
    CHECK(pool->registry().reap_dead(mono_now_ns()) == 1);
    CHECK(pool->registry().list(mono_now_ns()).size() == 1);
    CHECK(pool->registry().liveness(t, mono_now_ns()) == Liveness::certainly_dead);
}

TEST_CASE("registry: a zombie (exited, not yet waited for) is certainly dead") {
    test::PoolCleanup cleanup(test::unique_pool_name("zombie"));
    auto pool = Pool::create({cleanup.name(), 2 << 20});
    REQUIRE(pool);
    pid_t kid;
    const OwnerToken t = child_token(cleanup.name(), &kid, false);
    // Do not reap the child: wait until it is a zombie.
    for (int i = 0; i < 2000 && !probe_pid(uint32_t(kid)).zombie; ++i) usleep(1000);
    REQUIRE(probe_pid(uint32_t(kid)).zombie);
    std::string why;
    CHECK(pool->registry().liveness(t, mono_now_ns(), &why) == Liveness::certainly_dead);
    CHECK(why.find("zombie") != std::string::npos);
    CHECK(test::wait_child(kid) == 0);
}

TEST_CASE("registry: a reused pid (start time differs) is certainly dead; a matching one is maybe_alive") {
    test::PoolCleanup cleanup(test::unique_pool_name("reuse"));
    auto pool = Pool::create({cleanup.name(), 2 << 20});
    REQUIRE(pool);
    pid_t kid;
    const OwnerToken t = child_token(cleanup.name(), &kid, true);
    CHECK(pool->registry().liveness(t, mono_now_ns()) == Liveness::maybe_alive);
    // Forge what pid reuse looks like: the live pid's start time no longer matches.
    auto& slot = slot_of(*pool, t);
    const uint64_t real = slot.start_time.load();
    slot.start_time.store(real + 12345);
    std::string why;
    CHECK(pool->registry().liveness(t, mono_now_ns(), &why) == Liveness::certainly_dead);
    CHECK(why.find("reused") != std::string::npos);
    slot.start_time.store(real);
    CHECK(pool->registry().liveness(t, mono_now_ns()) == Liveness::maybe_alive);
    kill(kid, SIGKILL);
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    CHECK(pool->registry().liveness(t, mono_now_ns()) == Liveness::certainly_dead);
}

TEST_CASE("registry: a stale heartbeat past its declared timeout is certainly dead, without one it is not") {
    test::PoolCleanup cleanup(test::unique_pool_name("hb"));
    REQUIRE(Pool::create({cleanup.name(), 2 << 20}));
    OpenOptions with_timeout;
    with_timeout.heartbeat_timeout_ns = 2 * kNsPerSec;
    auto pool = Pool::open(cleanup.name(), with_timeout);
    REQUIRE(pool);
    const uint64_t now = mono_now_ns();
    pool->heartbeat(now);
    CHECK(pool->registry().liveness(pool->self(), now + kNsPerSec) == Liveness::maybe_alive);
    std::string why;
    CHECK(pool->registry().liveness(pool->self(), now + 3 * kNsPerSec, &why) == Liveness::certainly_dead);
    CHECK(why.find("heartbeat") != std::string::npos);
    auto pid_only = Pool::open(cleanup.name());
    REQUIRE(pid_only);
    CHECK(pool->registry().liveness(pid_only->self(), now + 3600 * kNsPerSec) == Liveness::maybe_alive);
}

TEST_CASE("registry: a process killed while registering leaves a slot the reaper frees") {
    for (const char* point : {"registry.register.claimed", "registry.register.before_publish"}) {
        CAPTURE(point);
        test::PoolCleanup cleanup(test::unique_pool_name("crashreg"));
        auto pool = Pool::create({cleanup.name(), 2 << 20});
        REQUIRE(pool);
        pid_t kid = test::fork_child([&] {
            setenv("FABRIC_SHM_CRASH_POINT", point, 1);
            detail::crash_point_rearm();
            auto p = Pool::open(cleanup.name());
            return 0;
        });
        CHECK(test::wait_child(kid) == 128 + SIGKILL);
        auto listed = pool->registry().list(mono_now_ns());
        REQUIRE(listed.size() == 2);
        CHECK(pool->registry().reap_dead(mono_now_ns()) == 1);
        CHECK(pool->registry().list(mono_now_ns()).size() == 1);
        // The next process registers fine.
        auto again = Pool::open(cleanup.name());
        CHECK(again);
    }
}

TEST_CASE("registry: a dead process's counter shard is folded into the pool totals") {
    test::PoolCleanup cleanup(test::unique_pool_name("counters"));
    auto pool = Pool::create({cleanup.name(), 2 << 20});
    REQUIRE(pool);
    pid_t kid = test::fork_child([&] {
        auto p = Pool::open(cleanup.name());
        if (!p) return 1;
        p->count(uint32_t(CounterId::store_puts), 41);
        _exit(0);  // no unregister: a crash
    });
    CHECK(test::wait_child(kid) == 0);
    pool->count(uint32_t(CounterId::store_puts), 1);
    CHECK(counter_total(*pool, CounterId::store_puts) == 42);
    CHECK(pool->registry().reap_dead(mono_now_ns()) == 1);
    CHECK(counter_total(*pool, CounterId::store_puts) == 42);
}

TEST_CASE("owner lock: a lock held by a dead process is taken over and the takeover is reported") {
    test::PoolCleanup cleanup(test::unique_pool_name("lock"));
    auto pool = Pool::create({cleanup.name(), 2 << 20});
    REQUIRE(pool);
    pid_t kid;
    const OwnerToken dead = child_token(cleanup.name(), &kid, false);
    CHECK(test::wait_child(kid) == 0);
    std::atomic<uint64_t> word{dead};
    auto got = detail::owner_lock_acquire(word, *pool, pool->self(), 5 * kNsPerSec, "test lock");
    REQUIRE(got);
    CHECK(got->stolen);
    CHECK(OwnerToken(word.load()) == pool->self());
    // The presumed-dead holder's release now fails instead of releasing our lock.
    CHECK_FALSE(detail::owner_lock_release(word, dead));
    CHECK(detail::owner_lock_release(word, pool->self()));
}

TEST_CASE("owner lock: a lock held by a live process times out with busy naming the holder") {
    test::PoolCleanup cleanup(test::unique_pool_name("lockbusy"));
    auto pool = Pool::create({cleanup.name(), 2 << 20});
    REQUIRE(pool);
    pid_t kid;
    const OwnerToken live = child_token(cleanup.name(), &kid, true);
    std::atomic<uint64_t> word{live};
    auto got = detail::owner_lock_acquire(word, *pool, pool->self(), 50 * kNsPerMs, "test lock");
    CHECK(got.code() == Errc::busy);
    CHECK(got.error().message.find("test lock") != std::string::npos);
    kill(kid, SIGKILL);
    test::wait_child(kid);
}
