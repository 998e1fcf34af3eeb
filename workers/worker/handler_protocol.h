// SPDX-License-Identifier: MIT
// The long-lived handler protocol, the worker's side (docs/handlers.md has the bytes): frames
// `u32 length (little-endian) | u8 type | body`, length counting type + body. A hello each way
// opens it; then requests ('Q') go to the handler and replies ('R') come back in any order.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fabric_shm::workers::handler_protocol {

inline constexpr uint16_t kVersion = 1;
inline constexpr char kMagic[4] = {'F', 'S', 'H', 'M'};
inline constexpr uint8_t kHello = 'H';       ///< worker -> handler: magic, version, flags, max in flight
inline constexpr uint8_t kHelloReply = 'h';  ///< handler -> worker: magic, version, flags
inline constexpr uint8_t kRequest = 'Q';
inline constexpr uint8_t kReply = 'R';
inline constexpr uint8_t kStatusOk = 0, kStatusRetryable = 1, kStatusPermanent = 2;
/// A frame longer than this from a handler is a protocol error (garbage, or a runaway result).
inline constexpr uint64_t kMaxFrameBytes = uint64_t(1) << 30;

struct RequestFields {
    uint64_t id = 0;
    uint32_t attempt = 0, partition = 0;
    uint64_t offset = 0, version = 0;
    std::string_view uri, key, topic;
    std::span<const uint8_t> data;
};

void append_hello(std::vector<uint8_t>& out, uint32_t max_in_flight);
void append_request(std::vector<uint8_t>& out, const RequestFields& r);

struct Reply {
    uint64_t id = 0;
    uint8_t status = kStatusOk;
    std::span<const uint8_t> body;  ///< result (ok) or error message; points into the input buffer
};

/// What the next frame in a buffer is.
enum class Parse : uint8_t { need_more, hello, reply, error };

/// Parses one frame from `in` (a handler's output). *used: bytes consumed (hello, reply). On
/// error, *why says what was wrong ("unknown frame type 0x41", "frame of 3000000000 bytes").
/// A reply's fixed fields are checked as soon as they are in, before the rest of its frame.
Parse parse_frame(std::span<const uint8_t> in, size_t* used, Reply* reply, uint16_t* hello_version, std::string* why);

/// The fixed fields of the reply frame at the start of `in` (id, status; body left empty) and
/// *frame_bytes, the whole frame's size, once its first 18 bytes are in: the worker judges a
/// reply too large to keep by them and drops the rest unread. need_more before that (or when
/// the frame is a hello reply), error as parse_frame says it.
Parse parse_reply_head(std::span<const uint8_t> in, Reply* head, uint64_t* frame_bytes, std::string* why);
/// Bytes of a reply frame before its body: length, type, id, status, body length.
inline constexpr size_t kReplyHeadBytes = 4 + 1 + 8 + 1 + 4;

}  // namespace fabric_shm::workers::handler_protocol
