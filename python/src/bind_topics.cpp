// SPDX-License-Identifier: MIT
// Topics: TopicConfig, TopicManager, Producer, Consumer (SeekPolicy, Message), and Waiter (one
// readable file descriptor for many consumers, for asyncio's loop.add_reader and selectors).
#include <algorithm>
#include <cmath>

#include "common.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/ingest.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/waiter.h"
#include "messages.h"
#include "store.h"
#include "topics.h"

namespace fabric_shm::py_bind {

// ---- Messages -----------------------------------------------------------------------------------

py::object PolledBatch::slice(std::span<const uint8_t> bytes) const {
    if (bytes.empty() || !base) {
        PyObject* empty = PyMemoryView_FromObject(py::bytes("").ptr());
        if (empty == nullptr) throw py::error_already_set();
        return py::reinterpret_steal<py::object>(empty);
    }
    const auto start = Py_ssize_t(bytes.data() - base_ptr);
    return base[py::slice(start, start + Py_ssize_t(bytes.size()), 1)];
}

std::shared_ptr<MessageBatch> BatchSlot::take() {
    if (batch.use_count() > 1) batch = std::make_shared<MessageBatch>();
    return batch;
}

py::list BatchSlot::to_python(const std::shared_ptr<MessageBatch>& batch) {
    py::list out;
    if (batch->empty()) return out;
    auto polled = std::make_shared<PolledBatch>();
    polled->batch = batch;
    const uint8_t *lo = nullptr, *hi = nullptr;
    auto extend = [&](std::span<const uint8_t> s) {
        if (s.empty()) return;
        if (lo == nullptr || s.data() < lo) lo = s.data();
        if (hi == nullptr || s.data() + s.size() > hi) hi = s.data() + s.size();
    };
    for (const Message& msg : *batch) {
        extend(msg.key);
        extend(msg.value);
        extend(msg.headers_raw);
    }
    if (lo != nullptr) {
        polled->base_ptr = lo;
        polled->base = memoryview_of(make_exporter(batch, lo, size_t(hi - lo), true));
    }
    for (size_t i = 0; i < batch->size(); ++i) out.append(py::cast(PyMessage{polled, i}));
    return out;
}

SeekPolicy to_seek_policy(py::handle value) {
    if (py::isinstance<SeekPolicy>(value)) return value.cast<SeekPolicy>();
    if (PyUnicode_Check(value.ptr())) {
        const std::string s = value.cast<std::string>();
        if (s == "earliest") return SeekPolicy::Earliest();
        if (s == "latest") return SeekPolicy::Latest();
        if (s == "committed") return SeekPolicy::Committed();
        raise(Errc::invalid_argument, "seek policy '" + s + "': expected 'earliest', 'latest', 'committed' or a SeekPolicy");
    }
    throw py::type_error("seek: expected a SeekPolicy or 'earliest' / 'latest' / 'committed'");
}

std::vector<MessageHeader> to_headers(py::handle value, std::vector<BytesArg>& storage) {
    std::vector<MessageHeader> out;
    if (value.is_none()) return out;
    py::list pairs;
    if (py::isinstance<py::dict>(value)) {
        for (auto item : value.cast<py::dict>()) pairs.append(py::make_tuple(item.first, item.second));
    } else {
        for (auto item : value) pairs.append(item);
    }
    storage.reserve(storage.size() + 2 * pairs.size());
    const size_t first = storage.size();
    for (auto pair : pairs) {
        auto t = pair.cast<py::tuple>();
        if (t.size() != 2) throw py::type_error("headers: expected (name, value) pairs or a dict");
        storage.emplace_back(t[0], "header name");
        storage.emplace_back(t[1], "header value");
    }
    for (size_t i = first; i < storage.size(); i += 2) out.push_back({storage[i].view(), storage[i + 1].view()});
    return out;
}

void bind_messages(py::module_& m) {
    py::class_<PyMessage>(m, "Message",
                          "A polled message. key, value and the header values are read-only memoryviews into the "
                          "poll's own buffer (not the ring). Use them before the next poll; a view kept longer "
                          "stays valid (the consumer then polls into a fresh buffer), but holds that buffer.")
        .def_property_readonly("partition", [](const PyMessage& p) { return p.message().partition; })
        .def_property_readonly("offset", [](const PyMessage& p) { return p.message().offset; })
        .def_property_readonly("timestamp_ns", [](const PyMessage& p) { return p.message().timestamp_ns; },
                               "Wall clock at send (ns since the epoch).")
        .def_property_readonly("key", [](const PyMessage& p) { return p.polled->slice(p.message().key); })
        .def_property_readonly("value", [](const PyMessage& p) { return p.polled->slice(p.message().value); })
        .def("value_str", [](const PyMessage& p) { return std::string(p.message().value_str()); },
             "The value decoded as UTF-8 (a copy).")
        .def("key_str", [](const PyMessage& p) { return std::string(p.message().key_str()); })
        .def_property_readonly(
            "headers",
            [](const PyMessage& p) {
                py::list out;
                const Message& msg = p.message();
                for (size_t i = 0; i < msg.header_count(); ++i) {
                    const MessageHeader h = msg.header_at(i);
                    const auto* v = reinterpret_cast<const uint8_t*>(h.value.data());
                    out.append(py::make_tuple(py::str(h.name.data(), h.name.size()), p.polled->slice({v, h.value.size()})));
                }
                return out;
            },
            "[(name, memoryview)] in the order sent.")
        .def("header",
             [](const PyMessage& p, const std::string& name) -> py::object {
                 const Message& msg = p.message();
                 for (size_t i = 0; i < msg.header_count(); ++i) {
                     const MessageHeader h = msg.header_at(i);
                     if (h.name == name)
                         return p.polled->slice({reinterpret_cast<const uint8_t*>(h.value.data()), h.value.size()});
                 }
                 return py::none();
             },
             py::arg("name"), "The first header of that name (a memoryview), or None.")
        .def("__repr__", [](const PyMessage& p) {
            const Message& msg = p.message();
            return "Message(partition=" + std::to_string(msg.partition) + ", offset=" + std::to_string(msg.offset) +
                   ", value=" + std::to_string(msg.value.size()) + " bytes)";
        });

    py::class_<SeekPolicy> seek(m, "SeekPolicy",
                                "Where seek() puts each assigned partition. In a group, Earliest/Latest are the reset "
                                "policy (a partition with a commit resumes there); Rewind, Offset and Timestamp "
                                "ignore commits (replay).");
    py::enum_<SeekPolicy::Kind>(seek, "Kind")
        .value("EARLIEST", SeekPolicy::Kind::earliest)
        .value("LATEST", SeekPolicy::Kind::latest)
        .value("COMMITTED", SeekPolicy::Kind::committed)
        .value("OFFSET", SeekPolicy::Kind::offset)
        .value("TIMESTAMP", SeekPolicy::Kind::timestamp);
    seek.def_static("Earliest", &SeekPolicy::Earliest)
        .def_static("Latest", &SeekPolicy::Latest)
        .def_static("Committed", &SeekPolicy::Committed, py::arg("fallback") = SeekPolicy::Kind::earliest)
        .def_static("Rewind", &SeekPolicy::Rewind, py::arg("kind") = SeekPolicy::Kind::earliest)
        .def_static("Offset", &SeekPolicy::Offset, py::arg("offset"))
        .def_static("Timestamp",
                    [](py::handle when) {
                        if (py::hasattr(when, "timestamp") && !PyLong_Check(when.ptr())) {
                            const double ns = std::round(when.attr("timestamp")().cast<double>() * 1e9);
                            // Wall ns are unsigned: a time before 1970 is before every message
                            // (0, the earliest retained), not a cast that wraps past them all;
                            // one past 2^64 ns (year 2554) is refused rather than wrapped.
                            if (!(ns < 18446744073709551616.0))
                                raise(Errc::invalid_argument, "SeekPolicy.Timestamp " + std::string(py::repr(when)) +
                                                                  ": past the wall-clock ns a message records (2^64)");
                            return SeekPolicy::Timestamp(ns <= 0 ? 0 : uint64_t(ns));
                        }
                        return SeekPolicy::Timestamp(uint_arg(when, "SeekPolicy.Timestamp"));
                    },
                    py::arg("when"), "First retained message sent at or after `when` (a datetime, or wall ns).")
        .def_readonly("kind", &SeekPolicy::kind)
        .def_readonly("value", &SeekPolicy::value)
        .def_readonly("rewind", &SeekPolicy::rewind)
        .def("__repr__", [](const SeekPolicy& s) {
            static const char* names[] = {"Earliest", "Latest", "Committed", "Offset", "Timestamp"};
            std::string n = s.rewind ? "Rewind" : names[int(s.kind)];
            return "SeekPolicy." + n + "(" + (s.kind == SeekPolicy::Kind::offset || s.kind == SeekPolicy::Kind::timestamp ? std::to_string(s.value) : "") + ")";
        });
}

// ---- Topics and producers -----------------------------------------------------------------------

namespace {

OnFull to_on_full(py::handle v) {
    if (py::isinstance<OnFull>(v)) return v.cast<OnFull>();
    return unwrap(parse_on_full(v.cast<std::string>()));
}

py::dict describe_dict(const TopicDescription& d) {
    py::dict out;
    out["name"] = d.name;
    out["incarnation"] = d.incarnation;
    out["config"] = d.config;
    out["lease_ids"] = d.lease_ids;
    py::list parts;
    for (const PartitionDescription& p : d.partitions) {
        py::dict x;
        x["partition"] = p.partition;
        x["oldest"] = p.oldest;
        x["next"] = p.next;
        x["fill"] = p.fill;
        x["capacity"] = p.capacity;
        x["skipped_claims"] = p.skipped_claims;
        parts.append(x);
    }
    out["partitions"] = parts;
    py::list groups;
    for (const GroupDescription& g : d.groups) {
        py::dict x;
        x["name"] = g.name;
        x["expired"] = g.expired;
        py::list gp;
        for (const GroupPartitionDescription& p : g.partitions) {
            py::dict y;
            y["partition"] = p.partition;
            y["committed"] = p.committed;
            y["lag"] = p.lag;
            gp.append(y);
        }
        x["partitions"] = gp;
        groups.append(x);
    }
    out["groups"] = groups;
    return out;
}

struct PyTopics : Guarded {
    PyTopics() : Guarded("this topic manager") {}
    std::unique_ptr<TopicManager> manager;  ///< never closed: lives as long as the Python object
    Pool pool;
};

struct PyProducer : Guarded {
    PyProducer() : Guarded("this producer") {}
    std::unique_ptr<SignalWatch> watch = std::make_unique<SignalWatch>();
    std::unique_ptr<Producer> producer;
    Pool pool;
    Producer& get() { return checked(*this, producer, pool); }
    void release() noexcept override { producer.reset(); }
    /// A send waiting for space stops for a signal or a close() (ProducerOptions::should_stop).
    bool should_stop() { return closed.load(std::memory_order_relaxed) || (*watch)(); }
    /// After a send returned interrupted: the KeyboardInterrupt (or other) its signal raised, or
    /// Closed when close() stopped it.
    void interrupted() {
        watch->rethrow_if_stopped();
        check_open();
    }
    template <class T>
    T finish(Result<T>&& r) {
        if (!r && r.code() == Errc::interrupted) interrupted();
        return unwrap(std::move(r));
    }
};

GroupOptions group_options(py::object ttl, const std::string& start) {
    GroupOptions o;
    o.ttl = duration_or(ttl, "ttl", o.ttl);
    if (start == "earliest") o.start = GroupStart::earliest;
    else if (start == "latest") o.start = GroupStart::latest;
    else raise(Errc::invalid_argument, "start '" + start + "': expected 'earliest' or 'latest'");
    return o;
}

}  // namespace

void bind_topics(py::module_& m) {
    bind_messages(m);

    py::enum_<OnFull>(m, "OnFull", "What send does when a partition is full of uncommitted messages.")
        .value("BLOCK", OnFull::block)
        .value("REJECT", OnFull::reject)
        .value("OVERWRITE", OnFull::overwrite);

    py::class_<TopicConfig>(m, "TopicConfig", "A topic's shape: partitions, slots per partition, bytes per slot.")
        .def(py::init([](uint32_t num_partitions, uint32_t partition_capacity, uint32_t partition_stride,
                         py::object on_full, py::object ttl) {
                 TopicConfig c;
                 c.num_partitions = num_partitions;
                 c.partition_capacity = partition_capacity;
                 c.partition_stride = partition_stride;
                 c.on_full = to_on_full(on_full);
                 c.ttl = duration_or(ttl, "ttl", Duration::zero());
                 return c;
             }),
             py::kw_only(), py::arg("num_partitions") = 4, py::arg("partition_capacity") = 128,
             py::arg("partition_stride") = 512, py::arg("on_full") = OnFull::block, py::arg("ttl") = py::none())
        .def_readwrite("num_partitions", &TopicConfig::num_partitions)
        .def_readwrite("partition_capacity", &TopicConfig::partition_capacity)
        .def_readwrite("partition_stride", &TopicConfig::partition_stride)
        .def_readwrite("on_full", &TopicConfig::on_full)
        .def_property("ttl", [](const TopicConfig& c) { return seconds(to_ns(c.ttl)); },
                      [](TopicConfig& c, py::handle v) { c.ttl = duration(v, "ttl"); })
        .def("__repr__", [](const TopicConfig& c) {
            return "TopicConfig(num_partitions=" + std::to_string(c.num_partitions) + ", partition_capacity=" +
                   std::to_string(c.partition_capacity) + ", partition_stride=" + std::to_string(c.partition_stride) +
                   ", on_full=" + std::string(on_full_name(c.on_full)) + ")";
        });
    m.def("max_message_bytes", &max_message_bytes, py::arg("stride"),
          "Largest key + encoded headers + value that one slot of `stride` bytes holds.");

    py::class_<PyTopics>(m, "TopicManager", "Topic lifecycle in one pool (create, ensure, remove, describe, groups).")
        .def(py::init([](const Pool& pool) {
                 check_pool_open(pool);
                 auto t = std::make_unique<PyTopics>();
                 Pool copy = pool;
                 t->manager = std::make_unique<TopicManager>(copy);
                 t->pool = pool;
                 return t;
             }),
             py::arg("pool"))
        .def("create",
             [](PyTopics& t, const std::string& name, py::object config) {
                 const TopicConfig c = config.is_none() ? TopicConfig{} : config.cast<TopicConfig>();
                 unwrap(without_gil(t, [&] { return t.manager->create(name, c); }));
             },
             py::arg("name"), py::arg("config") = py::none(), "Creates a topic (AlreadyExists when it exists).")
        .def("ensure",
             [](PyTopics& t, const std::string& name, py::object config, py::object wait) {
                 const TopicConfig c = config.is_none() ? TopicConfig{} : config.cast<TopicConfig>();
                 const Duration w = duration_or(wait, "wait", std::chrono::seconds(5));
                 unwrap(without_gil(t, [&] { return t.manager->ensure(name, c, w); }));
             },
             py::arg("name"), py::arg("config") = py::none(), py::arg("wait") = py::none(),
             "Creates the topic unless it exists (an existing topic keeps its configuration); safe under races.")
        .def("remove", [](PyTopics& t, const std::string& name) {
            unwrap(without_gil(t, [&] { return t.manager->remove(name); }));
        }, py::arg("name"))
        .def("list", [](PyTopics& t) {
            check_pool_open(t.pool);
            return without_gil(t, [&] { return t.manager->list(); });
        })
        .def("describe", [](PyTopics& t, const std::string& name) {
            return describe_dict(unwrap(without_gil(t, [&] { return t.manager->describe(name); })));
        }, py::arg("name"), "A snapshot: config, partitions (oldest, next, fill), groups (committed, lag).")
        .def("register_group",
             [](PyTopics& t, const std::string& topic, const std::string& group, py::object ttl, const std::string& start) {
                 const GroupOptions o = group_options(ttl, start);
                 unwrap(without_gil(t, [&] { return t.manager->register_group(topic, group, o); }));
             },
             py::arg("topic"), py::arg("group"), py::kw_only(), py::arg("ttl") = py::none(),
             py::arg("start") = "earliest")
        .def("remove_group", [](PyTopics& t, const std::string& topic, const std::string& group) {
            unwrap(without_gil(t, [&] { return t.manager->remove_group(topic, group); }));
        }, py::arg("topic"), py::arg("group"));

    py::class_<SendResult>(m, "SendResult", "Where a message went: (partition, offset).")
        .def_readonly("partition", &SendResult::partition)
        .def_readonly("offset", &SendResult::offset)
        .def("__iter__", [](const SendResult& r) { return py::iter(py::make_tuple(r.partition, r.offset)); })
        .def("__eq__", [](const SendResult& a, const SendResult& b) { return a.partition == b.partition && a.offset == b.offset; })
        .def("__repr__", [](const SendResult& r) {
            return "SendResult(partition=" + std::to_string(r.partition) + ", offset=" + std::to_string(r.offset) + ")";
        });

    py::class_<PyProducer>(m, "Producer",
                           "Sends to one topic. Sends release the GIL; a send blocked on a full partition "
                           "(on_full=BLOCK) waits up to block_timeout and is interrupted by Ctrl-C.")
        .def(py::init([](const Pool& pool, const std::string& topic, py::object block_timeout, bool coarse_timestamps) {
                 check_pool_open(pool);
                 auto p = std::make_unique<PyProducer>();
                 ProducerOptions o;
                 o.block_timeout = duration_or(block_timeout, "block_timeout", o.block_timeout);
                 o.coarse_timestamps = coarse_timestamps;
                 o.should_stop = [raw = p.get()] { return raw->should_stop(); };
                 auto r = without_gil(*p, [&] { return Producer::open(pool, topic, o); });
                 p->producer = std::make_unique<Producer>(unwrap(std::move(r)));
                 p->pool = pool;
                 return p;
             }),
             py::arg("pool"), py::arg("topic"), py::kw_only(), py::arg("block_timeout") = py::none(),
             py::arg("coarse_timestamps") = false, "NotFound when the topic does not exist.")
        .def("send",
             [](PyProducer& p, py::handle value, py::object headers) {
                 BytesArg v(value, "value");
                 std::vector<BytesArg> storage;
                 const auto h = to_headers(headers, storage);
                 Producer& producer = p.get();
                 return p.finish(without_gil(p, [&] { return producer.send(v.span(), h); }));
             },
             py::arg("value"), py::arg("headers") = py::none(),
             "Sends to the next partition round-robin; returns SendResult(partition, offset). BackPressure "
             "when the partition stays full.")
        .def("send_keyed",
             [](PyProducer& p, py::handle key, py::handle value, py::object headers) {
                 BytesArg k(key, "key"), v(value, "value");
                 std::vector<BytesArg> storage;
                 const auto h = to_headers(headers, storage);
                 Producer& producer = p.get();
                 return p.finish(without_gil(p, [&] { return producer.send_keyed(k.span(), v.span(), h); }));
             },
             py::arg("key"), py::arg("value"), py::arg("headers") = py::none(),
             "Sends to partition key_hash(key) % partitions: one key, one partition, in order.")
        .def("send_to",
             [](PyProducer& p, uint32_t partition, py::handle value, py::object key, py::object headers) {
                 BytesArg v(value, "value");
                 std::optional<BytesArg> k;
                 if (!key.is_none()) k.emplace(key, "key");
                 std::vector<BytesArg> storage;
                 const auto h = to_headers(headers, storage);
                 OutgoingMessage msg{v.span(), k ? k->span() : std::span<const uint8_t>{}, h};
                 Producer& producer = p.get();
                 return p.finish(without_gil(p, [&] { return producer.send_to(partition, msg); }));
             },
             py::arg("partition"), py::arg("value"), py::arg("key") = py::none(), py::arg("headers") = py::none())
        .def("send_batch",
             [](PyProducer& p, py::iterable messages) {
                 // Each item: a bytes-like value, or (key, value) / (key, value, headers) with key None for
                 // round-robin.
                 std::vector<BytesArg> storage;
                 std::vector<std::vector<MessageHeader>> headers;
                 std::vector<std::array<size_t, 2>> slots;  // storage index of key (or npos) and value
                 py::list items;
                 for (auto item : messages) items.append(item);
                 storage.reserve(2 * items.size());
                 headers.resize(items.size());
                 std::vector<BytesArg> header_storage;
                 size_t header_count = 0;
                 for (auto item : items)
                     if (py::isinstance<py::tuple>(item) && py::len(item) == 3 && !item.cast<py::tuple>()[2].is_none())
                         header_count += 2 * py::len(item.cast<py::tuple>()[2]);
                 header_storage.reserve(header_count);
                 size_t i = 0;
                 for (auto item : items) {
                     size_t key_index = SIZE_MAX;
                     if (py::isinstance<py::tuple>(item)) {
                         auto t = item.cast<py::tuple>();
                         if (t.size() < 2 || t.size() > 3)
                             throw py::type_error("send_batch: items are values or (key, value[, headers]) tuples");
                         if (!t[0].is_none()) {
                             storage.emplace_back(t[0], "key");
                             key_index = storage.size() - 1;
                         }
                         storage.emplace_back(t[1], "value");
                         if (t.size() == 3) headers[i] = to_headers(t[2], header_storage);
                     } else {
                         storage.emplace_back(item, "value");
                     }
                     slots.push_back({key_index, storage.size() - 1});
                     ++i;
                 }
                 std::vector<OutgoingMessage> out(items.size());
                 for (size_t j = 0; j < out.size(); ++j) {
                     out[j].value = storage[slots[j][1]].span();
                     if (slots[j][0] != SIZE_MAX) out[j].key = storage[slots[j][0]].span();
                     out[j].headers = headers[j];
                 }
                 std::vector<BatchStatus> statuses(out.size());
                 Producer& producer = p.get();
                 unwrap(without_gil(p, [&] { return producer.send_batch(out, statuses); }));
                 std::vector<SendResult> sent;
                 py::list results, errors;
                 std::optional<Error> first;
                 bool interrupted = false;
                 for (const BatchStatus& st : statuses) {
                     interrupted |= st.code == Errc::interrupted;
                     if (st.ok()) {
                         sent.push_back(SendResult{st.partition, st.value});
                         results.append(py::cast(sent.back()));
                         errors.append(py::none());
                         continue;
                     }
                     if (!first) first = st.error();
                     results.append(py::none());
                     errors.append(st.message);
                 }
                 // A Ctrl-C that ended any partition's wait is raised now, not on a later call.
                 if (interrupted) p.interrupted();
                 if (first) {
                     py::dict extra;
                     extra["sent"] = sent;
                     extra["results"] = results;
                     extra["errors"] = errors;
                     raise_with(*first, extra);
                 }
                 return sent;
             },
             py::arg("messages"),
             "Sends in order; returns one SendResult per message. A failed message does not stop the batch, "
             "but every later message to its partition fails too (per-key order holds). Then the first "
             "failure is raised with .sent (the SendResults of the messages sent, in order), .results (a "
             "SendResult or None per message) and .errors (None or the error message per message): send "
             "again from each partition's first failure.")
        // Set when the producer opened, read-only since: no lock needed.
        .def_property_readonly("num_partitions", [](PyProducer& p) { return p.get().num_partitions(); })
        .def_property_readonly("topic", [](PyProducer& p) { return p.get().topic(); })
        .def("close", [](PyProducer& p) { close_handle(p); },
             "Closes the producer: later sends raise Closed; a send running on another thread finishes "
             "first, and one waiting for space in a full partition stops and raises Closed.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PyProducer& p, py::args) { close_handle(p); });

    m.def("put_and_notify",
          [](py::object store, py::object producers, py::handle uri, py::handle data, bool if_absent,
             py::object if_version, py::object fence, py::object content_type, py::object metadata, py::object ttl) {
              // The Python objects are held here: another thread may empty the list meanwhile.
              const bool many = py::isinstance<py::list>(producers) || py::isinstance<py::tuple>(producers);
              std::vector<py::object> owners;
              if (many)
                  for (auto p : producers) owners.push_back(py::reinterpret_borrow<py::object>(p));
              const std::span<const py::object> given =
                  many ? std::span<const py::object>(owners) : std::span<const py::object>(&producers, 1);
              // One producer (no fan-out) is the common call: its lists stay on the stack.
              SmallBuffer<PyProducer*, 1> ps_buffer;
              SmallBuffer<Producer*, 1> raw_buffer;
              SmallBuffer<Guarded*, 2> handle_buffer;  // the store's, then the producers'
              const std::span<PyProducer*> ps = ps_buffer.take(given.size());
              for (size_t i = 0; i < given.size(); ++i) ps[i] = &given[i].cast<PyProducer&>();
              PyStore& s = store.cast<PyStore&>();
              const FabricUri u = to_uri(uri);
              BytesArg bytes(data);
              const PutOptions o = put_options(if_absent, if_version, fence, content_type, metadata, ttl);
              MemObjectStore& ms = s.get();
              const std::span<Producer*> raw = raw_buffer.take(ps.size());
              const std::span<Guarded*> handles = handle_buffer.take(ps.size() + 1);
              handles[0] = &s;
              for (size_t i = 0; i < ps.size(); ++i) {
                  raw[i] = &ps[i]->get();
                  handles[i + 1] = ps[i];
              }
              auto r = without_gil(handles, [&] {
                  return put_and_notify(ms, raw, u, ByteView(bytes.span().data(), bytes.span().size()), o);
              });
              IngestResult in = unwrap(std::move(r));
              py::list sent;
              std::optional<Error> first;
              for (size_t i = 0; i < in.notified.size(); ++i) {
                  if (in.notified[i]) {
                      sent.append(py::cast(*in.notified[i]));
                      continue;
                  }
                  Error e = in.notified[i].error();
                  if (e.code == Errc::interrupted) {
                      ps[i]->watch->rethrow_if_stopped();
                      // close() on another thread stopped a send waiting for space.
                      if (ps[i]->closed.load(std::memory_order_relaxed)) e = closed_error(*ps[i]);
                  }
                  if (!first) first = e;
                  sent.append(py::cast(e.message));
              }
              if (first) {
                  py::dict extra;
                  extra["version"] = in.version;
                  extra["notified"] = sent;
                  raise_with(*first, extra);
              }
              return py::make_tuple(in.version, sent);
          },
          py::arg("store"), py::arg("producers"), py::arg("uri"), py::arg("data"), py::kw_only(),
          py::arg("if_absent") = false, py::arg("if_version") = py::none(), py::arg("fence") = py::none(),
          py::arg("content_type") = py::none(), py::arg("metadata") = py::none(), py::arg("ttl") = py::none(),
          "The recipe's ingest in one call (the library's put_and_notify): puts `data` under `uri` (put's "
          "options), then sends the URI on each producer (one Producer or a list: fan-out), keyed by the "
          "object's key so that the notifications of one object stay in order, with the headers "
          "fabric-version and fabric-put-ts that fabric-shm-worker and fabric_shm.Worker read. Returns "
          "(version, [SendResult per producer]). A failed put sends nothing and raises. A failed "
          "notification does not stop the others; then the first failure is raised with .version (the "
          "object stays stored: calling again is safe for workers) and .notified (a SendResult, or the "
          "error message, per producer).");

    bind_consumer(m);
    bind_waiter(m);
}

}  // namespace fabric_shm::py_bind
