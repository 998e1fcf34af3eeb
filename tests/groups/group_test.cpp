// SPDX-License-Identifier: MIT
// ConsumerGroup: join/leave/rejoin, duplicate ids, CAS ownership, SIGKILL takeover time,
// hung member via the session timeout, zombie commits and zombie result writes (stale_epoch),
// and a multi-process run with member churn.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <random>
#include <optional>
#include <set>
#include <thread>

#include "../mq/mq_test_util.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/consumer_group.h"
#include "crash_point.h"
#include "fabric_shm/offset_store.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/topic.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"

using namespace fabric_shm;
using namespace mqtest;

namespace {

std::set<uint32_t> as_set(const std::vector<uint32_t>& v) { return {v.begin(), v.end()}; }

GroupConfig fast(uint64_t session_ns = 10'000'000'000ull) {
    GroupConfig c;
    c.session_timeout = ns_duration(session_ns);
    c.liveness_probe = std::chrono::milliseconds(5);
    return c;
}

template <class T>
T* shared_new() {
    void* p = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    return new (p) T{};
}

}  // namespace

TEST_CASE("group: join, second join splits, leave hands back, rejoin with the same id") {
    TestPool tp("grp-join");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(4, 16)).ok());
    auto g = ConsumerGroup::open(tp.pool, "t", "g", 4, fast());
    REQUIRE_MESSAGE(g.ok(), g.error().message);

    auto a = g->join("a");
    REQUIRE_MESSAGE(a.ok(), a.error().message);
    CHECK(a->partitions == std::vector<uint32_t>{0, 1, 2, 3});
    CHECK(a->epoch > 0);

    auto b = g->join("b");
    REQUIRE(b.ok());
    CHECK(b->partitions.empty());  // a still holds them: b waits for a's release
    CHECK(b->pending == 2);
    auto a2 = g->claim("a");  // a releases what the target gives b
    REQUIRE(a2.ok());
    CHECK(a2->partitions.size() == 2);
    auto b2 = g->claim("b");
    REQUIRE(b2.ok());
    CHECK(b2->partitions.size() == 2);
    CHECK(b2->epoch > a->epoch);
    std::set<uint32_t> all = as_set(a2->partitions);
    for (uint32_t p : b2->partitions) CHECK(all.insert(p).second);  // never two owners
    CHECK(all.size() == 4);

    REQUIRE(g->leave("b").ok());
    auto a3 = g->claim("a");
    REQUIRE(a3.ok());
    CHECK(a3->partitions.size() == 4);
    CHECK(a3->epoch > b2->epoch);  // taking b's partitions draws a new epoch

    auto b3 = g->join("b");  // rejoin under the same id
    REQUIRE(b3.ok());
    CHECK(g->claim("a").ok());
    auto b4 = g->claim("b");
    REQUIRE(b4.ok());
    CHECK(b4->partitions.size() == 2);
    // A member that has not joined through this handle joins at its first claim.
    auto newcomer = g->claim("newcomer");
    REQUIRE_MESSAGE(newcomer.ok(), newcomer.error().message);
    CHECK(g->leave("newcomer").ok());
    CHECK(g->claim("bad id with spaces").code() == Errc::invalid_argument);
}

TEST_CASE("group: a second live member with the same id is refused; a dead one's id is reusable") {
    TestPool tp("grp-dup");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    auto g1 = ConsumerGroup::open(tp.pool, "t", "g", 2, fast(200'000'000ull));
    auto g2 = ConsumerGroup::open(tp.pool, "t", "g", 2, fast(200'000'000ull));
    REQUIRE(g1.ok());
    REQUIRE(g2.ok());
    REQUIRE(g1->join("w").ok());
    auto dup = g2->join("w");
    CHECK(dup.code() == Errc::already_exists);
    CHECK(dup.error().message.find("'w'") != std::string::npos);
    CHECK(g1->join("w").code() == Errc::already_exists);
    CHECK(g2->join("").code() == Errc::invalid_argument);
    CHECK(g2->join(std::string(33, 'x')).code() == Errc::invalid_argument);
    CHECK(ConsumerGroup::open(tp.pool, "t", "g", 3).code() == Errc::invalid_argument);

    // A member whose process died: its id is free again at once (no session timeout wait).
    const std::string name = tp.cleanup.name();
    pid_t pid = test::fork_child([&] {
        Pool p = open_child_pool(name);
        auto g = ConsumerGroup::open(p, "t", "g", 2, fast());
        if (!g) return 91;
        return g->join("ghost").ok() ? 0 : 92;
    });
    REQUIRE(test::wait_child(pid) == 0);
    auto again = g2->join("ghost");
    CHECK_MESSAGE(again.ok(), again.error().message);
}

