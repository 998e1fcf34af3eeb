// SPDX-License-Identifier: MIT
// Consumer groups without a coordinator: membership, partition ownership (one CAS-only owner
// word per partition) and epoch fencing live in the topic's group table in the pool.
// Design, state machines and crash analysis: docs/groups.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/consumer.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"
#include "fabric_shm/topic.h"

namespace fabric_shm {

/// Target assignment: a pure, deterministic function. `members` are the live member ids,
/// sorted; previous[p] is the index (into members) of partition p's current live owner, or
/// -1. Returns the owner index of every partition (all -1 when members is empty).
/// Sticky: members keep what they own up to their quota (counts differ by at most one);
/// so a join moves partitions only to the newcomer and a leave moves only the leaver's.
std::vector<int> assign_partitions(uint32_t num_partitions, std::span<const std::string> members,
                                   std::span<const int> previous);

constexpr size_t kMaxMemberIdLength = 32;  ///< bytes; stored NUL-padded in the pool

struct GroupConfig {
    /// A member whose heartbeat is older than this loses its partitions (hung worker).
    Duration session_timeout = std::chrono::seconds(10);
    /// How often claim asks the registry whether members' processes are certainly dead
    /// (a /proc read per member); a SIGKILLed member is noticed within about this long.
    Duration liveness_probe = std::chrono::milliseconds(20);
    GroupOptions registration;  ///< used when the group is not registered on the topic yet
};

/// What a member owns now.
struct Claim {
    std::vector<uint32_t> partitions;  ///< owned now, ascending
    /// Commit, result-write and dead-letter fence token: the registration's era (above every
    /// token issued before it in this pool, and at least the wall clock in ns at registration)
    /// plus the member's epoch. Tokens of a later registration are always higher.
    uint64_t epoch = 0;
    uint64_t era = 0;                  ///< the registration's era: epoch - era counts its epochs (logs)
    uint32_t pending = 0;              ///< target partitions still held by a live member that has not released them
    bool changed = false;              ///< partitions or epoch differ from this member's previous claim
};

struct MemberDescription {
    uint32_t slot = 0;
    std::string id;
    OwnerToken owner = 0;
    uint32_t pid = 0;
    uint64_t epoch = 0;
    uint64_t heartbeat_age_ns = 0;
    bool alive = false;  ///< heartbeat fresh and process not certainly dead
};
struct PartitionOwnerDescription {
    uint32_t partition = 0;
    int member_slot = -1;  ///< -1: unowned or owned by a dead member
    uint64_t owner_epoch = 0;
    uint64_t committed = 0, commit_epoch = 0, lag = 0;
    uint64_t attempt_offset = 0, attempts = 0;
};
/// Epochs below are fence tokens (era + epoch); subtract `era` for the per-registration count.
struct ConsumerGroupDescription {
    std::string group, topic;
    uint64_t era = 0;    ///< fence-token base of this registration
    uint64_t epoch = 0;  ///< token of the last epoch drawn (grows at every join and acquisition)
    std::string result_bucket;   ///< the bucket its workers write (WorkerLoop), "" when none said
    bool shared_results = false; ///< recorded with WorkerConfig::shared_results (--shared-results)
    std::vector<MemberDescription> members;
    std::vector<PartitionOwnerDescription> partitions;
};
/// Read-only snapshot of a group (tools); racy by nature.
Result<ConsumerGroupDescription> describe_consumer_group(const Pool& pool, std::string_view topic,
                                                         std::string_view group);
/// Every registered group of a topic (registration order of the table slots).
Result<std::vector<ConsumerGroupDescription>> describe_consumer_groups(const Pool& pool, std::string_view topic);

/// Operator actions (`fabric-shm group reset|skip`). Both refuse with busy, naming the live
/// members, unless force: a live owner's next commit would overwrite the change.
enum class ResetTo : uint8_t { earliest, latest, offset };
/// Moves the committed offset of `partition` (-1: every partition) to the earliest retained
/// offset, the next offset producers claim, or `offset` (clamped to that range).
Status reset_group_offsets(const Pool& pool, std::string_view topic, std::string_view group, ResetTo to,
                           uint64_t offset = 0, int partition = -1, bool force = false);
/// Commits past exactly one offset; conflict unless the committed offset equals `offset`.
Status skip_group_offset(const Pool& pool, std::string_view topic, std::string_view group, uint32_t partition,
                         uint64_t offset, bool force = false);

/// A process's handle on a consumer group; may host several members (each its own id).
/// Not thread-safe. Every call is bounded: nothing blocks on another member.
class ConsumerGroup {
public:
    /// Registers group `group` on `topic` if needed. num_partitions must match the topic's.
    /// Arguments in the library's one order: pool, topic, group.
    static Result<ConsumerGroup> open(const Pool& pool, std::string_view topic, std::string_view group,
                                      uint32_t num_partitions, const GroupConfig& config = {});
    ConsumerGroup(ConsumerGroup&&) noexcept;
    ConsumerGroup& operator=(ConsumerGroup&&) noexcept;
    ~ConsumerGroup();  ///< does not leave: a dropped handle looks like a crashed member

