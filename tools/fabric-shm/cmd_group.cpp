// SPDX-License-Identifier: MIT
// `fabric-shm group ls|describe|rm|reset|skip`: consumer groups of a topic. describe and ls
// map the pool read-only; rm, reset and skip register and change the group table through the
// library (consumer_group.h, topic.h): no shared-memory logic here.
#include "cmd_group.h"

#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/topic.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {


void add_group_common(cxxopts::Options& o) {
    o.add_options()("pool", pool_option_help(), cxxopts::value<std::string>())(
        "topic", "the group's topic (describe/ls: default every topic)", cxxopts::value<std::string>())(
        "json", "machine-readable output; errors as {\"error\":{\"code\",\"message\"}}")("h,help", "show this help");
}

/// Epochs are shown relative to the registration's era (the library reports fence tokens,
/// era + epoch: 19-digit numbers that say nothing more to a reader).
uint64_t rel(const ConsumerGroupDescription& d, uint64_t token) { return token >= d.era ? token - d.era : 0; }

nlohmann::json describe_json(const ConsumerGroupDescription& d) {
    nlohmann::json members = nlohmann::json::array();
    for (const auto& m : d.members)
        members.push_back({{"slot", m.slot}, {"id", m.id}, {"owner_token", m.owner}, {"pid", m.pid}, {"epoch", rel(d, m.epoch)},
                           {"heartbeat_age_ns", m.heartbeat_age_ns}, {"alive", m.alive}});
    nlohmann::json parts = nlohmann::json::array();
    for (const auto& p : d.partitions) {
        nlohmann::json owner = nullptr;
        for (const auto& m : d.members)
            if (int(m.slot) == p.member_slot) owner = m.id;
        parts.push_back({{"partition", p.partition}, {"owner", owner}, {"owner_epoch", rel(d, p.owner_epoch)},
                         {"committed", p.committed}, {"commit_epoch", rel(d, p.commit_epoch)}, {"lag", p.lag},
                         {"attempt_offset", p.attempt_offset}, {"attempts", p.attempts}});
    }
    return {{"group", d.group},   {"topic", d.topic},     {"era", d.era},
            {"epoch", rel(d, d.epoch)}, {"result_bucket", d.result_bucket}, {"shared_results", d.shared_results},
            {"members", members}, {"partitions", parts}};
}

void render(const ConsumerGroupDescription& d, std::string& text) {
    text += "group '" + d.group + "' on topic '" + d.topic + "'  epoch " + std::to_string(rel(d, d.epoch)) + " (era " +
            std::to_string(d.era) + ")\n";
    if (!d.result_bucket.empty())
        text += "  results to bucket '" + d.result_bucket + "'" + (d.shared_results ? " (shared with other groups)" : "") +
                "\n";
    if (d.members.empty()) text += "  no members\n";
    Table mt({"MEMBER", "PID", "ALIVE", "EPOCH", "HEARTBEAT AGE"});
    for (const auto& m : d.members)
        mt.add({m.id, std::to_string(m.pid), m.alive ? "yes" : "no", std::to_string(rel(d, m.epoch)),
                format_duration_ns(m.heartbeat_age_ns)});
    if (!d.members.empty()) mt.render(text, "  ");
    Table pt({"PARTITION", "OWNER", "OWNER EPOCH", "COMMITTED", "COMMIT EPOCH", "LAG", "ATTEMPTS"});
    for (const auto& p : d.partitions) {
        std::string owner = "-";
        for (const auto& m : d.members)
            if (int(m.slot) == p.member_slot) owner = m.id;
        pt.add({std::to_string(p.partition), owner, std::to_string(rel(d, p.owner_epoch)), std::to_string(p.committed),
                std::to_string(rel(d, p.commit_epoch)), std::to_string(p.lag),
                p.attempts ? std::to_string(p.attempts) + " @" + std::to_string(p.attempt_offset) : "-"});
    }
    pt.render(text, "  ");
}

/// Groups to show: of --topic, else of every topic; only `group` when given.
Result<std::vector<ConsumerGroupDescription>> collect(Pool& pool, const std::string& topic, const std::string& group) {
    std::vector<ConsumerGroupDescription> out;
    std::vector<std::string> topics;
    if (!topic.empty())
        topics.push_back(topic);
    else
        topics = TopicManager(pool).list();
    for (const auto& t : topics) {
        auto ds = describe_consumer_groups(pool, t);
        if (!ds) {
            if (topic.empty() && ds.code() == Errc::not_found) continue;  // removed meanwhile
            return std::move(ds).error();
        }
        for (auto& d : *ds)
            if (group.empty() || d.group == group) out.push_back(std::move(d));
    }
    if (!group.empty() && out.empty())
        return make_error(Errc::not_found, "group '" + group + "' is not registered on " +
                                               (topic.empty() ? std::string("any topic of this pool")
                                                              : "topic '" + topic + "'"));
    return out;
}

