// SPDX-License-Identifier: MIT
// fabric-shm-worker: a consumer-group member that turns notifications into results. The
// processing loop is the library's WorkerLoop; this file adds the command line, the
// processors (--exec CMD through exec_runner, --builtin NAME) and signal handling.
//
// Signals: the first SIGINT/SIGTERM asks the loop to stop after the object in flight (an
// --exec command runs in its own process group, so a terminal's Ctrl-C does not reach it,
// and it runs to its end); the worker says so. A second one stops at once: the command's
// process group is SIGKILLed and the worker exits 130 without committing the object (it is
// redelivered, like after a crash; the hand-out counts as an attempt). Log lines go out with
// one write(2) each: the lines of several workers on one terminal never mix.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>

#include "builtins.h"
#include "cli.h"
#include "exec_runner.h"
#include "handler_pool.h"
#include "fabric_shm/child_groups.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/counters.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/worker_loop.h"
#include "tool_support.h"

using namespace fabric_shm;

namespace {

volatile sig_atomic_t g_stop = 0;       ///< signals received (1: finish and leave; 2: stop now)
volatile sig_atomic_t g_exec_pgid = 0;  ///< the running --exec command's process group, 0 when none
volatile sig_atomic_t g_quiet = 0;
// Each handler's process group is recorded in the pool (child_groups.h), so that a survivor
// kills it if this worker is SIGKILLed; a registration records at most kMaxChildGroups.
constexpr uint32_t kMaxHandlers = kMaxChildGroups;
volatile sig_atomic_t g_handler_pgids[kMaxHandlers] = {};  ///< --handler: running handlers' process groups

/// What the handler writes, prepared outside it (a handler may only write(2) bytes it finds
/// ready). Two buffers: the one not published is rewritten, then published by one store.
struct Notice {
    char text[2][768];
    size_t length[2] = {0, 0};
    volatile sig_atomic_t active = 0;
    void set(const std::string& s) {
        if (s.empty()) return;
        const int next = 1 - active;
        const size_t n = std::min(s.size(), sizeof text[next]);
        std::memcpy(text[next], s.data(), n);
        text[next][n - 1] = '\n';  // a notice cut short still ends its line
        length[next] = n;
        active = next;
    }
    void write_now() const {
        const int a = active;
        if (length[a]) (void)!::write(STDERR_FILENO, text[a], length[a]);
    }
};
Notice g_first_idle, g_first_exec, g_second_idle, g_second_exec;
std::string g_prefix;  ///< "fabric-shm-worker[ID]: ", set once the member id is known

/// The notices a signal prints while `uri` is being processed by --exec.
void prepare_exec_notices(const std::string& uri) {
    g_first_exec.set(g_prefix + "interrupt: finishing " + uri +
                     " (the --exec command runs to its end), then commit and leave; interrupt again to stop at once "
                     "(kills the command)\n");
    g_second_exec.set(g_prefix + "second interrupt: killed the --exec command's process group; " + uri +
                      " is not committed and will be redelivered (exit 130)\n");
}

void on_stop(int) {
    const int saved_errno = errno;
    const sig_atomic_t n = g_stop + 1;  // handlers are masked against each other: no lost count
    g_stop = n;
    const pid_t pgid = pid_t(g_exec_pgid);
    if (n == 1) {
        if (!g_quiet) (pgid > 0 ? g_first_exec : g_first_idle).write_now();
    } else {
        if (pgid > 0) ::kill(-pgid, SIGKILL);
        for (uint32_t i = 0; i < kMaxHandlers; ++i)
            if (const pid_t h = pid_t(g_handler_pgids[i]); h > 0) ::kill(-h, SIGKILL);
        if (!g_quiet) (pgid > 0 ? g_second_exec : g_second_idle).write_now();
        ::_exit(cli::kExitInterrupted);
    }
    errno = saved_errno;
}

void install_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);  // one handler at a time: the count and the notices stay consistent
    sigaddset(&sa.sa_mask, SIGTERM);
    sa.sa_flags = 0;  // no SA_RESTART: a blocking call returns EINTR and the loop looks at g_stop
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ign, nullptr);  // a command that does not read stdin: EPIPE, not death
}

