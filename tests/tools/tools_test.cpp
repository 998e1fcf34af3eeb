// SPDX-License-Identifier: MIT
// Tool behaviour: exit codes, JSON errors, read-only dumping of forged segments, --check,
// pool and lease commands, the reaper, and the SIGBUS guard the dump tool reads under.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <functional>
#include <fstream>
#include <sstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "fabric_shm/clock.h"
#include "fabric_shm/placement_hint.h"
#include "fabric_shm/pool.h"
#include "fault_guard.h"
#include "layout/pool_layout.h"
#include "../support/test_support.h"
#include "pool_impl.h"

using namespace fabric_shm;
using nlohmann::json;

namespace {

struct Run {
    int rc = -1;
    std::string out;
    json doc;  ///< stdout parsed as JSON (null when it does not parse)
};

/// Runs a built tool with arguments; stdout is captured (stderr dropped: warnings must never
/// leak into the JSON on stdout).
Run run_tool(const std::string& tool, const std::string& args) {
    Run r;
    const std::string bin = tool == "fabric-shm" ? "tools/fabric-shm" : "tools/" + std::string(tool == "fabric-shm-dump" ? "dump/" : "reaper/") + tool;
    r.rc = test::run_command(test::build_path(bin) + " " + args + " 2>/dev/null", &r.out);
    r.doc = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    return r;
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

void write_file(const std::string& path, const std::vector<unsigned char>& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

/// Creates a real 1 MiB pool and drops the handle (so the file is a healthy, unattached pool).
void make_pool(const std::string& name) {
    PoolOptions o;
    o.name = name;
    o.size_bytes = kMinPoolSize;
    Result<Pool> p = Pool::create(o);
    REQUIRE_MESSAGE(p.ok(), p.error().message);
}

/// Patches bytes of a pool file in place (forging a corrupt segment).
void patch(const std::string& path, uint64_t offset, const void* data, size_t n) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, data, n, off_t(offset)) == ssize_t(n));
    ::close(fd);
}

std::string error_code(const Run& r) {
    if (!r.doc.is_object() || !r.doc.contains("error")) return "<no JSON error: " + r.out + ">";
    return r.doc["error"].value("code", "<no code>");
}

}  // namespace

TEST_CASE("dump: forged segments each exit 1 with valid JSON and a distinct typed error") {
    std::set<std::string> codes;

    // Each forgery gets its own pool name and cleanup, so nothing is left in /dev/shm.
    auto check_forged = [&](const std::string& tag, const std::function<void(const std::string& name, const std::string& path)>& forge,
                            const std::string& expected) {
        const std::string name = test::unique_pool_name(tag);
        test::PoolCleanup cleanup(name);
        forge(name, Pool::segment_path(name));
        const Run r = run_tool("fabric-shm-dump", "--pool " + name + " --json");
        CHECK_MESSAGE(r.rc == 1, tag << ": " << r.out);
        REQUIRE_MESSAGE(r.doc.is_object(), tag << ": not JSON: " << r.out);
        CHECK(r.doc["error"]["message"].get<std::string>().find(name) != std::string::npos);
        CHECK_MESSAGE(error_code(r) == expected, tag);
        codes.insert(error_code(r));
        // --check fails the same way (it cannot validate what it cannot attach).
        CHECK(run_tool("fabric-shm-dump", "--pool " + name + " --check --json").rc == 1);
    };

    check_forged("zeroed", [](const std::string&, const std::string& path) { write_file(path, std::vector<unsigned char>(1 << 20, 0)); },
                 "not_ready");
    check_forged("truncated",
                 [&](const std::string& name, const std::string& path) {
                     make_pool(name);
                     REQUIRE(::truncate(path.c_str(), 600 * 1024) == 0);
                 },
                 "too_small");
    check_forged("random",
                 [](const std::string&, const std::string& path) {
                     std::mt19937_64 rng(42);
                     std::vector<unsigned char> bytes(1 << 20);
                     for (auto& b : bytes) b = static_cast<unsigned char>(rng());
                     write_file(path, bytes);
                 },
                 "corrupt");
    check_forged("major",
                 [&](const std::string& name, const std::string& path) {
                     make_pool(name);
                     const uint16_t major = layout::kLayoutMajor + 1;
                     patch(path, offsetof(layout::PoolHeader, version_major), &major, sizeof major);
                 },
                 "version_mismatch");
    check_forged("pastend",
                 [&](const std::string& name, const std::string& path) {
                     make_pool(name);
                     const uint64_t offset = uint64_t(kMinPoolSize) + layout::kPageSize;  // past the end
                     patch(path, offsetof(layout::PoolHeader, directory_offset), &offset, sizeof offset);
                 },
                 "corrupt");
    CHECK(codes.size() >= 4);  // not_ready, too_small, corrupt, version_mismatch
}

