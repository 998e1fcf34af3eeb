// SPDX-License-Identifier: MIT
// Scenario "pipeline": the recipe job across processes.
//   producer process  store.put(fabric://POOL/in/obj-K, object) then sends the URI string on
//                     the topic (the notification), K cycling over a key ring larger than
//                     everything the topic can hold in flight
//   worker process(es) consumer-group members: poll the notification, parse the URI, pin the
//                     object (zero-copy get), crc32 over its bytes (the processing; compared
//                     with the stored CRC, so the read is verified too), put the 4-byte
//                     result to fabric://POOL/results/obj-K, commit
// Configurations (--configs):
//   spin-1w     1 producer + 1 worker, GroupConsumer with WaitMode::spin
//   parked-2w   1 producer + 2 workers, GroupConsumer with WaitMode::park (three spinning
//               processes starve each other on 2 vCPUs)
//   loop-2w     1 producer + 2 workers running the library's WorkerLoop (park mode, DLQ
//               bookkeeping, epoch-fenced result puts with provenance metadata): what
//               fabric-shm-worker costs per object
//   spin-1w-batch  spin-1w with batches of 16 end to end: the producer stores objects with
//               put_many and notifies with send_batch; the worker stores a poll's results
//               with one put_many (open loop: the producer batches what is due, up to 16)
//   scale-N     the scaling curve (N = 1 to 8): N producers and N workers, N partitions, each
//               producer on its own partition with its own keys, closed loop only; the
//               workers spin where the CPUs allow two per pair (2N CPUs), park otherwise.
//               Each N > 1 reports its rate over N times scale-1's in the same run
//               (scripts/bench-scaling.sh; the target is 0.7 on a machine with 2N cores)
// Each configuration runs closed-loop (the producer as fast as the topic lets it: max
// objects/s, counted from the end of warm-up to the last result) and open-loop at a fixed
// offered rate (default 50 % of that max): the object carries its scheduled put time and
// the worker records result committed - scheduled time (coordinated omission corrected;
// WorkerLoop: recorded in the processor, before its result put and commit).
// CPU time: getrusage of the producer and each worker over the measured window.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/uri.h"
#include "fabric_shm/worker_loop.h"
#include "harness/bench.h"
#include "harness/procs.h"

// Under `valgrind --tool=callgrind`, the per-step cost breakdown dumps the counters after each
// step (one dump per step and round, named after the step): instructions per step and object
// without a PMU (scripts/profile-steps.sh). Outside valgrind the request is a few no-op
// instructions per 4096 objects.
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define FABRIC_BENCH_STEP_DUMP(name) CALLGRIND_DUMP_STATS_AT(name)
#else
#define FABRIC_BENCH_STEP_DUMP(name) ((void)(name))
#endif

namespace fabric_shm::bench {
namespace {

/// The scaling configurations' largest N (their producers are counted apart).
constexpr int kMaxWorkers = 8;
constexpr uint32_t kPartitions = 2;
/// Objects per put_many / send_batch in the batched configuration (and per worker poll).
constexpr size_t kBatch = 16;

struct PipelineShared {
    std::atomic<uint32_t> ready{0};
    std::atomic<uint32_t> stop{0};
    std::atomic<uint64_t> failures{0};
    std::atomic<uint64_t> t_start{0}, t_end{0};       ///< producer: end of warm-up drained, all results in
    std::atomic<uint64_t> producer_cpu_ns{0};         ///< the producers' sum
    /// Scaling: producers past their warm-up sends; producer 0 sets `measure` once every
    /// producer is and the warm-up drained, and the others start their measured sends.
    std::atomic<uint32_t> producers_warm{0}, measure{0};
    std::atomic<uint64_t> handled[kMaxWorkers] = {};  ///< per worker, warm-up included
    std::atomic<uint64_t> worker_cpu_ns[kMaxWorkers] = {};
    Histogram latency[kMaxWorkers];                   ///< each written by its worker only
};
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "the results block is shared between forked processes");

struct PipelineConfig {
    std::string name;  ///< spin-1w, parked-2w, loop-2w, spin-1w-batch
    bool spin = false;
    int workers = 1;
    bool worker_loop = false;
    bool batched = false;  ///< put_many + send_batch, results with put_many
    int producers = 1;     ///< scale-N: N, each on its own partition (scaling_producer_main)
};

struct PipelineRun {
    std::string pool, topic;
    /// One bucket per run: results of an earlier run carry another group's epochs as fence
    /// tokens, and WorkerLoop's fenced result put would refuse to overwrite them.
    std::string result_bucket;
    PipelineConfig cfg;
    uint64_t size = 1024;
    uint64_t keys = 1024;
    uint64_t warmup = 0, count = 0;
    uint64_t park_spin_ns = 20'000;
    uint32_t partitions = kPartitions;
    double rate = 0;  ///< 0: closed loop
    /// The hand-written producer sends each object's PlacementHint (kHeaderPlacement) and the
    /// workers prefetch by it; --no-placement measures the job without (same binary).
    bool placement = true;
};

void fail(PipelineShared& sh, const char* what, const Error& e) {
    std::fprintf(stderr, "pipeline: %s: %s\n", what, e.message.c_str());
    sh.failures.fetch_add(1);
}

uint64_t total_handled(const PipelineShared& sh, int workers) {
    uint64_t t = 0;
    for (int w = 0; w < workers; ++w) t += sh.handled[w].load(std::memory_order_acquire);
    return t;
}

/// The bytes a producer writes at offset 0 of every object: scheduled (or actual) put time
/// and the object's sequence number.
struct Stamp {
    uint64_t sched_ns, index;
};
Stamp read_stamp(std::span<const uint8_t> bytes) {
    Stamp s{0, 0};
    if (bytes.size() >= sizeof s) std::memcpy(&s, bytes.data(), sizeof s);
    return s;
}

int group_worker_main(const PipelineRun& r, PipelineShared& sh, int w) {
    auto pool = Pool::open(r.pool);
    if (!pool) return fail(sh, "worker: open pool", pool.error()), 1;
    auto store = MemObjectStore::attach(*pool);
    if (!store) return fail(sh, "worker: attach store", store.error()), 1;
    GroupConsumerOptions go;
    go.consumer.wait = r.cfg.spin ? WaitMode::spin : WaitMode::park;
    go.consumer.spin = ns_duration(r.park_spin_ns);
    const std::string member = "w" + std::to_string(w) + "-" + std::to_string(getpid());
    auto gc = GroupConsumer::open(*pool, r.topic, "workers", member, go);
    if (!gc) return fail(sh, "worker: join", gc.error()), 1;
    MessageBatch batch;
    std::string result_text;  // the result URI's text, reused: no allocation per object
    // Batched: one result URI buffer and CRC per message of a poll, stored with one put_many.
    std::vector<std::string> result_texts(kBatch);
    std::vector<uint32_t> crcs(kBatch);
    std::vector<PutRequest> results;
    results.reserve(kBatch);
    std::vector<BatchStatus> statuses(kBatch);
    std::vector<uint64_t> sched(64);
    uint64_t handled = 0, cpu0 = 0;
    bool measuring = false;
    sh.ready.fetch_add(1);
    while (sh.stop.load(std::memory_order_acquire) == 0) {
        auto n = gc->poll(batch, kBatch, std::chrono::milliseconds(10));
        if (!n) return fail(sh, "worker: poll", n.error()), 1;
        if (*n == 0) continue;
        size_t timed = 0;
        results.clear();
        for (const Message& m : batch) {
            // The object's lines start moving before its lookup (one object at a time: a whole
            // poll's prefetched at once measured no faster than none).
            (*store)->prefetch(PlacementHint::parse(m.header(kHeaderPlacement)));
            auto uri = FabricUriView::parse(m.value_str());  // a view of the notification: no copy
            if (!uri) return fail(sh, "worker: notification", uri.error()), 1;
            auto pinned = (*store)->pin(*uri);
            if (!pinned || !pinned->has_value()) {
                std::fprintf(stderr, "pipeline: worker: %s missing\n", std::string(m.value_str()).c_str());
                sh.failures.fetch_add(1);
                continue;
            }
            const PinnedView& view = **pinned;
            const uint32_t crc = crc32(view.bytes().data(), view.bytes().size());
            if (crc != view.info().crc32) {
                std::fprintf(stderr, "pipeline: worker: CRC mismatch on %s\n", std::string(m.value_str()).c_str());
                sh.failures.fetch_add(1);
            }
            const Stamp st = read_stamp(view.bytes());
            if (r.cfg.batched) {
                const size_t j = results.size();
                auto result_uri = FabricUriView::format(result_texts[j], r.pool, r.result_bucket, uri->key());
                if (!result_uri) return fail(sh, "worker: result uri", result_uri.error()), 1;
                crcs[j] = crc;
                results.push_back({*result_uri, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&crcs[j]),
                                                                         sizeof crc)});
            } else {
                auto result_uri = FabricUriView::format(result_text, r.pool, r.result_bucket, uri->key());
                if (!result_uri) return fail(sh, "worker: result uri", result_uri.error()), 1;
                auto put = (*store)->put(
                    *result_uri, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&crc), sizeof crc));
                if (!put) return fail(sh, "worker: result put", put.error()), 1;
            }
            if (st.index >= r.warmup) {
                if (!measuring) {
                    measuring = true;
                    cpu0 = process_cpu_ns();
                }
                if (timed < sched.size()) sched[timed++] = st.sched_ns;
            }
        }
        if (!results.empty()) {
            const auto st = std::span(statuses).first(results.size());
            if (Status call = (*store)->put_many(results, st); !call)
                return fail(sh, "worker: result put_many", call.error()), 1;
            for (const BatchStatus& one : st)
                if (!one.ok()) return fail(sh, "worker: result put_many", one.error()), 1;
        }
        if (Status c = gc->commit(); !c) return fail(sh, "worker: commit", c.error()), 1;
        if (r.rate > 0 && timed) {
            const uint64_t now = now_ns();
            for (size_t i = 0; i < timed; ++i) sh.latency[w].record(now - sched[i]);
        }
        handled += *n;
        sh.handled[w].store(handled, std::memory_order_release);
    }
    sh.worker_cpu_ns[w].store(measuring ? process_cpu_ns() - cpu0 : 0);
    (void)gc->leave();
    return 0;
}

