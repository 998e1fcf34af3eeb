// SPDX-License-Identifier: MIT
// WorkerLoop's asynchronous form (docs/api.md section 6): several messages of one partition in
// flight, the committed offset as the longest completed prefix, key order, the per-offset
// attempt window in the pool (a takeover re-runs the previous owner's window one message at a
// time), results never replaced by an older input version, dropped tickets redelivered,
// retries that do not hold up the rest, and wait_fd's readiness. In-process: one loop stands
// in for a member; a second loop opened after the first was dropped is its successor.
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../mq/mq_test_util.h"
#include "crash_point.h"
#include "mq/group_internal.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/ingest.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/worker_loop.h"
#include "store/store_core.h"

using namespace fabric_shm;
using namespace mqtest;
using namespace std::chrono_literals;

namespace {

struct Fixture {
    TestPool tp;
    std::unique_ptr<MemObjectStore> store;
    std::optional<Producer> producer;
    explicit Fixture(const char* tag, uint32_t partitions = 1, const StoreConfig& store_config = {},
                     uint32_t stride = 256)
        : tp(tag, 32ull << 20) {
        TopicManager mgr(tp.pool);
        REQUIRE(mgr.create("t", config(partitions, 64, OnFull::block, stride)).ok());
        auto s = MemObjectStore::open(tp.pool, store_config);
        REQUIRE(s.ok());
        store = std::move(s.value());
        auto p = Producer::open(tp.pool, "t");
        REQUIRE(p.ok());
        producer.emplace(std::move(p.value()));
    }
    /// The next stage's topic "next" (`partitions` of `capacity` slots), read by group
    /// "stage2": a stage behind, which commits nothing until a test makes it.
    void make_next_topic(uint32_t partitions, uint32_t capacity) {
        TopicManager mgr(tp.pool);
        REQUIRE(mgr.create("next", config(partitions, capacity)).ok());
        REQUIRE(mgr.register_group("next", "stage2").ok());
    }
    FabricUri in(const std::string& key) const { return FabricUri::make(tp.pool.name(), "in", key).value(); }
    FabricUri result(const std::string& key) const {
        return FabricUri::make(tp.pool.name(), "results", "in/" + key).value();
    }
    /// Puts in/KEY and notifies it, keyed by `notify_key` (default: KEY; "" = unkeyed), or
    /// unkeyed to `partition` when given.
    uint64_t upload(const std::string& key, const std::string& data, const std::string* notify_key = nullptr,
                    std::optional<uint32_t> partition = std::nullopt) {
        auto ver = store->put(in(key), bytes(data));
        REQUIRE(ver.ok());
        const std::string v = std::to_string(*ver), us = in(key).to_string();
        const MessageHeader h[] = {{kHeaderVersion, v}};
        const std::string k = notify_key ? *notify_key : key;
        auto sent = partition ? producer->send_to(*partition, OutgoingMessage{bytes(us), {}, h})
                    : k.empty() ? producer->send(bytes(us), h)
                                : producer->send_keyed(bytes(k), bytes(us), h);
        REQUIRE(sent.ok());
        return *ver;
    }
    std::string result_text(const std::string& key) {
        auto d = store->get(result(key));
        REQUIRE(d.ok());
        if (!d->has_value()) return "<absent>";
        return std::string((*d)->data.begin(), (*d)->data.end());
    }
    uint64_t committed() {
        auto d = describe_consumer_group(tp.pool, "t", "g");
        REQUIRE(d.ok());
        return d->partitions[0].committed;
    }
    WorkerConfig cfg(const std::string& member, uint32_t concurrency, OrderMode order = OrderMode::none) const {
        WorkerConfig c;
        c.topic = "t";
        c.group = "g";
        c.member_id = member;
        c.concurrency = concurrency;
        c.order = order;
        c.backoff_initial_ns = 1'000'000;
        c.backoff_max_ns = 2'000'000;
        return c;
    }
};

std::vector<uint8_t> bytes_vec(std::string_view s) { return {s.begin(), s.end()}; }
std::vector<uint8_t> upper(const WorkTicket& t) {
    std::vector<uint8_t> out(t.item().data.begin(), t.item().data.end());
    for (auto& c : out) c = uint8_t(std::toupper(c));
    return out;
}

/// Acquires until `want` tickets are out, or (once some are) an acquire finds nothing more
/// within 50 ms; waits at most 2 s for the first.
std::vector<WorkTicket> acquire_n(WorkerLoop& loop, size_t want) {
    std::vector<WorkTicket> out;
    std::vector<WorkTicket> buf(want);
    const auto end = std::chrono::steady_clock::now() + 2s;
    while (out.size() < want && std::chrono::steady_clock::now() < end) {
        auto n = loop.acquire(std::span(buf).first(want - out.size()), 50ms);
        REQUIRE_MESSAGE(n.ok(), n.error().message);
        for (size_t i = 0; i < *n; ++i) out.push_back(std::move(buf[i]));
        if (*n == 0 && !out.empty()) break;
    }
    return out;
}

}  // namespace

TEST_CASE("async worker: several messages of one partition in flight; the commit is the longest completed prefix") {
    Fixture f("async-prefix");
    for (int i = 0; i < 5; ++i) f.upload("k" + std::to_string(i), "data " + std::to_string(i));
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 8));
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    auto tickets = acquire_n(*loop, 5);
    REQUIRE(tickets.size() == 5);
    CHECK(loop->in_flight() == 5);
    for (size_t i = 0; i < 5; ++i) CHECK(tickets[i].item().offset == i);
    // Out of order: offsets 4, 3, 2, 1 complete; offset 0 holds the commit back.
    for (size_t i = 4; i >= 1; --i) REQUIRE(loop->complete(std::move(tickets[i]), upper(tickets[i])).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 0);
    CHECK(f.result_text("k3") == "DATA 3");
    REQUIRE(loop->complete(std::move(tickets[0]), upper(tickets[0])).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 5);
    CHECK(loop->stats().processed == 5);
    REQUIRE(loop->close().ok());
}

TEST_CASE("async worker: busy_seconds spans the first hand-out to the last result written, driven by acquire()/complete() or by run()") {
    Fixture f("async-busy");
    for (int i = 0; i < 3; ++i) f.upload("k" + std::to_string(i), "data");
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 1));
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    CHECK(loop->stats().busy_seconds() == 0.0);
    // Driven by the caller: each result's instant is read when it is written, even with more
    // messages buffered (the next acquire() may come much later).
    std::vector<WorkTicket> t(1);
    const uint64_t before_first = mono_now_ns();
    REQUIRE(loop->acquire(t, 2s).value() == 1);
    CHECK(loop->stats().first_handout_mono_ns >= before_first);
    const uint64_t before_result = mono_now_ns();
    REQUIRE(loop->complete(std::move(t[0]), upper(t[0])).ok());
    const uint64_t after_result = mono_now_ns();
    CHECK(loop->stats().last_result_mono_ns >= before_result);
    CHECK(loop->stats().last_result_mono_ns <= after_result);
    const WorkerStats& s = loop->stats();
    CHECK(s.busy_seconds() == doctest::Approx(double(s.last_result_mono_ns - s.first_handout_mono_ns) / 1e9));
    CHECK(s.busy_seconds() > 0.0);
    REQUIRE(loop->close().ok());

    // Driven by run(): by the time the processor sees the next message, the previous result's
    // instant is recorded, and it lies between that processor's return and this call; the
    // last one is recorded when run() returns.
    for (int i = 3; i < 8; ++i) f.upload("k" + std::to_string(i), "data");
    WorkerConfig c = f.cfg("b", 1);
    c.count = 5;
    auto runner = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(runner.ok(), runner.error().message);
    uint64_t returned = 0, seen = 0;
    auto r = runner->run([&](const WorkItem& item) -> Result<std::vector<uint8_t>> {
        const uint64_t last = runner->stats().last_result_mono_ns;
        if (returned != 0) {
            CHECK(last >= returned);
            CHECK(last <= mono_now_ns());
        }
        ++seen;
        std::vector<uint8_t> out(item.data.begin(), item.data.end());
        returned = mono_now_ns();
        return out;
    });
    const uint64_t after_run = mono_now_ns();
    REQUIRE_MESSAGE(r.ok(), r.error().message);
    CHECK(*r == WorkerExit::count_reached);
    CHECK(seen == 5);
    CHECK(runner->stats().processed == 5);
    CHECK(runner->stats().last_result_mono_ns >= returned);
    CHECK(runner->stats().last_result_mono_ns <= after_run);
}

TEST_CASE("worker run: a run stopped with messages still buffered records its last result's instant when it returns") {
    Fixture f("run-busy-stop");
    for (int i = 0; i < 6; ++i) f.upload("k" + std::to_string(i), "data");
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 1));
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    uint64_t returned = 0;
    int calls = 0;
    auto r = loop->run(
        [&](const WorkItem& item) -> Result<std::vector<uint8_t>> {
            ++calls;
            returned = mono_now_ns();
            return std::vector<uint8_t>(item.data.begin(), item.data.end());
        },
        [&] { return calls == 2; });  // asked between results: the rings still hold the rest
    const uint64_t after_run = mono_now_ns();
    REQUIRE_MESSAGE(r.ok(), r.error().message);
    CHECK(*r == WorkerExit::stopped);
    CHECK(loop->stats().processed == 2);
    CHECK(loop->stats().last_result_mono_ns >= returned);
    CHECK(loop->stats().last_result_mono_ns <= after_run);
}

TEST_CASE("async worker: a notification's placement hint, right, stale, foreign, forged or malformed, changes nothing handed out or stored") {
    Fixture f("async-placement");
    // k0: its own hint. k1: the hint of its previous version. k2: k0's hint. k3: bits past the
    // heap. k4: text that is not a hint.
    PlacementHint own, previous;
    REQUIRE(f.store->put(f.in("k0").view(), bytes("data 0"), {}, own));
    REQUIRE(f.store->put(f.in("k1").view(), bytes("old 1"), {}, previous));
    for (int i = 1; i <= 4; ++i) REQUIRE(f.store->put(f.in("k" + std::to_string(i)), bytes("data " + std::to_string(i))));
    const PlacementHint::Text own_text = own.text(), previous_text = previous.text(),
                              forged_text = PlacementHint(~uint64_t(0)).text();
    const std::string_view texts[] = {{own_text.data(), 16}, {previous_text.data(), 16}, {own_text.data(), 16},
                                      {forged_text.data(), 16}, "not a hint"};
    for (int i = 0; i < 5; ++i) {
        const std::string uri = f.in("k" + std::to_string(i)).to_string();
        const MessageHeader h[] = {{kHeaderPlacement, texts[i]}};
        REQUIRE(f.producer->send(bytes(uri), h));
    }
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 8));
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    auto tickets = acquire_n(*loop, 5);
    REQUIRE(tickets.size() == 5);
    for (size_t i = 0; i < 5; ++i) {
        CHECK(std::string_view(reinterpret_cast<const char*>(tickets[i].item().data.data()), tickets[i].item().data.size()) ==
              "data " + std::to_string(i));
        REQUIRE(loop->complete(std::move(tickets[i]), upper(tickets[i])).ok());
    }
    REQUIRE(loop->service().ok());
    for (int i = 0; i < 5; ++i) CHECK(f.result_text("k" + std::to_string(i)) == "DATA " + std::to_string(i));
    CHECK(loop->stats().processed == 5);
    CHECK(loop->stats().dead_lettered == 0);
    REQUIRE(loop->close().ok());
}

TEST_CASE("async worker: the next stage's notification names the result, its version and where it lies") {
    Fixture f("async-forward");
    TopicManager mgr(f.tp.pool);
    REQUIRE(mgr.create("next", config(1, 16)).ok());
    f.upload("k0", "data 0");
    WorkerConfig c = f.cfg("a", 4);
    c.next_topic = "next";
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    auto tickets = acquire_n(*loop, 1);
    REQUIRE(tickets.size() == 1);
    REQUIRE(loop->complete(std::move(tickets[0]), upper(tickets[0])).ok());
    REQUIRE(loop->close().ok());

    auto next = Consumer::open(f.tp.pool, "next", "");
    REQUIRE(next.ok());
    REQUIRE(next->assign_all().ok());
    REQUIRE(next->seek(SeekPolicy::Earliest()).ok());
    MessageBatch batch;
    REQUIRE(next->poll(batch, 4, Duration::zero()).value() == 1);
    const Message& m = batch[0];
    CHECK(m.value_str() == f.result("k0").to_string());
    auto head = f.store->head(f.result("k0"));
    REQUIRE(head.ok());
    REQUIRE(head->has_value());
    CHECK(m.header(kHeaderVersion) == std::to_string((*head)->version));
    const PlacementHint placed = PlacementHint::parse(m.header(kHeaderPlacement));
    CHECK(detail::placement_size(placed) == std::string("DATA 0").size());
    f.store->prefetch(placed);
    CHECK(f.result_text("k0") == "DATA 0");
}

namespace {
/// The pool's count for `offset` of `partition` (0 when its entry holds another offset).
uint64_t pool_attempts(Fixture& f, uint32_t partition, uint64_t offset) {
    auto d = describe_consumer_group(f.tp.pool, "t", "g");
    REQUIRE(d.ok());
    const auto& pd = d->partitions[partition];
    return pd.attempt_offset == offset ? pd.attempts : 0;
}
}  // namespace

