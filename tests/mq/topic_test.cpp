// SPDX-License-Identifier: MIT
// Topics: config validation, lifecycle, the ring (empty/one/many/full/wrap, 2^32 and 2^63
// positions), keyed ordering, headers, on_full policies, seek, commit/restart, epochs, groups.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/counters.h"
#include "fabric_shm/offset_store.h"
#include "fabric_shm/topic.h"
#include "mq_test_util.h"
#include "pool_impl.h"

using namespace fabric_shm;
using namespace mqtest;

TEST_CASE("topics: invalid configs fail naming the field and its limit") {
    TopicConfig c;
    CHECK(validate_topic_config(c).ok());
    c.num_partitions = 0;
    auto st = validate_topic_config(c);
    CHECK(st.code() == Errc::invalid_argument);
    CHECK(st.error().message.find("num_partitions 0") != std::string::npos);
    CHECK(st.error().message.find("1..64") != std::string::npos);
    c = TopicConfig{};
    c.partition_capacity = 100;
    st = validate_topic_config(c);
    CHECK(st.error().message.find("partition_capacity 100 must be a power of two") != std::string::npos);
    c = TopicConfig{};
    c.partition_stride = 32;
    st = validate_topic_config(c);
    CHECK(st.error().message.find("partition_stride 32") != std::string::npos);
    CHECK(st.error().message.find("envelope") != std::string::npos);

    TestPool tp("cfg", 4 << 20);
    TopicManager mgr(tp.pool);
    TopicConfig big = config(4, 1 << 20, OnFull::block, 4096);
    auto r = mgr.create("big", big);
    CHECK(r.code() == Errc::invalid_argument);
    CHECK(r.error().message.find("needs") != std::string::npos);
    CHECK(mgr.create("bad name!", TopicConfig{}).code() == Errc::invalid_name);
}

TEST_CASE("topics: create, list, describe, duplicate, remove; send never creates") {
    TestPool tp("life");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("events").ok());
    CHECK(mgr.create("events").code() == Errc::already_exists);
    REQUIRE(mgr.create("alpha", config(2, 8)).ok());
    CHECK(mgr.list() == std::vector<std::string>{"alpha", "events"});
    auto d = mgr.describe("events");
    REQUIRE(d.ok());
    CHECK(d->config.num_partitions == 4);
    CHECK(d->config.partition_capacity == 128);
    CHECK(d->config.partition_stride == 512);
    CHECK(d->config.on_full == OnFull::block);
    CHECK(d->partitions.size() == 4);
    CHECK(d->lease_ids.size() == 5);
    const uint64_t inc1 = d->incarnation;
    CHECK(inc1 != 0);

    CHECK(Producer::open(tp.pool, "nope").code() == Errc::not_found);
    CHECK(Consumer::open(tp.pool, "nope", "").code() == Errc::not_found);
    CHECK(mgr.describe("nope").code() == Errc::not_found);
    CHECK(mgr.remove("nope").code() == Errc::not_found);

    auto prod = Producer::open(tp.pool, "events");
    REQUIRE(prod.ok());
    REQUIRE(prod->send("x").ok());
    REQUIRE(mgr.remove("events").ok());
    // The old handle fails closed; the name no longer exists.
    auto late = prod->send("y");
    CHECK(!late.ok());
    CHECK((late.code() == Errc::lease_expired || late.code() == Errc::stale_generation));
    CHECK(mgr.list() == std::vector<std::string>{"alpha"});
    REQUIRE(mgr.create("events").ok());
    auto d2 = mgr.describe("events");
    REQUIRE(d2.ok());
    CHECK(d2->incarnation != inc1);
    CHECK(d2->partitions[0].next == 0);
}

TEST_CASE("producer: every send asks for its partition's lease and the pool's state as they are now") {
    TestPool tp("sendlease");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 8)).ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    REQUIRE(prod->send_to(0, OutgoingMessage{bytes("a"), {}, {}}).ok());

    // Partition 0's lease ran out a second ago (forged in memory: no wall-clock wait).
    auto region = tp.pool.open_region(RegionKind::partition, "t.0");
    REQUIRE(region.ok());
    auto& expires = detail::region_entry(*region).lease.expires_ns;
    const uint64_t leased_until = expires.load(std::memory_order_acquire);
    expires.store(mono_now_ns() - kNsPerSec, std::memory_order_release);  // read by the send's acquire
    auto late = prod->send_to(0, OutgoingMessage{bytes("b"), {}, {}});
    REQUIRE(!late.ok());
    CHECK(late.code() == Errc::lease_expired);
    CHECK_MESSAGE(late.error().message.find("t.0' lease expired") != std::string::npos, late.error().message);
    CHECK(prod->send_to(1, OutgoingMessage{bytes("c"), {}, {}}).ok());  // partition 1 keeps its own lease
    OutgoingMessage batch[1] = {OutgoingMessage{bytes("d"), {}, {}}};
    BatchStatus statuses[1];
    CHECK(prod->send_batch(batch, statuses).code() == Errc::lease_expired);  // checks every partition first

    // Leased again (an expired lease cannot be renewed: the forged expiry is put back), the
    // next send goes through: nothing of the refusal was kept.
    expires.store(leased_until, std::memory_order_release);
    auto again = prod->send_to(0, OutgoingMessage{bytes("e"), {}, {}});
    REQUIRE_MESSAGE(again.ok(), again.error().message);
    CHECK(again->offset == 1);

    // Revoked (forged: a remover stores it and never moves it back), the next send is refused.
    auto& state = detail::region_entry(*region).lease.state;
    const uint32_t active = state.load();
    state.store(layout::kLeaseRevoked, std::memory_order_release);
    auto revoked = prod->send_to(0, OutgoingMessage{bytes("r"), {}, {}});
    REQUIRE(!revoked.ok());
    CHECK(revoked.code() == Errc::lease_expired);
    CHECK_MESSAGE(revoked.error().message.find("lease revoked") != std::string::npos, revoked.error().message);
    state.store(active, std::memory_order_release);

    // A removed pool fails every later send of a handle opened before the removal.
    REQUIRE(Pool::remove(tp.pool.name(), true).ok());
    auto removed = prod->send_to(1, OutgoingMessage{bytes("f"), {}, {}});
    REQUIRE(!removed.ok());
    CHECK(removed.code() == Errc::stale_generation);
    CHECK_MESSAGE(removed.error().message.find("was removed") != std::string::npos, removed.error().message);

    // Closed (any copy of the handle), every send says so first.
    Pool copy = tp.pool;
    copy.close();
    CHECK(prod->send_to(1, OutgoingMessage{bytes("g"), {}, {}}).code() == Errc::closed);
}

