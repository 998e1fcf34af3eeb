// SPDX-License-Identifier: MIT
// SIGBUS/SIGSEGV guard for tools reading a segment that may be truncated under them.
#include "fault_guard.h"

#include <setjmp.h>
#include <signal.h>

#include <cstdio>
#include <cstring>

namespace fabric_shm::cli {
namespace {

sigjmp_buf g_jump;
volatile sig_atomic_t g_armed = 0;
volatile sig_atomic_t g_signal = 0;
volatile void* g_address = nullptr;
unsigned g_faults = 0;

void on_fault(int sig, siginfo_t* info, void*) {
    if (!g_armed) {
        // A fault outside a guard is a bug: restore the default action and re-raise.
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_armed = 0;
    g_signal = sig;
    g_address = info ? info->si_addr : nullptr;
    siglongjmp(g_jump, 1);
}

/// Kept out of line so that no local of read_guarded() lives across the sigsetjmp
/// (-Wclobbered): after a fault, only the jump target's frame is used.
[[gnu::noinline]] Status run_armed(const std::function<Status()>& fn) {
    g_armed = 1;
    Status status = fn();
    g_armed = 0;
    return status;
}

}  // namespace

void install_fault_guard() {
    static bool installed = false;
    if (installed) return;
    installed = true;
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, nullptr);
    sigaction(SIGSEGV, &sa, nullptr);
}

Status read_guarded(const std::function<Status()>& fn, const std::string& what) {
    install_fault_guard();
    // savemask = 1: siglongjmp restores the signal mask, so the next fault is delivered again.
    if (sigsetjmp(g_jump, 1) != 0) {
        ++g_faults;
        const char* name = g_signal == SIGBUS ? "SIGBUS" : "SIGSEGV";
        char addr[32];
        std::snprintf(addr, sizeof addr, "%p", const_cast<void*>(g_address));
        return make_error(Errc::corrupt, what + ": " + name + " at " + addr +
                                             " while reading the mapping (segment truncated or corrupt "
                                             "while being read)");
    }
    return run_armed(fn);
}

unsigned fault_count() { return g_faults; }

}  // namespace fabric_shm::cli
