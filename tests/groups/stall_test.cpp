// SPDX-License-Identifier: MIT
// Consumer groups, offsets and dead letters when processes *pause* (SIGSTOP, preemption) rather
// than die: fence tokens that stay above every earlier registration (group rm + register,
// topic re-create, a pool re-created under a TieredObjectStore), a worker whose refused result
// put never lets a commit pass the message, dead letters fenced like commits (deterministic
// pause points between the decision and the write), heartbeats that keep the group's lease, a
// group lock held by a live, paused process (commits and an evicted member's rejoin delayed),
// a member evicted again while paused inside its rejoin, and a worker stopped inside a send (its
// forward, a dead letter) past the topic's claim timeout, whose publish a reader skipped.
#include <doctest/doctest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../mq/mq_test_util.h"
#include "fabric_shm/clock.h"
#include "pool_impl.h"
#include "fabric_shm/consumer_group.h"
#include "crash_point.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/dlq_replay.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/tiered_object_store.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/worker_loop.h"
#include "layout/pool_layout.h"
#include "mq/group_internal.h"
#include "mq/topic_internal.h"
#include "worker/membership.h"

using namespace fabric_shm;
using namespace mqtest;

namespace {

constexpr uint64_t kSessionNs = 300'000'000ull;

void sleep_ms(int ms) {
    timespec ts{ms / 1000, long(ms % 1000) * 1'000'000};
    nanosleep(&ts, nullptr);
}

/// Polls `pred` every 5 ms for at most timeout_ms.
bool eventually(const std::function<bool()>& pred, int timeout_ms = 10000) {
    const uint64_t end = mono_now_ns() + uint64_t(timeout_ms) * 1'000'000ull;
    while (!pred()) {
        if (mono_now_ns() >= end) return false;
        sleep_ms(5);
    }
    return true;
}

GroupConfig session(uint64_t ns = kSessionNs) {
    GroupConfig c;
    c.session_timeout = ns_duration(ns);
    c.liveness_probe = std::chrono::milliseconds(5);
    return c;
}

/// Shared between the test and its forked children (barriers instead of sleeps).
template <class T>
T* shared_new() {
    void* p = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    return new (p) T{};
}

FabricUri in_uri(const std::string& pool, const std::string& key) {
    auto u = FabricUri::make(pool, "in", key);
    REQUIRE(u.ok());
    return *u;
}
/// Where WorkerLoop writes the result of in_uri(pool, key): results/<input bucket>/<key>.
FabricUri result_uri(const std::string& pool, const std::string& key) {
    auto u = FabricUri::make(pool, "results", "in/" + key);
    REQUIRE(u.ok());
    return *u;
}

/// The object's bytes as text, or "<absent>".
std::string get_text_of(ObjectStore& store, const FabricUri& u) {
    auto d = store.get(u);
    REQUIRE_MESSAGE(d.ok(), d.error().message);
    if (!d->has_value()) return "<absent>";
    return std::string((*d)->data.begin(), (*d)->data.end());
}

/// Puts fabric://POOL/in/KEY and notifies it on `topic` (keyed, with its version), as
/// fabric-shm-producer does. Returns the version.
uint64_t upload(Pool& pool, ObjectStore& store, Producer& producer, const std::string& key, const std::string& data) {
    const FabricUri u = in_uri(pool.name(), key);
    auto ver = store.put(u, bytes(data));
    REQUIRE_MESSAGE(ver.ok(), ver.error().message);
    const std::string v = std::to_string(*ver), us = u.to_string();
    const MessageHeader h[] = {{kHeaderVersion, v}};
    auto sent = producer.send_keyed(bytes(key), bytes(us), h);
    REQUIRE_MESSAGE(sent.ok(), sent.error().message);
    return *ver;
}

/// A WorkerLoop in a forked child: opens the pool, runs until idle for `idle_ms`. Exit code
/// 0 on a clean exit; `arm` (a pause or crash point) is armed in the child before it starts.
pid_t worker_child(const std::string& name, WorkerConfig cfg, Processor processor, const std::string& arm = "") {
    return test::fork_child([=]() mutable {
        if (!arm.empty()) {
            ::setenv("FABRIC_SHM_PAUSE_POINT", arm.c_str(), 1);
            detail::crash_point_rearm();
        }
        auto p = Pool::open(name);
        if (!p) return 10;
        auto loop = WorkerLoop::open(*p, cfg, std::move(processor));
        if (!loop) {
            std::fprintf(stderr, "worker open: %s\n", loop.error().message.c_str());
            return 11;
        }
        loop->set_log([&](std::string_view line) { std::fprintf(stderr, "worker %s: %.*s\n", cfg.member_id.c_str(), int(line.size()), line.data()); });
        auto why = loop->run([] { return false; });
        if (!why) {
            std::fprintf(stderr, "worker run: %s\n", why.error().message.c_str());
            return 12;
        }
        return 0;
    });
}

WorkerConfig worker_config(const std::string& topic, const std::string& id) {
    WorkerConfig cfg;
    cfg.topic = topic;
    cfg.group = "g";
    cfg.member_id = id;
    cfg.session_timeout_ns = kSessionNs;
    cfg.exit_when_idle_ns = 700'000'000ull;
    cfg.backoff_initial_ns = 1'000'000ull;
    cfg.backoff_max_ns = 2'000'000ull;
    return cfg;
}

Result<std::vector<uint8_t>> copy(const WorkItem& item) { return std::vector<uint8_t>(item.data.begin(), item.data.end()); }

/// Topic `topic` (one partition of 64 slots) with group "g" registered, and the pool's store
/// (which a WorkerLoop opens).
Result<std::unique_ptr<MemObjectStore>> topic_with_group_and_store(TestPool& tp, const std::string& topic) {
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create(topic, config(1, 64)).ok());
    REQUIRE(mgr.register_group(topic, "g").ok());
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    return store;
}

uint64_t committed(const Pool& pool, const std::string& topic, uint32_t partition) {
    auto d = describe_consumer_group(pool, topic, "g");
    REQUIRE_MESSAGE(d.ok(), d.error().message);
    return d->partitions.at(partition).committed;
}

struct DeadLetter {
    std::string value;
    uint64_t offset = 0;
    std::string reason;
};
/// Every message of `topic`.dlq (observer; empty when the DLQ topic was never created).
std::vector<DeadLetter> dead_letters(const Pool& pool, const std::string& topic) {
    std::vector<DeadLetter> out;
    auto c = Consumer::open(pool, topic + ".dlq", "");
    if (!c && c.code() == Errc::not_found) return out;
    REQUIRE_MESSAGE(c.ok(), c.error().message);
    REQUIRE(c->assign_all().ok());
    REQUIRE(c->seek(SeekPolicy::Earliest()).ok());
    MessageBatch b;
    auto n = c->poll(b, 256, Duration::zero());
    REQUIRE(n.ok());
    for (const Message& m : b)
        out.push_back({std::string(m.value_str()), std::stoull(std::string(m.header(kDlqHeaderOffset))),
                       std::string(m.header(kDlqHeaderReason))});
    return out;
}

/// The position invariant, checked from outside: every offset below the committed one has a
/// result for the version it announced, or a dead letter.
void check_nothing_passed(Pool& pool, ObjectStore& store, const std::string& topic,
                          const std::vector<std::pair<std::string, uint64_t>>& sent) {
    const uint64_t c = committed(pool, topic, 0);
    std::set<uint64_t> dead;
    for (const auto& d : dead_letters(pool, topic)) dead.insert(d.offset);
    for (uint64_t o = 0; o < c && o < sent.size(); ++o) {
        auto current = result_is_current(store, result_uri(pool.name(), sent[o].first),
                                         in_uri(pool.name(), sent[o].first).to_string(), sent[o].second);
        REQUIRE(current.ok());
        CHECK_MESSAGE((*current || dead.count(o)),
                      "committed " << c << " passed offset " << o << " (" << sent[o].first
                                   << ") without a result or a dead letter");
    }
}

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/fabric-stall-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

// ---- fence tokens across registrations -------------------------------------------------------

