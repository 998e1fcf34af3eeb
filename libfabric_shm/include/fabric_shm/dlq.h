// SPDX-License-Identifier: MIT
// DlqRouter: attempts counted in the pool at hand-out (so a message that kills every worker
// still reaches the dead-letter topic), in-place retries with backoff, and routing of the
// original value to "<topic>.dlq" with its source coordinates as headers. docs/groups.md.
#pragma once

#include <span>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/consumer.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"
#include "fabric_shm/topic.h"

namespace fabric_shm {

/// Header names on a dead letter (values are decimal text, except topic/group/reason).
inline constexpr std::string_view kDlqHeaderTopic = "dlq.topic";
inline constexpr std::string_view kDlqHeaderGroup = "dlq.group";
inline constexpr std::string_view kDlqHeaderPartition = "dlq.partition";
inline constexpr std::string_view kDlqHeaderOffset = "dlq.offset";
inline constexpr std::string_view kDlqHeaderAttempts = "dlq.attempts";
inline constexpr std::string_view kDlqHeaderReason = "dlq.reason";

struct DlqPolicy {
    /// Processing attempts before a message is dead-lettered (3: processed at most 3 times).
    uint32_t max_attempts = 3;
    Duration initial_backoff = std::chrono::milliseconds(100);  ///< before the 2nd attempt; doubles each time
    Duration max_backoff = std::chrono::seconds(2);  ///< cap (defaults: 100 ms + 200 ms in all for 3 attempts)
    std::string dlq_topic;                         ///< empty: "<topic>.dlq" (created when missing)
    uint32_t max_reason_bytes = 200;               ///< reasons are truncated to this (and to what fits)
    /// Errors that go to the DLQ at once, without retries (the input itself is bad).
    std::vector<Errc> permanent = {Errc::not_found, Errc::invalid_argument, Errc::corrupt,
                                   Errc::object_too_large, Errc::message_too_large, Errc::invalid_uri};
    /// Backoff waits heartbeat this often (members must keep their session alive).
    Duration heartbeat_interval = std::chrono::milliseconds(100);
    /// Longest wait of one dead letter's send: for room in a full DLQ topic, and for another
    /// process's creation of it. The sender does not heartbeat meanwhile, so a group member keeps
    /// it well under its session timeout (WorkerLoop: a quarter of it, at most 1 s). Past it the
    /// send fails (back_pressure, busy) and the caller retries later.
    Duration send_wait = std::chrono::seconds(1);
    /// Longest wait for the group's lock (held by another process, maybe paused) to record a
    /// dead-letter decision or take a hand-out back; past it: busy, nothing changed. A member
    /// keeps it under its session timeout (WorkerLoop: a quarter of it, at most 2 s). 0: no
    /// wait (one try, and a dead holder's lock is taken over).
    Duration lock_wait = std::chrono::seconds(2);
    bool is_permanent(Errc code) const;
    Duration backoff(uint64_t attempt) const;  ///< wait after failed attempt `attempt` (1-based)
};

/// How one message ended.
struct Handled {
    bool dead_lettered = false;
    uint64_t attempts = 0;      ///< processing attempts counted for it (incl. crashed ones)
    std::string reason;         ///< last failure (dead letters)
};

class DlqRouter {
public:
    /// The group must be registered on `topic` (a ConsumerGroup or Consumer did it). The DLQ
    /// topic is created on first use: same partition count, 256 slots, stride = source + 512.
    static Result<DlqRouter> open(Pool& pool, std::string_view topic, std::string_view group,
                                  const DlqPolicy& policy = {});
    DlqRouter(DlqRouter&&) noexcept;
    DlqRouter& operator=(DlqRouter&&) noexcept;
    ~DlqRouter();

    /// A group member's claim: takes its fence token (Claim::epoch), as Consumer::assign does,
    /// so nobody copies an epoch by hand. Call it after every ConsumerGroup::claim (cheap when
    /// nothing changed). See set_epoch for what the token fences.
    void assign(const Claim& claim);
    /// The member's fence token (Claim::epoch, GroupConsumer::epoch(); set it again after every
    /// claim that changed it; assign(claim) does). With it, dead letters are fenced like commits: dead_letter()
    /// records the decision in the group table only while no newer owner fenced the partition
    /// (else stale_epoch, nothing sent), and begin() refuses hand-outs of fenced partitions.
    /// 0 (the default): unfenced -- a member paused past its session timeout may then
    /// dead-letter a message its successor processed.
    void set_epoch(uint64_t fence_token);
    /// True when an earlier owner recorded a dead-letter decision for `message` (and may have
    /// stopped before sending it): dead-letter it without processing (handle() does). The DLQ
    /// may then hold it twice (at-least-once). Always false while unfenced.
    bool decided(const Message& message) const;

