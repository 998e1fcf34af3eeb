// SPDX-License-Identifier: MIT
// Built-in processors: copy, upper, crc32.
#include "builtins.h"

#include <cstdio>

#include "fabric_shm/object_store.h"

namespace fabric_shm::workers {

namespace {

// Each writes into `out` (empty, its capacity kept from the previous message: run() reuses it).
void copy(std::span<const uint8_t> in, std::vector<uint8_t>& out) { out.assign(in.begin(), in.end()); }

void upper(std::span<const uint8_t> in, std::vector<uint8_t>& out) {
    out.assign(in.begin(), in.end());
    for (uint8_t& c : out)
        if (c >= 'a' && c <= 'z') c = uint8_t(c - 'a' + 'A');
}

void crc(std::span<const uint8_t> in, std::vector<uint8_t>& out) {
    char text[16];
    const int n = std::snprintf(text, sizeof text, "%08x\n", unsigned(fabric_shm::crc32(in.data(), in.size())));
    out.assign(text, text + n);
}

struct Builtin {
    std::string_view name;
    BuiltinFn fn;
};
constexpr Builtin kBuiltins[] = {{"copy", copy}, {"upper", upper}, {"crc32", crc}};

}  // namespace

Result<BuiltinFn> find_builtin(std::string_view name) {
    for (const Builtin& b : kBuiltins)
        if (b.name == name) return b.fn;
    return make_error(Errc::invalid_argument,
                      "unknown --builtin '" + std::string(name) + "' (available: " + builtin_names() + ")");
}

std::string builtin_names() {
    std::string s;
    for (const Builtin& b : kBuiltins) s += (s.empty() ? "" : ", ") + std::string(b.name);
    return s;
}

}  // namespace fabric_shm::workers
