// SPDX-License-Identifier: MIT
// The benchmark histogram: exact below 256, bounded relative error above, correct
// percentiles, merge equals recording everything in one, coordinated-omission correction.
#include <doctest/doctest.h>

#include <random>

#include "histogram.h"

using fabric_shm::bench::Histogram;

TEST_CASE("histogram: values below 256 are exact and bucket bounds are contiguous") {
    for (uint64_t v = 0; v < 256; ++v) CHECK(Histogram::highest_of(Histogram::index_of(v)) == v);
    for (size_t i = 1; i < Histogram::kBuckets; ++i) {
        CHECK(Histogram::index_of(Histogram::highest_of(i - 1) + 1) == i);
        if (Histogram::highest_of(i) == UINT64_MAX) break;
    }
    CHECK(Histogram::index_of(UINT64_MAX) == Histogram::kBuckets - 1);
}

TEST_CASE("histogram: every value is reported within 1/128 of itself") {
    std::mt19937_64 rng(7);
    for (int i = 0; i < 100000; ++i) {
        const uint64_t v = rng() >> (rng() % 64);
        const uint64_t hi = Histogram::highest_of(Histogram::index_of(v));
        CHECK(hi >= v);
        CHECK(double(hi - v) <= double(v) / 128.0 + 1.0);
    }
}

TEST_CASE("histogram: percentiles of 1..10000") {
    Histogram h;
    for (uint64_t v = 1; v <= 10000; ++v) h.record(v);
    CHECK(h.count() == 10000);
    CHECK(h.min() == 1);
    CHECK(h.max() == 10000);
    CHECK(h.mean() == doctest::Approx(5000.5));
    CHECK(h.percentile(50) >= 5000);
    CHECK(h.percentile(50) <= 5000 + 5000 / 128 + 1);
    CHECK(h.percentile(99) >= 9900);
    CHECK(h.percentile(99) <= 9900 + 9900 / 128 + 1);
    CHECK(h.percentile(100) == 10000);
    CHECK(h.percentile(0) == 1);
}

TEST_CASE("histogram: merge equals recording everything into one") {
    Histogram a, b, all;
    for (uint64_t v = 0; v < 5000; ++v) {
        a.record(v * 3);
        all.record(v * 3);
        b.record(v * 7 + 100000);
        all.record(v * 7 + 100000);
    }
    a.merge(b);
    CHECK(a.count() == all.count());
    CHECK(a.max() == all.max());
    CHECK(a.min() == all.min());
    for (double p : {1.0, 50.0, 90.0, 99.0, 99.9}) CHECK(a.percentile(p) == all.percentile(p));
}

TEST_CASE("histogram: coordinated-omission correction back-fills the samples a stall hid") {
    Histogram h;
    h.record_corrected(1000, 100);  // a 1000 ns stall at one sample per 100 ns
    CHECK(h.count() == 10);         // 1000, 900, ..., 100
    CHECK(h.min() == 100);
    Histogram plain;
    plain.record_corrected(50, 100);
    CHECK(plain.count() == 1);
}
