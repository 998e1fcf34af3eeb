// SPDX-License-Identifier: MIT
// kLayoutFingerprint: the shape of every structure this build places in a pool, so that a
// pool made by a build with the same kLayoutMajor but different struct shapes is refused at
// Pool::open (version_mismatch) instead of being misread (LMDB's lock-format idea). The pool's
// own structures come from pool_layout.h (kPoolLayoutFingerprint); the region layouts that live
// inside the pool are mixed in here: the object store's header, table, stripe locks and object
// header, the metrics region, and the topic root, group table and ring headers. Changing any
// of them changes the fingerprint; incompatible changes also bump kLayoutMajor.
#pragma once

#include "private.h"

#include <cstddef>
#include <cstdint>

#include "layout/metrics_layout.h"
#include "layout/pool_layout.h"
#include "mq/topic_layout.h"
#include "store/store_layout.h"

namespace fabric_shm::layout {

constexpr uint64_t kLayoutFingerprint = [] {
    namespace S = store_layout;
    uint64_t h = kPoolLayoutFingerprint;
    for (uint64_t v : {uint64_t(offsetof(PoolHeader, fence_floor)),
                       // object store (store/store_layout.h)
                       uint64_t(S::kStoreLayoutVersion), uint64_t(sizeof(S::StoreHeader)), uint64_t(sizeof(S::Bucket)),
                       uint64_t(sizeof(S::StripeLock)), uint64_t(S::kStripes), uint64_t(offsetof(S::StoreHeader, stripes)),
                       uint64_t(offsetof(S::StoreHeader, heap_ref)), uint64_t(sizeof(S::ObjectHeader)),
                       S::make_slot(1, 1, 0), S::make_intent(1, 1),
                       // metrics region (layout/metrics_layout.h)
                       uint64_t(kMetricsVersion), uint64_t(sizeof(MetricsHeader)), uint64_t(sizeof(MetricsKey)),
                       uint64_t(sizeof(LatencyShard)),
                       // topic root, group table and ring headers (mq/topic_layout.h)
                       uint64_t(mq::kTopicLayoutVersion), uint64_t(sizeof(mq::TopicHeader)),
                       uint64_t(sizeof(mq::GroupSlot)), uint64_t(sizeof(mq::GroupMember)),
                       uint64_t(sizeof(mq::GroupPartition)), uint64_t(offsetof(mq::GroupSlot, era)),
                       uint64_t(offsetof(mq::GroupSlot, members)), uint64_t(offsetof(mq::GroupSlot, parts)),
                       uint64_t(offsetof(mq::GroupPartition, dead_letter_offset)),
                       uint64_t(offsetof(mq::GroupPartition, dead_letter_epoch)),
                       uint64_t(offsetof(mq::GroupPartition, attempt_window)), uint64_t(mq::kAttemptWindow),
                       uint64_t(sizeof(mq::PartitionHeader)), uint64_t(sizeof(mq::SlotHeader))})
        h = fnv1a_mix(h, v);
    return h;
}();

}  // namespace fabric_shm::layout
