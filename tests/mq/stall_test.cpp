// SPDX-License-Identifier: MIT
// Stalls on the ring: a producer paused between claim and publish while survivors (consumers,
// other producers, the reaper) act; a repairer paused before acting on its judgement; a
// quarantine released although a roll-forward landed first. Pause points in other processes
// (FABRIC_SHM_PAUSE_POINT + SIGSTOP) or in-process (PauseGate).
#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <optional>
#include <thread>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/topic.h"
#include "mq/topic_layout.h"
#include "mq_test_util.h"

using namespace fabric_shm;
using namespace mqtest;
using namespace fabric_shm::mq;

namespace {

SlotHeader* slot_of(const Pool& pool, const char* topic, uint32_t partition, uint64_t index) {
    auto r = pool.open_region(RegionKind::partition, std::string(topic) + "." + std::to_string(partition));
    REQUIRE(r.ok());
    auto* ph = reinterpret_cast<PartitionHeader*>(r->data());
    return reinterpret_cast<SlotHeader*>(r->data() + kSlotsOffset + index * ph->stride);
}

bool one_letter(std::string_view v, size_t size) {
    return v.size() == size && v.find_first_not_of(v[0]) == std::string_view::npos;
}

/// A producer child that claims offset `next` and stops itself there (mq.send.after_claim);
/// after SIGCONT it writes its envelope and must get Errc::skipped: exit 0 when it did.
pid_t paused_producer(const std::string& pool_name, size_t size) {
    return producer_stopped_after_claim(pool_name, std::string(size, 'X'), [](const Result<SendResult>& r) {
        if (r.code() != Errc::skipped) return 82;
        return r.error().message.find("NOT delivered") != std::string::npos ? 0 : 83;
    });
}

}  // namespace

TEST_CASE("quarantine: a producer releases its quarantined slot even when a roll-forward lands before its release") {
    TestPool tp("qrelease");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 2, OnFull::overwrite)).ok());
    auto* ph = partition_header(tp.pool, "t", 0);
    SlotHeader* slot0 = slot_of(tp.pool, "t", 0, 0);
    Result<SendResult> slow_result = make_error(Errc::ok, "");
    std::thread slow([&] {
        PauseGate::arm("mq.send.after_claim", std::this_thread::get_id());
        PauseGate::arm("mq.send.before_release", std::this_thread::get_id());
        auto prod = Producer::open(tp.pool, "t");
        slow_result = prod->send("slow");
    });
    REQUIRE(PauseGate::wait_arrived("mq.send.after_claim"));
    // What a consumer does once the claim outlives claim_timeout: a quarantine (same lap, same
    // owner), since the claimer may be alive and still writing.
    const uint64_t claimed = slot0->state.load();
    REQUIRE(slot_state(claimed) == kSlotClaimed);
    slot0->state.store(make_slot_word(kSlotQuarantined, slot_lap(claimed), slot_owner(claimed)));
    PauseGate::release("mq.send.after_claim");
    // Its publish failed; it stops before releasing the quarantine.
    REQUIRE(PauseGate::wait_arrived("mq.send.before_release"));
    // Meanwhile another producer laps the ring: offset 1 in slot 1; offset 2 maps to slot 0,
    // whose quarantine (owner alive) rolls forward to lap 1 as a skip record; offset 3, slot 1.
    auto fast = Producer::open(tp.pool, "t");
    auto r1 = fast->send("f1");
    REQUIRE(r1.ok());
    CHECK(r1->offset == 1);
    auto r2 = fast->send("f2");
    REQUIRE(r2.ok());
    CHECK(r2->offset == 3);
    CHECK(slot_state(slot0->state.load()) == kSlotQuarantined);
    CHECK(slot_lap(slot0->state.load()) == 1);
    PauseGate::release("mq.send.before_release");
    slow.join();
    PauseGate::reset();
    CHECK(slow_result.code() == Errc::skipped);
    // Released at the lap the roll-forward left: a plain skip record, so the next lap claims
    // slot 0 directly instead of paying another skip (and a liveness probe) every trip round.
    CHECK(slot_state(slot0->state.load()) == kSlotSkipped);
    CHECK(slot_lap(slot0->state.load()) == 1);
    const uint64_t skipped = ph->skipped_claims.load();
    auto r3 = fast->send("f3");
    REQUIRE(r3.ok());
    CHECK(r3->offset == 4);
    CHECK(ph->skipped_claims.load() == skipped);
}

