// SPDX-License-Identifier: MIT
// DlqRouter: retries then dead letter with headers, permanent errors without retries, and a
// poison message that SIGKILLs every worker still reaching the DLQ (attempts counted at hand-out).
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <map>
#include <string>

#include "../mq/mq_test_util.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/placement_hint.h"
#include "fabric_shm/topic.h"

using namespace fabric_shm;
using namespace mqtest;

namespace {

DlqPolicy quick() {
    DlqPolicy p;
    p.initial_backoff = std::chrono::milliseconds(1);
    p.max_backoff = std::chrono::milliseconds(4);
    p.heartbeat_interval = std::chrono::milliseconds(1);
    return p;
}

/// Reads every message of the DLQ topic (observer).
std::vector<std::pair<std::string, std::map<std::string, std::string>>> read_dlq(const Pool& pool,
                                                                                  const std::string& topic) {
    std::vector<std::pair<std::string, std::map<std::string, std::string>>> out;
    auto c = Consumer::open(pool, topic, "");
    REQUIRE_MESSAGE(c.ok(), c.error().message);
    REQUIRE(c->assign_all().ok());
    REQUIRE(c->seek(SeekPolicy::Earliest()).ok());
    MessageBatch b;
    auto n = c->poll(b, 64, Duration::zero());
    REQUIRE(n.ok());
    for (const auto& m : b) {
        std::map<std::string, std::string> h;
        for (size_t i = 0; i < m.header_count(); ++i) {
            auto x = m.header_at(i);
            h[std::string(x.name)] = std::string(x.value);
        }
        out.emplace_back(std::string(m.value_str()), std::move(h));
    }
    return out;
}

/// Sends one message with `headers` to topic "in" (slots of `stride` bytes) and dead-letters
/// it, as member "w" of group "g", through a router with `policy` into "in.dlq": made by the
/// test with slots of `dlq_stride` bytes, or by the router when 0. The dead letter's value and
/// headers (by name, first occurrence).
std::pair<std::string, std::map<std::string, std::string>> dead_letter_one(
    TestPool& tp, uint32_t stride, uint32_t dlq_stride, std::span<const MessageHeader> headers, const std::string& value,
    const std::string& reason, DlqPolicy policy = quick()) {
    REQUIRE(TopicManager(tp.pool).create("in", config(1, 4, OnFull::block, stride)).ok());
    if (dlq_stride != 0) REQUIRE(create_dead_letter_topic(tp.pool, "in.dlq", config(1, 16, OnFull::block, dlq_stride)).ok());
    auto pr = Producer::open(tp.pool, "in");
    REQUIRE(pr.ok());
    REQUIRE(pr->send(bytes(value), headers).ok());
    auto gc = GroupConsumer::open(tp.pool, "in", "g", "w");
    REQUIRE(gc.ok());
    auto router = DlqRouter::open(tp.pool, "in", "g", policy);
    REQUIRE(router.ok());
    MessageBatch b;
    REQUIRE(gc->poll(b, 8, std::chrono::seconds(1)).ok());
    REQUIRE(b.size() == 1);
    auto sent = router->dead_letter(b[0], 3, reason);
    REQUIRE_MESSAGE(sent.ok(), sent.error().message);
    auto dl = read_dlq(tp.pool, "in.dlq");
    REQUIRE(dl.size() == 1);
    return dl[0];
}

/// Sends `value` to topic "in" and hands it, as member "w" of group "g", to a router whose
/// processing fails with `failure` every time (counted in *calls); how the router ended it.
Handled handle_failing(Pool& pool, const std::string& value, Errc failure, const std::string& reason,
                       int* calls = nullptr) {
    auto pr = Producer::open(pool, "in");
    REQUIRE(pr.ok());
    REQUIRE(pr->send(value).ok());
    auto gc = GroupConsumer::open(pool, "in", "g", "w");
    REQUIRE(gc.ok());
    auto router = DlqRouter::open(pool, "in", "g", quick());
    REQUIRE(router.ok());
    MessageBatch b;
    REQUIRE(gc->poll(b, 8, std::chrono::seconds(1)).ok());
    REQUIRE(b.size() == 1);
    auto handled = router->handle(
        b[0],
        [&](const Message&) {
            if (calls) ++*calls;
            return Status(make_error(failure, reason));
        },
        [&] { return gc->heartbeat(); });
    REQUIRE_MESSAGE(handled.ok(), handled.error().message);
    return *handled;
}

}  // namespace

