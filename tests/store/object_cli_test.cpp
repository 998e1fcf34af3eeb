// SPDX-License-Identifier: MIT
// `fabric-shm put|get|head|rm|ls` end to end through the real binary: bytes round-trip
// through stdin/stdout, exit codes (0 ok, 1 runtime, 2 usage), "not found: URI", read
// commands never create a pool, --pool must agree with the URI.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../support/test_support.h"
#include "fabric_shm/pool.h"

using namespace fabric_shm;
namespace fs = std::filesystem;

namespace {

std::string cli() { return test::build_path("tools/fabric-shm"); }

/// Runs `fabric-shm ARGS` with stdin from `input_file` (or /dev/null); stdout (+stderr with
/// merge) into *out.
int run(const std::string& args, std::string* out = nullptr, const std::string& input_file = "/dev/null",
        bool merge = false) {
    std::string cmd = "'" + cli() + "' " + args + " < '" + input_file + "'" + (merge ? " 2>&1" : " 2>/dev/null");
    return test::run_command(cmd, out);
}

class TempFile {
public:
    explicit TempFile(const std::string& content) {
        std::string tmpl = (fs::temp_directory_path() / "fabric-cli-XXXXXX").string();
        int fd = ::mkstemp(tmpl.data());
        REQUIRE(fd >= 0);
        REQUIRE(::write(fd, content.data(), content.size()) == ssize_t(content.size()));
        ::close(fd);
        path_ = tmpl;
    }
    ~TempFile() {
        std::error_code ec;
        fs::remove(path_, ec);
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

}  // namespace

TEST_CASE("object cli: put creates the pool and round-trips binary bytes through get") {
    test::PoolCleanup cleanup(test::unique_pool_name("cli-rt"));
    const std::string uri = "fabric://" + cleanup.name() + "/uploads/dir/img-042.bin";
    std::string payload("\x00\x01\xffhello\nworld\x00", 14);
    TempFile in(payload);
    CHECK_FALSE(fs::exists(Pool::segment_path(cleanup.name())));
    std::string out;
    REQUIRE(run("put " + uri + " -", &out, in.path()) == 0);
    CHECK(out == "1\n");
    CHECK(fs::exists(Pool::segment_path(cleanup.name())));
    out.clear();
    REQUIRE(run("put " + uri + " " + in.path(), &out) == 0);  // from a FILE argument
    CHECK(out == "2\n");
    out.clear();
    REQUIRE(run("get " + uri, &out) == 0);
    CHECK(out == payload);

    TempFile dest("");
    REQUIRE(run("get " + uri + " -o " + dest.path()) == 0);
    std::ifstream f(dest.path(), std::ios::binary);
    std::string got((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    CHECK(got == payload);
}

TEST_CASE("object cli: head shows size, version, CRC, content type and metadata") {
    test::PoolCleanup cleanup(test::unique_pool_name("cli-head"));
    const std::string uri = "fabric://" + cleanup.name() + "/b/k";
    TempFile in("123456789");
    REQUIRE(run("put " + uri + " --content-type text/plain --meta owner=ci --meta 'list=a,b' --meta=empty=", nullptr,
                in.path()) == 0);
    std::string out;
    REQUIRE(run("head " + uri + " --json", &out) == 0);
    auto doc = nlohmann::json::parse(out);
    CHECK(doc["uri"] == uri);
    CHECK(doc["size"] == 9);
    CHECK(doc["version"] == 1);
    CHECK(doc["crc32"] == "0xcbf43926");
    CHECK(doc["content_type"] == "text/plain");
    CHECK(doc["metadata"]["owner"] == "ci");
    CHECK(doc["metadata"]["list"] == "a,b");
    CHECK(doc["metadata"]["empty"] == "");
    out.clear();
    REQUIRE(run("head " + uri, &out) == 0);
    CHECK(out.find("0xcbf43926") != std::string::npos);
    CHECK(out.find("meta.owner") != std::string::npos);
}

TEST_CASE("object cli: a missing object exits 1 with \"not found: URI\"") {
    test::PoolCleanup cleanup(test::unique_pool_name("cli-miss"));
    const std::string uri = "fabric://" + cleanup.name() + "/b/none";
    TempFile in("x");
    REQUIRE(run("put fabric://" + cleanup.name() + "/b/other", nullptr, in.path()) == 0);
    for (const char* cmd : {"get", "head", "rm"}) {
        std::string out;
        CHECK(run(std::string(cmd) + " " + uri, &out, "/dev/null", true) == 1);
        CHECK(out.find("not found: " + uri) != std::string::npos);
    }
    std::string out;
    CHECK(run("head " + uri + " --json", &out) == 1);
    CHECK(nlohmann::json::parse(out)["error"]["code"] == "not_found");
}

TEST_CASE("object cli: get, head, rm and ls never create a pool") {
    test::PoolCleanup cleanup(test::unique_pool_name("cli-nocreate"));
    const std::string uri = "fabric://" + cleanup.name() + "/b/k";
    CHECK(run("get " + uri) == 1);
    CHECK(run("head " + uri) == 1);
    CHECK(run("rm " + uri) == 1);
    CHECK(run("ls fabric://" + cleanup.name() + "/b/") == 1);
    CHECK_FALSE(fs::exists(Pool::segment_path(cleanup.name())));
}

TEST_CASE("object cli: ls lists keys by prefix, sorted; rm removes") {
    test::PoolCleanup cleanup(test::unique_pool_name("cli-ls"));
    const std::string base = "fabric://" + cleanup.name() + "/logs/";
    TempFile in("x");
    for (const char* k : {"2024/03", "2024/01", "2023/12", "2024/02"}) REQUIRE(run("put " + base + k, nullptr, in.path()) == 0);
    std::string out;
    REQUIRE(run("ls " + base + "2024/", &out) == 0);
    CHECK(out == "2024/01\n2024/02\n2024/03\n");
    out.clear();
    REQUIRE(run("ls " + base + " --json", &out) == 0);
    CHECK(nlohmann::json::parse(out)["keys"].size() == 4);
    out.clear();
    REQUIRE(run("ls fabric://" + cleanup.name() + "/empty", &out) == 0);
    CHECK(out.empty());
    REQUIRE(run("rm " + base + "2024/02") == 0);
    out.clear();
    REQUIRE(run("ls " + base + "2024/", &out) == 0);
    CHECK(out == "2024/01\n2024/03\n");
}

TEST_CASE("object cli: conditional put and rm report conflicts with exit 1") {
    test::PoolCleanup cleanup(test::unique_pool_name("cli-cond"));
    const std::string uri = "fabric://" + cleanup.name() + "/b/k";
    TempFile in("x");
    REQUIRE(run("put " + uri + " --if-absent", nullptr, in.path()) == 0);
    std::string out;
    CHECK(run("put " + uri + " --if-absent --json", &out, in.path()) == 1);
    CHECK(nlohmann::json::parse(out)["error"]["code"] == "conflict");
    out.clear();
    REQUIRE(run("head " + uri + " --json", &out) == 0);
    const uint64_t v = nlohmann::json::parse(out)["version"].get<uint64_t>();
    CHECK(run("put " + uri + " --if-version " + std::to_string(v + 5), nullptr, in.path()) == 1);
    out.clear();
    REQUIRE(run("put " + uri + " --if-version " + std::to_string(v) + " --json", &out, in.path()) == 0);
    const uint64_t v2 = nlohmann::json::parse(out)["version"].get<uint64_t>();
    CHECK(v2 > v);
    CHECK(run("rm " + uri + " --if-version " + std::to_string(v)) == 1);
    CHECK(run("rm " + uri + " --if-version " + std::to_string(v2)) == 0);
    CHECK(run("put " + uri + " --if-absent --if-version 1", nullptr, in.path()) == 2);
}

TEST_CASE("object cli: usage errors exit 2: bad URI, a --pool that differs from the URI, unknown options") {
    test::PoolCleanup cleanup(test::unique_pool_name("cli-usage"));
    const std::string uri = "fabric://" + cleanup.name() + "/b/k";
    TempFile in("x");
    std::string out;
    CHECK(run("put " + uri + " --pool someone-else", &out, in.path(), true) == 2);
    CHECK(out.find("--pool") != std::string::npos);
    CHECK_FALSE(fs::exists(Pool::segment_path(cleanup.name())));
    CHECK(run("put " + uri + " --pool " + cleanup.name(), nullptr, in.path()) == 0);  // same pool: fine
    CHECK(run("get " + uri + " --pool other") == 2);
    CHECK(run("get s3://bucket/key") == 2);
    CHECK(run("get fabric://" + cleanup.name() + "/b/../k") == 2);
    CHECK(run("get") == 2);
    CHECK(run("get " + uri + " --no-such-flag") == 2);
    CHECK(run("ls fabric://" + cleanup.name()) == 2);
    out.clear();
    CHECK(run("get nonsense --json", &out) == 2);
    CHECK(nlohmann::json::parse(out).contains("error"));
}

TEST_CASE("object cli: fabric-shm-dump shows the store section with objects, heap and counters") {
    test::PoolCleanup cleanup(test::unique_pool_name("cli-dump"));
    TempFile in(std::string(3000, 'z'));
    for (const char* k : {"a", "b", "c"}) REQUIRE(run("put fabric://" + cleanup.name() + "/b/" + k, nullptr, in.path()) == 0);
    REQUIRE(run("rm fabric://" + cleanup.name() + "/b/c") == 0);
    std::string out;
    const std::string dump = test::build_path("tools/dump/fabric-shm-dump");
    REQUIRE(test::run_command("'" + dump + "' --pool " + cleanup.name() + " --json 2>/dev/null", &out) == 0);
    auto doc = nlohmann::json::parse(out);
    REQUIRE(doc.contains("store"));
    const auto& stores = doc["store"]["stores"];
    REQUIRE(stores.size() == 1);
    CHECK(stores[0]["name"] == "default");
    CHECK(stores[0]["objects"] == 2);
    CHECK(stores[0]["heap_used_bytes"].get<uint64_t>() >= 6000);
    CHECK(stores[0]["largest_free_extent"].get<uint64_t>() <= stores[0]["heap_capacity_bytes"].get<uint64_t>());
    CHECK(stores[0]["loans_active"] == 0);
    CHECK(doc["store"]["counters"]["store_puts"] == 3);
    CHECK(doc["store"]["counters"]["store_removes"] == 1);
    out.clear();
    REQUIRE(test::run_command("'" + dump + "' --pool " + cleanup.name() + " 2>/dev/null", &out) == 0);
    CHECK(out.find("LARGEST FREE") != std::string::npos);
}
