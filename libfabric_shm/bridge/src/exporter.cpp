// SPDX-License-Identifier: MIT
// Exporter: local topic -> JetStream stream. One round = one poll of the local group: every
// message becomes a frame (with the object it names), published asynchronously under a
// message id derived from (pool incarnation, topic incarnation, partition, offset); the round
// commits the local offsets only when the stream acknowledged every message of it. A round
// that does not complete (cluster down, stream full, no quorum) is published again, whole,
// after a backoff: the server drops the copies it already holds (same message ids), so a
// retry, a crash and restart, or a rebalance to another exporter never doubles a message
// within the duplicate window.
#include <time.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "crash_point.h"
#include "fabric_shm/names.h"
#include "fabric_shm/object_store.h"
#include "fabric_shm/uri.h"
#include "fabric_shm/worker_loop.h"
#include "fabric_shm_bridge/bridge.h"
#include "bridge_common.h"
#include "local_host.h"
#include "nats_link.h"

namespace fabric_shm::bridge {

namespace {

constexpr uint64_t kPollTimeoutNs = 50 * kNsPerMs;
constexpr uint64_t kWaitSliceNs = 20 * kNsPerMs;

/// A read of a local object that failed for a reason that passes (every pin record in use, the
/// object overwritten again and again while pinning): try again later.
bool read_passes(Errc c) { return c == Errc::capacity_exceeded || c == Errc::busy || c == Errc::timeout; }

/// One stream message of a round: a frame, a chunk manifest, or a chunk.
struct Outgoing {
    std::string id;        ///< Nats-Msg-Id
    std::string subject;
    std::vector<uint8_t> payload;
    bool chunk = false;    ///< published (and acknowledged) before the manifests
    bool carries_object = false;  ///< a frame (or its manifest) with the object's bytes: counted once stored
    // Set by the ack handler (NATS thread) under Exporter::Impl::mutex.
    int state = 0;         ///< 0 pending, 1 stored, 2 duplicate, 3 refused
    uint64_t seq = 0;      ///< the stream sequence it was stored at (state 1)
    std::string error;
    jsErrCode error_code = jsErrCode(0);
};

}  // namespace

struct Exporter::Impl {
    ExportConfig cfg;
    std::string stream;
    std::string member;
    std::function<void(std::string_view)> log;
    std::unique_ptr<LocalHost> local;
    std::optional<GroupConsumer> gc;
    std::unique_ptr<NatsLink> nats;
    bool stream_ready = false;
    BridgeStats stats;
    MessageBatch batch;
    // Reused across rounds so that the steady state allocates little: the outgoing messages
    // (their payload buffers keep their capacity), the frame's header and metadata lists, and
    // the message subject of each partition.
    std::vector<std::unique_ptr<Outgoing>> spare;
    FrameView scratch;
    std::vector<std::string> subjects;
    RateMeter rate;
    LinkCounters link_seen;
    uint64_t next_lag_ns = 0;
    uint64_t handled = 0;
    uint64_t chunk_limit = 0;  ///< frames above this go as chunks
    bool left = false;

    // Round bookkeeping shared with the ack handler.
    std::mutex mutex;
    /// The client hands the published message back to the ack handler: the pointer identifies it
    /// (no header parsing per ack). Entries live from just before a publish to its ack, or to the
    /// end of the round (a late ack of an abandoned round then finds nothing).
    std::unordered_map<const natsMsg*, Outgoing*> by_msg;  ///< guarded by mutex

    void note(const std::string& line) const {
        if (log) log(line);
    }
    RepeatFilter error_log{5 * kNsPerSec};  ///< a repeated error (every retry) logged at most every 5 s
    RepeatFilter delay_log{5 * kNsPerSec};  ///< a poll delayed by a held group lock, likewise
    std::function<bool()> stop;  ///< run()'s should_stop: waits that may last (a pool's recovery) end on it
    void record_error(const std::string& text) {
        stats.last_error = text;
        ++stats.errors;
        if (local && local->is_open()) local->status().error(text, wall_now_ns());
        if (error_log.should_log(text, mono_now_ns())) note("error: " + text);
    }
    Status open_local();
    Status join_local_group();
    Status recover_local(const Error& why);
    Status keep_alive();
    void update_status(uint64_t now);
    Status ensure_stream();
    Result<bool> build(const Message& m, std::vector<std::unique_ptr<Outgoing>>& out);
    std::unique_ptr<Outgoing> take_outgoing();
    const std::string& subject_of(uint32_t partition);
    ObjectIdentity identity_of(const ObjectInfo& info);
    enum class Round { done, interrupted, lost };
    Result<Round> publish_round(const std::function<bool()>& stop);
    Status send(std::vector<std::unique_ptr<Outgoing>>& msgs, bool chunks, uint64_t* sent);
    void delete_abandoned_chunks(const std::vector<std::unique_ptr<Outgoing>>& msgs);
    void leave();
    static void on_ack(jsCtx* js, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure);
};

void Exporter::Impl::on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<Impl*>(closure);
    {
        std::lock_guard<std::mutex> lock(self->mutex);
        auto it = self->by_msg.find(msg);
        if (it != self->by_msg.end()) {  // absent: an ack for an abandoned round (its retry is deduplicated)
            Outgoing& o = *it->second;
            if (pa) {
                o.state = pa->Duplicate ? 2 : 1;
                o.seq = pa->Sequence;
            } else {
                o.state = 3;
                o.error_code = pae ? pae->ErrCode : jsErrCode(0);
                o.error = pae && pae->ErrText ? pae->ErrText : "publish failed";
            }
            self->by_msg.erase(it);
        }
    }
    natsMsg_Destroy(msg);
}

