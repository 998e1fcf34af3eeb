// SPDX-License-Identifier: MIT
// Shared helpers for the standalone floor and peer benchmark programs (bench/floor/*,
// bench/peers/*). Plain C++20, no project dependencies except the harness histogram
// (bench/harness/histogram.h; link bench/harness/histogram.cpp). Built by
// scripts/bench-peers.sh with plain g++ lines, not by meson.
//
// Output: one JSON object per line on stdout:
//   {"system":..,"scenario":..,"variant":..,"mode":"spin|parked","size":B,"count":N,
//    "seconds":s,"throughput":x,"unit":"msg/s"|"B/s"|..,"p50_ns":..,"p90_ns":..,"p99_ns":..,
//    "p999_ns":..,"max_ns":..,"latency":"<what the percentiles measure>", ...extra}
//
// Cross-process harness state (start time, flow-control window, stop count) lives in one
// anonymous MAP_SHARED page created before fork(); waits on it use raw SHARED futexes
// (never std::atomic::wait, never FUTEX_*_PRIVATE: both lose wakeups across processes).
#pragma once

#include "../harness/histogram.h"

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace floorbench {

using fabric_shm::bench::Histogram;

inline uint64_t now_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  // same clock in every process of the host
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

/// User + system CPU time of this process so far (getrusage), ns.
inline uint64_t cpu_ns_self() noexcept {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t(ru.ru_utime.tv_sec) + uint64_t(ru.ru_stime.tv_sec)) * 1000000000ull +
           (uint64_t(ru.ru_utime.tv_usec) + uint64_t(ru.ru_stime.tv_usec)) * 1000ull;
}

/// One spin-wait step: PAUSE on x86, YIELD on AArch64, nothing elsewhere (the library's
/// equivalent is libfabric_shm/src/cpu_relax.h; this file stays free of project headers).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

/// Spin-wait step: PAUSE for the first kSpins iterations of one wait, then sched_yield() on
/// every further iteration. On an idle machine a hand-off (~0.1 µs) completes long before
/// the yield, so this is pure busy-polling; on an oversubscribed one (more runnable
/// processes than CPUs) it lets the partner run instead of burning the time slice. With
/// 4096 spins (~80 µs) waiter and partner sharing one CPU showed up as an ~85 µs mode.
struct Backoff {
    static constexpr uint32_t kSpins = 256;  // ~5 µs of PAUSE on Zen 4 (PAUSE ~65 cycles)
    uint32_t n = 0;
    void pause() noexcept {
        if (n < kSpins) { ++n; cpu_relax(); }
        else sched_yield();
    }
};

/// Spins until ready() (Backoff); false when `failed` is set (the partner stopped) or this one
/// wait lasts longer than timeout_ns (a partner that died or stopped without saying so): a
/// lost partner ends the run, not the machine. The clock is read only once a wait has begun,
/// and with the flag every 1024 polls.
template <class Ready>
bool spin_until(Ready ready, const std::atomic<uint32_t>& failed, uint64_t timeout_ns) noexcept {
    if (ready()) return true;
    const uint64_t deadline = now_ns() + timeout_ns;
    Backoff b;
    for (uint32_t n = 1; !ready(); ++n) {
        if ((n & 1023) == 0 && (failed.load(std::memory_order_relaxed) != 0 || now_ns() > deadline)) return false;
        b.pause();
    }
    return true;
}

/// Option `opt`'s value as a whole decimal number; anything else ends the program (status 2).
inline uint64_t parse_u64_option(const char* opt, const char* v) {
    char* end = nullptr;
    const unsigned long long x = std::strtoull(v, &end, 10);
    if (end == v || *end != '\0') { std::fprintf(stderr, "%s: not a number: %s\n", opt, v); std::exit(2); }
    return x;
}

