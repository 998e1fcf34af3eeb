// SPDX-License-Identifier: MIT
// Watching a pool: the latency histogram the real worker records, seen by the real
// fabric-shm-dump (--json), the Prometheus text format (--prometheus) checked line by line
// against known operations, and the compact --watch view.
#include <signal.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "../e2e/e2e_support.h"
#include "../support/test_support.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/metrics.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"

using namespace fabric_shm;
using namespace fabric_shm::e2e;

namespace {

std::string dump_bin() { return test::build_path("tools/dump/fabric-shm-dump"); }

Pool make_pool(const std::string& name) {
    auto p = Pool::create({name, 16ull << 20});
    REQUIRE_MESSAGE(p.ok(), p.error().message);
    return std::move(p.value());
}

/// Sample lines "name{labels} value" of a Prometheus text, keyed by "name{labels}".
std::map<std::string, std::string> samples_of(const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        const size_t sp = line.rfind(' ');
        out[line.substr(0, sp)] = line.substr(sp + 1);
    }
    return out;
}

}  // namespace

TEST_CASE("observe: producer + worker leave a non-empty latency histogram that fabric-shm-dump --json shows") {
    const std::string name = test::unique_pool_name("obs-lat");
    test::PoolCleanup cleanup(name);
    Pool pool = make_pool(name);
    Proc w(q(worker_bin()) + " --pool " + name + " --json --topic ev --group g --builtin crc32 --count 20");
    REQUIRE(eventually([&] { return alive_members(pool, "ev", "g") == 1; }));
    std::string out;
    REQUIRE(sh(q(producer_bin()) + " --pool " + name + " --topic ev --synthetic 20 --size 1K --quiet 2>&1", &out) == 0);
    REQUIRE(w.wait() == 0);

    REQUIRE(sh(q(dump_bin()) + " --pool " + name + " --json", &out) == 0);
    const nlohmann::json doc = nlohmann::json::parse(out);
    REQUIRE(doc.contains("latency"));
    const auto& keys = doc["latency"]["keys"];
    REQUIRE(keys.size() == 1);
    const auto& k = keys[0];
    CHECK(k["topic"] == "ev");
    CHECK(k["group"] == "g");
    CHECK(k["samples"].get<uint64_t>() == 20);
    CHECK(k["live_shards"].get<uint32_t>() == 0);  // the worker exited: its shard was folded
    const uint64_t p50 = k["p50_ns"], p99 = k["p99_ns"], p999 = k["p999_ns"], mx = k["max_ns"];
    CHECK(p50 > 0);
    CHECK(p50 <= p99);
    CHECK(p99 <= p999);
    CHECK(p999 <= mx);
    uint64_t in_buckets = 0;
    for (const auto& b : k["buckets"]) in_buckets += b["count"].get<uint64_t>();
    CHECK(in_buckets == 20);
    CHECK(doc["latency"]["total"]["samples"].get<uint64_t>() == 20);
    // The worker's own summary agrees on the sample count.
    CHECK(json_number(w.out(), "samples") == 20);

    // The text dump has the section with percentiles.
    REQUIRE(sh(q(dump_bin()) + " --pool " + name, &out) == 0);
    CHECK(out.find("latency:") != std::string::npos);
    CHECK(out.find("P99.9") != std::string::npos);
}

