// SPDX-License-Identifier: MIT
// WorkerLoop: the recipe's consumer side as a library call. Polls a topic as a member of a
// group, reads each notified object from the store, hands it to a processor, writes the
// result (fenced by the member's epoch, never over a result of a newer input version),
// forwards it, commits the longest completed prefix. Two forms: run(processor) calls a
// std::function per message; acquire/complete/service/wait_fd hand several messages out at
// once (up to `concurrency`, several per partition) to a driver that completes them in any
// order (fabric-shm-worker --handler, the Python Worker). docs/api.md section 6.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/object_store.h"
#include "fabric_shm/placement_hint.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"
#include "fabric_shm/uri.h"

namespace fabric_shm {

/// WorkerConfig::result_key's default.
inline constexpr std::string_view kDefaultResultKey = "{bucket}/{key}";

/// Message headers the producer and the worker write (part of the wire contract).
inline constexpr std::string_view kHeaderVersion = "fabric-version";        ///< object version, decimal
inline constexpr std::string_view kHeaderPutTime = "fabric-put-ts";         ///< wall ns after the put, decimal
inline constexpr std::string_view kHeaderOriginTime = "fabric-origin-ts";   ///< first stage's put time (multi-stage)
/// When the object expires (wall ns, decimal; absent: no TTL). A worker that finds the object
/// gone after this dead-letters it with reason "expired", not "object not found".
inline constexpr std::string_view kHeaderExpiresTime = "fabric-expires-ts";
/// Set on a notification sent to several topics (fan-out): every topic it was sent on, comma
/// separated. WorkerConfig::delete_input never deletes an input another topic was told of.
inline constexpr std::string_view kHeaderTopics = "fabric-topics";
// Where the put placed the object (placement_hint.h's kHeaderPlacement): a prefetch hint the
// loop passes to MemObjectStore::prefetch, never trusted.
// Results record their input (URI, version) with jobs.h's result_put_options; dead letters
// carry dlq.h's headers (DlqRouter).

/// One notification being processed. Spans are valid for the duration of the call.
struct WorkItem {
    FabricUri uri;                    ///< the input object
    std::string_view topic;
    uint32_t partition = 0;
    uint64_t offset = 0;
    uint64_t version = 0;             ///< version actually read
    std::span<const uint8_t> data;    ///< the object's bytes (pinned in the pool, zero-copy)
    const ObjectInfo* info = nullptr;
    uint32_t attempt = 1;             ///< 1-based
    std::span<const uint8_t> key;     ///< the notification's key (empty: unkeyed)
    /// run()'s processors call this every ~100 ms: heartbeats the group and renews leases.
    /// An error (LeaseExpired, lost partition) means: abandon the item and return the error.
    /// Items handed out by acquire() get a no-op: their driver calls service() instead.
    std::function<Status()> keep_alive;
};

/// Which messages of one partition may be in flight together (docs/api.md section 6).
enum class OrderMode : uint8_t {
    key,   ///< never two messages with the same non-empty key: same-key results complete in offset order
    none,  ///< any messages of the window (fully parallel; a result still never replaces a newer version's)
};

/// The most messages of one partition in flight past its first message not done (the pool
/// counts the attempts of each: GroupPartition's attempt window).
inline constexpr uint32_t kMaxWorkWindow = 8;
/// The largest WorkerConfig::commit_every: a pass defers a partition's commit only while fewer
/// of its messages than that are done since its last commit. What keeps a later owner's scan of
/// the pool's attempt counters covering every hand-out is the hand-out's own offset bound.
inline constexpr uint32_t kMaxCommitEvery = 16;

/// Processor: returns the result bytes, or an error. Errors DlqPolicy calls permanent
/// (not_found, invalid_argument, corrupt, object_too_large, ...) go straight to the DLQ; any
/// other error is retried with backoff up to max_attempts, then dead-lettered.
using Processor = std::function<Result<std::vector<uint8_t>>(const WorkItem& item)>;
/// Processor that writes its result into `out` instead of returning a new vector: run() empties
/// `out` before each call and keeps its capacity from message to message (up to 4 MiB; a larger
/// buffer is freed after its message), so a steady stream allocates nothing for results. An
/// error is handled as a Processor's.
using ProcessorInto = std::function<Status(const WorkItem& item, std::vector<uint8_t>& out)>;

struct WorkerConfig {
    std::string topic;
    std::string group;
    std::string member_id;            ///< "": host-pid-starttime
    std::string store = "default";    ///< MemObjectStore name in the pool
    std::string result_bucket = "results";
    /// The key of an input's result in result_bucket: {bucket} and {key} are the input's
    /// (default "{bucket}/{key}": inputs with the same key in two buckets never share a result).
    /// Must contain {key}. See result_key_for for keys longer than kMaxKeyLength.
    std::string result_key = std::string(kDefaultResultKey);
    /// Lets this group write result_bucket while another live group does too (both must say
    /// so). Without it, open() refuses with `conflict` when another group (of any topic in the
    /// pool) with live members writes the same bucket: two groups that see the same inputs
    /// (fan-out) would overwrite each other's results.
    bool shared_results = false;
    std::string next_topic;           ///< "": no forwarding
    std::string dlq_topic;            ///< "": "<topic>.dlq" (created when first needed)
    uint32_t max_attempts = 3;
    uint64_t backoff_initial_ns = 100'000'000;   ///< doubles per retry
    uint64_t backoff_max_ns = 2'000'000'000;
    uint64_t session_timeout_ns = 10'000'000'000;
    /// A result put that finds the store full (capacity_exceeded) waits this long for space
    /// within the same attempt, heartbeating (0: the session timeout). After that the message
    /// is handed back without counting the attempt (never dead-lettered for a full store) and
    /// no work is taken for `store_full_pause`.
    Duration store_wait{0};
    Duration store_full_pause = std::chrono::seconds(1);
    /// Results expire this long after they are written (0: never); an expired result reads as
    /// absent and its space comes back on the put path (a full heap's allocation reclaims it).
    Duration result_ttl{0};
    /// Removes each input once its result is written (or found written) and the commit that
    /// covers its offset has succeeded, with if_version = the version processed: an input
    /// uploaded again meanwhile is kept. open() refuses (conflict) when another consumer group
    /// is registered on the topic (it, a `group reset` or a DLQ replay would find nothing); a
    /// group that registers later suspends the deletions. Inputs that were dead-lettered, and
    /// inputs a fan-out notification (kHeaderTopics) also told another topic of, are kept.
    bool delete_input = false;
    uint32_t batch = 16;              ///< messages per poll
    uint64_t count = 0;               ///< stop after this many messages handled (0: no limit)
    uint64_t exit_when_idle_ns = 0;   ///< stop after this long without a message (0: never)
    uint32_t partitions_if_created = 4;  ///< topics created when missing get this many partitions
    /// Messages handed out at once by acquire() (run() uses 1), across partitions.
    uint32_t concurrency = 1;
    /// Messages of one partition in flight past its first message not done (1..kMaxWorkWindow).
    uint32_t window = kMaxWorkWindow;
    /// While more of a partition is buffered, its done prefix is committed once this many
    /// messages of it are done since its last commit (1..kMaxCommitEvery), or by the first
    /// acquire() or service() `commit_delay` after a pass first deferred it (a blocked
    /// acquire() wakes for it; run() only between messages, so a long processor delays it;
    /// wait_fd does not wake for it, its keep-alive timer bounds it to ~40 ms); also before
    /// the front of the window gets near what a successor scans, after a dead letter, at once
    /// when the partition has nothing left buffered, and before a rebalance, a wait for store
    /// space, close() and the destructor. A commit refused as busy (the group lock's holder is
    /// stopped) is tried again, and close() leaves it to the successor. A crash redelivers the
    /// done messages not committed yet, skipped while their results are still there: 1 commits
    /// every message, at a commit's cost each (the group lock's and the offset's lines).
    uint32_t commit_every = kMaxCommitEvery;
    Duration commit_delay = std::chrono::milliseconds(1);
    OrderMode order = OrderMode::key;
    /// Asked by open() before each try of its join (and of the result bucket's claim), which it
    /// repeats for up to 10 s while a paused process's hold on the group's lock refuses them as
    /// busy: true gives up with Errc::interrupted, nothing joined (a signal handler's flag, as
    /// run()'s should_stop; it must not throw). Empty: the tries run their course.
    std::function<bool()> open_should_stop;
};

struct LatencySummary {
    uint64_t samples = 0;
    uint64_t p50_ns = 0, p99_ns = 0, p999_ns = 0, max_ns = 0;
};

struct WorkerStats {
    uint64_t processed = 0;      ///< results written
    uint64_t skipped = 0;        ///< a result for that input version existed already
    uint64_t failed_attempts = 0;
    uint64_t dead_lettered = 0;
    uint64_t forwarded = 0;
    uint64_t bytes_in = 0, bytes_out = 0;
    uint64_t rebalances = 0;
    uint64_t superseded = 0;     ///< not written: the result records a newer input version
    uint64_t abandoned = 0;      ///< tickets whose partition moved before complete() (redone by the owner)
    uint64_t store_waits = 0;    ///< result puts that found the store full and waited for space
    uint64_t store_full = 0;     ///< messages handed back (not dead-lettered) after --store-wait ran out
    uint64_t inputs_deleted = 0; ///< delete_input: inputs removed after their commit
    uint64_t inputs_kept = 0;    ///< delete_input: not removed (uploaded again since, fan-out, another group)
    uint64_t epoch = 0;
    /// Monotonic instants (clock.h mono_now_ns) of the first message handed out and of the
    /// last result written; 0 until then. Their difference is the time spent working, without
    /// start-up or idle time: a throughput that neither counts. Under run(), while more
    /// messages are buffered, a result's instant is the clock read of run()'s next acquire()
    /// (no clock read per result); the result of the last message buffered, every result of a
    /// loop driven through acquire()/complete(), and the end of run() read the clock at once
    /// (read from run()'s should_stop, it may not count the result just written yet).
    uint64_t first_handout_mono_ns = 0, last_result_mono_ns = 0;
    std::vector<uint32_t> partitions;  ///< current assignment
    LatencySummary latency;      ///< put timestamp -> result written (wall clock)