int loop_worker_main(const PipelineRun& r, PipelineShared& sh, int w) {
    auto pool = Pool::open(r.pool);
    if (!pool) return fail(sh, "worker: open pool", pool.error()), 1;
    WorkerConfig wc;
    wc.topic = r.topic;
    wc.group = "workers";
    wc.member_id = "loop" + std::to_string(w) + "-" + std::to_string(getpid());
    wc.partitions_if_created = kPartitions;
    wc.result_bucket = r.result_bucket;
    uint64_t handled = 0, cpu0 = 0;
    bool measuring = false;
    // Into run()'s reused buffer, as fabric-shm-worker's built-in processors write.
    ProcessorInto proc = [&](const WorkItem& item, std::vector<uint8_t>& out) -> Status {
        const uint32_t crc = crc32(item.data.data(), item.data.size());
        const Stamp st = read_stamp(item.data);
        if (st.index >= r.warmup) {
            if (!measuring) {
                measuring = true;
                cpu0 = process_cpu_ns();
            }
            if (r.rate > 0) sh.latency[w].record(now_ns() - st.sched_ns);
        }
        sh.handled[w].store(++handled, std::memory_order_release);
        out.resize(sizeof crc);
        std::memcpy(out.data(), &crc, sizeof crc);
        return {};
    };
    auto loop = WorkerLoop::open(*pool, wc);
    if (!loop) return fail(sh, "worker loop: open", loop.error()), 1;
    sh.ready.fetch_add(1);
    auto why = loop->run(proc, [&] { return sh.stop.load(std::memory_order_acquire) != 0; });
    if (!why) return fail(sh, "worker loop: run", why.error()), 1;
    sh.worker_cpu_ns[w].store(measuring ? process_cpu_ns() - cpu0 : 0);
    if (loop->stats().dead_lettered) {
        std::fprintf(stderr, "pipeline: worker loop dead-lettered %llu objects\n",
                     (unsigned long long)loop->stats().dead_lettered);
        sh.failures.fetch_add(1);
    }
    return 0;
}

/// True when every partition of the topic has a live owner among `workers` live members.
bool group_settled(const Pool& pool, const std::string& topic, int workers) {
    auto d = describe_consumer_group(pool, topic, "workers");
    if (!d) return false;
    int alive = 0;
    for (const auto& m : d->members) alive += m.alive ? 1 : 0;
    if (alive != workers) return false;
    for (const auto& p : d->partitions)
        if (p.member_slot < 0) return false;
    return true;
}

