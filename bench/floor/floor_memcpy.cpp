// SPDX-License-Identifier: MIT
// Floor 3: single-core copy and checksum bandwidth for each object size, warm (buffers
// touched and copied once before timing). For each size: memcpy (src -> dst), and the
// standard CRC-32 (ISA-L crc32_gzip_refl, the checksum the fabric-shm pipeline uses), so
// "loan path costs only the CRC" and "copy path >= 70 % of memcpy" can be checked against
// this machine. Latency percentiles are per operation (small sizes are timed in batches
// of `batch` operations and divided, so the clock read does not dominate).
// Where the CPU has AVX-512 and VPCLMULQDQ, a third scenario, copy_fold: the copy with the
// CRC's inner loop over the same bytes (four 64-byte accumulators, each line loaded once,
// stored to dst and folded: two carry-less multiplies and one three-way XOR per line), without
// the final reduction. No fused copy + CRC can run faster on this CPU; the store's kernel
// (copy_crc32) is this loop plus the reduction and its tail. The loop is written out here,
// not called: floor programs are built without the library (scripts/bench-peers.sh), so a
// change to the library's kernel cannot move its own floor.
// Usage: floor_memcpy [--seconds S per size (default 0.25)] [--size B (one size only)]
#include "common.h"

#include <isa-l/crc.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

#if defined(__x86_64__)
#define FLOOR_FOLD_TARGET __attribute__((target("avx512f,avx512vl,vpclmulqdq")))

bool fold_available() {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("vpclmulqdq");
}

/// acc * k + line in each 128-bit lane (carry-less): one fold step of a CRC by folding.
FLOOR_FOLD_TARGET inline __m512i fold_line(__m512i acc, __m512i k, __m512i line) {
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(acc, k, 0x00), _mm512_clmulepi64_epi128(acc, k, 0x11),
                                     line, 0x96);  // lo ^ hi ^ line
}

/// Copies n bytes (a multiple of 256, at least 256) and folds them into four accumulators, as
/// a CRC by folding does per 256 bytes; returns the XOR of the accumulators (kept live).
FLOOR_FOLD_TARGET uint64_t copy_fold(unsigned char* dst, const unsigned char* src, uint64_t n) {
    const __m512i k = _mm512_set1_epi64(0x154442bd4);  // any constant: the multiply's cost does not depend on it
    __m512i a0 = _mm512_loadu_si512(src), a1 = _mm512_loadu_si512(src + 64);
    __m512i a2 = _mm512_loadu_si512(src + 128), a3 = _mm512_loadu_si512(src + 192);
    _mm512_storeu_si512(dst, a0);
    _mm512_storeu_si512(dst + 64, a1);
    _mm512_storeu_si512(dst + 128, a2);
    _mm512_storeu_si512(dst + 192, a3);
    for (uint64_t i = 256; i + 256 <= n; i += 256) {
        const __m512i d0 = _mm512_loadu_si512(src + i), d1 = _mm512_loadu_si512(src + i + 64);
        const __m512i d2 = _mm512_loadu_si512(src + i + 128), d3 = _mm512_loadu_si512(src + i + 192);
        _mm512_storeu_si512(dst + i, d0);
        _mm512_storeu_si512(dst + i + 64, d1);
        _mm512_storeu_si512(dst + i + 128, d2);
        _mm512_storeu_si512(dst + i + 192, d3);
        a0 = fold_line(a0, k, d0);
        a1 = fold_line(a1, k, d1);
        a2 = fold_line(a2, k, d2);
        a3 = fold_line(a3, k, d3);
    }
    alignas(64) uint64_t out[8];
    _mm512_store_si512(out, _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3)));
    return out[0] ^ out[7];
}
#else
bool fold_available() { return false; }
uint64_t copy_fold(unsigned char*, const unsigned char*, uint64_t) { return 0; }
#endif

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
        volatile uint64_t folded = 0;
        if (wanted(o, "copy_fold") && fold_available() && size >= 256 && size % 256 == 0)
            run("copy_fold", size, o.seconds, [&] {
                folded = copy_fold(dst.data(), src.data(), size);
                asm volatile("" : : "r"(dst.data()) : "memory");
            });
        (void)sink;
        (void)folded;
    }
    return 0;
}