Status Exporter::Impl::open_local() {
    FABRIC_TRY(local->open());
    FABRIC_TRY(join_local_group());
    left = false;
    local->status().stream_config(nats && stream_ready ? nats->stream_replicas() : 0, nats && nats->stream_memory());
    local->status().set(StatusGauge::stream_ready, stream_ready ? 1 : 0);
    return {};
}

// The topic (created when missing) and this exporter's member of the group, on the open pool.
// A join refused as busy (a paused process holds the group's lock past this member's wait, a
// quarter of its session) holds nothing (GroupConsumer::open left): tried again for up to
// 10 s, heartbeating, so that another member's short pause does not end the exporter.
Status Exporter::Impl::join_local_group() {
    TopicConfig tc;
    tc.num_partitions = cfg.local.partitions_if_created;
    FABRIC_TRY(local->ensure_topic(cfg.topic, tc));
    GroupConsumerOptions go;
    go.group.session_timeout = ns_duration(cfg.session_timeout_ns);
    go.group.registration.ttl = ns_duration(std::max<uint64_t>(60 * kNsPerSec, 2 * cfg.session_timeout_ns));
    go.consumer.group.ttl = go.group.registration.ttl;
    go.consumer.wait = WaitMode::park;
    const uint64_t busy_deadline = mono_now_ns() + 10 * kNsPerSec;
    auto g = GroupConsumer::open(local->pool(), cfg.topic, cfg.group, member, go);
    while (!g && g.code() == Errc::busy && mono_now_ns() < busy_deadline && !(stop && stop())) {
        FABRIC_TRY(local->tick(mono_now_ns()));  // the process's heartbeat and leases meanwhile
        timespec ts{0, long(10 * kNsPerMs)};
        nanosleep(&ts, nullptr);
        g = GroupConsumer::open(local->pool(), cfg.topic, cfg.group, member, go);
    }
    if (!g) return std::move(g).error();
    gc.emplace(std::move(g.value()));
    return {};
}

// The pool vanished or expired: every handle is dead. Open it again (re-created when gone);
// what the old pool held and had not been acknowledged by the stream is lost with it (the
// local guarantee); what the stream acknowledged is safe.
Status Exporter::Impl::recover_local(const Error& why) {
    record_error("local pool lost (" + why.message + "); opening it again");
    gc.reset();
    const uint64_t recoveries = local->recoveries();
    for (uint64_t backoff = 100 * kNsPerMs;; backoff = std::min<uint64_t>(backoff * 2, 5 * kNsPerSec)) {
        local->close();
        Status st = local->reopen();
        if (st) st = join_local_group();
        if (st) break;
        if (!pool_lost(st.code()) && st.code() != Errc::already_exists && st.code() != Errc::busy) return st;
        gc.reset();
        // A pool that cannot be opened again for now (its name held by a removal, /dev/shm
        // full) must not keep a SIGTERM waiting: nothing is held that a successor would miss.
        if (stop && stop()) return st;
        timespec ts{time_t(backoff / kNsPerSec), long(backoff % kNsPerSec)};
        nanosleep(&ts, nullptr);
    }
    stats.pool_recoveries += local->recoveries() - recoveries;
    local->status().add(StatusCounter::pool_recoveries, local->recoveries() - recoveries);
    local->status().set(StatusGauge::stream_ready, stream_ready ? 1 : 0);
    if (stream_ready) local->status().stream_config(nats->stream_replicas(), nats->stream_memory());
    note("pool '" + local->pool_name() + "' opened again");
    return {};
}

