// SPDX-License-Identifier: MIT
// The survivors' side of child_groups.h: killing what a dead registration recorded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fabric_shm/child_groups.h"
#include "layout/pool_layout.h"

namespace fabric_shm::detail {

/// SIGKILLs the group of `entry` (a child_group_word) when its leader still runs with the
/// recorded start time, and says what it found. Never signals a reused pid.
ChildGroupFate kill_child_group(uint64_t entry);

/// Kills every group recorded in `slot` (see kill_child_group) when its occupant ran in our
/// pid namespace (`occupant_pidns`, the slot's pidns field; 0 or another namespace: nothing is
/// signalled, a pgid from there names another process here). Counts kills in the header.
/// `clear`: zero the entries too (the retirer, which owns the slot). Returns the kills.
uint32_t kill_child_groups(layout::PoolHeader& header, layout::ProcessSlot& slot, uint64_t occupant_pidns,
                           bool clear, std::vector<std::string>* notes = nullptr);

}  // namespace fabric_shm::detail
