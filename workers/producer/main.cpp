// SPDX-License-Identifier: MIT
// fabric-shm-producer: ingests objects and notifies. Each object goes to
// fabric://POOL/BUCKET/<file name> (written in place through a store loan), then its URI is
// sent on every --topic with the object's version and the put time as headers (fan-out).
//
// An input that cannot be stored (larger than the store's maximum object size, unreadable, a
// name that is not a valid key) is reported and counted, and the rest go on (--fail-fast
// stops at the first). A full store, an expired lease or a notification that cannot be sent
// stops the run. SIGINT/SIGTERM stop it within a send's park (50 ms), even while it waits on
// back-pressure; the summary then says what was stored and notified, and the exit status is
// 130. --skip-existing lets a re-run skip the puts that are done and still send their
// notifications.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/lease.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/names.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/worker_loop.h"
#include "inputs.h"
#include "tool_support.h"

using namespace fabric_shm;

namespace {

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

struct TopicState {
    std::string name;
    std::optional<Producer> producer;
    uint64_t sent = 0;
    std::string error;  ///< first failure
};

/// An input that was not stored (the run went on without it).
struct FailedInput {
    std::string input;  ///< path, or the synthetic key
    Error error;
};

class Progress {
public:
    Progress(bool enabled, uint64_t total) : enabled_(enabled), total_(total) {}
    void update(uint64_t count, uint64_t bytes, uint64_t elapsed_ns, bool final = false) {
        if (!enabled_) return;
        const uint64_t now = mono_now_ns();
        if (!final && now - last_ < 100 * kNsPerMs) return;
        last_ = now;
        const double secs = double(elapsed_ns) / 1e9;
        std::string bar;
        if (total_ != 0) {
            const size_t width = 30, filled = std::min(width, size_t(double(width) * double(count) / double(total_)));
            bar = "[" + std::string(filled, '#') + std::string(width - filled, ' ') + "] ";
        }
        char line[256];
        std::snprintf(line, sizeof line, "\r%s%llu%s objects, %s, %.0f objects/s   ", bar.c_str(),
                      static_cast<unsigned long long>(count), total_ ? ("/" + std::to_string(total_)).c_str() : "",
                      format_bytes(bytes).c_str(), secs > 0 ? double(count) / secs : 0.0);
        std::string text = line;
        if (final) text += "\n";
        (void)!::write(STDERR_FILENO, text.data(), text.size());  // one write: never mixed with other lines
    }

private:
    bool enabled_;
    uint64_t total_;
    uint64_t last_ = 0;
};

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
}

/// --skip-existing: the version of the object stored under `uri` when its bytes are exactly
/// `bytes` (size and CRC first, then the bytes themselves); nullopt otherwise.
Result<std::optional<uint64_t>> identical_version(MemObjectStore& store, const FabricUri& uri,
                                                  std::span<const uint8_t> bytes) {
    auto info = store.head(uri);
    if (!info) return std::move(info).error();
    if (!info->has_value() || (**info).size != bytes.size() ||
        (**info).crc32 != crc32(bytes.data(), bytes.size()))
        return std::optional<uint64_t>();
    auto pinned = store.pin(uri);
    if (!pinned) return std::move(pinned).error();
    if (!pinned->has_value()) return std::optional<uint64_t>();  // removed meanwhile
    const PinnedView& view = **pinned;
    if (view.bytes().size() != bytes.size() ||
        (!bytes.empty() && std::memcmp(view.bytes().data(), bytes.data(), bytes.size()) != 0))
        return std::optional<uint64_t>();
    return std::optional<uint64_t>(view.info().version);
}

/// Per-input failures: the input is skipped and the run goes on. Anything else stops it.
bool input_failure(Errc code) {
    return code == Errc::object_too_large || code == Errc::invalid_uri || code == Errc::invalid_name ||
           code == Errc::not_found || code == Errc::permission_denied || code == Errc::invalid_argument ||
           code == Errc::io_error;
}

}  // namespace

