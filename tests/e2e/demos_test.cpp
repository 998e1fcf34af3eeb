// SPDX-License-Identifier: MIT
// Every demo script (and the recipe in run-demo.sh) runs on its own pool and cleans up.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "e2e_support.h"
#include "../support/test_support.h"

using namespace fabric_shm;
using namespace fabric_shm::e2e;

namespace {

void run_script(const std::string& script, const std::string& tag) {
    const std::string pool = test::unique_pool_name(tag);
    test::PoolCleanup cleanup(pool);
    const char* src = std::getenv("FABRIC_SHM_SOURCE_DIR");
    REQUIRE(src != nullptr);
    std::string out;
    const int rc = test::run_command("DEMO_OBJECTS=60 FABRIC_SHM_POOL=" + pool + " FABRIC_SHM_BUILD_DIR=" +
                                         q(test::build_path("")) + " timeout 120 bash " + q(std::string(src) + "/" + script) +
                                         " 2>&1",
                                     &out);
    INFO(out);
    CHECK(rc == 0);
    const auto pools = Pool::list();
    CHECK(std::find(pools.begin(), pools.end(), pool) == pools.end());  // the script removed its pool
}

}  // namespace

TEST_CASE("demos: run-demo.sh runs the recipe end to end on its own pool") { run_script("scripts/run-demo.sh", "demo-recipe"); }
TEST_CASE("demos: demo-failover.sh loses nothing when a worker is SIGKILLed") { run_script("scripts/demo-failover.sh", "demo-fo"); }
TEST_CASE("demos: demo-multistage.sh runs two stages") { run_script("scripts/demo-multistage.sh", "demo-ms"); }
TEST_CASE("demos: demo-fanout.sh gives three results per put") { run_script("scripts/demo-fanout.sh", "demo-fan"); }
TEST_CASE("demos: demo-expiry.sh ends with the pool reaped") { run_script("scripts/demo-expiry.sh", "demo-exp"); }
