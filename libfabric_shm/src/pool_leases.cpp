// SPDX-License-Identifier: MIT
// The pool's leases: listing, renewal (fail closed once expired) and whole-pool expiry.
// RenewalManager (lease.cpp) schedules renewals on top of these.
#include "fabric_shm/pool.h"

#include <algorithm>
#include <atomic>
#include <optional>

#include "crash_point.h"
#include "fabric_shm/counters.h"
#include "pool_impl.h"
#include "pool_internal.h"

namespace fabric_shm {

using namespace layout;
using detail::lease_info_of;

uint64_t Pool::pool_lease_id() const { return impl_->header()->lease.lease_id.load(std::memory_order_relaxed); }

std::vector<LeaseInfo> Pool::leases() const {
    if (closed()) return {};

    std::vector<LeaseInfo> out;
    LeaseInfo pl = lease_info_of(impl_->header()->lease);
    pl.is_pool = true;
    pl.name = impl_->name;
    out.push_back(pl);
    for (RegionInfo& r : regions()) out.push_back(r.lease);
    return out;
}

Result<LeaseInfo> Pool::lease(uint64_t lease_id) const {
    FABRIC_TRY(check_open());

    for (LeaseInfo& l : leases())
        if (l.lease_id == lease_id) return std::move(l);
    return make_error(Errc::not_found, "lease " + std::to_string(lease_id) + " does not exist in pool '" +
                                           impl_->name + "' (it may have been reclaimed)");
}

namespace {
/// Moves a generation-tagged lease field (make_lease_field) to next(its value) while it still
/// holds generation `gen`; next returns nullopt to keep the value. False, with nothing written,
/// once the entry holds another generation's lease.
template <class Next>
bool update_lease_field(std::atomic<uint64_t>& field, uint32_t gen, Next next) {
    uint64_t w = field.load(std::memory_order_relaxed);
    for (;;) {
        if (lease_field_gen(w) != (gen & kSlotGenMask)) return false;
        const std::optional<uint64_t> v = next(lease_field_value(w));
        if (!v) return true;
        // Relaxed: the guard is the generation inside the compared word (one location's
        // modification order: a creator's init_lease store of a newer generation makes this
        // fail); nothing else is published through these fields.
        if (field.compare_exchange_weak(w, make_lease_field(gen, *v), std::memory_order_relaxed)) return true;
    }
}
}  // namespace

Result<MonoTime> Pool::renew_lease(uint64_t lease_id, MonoTime now, Duration ttl_duration) const {
    const uint64_t now_ns = to_ns(now);
    const uint64_t ttl_ns = to_ns(ttl_duration);
    FABRIC_TRY(check_open());

    if (impl_->read_only) return make_error(Errc::permission_denied, "pool '" + impl_->name + "' is open read-only");
    if (lifecycle_state(impl_->header()->lifecycle.load(std::memory_order_acquire)) != kPoolLive)
        return make_error(Errc::stale_generation, "pool '" + impl_->name + "' has been removed");
    const uint32_t index_plus_one = uint32_t(lease_id);
    const uint32_t gen = uint32_t(lease_id >> 32);
    auto reclaimed = [&] {
        return make_error(Errc::stale_generation,
                          "lease " + std::to_string(lease_id) + " belongs to a region that was reclaimed");
    };
    LeaseHeader* lease = nullptr;
    RegionEntry* entry = nullptr;
    std::string what;
    if (index_plus_one == 0) {
        lease = &impl_->header()->lease;
        if (lease->lease_id.load(std::memory_order_relaxed) != lease_id)
            return make_error(Errc::not_found, "lease " + std::to_string(lease_id) + " does not exist");
        if (lifecycle_state(impl_->header()->lifecycle.load(std::memory_order_acquire)) != kPoolLive)
            return make_error(Errc::stale_generation, "pool '" + impl_->name + "' has been removed");
        what = "pool '" + impl_->name + "'";
    } else {
        if (index_plus_one > kDirectoryEntries)
            return make_error(Errc::not_found, "lease " + std::to_string(lease_id) + " does not exist");
        entry = &impl_->entries()[index_plus_one - 1];
        const uint64_t w = entry->word.load(std::memory_order_acquire);
        what = std::string(region_kind_name(entry->kind.load(std::memory_order_relaxed))) + " '" +
               detail::load_fixed_string(entry->name, kRegionNameBytes / 8) + "'";
        if (entry_word_gen(w) != (gen & kSlotGenMask) || entry_word_state(w) == kEntryFree)
            return reclaimed();
        lease = &entry->lease;
    }
    if (!lease_active(lease->state.load(std::memory_order_acquire)))
        return make_error(Errc::lease_expired, what + " was removed (lease revoked)");
    FABRIC_PAUSE_POINT("lease.renew.checked");
    // Only the extension below is written before the entry proves to hold this lease's region
    // still: a renewer paused here may resume after the region was reclaimed and another
    // created in its entry, whose lease it must not shorten or rewrite (an extension only
    // delays that region's reclaim).
    const uint64_t ttl_field = lease->ttl.load(std::memory_order_relaxed);
    if (lease_field_gen(ttl_field) != (gen & kSlotGenMask))
        return reclaimed();
    const uint64_t ttl = std::min(ttl_ns ? ttl_ns : lease_field_value(ttl_field) * kLeaseFieldUnitNs, kLeaseTtlMaxNs);
    uint64_t expires = lease->expires_ns.load(std::memory_order_acquire);
    for (;;) {
        if (now_ns >= expires) {
            detail::count(*this, CounterId::lease_renewal_failures, 1);
            return make_error(Errc::lease_expired, what + " lease expired " + format_duration_ns(now_ns - expires) +
                                                       " ago; an expired lease cannot be renewed (fail closed)");
        }
        const uint64_t target = now_ns + ttl;
        // Already later than we would set: never shortened, not even by a shorter --ttl (the
        // new TTL applies from the next renewal), nor by a renewer whose `now` went stale in a
        // pause while the entry was reused: a lease too long is the safe failure.
        if (target <= expires) break;
        // seq_cst: Dekker pair with try_reclaim (see there).
        if (lease->expires_ns.compare_exchange_weak(expires, target, std::memory_order_seq_cst)) {
            expires = target;
            break;
        }
    }
    FABRIC_CRASH_POINT("lease.renew.after_extend");
    // The pool's removal, after the extension: a Dekker pair with reap_pass, which marks the
    // pool RECLAIMING (seq_cst CAS), then judges every lease again behind a seq_cst fence and
    // puts the pool back to LIVE if one is live. Either it sees this extension, or this load
    // sees its mark: a renewer whose `now` went stale in a pause never reports a lease renewed
    // that holders would then write under while the pool is removed. Busy, not
    // stale_generation: the reaper may yet keep the pool; a renewal made again finds it LIVE,
    // or removed (then stale_generation).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (lifecycle_state(impl_->header()->lifecycle.load(std::memory_order_relaxed)) != kPoolLive)
        return make_error(Errc::busy, what + " was renewed while pool '" + impl_->name +
                                          "' was being judged for removal; renew again");
    if (entry) {
        const uint64_t w = entry->word.load(std::memory_order_seq_cst);
        if (entry_word_gen(w) != (gen & kSlotGenMask)) {
            // Another region's lease now. Our extension (if any) stays: taking it back could
            // undo what that lease's own renewer just relied on, and a lease only ever ends
            // later than its holders expect, never earlier. Nothing else is written.
            return reclaimed();
        }
        // RECLAIMING: a reaper is judging the region (try_reclaim, the same Dekker pair on the
        // entry word). It keeps the region if it sees this extension, so "expired" would make a
        // RenewalManager drop a lease that lives on; busy, as for the pool: renewing again
        // finds the entry LIVE, or reclaimed (stale_generation). A reclaimer killed between
        // its mark and its second judgement is repaired here (the entry back to LIVE): nobody
        // else would until a reap ran, and every renewal would be busy meanwhile.
        if (entry_word_state(w) == kEntryReclaiming && !detail::unmark_dead_reclaim(*this, *entry, w))
            return make_error(Errc::busy, what + " was renewed while a reaper was judging it for reclaim; renew again");
    }
    FABRIC_PAUSE_POINT("lease.renew.confirmed");
    // Each field is written only while it still holds this lease's generation: a renewer paused
    // here may resume after the region was reclaimed and another created in the entry.
    const uint64_t created_ns = lease->created_ns.load(std::memory_order_relaxed);
    const uint64_t renewed_ms = now_ns > created_ns ? (now_ns - created_ns) / kLeaseFieldUnitNs : 0;
    const bool own_lease =
        (!ttl_ns || update_lease_field(lease->ttl, gen, [&](uint64_t) { return lease_ttl_field_value(ttl_ns); })) &&
        update_lease_field(lease->renewed, gen,
                           [&](uint64_t old) { return renewed_ms > old ? std::optional(renewed_ms) : std::nullopt; }) &&
        update_lease_field(lease->last_renewer, gen, [&](uint64_t) { return uint64_t(impl_->self); }) &&
        update_lease_field(lease->renew_count, gen, [](uint64_t n) {
            return n < kLeaseFieldValueMask ? std::optional(n + 1) : std::nullopt;
        });
    if (!own_lease)
        return reclaimed();
    detail::count(*this, CounterId::lease_renewals, 1);
    return MonoClock::from_ns(expires);
}

bool Pool::wholly_expired(MonoTime now) const {
    if (closed()) return false;

    const LeaseInfo pl = lease_info_of(impl_->header()->lease);
    if (!pl.expired(now)) return false;
    for (uint32_t i = 0; i < kDirectoryEntries; ++i) {
        const RegionEntry& e = impl_->entries()[i];
        const uint64_t w = e.word.load(std::memory_order_acquire);
        const uint64_t st = entry_word_state(w);
        if (st == kEntryFree) continue;
        if (st == kEntryCreating &&
            registry().process_liveness(entry_word_owner(w), now) == Liveness::maybe_alive)
            return false;
        if (!lease_info_of(e.lease).expired(now)) return false;
    }
    return true;
}

}  // namespace fabric_shm
