// SPDX-License-Identifier: MIT
// Shared pieces of fabric_shm._core (common.h): exceptions, durations, bytes-like arguments,
// the buffer exporter, signal checks and the per-process pin limit.
#include "common.h"

#include <pybind11/eval.h>

#include <atomic>
#include <cmath>
#include <vector>

#include "fabric_shm/clock.h"

namespace fabric_shm::py_bind {

uint64_t monotonic_ns() noexcept { return mono_now_ns(); }

// ---- Errors -------------------------------------------------------------------------------------

namespace {

constexpr int kErrcCount = int(Errc::closed) + 1;
// Borrowed for the life of the process (the module is never unloaded): exception classes by code.
PyObject* g_error_base = nullptr;
PyObject* g_error_classes[kErrcCount] = {};

std::string class_name_of(std::string_view code) {
    std::string out;
    bool upper = true;
    for (char c : code) {
        if (c == '_') {
            upper = true;
            continue;
        }
        out += upper ? char(std::toupper(static_cast<unsigned char>(c))) : c;
        upper = false;
    }
    return out;
}

// Python mix-ins: `except ValueError` and `except TimeoutError` catch what they promise.
const char* builtin_mixin(Errc code) {
    switch (code) {
        case Errc::invalid_argument:
        case Errc::invalid_name:
        case Errc::invalid_uri: return "ValueError";
        case Errc::timeout: return "TimeoutError";
        case Errc::permission_denied: return "PermissionError";
        default: return nullptr;
    }
}

const char* const kErrorBase = R"PY(
class Error(Exception):
    """A fabric-shm error: ``code`` names the library's error code (``"not_found"``), ``message``
    says what failed, naming the value and the limit. One subclass per code."""
    code = "error"

    def __init__(self, message="", *args):
        super().__init__(message, *args)
        self.message = message
)PY";

}  // namespace

namespace {
py::object exception_of(const Error& error) {
    const int i = int(error.code);
    PyObject* cls = (i > 0 && i < kErrcCount) ? g_error_classes[i] : g_error_base;
    return py::reinterpret_borrow<py::object>(cls)(error.message);
}
}  // namespace

void raise_with(const Error& e, const py::dict& attributes) {
    py::object exc = exception_of(e);
    for (auto item : attributes) exc.attr(item.first) = item.second;
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    throw py::error_already_set();
}

void raise(Errc code, std::string message) { throw FabricError(make_error(code, std::move(message))); }

void bind_errors(py::module_& m) {
    py::dict scope;
    scope["__builtins__"] = py::module_::import("builtins");
    scope["__name__"] = "fabric_shm";
    py::exec(kErrorBase, scope);
    py::object base = scope["Error"];
    base.attr("__module__") = "fabric_shm";
    m.attr("Error") = base;
    g_error_base = base.inc_ref().ptr();
    py::module_ builtins = py::module_::import("builtins");
    py::object type = builtins.attr("type");
    for (int i = 1; i < kErrcCount; ++i) {
        const auto code = Errc(i);
        const std::string code_name(errc_name(code));
        const std::string name = class_name_of(code_name);
        py::tuple bases = builtin_mixin(code) ? py::make_tuple(base, builtins.attr(builtin_mixin(code)))
                                              : py::make_tuple(base);
        py::dict ns;
        ns["code"] = code_name;
        ns["__module__"] = "fabric_shm";
        ns["__doc__"] = "fabric-shm error code '" + code_name + "' (see fabric_shm.Error).";
        py::object cls = type(name, bases, ns);
        m.attr(name.c_str()) = cls;
        g_error_classes[i] = cls.inc_ref().ptr();
    }
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const FabricError& e) {
            try {
                py::object exc = exception_of(e.error);
                PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
            } catch (py::error_already_set& failed) {
                failed.restore();  // making the exception failed: raise that instead
            }
        }
    });
}