TEST_CASE("fence tokens: a group removed and registered again fences above every token of the old registration") {
    TestPool tp("stall-rereg");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    uint64_t old_max = 0;
    {
        auto g = ConsumerGroup::open(tp.pool, "t", "g", 2, session(10'000'000'000ull));
        REQUIRE(g.ok());
        // Churn: every join and acquisition draws an epoch, so the old tokens climb.
        for (int i = 0; i < 4; ++i) {
            REQUIRE(g->join("a").ok());
            REQUIRE(g->join("b").ok());
            for (const char* id : {"a", "b", "a"}) {
                auto c = g->claim(id);
                REQUIRE(c.ok());
                old_max = std::max(old_max, c->epoch);
            }
            REQUIRE(g->leave("b").ok());
            REQUIRE(g->leave("a").ok());
        }
    }
    // A result written by the old registration under its highest token.
    const FabricUri r = result_uri(tp.pool.name(), "k");
    REQUIRE((*store)->put(r, bytes("old"), result_put_options("fabric://x/in/k", 1, old_max)).ok());

    REQUIRE(mgr.remove_group("t", "g").ok());
    auto g2 = ConsumerGroup::open(tp.pool, "t", "g", 2, session(10'000'000'000ull));
    REQUIRE(g2.ok());
    auto c = g2->join("new");
    REQUIRE(c.ok());
    CHECK(c->epoch > old_max);
    // The new registration's first member writes the re-uploaded input's result.
    auto put = (*store)->put(r, bytes("new"), result_put_options("fabric://x/in/k", 2, c->epoch));
    CHECK_MESSAGE(put.ok(), put.error().message);
    auto d = describe_consumer_group(tp.pool, "t", "g");
    REQUIRE(d.ok());
    CHECK(d->era > 0);
    CHECK(d->epoch == c->epoch);
}

TEST_CASE("fence tokens: a re-created topic's group fences above the removed topic's results") {
    TestPool tp("stall-retopic");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 16)).ok());
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    uint64_t old_max = 0;
    {
        auto g = ConsumerGroup::open(tp.pool, "t", "g", 1, session(10'000'000'000ull));
        REQUIRE(g.ok());
        for (int i = 0; i < 5; ++i) {
            auto c = g->join("m" + std::to_string(i));
            REQUIRE(c.ok());
            old_max = std::max(old_max, c->epoch);
            REQUIRE(g->leave("m" + std::to_string(i)).ok());
        }
    }
    const FabricUri r = result_uri(tp.pool.name(), "k");
    REQUIRE((*store)->put(r, bytes("old"), result_put_options("fabric://x/in/k", 1, old_max)).ok());
    REQUIRE(mgr.remove("t").ok());
    REQUIRE(mgr.create("t", config(1, 16)).ok());
    auto g2 = ConsumerGroup::open(tp.pool, "t", "g", 1, session(10'000'000'000ull));
    REQUIRE(g2.ok());
    auto c = g2->join("new");
    REQUIRE(c.ok());
    CHECK(c->epoch > old_max);
    auto put = (*store)->put(r, bytes("new"), result_put_options("fabric://x/in/k", 2, c->epoch));
    CHECK_MESSAGE(put.ok(), put.error().message);
}

TEST_CASE("fence tokens: a pool re-created under a TieredObjectStore fences above the results it keeps") {
    test::PoolCleanup cleanup(test::unique_pool_name("stall-tier"));
    TempDir dir;
    TieredConfig tc;
    tc.cold_dir = dir.path + "/cold";
    tc.max_hot = 4;
    tc.fsync = FsyncPolicy::never;
    uint64_t old_token = 0;
    const FabricUri r = result_uri(cleanup.name(), "k");
    {
        auto pool = Pool::create(PoolOptions{cleanup.name(), 32ull << 20});
        REQUIRE(pool.ok());
        TopicManager mgr(*pool);
        REQUIRE(mgr.create("t", config(1, 16)).ok());
        auto tiered = TieredObjectStore::open(*pool, tc);
        REQUIRE_MESSAGE(tiered.ok(), tiered.error().message);
        GroupConsumerOptions o;
        o.group = session(10'000'000'000ull);
        auto gc = GroupConsumer::open(*pool, "t", "g", "w", o);
        REQUIRE(gc.ok());
        for (int i = 0; i < 4; ++i) REQUIRE(gc->rejoin().ok());  // the old pool's tokens climb
        old_token = gc->epoch();
        REQUIRE((*tiered)->put(r, bytes("old"), result_put_options("fabric://x/in/k", 1, old_token)).ok());
        REQUIRE((*tiered)->checkpoint(/*include_hot=*/true).ok());
        REQUIRE(gc->leave().ok());
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());

    // A new pool: empty fence floor, empty hot tier; the result comes back from the cold tier.
    auto pool = Pool::create(PoolOptions{cleanup.name(), 32ull << 20});
    REQUIRE(pool.ok());
    TopicManager mgr(*pool);
    REQUIRE(mgr.create("t", config(1, 16)).ok());
    auto tiered = TieredObjectStore::open(*pool, tc);
    REQUIRE_MESSAGE(tiered.ok(), tiered.error().message);
    auto h = (*tiered)->head(r);
    REQUIRE(h.ok());
    REQUIRE(h->has_value());
    CHECK((*h)->fence_token == old_token);
    auto gc = GroupConsumer::open(*pool, "t", "g", "w");
    REQUIRE(gc.ok());
    CHECK(gc->epoch() > old_token);
    auto put = (*tiered)->put(r, bytes("new"), result_put_options("fabric://x/in/k", 2, gc->epoch()));
    CHECK_MESSAGE(put.ok(), put.error().message);
    REQUIRE(gc->leave().ok());
}

// ---- the position invariant ---------------------------------------------------------------------

// A result put refused while the worker still owns the partition (the stored result carries a
// token from outside the group's registration): before, the worker treated it as "lost",
// abandoned the batch without rewinding, and its next batch's commit passed the message.
TEST_CASE("worker: a refused result put never lets a later commit pass the message") {
    TestPool tp("stall-refused", 32ull << 20);
    const std::string name = tp.cleanup.name();
    const auto store = topic_with_group_and_store(tp, "rp");
    auto producer = Producer::open(tp.pool, "rp");
    REQUIRE(producer.ok());
    std::vector<std::pair<std::string, uint64_t>> sent;
    for (int i = 0; i < 6; ++i) {
        const std::string k = "k" + std::to_string(i);
        sent.emplace_back(k, upload(tp.pool, **store, *producer, k, "data " + k));
    }
    // k1's result slot is taken by a writer outside the group, far above any token it will draw.
    PutOptions forged;
    forged.condition = PutCondition::fence;
    forged.fence_token = (uint64_t(1) << 61) - 1;  // the highest token the floor takes
    REQUIRE((*store)->put(result_uri(name, "k1"), bytes("forged"), forged).ok());

    WorkerConfig cfg = worker_config("rp", "w");
    cfg.batch = 2;  // k1 ends the first batch; the next batch's commit would pass it
    REQUIRE(test::wait_child(worker_child(name, cfg, copy)) == 0);

    CHECK(committed(tp.pool, "rp", 0) == 6);
    check_nothing_passed(tp.pool, **store, "rp", sent);
    const auto dead = dead_letters(tp.pool, "rp");
    REQUIRE(dead.size() == 1);
    CHECK(dead[0].offset == 1);
    CHECK(dead[0].reason.find("fenced at token") != std::string::npos);
    auto k1 = (*store)->get(result_uri(name, "k1"));
    REQUIRE(k1.ok());
    REQUIRE(k1->has_value());
    CHECK(std::string((*k1)->data.begin(), (*k1)->data.end()) == "forged");  // never overwritten
}

std::atomic<uint64_t>& fence_floor_of(const Pool& pool) {
    return detail::pool_header(pool).fence_floor;
}

TEST_CASE("fence tokens: a stored token near 2^64 is not noted; no group's tokens wrap") {
    TestPool tp("stall-wrap", 32ull << 20);
    const std::string name = tp.cleanup.name();
    const auto store = topic_with_group_and_store(tp, "wr");
    auto producer = Producer::open(tp.pool, "wr");
    REQUIRE(producer.ok());
    std::vector<std::pair<std::string, uint64_t>> sent;
    for (int i = 0; i < 3; ++i) {
        const std::string k = "k" + std::to_string(i);
        sent.emplace_back(k, upload(tp.pool, **store, *producer, k, "data " + k));
    }
    // k1's stored result carries a token near 2^64 (any PutOptions user can set one).
    PutOptions forged;
    forged.condition = PutCondition::fence;
    forged.fence_token = UINT64_MAX - 3;
    REQUIRE((*store)->put(result_uri(name, "k1"), bytes("forged"), forged).ok());

    REQUIRE(test::wait_child(worker_child(name, worker_config("wr", "w"), copy)) == 0);
    CHECK(committed(tp.pool, "wr", 0) == 3);
    check_nothing_passed(tp.pool, **store, "wr", sent);
    const auto dead = dead_letters(tp.pool, "wr");
    REQUIRE(dead.size() == 1);
    CHECK(dead[0].offset == 1);
    CHECK_MESSAGE(dead[0].reason.find("2^61") != std::string::npos, dead[0].reason);
    CHECK(fence_floor_of(tp.pool).load() < mq::kMaxNotedFenceToken);  // not raised to the stored token

    // Tokens of a group registered after it grow and commit (they wrapped to 1, 3, 5, ...).
    auto g = GroupConsumer::open(tp.pool, "wr", "g2", "m");
    REQUIRE_MESSAGE(g.ok(), g.error().message);
    std::vector<uint64_t> tokens{g->epoch()};
    for (int i = 0; i < 4; ++i) {
        REQUIRE(g->rejoin().ok());
        tokens.push_back(g->epoch());
    }
    for (size_t i = 1; i < tokens.size(); ++i) CHECK(tokens[i] > tokens[i - 1]);
    CHECK(tokens.back() < (uint64_t(1) << 62));
    MessageBatch b;
    auto n = g->poll(b, 4, std::chrono::milliseconds(100));
    REQUIRE(n.ok());
    REQUIRE(*n >= 1);
    auto c = g->commit(b[0]);
    CHECK_MESSAGE(c.ok(), c.error().message);

    // Directly: a token at or above 2^61 is refused and leaves the floor; one below is noted.
    const uint64_t floor_now = fence_floor_of(tp.pool).load();
    for (uint64_t bad : {UINT64_MAX - 3, UINT64_MAX / 2, uint64_t(1) << 61}) {
        auto r = mq::note_fence_token(tp.pool, bad);
        CHECK(r.code() == Errc::invalid_argument);
        CHECK(fence_floor_of(tp.pool).load() == floor_now);
    }
    REQUIRE(mq::note_fence_token(tp.pool, (uint64_t(1) << 61) - 1).ok());
    auto g3 = GroupConsumer::open(tp.pool, "wr", "g3", "m");
    REQUIRE_MESSAGE(g3.ok(), g3.error().message);
    CHECK(g3->epoch() > (uint64_t(1) << 61) - 1);
    CHECK(g3->epoch() < (uint64_t(1) << 62));

    // A floor at the era bound (a corrupt header): registering is refused with a typed error,
    // and nothing is left half-registered.
    fence_floor_of(tp.pool).store(mq::kMaxFenceEra - 1);
    auto g4 = GroupConsumer::open(tp.pool, "wr", "g4", "m");
    REQUIRE_FALSE(g4.ok());
    CHECK(g4.code() == Errc::capacity_exceeded);
    fence_floor_of(tp.pool).store(UINT64_MAX - 1);
    auto g5 = ConsumerGroup::open(tp.pool, "wr", "g5", 1, session());
    REQUIRE_FALSE(g5.ok());
    CHECK(g5.code() == Errc::capacity_exceeded);
    auto groups = describe_consumer_groups(tp.pool, "wr");
    REQUIRE(groups.ok());
    for (const auto& d : *groups) CHECK(d.group != "g4");
}

// A pauses between processing k1 and writing its result; B evicts it, takes the partition,
// writes k1's result (without committing) and leaves; A resumes: its put is refused, it rejoins
// and re-reads the committed offset, so k2 is processed and nothing is passed.
TEST_CASE("worker: paused before its result put and taken over, it is refused and loses nothing") {
    TestPool tp("stall-put", 32ull << 20);
    const std::string name = tp.cleanup.name();
    const auto store = topic_with_group_and_store(tp, "tk");
    auto producer = Producer::open(tp.pool, "tk");
    REQUIRE(producer.ok());
    std::vector<std::pair<std::string, uint64_t>> sent;
    for (int i = 0; i < 3; ++i) {
        const std::string k = "k" + std::to_string(i);
        sent.emplace_back(k, upload(tp.pool, **store, *producer, k, "data " + k));
    }
    const pid_t a = worker_child(name, worker_config("tk", "a"), copy, "worker.result.before_put:2");
    REQUIRE(test::wait_stopped(a));  // k0's result is written (committed at most); k1's is next
    sleep_ms(int(kSessionNs / 1'000'000) + 100);  // a's heartbeat is now older than the session timeout

    GroupConsumerOptions o;
    o.group = session();
    auto b = GroupConsumer::open(tp.pool, "tk", "g", "b", o);  // evicts a, takes the partition
    REQUIRE_MESSAGE(b.ok(), b.error().message);
    REQUIRE(b->partitions() == std::vector<uint32_t>{0});
    MessageBatch batch;
    REQUIRE(b->poll(batch, 8, std::chrono::seconds(1)).ok());
    REQUIRE(batch.size() >= 2);  // a committed at most its completed prefix (k0)
    CHECK(batch[0].offset <= 1);
    CHECK(batch[batch.size() - 1].offset == 2);
    auto put = (*store)->put(result_uri(name, "k1"), bytes("by b"),
                             result_put_options(in_uri(name, "k1").to_string(), sent[1].second, b->epoch()));
    REQUIRE_MESSAGE(put.ok(), put.error().message);
    REQUIRE(b->leave().ok());  // b stops before committing anything

    test::resume(a);
    CHECK(test::wait_child(a) == 0);
    CHECK(committed(tp.pool, "tk", 0) == 3);
    check_nothing_passed(tp.pool, **store, "tk", sent);
    CHECK(dead_letters(tp.pool, "tk").empty());
    CHECK(get_text_of(**store, result_uri(name, "k2")) == "data k2");
}

// Found by the stall torture (docs/reliability.md, "Stall torture"): A pauses right before its
// result put; B evicts it, processes k0, writes the result and commits; the result is then
// consumed and removed (as the torture's harness, or any downstream reader, does). The result
// put was fenced only against the stored object's token, so A's late put into the now absent
// key landed and re-created a result for a message the group had long committed past.
TEST_CASE("worker: paused before its result put, taken over, its result removed: the late put does not re-create it") {
    TestPool tp("stall-late-put", 32ull << 20);
    const std::string name = tp.cleanup.name();
    const auto store = topic_with_group_and_store(tp, "tk");
    auto producer = Producer::open(tp.pool, "tk");
    REQUIRE(producer.ok());
    const uint64_t v0 = upload(tp.pool, **store, *producer, "k0", "data k0");
    const pid_t a = worker_child(name, worker_config("tk", "a"), copy, "worker.result.before_put:1");
    REQUIRE(test::wait_stopped(a));  // k0 processed, its result not written
    sleep_ms(int(kSessionNs / 1'000'000) + 100);  // a's heartbeat is now older than the session timeout

    GroupConsumerOptions o;
    o.group = session();
    auto b = GroupConsumer::open(tp.pool, "tk", "g", "b", o);  // evicts a, takes the partition
    REQUIRE_MESSAGE(b.ok(), b.error().message);
    REQUIRE(b->partitions() == std::vector<uint32_t>{0});
    MessageBatch batch;
    REQUIRE(b->poll(batch, 8, std::chrono::seconds(1)).ok());
    REQUIRE(batch.size() == 1);
    auto put = (*store)->put(result_uri(name, "k0"), bytes("by b"),
                             result_put_options(in_uri(name, "k0").to_string(), v0, b->epoch()));
    REQUIRE_MESSAGE(put.ok(), put.error().message);
    REQUIRE(b->commit().ok());
    REQUIRE(b->leave().ok());
    CHECK(committed(tp.pool, "tk", 0) == 1);
    auto removed = (*store)->remove(result_uri(name, "k0"));  // consumed downstream
    REQUIRE(removed.ok());
    REQUIRE(*removed);

    test::resume(a);
    CHECK(test::wait_child(a) == 0);
    CHECK(get_text_of(**store, result_uri(name, "k0")) == "<absent>");  // a's put was refused
    CHECK(committed(tp.pool, "tk", 0) == 1);
    CHECK(dead_letters(tp.pool, "tk").empty());
}

namespace {

/// Reads `topic` from its start with a 20 ms claim timeout until it steps over a claim (a skip
/// record), as any reader does once a claimer stays stopped past the claim timeout; the skip
/// records it passed.
uint64_t skip_stopped_claim(const Pool& pool, const std::string& topic) {
    ConsumerOptions co;
    co.claim_timeout = std::chrono::milliseconds(20);
    auto c = Consumer::open(pool, topic, "", co);
    REQUIRE_MESSAGE(c.ok(), c.error().message);
    REQUIRE(c->assign_all().ok());
    REQUIRE(c->seek(SeekPolicy::Earliest()).ok());
    MessageBatch batch;
    uint64_t skipped = 0;
    for (int round = 0; skipped == 0 && round < 100; ++round) {
        auto n = c->poll(batch, 4, std::chrono::milliseconds(50));
        REQUIRE_MESSAGE(n.ok(), n.error().message);
        skipped += batch.skipped();
    }
    return skipped;
}

}  // namespace

// A worker stopped between its forward's claim in the next topic and the publish, past the
// next topic's claim timeout: a reader there steps over the claim, and the late publish fails
// with `skipped` (the notification was not delivered). The result is written, so nothing is
// lost, but that error ended the worker. It now forwards again (its next hand-out finds the
// result) and goes on.
TEST_CASE("worker: stopped inside its forward past the next topic's claim timeout, it forwards again and goes on") {
    TestPool tp("stall-forward-skip", 32ull << 20);
    const std::string name = tp.cleanup.name();
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("fw", config(1, 64)).ok());
    REQUIRE(mgr.register_group("fw", "g").ok());
    REQUIRE(mgr.create("fw-next", config(1, 16)).ok());
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    auto producer = Producer::open(tp.pool, "fw");
    REQUIRE(producer.ok());
    std::vector<std::pair<std::string, uint64_t>> sent;
    sent.emplace_back("k0", upload(tp.pool, **store, *producer, "k0", "data k0"));
    WorkerConfig cfg = worker_config("fw", "w");
    cfg.next_topic = "fw-next";
    const pid_t w = worker_child(name, cfg, copy, "mq.send.after_claim:1");
    REQUIRE(test::wait_stopped(w));  // k0's result written; its forward claimed, not published
    CHECK(skip_stopped_claim(tp.pool, "fw-next") == 1);
    test::resume(w);
    CHECK(test::wait_child(w) == 0);  // not ended by the skipped publish
    CHECK(committed(tp.pool, "fw", 0) == 1);
    check_nothing_passed(tp.pool, **store, "fw", sent);
    // The next topic holds the skip record, then the notification sent again.
    auto next = Consumer::open(tp.pool, "fw-next", "");
    REQUIRE(next.ok());
    REQUIRE(next->assign_all().ok());
    REQUIRE(next->seek(SeekPolicy::Earliest()).ok());
    MessageBatch batch;
    REQUIRE(next->poll(batch, 4, Duration::zero()).value() == 1);
    CHECK(batch[0].offset == 1);
    CHECK(batch[0].value_str() == result_uri(name, "k0").to_string());
    CHECK(dead_letters(tp.pool, "fw").empty());
}

// ---- fenced dead letters ----------------------------------------------------------------------

// A decides to dead-letter k0 (its processor rejects it) and pauses before the dead letter is
// written; B evicts A, processes k0 and commits. A resumes: its dead letter is refused.
TEST_CASE("dlq: a member paused between the dead-letter decision and the write is fenced out") {
    TestPool tp("stall-dlq", 32ull << 20);
    const std::string name = tp.cleanup.name();
    const auto store = topic_with_group_and_store(tp, "dq");
    auto producer = Producer::open(tp.pool, "dq");
    REQUIRE(producer.ok());
    std::vector<std::pair<std::string, uint64_t>> sent;
    sent.emplace_back("k0", upload(tp.pool, **store, *producer, "k0", "data k0"));

    auto reject = [](const WorkItem&) -> Result<std::vector<uint8_t>> {
        return make_error(Errc::invalid_argument, "a rejects it");  // permanent: dead-letter at once
    };
    const pid_t a = worker_child(name, worker_config("dq", "a"), reject, "dlq.dead_letter.decided");
    REQUIRE(test::wait_stopped(a));
    sleep_ms(int(kSessionNs / 1'000'000) + 100);
    const pid_t b = worker_child(name, worker_config("dq", "b"), copy);  // evicts a, processes k0
    REQUIRE(test::wait_child(b) == 0);
    CHECK(committed(tp.pool, "dq", 0) == 1);
    CHECK(get_text_of(**store, result_uri(name, "k0")) == "data k0");

    test::resume(a);
    CHECK(test::wait_child(a) == 0);
    const auto dead = dead_letters(tp.pool, "dq");
    CHECK_MESSAGE(dead.empty(), dead.size() << " dead letter(s) for a message b processed");
    CHECK(committed(tp.pool, "dq", 0) == 1);
}

// A records the decision, then pauses before sending; B evicts A and finds the record: it
// dead-letters k0 instead of processing it. A resumes and does not send a second one.
TEST_CASE("dlq: a member paused after recording a dead letter: its successor sends it, nobody processes it") {
    TestPool tp("stall-dlq2", 32ull << 20);
    const std::string name = tp.cleanup.name();
    const auto store = topic_with_group_and_store(tp, "dr");
    auto producer = Producer::open(tp.pool, "dr");
    REQUIRE(producer.ok());
    std::vector<std::pair<std::string, uint64_t>> sent;
    sent.emplace_back("k0", upload(tp.pool, **store, *producer, "k0", "data k0"));
    sent.emplace_back("k1", upload(tp.pool, **store, *producer, "k1", "data k1"));

    auto reject_k0 = [](const WorkItem& item) -> Result<std::vector<uint8_t>> {
        if (item.uri.key() == "k0") return make_error(Errc::invalid_argument, "a rejects k0");
        return std::vector<uint8_t>(item.data.begin(), item.data.end());
    };
    const pid_t a = worker_child(name, worker_config("dr", "a"), reject_k0, "dlq.dead_letter.recorded");
    REQUIRE(test::wait_stopped(a));
    sleep_ms(int(kSessionNs / 1'000'000) + 100);
    const pid_t b = worker_child(name, worker_config("dr", "b"), copy);
    REQUIRE(test::wait_child(b) == 0);
    CHECK(committed(tp.pool, "dr", 0) == 2);
    CHECK(get_text_of(**store, result_uri(name, "k0")) == "<absent>");  // b did not process it
    CHECK(get_text_of(**store, result_uri(name, "k1")) == "data k1");

    test::resume(a);
    CHECK(test::wait_child(a) == 0);
    const auto dead = dead_letters(tp.pool, "dr");
    REQUIRE(dead.size() == 1);
    CHECK(dead[0].value == in_uri(name, "k0").to_string());
    check_nothing_passed(tp.pool, **store, "dr", sent);
}

// A dead-letters k0, processes k1, records the dead-letter decision for k2 and pauses before
// sending it (one batch, nothing committed yet). B evicts A. The partition has one record, so
// it must also be the first uncommitted offset: B starts at k2 and sends its dead letter; it
// neither processes k0 (already dead-lettered) nor k1 again.
TEST_CASE("dlq: two dead letters in one batch, evicted after the second record: the successor starts at it") {
    TestPool tp("stall-dlq3", 32ull << 20);
    const std::string name = tp.cleanup.name();
    const auto store = topic_with_group_and_store(tp, "d3");
    auto producer = Producer::open(tp.pool, "d3");
    REQUIRE(producer.ok());
    std::vector<std::pair<std::string, uint64_t>> sent;
    for (int i = 0; i < 3; ++i) {
        const std::string k = "k" + std::to_string(i);
        sent.emplace_back(k, upload(tp.pool, **store, *producer, k, "data " + k));
    }
    auto reject_even = [](const WorkItem& item) -> Result<std::vector<uint8_t>> {
        if (item.uri.key() != "k1") return make_error(Errc::invalid_argument, "a rejects " + std::string(item.uri.key()));
        return std::vector<uint8_t>(item.data.begin(), item.data.end());
    };
    WorkerConfig acfg = worker_config("d3", "a");
    acfg.batch = 8;  // all three in one batch: nothing committed before the pause
    const pid_t a = worker_child(name, acfg, reject_even, "dlq.dead_letter.recorded:2");
    REQUIRE(test::wait_stopped(a));
    CHECK(committed(tp.pool, "d3", 0) == 2);  // recording k2 committed up to it
    sleep_ms(int(kSessionNs / 1'000'000) + 100);
    const pid_t b = worker_child(name, worker_config("d3", "b"), copy);
    REQUIRE(test::wait_child(b) == 0);
    CHECK(committed(tp.pool, "d3", 0) == 3);
    CHECK(get_text_of(**store, result_uri(name, "k0")) == "<absent>");  // b did not process it
    CHECK(get_text_of(**store, result_uri(name, "k1")) == "data k1");  // a did
    CHECK(get_text_of(**store, result_uri(name, "k2")) == "<absent>");  // b dead-lettered it

    test::resume(a);
    CHECK(test::wait_child(a) == 0);
    std::multiset<uint64_t> offsets;
    for (const auto& d : dead_letters(tp.pool, "d3")) offsets.insert(d.offset);
    CHECK(offsets == std::multiset<uint64_t>{0, 2});  // each once
    check_nothing_passed(tp.pool, **store, "d3", sent);
}

// ---- the group lease --------------------------------------------------------------------------

// A dead-letter topic holds 256 letters per partition. A full one is back-pressure: the
// worker keeps the decision and waits (its other work goes on), instead of ending; every
// successor would have met the same recorded decision and ended too.
TEST_CASE("worker: a full dead-letter topic makes the worker wait, not exit; room made there, the rest is dead-lettered") {
    constexpr int kPoison = 262;  // 256 fill the DLQ partition, 6 wait
    TestPool tp("stall-dlq-full", 64ull << 20);
    const std::string name = tp.cleanup.name();
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("df", config(1, 512)).ok());
    REQUIRE(mgr.register_group("df", "g").ok());
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    auto producer = Producer::open(tp.pool, "df");
    REQUIRE(producer.ok());
    for (int i = 0; i < kPoison; ++i) upload(tp.pool, **store, *producer, "k" + std::to_string(i), "poison");

    const pid_t w = worker_child(name, worker_config("df", "w"), [](const WorkItem&) -> Result<std::vector<uint8_t>> {
        return make_error(Errc::invalid_argument, "poison");  // permanent: dead-lettered at once
    });
    // The DLQ fills; the 257th letter waits, recorded and committed up to, but not sent.
    REQUIRE(eventually([&] { return committed(tp.pool, "df", 0) == 256; }));
    // Without the wait the worker ended within the send's 1 s block timeout.
    int status = 0;
    for (int k = 0; k < 30; ++k) {
        REQUIRE_MESSAGE(::waitpid(w, &status, WNOHANG) == 0, "the worker ended while the dead-letter topic was full");
        sleep_ms(100);
    }
    CHECK(committed(tp.pool, "df", 0) == 256);
    CHECK(dead_letters(tp.pool, "df").size() == 256);

    PurgeOptions all;
    all.all = true;
    auto purged = purge_dead_letters(tp.pool, "df.dlq", all);
    REQUIRE_MESSAGE(purged.ok(), purged.error().message);
    CHECK(purged->removed == 256);
    // Room again: the waiting letters go out, and the worker ends idle, cleanly.
    CHECK(test::wait_child(w, 30000) == 0);
    CHECK(committed(tp.pool, "df", 0) == uint64_t(kPoison));
    const auto rest = dead_letters(tp.pool, "df");
    REQUIRE(rest.size() == size_t(kPoison - 256));
    for (size_t i = 0; i < rest.size(); ++i) CHECK(rest[i].offset == 256 + i);
}

// The same stall inside a dead letter's send: the DLQ's reader steps over the stopped
// worker's claim, and the late publish fails with `skipped`. The decision was recorded (a
// successor would send the letter), but the error ended the worker; it now sends the letter
// again, as after a busy or full DLQ.
TEST_CASE("dlq: a worker stopped inside a dead letter's send past the DLQ's claim timeout sends it again and goes on") {
    TestPool tp("stall-dlq-skip", 32ull << 20);
    const std::string name = tp.cleanup.name();
    const auto store = topic_with_group_and_store(tp, "ds");
    auto producer = Producer::open(tp.pool, "ds");
    REQUIRE(producer.ok());
    upload(tp.pool, **store, *producer, "k0", "data k0");
    upload(tp.pool, **store, *producer, "k1", "data k1");
    auto reject_k0 = [](const WorkItem& item) -> Result<std::vector<uint8_t>> {
        if (item.uri.key() == "k0") return make_error(Errc::invalid_argument, "poison");  // permanent
        return std::vector<uint8_t>(item.data.begin(), item.data.end());
    };
    const pid_t w = worker_child(name, worker_config("ds", "w"), reject_k0, "mq.send.after_claim:1");
    REQUIRE(test::wait_stopped(w));  // k0's dead letter recorded and claimed in the DLQ, not published
    CHECK(skip_stopped_claim(tp.pool, "ds.dlq") == 1);
    test::resume(w);
    CHECK(test::wait_child(w) == 0);  // not ended by the skipped publish
    CHECK(committed(tp.pool, "ds", 0) == 2);
    const auto dead = dead_letters(tp.pool, "ds");
    REQUIRE(dead.size() == 1);  // sent again once; the skip record is no dead letter
    CHECK(dead[0].offset == 0);
    CHECK(dead[0].reason.find("poison") != std::string::npos);
    CHECK(get_text_of(**store, result_uri(name, "k1")) == "data k1");
}

TEST_CASE("group: heartbeats keep the group's registration alive past its lease TTL") {
    TestPool tp("stall-hb");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 16)).ok());
    GroupConfig gc = session(10'000'000'000ull);
    gc.registration.ttl = std::chrono::milliseconds(200);
    auto g = ConsumerGroup::open(tp.pool, "t", "g", 1, gc);
    REQUIRE(g.ok());
    REQUIRE(g->join("m").ok());
    for (int i = 0; i < 30; ++i) {  // 600 ms: three TTLs, heartbeats only
        REQUIRE(g->heartbeat("m").ok());
        sleep_ms(20);
    }
    auto d = mgr.describe("t");
    REQUIRE(d.ok());
    REQUIRE(d->groups.size() == 1);
    CHECK_FALSE(d->groups[0].expired);
    CHECK(g->claim("m").ok());
}

// The defect, end to end: a worker heartbeats (keep_alive) through a message that takes longer
// than its group's TTL while a producer keeps sending to a block topic that a faster group
// drains. Before, the slow group's lease ran out, the producer stopped counting it and
// overwrote what it had not committed.
TEST_CASE("worker: a processor running longer than the group's TTL loses no acknowledged message on a block topic") {
    TestPool tp("stall-ttl", 32ull << 20);
    const std::string name = tp.cleanup.name();
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("blk", config(1, 4)).ok());
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    GroupConsumerOptions fo;
    fo.group = session(10'000'000'000ull);
    auto fast = GroupConsumer::open(tp.pool, "blk", "fast", "f", fo);
    REQUIRE(fast.ok());

    auto* busy = shared_new<std::atomic<int>>();
    auto* registered = shared_new<std::atomic<int>>();
    const pid_t w = test::fork_child([&] {
        auto p = Pool::open(name);
        if (!p) return 10;
        GroupOptions go;
        go.ttl = std::chrono::milliseconds(300);  // registered here, right before the worker joins
        if (!TopicManager(*p).register_group("blk", "g", go)) return 11;
        registered->store(1);
        WorkerConfig cfg = worker_config("blk", "slow");
        cfg.session_timeout_ns = 2'000'000'000ull;
        cfg.exit_when_idle_ns = 1'000'000'000ull;
        cfg.batch = 1;
        auto loop = WorkerLoop::open(*p, cfg, [&](const WorkItem& item) -> Result<std::vector<uint8_t>> {
            if (item.uri.key() == "k0") {
                busy->store(1);
                const uint64_t end = mono_now_ns() + 1'200'000'000ull;  // 4 TTLs
                while (mono_now_ns() < end) {
                    if (Status st = item.keep_alive(); !st) return st.error();
                    sleep_ms(30);
                }
            }
            return std::vector<uint8_t>(item.data.begin(), item.data.end());
        });
        if (!loop) return 12;
        auto why = loop->run([] { return false; });
        if (!why) std::fprintf(stderr, "slow worker: %s\n", why.error().message.c_str());
        return why ? 0 : 13;
    });

    ProducerOptions po;
    po.block_timeout = std::chrono::milliseconds(50);
    auto producer = Producer::open(tp.pool, "blk", po);
    REQUIRE(producer.ok());
    std::vector<std::string> acked;
    MessageBatch batch;
    auto drain_fast = [&] {
        auto n = fast->poll(batch, 16, Duration::zero());
        REQUIRE(n.ok());
        for (const Message& m : batch) REQUIRE(fast->commit(m).ok());
    };
    const uint64_t deadline = mono_now_ns() + 15'000'000'000ull;
    while (registered->load() == 0) {  // the group starts at the head: register before sending
        REQUIRE(mono_now_ns() < deadline);
        sleep_ms(2);
    }
    for (int i = 0; i < 12 && mono_now_ns() < deadline;) {
        const std::string k = "k" + std::to_string(i);
        const FabricUri u = in_uri(name, k);
        auto ver = (*store)->put(u, bytes("data " + k));
        REQUIRE(ver.ok());
        const std::string v = std::to_string(*ver), us = u.to_string();
        const MessageHeader h[] = {{kHeaderVersion, v}};
        for (;;) {
            drain_fast();
            auto s = producer->send_to(0, OutgoingMessage{bytes(us), {}, h});
            if (s) break;
            REQUIRE_MESSAGE(s.code() == Errc::back_pressure, s.error().message);
            REQUIRE(mono_now_ns() < deadline);
        }
        acked.push_back(k);
        if (i == 0)
            while (busy->load() == 0) {  // the long message is in hand
                REQUIRE(mono_now_ns() < deadline);
                sleep_ms(5);
            }
        ++i;
    }
    REQUIRE(acked.size() == 12);
    CHECK(test::wait_child(w, 20000) == 0);
    for (const std::string& k : acked)
        CHECK_MESSAGE(get_text_of(**store, result_uri(name, k)) == "data " + k, "acknowledged " << k << " was lost");
    ::munmap(busy, sizeof(std::atomic<int>));
    ::munmap(registered, sizeof(std::atomic<int>));
}

// ---- a paused lock holder delays, it does not stop a worker -----------------------------------

// GroupSlot::lock is taken over only from a certainly-dead holder; a holder that is alive but
// paused makes a committer wait and then get busy. Before, WorkerLoop ended on that error.
TEST_CASE("worker: a group lock held by a live, paused process delays its commits; it does not end the worker") {
    TestPool tp("stall-lock", 32ull << 20);
    const std::string name = tp.cleanup.name();
    const auto store = topic_with_group_and_store(tp, "lk");
    auto producer = Producer::open(tp.pool, "lk");
    REQUIRE(producer.ok());

    const PausedProcess holder(name);  // its token will hold the lock

    WorkerConfig cfg = worker_config("lk", "w");
    cfg.session_timeout_ns = 10'000'000'000ull;
    cfg.exit_when_idle_ns = 1'500'000'000ull;
    const pid_t w = worker_child(name, cfg, copy);
    // Open is over once the worker recorded its result bucket (its last locked step after
    // joining): a lock taken before that would make the open itself wait and fail busy.
    REQUIRE(eventually([&] {
        auto d = describe_consumer_group(tp.pool, "lk", "g");
        return d.ok() && d->members.size() == 1 && d->partitions[0].member_slot >= 0 && !d->result_bucket.empty();
    }));
    // Take the group's lock in the holder's name, then hand the worker work to commit.
    auto root = tp.pool.open_region(RegionKind::topic, "lk");
    REQUIRE(root.ok());
    auto* groups = reinterpret_cast<mq::GroupSlot*>(reinterpret_cast<char*>(root->data()) + mq::kGroupsOffset);
    int gi = -1;
    for (int i = 0; i < int(mq::kMaxGroups); ++i)
        if (mq::group_state(groups[i].word.load()) == mq::kGroupLive) gi = i;
    REQUIRE(gi >= 0);
    groups[gi].lock.store(holder.token);
    std::vector<std::pair<std::string, uint64_t>> sent;
    for (int i = 0; i < 3; ++i) {
        const std::string k = "k" + std::to_string(i);
        sent.emplace_back(k, upload(tp.pool, **store, *producer, k, "data " + k));
    }
    sleep_ms(2500);  // past the 2 s lock timeout: the worker's commit got busy at least once
    CHECK(committed(tp.pool, "lk", 0) == 0);
    groups[gi].lock.store(0);  // the holder "resumes" and releases
    CHECK(test::wait_child(w, 20000) == 0);
    CHECK(committed(tp.pool, "lk", 0) == 3);
    check_nothing_passed(tp.pool, **store, "lk", sent);
}

namespace {


/// Another member's eviction of the live row, as when its member is silent past the session
/// timeout: LIVE -> FREE(gen + 1) by CAS from the exact word. False when no row is live.
bool evict_live_row(mq::GroupSlot& slot) {
    for (uint32_t r = 0; r < mq::kMaxMembers; ++r) {
        uint64_t w = slot.members[r].word.load();
        const uint64_t freed = mq::make_member_word(mq::kMemberFree, mq::member_gen(w) + 1, 0);
        if (mq::member_state(w) == mq::kMemberLive && slot.members[r].word.compare_exchange_strong(w, freed))
            return true;
    }
    return false;
}

/// After an interrupted rejoin: the next rebalance joins, owns every partition under a newer
/// epoch, and leave() frees the row and the partitions.
void check_rejoins_and_leaves(worker::Membership& member, Pool& pool, const std::string& topic, uint64_t first_epoch,
                              uint32_t parts) {
    auto rejoined = member.rebalance(mono_now_ns());
    REQUIRE_MESSAGE(rejoined.ok(), rejoined.error().message);
    CHECK(*rejoined);
    std::vector<uint32_t> every(parts);
    for (uint32_t p = 0; p < parts; ++p) every[p] = p;
    CHECK(member.partitions() == every);
    CHECK(member.epoch() > first_epoch);
    for (uint32_t p = 0; p < parts; ++p) CHECK_MESSAGE(member.owns(p), "partition " << p << " is held but not owned");
    member.leave();
    auto d = describe_consumer_group(pool, topic, "g");
    REQUIRE_MESSAGE(d.ok(), d.error().message);
    CHECK_MESSAGE(d->members.empty(), "the member's row outlived leave()");
    for (uint32_t p = 0; p < parts; ++p) CHECK(d->partitions[p].member_slot < 0);
}

/// Worker member "w" of group "g" on a new topic "rj" of `parts` partitions, joined; the
/// rejoin tests' starting point.
struct JoinedMember {
    TestPool tp;
    std::unique_ptr<worker::Membership> member;
    uint64_t first_epoch = 0;
    JoinedMember(const std::string& tag, uint32_t parts) : tp(tag, 32ull << 20) {
        TopicManager mgr(tp.pool);
        REQUIRE(mgr.create("rj", config(parts, 64)).ok());
        REQUIRE(mgr.register_group("rj", "g").ok());
        auto made = worker::make_membership(tp.pool, "rj", "g", "w", parts, 10'000'000'000ull);
        REQUIRE_MESSAGE(made.ok(), made.error().message);
        member = std::move(*made);
        REQUIRE(member->join().ok());
        REQUIRE(member->partitions().size() == parts);
        first_epoch = member->epoch();
    }
};

/// The group slot whose joining member the pause hook evicts, and how many joins it evicts.
mq::GroupSlot* g_evicting_slot = nullptr;
std::atomic<int> g_joins_to_evict{0};

/// At "group.join.joined" (the joiner holds its row, before its first claim): the joiner's
/// eviction, as when it is paused there past the session timeout.
void evict_the_joiner(const char* name) {
    if (std::string(name) != "group.join.joined" || g_joins_to_evict.load() == 0) return;
    g_joins_to_evict.fetch_sub(1);
    evict_live_row(*g_evicting_slot);
}

}  // namespace

namespace {

/// The slot a pause hook writes into, and how many more times the hook acts.
mq::GroupSlot* g_hooked_slot = nullptr;
std::atomic<int> g_hook_acts{0};

/// Topic "t" (block mode, one partition of `capacity` slots) and a handle of it, for the tests
/// that call the group table's functions directly.
struct TopicWithHandle {
    TestPool tp;
    TopicManager mgr;
    Result<std::unique_ptr<mq::TopicHandle>> h = make_error(Errc::ok, "");
    TopicWithHandle(const char* tag, uint32_t capacity) : tp(tag), mgr(tp.pool) {
        REQUIRE(mgr.create("t", config(1, capacity)).ok());
        h = mq::open_topic(tp.pool, "t");
        REQUIRE(h.ok());
    }
    /// Registers group "g" with `ttl`: the topic's first registration, in slot 0.
    mq::GroupRef register_g(Duration ttl) {
        GroupOptions go;
        go.ttl = ttl;
        auto ref = mq::register_group(**h, "g", go);
        REQUIRE(ref.ok());
        REQUIRE(ref->index == 0);
        return *ref;
    }
};

/// True when a pause hook reached `point` and may still act (g_hook_acts, counted down).
bool hook_acts_at(const char* name, std::string_view point) {
    if (std::string_view(name) != point || g_hook_acts.load() == 0) return false;
    g_hook_acts.fetch_sub(1);
    return true;
}

mq::TopicHandle* g_hooked_topic = nullptr;
mq::GroupRef g_hooked_ref;
uint64_t g_renewer_clock = 0;
Status g_renewal = make_error(Errc::ok, "");

/// At "group.register.found_expired": a member's renewal lands, its clock read from before the
/// expiry (it read, then paused before its CAS).
void renew_when_judged_expired(const char* name) {
    if (!hook_acts_at(name, "group.register.found_expired")) return;
    g_renewal = mq::renew_group(*g_hooked_topic, g_hooked_ref, "g", g_renewer_clock);
}

}  // namespace

TEST_CASE("group registration: a renewal that lands after a registrant judged the group expired leaves one "
          "registration under the name, and the registrant returns it") {
    TopicWithHandle f("regrenewed", 16);
    TopicManager& mgr = f.mgr;
    auto& h = f.h;
    GroupOptions go;
    go.ttl = std::chrono::seconds(10);
    auto first = mq::register_group(**h, "g", go);
    REQUIRE(first.ok());
    g_hooked_slot = &(*h)->groups[first->index];
    g_hooked_topic = h->get();
    g_hooked_ref = *first;
    const uint64_t ran_out = mono_now_ns() - 1;
    g_hooked_slot->lease_expires_ns.store(ran_out);  // just now
    g_renewer_clock = ran_out - 1'000'000ull;          // the member's clock read, 1 ms before
    g_hook_acts.store(1);
    detail::set_pause_hook(&renew_when_judged_expired);
    auto again = mq::register_group(**h, "g", go);
    detail::set_pause_hook(nullptr);
    CHECK(g_hook_acts.load() == 0);  // the registrant judged it expired, then the renewal landed
    // Nobody acted on the expiry before the renewal (the registrant had only judged it), so
    // the renewal stands, and the registration it kept is the one returned.
    CHECK(g_renewal.ok());
    REQUIRE_MESSAGE(again.ok(), again.error().message);
    CHECK(again->index == first->index);
    CHECK(again->word == first->word);
    auto d = mgr.describe("t");
    REQUIRE(d.ok());
    CHECK(d->groups.size() == 1);
    CHECK_FALSE(mq::group_expired(*g_hooked_slot, mono_now_ns()));
}

TEST_CASE("group lease: once a blocked producer passed over an expired group and sent past it, a renewal whose "
          "clock was read before the expiry fails instead of reviving the group") {
    TopicWithHandle f("latrenewal", 4);  // block mode
    TestPool& tp = f.tp;
    auto& h = f.h;
    GroupOptions go;
    go.ttl = std::chrono::seconds(10);
    auto slow = mq::register_group(**h, "slow", go);
    REQUIRE(slow.ok());
    auto fast = Consumer::open(tp.pool, "t", "fast");
    REQUIRE(fast.ok());
    REQUIRE(fast->assign_all().ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    for (int i = 0; i < 4; ++i) REQUIRE(prod->send("m" + std::to_string(i)).ok());
    MessageBatch b;
    REQUIRE(fast->poll(b, 4, Duration::zero()).ok());
    REQUIRE(b.size() == 4);
    REQUIRE(fast->commit(0, 4).ok());
    mq::GroupSlot& slot = (*h)->groups[slow->index];
    // "slow" read nothing; its lease ran out 2 ms ago. The ring is full for it, so the next
    // send passes it over (as expired) and overwrites offset 0.
    const uint64_t ran_out = mono_now_ns() - 2'000'000ull;
    slot.lease_expires_ns.store(ran_out);
    auto fifth = prod->send("m4");
    REQUIRE_MESSAGE(fifth.ok(), fifth.error().message);
    // Its member's renewal, clock read 1 ms before the expiry, lands now: refused.
    Status late = mq::renew_group(**h, *slow, "slow", ran_out - 1'000'000ull);
    CHECK(late.code() == Errc::lease_expired);
    CHECK(mq::group_expired(slot, mono_now_ns()));
    // In time, a renewal still renews (a registration of its own, under three quarters left).
    auto other = mq::register_group(**h, "other", go);
    REQUIRE(other.ok());
    mq::GroupSlot& other_slot = (*h)->groups[other->index];
    const uint64_t now = mono_now_ns();
    other_slot.lease_expires_ns.store(now + 5 * kNsPerSec);
    REQUIRE(mq::renew_group(**h, *other, "other", now).ok());
    CHECK(other_slot.lease_expires_ns.load() == now + 10 * kNsPerSec);
}

namespace {

/// At "group.lease.expire_acting" (a producer read an expired lease, before its CAS to 0): a
/// renewal lands whose clock read was so old that the lease it writes has run out too.
uint64_t g_old_renewer_clock = 0;
void renew_with_an_older_clock(const char* name) {
    if (!hook_acts_at(name, "group.lease.expire_acting")) return;
    g_renewal = mq::renew_group(*g_hooked_topic, g_hooked_ref, "slow", g_old_renewer_clock);
}

}  // namespace

TEST_CASE("group lease: a producer passing over an expired group sets its lease to 0 even when a renewal that "
          "leaves it expired lands between its read and its CAS; a second late renewal then fails") {
    TopicWithHandle f("twolaterenewals", 4);  // block mode
    auto& h = f.h;
    GroupOptions go;
    go.ttl = std::chrono::milliseconds(40);
    auto slow = mq::register_group(**h, "slow", go);
    REQUIRE(slow.ok());
    mq::GroupSlot& slot = (*h)->groups[slow->index];
    // Ran out 20 ms ago. Renewer 1 read its clock 28 ms before that (under three quarters of
    // the 40 ms TTL left): its renewal, landing at the producer's pause, ends 8 ms ago.
    const uint64_t ran_out = mono_now_ns() - 20'000'000ull;
    slot.lease_expires_ns.store(ran_out);
    g_hooked_topic = h->get();
    g_hooked_ref = *slow;
    g_old_renewer_clock = ran_out - 28'000'000ull;
    g_hook_acts.store(1);
    detail::set_pause_hook(&renew_with_an_older_clock);
    // What a producer about to raise the head past the group asks (wait_for_space, drop_front).
    mq::Slowest slowest;
    (void)mq::min_committed(**h, 0, mono_now_ns(), &slowest, /*acting=*/true);
    detail::set_pause_hook(nullptr);
    CHECK(g_hook_acts.load() == 0);
    CHECK(g_renewal.ok());     // renewer 1's CAS landed (to a lease already past)
    CHECK_FALSE(slowest.any_group);  // passed over
    CHECK(slot.lease_expires_ns.load() == 0);
    // Renewer 2, clock read 1 ms before renewer 1's lease ended: refused, the group stays gone.
    const uint64_t renewed_to = g_old_renewer_clock + 40'000'000ull;
    Status late = mq::renew_group(**h, *slow, "slow", renewed_to - 1'000'000ull);
    CHECK(late.code() == Errc::lease_expired);
    CHECK(mq::group_expired(slot, mono_now_ns()));
}

namespace {

Result<mq::GroupRef> g_next_registration = make_error(Errc::ok, "");

/// The group in slot 0 removed (by force, as `group rm` does) and `name` registered in the slot.
void register_in_slot_0_instead(const char* name, Duration ttl) {
    REQUIRE(mq::deregister_group(*g_hooked_topic, 0, g_hooked_topic->groups[0].word.load(), true, mono_now_ns()));
    GroupOptions go;
    go.ttl = ttl;
    g_next_registration = mq::register_group(*g_hooked_topic, name, go);
}

/// At "group.lease.renew": the renewer's group is removed and another registers in its slot,
/// with a much shorter TTL.
void reregister_before_renewal(const char* name) {
    if (!hook_acts_at(name, "group.lease.renew")) return;
    register_in_slot_0_instead("next", std::chrono::milliseconds(300));
}

}  // namespace

TEST_CASE("group lease: a renewal paused while its group was removed and another registered in the slot leaves "
          "the new registration's lease as it was") {
    TopicWithHandle f("renewreused", 16);
    auto& h = f.h;
    const mq::GroupRef ref = f.register_g(std::chrono::seconds(10));
    mq::GroupSlot& slot = (*h)->groups[0];
    slot.lease_expires_ns.store(mono_now_ns() + kNsPerSec);  // under three quarters left: due
    g_hooked_topic = h->get();
    g_hook_acts.store(1);
    detail::set_pause_hook(&reregister_before_renewal);
    Status renewed = mq::renew_group(**h, ref, "g", mono_now_ns());
    detail::set_pause_hook(nullptr);
    CHECK(g_hook_acts.load() == 0);
    REQUIRE_MESSAGE(g_next_registration.ok(), g_next_registration.error().message);
    REQUIRE(g_next_registration->index == 0);  // the same slot
    CHECK(renewed.code() == Errc::not_found);
    CHECK(slot.lease_expires_ns.load() <= mono_now_ns() + 300'000'000ull);
}

namespace {

/// Whether a reap's notes say that a group was deregistered.
bool reap_says_deregistered(const ReapReport& rep) {
    for (const std::string& note : rep.notes)
        if (note.find("-> deregistered") != std::string::npos) return true;
    return false;
}

/// At "group.reap.found_expired" (a reap found g's lease run out, before ending it): g's
/// member renews, its clock read from before the expiry (it read, then paused before its CAS).
void renew_when_reaped(const char* name) {
    if (!hook_acts_at(name, "group.reap.found_expired")) return;
    g_renewal = mq::renew_group(*g_hooked_topic, g_hooked_ref, "g", g_renewer_clock);
}

/// At "group.reap.found_expired": g is removed by someone else and "next" registers in its slot.
void replace_when_reaped(const char* name) {
    if (!hook_acts_at(name, "group.reap.found_expired")) return;
    register_in_slot_0_instead("next", std::chrono::seconds(10));
}

}  // namespace

TEST_CASE("group reap: a renewal that lands after the reaper found the lease run out keeps the group, and the "
          "reap reports no deregistration") {
    TopicWithHandle f("reaprenewed", 16);
    auto& h = f.h;
    const mq::GroupRef ref = f.register_g(std::chrono::seconds(10));
    mq::GroupSlot& slot = (*h)->groups[0];
    const uint64_t ran_out = mono_now_ns() - 1'000'000ull;
    slot.lease_expires_ns.store(ran_out);
    g_hooked_topic = h->get();
    g_hooked_ref = ref;
    g_renewer_clock = ran_out - 1'000'000ull;
    g_hook_acts.store(1);
    detail::set_pause_hook(&renew_when_reaped);
    ReapReport rep = f.tp.pool.reap(MonoClock::now());
    detail::set_pause_hook(nullptr);
    CHECK(g_hook_acts.load() == 0);
    REQUIRE(g_renewal.ok());
    CHECK_FALSE(reap_says_deregistered(rep));
    CHECK(rep.kind_items == 0);
    CHECK(slot.word.load() == ref.word);  // still the same registration
    CHECK(slot.lease_expires_ns.load() == g_renewer_clock + 10 * kNsPerSec);
    REQUIRE(f.mgr.describe("t")->groups.size() == 1);
}

TEST_CASE("group reap: a reaper paused after finding a lease run out while the group was removed and another "
          "registered in its slot leaves the other as it was and reports nothing") {
    TopicWithHandle f("reapreused", 16);
    auto& h = f.h;
    (void)f.register_g(std::chrono::seconds(10));
    mq::GroupSlot& slot = (*h)->groups[0];
    slot.lease_expires_ns.store(mono_now_ns() - 1'000'000ull);
    g_hooked_topic = h->get();
    g_hook_acts.store(1);
    detail::set_pause_hook(&replace_when_reaped);
    // The reaper's clock read ahead of the new registration's publication, as a reaper whose
    // pause began after its read: the new lease is ahead of it all the same.
    ReapReport rep = f.tp.pool.reap(MonoClock::now());
    detail::set_pause_hook(nullptr);
    CHECK(g_hook_acts.load() == 0);
    REQUIRE_MESSAGE(g_next_registration.ok(), g_next_registration.error().message);
    REQUIRE(g_next_registration->index == 0);
    CHECK_FALSE(reap_says_deregistered(rep));
    CHECK(slot.word.load() == g_next_registration->word);
    CHECK(slot.lease_expires_ns.load() > mono_now_ns() + 9 * kNsPerSec);
    auto d = f.mgr.describe("t");
    REQUIRE(d->groups.size() == 1);
    CHECK(d->groups[0].name == "next");
}

TEST_CASE("group registration: a slot registered again gives its member rows newer generations: a row word of the "
          "earlier registration, held by a member paused before its CAS, matches none of the new one's") {
    TestPool tp("rowgens");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 16)).ok());
    uint64_t earlier = 0;
    {
        auto a = ConsumerGroup::open(tp.pool, "t", "g", 1, session(10'000'000'000ull));
        REQUIRE(a.ok());
        REQUIRE(a->join("a").ok());
        earlier = live_group_slot(tp.pool, "t")->members[0].word.load();
        REQUIRE(mq::member_state(earlier) == mq::kMemberLive);
    }
    REQUIRE(mgr.remove_group("t", "g").ok());
    // The same process joins the same row of the group registered again in the same slot.
    auto a = ConsumerGroup::open(tp.pool, "t", "g", 1, session(10'000'000'000ull));
    REQUIRE(a.ok());
    REQUIRE(a->join("a").ok());
    mq::GroupSlot* slot = live_group_slot(tp.pool, "t");
    const uint64_t now_live = slot->members[0].word.load();
    REQUIRE(mq::member_state(now_live) == mq::kMemberLive);
    CHECK(mq::member_gen(now_live) > mq::member_gen(earlier));
    // The paused evictor's CAS from the earlier word: refused.
    uint64_t expect = earlier;
    CHECK_FALSE(slot->members[0].word.compare_exchange_strong(
        expect, mq::make_member_word(mq::kMemberFree, mq::member_gen(earlier) + 1, 0)));
    CHECK(a->heartbeat("a").ok());
}

namespace {

/// At "group.remove.found" (`group rm g` found g's registration, before removing it): g is
/// removed by someone else and "h" registers in its slot.
void replace_before_removal(const char* name) {
    if (!hook_acts_at(name, "group.remove.found")) return;
    register_in_slot_0_instead("h", std::chrono::seconds(10));
}

}  // namespace

TEST_CASE("group rm: paused after finding the group while it was removed and another registered in its slot, it "
          "removes nothing and leaves the other's lease as it was") {
    TopicWithHandle f("rmreused", 16);
    TopicManager& mgr = f.mgr;
    auto& h = f.h;
    REQUIRE(mgr.register_group("t", "g").ok());
    g_hooked_topic = h->get();
    g_hook_acts.store(1);
    detail::set_pause_hook(&replace_before_removal);
    Status removed = mgr.remove_group("t", "g");
    detail::set_pause_hook(nullptr);
    CHECK(g_hook_acts.load() == 0);
    REQUIRE_MESSAGE(g_next_registration.ok(), g_next_registration.error().message);
    REQUIRE(g_next_registration->index == 0);
    CHECK(removed.code() == Errc::not_found);
    auto d = mgr.describe("t");
    REQUIRE(d.ok());
    REQUIRE(d->groups.size() == 1);
    CHECK(d->groups[0].name == "h");
    CHECK_FALSE(d->groups[0].expired);
    CHECK(mq::holds_registration((*h)->groups[0], g_next_registration->word));
}

TEST_CASE("group membership: a heartbeat damaged into the future does not keep its member alive for ever; another "
          "member's claim evicts it, and it joins again") {
    TopicWithHandle f("futureheartbeat", 16);
    auto a = ConsumerGroup::open(f.tp.pool, "t", "g", 1, session(kNsPerSec));
    REQUIRE(a.ok());
    REQUIRE(a->join("a").ok());
    mq::GroupSlot* slot = live_group_slot(f.tp.pool, "t");
    REQUIRE(slot != nullptr);
    const uint64_t a_word = slot->members[0].word.load();
    REQUIRE(mq::member_state(a_word) == mq::kMemberLive);
    slot->members[0].heartbeat_ns.store(mono_now_ns() + 3600 * kNsPerSec);  // damaged: an hour ahead
    auto b = ConsumerGroup::open(f.tp.pool, "t", "g", 1, session(kNsPerSec));
    REQUIRE(b.ok());
    REQUIRE(b->join("b").ok());  // its claim judges the rows
    CHECK(slot->members[0].word.load() != a_word);  // a's row freed
    CHECK_FALSE(a->heartbeat("a").ok());            // a learns it was evicted
    auto again = ConsumerGroup::open(f.tp.pool, "t", "g", 1, session(kNsPerSec));
    REQUIRE(again.ok());
    CHECK(again->join("a").ok());
}

namespace {

ConsumerGroup* g_heartbeating_member = nullptr;

/// At "group.claim.before_scan" (the claimer read its clock): it stays paused for two
/// sessions, while the other member heartbeats.
void heartbeat_while_claimer_paused(const char* name) {
    if (!hook_acts_at(name, "group.claim.before_scan")) return;
    sleep_ms(700);  // the claimer's pause: over two 300 ms sessions
    REQUIRE(g_heartbeating_member->heartbeat("a").ok());
}

}  // namespace

TEST_CASE("group membership: a claimer paused after reading its clock does not evict a member that heartbeated "
          "during its pause") {
    TopicWithHandle f("pausedclaimer", 16);
    auto a = ConsumerGroup::open(f.tp.pool, "t", "g", 1, session(300'000'000ull));
    REQUIRE(a.ok());
    REQUIRE(a->join("a").ok());
    auto b = ConsumerGroup::open(f.tp.pool, "t", "g", 1, session(300'000'000ull));
    REQUIRE(b.ok());
    REQUIRE(b->join("b").ok());
    mq::GroupSlot* slot = live_group_slot(f.tp.pool, "t");
    REQUIRE(slot != nullptr);
    const uint64_t a_word = slot->members[0].word.load();
    REQUIRE(mq::member_state(a_word) == mq::kMemberLive);
    g_heartbeating_member = &a.value();
    g_hook_acts.store(1);
    detail::set_pause_hook(&heartbeat_while_claimer_paused);
    auto claimed = b->claim("b");
    detail::set_pause_hook(nullptr);
    CHECK(g_hook_acts.load() == 0);
    CHECK_MESSAGE(claimed.ok(), claimed.error().message);
    CHECK(slot->members[0].word.load() == a_word);  // a keeps its row
    CHECK(a->heartbeat("a").ok());
}

namespace {

std::optional<ConsumerGroup> g_newcomer;

/// At "group.heartbeat.before_store" (the member read its clock and checked its row): it stays
/// paused past the session timeout, is evicted, and a new member takes its row.
void evicted_and_replaced_while_heartbeating(const char* name) {
    if (!hook_acts_at(name, "group.heartbeat.before_store")) return;
    sleep_ms(1200);  // past the session timeout
    REQUIRE(evict_live_row(*g_hooked_slot));
    auto d = ConsumerGroup::open(*g_hooked_topic->pool, "t", "g", 1, session(kNsPerSec));
    REQUIRE(d.ok());
    REQUIRE(d->join("d").ok());
    g_newcomer.emplace(std::move(*d));
}

}  // namespace

TEST_CASE("group membership: a heartbeat stored late, after its member was evicted and the row taken by a new "
          "member, does not make the new member look silent to the next claim") {
    TopicWithHandle f("lateheartbeat", 16);
    TestPool& tp = f.tp;
    auto& h = f.h;
    auto a = ConsumerGroup::open(tp.pool, "t", "g", 1, session(kNsPerSec));
    REQUIRE(a.ok());
    REQUIRE(a->join("a").ok());
    g_hooked_slot = live_group_slot(tp.pool, "t");
    REQUIRE(g_hooked_slot != nullptr);
    REQUIRE(mq::member_state(g_hooked_slot->members[0].word.load()) == mq::kMemberLive);
    g_hooked_topic = h->get();
    g_hook_acts.store(1);
    detail::set_pause_hook(&evicted_and_replaced_while_heartbeating);
    (void)a->heartbeat("a");
    detail::set_pause_hook(nullptr);
    CHECK(g_hook_acts.load() == 0);
    REQUIRE(g_newcomer.has_value());
    const uint64_t newcomer_row = g_hooked_slot->members[0].word.load();
    REQUIRE(mq::member_state(newcomer_row) == mq::kMemberLive);  // "d" took a's row
    // Another member's claim judges the rows: "d" joined moments ago.
    auto b = ConsumerGroup::open(tp.pool, "t", "g", 1, session(kNsPerSec));
    REQUIRE(b.ok());
    REQUIRE(b->join("b").ok());
    CHECK(g_hooked_slot->members[0].word.load() == newcomer_row);
    CHECK(g_newcomer->heartbeat("d").ok());
    g_newcomer.reset();
}

// An evicted worker member rejoins from rebalance(); a live, paused lock holder makes that
// join busy, and WorkerLoop takes busy as "rebalance delayed" and calls rebalance() again.
// That retry must join: ConsumerGroup::claim() joins an unknown member by itself, and a
// member joined that way behind the Membership's back was refused by owns() (so every result
// put, which is fenced on owns(), failed forever) and was left behind by leave().
TEST_CASE("worker membership: a rejoin refused as busy by a paused lock holder joins on the next rebalance and owns its partitions") {
    constexpr uint32_t kParts = 2;
    JoinedMember f("stall-rejoin", kParts);
    worker::Membership& member = *f.member;
    const std::string name = f.tp.name();
    mq::GroupSlot* slot = live_group_slot(f.tp.pool, "rj");
    REQUIRE(slot != nullptr);
    REQUIRE(evict_live_row(*slot));

    // A live process whose token holds the group's lock: paused, as far as anyone can tell.
    const PausedProcess holder(name);
    slot->lock.store(holder.token);

    // Evicted: the claim is stale, the rejoin waits out the lock's 2 s timeout and is busy.
    auto delayed = member.rebalance(mono_now_ns());
    REQUIRE_FALSE(delayed.ok());
    CHECK_MESSAGE(delayed.code() == Errc::busy, delayed.error().message);
    CHECK_FALSE(member.owns(0));

    slot->lock.store(0);  // the holder "resumes" and releases
    check_rejoins_and_leaves(member, f.tp.pool, "rj", f.first_epoch, kParts);
}

TEST_CASE("worker membership: evicted while paused inside its rejoin, it joins on the next rebalance and owns its partitions") {
    constexpr uint32_t kParts = 2;
    JoinedMember f("stall-rejoin-evicted", kParts);
    worker::Membership& member = *f.member;
    g_evicting_slot = live_group_slot(f.tp.pool, "rj");
    REQUIRE(g_evicting_slot != nullptr);

    // Evicted once while working (its claim goes stale), and once more inside the rejoin.
    REQUIRE(evict_live_row(*g_evicting_slot));
    g_joins_to_evict.store(1);
    detail::set_pause_hook(&evict_the_joiner);
    auto interrupted = member.rebalance(mono_now_ns());
    detail::set_pause_hook(nullptr);
    CHECK(g_joins_to_evict.load() == 0);  // the hook ran inside the rejoin
    REQUIRE_FALSE(interrupted.ok());
    CHECK_MESSAGE(interrupted.code() == Errc::stale_epoch, interrupted.error().message);
    CHECK_FALSE(member.owns(0));

    // Resumed: the next rebalance joins afresh (not "already joined").
    check_rejoins_and_leaves(member, f.tp.pool, "rj", f.first_epoch, kParts);
    g_evicting_slot = nullptr;
}

namespace {

/// The group slot whose lock the pause hook hands to a paused process, that process's token,
/// and how many joins it does it in.
mq::GroupSlot* g_locking_slot = nullptr;
uint32_t g_lock_holder = 0;
std::atomic<int> g_joins_to_lock{0};

/// At "group.join.joined" (the joiner holds its row, before its first claim): a live process,
/// paused as far as anyone can tell, takes the group's lock, so the claim's fences are busy.
void lock_after_the_join(const char* name) {
    if (std::string(name) != "group.join.joined" || g_joins_to_lock.load() == 0) return;
    g_joins_to_lock.fetch_sub(1);
    g_locking_slot->lock.store(g_lock_holder);
}

}  // namespace

// The rejoin takes its row, then its first claim waits for the group's lock to raise its
// fences and is refused as busy. The member must not stay behind in the group handle: the
// next rebalance's join found it "already joined" and ended the worker.
TEST_CASE("worker membership: a rejoin whose first claim is refused as busy by a paused lock holder joins afresh on the next rebalance") {
    constexpr uint32_t kParts = 2;
    JoinedMember f("stall-rejoin-claim", kParts);
    worker::Membership& member = *f.member;
    const std::string name = f.tp.name();
    g_locking_slot = live_group_slot(f.tp.pool, "rj");
    REQUIRE(g_locking_slot != nullptr);
    REQUIRE(evict_live_row(*g_locking_slot));

    const PausedProcess holder(name);
    g_lock_holder = holder.token;

    // Evicted: the claim is stale; the rejoin takes a row, then its claim is busy (2 s).
    g_joins_to_lock.store(1);
    detail::set_pause_hook(&lock_after_the_join);
    auto delayed = member.rebalance(mono_now_ns());
    detail::set_pause_hook(nullptr);
    CHECK(g_joins_to_lock.load() == 0);  // the hook ran inside the rejoin
    REQUIRE_FALSE(delayed.ok());
    CHECK_MESSAGE(delayed.code() == Errc::busy, delayed.error().message);
    CHECK_FALSE(member.owns(0));

    g_locking_slot->lock.store(0);  // the holder "resumes" and releases
    check_rejoins_and_leaves(member, f.tp.pool, "rj", f.first_epoch, kParts);
    g_locking_slot = nullptr;
}

namespace {

/// A worker paused inside a join (`join` 1: the open's, 2: the rejoin after an eviction) and
/// evicted there, as when it stays paused past the session timeout, joins again and processes
/// what follows: it neither exits nor loses anything.
void check_worker_evicted_inside_join(int join) {
    TestPool tp("stall-join-worker", 32ull << 20);
    const std::string name = tp.cleanup.name();
    const auto store = topic_with_group_and_store(tp, "rw");
    auto producer = Producer::open(tp.pool, "rw");
    REQUIRE(producer.ok());
    mq::GroupSlot* slot = live_group_slot(tp.pool, "rw");
    REQUIRE(slot != nullptr);

    WorkerConfig cfg = worker_config("rw", "w");
    cfg.exit_when_idle_ns = 1'500'000'000ull;
    const pid_t w = worker_child(name, cfg, copy, "group.join.joined:" + std::to_string(join));
    if (join == 2) {  // joined at open; evicted, it joins again at its next heartbeat
        REQUIRE(eventually([&] {
            auto d = describe_consumer_group(tp.pool, "rw", "g");
            return d.ok() && d->members.size() == 1 && d->partitions[0].member_slot >= 0 && !d->result_bucket.empty();
        }));
        REQUIRE(evict_live_row(*slot));
    }
    REQUIRE(test::wait_stopped(w));  // paused inside the join, holding its new row
    REQUIRE(evict_live_row(*slot));  // silent past the session timeout: evicted there
    test::resume(w);

    std::vector<std::pair<std::string, uint64_t>> sent;
    for (int i = 0; i < 3; ++i) {
        const std::string k = "k" + std::to_string(i);
        sent.emplace_back(k, upload(tp.pool, **store, *producer, k, "data " + k));
    }
    CHECK(test::wait_child(w, 20000) == 0);  // not ended by the eviction inside its join
    CHECK(committed(tp.pool, "rw", 0) == 3);
    check_nothing_passed(tp.pool, **store, "rw", sent);
    for (const auto& [k, version] : sent) CHECK(get_text_of(**store, result_uri(name, k)) == "data " + k);
}

}  // namespace

TEST_CASE("worker: evicted while paused inside its first join, it joins again and processes what follows") {
    check_worker_evicted_inside_join(1);
}

TEST_CASE("worker: evicted while paused inside its rejoin, it joins again and processes what follows") {
    check_worker_evicted_inside_join(2);
}

// ---- Registration while a producer waits for space (the registration handshake) -----------
// A group registered `earliest` reads the partition's head as its start; a blocked producer
// reads the group table, then raises the head and overwrites below it. Both sides write, then
// re-read the other's word (seq_cst): either the producer finds the group and waits for it, or
// the registrant finds the raise and starts past it (settle_group_starts, topic.cpp).

namespace {

/// A 4-slot block-mode topic "t", full, and group "a" has read and committed all four offsets.
/// The producer opened before that commit (its head floor is 0): its next send waits for
/// space, reads the group table (only "a", committed 4) and raises the head to 4.
struct FullRingReadByA {
    TestPool tp;
    TopicManager mgr;
    std::optional<Producer> producer;
    explicit FullRingReadByA(const char* name) : tp(name), mgr(tp.pool) {
        REQUIRE(mgr.create("t", config(1, 4, OnFull::block)).ok());
        auto a = Consumer::open(tp.pool, "t", "a");
        REQUIRE(a.ok());
        REQUIRE(a->assign_all().ok());
        auto p = Producer::open(tp.pool, "t");
        REQUIRE(p.ok());
        producer.emplace(std::move(*p));
        for (int i = 0; i < 4; ++i) REQUIRE(producer->send("m" + std::to_string(i)).ok());
        MessageBatch b;
        size_t got = 0;
        for (int round = 0; got < 4 && round < 100; ++round) {
            auto n = a->poll(b, 4, std::chrono::milliseconds(100));
            REQUIRE(n.ok());
            got += *n;
        }
        REQUIRE(got == 4);
        REQUIRE(a->commit().ok());
        REQUIRE(partition_header(tp.pool, "t", 0)->head.load() == 0);  // nobody raised it yet
    }
    /// Group g's committed offset of partition 0 as the table holds it.
    uint64_t committed(const std::string& g) {
        auto d = mgr.describe("t");
        REQUIRE(d.ok());
        for (const GroupDescription& gd : d->groups)
            if (gd.name == g) return gd.partitions[0].committed;
        FAIL("group " << g << " is not registered");
        return 0;
    }
};

/// What consumer c delivers until it holds `want` offsets (at most ~2 s): offsets and lost.
struct Received {
    std::vector<uint64_t> offsets;
    uint64_t lost = 0;
};
void receive(Consumer& c, size_t want, Received& r) {
    MessageBatch b;
    for (int round = 0; r.offsets.size() < want && round < 20; ++round) {
        auto n = c.poll(b, 8, std::chrono::milliseconds(100));
        CHECK(n.ok());
        if (!n) return;
        r.lost += b.lost();
        for (const Message& m : b) r.offsets.push_back(m.offset);
    }
}

}  // namespace

/// Group "b", registered while the producer raised the head past the 4 messages "a" read,
/// starts at the raised head (4): it reads the fifth message, nothing lost, nothing before.
void check_starts_at_the_raised_head(FullRingReadByA& f, std::optional<Consumer>& b) {
    REQUIRE(b.has_value());
    CHECK(f.committed("b") == 4);
    REQUIRE(b->assign_all().ok());
    Received got;
    receive(*b, 1, got);
    CHECK(got.offsets == std::vector<uint64_t>{4});
    CHECK(got.lost == 0);
}

TEST_CASE("registration handshake: a group registered earliest between a blocked producer's read of the group table "
          "and its head raise keeps every message from its start: the producer waits for it, and its consumer reads "
          "from the committed offset, not from the raised head") {
    FullRingReadByA f("regraise");
    Result<SendResult> fifth = make_error(Errc::ok, "");
    std::thread producer([&] {
        PauseGate::arm("mq.send.before_raise_head", std::this_thread::get_id());
        fifth = f.producer->send("m4");
    });
    REQUIRE(PauseGate::wait_arrived("mq.send.before_raise_head"));
    // The producer found only "a" (committed 4). "b" registers now: it reads the head (0) as
    // its start, publishes, and re-reads the head (still 0): all before the raise.
    auto b = Consumer::open(f.tp.pool, "t", "b");
    REQUIRE(b.ok());
    CHECK(f.committed("b") == 0);
    PauseGate::release("mq.send.before_raise_head");
    // The producer raises the head to 4, re-reads the table and finds "b" at 0: it must wait.
    auto* ph = partition_header(f.tp.pool, "t", 0);
    CHECK(eventually([&] { return ph->head.load() == 4; }));
    // b's consumer starts after the raise: from its committed offset 0, which is still there.
    REQUIRE(b->assign_all().ok());
    Received got;
    receive(*b, 4, got);
    CHECK(got.offsets == std::vector<uint64_t>{0, 1, 2, 3});
    CHECK(got.lost == 0);
    // b's commit frees the ring: the producer sends.
    CHECK(b->commit().ok());
    producer.join();
    PauseGate::reset();
    REQUIRE(fifth.ok());
    CHECK(fifth->offset == 4);
    receive(*b, 5, got);
    CHECK(got.offsets == std::vector<uint64_t>{0, 1, 2, 3, 4});
    CHECK(got.lost == 0);
}

TEST_CASE("registration handshake: a group registered earliest while a blocked producer overwrites starts at what "
          "is still retained, losing nothing silently") {
    FullRingReadByA f("regbefore");
    std::optional<Consumer> b;
    std::thread registrar([&] {
        PauseGate::arm("group.register.before_publish", std::this_thread::get_id());
        auto c = Consumer::open(f.tp.pool, "t", "b");
        if (c) b.emplace(std::move(*c));
    });
    // "b" read the head (0) as its start; it is not in the group table yet.
    REQUIRE(PauseGate::wait_arrived("group.register.before_publish"));
    // The producer finds only "a" (committed 4), raises the head to 4 and overwrites offset 0.
    auto fifth = f.producer->send("m4");
    CHECK(fifth.ok());
    PauseGate::release("group.register.before_publish");
    registrar.join();
    PauseGate::reset();
    // b's registration re-read the head after publishing: it starts at 4, the earliest
    // message still retained, not at 0 (which it could no longer read).
    check_starts_at_the_raised_head(f, b);
}

TEST_CASE("registration handshake: when a registrant and a blocked producer each see the other's write, the "
          "registrant moves its start to the raised head and its wake ends the producer's wait") {
    FullRingReadByA f("regboth");
    Result<SendResult> fifth = make_error(Errc::ok, "");
    std::atomic<pid_t> producer_tid{0};
    std::thread producer([&] {
        producer_tid = this_tid();
        PauseGate::arm("mq.send.before_raise_head", std::this_thread::get_id());
        fifth = f.producer->send("m4");
    });
    REQUIRE(PauseGate::wait_arrived("mq.send.before_raise_head"));
    // The producer found only "a" (committed 4). "b" publishes itself at start 0 and stops
    // before it re-reads the head.
    std::optional<Consumer> b;
    std::thread registrar([&] {
        PauseGate::arm("group.register.after_publish", std::this_thread::get_id());
        auto c = Consumer::open(f.tp.pool, "t", "b");
        if (c) b.emplace(std::move(*c));
    });
    REQUIRE(PauseGate::wait_arrived("group.register.after_publish"));
    // The producer raises the head to 4, finds "b" at 0 in its re-read, and parks.
    PauseGate::release("mq.send.before_raise_head");
    CHECK(wait_in_futex(getpid(), producer_tid.load()));
    CHECK(partition_header(f.tp.pool, "t", 0)->head.load() == 4);
    // b re-reads the head (4): it starts there, and wakes the producer.
    PauseGate::release("group.register.after_publish");
    registrar.join();
    producer.join();
    PauseGate::reset();
    REQUIRE(fifth.ok());
    CHECK(fifth->offset == 4);
    check_starts_at_the_raised_head(f, b);
}

// ---- waits for a group lock held by a stopped process --------------------------------------------

namespace {
/// A process, forked, that commits partition 0 of `topic` for group "g" at the partition's
/// current fence and is stopped holding the group's lock (group.commit.locked). Killed by the
/// caller; a killed holder's lock is taken over.
pid_t stop_holding_group_lock(const Pool& pool, const std::string& topic) {
    auto d = describe_consumer_group(pool, topic, "g");
    REQUIRE_MESSAGE(d.ok(), d.error().message);
    const uint64_t fence = d->partitions.at(0).commit_epoch;
    const uint64_t offset = d->partitions.at(0).committed;
    const std::string pool_name = pool.name();
    const pid_t holder = test::fork_child([=] {
        auto p = Pool::open(pool_name);
        if (!p) return 10;
        ConsumerOptions co;
        co.epoch = fence;
        auto c = Consumer::open(*p, topic, "g", co);
        if (!c) return 11;
        const uint32_t first[] = {0};
        if (!c->assign(first).ok()) return 13;
        ::setenv("FABRIC_SHM_PAUSE_POINT", "group.commit.locked", 1);
        detail::crash_point_rearm();
        return c->commit(0, offset).ok() ? 0 : 12;
    });
    REQUIRE(test::wait_stopped(holder));
    return holder;
}
}  // namespace

TEST_CASE("group lock: a commit waits for a lock a stopped process holds at most its lock_wait, then says busy") {
    TestPool tp("stall-lockwait");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("lw", config(1, 16)).ok());
    REQUIRE(mgr.register_group("lw", "g").ok());
    const pid_t holder = stop_holding_group_lock(tp.pool, "lw");
    ConsumerOptions co;
    co.lock_wait = std::chrono::milliseconds(50);
    auto c = Consumer::open(tp.pool, "lw", "g", co);
    REQUIRE(c.ok());
    const uint64_t start = mono_now_ns();
    const Status st = c->commit(0, 0);
    const uint64_t took_ms = (mono_now_ns() - start) / kNsPerMs;
    ::kill(holder, SIGKILL);
    test::wait_child(holder);
    REQUIRE_FALSE(st.ok());
    CHECK(st.code() == Errc::busy);
    CHECK_MESSAGE(took_ms < 1000, "the commit waited ", took_ms, " ms (the fixed wait was 2 s)");
}

TEST_CASE("worker: commits that wait for a group lock a stopped process holds keep the member's heartbeat within "
          "its session") {
    TestPool tp("stall-lockhb", 32ull << 20);
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("lh", config(1, 256)).ok());
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    auto producer = Producer::open(tp.pool, "lh");
    REQUIRE(producer.ok());
    WorkerConfig cfg = worker_config("lh", "a");
    cfg.session_timeout_ns = 400'000'000;  // a lock wait of 100 ms
    auto loop = WorkerLoop::open(tp.pool, cfg);
    REQUIRE(loop.ok());
    const pid_t holder = stop_holding_group_lock(tp.pool, "lh");

    HeartbeatWatch watch(tp.pool, "lh", "g", "a");
    // Work flows; every commit finds the lock held.
    const uint64_t end = mono_now_ns() + 1'200 * kNsPerMs;
    int sent = 0;
    while (mono_now_ns() < end) {
        if (sent < 200) upload(tp.pool, **store, *producer, "k" + std::to_string(sent++), "data");
        std::vector<WorkTicket> tickets(8);
        auto n = loop->acquire(std::span(tickets), std::chrono::milliseconds(10));
        REQUIRE(n.ok());
        for (size_t i = 0; i < *n; ++i) REQUIRE(loop->complete(std::move(tickets[i]), tickets[i].item().data).ok());
    }
    watch.stop();
    ::kill(holder, SIGKILL);
    test::wait_child(holder);
    CHECK(loop->stats().processed > 0);
    CHECK_MESSAGE(watch.max_age_ns() < cfg.session_timeout_ns,
                  "heartbeat age reached ", watch.max_age_ns() / kNsPerMs, " ms: silent past the session");
    REQUIRE(loop->close().ok());
}

// ---- opens, other groups and short waits around a held group lock ----------------------------------

namespace {
pid_t g_hook_holder = 0;
const Pool* g_hook_pool = nullptr;
std::string g_hook_topic;
void stop_holder_before_fence(const char* name) {
    if (std::string_view(name) != "group.claim.before_fence" || g_hook_holder != 0) return;
    // Our join published its row and left the membership lock; another process now takes the
    // group's lock and pauses inside it, before our claim raises its fences.
    g_hook_holder = stop_holding_group_lock(*g_hook_pool, g_hook_topic);
}
}  // namespace

TEST_CASE("worker: an open whose join finds the group lock held by a process paused for less than the "
          "session waits and opens") {
    TestPool tp("stall-openbusy", 32ull << 20);
    const auto store = topic_with_group_and_store(tp, "ob");
    const pid_t holder = stop_holding_group_lock(tp.pool, "ob");
    // The holder pauses 300 ms: less than the worker's session (400 ms), within the torture's
    // holds (a quarter of the session to twice it).
    std::thread resume([holder] {
        sleep_ms(300);
        ::kill(holder, SIGCONT);
    });
    WorkerConfig cfg = worker_config("ob", "w");
    cfg.session_timeout_ns = 400'000'000;
    const uint64_t start = mono_now_ns();
    auto loop = WorkerLoop::open(tp.pool, cfg);
    const uint64_t took_ms = (mono_now_ns() - start) / kNsPerMs;
    resume.join();
    const int rc = test::wait_child(holder);
    CHECK(rc == 0);
    CHECK_MESSAGE(loop.ok(), "WorkerLoop::open failed after ", took_ms,
                  " ms: ", (loop.ok() ? std::string() : loop.error().message));
    if (loop.ok()) REQUIRE(loop->close().ok());
}

namespace {
/// A process that reaps the pool every 50 ms for 2 s (fabric-shm-reaper, or an open with
/// reap_on_open): it fences a registration whose declared heartbeat timeout ran out.
pid_t reap_all_along(const std::string& pool_name) {
    return test::fork_child([pool_name] {
        auto p = Pool::open(pool_name);
        if (!p) return 20;
        for (int i = 0; i < 40; ++i) {
            (void)p->reap();
            sleep_ms(50);
        }
        return 0;
    });
}
}  // namespace

TEST_CASE("worker: an open that waits for a group lock a paused peer holds keeps heartbeating: a declared heartbeat "
          "timeout does not fence it") {
    TestPool tp("stall-openhb", 32ull << 20);
    const auto store = topic_with_group_and_store(tp, "oh");
    // The worker's own registration declares a heartbeat timeout (as in a container).
    OpenOptions declared;
    declared.heartbeat_timeout = std::chrono::milliseconds(600);
    auto worker_pool = Pool::open(tp.pool.name(), declared);
    REQUIRE(worker_pool.ok());
    const pid_t holder = stop_holding_group_lock(tp.pool, "oh");
    const pid_t reaper = reap_all_along(tp.pool.name());
    std::thread resume([holder] {
        sleep_ms(1200);  // twice the heartbeat timeout
        ::kill(holder, SIGCONT);
    });
    WorkerConfig cfg = worker_config("oh", "w");
    cfg.session_timeout_ns = 1'000'000'000;  // each try waits 250 ms for the lock
    auto loop = WorkerLoop::open(*worker_pool, cfg);
    resume.join();
    CHECK(test::wait_child(holder) == 0);
    CHECK(test::wait_child(reaper) == 0);
    CHECK_MESSAGE(loop.ok(), (loop.ok() ? std::string() : loop.error().message));
    if (loop.ok()) REQUIRE(loop->close().ok());
}

TEST_CASE("worker: an open that waits for a group lock a paused peer holds ends when asked to stop, joining nothing") {
    TestPool tp("stall-openstop", 32ull << 20);
    const auto store = topic_with_group_and_store(tp, "os");
    const pid_t holder = stop_holding_group_lock(tp.pool, "os");
    std::atomic<bool> stop{false};
    std::thread ask([&stop] {
        sleep_ms(100);
        stop.store(true);
    });
    WorkerConfig cfg = worker_config("os", "w");
    cfg.session_timeout_ns = 400'000'000;  // each try waits 100 ms for the lock; the tries 10 s in all
    cfg.open_should_stop = [&stop] { return stop.load(); };
    const uint64_t start = mono_now_ns();
    auto loop = WorkerLoop::open(tp.pool, cfg);
    const uint64_t took_ms = (mono_now_ns() - start) / kNsPerMs;
    ask.join();
    auto d = describe_consumer_group(tp.pool, "os", "g");
    ::kill(holder, SIGCONT);
    CHECK(test::wait_child(holder) == 0);
    REQUIRE_FALSE(loop.ok());
    CHECK(loop.code() == Errc::interrupted);
    CHECK(loop.error().message.find("is held by live process") != std::string::npos);
    CHECK_MESSAGE(took_ms < 1000, "open took ", took_ms, " ms after a stop asked at 100 ms");
    REQUIRE(d.ok());
    CHECK(d->members.empty());
}

namespace {
/// Topic `topic` with group "g" and the pool's store, and k0..k2 uploaded and notified: a
/// backlog of three that a worker must read before it may call itself idle.
Result<std::unique_ptr<MemObjectStore>> three_objects_waiting(TestPool& tp, const std::string& topic) {
    auto store = topic_with_group_and_store(tp, topic);
    auto producer = Producer::open(tp.pool, topic);
    REQUIRE(producer.ok());
    for (int i = 0; i < 3; ++i) upload(tp.pool, **store, *producer, "k" + std::to_string(i), "data");
    return store;
}

/// Runs `loop` until it says idle, which it may say only once it processed the three.
void runs_to_idle_after_the_three(WorkerLoop& loop) {
    auto exit = loop.run([] { return false; });
    REQUIRE_MESSAGE(exit.ok(), (exit.ok() ? std::string() : exit.error().message));
    CHECK(*exit == WorkerExit::idle);
    CHECK(loop.stats().processed == 3);
}
}  // namespace

TEST_CASE("worker: an open whose join waited longer than exit_when_idle for a paused peer's lock still reads what "
          "is waiting before it calls itself idle") {
    TestPool tp("stall-openidle", 32ull << 20);
    const auto store = three_objects_waiting(tp, "oi");
    const pid_t holder = stop_holding_group_lock(tp.pool, "oi");
    std::thread resume([holder] {
        sleep_ms(1000);  // twice the idle time
        ::kill(holder, SIGCONT);
    });
    WorkerConfig cfg = worker_config("oi", "w");
    cfg.session_timeout_ns = 1'000'000'000;  // each try waits 250 ms for the lock
    cfg.exit_when_idle_ns = 500'000'000;
    auto loop = WorkerLoop::open(tp.pool, cfg, copy);
    resume.join();
    CHECK(test::wait_child(holder) == 0);
    REQUIRE_MESSAGE(loop.ok(), (loop.ok() ? std::string() : loop.error().message));
    runs_to_idle_after_the_three(*loop);
}

TEST_CASE("worker: a run started a while after its open still reads what is waiting before it calls itself idle") {
    TestPool tp("stall-lateidle", 32ull << 20);
    const auto store = three_objects_waiting(tp, "li");
    WorkerConfig cfg = worker_config("li", "w");
    cfg.exit_when_idle_ns = 200'000'000;
    auto loop = WorkerLoop::open(tp.pool, cfg, copy);
    REQUIRE_MESSAGE(loop.ok(), (loop.ok() ? std::string() : loop.error().message));
    sleep_ms(300);  // the caller's own set-up, longer than the idle time
    runs_to_idle_after_the_three(*loop);
}

TEST_CASE("fabric-shm-worker: SIGTERM while its join waits for a group lock a paused peer holds exits at once (130)") {
    TestPool tp("stall-openterm", 32ull << 20);
    const auto store = topic_with_group_and_store(tp, "ot");
    const pid_t holder = stop_holding_group_lock(tp.pool, "ot");
    const pid_t worker = test::spawn_program({test::build_path("workers/fabric-shm-worker"), "--pool", tp.pool.name(),
                                              "--topic", "ot", "--group", "g", "--builtin", "copy",
                                              "--session-timeout", "1s"},
                                             "/dev/null");
    REQUIRE(worker > 0);
    // Registered: its signal handlers are installed (before it opens the pool).
    auto registered = [&] {
        for (const ProcessInfo& p : tp.pool.registry().list())
            if (pid_t(p.pid) == worker) return true;
        return false;
    };
    const uint64_t wait_start = mono_now_ns();
    while (!registered() && mono_now_ns() - wait_start < 10 * kNsPerSec) sleep_ms(5);
    REQUIRE(registered());
    const uint64_t start = mono_now_ns();
    ::kill(worker, SIGTERM);
    const int rc = test::wait_child(worker);
    const uint64_t took_ms = (mono_now_ns() - start) / kNsPerMs;
    ::kill(holder, SIGCONT);
    CHECK(test::wait_child(holder) == 0);
    CHECK(rc == 130);
    // One try's wait for the lock (a quarter of the session) and the worker's start, not the
    // 10 s of tries.
    CHECK_MESSAGE(took_ms < 3000, "the worker exited ", took_ms, " ms after SIGTERM");
    auto d = describe_consumer_group(tp.pool, "ot", "g");
    REQUIRE(d.ok());
    CHECK(d->members.empty());
}

TEST_CASE("group lock: a commit that waits for a lock a paused peer holds keeps its process's heartbeat: a declared "
          "heartbeat timeout shorter than the wait does not fence it") {
    TestPool tp("stall-lockhb", 32ull << 20);
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("lh", config(1, 64)).ok());
    REQUIRE(mgr.register_group("lh", "g").ok());
    const pid_t holder = stop_holding_group_lock(tp.pool, "lh");
    // The committer's registration declares a heartbeat timeout (as in a container) well
    // under its lock wait (2 s: no session bounds a plain consumer's).
    OpenOptions declared;
    declared.heartbeat_timeout = std::chrono::milliseconds(500);
    auto committer_pool = Pool::open(tp.pool.name(), declared);
    REQUIRE(committer_pool.ok());
    auto c = Consumer::open(*committer_pool, "lh", "g");
    REQUIRE(c.ok());
    const pid_t reaper = reap_all_along(tp.pool.name());
    std::thread resume([holder] {
        sleep_ms(1500);  // three heartbeat timeouts, within the reaper's 2 s
        ::kill(holder, SIGCONT);
    });
    REQUIRE(committer_pool->heartbeat().ok());  // alive when its wait starts
    const Status committed_st = c->commit(0, 0);
    const Status alive = committer_pool->heartbeat();  // before this thread waits for the children
    resume.join();
    CHECK(test::wait_child(holder) == 0);
    ::kill(reaper, SIGKILL);
    test::wait_child(reaper);
    CHECK_MESSAGE(committed_st.ok(), (committed_st.ok() ? std::string() : committed_st.error().message));
    CHECK_MESSAGE(alive.ok(), "the committer was fenced while it waited: ",
                  (alive.ok() ? std::string() : alive.error().message));
}

TEST_CASE("group consumer: an open whose first claim's fence is refused as busy leaves no live member behind") {
    TestPool tp("stall-gcghost", 32ull << 20);
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("gh", config(1, 64)).ok());
    REQUIRE(mgr.register_group("gh", "g").ok());
    g_hook_pool = &tp.pool;
    g_hook_topic = "gh";
    g_hook_holder = 0;
    detail::set_pause_hook(stop_holder_before_fence);
    GroupConsumerOptions o;
    o.group.session_timeout = std::chrono::milliseconds(2000);  // a lock wait of 500 ms
    auto gc = GroupConsumer::open(tp.pool, "gh", "g", "c", o);
    detail::set_pause_hook(nullptr);
    REQUIRE(g_hook_holder != 0);
    ::kill(g_hook_holder, SIGCONT);
    CHECK(test::wait_child(g_hook_holder) == 0);
    REQUIRE_FALSE(gc.ok());
    CHECK(gc.code() == Errc::busy);
    // The caller got no handle, so it cannot leave; it opens again (the holder is gone now).
    auto again = GroupConsumer::open(tp.pool, "gh", "g", "c", o);
    CHECK_MESSAGE(again.ok(), "the retried open failed: ", (again.ok() ? std::string() : again.error().message));
    auto d = describe_consumer_group(tp.pool, "gh", "g");
    REQUIRE(d.ok());
    CHECK(d->members.size() == (again.ok() ? 1u : 0u));
}

namespace {
/// Member "c" of group "g" on a new topic `topic` of one partition, with `session`.
GroupConsumer consumer_on_new_topic(TestPool& tp, const std::string& topic, Duration session) {
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create(topic, config(1, 64)).ok());
    REQUIRE(mgr.register_group(topic, "g").ok());
    GroupConsumerOptions o;
    o.group.session_timeout = session;
    auto gc = GroupConsumer::open(tp.pool, topic, "g", "c", o);
    REQUIRE_MESSAGE(gc.ok(), (gc.ok() ? std::string() : gc.error().message));
    return std::move(gc.value());
}

/// The handle's member polls (its claim joins or raises its fence), owns the partition, and
/// leave() ends it: no member row is left.
void check_owns_then_leaves(GroupConsumer& gc, const Pool& pool, const std::string& topic) {
    MessageBatch batch;
    auto polled = gc.poll(batch, 1, Duration::zero());
    REQUIRE_MESSAGE(polled.ok(), (polled.ok() ? std::string() : polled.error().message));
    CHECK(gc.partitions() == std::vector<uint32_t>{0});
    REQUIRE(gc.leave().ok());
    auto d = describe_consumer_group(pool, topic, "g");
    REQUIRE(d.ok());
    CHECK_MESSAGE(d->members.empty(), "the member outlived leave()");
}
}  // namespace