// A next stage that is behind (its topic full: its worker slow or stopped) is back-pressure
// for this stage, as a full store or a full DLQ is. Before, the forward waited the producer's
// 5 s without heartbeating (past a shorter session timeout), got back_pressure and ended the
// worker; every successor met the same forward (the result being there, it skips and
// forwards) and ended too.
TEST_CASE("async worker: a full next topic delays the forward, within the session and uncounted; room made, it goes on") {
    Fixture f("async-forward-full");
    f.make_next_topic(1, 2);  // the next stage: behind, it commits nothing
    for (int i = 0; i < 4; ++i) f.upload("k" + std::to_string(i), "data " + std::to_string(i));
    WorkerConfig c = f.cfg("a", 1);
    c.next_topic = "next";
    c.max_attempts = 1;  // a forward that counted an attempt would dead-letter at its next hand-out
    c.session_timeout_ns = 2'000'000'000;  // the forward waits a quarter of it at most
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    for (int i = 0; i < 4; ++i) {
        auto t = acquire_n(*loop, 1);
        REQUIRE(t.size() == 1);
        CHECK(t[0].item().offset == uint64_t(i));
        const auto start = std::chrono::steady_clock::now();
        Status st = loop->complete(std::move(t[0]), upper(t[0]));
        const auto took = std::chrono::steady_clock::now() - start;
        REQUIRE_MESSAGE(st.ok(), st.error().message);
        // k2 meets the full topic and waits its 500 ms; k3 comes within the second after it and
        // does not wait again.
        CHECK_MESSAGE(took < (i == 2 ? 1000ms : 250ms), "complete of k", i, " took ",
                      std::chrono::duration_cast<std::chrono::milliseconds>(took).count(), " ms");
    }
    CHECK(f.result_text("k2") == "DATA 2");
    CHECK(f.result_text("k3") == "DATA 3");
    CHECK(loop->stats().forwarded == 2);
    CHECK(pool_attempts(f, 0, 2) == 0);  // acked: the result is written
    CHECK(pool_attempts(f, 0, 3) == 0);
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 2);  // the commit waits for the forwards

    // The next stage reads and commits: room for the waiting forwards.
    auto stage2 = Consumer::open(f.tp.pool, "next", "stage2");
    REQUIRE(stage2.ok());
    REQUIRE(stage2->assign_all().ok());
    MessageBatch batch;
    REQUIRE(stage2->poll(batch, 2, Duration::zero()).value() == 2);
    CHECK(batch[0].value_str() == f.result("k0").to_string());
    CHECK(batch[1].value_str() == f.result("k1").to_string());
    REQUIRE(stage2->commit().ok());
    const auto end = std::chrono::steady_clock::now() + 3s;
    while (loop->stats().forwarded < 4 || f.committed() < 4) {
        REQUIRE(std::chrono::steady_clock::now() < end);
        std::vector<WorkTicket> none(1);
        auto n = loop->acquire(std::span(none), 50ms);  // the waiting messages: skipped and forwarded
        REQUIRE_MESSAGE(n.ok(), n.error().message);
        CHECK(*n == 0);
    }
    CHECK(loop->stats().dead_lettered == 0);
    CHECK(loop->stats().processed == 4);
    REQUIRE(stage2->poll(batch, 4, Duration::zero()).value() == 2);  // in offset order, once each
    CHECK(batch[0].value_str() == f.result("k2").to_string());
    CHECK(batch[1].value_str() == f.result("k3").to_string());
    REQUIRE(loop->close().ok());
}

TEST_CASE("async worker: an unversioned notification whose input expired while its forward waited is forwarded, "
          "not dead-lettered") {
    Fixture f("fwd-expired");
    f.make_next_topic(1, 2);
    {
        auto np = Producer::open(f.tp.pool, "next");
        REQUIRE(np.ok());
        for (int i = 0; i < 2; ++i) REQUIRE(np->send(bytes("x")).ok());  // the next topic is full
    }
    // A notification with no fabric-version (as `fabric-shm notify` or a user's own producer
    // sends it): "process what the URI holds".
    WorkerConfig c = f.cfg("a", 1);
    c.next_topic = "next";
    c.session_timeout_ns = 1'000'000'000;  // a forward waits 250 ms at most
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    PutOptions short_lived;
    short_lived.ttl = 500ms;  // outlives its hand-out (the loop is open), not the forward's waits
    REQUIRE(f.store->put(f.in("k"), bytes("data"), short_lived).ok());
    REQUIRE(f.producer->send(bytes(f.in("k").to_string())).ok());
    auto t = acquire_n(*loop, 1);
    REQUIRE(t.size() == 1);
    Status st = loop->complete(std::move(t[0]), upper(t[0]));
    REQUIRE_MESSAGE(st.ok(), st.error().message);
    CHECK(f.result_text("k") == "DATA");
    CHECK(loop->stats().forwarded == 0);  // waits for room
    // The input expires while the forward waits (the loop keeps trying it meanwhile).
    const auto expiry_end = std::chrono::steady_clock::now() + 3s;
    for (;;) {
        auto h = f.store->head(f.in("k"));
        REQUIRE(h.ok());
        if (!h->has_value()) break;
        REQUIRE(std::chrono::steady_clock::now() < expiry_end);
        std::vector<WorkTicket> none(1);
        REQUIRE(loop->acquire(std::span(none), 50ms).ok());
    }
    // Room in the next topic: the result is forwarded, the input's expiry notwithstanding.
    auto stage2 = Consumer::open(f.tp.pool, "next", "stage2");
    REQUIRE(stage2.ok());
    REQUIRE(stage2->assign_all().ok());
    MessageBatch batch;
    REQUIRE(stage2->poll(batch, 2, Duration::zero()).value() == 2);
    REQUIRE(stage2->commit().ok());
    const auto end = std::chrono::steady_clock::now() + 3s;
    while (loop->stats().forwarded < 1 && loop->stats().dead_lettered == 0) {
        REQUIRE(std::chrono::steady_clock::now() < end);
        std::vector<WorkTicket> none(1);
        auto n = loop->acquire(std::span(none), 50ms);
        REQUIRE_MESSAGE(n.ok(), n.error().message);
    }
    CHECK(loop->stats().dead_lettered == 0);
    CHECK(loop->stats().forwarded == 1);
    REQUIRE(stage2->poll(batch, 2, Duration::zero()).value() == 1);
    CHECK(batch[0].value_str() == f.result("k").to_string());
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 1);
    REQUIRE(loop->close().ok());
}

// The forward's wait is bounded per call (min(1 s, session/4)) and the one-second hold only
// follows a wait that ended in back_pressure. A next stage that frees room a little faster
// than the bound (it commits steadily, behind this stage) makes every forward wait and
// succeed, so a run of completions (or a pass of skip-path forwards in acquire) waits many
// times in a row: the member must heartbeat between them, or it is silent for the sum of the
// waits and evicted.
TEST_CASE("async worker: forwards that each wait for a slow next stage still heartbeat the member within its session timeout") {
    Fixture f("fwd-drip", 2);
    f.make_next_topic(1, 2);
    for (int i = 0; i < 16; ++i) f.upload("k" + std::to_string(i), "data", nullptr, uint32_t(i % 2));
    WorkerConfig c = f.cfg("a", 16);
    c.next_topic = "next";
    c.session_timeout_ns = 1'000'000'000;  // the forward waits 250 ms at most
    auto a = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(a.ok(), a.error().message);
    {
        auto np = Producer::open(f.tp.pool, "next");
        REQUIRE(np.ok());
        for (int i = 0; i < 2; ++i) REQUIRE(np->send(bytes("x"), {}).ok());  // the next topic is full
    }
    auto tickets = acquire_n(*a, 16);
    REQUIRE(tickets.size() == 16);
    std::atomic<bool> stop{false};
    HeartbeatWatch watch(f.tp.pool, "t", "g", "a");
    std::thread drip([&] {  // the next stage: one message every 150 ms
        auto s2 = Consumer::open(f.tp.pool, "next", "stage2");
        if (!s2.ok() || !s2->assign_all().ok()) return;  // nothing drains: the completes fail below
        MessageBatch b;
        while (!stop.load()) {
            std::this_thread::sleep_for(150ms);
            (void)s2->poll(b, 1, Duration::zero());
            (void)s2->commit();
        }
    });
    const auto start = std::chrono::steady_clock::now();
    for (auto& t : tickets) {
        Status st = a->complete(std::move(t), upper(t));
        if (!st.ok()) FAIL_CHECK(st.error().message);
    }
    const auto took = std::chrono::steady_clock::now() - start;
    stop.store(true);
    drip.join();
    watch.stop();
    MESSAGE("16 completes took ", std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
            " ms; forwarded ", a->stats().forwarded, "; member a's longest silence ", watch.max_age_ns() / 1'000'000, " ms");
    CHECK(took > std::chrono::seconds(1));  // the forwards did wait, one after another
    CHECK(a->stats().forwarded == 16);
    CHECK_MESSAGE(watch.max_age_ns() < c.session_timeout_ns, "member a was silent past its session timeout (evictable)");
}

namespace {
/// A next topic "next" of 2 partitions of 8 slots, read by group "stage2" (a stage behind: it
/// commits nothing), whose partition 0 is full.
void next_topic_with_partition0_full(Fixture& f) {
    f.make_next_topic(2, 8);
    auto np = Producer::open(f.tp.pool, "next");
    REQUIRE(np.ok());
    for (int i = 0; i < 8; ++i) REQUIRE(np->send_to(0, OutgoingMessage{bytes("x"), {}, {}}).ok());
}
}  // namespace

// One slow or stopped member of the next stage holds its own partitions full, not the stage:
// after a forward found one partition full (and waited for it once), forwards to the
// partitions with room go on at once; only those bound for the full one wait.
TEST_CASE("async worker: a full partition of the next topic holds only the forwards bound for it") {
    Fixture f("fwd-part");
    next_topic_with_partition0_full(f);
    const std::string unkeyed;
    for (int i = 0; i < 6; ++i) f.upload("k" + std::to_string(i), "data", &unkeyed);
    WorkerConfig c = f.cfg("a", 16);
    c.next_topic = "next";
    c.session_timeout_ns = 1'000'000'000;  // a forward waits 250 ms at most
    auto a = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(a.ok(), a.error().message);
    auto tickets = acquire_n(*a, 6);
    REQUIRE(tickets.size() == 6);
    const auto start = std::chrono::steady_clock::now();
    for (auto& t : tickets) {
        Status st = a->complete(std::move(t), upper(t));
        REQUIRE_MESSAGE(st.ok(), st.error().message);
    }
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    // The first forward tried partition 0 and waited; the other five went to partition 1.
    CHECK(a->stats().forwarded == 5);
    CHECK(took < 900ms);  // one wait (250 ms), not one per forward
    auto d = TopicManager(f.tp.pool).describe("next");
    REQUIRE(d.ok());
    CHECK(d->partitions[1].next == 5);
    CHECK(f.committed() == 0);  // the message that waits holds the commit back
}

TEST_CASE("async worker: once its hold ends, a still-full partition of the next topic is tried without waiting and "
          "an unkeyed forward goes to one with room") {
    Fixture f("fwd-probe");
    next_topic_with_partition0_full(f);
    const std::string unkeyed;
    WorkerConfig c = f.cfg("a", 1);
    c.next_topic = "next";
    c.session_timeout_ns = 2'000'000'000;  // a forward waits 500 ms at most
    auto a = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(a.ok(), a.error().message);
    auto complete_one = [&](const std::string& key) {
        f.upload(key, "data", &unkeyed);
        auto t = acquire_n(*a, 1);
        REQUIRE(t.size() == 1);
        const auto start = std::chrono::steady_clock::now();
        Status st = a->complete(std::move(t[0]), upper(t[0]));
        REQUIRE_MESSAGE(st.ok(), st.error().message);
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    };
    // The first forward goes to partition 0 (its turn), waits for space and holds it for a second.
    CHECK(complete_one("k0") >= 400ms);
    CHECK(a->stats().forwarded == 0);
    // Its retry goes to partition 1 once the hold has ended; the turn is partition 0's again.
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (a->stats().forwarded < 1) {
        REQUIRE(std::chrono::steady_clock::now() < end);
        std::vector<WorkTicket> none(1);
        REQUIRE(a->acquire(std::span(none), 50ms).ok());
    }
    // Partition 0 is still full: the next forward tries it without waiting, and goes to 1.
    const auto took = complete_one("k1");
    CHECK_MESSAGE(took < 250ms, "the forward waited ", took.count(), " ms on the partition still full");
    CHECK(a->stats().forwarded == 2);
    auto d = TopicManager(f.tp.pool).describe("next");
    REQUIRE(d.ok());
    CHECK(d->partitions[0].next == 8);
    CHECK(d->partitions[1].next == 2);
    CHECK(a->stats().dead_lettered == 0);
    REQUIRE(a->close().ok());
}

// One pass of hand-outs dead-letters the front of every owned partition into a full DLQ, each
// send waiting its send_wait: the member heartbeats between them, as between forwards.
TEST_CASE("async worker: dead letters into a full DLQ, one per owned partition, keep the member's heartbeat within "
          "its session") {
    constexpr uint32_t kParts = 8;
    TestPool tp("dlq-pass", 32ull << 20);
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(kParts, 64)).ok());
    auto store = MemObjectStore::open(tp.pool, {});
    REQUIRE(store.ok());
    // A DLQ whose every partition is full (nobody reads it).
    REQUIRE(create_dead_letter_topic(tp.pool, "t.dlq", config(kParts, 4, OnFull::block, 1024)).ok());
    {
        auto filler = Producer::open(tp.pool, "t.dlq");
        REQUIRE(filler.ok());
        for (uint32_t p = 0; p < kParts; ++p)
            for (int i = 0; i < 4; ++i) REQUIRE(filler->send_to(p, OutgoingMessage{bytes("old"), {}, {}}).ok());
    }
    // One poison notification (not a URI: dead-lettered at its hand-out) at the front of each partition.
    {
        auto pr = Producer::open(tp.pool, "t");
        REQUIRE(pr.ok());
        for (uint32_t p = 0; p < kParts; ++p) REQUIRE(pr->send_to(p, OutgoingMessage{bytes("not a uri"), {}, {}}).ok());
    }
    WorkerConfig c;
    c.topic = "t";
    c.group = "g";
    c.member_id = "a";
    c.concurrency = 1;
    c.session_timeout_ns = 400'000'000;  // send_wait: 100 ms
    auto loop = WorkerLoop::open(tp.pool, c);
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);

    HeartbeatWatch watch(tp.pool, "t", "g", "a");
    const uint64_t start = mono_now_ns();
    std::vector<WorkTicket> none(1);
    auto n = loop->acquire(std::span(none), 0ms);
    const uint64_t took_ms = (mono_now_ns() - start) / 1'000'000;
    watch.stop();
    REQUIRE_MESSAGE(n.ok(), n.error().message);
    MESSAGE("one acquire pass took ", took_ms, " ms; the member's heartbeat age reached ", watch.max_age_ns() / 1'000'000,
            " ms (session 400 ms)");
    // Another member's claim evicts a member whose heartbeat is older than the session (group.cpp alive()).
    CHECK_MESSAGE(watch.max_age_ns() < c.session_timeout_ns, "silent past the session: another member may evict it");
    REQUIRE(loop->close().ok());
}

