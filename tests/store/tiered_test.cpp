// SPDX-License-Identifier: MIT
// TieredObjectStore: demotion beyond max_hot, promotion on get, versions across tiers,
// checkpoint + restart after the pool is gone, replay of the log tail, torn and damaged cold
// records (truncated, flipped bytes) never served, and real SIGKILLs at the crash points.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "fabric_shm/counters.h"
#include "crash_point.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/tiered_object_store.h"
#include "../support/test_support.h"

using namespace fabric_shm;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kPoolBytes = 16ull << 20;

/// mkdtemp directory removed with everything in it.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "fabric-tiered-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const std::string& path() const { return path_; }
    std::string cold() const { return path_ + "/cold"; }

private:
    std::string path_;
};

Pool make_pool(const std::string& name) {
    PoolOptions o;
    o.name = name;
    o.size_bytes = kPoolBytes;
    auto p = Pool::create(o);
    REQUIRE_MESSAGE(p.ok(), p.error().message);
    return std::move(p.value());
}

TieredConfig config_for(const TempDir& dir, uint64_t max_hot, FsyncPolicy fsync = FsyncPolicy::never) {
    TieredConfig c;
    c.cold_dir = dir.cold();
    c.max_hot = max_hot;
    c.fsync = fsync;
    return c;
}

std::unique_ptr<TieredObjectStore> open_tiered(Pool& pool, const TieredConfig& c, std::string* note = nullptr) {
    auto t = TieredObjectStore::open(pool, c, note);
    REQUIRE_MESSAGE(t.ok(), t.error().message);
    return std::move(t.value());
}

FabricUri uri(const std::string& pool, const std::string& key) {
    auto u = FabricUri::make(pool, "b", key);
    REQUIRE_MESSAGE(u.ok(), u.error().message);
    return u.value();
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 31);
    return v;
}

uint64_t put_ok(TieredObjectStore& t, const FabricUri& u, const std::vector<uint8_t>& data, const PutOptions& o = {}) {
    auto r = t.put(u, data, o);
    REQUIRE_MESSAGE(r.ok(), r.error().message);
    return r.value();
}

ObjectData get_ok(TieredObjectStore& t, const FabricUri& u) {
    auto r = t.get(u);
    REQUIRE_MESSAGE(r.ok(), r.error().message);
    REQUIRE_MESSAGE(r->has_value(), (std::string("absent: ") + u.to_string()));
    return std::move(**r);
}

std::string log_path(const TempDir& dir, uint64_t gen = 1) {
    return dir.cold() + "/cold." + std::to_string(gen) + ".log";
}

void flip_byte(const std::string& path, uint64_t offset) {
    int fd = ::open(path.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    uint8_t b = 0;
    REQUIRE(::pread(fd, &b, 1, off_t(offset)) == 1);
    b ^= 0x5a;
    REQUIRE(::pwrite(fd, &b, 1, off_t(offset)) == 1);
    ::close(fd);
}

}  // namespace