/// A producer process's handles, opened once the workers have joined (every partition owned).
struct ProducerSide {
    Pool pool;
    std::unique_ptr<MemObjectStore> store;
    Producer prod;
};
std::optional<ProducerSide> open_producer_side(const PipelineRun& r, PipelineShared& sh) {
    auto pool = Pool::open(r.pool);
    if (!pool) return fail(sh, "producer: open pool", pool.error()), std::nullopt;
    auto store = MemObjectStore::attach(*pool);
    if (!store) return fail(sh, "producer: attach store", store.error()), std::nullopt;
    auto prod = Producer::open(*pool, r.topic);
    if (!prod) return fail(sh, "producer: open", prod.error()), std::nullopt;
    const int nw = r.cfg.workers;
    if (!wait_for([&] { return sh.ready.load() == uint32_t(nw) && group_settled(*pool, r.topic, nw); }, false,
                  20 * kNsPerSec)) {
        std::fprintf(stderr, "pipeline: workers did not join in 20 s\n");
        return std::nullopt;
    }
    return ProducerSide{std::move(*pool), std::move(*store), std::move(*prod)};
}

int producer_main(const PipelineRun& r, PipelineShared& sh) {
    auto side = open_producer_side(r, sh);
    if (!side) return 1;
    MemObjectStore& store = *side->store;
    Producer& prod = side->prod;
    // The producer's URIs (a real producer builds its own; not part of the measured cost).
    std::vector<FabricUri> uris;
    std::vector<std::string> texts;
    for (uint64_t k = 0; k < r.keys; ++k) {
        uris.push_back(FabricUri::make(r.pool, "in", "obj-" + std::to_string(k)).value());
        texts.push_back(uris.back().to_string());
    }
    std::vector<uint8_t> object(r.size);
    for (uint64_t i = 0; i < r.size; ++i) object[i] = uint8_t(i * 131 + 7);
    // Batched: an object buffer, a store item and a notification per member of a batch.
    std::vector<std::vector<uint8_t>> objects(r.cfg.batched ? kBatch : 0, object);
    std::vector<PutRequest> items(kBatch);
    std::vector<BatchStatus> statuses(kBatch);
    std::vector<OutgoingMessage> notes(kBatch);
    std::vector<PlacementHint> placed(kBatch);
    std::vector<PlacementHint::Text> placed_texts(kBatch);
    std::vector<MessageHeader> placed_headers(kBatch);
    const int nw = r.cfg.workers;
    const uint64_t total = r.warmup + r.count;
    const double interval = r.rate > 0 ? 1e9 / r.rate : 0;
    uint64_t base = 0, cpu0 = 0;
    auto scheduled = [&](uint64_t i) { return base + uint64_t(double(i - r.warmup) * interval); };
    for (uint64_t i = 0; i < total;) {
        if (i == r.warmup) {
            // Let the warm-up drain: the measurement starts from an empty pipeline.
            if (!wait_for([&] { return total_handled(sh, nw) >= r.warmup; }, r.cfg.spin, 60 * kNsPerSec))
                return std::fprintf(stderr, "pipeline: warm-up did not drain\n"), 1;
            cpu0 = process_cpu_ns();
            base = now_ns() + 100 * kNsPerUs;
            sh.t_start.store(interval > 0 ? base : now_ns());
        }
        if (r.cfg.batched) {
            // Up to kBatch objects, never across the end of the warm-up; in open loop the ones
            // due by now (each stamped with its own scheduled time).
            const uint64_t end = std::min(total, i < r.warmup ? r.warmup : total);
            size_t n = size_t(std::min<uint64_t>(kBatch, end - i));
            const bool timed = interval > 0 && i >= r.warmup;
            if (timed) {
                wait_until_ns(scheduled(i), r.cfg.spin);
                const uint64_t now = now_ns();
                size_t due = 1;
                while (due < n && scheduled(i + due) <= now) ++due;
                n = due;
            }
            const uint64_t now = now_ns();
            for (size_t j = 0; j < n; ++j) {
                const Stamp st{timed ? scheduled(i + j) : now, i + j};
                std::memcpy(objects[j].data(), &st, std::min<size_t>(sizeof st, r.size));
                const uint64_t k = (i + j) % r.keys;
                items[j] = {uris[k].view(), objects[j]};
                notes[j] = {std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(texts[k].data()), texts[k].size()),
                            {}, {}};
            }
            const auto st = std::span(statuses).first(n);
            if (Status call = store.put_many(std::span(items).first(n), st, std::span(placed).first(n)); !call)
                return fail(sh, "producer: put_many", call.error()), 1;
            for (const BatchStatus& one : st)
                if (!one.ok()) return fail(sh, "producer: put_many", one.error()), 1;
            for (size_t j = 0; j < n; ++j) {
                placed_texts[j] = placed[j].text();
                placed_headers[j] = {kHeaderPlacement, std::string_view(placed_texts[j].data(), placed_texts[j].size())};
                notes[j].headers = std::span(&placed_headers[j], r.placement ? 1 : 0);
            }
            if (Status call = prod.send_batch(std::span(notes).first(n), st); !call)
                return fail(sh, "producer: send_batch", call.error()), 1;
            for (const BatchStatus& one : st)
                if (!one.ok()) return fail(sh, "producer: send_batch", one.error()), 1;
            i += n;
            continue;
        }
        Stamp st{0, i};
        if (interval > 0 && i >= r.warmup) {
            st.sched_ns = scheduled(i);
            wait_until_ns(st.sched_ns, r.cfg.spin);
        } else {
            st.sched_ns = now_ns();
        }
        std::memcpy(object.data(), &st, std::min<size_t>(sizeof st, object.size()));
        const uint64_t k = i % r.keys;
        // The notification says where the object went: the worker prefetches its lines.
        PlacementHint placed;
        auto put = store.put(uris[k].view(), object, {}, placed);
        if (!put) return fail(sh, "producer: put", put.error()), 1;
        const PlacementHint::Text placed_text = placed.text();
        const MessageHeader placed_header{kHeaderPlacement, std::string_view(placed_text.data(), placed_text.size())};
        auto sent = prod.send(texts[k], std::span(&placed_header, r.placement ? 1 : 0));
        if (!sent) return fail(sh, "producer: send", sent.error()), 1;
        ++i;
    }
    sh.producer_cpu_ns.store(process_cpu_ns() - cpu0);
    const bool drained = wait_for([&] { return total_handled(sh, nw) >= total; }, r.cfg.spin, 60 * kNsPerSec);
    sh.t_end.store(now_ns());
    sh.stop.store(1, std::memory_order_release);
    if (!drained) return std::fprintf(stderr, "pipeline: results missing after 60 s\n"), 1;
    return 0;
}

