// SPDX-License-Identifier: MIT
// A log-linear latency histogram in the style of HdrHistogram: values (ns) below 256 are
// exact; above, each power-of-two range is split into 128 linear sub-buckets, so every
// recorded value is reported within 1/128 (< 0.8 %) of its true value. Fixed size (no
// allocation while recording), mergeable across threads and processes (add the counts).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace fabric_shm::bench {

class Histogram {
public:
    static constexpr int kSubBits = 8;                         ///< 256 exact values, then 128 per octave
    static constexpr uint64_t kSub = 1ull << kSubBits;         ///< 256
    static constexpr uint64_t kHalf = kSub / 2;                ///< 128 sub-buckets per octave
    static constexpr size_t kBuckets = kSub + (64 - kSubBits) * kHalf;

    void record(uint64_t value_ns) noexcept {
        ++counts_[index_of(value_ns)];
        ++count_;
        sum_ += value_ns;
        if (value_ns < min_) min_ = value_ns;
        if (value_ns > max_) max_ = value_ns;
    }
    /// Records `value_ns` and, as HdrHistogram's recordValueWithExpectedInterval does, the
    /// samples a stalled open-loop sender failed to issue meanwhile (corrects coordinated
    /// omission): value - interval, value - 2*interval, ... while above the interval.
    void record_corrected(uint64_t value_ns, uint64_t expected_interval_ns) noexcept {
        record(value_ns);
        if (expected_interval_ns == 0) return;
        for (uint64_t v = value_ns; v > expected_interval_ns;) {
            v -= expected_interval_ns;
            record(v);
        }
    }
    void merge(const Histogram& other) noexcept;
    void reset() noexcept { *this = Histogram(); }

    uint64_t count() const noexcept { return count_; }
    uint64_t min() const noexcept { return count_ ? min_ : 0; }
    uint64_t max() const noexcept { return max_; }
    double mean() const noexcept { return count_ ? double(sum_) / double(count_) : 0.0; }
    /// Smallest recorded bucket bound v such that at least p % of the samples are <= v
    /// (the bucket's highest equivalent value, clamped to the true max). p in [0, 100].
    uint64_t percentile(double p) const noexcept;

    static size_t index_of(uint64_t v) noexcept {
        if (v < kSub) return size_t(v);
        const int msb = 63 - __builtin_clzll(v);  // >= kSubBits
        const int shift = msb - (kSubBits - 1);   // >= 1: v >> shift is in [kHalf, kSub)
        return size_t(kSub + uint64_t(shift - 1) * kHalf + ((v >> shift) - kHalf));
    }
    /// Largest value that maps to bucket `i`.
    static uint64_t highest_of(size_t i) noexcept {
        if (i < kSub) return i;
        const uint64_t shift = (i - kSub) / kHalf + 1;
        const uint64_t sub = (i - kSub) % kHalf + kHalf;
        return ((sub + 1) << shift) - 1;
    }

private:
    std::array<uint64_t, kBuckets> counts_{};
    uint64_t count_ = 0, sum_ = 0, min_ = UINT64_MAX, max_ = 0;
};

}  // namespace fabric_shm::bench