namespace {
/// The topic's next offset claimed by a producer SIGKILLed before it published: the consumer
/// steps over it (a skip record) once the dead claimer is judged.
void leave_claim_unpublished(Fixture& f) { send_killed_after_claim(f.tp.cleanup.name(), "t"); }
}  // namespace

TEST_CASE("async worker: a skip record inside the window: messages 8 offsets apart are never in flight together") {
    // The pool counts attempts per offset in entry offset % 8: two messages 8 offsets apart in
    // flight at once would share one, and a message that kills its workers would lose its count.
    Fixture f("async-gap-window");
    for (int i = 0; i < 7; ++i) f.upload("k" + std::to_string(i), "data");  // offsets 0..6
    leave_claim_unpublished(f);  // offset 7
    f.upload("k8", "data");  // offset 8
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 8));
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    // The consumer steps over offset 7 once the dead claimer is judged; until then offset 8
    // is not readable at all. Wait until all 7 before it are out and offset 8 is buffered.
    std::vector<WorkTicket> out;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    std::vector<WorkTicket> buf(8);
    while (out.size() < 7 && std::chrono::steady_clock::now() < deadline) {
        auto n = loop->acquire(std::span(buf).first(8 - out.size()), 20ms);
        REQUIRE(n.ok());
        for (size_t i = 0; i < *n; ++i) out.push_back(std::move(buf[i]));
    }
    REQUIRE(out.size() == 7);
    for (size_t i = 0; i < 7; ++i) CHECK(out[i].item().offset == i);
    // Offset 8 shares offset 0's entry: held back while 0 is in flight, however long we ask.
    for (int tries = 0; tries < 10; ++tries) {
        auto n = loop->acquire(std::span(buf).first(1), 20ms);
        REQUIRE(n.ok());
        CHECK(*n == 0);
    }
    REQUIRE(loop->complete(std::move(out[0]), upper(out[0])).ok());
    auto n = loop->acquire(std::span(buf).first(1), 2s);
    REQUIRE(n.ok());
    REQUIRE(*n == 1);
    CHECK(buf[0].item().offset == 8);
}

TEST_CASE("async worker: under a backlog the done prefix is committed every commit_every messages, and at once when the partition drains") {
    Fixture f("async-commit-every");
    constexpr uint64_t kMessages = 21;
    for (uint64_t i = 0; i < kMessages; ++i) f.upload("k" + std::to_string(i), "data");
    for (uint32_t every : {1u, 4u}) {
        CAPTURE(every);
        WorkerConfig c = f.cfg(every == 1 ? "a" : "b", 1);
        c.group = "g" + std::to_string(every);
        c.result_bucket = "results-" + std::to_string(every);
        c.commit_every = every;
        c.commit_delay = std::chrono::seconds(60);  // only the count and the drain commit here
        auto loop = WorkerLoop::open(f.tp.pool, c);
        REQUIRE_MESSAGE(loop.ok(), loop.error().message);
        auto committed = [&] {
            auto d = describe_consumer_group(f.tp.pool, "t", c.group);
            REQUIRE(d.ok());
            return d->partitions[0].committed;
        };
        uint64_t done = 0, deferred = 0;
        std::vector<WorkTicket> t(1);
        while (done < kMessages) {
            auto n = loop->acquire(t, 2s);
            REQUIRE(n.ok());
            REQUIRE(*n == 1);
            REQUIRE(loop->complete(std::move(t[0]), upper(t[0])).ok());
            ++done;
            REQUIRE(loop->service().ok());
            const uint64_t at = committed();
            // Messages still buffered: committed at multiples of `every`; drained: all of it.
            if (done == kMessages) {
                CHECK(at == kMessages);
            } else {
                CHECK(at == done / every * every);
                if (at < done) ++deferred;
            }
        }
        CHECK(loop->stats().processed == kMessages);
        if (every == 1) CHECK(deferred == 0);
        else CHECK(deferred > 0);
        REQUIRE(loop->close().ok());
        CHECK(committed() == kMessages);
    }
}

TEST_CASE("async worker: a deferred commit is made by the first service() commit_delay after the first message done") {
    Fixture f("async-commit-delay");
    for (int i = 0; i < 4; ++i) f.upload("k" + std::to_string(i), "data");
    WorkerConfig c = f.cfg("a", 1);
    c.commit_delay = std::chrono::milliseconds(100);  // far above a time slice: the first service() is before it
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    std::vector<WorkTicket> t(1);
    auto n = loop->acquire(t, 2s);
    REQUIRE((n.ok() && *n == 1));
    REQUIRE(loop->complete(std::move(t[0]), upper(t[0])).ok());
    REQUIRE(loop->service().ok());  // three more buffered: deferred
    CHECK(f.committed() == 0);
    std::this_thread::sleep_for(150ms);
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 1);
}

TEST_CASE("async worker: commit_every outside 1..kMaxCommitEvery and a negative commit_delay are refused, naming the value") {
    Fixture f("async-commit-bad");
    for (uint32_t bad : {0u, kMaxCommitEvery + 1}) {
        WorkerConfig c = f.cfg("a", 1);
        c.commit_every = bad;
        auto loop = WorkerLoop::open(f.tp.pool, c);
        REQUIRE_FALSE(loop.ok());
        CHECK(loop.code() == Errc::invalid_argument);
        CHECK(loop.error().message.find("commit every " + std::to_string(bad)) != std::string::npos);
        CHECK(loop.error().message.find("1.." + std::to_string(kMaxCommitEvery)) != std::string::npos);
    }
    WorkerConfig c = f.cfg("a", 1);
    c.commit_delay = -std::chrono::milliseconds(1);
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_FALSE(loop.ok());
    CHECK(loop.code() == Errc::invalid_argument);
    CHECK(loop.error().message.find("-1000000 ns") != std::string::npos);
}

TEST_CASE("async worker: a producer killed after its claim, behind the last message, leaves no lag once the claim is skipped") {
    // A skip record carries no message, so no completion commits past it; the loop commits up
    // to its position when nothing is buffered, or the partition would show lag 1 until its
    // next message.
    Fixture f("async-trailing-skip");
    f.upload("k0", "zero");
    f.upload("k1", "one");
    leave_claim_unpublished(f);
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 4));
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    auto tickets = acquire_n(*loop, 2);
    REQUIRE(tickets.size() == 2);
    for (auto& t : tickets) REQUIRE(loop->complete(std::move(t), upper(t)).ok());
    // The dead claimer's offset 2 becomes a skip record at the consumer's next look.
    const auto deadline = std::chrono::steady_clock::now() + 3s;
    std::vector<WorkTicket> none(1);
    while (f.committed() < 3 && std::chrono::steady_clock::now() < deadline) {
        auto n = loop->acquire(std::span(none), 20ms);
        REQUIRE_MESSAGE(n.ok(), n.error().message);
        REQUIRE(*n == 0);
        REQUIRE(loop->service().ok());
    }
    CHECK(f.committed() == 3);
    auto d = describe_consumer_group(f.tp.pool, "t", "g");
    REQUIRE(d.ok());
    CHECK(d->partitions[0].lag == 0);
    CHECK(f.result_text("k1") == "ONE");
    REQUIRE(loop->close().ok());
}

TEST_CASE("async worker: the window bounds the messages of one partition in flight past its commit") {
    Fixture f("async-window");
    for (int i = 0; i < 6; ++i) f.upload("k" + std::to_string(i), "x");
    WorkerConfig c = f.cfg("a", 16);
    c.window = 3;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    auto tickets = acquire_n(*loop, 6);  // only 3 come
    REQUIRE(tickets.size() == 3);
    // A later completion does not open the window: offset 0 still holds it.
    REQUIRE(loop->complete(std::move(tickets[2]), upper(tickets[2])).ok());
    std::vector<WorkTicket> more(4);
    auto n = loop->acquire(more, 50ms);
    REQUIRE(n.ok());
    CHECK(*n == 0);
    REQUIRE(loop->complete(std::move(tickets[0]), upper(tickets[0])).ok());
    n = loop->acquire(more, 1s);
    REQUIRE(n.ok());
    CHECK(*n >= 1);  // offset 3 (and 4 after offset 1's completion)
    CHECK(more[0].item().offset == 3);
}

TEST_CASE("async worker: a poll that reads past a partition's window gives the rest back; resumed, the partition goes on from there") {
    Fixture f("async-giveback", 2);
    const std::string same = "one-partition";  // every notification keyed alike: one partition
    for (int i = 0; i < 6; ++i) f.upload("k" + std::to_string(i), "x", &same);
    WorkerConfig c = f.cfg("a", 16);
    c.window = 2;  // the poll asks for both partitions' room (4) and finds it all in one: 2 go back
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    std::vector<uint64_t> offsets;
    for (int round = 0; round < 3; ++round) {
        auto tickets = acquire_n(*loop, 4);
        REQUIRE(tickets.size() == 2);  // the window
        for (WorkTicket& t : tickets) {
            offsets.push_back(t.item().offset);
            REQUIRE(loop->complete(std::move(t), upper(t)).ok());
        }
    }
    CHECK(offsets == std::vector<uint64_t>{0, 1, 2, 3, 4, 5});  // none skipped, none twice
    for (int i = 0; i < 6; ++i) CHECK(f.result_text("k" + std::to_string(i)) == "X");
}

TEST_CASE("async worker: OrderMode::key holds a key's successor while its predecessor is in flight; none does not") {
    for (OrderMode order : {OrderMode::key, OrderMode::none}) {
        CAPTURE(int(order));
        Fixture f(order == OrderMode::key ? "async-key" : "async-none");
        const std::string same = "A";
        f.upload("a0", "first", &same);
        f.upload("a1", "second", &same);
        f.upload("b0", "other");
        auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 8, order));
        REQUIRE(loop.ok());
        auto tickets = acquire_n(*loop, order == OrderMode::key ? 2 : 3);
        std::vector<WorkTicket> extra(4);
        auto n = loop->acquire(extra, 50ms);
        REQUIRE(n.ok());
        if (order == OrderMode::key) {
            REQUIRE(tickets.size() == 2);
            CHECK(*n == 0);  // a1 waits for a0
            CHECK(tickets[0].item().offset == 0);
            CHECK(tickets[1].item().offset == 2);
            REQUIRE(loop->complete(std::move(tickets[0]), upper(tickets[0])).ok());
            auto later = acquire_n(*loop, 1);
            REQUIRE(later.size() == 1);
            CHECK(later[0].item().offset == 1);
        } else {
            REQUIRE(tickets.size() == 3);
            CHECK(*n == 0);
        }
    }
}

TEST_CASE("async worker: a ring more than half full still reads on when what it holds cannot fill the request") {
    // Under a backlog acquire() hands out from its ring without polling while less than half of
    // the ring is free; that must never cost a ticket the old per-pass poll would have given.
    Fixture f("async-refill");
    const std::string a = "A", b = "B";
    for (int i = 0; i < 4; ++i) f.upload("a" + std::to_string(i), "x", &a);
    f.upload("b0", "y", &b);
    WorkerConfig c = f.cfg("m", 4, OrderMode::key);
    c.window = 4;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    auto first = acquire_n(*loop, 4);  // the ring holds a0..a3; only a0 may go out
    REQUIRE(first.size() == 1);
    CHECK(first[0].item().offset == 0);
    REQUIRE(loop->complete(std::move(first[0]), upper(first[0])).ok());
    // Three of four slots held: a1 may go out, a2 and a3 wait for it; two tickets asked for,
    // so the ring cannot fill them alone and b0 is read behind a3.
    std::vector<WorkTicket> two(2);
    auto n = loop->acquire(two, 1s);
    REQUIRE(n.ok());
    REQUIRE(*n == 2);
    CHECK(two[0].item().offset == 1);
    CHECK(two[1].item().offset == 4);
    for (WorkTicket& t : two) REQUIRE(loop->complete(std::move(t), upper(t)).ok());
    // The rest, in key order.
    auto rest = acquire_n(*loop, 1);
    REQUIRE(rest.size() == 1);
    CHECK(rest[0].item().offset == 2);
    REQUIRE(loop->close().ok());
}

TEST_CASE("async worker: messages the ring settles without a ticket do not cost the pass the message behind them") {
    // m0, three notifications that are not URIs (dead-lettered at their hand-out), m4.
    Fixture f("async-refill-settled");
    const std::string unkeyed;
    f.upload("m0", "x", &unkeyed);
    for (int i = 1; i <= 3; ++i) REQUIRE(f.producer->send(bytes("not a URI " + std::to_string(i))).ok());
    f.upload("m4", "y", &unkeyed);
    WorkerConfig c = f.cfg("m", 4);
    c.window = 4;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    auto first = acquire_n(*loop, 1);  // the ring reads m0 and the three; m0 goes out
    REQUIRE(first.size() == 1);
    REQUIRE(loop->complete(std::move(first[0]), upper(first[0])).ok());
    // The ring (three of four held) has three messages that may go out, and all three are
    // dead-lettered: the pass reads on and hands out m4, without waiting.
    std::vector<WorkTicket> two(2);
    auto n = loop->acquire(two, 0ns);
    REQUIRE(n.ok());
    REQUIRE(*n == 1);
    CHECK(two[0].item().offset == 4);
    REQUIRE(loop->complete(std::move(two[0]), upper(two[0])).ok());
    REQUIRE(loop->service().ok());
    auto dead = dead_letter_count(f.tp.pool, "t.dlq");
    REQUIRE(dead.ok());
    CHECK(*dead == 3);
    REQUIRE(loop->close().ok());
}

