// SPDX-License-Identifier: MIT
// The pool archive file that `fabric-shm pool export` writes and `fabric-shm pool import`
// reads (format and procedure: docs/upgrades.md). It does not depend on the shared-memory
// layout, so an archive written by one build is read by every later build: that is how a
// pool's contents cross a layout change.
//
//   file   := magic record* end-record
//   magic  := "FSHMARC1"                          (8 bytes)
//   record := u32 header_bytes, header (JSON, UTF-8), u64 payload_bytes, payload
//
// Integers are little-endian. Every header is a JSON object with a "type"; the writer adds
// "crc32" (of the payload, the gzip CRC-32). The last record is {"type":"end","records":N}
// (N: the records before it), so a truncated file is refused, not half-imported.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fabric_shm/result.h"

namespace fabric_shm::cli::archive {

inline constexpr char kMagic[8] = {'F', 'S', 'H', 'M', 'A', 'R', 'C', '1'};
inline constexpr uint32_t kMaxHeaderBytes = 1u << 20;     ///< a header is small metadata
inline constexpr uint64_t kMaxPayloadBytes = 1ull << 32;  ///< larger than any object or message

/// A byte string as JSON: a plain string when it is valid UTF-8, else {"base64": "..."}.
/// Keys, metadata and header values are usually text; nothing is lost when they are not.
nlohmann::json bytes_json(std::string_view bytes);
/// The inverse of bytes_json; invalid_argument naming `what` when it is neither form.
Result<std::string> json_bytes(const nlohmann::json& value, std::string_view what);

struct Record {
    nlohmann::json header;
    std::vector<uint8_t> payload;  ///< empty when the reader skipped it
    uint64_t payload_bytes = 0;    ///< its size, read or skipped
};

/// Writes an archive to a file ("-": standard output). Not thread-safe.
class Writer {
public:
    static Result<Writer> open(const std::string& path);
    Writer(Writer&& other) noexcept;
    Writer& operator=(Writer&&) = delete;
    ~Writer();
    Status write(nlohmann::json header, std::span<const uint8_t> payload = {});
    /// Writes the end record and flushes (and closes a file). Without it the archive is refused.
    Status finish();
    uint64_t records() const { return records_; }

private:
    Writer(std::FILE* file, std::string path, bool owned) : file_(file), path_(std::move(path)), owned_(owned) {}
    Status put(const void* data, size_t n);
    std::FILE* file_ = nullptr;
    std::string path_;
    bool owned_ = false;
    uint64_t records_ = 0;
};

/// Reads an archive from a regular file (import reads it in several passes). Every length is
/// checked against the limits above and the file's size before it is trusted.
class Reader {
public:
    static Result<Reader> open(const std::string& path);
    Reader(Reader&& other) noexcept;
    Reader& operator=(Reader&&) = delete;
    ~Reader();
    /// The next record into *out, its payload read (and its CRC checked) only when
    /// want_payload(header) says so, else skipped unread. False after the end record, which
    /// must come last and count the records before it.
    Result<bool> next(Record* out, const std::function<bool(const nlohmann::json&)>& want_payload);
    /// The next record's header only (its payload skipped unread).
    Result<bool> next_header(Record* out) {
        return next(out, std::function<bool(const nlohmann::json&)>([](const nlohmann::json&) { return false; }));
    }
    /// Back to the first record, for another pass.
    Status rewind();

private:
    Reader(std::FILE* file, std::string path, uint64_t size) : file_(file), path_(std::move(path)), size_(size) {}
    Status get(void* data, size_t n);
    Error corrupt(const std::string& what) const;
    std::FILE* file_ = nullptr;
    std::string path_;
    uint64_t size_ = 0;
    uint64_t records_ = 0;
    bool ended_ = false;
};

}  // namespace fabric_shm::cli::archive
