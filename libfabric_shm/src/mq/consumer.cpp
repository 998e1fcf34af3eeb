// SPDX-License-Identifier: MIT
// Consumer: seqlock-style copy out of the slots (state word before and after), gap detection
// for overwritten offsets, skip records for dead or timed-out claims, parking on a waiter
// entry of the topic (waiting.h).
#include "fabric_shm/consumer.h"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer_group.h"  // Claim
#include "fabric_shm/counters.h"
#include "crash_point.h"
#include "fabric_shm/names.h"
#include "futex.h"
#include "mq/topic_internal.h"
#include "cpu_relax.h"
#include "spin_yield.h"
#include "mq/message_headers.h"
#include "mq/waiting.h"
#include "seqlock_copy.h"
#include "pool_impl.h"

namespace fabric_shm {

using namespace mq;

namespace {

using detail::cpu_relax;

constexpr uint64_t kMaxConsumerParkNs = 50 * kNsPerMs;    ///< parked consumers re-check at least this often
constexpr uint64_t kStuckParkNs = 2 * kNsPerMs;   ///< ... and this often while a claim is stuck
constexpr uint64_t kProbeIntervalNs = kNsPerMs;   ///< liveness probes of a stuck claim's owner
constexpr uint64_t kProbeAfterNs = kNsPerMs;      ///< a claim younger than this is just being written
constexpr uint64_t kNapNs = kNsPerMs;             ///< no waiter entry to park on: re-check this often

}  // namespace

// ---- Message / MessageBatch -------------------------------------------------------------

size_t Message::header_count() const {
    size_t n = 0;
    walk_headers(headers_raw, [&](std::string_view, std::string_view) { return ++n, false; });
    return n;
}

MessageHeader Message::header_at(size_t k) const {
    MessageHeader found;
    size_t n = 0;
    walk_headers(headers_raw, [&](std::string_view name, std::string_view value) {
        if (n++ != k) return false;
        found = {name, value};
        return true;
    });
    return found;
}

std::string_view Message::header(std::string_view name) const {
    std::string_view found;
    walk_headers(headers_raw, [&](std::string_view n, std::string_view value) {
        if (n != name) return false;
        found = value;
        return true;
    });
    return found;
}

void MessageBatch::clear() {
    messages_.clear();
    gaps_.clear();
    lost_ = skipped_ = 0;
}

// ---- Consumer ---------------------------------------------------------------------------

struct Consumer::Impl {
    Pool pool_handle;  ///< keeps the mapping alive: the caller's Pool may be moved or dropped
    const Pool* pool = nullptr;  ///< &pool_handle
    std::unique_ptr<TopicHandle> t;
    std::string group;  ///< empty: observer
    GroupRef gref;
    ConsumerOptions options;
    struct PState {
        uint64_t pos = 0;
        uint64_t stuck_pos = UINT64_MAX, stuck_since = 0, last_probe = 0;
        /// The claim last quarantined here for its timeout (its offset, since when it had been
        /// stuck) and the word of the next offset's slot seen right after: a claim of the same
        /// owner made before we judged it (the rest of a send_batch run) inherits that wait
        /// instead of starting its own.
        uint64_t timed_out_pos = UINT64_MAX, timed_out_since = 0, timed_out_next_word = 0;
        /// The position was resolved from a committed offset the ring no longer holds
        /// (from_committed): the next poll of the partition reports [unheld_from, pos) lost.
        bool unheld_pending = false;
        uint64_t unheld_from = 0;
    };
    std::vector<PState> ps;
    /// Per partition, the ranges of offsets reported lost lately (disjoint, ascending, at most
    /// kLostRangesKept: over it the two lowest merge), kept across repositioning: a reassignment
    /// re-resolves from the committed offset, which may lie below gaps reported but not
    /// committed past yet, and report_lost reports only what lies outside them.
    struct LostRange {
        uint64_t from = 0, to = 0;
    };
    static constexpr size_t kLostRangesKept = 8;
    std::vector<std::vector<LostRange>> reported_lost;
    std::vector<uint32_t> assigned;
    /// assign()'s next assignment, built here and swapped with `assigned`: a consumer assigned
    /// again and again (a rebalancing group member) reuses both vectors' capacity.
    std::vector<uint32_t> assigning;
    /// Bit p: assigned partition p is paused (pause()): not read, not waited for. assign()
    /// keeps the bits of the partitions that stay. One bit per partition: topic_layout.h's
    /// kMaxPartitions is 64.
    uint64_t paused = 0;
    bool reads(uint32_t p) const { return (paused >> p & 1) == 0; }
    uint64_t assigned_epoch = 0;  ///< options.epoch when the positions of `assigned` were resolved
    std::vector<OffsetCommit> commit_buf;
    uint32_t rotate = 0;
    bool stuck = false;  ///< some partition waits on a claimed slot (park briefly)
    /// When spinning offers the core away; outlives the poll call, as idleness does.
    detail::SpinYield spin_yield;

