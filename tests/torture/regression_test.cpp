// SPDX-License-Identifier: MIT
// Regression tests for defects the crash torture exposed (docs/reliability.md, "Defects").
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "../e2e/e2e_support.h"
#include "../support/test_support.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/worker_loop.h"

using namespace fabric_shm;
using namespace fabric_shm::e2e;

namespace {

void sleep_ms(int ms) {
    timespec ts{ms / 1000, long(ms % 1000) * 1'000'000};
    nanosleep(&ts, nullptr);
}

/// True while the child has not exited (does not reap it).
bool running(pid_t pid) {
    siginfo_t info{};
    return ::waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0;
}

}  // namespace

// Found by `torture --seed 77 --session-timeout-ms 500 --workers 4 --producers 3
// --interval-ms 60 --crash-point-percent 60` on a loaded machine: a worker descheduled past
// its session timeout was evicted by another member, and its next heartbeat (top of the
// loop) returned stale_epoch, which WorkerLoop::run treated as fatal: the worker exited 1
// instead of joining again, so the group lost a member for good.
TEST_CASE("a worker stalled past its session timeout and evicted joins again instead of exiting") {
    const std::string name = test::unique_pool_name("evict");
    test::PoolCleanup cleanup(name);
    PoolOptions po;
    po.name = name;
    auto pool = Pool::create(po);
    REQUIRE_MESSAGE(pool.ok(), pool.error().message);
    TopicManager tm(*pool);
    TopicConfig tc;
    tc.num_partitions = 2;
    REQUIRE(tm.create("ev", tc).ok());

    Proc worker(q(worker_bin()) + " --pool " + name +
                " --topic ev --group g --builtin crc32 --session-timeout 300ms --quiet");
    REQUIRE(eventually([&] { return alive_members(*pool, "ev", "g") == 1; }));

    // Stall the worker past its session timeout; another member's claim evicts it.
    worker.signal(SIGSTOP);
    sleep_ms(600);
    GroupConfig gc;
    gc.session_timeout_ns = 300'000'000;
    auto other = ConsumerGroup::open(*pool, "g", "ev", 2, gc);
    REQUIRE_MESSAGE(other.ok(), other.error().message);
    REQUIRE(other->join("evictor").ok());
    auto claim = other->claim("evictor");
    REQUIRE_MESSAGE(claim.ok(), claim.error().message);
    CHECK(claim->partitions.size() == 2);  // the stalled member lost its partitions
    REQUIRE(other->leave("evictor").ok());
    worker.signal(SIGCONT);

    // It must keep running, join again and process new notifications.
    sleep_ms(500);
    REQUIRE_MESSAGE(running(worker.pid()), "the evicted worker exited: " << worker.err());
    auto store = MemObjectStore::open(*pool);
    REQUIRE(store.ok());
    auto uri = FabricUri::make(name, "in", "after-eviction");
    const std::string data = "data after the eviction";
    auto ver = (*store)->put(*uri, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
    REQUIRE(ver.ok());
    auto producer = Producer::open(*pool, "ev");
    REQUIRE(producer.ok());
    const std::string v = std::to_string(*ver);
    const MessageHeader headers[] = {{kHeaderVersion, v}};
    const std::string u = uri->to_string();
    REQUIRE(producer
                ->send(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(u.data()), u.size()), headers)
                .ok());
    const std::string result = "fabric://" + name + "/results/after-eviction";
    CHECK_MESSAGE(eventually([&] { return get_text(*pool, result) == crc_hex(data); }, 10000),
                  get_text(*pool, result) << "; worker stderr: " << worker.err());
    CHECK(alive_members(*pool, "ev", "g") == 1);
    worker.signal(SIGTERM);
    CHECK(worker.wait(10000) == 0);
}
