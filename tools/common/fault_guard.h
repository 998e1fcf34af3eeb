// SPDX-License-Identifier: MIT
// Survives SIGBUS/SIGSEGV while reading a mapped segment: another process may truncate the
// file after we mapped it (a read past the new end raises SIGBUS), or a corrupt offset may
// slip past a check. Tools run their reading code under read_guarded(); a fault becomes
// Errc::corrupt instead of a crash. Not for the library (siglongjmp skips destructors: the
// guarded code must own no resource it cannot afford to leak).
#pragma once

#include <functional>
#include <string>

#include "fabric_shm/result.h"

namespace fabric_shm::cli {

/// Installs the SIGBUS/SIGSEGV handlers (once per process; faults outside a guard keep the
/// default action, so real bugs still crash with a core).
void install_fault_guard();

/// Runs fn; a SIGBUS/SIGSEGV inside it returns Corrupt naming `what` and the signal.
/// Not reentrant, single-threaded use only. Objects fn creates are leaked on a fault.
Status read_guarded(const std::function<Status()>& fn, const std::string& what);

/// How many faults read_guarded() has turned into errors in this process. After one, what
/// the faulting code owned is orphaned: leave with _exit() rather than run destructors.
unsigned fault_count();

}  // namespace fabric_shm::cli