    /// Seconds from the first message handed out to the last result written (0 before both).
    double busy_seconds() const {
        return first_handout_mono_ns != 0 && last_result_mono_ns > first_handout_mono_ns
                   ? double(last_result_mono_ns - first_handout_mono_ns) / 1e9
                   : 0.0;
    }
};

/// Why run() returned.
enum class WorkerExit : uint8_t { stopped, count_reached, idle };

class WorkerLoop;

/// One message handed out by WorkerLoop::acquire: its item (the object pinned in the pool:
/// item().data stays valid while the ticket lives) until it goes back through complete().
/// Move-only. A ticket destroyed without complete() is redelivered (its attempt counted). A
/// ticket may outlive its loop (complete() is then impossible, and the message is redelivered
/// to the next owner).
class WorkTicket {
public:
    WorkTicket() noexcept;
    WorkTicket(WorkTicket&&) noexcept;
    WorkTicket& operator=(WorkTicket&&) noexcept;
    ~WorkTicket();
    bool valid() const noexcept { return data_ != nullptr; }
    /// The message and its object (aborts on an invalid ticket).
    const WorkItem& item() const;
    struct Data;

private:
    friend class WorkerLoop;
    std::unique_ptr<Data> data_;
};

class WorkerLoop {
public:
    /// Creates the topic (and next topic) when missing, opens the store, joins the group.
    /// already_exists when a live member of the group uses member_id. With a processor, run()
    /// calls it; without one, the caller drives acquire/complete/service.
    static Result<WorkerLoop> open(Pool& pool, const WorkerConfig& config, Processor processor);
    static Result<WorkerLoop> open(Pool& pool, const WorkerConfig& config);
    WorkerLoop(WorkerLoop&&) noexcept;
    WorkerLoop& operator=(WorkerLoop&&) noexcept;
    ~WorkerLoop();  ///< commits what completed (best effort, no log) and leaves the group if run() or close() did not

