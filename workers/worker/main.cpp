// SPDX-License-Identifier: MIT
// fabric-shm-worker: a consumer-group member that turns notifications into results. The
// processing loop is the library's WorkerLoop; this file adds the command line, the
// processors (--exec CMD through exec_runner, --builtin NAME) and signal handling.
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

#include "builtins.h"
#include "cli.h"
#include "exec_runner.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/worker_loop.h"
#include "tool_support.h"

using namespace fabric_shm;

namespace {

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

void install_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a blocking call returns EINTR and the loop looks at g_stop
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ign, nullptr);  // a command that does not read stdin: EPIPE, not death
}

std::string_view exit_name(WorkerExit e) {
    switch (e) {
        case WorkerExit::stopped: return "stopped";
        case WorkerExit::count_reached: return "count_reached";
        case WorkerExit::idle: return "idle";
    }
    return "?";
}

nlohmann::json stats_json(const WorkerLoop& loop, uint64_t elapsed_ns) {
    const WorkerStats& s = loop.stats();
    const double secs = double(elapsed_ns) / 1e9;
    nlohmann::json j;
    j["member"] = loop.member_id();
    j["processed"] = s.processed;
    j["skipped"] = s.skipped;
    j["failed_attempts"] = s.failed_attempts;
    j["dead_lettered"] = s.dead_lettered;
    j["forwarded"] = s.forwarded;
    j["bytes_in"] = s.bytes_in;
    j["bytes_out"] = s.bytes_out;
    j["rebalances"] = s.rebalances;
    j["epoch"] = s.epoch;
    j["partitions"] = s.partitions;
    j["elapsed_s"] = secs;
    j["results_per_s"] = secs > 0 ? double(s.processed) / secs : 0.0;
    j["latency_ns"] = {{"samples", s.latency.samples}, {"p50", s.latency.p50_ns}, {"p99", s.latency.p99_ns},
                       {"p99.9", s.latency.p999_ns}, {"max", s.latency.max_ns}};
    return j;
}

}  // namespace

