// SPDX-License-Identifier: MIT
// Typed errors and Result<T>: every fallible library call returns one; nothing throws.
#pragma once

#include <cstdint>
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

template <class T>
class [[nodiscard]] Result {
public:
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
    T& value() & { return value_; }
    const T& value() const& { return value_; }
    T&& value() && { return std::move(value_); }
    T* operator->() { return &value_; }
    const T* operator->() const { return &value_; }
    T& operator*() & { return value_; }
    const Error& error() const& { return error_; }
    Error&& error() && { return std::move(error_); }
    Errc code() const noexcept { return ok_ ? Errc::ok : error_.code; }

private:
    bool ok_;
    union {
        T value_;
        Error error_;
    };
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : ok_(false), error_(std::move(error)) {}  // NOLINT
    bool ok() const noexcept { return ok_; }
    explicit operator bool() const noexcept { return ok_; }
    const Error& error() const& { return error_; }
    Error&& error() && { return std::move(error_); }
    Errc code() const noexcept { return ok_ ? Errc::ok : error_.code; }

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
