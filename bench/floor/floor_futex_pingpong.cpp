// SPDX-License-Identifier: MIT
// Floor 2: the cost of a blocking cross-process hand-off: raw SHARED futex ping-pong
// (FUTEX_WAIT / FUTEX_WAKE, never the _PRIVATE variants, which lose wakeups across
// processes). Each side checks its word once and parks: no spinning before the wait, and
// the waker always calls FUTEX_WAKE. Reports one-way = RTT/2 percentiles, and RTT.
// Usage: floor_futex_pingpong [--seconds S] [--warmup S] [--cpu-a N --cpu-b N]
#include "common.h"

using namespace floorbench;

namespace {

struct alignas(64) Word { std::atomic<uint32_t> v; char pad[60]; };
struct PingPong {
    Word ping;  ///< parent writes the round-trip number (release) then FUTEX_WAKE
    Word pong;  ///< child echoes it (release) then FUTEX_WAKE
};
constexpr uint32_t kStop = ~0u;

}  // namespace

int main(int argc, char** argv) {
    const Opts o = parse_opts(argc, argv);
    auto* pp = new (shared_page()) PingPong{};
    const pid_t child = fork_child([&] {
        pin(o.cpu_b);
        for (uint32_t want = 1;; ++want) {
            uint32_t v;
            while ((v = pp->ping.v.load(std::memory_order_acquire)) < want)  // partner: parent release
                futex_wait(&pp->ping.v, v);
            if (v == kStop) return 0;
            pp->pong.v.store(v, std::memory_order_release);  // partner: parent acquire
            futex_wake(&pp->pong.v, 1);
        }
    });
    pin(o.cpu_a);
    Histogram rtt;
    const uint64_t start = now_ns();
    const uint64_t measure_from = start + uint64_t(o.warmup * 1e9);
    const uint64_t stop = measure_from + uint64_t(o.seconds * 1e9);
    uint64_t measured = 0, t_prev = now_ns(), t_first = 0;
    for (uint32_t i = 1;; ++i) {
        pp->ping.v.store(i, std::memory_order_release);  // partner: child acquire
        futex_wake(&pp->ping.v, 1);
        uint32_t v;
        while ((v = pp->pong.v.load(std::memory_order_acquire)) != i)  // partner: child release
            futex_wait(&pp->pong.v, v);
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
    futex_wake(&pp->ping.v, 1);
    const int rc = wait_child(child);
    const double secs = double(t_prev - t_first) / 1e9;
    Json().s("system", "floor").s("scenario", "futex_pingpong").s("variant", "shm_futex").s("mode", "parked")
        .u("size", 4).u("count", measured).d("seconds", secs)
        .d("throughput", double(measured) / secs).s("unit", "round_trips/s")
        .u("p50_ns", rtt.percentile(50) / 2).u("p90_ns", rtt.percentile(90) / 2)
        .u("p99_ns", rtt.percentile(99) / 2).u("p999_ns", rtt.percentile(99.9) / 2)
        .u("max_ns", rtt.max() / 2).d("mean_ns", rtt.mean() / 2)
        .s("latency", "one_way=rtt/2")
        .u("rtt_p50_ns", rtt.percentile(50)).u("rtt_p99_ns", rtt.percentile(99)).u("rtt_max_ns", rtt.max())
        .u("child_rc", uint64_t(rc)).print();
    return 0;
}
