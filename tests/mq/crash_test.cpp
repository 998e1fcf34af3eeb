// SPDX-License-Identifier: MIT
// Multi-process and crash behaviour: every message accounted for across producer and
// consumer processes; a producer killed at the claim crash point or by a real SIGKILL never
// stalls a partition; a slow producer that loses the skip race gets Errc::skipped; the reaper
// and --check hooks.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/counters.h"
#include "crash_point.h"
#include "fabric_shm/topic.h"
#include "mq/topic_internal.h"
#include "mq/topic_layout.h"
#include "mq_test_util.h"
#include "pool_impl.h"
#include "region_kinds.h"

using namespace fabric_shm;
using namespace mqtest;

namespace {

/// Shared anonymous memory for children to report what they saw (set up before fork).
struct Ledger {
    static constexpr uint32_t kProducers = 2, kPerProducer = 4000;
    std::atomic<uint64_t> received;
    std::atomic<uint64_t> duplicates;
    std::atomic<uint64_t> out_of_order;
    std::atomic<uint8_t> seen[kProducers * kPerProducer];
};

Ledger* make_ledger() {
    void* p = mmap(nullptr, sizeof(Ledger), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    return new (p) Ledger{};
}

}  // namespace

TEST_CASE("multi-process: two producer and two consumer processes, every message delivered once, in order") {
    TestPool tp("mp", 8 << 20);
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(4, 32, OnFull::block, 128)).ok());
    REQUIRE(mgr.register_group("t", "g").ok());
    Ledger* led = make_ledger();
    const std::string name = tp.cleanup.name();
    std::vector<pid_t> kids;
    for (uint32_t c = 0; c < 2; ++c)
        kids.push_back(test::fork_child([&, c]() -> int {
            Pool pool = open_child_pool(name);
            auto cons = Consumer::open(pool, "t", "g");
            if (!cons) return 91;
            const uint32_t mine[] = {2 * c, 2 * c + 1};
            if (!cons->assign(mine).ok()) return 92;
            MessageBatch b;
            int64_t last[Ledger::kProducers][4];
            for (auto& row : last)
                for (auto& x : row) x = -1;
            const uint64_t total = uint64_t(Ledger::kProducers) * Ledger::kPerProducer;
            const uint64_t deadline = mono_now_ns() + 15 * kNsPerSec;
            while (led->received.load() < total && mono_now_ns() < deadline) {
                auto n = cons->poll(b, 64, std::chrono::milliseconds(20));
                if (!n) {
                    std::fprintf(stderr, "consumer %u: %s\n", c, n.error().message.c_str());
                    return 93;
                }
                for (const Message& m : b) {
                    const uint32_t prod = uint32_t(m.key[0] - '0');
                    const int64_t seq = std::atoll(std::string(m.value_str()).c_str());
                    if (prod >= Ledger::kProducers || seq < 0 || seq >= int64_t(Ledger::kPerProducer)) return 94;
                    if (seq <= last[prod][m.partition]) led->out_of_order.fetch_add(1);
                    last[prod][m.partition] = seq;
                    if (led->seen[prod * Ledger::kPerProducer + seq].exchange(1)) led->duplicates.fetch_add(1);
                    led->received.fetch_add(1);
                }
                if (*n && !cons->commit().ok()) return 95;
            }
            return led->received.load() == total ? 0 : 96;
        }));
    for (uint32_t p = 0; p < Ledger::kProducers; ++p)
        kids.push_back(test::fork_child([&, p]() -> int {
            Pool pool = open_child_pool(name);
            auto prod = Producer::open(pool, "t");
            if (!prod) return 81;
            const std::string key(1, char('0' + p));
            for (uint32_t i = 0; i < Ledger::kPerProducer; ++i) {
                // Keyed by sequence parity so both producers hit every partition.
                const std::string k = key + (i % 4 == 0 ? "a" : i % 4 == 1 ? "b" : i % 4 == 2 ? "c" : "d");
                auto r = prod->send_keyed(k, std::to_string(i));
                if (!r) {
                    std::fprintf(stderr, "producer %u: %s\n", p, r.error().message.c_str());
                    return 82;
                }
            }
            return 0;
        }));
    for (pid_t k : kids) CHECK(test::wait_child(k, 30000) == 0);
    CHECK(led->received.load() == uint64_t(Ledger::kProducers) * Ledger::kPerProducer);
    CHECK(led->duplicates.load() == 0);
    CHECK(led->out_of_order.load() == 0);
    uint64_t missing = 0;
    for (auto& s : led->seen) missing += s.load() == 0;
    CHECK(missing == 0);
    munmap(led, sizeof(Ledger));
}