TEST_CASE("tiered: demotes the least recently used object beyond max_hot and promotes it on get") {
    test::TempPool temp("tier-lru", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    auto t = open_tiered(pool, config_for(dir, 2));
    const auto a = uri(temp.name(), "a"), b = uri(temp.name(), "b"), c = uri(temp.name(), "c");
    put_ok(*t, a, bytes_of("alpha"));
    put_ok(*t, b, bytes_of("beta"));
    CHECK(t->stats().demotions == 0);
    put_ok(*t, c, bytes_of("gamma"));
    CHECK(t->tier_of(a) == "cold");
    CHECK(t->tier_of(b) == "hot");
    CHECK(t->tier_of(c) == "hot");
    CHECK(t->stats().hot_objects == 2);
    CHECK(t->stats().cold_objects == 1);

    ObjectData d = get_ok(*t, a);  // promotes a; b is now least recently used
    CHECK(d.data == bytes_of("alpha"));
    CHECK(d.info.crc32 == crc32(d.data.data(), d.data.size()));
    CHECK(t->tier_of(a) == "hot");
    CHECK(t->tier_of(b) == "cold");
    CHECK(t->stats().promotions == 1);
    CHECK(t->stats().demotions == 2);
}

TEST_CASE("tiered: a get refreshes recency so the other object is demoted") {
    test::TempPool temp("tier-touch", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    auto t = open_tiered(pool, config_for(dir, 2));
    const auto a = uri(temp.name(), "a"), b = uri(temp.name(), "b"), c = uri(temp.name(), "c");
    put_ok(*t, a, bytes_of("1"));
    put_ok(*t, b, bytes_of("2"));
    get_ok(*t, a);
    put_ok(*t, c, bytes_of("3"));
    CHECK(t->tier_of(a) == "hot");
    CHECK(t->tier_of(b) == "cold");
}

TEST_CASE("tiered: versions, content type and metadata survive demotion and promotion; versions stay monotonic") {
    test::TempPool temp("tier-ver", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    auto t = open_tiered(pool, config_for(dir, 4));
    const auto a = uri(temp.name(), "dir/a.txt");
    PutOptions o;
    o.content_type = "text/plain";
    o.metadata = {{"owner", "ci"}, {"list", "x,y"}};
    CHECK(put_ok(*t, a, bytes_of("v1"), o) == 1);
    CHECK(put_ok(*t, a, bytes_of("v2"), o) == 2);
    REQUIRE(t->demote_until(0).ok());
    CHECK(t->tier_of(a) == "cold");
    auto h = t->head(a);
    REQUIRE(h.ok());
    REQUIRE(h->has_value());
    CHECK((**h).version == 2);
    CHECK((**h).content_type == "text/plain");
    CHECK((**h).metadata == o.metadata);
    const uint64_t created = (**h).created_wall_ns;
    CHECK(created != 0);

    ObjectData d = get_ok(*t, a);
    CHECK(d.data == bytes_of("v2"));
    CHECK(d.info.version == 2);
    CHECK(d.info.created_wall_ns == created);
    CHECK(d.info.metadata == o.metadata);  // the reserved tier key is never shown
    CHECK(put_ok(*t, a, bytes_of("v3")) == 3);
    auto removed = t->remove(a);
    REQUIRE(removed.ok());
    CHECK(removed.value());
    CHECK(put_ok(*t, a, bytes_of("v4")) == 4);
    CHECK(t->list(temp.name(), "b", "").value() == std::vector<std::string>{"dir/a.txt"});
}

TEST_CASE("tiered: conditions see cold objects") {
    test::TempPool temp("tier-cond", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    auto t = open_tiered(pool, config_for(dir, 1));
    const auto a = uri(temp.name(), "a"), b = uri(temp.name(), "b");
    put_ok(*t, a, bytes_of("a1"));
    put_ok(*t, b, bytes_of("b1"));  // demotes a
    REQUIRE(t->tier_of(a) == "cold");
    PutOptions absent;
    absent.condition = PutCondition::if_absent;
    CHECK(t->put(a, bytes_of("x"), absent).code() == Errc::conflict);
    PutOptions wrong;
    wrong.condition = PutCondition::if_version_equals;
    wrong.expected_version = 7;
    CHECK(t->put(a, bytes_of("x"), wrong).code() == Errc::conflict);
    RemoveOptions rm_wrong;
    rm_wrong.if_version = 9;
    CHECK(t->remove(a, rm_wrong).code() == Errc::conflict);
    PutOptions right;
    right.condition = PutCondition::if_version_equals;
    right.expected_version = 1;
    CHECK(put_ok(*t, a, bytes_of("a2"), right) == 2);
    CHECK(get_ok(*t, a).data == bytes_of("a2"));
    PutOptions fence;
    fence.condition = PutCondition::fence;
    fence.fence_token = 5;
    CHECK(put_ok(*t, b, bytes_of("b2"), fence) == 2);
    fence.fence_token = 4;
    CHECK(t->put(b, bytes_of("b3"), fence).code() == Errc::stale_epoch);
    PutOptions both = fence;
    both.condition = PutCondition::fence_if_version_equals;
    both.fence_token = 5;
    both.expected_version = 1;
    CHECK(t->put(b, bytes_of("b3"), both).code() == Errc::conflict);
    both.fence_token = 4;
    both.expected_version = 2;
    CHECK(t->put(b, bytes_of("b3"), both).code() == Errc::stale_epoch);
    both.fence_token = 5;
    both.fence_holds = [] { return false; };  // fenced out: told so before the version
    both.expected_version = 1;
    CHECK(t->put(b, bytes_of("b3"), both).code() == Errc::stale_epoch);
    both.fence_holds = nullptr;
    both.expected_version = 2;
    CHECK(put_ok(*t, b, bytes_of("b3"), both) == 3);
    put_ok(*t, uri(temp.name(), "c"), bytes_of("c1"));  // demotes a or b
    both.expected_version = 0;
    CHECK(t->put(a, bytes_of("a3"), both).code() == Errc::conflict);
}

TEST_CASE("tiered: list merges both tiers, sorted, by prefix") {
    test::TempPool temp("tier-ls", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    auto t = open_tiered(pool, config_for(dir, 2));
    for (const char* k : {"x/3", "x/1", "y/1", "x/2"}) put_ok(*t, uri(temp.name(), k), bytes_of(k));
    CHECK(t->stats().cold_objects == 2);
    CHECK(t->list(temp.name(), "b", "x/").value() == std::vector<std::string>{"x/1", "x/2", "x/3"});
    CHECK(t->list(temp.name(), "b", "").value().size() == 4);
    CHECK(t->remove(uri(temp.name(), "x/3")).value());  // cold
    CHECK(t->list(temp.name(), "b", "x/").value() == std::vector<std::string>{"x/1", "x/2"});
    CHECK_FALSE(t->remove(uri(temp.name(), "x/3")).value());
    CHECK(t->list("other", "b", "").code() == Errc::invalid_argument);
}

TEST_CASE("tiered: checkpoint keeps every object across the pool's removal and a restart") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-ckpt"));
    TempDir dir;
    std::vector<FabricUri> uris;
    for (int i = 0; i < 6; ++i) uris.push_back(uri(cleanup.name(), "obj-" + std::to_string(i)));
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, config_for(dir, 2, FsyncPolicy::on_checkpoint));
        PutOptions o;
        o.content_type = "application/octet-stream";
        for (int i = 0; i < 6; ++i) put_ok(*t, uris[size_t(i)], pattern(1000 + size_t(i) * 4096, uint8_t(i)), o);
        REQUIRE(t->checkpoint(/*include_hot=*/true).ok());
        CHECK(t->stats().checkpoints == 1);
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    Pool pool = make_pool(cleanup.name());  // a fresh pool: the hot tier is empty
    std::string note;
    auto t = open_tiered(pool, config_for(dir, 2, FsyncPolicy::on_checkpoint), &note);
    CHECK(t->stats().recovered_records == 0);  // everything was in the index
    for (int i = 0; i < 6; ++i) {
        ObjectData d = get_ok(*t, uris[size_t(i)]);
        CHECK(d.data == pattern(1000 + size_t(i) * 4096, uint8_t(i)));
        CHECK(d.info.version == 1);
        CHECK(d.info.content_type == "application/octet-stream");
    }
    CHECK(t->stats().hot_objects == 2);
}

TEST_CASE("tiered: cold records written after the last checkpoint are replayed at open") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-replay"));
    TempDir dir;
    const auto a = uri(cleanup.name(), "a"), b = uri(cleanup.name(), "b"), c = uri(cleanup.name(), "c");
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, config_for(dir, 1));
        put_ok(*t, a, bytes_of("A"));
        REQUIRE(t->checkpoint().ok());
        put_ok(*t, b, bytes_of("B"));  // demotes a (after the checkpoint)
        put_ok(*t, c, bytes_of("C"));  // demotes b
        CHECK(t->remove(a).value());   // tombstone after the checkpoint
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    Pool pool = make_pool(cleanup.name());
    auto t = open_tiered(pool, config_for(dir, 1));
    CHECK(t->stats().recovered_records == 3);
    CHECK(get_ok(*t, b).data == bytes_of("B"));
    auto ga = t->get(a);
    REQUIRE(ga.ok());
    CHECK_FALSE(ga->has_value());
    CHECK(put_ok(*t, a, bytes_of("A2")) == 2);  // the tombstone kept the version floor
}

TEST_CASE("tiered: an overwritten cold version never resurfaces when the newer hot copy is lost") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-stale"));
    TempDir dir;
    const auto a = uri(cleanup.name(), "a");
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, config_for(dir, 4));
        put_ok(*t, a, bytes_of("old"));
        REQUIRE(t->demote_until(0).ok());
        put_ok(*t, a, bytes_of("new"));  // hot only
        REQUIRE(t->checkpoint().ok());   // cold index only: "new" is not persisted
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    Pool pool = make_pool(cleanup.name());
    auto t = open_tiered(pool, config_for(dir, 4));
    auto g = t->get(a);
    REQUIRE(g.ok());
    CHECK_FALSE(g->has_value());
    CHECK(put_ok(*t, a, bytes_of("again")) == 3);
}

