// SPDX-License-Identifier: MIT
// Pool internals shared by pool.cpp, registry.cpp, lease.cpp and counters.cpp.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"

namespace fabric_shm {

struct Pool::Impl {
    std::string name;
    std::string path;
    int fd = -1;
    std::byte* base = nullptr;
    uint64_t size = 0;
    bool read_only = false;
    OwnerToken self = 0;
    uint32_t self_slot = 0;
    uint32_t self_pid = 0;
    bool created = false;  ///< this handle's Pool::create (or Pool::open with create_if_missing) made the segment
    /// In-process handle counts per directory entry: the attach bit in the registry is set
    /// on 0 -> 1 and cleared on 1 -> 0.
    std::unique_ptr<std::atomic<uint32_t>[]> local_attach;

    layout::PoolHeader* header() const { return reinterpret_cast<layout::PoolHeader*>(base); }
    layout::ProcessSlot* slots() const {
        return reinterpret_cast<layout::ProcessSlot*>(base + layout::kRegistryOffset);
    }
    layout::RegionEntry* entries() const {
        return reinterpret_cast<layout::RegionEntry*>(base + layout::kDirectoryOffset);
    }
    layout::ProcessSlot* my_slot() const { return self ? &slots()[self_slot] : nullptr; }
};

namespace detail {
/// Claims a registry slot for this process; returns its token (0 when the registry is full).
Result<OwnerToken> registry_register(Pool::Impl& impl, uint64_t heartbeat_timeout_ns, uint64_t now_ns);
/// Frees this process's own slot (on Pool destruction).
void registry_unregister(Pool::Impl& impl) noexcept;
/// Whether the slot `slot` (in any state) belongs to a process that is certainly dead.
Liveness slot_liveness(const layout::ProcessSlot& slot, uint64_t word, uint64_t now_ns, std::string* reason);
std::string load_fixed_string(const std::atomic<uint64_t>* words, size_t n_words);
void store_fixed_string(std::atomic<uint64_t>* words, size_t n_words, std::string_view s);
}  // namespace detail

}  // namespace fabric_shm
