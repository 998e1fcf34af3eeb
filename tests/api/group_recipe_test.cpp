// SPDX-License-Identifier: MIT
// Consumer groups as a new user meets them: one argument order (pool, topic, group) for every
// call, and the recipe's literal sequence claim -> assign -> seek(Earliest) -> poll -> commit
// -> heartbeat: claim joins, the epoch travels with the claim, and seek(Earliest) in a group
// resumes from the committed offset (Rewind replays).
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../support/test_support.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"

using namespace fabric_shm;

namespace {

/// A fresh pool with the topic "orders".
struct TopicPool : test::TempPool {
    TopicPool(const std::string& tag, uint32_t partitions) : TempPool(tag, 8 << 20) {
        TopicConfig tc;
        tc.num_partitions = partitions;
        tc.partition_capacity = 64;
        REQUIRE(TopicManager(pool).create("orders", tc).ok());
    }
};

void send_to(Producer& producer, uint32_t partition, const std::string& value) {
    OutgoingMessage m;
    m.value = {reinterpret_cast<const uint8_t*>(value.data()), value.size()};
    REQUIRE(producer.send_to(partition, m).ok());
}

std::vector<std::string> values(const MessageBatch& batch) {
    std::vector<std::string> out;
    for (const Message& m : batch) out.emplace_back(m.value_str());
    return out;
}

std::vector<std::string> poll_all(Consumer& c) {
    MessageBatch batch;
    auto n = c.poll(batch, 64, Duration::zero());
    REQUIRE_MESSAGE(n.ok(), n.error().message);
    return values(batch);
}

}  // namespace

TEST_CASE("order: ConsumerGroup, Consumer, GroupConsumer and DlqRouter all take (pool, topic, group)") {
    TopicPool tp("order", 1);
    auto group = ConsumerGroup::open(tp.pool, "orders", "billing", 1);
    REQUIRE_MESSAGE(group.ok(), group.error().message);
    CHECK(group->topic() == "orders");
    CHECK(group->group() == "billing");
    auto consumer = Consumer::open(tp.pool, "orders", "billing");
    REQUIRE(consumer.ok());
    auto member = GroupConsumer::open(tp.pool, "orders", "billing", "m1");
    REQUIRE(member.ok());
    CHECK(member->group().topic() == "orders");
    CHECK(member->group().group() == "billing");
    auto router = DlqRouter::open(tp.pool, "orders", "billing");
    REQUIRE_MESSAGE(router.ok(), router.error().message);
    // Exactly one group, named "billing", was registered on topic "orders".
    auto groups = describe_consumer_groups(tp.pool, "orders");
    REQUIRE(groups.ok());
    REQUIRE(groups->size() == 1);
    CHECK((*groups)[0].group == "billing");
    CHECK((*groups)[0].topic == "orders");
    // The swapped order names a topic that does not exist: refused, not a silent wrong group.
    CHECK(ConsumerGroup::open(tp.pool, "billing", "orders", 1).code() == Errc::not_found);
    CHECK(Consumer::open(tp.pool, "billing", "orders").code() == Errc::not_found);
}

TEST_CASE("recipe: claim, assign, seek(Earliest), poll, commit, heartbeat works as written; a restart resumes after the commit") {
    TopicPool tp("recipe", 2);
    auto producer = Producer::open(tp.pool, "orders");
    REQUIRE(producer.ok());
    for (int i = 0; i < 6; ++i) send_to(*producer, uint32_t(i % 2), "m" + std::to_string(i));

    {
        auto group = ConsumerGroup::open(tp.pool, "orders", "workers", 2);
        REQUIRE(group.ok());
        auto consumer = Consumer::open(tp.pool, "orders", "workers");
        REQUIRE(consumer.ok());
        auto claim = group->claim("w1");  // no join first: claim joins
        REQUIRE_MESSAGE(claim.ok(), claim.error().message);
        CHECK(claim->partitions == std::vector<uint32_t>{0, 1});
        REQUIRE(consumer->assign(*claim).ok());  // partitions and epoch together
        REQUIRE(consumer->seek(SeekPolicy::Earliest()).ok());
        auto got = poll_all(*consumer);
        CHECK(got.size() == 6);
        // The commit carries the claim's epoch: no "epoch 0 < stored epoch" refusal.
        auto committed = consumer->commit();
        REQUIRE_MESSAGE(committed.ok(), committed.error().message);
        REQUIRE(group->heartbeat("w1").ok());
        REQUIRE(group->leave("w1").ok());
    }
    for (int i = 6; i < 8; ++i) send_to(*producer, uint32_t(i % 2), "m" + std::to_string(i));

    // The restarted worker runs the same sequence: seek(Earliest) resumes at the commits.
    auto group = ConsumerGroup::open(tp.pool, "orders", "workers", 2);
    REQUIRE(group.ok());
    auto consumer = Consumer::open(tp.pool, "orders", "workers");
    REQUIRE(consumer.ok());
    auto claim = group->claim("w1");
    REQUIRE(claim.ok());
    REQUIRE(consumer->assign(*claim).ok());
    REQUIRE(consumer->seek(SeekPolicy::Earliest()).ok());
    CHECK(consumer->position(0).value() == 3);
    CHECK(consumer->position(1).value() == 3);
    auto again = poll_all(*consumer);
    std::sort(again.begin(), again.end());
    CHECK(again == std::vector<std::string>{"m6", "m7"});
    REQUIRE(consumer->commit().ok());
    // An operator's replay ignores the commits.
    REQUIRE(consumer->seek(SeekPolicy::Rewind()).ok());
    CHECK(consumer->position(0).value() == 0);
    CHECK(poll_all(*consumer).size() == 8);
}

TEST_CASE("recipe: an observer's seek(Earliest) is the oldest offset; assign(claim) needs a group") {
    TopicPool tp("observer", 1);
    auto producer = Producer::open(tp.pool, "orders");
    REQUIRE(producer.ok());
    for (int i = 0; i < 3; ++i) REQUIRE(producer->send("x").ok());
    auto group = ConsumerGroup::open(tp.pool, "orders", "g", 1);
    REQUIRE(group.ok());
    auto claim = group->claim("m");
    REQUIRE(claim.ok());
    auto member = Consumer::open(tp.pool, "orders", "g");
    REQUIRE(member.ok());
    REQUIRE(member->assign(*claim).ok());
    REQUIRE(member->commit(0, 2).ok());
    auto observer = Consumer::open(tp.pool, "orders", "");
    REQUIRE(observer.ok());
    CHECK(observer->assign(*claim).code() == Errc::invalid_argument);
    REQUIRE(observer->assign_all().ok());
    REQUIRE(observer->seek(SeekPolicy::Earliest()).ok());
    CHECK(observer->position(0).value() == 0);
}
