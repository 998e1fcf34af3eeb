// SPDX-License-Identifier: MIT
// Stalls on the ring: a quarantine released although a roll-forward landed first. Pause points
// in other processes (FABRIC_SHM_PAUSE_POINT + SIGSTOP) or in-process (PauseGate).
#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
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
