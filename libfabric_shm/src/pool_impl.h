// SPDX-License-Identifier: MIT
// Pool internals shared by the pool's files (pool_internal.h), registry.cpp, lease.cpp, counters.cpp
// and every data structure in a region.
#pragma once

#include "private.h"

#include <atomic>
#include <memory>
#include <string>

#include "fabric_shm/counters.h"
#include "fabric_shm/pool.h"
#include "fork_generation.h"
#include "layout/fingerprint.h"
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
    /// Set once by Pool::close() (any copy); read before each call touches the mapping.
    /// Relaxed both ways: it orders nothing else, and a call racing the close may go either way.
    std::atomic<bool> closed{false};
    /// detail::fork_generation() of the process that opened the pool: a forked child using
    /// the handle it inherited shares its parent's registry slot but not its local_attach
    /// counts, so it clears no attach bit (detach_bit).
    uint32_t opened_in = detail::fork_generation();

    Impl() = default;
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;
    /// The last handle, object or view is gone: retires the registration, unmaps, closes the fd.
    ~Impl();

    layout::PoolHeader* header() const { return reinterpret_cast<layout::PoolHeader*>(base); }
    layout::ProcessSlot* slots() const {
        return reinterpret_cast<layout::ProcessSlot*>(base + layout::kRegistryOffset);
    }
    layout::RegionEntry* entries() const {
        return reinterpret_cast<layout::RegionEntry*>(base + layout::kDirectoryOffset);
    }
    layout::ProcessSlot* my_slot() const { return self ? &slots()[self_slot] : nullptr; }
    /// Bounds check against the mapping (overflow-safe); every offset read from shm goes here.
    bool in_bounds(uint64_t offset, uint64_t length) const noexcept;
};

namespace detail {

/// The bytes create_region reserves for a region of `length` bytes: whole pages (regions are
/// page-aligned, and no page holds two). MemObjectStore::plan reports a store's with it. A
/// length within a page of 2^64 gives the largest whole number of pages, never a rounding that
/// wraps to 0 (which would pass any "does it fit" check).
constexpr uint64_t region_reserved_bytes(uint64_t length) noexcept {
    constexpr uint64_t kPageMask = layout::kPageSize - 1;
    return length > UINT64_MAX - kPageMask ? UINT64_MAX & ~kPageMask : (length + kPageMask) & ~kPageMask;
}

/// The library's access to what the public Pool and Region keep opaque.
struct PoolAccess {
    static Pool::Impl& impl(const Pool& pool) noexcept { return *pool.impl_; }
    static layout::RegionEntry& entry(const Region& region) noexcept {
        return impl(region.pool_).entries()[region.ref_.index];
    }
};

/// Region::check's passing case, from pointers resolved once. Region::check builds one per call;
/// a sender keeps one per partition next to the partition's geometry, so that its first send
/// after a wait (whose kernel entry dropped the TLB: docs/benchmarks.md, "Where the light-load
/// time goes") reaches the flag, the pool header and the entry without walking the handle chain
/// (topic handle, region vector, Region, Pool::Impl). Valid while the Region's pool handle
/// lives: close() only sets the flag, the mapping stays until the last handle is gone.
struct LeaseGate {
    const std::atomic<bool>* closed = nullptr;
    const std::atomic<uint64_t>* lifecycle = nullptr;
    const layout::RegionEntry* entry = nullptr;
    uint32_t generation = 0;