    void warn(const std::string& text) {
        if (options.on_warning) options.on_warning(text);
        else std::fprintf(stderr, "fabric-shm: warning: %s\n", text.c_str());
    }
    /// The position `policy` names; *unheld_from (when given) is set to the committed offset
    /// it came from when the ring no longer holds that offset (from_committed).
    Result<uint64_t> resolve(uint32_t p, const SeekPolicy& policy, std::optional<uint64_t>* unheld_from = nullptr);
    /// Starts partition p at a resolved position (a new PState: what was pending is dropped).
    void start_at(uint32_t p, uint64_t pos, std::optional<uint64_t> unheld_from);
    uint64_t clamp(uint32_t p, uint64_t offset) const;
    uint64_t from_committed(uint32_t p, uint64_t offset, std::optional<uint64_t>* unheld_from) const;
    enum class Forgive { below_commits, below_table };
    void forgive_below_table(uint32_t p, uint64_t pos, std::optional<uint64_t>* unheld_from, Forgive what) const;
    uint64_t by_timestamp(uint32_t p, uint64_t wall_ns) const;
    Result<size_t> drain(uint32_t p, MessageBatch& b, size_t limit, uint64_t payload_max);
    bool resolve_stuck(uint32_t p, SlotHeader* s, uint64_t pos, uint64_t w);
    bool any_ready() const;
    void gap(uint32_t p, uint64_t& pos, MessageBatch& b);
    void report_lost(uint32_t p, uint64_t from, uint64_t to, MessageBatch& b);
    void report_lost_once(uint32_t p, uint64_t from, uint64_t to, MessageBatch& b);
};

Result<Consumer> Consumer::open(const Pool& pool, std::string_view topic, std::string_view group,
                                const ConsumerOptions& options) {
    auto t = open_topic(pool, topic);
    if (!t) return std::move(t).error();
    FABRIC_TRY(check_topic(**t));
    auto impl = std::make_unique<Impl>();
    impl->pool_handle = pool;
    impl->pool = &impl->pool_handle;
    impl->options = options;
    impl->group = std::string(group);
    if (!group.empty()) {
        auto g = register_group(**t, group, options.group);
        if (!g) return std::move(g).error();
        impl->gref = *g;
    }
    impl->ps.resize((*t)->num_partitions);
    impl->reported_lost.resize((*t)->num_partitions);
    impl->t = std::move(t.value());
    return Consumer(std::move(impl));
}

Consumer::Consumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Consumer::Consumer(Consumer&&) noexcept = default;
Consumer& Consumer::operator=(Consumer&&) noexcept = default;
Consumer::~Consumer() = default;

uint64_t Consumer::incarnation() const { return impl_->t->incarnation; }
uint32_t Consumer::num_partitions() const { return impl_->t->num_partitions; }
const std::vector<uint32_t>& Consumer::assignment() const { return impl_->assigned; }
void Consumer::set_epoch(uint64_t epoch) { impl_->options.epoch = epoch; }

uint64_t Consumer::Impl::clamp(uint32_t p, uint64_t offset) const {
    const PartitionView& pv = t->parts[p];
    const uint64_t tail = pv.hdr->tail.load(std::memory_order_acquire);  // pairs with the tail CAS
    const uint64_t oldest = oldest_offset(*t, pv);
    if (int64_t(offset - tail) > 0) return tail;
    if (int64_t(offset - oldest) < 0) return oldest;
    return offset;
}

// A group's own committed offset is not clamped to the head: a group registered before a
// head raise it did not see (settle_group_starts, topic.cpp) starts below the head, and the
// producers, which re-read the group table after every raise, keep those offsets for it. What
// the ring no longer holds (below the tail minus the capacity, or below the first offset ever)
// is skipped and reported lost at the next poll, never skipped silently.
uint64_t Consumer::Impl::from_committed(uint32_t p, uint64_t offset, std::optional<uint64_t>* unheld_from) const {
    const PartitionView& pv = t->parts[p];
    const uint64_t tail = pv.hdr->tail.load(std::memory_order_acquire);  // pairs with the tail CAS
    const uint64_t held = oldest_held(pv, tail);
    uint64_t pos = offset;
    if (int64_t(offset - tail) > 0) pos = tail;
    else if (int64_t(offset - held) < 0) pos = held;
    if (int64_t(offset - pos) < 0) *unheld_from = offset;
    return pos;
}

void Consumer::Impl::start_at(uint32_t p, uint64_t pos, std::optional<uint64_t> unheld_from) {
    ps[p] = PState{};
    ps[p].pos = pos;
    ps[p].unheld_pending = unheld_from.has_value();
    ps[p].unheld_from = unheld_from.value_or(pos);
}

uint64_t Consumer::Impl::by_timestamp(uint32_t p, uint64_t wall_ns) const {
    const PartitionView& pv = t->parts[p];
    const uint64_t tail = pv.hdr->tail.load(std::memory_order_acquire);  // pairs with the tail CAS
    // At most one ring: a head damaged far below the tail must not make a seek walk for ever.
    uint64_t from = oldest_offset(*t, pv);
    if (int64_t(tail - from) > int64_t(pv.capacity)) from = oldest_held(pv, tail);
    for (uint64_t o = from; int64_t(tail - o) > 0; ++o) {
        const SlotHeader* s = pv.slot(o);
        const uint64_t w1 = s->state.load(std::memory_order_acquire);  // pairs with the publish CAS
        if (slot_state(w1) != kSlotPublished || slot_lap(w1) != (pv.lap(o) & kLapMask)) continue;
        // Relaxed seqlock reads, validated by the re-check below (see drain).
        const uint64_t ts = s->timestamp_ns.load(std::memory_order_relaxed);
        const uint64_t off = s->offset.load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);  // seqlock: reads above before the re-check
        if (s->state.load(std::memory_order_relaxed) != w1 || off != o) continue;
        if (ts >= wall_ns) return o;
    }
    return tail;
}

