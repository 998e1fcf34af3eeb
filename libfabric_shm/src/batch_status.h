// SPDX-License-Identifier: MIT
// Filling a BatchStatus (fabric_shm/batch.h) the one way every batch call does: success
// clears the message keeping its capacity (no allocation in a loop), failure moves the error in.
#pragma once

#include "private.h"

#include <utility>

#include "fabric_shm/batch.h"

namespace fabric_shm::detail {

inline void batch_ok(BatchStatus& st, uint32_t partition, uint64_t value) noexcept {
    st.code = Errc::ok;
    st.value = value;
    st.partition = partition;
    st.message.clear();
}

inline void batch_failed(BatchStatus& st, uint32_t partition, Error e) noexcept {
    st.code = e.code;
    st.value = 0;
    st.partition = partition;
    st.message = std::move(e.message);
}

}  // namespace fabric_shm::detail