TEST_CASE("dlq: backoff defaults double from 100 ms and stay well under the session timeout") {
    DlqPolicy p;
    CHECK(p.max_attempts == 3);
    CHECK(p.backoff(1) == std::chrono::milliseconds(100));
    CHECK(p.backoff(2) == std::chrono::milliseconds(200));
    CHECK(p.backoff(10) == std::chrono::seconds(2));
    CHECK(p.backoff(1) + p.backoff(2) < GroupConfig{}.session_timeout);
}

TEST_CASE("dlq: a message failing every attempt is retried in place, then dead-lettered with its headers but a placement hint") {
    TestPool tp("dlq-retry");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("jobs", config(2, 16)).ok());
    auto pr = Producer::open(tp.pool, "jobs");
    REQUIRE(pr.ok());
    const MessageHeader h[] = {{"uri", "fabric://p/b/k"}, {kHeaderPlacement, "0000000100000040"}};
    REQUIRE(pr->send(bytes("bad input"), h).ok());
    GroupConsumerOptions o;
    auto gc = GroupConsumer::open(tp.pool, "jobs", "g", "w", o);
    REQUIRE(gc.ok());
    auto router = DlqRouter::open(tp.pool, "jobs", "g", quick());
    REQUIRE_MESSAGE(router.ok(), router.error().message);
    CHECK(router->dlq_topic() == "jobs.dlq");
    MessageBatch b;
    REQUIRE(gc->poll(b, 8, std::chrono::seconds(1)).ok());
    REQUIRE(b.size() == 1);
    int calls = 0;
    auto handled = router->handle(
        b[0], [&](const Message&) { return Status(make_error(Errc::timeout, "converter took too long (call " +
                                                                 std::to_string(++calls) + ")")); },
        [&] { return gc->heartbeat(); });
    REQUIRE_MESSAGE(handled.ok(), handled.error().message);
    CHECK(handled->dead_lettered);
    CHECK(calls == 3);
    CHECK(handled->attempts == 3);
    REQUIRE(gc->commit(b[0]).ok());  // the caller commits past it

    auto dl = read_dlq(tp.pool, "jobs.dlq");
    REQUIRE(dl.size() == 1);
    CHECK(dl[0].first == "bad input");
    auto& hd = dl[0].second;
    CHECK(hd.at("uri") == "fabric://p/b/k");  // the source headers are kept
    CHECK(hd.count(std::string(kHeaderPlacement)) == 0);  // but the hint: stale by any replay
    CHECK(hd.at(std::string(kDlqHeaderTopic)) == "jobs");
    CHECK(hd.at(std::string(kDlqHeaderGroup)) == "g");
    CHECK(hd.at(std::string(kDlqHeaderPartition)) == std::to_string(b[0].partition));
    CHECK(hd.at(std::string(kDlqHeaderOffset)) == std::to_string(b[0].offset));
    CHECK(hd.at(std::string(kDlqHeaderAttempts)) == "3");
    CHECK(hd.at(std::string(kDlqHeaderReason)).find("call 3") != std::string::npos);
}

TEST_CASE("dlq: a permanent error goes to the DLQ at once; a long reason is truncated to fit the slot") {
    TestPool tp("dlq-perm");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("in", config(1, 16)).ok());
    int calls = 0;
    const Handled handled = handle_failing(tp.pool, std::string(200, 'v'), Errc::not_found, std::string(5000, 'r'), &calls);
    CHECK(handled.dead_lettered);
    CHECK(calls == 1);
    auto dl = read_dlq(tp.pool, "in.dlq");
    REQUIRE(dl.size() == 1);
    CHECK(dl[0].first == std::string(200, 'v'));
    CHECK(dl[0].second.at(std::string(kDlqHeaderReason)).size() <= quick().max_reason_bytes);
    CHECK(dl[0].second.at(std::string(kDlqHeaderAttempts)) == "1");
}

