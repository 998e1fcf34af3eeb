// SPDX-License-Identifier: MIT
// Registers each data structure's RegionKindOps (reaper and --check hooks) once per process.
#pragma once

namespace fabric_shm::detail {
/// Called by Pool::open/create (std::call_once). Each module adds its registration here.
void register_builtin_region_kinds();
}  // namespace fabric_shm::detail
