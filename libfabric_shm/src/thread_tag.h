// SPDX-License-Identifier: MIT
// A tag per thread for the words of the pool's locks. Threads of one process share its
// OwnerToken, so a lock word is (thread_tag() | token): a thread compares the word with its own
// to know that it holds the lock (and takes over a word of its own without waiting), while
// liveness is asked of the token alone. Two threads with one tag would each think they hold
// the other's lock. Private to the library.
#pragma once

#include "private.h"

#include <atomic>
#include <cstdint>

namespace fabric_shm::detail {

/// This thread's tag in the high half of a lock word: never 0, and no two threads of the
/// process share one (until 2^32 threads were created, when the counter wraps).
inline uint64_t thread_tag() noexcept {
    static std::atomic<uint32_t> next{1};
    thread_local uint32_t tag = 0;  // plain data: no initialisation guard on the lock paths
    // relaxed: the counter only hands out distinct numbers. 0 is skipped after a wrap.
    while (tag == 0) tag = next.fetch_add(1, std::memory_order_relaxed);
    return uint64_t(tag) << 32;
}

}  // namespace fabric_shm::detail
