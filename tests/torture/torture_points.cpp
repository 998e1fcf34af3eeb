// SPDX-License-Identifier: MIT
#include "torture_points.h"

namespace fabric_shm::torture {

namespace {
constexpr uint8_t P = kProducerRole, W = kWorkerRole, R = kReaperRole, O = kOpsRole;
// Every process that opens a pool read-write registers and reaps dead registrations
// (Pool::open), and retires its own slot at exit; producers and workers also write objects.
constexpr uint8_t kEveryone = P | W | R | O;
constexpr uint8_t kWriters = P | W | O;
}  // namespace

const std::vector<FaultPoint>& fault_points() {
    static const std::vector<FaultPoint> points = {
        // The pool (pool_open.cpp, region_directory.cpp, pool_leases.cpp, reaper.cpp): creation
        // (the ops child re-creates its side pool every round), regions, leases, removal of a
        // wholly expired pool.
        {"pool.create.tmp_created", O},
        {"pool.create.numa_bound", O},        // only with --numa-node, which the torture does not use
        {"pool.create.before_magic", O},
        {"pool.create.before_link", O},
        {"pool.create.after_link", O},
        {"pool.reap.judged_expired", O | R},
        {"pool.reap.reclaiming", O | R},
        {"pool.unlink.checked", O | R},        // a remover's unlink of a pool's name, the name checked
        {"pool.reap.hook", kEveryone},           // before a region kind's repair hook runs
        {"region.create.reserved", W | O},       // workers: the metrics region; ops: store and topic
        {"region.create.punched", O},            // the store's heap and the topics' partitions (1 MiB and up)
        {"region.create.before_publish", W | O},
        {"region.reclaim.marked", O | R},        // expired side-pool regions
        {"region.remove.checked", O},            // the side pool's topics and stores removed
        {"lease.renew.checked", O},              // the side pool's short leases: checked, nothing written
        {"lease.renew.after_extend", O},
        {"lease.renew.confirmed", O},            // generation confirmed; the tagged fields not written yet
        {"metrics.key.claimed", W},            // a worker creating its latency key
        {"metrics.key.reset.judged", kEveryone},  // repair of a key whose creator died (every reap)
        // registry.cpp
        {"registry.register.claimed", kEveryone},
        {"registry.register.before_publish", kEveryone},
        {"registry.register.published", kEveryone},
        {"registry.reap.judged", kEveryone},
        {"registry.reap.retiring", kEveryone},
        {"registry.reap.retirer_judged", kEveryone},
        {"registry.reap.fenced", kEveryone},
        {"registry.retire.before_free", kEveryone},
        {"registry.unregister.retiring", kEveryone},
        // store
        {"store.create.root", O},
        {"store.alloc.after_claim", kWriters},
        {"store.alloc.assigning", kWriters},
        {"store.alloc.run_claimed", kWriters},
        {"store.put.after_alloc", kWriters},
        {"store.put.after_fill", kWriters},
        {"store.put.after_mark", kWriters},
        {"store.put.before_link", kWriters},
        {"store.put.after_overflow", kWriters},
        {"store.put.after_link", kWriters},
        {"store.put.after_retire", kWriters},
        {"store.loan.after_alloc", P},
        {"store.loan.release", P},
        {"store.commit.before_publish", P},
        {"store.pin.after_record", W | O},
        {"store.pin.after_mark", W | O},
        {"store.unpin.after_release", W | O},
        {"store.retired.flush", kWriters},  // a batch of blocks retired after their pins were released
        {"store.remove.after_mark", P | O},
        {"store.finish_commit.before_header", P | O | R},  // a remover or repair finishing a COMMITTING block
        {"store.lookup.after_slot", kEveryone},  // every store reader and writer, and repair
        {"store.entries.after_slot", O},  // listings (list, list_all: a tiered open tracking unlisted hot copies)
        {"store.reclaim.before_remove", kEveryone},  // repair of expired objects (every reaper, a full heap)
        {"store.remove.before_unlink", P | O},
        {"store.remove.after_unlink", P | O},
        {"store.run.release", kWriters},
        {"store.run.release_claimed", kWriters},
        {"store.drain.marking", kWriters},
        {"store.stripe.held", kWriters},
        {"store.stripe.stolen", kWriters},
        {"store.repair.loan", R},
        {"store.repair.run_head", R},
        {"store.repair.run_claimed", R},
        {"store.repair.pin", R},
        // tiered store (ops child)
        {"tiered.append.after_header", O},
        {"tiered.checkpoint.before_rename", O},
        {"tiered.demote.before_hot_remove", O},
        // topics: producers (and workers sending dead letters), consumers, waiters, the reaper
        {"mq.send.after_claim", P | W},
        {"mq.send.before_publish", P | W},
        {"mq.send.after_publish", P | W},
        {"mq.send.before_release", P | W},
        {"mq.send.before_roll_quarantine", P | W},
        {"mq.send.before_raise_head", P | W},  // a producer that found the ring full, before its head raise
        {"mq.slot.before_quarantine", P | W},
        {"mq.poll.after_quarantine", W},
        {"mq.slot.before_skip", P | W},
        {"mq.wait.registered", W},
        {"mq.wait.releasing", W},
        {"mq.waiter.repairing", P | W | R},
        {"mq.reap.before_skip", R},
        // consumer groups, dead letters, the worker loop
        {"group.register.before_publish", W},  // the registrant read its starts; the group not yet LIVE
        {"group.register.after_publish", W},   // LIVE, before the registrant re-reads the heads
        {"group.register.found_expired", W},   // judged the name's registration expired, not yet removed
        {"group.join.before_lock", W},
        {"group.join.before_publish", W},
        {"group.join.joined", W},
        {"group.evict.before_cas", W},
        {"group.claim.before_scan", W},  // a claimer's clock read, before it judges the other members
        {"group.claim.before_take", W},
        {"group.claim.after_take", W},
        {"group.claim.before_fence", W},
        {"group.heartbeat.before_store", W},
        {"group.commit.before_lock", W},
        {"group.commit.locked", W},  // inside the group's lock: the group's other members wait
        {"group.lease.renew", W | O},
        {"group.lease.expire", W | O | R},  // a registration ended: by a registrant replacing it, `group rm`, a reap
        {"group.lease.expire_acting", P},  // a producer about to pass an expired group over, before its CAS to 0
        {"group.remove.found", O},         // `group rm` found the registration, before its removal
        {"group.reap.found_expired", R},  // a reap found a registration expired, before ending it
        {"dlq.begin.before_count", W},
        {"dlq.dead_letter.decided", W},
        {"dlq.dead_letter.recorded", W},
        {"worker.commit.before", W},
        {"worker.result.before_put", W},
        {"worker.result.after_put", W},
        {"worker.dead_letter.deciding", W},
        {"worker.acquire.handed_out", W},
        // a result put waiting for space: the torture's store never fills, so no role reaches
        // it; the full-store tests (tests/handlers worker-async, tests/e2e e2e-ops) wait there.
        {"worker.store_wait.sleeping", 0},
        // --delete-input removing an input after its commit: the torture's workers keep their
        // inputs (the producers' objects are checked afterwards), so no role reaches it.
        {"worker.delete_input.before_remove", 0},
        // topics created on demand (the workers' dead-letter topic) and opens that wait for a
        // creation in progress
        {"topic.create.before_publish", W | O},
        {"topic.open.waiting", P | W},
        // --exec commands' process groups: the torture's workers run a builtin processor, so
        // none is recorded; tests/e2e/survivors_test.cpp kills and pauses at these points.
        {"child_group.registered", 0},
        {"child_group.before_kill", 0},
        // the NATS bridge (optional module): no torture role runs it (it needs a JetStream
        // cluster); tests/bridge kills exporters and importers at these points.
        {"bridge.export.after_ack", 0},
        {"bridge.import.after_put", 0},
        {"bridge.import.after_send", 0},
    };
    return points;
}

std::vector<std::string> points_of_role(uint8_t role) {
    std::vector<std::string> out;
    for (const FaultPoint& p : fault_points())
        if (p.roles & role) out.push_back(p.name);
    return out;
}

}  // namespace fabric_shm::torture
