// SPDX-License-Identifier: MIT
// Dead-letter administration (dlq_replay.h): list decodes what DlqRouter wrote; replay sends
// it back as new messages (fresh attempt count) and drops the replayed front run; a range in
// the middle stays; a failing send stops the replay where it failed; purge drops by age or
// all, never what a live group of the dead-letter topic has not read.
#include <doctest/doctest.h>
#include <time.h>

#include <string>
#include <vector>

#include "../mq/mq_test_util.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/dlq_replay.h"
#include "fabric_shm/topic.h"

using namespace fabric_shm;
using namespace mqtest;

namespace {

/// Topic `ev` with group `g` registered; `n` keyed messages sent, read by `g` (committed:
/// what replay sends back is new to the group) and dead-lettered to ev.dlq with reasons.
struct Fixture {
    TestPool tp;
    explicit Fixture(const std::string& tag, TopicConfig cfg = config(2, 16)) : tp(tag) {
        REQUIRE(TopicManager(tp.pool).create("ev", cfg).ok());
        auto c = Consumer::open(tp.pool, "ev", "g");
        REQUIRE(c.ok());
        consumer.emplace(std::move(c.value()));
        REQUIRE(consumer->assign_all().ok());
        auto r = DlqRouter::open(tp.pool, "ev", "g");
        REQUIRE(r.ok());
        router.emplace(std::move(r.value()));
    }
    /// Sends keys k<first>..k<first+n-1>, reads them as group g, commits, dead-letters each.
    void dead_letter(int first, int n) {
        auto prod = Producer::open(tp.pool, "ev");
        REQUIRE(prod.ok());
        for (int i = first; i < first + n; ++i) {
            const std::string key = "k" + std::to_string(i), value = "fabric://p/uploads/" + key,
                              version = std::to_string(100 + i);
            const MessageHeader h[] = {{"fabric-version", version}};
            REQUIRE(prod->send_keyed(bytes(key), bytes(value), h).ok());
        }
        MessageBatch b;
        int got = 0;
        while (got < n) {
            auto k = consumer->poll(b, 64, std::chrono::seconds(1));
            REQUIRE(k.ok());
            REQUIRE(*k > 0);
            for (const Message& m : b) {
                const int i = std::stoi(std::string(m.key_str().substr(1)));
                REQUIRE(router->dead_letter(m, 3, "exit status " + std::to_string(i)).ok());
                ++got;
            }
            REQUIRE(consumer->commit().ok());
        }
    }
    /// Messages of `ev` the group has not committed yet (re-reads after a replay).
    std::vector<std::pair<std::string, std::string>> new_messages() {
        std::vector<std::pair<std::string, std::string>> out;
        MessageBatch b;
        for (;;) {
            auto k = consumer->poll(b, 64, Duration::zero());
            REQUIRE(k.ok());
            if (*k == 0) break;
            for (const Message& m : b) out.emplace_back(std::string(m.key_str()), std::string(m.header(kHeaderReplays)));
        }
        return out;
    }
    std::optional<Consumer> consumer;
    std::optional<DlqRouter> router;
};

uint64_t retained(const Pool& pool) { return dead_letter_count(pool, "ev.dlq").value(); }

}  // namespace

TEST_CASE("dlq replay: list decodes the original key, value and headers and the dlq.* coordinates") {
    Fixture f("dlqr-ls");
    f.dead_letter(0, 5);
    auto all = list_dead_letters(f.tp.pool, "ev.dlq");
    REQUIRE(all.ok());
    REQUIRE(all->size() == 5);
    for (const DeadLetter& d : *all) {
        const int i = std::stoi(d.key.substr(1));
        CHECK(d.value == "fabric://p/uploads/" + d.key);
        CHECK(d.source_topic == "ev");
        CHECK(d.group == "g");
        CHECK(d.attempts == 3);
        CHECK(d.reason == "exit status " + std::to_string(i));
        CHECK(d.replays == 0);
        REQUIRE(d.headers.size() == 1);  // the original's, without dlq.*
        CHECK(d.headers[0] == std::pair<std::string, std::string>{"fabric-version", std::to_string(100 + i)});
        CHECK(d.timestamp_ns > 0);
    }
    DeadLetterSelection one;
    one.partition = (*all)[0].partition;
    one.from_offset = one.to_offset = (*all)[0].offset;
    auto single = list_dead_letters(f.tp.pool, "ev.dlq", one);
    REQUIRE(single.ok());
    REQUIRE(single->size() == 1);
    CHECK((*single)[0].key == (*all)[0].key);
    DeadLetterSelection no_partition;
    no_partition.from_offset = 2;
    CHECK(list_dead_letters(f.tp.pool, "ev.dlq", no_partition).code() == Errc::invalid_argument);
    CHECK(list_dead_letters(f.tp.pool, "nope.dlq").code() == Errc::not_found);
}

