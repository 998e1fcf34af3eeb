// SPDX-License-Identifier: MIT
// fabric-shm-bridge export|import: a local topic to a NATS JetStream stream and back. The
// loops are the bridge library's Exporter and Importer (libfabric_shm/bridge); this file adds
// the command line, signal handling and the summary. Semantics: docs/bridge.md.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "fabric_shm/clock.h"
#include "fabric_shm_bridge/bridge.h"
#include "tool_support.h"

using namespace fabric_shm;
using namespace fabric_shm::bridge;

namespace {

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

void install_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ign, nullptr);
}

void usage_text() {
    std::cout << "Usage:\n"
                 "  fabric-shm-bridge export --topic T [--group G] --to nats://HOST:PORT[,...] [--stream S] [options]\n"
                 "  fabric-shm-bridge import --from STREAM --durable NAME --topic T [--nats nats://HOST:PORT[,...]] [options]\n"
                 "  fabric-shm-bridge export --help | import --help\n\n"
                 "export: a consumer-group member of a local topic; publishes each message with the object it names to\n"
                 "        a JetStream stream and commits the local offset only after the stream acknowledged it.\n"
                 "import: a durable pull consumer; puts each object into the local store, sends the notification, and\n"
                 "        acks the stream message only after the local consumer groups committed past it.\n"
                 "Guarantees and durability: docs/bridge.md.\n";
}

/// Options both commands take.
void add_common(cxxopts::Options& o) {
    o.add_options()("pool", "local pool (default $FABRIC_SHM_POOL, else \"default\"); created if missing",
                    cxxopts::value<std::string>()->default_value(""))(
        "pool-size", "size of the pool if the bridge creates it", cxxopts::value<std::string>()->default_value("32M"))(
        "pool-ttl", "TTL of the pool if the bridge creates it", cxxopts::value<std::string>()->default_value("1h"))(
        "id", "member id (default host-pid-starttime, at most 32 bytes)", cxxopts::value<std::string>())(
        "partitions", "partitions of a topic the bridge creates", cxxopts::value<uint32_t>()->default_value("4"))(
        "storage", "stream storage if the bridge creates the stream: file | memory",
        cxxopts::value<std::string>()->default_value("file"))(
        "replicas", "stream replicas if the bridge creates the stream (1-5)", cxxopts::value<int>()->default_value("3"))(
        "retention", "stream retention if the bridge creates it: workqueue | limits",
        cxxopts::value<std::string>()->default_value("workqueue"))(
        "max-age", "stream message age limit if the bridge creates it (0: none)",
        cxxopts::value<std::string>()->default_value("0"))(
        "max-bytes", "stream size limit if the bridge creates it (full: publishes wait), e.g. 10G (0: none)",
        cxxopts::value<std::string>()->default_value("0"))(
        "dup-window", "server-side de-duplication window if the bridge creates the stream",
        cxxopts::value<std::string>()->default_value("2m"))(
        "user", "NATS user", cxxopts::value<std::string>())("password", "NATS password", cxxopts::value<std::string>())(
        "token", "NATS token", cxxopts::value<std::string>())("creds", "NATS credentials file (.creds: JWT + NKey seed)",
                                                               cxxopts::value<std::string>())(
        "nkey", "NATS NKey seed file", cxxopts::value<std::string>())("tls", "require TLS")(
        "tls-ca", "CA certificates for the server (PEM)", cxxopts::value<std::string>())(
        "tls-cert", "client certificate chain (PEM)", cxxopts::value<std::string>())(
        "tls-key", "client private key (PEM)", cxxopts::value<std::string>())(
        "tls-insecure", "do not verify the server certificate (testing only)")(
        "reconnect-wait", "first reconnect delay (doubles per attempt, +-20 % jitter)",
        cxxopts::value<std::string>()->default_value("100ms"))(
        "reconnect-max", "longest reconnect delay", cxxopts::value<std::string>()->default_value("5s"))(
        "count", "exit after N messages", cxxopts::value<uint64_t>()->default_value("0"))(
        "exit-when-idle", "exit after this long without a message", cxxopts::value<std::string>())(
        "quiet", "no event log on stderr")("json", "print the summary as JSON on stdout")("h,help", "this help");
}

