// SPDX-License-Identifier: MIT
// WorkerLoop: notification -> get (pin) -> skip if done -> process -> fenced result put ->
// forward -> commit. Delivery is at-least-once; a result is written once per input version
// (a redelivered notification whose result exists for that version is skipped), and never
// over a result that records a newer input version.
//
// The asynchronous engine (run() is it with one message at a time): each owned partition
// buffers up to `window` messages past its committed offset in a ring of slots (waiting, in
// flight, waiting out a retry's backoff, done). acquire() hands eligible slots out as
// tickets; complete() marks them done; the done prefix of a ring is committed. A partition
// whose ring is full is taken out of the consumer's assignment until a slot frees, so the
// consumer never reads past the window.
//
// The position invariant: a partition's committed offset never passes a message that was
// neither processed, skipped as a duplicate, nor dead-lettered (only a done prefix is
// committed). Every change of assignment or epoch drops every ring and restarts each owned
// partition at its committed offset; tickets handed out before are then stale (complete()
// drops them: their new owner redoes them).
#include "fabric_shm/worker_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "crash_point.h"
#include "decimal.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/lease.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/metrics.h"
#include "fabric_shm/names.h"
#include "fabric_shm/registry.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/waiter.h"
#include "mq/message_headers.h"
#include "mq/result_buckets.h"
#include "mq/topic_internal.h"
#include "name_rule.h"
#include "store/store_access.h"
#include "uri_access.h"
#include "worker/membership.h"

namespace fabric_shm {

namespace {

constexpr uint64_t kPollTimeoutNs = 50 * kNsPerMs;  ///< idle members look for takeovers this often
/// run()'s result buffer keeps its capacity up to this from message to message (a larger one is
/// freed after its message): a stream of results up to 4 MiB allocates nothing.
constexpr size_t kKeptResultBytes = size_t(4) << 20;

uint64_t parse_u64(std::string_view text, uint64_t fallback) {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    return ec == std::errc() && p == text.data() + text.size() && !text.empty() ? v : fallback;
}

bool is_fatal(Errc code) { return code == Errc::lease_expired || code == Errc::stale_generation; }

void sleep_ns(uint64_t ns) {
    timespec ts{time_t(ns / kNsPerSec), long(ns % kNsPerSec)};
    nanosleep(&ts, nullptr);
}

/// A lock held by a live but paused process (busy after the lock's timeout) delays our step;
/// it must not end the worker. We keep heartbeating and try again.
constexpr uint64_t kBusyRetryNs = 10 * kNsPerMs;
/// A send refused by a full topic (a dead letter by the DLQ, a forward by the next stage's
/// topic) is tried again after this long.
constexpr uint64_t kFullTopicRetryNs = kNsPerSec;
/// The longest a forward waits for room in a full next topic: the member does not heartbeat
/// while it waits, so the wait is also at most a quarter of the session timeout.
constexpr uint64_t kForwardWaitNs = kNsPerSec;
static_assert(kMaxCommitEvery + kMaxWorkWindow <= mq::kAttemptScanOffsets,
              "done messages left uncommitted plus the window stay inside what a successor scans");

/// Topics a worker creates when missing (its own, its next stage's). Workers of two stages
/// started together both create the topic between them (stage 1's --next-topic is stage 2's
/// --topic): TopicManager::ensure makes the loser wait for the winner's creation.
constexpr uint64_t kTopicReadyWaitNs = 10 * kNsPerSec;

Status ensure_topic(Pool& pool, const std::string& name, uint32_t partitions) {
    TopicConfig cfg;
    cfg.num_partitions = partitions;
    return TopicManager(pool).ensure(name, cfg, ns_duration(kTopicReadyWaitNs));
}

using detail::decimal;

/// One piece of a result key template: literal text, {bucket} or {key}.
struct KeyPiece {
    enum class Kind : uint8_t { text, bucket, key } kind;
    std::string_view text;  ///< kind text: a view of the template
    /// The piece's text for an input with this bucket and key.
    std::string_view of(std::string_view bucket, std::string_view key) const {
        return kind == Kind::text ? text : kind == Kind::key ? key : bucket;
    }
};

/// Calls fn(piece) for each piece of `key_template` (validated: validate_result_key_template),
/// in order; no empty text piece.
template <class Fn>
void for_each_key_piece(std::string_view key_template, Fn&& fn) {
    for (size_t i = 0; i < key_template.size();) {
        const size_t open = key_template.find('{', i);
        if (open != i) {
            const size_t end = open == std::string_view::npos ? key_template.size() : open;
            fn(KeyPiece{KeyPiece::Kind::text, key_template.substr(i, end - i)});
            if (open == std::string_view::npos) break;
        }
        const size_t close = key_template.find('}', open);
        const bool key = key_template.substr(open + 1, close - open - 1) == "key";
        fn(KeyPiece{key ? KeyPiece::Kind::key : KeyPiece::Kind::bucket, {}});
        i = close + 1;
    }
}

/// result_key_for's text into `out` (its capacity reused), without its checks: the template was
/// validated when the loop opened, and the key is validated by the URI made from it.
void fill_result_key(std::string& out, std::string_view key_template, std::string_view bucket, std::string_view key) {
    out.clear();
    for_each_key_piece(key_template, [&](const KeyPiece& k) { out.append(k.of(bucket, key)); });
    if (out.size() > kMaxKeyLength) {
        // Readable prefix + the hash of the whole key (FNV-1a, 64 bits): distinct keys stay
        // distinct unless they collide in the hash, which the input-URI check then reports.
        uint64_t h = 0xcbf29ce484222325ULL;
        for (unsigned char c : out) h = (h ^ c) * 0x100000001b3ULL;
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
        out.resize(kMaxKeyLength - 17);
        out.push_back('~');
        out.append(hex, 16);
    }
}

}  // namespace

Status validate_result_key_template(std::string_view t) {
    auto bad = [&](const std::string& why) {
        return make_error(Errc::invalid_argument, "result key template '" + std::string(t) + "' " + why);
    };
    bool has_key = false;
    for (size_t i = 0; i < t.size(); ++i) {
        if (t[i] == '}') return bad("has a '}' without its '{'");
        if (t[i] != '{') continue;
        const size_t close = t.find('}', i);
        if (close == std::string_view::npos) return bad("has a '{' without its '}'");
        const std::string_view name = t.substr(i + 1, close - i - 1);
        if (name == "key") has_key = true;
        else if (name != "bucket") return bad("has the unknown placeholder {" + std::string(name) + "} (known: {bucket}, {key})");
        i = close;
    }
    if (!has_key) return bad("lacks {key}: every input would get the same result");
    return {};
}

Result<std::string> result_key_for(std::string_view key_template, const FabricUri& input) {
    FABRIC_TRY(validate_result_key_template(key_template));
    std::string key;
    fill_result_key(key, key_template, input.bucket(), input.key());
    // Validated by building a URI (empty segments, "." and "..", control characters).
    auto uri = FabricUri::make("p", "b", key);
    if (!uri) return std::move(uri).error();
    return key;
}

std::string default_member_id() {
    char host[64] = {};
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') std::strcpy(host, "host");
    std::string h;
    // Member ids are at most kMaxMemberIdLength (32) bytes: a short host part.
    for (const char* c = host; *c && h.size() < 10; ++c)
        h += (std::isalnum(static_cast<unsigned char>(*c)) || *c == '-') ? *c : '-';
    return h + "-" + std::to_string(getpid()) + "-" + std::to_string(self_start_time());
}

/// What handling one step came to.
enum class Outcome : uint8_t {
    done,      ///< result written / skipped / dead-lettered: the offset may be committed past
    lost,      ///< a newer owner has the partition (evicted or fenced): leave it, rebalance
    /// The store was contended (a key rewritten faster than it could be read or locked, or its
    /// lock taken over from this writer again and again): hand it back, its count refunded,
    /// and try again shortly.
    deferred,
    failed,    ///< one attempt failed (the Failure says why)
    store_full,  ///< the result put found no space within --store-wait: hand it back, uncounted
    /// The result is written but the next topic did not take its notification for now (full:
    /// the next stage is behind; our claim there skipped while we were stopped; a stop asked
    /// during the wait): not an attempt that failed. The message waits and is forwarded again
    /// by its next hand-out, which finds the result current.
    forward_waits,
};

/// Keep-alive (heartbeat, leases) at most this often from acquire()/service().
constexpr uint64_t kKeepAliveEveryNs = 20 * kNsPerMs;
/// now - since, or 0 when `since` is later (an instant read after the caller's `now`).
constexpr uint64_t elapsed(uint64_t now, uint64_t since) { return now > since ? now - since : 0; }
/// delete_input: how often the topic's group table is read for a group registered since open().
constexpr uint64_t kGroupCheckEveryNs = kNsPerSec;

/// Told by a ticket destroyed without complete(): the loop redelivers its message. Shared
/// with the tickets (a ticket may outlive its loop); a ticket may die on any thread.
struct AbandonBox {
    struct Dropped {
        uint64_t generation;
        uint32_t partition;
        uint64_t id;
    };
    std::mutex mu;
    std::vector<Dropped> dropped;
    std::atomic<bool> any{false};  ///< release by droppers, acquire by the loop: dropped is non-empty
    std::atomic<int> event_fd{-1}; ///< the loop's wake-up eventfd (wait_fd), -1 when none; written and read under mu
    bool fd_written = false;       ///< under mu: a dropper wrote event_fd since the loop last drained it
};

// Recycled from message to message (WorkerLoop::Impl::new_data/recycle): its strings keep their
// capacity, so handing a message out allocates nothing once they are large enough.
struct WorkTicket::Data {
    WorkItem item;                   ///< item.uri: the input
    PinnedView view;                 ///< keeps item.data valid
    std::string input_text;          ///< item.uri as text: the result records it
    std::string result_text;         ///< the result's URI, the text forwarded to the next topic
    FabricUriView result_uri;        ///< a view of result_text
    /// The result's store key, made once at hand-out: its lookups and its put use it.
    detail::StoreKey result_store_key;
    /// The result's version when the message was handed out (0: none), judged absent or older
    /// then: the result put is conditional on it, so an unchanged result is not looked up again.
    uint64_t result_seen_version = 0;
    /// Where that lookup found the result (meaningful while result_seen_version != 0): the put
    /// starts from it instead of a lookup of its own; its slot CAS fails if the result changed.
    detail::Found result_found;
    /// The notification's kHeaderPutTime (0: none), read at hand-out with its other headers.
    uint64_t put_ts = 0;
    uint64_t id = 0;                 ///< the hand-out (Slot::id)
    uint64_t generation = 0;         ///< the loop's assignment generation at hand-out
    /// The box of the loop that last handed this data out, kept while the data is recycled (no
    /// reference count touched per message): a ticket dropped after its loop is gone still
    /// writes to it.
    std::shared_ptr<AbandonBox> box;
    bool outstanding = false;        ///< handed out and not completed: a drop is reported
    /// What item.keep_alive holds, so that a hand-out assigns it only when it changes: null
    /// for nothing yet, kNoOpKeepAlive for acquire()'s no-op, or the loop run() drives.
    const void* keep_alive_of = nullptr;
};

namespace {
/// WorkTicket::Data::keep_alive_of for the no-op keep_alive of acquire()'s items.
const char kNoOpKeepAliveTag = 0;
const void* const kNoOpKeepAlive = &kNoOpKeepAliveTag;
}  // namespace

WorkTicket::WorkTicket() noexcept = default;
WorkTicket::WorkTicket(WorkTicket&&) noexcept = default;
WorkTicket& WorkTicket::operator=(WorkTicket&& other) noexcept {
    if (this != &other) {
        WorkTicket dropped(std::move(*this));  // an uncompleted ticket overwritten is dropped
        data_ = std::move(other.data_);
    }
    return *this;
}
WorkTicket::~WorkTicket() {
    if (!data_ || !data_->outstanding) return;
    AbandonBox& b = *data_->box;
    std::lock_guard<std::mutex> lock(b.mu);
    b.dropped.push_back({data_->generation, data_->item.partition, data_->id});
    b.any.store(true, std::memory_order_release);  // pairs with take_abandoned's acquire exchange
    // Under mu: the loop's destructor clears event_fd under mu before closing it, so the number
    // written to is never a descriptor the process has since reused (a pool segment opened
    // read-write, say). Relaxed: mu orders it.
    const int fd = b.event_fd.load(std::memory_order_relaxed);
    if (fd >= 0) {
        const uint64_t one = 1;
        (void)!::write(fd, &one, sizeof one);
        b.fd_written = true;  // the loop drains it even when it did not set it itself
    }
}
const WorkItem& WorkTicket::item() const {
    if (!data_) {
        std::fprintf(stderr, "fabric_shm: WorkTicket::item() on an empty ticket\n");
        std::abort();
    }
    return data_->item;
}

namespace {

/// One buffered message of an owned partition (its bytes copied out of the topic slot; the
/// vectors keep their capacity, so a steady stream allocates nothing).
struct Slot {
    enum class State : uint8_t { waiting, in_flight, retry, done };
    uint64_t offset = 0, timestamp_ns = 0;
    std::vector<uint8_t> key, value, headers;
    State state = State::waiting;
    uint64_t retry_at_ns = 0;  ///< retry: not handed out before this (monotonic)
    uint64_t id = 0;           ///< in_flight: the hand-out
    uint32_t attempt = 0;      ///< in_flight: its attempt number
    /// retry after a forward that waits: the input version whose result is written. The next
    /// hand-out judges the result by it, as by a notification's fabric-version, before it pins
    /// the input: an unversioned notification's input may have expired or been removed while
    /// the forward waited, and its result is there to forward.
    uint64_t processed_version = 0;
    /// A dead letter whose send was delayed (busy): decided and recorded, sent at its next turn.
    bool dlq_owed = false;
    uint64_t dlq_attempts = 0;
    std::string dlq_reason;

    Message message(uint32_t partition) const {
        Message m;
        m.partition = partition;
        m.offset = offset;
        m.timestamp_ns = timestamp_ns;
        m.key = key;
        m.value = value;
        m.headers_raw = headers;
        return m;
    }
};

/// delete_input: an input whose result is written, removed once its offset is committed.
struct PendingDelete {
    uint64_t offset = 0;
    uint64_t version = 0;  ///< the version processed (removed only if still current)
    FabricUri uri;         ///< assigned in place (FabricUri::assign): entries are reused
};

struct Part {
    bool owned = false;
    bool paused = false;         ///< ring full: paused in the consumer (Consumer::pause)
    uint64_t next_read = 0;      ///< the consumer's position for it (first offset not buffered)
    uint64_t serial_until = 0;   ///< offsets below: a previous owner's window, run one at a time
    uint64_t commit_to = UINT64_MAX;  ///< done prefix to commit, UINT64_MAX: nothing
    uint32_t done_since_commit = 0;   ///< messages done (popped) since its last commit
    uint64_t commit_due_ns = 0;       ///< a deferred commit is made by then (0: none deferred)
    bool commit_at_once = false;      ///< a dead letter moved the pool's offset: follow it now
    /// The pool's committed offset as this owner last set it (assignment, commit, dead-letter
    /// record): a successor scans the attempt counters from there (kAttemptScanOffsets).
    uint64_t pool_committed = 0;
    uint32_t head = 0, count = 0;
    uint32_t in_flight = 0;
    std::array<Slot, kMaxWorkWindow> ring;
    /// The window past the first message not done reaches beyond what a successor scans from
    /// pool_committed: hand-outs are held back there (eligible) until a commit moves it.
    bool front_near_scan_end() const {
        return count != 0 && ring[head].offset + mq::kAttemptWindow > pool_committed + mq::kAttemptScanOffsets;
    }
    /// Nothing pending to commit (committed, or dropped to a newer owner).
    void clear_commit() {
        commit_to = UINT64_MAX;
        done_since_commit = 0;
        commit_due_ns = 0;
        commit_at_once = false;
    }
    /// delete_input: done offsets not committed yet, the first pending_deletes entries (those
    /// past it are kept for their strings' capacity).
    std::vector<PendingDelete> deletes;
    size_t pending_deletes = 0;
    Slot& at(uint32_t i) { return ring[(head + i) % kMaxWorkWindow]; }
};

}  // namespace

struct WorkerLoop::Impl {
    Pool pool_handle;  ///< keeps the mapping alive: the caller's Pool may be moved or dropped
    Pool* pool = nullptr;  ///< &pool_handle
    WorkerConfig cfg;
    Processor processor;
    std::function<void(std::string_view)> log;
    std::unique_ptr<MemObjectStore> store;
    std::optional<Consumer> consumer;
    std::optional<Producer> next;
    std::optional<DlqRouter> router;
    std::unique_ptr<worker::Membership> membership;
    std::unique_ptr<RenewalManager> renewals;
    WorkerStats stats;
    LatencyHistogramData latency;    ///< this member's own samples (the summary)
    LatencyRecorder recorder;        ///< the same samples into the pool (topic, group) histogram
    std::string recorder_warning;    ///< why the pool histogram is not written ("" when it is)
    bool left = false;
    bool dlq_leases_registered = false;

