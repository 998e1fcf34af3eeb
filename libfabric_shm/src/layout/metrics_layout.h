// SPDX-License-Identifier: MIT
// The metrics region (RegionKind::metrics, one per pool, name "latency"): end-to-end latency
// histograms keyed by (topic, group), each written through per-process shards.
//
//   0                 MetricsHeader                      64 B
//   keys_offset       MetricsKey[kMetricsKeys]           one aggregate histogram per key
//   shards_offset     LatencyShard[kMetricsShards]       claimed on demand, one writer each
//
// A key's value = its aggregate (folded shards of dead processes, plus recorders that found no
// free shard: fetch_add) + every shard whose word names that key. Readers sum without locks;
// the total is best effort for the instant a folder moves a shard into the aggregate (the same
// rule as the counter shards in the process registry).
#pragma once

#include "private.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "layout/pool_layout.h"

namespace fabric_shm::layout {

constexpr uint64_t kMetricsMagic = 0x5352544d4d484646ULL;  ///< "FFHMMTRS" little-endian
constexpr uint32_t kMetricsVersion = 1;
constexpr uint32_t kMetricsKeys = 32;
constexpr uint32_t kMetricsShards = 64;
constexpr uint32_t kMetricsKeyNameBytes = 128;  ///< "topic\0group\0", NUL-padded

// Log-linear buckets over nanoseconds: values 0..7 exact, then 8 sub-buckets per power of two
// (a bucket is at most 1/8 = 12.5 % of its lower bound wide) up to 2^42 ns (~73 min); larger
// values land in the last bucket (the exact maximum is kept apart).
constexpr uint32_t kLatencySubBits = 3;
constexpr uint32_t kLatencySub = 1u << kLatencySubBits;
constexpr uint32_t kLatencyTopExponent = 42;  ///< first power of two past the bucketed range
constexpr uint32_t kLatencyBuckets = kLatencySub + (kLatencyTopExponent - kLatencySubBits) * kLatencySub;
static_assert(kLatencyBuckets == 320, "the bucket math is part of the layout: a reader with other math refuses (MetricsHeader::buckets)");

/// One histogram's cells. In a shard: one writer (relaxed load + store, no locked
/// instruction), readers relaxed; the folder exchange(0)s each cell once the writer is dead.
/// In a key's aggregate: fetch_add / CAS-max by folders and shard-less recorders.
struct alignas(kCacheLine) LatencyCells {
    std::atomic<uint64_t> sum_ns;   ///< sum of recorded values (wraps after ~584 years of latency)
    std::atomic<uint64_t> max_ns;   ///< largest recorded value
    uint64_t reserved[6];
    std::atomic<uint64_t> buckets[kLatencyBuckets];  ///< count per bucket; the sample count is their sum
};
static_assert(sizeof(LatencyCells) == 64 + 8 * kLatencyBuckets, "every process of every build addresses the cells alike");
static_assert(offsetof(LatencyCells, buckets) == 64, "buckets start on the second line: sum and max writes do not bounce them");

// Key word: (state << 56) | creator token.  FREE -> CREATING(token) by CAS, name written,
// LIVE release-stored. A CREATING entry whose creator is dead is reset to FREE by the reaper
// hook (no shard can name it: shards only name LIVE keys). Keys are never removed otherwise.
enum MetricsKeyState : uint64_t { kKeyFree = 0, kKeyCreating = 1, kKeyLive = 2 };

struct alignas(kCacheLine) MetricsKey {
    std::atomic<uint64_t> word;   ///< state above; CAS / release store by the creator
    uint64_t reserved0[7];
    std::atomic<uint64_t> name[kMetricsKeyNameBytes / 8];  ///< creator, before LIVE; immutable after
    LatencyCells aggregate;       ///< folded shards + shard-less recorders (fetch_add)
};
static_assert(sizeof(MetricsKey) == 64 + kMetricsKeyNameBytes + sizeof(LatencyCells), "keys are an array every process indexes");
static_assert(offsetof(MetricsKey, name) == 64, "readers match names without a lock: the name must not move");
static_assert(offsetof(MetricsKey, aggregate) == 192, "folders of every build add into the same aggregate cells");

// Shard word: (state << 56) | (key index << 32) | token.
//   FREE -> OWNED(key, token)          the claimant, one CAS (acq_rel); cells are zero while FREE
//   OWNED(dead token) -> FOLDING(key, folder token)   a folder, CAS
//   FOLDING(dead folder) -> FOLDING(key, new folder)  a later folder, CAS (exchange(0) per
//                                      cell makes re-folding add each count exactly once)
//   FOLDING -> FREE                    the folder, release store after zeroing every cell
enum ShardState : uint64_t { kShardFree = 0, kShardOwned = 1, kShardFolding = 2 };
constexpr uint64_t make_shard_word(uint64_t state, uint32_t key, OwnerToken token) {
    return (state << 56) | (uint64_t(key & 0xffffff) << 32) | token;
}
constexpr uint64_t shard_word_state(uint64_t w) { return w >> 56; }
constexpr uint32_t shard_word_key(uint64_t w) { return uint32_t(w >> 32) & 0xffffff; }
constexpr OwnerToken shard_word_token(uint64_t w) { return OwnerToken(w); }

struct alignas(kCacheLine) LatencyShard {
    std::atomic<uint64_t> word;   ///< state machine above
    uint64_t reserved0[7];
    LatencyCells cells;           ///< the owner's histogram (single writer)
};
static_assert(sizeof(LatencyShard) == 64 + sizeof(LatencyCells), "shards are an array every process indexes");
static_assert(offsetof(LatencyShard, cells) == 64, "the shard word on its own line: claims and folds do not bounce the owner's cells");

struct alignas(kCacheLine) MetricsHeader {
    uint64_t magic;               ///< kMetricsMagic; written before the region is published
    uint32_t version;             ///< kMetricsVersion
    uint32_t buckets;             ///< kLatencyBuckets (a reader with other bucket math refuses)
    uint32_t keys;                ///< kMetricsKeys
    uint32_t shards;              ///< kMetricsShards
    uint64_t keys_offset;         ///< from the region start
    uint64_t shards_offset;
    uint64_t reserved[3];
};
static_assert(sizeof(MetricsHeader) == 64, "keys start at offset 64 (kMetricsKeysOffset) in every build");

// Every cell above is a 64-bit atomic shared between processes: it must never fall back to
// libatomic's per-process lock.
static_assert(std::atomic<uint64_t>::is_always_lock_free, "a cell shared between processes may not fall back to a per-process lock");

constexpr uint64_t kMetricsKeysOffset = sizeof(MetricsHeader);
constexpr uint64_t kMetricsShardsOffset = kMetricsKeysOffset + uint64_t(kMetricsKeys) * sizeof(MetricsKey);
constexpr uint64_t kMetricsRegionBytes = kMetricsShardsOffset + uint64_t(kMetricsShards) * sizeof(LatencyShard);
static_assert(kMetricsRegionBytes == 64 + 32 * 2816 + 64 * 2688,
              "256 KiB + 64 B (65 pages): the metrics region must fit a 1 MiB pool");

}  // namespace fabric_shm::layout