struct Common {
    LocalSettings local;
    NatsSettings nats;
    StreamSettings stream;
    uint64_t count = 0, idle_ns = 0;
};

int parse_common(const cxxopts::ParseResult& r, const cli::Output& out, const std::string& servers_flag, Common* c) {
    auto pool = cli::resolve_pool(r["pool"].as<std::string>());
    if (!pool) return cli::fail(out, pool.error());
    c->local.pool = *pool;
    auto size = cli::parse_size_option("--pool-size", r["pool-size"].as<std::string>());
    if (!size) return cli::fail(out, size.error());
    c->local.pool_size = *size;
    auto ttl = cli::parse_duration_option("--pool-ttl", r["pool-ttl"].as<std::string>());
    if (!ttl) return cli::fail(out, ttl.error());
    c->local.pool_ttl_ns = *ttl;
    if (r.count("id")) c->local.member_id = r["id"].as<std::string>();
    c->local.partitions_if_created = r["partitions"].as<uint32_t>();
    std::string servers = servers_flag;
    if (servers.empty()) {
        const char* env = std::getenv("NATS_URL");
        servers = env && *env ? env : "nats://127.0.0.1:4222";
    }
    auto list = parse_server_list(servers);
    if (!list) return cli::fail(out, list.error());
    c->nats.servers = *list;
    for (auto [flag, dst] : {std::pair{"user", &c->nats.user}, std::pair{"password", &c->nats.password},
                             std::pair{"token", &c->nats.token}, std::pair{"creds", &c->nats.creds_file},
                             std::pair{"nkey", &c->nats.nkey_seed_file}, std::pair{"tls-ca", &c->nats.tls_ca_file},
                             std::pair{"tls-cert", &c->nats.tls_cert_file}, std::pair{"tls-key", &c->nats.tls_key_file}})
        if (r.count(flag)) *dst = r[flag].as<std::string>();
    c->nats.tls = r.count("tls") > 0;
    c->nats.tls_skip_verify = r.count("tls-insecure") > 0;
    for (auto [flag, dst] : {std::pair{"reconnect-wait", &c->nats.reconnect_wait_ns},
                             std::pair{"reconnect-max", &c->nats.reconnect_max_ns}}) {
        auto d = cli::parse_duration_option(std::string("--") + flag, r[flag].as<std::string>());
        if (!d) return cli::fail(out, d.error());
        *dst = *d;
    }
    const std::string storage = r["storage"].as<std::string>(), retention = r["retention"].as<std::string>();
    if (storage != "file" && storage != "memory") return cli::usage(out, "--storage '" + storage + "': expected file or memory");
    if (retention != "workqueue" && retention != "limits")
        return cli::usage(out, "--retention '" + retention + "': expected workqueue or limits");
    c->stream.memory_storage = storage == "memory";
    c->stream.work_queue = retention == "workqueue";
    c->stream.replicas = r["replicas"].as<int>();
    if (c->stream.replicas < 1 || c->stream.replicas > 5)
        return cli::fail(out, Errc::invalid_argument, "--replicas " + std::to_string(c->stream.replicas) + ": 1 to 5");
    auto age = cli::parse_duration_option("--max-age", r["max-age"].as<std::string>());
    if (!age) return cli::fail(out, age.error());
    c->stream.max_age_ns = *age;
    auto bytes = cli::parse_size_option("--max-bytes", r["max-bytes"].as<std::string>());
    if (!bytes) return cli::fail(out, bytes.error());
    c->stream.max_bytes = *bytes == 0 ? -1 : int64_t(*bytes);
    auto dup = cli::parse_duration_option("--dup-window", r["dup-window"].as<std::string>());
    if (!dup) return cli::fail(out, dup.error());
    c->stream.duplicate_window_ns = *dup;
    c->count = r["count"].as<uint64_t>();
    if (r.count("exit-when-idle")) {
        auto d = cli::parse_duration_option("--exit-when-idle", r["exit-when-idle"].as<std::string>());
        if (!d) return cli::fail(out, d.error());
        c->idle_ns = *d;
    }
    return -1;
}

