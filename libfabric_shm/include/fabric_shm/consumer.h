// SPDX-License-Identifier: MIT
// Consumer: reads assigned partitions of a topic in offset order, parks on a shared futex when
// idle, commits the next offset to read (with an epoch) to an OffsetStore.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/offset_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"
#include "fabric_shm/topic.h"

namespace fabric_shm {

struct Claim;  // consumer_group.h: what a group member owns now, with its fence epoch

/// Where seek puts each assigned partition.
///
/// In a consumer group, Earliest() and Latest() are the reset policy (Kafka's
/// auto.offset.reset): a partition with a committed offset resumes there, and only one
/// without (another incarnation's, or an external store's nothing) starts at the earliest or
/// latest offset. So the recipe's "seek(Earliest) then poll" never re-reads what the group
/// committed. Rewind(kind), Offset(n) and Timestamp(t) ignore commits (an operator's
/// replay). An observer (no group) has no commits: Earliest() is the oldest retained offset.
struct SeekPolicy {
    enum class Kind : uint8_t { earliest, latest, committed, offset, timestamp };
    Kind kind = Kind::earliest;
    uint64_t value = 0;              ///< offset for `offset`, wall-clock ns for `timestamp`
    Kind fallback = Kind::earliest;  ///< for `committed` with nothing committed (or another incarnation)
    bool rewind = false;             ///< earliest/latest even where the group has committed offsets

    static SeekPolicy Earliest() { return {Kind::earliest, 0, Kind::earliest}; }
    static SeekPolicy Latest() { return {Kind::latest, 0, Kind::earliest}; }
    static SeekPolicy Committed(Kind fallback = Kind::earliest) { return {Kind::committed, 0, fallback}; }
    /// The earliest (or latest) offset whatever was committed: re-reads (or skips) the backlog.
    static SeekPolicy Rewind(Kind kind = Kind::earliest) {
        return {kind == Kind::latest ? Kind::latest : Kind::earliest, 0, Kind::earliest, true};
    }
    static SeekPolicy Offset(uint64_t offset) { return {Kind::offset, offset, Kind::earliest}; }
    /// First retained message with a timestamp >= wall_ns (else the end).
    static SeekPolicy Timestamp(uint64_t wall_ns) { return {Kind::timestamp, wall_ns, Kind::earliest}; }
};

/// A received message; spans point into the MessageBatch that holds it (valid until its next poll).
struct Message {
    uint32_t partition = 0;
    uint64_t offset = 0;
    uint64_t timestamp_ns = 0;  ///< wall clock at send
    std::span<const uint8_t> key;
    std::span<const uint8_t> value;
    std::span<const uint8_t> headers_raw;  ///< encoded; iterate with header_count/header_at
    size_t header_count() const;
    MessageHeader header_at(size_t i) const;
    /// First header with this name, or an empty view.
    std::string_view header(std::string_view name) const;
    std::string_view value_str() const { return {reinterpret_cast<const char*>(value.data()), value.size()}; }
    std::string_view key_str() const { return {reinterpret_cast<const char*>(key.data()), key.size()}; }
};

/// Messages lost to overwriting, reported per poll.
struct Gap {
    uint32_t partition = 0;
    uint64_t from = 0;  ///< first offset lost
    uint64_t to = 0;    ///< first offset read again (exclusive end)
};

/// Reusable poll output: after the first polls it stops allocating (clear keeps capacity).
class MessageBatch {
public:
    std::span<const Message> messages() const { return {messages_.data(), messages_.size()}; }
    size_t size() const { return messages_.size(); }
    bool empty() const { return messages_.empty(); }
    const Message& operator[](size_t i) const { return messages_[i]; }
    auto begin() const { return messages_.begin(); }
    auto end() const { return messages_.end(); }
    std::span<const Gap> gaps() const { return {gaps_.data(), gaps_.size()}; }
    uint64_t lost() const { return lost_; }        ///< offsets overwritten before this poll could read them
    uint64_t skipped() const { return skipped_; }  ///< skip records passed (dead or timed-out producers)
    void clear();

private:
    friend class Consumer;
    std::vector<Message> messages_;
    std::vector<uint8_t> arena_;
    std::vector<size_t> starts_;  ///< arena offset of each message's bytes (spans fixed after the poll)
    std::vector<Gap> gaps_;
    uint64_t lost_ = 0, skipped_ = 0;
};

enum class WaitMode : uint8_t {
    park,            ///< spin for `spin`, then sleep (a shared futex that only sends to the
                     ///< consumer's own partitions wake; docs/topics.md "Blocking")
    spin,            ///< busy-poll (lowest latency; burns a core); past a wait's first 256 empty
                     ///< polls it also offers the core with sched_yield(), so a producer sharing
                     ///< the core still runs: once per 64 polls while someone else wants the core,
                     ///< once per 50 us of spinning while nobody does
};

struct ConsumerOptions {
    /// nullptr: the in-pool group table (MemOffsetStore semantics). Must outlive the consumer.
    OffsetStore* offset_store = nullptr;
    GroupOptions group;                  ///< when the group is registered by this consumer
    WaitMode wait = WaitMode::park;
    Duration spin = std::chrono::microseconds(20);  ///< park mode: busy-poll this long before sleeping
    /// A slot claimed longer than this by a producer that may be alive becomes a skip record.
    Duration claim_timeout = std::chrono::seconds(2);
    uint64_t epoch = 0;                  ///< commit epoch; 0 outside a consumer group
    /// Longest wait of a commit for the group's lock, held by another process (a member
    /// committing, maybe paused); past it the commit fails with Errc::busy, nothing committed.
    /// A group member keeps it well under its session timeout, since its member row is not
    /// heartbeated while it waits (the process's registration is) (GroupConsumer and
    /// WorkerLoop: a quarter of it, at most 2 s). 0: no wait
    /// (one try, and a dead holder's lock is taken over).
    Duration lock_wait = std::chrono::seconds(2);
    /// Receives warnings (offset reset after an incarnation change); default: stderr.
    std::function<void(std::string_view)> on_warning;
};

/// Reads a topic. group "" = an observer: no registration, never commits, never holds back
/// producers. Not thread-safe: one per thread.
class Consumer {
public:
    static Result<Consumer> open(const Pool& pool, std::string_view topic, std::string_view group,
                                 const ConsumerOptions& options = {});
    Consumer(Consumer&&) noexcept;
    Consumer& operator=(Consumer&&) noexcept;
    ~Consumer();