TEST_CASE("dlq replay: all dead letters go back to the source topic as new messages and leave the DLQ") {
    Fixture f("dlqr-all");
    f.dead_letter(0, 6);
    REQUIRE(retained(f.tp.pool) == 6);
    auto rep = replay_dead_letters(f.tp.pool, "ev.dlq", ReplayOptions{});
    REQUIRE(rep.ok());
    CHECK_FALSE(rep->stopped.has_value());
    CHECK(rep->replayed == 6);
    CHECK(rep->removed == 6);
    CHECK(rep->kept == 0);
    REQUIRE(rep->sent_to.size() == 1);
    CHECK(rep->sent_to[0] == std::pair<std::string, uint64_t>{"ev", 6});
    CHECK(retained(f.tp.pool) == 0);
    CHECK(list_dead_letters(f.tp.pool, "ev.dlq")->empty());

    // The group reads them again at new offsets, marked as replayed once; a hand-out counts
    // from attempt 1 (the old count belonged to the old offset).
    auto again = f.new_messages();
    REQUIRE(again.size() == 6);
    for (const auto& [key, replays] : again) CHECK(replays == "1");
    auto prod = Producer::open(f.tp.pool, "ev");
    MessageBatch b;
    REQUIRE(f.consumer->seek(SeekPolicy::Committed()).ok());
    REQUIRE(f.consumer->poll(b, 1, Duration::zero()).value() == 1);
    CHECK(f.router->begin(b[0]).value() == 1);

    // Dead-lettered again and replayed again: the mark counts up, dlq.* headers never pile up.
    REQUIRE(f.router->dead_letter(b[0], 3, "still failing").ok());
    auto second = list_dead_letters(f.tp.pool, "ev.dlq");
    REQUIRE(second->size() == 1);
    CHECK((*second)[0].replays == 1);
    CHECK((*second)[0].headers.size() == 1);
    REQUIRE(replay_dead_letters(f.tp.pool, "ev.dlq", ReplayOptions{})->replayed == 1);
}

TEST_CASE("dlq replay: a range in the middle is sent but stays (a ring drops from the front); --keep keeps") {
    Fixture f("dlqr-range", config(1, 16));
    f.dead_letter(0, 5);  // one partition: dead letters at offsets 0..4
    ReplayOptions mid;
    mid.selection.partition = 0;
    mid.selection.from_offset = 2;
    mid.selection.to_offset = 3;
    auto rep = replay_dead_letters(f.tp.pool, "ev.dlq", mid);
    REQUIRE(rep.ok());
    CHECK(rep->replayed == 2);
    CHECK(rep->removed == 0);
    CHECK(rep->kept == 2);
    CHECK(retained(f.tp.pool) == 5);
    auto sent = f.new_messages();
    REQUIRE(sent.size() == 2);
    CHECK(sent[0].first == "k2");
    CHECK(sent[1].first == "k3");

    ReplayOptions front;
    front.selection.partition = 0;
    front.selection.to_offset = 1;
    front.keep = true;
    rep = replay_dead_letters(f.tp.pool, "ev.dlq", front);
    CHECK(rep->replayed == 2);
    CHECK(rep->kept == 2);
    CHECK(retained(f.tp.pool) == 5);

    front.keep = false;  // the front run 0..1 goes
    rep = replay_dead_letters(f.tp.pool, "ev.dlq", front);
    CHECK(rep->removed == 2);
    CHECK(retained(f.tp.pool) == 3);
    auto left = list_dead_letters(f.tp.pool, "ev.dlq");
    REQUIRE(left->size() == 3);
    CHECK(left->front().key == "k2");
}