TEST_CASE("tiered: a second open of the same cold directory is refused while the first lives") {
    test::TempPool temp("tier-lock", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    auto t = open_tiered(pool, config_for(dir, 2));
    auto second = TieredObjectStore::open(pool, config_for(dir, 2));
    CHECK(second.code() == Errc::busy);
    t.reset();
    auto third = TieredObjectStore::open(pool, config_for(dir, 2));
    CHECK(third.ok());
}

TEST_CASE("tiered: rejects bad configuration, a foreign pool and reserved metadata") {
    test::TempPool temp("tier-args", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    TieredConfig c = config_for(dir, 0);
    CHECK(TieredObjectStore::open(pool, c).code() == Errc::invalid_argument);
    c = config_for(dir, 1);
    c.cold_dir.clear();
    CHECK(TieredObjectStore::open(pool, c).code() == Errc::invalid_argument);
    auto t = open_tiered(pool, config_for(dir, 1));
    CHECK(t->put(uri("elsewhere", "k"), bytes_of("x")).code() == Errc::invalid_argument);
    PutOptions o;
    o.metadata = {{"fabric-tier", "1 2 3"}};
    CHECK(t->put(uri(temp.name(), "k"), bytes_of("x"), o).code() == Errc::invalid_argument);
}

TEST_CASE("tiered: a truncated cold record is reported Corrupt, never served, and can be removed") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-trunc"));
    TempDir dir;
    const auto a = uri(cleanup.name(), "a"), b = uri(cleanup.name(), "b");
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, config_for(dir, 4));
        put_ok(*t, a, pattern(5000, 1));
        put_ok(*t, b, pattern(5000, 2));
        REQUIRE(t->demote_until(0).ok());  // a then b in the log
        REQUIRE(t->checkpoint().ok());
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    const uint64_t size = fs::file_size(log_path(dir));
    fs::resize_file(log_path(dir), size - 100);  // cut into b's payload
    Pool pool = make_pool(cleanup.name());
    std::string note;
    auto t = open_tiered(pool, config_for(dir, 4), &note);
    CHECK(note.find("truncated") != std::string::npos);
    CHECK(t->stats().cold_torn == 1);
    CHECK(get_ok(*t, a).data == pattern(5000, 1));
    const uint64_t corrupt_before = counter_total(pool, CounterId::store_corrupt);
    auto gb = t->get(b);
    CHECK(gb.code() == Errc::corrupt);
    CHECK(counter_total(pool, CounterId::store_corrupt) == corrupt_before + 1);
    CHECK(t->head(b).code() == Errc::corrupt);
    CHECK(t->remove(b).value());
    auto gone = t->get(b);
    REQUIRE(gone.ok());
    CHECK_FALSE(gone->has_value());
}

TEST_CASE("tiered: flipped payload or header bytes in a cold record are reported Corrupt") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-flip"));
    TempDir dir;
    const auto a = uri(cleanup.name(), "a"), b = uri(cleanup.name(), "b"), c = uri(cleanup.name(), "c");
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, config_for(dir, 4));
        put_ok(*t, a, pattern(4096, 1));
        put_ok(*t, b, pattern(4096, 2));
        put_ok(*t, c, pattern(4096, 3));
        REQUIRE(t->demote_until(0).ok());
        REQUIRE(t->checkpoint().ok());
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    // Records are 8-aligned: 64 header + 3 key ("b/a") + 4 meta + 4096 payload -> 4168 bytes.
    const uint64_t rec = 4168;
    flip_byte(log_path(dir), 0 * rec + 64 + 8 + 2000);  // a: payload byte
    flip_byte(log_path(dir), 1 * rec + 30);             // b: header (data_len) byte
    Pool pool = make_pool(cleanup.name());
    auto t = open_tiered(pool, config_for(dir, 4));
    CHECK(t->get(a).code() == Errc::corrupt);
    CHECK(t->peek(a).code() == Errc::corrupt);
    CHECK(t->get(b).code() == Errc::corrupt);
    CHECK(get_ok(*t, c).data == pattern(4096, 3));
    CHECK(put_ok(*t, a, bytes_of("fresh")) == 2);  // a damaged object can be overwritten
    CHECK(get_ok(*t, a).data == bytes_of("fresh"));
}

