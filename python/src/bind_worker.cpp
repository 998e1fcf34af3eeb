// SPDX-License-Identifier: MIT
// Worker: the library's WorkerLoop (fenced results, version skip, retries, DLQ, heartbeats, lease
// renewal) with a Python handler; JobCoordinator with its output stores. One item at a time
// runs WorkerLoop::run here; concurrency > 1 and `async def` handlers run the loop's
// asynchronous form (_AsyncLoop below: acquire/complete/service/wait_fd) from the asyncio
// driver in python/fabric_shm/_async_worker.py.
#include <atomic>
#include <chrono>
#include <optional>
#include <vector>

#include "common.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/worker_loop.h"
#include "store.h"

namespace fabric_shm::py_bind {

namespace {

/// Objects up to this size reach the handler as a copy (cheaper than a second pin); larger ones
/// as a view of a pin of their own, which stays valid if the handler keeps the view.
constexpr size_t kCopyBelowBytes = 4096;

/// The item a handler gets. Its keep_alive() works only during the handler call.
struct PyWorkItem {
    FabricUri uri;
    std::string topic;
    uint32_t partition = 0;
    uint64_t offset = 0, version = 0;
    uint32_t attempt = 1;
    ObjectInfo info;
    py::object data;
    py::bytes key;
    const WorkItem* live = nullptr;  ///< set during the handler call only
    /// Handed out by an _AsyncLoop: its driver heartbeats and renews (keep_alive is a no-op).
    bool serviced_by_driver = false;
};

/// The bytes of `item` for the handler: a copy, or a view of a pin of our own through `store`.
py::object data_of(const WorkItem& item, MemObjectStore* store) {
    auto copy = [&] {
        py::bytes b(reinterpret_cast<const char*>(item.data.data()), item.data.size());
        PyObject* mv = PyMemoryView_FromObject(b.ptr());
        if (mv == nullptr) throw py::error_already_set();
        return py::reinterpret_steal<py::object>(mv);
    };
    if (item.data.size() <= kCopyBelowBytes || !store || pins_held() >= pin_limit()) return copy();
    // The loop's own pin ends with the call (or the ticket); a view the handler keeps must
    // outlive it, so the view is of a pin of our own, of the very same version (same bytes:
    // the loop's pin keeps them).
    acquire_pin_slot(item.uri.to_string());
    auto pinned = store->pin(item.uri);
    if (!pinned || !pinned->has_value() || (*pinned)->info().version != item.version ||
        (*pinned)->bytes().data() != item.data.data()) {
        release_pin_slot();
        return copy();  // overwritten meanwhile: the handler still gets the version the loop read
    }
    auto holder = std::make_shared<PinHolder>(std::move(**pinned));
    const auto bytes = holder->view.bytes();
    return memoryview_of(make_exporter(holder, bytes.data(), bytes.size(), true));
}

PyWorkItem work_item_of(const WorkItem& item, MemObjectStore* store, const WorkItem* live) {
    return PyWorkItem{item.uri, std::string(item.topic), item.partition, item.offset, item.version, item.attempt,
                      item.info ? *item.info : ObjectInfo{}, data_of(item, store),
                      py::bytes(reinterpret_cast<const char*>(item.key.data()), item.key.size()), live,
                      live == nullptr};
}

struct PyWorker : Guarded {
    PyWorker() : Guarded("this worker") {}
    Pool pool;
    WorkerConfig config;  ///< concurrency and window are used by the asynchronous form only
    py::object handler;
    std::unique_ptr<WorkerLoop> loop;       ///< under the lock: during run() only
    std::unique_ptr<MemObjectStore> store;  ///< pins of large inputs handed to the handler
    /// stop() and close() calls so far. A run notes the count when it is entered and stops once
    /// it differs: a stop() sent as a run starts is kept, one sent before a run is entered ends
    /// only the runs already entered, and nothing is ever cleared. (A run entered on a second
    /// thread while another holds the worker counts as entered: a stop() then ends both.)
    std::atomic<uint64_t> stops{0};
    bool stop_asked_since(uint64_t at) const {
        return stops.load() != at || closed.load(std::memory_order_relaxed);
    }
    CallbackGate gate;
    WorkerStats last_stats;  ///< of the last run(), under the lock

