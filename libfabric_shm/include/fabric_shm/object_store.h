// SPDX-License-Identifier: MIT
// The ObjectStore interface (grafos_store::ObjectStore, extended with versions, conditions
// and fences). MemObjectStore (in the pool) and TieredObjectStore (pool + files) implement it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fabric_shm/bytes.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/result.h"
#include "fabric_shm/uri.h"

namespace fabric_shm {

/// CRC-32 (gzip/zip polynomial, reflected): crc32("123456789") == 0xCBF43926. ISA-L.
uint32_t crc32(const void* data, size_t length, uint32_t seed = 0) noexcept;

enum class PutCondition : uint8_t {
    none,              ///< overwrite
    if_absent,         ///< only when no object exists under the URI
    if_version_equals, ///< only when the current version equals expected_version
    fence,             ///< only when fence_token >= the fence stored with the current object
    /// fence and if_version_equals, both in the one step that publishes: a fenced writer that
    /// must not pass a write it has not seen (a worker's result put, judged against the result
    /// it read when it took the message). The fence is checked first (Errc::stale_epoch), then
    /// the version (Errc::conflict); expected_version 0 means no object.
    fence_if_version_equals,
};

constexpr size_t kMaxContentTypeLength = 64;
constexpr size_t kMaxMetadataBytes = 512;  ///< sum of key and value lengths of user metadata
constexpr size_t kMaxMetadataEntries = 32;  ///< entries (key-value pairs) of user metadata

struct PutOptions {
    std::string content_type;                   ///< <= kMaxContentTypeLength
    std::map<std::string, std::string> metadata; ///< small; <= kMaxMetadataBytes in all
    Duration ttl{0};                            ///< per-object expiry (0 = none); expired objects read as absent
    PutCondition condition = PutCondition::none;
    uint64_t expected_version = 0;              ///< for if_version_equals, fence_if_version_equals (0: absent)
    /// For fence (and fence_if_version_equals, as for every mention of fence below): a caller-supplied monotonic token (e.g. a group epoch). Checked against the
    /// token stored with the object in the same atomic step that publishes the new object;
    /// a lower token fails with Errc::stale_epoch. The new object stores this token.
    uint64_t fence_token = 0;
    /// For fence, optional: whether `fence_token` still holds where it was issued (a consumer
    /// group worker: it still owns the partition, no newer owner fenced it). The token stored
    /// with an object fences writes to that object only; once the object is gone (removed
    /// after a newer owner wrote it, or never written) nothing in the store remembers the
    /// newer token, and a stale writer's put would land. This is asked after the key's current
    /// object was read and before the atomic step that makes the put visible, which fails if
    /// the key changed in between (the put then reads and asks again), so a put either becomes
    /// visible before anything a newer owner writes to the key, or is refused with
    /// Errc::stale_epoch. Must be cheap (a few atomic loads) and must not call into the store.
    std::function<bool()> fence_holds;
};

struct ObjectInfo {
    uint64_t size = 0;
    uint32_t crc32 = 0;
    uint64_t version = 0;         ///< monotonic per key, starts at 1; survives overwrite and remove+put
    uint64_t fence_token = 0;
    std::string content_type;
    std::map<std::string, std::string> metadata;
    uint64_t created_wall_ns = 0; ///< when this version was published
    uint64_t expires_wall_ns = 0; ///< 0 = no per-object TTL
};

struct ObjectData {
    std::vector<uint8_t> data;
    ObjectInfo info;
};

struct RemoveOptions {
    std::optional<uint64_t> if_version;  ///< remove only this version (Errc::conflict otherwise)
};

class ObjectStore {
public:
    virtual ~ObjectStore() = default;
    /// Returns the new version. Errors: invalid_uri, object_too_large, capacity_exceeded,
    /// conflict (condition failed), stale_epoch (fence), lease_expired.
    virtual Result<uint64_t> put(const FabricUri& uri, ByteView data, const PutOptions& options = {}) = 0;
    /// nullopt when absent. CRC verified: a mismatch is Errc::corrupt, never bad bytes.
    virtual Result<std::optional<ObjectData>> get(const FabricUri& uri) = 0;
    virtual Result<std::optional<ObjectInfo>> head(const FabricUri& uri) = 0;
    /// True when an object was removed.
    virtual Result<bool> remove(const FabricUri& uri, const RemoveOptions& options = {}) = 0;
    /// Keys (not URIs) in the bucket starting with prefix, sorted bytewise.
    virtual Result<std::vector<std::string>> list(std::string_view pool, std::string_view bucket,
                                                  std::string_view prefix) = 0;
};

}  // namespace fabric_shm