TEST_CASE("crash: a producer killed at the claim crash point does not stall the partition") {
    TestPool tp("crashclaim");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 8)).ok());
    auto cons = Consumer::open(tp.pool, "t", "g");
    REQUIRE(cons->assign_all().ok());
    const std::string name = tp.cleanup.name();
    pid_t kid = test::fork_child([&]() -> int {
        Pool pool = open_child_pool(name);
        auto prod = Producer::open(pool, "t");
        if (!prod) return 81;
        setenv("FABRIC_SHM_CRASH_POINT", "mq.send.after_claim", 1);
        detail::crash_point_rearm();
        (void)prod->send("never published");
        return 0;  // not reached
    });
    REQUIRE(test::wait_child(kid) == 128 + SIGKILL);
    auto d = mgr.describe("t");
    CHECK(d->partitions[0].claims_in_progress == 1);
    CHECK(d->partitions[0].next == 1);
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 3; ++i) REQUIRE(prod->send("after" + std::to_string(i)).ok());
    MessageBatch b;
    std::vector<std::string> got;
    const uint64_t deadline = mono_now_ns() + 5 * kNsPerSec;
    while (got.size() < 3 && mono_now_ns() < deadline) {
        auto n = cons->poll(b, 10, std::chrono::milliseconds(100));
        REQUIRE(n.ok());
        for (const Message& m : b) got.emplace_back(m.value_str());
    }
    CHECK(got == std::vector<std::string>{"after0", "after1", "after2"});
    d = mgr.describe("t");
    CHECK(d->partitions[0].skipped_claims == 1);
    CHECK(d->partitions[0].claims_in_progress == 0);
    CHECK(counter_total(tp.pool, CounterId::mq_claims_skipped) >= 1);
}

namespace {
/// A child that opens pool `name`, claims a slot of topic "t" and is SIGKILLed before it
/// publishes: a dead producer's claim (its registration not ended yet).
void leave_a_dead_claim(const std::string& name) {
    pid_t kid = test::fork_child([&]() -> int {
        Pool pool = open_child_pool(name);
        auto prod = Producer::open(pool, "t");
        setenv("FABRIC_SHM_CRASH_POINT", "mq.send.before_publish", 1);
        detail::crash_point_rearm();
        (void)prod->send("never published");
        return 0;
    });
    REQUIRE(test::wait_child(kid) == 128 + SIGKILL);
}

/// A pool with a topic "t" of one partition in which a producer died mid-send.
struct DeadClaim {
    TestPool tp;
    TopicManager mgr;
    std::string name;
    explicit DeadClaim(const char* tag) : tp(tag), mgr(tp.pool), name(tp.cleanup.name()) {
        REQUIRE(mgr.create("t", config(1, 8)).ok());
        leave_a_dead_claim(name);
    }
    PartitionDescription partition() { return mgr.describe("t")->partitions[0]; }
    /// The dead producer's claim became a skip record.
    void check_released() {
        const PartitionDescription p = partition();
        CHECK(p.skipped_claims == 1);
        CHECK(p.claims_in_progress == 0);
    }
    /// Forks a process that opens the pool with `point` armed through `variable`
    /// (FABRIC_SHM_CRASH_POINT or FABRIC_SHM_PAUSE_POINT).
    pid_t open_in_child_with(const char* variable, const char* point) {
        return test::fork_child([&]() -> int {
            setenv(variable, point, 1);
            detail::crash_point_rearm();
            auto p = Pool::open(name);
            return p ? 0 : 91;
        });
    }
};
}  // namespace

TEST_CASE("crash: the reaper turns a dead producer's claim into a skip record") {
    DeadClaim f("reapclaim");
    CHECK(f.tp.pool.reap(MonoClock::now()).kind_items >= 1);
    f.check_released();
}

