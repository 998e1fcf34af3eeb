// SPDX-License-Identifier: MIT
// The layout fingerprint written into every PoolHeader and compared at attach: it changes
// whenever a structure another process reads changes size or shape (LMDB's lock-format idea),
// so two builds with the same kLayoutMajor but different structs refuse each other's pools.
// It covers the pool's own structures and the topic/group tables that live in its regions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "layout/pool_layout.h"
#include "mq/topic_layout.h"

namespace fabric_shm::layout {

constexpr uint64_t kLayoutFingerprint = [] {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint64_t v : {uint64_t(kLayoutMajor), uint64_t(sizeof(PoolHeader)), uint64_t(sizeof(ProcessSlot)),
                       uint64_t(sizeof(RegionEntry)), uint64_t(sizeof(LeaseHeader)), uint64_t(kRegistrySlots),
                       uint64_t(kDirectoryEntries), uint64_t(kCounterCells), uint64_t(kCacheLine),
                       uint64_t(offsetof(PoolHeader, lifecycle)), uint64_t(offsetof(RegionEntry, lease)),
                       uint64_t(offsetof(ProcessSlot, counters)), uint64_t(sizeof(void*)),
                       uint64_t(offsetof(PoolHeader, fence_floor)),
                       // topic root and group table (mq/topic_layout.h)
                       uint64_t(mq::kTopicLayoutVersion), uint64_t(sizeof(mq::TopicHeader)),
                       uint64_t(sizeof(mq::GroupSlot)), uint64_t(sizeof(mq::GroupMember)),
                       uint64_t(sizeof(mq::GroupPartition)), uint64_t(offsetof(mq::GroupSlot, era)),
                       uint64_t(offsetof(mq::GroupSlot, members)), uint64_t(offsetof(mq::GroupSlot, parts)),
                       uint64_t(offsetof(mq::GroupPartition, dead_letter_offset)),
                       uint64_t(offsetof(mq::GroupPartition, dead_letter_epoch)),
                       uint64_t(sizeof(mq::PartitionHeader)), uint64_t(sizeof(mq::SlotHeader))})
        h = fnv1a_mix(h, v);
    return h;
}();

}  // namespace fabric_shm::layout