TEST_CASE("tiered: a torn log tail after the checkpoint is cut at open and appends continue after it") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-tail"));
    TempDir dir;
    const auto a = uri(cleanup.name(), "a"), b = uri(cleanup.name(), "b"), c = uri(cleanup.name(), "c");
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, config_for(dir, 4));
        put_ok(*t, a, pattern(3000, 1));
        put_ok(*t, b, pattern(3000, 2));
        REQUIRE(t->demote_until(0).ok());  // no checkpoint: both records are in the tail
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    const uint64_t size = fs::file_size(log_path(dir));
    fs::resize_file(log_path(dir), size - 10);
    {
        Pool pool = make_pool(cleanup.name());
        std::string note;
        auto t = open_tiered(pool, config_for(dir, 4), &note);
        CHECK(note.find("torn tail") != std::string::npos);
        CHECK(t->stats().recovered_records == 1);
        CHECK(t->stats().discarded_tail_bytes == size - 10 - size / 2);
        CHECK(fs::file_size(log_path(dir)) == size / 2);
        CHECK(get_ok(*t, a).data == pattern(3000, 1));
        auto gb = t->get(b);
        REQUIRE(gb.ok());
        CHECK_FALSE(gb->has_value());
        put_ok(*t, c, pattern(3000, 3));
        REQUIRE(t->demote_until(0).ok());
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    Pool pool = make_pool(cleanup.name());
    auto t = open_tiered(pool, config_for(dir, 4));
    CHECK(t->stats().discarded_tail_bytes == 0);
    CHECK(get_ok(*t, a).data == pattern(3000, 1));
    CHECK(get_ok(*t, c).data == pattern(3000, 3));
}

TEST_CASE("tiered: a damaged index is rebuilt from the log") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-idx"));
    TempDir dir;
    const auto a = uri(cleanup.name(), "a"), b = uri(cleanup.name(), "b");
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, config_for(dir, 1));
        put_ok(*t, a, bytes_of("A"));
        put_ok(*t, b, bytes_of("B"));
        REQUIRE(t->checkpoint(true).ok());
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    flip_byte(dir.cold() + "/cold.index", 20);
    Pool pool = make_pool(cleanup.name());
    std::string note;
    auto t = open_tiered(pool, config_for(dir, 1), &note);
    CHECK(note.find("index damaged") != std::string::npos);
    CHECK(get_ok(*t, a).data == bytes_of("A"));
    CHECK(get_ok(*t, b).data == bytes_of("B"));
}

TEST_CASE("tiered: checkpoint compacts a log that is mostly dead records") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-compact"));
    TempDir dir;
    const auto a = uri(cleanup.name(), "a"), keep = uri(cleanup.name(), "keep");
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, config_for(dir, 4, FsyncPolicy::on_checkpoint));
        put_ok(*t, keep, pattern(1000, 9));
        for (int i = 0; i < 24; ++i) {  // 24 x 64 KiB dead versions
            put_ok(*t, a, pattern(64 << 10, uint8_t(i)));
            REQUIRE(t->demote_until(0).ok());
        }
        const TieredStats before = t->stats();
        CHECK(before.cold_log_bytes > 2 * before.cold_live_bytes);
        REQUIRE(t->checkpoint().ok());
        const TieredStats after = t->stats();
        CHECK(after.compactions == 1);
        CHECK(after.log_generation == 2);
        CHECK(after.cold_log_bytes == after.cold_live_bytes);
        CHECK_FALSE(fs::exists(log_path(dir, 1)));
        CHECK(get_ok(*t, a).data == pattern(64 << 10, 23));
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    Pool pool = make_pool(cleanup.name());
    auto t = open_tiered(pool, config_for(dir, 4));
    CHECK(t->stats().log_generation == 2);
    CHECK(get_ok(*t, a).data == pattern(64 << 10, 23));
    CHECK(get_ok(*t, keep).data == pattern(1000, 9));
}

namespace {

/// Child: opens the pool and the tiered store, arms `point`, runs `body`; exits 0 if the
/// crash point was never reached.
int crash_child(const std::string& pool_name, const TieredConfig& c, const char* point,
                const std::function<void(TieredObjectStore&, const std::string&)>& body) {
    auto pool = Pool::open(pool_name);
    if (!pool) return 10;
    auto t = TieredObjectStore::open(*pool, c);
    if (!t) {
        std::fprintf(stderr, "child: %s\n", t.error().message.c_str());
        return 11;
    }
    ::setenv("FABRIC_SHM_CRASH_POINT", point, 1);
    detail::crash_point_rearm();
    body(**t, pool_name);
    return 0;
}

}  // namespace

