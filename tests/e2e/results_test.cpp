// SPDX-License-Identifier: MIT
// Results never collide: a result is keyed by its input's bucket and key (a hashed form when
// that is too long for a key), a result made from another input is never overwritten or taken
// for a redelivery, and two live groups do not write one result bucket unless both say
// --shared-results.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "e2e_support.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/worker_loop.h"
#include "../support/test_support.h"

using namespace fabric_shm;
using namespace fabric_shm::e2e;
namespace fs = std::filesystem;

namespace {


struct Fixture : PoolFixture {
    using PoolFixture::PoolFixture;
    std::string worker(const std::string& args) const {
        return q(worker_bin()) + " --pool " + name + " --json " + args;
    }
    std::string producer(const std::string& args) const {
        return q(producer_bin()) + " --pool " + name + " --quiet " + args;
    }
    std::vector<std::string> keys(const std::string& bucket) {
        auto store = MemObjectStore::open(pool);
        REQUIRE(store.ok());
        auto k = (*store)->list(name, bucket, "");
        REQUIRE(k.ok());
        return *k;
    }
};

std::string key(int i) {
    char k[32];
    std::snprintf(k, sizeof k, "synthetic-%06d", i);
    return k;
}

}  // namespace

TEST_CASE("results: two producers put the same file names into two buckets; every result is present and distinct") {
    Fixture f("res-buckets");
    const int n = 1500;
    Proc w1(f.worker("--topic ev --group g --id w1 --builtin crc32 --exit-when-idle 2s"));
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 1; }));
    Proc w2(f.worker("--topic ev --group g --id w2 --builtin crc32 --exit-when-idle 2s"));
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 2; }));
    // Same names (synthetic-000000 ...), different contents (sizes) per bucket.
    Proc pa(f.producer("--bucket A --topic ev --synthetic " + std::to_string(n) + " --size 40 --wait 30s"));
    Proc pb(f.producer("--bucket B --topic ev --synthetic " + std::to_string(n) + " --size 41 --wait 30s"));
    REQUIRE_MESSAGE(pa.wait(120000) == 0, pa.err());
    REQUIRE_MESSAGE(pb.wait(120000) == 0, pb.err());
    REQUIRE_MESSAGE(w1.wait(120000) == 0, w1.err());
    REQUIRE_MESSAGE(w2.wait(120000) == 0, w2.err());
    CHECK(json_number(w1.out(), "processed") + json_number(w2.out(), "processed") == uint64_t(2 * n));
    CHECK(f.keys("results").size() == size_t(2 * n));
    int wrong = 0;
    for (int i = 0; i < n; ++i)
        for (const auto& [bucket, size] : {std::pair{"A", 40}, std::pair{"B", 41}}) {
            const std::string r = f.uri("results", std::string(bucket) + "/" + key(i));
            if (get_text(f.pool, r) != crc_hex(synthetic_content(uint64_t(i), uint64_t(size))) ||
                result_metadata(f.pool, r, "input-uri") != f.uri(bucket, key(i)))
                ++wrong;
        }
    CHECK(wrong == 0);
    CHECK(read_dlq(f.pool, "ev.dlq").empty());
}

TEST_CASE("results: a result key template that maps two inputs to one key dead-letters the second, never overwrites") {
    Fixture f("res-collide");
    ScratchDir dir;
    const std::string file = dir.file("same.txt", "first");
    REQUIRE(sh(f.producer("--bucket A --topic ev " + file)) == 0);
    { std::ofstream(file) << "second"; }
    REQUIRE(sh(f.producer("--bucket B --topic ev " + file)) == 0);
    Proc w(f.worker("--topic ev --group g --count 2 --builtin upper --result-key '{key}'"));
    REQUIRE_MESSAGE(w.wait() == 0, w.err());
    CHECK(json_number(w.out(), "processed") == 1);
    CHECK(json_number(w.out(), "skipped") == 0);  // not taken for a redelivery of B's input either
    CHECK(get_text(f.pool, f.uri("results", "same.txt")) == "FIRST");
    CHECK(result_metadata(f.pool, f.uri("results", "same.txt"), "input-uri") == f.uri("A", "same.txt"));
    const auto dl = read_dlq(f.pool, "ev.dlq");
    REQUIRE(dl.size() == 1);
    CHECK(dl[0].value == f.uri("B", "same.txt"));
    CHECK(dl[0].attempts == "1");  // permanent: retrying cannot help
    CHECK(dl[0].reason.find("already holds the result of " + f.uri("A", "same.txt")) != std::string::npos);
}

TEST_CASE("results: a bucket/key longer than a key gets a readable prefix and a hash, distinct per input") {
    Fixture f("res-long");
    ScratchDir dir;
    const std::string stem(245, 'x');
    const std::string k1 = stem + "-one.txt", k2 = stem + "-two.txt";  // 253 bytes; "uploads/" + 253 > 256
    {  // a notification naming a 253-byte key needs more than the default 512-byte slot
        TopicConfig cfg;
        cfg.partition_stride = 1024;
        REQUIRE(TopicManager(f.pool).create("ev", cfg).ok());
    }
    REQUIRE(sh(f.producer("--topic ev " + dir.file(k1, "one") + " " + dir.file(k2, "two"))) == 0);
    Proc w(f.worker("--topic ev --group g --count 2 --builtin upper"));
    REQUIRE_MESSAGE(w.wait() == 0, w.err());
    const auto keys = f.keys("results");
    REQUIRE(keys.size() == 2);
    std::set<std::string> inputs;
    for (const auto& k : keys) {
        CHECK(k.size() == kMaxKeyLength);
        CHECK(k.rfind("uploads/" + stem.substr(0, 200), 0) == 0);  // readable prefix
        CHECK(k[kMaxKeyLength - 17] == '~');
        inputs.insert(result_metadata(f.pool, f.uri("results", k), "input-uri"));
        auto in = FabricUri::parse(result_metadata(f.pool, f.uri("results", k), "input-uri"));
        REQUIRE(in.ok());
        CHECK(result_key_for(kDefaultResultKey, *in).value() == k);  // the documented form
    }
    CHECK(inputs == std::set<std::string>{f.uri("uploads", k1), f.uri("uploads", k2)});
    auto first = FabricUri::parse(f.uri("uploads", k1));
    REQUIRE(first.ok());
    auto first_key = result_key_for(kDefaultResultKey, *first);
    REQUIRE(first_key.ok());
    CHECK(get_text(f.pool, f.uri("results", *first_key)) == "ONE");
}

