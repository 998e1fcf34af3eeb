// SPDX-License-Identifier: MIT
// Committed offsets: where a group resumes. MemOffsetStore is the group table in the pool;
// FileOffsetStore keeps them in a file so they survive the pool's expiry and a reboot.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "fabric_shm/fsync.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"

namespace fabric_shm {

struct OffsetCommit {
    uint32_t partition = 0;
    uint64_t offset = 0;  ///< next offset to read
    uint64_t epoch = 0;   ///< 0 outside a consumer group
};

struct FetchedOffset {
    std::optional<uint64_t> offset;   ///< nullopt: nothing stored (or stored for another incarnation)
    uint64_t epoch = 0;
    bool incarnation_mismatch = false;  ///< stored for a topic that was removed and re-created
};

class OffsetStore {
public:
    virtual ~OffsetStore() = default;
    virtual Result<FetchedOffset> fetch(std::string_view topic, uint64_t incarnation, std::string_view group,
                                        uint32_t partition) = 0;
    /// All or nothing. StaleEpoch (naming both epochs) when a commit's epoch is lower than
    /// the stored one for its partition.
    virtual Status commit(std::string_view topic, uint64_t incarnation, std::string_view group,
                          std::span<const OffsetCommit> commits) = 0;
};

/// The in-pool group table: registration, lease, committed offset + epoch per partition.
/// The group must be registered (TopicManager::register_group or a Consumer with that group).
class MemOffsetStore final : public OffsetStore {
public:
    explicit MemOffsetStore(const Pool& pool) : pool_(pool) {}
    Result<FetchedOffset> fetch(std::string_view topic, uint64_t incarnation, std::string_view group,
                                uint32_t partition) override;
    Status commit(std::string_view topic, uint64_t incarnation, std::string_view group,
                  std::span<const OffsetCommit> commits) override;

private:
    Pool pool_;  ///< a handle: the store stays usable when the caller's Pool moves
};

/// One file per (topic, group) in `directory`: "<topic>.<group>.offsets". Two 4 KiB record
/// slots, each with a sequence number and CRC-32; a commit overwrites the older slot and a
/// reader takes the newest valid one, so a torn write leaves the previous commit intact.
/// Commits from several processes are serialised with flock; a commit that finds the file
/// locked for kOffsetFileLockWaitNs (its holder stopped, or slow in its fdatasync) returns
/// Errc::busy and writes nothing: commit again later.
/// FsyncPolicy::never leaves a
/// commit in the page cache (it survives process crashes, not power loss); the other policies
/// fdatasync every commit (it survives power loss).
/// How long FileOffsetStore::commit waits for another committer's lock on the file (the
/// group locks' wait).
inline constexpr uint64_t kOffsetFileLockWaitNs = 2'000'000'000ull;

class FileOffsetStore final : public OffsetStore {
public:
    explicit FileOffsetStore(std::string directory, FsyncPolicy fsync = FsyncPolicy::every_write)
        : directory_(std::move(directory)), fsync_(fsync) {}
    Result<FetchedOffset> fetch(std::string_view topic, uint64_t incarnation, std::string_view group,
                                uint32_t partition) override;
    Status commit(std::string_view topic, uint64_t incarnation, std::string_view group,
                  std::span<const OffsetCommit> commits) override;
    std::string path(std::string_view topic, std::string_view group) const;

private:
    std::string directory_;
    FsyncPolicy fsync_;
};

}  // namespace fabric_shm