int main(int argc, char** argv) {
    cli::Output out{cli::argv_has_json(argc, argv), "fabric-shm-producer", cli::spelling_producer()};
    if (cli::argv_has_version(argc, argv)) return cli::print_version(out.program);
    cxxopts::Options o("fabric-shm-producer",
                       "Puts objects into the pool's store at fabric://POOL/BUCKET/<file name> and sends each "
                       "object's URI and version on every --topic.");
    o.add_options()("pool", cli::pool_option_help("created if missing (announced on stderr) unless --no-create"),
                    cxxopts::value<std::string>())(
        "bucket", "bucket of the objects", cxxopts::value<std::string>()->default_value("uploads"))(
        "topic", "topic to notify (repeat for fan-out; created with --partitions if missing)",
        cxxopts::value<std::vector<std::string>>())(
        "stdin-list", "read input paths from stdin, one per line")(
        "synthetic", "generate N objects (synthetic-000000, ...) instead of reading files",
        cxxopts::value<uint64_t>())(
        "size", "size of each synthetic object", cxxopts::value<std::string>()->default_value("1K"))(
        "key-from", "partitioning key: name (same file name, same partition) | none (round-robin)",
        cxxopts::value<std::string>()->default_value("name"))(
        "wait", "on back-pressure, wait this long for the slowest group, then fail naming it",
        cxxopts::value<std::string>()->default_value("5s"))(
        "object-ttl", "objects expire this long after they are put (default: never); their space comes back "
                      "when the store needs it", cxxopts::value<std::string>())(
        "fail-fast", "stop at the first input that cannot be stored (default: report it, go on with the rest)")(
        "skip-existing", "do not put an object whose bytes are already stored under its key (same size, CRC and "
                         "bytes); still send its notification (re-running an interrupted run)")(
        "partitions", "partitions of topics this producer creates", cxxopts::value<uint32_t>()->default_value("4"))(
        "pool-size", "size of the pool if this producer creates it", cxxopts::value<std::string>()->default_value("32M"))(
        "no-create", "fail if the pool does not exist instead of creating it (also: FABRIC_SHM_NO_CREATE=1)");
    cli::add_store_options(o, "when this producer creates the pool (an existing pool keeps its store)");
    o.add_options()("quiet", "no progress and no summary line (failures are still reported)")(
        "json", "print the summary as JSON on stdout")("version", "print the version and the pool layout version")(
        "h,help", "this help")("inputs", "FILE or DIR", cxxopts::value<std::vector<std::string>>());
    o.parse_positional({"inputs"});
    o.positional_help("[FILE|DIR ...]");
    cxxopts::ParseResult r;
    int rc = 0;
    if (!cli::parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) {
        std::cout << o.help()
                  << "\nExit status: 0 every input stored and notified; 1 an input could not be stored (the others "
                     "were), or the run stopped on an error; 2 usage error; 130 interrupted (SIGINT/SIGTERM): the "
                     "summary says what was stored and notified (re-run with --skip-existing).\n";
        return cli::kExitOk;
    }
    if (!r.count("topic")) return cli::usage(out, "at least one --topic is required");
    const std::string key_from = r["key-from"].as<std::string>();
    if (key_from != "name" && key_from != "none")
        return cli::usage(out, "--key-from '" + key_from + "': expected name or none");
    auto pool_name = cli::resolve_pool(cli::opt_string(r, "pool"));
    if (!pool_name) return cli::fail(out, pool_name.error());
    const std::string bucket = r["bucket"].as<std::string>();
    if (Status st = validate_name("bucket", bucket); !st) return cli::fail(out, st.error());
    auto wait = cli::parse_duration_option("wait", r["wait"].as<std::string>());
    if (!wait) return cli::fail(out, wait.error());
    PutOptions object_options;
    if (r.count("object-ttl")) {
        auto ttl = cli::parse_duration_option("object-ttl", r["object-ttl"].as<std::string>());
        if (!ttl) return cli::fail(out, ttl.error());
        object_options.ttl_ns = *ttl;
    }
    auto synth_size = cli::parse_size_option("size", r["size"].as<std::string>());
    if (!synth_size) return cli::fail(out, synth_size.error());
    cli::PoolCreation creation;
    auto pool_size = cli::parse_size_option("pool-size", r["pool-size"].as<std::string>());
    if (!pool_size) return cli::fail(out, pool_size.error());
    creation.size_bytes = *pool_size;
    creation.no_create = r.count("no-create") > 0;
    if (Status st = cli::parse_store_options(r, &creation); !st) return cli::fail(out, st.error());
    std::vector<std::string> topics = r["topic"].as<std::vector<std::string>>();
    for (const auto& t : topics)
        if (Status st = validate_name("topic", t); !st) return cli::fail(out, st.error());
    std::vector<std::string> args;
    if (r.count("inputs")) args = r["inputs"].as<std::vector<std::string>>();
    const uint64_t synthetic = r.count("synthetic") ? r["synthetic"].as<uint64_t>() : 0;
    auto inputs = workers::InputSource::make(args, r.count("stdin-list") != 0, synthetic, *synth_size);
    if (!inputs) return cli::fail(out, inputs.error());
    const bool fail_fast = r.count("fail-fast") > 0;
    const bool skip_existing = r.count("skip-existing") > 0;

    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);

    auto pool = cli::open_or_create_pool(out, *pool_name, creation);
    if (!pool) return cli::fail(out, pool.error());
    auto store = cli::open_default_store(out, *pool, creation);
    if (!store) return cli::fail(out, store.error());

    RenewalManager renewals(*pool);
    (void)renewals.register_lease(pool->pool_lease_id());
    for (uint64_t id : (*store)->lease_ids()) (void)renewals.register_lease(id);
    TopicManager tm(*pool);
    std::vector<TopicState> states;
    ProducerOptions po;
    po.block_timeout_ns = *wait;
    po.should_stop = [] { return g_stop != 0; };
    for (const auto& t : topics) {
        TopicConfig tc;
        tc.num_partitions = r["partitions"].as<uint32_t>();
        // Another process (a worker, a bridge) may be creating the topic right now: ensure waits
        // for its partitions to be published (bounded) instead of finding it missing.
        if (Status st = tm.ensure(t, tc, 10 * kNsPerSec); !st) return cli::fail(out, st.error());
        auto p = Producer::open(*pool, t, po);
        if (!p) return cli::fail(out, p.error());
        if (auto d = tm.describe(t))
            for (uint64_t id : d->lease_ids) (void)renewals.register_lease(id);
        states.push_back(TopicState{t, std::move(p.value()), 0, ""});
    }

    const bool progress_on = !out.json && !r.count("quiet") && ::isatty(STDERR_FILENO);
    Progress progress(progress_on, inputs->total());
    const uint64_t start = mono_now_ns();
    uint64_t stored = 0, notified = 0, skipped_existing = 0, bytes = 0, store_waits = 0;
    std::vector<FailedInput> failed;
    std::optional<Error> failure;  // what stopped the run
    std::string failed_uri;
    std::vector<std::string> not_notified, notified_topics;
    bool interrupted = false;
    auto report_failed = [&](const FailedInput& f) {
        // At once (a long run shows it when it happens), one line per input.
        if (progress_on) (void)!::write(STDERR_FILENO, "\n", 1);
        cli::stderr_line(out.program + ": not stored: " + f.input + ": " + cli::message_of(out, f.error));
    };
    while (true) {
        if (g_stop) {
            interrupted = true;
            break;
        }
        const TickSummary tick = renewals.tick(mono_now_ns());
        if (!tick.registration) failure = tick.registration.error();  // fenced while paused: stop
        for (const RenewalOutcome& oc : tick.outcomes)
            if (oc.kind == RenewalOutcomeKind::dropped) failure = make_error(Errc::lease_expired, oc.error.message);
        if (failure) break;
        auto item = inputs->next();
        if (!item) {
            // The input could not be described (vanished, not a regular file): its own failure.
            FailedInput f{inputs->last_path(), item.error()};
            failed.push_back(f);
            report_failed(f);
            if (fail_fast) break;
            continue;
        }
        if (!item->has_value()) break;
        const workers::InputItem& in = **item;
        const std::string input_name = in.path.empty() ? in.key : in.path;
        auto uri = FabricUri::make(pool->name(), bucket, in.key);
        if (!uri) {
            FailedInput f{input_name, uri.error()};
            failed.push_back(f);
            report_failed(f);
            if (fail_fast) break;
            continue;
        }
        // Put: zero-copy through a loan (the file is read straight into the pool). A full
        // store is back-pressure like a full topic: retried for up to --wait, renewing.
        Result<uint64_t> version = uint64_t(0);
        bool skipped = false;
        const uint64_t store_deadline = mono_now_ns() + *wait;
        uint64_t store_pause = kNsPerMs;
        bool store_waited = false;
        for (;;) {
            version = uint64_t(0);
            skipped = false;
            if (in.size == 0) {
                std::optional<uint64_t> same;
                if (skip_existing) {
                    auto v = identical_version(**store, *uri, {});
                    if (!v) version = v.error();
                    else same = *v;
                }
                if (same) {
                    version = *same;
                    skipped = true;
                } else if (version) {
                    version = (*store)->put(*uri, {}, object_options);
                }
            } else {
                auto loan = (*store)->loan(*uri, in.size, object_options);
                if (!loan) {
                    version = loan.error();
                } else if (Status st = workers::fill_input(in, loan->bytes()); !st) {
                    version = st.error();
                } else {
                    std::optional<uint64_t> same;
                    if (skip_existing) {
                        auto v = identical_version(**store, *uri, loan->bytes());
                        if (!v) version = v.error();
                        else same = *v;
                    }
                    if (same) {
                        version = *same;  // the loan is dropped: its bytes go back to the heap
                        skipped = true;
                    } else if (version) {
                        version = loan->commit();
                    }
                }
            }
            if (!version && version.code() == Errc::capacity_exceeded && !g_stop && mono_now_ns() < store_deadline) {
                if (!store_waited && !r.count("quiet"))
                    cli::stderr_line(out.program + ": store full, waiting up to " + format_duration_ns(*wait) +
                                     " for space: " + version.error().message);
                store_waited = true;
                ++store_waits;
                const uint64_t now = mono_now_ns();
                const timespec ts{time_t(std::min(store_pause, store_deadline - now) / kNsPerSec),
                                  long(std::min(store_pause, store_deadline - now) % kNsPerSec)};
                ::nanosleep(&ts, nullptr);
                store_pause = std::min<uint64_t>(store_pause * 2, 100 * kNsPerMs);
                (void)renewals.tick(mono_now_ns());
                continue;
            }
            break;
        }
        if (!version) {
            if (input_failure(version.code())) {
                FailedInput f{input_name, version.error()};
                failed.push_back(f);
                report_failed(f);
                if (fail_fast) break;
                continue;
            }
            failure = version.error();
            failed_uri = uri->to_string();
            break;
        }
        if (skipped) ++skipped_existing;
        else ++stored;
        const std::string uri_s = uri->to_string(), version_s = std::to_string(*version),
                          ts_s = std::to_string(wall_now_ns());
        const MessageHeader headers[] = {{kHeaderVersion, version_s}, {kHeaderPutTime, ts_s}};
        OutgoingMessage msg;
        msg.value = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(uri_s.data()), uri_s.size());
        if (key_from == "name")
            msg.key = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(in.key.data()), in.key.size());
        msg.headers = headers;
        // Fan-out: every topic, even after one failed (report per topic; the object stays).
        std::vector<std::string> failed_here;
        for (TopicState& ts : states) {
            auto sent = msg.key.empty() ? ts.producer->send(msg.value, msg.headers)
                                        : ts.producer->send_keyed(msg.key, msg.value, msg.headers);
            if (sent) {
                ++ts.sent;
            } else {
                if (sent.code() == Errc::interrupted) interrupted = true;
                else if (ts.error.empty()) ts.error = cli::message_of(out, sent.error());
                failed_here.push_back(ts.name);
                if (!failure && sent.code() != Errc::interrupted) failure = sent.error();
            }
        }
        bytes += in.size;
        progress.update(stored + skipped_existing, bytes, mono_now_ns() - start);
        if (!failed_here.empty()) {
            failed_uri = uri_s;
            for (const TopicState& ts : states) {
                bool f = false;
                for (const auto& x : failed_here) f |= x == ts.name;
                (f ? not_notified : notified_topics).push_back(ts.name);
            }
            break;
        }
        ++notified;
    }
    const uint64_t elapsed = mono_now_ns() - start;
    progress.update(stored + skipped_existing, bytes, elapsed, true);
    const double secs = double(elapsed) / 1e9;
    const uint64_t handled = stored + skipped_existing;
    const double rate = secs > 0 ? double(handled) / secs : 0.0;

    std::string failure_text;
    if (failure && pool->lifecycle() != "live") {
        // Removed under us (fabric-shm pool rm --force): nothing was stored or notified since.
        failure_text = "pool '" + pool->name() + "' was removed while this producer ran; stopped after " +
                       std::to_string(stored) + " objects: " + cli::message_of(out, *failure);
    } else if (failure) {
        failure_text = cli::message_of(out, *failure);
        if (!not_notified.empty())
            failure_text = "object " + failed_uri + " was stored but topic(s) " + join(not_notified) +
                           " were not notified" +
                           (notified_topics.empty() ? "" : " (notified: " + join(notified_topics) + ")") + ": " +
                           failure_text;
        else if (!failed_uri.empty())
            failure_text = "put of " + failed_uri + " failed: " + failure_text;
    }
    // What an interrupted (or stopped) run leaves to a re-run.
    std::string partial;
    if (interrupted && !not_notified.empty())
        partial = failed_uri + " was stored but not notified on " + join(not_notified);
    const int exit_code = interrupted ? cli::kExitInterrupted
                          : (failure || !failed.empty()) ? cli::kExitRuntime
                                                         : cli::kExitOk;
    if (out.json) {
        nlohmann::json j;
        j["objects"] = handled;
        j["stored"] = stored;
        j["notified"] = notified;
        j["skipped_existing"] = skipped_existing;
        j["bytes"] = bytes;
        j["store_waits"] = store_waits;  // puts retried because the store was full
        j["elapsed_s"] = secs;
        j["objects_per_s"] = rate;
        j["bytes_per_s"] = secs > 0 ? double(bytes) / secs : 0.0;
        j["bucket"] = bucket;
        j["pool_created"] = pool->created();
        for (const TopicState& ts : states) {
            nlohmann::json t = {{"sent", ts.sent}};
            if (!ts.error.empty()) t["error"] = ts.error;
            j["topics"][ts.name] = t;
        }
        nlohmann::json f = nlohmann::json::array();
        for (const FailedInput& x : failed)
            f.push_back({{"input", x.input},
                         {"code", std::string(errc_name(x.error.code))},
                         {"message", cli::message_of(out, x.error)}});
        j["failed"] = f;
        if (failure) {
            j["error"] = {{"code", std::string(errc_name(failure->code))}, {"message", failure_text}};
            if (!not_notified.empty()) j["not_notified"] = not_notified;
        }
        j["interrupted"] = interrupted;
        if (!partial.empty()) j["stored_not_notified"] = failed_uri;
        j["exit_code"] = exit_code;
        cli::print_json(j);
        return exit_code;
    }
    if (!r.count("quiet") || failure || !failed.empty() || interrupted) {
        std::string line = out.program + ": " + std::string(interrupted ? "interrupted: " : "") +
                           std::to_string(handled) + " objects (" + format_bytes(bytes) + ") to bucket '" + bucket +
                           "'";
        if (skipped_existing) line += " (" + std::to_string(skipped_existing) + " already stored, not put again)";
        line += ", " + std::to_string(notified) + " notified on " + join(topics) + " in " + format_duration_ns(elapsed);
        char rate_s[64];
        std::snprintf(rate_s, sizeof rate_s, ": %.0f objects/s", rate);
        line += rate_s;
        if (!failed.empty()) line += "; " + std::to_string(failed.size()) + " input(s) not stored (listed above)";
        if (!partial.empty()) line += "; " + partial;
        if (interrupted) line += "; re-run with --skip-existing to finish without storing twice";
        cli::stderr_line(line);
    }
    if (failure)
        cli::stderr_line(out.program + ": error: " + std::string(errc_name(failure->code)) + ": " + failure_text);
    return exit_code;
}