    // The engine's state.
    std::vector<Part> parts;             ///< per partition of the topic
    std::vector<uint32_t> active;        ///< owned and not paused: what the consumer reads
    std::vector<uint32_t> next_active;   ///< sync_active's scratch (swapped with active: no allocation)
    bool active_dirty = false;
    uint64_t generation = 1;             ///< bumped by every (re)assignment: older tickets are stale
    uint64_t next_id = 0;
    size_t in_flight = 0;
    uint64_t handled = 0;                ///< messages done (results, skips, dead letters)
    uint64_t buffered = 0;               ///< slots not done, in all rings
    /// A result was written since stats.last_result_mono_ns was last set: the next acquire()
    /// sets it from the clock read it makes anyway (note_result_instant).
    bool result_unclocked = false;
    bool run_driving = false;  ///< run() drives the loop: its acquire() follows each complete()
    uint32_t rotate = 0;
    bool need_rebalance = false;
    uint64_t last_keep_alive_ns = 0, last_rebalance_ns = 0, last_message_ns = 0;
    /// The idle clock (exit_when_idle) runs from the first poll pass, not from open: joins
    /// refused as busy, or a caller's own set-up between open and run, must not count as idle
    /// before anything was read.
    bool idle_clock_started = false;
    /// A refund of this reassignment was refused as busy (a paused holder of the group's lock):
    /// its other refunds are skipped, their counts stay as after a crash. Each refund waits up
    /// to 2 s for the lock inside a claim that does not heartbeat; one wait per partition could
    /// keep the member silent past its session timeout. Cleared when a reassignment starts.
    bool refunds_found_lock_busy = false;
    /// The store was full past --store-wait: nothing is handed out before this (mono ns).
    uint64_t store_full_until_ns = 0;
    /// Per partition of the next topic: it was full for a whole forward wait, so no forward to
    /// it tries before this (mono ns; 0: none). A pass that meets many results to forward
    /// (skips after a restart, a window of completions) then waits once per full partition,
    /// not once per message, and forwards to the partitions with room go on meanwhile (one
    /// slow or stopped member of the next stage holds only its own partitions).
    std::vector<uint64_t> next_full_until_ns;
    /// The partition the next unkeyed forward tries first (round robin, past held ones).
    uint32_t next_unkeyed_turn = 0;
    /// delete_input: another group registered on the topic after open(): nothing is deleted.
    bool deletes_suspended = false;
    uint64_t last_group_check_ns = 0;
    MessageBatch batch;
    std::shared_ptr<AbandonBox> box = std::make_shared<AbandonBox>();
    std::vector<std::unique_ptr<WorkTicket::Data>> spare;  ///< recycled ticket data

    // Reused from message to message (no allocation per message once they are large enough).
    std::string result_key;          ///< hand_out: the result key of the message at hand
    /// "fabric://POOL/RESULT_BUCKET/" (empty: the names break the rules; the checked path), and
    /// the result key template in pieces: what result_uri_of writes without parsing anything.
    std::string result_prefix;
    std::vector<KeyPiece> result_key_pieces;  ///< their text views cfg.result_key
    void init_result_uri();
    detail::StoredMeta result_head;  ///< the stored result as head_meta last found it
    /// result_put_options(input, version, epoch) with the ttl and the partition's fence, made
    /// once (open) and updated in place by result_put (its metadata entries stay).
    PutOptions result_options;
    std::string* result_input_uri = nullptr;      ///< result_options' kResultInputUri value
    std::string* result_input_version = nullptr;  ///< result_options' kResultInputVersion value
    uint32_t fence_partition = 0;                 ///< the partition result_options' fence_holds asks about

    // wait_fd(): an epoll set of the Waiter's eventfd (new messages), our eventfd (work
    // buffered, capacity freed, a ticket dropped) and a timerfd (service due, a retry due).
    std::optional<Waiter> waiter;
    int epoll_fd = -1, event_fd = -1, timer_fd = -1, waiter_fd = -1;
    bool waiter_in_set = false, event_set = false;
    uint64_t timer_due_ns = 0;
    /// run()'s should_stop while run() runs (null otherwise): a result put waiting for store
    /// space gives up when it turns true.
    const std::function<bool()>* stop_check = nullptr;
    /// send_unkeyed's probe of a partition whose hold ended: the next topic's send waits not.
    bool probing_next = false;
    /// The fork count where the loop was opened (fork_generation.h): see ~WorkerLoop.
    uint32_t made_in = detail::fork_generation();

    ~Impl() {
        {
            // A ticket dropped on another thread writes to event_fd under mu (see ~WorkTicket).
            std::lock_guard<std::mutex> lock(box->mu);
            box->event_fd.store(-1, std::memory_order_relaxed);
        }
        waiter.reset();  // before the consumer it watches
        for (int fd : {epoll_fd, event_fd, timer_fd})
            if (fd >= 0) ::close(fd);
    }