TEST_CASE("dump: a bumped major version names both versions") {
    const std::string name = test::unique_pool_name("vers");
    test::PoolCleanup cleanup(name);
    make_pool(name);
    const uint16_t major = layout::kLayoutMajor + 1;  // a newer build's pool
    patch(Pool::segment_path(name), offsetof(layout::PoolHeader, version_major), &major, sizeof major);
    const Run r = run_tool("fabric-shm-dump", "--pool " + name + " --json");
    CHECK(r.rc == 1);
    REQUIRE(r.doc.is_object());
    const std::string msg = r.doc["error"]["message"];
    CHECK(msg.find(std::to_string(major) + ".") != std::string::npos);
    CHECK(msg.find(std::to_string(layout::kLayoutMajor)) != std::string::npos);
}

TEST_CASE("dump: --check on a healthy pool exits 0 and reports header, processes, regions and counters") {
    const std::string name = test::unique_pool_name("healthy");
    test::PoolCleanup cleanup(name);
    PoolOptions o;
    o.name = name;
    o.size_bytes = 2 * kMinPoolSize;
    Result<Pool> pool = Pool::create(o);
    REQUIRE_MESSAGE(pool.ok(), pool.error().message);
    RegionSpec spec;
    spec.kind = RegionKind::test;
    spec.name = "r1";
    spec.length = 8192;
    Result<Region> region = pool->create_region(spec);
    REQUIRE_MESSAGE(region.ok(), region.error().message);

    const Run r = run_tool("fabric-shm-dump", "--pool " + name + " --check --json");
    CHECK_MESSAGE(r.rc == 0, r.out);
    REQUIRE_MESSAGE(r.doc.is_object(), r.out);
    CHECK(r.doc["pool"] == name);
    CHECK(r.doc["header"]["version_major"] == layout::kLayoutMajor);
    CHECK(r.doc["header"]["fingerprint_matches_build"] == true);
    CHECK(r.doc["check"]["violations"].empty());
    REQUIRE(r.doc["processes"].size() >= 1);  // this test process
    bool me = false;
    for (const auto& p : r.doc["processes"]) me |= p["pid"] == uint32_t(getpid()) && p["alive"] == true;
    CHECK(me);
    REQUIRE(r.doc["regions"].size() == 1);
    CHECK(r.doc["regions"][0]["name"] == "r1");
    CHECK(r.doc["regions"][0]["state"] == "live");
    CHECK(r.doc["regions"][0]["attached_processes"] == 1);
    CHECK(r.doc["regions"][0]["lease"]["ttl_remaining_ns"].get<int64_t>() > 0);
    CHECK(r.doc["counters"].contains("store_puts"));

    // The text form is printed too, and the dump registered nothing in the pool.
    const Run text = run_tool("fabric-shm-dump", "--pool " + name + " --check");
    CHECK(text.rc == 0);
    CHECK(text.out.find("regions (1)") != std::string::npos);
    CHECK(text.out.find("0 violation(s)") != std::string::npos);
    CHECK(pool->registry().list(MonoClock::now()).size() == 1);
}