/// Scaling: producer p of r.cfg.producers, closed loop, on partition p with keys of its own
/// (a ring of r.keys / producers). Each sends its share of the warm-up, then of the measured
/// count; producer 0 keeps the clock (from every producer's drained warm-up to the last
/// result). The job per object is spin-1w's (put, the placement hint, send).
int scaling_producer_main(const PipelineRun& r, PipelineShared& sh, int p) {
    auto side = open_producer_side(r, sh);
    if (!side) return 1;
    MemObjectStore& store = *side->store;
    Producer& prod = side->prod;
    const uint64_t np = uint64_t(r.cfg.producers), keys = std::max<uint64_t>(r.keys / np, 1);
    std::vector<FabricUri> uris;
    std::vector<std::string> texts;
    for (uint64_t k = 0; k < keys; ++k) {
        uris.push_back(FabricUri::make(r.pool, "in", "s" + std::to_string(p) + "-obj-" + std::to_string(k)).value());
        texts.push_back(uris.back().to_string());
    }
    std::vector<uint8_t> object(r.size);
    for (uint64_t i = 0; i < r.size; ++i) object[i] = uint8_t(i * 131 + 7);
    const int nw = r.cfg.workers;
    const uint64_t warmup = r.warmup / np, count = r.count / np;
    uint64_t cpu0 = 0;
    for (uint64_t i = 0; i < warmup + count; ++i) {
        if (i == warmup) {
            sh.producers_warm.fetch_add(1);
            if (p == 0) {
                if (!wait_for([&] { return sh.producers_warm.load() == np && total_handled(sh, nw) >= np * warmup; },
                              false, 60 * kNsPerSec))
                    return std::fprintf(stderr, "pipeline: warm-up did not drain\n"), 1;
                sh.t_start.store(now_ns());
                sh.measure.store(1, std::memory_order_release);
            } else if (!wait_for([&] { return sh.measure.load(std::memory_order_acquire) != 0; }, false,
                                 60 * kNsPerSec)) {
                return std::fprintf(stderr, "pipeline: the measured phase did not start\n"), 1;
            }
            cpu0 = process_cpu_ns();
        }
        // The index counts across producers, so that read_stamp's warm-up test holds for all.
        const Stamp st{now_ns(), i < warmup ? i : r.warmup + (i - warmup)};
        std::memcpy(object.data(), &st, std::min<size_t>(sizeof st, object.size()));
        const uint64_t k = i % keys;
        PlacementHint placed;
        auto put = store.put(uris[k].view(), object, {}, placed);
        if (!put) return fail(sh, "producer: put", put.error()), 1;
        const PlacementHint::Text placed_text = placed.text();
        const MessageHeader placed_header{kHeaderPlacement, std::string_view(placed_text.data(), placed_text.size())};
        OutgoingMessage note{std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(texts[k].data()), texts[k].size()),
                             {}, std::span(&placed_header, r.placement ? 1 : 0)};
        auto sent = prod.send_to(uint32_t(p), note);
        if (!sent) return fail(sh, "producer: send", sent.error()), 1;
    }
    sh.producer_cpu_ns.fetch_add(process_cpu_ns() - cpu0);
    if (p != 0) return 0;
    const bool drained = wait_for([&] { return total_handled(sh, nw) >= np * (warmup + count); }, false, 60 * kNsPerSec);
    sh.t_end.store(now_ns());
    sh.stop.store(1, std::memory_order_release);
    if (!drained) return std::fprintf(stderr, "pipeline: results missing after 60 s\n"), 1;
    return 0;
}

bool pipeline_run(Pool& pool, const PipelineRun& r, Measurement& m) {
    TopicManager mgr(pool);
    TopicConfig tc;
    tc.num_partitions = r.partitions;
    // In flight at most partitions x capacity notifications: well below the key ring, so an
    // object is not overwritten before its worker read it.
    tc.partition_capacity = uint32_t(std::clamp<uint64_t>(std::bit_floor(r.keys / (4 * r.partitions)), 2, 1024));
    tc.partition_stride = 256;
    tc.on_full = OnFull::block;
    if (Status st = mgr.create(r.topic, tc); !st) {
        std::fprintf(stderr, "pipeline: create topic: %s\n", st.error().message.c_str());
        return false;
    }
    if (Status st = mgr.register_group(r.topic, "workers"); !st) {
        std::fprintf(stderr, "pipeline: register group: %s\n", st.error().message.c_str());
        return false;
    }
    SharedBlock<PipelineShared> sh;
    std::vector<pid_t> kids;
    for (int w = 0; w < r.cfg.workers; ++w)
        kids.push_back(spawn_child([&, w] {
            return r.cfg.worker_loop ? loop_worker_main(r, *sh, w) : group_worker_main(r, *sh, w);
        }));
    std::vector<pid_t> producers;
    if (r.cfg.producers > 1 || r.cfg.name.starts_with("scale-"))
        for (int p = 0; p < r.cfg.producers; ++p)
            producers.push_back(spawn_child([&, p] { return scaling_producer_main(r, *sh, p); }));
    else
        producers.push_back(spawn_child([&] { return producer_main(r, *sh); }));
    bool ok = wait_children(producers, 180 * kNsPerSec);
    sh->stop.store(1);  // also when a producer failed: let the workers leave
    ok = wait_children(kids, 10 * kNsPerSec) && ok && sh->failures.load() == 0;
    (void)mgr.remove(r.topic);
    if (!ok) return false;
    m.ops = (r.count / uint64_t(r.cfg.producers)) * uint64_t(r.cfg.producers);  // each producer sends its share
    m.seconds = double(sh->t_end.load() - sh->t_start.load()) / 1e9;
    m.bytes_per_op = r.size;
    uint64_t wc = 0;
    for (int w = 0; w < r.cfg.workers; ++w) {
        wc += sh->worker_cpu_ns[w].load();
        m.latency.merge(sh->latency[w]);
    }
    const uint64_t pc = sh->producer_cpu_ns.load();
    m.extra["mode"] = r.cfg.spin ? "spin" : "parked";
    m.extra["size"] = r.size;
    m.extra["config"] = r.cfg.name;
    m.extra["workers"] = r.cfg.workers;
    m.extra["producers"] = r.cfg.producers;
    m.extra["partitions"] = r.partitions;
    m.extra["worker_api"] = r.cfg.worker_loop ? "WorkerLoop" : "GroupConsumer";
    m.extra["placement_hint"] = r.placement;
    m.extra["batched"] = r.cfg.batched;
    m.extra["worker_cpu_ns_per_op"] = double(wc) / double(m.ops);
    m.extra["handled"] = total_handled(*sh, r.cfg.workers);
    if (r.rate > 0) {
        m.cpu_ns = wc;
        m.extra["kind"] = "open-loop";
        m.extra["offered_rate"] = r.rate;
        m.extra["cpu_counted"] = "workers only (the producer waits for its send schedule)";
        m.extra["latency"] = r.cfg.worker_loop ? "scheduled put time -> WorkerLoop processor call"
                                               : "scheduled put time -> result put and committed";
    } else {
        m.cpu_ns = pc + wc;
        m.extra["kind"] = "closed-loop";
        m.extra["producer_cpu_ns_per_op"] = double(pc) / double(m.ops);
        m.extra["cpu_counted"] = "producer + workers";
    }
    return true;
}

