// SPDX-License-Identifier: MIT
// Pool-wide counters, sharded per process: each process adds to its own registry slot
// (no cache line bounces between cores); readers sum the shards plus the retired totals.
#pragma once

#include <cstdint>
#include <string_view>

namespace fabric_shm {

class Pool;

/// Cell indices in ProcessSlot::counters. Append only (the layout minor version covers additions).
enum class CounterId : uint32_t {
    store_put_bytes = 0,
    store_get_bytes,
    store_puts,
    store_gets,
    store_misses,
    store_removes,
    store_conflicts,
    store_corrupt,
    store_loans_reclaimed,
    store_pins_released,
    mq_messages_published,
    mq_messages_consumed,
    mq_messages_overwritten,
    mq_claims_skipped,
    mq_back_pressure,
    mq_offset_resets,
    lease_renewals,
    lease_renewal_failures,
    worker_handler_restarts,  ///< a worker's long-lived handler died and was restarted (--handler)
    count_  ///< number of defined counters
};
static_assert(uint32_t(CounterId::count_) <= 64, "ProcessSlot::counters has 64 cells");

std::string_view counter_name(CounterId id) noexcept;

/// Adds `n` to this process's shard of counter `id` (relaxed; nothing on a read-only handle).
/// For events the library does not see itself (a worker's handler restarts).
void count_event(const Pool& pool, CounterId id, uint64_t n = 1) noexcept;

/// This process's registry slot `slot`'s shard of counter `id` (0 for a slot out of range):
/// per-process counts for the dump.
uint64_t counter_of_slot(const Pool& pool, uint32_t slot, CounterId id) noexcept;

/// Sum over live shards and retired totals. Best effort while a reaper folds a dead
/// process's shard (it can be counted twice for that instant).
uint64_t counter_total(const Pool& pool, CounterId id) noexcept;

}  // namespace fabric_shm
