// SPDX-License-Identifier: MIT
// --prometheus and --watch renderings of the dump document (see exposition.h). Both read
// only the JSON that dump_pool() and the sections built, so they show exactly what --json shows.
#include "exposition.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>

#include "fabric_shm/clock.h"
#include "tool_support.h"

namespace fabric_shm::cli {

namespace {

using Labels = std::vector<std::pair<std::string, std::string>>;

/// Label values escaped as the text format requires: backslash, double quote, newline.
std::string escape(const std::string& v) {
    std::string out;
    for (char c : v) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

std::string number(double v) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

/// Families in first-seen order, every sample of a family together (the format requires it).
class Exposition {
public:
    void add(const std::string& name, const char* type, const std::string& help, const Labels& labels,
             const std::string& value, const std::string& suffix = "") {
        auto [it, inserted] = index_.try_emplace(name, families_.size());
        if (inserted) families_.push_back({name, type, help, {}});
        std::string line = "fabric_shm_" + name + suffix;
        if (!labels.empty()) {
            line += '{';
            for (size_t i = 0; i < labels.size(); ++i) {
                if (i) line += ',';
                line += labels[i].first + "=\"" + escape(labels[i].second) + '"';
            }
            line += '}';
        }
        families_[it->second].samples.push_back(line + " " + value);
    }
    void add(const std::string& name, const char* type, const std::string& help, const Labels& labels, uint64_t v) {
        add(name, type, help, labels, std::to_string(v));
    }
    std::string render() const {
        std::string out;
        for (const Family& f : families_) {
            out += "# HELP fabric_shm_" + f.name + " " + f.help + "\n";
            out += "# TYPE fabric_shm_" + f.name + " " + f.type + "\n";
            for (const std::string& s : f.samples) out += s + "\n";
        }
        return out;
    }

private:
    struct Family {
        std::string name, type, help;
        std::vector<std::string> samples;
    };
    std::vector<Family> families_;
    std::map<std::string, size_t> index_;
};

uint64_t u64(const nlohmann::json& j, const char* key) {
    return j.contains(key) && j[key].is_number() ? j[key].get<uint64_t>() : 0;
}
std::string str(const nlohmann::json& j, const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

Labels with(Labels base, const std::string& k, const std::string& v) {
    base.emplace_back(k, v);
    return base;
}

void add_latency(Exposition& e, const Labels& labels, const nlohmann::json& h) {
    const char* help = "End-to-end latency, producer put to worker result written, in seconds";
    // Cumulative counts at 2^e - 1 ns (every bucket edge is a power-of-two multiple): exact.
    for (uint32_t exp = 10; exp <= 42; ++exp) {
        const uint64_t bound = (uint64_t(1) << exp) - 1;
        uint64_t cumulative = 0;
        for (const auto& b : h["buckets"])
            if (u64(b, "le_ns") <= bound) cumulative += u64(b, "count");
        e.add("e2e_latency_seconds", "histogram", help, with(labels, "le", number(double(bound) / 1e9)),
              std::to_string(cumulative), "_bucket");
    }
    e.add("e2e_latency_seconds", "histogram", help, with(labels, "le", "+Inf"), std::to_string(u64(h, "samples")),
          "_bucket");
    e.add("e2e_latency_seconds", "histogram", help, labels, number(double(u64(h, "sum_ns")) / 1e9), "_sum");
    e.add("e2e_latency_seconds", "histogram", help, labels, std::to_string(u64(h, "samples")), "_count");
}

void add_pool(Exposition& e, const nlohmann::json& doc) {
    const std::string pool = str(doc, "pool");
    const Labels p = {{"pool", pool}};
    if (doc.contains("error")) {
        e.add("pool_readable", "gauge", "1 when the pool could be read, 0 on an error", p, uint64_t(0));
        return;
    }
    e.add("pool_readable", "gauge", "1 when the pool could be read, 0 on an error", p, uint64_t(1));
    const nlohmann::json& h = doc["header"];
    e.add("pool_size_bytes", "gauge", "Size of the pool segment", p, u64(doc, "size"));
    e.add("pool_data_bytes", "gauge", "Size of the region area", p, u64(h, "data_size"));
    e.add("pool_expired", "gauge", "1 when every lease of the pool ran out", p,
          uint64_t(str(doc, "state") == "expired"));
    for (const char* c : {"reaped_processes", "reclaimed_regions", "stolen_locks", "repaired_entries"})
        e.add(std::string("pool_") + c + "_total", "counter", std::string("Pool header statistic ") + c, p, u64(h, c));
    if (doc.contains("lease")) {
        const nlohmann::json& l = doc["lease"];
        e.add("pool_lease_ttl_seconds", "gauge", "Time left on the pool lease", p,
              number(double(u64(l, "ttl_remaining_ns")) / 1e9));
        e.add("pool_lease_renewals_total", "counter", "Renewals of the pool lease", p, u64(l, "renew_count"));
    }
    uint64_t alive = 0, dead = 0, claiming = 0;
    for (const auto& pr : doc["processes"]) {
        if (pr["claiming"].get<bool>()) ++claiming;
        else if (pr["alive"].get<bool>()) ++alive;
        else ++dead;
    }
    const char* ph = "Registered processes by liveness (dead: not yet reaped)";
    e.add("processes", "gauge", ph, with(p, "state", "alive"), alive);
    e.add("processes", "gauge", ph, with(p, "state", "dead"), dead);
    e.add("processes", "gauge", ph, with(p, "state", "claiming"), claiming);
    for (const auto& r : doc["regions"]) {
        const Labels rl = {{"pool", pool}, {"kind", str(r, "kind")}, {"region", str(r, "name")}};
        e.add("region_bytes", "gauge", "Length of a region", rl, u64(r, "length"));
        e.add("region_lease_ttl_seconds", "gauge", "Time left on a region's lease", rl,
              number(double(u64(r["lease"], "ttl_remaining_ns")) / 1e9));
        e.add("region_attached_processes", "gauge", "Live processes holding a handle to the region", rl,
              u64(r, "attached_processes"));
    }
    for (const auto& [name, v] : doc["counters"].items())
        e.add(name + "_total", "counter", "Pool counter " + name + " (live shards plus reaped processes' totals)", p,
              v.get<uint64_t>());
    if (doc.contains("store"))
        for (const auto& s : doc["store"]["stores"]) {
            if (s.contains("error")) continue;
            const Labels sl = {{"pool", pool}, {"store", str(s, "name")}};
            e.add("store_objects", "gauge", "Objects in the store", sl, u64(s, "objects"));
            e.add("store_table_entries", "gauge", "Capacity of the store's object table", sl, u64(s, "table_entries"));
            e.add("store_heap_used_bytes", "gauge", "Payload heap in use", sl, u64(s, "heap_used_bytes"));
            e.add("store_heap_capacity_bytes", "gauge", "Payload heap size", sl, u64(s, "heap_capacity_bytes"));
            e.add("store_largest_free_extent_bytes", "gauge", "Largest free heap extent", sl,
                  u64(s, "largest_free_extent"));
            e.add("store_loans_active", "gauge", "Zero-copy write loans outstanding", sl, u64(s, "loans_active"));
            e.add("store_pins_active", "gauge", "Zero-copy read pins outstanding", sl, u64(s, "pins_active"));
            if (s.contains("buckets"))
                for (const auto& b : s["buckets"])
                    e.add("bucket_objects", "gauge", "Objects in a bucket of the store (expired ones excluded)",
                          with(sl, "bucket", str(b, "bucket")), u64(b, "objects"));
        }
    if (doc.contains("topics"))
        for (const auto& t : doc["topics"]["topics"])
            for (const auto& pt : t["partition_state"]) {
                const Labels tl = {{"pool", pool},
                                   {"topic", str(t, "topic")},
                                   {"partition", std::to_string(u64(pt, "partition"))}};
                e.add("topic_next_offset", "gauge", "Offset the next message of the partition gets", tl,
                      u64(pt, "next"));
                e.add("topic_oldest_offset", "gauge", "Oldest offset still in the partition ring", tl,
                      u64(pt, "oldest"));
                e.add("topic_fill", "gauge", "Messages in the partition ring", tl, u64(pt, "fill"));
                e.add("topic_capacity", "gauge", "Slots of the partition ring", tl, u64(pt, "capacity"));
                e.add("topic_skipped_claims_total", "counter", "Slots skipped because their writer died", tl,
                      u64(pt, "skipped_claims"));
            }
    if (doc.contains("groups"))
        for (const auto& g : doc["groups"]["groups"]) {
            const Labels gl = {{"pool", pool}, {"topic", str(g, "topic")}, {"group", str(g, "group")}};
            uint64_t live = 0, gone = 0;
            for (const auto& m : g["members"]) (m["alive"].get<bool>() ? live : gone)++;
            e.add("group_epoch", "gauge", "Assignment epoch of the consumer group", gl, u64(g, "epoch"));
            e.add("group_members", "gauge", "Members of the group by liveness", with(gl, "state", "alive"), live);
            e.add("group_members", "gauge", "Members of the group by liveness", with(gl, "state", "dead"), gone);
            e.add("group_dead_letters", "gauge", "Messages waiting in the group's dead-letter topic", gl,
                  u64(g, "dead_letters"));
            for (const auto& pt : g["partitions"]) {
                const Labels pl = with(gl, "partition", std::to_string(u64(pt, "partition")));
                e.add("group_lag", "gauge", "Messages of the partition not yet committed by the group", pl,
                      u64(pt, "lag"));
                e.add("group_committed_offset", "gauge", "Committed offset of the group on the partition", pl,
                      u64(pt, "committed"));
                e.add("group_attempts_in_flight", "gauge", "Delivery attempts of the message being retried", pl,
                      u64(pt, "attempts"));
                if (!pt["owner"].is_null())
                    e.add("group_partition_owner", "gauge", "1 for the member that owns the partition",
                          with(pl, "member", pt["owner"].get<std::string>()), uint64_t(1));
            }
        }
    if (doc.contains("latency") && doc["latency"].contains("keys"))
        for (const auto& k : doc["latency"]["keys"])
            add_latency(e, {{"pool", pool}, {"topic", str(k, "topic")}, {"group", str(k, "group")}}, k);
    if (doc.contains("bridge") && doc["bridge"].contains("processes"))
        for (const auto& b : doc["bridge"]["processes"]) {
            const Labels bl = {{"pool", pool},
                               {"role", str(b, "role")},
                               {"member", str(b, "member")},
                               {"topic", str(b, "topic")},
                               {"stream", str(b, "stream")}};
            e.add("bridge_up", "gauge", "1 while the bridge process is alive", bl, uint64_t(b["alive"].get<bool>()));
            e.add("bridge_connected", "gauge", "1 while the bridge process is connected to the NATS cluster", bl,
                  uint64_t(b["connected"].get<bool>()));
            e.add("bridge_stream_ready", "gauge",
                  "1 once the stream is set up (export) or the durable consumer bound (import)", bl,
                  uint64_t(b.contains("stream_ready") && b["stream_ready"].get<bool>()));
            e.add("bridge_lag", "gauge",
                  "Export: local messages not yet acknowledged by the stream; import: stream messages pending for the "
                  "durable consumer",
                  bl, u64(b, "lag"));
            e.add("bridge_in_flight", "gauge",
                  "Export: published, not yet acknowledged; import: stored locally, not yet acked to the stream", bl,
                  u64(b, "in_flight"));
            e.add("bridge_messages_per_second", "gauge", "Messages moved per second over the last second", bl,
                  number(b["messages_per_s"].get<double>()));
            e.add("bridge_heartbeat_age_seconds", "gauge", "Time since the bridge process last updated its status", bl,
                  number(double(u64(b, "heartbeat_age_ns")) / 1e9));
            for (const auto& [name, v] : b["counters"].items())
                e.add("bridge_" + name + "_total", "counter", "Bridge counter " + name + " (docs/bridge.md)", bl,
                      v.get<uint64_t>());
        }
}

}  // namespace

std::string prometheus_text(const std::vector<nlohmann::json>& pools) {
    Exposition e;
    for (const nlohmann::json& doc : pools) add_pool(e, doc);
    return e.render();
}

std::string watch_text(const nlohmann::json& doc, const nlohmann::json& prev, uint64_t interval_ns) {
    const std::string pool = str(doc, "pool");
    std::string t = "pool '" + pool + "'  " + format_wall_ns(wall_now_ns());
    if (doc.contains("error")) return t + "  error: " + str(doc["error"], "message") + "\n";
    t += "  " + str(doc, "state");
    if (doc.contains("lease")) t += "  pool TTL " + str(doc["lease"], "ttl_remaining");
    uint64_t alive = 0;
    for (const auto& pr : doc["processes"]) alive += pr["alive"].get<bool>() ? 1 : 0;
    t += "  " + std::to_string(alive) + " process(es)\n";

    // Rates: counter deltas over the refresh interval (first refresh: totals only).
    const bool have_prev = prev.is_object() && prev.contains("counters") && interval_ns > 0;
    auto rate = [&](const char* name) {
        const uint64_t now_v = u64(doc["counters"], name);
        if (!have_prev) return std::to_string(now_v) + " total";
        const uint64_t before = u64(prev["counters"], name);
        const double per_s = now_v >= before ? double(now_v - before) * 1e9 / double(interval_ns) : 0.0;
        char buf[48];
        std::snprintf(buf, sizeof buf, "%.1f/s", per_s);
        return std::string(buf);
    };
    auto bytes_rate = [&](const char* name) {
        const uint64_t now_v = u64(doc["counters"], name);
        if (!have_prev) return format_bytes(now_v) + " total";
        const uint64_t before = u64(prev["counters"], name);
        return format_bytes(now_v >= before ? uint64_t(double(now_v - before) * 1e9 / double(interval_ns)) : 0) + "/s";
    };
    t += "  rates: puts " + rate("store_puts") + " (" + bytes_rate("store_put_bytes") + "), gets " +
         rate("store_gets") + ", published " + rate("mq_messages_published") + ", consumed " +
         rate("mq_messages_consumed") + ", back-pressure " + rate("mq_back_pressure") + "\n";

    // TTLs: the regions whose leases run out first.
    std::vector<std::pair<uint64_t, std::string>> ttls;
    for (const auto& r : doc["regions"])
        ttls.emplace_back(u64(r["lease"], "ttl_remaining_ns"),
                          str(r, "kind") + "/" + str(r, "name") + " " + str(r["lease"], "ttl_remaining"));
    std::sort(ttls.begin(), ttls.end());
    if (!ttls.empty()) {
        t += "  TTL left (soonest):";
        for (size_t i = 0; i < ttls.size() && i < 4; ++i) t += (i ? ", " : " ") + ttls[i].second;
        t += "\n";
    }

    // Groups: lag and assignment on one line each.
    if (doc.contains("groups"))
        for (const auto& g : doc["groups"]["groups"]) {
            uint64_t lag = 0, live = 0;
            for (const auto& pt : g["partitions"]) lag += u64(pt, "lag");
            for (const auto& m : g["members"]) live += m["alive"].get<bool>() ? 1 : 0;
            t += "  group " + str(g, "topic") + "/" + str(g, "group") + "  epoch " + std::to_string(u64(g, "epoch")) +
                 "  members " + std::to_string(live) + "  lag " + std::to_string(lag);
            if (u64(g, "dead_letters")) t += "  dlq " + std::to_string(u64(g, "dead_letters"));
            t += "\n    ";
            bool first = true;
            for (const auto& pt : g["partitions"]) {
                t += std::string(first ? "" : "  ") + "p" + std::to_string(u64(pt, "partition")) + "=" +
                     (pt["owner"].is_null() ? std::string("-") : pt["owner"].get<std::string>()) + " lag " +
                     std::to_string(u64(pt, "lag"));
                first = false;
            }
            t += "\n";
        }

    // Bridge processes: connection, lag and rate on one line each.
    if (doc.contains("bridge") && doc["bridge"].contains("processes"))
        for (const auto& b : doc["bridge"]["processes"]) {
            char rate_s[32];
            std::snprintf(rate_s, sizeof rate_s, "%.1f/s", b["messages_per_s"].get<double>());
            t += "  bridge " + str(b, "role") + " " + str(b, "topic") + (str(b, "role") == "export" ? " -> " : " <- ") +
                 str(b, "stream") + "  " + (b["alive"].get<bool>() ? str(b, "connection") : "dead") + "  lag " +
                 std::to_string(u64(b, "lag")) + "  in flight " + std::to_string(u64(b, "in_flight")) + "  " + rate_s +
                 "  messages " + std::to_string(u64(b["counters"], "messages")) + "\n";
        }

    // Latency percentiles per (topic, group).
    if (doc.contains("latency") && doc["latency"].contains("keys"))
        for (const auto& k : doc["latency"]["keys"]) {
            const uint64_t n = u64(k, "samples");
            t += "  latency " + str(k, "topic") + "/" + str(k, "group") + "  n " + std::to_string(n);
            if (n)
                t += "  p50 " + format_duration_ns(u64(k, "p50_ns")) + "  p99 " + format_duration_ns(u64(k, "p99_ns")) +
                     "  p99.9 " + format_duration_ns(u64(k, "p999_ns")) + "  max " +
                     format_duration_ns(u64(k, "max_ns"));
            t += "\n";
        }
    return t;
}

}  // namespace fabric_shm::cli
