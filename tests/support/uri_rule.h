// SPDX-License-Identifier: MIT
// The naming and URI rules as the documentation states them (docs/store.md, names.h, uri.h),
// written the plainest way: a character at a time, split at the first two '/'. Tests compare
// the library's parser, formatter and name check against these, so a faster scan can never
// accept or split differently than the rule.
#pragma once

#include <optional>
#include <string_view>

#include "fabric_shm/names.h"
#include "fabric_shm/uri.h"

namespace fabric_shm::test {

inline bool rule_name_ok(std::string_view n) {
    if (n.empty() || n.size() > kMaxNameLength || n[0] == '.' || n[0] == '-') return false;
    for (char c : n) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                        c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

inline bool rule_key_ok(std::string_view k) {
    if (k.empty() || k.size() > kMaxKeyLength) return false;
    for (char c : k)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
    for (size_t start = 0;;) {
        const size_t slash = k.find('/', start);
        const std::string_view seg = k.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
        if (seg.empty() || seg == "." || seg == "..") return false;
        if (slash == std::string_view::npos) return true;
        start = slash + 1;
    }
}

struct RuleParts {
    std::string_view pool, bucket, key;
};

/// The parts of a valid "fabric://POOL/BUCKET/KEY", or nothing.
inline std::optional<RuleParts> rule_parse(std::string_view text) {
    constexpr std::string_view scheme = "fabric://";
    if (text.substr(0, scheme.size()) != scheme) return std::nullopt;
    const std::string_view rest = text.substr(scheme.size());
    const size_t s1 = rest.find('/');
    if (s1 == std::string_view::npos) return std::nullopt;
    const size_t s2 = rest.find('/', s1 + 1);
    if (s2 == std::string_view::npos) return std::nullopt;
    RuleParts p{rest.substr(0, s1), rest.substr(s1 + 1, s2 - s1 - 1), rest.substr(s2 + 1)};
    if (!rule_name_ok(p.pool) || !rule_name_ok(p.bucket) || !rule_key_ok(p.key)) return std::nullopt;
    return p;
}

}  // namespace fabric_shm::test
