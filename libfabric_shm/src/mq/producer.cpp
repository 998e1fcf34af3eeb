// SPDX-License-Identifier: MIT
// Producer: claim a slot (CAS on the slot's state word, then help the tail past it), write
// the envelope, publish with one CAS of the state word, wake the waiters of that partition
// (if any). See docs/topics.md, "Send" and "Blocking".
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "fabric_shm/clock.h"
#include "clock_read.h"
#include "fabric_shm/counters.h"
#include "crash_point.h"
#include "fabric_shm/topic.h"
#include "fetch_max.h"
#include "futex.h"
#include "mq/topic_internal.h"
#include "cpu_relax.h"
#include "mq/waiting.h"
#include "batch_status.h"
#include "seqlock_copy.h"
#include "pool_impl.h"

namespace fabric_shm {

using namespace mq;

namespace {

using detail::cpu_relax;

/// A producer whose wake found no sleeper asks at most this often whether the waiter died.
constexpr uint64_t kWaiterProbeIntervalNs = 10 * kNsPerMs;

/// The encoded length of a message's headers (4 + name + value bytes each); *too_long: the
/// first header whose name or value exceeds 65535 bytes (nullptr when none does).
uint64_t encoded_headers_len(const OutgoingMessage& m, const MessageHeader** too_long) noexcept {
    uint64_t len = 0;
    *too_long = nullptr;
    for (const MessageHeader& h : m.headers) {
        if (h.name.size() > UINT16_MAX || h.value.size() > UINT16_MAX) {
            *too_long = &h;
            return len;
        }
        len += 4 + h.name.size() + h.value.size();
    }
    return len;
}

/// Most slots one run claims before it raises the tail and writes them.
constexpr size_t kMaxRun = 64;

/// Moves the tail from `seen` (what the claimer read) up to `value`, never down: helpers may
/// have moved it meanwhile. Release: pairs with the tail acquire in other producers and in
/// oldest_offset.
void raise_tail(PartitionHeader* h, uint64_t seen, uint64_t value) {
    uint64_t cur = seen;
    while (int64_t(value - cur) > 0 &&
           !h->tail.compare_exchange_weak(cur, value, std::memory_order_release, std::memory_order_relaxed)) {
    }
}

/// The lower of two offsets (wrap-safe, as every offset comparison here).
uint64_t lower_offset(uint64_t a, uint64_t b) { return int64_t(b - a) < 0 ? b : a; }

}  // namespace

struct Producer::Impl {
    std::unique_ptr<TopicHandle> t;
    ProducerOptions options;
    OwnerToken me = 0;
    uint32_t rr = 0;
    /// The next partition in turn of `n` (rr % n, counted without a division per send).
    uint32_t next_in_turn(uint32_t n) noexcept {
        const uint32_t p = rr < n ? rr : 0;
        rr = p + 1 < n ? p + 1 : 0;
        return p;
    }
    OnFullCode on_full = kOnFullBlock;  ///< the topic's (immutable; read by every claim)
    /// What a send reads of one partition, in one record per partition (one per partition of
    /// the topic: sends.size() is the partition count): its geometry (a copy of t->parts[p];
    /// the producer reads it from here only), its lease gate and the head floor. The first send
    /// after a wait then reaches the shared pages it checks and claims from without walking the
    /// topic handle's vectors and the region's pool handle (docs/benchmarks.md, "Where the
    /// light-load time goes").
    struct alignas(64) SendPart {
        PartitionView pv;
        detail::LeaseGate lease;
        uint64_t head_cache = 0;  ///< a floor below which overwriting is allowed
    };
    std::vector<SendPart> sends;

    /// Fail closed, once per send: the pool's and partition p's lease and generation (coarse
    /// clock, no syscall). A gate that does not pass asks the Region, which names the test that
    /// failed (or passes: renewed in between).
    Status check_lease(uint32_t p) const {
        const uint64_t now = detail::read_clock(CLOCK_MONOTONIC_COARSE);
        return detail::check_through(sends[p].lease, t->part_regions[p], now);
    }
    uint64_t next_waiter_probe_ns = 0;  ///< coarse monotonic: rate limit of dead-waiter probes