int main(int argc, char** argv) {
    cli::Output out{cli::argv_has_json(argc, argv), "fabric-shm-worker"};
    cxxopts::Options o("fabric-shm-worker",
                       "Consumer-group member: for each notification on --topic, read the object, run the "
                       "processor, write the result to fabric://POOL/RESULT_BUCKET/<key>, forward, commit.");
    o.add_options()("pool", "pool name (default $FABRIC_SHM_POOL, else \"default\"); created if missing",
                    cxxopts::value<std::string>()->default_value(""))(
        "topic", "topic to consume (created with --partitions if missing)", cxxopts::value<std::string>())(
        "group", "consumer group", cxxopts::value<std::string>())(
        "id", "member id (default host-pid-starttime); a live duplicate is refused", cxxopts::value<std::string>())(
        "exec", "processor: /bin/sh -c CMD, object on stdin, result from stdout", cxxopts::value<std::string>())(
        "builtin", "processor: copy | upper | crc32", cxxopts::value<std::string>())(
        "result-bucket", "bucket of the results", cxxopts::value<std::string>()->default_value("results"))(
        "next-topic", "forward each result URI to this topic (multi-stage)", cxxopts::value<std::string>())(
        "max-attempts", "attempts before dead-lettering", cxxopts::value<uint32_t>()->default_value("3"))(
        "dlq", "dead-letter topic (default <topic>.dlq, created if missing)", cxxopts::value<std::string>())(
        "backoff", "first retry backoff (doubles, capped at 2s)", cxxopts::value<std::string>()->default_value("100ms"))(
        "session-timeout", "a member silent this long loses its partitions",
        cxxopts::value<std::string>()->default_value("10s"))(
        "batch", "messages per poll", cxxopts::value<uint32_t>()->default_value("16"))(
        "count", "exit after handling N notifications", cxxopts::value<uint64_t>()->default_value("0"))(
        "exit-when-idle", "exit after this long without a notification", cxxopts::value<std::string>())(
        "exec-timeout", "kill --exec after this long (a failure)", cxxopts::value<std::string>()->default_value("60s"))(
        "max-result-size", "largest --exec result", cxxopts::value<std::string>()->default_value("16M"))(
        "partitions", "partitions of topics this worker creates", cxxopts::value<uint32_t>()->default_value("4"))(
        "pool-size", "size of the pool if this worker creates it", cxxopts::value<std::string>()->default_value("32M"))(
        "quiet", "no event log on stderr")("json", "print the summary as JSON on stdout")("help", "this help");
    cxxopts::ParseResult r;
    int rc = 0;
    if (!cli::parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) {
        std::cout << o.help() << "\nProcessors: --builtin " << workers::builtin_names()
                  << ", or --exec CMD with FABRIC_URI, FABRIC_KEY, FABRIC_VERSION, FABRIC_TOPIC, FABRIC_PARTITION,"
                     " FABRIC_OFFSET, FABRIC_ATTEMPT in its environment.\n";
        return cli::kExitOk;
    }
    if (!r.count("topic") || !r.count("group")) return cli::usage(out, "--topic and --group are required");
    if (r.count("exec") + r.count("builtin") != 1) return cli::usage(out, "give exactly one of --exec CMD or --builtin NAME");

    auto pool_name = cli::resolve_pool(r["pool"].as<std::string>());
    if (!pool_name) return cli::fail(out, pool_name.error());
    WorkerConfig cfg;
    cfg.topic = r["topic"].as<std::string>();
    cfg.group = r["group"].as<std::string>();
    if (r.count("id")) cfg.member_id = r["id"].as<std::string>();
    cfg.result_bucket = r["result-bucket"].as<std::string>();
    if (r.count("next-topic")) cfg.next_topic = r["next-topic"].as<std::string>();
    if (r.count("dlq")) cfg.dlq_topic = r["dlq"].as<std::string>();
    cfg.max_attempts = r["max-attempts"].as<uint32_t>();
    cfg.batch = r["batch"].as<uint32_t>();
    cfg.count = r["count"].as<uint64_t>();
    cfg.partitions_if_created = r["partitions"].as<uint32_t>();
    auto parse_d = [&](const char* name, uint64_t* dst) -> bool {
        auto d = cli::parse_duration_option(std::string("--") + name, r[name].as<std::string>());
        if (!d) {
            rc = cli::fail(out, d.error());
            return false;
        }
        *dst = *d;
        return true;
    };
    uint64_t exec_timeout = 0, max_result = 0, pool_size = 0;
    if (!parse_d("session-timeout", &cfg.session_timeout_ns) || !parse_d("backoff", &cfg.backoff_initial_ns) ||
        !parse_d("exec-timeout", &exec_timeout))
        return rc;
    if (r.count("exit-when-idle") && !parse_d("exit-when-idle", &cfg.exit_when_idle_ns)) return rc;
    for (auto [name, dst] : {std::pair{"max-result-size", &max_result}, std::pair{"pool-size", &pool_size}}) {
        auto s = cli::parse_size_option(std::string("--") + name, r[name].as<std::string>());
        if (!s) return cli::fail(out, s.error());
        *dst = *s;
    }

    // The processor.
    Processor processor;
    if (r.count("builtin")) {
        auto fn = workers::find_builtin(r["builtin"].as<std::string>());
        if (!fn) return cli::fail(out, fn.error());
        processor = [f = *fn](const WorkItem& item) -> Result<std::vector<uint8_t>> { return f(item.data); };
    } else {
        workers::ExecSpec base;
        base.command = r["exec"].as<std::string>();
        base.timeout_ns = exec_timeout;
        base.max_result_bytes = max_result;
        const std::string pool_s = *pool_name;
        processor = [base, pool_s](const WorkItem& item) -> Result<std::vector<uint8_t>> {
            workers::ExecSpec spec = base;
            spec.env = {{"FABRIC_URI", item.uri.to_string()},
                        {"FABRIC_KEY", item.uri.key()},
                        {"FABRIC_BUCKET", item.uri.bucket()},
                        {"FABRIC_POOL", pool_s},
                        {"FABRIC_VERSION", std::to_string(item.version)},
                        {"FABRIC_TOPIC", std::string(item.topic)},
                        {"FABRIC_PARTITION", std::to_string(item.partition)},
                        {"FABRIC_OFFSET", std::to_string(item.offset)},
                        {"FABRIC_ATTEMPT", std::to_string(item.attempt)}};
            auto res = workers::run_exec(spec, item.data, item.keep_alive);
            if (!res) return std::move(res).error();
            if (res->ok()) return std::move(res->stdout_bytes);
            // Too large is a property of the input: retrying cannot help.
            return make_error(res->result_too_large ? Errc::invalid_argument : Errc::io_error,
                              "--exec failed: " + res->describe(spec));
        };
    }

    install_signals();
    OpenOptions oo;
    oo.create_if_missing = true;
    oo.create.size_bytes = pool_size;
    auto pool = Pool::open(*pool_name, oo);
    if (!pool) return cli::fail(out, pool.error());

    const uint64_t start = mono_now_ns();
    auto loop = WorkerLoop::open(*pool, cfg, std::move(processor));
    if (!loop) return cli::fail(out, loop.error());
    const std::string prefix = "fabric-shm-worker[" + loop->member_id() + "]: ";
    if (!r.count("quiet"))
        loop->set_log([prefix](std::string_view line) { std::cerr << prefix << line << std::endl; });

    auto ran = loop->run([] { return g_stop != 0; });
    const uint64_t elapsed = mono_now_ns() - start;
    nlohmann::json summary = stats_json(*loop, elapsed);
    if (!ran) {
        summary["error"] = {{"code", std::string(errc_name(ran.code()))}, {"message", ran.error().message}};
        if (out.json) cli::print_json(summary);
        else std::cerr << prefix << "error: " << errc_name(ran.code()) << ": " << ran.error().message << "\n";
        return cli::kExitRuntime;
    }
    summary["exit"] = std::string(exit_name(*ran));
    if (out.json) {
        cli::print_json(summary);
    } else if (!r.count("quiet")) {
        const WorkerStats& s = loop->stats();
        std::cerr << prefix << exit_name(*ran) << ": " << s.processed << " results, " << s.skipped << " skipped, "
                  << s.dead_lettered << " dead-lettered, " << s.failed_attempts << " failed attempts in "
                  << format_duration_ns(elapsed) << "; latency p50 " << format_duration_ns(s.latency.p50_ns)
                  << " p99 " << format_duration_ns(s.latency.p99_ns) << " max "
                  << format_duration_ns(s.latency.max_ns) << "\n";
    }
    return cli::kExitOk;
}
