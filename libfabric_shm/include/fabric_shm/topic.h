// SPDX-License-Identifier: MIT
// Topics: N partitions, each a ring of fixed-stride slots in its own leased region of the
// pool; TopicManager (lifecycle, groups, read-only inspection) and Producer.
// Design, slot state machine and crash analysis: docs/topics.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/batch.h"
#include "fabric_shm/bytes.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"

namespace fabric_shm {

/// What send does when a partition holds `capacity` messages the slowest registered group
/// has not committed (with no group: when it holds `capacity` messages).
enum class OnFull : uint32_t {
    block = 0,      ///< wait for space up to the producer's timeout, then Errc::back_pressure
    reject = 1,     ///< Errc::back_pressure at once
    overwrite = 2,  ///< lossy: overwrite the oldest; lagging consumers detect and count the gap
};
std::string_view on_full_name(OnFull mode) noexcept;
Result<OnFull> parse_on_full(std::string_view text);

constexpr uint32_t kMaxPartitionStride = 1u << 20;  ///< the largest partition_stride a creator may ask for
/// A dead-letter topic's slot holds its source's largest message plus the dlq.* headers, so
/// its stride is the source's + this, and may exceed kMaxPartitionStride by as much
/// (create_dead_letter_topic, dlq.h).
constexpr uint32_t kDeadLetterStrideRoom = 512;

struct TopicConfig {
    uint32_t num_partitions = 4;        ///< 1..64
    uint32_t partition_capacity = 128;  ///< slots per partition; power of two, 2..2^20
    uint32_t partition_stride = 512;    ///< bytes per slot incl. the 32-byte envelope; multiple of 64, 64..1 MiB
    OnFull on_full = OnFull::block;
    Duration ttl{0};                    ///< region leases; 0: the pool's default TTL
};
/// Typed error (invalid_argument) naming the field and its limit, or OK.
Status validate_topic_config(const TopicConfig& config);
/// Largest key + encoded headers + value one slot of `stride` bytes holds.
uint64_t max_message_bytes(uint32_t stride) noexcept;

/// One small header of a message (name/value bytes; encoded as 4 + name + value bytes).
struct MessageHeader {
    std::string_view name;
    std::string_view value;
};

/// Partitioning hash for keyed sends: 64-bit FNV-1a over the key bytes (offset basis
/// 0xcbf29ce484222325, prime 0x100000001b3); partition = hash % num_partitions.
/// Stable across processes, builds and versions.
uint64_t key_hash(ByteView key) noexcept;

struct PartitionDescription {
    uint32_t partition = 0;
    uint64_t oldest = 0;          ///< earliest offset still readable (block/reject: head floor; overwrite: tail - capacity)
    uint64_t next = 0;            ///< next offset a producer claims (tail)
    uint64_t head = 0;            ///< block/reject: offsets below are released for overwriting
    uint64_t fill = 0;            ///< messages held (block/reject: uncommitted by the slowest group)
    uint64_t capacity = 0;
    uint64_t skipped_claims = 0;  ///< claims turned into skip records
    uint64_t quarantined = 0;     ///< of which timed out with a maybe-alive producer
    uint32_t claims_in_progress = 0;  ///< claimed, not yet published (TopicDetail::full only; else 0)
};
struct GroupPartitionDescription {
    uint32_t partition = 0;
    uint64_t committed = 0;  ///< next offset the group reads
    uint64_t epoch = 0;      ///< epoch of the last commit
    uint64_t lag = 0;        ///< next - committed (0 when committed is ahead)
};
struct GroupDescription {
    std::string name;
    uint64_t lease_expires_ns = 0;  ///< monotonic
    uint64_t lease_ttl_ns = 0;
    uint64_t registered_ns = 0;     ///< monotonic
    bool expired = false;
    std::vector<GroupPartitionDescription> partitions;
};
struct TopicDescription {
    std::string name;
    uint64_t incarnation = 0;
    TopicConfig config;
    uint64_t created_wall_ns = 0;
    uint64_t lease_id = 0;  ///< root region's lease (partitions have their own; see lease_ids)
    std::vector<uint64_t> lease_ids;  ///< root first, then partitions
    std::vector<PartitionDescription> partitions;
    std::vector<GroupDescription> groups;
};

/// How much TopicManager::describe reads. `full` walks every slot of every partition to count
/// the claims in progress: its cost grows with the topic's capacity, and in a process that has
/// not touched the slots yet it is mostly page faults (~100 ms for 4 x 32,768 slots on a 2-vCPU
/// VM). `positions` reads the configuration, leases, positions, counters and groups only.
enum class TopicDetail : uint8_t { full, positions };

/// Where a newly registered group starts reading.
enum class GroupStart : uint8_t { earliest, latest };
struct GroupOptions {
    Duration ttl = std::chrono::seconds(60);  ///< group lease; renewed by its consumers' polls and commits
    GroupStart start = GroupStart::earliest;
};

/// Topic lifecycle in one pool. Cheap to construct; holds no handles.
class TopicManager {
public:
    explicit TopicManager(Pool& pool) : pool_(pool) {}