TEST_CASE("crash: opening the pool after a producer died mid-send turns its claim into a skip record") {
    DeadClaim f("openclaim");
    REQUIRE(f.partition().claims_in_progress == 1);
    // Positions only: the same shape and positions, no walk of the slots (no claim counted).
    auto shallow = f.mgr.describe("t", TopicDetail::positions);
    REQUIRE(shallow);
    CHECK(shallow->partitions[0].claims_in_progress == 0);
    CHECK(shallow->partitions[0].next == f.partition().next);
    CHECK(shallow->lease_ids == f.mgr.describe("t")->lease_ids);
    // Any process's open reaps: it ends the dead registration, and since one ended, it walks
    // the partitions too.
    REQUIRE(Pool::open(f.name));
    f.check_released();
    const layout::PoolHeader& h = detail::pool_header(f.tp.pool);
    CHECK(h.registrations_ended.load() >= 1);
    CHECK(h.scanned_through.load() == h.registrations_ended.load());
}

TEST_CASE("crash: an open walks no region while no registration ended since a pass walked them all") {
    DeadClaim f("openskip");
    // The dead producer's registration ended and counted, as a reaper does first; then the
    // header forged to say a pass walked every region since (a claim left behind that a walk
    // would have released: what an open that walks would change).
    auto& h = detail::pool_header(f.tp.pool);
    for (const ProcessInfo& p : f.tp.pool.registry().list(MonoClock::now()))
        if (p.liveness == Liveness::certainly_dead) CHECK(f.tp.pool.registry().reap_registration(p.token, MonoClock::now()));
    REQUIRE(h.registrations_ended.load() >= 1);
    h.scanned_through.store(h.registrations_ended.load());
    REQUIRE(Pool::open(f.name));
    CHECK(f.partition().claims_in_progress == 1);  // not walked: nothing ended since
    // A full reap (Pool::reap, fabric-shm-reaper) always walks.
    CHECK(f.tp.pool.reap(MonoClock::now()).kind_items >= 1);
    f.check_released();
}

TEST_CASE("crash: an opener killed while ending a dead registration leaves it for the next open, which walks") {
    DeadClaim f("openkilled");
    // A second process opens the pool and is killed inside its reap, just after taking the dead
    // producer's slot (RETIRING under it), before counting it or walking anything.
    REQUIRE(test::wait_child(f.open_in_child_with("FABRIC_SHM_CRASH_POINT", "registry.reap.retiring")) ==
            128 + SIGKILL);
    CHECK(f.partition().claims_in_progress == 1);
    CHECK(detail::pool_header(f.tp.pool).registrations_ended.load() == 0);  // the end went uncounted
    REQUIRE(Pool::open(f.name));  // sees the RETIRING slot, finishes it and the opener's, walks
    f.check_released();
}

TEST_CASE("crash: an open walks while a reaper that ended a dead registration is stopped before counting it") {
    DeadClaim f("openstopped");
    // A second process opens the pool and stops inside its reap, having taken the dead
    // producer's slot (RETIRING under it: a live retirer, so nobody finishes it meanwhile)
    // before counting it.
    const pid_t opener = f.open_in_child_with("FABRIC_SHM_PAUSE_POINT", "registry.reap.retiring");
    REQUIRE(test::wait_stopped(opener));
    const auto& h = detail::pool_header(f.tp.pool);
    CHECK(h.registrations_ended.load() == h.scanned_through.load());  // nothing counted to walk for
    REQUIRE(Pool::open(f.name));  // walks: a slot is RETIRING
    f.check_released();
    test::resume(opener);
    CHECK(test::wait_child(opener) == 0);
}

