// SPDX-License-Identifier: MIT
// fabric://POOL/BUCKET/KEY parsing and formatting.
#include "fabric_shm/uri.h"

#include <cstdio>
#include <cstring>
#include <functional>

#include "fabric_shm/names.h"
#include "name_rule.h"

namespace fabric_shm {

namespace {

constexpr std::string_view kScheme = detail::kUriScheme;

std::string quoted(std::string_view s) {
    std::string out = "'";
    for (unsigned char c : s.substr(0, 120)) {
        if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += char(c);
        }
    }
    if (s.size() > 120) out += "...";
    return out + "'";
}

struct Parts {
    std::string_view pool, bucket, key;
};
/// The parts of `text`, split where split_valid_uri found them.
Parts parts_of(std::string_view text, const detail::UriSplit& at) {
    const char* p = text.data();
    return {std::string_view(p + kScheme.size(), at.pool_end - kScheme.size()),
            std::string_view(p + at.pool_end + 1, at.bucket_end - at.pool_end - 1),
            std::string_view(p + at.bucket_end + 1, text.size() - at.bucket_end - 1)};
}

Error uri_error(std::string_view text, const std::string& why) {
    return make_error(Errc::invalid_uri, "invalid URI " + quoted(text) + ": " + why);
}

Status validate_key(std::string_view uri_text, std::string_view key) {
    if (key.empty()) return uri_error(uri_text, "empty key (expected fabric://POOL/BUCKET/KEY)");
    if (key.size() > kMaxKeyLength)
        return uri_error(uri_text, "key of " + std::to_string(key.size()) + " bytes exceeds the maximum of " +
                                       std::to_string(kMaxKeyLength));
    for (size_t i = 0; i < key.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(key[i]);
        if (c < 0x20 || c == 0x7f)
            return uri_error(uri_text, "control character at key offset " + std::to_string(i));
    }
    size_t start = 0;
    for (;;) {
        const size_t slash = key.find('/', start);
        const std::string_view seg = key.substr(start, slash == std::string_view::npos ? key.size() - start : slash - start);
        if (seg.empty()) return uri_error(uri_text, "empty key segment (\"//\", or a leading or trailing '/')");
        if (seg == "." || seg == "..") return uri_error(uri_text, "key segment '" + std::string(seg) + "' is not allowed");
        if (slash == std::string_view::npos) break;
        start = slash + 1;
    }
    return {};
}

}  // namespace

/// The parts of "fabric://pool/bucket/key" in `text`, or the error naming what is missing.
Result<FabricUriView> FabricUriView::split(std::string_view text) {
    if (text.substr(0, kScheme.size()) != kScheme) {
        const size_t colon = text.find("://");
        if (colon != std::string_view::npos)
            return uri_error(text, "scheme '" + std::string(text.substr(0, colon)) + "' is not fabric://");
        return uri_error(text, "expected fabric://POOL/BUCKET/KEY");
    }
    const std::string_view rest = text.substr(kScheme.size());
    const size_t s1 = rest.find('/');
    if (s1 == std::string_view::npos) return uri_error(text, "missing bucket and key (expected fabric://POOL/BUCKET/KEY)");
    const size_t s2 = rest.find('/', s1 + 1);
    if (s2 == std::string_view::npos) return uri_error(text, "missing key (expected fabric://POOL/BUCKET/KEY)");
    return parse_parts_unchecked(rest.substr(0, s1), rest.substr(s1 + 1, s2 - s1 - 1), rest.substr(s2 + 1));
}

Status FabricUriView::check(std::string_view text, std::string_view pool, std::string_view bucket, std::string_view key) {
    if (detail::name_ok(pool) && detail::name_ok(bucket) && detail::key_ok(key)) return {};
    if (auto st = validate_name("pool", pool); !st) return uri_error(text, st.error().message);
    if (auto st = validate_name("bucket", bucket); !st) return uri_error(text, st.error().message);
    return validate_key(text, key);
}

FabricUriView FabricUriView::parse_parts_unchecked(std::string_view pool, std::string_view bucket,
                                                   std::string_view key) {
    FabricUriView v;
    v.pool_ = pool;
    v.bucket_ = bucket;
    v.key_ = key;
    return v;
}

Result<FabricUriView> FabricUriView::parse(std::string_view text) {
    if (detail::UriSplit at; detail::split_valid_uri(text, at)) {
        const Parts p = parts_of(text, at);
        return parse_parts_unchecked(p.pool, p.bucket, p.key);
    }
    // Refused, or split differently (a pool or bucket with a character outside the rule): the
    // checks that name the reason.
    auto v = split(text);
    if (!v) return v;
    FABRIC_TRY(check(text, v->pool_, v->bucket_, v->key_));
    return v;
}

