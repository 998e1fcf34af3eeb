// SPDX-License-Identifier: MIT
// Raw shared futexes (FUTEX_WAIT/FUTEX_WAKE without _PRIVATE): the only cross-process
// blocking primitive here. std::atomic::wait uses private futexes in libstdc++ 12 and hangs
// across processes.
#pragma once

#include <atomic>
#include <cstdint>

namespace fabric_shm::detail {

/// Sleeps while *word == expected, at most timeout_ns (0 = no timeout). Spurious wakeups
/// happen: callers re-check their condition. Returns false on timeout.
bool futex_wait(std::atomic<uint32_t>& word, uint32_t expected, uint64_t timeout_ns) noexcept;
/// Wakes up to n waiters (INT32_MAX = all). Returns how many were woken.
int futex_wake(std::atomic<uint32_t>& word, int n) noexcept;

static_assert(sizeof(std::atomic<uint32_t>) == 4 && std::atomic<uint32_t>::is_always_lock_free);

}  // namespace fabric_shm::detail
