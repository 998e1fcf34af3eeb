// SPDX-License-Identifier: MIT
// Threads of the test process stopped inside the library at pause points, several at once: a
// thread that set `pause_role = r` blocks at the point armed for role r, once, until the test
// releases it. Install it for a test's scope with a RoleHook.
#pragma once

#include <atomic>
#include <cstring>
#include <thread>

#include "crash_point.h"

namespace fabric_shm::test {

inline constexpr int kPauseRoles = 3;
inline thread_local int pause_role = -1;
inline const char* role_point[kPauseRoles] = {"", "", ""};
inline std::atomic<bool> role_armed[kPauseRoles], role_held[kPauseRoles], role_release[kPauseRoles];

inline void hold_at_role_point(const char* name) {
    const int r = pause_role;
    if (r < 0 || std::strcmp(name, role_point[r]) != 0 || !role_armed[r].exchange(false)) return;
    role_release[r].store(false);
    role_held[r].store(true);
    while (!role_release[r].load()) std::this_thread::yield();
    role_held[r].store(false);
}

/// hold_at_role_point installed for the scope: the test's threads stop at their roles' points;
/// threads without a role (the test's own) pass through.
struct RoleHook {
    RoleHook() { detail::set_pause_hook(&hold_at_role_point); }
    ~RoleHook() { detail::set_pause_hook(nullptr); }
    RoleHook(const RoleHook&) = delete;
    RoleHook& operator=(const RoleHook&) = delete;
};

/// Arms role r to stop at `point` (the next time a thread of that role reaches it).
inline void arm_role(int r, const char* point) {
    role_point[r] = point;
    role_held[r] = false;
    role_armed[r] = true;
}

/// Returns once the thread of role r is stopped at its point.
inline void wait_role_held(int r) {
    while (!role_held[r].load()) std::this_thread::yield();
}

/// Lets the thread of role r go on.
inline void release_role(int r) { role_release[r] = true; }

/// Runs `fn` on a new thread of role r, armed to stop at `point`; returns once it stopped there.
template <typename Fn>
std::thread start_stopped_at(int r, const char* point, Fn fn) {
    arm_role(r, point);
    std::thread t([r, fn = std::move(fn)]() mutable {
        pause_role = r;
        fn();
    });
    wait_role_held(r);
    return t;
}

}  // namespace fabric_shm::test
