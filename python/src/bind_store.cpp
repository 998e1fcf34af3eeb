// SPDX-License-Identifier: MIT
// MemObjectStore: put (bytes-like), get -> a pinned object whose .data is a read-only memoryview
// of the bytes in the pool (zero-copy, released with its last view), loan -> a writable
// memoryview to fill, then commit().
#include <cstring>

#include "common.h"
#include "fabric_shm/mem_object_store.h"
#include "store.h"

namespace fabric_shm::py_bind {

namespace {

/// Objects from this size up are checked or copied with the GIL released: a CRC or a copy of
/// megabytes takes milliseconds that other Python threads should have. Below it, releasing
/// and taking the GIL back would cost more than the work.
constexpr size_t kWithoutGilFromBytes = 64 * 1024;

/// f() (a Status) with the GIL released when the object is large.
template <class F>
Status while_large(size_t bytes, F&& f) {
    if (bytes < kWithoutGilFromBytes) return f();
    py::gil_scoped_release nogil;
    return f();
}

/// store.get(): the pin, its info, and the exporter behind .data (created on first use).
struct PyObjectRef {
    std::shared_ptr<PinHolder> pin;
    FabricUri uri;
    py::object exporter;
    const PinHolder& holder() const {
        check_not_closed(pin != nullptr, "this object");
        return *pin;
    }
    /// The pin, shared for a call that releases the GIL: a close() from another thread
    /// meanwhile drops this object's share, not the bytes under the call.
    std::shared_ptr<PinHolder> pinned_for_call() const {
        check_not_closed(pin != nullptr, "this object");
        return pin;
    }
    py::bytes copy() const {
        const std::shared_ptr<PinHolder> held = pinned_for_call();
        const auto b = held->view.bytes();
        auto out = py::reinterpret_steal<py::bytes>(PyBytes_FromStringAndSize(nullptr, Py_ssize_t(b.size())));
        if (!out) throw py::error_already_set();
        char* dst = PyBytes_AS_STRING(out.ptr());  // not shared with anyone until returned
        (void)while_large(b.size(), [&] {
            std::memcpy(dst, b.data(), b.size());
            return Status{};
        });
        return out;
    }
    void close() {
        if (exporter) exporter_close(exporter, "this object was closed");
        exporter = py::object();
        pin.reset();  // the pin goes now, or with the last memoryview of it
    }
};

struct LoanHolder {
    ObjectLoan loan;
};

struct PyLoan {
    std::shared_ptr<LoanHolder> holder;
    std::shared_ptr<PyStore> store;
    FabricUri uri;
    PutOptions options;
    py::object exporter;
    bool committed = false;
    bool dropped = false;  ///< close() (or `with`) ran: a commit in progress on another thread keeps nothing
    void drop() {
        dropped = true;
        if (exporter) exporter_close(exporter, "this loan was committed or dropped");
        exporter = py::object();
        holder.reset();
    }
};

py::dict stats_dict(const StoreStats& s) {
    py::dict d;
    d["objects"] = s.objects;
    d["table_entries"] = s.table_entries;
    d["heap_used_bytes"] = s.heap_used_bytes;
    d["heap_capacity_bytes"] = s.heap_capacity_bytes;
    d["largest_free_extent"] = s.largest_free_extent;
    d["max_object_bytes"] = s.max_object_bytes;
    d["loans_active"] = s.loans_active;
    d["pins_active"] = s.pins_active;
    d["probe_buckets_hit"] = s.probe_buckets_hit;
    d["probe_buckets_miss"] = s.probe_buckets_miss;
    return d;
}

}  // namespace

PutOptions put_options(bool if_absent, py::object if_version, py::object fence, py::object content_type,
                       py::object metadata, py::object ttl) {
    PutOptions o;
    if (if_absent && !(if_version.is_none() && fence.is_none()))
        raise(Errc::invalid_argument, "put: if_absent excludes if_version and fence (if_version=0 with fence: "
                                      "absent, fenced)");
    if (if_absent) o.condition = PutCondition::if_absent;
    if (!if_version.is_none()) {
        o.condition = PutCondition::if_version_equals;
        o.expected_version = uint_arg(if_version, "if_version");
    }
    if (!fence.is_none()) {  // with if_version: both, in the step that publishes
        o.condition = if_version.is_none() ? PutCondition::fence : PutCondition::fence_if_version_equals;
        o.fence_token = uint_arg(fence, "fence");
    }
    if (!content_type.is_none()) o.content_type = content_type.cast<std::string>();
    if (!metadata.is_none()) o.metadata = metadata.cast<std::map<std::string, std::string>>();
    o.ttl = duration_or(ttl, "ttl", Duration::zero());
    return o;
}

void bind_store(py::module_& m) {
    py::class_<ObjectInfo>(m, "ObjectInfo", "What head() and Object.info say about a stored object.")
        .def_readonly("size", &ObjectInfo::size)
        .def_readonly("crc32", &ObjectInfo::crc32)
        .def_readonly("version", &ObjectInfo::version, "Monotonic per key, from 1; survives overwrite and remove+put.")
        .def_readonly("fence_token", &ObjectInfo::fence_token)
        .def_readonly("content_type", &ObjectInfo::content_type)
        .def_readonly("metadata", &ObjectInfo::metadata)
        .def_readonly("created_wall_ns", &ObjectInfo::created_wall_ns)
        .def_readonly("expires_wall_ns", &ObjectInfo::expires_wall_ns)
        .def("__repr__", [](const ObjectInfo& i) {
            return "ObjectInfo(size=" + std::to_string(i.size) + ", version=" + std::to_string(i.version) + ")";
        });

    py::class_<PyObjectRef>(m, "Object",
                            "A stored object, pinned in the pool: .data is a read-only memoryview of its bytes "
                            "(no copy, no CRC pass: verify() does that). The pin is released when the object is "
                            "closed (or collected) and every memoryview of .data is released; the bytes stay "
                            "valid until then, even if the object is overwritten or removed.")
        .def_property_readonly(
            "data",
            [](PyObjectRef& o) {
                const PinHolder& h = o.holder();
                if (!o.exporter) {
                    const auto bytes = h.view.bytes();
                    o.exporter = make_exporter(o.pin, bytes.data(), bytes.size(), true);
                }
                return memoryview_of(o.exporter);
            },
            "Read-only memoryview of the bytes in the pool (numpy.frombuffer wraps it without a copy).")
        .def_property_readonly("info", [](PyObjectRef& o) { return o.holder().view.info(); })
        .def_property_readonly("version", [](PyObjectRef& o) { return o.holder().view.info().version; })
        .def_property_readonly("size", [](PyObjectRef& o) { return o.holder().view.info().size; })
        .def_property_readonly("uri", [](PyObjectRef& o) { return o.uri; })
        .def_property_readonly("closed", [](PyObjectRef& o) { return o.pin == nullptr; })
        .def("verify",
             [](PyObjectRef& o) {
                 const std::shared_ptr<PinHolder> pin = o.pinned_for_call();
                 unwrap(while_large(pin->view.bytes().size(), [&] { return pin->view.verify(); }));
             },
             "Checks the stored CRC-32 of the bytes; raises Corrupt on a mismatch.")
        .def("tobytes", &PyObjectRef::copy, "A copy of the bytes.")
        .def("__bytes__", &PyObjectRef::copy)
        .def("__len__", [](PyObjectRef& o) { return o.holder().view.bytes().size(); })
        .def("close", &PyObjectRef::close,
             "Releases this object's pin (at once, or when the last memoryview of .data is released).")
        .def("__enter__", [](PyObjectRef& o) -> PyObjectRef& { return o; }, py::return_value_policy::reference)
        .def("__exit__", [](PyObjectRef& o, py::args) { o.close(); })
        .def("__repr__", [](PyObjectRef& o) {
            if (!o.pin) return "Object('" + o.uri.to_string() + "', closed)";
            return "Object('" + o.uri.to_string() + "', size=" + std::to_string(o.pin->view.info().size) +
                   ", version=" + std::to_string(o.pin->view.info().version) + ")";
        });

    py::class_<PyLoan>(m, "Loan",
                       "Bytes reserved in the pool for one object: fill .data (a writable memoryview), then "
                       "commit(). Dropped uncommitted (close(), the end of a `with` block, or collection), "
                       "the bytes go back to the store.")
        .def_property_readonly("data",
                               [](PyLoan& l) {
                                   check_not_closed(l.holder != nullptr, "this loan");
                                   if (!l.exporter) {
                                       const auto b = l.holder->loan.bytes();
                                       l.exporter = make_exporter(l.holder, b.data(), b.size(), false);
                                   }
                                   return memoryview_of(l.exporter);
                               },
                               "Writable memoryview of the reserved bytes.")
        .def_property_readonly("uri", [](PyLoan& l) { return l.uri; })
        .def_property_readonly("size", [](PyLoan& l) {
            check_not_closed(l.holder != nullptr, "this loan");
            return l.holder->loan.bytes().size();
        })
        .def("commit",
             [](PyLoan& l) {
                 check_not_closed(l.holder != nullptr, "this loan");
                 if (l.exporter && exporter_exports(l.exporter) > 0)
                     throw py::buffer_error(
                         "commit: " + std::to_string(exporter_exports(l.exporter)) +
                         " memoryview(s) of this loan are still alive; release them first (del the view or "
                         "array, or memoryview.release()): a write after commit would change a published object");
                 MemObjectStore& store = l.store->get();
                 // The loan leaves the Python object for the call (the GIL is released: no
                 // thread may make a new view of it meanwhile), and comes back when the commit
                 // fails: the library keeps a refused loan valid (a failed condition, a closed
                 // store), so its bytes are not lost and commit() may be tried again.
                 std::shared_ptr<LoanHolder> holder = std::move(l.holder);
                 if (l.exporter) exporter_close(l.exporter, "this loan was committed or dropped");
                 l.exporter = py::object();
                 // Back to the Python object unless it was committed or close() ran meanwhile:
                 // on a refusal, and on an exception from the call itself (the store closed by
                 // another thread before the call took its lock).
                 struct GiveBack {
                     PyLoan& l;
                     std::shared_ptr<LoanHolder>& holder;
                     ~GiveBack() {
                         if (holder && !l.dropped && holder->loan.valid()) l.holder = std::move(holder);
                     }
                 } give_back{l, holder};
                 auto version = without_gil(*l.store, [&] {
                     return store.commit(std::move(holder->loan), l.uri, l.options);
                 });
                 if (!version) raise(std::move(version).error());
                 l.committed = true;
                 return *version;
             },
             "Publishes the bytes under the loan's URI (with the put options given to loan()); returns the "
             "version. Raises BufferError while a memoryview of .data is alive. A commit refused by its "
             "condition (Conflict, StaleEpoch) keeps the loan: commit() again, or close() it.")
        .def("close", &PyLoan::drop, "Drops the loan uncommitted (its bytes go back to the store).")
        .def("__enter__", [](PyLoan& l) -> PyLoan& { return l; }, py::return_value_policy::reference)
        .def("__exit__", [](PyLoan& l, py::args) { l.drop(); })
        .def_property_readonly("committed", [](PyLoan& l) { return l.committed; });

    py::class_<PyStore, std::shared_ptr<PyStore>>(
        m, "MemObjectStore",
        "The object store inside a pool (Pool.store(name)), shared by every process that opens the same name.")
        .def(py::init([](Pool& pool, const std::string& name, uint32_t table_entries, py::object heap_bytes,
                         py::object max_object_bytes, py::object ttl) {
                 check_pool_open(pool);
                 StoreConfig c;
                 c.name = name;
                 c.table_entries = table_entries;
                 c.heap_bytes = heap_bytes.is_none() ? 0 : uint_arg(heap_bytes, "heap_bytes");
                 c.max_object_bytes = max_object_bytes.is_none() ? 0 : uint_arg(max_object_bytes, "max_object_bytes");
                 c.ttl = duration_or(ttl, "ttl", Duration::zero());
                 auto s = std::make_shared<PyStore>();
                 auto r = without_gil(*s, [&] { return MemObjectStore::open(pool, c); });
                 s->store = unwrap(std::move(r));
                 s->pool = pool;
                 return s;
             }),
             py::arg("pool"), py::arg("name") = "default", py::kw_only(), py::arg("table_entries") = 0,
             py::arg("heap_bytes") = py::none(), py::arg("max_object_bytes") = py::none(), py::arg("ttl") = py::none(),
             "Opens store `name` in the pool, creating it when absent (sizes derived from the pool's unless given).")
        .def("put",
             [](PyStore& s, py::handle uri, py::handle data, bool if_absent, py::object if_version, py::object fence,
                py::object content_type, py::object metadata, py::object ttl) {
                 const FabricUri u = to_uri(uri);
                 BytesArg bytes(data);
                 PutOptions o = put_options(if_absent, if_version, fence, content_type, metadata, ttl);
                 MemObjectStore& store = s.get();
                 return unwrap(without_gil(s, [&] { return store.put(u, bytes.span(), o); }));
             },
             py::arg("uri"), py::arg("data"), py::kw_only(), py::arg("if_absent") = false,
             py::arg("if_version") = py::none(), py::arg("fence") = py::none(), py::arg("content_type") = py::none(),
             py::arg("metadata") = py::none(), py::arg("ttl") = py::none(),
             "Stores bytes-like `data` under `uri`; returns the new version. Conditions: if_absent, "
             "if_version=N (0: absent), fence=token, or if_version with fence (both) (Conflict / StaleEpoch when "
             "they fail; the fence is checked first).")
        .def("put_many",
             [](PyStore& s, py::iterable items, bool if_absent, py::object if_version, py::object fence,
                py::object content_type, py::object metadata, py::object ttl) {
                 // The items are held here: another thread may change the caller's list meanwhile.
                 std::vector<py::object> held;
                 for (auto item : items) held.push_back(py::reinterpret_borrow<py::object>(item));
                 std::vector<FabricUri> uris;
                 std::vector<BytesArg> bytes;
                 uris.reserve(held.size());
                 bytes.reserve(held.size());
                 for (const py::object& item : held) {
                     if (!py::isinstance<py::tuple>(item) || py::len(item) != 2)
                         throw py::type_error("put_many: items are (uri, data) tuples");
                     auto t = item.cast<py::tuple>();
                     uris.push_back(to_uri(t[0]));
                     bytes.emplace_back(t[1]);
                 }
                 const PutOptions o = put_options(if_absent, if_version, fence, content_type, metadata, ttl);
                 std::vector<PutRequest> in(held.size());
                 for (size_t i = 0; i < in.size(); ++i) in[i] = {uris[i].view(), bytes[i].span(), &o};
                 std::vector<BatchStatus> statuses(in.size());
                 MemObjectStore& store = s.get();
                 unwrap(without_gil(s, [&] { return store.put_many(in, statuses); }));
                 py::list versions, errors;
                 std::optional<Error> first;
                 for (const BatchStatus& st : statuses) {
                     if (st.ok()) {
                         versions.append(st.value);
                         errors.append(py::none());
                         continue;
                     }
                     if (!first) first = st.error();
                     versions.append(py::none());
                     errors.append(st.message);
                 }
                 if (first) {
                     py::dict extra;
                     extra["versions"] = versions;
                     extra["errors"] = errors;
                     raise_with(*first, extra);
                 }
                 return versions;
             },
             py::arg("items"), py::kw_only(), py::arg("if_absent") = false, py::arg("if_version") = py::none(),
             py::arg("fence") = py::none(), py::arg("content_type") = py::none(), py::arg("metadata") = py::none(),
             py::arg("ttl") = py::none(),
             "Stores each (uri, data) of `items` with the same options, in order, in one call; returns the "
             "versions. Each item is a put of its own: one that fails stores nothing and does not stop the "
             "others. Then the first failure is raised with .versions (the version, or None, per item) and "
             ".errors (None, or the error message, per item).")
        .def("get",
             [](std::shared_ptr<PyStore> s, py::handle uri) -> py::object {
                 const FabricUri u = to_uri(uri);
                 MemObjectStore& store = s->get();
                 acquire_pin_slot(u.to_string());
                 struct SlotHeld {
                     bool pinned = false;
                     ~SlotHeld() {
                         if (!pinned) release_pin_slot();  // no pin came of it (absent, an error, Closed)
                     }
                 } slot;
                 auto r = without_gil(*s, [&] { return store.pin(u); });
                 if (!r) raise(std::move(r).error());
                 if (!r->has_value()) return py::none();
                 PyObjectRef o;
                 o.pin = std::make_shared<PinHolder>(std::move(**r));
                 slot.pinned = true;  // the PinHolder releases the slot now
                 o.uri = u;
                 return py::cast(std::move(o));
             },
             py::arg("uri"),
             "The object pinned in the pool (an Object whose .data is a zero-copy memoryview), or None when "
             "absent. CapacityExceeded past fabric_shm.pin_limit() pins held by this process.")
        .def("get_bytes",
             [](PyStore& s, py::handle uri) -> py::object {
                 const FabricUri u = to_uri(uri);
                 MemObjectStore& store = s.get();
                 // Pinned for the copy, straight into the bytes object: one buffer, filled once,
                 // with the CRC checked in the same pass. A copy through store.get() filled a
                 // vector first and then copied it into the bytes object: two fresh buffers
                 // whose page faults cost ~7 ms per 1 MiB on the 2-vCPU VM (docs/python.md).
                 auto pinned = without_gil(s, [&] { return store.pin(u); });
                 if (!pinned && pinned.code() == Errc::capacity_exceeded) {
                     // Every pin record taken (by pins that others hold): the copy needs none.
                     auto r = unwrap(without_gil(s, [&] { return store.get(u); }));
                     if (!r) return py::none();
                     return py::bytes(reinterpret_cast<const char*>(r->data.data()), r->data.size());
                 }
                 auto view = unwrap(std::move(pinned));
                 if (!view) return py::none();
                 const size_t n = view->bytes().size();
                 auto out = py::reinterpret_steal<py::object>(PyBytes_FromStringAndSize(nullptr, Py_ssize_t(n)));
                 if (!out) throw py::error_already_set();
                 auto* dst = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(out.ptr()));
                 unwrap(without_gil(s, [&] { return view->copy_to(std::span<uint8_t>(dst, n)); }));
                 return out;
             },
             py::arg("uri"), "A CRC-checked copy of the object's bytes, or None when absent.")
        .def("head",
             [](PyStore& s, py::handle uri) -> py::object {
                 const FabricUri u = to_uri(uri);
                 MemObjectStore& store = s.get();
                 auto r = unwrap(without_gil(s, [&] { return store.head(u); }));
                 if (!r) return py::none();
                 return py::cast(*r);
             },
             py::arg("uri"), "ObjectInfo of the object, or None when absent.")
        .def("remove",
             [](PyStore& s, py::handle uri, py::object if_version) {
                 const FabricUri u = to_uri(uri);
                 RemoveOptions o;
                 if (!if_version.is_none()) o.if_version = uint_arg(if_version, "if_version");
                 MemObjectStore& store = s.get();
                 return unwrap(without_gil(s, [&] { return store.remove(u, o); }));
             },
             py::arg("uri"), py::kw_only(), py::arg("if_version") = py::none(),
             "Removes the object; True when one was removed. if_version: only that version (else Conflict).")
        .def("list",
             [](PyStore& s, py::handle bucket_or_uri, const std::string& prefix) {
                 std::string pool_name = s.pool.name(), bucket;
                 std::string pre = prefix;
                 const std::string text = py::str(bucket_or_uri);
                 if (text.rfind("fabric://", 0) == 0) {
                     // fabric://pool/bucket/ or fabric://pool/bucket/prefix
                     const std::string rest = text.substr(9);
                     const size_t a = rest.find('/');
                     if (a == std::string::npos) raise(Errc::invalid_uri, "list " + text + ": expected fabric://pool/bucket/[prefix]");
                     pool_name = rest.substr(0, a);
                     const size_t b = rest.find('/', a + 1);
                     bucket = rest.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
                     if (b != std::string::npos) pre = rest.substr(b + 1) + prefix;
                 } else {
                     bucket = text;
                 }
                 MemObjectStore& store = s.get();
                 return unwrap(without_gil(s, [&] { return store.list(pool_name, bucket, pre); }));
             },
             py::arg("bucket"), py::arg("prefix") = "",
             "Keys in `bucket` (a name, or 'fabric://pool/bucket/prefix') starting with prefix, sorted.")
        .def("loan",
             [](std::shared_ptr<PyStore> s, py::handle uri, uint64_t size, bool if_absent, py::object if_version,
                py::object fence, py::object content_type, py::object metadata, py::object ttl) {
                 PyLoan l;
                 l.uri = to_uri(uri);
                 l.options = put_options(if_absent, if_version, fence, content_type, metadata, ttl);
                 MemObjectStore& store = s->get();
                 auto r = unwrap(without_gil(*s, [&] { return store.loan(l.uri, size, l.options); }));
                 l.holder = std::make_shared<LoanHolder>(LoanHolder{std::move(r)});
                 l.store = std::move(s);
                 return l;
             },
             py::arg("uri"), py::arg("size"), py::kw_only(), py::arg("if_absent") = false,
             py::arg("if_version") = py::none(), py::arg("fence") = py::none(), py::arg("content_type") = py::none(),
             py::arg("metadata") = py::none(), py::arg("ttl") = py::none(),
             "Reserves `size` bytes for `uri`: fill loan.data, then loan.commit() (zero-copy write).")
        .def("stats",
             [](PyStore& s) {
                 MemObjectStore& store = s.get();
                 return stats_dict(without_gil(s, [&] { return store.stats(); }));
             },
             "Objects, heap use, active loans and pins (of every process).")
        .def("lease_ids", [](PyStore& s) {
            MemObjectStore& store = s.get();
            return without_gil(s, [&] { return store.lease_ids(); });
        })
        .def_property_readonly("name", [](PyStore& s) { return s.get().config().name; })
        .def_property_readonly("pool", [](PyStore& s) { return s.pool; })
        .def("close", [](PyStore& s) { close_handle(s); },
             "Closes this handle: later calls raise Closed; a call running on another thread finishes "
             "first. Objects and loans from it stay usable until closed themselves (a loan's commit() "
             "needs the store open).")
        .def("__enter__", [](std::shared_ptr<PyStore> s) { return s; })
        .def("__exit__", [](PyStore& s, py::args) { close_handle(s); });
}

}  // namespace fabric_shm::py_bind