nlohmann::json stats_json(const BridgeStats& s, uint64_t elapsed_ns) {
    const double secs = double(elapsed_ns) / 1e9;
    return {{"messages", s.messages},
            {"bytes", s.bytes},
            {"objects", s.objects},
            {"acked", s.acked},
            {"duplicates", s.duplicates},
            {"dead_lettered", s.dead_lettered},
            {"redeliveries", s.redeliveries},
            {"retries", s.retries},
            {"reconnects", s.reconnects},
            {"disconnects", s.disconnects},
            {"errors", s.errors},
            {"chunks", s.chunks},
            {"pool_recoveries", s.pool_recoveries},
            {"skipped_loops", s.skipped_loops},
            {"lag", s.lag},
            {"last_error", s.last_error},
            {"elapsed_s", secs},
            {"messages_per_s", secs > 0 ? double(s.messages) / secs : 0.0},
            {"bytes_per_s", secs > 0 ? double(s.bytes) / secs : 0.0}};
}

template <class Bridge>
int run_bridge(Bridge& bridge, const cli::Output& out, bool quiet, const std::string& role, nlohmann::json ident) {
    const std::string prefix = "fabric-shm-bridge " + role + "[" + bridge.member_id() + "]: ";
    if (!quiet) bridge.set_log([prefix](std::string_view line) { std::cerr << prefix << line << std::endl; });
    const uint64_t start = mono_now_ns();
    auto ran = bridge.run([] { return g_stop != 0; });
    const uint64_t elapsed = mono_now_ns() - start;
    nlohmann::json j = stats_json(bridge.stats(), elapsed);
    j.update(ident);
    j["member"] = bridge.member_id();
    if (!ran) {
        j["error"] = {{"code", std::string(errc_name(ran.code()))}, {"message", ran.error().message}};
        if (out.json) cli::print_json(j);
        else std::cerr << prefix << "error: " << errc_name(ran.code()) << ": " << ran.error().message << "\n";
        return cli::kExitRuntime;
    }
    j["exit"] = std::string(bridge_exit_name(*ran));
    if (out.json) {
        cli::print_json(j);
    } else if (!quiet) {
        const BridgeStats& s = bridge.stats();
        std::cerr << prefix << bridge_exit_name(*ran) << ": " << s.messages << " messages (" << format_bytes(s.bytes) << "), "
                  << s.objects << " objects, " << s.acked << " acked, " << s.duplicates << " duplicates, "
                  << s.dead_lettered << " dead-lettered, " << s.reconnects << " reconnects in "
                  << format_duration_ns(elapsed) << "\n";
    }
    return cli::kExitOk;
}


/// Parses a subcommand's options, answers --help and refuses stray arguments. An exit code
/// when the command is over, nullopt when `r` holds options to run with.
std::optional<int> parse_command(cxxopts::Options& o, int argc, char** argv, const cli::Output& out,
                                 cxxopts::ParseResult& r) {
    int rc = 0;
    if (!cli::parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) {
        std::cout << o.help() << "\n";
        return cli::kExitOk;
    }
    if (!r.unmatched().empty()) return cli::usage(out, "unexpected argument '" + r.unmatched()[0] + "'");
    return std::nullopt;
}