TEST_CASE("dlq: in a DLQ with smaller slots the source headers that fit are kept, and the reason names the others") {
    TestPool tp("dlq-hdrfit");
    // The DLQ made by hand with slots of 512 bytes: the source's 1 KiB slots plus the DLQ's
    // room (dead_letter_topic_config) would hold every header.
    // A second "tenant" does not fit either, but readers take the first, which is kept: the
    // note does not name it.
    const MessageHeader h[] = {{"fabric-version", "7"}, {"trace", std::string(300, 'b')}, {"tenant", "acme"},
                               {"tenant", std::string(300, 't')}};
    const auto [value, hd] = dead_letter_one(tp, 1024, 512, h, std::string(100, 'v'), "converter failed");
    CHECK(value == std::string(100, 'v'));
    CHECK(hd.at("fabric-version") == "7");  // before and after the one too large: kept
    CHECK(hd.at("tenant") == "acme");
    CHECK(hd.count("trace") == 0);
    CHECK(hd.at(std::string(kDlqHeaderReason)) ==
          "converter failed [source headers left out, no room in the DLQ's slot: trace]");
    CHECK(hd.at(std::string(kDlqHeaderAttempts)) == "3");
}

TEST_CASE("dlq: the pipeline's own headers are kept before others, and a name left out is left out in every occurrence") {
    TestPool tp("dlq-hdrprio");
    // Room for one of the two 200-byte headers: the fan-out's topic list, although it comes
    // second (a replay without it could let a --delete-input worker remove an input another
    // topic still needs). "x" twice: readers take the first, so the small second one must not
    // stand in for the large first one.
    const std::string two_hundred(200, 't');
    const MessageHeader h[] = {{"x", std::string(250, 'x')}, {"trace", two_hundred}, {"fabric-topics", two_hundred},
                               {"x", "small"}};
    const auto hd = dead_letter_one(tp, 1024, 512, h, "v", "failed").second;
    CHECK(hd.at("fabric-topics") == two_hundred);
    CHECK(hd.count("trace") == 0);
    CHECK(hd.count("x") == 0);
    CHECK(hd.at(std::string(kDlqHeaderReason)) == "failed [source headers left out, no room in the DLQ's slot: x, trace]");
}

TEST_CASE("dlq: a dead letter's send into a full DLQ waits at most the policy's send_wait, then says back_pressure") {
    TestPool tp("dlq-send-wait");
    REQUIRE(TopicManager(tp.pool).create("in", config(1, 4)).ok());
    REQUIRE(create_dead_letter_topic(tp.pool, "in.dlq", config(1, 16)).ok());
    {
        auto filler = Producer::open(tp.pool, "in.dlq");
        REQUIRE(filler.ok());
        for (int i = 0; i < 16; ++i) REQUIRE(filler->send(bytes("old letter")).ok());  // full: nobody reads it
    }
    auto pr = Producer::open(tp.pool, "in");
    REQUIRE(pr.ok());
    REQUIRE(pr->send(bytes("poison")).ok());
    auto gc = GroupConsumer::open(tp.pool, "in", "g", "w");
    REQUIRE(gc.ok());
    DlqPolicy policy = quick();
    policy.send_wait = std::chrono::milliseconds(50);  // a member with a 200 ms session (WorkerLoop's quarter)
    auto router = DlqRouter::open(tp.pool, "in", "g", policy);
    REQUIRE(router.ok());
    MessageBatch b;
    REQUIRE(gc->poll(b, 8, std::chrono::seconds(1)).ok());
    REQUIRE(b.size() == 1);
    const uint64_t start = mono_now_ns();
    auto sent = router->dead_letter(b[0], 3, "poison");
    const uint64_t took_ms = (mono_now_ns() - start) / 1'000'000;
    REQUIRE_FALSE(sent.ok());
    CHECK(sent.code() == Errc::back_pressure);
    CHECK_MESSAGE(took_ms < 500, "the send waited ", took_ms, " ms (the DLQ producer's old fixed wait was 1 s)");
}

