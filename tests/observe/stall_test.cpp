// SPDX-License-Identifier: MIT
// A worker stalled past its session timeout (here SIGSTOP; in a hand run, a scheduler stall on
// a loaded machine) is evicted by the other member. When it runs again it must rejoin and keep
// working, not exit 1 with stale_epoch (once an unexplained non-zero worker exit).
#include <signal.h>

#include <doctest/doctest.h>

#include "../e2e/e2e_support.h"
#include "../support/test_support.h"
#include "fabric_shm/pool.h"

using namespace fabric_shm;
using namespace fabric_shm::e2e;

TEST_CASE("worker: evicted after a stall past the session timeout, it rejoins and exits 0 at SIGTERM") {
    const std::string name = test::unique_pool_name("obs-stall");
    test::PoolCleanup cleanup(name);
    auto pool = Pool::create({name, 16ull << 20});
    REQUIRE(pool);
    auto worker = [&](const std::string& id) {
        return q(worker_bin()) + " --pool " + name + " --json --topic ev --group g --id " + id +
               " --builtin crc32 --session-timeout 500ms";
    };
    Proc a(worker("a"));
    REQUIRE(eventually([&] { return alive_members(*pool, "ev", "g") == 1; }));
    Proc b(worker("b"));
    REQUIRE(eventually([&] { return alive_members(*pool, "ev", "g") == 2; }));

    a.signal(SIGSTOP);
    // b's claims evict a once its heartbeat is older than 500 ms.
    REQUIRE(eventually([&] { return alive_members(*pool, "ev", "g") == 1; }, 10000));
    a.signal(SIGCONT);
    REQUIRE(eventually([&] { return alive_members(*pool, "ev", "g") == 2; }, 10000));  // a joined again

    std::string out;
    REQUIRE(sh(q(producer_bin()) + " --pool " + name + " --topic ev --synthetic 12 --size 64 --quiet 2>&1", &out) == 0);
    REQUIRE(eventually([&] { return count_keys(*pool, "results") == 12; }));
    for (int i = 0; i < 12; ++i) {
        char key[32];
        std::snprintf(key, sizeof key, "synthetic-%06d", i);
        CHECK(get_text(*pool, "fabric://" + name + "/results/uploads/" + key) == crc_hex(synthetic_content(uint64_t(i), 64)));
    }
    a.signal(SIGTERM);
    b.signal(SIGTERM);
    CHECK_MESSAGE(a.wait() == 0, a.err());
    CHECK_MESSAGE(b.wait() == 0, b.err());
    CHECK(json_number(a.out(), "rebalances") >= 1);
}
