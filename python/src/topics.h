// SPDX-License-Identifier: MIT
// Consumer handles shared by the consumer, group and waiter bindings.
#pragma once

#include "common.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "messages.h"

namespace fabric_shm::py_bind {

struct PyConsumer : Guarded {
    PyConsumer() : Guarded("this consumer") {}
    std::unique_ptr<Consumer> consumer;
    Pool pool;
    BatchSlot slot;
    /// Waiters watching it (changed with the GIL held): close() refuses while > 0 (they hold its
    /// address).
    int watchers = 0;
    Consumer& get() { return checked(*this, consumer, pool); }
    void release() noexcept override { consumer.reset(); }
};

struct PyGroupConsumer : Guarded {
    PyGroupConsumer() : Guarded("this group consumer") {}
    std::unique_ptr<GroupConsumer> consumer;
    Pool pool;
    BatchSlot slot;
    int watchers = 0;
    GroupConsumer& get() { return checked(*this, consumer, pool); }
    void release() noexcept override { consumer.reset(); }
};

/// Consumer options from keyword arguments shared by Consumer and GroupConsumer.
ConsumerOptions consumer_options(const std::string& wait, py::object spin, py::object claim_timeout);
/// Refuses to close a consumer a Waiter still watches.
void check_unwatched(int watchers, std::string_view what);

void bind_consumer(py::module_& m);
void bind_waiter(py::module_& m);

}  // namespace fabric_shm::py_bind
