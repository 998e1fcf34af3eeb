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
    /// Rate limit: a lease is renewed at most once per min(min_renew, renew_at_fraction x TTL).
    /// It never lengthens a lease: a renewal always extends to now + TTL, so a pool created
    /// with --ttl 5s still expires about 5 s after its last renewal.
    Duration min_renew = std::chrono::seconds(30);
    /// Cap of the exponential backoff after a failed renewal (1 s, 2 s, 4 s, ...); a retry also
    /// never waits past half of the time the lease has left.
    Duration max_backoff = std::chrono::seconds(5);

    /// When to renew a lease that runs [created, expires): created + total*renew_at_fraction +
    /// jitter, jitter = ((seed % 2001)/1000 - 1) * jitter_fraction * total, clamped to [created, expires).
    MonoTime renewal_deadline(MonoTime created, MonoTime expires, uint64_t jitter_seed) const;
};

enum class RenewalOutcomeKind : uint8_t { renewed, failed, dropped };

struct RenewalOutcome {
    uint64_t lease_id = 0;
    RenewalOutcomeKind kind = RenewalOutcomeKind::renewed;
    MonoTime new_expiry{};        ///< when renewed
    Error error;                  ///< when failed (retried with backoff) or dropped (expired/stale: unregistered)
};

struct TickSummary {
    std::vector<RenewalOutcome> outcomes;  ///< only leases that were due
    MonoTime next_due = MonoTime::max();   ///< earliest deadline among registered leases
    size_t renewed = 0, failed = 0, dropped = 0;
    /// Pool::heartbeat's answer: stale_generation when this process was fenced (open the
    /// pool again; nothing it holds is its own any more).
    Status registration;
};

/// What register_pool_leases registered.
struct PoolLeases {
    size_t registered = 0;  ///< leases now tracked that were not before
    size_t tracked = 0;     ///< leases of the pool's objects tracked after the call
};

class RenewalManager {
public:
    explicit RenewalManager(const Pool& pool) : pool_(pool) {}

    /// Starts tracking a lease (pool or region lease id); its schedule starts from the
    /// lease's current [renewed or created, expires). Registering a tracked lease again
    /// replaces its policy.
    Status register_lease(uint64_t lease_id, RenewalPolicy policy = {});
    /// Registers every lease the pool's objects use: the pool's own lease and those of every
    /// live object store (table and heap), topic (root and partitions), consumer-group
    /// table, job-output store and metrics region. Regions that belong to one process (a
    /// bridge's status, test regions) are left to their owner. Leases already tracked keep
    /// their policy. Objects created later are not covered: call it again (it is idempotent),
    /// or register their leases one by one.
    Result<PoolLeases> register_pool_leases(RenewalPolicy policy = {});
    bool unregister(uint64_t lease_id);
    size_t size() const { return leases_.size(); }
    bool tracked(uint64_t lease_id) const { return leases_.count(lease_id) != 0; }

    /// Renews every lease whose deadline has passed at `now`; heartbeats the registry.
    /// Cheap when nothing is due (no allocation).
    TickSummary tick(MonoTime now = MonoClock::now());
    MonoTime next_due() const { return next_due_; }
    /// Time until `lease_id` expires as of `now` (zero once it ran out): the recipe's "lease
    /// TTL remaining". Any lease of the pool, tracked or not. not_found for an unknown lease
    /// id; lease_expired naming the lease when it was revoked (its region was removed).
    Result<Duration> remaining(uint64_t lease_id, MonoTime now = MonoClock::now()) const;

private:
    struct Tracked {
        RenewalPolicy policy;
        MonoTime due{};
        MonoTime last_renew{};
        uint32_t failures = 0;
    };
    void reschedule(uint64_t lease_id, Tracked& t, MonoTime from, MonoTime expires);
    Pool pool_;  ///< a handle: renewals keep working when the caller's Pool moves
    std::map<uint64_t, Tracked> leases_;
    MonoTime next_due_ = MonoTime::max();
};

}  // namespace fabric_shm
