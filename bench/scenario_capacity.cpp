// SPDX-License-Identifier: MIT
// Scenario "capacity": how many objects of each size fit in a pool of each size with the
// default store geometry, and the heap bytes each one costs. Each (pool size, object size)
// pair gets a fresh pool whose store is filled with put (keys like the producer's,
// uploads/synthetic-000000) until capacity_exceeded; the loan path (loan(uri, size) +
// commit()) is filled the same way in a second pool. Reported per pair: objects stored,
// heap bytes per object (size-class rounding, the 64 B header and the trailer included),
// that over the payload, and which limit stopped it (heap or table).
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "harness/bench.h"

namespace fabric_shm::bench {
namespace {

struct CapacityFill {
    uint64_t objects = 0, heap_used = 0, heap_capacity = 0, max_object = 0;
    std::string stopped_by;  ///< "heap", "table", "object_too_large", or an error
};

CapacityFill capacity_fill(uint64_t pool_size, uint64_t size, bool use_loan) {
    CapacityFill r;
    PoolGuard guard;
    guard.name = "bench-capacity-" + std::to_string(getpid());
    PoolOptions po;
    po.name = guard.name;
    po.size_bytes = pool_size;
    auto pool = Pool::create(po);
    if (!pool) {
        r.stopped_by = pool.error().message;
        return r;
    }
    auto opened = MemObjectStore::open(*pool);
    if (!opened) {
        r.stopped_by = opened.error().message;
        return r;
    }
    MemObjectStore& store = **opened;
    const std::vector<uint8_t> payload(size, 0x5a);
    char key[32];
    for (uint64_t i = 0;; ++i) {
        std::snprintf(key, sizeof key, "synthetic-%06llu", static_cast<unsigned long long>(i));
        const FabricUri uri = FabricUri::make(guard.name, "uploads", key).value();
        Result<uint64_t> v = uint64_t(0);
        if (use_loan) {
            auto loan = store.loan(uri, size);
            if (!loan) {
                v = loan.error();
            } else {
                std::memcpy(loan->bytes().data(), payload.data(), size);
                v = loan->commit();
            }
        } else {
            v = store.put(uri, payload);
        }
        if (!v) {
            const std::string& m = v.error().message;
            r.stopped_by = v.code() == Errc::object_too_large                  ? "object_too_large"
                           : m.find("--table-entries") != std::string::npos    ? "table"
                           : m.find("--heap-size") != std::string::npos        ? "heap"
                                                                                : m;
            break;
        }
    }
    const StoreStats st = store.stats();
    r.objects = st.objects;
    r.heap_used = st.heap_used_bytes;
    r.heap_capacity = st.heap_capacity_bytes;
    r.max_object = st.max_object_bytes;
    return r;
}

int run_capacity(Context& ctx) {
    const auto& o = ctx.options;
    const std::vector<uint64_t> pools =
        parse_size_list(o.count("pool-sizes") ? o["pool-sizes"].as<std::string>() : (ctx.quick ? "32M" : "32M,256M,1G"));
    const std::vector<uint64_t> sizes =
        parse_size_list(o.count("object-sizes") ? o["object-sizes"].as<std::string>() : "64,1K,64K,1M");
    ctx.report.config() = {{"pool_sizes", pools},
                           {"object_sizes", sizes},
                           {"pattern", "fill a fresh default-geometry store with put (and loan+commit) until full"}};
    for (uint64_t pool_size : pools)
        for (uint64_t size : sizes)
            for (bool use_loan : {false, true}) {
                const uint64_t start = mono_now_ns();
                const CapacityFill f = capacity_fill(pool_size, size, use_loan);
                Measurement m;
                m.name = std::string(use_loan ? "loan " : "put ") + human_bytes(size) + " in " + human_bytes(pool_size);
                m.ops = f.objects;
                m.seconds = double(mono_now_ns() - start) / 1e9;
                const double per = f.objects ? double(f.heap_used) / double(f.objects) : 0;
                m.extra = {{"objects", f.objects},
                           {"heap_bytes_per_object", per},
                           {"over_payload", size ? per / double(size) : 0},
                           {"heap_capacity_bytes", f.heap_capacity},
                           {"max_object_bytes", f.max_object},
                           {"stopped_by", f.stopped_by}};
                std::printf("capacity: %-5s %6s objects in a %5s pool: %8llu fit, %9.0f heap bytes per object "
                            "(%.2fx payload), stopped by %s\n",
                            use_loan ? "loan" : "put", human_bytes(size).c_str(), human_bytes(pool_size).c_str(),
                            static_cast<unsigned long long>(f.objects), per, size ? per / double(size) : 0.0,
                            f.stopped_by.c_str());
                ctx.report.add(std::move(m));
            }
    return 0;
}

const bool capacity_scenario_registered = register_scenario(
    {"capacity", "objects of each size that fit in pools of each size; heap bytes per object (put and loan)",
     [](cxxopts::Options& o) {
         o.add_options()("pool-sizes", "capacity: pool sizes (default 32M,256M,1G; --quick 32M)",
                         cxxopts::value<std::string>())(
             "object-sizes", "capacity: object sizes (default 64,1K,64K,1M)", cxxopts::value<std::string>());
     },
     run_capacity});

}  // namespace
}  // namespace fabric_shm::bench