TEST_CASE("crash: a producer SIGKILLed while sending; consumers keep progressing and later messages arrive") {
    TestPool tp("sigkill");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16, OnFull::block, 128)).ok());
    auto cons = Consumer::open(tp.pool, "t", "g");
    REQUIRE(cons->assign_all().ok());
    const std::string name = tp.cleanup.name();
    pid_t kid = test::fork_child([&]() -> int {
        Pool pool = open_child_pool(name);
        auto prod = Producer::open(pool, "t");
        if (!prod) return 81;
        for (uint64_t i = 0;; ++i) (void)prod->send("k" + std::to_string(i));
    });
    MessageBatch b;
    uint64_t before = 0;
    const uint64_t deadline = mono_now_ns() + 10 * kNsPerSec;
    while (before < 2000 && mono_now_ns() < deadline) {
        auto n = cons->poll(b, 32, std::chrono::milliseconds(50));
        REQUIRE(n.ok());
        before += *n;
        REQUIRE(cons->commit().ok());
    }
    REQUIRE(before >= 2000);
    kill(kid, SIGKILL);
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    auto prod = Producer::open(tp.pool, "t");
    // Drain the backlog the killed producer left (the partitions are full of it).
    for (;;) {
        auto n = cons->poll(b, 64, std::chrono::milliseconds(20));
        REQUIRE(n.ok());
        REQUIRE(cons->commit().ok());
        if (*n == 0) break;
    }
    uint64_t after = 0;
    for (int round = 0; round < 4; ++round) {
        for (int i = 0; i < 10; ++i) {
            auto r = prod->send_to(uint32_t(i % 2), {bytes("after"), {}, {}});
            REQUIRE_MESSAGE(r.ok(), r.error().message);
        }
        while (after < 10u * (round + 1) && mono_now_ns() < deadline) {
            auto n = cons->poll(b, 32, std::chrono::milliseconds(50));
            REQUIRE(n.ok());
            for (const Message& m : b) after += m.value_str() == "after";
            REQUIRE(cons->commit().ok());
        }
    }
    CHECK(after == 40);
}

namespace {
std::atomic<bool> g_release_slow{false};
std::atomic<bool> g_slow_claimed{false};
std::thread::id g_slow_thread;
void slow_hook() {
    if (std::this_thread::get_id() != g_slow_thread) return;
    g_slow_claimed = true;
    while (!g_release_slow.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}
}  // namespace

TEST_CASE("skip race: a slow producer whose claim timed out gets Errc::skipped, never a skipped offset") {
    TestPool tp("slow");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4, OnFull::overwrite)).ok());
    ConsumerOptions o;
    o.claim_timeout = std::chrono::milliseconds(20);
    auto cons = Consumer::open(tp.pool, "t", "g", o);
    REQUIRE(cons->assign_all().ok());
    g_release_slow = false;
    g_slow_claimed = false;
    detail::g_mq_after_claim_hook = slow_hook;
    Result<SendResult> slow_result = make_error(Errc::ok, "");
    std::thread slow([&] {
        g_slow_thread = std::this_thread::get_id();
        auto prod = Producer::open(tp.pool, "t");
        slow_result = prod->send("slow");
    });
    while (!g_slow_claimed.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    auto prod = Producer::open(tp.pool, "t");
    // Offsets 1..6: offset 4 maps to the quarantined slot 0 and becomes a skip record too.
    std::vector<uint64_t> offsets;
    for (int i = 0; i < 5; ++i) {
        auto r = prod->send("fast" + std::to_string(i));
        REQUIRE(r.ok());
        offsets.push_back(r->offset);
    }
    MessageBatch b;
    std::vector<std::string> got;
    const uint64_t deadline = mono_now_ns() + 5 * kNsPerSec;
    while (got.size() < 3 && mono_now_ns() < deadline) {
        auto n = cons->poll(b, 10, std::chrono::milliseconds(50));
        REQUIRE(n.ok());
        for (const Message& m : b) got.emplace_back(m.value_str());
    }
    g_release_slow = true;
    slow.join();
    detail::g_mq_after_claim_hook = nullptr;
    CHECK(slow_result.code() == Errc::skipped);
    CHECK(slow_result.error().message.find("NOT delivered") != std::string::npos);
    for (const std::string& s : got) CHECK(s != "slow");
    auto d = mgr.describe("t");
    CHECK(d->partitions[0].quarantined == 1);
    CHECK(d->partitions[0].skipped_claims >= 1);
    // After the release, the slot is reusable: later sends and reads work normally.
    auto r = prod->send("later");
    REQUIRE(r.ok());
    const uint64_t end = mono_now_ns() + 2 * kNsPerSec;
    bool later = false;
    while (!later && mono_now_ns() < end) {
        auto n = cons->poll(b, 10, std::chrono::milliseconds(50));
        REQUIRE(n.ok());
        for (const Message& m : b) later |= m.value_str() == "later";
    }
    CHECK(later);
}