/// Shared (not _PRIVATE) futex wait: returns when *addr != expected, on a wake, or after timeout.
inline void futex_wait(std::atomic<uint32_t>* addr, uint32_t expected, uint64_t timeout_ns = 0) noexcept {
    timespec ts{time_t(timeout_ns / 1000000000ull), long(timeout_ns % 1000000000ull)};
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAIT, expected,
            timeout_ns ? &ts : nullptr, nullptr, 0);
}
inline void futex_wake(std::atomic<uint32_t>* addr, int n = INT_MAX) noexcept {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAKE, n, nullptr, nullptr, 0);
}

/// One anonymous shared page for harness coordination (not part of any measured transport
/// except the floor programs, which use it as *the* transport).
inline void* shared_page(size_t bytes = 4096) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); std::exit(2); }
    std::memset(p, 0, bytes);
    return p;
}

/// Harness control block shared by producer and consumer processes.
/// `done` counts messages the consumer has finished; the producer keeps at most `window`
/// in flight (window 1 = unloaded latency; large window = max throughput).
struct alignas(64) Ctl {
    std::atomic<uint32_t> done_lo;        ///< consumer: low 32 bits of finished count (futex word)
    std::atomic<uint32_t> prod_waiting;   ///< producer: 1 while parked on done_lo
    std::atomic<uint64_t> measure_from_ns;///< producer: messages stamped before this are warm-up
    std::atomic<uint64_t> total;          ///< producer: total messages sent (set before the stop msg)
    std::atomic<uint32_t> ready;          ///< consumer: 1 once its endpoint is up (futex word)
    std::atomic<uint32_t> wake_at;        ///< producer: wake it once done_lo reaches this (mod 2^32)
    std::atomic<uint64_t> producer_cpu_ns;///< producer: its CPU time (ns) from start to its last send
    char tail[64 - 40];
};
static_assert(sizeof(Ctl) == 64, "the control block is one shared cache line between the two processes");

/// Consumer side: publish progress; wake a parked producer.
inline void ctl_done(Ctl* c, uint64_t done) noexcept {
    c->done_lo.store(uint32_t(done), std::memory_order_seq_cst);  // pairs with producer's seq_cst load
    if (c->prod_waiting.load(std::memory_order_seq_cst) &&
        int32_t(uint32_t(done) - c->wake_at.load(std::memory_order_relaxed)) >= 0)
        futex_wake(&c->done_lo);
}
/// Producer side: wait until fewer than `window` messages are in flight; once it has to
/// park, it sleeps until the in-flight count is down to window/2 (hysteresis, so a full
/// window does not turn into one futex wake per message).
inline void ctl_wait_window(Ctl* c, uint64_t sent, uint64_t window, bool spin) noexcept {
    for (Backoff b;;) {
        uint32_t d = c->done_lo.load(std::memory_order_acquire);
        if (uint32_t(sent) - d < window) return;
        if (spin) { b.pause(); continue; }
        c->wake_at.store(uint32_t(sent - window / 2), std::memory_order_relaxed);
        c->prod_waiting.store(1, std::memory_order_seq_cst);
        d = c->done_lo.load(std::memory_order_seq_cst);  // Dekker pair with ctl_done
        if (uint32_t(sent) - d < window) { c->prod_waiting.store(0, std::memory_order_relaxed); return; }
        futex_wait(&c->done_lo, d, 20000000ull);  // 20 ms safety timeout
        c->prod_waiting.store(0, std::memory_order_relaxed);
    }
}
inline void ctl_set_ready(Ctl* c) noexcept {
    c->ready.store(1, std::memory_order_release);  // pairs with ctl_wait_ready
    futex_wake(&c->ready);
}
inline void ctl_wait_ready(Ctl* c) noexcept {
    while (c->ready.load(std::memory_order_acquire) == 0) futex_wait(&c->ready, 0, 10000000ull);
}

