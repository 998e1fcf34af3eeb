// SPDX-License-Identifier: MIT
// DlqRouter: per-offset attempt counters in the group table (GroupPartition::attempt_window,
// one word per in-flight offset, written by the partition's owner), retries with backoff,
// dead letters. A
// dead letter is fenced like a commit: the decision is recorded in the group table under the
// member's fence token (refused once a newer owner fenced the partition) before it is sent,
// and a later owner that finds the record dead-letters the message instead of processing it.
#include "fabric_shm/dlq.h"

#include <time.h>

#include <algorithm>
#include <optional>
#include <unordered_set>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer_group.h"
#include "crash_point.h"
#include "fabric_shm/names.h"
#include "fabric_shm/placement_hint.h"
#include "mq/group_internal.h"

namespace fabric_shm {

using namespace mq;

bool DlqPolicy::is_permanent(Errc code) const {
    return std::find(permanent.begin(), permanent.end(), code) != permanent.end();
}

Duration DlqPolicy::backoff(uint64_t attempt) const {
    const uint64_t initial = to_ns(initial_backoff), cap = to_ns(max_backoff);
    uint64_t b = initial;
    for (uint64_t i = 1; i < attempt && b < cap; ++i) b = b > cap / 2 ? cap : b * 2;
    return ns_duration(std::min(b, cap));
}

Status sleep_with_heartbeat(Duration duration, Duration slice, const std::function<Status()>& heartbeat) {
    const uint64_t ns = to_ns(duration);
    uint64_t slice_ns = to_ns(slice);
    const uint64_t end = mono_now_ns() + ns;
    if (slice_ns == 0) slice_ns = ns;
    for (;;) {
        const uint64_t now = mono_now_ns();
        if (now >= end) return {};
        const uint64_t d = std::min(end - now, slice_ns);
        timespec ts{time_t(d / kNsPerSec), long(d % kNsPerSec)};
        nanosleep(&ts, nullptr);
        if (heartbeat) FABRIC_TRY(heartbeat());
    }
}

TopicConfig dead_letter_topic_config(const TopicConfig& source) {
    TopicConfig cfg;
    cfg.num_partitions = source.num_partitions;
    cfg.partition_capacity = 256;
    cfg.partition_stride = uint32_t(std::min<uint64_t>(uint64_t(source.partition_stride) + kDeadLetterStrideRoom,
                                                       mq::kMaxSlotStride));
    cfg.on_full = OnFull::block;
    return cfg;
}

namespace {
/// At most `n` bytes of `text`, cut before a UTF-8 sequence that would not fit whole. Text
/// that is not UTF-8 (a run of bytes 0x80..0xbf) is cut at `n`: a sequence is 4 bytes at most.
std::string utf8_prefix(std::string_view text, uint64_t n) {
    if (text.size() <= n) return std::string(text);
    size_t cut = size_t(n);
    while (cut > 0 && size_t(n) - cut < 3 && (uint8_t(text[cut]) & 0xc0) == 0x80) --cut;  // text[cut] continues one
    if ((uint8_t(text[cut]) & 0xc0) == 0x80) cut = size_t(n);  // no lead byte within reach
    return std::string(text.substr(0, cut));
}
}  // namespace

Status create_dead_letter_topic(Pool& pool, std::string_view name, const TopicConfig& config) {
    return mq::create_topic(pool, name, config, mq::kMaxSlotStride);
}

Status ensure_dead_letter_topic(Pool& pool, std::string_view name, const TopicConfig& config, Duration wait) {
    return mq::ensure_topic(pool, name, config, wait, mq::kMaxSlotStride);
}

Result<uint64_t> dead_letter_count(const Pool& pool, std::string_view dlq_topic) {
    auto t = open_topic(pool, dlq_topic, 0);  // an observer: a topic being created has none yet
    if (!t) return std::move(t).error();
    uint64_t n = 0;
    for (const auto& pv : (*t)->parts) {
        const uint64_t next = pv.hdr->tail.load(std::memory_order_acquire);  // pairs with the tail CAS
        const uint64_t oldest = oldest_offset(**t, pv);
        if (int64_t(next - oldest) <= 0) continue;
        // A ring's worth at most: more would be a damaged head (nothing read from the pool is
        // trusted), and a walk of it would not end.
        const uint64_t from = next - oldest > pv.capacity ? next - pv.capacity : oldest;
        for (uint64_t o = from; o != next; ++o) {
            // Relaxed: a count of the words as they stand; nothing of the slot is read after it.
            const uint64_t w = pv.slot(o)->state.load(std::memory_order_relaxed);
            if (slot_state(w) == kSlotPublished && slot_lap(w) == (pv.lap(o) & kLapMask)) ++n;
        }
    }
    return n;
}

struct DlqRouter::Impl {
    Pool pool_handle;  ///< keeps the mapping alive: the caller's Pool may be moved or dropped
    Pool* pool = nullptr;  ///< &pool_handle
    std::string topic, group, dlq_name;
    DlqPolicy policy;
    std::unique_ptr<TopicHandle> t;
    GroupRef gref;
    std::optional<Producer> producer;
    uint64_t dead = 0;
    uint64_t epoch = 0;  ///< the member's fence token; 0: unfenced