TEST_CASE("stall: a producer paused between claim and publish loses its slot to a skip record; the ring moves on; "
          "its late publish fails with skipped; nothing torn or acknowledged is lost") {
    TestPool tp("pausedprod");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4, OnFull::block, 256)).ok());
    ConsumerOptions co;
    co.claim_timeout = std::chrono::milliseconds(50);
    auto cons = Consumer::open(tp.pool, "t", "g", co);
    REQUIRE(cons.ok());
    REQUIRE(cons->assign_all().ok());
    constexpr size_t kSize = 200;
    const pid_t kid = paused_producer(tp.cleanup.name(), kSize);
    REQUIRE(test::wait_stopped(kid));

    // Stopped holding a claim on offset 0. Its pid lives, so nobody judges it certainly dead:
    // not the registry, not the reaper (which would turn the claim into a reusable skip).
    SlotHeader* slot0 = slot_of(tp.pool, "t", 0, 0);
    const uint64_t w = slot0->state.load();
    REQUIRE(slot_state(w) == kSlotClaimed);
    CHECK(tp.pool.registry().liveness(slot_owner(w), MonoClock::now()) == Liveness::maybe_alive);
    tp.pool.reap(MonoClock::now());
    CHECK(slot0->state.load() == w);

    // The ring moves on: ten messages, 2.5 trips round the 4-slot ring, each read and
    // committed before the next. The consumer waits claim_timeout behind the claim, then
    // quarantines it (a skip record whose bytes nobody reuses); producers roll the quarantine
    // forward as one more skip per trip.
    auto prod = Producer::open(tp.pool, "t");
    std::vector<std::string> sent, got;
    uint64_t skips = 0;
    MessageBatch b;
    auto receive_all = [&] {
        const uint64_t deadline = mono_now_ns() + 10 * kNsPerSec;
        while (got.size() < sent.size() && mono_now_ns() < deadline) {
            auto n = cons->poll(b, 8, std::chrono::milliseconds(100));
            REQUIRE(n.ok());
            skips += b.skipped();
            for (const Message& m : b) got.emplace_back(m.value_str());
            REQUIRE(cons->commit().ok());
        }
    };
    for (int i = 0; i < 10; ++i) {
        auto r = prod->send(std::string(kSize, char('a' + i)));
        REQUIRE_MESSAGE(r.ok(), r.error().message);
        sent.emplace_back(kSize, char('a' + i));
        receive_all();
    }
    CHECK(got == sent);
    CHECK(skips == 4);  // offsets 0 (the quarantine), 4, 8 and 12 (rolled forward)
    CHECK(slot_state(slot0->state.load()) == kSlotQuarantined);
    CHECK(slot_owner(slot0->state.load()) == slot_owner(w));

    // It resumes: writes its envelope into bytes nobody reads, its publish fails (skipped, exit
    // 0), and it releases the quarantine.
    test::resume(kid);
    CHECK(test::wait_child(kid) == 0);
    CHECK(slot_state(slot0->state.load()) == kSlotSkipped);
    for (int i = 10; i < 16; ++i) {
        auto r = prod->send(std::string(kSize, char('a' + i)));
        REQUIRE_MESSAGE(r.ok(), r.error().message);
        sent.emplace_back(kSize, char('a' + i));
        receive_all();
    }
    CHECK(got == sent);
    for (const std::string& v : got) CHECK(one_letter(v, kSize));
    auto d = mgr.describe("t");
    REQUIRE(d.ok());
    CHECK(d->partitions[0].quarantined == 1);
    CHECK(d->partitions[0].claims_in_progress == 0);
}

TEST_CASE("stall: in overwrite mode a producer lapping a paused claimer quarantines its claim after claim_timeout") {
    TestPool tp("lapped");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 2, OnFull::overwrite, 256)).ok());
    constexpr size_t kSize = 200;
    const pid_t kid = paused_producer(tp.cleanup.name(), kSize);
    REQUIRE(test::wait_stopped(kid));
    ProducerOptions po;
    po.claim_timeout = std::chrono::milliseconds(50);
    auto prod = Producer::open(tp.pool, "t", po);
    REQUIRE(prod.ok());
    auto r1 = prod->send(std::string(kSize, 'a'));
    REQUIRE(r1.ok());
    CHECK(r1->offset == 1);
    // Offset 2 maps to slot 0, still claimed (lap 0) by the stopped producer: after 50 ms it
    // becomes a quarantine, rolled forward as the skip record for offset 2; this send gets 3.
    auto r2 = prod->send(std::string(kSize, 'b'));
    REQUIRE(r2.ok());
    CHECK(r2->offset == 3);
    SlotHeader* slot0 = slot_of(tp.pool, "t", 0, 0);
    CHECK(slot_state(slot0->state.load()) == kSlotQuarantined);
    test::resume(kid);
    CHECK(test::wait_child(kid) == 0);
    CHECK(slot_state(slot0->state.load()) == kSlotSkipped);
    auto cons = Consumer::open(tp.pool, "t", "");
    REQUIRE(cons->assign_all().ok());
    REQUIRE(cons->seek(SeekPolicy::Earliest()).ok());
    auto r3 = prod->send(std::string(kSize, 'c'));
    REQUIRE(r3.ok());
    CHECK(r3->offset == 4);
    MessageBatch b;
    auto n = cons->poll(b, 8, Duration::zero());
    REQUIRE(n.ok());
    REQUIRE(*n >= 1);
    for (const Message& m : b) CHECK((m.value_str() != std::string(kSize, 'X') && one_letter(m.value_str(), kSize)));
    CHECK(b[b.size() - 1].value_str() == std::string(kSize, 'c'));
}

