// SPDX-License-Identifier: MIT
// Floor 1: the cost of a cross-process hand-off by busy-spinning on shared memory.
//  - spin_pingpong: two processes, one anonymous MAP_SHARED page, each owns one 8-byte
//    sequence word in its own cache line; acquire/release spin. Records every round trip
//    (one clock read per round trip); reports one-way = RTT/2 percentiles, and RTT.
//    Waits PAUSE-spin, then sched_yield() after 256 spins (see Backoff in common.h), so
//    an oversubscribed machine measures the hand-off rather than a lost time slice.
//  - spin_stream: one-way throughput ceiling for 64-byte messages: an SPSC ring of 1024
//    64-byte slots, each slot carrying its own sequence word (no timestamps, no batching).
// Usage: floor_spin_pingpong [--seconds S] [--warmup S] [--cpu-a N --cpu-b N] [--only NAME]
#include "common.h"

using namespace floorbench;

namespace {

struct alignas(64) Line { std::atomic<uint64_t> v; char pad[56]; };

struct PingPong {
    Line ping;  ///< parent writes the round-trip number (release); child reads (acquire)
    Line pong;  ///< child echoes it (release); parent reads (acquire)
};

constexpr uint64_t kStop = ~0ull;

void spin_pingpong(const Opts& o) {
    auto* pp = new (shared_page()) PingPong{};
    const pid_t child = fork_child([&] {
        pin(o.cpu_b);
        for (uint64_t want = 1;; ++want) {
            uint64_t v;
            for (Backoff b; (v = pp->ping.v.load(std::memory_order_acquire)) < want;) b.pause();  // partner: parent's release store
            if (v == kStop) return 0;
            pp->pong.v.store(v, std::memory_order_release);  // partner: parent's acquire load
        }
    });
    pin(o.cpu_a);
    Histogram rtt;
    const uint64_t start = now_ns();
    const uint64_t measure_from = start + uint64_t(o.warmup * 1e9);
    const uint64_t stop = measure_from + uint64_t(o.seconds * 1e9);
    uint64_t i = 0, measured = 0, t_prev = now_ns(), t_first = 0;
    for (;;) {
        ++i;
        pp->ping.v.store(i, std::memory_order_release);  // partner: child's acquire load
        for (Backoff b; pp->pong.v.load(std::memory_order_acquire) != i;) b.pause();  // partner: child's release store
        const uint64_t t = now_ns();
        if (t >= measure_from) {
            if (measured == 0) t_first = t_prev;
            rtt.record(t - t_prev);
            ++measured;
        }
        t_prev = t;
        if (t >= stop) break;
    }
    pp->ping.v.store(kStop, std::memory_order_release);
    const int rc = wait_child(child);
    const double secs = double(t_prev - t_first) / 1e9;
    Json().s("system", "floor").s("scenario", "spin_pingpong").s("variant", "shm_spin").s("mode", "spin")
        .u("size", 8).u("count", measured).d("seconds", secs)
        .d("throughput", double(measured) / secs).s("unit", "round_trips/s")
        .u("p50_ns", rtt.percentile(50) / 2).u("p90_ns", rtt.percentile(90) / 2)
        .u("p99_ns", rtt.percentile(99) / 2).u("p999_ns", rtt.percentile(99.9) / 2)
        .u("max_ns", rtt.max() / 2).d("mean_ns", rtt.mean() / 2)
        .s("latency", "one_way=rtt/2")
        .u("rtt_p50_ns", rtt.percentile(50)).u("rtt_p99_ns", rtt.percentile(99)).u("rtt_max_ns", rtt.max())
        .u("child_rc", uint64_t(rc)).print();
}

struct alignas(64) Slot {
    std::atomic<uint64_t> seq;  ///< producer: message number + 1 once payload written (release)
    char payload[56];
};
constexpr size_t kSlots = 1024;
struct Ring {
    Slot slots[kSlots];
    Line consumed;  ///< consumer: messages consumed (release), producer reads (acquire) for space
};

void spin_stream(const Opts& o) {
    void* mem = shared_page(sizeof(Ring));
    auto* r = new (mem) Ring{};
    auto* ctl = new (shared_page()) Ctl{};
    const pid_t child = fork_child([&] {
        pin(o.cpu_b);
        uint64_t n = 0, sum = 0;
        ctl_set_ready(ctl);
        for (;;) {
            Slot& s = r->slots[n % kSlots];
            uint64_t v;
            for (Backoff b; (v = s.seq.load(std::memory_order_acquire)) != n + 1;) {  // partner: producer's release
                if (v == kStop) {
                    ctl->total.store(n, std::memory_order_relaxed);
                    return sum == 12345 ? 1 : 0;
                }
                b.pause();
            }
            sum += uint8_t(s.payload[0]);
            ++n;
            if ((n & 63) == 0) r->consumed.v.store(n, std::memory_order_release);  // partner: producer acquire
        }
    });
    pin(o.cpu_a);
    ctl_wait_ready(ctl);
    const uint64_t start = now_ns();
    const uint64_t measure_from = start + uint64_t(o.warmup * 1e9);
    const uint64_t stop = measure_from + uint64_t(o.seconds * 1e9);
    uint64_t n = 0, n_from = 0, t_from = 0, t = start;
    uint64_t consumed = 0;
    for (;;) {
        for (Backoff b; n - consumed >= kSlots - 64; b.pause())
            consumed = r->consumed.v.load(std::memory_order_acquire);  // partner: consumer release
        Slot& s = r->slots[n % kSlots];
        std::memset(s.payload, int(n), sizeof s.payload);
        s.seq.store(n + 1, std::memory_order_release);  // partner: consumer acquire
        ++n;
        if ((n & 1023) == 0) {
            t = now_ns();
            if (t_from == 0 && t >= measure_from) { t_from = t; n_from = n; }
            if (t >= stop) break;
        }
    }
    // Wait for the consumer to drain, then stop it at the next slot.
    for (Backoff b; r->consumed.v.load(std::memory_order_acquire) + 64 <= n;) b.pause();
    const uint64_t t_end = now_ns();
    r->slots[n % kSlots].seq.store(kStop, std::memory_order_release);
    const int rc = wait_child(child);
    const uint64_t measured = n - n_from;
    const double secs = double(t_end - t_from) / 1e9;
    Json().s("system", "floor").s("scenario", "spin_stream").s("variant", "shm_spsc_ring").s("mode", "spin")
        .u("size", 64).u("count", measured).d("seconds", secs)
        .d("throughput", double(measured) / secs).s("unit", "msg/s")
        .s("latency", "none").u("consumed", ctl->total.load()).u("child_rc", uint64_t(rc)).print();
}

}  // namespace

int main(int argc, char** argv) {
    const Opts o = parse_opts(argc, argv);
    if (wanted(o, "spin_pingpong")) spin_pingpong(o);
    if (wanted(o, "spin_stream")) spin_stream(o);
    return 0;
}