TEST_CASE("check hook: flags fill above capacity and slot tags impossible for their offset") {
    TestPool tp("check");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4)).ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod->send("a").ok());
    const RegionKindOps* ops = region_kind_ops(uint32_t(RegionKind::partition));
    REQUIRE(ops);
    RegionInfo info;
    for (const RegionInfo& r : tp.pool.regions())
        if (r.kind == uint32_t(RegionKind::partition)) info = r;
    std::vector<std::string> violations, in_progress;
    ops->check(tp.pool, info, violations, in_progress);
    CHECK(violations.empty());
    auto* h = partition_header(tp.pool, "t", 0);
    h->tail.store(9, std::memory_order_relaxed);  // fill 9 > capacity 4
    ops->check(tp.pool, info, violations, in_progress);
    REQUIRE(!violations.empty());
    bool fill = false, tag = false;
    for (const auto& v : violations) {
        fill |= v.find("fill 9") != std::string::npos;
        tag |= v.find("impossible for offset") != std::string::npos;
    }
    CHECK(fill);
    CHECK(tag);
    h->tail.store(1, std::memory_order_relaxed);
}

namespace {
/// A one-partition overwrite topic "t" and a consumer of group "g" that turns a claim into a
/// quarantine once it has been stuck `claim_timeout`: the stage of the stopped-sender tests.
struct StuckClaims {
    StuckClaims(const char* tag, uint32_t capacity, Duration claim_timeout) : tp(tag), mgr(tp.pool) {
        REQUIRE(mgr.create("t", config(1, capacity, OnFull::overwrite)).ok());
        ConsumerOptions o;
        o.claim_timeout = claim_timeout;
        auto c = Consumer::open(tp.pool, "t", "g", o);
        REQUIRE(c.ok());
        REQUIRE(c->assign_all().ok());
        cons.emplace(std::move(*c));
    }
    uint64_t quarantined() { return mgr.describe("t")->partitions[0].quarantined; }
    PartitionDescription partition() { return mgr.describe("t")->partitions[0]; }
    /// Polls until `n` claims are quarantined (10 s at most); the values read meanwhile.
    std::vector<std::string> poll_until_quarantined(uint64_t n) {
        std::vector<std::string> got;
        const uint64_t deadline = mono_now_ns() + 10 * kNsPerSec;
        while (quarantined() < n && mono_now_ns() < deadline) {
            REQUIRE(cons->poll(batch, 8, std::chrono::milliseconds(5)).ok());
            for (const Message& m : batch) got.emplace_back(m.value_str());
        }
        REQUIRE(quarantined() >= n);
        return got;
    }
    /// Polls until `n` more values arrived (5 s at most), appending them to `got`.
    void poll_values(std::vector<std::string>& got, size_t n) {
        const size_t want = got.size() + n;
        const uint64_t deadline = mono_now_ns() + 5 * kNsPerSec;
        while (got.size() < want && mono_now_ns() < deadline) {
            REQUIRE(cons->poll(batch, 8, std::chrono::milliseconds(5)).ok());
            for (const Message& m : batch) got.emplace_back(m.value_str());
        }
    }
    TestPool tp;
    TopicManager mgr;
    std::optional<Consumer> cons;
    MessageBatch batch;
};
}  // namespace