TEST_CASE("group: a SIGKILLed member's partitions are taken over by a polling member well within 2 s") {
    TestPool tp("grp-kill");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(4, 16)).ok());
    const std::string name = tp.cleanup.name();
    auto* ready = shared_new<std::atomic<uint32_t>>();
    pid_t pid = test::fork_child([&] {
        Pool p = open_child_pool(name);
        GroupConsumerOptions o;
        o.group = fast();
        auto gc = GroupConsumer::open(p, "t", "g", "victim", o);
        if (!gc || gc->partitions().size() != 4) return 91;
        ready->store(1, std::memory_order_release);  // pairs with the parent's acquire
        for (;;) pause();
    });
    while (ready->load(std::memory_order_acquire) == 0) std::this_thread::yield();

    GroupConsumerOptions o;
    o.group = fast();  // 10 s session timeout: the takeover must come from the registry
    auto gc = GroupConsumer::open(tp.pool, "t", "g", "survivor", o);
    REQUIRE_MESSAGE(gc.ok(), gc.error().message);
    CHECK(gc->partitions().empty());
    MessageBatch batch;
    REQUIRE(kill(pid, SIGKILL) == 0);
    const uint64_t t0 = mono_now_ns();
    uint64_t took = 0;
    while (mono_now_ns() - t0 < 5'000'000'000ull) {
        auto n = gc->poll(batch, 16, std::chrono::milliseconds(10));
        REQUIRE_MESSAGE(n.ok(), n.error().message);
        if (gc->partitions().size() == 4) {
            took = mono_now_ns() - t0;
            break;
        }
    }
    CHECK(test::wait_child(pid) == 128 + SIGKILL);
    std::printf("group: SIGKILL takeover of 4 partitions took %.1f ms\n", double(took) / 1e6);
    REQUIRE(took > 0);
    CHECK(took <= 2'000'000'000ull);
}

