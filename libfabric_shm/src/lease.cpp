// SPDX-License-Identifier: MIT
#include "fabric_shm/lease.h"

#include <algorithm>
#include <cmath>

namespace fabric_shm {

uint64_t RenewalPolicy::renewal_deadline(uint64_t created_ns, uint64_t expires_ns, uint64_t jitter_seed) const {
    if (expires_ns <= created_ns) return created_ns;
    const double total = double(expires_ns - created_ns);
    const double base = double(created_ns) + total * renew_at_fraction;
    const double jitter = (double(jitter_seed % 2001) / 1000.0 - 1.0) * jitter_fraction * total;
    double deadline = base + jitter;
    deadline = std::max(deadline, double(created_ns));
    deadline = std::min(deadline, double(expires_ns - 1));
    return uint64_t(deadline);
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

void RenewalManager::reschedule(uint64_t lease_id, Tracked& t, uint64_t from_ns, uint64_t expires_ns) {
    const uint64_t deadline = t.policy.renewal_deadline(from_ns, expires_ns, seed_of(lease_id));
    const uint64_t ttl = expires_ns > from_ns ? expires_ns - from_ns : 0;
    const uint64_t min_interval = std::min<uint64_t>(t.policy.min_renew_secs * kNsPerSec, ttl / 2);
    t.due_ns = std::max(deadline, t.last_renew_ns + min_interval);
}

Status RenewalManager::register_lease(uint64_t lease_id, RenewalPolicy policy) {
    auto info = pool_.lease(lease_id);
    if (!info) return std::move(info).error();
    Tracked t;
    t.policy = policy;
    const uint64_t from = info->renewed_ns ? info->renewed_ns : info->created_ns;
    t.last_renew_ns = from;
    reschedule(lease_id, t, from, info->expires_ns);
    leases_[lease_id] = t;
    next_due_ = std::min(next_due_, t.due_ns);
    return {};
}

bool RenewalManager::unregister(uint64_t lease_id) {
    const bool erased = leases_.erase(lease_id) > 0;
    next_due_ = UINT64_MAX;
    for (auto& [id, t] : leases_) next_due_ = std::min(next_due_, t.due_ns);
    return erased;
}

TickSummary RenewalManager::tick(uint64_t now_ns) {
    TickSummary summary;
    summary.registration = pool_.heartbeat(now_ns);
    if (now_ns < next_due_) {
        summary.next_due_ns = next_due_;
        return summary;
    }
    next_due_ = UINT64_MAX;
    for (auto it = leases_.begin(); it != leases_.end();) {
        const uint64_t id = it->first;
        Tracked& t = it->second;
        if (now_ns < t.due_ns) {
            next_due_ = std::min(next_due_, t.due_ns);
            ++it;
            continue;
        }
        RenewalOutcome outcome;
        outcome.lease_id = id;
        auto renewed = pool_.renew_lease(id, now_ns);
        if (renewed) {
            outcome.kind = RenewalOutcomeKind::renewed;
            outcome.new_expires_ns = renewed.value();
            t.failures = 0;
            t.last_renew_ns = now_ns;
            reschedule(id, t, now_ns, renewed.value());
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
            const uint64_t backoff =
                std::min<uint64_t>(uint64_t(1) << std::min<uint32_t>(t.failures - 1, 30), t.policy.max_backoff_secs) *
                kNsPerSec;
            t.due_ns = now_ns + backoff;
            summary.failed++;
        }
        summary.outcomes.push_back(std::move(outcome));
        next_due_ = std::min(next_due_, t.due_ns);
        ++it;
    }
    summary.next_due_ns = next_due_;
    return summary;
}

}  // namespace fabric_shm
