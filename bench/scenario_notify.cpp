// SPDX-License-Identifier: MIT
// Scenario "notify": 64-byte messages from a producer process to a consumer process through
// one topic (1 partition, 4096 slots of 128 bytes, on_full=block, the consumer's group
// commits after every poll: lossless). Both processes are children of the bench; the bench
// itself sleeps while they run.
//   closed-loop   the producer sends as fast as the ring lets it: max throughput
//                 (consumer-side completions / s between the end of warm-up and the last
//                 message). No latency: in a closed loop it is queueing time.
//   open-loop     the producer sends at a fixed offered rate (default 50 % of the closed-loop
//                 result of the same mode); each message carries its *scheduled* send time and
//                 the consumer records receive time - scheduled time, so a stall of either
//                 side delays every sample behind it (coordinated omission corrected).
//   ping-pong     parked mode only: a message bounces over two topics between two parked
//                 consumers (spin_ns = 0, so every hand-off is a futex sleep and wake-up);
//                 one-way = RTT / 2. This is the number to hold against the raw
//                 shared-futex ping-pong floor.
// Modes: spin (WaitMode::spin) and parked (WaitMode::park with --park-spin-ns, default the
// library's 20 us). CPU time: getrusage of each child over its measured window.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fabric_shm/consumer.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "harness/bench.h"
#include "harness/procs.h"