TEST_CASE("group: a hung member loses its partitions after the session timeout; its commits and result writes fail") {
    TestPool tp("grp-hung");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    {
        auto pr = Producer::open(tp.pool, "t");
        REQUIRE(pr.ok());
        for (int i = 0; i < 4; ++i) REQUIRE(pr->send("m" + std::to_string(i)).ok());
    }
    GroupConsumerOptions o;
    o.group = fast(300'000'000ull);
    auto zombie = GroupConsumer::open(tp.pool, "t", "g", "zombie", o);
    REQUIRE(zombie.ok());
    REQUIRE(zombie->partitions().size() == 2);
    const uint64_t zombie_epoch = zombie->epoch();
    MessageBatch zb;
    auto zn = zombie->poll(zb, 1, Duration::zero());
    REQUIRE(zn.ok());
    REQUIRE(*zn == 1);
    const Message zm = zb[0];
    auto result = FabricUri::make(tp.cleanup.name(), "results", "r-" + std::string(zm.value_str()));
    REQUIRE(result.ok());

    // The zombie stops heartbeating. The survivor takes over after the session timeout.
    auto survivor = GroupConsumer::open(tp.pool, "t", "g", "survivor", o);
    REQUIRE(survivor.ok());
    CHECK(survivor->partitions().empty());
    MessageBatch batch;
    const uint64_t t0 = mono_now_ns();
    while (survivor->partitions().size() < 2 && mono_now_ns() - t0 < 5'000'000'000ull)
        REQUIRE(survivor->poll(batch, 16, std::chrono::milliseconds(20)).ok());
    const uint64_t took = mono_now_ns() - t0;
    REQUIRE(survivor->partitions().size() == 2);
    CHECK(took >= 250'000'000ull);  // not before the session timeout (coarse clock slack)
    CHECK(survivor->epoch() > zombie_epoch);
    std::printf("group: hung member lost its partitions after %.0f ms (session timeout 300 ms)\n", double(took) / 1e6);

    // The survivor handles the message and writes its result under its epoch.
    const std::string payload = "by survivor";
    auto put = (*store)->put(*result, bytes(payload),
                             result_put_options("fabric://x/in/" + std::string(zm.value_str()), 1, survivor->epoch()));
    REQUIRE_MESSAGE(put.ok(), put.error().message);

    // The zombie wakes up: its commit (directly and through the group API) and its result
    // write are rejected with stale_epoch; its claim says it was evicted.
    auto direct = zombie->consumer().commit(zm.partition, zm.offset + 1);
    CHECK(direct.code() == Errc::stale_epoch);
    CHECK(zombie->commit(zm).code() == Errc::stale_epoch);
    auto zput = (*store)->put(*result, bytes("by zombie"),
                              result_put_options("fabric://x/in/" + std::string(zm.value_str()), 1, zombie_epoch));
    CHECK(zput.code() == Errc::stale_epoch);
    CHECK(zombie->poll(zb, 1, Duration::zero()).code() == Errc::stale_epoch);
    auto got = (*store)->get(*result);
    REQUIRE(got.ok());
    REQUIRE(got->has_value());
    CHECK(std::string((*got)->data.begin(), (*got)->data.end()) == payload);

    // Result identity: the same input version is current; a re-upload (version 2) is not.
    const std::string input = "fabric://x/in/" + std::string(zm.value_str());
    auto cur = result_is_current(**store, *result, input, 1);
    REQUIRE(cur.ok());
    CHECK(*cur);
    auto newer = result_is_current(**store, *result, input, 2);
    REQUIRE(newer.ok());
    CHECK_FALSE(*newer);
    // Another input whose result would land on the same key is not "current": a collision.
    auto other = result_is_current(**store, *result, "fabric://x/other/" + std::string(zm.value_str()), 1);
    REQUIRE(other.ok());
    CHECK_FALSE(*other);
    CHECK(result_input_uri(**store, *result).value() == input);

    // The survivor commits fine and the zombie can rejoin under a fresh epoch.
    REQUIRE(survivor->poll(batch, 16, Duration::zero()).ok());
    for (const auto& m : batch) CHECK(survivor->commit(m).ok());
    REQUIRE(zombie->rejoin().ok());
    CHECK(zombie->epoch() > zombie_epoch);
    CHECK(zombie->partitions().empty());  // the survivor still holds both until it releases one
}

namespace {

/// Shared anonymous memory: per message, how often it was processed.
struct ChurnLedger {
    static constexpr uint32_t kMessages = 240;
    std::atomic<uint32_t> processed[kMessages];
    std::atomic<uint32_t> stale_rejections;
};

int churn_worker(const std::string& pool_name, const std::string& id, ChurnLedger* led) {
    Pool p = open_child_pool(pool_name);
    auto store = MemObjectStore::open(p);
    if (!store) return 93;
    GroupConsumerOptions o;
    o.group = fast(2'000'000'000ull);
    auto gc = GroupConsumer::open(p, "t", "g", id, o);
    if (!gc) return 91;
    MessageBatch batch;
    uint64_t idle_since = mono_now_ns();
    for (;;) {
        auto n = gc->poll(batch, 8, std::chrono::milliseconds(20));
        if (!n) return 94;
        if (*n == 0) {
            if (mono_now_ns() - idle_since > 1'500'000'000ull) return 0;
            continue;
        }
        idle_since = mono_now_ns();
        for (const auto& m : batch) {
            const std::string key(m.value_str());
            const uint32_t idx = uint32_t(std::stoul(key.substr(1)));
            auto r = FabricUri::make(pool_name, "results", key);
            if (!r) return 95;
            auto cur = result_is_current(**store, *r, "fabric://x/in/" + key, 1);
            if (!cur) return 96;
            if (!*cur) {
                led->processed[idx].fetch_add(1, std::memory_order_relaxed);
                timespec work{0, 2'000'000};  // simulated processing, so the kills land mid-run
                nanosleep(&work, nullptr);
                const std::string out = "R" + key;
                auto put = (*store)->put(*r, bytes(out), result_put_options("fabric://x/in/" + key, 1, gc->epoch()));
                if (!put) {
                    if (put.code() != Errc::stale_epoch) return 97;
                    led->stale_rejections.fetch_add(1, std::memory_order_relaxed);
                    break;  // fenced: do not commit; the next poll re-claims
                }
            }
            auto c = gc->commit(m);
            if (!c) {
                if (c.code() != Errc::stale_epoch) return 98;
                led->stale_rejections.fetch_add(1, std::memory_order_relaxed);
                break;
            }
        }
    }
}

}  // namespace

TEST_CASE("group: a member's commit to a partition it released is refused although its newer token is above the "
          "new owner's fence") {
    TestPool tp("grp-released");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    {
        auto pr = Producer::open(tp.pool, "t");
        REQUIRE(pr.ok());
        for (int i = 0; i < 4; ++i) REQUIRE(pr->send("m" + std::to_string(i)).ok());
    }
    auto c = Consumer::open(tp.pool, "t", "g");
    REQUIRE(c.ok());
    // Under token 5 it owns partition 0; then (its claim released 1, another member took it
    // and fenced it below 9) it holds partition 0 under token 9.
    Claim first;
    first.partitions = {0, 1};
    first.epoch = 5;
    REQUIRE(c->assign(first).ok());
    Claim later;
    later.partitions = {0};
    later.epoch = 9;
    REQUIRE(c->assign(later).ok());
    CHECK(c->commit(0, 1).ok());
    Status released = c->commit(1, 1);
    CHECK(released.code() == Errc::stale_epoch);
    CHECK(released.error().message.find("not assigned") != std::string::npos);
    CHECK(describe_consumer_group(tp.pool, "t", "g")->partitions[1].committed == 0);
    // A claim the consumer refuses leaves what stays assigned under its own token.
    Claim bad;
    bad.partitions = {1, 7};
    bad.epoch = 11;
    CHECK(c->assign(bad).code() == Errc::invalid_argument);
    CHECK(c->commit(1, 2).code() == Errc::stale_epoch);
    REQUIRE(c->commit(0, 2).ok());
    auto d = TopicManager(tp.pool).describe("t");
    REQUIRE(d.ok());
    CHECK(d->groups[0].partitions[0].epoch == 9);  // partition 0 still under its own token
}

TEST_CASE("multi-process: member churn with SIGKILLs; every message processed at least once, one result each") {
    TestPool tp("grp-churn", 24 << 20);
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(4, 256)).ok());
    REQUIRE(MemObjectStore::open(tp.pool).ok());
    REQUIRE(mgr.register_group("t", "g").ok());
    auto* led = shared_new<ChurnLedger>();
    const std::string name = tp.cleanup.name();
    {
        auto pr = Producer::open(tp.pool, "t");
        REQUIRE(pr.ok());
        for (uint32_t i = 0; i < ChurnLedger::kMessages; ++i) {
            const std::string v = "m" + std::to_string(i);
            REQUIRE(pr->send_keyed(v, v).ok());  // keyed: every version of an input, one partition
        }
    }
    std::mt19937 rng(7);
    std::vector<pid_t> live;
    int next_id = 0, killed = 0;
    auto spawn = [&] {
        const std::string id = "w" + std::to_string(next_id++);
        live.push_back(test::fork_child([&, id] { return churn_worker(name, id, led); }));
    };
    spawn();
    spawn();
    // Churn: every ~40 ms of progress, kill a random worker and start a replacement.
    const uint64_t t0 = mono_now_ns();
    for (int round = 0; round < 8; ++round) {
        timespec ts{0, 40'000'000};
        nanosleep(&ts, nullptr);  // pacing of the churn, not synchronisation
        const size_t k = rng() % live.size();
        kill(live[k], SIGKILL);
        CHECK(test::wait_child(live[k]) == 128 + SIGKILL);
        live.erase(live.begin() + long(k));
        ++killed;
        spawn();
    }
    for (pid_t p : live) CHECK(test::wait_child(p, 30000) == 0);
    const double secs = double(mono_now_ns() - t0) / 1e9;

    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    uint32_t duplicates = 0;
    for (uint32_t i = 0; i < ChurnLedger::kMessages; ++i) {
        const std::string key = "m" + std::to_string(i);
        CHECK_MESSAGE(led->processed[i].load() >= 1, key << " never processed");
        if (led->processed[i].load() > 1) duplicates += led->processed[i].load() - 1;
        auto r = FabricUri::make(name, "results", key);
        REQUIRE(r.ok());
        auto got = (*store)->get(*r);
        REQUIRE(got.ok());
        REQUIRE_MESSAGE(got->has_value(), key << " has no result");
        CHECK(std::string((*got)->data.begin(), (*got)->data.end()) == "R" + key);
        CHECK((*got)->info.metadata.at(std::string(kResultInputVersion)) == "1");
    }
    auto keys = (*store)->list(name, "results", "");
    REQUIRE(keys.ok());
    CHECK(keys->size() == ChurnLedger::kMessages);  // exactly one visible result per input
    auto d = describe_consumer_group(tp.pool, "t", "g");
    REQUIRE(d.ok());
    for (const auto& p : d->partitions) CHECK(p.lag == 0);
    std::printf("group churn: %u messages, %d SIGKILLs, %u reprocessed, %u fenced writes/commits, %.2f s\n",
                ChurnLedger::kMessages, killed, duplicates, led->stale_rejections.load(), secs);
}

TEST_CASE("crash: a joiner killed before publishing its row leaves nothing behind; the id is free") {
    TestPool tp("grp-crash-join");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    REQUIRE(mgr.register_group("t", "g").ok());
    const std::string name = tp.cleanup.name();
    pid_t pid = test::fork_child([&] {
        setenv("FABRIC_SHM_CRASH_POINT", "group.join.before_publish", 1);
        detail::crash_point_rearm();
        Pool p = open_child_pool(name);
        auto g = ConsumerGroup::open(p, "t", "g", 2, fast());
        if (!g) return 91;
        (void)g->join("c");
        return 92;  // not reached
    });
    REQUIRE(test::wait_child(pid) == 128 + SIGKILL);
    auto d = describe_consumer_group(tp.pool, "t", "g");
    REQUIRE(d.ok());
    CHECK(d->members.empty());
    auto g = ConsumerGroup::open(tp.pool, "t", "g", 2, fast());
    REQUIRE(g.ok());
    auto c = g->join("c");  // also steals the membership lock the child died holding
    REQUIRE_MESSAGE(c.ok(), c.error().message);
    CHECK(c->partitions.size() == 2);
}

TEST_CASE("crash: a member killed after taking a partition but before fencing it; the next owner fences") {
    TestPool tp("grp-crash-take");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    auto g = ConsumerGroup::open(tp.pool, "t", "g", 2, fast());
    REQUIRE(g.ok());
    REQUIRE(g->join("a").ok());  // a owns both
    const std::string name = tp.cleanup.name();
    auto* step = shared_new<std::atomic<uint32_t>>();
    pid_t pid = test::fork_child([&] {
        Pool p = open_child_pool(name);
        auto cg = ConsumerGroup::open(p, "t", "g", 2, fast());
        if (!cg) return 91;
        auto j = cg->join("b");  // pending: a still holds b's share
        if (!j || !j->partitions.empty()) return 92;
        setenv("FABRIC_SHM_CRASH_POINT", "group.claim.after_take", 1);
        detail::crash_point_rearm();
        step->store(1, std::memory_order_release);  // pairs with the parent's acquire
        while (step->load(std::memory_order_acquire) != 2) std::this_thread::yield();
        (void)cg->claim("b");  // takes the released partition, dies before fencing
        return 93;
    });
    while (step->load(std::memory_order_acquire) != 1) std::this_thread::yield();
    auto a1 = g->claim("a");  // releases b's share
    REQUIRE(a1.ok());
    REQUIRE(a1->partitions.size() == 1);
    step->store(2, std::memory_order_release);
    REQUIRE(test::wait_child(pid) == 128 + SIGKILL);

    auto before = describe_consumer_group(tp.pool, "t", "g");
    REQUIRE(before.ok());
    const uint32_t taken = a1->partitions[0] == 0 ? 1 : 0;
    const uint64_t dead_epoch = before->partitions[taken].owner_epoch;
    CHECK(dead_epoch > 0);
    CHECK(before->partitions[taken].commit_epoch < dead_epoch);  // taken, never fenced

    auto a2 = g->claim("a");  // b is certainly dead: a takes the partition back and fences it
    const uint64_t t0 = mono_now_ns();
    while (a2.ok() && a2->partitions.size() < 2 && mono_now_ns() - t0 < 2'000'000'000ull)
        a2 = g->claim("a");  // the liveness verdict may be cached for up to liveness_probe_ns
    REQUIRE(a2.ok());
    CHECK(a2->partitions.size() == 2);
    CHECK(a2->epoch > dead_epoch);
    auto after = describe_consumer_group(tp.pool, "t", "g");
    REQUIRE(after.ok());
    CHECK(after->partitions[taken].commit_epoch == a2->epoch);
    MemOffsetStore offsets(tp.pool);
    auto topic = TopicManager(tp.pool).describe("t");
    REQUIRE(topic.ok());
    const OffsetCommit stale{taken, 0, dead_epoch};
    CHECK(offsets.commit("t", topic->incarnation, "g", std::span<const OffsetCommit>(&stale, 1)).code() ==
          Errc::stale_epoch);
}

TEST_CASE("group: a live paused member is not mistaken for dead; a reused pid is not mistaken for alive") {
    TestPool tp("grp-pidreuse");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(4, 16)).ok());
    const std::string name = tp.cleanup.name();
    auto* token = shared_new<std::atomic<uint64_t>>();
    pid_t pid = test::fork_child([&] {
        Pool p = open_child_pool(name);
        auto g = ConsumerGroup::open(p, "t", "g", 4, fast());
        if (!g || !g->join("sleeper")) return 91;
        token->store(p.self(), std::memory_order_release);  // pairs with the parent's acquire
        for (;;) pause();
    });
    while (token->load(std::memory_order_acquire) == 0) std::this_thread::yield();
    auto g = ConsumerGroup::open(tp.pool, "t", "g", 4, fast());
    REQUIRE(g.ok());
    auto c = g->join("watcher");
    REQUIRE(c.ok());
    // Several liveness probes (every 5 ms here) over 30 ms: the paused member stays a member.
    const uint64_t t0 = mono_now_ns();
    while (mono_now_ns() - t0 < 30'000'000ull) {
        c = g->claim("watcher");
        REQUIRE(c.ok());
        REQUIRE(c->partitions.empty());
        REQUIRE(c->pending == 2);
    }
    // Forge pid reuse: the registry slot's start time no longer matches the running pid.
    const OwnerToken tok = OwnerToken(token->load());
    auto* slot = reinterpret_cast<layout::ProcessSlot*>(detail::pool_base(tp.pool) + detail::pool_header(tp.pool).registry_offset +
                                                        (tok & 0xff) * sizeof(layout::ProcessSlot));
    slot->start_time.fetch_add(12345, std::memory_order_relaxed);
    std::string reason;
    CHECK(tp.pool.registry().liveness(tok, MonoClock::now(), &reason) == Liveness::certainly_dead);
    const uint64_t t1 = mono_now_ns();
    while (c.ok() && c->partitions.size() < 4 && mono_now_ns() - t1 < 2'000'000'000ull) c = g->claim("watcher");
    REQUIRE(c.ok());
    CHECK(c->partitions.size() == 4);
    MESSAGE("pid-reuse verdict: " << reason);
    kill(pid, SIGKILL);
    CHECK(test::wait_child(pid) == 128 + SIGKILL);
}

namespace {
/// A producer process stopped at its claim of the topic's next offset (pause point
/// mq.send.after_claim): consumers stand before that claim until its timeout.
pid_t producer_stopped_after_its_claim(const std::string& pool_name) {
    const pid_t pid = producer_stopped_after_claim(pool_name, "claimed", [](const Result<SendResult>&) { return 0; });
    REQUIRE(test::wait_stopped(pid));
    return pid;
}
}  // namespace

TEST_CASE("group consumer: a poll that finds only a loss returns it, as a consumer's does, instead of clearing it") {
    TestPool tp("loss-only");
    REQUIRE(TopicManager(tp.pool).create("t", config(1, 4, OnFull::overwrite)).ok());
    auto prod = Producer::open(tp.pool, "t");
    auto member = GroupConsumer::open(tp.pool, "t", "g", "m");  // registered at 0
    REQUIRE(member.ok());
    for (int i = 0; i < 4; ++i) REQUIRE(prod->send("early").ok());  // 0..3
    const pid_t stopped = producer_stopped_after_its_claim(tp.cleanup.name());  // claims 4
    for (int i = 0; i < 3; ++i) REQUIRE(prod->send("late").ok());  // 5..7: 0..3 overwritten
    // The ring holds 4 (claimed, stuck), 5, 6, 7: the poll can deliver nothing before the claim
    // times out, but it knows 0..3 are gone.
    MessageBatch b;
    uint64_t lost = 0;
    for (int i = 0; i < 3; ++i) {
        auto n = member->poll(b, 64, std::chrono::milliseconds(200));
        REQUIRE(n.ok());
        lost += b.lost();
    }
    ::kill(stopped, SIGKILL);
    test::wait_child(stopped);
    CHECK(lost == 4);
}

namespace {
/// The pool's offsets, whose next `fail_fetches` fetches fail (an offset store on a disk or
/// a server that did not answer once).
class FlakyOffsets final : public OffsetStore {
public:
    explicit FlakyOffsets(const Pool& pool) : pool_offsets_(pool) {}
    Result<FetchedOffset> fetch(std::string_view topic, uint64_t incarnation, std::string_view group,
                                uint32_t partition) override {
        if (fail_fetches > 0) {
            --fail_fetches;
            return make_error(Errc::io_error, "offset store did not answer");
        }
        return pool_offsets_.fetch(topic, incarnation, group, partition);
    }
    Status commit(std::string_view topic, uint64_t incarnation, std::string_view group,
                  std::span<const OffsetCommit> commits) override {
        return pool_offsets_.commit(topic, incarnation, group, commits);
    }
    int fail_fetches = 0;

private:
    MemOffsetStore pool_offsets_;
};
}  // namespace

/// Member a owns partition `kept` (paused by the user) and has just gained `gained` from b,
/// which left; the offset store failed the fetch of its start, so a's last poll returned that
/// error and a reads nothing until its next poll assigns again. One message waits on each
/// partition.
struct GainWhileOffsetsFail {
    TestPool tp{"grp-assignretry"};
    FlakyOffsets offsets{tp.pool};
    std::optional<GroupConsumer> a, b;
    uint32_t kept = 0, gained = 0;
    MessageBatch batch;

    GainWhileOffsetsFail() {
        REQUIRE(TopicManager(tp.pool).create("t", config(2, 16)).ok());
        GroupConsumerOptions o;
        o.group = fast();
        o.consumer.offset_store = &offsets;
        auto opened_b = GroupConsumer::open(tp.pool, "t", "g", "b", o);
        REQUIRE_MESSAGE(opened_b.ok(), opened_b.error().message);
        b.emplace(std::move(*opened_b));
        auto opened_a = GroupConsumer::open(tp.pool, "t", "g", "a", o);
        REQUIRE_MESSAGE(opened_a.ok(), opened_a.error().message);
        a.emplace(std::move(*opened_a));
        // b hands one partition over at its next claim; a takes it at its own.
        const uint64_t split_start = mono_now_ns();
        while ((a->partitions().size() != 1 || b->partitions().size() != 1) &&
               mono_now_ns() - split_start < 2 * kNsPerSec) {
            REQUIRE(b->poll(batch, 16, std::chrono::milliseconds(5)).ok());
            REQUIRE(a->poll(batch, 16, std::chrono::milliseconds(5)).ok());
        }
        REQUIRE(a->partitions().size() == 1);
        kept = a->partitions()[0];
        gained = 1 - kept;
        REQUIRE(a->pause(kept).ok());  // the user's flow control
        REQUIRE(b->leave().ok());
        // a's next claim gains b's partition under a new epoch; the fetch of its start fails.
        offsets.fail_fetches = 1;
        Status gain = {};
        const uint64_t gain_start = mono_now_ns();
        while (gain.ok() && mono_now_ns() - gain_start < 2 * kNsPerSec) {
            auto n = a->poll(batch, 16, std::chrono::milliseconds(5));
            if (!n) gain = std::move(n).error();
        }
        REQUIRE_FALSE(gain.ok());
        CHECK(gain.error().message.find("did not answer") != std::string::npos);
        CHECK(a->partitions().size() == 2);
        auto producer = Producer::open(tp.pool, "t");
        REQUIRE(producer.ok());
        for (uint32_t p = 0; p < 2; ++p) {
            OutgoingMessage m;
            m.value = bytes("m");
            REQUIRE(producer->send_to(p, m).ok());
        }
    }

    /// Polls a until it has read from `want` partitions (or 2 s passed), adding each one read.
    void read_until(std::set<uint32_t>& read_from, size_t want) {
        const uint64_t start = mono_now_ns();
        while (read_from.size() < want && mono_now_ns() - start < 2 * kNsPerSec) {
            auto n = a->poll(batch, 16, std::chrono::milliseconds(5));
            REQUIRE_MESSAGE(n.ok(), n.error().message);
            for (size_t i = 0; i < *n; ++i) read_from.insert(batch[i].partition);
        }
    }
};

TEST_CASE_FIXTURE(GainWhileOffsetsFail, "group consumer: a partition gained while the offset store failed is read "
                                        "after the next poll; one the user paused stays paused") {
    std::set<uint32_t> read_from;
    read_until(read_from, 1);
    CHECK(read_from == std::set<uint32_t>{gained});
    CHECK(a->paused(kept));
    CHECK(a->consumer().paused(kept));
    REQUIRE(a->resume(kept).ok());
    read_until(read_from, 2);
    CHECK(read_from == std::set<uint32_t>{0, 1});
}

TEST_CASE_FIXTURE(GainWhileOffsetsFail, "group consumer: a pause or resume asked while a failed assignment waits "
                                        "for the next poll holds once that poll assigns") {
    // Nothing is assigned now: the consumer refuses both partitions, the member takes both.
    CHECK(a->paused(kept));
    CHECK_FALSE(a->paused(gained));
    CHECK(a->consumer().pause(gained).code() == Errc::invalid_argument);
    REQUIRE(a->pause(gained).ok());
    REQUIRE(a->resume(kept).ok());
    CHECK(a->paused(gained));
    CHECK_FALSE(a->paused(kept));
    const Status foreign = a->pause(7);
    CHECK(foreign.code() == Errc::invalid_argument);
    CHECK(foreign.error().message.find("member 'a' owns partitions [") != std::string::npos);
    CHECK(foreign.error().message.find("not 7; not paused") != std::string::npos);
    CHECK_FALSE(a->paused(7));
    // A second failed assignment keeps what was set meanwhile.
    offsets.fail_fetches = 1;
    auto failed_again = a->poll(batch, 16, std::chrono::milliseconds(5));
    REQUIRE_FALSE(failed_again.ok());
    CHECK(failed_again.error().message.find("did not answer") != std::string::npos);
    CHECK(a->paused(gained));
    CHECK_FALSE(a->paused(kept));
    // The next poll assigns both: the resumed partition is read, the paused one waits.
    std::set<uint32_t> read_from;
    read_until(read_from, 1);
    CHECK(read_from == std::set<uint32_t>{kept});
    CHECK(a->paused(gained));
    CHECK(a->consumer().paused(gained));
    REQUIRE(a->resume(gained).ok());
    read_until(read_from, 2);
    CHECK(read_from == std::set<uint32_t>{0, 1});
}