TEST_CASE("group consumer: a rejoin whose first claim's fence is refused as busy keeps its member: it heartbeats, "
          "its next poll owns the partition, and leave ends it") {
    TestPool tp("stall-gcrejoin", 32ull << 20);
    GroupConsumer gc = consumer_on_new_topic(tp, "gr", std::chrono::milliseconds(2000));  // lock wait 500 ms
    REQUIRE(gc.leave().ok());
    g_hook_pool = &tp.pool;
    g_hook_topic = "gr";
    g_hook_holder = 0;
    detail::set_pause_hook(stop_holder_before_fence);
    const Status rejoined = gc.rejoin();
    detail::set_pause_hook(nullptr);
    REQUIRE(g_hook_holder != 0);
    ::kill(g_hook_holder, SIGCONT);
    CHECK(test::wait_child(g_hook_holder) == 0);
    REQUIRE_FALSE(rejoined.ok());
    CHECK(rejoined.code() == Errc::busy);
    // Still this handle's member (as an exporter that rejoins after an eviction relies on).
    const Status beat = gc.heartbeat();
    CHECK_MESSAGE(beat.ok(), (beat.ok() ? std::string() : beat.error().message));
    // Its claim raises the fence now; leave() ends the member the failed rejoin kept.
    check_owns_then_leaves(gc, tp.pool, "gr");
}

