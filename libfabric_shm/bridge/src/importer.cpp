// SPDX-License-Identifier: MIT
// Importer: JetStream durable pull consumer -> local store + topic. For each stream message:
// decode and verify the frame (reassembling chunks), put the object into the local store
// unless an object with the same identity is there already, always send the notification,
// and ack the stream message only once every waited-for local group has committed past the
// notification (extending the ack deadline meanwhile). A full topic or store holds the
// message (back-pressure); a corrupt or unstorable one is dead-lettered locally with its
// reason and terminated on the stream. If the local pool is lost, every unacknowledged
// message is handed back to the stream (nak) and the pool is rebuilt.
#include <time.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <utility>
#include <optional>
#include <span>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer_group.h"
#include "crash_point.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/names.h"
#include "fabric_shm/object_store.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/uri.h"
#include "fabric_shm/worker_loop.h"
#include "fabric_shm_bridge/bridge.h"
#include "bridge_common.h"
#include "local_host.h"
#include "nats_link.h"

namespace fabric_shm::bridge {

namespace {

constexpr uint64_t kCommitCheckNs = 20 * kNsPerMs;  ///< describe() reads every partition and group: not per message
constexpr uint64_t kIdleFetchMs = 100;  ///< long poll when nothing waits for an ack
constexpr uint64_t kBusyFetchMs = 10;   ///< while acks wait for local commits
constexpr uint64_t kChunkRetryDeliveries = 5;
/// Chunks of acked messages waiting for the ack floor: beyond this many (a floor held by a
/// message that stays unacked for long, at a high rate), the oldest messages' are given up.
constexpr size_t kMaxAckedChunkSeqs = size_t(1) << 20;
/// How long the ack floor must stay past a manifest before its chunks go: a consumer leader
/// reports its floor before the replicas have the ack, and one that fails meanwhile leaves a
/// successor that may deliver the message again. Longer than a leader election.
constexpr uint64_t kFloorSettleNs = 5 * kNsPerSec;
/// Deletes act on a judgement at most this old.
constexpr uint64_t kJudgementFreshNs = 1500 * kNsPerMs;
/// A full topic answers back_pressure after 50 ms instead of the library's 5 s: the importer's
/// own wait loop then keeps acking, extending deadlines and heartbeating while it waits.
ProducerOptions send_options() {
    ProducerOptions o;
    o.block_timeout = std::chrono::milliseconds(50);
    return o;
}

/// A stream message put and notified locally, waiting for its ack.
struct InFlight {
    natsMsg* msg = nullptr;       ///< owned
    uint32_t partition = 0;
    uint64_t offset = 0;
    uint64_t extended_ns = 0;     ///< last ack-deadline extension (monotonic)
    uint64_t stream_seq = 0;      ///< its sequence in the stream
    std::vector<uint64_t> chunk_seqs;
};

/// A chunked message this importer acked: its chunks are deleted once the durable's ack floor
/// has stayed past its manifest for kFloorSettleNs (every message up to the floor is acked, so
/// it is never delivered again), never before (a lost ack brings the manifest back, and its
/// redelivery needs them).
struct AckedChunks {
    uint64_t manifest_seq = 0;
    std::vector<uint64_t> chunk_seqs;
    size_t deleted = 0;            ///< chunk_seqs[0, deleted) are done
    uint32_t refusals = 0;         ///< of chunk_seqs[deleted], by a JetStream error
    int64_t stream_created = 0;    ///< the stream's creation time: a stream created again numbers other messages
    uint64_t floor_past_ns = 0;    ///< monotonic: since when every read floor was past the manifest (0: not)
    bool acked = false;            ///< the floor stayed past it for kFloorSettleNs
};

std::span<const uint8_t> payload_of(natsMsg* m) {
    return {reinterpret_cast<const uint8_t*>(natsMsg_GetData(m)), size_t(natsMsg_GetDataLength(m))};
}

std::span<const uint8_t> bytes_of(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

/// The outcome of delivering one message locally.
enum class Delivery { delivered, permanent, wait, pool_lost };

/// Delivery count, stream sequence and pending count from a JetStream message's ack subject,
/// without the allocations of natsMsg_GetMetaData (once per message): "$JS.ACK.<stream>.
/// <consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>", or the longer form with
/// domain and account hash first. false for anything else (the caller falls back).
bool parse_ack_subject(const char* reply, uint64_t* delivered, uint64_t* seq, uint64_t* pending) {
    if (!reply) return false;
    std::string_view r(reply);
    if (r.rfind("$JS.ACK.", 0) != 0) return false;
    std::string_view tokens[16];
    size_t n = 0;
    for (size_t start = 0; n < 16;) {
        const size_t dot = r.find('.', start);
        tokens[n++] = r.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    size_t first;  // index of <delivered>
    if (n == 9) first = 4;
    else if (n == 11 || n == 12) first = 6;
    else return false;
    auto num = [](std::string_view t, uint64_t* v) {
        auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), *v);
        return ec == std::errc() && p == t.data() + t.size();
    };
    return num(tokens[first], delivered) && num(tokens[first + 1], seq) && num(tokens[first + 4], pending);
}

/// One pull request; the messages are appended to *out (owned by the caller).
natsStatus pull(natsSubscription* sub, int batch, bool no_wait, int64_t timeout_ms, std::vector<natsMsg*>* out) {
    jsFetchRequest req;
    jsFetchRequest_Init(&req);
    req.Batch = batch;
    req.NoWait = no_wait;
    req.Expires = timeout_ms * 1'000'000;
    natsMsgList list{};
    const natsStatus s = natsSubscription_FetchRequest(&list, sub, &req);
    for (int i = 0; s == NATS_OK && i < list.Count; ++i) out->push_back(std::exchange(list.Msgs[i], nullptr));
    natsMsgList_Destroy(&list);
    return s;
}

/// Up to `batch` messages, returning as soon as some arrived and the consumer has no more for
/// now. natsSubscription_Fetch waits for the whole batch (or the timeout) once the stream is
/// empty, which adds the timeout to every message at low rates. A "no wait" pull request with
/// an expiry is a one-shot on the server (2.9): it waits up to the expiry for the first message
/// and ends as soon as the consumer has nothing more pending. NATS_TIMEOUT when none came.
///
/// libnats 3.4.1 (Debian 12) overflows its message array in a fetch that starts with messages
/// already queued on the subscription (late deliveries for an earlier request whose client-side
/// wait ran out) when they are more than half the batch (fixed upstream in 3.9.0, "heap buffer
/// overflow in _fetch"). So those are taken first, one per request (a batch of 1 cannot
/// overflow), and the batch request starts from an empty queue. At most `batch` of them per
/// call: each one-message request may bring one more, and taking them all would hold far more
/// than --batch and --max-in-flight allow; the rest wait for the next call.
natsStatus fetch(natsSubscription* sub, int batch, int64_t timeout_ms, std::vector<natsMsg*>* out) {
    for (int queued = 0, rounds = 0; rounds < 4096 && out->size() < size_t(std::max(batch, 1)); ++rounds) {
        if (natsSubscription_GetPending(sub, &queued, nullptr) != NATS_OK || queued <= 0) break;
        (void)pull(sub, 1, true, 100, out);
    }
    if (!out->empty()) return NATS_OK;
    natsStatus s = pull(sub, batch, true, timeout_ms, out);
    if (s == NATS_NOT_FOUND) s = NATS_TIMEOUT;  // "no messages"
    return out->empty() && s == NATS_OK ? NATS_TIMEOUT : (out->empty() ? s : NATS_OK);
}

}  // namespace

struct Importer::Impl {
    ImportConfig cfg;
    std::string member;
    std::function<void(std::string_view)> log;
    std::unique_ptr<LocalHost> local;
    std::optional<Producer> producer;
    std::optional<Producer> dlq_producer;
    std::string dlq_topic;
    TopicConfig topic_config;
    std::unique_ptr<NatsLink> nats;
    natsSubscription* sub = nullptr;
    std::vector<InFlight> in_flight;
    /// The messages of the current fetch behind the one being handled (owned by run()): a
    /// message that waits for room in the topic holds them too, so their deadlines are
    /// extended with the in-flight ones'.
    std::span<natsMsg* const> fetched_rest;
    uint64_t fetched_extended_ns = 0;
    std::vector<MessageHeader> header_scratch;  ///< a notification's headers (reused: no allocation per message)
    BridgeStats stats;
    RateMeter rate;
    LinkCounters link_seen;
    uint64_t next_commit_check_ns = 0, next_lag_ns = 0, handled = 0;
    RepeatFilter error_log{5 * kNsPerSec};  ///< a repeated error (every retry) logged at most every 5 s
    bool warned_no_group = false;
    /// The chunked messages acked in a work-queue stream whose chunks are still to delete, oldest
    /// first: judged with the lag, every second (judge_acked_chunks), deleted from service()
    /// (delete_chunks). At most kMaxAckedChunkSeqs chunks in all; the oldest beyond are given
    /// up (logged).
    std::deque<AckedChunks> acked_chunks;
    size_t acked_chunk_seqs = 0;  ///< chunk sequences its entries hold (deleted ones too, until the entry goes)
    uint64_t next_delete_pass_ns = 0, delete_backoff_ns = 0, messages_given_up = 0;
    /// The last judgement: when (monotonic; 0: none yet) and of which stream incarnation.
    /// Deletes act on it only while it is fresh.
    uint64_t judged_ns = 0;
    int64_t judged_stream_created = 0;
    /// The durable or its stream is gone, or the stream is newer than the subscription (read
    /// with the lag): the loop subscribes again, which creates them. A pull from a deleted
    /// durable fails with an error ("Consumer Deleted") that names no lost consumer.
    bool consumer_lost = false;
    void judge_acked_chunks(const jsConsumerInfo& ci, uint64_t now);
    void give_up_chunks(size_t entries, const std::string& why);
    void drop_done_chunks();
    /// A chunk call could not reach the server: logged, and the next pass waits longer.
    void back_off_chunk_calls(natsStatus s, jsErrCode jerr, const std::string& what);
    std::function<bool()> stop;

