// SPDX-License-Identifier: MIT
// WorkerLoop: notification -> get (pin) -> skip if done -> process -> fenced result put ->
// forward -> commit. Delivery is at-least-once; a result is written once per input version
// (a redelivered notification whose result exists for that version is skipped).
//
// The position invariant: a partition's committed offset (and this member's in-memory
// position at every poll) never passes a message that was neither processed, skipped as a
// duplicate, nor dead-lettered. Any other outcome ends the batch, commits the handled prefix
// and rewinds the consumer to the first unhandled message before the next poll.
#include "fabric_shm/worker_loop.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <optional>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "crash_point.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/lease.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/metrics.h"
#include "fabric_shm/names.h"
#include "fabric_shm/registry.h"
#include "fabric_shm/topic.h"
#include "mq/result_buckets.h"
#include "mq/topic_internal.h"
#include "worker/membership.h"

namespace fabric_shm {

namespace {

constexpr uint64_t kPollTimeoutNs = 50 * kNsPerMs;  ///< idle members look for takeovers this often
constexpr uint64_t kBackoffSliceNs = 50 * kNsPerMs;

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

/// Topics a worker creates when missing (its own, its next stage's). Workers of two stages
/// started together both create the topic between them (stage 1's --next-topic is stage 2's
/// --topic): TopicManager::ensure makes the loser wait for the winner's creation.
constexpr uint64_t kTopicReadyWaitNs = 10 * kNsPerSec;

Status ensure_topic(Pool& pool, const std::string& name, uint32_t partitions) {
    TopicConfig cfg;
    cfg.num_partitions = partitions;
    return TopicManager(pool).ensure(name, cfg, ns_duration(kTopicReadyWaitNs));
}

std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
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
    for (size_t i = 0; i < key_template.size(); ++i) {
        if (key_template[i] != '{') {
            key += key_template[i];
            continue;
        }
        const size_t close = key_template.find('}', i);
        key += key_template.substr(i + 1, close - i - 1) == "key" ? input.key() : input.bucket();
        i = close;
    }
    if (key.size() > kMaxKeyLength) {
        // Readable prefix + the hash of the whole key (FNV-1a, 64 bits): distinct keys stay
        // distinct unless they collide in the hash, which the input-URI check then reports.
        uint64_t h = 0xcbf29ce484222325ULL;
        for (unsigned char c : key) h = (h ^ c) * 0x100000001b3ULL;
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
        key = key.substr(0, kMaxKeyLength - 17) + "~" + hex;
    }
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

/// What handling one message came to.
enum class Outcome : uint8_t {
    done,         ///< result written / skipped / dead-lettered: commit past it
    interrupted,  ///< stop requested during a retry backoff: leave it uncommitted
    lost,         ///< a newer owner has the partition (evicted or fenced): leave it, rejoin
    deferred,     ///< a group lock is held by a live (paused) process: leave it, try again
    failed,       ///< one attempt failed (attempt_once only)
};

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
    std::vector<uint64_t> pending;   ///< per partition: next offset to commit, UINT64_MAX = nothing
    WorkerStats stats;
    LatencyHistogramData latency;    ///< this member's own samples (the summary)
    LatencyRecorder recorder;        ///< the same samples into the pool (topic, group) histogram
    std::string recorder_warning;    ///< why the pool histogram is not written ("" when it is)
    uint64_t handled = 0;
    bool left = false;
    std::function<bool()> should_stop;

