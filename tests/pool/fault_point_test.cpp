// SPDX-License-Identifier: MIT
// Named fault points armed to pause: the mechanism the stall tests and the stall torture use.
#include <doctest/doctest.h>
#include <signal.h>
#include <stdlib.h>

#include <atomic>
#include <cstring>

#include "crash_point.h"
#include "fabric_shm/pool.h"
#include "../support/test_support.h"

using namespace fabric_shm;

TEST_CASE("fault points: a process armed with a pause point stops there and finishes after SIGCONT") {
    test::PoolCleanup cleanup(test::unique_pool_name("pausept"));
    PoolOptions po;
    po.name = cleanup.name();
    auto pool = Pool::create(po);
    REQUIRE(pool);
    const pid_t kid = test::fork_child([&] {
        ::setenv("FABRIC_SHM_PAUSE_POINT", "registry.register.claimed", 1);
        detail::crash_point_rearm();
        auto p = Pool::open(cleanup.name());
        return p ? 0 : 1;
    });
    REQUIRE(test::wait_stopped(kid));
    // Stopped between claiming its registry slot and publishing it: the slot shows CLAIMING,
    // and the paused claimant is not judged dead (its pid lives).
    bool saw_claiming = false;
    for (const ProcessInfo& p : pool->registry().list(MonoClock::now()))
        if (p.pid == uint32_t(kid)) {
            saw_claiming = p.claiming;
            CHECK(p.liveness == Liveness::maybe_alive);
        }
    CHECK(saw_claiming);
    test::resume(kid);
    CHECK(test::wait_child(kid) == 0);
}

namespace {
std::atomic<int> g_claimed_hits{0};
void count_claimed(const char* name) {
    if (std::strcmp(name, "registry.register.claimed") == 0) g_claimed_hits.fetch_add(1);
}
}  // namespace

TEST_CASE("fault points: an in-process pause hook runs at every point the thread reaches") {
    test::PoolCleanup cleanup(test::unique_pool_name("pausehook"));
    PoolOptions po;
    po.name = cleanup.name();
    g_claimed_hits = 0;
    detail::set_pause_hook(&count_claimed);
    {
        auto pool = Pool::create(po);
        REQUIRE(pool);
    }
    detail::set_pause_hook(nullptr);
    CHECK(g_claimed_hits.load() == 1);
    CHECK_FALSE(detail::g_fault_armed.load());
}
