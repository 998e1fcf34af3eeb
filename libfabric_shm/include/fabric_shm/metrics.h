// SPDX-License-Identifier: MIT
// End-to-end latency histograms in the pool, keyed by (topic, group) and written through
// per-process shards: LatencyRecorder on the hot path (no syscall, no lock, no locked
// instruction) and read_latency() for the dump. (The reaper folds the shards of dead processes.)
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"

namespace fabric_shm {

/// Bucket math (log-linear, HDR style): 0..7 ns exact, then 8 buckets per power of two up to
/// 2^42 ns; anything larger lands in the last bucket.
inline constexpr uint32_t kLatencyHistogramBuckets = 320;
uint32_t latency_bucket_index(uint64_t ns) noexcept;
uint64_t latency_bucket_lower(uint32_t index) noexcept;  ///< smallest value of the bucket
uint64_t latency_bucket_upper(uint32_t index) noexcept;  ///< largest value (UINT64_MAX for the last)

/// A histogram as read (or as kept in process).
struct LatencyHistogramData {
    std::array<uint64_t, kLatencyHistogramBuckets> buckets{};
    uint64_t sum_ns = 0;
    uint64_t max_ns = 0;

    void record(uint64_t ns) noexcept;
    void merge(const LatencyHistogramData& other) noexcept;
    uint64_t count() const noexcept;
    /// The largest value of the bucket holding the sample of rank ceil(q * count), capped at
    /// max_ns (so p100 == max); 0 when empty. q in [0, 1].
    uint64_t percentile(double q) const noexcept;
    /// Samples <= ns (exact when ns is a bucket's upper bound).
    uint64_t count_at_most(uint64_t ns) const noexcept;
};

struct LatencyKeyStats {
    std::string topic, group;
    LatencyHistogramData histogram;
    uint32_t live_shards = 0;   ///< shards owned by a registration (alive or not yet folded)
};

/// Every key of the pool's metrics region, shards and folded totals summed (several entries
/// for one key, left by a creation race, are merged). Empty when no process recorded yet.
/// Corrupt when the region's header does not match this build's layout.
Result<std::vector<LatencyKeyStats>> read_latency(const Pool& pool);

/// Writes samples into this process's shard for (topic, group), creating the pool's metrics
/// region and the key when missing. Falls back to the key's shared aggregate (fetch_add)
/// when every shard is taken. One recorder per thread (a shard has one writer).
class LatencyRecorder {
public:
    static Result<LatencyRecorder> open(Pool& pool, std::string_view topic, std::string_view group);
    LatencyRecorder() = default;
    LatencyRecorder(LatencyRecorder&&) noexcept;
    LatencyRecorder& operator=(LatencyRecorder&&) noexcept;
    LatencyRecorder(const LatencyRecorder&) = delete;
    ~LatencyRecorder();

    bool valid() const { return cells_ != nullptr; }
    /// Hot path: a handful of relaxed loads and stores into the shard.
    void record(uint64_t ns) noexcept;
    /// The metrics region's lease (renew it with the other leases of the process).
    uint64_t lease_id() const;
    bool shared_fallback() const { return shared_; }

private:
    void release() noexcept;  ///< gives the shard back (folded into the key's aggregate)
    Region region_;
    void* cells_ = nullptr;  ///< layout::LatencyCells
    bool shared_ = false;
    uint32_t made_in_ = 0;  ///< the process's fork count at open(): only there is the shard given back
};

}  // namespace fabric_shm