TEST_CASE("consumer: every poll asks for its topic's lease and every seek for its partition's, as they are now") {
    TestPool tp("polllease");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 8)).ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    REQUIRE(prod->send_to(0, OutgoingMessage{bytes("a"), {}, {}}).ok());
    auto cons = Consumer::open(tp.pool, "t", "");
    REQUIRE(cons.ok());
    REQUIRE(cons->assign_all().ok());
    MessageBatch b;
    REQUIRE(cons->poll(b, 8, Duration::zero()).value() == 1);

    // The topic's root lease ran out a second ago (forged in memory: no wall-clock wait). The
    // poll is refused and names the region; nothing of the refusal is kept once it is back.
    auto root = tp.pool.open_region(RegionKind::topic, "t");
    REQUIRE(root.ok());
    auto& expires = detail::region_entry(*root).lease.expires_ns;
    const uint64_t leased_until = expires.load(std::memory_order_acquire);
    expires.store(mono_now_ns() - kNsPerSec, std::memory_order_release);  // read by the poll's acquire
    auto late = cons->poll(b, 8, Duration::zero());
    REQUIRE(!late.ok());
    CHECK(late.code() == Errc::lease_expired);
    CHECK_MESSAGE(late.error().message.find("'t' lease expired") != std::string::npos, late.error().message);
    expires.store(leased_until, std::memory_order_release);
    REQUIRE(prod->send_to(1, OutgoingMessage{bytes("b"), {}, {}}).ok());
    auto again = cons->poll(b, 8, Duration::zero());
    REQUIRE_MESSAGE(again.ok(), again.error().message);
    CHECK(*again == 1);

    // A partition's lease: a seek of that partition is refused, the other's goes on.
    auto part = tp.pool.open_region(RegionKind::partition, "t.1");
    REQUIRE(part.ok());
    auto& part_expires = detail::region_entry(*part).lease.expires_ns;
    const uint64_t part_until = part_expires.load(std::memory_order_acquire);
    part_expires.store(mono_now_ns() - kNsPerSec, std::memory_order_release);
    auto refused = cons->seek(1, SeekPolicy::Earliest());
    REQUIRE(!refused.ok());
    CHECK(refused.code() == Errc::lease_expired);
    CHECK_MESSAGE(refused.error().message.find("t.1' lease expired") != std::string::npos, refused.error().message);
    CHECK(cons->seek(0, SeekPolicy::Earliest()).ok());
    part_expires.store(part_until, std::memory_order_release);
    CHECK(cons->seek(1, SeekPolicy::Earliest()).ok());

    // Revoked (forged: a remover stores it and never moves it back), the next poll is refused.
    auto& state = detail::region_entry(*root).lease.state;
    const uint32_t active = state.load();
    state.store(layout::kLeaseRevoked, std::memory_order_release);
    auto revoked = cons->poll(b, 8, Duration::zero());
    REQUIRE(!revoked.ok());
    CHECK(revoked.code() == Errc::lease_expired);
    CHECK_MESSAGE(revoked.error().message.find("lease revoked") != std::string::npos, revoked.error().message);
    state.store(active, std::memory_order_release);
    REQUIRE(cons->poll(b, 8, Duration::zero()).ok());

    // A poll that waits asks again while it waits: a lease that runs out 30 ms into a 10 s wait
    // on an empty topic ends the wait with the refusal, not with the timeout.
    REQUIRE(cons->seek(SeekPolicy::Latest()).ok());
    expires.store(mono_now_ns() + 30 * kNsPerMs, std::memory_order_release);
    const uint64_t waited_from = mono_now_ns();
    auto ran_out = cons->poll(b, 8, std::chrono::seconds(10));
    const uint64_t waited = mono_now_ns() - waited_from;
    expires.store(leased_until, std::memory_order_release);
    REQUIRE(!ran_out.ok());
    CHECK(ran_out.code() == Errc::lease_expired);
    CHECK_MESSAGE(waited < 5 * kNsPerSec, waited);

    // A removed pool fails every later poll of a consumer opened before the removal.
    REQUIRE(Pool::remove(tp.pool.name(), true).ok());
    auto removed = cons->poll(b, 8, Duration::zero());
    REQUIRE(!removed.ok());
    CHECK(removed.code() == Errc::stale_generation);
    CHECK_MESSAGE(removed.error().message.find("was removed") != std::string::npos, removed.error().message);

    // Closed (any copy of the handle), every poll says so first.
    Pool copy = tp.pool;
    copy.close();
    CHECK(cons->poll(b, 8, Duration::zero()).code() == Errc::closed);
}

TEST_CASE("ring: empty, one, many, full and wrap, in order per partition") {
    TestPool tp("ring");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 8, OnFull::block)).ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    auto cons = Consumer::open(tp.pool, "t", "g");
    REQUIRE(cons.ok());
    REQUIRE(cons->assign_all().ok());
    MessageBatch b;
    // empty
    auto n = cons->poll(b, 10, Duration::zero());
    REQUIRE(n.ok());
    CHECK(*n == 0);
    // one
    auto s = prod->send("m0");
    REQUIRE(s.ok());
    CHECK(s->partition == 0);
    CHECK(s->offset == 0);
    n = cons->poll(b, 10, Duration::zero());
    REQUIRE(*n == 1);
    CHECK(b[0].value_str() == "m0");
    CHECK(b[0].offset == 0);
    CHECK(b[0].timestamp_ns > 0);
    REQUIRE(cons->commit().ok());
    // many, across several laps (the group commits so block never triggers)
    uint64_t expect = 1;
    for (int lap = 0; lap < 5; ++lap) {
        for (int i = 0; i < 8; ++i) {
            auto r = prod->send("m" + std::to_string(expect + i));
            REQUIRE_MESSAGE(r.ok(), r.error().message);
        }
        n = cons->poll(b, 100, Duration::zero());
        REQUIRE(n.ok());
        REQUIRE(*n == 8);
        for (const Message& m : b) {
            CHECK(m.offset == expect);
            CHECK(m.value_str() == "m" + std::to_string(expect));
            ++expect;
        }
        REQUIRE(cons->commit().ok());
        if (lap == 0) CHECK(cons->lag(0).value() == 0);
    }
    // full: 8 uncommitted messages fill the partition; reject-like behaviour with a 0 timeout.
    for (int i = 0; i < 8; ++i) REQUIRE(prod->send("f").ok());
    auto d = mgr.describe("t");
    CHECK(d->partitions[0].fill == 8);
    CHECK(d->groups.size() == 1);
    CHECK(d->groups[0].partitions[0].lag == 8);
    CHECK(counter_total(tp.pool, CounterId::mq_messages_published) >= 49);
    CHECK(counter_total(tp.pool, CounterId::mq_messages_consumed) >= 41);
}

TEST_CASE("ring: positions near 2^32 and 2^63 wrap without losing order") {
    for (uint64_t start : {(1ull << 32) - 5, (1ull << 63) - 5, ~0ull - 5}) {
        CAPTURE(start);
        TestPool tp("pos");
        TopicManager mgr(tp.pool);
        REQUIRE(mgr.create("t", config(1, 4, OnFull::block)).ok());
        forge_start(tp.pool, "t", 1, start);
        auto prod = Producer::open(tp.pool, "t");
        REQUIRE(prod.ok());
        auto cons = Consumer::open(tp.pool, "t", "g");
        REQUIRE(cons.ok());
        REQUIRE(cons->assign_all().ok());
        CHECK(cons->position(0).value() == start);
        MessageBatch b;
        uint64_t expect = start;
        for (int round = 0; round < 6; ++round) {
            for (int i = 0; i < 3; ++i) {
                auto r = prod->send("v" + std::to_string(expect + i));
                REQUIRE_MESSAGE(r.ok(), r.error().message);
                CHECK(r->offset == expect + i);
            }
            auto n = cons->poll(b, 10, Duration::zero());
            REQUIRE_MESSAGE(n.ok(), n.error().message);
            REQUIRE(*n == 3);
            for (const Message& m : b) CHECK(m.offset == expect++);
            REQUIRE(cons->commit().ok());
        }
    }
}

TEST_CASE("producer: keyed sends keep per-key order on one partition; headers and key round-trip") {
    TestPool tp("keyed");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(4, 64)).ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    std::map<std::string, uint32_t> part_of;
    for (int i = 0; i < 40; ++i) {
        const std::string key = "k" + std::to_string(i % 5);
        auto r = prod->send_keyed(key, std::to_string(i));
        REQUIRE(r.ok());
        CHECK(r->partition == key_hash(bytes(key)) % 4);
        if (part_of.count(key)) CHECK(part_of[key] == r->partition);
        part_of[key] = r->partition;
    }
    auto kv = prod->send(std::string_view("k1"), std::string_view("1000"));
    REQUIRE(kv.ok());
    CHECK(kv->partition == part_of["k1"]);
    // FNV-1a 64 is the documented hash: pin a known value so it never changes by accident.
    CHECK(key_hash(bytes("a")) == 0xaf63dc4c8601ec8cULL);
    MessageHeader hs[] = {{"uri", "fabric://p/b/k"}, {"version", "7"}};
    OutgoingMessage om{bytes("payload"), bytes("kk"), hs};
    auto r = prod->send_to(3, om);
    REQUIRE(r.ok());
    auto cons = Consumer::open(tp.pool, "t", "");
    REQUIRE(cons.ok());
    const uint32_t all[] = {0, 1, 2, 3};
    REQUIRE(cons->assign(all).ok());
    MessageBatch b;
    auto n = cons->poll(b, 100, Duration::zero());
    REQUIRE(*n == 42);
    std::map<std::string, int> last;
    bool saw_headers = false;
    for (const Message& m : b) {
        if (m.key_str() == "kk") {
            saw_headers = true;
            CHECK(m.header_count() == 2);
            CHECK(m.header("uri") == "fabric://p/b/k");
            CHECK(m.header("version") == "7");
            CHECK(m.value_str() == "payload");
            continue;
        }
        const int v = std::stoi(std::string(m.value_str()));
        const std::string key(m.key_str());
        if (last.count(key)) CHECK(last[key] < v);
        last[key] = v;
    }
    CHECK(saw_headers);
    // Observers never commit.
    CHECK(cons->commit().code() == Errc::invalid_argument);
}