void Exporter::Impl::update_status(uint64_t now) {
    if (!local->is_open()) return;
    StatusWriter& st = local->status();
    st.heartbeat(wall_now_ns());
    copy_link_state(*nats, st, link_seen, stats);
    if (std::string e = nats->take_async_error(); !e.empty()) record_error(e);
    if (now >= next_lag_ns) {
        next_lag_ns = now + 250 * kNsPerMs;
        uint64_t lag = 0;
        if (auto d = describe_consumer_group(local->pool(), cfg.topic, cfg.group); d)
            for (const auto& p : d->partitions) lag += p.lag;
        stats.lag = lag;
        st.set(StatusGauge::lag, lag);
        rate.update(now, stats.messages, stats.bytes, st);
    }
}

// Renews leases, heartbeats the group, refreshes the status. A lost pool is recovered here.
Status Exporter::Impl::keep_alive() {
    const uint64_t now = mono_now_ns();
    Status st = local->tick(now);
    if (st && gc) {
        st = gc->heartbeat();
        // Evicted while we waited, or a rejoin refused before it took a row (not a member of
        // this handle now): join again. A group removed meanwhile says not_found again.
        if (!st && (st.code() == Errc::stale_epoch || st.code() == Errc::not_found)) st = gc->rejoin();
        // busy: a paused process holds the group lock; stale_epoch: evicted again inside the
        // rejoin (we paused there). Either way the handle holds nothing stale now: the next
        // keep-alive or poll joins again.
        if (!st && (st.code() == Errc::busy || st.code() == Errc::stale_epoch)) st = {};
    }
    if (!st) {
        if (pool_lost(st.code())) return recover_local(st.error());
        return st;
    }
    update_status(now);
    return {};
}

Status Exporter::Impl::ensure_stream() {
    if (stream_ready) return {};
    if (!nats->connected()) return make_error(Errc::timeout, "not connected to the NATS cluster");
    std::string note_text;
    FABRIC_TRY(nats->ensure_stream(stream, cfg.stream_settings, &note_text));
    if (!note_text.empty()) note(note_text);
    stream_ready = true;
    local->status().stream_config(nats->stream_replicas(), nats->stream_memory());
    local->status().set(StatusGauge::stream_ready, 1);
    const int64_t max_payload = nats->max_payload();
    chunk_limit = cfg.chunk_bytes;
    if (max_payload > 0) chunk_limit = std::min<uint64_t>(chunk_limit, uint64_t(max_payload) - 4096);
    note("publishing to stream '" + stream + "' (" + (nats->stream_memory() ? "memory" : "file") + ", " +
         std::to_string(nats->stream_replicas()) + " replicas) on " + nats->connected_url());
    return {};
}

// Identity of an object's content across hosts (see frame.h): an object that came over a
// bridge keeps its origin's identity; a result whose input came over a bridge is "the result
// of" that origin input; anything else is new content of this pool.
ObjectIdentity Exporter::Impl::identity_of(const ObjectInfo& info) {
    if (auto it = info.metadata.find(std::string(kBridgeMetadataKey)); it != info.metadata.end())
        if (auto id = parse_bridge_metadata(it->second).identity; id.kind != IdentityKind::none) return id;
    auto in_uri = info.metadata.find("input-uri");
    auto in_version = info.metadata.find("input-version");
    if (in_uri != info.metadata.end() && in_version != info.metadata.end()) {
        auto uri = FabricUri::parse(in_uri->second);
        const uint64_t want = parse_u64(in_version->second);
        if (uri && uri->pool() == local->pool().name() && want != 0) {
            if (auto head = local->store().head(*uri); head && head->has_value() && (*head)->version == want) {
                const auto& meta = (*head)->metadata;
                if (auto it = meta.find(std::string(kBridgeMetadataKey)); it != meta.end()) {
                    ObjectIdentity origin = parse_bridge_metadata(it->second).identity;
                    if (origin.kind == IdentityKind::source) return {IdentityKind::result, origin.pool_incarnation, origin.version};
                }
            }
        }
    }
    return {IdentityKind::source, local->pool().incarnation(), info.version};
}

std::unique_ptr<Outgoing> Exporter::Impl::take_outgoing() {
    if (spare.empty()) return std::make_unique<Outgoing>();
    std::unique_ptr<Outgoing> o = std::move(spare.back());
    spare.pop_back();
    o->payload.clear();
    o->chunk = false;
    o->carries_object = false;
    o->state = 0;
    o->seq = 0;
    o->error.clear();
    o->error_code = jsErrCode(0);
    return o;
}

const std::string& Exporter::Impl::subject_of(uint32_t partition) {
    while (subjects.size() <= partition) subjects.push_back(message_subject(stream, uint32_t(subjects.size())));
    return subjects[partition];
}

