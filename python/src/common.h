// SPDX-License-Identifier: MIT
// What every binding file of fabric_shm._core shares: errors as Python exceptions, durations,
// bytes-like arguments, the buffer exporter behind every zero-copy memoryview, and the rules
// for releasing the GIL around library calls.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"
#include "fabric_shm/uri.h"

namespace fabric_shm::py_bind {

namespace py = pybind11;

// ---- Errors -----------------------------------------------------------------------------------

/// A library error on its way to Python: the translator registered by bind_errors() raises the
/// exception class of its code (fabric_shm.NotFound, ...) with .code and .message set.
struct FabricError : std::exception {
    Error error;
    explicit FabricError(Error e) : error(std::move(e)) {}
    const char* what() const noexcept override { return error.message.c_str(); }
};
[[noreturn]] void raise(Errc code, std::string message);
[[noreturn]] inline void raise(Error e) { throw FabricError(std::move(e)); }

/// The value of a Result, or the Python exception of its error.
template <class T>
T unwrap(Result<T>&& r) {
    if (!r) raise(std::move(r).error());
    return std::move(r).value();
}
inline void unwrap(Status&& s) {
    if (!s) raise(std::move(s).error());
}

/// Raises the exception of `e` with extra attributes set on it (e.g. `sent` for a batch).
[[noreturn]] void raise_with(const Error& e, const py::dict& attributes);

/// Registers fabric_shm.Error, one subclass per Errc and the translator.
void bind_errors(py::module_& m);
/// The Errc a Python exception stands for: a fabric_shm.Error's code; io_error for any other
/// exception (handlers and job functions: a bug or a bad input is retried, then dead-lettered).
Errc errc_of_exception(const py::error_already_set& e);
/// "ValueError: bad input" (type and message, no traceback) for an error reason.
std::string describe_exception(const py::error_already_set& e);
/// The same two for an exception object (an asyncio task's or a future's exception()).
Errc errc_of_exception(py::handle value);
std::string describe_exception(py::handle value);

// ---- Arguments ----------------------------------------------------------------------------------

/// Nanoseconds from a datetime.timedelta or a number of seconds (int or float). Negative,
/// NaN and values past ~292 years are invalid_argument naming `what`.
uint64_t duration_ns(py::handle value, std::string_view what);
/// duration_ns, or `fallback` for None.
uint64_t duration_ns_or(py::handle value, std::string_view what, uint64_t fallback);
/// duration_ns as the library's Duration (std::chrono::nanoseconds).
inline Duration duration(py::handle value, std::string_view what) { return ns_duration(duration_ns(value, what)); }
inline Duration duration_or(py::handle value, std::string_view what, Duration fallback) {
    return value.is_none() ? fallback : duration(value, what);
}
/// An unsigned integer argument at most `max` (a Python int, or an object with __index__):
/// anything else is invalid_argument naming `what`, the value and the range, not pybind's
/// "Unable to cast" (which names neither).
uint64_t uint_arg(py::handle value, std::string_view what, uint64_t max = UINT64_MAX);
/// Seconds as a float, for returning durations.
inline double seconds(uint64_t ns) { return double(ns) / 1e9; }

/// A fabric:// URI from a str or a FabricUri.
FabricUri to_uri(py::handle value);

/// A contiguous bytes-like argument (bytes, bytearray, memoryview, numpy array, str as UTF-8),
/// held (its buffer exported) while this lives. A str is encoded once and kept here.
class BytesArg {
public:
    BytesArg() = default;
    explicit BytesArg(py::handle value, std::string_view what = "data");
    BytesArg(BytesArg&& o) noexcept;
    BytesArg& operator=(BytesArg&&) = delete;
    BytesArg(const BytesArg&) = delete;
    ~BytesArg();
    std::span<const uint8_t> span() const { return {data_, size_}; }
    std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }

private:
    Py_buffer buffer_{};
    bool held_ = false;
    std::string text_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

// ---- Zero-copy buffers ------------------------------------------------------------------------

/// An object exporting [data, data + size) through the buffer protocol, keeping `owner` (a
/// pin, a loan, a message batch) alive while it or any memoryview of it lives. Counts its
/// exports, so a loan can refuse to commit while a writable view of it is still around.
/// Returns a new reference to the exporter (type fabric_shm._core._Buffer).
py::object make_exporter(std::shared_ptr<void> owner, const void* data, size_t size, bool readonly);
/// A memoryview of an exporter made by make_exporter.
py::object memoryview_of(const py::object& exporter);
/// Number of live memoryviews of the exporter.
Py_ssize_t exporter_exports(const py::object& exporter);
/// Refuses new memoryviews (BufferError naming `why`) and drops the owner once none remain.
void exporter_close(const py::object& exporter, const char* why);
void bind_buffers(py::module_& m);

// ---- GIL, threads and handles -------------------------------------------------------------------

/// What every handle type (Consumer, Producer, MemObjectStore, ...) holds besides its library
/// object, and the rules its calls follow (docs/python.md, "Threads and close()"):
///  - Library objects are "one thread at a time" and their calls run with the GIL released, so
///    each handle has a mutex, taken only after the GIL is released (never while holding it: a
///    worker's handler takes the GIL while its loop holds the worker's mutex). Two Python
///    threads using one handle take turns.
///  - `closed` is set by close() with the GIL held, before the library object is destroyed, and
///    the object is destroyed only with the mutex held. A call checks `closed` under the GIL
///    (raising Closed naming the handle) and again once it holds the mutex, so a close() that
///    ran while it waited for the lock makes it raise Closed instead of using a destroyed
///    object. A reference to the library object taken under the GIL is used only after that
///    second check.
///  - close() waits (GIL released) for the call in progress on another thread. Blocking calls
///    notice it: a poll between its 20 ms slices, a send blocked on a full partition through
///    its should_stop, a worker's run between items; they then raise Closed (run() returns).
///  - A call made from inside a callback of a call on the same handle (a worker's handler, a DLQ
///    router's process function: this thread already holds the mutex) raises Busy instead of
///    deadlocking. close() made there cannot wait for that call: it marks the handle closed, and
///    the outer call destroys the library object when it returns.
struct Guarded {
    explicit Guarded(const char* what_) : what(what_) {}
    Guarded(const Guarded&) = delete;
    Guarded& operator=(const Guarded&) = delete;
    virtual ~Guarded() = default;