TEST_CASE("a batch whose claim was turned into a skip record while it was stopped delivers none of the messages after it") {
    StuckClaims f("slow-run", 8, std::chrono::milliseconds(20));
    // The batch claims offsets 0..2 as one run, publishes 0 and stops there.
    PauseGate::arm("mq.send.after_publish");
    Status call;
    BatchStatus res[3];
    std::thread slow([&] {
        auto prod = Producer::open(f.tp.pool, "t");
        const OutgoingMessage msgs[] = {{bytes("m0"), {}, {}}, {bytes("m1"), {}, {}}, {bytes("m2"), {}, {}}};
        call = prod->send_batch(msgs, res);
    });
    REQUIRE(PauseGate::wait_arrived("mq.send.after_publish"));
    // Meanwhile the consumer reads m0 and, past its claim timeout, quarantines m1's claim;
    // m2's is still a plain claim when the batch goes on (the consumer stops polling).
    std::vector<std::string> got = f.poll_until_quarantined(1);
    PauseGate::release("mq.send.after_publish");
    slow.join();
    PauseGate::reset();
    // The batch left no claim behind for a reader to wait out.
    CHECK(f.partition().claims_in_progress == 0);
    // The batch says it sent one message and why the next was not delivered: the caller sends
    // again from m1, and m2 must not arrive too (it would arrive twice).
    REQUIRE(call.ok());
    CHECK(res[0].ok());
    CHECK(res[0].value == 0);
    CHECK(res[1].code == Errc::skipped);
    CHECK(res[2].code == Errc::skipped);
    CHECK(res[2].message.find("not sent: message 1 to partition 0") == 0);
    auto prod = Producer::open(f.tp.pool, "t");
    const OutgoingMessage again[] = {{bytes("m1"), {}, {}}, {bytes("m2"), {}, {}}};
    BatchStatus ares[2];
    REQUIRE(send_batch_sent(*prod, again, ares) == 2);
    f.poll_values(got, 3 - got.size());
    CHECK(got == std::vector<std::string>{"m0", "m1", "m2"});
    const PartitionDescription d = f.partition();
    CHECK(d.claims_in_progress == 0);
    CHECK(d.skipped_claims == 2);
    CHECK(d.next == 5);
}

TEST_CASE("a batch producer stopped after claiming a run is skipped after one claim timeout, not one per claim") {
    StuckClaims f("stopped-run", 32, std::chrono::milliseconds(200));
    // The batch claims offsets 0..15 as one run and stops before writing the first.
    PauseGate::arm("mq.send.after_claim");
    Status call;
    BatchStatus res[16];
    std::thread stopped([&] {
        auto prod = Producer::open(f.tp.pool, "t");
        std::vector<OutgoingMessage> msgs(16, OutgoingMessage{bytes("m"), {}, {}});
        call = prod->send_batch(msgs, res);
    });
    REQUIRE(PauseGate::wait_arrived("mq.send.after_claim"));
    REQUIRE(f.partition().next == 16);
    // One claim timeout for the whole run: sixteen one after the other would take 3.2 s.
    const uint64_t start = mono_now_ns();
    CHECK(f.poll_until_quarantined(16).empty());
    const uint64_t took = mono_now_ns() - start;
    CHECK(f.quarantined() == 16);
    CHECK_MESSAGE(took < 1600 * kNsPerMs, "the run's 16 claims took " << took / kNsPerMs << " ms to skip");
    PauseGate::release("mq.send.after_claim");
    stopped.join();
    PauseGate::reset();
    // Resumed, the producer finds its claims skipped: nothing of the batch was delivered, and
    // it says so for every message; its quarantines are released.
    REQUIRE(call.ok());
    for (const BatchStatus& st : res) CHECK(st.code == Errc::skipped);
    CHECK(f.partition().claims_in_progress == 0);
    auto prod = Producer::open(f.tp.pool, "t");
    REQUIRE(prod->send("after").ok());
    std::vector<std::string> got;
    f.poll_values(got, 1);
    CHECK(got == std::vector<std::string>{"after"});
}

