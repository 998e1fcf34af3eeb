// SPDX-License-Identifier: MIT
// `fabric-shm dlq ls|show|replay|purge TOPIC`: the way back from a dead-letter topic. TOPIC
// is the source topic; its dead letters are in TOPIC.dlq (or --dlq NAME, the worker's --dlq).
// All the shared-memory work is the library's (dlq_replay.h).
#include <cerrno>
#include <csignal>
#include <iostream>
#include <string>
#include <vector>

#include "cli.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/dlq_replay.h"
#include "fabric_shm/names.h"
#include "fabric_shm/topic.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {

volatile std::sig_atomic_t g_dlq_stop = 0;
void dlq_on_signal(int) { g_dlq_stop = 1; }

constexpr const char* kDlqUsage =
    "Dead letters of TOPIC (they are in TOPIC.dlq, or --dlq NAME).\n"
    "  fabric-shm dlq ls TOPIC [--partition N] [--limit 100] [--json]\n"
    "  fabric-shm dlq show TOPIC PARTITION:OFFSET [--json]\n"
    "  fabric-shm dlq replay TOPIC (--all | --partition N [--from O] [--to O]) [--target T] [--keep] [--wait 5s]\n"
    "  fabric-shm dlq purge TOPIC (--all | --older-than D) [--partition N]\n"
    "replay sends each dead letter back to the topic it came from (dlq.topic; --target overrides) as a new\n"
    "message: the group counts its attempts from 1. Replayed dead letters at the front of their partition\n"
    "leave the DLQ (unless --keep); purge drops the oldest ones. Neither drops what a group reading the\n"
    "DLQ topic has not read yet.";

cxxopts::Options dlq_options(const std::string& argv0) {
    cxxopts::Options o(argv0, kDlqUsage);
    o.add_options()("pool", pool_option_help(), cxxopts::value<std::string>())(
        "dlq", "the dead-letter topic (default: TOPIC.dlq)", cxxopts::value<std::string>())(
        "partition", "only this partition of the dead-letter topic (default: every partition)",
        cxxopts::value<uint32_t>())("limit", "ls: at most this many", cxxopts::value<uint64_t>()->default_value("100"))(
        "all", "replay / purge every dead letter")("from", "replay: first offset (needs --partition)",
                                                    cxxopts::value<uint64_t>())(
        "to", "replay: last offset, inclusive (needs --partition)", cxxopts::value<uint64_t>())(
        "target", "replay: send to this topic instead of each dead letter's source topic",
        cxxopts::value<std::string>())("keep", "replay: leave the replayed dead letters in the DLQ")(
        "wait", "replay: on a full target partition wait this long, then stop naming the lagging group",
        cxxopts::value<std::string>()->default_value("5s"))(
        "older-than", "purge: dead letters dead-lettered at least this long ago (30s, 1h, 2d)",
        cxxopts::value<std::string>())(
        "json", "machine-readable output; errors as {\"error\":{\"code\",\"message\"}}")("h,help", "show this help");
    return o;
}

/// TOPIC.dlq, --dlq, or TOPIC itself when it is a dead-letter topic named directly.
Result<std::string> dlq_topic_of(Pool& pool, const std::string& topic, const cxxopts::ParseResult& r) {
    if (r.count("dlq")) {
        const std::string d = r["dlq"].as<std::string>();
        FABRIC_TRY(validate_name("topic", d));
        return d;
    }
    const std::string derived = topic + ".dlq";
    TopicManager topics(pool);
    if (topics.describe(derived)) return derived;
    if (topic.size() > 4 && topic.compare(topic.size() - 4, 4, ".dlq") == 0 && topics.describe(topic)) return topic;
    return make_error(Errc::not_found, "topic '" + topic + "' has no dead-letter topic '" + derived +
                                           "' in pool '" + pool.name() +
                                           "' (a worker creates it when it first dead-letters; --dlq NAME if the "
                                           "worker ran with --dlq)");
}

std::string one_line(std::string text, size_t max) {
    for (char& c : text)
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    if (text.size() > max) text = text.substr(0, max - 3) + "...";
    return text;
}

