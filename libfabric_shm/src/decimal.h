// SPDX-License-Identifier: MIT
// A number in decimal in a caller's stack buffer: the header and metadata values a worker or an
// ingest writes for every message (versions, times) without a std::string each. 24 bytes hold
// any uint64_t (20 digits).
#pragma once

#include "private.h"

#include <charconv>
#include <cstdint>
#include <string_view>

namespace fabric_shm::detail {

inline std::string_view decimal(char (&buf)[24], uint64_t v) noexcept {
    const char* end = std::to_chars(buf, buf + sizeof buf, v).ptr;
    return {buf, size_t(end - buf)};
}

}  // namespace fabric_shm::detail