TEST_CASE("dump: --check exits 3 when two regions overlap") {
    const std::string name = test::unique_pool_name("overlap");
    test::PoolCleanup cleanup(name);
    PoolOptions o;
    o.name = name;
    o.size_bytes = 2 * kMinPoolSize;
    Result<Pool> pool = Pool::create(o);
    REQUIRE(pool.ok());
    RegionSpec a;
    a.name = "a";
    a.length = 8192;
    RegionSpec b = a;
    b.name = "b";
    Result<Region> ra = pool->create_region(a);
    Result<Region> rb = pool->create_region(b);
    REQUIRE(ra.ok());
    REQUIRE(rb.ok());
    // Forge: b's extent starts inside a's.
    auto& entry = detail::region_entry(*rb);
    entry.offset.store(ra->offset() + layout::kPageSize, std::memory_order_relaxed);  // forging, single-threaded

    const Run r = run_tool("fabric-shm-dump", "--pool " + name + " --check --json");
    CHECK_MESSAGE(r.rc == 3, r.out);
    REQUIRE(r.doc.is_object());
    bool overlap = false;
    for (const auto& v : r.doc["check"]["violations"]) overlap |= v.get<std::string>().find("overlap") != std::string::npos;
    CHECK(overlap);
    entry.offset.store(rb->offset(), std::memory_order_relaxed);  // restore before the handles go
}

TEST_CASE("dump: a missing pool exits 1 with not_found and is not created") {
    const std::string name = test::unique_pool_name("missing");
    test::PoolCleanup cleanup(name);
    const Run r = run_tool("fabric-shm-dump", "--pool " + name + " --json");
    CHECK(r.rc == 1);
    CHECK(error_code(r) == "not_found");
    CHECK_FALSE(exists(Pool::segment_path(name)));
    CHECK(run_tool("fabric-shm", "lease ls --pool " + name + " --json").rc == 1);
    CHECK_FALSE(exists(Pool::segment_path(name)));
}

TEST_CASE("tools: usage errors exit 2 with a JSON error") {
    Run r = run_tool("fabric-shm", "pool create --pool t-usage --size banana --json");
    CHECK(r.rc == 2);
    CHECK(error_code(r) == "invalid_argument");
    r = run_tool("fabric-shm", "pool create --pool t-usage --no-such-option --json");
    CHECK(r.rc == 2);
    CHECK(error_code(r) == "usage");
    r = run_tool("fabric-shm", "no-such-command --json");
    CHECK(r.rc == 2);
    CHECK(error_code(r) == "usage");
    r = run_tool("fabric-shm-dump", "--pool .hidden --json");
    CHECK(r.rc == 2);
    CHECK(error_code(r) == "invalid_name");
    r = run_tool("fabric-shm-reaper", "--watch soon --json");
    CHECK(r.rc == 2);
    CHECK(error_code(r) == "invalid_argument");
    r = run_tool("fabric-shm-dump", "--all --pool x --json");
    CHECK(r.rc == 2);
    CHECK_FALSE(exists(Pool::segment_path("t-usage")));
    CHECK(run_tool("fabric-shm", "--help").rc == 0);
    CHECK(run_tool("fabric-shm-dump", "--help").rc == 0);
    CHECK(run_tool("fabric-shm-reaper", "--help").rc == 0);
}

