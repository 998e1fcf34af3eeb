// SPDX-License-Identifier: MIT
// Raw futexes: the only blocking primitive here. Shared futexes (FUTEX_WAIT/FUTEX_WAKE without
// _PRIVATE) for words in the pool, which other processes wake; private ones for a process's own
// control words. std::atomic::wait uses private futexes in libstdc++ 12 and hangs across
// processes.
#pragma once

#include "private.h"

#include <atomic>
#include <cstdint>
#include <span>

namespace fabric_shm::detail {

/// Sleeps while *word == expected, at most timeout_ns (0 = no timeout). Spurious wakeups
/// happen: callers re-check their condition. Returns false on timeout.
bool futex_wait(std::atomic<uint32_t>& word, uint32_t expected, uint64_t timeout_ns) noexcept;
/// Wakes up to n waiters (INT32_MAX = all). Returns how many were woken.
int futex_wake(std::atomic<uint32_t>& word, int n) noexcept;
/// The same for a word only this process waits on (FUTEX_PRIVATE_FLAG: no inode lookup).
int futex_wake_private(std::atomic<uint32_t>& word, int n) noexcept;

/// One word of a multi-word wait.
struct FutexWaitItem {
    std::atomic<uint32_t>* word = nullptr;
    uint32_t expected = 0;
    bool shared = true;  ///< false: a private word of this process (FUTEX_PRIVATE_FLAG)
};
enum class FutexWaitStatus : uint8_t {
    changed,      ///< woken, or a word already differed from its expected value (re-check)
    timed_out,
    interrupted,  ///< a signal handler ran (EINTR): the caller may check its signal flags
};
/// Sleeps until one of the words is woken or differs from its expected value, the timeout
/// (0 = none) passes, or a signal arrives. Linux >= 5.16: one futex_waitv call on every word
/// (at most 128). Older kernels (ENOSYS, detected once): FUTEX_WAIT when there is one word;
/// with several, FUTEX_WAIT on the first in slices of kFutexFallbackSliceNs, comparing the
/// others between slices (correct, but later to notice the others and costlier when idle).
FutexWaitStatus futex_wait_any(std::span<const FutexWaitItem> items, uint64_t timeout_ns) noexcept;
constexpr uint64_t kFutexFallbackSliceNs = 1'000'000;
constexpr size_t kFutexWaitvMax = 128;  ///< the kernel's FUTEX_WAITV_MAX

/// Whether futex_wait_any uses futex_waitv (false before the first multi-word wait has probed it).
bool futex_waitv_in_use() noexcept;
/// Tests: forces the older-kernel path (true) or restores detection (false).
void futex_force_fallback(bool force) noexcept;

/// Process-wide counts of futex_wake/futex_wake_private calls and of the waiters they woke
/// (relaxed; for tests and benchmarks: "no wake syscall on a send nobody waits for").
uint64_t futex_wake_calls() noexcept;
uint64_t futex_woken() noexcept;

static_assert(sizeof(std::atomic<uint32_t>) == 4 && std::atomic<uint32_t>::is_always_lock_free,
              "a shared futex word is a plain lock-free 32-bit word the kernel reads");

}  // namespace fabric_shm::detail
