// SPDX-License-Identifier: MIT
// Time, bytes and the recipe's helpers as a new user meets them: durations are std::chrono
// types and monotonic instants are MonoTime (tests/api/compile_fail shows that bare integers
// do not compile); every call that takes bytes takes a ByteView of whatever the caller holds;
// put_and_notify is the recipe's ingest; RenewalManager registers every lease of the pool's
// objects and reports time-to-expiry; DlqRouter::assign takes the claim's fence token; the
// process registry holds the pool like every other object.
#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../support/test_support.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/ingest.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/lease.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"

using namespace fabric_shm;
using namespace std::chrono_literals;

namespace {

/// A fresh pool; uri(key) names an object in it.
struct TestPool : test::TempPool {
    explicit TestPool(const std::string& tag, Duration ttl = std::chrono::hours(1)) : TempPool(tag, 8 << 20, ttl) {}
    FabricUri uri(const std::string& key) const { return FabricUri::make(name(), "b", key).value(); }
};

std::string text(std::span<const uint8_t> bytes) { return {bytes.begin(), bytes.end()}; }

/// Every message the observer can read on `topic` now.
std::vector<std::string> read_all(const Pool& pool, const std::string& topic, MessageBatch& batch) {
    auto consumer = Consumer::open(pool, topic, "");
    REQUIRE_MESSAGE(consumer.ok(), consumer.error().message);
    REQUIRE(consumer->assign_all().ok());
    REQUIRE(consumer->seek(SeekPolicy::Earliest()).ok());
    auto n = consumer->poll(batch, 64, 0s);
    REQUIRE_MESSAGE(n.ok(), n.error().message);
    std::vector<std::string> out;
    for (const Message& m : batch) out.emplace_back(m.value_str());
    return out;
}

}  // namespace

TEST_CASE("bytes: ByteView views every byte container a caller holds, without a copy") {
    const std::string s = "bytes";
    const std::vector<uint8_t> u(s.begin(), s.end());
    std::vector<std::byte> b;
    for (char c : s) b.push_back(std::byte(c));
    const std::array<uint8_t, 5> a{'b', 'y', 't', 'e', 's'};
    const ByteView views[] = {ByteView(std::span<const uint8_t>(u)), ByteView(std::span<const std::byte>(b)),
                              ByteView(std::string_view(s)), ByteView(s), ByteView(u), ByteView(b), ByteView(a),
                              ByteView("bytes")};
    for (const ByteView& v : views) {
        CHECK(v.size() == 5);
        CHECK(v.str() == "bytes");
    }
    CHECK(ByteView(u).data() == u.data());  // a view, not a copy
    CHECK(ByteView(s).data() == reinterpret_cast<const uint8_t*>(s.data()));
    CHECK(ByteView("").empty());
    const std::span<const uint8_t> back = ByteView(u);  // and back into a span
    CHECK(back.data() == u.data());
}

TEST_CASE("bytes: store put, producer send and job output take the same byte containers") {
    TestPool tp("bytes");
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    const std::string s = "payload";
    const std::vector<std::byte> b(4, std::byte{'x'});
    REQUIRE((*store)->put(tp.uri("string"), s).ok());
    REQUIRE((*store)->put(tp.uri("bytes"), b).ok());
    REQUIRE((*store)->put(tp.uri("literal"), "lit").ok());
    CHECK(text((*store)->get(tp.uri("string")).value()->data) == "payload");
    CHECK(text((*store)->get(tp.uri("bytes")).value()->data) == "xxxx");
    CHECK(text((*store)->get(tp.uri("literal")).value()->data) == "lit");

    REQUIRE(TopicManager(tp.pool).create("t", TopicConfig{1, 16}).ok());
    auto producer = Producer::open(tp.pool, "t");
    REQUIRE(producer.ok());
    REQUIRE(producer->send(b).ok());
    REQUIRE(producer->send_keyed(s, std::vector<uint8_t>{'v'}).ok());
    OutgoingMessage m;
    m.value = std::string_view("batched");
    REQUIRE(producer->send_to(0, m).ok());
    MessageBatch batch;
    CHECK(read_all(tp.pool, "t", batch) == std::vector<std::string>{"xxxx", "v", "batched"});
    CHECK(batch[1].key_str() == "payload");

    MemoryOutputStore outputs;
    REQUIRE(outputs.put(7, s).ok());
    CHECK(text(*outputs.get(7).value()) == "payload");
}