int cmd_export(int argc, char** argv, const cli::Output& out) {
    cxxopts::Options o("fabric-shm-bridge export",
                       "Publishes a local topic's messages, with the objects they name, to a NATS JetStream stream.");
    add_common(o);
    o.add_options()("topic", "local topic to export (created if missing)", cxxopts::value<std::string>())(
        "group", "local consumer group the exporters share", cxxopts::value<std::string>()->default_value("bridge"))(
        "to", "NATS servers, nats://HOST:PORT[,...] (default $NATS_URL, else nats://127.0.0.1:4222)",
        cxxopts::value<std::string>()->default_value(""))(
        "stream", "JetStream stream (default: the topic name, '.' made '_')", cxxopts::value<std::string>()->default_value(""))(
        "batch", "local messages per publish round", cxxopts::value<uint32_t>()->default_value("256"))(
        "chunk-size", "frames larger than this travel as chunks", cxxopts::value<std::string>()->default_value("256K"))(
        "publish-timeout", "wait this long for the stream's acks before publishing a round again",
        cxxopts::value<std::string>()->default_value("5s"))(
        "session-timeout", "local group session", cxxopts::value<std::string>()->default_value("10s"));
    cxxopts::ParseResult r;
    if (std::optional<int> done = parse_command(o, argc, argv, out, r)) return *done;
    if (!r.count("topic")) return cli::usage(out, "--topic is required");
    Common c;
    if (int code = parse_common(r, out, r["to"].as<std::string>(), &c); code >= 0) return code;
    ExportConfig cfg;
    cfg.local = c.local;
    cfg.nats = c.nats;
    cfg.stream_settings = c.stream;
    cfg.topic = r["topic"].as<std::string>();
    cfg.group = r["group"].as<std::string>();
    cfg.stream = r["stream"].as<std::string>();
    cfg.batch = r["batch"].as<uint32_t>();
    cfg.count = c.count;
    cfg.exit_when_idle_ns = c.idle_ns;
    auto chunk = cli::parse_size_option("--chunk-size", r["chunk-size"].as<std::string>());
    if (!chunk) return cli::fail(out, chunk.error());
    cfg.chunk_bytes = *chunk;
    for (auto [flag, dst] : {std::pair{"publish-timeout", &cfg.publish_timeout_ns},
                             std::pair{"session-timeout", &cfg.session_timeout_ns}}) {
        auto d = cli::parse_duration_option(std::string("--") + flag, r[flag].as<std::string>());
        if (!d) return cli::fail(out, d.error());
        *dst = *d;
    }
    install_signals();
    auto ex = Exporter::open(cfg);
    if (!ex) return cli::fail(out, ex.error());
    return run_bridge(*ex, out, r.count("quiet") > 0, "export",
                      {{"role", "export"}, {"topic", cfg.topic}, {"group", cfg.group},
                       {"stream", cfg.stream.empty() ? stream_name_for_topic(cfg.topic) : cfg.stream}});
}