TEST_CASE("fabric-shm: pool create, ls and rm round trip") {
    const std::string name = test::unique_pool_name("cli");
    test::PoolCleanup cleanup(name);
    Run r = run_tool("fabric-shm", "pool create --pool " + name + " --size 2M --ttl 10m --mode 0640 --json");
    REQUIRE_MESSAGE(r.rc == 0, r.out);
    CHECK(r.doc["created"] == true);
    CHECK(r.doc["size"] == 2 * kMinPoolSize);
    CHECK(r.doc["mode"] == "0640");
    struct stat st {};
    REQUIRE(::stat(Pool::segment_path(name).c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);

    r = run_tool("fabric-shm", "pool create --pool " + name + " --json");
    CHECK(r.rc == 1);
    CHECK(error_code(r) == "already_exists");
    r = run_tool("fabric-shm", "pool create --exist-ok --pool " + name + " --json");
    CHECK(r.rc == 0);
    CHECK(r.doc["created"] == false);

    r = run_tool("fabric-shm", "pool ls --json");
    REQUIRE(r.rc == 0);
    bool listed = false;
    for (const auto& p : r.doc["pools"])
        if (p["pool"] == name) {
            listed = true;
            CHECK(p["state"] == "live");
            CHECK(p["lease"]["ttl_remaining_ns"].get<int64_t>() > 0);
        }
    CHECK(listed);

    r = run_tool("fabric-shm", "lease ls --pool " + name + " --json");
    REQUIRE(r.rc == 0);
    REQUIRE(r.doc["leases"].size() >= 1);
    CHECK(r.doc["leases"][0]["is_pool"] == true);
    r = run_tool("fabric-shm", "lease renew --pool " + name + " --ttl 20m --json");
    CHECK_MESSAGE(r.rc == 0, r.out);
    CHECK(r.doc["leases"][0]["renewed"] == true);
    r = run_tool("fabric-shm", "lease renew 12345 --pool " + name + " --json");
    CHECK(r.rc == 1);

    r = run_tool("fabric-shm", "pool rm --pool " + name + " --json");
    CHECK_MESSAGE(r.rc == 0, r.out);
    CHECK_FALSE(exists(Pool::segment_path(name)));
    r = run_tool("fabric-shm", "pool rm --pool " + name + " --json");
    CHECK(r.rc == 1);
    CHECK(error_code(r) == "not_found");
}

TEST_CASE("fabric-shm: pool rm --force removes a segment that cannot be attached") {
    const std::string name = test::unique_pool_name("rmforce");
    test::PoolCleanup cleanup(name);
    write_file(Pool::segment_path(name), std::vector<unsigned char>(4096, 0xab));
    CHECK(run_tool("fabric-shm", "pool rm --pool " + name + " --json").rc == 1);
    CHECK(run_tool("fabric-shm", "pool rm --force --pool " + name + " --json").rc == 0);
    CHECK_FALSE(exists(Pool::segment_path(name)));
}

TEST_CASE("reaper: a healthy pool loses nothing; a wholly expired pool is removed") {
    const std::string name = test::unique_pool_name("reap");
    test::PoolCleanup cleanup(name);
    {
        PoolOptions o;
        o.name = name;
        o.size_bytes = kMinPoolSize;
        Result<Pool> pool = Pool::create(o);
        REQUIRE_MESSAGE(pool.ok(), pool.error().message);
        Run r = run_tool("fabric-shm-reaper", "--pool " + name + " --json");
        CHECK_MESSAGE(r.rc == 0, r.out);
        REQUIRE(r.doc.is_object());
        CHECK(r.doc["pools"][0]["pool_removed"] == false);
        CHECK(exists(Pool::segment_path(name)));
        // Forge the expiry in memory (no wall-clock wait): the pool lease ran out a second ago.
        auto& lease = detail::pool_header(*pool).lease;
        lease.expires_ns.store(mono_now_ns() - kNsPerSec, std::memory_order_release);  // read by the reaper's acquire
    }
    Run r = run_tool("fabric-shm-reaper", "--pool " + name + " --dry-run --json");
    CHECK_MESSAGE(r.rc == 0, r.out);
    CHECK(r.doc["pools"][0]["pool_removed"] == true);  // would remove
    CHECK(exists(Pool::segment_path(name)));
    r = run_tool("fabric-shm-reaper", "--pool " + name + " --json");
    CHECK_MESSAGE(r.rc == 0, r.out);
    CHECK(r.doc["pools"][0]["pool_removed"] == true);
    CHECK_FALSE(exists(Pool::segment_path(name)));
}

TEST_CASE("reaper: removes the old temporary segment of a dead creator, keeps a live or fresh one") {
    const std::string name = test::unique_pool_name("tmp");
    test::PoolCleanup cleanup(name);
    const pid_t child = test::fork_child([] { return 0; });
    REQUIRE(test::wait_child(child) == 0);  // reaped: its pid is gone
    const std::string dead = Pool::segment_path(name) + ".tmp-" + std::to_string(child) + "-0123456789abcdef";
    const std::string live = Pool::segment_path(name) + ".tmp-" + std::to_string(getpid()) + "-fedcba9876543210";
    const std::string young = Pool::segment_path(name) + ".tmp-" + std::to_string(child) + "-00000000000000aa";
    write_file(dead, std::vector<unsigned char>(4096, 0));
    write_file(live, std::vector<unsigned char>(4096, 0));
    write_file(young, std::vector<unsigned char>(4096, 0));
    // A killed creation is old news; a fresh one may belong to a creator in another pid namespace.
    const struct timespec old_times[2] = {{::time(nullptr) - 60, 0}, {::time(nullptr) - 60, 0}};
    REQUIRE(::utimensat(AT_FDCWD, dead.c_str(), old_times, 0) == 0);
    REQUIRE(::utimensat(AT_FDCWD, live.c_str(), old_times, 0) == 0);
    const Run r = run_tool("fabric-shm-reaper", "--pool " + name + " --json");
    CHECK_MESSAGE(r.rc == 0, r.out);
    CHECK_FALSE(exists(dead));
    CHECK(exists(live));
    CHECK(exists(young));
    ::unlink(live.c_str());
    ::unlink(young.c_str());
}

TEST_CASE("dump: reading a segment truncated after mapping returns corrupt instead of crashing") {
    const std::string name = test::unique_pool_name("sigbus");
    test::PoolCleanup cleanup(name);
    const std::string path = Pool::segment_path(name);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 2 * 4096) == 0);
    void* map = ::mmap(nullptr, 2 * 4096, PROT_READ, MAP_SHARED, fd, 0);
    REQUIRE(map != MAP_FAILED);
    REQUIRE(::ftruncate(fd, 0) == 0);  // another process truncates it under us
    volatile const unsigned char* bytes = static_cast<const unsigned char*>(map);
    unsigned sum = 0;
    Status s = cli::read_guarded(
        [&]() -> Status {
            sum += bytes[4096];  // SIGBUS: past the new end of file
            return {};
        },
        "pool '" + name + "'");
    CHECK(s.code() == Errc::corrupt);
    CHECK(s.error().message.find("SIGBUS") != std::string::npos);
    // The guard re-arms: a second fault is caught too, and a clean read succeeds.
    Status again = cli::read_guarded(
        [&]() -> Status {
            sum += bytes[4096 + 1];
            return {};
        },
        "again");
    CHECK(again.code() == Errc::corrupt);
    CHECK(cli::read_guarded([]() -> Status { return {}; }, "clean").ok());
    ::munmap(map, 2 * 4096);
    ::close(fd);
}

