// SPDX-License-Identifier: MIT
// A copy that computes the CRC-32 of what it copies in the same pass.
//
// A copied put used to read its source twice: memcpy into the block, then crc32 over the
// source. Below the cache size the two passes cost about the sum of their times (the copy
// put measured 0.42x memcpy at 64 KiB, the two-pass floor). The fused kernel loads each
// 64-byte line once, stores it to the destination and folds the same register into the CRC
// (carry-less multiplication, 4 x 512-bit accumulators), so the copy and the CRC arithmetic
// share one read. The CRC is of the bytes as loaded, which are the bytes stored: a copy out
// of shared memory that races a writer still checks exactly what it returned.
//
// Used where an object's payload is copied and its CRC is needed: the copied put (into the
// block) and the copied get (out of it). Results equal crc32(src, n, seed) on every CPU;
// where the CPU lacks AVX-512 with VPCLMULQDQ it is memcpy, then ISA-L's crc32.
#pragma once

#include "private.h"

#include <cstddef>
#include <cstdint>

namespace fabric_shm::detail {

/// Copies n bytes from src to dst (not overlapping) and returns crc32(src, n, seed).
uint32_t copy_crc32(void* dst, const void* src, size_t n, uint32_t seed = 0) noexcept;

/// The two ways copy_crc32 can run, for tests and benchmarks: memcpy then crc32, and the
/// one-pass kernel (only where copy_crc32_fused_available()).
uint32_t copy_crc32_two_pass(void* dst, const void* src, size_t n, uint32_t seed = 0) noexcept;
uint32_t copy_crc32_fused(void* dst, const void* src, size_t n, uint32_t seed = 0) noexcept;
bool copy_crc32_fused_available() noexcept;

/// Below this many bytes copy_crc32 runs two passes: the fused kernel works in 256-byte
/// strides and finishes with a 64-byte CRC, which does not pay on a few lines.
inline constexpr size_t kCopyCrcFusedMin = 1024;

}  // namespace fabric_shm::detail