int cmd_import(int argc, char** argv, const cli::Output& out) {
    cxxopts::Options o("fabric-shm-bridge import",
                       "Consumes a JetStream stream as a durable consumer into a local topic and store.");
    add_common(o);
    o.add_options()("from", "JetStream stream to consume", cxxopts::value<std::string>())(
        "durable", "durable consumer name (importers with one name share the stream)", cxxopts::value<std::string>())(
        "topic", "local topic to notify (created if missing)", cxxopts::value<std::string>())(
        "nats", "NATS servers, nats://HOST:PORT[,...] (default $NATS_URL, else nats://127.0.0.1:4222)",
        cxxopts::value<std::string>()->default_value(""))(
        "bucket", "local bucket for the objects (default: the source bucket)", cxxopts::value<std::string>())(
        "dlq", "local dead-letter topic (default <topic>.dlq)", cxxopts::value<std::string>())(
        "ack-after", "commit: ack once the local groups committed past the notification; send: once it is sent",
        cxxopts::value<std::string>()->default_value("commit"))(
        "ack-group", "group whose commit the ack waits for (repeat; default: every registered group)",
        cxxopts::value<std::vector<std::string>>())(
        "ack-wait", "the consumer's ack deadline (extended while waiting)", cxxopts::value<std::string>()->default_value("30s"))(
        "max-deliver", "deliveries before the server gives a message up (-1: never)",
        cxxopts::value<int64_t>()->default_value("-1"))(
        "max-ack-pending", "unacked messages the consumer allows across its importers",
        cxxopts::value<int64_t>()->default_value("4096"))(
        "max-in-flight", "messages this importer holds put but unacked", cxxopts::value<uint32_t>()->default_value("1024"))(
        "batch", "messages per fetch", cxxopts::value<uint32_t>()->default_value("64"))(
        "stride", "slot size of a topic the importer creates", cxxopts::value<std::string>()->default_value("1K"))(
        "capacity", "slots per partition of a topic the importer creates", cxxopts::value<uint32_t>()->default_value("256"))(
        "max-message", "largest stream message (frame) accepted; larger ones are dead-lettered",
        cxxopts::value<std::string>()->default_value("64M"))(
        "drain-timeout", "at exit, wait this long for pending acks", cxxopts::value<std::string>()->default_value("5s"));
    cxxopts::ParseResult r;
    if (std::optional<int> done = parse_command(o, argc, argv, out, r)) return *done;
    if (!r.count("from") || !r.count("durable") || !r.count("topic"))
        return cli::usage(out, "--from, --durable and --topic are required");
    Common c;
    if (int code = parse_common(r, out, r["nats"].as<std::string>(), &c); code >= 0) return code;
    ImportConfig cfg;
    cfg.local = c.local;
    cfg.nats = c.nats;
    cfg.stream_settings = c.stream;
    cfg.stream = r["from"].as<std::string>();
    cfg.durable = r["durable"].as<std::string>();
    cfg.topic = r["topic"].as<std::string>();
    if (r.count("bucket")) cfg.bucket = r["bucket"].as<std::string>();
    if (r.count("dlq")) cfg.dlq_topic = r["dlq"].as<std::string>();
    const std::string after = r["ack-after"].as<std::string>();
    if (after != "commit" && after != "send") return cli::usage(out, "--ack-after '" + after + "': expected commit or send");
    cfg.ack_after = after == "send" ? AckAfter::send : AckAfter::commit;
    if (r.count("ack-group")) cfg.ack_groups = r["ack-group"].as<std::vector<std::string>>();
    cfg.max_deliver = r["max-deliver"].as<int64_t>();
    cfg.max_ack_pending = r["max-ack-pending"].as<int64_t>();
    cfg.max_in_flight = r["max-in-flight"].as<uint32_t>();
    cfg.batch = r["batch"].as<uint32_t>();
    cfg.capacity_if_created = r["capacity"].as<uint32_t>();
    cfg.count = c.count;
    cfg.exit_when_idle_ns = c.idle_ns;
    auto stride = cli::parse_size_option("--stride", r["stride"].as<std::string>());
    if (!stride) return cli::fail(out, stride.error());
    cfg.stride_if_created = uint32_t(std::min<uint64_t>(*stride, 1u << 20));
    auto max_msg = cli::parse_size_option("--max-message", r["max-message"].as<std::string>());
    if (!max_msg) return cli::fail(out, max_msg.error());
    cfg.limits.max_frame_bytes = *max_msg;
    cfg.limits.max_object_bytes = *max_msg;
    for (auto [flag, dst] : {std::pair{"ack-wait", &cfg.ack_wait_ns}, std::pair{"drain-timeout", &cfg.drain_timeout_ns}}) {
        auto d = cli::parse_duration_option(std::string("--") + flag, r[flag].as<std::string>());
        if (!d) return cli::fail(out, d.error());
        *dst = *d;
    }
    install_signals();
    auto im = Importer::open(cfg);
    if (!im) return cli::fail(out, im.error());
    return run_bridge(*im, out, r.count("quiet") > 0, "import",
                      {{"role", "import"}, {"topic", cfg.topic}, {"durable", cfg.durable}, {"stream", cfg.stream}});
}

}  // namespace

int main(int argc, char** argv) {
    cli::Output out{cli::argv_has_json(argc, argv), "fabric-shm-bridge"};
    if (argc < 2) {
        usage_text();
        return cli::kExitUsage;
    }
    const std::string cmd = argv[1];
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
        usage_text();
        return cli::kExitOk;
    }
    std::string argv0 = "fabric-shm-bridge " + cmd;
    std::vector<char*> args = {argv0.data()};
    for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    args.push_back(nullptr);
    if (cmd == "export") return cmd_export(int(args.size()) - 1, args.data(), out);
    if (cmd == "import") return cmd_import(int(args.size()) - 1, args.data(), out);
    return cli::usage(out, "unknown command '" + cmd + "': expected export or import");
}
