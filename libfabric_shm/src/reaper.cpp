// SPDX-License-Identifier: MIT
// The reaper: ends dead processes' registrations, repairs half-made directory entries,
// reclaims expired or orphaned regions nobody live holds, runs each region kind's hook, and
// removes a wholly expired pool. One pass per call; every step is a CAS, so reapers race safely.
#include "fabric_shm/pool.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <optional>

#include "crash_point.h"
#include "fabric_shm/counters.h"
#include "owner_lock.h"
#include "pool_impl.h"
#include "pool_internal.h"
#include "region_kinds.h"

namespace fabric_shm {

using namespace layout;
using detail::lease_info_of;
using detail::next_gen;
using detail::ReclaimContext;
using detail::try_reclaim;
using detail::unlink_if_same;

namespace {
/// How long a removal waits for the directory lock (a creator or remover holds it for
/// microseconds; one held by a stopped process only postpones the removal to a later pass).
constexpr uint64_t kRemovalLockWaitNs = 100'000'000ull;
}  // namespace

namespace detail {

ReapReport reap_pass(Pool& pool, MonoTime now_time, bool dry_run, bool allow_pool_removal, ReapScope scope) {
    const uint64_t now = to_ns(now_time);
    Pool::Impl* const impl = &PoolAccess::impl(pool);
    if (pool.closed()) {
        ReapReport closed_report;
        closed_report.notes.push_back(closed_error(pool).message);
        return closed_report;
    }
    ReapReport report;
    if (impl->read_only || !impl->self) dry_run = true;
    PoolHeader& h = *impl->header();
    if (lifecycle_state(h.lifecycle.load(std::memory_order_acquire)) == kPoolGone) {
        // A remover stores GONE before it unlinks (below): one killed between the two left the
        // name on a removed pool, which nothing else would take away.
        if (!dry_run && allow_pool_removal) unlink_if_same(*impl);
        return report;
    }
    ProcessRegistry reg = pool.registry();
    if (dry_run) {
        for (const ProcessInfo& p : reg.list(now_time))
            if (p.liveness == Liveness::certainly_dead &&
                reg.process_liveness(p.token, now_time) != Liveness::certainly_dead) {
                // Judged by its heartbeat while its pid runs: a reap fences it and frees the
                // slot only once the pid is gone; nothing of it is killed meanwhile.
                report.notes.push_back("would fence registry slot " + std::to_string(p.slot) + " of pid " +
                                       std::to_string(p.pid) + " (" + p.dead_reason +
                                       "; its pid still runs: slot freed once it exits, nothing killed)");
            } else if (p.liveness == Liveness::certainly_dead) {
                report.dead_processes++;
                report.notes.push_back("would free registry slot " + std::to_string(p.slot) + " of pid " +
                                       std::to_string(p.pid) + " (" + p.dead_reason + ")");
                for (uint32_t g : p.child_groups)
                    report.notes.push_back("would kill child process group " + std::to_string(g) + " of pid " +
                                           std::to_string(p.pid) + " (if its leader still runs)");
            }
    } else {
        std::vector<std::string> kills;
        report.dead_processes = reg.reap_dead(now_time, &kills);
        if (report.dead_processes)
            report.notes.push_back("freed " + std::to_string(report.dead_processes) + " registry slot(s) of dead processes");
        for (auto& k : kills) report.notes.push_back(std::move(k));
    }

    // Whether the region hooks that walk a whole region run (RegionKindOps::scans): always in
    // a full pass; in an open's only when a registration ended (counted by whoever ended it,
    // the dead above included) since a pass that ran them all read the count. Read after the
    // dead were retired, before the hooks (seq_cst: pairs with the enders' fetch_add, so the
    // hooks see every counted registration ended).
    const uint64_t ended = h.registrations_ended.load(std::memory_order_seq_cst);
    bool scan = scope == ReapScope::full || ended != h.scanned_through.load(std::memory_order_seq_cst);
    // A slot still RETIRING may have been ended by a retirer killed or stopped before it
    // counted (one nobody takes over: another pid namespace's, or a paused one): its
    // occupant's token judges dead already, so walk while any is seen.
    const ProcessSlot* slots = impl->slots();
    for (uint32_t i = 0; !scan && i < kRegistrySlots; ++i)
        scan = slot_word_state(slots[i].word.load(std::memory_order_seq_cst)) == kSlotRetiring;
    bool walked_all = true;  // no scanning hook left something it could not finish now
    ReclaimContext ctx{&pool, impl, now, dry_run, &report};
    RegionEntry* entries = impl->entries();
    for (uint32_t i = 0; i < kDirectoryEntries; ++i) {
        RegionEntry& e = entries[i];
        uint64_t w = e.word.load(std::memory_order_acquire);
        const uint64_t st = entry_word_state(w);
        if (st == kEntryFree) continue;
        const std::string name = std::string(region_kind_name(e.kind.load(std::memory_order_relaxed))) + " '" +
                                 load_fixed_string(e.name, kRegionNameBytes / 8) + "'";
        if (st == kEntryCreating || st == kEntryReclaiming) {
            std::string reason;
            // By pid only (see create_region): a paused creator or reclaimer writes on resuming.
            if (reg.process_liveness(entry_word_owner(w), now_time, &reason) != Liveness::certainly_dead) continue;
            if (st == kEntryCreating) {
                report.repaired_entries++;
                report.notes.push_back(std::string(dry_run ? "would free" : "freed") + " half-created " + name +
                                       " (creator " + reason + ")");
                if (!dry_run &&
                    e.word.compare_exchange_strong(w, make_entry_word(kEntryFree, next_gen(entry_word_gen(w)), 0),
                                                   std::memory_order_acq_rel))
                    h.repaired_entries.fetch_add(1, std::memory_order_relaxed);
                continue;
            }
            // A reclaimer died mid-way: restart from LIVE so try_reclaim re-checks attachments.
            report.repaired_entries++;
            if (!dry_run) {
                if (!e.word.compare_exchange_strong(w, make_entry_word(kEntryLive, entry_word_gen(w), 0),
                                                    std::memory_order_acq_rel))
                    continue;
                w = make_entry_word(kEntryLive, entry_word_gen(w), 0);
            }
        }
        const LeaseInfo l = lease_info_of(e.lease);
        std::string why;
        if (l.revoked) why = "removed";
        else if (l.expired(now_time)) why = "lease expired";
        else if (const uint64_t parent = e.parent.load(std::memory_order_relaxed); parent) {
            const RegionRef pref = RegionRef::unpack(parent);
            if (pref.index >= kDirectoryEntries) why = "orphan";
            else {
                const uint64_t pw = entries[pref.index].word.load(std::memory_order_acquire);
                const uint64_t ps = entry_word_state(pw);
                if (entry_word_gen(pw) != pref.generation || ps == kEntryFree) why = "orphan";
            }
        }
        if (!why.empty()) {
            try_reclaim(ctx, i, w, why);
            continue;
        }
        if (const RegionKindOps* ops = region_kind_ops(e.kind.load(std::memory_order_relaxed));
            ops && ops->reap && (scan || !ops->scans)) {
            RegionInfo info;
            info.ref = RegionRef{i, entry_word_gen(w)};
            info.kind = e.kind.load(std::memory_order_relaxed);
            info.name = load_fixed_string(e.name, kRegionNameBytes / 8);
            info.offset = e.offset.load(std::memory_order_relaxed);
            info.length = e.length.load(std::memory_order_relaxed);
            if (detail::region_extent_ok(pool, info.offset, info.length)) {
                // Attached while the hook runs: a hook paused mid-walk must not have the region
                // reclaimed and another placed on its extent under its late writes (a reclaim
                // waits for every live holder, this process included).
                // (A dry run's hooks write nothing, and must not hold off a real reclaim.)
                std::optional<Region> held;
                if (!dry_run) {
                    auto opened = pool.open_region(info.ref);
                    if (!opened) continue;  // reclaimed since the checks above, or unusable: nothing to walk
                    held.emplace(std::move(*opened));
                }
                FABRIC_PAUSE_POINT("pool.reap.hook");
                const RegionReapResult r = ops->reap(pool, info, now, dry_run, report.notes);
                report.kind_items += r.items;
                if (ops->scans && !r.complete) walked_all = false;
            }
        }
    }
    if (scan && walked_all && !dry_run) {
        // Every scanning hook walked every region that was live to the end: what registrations
        // counted up to `ended` left is released. Raised, never lowered (a slower pass read less).
        uint64_t through = h.scanned_through.load(std::memory_order_seq_cst);
        while (through < ended &&
               !h.scanned_through.compare_exchange_weak(through, ended, std::memory_order_seq_cst)) {
        }
    }

    // Unlinks the name of the pool this pass marked GONE: removed only once the name is gone.
    // A name that stayed is noted (a later pass, or an opener of the name, unlinks a GONE
    // pool's name).
    auto unlink_marked = [&](const std::string& what) {
        const int err = detail::unlink_name_if_file(impl->path, impl->fd);
        report.pool_removed = err == 0;
        if (err == 0) {
            report.notes.push_back(what);
            return;
        }
        report.notes.push_back(
            what + ", but its name " + impl->path + " could not be unlinked yet (" +
            (err == EAGAIN ? std::string("another process holds it to unlink it") : std::string(std::strerror(err))) +
            ")");
    };
    // Ends a removal whose remover died between its mark and its unlink (or its revert). Its
    // mark says nothing about the leases now: a renewal whose `now` went stale may have landed
    // between that remover's judgement and its mark, reported "renewed" (it saw LIVE), and its
    // holders acknowledged data under it; the remover, killed before it judged again, never
    // put the pool back. So the finisher takes the mark over (seq_cst: the same Dekker pair
    // with renew_lease as a fresh mark), judges every lease again behind a fence, and puts the
    // pool back to LIVE if one is live: a `pool rm` that died mid-way is undone too (it never
    // reported success; run it again). Outside the expiry check below: a pool left marked with
    // a live lease is not wholly expired, and would otherwise stay marked for good.
    auto finish_dead_removal = [&](uint64_t lw) {
        if (lifecycle_state(lw) != kPoolReclaiming ||
            reg.process_liveness(lifecycle_owner(lw), now_time) != Liveness::certainly_dead)
            return;
        if (dry_run) {
            report.notes.push_back("would finish removing pool '" + impl->name +
                                   "' (previous remover died), or keep it if a lease is live");
            return;
        }
        const uint64_t mine = make_lifecycle(kPoolReclaiming, impl->self);
        if (!h.lifecycle.compare_exchange_strong(lw, mine, std::memory_order_seq_cst)) return;
        std::atomic_thread_fence(std::memory_order_seq_cst);
        uint64_t ours = mine;
        if (!pool.wholly_expired(MonoClock::now())) {
            const bool kept =
                h.lifecycle.compare_exchange_strong(ours, make_lifecycle(kPoolLive, 0), std::memory_order_seq_cst);
            report.notes.push_back("pool '" + impl->name + "': its previous remover died while a lease was live; " +
                                   (kept ? "kept" : "another process took the removal over"));
            return;
        }
        if (!h.lifecycle.compare_exchange_strong(ours, make_lifecycle(kPoolGone, impl->self), std::memory_order_acq_rel))
            return;
        unlink_marked("finished removing pool '" + impl->name + "' (previous remover died)");
    };
    if (allow_pool_removal) {
        const uint64_t lw = h.lifecycle.load(std::memory_order_acquire);
        if (lifecycle_state(lw) == kPoolReclaiming) {
            finish_dead_removal(lw);
            return report;
        }
    }
    if (allow_pool_removal && pool.wholly_expired(now_time)) {
        if (dry_run) {
            if (Status may = detail::may_unlink_name(impl->name, impl->path, impl->fd); !may) {
                report.notes.push_back("pool '" + impl->name + "' is wholly expired; would be left to a process "
                                       "that may remove it (" + may.error().message + ")");
                return report;
            }
            report.notes.push_back("would remove pool '" + impl->name + "' (every lease expired)");
            report.pool_removed = true;
            return report;
        }
        uint64_t lw = h.lifecycle.load(std::memory_order_acquire);
        // The removal is decided under the directory lock, judged again there: a reaper stopped
        // after the judgement above would otherwise remove a pool in which a region was created
        // meanwhile (its lease live). create_region checks the lifecycle under the same lock
        // and reserves its entry (CREATING, which wholly_expired counts as live) before it lets
        // go, so each sees the other. A lock held by a stopped process makes this pass skip the
        // removal; a later pass decides again.
        bool marked = false;
        const Status may_unlink = lifecycle_state(lw) == kPoolLive
                                      ? detail::may_unlink_name(impl->name, impl->path, impl->fd)
                                      : Status{};
        if (lifecycle_state(lw) == kPoolLive && !may_unlink) {
            // Not marked: a pool this process cannot unlink stays LIVE (and expired) for one
            // that can, rather than GONE under a name nobody here can take away.
            report.notes.push_back("pool '" + impl->name + "' is wholly expired; left to a process that may remove it (" +
                                   may_unlink.error().message + ")");
        } else if (lifecycle_state(lw) == kPoolLive) {
            FABRIC_PAUSE_POINT("pool.reap.judged_expired");
            // Judged now, whatever instant the caller gave: a pass given a later instant (as
            // tests do to reclaim regions early) must not remove a pool whose leases are live.
            const MonoTime judge_at = MonoClock::now();
            if (auto locked = owner_lock_acquire(h.meta_lock, pool, impl->self, kRemovalLockWaitNs, "directory lock")) {
                OwnerLockGuard guard(h.meta_lock, impl->self);
                // seq_cst: the mark half of the Dekker pair with renew_lease (see there).
                marked = pool.wholly_expired(judge_at) &&
                         h.lifecycle.compare_exchange_strong(lw, make_lifecycle(kPoolReclaiming, impl->self),
                                                             std::memory_order_seq_cst);
                if (marked) {
                    // A renewal whose `now` went stale in a pause may have extended a lease after
                    // the judgement (renewals take no lock): judged once more behind the fence;
                    // if a lease is live the pool goes back to LIVE (that renewer's own load
                    // then saw LIVE, or it saw our mark and failed).
                    std::atomic_thread_fence(std::memory_order_seq_cst);
                    if (!pool.wholly_expired(judge_at)) {
                        uint64_t ours = make_lifecycle(kPoolReclaiming, impl->self);
                        const bool kept = h.lifecycle.compare_exchange_strong(ours, make_lifecycle(kPoolLive, 0),
                                                                              std::memory_order_seq_cst);
                        report.notes.push_back("pool '" + impl->name + "': a lease was renewed while its removal was "
                                               "decided; " + (kept ? "kept" : "another process took the removal over"));
                        marked = false;
                    }
                }
            } else {
                report.notes.push_back("pool '" + impl->name + "' is wholly expired; its removal waits for the "
                                       "directory lock (" + locked.error().message + ")");
            }
        }
        if (marked) {
            FABRIC_CRASH_POINT("pool.reap.reclaiming");
            // GONE by CAS from our own mark, before the unlink: a finisher that judged us dead
            // (by heartbeat, across pid namespaces) while we were only paused may have put the
            // pool back to LIVE, and its name must then stay.
            uint64_t ours = make_lifecycle(kPoolReclaiming, impl->self);
            if (h.lifecycle.compare_exchange_strong(ours, make_lifecycle(kPoolGone, impl->self),
                                                    std::memory_order_acq_rel)) {
                unlink_marked("removed pool '" + impl->name + "' (every lease expired)");
            } else {
                report.notes.push_back("pool '" + impl->name + "': another process took its removal over");
            }
        } else {
            finish_dead_removal(lw);
        }
    }
    return report;
}

}  // namespace detail

ReapReport Pool::reap(MonoTime now, bool dry_run, bool allow_pool_removal) {
    return detail::reap_pass(*this, now, dry_run, allow_pool_removal, detail::ReapScope::full);
}

}  // namespace fabric_shm
