// SPDX-License-Identifier: MIT
// Hooks a data structure registers for its region kind: the reaper (Pool::reap) and
// fabric-shm-dump --check call them. Each module registers its own kinds when the library is
// loaded (a RegionKindRegistration at namespace scope in its .cpp); the pool layer only looks
// them up, it never calls into the modules above it.
#pragma once

#include "private.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fabric_shm/pool.h"

namespace fabric_shm {

/// What a reap hook did.
struct RegionReapResult {
    uint64_t items = 0;    ///< released (dry run: found)
    bool complete = true;  ///< false: it left something it could not finish now (a lock held past its wait)
};

struct RegionKindOps {
    /// Release what dead owners left inside a live region (loans, pins, slot claims).
    std::function<RegionReapResult(const Pool&, const RegionInfo&, uint64_t now_ns, bool dry_run,
                                   std::vector<std::string>& notes)> reap;
    /// Append invariant violations ("violation: ...") and in-progress states ("in progress: ...").
    std::function<void(const Pool&, const RegionInfo&, std::vector<std::string>& violations,
                       std::vector<std::string>& in_progress)> check;
    /// The reap hook walks its whole region (every slot, block or object: its cost grows with
    /// the region). An open's reap runs it only when a registration ended since the last pass
    /// that ran every such hook to completion (PoolHeader::registrations_ended,
    /// scanned_through), or while a registry slot is RETIRING; a full reap (Pool::reap,
    /// fabric-shm-reaper) always runs it.
    bool scans = false;
};
/// A reap hook made from a function that always finishes its walk and returns its count.
template <uint64_t (*Reap)(const Pool&, const RegionInfo&, uint64_t, bool, std::vector<std::string>&)>
RegionReapResult always_complete(const Pool& pool, const RegionInfo& info, uint64_t now_ns, bool dry_run,
                                 std::vector<std::string>& notes) {
    return {Reap(pool, info, now_ns, dry_run, notes), true};
}

void register_region_kind_ops(RegionKind kind, RegionKindOps ops);
/// nullptr when no module registered the kind.
const RegionKindOps* region_kind_ops(uint32_t kind);

namespace detail {
/// `static const RegionKindRegistration x(kind, ops);` in a module's .cpp registers its hooks
/// when the library is loaded (static initialisation; link static builds with link_whole).
struct RegionKindRegistration {
    RegionKindRegistration(RegionKind kind, RegionKindOps ops) { register_region_kind_ops(kind, std::move(ops)); }
};
}  // namespace detail

}  // namespace fabric_shm