TEST_CASE("async worker: a backlog on one partition does not keep another partition's message unread") {
    Fixture f("async-refill-fair", 5);
    // Twelve messages on partition 0, then one on partition 4.
    for (int i = 0; i < 12; ++i) f.upload("p0-" + std::to_string(i), "x", nullptr, 0);
    WorkerConfig c = f.cfg("m", 1);
    c.window = 8;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    auto t = acquire_n(*loop, 1);  // partition 0's ring fills
    REQUIRE(t.size() == 1);
    REQUIRE(loop->complete(std::move(t[0]), upper(t[0])).ok());
    f.upload("p4", "y", nullptr, 4);
    // Partition 0's ring is more than half full and could serve; partition 4's is empty with a
    // message waiting: it is read in this pass, and goes out within the next two hand-outs
    // (the hand-out rotates over the partitions).
    bool seen = false;
    for (int i = 0; i < 2 && !seen; ++i) {
        auto got = acquire_n(*loop, 1);
        REQUIRE(got.size() == 1);
        seen = got[0].item().partition == 4;
        REQUIRE(loop->complete(std::move(got[0]), upper(got[0])).ok());
    }
    CHECK(seen);
    REQUIRE(loop->close().ok());
}

TEST_CASE("async worker: the result key template builds each result's URI; a template that makes an invalid key dead-letters") {
    for (const char* tmpl : {"out-{key}.txt", "{bucket}/x/{key}", "{bucket}//{key}", "{key}/."}) {
        CAPTURE(tmpl);
        const bool valid = std::string_view(tmpl).find("//") == std::string_view::npos &&
                           !std::string_view(tmpl).ends_with("/.");
        Fixture f(valid ? "async-tmpl-ok" : "async-tmpl-bad");
        f.upload("doc", "abc");
        WorkerConfig c = f.cfg("m", 1);
        c.result_key = tmpl;
        auto loop = WorkerLoop::open(f.tp.pool, c);
        REQUIRE(loop.ok());
        auto tickets = acquire_n(*loop, 1);
        if (valid) {
            REQUIRE(tickets.size() == 1);
            REQUIRE(loop->complete(std::move(tickets[0]), upper(tickets[0])).ok());
            std::string key = tmpl;
            key.replace(key.find("{key}"), 5, "doc");
            if (auto b = key.find("{bucket}"); b != std::string::npos) key.replace(b, 8, "in");
            auto d = f.store->get(FabricUri::make(f.tp.pool.name(), "results", key).value());
            REQUIRE(d.ok());
            REQUIRE(d->has_value());
            CHECK(std::string((*d)->data.begin(), (*d)->data.end()) == "ABC");
        } else {
            CHECK(tickets.empty());
            REQUIRE(loop->service().ok());
            auto dead = dead_letter_count(f.tp.pool, "t.dlq");
            REQUIRE(dead.ok());
            CHECK(*dead == 1);
            CHECK(loop->stats().processed == 0);
        }
        REQUIRE(loop->close().ok());
    }
}

TEST_CASE("async worker: a result is never replaced by the result of an older input version") {
    Fixture f("async-version");
    const std::string k = "K";
    const uint64_t v1 = f.upload("doc", "old", &k);
    const uint64_t v2 = f.upload("doc", "new", &k);
    REQUIRE(v2 > v1);
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 8, OrderMode::none));
    REQUIRE(loop.ok());
    // Both notifications read the object's current bytes ("new", v2); the first one's ticket
    // is for offset 0. Forge the older case: complete offset 1 (v2) first, then write v1's.
    auto tickets = acquire_n(*loop, 2);
    REQUIRE(tickets.size() == 2);
    CHECK(tickets[0].item().version == v2);
    REQUIRE(loop->complete(std::move(tickets[1]), bytes_vec("result of v2")).ok());
    CHECK(f.result_text("doc") == "result of v2");
    // An input version below the stored result's (a stale redelivery finishing last).
    auto r = f.store->put(f.result("doc"), bytes("result of v9"),
                          result_put_options(f.in("doc").to_string(), v2 + 7, loop->stats().epoch));
    REQUIRE(r.ok());
    REQUIRE(loop->complete(std::move(tickets[0]), bytes_vec("late result of v2")).ok());
    CHECK(f.result_text("doc") == "result of v9");
    CHECK(loop->stats().superseded == 1);
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 2);
}

namespace {
/// What the pause hook at worker.result.before_put writes, once, as another writer would
/// between the loop's judgement of the stored result and its own put.
struct LateResult {
    MemObjectStore* store = nullptr;
    FabricUri uri;
    std::string data;
    PutOptions options;
    Result<uint64_t> put = make_error(Errc::invalid_argument, "not written");
};
LateResult* g_late_result = nullptr;
void write_late_result(const char* name) {
    if (!g_late_result || std::string_view(name) != "worker.result.before_put") return;
    LateResult& late = *g_late_result;
    g_late_result = nullptr;
    late.put = late.store->put(late.uri, bytes(late.data), late.options);
}
}  // namespace

enum class LateKind { newer_version, same_input, other_input };

/// One message handed out (its result absent then) and completed while a late result is
/// written just before the loop's put; the late writer's token is the member's epoch, or one
/// above it (a member of the group that took another partition later, the input notified on
/// both), where the loop's put fails its fence before its version.
void late_result_case(LateKind kind, bool later_token) {
    Fixture f("async-late-result");
    const uint64_t v1 = f.upload("doc", "data");
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 1));
    REQUIRE(loop.ok());
    auto tickets = acquire_n(*loop, 1);
    REQUIRE(tickets.size() == 1);
    const uint64_t token = loop->stats().epoch + (later_token ? 1 : 0);
    LateResult late;
    late.store = f.store.get();
    late.uri = f.result("doc");
    switch (kind) {
        case LateKind::newer_version:
            late.data = "result of a newer version";
            late.options = result_put_options(f.in("doc").to_string(), v1 + 5, token);
            break;
        case LateKind::same_input:
            late.data = "the same result, written by another";
            late.options = result_put_options(f.in("doc").to_string(), v1, token);
            break;
        case LateKind::other_input:
            late.data = "another input's result";
            late.options = result_put_options(f.in("other").to_string(), 1, token);
            break;
    }
    g_late_result = &late;
    detail::set_pause_hook(&write_late_result);
    auto done = loop->complete(std::move(tickets[0]), bytes_vec("this loop's result"));
    detail::set_pause_hook(nullptr);
    REQUIRE_MESSAGE(late.put.ok(), late.put.error().message);
    REQUIRE_MESSAGE(done.ok(), done.error().message);
    CHECK(f.result_text("doc") == late.data);
    auto head = f.store->head(f.result("doc"));
    REQUIRE((head.ok() && head->has_value()));
    CHECK((*head)->version == *late.put);
    CHECK(loop->stats().processed == 0);
    CHECK(loop->stats().superseded == (kind == LateKind::newer_version ? 1u : 0u));
    CHECK(loop->stats().skipped == (kind == LateKind::same_input ? 1u : 0u));
    REQUIRE(loop->service().ok());
    CHECK(loop->stats().dead_lettered == (kind == LateKind::other_input ? 1u : 0u));
    if (kind == LateKind::other_input) {
        auto dead = dead_letter_count(f.tp.pool, "t.dlq");
        REQUIRE(dead.ok());
        CHECK(*dead == 1);
    }
    CHECK(f.committed() == 1);
}

/// Each kind of late result: a newer input version's (superseded), this very input's (a
/// redelivery's: skipped, the stored result kept), another input's under the same key (a
/// collision, dead-lettered).
void late_result_cases(bool later_token) {
    for (LateKind kind : {LateKind::newer_version, LateKind::same_input, LateKind::other_input}) {
        INFO("late result kind " << int(kind) << " (0 newer version, 1 same input, 2 other input)");
        late_result_case(kind, later_token);
    }
}

TEST_CASE("async worker: a result written after the loop judged the stored one is judged again, never overwritten") {
    late_result_cases(false);
}

TEST_CASE("async worker: a result a later member of the group wrote is judged, not taken for an outside writer's") {
    late_result_cases(true);
}

TEST_CASE("async worker: a failed message waits out its backoff while the rest go on; dead-lettered after max attempts") {
    Fixture f("async-retry");
    for (int i = 0; i < 3; ++i) f.upload("k" + std::to_string(i), "data");
    WorkerConfig c = f.cfg("a", 8);
    c.max_attempts = 2;
    c.backoff_initial_ns = 200'000'000;  // long enough to see the others pass it
    c.backoff_max_ns = 200'000'000;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    auto tickets = acquire_n(*loop, 3);
    REQUIRE(tickets.size() == 3);
    REQUIRE(loop->complete(std::move(tickets[0]), make_error(Errc::io_error, "flaky")).ok());
    REQUIRE(loop->complete(std::move(tickets[1]), upper(tickets[1])).ok());
    REQUIRE(loop->complete(std::move(tickets[2]), upper(tickets[2])).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 0);  // offset 0 is not done
    CHECK(f.result_text("k2") == "DATA");
    auto again = acquire_n(*loop, 1);  // after the backoff
    REQUIRE(again.size() == 1);
    CHECK(again[0].item().offset == 0);
    CHECK(again[0].item().attempt == 2);
    REQUIRE(loop->complete(std::move(again[0]), make_error(Errc::io_error, "flaky again")).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 3);
    CHECK(loop->stats().dead_lettered == 1);
    auto dead = dead_letter_count(f.tp.pool, "t.dlq");
    REQUIRE(dead.ok());
    CHECK(*dead == 1);
}

TEST_CASE("async worker: a dropped ticket is redelivered with its attempt counted") {
    Fixture f("async-drop");
    f.upload("k0", "data");
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 4));
    REQUIRE(loop.ok());
    {
        auto tickets = acquire_n(*loop, 1);
        REQUIRE(tickets.size() == 1);
        CHECK(tickets[0].item().attempt == 1);
    }  // dropped without complete()
    auto again = acquire_n(*loop, 1);
    REQUIRE(again.size() == 1);
    CHECK(again[0].item().attempt == 2);
    REQUIRE(loop->complete(std::move(again[0]), upper(again[0])).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 1);
}

TEST_CASE("async worker: a ticket of a closed loop completed on its successor; a later drop is redelivered by the successor") {
    Fixture f("async-foreign");
    f.upload("k0", "data");
    f.upload("k1", "data");
    std::vector<WorkTicket> old_tickets;
    {
        auto a = WorkerLoop::open(f.tp.pool, f.cfg("a", 1));
        REQUIRE(a.ok());
        old_tickets = acquire_n(*a, 1);
        REQUIRE(old_tickets.size() == 1);
        // A fatal error ends the loop; its driver opens another and completes what it holds there.
        REQUIRE(a->close().ok());
    }
    auto b = WorkerLoop::open(f.tp.pool, f.cfg("b", 1));
    REQUIRE(b.ok());
    // Not b's hand-out: counted as abandoned, and its data joins b's spares.
    REQUIRE(b->complete(std::move(old_tickets[0]), upper(old_tickets[0])).ok());
    CHECK(b->stats().abandoned == 1);
    uint64_t dropped_offset = 0;
    {
        auto t = acquire_n(*b, 1);  // handed out in the data a made
        REQUIRE(t.size() == 1);
        dropped_offset = t[0].item().offset;
    }  // dropped: b must hear of it, and hand the message out again
    auto again = acquire_n(*b, 1);
    REQUIRE(again.size() == 1);
    CHECK(again[0].item().offset == dropped_offset);
    CHECK(again[0].item().attempt >= 2);
    REQUIRE(b->complete(std::move(again[0]), upper(again[0])).ok());
}

TEST_CASE("async worker: a ticket of a closed loop completed on its successor never settles a message the "
          "successor handed out under the same hand-out number") {
    Fixture f("async-foreign-id");
    for (int i = 0; i < 3; ++i) f.upload("k" + std::to_string(i), "data " + std::to_string(i));
    std::vector<WorkTicket> old_tickets;
    {
        auto a = WorkerLoop::open(f.tp.pool, f.cfg("a", 1));
        REQUIRE(a.ok());
        auto first = acquire_n(*a, 1);  // k0: processed and committed
        REQUIRE(first.size() == 1);
        REQUIRE(a->complete(std::move(first[0]), upper(first[0])).ok());
        old_tickets = acquire_n(*a, 1);  // k1: a's second hand-out, still out when a closes
        REQUIRE(old_tickets.size() == 1);
        REQUIRE(old_tickets[0].item().uri.key() == "k1");
        REQUIRE(a->close().ok());
    }
    REQUIRE(f.committed() == 1);
    // b starts at k1 (alone: a's window re-runs one message at a time); its second hand-out
    // is k2, numbered as a's second was.
    auto b = WorkerLoop::open(f.tp.pool, f.cfg("b", 2));
    REQUIRE(b.ok());
    auto redo = acquire_n(*b, 1);
    REQUIRE(redo.size() == 1);
    REQUIRE(redo[0].item().uri.key() == "k1");
    REQUIRE(b->complete(std::move(redo[0]), upper(redo[0])).ok());
    auto mine = acquire_n(*b, 1);
    REQUIRE(mine.size() == 1);
    REQUIRE(mine[0].item().uri.key() == "k2");
    // a's ticket is not b's hand-out, whatever its number: abandoned, settling nothing of b's.
    REQUIRE(b->complete(std::move(old_tickets[0]), bytes_vec("FROM A")).ok());
    CHECK(b->stats().abandoned == 1);
    REQUIRE(b->complete(std::move(mine[0]), upper(mine[0])).ok());
    REQUIRE(b->service().ok());
    CHECK(b->stats().processed == 2);
    CHECK(f.result_text("k1") == "DATA 1");
    CHECK(f.result_text("k2") == "DATA 2");
    CHECK(f.committed() == 3);
    REQUIRE(b->close().ok());
}