/// The environment of an --exec command: the names (for --help) and their meaning.
constexpr std::array<std::pair<const char*, const char*>, 9> kExecEnvironment = {{
    {"FABRIC_URI", "the input's fabric:// URI"},
    {"FABRIC_KEY", "its key"},
    {"FABRIC_BUCKET", "its bucket"},
    {"FABRIC_POOL", "the pool"},
    {"FABRIC_VERSION", "the input version being processed"},
    {"FABRIC_TOPIC", "the topic of the notification"},
    {"FABRIC_PARTITION", "its partition"},
    {"FABRIC_OFFSET", "its offset"},
    {"FABRIC_ATTEMPT", "the attempt number, from 1"},
}};

std::vector<std::pair<std::string, std::string>> exec_environment(const WorkItem& item, const std::string& pool) {
    const std::string values[] = {item.uri.to_string(),
                                  item.uri.key(),
                                  item.uri.bucket(),
                                  pool,
                                  std::to_string(item.version),
                                  std::string(item.topic),
                                  std::to_string(item.partition),
                                  std::to_string(item.offset),
                                  std::to_string(item.attempt)};
    std::vector<std::pair<std::string, std::string>> env;
    for (size_t i = 0; i < kExecEnvironment.size(); ++i) env.emplace_back(kExecEnvironment[i].first, values[i]);
    return env;
}

std::string help_epilogue() {
    std::string t = "\nProcessors: --builtin " + workers::builtin_names() +
                    ", or --exec CMD (/bin/sh -c CMD in its own process group; the object on stdin, the result "
                    "from stdout) with in its environment:\n";
    for (const auto& [name, what] : kExecEnvironment) t += "  " + std::string(name) + "  " + what + "\n";
    t +=
        "Environment read by the worker:\n"
        "  FABRIC_SHM_POOL       the pool when --pool is not given (else \"default\")\n"
        "  FABRIC_SHM_NO_CREATE  1: never create the pool (as --no-create)\n"
        "  FABRIC_SHM_DIR        the directory of the pools' segments (default /dev/shm)\n"
        "  FABRIC_SHM_HEARTBEAT_TIMEOUT  declare a heartbeat timeout (e.g. 5s): required to share a pool across "
        "pid namespaces (containers)\n"
        "Signals: SIGINT/SIGTERM finish the object in flight (an --exec command runs to its end), commit, leave "
        "the group, exit 0; a second one kills the --exec command's process group and exits 130 at once (the "
        "object is redelivered). The --exec command's process group is recorded in the pool: if this worker is "
        "SIGKILLed, the member that takes its partitions over (or fabric-shm-reaper) kills it.\n"
        "Results: fabric://POOL/RESULT_BUCKET/<--result-key>, by default the input's bucket and key (inputs of the "
        "same name in two buckets get two results); a key longer than 256 bytes becomes its first 239 bytes, '~' "
        "and a 64-bit hash. Another group with live members writing the same --result-bucket is refused unless "
        "every such group runs with --shared-results.\n";
    return t;
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
    j["store_waits"] = s.store_waits;
    j["store_full"] = s.store_full;
    j["inputs_deleted"] = s.inputs_deleted;
    j["inputs_kept"] = s.inputs_kept;
    j["forwarded"] = s.forwarded;
    j["bytes_in"] = s.bytes_in;
    j["bytes_out"] = s.bytes_out;
    j["rebalances"] = s.rebalances;
    j["epoch"] = s.epoch;
    j["partitions"] = s.partitions;
    j["elapsed_s"] = secs;
    j["results_per_s"] = secs > 0 ? double(s.processed) / secs : 0.0;
    // From the first message handed out to the last result: no start-up, no idle tail.
    const double busy = s.busy_seconds();
    j["busy_s"] = busy;
    j["results_per_busy_s"] = busy > 0 ? double(s.processed) / busy : 0.0;
    j["latency_ns"] = {{"samples", s.latency.samples}, {"p50", s.latency.p50_ns}, {"p99", s.latency.p99_ns},
                       {"p99.9", s.latency.p999_ns}, {"max", s.latency.max_ns}};
    return j;
}

}  // namespace

