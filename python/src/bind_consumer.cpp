// SPDX-License-Identifier: MIT
// Consumer (assign, seek, poll -> [Message], commit) and Waiter (wait on many consumers at once,
// or a readable file descriptor for event loops).
#include <array>

#include "common.h"
#include "fabric_shm/waiter.h"
#include "topics.h"

namespace fabric_shm::py_bind {

ConsumerOptions consumer_options(const std::string& wait, py::object spin, py::object claim_timeout) {
    ConsumerOptions o;
    if (wait == "park") o.wait = WaitMode::park;
    else if (wait == "spin") o.wait = WaitMode::spin;
    else raise(Errc::invalid_argument, "wait '" + wait + "': expected 'park' (sleep when idle) or 'spin' (busy-poll)");
    o.spin = duration_or(spin, "spin", o.spin);
    o.claim_timeout = duration_or(claim_timeout, "claim_timeout", o.claim_timeout);
    return o;
}

void check_unwatched(int watchers, std::string_view what) {
    if (watchers > 0)
        raise(Errc::busy, std::string(what) + " is watched by " + std::to_string(watchers) +
                              " Waiter(s): waiter.remove() it before closing it");
}

namespace {

uint64_t timeout_arg(py::handle timeout) {
    return timeout.is_none() ? UINT64_MAX : duration_ns(timeout, "timeout");
}

struct PyWaiter : Guarded {
    PyWaiter() : Guarded("this waiter") {}
    struct Watched {
        py::object owner;  ///< the Python consumer: kept alive while watched
        Guarded* handle;   ///< its lock and closed flag
        Consumer* consumer;
        int* watchers;
    };
    std::vector<Watched> watched;  ///< changed with the GIL held and this waiter's lock
    std::unique_ptr<Waiter> waiter = std::make_unique<Waiter>();
    ~PyWaiter() override {
        waiter.reset();  // stops its bridge thread before the consumers may go
        for (Watched& w : watched) --*w.watchers;
    }
    Watched resolve(py::handle obj) {
        if (py::isinstance<PyConsumer>(obj)) {
            auto& c = obj.cast<PyConsumer&>();
            return {py::reinterpret_borrow<py::object>(obj), &c, &c.get(), &c.watchers};
        }
        if (py::isinstance<PyGroupConsumer>(obj)) {
            auto& c = obj.cast<PyGroupConsumer&>();
            return {py::reinterpret_borrow<py::object>(obj), &c, &c.get().consumer(), &c.watchers};
        }
        throw py::type_error("Waiter: expected a Consumer or a GroupConsumer");
    }
    /// Runs f with this waiter's and every watched consumer's lock held (the waiter reads their
    /// positions), GIL released. Watched consumers cannot be closed (close() refuses).
    template <class F>
    auto with_consumers(F&& f) {
        std::vector<Guarded*> handles{this};
        for (Watched& w : watched) handles.push_back(w.handle);
        return without_gil(std::move(handles), std::forward<F>(f));
    }
};

const char* wait_name(WaitResult r) {
    switch (r) {
        case WaitResult::ready: return "ready";
        case WaitResult::timeout: return "timeout";
        default: return "interrupted";
    }
}

}  // namespace

void bind_consumer(py::module_& m) {
    with_loss_report(py::class_<PyConsumer>(m, "Consumer",
                           "Reads a topic. group '' is an observer (no commits, never holds producers back). "
                           "Threads calling one consumer take turns; poll releases the GIL and Ctrl-C (or close() "
                           "on another thread) interrupts it within 20 ms."))
        .def(py::init([](const Pool& pool, const std::string& topic, const std::string& group, const std::string& wait,
                         py::object spin, py::object claim_timeout) {
                 check_pool_open(pool);
                 auto c = std::make_unique<PyConsumer>();
                 const ConsumerOptions o = consumer_options(wait, spin, claim_timeout);
                 auto r = without_gil(*c, [&] { return Consumer::open(pool, topic, group, o); });
                 c->consumer = std::make_unique<Consumer>(unwrap(std::move(r)));
                 c->pool = pool;
                 return c;
             }),
             py::arg("pool"), py::arg("topic"), py::arg("group") = "", py::kw_only(), py::arg("wait") = "park",
             py::arg("spin") = py::none(), py::arg("claim_timeout") = py::none())
        .def("assign",
             [](PyConsumer& c, py::handle what) {
                 Consumer& consumer = c.get();
                 if (py::isinstance<Claim>(what)) {
                     const Claim claim = what.cast<Claim>();
                     unwrap(without_gil(c, [&] { return consumer.assign(claim); }));
                     return;
                 }
                 const auto parts = what.cast<std::vector<uint32_t>>();
                 unwrap(without_gil(c, [&] { return consumer.assign(parts); }));
             },
             py::arg("partitions"),
             "Partitions to read: a list of partition numbers, or a group's Claim (its partitions and the "
             "epoch commits are fenced with).")
        .def("assign_all", [](PyConsumer& c) {
            Consumer& consumer = c.get();
            unwrap(without_gil(c, [&] { return consumer.assign_all(); }));
        })
        .def("pause",
             [](PyConsumer& c, uint32_t partition) {
                 Consumer& consumer = c.get();
                 unwrap(without_gil(c, [&] { return consumer.pause(partition); }));
             },
             py::arg("partition"),
             "Stops reading an assigned partition without leaving it: poll() skips it and does not wait for "
             "it, its position stays. assign() keeps it paused while it stays assigned.")
        .def("resume",
             [](PyConsumer& c, uint32_t partition) {
                 Consumer& consumer = c.get();
                 unwrap(without_gil(c, [&] { return consumer.resume(partition); }));
             },
             py::arg("partition"), "Reads a paused partition again, from where it stopped.")
        .def("paused",
             [](PyConsumer& c, uint32_t partition) {
                 Consumer& consumer = c.get();
                 return without_gil(c, [&] { return consumer.paused(partition); });
             },
             py::arg("partition"))
        .def("seek",
             [](PyConsumer& c, py::handle policy, py::object partition) {
                 const SeekPolicy p = to_seek_policy(policy);
                 Consumer& consumer = c.get();
                 if (partition.is_none()) {
                     unwrap(without_gil(c, [&] { return consumer.seek(p); }));
                 } else {
                     const auto part = uint32_t(uint_arg(partition, "partition", UINT32_MAX));
                     unwrap(without_gil(c, [&] { return consumer.seek(part, p); }));
                 }
             },
             py::arg("policy") = SeekPolicy::Earliest(), py::arg("partition") = py::none(),
             "Moves every assigned partition (or one) per `policy`: a SeekPolicy or 'earliest' / 'latest' / "
             "'committed'.")
        .def("poll",
             [](PyConsumer& c, size_t max, py::object timeout) {
                 check_poll_max(max);
                 Consumer& consumer = c.get();
                 const std::shared_ptr<MessageBatch> polled = c.slot.take();
                 MessageBatch& batch = *polled;
                 // With no partition assigned the library's poll returns at once (nothing can
                 // arrive), and so does this one: slicing it would spin until the timeout.
                 bool unassigned = false;
                 sliced_wait(
                     c, timeout_arg(timeout),
                     [&](uint64_t slice) {
                         auto r = poll_slice(consumer, batch, max, slice);
                         if (r && *r == 0) unassigned = consumer.assignment().empty();
                         return r;
                     },
                     &unassigned);
                 c.loss.note(batch);
                 return BatchSlot::to_python(polled);
             },
             py::arg("max") = 64, py::arg("timeout") = py::none(),
             "Up to `max` messages in offset order per partition, waiting up to `timeout` (timedelta or "
             "seconds; None: until a message comes or a loss is reported; 0: never waits); at once with no "
             "partition assigned. Returns a list of Message; what it found overwritten before it was read "
             "is in `last_gaps` and `lost`. max 0 is InvalidArgument.")
        .def("commit",
             [](PyConsumer& c, py::object partition, py::object next_offset) {
                 Consumer& consumer = c.get();
                 if (partition.is_none()) {
                     unwrap(without_gil(c, [&] { return consumer.commit(); }));
                 } else {
                     if (next_offset.is_none())
                         raise(Errc::invalid_argument, "commit(partition): next_offset is required with a partition");
                     const auto p = uint32_t(uint_arg(partition, "partition", UINT32_MAX));
                     const auto n = uint_arg(next_offset, "next_offset");
                     unwrap(without_gil(c, [&] { return consumer.commit(p, n); }));
                 }
             },
             py::arg("partition") = py::none(), py::arg("next_offset") = py::none(),
             "Stores each assigned partition's position (the next offset to read) under the consumer's epoch; "
             "StaleEpoch once a newer owner fenced it.")
        .def("position", [](PyConsumer& c, uint32_t p) {
            Consumer& consumer = c.get();
            return unwrap(without_gil(c, [&] { return consumer.position(p); }));
        }, py::arg("partition"))
        .def("lag", [](PyConsumer& c, uint32_t p) {
            Consumer& consumer = c.get();
            return unwrap(without_gil(c, [&] { return consumer.lag(p); }));
        }, py::arg("partition"))
        .def("set_epoch",
             [](PyConsumer& c, uint64_t e) {
                 Consumer& consumer = c.get();
                 without_gil(c, [&] { consumer.set_epoch(e); });
             },
             py::arg("epoch"), "The commit epoch, for an external offset store (assign(claim) sets it for you).")
        // Set when the consumer opened, read-only since: no lock needed.
        .def_property_readonly("num_partitions", [](PyConsumer& c) { return c.get().num_partitions(); })
        .def_property_readonly("assignment", [](PyConsumer& c) {
            Consumer& consumer = c.get();
            return without_gil(c, [&] { return consumer.assignment(); });
        })
        .def("close", [](PyConsumer& c) {
            check_unwatched(c.watchers, "this consumer");
            close_handle(c);
        }, "Closes the consumer: later calls raise Closed; a call running on another thread finishes first, "
           "and a poll waiting there raises Closed within 20 ms. Busy while a Waiter watches it.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PyConsumer& c, py::args) {
            check_unwatched(c.watchers, "this consumer");
            close_handle(c);
        });
}

