// SPDX-License-Identifier: MIT
// Built-in processors of fabric-shm-worker (--builtin NAME): in-process, for speed and tests.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/result.h"

namespace fabric_shm::workers {

/// Writes the result of `input` into `out` (empty on entry; WorkerLoop::run keeps its capacity).
using BuiltinFn = void (*)(std::span<const uint8_t> input, std::vector<uint8_t>& out);

/// copy: the bytes unchanged; upper: ASCII a-z to A-Z, other bytes unchanged;
/// crc32: the CRC-32 (gzip polynomial, ISA-L) as 8 lower-case hex digits and a newline.
Result<BuiltinFn> find_builtin(std::string_view name);
/// "copy, upper, crc32"
std::string builtin_names();

}  // namespace fabric_shm::workers