int cmd_group(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm group"};
    SubArgs s = split_action(argc, argv);
    cxxopts::Options o(s.argv0,
                       "Consumer groups.\n"
                       "  fabric-shm group ls [--topic T]\n"
                       "  fabric-shm group describe GROUP [--topic T] [--json]\n"
                       "  fabric-shm group rm GROUP --topic T\n"
                       "  fabric-shm group reset GROUP --topic T --to earliest|latest|OFFSET [--partition N] [--force]\n"
                       "  fabric-shm group skip GROUP --topic T --partition N --offset O [--force]\n"
                       "reset/skip refuse while members are alive (their next commit would undo it) unless --force.");
    add_group_common(o);
    o.add_options()("to", "reset: earliest, latest or an offset", cxxopts::value<std::string>())(
        "partition", "reset/skip: partition number (reset default: every partition)", cxxopts::value<int>())(
        "offset", "skip: the committed offset to move past", cxxopts::value<uint64_t>())(
        "force", "reset/skip even with live members");
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, s.argc(), s.argv.data(), out, r, &rc)) return rc;
    if (r.count("help") || s.action.empty()) {
        std::cout << o.help();
        return s.action.empty() && !r.count("help") ? usage(out, "missing action (ls, describe, rm, reset, skip)")
                                                    : kExitOk;
    }
    const auto pos = r.unmatched();
    const std::string topic = opt_string(r, "topic");
    const int partition = r.count("partition") ? r["partition"].as<int>() : -1;  // -1: every partition
    if (r.count("partition") && partition < 0)
        return usage(out, "--partition " + std::to_string(partition) + " must be a partition number (0 or more)");
    auto pool_name = resolve_pool(opt_string(r, "pool"));
    if (!pool_name) return fail(out, pool_name.error());

    if (s.action == "ls" || s.action == "describe") {
        std::string group;
        if (s.action == "describe") {
            if (pos.size() != 1) return usage(out, "describe takes one GROUP");
            group = pos[0];
        } else if (!pos.empty()) {
            return usage(out, "unexpected argument '" + pos[0] + "'");
        }
        auto pool = open_read_only(*pool_name);
        if (!pool) return fail(out, pool.error());
        auto ds = collect(*pool, topic, group);
        if (!ds) return fail(out, ds.error());
        if (out.json) {
            nlohmann::json arr = nlohmann::json::array();
            for (const auto& d : *ds) arr.push_back(describe_json(d));
            print_json(s.action == "describe" && arr.size() == 1 ? arr[0] : nlohmann::json{{"groups", arr}});
            return kExitOk;
        }
        std::string text;
        if (ds->empty()) text = "no consumer groups\n";
        for (const auto& d : *ds) render(d, text);
        std::cout << terminal_safe_lines(text);
        return kExitOk;
    }

    if (s.action != "rm" && s.action != "reset" && s.action != "skip")
        return usage(out, "unknown action '" + s.action + "' (ls, describe, rm, reset, skip)");
    if (pos.size() != 1) return usage(out, s.action + " takes one GROUP");
    if (topic.empty()) return usage(out, s.action + " needs --topic");
    const std::string group = pos[0];
    OpenOptions oo;
    oo.create_if_missing = false;
    auto pool = Pool::open(*pool_name, oo);
    if (!pool) return fail(out, with_pool_list(pool.error()));
    Status st;
    std::string done;
    if (s.action == "rm") {
        st = TopicManager(*pool).remove_group(topic, group);
        done = "removed group '" + group + "' from topic '" + topic + "'";
    } else if (s.action == "reset") {
        const std::string to = opt_string(r, "to");
        ResetTo kind = ResetTo::offset;
        uint64_t offset = 0;
        if (to == "earliest") {
            kind = ResetTo::earliest;
        } else if (to == "latest") {
            kind = ResetTo::latest;
        } else {
            // Digits only: strtoull takes a sign ("-5" is 2^64 - 5) and saturates past 2^64,
            // and either would reset to the earliest offset instead of refusing.
            errno = 0;
            const bool digits = !to.empty() && to.find_first_not_of("0123456789") == std::string::npos;
            offset = digits ? std::strtoull(to.c_str(), nullptr, 10) : 0;
            if (!digits || errno == ERANGE)
                return usage(out, "--to '" + to + "' must be earliest, latest or a decimal offset below 2^64");
        }
        st = reset_group_offsets(*pool, topic, group, kind, offset, partition, r.count("force") > 0);
        done = "reset group '" + group + "' on topic '" + topic + "' to " + to;
    } else {
        if (!r.count("offset") || partition < 0) return usage(out, "skip needs --partition and --offset");
        const uint64_t off = r["offset"].as<uint64_t>();
        st = skip_group_offset(*pool, topic, group, uint32_t(partition), off, r.count("force") > 0);
        done = "group '" + group + "' skipped offset " + std::to_string(off) + " of partition " +
               std::to_string(partition);
    }
    if (!st) return fail(out, st.error());
    if (out.json) {
        auto ro = open_read_only(*pool_name);
        auto d = ro ? describe_consumer_group(*ro, topic, group) : Result<ConsumerGroupDescription>(ro.error());
        print_json(d ? nlohmann::json{{"ok", true}, {"message", done}, {"group", describe_json(*d)}}
                     : nlohmann::json{{"ok", true}, {"message", done}});
    } else {
        std::cout << done << "\n";
    }
    return kExitOk;
}

}  // namespace

void register_group_commands(std::vector<Command>& commands) {
    commands.push_back({"group", "consumer groups: ls, describe (members, owners, lag, attempts), rm, reset, skip",
                        cmd_group});
}

}  // namespace fabric_shm::cli