TEST_CASE("producer: a message larger than a slot fails naming both sizes") {
    TestPool tp("large");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4, OnFull::block, 128)).ok());
    auto prod = Producer::open(tp.pool, "t");
    std::string v(97, 'x');
    auto r = prod->send(v);
    CHECK(r.code() == Errc::message_too_large);
    CHECK(r.error().message.find("97 bytes") != std::string::npos);
    CHECK(r.error().message.find("96-byte slot payload") != std::string::npos);
    CHECK(prod->send(std::string(96, 'x')).ok());
    CHECK(max_message_bytes(128) == 96);
    // A header whose value exceeds its 16-bit length is named, one at a time or in a batch;
    // nothing is claimed for it.
    const std::string long_value(UINT16_MAX + 1, 'h');
    const MessageHeader too_long[] = {{"trace-id", long_value}};
    auto h = prod->send(bytes("v"), too_long);
    CHECK(h.code() == Errc::message_too_large);
    CHECK(h.error().message.find("header 'trace-id'") != std::string::npos);
    CHECK(h.error().message.find("65535") != std::string::npos);
    const OutgoingMessage batch[] = {{bytes("v"), {}, too_long}};
    BatchStatus st[1];
    CHECK(send_batch_sent(*prod, batch, st) == 0);
    CHECK(st[0].code == Errc::message_too_large);
    CHECK(st[0].message.find("header 'trace-id'") != std::string::npos);
    CHECK(mgr.describe("t")->partitions[0].next == 1);
}

TEST_CASE("on_full=block: send waits, then fails with back_pressure naming the slowest group and its lag") {
    TestPool tp("block");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4, OnFull::block)).ok());
    REQUIRE(mgr.register_group("t", "fast").ok());
    REQUIRE(mgr.register_group("t", "slow").ok());
    ProducerOptions po;
    po.block_timeout = std::chrono::milliseconds(30);
    auto prod = Producer::open(tp.pool, "t", po);
    for (int i = 0; i < 4; ++i) REQUIRE(prod->send("x").ok());
    auto fast = Consumer::open(tp.pool, "t", "fast");
    REQUIRE(fast->assign_all().ok());
    MessageBatch b;
    REQUIRE(fast->poll(b, 10, Duration::zero()).value() == 4);
    REQUIRE(fast->commit().ok());
    const uint64_t t0 = mono_now_ns();
    auto r = prod->send("y");
    CHECK(mono_now_ns() - t0 >= 25 * kNsPerMs);
    REQUIRE(r.code() == Errc::back_pressure);
    CHECK(r.error().message.find("slowest group 'slow'") != std::string::npos);
    CHECK(r.error().message.find("lag 4") != std::string::npos);
    CHECK(counter_total(tp.pool, CounterId::mq_back_pressure) >= 1);

    // A commit by the slow group, from another thread, releases a blocked send.
    po.block_timeout = std::chrono::seconds(5);
    auto prod2 = Producer::open(tp.pool, "t", po);
    auto slow = Consumer::open(tp.pool, "t", "slow");
    REQUIRE(slow->assign_all().ok());
    auto root = tp.pool.open_region(RegionKind::topic, "t");
    REQUIRE(root.ok());
    const auto* topic_header = reinterpret_cast<const mq::TopicHeader*>(root->data());
    std::atomic<bool> send_parked{false};
    std::thread committer([&] {
        // Barrier: the send registers as a space waiter right before it parks; commit only then,
        // so the commit is what releases it (bounded: a send that never parks fails below).
        const uint64_t give_up = mono_now_ns() + 5 * kNsPerSec;
        while (!(send_parked = topic_header->space_waiters.load(std::memory_order_acquire) != 0) &&
               mono_now_ns() < give_up)
            std::this_thread::yield();
        MessageBatch b2;
        (void)slow->poll(b2, 1, Duration::zero());
        (void)slow->commit();
    });
    auto r2 = prod2->send("z");
    committer.join();
    CHECK(send_parked);
    REQUIRE_MESSAGE(r2.ok(), r2.error().message);
    CHECK(r2->offset == 4);
}

namespace {
/// The topic header of topic "t", to watch and forge blocked producers (space_waiters) and to
/// see a commit's wake (space_seq).
struct SpaceWatch {
    Region root;
    mq::TopicHeader* hdr = nullptr;
    explicit SpaceWatch(const Pool& pool) : root(pool.open_region(RegionKind::topic, "t").value()) {
        hdr = reinterpret_cast<mq::TopicHeader*>(root.data());
    }
    /// What a blocked producer does right before it parks (Producer::Impl::wait_for_space):
    /// stamps the park's instant, then counts itself. unpark() is its return.
    void park() {
        stamp();
        hdr->space_waiters.fetch_add(1, std::memory_order_seq_cst);
    }
    /// A parked producer's next park (every 50 ms while its partition stays full).
    void stamp() { hdr->space_parked_ns.store(mono_coarse_ns(), std::memory_order_relaxed); }
    void unpark() { hdr->space_waiters.fetch_sub(1, std::memory_order_seq_cst); }
    /// Consumes and commits n messages; true when that commit woke the parked producers: a
    /// wake bumps space_seq in the committer's own call, before commit() returns.
    bool commit_woke(Consumer& c, uint32_t n) {
        MessageBatch b;
        REQUIRE(c.poll(b, n, Duration::zero()).value() == n);
        const uint32_t seq = hdr->space_seq.load(std::memory_order_acquire);
        REQUIRE(c.commit().ok());
        return hdr->space_seq.load(std::memory_order_acquire) != seq;
    }
};
}  // namespace

TEST_CASE("on_full=block: a commit wakes blocked producers once it leaves a quarter of the ring free; a smaller one lets them go on after their bounded park") {
    TestPool tp("wakeroom");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64, OnFull::block)).ok());
    REQUIRE(mgr.register_group("t", "g").ok());
    ProducerOptions po;
    po.block_timeout = std::chrono::seconds(5);
    auto prod = Producer::open(tp.pool, "t", po);
    REQUIRE(prod.ok());
    auto cons = Consumer::open(tp.pool, "t", "g");
    REQUIRE(cons->assign_all().ok());
    SpaceWatch watch(tp.pool);
    auto* hdr = watch.hdr;
    auto commit_n = [&](uint32_t n) { return watch.commit_woke(*cons, n); };
    for (int i = 0; i < 64; ++i) REQUIRE(prod->send("x").ok());

    // A producer parked on the full ring, as a send registers itself right before it parks.
    watch.park();
    CHECK_FALSE(commit_n(1));   // 1 of 64 free: no system call, no context switch per message
    CHECK_FALSE(commit_n(14));  // 15 free
    watch.stamp();
    CHECK(commit_n(1));         // 16 free: a quarter of the ring
    watch.stamp();
    CHECK(commit_n(1));         // and every commit past it while one is parked
    watch.unpark();
    CHECK_FALSE(commit_n(1));   // nobody parked: no wake at all

    // A real send parked on the full ring, and a commit that frees one slot: not woken, it
    // re-checks after its bounded park and goes on.
    for (int i = 0; i < 18; ++i) REQUIRE(prod->send("y").ok());
    Result<SendResult> sent = make_error(Errc::busy, "not sent");
    std::thread sender([&] { sent = prod->send("z"); });
    const uint64_t give_up = mono_now_ns() + 5 * kNsPerSec;  // barrier: the send registers, then parks
    while (hdr->space_waiters.load(std::memory_order_acquire) == 0 && mono_now_ns() < give_up)
        std::this_thread::yield();
    CHECK(hdr->space_waiters.load(std::memory_order_acquire) != 0);
    CHECK_FALSE(commit_n(1));
    sender.join();
    REQUIRE_MESSAGE(sent.ok(), sent.error().message);
    CHECK(sent->offset == 64 + 18);
}

TEST_CASE("on_full=block: with two groups only the slowest group's commits wake blocked producers") {
    TestPool tp("wakeslow");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64, OnFull::block)).ok());
    REQUIRE(mgr.register_group("t", "fast").ok());
    REQUIRE(mgr.register_group("t", "slow").ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    for (int i = 0; i < 64; ++i) REQUIRE(prod->send("x").ok());
    auto fast = Consumer::open(tp.pool, "t", "fast");
    auto slow = Consumer::open(tp.pool, "t", "slow");
    REQUIRE(fast->assign_all().ok());
    REQUIRE(slow->assign_all().ok());
    SpaceWatch watch(tp.pool);
    auto* hdr = watch.hdr;
    auto commit_n = [&](Consumer& c, uint32_t n) { return watch.commit_woke(c, n); };
    watch.park();  // a producer parked on the full ring
    CHECK_FALSE(commit_n(*fast, 32));  // the slow group still holds all 64
    CHECK_FALSE(commit_n(*fast, 32));
    CHECK_FALSE(commit_n(*slow, 15));
    watch.stamp();
    CHECK(commit_n(*slow, 1));  // the slowest group leaves a quarter free
    watch.unpark();
    (void)hdr;
}

