// SPDX-License-Identifier: MIT
// fabric-shm-producer: ingests objects and notifies. Each object goes to
// fabric://POOL/BUCKET/<file name> (written in place through a store loan), then its URI is
// sent on every --topic with the object's version and the put time as headers (fan-out).
//
// An input that cannot be stored (larger than the store's maximum object size, unreadable, a
// name that is not a valid key) is reported and counted, and the rest go on (--fail-fast
// stops at the first). A full store is back-pressure like a full topic: the put waits for
// space for up to --wait. A store still full after that, an expired lease or a notification
// that cannot be sent stops the run. SIGINT/SIGTERM stop it within a send's park (50 ms),
// even while it waits on back-pressure; the summary then says what was stored and notified,
// and the exit status is 130. --skip-existing lets a re-run skip the puts that are done and still send their
// notifications.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
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
    bool failed_now = false;  ///< the current object's notification was not sent here
};

/// An input that was not stored (the run went on without it).
struct FailedInput {
    std::string input;  ///< path, or the synthetic key
    Error error;
};

class Progress {
public:
    Progress(bool enabled, uint64_t total) : enabled_(enabled), total_(total) {}
    /// At most every 100 ms; `start_ns`: when the run started. The final line (`end_ns`: when
    /// the run ended, not 0) always. A disabled line reads no clock.
    void update(uint64_t count, uint64_t bytes, uint64_t start_ns, uint64_t end_ns = 0) {
        if (!enabled_) return;
        const bool final = end_ns != 0;
        const uint64_t now = final ? end_ns : mono_now_ns();
        if (!final && now - last_ < 100 * kNsPerMs) return;
        last_ = now;
        const double secs = double(now - start_ns) / 1e9;
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

/// What the command line asked for.
struct Settings {
    std::string pool_name, bucket;
    std::vector<std::string> topics;
    bool key_by_name = true;  ///< --key-from name (else round-robin)
    uint64_t wait_ns = 0;     ///< --wait: longest back-pressure wait per send and per put
    PutOptions object_options;  ///< --object-ttl
    uint32_t partitions = 4;  ///< of topics this producer creates
    cli::PoolCreation creation;
    std::vector<std::string> inputs;
    bool stdin_list = false;
    uint64_t synthetic = 0, synthetic_size = 0;
    bool fail_fast = false, skip_existing = false, quiet = false;
};

/// Parses the command line into *settings. Returns the exit status when the program is done
/// already (--help, a usage error), nullopt to go on.
std::optional<int> parse_settings(int argc, char** argv, cli::Output& out, Settings* settings) {
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
    Settings& s = *settings;
    if (!r.count("topic")) return cli::usage(out, "at least one --topic is required");
    const std::string key_from = r["key-from"].as<std::string>();
    if (key_from != "name" && key_from != "none")
        return cli::usage(out, "--key-from '" + key_from + "': expected name or none");
    s.key_by_name = key_from == "name";
    auto pool_name = cli::resolve_pool(cli::opt_string(r, "pool"));
    if (!pool_name) return cli::fail(out, pool_name.error());
    s.pool_name = *pool_name;
    s.bucket = r["bucket"].as<std::string>();
    if (Status st = validate_name("bucket", s.bucket); !st) return cli::fail(out, st.error());
    auto wait = cli::parse_duration_option("wait", r["wait"].as<std::string>());
    if (!wait) return cli::fail(out, wait.error());
    s.wait_ns = *wait;
    if (r.count("object-ttl")) {
        auto ttl = cli::parse_duration_option("object-ttl", r["object-ttl"].as<std::string>());
        if (!ttl) return cli::fail(out, ttl.error());
        s.object_options.ttl = ns_duration(*ttl);
    }
    auto synth_size = cli::parse_size_option("size", r["size"].as<std::string>());
    if (!synth_size) return cli::fail(out, synth_size.error());
    s.synthetic_size = *synth_size;
    auto pool_size = cli::parse_size_option("pool-size", r["pool-size"].as<std::string>());
    if (!pool_size) return cli::fail(out, pool_size.error());
    s.creation.size_bytes = *pool_size;
    s.creation.no_create = r.count("no-create") > 0;
    if (Status st = cli::parse_store_options(r, &s.creation); !st) return cli::fail(out, st.error());
    s.topics = r["topic"].as<std::vector<std::string>>();
    for (const auto& t : s.topics)
        if (Status st = validate_name("topic", t); !st) return cli::fail(out, st.error());
    s.partitions = r["partitions"].as<uint32_t>();
    if (r.count("inputs")) s.inputs = r["inputs"].as<std::vector<std::string>>();
    s.stdin_list = r.count("stdin-list") != 0;
    s.synthetic = r.count("synthetic") ? r["synthetic"].as<uint64_t>() : 0;
    s.fail_fast = r.count("fail-fast") > 0;
    s.skip_existing = r.count("skip-existing") > 0;
    s.quiet = r.count("quiet") > 0;
    return std::nullopt;
}

void install_stop_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
}

/// Creates each topic that is missing and opens a producer on it; registers its leases.
Result<std::vector<TopicState>> open_topics(const Settings& s, Pool& pool, RenewalManager& renewals) {
    TopicManager tm(pool);
    std::vector<TopicState> states;
    ProducerOptions po;
    po.block_timeout = ns_duration(s.wait_ns);
    po.should_stop = [] { return g_stop != 0; };
    for (const auto& t : s.topics) {
        TopicConfig tc;
        tc.num_partitions = s.partitions;
        // Another process (a worker, a bridge) may be creating the topic right now: ensure waits
        // for its partitions to be published (bounded) instead of finding it missing.
        FABRIC_TRY(tm.ensure(t, tc, std::chrono::seconds(10)));
        auto p = Producer::open(pool, t, po);
        if (!p) return std::move(p).error();
        if (auto d = tm.describe(t, TopicDetail::positions))
            for (uint64_t id : d->lease_ids) (void)renewals.register_lease(id);
        states.push_back(TopicState{t, std::move(p.value()), 0, ""});
    }
    return states;
}

/// How one input was stored.
struct Stored {
    uint64_t version = 0;
    bool skipped = false;         ///< --skip-existing found the same bytes already stored
    uint64_t expires_wall_ns = 0; ///< --object-ttl: not after this (taken before the put: never late)
    PlacementHint placed;         ///< where the put left it (the workers' prefetch hint)
};

/// When an object put now with `options` expires at the earliest (wall ns; 0: no TTL). Taken
/// before the put, so it is never later than the store's own expiry.
uint64_t expiry(const PutOptions& options) {
    return options.ttl > Duration::zero() ? wall_now_ns() + to_ns(options.ttl) : 0;
}

/// Puts one input: zero-copy through a loan (the file is read straight into the pool). The
/// loan is made for the URI, so its block holds exactly the payload and this key's trailer.
Result<Stored> store_input(MemObjectStore& store, const FabricUri& uri, const workers::InputItem& in,
                           bool skip_existing, const PutOptions& options) {
    if (in.size == 0) {
        if (skip_existing) {
            FABRIC_TRY_ASSIGN(const std::optional<uint64_t> same, identical_version(store, uri, {}));
            if (same) return Stored{*same, true, 0, {}};
        }
        const uint64_t expires = expiry(options);
        PlacementHint placed;
        FABRIC_TRY_ASSIGN(const uint64_t version, store.put(uri.view(), ByteView(), options, placed));
        return Stored{version, false, expires, placed};
    }
    FABRIC_TRY_ASSIGN(ObjectLoan loan, store.loan(uri, in.size, options));
    FABRIC_TRY(workers::fill_input(in, loan.bytes()));
    if (skip_existing) {
        FABRIC_TRY_ASSIGN(const std::optional<uint64_t> same, identical_version(store, uri, loan.bytes()));
        if (same) return Stored{*same, true, 0, {}};  // the loan is dropped: its bytes go back to the heap
    }
    const uint64_t expires = expiry(options);
    const PlacementHint placed = loan.placement();  // commit() publishes all of it in place
    FABRIC_TRY_ASSIGN(const uint64_t version, loan.commit());
    return Stored{version, false, expires, placed};
}

/// One run: what it opened, what it did so far, and why it stopped.
struct Run {
    const Settings& settings;
    cli::Output& out;
    Pool pool;
    std::unique_ptr<MemObjectStore> store;
    RenewalManager renewals;
    std::vector<TopicState> topics;
    std::string topic_list;  ///< the topics, comma separated (the fan-out header)
    uint64_t stored = 0, notified = 0, skipped_existing = 0, bytes = 0;
    uint64_t store_waits = 0;  ///< puts retried because the store was full
    std::vector<FailedInput> failed;
    std::optional<Error> failure;  ///< what stopped the run
    std::string failed_uri;
    std::vector<std::string> not_notified, notified_topics;
    bool interrupted = false;

