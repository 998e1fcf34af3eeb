// SPDX-License-Identifier: MIT
// The store handle and pins, shared by the store and worker bindings.
#pragma once

#include "common.h"
#include "fabric_shm/mem_object_store.h"

namespace fabric_shm::py_bind {

struct PyStore : Guarded {
    PyStore() : Guarded("this store") {}
    std::unique_ptr<MemObjectStore> store;
    Pool pool;
    MemObjectStore& get() { return checked(*this, store, pool); }
    void release() noexcept override { store.reset(); }
};

/// One pin held through Python; counted against the per-process pin limit (acquire_pin_slot
/// before making one).
struct PinHolder {
    PinnedView view;
    explicit PinHolder(PinnedView v) : view(std::move(v)) {}
    ~PinHolder() { release_pin_slot(); }
    PinHolder(const PinHolder&) = delete;
    PinHolder& operator=(const PinHolder&) = delete;
};

/// The put options of `store.put()`'s keyword arguments (one condition at most).
PutOptions put_options(bool if_absent, py::object if_version, py::object fence, py::object content_type,
                       py::object metadata, py::object ttl);

}  // namespace fabric_shm::py_bind