    void note(const std::string& line) const {
        if (log) log(line);
    }
    Status register_topic_leases(const std::string& topic);
    Status keep_alive();
    /// keep_alive() once kKeepAliveEveryNs has passed since the last (`now`: a recent reading
    /// of either monotonic clock; the coarse one suffices). Evicted (stale_epoch: silent past
    /// the session timeout, our partitions moved) sets need_rebalance, and the error is
    /// returned for the caller to say what else it means: most go on, and the rebalance joins
    /// again. Inline: the check runs per acquire pass and per forward.
    Status keep_alive_if_due(uint64_t now) {
        if (elapsed(now, last_keep_alive_ns) < kKeepAliveEveryNs) [[likely]] return {};
        return keep_alive_noting_eviction();
    }
    Status keep_alive_noting_eviction();
    Status apply_assignment();
    void refund_dropped(uint32_t p, std::string_view why);
    Status sync_active();
    enum class CommitWhen { due, now };
    Status commit_pending(bool* busy, CommitWhen when, uint64_t now = 0);
    uint64_t next_commit_due() const;
    Status service(bool full, uint64_t now);
    Status rebalance();
    void drop_lost_partitions();
    Status poll_into_rings(uint64_t timeout_ns);
    Result<size_t> hand_out_ready(std::span<WorkTicket> tickets, bool* more, uint64_t now);
    Result<bool> hand_out(uint32_t p, uint32_t i, WorkTicket& ticket);
    bool eligible(Part& part, uint32_t i, uint64_t now);
    bool any_eligible(uint64_t now);
    bool rings_serve(uint64_t want, uint64_t now);
    Result<size_t> acquire(std::span<WorkTicket> tickets, uint64_t timeout_ns, bool full);
    uint64_t next_backoff_end(uint64_t now) const;
    struct Failure {
        std::string reason;
        bool permanent = false;
        uint64_t retry_at_ns = 0;  ///< Outcome::forward_waits: handed out again from then (monotonic)
        uint64_t processed_version = 0;  ///< Outcome::forward_waits: the input version whose result is written
    };
    Result<std::optional<Outcome>> judge_stored_result(const Message& m, WorkTicket::Data& d, Failure* failure);
    Result<Outcome> write_result(const Message& m, WorkTicket::Data& d, std::span<const uint8_t> out, Failure* failure);
    Result<Outcome> wait_for_store_space(const Message& m, Result<uint64_t>& put, const std::function<Result<uint64_t>()>& retry,
                                         Failure* failure);
    std::string store_numbers() const;
    Result<FabricUriView> result_uri_of(const FabricUriView& input, std::string& buffer);
    std::string no_result_uri(const FabricUriView& input, const Error& error) const;
    void init_result_options();
    const PutOptions& result_put(std::string_view input, uint64_t version, uint64_t token, uint32_t partition,
                                 uint64_t result_version);
    void queue_delete(const Message& m, const FabricUriView& input, uint64_t version);
    Status delete_committed(Part& part, uint64_t committed);
    Status check_other_groups();
    Result<Outcome> forward(const Message& m, std::string_view result_uri, uint64_t result_version,
                            PlacementHint placed, Failure* failure, std::optional<uint64_t> put_ts = std::nullopt);
    std::optional<Result<SendResult>> send_unkeyed(const OutgoingMessage& outgoing, uint32_t* target,
                                                   uint64_t* soonest_ns);
    /// forward(), and once it is sent, the input (at `input_version`) queued for --delete-input.
    Result<Outcome> forward_then_delete(const Message& m, std::string_view result_uri, uint64_t result_version,
                                        PlacementHint placed, Failure* failure, const FabricUriView& input,
                                        uint64_t input_version, std::optional<uint64_t> put_ts = std::nullopt) {
        auto sent = forward(m, result_uri, result_version, placed, failure, put_ts);
        if (sent && *sent == Outcome::done) queue_delete(m, input, input_version);
        if (sent && *sent == Outcome::forward_waits) failure->processed_version = input_version;
        return sent;
    }
    Status settle(Part& part, Slot& s, const Message& m, Result<Outcome> r, const Failure& failure);
    Result<bool> take_back(Part& part, Slot& s, const Message& m, std::string_view why);
    Status fail_slot(Part& part, Slot& s, const Message& m, const Failure& failure);
    Status dead_letter_slot(Part& part, Slot& s, const Message& m, uint64_t attempts, const std::string& reason);
    Status refused(Part& part, Slot& s, const Error& e, std::string_view what);
    void finish_slot(Part& part, Slot& s);
    void unstart(Part& part, Slot& s, uint64_t retry_at_ns);
    void advance(Part& part);
    void commit_past_skips(Part& part);
    Slot* find(const WorkTicket::Data& d);
    void take_abandoned();
    Status complete_error(WorkTicket&& ticket, const Error& error, bool permanent);
    std::unique_ptr<WorkTicket::Data> new_data();
    void recycle(std::unique_ptr<WorkTicket::Data> d);
    uint64_t capacity() const;
    bool finished() const;
    Status note_dead_letter();
    Error fatal(Error e) const;
    Status update_wait_fd(bool more_ready, uint64_t now);
    void signal_ready();
    void drain_event_fd_locked();
    void leave();
    void note_result_instant();
    void clock_last_result(uint64_t now = 0);
};

Status WorkerLoop::Impl::register_topic_leases(const std::string& topic) {
    TopicManager tm(*pool);
    auto d = tm.describe(topic, TopicDetail::positions);  // its leases: no walk of its slots
    if (!d) return std::move(d).error();
    for (uint64_t id : d->lease_ids) FABRIC_TRY(renewals->register_lease(id));
    return {};
}

// Renews due leases (a lease that ran out is fatal: fail closed), heartbeats the registry
// and the group.
Status WorkerLoop::Impl::keep_alive() {
    const uint64_t now = mono_now_ns();
    last_keep_alive_ns = now;
    TickSummary t = renewals->tick(MonoClock::from_ns(now));
    FABRIC_TRY(std::move(t.registration));  // fenced: fail closed (stale_generation is fatal)
    for (const RenewalOutcome& o : t.outcomes)
        if (o.kind == RenewalOutcomeKind::dropped)
            return make_error(o.error.code == Errc::stale_generation ? Errc::stale_generation : Errc::lease_expired,
                              "lease " + std::to_string(o.lease_id) + " could not be renewed: " + o.error.message);
    // Also renews the group's registration: a member that heartbeats through a long message
    // keeps its group counted by on_full=block producers.
    return membership->heartbeat(now);
}

// keep_alive_if_due's call, once due.
Status WorkerLoop::Impl::keep_alive_noting_eviction() {
    Status st = keep_alive();
    if (!st && st.code() == Errc::stale_epoch) need_rebalance = true;
    return st;
}

// A reassignment drops the partition's tickets still in flight: their handlers run on, but
// their results are discarded and the messages are handed out again (by the partition's next
// owner, or by us under the new epoch). Such a hand-out did not fail, so its count is taken
// back, while we still own the partition (before the release, or with the new epoch's fence
// ours): the pool's step refuses it once a newer owner fenced the partition, so it can only
// undo a count of ours. A handler that kills the process after this refund is not counted;
// the message's next hand-out, made concurrently, is (docs/groups.md, "Dead letters").
// The slots go back to waiting, so a ticket completed later finds nothing (abandoned).
void WorkerLoop::Impl::refund_dropped(uint32_t p, std::string_view why) {
    if (p >= parts.size() || !parts[p].owned) return;
    Part& part = parts[p];
    std::array<uint64_t, kMaxWorkWindow> offsets;
    size_t n = 0;
    for (uint32_t i = 0; i < part.count; ++i) {
        Slot& s = part.at(i);
        if (s.state != Slot::State::in_flight) continue;
        offsets[n++] = s.offset;
        unstart(part, s, 0);
    }
    if (n == 0) return;
    Status st = refunds_found_lock_busy
                    ? Status(make_error(Errc::busy, "an earlier refund of this reassignment found the group's lock held"))
                    : router->refund_dropped(p, std::span(offsets.data(), n));
    if (st) return;
    if (st.code() == Errc::busy) refunds_found_lock_busy = true;
    note("partition " + std::to_string(p) + " " + std::string(why) + ": the attempts of " + std::to_string(n) +
         " message(s) in flight stay counted: " + st.error().message);
}

// Every (re)assignment restarts every owned partition from its committed offset: a partition
// kept across an eviction may have been handled and committed by another member meanwhile.
// Rings are dropped; tickets out become stale (their attempts taken back where the partition
// was ours throughout: refund_dropped). A previous owner's uncommitted window (offsets
// with counted hand-outs past the committed offset) is re-run one message at a time.
Status WorkerLoop::Impl::apply_assignment() {
    const auto& owned = membership->partitions();
    consumer->set_epoch(membership->epoch());
    router->set_epoch(membership->epoch());
    // Kept partitions: owned before this claim and after it, by the same membership (no
    // eviction in between), now fenced at our new token. Partitions given up were refunded
    // before their release (rebalance); those lost to an eviction keep their counts: a member
    // silent past its session timeout is presumed dead, and counted as a crash.
    if (membership->kept_membership())
        for (uint32_t p : owned) refund_dropped(p, "reassigned under a new epoch");
    FABRIC_TRY(consumer->assign(owned));
    ++generation;
    for (Part& part : parts) {
        for (Slot& s : part.ring) {
            s.state = Slot::State::waiting;
            s.dlq_owed = false;
            s.processed_version = 0;
        }
        part.owned = part.paused = false;
        part.head = part.count = part.in_flight = 0;
        part.clear_commit();
        part.serial_until = 0;
        part.pending_deletes = 0;  // uncommitted: whoever owns the offsets now redoes (and deletes) them
    }
    in_flight = 0;
    buffered = 0;
    active.clear();
    for (uint32_t p : owned) {
        if (consumer->paused(p)) FABRIC_TRY(consumer->resume(p));  // every ring starts empty
        FABRIC_TRY(consumer->seek(p, SeekPolicy::Committed()));
        auto pos = consumer->position(p);
        if (!pos) return std::move(pos).error();
        Part& part = parts[p];
        part.owned = true;
        part.next_read = *pos;
        part.pool_committed = *pos;
        part.serial_until = router->uncommitted_window_end(p, *pos);
        if (part.serial_until > *pos + 1)
            note("partition " + std::to_string(p) + ": offsets " + std::to_string(*pos) + ".." +
                 std::to_string(part.serial_until - 1) +
                 " were in flight at a previous owner; re-running them one at a time");
        active.push_back(p);
    }
    active_dirty = false;
    stats.partitions = owned;
    stats.epoch = membership->epoch();
    note("assigned: " + membership->describe());
    return {};
}

// The consumer reads only partitions whose ring has room. A partition coming back resumes
// where the consumer stopped: the first offset not buffered.
Status WorkerLoop::Impl::sync_active() {
    if (!active_dirty) return {};
    active_dirty = false;
    next_active.clear();
    // Every owned partition stays assigned; a full ring pauses it in the consumer, which keeps
    // its position (next_read: poll_into_rings gave back anything read past it). Under a
    // backlog a partition's ring fills and gets room at every message, and taking it out of
    // the assignment and back cost an assign and a validated seek each time.
    for (uint32_t p = 0; p < parts.size(); ++p) {
        if (!parts[p].owned) continue;
        if (parts[p].paused != consumer->paused(p))
            FABRIC_TRY(parts[p].paused ? consumer->pause(p) : consumer->resume(p));
        if (!parts[p].paused) next_active.push_back(p);
    }
    active.swap(next_active);
    return {};
}

// Commits each partition's done prefix: `now`, or when due (`when` = due): a partition with
// nothing left buffered at once, else once commit_every of its messages are done since its
// last commit or commit_delay after a pass first deferred it (the caller's `now`). A commit
// costs the group lock's line and the partition's offset line moving between members; the
// done messages it leaves for later are redone and skipped by a successor after a crash.
// stale_epoch: a newer owner fenced us (rebalance; its work is redone by it); busy: the group
// lock is held by a live paused process, the offsets stay pending (*busy).
Status WorkerLoop::Impl::commit_pending(bool* busy, CommitWhen when, uint64_t now) {
    for (uint32_t p = 0; p < parts.size(); ++p) {
        Part& part = parts[p];
        // A front past what a successor would scan holds every hand-out back (eligible): the
        // offsets before it are done or skip records (claims the consumer stepped over), so
        // the commit goes up to it.
        const bool near_scan_end = part.owned && part.front_near_scan_end();
        if (near_scan_end && (part.commit_to == UINT64_MAX || part.commit_to < part.at(0).offset))
            part.commit_to = part.at(0).offset;
        if (part.commit_to == UINT64_MAX) continue;
        // Deferred only while the window past the first message not done stays inside what a
        // successor scans from the pool's offset (offsets, not messages: skip records and
        // quarantined claims leave gaps).
        if (when == CommitWhen::due && part.count != 0 && !part.commit_at_once &&
            part.done_since_commit < cfg.commit_every && !near_scan_end) {
            if (part.commit_due_ns == 0) part.commit_due_ns = now + to_ns(cfg.commit_delay);
            if (now < part.commit_due_ns) continue;
        }
        FABRIC_PAUSE_POINT("worker.commit.before");
        Status st = consumer->commit(p, part.commit_to);
        if (!st) {
            if (st.code() == Errc::stale_epoch) {
                note("commit refused (partitions moved): " + st.error().message);
                need_rebalance = true;
                for (Part& q : parts) q.clear_commit();
                return {};
            }
            if (st.code() == Errc::busy) {
                note("commit delayed: " + st.error().message);
                if (busy) *busy = true;
                // The lock's holder is stopped: asked again later, not at every pass.
                if (when == CommitWhen::due) part.commit_due_ns = now + kBusyRetryNs;
                return {};
            }
            return st;
        }
        part.pool_committed = std::max(part.pool_committed, part.commit_to);
        FABRIC_TRY(delete_committed(part, part.commit_to));
        part.clear_commit();
    }
    return {};
}

/// The soonest instant a deferred commit is due (UINT64_MAX: none); 0 when a window's front
/// is near the scan bound (commit_pending commits up to it at the next pass).
uint64_t WorkerLoop::Impl::next_commit_due() const {
    uint64_t soonest = UINT64_MAX;
    for (const Part& part : parts) {
        if (part.owned && part.front_near_scan_end()) return 0;
        if (part.commit_to != UINT64_MAX && part.commit_due_ns != 0) soonest = std::min(soonest, part.commit_due_ns);
    }
    return soonest;
}

// Takes partitions, gives back those the group's target gives to others. A change drops every
// ring (apply_assignment); the done prefixes are committed first.
Status WorkerLoop::Impl::rebalance() {
    bool busy = false;
    FABRIC_TRY(commit_pending(&busy, CommitWhen::now));
    if (busy) return {};  // retried at the next service
    last_rebalance_ns = mono_now_ns();
    refunds_found_lock_busy = false;  // a new reassignment: its claim may find the lock free
    // A partition given up has its tickets in flight dropped: their attempts are taken back
    // right before the release, while it is still ours (refund_dropped).
    // Not ours locally from then on either: its ring is not handed out again, and its tickets
    // complete as abandoned, even when the claim fails after the release.
    auto changed = membership->rebalance(last_rebalance_ns, [this](uint32_t p) {
        refund_dropped(p, "given up");
        if (p < parts.size()) parts[p].owned = false;
    });
    if (!changed) {
        // busy: a paused process holds the group's lock. stale_epoch: evicted again inside
        // the rejoin (a stall between taking a row and the first claim). Neither ends the
        // worker: it joins again at the next service (its partitions are not owned meanwhile).
        if (changed.code() != Errc::busy && changed.code() != Errc::stale_epoch) return std::move(changed).error();
        if (changed.code() == Errc::stale_epoch) need_rebalance = true;
        note("rebalance delayed: " + changed.error().message);
        return {};
    }
    const bool forced = need_rebalance;
    need_rebalance = false;
    if (*changed || forced) {
        ++stats.rebalances;
        FABRIC_TRY(apply_assignment());
    }
    return {};
}

// A reassignment we know of (evicted: a heartbeat, claim or commit refused; a partition's
// result put refused) whose rebalance was delayed: a paused process holds the group's lock, so
// the rejoin (or the claim) waits and fails busy, while the new owner, waiting for the same
// lock, has not raised its fence yet. Until the rebalance is made, the partitions no longer
// ours (owner word moved, fence above our token, or no membership at all) stop here: each
// hand-out of theirs would pass begin()'s fence check and count an attempt in the pool, its
// result put would be refused and the message handed out again, so the new owner would find
// the message at or past its last attempt and dead-letter it without a failure. Their tickets
// complete as abandoned; their counts stay (an eviction counts as a crash, as at
// apply_assignment). Partitions still ours go on. The rebalance that succeeds reassigns all.
void WorkerLoop::Impl::drop_lost_partitions() {
    for (uint32_t p = 0; p < parts.size(); ++p) {
        Part& part = parts[p];
        if (!part.owned || membership->owns(p)) continue;
        for (uint32_t i = 0; i < part.count; ++i)
            if (part.at(i).state == Slot::State::in_flight) unstart(part, part.at(i), 0);
        part.owned = false;
        active_dirty = true;
        std::erase(stats.partitions, p);
        note("partition " + std::to_string(p) +
             " is no longer this member's (evicted, or taken by another member); nothing of it is handed out "
             "while the rebalance waits");
    }
}

// Dropped tickets: their messages are handed out again (the hand-out counts an attempt).
void WorkerLoop::Impl::take_abandoned() {
    // A load first: the exchange is a locked instruction, and this runs twice per message while
    // a drop is rare. A drop the load does not see yet is taken by the next pass.
    if (!box->any.load(std::memory_order_acquire) ||  // pairs with ~WorkTicket's release
        !box->any.exchange(false, std::memory_order_acquire))
        return;
    std::vector<AbandonBox::Dropped> dropped;
    {
        std::lock_guard<std::mutex> lock(box->mu);
        dropped.swap(box->dropped);
    }
    for (const auto& d : dropped) {
        if (d.generation != generation || d.partition >= parts.size()) continue;
        Part& part = parts[d.partition];
        for (uint32_t i = 0; i < part.count; ++i) {
            Slot& s = part.at(i);
            if (s.state == Slot::State::in_flight && s.id == d.id) {
                note("a ticket for partition " + std::to_string(d.partition) + " offset " + std::to_string(s.offset) +
                     " was dropped without complete(): redelivering it");
                unstart(part, s, 0);
                break;
            }
        }
    }
}

// full: also the periodic rebalance (claims partitions freed by others). `now`: the caller's
// mono_now_ns(), read at most a few steps before (one clock read per pass of acquire()); the
// instants it is compared with may be later than it (elapsed() is 0 then).
Status WorkerLoop::Impl::service(bool full, uint64_t now) {
    take_abandoned();
    // stale_epoch: evicted while descheduled past the session timeout; the rebalance below
    // joins again. busy: a region check found a reaper between its marks on a region whose
    // lease lives (it keeps the region while we hold it); the next keep-alive asks again.
    if (Status st = keep_alive_if_due(now); !st && st.code() != Errc::stale_epoch) {
        if (st.code() != Errc::busy) return st;
        note("keep-alive delayed: " + st.error().message);
    }
    if (cfg.delete_input && !deletes_suspended && elapsed(now, last_group_check_ns) >= kGroupCheckEveryNs)
        FABRIC_TRY(check_other_groups());
    FABRIC_TRY(commit_pending(nullptr, CommitWhen::due, now));
    if (need_rebalance || (full && elapsed(now, last_rebalance_ns) >= kPollTimeoutNs)) FABRIC_TRY(rebalance());
    if (need_rebalance) drop_lost_partitions();  // a reassignment we know of was delayed
    return sync_active();
}

uint64_t WorkerLoop::Impl::capacity() const {
    uint64_t cap = in_flight >= cfg.concurrency ? 0 : cfg.concurrency - in_flight;
    if (cfg.count != 0) cap = std::min<uint64_t>(cap, cfg.count > handled + in_flight ? cfg.count - handled - in_flight : 0);
    return cap;
}

bool WorkerLoop::Impl::finished() const {
    if (cfg.count != 0 && handled >= cfg.count) return true;
    return cfg.exit_when_idle_ns != 0 && in_flight == 0 && buffered == 0 && idle_clock_started &&
           elapsed(mono_coarse_ns(), last_message_ns) >= cfg.exit_when_idle_ns;
}

// Reads what the rings have room for. Messages past a partition's room are given back (the
// consumer seeks back to the first of them) and the partition leaves the assignment until
// its ring has room again.
Status WorkerLoop::Impl::poll_into_rings(uint64_t timeout_ns) {
    if (!idle_clock_started) [[unlikely]] {
        idle_clock_started = true;
        last_message_ns = mono_coarse_ns();
    }
    FABRIC_TRY(sync_active());
    uint64_t room = 0;
    for (uint32_t p : active) room += cfg.window - parts[p].count;
    if (cfg.count != 0) room = std::min<uint64_t>(room, cfg.count > handled + buffered ? cfg.count - handled - buffered : 0);
    room = std::min<uint64_t>(room, std::max<uint64_t>(cfg.batch, cfg.concurrency));
    if (room == 0 || active.empty()) {
        if (timeout_ns) sleep_ns(timeout_ns);
        return {};
    }
    auto n = consumer->poll(batch, size_t(room), ns_duration(timeout_ns));
    if (!n) {
        // busy, as in service(): a reaper between its marks on a region we hold; polled again
        // at the next pass.
        if (n.code() != Errc::busy) return std::move(n).error();
        note("poll delayed: " + n.error().message);
        if (timeout_ns) sleep_ns(std::min<uint64_t>(timeout_ns, kBusyRetryNs));
        return {};
    }
    if (batch.lost() != 0)
        note("lost " + std::to_string(batch.lost()) +
             " notification(s): overwritten before this worker read them (a topic too small for its backlog, "
             "or the group was away: expired, or committed where the ring no longer reaches)");
    if (*n != 0) last_message_ns = mono_coarse_ns();
    for (const Message& m : batch) {
        Part& part = parts[m.partition];
        if (!part.owned || part.paused || m.offset < part.next_read) continue;
        if (part.count >= cfg.window) {  // given back: read again once the ring has room
            part.paused = true;
            active_dirty = true;
            continue;
        }
        Slot& s = part.at(part.count++);
        s.offset = m.offset;
        s.timestamp_ns = m.timestamp_ns;
        s.key.assign(m.key.begin(), m.key.end());
        s.value.assign(m.value.begin(), m.value.end());
        s.headers.assign(m.headers_raw.begin(), m.headers_raw.end());
        s.state = Slot::State::waiting;
        s.dlq_owed = false;
        s.processed_version = 0;
        s.retry_at_ns = 0;
        part.next_read = m.offset + 1;
        ++buffered;
        if (part.count == cfg.window) {
            part.paused = true;
            active_dirty = true;
        }
    }
    // A partition that filled its ring gives back what the poll read past it. Usually nothing:
    // the poll asked for no more than the rings' room, and then the consumer already stands at
    // next_read (a seek there would only cost a validated lookup per message under a backlog).
    for (uint32_t p : active) {
        if (!parts[p].paused) continue;
        if (auto pos = consumer->position(p); pos && *pos == parts[p].next_read) continue;
        FABRIC_TRY(consumer->seek(p, SeekPolicy::Offset(parts[p].next_read)));
    }
    // After the batch is in the rings: a partition that got a message here has it buffered.
    if (batch.skipped() != 0)
        for (uint32_t p : active) commit_past_skips(parts[p]);
    return sync_active();
}

// May slot i of `part` be handed out now?
bool WorkerLoop::Impl::eligible(Part& part, uint32_t i, uint64_t now) {
    Slot& s = part.at(i);
    if (s.state == Slot::State::in_flight || s.state == Slot::State::done) return false;
    if (s.state == Slot::State::retry && s.retry_at_ns > now) return false;
    if (s.dlq_owed && i != 0) return false;  // a dead letter waits for the front (dead_letter_slot)
    // The pool counts attempts per offset in entry offset % kAttemptWindow: offsets handed out
    // together must not share one (the front's entry is reused only once it is done), and a
    // successor must find every one of them in its scan from the committed offset. Counted in
    // offsets: skip records and quarantined claims leave gaps between buffered messages.
    if (s.offset - part.at(0).offset >= mq::kAttemptWindow) return false;
    if (s.offset >= part.pool_committed + mq::kAttemptScanOffsets) return false;
    // A previous owner's window: one message at a time, and nothing past it meanwhile.
    if (part.at(0).offset < part.serial_until) return i == 0 && part.in_flight == 0;
    if (cfg.order == OrderMode::key && !s.key.empty())
        for (uint32_t j = 0; j < i; ++j) {
            const Slot& e = part.at(j);
            if (e.state != Slot::State::done && e.key == s.key) return false;
        }
    return true;
}

// May any buffered message be handed out now?
bool WorkerLoop::Impl::any_eligible(uint64_t now) {
    if (now < store_full_until_ns) return false;  // as hand_out_ready: the timer wakes us
    for (Part& part : parts)
        for (uint32_t i = 0; part.owned && i < part.count; ++i)
            if (eligible(part, i, now)) return true;
    return false;
}

// Whether acquire may skip its poll: the rings alone hold `want` messages that may go out now,
// and no partition whose ring is at least half free has messages waiting in the topic (one
// ring's backlog must not keep another partition's messages unread). Under a backlog a ring
// frees one slot per completion, and a poll for each (with the partition's resume and pause in
// the consumer around it) costs more than the message's own bookkeeping; read from half free,
// window/2 messages share one. A pass that then hands out less than `want` polls after all
// (acquire), and one that hands out nothing still reaches its blocking poll.
bool WorkerLoop::Impl::rings_serve(uint64_t want, uint64_t now) {
    if (want == 0 || now < store_full_until_ns) return false;
    uint64_t ready = 0;
    for (uint32_t p = 0; p < parts.size(); ++p) {
        Part& part = parts[p];
        if (!part.owned) continue;
        if (part.count <= cfg.window / 2) {
            auto lag = consumer->lag(p);  // one load of the partition's tail
            if (!lag || *lag != 0) return false;
        }
        for (uint32_t i = 0; i < part.count && ready < want; ++i)
            if (eligible(part, i, now)) ++ready;
    }
    return ready >= want;
}

// The soonest instant after `now` at which a slot's backoff ends (UINT64_MAX: none). Only a
// backoff still running makes a slot eligible by time alone. A retry slot whose time has come
// but that still waits (a dead letter for the front, a same-key predecessor, the previous
// owner's window, no capacity) becomes eligible through a completion or a commit, and those
// signal readiness themselves: waking for it by the clock would re-arm a timer in the past,
// i.e. spin a CPU for as long as the thing it waits for runs.
uint64_t WorkerLoop::Impl::next_backoff_end(uint64_t now) const {
    uint64_t soonest = UINT64_MAX;
    for (const Part& part : parts)
        for (uint32_t i = 0; part.owned && i < part.count; ++i) {
            const Slot& s = part.ring[(part.head + i) % kMaxWorkWindow];
            if (s.state == Slot::State::retry && s.retry_at_ns > now) soonest = std::min(soonest, s.retry_at_ns);
        }
    return soonest;
}

Result<size_t> WorkerLoop::Impl::hand_out_ready(std::span<WorkTicket> tickets, bool* more, uint64_t now) {
    size_t n = 0;
    *more = false;
    if (now < store_full_until_ns) return n;  // the store was full: the timer wakes us (update_wait_fd)
    const uint32_t np = uint32_t(parts.size());
    for (uint32_t k = 0; k < np; ++k) {
        const uint32_t p = (rotate + k) % np;
        Part& part = parts[p];
        if (!part.owned) continue;
        for (uint32_t i = 0; i < part.count; ++i) {
            if (!eligible(part, i, now)) continue;
            if (n == tickets.size() || capacity() == 0) {
                *more = true;
                break;
            }
            const uint64_t gen = generation;
            auto got = hand_out(p, i, tickets[n]);
            if (!got) return std::move(got).error();
            if (*got) {
                ++n;
                if (stats.first_handout_mono_ns == 0) stats.first_handout_mono_ns = mono_now_ns();
            }
            if (gen != generation || !part.owned) break;  // reassigned meanwhile
            // A done prefix may have moved the ring: start this partition over.
            i = uint32_t(-1);
        }
    }
    ++rotate;
    return n;
}

std::unique_ptr<WorkTicket::Data> WorkerLoop::Impl::new_data() {
    if (spare.empty()) return std::make_unique<WorkTicket::Data>();
    auto d = std::move(spare.back());
    spare.pop_back();
    return d;
}

void WorkerLoop::Impl::recycle(std::unique_ptr<WorkTicket::Data> d) {
    d->outstanding = false;
    d->view = PinnedView();  // unpins
    if (spare.size() < 256) spare.push_back(std::move(d));
}

void WorkerLoop::Impl::finish_slot(Part& part, Slot& s) {
    if (s.state == Slot::State::in_flight) {
        --part.in_flight;
        --in_flight;
    }
    s.state = Slot::State::done;
    s.dlq_owed = false;
    ++handled;
    --buffered;
    last_message_ns = mono_coarse_ns();
    advance(part);
}

// Back to waiting (retry at retry_at_ns): lost, deferred, dropped, or a failure with attempts left.
void WorkerLoop::Impl::unstart(Part& part, Slot& s, uint64_t retry_at_ns) {
    if (s.state == Slot::State::in_flight) {
        --part.in_flight;
        --in_flight;
    }
    s.state = Slot::State::retry;
    s.retry_at_ns = retry_at_ns;
}

void WorkerLoop::Impl::advance(Part& part) {
    while (part.count > 0 && part.at(0).state == Slot::State::done) {
        part.commit_to = part.at(0).offset + 1;
        ++part.done_since_commit;
        part.head = (part.head + 1) % kMaxWorkWindow;
        --part.count;
    }
    commit_past_skips(part);
    if (part.paused && part.count < cfg.window) {
        part.paused = false;
        active_dirty = true;
    }
}

// Skip records (claims of producers that died or stalled before publishing) carry no message,
// so no completion commits past them: a partition whose last offsets are skip records would
// show that lag until its next message. With nothing buffered (every message before the
// consumer's position done, none given back), the offsets between next_read and the position
// are skip records only, and the commit goes to the position.
void WorkerLoop::Impl::commit_past_skips(Part& part) {
    if (!part.owned || part.paused || part.count != 0) return;
    const auto p = uint32_t(&part - parts.data());
    auto pos = consumer->position(p);
    if (!pos || *pos <= part.next_read) return;
    part.next_read = *pos;
    part.commit_to = *pos;
}

// The DLQ router's refusals: a newer owner fenced the partition (lost: rebalance), or a group
// lock is held by a live paused process (deferred); anything else is an error.
Status WorkerLoop::Impl::refused(Part& part, Slot& s, const Error& e, std::string_view what) {
    if (e.code == Errc::stale_epoch) {
        note(std::string(what) + " refused (a newer owner has the partition): " + e.message);
        need_rebalance = true;
        unstart(part, s, mono_now_ns() + kBusyRetryNs);
        return {};
    }
    // busy: a live, paused process holds a lock we need. back_pressure: the dead-letter topic
    // is full (its readers are behind); the message waits, as any message waits on a full
    // topic, and the rest of the window goes on meanwhile. skipped: we were stopped between
    // the dead letter's claim and its publish past the DLQ's claim timeout, and a reader
    // stepped over the claim: nothing was sent, so it is sent again.
    if (e.code == Errc::busy || e.code == Errc::back_pressure || e.code == Errc::skipped) {
        note(std::string(what) + " delayed: " + e.message);
        // A full DLQ is retried less often: each try blocks up to the DLQ send's wait
        // (DlqPolicy::send_wait: a quarter of the session, at most 1 s), and a try every 10 ms
        // would keep the loop blocked nearly all the time.
        unstart(part, s, mono_now_ns() + (e.code == Errc::back_pressure ? kFullTopicRetryNs : kBusyRetryNs));
        return {};
    }
    return e;
}

// Dead letters are fenced like result puts and commits: the router records the decision
// under our fence token and refuses it once a newer owner fenced the partition (a member that
// paused after deciding, past its session timeout, cannot dead-letter what its successor owns).
Status WorkerLoop::Impl::dead_letter_slot(Part& part, Slot& s, const Message& m, uint64_t attempts,
                                          const std::string& reason) {
    // The dead-letter record commits up to its offset in the same fenced step (one record per
    // partition names the first uncommitted offset), so a slot is dead-lettered only at the
    // front of its ring: until the earlier offsets are done it waits with the decision kept.
    if (&part.at(0) != &s) {
        s.dlq_owed = true;
        s.dlq_attempts = attempts;
        s.dlq_reason = reason;
        unstart(part, s, 0);
        return {};
    }
    // Each send may wait up to its send_wait, and a pass of hand-outs may dead-letter the front
    // of every partition into a full DLQ: heartbeat between them, as between forwards, so the
    // member is never silent for their sum.
    if (Status st = keep_alive_if_due(mono_coarse_ns()); !st) {
        if (st.code() != Errc::stale_epoch) return st;
        return refused(part, s, st.error(), "dead letter");  // evicted: the new owner decides
    }
    auto sent = router->dead_letter(m, attempts, reason);
    if (!sent) {
        // Retried later (refused() below): the decision is kept, and maybe recorded already.
        // capacity_exceeded: the pool has no extent or directory entry left for the DLQ topic,
        // which the first dead letter creates. Ending the worker would end every successor
        // too (each meets the recorded decision first); the letter waits, as on a full DLQ,
        // until an operator makes room.
        const Errc c = sent.code();
        if (c == Errc::busy || c == Errc::back_pressure || c == Errc::skipped || c == Errc::capacity_exceeded) {
            s.dlq_owed = true;
            s.dlq_attempts = attempts;
            s.dlq_reason = reason;
        }
        if (c == Errc::capacity_exceeded) {
            note("dead letter delayed (the pool has no room for DLQ topic '" + router->dlq_topic() +
                 "'; retried every second): " + sent.error().message);
            unstart(part, s, mono_now_ns() + kFullTopicRetryNs);
            return {};
        }
        return refused(part, s, sent.error(), "dead letter");
    }
    // The record committed the pool up to this offset; this loop's commit past it follows at
    // the next pass, with the deletions below it.
    part.pool_committed = std::max(part.pool_committed, m.offset);
    part.commit_at_once = true;
    FABRIC_TRY(note_dead_letter());
    note("dead-lettered " + std::string(m.value_str()) + " (partition " + std::to_string(m.partition) + " offset " +
         std::to_string(m.offset) + ", " + std::to_string(attempts) + " attempt(s)) to '" + router->dlq_topic() +
         "': " + reason);
    finish_slot(part, s);
    return {};
}

// A failed attempt: permanent -> DLQ; otherwise a retry after the backoff (the slot waits, the
// rest of the window goes on), or the DLQ after the last attempt (nack decides, fenced).
Status WorkerLoop::Impl::fail_slot(Part& part, Slot& s, const Message& m, const Failure& failure) {
    ++stats.failed_attempts;
    FABRIC_PAUSE_POINT("worker.dead_letter.deciding");
    if (failure.permanent) return dead_letter_slot(part, s, m, s.attempt, failure.reason);
    note("attempt " + std::to_string(s.attempt) + "/" + std::to_string(cfg.max_attempts) + " for " +
         std::string(m.value_str()) + " failed: " + failure.reason);
    // The attempt number is the pool's count at hand-out (DlqRouter::nack's rule, decided here
    // so that the dead letter waits for the front of the ring).
    if (s.attempt >= cfg.max_attempts) return dead_letter_slot(part, s, m, s.attempt, failure.reason);
    unstart(part, s, mono_now_ns() + to_ns(router->policy().backoff(s.attempt)));
    return {};
}

// A hand-out taken back (not an attempt): its count is refunded. The refund is fenced:
// refused (stale_epoch) once a newer owner has the partition, whose counts are its own: the
// slot then waits for the rebalance, and false says so; delayed by a paused lock holder
// (busy), the count stays, as after a crash between the put and the refund.
Result<bool> WorkerLoop::Impl::take_back(Part& part, Slot& s, const Message& m, std::string_view why) {
    Status refunded = router->refund(m);
    if (refunded) return true;
    if (refunded.code() == Errc::stale_epoch) {
        note(std::string(why) + ", and the hand-out could not be taken back: " + refunded.error().message);
        need_rebalance = true;
        unstart(part, s, mono_now_ns() + kBusyRetryNs);
        return false;
    }
    if (refunded.code() != Errc::busy) return std::move(refunded).error();
    note(std::string(why) + "; the hand-out stays counted: " + refunded.error().message);
    return true;
}

// How a step ended, applied to its slot.
Status WorkerLoop::Impl::settle(Part& part, Slot& s, const Message& m, Result<Outcome> r, const Failure& failure) {
    if (!r) return std::move(r).error();
    switch (*r) {
        case Outcome::done:
            FABRIC_TRY(router->ack(m));
            finish_slot(part, s);
            return {};
        case Outcome::lost:
            need_rebalance = true;
            unstart(part, s, mono_now_ns() + kBusyRetryNs);
            return {};
        case Outcome::deferred: {
            // Contention is not a failed attempt: taken back as for a full store (below), and
            // handed out again after kBusyRetryNs; the rest of the window goes on meanwhile.
            auto kept = take_back(part, s, m, "store contended");
            if (!kept) return std::move(kept).error();
            if (!*kept) return {};
            note("store contended: " + failure.reason + "; handed back " + std::string(m.value_str()) + " (partition " +
                 std::to_string(m.partition) + " offset " + std::to_string(m.offset) + "), tried again shortly");
            unstart(part, s, mono_now_ns() + kBusyRetryNs);
            return {};
        }
        case Outcome::failed: return fail_slot(part, s, m, failure);
        case Outcome::forward_waits:
            // The result is written: this hand-out succeeded, and its count is cleared as for
            // done. Otherwise every forward refused by a next stage that is behind would count
            // an attempt and, after the last, dead-letter a message whose result exists. The
            // message waits in its slot (the commit does not pass it); its next hand-out finds
            // the result current and forwards again.
            FABRIC_TRY(router->ack(m));
            unstart(part, s, failure.retry_at_ns);
            s.processed_version = failure.processed_version;
            return {};
        case Outcome::store_full: {
            // Back-pressure, not a failure: the hand-out is taken back (the next one is the same
            // attempt again), the message waits in its slot, and no work is taken meanwhile.
            auto kept = take_back(part, s, m, "store full");
            if (!kept) return std::move(kept).error();
            if (!*kept) return {};
            ++stats.store_full;
            store_full_until_ns = mono_now_ns() + to_ns(cfg.store_full_pause);
            note("capacity_exceeded: " + failure.reason + "; handed back " + std::string(m.value_str()) +
                 " (partition " + std::to_string(m.partition) + " offset " + std::to_string(m.offset) +
                 ", attempt not counted, not dead-lettered); taking no work for " +
                 std::to_string(to_ns(cfg.store_full_pause) / kNsPerMs) + " ms");
            unstart(part, s, store_full_until_ns);
            return {};
        }
    }
    return {};
}

// Forwards the result URI (also after a skip: a crash may have come between the put and the
// forward; the next stage skips duplicates by version). At-least-once.
// The headers' values are formatted on the stack: nothing is allocated per message. `put_ts`:
// the message's kHeaderPutTime when the caller parsed it already.
// Outcome: done when sent (or there is no next topic). The result is written when this runs, so what
// the next topic refuses is never a failed attempt: a refusal for now (back_pressure: the next
// stage is behind; skipped: we were stopped between our claim there and its publish past the
// readers' claim timeout; interrupted: run()'s stop asked during the wait) is forward_waits,
// retried from failure->retry_at_ns; a notification that can never fit the next topic's slot
// (message_too_large) is a permanent failure, dead-lettered with both sizes in its reason,
// instead of ending this worker and every successor that would meet it.
Result<Outcome> WorkerLoop::Impl::forward(const Message& m, std::string_view result_uri, uint64_t result_version,
                                          PlacementHint placed, Failure* failure, std::optional<uint64_t> put_ts) {
    if (!next) return Outcome::done;
    // The partition: a keyed forward's is the key's (send_keyed's rule); an unkeyed one takes
    // the next in turn that is not held full (send_unkeyed, below).
    const uint32_t next_parts = uint32_t(next_full_until_ns.size());
    uint32_t target = 0;
    if (!m.key.empty()) {
        target = uint32_t(key_hash(m.key) % next_parts);
        if (uint64_t& until = next_full_until_ns[target]; until != 0) {
            if (mono_now_ns() < until) {
                *failure = {"partition " + std::to_string(target) + " of next topic '" + cfg.next_topic +
                                "' was full at the last forward to it",
                            false, until};
                return Outcome::forward_waits;
            }
            until = 0;
        }
    }
    // Each forward may wait up to the send's block timeout, and forwards come in runs (a round
    // of completions, a pass of skip-path forwards in acquire) against a next stage that frees
    // room just fast enough for each to succeed: heartbeat between them, as the wait for store
    // space does, so that the member is never silent for the sum of the waits. The coarse
    // clock (a few ns, ms resolution) keeps this off the forward's per-message cost.
    // Evicted (stale_epoch), but the result is written: the forward still goes out
    // (at-least-once; the next stage skips duplicates by version). Given up as lost, its
    // hand-out would stay counted, and a new owner at the last attempt would dead-letter a
    // message whose result exists, never notifying the next stage.
    if (Status st = keep_alive_if_due(mono_coarse_ns()); !st && st.code() != Errc::stale_epoch)
        return std::move(st).error();
    char rv_buf[24], ts_buf[24], origin_buf[24];
    std::string_view origin = m.header(kHeaderOriginTime);
    if (origin.empty()) origin = decimal(origin_buf, put_ts ? *put_ts : parse_u64(m.header(kHeaderPutTime), 0));
    const PlacementHint::Text placed_text = placed.text();
    const MessageHeader headers[] = {{kHeaderVersion, decimal(rv_buf, result_version)},
                                     {kHeaderPutTime, decimal(ts_buf, wall_now_ns())},
                                     {kHeaderOriginTime, origin},
                                     {kHeaderPlacement, std::string_view(placed_text.data(), placed_text.size())}};
    const ByteView ru(result_uri.data(), result_uri.size());
    // The result's placement, for the next stage's prefetch, where it fits the next topic's slot.
    std::span<const MessageHeader> sent_headers(headers);
    if (placed.empty() || !next->fits({ru, m.key, sent_headers})) sent_headers = sent_headers.first(3);
    const OutgoingMessage outgoing{ru, m.key, sent_headers};
    uint64_t soonest = 0;
    std::optional<Result<SendResult>> tried =
        m.key.empty() ? send_unkeyed(outgoing, &target, &soonest) : next->send_to(target, outgoing);
    if (!tried) {
        *failure = {"every partition of next topic '" + cfg.next_topic + "' was full at the last forward to it",
                    false, soonest};
        return Outcome::forward_waits;
    }
    Result<SendResult>& sent = *tried;
    if (sent) {
        ++stats.forwarded;
        return Outcome::done;
    }
    const Errc code = sent.code();
    if (code == Errc::message_too_large) {
        // The sizes first: a dead letter's reason is cut at 200 bytes.
        *failure = {"forward to the next stage: " + sent.error().message + "; the result " + std::string(result_uri) +
                        " is written",
                    true};
        return Outcome::failed;
    }
    if (code != Errc::back_pressure && code != Errc::skipped && code != Errc::interrupted)
        return std::move(sent).error();
    uint64_t retry_at = mono_now_ns() + kBusyRetryNs;
    if (code == Errc::back_pressure) {
        retry_at = mono_now_ns() + kFullTopicRetryNs;
        next_full_until_ns[target] = retry_at;
    }
    note("forward of " + std::string(m.value_str()) + " (partition " + std::to_string(m.partition) + " offset " +
         std::to_string(m.offset) + ") delayed, its result is written: " + sent.error().message);
    *failure = {"forward to next topic '" + cfg.next_topic + "': " + sent.error().message, false, retry_at};
    return Outcome::forward_waits;
}

// An unkeyed forward's send: to the next partition in turn that is not held full. A partition
// whose hold has ended is tried without waiting (a probe: `probing_next` makes the send's
// should_stop end its wait at once, nothing sent), and one still full is held again and the
// next tried: a forward waits for space (up to the block timeout) only on a partition not
// known to have been full, never on one still full while another has room. nullopt: every
// partition held or found full again (*soonest_ns: when the first hold ends).
std::optional<Result<SendResult>> WorkerLoop::Impl::send_unkeyed(const OutgoingMessage& outgoing, uint32_t* target,
                                                                 uint64_t* soonest_ns) {
    const uint32_t n = uint32_t(next_full_until_ns.size());
    uint64_t now = 0, soonest = UINT64_MAX;
    for (uint32_t k = 0; k < n; ++k) {
        const uint32_t p = (next_unkeyed_turn + k) % n;
        uint64_t& until = next_full_until_ns[p];
        *target = p;
        if (until == 0) {
            next_unkeyed_turn = (p + 1) % n;
            return next->send_to(p, outgoing);
        }
        if (now == 0) now = mono_now_ns();
        if (now < until) {
            soonest = std::min(soonest, until);
            continue;
        }
        probing_next = true;
        Result<SendResult> sent = next->send_to(p, outgoing);
        probing_next = false;
        if (!sent && sent.code() == Errc::interrupted && !(stop_check && (*stop_check)())) {
            until = now + kFullTopicRetryNs;
            soonest = std::min(soonest, until);
            continue;
        }
        until = 0;
        next_unkeyed_turn = (p + 1) % n;
        return sent;
    }
    *soonest_ns = soonest;
    return std::nullopt;
}

/// What the stored result says about an input version.
enum class ResultState : uint8_t { absent, older, current, newer, collision };

namespace {
/// `existing`: the stored result, null when there is none.
ResultState result_state(const detail::StoredMeta* existing, std::string_view input, uint64_t version,
                         std::string* other_input) {
    if (!existing) return ResultState::absent;
    std::optional<std::string_view> in, ver;
    existing->values(kResultInputUri, in, kResultInputVersion, ver);
    if (in && *in != input) {
        other_input->assign(*in);
        return ResultState::collision;
    }
    if (!in || !ver) return ResultState::older;
    const uint64_t v = parse_u64(*ver, 0);
    return v == version ? ResultState::current : v > version ? ResultState::newer : ResultState::older;
}
}  // namespace

// The heap's numbers for a capacity_exceeded report.
std::string WorkerLoop::Impl::store_numbers() const {
    const StoreStats st = store->stats();
    return "store '" + store->config().name + "': heap " + std::to_string(st.heap_used_bytes) + " of " +
           std::to_string(st.heap_capacity_bytes) + " bytes used, " + std::to_string(st.objects) + " objects, " +
           std::to_string(st.table_entries) + " table entries, largest free extent " +
           std::to_string(st.largest_free_extent) + " bytes, " + std::to_string(st.loans_active) + " loans, " +
           std::to_string(st.pins_active) + " pins";
}

namespace {

/// The consumer groups registered on `topic` other than `group` (comma separated; "" when none).
Result<std::string> other_groups(const Pool& pool, const std::string& topic, const std::string& group) {
    auto groups = describe_consumer_groups(pool, topic);
    if (!groups) {
        if (groups.code() == Errc::not_found) return std::string();  // no group table yet: no group
        return std::move(groups).error();
    }
    std::string names;
    for (const ConsumerGroupDescription& g : *groups)
        if (g.group != group) names += (names.empty() ? "'" : ", '") + g.group + "'";
    return names;
}

/// Whether a fan-out notification (kHeaderTopics) was also sent on a topic other than `topic`.
bool told_other_topics(std::string_view topics, std::string_view topic) {
    while (!topics.empty()) {
        const size_t comma = topics.find(',');
        const std::string_view one = topics.substr(0, comma);
        if (!one.empty() && one != topic) return true;
        if (comma == std::string_view::npos) break;
        topics.remove_prefix(comma + 1);
    }
    return false;
}

}  // namespace

// A group registered on the topic after open(): deleting inputs would take them from it.
Status WorkerLoop::Impl::check_other_groups() {
    last_group_check_ns = mono_now_ns();
    auto others = other_groups(*pool, cfg.topic, cfg.group);
    if (!others) return is_fatal(others.code()) ? Status(std::move(others).error()) : Status{};
    if (others->empty()) return {};
    deletes_suspended = true;
    note("delete-input suspended: group(s) " + *others + " registered on topic '" + cfg.topic +
         "' since this worker started; inputs are kept from now on (they would find nothing)");
    return {};
}

// delete_input: the input of a done offset (result written, or found written) is removed once
// the offset is committed. A fan-out notification's input is kept: another topic's groups
// read it too.
void WorkerLoop::Impl::queue_delete(const Message& m, const FabricUriView& input, uint64_t version) {
    if (!cfg.delete_input) return;
    const std::string_view topics = m.header(kHeaderTopics);
    if (!topics.empty() && told_other_topics(topics, cfg.topic)) {
        ++stats.inputs_kept;
        note("delete-input: kept " + input.to_string() + " (also notified on " + std::string(topics) + ")");
        return;
    }
    Part& part = parts[m.partition];
    if (part.pending_deletes == part.deletes.size()) part.deletes.emplace_back();
    PendingDelete& d = part.deletes[part.pending_deletes++];
    d.offset = m.offset;
    d.version = version;
    d.uri.assign(input);
}

// After the commit up to `committed`: removes the inputs below it, each only at the version
// processed (if_version), so an input uploaded again meanwhile is kept.
Status WorkerLoop::Impl::delete_committed(Part& part, uint64_t committed) {
    // The entries still pending move to the front (swapped: their strings move, none is copied).
    size_t kept = 0;
    for (size_t i = 0; i < part.pending_deletes; ++i) {
        PendingDelete& d = part.deletes[i];
        if (d.offset >= committed) {
            if (kept != i) std::swap(part.deletes[kept], d);
            ++kept;
            continue;
        }
        if (deletes_suspended) {
            ++stats.inputs_kept;
            continue;
        }
        FABRIC_PAUSE_POINT("worker.delete_input.before_remove");
        RemoveOptions ro;
        ro.if_version = d.version;
        auto removed = store->remove(d.uri, ro);
        if (removed) {
            if (*removed) ++stats.inputs_deleted;  // false: gone already (removed, expired)
        } else if (removed.code() == Errc::conflict) {
            // Another version is current (uploaded again after this one was processed), or
            // the object expired meanwhile (then nothing is left to delete).
            auto now = store->head(d.uri);
            if (now && !now->has_value()) continue;
            ++stats.inputs_kept;
            note("delete-input: kept " + d.uri.to_string() + ": it was uploaded again after version " +
                 std::to_string(d.version) + " was processed (" + removed.error().message + ")");
        } else if (is_fatal(removed.code())) {
            return std::move(removed).error();
        } else {
            ++stats.inputs_kept;
            note("delete-input: could not remove " + d.uri.to_string() + ": " + removed.error().message);
        }
    }
    part.pending_deletes = kept;
    return {};
}

// A result put found the store full. Retries it with a growing pause (1 ms .. 100 ms) for up
// to --store-wait, keeping the member alive (heartbeat, leases), committing what completed,
// and giving up the moment the partition is lost. `done` with `put` set to the retried put's result (success or another
// error), or store_full / lost.
Result<Outcome> WorkerLoop::Impl::wait_for_store_space(const Message& m, Result<uint64_t>& put,
                                                       const std::function<Result<uint64_t>()>& retry,
                                                       Failure* failure) {
    ++stats.store_waits;
    const uint64_t wait_ns = cfg.store_wait.count() > 0 ? to_ns(cfg.store_wait) : cfg.session_timeout_ns;
    const uint64_t start = mono_now_ns(), deadline = start + wait_ns;
    note("store full: waiting up to " + std::to_string(wait_ns / kNsPerMs) + " ms for space (" + store_numbers() +
         "): " + put.error().message);
    uint64_t pause = kNsPerMs;
    for (;;) {
        const uint64_t now = mono_now_ns();
        if (now >= deadline) break;
        if (stop_check && (*stop_check)()) {
            // run()'s caller asked to stop (SIGTERM, a Python close()): hand the message back
            // as for a full store (not an attempt), instead of holding the stop for --store-wait.
            failure->reason = "stopped while the result put waited for store space (" + store_numbers() +
                              "): " + put.error().message;
            failure->permanent = false;
            return Outcome::store_full;
        }
        FABRIC_PAUSE_POINT("worker.store_wait.sleeping");
        sleep_ns(std::min(pause, deadline - now));
        pause = std::min<uint64_t>(pause * 2, 100 * kNsPerMs);
        if (Status st = keep_alive_if_due(mono_now_ns()); !st) {
            if (st.code() != Errc::stale_epoch) return std::move(st).error();
            return Outcome::lost;
        }
        if (!membership->owns(m.partition)) return Outcome::lost;
        // Commits what completed meanwhile: with delete_input that removes those inputs, which
        // may be the space this put waits for.
        FABRIC_TRY(commit_pending(nullptr, CommitWhen::now));
        put = retry();
        if (put || put.code() != Errc::capacity_exceeded) {
            note("store space came back after " + std::to_string((mono_now_ns() - start) / kNsPerMs) + " ms");
            return Outcome::done;
        }
    }
    failure->reason = "result put found the store full for " + std::to_string(wait_ns / kNsPerMs) +
                      " ms (--store-wait): " + store_numbers() + ": " + put.error().message;
    failure->permanent = false;
    return Outcome::store_full;
}

// The stored result judged against this input (ResultState): nullopt when the put goes ahead
// (absent, or the result of an older input version), else how the message ends (a skip, a
// supersede, a collision's failure). result_head holds what was read.
Result<std::optional<Outcome>> WorkerLoop::Impl::judge_stored_result(const Message& m, WorkTicket::Data& d,
                                                                     Failure* failure) {
    const uint64_t version = d.item.version;
    auto existing =
        detail::StoreAccess::head_meta(*store, d.result_uri, d.result_store_key, result_head, &d.result_found);
    if (!existing) {
        if (is_fatal(existing.code())) return std::move(existing).error();
        *failure = {"result lookup: " + existing.error().message, false};
        return std::optional<Outcome>(Outcome::failed);
    }
    std::string other;
    switch (result_state(*existing ? &result_head : nullptr, d.input_text, version, &other)) {
        case ResultState::collision:
            *failure = {"result " + d.result_text + " already holds the result of " + other +
                            ": two inputs map to one result key (result key template '" + cfg.result_key +
                            "'); use a template with {bucket} and {key} (the default), or another --result-bucket",
                        true};
            return std::optional<Outcome>(Outcome::failed);
        case ResultState::current: {
            ++stats.skipped;
            auto sent =
                forward_then_delete(m, d.result_text, result_head.version, {}, failure, d.item.uri.view(), version);
            if (!sent) return std::move(sent).error();
            return std::optional<Outcome>(*sent);
        }
        case ResultState::newer:
            ++stats.superseded;
            return std::optional<Outcome>(Outcome::done);
        case ResultState::absent:
        case ResultState::older: break;
    }
    d.result_seen_version = *existing ? result_head.version : 0;
    return std::optional<Outcome>();
}

// Version check, fenced put, forward. Failures are returned in *failure (permanent or not);
// errors are fatal.
Result<Outcome> WorkerLoop::Impl::write_result(const Message& m, WorkTicket::Data& d, std::span<const uint8_t> out,
                                               Failure* failure) {
    const std::string_view input = d.input_text;
    const uint64_t version = d.item.version;
    FABRIC_PAUSE_POINT("worker.result.before_put");
    const uint64_t token = membership->epoch();
    // A result never replaces one that records a newer input version (an older version of
    // the key finishing last, in OrderMode::none or after a redelivery). The hand-out judged
    // the result it found (d.result_seen_version) absent or older; the put lands only while
    // that is still the key's current version, in the step that publishes it. A result
    // written since refuses it (conflict): it is judged again and the put made conditional
    // on what was read then. Bounded: each pass means another writer's result landed.
    constexpr int kResultChangedPasses = 16;
    Result<uint64_t> put = uint64_t(0);
    PlacementHint placed;  // where the result went: the next stage's notification says so
    for (int pass = 0;; ++pass) {
        const PutOptions& po = result_put(input, version, token, m.partition, d.result_seen_version);
        const detail::Found* judged_from =
            d.result_seen_version != 0 && d.result_found.snap.h.version == d.result_seen_version ? &d.result_found
                                                                                                  : nullptr;
        put = detail::StoreAccess::put(*store, d.result_store_key, out, po, &placed, judged_from);
        if (!put && put.code() == Errc::capacity_exceeded) {
            // A full store is back-pressure: wait for space within this attempt (heartbeating).
            auto waited = wait_for_store_space(
                m, put,
                [&] { return detail::StoreAccess::put(*store, d.result_store_key, out, po, &placed, judged_from); },
                failure);
            if (!waited) return std::move(waited).error();
            if (*waited != Outcome::done) return *waited;
        }
        if (put || put.code() != Errc::conflict || pass + 1 == kResultChangedPasses) break;
        auto judged = judge_stored_result(m, d, failure);
        if (!judged) return std::move(judged).error();
        if (*judged) return **judged;
    }
    if (!put && put.code() == Errc::conflict) {
        *failure = {"result put " + d.result_text + ": the result was rewritten by other writers " +
                        std::to_string(kResultChangedPasses) + " times while this put judged it (" +
                        put.error().message + "); retried later",
                    false};
        return Outcome::failed;
    }
    if (!put && put.code() == Errc::stale_epoch) {
        // A newer owner wrote it (we were evicted or fenced): not ours. Its owner word or
        // fence shows it, since it took the partition before it wrote.
        if (!membership->owns(m.partition)) return Outcome::lost;
        // Still ours. A member of this group that owns another partition (a later epoch) may
        // have written the result since the hand-out: the same input notified on two
        // partitions (unkeyed notifications). Its result is judged as any stored one: a newer
        // version supersedes ours, this very input and version is a skip.
        auto judged = judge_stored_result(m, d, failure);
        if (!judged) return std::move(judged).error();
        if (*judged) return **judged;
        // An absent or older result fenced above us (judge_stored_result left it in
        // result_head; versions start at 1): its token comes from outside this registration
        // (the fence floor keeps every later registration above it).
        const uint64_t stored = d.result_seen_version != 0 ? result_head.fence_token : 0;
        if (auto noted = mq::note_fence_token(*pool, stored); !noted) {
            *failure = {"stored fence token " + std::to_string(stored) +
                            " is at or above 2^61 (beyond what any group fences above; not noted): result put " +
                            d.result_text + " refused above this member's token " + std::to_string(token) +
                            "; remove the result or write it without that token (" + noted.error().message + ")",
                        true};
            return Outcome::failed;
        }
        *failure = {"result put " + d.result_text + " refused: the stored result is fenced at token " +
                        std::to_string(stored) + ", above this member's " + std::to_string(token) +
                        ", by a writer outside group '" + cfg.group +
                        "' (another group writing the same result bucket, or a result kept from a pool whose "
                        "clock ran ahead); give each group its own result bucket, or remove the result, or "
                        "re-register the group (fabric-shm group rm) so its tokens start above it",
                    true};
        return Outcome::failed;
    }
    if (!put && put.code() == Errc::busy) {
        *failure = {"result put " + d.result_text + ": " + put.error().message, false};
        return Outcome::deferred;
    }
    if (!put) {
        if (is_fatal(put.code())) return std::move(put).error();
        *failure = {"result put " + d.result_text + ": " + put.error().message,
                    router->policy().is_permanent(put.code())};
        return Outcome::failed;
    }
    FABRIC_PAUSE_POINT("worker.result.after_put");
    ++stats.processed;
    note_result_instant();
    stats.bytes_in += d.item.data.size();
    stats.bytes_out += out.size();
    const uint64_t put_ts = d.put_ts;
    if (put_ts != 0) {  // the wall clock only for a notification that says when its object was put
        const uint64_t now_wall = wall_now_ns();
        if (now_wall >= put_ts) {
            latency.record(now_wall - put_ts);
            recorder.record(now_wall - put_ts);
        }
    }
    return forward_then_delete(m, d.result_text, *put, placed, failure, d.item.uri.view(), version, put_ts);
}

// result_put_options(input, version, token) with the result TTL and the partition's fence,
// conditional on the result's current version being `result_version` (0: none), written into
// the options made once by init_result_options: their metadata entries and strings stay, so a
// put allocates nothing for its options.
const PutOptions& WorkerLoop::Impl::result_put(std::string_view input, uint64_t version, uint64_t token,
                                               uint32_t partition, uint64_t result_version) {
    char version_buf[24];
    result_input_uri->assign(input);
    result_input_version->assign(decimal(version_buf, version));
    result_options.condition = PutCondition::fence_if_version_equals;
    result_options.expected_version = result_version;
    result_options.fence_token = token;
    fence_partition = partition;
    return result_options;
}

void WorkerLoop::Impl::init_result_options() {
    result_options = result_put_options({}, 0, 0);
    result_options.ttl = cfg.result_ttl;
    // The partition's fence, checked where the put publishes: the stored result's token
    // alone cannot refuse us once a newer owner's result was removed (consumed downstream).
    result_options.fence_holds = [this] { return membership->owns(fence_partition); };
    result_input_uri = &result_options.metadata[std::string(kResultInputUri)];
    result_input_version = &result_options.metadata[std::string(kResultInputVersion)];
}

// The result URI's constant prefix and the key template's pieces, made once (the template was
// validated at open).
void WorkerLoop::Impl::init_result_uri() {
    result_prefix.clear();
    if (detail::name_ok(pool->name()) && detail::name_ok(cfg.result_bucket))
        result_prefix = std::string(detail::kUriScheme) + pool->name() + "/" + cfg.result_bucket + "/";
    result_key_pieces.clear();
    for_each_key_piece(cfg.result_key, [&](const KeyPiece& k) { result_key_pieces.push_back(k); });
}

// The result URI of `input` into `buffer`: its key by the result key template, in the result
// bucket. No allocation once `buffer` is large enough. The prefix's names were checked at open
// and the input's parts by its parse; the key is written straight after the prefix and checked
// a byte at a time (a 16-byte load of bytes just stored would wait for the stores). A key past
// kMaxKeyLength (shortened with a hash) or one that breaks the rule takes the checked path,
// which names the reason. `input` must not point into `buffer` (it is the slot's notification).
Result<FabricUriView> WorkerLoop::Impl::result_uri_of(const FabricUriView& input, std::string& buffer) {
    if (!result_prefix.empty()) {
        size_t key_len = 0;
        for (const KeyPiece& k : result_key_pieces) key_len += k.of(input.bucket(), input.key()).size();
        if (key_len <= kMaxKeyLength) {
            const size_t at_key = result_prefix.size();
            buffer.resize(at_key + key_len);
            char* out = buffer.data();
            std::memcpy(out, result_prefix.data(), at_key);
            for (size_t at = at_key; const KeyPiece& k : result_key_pieces) {
                const std::string_view piece = k.of(input.bucket(), input.key());
                std::memcpy(out + at, piece.data(), piece.size());
                at += piece.size();
            }
            const std::string_view key(out + at_key, key_len);
            if (detail::key_ok<detail::Scan::bytewise>(key)) {
                const size_t at_pool = detail::kUriScheme.size(), pool_len = pool->name().size();
                return detail::UriAccess::unchecked(std::string_view(out + at_pool, pool_len),
                                                    std::string_view(out + at_pool + pool_len + 1, cfg.result_bucket.size()),
                                                    key);
            }
        }
    }
    fill_result_key(result_key, cfg.result_key, input.bucket(), input.key());
    return FabricUriView::format(buffer, pool->name(), cfg.result_bucket, result_key);
}

// Why `input` has no result URI (result_uri_of failed with `error`), in the words of
// result_key_for and FabricUri::make: the key's own problem, or the URI's.
std::string WorkerLoop::Impl::no_result_uri(const FabricUriView& input, const Error& error) const {
    auto key = result_key_for(cfg.result_key, input.to_uri());
    if (!key) return "no result key: " + key.error().message;
    auto uri = FabricUri::make(pool->name(), cfg.result_bucket, *key);
    return "no result URI: " + (uri ? error.message : uri.error().message);
}

// The DLQ protocol (docs/groups.md): begin counts the hand-out in the pool (so a message that
// killed earlier workers is dead-lettered here without running again), ack on success, nack
// -> backoff and retry, or the DLQ after max attempts; permanent failures go to the DLQ at
// once. A message an earlier owner decided to dead-letter (and maybe did not send) is
// dead-lettered, never processed. True when `ticket` was filled; false when the message was
// settled here (skipped, dead-lettered, deferred).
Result<bool> WorkerLoop::Impl::hand_out(uint32_t p, uint32_t i, WorkTicket& ticket) {
    Part& part = parts[p];
    Slot& s = part.at(i);
    const Message m = s.message(p);
    // The headers this hand-out and the result's write read, in one walk.
    static constexpr std::string_view kRead[] = {kHeaderPlacement, kHeaderVersion, kHeaderPutTime};
    std::string_view header[std::size(kRead)];
    mq::first_header_values(m.headers_raw, kRead, header);
    // The input's lines start moving now, while the notification is parsed and the result
    // looked up, instead of one after another inside pin() (PlacementHint).
    store->prefetch(PlacementHint::parse(header[0]));
    auto start = [&] {
        s.state = Slot::State::in_flight;
        s.id = ++next_id;
        ++part.in_flight;
        ++in_flight;
    };
    // The ticket's data, recycled: the URIs are written into its strings (their capacity
    // reused), so nothing is allocated per message. It goes back to the spares unless the
    // message is handed out.
    struct Hold {
        Impl& im;
        std::unique_ptr<WorkTicket::Data> d;
        ~Hold() {
            if (d) im.recycle(std::move(d));
        }
    } hold{*this, new_data()};
    WorkTicket::Data& data = *hold.d;
    // A view of the slot's copy of the notification; the result URI in data.result_text.
    auto uri = FabricUriView::parse(m.value_str());
    auto result_uri = uri ? result_uri_of(*uri, data.result_text) : Result<FabricUriView>(uri.error());
    std::string bad;
    if (!uri) bad = "invalid notification: " + uri.error().message;
    else if (!result_uri) bad = no_result_uri(*uri, result_uri.error());
    if (!bad.empty()) {
        start();
        FABRIC_TRY(dead_letter_slot(part, s, m, 1, bad));
        return false;
    }
    if (s.dlq_owed) {  // our own decision, its send delayed
        const uint64_t a = s.dlq_attempts;
        const std::string reason = s.dlq_reason;
        start();
        FABRIC_TRY(dead_letter_slot(part, s, m, a, reason));
        return false;
    }
    if (router->decided(m)) {
        start();
        FABRIC_TRY(dead_letter_slot(part, s, m, 1,
                                    "an earlier owner decided to dead-letter it and stopped before confirming the send"));
        return false;
    }
    // The notification's text is the URI as to_string() would write it: parse() only splits it.
    data.input_text.assign(m.value_str());
    const std::string& input = data.input_text;
    // Both keys made now, and both table lines asked for: the input's pin and the result's
    // lookups below (before the pin when the notification carries a version, after it
    // otherwise) then wait on misses already under way together (the input's line was written
    // by the producer's core). The result's key serves its lookups and its put; a key the
    // store refuses fails those calls with its reason, as head_into() and pin() would (the
    // pool is writable: joining the group refused a read-only handle).
    detail::StoreKey input_key;
    const Status input_key_ok = detail::StoreAccess::prepare(*store, *uri, input_key);
    if (input_key_ok) detail::StoreAccess::prefetch(*store, input_key);
    const Status result_key_ok = detail::StoreAccess::prepare(*store, *result_uri, data.result_store_key);
    if (result_key_ok) detail::StoreAccess::prefetch(*store, data.result_store_key);
    auto look_up_result = [&]() -> Result<bool> {
        if (!result_key_ok) return result_key_ok.error();
        return detail::StoreAccess::head_meta(*store, *result_uri, data.result_store_key, result_head,
                                              &data.result_found);
    };
    // Done already, by the notification's own version (fabric-version)? Then the input is
    // not pinned at all: a redelivery after --delete-input removed it is a skip, not a
    // dead letter. The result looked up here (result_head) is reused below when the pinned
    // version matches.
    // An unversioned notification whose forward waited is judged by the version processed.
    uint64_t notified_version = parse_u64(header[1], 0);
    if (notified_version == 0) notified_version = s.processed_version;
    bool notified_looked_up = false, notified_result_exists = false;
    if (notified_version != 0) {
        if (auto h = look_up_result(); h) {
            std::string other;
            if (*h && result_state(&result_head, input, notified_version, &other) == ResultState::current) {
                ++stats.skipped;
                Failure failure;
                auto sent = forward_then_delete(m, data.result_text, result_head.version, {}, &failure, *uri,
                                                notified_version);
                if (!sent) return std::move(sent).error();
                // Not counted (no begin): a notification too large for the next topic is
                // dead-lettered as run once, which it was (its result is written).
                if (*sent == Outcome::failed) s.attempt = 1;
                FABRIC_TRY(settle(part, s, m, *sent, failure));
                return false;
            }
            notified_looked_up = true;
            notified_result_exists = *h;
        } else if (is_fatal(h.code())) {
            return std::move(h).error();
        }  // another error: the lookup below reports it
    }
    auto a = router->begin(m);
    if (!a) {
        FABRIC_TRY(refused(part, s, a.error(), "hand-out"));
        return false;
    }
    start();
    s.attempt = uint32_t(std::min<uint64_t>(*a, UINT32_MAX));
    if (*a > cfg.max_attempts) {
        FABRIC_TRY(dead_letter_slot(part, s, m, *a - 1,
                                    "handed out " + std::to_string(*a - 1) +
                                        " times without an ack (the worker crashed or was presumed dead)"));
        return false;
    }
    auto pinned = input_key_ok ? detail::StoreAccess::pin(*store, *uri, input_key)
                               : Result<std::optional<PinnedView>>(input_key_ok.error());
    if (!pinned) {
        if (is_fatal(pinned.code())) return std::move(pinned).error();
        if (pinned.code() == Errc::capacity_exceeded) {
            // Every pin record of the store is held (by live readers: the pin already
            // released dead processes' records and tried again): back-pressure, as a result
            // put on a full store is. Handed back uncounted; no work is taken for a pause.
            FABRIC_TRY(settle(part, s, m, Outcome::store_full, Failure{"get " + input + ": " + pinned.error().message}));
            return false;
        }
        if (pinned.code() == Errc::busy) {  // the input rewritten faster than it could be pinned
            FABRIC_TRY(settle(part, s, m, Outcome::deferred, Failure{"get " + input + ": " + pinned.error().message}));
            return false;
        }
        FABRIC_TRY(fail_slot(part, s, m, {"get " + input + ": " + pinned.error().message,
                                          router->policy().is_permanent(pinned.code())}));
        return false;
    }
    if (!pinned->has_value()) {  // the recipe: object gone = permanent, never retried
        const uint64_t expires = parse_u64(m.header(kHeaderExpiresTime), 0);
        const uint64_t now_wall = wall_now_ns();
        if (expires != 0 && now_wall >= expires) {
            FABRIC_TRY(fail_slot(part, s, m,
                                 {"expired: " + input + " expired " + format_duration_ns(now_wall - expires) +
                                      " ago (" + format_wall_ns(expires) + ") before it was processed",
                                  true}));
            return false;
        }
        FABRIC_TRY(fail_slot(part, s, m, {"object not found: " + input, true}));
        return false;
    }
    PinnedView& view = **pinned;
    // The result is looked up below, after the CRC pass over the input: its block's lines
    // (written by whichever worker put it last) are asked for now, so that their misses
    // overlap the pass. Its table line was asked for with the keys.
    if (result_key_ok && !notified_looked_up) detail::StoreAccess::prefetch_linked(*store, data.result_store_key);
    if (Status v = view.verify(); !v) {
        FABRIC_TRY(fail_slot(part, s, m, {v.error().message, false}));
        return false;
    }
    const ObjectInfo& info = view.info();
    // Done already? (a redelivery after a crash between the result put and the commit.) The
    // result must record this very input, URI and version: the same key made from another
    // input is a collision, never a skip and never overwritten.
    bool result_exists = notified_result_exists;
    if (!notified_looked_up || info.version != notified_version) {
        auto existing = look_up_result();
        if (!existing) {
            if (is_fatal(existing.code())) return std::move(existing).error();
            FABRIC_TRY(fail_slot(part, s, m, {"result lookup: " + existing.error().message, false}));
            return false;
        }
        result_exists = *existing;
    }
    std::string other;
    switch (result_state(result_exists ? &result_head : nullptr, input, info.version, &other)) {
        case ResultState::collision:
            FABRIC_TRY(fail_slot(part, s, m,
                                 {"result " + data.result_text + " already holds the result of " + other +
                                      ": two inputs map to one result key (result key template '" + cfg.result_key +
                                      "'); use a template with {bucket} and {key} (the default), or another "
                                      "--result-bucket",
                                  true}));
            return false;
        case ResultState::current: {
            ++stats.skipped;
            Failure failure;
            FABRIC_TRY(settle(part, s, m,
                              forward_then_delete(m, data.result_text, result_head.version, {}, &failure, *uri,
                                                  info.version),
                              failure));
            return false;
        }
        case ResultState::newer:
            ++stats.superseded;
            FABRIC_TRY(router->ack(m));
            finish_slot(part, s);
            return false;
        case ResultState::absent:
        case ResultState::older: break;
    }
    data.view = std::move(view);
    data.result_uri = *result_uri;
    data.result_seen_version = result_exists ? result_head.version : 0;
    data.put_ts = parse_u64(header[2], 0);
    data.id = s.id;
    data.generation = generation;
    // Fresh data, or data recycled from a ticket another loop handed out (a loop reopened after
    // a fatal error, its old tickets completed on the new one): a drop must reach our box. A
    // pointer compare, no count touched, in the usual case.
    if (data.box != box) data.box = box;
    data.outstanding = true;
    WorkItem& item = data.item;
    item.uri.assign(*uri);  // the slot's text may be overwritten while the ticket lives
    item.topic = cfg.topic;
    item.partition = p;
    item.offset = s.offset;
    item.version = data.view.info().version;
    item.data = data.view.bytes();
    item.info = &data.view.info();
    item.attempt = s.attempt;
    item.key = s.key;
    // run() drives the loop: the processor's keep_alive heartbeats it. acquire(): the driver
    // calls service() instead. A std::function assigned only when it changes (recycled data
    // keeps it; a loop's address tells whose it is).
    if (run_driving && data.keep_alive_of != this) {
        item.keep_alive = [this] { return keep_alive(); };
        data.keep_alive_of = this;
    } else if (!run_driving && data.keep_alive_of != kNoOpKeepAlive) {
        item.keep_alive = [] { return Status{}; };
        data.keep_alive_of = kNoOpKeepAlive;
    }
    FABRIC_PAUSE_POINT("worker.acquire.handed_out");
    ticket = WorkTicket();
    ticket.data_ = std::move(hold.d);
    return true;
}

Slot* WorkerLoop::Impl::find(const WorkTicket::Data& d) {
    // Only this loop's hand-outs: another loop's ticket (a closed loop's, completed on its
    // successor) carries that loop's box, and its generation and hand-out number may equal
    // those of a message this loop handed out since (both count from the start).
    if (d.box != box || d.generation != generation || d.item.partition >= parts.size()) return nullptr;
    Part& part = parts[d.item.partition];
    if (!part.owned) return nullptr;
    for (uint32_t i = 0; i < part.count; ++i) {
        Slot& s = part.at(i);
        if (s.state == Slot::State::in_flight && s.id == d.id) return &s;
    }
    return nullptr;
}

// With box->mu held (droppers write the eventfd under it): clears wait_fd's "work ready"
// readiness, whether we set it (event_set) or a dropped ticket did (fd_written).
void WorkerLoop::Impl::drain_event_fd_locked() {
    if (!event_set && !box->fd_written) return;
    uint64_t v;
    (void)!::read(event_fd, &v, sizeof v);
    event_set = false;
    box->fd_written = false;
}

void WorkerLoop::Impl::signal_ready() {
    if (event_fd < 0 || event_set) return;
    const uint64_t one = 1;
    (void)!::write(event_fd, &one, sizeof one);
    event_set = true;
}

// Readiness of wait_fd after acquire/service: our eventfd while work is ready now, the
// Waiter while the loop is idle with capacity for new messages, the timer at the next service
// or retry. Each system call here is paid only when the state it reflects changes, so a loop
// under a backlog makes none per message:
// - The Waiter is armed only when the loop goes idle. arm() clears its eventfd and hands a
//   snapshot of the positions to its bridge thread, which parks on the partitions; while it
//   is parked every send there costs the producer a futex wake. When work is ready now, our
//   eventfd already makes wait_fd readable, so an unarmed (or stale) Waiter cannot make a
//   sleeping caller miss anything: the caller comes back through acquire() at once.
// - Without capacity the Waiter leaves the epoll set (a fired Waiter would wake a caller that
//   can take nothing, over and over), and returns when the loop is next idle with capacity.
// - The timer is absolute and set only when its instant changes.
// `now`: the instant `more_ready` was judged at. The timer is set from the same instant, so a
// retry whose backoff ends after it is either ready (more_ready) or the timer's next instant.
Status WorkerLoop::Impl::update_wait_fd(bool more_ready, uint64_t now) {
    if (epoll_fd < 0) return {};
    const bool cap = capacity() > 0 && !left;
    const bool ready_now = more_ready && cap;
    if (ready_now) {
        signal_ready();
    } else {
        // Under the box's mutex, which droppers hold while they write: a drop either wrote
        // before (its write is drained here, and `any` says it waits for take_abandoned) or
        // writes after (the eventfd stays readable). Never a drop's write consumed unseen, nor
        // a stale drop's write left readable for ever.
        bool dropped_pending = false;
        {
            std::lock_guard<std::mutex> lock(box->mu);
            drain_event_fd_locked();
            dropped_pending = box->any.load(std::memory_order_relaxed);  // mu orders it
        }
        if (dropped_pending) signal_ready();  // acquire()/service() take it (take_abandoned)
    }
    // Positions change only by a poll, and partitions come back (a ring with room again) by
    // sync_active: bring the consumer's assignment up to date, so arm() watches every partition
    // a poll would read.
    FABRIC_TRY(sync_active());
    // A poll can read only while some partition's ring has room and a count limit leaves room.
    const bool readable = !active.empty() && (cfg.count == 0 || cfg.count > handled + buffered);
    if (cap && !ready_now && readable) {
        // Idle: wake on the next message. acquire()/service() polled just before deciding
        // so, hence arm() sees the positions past everything already buffered.
        FABRIC_TRY(waiter->arm());
        if (!waiter_in_set) {
            epoll_event ev{};
            ev.events = EPOLLIN;
            if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, waiter_fd, &ev) != 0) return errno_error(errno, "wait_fd: epoll_ctl");
            waiter_in_set = true;
        }
    } else if (waiter_in_set && (!cap || !readable)) {
        (void)::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, waiter_fd, nullptr);
        waiter_in_set = false;
    }
    // Not a deferred commit's instant: it moves with every completion under a backlog (a
    // timerfd_settime each), and the commit rides on the next acquire() or service(), at the
    // latest this keep-alive's.
    uint64_t due = std::min(last_keep_alive_ns + kKeepAliveEveryNs * 2, next_backoff_end(now));
    if (store_full_until_ns > now) due = std::min(due, store_full_until_ns);
    if (due != timer_due_ns) {
        // Absolute: an instant already past fires at once, and the same instant is not set
        // again until service() has consumed the expiry (timer_due_ns = 0).
        itimerspec its{};
        its.it_value.tv_sec = time_t(due / kNsPerSec);
        its.it_value.tv_nsec = long(due % kNsPerSec);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;  // 0 would disarm it
        if (::timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, nullptr) != 0)
            return errno_error(errno, "wait_fd: timerfd_settime");
        timer_due_ns = due;
    }
    return {};
}

