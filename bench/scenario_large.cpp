// SPDX-License-Identifier: MIT
// Scenario "large": the copy path against the zero-copy path for 4 KiB .. 16 MiB objects,
// next to the machine's floor for the same size: memcpy bandwidth and crc32 (ISA-L) time.
//   copy put      store.put(uri, bytes): copy into the pool + CRC + publish
//   loan+commit   store.loan(uri, n) then commit(): CRC + publish, no copy. The bytes are not
//                 rewritten between iterations (a producer would fill them in place; that
//                 fill is its own work in both paths, so neither side is charged for it)
//   copy get      store.get(uri): copy out of the pool into a vector + CRC verify
//   pin           store.pin(uri): a view of the bytes in the pool, no copy, no CRC
//   pin+verify    pin + PinnedView::verify(): the CRC a careful reader pays
// One key is overwritten in place so the heap footprint stays flat; each size gets a
// warm-up of a quarter of its iterations.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/object_store.h"
#include "fabric_shm/pool.h"
#include "harness/bench.h"

namespace fabric_shm::bench {
namespace {

int run_large(Context& ctx) {
    const auto& o = ctx.options;
    const std::vector<uint64_t> sizes = parse_size_list(
        o.count("sizes") ? o["sizes"].as<std::string>() : (ctx.quick ? "4K,64K,1M" : "4K,16K,64K,256K,1M,4M,16M"));
    const uint64_t budget = ctx.quick ? (64ull << 20) : (1ull << 30);  // bytes moved per measurement
    const uint64_t max_size = *std::max_element(sizes.begin(), sizes.end());
    ctx.report.config() = {{"sizes", sizes},
                           {"bytes_per_measurement", budget},
                           {"pattern", "one key overwritten in place; one process, one thread"}};

    PoolGuard guard;
    guard.name = "bench-large-" + std::to_string(getpid());
    StoreConfig sc;
    sc.max_object_bytes = max_size;
    sc.heap_bytes = std::max<uint64_t>(64ull << 20, max_size * 8);
    sc.table_entries = 1024;
    PoolOptions po;
    po.name = guard.name;
    po.size_bytes = sc.heap_bytes + (64ull << 20);
    auto pool = Pool::create(po);
    if (!pool) {
        std::fprintf(stderr, "large: %s\n", pool.error().message.c_str());
        return 1;
    }
    auto opened = MemObjectStore::open(*pool, sc);
    if (!opened) {
        std::fprintf(stderr, "large: open: %s\n", opened.error().message.c_str());
        return 1;
    }
    MemObjectStore& store = **opened;
    const FabricUri uri = FabricUri::make(guard.name, "large", "obj").value();
    const FabricUri loaned = FabricUri::make(guard.name, "large", "loaned").value();
    uint64_t failures = 0;

    for (const uint64_t size : sizes) {
        const uint64_t iters = std::clamp<uint64_t>(budget / size, 16, 20000);
        const uint64_t warmup = std::max<uint64_t>(4, iters / 4);
        const std::string tag = " " + human_bytes(size);
        std::vector<uint8_t> src(size), dst(size);
        for (uint64_t i = 0; i < size; ++i) src[i] = uint8_t(i * 131 + 7);
        std::memset(dst.data(), 0, size);
        std::fprintf(stderr, "large: %s x %llu\n", human_bytes(size).c_str(), (unsigned long long)iters);
        auto add = [&](Measurement m) {
            m.bytes_per_op = size;
            m.extra["object_bytes"] = size;
            ctx.report.add(std::move(m));
        };
        add(measure("memcpy (floor)" + tag, warmup, iters, [&](uint64_t i) {
            src[0] = uint8_t(i);
            std::memcpy(dst.data(), src.data(), size);
            do_not_optimize(dst[size - 1]);
        }));
        add(measure("crc32 isa-l (floor)" + tag, warmup, iters, [&](uint64_t) {
            uint32_t c = crc32(src.data(), size);
            do_not_optimize(c);
        }));
        add(measure("copy put" + tag, warmup, iters, [&](uint64_t) {
            auto r = store.put(uri, src);
            if (!r) ++failures;
        }));
        add(measure("loan+commit" + tag, warmup, iters, [&](uint64_t) {
            auto loan = store.loan(loaned, size);
            if (!loan) {
                ++failures;
                return;
            }
            auto r = loan->commit();
            if (!r) ++failures;
        }));
        add(measure("copy get" + tag, warmup, iters, [&](uint64_t) {
            auto r = store.get(uri);
            if (!r || !r->has_value()) ++failures;
            do_not_optimize(r);
        }));
        add(measure("pin (view, no copy)" + tag, warmup, iters, [&](uint64_t) {
            auto r = store.pin(uri);
            if (!r || !r->has_value()) {
                ++failures;
                return;
            }
            do_not_optimize((**r).bytes().data());
        }));
        add(measure("pin+verify" + tag, warmup, iters, [&](uint64_t) {
            auto r = store.pin(uri);
            if (!r || !r->has_value() || !(**r).verify()) ++failures;
        }));
    }
    if (failures) {
        ctx.report.note("FAILED OPERATIONS: " + std::to_string(failures));
        std::fprintf(stderr, "large: %llu operations failed\n", (unsigned long long)failures);
    }
    return 0;
}

const bool large_scenario_registered = register_scenario(
    {"large", "copy put vs loan+commit, copy get vs pinned view, 4 KiB..16 MiB, next to memcpy and crc32",
     [](cxxopts::Options& o) {
         o.add_options()("sizes", "object sizes (default 4K,16K,64K,256K,1M,4M,16M; --quick 4K,64K,1M)",
                         cxxopts::value<std::string>());
     },
     run_large});

}  // namespace
}  // namespace fabric_shm::bench
