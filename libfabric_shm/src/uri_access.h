// SPDX-License-Identifier: MIT
// FabricUriView's constructor from parts, for library code only: code that builds URI text it
// has checked against the rules itself (name_rule.h) and must not scan it again.
#pragma once

#include "private.h"

#include <string_view>

#include "fabric_shm/uri.h"

namespace fabric_shm::detail {

struct UriAccess {
    /// A view of `pool`, `bucket` and `key` as given: the caller checked them.
    static FabricUriView unchecked(std::string_view pool, std::string_view bucket, std::string_view key) {
        return FabricUriView::parse_parts_unchecked(pool, bucket, key);
    }
};

}  // namespace fabric_shm::detail
