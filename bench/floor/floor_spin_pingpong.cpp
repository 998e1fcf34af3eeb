// SPDX-License-Identifier: MIT
// Floor 1: the cost of a cross-process hand-off by busy-spinning on shared memory.
//  - spin_pingpong: two processes, one anonymous MAP_SHARED page, each owns one 8-byte
//    sequence word in its own cache line; acquire/release spin. Records every round trip
//    (one clock read per round trip); reports one-way = RTT/2 percentiles, and RTT.
//    Waits PAUSE-spin, then sched_yield() after 256 spins (see Backoff in common.h), so
//    an oversubscribed machine measures the hand-off rather than a lost time slice.
//  - spin_stream: one-way throughput ceiling for 64-byte messages: an SPSC ring of 1024
//    64-byte slots, each slot carrying its own sequence word (no timestamps, no batching).
//  - spin_light: one-way latency of a 64-byte message sent at a light, fixed rate (default
//    10,000/s), measured the way `fabric-shm-bench notify` measures its light-load row: the
//    message carries its scheduled send time, the consumer subtracts it from one clock read
//    on arrival. The ring has the notify topic's shape (4096 slots of 128 bytes, a 32-byte
//    slot header then the payload, so a message spans two lines), and both sides wait as the
//    library and the bench do: the consumer PAUSE-spins and, past a wait's first 256 empty
//    rounds, yields once per 64 rounds while it is being switched out and once per 50 us while
//    it is not (libfabric_shm/src/spin_yield.h), the producer yields while its send time is
//    more than 20 us away. Two variants:
//      store          the slot's sequence word is published by one release store;
//      claim_publish  a CAS claims the word, the bytes are written, a second CAS publishes:
//                     the least a ring needs whose writers can be stopped or killed between
//                     claim and publish (the library's protocol; docs/topics.md). The consumer
//                     spins on the word the producer CASes twice, so the line moves more often.
//    Ping-pong measures a hand-off between two hot loops; this measures the first hand-off
//    after ~100 us of idle spinning, plus the two clock reads a stamped one-way latency costs.
//  - claim_stream: spin_stream's closed loop with the notify topic's slots and the steps of
//    its send and poll, and nothing else: per message the producer loads the tail and the
//    slot word, claims the word (CAS), moves the tail on (CAS, its own line), writes the
//    32-byte envelope and 64 bytes after a release fence, publishes (seq_cst CAS) and loads
//    the waiters word; the consumer spins on the slot's word, copies envelope and payload,
//    and re-loads the word after an acquire fence (the seqlock check). The consumer keeps up,
//    so it waits on the very word the producer claims next: each claim and each publish
//    takes that line back from it. The throughput floor of a ring whose writers may stop
//    between claim and publish (docs/topics.md), against spin_stream's one release store.
//    --producer-work NS (0 to 1,000,000): the producer also spins NS ns (clock reads) before
//    each message, to see what a producer with that much work per send does to the ring (a
//    consumer that keeps up waits on the line the producer writes next).
// Usage: floor_spin_pingpong [--seconds S] [--warmup S] [--rate R] [--producer-work NS] [--cpu-a N --cpu-b N]
//                            [--only NAME]
#include "common.h"

#include <algorithm>
#include <vector>

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

/// The end of a closed-loop stream of n messages: waits until the consumer has read them all (it
/// publishes its count every 64 messages), stops it with kStop in the word of slot n, and reaps
/// it into rc. Returns the time the last message was known read.
uint64_t stop_stream(const std::atomic<uint64_t>& consumed, uint64_t n, std::atomic<uint64_t>& next_word,
                     pid_t child, int& rc) {
    for (Backoff b; consumed.load(std::memory_order_acquire) + 64 <= n;) b.pause();  // partner: consumer release
    const uint64_t t_end = now_ns();
    next_word.store(kStop, std::memory_order_release);  // partner: the consumer's acquire load of the word
    rc = wait_child(child);
    return t_end;
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
    int rc = 0;
    const uint64_t t_end = stop_stream(r->consumed.v, n, r->slots[n % kSlots].seq, child, rc);
    const uint64_t measured = n - n_from;
    const double secs = double(t_end - t_from) / 1e9;
    Json().s("system", "floor").s("scenario", "spin_stream").s("variant", "shm_spsc_ring").s("mode", "spin")
        .u("size", 64).u("count", measured).d("seconds", secs)
        .d("throughput", double(measured) / secs).s("unit", "msg/s")
        .s("latency", "none").u("consumed", ctl->total.load()).u("child_rc", uint64_t(rc)).print();
}

