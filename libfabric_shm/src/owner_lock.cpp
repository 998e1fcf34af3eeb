// SPDX-License-Identifier: MIT
#include "owner_lock.h"
#include "cpu_relax.h"

#include <sched.h>
#include <time.h>

#include "fabric_shm/clock.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"
#include "thread_tag.h"

namespace fabric_shm::detail {

namespace {
void sleep_ns(uint64_t ns) {
    timespec ts{time_t(ns / kNsPerSec), long(ns % kNsPerSec)};
    nanosleep(&ts, nullptr);
}
}  // namespace

Result<LockAcquired> owner_lock_acquire(std::atomic<uint64_t>& word, const Pool& pool, OwnerToken me,
                                        uint64_t timeout_ns, const char* what) {
    if (me == 0) return make_error(Errc::permission_denied, std::string(what) + ": a read-only pool cannot lock");
    const uint64_t mine = thread_tag() | me;
    const uint64_t start = mono_now_ns();
    uint64_t backoff = 50 * kNsPerUs;
    uint64_t next_probe = start + 2 * kNsPerMs;
    bool probed = false;
    for (int spin = 0;; ++spin) {
        uint64_t held = word.load(std::memory_order_relaxed);
        if (held == 0) {
            // Acquire: pairs with owner_lock_release's release store; the critical section
            // of the previous holder happens-before ours.
            if (word.compare_exchange_weak(held, mine, std::memory_order_acquire, std::memory_order_relaxed))
                return LockAcquired{false};
            continue;
        }
        if (held == mine) return make_error(Errc::busy, std::string(what) + ": already held by this thread");
        const OwnerToken holder = OwnerToken(held);  // low 32 bits: the holder's registration
        if (spin < 64) {
            cpu_relax();
            continue;
        }
        const uint64_t now = mono_now_ns();
        const bool timed_out = timeout_ns != 0 && now - start >= timeout_ns;
        // At least once before giving up, whatever the timeout: a wait shorter than the probe
        // period must still take over a dead holder's lock rather than say busy for ever.
        if (now >= next_probe || (timed_out && !probed)) {
            probed = true;
            next_probe = now + 2 * kNsPerMs;
            // The waiter runs: its process heartbeats, or a registration that declared a
            // heartbeat timeout shorter than the wait would be fenced by any reaper meanwhile.
            // One that was fenced already (paused past its timeout) holds a dead token: a lock
            // taken with it could be taken over at any moment, so the wait ends.
            if (Status alive = pool.heartbeat(MonoClock::from_ns(now)); !alive && alive.code() == Errc::stale_generation)
                return std::move(alive).error();
            // By pid only, never by heartbeat: the critical sections these locks guard end in
            // plain stores (commit offsets, fences, join rows, directory entries), which a
            // holder that was only paused would make after resuming, over the thief's work.
            if (holder != me && pool.registry().process_liveness(holder, MonoClock::from_ns(now)) == Liveness::certainly_dead) {
                // Takeover by CAS on the exact dead token: a holder wrongly presumed dead
                // then fails its release instead of silently "succeeding".
                if (word.compare_exchange_strong(held, mine, std::memory_order_acquire, std::memory_order_relaxed)) {
                    detail::pool_header(pool).stolen_locks.fetch_add(1, std::memory_order_relaxed);
                    return LockAcquired{true};
                }
                continue;
            }
        }
        if (timed_out)
            return make_error(Errc::busy, std::string(what) + " is held by live process token " +
                                              std::to_string(holder) + " for more than " + format_duration_ns(timeout_ns));
        if (spin < 128) {
            sched_yield();
            continue;
        }
        sleep_ns(backoff);
        backoff = backoff * 2 > 2 * kNsPerMs ? 2 * kNsPerMs : backoff * 2;
    }
}

bool owner_lock_release(std::atomic<uint64_t>& word, OwnerToken me) noexcept {
    uint64_t expected = thread_tag() | me;
    // Release: publishes this critical section to the next acquirer.
    return word.compare_exchange_strong(expected, 0, std::memory_order_release, std::memory_order_relaxed);
}

}  // namespace fabric_shm::detail