    /// AlreadyExists for a live topic of that name (or one being created); invalid_argument
    /// naming the field for a bad config; no_space when the pool has no room (naming the bytes needed).
    Status create(std::string_view name, const TopicConfig& config = {});
    /// Creation on demand, idempotent under races: creates the topic, or returns once the
    /// existing one is usable, waiting up to `wait` for a creation another process has in
    /// progress (and creating it after all when that creator dies). An existing topic keeps
    /// its own configuration. NotReady when a stopped creator holds it past `wait`.
    Status ensure(std::string_view name, const TopicConfig& config = {}, Duration wait = std::chrono::seconds(5));
    /// Removes the root and its partitions (their leases are revoked: handles fail closed).
    Status remove(std::string_view name);
    /// Names of live topics, sorted.
    std::vector<std::string> list() const;
    /// Read-only snapshot (racy by nature: each field is read once, not all at one instant).
    Result<TopicDescription> describe(std::string_view name, TopicDetail detail = TopicDetail::full) const;

    /// Registers a group (idempotent: an existing live group is returned unchanged, its lease renewed).
    Status register_group(std::string_view topic, std::string_view group, const GroupOptions& options = {});
    /// Deregisters by hand (`fabric-shm group rm`); NotFound if absent. Wakes blocked producers.
    Status remove_group(std::string_view topic, std::string_view group);

private:
    Pool pool_;  ///< a handle: the manager stays usable when the caller's Pool moves
};

struct SendResult {
    uint32_t partition = 0;
    uint64_t offset = 0;
};

/// One message of a batch send.
struct OutgoingMessage {
    ByteView value;
    ByteView key;                                  ///< empty: round-robin
    std::span<const MessageHeader> headers;
};

struct ProducerOptions {
    Duration block_timeout = std::chrono::seconds(5);  ///< on_full=block: longest wait for space
    /// Message timestamps from CLOCK_REALTIME_COARSE (jiffy resolution, ~4 ms) instead of
    /// CLOCK_REALTIME: cheaper where the clock source is slow (kvm-clock: ~110 ns a read).
    bool coarse_timestamps = false;
    /// on_full=overwrite: how long a producer that laps the ring waits for a previous-lap claim
    /// of a live (maybe paused) producer before turning it into a quarantine skip record.
    Duration claim_timeout = std::chrono::seconds(2);
    /// Checked while a send waits for space (on_full=block), at least every 50 ms: returning
    /// true ends the wait with Errc::interrupted (nothing was claimed; the message was not
    /// sent). Lets a program stop promptly on Ctrl-C instead of after block_timeout.
    std::function<bool()> should_stop;
};

/// Sends to one topic. Not thread-safe (one per thread); many producers (threads or
/// processes) may write the same partition. send never creates a topic; open waits (5 s at
/// most) for a topic another process is creating.
class Producer {
public:
    /// NotFound when the topic does not exist.
    static Result<Producer> open(const Pool& pool, std::string_view topic, const ProducerOptions& options = {});
    Producer(Producer&&) noexcept;
    Producer& operator=(Producer&&) noexcept;
    ~Producer();

    /// Round-robin over partitions.
    Result<SendResult> send(ByteView value, std::span<const MessageHeader> headers = {});
    /// send(key, value): keyed (see send_keyed).
    Result<SendResult> send(std::string_view key, std::string_view value) { return send_keyed(key, value); }
    /// Partition = key_hash(key) % num_partitions: same key, same partition, in order.
    Result<SendResult> send_keyed(ByteView key, ByteView value, std::span<const MessageHeader> headers = {});
    /// Sends messages in order, one region check and one timestamp for the batch;
    /// statuses[i] says what became of messages[i] (its partition, and its offset in
    /// `value`). Consecutive messages to one partition claim a run of slots at once (unkeyed
    /// messages are dealt to the partitions in chunks of n / num_partitions to form runs).
    /// A message that fails does not stop the batch, but every later message to the same
    /// partition fails too (code of the first failure, "not sent: message i to partition p
    /// failed first"), so per-key order holds: send again from each partition's first failure.
    /// Fails as a whole (nothing sent, statuses not written) only when the spans' sizes
    /// differ or the topic's regions are gone or expired.
    Status send_batch(std::span<const OutgoingMessage> messages, std::span<BatchStatus> statuses);
    /// Sends to exactly `partition`.
    Result<SendResult> send_to(uint32_t partition, const OutgoingMessage& message);

    uint32_t num_partitions() const;
    uint64_t incarnation() const;
    const std::string& topic() const;
    /// Whether `message` fits one slot of the topic (its key, encoded headers and value within
    /// the stride less the envelope): false exactly when a send of it fails with
    /// message_too_large. For an optional header: add it only where it fits.
    bool fits(const OutgoingMessage& message) const noexcept;

    struct Impl;

private:
    explicit Producer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// Fan-out convenience: sends the same message through each producer; one result per
/// producer, in order (a failure on one topic does not stop the others).
std::vector<Result<SendResult>> send_to_each(std::span<Producer* const> producers, const OutgoingMessage& message);

}  // namespace fabric_shm
