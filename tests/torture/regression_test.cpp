// SPDX-License-Identifier: MIT
// Regression tests for defects the crash torture exposed (docs/reliability.md, "Defects").
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include <atomic>
#include <cstdio>
#include <vector>

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
    gc.session_timeout = std::chrono::milliseconds(300);
    auto other = ConsumerGroup::open(*pool, "ev", "g", 2, gc);
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
    const std::string result = "fabric://" + name + "/results/in/after-eviction";
    CHECK_MESSAGE(eventually([&] { return get_text(*pool, result) == crc_hex(data); }, 10000),
                  get_text(*pool, result) << "; worker stderr: " << worker.err());
    CHECK(alive_members(*pool, "ev", "g") == 1);
    worker.signal(SIGTERM);
    CHECK(worker.wait(10000) == 0);
}

// Found by `torture --seed 11 --kills 300 --stall-percent 30 --session-timeout-ms 1000
// --workers 4`: a worker stalled past its session timeout with a polled batch in hand was
// evicted; the new owner processed and committed the batch and the harness removed the
// inputs; when the zombie resumed it found the next input missing (a permanent failure) and
// dead-lettered it. The result put and the commit are fenced by the epoch, the dead letter
// was not: a message processed once also showed up in the DLQ (284 of them in that run).
TEST_CASE("an evicted worker resuming with a polled batch does not dead-letter messages it no longer owns") {
    const std::string name = test::unique_pool_name("zombie-dlq");
    test::PoolCleanup cleanup(name);
    PoolOptions po;
    po.name = name;
    auto pool = Pool::create(po);
    REQUIRE_MESSAGE(pool.ok(), pool.error().message);
    TopicManager tm(*pool);
    TopicConfig tc;
    tc.num_partitions = 1;
    REQUIRE(tm.create("zd", tc).ok());
    REQUIRE(tm.register_group("zd", "g").ok());
    auto store = MemObjectStore::open(*pool);
    REQUIRE(store.ok());
    auto producer = Producer::open(*pool, "zd");
    REQUIRE(producer.ok());
    for (const std::string key : {"a", "b"}) {
        auto uri = FabricUri::make(name, "in", key);
        auto ver = (*store)->put(*uri, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(key.data()), key.size()));
        REQUIRE(ver.ok());
        const std::string v = std::to_string(*ver), u = uri->to_string();
        const MessageHeader headers[] = {{kHeaderVersion, v}};
        REQUIRE(producer->send(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(u.data()), u.size()), headers).ok());
    }

    // The worker: polls a and b in one batch, stalls 900 ms inside a (no keep_alive).
    auto* started = static_cast<std::atomic<int>*>(
        ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    REQUIRE(started != MAP_FAILED);
    started->store(0);
    const pid_t child = test::fork_child([&] {
        auto p = Pool::open(name);
        if (!p) return 10;
        WorkerConfig cfg;
        cfg.topic = "zd";
        cfg.group = "g";
        cfg.member_id = "zombie";
        cfg.session_timeout_ns = 300'000'000;
        cfg.exit_when_idle_ns = 1'500'000'000;
        auto loop = WorkerLoop::open(*p, cfg, [&](const WorkItem& item) -> Result<std::vector<uint8_t>> {
            if (item.uri.key() == "a") {
                started->store(1);
                sleep_ms(900);
            }
            return std::vector<uint8_t>(item.data.begin(), item.data.end());
        });
        if (!loop) return 11;
        auto why = loop->run([] { return false; });
        return why ? 0 : 12;
    });
    REQUIRE(eventually([&] { return started->load() == 1; }, 10000));
    sleep_ms(400);  // the worker's heartbeat is now older than its session timeout

    // The new owner evicts it, processes both (here: commits past them) and the inputs go.
    GroupConsumerOptions gco;
    gco.group.session_timeout = std::chrono::milliseconds(300);
    auto owner = GroupConsumer::open(*pool, "zd", "g", "owner", gco);
    REQUIRE_MESSAGE(owner.ok(), owner.error().message);
    MessageBatch batch;
    size_t got = 0;
    for (int i = 0; i < 50 && got < 2; ++i) {
        auto n = owner->poll(batch, 16, std::chrono::milliseconds(20));
        REQUIRE_MESSAGE(n.ok(), n.error().message);
        for (const Message& m : batch) REQUIRE(owner->commit(m).ok());
        got += *n;
    }
    REQUIRE(got == 2);
    for (const std::string key : {"a", "b"}) {
        auto uri = FabricUri::make(name, "in", key);
        REQUIRE((*store)->remove(*uri).ok());
    }

    // The zombie resumes, finds b gone; it must not dead-letter it. Keep the owner alive.
    for (int i = 0; i < 100 && [&] {
             siginfo_t info{};
             return ::waitid(P_PID, id_t(child), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0;
         }();
         ++i) {
        (void)owner->heartbeat();
        sleep_ms(50);
    }
    CHECK(test::wait_child(child, 5000) == 0);
    const auto dead = read_dlq(*pool, "zd.dlq");
    CHECK_MESSAGE(dead.empty(), dead.size() << " dead letter(s), first: " << (dead.empty() ? "" : dead[0].value + ": " + dead[0].reason));
    (void)owner->leave();
    ::munmap(started, 4096);
}

// Found by the torture helper's e2e runs (2 of 10 "two-stage pipeline" runs at load 5) and the
// e2e-demos failure of demo-multistage.sh: workers of two stages started together both create
// the topic between them (stage 1's --next-topic is stage 2's --topic). The loser's create said
// already_exists while the winner's partitions were still unpublished, opening the topic then
// said "does not exist", and the stage-1 worker exited 1. Now ensure_topic waits for it.
TEST_CASE("workers racing to create the same next topic all open it") {
    const std::string name = test::unique_pool_name("rg-topic");
    test::PoolCleanup cleanup(name);
    auto pool = Pool::create({name, 64ull << 20});
    REQUIRE_MESSAGE(pool.ok(), pool.error().message);
    auto store = MemObjectStore::open(*pool);
    REQUIRE_MESSAGE(store.ok(), store.error().message);
    TopicManager tm(*pool);
    REQUIRE(tm.create("s1", TopicConfig{}).ok());

    constexpr int kRounds = 12, kWorkers = 4;
    for (int round = 0; round < kRounds; ++round) {
        const std::string next = "s2-" + std::to_string(round);
        auto* go = static_cast<std::atomic<int>*>(
            ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
        REQUIRE(go != MAP_FAILED);
        go->store(0);
        std::vector<pid_t> children;
        for (int w = 0; w < kWorkers; ++w) {
            children.push_back(test::fork_child([&, w] {
                auto p = Pool::open(name);
                if (!p) return 10;
                WorkerConfig cfg;
                // Half are stage 1 (forward to `next`), half are stage 2 (consume `next`).
                cfg.topic = (w % 2 == 0) ? "s1" : next;
                cfg.group = (w % 2 == 0) ? "stage1" : "stage2";
                cfg.member_id = "m" + std::to_string(w);
                cfg.result_bucket = (w % 2 == 0) ? "stage1" : "stage2";  // one result bucket per group
                if (w % 2 == 0) cfg.next_topic = next;
                while (go->load() == 0) {
                }
                auto loop = WorkerLoop::open(*p, cfg, [](const WorkItem& item) -> Result<std::vector<uint8_t>> {
                    return std::vector<uint8_t>(item.data.begin(), item.data.end());
                });
                if (!loop) {
                    std::fprintf(stderr, "worker %d: %s\n", w, loop.error().message.c_str());
                    return 11;
                }
                return 0;
            }));
        }
        go->store(1);
        for (pid_t c : children) CHECK_MESSAGE(test::wait_child(c) == 0, "round " << round);
        ::munmap(go, 4096);
        CHECK(tm.describe(next).ok());
    }
}