// Offsets below the pool table's committed offset are not this group's to lose: a range about
// to be reported lost [*unheld_from, pos) loses that part. The table holds the registration's
// start until its first commit, then its commits. `Forgive::below_commits` (resuming from an
// offset store) counts only commits: a start set by a registration made after the group
// expired says nothing about what the store's offset missed. `Forgive::below_table` (an
// explicit seek) counts the start too: what precedes the registration was never the group's.
void Consumer::Impl::forgive_below_table(uint32_t p, uint64_t pos, std::optional<uint64_t>* unheld_from,
                                         Forgive what) const {
    const GroupSlot& g = t->groups[gref.index];
    const GroupPartition& gp = g.parts[p];
    // Acquire: pairs with commit_in_pool's release increment (after its committed store).
    if ((what == Forgive::below_commits && gp.commits.load(std::memory_order_acquire) == 0) ||
        g.word.load(std::memory_order_acquire) != gref.word)  // pairs with register_group's publish
        return;
    const uint64_t in_pool = gp.committed.load(std::memory_order_acquire);
    if (int64_t(in_pool - **unheld_from) <= 0) return;
    if (int64_t(in_pool - pos) >= 0) unheld_from->reset();
    else *unheld_from = in_pool;
}

Result<uint64_t> Consumer::Impl::resolve(uint32_t p, const SeekPolicy& policy, std::optional<uint64_t>* unheld_from) {
    const PartitionView& pv = t->parts[p];
    std::optional<uint64_t> unheld_ignored;
    if (!unheld_from) unheld_from = &unheld_ignored;
    // In a group, earliest/latest are the reset policy: committed offsets win (SeekPolicy).
    if (!group.empty() && !policy.rewind &&
        (policy.kind == SeekPolicy::Kind::earliest || policy.kind == SeekPolicy::Kind::latest))
        return resolve(p, SeekPolicy::Committed(policy.kind), unheld_from);
    switch (policy.kind) {
        case SeekPolicy::Kind::earliest: return oldest_offset(*t, pv);
        case SeekPolicy::Kind::latest: return pv.hdr->tail.load(std::memory_order_acquire);  // pairs with tail CAS
        case SeekPolicy::Kind::offset: {
            const uint64_t pos = clamp(p, policy.value);
            // Overwrite mode: below the oldest offset is what producers overwrote, and moving
            // past it is reported lost at the next poll (the worker's give-back of a lapped
            // partition meets this). Block and reject modes keep what no group released; below
            // their oldest is only what every group committed past: not a loss.
            // Only an offset at or above the first ever (base) is one that was overwritten; a
            // huge value clamps to the oldest too. What the group committed was processed.
            if (t->on_full == kOnFullOverwrite && int64_t(policy.value - pv.base) >= 0 &&
                int64_t(policy.value - pos) < 0) {
                *unheld_from = policy.value;
                if (!group.empty()) forgive_below_table(p, pos, unheld_from, Forgive::below_table);
            }
            return pos;
        }
        case SeekPolicy::Kind::timestamp: return by_timestamp(p, policy.value);
        case SeekPolicy::Kind::committed: break;
    }
    SeekPolicy fb{policy.fallback, policy.value, SeekPolicy::Kind::earliest, true};  // rewind: no second lookup
    if (fb.kind == SeekPolicy::Kind::committed) fb.kind = SeekPolicy::Kind::earliest;
    if (group.empty()) return resolve(p, fb);
    if (options.offset_store) {
        auto f = options.offset_store->fetch(t->name, t->incarnation, group, p);
        if (!f) return std::move(f).error();
        if (f->incarnation_mismatch) {
            detail::count(*pool, CounterId::mq_offset_resets, 1);
            warn("group '" + group + "' topic '" + t->name + "' partition " + std::to_string(p) +
                 ": stored offsets belong to an earlier incarnation of the topic (it was removed and re-created); "
                 "ignoring them and seeking by the fallback policy");
            return resolve(p, fb);
        }
        std::optional<uint64_t> committed = f->offset;
        // This registration's table, where it has committed: the pool's commit is written
        // before the file's, and a dead-letter record commits in the pool only (it must stay
        // the first uncommitted offset a successor meets: docs/groups.md). So the table is at
        // least as far as the file; a file without an entry does not send a successor back.
        const GroupSlot& g = t->groups[gref.index];
        const GroupPartition& gp = g.parts[p];
        // Acquire: pairs with commit_in_pool's (and record_dead_letter's) release increment.
        if (gp.commits.load(std::memory_order_acquire) != 0 &&
            g.word.load(std::memory_order_acquire) == gref.word) {  // pairs with register_group's publish
            const uint64_t in_pool = gp.committed.load(std::memory_order_acquire);
            // Still ours after the read (a registration that took the slot meanwhile stores its
            // own start there): acquire fence, then the word again, as a seqlock read.
            std::atomic_thread_fence(std::memory_order_acquire);
            if (g.word.load(std::memory_order_relaxed) == gref.word && (!committed || int64_t(in_pool - *committed) > 0))
                committed = in_pool;
        }
        if (!committed) return resolve(p, fb);
        const uint64_t pos = from_committed(p, *committed, unheld_from);
        // A commit writes the pool's table first and the store second: a committer that died
        // (or failed to write the store) between the two leaves the store behind the table,
        // and producers reuse the slots the table released.
        if (*unheld_from) forgive_below_table(p, pos, unheld_from, Forgive::below_commits);
        return pos;
    }
    // The in-pool table: every registered group has a committed offset (set at registration).
    const GroupSlot& g = t->groups[gref.index];
    // Acquire: pairs with commit's store.
    return from_committed(p, g.parts[p].committed.load(std::memory_order_acquire), unheld_from);
}

