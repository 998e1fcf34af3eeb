// SPDX-License-Identifier: MIT
#include "fabric_shm/names.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "name_rule.h"

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

/// Why `name` breaks the rule (detail::name_ok said it does), naming the value and the limit.
[[gnu::cold, gnu::noinline]] Error name_error(std::string_view what, std::string_view name) {
    constexpr const char* rule = " (rule: 1-64 characters of [A-Za-z0-9._-], not starting with '.' or '-')";
    if (name.empty()) return make_error(Errc::invalid_name, "empty " + std::string(what) + " name" + rule);
    if (name.size() > kMaxNameLength)
        return make_error(Errc::invalid_name, std::string(what) + " name '" + printable(name) + "' is " +
                                                  std::to_string(name.size()) + " characters, longer than 64" + rule);
    if (name[0] == '.' || name[0] == '-')
        return make_error(Errc::invalid_name,
                          std::string(what) + " name '" + printable(name) + "' starts with '" + name[0] + "'" + rule);
    // Length and first character pass, so a character breaks the rule.
    return make_error(Errc::invalid_name,
                      std::string(what) + " name '" + printable(name) + "' contains a character outside the rule" + rule);
}

}  // namespace

Status validate_name(std::string_view what, std::string_view name) {
    if (detail::name_ok(name)) return {};
    return name_error(what, name);
}

std::string_view default_pool_name() noexcept {
    const char* env = std::getenv("FABRIC_SHM_POOL");
    if (env && *env) return env;
    return "default";
}

}  // namespace fabric_shm