TEST_CASE("put_and_notify: one put, then one notification per producer keyed by the object key with version and put time") {
    TestPool tp("ingest");
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    TopicManager topics(tp.pool);
    REQUIRE(topics.create("thumbs", TopicConfig{2, 16}).ok());
    REQUIRE(topics.create("audit", TopicConfig{1, 16}).ok());
    auto thumbs = Producer::open(tp.pool, "thumbs");
    auto audit = Producer::open(tp.pool, "audit");
    REQUIRE(thumbs.ok());
    REQUIRE(audit.ok());
    Producer* producers[] = {&*thumbs, &*audit};

    REQUIRE((*store)->put(tp.uri("img-042.png"), "old").ok());  // version 1
    const uint64_t before = wall_now_ns();
    const std::vector<uint8_t> image(100, 7);
    auto ingested = put_and_notify(**store, producers, tp.uri("img-042.png"), image);
    const uint64_t after = wall_now_ns();
    REQUIRE_MESSAGE(ingested.ok(), ingested.error().message);
    CHECK(ingested->version == 2);
    CHECK(ingested->put_wall_ns >= before);
    CHECK(ingested->put_wall_ns <= after);
    REQUIRE(ingested->notified.size() == 2);
    CHECK(ingested->all_notified());
    CHECK((*store)->get(tp.uri("img-042.png")).value()->data == image);

    for (const std::string topic : {"thumbs", "audit"}) {
        MessageBatch batch;
        REQUIRE(read_all(tp.pool, topic, batch).size() == 1);
        const Message& m = batch[0];
        CHECK(m.value_str() == tp.uri("img-042.png").to_string());
        CHECK(m.key_str() == "img-042.png");
        CHECK(m.header("fabric-version") == "2");
        CHECK(m.header("fabric-put-ts") == std::to_string(ingested->put_wall_ns));
        CHECK(m.header("fabric-topics") == "thumbs,audit");  // fan-out: every topic told
        CHECK(m.header("fabric-expires-ts").empty());        // no TTL
    }
    // Same key, same partition: a second ingest of the key lands next to the first. With a TTL,
    // the notification says when the object expires (never later than the store's own expiry).
    PutOptions ttl;
    ttl.ttl = std::chrono::seconds(60);
    const uint64_t before_ttl = wall_now_ns();
    auto again = put_and_notify(**store, std::span<Producer* const>(producers, 1), tp.uri("img-042.png"), "v3", ttl);
    REQUIRE(again.ok());
    CHECK(again->notified[0]->partition == ingested->notified[0]->partition);
    MessageBatch batch;
    REQUIRE(read_all(tp.pool, "thumbs", batch).size() == 2);
    const Message& m = batch[1];
    CHECK(m.value_str() == tp.uri("img-042.png").to_string());
    CHECK(m.header("fabric-version") == "3");
    CHECK(m.header("fabric-topics").empty());  // one topic: no fan-out header
    const uint64_t expires = std::stoull(std::string(m.header("fabric-expires-ts")));
    CHECK(expires >= before_ttl + 60ull * kNsPerSec);
    CHECK(expires <= again->put_wall_ns + 60ull * kNsPerSec);
}

