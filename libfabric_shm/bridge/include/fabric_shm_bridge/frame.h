// SPDX-License-Identifier: MIT
// The bytes a bridge puts on the stream for one topic message: its coordinates, key, headers
// and value, and the object it points to (bytes, metadata, identity), in one CRC-checked frame.
// A frame larger than the chunk size travels as a small manifest plus chunk messages (a side
// channel in the same stream). No network code here. Format: docs/bridge.md ("Wire format").
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fabric_shm/result.h"

namespace fabric_shm::bridge {

inline constexpr uint32_t kFrameMagic = 0x31425346u;     ///< "FSB1"
inline constexpr uint32_t kManifestMagic = 0x43425346u;  ///< "FSBC"
inline constexpr uint16_t kFrameVersion = 1;

/// What an object's content is, across hosts: "version V of an object first put on the pool
/// with incarnation I" (source), or "the result computed from such an input" (result). Two
/// objects with the same identity hold the same bytes, whichever host they came through.
enum class IdentityKind : uint8_t { none = 0, source = 's', result = 'r' };
struct ObjectIdentity {
    IdentityKind kind = IdentityKind::none;
    uint64_t pool_incarnation = 0;
    uint64_t version = 0;
    /// "s/<16 hex>/<version>" or "r/<16 hex>/<version>".
    std::string to_string() const;
    static std::optional<ObjectIdentity> parse(std::string_view text);
    friend bool operator==(const ObjectIdentity&, const ObjectIdentity&) = default;
};

/// Metadata key an imported object carries: "<identity>;<message id>" (docs/bridge.md).
inline constexpr std::string_view kBridgeMetadataKey = "fabric-bridge";
/// Headers an imported notification carries.
inline constexpr std::string_view kHeaderBridgeId = "fabric-bridge-id";         ///< the stream message id
inline constexpr std::string_view kHeaderBridgeStream = "fabric-bridge-stream"; ///< the stream it came from (loop guard)

struct FrameHeaderView {
    std::string_view name;
    std::string_view value;
};

/// A frame, as views: into the caller's buffers when encoding, into the decoded bytes when decoding.
struct FrameView {
    uint64_t source_pool_incarnation = 0;
    std::string_view source_pool;
    std::string_view topic;
    uint64_t topic_incarnation = 0;
    uint32_t partition = 0;
    uint64_t offset = 0;
    uint64_t timestamp_ns = 0;
    std::span<const uint8_t> key;
    std::vector<FrameHeaderView> headers;
    std::span<const uint8_t> value;
    /// The object the value names (fabric://SOURCE_POOL/BUCKET/KEY), when it was read.
    bool has_object = false;
    bool object_missing = false;  ///< the value named an object of the source pool that was absent
    std::string_view bucket, object_key, content_type;
    uint64_t object_version = 0;
    uint64_t expires_wall_ns = 0;
    uint32_t object_crc = 0;
    ObjectIdentity identity;
    std::vector<std::pair<std::string_view, std::string_view>> metadata;
    std::span<const uint8_t> object_data;
};

/// Limits a decoder enforces; every length is checked against them and against the bytes left.
struct FrameLimits {
    uint64_t max_frame_bytes = 256ull << 20;
    uint64_t max_object_bytes = 256ull << 20;
    uint32_t max_headers = 1024;
    uint32_t max_metadata = 256;
};

/// Appends the encoded frame to `out` (cleared first). invalid_argument naming the field when
/// a field exceeds what the format holds.
Status encode_frame(const FrameView& frame, std::vector<uint8_t>& out);
/// corrupt naming the field (bad magic, truncated, length past the end, CRC mismatch),
/// message_too_large when the frame exceeds limits.max_frame_bytes, version_mismatch for a
/// newer format. The views point into `bytes`.
Result<FrameView> decode_frame(std::span<const uint8_t> bytes, const FrameLimits& limits = {});

/// A frame sent in chunks: the manifest is the stream message; chunk i is a message on the
/// chunk subject with bytes [i * chunk_bytes, min(frame_bytes, (i + 1) * chunk_bytes)).
struct ChunkManifest {
    uint64_t frame_bytes = 0;
    uint32_t chunks = 0;
    uint32_t chunk_bytes = 0;
    uint32_t frame_crc = 0;  ///< crc32 of the whole frame
    uint16_t flags = 0;      ///< kManifestChunksByContent, or 0 (an older exporter)
};
/// The chunks are named by the message id and their content (frame CRC and chunk size, see
/// chunk_set_name), not by the message id alone.
constexpr uint16_t kManifestChunksByContent = 1;
std::vector<uint8_t> encode_manifest(const ChunkManifest& manifest);
/// nullopt when `bytes` is not a manifest (then it is a frame); corrupt when it is a damaged one.
Result<std::optional<ChunkManifest>> decode_manifest(std::span<const uint8_t> bytes, const FrameLimits& limits = {});
/// The name the chunks of `manifest` go by in their subjects and message ids:
/// "<message id>-<frame crc, 8 hex>-<chunk bytes>" with kManifestChunksByContent, else the
/// message id. Two cuts of one message (another chunk size after a refusal, another exporter's
/// --chunk-size, an object replaced before a re-export) never share a chunk name, so the
/// server's de-duplication by message id cannot keep a chunk of one cut under another's manifest.
std::string chunk_set_name(std::string_view message_id, const ChunkManifest& manifest);
/// A manifest's message id, read from the network, as the chunks' subjects take it: 1-128
/// characters of [A-Za-z0-9_-] (what message_id() writes). Anything else (a '.', which
/// subjects split on; a '"' or '\', which the client pastes into a JSON request unescaped)
/// is refused as corrupt: the message is dead-lettered, never asked for again and again.
Status validate_manifest_id(std::string_view message_id);

/// The stream message id of a topic message: "fs1-<pool incarnation>-<topic incarnation>-<partition>-<offset>"
/// (hex, hex, decimal, decimal). Stable across redeliveries and exporter restarts.
std::string message_id(uint64_t pool_incarnation, uint64_t topic_incarnation, uint32_t partition, uint64_t offset);

/// Stream and durable names: 1-64 characters of [A-Za-z0-9_-] (no '.', which NATS subjects split on).
Status validate_stream_name(std::string_view what, std::string_view name);
/// A topic name made into a stream name ('.' becomes '_').
std::string stream_name_for_topic(std::string_view topic);
/// Subjects of a stream: messages "fabric.<stream>.m.<partition>", chunks "fabric.<stream>.c.<chunk set name>.<i>".
std::string message_subject(std::string_view stream, uint32_t partition);
std::string message_filter(std::string_view stream);  ///< "fabric.<stream>.m.>"
std::string chunk_subject(std::string_view stream, std::string_view chunk_set, uint32_t index);
std::string stream_subjects(std::string_view stream);  ///< "fabric.<stream>.>"

}  // namespace fabric_shm::bridge
