// SPDX-License-Identifier: MIT
// `fabric-shm topic create|ls|describe|rm`, `fabric-shm send`, `fabric-shm tail`.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "cli.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/names.h"
#include "fabric_shm/topic.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

void add_topic_common(cxxopts::Options& o) {
    o.add_options()("pool", pool_option_help(), cxxopts::value<std::string>())(
        "json", "machine-readable output; errors as {\"error\":{\"code\",\"message\"}}")("h,help", "show this help");
}

Result<Pool> open_pool(const cxxopts::ParseResult& r, bool create_if_missing) {
    Result<std::string> name = resolve_pool(opt_string(r, "pool"));
    if (!name) return std::move(name).error();
    OpenOptions options;
    options.create_if_missing = create_if_missing;
    Result<Pool> pool = Pool::open(name.value(), options);
    if (!pool && pool.code() == Errc::not_found) return with_pool_list(std::move(pool).error());
    return pool;
}

Result<uint32_t> parse_u32(const std::string& option, const std::string& text) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
    if (text.empty() || errno != 0 || *end != '\0' || v > UINT32_MAX)
        return make_error(Errc::invalid_argument, "--" + option + " '" + text + "' is not a number between 0 and 4294967295");
    return uint32_t(v);
}

std::string bytes_text(std::span<const uint8_t> b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

nlohmann::json description_json(const TopicDescription& d, uint64_t now) {
    nlohmann::json parts = nlohmann::json::array();
    for (const PartitionDescription& p : d.partitions)
        parts.push_back({{"partition", p.partition}, {"oldest", p.oldest}, {"next", p.next}, {"fill", p.fill},
                         {"capacity", p.capacity}, {"skipped_claims", p.skipped_claims},
                         {"claims_in_progress", p.claims_in_progress}});
    nlohmann::json groups = nlohmann::json::array();
    for (const GroupDescription& g : d.groups) {
        nlohmann::json gp = nlohmann::json::array();
        for (const GroupPartitionDescription& p : g.partitions)
            gp.push_back({{"partition", p.partition}, {"committed", p.committed}, {"epoch", p.epoch}, {"lag", p.lag}});
        groups.push_back({{"group", g.name},
                          {"expired", g.expired},
                          {"ttl_remaining_ns", ttl_remaining_ns(g.lease_expires_ns, now)},
                          {"partitions", gp}});
    }
    return {{"topic", d.name},
            {"incarnation", d.incarnation},
            {"partitions", d.config.num_partitions},
            {"capacity", d.config.partition_capacity},
            {"stride", d.config.partition_stride},
            {"max_message_bytes", max_message_bytes(d.config.partition_stride)},
            {"on_full", std::string(on_full_name(d.config.on_full))},
            {"lease_ids", d.lease_ids},
            {"partition_state", parts},
            {"groups", groups}};
}

std::string description_text(const nlohmann::json& d) {
    std::string t = "topic '" + d["topic"].get<std::string>() + "': " + std::to_string(d["partitions"].get<uint32_t>()) +
                    " partitions x " + std::to_string(d["capacity"].get<uint32_t>()) + " slots of " +
                    std::to_string(d["stride"].get<uint32_t>()) + " B (messages up to " +
                    std::to_string(d["max_message_bytes"].get<uint64_t>()) + " B), on_full " +
                    d["on_full"].get<std::string>() + ", incarnation " + hex(d["incarnation"].get<uint64_t>()) + "\n";
    Table parts({"partition", "oldest", "next", "fill", "capacity", "skipped", "claiming"});
    for (const auto& p : d["partition_state"])
        parts.add({std::to_string(p["partition"].get<uint32_t>()), std::to_string(p["oldest"].get<uint64_t>()),
                   std::to_string(p["next"].get<uint64_t>()), std::to_string(p["fill"].get<uint64_t>()),
                   std::to_string(p["capacity"].get<uint64_t>()), std::to_string(p["skipped_claims"].get<uint64_t>()),
                   std::to_string(p["claims_in_progress"].get<uint32_t>())});
    parts.render(t, "  ");
    for (const auto& g : d["groups"]) {
        t += "  group '" + g["group"].get<std::string>() + "'" + (g["expired"].get<bool>() ? " (expired)" : "") + ":";
        for (const auto& p : g["partitions"])
            t += " p" + std::to_string(p["partition"].get<uint32_t>()) + "@" + std::to_string(p["committed"].get<uint64_t>()) +
                 " lag " + std::to_string(p["lag"].get<uint64_t>()) + ";";
        t += "\n";
    }
    return t;
}

// ---- topic create|ls|describe|rm ----------------------------------------------------

int topic_cmd(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm"};
    SubArgs s = split_action(argc, argv);
    cxxopts::Options o(s.argv0, "Topics: create, ls, describe, rm (fabric-shm topic <action> --help)");
    add_topic_common(o);
    o.add_options()("partitions", "create: number of partitions (1-64)", cxxopts::value<std::string>()->default_value("4"))(
        "capacity", "create: slots per partition (power of two)", cxxopts::value<std::string>()->default_value("128"))(
        "stride", "create: bytes per slot incl. the envelope (multiple of 64)",
        cxxopts::value<std::string>()->default_value("512"))(
        "on-full", "create: block | reject | overwrite (lossy)", cxxopts::value<std::string>()->default_value("block"))(
        "ttl", "create: lease TTL of the topic's regions (default: the pool's)", cxxopts::value<std::string>())(
        "no-create", "create: fail if the pool does not exist instead of creating it (also: FABRIC_SHM_NO_CREATE=1)")(
        "name", "topic name", cxxopts::value<std::string>());
    o.parse_positional({"name"});
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, s.argc(), s.argv.data(), out, r, &rc)) return rc;
    if (r.count("help") || s.action.empty()) {
        std::cout << o.help();
        return s.action.empty() && !r.count("help") ? usage(out, "missing action: create, ls, describe or rm") : kExitOk;
    }
    const std::string name = r.count("name") ? r["name"].as<std::string>() : "";
    const uint64_t now = mono_now_ns();
    if (s.action == "create") {
        out.program = "fabric-shm topic create";
        out.spelling = spelling_topic_create();
        if (name.empty()) return usage(out, "topic create needs a NAME");
        if (Status v = validate_name("topic", name); !v) return fail(out, v.error());
        TopicConfig cfg;
        auto partitions = parse_u32("partitions", r["partitions"].as<std::string>());
        if (!partitions) return fail(out, partitions.error());
        auto capacity = parse_u32("capacity", r["capacity"].as<std::string>());
        if (!capacity) return fail(out, capacity.error());
        auto stride = parse_size_option("stride", r["stride"].as<std::string>());
        if (!stride) return fail(out, stride.error());
        if (stride.value() > UINT32_MAX) return fail(out, Errc::invalid_argument, "--stride is too large");
        auto on_full = parse_on_full(r["on-full"].as<std::string>());
        if (!on_full) return fail(out, Errc::invalid_argument, on_full.error().message);
        cfg.num_partitions = partitions.value();
        cfg.partition_capacity = capacity.value();
        cfg.partition_stride = uint32_t(stride.value());
        cfg.on_full = on_full.value();
        if (r.count("ttl")) {
            auto ttl = parse_duration_option("ttl", r["ttl"].as<std::string>());
            if (!ttl) return fail(out, ttl.error());
            cfg.ttl = ns_duration(ttl.value());
        }
        if (Status v = validate_topic_config(cfg); !v) return fail(out, v.error());
        PoolCreation creation;
        creation.no_create = r.count("no-create") > 0;
        auto pool_name = resolve_pool(opt_string(r, "pool"));
        if (!pool_name) return fail(out, pool_name.error());
        auto pool = open_or_create_pool(out, *pool_name, creation);
        if (!pool) return fail(out, pool.error());
        TopicManager topics(pool.value());
        if (Status c = topics.create(name, cfg); !c) return fail(out, c.error());
        auto d = topics.describe(name);
        if (!d) return fail(out, d.error());
        if (out.json) print_json(description_json(d.value(), now));
        else std::cout << "created " << description_text(description_json(d.value(), now));
        return kExitOk;
    }
    auto pool = open_pool(r, false);
    if (!pool) return fail(out, pool.error());
    TopicManager topics(pool.value());
    if (s.action == "ls") {
        nlohmann::json list = nlohmann::json::array();
        Table t({"topic", "partitions", "capacity", "stride", "on_full", "messages", "groups"});
        for (const std::string& n : topics.list()) {
            auto d = topics.describe(n);
            if (!d) continue;
            uint64_t held = 0;
            for (const auto& p : d->partitions) held += p.fill;
            list.push_back(description_json(d.value(), now));
            t.add({n, std::to_string(d->config.num_partitions), std::to_string(d->config.partition_capacity),
                   std::to_string(d->config.partition_stride), std::string(on_full_name(d->config.on_full)),
                   std::to_string(held), std::to_string(d->groups.size())});
        }
        if (out.json) print_json({{"pool", pool->name()}, {"topics", list}});
        else {
            std::string text;
            if (t.empty()) text = "no topics in pool '" + pool->name() + "'\n";
            else t.render(text);
            std::cout << text;
        }
        return kExitOk;
    }
    if (name.empty()) return usage(out, "topic " + s.action + " needs a NAME");
    if (s.action == "describe") {
        auto d = topics.describe(name);
        if (!d) return fail(out, d.error());
        if (out.json) print_json(description_json(d.value(), now));
        else std::cout << description_text(description_json(d.value(), now));
        return kExitOk;
    }
    if (s.action == "rm") {
        if (Status st = topics.remove(name); !st) return fail(out, st.error());
        if (out.json) print_json({{"removed", name}});
        else std::cout << "removed topic '" << name << "'\n";
        return kExitOk;
    }
    return usage(out, "unknown action '" + s.action + "' (create, ls, describe, rm)");
}

