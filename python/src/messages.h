// SPDX-License-Identifier: MIT
// Polled messages as Python objects: their key, value and header values are memoryviews into
// the batch's own buffer (never the ring, whose slots are reused). A consumer reuses its batch
// buffer for the next poll only when nothing from the previous poll is still alive; otherwise
// it polls into a fresh one, so a view kept past the next poll never dangles.
#pragma once

#include "common.h"
#include "fabric_shm/consumer.h"

namespace fabric_shm::py_bind {

/// One poll's messages, shared by the Message objects made from it.
struct PolledBatch {
    std::shared_ptr<MessageBatch> batch;
    py::object base;                  ///< memoryview over [base_ptr, base_ptr + size): every span
    const uint8_t* base_ptr = nullptr;
    py::object slice(std::span<const uint8_t> bytes) const;
};

/// A polled message (fabric_shm.Message).
struct PyMessage {
    std::shared_ptr<PolledBatch> polled;
    size_t index = 0;
    const Message& message() const { return (*polled->batch)[index]; }
};

/// The batch a consumer polls into.
struct BatchSlot {
    std::shared_ptr<MessageBatch> batch = std::make_shared<MessageBatch>();
    /// The batch to poll into: the same one when no Message or view of its last poll lives.
    MessageBatch& reusable();
    /// Message objects for the batch's messages (call with the GIL).
    py::list to_python();
};

/// The fabric_shm.Message class and SeekPolicy (shared by consumers, groups and DLQ routers).
void bind_messages(py::module_& m);

/// A SeekPolicy from a SeekPolicy object or a str ('earliest', 'latest', 'committed').
SeekPolicy to_seek_policy(py::handle value);

/// Headers from a dict or a sequence of (name, value) pairs; the strings stay in `storage`.
std::vector<MessageHeader> to_headers(py::handle value, std::vector<BytesArg>& storage);

}  // namespace fabric_shm::py_bind
