// SPDX-License-Identifier: MIT
// End-to-end, with the real executables: a group removed (or a topic re-created) after its
// workers wrote results, then re-uploaded inputs, must all be processed by a new worker (fence
// tokens of a new registration start above the old results); and `pool rm --force` stops a
// live producer and worker with a typed error instead of letting them acknowledge into an
// unlinked segment.
#include <doctest/doctest.h>
#include <signal.h>

#include <string>

#include "e2e_support.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "../support/test_support.h"

using namespace fabric_shm;
using namespace fabric_shm::e2e;

namespace {

constexpr int kInputs = 8;

struct Fixture : PoolFixture {
    using PoolFixture::PoolFixture;
    void produce() const {
        std::string out;
        const int rc = sh(q(producer_bin()) + " --pool " + name + " --topic ev --partitions 1 --synthetic " +
                              std::to_string(kInputs) + " --size 10 --quiet 2>&1",
                          &out);
        REQUIRE_MESSAGE(rc == 0, out);
    }
    /// One worker until it handled `count`, or until idle; returns its JSON summary.
    std::string work(const std::string& args) const {
        Proc w(q(worker_bin()) + " --pool " + name + " --topic ev --group g --builtin upper --json " + args);
        const int rc = w.wait(30000);
        CHECK_MESSAGE(rc == 0, w.err());
        return w.out();
    }
    std::string cli(const std::string& args) const {
        std::string out;
        const int rc = sh(q(cli_bin()) + " " + args + " --pool " + name + " 2>&1", &out);
        CHECK_MESSAGE(rc == 0, out);
        return out;
    }
    /// The first registration: three workers one after another (every join and acquisition
    /// draws an epoch, so the results carry tokens that a restarting epoch count would not
    /// reach again).
    void first_registration() const {
        produce();
        work("--count 3");
        work("--count 3");
        work("--count 2");
        for (int i = 0; i < kInputs; ++i) REQUIRE(result_is_current(i));
    }
    /// The re-uploaded inputs (new versions) must all be processed by one new worker.
    void second_registration_processes_everything() const {
        produce();
        const std::string out = work("--exit-when-idle 1500ms");
        CHECK_MESSAGE(json_number(out, "processed") == kInputs, out);
        CHECK(json_number(out, "dead_lettered") == 0);
        for (int i = 0; i < kInputs; ++i) CHECK_MESSAGE(result_is_current(i), key(i));
        CHECK(read_dlq(pool, "ev.dlq").empty());
    }
    /// The result of input i records the input's current version (store versions are
    /// store-wide, so a re-upload's are all higher than the first upload's).
    bool result_is_current(int i) const {
        Pool& p = const_cast<Pool&>(pool);
        const uint64_t v = object_version(p, uri("uploads", key(i)));
        return v != 0 && result_metadata(p, uri("results", "uploads/" + key(i)), "input-version") == std::to_string(v);
    }
    static std::string key(int i) {
        char k[32];
        std::snprintf(k, sizeof k, "synthetic-%06d", i);
        return k;
    }
};

}  // namespace

// The regression this guards: after `group rm`, the re-uploaded inputs' results were fenced out by
// the old registration's results (epochs restarted at 0), and the new worker processed nothing,
// skipped nothing, dead-lettered nothing and exited idle with lag 8.
TEST_CASE("e2e: after group rm, a new worker processes every re-uploaded input") {
    Fixture f("e2e-grm");
    f.first_registration();
    f.cli("group rm g --topic ev");
    f.second_registration_processes_everything();
}

TEST_CASE("e2e: after the topic is removed and re-created, a new worker processes every re-uploaded input") {
    Fixture f("e2e-trm");
    f.first_registration();
    f.cli("topic rm ev");
    f.second_registration_processes_everything();  // the producer re-creates the topic
}

TEST_CASE("e2e: pool rm --force stops a live producer and worker with a typed error, promptly") {
    Fixture f("e2e-prm");
    TopicConfig tc;
    tc.num_partitions = 2;
    tc.partition_capacity = 16;  // the producer soon waits for the (slow) worker: back-pressure
    REQUIRE(TopicManager(f.pool).create("ev", tc).ok());
    Proc worker(q(worker_bin()) + " --pool " + f.name + " --topic ev --group g --exec 'sleep 0.02; cat'");
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 1; }));
    Proc producer(q(producer_bin()) + " --pool " + f.name + " --topic ev --synthetic 1000000 --size 64 --wait 60s");
    REQUIRE(eventually([&] { return count_keys(f.pool, "results") >= 5; }));

    std::string out;
    REQUIRE_MESSAGE(sh(q(cli_bin()) + " pool rm --pool " + f.name + " --force 2>&1", &out) == 0, out);
    const uint64_t removed = mono_now_ns();
    const int wrc = worker.wait(10000), prc = producer.wait(10000);
    const double secs = double(mono_now_ns() - removed) / 1e9;
    MESSAGE("worker and producer stopped " << secs << " s after pool rm --force");
    CHECK_MESSAGE(wrc == 1, "worker exit " << wrc << ": " << worker.err());
    CHECK_MESSAGE(prc == 1, "producer exit " << prc << ": " << producer.err());
    // One renewal period of the default pool TTL (30 s x 0.75) is the bound promised; both
    // notice at their next region check.
    CHECK(secs < 5.0);
    CHECK_MESSAGE(worker.err().find("stale_generation") != std::string::npos, worker.err());
    CHECK_MESSAGE(worker.err().find("was removed") != std::string::npos, worker.err());
    CHECK_MESSAGE(producer.err().find("stale_generation") != std::string::npos, producer.err());
    CHECK_MESSAGE(producer.err().find("was removed") != std::string::npos, producer.err());
}
