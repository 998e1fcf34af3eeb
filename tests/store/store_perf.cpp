// SPDX-License-Identifier: MIT
// Quick same-process latency check for MemObjectStore (not a test, not the benchmark tool):
// median ns of put and get of 1 KiB over one key set, loan+commit+pin of 1 MiB, CRC of 1 MiB.
// Usage: store_perf [iterations]
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../support/test_support.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"

using namespace fabric_shm;

namespace {
uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}
double median(std::vector<uint64_t>& v) {
    std::sort(v.begin(), v.end());
    return double(v[v.size() / 2]);
}
double pct(std::vector<uint64_t>& v, double p) {
    std::sort(v.begin(), v.end());
    return double(v[size_t(double(v.size() - 1) * p)]);
}
}  // namespace

int main(int argc, char** argv) {
    const int iters = argc > 1 ? std::atoi(argv[1]) : 200000;
    test::PoolCleanup cleanup(test::unique_pool_name("perf"));
    auto pool = Pool::create({cleanup.name(), 256 << 20});
    if (!pool) return 1;
    auto store = MemObjectStore::open(*pool);
    if (!store) return 2;
    constexpr int kKeys = 1000;
    std::vector<FabricUri> uris;
    for (int i = 0; i < kKeys; ++i) uris.push_back(FabricUri::make(cleanup.name(), "bench", "key-" + std::to_string(i)).value());
    std::vector<uint8_t> data(1024, 0x42);
    for (int i = 0; i < kKeys; ++i) (void)(*store)->put(uris[size_t(i)], data);  // warm-up
    // Timed in batches of 100 operations: clock_gettime costs ~65 ns on this VM, as much as
    // the operations themselves, so per-operation timing would mostly measure the clock.
    constexpr int kBatch = 100;
    std::vector<uint64_t> put_ns, get_ns;
    for (int i = 0; i + kBatch <= iters; i += kBatch) {
        const uint64_t t0 = now_ns();
        for (int j = 0; j < kBatch; ++j) {
            data[0] = uint8_t(i + j);
            if (!(*store)->put(uris[size_t((i + j) % kKeys)], data)) return 3;
        }
        const uint64_t t1 = now_ns();
        for (int j = 0; j < kBatch; ++j) {
            auto g = (*store)->get(uris[size_t((i + j) % kKeys)]);
            if (!g || !g->has_value()) return 3;
        }
        const uint64_t t2 = now_ns();
        put_ns.push_back((t1 - t0) / kBatch);
        get_ns.push_back((t2 - t1) / kBatch);
    }
    std::printf("1 KiB put: median %.0f ns, p99 %.0f ns (mean per op over batches of %d; %d ops over %d keys)\n",
                median(put_ns), pct(put_ns, 0.99), kBatch, iters, kKeys);
    std::printf("1 KiB get: median %.0f ns, p99 %.0f ns\n", median(get_ns), pct(get_ns, 0.99));

    std::vector<uint64_t> zc, crc_ns, pin_ns;
    const FabricUri big = FabricUri::make(cleanup.name(), "bench", "big").value();
    for (int i = 0; i < 200; ++i) {
        const uint64_t t0 = now_ns();
        auto loan = (*store)->loan(1 << 20);
        if (!loan) return 4;
        loan->bytes()[0] = uint8_t(i);
        auto v = (*store)->commit(std::move(*loan), big);
        const uint64_t t1 = now_ns();
        auto p = (*store)->pin(big);
        const uint64_t t2 = now_ns();
        if (!v || !p || !p->has_value()) return 5;
        const uint64_t t3 = now_ns();
        volatile uint32_t c = crc32((*p)->bytes().data(), (*p)->bytes().size());
        (void)c;
        const uint64_t t4 = now_ns();
        zc.push_back(t1 - t0);
        pin_ns.push_back(t2 - t1);
        crc_ns.push_back(t4 - t3);
    }
    std::printf("1 MiB loan+commit (CRC at commit, no copy): median %.0f ns\n", median(zc));
    std::printf("1 MiB pinned get (no copy, no CRC): median %.0f ns\n", median(pin_ns));
    std::printf("CRC-32 of 1 MiB alone: median %.0f ns\n", median(crc_ns));
    return 0;
}