Errc errc_of_exception(py::handle value) {
    if (g_error_base != nullptr && PyObject_IsInstance(value.ptr(), g_error_base) == 1) {
        try {
            const std::string code = py::str(value.attr("code"));
            for (int i = 1; i < kErrcCount; ++i)
                if (errc_name(Errc(i)) == code) return Errc(i);
        } catch (const py::error_already_set&) {
        }
    }
    PyErr_Clear();  // PyObject_IsInstance may have failed (a broken __instancecheck__)
    return Errc::io_error;
}

std::string describe_exception(py::handle value) {
    std::string type = "exception";
    try {
        type = py::str(py::type::handle_of(value).attr("__name__"));
    } catch (const py::error_already_set&) {
    }
    std::string text;
    try {
        text = py::str(value);
    } catch (const py::error_already_set&) {
    }
    return text.empty() ? type : type + ": " + text;
}

Errc errc_of_exception(const py::error_already_set& e) { return errc_of_exception(e.value()); }
std::string describe_exception(const py::error_already_set& e) { return describe_exception(e.value()); }

// ---- Arguments ----------------------------------------------------------------------------------

namespace {
constexpr uint64_t kMaxSeconds = uint64_t(INT64_MAX) / kNsPerSec;  // Duration is int64 nanoseconds

uint64_t checked_seconds_ns(long double seconds, std::string_view what, py::handle value) {
    if (std::isnan(double(seconds)) || seconds < 0 || seconds > (long double)kMaxSeconds)
        raise(Errc::invalid_argument, std::string(what) + " " + std::string(py::repr(value)) +
                                          ": a duration must be a timedelta or seconds in [0, " +
                                          std::to_string(kMaxSeconds) + "]");
    return uint64_t(std::llround(double(seconds * 1e9L)));
}
}  // namespace

uint64_t uint_arg(py::handle value, std::string_view what, uint64_t max) {
    auto refuse = [&](const std::string& why) -> uint64_t {
        raise(Errc::invalid_argument, std::string(what) + " " + std::string(py::repr(value)) + ": " + why);
    };
    // A bool is an int to Python, never a count or a version a caller meant.
    if (value.is_none() || PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr()))
        return refuse("expected an int");
    const py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
    if (!index) throw py::error_already_set();
    int overflow = 0;
    const long long small = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    if (overflow < 0 || (overflow == 0 && small < 0)) return refuse("must not be negative");
    uint64_t v = uint64_t(small);
    if (overflow > 0) {  // above INT64_MAX: an unsigned 64-bit value, or beyond
        v = PyLong_AsUnsignedLongLong(index.ptr());
        if (v == uint64_t(-1) && PyErr_Occurred()) {
            PyErr_Clear();
            v = UINT64_MAX;
            if (max == UINT64_MAX) return refuse("must be below 2^64");
        }
    }
    if (v > max) return refuse("must be at most " + std::to_string(max));
    return v;
}

uint64_t duration_ns(py::handle value, std::string_view what) {
    if (value.is_none()) raise(Errc::invalid_argument, std::string(what) + " None: a duration is required");
    if (PyBool_Check(value.ptr()))
        raise(Errc::invalid_argument, std::string(what) + " " + std::string(py::repr(value)) +
                                          ": a duration is a timedelta or seconds, not a bool");
    if (py::hasattr(value, "days") && py::hasattr(value, "microseconds") && py::hasattr(value, "total_seconds")) {
        // timedelta: exact integer parts (days may be negative for a negative delta).
        const long long days = value.attr("days").cast<long long>();
        const long long secs = value.attr("seconds").cast<long long>();
        const long long us = value.attr("microseconds").cast<long long>();
        if (days < 0)
            raise(Errc::invalid_argument, std::string(what) + " " + std::string(py::repr(value)) +
                                              ": a duration must not be negative");
        if (uint64_t(days) > kMaxSeconds / 86400)
            raise(Errc::invalid_argument, std::string(what) + " " + std::string(py::repr(value)) + ": too long");
        return (uint64_t(days) * 86400 + uint64_t(secs)) * kNsPerSec + uint64_t(us) * kNsPerUs;
    }
    if (PyLong_Check(value.ptr())) {
        int overflow = 0;
        const long long s = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
        if (overflow != 0 || s < 0 || uint64_t(s) > kMaxSeconds)
            raise(Errc::invalid_argument, std::string(what) + " " + std::string(py::repr(value)) +
                                              ": seconds must be in [0, " + std::to_string(kMaxSeconds) + "]");
        return uint64_t(s) * kNsPerSec;
    }
    if (PyFloat_Check(value.ptr()) || py::hasattr(value, "__float__"))
        return checked_seconds_ns(value.cast<double>(), what, value);
    raise(Errc::invalid_argument, std::string(what) + " " + std::string(py::repr(value)) +
                                      ": expected a datetime.timedelta or seconds (int or float)");
}

