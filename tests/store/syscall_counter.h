// SPDX-License-Identifier: MIT
// Counts the system calls a thread makes, for tests that assert a path makes none: a seccomp
// filter traps every system call of the thread that installs it (and of threads it starts
// afterwards) with SIGSYS; the handler counts the call and performs it from the one instruction
// the filter lets through, so the program behaves exactly as without the filter. Irrevocable:
// install it in a forked child only. x86-64 only, and neither under valgrind (it performs system
// calls itself) nor under TSan (it defers signals): syscalls_countable() says.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#if defined(__SANITIZE_THREAD__)
#define FABRIC_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FABRIC_TEST_TSAN 1
#endif
#endif

#if defined(__x86_64__) && !defined(FABRIC_TEST_TSAN)
#define FABRIC_TEST_COUNTS_SYSCALLS 1
#endif

namespace fabric_shm::test {

constexpr int kSyscallNumbers = 512;

/// Counts, meant to live in a MAP_SHARED page the parent reads after the child exits.
struct SyscallCounts {
    std::atomic<uint64_t> total{0};
    std::atomic<uint64_t> by_nr[kSyscallNumbers] = {};

    /// " nr 232 x3 nr 1 x2" for the numbers seen (empty when none).
    std::string which() const;
};

/// True where count_syscalls_from_now() can work (x86-64, not TSan, not under valgrind).
bool syscalls_countable();

/// From now on every system call of this thread (and of threads it starts later) adds to
/// `counts`, until stop_counting_syscalls(). False when the kernel refuses the filter (errno).
bool count_syscalls_from_now(SyscallCounts& counts);

/// Calls still trap and are performed, but no longer counted.
void stop_counting_syscalls();

}  // namespace fabric_shm::test