Status Consumer::assign(std::span<const uint32_t> partitions) {
    Impl& im = *impl_;
    std::vector<uint32_t>& next = im.assigning;
    next.clear();
    for (uint32_t p : partitions) {
        if (p >= im.t->num_partitions)
            return make_error(Errc::invalid_argument, "partition " + std::to_string(p) + " >= " +
                                                          std::to_string(im.t->num_partitions) +
                                                          " partitions of topic '" + im.t->name + "'");
        if (std::find(next.begin(), next.end(), p) != next.end())
            return make_error(Errc::invalid_argument, "partition " + std::to_string(p) + " assigned twice");
        next.push_back(p);
    }
    // Under a new epoch every partition restarts from its committed offset, kept ones too: a
    // member that was evicted (or fenced) and got a partition back may find it handled and
    // committed past its old position by another member, or committed below it (its own
    // refused work) -- an old position would skip messages or commit past them.
    const bool new_epoch = im.options.epoch != im.assigned_epoch;
    for (uint32_t p : next) {
        if (!new_epoch && std::find(im.assigned.begin(), im.assigned.end(), p) != im.assigned.end()) continue;
        std::optional<uint64_t> unheld_from;
        auto pos = im.resolve(p, SeekPolicy::Committed(), &unheld_from);
        if (!pos) return std::move(pos).error();
        im.start_at(p, *pos, unheld_from);
    }
    // A partition that stays assigned stays paused (a member re-assigning after every claim
    // keeps its own flow control); one that leaves forgets it.
    uint64_t kept = 0;
    for (uint32_t p : next) kept |= uint64_t(1) << p;
    im.paused &= kept;
    im.assigned.swap(next);
    im.assigned_epoch = im.options.epoch;
    return {};
}

Status Consumer::assign(const Claim& claim) {
    if (impl_->group.empty())
        return make_error(Errc::invalid_argument, "assign(claim) on an observer of topic '" + impl_->t->name +
                                                      "' (open the Consumer with the claim's group)");
    const uint64_t previous = impl_->options.epoch;
    impl_->options.epoch = claim.epoch;
    Status st = assign(claim.partitions);
    // Refused: what stays assigned stays under its own token. The previous claim's partitions
    // may be another member's now, and the new token can be above their fences (tokens are
    // per member: see commit(partition, offset)).
    if (!st) impl_->options.epoch = previous;
    return st;
}

Status Consumer::assign_all() {
    std::vector<uint32_t> all(impl_->t->num_partitions);
    for (uint32_t i = 0; i < all.size(); ++i) all[i] = i;
    return assign(all);
}

static_assert(kMaxPartitions <= 64, "Consumer::Impl::paused has one bit per partition");

static Status pause_state(Consumer::Impl& im, uint32_t partition, bool pause) {
    if (partition >= im.t->num_partitions ||
        std::find(im.assigned.begin(), im.assigned.end(), partition) == im.assigned.end())
        return make_error(Errc::invalid_argument, std::string(pause ? "pause" : "resume") + " of partition " +
                                                      std::to_string(partition) + ": not assigned to this consumer of topic '" +
                                                      im.t->name + "' (" + std::to_string(im.t->num_partitions) +
                                                      " partitions)");
    if (pause) im.paused |= uint64_t(1) << partition;
    else im.paused &= ~(uint64_t(1) << partition);
    return {};
}

Status Consumer::pause(uint32_t partition) { return pause_state(*impl_, partition, true); }
Status Consumer::resume(uint32_t partition) { return pause_state(*impl_, partition, false); }
bool Consumer::paused(uint32_t partition) const { return partition < kMaxPartitions && !impl_->reads(partition); }

Status Consumer::seek(const SeekPolicy& policy) {
    for (uint32_t p : impl_->assigned) FABRIC_TRY(seek(p, policy));
    return {};
}

