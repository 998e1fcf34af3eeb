// SPDX-License-Identifier: MIT
// The library's named fault points (FABRIC_CRASH_POINT / FABRIC_PAUSE_POINT, crash_point.h)
// and which torture role reaches each one. The torture arms replacements with a point their
// role reaches, as a crash point (SIGKILL there) or a pause point (SIGSTOP there, held and
// resumed by the harness): every point is both, as any instruction may be killed or paused.
// The table must name every point in the library and nothing else: the meson test
// `torture-points` (check_points.py) compares it with the sources, so a point added to the
// library without an entry here fails CI. Roles 0: code no torture role runs (the bridge).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fabric_shm::torture {

/// The processes a torture run starts (bits: a point may be reached by several roles).
enum RoleBit : uint8_t {
    kProducerRole = 1,  ///< this executable, --child-producer: puts, loans, removes, sends
    kWorkerRole = 2,    ///< fabric-shm-worker: pins, result puts, group membership, commits, dead letters
    kReaperRole = 4,    ///< fabric-shm-reaper on the main or the side pool
    kOpsRole = 8,       ///< this executable, --child-ops: a side pool created, used, expired and reaped, a tiered store
};

struct FaultPoint {
    const char* name;
    uint8_t roles;  ///< RoleBit mask: who reaches it
};

/// Every point of the library, in source order of its subsystem.
const std::vector<FaultPoint>& fault_points();
/// The names of the points a role reaches.
std::vector<std::string> points_of_role(uint8_t role);

}  // namespace fabric_shm::torture
