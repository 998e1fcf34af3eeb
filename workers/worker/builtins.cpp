// SPDX-License-Identifier: MIT
// Built-in processors: copy, upper, crc32.
#include "builtins.h"

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

// The CRC as eight lower-case hexadecimal digits and a newline (what printf's "%08x\n" writes,
// at a fiftieth of its cost per message).
void crc(std::span<const uint8_t> in, std::vector<uint8_t>& out) {
    const uint32_t v = fabric_shm::crc32(in.data(), in.size());
    out.resize(9);
    for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t("0123456789abcdef"[(v >> (28 - 4 * i)) & 15]);
    out[8] = '\n';
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
