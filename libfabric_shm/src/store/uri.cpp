// SPDX-License-Identifier: MIT
// fabric://POOL/BUCKET/KEY parsing and formatting.
#include "fabric_shm/uri.h"

#include <cstdio>

#include "fabric_shm/names.h"

namespace fabric_shm {

namespace {

constexpr std::string_view kScheme = "fabric://";

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

Result<FabricUri> FabricUri::parse(std::string_view text) {
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
    return make_checked(text, rest.substr(0, s1), rest.substr(s1 + 1, s2 - s1 - 1), rest.substr(s2 + 1));
}

Result<FabricUri> FabricUri::make(std::string_view pool, std::string_view bucket, std::string_view key) {
    const std::string text = std::string(kScheme) + std::string(pool) + "/" + std::string(bucket) + "/" + std::string(key);
    return make_checked(text, pool, bucket, key);
}

Result<FabricUri> FabricUri::make_checked(std::string_view text, std::string_view pool, std::string_view bucket,
                                          std::string_view key) {
    if (auto st = validate_name("pool", pool); !st) return uri_error(text, st.error().message);
    if (auto st = validate_name("bucket", bucket); !st) return uri_error(text, st.error().message);
    if (auto st = validate_key(text, key); !st) return std::move(st).error();
    FabricUri uri;
    uri.pool_ = std::string(pool);
    uri.bucket_ = std::string(bucket);
    uri.key_ = std::string(key);
    return uri;
}

std::string FabricUri::to_string() const { return std::string(kScheme) + pool_ + "/" + bucket_ + "/" + key_; }

std::string FabricUri::object_key() const { return bucket_ + "/" + key_; }

}  // namespace fabric_shm
