// SPDX-License-Identifier: MIT
// BatchStatus: what became of one item of a batch call (Producer::send_batch,
// MemObjectStore::put_many). docs/api.md, "Batches return a status per item".
#pragma once

#include <cstdint>
#include <string>

#include "fabric_shm/result.h"

namespace fabric_shm {

/// The outcome of one item of a batch. A batch call fills one per item and fails as a whole
/// only when the call itself is wrong (spans of different sizes, a closed or expired handle);
/// items fail one by one. Filling a status allocates nothing on success: `message` is written
/// only on failure (and cleared, keeping its capacity, on success), so a reused array of
/// statuses costs no allocation in a loop.
struct BatchStatus {
    Errc code = Errc::ok;
    uint64_t value = 0;      ///< on success: the offset (send_batch) or the version (put_many)
    uint32_t partition = 0;  ///< send_batch: the partition the message went (or was bound) to
    std::string message;     ///< on failure: what went wrong, naming the value and the limit

    bool ok() const noexcept { return code == Errc::ok; }
    /// The failure as an Error (code and message); Errc::ok and "" on success.
    Error error() const { return Error{code, message}; }
};

}  // namespace fabric_shm