namespace {

/// Topic "t" in overwrite mode, one partition of `capacity` slots, each written once (lap 0),
/// and a producer whose claim_timeout is `timeout_ns`.
struct LappedRing {
    TestPool tp;
    Producer prod;
    LappedRing(const char* tag, uint32_t capacity, uint64_t timeout_ns) : tp(tag), prod(open(tp, capacity, timeout_ns)) {
        for (uint32_t i = 0; i < capacity; ++i) REQUIRE(prod.send("lap 0").ok());
    }
    static Producer open(TestPool& tp, uint32_t capacity, uint64_t timeout_ns) {
        TopicManager mgr(tp.pool);
        REQUIRE(mgr.create("t", config(1, capacity, OnFull::overwrite, 256)).ok());
        ProducerOptions po;
        po.claim_timeout = std::chrono::nanoseconds(timeout_ns);
        auto p = Producer::open(tp.pool, "t", po);
        REQUIRE(p.ok());
        return std::move(*p);
    }
};

}  // namespace

TEST_CASE("stall: claims a send finds unfinished, all made before it first waited, cost it one claim_timeout, "
          "whoever made them") {
    constexpr uint64_t kTimeoutNs = 400'000'000ull;
    LappedRing ring("oneclaimwait", 4, kTimeoutNs);
    TestPool& tp = ring.tp;
    Producer& prod = ring.prod;
    // Offsets 0 and 1 claimed again and never published, as by live producers that stopped
    // (never certainly dead). Offset 4 meets slot 0's claim, offset 5 slot 1's.
    PausedProcess other(tp.cleanup.name());
    SlotHeader* slot0 = slot_of(tp.pool, "t", 0, 0);
    SlotHeader* slot1 = slot_of(tp.pool, "t", 0, 1);
    OwnerToken second = 0;
    SUBCASE("one stopped producer's run of claims") { second = tp.pool.self(); }
    SUBCASE("two stopped producers' claims") { second = other.token; }
    slot0->state.store(make_slot_word(kSlotClaimed, 0, tp.pool.self()));
    slot1->state.store(make_slot_word(kSlotClaimed, 0, second));
    const uint64_t start = mono_now_ns();
    auto r = prod.send("after both");
    const uint64_t waited = mono_now_ns() - start;
    REQUIRE(r.ok());
    CHECK(r->offset == 6);  // 4 and 5 became skip records
    CHECK(slot_state(slot0->state.load()) == kSlotQuarantined);
    CHECK(slot_state(slot1->state.load()) == kSlotQuarantined);
    CHECK(waited >= kTimeoutNs);
    CHECK(waited < 2 * kTimeoutNs);  // slot 1's claim was as old as slot 0's when the send met it
}

