// SPDX-License-Identifier: MIT
// Child process groups of a registration. A process that starts other programs (the worker's
// --exec command, long-lived handlers) records each one's process group in its registry slot,
// so that the programs do not outlive it: a SIGKILLed parent cannot kill them itself (a
// parent-death signal reaches only its direct child, not `sh -c` grandchildren), so whoever
// ends its registration does. That is the registry's retirer (the reaper, any process
// opening the pool, fabric-shm-reaper) and a consumer group evicting it as a dead member,
// both within moments of noticing. A group is killed only while its leader (pid == pgid) still
// runs with the start time recorded here: a pid reused by an unrelated process is never
// signalled. Design: docs/ARCHITECTURE.md, "Child process groups".
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"

namespace fabric_shm {

/// Entries per registration (a pinned part of the registry slot).
constexpr uint32_t kMaxChildGroups = 32;

/// Records process group `pgid` (a child of this process that is its group's leader:
/// setpgid(child, 0), and still running, since its start time is read now) under this
/// process's registration in `pool`. Start the user's program only after this returns, so
/// that no moment exists in which it runs unrecorded (exec_runner holds the child on a pipe).
/// permission_denied on a read-only handle, invalid_argument when pgid is not a running
/// child of this process that leads its own group (never group 1, nor this process's own
/// group: the survivor's kill(-pgid) would reach every process, or this one and its job),
/// capacity_exceeded when kMaxChildGroups are recorded. Idempotent.
Status register_child_group(const Pool& pool, pid_t pgid);
/// Forgets `pgid` (after the leader was reaped, or the group killed). Idempotent; never fails.
void unregister_child_group(const Pool& pool, pid_t pgid) noexcept;

/// RAII form: records on construction (check ok()), forgets on destruction. Keeps its own
/// Pool handle, so the record can always be forgotten, whatever became of the caller's.
class ChildGroupRegistration {
public:
    ChildGroupRegistration(const Pool& pool, pid_t pgid);
    ChildGroupRegistration(const ChildGroupRegistration&) = delete;
    ChildGroupRegistration& operator=(const ChildGroupRegistration&) = delete;
    /// Forgets the record, unless this is a forked child's copy: the record is then the
    /// parent's, whose death must still take the group with it.
    ~ChildGroupRegistration();
    const Status& status() const { return status_; }
    bool ok() const { return status_.ok(); }

private:
    Pool pool_;
    pid_t pgid_;
    Status status_;
    uint32_t made_in_;  ///< the process's fork count at the registration
};

/// A recorded child group: its id and the low 32 bits of its leader's start time.
struct ChildGroupInfo {
    uint32_t pgid = 0;
    uint32_t leader_start_low = 0;
};
/// The child groups recorded by the registration `token` (empty when it ended).
std::vector<ChildGroupInfo> child_groups_of(const Pool& pool, OwnerToken token);

/// What happened to one recorded group when its registration's survivor acted on it.
enum class ChildGroupFate : uint8_t {
    killed,            ///< SIGKILL sent to the group (its leader still ran with the recorded start time)
    gone,              ///< its leader has exited: nothing to verify, nothing signalled
    pid_reused,        ///< a process with another start time holds the pid: left alone
    other_namespace,   ///< recorded in another pid namespace: its pid means nothing here
};

}  // namespace fabric_shm