// A fatal error: say so plainly when the pool itself was removed under us.
Error WorkerLoop::Impl::fatal(Error e) const {
    if (pool->lifecycle() != "live")
        note("pool '" + pool->name() + "' was removed (fabric-shm pool rm) while this worker ran; stopping");
    return e;
}

// Counts a dead letter; the first one also starts renewing the DLQ topic (the router creates it).
Status WorkerLoop::Impl::note_dead_letter() {
    ++stats.dead_lettered;
    if (dlq_leases_registered) return {};
    dlq_leases_registered = true;
    return register_topic_leases(router->dlq_topic());
}

// The instant of the result just written, for stats.busy_seconds(). A clock read costs ~25 ns
// on a VM's kvm-clock (about what a 1 KiB CRC does). Under run(), the next acquire() follows at
// once and reads the clock anyway: while more messages are buffered its read stands for this
// result's instant. The last message buffered is read at once (the loop may idle after it), and
// so is every result of a loop the caller drives: its next acquire() may come much later.
void WorkerLoop::Impl::note_result_instant() {
    if (run_driving && buffered > 1) {
        result_unclocked = true;
        return;
    }
    stats.last_result_mono_ns = mono_now_ns();
    result_unclocked = false;
}

// The instant of a result left for the next acquire() (note_result_instant): that acquire's
// clock read `now`, or a read of its own (0) when run() or the loop ends first.
void WorkerLoop::Impl::clock_last_result(uint64_t now) {
    if (!result_unclocked) return;
    stats.last_result_mono_ns = now != 0 ? now : mono_now_ns();
    result_unclocked = false;
}

