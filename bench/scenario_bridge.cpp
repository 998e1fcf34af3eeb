// SPDX-License-Identifier: MIT
// Scenario "bridge": the recipe job across hosts, three ways, on this machine.
//   local    one pool: producer (put 1 KiB + notify) -> 3 WorkerLoop workers (crc32, result put,
//            forward) -> results topic -> collector. No network.
//   direct   the same job written on the NATS C client alone: the producer publishes each object
//            (async, message id) to a JetStream stream, 3 worker processes pull it (durable), crc32,
//            publish the result to a second stream and ack the input once the result is stored,
//            the collector pulls the results. No fabric-shm.
//   bridged  3 pools ("hosts" A, B, C) and fabric-shm-bridge: A's producer -> exporter -> stream
//            -> importers on B and C (one durable) -> 2 + 1 WorkerLoop workers -> exporters ->
//            result stream -> A's importer -> A's collector.
// Both NATS configurations use the same 3-node cluster (loopback, file storage, replicas 3,
// work-queue streams). Closed loop: the producer as fast as back-pressure lets it; throughput
// = objects / (first put -> last result collected). Open loop at --rate-fraction of each
// configuration's own maximum: latency = result collected - scheduled put time (wall clock,
// one machine), corrected for coordinated omission.
#include <nats/nats.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/uri.h"
#include "fabric_shm/worker_loop.h"
#include "fabric_shm_bridge/bridge.h"
#include "harness/bench.h"
#include "harness/procs.h"
#include "nats_cluster.h"

