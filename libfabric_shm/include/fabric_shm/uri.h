// SPDX-License-Identifier: MIT
// fabric://POOL/BUCKET/KEY: the address of an object, and the payload of a notification.
#pragma once

#include <string>
#include <string_view>

#include "fabric_shm/result.h"

namespace fabric_shm {

/// Longest key accepted. A full URI ("fabric://" + 64 + "/" + 64 + "/" + 256 = 395 bytes) then
/// fits a default 512-byte topic slot with room for the envelope and a version header.
constexpr size_t kMaxKeyLength = 256;

class FabricUri {
public:
    /// Parses "fabric://pool/bucket/key". Rejects other schemes, empty parts, names that
    /// break the name rule, "." or ".." key segments, empty key segments ("a//b"), control
    /// characters, and keys longer than kMaxKeyLength, with a message naming the value.
    static Result<FabricUri> parse(std::string_view text);
    static Result<FabricUri> make(std::string_view pool, std::string_view bucket, std::string_view key);

    const std::string& pool() const { return pool_; }
    const std::string& bucket() const { return bucket_; }
    const std::string& key() const { return key_; }
    /// "fabric://pool/bucket/key"; parse(to_string()) round-trips exactly.
    std::string to_string() const;
    /// "bucket/key": the store's internal key within one pool.
    std::string object_key() const;

    friend bool operator==(const FabricUri&, const FabricUri&) = default;

private:
    static Result<FabricUri> make_checked(std::string_view text, std::string_view pool, std::string_view bucket,
                                          std::string_view key);
    std::string pool_, bucket_, key_;
};

}  // namespace fabric_shm
