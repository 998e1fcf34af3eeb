// SPDX-License-Identifier: MIT
// Which process made a handle, told without a system call: the number of fork()s between the
// process that loaded the library and this one, raised in each child by a pthread_atfork
// handler. A handle records it when it is made. Dropped in a forked child (the number
// differs), a handle writes nothing into shared memory: the pin, loan, attach bit, shard or
// membership it names is its parent's, which still runs and relies on it. getpid() would tell
// the same at the cost of a system call, on paths that run once per message (a view's unpin,
// a loan's release). Private to the library.
#pragma once

#include "private.h"

#include <atomic>
#include <cstdint>

namespace fabric_shm::detail {

/// Process-local (never in shared memory). Written only by the atfork child handler, which
/// runs in the child's only thread before fork() returns there: relaxed on both sides.
extern std::atomic<uint32_t> g_fork_generation;

inline uint32_t fork_generation() noexcept { return g_fork_generation.load(std::memory_order_relaxed); }

}  // namespace fabric_shm::detail
