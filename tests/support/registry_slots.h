// SPDX-License-Identifier: MIT
// A process's registry slot, for tests that forge its state (another pid namespace, a stale or
// future heartbeat) as a crashed, paused or foreign process would leave it.
#pragma once

#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"

namespace fabric_shm::test {

inline layout::ProcessSlot& slot_of(const Pool& pool, OwnerToken t) {
    auto* slots = reinterpret_cast<layout::ProcessSlot*>(detail::pool_base(pool) + layout::kRegistryOffset);
    return slots[layout::token_slot(t)];
}

}  // namespace fabric_shm::test