TEST_CASE("fabric-shm: topic create/ls/describe/rm, send and tail round-trip messages with keys and headers") {
    const std::string name = test::unique_pool_name("topiccli");
    test::PoolCleanup cleanup(name);
    const std::string pool = " --pool " + name;
    Run r = run_tool("fabric-shm", "topic create events --partitions 2 --json" + pool);
    REQUIRE(r.rc == 0);
    CHECK(r.doc["partitions"] == 2);
    CHECK(r.doc["on_full"] == "block");
    CHECK(error_code(run_tool("fabric-shm", "topic create events --json" + pool)) == "already_exists");
    CHECK(run_tool("fabric-shm", "topic create odd --capacity 100 --json" + pool).rc == 2);
    CHECK(run_tool("fabric-shm", "send events hello --key k1 --header h=v --json" + pool).rc == 0);
    CHECK(run_tool("fabric-shm", "send events world --key k1 --json" + pool).rc == 0);
    Run missing = run_tool("fabric-shm", "send nosuch x --json" + pool);
    CHECK(missing.rc == 1);
    CHECK(error_code(missing) == "not_found");

    std::string out;
    REQUIRE(test::run_command(test::build_path("tools/fabric-shm") + " tail events --json" + pool, &out) == 0);
    std::vector<json> lines;
    std::istringstream in(out);
    for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
    REQUIRE(lines.size() == 2);
    // Same key, same partition, in send order.
    CHECK(lines[0]["partition"] == lines[1]["partition"]);
    CHECK(lines[0]["value"] == "hello");
    CHECK(lines[0]["headers"]["h"] == "v");
    CHECK(lines[1]["value"] == "world");

    // A group reading with --commit moves its offsets; the next committed tail sees nothing new.
    REQUIRE(test::run_command(test::build_path("tools/fabric-shm") + " tail events --group g --commit --json" + pool, &out) == 0);
    out.clear();
    REQUIRE(test::run_command(test::build_path("tools/fabric-shm") + " tail events --group g --from committed --json" + pool,
                              &out) == 0);
    CHECK(out.empty());

    Run ls = run_tool("fabric-shm", "topic ls --json" + pool);
    REQUIRE(ls.rc == 0);
    CHECK(ls.doc["topics"].size() == 1);
    CHECK(run_tool("fabric-shm", "topic rm events --json" + pool).rc == 0);
    CHECK(error_code(run_tool("fabric-shm", "topic describe events --json" + pool)) == "not_found");
}

