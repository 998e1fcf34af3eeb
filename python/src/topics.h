// SPDX-License-Identifier: MIT
// Consumer handles shared by the consumer, group and waiter bindings.
#pragma once

#include "common.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "messages.h"

namespace fabric_shm::py_bind {

/// What a consumer's polls reported lost (messages overwritten before it read them): the total
/// since it was opened, and the gaps of the latest poll (empty when it lost nothing).
struct LossReport {
    uint64_t total = 0;
    std::vector<Gap> latest;
    void note(const MessageBatch& batch) {
        total += batch.lost();
        latest.assign(batch.gaps().begin(), batch.gaps().end());
    }
    py::list latest_as_tuples() const {
        py::list out;
        for (const Gap& g : latest) out.append(py::make_tuple(g.partition, g.from, g.to));
        return out;
    }
};

/// One slice of a Python poll (sliced_wait): a poll that only reported a loss ends the wait as
/// a message would, or the next slice's poll would clear the report before anyone saw it.
template <class C>
Result<size_t> poll_slice(C& consumer, MessageBatch& batch, size_t max, uint64_t slice_ns) {
    auto r = consumer.poll(batch, max, ns_duration(slice_ns));
    if (r && *r == 0 && batch.lost() > 0) return size_t(1);
    return r;
}

/// poll(max=0) is refused: the library's poll returns at once for it, so a Python poll would
/// call it again and again until its timeout (for ever with None), never waiting.
inline void check_poll_max(size_t max) {
    if (max == 0) raise(Errc::invalid_argument, "poll: max 0: a poll returns up to max messages, at least 1");
}

/// Adds `lost` and `last_gaps` (LossReport) to a consumer class.
template <class Py>
py::class_<Py> with_loss_report(py::class_<Py> cls) {
    cls.def_property_readonly(
        "lost", [](Py& c) { return c.loss.total; },
        "Messages reported lost (overwritten before they were read) by this handle's polls so far.");
    cls.def_property_readonly(
        "last_gaps", [](Py& c) { return c.loss.latest_as_tuples(); },
        "The latest poll's lost ranges: a list of (partition, from, to) (offsets from..to-1), empty when it "
        "lost nothing.");
    return cls;
}

struct PyConsumer : Guarded {
    PyConsumer() : Guarded("this consumer") {}
    std::unique_ptr<Consumer> consumer;
    Pool pool;
    BatchSlot slot;
    LossReport loss;
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
    LossReport loss;
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
