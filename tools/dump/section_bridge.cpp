// SPDX-License-Identifier: MIT
// fabric-shm-dump section "bridge": every fabric-shm-bridge process of the pool, from the status
// region it writes (libfabric_shm/bridge, docs/bridge.md): role, topic, stream, group or durable,
// whether the process is alive, the connection state and server, lag, messages in flight,
// rates, counters and the last error. Needs no NATS client: the status reader is network-free.
#include <string>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/pool.h"
#include "fabric_shm_bridge/status.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {

using bridge::BridgeStatus;
using bridge::StatusCounter;
using bridge::StatusGauge;

uint64_t age_ns(uint64_t wall_now, uint64_t wall_then) { return wall_then && wall_now > wall_then ? wall_now - wall_then : 0; }

void fill_bridge(const Pool& pool, nlohmann::json& out) {
    std::vector<std::string> violations;
    const uint64_t now = wall_now_ns();
    nlohmann::json list = nlohmann::json::array();
    for (const BridgeStatus& s : bridge::read_bridge_status(pool, &violations)) {
        nlohmann::json counters = nlohmann::json::object();
        for (uint32_t i = 0; i < uint32_t(StatusCounter::count_); ++i)
            counters[std::string(bridge::status_counter_name(StatusCounter(i)))] = s.counters[i];
        auto g = [&](StatusGauge x) { return s.gauges[uint32_t(x)]; };
        list.push_back({{"region", s.region_name},
                        {"role", std::string(bridge::role_name(s.role))},
                        {"member", s.member},
                        {"topic", s.topic},
                        {s.role == bridge::Role::exporter ? "group" : "durable", s.group},
                        {"stream", s.stream},
                        {"servers", s.servers},
                        {"pid", s.pid},
                        {"alive", s.owner_alive},
                        {"dead_reason", s.dead_reason},
                        {"heartbeat_age_ns", age_ns(now, s.heartbeat_wall_ns)},
                        {"connection", std::string(bridge::connection_state_name(s.connection))},
                        {"connected", s.owner_alive && s.connection == bridge::ConnectionState::connected},
                        {"connection_age_ns", age_ns(now, s.connection_since_wall_ns)},
                        {"server_url", s.server_url},
                        {"stream_replicas", s.stream_replicas},
                        {"stream_storage", s.stream_storage},
                        {"stream_ready", g(StatusGauge::stream_ready) != 0},
                        {"lag", g(StatusGauge::lag)},
                        {"in_flight", g(StatusGauge::in_flight)},
                        {"messages_per_s", double(g(StatusGauge::rate_milli)) / 1000.0},
                        {"bytes_per_s", g(StatusGauge::byte_rate)},
                        {"last_activity_age_ns", age_ns(now, g(StatusGauge::last_activity_wall_ns))},
                        {"last_error", s.last_error},
                        {"last_error_age_ns", age_ns(now, g(StatusGauge::last_error_wall_ns))},
                        {"counters", counters}});
    }
    out["processes"] = list;
    if (!violations.empty()) out["violations"] = violations;
}

void render_bridge(const nlohmann::json& out, std::string& text) {
    const auto& list = out["processes"];
    if (list.empty()) {
        text += "  no bridge processes\n";
        return;
    }
    Table t({"ROLE", "MEMBER", "TOPIC", "STREAM", "GROUP/DURABLE", "PID", "STATE", "CONNECTION", "LAG", "IN FLIGHT",
             "RATE", "MESSAGES", "DUPS", "DLQ", "ERRORS"});
    for (const auto& b : list) {
        const bool alive = b["alive"].get<bool>();
        const std::string who = b.contains("group") ? b["group"].get<std::string>() : b["durable"].get<std::string>();
        char rate[32];
        std::snprintf(rate, sizeof rate, "%.1f/s", b["messages_per_s"].get<double>());
        t.add({b["role"].get<std::string>(), b["member"].get<std::string>(), b["topic"].get<std::string>(),
               b["stream"].get<std::string>(), who, std::to_string(b["pid"].get<uint32_t>()),
               alive ? "alive" : "dead (" + b["dead_reason"].get<std::string>() + ")",
               b["connection"].get<std::string>() + " " + format_duration_ns(b["connection_age_ns"].get<uint64_t>()),
               std::to_string(b["lag"].get<uint64_t>()), std::to_string(b["in_flight"].get<uint64_t>()), rate,
               std::to_string(b["counters"]["messages"].get<uint64_t>()),
               std::to_string(b["counters"]["duplicates"].get<uint64_t>()),
               std::to_string(b["counters"]["dead_lettered"].get<uint64_t>()),
               std::to_string(b["counters"]["errors"].get<uint64_t>())});
    }
    t.render(text, "  ");
    for (const auto& b : list) {
        std::string line = "  " + b["region"].get<std::string>() + ": servers " + b["servers"].get<std::string>();
        if (!b["server_url"].get<std::string>().empty()) line += " (on " + b["server_url"].get<std::string>() + ")";
        if (b["stream_replicas"].get<uint64_t>())
            line += ", stream " + b["stream_storage"].get<std::string>() + " x" + std::to_string(b["stream_replicas"].get<uint64_t>());
        line += ", reconnects " + std::to_string(b["counters"]["reconnects"].get<uint64_t>());
        if (!b["last_error"].get<std::string>().empty())
            line += "\n    last error " + format_duration_ns(b["last_error_age_ns"].get<uint64_t>()) + " ago: " +
                    b["last_error"].get<std::string>();
        text += line + "\n";
    }
}

const bool bridge_section_registered = [] {
    dump_sections().push_back({"bridge", fill_bridge, render_bridge});
    return true;
}();

}  // namespace
}  // namespace fabric_shm::cli
