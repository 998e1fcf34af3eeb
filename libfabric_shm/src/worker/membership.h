// SPDX-License-Identifier: MIT
// How a WorkerLoop learns its partitions and epoch. One implementation per membership model;
// the loop only sees assignment + epoch + heartbeat + leave.
#pragma once

#include "private.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"

namespace fabric_shm::worker {

class Membership {
public:
    virtual ~Membership() = default;
    /// Joins (already_exists when a live member uses the id).
    virtual Status join() = 0;
    /// Cheap liveness refresh; called during long processing and backoff.
    virtual Status heartbeat(uint64_t now_ns) = 0;
    /// Rebalances (takes free partitions, releases those the target gives to others); call
    /// only with nothing uncommitted. True when the partitions or the epoch changed.
    /// `giving_up(partition)` is called right before a partition is released, while the
    /// member still owns it under its current fence token (ConsumerGroup::claim).
    virtual Result<bool> rebalance(uint64_t now_ns, const std::function<void(uint32_t)>& giving_up) = 0;
    Result<bool> rebalance(uint64_t now_ns) { return rebalance(now_ns, {}); }
    /// True when the last rebalance() claimed as the member it already was: a partition owned
    /// before it and after it was owned throughout (nobody else can have taken and fenced it
    /// in between). False when it joined afresh (evicted, or a failed join retried).
    virtual bool kept_membership() const = 0;
    virtual const std::vector<uint32_t>& partitions() const = 0;
    /// The fence token of results, commits and dead letters (era + epoch, docs/groups.md).
    virtual uint64_t epoch() const = 0;
    /// Still the owner of `partition` with no newer fence above our token (racy: tells a write
    /// refused by a newer owner from one refused for another reason).
    virtual bool owns(uint32_t partition) const = 0;
    /// Leaves the group (idempotent; never fails loudly: a dead member is detected anyway).
    virtual void leave() = 0;
    /// One line for logs: "group G member M: partitions 0,1 epoch 3".
    virtual std::string describe() const = 0;
};

/// A member of ConsumerGroup `group` on `topic` (not joined yet).
Result<std::unique_ptr<Membership>> make_membership(Pool& pool, const std::string& topic, const std::string& group,
                                                    const std::string& member_id, uint32_t num_partitions,
                                                    uint64_t session_timeout_ns);

}  // namespace fabric_shm::worker