std::string age_text(uint64_t timestamp_ns, uint64_t now_wall) {
    return timestamp_ns && now_wall > timestamp_ns ? format_duration_ns(now_wall - timestamp_ns) : "0s";
}

nlohmann::json letter_json(const DeadLetter& d, uint64_t now_wall) {
    nlohmann::json headers = nlohmann::json::object();
    for (const auto& [k, v] : d.headers) headers[k] = v;
    return {{"partition", d.partition},
            {"offset", d.offset},
            {"timestamp_ns", d.timestamp_ns},
            {"dead_lettered", format_wall_ns(d.timestamp_ns)},
            {"age_ns", now_wall > d.timestamp_ns ? now_wall - d.timestamp_ns : 0},
            {"key", d.key},
            {"value", d.value},
            {"headers", headers},
            {"source_topic", d.source_topic},
            {"source_partition", d.source_partition},
            {"source_offset", d.source_offset},
            {"group", d.group},
            {"attempts", d.attempts},
            {"reason", d.reason},
            {"replays", d.replays}};
}

Result<std::pair<uint32_t, uint64_t>> parse_position(const std::string& text) {
    const size_t colon = text.find(':');
    auto bad = [&] {
        return make_error(Errc::invalid_argument,
                          "'" + text + "' is not PARTITION:OFFSET (as `fabric-shm dlq ls` shows them, e.g. 1:17)");
    };
    if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) return bad();
    char* end = nullptr;
    const unsigned long long p = std::strtoull(text.c_str(), &end, 10);
    if (end != text.c_str() + colon || p > UINT32_MAX) return bad();
    errno = 0;  // ERANGE: past 2^64 - 1, saturated to it, which is not the offset asked for
    const unsigned long long o = std::strtoull(text.c_str() + colon + 1, &end, 10);
    if (*end != '\0' || text[colon + 1] == '-' || errno == ERANGE) return bad();
    return std::pair<uint32_t, uint64_t>{uint32_t(p), uint64_t(o)};
}

int dlq_ls(Output& out, Pool& pool, const std::string& dlq, const cxxopts::ParseResult& r) {
    DeadLetterSelection sel;
    if (r.count("partition")) sel.partition = r["partition"].as<uint32_t>();
    sel.limit = size_t(r["limit"].as<uint64_t>());
    auto letters = list_dead_letters(pool, dlq, sel);
    if (!letters) return fail(out, letters.error());
    auto count = dead_letter_count(pool, dlq);
    if (!count) return fail(out, count.error());
    const uint64_t total = *count;
    const uint64_t now_wall = wall_now_ns();
    if (out.json) {
        nlohmann::json arr = nlohmann::json::array();
        for (const DeadLetter& d : *letters) arr.push_back(letter_json(d, now_wall));
        print_json({{"dlq", dlq}, {"retained", total}, {"dead_letters", arr}});
        return kExitOk;
    }
    std::string text = "'" + dlq + "': " + std::to_string(total) + " dead letter(s) retained";
    if (letters->size() < total)
        text += ", " + std::to_string(letters->size()) + " shown (" +
                (sel.partition                    ? "--partition"
                 : letters->size() == sel.limit ? "--limit"
                                                  : "a dead letter still being written stops the listing; run it again") +
                ")";
    text += "\n";
    if (!letters->empty()) {
        Table t({"POSITION", "AGE", "ATTEMPTS", "GROUP", "SOURCE", "REPLAYS", "VALUE", "REASON"});
        for (const DeadLetter& d : *letters)
            t.add({std::to_string(d.partition) + ":" + std::to_string(d.offset), age_text(d.timestamp_ns, now_wall),
                   std::to_string(d.attempts), d.group.empty() ? "-" : d.group,
                   d.source_topic + " " + std::to_string(d.source_partition) + ":" + std::to_string(d.source_offset),
                   std::to_string(d.replays), one_line(d.value, 48), one_line(d.reason, 60)});
        t.render(text);
        text += "(`fabric-shm dlq show TOPIC POSITION` prints one in full; `dlq replay` sends them back)\n";
    }
    std::cout << text;
    return kExitOk;
}