/// Consumer-side measurement: one-way / end-to-end latency from a producer timestamp,
/// skipping warm-up messages (stamped before measure_from_ns).
struct Meter {
    Histogram hist;
    uint64_t measured = 0, first_ns = 0, last_ns = 0;
    void sample(const Ctl* c, uint64_t stamp_ns, uint64_t now) noexcept {
        const uint64_t from = c->measure_from_ns.load(std::memory_order_relaxed);
        if (stamp_ns < from) return;
        if (measured == 0) first_ns = from;
        hist.record(now > stamp_ns ? now - stamp_ns : 0);
        ++measured;
        last_ns = now;
    }
    double seconds() const noexcept { return measured ? double(last_ns - first_ns) / 1e9 : 0.0; }
    double rate() const noexcept { const double s = seconds(); return s > 0 ? double(measured) / s : 0.0; }
};

/// Minimal JSON line builder (keys and string values here are plain ASCII).
class Json {
public:
    Json& s(const char* k, const std::string& v) { key(k); out_ += '"'; out_ += v; out_ += '"'; return *this; }
    Json& u(const char* k, uint64_t v) { key(k); out_ += std::to_string(v); return *this; }
    Json& d(const char* k, double v) {
        key(k);
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.6g", v);
        out_ += buf;
        return *this;
    }
    Json& hist(const Histogram& h) {
        return u("p50_ns", h.percentile(50)).u("p90_ns", h.percentile(90)).u("p99_ns", h.percentile(99))
            .u("p999_ns", h.percentile(99.9)).u("max_ns", h.max()).d("mean_ns", h.mean());
    }
    /// Client CPU per message: producer + consumer process CPU time over the run (servers
    /// such as redis-server or RouDi not included) / messages sent.
    Json& cpu(const Ctl* c, uint64_t consumer_cpu_ns, uint64_t messages) {
        const uint64_t p = c->producer_cpu_ns.load(std::memory_order_relaxed);
        return u("producer_cpu_ns", p).u("consumer_cpu_ns", consumer_cpu_ns)
            .d("client_cpu_ns_per_msg", messages ? double(p + consumer_cpu_ns) / double(messages) : 0.0);
    }
    void print() {
        std::printf("%s}\n", out_.c_str());
        std::fflush(stdout);
    }
private:
    void key(const char* k) { out_ += first_ ? "{" : ","; first_ = false; out_ += '"'; out_ += k; out_ += "\":"; }
    std::string out_;
    bool first_ = true;
};

/// Common option parsing: --seconds S, --size B, --window W, --cpu-a N, --cpu-b N.
struct Opts {
    double seconds = 2.0;
    double warmup = 0.2;
    uint64_t size = 0;
    uint64_t window = 0;
    int cpu_a = -1, cpu_b = -1;
    std::string only;  // run only this scenario/variant (substring match), empty = all
};
inline Opts parse_opts(int argc, char** argv) {
    Opts o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> const char* {
            if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (a == "--seconds") o.seconds = std::atof(next());
        else if (a == "--warmup") o.warmup = std::atof(next());
        else if (a == "--size") o.size = std::strtoull(next(), nullptr, 10);
        else if (a == "--window") o.window = std::strtoull(next(), nullptr, 10);
        else if (a == "--cpu-a") o.cpu_a = std::atoi(next());
        else if (a == "--cpu-b") o.cpu_b = std::atoi(next());
        else if (a == "--only") o.only = next();
        else if (a == "--help" || a == "-h") {
            std::printf("options: --seconds S (default 2) --warmup S (0.2) --size B --window W "
                        "--cpu-a N --cpu-b N --only NAME\n");
            std::exit(0);
        } else { std::fprintf(stderr, "unknown option %s\n", a.c_str()); std::exit(2); }
    }
    return o;
}
inline bool wanted(const Opts& o, const std::string& name) {
    return o.only.empty() || name.find(o.only) != std::string::npos;
}

inline void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("sched_setaffinity");
}

/// When true, forked children leave with exit() instead of _exit(), so that static
/// destructors run (iceoryx: the runtime singleton deregisters from RouDi in its destructor;
/// without it RouDi keeps the dead app registered and aborts at shutdown).
inline bool g_children_run_exit_handlers = false;

