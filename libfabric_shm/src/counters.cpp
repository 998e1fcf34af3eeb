// SPDX-License-Identifier: MIT
#include "fabric_shm/counters.h"

#include "pool_impl.h"

namespace fabric_shm {

std::string_view counter_name(CounterId id) noexcept {
    switch (id) {
    case CounterId::store_put_bytes: return "store_put_bytes";
    case CounterId::store_get_bytes: return "store_get_bytes";
    case CounterId::store_puts: return "store_puts";
    case CounterId::store_gets: return "store_gets";
    case CounterId::store_misses: return "store_misses";
    case CounterId::store_removes: return "store_removes";
    case CounterId::store_conflicts: return "store_conflicts";
    case CounterId::store_corrupt: return "store_corrupt";
    case CounterId::store_loans_reclaimed: return "store_loans_reclaimed";
    case CounterId::store_pins_released: return "store_pins_released";
    case CounterId::mq_messages_published: return "mq_messages_published";
    case CounterId::mq_messages_consumed: return "mq_messages_consumed";
    case CounterId::mq_messages_overwritten: return "mq_messages_overwritten";
    case CounterId::mq_claims_skipped: return "mq_claims_skipped";
    case CounterId::mq_back_pressure: return "mq_back_pressure";
    case CounterId::mq_offset_resets: return "mq_offset_resets";
    case CounterId::lease_renewals: return "lease_renewals";
    case CounterId::lease_renewal_failures: return "lease_renewal_failures";
    case CounterId::worker_handler_restarts: return "worker_handler_restarts";
    case CounterId::count_: break;
    }
    return "unknown";
}

void count_event(const Pool& pool, CounterId id, uint64_t n) noexcept { detail::count(pool, id, n); }

uint64_t counter_of_slot(const Pool& pool, uint32_t slot, CounterId id) noexcept {
    const uint32_t cell = uint32_t(id);
    if (cell >= layout::kCounterSharedCells || slot >= layout::kRegistrySlots) return 0;
    const auto* slots = reinterpret_cast<const layout::ProcessSlot*>(detail::pool_base(pool) + layout::kRegistryOffset);
    // Both halves of the shard: the counting thread's cell and the other threads' (layout 7).
    // A statistic: relaxed, like the owner's stores and adds.
    return slots[slot].counters[cell].load(std::memory_order_relaxed) +
           slots[slot].counters[layout::kCounterSharedCells + cell].load(std::memory_order_relaxed);
}

uint64_t counter_total(const Pool& pool, CounterId id) noexcept {
    const uint32_t cell = uint32_t(id);
    if (cell >= layout::kCounterSharedCells) return 0;
    const layout::PoolHeader& h = detail::pool_header(pool);
    // Retirers fold both halves of a shard into retired_counters[cell] (registry.cpp).
    uint64_t total = h.retired_counters[cell].load(std::memory_order_relaxed) +
                     h.retired_counters[layout::kCounterSharedCells + cell].load(std::memory_order_relaxed);
    const auto* slots = reinterpret_cast<const layout::ProcessSlot*>(detail::pool_base(pool) + layout::kRegistryOffset);
    for (uint32_t i = 0; i < layout::kRegistrySlots; ++i)
        total += slots[i].counters[cell].load(std::memory_order_relaxed) +
                 slots[i].counters[layout::kCounterSharedCells + cell].load(std::memory_order_relaxed);
    return total;
}

}  // namespace fabric_shm
