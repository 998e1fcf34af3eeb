// SPDX-License-Identifier: MIT
// FileOffsetStore: commit/fetch, restart from the file, a torn write keeps the previous
// commit, an incarnation change falls back to the seek policy with a warning and a counter.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>

#include "fabric_shm/consumer.h"
#include "fabric_shm/counters.h"
#include "fabric_shm/object_store.h"
#include "fabric_shm/offset_store.h"
#include "mq/topic_internal.h"
#include "mq_test_util.h"

using namespace fabric_shm;
using namespace mqtest;

namespace {
struct TempDir {
    std::string path;
    TempDir() {
        path = std::filesystem::temp_directory_path() / test::unique_pool_name("offsets");
        std::filesystem::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};
}  // namespace

TEST_CASE("file offsets: commit then fetch; stale epochs refused; unknown partitions are empty") {
    TempDir dir;
    FileOffsetStore store(dir.path);
    const OffsetCommit c[] = {{0, 10, 1}, {2, 30, 1}};
    REQUIRE(store.commit("t", 77, "g", c).ok());
    auto f = store.fetch("t", 77, "g", 2);
    REQUIRE(f.ok());
    CHECK(f->offset == 30u);
    CHECK(f->epoch == 1);
    CHECK(!store.fetch("t", 77, "g", 1)->offset.has_value());
    CHECK(!store.fetch("t", 77, "other", 0)->offset.has_value());
    const OffsetCommit stale[] = {{0, 12, 0}};
    auto r = store.commit("t", 77, "g", stale);
    CHECK(r.code() == Errc::stale_epoch);
    CHECK(r.error().message.find("epoch 0 < stored epoch 1") != std::string::npos);
    const OffsetCommit newer[] = {{0, 12, 2}};
    REQUIRE(store.commit("t", 77, "g", newer).ok());
    CHECK(store.fetch("t", 77, "g", 0)->offset == 12u);
    CHECK(store.fetch("t", 77, "g", 2)->offset == 30u);  // untouched partitions carried over
}

TEST_CASE("file offsets: a torn write of the newest record leaves the previous commit readable") {
    TempDir dir;
    FileOffsetStore store(dir.path, FsyncPolicy::never);
    const OffsetCommit c1[] = {{0, 100, 0}};
    const OffsetCommit c2[] = {{0, 200, 0}};
    REQUIRE(store.commit("t", 5, "g", c1).ok());  // seq 1 -> copy 1
    REQUIRE(store.commit("t", 5, "g", c2).ok());  // seq 2 -> copy 0
    CHECK(store.fetch("t", 5, "g", 0)->offset == 200u);
    // Tear copy 0 (the newest): garbage over its middle, as a crash mid-write would leave.
    const std::string p = store.path("t", "g");
    int fd = ::open(p.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    char junk[64];
    std::memset(junk, 0x5a, sizeof junk);
    REQUIRE(::pwrite(fd, junk, sizeof junk, 200) == ssize_t(sizeof junk));
    ::close(fd);
    auto f = store.fetch("t", 5, "g", 0);
    REQUIRE(f.ok());
    CHECK(f->offset == 100u);  // old, never garbage
    // The next commit goes over the torn copy and wins again.
    const OffsetCommit c3[] = {{0, 300, 0}};
    REQUIRE(store.commit("t", 5, "g", c3).ok());
    CHECK(store.fetch("t", 5, "g", 0)->offset == 300u);
    // Both copies torn: nothing committed (the consumer falls back to its seek policy).
    fd = ::open(p.c_str(), O_WRONLY);
    REQUIRE(::pwrite(fd, junk, sizeof junk, 8) == ssize_t(sizeof junk));
    REQUIRE(::pwrite(fd, junk, sizeof junk, 4096 + 8) == ssize_t(sizeof junk));
    ::close(fd);
    CHECK(!store.fetch("t", 5, "g", 0)->offset.has_value());
}

namespace {

/// Writes one record copy as a faulty program might: a valid CRC over `entries`, `count` of them
/// (the file's layout: docs/topics.md section 8).
void write_forged_record(const std::string& path, uint64_t incarnation,
                         const std::vector<std::array<uint64_t, 3>>& entries, uint32_t count) {
    std::vector<uint8_t> rec(4096, 0);
    auto put = [&](size_t at, uint64_t v, size_t n) { std::memcpy(rec.data() + at, &v, n); };
    put(0, 0x5346464f42414600ULL, 8);  // magic
    put(8, 1, 4);                      // version
    put(12, count, 4);
    put(16, 1, 8);  // seq
    put(24, incarnation, 8);
    for (size_t i = 0; i < entries.size(); ++i) {
        put(184 + 24 * i, entries[i][0], 4);  // partition
        put(184 + 24 * i + 4, 1, 4);          // valid
        put(184 + 24 * i + 8, entries[i][1], 8);
        put(184 + 24 * i + 16, entries[i][2], 8);
    }
    const uint32_t crc = crc32(rec.data(), 1720);
    put(1720, crc, 4);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, rec.data(), rec.size(), 4096) == ssize_t(rec.size()));  // copy 1 (seq 1)
    ::close(fd);
}

}  // namespace

