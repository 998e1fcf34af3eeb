// SPDX-License-Identifier: MIT
// copy_crc32: memcpy and CRC-32 in one pass (see copy_crc32.h for why).
//
// The CRC is the gzip one (reflected polynomial 0xEDB88320), computed by folding: the message
// is cut into 16-byte lanes, and a lane A followed D bits later by lane B is replaced by
// clmul(A.low64, x^(D+32) mod P) ^ clmul(A.high64, x^(D-32) mod P) ^ B, which is congruent to
// A * x^D + B modulo P (bit-reflected, so each constant is reflected and shifted left by one;
// Intel, "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ", 2009). The main loop
// keeps four 512-bit accumulators (sixteen lanes, D = 2048 bits) and folds each 256-byte stride
// into them; at the end the four fold into one 64-byte value, the tail's whole 64-byte lines
// fold into that, and ISA-L's crc32 finishes over the 64 bytes folded and the last partial line. The seed's
// pre-inversion is XORed into the first four message bytes in the accumulator only (the
// destination gets the bytes unchanged).
#include "store/copy_crc32.h"

#include <cstring>

#include "fabric_shm/object_store.h"
#include "seqlock_copy.h"

#if defined(__x86_64__) && !defined(FABRIC_SHM_TSAN)
#define FABRIC_SHM_FUSED_CRC 1
#include <immintrin.h>
#endif

