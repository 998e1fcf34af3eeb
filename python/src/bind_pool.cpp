// SPDX-License-Identifier: MIT
// Pool (a shared handle, closed by close() or the end of a `with` block), FabricUri, leases and
// RenewalManager, the pin limit.
#include <pybind11/operators.h>

#include "common.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/lease.h"
#include "fabric_shm/names.h"

namespace fabric_shm::py_bind {

namespace {

uint64_t size_arg(py::handle value, std::string_view what, uint64_t fallback) {
    if (value.is_none()) return fallback;
    if (PyUnicode_Check(value.ptr())) return unwrap(parse_size_bytes(value.cast<std::string>()));
    if (!PyLong_Check(value.ptr()))
        throw py::type_error(std::string(what) + ": expected an int (bytes) or a str such as '64M'");
    const long long v = value.cast<long long>();
    if (v < 0) raise(Errc::invalid_argument, std::string(what) + " " + std::to_string(v) + ": must not be negative");
    return uint64_t(v);
}

struct PyRenewals : Guarded {
    PyRenewals() : Guarded("this renewal manager") {}
    std::unique_ptr<RenewalManager> manager;  ///< never closed: lives as long as the Python object
    Pool pool;
};

py::dict reap_report(const ReapReport& r) {
    py::dict d;
    d["dead_processes"] = r.dead_processes;
    d["repaired_entries"] = r.repaired_entries;
    d["reclaimed_regions"] = r.reclaimed_regions;
    d["busy_regions"] = r.busy_regions;
    d["reclaimed_bytes"] = r.reclaimed_bytes;
    d["kind_items"] = r.kind_items;
    d["pool_removed"] = r.pool_removed;
    d["notes"] = r.notes;
    return d;
}

double remaining_s(const LeaseInfo& l) {
    if (l.revoked) return 0.0;
    const uint64_t now = mono_now_ns();
    return l.expires_ns > now ? seconds(l.expires_ns - now) : 0.0;
}

}  // namespace

void bind_pool(py::module_& m) {
    m.def("pin_limit", &pin_limit,
          "Most objects this process may hold pinned through store.get() at once (default 256). Pins are a "
          "shared, bounded resource (1,024 records per store for every process together).");
    m.def("set_pin_limit", &set_pin_limit, py::arg("limit"), "Sets pin_limit() (1 .. 1048576).");
    m.def("pins_held", &pins_held, "Objects this process holds pinned through fabric_shm now.");
    m.def("default_pool_name", [] { return std::string(default_pool_name()); },
          "$FABRIC_SHM_POOL when set, else 'default' (the pool the command-line tools use).");
    m.def("monotonic_ns", &mono_now_ns, "CLOCK_MONOTONIC in ns: the clock of leases and heartbeats.");

    py::class_<FabricUri>(m, "FabricUri", "fabric://POOL/BUCKET/KEY: the address of an object.")
        .def(py::init([](const std::string& text) { return unwrap(FabricUri::parse(text)); }), py::arg("text"),
             "Parses 'fabric://pool/bucket/key' (InvalidUri naming what is wrong).")
        .def_static("parse", [](const std::string& text) { return unwrap(FabricUri::parse(text)); }, py::arg("text"))
        .def_static("make",
                    [](const std::string& pool, const std::string& bucket, const std::string& key) {
                        return unwrap(FabricUri::make(pool, bucket, key));
                    },
                    py::arg("pool"), py::arg("bucket"), py::arg("key"))
        .def_property_readonly("pool", &FabricUri::pool)
        .def_property_readonly("bucket", &FabricUri::bucket)
        .def_property_readonly("key", &FabricUri::key)
        .def("object_key", &FabricUri::object_key, "'bucket/key': the store's key within one pool.")
        .def("__str__", &FabricUri::to_string)
        .def("__repr__", [](const FabricUri& u) { return "FabricUri('" + u.to_string() + "')"; })
        .def("__eq__", [](const FabricUri& a, py::handle b) {
            if (py::isinstance<FabricUri>(b)) return a == b.cast<FabricUri>();
            if (PyUnicode_Check(b.ptr())) return a.to_string() == b.cast<std::string>();
            return false;
        })
        .def("__hash__", [](const FabricUri& u) { return py::hash(py::str(u.to_string())); });

    py::class_<LeaseInfo>(m, "LeaseInfo", "A lease: the pool's or a region's (times on the monotonic clock, ns).")
        .def_readonly("lease_id", &LeaseInfo::lease_id)
        .def_readonly("is_pool", &LeaseInfo::is_pool)
        .def_readonly("kind", &LeaseInfo::kind)
        .def_readonly("name", &LeaseInfo::name)
        .def_readonly("created_ns", &LeaseInfo::created_ns)
        .def_readonly("expires_ns", &LeaseInfo::expires_ns)
        .def_readonly("ttl_ns", &LeaseInfo::ttl_ns)
        .def_readonly("renewed_ns", &LeaseInfo::renewed_ns)
        .def_readonly("renew_count", &LeaseInfo::renew_count)
        .def_readonly("revoked", &LeaseInfo::revoked)
        .def_property_readonly("remaining", &remaining_s, "Seconds until it runs out (0 once it has).")
        .def("__repr__", [](const LeaseInfo& l) {
            return "LeaseInfo(id=" + std::to_string(l.lease_id) + ", name='" + (l.is_pool ? "<pool>" : l.name) +
                   "', remaining=" + std::to_string(remaining_s(l)) + "s)";
        });

    py::class_<Pool>(m, "Pool",
                     "A shared handle to one pool (the shm segment /dev/shm/fabric-shm.<name>). Every object "
                     "opened on it keeps it alive; close() (or the end of a `with` block) closes it for all "
                     "of them: later calls raise fabric_shm.Closed. Memoryviews of pinned objects stay "
                     "readable until released.")
        .def_static(
            "open",
            [](py::object name, bool create_if_missing, py::object size, py::object ttl, uint32_t mode,
               bool read_only, py::object heartbeat_timeout, bool reap_on_open) {
                const std::string n = name.is_none() ? std::string(default_pool_name()) : name.cast<std::string>();
                OpenOptions o;
                o.create_if_missing = create_if_missing;
                o.read_only = read_only;
                o.reap_on_open = reap_on_open;
                o.create.size_bytes = size_arg(size, "size", kDefaultPoolSize);
                o.create.ttl = duration_or(ttl, "ttl", kDefaultPoolTtl);
                o.create.mode = mode;
                o.heartbeat_timeout = duration_or(heartbeat_timeout, "heartbeat_timeout", Duration::zero());
                py::gil_scoped_release nogil;
                auto r = Pool::open(n, o);
                py::gil_scoped_acquire gil;
                return unwrap(std::move(r));
            },
            py::arg("name") = py::none(), py::kw_only(), py::arg("create_if_missing") = false,
            py::arg("size") = py::none(), py::arg("ttl") = py::none(), py::arg("mode") = 0600,
            py::arg("read_only") = false, py::arg("heartbeat_timeout") = py::none(), py::arg("reap_on_open") = true,
            "Attaches to pool `name` (default: fabric_shm.default_pool_name()). create_if_missing creates it "
            "with `size` (bytes or '64M'), `ttl` (timedelta or seconds) and `mode`. NotFound when absent.")
        .def_static(
            "create",
            [](const std::string& name, py::object size, py::object ttl, uint32_t mode, int numa_node) {
                PoolOptions o;
                o.name = name;
                o.size_bytes = size_arg(size, "size", kDefaultPoolSize);
                o.ttl = duration_or(ttl, "ttl", kDefaultPoolTtl);
                o.mode = mode;
                o.numa_node = numa_node;
                py::gil_scoped_release nogil;
                auto r = Pool::create(o);
                py::gil_scoped_acquire gil;
                return unwrap(std::move(r));
            },
            py::arg("name"), py::kw_only(), py::arg("size") = py::none(), py::arg("ttl") = py::none(),
            py::arg("mode") = 0600, py::arg("numa_node") = -1,
            "Creates pool `name` (AlreadyExists when it exists). size: bytes or '64M' (default 32 MiB); ttl: "
            "the pool lease (default 1 h).")
        .def_static("list", &Pool::list, "Names of the pools present (sorted).")
        .def_static("remove", [](const std::string& name, bool force) { unwrap(Pool::remove(name, force)); },
                    py::arg("name"), py::arg("force") = false,
                    "Removes a pool; refuses (Busy) while other live processes use it unless force.")
        .def_static("segment_path", &Pool::segment_path, py::arg("name"))
        .def("close", &Pool::close,
             "Closes the pool for this process: every object opened from it raises Closed from now on. "
             "Idempotent.")
        .def_property_readonly("closed", &Pool::closed)
        .def("__enter__", [](Pool& p) -> Pool& { return p; })
        .def("__exit__", [](Pool& p, py::args) { p.close(); })
        .def_property_readonly("name", [](const Pool& p) { return p.name(); })
        .def_property_readonly("created", [](const Pool& p) { return p.created(); },
                               "True when the call that returned this handle created the pool.")
        .def_property_readonly("read_only", [](const Pool& p) { return p.read_only(); })
        .def_property_readonly("size", [](const Pool& p) {
            check_pool_open(p);
            return p.size();
        })
        .def_property_readonly("incarnation", [](const Pool& p) {
            check_pool_open(p);
            return p.incarnation();
        })
        .def_property_readonly("pool_lease_id", [](const Pool& p) {
            check_pool_open(p);
            return p.pool_lease_id();
        })
        .def_property_readonly("lifecycle", &Pool::lifecycle, "'live', 'reclaiming', 'gone' or 'closed'.")
        .def("heartbeat", [](const Pool& p) {
            py::gil_scoped_release nogil;
            auto s = p.heartbeat();
            py::gil_scoped_acquire gil;
            unwrap(std::move(s));
        }, "Refreshes this process's registration (RenewalManager.tick and blocking calls do it).")
        .def("leases", [](const Pool& p) {
            check_pool_open(p);
            return p.leases();
        })
        .def("lease", [](const Pool& p, uint64_t id) { return unwrap(p.lease(id)); }, py::arg("lease_id"))
        .def("renew_lease",
             [](const Pool& p, uint64_t id, py::object ttl) {
                 return to_ns(unwrap(p.renew_lease(id, MonoClock::now(), duration_or(ttl, "ttl", Duration::zero()))));
             },
             py::arg("lease_id"), py::arg("ttl") = py::none(),
             "Extends a live lease to now + ttl (default: its own TTL); returns the new expiry (ns).")
        .def("reap",
             [](Pool& p, bool dry_run) {
                 check_pool_open(p);
                 ReapReport r;
                 {
                     py::gil_scoped_release nogil;
                     r = p.reap(MonoClock::now(), dry_run);
                 }
                 return reap_report(r);
             },
             py::arg("dry_run") = false,
             "Reaps dead processes and expired regions (what fabric-shm-reaper does); returns a report.")
        .def("__repr__", [](const Pool& p) {
            return "Pool('" + (p.valid() ? p.name() : std::string()) + "'" + (p.closed() ? ", closed" : "") + ")";
        });

    py::class_<PyRenewals>(m, "RenewalManager",
                           "Renews leases when tick() is called (nothing renews in the background): stop "
                           "calling it and the leases run out on schedule, then the reaper reclaims them.")
        .def(py::init([](const Pool& pool) {
                 check_pool_open(pool);
                 auto r = std::make_unique<PyRenewals>();
                 r->manager = std::make_unique<RenewalManager>(pool);
                 r->pool = pool;
                 return r;
             }),
             py::arg("pool"))
        .def("register_lease",
             [](PyRenewals& r, uint64_t lease_id, double renew_at_fraction, double jitter_fraction,
                py::object min_renew) {
                 RenewalPolicy policy;
                 policy.renew_at_fraction = renew_at_fraction;
                 policy.jitter_fraction = jitter_fraction;
                 policy.min_renew = duration_or(min_renew, "min_renew", policy.min_renew);
                 unwrap(without_gil(r, [&] { return r.manager->register_lease(lease_id, policy); }));
             },
             py::arg("lease_id"), py::kw_only(), py::arg("renew_at_fraction") = 0.75,
             py::arg("jitter_fraction") = 0.10, py::arg("min_renew") = py::none(),
             "Starts renewing a lease: at renew_at_fraction of its TTL (+- jitter), at most once per min_renew "
             "(default 30 s).")
        .def("register_pool_leases",
             [](PyRenewals& r) {
                 check_pool_open(r.pool);
                 return unwrap(without_gil(r, [&] { return r.manager->register_pool_leases(); })).tracked;
             },
             "Registers every lease the pool's objects use (the pool's, its stores', its topics'); returns "
             "how many leases are tracked now.")
        .def("unregister", [](PyRenewals& r, uint64_t id) {
            return without_gil(r, [&] { return r.manager->unregister(id); });
        }, py::arg("lease_id"))
        .def("__len__", [](PyRenewals& r) { return without_gil(r, [&] { return r.manager->size(); }); })
        .def("tick",
             [](PyRenewals& r) {
                 TickSummary s = without_gil(r, [&] { return r.manager->tick(MonoClock::now()); });
                 unwrap(std::move(s.registration));
                 py::dict d;
                 d["renewed"] = s.renewed;
                 d["failed"] = s.failed;
                 d["dropped"] = s.dropped;
                 const uint64_t now = mono_now_ns();
                 const uint64_t due = to_ns(s.next_due);
                 d["next_due"] = s.next_due == MonoTime::max() ? py::object(py::none())
                                                               : py::object(py::float_(due > now ? seconds(due - now) : 0.0));
                 py::list errors;
                 for (const RenewalOutcome& o : s.outcomes)
                     if (o.kind != RenewalOutcomeKind::renewed)
                         errors.append(py::make_tuple(o.lease_id, std::string(errc_name(o.error.code)), o.error.message));
                 d["errors"] = errors;
                 return d;
             },
             "Renews every lease that is due and heartbeats the registry. Returns {'renewed', 'failed', "
             "'dropped', 'next_due' (seconds or None), 'errors' [(lease_id, code, message)]}. Raises "
             "StaleGeneration when this process was fenced (open the pool again).")
        .def("remaining",
             [](PyRenewals& r, uint64_t lease_id) {
                 return seconds(to_ns(unwrap(without_gil(r, [&] { return r.manager->remaining(lease_id); }))));
             },
             py::arg("lease_id"), "Seconds until the lease runs out (the recipe's 'lease TTL remaining').");
}

}  // namespace fabric_shm::py_bind
