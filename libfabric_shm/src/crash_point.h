// SPDX-License-Identifier: MIT
// Named fault points: places in the library where a process that dies or pauses leaves a
// half-done step for others to repair. Each point can be armed from the environment:
//
//   FABRIC_SHM_CRASH_POINT=<name>[:n]   SIGKILL the process at the n-th hit (1-based).
//   FABRIC_SHM_PAUSE_POINT=<name>[:n]   SIGSTOP the process at the n-th hit, once. The test
//                                       harness sees the stop (waitpid WUNTRACED, or state 'T'
//                                       in /proc/<pid>/stat), acts, then sends SIGCONT.
//   FABRIC_SHM_PAUSE_RANDOM=<ppm>[:seed] SIGSTOP at any point with probability ppm / 1e6 per hit
//                                       (the stall torture; its parent holds and resumes it).
//   FABRIC_SHM_PAUSE_LOG=<path>         append "<pid> <name>\n" there before each self-stop.
//
// so "A pauses here, B repairs, C reuses, A resumes" and "killed while claiming" are
// deterministic tests, not races. In-process tests may install a pause hook instead: it runs
// on the thread that reaches a point, which may block there until the test releases it.
//
// FABRIC_CRASH_POINT and FABRIC_PAUSE_POINT are the same mechanism (every point can be armed
// either way); the name says which outcome the author had in mind. Cost when nothing is armed:
// one relaxed load and a predicted branch. -Dcrash_points=false compiles them out.
#pragma once

#include "private.h"

#include <atomic>

namespace fabric_shm::detail {
/// True when any point is armed (environment or hook); relaxed: the arming happens-before
/// the threads that matter start (at load, after a fork, or before a test's threads run).
extern std::atomic<bool> g_fault_armed;
void fault_point_hit(const char* name) noexcept;
/// Re-reads the FABRIC_SHM_* variables above (tests call it in a forked child after setenv).
void crash_point_rearm() noexcept;
/// In-process pause hook (tests): called with the point's name on the thread that reaches it.
/// nullptr removes it. The hook must be installed before the threads that reach points start.
using PauseHook = void (*)(const char* name);
void set_pause_hook(PauseHook hook) noexcept;
}  // namespace fabric_shm::detail

#if FABRIC_SHM_CRASH_POINTS
#define FABRIC_CRASH_POINT(name)                                                                   \
    do {                                                                                           \
        if (__builtin_expect(::fabric_shm::detail::g_fault_armed.load(std::memory_order_relaxed), 0)) \
            ::fabric_shm::detail::fault_point_hit(name);                                           \
    } while (0)
#else
#define FABRIC_CRASH_POINT(name) \
    do {                         \
    } while (0)
#endif
#define FABRIC_PAUSE_POINT(name) FABRIC_CRASH_POINT(name)