// ---- send -------------------------------------------------------------------------

int send_cmd(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm"};
    cxxopts::Options o(argv[0], "Sends one message (MESSAGE, or stdin with '-' or nothing) to a topic");
    add_topic_common(o);
    o.add_options()("key", "partition by this key (same key, same partition, in order)", cxxopts::value<std::string>())(
        "header", "header name=value (repeatable)", cxxopts::value<std::vector<std::string>>())(
        "wait", "on a full partition (on_full=block): wait this long, then fail naming the lagging group",
        cxxopts::value<std::string>()->default_value("5s"))("topic", "topic", cxxopts::value<std::string>())(
        "message", "message text, or - for stdin", cxxopts::value<std::string>());
    o.parse_positional({"topic", "message"});
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    if (!r.count("topic")) return usage(out, "send needs a TOPIC");
    const std::string topic = r["topic"].as<std::string>();
    if (Status v = validate_name("topic", topic); !v) return fail(out, v.error());
    std::vector<std::string> header_text;
    if (r.count("header")) header_text = r["header"].as<std::vector<std::string>>();
    std::vector<MessageHeader> headers;
    for (const std::string& h : header_text) {
        const size_t eq = h.find('=');
        if (eq == std::string::npos || eq == 0) return usage(out, "--header '" + h + "' is not name=value");
        headers.push_back({std::string_view(h).substr(0, eq), std::string_view(h).substr(eq + 1)});
    }
    std::string value;
    if (!r.count("message") || r["message"].as<std::string>() == "-")
        value.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    else value = r["message"].as<std::string>();
    auto wait = parse_duration_option("wait", r["wait"].as<std::string>());
    if (!wait) return fail(out, wait.error());
    auto pool = open_pool(r, false);
    if (!pool) return fail(out, pool.error());
    ProducerOptions po;
    po.block_timeout = ns_duration(wait.value());
    auto producer = Producer::open(pool.value(), topic, po);
    if (!producer) return fail(out, producer.error());
    const auto bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(value.data()), value.size());
    Result<SendResult> sent =
        r.count("key") ? producer->send_keyed(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(
                                                                           r["key"].as<std::string>().data()),
                                                                       r["key"].as<std::string>().size()),
                                              bytes, headers)
                       : producer->send(bytes, headers);
    if (!sent) return fail(out, sent.error());
    if (out.json) print_json({{"topic", topic}, {"partition", sent->partition}, {"offset", sent->offset}});
    else std::cout << topic << " partition " << sent->partition << " offset " << sent->offset << "\n";
    return kExitOk;
}

