// SPDX-License-Identifier: MIT
// Lease renewal, poll-driven as in grafos_leasekit: nothing renews in the background. Stop
// calling tick() and the leases run out on schedule; then the reaper reclaims the memory.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "fabric_shm/pool.h"

namespace fabric_shm {

struct RenewalPolicy {
    double renew_at_fraction = 0.75;  ///< renew once this fraction of the TTL has elapsed
    double jitter_fraction = 0.10;    ///< deadline moves by up to +-this fraction of the TTL (per lease, deterministic)
    /// Rate limit: a lease is renewed at most once per min(min_renew_secs, renew_at_fraction x TTL).
    /// It never lengthens a lease: a renewal always extends to now + TTL, so a pool created
    /// with --ttl 5s still expires about 5 s after its last renewal.
    uint64_t min_renew_secs = 30;
    uint64_t max_backoff_secs = 5;    ///< cap of the exponential backoff after a failed renewal (1 s, 2 s, 4 s, ...)

    /// Absolute monotonic ns at which to renew a lease that runs [created_ns, expires_ns):
    /// created + total*renew_at_fraction + jitter, jitter = ((seed % 2001)/1000 - 1) * jitter_fraction * total,
    /// clamped to [created_ns, expires_ns).
    uint64_t renewal_deadline(uint64_t created_ns, uint64_t expires_ns, uint64_t jitter_seed) const;
};

enum class RenewalOutcomeKind : uint8_t { renewed, failed, dropped };

struct RenewalOutcome {
    uint64_t lease_id = 0;
    RenewalOutcomeKind kind = RenewalOutcomeKind::renewed;
    uint64_t new_expires_ns = 0;  ///< when renewed
    Error error;                  ///< when failed (retried with backoff) or dropped (expired/stale: unregistered)
};

struct TickSummary {
    std::vector<RenewalOutcome> outcomes;  ///< only leases that were due
    uint64_t next_due_ns = UINT64_MAX;     ///< earliest deadline among registered leases
    size_t renewed = 0, failed = 0, dropped = 0;
    /// Pool::heartbeat's answer: stale_generation when this process was fenced (open the
    /// pool again; nothing it holds is its own any more).
    Status registration;
};

class RenewalManager {
public:
    explicit RenewalManager(const Pool& pool) : pool_(pool) {}

    /// Starts tracking a lease (pool or region lease id); its schedule starts from the
    /// lease's current [renewed_ns or created_ns, expires_ns).
    Status register_lease(uint64_t lease_id, RenewalPolicy policy = {});
    bool unregister(uint64_t lease_id);
    size_t size() const { return leases_.size(); }

    /// Renews every lease whose deadline has passed at `now_ns`; heartbeats the registry.
    /// Cheap when nothing is due (no allocation).
    TickSummary tick(uint64_t now_ns);
    uint64_t next_due_ns() const { return next_due_; }

private:
    struct Tracked {
        RenewalPolicy policy;
        uint64_t due_ns = 0;
        uint64_t last_renew_ns = 0;
        uint32_t failures = 0;
    };
    void reschedule(uint64_t lease_id, Tracked& t, uint64_t from_ns, uint64_t expires_ns);
    Pool pool_;  ///< a handle: renewals keep working when the caller's Pool moves
    std::map<uint64_t, Tracked> leases_;
    uint64_t next_due_ = UINT64_MAX;
};

}  // namespace fabric_shm