/// fork() a child that runs fn() and leaves with _exit(status) (see above). Flushes stdio first.
template <class Fn>
pid_t fork_child(Fn&& fn) {
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0) { perror("fork"); std::exit(2); }
    if (pid == 0) {
        // Die with the parent: a consumer blocked in recv() must not outlive a killed producer.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1) _exit(1);
        int rc = 1;
        rc = fn();
        std::fflush(stdout);
        if (g_children_run_exit_handlers) std::exit(rc);
        _exit(rc);
    }
    return pid;
}
/// Waits for the child; returns its exit status (128+sig if killed).
inline int wait_child(pid_t pid) {
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return 1;
}

/// Producer stop rule: send until `seconds` after the warm-up ends.
struct Clock {
    uint64_t start, measure_from, stop;
    Clock(const Opts& o, Ctl* c) {
        start = now_ns();
        measure_from = start + uint64_t(o.warmup * 1e9);
        stop = measure_from + uint64_t(o.seconds * 1e9);
        c->measure_from_ns.store(measure_from, std::memory_order_relaxed);
    }
    bool over(uint64_t t) const noexcept { return t >= stop; }
};

/// The 64-byte notification every notify scenario sends.
struct Msg64 {
    uint64_t seq;     ///< message number; kStopSeq ends the run
    uint64_t ts_ns;   ///< producer's now_ns() just before the send call
    char pad[48];
};
static_assert(sizeof(Msg64) == 64, "the scenarios measure 64-byte notifications");
constexpr uint64_t kStopSeq = ~0ull;

/// Generic notify driver: the parent produces, a forked child consumes and prints the JSON
/// line. `mkp()` / `mkc()` build the endpoints inside each process (after fork). Producer
/// API: send(const Msg64&). Consumer API: recv(Msg64&) (blocking or spinning, its choice).
/// Latency = consumer's now_ns() after recv minus the producer's stamp (one-way).
template <class MakeP, class MakeC>
int run_notify(const Opts& o, const char* system, const std::string& variant, const char* mode,
               uint64_t window, bool spin_wait, MakeP mkp, MakeC mkc) {
    auto* ctl = new (shared_page()) Ctl{};
    const pid_t child = fork_child([&]() -> int {
        pin(o.cpu_b);
        auto c = mkc();
        ctl_set_ready(ctl);
        const uint64_t cpu0 = cpu_ns_self();
        Meter m;
        Msg64 msg{};
        uint64_t n = 0;
        for (;;) {
            if (!c.recv(msg)) return 3;
            if (msg.seq == kStopSeq) break;
            m.sample(ctl, msg.ts_ns, now_ns());
            ctl_done(ctl, ++n);
        }
        const uint64_t cpu = cpu_ns_self() - cpu0;
        Json().s("system", system).s("scenario", "notify").s("variant", variant).s("mode", mode)
            .u("size", 64).u("count", m.measured).d("seconds", m.seconds()).d("throughput", m.rate())
            .s("unit", "msg/s").hist(m.hist).s("latency", "one_way_stamp_to_recv").u("window", window)
            .u("received", n).u("sent", ctl->total.load()).cpu(ctl, cpu, n).print();
        return n == ctl->total.load() ? 0 : 4;
    });
    pin(o.cpu_a);
    auto p = mkp();
    ctl_wait_ready(ctl);
    const uint64_t cpu0 = cpu_ns_self();
    Clock clk(o, ctl);
    Msg64 msg{};
    uint64_t sent = 0;
    for (;;) {
        ctl_wait_window(ctl, sent, window, spin_wait);
        msg.seq = sent;
        msg.ts_ns = now_ns();
        p.send(msg);
        ++sent;
        if (clk.over(msg.ts_ns)) break;
    }
    ctl->total.store(sent, std::memory_order_relaxed);
    ctl->producer_cpu_ns.store(cpu_ns_self() - cpu0, std::memory_order_relaxed);
    msg.seq = kStopSeq;
    p.send(msg);
    const int rc = wait_child(child);
    if (rc != 0) std::fprintf(stderr, "%s notify %s: consumer exited with %d\n", system, variant.c_str(), rc);
    return rc;
}

}  // namespace floorbench