TEST_CASE("a claim made after a quarantine by the same process waits its own claim timeout") {
    StuckClaims f("resend", 64, std::chrono::milliseconds(300));
    // A send stopped after its claim of offset 0 is quarantined after the timeout.
    Result<SendResult> first = make_error(Errc::ok, ""), again = make_error(Errc::ok, "");
    std::atomic<int> go{0};  // each sender starts once its gate is armed for its thread
    std::thread stopped([&] {
        auto prod = Producer::open(f.tp.pool, "t");
        while (go.load() < 1) std::this_thread::yield();
        first = prod->send("first");
    });
    PauseGate::arm("mq.send.after_claim", stopped.get_id());
    go = 1;
    REQUIRE(PauseGate::wait_arrived("mq.send.after_claim"));
    f.poll_until_quarantined(1);
    PauseGate::release("mq.send.after_claim");
    stopped.join();
    REQUIRE(first.code() == Errc::skipped);
    // Its process sends again (the same owner token) and this claim of offset 1 stops too: it
    // is a new send, not the rest of the stopped one, and gets a full timeout of its own.
    std::thread resend([&] {
        auto prod = Producer::open(f.tp.pool, "t");
        while (go.load() < 2) std::this_thread::yield();
        again = prod->send("again");
    });
    PauseGate::arm("mq.send.after_claim", resend.get_id());
    go = 2;
    REQUIRE(PauseGate::wait_arrived("mq.send.after_claim"));
    const uint64_t claimed_at = mono_now_ns();
    while (mono_now_ns() - claimed_at < 100 * kNsPerMs) {
        REQUIRE(f.cons->poll(f.batch, 8, std::chrono::milliseconds(5)).ok());
        CHECK(f.batch.empty());
    }
    CHECK(f.quarantined() == 1);
    PauseGate::release("mq.send.after_claim");
    resend.join();
    PauseGate::reset();
    CHECK(again.ok());
    std::vector<std::string> got;
    f.poll_values(got, 1);
    CHECK(got == std::vector<std::string>{"again"});
}

TEST_CASE("a consumer stopped between a quarantine and its look at the next slot costs a resend one more skip, no message") {
    // The window of the run inheritance: the consumer quarantines a stopped send's claim and
    // stops before reading the next slot. Meanwhile the sender resumes, learns of the skip and
    // sends again, claiming that next slot. The consumer then takes the new claim for the rest
    // of the stopped send and quarantines it at once: the resend is skipped too (its sender is
    // told), and the third send is delivered. Nothing is lost or delivered twice.
    StuckClaims f("window", 64, std::chrono::milliseconds(100));
    Result<SendResult> first = make_error(Errc::ok, ""), second = make_error(Errc::ok, ""),
                       third = make_error(Errc::ok, "");
    std::atomic<int> go{0};
    std::atomic<bool> first_done{false};
    std::thread sender([&] {
        auto prod = Producer::open(f.tp.pool, "t");
        while (go.load() < 1) std::this_thread::yield();
        first = prod->send("first");  // stopped after its claim, then skipped
        first_done = true;
        while (go.load() < 2) std::this_thread::yield();
        second = prod->send("second");  // stopped after its claim of the next offset
        third = prod->send("third");
    });
    PauseGate::arm("mq.send.after_claim", sender.get_id());
    go = 1;
    REQUIRE(PauseGate::wait_arrived("mq.send.after_claim"));
    std::atomic<bool> polled_through{false};
    std::vector<std::string> got;
    std::thread consumer([&] {
        const uint64_t deadline = mono_now_ns() + 10 * kNsPerSec;
        while (got.size() < 1 && mono_now_ns() < deadline) {
            if (!f.cons->poll(f.batch, 8, std::chrono::milliseconds(5))) break;
            for (const Message& m : f.batch) got.emplace_back(m.value_str());
        }
        polled_through = true;
    });
    PauseGate::arm("mq.poll.after_quarantine", consumer.get_id());
    REQUIRE(PauseGate::wait_arrived("mq.poll.after_quarantine"));
    // The sender resumes: its first send was skipped. Its resend claims offset 1 and stops.
    PauseGate::release("mq.send.after_claim");
    while (!first_done.load()) std::this_thread::yield();
    PauseGate::arm("mq.send.after_claim", sender.get_id());
    go = 2;
    REQUIRE(PauseGate::wait_arrived("mq.send.after_claim"));
    // The consumer reads the next slot now and finds the resend's claim; past it, it
    // quarantines that claim at once.
    PauseGate::release("mq.poll.after_quarantine");
    const uint64_t deadline = mono_now_ns() + 10 * kNsPerSec;
    while (f.quarantined() < 2 && mono_now_ns() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(f.quarantined() == 2);
    PauseGate::release("mq.send.after_claim");
    sender.join();
    consumer.join();
    PauseGate::reset();
    CHECK(polled_through.load());
    CHECK(first.code() == Errc::skipped);
    CHECK(second.code() == Errc::skipped);
    REQUIRE(third.ok());
    CHECK(got == std::vector<std::string>{"third"});
    CHECK(f.partition().claims_in_progress == 0);
}

