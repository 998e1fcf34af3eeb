// SPDX-License-Identifier: MIT
// Scenario "store": MemObjectStore put/get/remove mixes in one process at 1e3 .. 1e6 live
// objects. Access pattern: keys "bench/k<8 digits>", chosen uniformly at random (xorshift64*,
// fixed seed) among the live keys; values of --value-size bytes (default 1 KiB) of a fixed
// pattern. Every operation is timed individually (one clock read per op: see
// timer_overhead_ns in the report). Each phase runs `--ops` operations after a warm-up of
// a tenth of that (first-touch page faults are not the steady state).
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "harness/bench.h"

namespace fabric_shm::bench {
namespace {

struct Rng {
    uint64_t s;
    uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1DULL;
    }
};

/// Removes the benchmark's pool on every exit path.
uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

int run_store(Context& ctx) {
    const auto& o = ctx.options;
    const std::vector<uint64_t> live =
        parse_count_list(o.count("live") ? o["live"].as<std::string>() : (ctx.quick ? "1e3,1e4" : "1e3,1e4,1e5,1e6"));
    const std::vector<uint64_t> vs = parse_size_list(o["value-size"].as<std::string>());
    const uint64_t value_size = vs.at(0);
    const uint64_t ops = o.count("ops") ? o["ops"].as<uint64_t>() : (ctx.quick ? 20000 : 200000);
    const uint64_t warmup = ops / 10;
    ctx.report.config() = {{"live_objects", live},
                           {"value_bytes", value_size},
                           {"ops_per_phase", ops},
                           {"warmup_per_phase", warmup},
                           {"access_pattern", "uniform random over the live keys (xorshift64*, seed 42); "
                                              "keys bench/k%08u; one process, one thread"}};
    ctx.report.note("probes per operation: StoreStats' probe_buckets_hit / probe_buckets_miss (table buckets, "
                    "one cache line each, a lookup of a present / absent key reads on average; from the table "
                    "after the fill), in each phase's extra fields; cache misses: this VM has no hardware PMU "
                    "(perf stat reports <not supported>)");

    const std::vector<uint8_t> value(value_size, 0xab);
    for (const uint64_t n : live) {
        PoolGuard guard;
        guard.name = "bench-store-" + std::to_string(getpid()) + "-" + std::to_string(n);
        // Heap: each object is a block of header (64) + value + key/metadata trailer, rounded
        // up to a size class, times two: room for every object plus overwrites in flight.
        const uint64_t block = round_up(64 + value_size + 64, 128);
        StoreConfig sc;
        sc.heap_bytes = round_up(n * block * 2 + (16ull << 20), 1ull << 20);
        sc.table_entries = uint32_t(std::min<uint64_t>(n * 2 + 1024, UINT32_MAX));
        PoolOptions po;
        po.name = guard.name;
        // The root region also holds one 8-byte state word per 128-byte block (heap / 16).
        po.size_bytes = round_up(sc.heap_bytes + sc.heap_bytes / 8 + uint64_t(sc.table_entries) * 32 + (64ull << 20), 1ull << 20);
        auto pool = Pool::create(po);
        if (!pool) {
            std::fprintf(stderr, "store: pool of %llu bytes for %llu objects: %s\n", (unsigned long long)po.size_bytes,
                         (unsigned long long)n, pool.error().message.c_str());
            return 1;
        }
        std::string note;
        auto opened = MemObjectStore::open(*pool, sc, &note);
        if (!opened) {
            std::fprintf(stderr, "store: open: %s\n", opened.error().message.c_str());
            return 1;
        }
        MemObjectStore& store = **opened;
        std::vector<FabricUri> keys, absent;
        keys.reserve(n);
        char buf[32];
        for (uint64_t i = 0; i < n; ++i) {
            std::snprintf(buf, sizeof buf, "k%08llu", (unsigned long long)i);
            keys.push_back(FabricUri::make(guard.name, "bench", buf).value());
        }
        for (uint64_t i = 0; i < 4096; ++i) {
            std::snprintf(buf, sizeof buf, "miss%08llu", (unsigned long long)i);
            absent.push_back(FabricUri::make(guard.name, "bench", buf).value());
        }
        std::fprintf(stderr, "store: %llu live objects of %llu bytes (pool %s)\n", (unsigned long long)n,
                     (unsigned long long)value_size, human_bytes(po.size_bytes).c_str());
        const std::string tag = " @" + std::to_string(n);
        uint64_t failures = 0;
        auto put = [&](const FabricUri& u) {
            auto r = store.put(u, value);
            if (!r) ++failures;
            do_not_optimize(r);
        };
        auto get = [&](const FabricUri& u) {
            auto r = store.get(u);
            if (!r || !r->has_value()) ++failures;
            do_not_optimize(r);
        };
        // Fill: every key once, in order (each put is an insert).
        {
            Measurement m = measure("put insert (fill)" + tag, 0, n, [&](uint64_t i) { put(keys[i]); });
            m.bytes_per_op = value_size;
            ctx.report.add(std::move(m));
        }
        const StoreStats filled = store.stats();
        std::fprintf(stderr, "store: @%llu buckets read per lookup: %.3f (present key), %.3f (absent key)\n",
                     (unsigned long long)n, filled.probe_buckets_hit, filled.probe_buckets_miss);
        Rng rng{42};
        std::vector<uint32_t> pick(ops + warmup);
        for (auto& p : pick) p = uint32_t(rng.next() % n);
        auto phase = [&](const std::string& name, const std::function<void(uint64_t)>& fn) {
            Measurement m = measure(name + tag, warmup, ops, [&](uint64_t i) { fn(pick[i % pick.size()]); });
            m.extra["live_objects"] = n;
            m.extra["probe_buckets_hit"] = filled.probe_buckets_hit;
            m.extra["probe_buckets_miss"] = filled.probe_buckets_miss;
            ctx.report.add(std::move(m));
        };
        phase("get hit", [&](uint64_t k) { get(keys[k]); });
        phase("pin hit (no copy)", [&](uint64_t k) {
            auto r = store.pin(keys[k]);
            if (!r || !r->has_value()) ++failures;
            do_not_optimize(r);
        });
        phase("get miss", [&](uint64_t k) {
            auto r = store.get(absent[k % absent.size()]);
            if (!r || r->has_value()) ++failures;
            do_not_optimize(r);
        });
        phase("put overwrite", [&](uint64_t k) { put(keys[k]); });
        phase("mix 90% get / 10% put", [&](uint64_t k) {
            if (k % 10 == 0)
                put(keys[k]);
            else
                get(keys[k]);
        });
        phase("remove+put (pair)", [&](uint64_t k) {
            auto r = store.remove(keys[k]);
            if (!r || !*r) ++failures;
            put(keys[k]);
        });
        if (n == live.front()) {
            // The target: same-process put and get of 1 KiB, one hot key, <= 200 ns each at p50.
            const FabricUri& hot = keys[0];
            Measurement mp = measure("put same key (hot)" + tag, warmup, ops, [&](uint64_t) { put(hot); });
            mp.bytes_per_op = value_size;
            ctx.report.add(std::move(mp));
            Measurement mg = measure("get same key (hot)" + tag, warmup, ops, [&](uint64_t) { get(hot); });
            mg.bytes_per_op = value_size;
            ctx.report.add(std::move(mg));
        }
        const StoreStats st = store.stats();
        nlohmann::json stats = {{"objects", st.objects},
                                {"table_entries", st.table_entries},
                                {"heap_used_bytes", st.heap_used_bytes},
                                {"heap_capacity_bytes", st.heap_capacity_bytes},
                                {"largest_free_extent", st.largest_free_extent},
                                {"probe_buckets_hit", st.probe_buckets_hit},
                                {"probe_buckets_miss", st.probe_buckets_miss}};
        ctx.report.note("after @" + std::to_string(n) + ": " + stats.dump() +
                        (failures ? " FAILED OPERATIONS: " + std::to_string(failures) : std::string()));
        if (failures) std::fprintf(stderr, "store: %llu operations failed at %llu objects\n",
                                   (unsigned long long)failures, (unsigned long long)n);
    }
    return 0;
}

const bool store_scenario_registered = register_scenario(
    {"store", "MemObjectStore put/get/remove mixes at 1e3..1e6 live objects (uniform random keys)",
     [](cxxopts::Options& o) {
         o.add_options()("live", "live object counts (default 1e3,1e4,1e5,1e6; --quick 1e3,1e4)",
                         cxxopts::value<std::string>())(
             "value-size", "object size", cxxopts::value<std::string>()->default_value("1K"))(
             "ops", "timed operations per phase (default 200000; --quick 20000)", cxxopts::value<uint64_t>());
     },
     run_store});

}  // namespace
}  // namespace fabric_shm::bench
