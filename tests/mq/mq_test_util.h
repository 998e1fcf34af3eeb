// SPDX-License-Identifier: MIT
// Helpers for the topic tests: a pool per test, forging partition positions, byte spans.
#pragma once

#include <doctest/doctest.h>

#include <span>
#include <string>
#include <string_view>

#include "../support/test_support.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "mq/topic_layout.h"

namespace mqtest {

using namespace fabric_shm;

inline std::span<const uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

/// A pool removed at scope exit.
struct TestPool {
    test::PoolCleanup cleanup;
    Pool pool;
    explicit TestPool(const std::string& tag, uint64_t size = 16 << 20)
        : cleanup(test::unique_pool_name(tag)), pool(make(cleanup.name(), size)) {}
    static Pool make(const std::string& name, uint64_t size) {
        auto p = Pool::create(PoolOptions{name, size});
        REQUIRE_MESSAGE(p.ok(), p.error().message);
        return std::move(p.value());
    }
};

/// Partition p's header (forging positions in tests).
inline mq::PartitionHeader* partition_header(const Pool& pool, std::string_view topic, uint32_t p) {
    auto r = pool.open_region(RegionKind::partition, std::string(topic) + "." + std::to_string(p));
    REQUIRE(r.ok());
    return reinterpret_cast<mq::PartitionHeader*>(r->data());
}

/// Starts every partition of a fresh (never written) topic at `offset`: base, tail and head.
inline void forge_start(const Pool& pool, std::string_view topic, uint32_t partitions, uint64_t offset) {
    for (uint32_t p = 0; p < partitions; ++p) {
        auto* h = partition_header(pool, topic, p);
        h->base_offset = offset;
        h->tail.store(offset, std::memory_order_relaxed);
        h->head.store(offset, std::memory_order_relaxed);
    }
}

inline TopicConfig config(uint32_t parts, uint32_t cap, OnFull on_full = OnFull::block, uint32_t stride = 256) {
    TopicConfig c;
    c.num_partitions = parts;
    c.partition_capacity = cap;
    c.partition_stride = stride;
    c.on_full = on_full;
    return c;
}

}  // namespace mqtest