TEST_CASE("file offsets: a record with a valid CRC whose entries repeat a partition, or name one out of range, is "
          "not used, and a commit writes a well-formed one") {
    TempDir dir;
    FileOffsetStore store(dir.path, FsyncPolicy::never);
    const std::string p = store.path("t", "g");
    // 64 entries, all of partition 0: a commit of partition 5 would find no room for its own.
    write_forged_record(p, 9, std::vector<std::array<uint64_t, 3>>(64, {0, 1000, 1}), 64);
    CHECK(!store.fetch("t", 9, "g", 0)->offset.has_value());
    const OffsetCommit c[] = {{5, 50, 1}};
    REQUIRE(store.commit("t", 9, "g", c).ok());
    CHECK(store.fetch("t", 9, "g", 5)->offset == 50u);
    CHECK(!store.fetch("t", 9, "g", 0)->offset.has_value());
    // A partition out of range.
    write_forged_record(p, 9, {{200, 7, 1}}, 1);
    CHECK(!store.fetch("t", 9, "g", 200 % 64)->offset.has_value());
    // The same layout, well-formed, is read: the forging above is what the file holds.
    write_forged_record(p, 9, {{3, 33, 1}, {4, 44, 1}}, 2);
    CHECK(store.fetch("t", 9, "g", 4)->offset == 44u);
}

TEST_CASE("file offsets: a consumer resumes from the file; after the topic is re-created it falls back and counts") {
    TempDir dir;
    TestPool tp("fileoff");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64)).ok());
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 20; ++i) REQUIRE(prod->send(std::to_string(i)).ok());
    FileOffsetStore store(dir.path);
    ConsumerOptions o;
    o.offset_store = &store;
    std::vector<std::string> warnings;
    o.on_warning = [&](std::string_view w) { warnings.emplace_back(w); };
    {
        auto c = Consumer::open(tp.pool, "t", "g", o);
        REQUIRE(c->assign_all().ok());
        MessageBatch b;
        REQUIRE(c->poll(b, 15, Duration::zero()).value() == 15);
        REQUIRE(c->commit().ok());
    }
    {
        auto c = Consumer::open(tp.pool, "t", "g", o);
        REQUIRE(c->assign_all().ok());
        CHECK(c->position(0).value() == 15);
    }
    // Remove and re-create: offsets from the file must not be applied to the new ring.
    REQUIRE(mgr.remove("t").ok());
    REQUIRE(mgr.create("t", config(1, 64)).ok());
    auto prod2 = Producer::open(tp.pool, "t");
    for (int i = 0; i < 3; ++i) REQUIRE(prod2->send("n").ok());
    const uint64_t resets = counter_total(tp.pool, CounterId::mq_offset_resets);
    auto c = Consumer::open(tp.pool, "t", "g", o);
    REQUIRE(c->assign_all().ok());
    CHECK(c->position(0).value() == 0);  // fallback: earliest, not offset 15
    CHECK(counter_total(tp.pool, CounterId::mq_offset_resets) == resets + 1);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("earlier incarnation") != std::string::npos);
    MessageBatch b;
    CHECK(c->poll(b, 10, Duration::zero()).value() == 3);
    REQUIRE(c->commit().ok());  // rewrites the file for the new incarnation
    CHECK(store.fetch("t", c->incarnation(), "g", 0)->offset == 3u);
}