    void note(const std::string& line) const {
        if (log) log(line);
    }
    void record_error(const std::string& text) {
        stats.last_error = text;
        ++stats.errors;
        if (local && local->is_open()) local->status().error(text, wall_now_ns());
        if (error_log.should_log(text, mono_now_ns())) note("error: " + text);
    }
    Status open_local();
    Status recover_local(const Error& why);
    Status subscribe();
    void unsubscribe();
    Status keep_alive();
    void service(uint64_t now);
    void ack_committed(uint64_t now);
    void settle(InFlight& f);
    void delete_chunks(uint64_t now);
    void extend_deadlines(uint64_t now, natsMsg* current);
    Status handle(natsMsg* msg);
    Result<std::vector<uint8_t>> assemble(natsMsg* msg, const ChunkManifest& m, uint64_t delivered, const char* id,
                                          std::vector<uint64_t>* seqs, bool* retry_later);
    Delivery deliver(const FrameView& f, std::string_view msg_id, bool* stored, uint32_t* partition, uint64_t* offset,
                     std::string* why);
    Result<uint64_t> put_object(const FabricUri& uri, const FrameView& f, std::string_view msg_id, bool* reused);
    Status dead_letter(natsMsg* msg, uint64_t delivered, uint64_t seq, const char* id, const std::string& reason);
    void nak_all();
    bool reuse_existing(const std::map<std::string, std::string>& existing, const ObjectIdentity& incoming) const;
};

Status Importer::Impl::open_local() {
    FABRIC_TRY(local->open());
    FABRIC_TRY(local->ensure_topic(cfg.topic, topic_config));
    auto d = TopicManager(local->pool()).describe(cfg.topic);
    if (!d) return std::move(d).error();
    topic_config = d->config;  // an existing topic keeps its own shape
    auto p = Producer::open(local->pool(), cfg.topic, send_options());
    if (!p) return std::move(p).error();
    producer.emplace(std::move(p.value()));
    dlq_producer.reset();
    return {};
}

void Importer::Impl::nak_all() {
    for (InFlight& f : in_flight) {
        (void)natsMsg_Nak(f.msg, nullptr);  // best effort: an unacked message is redelivered after ack_wait anyway
        natsMsg_Destroy(f.msg);
    }
    in_flight.clear();
    local->status().set(StatusGauge::in_flight, 0);
}

Status Importer::Impl::recover_local(const Error& why) {
    record_error("local pool lost (" + why.message + "); handing " + std::to_string(in_flight.size()) +
                 " unacknowledged message(s) back to the stream and opening the pool again");
    nak_all();
    producer.reset();
    dlq_producer.reset();
    const uint64_t before = local->recoveries();
    for (uint64_t backoff = 100 * kNsPerMs;; backoff = std::min<uint64_t>(backoff * 2, 5 * kNsPerSec)) {
        local->close();
        Status st = local->reopen();
        if (st) {
            auto p = Producer::open(local->pool(), cfg.topic, send_options());
            if (p) producer.emplace(std::move(p.value()));
            else st = std::move(p).error();
        }
        if (st) break;
        if (!pool_lost(st.code()) && st.code() != Errc::already_exists && st.code() != Errc::busy &&
            st.code() != Errc::not_found)
            return st;
        if (stop && stop()) return st;
        timespec ts{time_t(backoff / kNsPerSec), long(backoff % kNsPerSec)};
        nanosleep(&ts, nullptr);
    }
    stats.pool_recoveries += local->recoveries() - before;
    local->status().add(StatusCounter::pool_recoveries, local->recoveries() - before);
    if (sub) local->status().set(StatusGauge::stream_ready, 1);
    note("pool '" + local->pool_name() + "' opened again; the stream redelivers what it was not acked for");
    return {};
}

Status Importer::Impl::subscribe() {
    if (sub) return {};
    if (!nats->connected()) return make_error(Errc::timeout, "not connected to the NATS cluster");
    std::string note_text;
    FABRIC_TRY(nats->ensure_stream(cfg.stream, cfg.stream_settings, &note_text));
    if (!note_text.empty()) note(note_text);
    local->status().stream_config(nats->stream_replicas(), nats->stream_memory());
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = cfg.stream.c_str();
    so.Config.Durable = cfg.durable.c_str();
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = int64_t(cfg.ack_wait_ns);
    so.Config.MaxDeliver = cfg.max_deliver;
    so.Config.MaxAckPending = cfg.max_ack_pending;
    so.Config.DeliverPolicy = js_DeliverAll;
    jsErrCode jerr = jsErrCode(0);
    const std::string filter = message_filter(cfg.stream);
    natsStatus s = js_PullSubscribe(&sub, nats->js(), filter.c_str(), cfg.durable.c_str(), nullptr, &so, &jerr);
    if (s != NATS_OK) {
        sub = nullptr;
        Error e = nats_error(s, "durable consumer '" + cfg.durable + "' on stream '" + cfg.stream + "'", jerr);
        // The consumer's configuration is refused: retrying cannot help.
        if (jerr >= JSConsumerPushMaxWaitingErr && jerr <= JSConsumerWQConsumerNotUniqueErr) {
            e.code = Errc::invalid_argument;
            if (jerr == JSConsumerWQConsumerNotUniqueErr || jerr == JSConsumerWQMultipleUnfilteredErr)
                e.message += "; a work-queue stream takes one durable: give every importer the same --durable, or "
                             "create the stream with --retention limits for several";
        }
        return e;
    }
    local->status().set(StatusGauge::stream_ready, 1);
    note("consuming stream '" + cfg.stream + "' (" + (nats->stream_memory() ? "memory" : "file") + ", " +
         std::to_string(nats->stream_replicas()) + " replicas) as durable '" + cfg.durable + "' on " +
         nats->connected_url());
    return {};
}

void Importer::Impl::unsubscribe() {
    judged_ns = 0;  // the next stream may be another one: deletes wait for a judgement of it
    if (!sub) return;
    // A kept message points at its subscription (the client acks through it): settle them
    // before it goes. They are handed back; a redelivery finds their objects.
    nak_all();
    natsSubscription_Destroy(sub);  // the durable consumer stays on the server
    sub = nullptr;
    if (local && local->is_open()) local->status().set(StatusGauge::stream_ready, 0);
}

Status Importer::Impl::keep_alive() {
    const uint64_t now = mono_now_ns();
    if (Status st = local->tick(now); !st) {
        if (pool_lost(st.code())) return recover_local(st.error());
        return st;
    }
    service(now);
    return {};
}

// Acks what the local groups committed, extends deadlines, refreshes the status.
void Importer::Impl::service(uint64_t now) {
    ack_committed(now);
    delete_chunks(now);
    extend_deadlines(now, nullptr);
    StatusWriter& st = local->status();
    st.heartbeat(wall_now_ns());
    copy_link_state(*nats, st, link_seen, stats);
    if (std::string e = nats->take_async_error(); !e.empty()) record_error(e);
    st.set(StatusGauge::in_flight, in_flight.size());
    if (now >= next_lag_ns) {
        next_lag_ns = now + kNsPerSec;
        if (sub && nats->connected()) {
            jsConsumerInfo* ci = nullptr;
            jsOptions jo;
            jsOptions_Init(&jo);
            jo.Wait = 500;
            jsErrCode jerr = jsErrCode(0);
            if (natsSubscription_GetConsumerInfo(&ci, sub, &jo, &jerr) == NATS_OK && ci) {
                stats.lag = ci->NumPending;
                st.set(StatusGauge::lag, ci->NumPending);
                if (!acked_chunks.empty()) judge_acked_chunks(*ci, mono_now_ns());  // the floor's time, not the pass's
            } else if (jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr) {
                consumer_lost = true;
            }
            jsConsumerInfo_Destroy(ci);
        }
        rate.update(now, stats.messages, stats.bytes, st);
    }
}

void Importer::Impl::settle(InFlight& f) {
    natsStatus s = natsMsg_Ack(f.msg, nullptr);
    if (s != NATS_OK) {
        // Not sent (connection closed): the stream redelivers it after the ack wait, and the
        // redelivery finds the object (same identity) and re-sends a notification the workers
        // skip. Its chunks stay for that redelivery (whose ack queues them).
        record_error(nats_error(s, "ack").message);
    } else {
        ++stats.acked;
        local->status().add(StatusCounter::acked);
        if (nats->stream_work_queue() && !f.chunk_seqs.empty()) {
            size_t oldest = 0;
            while (oldest < acked_chunks.size() && acked_chunk_seqs + f.chunk_seqs.size() > kMaxAckedChunkSeqs)
                acked_chunk_seqs -= acked_chunks[oldest++].chunk_seqs.size();
            if (oldest > 0) {
                acked_chunks.erase(acked_chunks.begin(), acked_chunks.begin() + long(oldest));
                give_up_chunks(oldest, "more than " + std::to_string(kMaxAckedChunkSeqs) +
                                           " chunks waited for the durable's ack floor");
            }
            acked_chunk_seqs += f.chunk_seqs.size();
            acked_chunks.push_back({f.stream_seq, std::move(f.chunk_seqs), 0, 0, nats->stream_created(), 0, false});
        }
    }
    natsMsg_Destroy(f.msg);
    f.msg = nullptr;
}

// The chunks of acked manifests. An ack is sent without waiting for the server (one round trip
// per message would slow the import), and a lost one brings the manifest back, whose
// redelivery needs the chunks: so they are deleted only once the durable's ack floor (read
// with the lag, every second) has passed the manifest and stayed past it for kFloorSettleNs.
// The stream's creation time is read after the floor: entries acked in a stream created again
// since (deleted and created under the same name) are given up, never applied to the new
// stream's sequences. (The durable's own creation time is no identity: a server reports
// another one after a restart.)
void Importer::Impl::judge_acked_chunks(const jsConsumerInfo& ci, uint64_t now) {
    int64_t created = 0;
    jsErrCode jerr = jsErrCode(0);
    if (nats->read_stream_created(cfg.stream, 500, &created, &jerr) != NATS_OK) {
        if (jerr == JSStreamNotFoundErr) consumer_lost = true;  // its entries go once another stream is judged
        return;  // judged again in a second
    }
    // The floor must stay past a manifest over reads a second apart: after a gap (reads that
    // failed, an election) it counts from this read again.
    const bool continuous = judged_ns != 0 && now - judged_ns <= kJudgementFreshNs;
    size_t other_stream = 0;
    for (AckedChunks& a : acked_chunks) {
        if (a.stream_created != created) {
            a.deleted = a.chunk_seqs.size();  // deleted with its stream
            ++other_stream;
        } else if (a.manifest_seq > ci.AckFloor.Stream) {
            a.floor_past_ns = 0;  // (a floor that went back: a new leader without the ack)
        } else if (a.floor_past_ns == 0 || !continuous) {
            a.floor_past_ns = now;
        } else if (now - a.floor_past_ns >= kFloorSettleNs) {
            a.acked = true;
        }
    }
    if (other_stream > 0)
        note("stream '" + cfg.stream + "' was deleted (and maybe created again) since " + std::to_string(other_stream) +
             " chunked message(s) were acked: their chunks went with it");
    // Subscribed to an older stream than this one (another importer made it again, and the
    // durable with it, so the durable's information still answers): subscribe again, so that
    // what is acked from now on is tagged with this stream.
    if (created != nats->stream_created()) consumer_lost = true;
    drop_done_chunks();
    judged_ns = now;
    judged_stream_created = created;
}

void Importer::Impl::give_up_chunks(size_t entries, const std::string& why) {
    if (entries == 0) return;
    const bool first = messages_given_up == 0;
    messages_given_up += entries;
    if (first || messages_given_up % 1024 < entries)
        record_error("the chunks of " + std::to_string(entries) + " acked message(s) are left in stream '" + cfg.stream +
                     "': " + why + " (" + std::to_string(messages_given_up) + " so far)");
}

void Importer::Impl::drop_done_chunks() {
    std::erase_if(acked_chunks, [this](const AckedChunks& a) {
        if (a.deleted < a.chunk_seqs.size()) return false;
        acked_chunk_seqs -= a.chunk_seqs.size();
        return true;
    });
}

// Deletes the chunks of the acked entries, from service(): a pass at most every 100 ms after the
// last one ended, with 50 ms of work, and only on a fresh judgement of the same stream; every
// call waits at most a second, and one the server does not answer ends the pass and delays the
// next (100 ms doubling to 10 s), so a server that stops answering holds the importer's loop
// (heartbeats, acks, SIGTERM) about a second at a time. A chunk already gone counts as
// deleted; one the server refuses five times is left (logged), so that it cannot hold up the
// others.
void Importer::Impl::delete_chunks(uint64_t now) {
    if (now < next_delete_pass_ns || !nats->connected() || judged_ns == 0 || now - judged_ns > kJudgementFreshNs ||
        judged_stream_created != nats->stream_created())
        return;
    auto due = [this](const AckedChunks& a) { return a.acked && a.stream_created == judged_stream_created; };
    if (std::none_of(acked_chunks.begin(), acked_chunks.end(), due)) return;
    const uint64_t pass_end = now + 50 * kNsPerMs;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = 1000;
    for (AckedChunks& a : acked_chunks) {
        if (mono_now_ns() >= pass_end) break;
        if (!due(a)) continue;
        while (a.deleted < a.chunk_seqs.size() && mono_now_ns() < pass_end) {
            const uint64_t seq = a.chunk_seqs[a.deleted];
            jsErrCode jerr = jsErrCode(0);
            const natsStatus s = js_DeleteMsg(nats->js(), cfg.stream.c_str(), seq, &o, &jerr);
            if (s == NATS_OK || message_already_gone(s, jerr)) {
                ++a.deleted;
                a.refusals = 0;
                continue;
            }
            const std::string what = "delete chunk " + std::to_string(seq) + " of an acked message";
            if (jerr != 0 && ++a.refusals >= 5) {
                record_error(nats_error(s, what + " (refused 5 times: left in the stream)", jerr).message);
                ++a.deleted;
                a.refusals = 0;
                continue;
            }
            back_off_chunk_calls(s, jerr, what);
            return;
        }
    }
    delete_backoff_ns = 0;
    next_delete_pass_ns = mono_now_ns() + 100 * kNsPerMs;
    drop_done_chunks();
}

void Importer::Impl::back_off_chunk_calls(natsStatus s, jsErrCode jerr, const std::string& what) {
    delete_backoff_ns = std::min<uint64_t>(delete_backoff_ns == 0 ? 100 * kNsPerMs : delete_backoff_ns * 2, 10 * kNsPerSec);
    next_delete_pass_ns = mono_now_ns() + delete_backoff_ns;
    record_error(nats_error(s, what, jerr).message);
    drop_done_chunks();
}

void Importer::Impl::ack_committed(uint64_t now) {
    if (in_flight.empty() || now < next_commit_check_ns) return;
    next_commit_check_ns = now + kCommitCheckNs;
    auto d = TopicManager(local->pool()).describe(cfg.topic);
    if (!d) return;  // a lost pool is noticed by tick(); nothing is acked meanwhile
    // A group named with --ack-group that is not registered (its workers have not started, or
    // its registration ran out) has committed nothing: acking on the others' commits alone
    // would leave it nothing to process should this pool be lost.
    for (const std::string& want : cfg.ack_groups) {
        const bool present = std::any_of(d->groups.begin(), d->groups.end(),
                                         [&](const GroupDescription& g) { return g.name == want && !g.expired; });
        if (present) continue;
        if (!warned_no_group) {
            warned_no_group = true;
            note("waiting for group '" + want + "' (--ack-group) to register on topic '" + cfg.topic +
                 "' and commit before acking the stream");
        }
        return;
    }
    std::vector<uint64_t> floor(d->config.num_partitions, UINT64_MAX);
    bool any = false;
    for (const GroupDescription& g : d->groups) {
        if (g.expired) continue;
        if (!cfg.ack_groups.empty() && std::find(cfg.ack_groups.begin(), cfg.ack_groups.end(), g.name) == cfg.ack_groups.end())
            continue;
        any = true;
        for (const GroupPartitionDescription& p : g.partitions)
            if (p.partition < floor.size()) floor[p.partition] = std::min(floor[p.partition], p.committed);
    }
    if (!any) {
        if (!warned_no_group) {
            warned_no_group = true;
            note("waiting for a consumer group on topic '" + cfg.topic + "' to commit before acking the stream (" +
                 (cfg.ack_groups.empty() ? std::string("none registered") : "none of the --ack-group groups") +
                 "); start one, or use --ack-after send");
        }
        return;
    }
    warned_no_group = false;
    size_t kept = 0;
    for (size_t i = 0; i < in_flight.size(); ++i) {
        InFlight& f = in_flight[i];
        if (f.partition < floor.size() && floor[f.partition] != UINT64_MAX && floor[f.partition] > f.offset) {
            settle(f);
            continue;
        }
        if (kept != i) in_flight[kept] = std::move(f);
        ++kept;
    }
    in_flight.resize(kept);
}

void Importer::Impl::extend_deadlines(uint64_t now, natsMsg* current) {
    const uint64_t every = std::max<uint64_t>(cfg.ack_wait_ns / 3, 100 * kNsPerMs);
    for (InFlight& f : in_flight)
        if (now - f.extended_ns >= every) {
            (void)natsMsg_InProgress(f.msg, nullptr);  // "still working": the deadline restarts
            f.extended_ns = now;
        }
    if (!fetched_rest.empty() && now - fetched_extended_ns >= every) {
        for (natsMsg* m : fetched_rest) (void)natsMsg_InProgress(m, nullptr);
        fetched_extended_ns = now;
    }
    (void)current;
}

bool Importer::Impl::reuse_existing(const std::map<std::string, std::string>& existing, const ObjectIdentity& in) const {
    if (auto it = existing.find(std::string(kBridgeMetadataKey)); it != existing.end()) {
        const ObjectIdentity have = parse_bridge_metadata(it->second).identity;
        if (have.kind == in.kind && have.pool_incarnation == in.pool_incarnation && have.version >= in.version) return true;
    }
    // On the host the input came from, a result is "current" when it records that input version
    // (also when a local worker wrote it): the same test a worker makes before processing.
    if (in.kind == IdentityKind::result && in.pool_incarnation == local->pool().incarnation())
        if (auto v = existing.find("input-version"); v != existing.end() && parse_u64(v->second) >= in.version)
            return true;
    return false;
}

Result<uint64_t> Importer::Impl::put_object(const FabricUri& uri, const FrameView& f, std::string_view msg_id, bool* reused) {
    ObjectIdentity id = f.identity;
    if (id.kind == IdentityKind::none) id = {IdentityKind::source, f.source_pool_incarnation, f.object_version};
    MemObjectStore& store = local->store();
    const std::string source_prefix = "fabric://" + std::string(f.source_pool) + "/";
    const std::string local_prefix = "fabric://" + local->pool().name() + "/";
    PutOptions po;
    po.content_type = std::string(f.content_type);
    size_t meta_bytes = 0;
    for (const auto& [k, v] : f.metadata) {
        if (k == kBridgeMetadataKey) continue;
        std::string value(v);
        if (value.rfind(source_prefix, 0) == 0) value = local_prefix + value.substr(source_prefix.size());
        meta_bytes += k.size() + value.size();
        po.metadata[std::string(k)] = std::move(value);
    }
    if (id.kind == IdentityKind::result && id.pool_incarnation == local->pool().incarnation())
        po.metadata["input-version"] = std::to_string(id.version);  // this host's own input version
    meta_bytes = 0;
    for (const auto& [k, v] : po.metadata) meta_bytes += k.size() + v.size();
    std::string bridge_value = format_bridge_metadata(id, msg_id);
    if (meta_bytes + kBridgeMetadataKey.size() + bridge_value.size() > kMaxMetadataBytes)
        bridge_value = format_bridge_metadata(id, "");  // the identity is what matters; drop the id
    if (meta_bytes + kBridgeMetadataKey.size() + bridge_value.size() > kMaxMetadataBytes)
        return make_error(Errc::invalid_argument, "object " + uri.to_string() + ": its metadata (" +
                                                      std::to_string(meta_bytes) + " bytes) and the bridge's identity do not fit the " +
                                                      std::to_string(kMaxMetadataBytes) + "-byte metadata limit");
    po.metadata[std::string(kBridgeMetadataKey)] = bridge_value;
    if (f.expires_wall_ns != 0) {
        const uint64_t now = wall_now_ns();
        po.ttl = ns_duration(f.expires_wall_ns > now ? f.expires_wall_ns - now : 1);
    }
    for (int attempt = 0; attempt < 16; ++attempt) {
        auto head = store.head(uri);
        if (!head) return std::move(head).error();
        if (head->has_value() && reuse_existing((*head)->metadata, id)) {
            *reused = true;
            return (*head)->version;
        }
        po.condition = head->has_value() ? PutCondition::if_version_equals : PutCondition::if_absent;
        po.expected_version = head->has_value() ? (*head)->version : 0;
        auto put = store.put(uri, f.object_data, po);
        if (put) {
            *reused = false;
            return *put;
        }
        if (put.code() != Errc::conflict) return std::move(put).error();
        // Another importer (or a local writer) changed the key meanwhile: decide again.
    }
    return make_error(Errc::busy, "object " + uri.to_string() + " keeps changing under the importer");
}

// *stored: this message's object was put by an earlier try of this delivery (a try that then
// waited for room in the topic): finding it now is not a duplicate. Set when a put stores it.
Delivery Importer::Impl::deliver(const FrameView& f, std::string_view msg_id, bool* stored, uint32_t* partition,
                                 uint64_t* offset, std::string* why) {
    Pool& pool = local->pool();
    std::string value(reinterpret_cast<const char*>(f.value.data()), f.value.size());
    std::string version_text;
    bool reused = false;
    if (f.has_object || f.object_missing) {
        const std::string bucket = cfg.bucket.empty() ? std::string(f.bucket) : cfg.bucket;
        auto uri = FabricUri::make(pool.name(), bucket, f.object_key);
        if (!uri) {
            *why = "object " + std::string(f.bucket) + "/" + std::string(f.object_key) + " has no local URI: " + uri.error().message;
            return Delivery::permanent;
        }
        value = uri->to_string();
        if (f.has_object) {
            auto v = put_object(*uri, f, msg_id, &reused);
            if (!v) {
                *why = "put " + uri->to_string() + ": " + v.error().message;
                if (pool_lost(v.code())) return Delivery::pool_lost;
                const Errc c = v.code();
                if (c == Errc::capacity_exceeded || c == Errc::no_space || c == Errc::busy || c == Errc::timeout ||
                    c == Errc::conflict)
                    return Delivery::wait;  // a full store is back-pressure
                return Delivery::permanent;  // object_too_large, invalid_argument, corrupt, ...
            }
            version_text = std::to_string(*v);
            FABRIC_CRASH_POINT("bridge.import.after_put");  // stored, not notified: the redelivery finds the object
            if (!reused) *stored = true;
        }
    } else if (const std::string prefix = "fabric://" + std::string(f.source_pool) + "/"; value.rfind(prefix, 0) == 0) {
        value = "fabric://" + pool.name() + "/" + value.substr(prefix.size());
    }
    std::vector<MessageHeader>& headers = header_scratch;
    headers.clear();
    for (const auto& h : f.headers) {
        if (h.name == kHeaderBridgeId || h.name == kHeaderBridgeStream) continue;
        if (h.name == kHeaderPlacement) continue;  // a block of the source host's store
        if (h.name == kHeaderVersion && (f.has_object || f.object_missing)) continue;  // the local version replaces it
        headers.push_back({h.name, h.value});
    }
    if (f.has_object) headers.push_back({kHeaderVersion, version_text});
    headers.push_back({kHeaderBridgeId, msg_id});
    headers.push_back({kHeaderBridgeStream, cfg.stream});
    auto sent = f.key.empty() ? producer->send(bytes_of(value), headers)
                              : producer->send_keyed(f.key, bytes_of(value), headers);
    if (!sent) {
        *why = "notify topic '" + cfg.topic + "': " + sent.error().message;
        if (pool_lost(sent.code())) return Delivery::pool_lost;
        if (sent.code() == Errc::back_pressure || sent.code() == Errc::skipped || sent.code() == Errc::timeout)
            return Delivery::wait;  // a full topic slows the import
        return Delivery::permanent;  // message_too_large and other properties of the message
    }
    *partition = sent->partition;
    *offset = sent->offset;
    // Counted once the message is delivered, not per try: a put that waited for the topic
    // finds its own object on the next try.
    if (f.has_object && *stored) {
        ++stats.objects;
        local->status().add(StatusCounter::objects);
    } else if (f.has_object) {
        ++stats.duplicates;
        local->status().add(StatusCounter::duplicates);
    }
    return Delivery::delivered;
}

Status Importer::Impl::dead_letter(natsMsg* msg, uint64_t delivered, uint64_t seq, const char* id, const std::string& reason) {
    if (!dlq_producer) {
        dlq_topic = cfg.dlq_topic.empty() ? cfg.topic + ".dlq" : cfg.dlq_topic;
        // The shape the workers' DlqRouter gives it: whichever creates it first, the workers'
        // largest letters fit.
        FABRIC_TRY(local->ensure_topic(dlq_topic, dead_letter_topic_config(topic_config)));
        auto p = Producer::open(local->pool(), dlq_topic, send_options());
        if (!p) return std::move(p).error();
        dlq_producer.emplace(std::move(p.value()));
    }
    const std::string value = "stream " + cfg.stream + " sequence " + std::to_string(seq) + " subject " +
                              (natsMsg_GetSubject(msg) ? natsMsg_GetSubject(msg) : "?");
    const std::string attempts = std::to_string(delivered), seq_text = std::to_string(seq);
    const std::string short_reason = reason.substr(0, 200);
    const MessageHeader headers[] = {{kDlqHeaderTopic, cfg.topic},         {kDlqHeaderGroup, cfg.durable},
                                     {kDlqHeaderAttempts, attempts},        {kDlqHeaderReason, short_reason},
                                     {"bridge.stream", cfg.stream},         {"bridge.sequence", seq_text},
                                     {"bridge.msg-id", id ? id : ""}};
    auto sent = dlq_producer->send(bytes_of(value), headers);
    if (!sent) return std::move(sent).error();
    (void)natsMsg_Term(msg, nullptr);  // never redelivered: it is in the local DLQ now
    ++stats.dead_lettered;
    ++handled;
    local->status().add(StatusCounter::dead_lettered);
    record_error("dead-lettered stream message " + seq_text + " to '" + dlq_topic + "': " + reason);
    return {};
}

Result<std::vector<uint8_t>> Importer::Impl::assemble(natsMsg*, const ChunkManifest& m, uint64_t delivered,
                                                      const char* id, std::vector<uint64_t>* seqs, bool* retry_later) {
    if (Status valid = validate_manifest_id(id ? id : ""); !valid) {
        *retry_later = false;  // no redelivery will change it
        return std::move(valid).error();
    }
    std::vector<uint8_t> frame;
    frame.reserve(m.frame_bytes);
    const std::string set = chunk_set_name(id, m);
    for (uint32_t i = 0; i < m.chunks; ++i) {
        natsMsg* chunk = nullptr;
        jsErrCode jerr = jsErrCode(0);
        const std::string subject = chunk_subject(cfg.stream, set, i);
        natsStatus s = js_GetLastMsg(&chunk, nats->js(), cfg.stream.c_str(), subject.c_str(), nullptr, &jerr);
        if (s != NATS_OK) {
            const bool missing = s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr;
            *retry_later = !missing || delivered < kChunkRetryDeliveries;
            return nats_error(s, "chunk " + std::to_string(i) + " of " + std::to_string(m.chunks) + " (" + subject + ")", jerr);
        }
        NatsMsgPtr holder(chunk);
        const auto bytes = payload_of(chunk);
        const uint64_t expect = std::min<uint64_t>(m.chunk_bytes, m.frame_bytes - frame.size());
        if (bytes.size() != expect)
            return make_error(Errc::corrupt, "chunk " + std::to_string(i) + " holds " + std::to_string(bytes.size()) +
                                                 " bytes, the manifest says " + std::to_string(expect));
        frame.insert(frame.end(), bytes.begin(), bytes.end());
        seqs->push_back(natsMsg_GetSequence(chunk));
    }
    if (crc32(frame.data(), frame.size()) != m.frame_crc)
        return make_error(Errc::corrupt, "reassembled frame of " + std::to_string(frame.size()) + " bytes does not match its CRC");
    return frame;
}

// One fetched message, start to finish (except the ack, which waits for the local commit).
Status Importer::Impl::handle(natsMsg* msg) {
    // A dead letter that cannot be sent (its topic full, the pool lost) is not a reason to stop:
    // the message goes back to the stream and comes again.
    auto to_dlq = [&](natsMsg* m, uint64_t delivered, uint64_t seq, const char* id, const std::string& reason) -> Status {
        Status st = dead_letter(m, delivered, seq, id, reason);
        if (st) return {};
        (void)natsMsg_NakWithDelay(m, 1000, nullptr);
        if (pool_lost(st.code())) return recover_local(st.error());
        record_error("dead letter for stream message " + std::to_string(seq) + " not sent (" + st.error().message +
                     "); it will be redelivered");
        return {};
    };
    NatsMsgPtr owner(msg);
    uint64_t seq = 0, delivered = 1, pending = 0;
    if (parse_ack_subject(natsMsg_GetReply(msg), &delivered, &seq, &pending)) {
        stats.lag = pending;
    } else if (jsMsgMetaData* meta = nullptr; natsMsg_GetMetaData(&meta, msg) == NATS_OK && meta) {
        seq = meta->Sequence.Stream;
        delivered = meta->NumDelivered;
        stats.lag = meta->NumPending;
        jsMsgMetaData_Destroy(meta);
    }
    if (delivered > 1) {
        ++stats.redeliveries;
        local->status().add(StatusCounter::redeliveries);
    }
    // The message id names the chunks and goes into the dead letter; parsing the headers for it
    // costs a hash table per message, so it is read only where needed (a manifest, a dead
    // letter) and derived from the frame otherwise (the exporter made it from the same fields).
    const char* id = nullptr;
    auto header_id = [&]() -> const char* {
        if (!id) (void)natsMsgHeader_Get(msg, "Nats-Msg-Id", &id);
        return id;
    };
    auto payload = payload_of(msg);
    std::vector<uint8_t> assembled;
    std::vector<uint64_t> chunk_seqs;
    auto manifest = decode_manifest(payload, cfg.limits);
    if (!manifest) return to_dlq(owner.get(), delivered, seq, header_id(), manifest.error().message);
    if (manifest->has_value()) {
        bool retry_later = false;
        auto frame = assemble(msg, **manifest, delivered, header_id(), &chunk_seqs, &retry_later);
        if (!frame) {
            if (retry_later) {
                record_error(frame.error().message + "; asking for redelivery");
                (void)natsMsg_NakWithDelay(msg, 1000, nullptr);
                return {};
            }
            return to_dlq(owner.get(), delivered, seq, header_id(), frame.error().message);
        }
        assembled = std::move(frame.value());
        payload = assembled;
        stats.chunks += (*manifest)->chunks;
        local->status().add(StatusCounter::chunks, (*manifest)->chunks);
    }
    auto frame = decode_frame(payload, cfg.limits);
    if (!frame) return to_dlq(owner.get(), delivered, seq, header_id(), frame.error().message);
    const std::string msg_id = id ? id : message_id(frame->source_pool_incarnation, frame->topic_incarnation,
                                                     frame->partition, frame->offset);
    uint32_t partition = 0;
    uint64_t offset = 0;
    uint64_t waited_since = 0;
    bool stored = false;
    for (;;) {
        std::string why;
        const Delivery d = deliver(*frame, msg_id, &stored, &partition, &offset, &why);
        if (d == Delivery::delivered) break;
        if (d == Delivery::permanent) return to_dlq(owner.get(), delivered, seq, header_id(), why);
        if (d == Delivery::pool_lost) {
            (void)natsMsg_Nak(msg, nullptr);
            return recover_local(make_error(Errc::lease_expired, why));
        }
        // Back-pressure: keep this message (and everything in flight) alive, ack what the
        // groups commit meanwhile (that frees the topic), and try again.
        const uint64_t now = mono_now_ns();
        if (waited_since == 0) {
            waited_since = now;
            ++stats.retries;
            local->status().add(StatusCounter::retries);
            record_error(why + " (waiting)");
            // Its deadline restarts now: it may have sat in the subscription's queue since its
            // delivery, and the next extension is a third of the ack wait away.
            (void)natsMsg_InProgress(msg, nullptr);
        }
        if (now - waited_since >= std::max<uint64_t>(cfg.ack_wait_ns / 3, 100 * kNsPerMs)) {
            (void)natsMsg_InProgress(msg, nullptr);
            waited_since = now;
        }
        if (stop && stop()) {
            (void)natsMsg_Nak(msg, nullptr);
            return {};
        }
        if (Status st = keep_alive(); !st) {
            (void)natsMsg_Nak(msg, nullptr);
            return st;
        }
        timespec ts{0, long(2 * kNsPerMs)};
        nanosleep(&ts, nullptr);
    }
    FABRIC_CRASH_POINT("bridge.import.after_send");  // notified, not acked: the redelivery notifies again (workers skip)
    ++stats.messages;
    stats.bytes += payload.size();
    ++handled;
    local->status().add(StatusCounter::messages);
    local->status().add(StatusCounter::bytes, payload.size());
    local->status().set(StatusGauge::last_activity_wall_ns, wall_now_ns());
    InFlight f;
    f.msg = owner.release();
    f.partition = partition;
    f.offset = offset;
    f.extended_ns = mono_now_ns();
    f.stream_seq = seq;
    f.chunk_seqs = std::move(chunk_seqs);
    if (cfg.ack_after == AckAfter::send) {
        settle(f);
        return {};
    }
    in_flight.push_back(std::move(f));
    return {};
}

Result<Importer> Importer::open(const ImportConfig& config) {
    FABRIC_TRY(validate_stream_name("stream", config.stream));
    FABRIC_TRY(validate_stream_name("durable name", config.durable));
    FABRIC_TRY(validate_name("topic", config.topic));
    if (!config.bucket.empty()) FABRIC_TRY(validate_name("bucket", config.bucket));
    if (!config.dlq_topic.empty()) FABRIC_TRY(validate_name("topic", config.dlq_topic));
    for (const auto& g : config.ack_groups) FABRIC_TRY(validate_name("group", g));
    if (config.batch == 0) return make_error(Errc::invalid_argument, "batch 0: at least 1 message per fetch");
    if (config.max_in_flight == 0) return make_error(Errc::invalid_argument, "max in flight 0: at least 1");
    if (config.ack_wait_ns < kNsPerSec)
        return make_error(Errc::invalid_argument, "ack wait below 1s: the importer extends deadlines every third of it");
    auto impl = std::make_unique<Impl>();
    impl->cfg = config;
    impl->member = config.local.member_id.empty() ? default_member_id() : config.local.member_id;
    FABRIC_TRY(validate_name("member id", impl->member));
    if (impl->member.size() > kMaxMemberIdLength)
        return make_error(Errc::invalid_argument, "member id '" + impl->member + "' is longer than " +
                                                      std::to_string(kMaxMemberIdLength) + " bytes");
    impl->topic_config.num_partitions = config.local.partitions_if_created;
    impl->topic_config.partition_capacity = config.capacity_if_created;
    impl->topic_config.partition_stride = config.stride_if_created;
    FABRIC_TRY(validate_topic_config(impl->topic_config));
    StatusIdentity id;
    id.role = Role::importer;
    id.member = impl->member;
    id.topic = config.topic;
    id.group = config.durable;
    id.stream = config.stream;
    id.servers = join_servers(config.nats.servers);
    impl->local = std::make_unique<LocalHost>(config.local, id);
    FABRIC_TRY(impl->open_local());
    auto link = NatsLink::open(config.nats);
    if (!link) return std::move(link).error();
    impl->nats = std::move(link.value());
    return Importer(std::move(impl));
}

Importer::Importer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Importer::Importer(Importer&&) noexcept = default;
Importer& Importer::operator=(Importer&&) noexcept = default;
Importer::~Importer() {
    if (!impl_) return;
    impl_->nak_all();
    impl_->unsubscribe();
    impl_->nats.reset();
    if (impl_->local && impl_->local->is_open()) impl_->local->status().connection(ConnectionState::closed, wall_now_ns());
}

const BridgeStats& Importer::stats() const { return impl_->stats; }
const std::string& Importer::member_id() const { return impl_->member; }
void Importer::set_log(std::function<void(std::string_view)> log) {
    impl_->log = std::move(log);
    impl_->note("importing stream '" + impl_->cfg.stream + "' as durable '" + impl_->cfg.durable + "' into topic '" +
                impl_->cfg.topic + "' of pool '" + impl_->local->pool_name() + "'");
}

Result<BridgeExit> Importer::run(const std::function<bool()>& should_stop) {
    Impl& im = *impl_;
    im.stop = should_stop;
    uint64_t last_message_ns = mono_now_ns();
    uint64_t backoff = 100 * kNsPerMs;
    BridgeExit why = BridgeExit::stopped;
    for (;;) {
        if (should_stop && should_stop()) break;
        if (im.cfg.count != 0 && im.handled >= im.cfg.count) {
            why = BridgeExit::count_reached;
            break;
        }
        if (Status st = im.keep_alive(); !st) return std::move(st).error();
        if (im.consumer_lost) {  // deleted under us: subscribe again, which creates it
            im.consumer_lost = false;
            im.note("durable '" + im.cfg.durable + "' or stream '" + im.cfg.stream + "' is gone: subscribing again");
            im.unsubscribe();
        }
        if (!im.sub) {
            Status st = im.subscribe();
            if (!st) {
                if (st.code() == Errc::invalid_argument || st.code() == Errc::permission_denied) return std::move(st).error();
                if (im.nats->connected()) im.record_error(st.error().message);
                if (Status s2 = sleep_keeping_alive(backoff, [&] { return im.keep_alive(); }, should_stop); !s2)
                    return std::move(s2).error();
                backoff = std::min<uint64_t>(backoff * 2, 5 * kNsPerSec);
                continue;
            }
            backoff = 100 * kNsPerMs;
        }
        const size_t room = im.cfg.max_in_flight > im.in_flight.size() ? im.cfg.max_in_flight - im.in_flight.size() : 0;
        if (room == 0 || !im.nats->connected()) {
            // Local back-pressure (the groups have not committed what is in flight) or no server:
            // fetch nothing, keep acking and extending.
            timespec ts{0, long(2 * kNsPerMs)};
            nanosleep(&ts, nullptr);
            continue;
        }
        int batch = int(std::min<size_t>(room, im.cfg.batch));
        if (im.cfg.count != 0) batch = int(std::min<uint64_t>(uint64_t(batch), im.cfg.count - im.handled));
        std::vector<natsMsg*> msgs;
        jsErrCode jerr = jsErrCode(0);
        const int64_t timeout_ms = int64_t(im.in_flight.empty() ? kIdleFetchMs : kBusyFetchMs);
        natsStatus s = fetch(im.sub, batch, timeout_ms, &msgs);
        if (s == NATS_OK) {
            // 0: the first wait for room extends them at once. Messages taken from the
            // subscription's queue may have been delivered long before this fetch.
            im.fetched_extended_ns = 0;
            for (size_t i = 0; i < msgs.size(); ++i) {
                natsMsg* m = msgs[i];
                im.fetched_rest = std::span<natsMsg* const>(msgs).subspan(i + 1);
                // Pool recovery under way, or asked to stop: give it back. A stop is seen between
                // messages, not after the whole batch: each may wait seconds for its chunks from a
                // server that does not answer.
                if (!im.local->is_open() || !im.producer || (should_stop && should_stop())) {
                    (void)natsMsg_Nak(m, nullptr);
                    natsMsg_Destroy(m);
                    continue;
                }
                Status st = im.handle(m);  // takes m
                if (!st) {
                    im.fetched_rest = {};
                    for (size_t j = i + 1; j < msgs.size(); ++j) {
                        (void)natsMsg_Nak(msgs[j], nullptr);
                        natsMsg_Destroy(msgs[j]);
                    }
                    return std::move(st).error();
                }
            }
            im.fetched_rest = {};
            last_message_ns = mono_now_ns();
            continue;
        }
        if (s == NATS_TIMEOUT) {
            if (im.cfg.exit_when_idle_ns != 0 && im.in_flight.empty() &&
                mono_now_ns() - last_message_ns >= im.cfg.exit_when_idle_ns) {
                why = BridgeExit::idle;
                break;
            }
            continue;
        }
        Error e = nats_error(s, "fetch from durable '" + im.cfg.durable + "'", jerr);
        // Not NO_RESPONDERS: that is a consumer leader being elected, which passes.
        if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr ||
            s == NATS_INVALID_SUBSCRIPTION || s == NATS_CONNECTION_CLOSED)
            im.unsubscribe();  // consumer or stream deleted: subscribe again (creates them)
        if (im.nats->connected()) im.record_error(e.message);
        if (Status s2 = sleep_keeping_alive(backoff, [&] { return im.keep_alive(); }, should_stop); !s2)
            return std::move(s2).error();
        backoff = std::min<uint64_t>(backoff * 2, 5 * kNsPerSec);
    }
    // Drain: what is in flight is acked as the groups commit, for up to the drain timeout;
    // the rest goes back to the stream at once (another importer takes it).
    const uint64_t deadline = mono_now_ns() + im.cfg.drain_timeout_ns;
    while (!im.in_flight.empty() && mono_now_ns() < deadline) {
        if (Status st = im.keep_alive(); !st) break;
        timespec ts{0, long(2 * kNsPerMs)};
        nanosleep(&ts, nullptr);
    }
    if (!im.in_flight.empty()) im.note("handing " + std::to_string(im.in_flight.size()) + " unacknowledged message(s) back to the stream");
    im.nak_all();
    return why;
}

}  // namespace fabric_shm::bridge