TEST_CASE("async worker: after a takeover the previous owner's window re-runs one message at a time") {
    Fixture f("async-takeover");
    for (int i = 0; i < 5; ++i) f.upload("k" + std::to_string(i), "data");
    {
        auto a = WorkerLoop::open(f.tp.pool, f.cfg("a", 8));
        REQUIRE(a.ok());
        auto tickets = acquire_n(*a, 3);  // offsets 0..2 counted in the pool, then a "crashes"
        REQUIRE(tickets.size() == 3);
        auto d = describe_consumer_group(f.tp.pool, "t", "g");
        REQUIRE(d.ok());
        CHECK(d->partitions[0].attempts == 1);
        CHECK(d->partitions[0].attempt_offset == 0);
    }
    auto b = WorkerLoop::open(f.tp.pool, f.cfg("b", 8));
    REQUIRE(b.ok());
    for (uint64_t off = 0; off < 3; ++off) {
        auto t = acquire_n(*b, 3);
        REQUIRE(t.size() == 1);  // one at a time through the old window
        CHECK(t[0].item().offset == off);
        CHECK(t[0].item().attempt == 2);  // a's hand-out was counted
        REQUIRE(b->complete(std::move(t[0]), upper(t[0])).ok());
    }
    auto rest = acquire_n(*b, 2);
    CHECK(rest.size() == 2);  // past the window: concurrent again
}

namespace {

/// Services `loop` until `done()` holds (a claim is due every 50 ms); fails after 5 s.
template <class Done>
void service_until(WorkerLoop& loop, Done&& done) {
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (!done()) {
        REQUIRE(std::chrono::steady_clock::now() < end);
        REQUIRE(loop.service().ok());
        std::this_thread::sleep_for(5ms);  // the periodic claim's interval, not an ordering
    }
}

}  // namespace

// The defect: with several messages in flight and few attempts allowed, a reassignment that
// dropped a ticket whose handler was still running left its hand-out counted, and the next
// hand-out (by the new owner) dead-lettered a message that had never failed.
TEST_CASE("async worker: a message whose partition moved while its handler ran is not dead-lettered for the attempt it never failed") {
    Fixture f("async-moved-refund", 2);
    f.upload("k0", "data", nullptr, 1u);  // partition 1: the one a gives up when b joins
    WorkerConfig ca = f.cfg("a", 8);
    ca.max_attempts = 1;
    auto a = WorkerLoop::open(f.tp.pool, ca);
    REQUIRE(a.ok());
    auto running = acquire_n(*a, 1);  // a's handler "runs" while the partition moves
    REQUIRE(running.size() == 1);
    CHECK(running[0].item().partition == 1);
    CHECK(running[0].item().attempt == 1);
    CHECK(pool_attempts(f, 1, 0) == 1);
    WorkerConfig cb = f.cfg("b", 8);
    cb.max_attempts = 1;
    auto b = WorkerLoop::open(f.tp.pool, cb);  // joins: the target gives it partition 1
    REQUIRE(b.ok());
    service_until(*a, [&] { return a->stats().partitions == std::vector<uint32_t>{0}; });
    CHECK(pool_attempts(f, 1, 0) == 0);  // taken back before the release
    service_until(*b, [&] { return b->stats().partitions == std::vector<uint32_t>{1}; });
    auto redelivered = acquire_n(*b, 1);
    REQUIRE_MESSAGE(redelivered.size() == 1, "b dead-lettered it: ", b->stats().dead_lettered, " dead letter(s)");
    CHECK(redelivered[0].item().offset == 0);
    CHECK(redelivered[0].item().attempt == 1);
    CHECK(b->stats().dead_lettered == 0);
    // a's handler ends after the move: its result is discarded (the partition is b's).
    REQUIRE(a->complete(std::move(running[0]), upper(running[0])).ok());
    CHECK(a->stats().abandoned == 1);
    REQUIRE(b->complete(std::move(redelivered[0]), upper(redelivered[0])).ok());
    REQUIRE(b->service().ok());
    CHECK(f.result_text("k0") == "DATA");
    auto dead = dead_letter_count(f.tp.pool, "t.dlq");
    CHECK((!dead.ok() || *dead == 0));  // no DLQ topic at all, or an empty one
}

TEST_CASE("async worker: a message whose partition stayed while a new epoch dropped its ticket is not dead-lettered for the attempt it never failed") {
    Fixture f("async-kept-refund", 2);
    WorkerConfig ca = f.cfg("a", 8);
    ca.max_attempts = 1;
    auto a = WorkerLoop::open(f.tp.pool, ca);
    REQUIRE(a.ok());
    std::optional<WorkerLoop> b;
    {
        auto opened = WorkerLoop::open(f.tp.pool, f.cfg("b", 8));
        REQUIRE(opened.ok());
        b.emplace(std::move(*opened));
    }
    service_until(*a, [&] { return a->stats().partitions == std::vector<uint32_t>{0}; });
    f.upload("k0", "data", nullptr, 0u);
    auto running = acquire_n(*a, 1);
    REQUIRE(running.size() == 1);
    CHECK(running[0].item().partition == 0);
    CHECK(running[0].item().attempt == 1);
    // b leaves: a's next claim takes partition 1 under a new epoch, which drops every ticket a
    // holds, partition 0's included, and hands them out again.
    REQUIRE(b->close().ok());
    service_until(*a, [&] { return a->stats().partitions == std::vector<uint32_t>{0, 1}; });
    auto again = acquire_n(*a, 1);
    REQUIRE_MESSAGE(again.size() == 1, "a dead-lettered it: ", a->stats().dead_lettered, " dead letter(s)");
    CHECK(a->stats().partitions == std::vector<uint32_t>{0, 1});
    CHECK(again[0].item().offset == 0);
    CHECK(again[0].item().attempt == 1);
    CHECK(a->stats().dead_lettered == 0);
    REQUIRE(a->complete(std::move(running[0]), upper(running[0])).ok());  // stale: abandoned
    CHECK(a->stats().abandoned == 1);
    REQUIRE(a->complete(std::move(again[0]), upper(again[0])).ok());
    CHECK(f.result_text("k0") == "DATA");
}

// A reassignment's refunds take the group's lock (up to 2 s each) inside a claim that does
// not heartbeat; with the lock held by a paused process, one wait per partition given up
// would keep the member silent for 2 s times their number, past the session timeout with 5.
TEST_CASE("async worker: a reassignment whose refunds find the group's lock held by a paused process waits once, and the counts stay") {
    Fixture f("async-refund-busy", 4);
    for (uint32_t p = 0; p < 4; ++p) f.upload("k" + std::to_string(p), "data", nullptr, p);
    auto a = WorkerLoop::open(f.tp.pool, f.cfg("a", 8));
    REQUIRE(a.ok());
    auto running = acquire_n(*a, 4);  // one in flight on every partition
    REQUIRE(running.size() == 4);
    auto b = WorkerLoop::open(f.tp.pool, f.cfg("b", 8));  // joins: a gives two partitions up
    REQUIRE(b.ok());
    const PausedProcess holder(f.tp.pool.name());
    mq::GroupSlot* slot = live_group_slot(f.tp.pool, "t");
    REQUIRE(slot != nullptr);
    slot->lock.store(holder.token);
    const auto start = std::chrono::steady_clock::now();
    service_until(*a, [&] { return a->stats().partitions.size() == 2; });
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK_MESSAGE(waited < 3500ms, "the reassignment took ",
                  std::chrono::duration_cast<std::chrono::milliseconds>(waited).count(), " ms");
    slot->lock.store(0);  // the holder "resumes" and releases
    // The refunds were refused or skipped: the partitions given up keep their counts.
    for (uint32_t p = 0; p < 4; ++p)
        if (std::find(a->stats().partitions.begin(), a->stats().partitions.end(), p) == a->stats().partitions.end())
            CHECK(pool_attempts(f, p, 0) == 1);
}

// A member evicted while its handler ran (stalled past its session timeout) that cannot rejoin
// yet: a paused process holds the group's lock, so its rejoin waits and fails busy, and the new
// owner's fence, raised under the same lock, is not up yet. Before, the member kept handing out
// the partition it had lost, every ~2 s while the holder stayed paused: each hand-out passed
// begin()'s fence check and counted an attempt, each result put was refused (lost), and the new
// owner then found the message past its last attempt and dead-lettered a message that had never
// failed.
TEST_CASE("async worker: an evicted member whose rejoin waits for a paused lock holder hands out nothing of the partition it lost") {
    Fixture f("async-evicted-waiting");
    f.upload("k0", "data");
    WorkerConfig ca = f.cfg("a", 1), cb = f.cfg("b", 1);
    for (WorkerConfig* c : {&ca, &cb}) {
        c->max_attempts = 2;  // one hand-out counted by the zombie would make b dead-letter it
        c->session_timeout_ns = 200'000'000;
    }
    auto a = WorkerLoop::open(f.tp.pool, ca);
    REQUIRE(a.ok());
    auto b = WorkerLoop::open(f.tp.pool, cb);
    REQUIRE(b.ok());
    REQUIRE(a->stats().partitions == std::vector<uint32_t>{0});
    auto running = acquire_n(*a, 1);  // a's handler runs; a then stalls past its session timeout
    REQUIRE(running.size() == 1);
    CHECK(running[0].item().attempt == 1);
    std::this_thread::sleep_for(350ms);
    const PausedProcess holder(f.tp.pool.name());
    mq::GroupSlot* slot = live_group_slot(f.tp.pool, "t");
    REQUIRE(slot != nullptr);
    slot->lock.store(holder.token);  // a process paused inside the group's lock
    (void)b->service();  // b evicts a and takes partition 0's owner word; its fence waits for the lock: busy
    // a resumes: its handler's result is refused (the partition is b's), and a goes on, its
    // rejoin refused as busy.
    REQUIRE(a->complete(std::move(running[0]), upper(running[0])).ok());
    std::this_thread::sleep_for(20ms);  // past the 10 ms after which a lost message may go out again
    std::vector<WorkTicket> none(1);
    auto n = a->acquire(std::span(none), 50ms);  // its rejoin waits for the lock (2 s): busy
    REQUIRE_MESSAGE(n.ok(), n.error().message);
    CHECK(*n == 0);
    CHECK(a->stats().partitions.empty());
    CHECK(pool_attempts(f, 0, 0) == 1);  // a's one hand-out, presumed dead with it
    CHECK(f.result_text("k0") == "<absent>");

    slot->lock.store(0);  // the holder resumes and releases
    service_until(*b, [&] { return b->stats().partitions == std::vector<uint32_t>{0}; });
    auto t = acquire_n(*b, 1);
    REQUIRE_MESSAGE(t.size() == 1, "b dead-lettered it: ", b->stats().dead_lettered, " dead letter(s)");
    CHECK(t[0].item().attempt == 2);
    REQUIRE(b->complete(std::move(t[0]), upper(t[0])).ok());
    CHECK(f.result_text("k0") == "DATA");
    CHECK(b->stats().dead_lettered == 0);
}

// A member whose result-bucket claim waits for a paused holder of the group's lock, and which
// is evicted meanwhile (this process paused past its session): the bucket is the group's, so
// the claim goes on, and the member joins again before open() returns.
TEST_CASE("async worker: a member evicted while open() waited for a paused holder of the group's lock joins again "
          "and opens") {
    Fixture f("async-open-evicted");
    f.upload("k0", "data");
    WorkerConfig cb = f.cfg("b", 1), ca = f.cfg("a", 1);
    cb.session_timeout_ns = ca.session_timeout_ns = 200'000'000;
    auto b = WorkerLoop::open(f.tp.pool, cb);  // owns the one partition: a's join takes nothing
    REQUIRE(b.ok());
    const PausedProcess holder(f.tp.pool.name());
    mq::GroupSlot* slot = live_group_slot(f.tp.pool, "t");
    REQUIRE(slot != nullptr);
    // a's row: the same process's words look alike (its token), so rows are told by id.
    auto a_row = [&]() -> mq::GroupMember* {
        for (auto& m : slot->members)
            if (mq::member_state(m.word.load()) == mq::kMemberLive && mq::member_id(m) == "a") return &m;
        return nullptr;
    };
    int asked = 0, locked_at = 0;
    uint64_t a_word = 0;
    ca.open_should_stop = [&] {
        // Asked before each try. Once a has joined, a process takes the group's lock and
        // pauses inside it (a's bucket claim is refused busy); then a is evicted, silent past
        // its session as b's claim judges it (this process paused); then the holder resumes.
        ++asked;
        if (locked_at == 0 && a_row()) {
            slot->lock.store(holder.token);
            locked_at = asked;
        } else if (locked_at != 0 && asked == locked_at + 1) {
            mq::GroupMember* m = a_row();
            REQUIRE(m != nullptr);
            a_word = m->word.load();
            m->word.store(mq::make_member_word(mq::kMemberFree, mq::member_gen(a_word) + 1, 0));
        } else if (locked_at != 0 && asked == locked_at + 2) {
            slot->lock.store(0);
        }
        return false;
    };
    auto a = WorkerLoop::open(f.tp.pool, ca);
    REQUIRE_MESSAGE(a.ok(), a.error().message);
    REQUIRE(locked_at != 0);
    CHECK(asked > locked_at + 2);
    CHECK(a_word != 0);
    // a is a member again (a row of a newer generation), and b goes on.
    mq::GroupMember* again = a_row();
    REQUIRE(again != nullptr);
    CHECK(again->word.load() != a_word);
    auto t = acquire_n(*b, 1);
    REQUIRE(t.size() == 1);
    REQUIRE(b->complete(std::move(t[0]), upper(t[0])).ok());
    CHECK(f.result_text("k0") == "DATA");
}

// What must still count: a member that dies with the handler running (here: its loop
// destroyed without close(), its partition taken over by a successor) used up an attempt, so
// a poison message reaches the DLQ.
TEST_CASE("async worker: a member that dies while its handler runs still uses up the attempt: with one allowed, the successor dead-letters") {
    Fixture f("async-crash-counts");
    f.upload("k0", "data");
    WorkerConfig ca = f.cfg("a", 8);
    ca.max_attempts = 1;
    {
        auto a = WorkerLoop::open(f.tp.pool, ca);
        REQUIRE(a.ok());
        auto running = acquire_n(*a, 1);
        REQUIRE(running.size() == 1);
    }  // a "crashes": ticket and loop dropped without complete() or close()
    CHECK(pool_attempts(f, 0, 0) == 1);
    auto b = WorkerLoop::open(f.tp.pool, ca);
    REQUIRE(b.ok());
    auto none = acquire_n(*b, 1);
    CHECK(none.empty());
    CHECK(b->stats().dead_lettered == 1);
}