TEST_CASE("on_full=block: a producer killed while parked leaves its count behind, and commits stop waking for it "
          "once no producer has parked for a while") {
    TestPool tp("wakeleak");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64, OnFull::block)).ok());
    REQUIRE(mgr.register_group("t", "g").ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    for (int i = 0; i < 64; ++i) REQUIRE(prod->send("x").ok());
    auto cons = Consumer::open(tp.pool, "t", "g");
    REQUIRE(cons->assign_all().ok());
    SpaceWatch watch(tp.pool);
    // What a producer killed in its park leaves (it counted itself and never takes it back).
    watch.park();
    // Its last park is now older than any live parked producer's can be (they park again
    // every 50 ms): the count is a leftover, and a commit that leaves room wakes nobody.
    watch.hdr->space_parked_ns.store(mono_coarse_ns() - kNsPerSec);
    CHECK_FALSE(watch.commit_woke(*cons, 16));
    CHECK_FALSE(watch.commit_woke(*cons, 1));
    // A live producer that parks (the ring full again) stamps its park, and is woken as before.
    for (int i = 0; i < 17; ++i) REQUIRE(prod->send("y").ok());
    ProducerOptions po;
    po.block_timeout = std::chrono::seconds(10);
    auto blocked = Producer::open(tp.pool, "t", po);
    REQUIRE(blocked.ok());
    Result<SendResult> sent = make_error(Errc::busy, "not sent");
    std::thread sender([&] { sent = blocked->send("z"); });
    const uint64_t give_up = mono_now_ns() + 10 * kNsPerSec;  // barrier: the send counts itself
    bool counted = false;
    while (!(counted = watch.hdr->space_waiters.load() == 2) && mono_now_ns() < give_up) std::this_thread::yield();
    CHECK(counted);
    CHECK(watch.commit_woke(*cons, 16));
    sender.join();
    REQUIRE_MESSAGE(sent.ok(), sent.error().message);
    CHECK(watch.hdr->space_waiters.load() == 1);  // the leftover alone
}

TEST_CASE("on_full=block with no group keeps the first capacity messages, then back_pressure says so") {
    TestPool tp("nogroup");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4, OnFull::reject)).ok());
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 4; ++i) REQUIRE(prod->send("x").ok());
    auto r = prod->send("y");
    REQUIRE(r.code() == Errc::back_pressure);
    CHECK(r.error().message.find("no group is registered") != std::string::npos);
    CHECK(r.error().message.find("on_full=reject") != std::string::npos);
    // A group registered now starts at the earliest retained offset: nothing submitted is skipped.
    auto c = Consumer::open(tp.pool, "t", "workers");
    REQUIRE(c->assign_all().ok());
    CHECK(c->position(0).value() == 0);
    MessageBatch b;
    CHECK(c->poll(b, 10, Duration::zero()).value() == 4);
    REQUIRE(c->commit().ok());
    CHECK(prod->send("y").ok());
}

TEST_CASE("on_full=block: should_stop ends a wait for space at once with interrupted; nothing is sent") {
    TestPool tp("stopwait");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4, OnFull::block)).ok());
    ProducerOptions po;
    po.block_timeout = std::chrono::seconds(60);  // without the stop request the send would wait a minute
    int asked = 0;
    po.should_stop = [&] { return ++asked >= 2; };  // the second check, after one park: "Ctrl-C" came
    auto prod = Producer::open(tp.pool, "t", po);
    REQUIRE(prod.ok());
    for (int i = 0; i < 4; ++i) REQUIRE(prod->send("x").ok());
    const uint64_t start = mono_now_ns();
    auto r = prod->send("y");
    const uint64_t waited = mono_now_ns() - start;
    REQUIRE(r.code() == Errc::interrupted);
    CHECK(r.error().message.find("interrupted") != std::string::npos);
    CHECK(asked == 2);
    CHECK(waited < 5 * kNsPerSec);  // one park is at most 50 ms; generous for a loaded machine
    auto d = mgr.describe("t");
    REQUIRE(d.ok());
    CHECK(d->partitions[0].next == 4);  // nothing claimed for the interrupted send
}

TEST_CASE("on_full=overwrite: a slow consumer sees the gap, skips to the oldest retained offset, loss counted") {
    TestPool tp("over");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 8, OnFull::overwrite)).ok());
    auto cons = Consumer::open(tp.pool, "t", "g");
    REQUIRE(cons->assign_all().ok());
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 20; ++i) REQUIRE(prod->send("m" + std::to_string(i)).ok());
    MessageBatch b;
    auto n = cons->poll(b, 100, Duration::zero());
    REQUIRE(n.ok());
    CHECK(*n == 8);
    CHECK(b.lost() == 12);
    REQUIRE(b.gaps().size() == 1);
    CHECK(b.gaps()[0].from == 0);
    CHECK(b.gaps()[0].to == 12);
    CHECK(b[0].offset == 12);
    CHECK(b[0].value_str() == "m12");
    CHECK(b[7].value_str() == "m19");
    CHECK(counter_total(tp.pool, CounterId::mq_messages_overwritten) == 12);
}

TEST_CASE("overwrite: a reader never returns a torn message while the slot is rewritten under it") {
    TestPool tp("torn");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 2, OnFull::overwrite, 4096)).ok());
    std::atomic<bool> stop{false};
    std::thread writer([&] {
        auto prod = Producer::open(tp.pool, "t");
        std::string v(4000, 'a');
        for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
            std::fill(v.begin(), v.end(), char('a' + i % 26));
            (void)prod->send(v);
        }
    });
    auto cons = Consumer::open(tp.pool, "t", "");
    REQUIRE(cons->assign_all().ok());
    MessageBatch b;
    uint64_t seen = 0;
    const uint64_t end = mono_now_ns() + 300 * kNsPerMs;
    while (mono_now_ns() < end) {
        auto n = cons->poll(b, 4, std::chrono::milliseconds(1));
        REQUIRE(n.ok());
        for (const Message& m : b) {
            const auto v = m.value_str();
            REQUIRE(v.size() == 4000);
            CHECK(v.find_first_not_of(v[0]) == std::string_view::npos);  // one letter throughout
            ++seen;
        }
    }
    stop = true;
    writer.join();
    CHECK(seen > 0);
}

TEST_CASE("seek: earliest, latest, offset, timestamp, committed with fallback") {
    TestPool tp("seek");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 16)).ok());
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 5; ++i) REQUIRE(prod->send("a" + std::to_string(i)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const uint64_t mid = wall_now_ns();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    for (int i = 5; i < 10; ++i) REQUIRE(prod->send("a" + std::to_string(i)).ok());
    auto c = Consumer::open(tp.pool, "t", "g");
    REQUIRE(c->assign_all().ok());
    CHECK(c->position(0).value() == 0);  // new group: earliest
    REQUIRE(c->seek(SeekPolicy::Rewind(SeekPolicy::Kind::latest)).ok());
    CHECK(c->position(0).value() == 10);
    REQUIRE(c->seek(SeekPolicy::Offset(3)).ok());
    CHECK(c->position(0).value() == 3);
    REQUIRE(c->seek(SeekPolicy::Offset(999)).ok());
    CHECK(c->position(0).value() == 10);  // clamped to the end
    REQUIRE(c->seek(SeekPolicy::Timestamp(mid)).ok());
    CHECK(c->position(0).value() == 5);
    REQUIRE(c->seek(SeekPolicy::Rewind()).ok());
    CHECK(c->position(0).value() == 0);
    REQUIRE(c->commit(0, 7).ok());
    REQUIRE(c->seek(SeekPolicy::Earliest()).ok());  // in a group: the reset policy, commits win
    CHECK(c->position(0).value() == 7);
    REQUIRE(c->seek(SeekPolicy::Latest()).ok());
    CHECK(c->position(0).value() == 7);
    REQUIRE(c->seek(SeekPolicy::Committed()).ok());
    CHECK(c->position(0).value() == 7);
    CHECK(c->commit(0, 11).code() == Errc::invalid_argument);  // beyond the end
    // A group registered with start=latest.
    ConsumerOptions o;
    o.group.start = GroupStart::latest;
    auto late = Consumer::open(tp.pool, "t", "late", o);
    REQUIRE(late->assign_all().ok());
    CHECK(late->position(0).value() == 10);
    // An observer's Committed falls back to its fallback policy.
    auto obs = Consumer::open(tp.pool, "t", "");
    REQUIRE(obs->assign_all().ok());
    REQUIRE(obs->seek(SeekPolicy::Committed(SeekPolicy::Kind::latest)).ok());
    CHECK(obs->position(0).value() == 10);
}


TEST_CASE("seek: a timestamp seek over a partition whose tail was damaged far past its head walks one ring at "
          "most") {
    TestPool tp("seekdamagedtail");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 16)).ok());
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 5; ++i) REQUIRE(prod->send("a" + std::to_string(i)).ok());
    constexpr uint64_t kDamagedTail = uint64_t(1) << 41;
    partition_header(tp.pool, "t", 0)->tail.store(kDamagedTail);
    // In a child: a seek that walked from the head (offset 0) to that tail would run for hours.
    const pid_t kid = test::fork_child([&] {
        auto c = Consumer::open(tp.pool, "t", "");
        if (!c || !c->assign_all()) return 10;
        // A time after every message: the walk finds none and ends at the tail.
        if (!c->seek(SeekPolicy::Timestamp(wall_now_ns() + 3600 * kNsPerSec))) return 11;
        auto pos = c->position(0);
        return pos && *pos == kDamagedTail ? 0 : 12;
    });
    CHECK(test::wait_child(kid, 10000) == 0);
}

