// SPDX-License-Identifier: MIT
// Named crash points: with FABRIC_SHM_CRASH_POINT=<name> in the environment, the process
// SIGKILLs itself when it reaches that point, so crash tests are deterministic, not races.
// FABRIC_SHM_CRASH_POINT=<name>:<n> kills at the n-th hit (1-based).
#pragma once

namespace fabric_shm::detail {
extern bool g_crash_armed;  ///< set once at startup from the environment; read-only after
void crash_point_hit(const char* name) noexcept;
/// Re-reads FABRIC_SHM_CRASH_POINT (tests call it in a forked child after setenv).
void crash_point_rearm() noexcept;
}  // namespace fabric_shm::detail

#if FABRIC_SHM_CRASH_POINTS
#define FABRIC_CRASH_POINT(name)                                          \
    do {                                                                  \
        if (__builtin_expect(::fabric_shm::detail::g_crash_armed, 0))    \
            ::fabric_shm::detail::crash_point_hit(name);                  \
    } while (0)
#else
#define FABRIC_CRASH_POINT(name) \
    do {                         \
    } while (0)
#endif