    /// Partitions to read (each < num_partitions); positions of added partitions start at
    /// Committed(earliest). After set_epoch changed the epoch, every partition restarts from
    /// its committed offset (a partition kept across an eviction may have moved meanwhile).
    /// A paused partition that stays assigned stays paused (pause()).
    Status assign(std::span<const uint32_t> partitions);
    /// A group member's claim: takes its partitions and its epoch together (the epoch commits
    /// are fenced with), so nobody copies an epoch by hand. Call it after every
    /// ConsumerGroup::claim (cheap when nothing changed).
    Status assign(const Claim& claim);
    Status assign_all();
    /// Stops reading an assigned partition without leaving it: poll() skips it, a parked poll
    /// and a Waiter do not wait for it, and its position stays where it is (commit() still
    /// commits it). resume() reads on from that position. Process-local: nothing in the pool
    /// changes, so it costs no lookup (a driver whose buffer for one partition fills and
    /// drains, like WorkerLoop's window, pauses and resumes it per message). A partition stays
    /// paused while assign() keeps it assigned, as in Kafka. invalid_argument for a partition
    /// that is not assigned.
    Status pause(uint32_t partition);
    Status resume(uint32_t partition);
    bool paused(uint32_t partition) const;
    Status seek(const SeekPolicy& policy);
    Status seek(uint32_t partition, const SeekPolicy& policy);

    /// Up to max messages, in offset order per partition. Waits up to `timeout` when nothing
    /// is ready (0: never waits); parked consumers wake at least every 50 ms to re-check.
    /// Returns the number of messages in *batch (which is cleared first).
    Result<size_t> poll(MessageBatch& batch, size_t max, Duration timeout);

    /// Stores each assigned partition's position (the next offset to read) with the epoch.
    /// StaleEpoch if the store holds a higher epoch; invalid_argument for observers.
    Status commit();
    /// One partition's next offset. With an epoch (a group member's token), a partition not
    /// assigned to this consumer is refused with StaleEpoch: tokens are per member, so a
    /// released partition's fence may be below this consumer's newer token.
    Status commit(uint32_t partition, uint64_t next_offset);

    Result<uint64_t> position(uint32_t partition) const;
    /// Next offset producers claim minus position (racy snapshot).
    Result<uint64_t> lag(uint32_t partition) const;
    void set_epoch(uint64_t epoch);
    uint64_t incarnation() const;
    uint32_t num_partitions() const;
    const std::vector<uint32_t>& assignment() const;

    struct Impl;

private:
    friend class Waiter;  // reads the assignment and positions it watches (waiter.h)
    explicit Consumer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace fabric_shm