int dlq_show(Output& out, Pool& pool, const std::string& dlq, const std::vector<std::string>& pos) {
    if (pos.size() != 2) return usage(out, "show takes TOPIC and PARTITION:OFFSET");
    auto where = parse_position(pos[1]);
    if (!where) return fail(out, where.error());
    DeadLetterSelection sel;
    sel.partition = where->first;
    sel.from_offset = sel.to_offset = where->second;
    auto letters = list_dead_letters(pool, dlq, sel);
    if (!letters) return fail(out, letters.error());
    if (letters->empty())
        return fail(out, Errc::not_found, "no dead letter at " + pos[1] + " in '" + dlq +
                                              "' (purged, replayed, or not written yet: see `fabric-shm dlq ls`)");
    const DeadLetter& d = letters->front();
    const uint64_t now_wall = wall_now_ns();
    if (out.json) {
        print_json(letter_json(d, now_wall));
        return kExitOk;
    }
    Table t({"FIELD", "VALUE"});
    t.add({"position", std::to_string(d.partition) + ":" + std::to_string(d.offset) + " in " + dlq});
    t.add({"dead-lettered", format_wall_ns(d.timestamp_ns) + " (" + age_text(d.timestamp_ns, now_wall) + " ago)"});
    t.add({"source", d.source_topic + " partition " + std::to_string(d.source_partition) + " offset " +
                         std::to_string(d.source_offset)});
    t.add({"group", d.group});
    t.add({"attempts", std::to_string(d.attempts)});
    t.add({"replays", std::to_string(d.replays)});
    t.add({"key", d.key});
    t.add({"value", d.value});
    for (const auto& [k, v] : d.headers) t.add({"header." + k, v});
    t.add({"reason", d.reason});
    std::string text;
    t.render(text);
    std::cout << text.substr(text.find('\n') + 1);
    return kExitOk;
}

int dlq_replay(Output& out, Pool& pool, const std::string& dlq, const cxxopts::ParseResult& r) {
    const bool all = r.count("all") > 0;
    const bool range = r.count("partition") || r.count("from") || r.count("to");
    if (all == range)
        return usage(out, "replay needs --all, or --partition N with an optional --from O / --to O");
    if ((r.count("from") || r.count("to")) && !r.count("partition"))
        return usage(out, "--from / --to need --partition (offsets are per partition)");
    ReplayOptions options;
    if (r.count("partition")) options.selection.partition = r["partition"].as<uint32_t>();
    if (r.count("from")) options.selection.from_offset = r["from"].as<uint64_t>();
    if (r.count("to")) options.selection.to_offset = r["to"].as<uint64_t>();
    if (r.count("target")) options.target_topic = r["target"].as<std::string>();
    options.keep = r.count("keep") > 0;
    auto wait = parse_duration_option("wait", r["wait"].as<std::string>());
    if (!wait) return fail(out, wait.error());
    options.producer.block_timeout = ns_duration(*wait);
    options.producer.should_stop = [] { return g_dlq_stop != 0; };
    std::signal(SIGINT, dlq_on_signal);
    std::signal(SIGTERM, dlq_on_signal);
    auto rep = replay_dead_letters(pool, dlq, options);
    if (!rep) return fail(out, rep.error());
    nlohmann::json sent = nlohmann::json::object();
    std::string targets;
    for (const auto& [topic, n] : rep->sent_to) {
        sent[topic] = n;
        targets += (targets.empty() ? "" : ", ") + topic + " (" + std::to_string(n) + ")";
    }
    std::string stopped;
    if (rep->stopped) {
        const DeadLetter& at = *rep->stopped_at;
        stopped = "stopped at dead letter " + std::to_string(at.partition) + ":" + std::to_string(at.offset) + ": " +
                  message_of(out, *rep->stopped) + "; it and the ones after it stay in '" + dlq + "'";
    }
    if (out.json) {
        nlohmann::json doc = {{"dlq", dlq},         {"replayed", rep->replayed}, {"removed", rep->removed},
                              {"kept", rep->kept}, {"sent", sent}};
        if (rep->stopped)
            doc["error"] = {{"code", std::string(errc_name(rep->stopped->code))}, {"message", stopped}};
        print_json(doc);
    } else {
        std::cout << "replayed " << rep->replayed << " dead letter(s)" << (targets.empty() ? "" : " to " + targets)
                  << "; removed " << rep->removed << " from '" << dlq << "'";
        if (rep->kept)
            std::cout << "; " << rep->kept << " stay there ("
                      << (options.keep ? "--keep" : "not at the front of their partition") << ")";
        std::cout << "\n";
        if (rep->stopped) stderr_line("fabric-shm dlq replay: error: " + stopped);
    }
    if (rep->stopped) return rep->stopped->code == Errc::interrupted ? kExitInterrupted : kExitRuntime;
    return kExitOk;
}