TEST_CASE("dlq: a reason that fills its room keeps about 64 bytes or more and whole UTF-8 characters before the note") {
    TestPool tp("dlq-hdrutf8");
    DlqPolicy p = quick();
    p.max_reason_bytes = 150;
    std::string reason;
    for (int i = 0; i < 100; ++i) reason += "\xc3\xa9";  // 200 bytes of two-byte characters
    const MessageHeader h[] = {{"x-correlation-identifier", std::string(400, 'c')}};
    const auto hd = dead_letter_one(tp, 1024, 512, h, "v", reason, p).second;
    const std::string brief = " [1 source header(s) left out: no room in the DLQ's slot]";
    const std::string& why = hd.at(std::string(kDlqHeaderReason));
    INFO(why);
    REQUIRE(why.size() <= 150);
    REQUIRE(why.size() > brief.size());
    CHECK(why.substr(why.size() - brief.size()) == brief);
    const std::string kept = why.substr(0, why.size() - brief.size());
    CHECK(kept.size() >= 60);
    CHECK(kept.size() % 2 == 0);  // whole characters: no half of one before the note
    CHECK(reason.starts_with(kept));

    // A reason that is not UTF-8 (bytes a converter wrote) is cut where the room ends, not
    // emptied looking for the start of a character.
    TestPool tp2("dlq-hdrlatin1");
    const std::string latin1(200, '\xb0');
    const std::string why2 = dead_letter_one(tp2, 1024, 512, h, "v", latin1, p).second.at(std::string(kDlqHeaderReason));
    CHECK(why2 == latin1.substr(0, 150 - brief.size()) + brief);
}

TEST_CASE("dlq: source headers that would take a message's headers past 65535 bytes are left out, not a send that fails") {
    // 128 KiB slots hold the header; the 16-bit length of a message's headers cannot hold it
    // next to the dead letter's own. The router makes the DLQ.
    TestPool tp("dlq-hdr64k", 96ull << 20);
    const MessageHeader h[] = {{"fabric-version", "3"}, {"blob", std::string(65450, 'b')}};
    const auto hd = dead_letter_one(tp, 128 << 10, 0, h, "v", "too slow").second;
    CHECK(hd.at("fabric-version") == "3");
    CHECK(hd.count("blob") == 0);
    CHECK(hd.at(std::string(kDlqHeaderReason)) == "too slow [source headers left out, no room in the DLQ's slot: blob]");
}

TEST_CASE("dlq: the largest message of a topic with the largest slots is dead-lettered whole") {
    // The DLQ's 256 slots of 1 MiB + room take 257 MiB; the source's two slots 2 MiB.
    TestPool tp("dlq-largest", 272ull << 20);
    TopicManager mgr(tp.pool);
    TopicConfig largest = config(1, 2);
    largest.partition_stride = kMaxPartitionStride;
    REQUIRE(mgr.create("in", largest).ok());
    const std::string value(max_message_bytes(largest.partition_stride), 'v');
    CHECK(handle_failing(tp.pool, value, Errc::invalid_argument, "bad input").dead_lettered);
    auto dl = read_dlq(tp.pool, "in.dlq");
    REQUIRE(dl.size() == 1);
    CHECK(dl[0].first == value);
    CHECK(dl[0].second.at(std::string(kDlqHeaderReason)) == "invalid_argument: bad input");
}

TEST_CASE("dlq: only a dead-letter topic may have slots above the largest a creator asks for, by the DLQ's room") {
    TestPool tp("dlq-stride", 8ull << 20);
    TopicConfig c = config(1, 2);
    c.partition_stride = kMaxPartitionStride + kDeadLetterStrideRoom;
    auto plain = TopicManager(tp.pool).create("plain", c);
    REQUIRE_FALSE(plain.ok());
    CHECK(plain.code() == Errc::invalid_argument);
    CHECK_MESSAGE(plain.error().message.find(std::to_string(kMaxPartitionStride)) != std::string::npos,
                  plain.error().message);
    REQUIRE(create_dead_letter_topic(tp.pool, "in.dlq", c).ok());
    auto d = TopicManager(tp.pool).describe("in.dlq");
    REQUIRE(d.ok());
    CHECK(d->config.partition_stride == c.partition_stride);
    c.partition_stride += 64;
    auto beyond = create_dead_letter_topic(tp.pool, "other.dlq", c);
    REQUIRE_FALSE(beyond.ok());
    CHECK(beyond.code() == Errc::invalid_argument);
}

