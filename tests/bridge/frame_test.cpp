// SPDX-License-Identifier: MIT
// The bridge's wire frame: what the exporter encodes is what the importer decodes, and bytes
// that were damaged, truncated or padded on the way are refused with a typed error naming
// the field, never read out of bounds.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "fabric_shm/object_store.h"
#include "fabric_shm_bridge/frame.h"

using namespace fabric_shm;
using namespace fabric_shm::bridge;

namespace {

std::span<const uint8_t> bytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }
std::string text(std::span<const uint8_t> s) { return {reinterpret_cast<const char*>(s.data()), s.size()}; }

struct Sample {
    std::string key = "synthetic-000042", value = "fabric://a/uploads/synthetic-000042";
    std::string object = std::string(3000, 'x');
    std::string meta_v = "fabric://a/uploads/in";
    FrameView frame() const {
        FrameView f;
        f.source_pool_incarnation = 0x1122334455667788ull;
        f.source_pool = "a";
        f.topic = "uploads";
        f.topic_incarnation = 0x99aabbccddeeff00ull;
        f.partition = 3;
        f.offset = 123456789012ull;
        f.timestamp_ns = 1700000000000000000ull;
        f.key = bytes(key);
        f.value = bytes(value);
        f.headers = {{"fabric-version", "7"}, {"fabric-put-ts", "1700000000000000001"}};
        f.has_object = true;
        f.bucket = "uploads";
        f.object_key = "synthetic-000042";
        f.content_type = "text/plain";
        f.object_version = 7;
        f.expires_wall_ns = 0;
        f.object_data = bytes(object);
        f.object_crc = crc32(object.data(), object.size());
        f.identity = {IdentityKind::result, 0xabcdefull, 9};
        f.metadata = {{"input-uri", meta_v}, {"input-version", "9"}};
        return f;
    }
};

}  // namespace

TEST_CASE("bridge frame: every field survives encode and decode") {
    Sample s;
    std::vector<uint8_t> buf;
    REQUIRE(encode_frame(s.frame(), buf).ok());
    auto d = decode_frame(buf);
    REQUIRE_MESSAGE(d.ok(), d.error().message);
    CHECK(d->source_pool_incarnation == 0x1122334455667788ull);
    CHECK(d->source_pool == "a");
    CHECK(d->topic == "uploads");
    CHECK(d->topic_incarnation == 0x99aabbccddeeff00ull);
    CHECK(d->partition == 3);
    CHECK(d->offset == 123456789012ull);
    CHECK(d->timestamp_ns == 1700000000000000000ull);
    CHECK(text(d->key) == s.key);
    CHECK(text(d->value) == s.value);
    REQUIRE(d->headers.size() == 2);
    CHECK(d->headers[1].name == "fabric-put-ts");
    CHECK(d->headers[1].value == "1700000000000000001");
    CHECK(d->has_object);
    CHECK_FALSE(d->object_missing);
    CHECK(d->bucket == "uploads");
    CHECK(d->object_key == "synthetic-000042");
    CHECK(d->content_type == "text/plain");
    CHECK(d->object_version == 7);
    CHECK(d->identity == ObjectIdentity{IdentityKind::result, 0xabcdefull, 9});
    REQUIRE(d->metadata.size() == 2);
    CHECK(d->metadata[0].second == s.meta_v);
    CHECK(text(d->object_data) == s.object);
}

TEST_CASE("bridge frame: a message without an object, and one whose object was missing") {
    Sample s;
    FrameView f = s.frame();
    f.has_object = false;
    f.object_data = {};
    f.metadata.clear();
    std::vector<uint8_t> buf;
    REQUIRE(encode_frame(f, buf).ok());
    auto plain = decode_frame(buf);
    REQUIRE(plain.ok());
    CHECK_FALSE(plain->has_object);
    CHECK(plain->bucket.empty());
    f.object_missing = true;
    REQUIRE(encode_frame(f, buf).ok());
    auto missing = decode_frame(buf);
    REQUIRE(missing.ok());
    CHECK(missing->object_missing);
    CHECK(missing->object_key == "synthetic-000042");
}

TEST_CASE("bridge frame: any flipped byte, any truncation and trailing bytes are refused as corrupt") {
    Sample s;
    std::vector<uint8_t> good;
    REQUIRE(encode_frame(s.frame(), good).ok());
    for (size_t i = 0; i < good.size(); i += 7) {
        std::vector<uint8_t> bad = good;
        bad[i] ^= 0x5a;
        auto d = decode_frame(bad);
        CHECK_MESSAGE(!d.ok(), "byte " << i);
        if (!d.ok()) CHECK((d.code() == Errc::corrupt || d.code() == Errc::version_mismatch));
    }
    for (size_t n : {size_t(0), size_t(3), size_t(19), good.size() / 2, good.size() - 1}) {
        auto d = decode_frame(std::span<const uint8_t>(good.data(), n));
        CHECK_FALSE(d.ok());
        CHECK(d.code() == Errc::corrupt);
    }
    std::vector<uint8_t> padded = good;
    padded.push_back(0);
    CHECK(decode_frame(padded).code() == Errc::corrupt);
    const std::string garbage = "not a frame at all, just bytes on the stream";
    auto g = decode_frame(bytes(garbage));
    CHECK(g.code() == Errc::corrupt);
    CHECK(g.error().message.find("not a fabric-shm bridge frame") != std::string::npos);
}

