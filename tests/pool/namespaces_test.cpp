// SPDX-License-Identifier: MIT
// Pid namespaces: a process in another pid namespace can only be judged dead by a heartbeat
// timeout it declared, so a registration that would share the pool across namespaces with a
// process (itself or the other) that declared none is refused, naming the other process and
// the fix. The namespaces are forged here (a live registration's pidns field); the real thing,
// with `unshare --pid`, is tests/e2e/survivors_test.cpp.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include "../support/registry_slots.h"
#include "../support/test_support.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/registry.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"

using namespace fabric_shm;

namespace {

/// A registered process whose slot claims another pid namespace (and the given timeout).
struct Foreigner {
    pid_t pid = 0;
    OwnerToken token = 0;
    Foreigner(const Pool& pool, uint64_t timeout_ns) {
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        const std::string name = pool.name();
        pid = test::fork_child([&] {
            OpenOptions o;
            o.heartbeat_timeout = ns_duration(timeout_ns);
            auto p = Pool::open(name, o);
            OwnerToken t = p ? p->self() : 0;
            if (::write(fds[1], &t, sizeof t) != sizeof t) return 2;
            for (;;) ::pause();
            return 0;
        });
        REQUIRE(::read(fds[0], &token, sizeof token) == sizeof token);
        ::close(fds[0]);
        ::close(fds[1]);
        REQUIRE(token != 0);
        test::slot_of(pool, token).pidns.store(self_pidns() + 12345);  // "another namespace"
        test::slot_of(pool, token).heartbeat_ns.store(mono_now_ns() + 3600 * kNsPerSec);  // never stale in the test
    }
    ~Foreigner() {
        ::kill(pid, SIGKILL);
        test::wait_child(pid);
    }
};

struct EnvTimeout {
    explicit EnvTimeout(const char* value) { ::setenv("FABRIC_SHM_HEARTBEAT_TIMEOUT", value, 1); }
    ~EnvTimeout() { ::unsetenv("FABRIC_SHM_HEARTBEAT_TIMEOUT"); }
};

}  // namespace

TEST_CASE("namespaces: sharing a pool across pid namespaces without a heartbeat timeout is refused, naming the other "
          "process and the fix") {
    test::PoolCleanup cleanup(test::unique_pool_name("pidns"));
    OpenOptions with_timeout;
    with_timeout.heartbeat_timeout = std::chrono::seconds(5);
    with_timeout.create_if_missing = true;
    auto pool = Pool::open(cleanup.name(), with_timeout);  // creates it, declaring a timeout
    REQUIRE(pool);
    CHECK(test::slot_of(*pool, pool->self()).timeout_ns.load() == 5 * kNsPerSec);  // kept by the create path
    const size_t before = pool->registry().list(MonoClock::now()).size();

    SUBCASE("the other declared none") {
        Foreigner other(*pool, 0);
        auto refused = Pool::open(cleanup.name(), with_timeout);
        REQUIRE_FALSE(refused);
        CHECK(refused.code() == Errc::unsupported);  // not a usage error: the configuration is refused
        CHECK(refused.error().message.find("pid " + std::to_string(other.pid)) != std::string::npos);
        CHECK(refused.error().message.find("that process declared no heartbeat timeout") != std::string::npos);
        CHECK(refused.error().message.find("FABRIC_SHM_HEARTBEAT_TIMEOUT") != std::string::npos);
        CHECK(pool->registry().list(MonoClock::now()).size() == before + 1);  // the refused one left no slot
    }
    SUBCASE("we declare none, the other does") {
        Foreigner other(*pool, 5 * kNsPerSec);
        auto refused = Pool::open(cleanup.name());
        REQUIRE_FALSE(refused);
        CHECK(refused.error().message.find("this process declared no heartbeat timeout") != std::string::npos);
        // The environment supplies it, as a container's entrypoint would.
        EnvTimeout env("2s");
        auto admitted = Pool::open(cleanup.name());
        REQUIRE_MESSAGE(admitted, admitted.error().message);
        CHECK(test::slot_of(*admitted, admitted->self()).timeout_ns.load() == 2 * kNsPerSec);
    }
    SUBCASE("a bad FABRIC_SHM_HEARTBEAT_TIMEOUT is named") {
        EnvTimeout env("soon");
        auto bad = Pool::open(cleanup.name());
        REQUIRE_FALSE(bad);
        CHECK(bad.code() == Errc::invalid_argument);
        CHECK(bad.error().message.find("FABRIC_SHM_HEARTBEAT_TIMEOUT='soon'") != std::string::npos);
    }
    SUBCASE("the same namespace needs no timeout") {
        auto plain = Pool::open(cleanup.name());
        CHECK(plain);
    }
}

TEST_CASE("namespaces: a registration that could not read its pid namespace is judged by its heartbeat, never by "
          "probing its pid") {
    // A registrant that could not stat /proc/self/ns/pid (no /proc in its container) records
    // pidns 0 and, its namespace differing from the creator's, no creator-namespace bit. Its
    // pid then says nothing here: forged by a registration whose pid has gone (as an unrelated
    // or absent pid in this namespace would).
    test::TempPool temp("pidnsunknown", 2 << 20, 60s);
    Pool& pool = temp.pool;
    const std::string name = temp.name();
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t child = test::fork_child([&] {
        OpenOptions o;
        o.heartbeat_timeout = std::chrono::seconds(5);
        auto p = Pool::open(name, o);
        OwnerToken t = p ? p->self() : 0;
        if (::write(fds[1], &t, sizeof t) != sizeof t) return 2;
        for (;;) ::pause();
        return 0;
    });
    OwnerToken token = 0;
    REQUIRE(::read(fds[0], &token, sizeof token) == sizeof token);
    ::close(fds[0]);
    ::close(fds[1]);
    REQUIRE(token != 0);
    layout::ProcessSlot& slot = test::slot_of(pool, token);
    uint64_t w = slot.word.load();
    REQUIRE(slot.word.compare_exchange_strong(
        w, layout::make_slot_word(layout::slot_word_state(w), layout::slot_word_gen(w), layout::slot_word_pid(w), false)));
    slot.pidns.store(0);
    // Fresh for the next 9 s: ahead by less than its timeout (further ahead reads as damage).
    slot.heartbeat_ns.store(mono_now_ns() + 4 * kNsPerSec);
    ::kill(child, SIGKILL);
    REQUIRE(test::wait_child(child) == 128 + SIGKILL);

    std::string why;
    CHECK_MESSAGE(pool.registry().liveness(token, MonoClock::now(), &why) == Liveness::maybe_alive, why);
    CHECK_MESSAGE(pool.registry().process_liveness(token, MonoClock::now(), &why) == Liveness::maybe_alive, why);
    CHECK(pool.reap(MonoClock::now()).dead_processes == 0);
    CHECK(pool.registry().liveness(token, MonoClock::now()) == Liveness::maybe_alive);  // not retired

    // Its declared heartbeat timeout is the rule that judges it.
    slot.heartbeat_ns.store(1);  // the clock's start: older than its timeout on any machine up longer than that
    CHECK(pool.registry().liveness(token, MonoClock::now(), &why) == Liveness::certainly_dead);
    CHECK_MESSAGE(why.find("heartbeat") != std::string::npos, why);
    CHECK(pool.reap(MonoClock::now()).dead_processes == 1);
}