TEST_CASE("put_and_notify: a failed put sends nothing; a failed notification stops neither the others nor the object") {
    TestPool tp("ingest-fail");
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    TopicManager topics(tp.pool);
    REQUIRE(topics.create("gone", TopicConfig{1, 16}).ok());
    REQUIRE(topics.create("kept", TopicConfig{1, 16}).ok());
    auto gone = Producer::open(tp.pool, "gone");
    auto kept = Producer::open(tp.pool, "kept");
    REQUIRE(gone.ok());
    REQUIRE(kept.ok());
    Producer* producers[] = {&*gone, &*kept};

    PutOptions only_new;
    only_new.condition = PutCondition::if_absent;
    REQUIRE((*store)->put(tp.uri("k"), "first").ok());
    auto refused = put_and_notify(**store, producers, tp.uri("k"), "second", only_new);
    CHECK(refused.code() == Errc::conflict);
    MessageBatch batch;
    CHECK(read_all(tp.pool, "kept", batch).empty());

    REQUIRE(topics.remove("gone").ok());  // its producer now fails closed
    auto partly = put_and_notify(**store, producers, tp.uri("k"), "third");
    REQUIRE(partly.ok());
    CHECK_FALSE(partly->all_notified());
    CHECK_FALSE(partly->notified[0].ok());
    CHECK(partly->notified[1].ok());
    CHECK(text((*store)->get(tp.uri("k")).value()->data) == "third");
    CHECK(read_all(tp.pool, "kept", batch).size() == 1);
}

TEST_CASE("renewals: register_pool_leases tracks the pool's, its stores' and its topics' leases, and nothing twice") {
    TestPool tp("pool-leases");
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    REQUIRE(TopicManager(tp.pool).create("t", TopicConfig{2, 16}).ok());
    RegionSpec own;
    own.kind = RegionKind::test;
    own.name = "mine";
    own.length = 4096;
    auto private_region = tp.pool.create_region(own);  // a region one process owns
    REQUIRE(private_region.ok());

    RenewalManager renewals(tp.pool);
    auto registered = renewals.register_pool_leases();
    REQUIRE_MESSAGE(registered.ok(), registered.error().message);
    CHECK(renewals.tracked(tp.pool.pool_lease_id()));
    for (uint64_t id : (*store)->lease_ids()) CHECK(renewals.tracked(id));
    auto topic = TopicManager(tp.pool).describe("t");
    REQUIRE(topic.ok());
    for (uint64_t id : topic->lease_ids) CHECK(renewals.tracked(id));
    CHECK_FALSE(renewals.tracked(private_region->lease_id()));
    CHECK(registered->registered == renewals.size());
    CHECK(registered->tracked == renewals.size());

    auto again = renewals.register_pool_leases();  // idempotent: nothing new
    REQUIRE(again.ok());
    CHECK(again->registered == 0);
    CHECK(again->tracked == renewals.size());
    // What the manager tracks, it renews: everything due an hour from now is renewed.
    TickSummary tick = renewals.tick(MonoClock::now() + 59min);
    CHECK(tick.renewed == renewals.size());
    CHECK(tick.failed == 0);
}

TEST_CASE("renewals: remaining reports each lease's time to expiry, zero once it ran out, and an error when revoked") {
    TestPool tp("remaining", 10s);
    RenewalManager renewals(tp.pool);
    const uint64_t pool_lease = tp.pool.pool_lease_id();
    const MonoTime expires = MonoClock::from_ns(tp.pool.lease(pool_lease)->expires_ns);
    CHECK(renewals.remaining(pool_lease, expires - 4s).value() == 4s);
    CHECK(renewals.remaining(pool_lease, expires + 1s).value() == Duration::zero());
    const Duration now_left = renewals.remaining(pool_lease).value();
    CHECK(now_left > 9s);
    CHECK(now_left <= 10s);

    REQUIRE(tp.pool.renew_lease(pool_lease, expires - 1s).ok());  // extends to (expires - 1s) + 10s
    CHECK(renewals.remaining(pool_lease, expires).value() == 9s);

    RegionSpec spec;
    spec.kind = RegionKind::test;
    spec.name = "doomed";
    spec.length = 4096;
    auto region = tp.pool.create_region(spec);
    REQUIRE(region.ok());
    const uint64_t region_lease = region->lease_id();
    REQUIRE(tp.pool.remove_region(region->ref()).ok());
    auto revoked = renewals.remaining(region_lease);
    CHECK_FALSE(revoked.ok());
    CHECK((revoked.code() == Errc::lease_expired || revoked.code() == Errc::stale_generation));
    CHECK(renewals.remaining(uint64_t(12345) << 32 | 999).code() == Errc::not_found);
}