struct alignas(128) LightSlot {
    std::atomic<uint64_t> word;  ///< 2n+1 claimed, 2n+2 published for message n (release store or acq_rel CAS)
    uint64_t envelope[3];        ///< a 32-byte slot header, as the topic's
    std::atomic<uint64_t> scheduled_ns;  ///< first 8 payload bytes: the scheduled send time
    char payload[56];                    ///< the rest of the 64-byte message: spills into the next line
    char pad[128 - 32 - 64];
};
static_assert(sizeof(LightSlot) == 128, "the notify topic's stride");
constexpr size_t kLightSlots = 4096;

void spin_light(const Opts& o, double rate, bool claim_publish) {
    auto* ring = new (shared_page(sizeof(LightSlot) * kLightSlots)) LightSlot[kLightSlots]{};
    auto* hist = new (shared_page(sizeof(Histogram))) Histogram{};
    auto* ctl = new (shared_page()) Ctl{};
    const double interval = 1e9 / rate;
    const uint64_t warmup = uint64_t(o.warmup * rate), count = warmup + uint64_t(o.seconds * rate);
    const pid_t child = fork_child([&] {
        pin(o.cpu_b);
        ctl_set_ready(ctl);
        uint64_t sum = 0;
        // The library's yield policy (spin_yield.h), restated here.
        bool contended = true;
        uint64_t rounds_since_yield = 0, last_yield_ns = 0, now = now_ns();
        long switches = -1;
        for (uint64_t n = 0; n < count; ++n) {
            LightSlot& s = ring[n % kLightSlots];
            for (uint32_t spins = 1; s.word.load(std::memory_order_acquire) != 2 * n + 2; ++spins) {  // partner: the publish
                if ((spins & 63) == 0) now = now_ns();  // the library reads the clock every 64 rounds
                ++rounds_since_yield;
                if (spins >= 256 && (contended ? rounds_since_yield >= 64 : now - last_yield_ns >= 50000)) {
                    sched_yield();
                    rusage ru{};
                    getrusage(RUSAGE_THREAD, &ru);
                    contended = ru.ru_nivcsw != switches;
                    switches = ru.ru_nivcsw;
                    last_yield_ns = now;
                    rounds_since_yield = 0;
                } else {
                    cpu_relax();
                }
            }
            const uint64_t scheduled = s.scheduled_ns.load(std::memory_order_relaxed);
            for (char c : s.payload) sum += uint8_t(c);
            const uint64_t arrived = now_ns();
            if (n >= warmup) hist->record(arrived > scheduled ? arrived - scheduled : 0);
        }
        return sum == 1 ? 1 : 0;  // keeps the payload reads
    });
    pin(o.cpu_a);
    ctl_wait_ready(ctl);
    const uint64_t base = now_ns() + 1000000;
    for (uint64_t n = 0; n < count; ++n) {
        const uint64_t scheduled = base + uint64_t(double(n) * interval);
        // As fabric-shm-bench's wait_until_ns: yield-capable backoff while far, PAUSE in the last 20 us.
        Backoff far;
        for (uint64_t t; (t = now_ns()) < scheduled;) {
            if (scheduled - t > 20000) far.pause();
            else cpu_relax();
        }
        LightSlot& s = ring[n % kLightSlots];
        if (claim_publish) {
            uint64_t w = n < kLightSlots ? 0 : 2 * (n - kLightSlots) + 2;
            s.word.compare_exchange_strong(w, 2 * n + 1, std::memory_order_acq_rel, std::memory_order_relaxed);
        }
        s.scheduled_ns.store(scheduled, std::memory_order_relaxed);
        std::memset(s.payload, int(n), sizeof s.payload);
        if (claim_publish) {
            uint64_t w = 2 * n + 1;
            s.word.compare_exchange_strong(w, 2 * n + 2, std::memory_order_acq_rel, std::memory_order_relaxed);  // partner: consumer acquire
        } else {
            s.word.store(2 * n + 2, std::memory_order_release);  // partner: consumer acquire
        }
    }
    const int rc = wait_child(child);
    Json().s("system", "floor").s("scenario", "spin_light").s("variant", claim_publish ? "claim_publish" : "store")
        .s("mode", "spin").u("size", 64).u("count", count - warmup).d("seconds", o.seconds)
        .d("throughput", rate).s("unit", "msg/s").d("offered_rate", rate).hist(*hist)
        .s("latency", "one_way=receive-scheduled").u("child_rc", uint64_t(rc)).print();
}