/// Per-step cost of the job in one process (no hand-off, no scheduler): each step over 4096
/// objects, best round of `rounds`. Says where a pipeline object's time goes independently of
/// how two processes share the CPUs. The last step is the worker side done by the library's
/// WorkerLoop instead of by hand (what fabric-shm-worker and the Python Worker pay per message
/// on top of the handler): the notifications of the round's inputs are sent to a topic of their
/// own first (not timed, a "setup:" dump), then handed out and completed one at a time with a
/// fixed 4-byte result, serviced after each as run() does.
bool cost_breakdown(Context& ctx, Pool& pool, MemObjectStore& store, const std::string& pool_name, uint64_t size,
                    int rounds) {
    constexpr uint64_t kN = 4096;
    // in_b: the put_many step's inputs, a key set of their own that is pinned every round like
    // `in`, so that both puts retire blocks a reader had pinned (the pipeline's case).
    std::vector<FabricUri> in, in_b, out;
    std::vector<std::string> texts;
    for (uint64_t k = 0; k < kN; ++k) {
        in.push_back(FabricUri::make(pool_name, "cost-in", "obj-" + std::to_string(k)).value());
        in_b.push_back(FabricUri::make(pool_name, "cost-in-b", "obj-" + std::to_string(k)).value());
        out.push_back(FabricUri::make(pool_name, "cost-out", "obj-" + std::to_string(k)).value());
        texts.push_back(in.back().to_string());
    }
    // The worker's calls take views (FabricUriView::parse of the notification, ::format of
    // the result URI into a reused string): what the pipeline's worker does.
    std::vector<FabricUriView> in_views, out_views;
    for (uint64_t k = 0; k < kN; ++k) {
        in_views.push_back(FabricUriView::parse(texts[k]).value());
        out_views.push_back(out[k].view());
    }
    std::string result_text;
    std::vector<uint8_t> object(size);
    for (uint64_t i = 0; i < size; ++i) object[i] = uint8_t(i * 131 + 7);
    // Where each put placed its object, as the notification's header carries it (the worker
    // prefetches its lines before the pin).
    std::vector<PlacementHint> placed(kN);
    std::vector<PlacementHint::Text> placed_texts(kN);
    std::vector<MessageHeader> placed_headers(kN);
    TopicManager mgr(pool);
    TopicConfig tc;
    tc.num_partitions = 1;
    tc.partition_capacity = 8192;
    tc.partition_stride = 256;
    tc.on_full = OnFull::overwrite;
    if (Status st = mgr.create("cost", tc); !st) return std::fprintf(stderr, "pipeline: cost topic: %s\n", st.error().message.c_str()), false;
    auto prod = Producer::open(pool, "cost");
    ConsumerOptions co;
    co.wait = WaitMode::spin;
    auto cons = Consumer::open(pool, "cost", "cost", co);
    if (!prod || !cons || !cons->assign_all()) return std::fprintf(stderr, "pipeline: cost: open failed\n"), false;
    // The WorkerLoop step's topic (one partition, room for a round) and loop.
    TopicConfig ltc = tc;
    ltc.on_full = OnFull::block;
    if (Status st = mgr.create("cost-loop", ltc); !st)
        return std::fprintf(stderr, "pipeline: cost-loop topic: %s\n", st.error().message.c_str()), false;
    auto loop_prod = Producer::open(pool, "cost-loop");
    if (!loop_prod) return std::fprintf(stderr, "pipeline: cost-loop: %s\n", loop_prod.error().message.c_str()), false;
    WorkerConfig wc;
    wc.topic = "cost-loop";
    wc.group = "cost-loop";
    wc.store = store.config().name;
    wc.result_bucket = "cost-loop-results";
    auto loop = WorkerLoop::open(pool, wc);
    if (!loop) return std::fprintf(stderr, "pipeline: cost-loop: %s\n", loop.error().message.c_str()), false;
    // The batched steps' topic (overwrite: it is never read) and their items.
    if (Status st = mgr.create("cost-batch", tc); !st)
        return std::fprintf(stderr, "pipeline: cost-batch topic: %s\n", st.error().message.c_str()), false;
    auto batch_prod = Producer::open(pool, "cost-batch");
    auto batch_cons = Consumer::open(pool, "cost-batch", "cost-batch", co);
    if (!batch_prod || !batch_cons || !batch_cons->assign_all())
        return std::fprintf(stderr, "pipeline: cost-batch: open failed\n"), false;
    const uint32_t crc = 0x12345678;
    const std::span<const uint8_t> crc_bytes(reinterpret_cast<const uint8_t*>(&crc), 4);
    std::vector<PutRequest> in_items, out_items;
    std::vector<OutgoingMessage> notes;
    for (uint64_t k = 0; k < kN; ++k) {
        in_items.push_back({in_b[k].view(), object});
        out_items.push_back({out_views[k], crc_bytes});
        notes.push_back({std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(texts[k].data()), texts[k].size()),
                         {}, {}});
    }
    std::vector<BatchStatus> statuses(kBatch);
    auto all_ok = [&](const Status& call) {
        if (!call) return false;
        for (const BatchStatus& st : statuses)
            if (!st.ok()) return false;
        return true;
    };
    WorkTicket ticket[1];
    MessageBatch batch;
    const char* names[] = {"producer: put (copy in, CRC, publish)", "producer: send URI notification + placement",
                           "worker: poll 16 + commit", "worker: parse URI (view)", "worker: prefetch + pin + unpin",
                           "worker: crc32 of the object", "worker: format result URI (view)", "worker: put 4-byte result",
                           "worker: WorkerLoop per message (no handler)",
                           "producer: put_many of 16 (per object)", "producer: send_batch of 16 (per object)",
                           "worker: put_many of 16 4-byte results (per object)"};
    constexpr int kSteps = 12;
    constexpr int kInSum = 8;  ///< the hand-written job's steps; the others do some of them again
    double best[kSteps];
    std::fill(best, best + kSteps, 1e18);
    uint64_t failures = 0;
    // Each step timed on its own (best of the rounds); a batched step runs right after its
    // one-at-a-time counterpart, on the same keys or ring, so both find the caches alike.
    auto timed = [&](int step, auto&& body) {
        const uint64_t t0 = now_ns();
        body();
        best[step] = std::min(best[step], double(now_ns() - t0));
        FABRIC_BENCH_STEP_DUMP(names[step]);
    };
    auto put_many_all = [&](std::vector<PutRequest>& items) {
        for (uint64_t i = 0; i < kN; i += kBatch)
            failures += all_ok(store.put_many(std::span(items).subspan(i, kBatch), statuses)) ? 0 : 1;
    };
    auto drain = [&](Consumer& c) {
        for (uint64_t got = 0; got < kN;) {
            auto n = c.poll(batch, 16, Duration::zero());
            if (!n) return std::fprintf(stderr, "pipeline: cost poll: %s\n", n.error().message.c_str()), false;
            got += *n;
            failures += c.commit() ? 0 : 1;
        }
        return true;
    };
    for (int round = 0; round < rounds; ++round) {
        FABRIC_BENCH_STEP_DUMP("round start");
        timed(0, [&] {
            for (uint64_t i = 0; i < kN; ++i) failures += store.put(in_views[i], object, {}, placed[i]) ? 0 : 1;
        });
        timed(9, [&] { put_many_all(in_items); });
        timed(1, [&] {
            for (uint64_t i = 0; i < kN; ++i) {
                placed_texts[i] = placed[i].text();
                placed_headers[i] = {kHeaderPlacement, std::string_view(placed_texts[i].data(), placed_texts[i].size())};
                failures += prod->send(texts[i], std::span(&placed_headers[i], 1)) ? 0 : 1;
            }
        });
        timed(10, [&] {
            for (uint64_t i = 0; i < kN; i += kBatch)
                failures += all_ok(batch_prod->send_batch(std::span(notes).subspan(i, kBatch), statuses)) ? 0 : 1;
        });
        // The batched notifications are read, not timed: the next round's sends find both
        // rings in the same state.
        if (!drain(*batch_cons)) return false;
        FABRIC_BENCH_STEP_DUMP("setup: read the batched notifications");
        bool drained = true;
        timed(2, [&] { drained = drain(*cons); });
        if (!drained) return false;
        timed(3, [&] {
            for (uint64_t i = 0; i < kN; ++i) {
                auto u = FabricUriView::parse(texts[i]);
                do_not_optimize(u);
            }
        });
        timed(4, [&] {
            for (uint64_t i = 0; i < kN; ++i) {
                store.prefetch(PlacementHint::parse(placed_headers[i].value));
                auto p = store.pin(in_views[i]);
                failures += (p && p->has_value()) ? 0 : 1;
            }
        });
        for (uint64_t i = 0; i < kN; ++i) {
            auto p = store.pin(in_b[i]);
            failures += (p && p->has_value()) ? 0 : 1;
        }
        FABRIC_BENCH_STEP_DUMP("setup: pin the put_many inputs");
        timed(5, [&] {
            for (uint64_t i = 0; i < kN; ++i) {
                uint32_t c = crc32(object.data(), object.size());
                do_not_optimize(c);
            }
        });
        timed(6, [&] {
            for (uint64_t i = 0; i < kN; ++i) {
                auto u = FabricUriView::format(result_text, pool_name, "results", in[i].key());
                do_not_optimize(u);
            }
        });
        timed(7, [&] {
            for (uint64_t i = 0; i < kN; ++i) failures += store.put(out_views[i], crc_bytes) ? 0 : 1;
        });
        timed(11, [&] { put_many_all(out_items); });
        for (uint64_t i = 0; i < kN; ++i)
            failures += loop_prod->send(texts[i], std::span(&placed_headers[i], 1)) ? 0 : 1;
        FABRIC_BENCH_STEP_DUMP("setup: notifications for the WorkerLoop step");
        bool looped = true;
        timed(8, [&] {
            for (uint64_t got = 0, idle = 0; got < kN;) {
                auto n = loop->acquire(ticket, std::chrono::nanoseconds(0));
                if (!n) {
                    std::fprintf(stderr, "pipeline: cost-loop acquire: %s\n", n.error().message.c_str());
                    looped = false;
                    return;
                }
                if (*n == 1) {
                    ++got;
                    failures += loop->complete(std::move(ticket[0]), crc_bytes) ? 0 : 1;
                } else if (++idle > 1000000) {
                    std::fprintf(stderr, "pipeline: cost-loop: %llu of %llu messages handed out\n",
                                 (unsigned long long)got, (unsigned long long)kN);
                    looped = false;
                    return;
                }
                failures += loop->service() ? 0 : 1;
            }
        });
        if (!looped) return false;
    }
    if (loop->stats().processed != uint64_t(rounds) * kN) {
        std::fprintf(stderr, "pipeline: cost-loop: %llu results written of %llu (%llu skipped, %llu dead-lettered)\n",
                     (unsigned long long)loop->stats().processed, (unsigned long long)(uint64_t(rounds) * kN),
                     (unsigned long long)loop->stats().skipped, (unsigned long long)loop->stats().dead_lettered);
        ++failures;
    }
    failures += loop->close() ? 0 : 1;
    (void)mgr.remove("cost-loop");
    (void)mgr.remove("cost-batch");
    (void)mgr.remove("cost");
    double sum = 0;  // the hand-written job's steps only
    for (int s = 0; s < kSteps; ++s) {
        Measurement m;
        m.name = "cost " + human_bytes(size) + " " + names[s];
        m.ops = kN;
        m.seconds = best[s] / 1e9;
        m.extra["kind"] = "cost";
        m.extra["size"] = size;
        m.extra["ns_per_op"] = best[s] / double(kN);
        m.extra["in_sum"] = s < kInSum;  // the WorkerLoop and batched steps redo some of them
        if (s < kInSum) sum += best[s] / double(kN);
        ctx.report.add(m);
    }
    char buf[160];
    std::snprintf(buf, sizeof buf, "cost %s: sum of the steps %.0f ns per object (one core for both sides: %.2f M objects/s)",
                  human_bytes(size).c_str(), sum, 1e3 / sum);
    ctx.report.note(buf);
    if (failures) ctx.report.note("cost breakdown: FAILED OPERATIONS: " + std::to_string(failures));
    return failures == 0;
}

