// SPDX-License-Identifier: MIT
// Consumer groups: ConsumerGroup (the recipe's claim -> assign -> seek -> poll -> commit ->
// heartbeat, literally), GroupConsumer (member + consumer in one), DlqRouter.
#include "common.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/worker_loop.h"
#include "topics.h"

namespace fabric_shm::py_bind {

namespace {

struct PyGroup : Guarded {
    PyGroup() : Guarded("this consumer group") {}
    std::unique_ptr<ConsumerGroup> group;
    Pool pool;
    ConsumerGroup& get() { return checked(*this, group, pool); }
    void release() noexcept override { group.reset(); }
};

struct PyDlq : Guarded {
    PyDlq() : Guarded("this DLQ router") {}
    std::unique_ptr<DlqRouter> router;
    Pool pool;
    DlqRouter& get() { return checked(*this, router, pool); }
    void release() noexcept override { router.reset(); }
};

/// Without the GIL: describe() waits up to 5 s for a topic another process is still creating.
Result<uint32_t> topic_partitions(const Pool& pool, const std::string& topic) {
    Pool copy = pool;
    TopicManager topics(copy);
    FABRIC_TRY_ASSIGN(const TopicDescription d, topics.describe(topic, TopicDetail::positions));
    return d.config.num_partitions;
}

GroupConfig group_config(py::object session_timeout, py::object liveness_probe) {
    GroupConfig g;
    g.session_timeout = duration_or(session_timeout, "session_timeout", g.session_timeout);
    g.liveness_probe = duration_or(liveness_probe, "liveness_probe", g.liveness_probe);
    return g;
}

const Message& message_of(py::handle m) {
    if (!py::isinstance<PyMessage>(m)) throw py::type_error("expected a fabric_shm.Message (from poll)");
    return m.cast<PyMessage&>().message();
}

}  // namespace

void bind_groups(py::module_& m) {
    py::class_<Claim>(m, "Claim", "What a member owns now: partitions and the fence epoch.")
        .def_readonly("partitions", &Claim::partitions)
        .def_readonly("epoch", &Claim::epoch, "The fence token for commits, result puts and dead letters.")
        .def_readonly("era", &Claim::era)
        .def_readonly("pending", &Claim::pending)
        .def_readonly("changed", &Claim::changed)
        .def("__repr__", [](const Claim& c) {
            std::string parts;
            for (uint32_t p : c.partitions) parts += (parts.empty() ? "" : ", ") + std::to_string(p);
            return "Claim(partitions=[" + parts + "], epoch=" + std::to_string(c.epoch) + ")";
        });

    py::class_<PyGroup>(m, "ConsumerGroup",
                        "A process's handle on a consumer group on a topic (no coordinator: membership and "
                        "ownership live in the pool). Arguments in the library's order: pool, topic, group.")
        .def(py::init([](const Pool& pool, const std::string& topic, const std::string& group, py::object num_partitions,
                         py::object session_timeout, py::object liveness_probe) {
                 check_pool_open(pool);
                 auto g = std::make_unique<PyGroup>();
                 const GroupConfig cfg = group_config(session_timeout, liveness_probe);
                 const bool from_topic = num_partitions.is_none();
                 const uint32_t given = from_topic ? 0 : uint32_t(uint_arg(num_partitions, "num_partitions", UINT32_MAX));
                 auto r = without_gil(*g, [&]() -> Result<ConsumerGroup> {
                     uint32_t n = given;
                     if (from_topic) {
                         FABRIC_TRY_ASSIGN(n, topic_partitions(pool, topic));
                     }
                     return ConsumerGroup::open(pool, topic, group, n, cfg);
                 });
                 g->group = std::make_unique<ConsumerGroup>(unwrap(std::move(r)));
                 g->pool = pool;
                 return g;
             }),
             py::arg("pool"), py::arg("topic"), py::arg("group"), py::arg("num_partitions") = py::none(),
             py::kw_only(), py::arg("session_timeout") = py::none(), py::arg("liveness_probe") = py::none())
        .def("join", [](PyGroup& g, const std::string& member) {
            ConsumerGroup& group = g.get();
            return unwrap(without_gil(g, [&] { return group.join(member); }));
        }, py::arg("member_id"))
        .def("claim", [](PyGroup& g, const std::string& member) {
            ConsumerGroup& group = g.get();
            return unwrap(without_gil(g, [&] { return group.claim(member); }));
        }, py::arg("member_id"),
           "Joins if needed, heartbeats, rebalances; returns the member's Claim. Commit before calling it.")
        .def("heartbeat", [](PyGroup& g, const std::string& member) {
            ConsumerGroup& group = g.get();
            unwrap(without_gil(g, [&] { return group.heartbeat(member); }));
        }, py::arg("member_id"))
        .def("leave", [](PyGroup& g, const std::string& member) {
            ConsumerGroup& group = g.get();
            unwrap(without_gil(g, [&] { return group.leave(member); }));
        }, py::arg("member_id"))
        .def("owns", [](PyGroup& g, const std::string& member, uint32_t p) {
            check_pool_open(g.pool);
            ConsumerGroup& group = g.get();
            return without_gil(g, [&] { return group.owns(member, p); });
        }, py::arg("member_id"), py::arg("partition"))
        .def_property_readonly("group", [](PyGroup& g) { return g.get().group(); })
        .def_property_readonly("topic", [](PyGroup& g) { return g.get().topic(); })
        .def_property_readonly("num_partitions", [](PyGroup& g) { return g.get().num_partitions(); })
        .def("close", [](PyGroup& g) { close_handle(g); },
             "Drops the handle (without leaving: call leave() first to hand the partitions over at once). "
             "Later calls raise Closed; a call running on another thread finishes first.");

    with_loss_report(py::class_<PyGroupConsumer>(m, "GroupConsumer",
                                "A group member plus its consumer: poll() rebalances and polls owned partitions; "
                                "commits are fenced by the member's epoch."))
        .def(py::init([](const Pool& pool, const std::string& topic, const std::string& group, py::object member_id,
                         py::object session_timeout, const std::string& wait) {
                 check_pool_open(pool);
                 auto c = std::make_unique<PyGroupConsumer>();
                 GroupConsumerOptions o;
                 o.group = group_config(session_timeout, py::none());
                 o.consumer = consumer_options(wait, py::none(), py::none());
                 const std::string id = member_id.is_none() ? default_member_id() : member_id.cast<std::string>();
                 auto r = without_gil(*c, [&] { return GroupConsumer::open(pool, topic, group, id, o); });
                 c->consumer = std::make_unique<GroupConsumer>(unwrap(std::move(r)));
                 c->pool = pool;
                 return c;
             }),
             py::arg("pool"), py::arg("topic"), py::arg("group"), py::arg("member_id") = py::none(), py::kw_only(),
             py::arg("session_timeout") = py::none(), py::arg("wait") = "park")
        .def("poll",
             [](PyGroupConsumer& c, size_t max, py::object timeout) {
                 check_poll_max(max);
                 GroupConsumer& consumer = c.get();
                 const std::shared_ptr<MessageBatch> polled = c.slot.take();
                 MessageBatch& batch = *polled;
                 const uint64_t t = timeout.is_none() ? UINT64_MAX : duration_ns(timeout, "timeout");
                 sliced_wait(c, t, [&](uint64_t slice) { return poll_slice(consumer, batch, max, slice); });
                 c.loss.note(batch);
                 return BatchSlot::to_python(polled);
             },
             py::arg("max") = 64, py::arg("timeout") = py::none(),
             "Claims (rebalances), then polls owned partitions up to `timeout` (None: until a message comes or "
             "a loss is reported); what it found overwritten before it was read is in `last_gaps` and `lost`.")
        .def("commit",
             [](PyGroupConsumer& c, py::object message) {
                 GroupConsumer& consumer = c.get();
                 if (message.is_none()) {
                     unwrap(without_gil(c, [&] { return consumer.commit(); }));
                 } else {
                     const Message& msg = message_of(message);
                     unwrap(without_gil(c, [&] { return consumer.commit(msg); }));
                 }
             },
             py::arg("message") = py::none(),
             "Commits past `message` (or every owned partition's position); StaleEpoch once fenced.")
        .def("pause",
             [](PyGroupConsumer& c, uint32_t partition) {
                 GroupConsumer& consumer = c.get();
                 unwrap(without_gil(c, [&] { return consumer.pause(partition); }));
             },
             py::arg("partition"),
             "Stops reading one of the member's partitions without leaving it: poll() skips it, its position "
             "stays. It stays paused while the member keeps it, across rebalances; InvalidArgument for a "
             "partition not in `partitions`.")
        .def("resume",
             [](PyGroupConsumer& c, uint32_t partition) {
                 GroupConsumer& consumer = c.get();
                 unwrap(without_gil(c, [&] { return consumer.resume(partition); }));
             },
             py::arg("partition"), "Reads a paused partition again, from where it stopped.")
        .def("paused",
             [](PyGroupConsumer& c, uint32_t partition) {
                 GroupConsumer& consumer = c.get();
                 return without_gil(c, [&] { return consumer.paused(partition); });
             },
             py::arg("partition"))
        .def("rejoin", [](PyGroupConsumer& c) {
            GroupConsumer& consumer = c.get();
            unwrap(without_gil(c, [&] { return consumer.rejoin(); }));
        })
        .def("heartbeat", [](PyGroupConsumer& c) {
            GroupConsumer& consumer = c.get();
            unwrap(without_gil(c, [&] { return consumer.heartbeat(); }));
        })
        .def("leave", [](PyGroupConsumer& c) {
            GroupConsumer& consumer = c.get();
            unwrap(without_gil(c, [&] { return consumer.leave(); }));
        })
        // epoch and partitions change with every rebalance (inside poll): read under the lock.
        .def_property_readonly("epoch", [](PyGroupConsumer& c) {
            GroupConsumer& consumer = c.get();
            return without_gil(c, [&] { return consumer.epoch(); });
        })
        .def_property_readonly("partitions", [](PyGroupConsumer& c) {
            GroupConsumer& consumer = c.get();
            return without_gil(c, [&] { return consumer.partitions(); });
        })
        .def_property_readonly("member_id", [](PyGroupConsumer& c) { return c.get().member_id(); })
        .def("close", [](PyGroupConsumer& c) {
            check_unwatched(c.watchers, "this group consumer");
            close_handle(c);
        }, "Drops the handle without leaving (leave() first hands its partitions over at once). Later calls "
           "raise Closed; a call running on another thread finishes first, and a poll waiting there raises "
           "Closed within 20 ms.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PyGroupConsumer& c, py::args) {
            check_unwatched(c.watchers, "this group consumer");
            close_handle(c, [&] { (void)c.consumer->leave(); });
        });