// Builds the stream messages of one local message. false: not sent (it came from this stream:
// sending it back would loop), commit past it.
Result<bool> Exporter::Impl::build(const Message& m, std::vector<std::unique_ptr<Outgoing>>& out) {
    if (m.header(kHeaderBridgeStream) == stream) return false;
    Pool& pool = local->pool();
    FrameView& f = scratch;
    f.headers.clear();
    f.metadata.clear();
    f.has_object = f.object_missing = false;
    f.bucket = f.object_key = f.content_type = {};
    f.object_version = f.expires_wall_ns = 0;
    f.object_crc = 0;
    f.identity = {};
    f.object_data = {};
    f.source_pool_incarnation = pool.incarnation();
    f.source_pool = pool.name();
    f.topic = cfg.topic;
    f.topic_incarnation = gc->consumer().incarnation();
    f.partition = m.partition;
    f.offset = m.offset;
    f.timestamp_ns = m.timestamp_ns;
    f.key = m.key;
    f.value = m.value;
    for (size_t i = 0; i < m.header_count(); ++i) {
        const MessageHeader h = m.header_at(i);
        f.headers.push_back({h.name, h.value});
    }
    std::optional<PinnedView> pinned;
    std::vector<std::pair<std::string, std::string>> meta_copy;
    auto uri = FabricUri::parse(m.value_str());  // outlives the frame's views of its bucket and key
    if (uri && uri->pool() == pool.name()) {
        f.bucket = uri->bucket();
        f.object_key = uri->key();
        auto p = local->store().pin(*uri);
        if (!p) {
            // A full pin table, or an object overwritten while pinning, passes: the round waits
            // for it (publish_round) rather than sending the message without its object, which
            // the importer's workers would dead-letter as missing once the offset is committed.
            if (pool_lost(p.code()) || read_passes(p.code())) return std::move(p).error();
            record_error("read " + uri->to_string() + ": " + p.error().message + " (sent without its object)");
            f.object_missing = true;
        } else if (!p->has_value()) {
            f.object_missing = true;  // removed before export: the importer's workers dead-letter it, as here
        } else if (Status v = (*p)->verify(); !v) {
            record_error(v.error().message + " (sent without its object)");
            f.object_missing = true;
        } else {
            pinned.emplace(std::move(**p));
            const ObjectInfo& info = pinned->info();
            f.has_object = true;
            f.object_version = info.version;
            f.expires_wall_ns = info.expires_wall_ns;
            f.object_crc = info.crc32;
            f.content_type = info.content_type;
            f.identity = identity_of(info);
            for (const auto& [k, v] : info.metadata) f.metadata.emplace_back(k, v);
            f.object_data = pinned->bytes();
        }
    }
    auto o = take_outgoing();
    o->id = message_id(f.source_pool_incarnation, f.topic_incarnation, f.partition, f.offset);
    o->subject = subject_of(m.partition);
    FABRIC_TRY(encode_frame(f, o->payload));
    pinned.reset();  // the bytes are in the frame: unpin before the network round trip
    o->carries_object = f.has_object;  // counted when the round is stored: a round may be built again
    if (o->payload.size() > chunk_limit) {
        // Side channel: the frame in chunks on their own subjects, then a manifest as the message.
        const uint64_t total = o->payload.size();
        ChunkManifest man;
        man.frame_bytes = total;
        man.chunk_bytes = uint32_t(chunk_limit);
        man.chunks = uint32_t((total + chunk_limit - 1) / chunk_limit);
        man.frame_crc = crc32(o->payload.data(), total);
        // Chunks named after their cut: the server keeps the first message of an id, so a
        // chunk stored by an earlier cut of this message (a larger chunk size before a
        // refusal, or another exporter's) must not stand in for this cut's chunk.
        man.flags = kManifestChunksByContent;
        const std::string set = chunk_set_name(o->id, man);
        for (uint32_t i = 0; i < man.chunks; ++i) {
            auto c = take_outgoing();
            c->id = set + ".c" + std::to_string(i);
            c->subject = chunk_subject(stream, set, i);
            const uint64_t from = uint64_t(i) * chunk_limit, to = std::min<uint64_t>(total, from + chunk_limit);
            c->payload.assign(o->payload.begin() + long(from), o->payload.begin() + long(to));
            c->chunk = true;
            out.push_back(std::move(c));
        }
        o->payload = encode_manifest(man);
    }
    out.push_back(std::move(o));
    return true;
}