TEST_CASE("pause: a paused partition is not read and keeps its position; resume reads on from there; assign keeps it paused while it stays") {
    TestPool tp("pause");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 3; ++i) {
        REQUIRE(prod->send_to(0, OutgoingMessage{ByteView("p0-" + std::to_string(i)), {}, {}}).ok());
        REQUIRE(prod->send_to(1, OutgoingMessage{ByteView("p1-" + std::to_string(i)), {}, {}}).ok());
    }
    auto c = Consumer::open(tp.pool, "t", "g");
    REQUIRE(c->assign_all().ok());
    MessageBatch b;
    REQUIRE(c->poll(b, 1, Duration::zero()).value() == 1);  // reads one of partition 0 or 1
    const uint32_t first = b.begin()->partition, other = 1 - first;
    REQUIRE(c->pause(first).ok());
    CHECK(c->paused(first));
    CHECK_FALSE(c->paused(other));
    // Only the other partition is read, all of it; then nothing, at once and after a wait.
    REQUIRE(c->poll(b, 16, Duration::zero()).value() == 3);
    for (const Message& m : b) CHECK(m.partition == other);
    CHECK(c->poll(b, 16, std::chrono::milliseconds(30)).value() == 0);
    CHECK(c->position(first).value() == 1);
    // A send to the paused partition is not read either; resume reads on from offset 1.
    REQUIRE(prod->send_to(first, OutgoingMessage{ByteView("late"), {}, {}}).ok());
    CHECK(c->poll(b, 16, Duration::zero()).value() == 0);
    REQUIRE(c->resume(first).ok());
    REQUIRE(c->poll(b, 16, Duration::zero()).value() == 3);
    uint64_t expect = 1;
    for (const Message& m : b) {
        CHECK(m.partition == first);
        CHECK(m.offset == expect++);
    }
    CHECK(b[2].value_str() == "late");
    // A partition stays paused while assign() keeps it, and one that leaves forgets it; pausing
    // one that is not assigned names it.
    REQUIRE(c->pause(first).ok());
    REQUIRE(c->pause(other).ok());
    REQUIRE(c->assign(std::vector<uint32_t>{first}).ok());
    CHECK(c->paused(first));
    CHECK_FALSE(c->paused(other));
    REQUIRE(c->assign_all().ok());
    CHECK(c->paused(first));
    CHECK_FALSE(c->paused(other));
    // Every partition paused: a poll waits out its timeout (no spin, no waiter entry taken).
    REQUIRE(c->pause(other).ok());
    const uint64_t t0 = mono_now_ns();
    CHECK(c->poll(b, 16, std::chrono::milliseconds(30)).value() == 0);
    CHECK(mono_now_ns() - t0 >= 25 * kNsPerMs);
    REQUIRE(c->assign(std::vector<uint32_t>{first}).ok());
    auto refused = c->pause(other);
    REQUIRE(refused.code() == Errc::invalid_argument);
    CHECK(refused.error().message.find("partition " + std::to_string(other) + ": not assigned") != std::string::npos);
    CHECK(c->resume(7).code() == Errc::invalid_argument);
}

TEST_CASE("commit and restart: a new consumer of the group resumes at the committed offset") {
    TestPool tp("restart");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 10; ++i) REQUIRE(prod->send(std::to_string(i)).ok());
    {
        auto c = Consumer::open(tp.pool, "t", "g");
        REQUIRE(c->assign_all().ok());
        MessageBatch b;
        REQUIRE(c->poll(b, 4, Duration::zero()).value() == 4);
        REQUIRE(c->commit().ok());
    }
    auto c2 = Consumer::open(tp.pool, "t", "g");
    REQUIRE(c2->assign_all().ok());
    MessageBatch b;
    REQUIRE(c2->poll(b, 100, Duration::zero()).value() == 6);
    MemOffsetStore store(tp.pool);
    auto f = store.fetch("t", c2->incarnation(), "g", 0);
    REQUIRE(f.ok());
    REQUIRE(f->offset.has_value());
    auto d = mgr.describe("t");
    CHECK(d->groups[0].partitions[0].committed + d->groups[0].partitions[1].committed == 4);
}

TEST_CASE("commit and restart: a consumer resuming at a committed offset the ring no longer holds reports the "
          "skipped offsets as lost") {
    TestPool tp("unheld");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4, OnFull::overwrite)).ok());
    {
        auto c = Consumer::open(tp.pool, "t", "g");  // registered at 0, never commits past it
        REQUIRE(c.ok());
    }
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 10; ++i) REQUIRE(prod->send(std::to_string(i)).ok());  // the ring holds 6..9
    auto c = Consumer::open(tp.pool, "t", "g");
    REQUIRE(c->assign_all().ok());
    CHECK(c->position(0).value() == 6);
    MessageBatch b;
    REQUIRE(c->poll(b, 100, Duration::zero()).value() == 4);
    CHECK(b[0].offset == 6);
    CHECK(b.lost() == 6);
    REQUIRE(b.gaps().size() == 1);
    CHECK(b.gaps()[0].from == 0);
    CHECK(b.gaps()[0].to == 6);
    // Reported once: the next poll has nothing lost.
    REQUIRE(c->poll(b, 100, Duration::zero()).value() == 0);
    CHECK(b.lost() == 0);
}

namespace {
/// An overwrite-mode ring of 4 slots, its producer, and a member of group "g" (registered at
/// 0, never committing) holding the one partition under an epoch it can raise, as a
/// reassignment that keeps the partition does: each reassign() goes back to the committed 0.
struct UncommittedReader {
    TestPool tp;
    std::optional<Producer> prod;
    std::optional<Consumer> c;
    uint64_t epoch = 0;
    explicit UncommittedReader(const char* tag) : tp(tag) {
        REQUIRE(TopicManager(tp.pool).create("t", config(1, 4, OnFull::overwrite)).ok());
        auto p = Producer::open(tp.pool, "t");
        REQUIRE(p.ok());
        prod.emplace(std::move(*p));
        auto opened = Consumer::open(tp.pool, "t", "g");
        REQUIRE(opened.ok());
        c.emplace(std::move(*opened));
        reassign();
    }
    void reassign() {
        const uint32_t only = 0;
        c->set_epoch(++epoch);
        REQUIRE(c->assign(std::span(&only, 1)).ok());
    }
    void send(int n) {
        for (int i = 0; i < n; ++i) REQUIRE(prod->send("x").ok());
    }
};
}  // namespace

TEST_CASE("commit and restart: a gap met again after a reassignment under a new epoch is not reported twice; what was "
          "read but not committed before it was overwritten is") {
    UncommittedReader r("unheld-twice");
    auto& c = r.c;
    r.send(12);  // the ring holds 8..11
    const uint64_t counted = counter_total(r.tp.pool, CounterId::mq_messages_overwritten);
    MessageBatch b;
    REQUIRE(c->poll(b, 2, Duration::zero()).value() == 2);  // 8, 9; not committed
    CHECK(b.lost() == 8);
    // A rebalance that keeps the partition: the position goes back to the committed 0.
    r.reassign();
    REQUIRE(c->poll(b, 8, Duration::zero()).value() == 4);  // 8..11 again
    CHECK(b[0].offset == 8);
    CHECK(b.lost() == 0);
    // Two more overwrite 8 and 9, read but never committed; the next reassignment meets
    // 0..9 gone: only 8 and 9 are new.
    r.send(2);
    r.reassign();
    REQUIRE(c->poll(b, 8, Duration::zero()).value() == 4);  // 10..13
    CHECK(b.lost() == 2);
    REQUIRE(b.gaps().size() == 1);
    CHECK(b.gaps()[0].from == 8);
    CHECK(b.gaps()[0].to == 10);
    CHECK(counter_total(r.tp.pool, CounterId::mq_messages_overwritten) == counted + 10);
}