    /// Joins and claims. already_exists when a live member holds this id; capacity_exceeded
    /// when 32 members are live.
    Result<Claim> join(std::string_view member_id);
    /// Heartbeats, evicts dead members, releases partitions the target gives to others and
    /// takes unowned ones (CAS), fencing commits under older epochs. Commit before calling it:
    /// a partition released here is redelivered from its last commit. A member that has not
    /// joined through this handle joins first (so claim -> consumer.assign(claim) -> seek ->
    /// poll -> commit -> heartbeat works as written). stale_epoch when this member was evicted
    /// (session timeout): join again (or GroupConsumer::rejoin).
    Result<Claim> claim(std::string_view member_id);
    /// claim(), calling `giving_up(partition)` for each partition the target gives to another
    /// member right before releasing it: the member still owns it then (no newer owner can
    /// have fenced it unless this member was evicted meanwhile), so the caller can settle
    /// what it handed out of it under its own fence token (WorkerLoop takes back the attempts
    /// of the messages it drops unfinished). The partition is released after the call
    /// returns, whatever the callback did.
    Result<Claim> claim(std::string_view member_id, const std::function<void(uint32_t partition)>& giving_up);
    /// Refreshes the heartbeat and keeps the group's registration (its lease) alive; cheap, call
    /// it during long processing and backoff. stale_epoch when evicted, lease_expired when the
    /// group's lease already ran out, not_found when the group was removed.
    Status heartbeat(std::string_view member_id);
    /// Releases every partition and the membership row.
    Status leave(std::string_view member_id);

    /// True when the member's owner word for `partition` is still its own and no newer owner
    /// fenced the partition above its token (racy: the fences are what make writes safe; this
    /// tells a refused write by a newer owner from one refused for another reason).
    bool owns(std::string_view member_id, uint32_t partition) const;
    const std::string& group() const;
    const std::string& topic() const;
    uint32_t num_partitions() const;
    const Pool& pool() const;

    struct Impl;

private:
    explicit ConsumerGroup(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

struct GroupConsumerOptions {
    GroupConfig group;
    ConsumerOptions consumer;  ///< its epoch and offset_store are managed by GroupConsumer
};

/// A member plus its Consumer: poll claims (rebalances), re-assigns and polls owned partitions
/// with the member's epoch; commits are epoch-fenced.
class GroupConsumer {
public:
    static Result<GroupConsumer> open(const Pool& pool, std::string_view topic, std::string_view group,
                                      std::string_view member_id, const GroupConsumerOptions& options = {});
    GroupConsumer(GroupConsumer&&) noexcept;
    GroupConsumer& operator=(GroupConsumer&&) noexcept;
    ~GroupConsumer();  ///< does not leave (see leave())

    /// Claims (at most every 10 ms while busy), then polls owned partitions up to `timeout`,
    /// re-claiming at least every 50 ms. Commit what you processed before the next poll.
    Result<size_t> poll(MessageBatch& batch, size_t max, Duration timeout);
    /// Commits offset + 1 of `message` under the member's epoch (stale_epoch once fenced).
    Status commit(const Message& message);
    Status commit();  ///< every owned partition's position
    /// After poll/commit failed with stale_epoch (evicted: session timeout): join again
    /// under the same id with a fresh epoch; positions restart from the committed offsets.
    Status rejoin();
    Status heartbeat();
    Status leave();

    /// Stops reading one of the member's partitions without leaving it, as Consumer::pause
    /// does, and resume() reads on from where it stopped. Unlike consumer().pause, these also
    /// work while a failed assignment waits for the next poll (an offset store whose fetch did
    /// not answer): the member then reads none of partitions(), and what was paused or resumed
    /// meanwhile holds once that poll assigns them (consumer().paused says false then, and
    /// consumer().pause refuses them as not assigned). A partition stays paused while the
    /// member keeps it; one that moves to another member forgets its pause. invalid_argument,
    /// naming the member's partitions, for a partition not in partitions(); paused() says
    /// false for one.
    Status pause(uint32_t partition);
    Status resume(uint32_t partition);
    bool paused(uint32_t partition) const;

    uint64_t epoch() const;
    const std::vector<uint32_t>& partitions() const;
    const std::string& member_id() const;
    Consumer& consumer();
    ConsumerGroup& group();

    struct Impl;

private:
    explicit GroupConsumer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace fabric_shm
