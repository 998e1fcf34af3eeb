// SPDX-License-Identifier: MIT
#include "fork_generation.h"

#include <pthread.h>

namespace fabric_shm::detail {

std::atomic<uint32_t> g_fork_generation{0};

namespace {
void count_fork_in_child() noexcept { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }

/// Registered when the library is loaded, before any handle can exist. pthread_atfork fails
/// only without memory for the handler's entry: then every handle would count as its maker's,
/// which is how the library behaved before the count existed.
[[maybe_unused]] const int g_registered = pthread_atfork(nullptr, nullptr, &count_fork_in_child);
}  // namespace

}  // namespace fabric_shm::detail