TEST_CASE("file offsets: a file behind the pool's commit (the committer died between the two) reports only real losses") {
    TempDir dir;
    TestPool tp("fileoff-lag");
    TopicConfig blocking = config(1, 4);
    blocking.on_full = OnFull::block;
    REQUIRE(TopicManager(tp.pool).create("t", blocking).ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    FileOffsetStore store(dir.path);
    ConsumerOptions with_file;
    with_file.offset_store = &store;
    auto take_all = [](Consumer& c) {
        MessageBatch b;
        REQUIRE(c.poll(b, 64, Duration::zero()).ok());
        return b.size();
    };
    {
        auto c = Consumer::open(tp.pool, "t", "g", with_file);
        REQUIRE(c->assign_all().ok());
        for (int i = 0; i < 4; ++i) REQUIRE(prod->send(std::to_string(i)).ok());
        REQUIRE(take_all(*c) == 4);
        REQUIRE(c->commit().ok());  // the pool's table and the file: 4
    }
    {
        // The next commit reaches the pool's table only, as when its process dies before the
        // file write: the file stays at 4.
        auto c = Consumer::open(tp.pool, "t", "g");
        REQUIRE(c->assign_all().ok());
        for (int i = 4; i < 8; ++i) REQUIRE(prod->send(std::to_string(i)).ok());
        REQUIRE(take_all(*c) == 4);
        REQUIRE(c->commit().ok());
    }
    // Released by the table's 8, offsets 4..7 are overwritten.
    for (int i = 8; i < 12; ++i) REQUIRE(prod->send(std::to_string(i)).ok());
    auto c = Consumer::open(tp.pool, "t", "g", with_file);
    REQUIRE(c->assign_all().ok());
    CHECK(c->position(0).value() == 8);
    MessageBatch b;
    REQUIRE(c->poll(b, 64, Duration::zero()).ok());
    CHECK(b.size() == 4);
    CHECK(b.lost() == 0);  // 4..7 were processed and committed, not lost
}

TEST_CASE("file offsets: a dead-letter record that committed the pool's table past the file's entry is where a "
          "successor starts") {
    TempDir dir;
    TestPool tp("fileoff-dlq");
    REQUIRE(TopicManager(tp.pool).create("t", config(1, 16)).ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    for (int i = 0; i < 4; ++i) REQUIRE(prod->send(std::to_string(i)).ok());
    FileOffsetStore store(dir.path);
    ConsumerOptions with_file;
    with_file.offset_store = &store;
    auto a = Consumer::open(tp.pool, "t", "g", with_file);
    REQUIRE(a.ok());
    REQUIRE(a->assign_all().ok());
    // a decided offset 2 for the dead-letter topic (0 and 1 done), and stopped before any commit
    // of its own: the record committed the pool's table to 2; the file has no entry.
    auto h = mq::open_topic(tp.pool, "t");
    REQUIRE(h.ok());
    uint64_t word = 0;
    const int idx = mq::find_group(**h, "g", &word);
    REQUIRE(idx >= 0);
    REQUIRE(mq::record_dead_letter(**h, mq::GroupRef{idx, word}, "g", 0, 2, 1).ok());
    CHECK(!store.fetch("t", (*h)->incarnation, "g", 0)->offset.has_value());
    auto b = Consumer::open(tp.pool, "t", "g", with_file);
    REQUIRE(b.ok());
    REQUIRE(b->assign_all().ok());
    CHECK(b->position(0).value() == 2);  // at the record: it sends the owed dead letter, never redoes 0 and 1
}

TEST_CASE("file offsets: a group registered again after it was removed reports what was overwritten meanwhile as lost") {
    TempDir dir;
    TestPool tp("fileoff-rereg");
    TopicConfig blocking = config(1, 4);
    blocking.on_full = OnFull::block;
    TopicManager topics(tp.pool);
    REQUIRE(topics.create("t", blocking).ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    FileOffsetStore store(dir.path);
    ConsumerOptions with_file;
    with_file.offset_store = &store;
    MessageBatch b;
    {
        auto c = Consumer::open(tp.pool, "t", "g", with_file);
        REQUIRE(c->assign_all().ok());
        for (int i = 0; i < 4; ++i) REQUIRE(prod->send(std::to_string(i)).ok());
        REQUIRE(c->poll(b, 64, Duration::zero()).ok());
        REQUIRE(c->commit().ok());  // the pool's table and the file: 4
    }
    // The group goes (as when the reaper removes an expired one); another keeps up while
    // offsets 4..11 are overwritten.
    REQUIRE(topics.remove_group("t", "g").ok());
    auto other = Consumer::open(tp.pool, "t", "h");
    REQUIRE(other->assign_all().ok());
    for (int i = 4; i < 16; ++i) {
        REQUIRE(other->poll(b, 64, Duration::zero()).ok());
        REQUIRE(other->commit().ok());
        REQUIRE(prod->send(std::to_string(i)).ok());
    }
    // Registered again (the table set to where the new registration starts, 12), resuming from
    // the file's 4: 4..11 were never read by this group.
    auto c = Consumer::open(tp.pool, "t", "g", with_file);
    REQUIRE(c->assign_all().ok());
    CHECK(c->position(0).value() == 12);
    REQUIRE(c->poll(b, 64, Duration::zero()).ok());
    CHECK(b.size() == 4);
    CHECK(b.lost() == 8);
}

TEST_CASE("file offsets: a commit that finds the file locked by a stopped process is refused as busy, not held") {
    TempDir dir;
    FileOffsetStore store(dir.path);
    const OffsetCommit first[] = {{0, 10, 1}};
    REQUIRE(store.commit("t", 77, "g", first).ok());
    // Another committer holds the file's lock and stops (as a SIGSTOPped process would).
    const std::string file = store.path("t", "g");
    const pid_t holder = test::fork_child([file] {
        const int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0 || ::flock(fd, LOCK_EX) != 0) return 10;
        ::raise(SIGSTOP);
        return 0;
    });
    REQUIRE(test::wait_stopped(holder));
    const OffsetCommit second[] = {{0, 20, 1}};
    const uint64_t before = mono_now_ns();
    auto r = store.commit("t", 77, "g", second);
    const uint64_t waited = mono_now_ns() - before;
    CHECK(r.code() == Errc::busy);
    CHECK(r.error().message.find(file) != std::string::npos);
    CHECK(waited >= kOffsetFileLockWaitNs);
    CHECK(waited < kOffsetFileLockWaitNs + 1'000'000'000ull);
    CHECK(store.fetch("t", 77, "g", 0)->offset == 10u);  // nothing written
    test::resume(holder);
    CHECK(test::wait_child(holder) == 0);  // its lock goes with its descriptor
    REQUIRE(store.commit("t", 77, "g", second).ok());
    CHECK(store.fetch("t", 77, "g", 0)->offset == 20u);
}