TEST_CASE("group consumer: evicted inside its own rejoin, it rejoins afresh next time, owns the partition, and leave "
          "ends it") {
    TestPool tp("stall-gcevict", 32ull << 20);
    GroupConsumer gc = consumer_on_new_topic(tp, "ge", std::chrono::seconds(10));
    g_evicting_slot = live_group_slot(tp.pool, "ge");
    REQUIRE(g_evicting_slot != nullptr);
    REQUIRE(evict_live_row(*g_evicting_slot));  // evicted while working
    g_joins_to_evict.store(1);                   // and once more inside the rejoin
    detail::set_pause_hook(&evict_the_joiner);
    const Status interrupted = gc.rejoin();
    detail::set_pause_hook(nullptr);
    g_evicting_slot = nullptr;
    CHECK(g_joins_to_evict.load() == 0);
    REQUIRE_FALSE(interrupted.ok());
    CHECK(interrupted.code() == Errc::stale_epoch);
    const Status again = gc.rejoin();  // not "already joined through this handle"
    CHECK_MESSAGE(again.ok(), (again.ok() ? std::string() : again.error().message));
    check_owns_then_leaves(gc, tp.pool, "ge");
}

TEST_CASE("group consumer: a rejoin refused as busy before it took a row: the next poll joins, and leave ends that "
          "member") {
    TestPool tp("stall-gcbusyrow", 32ull << 20);
    GroupConsumer gc = consumer_on_new_topic(tp, "gb", std::chrono::milliseconds(400));  // lock wait 100 ms
    mq::GroupSlot* slot = live_group_slot(tp.pool, "gb");
    REQUIRE(slot != nullptr);
    const PausedProcess holder(tp.name());
    slot->lock.store(holder.token);  // a live process, paused as far as anyone can tell
    const Status refused = gc.rejoin();
    CHECK(refused.code() == Errc::busy);
    slot->lock.store(0);  // it "resumes" and releases
    check_owns_then_leaves(gc, tp.pool, "gb");  // the poll's claim joins quietly; leave() ends that member
}