Status Consumer::seek(uint32_t partition, const SeekPolicy& policy) {
    Impl& im = *impl_;
    if (partition >= im.t->num_partitions)
        return make_error(Errc::invalid_argument, "partition " + std::to_string(partition) + " >= " +
                                                      std::to_string(im.t->num_partitions) + " partitions");
    FABRIC_TRY(check_topic(*im.t, int(partition)));
    std::optional<uint64_t> unheld_from;
    auto pos = im.resolve(partition, policy, &unheld_from);
    if (!pos) return std::move(pos).error();
    im.start_at(partition, *pos, unheld_from);
    return {};
}

Result<uint64_t> Consumer::position(uint32_t partition) const {
    if (partition >= impl_->t->num_partitions)
        return make_error(Errc::invalid_argument, "partition " + std::to_string(partition) + " out of range");
    return impl_->ps[partition].pos;
}

Result<uint64_t> Consumer::lag(uint32_t partition) const {
    if (partition >= impl_->t->num_partitions)
        return make_error(Errc::invalid_argument, "partition " + std::to_string(partition) + " out of range");
    const uint64_t tail = impl_->t->parts[partition].hdr->tail.load(std::memory_order_acquire);  // pairs with tail CAS
    const uint64_t pos = impl_->ps[partition].pos;
    return int64_t(tail - pos) > 0 ? tail - pos : 0;
}

void Consumer::Impl::gap(uint32_t p, uint64_t& pos, MessageBatch& b) {
    const PartitionView& pv = t->parts[p];
    // Acquire: pairs with the tail CAS. The slot holds offset >= pos + capacity, so pos is lost
    // for certain; the tail may still lag that claim (by a step, or by the rest of a producer's
    // run of claims), hence the max: an undershoot gaps one offset and the next round goes on.
    const uint64_t tail = pv.hdr->tail.load(std::memory_order_acquire);
    uint64_t next = oldest_held(pv, tail);
    if (int64_t(next - pos) <= 0) next = pos + 1;
    report_lost(p, pos, next, b);
    pos = next;
}

// [from, to) of partition p is gone: counted and reported, except what was reported lately
// (the same gap met again after a repositioning is not a second loss).
void Consumer::Impl::report_lost(uint32_t p, uint64_t from, uint64_t to, MessageBatch& b) {
    auto below = [](uint64_t a, uint64_t c) { return int64_t(a - c) < 0; };  // wrap-safe a < c
    std::vector<LostRange>& ranges = reported_lost[p];
    uint64_t next = from;  // reported (now or before) up to here
    for (const LostRange& r : ranges) {
        if (!below(next, r.to)) continue;  // wholly before what is left
        if (!below(r.from, to)) break;     // wholly after
        if (below(next, r.from)) report_lost_once(p, next, r.from, b);
        next = r.to;
    }
    if (below(next, to)) report_lost_once(p, next, to, b);
    // Remember [from, to), merged with what it touches.
    ranges.push_back({from, to});
    std::sort(ranges.begin(), ranges.end(), [&](const LostRange& x, const LostRange& y) { return below(x.from, y.from); });
    size_t kept = 0;
    for (size_t i = 1; i < ranges.size(); ++i) {
        if (!below(ranges[kept].to, ranges[i].from)) {  // touches or overlaps: merge
            if (below(ranges[kept].to, ranges[i].to)) ranges[kept].to = ranges[i].to;
        } else {
            ranges[++kept] = ranges[i];
        }
    }
    ranges.resize(kept + 1);
    // Over the bound, the two lowest become one: what lay between them (read, or skipped, in
    // order) is then never reported, where dropping the lowest would report it a second time.
    while (ranges.size() > kLostRangesKept) {
        ranges[1].from = ranges[0].from;
        ranges.erase(ranges.begin());
    }
}

void Consumer::Impl::report_lost_once(uint32_t p, uint64_t from, uint64_t to, MessageBatch& b) {
    const uint64_t lost = to - from;
    b.lost_ += lost;
    if (!b.gaps_.empty() && b.gaps_.back().partition == p && b.gaps_.back().to == from) b.gaps_.back().to = to;
    else b.gaps_.push_back(Gap{p, from, to});
    detail::count(*pool, CounterId::mq_messages_overwritten, lost);
}