void bind_waiter(py::module_& m) {
    py::class_<PyWaiter>(m, "Waiter",
                         "Waits on many consumers (any topics, any pools) at once: wait(), or fd() for an event "
                         "loop. Use it on the thread that polls its consumers.")
        .def(py::init<>())
        .def("add",
             [](PyWaiter& w, py::handle consumer) {
                 PyWaiter::Watched x = w.resolve(consumer);
                 // Counted before the GIL is released: from now on the consumer's close() refuses.
                 // One that began before is seen under the consumer's lock (Closed).
                 ++*x.watchers;
                 try {
                     unwrap(without_gil({&w, x.handle}, [&] { return w.waiter->add(*x.consumer); }));
                 } catch (...) {
                     --*x.watchers;
                     throw;
                 }
                 w.watched.push_back(std::move(x));
             },
             py::arg("consumer"), "Watches a Consumer or GroupConsumer (its assigned partitions, from its positions).")
        .def("remove",
             [](PyWaiter& w, py::handle consumer) {
                 PyWaiter::Watched x = w.resolve(consumer);
                 unwrap(without_gil(w, [&] { return w.waiter->remove(*x.consumer); }));
                 for (auto it = w.watched.begin(); it != w.watched.end(); ++it)
                     if (it->consumer == x.consumer) {
                         --*it->watchers;
                         w.watched.erase(it);
                         break;
                     }
             },
             py::arg("consumer"))
        .def("__len__", [](PyWaiter& w) { return w.watched.size(); })
        .def("wait",
             [](PyWaiter& w, py::object timeout) {
                 const uint64_t total = timeout_arg(timeout);
                 const uint64_t start = monotonic_ns();
                 for (;;) {
                     const uint64_t now = monotonic_ns();
                     const uint64_t left = total == UINT64_MAX ? UINT64_MAX : (now - start >= total ? 0 : total - (now - start));
                     const uint64_t slice = std::min(left, kSignalSliceNs);
                     auto r = w.with_consumers([&] { return w.waiter->wait(ns_duration(slice)); });
                     const WaitResult res = unwrap(std::move(r));
                     if (res == WaitResult::ready) return std::string("ready");
                     check_signals();
                     if (res == WaitResult::interrupted) return std::string("interrupted");
                     if (left <= slice) return std::string(wait_name(res));
                 }
             },
             py::arg("timeout") = py::none(),
             "Blocks until a watched consumer has something to poll ('ready'), `timeout` passes ('timeout'), or "
             "interrupt() is called ('interrupted'); Ctrl-C raises KeyboardInterrupt within 20 ms.")
        .def("interrupt", [](PyWaiter& w) { w.waiter->interrupt(); },
             "From any thread: the current (or next) wait returns 'interrupted'.")
        .def("fd", [](PyWaiter& w) {
            return unwrap(without_gil(w, [&] { return w.waiter->fd(); }));
        }, "An eventfd that becomes readable when a watched consumer is ready (after arm()); for "
           "loop.add_reader / selectors. On readable: poll each consumer with timeout 0, then arm().")
        .def("arm", [](PyWaiter& w) {
            unwrap(w.with_consumers([&] { return w.waiter->arm(); }));
        }, "Takes the consumers' positions and clears the fd's readiness; it turns readable again once one is ready.");
}

}  // namespace fabric_shm::py_bind