Result<FabricUriView> FabricUriView::format(std::string& buffer, std::string_view pool, std::string_view bucket,
                                            std::string_view key) {
    // A part inside `buffer` itself (a view an earlier format returned) would be overwritten or
    // freed by the text written below: copied out first (allocates; only then).
    auto inside_buffer = [&](std::string_view part) {
        const char* b = buffer.data();
        return !part.empty() && std::less_equal<const char*>()(b, part.data()) &&
               std::less<const char*>()(part.data(), b + buffer.capacity());
    };
    if (inside_buffer(pool) || inside_buffer(bucket) || inside_buffer(key)) {
        const std::string p(pool), b(bucket), k(key);
        return format(buffer, p, b, k);
    }
    // The rules over the parts as given (a '/' inside the pool or bucket is refused), before
    // the text is written: a 16-byte load of bytes just stored would wait for the stores.
    const size_t at_bucket = kScheme.size() + pool.size() + 1;
    const size_t at_key = at_bucket + bucket.size() + 1;
    if (detail::name_ok(pool) && detail::name_ok(bucket) && detail::key_ok(key)) {
        // One size change and four copies: no growth once the capacity fits.
        buffer.resize(at_key + key.size());
        char* out = buffer.data();
        std::memcpy(out, kScheme.data(), kScheme.size());
        std::memcpy(out + kScheme.size(), pool.data(), pool.size());
        out[at_bucket - 1] = '/';
        std::memcpy(out + at_bucket, bucket.data(), bucket.size());
        out[at_key - 1] = '/';
        std::memcpy(out + at_key, key.data(), key.size());
        return parse_parts_unchecked(std::string_view(out + kScheme.size(), pool.size()),
                                     std::string_view(out + at_bucket, bucket.size()),
                                     std::string_view(out + at_key, key.size()));
    }
    // Refused: the same text, and the checks that name the reason, on the parts as given.
    buffer.assign(kScheme).append(pool).append("/").append(bucket).append("/").append(key);
    const std::string_view text = buffer;
    FabricUriView v = parse_parts_unchecked(text.substr(kScheme.size(), pool.size()), text.substr(at_bucket, bucket.size()),
                                            text.substr(at_key));
    FABRIC_TRY(check(text, v.pool_, v.bucket_, v.key_));
    return v;
}

std::string FabricUriView::to_string() const {
    std::string out;
    out.reserve(kScheme.size() + pool_.size() + bucket_.size() + key_.size() + 2);
    to_string(out);
    return out;
}

void FabricUriView::to_string(std::string& out) const {
    out.assign(kScheme).append(pool_).append("/").append(bucket_).append("/").append(key_);
}

FabricUri FabricUriView::to_uri() const {
    FabricUri uri;
    uri.pool_ = std::string(pool_);
    uri.bucket_ = std::string(bucket_);
    uri.key_ = std::string(key_);
    return uri;
}

Result<FabricUri> FabricUri::parse(std::string_view text) {
    auto v = FabricUriView::parse(text);
    if (!v) return std::move(v).error();
    return v->to_uri();
}

Result<FabricUri> FabricUri::make(std::string_view pool, std::string_view bucket, std::string_view key) {
    // The text is built only to name the URI in an error.
    if (!FabricUriView::check({}, pool, bucket, key)) {
        const std::string text = std::string(kScheme) + std::string(pool) + "/" + std::string(bucket) + "/" + std::string(key);
        FABRIC_TRY(FabricUriView::check(text, pool, bucket, key));
    }
    return FabricUriView::parse_parts_unchecked(pool, bucket, key).to_uri();
}

std::string FabricUri::to_string() const { return view().to_string(); }

std::string FabricUri::object_key() const { return bucket_ + "/" + key_; }

void FabricUri::assign(const FabricUriView& uri) {
    // One FabricUri holding message after message mostly sees the same pool and bucket: a
    // compare of a few bytes is cheaper than the general replace of a string's contents.
    if (pool_ != uri.pool_) pool_.assign(uri.pool_);
    if (bucket_ != uri.bucket_) bucket_.assign(uri.bucket_);
    key_.assign(uri.key_);
}

FabricUriView FabricUri::view() const { return FabricUriView::parse_parts_unchecked(pool_, bucket_, key_); }

}  // namespace fabric_shm