// Publishes the not-yet-stored messages of one kind (chunks or frames) and waits for their
// acks up to the publish timeout.
Status Exporter::Impl::send(std::vector<std::unique_ptr<Outgoing>>& msgs, bool chunks, uint64_t* sent) {
    *sent = 0;
    for (auto& o : msgs) {
        if (o->chunk != chunks) continue;
        {
            std::lock_guard<std::mutex> lock(mutex);
            if (o->state == 1 || o->state == 2) continue;
            o->state = 0;
            o->error.clear();
        }
        natsMsg* raw = nullptr;
        natsStatus s = natsMsg_Create(&raw, o->subject.c_str(), nullptr, reinterpret_cast<const char*>(o->payload.data()),
                                      int(o->payload.size()));
        if (s != NATS_OK) return nats_error(s, "message");
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = o->id.c_str();  // the client sets Nats-Msg-Id from it
        // No Nats-Expected-Stream: the subjects are the stream's own ("fabric.<stream>."), and one
        // header less is less for the server to parse per message.
        {
            std::lock_guard<std::mutex> lock(mutex);  // before the publish: its ack may come at once
            by_msg[raw] = o.get();
        }
        natsMsg* m = raw;
        s = js_PublishMsgAsync(nats->js(), &m, &po);
        if (s != NATS_OK) {  // not taken: the library gave it back (m still set)
            {
                std::lock_guard<std::mutex> lock(mutex);
                by_msg.erase(raw);
            }
            natsMsg_Destroy(m);
            return nats_error(s, "publish to stream '" + stream + "'");
        }
        ++*sent;
    }
    if (*sent == 0) return {};
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = int64_t(std::max<uint64_t>(1, cfg.publish_timeout_ns / kNsPerMs));
    natsStatus s = js_PublishAsyncComplete(nats->js(), &po);
    if (s != NATS_OK) {
        // Take back what is still unacknowledged (a late ack is dropped: the retry is deduplicated).
        natsMsgList pending{};
        if (js_PublishAsyncGetPendingList(&pending, nats->js()) == NATS_OK) natsMsgList_Destroy(&pending);
        return nats_error(s, "waiting for the stream's acknowledgements");
    }
    return {};
}