TEST_CASE("dlq replay: a send that fails stops the replay there; what was sent is gone, the rest stays") {
    // Source: one partition of 4 slots that rejects when full. Group g has read and committed
    // the 3 originals, but a second group lags: after one replayed message the topic is full.
    Fixture f("dlqr-stop", config(1, 4, OnFull::reject));
    auto lagging = Consumer::open(f.tp.pool, "ev", "lagging");
    REQUIRE(lagging.ok());
    f.dead_letter(0, 3);
    auto rep = replay_dead_letters(f.tp.pool, "ev.dlq", ReplayOptions{});
    REQUIRE(rep.ok());
    CHECK(rep->replayed == 1);
    REQUIRE(rep->stopped.has_value());
    CHECK(rep->stopped->code == Errc::back_pressure);
    REQUIRE(rep->stopped_at.has_value());
    CHECK(rep->stopped_at->key == "k1");
    CHECK(rep->removed == 1);
    auto left = list_dead_letters(f.tp.pool, "ev.dlq");
    REQUIRE(left->size() == 2);
    CHECK(left->front().key == "k1");
}

TEST_CASE("dlq purge: by age drops the old front run; all drops the rest; a reading group keeps its unread") {
    Fixture f("dlqr-purge", config(1, 16));
    f.dead_letter(0, 3);
    const uint64_t first_batch = list_dead_letters(f.tp.pool, "ev.dlq")->back().timestamp_ns;
    // Age the first batch by 400 ms of wall clock before the second one.
    while (wall_now_ns() < first_batch + 400'000'000ull) {
        timespec ts{0, 20'000'000};
        nanosleep(&ts, nullptr);
    }
    f.dead_letter(3, 2);
    REQUIRE(retained(f.tp.pool) == 5);

    PurgeOptions none;
    none.older_than = std::chrono::seconds(3600);
    CHECK(purge_dead_letters(f.tp.pool, "ev.dlq", none)->removed == 0);
    CHECK(purge_dead_letters(f.tp.pool, "ev.dlq", PurgeOptions{}).code() == Errc::invalid_argument);

    PurgeOptions old;  // older than "first batch + 200 ms": the first batch only
    old.older_than = ns_duration(wall_now_ns() - first_batch - 200'000'000ull);
    auto p = purge_dead_letters(f.tp.pool, "ev.dlq", old);
    REQUIRE(p.ok());
    CHECK(p->removed == 3);
    CHECK(p->remaining == 2);
    auto left = list_dead_letters(f.tp.pool, "ev.dlq");
    REQUIRE(left->size() == 2);
    CHECK(left->front().key == "k3");

    // A group reading the dead-letter topic has read one of the two: purge --all keeps the other.
    auto reader = Consumer::open(f.tp.pool, "ev.dlq", "alerts");
    REQUIRE(reader.ok());
    REQUIRE(reader->assign_all().ok());
    MessageBatch b;
    REQUIRE(reader->poll(b, 1, Duration::zero()).value() == 1);
    REQUIRE(reader->commit().ok());
    PurgeOptions all;
    all.all = true;
    p = purge_dead_letters(f.tp.pool, "ev.dlq", all);
    REQUIRE(p.ok());
    CHECK(p->removed == 1);
    CHECK(p->held_by_groups == 1);
    CHECK(retained(f.tp.pool) == 1);
    REQUIRE(reader->poll(b, 8, Duration::zero()).value() == 1);  // the group still reads what it had not read
    CHECK(b[0].key_str() == "k4");
}

TEST_CASE("dlq purge: frees the slots of a full dead-letter topic at once") {
    Fixture f("dlqr-full", config(1, 512));
    // The DLQ topic has 256 slots per partition: fill it.
    f.dead_letter(0, 256);
    ProducerOptions no_wait;
    no_wait.block_timeout = Duration::zero();
    auto dlq = Producer::open(f.tp.pool, "ev.dlq", no_wait);
    REQUIRE(dlq.ok());
    CHECK(dlq->send("one more").code() == Errc::back_pressure);
    PurgeOptions all;
    all.all = true;
    auto p = purge_dead_letters(f.tp.pool, "ev.dlq", all);
    REQUIRE(p.ok());
    CHECK(p->removed == 256);
    CHECK(p->remaining == 0);
    CHECK(dlq->send("one more").ok());
    CHECK(retained(f.tp.pool) == 1);
}

namespace {
/// The dead-letter topic's next offset claimed by a producer SIGKILLed before it published (a
/// worker killed while dead-lettering), turned into a skip record by the reaper.
void dead_letterer_killed_mid_send(Fixture& f) {
    send_killed_after_claim(f.tp.cleanup.name(), "ev.dlq");
    f.tp.pool.reap(MonoClock::now());
}
}  // namespace

