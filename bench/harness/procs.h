// SPDX-License-Identifier: MIT
// Multi-process helpers for the cross-process scenarios (pipeline, notify): a shared
// anonymous mapping created before fork() for the harness's own coordination state, child
// processes that die with the bench, waits that do not starve a 2-vCPU machine, and
// per-process CPU time. The measured system (pool, store, topics) is opened by each child
// itself; only counters, timestamps and latency histograms travel through this mapping.
#pragma once

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <new>
#include <vector>

#include "bench.h"

namespace fabric_shm::bench {

/// A T placed in a MAP_SHARED | MAP_ANONYMOUS mapping: visible to children forked after it.
/// Only lock-free atomics and plain data written by one process are used in it.
template <class T>
class SharedBlock {
public:
    SharedBlock() {
        void* p = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            std::perror("fabric-shm-bench: mmap");
            std::exit(1);
        }
        ptr_ = new (p) T{};
    }
    ~SharedBlock() {
        ptr_->~T();
        munmap(ptr_, sizeof(T));
    }
    SharedBlock(const SharedBlock&) = delete;
    SharedBlock& operator=(const SharedBlock&) = delete;
    T* operator->() const { return ptr_; }
    T& operator*() const { return *ptr_; }

private:
    T* ptr_;
};

/// --pin: each child of a run is pinned to one CPU, in turn from the bench's allowed CPUs
/// (first child the first CPU, second the second, ...; wait_children starts the next run over),
/// as the floor and peer programs' --cpu-a/--cpu-b do. A run with more children than CPUs
/// (pipeline's two-worker configs on 2 vCPUs) puts the later ones on CPUs already taken.
/// Unpinned, the scheduler may keep the two spinning sides of a run on one vCPU of a 2-vCPU
/// machine, taking turns: a closed loop then measures one CPU's time-sharing, not a hand-off
/// between two (docs/benchmarks.md).
struct ChildPinning {
    bool on = false;
    std::vector<int> cpus;  ///< the bench's allowed CPUs, in order
    size_t next = 0;        ///< the next child's index into cpus
};
inline ChildPinning& child_pinning() {
    static ChildPinning p;
    return p;
}
/// Turns --pin on; false (and off) when the allowed CPUs cannot be read.
inline bool pin_children() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return false;
    ChildPinning& p = child_pinning();
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) p.cpus.push_back(c);
    p.on = !p.cpus.empty();
    return p.on;
}

/// Forks a child that runs fn and leaves with _exit(fn()); it is SIGKILLed if the bench dies.
inline pid_t spawn_child(const std::function<int()>& fn) {
    std::fflush(nullptr);
    ChildPinning& pins = child_pinning();
    const int cpu = pins.on ? pins.cpus[pins.next++ % pins.cpus.size()] : -1;
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
        std::perror("fabric-shm-bench: fork");
        std::exit(1);
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(99);
        prctl(PR_SET_TIMERSLACK, 1UL);  // sleeps before a scheduled send wake on time
        if (cpu >= 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if (sched_setaffinity(0, sizeof one, &one) != 0) {
                std::fprintf(stderr, "fabric-shm-bench: --pin: cannot pin to CPU %d\n", cpu);
                _exit(98);
            }
        }
        _exit(fn());
    }
    return pid;
}

/// Waits for every child; SIGKILLs those still running after timeout_ns. True when all
/// exited with status 0.
inline bool wait_children(const std::vector<pid_t>& pids, uint64_t timeout_ns) {
    child_pinning().next = 0;  // the next run's first child takes the first CPU again
    const uint64_t deadline = now_ns() + timeout_ns;
    bool ok = true;
    for (pid_t pid : pids) {
        int status = 0;
        for (;;) {
            const pid_t r = waitpid(pid, &status, WNOHANG);
            if (r == pid) break;
            if (r < 0 && errno != EINTR) {
                ok = false;
                break;
            }
            if (now_ns() > deadline) {
                std::fprintf(stderr, "fabric-shm-bench: child %d did not finish in time: killed\n", int(pid));
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                ok = false;
                break;
            }
            timespec ts{0, 2'000'000};
            nanosleep(&ts, nullptr);
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (WIFSIGNALED(status))
                std::fprintf(stderr, "fabric-shm-bench: child %d killed by signal %d\n", int(pid), WTERMSIG(status));
            else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
                std::fprintf(stderr, "fabric-shm-bench: child %d exited with %d\n", int(pid), WEXITSTATUS(status));
            ok = false;
        }
    }
    return ok;
}

inline void sleep_ns(uint64_t ns) {
    timespec ts{time_t(ns / 1'000'000'000ull), long(ns % 1'000'000'000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/// Busy-wait step for the harness's own waits: PAUSE for the first 256 calls, then
/// sched_yield (with more runnable processes than CPUs the partner gets the CPU).
struct SpinBackoff {
    static void cpu_relax() noexcept {  // PAUSE on x86, YIELD on AArch64, nothing elsewhere
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield" ::: "memory");
#endif
    }
    uint32_t n = 0;
    void pause() noexcept {
        if (n < 256) {
            ++n;
            cpu_relax();
        } else {
            sched_yield();
        }
    }
};

/// Waits until cond() holds: spinning (spin mode) or in 20 us sleeps (parked mode, so the
/// harness does not take a CPU from the measured processes). False after timeout_ns.
inline bool wait_for(const std::function<bool()>& cond, bool spin, uint64_t timeout_ns) {
    const uint64_t deadline = now_ns() + timeout_ns;
    SpinBackoff b;
    uint32_t i = 0;
    while (!cond()) {
        if ((++i & 63) == 0 && now_ns() > deadline) return false;
        if (spin)
            b.pause();
        else
            sleep_ns(20'000);
    }
    return true;
}

/// Waits until CLOCK_MONOTONIC reaches t: sleeps while more than 100 us remain (unless
/// `spin`), then spins (PAUSE, and sched_yield after 256 of them: on an oversubscribed
/// machine the sender must not hold a CPU the measured consumer needs; on an idle one the
/// yield returns at once). Open-loop senders use it for each scheduled send time.
inline void wait_until_ns(uint64_t t, bool spin) {
    SpinBackoff b;
    for (;;) {
        const uint64_t now = now_ns();
        if (now >= t) return;
        if (!spin && t - now > 100'000)
            sleep_ns(t - now - 60'000);
        else if (t - now > 20'000)
            b.pause();
        else
            SpinBackoff::cpu_relax();  // the last 20 us: no sched_yield (~1 us here) to send late from
    }
}

}  // namespace fabric_shm::bench
