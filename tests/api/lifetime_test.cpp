// SPDX-License-Identifier: MIT
// Pool is a shared handle: everything opened on it keeps the mapping alive, so moving or
// dropping the Pool it came from is safe; close() fails every later call with Errc::closed;
// the mapping and the registration go with the last handle, object or view.
#include <doctest/doctest.h>

#include <fstream>
#include <optional>
#include <string>
#include <utility>

#include "../support/test_support.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/lease.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"

using namespace fabric_shm;

namespace {

std::span<const uint8_t> bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

Pool make_pool(const std::string& name) {
    auto p = Pool::create(PoolOptions{name, 8 << 20});
    REQUIRE_MESSAGE(p.ok(), p.error().message);
    return std::move(p.value());
}

/// Whether `token` is a live registration of the pool (asked through another handle).
bool registered(const Pool& observer, OwnerToken token) {
    auto list = observer.registry().list(MonoClock::now());
    for (const auto& p : list)
        if (p.token == token && !p.claiming) return true;
    return false;
}

FabricUri uri(const std::string& pool, const std::string& key) { return FabricUri::make(pool, "b", key).value(); }

}  // namespace

TEST_CASE("lifetime: a store, producer and consumer keep working after their pool is moved and destroyed") {
    test::PoolCleanup cleanup(test::unique_pool_name("life-move"));
    std::unique_ptr<MemObjectStore> store;
    std::optional<Producer> producer;
    std::optional<Consumer> consumer;
    {
        Pool pool = make_pool(cleanup.name());
        auto s = MemObjectStore::open(pool);
        REQUIRE(s.ok());
        store = std::move(s.value());
        TopicConfig tc;
        tc.num_partitions = 1;
        tc.partition_capacity = 16;
        TopicManager topics(pool);
        REQUIRE(topics.create("t", tc).ok());
        producer.emplace(Producer::open(pool, "t").value());
        consumer.emplace(Consumer::open(pool, "t", "g").value());
        Pool moved = std::move(pool);  // the old design kept &pool: every object now dangled
        CHECK_FALSE(pool.valid());
        CHECK(moved.valid());
    }  // `moved` destroyed: the objects hold the only handles now
    REQUIRE(store->put(uri(cleanup.name(), "k"), bytes("after the pool moved")).ok());
    auto got = store->get(uri(cleanup.name(), "k"));
    REQUIRE(got.ok());
    REQUIRE(got->has_value());
    CHECK(std::string((*got)->data.begin(), (*got)->data.end()) == "after the pool moved");
    REQUIRE(producer->send("m").ok());
    REQUIRE(consumer->assign_all().ok());
    MessageBatch batch;
    auto n = consumer->poll(batch, 8, Duration::zero());
    REQUIRE(n.ok());
    REQUIRE(*n == 1);
    CHECK(batch[0].value_str() == "m");
}

TEST_CASE("lifetime: the mapping and the registration go with the last handle, object or view") {
    test::PoolCleanup cleanup(test::unique_pool_name("life-last"));
    Pool observer = make_pool(cleanup.name());
    const int baseline = test::mappings_of(cleanup.name());  // the observer's own mapping
    std::optional<PinnedView> view;
    OwnerToken token = 0;
    {
        auto opened = Pool::open(cleanup.name());
        REQUIRE(opened.ok());
        Pool pool = std::move(opened.value());
        token = pool.self();
        Pool copy = pool;  // a copy shares the mapping and the registration
        CHECK(copy.self() == token);
        CHECK(test::mappings_of(cleanup.name()) == baseline + 1);
        auto store = MemObjectStore::open(copy);
        REQUIRE(store.ok());
        REQUIRE((*store)->put(uri(cleanup.name(), "k"), bytes("pinned bytes")).ok());
        auto pinned = (*store)->pin(uri(cleanup.name(), "k"));
        REQUIRE(pinned.ok());
        REQUIRE(pinned->has_value());
        view.emplace(std::move(**pinned));
    }  // the pool, its copy and the store are gone; the view is not
    CHECK(registered(observer, token));
    CHECK(test::mappings_of(cleanup.name()) == baseline + 1);
    CHECK(std::string(reinterpret_cast<const char*>(view->bytes().data()), view->bytes().size()) == "pinned bytes");
    CHECK(view->verify().ok());
    view.reset();  // the last holder: unpins, then unmaps and retires the registration
    CHECK_FALSE(registered(observer, token));
    CHECK(test::mappings_of(cleanup.name()) == baseline);
}

TEST_CASE("lifetime: close() makes every later call on the pool and what was opened from it return closed") {
    test::PoolCleanup cleanup(test::unique_pool_name("life-close"));
    Pool pool = make_pool(cleanup.name());
    auto store = MemObjectStore::open(pool);
    REQUIRE(store.ok());
    REQUIRE((*store)->put(uri(cleanup.name(), "k"), bytes("v")).ok());
    auto pinned = (*store)->pin(uri(cleanup.name(), "k"));
    REQUIRE(pinned.ok());
    REQUIRE(pinned->has_value());
    TopicConfig tc;
    tc.num_partitions = 2;
    tc.partition_capacity = 16;
    REQUIRE(TopicManager(pool).create("t", tc).ok());
    auto producer = Producer::open(pool, "t");
    REQUIRE(producer.ok());
    auto consumer = Consumer::open(pool, "t", "g");
    REQUIRE(consumer.ok());
    REQUIRE(consumer->assign_all().ok());
    auto group = ConsumerGroup::open(pool, "t", "g", 2);
    REQUIRE(group.ok());
    REQUIRE(group->claim("m1").ok());
    RenewalManager renewals(pool);
    REQUIRE(renewals.register_lease(pool.pool_lease_id()).ok());
    Pool copy = pool;

    pool.close();
    CHECK(copy.closed());  // closes the pool for every copy
    CHECK(pool.check_open().code() == Errc::closed);
    const auto closed = [](Errc code) { return code == Errc::closed; };
    RegionSpec spec;
    spec.name = "r";
    spec.length = 4096;
    CHECK(closed(copy.create_region(spec).code()));
    CHECK(closed(copy.open_region(RegionKind::test, "r").code()));
    CHECK(closed(copy.renew_lease(copy.pool_lease_id(), MonoClock::now()).code()));
    CHECK(closed(MemObjectStore::open(copy).code()));
    auto put = (*store)->put(uri(cleanup.name(), "k2"), bytes("x"));
    CHECK(closed(put.code()));
    CHECK_MESSAGE(put.error().message.find("pool '" + cleanup.name() + "' was closed") != std::string::npos,
                  put.error().message);
    CHECK(closed((*store)->get(uri(cleanup.name(), "k")).code()));
    CHECK(closed((*store)->pin(uri(cleanup.name(), "k")).code()));
    CHECK(closed(producer->send("m").code()));
    MessageBatch batch;
    CHECK(closed(consumer->poll(batch, 8, Duration::zero()).code()));
    CHECK(closed(consumer->commit().code()));
    CHECK(closed(group->claim("m1").code()));
    CHECK(closed(group->heartbeat("m1").code()));
    CHECK(closed(Producer::open(copy, "t").code()));
    CHECK(renewals.tick(MonoClock::now() + std::chrono::hours(1)).renewed == 0);
    CHECK(copy.regions().empty());
    CHECK(copy.lifecycle() == "closed");
    // A view handed out before the close stays readable: its pin is still recorded.
    CHECK(std::string(reinterpret_cast<const char*>((*pinned)->bytes().data()), (*pinned)->bytes().size()) == "v");
    CHECK((*pinned)->verify().ok());
}
