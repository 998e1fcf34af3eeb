// SPDX-License-Identifier: MIT
// A clock read inlined into its caller. The public clock functions (clock.cpp) are out of line,
// on a code page of their own; a hot path that runs first after a wait, when this VM's kernel
// entry has dropped the TLB (docs/benchmarks.md, "Where the light-load time goes"), reaches
// libc's clock_gettime from its own page instead. clock.cpp defines those functions with this.
#pragma once

#include <time.h>

#include <cstdint>

#include "fabric_shm/clock.h"

namespace fabric_shm::detail {

inline uint64_t read_clock(clockid_t id) noexcept {
    timespec ts{};
    clock_gettime(id, &ts);  // cannot fail for the clocks the library reads
    return uint64_t(ts.tv_sec) * kNsPerSec + uint64_t(ts.tv_nsec);
}

}  // namespace fabric_shm::detail