    GroupPartition* part(uint32_t p) const { return p < t->num_partitions ? &t->groups[gref.index].parts[p] : nullptr; }

    Status check() const {
        FABRIC_TRY(check_topic(*t));
        // Acquire: pairs with deregister's release store.
        if (t->groups[gref.index].word.load(std::memory_order_acquire) != gref.word)
            return make_error(Errc::not_found, "group '" + group + "' on topic '" + topic + "' was deregistered");
        return {};
    }

    /// stale_epoch when a newer owner fenced the message's partition above our token.
    Status check_fence(const Message& m, std::string_view what) const {
        const GroupPartition* gp = part(m.partition);
        if (epoch == 0 || !gp) return {};
        // Acquire: pairs with the fence raiser's lock release (a plain check: the decisive
        // one is record_dead_letter's, under the lock).
        const uint64_t fence = gp->commit_epoch.load(std::memory_order_acquire);
        if (fence <= epoch) return {};
        return make_error(Errc::stale_epoch, std::string(what) + " of topic '" + topic + "' partition " +
                                                 std::to_string(m.partition) + " offset " + std::to_string(m.offset) +
                                                 " refused: fence token " + std::to_string(epoch) + " < " +
                                                 std::to_string(fence) + " (a newer owner has the partition)");
    }

    /// The attempt-window entry of message's offset (nullptr: partition out of range).
    std::atomic<uint64_t>* entry(const Message& m) const {
        GroupPartition* gp = part(m.partition);
        return gp ? &gp->attempt_window[m.offset % kAttemptWindow] : nullptr;
    }

    /// Current count for message (1 when its offset is not counted).
    uint64_t current(const Message& m) const {
        const std::atomic<uint64_t>* e = entry(m);
        if (!e) return 1;
        const uint64_t w = e->load(std::memory_order_seq_cst);  // pairs with begin's stores
        return attempt_word_is(w, m.offset) && attempt_word_count(w) > 0 ? attempt_word_count(w) : 1;
    }