int dlq_purge(Output& out, Pool& pool, const std::string& dlq, const cxxopts::ParseResult& r) {
    PurgeOptions options;
    options.all = r.count("all") > 0;
    if (options.all == (r.count("older-than") > 0)) return usage(out, "purge needs exactly one of --all or --older-than D");
    if (r.count("older-than")) {
        auto age = parse_duration_option("older-than", r["older-than"].as<std::string>());
        if (!age) return fail(out, age.error());
        if (*age == 0) return usage(out, "--older-than must be longer than 0 (or use --all)");
        options.older_than = ns_duration(*age);
    }
    if (r.count("partition")) options.partition = r["partition"].as<uint32_t>();
    auto rep = purge_dead_letters(pool, dlq, options);
    if (!rep) return fail(out, rep.error());
    if (out.json) {
        print_json({{"dlq", dlq}, {"removed", rep->removed}, {"remaining", rep->remaining},
                    {"held_by_groups", rep->held_by_groups}});
        return kExitOk;
    }
    std::cout << "removed " << rep->removed << " dead letter(s) from '" << dlq << "'; " << rep->remaining
              << " remain";
    if (rep->held_by_groups)
        std::cout << " (" << rep->held_by_groups << " matched but a group reading '" << dlq
                  << "' has not read them yet)";
    std::cout << "\n";
    return kExitOk;
}

int cmd_dlq(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm dlq"};
    SubArgs s = split_action(argc, argv);
    cxxopts::Options o = dlq_options(s.argv0);
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, s.argc(), s.argv.data(), out, r, &rc)) return rc;
    if (r.count("help") || s.action.empty()) {
        std::cout << o.help();
        return s.action.empty() && !r.count("help") ? usage(out, "missing action (ls, show, replay, purge)") : kExitOk;
    }
    out.program = s.argv0;
    const auto pos = r.unmatched();
    if (s.action != "ls" && s.action != "show" && s.action != "replay" && s.action != "purge")
        return usage(out, "unknown action '" + s.action + "' (ls, show, replay, purge)");
    if (pos.empty()) return usage(out, s.action + " needs a TOPIC");
    if (s.action != "show" && pos.size() > 1) return usage(out, "unexpected argument '" + pos[1] + "'");
    const std::string topic = pos[0];
    if (Status v = validate_name("topic", topic); !v) return fail(out, v.error());
    auto name = resolve_pool(opt_string(r, "pool"));
    if (!name) return fail(out, name.error());
    OpenOptions open;  // writable (replay sends, purge moves the front); never creates
    auto pool = Pool::open(*name, open);
    if (!pool) return fail(out, with_pool_list(pool.error()));
    auto dlq = dlq_topic_of(*pool, topic, r);
    if (!dlq) return fail(out, dlq.error());
    if (s.action == "ls") return dlq_ls(out, *pool, *dlq, r);
    if (s.action == "show") return dlq_show(out, *pool, *dlq, pos);
    if (s.action == "replay") return dlq_replay(out, *pool, *dlq, r);
    return dlq_purge(out, *pool, *dlq, r);
}

}  // namespace

void register_dlq_commands(std::vector<Command>& commands) {
    commands.push_back({"dlq", "dead letters: ls, show, replay (back to the source topic), purge", cmd_dlq});
}

}  // namespace fabric_shm::cli
