// SPDX-License-Identifier: MIT
#include "futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449  // same number on every architecture (asm-generic)
#endif

namespace fabric_shm::detail {

namespace {

/// The kernel's struct futex_waitv (linux/futex.h since 5.16), spelled out so that older
/// headers build too.
struct WaitvEntry {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};
static_assert(sizeof(WaitvEntry) == 24, "the kernel's struct futex_waitv is 24 bytes");
constexpr uint32_t kWaitvSize32 = 2;       // FUTEX_32
constexpr uint32_t kWaitvPrivate = 128;    // FUTEX_PRIVATE_FLAG

/// 0 = not probed, 1 = futex_waitv works, 2 = fall back (ENOSYS, or refused by a seccomp filter).
std::atomic<int> g_waitv_state{0};
std::atomic<bool> g_force_fallback{false};
std::atomic<uint64_t> g_wake_calls{0};
std::atomic<uint64_t> g_woken{0};

timespec relative(uint64_t ns) {
    return timespec{time_t(ns / 1'000'000'000), long(ns % 1'000'000'000)};
}

uint64_t mono_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000 + uint64_t(ts.tv_nsec);
}

/// FUTEX_WAIT on one item; the status as futex_wait_any reports it.
FutexWaitStatus wait_one(const FutexWaitItem& it, uint64_t timeout_ns) {
    timespec ts = relative(timeout_ns);
    const int op = it.shared ? FUTEX_WAIT : (FUTEX_WAIT | FUTEX_PRIVATE_FLAG);
    const long rc = syscall(SYS_futex, reinterpret_cast<uint32_t*>(it.word), op, it.expected,
                            timeout_ns ? &ts : nullptr, nullptr, 0);
    if (rc == -1 && errno == ETIMEDOUT) return FutexWaitStatus::timed_out;
    if (rc == -1 && errno == EINTR) return FutexWaitStatus::interrupted;
    return FutexWaitStatus::changed;
}

int wake(std::atomic<uint32_t>& word, int n, bool shared) {
    const int op = shared ? FUTEX_WAKE : (FUTEX_WAKE | FUTEX_PRIVATE_FLAG);
    const long rc = syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), op, n, nullptr, nullptr, 0);
    g_wake_calls.fetch_add(1, std::memory_order_relaxed);
    if (rc > 0) g_woken.fetch_add(uint64_t(rc), std::memory_order_relaxed);
    return rc < 0 ? 0 : int(rc);
}

bool any_changed(std::span<const FutexWaitItem> items) {
    for (const FutexWaitItem& it : items)
        if (it.word->load(std::memory_order_acquire) != it.expected) return true;  // pairs with the waker's bump
    return false;
}

/// Kernels without futex_waitv: sleep on the first word in short slices, compare the others.
FutexWaitStatus wait_sliced(std::span<const FutexWaitItem> items, uint64_t timeout_ns) {
    const uint64_t start = timeout_ns ? mono_ns() : 0;
    for (;;) {
        if (any_changed(items)) return FutexWaitStatus::changed;
        uint64_t slice = kFutexFallbackSliceNs;
        if (timeout_ns) {
            const uint64_t spent = mono_ns() - start;
            if (spent >= timeout_ns) return FutexWaitStatus::timed_out;
            slice = std::min(slice, timeout_ns - spent);
        }
        const FutexWaitStatus st = wait_one(items[0], slice);
        if (st != FutexWaitStatus::timed_out) return st;
    }
}

}  // namespace

bool futex_wait(std::atomic<uint32_t>& word, uint32_t expected, uint64_t timeout_ns) noexcept {
    // Shared futex (no FUTEX_PRIVATE_FLAG): the word lives in a MAP_SHARED mapping and the
    // kernel keys it by (inode, offset), so waiters in other processes are found.
    return wait_one(FutexWaitItem{&word, expected, true}, timeout_ns) != FutexWaitStatus::timed_out;
}

int futex_wake(std::atomic<uint32_t>& word, int n) noexcept { return wake(word, n, true); }
int futex_wake_private(std::atomic<uint32_t>& word, int n) noexcept { return wake(word, n, false); }

FutexWaitStatus futex_wait_any(std::span<const FutexWaitItem> items, uint64_t timeout_ns) noexcept {
    if (items.empty()) {
        timespec ts = relative(timeout_ns ? timeout_ns : kFutexFallbackSliceNs);
        return nanosleep(&ts, nullptr) == 0 ? FutexWaitStatus::timed_out : FutexWaitStatus::interrupted;
    }
    if (items.size() == 1) return wait_one(items[0], timeout_ns);
    if (items.size() > kFutexWaitvMax || g_force_fallback.load(std::memory_order_relaxed) ||
        g_waitv_state.load(std::memory_order_relaxed) == 2)
        return wait_sliced(items, timeout_ns);
    WaitvEntry v[kFutexWaitvMax];
    for (size_t i = 0; i < items.size(); ++i)
        v[i] = WaitvEntry{items[i].expected, uint64_t(reinterpret_cast<uintptr_t>(items[i].word)),
                          kWaitvSize32 | (items[i].shared ? 0u : kWaitvPrivate), 0};
    timespec deadline{};
    if (timeout_ns) {
        const uint64_t at = mono_ns() + timeout_ns;  // futex_waitv takes an absolute time
        deadline = relative(at);
    }
    const long rc = syscall(SYS_futex_waitv, v, unsigned(items.size()), 0u, timeout_ns ? &deadline : nullptr,
                            CLOCK_MONOTONIC);
    if (rc >= 0) {
        g_waitv_state.store(1, std::memory_order_relaxed);
        return FutexWaitStatus::changed;
    }
    switch (errno) {
        case ETIMEDOUT: return FutexWaitStatus::timed_out;
        case EINTR: return FutexWaitStatus::interrupted;
        case EAGAIN: return FutexWaitStatus::changed;  // a word already differed
        case ENOSYS:
        case EPERM:  // a seccomp filter that does not know the call
            g_waitv_state.store(2, std::memory_order_relaxed);
            return wait_sliced(items, timeout_ns);
        default: return FutexWaitStatus::changed;  // EFAULT/EINVAL cannot happen with our words: re-check
    }
}

bool futex_waitv_in_use() noexcept {
    return !g_force_fallback.load(std::memory_order_relaxed) && g_waitv_state.load(std::memory_order_relaxed) == 1;
}

void futex_force_fallback(bool force) noexcept { g_force_fallback.store(force, std::memory_order_relaxed); }

uint64_t futex_wake_calls() noexcept { return g_wake_calls.load(std::memory_order_relaxed); }
uint64_t futex_woken() noexcept { return g_woken.load(std::memory_order_relaxed); }

}  // namespace fabric_shm::detail