    /// Creates the DLQ topic on first use. Several members (of this group or others sharing
    /// the DLQ) may dead-letter at the same moment: ensure() makes the losers wait for the
    /// winner's creation instead of finding the topic "missing". A creator stopped mid-way
    /// holds it past the wait: busy, which a caller retries later (the decision is recorded).
    Status open_dlq() {
        if (producer) return {};
        TopicConfig source;
        source.num_partitions = t->num_partitions;
        source.partition_stride = uint32_t(t->stride);
        if (Status st = ensure_dead_letter_topic(*pool, dlq_name, dead_letter_topic_config(source),
                                                 policy.send_wait);
            !st) {
            if (st.code() == Errc::not_ready)
                return make_error(Errc::busy, "dead-letter topic '" + dlq_name + "': " + st.error().message);
            return st;
        }
        ProducerOptions po;
        po.block_timeout = policy.send_wait;
        auto pr = Producer::open(*pool, dlq_name, po);
        if (!pr) return std::move(pr).error();
        producer.emplace(std::move(*pr));
        return {};
    }
};

Result<DlqRouter> DlqRouter::open(Pool& pool, std::string_view topic, std::string_view group,
                                  const DlqPolicy& policy) {
    if (policy.max_attempts == 0) return make_error(Errc::invalid_argument, "max_attempts 0 must be >= 1");
    auto t = open_topic(pool, topic);
    if (!t) return std::move(t).error();
    uint64_t word = 0;
    const int idx = find_group(**t, group, &word);
    if (idx < 0)
        return make_error(Errc::not_found, "group '" + std::string(group) + "' is not registered on topic '" +
                                               std::string(topic) + "' (open the ConsumerGroup first)");
    std::string dlq = policy.dlq_topic.empty() ? std::string(topic) + ".dlq" : policy.dlq_topic;
    FABRIC_TRY(validate_name("dead-letter topic", dlq));
    if (dlq == topic) return make_error(Errc::invalid_argument, "dead-letter topic '" + dlq + "' is the source topic");
    auto im = std::make_unique<Impl>();
    im->pool_handle = pool;
    im->pool = &im->pool_handle;
    im->topic = std::string(topic);
    im->group = std::string(group);
    im->dlq_name = std::move(dlq);
    im->policy = policy;
    im->t = std::move(*t);
    im->gref = GroupRef{idx, word};
    return DlqRouter(std::move(im));
}

DlqRouter::DlqRouter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DlqRouter::DlqRouter(DlqRouter&&) noexcept = default;
DlqRouter& DlqRouter::operator=(DlqRouter&&) noexcept = default;
DlqRouter::~DlqRouter() = default;

void DlqRouter::set_epoch(uint64_t fence_token) { impl_->epoch = fence_token; }

void DlqRouter::assign(const Claim& claim) { set_epoch(claim.epoch); }

bool DlqRouter::decided(const Message& m) const {
    const Impl& im = *impl_;
    return im.epoch != 0 && dead_letter_recorded(*im.t, im.gref, m.partition, m.offset);
}

const std::string& DlqRouter::dlq_topic() const { return impl_->dlq_name; }
const DlqPolicy& DlqRouter::policy() const { return impl_->policy; }
uint64_t DlqRouter::dead_lettered() const { return impl_->dead; }

Result<uint64_t> DlqRouter::begin(const Message& m) {
    Impl& im = *impl_;
    FABRIC_TRY(im.check());
    GroupPartition* gp = im.part(m.partition);
    if (!gp)
        return make_error(Errc::invalid_argument, "message partition " + std::to_string(m.partition) + " >= " +
                                                      std::to_string(im.t->num_partitions));
    // A zombie (evicted, its partition fenced) does not count hand-outs of messages its
    // successor owns. Racy by one count (a pause between this check and the store).
    FABRIC_TRY(im.check_fence(m, "hand-out"));
    // Single writer: the partition's owner (a zombie racing it can only skew a count). One
    // word holds offset and count, so a crash never leaves a count attributed to another
    // offset. seq_cst: pairs with current() and uncommitted_window_end() of a later owner.
    std::atomic<uint64_t>& e = gp->attempt_window[m.offset % kAttemptWindow];
    uint64_t w = e.load(std::memory_order_seq_cst);
    for (;;) {
        if (attempt_word_is(w, m.offset) && attempt_word_count(w) > 0) {
            FABRIC_CRASH_POINT("dlq.begin.before_count");
            const uint64_t n = std::min(attempt_word_count(w) + 1, kAttemptCountMax);
            if (e.compare_exchange_weak(w, make_attempt_word(m.offset, n), std::memory_order_seq_cst)) return n;
            continue;
        }
        // A later offset of the same entry still counted: this is a replay below it (after a
        // crash mid-batch), not counted.
        if (attempt_word_count(w) > 0 && (m.offset & kAttemptOffsetMask) < attempt_word_offset(w)) return uint64_t(1);
        if (e.compare_exchange_weak(w, make_attempt_word(m.offset, 1), std::memory_order_seq_cst)) return uint64_t(1);
    }
}

Status DlqRouter::ack(const Message& m) {
    std::atomic<uint64_t>* e = impl_->entry(m);
    if (!e) return make_error(Errc::invalid_argument, "message partition " + std::to_string(m.partition) + " out of range");
    // Keep the offset (so replays below it stay uncounted); zero the count.
    uint64_t w = e->load(std::memory_order_seq_cst);
    while (attempt_word_is(w, m.offset) && attempt_word_count(w) != 0 &&
           !e->compare_exchange_weak(w, make_attempt_word(m.offset, 0), std::memory_order_seq_cst)) {
    }
    return {};
}

Status DlqRouter::refund(const Message& m) {
    Impl& im = *impl_;
    std::atomic<uint64_t>* e = im.entry(m);
    if (!e) return make_error(Errc::invalid_argument, "message partition " + std::to_string(m.partition) + " out of range");
    // Fenced: a member that paused past its session timeout after its put found the store
    // full must not take a count back from the partition's new owner.
    if (im.epoch != 0) {
        const uint64_t offset = m.offset;
        return refund_attempts(*im.t, im.gref, im.group, m.partition, std::span(&offset, 1), im.epoch,
                               lock_wait_ns(im.policy.lock_wait));
    }
    take_back_attempt(*e, m.offset);  // unfenced: no fence to check against, the owner's own CAS
    return {};
}

Status DlqRouter::refund_dropped(uint32_t partition, std::span<const uint64_t> offsets) {
    Impl& im = *impl_;
    GroupPartition* gp = im.part(partition);
    if (!gp)
        return make_error(Errc::invalid_argument, "partition " + std::to_string(partition) + " >= " +
                                                      std::to_string(im.t->num_partitions) + " partitions of topic '" +
                                                      im.topic + "'");
    if (im.epoch != 0)
        return refund_attempts(*im.t, im.gref, im.group, partition, offsets, im.epoch, lock_wait_ns(im.policy.lock_wait));
    // Unfenced: no fence to check against; the owner's own CASes, as refund().
    for (uint64_t offset : offsets) take_back_attempt(gp->attempt_window[offset % kAttemptWindow], offset);
    return {};
}

uint64_t DlqRouter::uncommitted_window_end(uint32_t partition, uint64_t committed) const {
    const GroupPartition* gp = impl_->part(partition);
    uint64_t end = committed;
    if (!gp) return end;
    for (const auto& e : gp->attempt_window) {
        const uint64_t w = e.load(std::memory_order_seq_cst);  // pairs with begin's CAS
        if (attempt_word_count(w) == 0) continue;
        // The entry's offset, unfolded next to `committed` (entries keep 56 bits).
        const uint64_t o = (committed & ~kAttemptOffsetMask) | attempt_word_offset(w);
        if (o >= committed && o - committed < kAttemptScanOffsets) end = std::max(end, o + 1);
    }
    return end;
}

Result<bool> DlqRouter::nack(const Message& m, std::string_view reason, Duration* backoff) {
    Impl& im = *impl_;
    const uint64_t attempt = im.current(m);
    if (attempt < im.policy.max_attempts) {
        if (backoff) *backoff = im.policy.backoff(attempt);
        return false;
    }
    auto s = dead_letter(m, attempt, reason);
    if (!s) return std::move(s).error();
    return true;
}

Result<SendResult> DlqRouter::dead_letter(const Message& m, uint64_t attempts, std::string_view reason) {
    Impl& im = *impl_;
    // Between the caller's decision and the record: a member paused here past its session
    // timeout finds its record refused (the new owner fenced the partition first).
    FABRIC_PAUSE_POINT("dlq.dead_letter.decided");
    FABRIC_TRY(im.check());
    // The decision, fenced: recorded only while no newer owner fenced the partition (before
    // anything else, so a refused zombie does not even create the DLQ topic). From here the
    // dead letter is owed: if we stop before sending it, the next owner finds the record and
    // sends it (decided()), so the message is never processed after this point.
    if (im.epoch != 0)
        FABRIC_TRY(record_dead_letter(*im.t, im.gref, im.group, m.partition, m.offset, im.epoch,
                                      lock_wait_ns(im.policy.lock_wait)));
    FABRIC_PAUSE_POINT("dlq.dead_letter.recorded");
    // Fenced out since the record (we paused)? The new owner read the record after fencing and
    // sends it; sending too would only duplicate it.
    FABRIC_TRY(im.check_fence(m, "dead letter"));
    FABRIC_TRY(im.open_dlq());
    const std::string part = std::to_string(m.partition), off = std::to_string(m.offset),
                      att = std::to_string(attempts);
    std::vector<MessageHeader> headers;
    for (size_t i = 0; i < m.header_count(); ++i) {
        const MessageHeader h = m.header_at(i);
        // A placement hint is stale by the time anyone replays the letter: not worth its room.
        if (h.name != kHeaderPlacement) headers.push_back(h);
    }
    auto enc = [](std::string_view n, std::string_view v) { return 4 + n.size() + v.size(); };
    auto d = TopicManager(*im.pool).describe(im.dlq_name, TopicDetail::positions);  // its slot size
    if (!d) return std::move(d).error();
    const uint64_t cap = max_message_bytes(d->config.partition_stride);
    // Our headers but the reason's bytes; they count against the slot and against the 65535
    // bytes a message's headers may take in all (the envelope's 16-bit headers_len).
    const uint64_t ours = enc(kDlqHeaderTopic, im.topic) + enc(kDlqHeaderGroup, im.group) +
                          enc(kDlqHeaderPartition, part) + enc(kDlqHeaderOffset, off) +
                          enc(kDlqHeaderAttempts, att) + enc(kDlqHeaderReason, "");
    const uint64_t fixed = m.key.size() + m.value.size() + ours;
    if (fixed > cap)
        return make_error(Errc::message_too_large, "dead letter of " + std::to_string(fixed) +
                                                       " bytes (value, key and dlq headers) exceeds the " +
                                                       std::to_string(cap) + " bytes a slot of DLQ topic '" +
                                                       im.dlq_name + "' holds");
    // The source headers while each fits next to ours (all do in a DLQ that
    // dead_letter_topic_config made, unless they come near the 65535 bytes): first those the
    // pipeline reads (fabric-*: the version, the topics a fan-out told, the replay count), then
    // the rest, each group in its order. A name left out leaves out its later occurrences too:
    // readers take a name's first. The reason names what was left out.
    constexpr uint64_t kHeadersLimit = UINT16_MAX;
    uint64_t orig = 0;
    std::vector<MessageHeader> kept;
    std::vector<std::string_view> left_out;  // in the order met, for the note
    std::unordered_set<std::string_view> kept_names, left_out_names;
    for (const bool pipeline : {true, false})
        for (const MessageHeader& h : headers) {
            if (h.name.starts_with("fabric-") != pipeline || left_out_names.count(h.name)) continue;
            const uint64_t e = enc(h.name, h.value);
            if (fixed + orig + e <= cap && ours + orig + e <= kHeadersLimit) {
                orig += e;
                kept.push_back(h);
                kept_names.insert(h.name);
            } else if (!kept_names.count(h.name)) {  // a later occurrence of a kept name: no reader sees it
                left_out.push_back(h.name);
                left_out_names.insert(h.name);
            }
        }
    headers = std::move(kept);
    const uint64_t room = std::min<uint64_t>({cap - fixed - orig, kHeadersLimit - ours - orig, im.policy.max_reason_bytes});
    std::string why = utf8_prefix(reason, room);
    if (!left_out.empty()) {
        std::string names;
        for (std::string_view n : left_out) names += (names.empty() ? "" : ", ") + std::string(n);
        const std::string full = " [source headers left out, no room in the DLQ's slot: " + names + "]";
        const std::string brief =
            " [" + std::to_string(left_out.size()) + " source header(s) left out: no room in the DLQ's slot]";
        const bool whole = why.size() == reason.size();
        if (whole && why.size() + full.size() <= room) why += full;
        else if (whole && why.size() + brief.size() <= room) why += brief;
        // The reason fills the room: its end gives way to the brief note while 64 bytes of it stay.
        else if (room >= brief.size() + 64) why = utf8_prefix(reason, room - brief.size()) + brief;
    }
    headers.push_back({kDlqHeaderTopic, im.topic});
    headers.push_back({kDlqHeaderGroup, im.group});
    headers.push_back({kDlqHeaderPartition, part});
    headers.push_back({kDlqHeaderOffset, off});
    headers.push_back({kDlqHeaderAttempts, att});
    headers.push_back({kDlqHeaderReason, why});
    OutgoingMessage out{m.value, m.key, headers};
    auto r = im.producer->send_to(m.partition % im.producer->num_partitions(), out);
    // skipped: we paused inside the send past a DLQ reader's claim timeout and the claim was
    // turned into a skip record; nothing was delivered. The decision is recorded and owed:
    // send it again (at the tail), as long as the partition is still ours.
    for (int again = 0; !r && r.code() == Errc::skipped && again < 8; ++again) {
        FABRIC_TRY(im.check_fence(m, "dead letter"));
        r = im.producer->send_to(m.partition % im.producer->num_partitions(), out);
    }
    if (!r) return r;
    ++im.dead;
    FABRIC_TRY(ack(m));
    return r;
}

Result<Handled> DlqRouter::handle(const Message& m, const std::function<Status(const Message&)>& process,
                                  const std::function<Status()>& heartbeat) {
    Impl& im = *impl_;
    Handled h;
    if (decided(m)) {
        h.attempts = im.current(m);
        h.reason = "an earlier owner decided to dead-letter it and stopped before confirming the send";
        auto s = dead_letter(m, h.attempts, h.reason);
        if (!s) return std::move(s).error();
        h.dead_lettered = true;
        return h;
    }
    for (;;) {
        auto a = begin(m);
        if (!a) return std::move(a).error();
        h.attempts = *a;
        if (*a > im.policy.max_attempts) {
            h.reason = "handed out " + std::to_string(*a - 1) +
                       " times without an ack (the worker crashed or was presumed dead)";
            auto s = dead_letter(m, *a - 1, h.reason);
            if (!s) return std::move(s).error();
            h.attempts = *a - 1;
            h.dead_lettered = true;
            return h;
        }
        auto st = process(m);
        if (st) {
            FABRIC_TRY(ack(m));
            return h;
        }
        h.reason = std::string(errc_name(st.code())) + ": " + st.error().message;
        if (im.policy.is_permanent(st.code())) {
            auto s = dead_letter(m, *a, h.reason);
            if (!s) return std::move(s).error();
            h.dead_lettered = true;
            return h;
        }
        Duration backoff{0};
        auto n = nack(m, h.reason, &backoff);
        if (!n) return std::move(n).error();
        if (*n) {
            h.dead_lettered = true;
            return h;
        }
        FABRIC_TRY(sleep_with_heartbeat(backoff, im.policy.heartbeat_interval, heartbeat));
    }
}

}  // namespace fabric_shm