uint64_t duration_ns_or(py::handle value, std::string_view what, uint64_t fallback) {
    return value.is_none() ? fallback : duration_ns(value, what);
}

BytesArg::BytesArg(py::handle value, std::string_view what) {
    if (PyUnicode_Check(value.ptr())) {
        Py_ssize_t n = 0;
        const char* s = PyUnicode_AsUTF8AndSize(value.ptr(), &n);
        if (s == nullptr) throw py::error_already_set();
        text_.assign(s, size_t(n));
        data_ = reinterpret_cast<const uint8_t*>(text_.data());
        size_ = text_.size();
        return;
    }
    if (PyObject_GetBuffer(value.ptr(), &buffer_, PyBUF_SIMPLE) != 0) {
        PyErr_Clear();
        throw py::type_error(std::string(what) + ": expected a contiguous bytes-like object (bytes, bytearray, "
                             "memoryview, numpy array) or str, got " +
                             std::string(py::str(value.get_type().attr("__name__"))));
    }
    held_ = true;
    data_ = static_cast<const uint8_t*>(buffer_.buf);
    size_ = size_t(buffer_.len);
}

BytesArg::BytesArg(BytesArg&& o) noexcept
    : buffer_(o.buffer_), held_(o.held_), text_(std::move(o.text_)), size_(o.size_) {
    data_ = held_ ? static_cast<const uint8_t*>(buffer_.buf) : reinterpret_cast<const uint8_t*>(text_.data());
    if (!held_ && size_ == 0) data_ = nullptr;
    o.held_ = false;
    o.data_ = nullptr;
    o.size_ = 0;
}

BytesArg::~BytesArg() {
    if (held_) PyBuffer_Release(&buffer_);
}

FabricUri to_uri(py::handle value) {
    if (py::isinstance<FabricUri>(value)) return value.cast<FabricUri>();
    if (!PyUnicode_Check(value.ptr()))
        throw py::type_error("uri: expected a str ('fabric://pool/bucket/key') or a FabricUri, got " +
                             std::string(py::str(value.get_type().attr("__name__"))));
    return unwrap(FabricUri::parse(value.cast<std::string>()));
}

// ---- Zero-copy buffers ------------------------------------------------------------------------

