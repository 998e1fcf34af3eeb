// SPDX-License-Identifier: MIT
// Dead-letter administration (dlq_replay.h): list, replay, purge.
//
// Removing dead letters moves a partition's head (the floor below which producers may reuse
// slots; with no consumer group on the dead-letter topic it is also the oldest readable
// offset). The head only ever rises (CAS to the maximum), and never above what a live
// consumer group of the dead-letter topic has committed, so a group reading dead letters
// (e.g. `fabric-shm tail --commit`) never loses one it has not read. Reading stops at the
// first slot a producer is still writing, so the head never passes an unpublished message.
#include "fabric_shm/dlq_replay.h"

#include <algorithm>
#include <charconv>
#include <map>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/names.h"
#include "fabric_shm/placement_hint.h"
#include "mq/topic_internal.h"

namespace fabric_shm {

using namespace mq;

namespace {

uint64_t parse_u64(std::string_view text) {
    uint64_t v = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    return ec == std::errc() && ptr == text.data() + text.size() ? v : 0;
}

std::string text_of(std::span<const uint8_t> b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

DeadLetter decode(const Message& m) {
    DeadLetter d;
    d.partition = m.partition;
    d.offset = m.offset;
    d.timestamp_ns = m.timestamp_ns;
    d.key = text_of(m.key);
    d.value = text_of(m.value);
    for (size_t i = 0; i < m.header_count(); ++i) {
        const MessageHeader h = m.header_at(i);
        if (h.name == kDlqHeaderTopic) d.source_topic = h.value;
        else if (h.name == kDlqHeaderGroup) d.group = h.value;
        else if (h.name == kDlqHeaderReason) d.reason = h.value;
        else if (h.name == kDlqHeaderPartition) d.source_partition = uint32_t(parse_u64(h.value));
        else if (h.name == kDlqHeaderOffset) d.source_offset = parse_u64(h.value);
        else if (h.name == kDlqHeaderAttempts) d.attempts = parse_u64(h.value);
        else if (h.name.substr(0, 4) == "dlq.") continue;  // a dlq.* header of a later format
        else if (h.name == kHeaderReplays) d.replays = parse_u64(h.value);
        else if (h.name == kHeaderPlacement) continue;  // stale by now (a letter of an older build)
        else d.headers.emplace_back(std::string(h.name), std::string(h.value));
    }
    return d;
}

/// Moves partition p's head towards `target` (never past a live group's committed offset);
/// returns the head after the move.
uint64_t drop_front(TopicHandle& t, uint32_t p, uint64_t target) {
    Slowest slow;
    const uint64_t floor = min_committed(t, p, mono_now_ns(), &slow, /*acting=*/true);
    if (slow.any_group && int64_t(target - floor) > 0) target = floor;
    // A release to producers. The table is read before the raise (a producer's handshake reads
    // it after): a group that registers between the two may read its start below the raised
    // head and so see the dropped letters once more (duplicates, never a loss: producers re-read
    // the table before they overwrite, and find it).
    raise_head(t.parts[p].hdr, target);
    return t.parts[p].hdr->head.load(std::memory_order_acquire);  // pairs with raise_head's CAS
}

struct PartitionRead {
    uint32_t partition = 0;
    uint64_t oldest = 0;  ///< at the start of the read
    uint64_t end = 0;     ///< next offset not read (first unread, or the tail snapshot)
    std::vector<DeadLetter> letters;
};

/// Reads partition p from max(from, oldest) up to the tail as it was at the start, to
/// `to` inclusive, at most `limit` letters. Stops early at a slot still being written.
Result<PartitionRead> read_partition(TopicHandle& t, Consumer& consumer, uint32_t p, const DeadLetterSelection& sel,
                                     size_t limit) {
    PartitionRead r;
    r.partition = p;
    const PartitionView& pv = t.parts[p];
    const uint64_t tail = pv.hdr->tail.load(std::memory_order_acquire);  // pairs with the tail CAS
    r.oldest = oldest_offset(t, pv);
    r.end = tail;
    // Past the tail nothing is selected. Checked here: the seek below compares wrap-safe, and
    // takes an offset 2^63 or more above the tail for one below the oldest (it would start
    // there, and letters outside the selection would be listed, replayed).
    if (sel.from_offset > tail) return r;
    const uint32_t parts[] = {p};
    FABRIC_TRY(consumer.assign(parts));
    FABRIC_TRY(consumer.seek(p, SeekPolicy::Offset(std::max(sel.from_offset, r.oldest))));
    MessageBatch batch;
    r.end = consumer.position(p).value();
    while (int64_t(tail - r.end) > 0 && r.end <= sel.to_offset && r.letters.size() < limit) {
        auto got = consumer.poll(batch, std::min<size_t>(256, limit - r.letters.size()), Duration::zero());
        if (!got) return std::move(got).error();
        bool past = false;
        for (const Message& m : batch) {
            if (int64_t(m.offset - tail) >= 0 || m.offset > sel.to_offset) {
                past = true;
                break;
            }
            r.letters.push_back(decode(m));
            r.end = m.offset + 1;
        }
        if (past) break;
        // Skip records (producers that died mid-send) advance the position without a message:
        // read up to the position, within the tail snapshot and the selection. Every round
        // moves r.end on or ends the read, so a trailing skip record cannot spin it (to_offset
        // + 1 overflows for the default UINT64_MAX: saturated).
        uint64_t skipped_to = consumer.position(p).value();
        if (int64_t(skipped_to - tail) > 0) skipped_to = tail;
        if (sel.to_offset != UINT64_MAX && skipped_to > sel.to_offset + 1) skipped_to = sel.to_offset + 1;
        if (int64_t(skipped_to - r.end) > 0) r.end = skipped_to;
        else if (batch.empty()) break;  // a claim in progress (or nothing more)
    }
    return r;
}

Result<std::vector<uint32_t>> selected_partitions(const TopicHandle& t, std::optional<uint32_t> partition,
                                                  std::string_view topic) {
    std::vector<uint32_t> ps;
    if (partition) {
        if (*partition >= t.num_partitions)
            return make_error(Errc::invalid_argument, "partition " + std::to_string(*partition) + " is out of range: '" +
                                                          std::string(topic) + "' has " +
                                                          std::to_string(t.num_partitions) + " partitions");
        ps.push_back(*partition);
    } else {
        for (uint32_t p = 0; p < t.num_partitions; ++p) ps.push_back(p);
    }
    return ps;
}

Status check_selection(const DeadLetterSelection& sel) {
    if ((sel.from_offset != 0 || sel.to_offset != UINT64_MAX) && !sel.partition)
        return make_error(Errc::invalid_argument, "an offset range needs a partition (offsets are per partition)");
    if (sel.from_offset > sel.to_offset)
        return make_error(Errc::invalid_argument, "offset range " + std::to_string(sel.from_offset) + ".." +
                                                      std::to_string(sel.to_offset) + " is empty");
    return {};
}

struct Opened {
    std::unique_ptr<TopicHandle> topic;
    Consumer consumer;
};

Result<Opened> open_dlq(const Pool& pool, std::string_view dlq_topic) {
    auto t = open_topic(pool, dlq_topic);
    if (!t) return std::move(t).error();
    FABRIC_TRY(check_topic(**t));
    ConsumerOptions co;
    co.on_warning = [](std::string_view) {};
    auto c = Consumer::open(pool, dlq_topic, "", co);  // an observer: registers nothing
    if (!c) return std::move(c).error();
    return Opened{std::move(t.value()), std::move(c.value())};
}

}  // namespace

Result<std::vector<DeadLetter>> list_dead_letters(const Pool& pool, std::string_view dlq_topic,
                                                  const DeadLetterSelection& selection) {
    FABRIC_TRY(check_selection(selection));
    auto o = open_dlq(pool, dlq_topic);
    if (!o) return std::move(o).error();
    auto ps = selected_partitions(*o->topic, selection.partition, dlq_topic);
    if (!ps) return std::move(ps).error();
    std::vector<DeadLetter> all;
    for (uint32_t p : *ps) {
        if (all.size() >= selection.limit) break;
        auto r = read_partition(*o->topic, o->consumer, p, selection, selection.limit - all.size());
        if (!r) return std::move(r).error();
        for (DeadLetter& d : r->letters) all.push_back(std::move(d));
    }
    return all;
}

Result<ReplayReport> replay_dead_letters(Pool& pool, std::string_view dlq_topic, const ReplayOptions& options) {
    FABRIC_TRY(check_selection(options.selection));
    if (!options.target_topic.empty()) FABRIC_TRY(validate_name("topic", options.target_topic));
    auto o = open_dlq(pool, dlq_topic);
    if (!o) return std::move(o).error();
    auto ps = selected_partitions(*o->topic, options.selection.partition, dlq_topic);
    if (!ps) return std::move(ps).error();
    ReplayReport report;
    std::map<std::string, Producer> producers;
    std::map<std::string, uint64_t> sent_to;
    for (uint32_t p : *ps) {
        auto r = read_partition(*o->topic, o->consumer, p, options.selection, SIZE_MAX);
        if (!r) return std::move(r).error();
        uint64_t replayed_end = 0;  // one past the last offset sent back
        bool any = false;
        for (const DeadLetter& d : r->letters) {
            const std::string target = options.target_topic.empty() ? d.source_topic : options.target_topic;
            Status sent;
            if (target.empty()) {
                sent = make_error(Errc::invalid_argument, "dead letter " + std::to_string(d.partition) + ":" +
                                                              std::to_string(d.offset) +
                                                              " has no dlq.topic header; name the target topic");
            } else {
                auto it = producers.find(target);
                if (it == producers.end()) {
                    auto prod = Producer::open(pool, target, options.producer);
                    if (prod) it = producers.emplace(target, std::move(prod.value())).first;
                    else sent = std::move(prod).error();
                }
                if (it != producers.end()) {
                    const std::string replays = std::to_string(d.replays + 1);
                    std::vector<MessageHeader> headers;
                    headers.reserve(d.headers.size() + 1);
                    for (const auto& [k, v] : d.headers) headers.push_back({k, v});
                    headers.push_back({kHeaderReplays, replays});
                    const auto value = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(d.value.data()), d.value.size());
                    auto send = [&](std::span<const MessageHeader> hs) {
                        return d.key.empty() ? it->second.send(value, hs)
                                             : it->second.send_keyed(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(
                                                                                              d.key.data()),
                                                                                          d.key.size()),
                                                                     value, hs);
                    };
                    auto res = send(headers);
                    // A message that filled its slot has no room for the mark: it goes back as it
                    // was (unmarked) rather than stop every replay of the partition at it for ever.
                    if (!res && res.code() == Errc::message_too_large)
                        res = send(std::span<const MessageHeader>(headers).first(headers.size() - 1));
                    if (!res) sent = std::move(res).error();
                }
            }
            if (!sent) {
                report.stopped = sent.error();
                report.stopped_at = d;
                break;
            }
            ++report.replayed;
            ++sent_to[target];
            replayed_end = d.offset + 1;
            any = true;
        }
        if (any) {
            uint64_t removed_here = 0;
            // Only a run that starts at the partition's front can be dropped (a ring drops
            // from the front); skip records between the letters go with them.
            if (!options.keep && options.selection.from_offset <= r->oldest) {
                const uint64_t head = drop_front(*o->topic, p, replayed_end);
                for (const DeadLetter& d : r->letters)
                    if (int64_t(head - d.offset) > 0 && int64_t(replayed_end - d.offset) > 0) ++removed_here;
                wake_space(*o->topic);
            }
            uint64_t replayed_here = 0;
            for (const DeadLetter& d : r->letters)
                if (int64_t(replayed_end - d.offset) > 0) ++replayed_here;
            report.removed += removed_here;
            report.kept += replayed_here - removed_here;
        }
        if (report.stopped) break;
    }
    for (auto& [topic, n] : sent_to) report.sent_to.emplace_back(topic, n);
    return report;
}