TEST_CASE("dlq replay: a dead-letter topic ending in a skip record (a worker killed mid-dead-letter) is listed, replayed "
          "and purged without hanging") {
    Fixture f("dlqr-skip", config(1, 16));
    f.dead_letter(0, 3);  // offsets 0..2
    dead_letterer_killed_mid_send(f);  // offsets 3 and 4: skip records
    dead_letterer_killed_mid_send(f);
    CHECK(retained(f.tp.pool) == 3);  // the dead letters, not the offsets
    // Each call in a child: one that never returns is killed at the deadline and fails here.
    const std::string name = f.tp.cleanup.name();
    const pid_t kid = test::fork_child([&]() -> int {
        Pool pool = open_child_pool(name);
        auto all = list_dead_letters(pool, "ev.dlq");
        if (!all || all->size() != 3) return 1;
        DeadLetterSelection to3;  // `--partition 0 --to 3`: ends inside the skip records
        to3.partition = 0;
        to3.to_offset = 3;
        all = list_dead_letters(pool, "ev.dlq", to3);
        if (!all || all->size() != 3) return 4;
        ReplayOptions keep;
        keep.keep = true;
        auto rep = replay_dead_letters(pool, "ev.dlq", keep);
        if (!rep || rep->replayed != 3 || rep->kept != 3) return 2;
        PurgeOptions everything;
        everything.all = true;
        auto p = purge_dead_letters(pool, "ev.dlq", everything);
        if (!p || p->removed != 3 || p->remaining != 0) return 3;
        return 0;
    });
    CHECK(test::wait_child(kid, 10000) == 0);
    CHECK(retained(f.tp.pool) == 0);
}

TEST_CASE("dlq replay: an offset range past the partition's end selects nothing, however large the offsets") {
    Fixture f("dlqr-far", config(1, 16));
    f.dead_letter(0, 3);  // offsets 0..2
    for (const uint64_t from : {uint64_t(3), uint64_t(1) << 63, (uint64_t(1) << 63) + 5, UINT64_MAX}) {
        CAPTURE(from);
        DeadLetterSelection far;
        far.partition = 0;
        far.from_offset = from;
        auto none = list_dead_letters(f.tp.pool, "ev.dlq", far);
        REQUIRE(none.ok());
        CHECK(none->empty());
        far.to_offset = from;  // `dlq show 0:<from>`
        none = list_dead_letters(f.tp.pool, "ev.dlq", far);
        REQUIRE(none.ok());
        CHECK(none->empty());
        ReplayOptions replay;
        replay.selection = far;
        auto rep = replay_dead_letters(f.tp.pool, "ev.dlq", replay);
        REQUIRE(rep.ok());
        CHECK(rep->replayed == 0);
    }
    CHECK(f.new_messages().empty());
    CHECK(retained(f.tp.pool) == 3);
}

TEST_CASE("dlq replay: a dead letter that filled its source slot goes back (without the replay mark) instead of "
          "stopping every replay at it") {
    Fixture f("dlqr-max", config(1, 16));
    auto prod = Producer::open(f.tp.pool, "ev");
    REQUIRE(prod.ok());
    const MessageHeader h[] = {{"fabric-version", "7"}};
    // The largest value that fits a slot of `ev` next to this key and header (failed sends claim nothing).
    size_t size = 256;
    while (size > 0 && !prod->send_keyed(bytes("kmax"), bytes(std::string(size, 'v')), h).ok()) --size;
    REQUIRE(size > 0);
    MessageBatch b;
    REQUIRE(f.consumer->poll(b, 1, std::chrono::seconds(1)).value() == 1);
    REQUIRE(b[0].key_str() == "kmax");
    REQUIRE(f.router->dead_letter(b[0], 3, "too big to work").ok());
    REQUIRE(f.consumer->commit().ok());
    f.dead_letter(0, 2);  // two ordinary letters behind it
    REQUIRE(retained(f.tp.pool) == 3);
    auto rep = replay_dead_letters(f.tp.pool, "ev.dlq", ReplayOptions{});
    REQUIRE(rep.ok());
    CHECK_FALSE(rep->stopped.has_value());
    if (rep->stopped) MESSAGE(rep->stopped->message);
    CHECK(rep->replayed == 3);
    CHECK(rep->removed == 3);
    CHECK(retained(f.tp.pool) == 0);
    auto back = f.new_messages();
    REQUIRE(back.size() == 3);
    CHECK(back[0].first == "kmax");
    CHECK(back[0].second == "");  // no room for the mark
    CHECK(back[1].second == "1");
}