TEST_CASE("commit and restart: after two separate gaps, a reassignment reports only what lies between them") {
    UncommittedReader r("unheld-two-gaps");
    auto& c = r.c;
    MessageBatch b;
    r.send(8);
    REQUIRE(c->poll(b, 64, Duration::zero()).value() == 4);  // 4..7
    CHECK(b.lost() == 4);                                     // 0..3
    r.send(8);
    REQUIRE(c->poll(b, 64, Duration::zero()).value() == 4);  // 12..15
    CHECK(b.lost() == 4);                                     // 8..11
    r.reassign();  // back to the committed 0
    REQUIRE(c->poll(b, 64, Duration::zero()).value() == 4);  // 12..15 again
    CHECK(b.lost() == 4);  // 4..7: read, never committed, overwritten; not 0..3 or 8..11 again
    REQUIRE(b.gaps().size() == 1);
    CHECK(b.gaps()[0].from == 4);
    CHECK(b.gaps()[0].to == 8);
}

TEST_CASE("commit and restart: more separate gaps than the consumer remembers are still never reported twice") {
    UncommittedReader r("unheld-many-gaps");
    auto& c = r.c;
    std::set<uint64_t> reported;
    bool twice = false;
    auto take = [&](MessageBatch& b) {
        for (const Gap& g : b.gaps())
            for (uint64_t o = g.from; o < g.to; ++o) twice |= !reported.insert(o).second;
    };
    MessageBatch b;
    for (int round = 0; round < 10; ++round) {  // 10 gaps of 4: [0,4), [8,12), ... [72,76)
        r.send(8);
        REQUIRE(c->poll(b, 64, Duration::zero()).value() == 4);
        CHECK(b.lost() == 4);
        take(b);
    }
    r.reassign();  // back to the committed 0; the ring holds 76..79
    REQUIRE(c->poll(b, 64, Duration::zero()).value() == 4);
    take(b);
    CHECK_FALSE(twice);
    CHECK(b.lost() > 0);  // what was read but never committed, as far as the consumer remembers
}

TEST_CASE("seek: an overwrite-mode seek reports from where the group's registration started, committed or not") {
    TestPool tp("seek-start");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4, OnFull::overwrite)).ok());
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 20; ++i) REQUIRE(prod->send("x").ok());  // the ring holds 16..19
    auto reading = Consumer::open(tp.pool, "t", "g");            // both start at 16
    auto idle = Consumer::open(tp.pool, "t", "h");
    REQUIRE(reading->assign_all().ok());
    REQUIRE(idle->assign_all().ok());
    MessageBatch b;
    REQUIRE(reading->poll(b, 1, Duration::zero()).value() == 1);  // 16
    REQUIRE(reading->commit().ok());                               // committed 17
    for (int i = 20; i < 28; ++i) REQUIRE(prod->send("x").ok());  // the ring holds 24..27
    REQUIRE(reading->seek(SeekPolicy::Offset(0)).ok());
    REQUIRE(reading->poll(b, 64, Duration::zero()).value() == 4);
    CHECK(b.lost() == 7);  // 17..23: not 0..15, which came before the group
    REQUIRE(idle->seek(SeekPolicy::Offset(0)).ok());
    REQUIRE(idle->poll(b, 64, Duration::zero()).value() == 4);
    CHECK(b.lost() == 8);  // 16..23
}

TEST_CASE("seek: an overwrite-mode seek reports neither what the group committed nor an offset past the end") {
    TestPool tp("seek-committed");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4, OnFull::overwrite)).ok());
    auto prod = Producer::open(tp.pool, "t");
    auto c = Consumer::open(tp.pool, "t", "g");
    REQUIRE(c->assign_all().ok());
    MessageBatch b;
    for (int i = 0; i < 8; ++i) {
        REQUIRE(prod->send("x").ok());
        REQUIRE(c->poll(b, 1, Duration::zero()).value() == 1);
        REQUIRE(c->commit().ok());  // committed through 7
    }
    for (int i = 8; i < 12; ++i) REQUIRE(prod->send("x").ok());  // the ring holds 8..11
    REQUIRE(c->seek(SeekPolicy::Offset(0)).ok());  // a replay from 0: 0..7 were processed
    REQUIRE(c->poll(b, 64, Duration::zero()).value() == 4);
    CHECK(b.lost() == 0);
    REQUIRE(c->seek(SeekPolicy::Offset(UINT64_MAX)).ok());  // no offset there was ever lost
    REQUIRE(c->poll(b, 64, Duration::zero()).ok());
    CHECK(b.lost() == 0);
}

TEST_CASE("seek: an offset overwritten in an overwrite-mode ring is reported lost when the seek moves past it; "
          "one every group released in a blocking ring is not") {
    TestPool tp("seek-unheld");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("ow", config(1, 4, OnFull::overwrite)).ok());
    REQUIRE(mgr.create("bl", config(1, 4, OnFull::block)).ok());
    for (const char* topic : {"ow", "bl"}) {
        CAPTURE(topic);
        auto c = Consumer::open(tp.pool, topic, "g");
        REQUIRE(c->assign_all().ok());
        auto prod = Producer::open(tp.pool, topic);
        MessageBatch b;
        for (int i = 0; i < 10; ++i) {
            REQUIRE(prod->send(std::to_string(i)).ok());
            if (std::string(topic) == "bl") {  // the group keeps up and commits: 0..5 released
                REQUIRE(c->poll(b, 1, Duration::zero()).ok());
                REQUIRE(c->commit().ok());
            }
        }
        REQUIRE(c->seek(SeekPolicy::Offset(2)).ok());
        const uint64_t oldest = c->position(0).value();  // ow: 6 (the ring holds 6..9); bl: the head
        CHECK(oldest > 2);
        if (std::string(topic) == "ow") CHECK(oldest == 6);
        REQUIRE(c->poll(b, 64, Duration::zero()).ok());
        CHECK(b.size() == 10 - oldest);
        CHECK(b.lost() == (std::string(topic) == "ow" ? 4u : 0u));
    }
}

TEST_CASE("epochs: a commit under an epoch lower than the stored one fails with stale_epoch") {
    TestPool tp("epoch");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 16)).ok());
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 4; ++i) REQUIRE(prod->send("x").ok());
    ConsumerOptions o;
    o.epoch = 5;
    auto a = Consumer::open(tp.pool, "t", "g", o);
    REQUIRE(a->assign_all().ok());
    REQUIRE(a->commit(0, 2).ok());
    auto zombie = Consumer::open(tp.pool, "t", "g");  // epoch 0
    REQUIRE(zombie->assign_all().ok());
    auto r = zombie->commit(0, 4);
    CHECK(r.code() == Errc::stale_epoch);
    CHECK(r.error().message.find("epoch 0 < stored epoch 5") != std::string::npos);
    zombie->set_epoch(6);
    CHECK(zombie->commit(0, 4).ok());
    CHECK(a->commit(0, 3).code() == Errc::stale_epoch);
}

TEST_CASE("groups: removed by hand, deregistered when the lease expires (reaper hook), wake blocked producers") {
    TestPool tp("groups");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 4, OnFull::reject)).ok());
    GroupOptions short_lease;
    short_lease.ttl = std::chrono::milliseconds(20);
    REQUIRE(mgr.register_group("t", "brief", short_lease).ok());
    REQUIRE(mgr.register_group("t", "manual").ok());
    CHECK(mgr.describe("t")->groups.size() == 2);
    REQUIRE(mgr.remove_group("t", "manual").ok());
    CHECK(mgr.remove_group("t", "manual").code() == Errc::not_found);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    auto d = mgr.describe("t");
    REQUIRE(d->groups.size() == 1);
    CHECK(d->groups[0].expired);
    ReapReport rep = tp.pool.reap(MonoClock::now());
    CHECK(rep.kind_items >= 1);
    CHECK(mgr.describe("t")->groups.empty());
    // An expired consumer's poll fails closed.
    ConsumerOptions co;
    co.group = short_lease;
    auto c = Consumer::open(tp.pool, "t", "g2", co);
    REQUIRE(c->assign_all().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    MessageBatch b;
    CHECK(c->poll(b, 1, Duration::zero()).code() == Errc::lease_expired);
}