TEST_CASE("tiered: SIGKILL in the middle of a demotion's append keeps the object readable from the hot tier") {
    test::TempPool temp("tier-kill1", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    const TieredConfig c = config_for(dir, 1);
    pid_t pid = test::fork_child([&] {
        return crash_child(temp.name(), c, "tiered.append.after_header", [](TieredObjectStore& t, const std::string& p) {
            (void)t.put(FabricUri::make(p, "b", "a").value(), pattern(20000, 1));
            (void)t.put(FabricUri::make(p, "b", "b").value(), pattern(20000, 2));  // demotes a: killed mid-append
        });
    });
    CHECK(test::wait_child(pid) == 128 + SIGKILL);
    std::string note;
    auto t = open_tiered(pool, c, &note);
    CHECK(note.find("torn tail") != std::string::npos);
    CHECK(t->stats().cold_objects == 0);
    CHECK(get_ok(*t, uri(temp.name(), "a")).data == pattern(20000, 1));
    CHECK(get_ok(*t, uri(temp.name(), "b")).data == pattern(20000, 2));
}

TEST_CASE("tiered: SIGKILL between the cold append and the hot removal leaves one readable version") {
    test::TempPool temp("tier-kill2", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    const TieredConfig c = config_for(dir, 1);
    pid_t pid = test::fork_child([&] {
        return crash_child(temp.name(), c, "tiered.demote.before_hot_remove",
                           [](TieredObjectStore& t, const std::string& p) {
                               (void)t.put(FabricUri::make(p, "b", "a").value(), pattern(777, 1));
                               (void)t.put(FabricUri::make(p, "b", "b").value(), pattern(777, 2));
                           });
    });
    CHECK(test::wait_child(pid) == 128 + SIGKILL);
    auto t = open_tiered(pool, c);
    CHECK(t->stats().recovered_records == 1);
    ObjectData a = get_ok(*t, uri(temp.name(), "a"));
    CHECK(a.data == pattern(777, 1));
    CHECK(a.info.version == 1);
    CHECK(get_ok(*t, uri(temp.name(), "b")).data == pattern(777, 2));
}

TEST_CASE("tiered: SIGKILL before the index rename keeps the previous checkpoint") {
    test::TempPool temp("tier-kill3", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    const TieredConfig c = config_for(dir, 1, FsyncPolicy::on_checkpoint);
    {
        auto t = open_tiered(pool, c);
        put_ok(*t, uri(temp.name(), "a"), bytes_of("A"));
        put_ok(*t, uri(temp.name(), "b"), bytes_of("B"));
        REQUIRE(t->checkpoint().ok());
    }
    pid_t pid = test::fork_child([&] {
        return crash_child(temp.name(), c, "tiered.checkpoint.before_rename",
                           [](TieredObjectStore& t, const std::string& p) {
                               (void)t.put(FabricUri::make(p, "b", "c").value(), bytes_of("C"));
                               (void)t.checkpoint(true);
                           });
    });
    CHECK(test::wait_child(pid) == 128 + SIGKILL);
    CHECK(fs::exists(dir.cold() + "/cold.index.tmp"));
    auto t = open_tiered(pool, c);
    CHECK(get_ok(*t, uri(temp.name(), "a")).data == bytes_of("A"));
    CHECK(get_ok(*t, uri(temp.name(), "b")).data == bytes_of("B"));
    CHECK(get_ok(*t, uri(temp.name(), "c")).data == bytes_of("C"));
    REQUIRE(t->checkpoint().ok());
}

TEST_CASE("tiered: a per-object TTL carries into the cold tier; expired cold objects read as absent") {
    test::TempPool temp("tier-ttl", kPoolBytes);
    TempDir dir;
    Pool& pool = temp.pool;
    auto t = open_tiered(pool, config_for(dir, 4));
    const auto a = uri(temp.name(), "short"), b = uri(temp.name(), "long");
    PutOptions o;
    o.ttl = std::chrono::milliseconds(40);
    put_ok(*t, a, bytes_of("a"), o);
    put_ok(*t, b, bytes_of("b"));
    REQUIRE(t->demote_until(0).ok());
    auto h = t->head(a);
    REQUIRE(h.ok());
    REQUIRE(h->has_value());
    CHECK((**h).expires_wall_ns != 0);
    ::usleep(80 * 1000);  // let the 40 ms TTL run out (time must pass; nothing to wait on)
    auto g = t->get(a);
    REQUIRE(g.ok());
    CHECK_FALSE(g->has_value());
    CHECK(t->list(temp.name(), "b", "").value() == std::vector<std::string>{"long"});
    CHECK(get_ok(*t, b).data == bytes_of("b"));
}

TEST_CASE("tiered: every_write syncs each demotion and the objects read back after a restart") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-sync"));
    TempDir dir;
    const auto a = uri(cleanup.name(), "a"), b = uri(cleanup.name(), "b");
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, config_for(dir, 1, FsyncPolicy::every_write));
        put_ok(*t, a, pattern(10000, 4));
        put_ok(*t, b, pattern(10000, 5));
        CHECK(t->remove(a).value());
        put_ok(*t, a, pattern(100, 6));
        REQUIRE(t->checkpoint(true).ok());
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    Pool pool = make_pool(cleanup.name());
    auto t = open_tiered(pool, config_for(dir, 1, FsyncPolicy::every_write));
    ObjectData d = get_ok(*t, a);
    CHECK(d.data == pattern(100, 6));
    CHECK(d.info.version == 2);
    CHECK(get_ok(*t, b).data == pattern(10000, 5));
}

namespace {
/// Runs `body` on its own tiered store over `pool_name` in a child that then SIGKILLs itself
/// (no checkpoint, no destructor), and waits for it.
void run_then_killed(const std::string& pool_name, const TieredConfig& c,
                     const std::function<bool(TieredObjectStore&, const std::string&)>& body) {
    const pid_t pid = test::fork_child([&] {
        auto pool = Pool::open(pool_name);
        if (!pool) return 10;
        auto t = TieredObjectStore::open(*pool, c);
        if (!t || !body(**t, pool_name)) return 11;
        ::kill(::getpid(), SIGKILL);
        return 12;
    });
    REQUIRE(test::wait_child(pid) == 128 + SIGKILL);
}
}  // namespace

TEST_CASE("tiered: a put acknowledged after the last checkpoint by an owner that was killed is kept by the next "
          "owner's checkpoint(include_hot) across the pool's removal") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-untracked"));
    TempDir dir;
    const TieredConfig c = config_for(dir, 8);
    const FabricUri u = uri(cleanup.name(), "k");
    {
        Pool pool = make_pool(cleanup.name());
        run_then_killed(cleanup.name(), c, [&](TieredObjectStore& t, const std::string&) {
            return t.checkpoint(true).ok() && t.put(u, bytes_of("acked")).ok();  // after its checkpoint
        });
        auto t = open_tiered(pool, c);
        CHECK(t->stats().hot_objects == 1);  // tracked: counted against max_hot, demotable
        REQUIRE(t->checkpoint(/*include_hot=*/true).ok());
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    Pool pool = make_pool(cleanup.name());  // the pool is gone: a fresh one
    auto t = open_tiered(pool, c);
    CHECK(get_ok(*t, u).data == bytes_of("acked"));
}

namespace {
/// A client read version 1 of a key; the owner removed it while it had only a hot copy and was
/// killed before any checkpoint. Every condition of the next owner must see the new object
/// under the key as a different version.
void check_removed_hot_only_floor(FsyncPolicy policy) {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-floor-kill"));
    TempDir dir;
    const TieredConfig c = config_for(dir, 8, policy);
    const FabricUri k = uri(cleanup.name(), "k"), k3 = uri(cleanup.name(), "k3");
    Pool pool = make_pool(cleanup.name());
    run_then_killed(cleanup.name(), c, [&](TieredObjectStore& t, const std::string&) {
        // Only hot copies (max_hot 8, no checkpoint): no cold record, no tombstone for them.
        if (t.put(k, bytes_of("old")).value_or(0) != 1) return false;
        for (uint64_t v = 1; v <= 3; ++v)
            if (t.put(k3, bytes_of("old3")).value_or(0) != v) return false;
        return t.remove(k).value_or(false) && t.remove(k3).value_or(false);  // acknowledged, then killed
    });
    auto t = open_tiered(pool, c);
    CHECK(t->tier_of(k) == "absent");
    const uint64_t v = put_ok(*t, k, bytes_of("new"));  // an unrelated object under the same key
    CHECK(v > 3);  // above every version the store removed, k3's 3 included
    // A client still holding version 1 of the removed object must not write over the new one.
    PutOptions stale;
    stale.condition = PutCondition::if_version_equals;
    stale.expected_version = 1;
    CHECK(t->put(k, bytes_of("stale"), stale).code() == Errc::conflict);
    stale.condition = PutCondition::fence_if_version_equals;
    CHECK(t->put(k, bytes_of("stale"), stale).code() == Errc::conflict);
    RemoveOptions stale_rm;
    stale_rm.if_version = 1;
    CHECK(t->remove(k, stale_rm).code() == Errc::conflict);
    CHECK(get_ok(*t, k).data == bytes_of("new"));
    CHECK(get_ok(*t, k).info.version == v);
    PutOptions absent;
    absent.condition = PutCondition::if_absent;
    CHECK(put_ok(*t, k3, bytes_of("new3"), absent) > 3);
    PutOptions fenced;
    fenced.condition = PutCondition::fence;
    fenced.fence_token = 1;
    CHECK(put_ok(*t, uri(cleanup.name(), "fresh"), bytes_of("f"), fenced) > 3);
}
}  // namespace

TEST_CASE("tiered: a key removed while only hot, by an owner killed before any checkpoint, is put again above "
          "its removed version by the next owner") {
    check_removed_hot_only_floor(FsyncPolicy::on_checkpoint);
    check_removed_hot_only_floor(FsyncPolicy::every_write);
}

TEST_CASE("tiered: a key removed while only hot keeps versions above the removed one after a close and the "
          "pool's loss") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-floor-close"));
    TempDir dir;
    const TieredConfig c = config_for(dir, 8);
    const FabricUri k = uri(cleanup.name(), "k");
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, c);
        put_ok(*t, k, bytes_of("a"));
        CHECK(put_ok(*t, k, bytes_of("b")) == 2);
        CHECK(t->remove(k).value());
    }  // closed without a checkpoint
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    Pool pool = make_pool(cleanup.name());
    auto t = open_tiered(pool, c);
    CHECK(put_ok(*t, k, bytes_of("c")) == 3);
}