    /// Runs until `should_stop()` (checked between messages and every ~50 ms), --count or
    /// --exit-when-idle; then commits, leaves the group. It is acquire -> processor ->
    /// complete with one message at a time. Errors: LeaseExpired (a store or topic lease ran
    /// out), or another fatal error; the group is left in any case. invalid_argument when the
    /// loop was opened without a processor (pass a Processor or a ProcessorInto to run()).
    Result<WorkerExit> run(const std::function<bool()>& should_stop);
    Result<WorkerExit> run(Processor processor, const std::function<bool()>& should_stop = {});
    /// run() with a ProcessorInto: no allocation per message for its results.
    Result<WorkerExit> run(ProcessorInto processor, const std::function<bool()>& should_stop = {});

    // ---- The asynchronous form (docs/api.md section 6). One driver thread calls these. ----

    /// Hands out up to tickets.size() messages ready to process (each pinned, its attempt
    /// counted in the pool), never more than `concurrency` in flight in all, at most `window`
    /// messages of one partition buffered, never a message 8 or more offsets past its
    /// partition's first message not done nor 32 or more past the committed offset (the pool's
    /// attempt counters and a successor's scan of them); in OrderMode::key never a message
    /// whose key has an earlier message in flight. Waits up to `timeout` when none is ready
    /// (0: never waits), heartbeating; returns 0 at once when `concurrency` are in flight or
    /// `count` is reached. Messages that need no processing (a result for that version exists,
    /// an earlier owner decided to dead-letter it) are handled here and not handed out.
    /// Fatal errors only (lease expired, registration fenced).
    Result<size_t> acquire(std::span<WorkTicket> tickets, std::chrono::nanoseconds timeout);
    /// Writes the result (fenced; skipped when the stored result records a newer input
    /// version), forwards it, marks the offset done. The committed offset is the longest
    /// completed prefix (committed by service() and acquire(), see WorkerConfig::commit_every). A ticket whose partition moved
    /// meanwhile is dropped (WorkerStats::abandoned; its new owner redoes it). Fatal errors only.
    Status complete(WorkTicket&& ticket, std::span<const uint8_t> result);
    /// The processing failed: permanent (DlqPolicy's codes: invalid_argument, not_found, ...)
    /// goes to the DLQ at once; otherwise retried after a backoff (other messages go on
    /// meanwhile) or dead-lettered after max_attempts. Fatal errors only.
    Status complete(WorkTicket&& ticket, const Error& error);
    Status complete(WorkTicket&& ticket, const Error& error, bool permanent);
    /// Heartbeats, lease renewals, commits, rebalances, redelivery of dropped tickets. Call it
    /// whenever wait_fd() is readable and at least every 100 ms. Fatal errors only.
    Status service();
    /// A file descriptor (owned by the loop) that is readable when acquire() may return work
    /// or service() is due: new messages, a retry's backoff over, capacity freed by complete().
    /// Level-triggered; acquire() and service() clear it. For poll/epoll/asyncio's add_reader.
    Result<int> wait_fd();
    /// Tickets handed out and not completed yet.
    size_t in_flight() const;
    /// True once `count` messages were handled, or `exit_when_idle` passed without a message.
    bool finished() const;
    /// Commits what completed (a commit refused as busy is left to the successor) and leaves the
    /// group. Tickets still out are redelivered to the
    /// next owner (their attempt counted). wait_fd(), if made, stays open but never becomes
    /// readable again (stop watching it). Idempotent.
    Status close();

    const WorkerStats& stats() const;
    const std::string& member_id() const;
    /// Optional event log ("joined: partitions 0,1 epoch 3", "dlq: ..."), default: none.
    void set_log(std::function<void(std::string_view)> log);

    struct Impl;

private:
    explicit WorkerLoop(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// "host-pid-starttime": unique per process incarnation.
std::string default_member_id();

/// invalid_argument naming the problem unless `key_template` is a result key template: text
/// with the placeholders {bucket} and {key} (the latter required), no other braces.
Status validate_result_key_template(std::string_view key_template);
/// The result key of `input` under `key_template`. A key longer than kMaxKeyLength (a long
/// input key under "{bucket}/{key}") becomes its first kMaxKeyLength - 17 bytes, '~' and 16
/// lower-case hex digits of the 64-bit FNV-1a hash of the whole key: still readable, still
/// distinct (and a hash collision is caught like any other: see WorkerLoop's result check).
/// invalid_uri when the substituted text is not a valid key (an empty segment, "..").
Result<std::string> result_key_for(std::string_view key_template, const FabricUri& input);

}  // namespace fabric_shm