    /// Counts a hand-out of `message` in the pool; call right before processing it. Returns
    /// the attempt number (1 = first). Greater than max_attempts: earlier attempts crashed
    /// or timed out; dead-letter it without processing. A replay of offsets below the one
    /// being counted (after a crash mid-batch) is not counted and returns 1.
    Result<uint64_t> begin(const Message& message);
    /// Processing succeeded: clears the offset's counter.
    Status ack(const Message& message);
    /// The hand-out did not count as an attempt (the worker handed the message back because
    /// the store was full, not because processing failed): takes one hand-out back, so the
    /// next begin() returns the same attempt number again. Fenced (set_epoch): checked under
    /// the group's lock against the partition's fence, stale_epoch (nothing changed) once a
    /// newer owner has it; a count of another offset is never touched.
    Status refund(const Message& message);
    /// Takes back one hand-out of each of `offsets` of `partition` that this member handed
    /// out and is dropping unfinished because the partition is being reassigned (given up, or
    /// kept under a new epoch): their messages are handed out again by whoever owns the
    /// partition next, and an attempt whose result is discarded did not fail. Call it while
    /// the member still owns the partition. One fenced step (see refund): stale_epoch when a
    /// newer owner fenced it, and the counts stay, as a crashed owner's do.
    Status refund_dropped(uint32_t partition, std::span<const uint64_t> offsets);
    /// Counters live per in-flight offset (a window of 8 offsets past the first message not
    /// done, within kAttemptScanOffsets of the committed offset, so a
    /// member may process several messages of a partition at once). The end of the window a
    /// previous owner of `partition` left uncommitted: one past the highest offset >=
    /// `committed` with a counted hand-out (`committed` when none). A new owner re-runs the
    /// offsets below it one at a time, so a poison message's neighbours are not charged for
    /// its crashes.
    uint64_t uncommitted_window_end(uint32_t partition, uint64_t committed) const;
    /// Processing failed: false with *backoff set when attempts remain (retry in place
    /// after the backoff); true when the message was dead-lettered (commit past it).
    Result<bool> nack(const Message& message, std::string_view reason, Duration* backoff);
    /// Sends the original key/value/headers plus the dlq.* headers to the DLQ topic, after
    /// recording the decision under the fence token (see set_epoch). stale_epoch: a newer
    /// owner has the partition; do not commit, do not retry.
    Result<SendResult> dead_letter(const Message& message, uint64_t attempts, std::string_view reason);

    /// The whole per-message loop: begin, process, ack or nack, backoff (heartbeating), DLQ.
    /// Permanent errors go to the DLQ at once. Errors returned are the router's own (DLQ send
    /// failed, lease expired, heartbeat failed): then do not commit past the message.
    Result<Handled> handle(const Message& message, const std::function<Status(const Message&)>& process,
                           const std::function<Status()>& heartbeat);

    const std::string& dlq_topic() const;
    const DlqPolicy& policy() const;
    uint64_t dead_lettered() const;  ///< by this router

    struct Impl;

private:
    explicit DlqRouter(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// The DLQ a DlqRouter creates for a topic configured as `source`: the same partitions, 256
/// slots, each kDeadLetterStrideRoom larger than the source's (so any source message plus the
/// dlq.* headers fits; at most kMaxPartitionStride + that room, for a DLQ of a DLQ), blocking
/// when full. Whoever else creates a topic's DLQ (the bridge) uses it too.
TopicConfig dead_letter_topic_config(const TopicConfig& source);
/// Creates `name` as a dead-letter topic: TopicManager::create, except that its stride may be
/// up to kDeadLetterStrideRoom above kMaxPartitionStride. For tools that re-create one (an
/// archive's restore).
Status create_dead_letter_topic(Pool& pool, std::string_view name, const TopicConfig& config);
/// TopicManager::ensure for a dead-letter topic (the stride limit of create_dead_letter_topic).
Status ensure_dead_letter_topic(Pool& pool, std::string_view name, const TopicConfig& config, Duration wait);

/// Dead letters retained in a DLQ topic: its published slots from each partition's oldest
/// offset to its tail, read from the slot words (no message is copied). A skip record (a
/// dead-letterer killed mid-send leaves one) and a send in progress are not counted; tools.
Result<uint64_t> dead_letter_count(const Pool& pool, std::string_view dlq_topic);

/// Sleeps `duration` in slices of at most `slice`, calling heartbeat between slices; stops at
/// its first error.
Status sleep_with_heartbeat(Duration duration, Duration slice, const std::function<Status()>& heartbeat);

}  // namespace fabric_shm