TEST_CASE("async worker: wait_fd becomes readable when a message arrives and when complete() frees capacity") {
    Fixture f("async-fd");
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 1));
    REQUIRE(loop.ok());
    auto fd = loop->wait_fd();
    REQUIRE(fd.ok());
    std::vector<WorkTicket> t(1);
    REQUIRE(loop->acquire(t, 0ms).ok());
    f.upload("k0", "data");
    f.upload("k1", "data");
    pollfd p{*fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 2000) == 1);
    auto n = loop->acquire(t, 0ms);
    REQUIRE(n.ok());
    REQUIRE(*n == 1);
    // At capacity (1): complete() frees it and says so through the fd.
    REQUIRE(loop->complete(std::move(t[0]), upper(t[0])).ok());
    p.revents = 0;
    REQUIRE(::poll(&p, 1, 2000) == 1);
    n = loop->acquire(t, 0ms);
    REQUIRE(n.ok());
    CHECK(*n == 1);
}

TEST_CASE("async worker: a forked child that drops the loop it inherited returns, and leaves its parent's member and "
          "ticket as they were") {
    Fixture f("async-fork");
    auto opened = WorkerLoop::open(f.tp.pool, f.cfg("a", 1));
    REQUIRE(opened.ok());
    std::optional<WorkerLoop> loop(std::move(*opened));
    REQUIRE(loop->wait_fd().ok());  // a waiter thread too, which the child has a handle of but not the thread
    f.upload("k0", "data");
    auto tickets = acquire_n(*loop, 1);
    REQUIRE(tickets.size() == 1);
    const pid_t child = test::fork_child([&] {
        tickets.clear();
        loop.reset();
        return 0;
    });
    CHECK(test::wait_child(child, 10000) == 0);
    auto d = describe_consumer_group(f.tp.pool, "t", "g");
    REQUIRE(d.ok());
    REQUIRE(d->members.size() == 1);
    CHECK(d->members[0].id == "a");
    CHECK(d->partitions[0].member_slot >= 0);
    REQUIRE(loop->complete(std::move(tickets[0]), upper(tickets[0])).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 1);
    CHECK(f.result_text("k0") == "DATA");
    REQUIRE(loop->close().ok());
}

namespace {
std::atomic<bool> g_slow_commit{false};
/// Once armed: the next commit of the loop takes 20 ms (what a commit behind a slow store
/// removal, a keep-alive or a rebalance costs the pass it runs in).
void slow_commit(const char* name) {
    if (std::string_view(name) == "worker.commit.before" && g_slow_commit.exchange(false))
        std::this_thread::sleep_for(20ms);
}
}  // namespace

TEST_CASE("async worker: a retry whose backoff ends while acquire() commits makes wait_fd readable at once") {
    Fixture f("async-retry-gap");
    f.upload("k0", "data");
    f.upload("k1", "data");
    WorkerConfig c = f.cfg("a", 2);
    c.backoff_initial_ns = c.backoff_max_ns = 10'000'000;
    c.commit_every = 1;  // k0's commit is not deferred behind k1's retry: it is the slow step
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    auto fd = loop->wait_fd();
    REQUIRE(fd.ok());
    auto tickets = acquire_n(*loop, 2);
    REQUIRE(tickets.size() == 2);
    // k1 fails (its retry in 10 ms); k0 is done, so the next pass commits it.
    REQUIRE(loop->complete(std::move(tickets[1]), make_error(Errc::io_error, "flaky")).ok());
    REQUIRE(loop->complete(std::move(tickets[0]), upper(tickets[0])).ok());
    // That commit takes 20 ms: the retry's backoff ends inside the pass, after the instant the
    // pass judges at. It must come out through the fd at once, not at the keep-alive's timer.
    g_slow_commit = true;
    detail::set_pause_hook(&slow_commit);
    std::vector<WorkTicket> t(2);
    auto n = loop->acquire(t, 0ms);
    detail::set_pause_hook(nullptr);
    REQUIRE(n.ok());
    CHECK(f.committed() == 1);
    if (*n == 0) {
        pollfd p{*fd, POLLIN, 0};
        const auto t0 = std::chrono::steady_clock::now();
        REQUIRE(::poll(&p, 1, 2000) == 1);
        const auto waited = std::chrono::steady_clock::now() - t0;
        CHECK_MESSAGE(waited < 10ms, "wait_fd readable after ",
                      std::chrono::duration_cast<std::chrono::microseconds>(waited).count(), " us");
        REQUIRE(loop->service().ok());
        n = loop->acquire(t, 0ms);
        REQUIRE(n.ok());
    }
    REQUIRE(*n == 1);
    CHECK(t[0].item().offset == 1);
    CHECK(t[0].item().attempt == 2);
}

TEST_CASE("async worker: run() whose processor closes the loop ends with closed and leaves the group, handling nothing more") {
    Fixture f("async-run-closed");
    for (int i = 0; i < 3; ++i) f.upload("k" + std::to_string(i), "data");
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 1));
    REQUIRE(loop.ok());
    int calls = 0;
    auto r = loop->run([&](const WorkItem&) -> Result<std::vector<uint8_t>> {
        ++calls;
        REQUIRE(loop->close().ok());
        return bytes_vec("after close");
    });
    REQUIRE_FALSE(r.ok());
    CHECK(r.code() == Errc::closed);
    CHECK(calls == 1);
    CHECK(loop->stats().processed == 0);  // its ticket went stale with the close
    auto d = describe_consumer_group(f.tp.pool, "t", "g");
    REQUIRE(d.ok());
    CHECK(d->members.empty());
    CHECK(d->partitions[0].member_slot == -1);
}

// The dead-letter record commits up to its offset in one fenced step: a dead letter decided
// for a later offset waits until the earlier ones are done, so no commit passes a message
// still in flight (a crash would lose it).
TEST_CASE("async worker: a dead letter behind a message still in flight waits for it; the commit never passes it") {
    Fixture f("async-dlq-order");
    for (int i = 0; i < 3; ++i) f.upload("k" + std::to_string(i), "data");
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 8));
    REQUIRE(loop.ok());
    auto tickets = acquire_n(*loop, 3);
    REQUIRE(tickets.size() == 3);
    REQUIRE(loop->complete(std::move(tickets[2]), make_error(Errc::invalid_argument, "bad input")).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 0);
    CHECK(loop->stats().dead_lettered == 0);  // decided, not sent: offset 0 and 1 are in flight
    REQUIRE(loop->complete(std::move(tickets[0]), upper(tickets[0])).ok());
    REQUIRE(loop->complete(std::move(tickets[1]), upper(tickets[1])).ok());
    std::vector<WorkTicket> none(2);
    auto n = loop->acquire(none, 0ms);  // sends the owed dead letter (nothing to hand out)
    REQUIRE(n.ok());
    CHECK(*n == 0);
    REQUIRE(loop->service().ok());
    CHECK(loop->stats().dead_lettered == 1);
    CHECK(f.committed() == 3);
    auto dead = dead_letter_count(f.tp.pool, "t.dlq");
    REQUIRE(dead.ok());
    CHECK(*dead == 1);
}

namespace {
/// CPU time of the calling thread.
std::chrono::nanoseconds thread_cpu() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

/// How often wait_fd reports readable (each answered by service(), as an event loop does)
/// within `span`.
int wait_fd_wakeups(WorkerLoop& loop, std::chrono::milliseconds span) {
    auto fd = loop.wait_fd();
    REQUIRE(fd.ok());
    int wakeups = 0;
    const auto end = std::chrono::steady_clock::now() + span;
    while (std::chrono::steady_clock::now() < end) {
        pollfd p{*fd, POLLIN, 0};
        if (::poll(&p, 1, 10) == 1) {
            ++wakeups;
            REQUIRE(loop.service().ok());
        }
    }
    return wakeups;
}
}  // namespace

TEST_CASE("async worker: a dead letter or a due retry that must wait for a message in flight is waited for without spinning") {
    Fixture f("async-idle-wait");
    for (int i = 0; i < 2; ++i) f.upload("k" + std::to_string(i), "data");
    WorkerConfig c = f.cfg("a", 2);
    c.backoff_initial_ns = 50'000'000;
    c.backoff_max_ns = 50'000'000;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    auto first = acquire_n(*loop, 2);
    REQUIRE(first.size() == 2);
    // Offset 1 fails for good: its dead letter waits for offset 0, still in flight. A slot is
    // free, but nothing may be handed out: acquire() must sleep out its timeout, not spin.
    REQUIRE(loop->complete(std::move(first[1]), make_error(Errc::invalid_argument, "bad input")).ok());
    std::vector<WorkTicket> buf(1);
    const auto cpu_before = thread_cpu();
    auto none = loop->acquire(buf, 300ms);
    const auto cpu_used = thread_cpu() - cpu_before;
    REQUIRE(none.ok());
    CHECK(*none == 0);
    CHECK_MESSAGE(cpu_used < 100ms, "acquire() used ", cpu_used.count() / 1'000'000, " ms of CPU in 300 ms");
    // An event loop's view of the same state: wait_fd wakes for heartbeats (every 20-40 ms).
    int wakeups = wait_fd_wakeups(*loop, 300ms);
    CHECK_MESSAGE(wakeups < 60, wakeups, " wake-ups of wait_fd in 300 ms with a dead letter owed");

    // A retry whose backoff ends while every slot is held: offset 2 fails once (50 ms backoff),
    // offset 3 takes the free slot; from 50 ms on the retry is due but has no slot.
    f.upload("k2", "data");
    f.upload("k3", "data");
    auto third = acquire_n(*loop, 1);
    REQUIRE(third.size() == 1);
    REQUIRE(third[0].item().offset == 2);
    REQUIRE(loop->complete(std::move(third[0]), make_error(Errc::io_error, "flaky")).ok());
    auto fourth = loop->acquire(buf, 0ms);
    REQUIRE(fourth.ok());
    REQUIRE(*fourth == 1);
    REQUIRE(buf[0].item().offset == 3);
    wakeups = wait_fd_wakeups(*loop, 300ms);
    CHECK_MESSAGE(wakeups < 60, wakeups, " wake-ups of wait_fd in 300 ms with a due retry and no free slot");

    // Offsets 0 and 3 complete: the dead letter goes out, offset 2 runs again, all commit.
    REQUIRE(loop->complete(std::move(first[0]), upper(first[0])).ok());
    REQUIRE(loop->complete(std::move(buf[0]), upper(buf[0])).ok());
    auto again = acquire_n(*loop, 1);
    REQUIRE(again.size() == 1);
    CHECK(again[0].item().offset == 2);
    CHECK(again[0].item().attempt == 2);
    REQUIRE(loop->complete(std::move(again[0]), upper(again[0])).ok());
    REQUIRE(loop->service().ok());
    CHECK(loop->stats().dead_lettered == 1);
    CHECK(f.committed() == 4);
    CHECK(f.result_text("k2") == "DATA");
}

TEST_CASE("async worker: tickets dropped after a rebalance made them stale leave wait_fd quiet") {
    // A dropped ticket writes the loop's eventfd (a redelivery may be due). One from before a
    // reassignment is ignored when taken, so nothing else ever clears that write: the loop
    // must drain it, or wait_fd stays readable and its event loop spins.
    Fixture f("async-stale-drop", 2);
    for (int i = 0; i < 8; ++i) f.upload("k" + std::to_string(i), "data");
    auto a = WorkerLoop::open(f.tp.pool, f.cfg("a", 16));
    REQUIRE(a.ok());
    REQUIRE(a->wait_fd().ok());
    auto old_tickets = acquire_n(*a, 8);
    REQUIRE(old_tickets.size() == 8);
    // b joins; a's next rebalance gives b a partition, and every ticket a holds goes stale.
    auto b = WorkerLoop::open(f.tp.pool, f.cfg("b", 16));
    REQUIRE(b.ok());
    for (int i = 0; i < 200 && a->stats().partitions.size() != 1; ++i) {
        REQUIRE(a->service().ok());
        std::this_thread::sleep_for(10ms);
    }
    REQUIRE(a->stats().partitions.size() == 1);
    // a takes its partition's messages again (new tickets, held), so nothing is left to hand out.
    auto held = acquire_n(*a, 8);
    REQUIRE_FALSE(held.empty());
    old_tickets.clear();  // dropped, stale
    const int wakeups = wait_fd_wakeups(*a, 250ms);
    CHECK_MESSAGE(wakeups < 40, wakeups, " wake-ups of wait_fd in 250 ms after stale tickets were dropped");
    for (WorkTicket& t : held) REQUIRE(a->complete(std::move(t), upper(t)).ok());
}

TEST_CASE("async worker: after close() wait_fd never becomes readable: not for new messages, a dropped ticket or the timer") {
    Fixture f("async-close-quiet");
    f.upload("k0", "data");
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 4));
    REQUIRE(loop.ok());
    auto fd = loop->wait_fd();
    REQUIRE(fd.ok());
    auto held = acquire_n(*loop, 1);
    REQUIRE(held.size() == 1);
    REQUIRE(loop->close().ok());
    held.clear();          // dropped after close: its write must not wake anyone
    f.upload("k1", "data");  // a message for a loop that can take nothing
    pollfd p{*fd, POLLIN, 0};
    CHECK(::poll(&p, 1, 150) == 0);  // longer than the timer's keep-alive instant (40 ms)
}

