// SPDX-License-Identifier: MIT
// A lock word in shared memory whose holder is an OwnerToken, so survivors can take it over
// from a certainly-dead holder. For rare, short critical sections (directory allocation,
// group membership changes), never per message. What a holder changes under it must be
// repairable by the next holder: acquire() reports a steal so the caller can repair.
#pragma once

#include "private.h"

#include <atomic>
#include <cstdint>

#include "fabric_shm/pool.h"

namespace fabric_shm::detail {

struct LockAcquired {
    bool stolen = false;  ///< the previous holder was certainly dead: repair before use
};

/// Acquire `word` (0 = free, else (thread tag << 32) | holder token: threads of one process
/// share a token and exclude each other through the tag). Must be released by the same
/// thread. Spins briefly, then
/// sleeps with backoff (50 us .. 2 ms); every ~2 ms it asks the registry whether the holder
/// is certainly dead and, if so, takes the lock over by CAS (holder -> me), so a slow holder
/// wrongly presumed dead finds its release failing rather than silently succeeding. Each
/// probe also heartbeats this process's registration (a waiter runs: a declared heartbeat
/// timeout shorter than the wait must not fence it); a registration found fenced already ends
/// the wait with Errc::stale_generation. Timeout -> Errc::busy naming the holder.
Result<LockAcquired> owner_lock_acquire(std::atomic<uint64_t>& word, const Pool& pool, OwnerToken me,
                                        uint64_t timeout_ns, const char* what);
/// Releases if still held by `me`; false if it was taken over (the caller was presumed dead).
bool owner_lock_release(std::atomic<uint64_t>& word, OwnerToken me) noexcept;

/// RAII form.
class OwnerLockGuard {
public:
    OwnerLockGuard(std::atomic<uint64_t>& word, OwnerToken me) : word_(&word), me_(me) {}
    OwnerLockGuard(const OwnerLockGuard&) = delete;
    ~OwnerLockGuard() {
        if (word_) owner_lock_release(*word_, me_);
    }

private:
    std::atomic<uint64_t>* word_;
    OwnerToken me_;
};

}  // namespace fabric_shm::detail