    py::class_<PyDlq>(m, "DlqRouter",
                      "Attempts counted in the pool, retries with backoff, and dead letters to '<topic>.dlq' with "
                      "their source coordinates as headers.")
        .def(py::init([](Pool& pool, const std::string& topic, const std::string& group, uint32_t max_attempts,
                         py::object initial_backoff, py::object max_backoff, const std::string& dlq_topic) {
                 check_pool_open(pool);
                 auto d = std::make_unique<PyDlq>();
                 DlqPolicy policy;
                 policy.max_attempts = max_attempts;
                 policy.initial_backoff = duration_or(initial_backoff, "initial_backoff", policy.initial_backoff);
                 policy.max_backoff = duration_or(max_backoff, "max_backoff", policy.max_backoff);
                 policy.dlq_topic = dlq_topic;
                 auto r = without_gil(*d, [&] { return DlqRouter::open(pool, topic, group, policy); });
                 d->router = std::make_unique<DlqRouter>(unwrap(std::move(r)));
                 d->pool = pool;
                 return d;
             }),
             py::arg("pool"), py::arg("topic"), py::arg("group"), py::kw_only(), py::arg("max_attempts") = 3,
             py::arg("initial_backoff") = py::none(), py::arg("max_backoff") = py::none(), py::arg("dlq_topic") = "")
        .def("assign", [](PyDlq& d, const Claim& claim) {
            DlqRouter& r = d.get();
            without_gil(d, [&] { r.assign(claim); });
        }, py::arg("claim"), "Fences dead letters with the claim's epoch (call after every claim).")
        .def("set_epoch", [](PyDlq& d, uint64_t e) {
            DlqRouter& r = d.get();
            without_gil(d, [&] { r.set_epoch(e); });
        }, py::arg("fence_token"))
        .def("decided", [](PyDlq& d, py::handle msg) {
            check_pool_open(d.pool);
            const Message& m = message_of(msg);
            DlqRouter& r = d.get();
            return without_gil(d, [&] { return r.decided(m); });
        }, py::arg("message"))
        .def("begin", [](PyDlq& d, py::handle msg) {
            const Message& m = message_of(msg);
            DlqRouter& r = d.get();
            return unwrap(without_gil(d, [&] { return r.begin(m); }));
        }, py::arg("message"), "Counts a hand-out in the pool; returns the attempt number (1 = first).")
        .def("ack", [](PyDlq& d, py::handle msg) {
            const Message& m = message_of(msg);
            DlqRouter& r = d.get();
            unwrap(without_gil(d, [&] { return r.ack(m); }));
        }, py::arg("message"))
        .def("nack",
             [](PyDlq& d, py::handle msg, const std::string& reason) {
                 const Message& m = message_of(msg);
                 DlqRouter& r = d.get();
                 Duration backoff{0};
                 const bool dead = unwrap(without_gil(d, [&] { return r.nack(m, reason, &backoff); }));
                 return py::make_tuple(dead, seconds(to_ns(backoff)));
             },
             py::arg("message"), py::arg("reason"),
             "Processing failed: (dead_lettered, backoff seconds). Retry after the backoff unless dead_lettered.")
        .def("dead_letter",
             [](PyDlq& d, py::handle msg, uint64_t attempts, const std::string& reason) {
                 const Message& m = message_of(msg);
                 DlqRouter& r = d.get();
                 return unwrap(without_gil(d, [&] { return r.dead_letter(m, attempts, reason); }));
             },
             py::arg("message"), py::arg("attempts"), py::arg("reason"))
        .def("handle",
             [](PyDlq& d, py::object msg, py::function process, py::object heartbeat) {
                 const Message& m = message_of(msg);
                 DlqRouter& r = d.get();
                 CallbackGate gate;
                 auto result = without_gil(d, [&] {
                     return r.handle(
                         m, [&](const Message&) { return gate.call([&] { process(msg); }); },
                         [&]() -> Status {
                             // Called between retries' backoff slices: without a heartbeat of
                             // the user's, Ctrl-C and a close() from another thread are seen here.
                             if (heartbeat.is_none())
                                 return gate.call([&] {
                                     check_signals();
                                     if (d.closed.load(std::memory_order_relaxed)) throw FabricError(closed_error(d));
                                 });
                             return gate.call([&] { heartbeat(); });
                         });
                 });
                 gate.rethrow();
                 const Handled h = unwrap(std::move(result));
                 py::dict out;
                 out["dead_lettered"] = h.dead_lettered;
                 out["attempts"] = h.attempts;
                 out["reason"] = h.reason;
                 return out;
             },
             py::arg("message"), py::arg("process"), py::arg("heartbeat") = py::none(),
             "The per-message loop: begin, process(message) (an exception is a failure: a fabric_shm.Error's code "
             "decides permanent or not, others are retried), ack or nack, backoff, DLQ. Returns "
             "{'dead_lettered', 'attempts', 'reason'}.")
        .def_property_readonly("dlq_topic", [](PyDlq& d) { return d.get().dlq_topic(); })
        .def_property_readonly("dead_lettered", [](PyDlq& d) {
            DlqRouter& r = d.get();
            return without_gil(d, [&] { return r.dead_lettered(); });
        })
        .def("close", [](PyDlq& d) { close_handle(d); },
             "Later calls raise Closed; a call running on another thread finishes first. Called from "
             "handle()'s own process or heartbeat function, it takes effect when handle() returns.");

    m.def("dead_letter_count", [](const Pool& pool, const std::string& dlq_topic) {
        return unwrap(dead_letter_count(pool, dlq_topic));
    }, py::arg("pool"), py::arg("dlq_topic"));
}

}  // namespace fabric_shm::py_bind
