// SPDX-License-Identifier: MIT
// Fuzzes every parser of the CLI's text inputs: parse_duration_ns (--ttl, --watch, --timeout),
// parse_size_bytes (--size, --max-object-size) and validate_name (pool, bucket, topic, group).
// The first byte picks the parser; the rest is the text. Properties: never crashes; every
// rejection is a typed error with a message quoting the text; accepted values are sane.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fabric_shm/clock.h"
#include "fabric_shm/names.h"

using namespace fabric_shm;

namespace {

bool name_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

void check_name(std::string_view text) {
    Status s = validate_name("pool", text);
    bool expect = !text.empty() && text.size() <= kMaxNameLength && text[0] != '.' && text[0] != '-';
    for (unsigned char c : text) expect = expect && name_char(c);
    if (bool(s) != expect) std::abort();  // the rule in names.h, restated
    if (!s && (s.code() != Errc::invalid_name || s.error().message.empty())) std::abort();
}

void check_duration(std::string_view text) {
    Result<uint64_t> d = parse_duration_ns(text);
    if (!d) {
        if (d.code() != Errc::invalid_argument || d.error().message.empty()) std::abort();
        return;
    }
    if (text.empty() || d.value() >= UINT64_MAX / 2) std::abort();
    (void)format_duration_ns(d.value());  // what tools print next to it
}

void check_size(std::string_view text) {
    Result<uint64_t> s = parse_size_bytes(text);
    if (!s) {
        if (s.code() != Errc::invalid_argument || s.error().message.empty()) std::abort();
        return;
    }
    // A bare number means bytes.
    bool all_digits = !text.empty();
    for (unsigned char c : text) all_digits = all_digits && c >= '0' && c <= '9';
    if (all_digits && std::to_string(s.value()) != std::string(text).erase(0, std::min(text.find_first_not_of('0'), text.size() - 1)))
        std::abort();
    (void)format_bytes(s.value());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
    switch (data[0] % 3) {
        case 0: check_duration(text); break;
        case 1: check_size(text); break;
        default: check_name(text); break;
    }
    return 0;
}