TEST_CASE("group lock: a commit whose own group lock is free does not wait for another thread's wait on another group's "
          "lock") {
    TestPool tp("stall-locallock", 32ull << 20);
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t1", config(1, 16)).ok());
    REQUIRE(mgr.create("t2", config(1, 16)).ok());
    REQUIRE(mgr.register_group("t1", "g").ok());
    REQUIRE(mgr.register_group("t2", "g").ok());
    const pid_t holder = stop_holding_group_lock(tp.pool, "t1");  // holds t1's group "g" lock, stopped
    ConsumerOptions slow;
    slow.lock_wait = std::chrono::milliseconds(1000);  // e.g. a member with a 4 s session
    auto c1 = Consumer::open(tp.pool, "t1", "g", slow);
    REQUIRE(c1.ok());
    ConsumerOptions fast;
    fast.lock_wait = std::chrono::milliseconds(50);  // a member with a 200 ms session
    auto c2 = Consumer::open(tp.pool, "t2", "g", fast);
    REQUIRE(c2.ok());
    std::atomic<bool> started{false};
    Status st1;
    std::thread t([&] {
        started = true;
        st1 = c1->commit(0, 0);  // waits its 1 s for the stopped holder
    });
    while (!started) std::this_thread::yield();
    sleep_ms(20);
    const uint64_t start = mono_now_ns();
    const Status st2 = c2->commit(0, 0);  // its own group's lock is free
    const uint64_t took_ms = (mono_now_ns() - start) / kNsPerMs;
    t.join();
    ::kill(holder, SIGKILL);
    test::wait_child(holder);
    CHECK(st1.code() == Errc::busy);
    CHECK(st2.ok());
    CHECK_MESSAGE(took_ms < 50, "a commit to a free lock waited ", took_ms, " ms (its lock_wait is 50 ms)");
}