Result<Exporter::Impl::Round> Exporter::Impl::publish_round(const std::function<bool()>& stop) {
    std::vector<std::unique_ptr<Outgoing>> msgs;
    uint64_t skipped = 0, frame_bytes = 0, frames = 0;
    if (chunk_limit == 0) chunk_limit = cfg.chunk_bytes;
    for (uint64_t backoff = cfg.retry_initial_ns;;) {
        Status round_built;  // ok, or the error of the message whose build failed
        for (const Message& m : batch) {
            auto built = build(m, msgs);
            if (!built) {
                round_built = std::move(built).error();
                break;
            }
            if (!*built) ++skipped;
        }
        if (round_built) break;
        if (!read_passes(round_built.code())) return std::move(round_built).error();
        // An object could not be read for now: build the whole round again after a backoff
        // (nothing of it was published), heart-beating the group meanwhile.
        record_error(round_built.error().message + " (the round waits for it)");
        for (auto& o : msgs)
            if (spare.size() < 4096) spare.push_back(std::move(o));
        msgs.clear();
        skipped = 0;
        ++stats.retries;
        local->status().add(StatusCounter::retries);
        const uint64_t recoveries = local->recoveries();
        FABRIC_TRY(sleep_keeping_alive(backoff, [this] { return keep_alive(); }, stop));
        // A pool opened again while we waited: the batch's messages were in the old mapping.
        if (!gc || local->recoveries() != recoveries) return Round::lost;
        if (stop && stop()) return Round::interrupted;
        backoff = std::min(backoff * 2, cfg.retry_max_ns);
    }
    uint64_t objects = 0;
    for (const auto& o : msgs) {
        frame_bytes += o->payload.size();
        if (!o->chunk) ++frames;
        if (o->carries_object) ++objects;
    }
    {
        std::lock_guard<std::mutex> lock(mutex);
        by_msg.clear();
    }
    struct Forget {  // late acks of this round find nothing once it is over; the slots are reused
        Impl* self;
        std::vector<std::unique_ptr<Outgoing>>& msgs;
        ~Forget() {
            {
                std::lock_guard<std::mutex> lock(self->mutex);
                self->by_msg.clear();
            }
            for (auto& o : msgs)
                if (self->spare.size() < 4096) self->spare.push_back(std::move(o));
        }
    } forget{this, msgs};

    uint64_t backoff = cfg.retry_initial_ns;
    // Whether the chunks this round stored may be deleted if it is cut again: not once a manifest
    // or frame was handed to the client (a manifest whose ack never came may be stored, and
    // name them), nor once the stream was found deleted (a sequence of the old stream could
    // name another message in a new one; delete_abandoned_chunks also compares the stream's
    // creation time, as a publish into a deleted stream may get no answer at all).
    bool may_delete_stored_chunks = true;
    for (uint32_t attempt = 0;; ++attempt) {
        if (stop && stop()) return Round::interrupted;
        if (attempt > 0) {
            ++stats.retries;
            local->status().add(StatusCounter::retries);
            FABRIC_TRY(sleep_keeping_alive(backoff, [this] { return keep_alive(); }, stop));
            if (!gc) return Round::lost;  // the pool was re-created while we waited: this round's offsets are gone
            backoff = std::min(backoff * 2, cfg.retry_max_ns);
            if (stop && stop()) return Round::interrupted;
        }
        FABRIC_TRY(keep_alive());
        if (!gc) return Round::lost;
        if (!nats->connected()) {
            local->status().set(StatusGauge::in_flight, frames);
            continue;  // the client reconnects in the background; lag grows meanwhile
        }
        if (Status st = ensure_stream(); !st) {
            record_error(st.error().message);
            if (st.code() == Errc::invalid_argument) return std::move(st).error();
            continue;
        }
        local->status().set(StatusGauge::in_flight, frames);
        uint64_t sent = 0;
        Status st = send(msgs, true, &sent);
        bool chunks_ok = st.ok();
        if (chunks_ok) {
            std::lock_guard<std::mutex> lock(mutex);
            for (auto& o : msgs)
                if (o->chunk && o->state != 1 && o->state != 2) chunks_ok = false;
        }
        if (chunks_ok) {
            may_delete_stored_chunks = false;
            st = send(msgs, false, &sent);  // manifests only after every chunk is stored
        }
        bool all = st.ok() && chunks_ok;
        std::string refused;
        jsErrCode code = jsErrCode(0);
        uint64_t dups = 0;
        {
            std::lock_guard<std::mutex> lock(mutex);
            for (auto& o : msgs) {
                if (o->state == 2 && !o->chunk) ++dups;
                if (o->state == 1 || o->state == 2) continue;
                all = false;
                if (o->state == 3 && refused.empty()) {
                    refused = o->error;
                    code = o->error_code;
                }
            }
        }
        if (all) {
            stats.duplicates += dups;
            local->status().add(StatusCounter::duplicates, dups);
            stats.messages += frames;
            stats.objects += objects;
            stats.chunks += msgs.size() - frames;
            stats.bytes += frame_bytes;
            stats.skipped_loops += skipped;
            local->status().add(StatusCounter::messages, frames);
            local->status().add(StatusCounter::bytes, frame_bytes);
            local->status().add(StatusCounter::chunks, msgs.size() - frames);
            local->status().set(StatusGauge::in_flight, 0);
            local->status().set(StatusGauge::last_activity_wall_ns, wall_now_ns());
            return Round::done;
        }
        if (code == JSStreamNotFoundErr) {  // deleted under us: create it again
            may_delete_stored_chunks = false;
            stream_ready = false;
            local->status().set(StatusGauge::stream_ready, 0);
        }
        if (code == JSStreamMessageExceedsMaximumErr && chunk_limit > 4096) {
            // The stream takes smaller messages than we thought: rebuild in smaller chunks. The
            // chunks this cut stored no manifest will ever name: delete them.
            if (may_delete_stored_chunks) delete_abandoned_chunks(msgs);
            chunk_limit /= 2;
            return publish_round(stop);
        }
        record_error(!refused.empty() ? "stream '" + stream + "' refused a message: " + refused +
                                            (code ? " [JetStream error " + std::to_string(int(code)) + "]" : "")
                                      : st ? "stream acknowledgements incomplete" : st.error().message);
    }
}

