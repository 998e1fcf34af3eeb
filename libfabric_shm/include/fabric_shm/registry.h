// SPDX-License-Identifier: MIT
// The process registry: who is attached to a pool, and whether an owner is certainly dead.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/owner_token.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"

namespace fabric_shm {

/// One-sided answer, as in LMDB's reader check: only "certainly dead" permits a takeover.
enum class Liveness : uint8_t { maybe_alive, certainly_dead };

struct ProcessInfo {
    uint32_t slot = 0;
    OwnerToken token = 0;
    bool claiming = false;       ///< between claiming the slot and publishing it (or killed there)
    bool fenced = false;         ///< heartbeat timed out while its pid runs: registration over, slot kept until it exits
    uint32_t pid = 0;
    uint64_t start_time = 0;     ///< clock ticks since boot (/proc/<pid>/stat field 22)
    uint64_t pidns = 0;
    uint64_t heartbeat_ns = 0;   ///< monotonic
    uint64_t timeout_ns = 0;     ///< 0: liveness by pid only
    uint64_t registered_ns = 0;  ///< monotonic
    std::string comm;
    std::vector<uint32_t> child_groups;  ///< process groups it recorded (child_groups.h)
    Liveness liveness = Liveness::maybe_alive;
    std::string dead_reason;     ///< "pid gone", "pid reused", "zombie", "heartbeat 12s old (timeout 5s)"
};

/// What the OS says about a (pid, start time, pid namespace) triple. Exposed for tests.
struct PidProbe {
    bool exists = false;
    bool zombie = false;  ///< every thread exited, the process not yet waited for (Z/X)
    uint64_t start_time = 0;
};
PidProbe probe_pid(uint32_t pid);
uint64_t self_start_time();
uint64_t self_pidns();

class ProcessRegistry {
public:
    /// Holds a copy of the handle: the registry stays usable when the caller's Pool moves.
    explicit ProcessRegistry(const Pool& pool) : pool_(pool) {}

    /// certainly_dead when the token's registration is gone (slot freed or re-used), its pid
    /// is gone, its pid was reused (start time differs), it is a zombie, or its heartbeat is
    /// older than its declared timeout. Processes in another pid namespace are judged by
    /// heartbeat alone. Costs a /proc read: call it on contention, not per message.
    Liveness liveness(OwnerToken token, MonoTime now, std::string* reason = nullptr) const;

    /// Whether the process behind `token` may still run, whatever its heartbeat says:
    /// certainly_dead only when its pid is gone, reused or a zombie, or its registration was
    /// retired (a process fenced for a stale heartbeat keeps its slot until its pid exits).
    /// liveness() decides takeovers of what a process owns through CAS-checked words (locks,
    /// claims: a stopped owner's late CAS then fails); this decides reuse of memory it may
    /// still write or read with plain accesses (store loans, pinned views), which nothing
    /// could fence. Across pid namespaces it falls back to liveness().
    Liveness process_liveness(OwnerToken token, MonoTime now, std::string* reason = nullptr) const;

    std::vector<ProcessInfo> list(MonoTime now = MonoClock::now()) const;

    /// Ends the registrations of certainly-dead processes: frees their slots (folding their
    /// counter shards into the pool's retired totals), or, for a process whose heartbeat timed
    /// out while its pid still runs, fences the slot (freed once the pid exits). Returns how
    /// many registrations ended. Needs a writable pool. Whoever frees a slot first kills the
    /// child process groups its occupant recorded (child_groups.h); `notes` says which.
    uint32_t reap_dead(MonoTime now, std::vector<std::string>* notes = nullptr) const;
    /// reap_dead for the one registration `token` (when it is still that slot's, and
    /// certainly dead): what a consumer group does to a member it evicts as dead, so that the
    /// member's child process groups are killed at once. True when it ended the registration.
    bool reap_registration(OwnerToken token, MonoTime now, std::vector<std::string>* notes = nullptr) const;

private:
    Pool pool_;
};

}  // namespace fabric_shm
