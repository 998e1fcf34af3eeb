// SPDX-License-Identifier: MIT
// Shared by the crash torture and the soak: a seeded generator, deterministic object
// contents, and a measurement of the object store's heap against its live objects.
#pragma once

#include <cstdint>
#include <string>

#include "fabric_shm/pool.h"

namespace fabric_shm::torture {

/// xorshift64*: small, seeded, the same sequence on every build.
class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed ? seed : 0x9E3779B97F4A7C15ull) {}
    uint64_t next() {
        s_ ^= s_ >> 12;
        s_ ^= s_ << 25;
        s_ ^= s_ >> 27;
        return s_ * 0x2545F4914F6CDD1Dull;
    }
    uint64_t below(uint64_t n) { return n ? next() % n : 0; }

private:
    uint64_t s_;
};

/// Object sizes: 5 % empty, 70 % up to 4 KiB, 20 % up to 16 KiB (small size classes),
/// 5 % up to 160 KiB (runs of superblocks).
uint64_t pick_size(Rng& rng);
/// The bytes of `key` at step `variant`: lower-case text derived from both (so a wrong
/// object, a torn copy or a stale version never compares equal).
std::string content(const std::string& key, int variant, uint64_t size);

/// The store's heap measured from the inside (the store's own table and block words).
struct Space {
    uint64_t objects = 0;           ///< readable objects found through the table
    uint64_t live_block_bytes = 0;  ///< sum of their blocks' capacities
    uint64_t payload_bytes = 0;     ///< sum of their payload sizes
    uint64_t used_bytes = 0;        ///< every block not FREE (StoreCore::usage)
    uint64_t largest_free_extent = 0, capacity_bytes = 0;
    uint64_t loans = 0, pins = 0;
    uint64_t overflow_counts = 0;   ///< sum of the table's bucket overflow counts (the store has no tombstones)
    uint64_t superblocks_small = 0, superblocks_run = 0, superblocks_free = 0;
    std::string error;              ///< non-empty when the store could not be bound
};
Space measure_space(const Pool& pool, const std::string& store_name = "default");

/// Private anonymous memory of a process in KiB ("Anonymous:" of /proc/PID/smaps_rollup:
/// heap, stacks, private mappings; never the pool's shared pages). -1 when unreadable.
long anonymous_kib(int pid);

}  // namespace fabric_shm::torture