    Run(const Settings& s, cli::Output& o, Pool p) : settings(s), out(o), pool(std::move(p)), renewals(pool) {}
    uint64_t handled() const { return stored + skipped_existing; }
};

/// store_input, with a full store treated as back-pressure like a full topic: the put is
/// retried (1 ms .. 100 ms apart, renewing the leases) for up to --wait after the first refusal,
/// and says once that it waits. A signal ends the wait at once (the input is then neither
/// stored nor notified).
Result<Stored> store_input_waiting(Run& run, const FabricUri& uri, const workers::InputItem& in) {
    const Settings& s = run.settings;
    uint64_t deadline = 0;  // from the first full store on: an input that is stored reads no clock here
    uint64_t pause = kNsPerMs;
    bool announced = false;
    for (;;) {
        auto stored = store_input(*run.store, uri, in, s.skip_existing, s.object_options);
        if (stored || stored.code() != Errc::capacity_exceeded || g_stop) return stored;
        const uint64_t now = mono_now_ns();
        if (deadline == 0) deadline = now + s.wait_ns;
        if (now >= deadline) return stored;
        if (!announced && !s.quiet)
            cli::stderr_line(run.out.program + ": store full, waiting up to " + format_duration_ns(s.wait_ns) +
                             " for space: " + stored.error().message);
        announced = true;
        ++run.store_waits;
        const uint64_t nap = std::min(pause, deadline - now);
        const timespec ts{time_t(nap / kNsPerSec), long(nap % kNsPerSec)};
        ::nanosleep(&ts, nullptr);
        pause = std::min<uint64_t>(pause * 2, 100 * kNsPerMs);
        (void)run.renewals.tick(MonoClock::now());
    }
}

/// A number's decimal digits, written into a buffer of its own (no allocation per object).
class Decimal {
public:
    explicit Decimal(uint64_t v)
        : length_(uint8_t(std::to_chars(digits_, digits_ + sizeof digits_, v).ptr - digits_)) {}
    std::string_view view() const { return {digits_, length_}; }

private:
    char digits_[20];  // UINT64_MAX has 20
    uint8_t length_;
};

/// Sends the object's notification (`uri_text`: its URI) on every topic, even after one failed
/// (reported per topic; the object stays). False when one failed: the run stops.
bool notify(Run& run, std::string_view uri_text, const Stored& stored, const workers::InputItem& in) {
    const Decimal version(stored.version), put_time(wall_now_ns()), expires(stored.expires_wall_ns);
    MessageHeader headers[5] = {{kHeaderVersion, version.view()}, {kHeaderPutTime, put_time.view()}};
    size_t header_count = 2;
    // With --object-ttl: when it expires (a worker that finds it gone then says "expired").
    if (stored.expires_wall_ns != 0) headers[header_count++] = {kHeaderExpiresTime, expires.view()};
    // Fan-out: every topic told of it (a --delete-input worker keeps such an input).
    if (run.topics.size() > 1) headers[header_count++] = {kHeaderTopics, run.topic_list};
    const PlacementHint::Text placed_s = stored.placed.text();
    const ByteView key = run.settings.key_by_name ? ByteView(in.key) : ByteView();
    bool all_sent = true;
    for (TopicState& ts : run.topics) {
        // The workers' prefetch hint only where it fits the topic's slot (a long URI goes without).
        size_t count = header_count;
        if (!stored.placed.empty()) {
            headers[count] = {kHeaderPlacement, std::string_view(placed_s.data(), placed_s.size())};
            if (ts.producer->fits({uri_text, key, std::span<const MessageHeader>(headers, count + 1)})) ++count;
        }
        const std::span<const MessageHeader> header_span(headers, count);
        auto sent = run.settings.key_by_name ? ts.producer->send_keyed(in.key, uri_text, header_span)
                                             : ts.producer->send(uri_text, header_span);
        ts.failed_now = !sent;
        if (sent) {
            ++ts.sent;
            continue;
        }
        all_sent = false;
        if (sent.code() == Errc::interrupted) run.interrupted = true;
        else if (ts.error.empty()) ts.error = cli::message_of(run.out, sent.error());
        if (!run.failure && sent.code() != Errc::interrupted) run.failure = sent.error();
    }
    if (all_sent) return true;
    run.failed_uri = std::string(uri_text);
    for (const TopicState& ts : run.topics) (ts.failed_now ? run.not_notified : run.notified_topics).push_back(ts.name);
    return false;
}

/// Stores and notifies every input until the inputs end, an error stops the run, or a signal.
void ingest_all(Run& run, workers::InputSource& inputs, Progress& progress, bool progress_on, uint64_t start) {
    const Settings& s = run.settings;
    // An input that cannot be stored is reported at once (a long run shows it when it
    // happens), one line per input; false when --fail-fast stops the run there.
    auto input_failed = [&](FailedInput f) {
        if (progress_on) (void)!::write(STDERR_FILENO, "\n", 1);
        cli::stderr_line(run.out.program + ": not stored: " + f.input + ": " + cli::message_of(run.out, f.error));
        run.failed.push_back(std::move(f));
        return !s.fail_fast;
    };
    // Reused from input to input (their strings keep their capacity): a synthetic object
    // costs no allocation here.
    workers::InputItem in;
    std::string uri_text;  // the object's URI, as FabricUri::to_string() writes it
    FabricUri uri;         // the same, for the loan
    while (true) {
        if (g_stop) {
            run.interrupted = true;
            return;
        }
        const TickSummary tick = run.renewals.tick(MonoClock::now());
        if (!tick.registration) run.failure = tick.registration.error();  // fenced while paused: stop
        for (const RenewalOutcome& oc : tick.outcomes)
            if (oc.kind == RenewalOutcomeKind::dropped) run.failure = make_error(Errc::lease_expired, oc.error.message);
        if (run.failure) return;
        auto more = inputs.next(in);
        if (!more) {
            // The input could not be described (vanished, not a regular file): its own failure.
            if (!input_failed(FailedInput{inputs.last_path(), more.error()})) return;
            continue;
        }
        if (!*more) {
            // A signal that interrupted a read of --stdin-list ends the list early: not a
            // finished run.
            if (g_stop) run.interrupted = true;
            return;
        }
        auto input_name = [&] { return in.path.empty() ? in.key : in.path; };
        auto formatted = FabricUriView::format(uri_text, run.pool.name(), s.bucket, in.key);
        if (!formatted) {
            if (!input_failed(FailedInput{input_name(), formatted.error()})) return;
            continue;
        }
        uri.assign(*formatted);
        auto stored = store_input_waiting(run, uri, in);
        if (!stored) {
            if (input_failure(stored.code())) {
                if (!input_failed(FailedInput{input_name(), stored.error()})) return;
                continue;
            }
            run.failure = stored.error();
            run.failed_uri = uri_text;
            return;
        }
        if (stored->skipped) ++run.skipped_existing;
        else ++run.stored;
        const bool all_notified = notify(run, uri_text, *stored, in);
        run.bytes += in.size;
        progress.update(run.handled(), run.bytes, start);
        if (!all_notified) return;
        ++run.notified;
    }
}

/// The summary (stderr, or JSON on stdout) and the exit status.
int report(const Run& run, uint64_t elapsed) {
    const Settings& s = run.settings;
    const cli::Output& out = run.out;
    const double secs = double(elapsed) / 1e9;
    const uint64_t handled = run.handled();
    const double rate = secs > 0 ? double(handled) / secs : 0.0;

    std::string failure_text;
    if (run.failure && run.pool.lifecycle() != "live") {
        // Removed under us (fabric-shm pool rm --force): nothing was stored or notified since.
        failure_text = "pool '" + run.pool.name() + "' was removed while this producer ran; stopped after " +
                       std::to_string(run.stored) + " objects: " + cli::message_of(out, *run.failure);
    } else if (run.failure) {
        failure_text = cli::message_of(out, *run.failure);
        if (!run.not_notified.empty())
            failure_text = "object " + run.failed_uri + " was stored but topic(s) " + join(run.not_notified) +
                           " were not notified" +
                           (run.notified_topics.empty() ? "" : " (notified: " + join(run.notified_topics) + ")") +
                           ": " + failure_text;
        else if (!run.failed_uri.empty())
            failure_text = "put of " + run.failed_uri + " failed: " + failure_text;
    }
    // What an interrupted (or stopped) run leaves to a re-run.
    std::string partial;
    if (run.interrupted && !run.not_notified.empty())
        partial = run.failed_uri + " was stored but not notified on " + join(run.not_notified);
    const int exit_code = run.interrupted                        ? cli::kExitInterrupted
                          : (run.failure || !run.failed.empty()) ? cli::kExitRuntime
                                                                 : cli::kExitOk;
    if (out.json) {
        nlohmann::json j;
        j["objects"] = handled;
        j["stored"] = run.stored;
        j["notified"] = run.notified;
        j["skipped_existing"] = run.skipped_existing;
        j["bytes"] = run.bytes;
        j["store_waits"] = run.store_waits;  // puts retried because the store was full
        j["elapsed_s"] = secs;
        j["objects_per_s"] = rate;
        j["bytes_per_s"] = secs > 0 ? double(run.bytes) / secs : 0.0;
        j["bucket"] = s.bucket;
        j["pool_created"] = run.pool.created();
        for (const TopicState& ts : run.topics) {
            nlohmann::json t = {{"sent", ts.sent}};
            if (!ts.error.empty()) t["error"] = ts.error;
            j["topics"][ts.name] = t;
        }
        nlohmann::json f = nlohmann::json::array();
        for (const FailedInput& x : run.failed)
            f.push_back({{"input", x.input},
                         {"code", std::string(errc_name(x.error.code))},
                         {"message", cli::message_of(out, x.error)}});
        j["failed"] = f;
        if (run.failure) {
            j["error"] = {{"code", std::string(errc_name(run.failure->code))}, {"message", failure_text}};
            if (!run.not_notified.empty()) j["not_notified"] = run.not_notified;
        }
        j["interrupted"] = run.interrupted;
        if (!partial.empty()) j["stored_not_notified"] = run.failed_uri;
        j["exit_code"] = exit_code;
        cli::print_json(j);
        return exit_code;
    }
    if (!s.quiet || run.failure || !run.failed.empty() || run.interrupted) {
        std::string line = out.program + ": " + std::string(run.interrupted ? "interrupted: " : "") +
                           std::to_string(handled) + " objects (" + format_bytes(run.bytes) + ") to bucket '" +
                           s.bucket + "'";
        if (run.skipped_existing)
            line += " (" + std::to_string(run.skipped_existing) + " already stored, not put again)";
        line += ", " + std::to_string(run.notified) + " notified on " + join(s.topics) + " in " +
                format_duration_ns(elapsed);
        char rate_s[64];
        std::snprintf(rate_s, sizeof rate_s, ": %.0f objects/s", rate);
        line += rate_s;
        if (!run.failed.empty()) line += "; " + std::to_string(run.failed.size()) + " input(s) not stored (listed above)";
        if (!partial.empty()) line += "; " + partial;
        if (run.interrupted) line += "; re-run with --skip-existing to finish without storing twice";
        cli::stderr_line(line);
    }
    if (run.failure)
        cli::stderr_line(out.program + ": error: " + std::string(errc_name(run.failure->code)) + ": " + failure_text);
    return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
    cli::Output out{cli::argv_has_json(argc, argv), "fabric-shm-producer", cli::spelling_producer()};
    if (cli::argv_has_version(argc, argv)) return cli::print_version(out.program);
    Settings settings;
    if (std::optional<int> done = parse_settings(argc, argv, out, &settings)) return *done;
    auto inputs = workers::InputSource::make(settings.inputs, settings.stdin_list, settings.synthetic,
                                             settings.synthetic_size);
    if (!inputs) return cli::fail(out, inputs.error());
    install_stop_handlers();

    auto pool = cli::open_or_create_pool(out, settings.pool_name, settings.creation);
    if (!pool) return cli::fail(out, pool.error());
    Run run(settings, out, std::move(*pool));
    auto store = cli::open_default_store(out, run.pool, settings.creation);
    if (!store) return cli::fail(out, store.error());
    run.store = std::move(*store);
    (void)run.renewals.register_lease(run.pool.pool_lease_id());
    for (uint64_t id : run.store->lease_ids()) (void)run.renewals.register_lease(id);
    auto topics = open_topics(settings, run.pool, run.renewals);
    if (!topics) return cli::fail(out, topics.error());
    run.topics = std::move(*topics);
    for (const TopicState& ts : run.topics) run.topic_list += (run.topic_list.empty() ? "" : ",") + ts.name;

    const bool progress_on = !out.json && !settings.quiet && ::isatty(STDERR_FILENO);
    Progress progress(progress_on, inputs->total());
    const uint64_t start = mono_now_ns();
    ingest_all(run, *inputs, progress, progress_on, start);
    const uint64_t end = mono_now_ns(), elapsed = end - start;
    progress.update(run.handled(), run.bytes, start, end);
    return report(run, elapsed);
}
