// SPDX-License-Identifier: MIT
// Raises a shared 64-bit word to at least a value, never lowers it: a CAS loop from the value
// last seen, ending as soon as the word is already that high. For words that only move forward
// (a maximum, an instant): a writer paused before its store cannot take the word back to an
// older value another writer has passed. Plain unsigned order: not for sequence numbers that
// may wrap (raise_head compares by difference).
#pragma once

#include "private.h"

#include <atomic>
#include <cstdint>

namespace fabric_shm::detail {

/// `order` is the successful CAS's ordering; what the caller publishes with the raise.
inline void fetch_max(std::atomic<uint64_t>& word, uint64_t value,
                      std::memory_order order = std::memory_order_relaxed) noexcept {
    uint64_t seen = word.load(std::memory_order_relaxed);
    while (seen < value && !word.compare_exchange_weak(seen, value, order, std::memory_order_relaxed)) {
    }
}

}  // namespace fabric_shm::detail