    const char* const what;  ///< "this consumer": the subject of Closed and Busy messages
    std::mutex mutex;
    /// The thread holding `mutex` (HandleLock), so that a nested call on that same thread is
    /// told apart; only that thread can ever read its own id here. Relaxed: the mutex orders it.
    std::atomic<std::thread::id> holder{};
    /// Set once, by close() with the GIL held. Relaxed both ways: the GIL orders it for the
    /// check before a call, the mutex for the check under the lock.
    std::atomic<bool> closed{false};
    bool release_pending = false;  ///< under `mutex`: a nested close() left release() to the call

    /// Drops the library objects. Under `mutex`, without the GIL: no Python inside.
    virtual void release() noexcept {}
    /// Closed naming the handle, with the GIL held, once close() was called.
    void check_open() const;
};
static_assert(std::atomic<std::thread::id>::is_always_lock_free);

Error closed_error(const Guarded& handle);
Error busy_error(const Guarded& handle);

/// Holds a handle's mutex for this thread (call it without the GIL). When this thread holds it
/// already (a nested call), holds nothing: held() is false. Releasing it runs the release() a
/// nested close() left pending.
class HandleLock {
public:
    explicit HandleLock(Guarded& handle);
    ~HandleLock();
    HandleLock(const HandleLock&) = delete;
    HandleLock& operator=(const HandleLock&) = delete;
    bool held() const { return held_; }

private:
    Guarded& handle_;
    bool held_ = false;
};

/// Runs f() with the GIL released and `handle`'s mutex held; returns what f returns. Raises
/// Closed when the handle was closed (before the call or while it waited for the lock) and Busy
/// for a nested call (see Guarded).
template <class F>
auto without_gil(Guarded& handle, F&& f) {
    py::gil_scoped_release nogil;
    HandleLock lock(handle);
    if (!lock.held()) throw FabricError(busy_error(handle));
    if (handle.closed.load(std::memory_order_relaxed)) throw FabricError(closed_error(handle));
    return f();
}

/// without_gil for state that outlives close() (a worker's last stats): no Closed check.
template <class F>
auto locked(Guarded& handle, F&& f) {
    py::gil_scoped_release nogil;
    HandleLock lock(handle);
    if (!lock.held()) throw FabricError(busy_error(handle));
    return f();
}

/// n elements on the stack when n <= N, else on the heap: a binding's per-call lists that are
/// one or two long in the common call (a store and one producer) allocate nothing.
template <class T, size_t N>
class SmallBuffer {
public:
    std::span<T> take(size_t n) {
        if (n <= N) return std::span<T>(inline_, n);
        heap_.resize(n);
        return heap_;
    }

private:
    T inline_[N]{};
    std::vector<T> heap_;
};

/// without_gil over several handles at once (put_and_notify: a store and its producers), their
/// mutexes taken in one global (address) order so that two threads never wait on each other;
/// a handle given twice is locked once.
template <class F>
auto without_gil(std::span<Guarded* const> given, F&& f) {
    SmallBuffer<Guarded*, 8> buffer;
    std::span<Guarded*> handles = buffer.take(given.size());
    std::copy(given.begin(), given.end(), handles.begin());
    std::sort(handles.begin(), handles.end());
    handles = handles.first(size_t(std::unique(handles.begin(), handles.end()) - handles.begin()));
    py::gil_scoped_release nogil;
    // HandleLock is neither copied nor moved: up to 8 in place, more one by one on the heap.
    // Released in reverse order of taking (`more_locks` is destroyed first).
    constexpr size_t kInlineLocks = 8;
    std::optional<HandleLock> inline_locks[kInlineLocks];
    std::vector<std::unique_ptr<HandleLock>> more_locks;
    for (size_t i = 0; i < handles.size(); ++i) {
        const HandleLock& lock = i < kInlineLocks
                                     ? inline_locks[i].emplace(*handles[i])
                                     : *more_locks.emplace_back(std::make_unique<HandleLock>(*handles[i]));
        if (!lock.held()) throw FabricError(busy_error(*handles[i]));
    }
    for (Guarded* h : handles)
        if (h->closed.load(std::memory_order_relaxed)) throw FabricError(closed_error(*h));
    return f();
}
template <class F>
auto without_gil(std::initializer_list<Guarded*> handles, F&& f) {
    return without_gil(std::span<Guarded* const>(handles.begin(), handles.size()), std::forward<F>(f));
}

/// The close() of every handle (call it with the GIL held). Idempotent. Marks the handle closed,
/// then, unless this thread is inside a call on it (see Guarded), waits for the call in progress
/// and runs last() (a final library call such as leave()) and release() under its mutex.
void close_handle(Guarded& handle, const std::function<void()>& last = {});

/// Runs Python's signal handlers (KeyboardInterrupt on Ctrl-C) and raises what they raised.
/// Call with the GIL held, between the slices of a blocking wait.
void check_signals();

/// A should_stop callback for library loops that run with the GIL released: takes the GIL at
/// most every `interval_ns` (a few hundred ns each time), runs the signal handlers, and records the exception they raised
/// (rethrown by rethrow_if_stopped() once the loop has returned).
class SignalWatch {
public:
    explicit SignalWatch(uint64_t interval_ns = 5'000'000);
    bool operator()();          ///< without the GIL: true once a signal handler raised
    bool stopped() const { return raised_; }
    void rethrow_if_stopped();  ///< with the GIL: restores and throws the recorded exception
    ~SignalWatch();

private:
    uint64_t interval_ns_, next_check_ns_ = 0;
    bool raised_ = false;
    PyObject *type_ = nullptr, *value_ = nullptr, *traceback_ = nullptr;
};

/// Longest slice of a blocking wait between signal checks: Ctrl-C interrupts within this (plus
/// scheduling) even if the library's wait does not end at the signal. An idle consumer pays one
/// extra poll call per slice.
constexpr uint64_t kSignalSliceNs = 20'000'000;

/// Calls once_for(slice_ns) -> Result<size_t> in slices of at most kSignalSliceNs until it
/// returns non-zero or `timeout_ns` has passed, checking signals between slices (with the GIL
/// held); each slice is a without_gil call on `handle`, so a close() ends the wait with Closed.
/// `over`, when given, is set by once_for when nothing can come however long it waits (the
/// library's call returned at once): the wait ends then too.
template <class F>
size_t sliced_wait(Guarded& handle, uint64_t timeout_ns, F&& once_for, const bool* over = nullptr);

/// Calls a Python callback from a library callback that runs without the GIL. An exception that
/// is not an Exception (KeyboardInterrupt, SystemExit) stops the whole call: it is kept and
/// re-raised when the library call returns; every later callback answers `interrupted` at once.
struct CallbackGate {
    std::optional<py::error_already_set> stop;
    std::string stop_reason;
    template <class F>
    Status call(F&& f) {
        if (stop) return make_error(Errc::interrupted, stop_reason);
        py::gil_scoped_acquire gil;
        try {
            f();
            return {};
        } catch (py::error_already_set& e) {
            if (!e.matches(PyExc_Exception)) {
                stop_reason = "stopped by " + describe_exception(e);
                stop.emplace(std::move(e));
                return make_error(Errc::interrupted, stop_reason);
            }
            return make_error(errc_of_exception(e), describe_exception(e));
        } catch (const FabricError& e) {
            return e.error;
        } catch (const py::builtin_exception& e) {
            // pybind11's own conversions (a handler result that is not bytes-like: TypeError)
            // are a bug of the callback like any other exception: retried, then dead-lettered.
            return make_error(Errc::io_error, e.what());
        }
    }
    void rethrow() {
        if (stop) {
            py::error_already_set e = std::move(*stop);
            stop.reset();
            throw e;
        }
    }
};


// ---- Pools ------------------------------------------------------------------------------------

/// Errc::closed naming `what` when `open` is false (a Python object closed by its close()).
void check_not_closed(bool open, std::string_view what);
/// Errc::closed when the pool was closed (Pool::close), for calls that return no Result.
void check_pool_open(const Pool& pool);
/// The library object a handle holds, after both checks (with the GIL held): the handle is not
/// closed and its pool is open. Every binding's get() is this; the reference is used only
/// inside a without_gil call on `handle`, which checks again under the handle's lock.
template <class T>
T& checked(const Guarded& handle, const std::unique_ptr<T>& object, const Pool& pool) {
    handle.check_open();
    check_pool_open(pool);
    return *object;
}

/// Per-process limit of pinned objects held through Python (store.get): pins are a shared,
/// bounded resource (1,024 records per store, shared by every process).
int64_t pin_limit();
void set_pin_limit(int64_t limit);
int64_t pins_held();
/// Counts one pin; capacity_exceeded naming the limit when it is reached.
void acquire_pin_slot(std::string_view uri);
void release_pin_slot() noexcept;

/// Module sections (one file each).
void bind_pool(py::module_& m);
void bind_store(py::module_& m);
void bind_topics(py::module_& m);
void bind_groups(py::module_& m);
void bind_worker(py::module_& m);

// ---- inline templates ---------------------------------------------------------------------------

uint64_t monotonic_ns() noexcept;

template <class F>
size_t sliced_wait(Guarded& handle, uint64_t timeout_ns, F&& once_for, const bool* over) {
    const uint64_t start = monotonic_ns();
    const uint64_t deadline = timeout_ns > UINT64_MAX - start ? UINT64_MAX : start + timeout_ns;
    for (;;) {
        const uint64_t now = monotonic_ns();
        const uint64_t left = now >= deadline ? 0 : deadline - now;
        const uint64_t slice = left < kSignalSliceNs ? left : kSignalSliceNs;
        auto r = without_gil(handle, [&] { return once_for(slice); });
        const size_t n = unwrap(std::move(r));
        if (n != 0 || left <= slice || (over != nullptr && *over)) return n;
        check_signals();
    }
}

}  // namespace fabric_shm::py_bind
