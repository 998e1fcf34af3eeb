// SPDX-License-Identifier: MIT
// A message's encoded headers ({u16 name length, u16 value length, name, value} each, as the
// producer wrote them into the slot and the consumer copied them out): walked once, however
// many names the caller wants. Private to the library.
#pragma once

#include "private.h"

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace fabric_shm::mq {

/// Calls visit(name, value) for each well-formed header of `raw` in order, until it returns
/// true (then true) or the bytes end or stop making a header (then false). One walk: a
/// lookup by name costs one pass over the headers, not one per header before it.
template <typename Visit>
bool walk_headers(std::span<const uint8_t> raw, Visit&& visit) {
    size_t i = 0;
    while (i + 4 <= raw.size()) {
        uint16_t nl, vl;
        std::memcpy(&nl, raw.data() + i, 2);
        std::memcpy(&vl, raw.data() + i + 2, 2);
        if (i + 4 + nl + vl > raw.size()) break;
        const char* b = reinterpret_cast<const char*>(raw.data() + i + 4);
        if (visit(std::string_view(b, nl), std::string_view(b + nl, vl))) return true;
        i += 4 + nl + vl;
    }
    return false;
}

/// values[k] = the first value of the header named names[k] (empty when there is none), in one
/// walk; as Message::header for each name. `names` and `values` have the same length.
template <size_t N>
void first_header_values(std::span<const uint8_t> raw, const std::string_view (&names)[N],
                         std::string_view (&values)[N]) {
    bool found[N] = {};
    size_t missing = N;
    for (std::string_view& v : values) v = {};
    walk_headers(raw, [&](std::string_view name, std::string_view value) {
        for (size_t k = 0; k < N; ++k)
            if (!found[k] && name == names[k]) {
                found[k] = true;
                values[k] = value;
                --missing;
                break;
            }
        return missing == 0;
    });
}

}  // namespace fabric_shm::mq