// A round cut again in smaller chunks names its chunks anew (the chunk size is in the set's
// name), so a chunk the abandoned cut stored is referenced by no manifest: in a work-queue
// stream nothing would ever remove it (the importer deletes the chunks of the manifests it
// acks), and in a limits stream it would take room until it aged out. Called only while the
// round may (publish_round's may_delete_stored_chunks). Deleted are the chunks this cut stored
// itself, not duplicates (the id's first copy may be another cut's, of a manifest already
// stored). Best effort, at
// most a second in all (the group is not heart-beaten meanwhile): a chunk whose ack came late,
// or one the server could not be asked about in time, stays (logged).
void Exporter::Impl::delete_abandoned_chunks(const std::vector<std::unique_ptr<Outgoing>>& msgs) {
    std::vector<uint64_t> seqs;
    {
        std::lock_guard<std::mutex> lock(mutex);
        for (const auto& o : msgs)
            if (o->chunk && o->state == 1) seqs.push_back(o->seq);
    }
    if (seqs.empty()) return;
    const uint64_t end = mono_now_ns() + kNsPerSec;
    // The sequences are the stream's as this exporter last made sure of it: in a stream
    // deleted and created again since (a publish into a deleted stream is answered by nobody,
    // so the round may not have noticed), they would name other messages.
    {
        int64_t created = 0;
        jsErrCode jerr = jsErrCode(0);
        const natsStatus s = nats->read_stream_created(stream, 500, &created, &jerr);
        if (s != NATS_OK || created != nats->stream_created()) {
            record_error(std::to_string(seqs.size()) + " chunk(s) of a cut the stream refused were left in stream '" +
                         stream + "' (" +
                         (s == NATS_OK ? std::string("it was created again since they were stored")
                                       : nats_error(s, "stream info", jerr).message) +
                         ")");
            return;
        }
    }
    jsOptions o;
    jsOptions_Init(&o);
    uint64_t deleted = 0, asked = 0;
    for (uint64_t seq : seqs) {
        const uint64_t now = mono_now_ns();
        if (now >= end) break;
        o.Wait = int64_t(std::max<uint64_t>(1, (end - now) / kNsPerMs));
        jsErrCode jerr = jsErrCode(0);
        const natsStatus s = js_DeleteMsg(nats->js(), stream.c_str(), seq, &o, &jerr);
        const bool gone = s != NATS_OK && message_already_gone(s, jerr);
        if (s != NATS_OK && !gone && jerr == 0) break;  // the server did not answer: the rest would wait too
        ++asked;
        if (s == NATS_OK) ++deleted;
        else if (!gone) record_error(nats_error(s, "delete chunk " + std::to_string(seq) + " of an abandoned cut", jerr).message);
    }
    if (deleted > 0) note("deleted " + std::to_string(deleted) + " chunk(s) stored by the cut the stream refused");
    if (asked < seqs.size())
        record_error(std::to_string(seqs.size() - asked) + " chunk(s) of a cut the stream refused were left in stream '" +
                     stream + "' (the server did not answer within a second)");
}

void Exporter::Impl::leave() {
    if (left) return;
    left = true;
    if (gc) (void)gc->leave();
}

std::string_view bridge_exit_name(BridgeExit e) noexcept {
    switch (e) {
        case BridgeExit::stopped: return "stopped";
        case BridgeExit::count_reached: return "count_reached";
        case BridgeExit::idle: return "idle";
    }
    return "?";
}

Result<Exporter> Exporter::open(const ExportConfig& config) {
    FABRIC_TRY(validate_name("topic", config.topic));
    FABRIC_TRY(validate_name("group", config.group));
    if (config.batch == 0) return make_error(Errc::invalid_argument, "batch 0: at least 1 message per round");
    if (config.chunk_bytes < 4096)
        return make_error(Errc::invalid_argument, "chunk size " + std::to_string(config.chunk_bytes) + " is below 4096 bytes");
    if (config.stream_settings.replicas < 1 || config.stream_settings.replicas > 5)
        return make_error(Errc::invalid_argument, "replicas " + std::to_string(config.stream_settings.replicas) +
                                                      ": JetStream streams have 1 to 5");
    auto impl = std::make_unique<Impl>();
    impl->cfg = config;
    impl->stream = config.stream.empty() ? stream_name_for_topic(config.topic) : config.stream;
    FABRIC_TRY(validate_stream_name("stream", impl->stream));
    impl->member = config.local.member_id.empty() ? default_member_id() : config.local.member_id;
    FABRIC_TRY(validate_name("member id", impl->member));
    if (impl->member.size() > kMaxMemberIdLength)
        return make_error(Errc::invalid_argument, "member id '" + impl->member + "' is longer than " +
                                                      std::to_string(kMaxMemberIdLength) + " bytes");
    StatusIdentity id;
    id.role = Role::exporter;
    id.member = impl->member;
    id.topic = config.topic;
    id.group = config.group;
    id.stream = impl->stream;
    id.servers = join_servers(config.nats.servers);
    impl->local = std::make_unique<LocalHost>(config.local, id);
    FABRIC_TRY(impl->open_local());
    auto link = NatsLink::open(config.nats);
    if (!link) return std::move(link).error();
    impl->nats = std::move(link.value());
    impl->nats->set_ack_handler(&Impl::on_ack, impl.get());
    return Exporter(std::move(impl));
}

Exporter::Exporter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Exporter::Exporter(Exporter&&) noexcept = default;
Exporter& Exporter::operator=(Exporter&&) noexcept = default;
Exporter::~Exporter() {
    if (!impl_) return;
    impl_->leave();
    if (impl_->nats) impl_->nats->set_ack_handler(nullptr, nullptr);
    impl_->nats.reset();  // closes the connection (waits for its last callback)
    if (impl_->local && impl_->local->is_open()) impl_->local->status().connection(ConnectionState::closed, wall_now_ns());
}