TEST_CASE("async worker: with its count's last message waiting out a backoff, wait_fd does not spin on messages past the count") {
    // Room for one more message (capacity 1) but none may be read (the count is buffered):
    // a Waiter armed at the consumer's position would fire at once for the message sitting
    // there, again after every service(), for the whole backoff.
    Fixture f("async-count-wait");
    for (int i = 0; i < 3; ++i) f.upload("k" + std::to_string(i), "data");
    WorkerConfig c = f.cfg("a", 2);
    c.count = 2;
    c.backoff_initial_ns = 400'000'000;
    c.backoff_max_ns = 400'000'000;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    REQUIRE(loop->wait_fd().ok());
    auto first = acquire_n(*loop, 2);
    REQUIRE(first.size() == 2);
    REQUIRE(loop->complete(std::move(first[0]), upper(first[0])).ok());
    REQUIRE(loop->complete(std::move(first[1]), make_error(Errc::io_error, "flaky")).ok());
    REQUIRE(loop->service().ok());
    const int wakeups = wait_fd_wakeups(*loop, 250ms);
    CHECK_MESSAGE(wakeups < 40, wakeups, " wake-ups of wait_fd in 250 ms with the count reached but for a retry");
    // The retry runs once its backoff is over, and the count ends the loop.
    auto again = acquire_n(*loop, 1);
    REQUIRE(again.size() == 1);
    CHECK(again[0].item().offset == 1);
    REQUIRE(loop->complete(std::move(again[0]), upper(again[0])).ok());
    CHECK(loop->finished());
}

namespace {

/// A fixture whose store has a 256 KiB heap (4 superblocks of 64 KiB), filled with objects
/// of the result's size class until a put of that size fails: the next result put finds the
/// store full.
struct FullStore : Fixture {
    std::vector<FabricUri> fillers;
    static constexpr size_t kResultBytes = 3000;
    explicit FullStore(const char* tag) : Fixture(tag, 1, small_store()) {}
    static StoreConfig small_store() {
        StoreConfig c;
        c.heap_bytes = 256 << 10;
        return c;
    }
    void fill() {
        const std::vector<uint8_t> filler(kResultBytes, 'f');
        for (int i = 0; i < 10000; ++i) {
            auto u = FabricUri::make(tp.pool.name(), "filler", "f" + std::to_string(i)).value();
            auto v = store->put(u, filler);
            if (!v) {
                REQUIRE_MESSAGE(v.code() == Errc::capacity_exceeded, v.error().message);
                REQUIRE(!fillers.empty());
                return;
            }
            fillers.push_back(u);
        }
        FAIL("the store never filled");
    }
    void free_one() {
        REQUIRE(!fillers.empty());
        auto r = store->remove(fillers.back());
        REQUIRE(r.ok());
        REQUIRE(*r);
        fillers.pop_back();
    }
    uint64_t dead_letters() {
        auto dead = dead_letter_count(tp.pool, "t.dlq");
        if (!dead && dead.code() == Errc::not_found) return 0;  // never created: nothing was dead-lettered
        REQUIRE_MESSAGE(dead.ok(), dead.error().message);
        return *dead;
    }
};

std::vector<uint8_t> result_of_size(const WorkTicket& t) {
    std::vector<uint8_t> out(FullStore::kResultBytes, 'r');
    std::copy(t.item().data.begin(), t.item().data.end(), out.begin());
    return out;
}

}  // namespace

TEST_CASE("async worker: a full store past --store-wait hands the message back uncounted, never dead-lettered; work resumes when space returns") {
    FullStore f("async-store-full");
    f.upload("k0", "data 0");
    f.fill();
    WorkerConfig c = f.cfg("a", 1);
    c.max_attempts = 1;  // a counted failed attempt would dead-letter at once
    c.store_wait = 100ms;
    c.store_full_pause = 1s;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    std::vector<std::string> log;
    loop->set_log([&](std::string_view line) { log.emplace_back(line); });
    auto first = acquire_n(*loop, 1);
    REQUIRE(first.size() == 1);
    CHECK(first[0].item().attempt == 1);
    REQUIRE(loop->complete(std::move(first[0]), result_of_size(first[0])).ok());
    CHECK(loop->stats().store_waits == 1);
    CHECK(loop->stats().store_full == 1);
    CHECK(loop->stats().failed_attempts == 0);
    CHECK(loop->stats().dead_lettered == 0);
    CHECK(f.dead_letters() == 0);
    CHECK(f.result_text("k0") == "<absent>");
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 0);
    // The report names the condition and the heap's numbers.
    bool reported = false;
    for (const std::string& line : log)
        if (line.rfind("capacity_exceeded: ", 0) == 0 && line.find("bytes used") != std::string::npos &&
            line.find("not dead-lettered") != std::string::npos)
            reported = true;
    CHECK_MESSAGE(reported, "no capacity_exceeded report in the log");
    // Paused: nothing is handed out at once, even though the message waits.
    std::vector<WorkTicket> none(1);
    auto n = loop->acquire(none, 0ms);
    REQUIRE(n.ok());
    CHECK(*n == 0);
    // Space comes back: the same message, the same attempt (the hand-out was refunded).
    f.free_one();
    std::vector<WorkTicket> again(1);
    auto got = loop->acquire(again, 10s);  // after the pause
    REQUIRE(got.ok());
    REQUIRE(*got == 1);
    CHECK(again[0].item().offset == 0);
    CHECK(again[0].item().attempt == 1);
    REQUIRE(loop->complete(std::move(again[0]), result_of_size(again[0])).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 1);
    CHECK(loop->stats().processed == 1);
    CHECK(loop->stats().dead_lettered == 0);
    CHECK(f.dead_letters() == 0);
    CHECK(f.result_text("k0").rfind("data 0", 0) == 0);
}

namespace {

/// Pins `holder` until the store's pin records run out; returns the views.
std::vector<PinnedView> pin_every_record(MemObjectStore& store, const FabricUri& holder) {
    std::vector<PinnedView> views;
    for (int i = 0; i < 1 << 20; ++i) {
        auto v = store.pin(holder);
        if (!v) {
            REQUIRE_MESSAGE(v.code() == Errc::capacity_exceeded, v.error().message);
            REQUIRE(!views.empty());
            return views;
        }
        REQUIRE(v->has_value());
        views.push_back(std::move(**v));
    }
    FAIL("the pin records never ran out");
    return views;
}

}  // namespace

TEST_CASE("async worker: a store whose pin records live readers hold hands the message back uncounted, never "
          "dead-lettered; work resumes when they are released") {
    Fixture f("pins-held");
    REQUIRE(f.store->put(f.in("holder"), bytes("held")).ok());
    std::vector<PinnedView> held = pin_every_record(*f.store, f.in("holder"));
    f.upload("k0", "data 0");
    WorkerConfig c = f.cfg("a", 1);
    c.max_attempts = 1;  // a counted failed attempt would dead-letter at once
    c.store_full_pause = 200ms;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    std::vector<std::string> log;
    loop->set_log([&](std::string_view line) { log.emplace_back(line); });
    std::vector<WorkTicket> none(1);
    auto n = loop->acquire(none, 50ms);
    REQUIRE_MESSAGE(n.ok(), n.error().message);
    CHECK(*n == 0);
    CHECK(loop->stats().store_full == 1);
    CHECK(loop->stats().failed_attempts == 0);
    CHECK(loop->stats().dead_lettered == 0);
    bool reported = false;
    for (const std::string& line : log)
        if (line.find("pin records") != std::string::npos && line.find("not dead-lettered") != std::string::npos)
            reported = true;
    CHECK_MESSAGE(reported, "no report of the held pin records in the log");
    held.clear();
    std::vector<WorkTicket> again(1);
    auto got = loop->acquire(again, 10s);  // after the pause
    REQUIRE(got.ok());
    REQUIRE(*got == 1);
    CHECK(again[0].item().attempt == 1);
    REQUIRE(loop->complete(std::move(again[0]), upper(again[0])).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 1);
    CHECK(f.result_text("k0") == "DATA 0");
    CHECK(loop->stats().dead_lettered == 0);
}

TEST_CASE("async worker: pin records left by a killed reader are released by the next pin, which goes on") {
    Fixture f("pins-dead");
    REQUIRE(f.store->put(f.in("holder"), bytes("held")).ok());
    const std::string pool_name = f.tp.pool.name();
    const pid_t child = test::fork_child([&] {
        auto p = Pool::open(pool_name);
        if (!p) return 10;
        auto st = MemObjectStore::open(*p);
        if (!st) return 11;
        // Leaked on purpose: the child dies holding every record (no destructor runs).
        auto* views = new std::vector<PinnedView>(pin_every_record(**st, f.in("holder")));
        (void)views;
        ::kill(::getpid(), SIGKILL);
        return 12;
    });
    CHECK(test::wait_child(child) == 128 + SIGKILL);
    f.upload("k0", "data 0");
    WorkerConfig c = f.cfg("a", 1);
    c.max_attempts = 1;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    auto got = acquire_n(*loop, 1);
    REQUIRE(got.size() == 1);
    REQUIRE(loop->complete(std::move(got[0]), upper(got[0])).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.result_text("k0") == "DATA 0");
    CHECK(loop->stats().store_full == 0);
    CHECK(loop->stats().dead_lettered == 0);
}

TEST_CASE("async worker: a dead letter whose DLQ topic the pool has no room to create stays owed, the worker goes "
          "on, and it is sent once room is made") {
    Fixture f("dlq-noroom");
    WorkerConfig c = f.cfg("a", 1);
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    std::vector<std::string> log;
    loop->set_log([&](std::string_view line) { log.emplace_back(line); });
    // The pool filled with regions: no extent left for the DLQ topic.
    std::vector<RegionRef> fillers;
    for (uint64_t chunk : {1ull << 20, 64ull << 10, 4ull << 10}) {
        for (int i = 0; i < 100000; ++i) {
            RegionSpec spec;
            spec.name = "filler-" + std::to_string(fillers.size());
            spec.length = chunk;
            auto r = f.tp.pool.create_region(spec);
            if (!r) {
                REQUIRE_MESSAGE(r.code() == Errc::capacity_exceeded, r.error().message);
                break;
            }
            fillers.push_back(r->ref());
        }
    }
    REQUIRE(!fillers.empty());
    // A notification naming no object: a permanent failure, dead-lettered at once.
    REQUIRE(f.producer->send(bytes(f.in("missing").to_string())).ok());
    std::vector<WorkTicket> none(1);
    auto n = loop->acquire(none, 50ms);
    REQUIRE_MESSAGE(n.ok(), n.error().message);
    CHECK(*n == 0);
    CHECK(loop->stats().dead_lettered == 0);
    CHECK(f.committed() == 0);
    bool reported = false;
    for (const std::string& line : log)
        if (line.rfind("dead letter delayed (the pool has no room for DLQ topic 't.dlq'", 0) == 0) reported = true;
    CHECK_MESSAGE(reported, "no report of the delayed dead letter in the log");
    for (const RegionRef& ref : fillers) REQUIRE(f.tp.pool.remove_region(ref).ok());
    // Retried (once a second) until it lands.
    for (int i = 0; i < 300 && loop->stats().dead_lettered == 0; ++i) {
        auto m = loop->acquire(none, 10ms);
        REQUIRE_MESSAGE(m.ok(), m.error().message);
    }
    CHECK(loop->stats().dead_lettered == 1);
    REQUIRE(loop->service().ok());
    CHECK(f.committed() == 1);
}

TEST_CASE("worker run: a stop asked for while a result put waits for store space ends the wait at once and hands the message back uncounted") {
    FullStore f("run-store-stop");
    f.upload("k0", "data 0");
    f.fill();
    WorkerConfig c = f.cfg("a", 1);
    c.max_attempts = 1;  // a counted failed attempt would dead-letter at once
    c.store_wait = 60s;  // far longer than the test: the stop must be what ends the wait
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    // The stop is asked for when the loop announces the wait (no sleep, no race).
    bool stop = false;
    loop->set_log([&](std::string_view line) {
        if (line.rfind("store full: waiting", 0) == 0) stop = true;
    });
    const uint64_t start = mono_now_ns();
    auto r = loop->run([&](const WorkItem&) -> Result<std::vector<uint8_t>> {
        return std::vector<uint8_t>(FullStore::kResultBytes, 'r');
    }, [&] { return stop; });
    REQUIRE_MESSAGE(r.ok(), r.error().message);
    CHECK(*r == WorkerExit::stopped);
    CHECK(mono_now_ns() - start < 10 * kNsPerSec);
    CHECK(loop->stats().store_waits == 1);
    CHECK(loop->stats().store_full == 1);
    CHECK(loop->stats().failed_attempts == 0);
    CHECK(loop->stats().dead_lettered == 0);
    CHECK(f.dead_letters() == 0);
    CHECK(f.committed() == 0);  // not done: the next owner processes it
}

TEST_CASE("async worker: a result put on a full store waits within the attempt and lands when space returns") {
    FullStore f("async-store-wait");
    f.upload("k0", "data 0");
    f.fill();
    WorkerConfig c = f.cfg("a", 1);
    c.max_attempts = 1;
    c.store_wait = 60s;  // far longer than the test: it must not be what ends the wait
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    // The loop announces the wait before its first pause; space is freed right then, so the
    // retry inside the same attempt finds it (no sleep, no race).
    loop->set_log([&](std::string_view line) {
        if (line.rfind("store full: waiting", 0) == 0) f.free_one();
    });
    auto t = acquire_n(*loop, 1);
    REQUIRE(t.size() == 1);
    REQUIRE(loop->complete(std::move(t[0]), result_of_size(t[0])).ok());
    REQUIRE(loop->service().ok());
    CHECK(loop->stats().store_waits == 1);
    CHECK(loop->stats().store_full == 0);
    CHECK(loop->stats().processed == 1);
    CHECK(loop->stats().failed_attempts == 0);
    CHECK(f.committed() == 1);
    CHECK(f.dead_letters() == 0);
    CHECK(f.result_text("k0").rfind("data 0", 0) == 0);
}

