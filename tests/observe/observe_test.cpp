// SPDX-License-Identifier: MIT
// Watching a pool: the latency histogram the real worker records, seen by the real
// fabric-shm-dump (--json), the Prometheus text format (--prometheus) checked line by line
// against known operations, and the compact --watch view.
#include <signal.h>

#include <map>
#include <optional>
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

/// One line of the Prometheus text format (version 0.0.4), as a scraper reads it.
struct ExpositionLine {
    enum Kind { help, type, sample } kind;
    std::string name;
    std::string type_name;  ///< for `type`: counter, gauge or histogram
};

/// Takes `fabric_shm_[a-z0-9_]+` from the front of s.
bool take_metric_name(std::string_view& s, std::string* name) {
    constexpr std::string_view prefix = "fabric_shm_";
    if (!s.starts_with(prefix)) return false;
    size_t n = prefix.size();
    while (n < s.size() && ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_')) ++n;
    if (n == prefix.size()) return false;
    *name = std::string(s.substr(0, n));
    s.remove_prefix(n);
    return true;
}

/// Takes `c+` of a character class from the front of s; false when there is none.
template <class Pred>
bool take_run(std::string_view& s, Pred in_class) {
    size_t n = 0;
    while (n < s.size() && in_class(s[n])) ++n;
    s.remove_prefix(n);
    return n > 0;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

/// `{name="value",...}` with the format's escapes (\\, \", \n) and nothing else unescaped.
bool take_labels(std::string_view& s) {
    if (!s.starts_with('{')) return true;  // no labels
    s.remove_prefix(1);
    for (;;) {
        if (!take_run(s, [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; })) return false;
        if (!s.starts_with("=\"")) return false;
        s.remove_prefix(2);
        for (;;) {
            if (s.empty() || s[0] == '\n') return false;
            if (s[0] == '"') break;
            if (s[0] == '\\') {
                if (s.size() < 2 || (s[1] != '"' && s[1] != '\\' && s[1] != 'n')) return false;
                s.remove_prefix(1);
            }
            s.remove_prefix(1);
        }
        s.remove_prefix(1);  // the closing quote
        if (s.starts_with('}')) return s.remove_prefix(1), true;
        if (!s.starts_with(',')) return false;
        s.remove_prefix(1);
    }
}

/// `-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?` or `+Inf`, and nothing after it.
bool is_sample_value(std::string_view s) {
    if (s == "+Inf") return true;
    if (s.starts_with('-')) s.remove_prefix(1);
    if (!take_run(s, is_digit)) return false;
    if (s.starts_with('.') && (s.remove_prefix(1), !take_run(s, is_digit))) return false;
    if (s.starts_with('e')) {
        s.remove_prefix(1);
        if (s.starts_with('-') || s.starts_with('+')) s.remove_prefix(1);
        if (!take_run(s, is_digit)) return false;
    }
    return s.empty();
}

/// `# HELP name text`, `# TYPE name counter|gauge|histogram`, or `name{labels} value`;
/// nullopt for anything a scraper would reject.
std::optional<ExpositionLine> parse_exposition_line(std::string_view s) {
    ExpositionLine line{};
    if (s.starts_with("# HELP ")) {
        s.remove_prefix(7);
        line.kind = ExpositionLine::help;
        if (!take_metric_name(s, &line.name) || !s.starts_with(' ') || s.size() < 2 || s[1] == ' ') return std::nullopt;
        return line;
    }
    if (s.starts_with("# TYPE ")) {
        s.remove_prefix(7);
        line.kind = ExpositionLine::type;
        if (!take_metric_name(s, &line.name) || !s.starts_with(' ')) return std::nullopt;
        line.type_name = std::string(s.substr(1));
        if (line.type_name != "counter" && line.type_name != "gauge" && line.type_name != "histogram")
            return std::nullopt;
        return line;
    }
    line.kind = ExpositionLine::sample;
    if (!take_metric_name(s, &line.name) || !take_labels(s) || !s.starts_with(' ')) return std::nullopt;
    if (!is_sample_value(s.substr(1))) return std::nullopt;
    return line;
}

}  // namespace

TEST_CASE("observe: the exposition line checker accepts the format and rejects what a scraper would") {
    CHECK(parse_exposition_line("# HELP fabric_shm_x_total Puts.")->kind == ExpositionLine::help);
    CHECK(parse_exposition_line("# TYPE fabric_shm_x_total counter")->type_name == "counter");
    CHECK(parse_exposition_line(R"(fabric_shm_x{pool="p",group="g \"q\" \\ \n"} 12)"));
    CHECK(parse_exposition_line("fabric_shm_x 1.5e-06"));
    CHECK(parse_exposition_line(R"(fabric_shm_x_bucket{le="+Inf"} +Inf)"));
    CHECK_FALSE(parse_exposition_line("# HELP fabric_shm_x "));            // no text
    CHECK_FALSE(parse_exposition_line("# TYPE fabric_shm_x summary"));     // not a type we emit
    CHECK_FALSE(parse_exposition_line("redis_x 1"));                       // foreign name
    CHECK_FALSE(parse_exposition_line(R"(fabric_shm_x{pool="a"b"} 1)"));  // unescaped quote
    CHECK_FALSE(parse_exposition_line(R"(fabric_shm_x{pool="a\t"} 1)"));  // unknown escape
    CHECK_FALSE(parse_exposition_line(R"(fabric_shm_x{Pool="a"} 1)"));    // label name case
    CHECK_FALSE(parse_exposition_line("fabric_shm_x 1."));                 // bad number
    CHECK_FALSE(parse_exposition_line("fabric_shm_x 1 2"));                // trailing text
}

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
    std::istringstream in(out);
    std::set<std::string> families;
    std::string family, family_type;
    bool expect_type = false;
    int lines = 0;
    for (std::string text; std::getline(in, text); ++lines) {
        CAPTURE(text);
        const auto line = parse_exposition_line(text);
        REQUIRE(line);
        if (line->kind == ExpositionLine::help) {
            REQUIRE_FALSE(expect_type);
            family = line->name;
            CHECK(families.insert(family).second);  // one HELP per family
            expect_type = true;
        } else if (line->kind == ExpositionLine::type) {
            REQUIRE(expect_type);
            CHECK(line->name == family);
            family_type = line->type_name;
            if (family_type == "counter") CHECK(family.ends_with("_total"));
            expect_type = false;
        } else {
            REQUIRE_FALSE(expect_type);
            const std::string& n = line->name;
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
