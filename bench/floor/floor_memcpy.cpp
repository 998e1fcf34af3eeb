// SPDX-License-Identifier: MIT
// Floor 3: single-core copy and checksum bandwidth for each object size, warm (buffers
// touched and copied once before timing). For each size: memcpy (src -> dst), and the
// standard CRC-32 (ISA-L crc32_gzip_refl, the checksum the fabric-shm pipeline uses), so
// "loan path costs only the CRC" and "copy path >= 70 % of memcpy" can be checked against
// this machine. Latency percentiles are per operation (small sizes are timed in batches
// of `batch` operations and divided, so the clock read does not dominate).
// Usage: floor_memcpy [--seconds S per size (default 0.25)] [--size B (one size only)]
#include "common.h"

#include <isa-l/crc.h>

#include <vector>

using namespace floorbench;

namespace {

template <class Op>
void run(const char* scenario, uint64_t size, double seconds, Op op) {
    const uint64_t batch = size <= 16384 ? 64 : size <= 262144 ? 4 : 1;
    for (int i = 0; i < 3; ++i) op();  // warm
    Histogram h;
    uint64_t ops = 0;
    const uint64_t t0 = now_ns(), stop = t0 + uint64_t(seconds * 1e9);
    uint64_t t = t0;
    while (t < stop) {
        for (uint64_t b = 0; b < batch; ++b) op();
        const uint64_t t1 = now_ns();
        h.record((t1 - t) / batch);
        t = t1;
        ops += batch;
    }
    const double secs = double(t - t0) / 1e9;
    Json().s("system", "floor").s("scenario", scenario).s("variant", "single_core_warm").s("mode", "cpu")
        .u("size", size).u("count", ops).d("seconds", secs)
        .d("throughput", double(ops) * double(size) / secs).s("unit", "B/s")
        .d("ops_per_s", double(ops) / secs)
        .d("p50_throughput", h.percentile(50) ? double(size) * 1e9 / double(h.percentile(50)) : 0.0).hist(h).s("latency", "per_op").u("batch", batch).print();
}

}  // namespace

int main(int argc, char** argv) {
    Opts o = parse_opts(argc, argv);
    if (o.seconds == 2.0) o.seconds = 0.25;  // per size
    std::vector<uint64_t> sizes;
    if (o.size) sizes.push_back(o.size);
    else for (uint64_t s = 1024; s <= (16ull << 20); s *= 4) sizes.push_back(s);  // 1K,4K,..,16M
    for (uint64_t size : sizes) {
        std::vector<unsigned char> src(size), dst(size);
        for (uint64_t i = 0; i < size; ++i) src[i] = static_cast<unsigned char>(i * 131u);
        if (wanted(o, "memcpy"))
            run("memcpy", size, o.seconds, [&] {
                std::memcpy(dst.data(), src.data(), size);
                asm volatile("" : : "r"(dst.data()) : "memory");  // keep the copy
            });
        volatile uint32_t sink = 0;
        if (wanted(o, "crc32"))
            run("crc32", size, o.seconds, [&] {
                sink = crc32_gzip_refl(0, src.data(), size);
                asm volatile("" : : : "memory");
            });
        (void)sink;
    }
    return 0;
}
