// SPDX-License-Identifier: MIT
#include "fabric_shm/lease.h"

#include <algorithm>
#include <cmath>

namespace fabric_shm {

MonoTime RenewalPolicy::renewal_deadline(MonoTime created, MonoTime expires, uint64_t jitter_seed) const {
    const uint64_t created_ns = to_ns(created), expires_ns = to_ns(expires);
    if (expires_ns <= created_ns) return created;
    const double total = double(expires_ns - created_ns);
    const double base = double(created_ns) + total * renew_at_fraction;
    const double jitter = (double(jitter_seed % 2001) / 1000.0 - 1.0) * jitter_fraction * total;
    double deadline = base + jitter;
    deadline = std::max(deadline, double(created_ns));
    deadline = std::min(deadline, double(expires_ns - 1));
    return MonoClock::from_ns(uint64_t(deadline));
}

namespace {
uint64_t seed_of(uint64_t lease_id) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < 8; ++i) {
        h ^= (lease_id >> (8 * i)) & 0xff;
        h *= 0x100000001b3ULL;
    }
    return h;
}
}  // namespace

void RenewalManager::reschedule(uint64_t lease_id, Tracked& t, MonoTime from, MonoTime expires) {
    const MonoTime deadline = t.policy.renewal_deadline(from, expires, seed_of(lease_id));
    const Duration ttl = expires > from ? expires - from : Duration::zero();
    const Duration min_interval = std::min(t.policy.min_renew, ttl / 2);
    t.due = std::max(deadline, t.last_renew + min_interval);
}

Status RenewalManager::register_lease(uint64_t lease_id, RenewalPolicy policy) {
    auto info = pool_.lease(lease_id);
    if (!info) return std::move(info).error();
    Tracked t;
    t.policy = policy;
    const MonoTime from = MonoClock::from_ns(info->renewed_ns ? info->renewed_ns : info->created_ns);
    t.last_renew = from;
    reschedule(lease_id, t, from, MonoClock::from_ns(info->expires_ns));
    leases_[lease_id] = t;
    next_due_ = std::min(next_due_, t.due);
    return {};
}

namespace {
/// Region kinds whose leases belong to the pool's shared objects (RenewalManager::
/// register_pool_leases): everything but a process's own status (bridge) and test regions.
bool shared_object_kind(uint32_t kind) {
    switch (RegionKind(kind)) {
        case RegionKind::store:
        case RegionKind::store_heap:
        case RegionKind::topic:
        case RegionKind::partition:
        case RegionKind::group:
        case RegionKind::job_outputs:
        case RegionKind::metrics:
            return true;
        case RegionKind::test:
        case RegionKind::bridge:
            return false;
    }
    return false;
}
}  // namespace

Result<PoolLeases> RenewalManager::register_pool_leases(RenewalPolicy policy) {
    FABRIC_TRY(pool_.check_open());
    PoolLeases out;
    auto track = [&](uint64_t lease_id) -> Status {
        if (leases_.count(lease_id) == 0) {
            FABRIC_TRY(register_lease(lease_id, policy));
            out.registered++;
        }
        out.tracked++;
        return {};
    };
    FABRIC_TRY(track(pool_.pool_lease_id()));
    for (const RegionInfo& region : pool_.regions()) {
        // Only published regions: one being created or reclaimed is not an object yet (or any more).
        if (region.state != "live" || region.lease.revoked || !shared_object_kind(region.kind)) continue;
        const Status tracked = track(region.lease.lease_id);
        // A region removed or expired between the listing and the registration is not the
        // pool's any more: skip it, as a later listing would.
        if (!tracked && tracked.code() != Errc::not_found && tracked.code() != Errc::stale_generation &&
            tracked.code() != Errc::lease_expired)
            return std::move(tracked).error();
    }
    return out;
}

Result<Duration> RenewalManager::remaining(uint64_t lease_id, MonoTime now) const {
    auto info = pool_.lease(lease_id);
    if (!info) return std::move(info).error();
    if (info->revoked)
        return make_error(Errc::lease_expired, "lease " + std::to_string(lease_id) +
                                              (info->name.empty() ? std::string() : " (region '" + info->name + "')") +
                                              " was revoked: its region was removed");
    const MonoTime expires = MonoClock::from_ns(info->expires_ns);
    return expires > now ? Duration(expires - now) : Duration::zero();
}

bool RenewalManager::unregister(uint64_t lease_id) {
    const bool erased = leases_.erase(lease_id) > 0;
    next_due_ = MonoTime::max();
    for (auto& [id, t] : leases_) next_due_ = std::min(next_due_, t.due);
    return erased;
}

TickSummary RenewalManager::tick(MonoTime now) {
    TickSummary summary;
    summary.registration = pool_.heartbeat(now);
    if (now < next_due_) {
        summary.next_due = next_due_;
        return summary;
    }
    next_due_ = MonoTime::max();
    for (auto it = leases_.begin(); it != leases_.end();) {
        const uint64_t id = it->first;
        Tracked& t = it->second;
        if (now < t.due) {
            next_due_ = std::min(next_due_, t.due);
            ++it;
            continue;
        }
        RenewalOutcome outcome;
        outcome.lease_id = id;
        auto renewed = pool_.renew_lease(id, now);
        if (renewed) {
            outcome.kind = RenewalOutcomeKind::renewed;
            outcome.new_expiry = renewed.value();
            t.failures = 0;
            t.last_renew = now;
            reschedule(id, t, now, renewed.value());
            summary.renewed++;
        } else {
            const Errc code = renewed.code();
            outcome.error = std::move(renewed).error();
            if (code == Errc::lease_expired || code == Errc::stale_generation || code == Errc::not_found) {
                // Fail closed: an expired or reclaimed lease is reported once and dropped.
                outcome.kind = RenewalOutcomeKind::dropped;
                summary.dropped++;
                summary.outcomes.push_back(std::move(outcome));
                it = leases_.erase(it);
                continue;
            }
            outcome.kind = RenewalOutcomeKind::failed;
            t.failures++;
            Duration backoff =
                std::min<Duration>(std::chrono::seconds(int64_t(1) << std::min<uint32_t>(t.failures - 1, 30)),
                                   t.policy.max_backoff);
            // Never past half of what is left of the lease: a failure that passes (busy while
            // a reaper judges the region, which a renewal made meanwhile extended) must get
            // another try before the lease runs out, or a short lease is dropped for a
            // backoff, not for being gone.
            if (auto info = pool_.lease(id); info && info->expires_ns > to_ns(now))
                backoff = std::min<Duration>(backoff, Duration((info->expires_ns - to_ns(now)) / 2));
            t.due = now + std::max<Duration>(backoff, std::chrono::milliseconds(1));
            summary.failed++;
        }
        summary.outcomes.push_back(std::move(outcome));
        next_due_ = std::min(next_due_, t.due);
        ++it;
    }
    summary.next_due = next_due_;
    return summary;
}

}  // namespace fabric_shm
