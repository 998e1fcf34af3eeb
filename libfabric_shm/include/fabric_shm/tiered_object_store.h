// SPDX-License-Identifier: MIT
// TieredObjectStore: hot objects in a MemObjectStore in the pool, cold ones in a CRC-checked
// append-only log in a directory. Design, file format and durability: docs/tiered-store.md.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fabric_shm/fsync.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/object_store.h"
#include "fabric_shm/pool.h"

namespace fabric_shm {

/// The hot tier's defaults: a MemObjectStore named "tiered", sized from the pool.
inline StoreConfig tiered_hot_defaults() {
    StoreConfig config;
    config.name = "tiered";
    return config;
}

struct TieredConfig {
    std::string cold_dir;        ///< created if missing (mode 0700); one open store per directory
    uint64_t max_hot = 1024;     ///< more hot objects than this -> the least recently used is demoted
    /// The hot tier's MemObjectStore in the pool. It belongs to this tiered store: objects
    /// written into it directly (not through TieredObjectStore) are readable but unmanaged.
    StoreConfig hot = tiered_hot_defaults();
    FsyncPolicy fsync = FsyncPolicy::on_checkpoint;  ///< when the cold tier syncs (fsync.h)
    /// checkpoint() rewrites the log without dead records when they exceed this fraction
    /// of it (and 1 MiB); 0 disables compaction.
    double compact_garbage_fraction = 0.5;
};

struct TieredStats {
    uint64_t hot_objects = 0;        ///< objects in this store's LRU (hot tier)
    uint64_t cold_objects = 0;       ///< live records in the cold index
    uint64_t cold_torn = 0;          ///< indexed records known to be damaged (reads fail Corrupt)
    uint64_t cold_log_bytes = 0;     ///< size of the current log file
    uint64_t cold_live_bytes = 0;    ///< bytes of live records in it
    uint64_t log_generation = 0;     ///< bumped by each compaction
    uint64_t demotions = 0, promotions = 0, compactions = 0, checkpoints = 0;
    uint64_t recovered_records = 0;  ///< records replayed from the log tail at open (after the checkpoint)
    uint64_t discarded_tail_bytes = 0;  ///< torn tail cut off at open
};

/// Not thread-safe across processes by design: one process at a time opens a cold directory
/// (an flock on <dir>/LOCK, released by the kernel if the holder dies; a second open gets
/// Errc::busy naming the holder). Thread-safe within the process (one mutex per store: the
/// tiered store is the cold path, not the per-message hot path).
///
/// Versions are the tiered store's own, monotonic per key across demotion, promotion,
/// overwrite and remove+put (kept in reserved metadata "fabric-tier" of the hot copy, which
/// costs about 40 bytes of the kMaxMetadataBytes budget and is never shown to callers), also
/// after a restart: a key with no object starts above the highest version removed from a
/// key that had only a hot copy, or lost to a TTL, or dropped by compaction (one store-wide
/// floor, on the cold log before such a version could be handed out again). A hot-only
/// version reached after the last checkpoint and gone (TTL, pool lost) before the next owner
/// opened is not covered (docs/tiered-store.md).
class TieredObjectStore final : public ObjectStore {
public:
    /// Opens (creating if needed) the cold directory and the hot MemObjectStore in `pool`,
    /// loads the checkpointed index and replays log records written after it. `*note`
    /// receives one line per recovery action (torn tail cut, index rebuilt, ...).
    static Result<std::unique_ptr<TieredObjectStore>> open(Pool& pool, const TieredConfig& config,
                                                           std::string* note = nullptr);
    ~TieredObjectStore() override;

    /// Writes go to the hot tier; then the LRU objects beyond max_hot are demoted.
    Result<uint64_t> put(const FabricUri& uri, ByteView data, const PutOptions& options = {}) override;
    /// Hot hit: touches the LRU. Cold hit: verifies the record's CRCs and promotes it.
    /// A damaged cold record is Errc::corrupt (counted in store_corrupt), never served.
    Result<std::optional<ObjectData>> get(const FabricUri& uri) override;
    /// Reads through without promoting or touching the LRU (the SDK's get(&self)).
    Result<std::optional<ObjectData>> peek(const FabricUri& uri);
    Result<std::optional<ObjectInfo>> head(const FabricUri& uri) override;
    Result<bool> remove(const FabricUri& uri, const RemoveOptions& options = {}) override;
    Result<std::vector<std::string>> list(std::string_view pool, std::string_view bucket, std::string_view prefix) override;

    /// Persists the cold index (log synced first, then the index written to a temporary file,
    /// fsynced, renamed over cold.index, directory fsynced), compacting first when the log is
    /// mostly garbage. With `include_hot`, hot objects are also copied into the cold log
    /// before, so that everything acknowledged so far survives the pool's expiry.
    Status checkpoint(bool include_hot = false);
    /// Demotes the least recently used hot objects until at most `keep_hot` remain.
    Status demote_until(uint64_t keep_hot);
    /// Whether the object is currently in the hot tier ("hot"), only cold ("cold"), or absent.
    std::string_view tier_of(const FabricUri& uri);

    TieredStats stats() const;
    MemObjectStore& hot() const;
    const TieredConfig& config() const;

    struct Impl;

private:
    explicit TieredObjectStore(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace fabric_shm