TEST_CASE("durations: a negative timeout is no wait, and any std::chrono unit is accepted") {
    TestPool tp("durations");
    REQUIRE(TopicManager(tp.pool).create("t", TopicConfig{1, 16}).ok());
    auto consumer = Consumer::open(tp.pool, "t", "");
    REQUIRE(consumer.ok());
    REQUIRE(consumer->assign_all().ok());
    MessageBatch batch;
    const MonoTime start = MonoClock::now();
    CHECK(consumer->poll(batch, 1, -5s).value() == 0);
    CHECK(consumer->poll(batch, 1, 0ms).value() == 0);
    CHECK(consumer->poll(batch, 1, 10ms).value() == 0);  // waits about 10 ms
    const Duration took = MonoClock::now() - start;
    CHECK(took >= 10ms);
    CHECK(took < 5s);  // the negative timeout did not wrap into a huge wait
}

TEST_CASE("dlq: assign(claim) takes the claim's fence token, so a fenced-out member's dead letter is refused") {
    TestPool tp("dlq-assign");
    REQUIRE(TopicManager(tp.pool).create("orders", TopicConfig{1, 16}).ok());
    auto producer = Producer::open(tp.pool, "orders");
    REQUIRE(producer.ok());
    REQUIRE(producer->send("poison").ok());
    auto group = ConsumerGroup::open(tp.pool, "orders", "workers", 1);
    REQUIRE(group.ok());
    auto consumer = Consumer::open(tp.pool, "orders", "workers");
    REQUIRE(consumer.ok());
    auto router = DlqRouter::open(tp.pool, "orders", "workers");
    REQUIRE(router.ok());

    auto claim = group->claim("w1");
    REQUIRE(claim.ok());
    REQUIRE(consumer->assign(*claim).ok());
    router->assign(*claim);  // no epoch copied by hand
    MessageBatch batch;
    REQUIRE(consumer->poll(batch, 8, 1s).value() == 1);
    REQUIRE(router->dead_letter(batch[0], 1, "bad input").ok());
    CHECK(router->decided(batch[0]));  // fenced: the decision is recorded for a successor

    // w1 leaves and w2 takes the partition under a newer epoch: w1's claim is stale now.
    REQUIRE(group->leave("w1").ok());
    auto group2 = ConsumerGroup::open(tp.pool, "orders", "workers", 1);
    REQUIRE(group2.ok());
    auto claim2 = group2->claim("w2");
    REQUIRE(claim2.ok());
    REQUIRE(claim2->partitions == std::vector<uint32_t>{0});
    CHECK(claim2->epoch > claim->epoch);
    CHECK(router->dead_letter(batch[0], 1, "late").code() == Errc::stale_epoch);
    router->assign(*claim2);
    CHECK(router->dead_letter(batch[0], 1, "by the new owner").ok());
}

TEST_CASE("registry: a ProcessRegistry holds the pool like every other object, so dropping the Pool keeps it usable") {
    test::TempPool tp("registry-hold", 2 << 20);
    const std::string name = tp.name();
    std::optional<ProcessRegistry> registry = tp.pool.registry();
    const OwnerToken self = tp.pool.self();
    tp.pool = Pool();  // drops the fixture's handle (its segment is removed when the fixture goes)
    CHECK(test::mappings_of(name) > 0);  // the registry's handle keeps the mapping
    auto list = registry->list();
    REQUIRE(list.size() == 1);
    CHECK(list[0].token == self);
    CHECK(registry->liveness(self, MonoClock::now()) == Liveness::maybe_alive);
    registry.reset();
    CHECK(test::mappings_of(name) == 0);  // the last handle unmapped it
}