TEST_CASE("group lock: a lock_wait shorter than the probe period still takes over the lock of a killed holder") {
    TestPool tp("stall-shortwait", 32ull << 20);
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("sw", config(1, 16)).ok());
    REQUIRE(mgr.register_group("sw", "g").ok());
    const pid_t holder = stop_holding_group_lock(tp.pool, "sw");
    ::kill(holder, SIGKILL);
    test::wait_child(holder);  // gone: certainly dead by pid
    ConsumerOptions co;
    co.lock_wait = std::chrono::milliseconds(1);  // group_lock_wait_for_session's floor
    auto c = Consumer::open(tp.pool, "sw", "g", co);
    REQUIRE(c.ok());
    int busy = 0;
    for (int i = 0; i < 20; ++i) {
        const Status st = c->commit(0, 0);
        if (st) break;
        CHECK(st.code() == Errc::busy);
        ++busy;
    }
    CHECK_MESSAGE(busy == 0, busy, " commits in a row found the dead holder's lock busy");
}

// ---- a freed group slot registered again ------------------------------------------------------

namespace {
/// Topic "t" (one partition, block mode) holding offsets 0..9, its group "g" registered at 0,
/// and a member of "g" in a child process stopped inside its commit of offset 10: under the
/// group's lock, after its registration and fence checks, before its stores
/// (group.commit.locked). Then "g" is removed, as `fabric-shm group rm` does.
struct CommitterStoppedInRemovedGroup {
    TestPool tp;
    TopicManager mgr{tp.pool};
    pid_t committer = -1;
    explicit CommitterStoppedInRemovedGroup(const std::string& name) : tp(name) {
        REQUIRE(mgr.create("t", config(1, 16)).ok());
        REQUIRE(Consumer::open(tp.pool, "t", "g").ok());  // registers g, committed 0
        auto producer = Producer::open(tp.pool, "t");
        REQUIRE(producer.ok());
        for (int i = 0; i < 10; ++i) REQUIRE(producer->send("m" + std::to_string(i)).ok());
        const std::string pool_name = tp.pool.name();
        committer = test::fork_child([pool_name] {
            auto p = Pool::open(pool_name);
            if (!p) return 10;
            auto c = Consumer::open(*p, "t", "g");
            if (!c) return 11;
            ::setenv("FABRIC_SHM_PAUSE_POINT", "group.commit.locked", 1);
            detail::crash_point_rearm();
            return c->commit(0, 10).ok() ? 0 : 12;
        });
        REQUIRE(test::wait_stopped(committer));
        REQUIRE(mgr.remove_group("t", "g").ok());
    }
};
}  // namespace

