// SPDX-License-Identifier: MIT
// GroupMembership: WorkerLoop's view of a ConsumerGroup member (docs/groups.md): join, cheap
// heartbeats during processing, claim (rebalance) between batches, rejoin after eviction.
#include "worker/membership.h"

#include "fabric_shm/consumer_group.h"

namespace fabric_shm::worker {

namespace {

class GroupMembership final : public Membership {
public:
    GroupMembership(ConsumerGroup group, std::string member_id)
        : group_(std::move(group)), id_(std::move(member_id)) {}

    Status join() override {
        auto c = group_.join(id_);
        if (!c) {
            // A join that took its row and then failed its first claim leaves the member in the
            // handle: evicted there (silent past the session timeout: a stall), or the claim's
            // fences refused as busy (a live, paused process holds the group's lock). Drop it
            // (its row and whatever the claim took), so that the next join, from rebalance(),
            // starts afresh instead of finding it "already joined". A join that failed before
            // taking a row has nothing to drop (leave() then reports "not a member").
            (void)group_.leave(id_);
            return std::move(c).error();
        }
        claim_ = std::move(c.value());
        joined_ = true;
        return {};
    }
    // stale_epoch means evicted (silent past the session timeout: a stall, SIGSTOP). It is
    // reported, not swallowed: WorkerLoop abandons the message in hand and joins again.
    Status heartbeat(uint64_t) override { return joined_ ? group_.heartbeat(id_) : Status{}; }
    Result<bool> rebalance(uint64_t, const std::function<void(uint32_t)>& giving_up) override {
        kept_membership_ = false;
        // A rejoin that failed (busy: a paused process held the group lock) is retried here,
        // as a join: claim() would join the member too, but joined_ would stay false and
        // owns() would then refuse every result put of a member that holds its partitions.
        if (!joined_) {
            FABRIC_TRY(join());
            return true;
        }
        auto c = group_.claim(id_, giving_up);
        if (!c && c.code() == Errc::stale_epoch) {
            // Evicted (we were silent past the session timeout): everything we held was
            // fenced; join again and resume from the committed offsets.
            (void)group_.leave(id_);  // drops the local state of an evicted member
            joined_ = false;
            FABRIC_TRY(join());
            return true;
        }
        if (!c) return std::move(c).error();
        const bool changed = c->changed;
        claim_ = std::move(c.value());
        kept_membership_ = true;  // claimed as the member we were: our row was never evicted
        return changed;
    }
    bool kept_membership() const override { return kept_membership_; }
    const std::vector<uint32_t>& partitions() const override { return claim_.partitions; }
    uint64_t epoch() const override { return claim_.epoch; }
    bool owns(uint32_t partition) const override { return joined_ && group_.owns(id_, partition); }
    void leave() override {
        if (!joined_) return;
        joined_ = false;
        (void)group_.leave(id_);
    }
    std::string describe() const override {
        std::string parts;
        for (uint32_t p : claim_.partitions) parts += (parts.empty() ? "" : ",") + std::to_string(p);
        return "group '" + group_.group() + "' member '" + id_ + "': partitions [" + parts + "] epoch " +
               std::to_string(claim_.epoch - claim_.era) +
               (claim_.pending ? " (" + std::to_string(claim_.pending) + " still held by others)" : "");
    }

private:
    ConsumerGroup group_;
    std::string id_;
    Claim claim_;
    bool joined_ = false;
    bool kept_membership_ = false;  ///< the last rebalance() claimed without joining afresh
};

}  // namespace

Result<std::unique_ptr<Membership>> make_membership(Pool& pool, const std::string& topic, const std::string& group,
                                                    const std::string& member_id, uint32_t num_partitions,
                                                    uint64_t session_timeout_ns) {
    GroupConfig gc;
    gc.session_timeout = ns_duration(session_timeout_ns);
    auto g = ConsumerGroup::open(pool, topic, group, num_partitions, gc);
    if (!g) return std::move(g).error();
    return std::unique_ptr<Membership>(std::make_unique<GroupMembership>(std::move(g.value()), member_id));
}

}  // namespace fabric_shm::worker
