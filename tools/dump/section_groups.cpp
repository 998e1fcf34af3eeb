// SPDX-License-Identifier: MIT
// fabric-shm-dump section "groups": per consumer group of every topic, its epoch, members
// (id, pid, alive, heartbeat age), the assignment map, committed offset, lag and attempts in
// flight per partition, and the dead letters waiting in "<topic>.dlq". --check flags a
// partition owned by a member row that is not live, and an owner epoch above the group's.
#include <string>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {

void fill_groups(const Pool& pool, nlohmann::json& out) {
    nlohmann::json groups = nlohmann::json::array();
    nlohmann::json violations = nlohmann::json::array();
    std::vector<std::string> topics;
    for (const RegionInfo& r : pool.regions())
        if (r.kind == uint32_t(RegionKind::topic) && r.state == "live") topics.push_back(r.name);
    for (const auto& topic : topics) {
        auto ds = describe_consumer_groups(pool, topic);
        if (!ds) {
            if (ds.code() == Errc::corrupt) violations.push_back("topic '" + topic + "': " + ds.error().message);
            continue;
        }
        // Dead letters: the DLQ topic's fill (messages not yet read by any of its groups).
        uint64_t dead_letters = 0;
        bool has_dlq = false;
        for (const auto& t : topics)
            if (t == topic + ".dlq") has_dlq = true;
        if (has_dlq)
            if (auto n = dead_letter_count(pool, topic + ".dlq"); n) dead_letters = *n;
        for (const auto& d : *ds) {
            // Epochs relative to the registration's era (the library reports fence tokens).
            auto rel = [&d](uint64_t token) { return token >= d.era ? token - d.era : 0; };
            nlohmann::json members = nlohmann::json::array();
            for (const auto& m : d.members)
                members.push_back({{"id", m.id}, {"slot", m.slot}, {"pid", m.pid}, {"alive", m.alive},
                                   {"epoch", rel(m.epoch)}, {"heartbeat_age_ns", m.heartbeat_age_ns}});
            nlohmann::json parts = nlohmann::json::array();
            for (const auto& p : d.partitions) {
                nlohmann::json owner = nullptr;
                for (const auto& m : d.members)
                    if (int(m.slot) == p.member_slot) owner = m.id;
                if (p.owner_epoch > d.epoch)
                    violations.push_back("group '" + d.group + "' topic '" + topic + "' partition " +
                                         std::to_string(p.partition) + ": owner epoch " +
                                         std::to_string(rel(p.owner_epoch)) + " above the group epoch " +
                                         std::to_string(rel(d.epoch)));
                if (p.commit_epoch != 0 && p.commit_epoch < d.era)
                    violations.push_back("group '" + d.group + "' topic '" + topic + "' partition " +
                                         std::to_string(p.partition) + ": commit fence " +
                                         std::to_string(p.commit_epoch) + " below the registration's era " +
                                         std::to_string(d.era));
                parts.push_back({{"partition", p.partition}, {"owner", owner}, {"owner_epoch", rel(p.owner_epoch)},
                                 {"committed", p.committed}, {"commit_epoch", rel(p.commit_epoch)}, {"lag", p.lag},
                                 {"attempt_offset", p.attempt_offset}, {"attempts", p.attempts}});
            }
            groups.push_back({{"topic", topic}, {"group", d.group}, {"era", d.era}, {"epoch", rel(d.epoch)},
                              {"result_bucket", d.result_bucket}, {"shared_results", d.shared_results},
                              {"members", members}, {"partitions", parts}, {"dlq_topic", has_dlq ? topic + ".dlq" : ""},
                              {"dead_letters", dead_letters}});
        }
    }
    out["groups"] = groups;
    if (!violations.empty()) out["violations"] = violations;
}

void render_groups(const nlohmann::json& out, std::string& text) {
    const auto& groups = out["groups"];
    if (groups.empty()) {
        text += "  no consumer groups\n";
        return;
    }
    for (const auto& g : groups) {
        text += "  group '" + g["group"].get<std::string>() + "' on '" + g["topic"].get<std::string>() + "'  epoch " +
                std::to_string(g["epoch"].get<uint64_t>());
        if (!g["result_bucket"].get<std::string>().empty())
            text += "  results to '" + g["result_bucket"].get<std::string>() + "'" +
                    (g["shared_results"].get<bool>() ? " (shared)" : "");
        if (!g["dlq_topic"].get<std::string>().empty())
            text += "  dlq " + g["dlq_topic"].get<std::string>() + " (" +
                    std::to_string(g["dead_letters"].get<uint64_t>()) + " dead letters)";
        text += "\n";
        Table mt({"MEMBER", "PID", "ALIVE", "EPOCH", "HEARTBEAT AGE"});
        for (const auto& m : g["members"])
            mt.add({m["id"].get<std::string>(), std::to_string(m["pid"].get<uint32_t>()),
                    m["alive"].get<bool>() ? "yes" : "no", std::to_string(m["epoch"].get<uint64_t>()),
                    format_duration_ns(m["heartbeat_age_ns"].get<uint64_t>())});
        if (!mt.empty()) mt.render(text, "    ");
        Table pt({"PARTITION", "OWNER", "COMMITTED", "LAG", "ATTEMPTS"});
        for (const auto& p : g["partitions"]) {
            const uint64_t a = p["attempts"].get<uint64_t>();
            pt.add({std::to_string(p["partition"].get<uint32_t>()),
                    p["owner"].is_null() ? "-" : p["owner"].get<std::string>(),
                    std::to_string(p["committed"].get<uint64_t>()), std::to_string(p["lag"].get<uint64_t>()),
                    a ? std::to_string(a) + " @" + std::to_string(p["attempt_offset"].get<uint64_t>()) : "-"});
        }
        pt.render(text, "    ");
    }
}

const bool groups_section_registered = [] {
    dump_sections().push_back({"groups", fill_groups, render_groups});
    return true;
}();

}  // namespace
}  // namespace fabric_shm::cli
