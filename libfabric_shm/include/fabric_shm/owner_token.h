// SPDX-License-Identifier: MIT
// OwnerToken: which registration of the process registry owns something. Every ownership
// word in the pool (locks, loans, pins, slot claims, group members) stores one, and the API
// reports them (ProcessInfo::token, Pool::self()). Defined here once: the shared-memory
// layouts (src/layout/) and the public headers both include this file, which holds nothing
// but the type.
#pragma once

#include <cstdint>

namespace fabric_shm {

/// (slot generation << 8) | slot index in the registry; 0 = no owner. Generations start at 1,
/// so a real token is never 0.
using OwnerToken = std::uint32_t;

}  // namespace fabric_shm
