// SPDX-License-Identifier: MIT
// copy_crc32: the one-pass copy + CRC gives the bytes of memcpy and the CRC of crc32 for every
// length, alignment and seed, and writes nothing outside the destination.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "fabric_shm/object_store.h"
#include "store/copy_crc32.h"

using namespace fabric_shm;

namespace {

using CopyCrc = uint32_t (*)(void*, const void*, size_t, uint32_t) noexcept;

constexpr uint8_t kGuard = 0xA5;
constexpr size_t kGuardBytes = 64;

/// Copies src[0, n) with `copy` to an offset of a guarded buffer and checks the bytes, the CRC
/// against crc32(src, n, seed), and the guard bytes on both sides.
void check_copy(CopyCrc copy, const std::vector<uint8_t>& src, size_t src_offset, size_t dst_offset, size_t n,
                uint32_t seed) {
    std::vector<uint8_t> dst(kGuardBytes + dst_offset + n + kGuardBytes, kGuard);
    uint8_t* to = dst.data() + kGuardBytes + dst_offset;
    const uint8_t* from = src.data() + src_offset;
    const uint32_t got = copy(to, from, n, seed);
    INFO("n = ", n, ", src offset ", src_offset, ", dst offset ", dst_offset, ", seed ", seed);
    REQUIRE(got == crc32(from, n, seed));
    REQUIRE(std::memcmp(to, from, n) == 0);
    for (size_t i = 0; i < kGuardBytes + dst_offset; ++i) REQUIRE(dst[i] == kGuard);
    for (size_t i = kGuardBytes + dst_offset + n; i < dst.size(); ++i) REQUIRE(dst[i] == kGuard);
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = uint8_t(rng());
    return v;
}

void check_lengths_and_alignments(CopyCrc copy) {
    const auto src = random_bytes(70000, 7);
    // Every length around the kernel's strides (256 bytes, the 64-byte lines, the tail), at
    // every source and destination misalignment within a line for some of them.
    for (size_t n = 0; n <= 1300; ++n) check_copy(copy, src, n % 61, n % 37, n, 0);
    for (size_t n : {255, 256, 257, 511, 512, 1023, 1024, 1025, 4096, 4099, 65536, 65537, 69999})
        for (size_t so : {0, 1, 8, 15, 32, 63})
            for (size_t dof : {0, 3, 16, 63}) check_copy(copy, src, so, dof, std::min(n, src.size() - so), 0);
}

}  // namespace

TEST_CASE("copy_crc32: the two-pass copy gives memcpy's bytes and crc32's CRC") {
    check_lengths_and_alignments(&detail::copy_crc32_two_pass);
}

TEST_CASE("copy_crc32: the one-pass kernel gives memcpy's bytes and crc32's CRC for every length and alignment") {
    if (!detail::copy_crc32_fused_available()) {
        MESSAGE("no one-pass kernel here (a CPU without AVX-512 VPCLMULQDQ, or a TSan build): copy_crc32 runs two "
                "passes (tested above)");
        return;
    }
    check_lengths_and_alignments(&detail::copy_crc32_fused);
}

TEST_CASE("copy_crc32: a seed continues a CRC, as crc32's does, through the one-pass kernel") {
    const auto src = random_bytes(9000, 11);
    // The seed is the CRC of what came before: a copy in two parts has the CRC of the whole.
    for (size_t cut : {0, 1, 300, 4096, 8999}) {
        std::vector<uint8_t> dst(src.size());
        const uint32_t first = detail::copy_crc32(dst.data(), src.data(), cut);
        const uint32_t whole = detail::copy_crc32(dst.data() + cut, src.data() + cut, src.size() - cut, first);
        CHECK(whole == crc32(src.data(), src.size()));
        CHECK(dst == src);
    }
    for (uint32_t seed : {0u, 1u, 0xFFFFFFFFu, 0x12345678u, 0x80000000u}) {
        check_copy(&detail::copy_crc32, src, 5, 9, 4000, seed);
        if (detail::copy_crc32_fused_available()) check_copy(&detail::copy_crc32_fused, src, 0, 0, 300, seed);
    }
}

TEST_CASE("copy_crc32: all-zero and all-ones payloads (no lane cancels another)") {
    for (uint8_t fill : {uint8_t(0), uint8_t(0xFF)}) {
        const std::vector<uint8_t> src(1 << 20, fill);
        check_copy(&detail::copy_crc32, src, 0, 0, src.size(), 0);
        check_copy(&detail::copy_crc32, src, 0, 0, 2048, 0);
    }
}