TEST_CASE("group slots: a commit stopped under the lock of a removed group never lands in the group that "
          "registers next; that group reads every message from its start") {
    CommitterStoppedInRemovedGroup f("stall-slotreuse");
    // "h" registers while the old committer still holds the freed slot's lock.
    auto h = Consumer::open(f.tp.pool, "t", "h");
    REQUIRE_MESSAGE(h.ok(), h.error().message);
    test::resume(f.committer);
    CHECK(test::wait_child(f.committer) == 0);  // its commit went to the old registration
    auto d = describe_consumer_group(f.tp.pool, "t", "h");
    REQUIRE(d.ok());
    CHECK(d->partitions[0].committed == 0);
    CHECK(d->partitions[0].commit_epoch == 0);
    REQUIRE(h->assign_all().ok());
    Received got;
    receive(*h, 10, got);
    CHECK(got.offsets == std::vector<uint64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    CHECK(got.lost == 0);
}

TEST_CASE("group slots: a lock left by a killed committer of a removed group is taken over by the next registration") {
    CommitterStoppedInRemovedGroup f("stall-slotdead");
    ::kill(f.committer, SIGKILL);
    test::wait_child(f.committer);
    const uint64_t before = mono_now_ns();
    auto h = Consumer::open(f.tp.pool, "t", "h");
    REQUIRE_MESSAGE(h.ok(), h.error().message);
    // Taken over (the holder is certainly dead), not waited out: well under the wait for a live one.
    CHECK(mono_now_ns() - before < mq::kReusedSlotLockWaitNs);
    auto d = describe_consumer_group(f.tp.pool, "t", "h");
    REQUIRE(d.ok());
    CHECK(d->partitions[0].committed == 0);
}

TEST_CASE("group slots: a join stopped before it took the lock of a removed group adds no member to the group "
          "that registers next") {
    TestPool tp("stall-slotjoin");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 16)).ok());
    REQUIRE(mgr.register_group("t", "g").ok());
    const std::string pool_name = tp.pool.name();
    const pid_t joiner = test::fork_child([pool_name] {
        auto p = Pool::open(pool_name);
        if (!p) return 10;
        auto g = ConsumerGroup::open(*p, "t", "g", 1, GroupConfig{});
        if (!g) return 11;
        ::setenv("FABRIC_SHM_PAUSE_POINT", "group.join.before_lock", 1);
        detail::crash_point_rearm();
        auto joined = g->join("ghost");
        return joined ? 0 : joined.code() == Errc::not_found ? 1 : 12;
    });
    REQUIRE(test::wait_stopped(joiner));
    REQUIRE(mgr.remove_group("t", "g").ok());
    REQUIRE(mgr.register_group("t", "h").ok());  // the freed slot: its lock is free
    test::resume(joiner);
    CHECK(test::wait_child(joiner) == 1);  // refused: its group was deregistered
    auto d = describe_consumer_group(tp.pool, "t", "h");
    REQUIRE(d.ok());
    CHECK(d->members.empty());
}