    /// `region` must be valid (a pool handle).
    static LeaseGate of(const Region& region) noexcept {
        const Pool::Impl& impl = PoolAccess::impl(region.pool());
        return LeaseGate{&impl.closed, &impl.header()->lifecycle, &PoolAccess::entry(region), region.ref().generation};
    }
    /// Whether the pool is open and live and the region is this generation, live (or being
    /// created) and leased until after `now_ns` (monotonic). False: Region::check_failed says
    /// which test failed. The orderings are check_failed's, where each is explained.
    bool passes(uint64_t now_ns) const noexcept {
        if (closed->load(std::memory_order_relaxed)) return false;
        if (layout::lifecycle_state(lifecycle->load(std::memory_order_acquire)) != layout::kPoolLive) return false;
        const uint64_t w = entry->word.load(std::memory_order_acquire);
        return layout::entry_word_gen(w) == generation &&
               (layout::entry_word_state(w) == layout::kEntryLive || layout::entry_word_state(w) == layout::kEntryCreating) &&
               layout::lease_active(entry->lease.state.load(std::memory_order_acquire)) &&
               now_ns < entry->lease.expires_ns.load(std::memory_order_acquire);
    }
};

/// `region`'s check at `now_ns` (CLOCK_MONOTONIC_COARSE) through `gate`, made from it: the
/// gate's loads when it passes, else Region::check, which names the test that failed (or
/// passes: renewed in between). A gate not made yet (no entry) always asks the Region.
inline Status check_through(const LeaseGate& gate, const Region& region, uint64_t now_ns) {
    if (gate.entry && gate.passes(now_ns)) [[likely]]
        return {};
    return region.check(MonoClock::from_ns(now_ns));
}

inline std::byte* pool_base(const Pool& pool) noexcept { return PoolAccess::impl(pool).base; }
inline layout::PoolHeader& pool_header(const Pool& pool) noexcept { return *PoolAccess::impl(pool).header(); }
inline bool pool_in_bounds(const Pool& pool, uint64_t offset, uint64_t length) noexcept {
    return PoolAccess::impl(pool).in_bounds(offset, length);
}
/// Whether a region's extent, as a directory entry gives it (shared memory: untrusted; through
/// Pool::regions or the reaper's walk), is one Pool::open_region would accept: in the data
/// area, not empty, inside the mapping, and on a page. The structures a region holds are
/// aligned to its start (a topic header to a page): a hook that reads a region through its
/// RegionInfo asks this first, or a corrupt offset becomes a misaligned atomic access.
inline bool region_extent_ok(const Pool& pool, uint64_t offset, uint64_t length) noexcept {
    return offset >= layout::kDataOffset && offset % layout::kPageSize == 0 && length != 0 &&
           pool_in_bounds(pool, offset, length);
}
/// The object of type T at `offset`, or nullptr when it is not inside the mapping or misaligned.
template <class T>
T* pool_at(const Pool& pool, uint64_t offset) noexcept {
    return pool_in_bounds(pool, offset, sizeof(T)) && offset % alignof(T) == 0
               ? reinterpret_cast<T*>(pool_base(pool) + offset)
               : nullptr;
}
/// The error every call on a closed pool returns.
Error closed_error(const Pool& pool);
/// The region's directory entry.
inline layout::RegionEntry& region_entry(const Region& region) noexcept { return PoolAccess::entry(region); }
/// Adds to this process's counter shard (nothing when read-only).
void count(const Pool& pool, CounterId id, uint64_t n) noexcept;
/// Two counters at once (a call's count and its bytes): one shard lookup for both.
void count(const Pool& pool, CounterId a, uint64_t na, CounterId b, uint64_t nb) noexcept;

/// Claims a registry slot for this process; returns its token (0 when the registry is full).
Result<OwnerToken> registry_register(Pool::Impl& impl, uint64_t heartbeat_timeout_ns, uint64_t now_ns);
/// Frees this process's own slot (on Pool destruction).
void registry_unregister(Pool::Impl& impl) noexcept;
/// Whether the slot `slot` (word `word`, acquired by the caller, in any state) belongs to a
/// process that is certainly dead. LIVE: pid gone, reused or zombie, or heartbeat past its
/// declared timeout. CLAIMING: the claimant's pid gone or zombie, nothing else (its fields may
/// still be unwritten); probed only when the claimant is known to share our pid namespace,
/// which `header` (the pool creator's namespace) helps to tell. A paused process is never
/// certainly dead by pid.
Liveness slot_liveness(const layout::PoolHeader* header, const layout::ProcessSlot& slot, uint64_t word,
                       uint64_t now_ns, std::string* reason);
/// The same without the pool header: a claimant that has not yet recorded its pid namespace
/// counts as maybe alive.
Liveness slot_liveness(const layout::ProcessSlot& slot, uint64_t word, uint64_t now_ns, std::string* reason);
/// Whether the process of the slot may still run (whatever its heartbeat): certainly dead only
/// by pid (gone, reused, zombie) or when the registration was retired. What a stopped process
/// can still touch with plain memory accesses (store loans, pinned views) is judged by this.
Liveness slot_process_liveness(const layout::PoolHeader* header, const layout::ProcessSlot& slot, uint64_t word,
                               uint64_t now_ns, std::string* reason);
std::string load_fixed_string(const std::atomic<uint64_t>* words, size_t n_words);
void store_fixed_string(std::atomic<uint64_t>* words, size_t n_words, std::string_view s);
}  // namespace detail

}  // namespace fabric_shm