namespace fabric_shm::detail {

namespace {

/// x^n mod P, P the CRC-32 polynomial in normal (unreflected) form with its x^32 term.
constexpr uint64_t xpow_mod(unsigned n) {
    uint64_t r = 1;
    for (unsigned i = 0; i < n; ++i) {
        r <<= 1;
        if (r & (1ULL << 32)) r ^= 0x104C11DB7ULL;
    }
    return r;
}

constexpr uint64_t reflect32(uint64_t v) {
    uint64_t r = 0;
    for (int i = 0; i < 32; ++i)
        if (v & (1ULL << i)) r |= 1ULL << (31 - i);
    return r;
}

/// The fold constants for a distance of d bits: {low lane multiplier, high lane multiplier}.
struct FoldConstants {
    uint64_t low, high;
};
constexpr FoldConstants fold_by(unsigned d) { return {reflect32(xpow_mod(d + 32)) << 1, reflect32(xpow_mod(d - 32)) << 1}; }

// The published constants of the 128- and 512-bit folds (Linux's crc32-pclmul) pin the
// derivation: a wrong sign or shift here would fail the build, not the data.
static_assert(fold_by(128).low == 0x1751997d0 && fold_by(128).high == 0x0ccaa009e);
static_assert(fold_by(512).low == 0x154442bd4 && fold_by(512).high == 0x1c6e41596);

#if defined(FABRIC_SHM_FUSED_CRC)

#define FABRIC_SHM_FUSED_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,vpclmulqdq,pclmul")))

FABRIC_SHM_FUSED_TARGET inline __m512i constants(FoldConstants k) {
    const auto lo = int64_t(k.low), hi = int64_t(k.high);
    return _mm512_set_epi64(hi, lo, hi, lo, hi, lo, hi, lo);  // the pair in each 128-bit lane
}

/// acc * x^D + next (mod P), lane by lane, D the distance k was made for.
FABRIC_SHM_FUSED_TARGET inline __m512i fold(__m512i acc, __m512i k, __m512i next) {
    const __m512i lo = _mm512_clmulepi64_epi128(acc, k, 0x00);
    const __m512i hi = _mm512_clmulepi64_epi128(acc, k, 0x11);
    return _mm512_ternarylogic_epi64(lo, hi, next, 0x96);  // lo ^ hi ^ next
}

FABRIC_SHM_FUSED_TARGET uint32_t fused_avx512(uint8_t* dst, const uint8_t* src, size_t n, uint32_t seed) {
    // n >= 256. The first stride starts the accumulators; ~seed (the CRC's initial state) is
    // XORed into the message's first four bytes.
    __m512i a0 = _mm512_loadu_si512(src), a1 = _mm512_loadu_si512(src + 64);
    __m512i a2 = _mm512_loadu_si512(src + 128), a3 = _mm512_loadu_si512(src + 192);
    _mm512_storeu_si512(dst, a0);
    _mm512_storeu_si512(dst + 64, a1);
    _mm512_storeu_si512(dst + 128, a2);
    _mm512_storeu_si512(dst + 192, a3);
    a0 = _mm512_xor_si512(a0, _mm512_zextsi128_si512(_mm_cvtsi32_si128(int(~seed))));
    const __m512i k2048 = constants(fold_by(2048));
    size_t i = 256;
    for (; i + 256 <= n; i += 256) {
        const __m512i d0 = _mm512_loadu_si512(src + i), d1 = _mm512_loadu_si512(src + i + 64);
        const __m512i d2 = _mm512_loadu_si512(src + i + 128), d3 = _mm512_loadu_si512(src + i + 192);
        _mm512_storeu_si512(dst + i, d0);
        _mm512_storeu_si512(dst + i + 64, d1);
        _mm512_storeu_si512(dst + i + 128, d2);
        _mm512_storeu_si512(dst + i + 192, d3);
        a0 = fold(a0, k2048, d0);
        a1 = fold(a1, k2048, d1);
        a2 = fold(a2, k2048, d2);
        a3 = fold(a3, k2048, d3);
    }
    // a0..a3 hold consecutive 64-byte lanes: move each onto a3's place and sum.
    __m512i all = fold(a0, constants(fold_by(1536)), a3);
    all = fold(a1, constants(fold_by(1024)), all);
    const __m512i k512 = constants(fold_by(512));
    all = fold(a2, k512, all);
    for (; i + 64 <= n; i += 64) {  // the tail's whole lines, one at a time
        const __m512i d = _mm512_loadu_si512(src + i);
        _mm512_storeu_si512(dst + i, d);
        all = fold(all, k512, d);
    }
    alignas(64) uint8_t folded[64];
    _mm512_store_si512(folded, all);
    const size_t tail = n - i;
    if (tail) std::memcpy(dst + i, src + i, tail);
    // `folded` stands for everything before the tail, folded from a zero state: crc32's seed
    // ~0 is that state (it inverts the seed), and its result continues over the tail as a seed.
    const uint32_t c = crc32(folded, sizeof folded, ~0u);
    return crc32(dst + i, tail, c);
}

#endif

}  // namespace

uint32_t copy_crc32_two_pass(void* dst, const void* src, size_t n, uint32_t seed) noexcept {
    seqlock_copy(dst, src, n);
    // The CRC of what landed: for a copy out of a block a writer may be reusing, dst is the
    // stable one.
    return crc32(dst, n, seed);
}

bool copy_crc32_fused_available() noexcept {
#if defined(FABRIC_SHM_FUSED_CRC)
    // GCC's cpu model also checks that the OS saves the 512-bit state (XCR0).
    static const bool available = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq") &&
                                  __builtin_cpu_supports("pclmul");
    return available;
#else
    return false;
#endif
}

uint32_t copy_crc32_fused(void* dst, const void* src, size_t n, uint32_t seed) noexcept {
#if defined(FABRIC_SHM_FUSED_CRC)
    if (n >= 256 && copy_crc32_fused_available())
        return fused_avx512(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n, seed);
#endif
    return copy_crc32_two_pass(dst, src, n, seed);
}

uint32_t copy_crc32(void* dst, const void* src, size_t n, uint32_t seed) noexcept {
    if (n >= kCopyCrcFusedMin) return copy_crc32_fused(dst, src, n, seed);
    return copy_crc32_two_pass(dst, src, n, seed);
}

}  // namespace fabric_shm::detail