TEST_CASE("tiered: the store-wide version floor stays one record however many unique keys are put and removed") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-floor-bound"));
    TempDir dir;
    const TieredConfig c = config_for(dir, 8, FsyncPolicy::on_checkpoint);
    constexpr int kKeys = 16000;  // > 1 MiB of superseded floor records: the checkpoint compacts them
    uint64_t last = 0;
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, c);
        REQUIRE(t->checkpoint().ok());
        const auto empty_index = fs::file_size(dir.cold() + "/cold.index");
        for (int i = 0; i < kKeys; ++i) {
            const FabricUri u = uri(cleanup.name(), "u" + std::to_string(i));
            last = put_ok(*t, u, bytes_of("x"));
            REQUIRE(t->remove(u).value());
        }
        CHECK(last == uint64_t(kKeys));  // each new key starts above the previous removal
        REQUIRE(t->checkpoint().ok());
        const TieredStats s = t->stats();
        CHECK(s.compactions == 1);
        // One floor entry in the index and at most one floor record in the log, not one per key.
        CHECK(fs::file_size(dir.cold() + "/cold.index") <= empty_index + 64);
        CHECK(s.cold_log_bytes <= 128);
        CHECK(fs::file_size(log_path(dir, s.log_generation)) == s.cold_log_bytes);
        // The record a store that predates the floor also reads: a format-1 tombstone (type 2)
        // of a key without '/', so never an object's.
        std::string rec(size_t(s.cold_log_bytes), '\0');
        const int fd = ::open(log_path(dir, s.log_generation).c_str(), O_RDONLY);
        REQUIRE(fd >= 0);
        CHECK(::pread(fd, rec.data(), rec.size(), 0) == ssize_t(rec.size()));
        ::close(fd);
        REQUIRE(rec.size() == 88);
        CHECK(rec.substr(0, 4) == "FSCR");
        CHECK((uint8_t(rec[4]) | uint8_t(rec[5]) << 8) == 1);
        CHECK((uint8_t(rec[6]) | uint8_t(rec[7]) << 8) == 2);
        CHECK(rec.substr(64, 18) == "fabric-store-floor");
    }
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    {
        Pool pool = make_pool(cleanup.name());
        auto t = open_tiered(pool, c);
        CHECK(put_ok(*t, uri(cleanup.name(), "u0"), bytes_of("y")) == last + 1);
    }
    // Without the index, the compacted log alone still carries the floor.
    REQUIRE(Pool::remove(cleanup.name(), true).ok());
    REQUIRE(fs::remove(dir.cold() + "/cold.index"));
    Pool pool = make_pool(cleanup.name());
    auto t = open_tiered(pool, c);
    CHECK(put_ok(*t, uri(cleanup.name(), "u1"), bytes_of("z")) > last);
}

