// SPDX-License-Identifier: MIT
// fabric-shm-dump section "topics": every topic's configuration and, per partition, the
// oldest and next offsets, fill, capacity, skipped claims and claims in progress. --check
// flags impossible ring states (fill above capacity, oldest past next).
#include <string>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {

void fill_topics(const Pool& pool, nlohmann::json& out) {
    nlohmann::json topics = nlohmann::json::array();
    nlohmann::json violations = nlohmann::json::array();
    // describe() only reads; TopicManager takes a non-const pool for its mutating calls.
    TopicManager manager(const_cast<Pool&>(pool));
    for (const std::string& name : manager.list()) {
        auto d = manager.describe(name);
        if (!d) {
            if (d.code() == Errc::corrupt) violations.push_back("topic '" + name + "': " + d.error().message);
            continue;
        }
        nlohmann::json parts = nlohmann::json::array();
        for (const PartitionDescription& p : d->partitions) {
            parts.push_back({{"partition", p.partition}, {"oldest", p.oldest}, {"next", p.next}, {"fill", p.fill},
                             {"capacity", p.capacity}, {"skipped_claims", p.skipped_claims},
                             {"claims_in_progress", p.claims_in_progress}});
            if (p.fill > p.capacity)
                violations.push_back("topic '" + name + "' partition " + std::to_string(p.partition) + ": fill " +
                                     std::to_string(p.fill) + " exceeds capacity " + std::to_string(p.capacity));
            if (p.oldest > p.next)
                violations.push_back("topic '" + name + "' partition " + std::to_string(p.partition) + ": oldest " +
                                     std::to_string(p.oldest) + " is past next " + std::to_string(p.next));
        }
        topics.push_back({{"topic", name},
                          {"incarnation", d->incarnation},
                          {"partitions", d->config.num_partitions},
                          {"capacity", d->config.partition_capacity},
                          {"stride", d->config.partition_stride},
                          {"on_full", std::string(on_full_name(d->config.on_full))},
                          {"groups", d->groups.size()},
                          {"partition_state", parts}});
    }
    out["topics"] = topics;
    if (!violations.empty()) out["violations"] = violations;
}

void render_topics(const nlohmann::json& out, std::string& text) {
    if (out["topics"].empty()) return;
    for (const auto& t : out["topics"]) {
        text += "  topic '" + t["topic"].get<std::string>() + "': " + std::to_string(t["partitions"].get<uint32_t>()) +
                " partitions x " + std::to_string(t["capacity"].get<uint32_t>()) + " slots of " +
                std::to_string(t["stride"].get<uint32_t>()) + " B, on_full " + t["on_full"].get<std::string>() + ", " +
                std::to_string(t["groups"].get<size_t>()) + " group(s)\n";
        Table pt({"PARTITION", "OLDEST", "NEXT", "FILL", "CAPACITY", "SKIPPED", "CLAIMING"});
        for (const auto& p : t["partition_state"])
            pt.add({std::to_string(p["partition"].get<uint32_t>()), std::to_string(p["oldest"].get<uint64_t>()),
                    std::to_string(p["next"].get<uint64_t>()), std::to_string(p["fill"].get<uint64_t>()),
                    std::to_string(p["capacity"].get<uint64_t>()), std::to_string(p["skipped_claims"].get<uint64_t>()),
                    std::to_string(p["claims_in_progress"].get<uint32_t>())});
        pt.render(text, "    ");
    }
}

const bool topics_section_registered = [] {
    dump_sections().push_back({"topics", fill_topics, render_topics});
    return true;
}();

}  // namespace
}  // namespace fabric_shm::cli