TEST_CASE("dlq: a DLQ's slots are its source's plus the room, up to the largest a DLQ may have (a DLQ of a DLQ)") {
    TopicConfig source = config(3, 16);
    source.partition_stride = 512;
    const TopicConfig dlq = dead_letter_topic_config(source);
    CHECK(dlq.num_partitions == 3);
    CHECK(dlq.partition_capacity == 256);
    CHECK(dlq.partition_stride == 512 + kDeadLetterStrideRoom);
    CHECK(dlq.on_full == OnFull::block);
    CHECK(validate_topic_config(dlq).ok());
    source.partition_stride = kMaxPartitionStride;
    CHECK(dead_letter_topic_config(source).partition_stride == kMaxPartitionStride + kDeadLetterStrideRoom);
    // The DLQ of a DLQ of a 1 MiB-slot topic: no larger, or nobody could create it.
    const TopicConfig dlq_of_dlq = dead_letter_topic_config(dead_letter_topic_config(source));
    CHECK(dlq_of_dlq.partition_stride == kMaxPartitionStride + kDeadLetterStrideRoom);
}

TEST_CASE("dlq: a poison message that SIGKILLs every worker reaches the DLQ after max attempts") {
    TestPool tp("dlq-poison");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 16)).ok());
    REQUIRE(mgr.register_group("t", "g").ok());
    {
        auto pr = Producer::open(tp.pool, "t");
        REQUIRE(pr.ok());
        REQUIRE(pr->send("ok-1").ok());
        REQUIRE(pr->send("poison").ok());
        REQUIRE(pr->send("ok-2").ok());
    }
    const std::string name = tp.cleanup.name();
    auto worker = [&] {
        auto p = Pool::open(name);
        if (!p) return 90;
        auto gc = GroupConsumer::open(*p, "t", "g", "worker");
        if (!gc) return 91;
        auto router = DlqRouter::open(*p, "t", "g", quick());
        if (!router) return 92;
        MessageBatch b;
        for (int idle = 0; idle < 3;) {
            auto n = gc->poll(b, 8, std::chrono::milliseconds(50));
            if (!n) return 93;
            if (*n == 0) {
                ++idle;
                continue;
            }
            for (const auto& m : b) {
                auto h = router->handle(
                    m,
                    [](const Message& msg) {
                        if (msg.value_str() == "poison") raise(SIGKILL);
                        return Status{};
                    },
                    [&] { return gc->heartbeat(); });
                if (!h) return 94;
                if (!gc->commit(m)) return 95;
            }
        }
        return 0;
    };
    int crashes = 0, exit_code = -1;
    for (int run = 0; run < 6 && exit_code != 0; ++run) {
        exit_code = test::wait_child(test::fork_child(worker));
        if (exit_code == 128 + SIGKILL) ++crashes;
    }
    CHECK(crashes == 3);
    CHECK(exit_code == 0);
    auto dl = read_dlq(tp.pool, "t.dlq");
    REQUIRE(dl.size() == 1);
    CHECK(dl[0].first == "poison");
    CHECK(dl[0].second.at(std::string(kDlqHeaderOffset)) == "1");
    CHECK(dl[0].second.at(std::string(kDlqHeaderAttempts)) == "3");
    CHECK(dl[0].second.at(std::string(kDlqHeaderReason)).find("without an ack") != std::string::npos);
    auto d = describe_consumer_group(tp.pool, "t", "g");
    REQUIRE(d.ok());
    CHECK(d->partitions[0].committed == 3);  // ok-2 processed and committed after the poison
}