TEST_CASE("batch send and fan-out to several topics") {
    TestPool tp("batch");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("a", config(2, 16)).ok());
    REQUIRE(mgr.create("b", config(1, 16)).ok());
    auto pa = Producer::open(tp.pool, "a");
    auto pb = Producer::open(tp.pool, "b");
    OutgoingMessage msgs[3] = {{bytes("1"), {}, {}}, {bytes("2"), {}, {}}, {bytes("3"), bytes("k"), {}}};
    BatchStatus res[3];
    CHECK(send_batch_sent(*pa, msgs, res) == 3);
    CHECK(res[0].partition != res[1].partition);
    Producer* both[] = {&pa.value(), &pb.value()};
    auto out = send_to_each(both, OutgoingMessage{bytes("fan"), {}, {}});
    REQUIRE(out.size() == 2);
    CHECK(out[0].ok());
    CHECK(out[1].ok());
    CHECK(mgr.describe("b")->partitions[0].next == 1);
}

TEST_CASE("commit: two threads of one process commit to the same group concurrently without busy errors") {
    TestPool tp("threads");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 4; ++i) REQUIRE(prod->send("x").ok());
    std::atomic<int> failures{0};
    auto worker = [&](uint32_t p) {
        auto c = Consumer::open(tp.pool, "t", "g");
        const uint32_t mine[] = {p};
        if (!c || !c->assign(mine).ok()) {
            failures++;
            return;
        }
        for (int i = 0; i < 2000; ++i)
            if (!c->commit(p, uint64_t(i % 2)).ok()) failures++;
    };
    std::thread a(worker, 0), b(worker, 1);
    a.join();
    b.join();
    CHECK(failures.load() == 0);
}

TEST_CASE("send_batch puts consecutive messages for one partition at consecutive offsets") {
    TestPool tp("runs");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(4, 64)).ok());
    auto prod = Producer::open(tp.pool, "t");
    std::vector<std::string> texts;
    for (int i = 0; i < 16; ++i) texts.push_back("m" + std::to_string(i));
    std::vector<OutgoingMessage> msgs;
    for (const std::string& s : texts) msgs.push_back({bytes(s), {}, {}});
    std::vector<BatchStatus> res(msgs.size());
    REQUIRE(send_batch_sent(*prod, msgs, res) == msgs.size());
    // 16 unkeyed messages over 4 partitions: four in a row into each, at offsets 0..3.
    std::map<uint32_t, std::vector<uint64_t>> offsets;
    for (size_t i = 0; i < res.size(); ++i) {
        CHECK(res[i].partition == res[i / 4 * 4].partition);
        offsets[res[i].partition].push_back(res[i].value);
    }
    REQUIRE(offsets.size() == 4);
    for (const auto& [p, offs] : offsets) CHECK(offs == std::vector<uint64_t>{0, 1, 2, 3});
    // Keyed messages keep their partition, in order, between unkeyed ones.
    const OutgoingMessage mixed[] = {{bytes("k1"), bytes("key"), {}}, {bytes("u"), {}, {}},
                                     {bytes("k2"), bytes("key"), {}}};
    BatchStatus mres[3];
    REQUIRE(send_batch_sent(*prod, mixed, mres) == 3);
    CHECK(mres[0].partition == mres[2].partition);
    CHECK(mres[2].value > mres[0].value);
    auto cons = Consumer::open(tp.pool, "t", "");
    REQUIRE(cons->assign_all().ok());
    MessageBatch b;
    std::map<uint32_t, std::vector<std::string>> got;
    for (int i = 0; i < 8; ++i) {
        REQUIRE(cons->poll(b, 64, Duration::zero()).ok());
        for (const Message& m : b) got[m.partition].emplace_back(m.value_str());
    }
    size_t total = 0;
    for (const auto& [p, values] : got) total += values.size();
    CHECK(total == 19);
    CHECK(got[res[0].partition][0] == "m0");
    CHECK(got[res[15].partition][3] == "m15");
}

TEST_CASE("send_batch into a ring with room for part of the batch sends that part, refuses the rest, leaves no claim") {
    TestPool tp("runs-full");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 8, OnFull::reject)).ok());
    REQUIRE(mgr.register_group("t", "slow").ok());  // commits nothing: the ring holds 8
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod->send("first").ok());
    std::vector<OutgoingMessage> msgs(10, OutgoingMessage{bytes("x"), {}, {}});
    std::vector<BatchStatus> res(msgs.size());
    CHECK(send_batch_sent(*prod, msgs, res) == 7);
    CHECK(res[6].value == 7);
    CHECK(res[7].code == Errc::back_pressure);
    CHECK(res[7].message.find("is full") != std::string::npos);
    // The messages after the first refused one are not tried: their partition failed first.
    CHECK(res[8].code == Errc::back_pressure);
    CHECK(res[8].message == "not sent: message 7 to partition 0 failed first (back_pressure)");
    auto d = mgr.describe("t");
    REQUIRE(d.ok());
    CHECK(d->partitions[0].next == 8);
    CHECK(d->partitions[0].claims_in_progress == 0);
    CHECK(d->partitions[0].skipped_claims == 0);
    // A message too large for a slot ends the run before it: those before it are sent.
    REQUIRE(mgr.create("u", config(1, 8)).ok());
    auto pu = Producer::open(tp.pool, "u");
    const std::string huge(1024, 'h');
    const OutgoingMessage with_huge[] = {{bytes("a"), {}, {}}, {bytes("b"), {}, {}}, {bytes(huge), {}, {}},
                                         {bytes("c"), {}, {}}};
    BatchStatus hres[4];
    CHECK(send_batch_sent(*pu, with_huge, hres) == 2);
    CHECK(hres[2].code == Errc::message_too_large);
    CHECK(hres[3].code == Errc::message_too_large);  // after it in its partition: not sent
    CHECK(mgr.describe("u")->partitions[0].next == 2);
    // A call that is wrong as a whole sends nothing and writes no status.
    BatchStatus three[3];
    const Status mismatch = pu->send_batch(with_huge, three);
    CHECK(mismatch.code() == Errc::invalid_argument);
    CHECK(mismatch.error().message.find("3 statuses for 4 messages") != std::string::npos);
    CHECK(mgr.describe("u")->partitions[0].next == 2);
}

TEST_CASE("send_batch with one partition full still sends the messages for the others, in key order") {
    TestPool tp("runs-partial");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 4, OnFull::reject)).ok());
    REQUIRE(mgr.register_group("t", "slow").ok());  // commits nothing: each partition holds 4
    // Two keys in different partitions.
    std::string full_key = "k0", other_key;
    for (int i = 1; other_key.empty(); ++i)
        if (key_hash(bytes("k" + std::to_string(i))) % 2 != key_hash(bytes(full_key)) % 2)
            other_key = "k" + std::to_string(i);
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 4; ++i) REQUIRE(prod->send_keyed(bytes(full_key), bytes("fill")).ok());
    const OutgoingMessage msgs[] = {{bytes("a1"), bytes(full_key), {}}, {bytes("b1"), bytes(other_key), {}},
                                    {bytes("a2"), bytes(full_key), {}}, {bytes("b2"), bytes(other_key), {}}};
    BatchStatus st[4];
    CHECK(send_batch_sent(*prod, msgs, st) == 2);
    CHECK(st[0].code == Errc::back_pressure);
    CHECK(st[1].ok());
    CHECK(st[2].code == Errc::back_pressure);
    CHECK(st[2].message.find("not sent: message 0 to partition") == 0);
    CHECK(st[3].ok());
    CHECK(st[3].value == st[1].value + 1);
    CHECK(st[1].partition == st[3].partition);
    CHECK(st[0].partition == st[2].partition);
    CHECK(st[0].partition != st[1].partition);
}

TEST_CASE("unkeyed sends take the partitions in turn, and a batch's chunks go on from where the sends left off") {
    TestPool tp("rr-turn");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("rr", config(3, 64)).ok());
    auto p = Producer::open(tp.pool, "rr");
    REQUIRE(p.ok());
    for (uint32_t i = 0; i < 7; ++i) {
        auto r = p->send(bytes("u"));
        REQUIRE(r.ok());
        CHECK(r->partition == i % 3);
    }
    // The next turn is partition 1; 3 unkeyed messages over 3 partitions are one chunk each.
    std::vector<OutgoingMessage> unkeyed(3, OutgoingMessage{bytes("u"), {}, {}});
    std::vector<BatchStatus> st(unkeyed.size());
    REQUIRE(send_batch_sent(*p, unkeyed, st) == 3);
    CHECK(st[0].partition == 1);
    CHECK(st[1].partition == 2);
    CHECK(st[2].partition == 0);
    auto r = p->send(bytes("u"));
    REQUIRE(r.ok());
    CHECK(r->partition == 1);
}

