// SPDX-License-Identifier: MIT
#include "fabric_shm/names.h"

#include <array>
#include <cstdlib>
#include <string>

namespace fabric_shm {

namespace {
std::string printable(std::string_view s) {
    std::string out;
    for (unsigned char c : s.substr(0, 80)) {
        if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += char(c);
        }
    }
    if (s.size() > 80) out += "...";
    return out;
}
/// [A-Za-z0-9._-]: one table load per character (names are checked on every URI parse).
constexpr std::array<bool, 256> kNameChar = [] {
    std::array<bool, 256> t{};
    for (int c = 0; c < 256; ++c)
        t[size_t(c)] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                       c == '_' || c == '-';
    return t;
}();
}  // namespace

Status validate_name(std::string_view what, std::string_view name) {
    // A literal, not a std::string: the rule is only spelled out in errors, and a name checked
    // per message (every URI parse) must not cost an allocation.
    constexpr const char* rule = " (rule: 1-64 characters of [A-Za-z0-9._-], not starting with '.' or '-')";
    if (name.empty()) return make_error(Errc::invalid_name, "empty " + std::string(what) + " name" + rule);
    if (name.size() > kMaxNameLength)
        return make_error(Errc::invalid_name, std::string(what) + " name '" + printable(name) + "' is " +
                                                  std::to_string(name.size()) + " characters, longer than 64" + rule);
    if (name[0] == '.' || name[0] == '-')
        return make_error(Errc::invalid_name,
                          std::string(what) + " name '" + printable(name) + "' starts with '" + name[0] + "'" + rule);
    for (unsigned char c : name) {
        if (!kNameChar[c])
            return make_error(Errc::invalid_name, std::string(what) + " name '" + printable(name) +
                                                      "' contains a character outside the rule" + rule);
    }
    return {};
}

std::string_view default_pool_name() noexcept {
    const char* env = std::getenv("FABRIC_SHM_POOL");
    if (env && *env) return env;
    return "default";
}

}  // namespace fabric_shm
