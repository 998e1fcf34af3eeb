// SPDX-License-Identifier: MIT
// The one naming rule for pools, buckets, topics and groups; checked before any syscall.
#pragma once

#include <string_view>

#include "fabric_shm/result.h"

namespace fabric_shm {

constexpr size_t kMaxNameLength = 64;

/// 1-64 chars of [A-Za-z0-9._-], not starting with '.' or '-'.
/// `what` ("pool", "topic", ...) is used in the message, which quotes the value and the rule.
Status validate_name(std::string_view what, std::string_view name);

/// $FABRIC_SHM_POOL if set and non-empty, else "default". Not validated here.
std::string_view default_pool_name() noexcept;

}  // namespace fabric_shm
