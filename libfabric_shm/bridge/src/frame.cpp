// SPDX-License-Identifier: MIT
// Frame encoding: a 16-byte header (magic, version, flags, body length), the body as
// little-endian integers and length-prefixed byte strings, and a CRC-32 of everything before
// it. The decoder trusts nothing: every length is checked against the bytes left and the limits.
#include "fabric_shm_bridge/frame.h"

#include <charconv>
#include <cstdio>
#include <cstring>

#include "fabric_shm/object_store.h"

namespace fabric_shm::bridge {

namespace {

constexpr size_t kHeaderBytes = 16;
constexpr size_t kTrailerBytes = 4;
constexpr uint16_t kFlagObject = 1;
constexpr uint16_t kFlagObjectMissing = 2;
constexpr size_t kManifestBytes = 32;

class Writer {
public:
    explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
    void u8(uint8_t v) { out_.push_back(v); }
    void u16(uint16_t v) { for (int i = 0; i < 2; ++i) out_.push_back(uint8_t(v >> (8 * i))); }
    void u32(uint32_t v) { for (int i = 0; i < 4; ++i) out_.push_back(uint8_t(v >> (8 * i))); }
    void u64(uint64_t v) { for (int i = 0; i < 8; ++i) out_.push_back(uint8_t(v >> (8 * i))); }
    void raw(const void* p, size_t n) {
        const auto* b = static_cast<const uint8_t*>(p);
        out_.insert(out_.end(), b, b + n);
    }
    void str16(std::string_view s) { u16(uint16_t(s.size())); raw(s.data(), s.size()); }
    void bytes32(std::span<const uint8_t> s) { u32(uint32_t(s.size())); raw(s.data(), s.size()); }
    void bytes32(std::string_view s) { u32(uint32_t(s.size())); raw(s.data(), s.size()); }
    void patch_u32(size_t at, uint32_t v) { for (int i = 0; i < 4; ++i) out_[at + i] = uint8_t(v >> (8 * i)); }

private:
    std::vector<uint8_t>& out_;
};

class Reader {
public:
    explicit Reader(std::span<const uint8_t> b) : b_(b) {}
    size_t left() const { return b_.size() - pos_; }
    Status need(size_t n, const char* field) const {
        if (n > left())
            return make_error(Errc::corrupt, std::string("frame truncated in ") + field + ": needs " + std::to_string(n) +
                                                 " bytes, " + std::to_string(left()) + " left");
        return {};
    }
    template <class T>
    Result<T> uint(const char* field) {
        FABRIC_TRY(need(sizeof(T), field));
        T v = 0;
        for (size_t i = 0; i < sizeof(T); ++i) v |= T(T(b_[pos_ + i]) << (8 * i));
        pos_ += sizeof(T);
        return v;
    }
    Result<std::span<const uint8_t>> span(size_t n, const char* field) {
        FABRIC_TRY(need(n, field));
        auto s = b_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    Result<std::string_view> str16(const char* field, size_t max) {
        auto n = uint<uint16_t>(field);
        if (!n) return std::move(n).error();
        if (*n > max)
            return make_error(Errc::corrupt, std::string("frame field ") + field + " is " + std::to_string(*n) +
                                                 " bytes, at most " + std::to_string(max) + " allowed");
        auto s = span(*n, field);
        if (!s) return std::move(s).error();
        return std::string_view(reinterpret_cast<const char*>(s->data()), s->size());
    }
    Result<std::span<const uint8_t>> bytes32(const char* field, uint64_t max) {
        auto n = uint<uint32_t>(field);
        if (!n) return std::move(n).error();
        if (*n > max)
            return make_error(Errc::corrupt, std::string("frame field ") + field + " is " + std::to_string(*n) +
                                                 " bytes, at most " + std::to_string(max) + " allowed");
        return span(*n, field);
    }

private:
    std::span<const uint8_t> b_;
    size_t pos_ = 0;
};

#define FABRIC_READ(var, expr)                             \
    auto var##_r = (expr);                                 \
    if (!var##_r) return std::move(var##_r).error();       \
    auto var = *var##_r

std::string_view as_text(std::span<const uint8_t> s) { return {reinterpret_cast<const char*>(s.data()), s.size()}; }

uint32_t load_le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }

constexpr size_t kMaxName = 64;
constexpr size_t kMaxObjectKey = 1024;
constexpr uint64_t kMaxField = 64ull << 20;

}  // namespace

std::string ObjectIdentity::to_string() const {
    if (kind == IdentityKind::none) return "";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%c/%016llx/%llu", char(kind), static_cast<unsigned long long>(pool_incarnation),
                  static_cast<unsigned long long>(version));
    return buf;
}

std::optional<ObjectIdentity> ObjectIdentity::parse(std::string_view text) {
    // "k/<16 hex>/<decimal>" and nothing else.
    if (text.size() < 2 + 16 + 2 || text[1] != '/' || text[18] != '/') return std::nullopt;
    ObjectIdentity id;
    if (text[0] == 's') id.kind = IdentityKind::source;
    else if (text[0] == 'r') id.kind = IdentityKind::result;
    else return std::nullopt;
    const char* b = text.data() + 2;
    auto [p1, e1] = std::from_chars(b, b + 16, id.pool_incarnation, 16);
    if (e1 != std::errc() || p1 != b + 16) return std::nullopt;
    const char* v = text.data() + 19;
    const char* end = text.data() + text.size();
    auto [p2, e2] = std::from_chars(v, end, id.version);
    if (e2 != std::errc() || p2 != end) return std::nullopt;
    return id;
}

Status encode_frame(const FrameView& f, std::vector<uint8_t>& out) {
    auto too_big = [](const char* field, size_t n, size_t max) {
        return make_error(Errc::invalid_argument, std::string("frame field ") + field + " is " + std::to_string(n) +
                                                      " bytes, the format holds " + std::to_string(max));
    };
    if (f.source_pool.size() > kMaxName) return too_big("source pool", f.source_pool.size(), kMaxName);
    if (f.topic.size() > kMaxName) return too_big("topic", f.topic.size(), kMaxName);
    if (f.bucket.size() > kMaxName) return too_big("bucket", f.bucket.size(), kMaxName);
    if (f.object_key.size() > kMaxObjectKey) return too_big("object key", f.object_key.size(), kMaxObjectKey);
    if (f.content_type.size() > kMaxName) return too_big("content type", f.content_type.size(), kMaxName);
    if (f.headers.size() > 0xffff) return too_big("header count", f.headers.size(), 0xffff);
    if (f.metadata.size() > 0xffff) return too_big("metadata count", f.metadata.size(), 0xffff);
    for (const auto& h : f.headers)
        if (h.name.size() > 0xffff) return too_big("header name", h.name.size(), 0xffff);
    for (const auto& [k, v] : f.metadata)
        if (k.size() > 0xffff || v.size() > 0xffff) return too_big("metadata entry", k.size() + v.size(), 0xffff);
    if (f.object_data.size() > 0xffffffffu) return too_big("object", f.object_data.size(), 0xffffffffu);

    out.clear();
    out.reserve(kHeaderBytes + 128 + f.key.size() + f.value.size() + f.object_data.size());
    Writer w(out);
    w.u32(kFrameMagic);
    w.u16(kFrameVersion);
    w.u16(uint16_t((f.has_object ? kFlagObject : 0) | (f.object_missing ? kFlagObjectMissing : 0)));
    w.u32(0);  // body length, patched below
    w.u32(0);  // reserved
    w.u64(f.source_pool_incarnation);
    w.u64(f.topic_incarnation);
    w.u64(f.offset);
    w.u64(f.timestamp_ns);
    w.u32(f.partition);
    w.str16(f.source_pool);
    w.str16(f.topic);
    w.bytes32(f.key);
    w.u32(uint32_t(f.headers.size()));
    for (const auto& h : f.headers) {
        w.str16(h.name);
        w.bytes32(h.value);
    }
    w.bytes32(f.value);
    if (f.has_object || f.object_missing) {
        w.str16(f.bucket);
        w.u16(uint16_t(f.object_key.size()));
        w.raw(f.object_key.data(), f.object_key.size());
        w.u64(f.object_version);
        w.u64(f.expires_wall_ns);
        w.u32(f.object_crc);
        w.str16(f.content_type);
        w.u8(uint8_t(f.identity.kind));
        w.u64(f.identity.pool_incarnation);
        w.u64(f.identity.version);
        w.u32(uint32_t(f.metadata.size()));
        for (const auto& [k, v] : f.metadata) {
            w.str16(k);
            w.str16(v);
        }
        w.bytes32(f.object_data);
    }
    const size_t body = out.size() - kHeaderBytes;
    if (body > 0xffffffffu) return too_big("frame", body, 0xffffffffu);
    w.patch_u32(8, uint32_t(body));
    w.u32(crc32(out.data(), out.size()));
    return {};
}

Result<FrameView> decode_frame(std::span<const uint8_t> bytes, const FrameLimits& limits) {
    if (bytes.size() > limits.max_frame_bytes)
        return make_error(Errc::message_too_large, "frame of " + std::to_string(bytes.size()) + " bytes exceeds the limit of " +
                                                       std::to_string(limits.max_frame_bytes));
    if (bytes.size() < 4 || load_le32(bytes.data()) != kFrameMagic)
        return make_error(Errc::corrupt, "not a fabric-shm bridge frame (" + std::to_string(bytes.size()) +
                                             " bytes without the frame magic)");
    if (bytes.size() < kHeaderBytes + kTrailerBytes)
        return make_error(Errc::corrupt, "frame of " + std::to_string(bytes.size()) + " bytes is shorter than its " +
                                             std::to_string(kHeaderBytes + kTrailerBytes) + "-byte header and trailer");
    const uint16_t version = uint16_t(bytes[4] | bytes[5] << 8);
    if (version != kFrameVersion)
        return make_error(Errc::version_mismatch, "frame format version " + std::to_string(version) + ", this build reads " +
                                                      std::to_string(kFrameVersion));
    const uint16_t flags = uint16_t(bytes[6] | bytes[7] << 8);
    const uint32_t body = load_le32(bytes.data() + 8);
    if (uint64_t(body) + kHeaderBytes + kTrailerBytes != bytes.size())
        return make_error(Errc::corrupt, "frame body length " + std::to_string(body) + " does not match the " +
                                             std::to_string(bytes.size()) + "-byte message");
    const uint32_t stored_crc = load_le32(bytes.data() + kHeaderBytes + body);
    const uint32_t crc = crc32(bytes.data(), kHeaderBytes + body);
    if (crc != stored_crc)
        return make_error(Errc::corrupt, "frame CRC mismatch (stored " + std::to_string(stored_crc) + ", computed " +
                                             std::to_string(crc) + ")");
    Reader r(bytes.subspan(kHeaderBytes, body));
    FrameView f;
    FABRIC_READ(pool_inc, r.uint<uint64_t>("source pool incarnation"));
    FABRIC_READ(topic_inc, r.uint<uint64_t>("topic incarnation"));
    FABRIC_READ(offset, r.uint<uint64_t>("offset"));
    FABRIC_READ(ts, r.uint<uint64_t>("timestamp"));
    FABRIC_READ(partition, r.uint<uint32_t>("partition"));
    FABRIC_READ(source_pool, r.str16("source pool", kMaxName));
    FABRIC_READ(topic, r.str16("topic", kMaxName));
    FABRIC_READ(key, r.bytes32("key", kMaxField));
    FABRIC_READ(header_count, r.uint<uint32_t>("header count"));
    if (header_count > limits.max_headers)
        return make_error(Errc::corrupt, "frame has " + std::to_string(header_count) + " headers, at most " +
                                             std::to_string(limits.max_headers) + " allowed");
    f.source_pool_incarnation = pool_inc;
    f.topic_incarnation = topic_inc;
    f.offset = offset;
    f.timestamp_ns = ts;
    f.partition = partition;
    f.source_pool = source_pool;
    f.topic = topic;
    f.key = key;
    f.headers.reserve(header_count);
    for (uint32_t i = 0; i < header_count; ++i) {
        FABRIC_READ(name, r.str16("header name", 0xffff));
        FABRIC_READ(value, r.bytes32("header value", kMaxField));
        f.headers.push_back({name, as_text(value)});
    }
    FABRIC_READ(value, r.bytes32("value", kMaxField));
    f.value = value;
    f.has_object = (flags & kFlagObject) != 0;
    f.object_missing = (flags & kFlagObjectMissing) != 0;
    if (f.has_object || f.object_missing) {
        FABRIC_READ(bucket, r.str16("bucket", kMaxName));
        FABRIC_READ(okey, r.str16("object key", kMaxObjectKey));
        FABRIC_READ(oversion, r.uint<uint64_t>("object version"));
        FABRIC_READ(expires, r.uint<uint64_t>("object expiry"));
        FABRIC_READ(ocrc, r.uint<uint32_t>("object crc"));
        FABRIC_READ(ctype, r.str16("content type", kMaxName));
        FABRIC_READ(ikind, r.uint<uint8_t>("identity kind"));
        FABRIC_READ(iinc, r.uint<uint64_t>("identity incarnation"));
        FABRIC_READ(iversion, r.uint<uint64_t>("identity version"));
        FABRIC_READ(meta_count, r.uint<uint32_t>("metadata count"));
        if (meta_count > limits.max_metadata)
            return make_error(Errc::corrupt, "frame has " + std::to_string(meta_count) + " metadata entries, at most " +
                                                 std::to_string(limits.max_metadata) + " allowed");
        if (ikind != 0 && ikind != uint8_t(IdentityKind::source) && ikind != uint8_t(IdentityKind::result))
            return make_error(Errc::corrupt, "frame object identity kind " + std::to_string(ikind) + " is unknown");
        f.bucket = bucket;
        f.object_key = okey;
        f.object_version = oversion;
        f.expires_wall_ns = expires;
        f.object_crc = ocrc;
        f.content_type = ctype;
        f.identity = {IdentityKind(ikind), iinc, iversion};
        for (uint32_t i = 0; i < meta_count; ++i) {
            FABRIC_READ(k, r.str16("metadata key", 0xffff));
            FABRIC_READ(v, r.str16("metadata value", 0xffff));
            f.metadata.emplace_back(k, v);
        }
        FABRIC_READ(data, r.bytes32("object bytes", limits.max_object_bytes));
        f.object_data = data;
        if (f.has_object && crc32(data.data(), data.size()) != f.object_crc)
            return make_error(Errc::corrupt, "object bytes of " + std::string(bucket) + "/" + std::string(okey) +
                                                 " do not match their CRC");
    }
    if (r.left() != 0)
        return make_error(Errc::corrupt, "frame has " + std::to_string(r.left()) + " unexpected bytes after its fields");
    return f;
}

std::vector<uint8_t> encode_manifest(const ChunkManifest& m) {
    std::vector<uint8_t> out;
    Writer w(out);
    w.u32(kManifestMagic);
    w.u16(kFrameVersion);
    w.u16(m.flags);
    w.u64(m.frame_bytes);
    w.u32(m.chunks);
    w.u32(m.chunk_bytes);
    w.u32(m.frame_crc);
    w.u32(crc32(out.data(), out.size()));
    return out;
}

Result<std::optional<ChunkManifest>> decode_manifest(std::span<const uint8_t> bytes, const FrameLimits& limits) {
    if (bytes.size() < 4 || load_le32(bytes.data()) != kManifestMagic) return std::optional<ChunkManifest>();
    if (bytes.size() != kManifestBytes)
        return make_error(Errc::corrupt, "chunk manifest of " + std::to_string(bytes.size()) + " bytes (expected " +
                                             std::to_string(kManifestBytes) + ")");
    if (crc32(bytes.data(), kManifestBytes - 4) != load_le32(bytes.data() + kManifestBytes - 4))
        return make_error(Errc::corrupt, "chunk manifest CRC mismatch");
    Reader r(bytes.subspan(4));
    FABRIC_READ(version, r.uint<uint16_t>("manifest version"));
    FABRIC_READ(flags, r.uint<uint16_t>("manifest flags"));
    if (version != kFrameVersion)
        return make_error(Errc::version_mismatch, "chunk manifest version " + std::to_string(version) +
                                                      ", this build reads " + std::to_string(kFrameVersion));
    ChunkManifest m;
    FABRIC_READ(total, r.uint<uint64_t>("frame bytes"));
    FABRIC_READ(chunks, r.uint<uint32_t>("chunks"));
    FABRIC_READ(chunk_bytes, r.uint<uint32_t>("chunk bytes"));
    FABRIC_READ(frame_crc, r.uint<uint32_t>("frame crc"));
    m.frame_bytes = total;
    m.chunks = chunks;
    m.chunk_bytes = chunk_bytes;
    m.frame_crc = frame_crc;
    m.flags = flags;
    if (m.frame_bytes > limits.max_frame_bytes)
        return make_error(Errc::message_too_large, "chunked frame of " + std::to_string(m.frame_bytes) +
                                                       " bytes exceeds the limit of " + std::to_string(limits.max_frame_bytes));
    if (m.chunk_bytes == 0 || m.chunks == 0 ||
        uint64_t(m.chunks) != (m.frame_bytes + m.chunk_bytes - 1) / m.chunk_bytes)
        return make_error(Errc::corrupt, "chunk manifest: " + std::to_string(m.chunks) + " chunks of " +
                                             std::to_string(m.chunk_bytes) + " bytes cannot hold " +
                                             std::to_string(m.frame_bytes) + " bytes");
    return std::optional<ChunkManifest>(m);
}

std::string message_id(uint64_t pool_incarnation, uint64_t topic_incarnation, uint32_t partition, uint64_t offset) {
    // Once per exported message: formatted by hand (snprintf showed in the exporter's profile).
    std::string id;
    id.reserve(4 + 16 + 1 + 16 + 1 + 10 + 1 + 20);
    auto hex16 = [&](uint64_t v) {
        for (int i = 15; i >= 0; --i) id += "0123456789abcdef"[(v >> (4 * i)) & 0xf];
    };
    auto dec = [&](uint64_t v) {
        char num[24];
        id.append(num, std::to_chars(num, num + sizeof num, v).ptr);
    };
    id += "fs1-";
    hex16(pool_incarnation);
    id += '-';
    hex16(topic_incarnation);
    id += '-';
    dec(partition);
    id += '-';
    dec(offset);
    return id;
}

Status validate_stream_name(std::string_view what, std::string_view name) {
    if (name.empty() || name.size() > 64)
        return make_error(Errc::invalid_name, std::string(what) + " '" + std::string(name) + "' must be 1-64 characters of [A-Za-z0-9_-]");
    for (char c : name)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return make_error(Errc::invalid_name, std::string(what) + " '" + std::string(name) +
                                                      "' must be 1-64 characters of [A-Za-z0-9_-] (NATS splits subjects on '.')");
    return {};
}

std::string stream_name_for_topic(std::string_view topic) {
    std::string s(topic);
    for (char& c : s)
        if (c == '.') c = '_';
    return s;
}

std::string message_subject(std::string_view stream, uint32_t partition) {
    return "fabric." + std::string(stream) + ".m." + std::to_string(partition);
}
std::string message_filter(std::string_view stream) { return "fabric." + std::string(stream) + ".m.>"; }
std::string chunk_subject(std::string_view stream, std::string_view message_id, uint32_t index) {
    return "fabric." + std::string(stream) + ".c." + std::string(message_id) + "." + std::to_string(index);
}
std::string chunk_set_name(std::string_view message_id, const ChunkManifest& m) {
    std::string name(message_id);
    if ((m.flags & kManifestChunksByContent) == 0) return name;
    char tail[32];
    std::snprintf(tail, sizeof tail, "-%08x-%u", unsigned(m.frame_crc), unsigned(m.chunk_bytes));
    return name + tail;
}
Status validate_manifest_id(std::string_view id) {
    bool ok = !id.empty() && id.size() <= 128;
    for (size_t i = 0; ok && i < id.size(); ++i) {
        const char c = id[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    }
    if (ok) return {};
    std::string shown;  // the id as read, printable: it goes into logs and the dead letter's reason
    for (size_t i = 0; i < std::min<size_t>(id.size(), 64); ++i) {
        const unsigned char c = static_cast<unsigned char>(id[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            shown += char(c);
        } else {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\x%02x", unsigned(c));
            shown += esc;
        }
    }
    if (id.size() > 64) shown += "...";
    return make_error(Errc::corrupt, "manifest message id '" + shown + "' (" + std::to_string(id.size()) +
                                         " bytes) is not 1-128 characters of [A-Za-z0-9_-]");
}

std::string stream_subjects(std::string_view stream) { return "fabric." + std::string(stream) + ".>"; }

}  // namespace fabric_shm::bridge