struct alignas(128) TopicSlot {
    std::atomic<uint64_t> word;  ///< 2n+1 claimed, 2n+2 published for message n
    std::atomic<uint64_t> offset, timestamp_ns, lens;  ///< the 32-byte envelope
    char payload[64];
    char pad[128 - 32 - 64];
};
static_assert(sizeof(TopicSlot) == 128, "the notify topic's stride");
struct TopicRing {
    TopicSlot slots[kLightSlots];
    alignas(128) std::atomic<uint64_t> tail;  ///< producer: next offset to claim
    alignas(128) std::atomic<uint64_t> waiters;  ///< never set here: the producer only loads it
    alignas(128) std::atomic<uint64_t> consumed;  ///< consumer: messages read (every 64, release)
};

void claim_stream(const Opts& o, uint64_t work_ns) {
    auto* r = new (shared_page(sizeof(TopicRing))) TopicRing{};
    auto* ctl = new (shared_page()) Ctl{};
    const pid_t child = fork_child([&] {
        pin(o.cpu_b);
        uint64_t n = 0, sum = 0;
        ctl_set_ready(ctl);
        char copy[64];
        for (;;) {
            TopicSlot& s = r->slots[n % kLightSlots];
            uint64_t w;
            for (Backoff b; (w = s.word.load(std::memory_order_acquire)) != 2 * n + 2;) {  // partner: the publish
                if (w == kStop) {
                    ctl->total.store(n, std::memory_order_relaxed);
                    return sum == 12345 ? 1 : 0;
                }
                b.pause();
            }
            sum += s.offset.load(std::memory_order_relaxed) + s.lens.load(std::memory_order_relaxed);
            std::memcpy(copy, s.payload, sizeof copy);
            std::atomic_thread_fence(std::memory_order_acquire);  // partner: the claimer's release fence
            if (s.word.load(std::memory_order_relaxed) != w) return 3;  // torn: cannot happen with one producer
            sum += uint8_t(copy[0]) + uint8_t(copy[63]);
            ++n;
            if ((n & 63) == 0) r->consumed.store(n, std::memory_order_release);  // partner: producer acquire
        }
    });
    pin(o.cpu_a);
    ctl_wait_ready(ctl);
    const uint64_t start = now_ns();
    const uint64_t measure_from = start + uint64_t(o.warmup * 1e9);
    const uint64_t stop = measure_from + uint64_t(o.seconds * 1e9);
    uint64_t n = 0, n_from = 0, t_from = 0, consumed = 0;
    char payload[64];
    std::memset(payload, 7, sizeof payload);
    for (;;) {
        for (Backoff b; n - consumed >= kLightSlots - 64; b.pause())
            consumed = r->consumed.load(std::memory_order_acquire);  // partner: consumer release
        if (work_ns)
            for (const uint64_t until = now_ns() + work_ns; now_ns() < until;) {
            }
        uint64_t t = r->tail.load(std::memory_order_acquire);
        TopicSlot& s = r->slots[t % kLightSlots];
        uint64_t w = s.word.load(std::memory_order_acquire);
        const uint64_t free_word = t < kLightSlots ? 0 : 2 * (t - kLightSlots) + 2;
        if (w != free_word || !s.word.compare_exchange_strong(w, 2 * t + 1, std::memory_order_acq_rel,
                                                              std::memory_order_relaxed)) {
            std::fprintf(stderr, "claim_stream: slot of offset %llu holds %llu, not free\n",
                         (unsigned long long)t, (unsigned long long)w);
            std::abort();
        }
        r->tail.compare_exchange_strong(t, t + 1, std::memory_order_release, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);  // partner: the reader's acquire fence
        s.offset.store(n, std::memory_order_relaxed);
        s.timestamp_ns.store(start, std::memory_order_relaxed);
        s.lens.store(64, std::memory_order_relaxed);
        payload[0] = char(n);
        std::memcpy(s.payload, payload, sizeof payload);
        uint64_t claimed = 2 * n + 1;
        s.word.compare_exchange_strong(claimed, 2 * n + 2, std::memory_order_seq_cst);  // partner: consumer acquire
        if (r->waiters.load(std::memory_order_seq_cst) != 0) std::abort();  // nobody parks here
        ++n;
        if ((n & 1023) == 0) {
            const uint64_t now = now_ns();
            if (t_from == 0 && now >= measure_from) { t_from = now; n_from = n; }
            if (now >= stop) break;
        }
    }
    int rc = 0;
    const uint64_t t_end = stop_stream(r->consumed, n, r->slots[n % kLightSlots].word, child, rc);
    const uint64_t measured = n - n_from;
    const double secs = double(t_end - t_from) / 1e9;
    Json().s("system", "floor").s("scenario", "claim_stream").s("variant", "topic_slot_protocol").s("mode", "spin")
        .u("producer_work_ns", work_ns).u("size", 64).u("count", measured).d("seconds", secs)
        .d("throughput", double(measured) / secs).s("unit", "msg/s")
        .s("latency", "none").u("consumed", ctl->total.load()).u("child_rc", uint64_t(rc)).print();
}

}  // namespace