namespace fabric_shm::bench {
namespace {

constexpr int kWorkers = 3;
constexpr int kMaxProcs = 16;

struct BridgeShared {
    std::atomic<uint32_t> ready{0};
    std::atomic<uint32_t> stop{0};
    std::atomic<uint64_t> failures{0};
    std::atomic<uint64_t> collected{0};
    std::atomic<uint64_t> t_first{0}, t_last{0};  ///< monotonic: first put, last result collected
    std::atomic<uint64_t> cpu_ns[kMaxProcs] = {};
    Histogram latency;  ///< written by the collector only
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the results block is shared between forked processes");

struct Run {
    std::string config;   ///< local, direct, bridged
    std::string urls;     ///< NATS
    std::string tag;      ///< unique per run: pools, streams, durables
    std::string dir[3];   ///< FABRIC_SHM_DIR of hosts A, B, C
    uint64_t count = 0, size = 1024;
    uint64_t warmup = 0;  ///< objects sent (stamp 0, not measured) and collected before the measurement starts
    double rate = 0;      ///< 0: closed loop
};

void fail(BridgeShared& sh, const std::string& what) {
    std::fprintf(stderr, "bridge bench: %s\n", what.c_str());
    sh.failures.fetch_add(1);
}

void on_host(const Run& r, int host) { ::setenv("FABRIC_SHM_DIR", r.dir[host].c_str(), 1); }
std::string pool_name(const Run& r, int host) { return "bb-" + r.tag + "-" + char('a' + host); }

/// Each process measures its own CPU from ready to stop.
struct CpuSlot {
    BridgeShared& sh;
    int slot;
    uint64_t start = process_cpu_ns();
    ~CpuSlot() { sh.cpu_ns[slot].store(process_cpu_ns() - start); }
};

std::string key_of(uint64_t i) { return "obj-" + std::to_string(i); }

// ---- fabric-shm sides (local and bridged) ---------------------------------------------------

int producer_main(const Run& r, BridgeShared& sh, uint32_t expected_ready, int slot) {
    on_host(r, 0);
    auto pool = Pool::open(pool_name(r, 0));
    if (!pool) return fail(sh, "producer: " + pool.error().message), 1;
    auto store = MemObjectStore::attach(*pool);
    ProducerOptions po;
    po.block_timeout = std::chrono::seconds(60);
    auto prod = Producer::open(*pool, "uploads", po);
    if (!store || !prod) return fail(sh, "producer: open"), 1;
    if (!wait_for([&] { return sh.ready.load() >= expected_ready; }, false, 60 * kNsPerSec))
        return fail(sh, "producer: the pipeline did not start"), 1;
    std::vector<uint8_t> object(r.size);
    for (uint64_t i = 0; i < r.size; ++i) object[i] = uint8_t(i * 131 + 7);
    const double interval = r.rate > 0 ? 1e9 / r.rate : 0;
    uint64_t base_mono = 0, base_wall = 0;
    std::optional<CpuSlot> cpu;
    for (uint64_t i = 0; i < r.warmup + r.count; ++i) {
        uint64_t sched_wall = 0;  // 0: a warm-up object (streams, consumers, connections, page faults)
        if (i == r.warmup) {
            if (!wait_for([&] { return sh.collected.load() >= r.warmup; }, false, 120 * kNsPerSec))
                return fail(sh, "producer: the warm-up did not come back"), 1;
            cpu.emplace(sh, slot);
            base_mono = now_ns() + 1'000'000;
            base_wall = wall_now_ns() + 1'000'000;
            sh.t_first.store(base_mono);
        }
        if (i >= r.warmup) {
            if (interval > 0) {
                const uint64_t offset = uint64_t(double(i - r.warmup) * interval);
                wait_until_ns(base_mono + offset, false);
                sched_wall = base_wall + offset;
            } else {
                sched_wall = wall_now_ns();
            }
        }
        std::memcpy(object.data(), &sched_wall, std::min<size_t>(8, object.size()));
        auto uri = FabricUri::make(pool->name(), "uploads", key_of(i));
        auto v = (*store)->put(*uri, object);
        if (!v) return fail(sh, "producer: put: " + v.error().message), 1;
        const std::string uri_s = uri->to_string(), vs = std::to_string(*v), ts = std::to_string(sched_wall);
        const MessageHeader h[] = {{kHeaderVersion, vs}, {kHeaderPutTime, ts}};
        const std::string k = key_of(i);
        auto sent = prod->send_keyed(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(k.data()), k.size()),
                                     std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(uri_s.data()), uri_s.size()), h);
        if (!sent) return fail(sh, "producer: send: " + sent.error().message), 1;
    }
    return 0;
}

int worker_main(const Run& r, BridgeShared& sh, int host, const std::string& topic, int slot) {
    on_host(r, host);
    auto pool = Pool::open(pool_name(r, host));
    if (!pool) return fail(sh, "worker: " + pool.error().message), 1;
    WorkerConfig wc;
    wc.topic = topic;
    wc.group = "w";
    wc.next_topic = "results";
    wc.member_id = "w" + std::to_string(slot) + "-" + std::to_string(getpid());
    wc.batch = 64;
    Processor proc = [](const WorkItem& item) -> Result<std::vector<uint8_t>> {
        const uint32_t c = crc32(item.data.data(), item.data.size());
        std::vector<uint8_t> out(4);
        std::memcpy(out.data(), &c, 4);
        return out;
    };
    auto loop = WorkerLoop::open(*pool, wc, proc);
    if (!loop) return fail(sh, "worker: " + loop.error().message), 1;
    sh.ready.fetch_add(1);
    CpuSlot cpu{sh, slot};
    auto why = loop->run([&] { return sh.stop.load(std::memory_order_acquire) != 0; });
    if (!why) return fail(sh, "worker: " + why.error().message), 1;
    return 0;
}

int collector_main(const Run& r, BridgeShared& sh, int slot) {
    on_host(r, 0);
    auto pool = Pool::open(pool_name(r, 0));
    if (!pool) return fail(sh, "collector: " + pool.error().message), 1;
    GroupConsumerOptions go;
    go.consumer.wait = WaitMode::park;
    auto gc = GroupConsumer::open(*pool, "results", "app", "collector", go);
    if (!gc) return fail(sh, "collector: " + gc.error().message), 1;
    sh.ready.fetch_add(1);
    CpuSlot cpu{sh, slot};
    MessageBatch batch;
    const uint64_t interval = r.rate > 0 ? uint64_t(1e9 / r.rate) : 0;
    uint64_t seen = 0;
    while (sh.stop.load(std::memory_order_acquire) == 0) {
        auto n = gc->poll(batch, 256, std::chrono::milliseconds(20));
        if (!n) return fail(sh, "collector: " + n.error().message), 1;
        if (*n == 0) continue;
        const uint64_t now = wall_now_ns();
        for (const Message& m : batch) {
            std::string_view origin = m.header(kHeaderOriginTime);
            if (origin.empty()) origin = m.header(kHeaderPutTime);
            const uint64_t t0 = std::strtoull(std::string(origin).c_str(), nullptr, 10);
            if (r.rate > 0 && t0 && now > t0) sh.latency.record_corrected(now - t0, interval);
            ++seen;
        }
        if (Status st = gc->commit(); !st) return fail(sh, "collector: commit: " + st.error().message), 1;
        sh.collected.store(seen, std::memory_order_release);
        sh.t_last.store(now_ns());
    }
    (void)gc->leave();
    return 0;
}

template <class Bridge, class Config>
int bridge_main(const Run& r, BridgeShared& sh, int host, const Config& cfg, int slot) {
    on_host(r, host);
    auto b = Bridge::open(cfg);
    if (!b) return fail(sh, "bridge: " + b.error().message), 1;
    sh.ready.fetch_add(1);
    CpuSlot cpu{sh, slot};
    auto why = b->run([&] { return sh.stop.load(std::memory_order_acquire) != 0; });
    if (!why) return fail(sh, "bridge: " + why.error().message), 1;
    return 0;
}

bool make_pools(const Run& r, int hosts) {
    for (int h = 0; h < hosts; ++h) {
        on_host(r, h);
        const uint64_t objects = (r.warmup + r.count) * 2 + 1024;
        StoreConfig sc;
        sc.max_object_bytes = std::max<uint64_t>(r.size, 4096);
        sc.heap_bytes = objects * (r.size + 512) + (16ull << 20);
        sc.table_entries = uint32_t(std::bit_ceil(objects * 2));
        auto pool = Pool::create(PoolOptions{pool_name(r, h), sc.heap_bytes + (128ull << 20)});
        if (!pool) return std::fprintf(stderr, "bridge bench: pool: %s\n", pool.error().message.c_str()), false;
        if (auto s = MemObjectStore::open(*pool, sc); !s) return false;
        TopicManager tm(*pool);
        TopicConfig tc;
        tc.partition_capacity = 4096;
        tc.partition_stride = 1024;
        for (const char* t : {"uploads", "jobs", "results"})
            if (Status st = tm.create(t, tc); !st) return std::fprintf(stderr, "bridge bench: topic: %s\n", st.error().message.c_str()), false;
    }
    return true;
}

void remove_pools(const Run& r, int hosts) {
    for (int h = 0; h < hosts; ++h) {
        on_host(r, h);
        (void)Pool::remove(pool_name(r, h), true);
    }
}

bridge::NatsSettings nats_settings(const Run& r) {
    bridge::NatsSettings n;
    n.servers = bridge::parse_server_list(r.urls).value();
    return n;
}

// ---- the job on the NATS C client alone ------------------------------------------------------

struct NatsConn {
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    ~NatsConn() {
        if (js) jsCtx_Destroy(js);
        if (nc) natsConnection_Destroy(nc);
    }
    bool open(const std::string& urls, int64_t max_pending) {
        natsOptions* o = nullptr;
        natsOptions_Create(&o);
        const auto list = bridge::parse_server_list(urls).value();
        std::vector<const char*> servers;
        for (const auto& u : list) servers.push_back(u.c_str());
        natsOptions_SetServers(o, servers.data(), int(servers.size()));
        const natsStatus s = natsConnection_Connect(&nc, o);
        natsOptions_Destroy(o);
        if (s != NATS_OK) {
            std::fprintf(stderr, "bridge bench: connect to %s: %s\n", urls.c_str(), natsStatus_GetText(s));
            return false;
        }
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.PublishAsync.MaxPending = max_pending;
        return natsConnection_JetStream(&js, nc, &jo) == NATS_OK;
    }
};

/// The same fetch as the bridge importer's (libfabric_shm/bridge/src/importer.cpp): a one-shot
/// "no wait" pull with an expiry, so a message is handed over as soon as it arrives, and the
/// libnats 3.4.1 fetch overflow (messages already queued on the subscription) avoided by taking
/// queued messages one request at a time. Appends to *out; false when nothing came.
bool direct_fetch(natsSubscription* sub, int batch, int64_t timeout_ms, std::vector<natsMsg*>* out) {
    auto pull = [&](int n, int64_t ms) {
        jsFetchRequest req;
        jsFetchRequest_Init(&req);
        req.Batch = n;
        req.NoWait = true;
        req.Expires = ms * 1'000'000;
        natsMsgList list{};
        if (natsSubscription_FetchRequest(&list, sub, &req) == NATS_OK)
            for (int i = 0; i < list.Count; ++i) out->push_back(std::exchange(list.Msgs[i], nullptr));
        natsMsgList_Destroy(&list);
    };
    for (int queued = 0, rounds = 0; rounds < 4096; ++rounds) {
        if (natsSubscription_GetPending(sub, &queued, nullptr) != NATS_OK || queued <= 0) break;
        pull(1, 100);
    }
    if (out->empty()) pull(batch, timeout_ms);
    return !out->empty();
}

bool make_direct_streams(const Run& r) {
    NatsConn c;
    if (!c.open(r.urls, 1024)) return false;
    for (const std::string& name : {"J" + r.tag, "R" + r.tag}) {
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        const std::string subj = name + ".>";
        const char* subjects[] = {subj.c_str()};
        cfg.Name = name.c_str();
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Replicas = 3;
        cfg.Retention = js_WorkQueuePolicy;
        cfg.Discard = js_DiscardNew;
        jsStreamInfo* si = nullptr;
        jsErrCode err = jsErrCode(0);
        if (js_AddStream(&si, c.js, &cfg, nullptr, &err) != NATS_OK) {
            std::fprintf(stderr, "bridge bench: stream %s: error %d\n", name.c_str(), int(err));
            return false;
        }
        jsStreamInfo_Destroy(si);
    }
    return true;
}

int direct_producer(const Run& r, BridgeShared& sh, uint32_t expected_ready, int slot) {
    NatsConn c;
    if (!c.open(r.urls, 4096)) return fail(sh, "direct producer: connect"), 1;
    if (!wait_for([&] { return sh.ready.load() >= expected_ready; }, false, 60 * kNsPerSec))
        return fail(sh, "direct producer: the pipeline did not start"), 1;
    std::vector<uint8_t> object(r.size);
    for (uint64_t i = 0; i < r.size; ++i) object[i] = uint8_t(i * 131 + 7);
    const double interval = r.rate > 0 ? 1e9 / r.rate : 0;
    uint64_t base_mono = 0, base_wall = 0;
    std::optional<CpuSlot> cpu;
    const std::string subject = "J" + r.tag + ".obj";
    for (uint64_t i = 0; i < r.warmup + r.count; ++i) {
        uint64_t sched_wall = 0;
        if (i == r.warmup) {
            jsPubOptions wo;
            jsPubOptions_Init(&wo);
            wo.MaxWait = 60000;
            (void)js_PublishAsyncComplete(c.js, &wo);
            if (!wait_for([&] { return sh.collected.load() >= r.warmup; }, false, 120 * kNsPerSec))
                return fail(sh, "direct producer: the warm-up did not come back"), 1;
            cpu.emplace(sh, slot);
            base_mono = now_ns() + 1'000'000;
            base_wall = wall_now_ns() + 1'000'000;
            sh.t_first.store(base_mono);
        }
        if (i >= r.warmup) {
            if (interval > 0) {
                const uint64_t offset = uint64_t(double(i - r.warmup) * interval);
                wait_until_ns(base_mono + offset, false);
                sched_wall = base_wall + offset;
            } else {
                sched_wall = wall_now_ns();
            }
        }
        std::memcpy(object.data(), &sched_wall, std::min<size_t>(8, object.size()));
        const std::string id = key_of(i);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id.c_str();
        for (;;) {  // MaxPending reached: the client stalls us (back-pressure), then we retry
            natsStatus s = js_PublishAsync(c.js, subject.c_str(), object.data(), int(object.size()), &po);
            if (s == NATS_OK) break;
            if (s != NATS_TIMEOUT) return fail(sh, std::string("direct producer: publish: ") + natsStatus_GetText(s)), 1;
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    if (js_PublishAsyncComplete(c.js, &po) != NATS_OK) return fail(sh, "direct producer: acks missing"), 1;
    return 0;
}

int direct_worker(const Run& r, BridgeShared& sh, int slot) {
    NatsConn c;
    if (!c.open(r.urls, 4096)) return fail(sh, "direct worker: connect"), 1;
    natsSubscription* sub = nullptr;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    const std::string stream = "J" + r.tag, results = "R" + r.tag + ".res";
    so.Stream = stream.c_str();
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.MaxAckPending = 4096;
    // The three workers create the shared durable at the same time: the losers bind on a retry.
    natsStatus ss = NATS_ERR;
    for (int attempt = 0; attempt < 50 && ss != NATS_OK; ++attempt) {
        if (attempt) sleep_ns(100'000'000);
        ss = js_PullSubscribe(&sub, c.js, (stream + ".>").c_str(), "w", nullptr, &so, nullptr);
    }
    if (ss != NATS_OK) return fail(sh, std::string("direct worker: subscribe: ") + natsStatus_GetText(ss)), 1;
    sh.ready.fetch_add(1);
    CpuSlot cpu{sh, slot};
    std::vector<natsMsg*> msgs;
    while (sh.stop.load(std::memory_order_acquire) == 0) {
        msgs.clear();
        if (!direct_fetch(sub, 64, 50, &msgs)) continue;
        for (natsMsg* m : msgs) {
            const auto* data = reinterpret_cast<const uint8_t*>(natsMsg_GetData(m));
            const int len = natsMsg_GetDataLength(m);
            uint64_t sched = 0;
            if (len >= 8) std::memcpy(&sched, data, 8);
            const uint32_t crc = crc32(data, size_t(len));
            natsMsg* out = nullptr;
            natsMsg_Create(&out, results.c_str(), nullptr, reinterpret_cast<const char*>(&crc), 4);
            natsMsgHeader_Set(out, "origin-ts", std::to_string(sched).c_str());
            const char* in_id = nullptr;
            natsMsgHeader_Get(m, "Nats-Msg-Id", &in_id);
            const std::string id = std::string("r-") + (in_id ? in_id : "?");
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MsgId = id.c_str();
            while (js_PublishMsgAsync(c.js, &out, &po) == NATS_TIMEOUT) {
            }
            natsMsg_Destroy(out);
        }
        // The result is stored before the input is acked (at-least-once, as the bridge).
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 30000;
        if (js_PublishAsyncComplete(c.js, &po) != NATS_OK) return fail(sh, "direct worker: result acks missing"), 1;
        for (natsMsg* m : msgs) {
            natsMsg_Ack(m, nullptr);
            natsMsg_Destroy(m);
        }
    }
    natsSubscription_Destroy(sub);
    return 0;
}

int direct_collector(const Run& r, BridgeShared& sh, int slot) {
    NatsConn c;
    if (!c.open(r.urls, 1024)) return fail(sh, "direct collector: connect"), 1;
    natsSubscription* sub = nullptr;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    const std::string stream = "R" + r.tag;
    so.Stream = stream.c_str();
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.MaxAckPending = 8192;
    if (js_PullSubscribe(&sub, c.js, (stream + ".>").c_str(), "c", nullptr, &so, nullptr) != NATS_OK)
        return fail(sh, "direct collector: subscribe"), 1;
    sh.ready.fetch_add(1);
    CpuSlot cpu{sh, slot};
    const uint64_t interval = r.rate > 0 ? uint64_t(1e9 / r.rate) : 0;
    uint64_t seen = 0;
    std::vector<natsMsg*> msgs;
    while (sh.stop.load(std::memory_order_acquire) == 0) {
        msgs.clear();
        if (!direct_fetch(sub, 256, 20, &msgs)) continue;
        const uint64_t now = wall_now_ns();
        for (natsMsg* m : msgs) {
            const char* v = nullptr;
            natsMsgHeader_Get(m, "origin-ts", &v);
            const uint64_t t0 = v ? std::strtoull(v, nullptr, 10) : 0;
            if (r.rate > 0 && t0 && now > t0) sh.latency.record_corrected(now - t0, interval);
            ++seen;
            natsMsg_Ack(m, nullptr);
            natsMsg_Destroy(m);
        }
        sh.collected.store(seen, std::memory_order_release);
        sh.t_last.store(now_ns());
    }
    natsSubscription_Destroy(sub);
    return 0;
}

// ---- one run ----------------------------------------------------------------------------------

bool run_once(const Run& r, Measurement& m) {
    SharedBlock<BridgeShared> sh;
    std::vector<pid_t> kids;
    int slot = 0;
    uint32_t ready_needed = 0;
    const int hosts = r.config == "bridged" ? 3 : r.config == "local" ? 1 : 0;
    if (hosts && !make_pools(r, hosts)) return false;
    // In a child: the NATS client must not be initialised in this process, whose forks become
    // the measured processes (a forked client shares its inbox prefix and dead threads).
    if (r.config == "direct" && !wait_children({spawn_child([&] { return make_direct_streams(r) ? 0 : 1; })}, 60 * kNsPerSec))
        return false;
    auto spawn = [&](const std::function<int()>& fn) {
        kids.push_back(spawn_child(fn));
        ++ready_needed;
    };
    if (r.config == "local") {
        for (int w = 0; w < kWorkers; ++w) {
            const int s = slot++;
            spawn([&, s] { return worker_main(r, *sh, 0, "uploads", s); });
        }
        const int s = slot++;
        spawn([&, s] { return collector_main(r, *sh, s); });
    } else if (r.config == "direct") {
        for (int w = 0; w < kWorkers; ++w) {
            const int s = slot++;
            spawn([&, s] { return direct_worker(r, *sh, s); });
        }
        const int s = slot++;
        spawn([&, s] { return direct_collector(r, *sh, s); });
    } else {
        bridge::ExportConfig up;
        up.local.pool = pool_name(r, 0);
        up.topic = "uploads";
        up.stream = "UP" + r.tag;
        up.nats = nats_settings(r);
        bridge::ImportConfig back;
        back.local.pool = pool_name(r, 0);
        back.stream = "RES" + r.tag;
        back.durable = "a";
        back.topic = "results";
        back.nats = up.nats;
        back.ack_groups = {"app"};
        int s = slot++;
        spawn([&, s] { return bridge_main<bridge::Exporter>(r, *sh, 0, up, s); });
        s = slot++;
        spawn([&, s] { return bridge_main<bridge::Importer>(r, *sh, 0, back, s); });
        s = slot++;
        spawn([&, s] { return collector_main(r, *sh, s); });
        for (int h = 1; h <= 2; ++h) {
            bridge::ImportConfig in;
            in.local.pool = pool_name(r, h);
            in.stream = up.stream;
            in.durable = "workers";
            in.topic = "jobs";
            in.nats = up.nats;
            in.ack_groups = {"w"};
            bridge::ExportConfig res;
            res.local.pool = pool_name(r, h);
            res.topic = "results";
            res.stream = back.stream;
            res.nats = up.nats;
            s = slot++;
            spawn([&, s, h, in] { return bridge_main<bridge::Importer>(r, *sh, h, in, s); });
            s = slot++;
            spawn([&, s, h, res] { return bridge_main<bridge::Exporter>(r, *sh, h, res, s); });
            for (int w = 0; w < (h == 1 ? 2 : 1); ++w) {
                s = slot++;
                spawn([&, s, h] { return worker_main(r, *sh, h, "jobs", s); });
            }
        }
    }
    const int producer_slot = slot++;
    const uint32_t need = ready_needed;
    kids.push_back(spawn_child([&] {
        return r.config == "direct" ? direct_producer(r, *sh, need, producer_slot)
                                    : producer_main(r, *sh, need, producer_slot);
    }));
    bool ok = wait_children({kids.back()}, 300 * kNsPerSec);
    kids.pop_back();
    const uint64_t total = r.warmup + r.count;
    ok = ok && wait_for([&] { return sh->collected.load() >= total || sh->failures.load() != 0; }, false, 300 * kNsPerSec);
    if (sh->collected.load() < total)
        std::fprintf(stderr, "bridge bench: %s: %llu of %llu results\n", r.config.c_str(),
                     (unsigned long long)sh->collected.load(), (unsigned long long)total);
    sh->stop.store(1, std::memory_order_release);
    ok = wait_children(kids, 30 * kNsPerSec) && ok && sh->failures.load() == 0 && sh->collected.load() >= total;
    if (hosts) remove_pools(r, hosts);
    if (!ok) return false;
    m.ops = r.count;
    m.seconds = double(sh->t_last.load() - sh->t_first.load()) / 1e9;
    m.bytes_per_op = r.size;
    m.latency.merge(sh->latency);
    uint64_t cpu = 0;
    nlohmann::json per = nlohmann::json::array();
    for (int i = 0; i < slot; ++i) {
        cpu += sh->cpu_ns[i].load();
        per.push_back(double(sh->cpu_ns[i].load()) / double(r.count));
    }
    m.extra["cpu_ns_per_op_by_process"] = per;
    m.cpu_ns = cpu;
    m.extra["config"] = r.config;
    m.extra["size"] = r.size;
    m.extra["workers"] = kWorkers;
    m.extra["processes"] = slot + (r.config == "local" ? 0 : 3);  // + the 3 nats-server nodes
    m.extra["kind"] = r.rate > 0 ? "open-loop" : "closed-loop";
    if (r.rate > 0) m.extra["offered_rate"] = r.rate;
    m.extra["cpu_counted"] = "every fabric-shm / client process (not nats-server)";
    return true;
}

int run_bridge(Context& ctx) {
    const auto& o = ctx.options;
    const uint64_t count = o.count("count") ? o["count"].as<uint64_t>() : (ctx.quick ? 2000 : 20000);
    const uint64_t size = parse_size_list(o["size"].as<std::string>()).front();
    const double fraction = o["rate-fraction"].as<double>();
    const std::string want = o["configs"].as<std::string>();
    auto cluster = bridge::testing::NatsCluster::start({});
    if (!cluster) {
        std::fprintf(stderr, "bridge bench: nats-server cluster: %s\n", cluster.error().message.c_str());
        return 1;
    }
    const std::string base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
    struct Dirs {
        std::vector<std::string> d;
        ~Dirs() {
            for (const auto& x : d) std::filesystem::remove_all(x);
        }
    } dirs;
    ctx.report.config() = {{"count", count},   {"size", size},         {"rate_fraction", fraction},
                           {"workers", kWorkers}, {"nats", "3 nodes on loopback, JetStream file storage, replicas 3, work-queue streams"},
                           {"job", "put object + notify -> crc32 -> result put + forward -> collector"}};
    int run_id = 0;
    for (const std::string config : {"local", "direct", "bridged"}) {
        if (want.find(config) == std::string::npos) continue;
        Run r;
        r.config = config;
        r.urls = (*cluster)->urls();
        r.size = size;
        auto make_dirs = [&] {
            r.tag = std::to_string(getpid()) + "x" + std::to_string(run_id++);
            for (int h = 0; h < 3; ++h) {
                r.dir[h] = base + "/fabric-shm-bench-bridge-" + r.tag + "-" + char('a' + h);
                std::filesystem::create_directories(r.dir[h]);
                dirs.d.push_back(r.dir[h]);
            }
        };
        make_dirs();
        r.count = count;
        r.warmup = std::max<uint64_t>(200, count / 10);
        std::fprintf(stderr, "bridge: %s closed-loop, %llu objects of %s\n", config.c_str(), (unsigned long long)count,
                     human_bytes(size).c_str());
        Measurement closed;
        closed.name = "bridge " + human_bytes(size) + " " + config + " closed-loop";
        if (!run_once(r, closed)) return 1;
        const double max_rate = closed.seconds > 0 ? double(closed.ops) / closed.seconds : 0;
        ctx.report.add(closed);
        make_dirs();
        r.rate = o.count("rate") ? o["rate"].as<double>() : max_rate * fraction;
        // About 3 s of offered load (1 s with --quick), never more objects than the pools were sized for.
        r.count = std::clamp<uint64_t>(uint64_t(r.rate * (ctx.quick ? 1.0 : 3.0)), 500, count);
        char rate_txt[32];
        std::snprintf(rate_txt, sizeof rate_txt, "%.3g", r.rate);
        std::fprintf(stderr, "bridge: %s open-loop at %s objects/s\n", config.c_str(), rate_txt);
        Measurement open;
        open.name = "bridge " + human_bytes(size) + " " + config + " open-loop @" + rate_txt + "/s";
        if (!run_once(r, open)) return 1;
        ctx.report.add(open);
    }
    ctx.report.note("throughput = results collected per second from the first put to the last result (closed loop); "
                    "latency (open loop) = result collected - scheduled put time, coordinated omission corrected");
    return 0;
}

const bool bridge_scenario_registered = register_scenario(
    {"bridge", "the job across 3 pools through a 3-node JetStream cluster vs the same job on the NATS client vs one pool",
     [](cxxopts::Options& o) {
         o.add_options()("count", "objects per closed-loop run (default 20000; --quick 2000)", cxxopts::value<uint64_t>())(
             "size", "object size", cxxopts::value<std::string>()->default_value("1K"))(
             "rate", "open-loop rate, objects/s (default: --rate-fraction of each configuration's max)",
             cxxopts::value<double>())(
             "rate-fraction", "open-loop rate as a fraction of each configuration's closed-loop max",
             cxxopts::value<double>()->default_value("0.5"))(
             "configs", "local,direct,bridged", cxxopts::value<std::string>()->default_value("local,direct,bridged"));
     },
     run_bridge});

}  // namespace
}  // namespace fabric_shm::bench
