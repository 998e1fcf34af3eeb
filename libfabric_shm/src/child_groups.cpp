// SPDX-License-Identifier: MIT
// Child process groups of a registration (child_groups.h): recorded by their parent in its
// registry slot, killed by whoever ends the registration after the parent died.
//
// Entry word = child_group_word(leader start time, pgid); 0 = free. Only the slot's owner
// CASes entries in (0 -> entry) and out (entry -> 0); a retirer zeroes them once it owns the
// slot (RETIRING), and an evicter only reads them. A pgid is only signalled while its leader
// (pid == pgid) exists with the recorded start time: while the leader exists its pid, and so
// the group id, cannot be taken by another process, so the group is the one recorded.
#include "fabric_shm/child_groups.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "child_groups_internal.h"
#include "crash_point.h"
#include "fabric_shm/registry.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"

namespace fabric_shm {

using namespace layout;

namespace {

/// This process's slot in `pool`, or nullptr when it holds no registration there.
ProcessSlot* own_slot(const Pool& pool) {
    const OwnerToken self = pool.self();
    if (self == 0 || pool.read_only()) return nullptr;
    auto* slot = reinterpret_cast<ProcessSlot*>(detail::pool_base(pool) + kRegistryOffset) + token_slot(self);
    // Acquire: pairs with our own publication; a FENCED slot is still ours until we exit.
    const uint64_t w = slot->word.load(std::memory_order_acquire);
    const uint64_t state = slot_word_state(w);
    if (slot_word_gen(w) != token_gen(self) || (state != kSlotLive && state != kSlotFenced)) return nullptr;
    return slot;
}

/// True when `pid` is a child of this process (any thread's). WNOWAIT|WNOHANG: only looks,
/// reaps nothing and leaves every status to the caller's own wait.
bool is_own_child(pid_t pid) {
    siginfo_t info{};
    for (;;) {
        if (::waitid(P_PID, id_t(pid), &info, WEXITED | WSTOPPED | WCONTINUED | WNOHANG | WNOWAIT) == 0) return true;
        if (errno != EINTR) return false;  // ECHILD: not ours
    }
}

}  // namespace

Status register_child_group(const Pool& pool, pid_t pgid) {
    if (pgid <= 0) return make_error(Errc::invalid_argument, "process group " + std::to_string(pgid) + " is not valid");
    ProcessSlot* slot = own_slot(pool);
    if (!slot)
        return make_error(Errc::permission_denied, "pool '" + pool.name() +
                                                       "': this handle holds no registration (read-only, or it ended)");
    const PidProbe leader = probe_pid(uint32_t(pgid));
    if (!leader.exists || leader.zombie || leader.start_time == 0)
        return make_error(Errc::invalid_argument, "process group " + std::to_string(pgid) +
                                                      ": its leader (pid " + std::to_string(pgid) +
                                                      ") is not running");
    // Whoever ends this registration sends SIGKILL to -pgid, so only a group this process
    // started may be recorded: group 1 is kill(-1), every process the killer may signal; our
    // own group's leader is us or an ancestor (a shell), and the kill at our own close would
    // take us and the whole job with it; any other is someone else's.
    if (!is_own_child(pgid))
        return make_error(Errc::invalid_argument, "process group " + std::to_string(pgid) + ": its leader (pid " +
                                                      std::to_string(pgid) + ") is not a child of this process (pid " +
                                                      std::to_string(::getpid()) + ")");
    if (::getpgid(pgid) != pgid)
        return make_error(Errc::invalid_argument, "process group " + std::to_string(pgid) + ": pid " +
                                                      std::to_string(pgid) +
                                                      " leads no process group (setpgid(child, 0) first)");
    const uint64_t entry = child_group_word(leader.start_time, uint32_t(pgid));
    for (auto& e : slot->child_groups)
        if (e.load(std::memory_order_relaxed) == entry) return {};
    for (auto& e : slot->child_groups) {
        uint64_t expect = 0;
        // Release: nothing else is published with the entry (it is self-contained); the CAS
        // only arbitrates between threads of this process.
        if (e.compare_exchange_strong(expect, entry, std::memory_order_release, std::memory_order_relaxed)) {
            FABRIC_CRASH_POINT("child_group.registered");
            return {};
        }
    }
    return make_error(Errc::capacity_exceeded, "pool '" + pool.name() + "': this process already records " +
                                                   std::to_string(kMaxChildGroups) +
                                                   " child process groups (the limit per registration)");
}

void unregister_child_group(const Pool& pool, pid_t pgid) noexcept {
    ProcessSlot* slot = own_slot(pool);
    if (!slot || pgid <= 0) return;
    for (auto& e : slot->child_groups) {
        uint64_t w = e.load(std::memory_order_relaxed);
        if (w != 0 && child_group_pgid(w) == uint32_t(pgid))
            e.compare_exchange_strong(w, 0, std::memory_order_relaxed, std::memory_order_relaxed);
    }
}

ChildGroupRegistration::ChildGroupRegistration(const Pool& pool, pid_t pgid)
    : pool_(pool), pgid_(pgid), made_in_(detail::fork_generation()) {
    status_ = register_child_group(pool, pgid);
}

ChildGroupRegistration::~ChildGroupRegistration() {
    if (status_ && made_in_ == detail::fork_generation()) unregister_child_group(pool_, pgid_);
}

std::vector<ChildGroupInfo> child_groups_of(const Pool& pool, OwnerToken token) {
    std::vector<ChildGroupInfo> out;
    if (token == 0) return out;
    const auto* slot = reinterpret_cast<const ProcessSlot*>(detail::pool_base(pool) + kRegistryOffset) + token_slot(token);
    // Acquire: the entries read below were written by the occupant we see in the word.
    if (slot_word_gen(slot->word.load(std::memory_order_acquire)) != token_gen(token)) return out;
    for (const auto& e : slot->child_groups) {
        const uint64_t w = e.load(std::memory_order_acquire);
        if (w != 0) out.push_back({child_group_pgid(w), child_group_start(w)});
    }
    return out;
}

namespace detail {

ChildGroupFate kill_child_group(uint64_t entry) {
    const uint32_t pgid = child_group_pgid(entry);
    const PidProbe leader = probe_pid(pgid);
    // Leader gone: its pid may be anyone's by now, and the group cannot be told from one a
    // reused pid made, so nothing is signalled (a command that backgrounded work and exited).
    if (!leader.exists) return ChildGroupFate::gone;
    if (uint32_t(leader.start_time) != child_group_start(entry)) return ChildGroupFate::pid_reused;
    FABRIC_PAUSE_POINT("child_group.before_kill");
    // The leader (or its zombie) holds the pid, so the group id is still the recorded one.
    if (::kill(-pid_t(pgid), SIGKILL) != 0 && errno == ESRCH) return ChildGroupFate::gone;
    return ChildGroupFate::killed;
}

uint32_t kill_child_groups(PoolHeader& header, ProcessSlot& slot, uint64_t occupant_pidns, bool clear,
                           std::vector<std::string>* notes) {
    uint32_t killed = 0;
    const bool here = occupant_pidns != 0 && occupant_pidns == self_pidns();
    for (auto& e : slot.child_groups) {
        const uint64_t w = e.load(std::memory_order_acquire);
        if (w == 0) continue;
        const ChildGroupFate fate = here ? kill_child_group(w) : ChildGroupFate::other_namespace;
        if (fate == ChildGroupFate::killed) {
            ++killed;
            header.killed_child_groups.fetch_add(1, std::memory_order_relaxed);
        }
        if (notes) {
            const std::string g = "child process group " + std::to_string(child_group_pgid(w));
            switch (fate) {
                case ChildGroupFate::killed: notes->push_back("killed " + g); break;
                case ChildGroupFate::gone: break;
                case ChildGroupFate::pid_reused: notes->push_back("left " + g + " alone: its pid was reused"); break;
                case ChildGroupFate::other_namespace:
                    notes->push_back("left " + g + " alone: recorded in another pid namespace (kill it there)");
                    break;
            }
        }
        if (clear) e.store(0, std::memory_order_relaxed);  // published by the retirer's release CAS to FREE
    }
    return killed;
}

}  // namespace detail

}  // namespace fabric_shm