const BridgeStats& Exporter::stats() const { return impl_->stats; }
const std::string& Exporter::member_id() const { return impl_->member; }
void Exporter::set_log(std::function<void(std::string_view)> log) {
    impl_->log = std::move(log);
    impl_->note("joined group '" + impl_->cfg.group + "' on topic '" + impl_->cfg.topic + "' of pool '" +
                impl_->local->pool_name() + "'; exporting to stream '" + impl_->stream + "'");
}

Result<BridgeExit> Exporter::run(const std::function<bool()>& should_stop) {
    Impl& im = *impl_;
    im.stop = should_stop;
    uint64_t last_message_ns = mono_now_ns();
    uint64_t backoff = im.cfg.retry_initial_ns;
    for (;;) {
        if (should_stop && should_stop()) break;
        if (im.cfg.count != 0 && im.handled >= im.cfg.count) {
            im.leave();
            return BridgeExit::count_reached;
        }
        if (Status st = im.keep_alive(); !st) {
            im.leave();
            return std::move(st).error();
        }
        if (!im.gc) continue;
        // Connect and set up the stream before taking messages: while the cluster is away the
        // local topic holds them (producers see back-pressure when it fills), nothing is dropped.
        if (!im.stream_ready) {
            Status st = im.nats->connected() ? im.ensure_stream() : make_error(Errc::timeout, "");
            if (!st) {
                if (st.code() == Errc::invalid_argument) return std::move(st).error();
                if (!st.error().message.empty()) im.record_error(st.error().message);
                if (Status s2 = sleep_keeping_alive(backoff, [&] { return im.keep_alive(); }, should_stop); !s2)
                    return std::move(s2).error();
                backoff = std::min(backoff * 2, im.cfg.retry_max_ns);
                continue;
            }
            backoff = im.cfg.retry_initial_ns;
        }
        size_t max = im.cfg.batch;
        if (im.cfg.count != 0) max = size_t(std::min<uint64_t>(max, im.cfg.count - im.handled));
        auto n = im.gc->poll(im.batch, max, ns_duration(kPollTimeoutNs));
        if (!n) {
            // Evicted: join again (a group removed meanwhile says not_found there, and ends us).
            if (n.code() == Errc::stale_epoch) {
                // busy (a paused process holds the group lock), or evicted again inside the
                // rejoin: the next poll's claim joins again.
                if (Status st = im.gc->rejoin();
                    !st && !pool_lost(st.code()) && st.code() != Errc::busy && st.code() != Errc::stale_epoch)
                    return std::move(st).error();
                continue;
            }
            if (pool_lost(n.code())) {
                if (Status st = im.recover_local(n.error()); !st) return std::move(st).error();
                continue;
            }
            if (n.code() == Errc::busy) {
                // The poll's claim (a join, or the fence of a partition it takes) waited its
                // bound for the group's lock, held by a paused process: poll again (the loop
                // keeps us alive between), as a commit refused so waits for the next round.
                if (im.delay_log.should_log(n.error().message, mono_now_ns()))
                    im.note("poll delayed: " + n.error().message);
                continue;
            }
            im.leave();
            return std::move(n).error();
        }
        if (*n == 0) {
            if (im.cfg.exit_when_idle_ns != 0 && mono_now_ns() - last_message_ns >= im.cfg.exit_when_idle_ns) {
                im.leave();
                return BridgeExit::idle;
            }
            continue;
        }
        auto round = im.publish_round(should_stop);
        if (!round) {
            if (pool_lost(round.code())) {
                if (Status st = im.recover_local(round.error()); !st) return std::move(st).error();
                continue;
            }
            im.leave();
            return std::move(round).error();
        }
        if (*round == Impl::Round::interrupted) break;  // not committed: the next exporter sends them again (deduplicated)
        if (*round == Impl::Round::lost) continue;
        FABRIC_CRASH_POINT("bridge.export.after_ack");  // stored by the stream, not committed: a restart re-publishes (deduplicated)
        Status c = im.gc->commit();
        if (!c) {
            if (c.code() == Errc::stale_epoch) {
                im.note("commit refused (partitions moved to another exporter): " + c.error().message);
            } else if (c.code() == Errc::busy) {
                // The group's lock is held by a stopped process: the next round's commit covers
                // these offsets too (the stream deduplicates what a successor re-publishes).
                im.note("commit delayed: " + c.error().message);
            } else if (pool_lost(c.code())) {
                if (Status st = im.recover_local(c.error()); !st) return std::move(st).error();
                continue;
            } else {
                im.leave();
                return std::move(c).error();
            }
        } else {
            im.stats.acked += *n;
            im.local->status().add(StatusCounter::acked, *n);
        }
        im.handled += *n;
        last_message_ns = mono_now_ns();
    }
    im.leave();
    return BridgeExit::stopped;
}

}  // namespace fabric_shm::bridge
