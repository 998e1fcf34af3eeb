// SPDX-License-Identifier: MIT
#include "fabric_shm/result.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fabric_shm {

std::string_view errc_name(Errc code) noexcept {
    switch (code) {
    case Errc::ok: return "ok";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::invalid_name: return "invalid_name";
    case Errc::invalid_uri: return "invalid_uri";
    case Errc::not_found: return "not_found";
    case Errc::already_exists: return "already_exists";
    case Errc::version_mismatch: return "version_mismatch";
    case Errc::corrupt: return "corrupt";
    case Errc::permission_denied: return "permission_denied";
    case Errc::too_small: return "too_small";
    case Errc::no_space: return "no_space";
    case Errc::capacity_exceeded: return "capacity_exceeded";
    case Errc::lease_expired: return "lease_expired";
    case Errc::stale_generation: return "stale_generation";
    case Errc::busy: return "busy";
    case Errc::timeout: return "timeout";
    case Errc::io_error: return "io_error";
    case Errc::conflict: return "conflict";
    case Errc::stale_epoch: return "stale_epoch";
    case Errc::message_too_large: return "message_too_large";
    case Errc::object_too_large: return "object_too_large";
    case Errc::back_pressure: return "back_pressure";
    case Errc::unsupported: return "unsupported";
    case Errc::skipped: return "skipped";
    case Errc::not_ready: return "not_ready";
    case Errc::interrupted: return "interrupted";
    case Errc::closed: return "closed";
    }
    return "unknown";
}

namespace detail {
void result_misuse(const char* what, const Error* error) noexcept {
    if (error)
        std::fprintf(stderr, "fabric-shm: %s of a failed Result: %.*s: %s\n", what, int(errc_name(error->code).size()),
                     errc_name(error->code).data(), error->message.c_str());
    else
        std::fprintf(stderr, "fabric-shm: %s of a successful Result (it holds a value, not an error)\n", what);
    std::fflush(stderr);
    std::abort();
}
}  // namespace detail

Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

Error errno_error(int err, std::string_view what) {
    Errc code = Errc::io_error;
    switch (err) {
    case ENOENT: code = Errc::not_found; break;
    case EEXIST: code = Errc::already_exists; break;
    case EACCES:
    case EPERM: code = Errc::permission_denied; break;
    case ENOSPC:
    case ENOMEM: code = Errc::no_space; break;
    case EINVAL: code = Errc::invalid_argument; break;
    case EBUSY: code = Errc::busy; break;
    case ETIMEDOUT: code = Errc::timeout; break;
    default: break;
    }
    std::string msg(what);
    msg += ": ";
    msg += std::strerror(err);
    return Error{code, std::move(msg)};
}

}  // namespace fabric_shm