TEST_CASE("tiered: a hot-only key whose TTL ran out is put again above every version it had") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-ttl-hot"));
    TempDir dir;
    Pool pool = make_pool(cleanup.name());
    auto t = open_tiered(pool, config_for(dir, 8));
    const FabricUri k = uri(cleanup.name(), "k");
    PutOptions o;
    o.ttl = std::chrono::milliseconds(50);
    CHECK(put_ok(*t, k, bytes_of("a"), o) == 1);
    CHECK(put_ok(*t, k, bytes_of("b"), o) == 2);
    ::usleep(200 * 1000);  // let the TTL run out (time must pass; nothing to wait on)
    CHECK(t->tier_of(k) == "absent");
    const uint64_t v = put_ok(*t, k, bytes_of("c"));
    CHECK(v > 2);  // a client holding version 1 or 2 must not match the new object
    PutOptions stale;
    stale.condition = PutCondition::if_version_equals;
    stale.expected_version = 1;
    auto r = t->put(k, bytes_of("stale"), stale);
    CHECK(r.code() == Errc::conflict);
}

TEST_CASE("tiered: a hot-only key whose TTL ran out keeps its version across a restart, whether a demotion "
          "found it gone or the last checkpoint listed it") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-ttl-hot-restart"));
    TempDir dir;
    const TieredConfig c = config_for(dir, 1, FsyncPolicy::on_checkpoint);
    Pool pool = make_pool(cleanup.name());
    const FabricUri k = uri(cleanup.name(), "k"), j = uri(cleanup.name(), "j"), other = uri(cleanup.name(), "o");
    PutOptions o;
    o.ttl = std::chrono::milliseconds(50);
    uint64_t jv = 0;
    {
        auto t = open_tiered(pool, c);
        put_ok(*t, k, bytes_of("a"), o);
        CHECK(put_ok(*t, k, bytes_of("b"), o) == 2);
        ::usleep(200 * 1000);
        put_ok(*t, other, bytes_of("o"));  // max_hot 1: the demotion finds k gone
        CHECK(t->tier_of(k) == "absent");
    }  // closed without a checkpoint
    {
        auto t = open_tiered(pool, c);
        CHECK(put_ok(*t, k, bytes_of("c")) > 2);
        REQUIRE(t->demote_until(0).ok());
        for (int i = 0; i < 4; ++i) jv = put_ok(*t, j, bytes_of("j"), o);
        REQUIRE(t->checkpoint().ok());  // lists j as hot at version jv
    }
    ::usleep(200 * 1000);  // j's TTL runs out while no owner is open
    auto t = open_tiered(pool, c);
    CHECK(t->tier_of(j) == "absent");
    CHECK(put_ok(*t, j, bytes_of("new")) > jv);
}

TEST_CASE("tiered: removing a key whose cold copy expired keeps its version from being handed out again") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-ttl-cold"));
    TempDir dir;
    Pool pool = make_pool(cleanup.name());
    const TieredConfig c = config_for(dir, 8);
    const FabricUri k = uri(cleanup.name(), "k"), m = uri(cleanup.name(), "m");
    {
        auto t = open_tiered(pool, c);
        PutOptions o;
        o.ttl = std::chrono::milliseconds(100);
        for (const FabricUri& u : {k, m}) {
            put_ok(*t, u, bytes_of("a"), o);
            CHECK(put_ok(*t, u, bytes_of("b"), o) == 2);
        }
        REQUIRE(t->demote_until(0).ok());
        CHECK(t->tier_of(k) == "cold");
        ::usleep(250 * 1000);  // let the TTL run out (time must pass; nothing to wait on)
        for (const FabricUri& u : {k, m}) {
            auto rm = t->remove(u);
            REQUIRE(rm.ok());
            CHECK_FALSE(*rm);  // expired: nothing removed, but its version is not forgotten
        }
        CHECK(put_ok(*t, k, bytes_of("c")) > 2);
        REQUIRE(t->checkpoint().ok());  // an index without m's expired record
    }
    auto t = open_tiered(pool, c);
    CHECK(put_ok(*t, m, bytes_of("d")) > 2);
}