TEST_CASE("bridge frame: lengths are checked against the limits before anything is read") {
    Sample s;
    std::vector<uint8_t> buf;
    REQUIRE(encode_frame(s.frame(), buf).ok());
    FrameLimits small;
    small.max_frame_bytes = 1000;
    auto d = decode_frame(buf, small);
    CHECK(d.code() == Errc::message_too_large);
    CHECK(d.error().message.find("1000") != std::string::npos);
    FrameLimits tiny_object;
    tiny_object.max_object_bytes = 100;
    CHECK(decode_frame(buf, tiny_object).code() == Errc::corrupt);
    FrameLimits few_headers;
    few_headers.max_headers = 1;
    CHECK(decode_frame(buf, few_headers).code() == Errc::corrupt);
}

TEST_CASE("bridge frame: encoding refuses fields the format cannot hold, naming them") {
    Sample s;
    FrameView f = s.frame();
    const std::string long_topic(65, 't');
    f.topic = long_topic;
    std::vector<uint8_t> buf;
    Status st = encode_frame(f, buf);
    CHECK(st.code() == Errc::invalid_argument);
    CHECK(st.error().message.find("topic") != std::string::npos);
}

TEST_CASE("bridge chunk manifest: round trip, not-a-manifest, and inconsistent geometry") {
    ChunkManifest m{1000000, 4, 262144, 0xdeadbeef};
    const auto enc = encode_manifest(m);
    auto d = decode_manifest(enc);
    REQUIRE(d.ok());
    REQUIRE(d->has_value());
    CHECK((*d)->frame_bytes == 1000000);
    CHECK((*d)->chunks == 4);
    CHECK((*d)->frame_crc == 0xdeadbeef);
    Sample s;
    std::vector<uint8_t> frame;
    REQUIRE(encode_frame(s.frame(), frame).ok());
    auto not_manifest = decode_manifest(frame);
    REQUIRE(not_manifest.ok());
    CHECK_FALSE(not_manifest->has_value());
    ChunkManifest wrong{1000000, 2, 262144, 1};  // 2 chunks of 256 KiB cannot hold 1 MB
    CHECK(decode_manifest(encode_manifest(wrong)).code() == Errc::corrupt);
    auto flipped = enc;
    flipped[9] ^= 1;
    CHECK(decode_manifest(flipped).code() == Errc::corrupt);
    FrameLimits limits;
    limits.max_frame_bytes = 4096;
    CHECK(decode_manifest(enc, limits).code() == Errc::message_too_large);
}

TEST_CASE("bridge chunk manifest: chunks of two cuts of one message never share a name") {
    ChunkManifest cut{150000, 3, 65536, 0x0badf00d, kManifestChunksByContent};
    auto d = decode_manifest(encode_manifest(cut));
    REQUIRE(d.ok());
    REQUIRE(d->has_value());
    CHECK((*d)->flags == kManifestChunksByContent);
    CHECK(chunk_set_name("fs1-x", **d) == "fs1-x-0badf00d-65536");
    ChunkManifest halves = cut;
    halves.chunk_bytes = 32768;
    halves.chunks = 5;
    CHECK(chunk_set_name("fs1-x", halves) != chunk_set_name("fs1-x", cut));
    ChunkManifest other_content = cut;
    other_content.frame_crc = 1;
    CHECK(chunk_set_name("fs1-x", other_content) != chunk_set_name("fs1-x", cut));
    ChunkManifest older{150000, 3, 65536, 0x0badf00d};  // an older exporter's: chunks by message id
    CHECK(chunk_set_name("fs1-x", older) == "fs1-x");
}

TEST_CASE("bridge chunk manifest: a message id the exporter writes is accepted; one that would break a chunk "
          "subject or the client's request is refused as corrupt, shown printable") {
    CHECK(validate_manifest_id(message_id(0xfeedfacecafebeefull, 1, 63, 18446744073709551615ull)).ok());
    for (std::string bad : {std::string(""), std::string("a.b"), std::string("a\"b"), std::string("a\\b"),
                            std::string("a b"), std::string(129, 'x'), std::string("a\x01b", 3)}) {
        CAPTURE(bad);
        Status st = validate_manifest_id(bad);
        CHECK(st.code() == Errc::corrupt);
        for (char c : st.error().message) CHECK((c >= 0x20 && c < 0x7f));
    }
}

TEST_CASE("bridge identity and message id: stable text forms") {
    const ObjectIdentity id{IdentityKind::source, 0x0123456789abcdefull, 42};
    CHECK(id.to_string() == "s/0123456789abcdef/42");
    auto back = ObjectIdentity::parse(id.to_string());
    REQUIRE(back.has_value());
    CHECK(*back == id);
    CHECK_FALSE(ObjectIdentity::parse("x/0123456789abcdef/42").has_value());
    CHECK_FALSE(ObjectIdentity::parse("s/0123456789abcdef/").has_value());
    CHECK_FALSE(ObjectIdentity::parse("s/0123456789abcdeg/1").has_value());
    CHECK(message_id(1, 0xff, 2, 3) == "fs1-0000000000000001-00000000000000ff-2-3");
    CHECK(stream_name_for_topic("object.events") == "object_events");
    CHECK(validate_stream_name("stream", "UP-1_x").ok());
    CHECK(validate_stream_name("stream", "a.b").code() == Errc::invalid_name);
    CHECK(validate_stream_name("stream", "").code() == Errc::invalid_name);
    CHECK(message_subject("UP", 3) == "fabric.UP.m.3");
    CHECK(chunk_subject("UP", "fs1-x", 2) == "fabric.UP.c.fs1-x.2");
}