bool Consumer::Impl::resolve_stuck(uint32_t p, SlotHeader* s, uint64_t pos, uint64_t w) {
    PState& st = ps[p];
    const uint64_t now = mono_now_ns();
    if (st.stuck_pos != pos) {
        st.stuck_pos = pos;
        st.stuck_since = now;
        st.last_probe = now;
        // A stopped producer's run of claims is one wait, not one claim_timeout per claim: the
        // offset right after a claim we quarantined, still showing the claim its owner had made
        // there when we judged it, has been stuck as long.
        if (pos == st.timed_out_pos + 1 && w == st.timed_out_next_word) st.stuck_since = st.timed_out_since;
        else return false;
    }
    if (now - st.stuck_since >= kProbeAfterNs && now - st.last_probe >= kProbeIntervalNs) {
        st.last_probe = now;
        if (owner_certainly_dead(*pool, slot_owner(w), now)) return skip_claim(*pool, t->parts[p], s, w, false);
    }
    if (now - st.stuck_since >= to_ns(options.claim_timeout)) {
        const PartitionView& pv = t->parts[p];
        if (!skip_claim(*pool, pv, s, w, true)) return false;
        FABRIC_PAUSE_POINT("mq.poll.after_quarantine");
        // The next slot's word, read after our quarantine: a claim there by the same owner at
        // the next offset's lap was made before the owner could learn of the quarantine, so
        // it is part of the same stopped send (a resend after the skip claims at the tail,
        // past its run, and shows up here only if we were stopped between the CAS and this
        // load; then the live owner's send is skipped once more, and it sends again).
        // Acquire: pairs with the claimer's CAS, like every read of a slot word.
        const uint64_t next = pv.slot(pos + 1)->state.load(std::memory_order_acquire);
        const bool same_send = slot_state(next) == kSlotClaimed && slot_owner(next) == slot_owner(w) &&
                               slot_lap(next) == (pv.lap(pos + 1) & kLapMask);
        st.timed_out_pos = pos;
        st.timed_out_since = st.stuck_since;
        st.timed_out_next_word = same_send ? next : 0;
        return true;
    }
    return false;
}

Result<size_t> Consumer::Impl::drain(uint32_t p, MessageBatch& b, size_t limit, uint64_t payload_max) {
    const PartitionView& pv = t->parts[p];
    uint64_t pos = ps[p].pos;
    size_t n = 0;
    if (ps[p].unheld_pending) [[unlikely]] {
        // The committed offset this position was resolved from is gone from the ring.
        ps[p].unheld_pending = false;
        report_lost(p, ps[p].unheld_from, pos, b);
    }
    // Every round delivers, skips or gaps at least one offset, or re-reads a word that changed.
    // Bounded anyway: on a damaged ring (a tail below slots that claim later laps) gap() advances
    // one offset per round and a poll would otherwise spin for 2^64 offsets (fuzz_topic found
    // it). Past the bound the round's progress is kept and the next poll goes on.
    const uint64_t max_rounds = uint64_t(limit) + 2 * pv.capacity;
    // A damaged slot at `pos`: what this call delivered, skipped or reported lost before it is
    // kept (the position stops at the slot), and the error is returned by the call that
    // reaches the slot first, with nothing else in hand.
    auto damaged = [&](Error e) -> Result<size_t> {
        if (pos == ps[p].pos) return e;
        ps[p].pos = pos;
        return n;
    };
    for (uint64_t rounds = 0; n < limit && rounds < max_rounds; ++rounds) {
        SlotHeader* s = pv.slot(pos);
        // Acquire: pairs with the producer's publish CAS (envelope visible) or a skip CAS.
        const uint64_t w1 = s->state.load(std::memory_order_acquire);
        const uint64_t st = slot_state(w1);
        if (st == kSlotEmpty) break;  // first lap, not claimed yet
        const int64_t d = lap_diff(slot_lap(w1), pv.lap(pos) & kLapMask);
        if (d < 0) break;  // an older lap: offset pos not produced yet
        if (d > 0) {       // overwritten by a later lap
            gap(p, pos, b);
            continue;
        }
        if (st == kSlotSkipped || st == kSlotQuarantined) {
            ++pos;
            ++b.skipped_;
            continue;
        }
        if (st == kSlotClaimed) {
            if (resolve_stuck(p, s, pos, w1)) continue;  // turned into a skip: re-read the word
            stuck = true;
            break;  // in order: nothing after a claim in progress is handed out
        }
        if (st != kSlotPublished)
            return damaged(make_error(Errc::corrupt, "topic '" + t->name + "' partition " + std::to_string(p) + " slot " +
                                                 std::to_string(pos & pv.mask) + " has state " + std::to_string(st)));
        // Seqlock copy: read the envelope and bytes (relaxed), acquire fence, re-read the word;
        // a change means a producer claimed the slot for a later lap while we copied (overwrite
        // mode, or an observer overtaken): discard and treat as a gap. The fence pairs with the
        // claimer's release fence between its claim and its first store (producer.cpp): if the
        // copy saw any byte of the next lap, the re-read sees that lap's claim. Bytes are
        // bounds-checked before they are copied.
        const uint64_t off = s->offset.load(std::memory_order_relaxed);
        const uint64_t ts = s->timestamp_ns.load(std::memory_order_relaxed);
        const uint32_t vl = s->value_len.load(std::memory_order_relaxed);
        const uint16_t kl = s->key_len.load(std::memory_order_relaxed);
        const uint16_t hl = s->headers_len.load(std::memory_order_relaxed);
        const uint64_t total = uint64_t(kl) + hl + vl;
        const size_t at = b.starts_.empty() ? 0 : b.starts_.back();
        const bool fits = total <= payload_max;
        if (fits) detail::seqlock_copy_out(b.arena_.data() + at, s + 1, total);
        std::atomic_thread_fence(std::memory_order_acquire);  // the copy above happens before the re-check
        const uint64_t w2 = s->state.load(std::memory_order_relaxed);
        if (w2 != w1) continue;  // re-evaluate: it now shows a later lap (gap) or a new claim
        if (!fits)
            return damaged(make_error(Errc::corrupt, "topic '" + t->name + "' partition " + std::to_string(p) + " offset " +
                                                 std::to_string(pos) + ": envelope claims " + std::to_string(total) +
                                                 " bytes, the slot payload is " + std::to_string(payload_max)));
        if (off != pos) {
            if (int64_t(off - pos) > 0) {  // ABA across 2^29 laps: a much later message
                gap(p, pos, b);
                continue;
            }
            return damaged(make_error(Errc::corrupt, "topic '" + t->name + "' partition " + std::to_string(p) + " slot " +
                                                 std::to_string(pos & pv.mask) + " holds offset " +
                                                 std::to_string(off) + " where " + std::to_string(pos) +
                                                 " was expected"));
        }
        const uint8_t* base = b.arena_.data() + at;
        Message m;
        m.partition = p;
        m.offset = pos;
        m.timestamp_ns = ts;
        m.key = std::span<const uint8_t>(base, kl);
        m.headers_raw = std::span<const uint8_t>(base + kl, hl);
        m.value = std::span<const uint8_t>(base + kl + hl, vl);
        b.messages_.push_back(m);
        b.starts_.push_back(at + size_t(total));
        ++pos;
        ++n;
    }
    ps[p].pos = pos;
    return n;
}