int main(int argc, char** argv) {
    cli::Output out{cli::argv_has_json(argc, argv), "fabric-shm-worker", cli::spelling_worker()};
    if (cli::argv_has_version(argc, argv)) return cli::print_version(out.program);
    cxxopts::Options o("fabric-shm-worker",
                       "Consumer-group member: for each notification on --topic, read the object, run the "
                       "processor, write the result to fabric://POOL/RESULT_BUCKET/<input bucket>/<input key>, "
                       "forward, commit.");
    o.add_options()("pool", cli::pool_option_help("created if missing (announced on stderr) unless --no-create"),
                    cxxopts::value<std::string>())(
        "topic", "topic to consume (created with --partitions if missing)", cxxopts::value<std::string>())(
        "group", "consumer group", cxxopts::value<std::string>())(
        "id", "member id (default: host-pid-starttime); a live duplicate is refused", cxxopts::value<std::string>())(
        "exec", "processor: /bin/sh -c CMD, object on stdin, result from stdout", cxxopts::value<std::string>())(
        "builtin", "processor: copy | upper | crc32", cxxopts::value<std::string>())(
        "handler",
        "processor: long-lived handlers, /bin/sh -c CMD started once per slot, requests framed on stdin, "
        "replies on stdout (docs/handlers.md)",
        cxxopts::value<std::string>())(
        "concurrency", "--handler: handler processes, at most 32 (default: the number of CPUs, at most 32)",
        cxxopts::value<uint32_t>())(
        "max-inflight", "--handler: requests in flight per handler (K)",
        cxxopts::value<uint32_t>()->default_value("64"))(
        "order",
        "--handler: key (messages with one key complete in order) or none (fully parallel within the window)",
        cxxopts::value<std::string>()->default_value("key"))(
        "window", "--handler: messages of one partition in flight past its commit (1..8)",
        cxxopts::value<uint32_t>()->default_value("8"))(
        "result-bucket", "bucket of the results", cxxopts::value<std::string>()->default_value("results"))(
        "result-key", "key of an input's result in the result bucket: {bucket} and {key} are the input's",
        cxxopts::value<std::string>()->default_value(std::string(kDefaultResultKey)))(
        "shared-results",
        "let another group with live members write the same --result-bucket (every such group must say so)")(
        "next-topic", "forward each result URI to this topic (multi-stage; default: none)",
        cxxopts::value<std::string>())(
        "max-attempts", "attempts before dead-lettering", cxxopts::value<uint32_t>()->default_value("3"))(
        "dlq", "dead-letter topic (default: <topic>.dlq, created if missing)", cxxopts::value<std::string>())(
        "backoff", "first retry backoff (doubles, capped at 2s)", cxxopts::value<std::string>()->default_value("100ms"))(
        "session-timeout", "a member silent this long loses its partitions",
        cxxopts::value<std::string>()->default_value("10s"))(
        "store-wait", "a result put that finds the store full waits this long for space (heartbeating), then "
                      "hands the message back uncounted and pauses (default: the session timeout)",
        cxxopts::value<std::string>())(
        "result-ttl", "results expire this long after they are written (default: never); their space comes "
                      "back when the store needs it", cxxopts::value<std::string>())(
        "delete-input", "remove each input (at the version processed) once its result is written and its offset "
                        "committed; refused when another group reads the topic")(
        "batch", "messages per poll", cxxopts::value<uint32_t>()->default_value("16"))(
        "count", "exit after handling N notifications (default: no limit)", cxxopts::value<uint64_t>())(
        "exit-when-idle", "exit after this long without a notification (default: never)",
        cxxopts::value<std::string>())(
        "exec-timeout", "kill --exec after this long (a failure)", cxxopts::value<std::string>()->default_value("60s"))(
        "max-result-size", "largest --exec result", cxxopts::value<std::string>()->default_value("16M"))(
        "partitions", "partitions of topics this worker creates", cxxopts::value<uint32_t>()->default_value("4"))(
        "pool-size", "size of the pool if this worker creates it", cxxopts::value<std::string>()->default_value("32M"))(
        "no-create", "fail if the pool does not exist instead of creating it (also: FABRIC_SHM_NO_CREATE=1)");
    cli::add_store_options(o, "when this worker creates the pool (an existing pool keeps its store)");
    o.add_options()("quiet", "no event log on stderr")("json", "print the summary as JSON on stdout")(
        "version", "print the version and the pool layout version")("h,help", "this help");
    cxxopts::ParseResult r;
    int rc = 0;
    if (!cli::parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) {
        std::cout << o.help() << help_epilogue();
        return cli::kExitOk;
    }
    if (!r.count("topic") || !r.count("group")) return cli::usage(out, "--topic and --group are required");
    if (r.count("exec") + r.count("builtin") + r.count("handler") != 1)
        return cli::usage(out, "give exactly one of --exec CMD, --handler CMD or --builtin NAME");
    const bool handler_mode = r.count("handler") > 0;
    const std::string order = r["order"].as<std::string>();
    if (order != "key" && order != "none")
        return cli::usage(out, "--order '" + order + "': expected key or none");
    const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    const uint32_t handler_slots = r.count("concurrency")
                                       ? r["concurrency"].as<uint32_t>()
                                       : uint32_t(std::clamp<long>(cpus, 1, long(kMaxHandlers)));
    const uint32_t max_inflight = r["max-inflight"].as<uint32_t>();
    if (handler_slots == 0 || handler_slots > kMaxHandlers)
        return cli::usage(out, "--concurrency " + std::to_string(handler_slots) + " is not within 1.." +
                                   std::to_string(kMaxHandlers) +
                                   " (each handler's process group is recorded in the pool, so that a survivor "
                                   "can kill it if this worker dies; a process records at most " +
                                   std::to_string(kMaxChildGroups) + ")");
    if (max_inflight == 0 || max_inflight > 4096)
        return cli::usage(out, "--max-inflight " + std::to_string(max_inflight) + " is not within 1..4096");
    if (!handler_mode && (r.count("concurrency") || r.count("max-inflight") || r.count("order") || r.count("window")))
        return cli::usage(out, "--concurrency, --max-inflight, --order and --window apply to --handler only");

    auto pool_name = cli::resolve_pool(cli::opt_string(r, "pool"));
    if (!pool_name) return cli::fail(out, pool_name.error());
    WorkerConfig cfg;
    cfg.topic = r["topic"].as<std::string>();
    cfg.group = r["group"].as<std::string>();
    if (r.count("id")) cfg.member_id = r["id"].as<std::string>();
    cfg.result_bucket = r["result-bucket"].as<std::string>();
    cfg.result_key = r["result-key"].as<std::string>();
    cfg.shared_results = r.count("shared-results") > 0;
    cfg.delete_input = r.count("delete-input") > 0;
    if (Status st = validate_result_key_template(cfg.result_key); !st) return cli::usage(out, st.error().message);
    if (r.count("next-topic")) cfg.next_topic = r["next-topic"].as<std::string>();
    if (r.count("dlq")) cfg.dlq_topic = r["dlq"].as<std::string>();
    cfg.max_attempts = r["max-attempts"].as<uint32_t>();
    cfg.batch = r["batch"].as<uint32_t>();
    if (r.count("count")) cfg.count = r["count"].as<uint64_t>();
    cfg.partitions_if_created = r["partitions"].as<uint32_t>();
    if (handler_mode) {
        cfg.concurrency = handler_slots * max_inflight;
        cfg.order = order == "none" ? OrderMode::none : OrderMode::key;
        cfg.window = r["window"].as<uint32_t>();
        cfg.batch = std::max<uint32_t>(cfg.batch, 64);
    }
    auto parse_d = [&](const char* name, uint64_t* dst) -> bool {
        auto d = cli::parse_duration_option(name, r[name].as<std::string>());
        if (!d) {
            rc = cli::fail(out, d.error());
            return false;
        }
        *dst = *d;
        return true;
    };
    uint64_t exec_timeout = 0, max_result = 0;
    if (!parse_d("session-timeout", &cfg.session_timeout_ns) || !parse_d("backoff", &cfg.backoff_initial_ns) ||
        !parse_d("exec-timeout", &exec_timeout))
        return rc;
    if (r.count("exit-when-idle") && !parse_d("exit-when-idle", &cfg.exit_when_idle_ns)) return rc;
    for (auto [name, dst] : {std::pair{"store-wait", &cfg.store_wait}, std::pair{"result-ttl", &cfg.result_ttl}}) {
        uint64_t ns = 0;
        if (r.count(name) && !parse_d(name, &ns)) return rc;
        if (r.count(name)) *dst = ns_duration(ns);
    }
    cli::PoolCreation creation;
    creation.no_create = r.count("no-create") > 0;
    for (auto [name, dst] : {std::pair{"max-result-size", &max_result}, std::pair{"pool-size", &creation.size_bytes}}) {
        auto s = cli::parse_size_option(name, r[name].as<std::string>());
        if (!s) return cli::fail(out, s.error());
        *dst = *s;
    }
    if (Status st = cli::parse_store_options(r, &creation); !st) return cli::fail(out, st.error());
    g_quiet = r.count("quiet") ? 1 : 0;

    // The processor. The pool it records --exec process groups in is opened below.
    auto children_pool = std::make_shared<const Pool*>(nullptr);
    // Each writes its result into run()'s buffer (a built-in allocates nothing per message).
    ProcessorInto processor;
    if (r.count("builtin")) {
        auto fn = workers::find_builtin(r["builtin"].as<std::string>());
        if (!fn) return cli::fail(out, fn.error());
        processor = [f = *fn](const WorkItem& item, std::vector<uint8_t>& result) -> Status {
            f(item.data, result);
            return {};
        };
    } else if (handler_mode) {
        // Driven below through the loop's asynchronous form.
    } else {
        workers::ExecSpec base;
        base.command = r["exec"].as<std::string>();
        base.timeout_ns = exec_timeout;
        base.max_result_bytes = max_result;
        base.running_pgid = &g_exec_pgid;
        // The command's process group is recorded in the pool while it runs, so that a
        // survivor kills it if this worker is SIGKILLed (child_groups.h).
        base.on_started = [children_pool](pid_t pgid) -> Status {
            if (!*children_pool) return {};
            Status st = register_child_group(**children_pool, pgid);
            if (!st) return make_error(st.code(), "--exec: recording its process group: " + st.error().message);
            return st;
        };
        base.on_finished = [children_pool](pid_t pgid) {
            if (*children_pool) unregister_child_group(**children_pool, pgid);
        };
        const std::string pool_s = *pool_name;
        processor = [base, pool_s](const WorkItem& item, std::vector<uint8_t>& result) -> Status {
            workers::ExecSpec spec = base;
            spec.env = exec_environment(item, pool_s);
            prepare_exec_notices(item.uri.to_string());
            auto res = workers::run_exec(spec, item.data, item.keep_alive);
            if (!res) return std::move(res).error();
            if (res->ok()) {
                result = std::move(res->stdout_bytes);
                return {};
            }
            // Too large is a property of the input: retrying cannot help.
            return make_error(res->result_too_large ? Errc::invalid_argument : Errc::io_error,
                              "--exec failed: " + res->describe(spec));
        };
    }

    install_signals();
    auto pool = cli::open_or_create_pool(out, *pool_name, creation);
    if (!pool) return cli::fail(out, pool.error());
    *children_pool = &pool.value();
    // The default store with the requested geometry (WorkerLoop attaches to it).
    if (auto store = cli::open_default_store(out, *pool, creation); !store) return cli::fail(out, store.error());

    const uint64_t start = mono_now_ns();
    // A join that a paused process's hold on the group lock keeps refusing is tried for up to
    // 10 s: an interrupt ends it (nothing joined, nothing to commit).
    cfg.open_should_stop = [] { return g_stop != 0; };
    auto loop = WorkerLoop::open(*pool, cfg);  // run(processor) below, or the handlers' asynchronous form
    if (!loop && loop.code() == Errc::interrupted && g_stop != 0) {
        if (!r.count("quiet")) cli::stderr_line("fabric-shm-worker: interrupted before joining the group: " +
                                                loop.error().message);
        return cli::kExitInterrupted;
    }
    if (!loop) return cli::fail(out, loop.error());
    const std::string prefix = "fabric-shm-worker[" + loop->member_id() + "]: ";
    g_first_idle.set(prefix + "interrupt: stopping after the current step (commit, leave the group); interrupt "
                              "again to stop at once\n");
    g_second_idle.set(prefix + "second interrupt: stopping now without committing (exit 130)\n");
    g_prefix = prefix;
    if (!r.count("quiet"))
        loop->set_log([prefix](std::string_view line) { cli::stderr_line(prefix + std::string(line)); });

    Result<WorkerExit> ran = WorkerExit::stopped;
    if (handler_mode) {
        g_first_idle.set(prefix + "interrupt: draining (the handlers finish the requests in flight, then their stdin "
                                  "closes); interrupt again to stop at once (kills the handlers)\n");
        g_second_idle.set(prefix + "second interrupt: killed the handlers' process groups; requests in flight are "
                                   "not committed and will be redelivered (exit 130)\n");
        workers::HandlerSpec hs;
        hs.command = r["handler"].as<std::string>();
        hs.slots = handler_slots;
        hs.max_in_flight = max_inflight;
        hs.timeout_ns = exec_timeout;
        hs.max_result_bytes = max_result;
        hs.count_limited = cfg.count != 0;
        hs.env = {{"FABRIC_POOL", *pool_name}, {"FABRIC_TOPIC", cfg.topic}, {"FABRIC_GROUP", cfg.group}};
        hs.running_pgids = g_handler_pgids;
        const Pool* children = &pool.value();
        hs.on_started = [children](pid_t pgid) -> Status {
            Status st = register_child_group(*children, pgid);
            if (!st) return make_error(st.code(), "--handler: recording its process group: " + st.error().message);
            return st;
        };
        hs.on_finished = [children](pid_t pgid) { unregister_child_group(*children, pgid); };
        hs.on_restart = [children] { count_event(*children, CounterId::worker_handler_restarts); };
        if (!r.count("quiet")) hs.log = [prefix](std::string_view line) { cli::stderr_line(prefix + std::string(line)); };
        ran = workers::run_handlers(*loop, hs, &g_stop);
    } else {
        ran = loop->run(processor, [] { return g_stop != 0; });
    }
    const uint64_t elapsed = mono_now_ns() - start;
    nlohmann::json summary = stats_json(*loop, elapsed);
    summary["pool_created"] = pool->created();
    if (!ran) {
        const std::string message = cli::message_of(out, ran.error());
        summary["error"] = {{"code", std::string(errc_name(ran.code()))}, {"message", message}};
        if (out.json) cli::print_json(summary);
        else cli::stderr_line(prefix + "error: " + std::string(errc_name(ran.code())) + ": " + message);
        return cli::kExitRuntime;
    }
    summary["exit"] = std::string(exit_name(*ran));
    if (out.json) {
        cli::print_json(summary);
    } else if (!r.count("quiet")) {
        const WorkerStats& s = loop->stats();
        cli::stderr_line(prefix + std::string(exit_name(*ran)) + ": " + std::to_string(s.processed) + " results, " +
                         std::to_string(s.skipped) + " skipped, " + std::to_string(s.dead_lettered) +
                         " dead-lettered, " + std::to_string(s.failed_attempts) + " failed attempts in " +
                         format_duration_ns(elapsed) + "; latency p50 " + format_duration_ns(s.latency.p50_ns) +
                         " p99 " + format_duration_ns(s.latency.p99_ns) + " max " +
                         format_duration_ns(s.latency.max_ns));
    }
    return cli::kExitOk;
}
