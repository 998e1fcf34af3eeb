// SPDX-License-Identifier: MIT
// Waiter: one thread blocks until any of several consumers (any partitions of any topics, in
// one pool or several) has something to poll, or turns that into a readable file descriptor
// for an event loop (epoll, select, asyncio's loop.add_reader). docs/topics.md, "Waiting on
// many topics", has the design and an example.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "fabric_shm/consumer.h"
#include "fabric_shm/result.h"

namespace fabric_shm {

enum class WaitResult : uint8_t {
    ready,        ///< a watched consumer has something to poll: a message, a skip record or a gap at
                  ///< its position, or a claim stuck there long enough (2 ms) for poll to probe it
    timeout,      ///< nothing within the timeout
    interrupted,  ///< interrupt() was called, or a signal handler ran on this thread (EINTR)
};
std::string_view wait_result_name(WaitResult result) noexcept;

/// Waits on many consumers at once. A producer's send to a partition wakes exactly the threads
/// waiting on that partition (no syscall when nobody waits there). Not thread-safe, except
/// interrupt(): use it on the thread that owns the consumers, as their poll/commit calls.
/// Consumers must stay alive while added (remove() them, or destroy the Waiter, first).
class Waiter {
public:
    Waiter();
    Waiter(Waiter&&) noexcept;
    Waiter& operator=(Waiter&&) noexcept;
    ~Waiter();  ///< stops the bridge thread and closes fd()

    /// Watches `consumer`: its assigned partitions from its positions, read at every wait() and
    /// arm() (so a GroupConsumer's rebalances are followed: pass group_consumer.consumer()).
    /// invalid_argument when already added; capacity_exceeded past kMaxConsumers.
    Status add(Consumer& consumer);
    /// not_found when not added. Returns once the bridge thread no longer looks at it.
    Status remove(Consumer& consumer);
    size_t size() const;
    static constexpr size_t kMaxConsumers = 127;  ///< futex_waitv takes 128 words, one is the interrupt word

    /// Blocks until a watched consumer is ready, `timeout` passes (0: check once, never
    /// sleep), interrupt() is called or a signal handler runs on this thread. Then poll the
    /// ready consumers with timeout 0. Sleeps in rounds of at most 50 ms (heartbeating each
    /// consumer's pool, as a parked poll does); a caller that must heartbeat or renew leases
    /// more often passes a shorter timeout.
    Result<WaitResult> wait(Duration timeout);
    /// From any thread, or a signal handler (async-signal-safe): the current wait returns
    /// `interrupted`, or the next one does at once.
    void interrupt() noexcept;

    /// An eventfd (non-blocking, close-on-exec, owned by the Waiter) for event loops; starts a
    /// bridge thread on the first call. After arm(), the fd becomes readable as soon as a watched
    /// consumer is ready (at once if one already is) and stays readable until the next arm().
    /// Loop: on readable, poll every consumer with timeout 0 until each returns 0, then arm().
    Result<int> fd();
    /// Takes the consumers' positions (on this thread), clears the fd's readiness, and hands
    /// the snapshot to the bridge thread. invalid_argument when fd() was never called.
    Status arm();

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace fabric_shm
