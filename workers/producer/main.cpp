// SPDX-License-Identifier: MIT
// fabric-shm-producer: ingests objects and notifies. Each object goes to
// fabric://POOL/BUCKET/<file name> (written in place through a store loan), then its URI is
// sent on every --topic with the object's version and the put time as headers (fan-out).
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
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
            const size_t width = 30, filled = size_t(double(width) * double(count) / double(total_));
            bar = "[" + std::string(filled, '#') + std::string(width - filled, ' ') + "] ";
        }
        std::fprintf(stderr, "\r%s%llu%s objects, %s, %.0f objects/s   ", bar.c_str(),
                     static_cast<unsigned long long>(count),
                     total_ ? ("/" + std::to_string(total_)).c_str() : "", format_bytes(bytes).c_str(),
                     secs > 0 ? double(count) / secs : 0.0);
        if (final) std::fputc('\n', stderr);
    }

private:
    bool enabled_;
    uint64_t total_;
    uint64_t last_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    cli::Output out{cli::argv_has_json(argc, argv), "fabric-shm-producer"};
    cxxopts::Options o("fabric-shm-producer",
                       "Puts objects into the pool's store at fabric://POOL/BUCKET/<file name> and sends each "
                       "object's URI and version on every --topic.");
    o.add_options()("pool", "pool name (default $FABRIC_SHM_POOL, else \"default\"); created if missing",
                    cxxopts::value<std::string>()->default_value(""))(
        "bucket", "bucket of the objects", cxxopts::value<std::string>()->default_value("uploads"))(
        "topic", "topic to notify (repeat for fan-out; created with --partitions if missing)",
        cxxopts::value<std::vector<std::string>>())(
        "stdin-list", "read input paths from stdin, one per line")(
        "synthetic", "generate N objects (synthetic-000000, ...)", cxxopts::value<uint64_t>()->default_value("0"))(
        "size", "size of each synthetic object", cxxopts::value<std::string>()->default_value("1K"))(
        "key-from", "partitioning key: name (same file name, same partition) | none (round-robin)",
        cxxopts::value<std::string>()->default_value("name"))(
        "wait", "on back-pressure, wait this long for the slowest group, then fail naming it",
        cxxopts::value<std::string>()->default_value("5s"))(
        "partitions", "partitions of topics this producer creates", cxxopts::value<uint32_t>()->default_value("4"))(
        "pool-size", "size of the pool if this producer creates it", cxxopts::value<std::string>()->default_value("32M"))(
        "quiet", "no progress and no summary line")("json", "print the summary as JSON on stdout")(
        "help", "this help")("inputs", "FILE or DIR", cxxopts::value<std::vector<std::string>>());
    o.parse_positional({"inputs"});
    o.positional_help("[FILE|DIR ...]");
    cxxopts::ParseResult r;
    int rc = 0;
    if (!cli::parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) {
        std::cout << o.help() << "\n";
        return cli::kExitOk;
    }
    if (!r.count("topic")) return cli::usage(out, "at least one --topic is required");
    const std::string key_from = r["key-from"].as<std::string>();
    if (key_from != "name" && key_from != "none")
        return cli::usage(out, "--key-from '" + key_from + "': expected name or none");
    auto pool_name = cli::resolve_pool(r["pool"].as<std::string>());
    if (!pool_name) return cli::fail(out, pool_name.error());
    const std::string bucket = r["bucket"].as<std::string>();
    if (Status st = validate_name("bucket", bucket); !st) return cli::fail(out, st.error());
    auto wait = cli::parse_duration_option("--wait", r["wait"].as<std::string>());
    if (!wait) return cli::fail(out, wait.error());
    auto synth_size = cli::parse_size_option("--size", r["size"].as<std::string>());
    if (!synth_size) return cli::fail(out, synth_size.error());
    auto pool_size = cli::parse_size_option("--pool-size", r["pool-size"].as<std::string>());
    if (!pool_size) return cli::fail(out, pool_size.error());
    std::vector<std::string> topics = r["topic"].as<std::vector<std::string>>();
    for (const auto& t : topics)
        if (Status st = validate_name("topic", t); !st) return cli::fail(out, st.error());
    std::vector<std::string> args;
    if (r.count("inputs")) args = r["inputs"].as<std::vector<std::string>>();
    auto inputs = workers::InputSource::make(args, r.count("stdin-list") != 0, r["synthetic"].as<uint64_t>(), *synth_size);
    if (!inputs) return cli::fail(out, inputs.error());

    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);

    OpenOptions oo;
    oo.create_if_missing = true;
    oo.create.size_bytes = *pool_size;
    auto pool = Pool::open(*pool_name, oo);
    if (!pool) return cli::fail(out, pool.error());
    auto store = MemObjectStore::open(*pool);
    if (!store) return cli::fail(out, store.error());

    RenewalManager renewals(*pool);
    (void)renewals.register_lease(pool->pool_lease_id());
    for (uint64_t id : (*store)->lease_ids()) (void)renewals.register_lease(id);
    TopicManager tm(*pool);
    std::vector<TopicState> states;
    ProducerOptions po;
    po.block_timeout_ns = *wait;
    for (const auto& t : topics) {
        TopicConfig tc;
        tc.num_partitions = r["partitions"].as<uint32_t>();
        if (Status st = tm.create(t, tc); !st && st.code() != Errc::already_exists) return cli::fail(out, st.error());
        // Another process (a worker, a bridge) may be creating the topic right now: its partitions
        // are published a moment after the name is taken. Wait for them, bounded.
        auto p = Producer::open(*pool, t, po);
        for (const uint64_t deadline = mono_now_ns() + 10 * kNsPerSec; !p && p.code() == Errc::not_found && mono_now_ns() < deadline;) {
            timespec ts{0, long(kNsPerMs)};
            nanosleep(&ts, nullptr);
            p = Producer::open(*pool, t, po);
        }
        if (!p) return cli::fail(out, p.error());
        if (auto d = tm.describe(t))
            for (uint64_t id : d->lease_ids) (void)renewals.register_lease(id);
        states.push_back(TopicState{t, std::move(p.value()), 0, ""});
    }

    const bool progress_on = !out.json && !r.count("quiet") && ::isatty(STDERR_FILENO);
    Progress progress(progress_on, inputs->total());
    const uint64_t start = mono_now_ns();
    uint64_t count = 0, bytes = 0;
    std::optional<Error> failure;
    std::string failed_uri;
    std::vector<std::string> not_notified, notified;
    while (!g_stop) {
        for (const RenewalOutcome& oc : renewals.tick(mono_now_ns()).outcomes)
            if (oc.kind == RenewalOutcomeKind::dropped) failure = make_error(Errc::lease_expired, oc.error.message);
        if (failure) break;
        auto item = inputs->next();
        if (!item) {
            failure = item.error();
            break;
        }
        if (!item->has_value()) break;
        const workers::InputItem& in = **item;
        auto uri = FabricUri::make(pool->name(), bucket, in.key);
        if (!uri) {
            failure = uri.error();
            break;
        }
        // Put: zero-copy through a loan (the file is read straight into the pool).
        Result<uint64_t> version = uint64_t(0);
        if (in.size == 0) {
            version = (*store)->put(*uri, {});
        } else {
            auto loan = (*store)->loan(in.size);
            if (!loan) {
                failure = loan.error();
                break;
            }
            if (Status st = workers::fill_input(in, loan->bytes()); !st) {
                failure = st.error();
                break;
            }
            version = (*store)->commit(std::move(*loan), *uri);
        }
        if (!version) {
            failure = version.error();
            failed_uri = uri->to_string();
            break;
        }
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
                if (ts.error.empty()) ts.error = sent.error().message;
                failed_here.push_back(ts.name);
                if (!failure) failure = sent.error();
            }
        }
        ++count;
        bytes += in.size;
        progress.update(count, bytes, mono_now_ns() - start);
        if (!failed_here.empty()) {
            failed_uri = uri_s;
            for (const TopicState& ts : states) {
                bool failed = false;
                for (const auto& f : failed_here) failed |= f == ts.name;
                (failed ? not_notified : notified).push_back(ts.name);
            }
            break;
        }
    }
    const uint64_t elapsed = mono_now_ns() - start;
    progress.update(count, bytes, elapsed, true);
    const double secs = double(elapsed) / 1e9;
    const double rate = secs > 0 ? double(count) / secs : 0.0;

    auto join = [](const std::vector<std::string>& v) {
        std::string s;
        for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
        return s;
    };
    std::string failure_text;
    if (failure) {
        failure_text = failure->message;
        if (!not_notified.empty())
            failure_text = "object " + failed_uri + " was stored but topic(s) " + join(not_notified) +
                           " were not notified" + (notified.empty() ? "" : " (notified: " + join(notified) + ")") +
                           ": " + failure->message;
        else if (!failed_uri.empty())
            failure_text = "put of " + failed_uri + " failed: " + failure->message;
    }
    if (out.json) {
        nlohmann::json j;
        j["objects"] = count;
        j["bytes"] = bytes;
        j["elapsed_s"] = secs;
        j["objects_per_s"] = rate;
        j["bytes_per_s"] = secs > 0 ? double(bytes) / secs : 0.0;
        j["bucket"] = bucket;
        for (const TopicState& ts : states) {
            nlohmann::json t = {{"sent", ts.sent}};
            if (!ts.error.empty()) t["error"] = ts.error;
            j["topics"][ts.name] = t;
        }
        if (failure) {
            j["error"] = {{"code", std::string(errc_name(failure->code))}, {"message", failure_text}};
            if (!not_notified.empty()) j["not_notified"] = not_notified;
        }
        if (g_stop) j["interrupted"] = true;
        cli::print_json(j);
        return failure ? cli::kExitRuntime : cli::kExitOk;
    }
    if (!r.count("quiet") || failure) {
        std::string line = "fabric-shm-producer: " + std::to_string(count) + " objects (" + format_bytes(bytes) +
                           ") to bucket '" + bucket + "', notified on " + join(topics) + " in " +
                           format_duration_ns(elapsed);
        char rate_s[64];
        std::snprintf(rate_s, sizeof rate_s, ": %.0f objects/s", rate);
        line += rate_s;
        if (g_stop) line += " (interrupted)";
        std::cerr << line << "\n";
    }
    if (failure) {
        std::cerr << "fabric-shm-producer: error: " << errc_name(failure->code) << ": " << failure_text << "\n";
        return cli::kExitRuntime;
    }
    return cli::kExitOk;
}