TEST_CASE("fabric-shm: put --notify fans out to every topic and names the topics it could not notify") {
    const std::string name = test::unique_pool_name("notify");
    test::PoolCleanup cleanup(name);
    const std::string pool = " --pool " + name;
    REQUIRE(run_tool("fabric-shm", "topic create a --json" + pool).rc == 0);
    REQUIRE(run_tool("fabric-shm", "topic create b --json" + pool).rc == 0);
    const std::string put = test::build_path("tools/fabric-shm") + " put fabric://" + name + "/uploads/k ";
    std::string out;
    REQUIRE(test::run_command("echo hi | " + put + "- --notify a --notify b --json", &out) == 0);
    json doc = json::parse(out);
    CHECK(doc["notified"].size() == 2);
    out.clear();
    CHECK(test::run_command("echo hi | " + put + "- --notify a --notify missing --json", &out) == 1);
    doc = json::parse(out);
    CHECK(doc["version"] == 2);  // the object stays
    CHECK(doc["notified"][1]["error"]["code"] == "not_found");
    out.clear();
    REQUIRE(test::run_command(test::build_path("tools/fabric-shm") + " tail a --json" + pool, &out) == 0);
    std::istringstream in(out);
    std::vector<json> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
    REQUIRE(lines.size() == 2);
    CHECK(lines[1]["value"] == "fabric://" + name + "/uploads/k");
    CHECK(lines[1]["headers"]["fabric-version"] == "2");
    // Where the object lies, for the workers' prefetch: 16 hex digits naming a block.
    const std::string placed = lines[1]["headers"].value("fabric-at", "");
    CHECK(placed.size() == 16);
    CHECK_FALSE(PlacementHint::parse(placed).empty());
}

TEST_CASE("fabric-shm: ls --older-than and rm --prefix clean up what is old under a prefix and nothing else") {
    const std::string name = test::unique_pool_name("rmprefix");
    test::PoolCleanup cleanup(name);
    const std::string base = "fabric://" + name + "/";
    for (const char* key : {"uploads/a1", "uploads/a2", "uploads/b1", "other/a3"})
        REQUIRE(test::run_command("echo x | " + test::build_path("tools/fabric-shm") + " put " + base + key + " - 2>/dev/null") == 0);
    // Young objects are not older than an hour: listed by nothing, removed by nothing.
    Run r = run_tool("fabric-shm", "ls " + base + "uploads/ --older-than 1h --json");
    REQUIRE(r.rc == 0);
    CHECK(r.doc["keys"].empty());
    r = run_tool("fabric-shm", "rm --prefix " + base + "uploads/ --older-than 1h --json");
    REQUIRE(r.rc == 0);
    CHECK(r.doc["removed"] == 0);
    // Once they are older than the age given, they are listed.
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    r = run_tool("fabric-shm", "ls " + base + "uploads/a --older-than 10ms --json");
    REQUIRE(r.rc == 0);
    CHECK(r.doc["keys"] == json::array({"a1", "a2"}));
    // --dry-run names them and removes nothing.
    r = run_tool("fabric-shm", "rm --prefix " + base + "uploads/a --dry-run --json");
    REQUIRE(r.rc == 0);
    CHECK(r.doc["keys"] == json::array({"a1", "a2"}));
    CHECK(run_tool("fabric-shm", "ls " + base + "uploads/ --json").doc["keys"].size() == 3);
    // The prefix bounds what goes: uploads/b1 and the other bucket stay.
    r = run_tool("fabric-shm", "rm --prefix " + base + "uploads/a --older-than 10ms --json");
    REQUIRE(r.rc == 0);
    CHECK(r.doc["removed"] == 2);
    CHECK(run_tool("fabric-shm", "ls " + base + "uploads/ --json").doc["keys"] == json::array({"b1"}));
    CHECK(run_tool("fabric-shm", "ls " + base + "other/ --json").doc["keys"] == json::array({"a3"}));
    // A prefix flag and an object URI together are a usage error.
    CHECK(run_tool("fabric-shm", "rm " + base + "uploads/b1 --prefix " + base + "uploads/ --json").rc == 2);
}