    Result<std::vector<uint8_t>> process(const WorkItem& item);
    void release() noexcept override {
        loop.reset();
        store.reset();
    }
    /// close() and the end of a `with` block: the run in progress stops after its item.
    void close() {
        stops.fetch_add(1);
        close_handle(*this);
    }
};

Result<std::vector<uint8_t>> PyWorker::process(const WorkItem& item) {
    // A stop (Ctrl-C in the handler) leaves the item uncommitted without counting a failure:
    // stale_epoch is the loop's "not ours any more" answer, redelivered to the next owner.
    if (gate.stop) return make_error(Errc::stale_epoch, gate.stop_reason);
    std::vector<uint8_t> out;
    Status st = gate.call([&] {
        py::object wi = py::cast(work_item_of(item, store.get(), &item));
        struct Unlive {
            py::object& o;
            ~Unlive() { o.cast<PyWorkItem&>().live = nullptr; }
        } unlive{wi};
        py::object r = handler(wi);
        if (r.is_none()) return;
        BytesArg bytes(r, "handler result");
        out.assign(bytes.span().begin(), bytes.span().end());
    });
    if (!st) {
        if (gate.stop) return make_error(Errc::stale_epoch, gate.stop_reason);
        return std::move(st).error();
    }
    return out;
}

/// A ticket of an _AsyncLoop and the WorkItem its handler gets (built when it was handed out).
struct PyTicket {
    WorkTicket ticket;
    py::object item;
};

/// WorkerLoop's asynchronous form for the asyncio driver (_async_worker.py): one driver thread
/// (the event loop's) calls acquire/complete/fail/service; handlers run as tasks or in threads
/// and only see their WorkItem. Every call releases the GIL around the library call.
struct PyAsyncLoop : Guarded {
    PyAsyncLoop() : Guarded("this worker loop") {}
    Pool pool;
    std::unique_ptr<WorkerLoop> loop;
    /// Pins of large inputs handed to handlers: acquire() keeps its own reference while it makes
    /// the WorkItems with the GIL held (after the lock: a close() may release this meanwhile).
    std::shared_ptr<MemObjectStore> store;
    std::vector<WorkTicket> tickets;  ///< acquire()'s buffer, under the lock
    py::object owner;                       ///< the Worker: close() leaves the stats there
    WorkerLoop& get() { return checked(*this, loop, pool); }
    void release() noexcept override {
        loop.reset();
        store.reset();
    }
};

/// A JobOutputStore as JobCoordinator.run calls it, without the GIL: an ObjectOutputStore under
/// its store handle's lock (the handle may be closed meanwhile: then Closed, never the
/// destroyed store), a MemoryOutputStore under a mutex of its own (runs on two threads may
/// share it).
class LockedOutputs final : public JobOutputStore {
public:
    LockedOutputs(std::shared_ptr<JobOutputStore> inner, std::shared_ptr<PyStore> store)
        : inner_(std::move(inner)), store_(std::move(store)) {}
    Status put(ChunkId id, ByteView output) override {
        return with([&] { return inner_->put(id, output); });
    }
    Result<std::optional<std::vector<uint8_t>>> get(ChunkId id) override {
        return with([&] { return inner_->get(id); });
    }
    Result<bool> contains(ChunkId id) override {
        return with([&] { return inner_->contains(id); });
    }
    Status clear() override {
        return with([&] { return inner_->clear(); });
    }

private:
    template <class F>
    auto with(F&& f) -> decltype(f()) {
        if (!store_) {
            std::lock_guard<std::mutex> lock(mutex_);
            return f();
        }
        HandleLock lock(*store_);
        if (!lock.held()) return busy_error(*store_);
        if (store_->closed.load(std::memory_order_relaxed)) return closed_error(*store_);
        return f();
    }
    std::shared_ptr<JobOutputStore> inner_;
    std::shared_ptr<PyStore> store_;
    std::mutex mutex_;
};

WorkTicket take_ticket(PyTicket& t) {
    if (!t.ticket.valid()) raise(Errc::invalid_argument, "this ticket was completed already");
    return std::move(t.ticket);
}

py::dict stats_dict(const WorkerStats& s) {
    py::dict d;
    d["processed"] = s.processed;
    d["skipped"] = s.skipped;
    d["failed_attempts"] = s.failed_attempts;
    d["dead_lettered"] = s.dead_lettered;
    d["forwarded"] = s.forwarded;
    d["bytes_in"] = s.bytes_in;
    d["bytes_out"] = s.bytes_out;
    d["rebalances"] = s.rebalances;
    d["superseded"] = s.superseded;
    d["abandoned"] = s.abandoned;
    d["store_waits"] = s.store_waits;
    d["store_full"] = s.store_full;
    d["inputs_deleted"] = s.inputs_deleted;
    d["inputs_kept"] = s.inputs_kept;
    d["epoch"] = s.epoch;
    d["partitions"] = s.partitions;
    d["latency_p50_ns"] = s.latency.p50_ns;
    d["latency_p99_ns"] = s.latency.p99_ns;
    d["latency_samples"] = s.latency.samples;
    d["busy_s"] = s.busy_seconds();  // first message handed out -> last result (0.0 before both)
    return d;
}

const char* exit_name(WorkerExit e) {
    switch (e) {
        case WorkerExit::count_reached: return "count_reached";
        case WorkerExit::idle: return "idle";
        default: return "stopped";
    }
}

struct PyOutputs {
    std::shared_ptr<LockedOutputs> outputs;
};

}  // namespace

void bind_worker(py::module_& m) {
    py::class_<PyWorkItem>(m, "WorkItem",
                           "One notified object being processed: .data is a read-only memoryview of its bytes (for "
                           "objects over 4 KiB a view of the pinned bytes, without a copy).")
        .def_readonly("uri", &PyWorkItem::uri)
        .def_readonly("topic", &PyWorkItem::topic)
        .def_readonly("partition", &PyWorkItem::partition)
        .def_readonly("offset", &PyWorkItem::offset)
        .def_readonly("version", &PyWorkItem::version)
        .def_readonly("attempt", &PyWorkItem::attempt, "1-based; > 1 after failures or a crashed worker.")
        .def_readonly("info", &PyWorkItem::info)
        .def_readonly("data", &PyWorkItem::data)
        .def_readonly("key", &PyWorkItem::key, "The notification's key (b'' when unkeyed).")
        .def("keep_alive",
             [](PyWorkItem& w) {
                 if (w.serviced_by_driver) return;  // the asynchronous driver heartbeats and renews for it
                 if (w.live == nullptr) raise(Errc::closed, "keep_alive: the handler call of this item has returned");
                 const WorkItem* item = w.live;
                 // With the GIL held (a heartbeat and renewals: bounded, microseconds): the handler
                 // may hand the item to another thread, and the GIL is what keeps the handler call
                 // from returning (and the loop from dropping the item) meanwhile, and two threads
                 // from heartbeating the loop's group at once.
                 unwrap(item->keep_alive());
             },
             "Long handlers of a one-at-a-time worker call this every ~100 ms: heartbeats the group and renews "
             "leases. An error (the member was evicted, a lease ran out) means: abandon the item and re-raise it. "
             "A no-op for items of a concurrent or async worker, whose driver does it while handlers run.")
        .def("__repr__", [](const PyWorkItem& w) {
            return "WorkItem('" + w.uri.to_string() + "', version=" + std::to_string(w.version) + ", attempt=" +
                   std::to_string(w.attempt) + ")";
        });

    py::class_<PyWorker>(m, "Worker",
                         "The recipe's worker loop with a Python handler: joins `group` on `topic`, reads each "
                         "notified object, calls the handler, writes its result (fenced by the member's epoch) to "
                         "fabric://POOL/results/{bucket}/{key}, commits. Retries, dead letters, version skip, "
                         "heartbeats and lease renewal are the library's (fabric-shm-worker's).")
        .def(py::init([](const Pool& pool, const std::string& topic, const std::string& group, uint32_t concurrency,
                         py::object order, const std::string& member_id, const std::string& store,
                         const std::string& result_bucket, const std::string& result_key, bool shared_results,
                         const std::string& next_topic, const std::string& dlq_topic, uint32_t max_attempts,
                         py::object backoff_initial, py::object backoff_max, py::object session_timeout, uint32_t batch,
                         uint32_t partitions_if_created, uint32_t window, py::object store_wait,
                         py::object result_ttl, bool delete_input) {
                 check_pool_open(pool);
                 if (concurrency == 0) raise(Errc::invalid_argument, "concurrency 0: at least 1");
                 auto w = std::make_unique<PyWorker>();
                 w->pool = pool;
                 WorkerConfig& c = w->config;
                 if (!order.is_none()) {
                     const std::string o = order.cast<std::string>();
                     if (o == "key") c.order = OrderMode::key;
                     else if (o == "none") c.order = OrderMode::none;
                     else raise(Errc::invalid_argument, "order '" + o + "': expected 'key' (messages of one key in "
                                                        "offset order) or 'none'");
                 }
                 c.topic = topic;
                 c.group = group;
                 c.member_id = member_id;
                 c.store = store;
                 c.result_bucket = result_bucket;
                 c.result_key = result_key;
                 c.shared_results = shared_results;
                 c.next_topic = next_topic;
                 c.dlq_topic = dlq_topic;
                 c.max_attempts = max_attempts;
                 c.backoff_initial_ns = duration_ns_or(backoff_initial, "backoff_initial", c.backoff_initial_ns);
                 c.backoff_max_ns = duration_ns_or(backoff_max, "backoff_max", c.backoff_max_ns);
                 c.session_timeout_ns = duration_ns_or(session_timeout, "session_timeout", c.session_timeout_ns);
                 c.store_wait = Duration(duration_ns_or(store_wait, "store_wait", 0));
                 c.result_ttl = Duration(duration_ns_or(result_ttl, "result_ttl", 0));
                 c.delete_input = delete_input;
                 c.batch = batch;
                 c.partitions_if_created = partitions_if_created;
                 c.concurrency = concurrency;
                 c.window = window;
                 if (window == 0 || window > kMaxWorkWindow)
                     raise(Errc::invalid_argument, "window " + std::to_string(window) + ": must be in [1, " +
                                                       std::to_string(kMaxWorkWindow) + "]");
                 return w;
             }),
             py::arg("pool"), py::kw_only(), py::arg("topic"), py::arg("group"), py::arg("concurrency") = 1,
             py::arg("order") = py::none(), py::arg("member_id") = "", py::arg("store") = "default",
             py::arg("result_bucket") = "results", py::arg("result_key") = std::string(kDefaultResultKey),
             py::arg("shared_results") = false, py::arg("next_topic") = "", py::arg("dlq_topic") = "",
             py::arg("max_attempts") = 3, py::arg("backoff_initial") = py::none(), py::arg("backoff_max") = py::none(),
             py::arg("session_timeout") = py::none(), py::arg("batch") = 16, py::arg("partitions_if_created") = 4,
             py::arg("window") = kMaxWorkWindow, py::arg("store_wait") = py::none(),
             py::arg("result_ttl") = py::none(), py::arg("delete_input") = false,
             "concurrency: items in flight at once (> 1, or an `async def` handler, runs the asynchronous "
             "driver: handlers as asyncio tasks, or plain functions in a thread pool of that size). order: "
             "'key' (default: items with the same key complete in offset order) or 'none'. window: items of "
             "one partition in flight past its first item not done (1..8). store_wait: how long a result put "
             "on a full store waits for space within the attempt (default: the session timeout), then the item "
             "is handed back, never dead-lettered. result_ttl: results expire this long after they are written "
             "(default: never). delete_input: remove each input after the commit that covers it, if it was "
             "not uploaded again meanwhile (refused when another group is on the topic).")
        .def("handler",
             [](PyWorker& w, py::function f) {
                 w.handler = f;
                 return f;
             },
             py::arg("function"),
             "Decorator: @worker.handler def f(item: WorkItem) -> bytes-like (the result) or None (an empty "
             "result). A fabric_shm.Error's code decides retry or dead letter (NotFound, InvalidArgument, "
             "Corrupt, ... go to the DLQ at once); any other exception is retried, then dead-lettered.")
        .def("run",
             [](py::object self, uint64_t count, py::object idle) -> py::object {
                 PyWorker& w = self.cast<PyWorker&>();
                 w.check_open();
                 if (!w.handler) raise(Errc::invalid_argument, "run: no handler (decorate a function with @worker.handler)");
                 // Noted before anything lets another thread run (the imports below): a stop()
                 // sent from now on ends this run.
                 const uint64_t stops_at = w.stops.load();
                 // The asyncio driver only when it is needed: importing it (asyncio, inspect) costs
                 // a plain handler's worker tens of milliseconds at its start.
                 if (w.config.concurrency > 1 ||
                     py::module_::import("fabric_shm._handler_kind").attr("is_async_handler")(w.handler).cast<bool>())
                     return py::module_::import("fabric_shm._async_worker").attr("run")(self, count, idle, stops_at);
                 WorkerConfig config = w.config;
                 config.count = count;
                 config.exit_when_idle_ns = duration_ns_or(idle, "idle", 0);
                 SignalWatch watch;
                 // A join refused as busy (a paused process holds the group's lock) is tried
                 // for up to 10 s: Ctrl-C (KeyboardInterrupt) or stop() ('stopped') ends it,
                 // nothing joined.
                 auto stop_asked = [&] { return w.stop_asked_since(stops_at); };
                 config.open_should_stop = [&] { return stop_asked() || watch(); };
                 auto result = without_gil(w, [&]() -> Result<WorkerExit> {
                     if (!w.loop) {
                         auto loop = WorkerLoop::open(w.pool, config,
                                                      [&w](const WorkItem& item) { return w.process(item); });
                         // Stopped before or while it joined (maybe while it waited for another
                         // thread's run): its stats are an empty run's, not the previous run's.
                         if (!loop && loop.code() == Errc::interrupted && stop_asked()) {
                             w.last_stats = WorkerStats{};
                             return WorkerExit::stopped;
                         }
                         if (!loop) return std::move(loop).error();
                         w.loop = std::make_unique<WorkerLoop>(std::move(loop.value()));
                         StoreConfig sc;
                         sc.name = w.config.store;
                         if (auto s = MemObjectStore::attach(w.pool, w.config.store)) w.store = std::move(s.value());
                     }
                     auto r = w.loop->run([&] { return stop_asked() || w.gate.stop || watch(); });
                     w.last_stats = w.loop->stats();
                     // run() left the group: the next run() joins again with a fresh loop.
                     w.loop.reset();
                     return r;
                 });
                 w.gate.rethrow();
                 watch.rethrow_if_stopped();
                 return py::str(exit_name(unwrap(std::move(result))));
             },
             py::arg("count") = 0, py::arg("idle") = py::none(),
             "Processes until stop() (from a handler or another thread), Ctrl-C (KeyboardInterrupt, after "
             "committing what was done), `count` messages or `idle` (timedelta or seconds) without one; then "
             "commits and leaves the group. Returns 'stopped', 'count_reached' or 'idle'. The GIL is released "
             "except while the handler runs. With concurrency > 1 or an `async def` handler it runs "
             "run_async() in a new asyncio event loop (asyncio.run).")
        .def("run_async",
             [](py::object self, uint64_t count, py::object idle) {
                 PyWorker& w = self.cast<PyWorker&>();
                 w.check_open();
                 if (!w.handler) raise(Errc::invalid_argument, "run_async: no handler (decorate a function with @worker.handler)");
                 const uint64_t stops_at = w.stops.load();  // a stop() sent from now on ends this run
                 return py::module_::import("fabric_shm._async_worker").attr("run_async")(self, count, idle, stops_at);
             },
             py::arg("count") = 0, py::arg("idle") = py::none(),
             "Coroutine: run() inside a running asyncio event loop. Up to `concurrency` items in flight: an "
             "`async def` handler is awaited by one of `concurrency` worker tasks, a plain function runs in a "
             "thread pool. Results are "
             "completed on the event loop's thread as handlers finish (any order; the committed offset is the "
             "longest completed prefix), the group heartbeat and leases are serviced meanwhile. Cancelling it "
             "(Ctrl-C under asyncio.run) cancels the handlers in flight; their items go to the next owner.")
        .def("_open_async",
             [](py::object self, uint64_t count, py::object idle, py::object event_loop, py::object abort,
                uint64_t stops_at) {
                 PyWorker& w = self.cast<PyWorker&>();
                 w.check_open();
                 check_pool_open(w.pool);
                 auto l = std::make_unique<PyAsyncLoop>();
                 l->pool = w.pool;
                 l->owner = self;
                 WorkerConfig c = w.config;
                 c.count = count;
                 c.exit_when_idle_ns = duration_ns_or(idle, "idle", 0);
                 // Called in an executor thread (the driver awaits it), so the event loop runs on
                 // while a join refused as busy (a paused process holds the group's lock) is
                 // tried for up to 10 s; a stop() or close() since the run began ends the tries
                 // (None: the run says 'stopped'), and so does the run's own abort event (set when
                 // the driver is cancelled: Ctrl-C under asyncio.run, a TaskGroup, wait_for, a
                 // signal handler) or the event loop no longer running (KeyboardInterrupt out of
                 // run_until_complete).
                 c.open_should_stop = [&]() noexcept {
                     if (w.stop_asked_since(stops_at)) return true;
                     py::gil_scoped_acquire gil;
                     try {
                         return abort.attr("is_set")().cast<bool>() || !event_loop.attr("is_running")().cast<bool>();
                     } catch (py::error_already_set&) {
                         return true;  // no answer: the open ends, as it would at a stop
                     } catch (py::cast_error&) {
                         return true;
                     }
                 };
                 bool interrupted = false;
                 Status st = without_gil(*l, [&]() -> Status {
                     auto loop = WorkerLoop::open(l->pool, c);
                     if (!loop && loop.code() == Errc::interrupted) {  // asked before or between its tries
                         interrupted = true;
                         return {};
                     }
                     if (!loop) return std::move(loop).error();
                     l->loop = std::make_unique<WorkerLoop>(std::move(loop.value()));
                     if (auto s = MemObjectStore::attach(l->pool, c.store)) l->store = std::move(s.value());
                     return {};
                 });
                 unwrap(std::move(st));
                 if (interrupted) {  // no join: the run's stats are an empty run's
                     try {
                         locked(w, [&] { w.last_stats = WorkerStats{}; });
                     } catch (const FabricError&) {  // another thread's run holds the worker: its stats stand
                     }
                     return py::object(py::none());
                 }
                 l->tickets.resize(c.concurrency);
                 return py::cast(std::move(l));
             },
             py::arg("count"), py::arg("idle"), py::arg("event_loop"), py::arg("abort"), py::arg("stops_at"))
        .def("_stop_asked_since", [](PyWorker& w, uint64_t stops_at) { return w.stop_asked_since(stops_at); })
        .def_property_readonly("_handler", [](PyWorker& w) { return w.handler; })
        .def_property_readonly("_concurrency", [](PyWorker& w) { return w.config.concurrency; })
        .def("stop", [](PyWorker& w) { w.stops.fetch_add(1); },
             "Asks run() to return after the current item (from the handler or another thread); a concurrent "
             "or async run finishes the items in flight first.")
        .def_property_readonly("stats", [](PyWorker& w) {
            // Under the lock: a run() in progress on another thread finishes first. Readable
            // after close(); from the worker's own handler it raises Busy (the run holds the lock).
            return stats_dict(locked(w, [&] { return w.last_stats; }));
        }, "Counters of the last run(): processed, skipped, failed_attempts, dead_lettered, latency, ... "
           "Waits for a run() in progress on another thread; Busy from inside the worker's own handler.")
        .def("close", [](PyWorker& w) { w.close(); },
             "Stops and closes the worker: later calls raise Closed. A run() on another thread stops after the "
             "item in progress (committing it, leaving the group) and close() waits for it. From the "
             "worker's own handler, the run stops after that item.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PyWorker& w, py::args) { w.close(); });

    py::class_<PyTicket>(m, "_Ticket", "One item handed out by _AsyncLoop.acquire, until complete() or fail().")
        .def_readonly("item", &PyTicket::item)
        .def_property_readonly("done", [](const PyTicket& t) { return !t.ticket.valid(); });

    py::class_<PyAsyncLoop>(m, "_AsyncLoop",
                            "WorkerLoop's asynchronous form (acquire/complete/service/wait_fd) for the asyncio "
                            "driver of fabric_shm._async_worker: one thread calls it.")
        .def("acquire",
             [](PyAsyncLoop& l, size_t max) {
                 WorkerLoop& loop = l.get();
                 // The tickets and the store leave the lock with this call (another thread's
                 // acquire or close() may use the loop's buffer and store meanwhile).
                 std::vector<WorkTicket> got;
                 std::shared_ptr<MemObjectStore> store;
                 unwrap(without_gil(l, [&]() -> Status {
                     const size_t room = std::min(max, l.tickets.size());
                     FABRIC_TRY_ASSIGN(const size_t n,
                                       loop.acquire(std::span(l.tickets).first(room), std::chrono::nanoseconds(0)));
                     got.reserve(n);
                     for (size_t i = 0; i < n; ++i) got.push_back(std::move(l.tickets[i]));
                     store = l.store;
                     return {};
                 }));
                 py::list out;
                 for (WorkTicket& ticket : got) {
                     PyTicket t{std::move(ticket), py::none()};
                     t.item = py::cast(work_item_of(t.ticket.item(), store.get(), nullptr));
                     out.append(py::cast(std::move(t)));
                 }
                 return out;
             },
             py::arg("max"), "Up to `max` tickets ready now (never waits).")
        .def("complete",
             [](PyAsyncLoop& l, PyTicket& t, py::handle result) {
                 WorkerLoop& loop = l.get();
                 std::optional<BytesArg> bytes;
                 if (!result.is_none()) bytes.emplace(result, "handler result");  // TypeError: the ticket stays
                 WorkTicket ticket = take_ticket(t);
                 const std::span<const uint8_t> out = bytes ? bytes->span() : std::span<const uint8_t>{};
                 unwrap(without_gil(l, [&] { return loop.complete(std::move(ticket), out); }));
             },
             py::arg("ticket"), py::arg("result"),
             "Writes the result (bytes-like or None: empty), fenced; TypeError (ticket kept) for anything else.")
        .def("fail",
             [](PyAsyncLoop& l, PyTicket& t, py::handle exception) {
                 WorkerLoop& loop = l.get();
                 Error e = make_error(errc_of_exception(exception), describe_exception(exception));
                 WorkTicket ticket = take_ticket(t);
                 unwrap(without_gil(l, [&] { return loop.complete(std::move(ticket), e); }));
             },
             py::arg("ticket"), py::arg("exception"),
             "The handler raised `exception`: a fabric_shm.Error's code decides retry or dead letter, any other "
             "exception is io_error (retried, then dead-lettered).")
        .def("service",
             [](PyAsyncLoop& l) {
                 WorkerLoop& loop = l.get();
                 unwrap(without_gil(l, [&] { return loop.service(); }));
             })
        .def("wait_fd",
             [](PyAsyncLoop& l) {
                 WorkerLoop& loop = l.get();
                 return unwrap(without_gil(l, [&] { return loop.wait_fd(); }));
             })
        .def_property_readonly("in_flight", [](PyAsyncLoop& l) {
            return locked(l, [&] { return l.loop ? l.loop->in_flight() : 0; });
        })
        .def_property_readonly("finished", [](PyAsyncLoop& l) {
            return locked(l, [&] { return l.loop ? l.loop->finished() : true; });
        })
        .def_property_readonly("stats", [](PyAsyncLoop& l) {
            return stats_dict(locked(l, [&] { return l.loop ? l.loop->stats() : WorkerStats{}; }));
        })
        .def("close",
             [](PyAsyncLoop& l) {
                 // Commits what completed and leaves the group; tickets still out go to the next
                 // owner. The stats stay readable through the Worker. A second close() does nothing.
                 WorkerStats stats;
                 Status st;
                 bool closed_now = false;
                 close_handle(l, [&] {
                     if (!l.loop) return;
                     st = l.loop->close();
                     stats = l.loop->stats();
                     closed_now = true;
                 });
                 if (closed_now && !l.owner.is_none()) {
                     PyWorker& w = l.owner.cast<PyWorker&>();
                     locked(w, [&] { w.last_stats = stats; });
                 }
                 unwrap(std::move(st));
             });

    py::class_<PyOutputs>(m, "_OutputStore");
    m.def("MemoryOutputStore",
          [] { return PyOutputs{std::make_shared<LockedOutputs>(std::make_shared<MemoryOutputStore>(), nullptr)}; },
          "Chunk outputs in this process (lost with it).");
    m.def("ObjectOutputStore",
          [](std::shared_ptr<PyStore> s, const std::string& job, const std::string& bucket) {
              MemObjectStore& ms = s->get();  // used only under the store's lock, while it is open
              auto inner = std::make_shared<ObjectOutputStore>(ms, s->pool.name(), job, bucket);
              return PyOutputs{std::make_shared<LockedOutputs>(std::move(inner), std::move(s))};
          },
          py::arg("store"), py::arg("job"), py::arg("bucket") = "jobs",
          "Chunk outputs as objects fabric://POOL/BUCKET/JOB/<chunk id> of a MemObjectStore: shared by processes, "
          "so a crashed run's replacement skips what was done.");

    py::class_<RetryPolicy>(m, "RetryPolicy")
        .def(py::init([](uint32_t max_attempts, py::object initial_backoff, py::object max_backoff,
                         py::object store_wait) {
                 RetryPolicy p;
                 p.max_attempts = max_attempts;
                 p.initial_backoff = duration_or(initial_backoff, "initial_backoff", p.initial_backoff);
                 p.max_backoff = duration_or(max_backoff, "max_backoff", p.max_backoff);
                 p.store_wait = duration_or(store_wait, "store_wait", p.store_wait);
                 return p;
             }),
             py::kw_only(), py::arg("max_attempts") = 4, py::arg("initial_backoff") = py::none(),
             py::arg("max_backoff") = py::none(), py::arg("store_wait") = py::none(),
             "store_wait: how long a chunk's output waits for room in a full output store (default 30 s; "
             "not an attempt, the chunk is not run again).")
        .def_readonly("max_attempts", &RetryPolicy::max_attempts);

    py::class_<JobCoordinator>(m, "JobCoordinator",
                               "Idempotent jobs: chunks whose output exists are skipped, retryable errors retried "
                               "with backoff, permanent ones never.")
        .def(py::init([](py::object policy) {
                 return JobCoordinator(policy.is_none() ? RetryPolicy{} : policy.cast<RetryPolicy>());
             }),
             py::arg("policy") = py::none())
        .def("run",
             [](JobCoordinator& j, py::iterable chunks, PyOutputs& outputs, py::function exec, py::object aggregate) {
                 std::vector<WorkChunk> work;
                 ChunkId next = 0;
                 for (auto c : chunks) {
                     WorkChunk w;
                     py::handle data = c;
                     if (py::isinstance<py::tuple>(c)) {
                         auto t = c.cast<py::tuple>();
                         w.id = t[0].cast<ChunkId>();
                         data = t[1];
                     } else {
                         w.id = next;
                     }
                     next = w.id + 1;
                     BytesArg b(data, "chunk");
                     w.data.assign(b.span().begin(), b.span().end());
                     work.push_back(std::move(w));
                 }
                 CallbackGate gate;
                 std::optional<py::error_already_set> aggregate_error;
                 // The coordinator's waits (a retry's backoff; room in a full output store, up to
                 // store_wait, 30 s) ask should_stop every 20 ms: a Ctrl-C (SignalWatch) or a
                 // KeyboardInterrupt in exec (the gate) ends the run there, and it is raised below.
                 SignalWatch watch;
                 RetryPolicy policy = j.policy();
                 policy.should_stop = [&] { return gate.stop.has_value() || watch(); };
                 JobCoordinator coordinator(std::move(policy));
                 // JobCoordinator::run only reads its policy: threads may run one coordinator at
                 // once (the outputs lock themselves: LockedOutputs).
                 auto result = [&] {
                     py::gil_scoped_release nogil;
                     return coordinator.run(
                         work, *outputs.outputs,
                         [&](std::span<const uint8_t> chunk) -> Result<std::vector<uint8_t>> {
                             std::vector<uint8_t> out;
                             Status st = gate.call([&] {
                                 py::object r = exec(py::bytes(reinterpret_cast<const char*>(chunk.data()), chunk.size()));
                                 BytesArg b(r, "exec result");
                                 out.assign(b.span().begin(), b.span().end());
                             });
                             if (!st) return std::move(st).error();
                             return out;
                         },
                         [&](const JobCoordinator::Outputs& outs) {
                             std::vector<uint8_t> out;
                             if (aggregate.is_none() || gate.stop || watch.stopped()) return out;  // raised below instead
                             py::gil_scoped_acquire gil;
                             try {
                                 py::list items;
                                 for (const auto& [id, bytes] : outs)
                                     items.append(py::make_tuple(id, py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size())));
                                 py::object r = aggregate(items);
                                 BytesArg b(r, "aggregate result");
                                 out.assign(b.span().begin(), b.span().end());
                             } catch (py::error_already_set& e) {
                                 aggregate_error.emplace(std::move(e));
                             }
                             return out;
                         });
                 }();
                 gate.rethrow();
                 watch.rethrow_if_stopped();
                 if (aggregate_error) throw std::move(*aggregate_error);
                 const JobResult r = unwrap(std::move(result));
                 py::dict d;
                 d["complete"] = r.complete;
                 d["aggregate"] = py::bytes(reinterpret_cast<const char*>(r.aggregate.data()), r.aggregate.size());
                 py::list failed;
                 for (const ChunkFailure& f : r.failed)
                     failed.append(py::make_tuple(f.id, std::string(errc_name(f.error.code)), f.error.message, f.attempts));
                 d["failed"] = failed;
                 d["skipped"] = r.skipped;
                 d["executed"] = r.executed;
                 d["retries"] = r.retries;
                 return d;
             },
             py::arg("chunks"), py::arg("outputs"), py::arg("exec"), py::arg("aggregate") = py::none(),
             "Runs exec(chunk bytes) -> bytes for each chunk (bytes-like, or (id, bytes-like)) without an output "
             "in `outputs`; aggregate([(id, output)]) -> bytes once all succeeded. Returns {'complete', "
             "'aggregate', 'failed' [(id, code, message, attempts)], 'skipped', 'executed', 'retries'}.");

    m.def("default_member_id", &default_member_id, "'host-pid-starttime': unique per process incarnation.");
}

}  // namespace fabric_shm::py_bind