namespace fabric_shm::bench {
namespace {

constexpr size_t kMsgBytes = 64;

struct NotifyShared {
    std::atomic<uint32_t> ready{0};
    std::atomic<uint64_t> t_start{0}, t_end{0};          ///< consumer: end of warm-up, last message
    std::atomic<uint64_t> consumer_cpu_ns{0}, producer_cpu_ns{0};
    std::atomic<uint64_t> received{0}, lost{0}, failures{0};
    Histogram latency;  ///< written by the consumer (or the ping side) only; read after it exited
};
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "the results block is shared between forked processes");

/// Messages per send_batch call in the batched closed loop (as the pipeline's spin-1w-batch).
constexpr uint32_t kSendBurst = 16;

struct NotifyRun {
    std::string pool;
    std::string topic;
    bool spin = true;
    bool spin_yield = false;  ///< spin mode: poll(timeout 0) in a loop that yields after 256 empty polls
    uint64_t park_spin_ns = 20'000;
    uint64_t warmup = 0, count = 0;
    double rate = 0;  ///< 0: closed loop
    uint32_t batch = 1;  ///< messages per Producer::send_batch call (1: Producer::send per message)
};

void fail(NotifyShared& sh, const char* what, const Error& e) {
    std::fprintf(stderr, "notify: %s: %s\n", what, e.message.c_str());
    sh.failures.fetch_add(1);
}

int consumer_main(const NotifyRun& r, NotifyShared& sh) {
    auto pool = Pool::open(r.pool);
    if (!pool) return fail(sh, "consumer: open pool", pool.error()), 1;
    ConsumerOptions o;
    o.wait = r.spin ? WaitMode::spin : WaitMode::park;
    o.spin = ns_duration(r.park_spin_ns);
    auto c = Consumer::open(*pool, r.topic, "bench", o);
    if (!c) return fail(sh, "consumer: open", c.error()), 1;
    if (Status st = c->assign_all(); !st) return fail(sh, "consumer: assign", st.error()), 1;
    MessageBatch b;
    sh.ready.store(1, std::memory_order_release);
    const uint64_t total = r.warmup + r.count;
    const bool latency = r.rate > 0;
    uint64_t got = 0, lost = 0, cpu0 = 0;
    SpinBackoff idle;
    while (got + lost < total) {
        auto n = c->poll(b, 256, ns_duration(r.spin_yield ? 0 : kNsPerSec));
        if (!n) return fail(sh, "consumer: poll", n.error()), 1;
        if (*n == 0) {
            if (r.spin_yield) idle.pause();
            continue;
        }
        idle.n = 0;
        const uint64_t now = now_ns();  // one clock read per poll, as a real consumer would
        for (const Message& m : b) {
            uint64_t sched = 0, index = 0;
            if (m.value.size() >= 16) {
                std::memcpy(&sched, m.value.data(), 8);
                std::memcpy(&index, m.value.data() + 8, 8);
            }
            if (latency && index >= r.warmup) sh.latency.record(now - sched);
        }
        const uint64_t before = got + lost;
        got += *n;
        lost += b.lost();
        if (Status st = c->commit(); !st) return fail(sh, "consumer: commit", st.error()), 1;
        if (before < r.warmup && got + lost >= r.warmup) {
            sh.t_start.store(now);
            cpu0 = process_cpu_ns();
        }
    }
    sh.t_end.store(now_ns());
    sh.consumer_cpu_ns.store(process_cpu_ns() - cpu0);
    sh.received.store(got);
    sh.lost.store(lost);
    return 0;
}

int producer_main(const NotifyRun& r, NotifyShared& sh) {
    auto pool = Pool::open(r.pool);
    if (!pool) return fail(sh, "producer: open pool", pool.error()), 1;
    auto p = Producer::open(*pool, r.topic);
    if (!p) return fail(sh, "producer: open", p.error()), 1;
    if (!wait_for([&] { return sh.ready.load(std::memory_order_acquire) != 0; }, r.spin, 10 * kNsPerSec))
        return std::fprintf(stderr, "notify: consumer not ready\n"), 1;
    uint8_t msg[kMsgBytes];
    std::memset(msg, 0x5a, sizeof msg);
    const uint64_t total = r.warmup + r.count;
    const double interval = r.rate > 0 ? 1e9 / r.rate : 0;
    const uint64_t base = now_ns() + kNsPerMs;
    uint64_t cpu0 = 0;
    if (r.batch > 1) {  // closed loop only: each burst stamped once, sent with one call
        std::vector<uint8_t> bytes(size_t(r.batch) * kMsgBytes, 0x5a);
        std::vector<OutgoingMessage> burst(r.batch);
        std::vector<BatchStatus> statuses(r.batch);
        for (uint64_t i = 0; i < total;) {
            if (i >= r.warmup && cpu0 == 0) cpu0 = process_cpu_ns();
            const uint64_t n = std::min<uint64_t>(r.batch, total - i), stamp = now_ns();
            for (uint64_t j = 0; j < n; ++j) {
                uint8_t* m = bytes.data() + j * kMsgBytes;
                const uint64_t index = i + j;
                std::memcpy(m, &stamp, 8);
                std::memcpy(m + 8, &index, 8);
                burst[j] = {std::span<const uint8_t>(m, kMsgBytes), {}, {}};
            }
            const auto sts = std::span(statuses).first(n);
            if (Status st = p->send_batch(std::span(burst).first(n), sts); !st)
                return fail(sh, "producer: send_batch", st.error()), 1;
            for (const BatchStatus& one : sts)
                if (!one.ok()) return fail(sh, "producer: send_batch", one.error()), 1;
            i += n;
        }
        sh.producer_cpu_ns.store(process_cpu_ns() - cpu0);
        return 0;
    }
    for (uint64_t i = 0; i < total; ++i) {
        if (i == r.warmup) cpu0 = process_cpu_ns();
        uint64_t stamp;
        if (interval > 0) {
            stamp = base + uint64_t(double(i) * interval);
            wait_until_ns(stamp, r.spin);
        } else {
            stamp = now_ns();
        }
        std::memcpy(msg, &stamp, 8);
        std::memcpy(msg + 8, &i, 8);
        auto s = p->send(std::span<const uint8_t>(msg, sizeof msg));
        if (!s) return fail(sh, "producer: send", s.error()), 1;
    }
    sh.producer_cpu_ns.store(process_cpu_ns() - cpu0);
    return 0;
}

/// One producer/consumer run on a fresh topic; nullopt-like empty name on failure.
bool notify_run(Pool& pool, const NotifyRun& r, Measurement& m) {
    TopicManager mgr(pool);
    TopicConfig cfg;
    cfg.num_partitions = 1;
    cfg.partition_capacity = 4096;
    cfg.partition_stride = 128;
    cfg.on_full = OnFull::block;
    if (Status st = mgr.create(r.topic, cfg); !st) {
        std::fprintf(stderr, "notify: create topic: %s\n", st.error().message.c_str());
        return false;
    }
    if (Status st = mgr.register_group(r.topic, "bench"); !st) {
        std::fprintf(stderr, "notify: register group: %s\n", st.error().message.c_str());
        return false;
    }
    SharedBlock<NotifyShared> sh;
    std::vector<pid_t> kids;
    kids.push_back(spawn_child([&] { return consumer_main(r, *sh); }));
    kids.push_back(spawn_child([&] { return producer_main(r, *sh); }));
    const bool ok = wait_children(kids, 120 * kNsPerSec) && sh->failures.load() == 0;
    (void)mgr.remove(r.topic);
    if (!ok) return false;
    m.ops = r.count;
    m.seconds = double(sh->t_end.load() - sh->t_start.load()) / 1e9;
    const uint64_t pc = sh->producer_cpu_ns.load(), cc = sh->consumer_cpu_ns.load();
    m.latency = sh->latency;
    m.extra["mode"] = r.spin ? "spin" : "parked";
    if (r.batch > 1) m.extra["config"] = std::string(r.spin ? "spin" : "parked") + ", send_batch of " + std::to_string(r.batch);
    m.extra["size"] = kMsgBytes;
    m.extra["lost"] = sh->lost.load();
    m.extra["consumer_cpu_ns_per_op"] = double(cc) / double(r.count);
    if (r.rate > 0) {
        // The producer busy-waits for each scheduled send time: its CPU time is the harness's.
        m.cpu_ns = cc;
        m.extra["kind"] = "open-loop";
        m.extra["offered_rate"] = r.rate;
        m.extra["cpu_counted"] = "consumer only (the producer busy-waits for its send schedule)";
        m.extra["latency"] = "one-way: consumer poll return - scheduled send time";
    } else {
        m.cpu_ns = pc + cc;
        m.extra["kind"] = "closed-loop";
        m.extra["producer_cpu_ns_per_op"] = double(pc) / double(r.count);
        m.extra["cpu_counted"] = "producer + consumer";
    }
    return true;
}

struct PingShared {
    std::atomic<uint32_t> ready{0};
    std::atomic<uint64_t> failures{0};
    std::atomic<uint64_t> seconds_ns{0}, cpu_ns{0};
    Histogram latency;  ///< RTT / 2 per round, written by the ping side
};

/// Parked ping-pong over two topics, both consumers with spin_ns = 0.
bool pingpong_run(Pool& pool, const std::string& pool_name, uint64_t warmup, uint64_t rounds, Measurement& m) {
    TopicManager mgr(pool);
    TopicConfig cfg;
    cfg.num_partitions = 1;
    cfg.partition_capacity = 64;
    cfg.partition_stride = 128;
    for (const char* t : {"ping", "pong"}) {
        if (Status s = mgr.create(t, cfg); !s) return std::fprintf(stderr, "notify: %s\n", s.error().message.c_str()), false;
        if (Status s = mgr.register_group(t, "bench"); !s)
            return std::fprintf(stderr, "notify: %s\n", s.error().message.c_str()), false;
    }
    SharedBlock<PingShared> sh;
    auto side = [&](bool ping) -> int {
        auto p = Pool::open(pool_name);
        if (!p) return 1;
        ConsumerOptions o;
        o.wait = WaitMode::park;
        o.spin = Duration::zero();
        auto c = Consumer::open(*p, ping ? "pong" : "ping", "bench", o);
        auto prod = Producer::open(*p, ping ? "ping" : "pong");
        if (!c || !prod || !c->assign_all()) return sh->failures.fetch_add(1), 1;
        MessageBatch b;
        uint8_t msg[kMsgBytes] = {};
        auto recv1 = [&]() -> bool {
            for (;;) {
                auto n = c->poll(b, 1, std::chrono::seconds(1));
                if (!n) return false;
                if (*n) return bool(c->commit());
            }
        };
        if (!ping) {
            sh->ready.store(1);
            for (uint64_t i = 0; i < warmup + rounds; ++i)
                if (!recv1() || !prod->send(std::span<const uint8_t>(msg, sizeof msg))) return sh->failures.fetch_add(1), 1;
            return 0;
        }
        if (!wait_for([&] { return sh->ready.load() != 0; }, false, 10 * kNsPerSec)) return 1;
        uint64_t t0 = 0, cpu0 = 0;
        for (uint64_t i = 0; i < warmup + rounds; ++i) {
            if (i == warmup) {
                t0 = now_ns();
                cpu0 = process_cpu_ns();
            }
            const uint64_t a = now_ns();
            if (!prod->send(std::span<const uint8_t>(msg, sizeof msg)) || !recv1()) return sh->failures.fetch_add(1), 1;
            if (i >= warmup) sh->latency.record((now_ns() - a) / 2);
        }
        sh->seconds_ns.store(now_ns() - t0);
        sh->cpu_ns.store(process_cpu_ns() - cpu0);
        return 0;
    };
    std::vector<pid_t> kids;
    kids.push_back(spawn_child([&] { return side(false); }));
    kids.push_back(spawn_child([&] { return side(true); }));
    const bool ok = wait_children(kids, 120 * kNsPerSec) && sh->failures.load() == 0;
    (void)mgr.remove("ping");
    (void)mgr.remove("pong");
    if (!ok) return false;
    m.ops = rounds;
    m.seconds = double(sh->seconds_ns.load()) / 1e9;
    m.cpu_ns = sh->cpu_ns.load();
    m.latency = sh->latency;
    m.extra["mode"] = "parked";
    m.extra["size"] = kMsgBytes;
    m.extra["kind"] = "ping-pong";
    m.extra["latency"] = "one-way = round trip / 2; both consumers parked with spin_ns 0";
    m.extra["cpu_counted"] = "ping side only";
    return true;
}

int run_notify(Context& ctx) {
    const auto& o = ctx.options;
    const uint64_t count = o.count("count") ? o["count"].as<uint64_t>() : (ctx.quick ? 20'000 : 500'000);
    const uint64_t warmup = std::max<uint64_t>(1000, count / 10);
    const double rate_fraction = o["rate-fraction"].as<double>();
    const double fixed_rate = o.count("rate") ? o["rate"].as<double>() : 0.0;
    const uint64_t park_spin_ns = o["park-spin-ns"].as<uint64_t>();
    const double low_rate = o["low-rate"].as<double>();
    const uint64_t rounds = ctx.quick ? 2'000 : 20'000;
    std::vector<std::string> modes;
    const std::string mode_opt = o["modes"].as<std::string>();
    for (const char* m : {"spin", "parked"})
        if (mode_opt.find(m) != std::string::npos) modes.push_back(m);
    if (modes.empty()) {
        std::fprintf(stderr, "notify: usage error: --modes '%s' names neither spin nor parked\n", mode_opt.c_str());
        return 2;
    }
    ctx.report.config() = {{"message_bytes", kMsgBytes},
                           {"count", count},
                           {"warmup", warmup},
                           {"rate_fraction", rate_fraction},
                           {"fixed_rate", fixed_rate},
                           {"park_spin_ns", park_spin_ns},
                           {"light_load_rate", low_rate},
                           {"pingpong_rounds", rounds},
                           {"topic", "1 partition x 4096 slots x 128 B, on_full=block, group commits every poll"},
                           {"processes", "producer and consumer are separate child processes"}};

    const std::string pool_name = "bench-notify-" + std::to_string(getpid());
    auto pool = Pool::create(PoolOptions{pool_name, 64ull << 20});
    if (!pool) {
        std::fprintf(stderr, "notify: %s\n", pool.error().message.c_str());
        return 1;
    }
    struct Remove {
        std::string n;
        ~Remove() { (void)Pool::remove(n, true); }
    } remove{pool_name};
    int run_id = 0;
    for (const std::string& mode : modes) {
        NotifyRun r;
        r.pool = pool_name;
        r.spin = mode == "spin";
        r.spin_yield = r.spin && o.count("spin-yield") > 0;
        r.park_spin_ns = park_spin_ns;
        r.warmup = warmup;
        r.count = count;
        r.topic = "n" + std::to_string(run_id++);
        std::string mode_label = mode;
        std::fprintf(stderr, "notify: %s closed-loop, %llu messages\n", mode.c_str(), (unsigned long long)count);
        Measurement closed;
        if (r.spin_yield) mode_label = "spin-yield";
        closed.name = "notify 64B " + mode_label + " closed-loop";
        if (!notify_run(*pool, r, closed)) return 1;
        const double max_rate = closed.seconds > 0 ? double(closed.ops) / closed.seconds : 0;
        ctx.report.add(closed);

        r.rate = fixed_rate > 0 ? fixed_rate : max_rate * rate_fraction;
        // Open loop: about as long as the closed loop took at twice the rate, at most 1 M messages.
        r.count = std::min<uint64_t>(count, 1'000'000);
        r.warmup = std::max<uint64_t>(1000, r.count / 10);
        r.topic = "n" + std::to_string(run_id++);
        std::fprintf(stderr, "notify: %s open-loop at %.0f msgs/s\n", mode.c_str(), r.rate);
        Measurement open;
        char rate_txt[32];
        std::snprintf(rate_txt, sizeof rate_txt, "%.3g", r.rate);
        open.name = "notify 64B " + mode_label + " open-loop @" + rate_txt + "/s";
        if (!notify_run(*pool, r, open)) return 1;
        ctx.report.add(open);

        if (low_rate > 0) {
            // Light load: the latency of a message that finds the consumer idle (compare with
            // the peers' window-1 rows), still open loop from the scheduled send time.
            r.rate = std::min(low_rate, max_rate * 0.5);
            r.count = std::max<uint64_t>(1000, uint64_t(r.rate * (ctx.quick ? 0.2 : 1.0)));
            r.warmup = 1000;
            r.topic = "n" + std::to_string(run_id++);
            std::fprintf(stderr, "notify: %s light load at %.0f msgs/s\n", mode.c_str(), r.rate);
            Measurement light;
            std::snprintf(rate_txt, sizeof rate_txt, "%.3g", r.rate);
            light.name = "notify 64B " + mode_label + " light-load @" + rate_txt + "/s";
            if (!notify_run(*pool, r, light)) return 1;
            light.extra["kind"] = "light-load";
            ctx.report.add(light);
        }
        if (r.spin && !r.spin_yield) {
            // The closed loop again with the producer's messages sent in bursts through
            // send_batch, which claims a run of slots with one atomic step (throughput only).
            NotifyRun burst = r;
            burst.rate = 0;
            burst.count = count;
            burst.warmup = warmup;
            burst.batch = kSendBurst;
            burst.topic = "n" + std::to_string(run_id++);
            std::fprintf(stderr, "notify: spin closed-loop, send_batch of %u\n", kSendBurst);
            Measurement batched;
            batched.name = "notify 64B spin send_batch closed-loop";
            if (!notify_run(*pool, burst, batched)) return 1;
            ctx.report.add(batched);
        }
        if (!r.spin) {
            Measurement pp;
            pp.name = "notify 64B parked ping-pong (one-way = RTT/2)";
            std::fprintf(stderr, "notify: parked ping-pong, %llu rounds\n", (unsigned long long)rounds);
            if (!pingpong_run(*pool, pool_name, rounds / 10, rounds, pp)) return 1;
            ctx.report.add(pp);
        }
    }
    ctx.report.note("throughput = consumer-side messages/s; open-loop latency from the scheduled send time "
                    "(coordinated omission corrected); CPU time = getrusage of the child processes over "
                    "their measured window");
    return 0;
}

const bool notify_scenario_registered = register_scenario(
    {"notify", "64-byte messages producer -> consumer across processes: throughput and one-way latency",
     [](cxxopts::Options& o) {
         o.add_options()("count", "messages per closed-loop run (default 500000; --quick 20000)",
                         cxxopts::value<uint64_t>())(
             "modes", "spin,parked (default both)", cxxopts::value<std::string>()->default_value("spin,parked"))(
             "rate", "open-loop offered rate, messages/s (default: --rate-fraction of the closed-loop max)",
             cxxopts::value<double>())("rate-fraction", "open-loop rate as a fraction of the closed-loop max",
                                       cxxopts::value<double>()->default_value("0.5"))(
             "park-spin-ns", "parked mode: the consumer's spin before it sleeps (library default 20000)",
             cxxopts::value<uint64_t>()->default_value("20000"))(
             "low-rate", "also an open-loop run at this light rate, messages/s (0: none)",
             cxxopts::value<double>()->default_value("10000"))(
             "spin-yield", "spin mode: the consumer polls without waiting and sched_yield()s after 256 empty "
                           "polls (an experiment: WaitMode::spin never yields)");
     },
     run_notify});

}  // namespace
}  // namespace fabric_shm::bench
