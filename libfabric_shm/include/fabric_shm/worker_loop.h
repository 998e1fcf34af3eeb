// SPDX-License-Identifier: MIT
// WorkerLoop: the recipe's consumer side as a library call. Polls a topic as a member of a
// group, reads each notified object from the store, runs a processor callback, writes the
// result (fenced by the member's epoch), forwards it, commits. fabric-shm-worker is this
// loop plus a command-line processor (--exec / --builtin); C++ users embed it with a
// std::function processor for in-process speed. Semantics: docs/workers.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"
#include "fabric_shm/uri.h"

namespace fabric_shm {

/// WorkerConfig::result_key's default.
inline constexpr std::string_view kDefaultResultKey = "{bucket}/{key}";

/// Message headers the producer and the worker write (part of the wire contract).
inline constexpr std::string_view kHeaderVersion = "fabric-version";        ///< object version, decimal
inline constexpr std::string_view kHeaderPutTime = "fabric-put-ts";         ///< wall ns after the put, decimal
inline constexpr std::string_view kHeaderOriginTime = "fabric-origin-ts";   ///< first stage's put time (multi-stage)
// Results record their input (URI, version) with jobs.h's result_put_options; dead letters
// carry dlq.h's headers (DlqRouter).

/// One notification being processed. Spans are valid for the duration of the call.
struct WorkItem {
    FabricUri uri;                    ///< the input object
    std::string_view topic;
    uint32_t partition = 0;
    uint64_t offset = 0;
    uint64_t version = 0;             ///< version actually read
    std::span<const uint8_t> data;    ///< the object's bytes (pinned in the pool, zero-copy)
    const ObjectInfo* info = nullptr;
    uint32_t attempt = 1;             ///< 1-based
    /// Long processors call this every ~100 ms: heartbeats the group and renews leases.
    /// An error (LeaseExpired, lost partition) means: abandon the item and return the error.
    std::function<Status()> keep_alive;
};

/// Processor: returns the result bytes, or an error. Errors DlqPolicy calls permanent
/// (not_found, invalid_argument, corrupt, object_too_large, ...) go straight to the DLQ; any
/// other error is retried with backoff up to max_attempts, then dead-lettered.
using Processor = std::function<Result<std::vector<uint8_t>>(const WorkItem& item)>;

struct WorkerConfig {
    std::string topic;
    std::string group;
    std::string member_id;            ///< "": host-pid-starttime
    std::string store = "default";    ///< MemObjectStore name in the pool
    std::string result_bucket = "results";
    /// The key of an input's result in result_bucket: {bucket} and {key} are the input's
    /// (default "{bucket}/{key}": inputs with the same key in two buckets never share a result).
    /// Must contain {key}. See result_key_for for keys longer than kMaxKeyLength.
    std::string result_key = std::string(kDefaultResultKey);
    /// Lets this group write result_bucket while another live group does too (both must say
    /// so). Without it, open() refuses with `conflict` when another group (of any topic in the
    /// pool) with live members writes the same bucket: two groups that see the same inputs
    /// (fan-out) would overwrite each other's results.
    bool shared_results = false;
    std::string next_topic;           ///< "": no forwarding
    std::string dlq_topic;            ///< "": "<topic>.dlq" (created when first needed)
    uint32_t max_attempts = 3;
    uint64_t backoff_initial_ns = 100'000'000;   ///< doubles per retry
    uint64_t backoff_max_ns = 2'000'000'000;
    uint64_t session_timeout_ns = 10'000'000'000;
    uint32_t batch = 16;              ///< messages per poll
    uint64_t count = 0;               ///< stop after this many messages handled (0: no limit)
    uint64_t exit_when_idle_ns = 0;   ///< stop after this long without a message (0: never)
    uint32_t partitions_if_created = 4;  ///< topics created when missing get this many partitions
};

struct LatencySummary {
    uint64_t samples = 0;
    uint64_t p50_ns = 0, p99_ns = 0, p999_ns = 0, max_ns = 0;
};

struct WorkerStats {
    uint64_t processed = 0;      ///< results written
    uint64_t skipped = 0;        ///< a result for that input version existed already
    uint64_t failed_attempts = 0;
    uint64_t dead_lettered = 0;
    uint64_t forwarded = 0;
    uint64_t bytes_in = 0, bytes_out = 0;
    uint64_t rebalances = 0;
    uint64_t epoch = 0;
    std::vector<uint32_t> partitions;  ///< current assignment
    LatencySummary latency;      ///< put timestamp -> result written (wall clock)
};

/// Why run() returned.
enum class WorkerExit : uint8_t { stopped, count_reached, idle };

class WorkerLoop {
public:
    /// Creates the topic (and next topic) when missing, opens the store, joins the group.
    /// already_exists when a live member of the group uses member_id.
    static Result<WorkerLoop> open(Pool& pool, const WorkerConfig& config, Processor processor);
    WorkerLoop(WorkerLoop&&) noexcept;
    WorkerLoop& operator=(WorkerLoop&&) noexcept;
    ~WorkerLoop();  ///< leaves the group if run() did not

    /// Runs until `should_stop()` (checked between messages and every ~100 ms), --count or
    /// --exit-when-idle; then commits, leaves the group. Errors: LeaseExpired (a store or
    /// topic lease ran out), or another fatal error; the group is left in any case.
    Result<WorkerExit> run(const std::function<bool()>& should_stop);
    const WorkerStats& stats() const;
    const std::string& member_id() const;
    /// Optional event log ("joined: partitions 0,1 epoch 3", "dlq: ..."), default: none.
    void set_log(std::function<void(std::string_view)> log);

    struct Impl;

private:
    explicit WorkerLoop(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// "host-pid-starttime": unique per process incarnation.
std::string default_member_id();

/// invalid_argument naming the problem unless `key_template` is a result key template: text
/// with the placeholders {bucket} and {key} (the latter required), no other braces.
Status validate_result_key_template(std::string_view key_template);
/// The result key of `input` under `key_template`. A key longer than kMaxKeyLength (a long
/// input key under "{bucket}/{key}") becomes its first kMaxKeyLength - 17 bytes, '~' and 16
/// lower-case hex digits of the 64-bit FNV-1a hash of the whole key: still readable, still
/// distinct (and a hash collision is caught like any other: see WorkerLoop's result check).
/// invalid_uri when the substituted text is not a valid key (an empty segment, "..").
Result<std::string> result_key_for(std::string_view key_template, const FabricUri& input);

}  // namespace fabric_shm
