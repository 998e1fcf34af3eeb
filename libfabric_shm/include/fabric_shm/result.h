// SPDX-License-Identifier: MIT
// Typed errors and Result<T>: every fallible library call returns one; nothing throws.
#pragma once

#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace fabric_shm {

/// Error codes. Stable names (errc_name) are part of the CLI's JSON contract.
enum class Errc : uint16_t {
    ok = 0,
    invalid_argument,   ///< a parameter is out of its documented range
    invalid_name,       ///< pool/bucket/topic/group name breaks the name rule
    invalid_uri,        ///< not a valid fabric:// URI
    not_found,          ///< pool, region, object, topic or group does not exist
    already_exists,     ///< create of something that exists
    version_mismatch,   ///< pool written by an incompatible layout version
    corrupt,            ///< shared memory or a file failed validation
    permission_denied,  ///< the OS refused access
    too_small,          ///< segment/file shorter than its header claims
    no_space,           ///< /dev/shm (or the pool's region area) has no room
    capacity_exceeded,  ///< a table, heap or ring is full
    lease_expired,      ///< the region's lease ran out: fail closed
    stale_generation,   ///< the region was reclaimed and re-created since the handle was made
    busy,               ///< a lock or resource is held by a live process
    timeout,            ///< a bounded wait ran out
    io_error,           ///< a system call failed unexpectedly (message has errno text)
    conflict,           ///< a put/remove condition failed (if-absent, if-version, fence)
    stale_epoch,        ///< a commit or fenced write under an epoch older than the current one
    message_too_large,  ///< message does not fit a topic slot
    object_too_large,   ///< object larger than the store's maximum object size
    back_pressure,      ///< a partition is full of messages a group has not committed
    unsupported,        ///< not available in this build or on this system
    skipped,            ///< a producer's claimed slot was turned into a skip record by a survivor
    not_ready,          ///< segment exists but is not initialised (zeroed, or its creator died)
    interrupted,        ///< a blocking wait ended because its caller asked to stop (e.g. Ctrl-C)
    closed,             ///< the pool handle was closed (Pool::close): nothing opened from it works any more
};

std::string_view errc_name(Errc code) noexcept;

/// An error: a code for programs, a message naming the value and the limit for people.
struct Error {
    Errc code = Errc::ok;
    std::string message;
};

Error make_error(Errc code, std::string message);
/// Error from errno: "<what>: <strerror(err)>", code mapped (ENOENT -> not_found, EACCES -> permission_denied, ...).
Error errno_error(int err, std::string_view what);

namespace detail {
/// Prints "fabric-shm: <what> of a failed Result: <code>: <message>" (or that a successful
/// Result has no error) to stderr and aborts: reading a value that is not there is a bug in
/// the caller, reported where it happens instead of as undefined behaviour later.
[[noreturn]] void result_misuse(const char* what, const Error* error) noexcept;
}  // namespace detail

template <class T>
class Result;

template <class R>
struct is_result : std::false_type {};
template <class T>
struct is_result<Result<T>> : std::true_type {};

/// A value or an Error. value(), operator* and operator-> on an error abort with the error's
/// message (so do error() on a value); check ok() / operator bool first, or use value_or,
/// and_then, transform, FABRIC_TRY and FABRIC_TRY_ASSIGN.
template <class T>
class [[nodiscard]] Result {
    static_assert(!std::is_reference_v<T>, "Result<T&> is not supported: return a pointer or a copy");

public:
    using value_type = T;

    Result(T value) : ok_(true) { new (&value_) T(std::move(value)); }  // NOLINT: implicit by design
    Result(Error error) : ok_(false) { new (&error_) Error(std::move(error)); }  // NOLINT
    Result(const Result& o) : ok_(o.ok_) {
        if (ok_) new (&value_) T(o.value_); else new (&error_) Error(o.error_);
    }
    Result(Result&& o) noexcept(std::is_nothrow_move_constructible_v<T>) : ok_(o.ok_) {
        if (ok_) new (&value_) T(std::move(o.value_)); else new (&error_) Error(std::move(o.error_));
    }
    Result& operator=(Result o) {
        this->~Result();
        new (this) Result(std::move(o));
        return *this;
    }
    ~Result() {
        if (ok_) value_.~T(); else error_.~Error();
    }

    bool ok() const noexcept { return ok_; }
    explicit operator bool() const noexcept { return ok_; }

    T& value() & { return checked(); }
    const T& value() const& { return checked(); }
    /// By value, not T&&: `for (auto& x : make().value())` must not iterate a destroyed temporary.
    T value() && { return std::move(checked()); }
    T* operator->() { return &checked(); }
    const T* operator->() const { return &checked(); }
    T& operator*() & { return checked(); }
    const T& operator*() const& { return checked(); }
    T operator*() && { return std::move(checked()); }

    /// The value, or `fallback` converted to T when this holds an error.
    template <class U>
    T value_or(U&& fallback) const& {
        return ok_ ? value_ : static_cast<T>(std::forward<U>(fallback));
    }
    template <class U>
    T value_or(U&& fallback) && {
        return ok_ ? std::move(value_) : static_cast<T>(std::forward<U>(fallback));
    }