TEST_CASE("results: a second live group writing the same result bucket is refused unless every such group says "
          "--shared-results; a group with no live member does not count") {
    Fixture f("res-groups");
    Proc g1(f.worker("--topic t1 --group g1 --id a --builtin copy"));
    REQUIRE(eventually([&] { return alive_members(f.pool, "t1", "g1") == 1; }));
    {
        Proc g2(f.worker("--topic t2 --group g2 --builtin copy"));
        CHECK(g2.wait() == 1);
        INFO(g2.out());
        CHECK(g2.out().find("\"conflict\"") != std::string::npos);
        CHECK(g2.out().find("group 'g1' on topic 't1'") != std::string::npos);
        CHECK(g2.out().find("--shared-results") != std::string::npos);
    }
    {
        Proc g2(f.worker("--topic t2 --group g2 --builtin copy --shared-results"));  // g1 did not agree
        CHECK(g2.wait() == 1);
    }
    {
        Proc own(f.worker("--topic t2 --group g2 --builtin copy --result-bucket other --count 1 --exit-when-idle 100ms"));
        CHECK_MESSAGE(own.wait() == 0, own.out());  // a bucket of its own is fine
    }
    {
        // One group, one bucket: a member asking for another bucket than its live peers is refused.
        Proc peer(f.worker("--topic t1 --group g1 --id b --builtin copy --result-bucket other"));
        CHECK(peer.wait() == 1);
        CHECK(peer.out().find("every member of a group writes one result bucket") != std::string::npos);
    }
    std::string out;
    REQUIRE(sh(q(cli_bin()) + " group describe g1 --topic t1 --json --pool " + f.name, &out) == 0);
    CHECK(out.find("\"result_bucket\":\"results\"") != std::string::npos);
    CHECK(out.find("\"shared_results\":false") != std::string::npos);

    g1.signal(SIGKILL);  // crashed: its record stays, but no live member writes there any more
    CHECK(g1.wait() == 128 + SIGKILL);
    {
        Proc g2(f.worker("--topic t2 --group g2 --builtin copy --count 1 --exit-when-idle 100ms"));
        CHECK_MESSAGE(g2.wait() == 0, g2.out());
    }
    // Both shared: both run at once.
    Proc s1(f.worker("--topic t1 --group g1 --id a --builtin copy --shared-results"));
    REQUIRE(eventually([&] { return alive_members(f.pool, "t1", "g1") == 1; }));
    Proc s2(f.worker("--topic t2 --group g2 --id c --builtin copy --shared-results"));
    REQUIRE(eventually([&] { return alive_members(f.pool, "t2", "g2") == 1; }));
    // Fed by different inputs (buckets X and Y), so their results cannot collide in the one bucket.
    REQUIRE(sh(f.producer("--bucket X --topic t1 --synthetic 2 --size 8"), &out) == 0);
    REQUIRE(sh(f.producer("--bucket Y --topic t2 --synthetic 2 --size 8"), &out) == 0);
    CHECK(eventually([&] { return f.keys("results").size() == 4; }));
    CHECK(get_text(f.pool, f.uri("results", "X/" + key(1))) == synthetic_content(1, 8));
    CHECK(get_text(f.pool, f.uri("results", "Y/" + key(1))) == synthetic_content(1, 8));
    s1.signal(SIGTERM);
    s2.signal(SIGTERM);
    CHECK(s1.wait() == 0);
    CHECK(s2.wait() == 0);
}

TEST_CASE("results: a member that disagrees with its live peers about --shared-results is refused, so no other group "
          "gets into a bucket a live member never agreed to share") {
    Fixture f("res-sharing");
    Proc a(f.worker("--topic t1 --group g1 --id a --builtin copy"));  // not shared
    REQUIRE(eventually([&] { return alive_members(f.pool, "t1", "g1") == 1; }));
    {
        Proc b(f.worker("--topic t1 --group g1 --id b --builtin copy --shared-results --count 1 --exit-when-idle 100ms"));
        CHECK_MESSAGE(b.wait() == 1, b.out());
        CHECK(b.out().find("\"conflict\"") != std::string::npos);
        CHECK(b.out().find("--shared-results") != std::string::npos);
    }
    std::string out;
    REQUIRE(sh(q(cli_bin()) + " group describe g1 --topic t1 --json --pool " + f.name, &out) == 0);
    CHECK(out.find("\"shared_results\":false") != std::string::npos);  // a's record stands
    {
        Proc g2(f.worker("--topic t2 --group g2 --builtin copy --shared-results --count 1 --exit-when-idle 100ms"));
        CHECK_MESSAGE(g2.wait() == 1, g2.out());  // a, live, did not agree
    }
    a.signal(SIGTERM);
    CHECK(a.wait() == 0);
}