/// Removes what run `r` stored under its result bucket (one result per key of its key ring):
/// "obj-K" by hand, "in/obj-K" by the WorkerLoop (its default key template, "{bucket}/{key}").
bool remove_results(MemObjectStore& store, const PipelineRun& r) {
    const std::string prefix = r.cfg.worker_loop ? "in/obj-" : "obj-";
    uint64_t removed_count = 0;
    for (uint64_t k = 0; k < r.keys; ++k) {
        auto uri = FabricUri::make(r.pool, r.result_bucket, prefix + std::to_string(k));
        if (!uri) return std::fprintf(stderr, "pipeline: result URI: %s\n", uri.error().message.c_str()), false;
        auto removed = store.remove(*uri);
        if (!removed)
            return std::fprintf(stderr, "pipeline: remove %s: %s\n", uri->to_string().c_str(),
                                removed.error().message.c_str()),
                   false;
        removed_count += *removed ? 1 : 0;
    }
    // Every key of the ring was processed (the warm-up alone writes it twice): a result
    // missing here means the keys above are not the ones the run wrote.
    if (removed_count != r.keys)
        return std::fprintf(stderr, "pipeline: %llu of %llu results of %s found to remove\n",
                            (unsigned long long)removed_count, (unsigned long long)r.keys, r.result_bucket.c_str()),
               false;
    return true;
}