    const Error& error() const& {
        if (ok_) detail::result_misuse("error()", nullptr);
        return error_;
    }
    Error error() && {
        if (ok_) detail::result_misuse("error()", nullptr);
        return std::move(error_);
    }
    Errc code() const noexcept { return ok_ ? Errc::ok : error_.code; }

    /// f(value) -> Result<U>: chains a fallible step; an error passes through untouched.
    template <class F>
    auto and_then(F&& f) & { return and_then_impl(*this, std::forward<F>(f)); }
    template <class F>
    auto and_then(F&& f) const& { return and_then_impl(*this, std::forward<F>(f)); }
    template <class F>
    auto and_then(F&& f) && { return and_then_impl(std::move(*this), std::forward<F>(f)); }
    /// f(value) -> U: maps the value; Result<U> (Result<void> when f returns void).
    template <class F>
    auto transform(F&& f) & { return transform_impl(*this, std::forward<F>(f)); }
    template <class F>
    auto transform(F&& f) const& { return transform_impl(*this, std::forward<F>(f)); }
    template <class F>
    auto transform(F&& f) && { return transform_impl(std::move(*this), std::forward<F>(f)); }

private:
    T& checked() {
        if (!ok_) detail::result_misuse("value()", &error_);
        return value_;
    }
    const T& checked() const {
        if (!ok_) detail::result_misuse("value()", &error_);
        return value_;
    }
    template <class Self, class F>
    static auto and_then_impl(Self&& self, F&& f) {
        using R = std::remove_cvref_t<std::invoke_result_t<F, decltype((std::forward<Self>(self).value_))>>;
        static_assert(is_result<R>::value, "and_then: the function must return a Result");
        if (!self.ok_) return R(std::forward<Self>(self).error_);
        return std::invoke(std::forward<F>(f), std::forward<Self>(self).value_);
    }
    template <class Self, class F>
    static auto transform_impl(Self&& self, F&& f) {
        using U = std::remove_cv_t<std::invoke_result_t<F, decltype((std::forward<Self>(self).value_))>>;
        if (!self.ok_) return Result<U>(std::forward<Self>(self).error_);
        if constexpr (std::is_void_v<U>) {
            std::invoke(std::forward<F>(f), std::forward<Self>(self).value_);
            return Result<U>();
        } else {
            return Result<U>(std::invoke(std::forward<F>(f), std::forward<Self>(self).value_));
        }
    }

    bool ok_;
    union {
        T value_;
        Error error_;
    };
};

template <>
class [[nodiscard]] Result<void> {
public:
    using value_type = void;

    Result() = default;
    Result(Error error) : ok_(false), error_(std::move(error)) {}  // NOLINT
    bool ok() const noexcept { return ok_; }
    explicit operator bool() const noexcept { return ok_; }
    /// Aborts with the error's message when this holds an error (a checked "must not fail").
    void value() const {
        if (!ok_) detail::result_misuse("value()", &error_);
    }
    const Error& error() const& {
        if (ok_) detail::result_misuse("error()", nullptr);
        return error_;
    }
    Error error() && {
        if (ok_) detail::result_misuse("error()", nullptr);
        return std::move(error_);
    }
    Errc code() const noexcept { return ok_ ? Errc::ok : error_.code; }

    /// f() -> Result<U>, run only on success.
    template <class F>
    auto and_then(F&& f) const {
        using R = std::remove_cvref_t<std::invoke_result_t<F>>;
        static_assert(is_result<R>::value, "and_then: the function must return a Result");
        if (!ok_) return R(error_);
        return std::invoke(std::forward<F>(f));
    }
    /// f() -> U, run only on success: Result<U>.
    template <class F>
    auto transform(F&& f) const {
        using U = std::remove_cv_t<std::invoke_result_t<F>>;
        if (!ok_) return Result<U>(error_);
        if constexpr (std::is_void_v<U>) {
            std::invoke(std::forward<F>(f));
            return Result<U>();
        } else {
            return Result<U>(std::invoke(std::forward<F>(f)));
        }
    }

private:
    bool ok_ = true;
    Error error_;
};

using Status = Result<void>;

}  // namespace fabric_shm

/// Propagate an error from an expression returning Result<...>.
#define FABRIC_TRY(expr)                                   \
    do {                                                   \
        auto fabric_try_result_ = (expr);                  \
        if (!fabric_try_result_) return std::move(fabric_try_result_).error(); \
    } while (0)

#define FABRIC_TRY_CONCAT_INNER_(a, b) a##b
#define FABRIC_TRY_CONCAT_(a, b) FABRIC_TRY_CONCAT_INNER_(a, b)
/// Binds the value of an expression returning Result<T> to `var` (a declaration such as
/// `auto pool` or an existing variable), or returns its error from the enclosing function:
///     FABRIC_TRY_ASSIGN(auto pool, Pool::open("default"));
#define FABRIC_TRY_ASSIGN(var, expr) \
    FABRIC_TRY_ASSIGN_IMPL_(var, expr, FABRIC_TRY_CONCAT_(fabric_try_assign_, __COUNTER__))
#define FABRIC_TRY_ASSIGN_IMPL_(var, expr, tmp)                 \
    auto tmp = (expr);                                          \
    if (!tmp) return std::move(tmp).error();                    \
    var = std::move(tmp).value()
