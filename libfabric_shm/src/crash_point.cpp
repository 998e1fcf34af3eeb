// SPDX-License-Identifier: MIT
// Named fault points (crash_point.h): arming from the environment, SIGKILL / SIGSTOP at a hit.
#include "crash_point.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fabric_shm::detail {

std::atomic<bool> g_fault_armed{false};

namespace {

/// One "<name>[:n]" arming: fires at the n-th hit of `name`, once.
struct NamedArming {
    char name[128] = {};
    std::atomic<long> remaining{0};  ///< hits left until it fires; 0 = disarmed

    void parse(const char* env) noexcept {
        remaining.store(0, std::memory_order_relaxed);
        name[0] = '\0';
        if (!env || !*env) return;
        std::strncpy(name, env, sizeof name - 1);
        name[sizeof name - 1] = '\0';
        long nth = 1;
        if (char* colon = std::strrchr(name, ':')) {
            nth = std::strtol(colon + 1, nullptr, 10);
            *colon = '\0';
            if (nth < 1) nth = 1;
        }
        remaining.store(nth, std::memory_order_relaxed);
    }
    bool armed() const noexcept { return remaining.load(std::memory_order_relaxed) > 0; }
    /// True exactly once: at the n-th hit of this name (a counter shared by every thread).
    bool fires(const char* hit) noexcept {
        if (!armed() || std::strcmp(hit, name) != 0) return false;
        return remaining.fetch_sub(1, std::memory_order_relaxed) == 1;
    }
};

NamedArming g_crash;
NamedArming g_pause;
std::atomic<uint32_t> g_random_ppm{0};     ///< random self-stops per million hits
std::atomic<uint64_t> g_random_state{0};   ///< xorshift state (racy across threads: any value will do)
char g_pause_log[256];
std::atomic<PauseHook> g_hook{nullptr};

uint64_t next_random() noexcept {
    uint64_t x = g_random_state.load(std::memory_order_relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    g_random_state.store(x, std::memory_order_relaxed);
    return x;
}

void refresh_armed() noexcept {
    const bool any = g_crash.armed() || g_pause.armed() || g_random_ppm.load(std::memory_order_relaxed) != 0 ||
                     g_hook.load(std::memory_order_relaxed) != nullptr;
    g_fault_armed.store(any, std::memory_order_relaxed);
}

void arm_from_env() noexcept {
    g_crash.parse(std::getenv("FABRIC_SHM_CRASH_POINT"));
    g_pause.parse(std::getenv("FABRIC_SHM_PAUSE_POINT"));
    g_random_ppm.store(0, std::memory_order_relaxed);
    if (const char* r = std::getenv("FABRIC_SHM_PAUSE_RANDOM"); r && *r) {
        char* end = nullptr;
        const unsigned long ppm = std::strtoul(r, &end, 10);
        uint64_t seed = uint64_t(getpid()) * 0x9e3779b97f4a7c15ULL;
        if (end && *end == ':') seed ^= std::strtoull(end + 1, nullptr, 10);
        g_random_state.store(seed | 1, std::memory_order_relaxed);
        g_random_ppm.store(uint32_t(ppm > 1'000'000 ? 1'000'000 : ppm), std::memory_order_relaxed);
    }
    g_pause_log[0] = '\0';
    if (const char* log = std::getenv("FABRIC_SHM_PAUSE_LOG"); log && *log) {
        std::strncpy(g_pause_log, log, sizeof g_pause_log - 1);
        g_pause_log[sizeof g_pause_log - 1] = '\0';
    }
    refresh_armed();
}

/// Stops this process (every thread) until someone sends SIGCONT. The log line is one
/// O_APPEND write, so lines of several processes never interleave.
void stop_self(const char* name) noexcept {
    if (g_pause_log[0] != '\0') {
        const int fd = ::open(g_pause_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
            char line[192];
            const int n = std::snprintf(line, sizeof line, "%d %s\n", int(getpid()), name);
            if (n > 0) (void)!::write(fd, line, size_t(n) < sizeof line ? size_t(n) : sizeof line - 1);
            ::close(fd);
        }
    }
    ::kill(getpid(), SIGSTOP);
}

// Runs before main in every process that loads the library.
[[maybe_unused]] const bool g_armed_at_load = (arm_from_env(), true);

}  // namespace

void crash_point_rearm() noexcept { arm_from_env(); }

void set_pause_hook(PauseHook hook) noexcept {
    g_hook.store(hook, std::memory_order_relaxed);
    refresh_armed();
}

void fault_point_hit(const char* name) noexcept {
    if (g_crash.fires(name)) {
        // SIGKILL, not abort(): nothing may run after the crash point (no atexit, no unwinding).
        ::kill(getpid(), SIGKILL);
        _exit(137);
    }
    if (PauseHook hook = g_hook.load(std::memory_order_relaxed)) hook(name);
    if (g_pause.fires(name)) stop_self(name);
    const uint32_t ppm = g_random_ppm.load(std::memory_order_relaxed);
    if (ppm != 0 && next_random() % 1'000'000 < ppm) stop_self(name);
}

}  // namespace fabric_shm::detail