TEST_CASE("stall: a claim made after a send began waiting on another is not quarantined at once: it gets its own "
          "claim_timeout") {
    constexpr uint64_t kTimeoutNs = 300'000'000ull;
    LappedRing ring("freshclaim", 2, kTimeoutNs);
    TestPool& tp = ring.tp;
    Producer& prod = ring.prod;
    std::optional<PausedProcess> a(std::in_place, tp.cleanup.name()), b(std::in_place, tp.cleanup.name());
    SlotHeader* slot0 = slot_of(tp.pool, "t", 0, 0);
    SlotHeader* slot1 = slot_of(tp.pool, "t", 0, 1);
    slot0->state.store(make_slot_word(kSlotClaimed, 0, a->token));  // offset 0: a stopped there
    Result<SendResult> sent = make_error(Errc::busy, "not sent");
    std::thread sender([&] {
        PauseGate::arm("mq.send.before_roll_quarantine", std::this_thread::get_id());
        sent = prod.send("p");
    });
    // The send met a's claim at offset 2, waited claim_timeout, quarantined it and is about to
    // roll the quarantine over offset 2.
    CHECK(PauseGate::wait_arrived("mq.send.before_roll_quarantine"));
    // Meanwhile another producer claims offset 3 (slot 1, lap 1) and stops: a claim made after
    // the send began to wait, which it meets again at offset 5.
    slot1->state.store(make_slot_word(kSlotClaimed, 1, b->token));
    const uint64_t released = mono_now_ns();
    PauseGate::release("mq.send.before_roll_quarantine");
    const uint64_t give_up = released + 10 * kNsPerSec;
    bool quarantined = false;
    while (!(quarantined = slot_state(slot1->state.load()) == kSlotQuarantined) && mono_now_ns() < give_up)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const uint64_t waited = mono_now_ns() - released;
    CHECK(quarantined);
    CHECK(waited >= kTimeoutNs);
    a.reset();  // both stopped producers die: their quarantined slots are reused
    b.reset();
    sender.join();
    PauseGate::reset();
    CHECK_MESSAGE(sent.ok(), sent.error().message);
}

TEST_CASE("stall: a send whose every slot holds a stopped producer's quarantined claim gives up after "
          "block_timeout instead of rolling them forward for as long as the producer stays stopped") {
    TestPool tp("allquarantined");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 2, OnFull::overwrite, 256)).ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    for (int i = 0; i < 2; ++i) REQUIRE(prod->send("lap 0").ok());
    PausedProcess stopped(tp.cleanup.name());
    // Both slots: claims of offsets 0 and 1 that timed out, their producer alive and stopped.
    for (uint64_t i = 0; i < 2; ++i)
        slot_of(tp.pool, "t", 0, i)->state.store(make_slot_word(kSlotQuarantined, 0, stopped.token));
    // In a child: a send that never gives up would spin until the test's end.
    const pid_t kid = test::fork_child([&] {
        auto p = Pool::open(tp.cleanup.name());
        if (!p) return 10;
        ProducerOptions po;
        po.block_timeout = std::chrono::milliseconds(300);
        auto child = Producer::open(*p, "t", po);
        if (!child) return 11;
        auto r = child->send("x");
        if (r) return 12;
        // back_pressure, as for a full ring: a worker's forward or the bridge waits and sends again.
        return r.code() == Errc::back_pressure && r.error().message.find("stopped producer") != std::string::npos ? 0
                                                                                                                 : 13;
    });
    CHECK(test::wait_child(kid, 10000) == 0);
}

TEST_CASE("stall: a consumer paused before its quarantine CAS acts on a stale judgement; the claimer published, "
          "so the CAS fails and the message is delivered") {
    TestPool tp("stalerepair");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 8, OnFull::block)).ok());
    ConsumerOptions co;
    co.claim_timeout = std::chrono::milliseconds(20);
    auto cons = Consumer::open(tp.pool, "t", "g", co);
    REQUIRE(cons->assign_all().ok());
    Result<SendResult> sent = make_error(Errc::ok, "");
    std::thread producer([&] {
        PauseGate::arm("mq.send.after_claim", std::this_thread::get_id());
        auto prod = Producer::open(tp.pool, "t");
        sent = prod->send("late but delivered");
    });
    REQUIRE(PauseGate::wait_arrived("mq.send.after_claim"));
    std::string got;
    uint64_t skipped = 0;
    std::thread consumer([&] {
        PauseGate::arm("mq.slot.before_quarantine", std::this_thread::get_id());
        MessageBatch b;
        const uint64_t deadline = mono_now_ns() + 10 * kNsPerSec;
        while (got.empty() && mono_now_ns() < deadline) {
            auto n = cons->poll(b, 4, std::chrono::milliseconds(100));
            if (!n) return;
            skipped += b.skipped();
            if (*n) got = std::string(b[0].value_str());
        }
    });
    // The consumer judged the claim timed out and is about to quarantine it...
    REQUIRE(PauseGate::wait_arrived("mq.slot.before_quarantine"));
    // ...when the claimer resumes and publishes.
    PauseGate::release("mq.send.after_claim");
    producer.join();
    REQUIRE(sent.ok());
    CHECK(sent->offset == 0);
    PauseGate::release("mq.slot.before_quarantine");
    consumer.join();
    PauseGate::reset();
    CHECK(got == "late but delivered");
    CHECK(skipped == 0);
    auto d = mgr.describe("t");
    CHECK(d->partitions[0].quarantined == 0);
    CHECK(d->partitions[0].skipped_claims == 0);
}