TEST_CASE("tiered: a key removed while it had a cold copy is put again above its removed version when the index "
          "is rebuilt from a compacted log") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-compact-floor"));
    TempDir dir;
    const TieredConfig c = config_for(dir, 8, FsyncPolicy::on_checkpoint);
    Pool pool = make_pool(cleanup.name());
    const FabricUri big = uri(cleanup.name(), "big");
    {
        auto t = open_tiered(pool, c);
        CHECK(put_ok(*t, big, pattern(1536 * 1024, 3)) == 1);
        CHECK(put_ok(*t, big, pattern(1536 * 1024, 4)) == 2);
        REQUIRE(t->checkpoint(true).ok());  // a cold copy at version 2
        REQUIRE(t->remove(big).value());    // tombstone: the key's floor is 2
        REQUIRE(t->checkpoint().ok());      // 1.5 MiB dead: compacts
        CHECK(t->stats().compactions == 1);
    }
    REQUIRE(fs::remove(dir.cold() + "/cold.index"));  // damaged index: rebuilt from the log
    auto t = open_tiered(pool, c);
    CHECK(put_ok(*t, big, bytes_of("y")) > 2);
}

TEST_CASE("tiered: compaction that drops an expired cold record keeps the key's version from being handed out "
          "again") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-compact-ttl"));
    TempDir dir;
    const TieredConfig c = config_for(dir, 8, FsyncPolicy::on_checkpoint);
    Pool pool = make_pool(cleanup.name());
    const FabricUri k = uri(cleanup.name(), "k"), g = uri(cleanup.name(), "g");
    auto t = open_tiered(pool, c);
    PutOptions o;
    o.ttl = std::chrono::milliseconds(300);
    put_ok(*t, k, bytes_of("a"), o);
    CHECK(put_ok(*t, k, bytes_of("b"), o) == 2);
    put_ok(*t, g, pattern(1536 * 1024, 5));
    REQUIRE(t->checkpoint(true).ok());  // cold copies of k (version 2) and g
    REQUIRE(t->demote_until(0).ok());   // only cold now: the hot tier no longer knows k
    REQUIRE(t->remove(g).value());      // 1.5 MiB dead
    ::usleep(400 * 1000);               // k expired
    REQUIRE(t->checkpoint().ok());      // compacts, dropping k's expired record
    CHECK(t->stats().compactions == 1);
    CHECK(put_ok(*t, k, bytes_of("c")) > 2);
}

TEST_CASE("tiered: a compaction that fails leaves the next remove of a hot-only key recorded on the log") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-compact-fail"));
    TempDir dir;
    const TieredConfig c = config_for(dir, 8, FsyncPolicy::on_checkpoint);
    Pool pool = make_pool(cleanup.name());
    const FabricUri x = uri(cleanup.name(), "x"), g = uri(cleanup.name(), "g"), k = uri(cleanup.name(), "k");
    {
        auto t = open_tiered(pool, c);
        PutOptions o;
        o.ttl = std::chrono::milliseconds(300);
        for (int i = 0; i < 5; ++i) put_ok(*t, x, bytes_of("x"), o);  // x at version 5
        put_ok(*t, g, pattern(1536 * 1024, 5));
        REQUIRE(t->demote_until(0).ok());  // cold copies of x (5) and g
        REQUIRE(t->remove(g).value());     // 1.5 MiB dead: the next checkpoint compacts
        CHECK(put_ok(*t, k, bytes_of("k1")) == 1);  // hot only
        ::usleep(400 * 1000);              // x's TTL runs out (time must pass; nothing to wait on)
        REQUIRE(fs::create_directory(dir.cold() + "/cold.index.tmp"));  // the index write fails
        CHECK_FALSE(t->checkpoint().ok());
        CHECK(t->stats().compactions == 0);
        const uint64_t before = t->stats().cold_log_bytes;
        REQUIRE(t->remove(k).value());
        CHECK(t->stats().cold_log_bytes > before);  // its version is on the log before it returned
    }  // closed without a checkpoint (a kill would do the same)
    fs::remove(dir.cold() + "/cold.index.tmp");
    auto t = open_tiered(pool, c);
    CHECK(put_ok(*t, k, bytes_of("k2")) > 1);  // a client holding version 1 must not match it
}

TEST_CASE("tiered: a key with a TTL put again after each expiry does not append to the cold log each time") {
    test::PoolCleanup cleanup(test::unique_pool_name("tier-ttl-churn"));
    TempDir dir;
    const TieredConfig c = config_for(dir, 8, FsyncPolicy::on_checkpoint);
    Pool pool = make_pool(cleanup.name());
    const FabricUri k = uri(cleanup.name(), "k");
    uint64_t last = 0;
    {
        auto t = open_tiered(pool, c);
        PutOptions o;
        o.ttl = std::chrono::milliseconds(20);
        const uint64_t before = t->stats().cold_log_bytes;
        for (int i = 0; i < 20; ++i) {
            const uint64_t v = put_ok(*t, k, bytes_of("v"), o);
            CHECK(v > last);
            last = v;
            ::usleep(40 * 1000);  // the TTL runs out
        }
        CHECK(t->stats().cold_log_bytes - before <= 2 * 88);  // one floor record (reserved ahead), not one per put
    }
    auto t = open_tiered(pool, c);
    CHECK(put_ok(*t, k, bytes_of("w")) > last);  // after a restart too
}