TEST_CASE("group slots: a member stopped before it raised its fences raises none in the group that registers next") {
    TestPool tp("stall-slotfence");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    REQUIRE(mgr.register_group("t", "g").ok());
    const std::string pool_name = tp.pool.name();
    const pid_t member = test::fork_child([pool_name] {
        auto p = Pool::open(pool_name);
        if (!p) return 10;
        auto g = ConsumerGroup::open(*p, "t", "g", 2, GroupConfig{});
        if (!g) return 11;
        ::setenv("FABRIC_SHM_PAUSE_POINT", "group.claim.before_fence", 1);
        detail::crash_point_rearm();
        auto joined = g->join("m");  // claims both partitions, stops before fencing them
        return joined ? 0 : joined.code() == Errc::not_found ? 1 : 12;
    });
    REQUIRE(test::wait_stopped(member));
    REQUIRE(mgr.remove_group("t", "g").ok());
    REQUIRE(mgr.register_group("t", "h").ok());  // the freed slot
    test::resume(member);
    CHECK(test::wait_child(member) == 1);  // refused: its group was deregistered
    auto d = describe_consumer_group(tp.pool, "t", "h");
    REQUIRE(d.ok());
    for (const auto& part : d->partitions) CHECK(part.commit_epoch == 0);
}

// ---- a claim's owner-word CAS after a pause -----------------------------------------------

namespace {

ConsumerGroup* g_interloper = nullptr;  ///< the handle the pause hook joins and leaves through
std::atomic<int> g_interlopes{0};

/// At "group.claim.before_take" (the claimer drew its epoch and read the owner words, before its
/// CASes): another member joins, takes the free partition under a newer epoch and fences it,
/// then leaves cleanly, so the owner word is 0 again, as the paused claimer read it.
void join_take_and_leave(const char* name) {
    if (std::string(name) != "group.claim.before_take" || g_interlopes.load() == 0) return;
    g_interlopes.fetch_sub(1);  // before the join: its own claim passes this point too
    auto b = g_interloper->join("b");
    REQUIRE_MESSAGE(b.ok(), b.error().message);
    CHECK(b->partitions == std::vector<uint32_t>{1});
    REQUIRE(g_interloper->leave("b").ok());
}

}  // namespace

TEST_CASE("claim: a member paused before its owner-word CAS, resumed after another member took, fenced and released the partition, still gets a partition it can commit") {
    TestPool tp("stall-claim-aba");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    auto ga = ConsumerGroup::open(tp.pool, "t", "g", 2, session(10'000'000'000ull));
    auto gm = ConsumerGroup::open(tp.pool, "t", "g", 2, session(10'000'000'000ull));
    auto gb = ConsumerGroup::open(tp.pool, "t", "g", 2, session(10'000'000'000ull));
    REQUIRE((ga.ok() && gm.ok() && gb.ok()));
    auto a = ga->join("a");
    REQUIRE(a.ok());
    CHECK(a->partitions == std::vector<uint32_t>{0, 1});
    auto m = gm->join("m");  // its target is partition 1, still held by a
    REQUIRE(m.ok());
    CHECK(m->partitions.empty());
    a = ga->claim("a");  // a gives partition 1 up
    REQUIRE(a.ok());
    CHECK(a->partitions == std::vector<uint32_t>{0});

    g_interloper = &*gb;
    g_interlopes.store(1);
    detail::set_pause_hook(&join_take_and_leave);
    m = gm->claim("m");  // reads owner word 0, draws E_m, "pauses"; b takes 1 (E_b > E_m), leaves
    detail::set_pause_hook(nullptr);
    g_interloper = nullptr;
    CHECK(g_interlopes.load() == 0);
    REQUIRE_MESSAGE(m.ok(), m.error().message);

    auto producer = Producer::open(tp.pool, "t");
    REQUIRE(producer.ok());
    REQUIRE(producer->send_to(1, OutgoingMessage{bytes("v"), {}, {}}).ok());
    ConsumerOptions co;
    auto consumer = Consumer::open(tp.pool, "t", "g", co);
    REQUIRE(consumer.ok());
    // Nobody else can take partition 1 while m lives and holds its owner word: m's claims must
    // end up with a token that passes the partition's fence (a few claims allowed).
    bool can_commit = false;
    Status last;
    for (int i = 0; i < 3 && !can_commit; ++i) {
        m = gm->claim("m");
        REQUIRE_MESSAGE(m.ok(), m.error().message);
        REQUIRE(m->partitions == std::vector<uint32_t>{1});
        REQUIRE(consumer->assign(*m).ok());
        last = consumer->commit(1, 1);
        can_commit = last.ok() && gm->owns("m", 1);
    }
    auto d = describe_consumer_group(tp.pool, "t", "g");
    REQUIRE(d.ok());
    INFO("m's token " << m->epoch << ", partition 1 fence " << d->partitions[1].commit_epoch
                      << ", owns " << gm->owns("m", 1) << ", commit: " << (last ? std::string("ok") : last.error().message));
    CHECK(can_commit);
}