bool Consumer::Impl::any_ready() const {
    // seq_cst loads (slot_readiness): the re-check half of the parking handshake.
    for (uint32_t p : assigned)
        if (reads(p) && slot_readiness(t->parts[p], ps[p].pos) == SlotReadiness::ready) return true;
    return false;
}

void mq::consumer_watch(const Consumer::Impl& c, std::vector<WatchedPartition>& out) {
    for (uint32_t p : c.assigned)
        if (c.reads(p)) out.push_back(WatchedPartition{&c.t->parts[p], c.ps[p].pos, p});
}
const TopicHandle& mq::consumer_topic(const Consumer::Impl& c) { return *c.t; }

// Parking handshake (Dekker), per park: claim an entry of the topic's waiter table, set its bit
// on every assigned partition (seq_cst), read the entry's futex word, re-check the slots
// (seq_cst); a producer publishes (seq_cst CAS), then loads the partition's bits (seq_cst) and
// bumps + FUTEX_WAKEs the entries they name. Either the consumer sees the message, or the
// producer sees the bit (then FUTEX_WAIT returns at once on the changed word, or is woken).
// The bits are cleared as soon as the consumer wakes, so sends while it drains cost nothing.
// Parking is bounded by 50 ms regardless.
Result<size_t> Consumer::poll(MessageBatch& batch, size_t max, Duration timeout) {
    const uint64_t timeout_ns = to_ns(timeout);
    Impl& im = *impl_;
    batch.clear();
    batch.starts_.clear();
    // One coarse clock read per poll for both fail-closed checks (region lease, group lease).
    const uint64_t coarse = mono_coarse_ns();
    FABRIC_TRY(check_topic_at(*im.t, coarse));
    if (!im.group.empty()) FABRIC_TRY(renew_group(*im.t, im.gref, im.group, coarse));
    if (im.assigned.empty() || max == 0) return size_t(0);
    const uint64_t payload_max = im.t->stride - kEnvelopeBytes;
    // Size the arena once for the largest poll possible: no allocation in the steady state.
    const size_t cap_msgs = std::min<size_t>(max, im.assigned.size() * im.t->capacity);
    if (batch.arena_.size() < cap_msgs * payload_max) batch.arena_.resize(cap_msgs * payload_max);
    if (batch.messages_.capacity() < cap_msgs) batch.messages_.reserve(cap_msgs);
    if (batch.starts_.capacity() < cap_msgs) batch.starts_.reserve(cap_msgs);
    uint64_t start_ns = 0, deadline = 0, now = 0;
    uint32_t spins = 0;  // empty rounds of this call (a wrap after 2^32 only means 256 more pauses)
    // Every assigned partition paused: nothing can arrive, so the wait neither spins nor takes
    // one of the topic's waiter entries (which other parked consumers need); it sleeps.
    bool reading_any = im.paused == 0;
    for (size_t k = 0; !reading_any && k < im.assigned.size(); ++k) reading_any = im.reads(im.assigned[k]);
    for (;;) {
        im.stuck = false;
        size_t total = 0;
        const size_t na = im.assigned.size();
        for (size_t k = 0; k < na && total < cap_msgs; ++k) {
            const uint32_t p = im.assigned[(im.rotate + k) % na];
            if (!im.reads(p)) continue;
            const size_t limit = std::min<size_t>(cap_msgs - total, im.t->capacity);
            auto r = im.drain(p, batch, limit, payload_max);
            if (!r) {
                // A damaged partition fails closed alone: what this poll took from the others
                // (their positions have moved past it) is returned now, and the error comes
                // back at the next poll, which finds the partition where it stopped.
                if (total > 0 || batch.lost_ > 0 || batch.skipped_ > 0) break;
                im.rotate++;  // the next poll starts at another partition: none starves behind it
                return std::move(r).error();
            }
            total += *r;
        }
        im.rotate++;
        if (total > 0 || batch.lost_ > 0 || timeout_ns == 0) {
            if (total) detail::count(*im.pool, CounterId::mq_messages_consumed, total);
            return total;
        }
        // Spinning reads the clock only every 64 rounds (a clock read costs more than a round).
        if (!start_ns || (++spins & 63) == 0) {
            now = mono_now_ns();
            if (!start_ns) {
                start_ns = now;
                deadline = timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + timeout_ns;
            }
            if (now >= deadline) return size_t(0);
        }
        if (reading_any && (im.options.wait == WaitMode::spin || now - start_ns < to_ns(im.options.spin))) {
            // Offer the core away now and then (spin_yield.h: how often, and why it adapts).
            // `now` is at most 64 rounds old.
            if (im.spin_yield.due(spins, now)) {
                im.spin_yield.yield(now);
            } else {
                cpu_relax();
            }
            continue;
        }
        now = mono_now_ns();
        if (now >= deadline) return size_t(0);  // the spin phase reads the clock only every 64 rounds
        const uint64_t slice = std::min(im.stuck ? kStuckParkNs : kMaxConsumerParkNs, deadline - now);
        WaitRegistration reg;
        if (reading_any && reg.claim(*im.t, im.pool->self())) {
            for (uint32_t p : im.assigned)
                if (im.reads(p)) reg.watch(p);
            FABRIC_PAUSE_POINT("mq.wait.registered");
            const uint32_t seq = reg.load_seq();  // before the re-check: a bump after it wakes us
            if (!im.any_ready()) detail::futex_wait(reg.word(), seq, slice);
            reg.release();
        } else {
            // Every entry taken (64 parked waiters on this topic) or a read-only pool: nap.
            // Everything paused: sleep the slice (the leases are checked after it).
            const uint64_t nap = reading_any ? std::min(slice, kNapNs) : slice;
            const timespec ts{time_t(nap / kNsPerSec), long(nap % kNsPerSec)};
            nanosleep(&ts, nullptr);
        }
        FABRIC_TRY(im.pool->heartbeat());
        const uint64_t c2 = mono_coarse_ns();
        FABRIC_TRY(check_topic_at(*im.t, c2));
        if (!im.group.empty()) FABRIC_TRY(renew_group(*im.t, im.gref, im.group, c2));
        now = mono_now_ns();
        if (now >= deadline) return size_t(0);
    }
}