int run_pipeline(Context& ctx) {
    const auto& o = ctx.options;
    const std::vector<uint64_t> sizes =
        parse_size_list(o.count("sizes") ? o["sizes"].as<std::string>() : "1K,64K,1M");
    const double rate_fraction = o["rate-fraction"].as<double>();
    const double fixed_rate = o.count("rate") ? o["rate"].as<double>() : 0.0;
    const uint64_t park_spin_ns = o["park-spin-ns"].as<uint64_t>();
    const double low_rate = o["low-rate"].as<double>();
    constexpr int kMaxRepeat = 50;
    const int repeat = o["repeat"].as<int>();
    if (repeat < 1 || repeat > kMaxRepeat) {
        std::fprintf(stderr, "pipeline: usage error: --repeat %d: must be 1 to %d closed-loop runs per configuration\n",
                     repeat, kMaxRepeat);
        return 2;
    }
    const uint64_t max_count = o.count("count") ? o["count"].as<uint64_t>() : (ctx.quick ? 5'000 : 200'000);
    const uint64_t budget = ctx.quick ? (64ull << 20) : (4ull << 30);  // bytes per closed-loop run
    std::vector<PipelineConfig> configs;
    const std::string want = o["configs"].as<std::string>();
    // Names are matched whole, item by item ("spin-1w" does not select "spin-1w-batch").
    std::vector<std::string> wanted;
    for (size_t at = 0; at <= want.size();) {
        const size_t comma = std::min(want.find(',', at), want.size());
        wanted.push_back(want.substr(at, comma - at));
        at = comma + 1;
    }
    for (const PipelineConfig& c : {PipelineConfig{"spin-1w", true, 1, false, false},
                                    PipelineConfig{"spin-1w-batch", true, 1, false, true},
                                    PipelineConfig{"parked-2w", false, 2, false, false},
                                    PipelineConfig{"loop-2w", false, 2, true, false}})
        if (std::find(wanted.begin(), wanted.end(), c.name) != wanted.end()) configs.push_back(c);
    // scale-N: N producer + worker pairs; the workers spin only where every process has a CPU
    // of its own (more spinning processes than CPUs starve each other).
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);  // the CPUs this bench may run on, where it can tell
    if (cpu_set_t allowed; sched_getaffinity(0, sizeof allowed, &allowed) == 0) cpus = CPU_COUNT(&allowed);
    for (int n = 1; n <= kMaxWorkers; ++n)
        if (const std::string name = "scale-" + std::to_string(n); std::find(wanted.begin(), wanted.end(), name) != wanted.end())
            configs.push_back({name, 2L * n <= cpus, n, false, false, n});
    if (configs.size() != wanted.size() && want != "none") {
        std::fprintf(stderr,
                     "pipeline: usage error: --configs '%s': each must be one of spin-1w, spin-1w-batch, parked-2w, "
                     "loop-2w, scale-1 ... scale-%d\n",
                     want.c_str(), kMaxWorkers);
        return 2;
    }
    const bool open_loop = !o.count("no-open-loop");
    nlohmann::json cfg_names = nlohmann::json::array();
    for (const auto& c : configs) cfg_names.push_back(c.name);
    ctx.report.config() = {{"sizes", sizes},
                           {"configs", cfg_names},
                           {"max_count", max_count},
                           {"bytes_per_closed_loop_run", budget},
                           {"rate_fraction", rate_fraction},
                           {"fixed_rate", fixed_rate},
                           {"park_spin_ns", park_spin_ns},
                           {"light_load_rate", low_rate},
                           {"closed_loop_repeat", repeat},
                           {"partitions", kPartitions},
                           {"worker_batch", kBatch},
                           {"producer_batch_batched_config", kBatch},
                           {"job", "producer: put + send URI; worker: poll, parse URI, pin, crc32, put 4-byte "
                                   "result, commit"}};
    int run_id = 0;
    // Every run gets a topic of its own and, unless --result-bucket names one for all, a result
    // bucket of its own (see PipelineRun::result_bucket).
    auto fresh_topic = [&](PipelineRun& run) {
        run.topic = "p" + std::to_string(run_id++);
        run.result_bucket = o.count("result-bucket") ? o["result-bucket"].as<std::string>() : "results-" + run.topic;
    };
    for (const uint64_t size : sizes) {
        const uint64_t count = std::clamp<uint64_t>(budget / size, 1000, max_count);
        // Key ring: 32 MiB of objects (64..8192 keys). Every run starts fresh processes, whose
        // first touch of each heap page is a page fault: the warm-up writes the ring twice.
        const uint64_t keys = std::clamp<uint64_t>(std::bit_floor((32ull << 20) / size), 64, 8192);
        const uint64_t warmup = std::max<uint64_t>(2 * keys, count / 10);
        const std::string pool_name = "bench-pipe-" + std::to_string(getpid()) + "-" + std::to_string(size);
        StoreConfig sc;
        sc.max_object_bytes = std::max<uint64_t>(size, 4096);
        sc.heap_bytes = size * keys * 2 + keys * 12 * 512 + (32ull << 20);
        // Inputs plus one result bucket per run (up to 9 runs per size), at most half full.
        sc.table_entries = uint32_t(std::bit_ceil(keys * 24));
        auto pool = Pool::create(PoolOptions{pool_name, sc.heap_bytes + (64ull << 20)});
        if (!pool) {
            std::fprintf(stderr, "pipeline: %s\n", pool.error().message.c_str());
            return 1;
        }
        struct Remove {
            std::string n;
            ~Remove() { (void)Pool::remove(n, true); }
        } remove{pool_name};
        auto store = MemObjectStore::open(*pool, sc);
        if (!store) {
            std::fprintf(stderr, "pipeline: open store: %s\n", store.error().message.c_str());
            return 1;
        }
        if (size == sizes.front() && !o.count("no-cost")) {
            std::fprintf(stderr, "pipeline: per-step cost, %s, one process\n", human_bytes(size).c_str());
            if (!cost_breakdown(ctx, *pool, **store, pool_name, size, ctx.quick ? 3 : 15)) return 1;
        }
        double scale_one_rate = 0;  // scale-1's closed loop in this run: the curve's unit
        for (const PipelineConfig& c : configs) {
            const bool scaling = c.name.starts_with("scale-");
            PipelineRun r;
            r.pool = pool_name;
            r.cfg = c;
            if (scaling) r.partitions = uint32_t(c.producers);
            r.size = size;
            r.keys = keys;
            r.warmup = warmup;
            r.count = count;
            r.park_spin_ns = park_spin_ns;
            r.placement = !o.count("no-placement");
            fresh_topic(r);
            const std::string tag = "pipeline " + human_bytes(size) + " " + c.name;
            // The closed loop `repeat` times, each in a fresh topic with fresh processes: the
            // run of median throughput is reported (the upper of the two middle runs when
            // `repeat` is even), with every run's rate beside it (on a shared VM, runs a minute
            // apart differ by a third and more).
            std::vector<Measurement> runs;
            for (int k = 0; k < repeat; ++k) {
                if (k > 0) {
                    // The last run's results go: every run starts with the table and the heap
                    // as the first one found them. With --result-bucket every run writes the
                    // same keys, so the later runs start with them stored (their measured
                    // phase overwrites them anyway, after the warm-up wrote the ring twice).
                    if (!o.count("result-bucket") && !remove_results(**store, r)) return 1;
                    fresh_topic(r);
                }
                std::fprintf(stderr, "pipeline: %s closed-loop, %llu objects (run %d of %d)\n", tag.c_str(),
                             (unsigned long long)count, k + 1, repeat);
                Measurement closed;
                closed.name = tag + " closed-loop";
                if (!pipeline_run(*pool, r, closed)) return 1;
                runs.push_back(std::move(closed));
            }
            auto rate_of = [](const Measurement& m) { return m.seconds > 0 ? double(m.ops) / m.seconds : 0.0; };
            nlohmann::json rates = nlohmann::json::array();  // in run order
            for (const Measurement& m : runs) rates.push_back(rate_of(m));
            std::sort(runs.begin(), runs.end(),
                      [&](const Measurement& a, const Measurement& b) { return rate_of(a) < rate_of(b); });
            Measurement closed = std::move(runs[runs.size() / 2]);
            closed.extra["closed_loop_runs_ops_s"] = rates;
            const double max_rate = rate_of(closed);
            if (scaling) {
                closed.extra["workers_wait"] = c.spin ? "spin" : "parked (fewer than two CPUs per pair)";
                if (c.producers == 1) scale_one_rate = max_rate;
                if (scale_one_rate > 0)
                    closed.extra["scaling_efficiency"] = max_rate / (double(c.producers) * scale_one_rate);
            }
            ctx.report.add(closed);
            if (!open_loop || scaling) continue;  // the curve is closed-loop throughput
            r.rate = fixed_rate > 0 ? fixed_rate : max_rate * rate_fraction;
            r.count = std::max<uint64_t>(500, std::min<uint64_t>(count, uint64_t(r.rate * 0.5)));  // ~0.5 s
            r.warmup = std::max<uint64_t>(2 * keys, r.count / 10);
            fresh_topic(r);
            char rate_txt[32];
            std::snprintf(rate_txt, sizeof rate_txt, "%.3g", r.rate);
            std::fprintf(stderr, "pipeline: %s open-loop at %s objects/s\n", tag.c_str(), rate_txt);
            Measurement open;
            open.name = tag + " open-loop @" + rate_txt + "/s";
            if (!pipeline_run(*pool, r, open)) return 1;
            ctx.report.add(open);
            if (low_rate > 0) {
                // Light load: an object that finds the workers idle (compare with the peers'
                // window-1 rows); open loop from the scheduled put time.
                r.rate = std::min(low_rate, max_rate * 0.1);
                r.count = std::max<uint64_t>(300, uint64_t(r.rate * (ctx.quick ? 0.2 : 0.5)));
                fresh_topic(r);
                std::snprintf(rate_txt, sizeof rate_txt, "%.3g", r.rate);
                std::fprintf(stderr, "pipeline: %s light load at %s objects/s\n", tag.c_str(), rate_txt);
                Measurement light;
                light.name = tag + " light-load @" + rate_txt + "/s";
                if (!pipeline_run(*pool, r, light)) return 1;
                light.extra["kind"] = "light-load";
                ctx.report.add(light);
            }
        }
    }
    ctx.report.note("throughput = results committed per second (closed loop: from the end of the drained "
                    "warm-up to the last result); latency (open loop only) from the scheduled put time");
    return 0;
}