Result<PurgeReport> purge_dead_letters(Pool& pool, std::string_view dlq_topic, const PurgeOptions& options) {
    if (!options.all && options.older_than <= Duration::zero())
        return make_error(Errc::invalid_argument, "purge needs an age (older than) or all");
    auto o = open_dlq(pool, dlq_topic);
    if (!o) return std::move(o).error();
    auto ps = selected_partitions(*o->topic, options.partition, dlq_topic);
    if (!ps) return std::move(ps).error();
    const uint64_t now_wall = wall_now_ns();
    const uint64_t cutoff = options.all ? UINT64_MAX : (now_wall > to_ns(options.older_than) ? now_wall - to_ns(options.older_than) : 0);
    PurgeReport report;
    bool moved = false;
    for (uint32_t p : *ps) {
        DeadLetterSelection sel;
        sel.partition = p;
        auto r = read_partition(*o->topic, o->consumer, p, sel, SIZE_MAX);
        if (!r) return std::move(r).error();
        // The front run dead-lettered at or before the cutoff (a partition is in send order).
        uint64_t target = r->oldest;
        uint64_t matched = 0;
        for (const DeadLetter& d : r->letters) {
            if (!options.all && d.timestamp_ns > cutoff) break;
            target = d.offset + 1;
            ++matched;
        }
        if (options.all || matched == r->letters.size()) target = std::max(target, r->end);  // trailing skip records
        uint64_t removed_here = 0;
        if (int64_t(target - r->oldest) > 0) {
            const uint64_t head = drop_front(*o->topic, p, target);
            for (const DeadLetter& d : r->letters)
                if (int64_t(head - d.offset) > 0 && int64_t(target - d.offset) > 0) ++removed_here;
            moved = true;
        }
        report.removed += removed_here;
        report.held_by_groups += matched - std::min(matched, removed_here);
        const PartitionView& pv = o->topic->parts[p];
        const uint64_t tail = pv.hdr->tail.load(std::memory_order_acquire);  // pairs with the tail CAS
        const uint64_t oldest = oldest_offset(*o->topic, pv);
        report.remaining += int64_t(tail - oldest) > 0 ? tail - oldest : 0;
    }
    if (moved) wake_space(*o->topic);
    return report;
}

}  // namespace fabric_shm