Status Consumer::commit() {
    Impl& im = *impl_;
    if (im.group.empty())
        return make_error(Errc::invalid_argument, "an observer (no group) of topic '" + im.t->name +
                                                      "' has nothing to commit");
    im.commit_buf.clear();
    for (uint32_t p : im.assigned) im.commit_buf.push_back(OffsetCommit{p, im.ps[p].pos, im.options.epoch});
    if (im.commit_buf.empty()) return {};
    // The in-pool table first: it is the fence (epochs) and what producers' back-pressure reads.
    FABRIC_TRY(commit_in_pool(*im.t, im.gref, im.group, im.commit_buf, lock_wait_ns(im.options.lock_wait)));
    if (im.options.offset_store)
        FABRIC_TRY(im.options.offset_store->commit(im.t->name, im.t->incarnation, im.group, im.commit_buf));
    return {};
}

Status Consumer::commit(uint32_t partition, uint64_t next_offset) {
    Impl& im = *impl_;
    if (im.group.empty())
        return make_error(Errc::invalid_argument, "an observer (no group) has nothing to commit");
    if (partition >= im.t->num_partitions)
        return make_error(Errc::invalid_argument, "partition " + std::to_string(partition) + " out of range");
    // A group member's commit is fenced by its token, but tokens are per member: one that
    // released a partition and then drew a newer token for another partition is above the
    // fence its successor raised on the first. Its assignment is what keeps it out.
    if (im.options.epoch != 0 && std::find(im.assigned.begin(), im.assigned.end(), partition) == im.assigned.end())
        return make_error(Errc::stale_epoch, "commit to partition " + std::to_string(partition) + " of topic '" +
                                                 im.t->name + "': not assigned to this consumer under token " +
                                                 std::to_string(im.options.epoch) + " (released or moved)");
    const uint64_t tail = im.t->parts[partition].hdr->tail.load(std::memory_order_acquire);  // pairs with tail CAS
    if (int64_t(next_offset - tail) > 0)
        return make_error(Errc::invalid_argument, "commit offset " + std::to_string(next_offset) +
                                                      " is beyond partition " + std::to_string(partition) +
                                                      "'s next offset " + std::to_string(tail));
    const OffsetCommit c{partition, next_offset, im.options.epoch};
    FABRIC_TRY(commit_in_pool(*im.t, im.gref, im.group, std::span<const OffsetCommit>(&c, 1),
                              lock_wait_ns(im.options.lock_wait)));
    if (im.options.offset_store)
        FABRIC_TRY(im.options.offset_store->commit(im.t->name, im.t->incarnation, im.group,
                                                   std::span<const OffsetCommit>(&c, 1)));
    return {};
}

}  // namespace fabric_shm