    void note(const std::string& line) const {
        if (log) log(line);
    }
    Status register_topic_leases(const std::string& topic);
    Status keep_alive();
    Status apply_assignment();
    Status commit_pending(bool* lost);
    Status rewind();
    bool any_pending() const {
        return std::any_of(pending.begin(), pending.end(), [](uint64_t o) { return o != UINT64_MAX; });
    }
    struct Failure {
        std::string reason;
        bool permanent = false;
    };
    Result<Outcome> handle(const Message& m);
    Result<Outcome> attempt_once(const Message& m, const FabricUri& uri, const FabricUri& result_uri, uint32_t attempt,
                                 Failure* failure);
    Result<Outcome> dead_letter(const Message& m, uint64_t attempts, const std::string& reason);
    Result<Outcome> refused(const Error& e, std::string_view what);
    Status note_dead_letter();
    Error fatal(Error e) const;
    bool dlq_leases_registered = false;
    /// A dead letter whose send was delayed (the DLQ topic being created by a stopped process,
    /// a group lock held): its decision is recorded, so the redelivery finds it decided();
    /// this keeps the reason it was decided for.
    struct DelayedDeadLetter {
        uint32_t partition = 0;
        uint64_t offset = UINT64_MAX;
        uint64_t attempts = 0;
        std::string reason;
    } delayed;
    Result<Outcome> backoff(uint64_t wait_ns);
    void leave();
};

Status WorkerLoop::Impl::register_topic_leases(const std::string& topic) {
    TopicManager tm(*pool);
    auto d = tm.describe(topic);
    if (!d) return std::move(d).error();
    for (uint64_t id : d->lease_ids) FABRIC_TRY(renewals->register_lease(id));
    return {};
}

// Renews due leases (a lease that ran out is fatal: fail closed), heartbeats the registry
// and the group, and picks up a new assignment.
Status WorkerLoop::Impl::keep_alive() {
    const uint64_t now = mono_now_ns();
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

// Every (re)assignment restarts every owned partition from its committed offset: a partition
// kept across an eviction may have been handled and committed by another member meanwhile.
// Nothing is uncommitted here (run() commits before it rebalances).
Status WorkerLoop::Impl::apply_assignment() {
    const auto& parts = membership->partitions();
    consumer->set_epoch(membership->epoch());
    router->set_epoch(membership->epoch());
    FABRIC_TRY(consumer->assign(parts));
    for (uint32_t p : parts) FABRIC_TRY(consumer->seek(p, SeekPolicy::Committed()));
    std::fill(pending.begin(), pending.end(), UINT64_MAX);
    stats.partitions = parts;
    stats.epoch = membership->epoch();
    note("assigned: " + membership->describe());
    return {};
}

// Commits what was handled. stale_epoch: a newer owner fenced us (*lost; the work is redone
// by it); busy: the group lock is held by a live paused process, the offsets stay pending.
Status WorkerLoop::Impl::commit_pending(bool* lost) {
    for (uint32_t p = 0; p < pending.size(); ++p) {
        if (pending[p] == UINT64_MAX) continue;
        FABRIC_PAUSE_POINT("worker.commit.before");
        Status st = consumer->commit(p, pending[p]);
        if (!st) {
            if (st.code() == Errc::stale_epoch) {
                *lost = true;
                note("commit refused (partitions moved): " + st.error().message);
                std::fill(pending.begin(), pending.end(), UINT64_MAX);
                return {};
            }
            if (st.code() == Errc::busy) {
                note("commit delayed: " + st.error().message);
                return {};
            }
            return st;
        }
        pending[p] = UINT64_MAX;
    }
    return {};
}

// Moves each owned partition back to its first unhandled message: the pending offset (handled,
// commit delayed) or the committed one. poll() had moved past the whole batch.
Status WorkerLoop::Impl::rewind() {
    for (uint32_t p : consumer->assignment())
        FABRIC_TRY(consumer->seek(p, pending[p] != UINT64_MAX ? SeekPolicy::Offset(pending[p]) : SeekPolicy::Committed()));
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

// The DLQ router's refusals: a newer owner fenced the partition (lost), or a group lock is
// held by a live paused process (deferred); anything else is an error.
Result<Outcome> WorkerLoop::Impl::refused(const Error& e, std::string_view what) {
    if (e.code == Errc::stale_epoch) {
        note(std::string(what) + " refused (a newer owner has the partition): " + e.message);
        return Outcome::lost;
    }
    if (e.code == Errc::busy) {
        note(std::string(what) + " delayed: " + e.message);
        return Outcome::deferred;
    }
    return e;
}

// Dead letters are fenced like result puts and commits: the router records the decision
// under our fence token and refuses it once a newer owner fenced the partition (a member that
// paused after deciding, past its session timeout, cannot dead-letter what its successor owns).
Result<Outcome> WorkerLoop::Impl::dead_letter(const Message& m, uint64_t attempts, const std::string& reason) {
    auto sent = router->dead_letter(m, attempts, reason);
    if (!sent) {
        if (sent.code() == Errc::busy) delayed = {m.partition, m.offset, attempts, reason};
        return refused(sent.error(), "dead letter");
    }
    if (delayed.partition == m.partition && delayed.offset == m.offset) delayed = {};
    FABRIC_TRY(note_dead_letter());
    note("dead-lettered " + std::string(m.value_str()) + " (partition " + std::to_string(m.partition) + " offset " +
         std::to_string(m.offset) + ", " + std::to_string(attempts) + " attempt(s)) to '" + router->dlq_topic() +
         "': " + reason);
    return Outcome::done;
}

// Sleeps `wait` in slices, keeping the member alive; interrupted by a stop request.
Result<Outcome> WorkerLoop::Impl::backoff(uint64_t wait) {
    const uint64_t end = mono_now_ns() + wait;
    for (uint64_t now = mono_now_ns(); now < end; now = mono_now_ns()) {
        if (should_stop && should_stop()) return Outcome::interrupted;
        if (Status st = keep_alive(); !st) {
            if (st.code() == Errc::stale_epoch) return Outcome::lost;  // evicted: the run loop joins again
            return std::move(st).error();
        }
        sleep_ns(std::min(kBackoffSliceNs, end - now));
    }
    return Outcome::done;
}

// One attempt: get (pin), skip if the result for this version exists, process, fenced put,
// forward. Failures are returned in *failure (permanent or not); errors are fatal.
Result<Outcome> WorkerLoop::Impl::attempt_once(const Message& m, const FabricUri& uri, const FabricUri& result_uri,
                                                uint32_t attempt, Failure* failure) {
    auto pinned = store->pin(uri);
    if (!pinned) {
        if (is_fatal(pinned.code())) return std::move(pinned).error();
        *failure = {"get " + uri.to_string() + ": " + pinned.error().message, router->policy().is_permanent(pinned.code())};
        return Outcome::failed;
    }
    if (!pinned->has_value()) {  // the recipe: object gone = permanent, never retried
        *failure = {"object not found: " + uri.to_string(), true};
        return Outcome::failed;
    }
    const PinnedView& view = **pinned;
    if (Status v = view.verify(); !v) {
        *failure = {v.error().message, false};
        return Outcome::failed;
    }
    const ObjectInfo& info = view.info();

    // Done already? (a redelivery after a crash between the result put and the commit.) The
    // result must record this very input, URI and version: the same key made from another
    // input is a collision, never a skip and never overwritten.
    const std::string input = uri.to_string();
    auto existing = store->head(result_uri);
    if (!existing) {
        if (is_fatal(existing.code())) return std::move(existing).error();
        *failure = {"result lookup: " + existing.error().message, false};
        return Outcome::failed;
    }
    bool current = false;
    uint64_t result_version = 0;
    if (existing->has_value()) {
        const auto& md = (*existing)->metadata;
        const auto in = md.find(std::string(kResultInputUri));
        const auto ver = md.find(std::string(kResultInputVersion));
        if (in != md.end() && in->second != input) {
            *failure = {"result " + result_uri.to_string() + " already holds the result of " + in->second +
                            ": two inputs map to one result key (result key template '" + cfg.result_key +
                            "'); use a template with {bucket} and {key} (the default), or another --result-bucket",
                        true};
            return Outcome::failed;
        }
        current = in != md.end() && ver != md.end() && ver->second == std::to_string(info.version);
        result_version = (*existing)->version;
    }
    if (current) {
        ++stats.skipped;
    } else {
        WorkItem item;
        item.uri = uri;
        item.topic = cfg.topic;
        item.partition = m.partition;
        item.offset = m.offset;
        item.version = info.version;
        item.data = view.bytes();
        item.info = &info;
        item.attempt = attempt;
        item.keep_alive = [this] { return keep_alive(); };
        auto out = processor(item);
        if (!out) {
            if (out.code() == Errc::stale_epoch) return Outcome::lost;  // keep_alive: evicted, not a failure
            if (is_fatal(out.code())) return std::move(out).error();
            *failure = {out.error().message, router->policy().is_permanent(out.code())};
            return Outcome::failed;
        }
        FABRIC_PAUSE_POINT("worker.result.before_put");
        const uint64_t token = membership->epoch();
        PutOptions po = result_put_options(input, info.version, token);
        // The partition's fence, checked where the put publishes: the stored result's token
        // alone cannot refuse us once a newer owner's result was removed (consumed downstream).
        po.fence_holds = [this, p = m.partition] { return membership->owns(p); };
        auto put = store->put(result_uri, *out, po);
        if (!put && put.code() == Errc::stale_epoch) {
            // A newer owner wrote it (we were evicted or fenced): not ours. Its owner word or
            // fence shows it, since it took the partition before it wrote.
            if (!membership->owns(m.partition)) return Outcome::lost;
            // Still ours: the stored result carries a token from outside this registration (the
            // fence floor keeps every later registration above it).
            uint64_t stored = 0;
            if (auto h = store->head(result_uri); h && h->has_value()) stored = (*h)->fence_token;
            if (auto noted = mq::note_fence_token(*pool, stored); !noted) {
                *failure = {"stored fence token " + std::to_string(stored) +
                                " is at or above 2^61 (beyond what any group fences above; not noted): result put " +
                                result_uri.to_string() + " refused above this member's token " + std::to_string(token) +
                                "; remove the result or write it without that token (" + noted.error().message + ")",
                            true};
                return Outcome::failed;
            }
            *failure = {"result put " + result_uri.to_string() + " refused: the stored result is fenced at token " +
                            std::to_string(stored) + ", above this member's " + std::to_string(token) +
                            ", by a writer outside group '" + cfg.group +
                            "' (another group writing the same result bucket, or a result kept from a pool whose "
                            "clock ran ahead); give each group its own result bucket, or remove the result, or "
                            "re-register the group (fabric-shm group rm) so its tokens start above it",
                        true};
            return Outcome::failed;
        }
        if (!put) {
            if (is_fatal(put.code())) return std::move(put).error();
            *failure = {"result put " + result_uri.to_string() + ": " + put.error().message,
                        router->policy().is_permanent(put.code())};
            return Outcome::failed;
        }
        FABRIC_PAUSE_POINT("worker.result.after_put");
        result_version = *put;
        ++stats.processed;
        stats.bytes_in += view.bytes().size();
        stats.bytes_out += out->size();
        const uint64_t put_ts = parse_u64(m.header(kHeaderPutTime), 0);
        const uint64_t now_wall = wall_now_ns();
        if (put_ts != 0 && now_wall >= put_ts) {
            latency.record(now_wall - put_ts);
            recorder.record(now_wall - put_ts);
        }
    }
    // Forward (also after a skip: a crash may have come between the put and the forward; the
    // next stage skips duplicates by version). At-least-once.
    if (next) {
        const uint64_t put_ts = parse_u64(m.header(kHeaderPutTime), 0);
        const std::string_view origin_hdr = m.header(kHeaderOriginTime);
        const std::string rv = std::to_string(result_version), ts = std::to_string(wall_now_ns()),
                          origin = origin_hdr.empty() ? std::to_string(put_ts) : std::string(origin_hdr);
        const MessageHeader headers[] = {{kHeaderVersion, rv}, {kHeaderPutTime, ts}, {kHeaderOriginTime, origin}};
        const std::string ru = result_uri.to_string();
        auto sent = m.key.empty() ? next->send(bytes_of(ru), headers) : next->send_keyed(m.key, bytes_of(ru), headers);
        if (!sent) return std::move(sent).error();
        ++stats.forwarded;
    }
    return Outcome::done;
}

// The DLQ protocol (docs/groups.md): begin counts the hand-out in the pool (so a message that
// killed earlier workers is dead-lettered here without running again), ack on success, nack
// -> backoff and retry in place, or the DLQ after max attempts; permanent failures go to the
// DLQ at once. Dead letters are fenced (dead_letter above); a message an earlier owner decided
// to dead-letter (and maybe did not send) is dead-lettered, never processed.
Result<Outcome> WorkerLoop::Impl::handle(const Message& m) {
    auto uri = FabricUri::parse(m.value_str());
    if (!uri) return dead_letter(m, 1, "invalid notification: " + uri.error().message);
    auto result_key = result_key_for(cfg.result_key, *uri);
    if (!result_key) return dead_letter(m, 1, "no result key: " + result_key.error().message);
    auto result_uri = FabricUri::make(pool->name(), cfg.result_bucket, *result_key);
    if (!result_uri) return dead_letter(m, 1, "no result URI: " + result_uri.error().message);
    if (router->decided(m)) {
        if (delayed.partition == m.partition && delayed.offset == m.offset) {
            const DelayedDeadLetter d = delayed;  // our own decision, its send delayed
            return dead_letter(m, d.attempts, d.reason);
        }
        return dead_letter(m, 1, "an earlier owner decided to dead-letter it and stopped before confirming the send");
    }
    for (;;) {
        auto a = router->begin(m);
        if (!a) return refused(a.error(), "hand-out");
        if (*a > cfg.max_attempts)
            return dead_letter(m, *a - 1,
                               "handed out " + std::to_string(*a - 1) +
                                   " times without an ack (the worker crashed or was presumed dead)");
        Failure failure;
        auto r = attempt_once(m, *uri, *result_uri, uint32_t(*a), &failure);
        if (!r) return std::move(r).error();
        if (*r == Outcome::done) {
            FABRIC_TRY(router->ack(m));
            return Outcome::done;
        }
        if (*r != Outcome::failed) return *r;
        ++stats.failed_attempts;
        FABRIC_PAUSE_POINT("worker.dead_letter.deciding");
        if (failure.permanent) return dead_letter(m, *a, failure.reason);
        note("attempt " + std::to_string(*a) + "/" + std::to_string(cfg.max_attempts) + " for " + uri->to_string() +
             " failed: " + failure.reason);
        Duration wait{0};
        auto dead = router->nack(m, failure.reason, &wait);  // dead-letters (fenced) after the last attempt
        if (!dead) {
            if (dead.code() == Errc::busy) delayed = {m.partition, m.offset, *a, failure.reason};
            return refused(dead.error(), "dead letter");
        }
        if (*dead) {
            FABRIC_TRY(note_dead_letter());
            note("dead-lettered " + uri->to_string() + " to '" + router->dlq_topic() + "' after " +
                 std::to_string(*a) + " attempts: " + failure.reason);
            return Outcome::done;
        }
        auto b = backoff(to_ns(wait));
        if (!b) return std::move(b).error();
        if (*b != Outcome::done) return *b;
    }
}

void WorkerLoop::Impl::leave() {
    if (left) return;
    left = true;
    if (membership) membership->leave();
}

Result<WorkerLoop> WorkerLoop::open(Pool& pool, const WorkerConfig& config, Processor processor) {
    FABRIC_TRY(validate_name("topic", config.topic));
    FABRIC_TRY(validate_name("group", config.group));
    FABRIC_TRY(validate_name("bucket", config.result_bucket));
    FABRIC_TRY(validate_result_key_template(config.result_key));
    if (!config.next_topic.empty()) FABRIC_TRY(validate_name("topic", config.next_topic));
    if (!config.dlq_topic.empty()) FABRIC_TRY(validate_name("topic", config.dlq_topic));
    if (config.max_attempts == 0)
        return make_error(Errc::invalid_argument, "max attempts 0: at least 1 attempt is needed");
    if (config.batch == 0) return make_error(Errc::invalid_argument, "batch 0: at least 1 message per poll");
    if (!processor) return make_error(Errc::invalid_argument, "no processor given");

    auto impl = std::make_unique<Impl>();
    impl->pool_handle = pool;
    impl->pool = &impl->pool_handle;
    impl->cfg = config;
    if (impl->cfg.member_id.empty()) impl->cfg.member_id = default_member_id();
    FABRIC_TRY(validate_name("member id", impl->cfg.member_id));
    impl->processor = std::move(processor);
    impl->stats.latency = {};

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
    if (!config.next_topic.empty()) {
        FABRIC_TRY(ensure_topic(pool, config.next_topic, config.partitions_if_created));
        auto p = Producer::open(pool, config.next_topic);
        if (!p) return std::move(p).error();
        impl->next.emplace(std::move(p.value()));
        FABRIC_TRY(impl->register_topic_leases(config.next_topic));
    }

    ConsumerOptions co;
    co.group.ttl = ns_duration(std::max<uint64_t>(60 * kNsPerSec, 2 * config.session_timeout_ns));
    auto c = Consumer::open(pool, config.topic, config.group, co);
    if (!c) return std::move(c).error();
    impl->consumer.emplace(std::move(c.value()));
    impl->pending.assign(impl->consumer->num_partitions(), UINT64_MAX);

    DlqPolicy dp;
    dp.max_attempts = config.max_attempts;
    dp.initial_backoff = ns_duration(config.backoff_initial_ns);
    dp.max_backoff = ns_duration(config.backoff_max_ns);
    dp.dlq_topic = config.dlq_topic;
    auto router = DlqRouter::open(pool, config.topic, config.group, dp);
    if (!router) return std::move(router).error();
    impl->router.emplace(std::move(router.value()));

    auto membership = worker::make_membership(pool, config.topic, config.group, impl->cfg.member_id,
                                              impl->consumer->num_partitions(), config.session_timeout_ns);
    if (!membership) return std::move(membership).error();
    impl->membership = std::move(membership.value());
    FABRIC_TRY(impl->membership->join());
    // After joining (our row is LIVE): record the bucket, refuse one another group writes.
    if (Status st = mq::claim_result_bucket(pool, config.topic, config.group, impl->cfg.member_id, config.result_bucket,
                                            config.shared_results);
        !st) {
        impl->leave();
        return std::move(st).error();
    }
    if (Status st = impl->apply_assignment(); !st) {
        impl->leave();
        return std::move(st).error();
    }
    return WorkerLoop(std::move(impl));
}

WorkerLoop::WorkerLoop(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerLoop::WorkerLoop(WorkerLoop&&) noexcept = default;
WorkerLoop& WorkerLoop::operator=(WorkerLoop&&) noexcept = default;
WorkerLoop::~WorkerLoop() {
    if (impl_) impl_->leave();
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

Result<WorkerExit> WorkerLoop::run(const std::function<bool()>& should_stop) {
    Impl& im = *impl_;
    im.should_stop = should_stop;
    MessageBatch batch;
    uint64_t last_message_ns = mono_now_ns();
    WorkerExit why = WorkerExit::stopped;
    auto fail = [&](Error e) -> Result<WorkerExit> {
        bool lost = false;
        (void)im.commit_pending(&lost);  // best effort: what was done stays done
        im.leave();
        return im.fatal(std::move(e));
    };
    // After a batch ended early: our epoch is stale (rejoin, restart from the committed
    // offsets) or the rest waits (rewind to the first unhandled message).
    auto recover = [&](bool lost) -> Status {
        if (!lost) return im.rewind();
        ++im.stats.rebalances;
        auto c = im.membership->rebalance(mono_now_ns());
        if (!c) {
            if (c.code() == Errc::busy) return im.rewind();  // the assignment is re-read next round
            return std::move(c).error();
        }
        return im.apply_assignment();
    };
    for (;;) {
        if (should_stop && should_stop()) break;
        if (im.cfg.count != 0 && im.handled >= im.cfg.count) {
            why = WorkerExit::count_reached;
            break;
        }
        // stale_epoch: evicted while descheduled past the session timeout (our partitions moved,
        // our epoch is fenced); not fatal: rebalance() below joins again.
        if (Status st = im.keep_alive(); !st && st.code() != Errc::stale_epoch) return fail(std::move(st).error());
        if (im.any_pending()) {  // a commit delayed by a paused lock holder: finish it first
            bool lost = false;
            if (Status st = im.commit_pending(&lost); !st) return fail(std::move(st).error());
            if (lost) {
                if (Status st = recover(true); !st) return fail(std::move(st).error());
            } else if (im.any_pending()) {
                sleep_ns(kBusyRetryNs);
                continue;
            }
        }
        auto changed = im.membership->rebalance(mono_now_ns());  // nothing is uncommitted here
        if (!changed) {
            if (changed.code() != Errc::busy) return fail(std::move(changed).error());
            im.note("rebalance delayed: " + changed.error().message);
            sleep_ns(kBusyRetryNs);
            continue;
        }
        if (*changed) {
            ++im.stats.rebalances;
            if (Status st = im.apply_assignment(); !st) return fail(std::move(st).error());
        }
        size_t max = im.cfg.batch;
        if (im.cfg.count != 0) max = size_t(std::min<uint64_t>(max, im.cfg.count - im.handled));
        auto n = im.consumer->poll(batch, max, ns_duration(kPollTimeoutNs));
        if (!n) return fail(std::move(n).error());
        if (batch.lost() != 0)
            im.note("lost " + std::to_string(batch.lost()) + " notification(s) to overwriting (topic too small)");
        if (*n == 0) {
            if (im.cfg.exit_when_idle_ns != 0 && mono_now_ns() - last_message_ns >= im.cfg.exit_when_idle_ns) {
                why = WorkerExit::idle;
                break;
            }
            continue;
        }
        last_message_ns = mono_now_ns();
        bool lost = false, unfinished = false;
        for (const Message& m : batch) {
            if (should_stop && should_stop()) {  // the rest is redelivered (not committed)
                unfinished = true;
                break;
            }
            auto r = im.handle(m);
            if (!r) return fail(std::move(r).error());
            if (*r != Outcome::done) {
                // Not handled: neither this message nor the rest of the batch may be committed
                // past, and the position must come back to it before the next poll.
                lost = *r == Outcome::lost;
                unfinished = true;
                if (*r == Outcome::deferred) sleep_ns(kBusyRetryNs);
                break;
            }
            im.pending[m.partition] = m.offset + 1;
            ++im.handled;
        }
        if (Status st = im.commit_pending(&lost); !st) return fail(std::move(st).error());
        if (lost || unfinished)
            if (Status st = recover(lost); !st) return fail(std::move(st).error());
        last_message_ns = mono_now_ns();
    }
    bool lost = false;
    if (Status st = im.commit_pending(&lost); !st) return fail(std::move(st).error());
    im.leave();
    return why;
}

}  // namespace fabric_shm
