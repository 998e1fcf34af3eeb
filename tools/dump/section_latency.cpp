// SPDX-License-Identifier: MIT
// fabric-shm-dump section "latency": the end-to-end latency histograms (put timestamp ->
// result written) the workers record per (topic, group), each the sum of its per-process
// shards and its folded totals, as samples / p50 / p99 / p99.9 / max, plus a pool-wide total.
// The JSON keeps every non-empty bucket ({"le_ns": upper bound, "count"}) so --prometheus and
// scripts can rebuild cumulative counts.
#include <string>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "fabric_shm/metrics.h"
#include "fabric_shm/pool.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {

nlohmann::json histogram_json(const LatencyHistogramData& h) {
    const uint64_t n = h.count();
    nlohmann::json buckets = nlohmann::json::array();
    for (uint32_t i = 0; i < kLatencyHistogramBuckets; ++i)
        if (h.buckets[i])
            buckets.push_back({{"le_ns", latency_bucket_upper(i)}, {"count", h.buckets[i]}});
    return {{"samples", n},          {"sum_ns", h.sum_ns},
            {"mean_ns", n ? h.sum_ns / n : 0}, {"p50_ns", h.percentile(0.50)},
            {"p99_ns", h.percentile(0.99)},   {"p999_ns", h.percentile(0.999)},
            {"max_ns", h.max_ns},        {"buckets", buckets}};
}

void fill_latency(const Pool& pool, nlohmann::json& out) {
    nlohmann::json keys = nlohmann::json::array();
    auto stats = read_latency(pool);
    if (!stats) {
        out["keys"] = keys;
        out["error"] = stats.error().message;
        if (stats.code() == Errc::corrupt) out["violations"] = nlohmann::json::array({stats.error().message});
        return;
    }
    LatencyHistogramData total;
    for (const LatencyKeyStats& k : *stats) {
        nlohmann::json j = histogram_json(k.histogram);
        j["topic"] = k.topic;
        j["group"] = k.group;
        j["live_shards"] = k.live_shards;
        keys.push_back(std::move(j));
        total.merge(k.histogram);
    }
    out["keys"] = keys;
    out["total"] = histogram_json(total);
}

void render_latency(const nlohmann::json& out, std::string& text) {
    if (out.contains("error")) {
        text += "  unreadable: " + out["error"].get<std::string>() + "\n";
        return;
    }
    if (out["keys"].empty()) {
        text += "  no samples (workers record put -> result written per topic and group)\n";
        return;
    }
    Table t({"TOPIC", "GROUP", "SAMPLES", "P50", "P99", "P99.9", "MAX", "MEAN"});
    auto row = [&](const std::string& topic, const std::string& group, const nlohmann::json& h) {
        const bool any = h["samples"].get<uint64_t>() > 0;
        auto d = [&](const char* f) { return any ? format_duration_ns(h[f].get<uint64_t>()) : std::string("-"); };
        t.add({topic, group, std::to_string(h["samples"].get<uint64_t>()), d("p50_ns"), d("p99_ns"), d("p999_ns"),
               d("max_ns"), d("mean_ns")});
    };
    for (const auto& k : out["keys"]) row(k["topic"].get<std::string>(), k["group"].get<std::string>(), k);
    if (out["keys"].size() > 1) row("(all)", "", out["total"]);
    t.render(text, "  ");
}

const bool latency_section_registered = [] {
    dump_sections().push_back({"latency", fill_latency, render_latency});
    return true;
}();

}  // namespace
}  // namespace fabric_shm::cli
