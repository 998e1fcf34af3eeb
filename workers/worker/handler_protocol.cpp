// SPDX-License-Identifier: MIT
#include "handler_protocol.h"

#include <cstring>

namespace fabric_shm::workers::handler_protocol {

namespace {

template <class T>
void put_le(std::vector<uint8_t>& out, T v) {
    for (size_t i = 0; i < sizeof(T); ++i) out.push_back(uint8_t(uint64_t(v) >> (8 * i)));
}
template <class T>
T get_le(const uint8_t* p) {
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= uint64_t(p[i]) << (8 * i);
    return T(v);
}
void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
}

}  // namespace

void append_hello(std::vector<uint8_t>& out, uint32_t max_in_flight) {
    put_le<uint32_t>(out, 1 + 4 + 2 + 2 + 4);
    out.push_back(kHello);
    put_bytes(out, kMagic, 4);
    put_le<uint16_t>(out, kVersion);
    put_le<uint16_t>(out, 0);
    put_le<uint32_t>(out, max_in_flight);
}

void append_request(std::vector<uint8_t>& out, const RequestFields& r) {
    const uint64_t body = 8 + 4 + 4 + 8 + 8 + 2 + r.uri.size() + 2 + r.key.size() + 2 + r.topic.size() + 4 + r.data.size();
    put_le<uint32_t>(out, uint32_t(1 + body));
    out.push_back(kRequest);
    put_le<uint64_t>(out, r.id);
    put_le<uint32_t>(out, r.attempt);
    put_le<uint32_t>(out, r.partition);
    put_le<uint64_t>(out, r.offset);
    put_le<uint64_t>(out, r.version);
    for (std::string_view s : {r.uri, r.key, r.topic}) {
        put_le<uint16_t>(out, uint16_t(s.size()));
        put_bytes(out, s.data(), s.size());
    }
    put_le<uint32_t>(out, uint32_t(r.data.size()));
    put_bytes(out, r.data.data(), r.data.size());
}

namespace {

// The length word and the type: error for what no handler may send, else hello or reply.
Parse frame_prefix(std::span<const uint8_t> in, uint32_t* len, std::string* why) {
    if (in.size() < 5) return Parse::need_more;
    *len = get_le<uint32_t>(in.data());
    const uint8_t type = in[4];
    if (type != kHelloReply && type != kReply) {
        *why = "unknown frame type 0x" + std::string(1, "0123456789abcdef"[type >> 4]) +
               std::string(1, "0123456789abcdef"[type & 15]) + " (expected 'h' or 'R'; the handler wrote something else on stdout)";
        return Parse::error;
    }
    if (*len == 0 || *len > kMaxFrameBytes) {
        *why = "frame of " + std::to_string(*len) + " bytes (at most " + std::to_string(kMaxFrameBytes) + ")";
        return Parse::error;
    }
    return type == kHelloReply ? Parse::hello : Parse::reply;
}

}  // namespace

Parse parse_reply_head(std::span<const uint8_t> in, Reply* head, uint64_t* frame_bytes, std::string* why) {
    uint32_t len = 0;
    const Parse p = frame_prefix(in, &len, why);
    if (p == Parse::hello) return Parse::need_more;
    if (p != Parse::reply) return p;
    const size_t n = len - 1;
    if (n < 8 + 1 + 4) {
        *why = "reply frame of " + std::to_string(n) + " bytes is shorter than its fixed fields (13)";
        return Parse::error;
    }
    if (in.size() < kReplyHeadBytes) return Parse::need_more;
    const uint8_t* b = in.data() + 5;
    head->id = get_le<uint64_t>(b);
    head->status = b[8];
    const uint32_t blen = get_le<uint32_t>(b + 9);
    if (uint64_t(blen) != n - 13) {
        *why = "reply for request " + std::to_string(head->id) + " says " + std::to_string(blen) +
               " result bytes in a frame that holds " + std::to_string(n - 13);
        return Parse::error;
    }
    if (head->status > kStatusPermanent) {
        *why = "reply for request " + std::to_string(head->id) + " has status " + std::to_string(head->status) +
               " (0 ok, 1 retryable error, 2 permanent error)";
        return Parse::error;
    }
    head->body = {};
    *frame_bytes = 4 + uint64_t(len);
    return Parse::reply;
}

Parse parse_frame(std::span<const uint8_t> in, size_t* used, Reply* reply, uint16_t* hello_version, std::string* why) {
    uint32_t len = 0;
    const Parse p = frame_prefix(in, &len, why);
    if (p == Parse::reply) {
        uint64_t frame_bytes = 0;
        const Parse head = parse_reply_head(in, reply, &frame_bytes, why);
        if (head != Parse::reply) return head;
        if (in.size() < frame_bytes) return Parse::need_more;
        *used = size_t(frame_bytes);
        reply->body = {in.data() + kReplyHeadBytes, size_t(frame_bytes - kReplyHeadBytes)};
        return Parse::reply;
    }
    if (p != Parse::hello) return p;
    if (in.size() < 4 + uint64_t(len)) return Parse::need_more;
    const uint8_t* b = in.data() + 5;
    const size_t n = len - 1;
    *used = 4 + size_t(len);
    if (n < 8 || std::memcmp(b, kMagic, 4) != 0) {
        *why = "hello reply without the FSHM magic";
        return Parse::error;
    }
    *hello_version = get_le<uint16_t>(b + 4);
    return Parse::hello;
}

}  // namespace fabric_shm::workers::handler_protocol
