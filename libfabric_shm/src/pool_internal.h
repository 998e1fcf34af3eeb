// SPDX-License-Identifier: MIT
// What the pool's source files share: pool.cpp (the handle), pool_open.cpp (create, attach,
// validate, remove), region_directory.cpp (regions and their reclamation), pool_leases.cpp
// and reaper.cpp. Not for the rest of the library, which goes through pool_impl.h.
#pragma once

#include "private.h"

#include <cstdint>
#include <string>

#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"

namespace fabric_shm::detail {

/// Segments are /dev/shm (or $FABRIC_SHM_DIR) + "/fabric-shm." + pool name.
inline constexpr const char* kSegmentPrefix = "fabric-shm.";
/// The directory of pool segments: $FABRIC_SHM_DIR, default /dev/shm.
std::string shm_dir();

/// The generation after `gen` (entry and slot generations skip 0, which means "never used").
inline uint32_t next_gen(uint32_t gen) {
    gen = (gen + 1) & layout::kSlotGenMask;
    return gen == 0 ? 1 : gen;
}
/// "creating", "live", "reclaiming" or "free": a directory entry's state for reports.
const char* entry_state_name(uint64_t state);

/// A lease header copied out (expiry with acquire: pairs with renew_lease's release).
LeaseInfo lease_info_of(const layout::LeaseHeader& l);
/// Initialises a lease header nobody else can see yet (a new pool or a CREATING entry).
void init_lease(layout::LeaseHeader& l, uint64_t id, uint64_t now, uint64_t ttl, OwnerToken me);
/// Revokes the lease of the region of generation `gen` (its directory entry's): a CAS from
/// (ACTIVE, gen), so a lease of another generation (the entry was reclaimed and reused) stays
/// as it is. False when it was not (or no longer) that generation's active lease.
bool revoke_lease(layout::LeaseHeader& l, uint32_t gen) noexcept;

/// Unlinks `path` only if it still names the file open as `fd` (never a pool re-created under
/// the name meanwhile), under an exclusive lock of that file. 0: the name no longer names that
/// file. EAGAIN: it still does, another process (maybe paused) holding the lock to unlink it.
/// Another errno: the open, lock or unlink failed so (EACCES: no write access to the file,
/// EPERM: a sticky directory of another owner, ...).
int unlink_name_if_file(const std::string& path, int fd);
/// unlink_name_if_file for the pool's name and mapping.
bool unlink_if_same(const Pool::Impl& impl);
/// Whether this process may unlink the name `path` of pool `name`, whose file is open as `fd`:
/// write and search access to the directory, and in a sticky directory (/dev/shm is one) the
/// file's or the directory's owner, or CAP_FOWNER. Asked before a removal marks the pool: a mark
/// it cannot follow with the unlink would end the pool for its holders while its name stays.
/// permission_denied naming both owners, or the errno of a failed stat.
Status may_unlink_name(const std::string& name, const std::string& path, int fd);

/// How much of the pool a reap pass looks at. `full`: everything (Pool::reap, the reaper).
/// `on_open`: the same, but the region hooks that walk a whole region (RegionKindOps::scans)
/// only when a registration ended since a pass ran them all (PoolHeader::registrations_ended
/// and scanned_through), so that opening a pool costs no walk of every topic slot and stored
/// object while nothing died.
enum class ReapScope : uint8_t { full, on_open };
/// Pool::reap's pass (reaper.cpp).
ReapReport reap_pass(Pool& pool, MonoTime now, bool dry_run, bool allow_pool_removal, ReapScope scope);

/// What one reap (or one remove_region) is doing, for try_reclaim.
struct ReclaimContext {
    Pool* pool;
    Pool::Impl* impl;
    uint64_t now;
    bool dry_run;
    ReapReport* report;
};
/// Live processes (by pid: a paused one counts) whose attach bit for entry `index` is set.
uint32_t attached_live_processes(const Pool::Impl& impl, uint32_t index, uint64_t now);
/// LIVE/stuck entry -> RECLAIMING(me) -> (no live attachment, still due) FREE(g+1).
void try_reclaim(ReclaimContext& ctx, uint32_t index, uint64_t w, const std::string& why);
/// RECLAIMING word `w` of `e`, left by a reclaimer that is certainly dead (by pid: a stopped
/// one is waited for) -> LIVE, as a reap pass repairs it (the next judgement starts from
/// LIVE). What a holder or renewer does when it finds its live region marked: without it,
/// it would be told to retry until some process ran a reap. True when this call put it back
/// to LIVE (never on a read-only pool).
bool unmark_dead_reclaim(const Pool& pool, layout::RegionEntry& e, uint64_t w);

}  // namespace fabric_shm::detail
