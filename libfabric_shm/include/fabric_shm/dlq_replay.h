// SPDX-License-Identifier: MIT
// The way back from a dead-letter topic: list what is in it, send dead letters back to the
// topic they came from (a fresh message, so a fresh attempt count), and drop old ones.
// `fabric-shm dlq ls|show|replay|purge` is this header plus a command line. The format of a
// dead letter (original key, value and headers plus the dlq.* headers) is DlqRouter's
// (dlq.h, docs/groups.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"
#include "fabric_shm/topic.h"

namespace fabric_shm {

/// Header a replayed message carries: how many times it came back from a dead-letter topic
/// (decimal, 1 after the first replay). Workers ignore it; operators see loops with it.
inline constexpr std::string_view kHeaderReplays = "fabric-replays";

/// One message of a dead-letter topic, decoded.
struct DeadLetter {
    uint32_t partition = 0;     ///< in the dead-letter topic
    uint64_t offset = 0;        ///< in the dead-letter topic
    uint64_t timestamp_ns = 0;  ///< wall clock when it was dead-lettered
    std::string key, value;     ///< the original message's
    /// The original message's headers, without the dlq.* ones.
    std::vector<std::pair<std::string, std::string>> headers;
    // From the dlq.* headers ("" / 0 when a header is missing: not written by DlqRouter).
    std::string source_topic, group, reason;
    uint32_t source_partition = 0;
    uint64_t source_offset = 0, attempts = 0;
    uint64_t replays = 0;  ///< kHeaderReplays of the original (0: never replayed)
};

/// Which dead letters an operation applies to. Offsets are per partition, so a range needs
/// a partition.
struct DeadLetterSelection {
    std::optional<uint32_t> partition;  ///< nullopt: every partition
    uint64_t from_offset = 0;           ///< first offset (inclusive)
    uint64_t to_offset = UINT64_MAX;    ///< last offset (inclusive)
    size_t limit = SIZE_MAX;            ///< at most this many (list)
};

/// Every retained dead letter selected, in partition then offset order. Only what was in the
/// topic when the call started is read (what is dead-lettered meanwhile is not).
Result<std::vector<DeadLetter>> list_dead_letters(const Pool& pool, std::string_view dlq_topic,
                                                  const DeadLetterSelection& selection = {});

struct ReplayOptions {
    DeadLetterSelection selection;
    /// "": each dead letter goes back to its dlq.topic. Else to this topic (all of them).
    std::string target_topic;
    /// Keep the replayed dead letters in the dead-letter topic. By default a replayed run at
    /// the front of a partition is removed (the partition's oldest offset moves past it); a
    /// run in the middle cannot be cut out of the ring and stays (see ReplayReport::kept).
    bool keep = false;
    ProducerOptions producer;  ///< block timeout, should_stop for the sends
};

struct ReplayReport {
    uint64_t replayed = 0;  ///< sent back
    uint64_t removed = 0;   ///< of which removed from the dead-letter topic
    uint64_t kept = 0;      ///< replayed but still in the dead-letter topic (keep, or not at the front)
    /// Per target topic: messages sent.
    std::vector<std::pair<std::string, uint64_t>> sent_to;
    /// Set when a send failed (back-pressure, topic gone, interrupted): the replay stopped
    /// there; everything before it was replayed (and removed, unless kept), the rest stays.
    std::optional<Error> stopped;
    std::optional<DeadLetter> stopped_at;
};

/// Sends each selected dead letter back: same key, value and original headers (dlq.*
/// dropped, kHeaderReplays incremented), keyed by its key (round-robin when it has none).
/// A replayed message is a new message at a new offset, so the consumer group counts its
/// attempts from 1. At-least-once: a crash mid-replay may send some twice (workers skip
/// results that exist for the same input version). Errors are the dead-letter topic's
/// (not found, lease expired); send failures end the replay and are in the report.
Result<ReplayReport> replay_dead_letters(Pool& pool, std::string_view dlq_topic, const ReplayOptions& options);

struct PurgeOptions {
    std::optional<uint32_t> partition;  ///< nullopt: every partition
    /// Remove dead letters dead-lettered at least this long ago (wall clock); 0 with `all`.
    Duration older_than{0};
    bool all = false;                   ///< remove every dead letter present at the call
};

struct PurgeReport {
    uint64_t removed = 0;
    uint64_t remaining = 0;  ///< still in the selected partitions
    /// Dead letters that matched but stay because a live consumer group of the dead-letter
    /// topic has not read them yet (the ring never drops what a group still has to read).
    uint64_t held_by_groups = 0;
};

/// Removes the oldest dead letters of each selected partition (a ring drops from the front:
/// a partition's dead letters are in time order, so "older than" is a front run). Frees
/// their slots for new dead letters at once (wakes senders blocked on a full DLQ).
Result<PurgeReport> purge_dead_letters(Pool& pool, std::string_view dlq_topic, const PurgeOptions& options);

}  // namespace fabric_shm
