// SPDX-License-Identifier: MIT
// Every demo script (and the recipe in run-demo.sh) runs on its own pool and cleans up.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "fabric_shm/clock.h"

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

/// run-demo.sh in a process group of its own (as a terminal's foreground job), its workers
/// running `sleep <marker>; tr a-z A-Z`: they are busy in --exec for as long as the test wants.
struct BusyDemo {
    std::string pool, marker, log;
    pid_t pid = -1;
    BusyDemo(const std::string& pool_name, const std::string& marker_text) : pool(pool_name), marker(marker_text) {
        const char* src = std::getenv("FABRIC_SHM_SOURCE_DIR");
        REQUIRE(src != nullptr);
        log = "/tmp/fabric-demo-" + std::to_string(getpid()) + "-" + pool + ".log";
        const std::string cmd = "FABRIC_SHM_POOL=" + pool + " DEMO_EXEC=" + q("sleep " + marker + "; tr a-z A-Z") +
                                " FABRIC_SHM_BUILD_DIR=" + q(test::build_path("")) + " exec bash " +
                                q(std::string(src) + "/scripts/run-demo.sh") + " >" + q(log) + " 2>&1";
        pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            ::setpgid(0, 0);
            ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
        ::setpgid(pid, pid);
    }
    ~BusyDemo() {
        if (pid > 0) {
            ::kill(-pid, SIGKILL);
            test::wait_child(pid, 5000);
        }
        test::run_command("pkill -KILL -f " + q("slee[p] " + marker));
        ::unlink(log.c_str());
    }
    std::string output() const {
        std::ifstream f(log);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }
    /// Until the workers run their commands (the producer has sent everything).
    bool busy() const {
        return eventually([&] { return output().find("3. waiting for every result") != std::string::npos; }, 60000) &&
               eventually([&] { return commands_running() >= 1; }, 20000);
    }
    int commands_running() const {
        std::string out;
        test::run_command("pgrep -c -f " + q("slee[p] " + marker), &out);
        return std::atoi(out.c_str());
    }
    /// Ctrl-C on a terminal: SIGINT to the whole foreground process group.
    int interrupt(uint64_t* took_ns) {
        const uint64_t t0 = mono_now_ns();
        ::kill(-pid, SIGINT);
        const int rc = test::wait_child(pid, 30000);
        *took_ns = mono_now_ns() - t0;
        pid = -1;
        return rc;
    }
};

}  // namespace

TEST_CASE("demos: Ctrl-C stops run-demo.sh within seconds while its workers are busy in --exec, and leaves nothing") {
    const std::string pool = test::unique_pool_name("demo-int");
    test::PoolCleanup cleanup(pool);
    BusyDemo demo(pool, "31." + std::to_string(getpid()));
    REQUIRE_MESSAGE(demo.busy(), demo.output());
    uint64_t took = 0;
    const int rc = demo.interrupt(&took);
    INFO(demo.output());
    CHECK(rc == 130);
    CHECK(took < 5 * kNsPerSec);  // TERM, 1 s, TERM (kills the commands), 1 s, KILL: about 2 s at worst
    CHECK(demo.output().find("interrupted: stopping the workers and cleaning up") != std::string::npos);
    CHECK(eventually([&] { return demo.commands_running() == 0; }, 2000));  // no --exec command left behind
    const auto pools = Pool::list();
    CHECK(std::find(pools.begin(), pools.end(), pool) == pools.end());  // the pool it created is gone
}

TEST_CASE("demos: a second run-demo.sh on the same pool refuses at once and leaves the first one alone") {
    const std::string pool = test::unique_pool_name("demo-two");
    test::PoolCleanup cleanup(pool);
    BusyDemo first(pool, "32." + std::to_string(getpid()));
    REQUIRE_MESSAGE(first.busy(), first.output());
    const char* src = std::getenv("FABRIC_SHM_SOURCE_DIR");
    std::string out;
    const uint64_t t0 = mono_now_ns();
    const int rc = test::run_command("FABRIC_SHM_POOL=" + pool + " FABRIC_SHM_BUILD_DIR=" + q(test::build_path("")) +
                                         " timeout 60 bash " + q(std::string(src) + "/scripts/run-demo.sh") + " 2>&1",
                                     &out);
    INFO(out);
    CHECK(rc == 1);
    CHECK(mono_now_ns() - t0 < 10 * kNsPerSec);
    CHECK(out.find("another run-demo.sh is running on pool '" + pool + "'") != std::string::npos);
    CHECK(out.find("FABRIC_SHM_POOL=") != std::string::npos);  // says how to run it on a pool of its own
    CHECK(::kill(first.pid, 0) == 0);                           // the first one runs on
    CHECK(first.commands_running() >= 1);
    const auto pools = Pool::list();
    CHECK(std::find(pools.begin(), pools.end(), pool) != pools.end());  // and keeps its pool
    uint64_t took = 0;
    CHECK(first.interrupt(&took) == 130);
}

TEST_CASE("demos: run-demo.sh runs the recipe end to end on its own pool") { run_script("scripts/run-demo.sh", "demo-recipe"); }
TEST_CASE("demos: demo-failover.sh loses nothing when a worker is SIGKILLed") { run_script("scripts/demo-failover.sh", "demo-fo"); }
TEST_CASE("demos: demo-multistage.sh runs two stages") { run_script("scripts/demo-multistage.sh", "demo-ms"); }
TEST_CASE("demos: demo-fanout.sh gives three results per put") { run_script("scripts/demo-fanout.sh", "demo-fan"); }
TEST_CASE("demos: demo-expiry.sh ends with the pool reaped") { run_script("scripts/demo-expiry.sh", "demo-exp"); }
