// SPDX-License-Identifier: MIT
// Which group writes which result bucket: the record in each GroupSlot (topic_layout.h,
// results_*), written by WorkerLoop when a member joins, read by every other group's worker
// when it starts (two groups that see the same inputs would overwrite each other's results in
// one bucket), by `group describe` and by the dump. docs/groups.md, "Result buckets".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"
#include "mq/topic_internal.h"

namespace fabric_shm::mq {

struct ResultsRecord {
    std::string bucket;   ///< "" when the group has none
    bool shared = false;  ///< written with shared results
};
/// The record of group slot `g` (seqlock read; retried while a writer is in the middle).
ResultsRecord read_results_record(const GroupSlot& g);

/// For member `member_id` (joined, so its row is LIVE) of `group` on `topic`: records that
/// the group writes `bucket`, then refuses with `conflict` when another group in the pool with
/// live members writes it too, unless both recorded `shared`, or when another live member of
/// this group writes a different bucket. The record is written before the scan (seq_cst
/// fence between), so of two groups starting at once at least one sees the other.
/// `lock_wait_ns`: the longest wait for the group's lock (busy past it).
Status claim_result_bucket(const Pool& pool, const std::string& topic, const std::string& group,
                           const std::string& member_id, const std::string& bucket, bool shared,
                           uint64_t lock_wait_ns);

}  // namespace fabric_shm::mq