TEST_CASE("async worker: results carry --result-ttl as their expiry") {
    Fixture f("async-result-ttl");
    f.upload("k0", "data 0");
    WorkerConfig c = f.cfg("a", 1);
    c.result_ttl = 1h;
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE(loop.ok());
    auto t = acquire_n(*loop, 1);
    REQUIRE(t.size() == 1);
    REQUIRE(loop->complete(std::move(t[0]), upper(t[0])).ok());
    auto h = f.store->head(f.result("k0"));
    REQUIRE(h.ok());
    REQUIRE(h->has_value());
    const uint64_t now = wall_now_ns();
    CHECK((*h)->expires_wall_ns > now);
    CHECK((*h)->expires_wall_ns <= now + to_ns(c.result_ttl));
}

// ---- delete_input (--delete-input) ---------------------------------------------------------

namespace {

WorkerConfig deleting(const Fixture& f) {
    WorkerConfig c = f.cfg("a", 4);
    c.delete_input = true;
    return c;
}

/// The input's current version, 0 when absent.
uint64_t input_version(Fixture& f, const std::string& key) {
    auto h = f.store->head(f.in(key));
    REQUIRE(h.ok());
    return h->has_value() ? (*h)->version : 0;
}

/// The dead letters' reasons (the DLQ topic read from its start).
std::vector<std::string> dead_letter_reasons(const Pool& pool) {
    std::vector<std::string> out;
    auto c = Consumer::open(pool, "t.dlq", "");
    REQUIRE_MESSAGE(c.ok(), c.error().message);
    REQUIRE(c->assign_all().ok());
    REQUIRE(c->seek(SeekPolicy::Earliest()).ok());
    MessageBatch batch;
    for (;;) {
        auto n = c->poll(batch, 64, Duration::zero());
        REQUIRE(n.ok());
        if (*n == 0) break;
        for (const Message& m : batch) out.emplace_back(m.header(kDlqHeaderReason));
    }
    return out;
}

}  // namespace

TEST_CASE("delete-input: refused at open when another consumer group is registered on the topic") {
    Fixture f("del-refused");
    {
        auto other = Consumer::open(f.tp.pool, "t", "audit");  // registers group 'audit'
        REQUIRE_MESSAGE(other.ok(), other.error().message);
    }
    auto loop = WorkerLoop::open(f.tp.pool, deleting(f));
    REQUIRE(!loop.ok());
    CHECK(loop.code() == Errc::conflict);
    CHECK(loop.error().message.find("'audit'") != std::string::npos);
    CHECK(loop.error().message.find("--delete-input") != std::string::npos);
    // Without --delete-input the same group runs beside it.
    CHECK(WorkerLoop::open(f.tp.pool, f.cfg("a", 4)).ok());
}

TEST_CASE("delete-input: an input is removed only after the commit covering it, and one uploaded again meanwhile is kept") {
    Fixture f("del-commit");
    const uint64_t v0 = f.upload("k0", "data 0");
    const uint64_t v1 = f.upload("k1", "data 1");
    auto loop = WorkerLoop::open(f.tp.pool, deleting(f));
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    auto t = acquire_n(*loop, 2);
    REQUIRE(t.size() == 2);
    REQUIRE(loop->complete(std::move(t[0]), upper(t[0])).ok());
    REQUIRE(loop->complete(std::move(t[1]), upper(t[1])).ok());
    // Results written, offsets not committed yet: both inputs are still there.
    CHECK(f.result_text("k0") == "DATA 0");
    CHECK(input_version(f, "k0") == v0);
    CHECK(input_version(f, "k1") == v1);
    // k1 is uploaded again between its processing and the deletion (a newer version, not processed).
    auto again = f.store->put(f.in("k1"), bytes("data 1, again"));
    REQUIRE(again.ok());
    REQUIRE(loop->service().ok());  // commits 0..1, then deletes at the processed versions
    CHECK(f.committed() == 2);
    CHECK(input_version(f, "k0") == 0);
    CHECK(input_version(f, "k1") == *again);  // the version check kept it
    CHECK(loop->stats().inputs_deleted == 1);
    CHECK(loop->stats().inputs_kept == 1);
    REQUIRE(loop->close().ok());
}

TEST_CASE("delete-input: a redelivery after the input was removed is skipped by its fabric-version, not dead-lettered") {
    Fixture f("del-redeliver");
    const uint64_t v = f.upload("k0", "data 0");
    auto loop = WorkerLoop::open(f.tp.pool, deleting(f));
    REQUIRE(loop.ok());
    auto t = acquire_n(*loop, 1);
    REQUIRE(t.size() == 1);
    REQUIRE(loop->complete(std::move(t[0]), upper(t[0])).ok());
    REQUIRE(loop->service().ok());
    REQUIRE(input_version(f, "k0") == 0);
    // The same notification again (a producer's retry, a replay): its input is gone.
    const std::string vs = std::to_string(v), us = f.in("k0").to_string();
    const MessageHeader h[] = {{kHeaderVersion, vs}};
    REQUIRE(f.producer->send_keyed(bytes("k0"), bytes(us), h).ok());
    std::vector<WorkTicket> none(1);
    for (int i = 0; i < 20 && f.committed() < 2; ++i) {
        auto n = loop->acquire(none, 50ms);
        REQUIRE(n.ok());
        CHECK(*n == 0);  // skipped inside acquire: never handed out
        REQUIRE(loop->service().ok());
    }
    CHECK(f.committed() == 2);
    CHECK(loop->stats().skipped == 1);
    CHECK(loop->stats().dead_lettered == 0);
    CHECK(f.result_text("k0") == "DATA 0");
    auto dead = dead_letter_count(f.tp.pool, "t.dlq");
    CHECK((!dead.ok() || *dead == 0));
}

TEST_CASE("worker: an input that expired before it was processed is dead-lettered with reason expired") {
    Fixture f("del-expired");
    PutOptions o;
    o.ttl = 1ms;
    Producer* producers[] = {&*f.producer};
    auto put = put_and_notify(*f.store, producers, f.in("k0"), bytes("short-lived"), o);
    REQUIRE(put.ok());
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (input_version(f, "k0") != 0 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
    REQUIRE(input_version(f, "k0") == 0);
    // A removed (not expired) input is still "object not found".
    const std::string gone = FabricUri::make(f.tp.pool.name(), "in", "gone").value().to_string();
    REQUIRE(f.producer->send_keyed(bytes("gone"), bytes(gone)).ok());
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 4));
    REQUIRE(loop.ok());
    std::vector<WorkTicket> none(1);
    for (int i = 0; i < 40 && f.committed() < 2; ++i) {
        REQUIRE(loop->acquire(none, 50ms).ok());
        REQUIRE(loop->service().ok());
    }
    CHECK(loop->stats().dead_lettered == 2);
    const auto reasons = dead_letter_reasons(f.tp.pool);
    REQUIRE(reasons.size() == 2);
    CHECK(reasons[0].rfind("expired: ", 0) == 0);
    CHECK(reasons[1].rfind("object not found", 0) == 0);
}

TEST_CASE("worker: an input the store refuses (another pool's URI) is dead-lettered with the store's reason; the next is processed") {
    Fixture f("async-foreign-input");
    // The notification names an object of another pool: the store refuses the key before any
    // lookup, and the reason says which pool the URI names and which pool the store is in.
    const std::string foreign = FabricUri::make("some-other-pool", "in", "doc").value().to_string();
    REQUIRE(f.producer->send_keyed(bytes("doc"), bytes(foreign)).ok());
    f.upload("next", "abc");
    auto loop = WorkerLoop::open(f.tp.pool, f.cfg("a", 2));
    REQUIRE(loop.ok());
    auto tickets = acquire_n(*loop, 1);
    REQUIRE(tickets.size() == 1);
    CHECK(tickets[0].item().uri.to_string() == f.in("next").to_string());
    REQUIRE(loop->complete(std::move(tickets[0]), upper(tickets[0])).ok());
    REQUIRE(loop->service().ok());
    CHECK(f.result_text("next") == "ABC");
    CHECK(loop->stats().dead_lettered == 1);
    const auto reasons = dead_letter_reasons(f.tp.pool);
    REQUIRE(reasons.size() == 1);
    CHECK(reasons[0].rfind("get " + foreign + ": ", 0) == 0);
    CHECK(reasons[0].find("names pool 'some-other-pool'") != std::string::npos);
    CHECK(reasons[0].find("this store is in pool '" + f.tp.pool.name() + "'") != std::string::npos);
    REQUIRE(loop->close().ok());
}

// A notification whose key fits the source topic's slot may not fit the next topic's once the
// result URI and the forward's headers replace the input's. Before, the forward's
// message_too_large ended the worker after the result was written; its successor skipped the
// message (the result being there), forwarded again and ended the same way: no worker got past
// it. It can never fit, so it is dead-lettered, the reason naming both sizes.
TEST_CASE("worker: a notification too large for the next topic's slot is dead-lettered naming both sizes; the worker goes on") {
    Fixture f("async-forward-large", 1, {}, 4096);
    const std::string long_key(600, 'k');
    const uint64_t version = f.upload("doc", "data", &long_key);
    // The same notification again (a producer's retry): its result is there by then, so the
    // hand-out skips it and forwards again, which cannot fit either.
    const std::string us = f.in("doc").to_string(), vs = std::to_string(version);
    const MessageHeader h[] = {{kHeaderVersion, vs}};
    REQUIRE(f.producer->send_keyed(bytes(long_key), bytes(us), h).ok());
    f.upload("short", "abc");
    WorkerConfig c = f.cfg("a", 1);
    c.next_topic = "next";  // created by the worker: the default 512-byte slots
    auto loop = WorkerLoop::open(f.tp.pool, c);
    REQUIRE_MESSAGE(loop.ok(), loop.error().message);
    for (const char* key : {"doc", "short"}) {
        auto t = acquire_n(*loop, 1);
        REQUIRE(t.size() == 1);
        CHECK(t[0].item().uri.key() == key);
        Status st = loop->complete(std::move(t[0]), upper(t[0]));
        REQUIRE_MESSAGE(st.ok(), st.error().message);
    }
    REQUIRE(loop->service().ok());
    CHECK(f.result_text("doc") == "DATA");
    CHECK(f.result_text("short") == "ABC");
    CHECK(loop->stats().forwarded == 1);
    CHECK(loop->stats().dead_lettered == 2);
    CHECK(f.committed() == 3);
    const auto reasons = dead_letter_reasons(f.tp.pool);
    REQUIRE(reasons.size() == 2);
    for (const std::string& r : reasons) {
        CHECK_MESSAGE(r.rfind("forward to the next stage: message of ", 0) == 0, r);
        CHECK_MESSAGE(r.find(" bytes (key 600 + headers ") != std::string::npos, r);
        CHECK_MESSAGE(r.find("exceeds the 480-byte slot payload of topic 'next'") != std::string::npos, r);
    }
    REQUIRE(loop->close().ok());
}

// A member evicted while its handler ran, whose partition's new owner has not
// taken it yet (the evicter's target gives it to a third member), still writes its result (its
// owner word is there, no fence above it). The forward's keep_alive then learns of the
// eviction and gives the message up as lost: not forwarded, its hand-out left counted. With
// one attempt allowed the new owner finds it past its last attempt and dead-letters a message
// whose result exists; the next stage is never notified. Before the forward heartbeated, the
// forward went out and the ack cleared the count (the new owner skipped it and forwarded).
TEST_CASE("async worker: an evicted member that wrote its result still forwards it; the new owner does not dead-letter it") {
    Fixture f("fwd-evicted-put", 2);
    f.make_next_topic(1, 8);
    WorkerConfig ca = f.cfg("a", 1), cb = f.cfg("b", 1);
    for (WorkerConfig* c : {&ca, &cb}) {
        c->max_attempts = 1;
        c->session_timeout_ns = 200'000'000;
        c->next_topic = "next";
    }
    auto a = WorkerLoop::open(f.tp.pool, ca);
    REQUIRE(a.ok());
    auto b = WorkerLoop::open(f.tp.pool, cb);
    REQUIRE(b.ok());
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (a->stats().partitions.size() != 1 || b->stats().partitions.size() != 1) {
        REQUIRE(std::chrono::steady_clock::now() < end);
        REQUIRE(a->service().ok());
        REQUIRE(b->service().ok());
        std::this_thread::sleep_for(5ms);
    }
    // A third member, kept alive by heartbeats alone: the evicter's target gives it the
    // evicted member's partition, which it does not claim until told.
    auto cg = ConsumerGroup::open(f.tp.pool, "t", "g", 2);
    REQUIRE(cg.ok());
    auto cj = cg->join("c");
    REQUIRE(cj.ok());
    REQUIRE(cj->partitions.empty());
    WorkerLoop& own = a->stats().partitions[0] == 0 ? *a : *b;
    WorkerLoop& other = &own == &*a ? *b : *a;
    {  // a notification without fabric-version (a producer of its own): a hand-out is counted before the skip
        REQUIRE(f.store->put(f.in("k0"), bytes("data")).ok());
        const std::string us = f.in("k0").to_string();
        REQUIRE(f.producer->send_to(0, OutgoingMessage{bytes(us), {}, {}}).ok());
    }
    auto running = acquire_n(own, 1);
    REQUIRE(running.size() == 1);
    for (int i = 0; i < 10; ++i) {  // own's handler runs past its session timeout
        std::this_thread::sleep_for(35ms);
        REQUIRE(cg->heartbeat("c").ok());
        REQUIRE(other.service().ok());
    }
    REQUIRE(other.service().ok());  // evicts own (again: done already); partition 0 is c's target, not yet claimed
    REQUIRE(own.complete(std::move(running[0]), upper(running[0])).ok());
    CHECK(f.result_text("k0") == "DATA");
    auto d = TopicManager(f.tp.pool).describe("next");
    REQUIRE(d.ok());
    MESSAGE("forwarded by the evicted member: ", d->partitions[0].next, "; its hand-out still counted: ",
            pool_attempts(f, 0, 0));
    REQUIRE(cg->leave("c").ok());  // c goes: the survivor takes partition 0
    service_until(other, [&] { return other.stats().partitions.size() == 2; });
    (void)acquire_n(other, 1);
    CHECK(other.stats().dead_lettered == 0);
    d = TopicManager(f.tp.pool).describe("next");
    REQUIRE(d.ok());
    CHECK(d->partitions[0].next >= 1);  // the next stage was notified
}