namespace {

struct BufferObject {
    PyObject_HEAD
    std::shared_ptr<void>* owner;  // heap-held: the object memory is C-allocated
    const void* data;
    Py_ssize_t size;
    int readonly;
    int closed;
    Py_ssize_t exports;
    const char* why;
};

PyTypeObject* g_buffer_type = nullptr;

void drop_owner(BufferObject* self) {
    if (self->owner != nullptr) {
        delete self->owner;  // may release a pin or free a batch: no Python inside
        self->owner = nullptr;
    }
    self->data = nullptr;
    self->size = 0;
}

int buffer_get(PyObject* obj, Py_buffer* view, int flags) {
    auto* self = reinterpret_cast<BufferObject*>(obj);
    if (self->closed || self->owner == nullptr) {
        PyErr_SetString(PyExc_BufferError, self->why ? self->why : "this fabric_shm buffer was released");
        view->obj = nullptr;
        return -1;
    }
    if (PyBuffer_FillInfo(view, obj, const_cast<void*>(self->data), self->size, self->readonly, flags) != 0)
        return -1;
    ++self->exports;
    return 0;
}

void buffer_release(PyObject* obj, Py_buffer*) {
    auto* self = reinterpret_cast<BufferObject*>(obj);
    if (--self->exports == 0 && self->closed) drop_owner(self);
}

void buffer_dealloc(PyObject* obj) {
    auto* self = reinterpret_cast<BufferObject*>(obj);
    PyTypeObject* type = Py_TYPE(obj);
    drop_owner(self);
    type->tp_free(obj);
    Py_DECREF(type);
}

PyType_Slot g_buffer_slots[] = {
    {Py_bf_getbuffer, reinterpret_cast<void*>(&buffer_get)},
    {Py_bf_releasebuffer, reinterpret_cast<void*>(&buffer_release)},
    {Py_tp_dealloc, reinterpret_cast<void*>(&buffer_dealloc)},
    {Py_tp_doc, const_cast<char*>("Bytes in a fabric-shm pool (a pin, a loan or a message batch), exported "
                                  "to memoryviews; the bytes stay valid while any view of them lives.")},
    {0, nullptr},
};
PyType_Spec g_buffer_spec = {
    "fabric_shm._core._Buffer", sizeof(BufferObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, g_buffer_slots,
};

}  // namespace

void bind_buffers(py::module_& m) {
    PyObject* type = PyType_FromSpec(&g_buffer_spec);
    if (type == nullptr) throw py::error_already_set();
    g_buffer_type = reinterpret_cast<PyTypeObject*>(type);
    m.attr("_Buffer") = py::reinterpret_borrow<py::object>(type);  // the module keeps a reference too
}

py::object make_exporter(std::shared_ptr<void> owner, const void* data, size_t size, bool readonly) {
    PyObject* obj = g_buffer_type->tp_alloc(g_buffer_type, 0);
    if (obj == nullptr) throw py::error_already_set();
    auto* self = reinterpret_cast<BufferObject*>(obj);
    self->owner = new std::shared_ptr<void>(std::move(owner));
    self->data = data;
    self->size = Py_ssize_t(size);
    self->readonly = readonly ? 1 : 0;
    self->closed = 0;
    self->exports = 0;
    self->why = nullptr;
    return py::reinterpret_steal<py::object>(obj);
}

py::object memoryview_of(const py::object& exporter) {
    PyObject* mv = PyMemoryView_FromObject(exporter.ptr());
    if (mv == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(mv);
}

Py_ssize_t exporter_exports(const py::object& exporter) {
    return reinterpret_cast<BufferObject*>(exporter.ptr())->exports;
}

void exporter_close(const py::object& exporter, const char* why) {
    auto* self = reinterpret_cast<BufferObject*>(exporter.ptr());
    self->closed = 1;
    self->why = why;
    if (self->exports == 0) drop_owner(self);
}

// ---- Signals ------------------------------------------------------------------------------------

void check_signals() {
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

SignalWatch::SignalWatch(uint64_t interval_ns) : interval_ns_(interval_ns) {}

bool SignalWatch::operator()() {
    if (raised_) return true;
    const uint64_t now = mono_now_ns();
    if (now < next_check_ns_) return false;
    next_check_ns_ = now + interval_ns_;
    PyGILState_STATE state = PyGILState_Ensure();
    if (PyErr_CheckSignals() != 0) {
        PyErr_Fetch(&type_, &value_, &traceback_);
        raised_ = true;
    }
    PyGILState_Release(state);
    return raised_;
}

void SignalWatch::rethrow_if_stopped() {
    if (!raised_) return;
    PyErr_Restore(type_, value_, traceback_);
    type_ = value_ = traceback_ = nullptr;
    raised_ = false;
    throw py::error_already_set();
}

SignalWatch::~SignalWatch() {
    if (type_ || value_ || traceback_) {
        PyGILState_STATE state = PyGILState_Ensure();
        Py_XDECREF(type_);
        Py_XDECREF(value_);
        Py_XDECREF(traceback_);
        PyGILState_Release(state);
    }
}

// ---- Pools and pins -------------------------------------------------------------------------------

void check_not_closed(bool open, std::string_view what) {
    if (!open) raise(Errc::closed, std::string(what) + " was closed (close() or the end of its `with` block)");
}

// ---- Handles --------------------------------------------------------------------------------------

Error closed_error(const Guarded& handle) {
    return make_error(Errc::closed, std::string(handle.what) + " was closed (close() or the end of its `with` block)");
}

Error busy_error(const Guarded& handle) {
    return make_error(Errc::busy, std::string(handle.what) +
                                      " is in a call on this thread already: a callback of that call (a handler, a "
                                      "process function) cannot use it; only close() is allowed there, and takes "
                                      "effect when the call returns");
}

void Guarded::check_open() const {
    if (closed.load(std::memory_order_relaxed)) raise(closed_error(*this));
}

HandleLock::HandleLock(Guarded& handle) : handle_(handle) {
    if (handle.holder.load(std::memory_order_relaxed) == std::this_thread::get_id()) return;  // nested
    handle.mutex.lock();
    handle.holder.store(std::this_thread::get_id(), std::memory_order_relaxed);
    held_ = true;
}

HandleLock::~HandleLock() {
    if (!held_) return;
    if (handle_.release_pending) {
        handle_.release_pending = false;
        handle_.release();
    }
    handle_.holder.store(std::thread::id(), std::memory_order_relaxed);
    handle_.mutex.unlock();
}

void close_handle(Guarded& handle, const std::function<void()>& last) {
    if (handle.closed.exchange(true, std::memory_order_relaxed)) return;
    if (handle.holder.load(std::memory_order_relaxed) == std::this_thread::get_id()) {
        // A callback of a call on this handle closes it: that call still uses the library
        // object, and its HandleLock releases it when the call returns.
        handle.release_pending = true;
        return;
    }
    py::gil_scoped_release nogil;
    HandleLock lock(handle);
    if (last) last();
    handle.release();
}

void check_pool_open(const Pool& pool) {
    if (!pool.valid()) raise(Errc::closed, "the pool handle is empty");
    unwrap(pool.check_open());
}

namespace {
std::atomic<int64_t> g_pins{0};
std::atomic<int64_t> g_pin_limit{256};
}  // namespace

int64_t pin_limit() { return g_pin_limit.load(std::memory_order_relaxed); }
void set_pin_limit(int64_t limit) {
    if (limit < 1 || limit > (1 << 20))
        raise(Errc::invalid_argument, "pin limit " + std::to_string(limit) + ": must be in [1, 1048576]");
    g_pin_limit.store(limit, std::memory_order_relaxed);
}
int64_t pins_held() { return g_pins.load(std::memory_order_relaxed); }

void acquire_pin_slot(std::string_view uri) {
    const int64_t held = g_pins.fetch_add(1, std::memory_order_relaxed);
    const int64_t limit = g_pin_limit.load(std::memory_order_relaxed);
    if (held >= limit) {
        g_pins.fetch_sub(1, std::memory_order_relaxed);
        raise(Errc::capacity_exceeded,
              "get " + std::string(uri) + ": this process already holds " + std::to_string(held) +
                  " pinned objects, its limit (fabric_shm.pin_limit() = " + std::to_string(limit) +
                  "); pins are shared by every process (1,024 per store), so release objects you are done with "
                  "(obj.close(), `with store.get(...) as obj:`, or drop the memoryviews/arrays over obj.data), "
                  "copy with store.get_bytes(), or raise the limit with fabric_shm.set_pin_limit(n)");
    }
}

void release_pin_slot() noexcept { g_pins.fetch_sub(1, std::memory_order_relaxed); }

}  // namespace fabric_shm::py_bind