void WorkerLoop::Impl::leave() {
    if (left) return;
    left = true;
    clock_last_result();
    if (membership) membership->leave();
}

Result<WorkerLoop> WorkerLoop::open(Pool& pool, const WorkerConfig& config, Processor processor) {
    if (!processor) return make_error(Errc::invalid_argument, "no processor given");
    auto loop = open(pool, config);
    if (!loop) return loop;
    loop->impl_->processor = std::move(processor);
    return loop;
}

Result<WorkerLoop> WorkerLoop::open(Pool& pool, const WorkerConfig& config) {
    FABRIC_TRY(validate_name("topic", config.topic));
    FABRIC_TRY(validate_name("group", config.group));
    FABRIC_TRY(validate_name("bucket", config.result_bucket));
    FABRIC_TRY(validate_result_key_template(config.result_key));
    if (!config.next_topic.empty()) FABRIC_TRY(validate_name("topic", config.next_topic));
    if (!config.dlq_topic.empty()) FABRIC_TRY(validate_name("topic", config.dlq_topic));
    if (config.max_attempts == 0)
        return make_error(Errc::invalid_argument, "max attempts 0: at least 1 attempt is needed");
    if (config.batch == 0) return make_error(Errc::invalid_argument, "batch 0: at least 1 message per poll");
    if (config.concurrency == 0)
        return make_error(Errc::invalid_argument, "concurrency 0: at least 1 message must be in flight");
    if (config.commit_every == 0 || config.commit_every > kMaxCommitEvery)
        return make_error(Errc::invalid_argument, "commit every " + std::to_string(config.commit_every) +
                                                      " is not within 1.." + std::to_string(kMaxCommitEvery) +
                                                      " (a successor looks that far, plus the window, past the "
                                                      "committed offset for the messages it must run one at a time)");
    if (config.commit_delay < Duration::zero())
        return make_error(Errc::invalid_argument,
                          "commit delay " + std::to_string(config.commit_delay.count()) + " ns is negative");
    if (config.window == 0 || config.window > kMaxWorkWindow)
        return make_error(Errc::invalid_argument, "window " + std::to_string(config.window) +
                                                      " is not within 1.." + std::to_string(kMaxWorkWindow) +
                                                      " (the pool counts attempts for that many offsets per partition)");

    auto impl = std::make_unique<Impl>();
    impl->pool_handle = pool;
    impl->pool = &impl->pool_handle;
    impl->cfg = config;
    if (impl->cfg.member_id.empty()) impl->cfg.member_id = default_member_id();
    FABRIC_TRY(validate_name("member id", impl->cfg.member_id));
    impl->stats.latency = {};
    impl->init_result_options();
    impl->init_result_uri();
    StoreConfig sc;
    sc.name = config.store;
    auto store = MemObjectStore::open(pool, sc);
    if (!store) return std::move(store).error();
    impl->store = std::move(store.value());

    FABRIC_TRY(ensure_topic(pool, config.topic, config.partitions_if_created));
    impl->renewals = std::make_unique<RenewalManager>(pool);
    FABRIC_TRY(impl->renewals->register_lease(pool.pool_lease_id()));
    for (uint64_t id : impl->store->lease_ids()) FABRIC_TRY(impl->renewals->register_lease(id));
    FABRIC_TRY(impl->register_topic_leases(config.topic));
    // The pool-wide latency view is best effort: a pool too small (or with every key taken)
    // still processes, and says why once in the log.
    if (auto rec = LatencyRecorder::open(pool, config.topic, config.group); rec) {
        impl->recorder = std::move(rec.value());
        FABRIC_TRY(impl->renewals->register_lease(impl->recorder.lease_id()));
    } else {
        impl->recorder_warning = "latency not recorded in the pool: " + rec.error().message;
    }
    // The longest a send (a forward, a dead letter) or a wait for the group's lock may keep the
    // member from heartbeating: a quarter of the session, at most 1 s and 2 s.
    const Duration send_wait =
        ns_duration(std::max<uint64_t>(1, std::min(kForwardWaitNs, config.session_timeout_ns / 4)));
    const uint64_t lock_wait_ns = mq::group_lock_wait_for_session(config.session_timeout_ns);
    if (!config.next_topic.empty()) {
        FABRIC_TRY(ensure_topic(pool, config.next_topic, config.partitions_if_created));
        // A full next topic (its stage behind) is waited for inside complete(), where the
        // member does not heartbeat: well under the session timeout, then the message waits
        // (forward_waits) while the loop heartbeats. run()'s stop ends the wait at once.
        ProducerOptions po;
        po.block_timeout = send_wait;
        Impl* im = impl.get();
        // A probe (send_unkeyed) ends the wait at once: "still full", nothing sent.
        po.should_stop = [im] { return im->probing_next || (im->stop_check && (*im->stop_check)()); };
        auto p = Producer::open(pool, config.next_topic, po);
        if (!p) return std::move(p).error();
        impl->next.emplace(std::move(p.value()));
        impl->next_full_until_ns.assign(impl->next->num_partitions(), 0);
        FABRIC_TRY(impl->register_topic_leases(config.next_topic));
    }

    if (config.delete_input) {
        // Checked before this group registers (it never registers when refused).
        auto others = other_groups(pool, config.topic, config.group);
        if (!others) return std::move(others).error();
        if (!others->empty())
            return make_error(Errc::conflict,
                              "--delete-input: topic '" + config.topic + "' has other consumer group(s) " + *others +
                                  " besides '" + config.group +
                                  "': an input deleted after this group's commit would be gone for them (and for "
                                  "a `group reset` or a DLQ replay of theirs); run without --delete-input, or remove "
                                  "the other groups (fabric-shm group rm)");
        impl->last_group_check_ns = mono_now_ns();
    }
    ConsumerOptions co;
    co.group.ttl = ns_duration(std::max<uint64_t>(60 * kNsPerSec, 2 * config.session_timeout_ns));
    co.lock_wait = ns_duration(lock_wait_ns);
    auto c = Consumer::open(pool, config.topic, config.group, co);
    if (!c) return std::move(c).error();
    impl->consumer.emplace(std::move(c.value()));
    impl->parts.resize(impl->consumer->num_partitions());
    impl->last_rebalance_ns = impl->last_keep_alive_ns = mono_now_ns();

    DlqPolicy dp;
    dp.max_attempts = config.max_attempts;
    dp.initial_backoff = ns_duration(config.backoff_initial_ns);
    dp.max_backoff = ns_duration(config.backoff_max_ns);
    dp.dlq_topic = config.dlq_topic;
    dp.send_wait = send_wait;
    dp.lock_wait = co.lock_wait;
    auto router = DlqRouter::open(pool, config.topic, config.group, dp);
    if (!router) return std::move(router).error();
    impl->router.emplace(std::move(router.value()));

    auto membership = worker::make_membership(pool, config.topic, config.group, impl->cfg.member_id,
                                              impl->consumer->num_partitions(), config.session_timeout_ns);
    if (!membership) return std::move(membership).error();
    impl->membership = std::move(membership.value());
    // A member paused inside its first join past the session timeout is evicted before the
    // join ends (stale_epoch); it joins again, as a rejoin does. Bounded: every pass that
    // ends so means another pause past the timeout. A join whose wait for the group's lock
    // ran out (busy: a paused process holds it; the wait is a quarter of the session) is
    // tried again too, for up to kOpenLockWaitNs in all: a failed join holds nothing (it left),
    // and a short pause of another member must not end us. The process heartbeats between
    // tries (keep_alive; no member yet): a declared heartbeat timeout must not fence it.
    constexpr int kJoinPasses = 16;
    constexpr uint64_t kOpenLockWaitNs = 10 * kNsPerSec;
    uint64_t lock_deadline = mono_now_ns() + kOpenLockWaitNs;
    // open_should_stop is asked before each try, the first included: a stop asked before the
    // join joins nothing.
    // `evicted`: where a step outlives an eviction (the member was silent past its session while
    // it waited: this process paused), the eviction is noted there instead of ending the step.
    auto while_lock_held = [&](const std::function<Status()>& step, bool* evicted = nullptr) -> Status {
        std::string waited;  // the last busy answer, for the interrupted error
        for (;;) {
            if (config.open_should_stop && config.open_should_stop())
                return make_error(Errc::interrupted, "WorkerLoop::open of group '" + config.group + "' on topic '" +
                                                         config.topic + "': stopped" +
                                                         (waited.empty() ? "" : " while it waited (" + waited + ")"));
            Status st = step();
            if (st || st.code() != Errc::busy || mono_now_ns() >= lock_deadline) return st;
            waited = st.error().message;
            if (Status alive = impl->keep_alive(); !alive) {
                if (!evicted || alive.code() != Errc::stale_epoch) return alive;
                *evicted = true;
            }
            sleep_ns(kBusyRetryNs);
        }
    };
    auto join = [&] {
        Status joined = while_lock_held([&] { return impl->membership->join(); });
        for (int pass = 1; !joined && joined.code() == Errc::stale_epoch && pass < kJoinPasses; ++pass)
            joined = while_lock_held([&] { return impl->membership->join(); });
        return joined;
    };
    FABRIC_TRY(join());
    // After joining (our row is LIVE): record the bucket, refuse one another group writes.
    // The same retries while the lock is held (we are a member now: keep_alive heartbeats it).
    // The bucket is the group's, not the member's: an eviction meanwhile does not touch it,
    // and the member joins again once it is recorded, as the first rebalance would.
    bool evicted = false;
    Status bucket = while_lock_held(
        [&] {
            return mq::claim_result_bucket(pool, config.topic, config.group, impl->cfg.member_id, config.result_bucket,
                                           config.shared_results, lock_wait_ns);
        },
        &evicted);
    if (bucket && evicted) {
        // rebalance() finds the eviction (its claim: stale_epoch), drops the member's local
        // state and joins again.
        auto rejoin = [&]() -> Status {
            auto r = impl->membership->rebalance(mono_now_ns(), {});
            return r ? Status{} : Status(std::move(r).error());
        };
        // Each try a wait of its own: the eviction needed a silence past the session timeout,
        // so the first wait's deadline may be gone.
        for (int pass = 0; pass == 0 || (!bucket && bucket.code() == Errc::stale_epoch && pass < kJoinPasses);
             ++pass) {
            lock_deadline = mono_now_ns() + kOpenLockWaitNs;
            bucket = while_lock_held(rejoin);
        }
    }
    if (!bucket) {
        impl->leave();
        return std::move(bucket).error();
    }
    if (Status st = impl->apply_assignment(); !st) {
        impl->leave();
        return std::move(st).error();
    }
    impl->cfg.open_should_stop = nullptr;  // open's alone: what it captured may not outlive the call
    return WorkerLoop(std::move(impl));
}