// ---- tail -------------------------------------------------------------------------

int tail_cmd(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm"};
    cxxopts::Options o(argv[0],
                       "Reads messages from a topic: an observer (holds nothing back) unless --commit with --group.\n"
                       "Prints PARTITION:OFFSET<TAB>VALUE per message, control bytes and invalid UTF-8 of the value\n"
                       "as \\xNN (a newline too); --json: one document per line, bytes that are not UTF-8 as U+FFFD.");
    add_topic_common(o);
    o.add_options()("group", "read (and with --commit, commit) as this consumer group", cxxopts::value<std::string>())(
        "from", "earliest | latest | committed", cxxopts::value<std::string>()->default_value("earliest"))(
        "count", "stop after N messages (default: no limit)", cxxopts::value<std::string>())(
        "follow", "keep waiting for new messages until SIGINT/SIGTERM or --count")(
        "commit", "commit what was printed (needs --group)")("topic", "topic", cxxopts::value<std::string>());
    o.parse_positional({"topic"});
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    if (!r.count("topic")) return usage(out, "tail needs a TOPIC");
    const std::string topic = r["topic"].as<std::string>();
    if (Status v = validate_name("topic", topic); !v) return fail(out, v.error());
    const std::string group = r.count("group") ? r["group"].as<std::string>() : "";
    if (!group.empty())
        if (Status v = validate_name("group", group); !v) return fail(out, v.error());
    if (r.count("commit") && group.empty()) return usage(out, "--commit needs --group");
    auto count = parse_u32("count", opt_string(r, "count", "0"));
    if (!count) return fail(out, count.error());
    const std::string from = r["from"].as<std::string>();
    SeekPolicy seek;
    // An operator's --from earliest/latest means it, even for a group with commits.
    if (from == "earliest") seek = SeekPolicy::Rewind(SeekPolicy::Kind::earliest);
    else if (from == "latest") seek = SeekPolicy::Rewind(SeekPolicy::Kind::latest);
    else if (from == "committed") seek = SeekPolicy::Committed();
    else return usage(out, "--from '" + from + "' is not earliest, latest or committed");
    if (from == "committed" && group.empty()) return usage(out, "--from committed needs --group");

    auto pool = open_pool(r, false);
    if (!pool) return fail(out, pool.error());
    // An observer never registers a group; with --group but no --commit we read the group's
    // committed positions without ever moving them.
    auto consumer = Consumer::open(pool.value(), topic, r.count("commit") ? group : "");
    if (!consumer) return fail(out, consumer.error());
    if (Status a = consumer->assign_all(); !a) return fail(out, a.error());
    if (!group.empty() && !r.count("commit") && from == "committed") {
        TopicManager topics(pool.value());
        auto d = topics.describe(topic);
        if (!d) return fail(out, d.error());
        bool found = false;
        for (const GroupDescription& g : d->groups) {
            if (g.name != group) continue;
            found = true;
            for (const GroupPartitionDescription& p : g.partitions)
                if (Status st = consumer->seek(p.partition, SeekPolicy::Offset(p.committed)); !st) return fail(out, st.error());
        }
        if (!found) return fail(out, Errc::not_found, "group '" + group + "' is not registered on topic '" + topic + "'");
    } else if (Status st = consumer->seek(seek); !st) {
        return fail(out, st.error());
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    MessageBatch batch;
    uint64_t printed = 0;
    const bool follow = r.count("follow") > 0;
    while (!g_stop) {
        const size_t want = count.value() ? std::min<uint64_t>(256, count.value() - printed) : 256;
        auto got = consumer->poll(batch, want, ns_duration(follow ? 100 * kNsPerMs : 0));
        if (!got) return fail(out, got.error());
        for (const Gap& g : batch.gaps())
            std::fprintf(stderr, "fabric-shm: warning: partition %u lost offsets [%llu, %llu) to overwriting\n",
                         g.partition, (unsigned long long)g.from, (unsigned long long)g.to);
        for (const Message& m : batch) {
            if (out.json) {
                nlohmann::json headers = nlohmann::json::object();
                for (size_t i = 0; i < m.header_count(); ++i) {
                    const MessageHeader h = m.header_at(i);
                    headers[std::string(h.name)] = std::string(h.value);
                }
                // One document per line; bytes that are not UTF-8 (a binary value, a header a
                // process wrote) become U+FFFD, as in every --json output, instead of ending
                // the command with an exception.
                std::cout << nlohmann::json{{"partition", m.partition}, {"offset", m.offset},
                                            {"timestamp_ns", m.timestamp_ns}, {"key", bytes_text(m.key)},
                                            {"value", bytes_text(m.value)}, {"headers", headers}}
                                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                          << "\n";
            } else {
                // One message per line, its control bytes and invalid UTF-8 as \xNN (a newline
                // in a value too): an escape sequence in a message must not drive the terminal.
                std::cout << m.partition << ":" << m.offset << "\t" << terminal_safe(std::string(m.value_str())) << "\n";
            }
            ++printed;
        }
        std::cout.flush();
        if (r.count("commit") && !batch.empty())
            if (Status c = consumer->commit(); !c) return fail(out, c.error());
        if (count.value() && printed >= count.value()) break;
        if (batch.empty() && !follow) break;
    }
    return kExitOk;
}

}  // namespace

void register_topic_commands(std::vector<Command>& commands) {
    commands.push_back({"topic", "topics: create, ls, describe, rm", topic_cmd});
    commands.push_back({"send", "send one message to a topic", send_cmd});
    commands.push_back({"tail", "print messages of a topic (an observer unless --commit)", tail_cmd});
}

}  // namespace fabric_shm::cli