/// --producer-work's value: whole nanoseconds, at most kMaxWorkNs; anything else ends the program
/// with a message naming the value and the limit.
static constexpr uint64_t kMaxWorkNs = 1'000'000;
static uint64_t parse_work_ns(const char* text) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text, &end, 10);
    if (*text < '0' || *text > '9' || *end != '\0' || errno != 0 || v > kMaxWorkNs) {
        std::fprintf(stderr, "floor_spin_pingpong: --producer-work '%s' must be whole nanoseconds from 0 to %llu\n", text,
                     (unsigned long long)kMaxWorkNs);
        std::exit(2);
    }
    return v;
}

int main(int argc, char** argv) {
    double rate = 10000;
    uint64_t work_ns = 0;
    std::vector<char*> rest{argv[0]};
    for (int i = 1; i < argc; ++i) {  // --rate and --producer-work are this program's own; the rest are common
        if (std::strcmp(argv[i], "--rate") == 0 && i + 1 < argc) rate = std::atof(argv[++i]);
        else if (std::strcmp(argv[i], "--producer-work") == 0 && i + 1 < argc) work_ns = parse_work_ns(argv[++i]);
        else rest.push_back(argv[i]);
    }
    const Opts o = parse_opts(int(rest.size()), rest.data());
    if (wanted(o, "spin_pingpong")) spin_pingpong(o);
    if (wanted(o, "spin_stream")) spin_stream(o);
    if (wanted(o, "claim_stream")) claim_stream(o, work_ns);
    if (wanted(o, "spin_light")) {
        spin_light(o, rate, false);
        spin_light(o, rate, true);
    }
    return 0;
}
