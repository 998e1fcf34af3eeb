// SPDX-License-Identifier: MIT
// fabric://POOL/BUCKET/KEY: the address of an object, and the payload of a notification.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "fabric_shm/result.h"

namespace fabric_shm {

/// Longest key accepted. A full URI ("fabric://" + 64 + "/" + 64 + "/" + 256 = 395 bytes) then
/// fits a default 512-byte topic slot with room for the envelope and a version header.
constexpr size_t kMaxKeyLength = 256;

class FabricUri;
namespace detail {
struct UriAccess;  ///< the library's own: views of parts it has already checked
}

/// A validated fabric://POOL/BUCKET/KEY that refers to characters it does not own: the bytes
/// of a notification, a FabricUri, or a buffer the caller reuses. parse() applies exactly
/// FabricUri::parse's rules but copies nothing and allocates nothing, so a worker can turn each
/// notification into a store call without touching the heap. Valid only while the text lives.
class FabricUriView {
public:
    FabricUriView() = default;
    /// Same rules and error messages as FabricUri::parse.
    static Result<FabricUriView> parse(std::string_view text);
    /// Writes "fabric://pool/bucket/key" into `buffer` (reusing its capacity: no allocation once
    /// it is large enough) and returns a view of it, validated as make() does. The view is valid
    /// until `buffer` changes. The parts may be views into `buffer` itself (an earlier
    /// format's): they are copied out before it is written.
    static Result<FabricUriView> format(std::string& buffer, std::string_view pool, std::string_view bucket,
                                        std::string_view key);

    std::string_view pool() const { return pool_; }
    std::string_view bucket() const { return bucket_; }
    std::string_view key() const { return key_; }
    /// "fabric://pool/bucket/key" (allocates: for messages, not the hot path).
    std::string to_string() const;
    /// The same text into `out`, reusing its capacity (no allocation once it is large enough).
    void to_string(std::string& out) const;
    /// An owning copy.
    FabricUri to_uri() const;

private:
    friend class FabricUri;
    friend struct detail::UriAccess;
    /// Validates the parts; `text` only names the URI in an error. Allocates only on error.
    static Status check(std::string_view text, std::string_view pool, std::string_view bucket, std::string_view key);
    static FabricUriView parse_parts_unchecked(std::string_view pool, std::string_view bucket, std::string_view key);
    static Result<FabricUriView> split(std::string_view text);
    std::string_view pool_, bucket_, key_;
};

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
    /// A view of this URI (valid while it lives), for the calls that take one.
    FabricUriView view() const;
    /// Becomes a copy of `uri` (validated already), reusing this URI's string capacity: no
    /// allocation once the parts fit, so one FabricUri can hold message after message.
    void assign(const FabricUriView& uri);

    friend bool operator==(const FabricUri&, const FabricUri&) = default;

private:
    friend class FabricUriView;
    std::string pool_, bucket_, key_;
};

}  // namespace fabric_shm
