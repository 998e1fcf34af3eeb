// SPDX-License-Identifier: MIT
// Internal to the mq module: how a thread waits for messages on partitions of one or more
// topics, and how producers wake it. Per partition a word of waiter bits (PartitionHeader::
// waiters), per topic a table of waiter entries (WaiterSlot), each with its own futex word.
// A waiter claims an entry, sets the entry's bit on the partitions it waits for, re-checks
// them and sleeps on the entry's word; a producer, after publishing, wakes only the entries
// whose bits the partition carries. Design, handshake and repair: docs/topics.md, "Blocking".
#pragma once

#include "private.h"

#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "fabric_shm/consumer.h"
#include "mq/topic_internal.h"

namespace fabric_shm::mq {

/// This thread's entry in one topic's waiter table and the bits it set (one park, or one
/// Waiter::wait call). Not thread-safe; not shared.
class WaitRegistration {
public:
    WaitRegistration() = default;
    WaitRegistration(const WaitRegistration&) = delete;
    WaitRegistration& operator=(const WaitRegistration&) = delete;
    WaitRegistration(WaitRegistration&& other) noexcept { *this = std::move(other); }
    WaitRegistration& operator=(WaitRegistration&& other) noexcept;
    ~WaitRegistration() { release(); }

    /// Claims a FREE entry of t's table for `me` (CAS FREE(g) -> LIVE(g, me)). False when every
    /// entry is taken (the caller then naps in short slices) or `me` is 0 (a read-only pool).
    bool claim(const TopicHandle& t, OwnerToken me);
    bool claimed() const { return table_ != nullptr; }
    /// Sets the entry's bit on partition `p` (seq_cst fetch_or: the waiter's half of the
    /// handshake with a producer's publish; see docs/topics.md). Re-asserting a bit is a no-op.
    void watch(uint32_t p);
    /// The entry's futex word, and its value read after the bits were set and before the
    /// caller re-checks the partitions (the value to sleep on).
    std::atomic<uint32_t>& word() const { return table_[index_].wake_seq; }
    uint32_t load_seq() const { return word().load(std::memory_order_seq_cst); }
    /// False when a repairer took the entry over (this process was judged dead by heartbeat):
    /// release() then touches nothing, and the caller claims again.
    bool still_ours() const;
    /// CAS LIVE(me) -> RELEASING(me), clear every bit this registration set, store FREE(g+1).
    /// Nothing when unclaimed or taken over.
    void release() noexcept;

private:
    WaiterSlot* table_ = nullptr;
    PartitionHeader* const* parts_ = nullptr;  ///< the topic's partition headers (TopicHandle::part_headers)
    uint32_t num_parts_ = 0;
    uint32_t index_ = 0;
    uint64_t word_ = 0;     ///< our LIVE word
    uint64_t watched_ = 0;  ///< partitions whose bit we set (kMaxPartitions == 64)
};

/// After a publish to partition `p` whose waiter bits were `bits` (non-zero): bump and
/// FUTEX_WAKE each named entry. Returns the entries whose wake found no sleeper (candidates
/// for a dead waiter's leftover bit; see repair_waiter).
uint64_t wake_waiters(const TopicHandle& t, uint64_t bits);

/// Repairs entry `index` when its owner (LIVE or RELEASING) is certainly dead: CAS to
/// RELEASING(me), clear its bit on every partition in `parts`, store FREE(g+1). True when this
/// call freed it. `me` is the repairer's token (never 0).
bool repair_waiter(const Pool& pool, WaiterSlot* table, uint32_t index, std::span<PartitionHeader* const> parts,
                   OwnerToken me, uint64_t now_ns);

/// What a waiter sees at position `pos` of a partition.
enum class SlotReadiness : uint8_t {
    nothing,  ///< empty or an older lap: offset pos not produced yet
    stuck,    ///< claimed for this lap: being written (poll probes the claimer after 1 ms)
    ready,    ///< published, a skip record, or a later lap (a gap): poll has something to do
};
/// seq_cst load of the slot word: the waiter's re-check after setting its bits.
inline SlotReadiness slot_readiness(const PartitionView& pv, uint64_t pos) {
    const uint64_t w = pv.slot(pos)->state.load(std::memory_order_seq_cst);
    const uint64_t st = slot_state(w);
    if (st == kSlotEmpty) return SlotReadiness::nothing;
    const int64_t d = lap_diff(slot_lap(w), pv.lap(pos) & kLapMask);
    if (d < 0) return SlotReadiness::nothing;
    if (d == 0 && st == kSlotClaimed) return SlotReadiness::stuck;
    return SlotReadiness::ready;
}

/// One partition a Waiter watches: the consumer's position there when the watch was taken.
struct WatchedPartition {
    const PartitionView* pv = nullptr;
    uint64_t pos = 0;
    uint32_t index = 0;
};
/// Appends the consumer's assigned partitions and positions (consumer.cpp; call it on the
/// thread that owns the consumer).
void consumer_watch(const Consumer::Impl& c, std::vector<WatchedPartition>& out);
const TopicHandle& consumer_topic(const Consumer::Impl& c);

}  // namespace fabric_shm::mq
