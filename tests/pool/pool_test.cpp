// SPDX-License-Identifier: MIT
// Pool creation, attach validation, racing creators, crash points while creating.
#include <doctest/doctest.h>
#include <signal.h>
#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "../support/test_support.h"
#include "crash_point.h"
#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"

using namespace fabric_shm;
namespace fs = std::filesystem;

namespace {
void write_file(const std::string& path, const std::vector<char>& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
}
std::vector<char> read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
size_t temp_files_of(const std::string& name) {
    const std::string prefix = fs::path(Pool::segment_path(name)).filename().string() + ".tmp-";
    size_t n = 0;
    for (auto& e : fs::directory_iterator(fs::path(Pool::segment_path(name)).parent_path()))
        if (e.path().filename().string().rfind(prefix, 0) == 0) ++n;
    return n;
}
}  // namespace

TEST_CASE("pool: create publishes a validated segment that a second open attaches to") {
    test::PoolCleanup cleanup(test::unique_pool_name("create"));
    auto created = Pool::create({cleanup.name(), 2 << 20, std::chrono::hours(1), 0600, -1});
    REQUIRE(created);
    CHECK(created->self() != 0);
    struct stat st {};
    REQUIRE(stat(Pool::segment_path(cleanup.name()).c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(uint64_t(st.st_size) == (2u << 20));
    auto attached = Pool::open(cleanup.name());
    REQUIRE(attached);
    CHECK(attached->settings().incarnation == created->settings().incarnation);
    CHECK(attached->self() != created->self());
    CHECK(temp_files_of(cleanup.name()) == 0);
}

TEST_CASE("pool: creating an existing pool fails with already_exists and changes nothing") {
    test::PoolCleanup cleanup(test::unique_pool_name("dup"));
    auto first = Pool::create({cleanup.name(), 2 << 20});
    REQUIRE(first);
    auto second = Pool::create({cleanup.name(), 4 << 20});
    CHECK(second.code() == Errc::already_exists);
    CHECK(first->size() == (2u << 20));
    CHECK(temp_files_of(cleanup.name()) == 0);
}

TEST_CASE("pool: created() says whether the call that returned the handle made the segment") {
    test::PoolCleanup cleanup(test::unique_pool_name("made"));
    OpenOptions create_if_missing;
    create_if_missing.create_if_missing = true;
    create_if_missing.create.size_bytes = 2 << 20;
    auto made = Pool::open(cleanup.name(), create_if_missing);  // missing: this call creates it
    REQUIRE(made);
    CHECK(made->created());
    auto again = Pool::open(cleanup.name(), create_if_missing);  // present: attaches
    REQUIRE(again);
    CHECK_FALSE(again->created());
    CHECK_FALSE(Pool::open(cleanup.name())->created());
    CHECK(Pool::create({cleanup.name(), 2 << 20}).code() == Errc::already_exists);

    test::PoolCleanup other(test::unique_pool_name("made2"));
    auto direct = Pool::create({other.name(), 2 << 20});
    REQUIRE(direct);
    CHECK(direct->created());
}

TEST_CASE("pool: opening a missing pool is not_found and lists existing pools") {
    test::PoolCleanup cleanup(test::unique_pool_name("exists"));
    REQUIRE(Pool::create({cleanup.name(), 2 << 20}));
    auto r = Pool::open(test::unique_pool_name("missing"));
    CHECK(r.code() == Errc::not_found);
    CHECK(r.error().message.find(cleanup.name()) != std::string::npos);
}

TEST_CASE("pool: invalid names and sizes are rejected before any file is created") {
    CHECK(Pool::create({"../etc", 2 << 20}).code() == Errc::invalid_name);
    CHECK(Pool::open("a/b").code() == Errc::invalid_name);
    const std::string name = test::unique_pool_name("size");
    test::PoolCleanup cleanup(name);
    CHECK(Pool::create({name, 1000}).code() == Errc::invalid_argument);
    CHECK(!fs::exists(Pool::segment_path(name)));
}

TEST_CASE("pool: a pool larger than the free space of /dev/shm fails at creation with no_space") {
    test::PoolCleanup cleanup(test::unique_pool_name("huge"));
    auto r = Pool::create({cleanup.name(), 1ull << 40});
    CHECK(r.code() == Errc::no_space);
    CHECK(r.error().message.find("free") != std::string::npos);
    CHECK(!fs::exists(Pool::segment_path(cleanup.name())));
    CHECK(temp_files_of(cleanup.name()) == 0);
}

TEST_CASE("pool: attach to damaged segments yields distinct typed errors, never a crash") {
    test::PoolCleanup cleanup(test::unique_pool_name("damaged"));
    const std::string path = Pool::segment_path(cleanup.name());
    { REQUIRE(Pool::create({cleanup.name(), 2 << 20})); }
    const std::vector<char> good = read_file(path);
    REQUIRE(good.size() == (2u << 20));

    SUBCASE("zeroed file") {
        write_file(path, std::vector<char>(good.size(), 0));
        CHECK(Pool::open(cleanup.name()).code() == Errc::not_ready);
    }
    SUBCASE("empty file") {
        write_file(path, {});
        CHECK(Pool::open(cleanup.name()).code() == Errc::not_ready);
    }
    SUBCASE("truncated file") {
        write_file(path, std::vector<char>(good.begin(), good.begin() + (1 << 20)));
        CHECK(Pool::open(cleanup.name()).code() == Errc::too_small);
        write_file(path, std::vector<char>(good.begin(), good.begin() + 100));
        CHECK(Pool::open(cleanup.name()).code() == Errc::too_small);
    }
    SUBCASE("random bytes") {
        std::vector<char> junk(good.size());
        std::mt19937 rng(7);
        for (char& c : junk) c = char(rng());
        write_file(path, junk);
        CHECK(Pool::open(cleanup.name()).code() == Errc::corrupt);
    }
    SUBCASE("bumped major version") {
        std::vector<char> bumped = good;
        const uint16_t major = layout::kLayoutMajor + 1;  // memcpy: the vector is not 4 KiB aligned
        std::memcpy(bumped.data() + offsetof(layout::PoolHeader, version_major), &major, sizeof major);
        write_file(path, bumped);
        auto r = Pool::open(cleanup.name());
        CHECK(r.code() == Errc::version_mismatch);
        CHECK(r.error().message.find(std::to_string(layout::kLayoutMajor + 1) + ".") != std::string::npos);
    }
    SUBCASE("data area past the end") {
        std::vector<char> bad = good;
        uint64_t pool_size = 0;  // memcpy: the vector is not 4 KiB aligned
        std::memcpy(&pool_size, bad.data() + offsetof(layout::PoolHeader, pool_size), sizeof pool_size);
        // data_offset + data_size > pool_size
        std::memcpy(bad.data() + offsetof(layout::PoolHeader, data_size), &pool_size, sizeof pool_size);
        write_file(path, bad);
        auto r = Pool::open(cleanup.name());
        CHECK(r.code() == Errc::corrupt);
        CHECK(r.error().message.find("past the end") != std::string::npos);
    }
}

TEST_CASE("pool: racing creators end with one pool that every racer attaches to") {
    test::PoolCleanup cleanup(test::unique_pool_name("race"));
    const std::string name = cleanup.name();
    std::vector<pid_t> kids;
    for (int i = 0; i < 6; ++i)
        kids.push_back(test::fork_child([&] {
            OpenOptions o;
            o.create_if_missing = true;
            o.create.size_bytes = 2 << 20;
            auto p = Pool::open(name, o);
            if (!p) return 1;
            // Report the incarnation through a file named after it.
            std::ofstream(Pool::segment_path(name) + ".inc-" + std::to_string(getpid()))
                << p->settings().incarnation;
            return 0;
        }));
    for (pid_t k : kids) CHECK(test::wait_child(k) == 0);
    auto p = Pool::open(name);
    REQUIRE(p);
    for (pid_t k : kids) {
        const std::string f = Pool::segment_path(name) + ".inc-" + std::to_string(k);
        uint64_t inc = 0;
        std::ifstream(f) >> inc;
        CHECK(inc == p->settings().incarnation);
        fs::remove(f);
    }
    CHECK(temp_files_of(name) == 0);
}

TEST_CASE("pool: a creator killed at any creation step leaves nothing under the real name") {
    for (const char* point : {"pool.create.tmp_created", "pool.create.before_magic", "pool.create.before_link"}) {
        CAPTURE(point);
        test::PoolCleanup cleanup(test::unique_pool_name("crashcreate"));
        const std::string name = cleanup.name();
        pid_t kid = test::fork_child([&] {
            setenv("FABRIC_SHM_CRASH_POINT", point, 1);
            detail::crash_point_rearm();
            auto p = Pool::create({name, 2 << 20});
            return 0;  // not reached
        });
        CHECK(test::wait_child(kid) == 128 + SIGKILL);
        CHECK(!fs::exists(Pool::segment_path(name)));
        // The next creator succeeds; the dead creator's temp file is garbage a reaper removes.
        auto p = Pool::create({name, 2 << 20});
        REQUIRE(p);
        CHECK(p->lifecycle() == "live");
    }
}

// --numa-node: the segment's pages must be placed on the node when they are allocated (by the
// creator's posix_fallocate), not bound afterwards (mbind moves nothing that exists). Checked on
// any machine, one node included: a creator stopped right after binding leaves a temp file with
// the policy and no page yet, and every page of a created pool is on the node.
TEST_CASE("pool: a NUMA-bound pool gets its policy before any page exists, and every page lands on the node") {
    if (numa_available() < 0) {
        MESSAGE("NUMA is not available here: skipped");
        return;
    }
    test::PoolCleanup cleanup(test::unique_pool_name("numa"));
    const std::string name = cleanup.name();
    constexpr uint64_t kSize = 2 << 20;
    auto policy_of = [](void* addr) {
        int mode = -1;
        unsigned long nodes[16] = {};
        REQUIRE(get_mempolicy(&mode, nodes, sizeof nodes * 8, addr, MPOL_F_ADDR) == 0);
        return std::pair<int, unsigned long>{mode, nodes[0]};
    };

    pid_t kid = test::fork_child([&] {
        setenv("FABRIC_SHM_CRASH_POINT", "pool.create.numa_bound", 1);
        detail::crash_point_rearm();
        auto p = Pool::create({name, kSize, std::chrono::hours(1), 0600, 0});
        return 0;  // not reached
    });
    REQUIRE(test::wait_child(kid) == 128 + SIGKILL);
    REQUIRE(temp_files_of(name) == 1);
    const std::string prefix = fs::path(Pool::segment_path(name)).filename().string() + ".tmp-";
    for (auto& e : fs::directory_iterator(fs::path(Pool::segment_path(name)).parent_path())) {
        if (e.path().filename().string().rfind(prefix, 0) != 0) continue;
        struct stat st {};
        REQUIRE(::stat(e.path().c_str(), &st) == 0);
        CHECK(uint64_t(st.st_size) == kSize);
        CHECK(st.st_blocks == 0);  // bound, and not one page allocated yet
        const int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        void* map = mmap(nullptr, kSize, PROT_READ, MAP_SHARED, fd, 0);
        ::close(fd);
        REQUIRE(map != MAP_FAILED);
        const auto [mode, nodes] = policy_of(map);  // the file's shared policy, seen by any mapper
        CHECK(mode == MPOL_BIND);
        CHECK(nodes == 1ul);
        munmap(map, kSize);
        fs::remove(e.path());
    }

    auto p = Pool::create({name, kSize, std::chrono::hours(1), 0600, 0});
    REQUIRE(p);
    std::byte* base = detail::pool_base(*p);
    const auto [mode, nodes] = policy_of(base);
    CHECK(mode == MPOL_BIND);
    CHECK(nodes == 1ul);
    std::vector<void*> pages;
    for (uint64_t off = 0; off < kSize; off += 4096) {
        pages.push_back(base + off);
        (void)*reinterpret_cast<volatile const unsigned char*>(base + off);  // map it into this process
    }
    std::vector<int> where(pages.size(), -1);
    REQUIRE(move_pages(0, pages.size(), pages.data(), nullptr, where.data(), 0) == 0);
    CHECK(std::count(where.begin(), where.end(), 0) == long(pages.size()));
}

TEST_CASE("pool: a creator killed right after publishing leaves a valid pool others attach to") {
    test::PoolCleanup cleanup(test::unique_pool_name("crashlink"));
    const std::string name = cleanup.name();
    pid_t kid = test::fork_child([&] {
        setenv("FABRIC_SHM_CRASH_POINT", "pool.create.after_link", 1);
        detail::crash_point_rearm();
        auto p = Pool::create({name, 2 << 20});
        return 0;
    });
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    auto p = Pool::open(name);
    REQUIRE(p);
    CHECK(p->lifecycle() == "live");
}

TEST_CASE("pool: remove refuses while other live processes are attached, unless forced") {
    test::PoolCleanup cleanup(test::unique_pool_name("rm"));
    auto owner = Pool::create({cleanup.name(), 2 << 20});
    REQUIRE(owner);
    int to_child[2];
    REQUIRE(pipe(to_child) == 0);
    pid_t kid = test::fork_child([&] {
        auto p = Pool::open(cleanup.name());
        char c;
        if (read(to_child[0], &c, 1) != 1) return 2;  // hold the registration until told
        return p ? 0 : 1;
    });
    // Wait until the child registered.
    for (int i = 0; i < 2000 && owner->registry().list(MonoClock::now()).size() < 2; ++i) usleep(1000);
    REQUIRE(owner->registry().list(MonoClock::now()).size() == 2);
    auto refused = Pool::remove(cleanup.name(), false);
    CHECK(refused.code() == Errc::busy);
    CHECK(fs::exists(Pool::segment_path(cleanup.name())));
    CHECK(Pool::remove(cleanup.name(), true));
    CHECK(!fs::exists(Pool::segment_path(cleanup.name())));
    CHECK(owner->lifecycle() == "gone");
    REQUIRE(write(to_child[1], "x", 1) == 1);
    CHECK(test::wait_child(kid) == 0);
    close(to_child[0]);
    close(to_child[1]);
}

TEST_CASE("pool: remove --force deletes a segment that cannot be attached") {
    test::PoolCleanup cleanup(test::unique_pool_name("rmjunk"));
    write_file(Pool::segment_path(cleanup.name()), std::vector<char>(8192, 'j'));
    CHECK(Pool::remove(cleanup.name(), false).code() == Errc::corrupt);
    CHECK(Pool::remove(cleanup.name(), true));
    CHECK(!fs::exists(Pool::segment_path(cleanup.name())));
}

TEST_CASE("pool: a read-only open never registers and never creates") {
    const std::string name = test::unique_pool_name("ro");
    test::PoolCleanup cleanup(name);
    OpenOptions ro;
    ro.read_only = true;
    CHECK(Pool::open(name, ro).code() == Errc::not_found);
    CHECK(!fs::exists(Pool::segment_path(name)));
    REQUIRE(Pool::create({name, 2 << 20}));
    auto p = Pool::open(name, ro);
    REQUIRE(p);
    CHECK(p->self() == 0);
    CHECK(p->registry().list(MonoClock::now()).empty());
}