    uint64_t timestamp() const {
        return detail::read_clock(options.coarse_timestamps ? CLOCK_REALTIME_COARSE : CLOCK_REALTIME);
    }
    /// A slot this producer claimed (CLAIMED(me) at `lap`), not yet published. Filled by
    /// claim() and claim_next(); no initialisers, so a run's array costs nothing to declare.
    struct Claimed {
        SlotHeader* slot;
        uint64_t offset, lap;
    };
    Status wait_for_space(uint32_t p, uint64_t tail, uint64_t deadline_ns, uint64_t started_ns);
    // The steps of a send are inlined into send_one and send_run, and nothing is built between
    // a slot's claim and its envelope: that time is time a reader spinning on the slot's line
    // takes it from us. (Measured: with claim() returning a Result<Claimed>, closed-loop
    // notify fell from 4.0 M to 1.5–1.9 M messages/s; returning a bool restored it.)
    /// Size checks (nothing is claimed for a message that cannot fit); the encoded headers'
    /// length into *headers_len. False: unfit() says why.
    [[gnu::always_inline]] bool fits(uint32_t p, const OutgoingMessage& m, uint64_t* headers_len) const noexcept;
    [[gnu::cold, gnu::noinline]] Error unfit(uint32_t p, const OutgoingMessage& m) const;
    /// Claims the slot at the tail (into `out`, raising the tail past it), waiting for space
    /// or for a previous lap's claim as the partition's mode says. False: *error says why.
    [[gnu::always_inline]] bool claim(uint32_t p, Claimed& out, Error* error);
    /// Claims the slot right after `prev` if that needs no waiting and no repair (the previous
    /// lap's occupant is done, or a first-lap slot is empty); false otherwise.
    bool claim_next(uint32_t p, const Claimed& prev, Claimed& next);
    /// claim()'s refusal (back_pressure) when stopped producers' quarantines cover the ring.
    [[gnu::cold, gnu::noinline]] Error every_slot_held(uint32_t p, uint64_t waited_ns) const;
    [[gnu::always_inline]] void write_envelope(const Claimed& c, const OutgoingMessage& m, uint64_t headers_len,
                                               uint64_t ts);
    /// CLAIMED(me) -> PUBLISHED. False when a repairer turned the claim into a skip record
    /// (then released, if it was a quarantine): the message was not delivered. Allocates
    /// nothing, so a run's later claims are abandoned before any error is built.
    [[gnu::always_inline]] bool publish(const Claimed& c);
    Error skipped_error(uint32_t p, const Claimed& c) const;
    /// Turns a claim we will not write into a skip record (readers pass it).
    void abandon(uint32_t p, const Claimed& c);
    /// Wakes the partition's parked consumers, if any (after the last publish of a send).
    void wake_readers(uint32_t p) {
        // seq_cst: the load half of the Dekker handshake with WaitRegistration::watch
        // (waiting.cpp); after a run of publishes it covers them all, each being seq_cst and
        // earlier. Nobody waits on this partition: no bit, no syscall.
        if (const uint64_t bits = sends[p].pv.hdr->waiters.load(std::memory_order_seq_cst); bits != 0) [[unlikely]]
            wake(bits);
    }
    Result<SendResult> send_one(uint32_t p, const OutgoingMessage& m, uint64_t ts);
    /// Sends messages (all bound for partition p) in order, claiming slots in runs: one tail
    /// raise per run instead of one per message, one wake check per run. Stops at the first
    /// failure; returns how many were sent. statuses[0..n) say where they went, and
    /// statuses[n] (when n < messages.size()) why the next one was not sent.
    size_t send_run(uint32_t p, std::span<const OutgoingMessage> messages, uint64_t ts, BatchStatus* statuses);
    void wake(uint64_t bits);
    void release_quarantine(SlotHeader* s, uint64_t word);
};

// Wakes the waiters whose bits the partition carries. A wake that found no sleeper may be a
// waiter that died while registered: its bit would cost every later send here a syscall, so
// at most every 10 ms the producer asks whether such an entry's owner is certainly dead and,
// if so, repairs it (the reaper's topic hook does the same; whoever comes first).
void Producer::Impl::wake(uint64_t bits) {
    const uint64_t idle = wake_waiters(*t, bits);
    if (!idle) return;
    const uint64_t now = mono_coarse_ns();
    if (now < next_waiter_probe_ns) return;
    next_waiter_probe_ns = now + kWaiterProbeIntervalNs;
    for (uint64_t m = idle; m; m &= m - 1)
        (void)repair_waiter(*t->pool, t->waiters, uint32_t(std::countr_zero(m)), t->part_headers, me, mono_now_ns());
}

// The claimer of a quarantined slot, once it has stopped writing, releases it: QUARANTINED ->
// SKIPPED at the lap the word shows now. Producers roll a live owner's quarantine forward one
// lap per trip round the ring (send_one, case 5), so the word may move between our load and
// our CAS: retry until the slot is released (by us) or no longer a quarantine of ours. While
// our quarantine stands nobody else can turn it into anything but a later-lap quarantine of
// ours (only a certainly-dead owner's quarantine is reused), so every QUARANTINED(me) word
// seen here descends from our own claim.
void Producer::Impl::release_quarantine(SlotHeader* s, uint64_t w) {
    while (slot_state(w) == kSlotQuarantined && slot_owner(w) == me) {
        FABRIC_PAUSE_POINT("mq.send.before_release");
        // Release: our envelope stores (abandoned) come before the slot becomes claimable;
        // pairs with the next claimer's acquire load of the word. Failure reloads w.
        if (s->state.compare_exchange_weak(w, make_slot_word(kSlotSkipped, slot_lap(w), me), std::memory_order_release,
                                           std::memory_order_acquire))
            return;
    }
}

Result<Producer> Producer::open(const Pool& pool, std::string_view topic, const ProducerOptions& options) {
    if (pool.self() == 0)
        return make_error(Errc::permission_denied, "a producer needs a writable pool (this handle is read-only)");
    if (options.claim_timeout <= Duration::zero())
        return make_error(Errc::invalid_argument, "ProducerOptions::claim_timeout 0 must be > 0 (default 2 s)");
    auto t = open_topic(pool, topic);
    if (!t) return std::move(t).error();
    FABRIC_TRY(check_topic(**t));
    auto impl = std::make_unique<Impl>();
    impl->me = pool.self();
    impl->options = options;
    impl->sends.resize((*t)->num_partitions);
    for (uint32_t p = 0; p < (*t)->num_partitions; ++p) {
        Impl::SendPart& sp = impl->sends[p];
        sp.pv = (*t)->parts[p];
        sp.lease = detail::LeaseGate::of((*t)->part_regions[p]);
        // What may be overwritten: below the head, and below every group in the table read
        // after it (a group registered before a raise it did not see starts below the head; the
        // registration handshake, settle_group_starts in topic.cpp). seq_cst head load before
        // min_committed's seq_cst loads of the table; partner: register_group's seq_cst LIVE
        // store before its seq_cst load of the head.
        const uint64_t head = sp.pv.hdr->head.load(std::memory_order_seq_cst);
        sp.head_cache = lower_offset(head, min_committed(**t, p, mono_now_ns(), nullptr, /*acting=*/true));
    }
    impl->on_full = (*t)->on_full;
    impl->t = std::move(t.value());
    return Producer(std::move(impl));
}

Producer::Producer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Producer::Producer(Producer&&) noexcept = default;
Producer& Producer::operator=(Producer&&) noexcept = default;
Producer::~Producer() = default;

uint32_t Producer::num_partitions() const { return impl_->t->num_partitions; }
uint64_t Producer::incarnation() const { return impl_->t->incarnation; }
const std::string& Producer::topic() const { return impl_->t->name; }

// Blocked-producer handshake (Dekker): we increment space_waiters (seq_cst) and then re-read
// the committed offsets (seq_cst); a committer stores committed (seq_cst) and then reads
// space_waiters (seq_cst). At least one side sees the other. A committer that sees us wakes us
// once its commit leaves a quarter of the ring free (wake_space_if_room); a smaller commit lets
// us sleep on, and our park is bounded by kMaxParkNs, after which we re-check anyway.
Status Producer::Impl::wait_for_space(uint32_t p, uint64_t tail, uint64_t deadline_ns, uint64_t started_ns) {
    const PartitionView& pv = sends[p].pv;
    TopicHeader* hdr = t->hdr;
    for (;;) {
        const uint64_t now = mono_now_ns();
        Slowest slow;
        const uint64_t seen = min_committed(*t, p, now, &slow, /*acting=*/true);
        FABRIC_PAUSE_POINT("mq.send.before_raise_head");
        if (slow.any_group) raise_head(pv.hdr, seen);
        // Registration handshake (settle_group_starts, topic.cpp): a group registered since
        // the read above may start below `seen`, having read the head before our raise. Re-read
        // the table (seq_cst loads, after raise_head's seq_cst access of the head; with no group,
        // after min_committed's seq_cst load of the head): either we find the group here and
        // overwrite nothing it still needs, or its registrant sees our raise and starts past it.
        // Cold: only a producer that found the ring full gets here.
        Slowest after_raise;
        const uint64_t floor = lower_offset(seen, min_committed(*t, p, now, &after_raise, /*acting=*/true));
        if (after_raise.any_group && (!slow.any_group || int64_t(after_raise.committed - slow.committed) < 0))
            slow = after_raise;  // the group holding us back (the error below names it)
        sends[p].head_cache = floor;
        // Signed: a tail read long ago (we were descheduled) can be below the floor.
        if (int64_t(tail - floor) < int64_t(pv.capacity)) return {};
        if (on_full == kOnFullReject || now >= deadline_ns) {
            detail::count(*t->pool, CounterId::mq_back_pressure, 1);
            const std::string where = "topic '" + t->name + "' partition " + std::to_string(p);
            const std::string how = on_full == kOnFullReject
                                        ? " (on_full=reject)"
                                        : " (on_full=block; waited " + format_duration_ns(now - started_ns) + ")";
            if (!slow.any_group)
                return make_error(Errc::back_pressure,
                                  where + " is full: it holds " + std::to_string(tail - floor) + " of " +
                                      std::to_string(pv.capacity) +
                                      " messages and no group is registered to consume them (a topic without "
                                      "groups keeps its first messages until one registers and commits)" + how);
            return make_error(Errc::back_pressure,
                              where + " is full: slowest group '" + slow.group + "' has lag " +
                                  std::to_string(tail - floor) + " (committed " + std::to_string(floor) + ", next " +
                                  std::to_string(tail) + ", capacity " + std::to_string(pv.capacity) + ")" + how);
        }
        if (options.should_stop && options.should_stop())
            return make_error(Errc::interrupted, "topic '" + t->name + "' partition " + std::to_string(p) +
                                                     " is full; the wait for space was interrupted after " +
                                                     format_duration_ns(now - started_ns) + " (nothing was sent)");
        // Only forward (a producer paused before its store must not age a fresher stamp).
        // Relaxed: published by the seq_cst increment below to a committer that sees it.
        detail::fetch_max(hdr->space_parked_ns, mono_coarse_ns());
        hdr->space_waiters.fetch_add(1, std::memory_order_seq_cst);  // Dekker with commit_in_pool
        const uint32_t seq = hdr->space_seq.load(std::memory_order_seq_cst);  // pairs with wake_space's bump
        const uint64_t again = min_committed(*t, p, now, nullptr, /*acting=*/false);  // only whether to park
        if (int64_t(tail - again) >= int64_t(pv.capacity))
            detail::futex_wait(hdr->space_seq, seq, std::min(kMaxParkNs, deadline_ns - now));
        hdr->space_waiters.fetch_sub(1, std::memory_order_release);  // no partner: only a hint for wakers
        FABRIC_TRY(t->pool->heartbeat());
        FABRIC_TRY(check_topic(*t, int(p)));
    }
}

inline bool Producer::Impl::fits(uint32_t p, const OutgoingMessage& m, uint64_t* headers_len) const noexcept {
    const MessageHeader* too_long = nullptr;
    const uint64_t hl = encoded_headers_len(m, &too_long);
    const uint64_t payload = sends[p].pv.stride - kEnvelopeBytes;
    if (too_long || m.key.size() + hl + m.value.size() > payload || m.key.size() > UINT16_MAX || hl > UINT16_MAX)
        return false;
    *headers_len = hl;
    return true;
}

bool Producer::fits(const OutgoingMessage& message) const noexcept {
    uint64_t headers_len = 0;
    return impl_->fits(0, message, &headers_len);  // every partition of a topic has its stride
}

Error Producer::Impl::unfit(uint32_t p, const OutgoingMessage& m) const {
    const MessageHeader* too_long = nullptr;
    const uint64_t hl = encoded_headers_len(m, &too_long);
    if (too_long)
        return make_error(Errc::message_too_large, "header '" + std::string(too_long->name.substr(0, 32)) +
                                                       "' name or value exceeds 65535 bytes");
    const uint64_t stride = sends[p].pv.stride;
    const uint64_t payload = stride - kEnvelopeBytes;
    const uint64_t total = m.key.size() + hl + m.value.size();
    return make_error(Errc::message_too_large,
                      "message of " + std::to_string(total) + " bytes (key " + std::to_string(m.key.size()) +
                          " + headers " + std::to_string(hl) + " + value " + std::to_string(m.value.size()) +
                          ") exceeds the " + std::to_string(payload) + "-byte slot payload of topic '" + t->name +
                          "' (stride " + std::to_string(stride) + " minus the " + std::to_string(kEnvelopeBytes) +
                          "-byte envelope" + (hl > UINT16_MAX || m.key.size() > UINT16_MAX
                                                  ? "; key and encoded headers are limited to 65535 bytes each)"
                                                  : ")"));
}

Error Producer::Impl::every_slot_held(uint32_t p, uint64_t waited_ns) const {
    // back_pressure, as for a full ring: every caller waits and sends again (a worker's
    // forward, the bridge's import), none takes it for a failed message.
    return make_error(Errc::back_pressure, "topic '" + t->name + "' partition " + std::to_string(p) +
                                      ": every slot is held by a stopped producer's claim (quarantined, its process "
                                      "alive) after " + format_duration_ns(waited_ns) + " (block_timeout " +
                                      format_duration_ns(uint64_t(to_ns(options.block_timeout))) +
                                      "); nothing was sent");
}

inline bool Producer::Impl::claim(uint32_t p, Claimed& out, Error* error) {
    const PartitionView& pv = sends[p].pv;
    PartitionHeader* ph = pv.hdr;
    // What the slow cases below remember across rounds; one zeroed block, off the fast path.
    struct {
        uint64_t wait_start, stuck_since, stuck_probe, stuck_off, stuck_word;
        uint64_t first_stuck_off, first_stuck_at;  ///< where this send first met an unfinished claim of the previous lap, and when
        uint64_t first_roll_off, first_roll_at;    ///< where and when it first rolled a live owner's quarantine forward
    } wt{};
    for (;;) {
        // Acquire: pairs with the release tail CAS of the previous claimer (or a helper).
        const uint64_t off = ph->tail.load(std::memory_order_acquire);
        if (on_full != kOnFullOverwrite && int64_t(off - sends[p].head_cache) >= int64_t(pv.capacity)) {
            if (!wt.wait_start) wt.wait_start = mono_now_ns();
            if (Status st = wait_for_space(p, off, wt.wait_start + to_ns(options.block_timeout), wt.wait_start); !st) [[unlikely]] {
                *error = std::move(st).error();
                return false;
            }
            continue;  // re-read the tail: it may have moved while we waited
        }
        SlotHeader* s = pv.slot(off);
        // Acquire: pairs with the previous occupant's publish/skip CAS (its bytes are done).
        uint64_t w = s->state.load(std::memory_order_acquire);
        const uint64_t st = slot_state(w);
        const uint64_t lap = pv.lap(off);
        const int64_t d = st == kSlotEmpty ? 0 : lap_diff(slot_lap(w), lap & kLapMask);
        uint64_t expect_tail = off;
        // Case analysis of the slot word for offset `off`:
        if (st == kSlotEmpty) {
            // (1) never written: only the first lap after base may claim it.
            if (off - pv.base >= pv.capacity) {
                *error = make_error(Errc::corrupt, "topic '" + t->name + "' partition " + std::to_string(p) +
                                                       " slot " + std::to_string(off & pv.mask) + " is empty at offset " +
                                                       std::to_string(off) + ", past the first lap");
                return false;
            }
        } else if (d == 0) {
            // (2) this lap is already claimed (or a quarantine rolled onto it): help the tail on.
            ph->tail.compare_exchange_strong(expect_tail, off + 1, std::memory_order_release,
                                             std::memory_order_relaxed);
            continue;
        } else if (d > 0) {
            continue;  // (3) the slot is ahead of the tail we read: reload
        } else if (d == -1 && (st == kSlotPublished || st == kSlotSkipped)) {
            // (4) the previous lap's occupant is finished: claimable.
            wt.first_roll_at = 0;  // not every slot is held: a later roll starts counting afresh
        } else if (d == -1 && st == kSlotQuarantined) {
            // (5) a timed-out claim whose owner may still write these bytes: reuse them only once
            // the owner is certainly dead; otherwise offset `off` becomes another skip record.
            const uint64_t now = mono_now_ns();
            if (!owner_certainly_dead(*t->pool, slot_owner(w), now)) {
                // A whole ring of them (stopped producers' claims cover every slot): nothing is
                // claimable until one resumes or dies. Rolled on, yielding, for block_timeout at
                // most, then refused: a send never spins for as long as a producer stays stopped.
                if (!wt.first_roll_at) {
                    wt.first_roll_off = off;
                    wt.first_roll_at = now;
                } else if (int64_t(off - wt.first_roll_off) >= int64_t(pv.capacity)) {
                    if (now - wt.first_roll_at >= to_ns(options.block_timeout)) {
                        *error = every_slot_held(p, now - wt.first_roll_at);
                        return false;
                    }
                    sched_yield();
                }
                FABRIC_PAUSE_POINT("mq.send.before_roll_quarantine");
                // acq_rel: the skip record is published to readers' acquire of the word.
                if (s->state.compare_exchange_strong(w, make_slot_word(kSlotQuarantined, lap, slot_owner(w)),
                                                     std::memory_order_acq_rel, std::memory_order_relaxed)) {
                    ph->skipped_claims.fetch_add(1, std::memory_order_relaxed);
                    detail::count(*t->pool, CounterId::mq_claims_skipped, 1);
                    ph->tail.compare_exchange_strong(expect_tail, off + 1, std::memory_order_release,
                                                     std::memory_order_relaxed);
                }
                continue;
            }
        } else if (d == -1 && st == kSlotClaimed) {
            // (6) the previous lap is still being written (the ring lapped a slow producer):
            // wait; a certainly-dead owner's claim becomes a skip, a timed-out one a quarantine.
            const uint64_t now = mono_now_ns();
            // How long this claim has been unfinished, at least. A previous-lap claim at `off`
            // was made before the tail passed off - capacity; when this send first met one, at
            // first_stuck_off, the tail stood there, so every such claim below
            // first_stuck_off + capacity was already made then and has been stuck since at
            // least then: one wait for all of them (a stopped batch sender's run, producers
            // frozen together). A claim past that was made after we began to wait (the ring
            // moved on meanwhile): its owner gets its own claim_timeout.
            if (!wt.stuck_since || off != wt.stuck_off || w != wt.stuck_word) {
                if (!wt.first_stuck_at || int64_t(off - wt.first_stuck_off) >= int64_t(pv.capacity)) {
                    wt.first_stuck_off = off;
                    wt.first_stuck_at = now;
                }
                wt.stuck_since = wt.first_stuck_at;
                wt.stuck_off = off;
                wt.stuck_word = w;
            }
            if (now - wt.stuck_probe >= kNsPerMs) {
                wt.stuck_probe = now;
                if (owner_certainly_dead(*t->pool, slot_owner(w), now)) {
                    skip_claim(*t->pool, pv, s, w, false);
                    continue;
                }
            }
            if (now - wt.stuck_since >= to_ns(options.claim_timeout)) skip_claim(*t->pool, pv, s, w, true);
            sched_yield();
            continue;
        } else {
            *error = make_error(Errc::corrupt, "topic '" + t->name + "' partition " + std::to_string(p) + " slot " +
                                                   std::to_string(off & pv.mask) + " has lap tag " +
                                                   std::to_string(slot_lap(w)) + " (state " + std::to_string(st) +
                                                   "), impossible for offset " + std::to_string(off));
            return false;
        }
        // Claim. Acquire (in acq_rel): pairs with the previous occupant's publish/skip, whose
        // bytes are done. The seqlock writer's ordering (claim before any envelope byte) is the
        // release fence in write_envelope, not this CAS: under the C++ model an acquire does
        // not keep later stores from becoming visible before it.
        if (!s->state.compare_exchange_strong(w, make_slot_word(kSlotClaimed, lap, me), std::memory_order_acq_rel,
                                              std::memory_order_relaxed)) {
            cpu_relax();
            continue;
        }
        // Release: pairs with the tail acquire in other producers and in oldest_offset. A
        // failure means a helper already advanced it. (A run raises it further at its end.)
        ph->tail.compare_exchange_strong(expect_tail, off + 1, std::memory_order_release, std::memory_order_relaxed);
        out = Claimed{s, off, lap};
        return true;
    }
}

// Only the two cases that need neither waiting nor repair extend a run: anything else (the
// slot claimed by another producer, a previous lap still being written or quarantined, a full
// ring) ends it, and the next message goes through claim() with its full case analysis.
bool Producer::Impl::claim_next(uint32_t p, const Claimed& prev, Claimed& next) {
    const PartitionView& pv = sends[p].pv;
    const uint64_t off = prev.offset + 1;
    if (on_full != kOnFullOverwrite && int64_t(off - sends[p].head_cache) >= int64_t(pv.capacity)) return false;
    SlotHeader* s = pv.slot(off);
    // Acquire: pairs with the previous occupant's publish/skip CAS (its bytes are done).
    uint64_t w = s->state.load(std::memory_order_acquire);
    const uint64_t st = slot_state(w);
    const uint64_t lap = pv.lap(off);
    if (st == kSlotEmpty) {
        if (off - pv.base >= pv.capacity) return false;  // claim() reports the corruption
    } else if (lap_diff(slot_lap(w), lap & kLapMask) != -1 || (st != kSlotPublished && st != kSlotSkipped)) {
        return false;
    }
    // Acquire (in acq_rel): as in claim(). A helper may have moved the tail past our claims
    // and another producer taken this slot: then the CAS fails and the run ends here.
    if (!s->state.compare_exchange_strong(w, make_slot_word(kSlotClaimed, lap, me), std::memory_order_acq_rel,
                                          std::memory_order_relaxed))
        return false;
    next = Claimed{s, off, lap};
    return true;
}

inline void Producer::Impl::write_envelope(const Claimed& c, const OutgoingMessage& m, uint64_t headers_len, uint64_t ts) {
    SlotHeader* s = c.slot;
    // Seqlock writer: a release fence between the claim (a store to the state word) and the
    // envelope's relaxed stores. It pairs with the reader's acquire fence between its copy and
    // its re-load of the word: a reader whose copy saw any byte written below also sees the
    // claim (or later) on its re-load, and discards the copy (Boehm 2012; docs/topics.md "Poll").
    std::atomic_thread_fence(std::memory_order_release);
    s->offset.store(c.offset, std::memory_order_relaxed);
    s->timestamp_ns.store(ts, std::memory_order_relaxed);
    s->value_len.store(uint32_t(m.value.size()), std::memory_order_relaxed);
    s->key_len.store(uint16_t(m.key.size()), std::memory_order_relaxed);
    s->headers_len.store(uint16_t(headers_len), std::memory_order_relaxed);
    auto* dst = reinterpret_cast<uint8_t*>(s + 1);
    detail::seqlock_copy_in(dst, m.key.data(), m.key.size());
    dst += m.key.size();
    for (const MessageHeader& h : m.headers) {
        const uint16_t nl = uint16_t(h.name.size()), vl = uint16_t(h.value.size());
        detail::seqlock_copy_in(dst, &nl, 2);
        detail::seqlock_copy_in(dst + 2, &vl, 2);
        detail::seqlock_copy_in(dst + 4, h.name.data(), nl);
        detail::seqlock_copy_in(dst + 4 + nl, h.value.data(), vl);
        dst += 4 + nl + vl;
    }
    detail::seqlock_copy_in(dst, m.value.data(), m.value.size());
}

inline bool Producer::Impl::publish(const Claimed& c) {
    uint64_t claimed = make_slot_word(kSlotClaimed, c.lap, me);
    // Publish: seq_cst (a release for the envelope, pairing with readers' acquire of the word;
    // and the store half of the Dekker handshake with parked consumers' data_waiters).
    if (!c.slot->state.compare_exchange_strong(claimed, make_slot_word(kSlotPublished, c.lap, me),
                                               std::memory_order_seq_cst, std::memory_order_acquire)) {
        // We lost the skip race: a consumer or the reaper turned our claim into a skip record.
        // If it quarantined the slot (we looked alive), release it now that we stopped writing.
        release_quarantine(c.slot, claimed);
        return false;
    }
    FABRIC_PAUSE_POINT("mq.send.after_publish");
    return true;
}

Error Producer::Impl::skipped_error(uint32_t p, const Claimed& c) const {
    return make_error(Errc::skipped, "topic '" + t->name + "' partition " + std::to_string(p) + " offset " +
                                         std::to_string(c.offset) +
                                         ": the claim was turned into a skip record before it was published "
                                         "(this producer looked dead or exceeded the claim timeout); the "
                                         "message was NOT delivered, send it again");
}

void Producer::Impl::abandon(uint32_t p, const Claimed& c) {
    const uint64_t claimed = make_slot_word(kSlotClaimed, c.lap, me);
    // A repairer may have quarantined the claim meanwhile: then release it as its claimer.
    if (!skip_claim(*t->pool, sends[p].pv, c.slot, claimed, false))
        release_quarantine(c.slot, c.slot->state.load(std::memory_order_acquire));
}

Result<SendResult> Producer::Impl::send_one(uint32_t p, const OutgoingMessage& m, uint64_t ts) {
    uint64_t headers_len = 0;
    if (!fits(p, m, &headers_len)) [[unlikely]]
        return unfit(p, m);
    Claimed c;
    if (Error error; !claim(p, c, &error)) [[unlikely]]
        return error;
    FABRIC_CRASH_POINT("mq.send.after_claim");
    if (detail::g_mq_after_claim_hook) detail::g_mq_after_claim_hook();
    write_envelope(c, m, headers_len, ts);
    FABRIC_CRASH_POINT("mq.send.before_publish");
    if (!publish(c)) return skipped_error(p, c);
    wake_readers(p);
    return SendResult{p, c.offset};
}

size_t Producer::Impl::send_run(uint32_t p, std::span<const OutgoingMessage> messages, uint64_t ts,
                                BatchStatus* statuses) {
    size_t sent = 0;
    uint64_t headers_len[kMaxRun];
    Claimed claims[kMaxRun];
    auto fail = [&](Error e) {
        detail::batch_failed(statuses[sent], p, std::move(e));
        return sent;
    };
    while (sent < messages.size()) {
        const std::span<const OutgoingMessage> rest = messages.subspan(sent);
        // The run: the next messages that fit (a message that does not fit ends the run
        // before it, and is reported once the run is sent).
        size_t fit = 0;
        while (fit < std::min(rest.size(), kMaxRun) && fits(p, rest[fit], &headers_len[fit])) ++fit;
        if (fit == 0) return fail(unfit(p, rest[0]));
        if (Error error; !claim(p, claims[0], &error)) return fail(std::move(error));
        size_t n = 1;
        while (n < fit && claim_next(p, claims[n - 1], claims[n])) ++n;
        if (n > 1) raise_tail(sends[p].pv.hdr, claims[0].offset + 1, claims[n - 1].offset + 1);
        for (size_t i = 0; i < n; ++i) {
            FABRIC_CRASH_POINT("mq.send.after_claim");
            if (detail::g_mq_after_claim_hook) detail::g_mq_after_claim_hook();
            write_envelope(claims[i], rest[i], headers_len[i], ts);
            FABRIC_CRASH_POINT("mq.send.before_publish");
            if (!publish(claims[i])) {
                // The caller sends again from this message on: the run's later claims must
                // not deliver theirs too.
                for (size_t j = i + 1; j < n; ++j) abandon(p, claims[j]);
                wake_readers(p);
                return fail(skipped_error(p, claims[i]));
            }
            detail::batch_ok(statuses[sent++], p, claims[i].offset);
            // Parked readers learn of the run's first message at once (a producer stopped in
            // the middle of a run does not hold it back until their 50 ms re-check), and of
            // the rest after its last publish.
            if (i == 0 && n > 1) wake_readers(p);
        }
        wake_readers(p);
    }
    return sent;
}

Result<SendResult> Producer::send(ByteView value, std::span<const MessageHeader> headers) {
    const uint32_t p = impl_->next_in_turn(uint32_t(impl_->sends.size()));
    return send_to(p, OutgoingMessage{value, {}, headers});
}

Result<SendResult> Producer::send_keyed(ByteView key, ByteView value, std::span<const MessageHeader> headers) {
    const uint32_t p = uint32_t(key_hash(key) % impl_->sends.size());
    return send_to(p, OutgoingMessage{value, key, headers});
}

Result<SendResult> Producer::send_to(uint32_t partition, const OutgoingMessage& message) {
    Impl& im = *impl_;
    if (partition >= im.sends.size())
        return make_error(Errc::invalid_argument, "partition " + std::to_string(partition) + " >= " +
                                                      std::to_string(im.t->num_partitions) + " partitions of topic '" +
                                                      im.t->name + "'");
    FABRIC_TRY(im.check_lease(partition));
    auto r = im.send_one(partition, message, im.timestamp());
    if (r) detail::count(*im.t->pool, CounterId::mq_messages_published, 1);
    return r;
}

Status Producer::send_batch(std::span<const OutgoingMessage> messages, std::span<BatchStatus> statuses) {
    Impl& im = *impl_;
    if (statuses.size() != messages.size())
        return make_error(Errc::invalid_argument, "send_batch: " + std::to_string(statuses.size()) +
                                                      " statuses for " + std::to_string(messages.size()) +
                                                      " messages (one each)");
    FABRIC_TRY(check_topic(*im.t));
    for (uint32_t p = 0; p < im.t->num_partitions; ++p) FABRIC_TRY(im.check_lease(p));
    const uint64_t ts = im.timestamp();
    const uint32_t parts = im.t->num_partitions;
    // Unkeyed messages are dealt round-robin in chunks (a batch of n unkeyed messages puts
    // n / partitions in a row into each), so that consecutive messages form runs.
    const size_t unkeyed = size_t(std::count_if(messages.begin(), messages.end(),
                                                [](const OutgoingMessage& m) { return m.key.empty(); }));
    const size_t chunk = std::max<size_t>(1, unkeyed / parts);
    size_t dealt = 0;
    uint32_t dealing = 0;
    // A partition where a message failed takes no later message of the batch: per-key order
    // holds, and the caller sends again from each partition's first failure. Unkeyed chunks
    // are dealt to the partitions that have not failed (while any is left).
    static_assert(kMaxPartitions <= 64, "one bit per partition");
    uint64_t failed = 0;
    // The partition of the message that starts a run. A chunk of unkeyed messages is dealt
    // here, at the start of its run, so that the choice sees every failure so far.
    auto run_partition = [&](const OutgoingMessage& m) {
        if (!m.key.empty()) return uint32_t(key_hash(m.key) % parts);
        if (dealt++ % chunk == 0) {
            dealing = im.next_in_turn(parts);
            for (uint32_t k = 0; k < parts && (failed >> dealing & 1); ++k) dealing = im.next_in_turn(parts);
        }
        return dealing;
    };
    // Whether the next message continues the run to partition p (a new chunk ends it).
    auto continues_run = [&](const OutgoingMessage& m, uint32_t p) {
        if (!m.key.empty()) return uint32_t(key_hash(m.key) % parts) == p;
        if (dealt % chunk == 0 || dealing != p) return false;
        ++dealt;
        return true;
    };
    size_t first_failure[kMaxPartitions];
    auto refuse = [&](size_t from, size_t to, uint32_t p) {
        const BatchStatus& first = statuses[first_failure[p]];
        for (size_t j = from; j < to; ++j)
            detail::batch_failed(statuses[j], p,
                                 make_error(first.code, "not sent: message " + std::to_string(first_failure[p]) +
                                                            " to partition " + std::to_string(p) + " failed first (" +
                                                            std::string(errc_name(first.code)) + ")"));
    };
    // Message `at` (its status written) failed: partition p takes nothing more of the batch.
    auto partition_failed = [&](uint32_t p, size_t at, size_t run_end) {
        failed |= uint64_t(1) << p;
        first_failure[p] = at;
        refuse(at + 1, run_end, p);
    };
    size_t sent = 0;
    for (size_t i = 0; i < messages.size();) {
        const uint32_t p = run_partition(messages[i]);
        size_t end = i + 1;
        while (end < messages.size() && continues_run(messages[end], p)) ++end;
        if (failed >> p & 1) {
            refuse(i, end, p);
        } else if (Status lease = im.check_lease(p); !lease) {
            // Fail closed per run: an earlier run may have waited for space up to block_timeout.
            detail::batch_failed(statuses[i], p, std::move(lease).error());
            partition_failed(p, i, end);
        } else {
            const size_t n = im.send_run(p, messages.subspan(i, end - i), ts, &statuses[i]);
            sent += n;
            if (n < end - i) partition_failed(p, i + n, end);
        }
        i = end;
    }
    if (sent) detail::count(*im.t->pool, CounterId::mq_messages_published, sent);
    return {};
}

std::vector<Result<SendResult>> send_to_each(std::span<Producer* const> producers, const OutgoingMessage& message) {
    std::vector<Result<SendResult>> out;
    out.reserve(producers.size());
    for (Producer* p : producers) {
        if (!p) {
            out.emplace_back(make_error(Errc::invalid_argument, "send_to_each: null producer"));
            continue;
        }
        out.push_back(message.key.empty() ? p->send(message.value, message.headers)
                                          : p->send_keyed(message.key, message.value, message.headers));
    }
    return out;
}

}  // namespace fabric_shm
