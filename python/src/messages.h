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

/// The batch a consumer polls into. Call both with the GIL held (it guards the use counts).
struct BatchSlot {
    std::shared_ptr<MessageBatch> batch = std::make_shared<MessageBatch>();
    /// The batch for one poll: the last one when no Message or view of its last poll lives (and
    /// no other thread's poll holds it), else a fresh one. The caller keeps the returned handle
    /// until it has made its Message objects, so a second thread polling the same consumer
    /// meanwhile gets a batch of its own.
    std::shared_ptr<MessageBatch> take();
    /// Message objects for `polled`'s messages.
    static py::list to_python(const std::shared_ptr<MessageBatch>& polled);
};

/// The fabric_shm.Message class and SeekPolicy (shared by consumers, groups and DLQ routers).
void bind_messages(py::module_& m);

/// A SeekPolicy from a SeekPolicy object or a str ('earliest', 'latest', 'committed').
SeekPolicy to_seek_policy(py::handle value);

/// Headers from a dict or a sequence of (name, value) pairs; the strings stay in `storage`.
std::vector<MessageHeader> to_headers(py::handle value, std::vector<BytesArg>& storage);

}  // namespace fabric_shm::py_bind