const bool pipeline_scenario_registered = register_scenario(
    {"pipeline", "the recipe job across processes: put + notify -> worker poll, get, crc32, put result, commit",
     [](cxxopts::Options& o) {
         o.add_options()("sizes", "object sizes (default 1K,64K,1M)", cxxopts::value<std::string>())(
             "configs",
             "spin-1w,spin-1w-batch,parked-2w,loop-2w (default all four; none: only the per-step cost); "
             "scale-1 ... scale-8: the scaling curve (each N against scale-1, when that is listed too)",
             cxxopts::value<std::string>()->default_value("spin-1w,spin-1w-batch,parked-2w,loop-2w"))(
             "count", "most objects per closed-loop run (default 200000, fewer for large objects; --quick 5000)",
             cxxopts::value<uint64_t>())("rate", "open-loop offered rate, objects/s (default: --rate-fraction of max)",
                                         cxxopts::value<double>())(
             "rate-fraction", "open-loop rate as a fraction of the closed-loop max",
             cxxopts::value<double>()->default_value("0.5"))("no-open-loop", "closed-loop runs only")("no-placement", "the producer sends no placement hint (the workers then prefetch nothing)")("no-cost", "skip the one-process per-step cost of the first size")(
             "result-bucket", "one result bucket for every run (default: one per run)", cxxopts::value<std::string>())(
             "park-spin-ns", "parked mode: the workers' spin before they sleep (library default 20000)",
             cxxopts::value<uint64_t>()->default_value("20000"))(
             "low-rate", "also an open-loop run at min(this, 10 % of max), objects/s (0: none)",
             cxxopts::value<double>()->default_value("10000"))(
             "repeat", "closed-loop runs per configuration and size, 1 to 50: the run of median throughput is "
             "reported (the upper middle one for an even count), every run's rate beside it",
             cxxopts::value<int>()->default_value("1"));
     },
     run_pipeline});

}  // namespace
}  // namespace fabric_shm::bench