TEST_CASE("send_batch deals unkeyed messages away from a partition that failed in the batch") {
    TestPool tp("runs-deal");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("w", config(2, 8, OnFull::reject)).ok());
    REQUIRE(mgr.register_group("w", "slow").ok());  // commits nothing: each partition holds 8
    // 7 unkeyed messages over 2 partitions are dealt in chunks of 3 (3, 3, 1). Whichever one is
    // full, only the chunk dealt to it before it failed is refused; the rest go to the other.
    for (uint32_t full : {0u, 1u}) {
        INFO("full partition " << full);
        auto pw = Producer::open(tp.pool, "w");
        if (full == 0)
            for (int i = 0; i < 8; ++i) REQUIRE(pw->send_to(0, {bytes("fill"), {}, {}}).ok());
        else
            for (int i = 0; i < 8; ++i) REQUIRE(pw->send_to(1, {bytes("fill"), {}, {}}).ok());
        std::vector<OutgoingMessage> unkeyed(7, OutgoingMessage{bytes("u"), {}, {}});
        std::vector<BatchStatus> st(unkeyed.size());
        CHECK(send_batch_sent(*pw, unkeyed, st) >= 4);
        size_t refused = 0;
        for (const BatchStatus& one : st) {
            CHECK(one.partition == (one.ok() ? 1 - full : full));
            refused += one.ok() ? 0 : 1;
        }
        CHECK(refused <= 3);
        // Room again for the next round: the group lets go of everything.
        REQUIRE(mgr.remove_group("w", "slow").ok());
        REQUIRE(mgr.remove("w").ok());
        REQUIRE(mgr.create("w", config(2, 8, OnFull::reject)).ok());
        REQUIRE(mgr.register_group("w", "slow").ok());
    }
}

TEST_CASE("two producers sending batches into one partition at once: each message once, each producer's in order") {
    TestPool tp("runs-race");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64)).ok());
    REQUIRE(mgr.register_group("t", "g").ok());
    constexpr int kProducers = 2, kBatches = 150, kPerBatch = 16;
    std::atomic<int> ready{0};
    std::atomic<int> failures{0};
    std::vector<std::thread> producers;
    for (int id = 0; id < kProducers; ++id)
        producers.emplace_back([&, id] {
            auto prod = Producer::open(tp.pool, "t");
            if (!prod) return void(failures.fetch_add(1));
            std::vector<std::string> texts(kPerBatch);
            std::vector<OutgoingMessage> msgs(kPerBatch);
            std::vector<BatchStatus> res(kPerBatch);
            ready.fetch_add(1);
            while (ready.load() < kProducers) std::this_thread::yield();  // start together
            for (int b = 0, seq = 0; b < kBatches; ++b) {
                for (int i = 0; i < kPerBatch; ++i) {
                    texts[i] = std::to_string(id) + ":" + std::to_string(seq++);
                    msgs[i] = {bytes(texts[i]), {}, {}};
                }
                if (!prod->send_batch(msgs, res)) failures.fetch_add(1);
                for (const BatchStatus& st : res) failures += st.ok() ? 0 : 1;
            }
        });
    auto cons = Consumer::open(tp.pool, "t", "g");
    REQUIRE(cons->assign_all().ok());
    MessageBatch b;
    int next_seq[kProducers] = {};
    int received = 0, out_of_order = 0;
    const uint64_t deadline = mono_now_ns() + 60 * kNsPerSec;
    while (received < kProducers * kBatches * kPerBatch && mono_now_ns() < deadline && failures.load() == 0) {
        auto n = cons->poll(b, 64, std::chrono::milliseconds(10));
        REQUIRE(n.ok());
        for (const Message& m : b) {
            const std::string v(m.value_str());
            const int id = v[0] - '0';
            const int seq = std::stoi(v.substr(2));
            out_of_order += seq != next_seq[id];
            next_seq[id] = seq + 1;
            ++received;
        }
        REQUIRE(cons->commit().ok());
    }
    for (auto& t : producers) t.join();
    CHECK(failures.load() == 0);
    CHECK(received == kProducers * kBatches * kPerBatch);
    CHECK(out_of_order == 0);
    auto d = mgr.describe("t");
    CHECK(d->partitions[0].skipped_claims == 0);
    CHECK(d->partitions[0].next == uint64_t(kProducers * kBatches * kPerBatch));
}

namespace {
/// Topic "t" (2 partitions of 4 slots), a group consumer of both and a producer: the damaged
/// slot tests' starting point.
struct TwoPartitions {
    TestPool tp;
    Result<Consumer> cons = make_error(Errc::not_found, "not opened");
    Result<Producer> pr = make_error(Errc::not_found, "not opened");
    explicit TwoPartitions(const char* tag) : tp(tag) {
        REQUIRE(TopicManager(tp.pool).create("t", config(2, 4)).ok());
        cons = Consumer::open(tp.pool, "t", "g");
        REQUIRE(cons.ok());
        REQUIRE(cons->assign_all().ok());
        pr = Producer::open(tp.pool, "t");
        REQUIRE(pr.ok());
    }
    /// Slot `index` of partition `partition` gets a state no build writes.
    void damage(uint32_t partition, uint32_t index) {
        auto region = tp.pool.open_region(RegionKind::partition, "t." + std::to_string(partition));
        REQUIRE(region.ok());
        auto* slot = reinterpret_cast<mq::SlotHeader*>(region->data() + mq::kSlotsOffset +
                                                       index * config(2, 4).partition_stride);
        slot->state.store(mq::make_slot_word(6, 0, 1));
    }
};
}  // namespace

// A damaged slot fails its own partition closed, never the others: a poll that already took
// messages from another partition returns them (the error comes at the next poll). Returning
// only the error dropped them: the consumer's position had moved past them, and the next
// commit passed messages nobody was given.
TEST_CASE("consumer: a damaged slot in one partition fails that partition alone; messages taken from the others are returned") {
    TwoPartitions f("poll-damaged");
    REQUIRE(f.pr->send_to(0, OutgoingMessage{ByteView("p0-msg"), {}, {}}).ok());
    REQUIRE(f.pr->send_to(0, OutgoingMessage{ByteView("p0-second"), {}, {}}).ok());
    REQUIRE(f.pr->send_to(1, OutgoingMessage{ByteView("p1-msg"), {}, {}}).ok());
    // Partition 0's slot 1 and partition 1's slot 0 get a state no build writes.
    f.damage(0, 1);
    f.damage(1, 0);
    // The first poll reads partition 0 first (then 1): it returns p0-msg, taken before the
    // damaged slot of its own partition and before the other partition's.
    MessageBatch b;
    auto n = f.cons->poll(b, 100, Duration::zero());
    REQUIRE_MESSAGE(n.ok(), n.error().message);
    REQUIRE(*n == 1);
    CHECK(b[0].partition == 0);
    CHECK(b[0].value_str() == "p0-msg");
    // Partition 1 still fails closed, at every poll, and stays where it was.
    for (int k = 0; k < 2; ++k) {
        auto again = f.cons->poll(b, 100, Duration::zero());
        REQUIRE_FALSE(again.ok());
        CHECK(again.code() == Errc::corrupt);
    }
    CHECK(*f.cons->position(0) == 1);
    CHECK(*f.cons->position(1) == 0);
}

// A poll that meets a damaged partition with nothing else in hand returns the error, and the
// next poll starts at another partition: the healthy ones keep flowing around the damaged one.
TEST_CASE("consumer: a damaged partition does not starve the others, whichever the poll meets first") {
    TwoPartitions f("poll-starve");
    REQUIRE(f.pr->send_to(1, OutgoingMessage{ByteView("p1-msg"), {}, {}}).ok());
    f.damage(1, 0);
    // Three messages to partition 0, one at a time; each must come out within three polls.
    MessageBatch b;
    for (int i = 0; i < 3; ++i) {
        const std::string v = "p0-" + std::to_string(i);
        REQUIRE(f.pr->send_to(0, OutgoingMessage{ByteView(v), {}, {}}).ok());
        bool delivered = false;
        int errors = 0;
        for (int k = 0; k < 3 && !delivered; ++k) {
            auto n = f.cons->poll(b, 100, Duration::zero());
            if (!n) {
                CHECK(n.code() == Errc::corrupt);
                ++errors;
                continue;
            }
            for (const Message& m : b) delivered = delivered || (m.partition == 0 && m.value_str() == v);
        }
        CHECK_MESSAGE(delivered, v << " was not delivered in three polls (" << errors << " errors)");
    }
    CHECK(*f.cons->position(0) == 3);
    CHECK(*f.cons->position(1) == 0);
}
