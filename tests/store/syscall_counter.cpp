// SPDX-License-Identifier: MIT
#include "syscall_counter.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

#if defined(FABRIC_TEST_COUNTS_SYSCALLS)
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

// The one system call instruction the filter allows: the SIGSYS handler performs every trapped
// call through it. The filter recognises it by the address after it (seccomp_data's
// instruction_pointer is the return address of the call).
extern "C" long fabric_test_raw_syscall(long nr, long a1, long a2, long a3, long a4, long a5, long a6);
extern "C" char fabric_test_raw_syscall_return[];
asm(R"(
    .pushsection .text
    .globl fabric_test_raw_syscall
    .type fabric_test_raw_syscall, @function
fabric_test_raw_syscall:
    movq %rdi, %rax
    movq %rsi, %rdi
    movq %rdx, %rsi
    movq %rcx, %rdx
    movq %r8, %r10
    movq %r9, %r8
    movq 8(%rsp), %r9
    syscall
    .globl fabric_test_raw_syscall_return
fabric_test_raw_syscall_return:
    ret
    .size fabric_test_raw_syscall, .-fabric_test_raw_syscall
    .popsection
)");
#endif

namespace fabric_shm::test {

std::string SyscallCounts::which() const {
    std::string out;
    for (int nr = 0; nr < kSyscallNumbers; ++nr)
        if (const uint64_t c = by_nr[nr].load(std::memory_order_relaxed))
            out += " nr " + std::to_string(nr) + " x" + std::to_string(c);
    return out;
}

#if defined(FABRIC_TEST_COUNTS_SYSCALLS)
namespace {
// Read by the handler on whichever thread traps; written before the filter exists and by
// stop_counting_syscalls (a relaxed atomic: a late count after the stop is harmless).
std::atomic<SyscallCounts*> g_counts{nullptr};

void on_sigsys(int, siginfo_t* info, void* ctx) {
    auto* uc = static_cast<ucontext_t*>(ctx);
    greg_t* r = uc->uc_mcontext.gregs;
    const int nr = info->si_syscall;
    if (SyscallCounts* c = g_counts.load(std::memory_order_relaxed)) {
        c->total.fetch_add(1, std::memory_order_relaxed);
        if (nr >= 0 && nr < kSyscallNumbers) c->by_nr[nr].fetch_add(1, std::memory_order_relaxed);
    }
    r[REG_RAX] = fabric_test_raw_syscall(nr, r[REG_RDI], r[REG_RSI], r[REG_RDX], r[REG_R10], r[REG_R8], r[REG_R9]);
}
}  // namespace

bool syscalls_countable() {
    const char* preload = std::getenv("LD_PRELOAD");
    return !(preload && std::strstr(preload, "vgpreload"));
}

bool count_syscalls_from_now(SyscallCounts& counts) {
    g_counts.store(&counts, std::memory_order_relaxed);
    struct sigaction sa{};
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, nullptr) != 0) return false;
    const uint64_t ip = reinterpret_cast<uint64_t>(fabric_test_raw_syscall_return);
    const uint32_t ip_lo = uint32_t(ip), ip_hi = uint32_t(ip >> 32);
    sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        // The signal return itself must not trap.
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_rt_sigreturn, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, instruction_pointer)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ip_lo, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, instruction_pointer) + 4),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ip_hi, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
    };
    sock_fprog fprog{static_cast<unsigned short>(sizeof prog / sizeof prog[0]), prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) == 0;
}

void stop_counting_syscalls() { g_counts.store(nullptr, std::memory_order_relaxed); }
#else
bool syscalls_countable() { return false; }
bool count_syscalls_from_now(SyscallCounts&) { return false; }
void stop_counting_syscalls() {}
#endif

}  // namespace fabric_shm::test
