// SPDX-License-Identifier: MIT
// Waiter entries and bits: claim, watch, release, wake, repair (waiting.h; docs/topics.md,
// "Blocking").
#include "mq/waiting.h"

#include <bit>
#include <climits>

#include "crash_point.h"
#include "futex.h"

namespace fabric_shm::mq {

namespace {

/// Where a claimant starts scanning the table: spread by token and by thread, so that the
/// threads of one process and different processes rarely contend on the same entry.
uint32_t scan_start(OwnerToken me) {
    static std::atomic<uint32_t> next{0};
    thread_local const uint32_t mine = next.fetch_add(1, std::memory_order_relaxed);  // per thread, any value will do
    return (me * 2654435761u + mine * 40503u) % kMaxWaiters;
}

}  // namespace

WaitRegistration& WaitRegistration::operator=(WaitRegistration&& other) noexcept {
    if (this != &other) {
        release();
        table_ = other.table_;
        parts_ = other.parts_;
        num_parts_ = other.num_parts_;
        index_ = other.index_;
        word_ = other.word_;
        watched_ = other.watched_;
        other.table_ = nullptr;
    }
    return *this;
}

bool WaitRegistration::claim(const TopicHandle& t, OwnerToken me) {
    release();
    if (me == 0 || !t.waiters) return false;
    const uint32_t start = scan_start(me);
    for (uint32_t k = 0; k < kMaxWaiters; ++k) {
        const uint32_t i = (start + k) % kMaxWaiters;
        std::atomic<uint64_t>& word = t.waiters[i].word;
        uint64_t w = word.load(std::memory_order_relaxed);  // only a hint; the CAS below decides
        if (waiter_state(w) != kWaiterFree) continue;
        const uint64_t live = make_waiter_word(kWaiterLive, waiter_gen(w), me);
        // Acquire: pairs with the previous holder's release store of FREE, which follows its
        // fetch_and of the bits; so our fetch_or of a bit comes after its clear of it.
        if (!word.compare_exchange_strong(w, live, std::memory_order_acquire, std::memory_order_relaxed)) continue;
        table_ = t.waiters;
        parts_ = t.part_headers.data();
        num_parts_ = uint32_t(t.part_headers.size());
        index_ = i;
        word_ = live;
        watched_ = 0;
        return true;
    }
    return false;
}

void WaitRegistration::watch(uint32_t p) {
    if (!table_ || p >= num_parts_ || (watched_ >> p) & 1) return;
    watched_ |= 1ull << p;
    // seq_cst: the waiter's half of the Dekker handshake. The waiter sets its bit, then
    // re-checks the slot (seq_cst load); a producer publishes (seq_cst CAS), then loads the
    // bits (seq_cst). One of the two sees the other: no lost wake-up.
    parts_[p]->waiters.fetch_or(1ull << index_, std::memory_order_seq_cst);
}

bool WaitRegistration::still_ours() const {
    // Acquire: pairs with a repairer's CAS; only a changed word matters.
    return table_ && table_[index_].word.load(std::memory_order_acquire) == word_;
}

void WaitRegistration::release() noexcept {
    if (!table_) return;
    WaiterSlot& ws = table_[index_];
    uint64_t expect = word_;
    const uint64_t releasing = make_waiter_word(kWaiterReleasing, waiter_gen(word_), waiter_owner(word_));
    // Acq_rel: a repairer that judged us dead may have taken the entry (the CAS fails and we
    // touch nothing: its bits are its business now).
    if (ws.word.compare_exchange_strong(expect, releasing, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        FABRIC_PAUSE_POINT("mq.wait.releasing");
        for (uint64_t m = watched_; m; m &= m - 1) {
            const uint32_t p = uint32_t(std::countr_zero(m));
            // Relaxed: ordered before the FREE store below (release), which the next claimant's
            // CAS acquires; a producer that still sees the bit only makes a spurious wake.
            parts_[p]->waiters.fetch_and(~(1ull << index_), std::memory_order_relaxed);
        }
        uint64_t mine = releasing;
        // Release: pairs with the next claimant's acquire CAS (see claim). A CAS, not a store: a
        // repairer that judged us dead while we were paused here owns the entry now.
        ws.word.compare_exchange_strong(mine, make_waiter_word(kWaiterFree, waiter_gen(word_) + 1, 0),
                                        std::memory_order_release, std::memory_order_relaxed);
    }
    table_ = nullptr;
    watched_ = 0;
}

uint64_t wake_waiters(const TopicHandle& t, uint64_t bits) {
    uint64_t idle = 0;
    for (uint64_t m = bits; m; m &= m - 1) {
        const uint32_t e = uint32_t(std::countr_zero(m));
        WaiterSlot& ws = t.waiters[e];
        // Release: pairs with the waiter's seq_cst load of wake_seq (the value it sleeps on):
        // a waiter that reads the new value also sees our publish.
        ws.wake_seq.fetch_add(1, std::memory_order_release);
        if (detail::futex_wake(ws.wake_seq, INT32_MAX) == 0) idle |= 1ull << e;
    }
    return idle;
}

bool repair_waiter(const Pool& pool, WaiterSlot* table, uint32_t index, std::span<PartitionHeader* const> parts,
                   OwnerToken me, uint64_t now_ns) {
    if (index >= kMaxWaiters || me == 0) return false;
    WaiterSlot& ws = table[index];
    uint64_t w = ws.word.load(std::memory_order_acquire);  // pairs with claim/release CASes
    for (;;) {
        const uint64_t st = waiter_state(w);
        if (st != kWaiterLive && st != kWaiterReleasing) return false;  // free (or corrupt: the check hook says so)
        // Judged like a ring slot's claimer: only a certainly-dead owner (its pid gone, or its
        // registration ended) loses its entry; a paused one keeps it, and its bits keep costing
        // producers one wake call per send to those partitions until it resumes.
        if (!owner_certainly_dead(pool, waiter_owner(w), now_ns)) return false;
        const uint64_t mine = make_waiter_word(kWaiterReleasing, waiter_gen(w), me);
        if (!ws.word.compare_exchange_strong(w, mine, std::memory_order_acq_rel, std::memory_order_acquire))
            continue;  // the word moved: judge the new one
        FABRIC_PAUSE_POINT("mq.waiter.repairing");
        // Relaxed: ordered before the FREE store (release), as in release().
        for (PartitionHeader* ph : parts) ph->waiters.fetch_and(~(1ull << index), std::memory_order_relaxed);
        uint64_t expect = mine;
        ws.word.compare_exchange_strong(expect, make_waiter_word(kWaiterFree, waiter_gen(w) + 1, 0),
                                        std::memory_order_release, std::memory_order_relaxed);
        return true;
    }
}

}  // namespace fabric_shm::mq