TEST_CASE("observe: --prometheus prints well-formed families with the values of known operations") {
    const std::string name = test::unique_pool_name("obs-prom");
    test::PoolCleanup cleanup(name);
    Pool pool = make_pool(name);
    {
        auto store = MemObjectStore::open(pool);
        REQUIRE(store);
        for (int i = 0; i < 3; ++i) {
            auto uri = FabricUri::make(name, "uploads", "k" + std::to_string(i));
            REQUIRE(uri);
            const std::vector<uint8_t> bytes(100, uint8_t('a'));
            REQUIRE((*store)->put(*uri, bytes));
        }
        auto other = FabricUri::make(name, "more", "x");
        REQUIRE(other);
        REQUIRE((*store)->put(*other, std::vector<uint8_t>(10, uint8_t('b'))));
        TopicManager tm(pool);
        TopicConfig tc;
        tc.num_partitions = 2;
        REQUIRE(tm.create("ev", tc));
        auto producer = Producer::open(pool, "ev");
        REQUIRE(producer);
        const uint8_t v[] = {'x'};
        for (int i = 0; i < 5; ++i) REQUIRE(producer->send(std::span<const uint8_t>(v, 1)));
        auto rec = LatencyRecorder::open(pool, "ev", "g \"quoted\"");
        REQUIRE(rec);
        for (int i = 0; i < 3; ++i) rec->record(1000);  // <= 1023 ns
        rec->record(5'000'000);
    }
    std::string out;
    REQUIRE(sh(q(dump_bin()) + " --pool " + name + " --prometheus", &out) == 0);

    // Line by line: HELP, TYPE, then the family's samples, each family once, names fabric_shm_*.
    const std::regex help(R"(^# HELP (fabric_shm_[a-z0-9_]+) \S.*$)");
    const std::regex type(R"(^# TYPE (fabric_shm_[a-z0-9_]+) (counter|gauge|histogram)$)");
    const std::regex sample(
        R"re(^(fabric_shm_[a-z0-9_]+)(\{[a-z_]+="(?:[^"\\\n]|\\["\\n])*"(?:,[a-z_]+="(?:[^"\\\n]|\\["\\n])*")*\})? (-?[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?|\+Inf)$)re");
    std::istringstream in(out);
    std::set<std::string> families;
    std::string family, family_type;
    bool expect_type = false;
    int lines = 0;
    for (std::string line; std::getline(in, line); ++lines) {
        CAPTURE(line);
        std::smatch m;
        if (std::regex_match(line, m, help)) {
            REQUIRE_FALSE(expect_type);
            family = m[1];
            CHECK(families.insert(family).second);  // one HELP per family
            expect_type = true;
        } else if (std::regex_match(line, m, type)) {
            REQUIRE(expect_type);
            CHECK(m[1] == family);
            family_type = m[2];
            if (family_type == "counter") CHECK(family.ends_with("_total"));
            expect_type = false;
        } else {
            REQUIRE(std::regex_match(line, m, sample));
            REQUIRE_FALSE(expect_type);
            const std::string n = m[1];
            if (family_type == "histogram")
                CHECK((n == family + "_bucket" || n == family + "_sum" || n == family + "_count"));
            else
                CHECK(n == family);  // samples of a family are contiguous, under its own name
        }
    }
    CHECK(lines > 50);

    const auto s = samples_of(out);
    const std::string p = "pool=\"" + name + "\"";
    CHECK(s.at("fabric_shm_store_puts_total{" + p + "}") == "4");
    CHECK(s.at("fabric_shm_store_put_bytes_total{" + p + "}") == "310");
    CHECK(s.at("fabric_shm_store_objects{" + p + ",store=\"default\"}") == "4");
    CHECK(s.at("fabric_shm_bucket_objects{" + p + ",store=\"default\",bucket=\"uploads\"}") == "3");
    CHECK(s.at("fabric_shm_bucket_objects{" + p + ",store=\"default\",bucket=\"more\"}") == "1");
    CHECK(s.at("fabric_shm_mq_messages_published_total{" + p + "}") == "5");
    CHECK(std::stoull(s.at("fabric_shm_topic_next_offset{" + p + ",topic=\"ev\",partition=\"0\"}")) +
              std::stoull(s.at("fabric_shm_topic_next_offset{" + p + ",topic=\"ev\",partition=\"1\"}")) ==
          5);
    CHECK(s.at("fabric_shm_processes{" + p + ",state=\"alive\"}") == "1");
    CHECK(s.at("fabric_shm_pool_size_bytes{" + p + "}") == std::to_string(16ull << 20));
    // The histogram: label value escaped, cumulative buckets, +Inf == _count, _sum in seconds.
    const std::string l = p + ",topic=\"ev\",group=\"g \\\"quoted\\\"\"";
    CHECK(s.at("fabric_shm_e2e_latency_seconds_bucket{" + l + ",le=\"1.023e-06\"}") == "3");
    CHECK(s.at("fabric_shm_e2e_latency_seconds_bucket{" + l + ",le=\"0.004194303\"}") == "3");
    CHECK(s.at("fabric_shm_e2e_latency_seconds_bucket{" + l + ",le=\"0.008388607\"}") == "4");
    CHECK(s.at("fabric_shm_e2e_latency_seconds_bucket{" + l + ",le=\"+Inf\"}") == "4");
    CHECK(s.at("fabric_shm_e2e_latency_seconds_count{" + l + "}") == "4");
    CHECK(s.at("fabric_shm_e2e_latency_seconds_sum{" + l + "}") == "0.005003");
    uint64_t last = 0;
    for (const auto& [k, v] : s)
        if (k.starts_with("fabric_shm_e2e_latency_seconds_bucket{") && k.find("+Inf") == std::string::npos) {
            // std::map orders le values as strings; only check that none exceeds the total.
            CHECK(std::stoull(v) <= 4);
            last = std::max<uint64_t>(last, std::stoull(v));
        }
    CHECK(last == 4);

    // --prometheus and --json together are a usage error.
    CHECK(sh(q(dump_bin()) + " --pool " + name + " --prometheus --json >/dev/null 2>&1") == 2);
}

TEST_CASE("observe: --watch prints a compact view with rates, TTLs, lag and assignment, latency percentiles") {
    const std::string name = test::unique_pool_name("obs-watch");
    test::PoolCleanup cleanup(name);
    Pool pool = make_pool(name);
    Proc w(q(worker_bin()) + " --pool " + name + " --quiet --topic ev --group g --id w1 --builtin copy");
    REQUIRE(eventually([&] { return alive_members(pool, "ev", "g") == 1; }));
    std::string out;
    REQUIRE(sh(q(producer_bin()) + " --pool " + name + " --topic ev --synthetic 8 --size 100 --quiet 2>&1", &out) == 0);
    REQUIRE(eventually([&] { return count_keys(pool, "results") == 8; }));
    // Two refreshes: the second has rates.
    sh("timeout -s INT 2 " + q(dump_bin()) + " --pool " + name + " --watch 300ms", &out);
    w.signal(SIGTERM);
    CHECK(w.wait() == 0);
    CAPTURE(out);
    CHECK(out.find("rates: puts 16 total") != std::string::npos);         // first refresh: totals (8 in, 8 results)
    CHECK(out.find("rates: puts 0.0/s (0 B/s), gets 0.0/s") != std::string::npos);  // second: rates (all done)
    CHECK(out.find("TTL left (soonest):") != std::string::npos);
    CHECK(out.find("group ev/g  epoch") != std::string::npos);
    CHECK(out.find("lag 0") != std::string::npos);
    CHECK(out.find("=w1 lag 0") != std::string::npos);                    // assignment
    CHECK(out.find("latency ev/g  n 8  p50 ") != std::string::npos);
    CHECK(out.find("p99.9") != std::string::npos);
    CHECK(out.find("processes:") == std::string::npos);                   // not the full dump
}