TEST_CASE("dlq: a fenced router records its decision; a reset to earliest clears it for the replay") {
    TestPool tp("dlq-reset");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("r", config(1, 16)).ok());
    auto pr = Producer::open(tp.pool, "r");
    REQUIRE(pr.ok());
    REQUIRE(pr->send("bad").ok());
    auto gc = GroupConsumer::open(tp.pool, "r", "g", "w");
    REQUIRE(gc.ok());
    auto router = DlqRouter::open(tp.pool, "r", "g", quick());
    REQUIRE(router.ok());
    MessageBatch b;
    REQUIRE(gc->poll(b, 8, std::chrono::seconds(1)).ok());
    REQUIRE(b.size() == 1);
    CHECK_FALSE(router->decided(b[0]));  // unfenced: no record is read or written
    router->set_epoch(gc->epoch());
    REQUIRE(router->dead_letter(b[0], 1, "bad input").ok());
    CHECK(router->decided(b[0]));  // a later owner would dead-letter it, not process it
    REQUIRE(gc->commit(b[0]).ok());
    REQUIRE(gc->leave().ok());

    REQUIRE(reset_group_offsets(tp.pool, "r", "g", ResetTo::earliest).ok());
    auto gc2 = GroupConsumer::open(tp.pool, "r", "g", "w2");
    REQUIRE(gc2.ok());
    router->set_epoch(gc2->epoch());
    REQUIRE(gc2->poll(b, 8, std::chrono::seconds(1)).ok());
    REQUIRE(b.size() == 1);
    CHECK(b[0].offset == 0);
    CHECK_FALSE(router->decided(b[0]));  // the operator asked for a replay: process it again
    CHECK(read_dlq(tp.pool, "r.dlq").size() == 1);
}

// A member gives its hand-outs back only while the partition is its own: a refund that comes
// after a newer owner fenced the partition (the member paused past its session timeout, or
// resumed after its partition moved) is refused and leaves the new owner's count alone, and a
// refund never touches an entry the window reused for a later offset.
TEST_CASE("dlq: a refund after a newer owner fenced the partition is refused; one for an offset the window moved past changes nothing") {
    TestPool tp("dlq-refund-fence");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("r", config(1, 16)).ok());
    Message m0;
    m0.partition = 0;
    m0.offset = 0;
    Message m8 = m0;
    m8.offset = 8;  // the same window entry as offset 0
    auto a = GroupConsumer::open(tp.pool, "r", "g", "a");
    REQUIRE(a.ok());
    auto ra = DlqRouter::open(tp.pool, "r", "g", quick());
    REQUIRE(ra.ok());
    ra->set_epoch(a->epoch());
    REQUIRE(ra->begin(m0).value() == 1);
    REQUIRE(ra->begin(m0).value() == 2);
    const uint64_t offsets0[] = {0};
    REQUIRE(ra->refund_dropped(0, offsets0).ok());  // still a's: taken back
    auto attempts = [&] {
        auto d = describe_consumer_group(tp.pool, "r", "g");
        REQUIRE(d.ok());
        return d->partitions[0].attempts;
    };
    CHECK(attempts() == 1);

    // a's partition moves to b (a left; b's claim fences it above a's token); b counts a hand-out.
    REQUIRE(a->leave().ok());
    auto b = GroupConsumer::open(tp.pool, "r", "g", "b");
    REQUIRE(b.ok());
    REQUIRE(b->epoch() > a->epoch());
    auto rb = DlqRouter::open(tp.pool, "r", "g", quick());
    REQUIRE(rb.ok());
    rb->set_epoch(b->epoch());
    REQUIRE(rb->begin(m0).value() == 2);

    // a's late refunds (the dropped-ticket one and the full-store one) are refused: b's count stays.
    auto late = ra->refund_dropped(0, offsets0);
    CHECK(late.code() == Errc::stale_epoch);
    CHECK(ra->refund(m0).code() == Errc::stale_epoch);
    CHECK(attempts() == 2);

    // b acks offset 0 and the window reuses its entry for offset 8: a refund of offset 0, even
    // under b's own token, does not touch offset 8's count.
    REQUIRE(rb->ack(m0).ok());
    REQUIRE(rb->begin(m8).value() == 1);
    REQUIRE(rb->refund_dropped(0, offsets0).ok());
    REQUIRE(rb->refund(m0).ok());
    auto d = describe_consumer_group(tp.pool, "r", "g");
    REQUIRE(d.ok());
    CHECK(d->partitions[0].attempt_offset == 8);
    CHECK(d->partitions[0].attempts == 1);
}
