// SPDX-License-Identifier: MIT
#include "fabric_shm/crash_point.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace fabric_shm::detail {

bool g_crash_armed = false;

namespace {
char g_point[128];
std::atomic<long> g_remaining{1};

void arm_from_env() noexcept {
    const char* env = std::getenv("FABRIC_SHM_CRASH_POINT");
    g_crash_armed = false;
    if (!env || !*env) return;
    std::strncpy(g_point, env, sizeof g_point - 1);
    g_point[sizeof g_point - 1] = '\0';
    long nth = 1;
    if (char* colon = std::strrchr(g_point, ':')) {
        nth = std::strtol(colon + 1, nullptr, 10);
        *colon = '\0';
        if (nth < 1) nth = 1;
    }
    g_remaining.store(nth, std::memory_order_relaxed);
    g_crash_armed = true;
}

// Runs before main in every process that loads the library.
[[maybe_unused]] const bool g_armed_at_load = (arm_from_env(), true);
}  // namespace

void crash_point_rearm() noexcept { arm_from_env(); }

void crash_point_hit(const char* name) noexcept {
    if (std::strcmp(name, g_point) != 0) return;
    if (g_remaining.fetch_sub(1, std::memory_order_relaxed) != 1) return;
    // SIGKILL, not abort(): nothing may run after the crash point (no atexit, no unwinding).
    kill(getpid(), SIGKILL);
    _exit(137);
}

}  // namespace fabric_shm::detail
