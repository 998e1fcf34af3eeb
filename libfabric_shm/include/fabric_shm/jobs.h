// SPDX-License-Identifier: MIT
// Idempotent jobs (grafos_jobs): JobCoordinator skips chunks whose output exists, retries
// retryable errors with backoff, never retries permanent ones; output stores in process or in
// the pool's object store. Plus result-identity helpers for workers. docs/groups.md.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fabric_shm/object_store.h"
#include "fabric_shm/result.h"

namespace fabric_shm {

using ChunkId = uint64_t;

struct WorkChunk {
    ChunkId id = 0;
    std::vector<uint8_t> data;
};

/// Where chunk outputs live. A missing output is nullopt, not an error.
class JobOutputStore {
public:
    virtual ~JobOutputStore() = default;
    virtual Status put(ChunkId id, ByteView output) = 0;
    virtual Result<std::optional<std::vector<uint8_t>>> get(ChunkId id) = 0;
    virtual Result<bool> contains(ChunkId id) = 0;
    virtual Status clear() = 0;  ///< teardown
};

/// In-process (lost with the process).
class MemoryOutputStore final : public JobOutputStore {
public:
    Status put(ChunkId id, ByteView output) override;
    Result<std::optional<std::vector<uint8_t>>> get(ChunkId id) override;
    Result<bool> contains(ChunkId id) override;
    Status clear() override;

private:
    std::map<ChunkId, std::vector<uint8_t>> outputs_;
};

/// Outputs as objects fabric://POOL/BUCKET/JOB/<chunk id as 20 digits> of an ObjectStore
/// (a MemObjectStore: in the pool, shared by processes, so a crashed run's replacement skips
/// what was done). put is if-absent: the first output of a chunk wins, a second is a no-op.
class ObjectOutputStore final : public JobOutputStore {
public:
    ObjectOutputStore(ObjectStore& store, std::string pool, std::string job, std::string bucket = "jobs")
        : store_(&store), pool_(std::move(pool)), bucket_(std::move(bucket)), job_(std::move(job)) {}
    Status put(ChunkId id, ByteView output) override;
    Result<std::optional<std::vector<uint8_t>>> get(ChunkId id) override;
    Result<bool> contains(ChunkId id) override;
    Status clear() override;
    Result<FabricUri> uri(ChunkId id) const;

private:
    ObjectStore* store_;
    std::string pool_, bucket_, job_;
};

struct RetryPolicy {
    uint32_t max_attempts = 4;                     ///< first try + 3 retries
    Duration initial_backoff = std::chrono::milliseconds(50);  ///< doubling
    Duration max_backoff = std::chrono::seconds(2);             ///< cap
    /// Transient: the lease ran out, a lock/partition was busy or full, a bounded wait or a
    /// syscall failed, a fence/condition conflict. Everything else (not_found,
    /// invalid_argument, corrupt, object_too_large, stale_epoch, ...) is permanent.
    std::vector<Errc> retryable = {Errc::lease_expired, Errc::busy,          Errc::timeout,
                                   Errc::io_error,      Errc::back_pressure, Errc::no_space,
                                   Errc::capacity_exceeded, Errc::conflict};
    /// How long a chunk's output waits for room when the output store is full (or its key's
    /// lock is held by a paused process): back-pressure, not a failed attempt; the chunk is not
    /// run again. Past it the run returns the store's error (the outputs stored so far stay).
    Duration store_wait = std::chrono::seconds(30);
    /// Waits between attempts; tests substitute a recorder. Default: nanosleep, in slices of at
    /// most 20 ms asking should_stop when it is set (a stop ends the wait).
    std::function<void(Duration wait)> sleep;
    /// Asked before each chunk, after each retry's backoff and before each wait for room (e.g.
    /// a Ctrl-C seen): true ends the run with Errc::interrupted; the outputs stored so far stay.
    /// Default: never.
    std::function<bool()> should_stop;
    bool is_retryable(Errc code) const;
    Duration backoff(uint32_t attempt) const;  ///< wait after failed attempt `attempt` (1-based)
};

struct ChunkFailure {
    ChunkId id = 0;
    Error error;            ///< the last one
    uint32_t attempts = 0;
};

struct JobResult {
    bool complete = false;            ///< every chunk has an output; aggregate was called
    std::vector<uint8_t> aggregate;   ///< empty unless complete
    std::vector<ChunkFailure> failed; ///< chunks without an output, ascending id
    uint32_t skipped = 0;             ///< outputs found (earlier run)
    uint32_t executed = 0;            ///< chunks run to success now
    uint32_t retries = 0;             ///< attempts after a retryable failure
};

class JobCoordinator {
public:
    using Exec = std::function<Result<std::vector<uint8_t>>(std::span<const uint8_t> chunk)>;
    using Outputs = std::vector<std::pair<ChunkId, std::vector<uint8_t>>>;
    using Aggregate = std::function<std::vector<uint8_t>(const Outputs& outputs)>;

    explicit JobCoordinator(RetryPolicy policy = {}) : policy_(std::move(policy)) {}
    /// Chunks in order; aggregate gets (id, output) in chunk order, only when all succeeded.
    /// Errors: duplicate chunk ids (invalid_argument), a failing output store, or one still
    /// full after RetryPolicy::store_wait.
    Result<JobResult> run(std::span<const WorkChunk> chunks, JobOutputStore& outputs, const Exec& exec,
                          const Aggregate& aggregate);
    const RetryPolicy& policy() const { return policy_; }

private:
    RetryPolicy policy_;
};

// ---- Result identity (workers) --------------------------------------------------------------
inline constexpr std::string_view kResultInputUri = "input-uri";          ///< metadata key
inline constexpr std::string_view kResultInputVersion = "input-version";  ///< metadata key (decimal)

/// Options for a result put: fenced under the member's epoch (a zombie's write fails with
/// stale_epoch), metadata naming the input URI and version it was computed from.
PutOptions result_put_options(std::string_view input_uri, uint64_t input_version, uint64_t epoch);
/// True when `result` exists and records exactly this input: `input_uri` and `input_version`.
/// A redelivered notification for that version is skipped; a re-upload (new version) is not,
/// and neither is another input whose result key happens to be the same (a collision, which
/// result_input_uri tells apart).
Result<bool> result_is_current(ObjectStore& store, const FabricUri& result, std::string_view input_uri,
                               uint64_t input_version);
/// The input URI a result records ("" when `result` is absent or records none).
Result<std::string> result_input_uri(ObjectStore& store, const FabricUri& result);

}  // namespace fabric_shm