WorkerLoop::WorkerLoop(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerLoop::WorkerLoop(WorkerLoop&&) noexcept = default;
WorkerLoop& WorkerLoop::operator=(WorkerLoop&&) noexcept = default;
WorkerLoop::~WorkerLoop() {
    if (!impl_) return;
    // A forked child's copy commits nothing and leaves nothing: the membership, its tickets
    // and offsets are its parent's, which still runs them.
    if (impl_->made_in != detail::fork_generation()) return;
    // Best effort, as close() would: what is done is committed (a successor would redo it).
    if (!impl_->left) {
        try {
            impl_->log = nullptr;  // what it captured may already be gone
            (void)impl_->commit_pending(nullptr, Impl::CommitWhen::now);
        } catch (...) {  // an error message that could not be allocated: the successor redoes it
        }
    }
    impl_->leave();
}

const WorkerStats& WorkerLoop::stats() const {
    const LatencyHistogramData& h = impl_->latency;
    impl_->stats.latency = {h.count(), h.percentile(0.50), h.percentile(0.99), h.percentile(0.999), h.max_ns};
    return impl_->stats;
}
const std::string& WorkerLoop::member_id() const { return impl_->cfg.member_id; }
void WorkerLoop::set_log(std::function<void(std::string_view)> log) {
    impl_->log = std::move(log);
    impl_->note("joined: " + impl_->membership->describe());
    if (!impl_->recorder_warning.empty()) impl_->note(impl_->recorder_warning);
}

size_t WorkerLoop::in_flight() const { return impl_->in_flight; }
bool WorkerLoop::finished() const { return impl_->finished(); }

static Error closed_error(const WorkerLoop::Impl& im) {
    return make_error(Errc::closed, "worker loop of group '" + im.cfg.group + "' on topic '" + im.cfg.topic +
                                        "' was closed (WorkerLoop::close)");
}

Result<size_t> WorkerLoop::acquire(std::span<WorkTicket> tickets, std::chrono::nanoseconds timeout) {
    Impl& im = *impl_;
    if (im.left) return closed_error(im);
    return im.acquire(tickets, timeout.count() > 0 ? uint64_t(timeout.count()) : 0, false);
}

// full: service(true) on each pass (run() needs no service of its own between messages). One
// clock read per pass: service() and the hand-out compare with it. What was judged at that
// instant (`judged`) is what the wait and the wait_fd timer are computed from, so a retry
// whose backoff ends after the instant and before the wait is either handed out or waited for
// (a wait of 0, a timer already due), never left to the keep-alive's timer.
Result<size_t> WorkerLoop::Impl::acquire(std::span<WorkTicket> tickets, uint64_t timeout_ns, bool full) {
    if (left) return closed_error(*this);  // also when a processor closed the loop run() drives
    uint64_t now = mono_now_ns();
    clock_last_result(now);
    const uint64_t deadline = timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + timeout_ns;
    uint64_t judged = now;
    size_t n = 0;
    bool more = false;
    for (;;) {
        if (Status st = service(full, now); !st) return fatal(std::move(st).error());
        const uint64_t want = std::min<uint64_t>(tickets.size() - n, capacity());
        const bool from_rings = rings_serve(want, now);
        if (!from_rings)
            if (Status st = poll_into_rings(0); !st) return fatal(std::move(st).error());
        judged = now;
        auto got = hand_out_ready(tickets.subspan(n), &more, judged);
        if (!got) return fatal(std::move(got).error());
        n += *got;
        if (from_rings && *got < want && !more) {
            // The rings settled some of what they held without a ticket (a result already
            // there, a dead letter): what the poll would have added goes out in this pass.
            if (Status st = poll_into_rings(0); !st) return fatal(std::move(st).error());
            got = hand_out_ready(tickets.subspan(n), &more, judged);
            if (!got) return fatal(std::move(got).error());
            n += *got;
        }
        if (n > 0 || tickets.empty() || capacity() == 0 || finished()) break;
        now = mono_now_ns();
        if (now >= deadline) break;
        uint64_t wait = std::min(deadline - now, kPollTimeoutNs);
        wait = std::min(wait, elapsed(last_keep_alive_ns + kKeepAliveEveryNs * 2, now) + 1000);
        const uint64_t backoff_end = next_backoff_end(judged);
        if (backoff_end != UINT64_MAX) wait = std::min(wait, elapsed(backoff_end, now));
        const uint64_t commit_due = next_commit_due();
        if (commit_due != UINT64_MAX) wait = std::min(wait, elapsed(commit_due, now));
        if (Status st = poll_into_rings(wait); !st) return fatal(std::move(st).error());
        now = mono_now_ns();
    }
    if (epoll_fd >= 0 && !more && (n > 0 || active_dirty) && capacity() > 0) {
        // Everything buffered went out (or a partition's ring got room back without anything
        // handed out: results already there, dead letters); before wait_fd says "idle"
        // (arming the Waiter), look whether the topic already holds more (under a backlog it
        // does: no arm per acquire). Only an optimisation: the tickets already handed out are
        // returned even if this poll fails (the next call's poll reports the error).
        if (Status st = poll_into_rings(0); st) {
            judged = mono_now_ns();
            more = any_eligible(judged);
        }
    }
    if (Status st = update_wait_fd(more, judged); !st) return fatal(std::move(st).error());
    return n;
}

Status WorkerLoop::complete(WorkTicket&& ticket, std::span<const uint8_t> result) {
    Impl& im = *impl_;
    if (!ticket.data_) return make_error(Errc::invalid_argument, "complete() of an empty ticket");
    std::unique_ptr<WorkTicket::Data> d = std::move(ticket.data_);
    Slot* s = im.find(*d);
    if (!s) {  // its partition moved (or the loop was reassigned): the new owner redoes it
        ++im.stats.abandoned;
        im.recycle(std::move(d));
        return {};
    }
    Part& part = im.parts[d->item.partition];
    const Message m = s->message(d->item.partition);
    Impl::Failure failure;
    auto r = im.write_result(m, *d, result, &failure);
    Status st = im.settle(part, *s, m, std::move(r), failure);
    im.recycle(std::move(d));
    im.signal_ready();
    if (!st) return im.fatal(std::move(st).error());
    return {};
}

Status WorkerLoop::Impl::complete_error(WorkTicket&& ticket, const Error& error, bool permanent) {
    if (!ticket.data_) return make_error(Errc::invalid_argument, "complete() of an empty ticket");
    std::unique_ptr<WorkTicket::Data> d = std::move(ticket.data_);
    Slot* s = find(*d);
    if (!s) {
        ++stats.abandoned;
        recycle(std::move(d));
        return {};
    }
    Part& part = parts[d->item.partition];
    const Message m = s->message(d->item.partition);
    recycle(std::move(d));
    Status st = fail_slot(part, *s, m, {std::string(errc_name(error.code)) + ": " + error.message, permanent});
    signal_ready();
    if (!st) return fatal(std::move(st).error());
    return {};
}

Status WorkerLoop::complete(WorkTicket&& ticket, const Error& error) {
    return impl_->complete_error(std::move(ticket), error, impl_->router->policy().is_permanent(error.code));
}

Status WorkerLoop::complete(WorkTicket&& ticket, const Error& error, bool permanent) {
    return impl_->complete_error(std::move(ticket), error, permanent);
}

Status WorkerLoop::service() {
    Impl& im = *impl_;
    if (im.left) return closed_error(im);
    // The timer is read only once its instant has passed (a read of a timer not yet expired
    // is a system call for nothing); update_wait_fd then sets the next instant.
    if (im.timer_fd >= 0 && im.timer_due_ns != 0 && im.timer_due_ns <= mono_now_ns()) {
        uint64_t expirations;
        (void)!::read(im.timer_fd, &expirations, sizeof expirations);
        im.timer_due_ns = 0;
    }
    const uint64_t now = mono_now_ns();
    if (Status st = im.service(true, now); !st) return im.fatal(std::move(st).error());
    // Work may be ready now (a retry's backoff over, a ticket dropped, messages waiting in the
    // topic): acquire() takes it. Polled before deciding, so that an idle loop arms its Waiter
    // past what is already there rather than being woken for it by the Waiter's thread.
    if (im.epoll_fd >= 0 && im.capacity() > 0)
        if (Status st = im.poll_into_rings(0); !st) return im.fatal(std::move(st).error());
    if (Status st = im.update_wait_fd(im.any_eligible(now), now); !st) return im.fatal(std::move(st).error());
    return {};
}

Result<int> WorkerLoop::wait_fd() {
    Impl& im = *impl_;
    if (im.left) return closed_error(im);
    if (im.epoll_fd >= 0) return im.epoll_fd;
    im.epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (im.epoll_fd < 0) return errno_error(errno, "wait_fd: epoll_create1");
    im.event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (im.event_fd < 0) return errno_error(errno, "wait_fd: eventfd");
    im.timer_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (im.timer_fd < 0) return errno_error(errno, "wait_fd: timerfd_create");
    im.waiter.emplace();
    FABRIC_TRY(im.waiter->add(*im.consumer));
    auto wfd = im.waiter->fd();
    if (!wfd) return std::move(wfd).error();
    im.waiter_fd = *wfd;
    for (int fd : {im.event_fd, im.timer_fd}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        if (::epoll_ctl(im.epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) return errno_error(errno, "wait_fd: epoll_ctl");
    }
    {
        std::lock_guard<std::mutex> lock(im.box->mu);  // ~WorkTicket reads it under mu
        im.box->event_fd.store(im.event_fd, std::memory_order_relaxed);
    }
    FABRIC_TRY(im.update_wait_fd(true, mono_now_ns()));
    return im.epoll_fd;
}

Status WorkerLoop::close() {
    Impl& im = *impl_;
    if (im.left) return {};
    im.clock_last_result();  // before the commit below takes its time
    Status st = im.commit_pending(nullptr, Impl::CommitWhen::now);
    // The tickets still out keep their counts: a stop is the process's own decision, often
    // because a handler hung (Ctrl-C, a supervisor's timeout), and a message that hangs every
    // handler must still reach the DLQ through the restarts. Only a reassignment, which the
    // group makes, takes hand-outs back (refund_dropped).
    ++im.generation;  // tickets still out are stale: their messages go to the next owner
    im.in_flight = 0;
    im.leave();
    if (im.epoll_fd >= 0) {
        // wait_fd goes quiet for good: nothing can be acquired any more, so a driver still
        // watching it must not be woken (by the Waiter, a ticket dropped later, or the timer).
        if (im.waiter_in_set) {
            (void)::epoll_ctl(im.epoll_fd, EPOLL_CTL_DEL, im.waiter_fd, nullptr);
            im.waiter_in_set = false;
        }
        {
            std::lock_guard<std::mutex> lock(im.box->mu);  // droppers write event_fd under mu
            im.box->event_fd.store(-1, std::memory_order_relaxed);
            im.drain_event_fd_locked();
        }
        const itimerspec disarm{};
        (void)::timerfd_settime(im.timer_fd, 0, &disarm, nullptr);
        uint64_t expirations;
        (void)!::read(im.timer_fd, &expirations, sizeof expirations);
        im.timer_due_ns = 0;
    }
    return st;
}

Result<WorkerExit> WorkerLoop::run(const std::function<bool()>& should_stop) {
    if (!impl_->processor)
        return make_error(Errc::invalid_argument, "run(should_stop) on a loop opened without a processor");
    return run(impl_->processor, should_stop);
}

Result<WorkerExit> WorkerLoop::run(Processor processor, const std::function<bool()>& should_stop) {
    if (!processor) return make_error(Errc::invalid_argument, "no processor given");
    // The result's vector is moved into run()'s buffer (the processor made it: one allocation
    // per message, as before ProcessorInto).
    return run(ProcessorInto([&processor](const WorkItem& item, std::vector<uint8_t>& out) -> Status {
                   auto r = processor(item);
                   if (!r) return std::move(r).error();
                   out = std::move(*r);
                   return {};
               }),
               should_stop);
}

Result<WorkerExit> WorkerLoop::run(ProcessorInto processor, const std::function<bool()>& should_stop) {
    Impl& im = *impl_;
    if (!processor) return make_error(Errc::invalid_argument, "no processor given");
    if (im.left) return closed_error(im);
    const uint32_t saved = im.cfg.concurrency;
    im.cfg.concurrency = 1;
    auto fail = [&](Error e) -> Result<WorkerExit> {
        im.cfg.concurrency = saved;
        (void)close();  // best effort: what was done stays done
        return im.fatal(std::move(e));
    };
    std::array<WorkTicket, 1> tickets;
    std::vector<uint8_t> result;  // emptied before each call; its capacity stays for the next
    WorkerExit why = WorkerExit::stopped;
    im.stop_check = should_stop ? &should_stop : nullptr;
    im.run_driving = true;
    struct EndRun {  // also when the processor throws
        Impl& im;
        ~EndRun() {
            im.stop_check = nullptr;
            im.run_driving = false;
            im.clock_last_result();
        }
    } end_run{im};
    for (;;) {
        if (should_stop && should_stop()) break;
        if (im.finished()) {
            why = im.cfg.count != 0 && im.handled >= im.cfg.count ? WorkerExit::count_reached : WorkerExit::idle;
            break;
        }
        auto n = im.acquire(tickets, kPollTimeoutNs, true);  // its service(true) keeps the member alive
        if (!n) return fail(std::move(n).error());
        if (*n == 0) continue;
        WorkTicket& t = tickets[0];  // its item's keep_alive heartbeats this loop (hand_out)
        result.clear();
        Status out = processor(t.item(), result);
        if (!out) {
            if (out.code() == Errc::stale_epoch) {  // keep_alive: evicted, not a failure
                im.need_rebalance = true;
                t = WorkTicket();  // dropped: redelivered after the rebalance (if still ours)
                continue;
            }
            if (is_fatal(out.code())) return fail(std::move(out).error());
            if (Status st = complete(std::move(t), out.error()); !st) return fail(std::move(st).error());
            continue;
        }
        if (Status st = complete(std::move(t), std::span<const uint8_t>(result)); !st)
            return fail(std::move(st).error());
        // A result larger than most is not kept for the rest of the run.
        if (result.capacity() > kKeptResultBytes) std::vector<uint8_t>().swap(result);
    }
    im.cfg.concurrency = saved;
    if (Status st = close(); !st) return im.fatal(std::move(st).error());
    return why;
}

}  // namespace fabric_shm
