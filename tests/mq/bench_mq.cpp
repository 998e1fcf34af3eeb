// SPDX-License-Identifier: MIT
// Topic throughput and latency between two processes (not a test; numbers go in docs/topics.md).
//   bench_mq [messages]   (default 2,000,000)
// 1. Throughput: one producer process, one consumer process (spin mode), 64-byte messages,
//    lossless (on_full=block, the consumer's group commits every poll) and lossy (overwrite).
// 2. One-way latency at an offered rate of 50 % of the measured maximum, corrected for
//    coordinated omission: each message carries its *scheduled* send time, so a stall delays
//    the samples behind it too.
// 3. Parked mode (consumers sleep on the shared futex) ping-pong vs a raw shared-futex
//    ping-pong in the same run.
//   bench_mq wake [sends]   (default 100,000) only the wake-isolation experiment: the time of
//    `sends` sends to partition 0 with nobody parked, then with one consumer process parked on
//    partition 1. Run it under `strace -f -c -e trace=futex,futex_waitv` to count wake-ups.
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"

using namespace fabric_shm;

namespace {

struct Shared {
    std::atomic<uint64_t> ready;
    std::atomic<uint64_t> done_ns;
    std::atomic<uint64_t> received;
    std::atomic<uint64_t> lost;
    std::atomic<uint32_t> ping, pong;  ///< raw futex ping-pong words
    uint64_t lat[1 << 20];             ///< latency samples (ns), consumer-written
};

Shared* shared_map() {
    void* p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    return new (p) Shared{};
}

[[noreturn]] void die(const std::string& what, const Error& e) {
    std::fprintf(stderr, "bench_mq: %s: %s\n", what.c_str(), e.message.c_str());
    _exit(2);
}

Pool open_pool(const std::string& name) {
    auto p = Pool::open(name);
    if (!p) die("open pool", p.error());
    return std::move(p.value());
}

uint64_t pct(std::vector<uint64_t>& v, double q) {
    if (v.empty()) return 0;
    const size_t i = std::min(v.size() - 1, size_t(q * double(v.size())));
    std::nth_element(v.begin(), v.begin() + long(i), v.end());
    return v[i];
}

/// Consumer child: spin-polls `topic` until `expect` messages; records latency when asked.
int consumer_child(const std::string& pool_name, const char* topic, uint64_t expect, Shared* sh, bool latency,
                   WaitMode mode) {
    Pool pool = open_pool(pool_name);
    ConsumerOptions o;
    o.wait = mode;
    auto c = Consumer::open(pool, topic, "bench", o);
    if (!c) die("consumer", c.error());
    if (!c->assign_all().ok()) _exit(3);
    MessageBatch b;
    sh->ready.store(1);
    uint64_t got = 0, lost = 0, n_lat = 0;
    while (got + lost < expect) {
        auto n = c->poll(b, 256, std::chrono::seconds(1));
        if (!n) die("poll", n.error());
        if (latency && *n) {
            const uint64_t now = mono_now_ns();
            for (const Message& m : b) {
                uint64_t sched;
                std::memcpy(&sched, m.value.data(), 8);
                if (n_lat < (1u << 20)) sh->lat[n_lat++] = now - sched;
            }
        }
        got += *n;
        lost += b.lost();
        if (*n && !c->commit().ok()) _exit(4);
    }
    sh->done_ns.store(mono_now_ns());
    sh->received.store(got);
    sh->lost.store(lost);
    return 0;
}

double throughput(const std::string& pool_name, Pool& pool, const char* topic, OnFull mode, uint64_t n, Shared* sh) {
    TopicManager mgr(pool);
    TopicConfig cfg;
    cfg.num_partitions = 1;
    cfg.partition_capacity = 4096;
    cfg.partition_stride = 128;
    cfg.on_full = mode;
    if (auto st = mgr.create(topic, cfg); !st) die("create", st.error());
    if (auto st = mgr.register_group(topic, "bench"); !st) die("group", st.error());
    sh->ready.store(0);
    pid_t kid = fork();
    if (kid == 0) _exit(consumer_child(pool_name, topic, n, sh, false, WaitMode::spin));
    while (!sh->ready.load()) {
    }
    auto prod = Producer::open(pool, topic);
    if (!prod) die("producer", prod.error());
    uint8_t msg[64] = {};
    const uint64_t t0 = mono_now_ns();
    for (uint64_t i = 0; i < n; ++i) {
        std::memcpy(msg, &i, 8);
        auto r = prod->send(std::span<const uint8_t>(msg, sizeof msg));
        if (!r) die("send", r.error());
    }
    int st = 0;
    waitpid(kid, &st, 0);
    const double secs = double(sh->done_ns.load() - t0) / 1e9;
    std::printf("  %-9s %llu msgs in %.3f s = %.2f M msgs/s (received %llu, lost %llu)\n",
                std::string(on_full_name(mode)).c_str(), (unsigned long long)n, secs, double(n) / secs / 1e6,
                (unsigned long long)sh->received.load(), (unsigned long long)sh->lost.load());
    (void)mgr.remove(topic);
    return double(n) / secs;
}

void latency(const std::string& pool_name, Pool& pool, double rate, uint64_t n, Shared* sh) {
    TopicManager mgr(pool);
    TopicConfig cfg;
    cfg.num_partitions = 1;
    cfg.partition_capacity = 4096;
    cfg.partition_stride = 128;
    if (auto st = mgr.create("lat", cfg); !st) die("create", st.error());
    if (auto st = mgr.register_group("lat", "bench"); !st) die("group", st.error());
    sh->ready.store(0);
    pid_t kid = fork();
    if (kid == 0) _exit(consumer_child(pool_name, "lat", n, sh, true, WaitMode::spin));
    while (!sh->ready.load()) {
    }
    auto prod = Producer::open(pool, "lat");
    uint8_t msg[64] = {};
    const double interval = 1e9 / rate;
    const uint64_t t0 = mono_now_ns() + kNsPerMs;
    for (uint64_t i = 0; i < n; ++i) {
        const uint64_t sched = t0 + uint64_t(double(i) * interval);
        while (mono_now_ns() < sched) {
        }
        std::memcpy(msg, &sched, 8);  // the scheduled time: coordinated-omission corrected
        if (auto r = prod->send(std::span<const uint8_t>(msg, sizeof msg)); !r) die("send", r.error());
    }
    int st = 0;
    waitpid(kid, &st, 0);
    std::vector<uint64_t> v(sh->lat, sh->lat + std::min<uint64_t>(n, 1u << 20));
    std::printf("  offered %.2f M msgs/s, %llu msgs: one-way p50 %llu ns, p99 %llu ns, p99.9 %llu ns, max %llu ns\n",
                rate / 1e6, (unsigned long long)n, (unsigned long long)pct(v, 0.50),
                (unsigned long long)pct(v, 0.99), (unsigned long long)pct(v, 0.999),
                (unsigned long long)*std::max_element(v.begin(), v.end()));
    (void)mgr.remove("lat");
}

void futex_wait_raw(std::atomic<uint32_t>& w, uint32_t v) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&w), FUTEX_WAIT, v, nullptr, nullptr, 0);
}
void futex_wake_raw(std::atomic<uint32_t>& w) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&w), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

void parked(const std::string& pool_name, Pool& pool, uint64_t rounds, Shared* sh) {
    // Raw shared futex ping-pong: the floor for any cross-process blocking hand-off.
    sh->ping.store(0);
    sh->pong.store(0);
    pid_t kid = fork();
    if (kid == 0) {
        for (uint32_t i = 1; i <= rounds; ++i) {
            while (sh->ping.load() != i) futex_wait_raw(sh->ping, i - 1);
            sh->pong.store(i);
            futex_wake_raw(sh->pong);
        }
        _exit(0);
    }
    uint64_t t0 = mono_now_ns();
    for (uint32_t i = 1; i <= rounds; ++i) {
        sh->ping.store(i);
        futex_wake_raw(sh->ping);
        while (sh->pong.load() != i) futex_wait_raw(sh->pong, i - 1);
    }
    const double raw_rtt = double(mono_now_ns() - t0) / double(rounds);
    int st = 0;
    waitpid(kid, &st, 0);

    // The same hand-off through two topics with parked consumers (spin_ns = 0).
    TopicManager mgr(pool);
    TopicConfig cfg;
    cfg.num_partitions = 1;
    cfg.partition_capacity = 64;
    cfg.partition_stride = 128;
    for (const char* t : {"ping", "pong"}) {
        if (auto s = mgr.create(t, cfg); !s) die("create", s.error());
        if (auto s = mgr.register_group(t, "bench"); !s) die("group", s.error());
    }
    sh->ready.store(0);
    kid = fork();
    if (kid == 0) {
        Pool p2 = open_pool(pool_name);
        ConsumerOptions o;
        o.spin = Duration::zero();
        auto c = Consumer::open(p2, "ping", "bench", o);
        auto prod = Producer::open(p2, "pong");
        if (!c || !prod || !c->assign_all().ok()) _exit(5);
        MessageBatch b;
        sh->ready.store(1);
        for (uint64_t i = 0; i < rounds;) {
            auto n = c->poll(b, 1, std::chrono::seconds(1));
            if (!n) _exit(6);
            if (*n == 0) continue;
            ++i;
            (void)c->commit();
            if (!prod->send("p")) _exit(7);
        }
        _exit(0);
    }
    while (!sh->ready.load()) {
    }
    ConsumerOptions o;
    o.spin = Duration::zero();
    auto c = Consumer::open(pool, "pong", "bench", o);
    auto prod = Producer::open(pool, "ping");
    if (!c || !prod || !c->assign_all().ok()) std::abort();
    MessageBatch b;
    t0 = mono_now_ns();
    for (uint64_t i = 0; i < rounds; ++i) {
        if (!prod->send("p")) std::abort();
        for (;;) {
            auto n = c->poll(b, 1, std::chrono::seconds(1));
            if (!n) std::abort();
            if (*n) break;
        }
        (void)c->commit();
    }
    const double topic_rtt = double(mono_now_ns() - t0) / double(rounds);
    waitpid(kid, &st, 0);
    std::printf("  raw shared futex ping-pong: RTT %.1f us (one-way %.1f us)\n", raw_rtt / 1e3, raw_rtt / 2e3);
    std::printf("  topic parked ping-pong:     RTT %.1f us (one-way %.1f us) = %.2fx raw\n", topic_rtt / 1e3,
                topic_rtt / 2e3, topic_rtt / raw_rtt);
}

/// Per-side cost in one process (best of 30 rounds of 4096): what each side of the pipeline
/// needs per message, independent of how the scheduler places two processes.
void per_side_cost(Pool& pool, bool coarse) {
    TopicManager mgr(pool);
    TopicConfig cfg;
    cfg.num_partitions = 1;
    cfg.partition_capacity = 4096;
    cfg.partition_stride = 128;
    cfg.on_full = OnFull::overwrite;
    const char* topic = coarse ? "costc" : "cost";
    if (auto st = mgr.create(topic, cfg); !st) die("create", st.error());
    ProducerOptions po;
    po.coarse_timestamps = coarse;
    auto prod = Producer::open(pool, topic, po);
    ConsumerOptions co;
    co.wait = WaitMode::spin;
    auto cons = Consumer::open(pool, topic, "cost", co);
    if (!prod || !cons || !cons->assign_all().ok()) std::abort();
    MessageBatch b;
    uint8_t msg[64] = {};
    double best_send = 1e9, best_recv = 1e9;
    for (int round = 0; round < 30; ++round) {
        uint64_t t0 = mono_now_ns();
        for (int i = 0; i < 4096; ++i)
            if (!prod->send(std::span<const uint8_t>(msg, sizeof msg))) std::abort();
        uint64_t t1 = mono_now_ns();
        size_t got = 0;
        while (got < 4096) {
            auto n = cons->poll(b, 4096, Duration::zero());
            if (!n) std::abort();
            got += *n;
        }
        if (!cons->commit().ok()) std::abort();
        uint64_t t2 = mono_now_ns();
        best_send = std::min(best_send, double(t1 - t0) / 4096);
        best_recv = std::min(best_recv, double(t2 - t1) / 4096);
    }
    std::printf("  %s timestamps: send %.0f ns/msg, poll %.0f ns/msg (best of 30 x 4096; one side each: "
                "%.1f M msgs/s per core)\n",
                coarse ? "coarse " : "precise", best_send, best_recv, 1e3 / std::max(best_send, best_recv));
    (void)mgr.remove(topic);
}

/// Sends `sends` 64-byte messages to partition 0 and returns the seconds they took.
double timed_sends(Producer& prod, uint64_t sends) {
    uint8_t msg[64] = {};
    const uint64_t t0 = mono_now_ns();
    for (uint64_t i = 0; i < sends; ++i) {
        std::memcpy(msg, &i, 8);
        if (auto r = prod.send_to(0, {std::span<const uint8_t>(msg, sizeof msg), {}, {}}); !r) die("send", r.error());
    }
    return double(mono_now_ns() - t0) / 1e9;
}

/// Wake isolation: a consumer parked on partition 1 must cost nothing to sends to partition 0.
void wake_isolation(const std::string& pool_name, Pool& pool, uint64_t sends, Shared* sh) {
    TopicManager mgr(pool);
    TopicConfig cfg;
    cfg.num_partitions = 2;
    cfg.partition_capacity = 1024;
    cfg.partition_stride = 128;
    cfg.on_full = OnFull::overwrite;
    if (auto st = mgr.create("wake", cfg); !st) die("create", st.error());
    auto prod = Producer::open(pool, "wake");
    if (!prod) die("producer", prod.error());
    (void)timed_sends(*prod, 10'000);  // warm-up: page faults, caches
    double idle = 1e9, parked = 1e9;
    for (int rep = 0; rep < 3; ++rep) idle = std::min(idle, timed_sends(*prod, sends));
    sh->ready.store(0);
    sh->received.store(0);
    const pid_t kid = fork();
    if (kid == 0) {
        Pool p2 = open_pool(pool_name);
        ConsumerOptions o;
        o.spin = Duration::zero();  // park at once
        auto c = Consumer::open(p2, "wake", "", o);
        const uint32_t one[] = {1};
        if (!c || !c->assign(one).ok() || !c->seek(SeekPolicy::Latest()).ok()) _exit(5);
        MessageBatch b;
        sh->ready.store(1);
        uint64_t polls = 0;
        while (sh->ready.load() == 1) {  // parked on partition 1, which never gets a message
            auto n = c->poll(b, 16, std::chrono::milliseconds(200));
            if (!n) _exit(6);
            ++polls;
        }
        sh->received.store(polls);
        _exit(0);
    }
    while (sh->ready.load() == 0) {
    }
    usleep(20'000);  // let it reach the futex
    for (int rep = 0; rep < 3; ++rep) parked = std::min(parked, timed_sends(*prod, sends));
    sh->ready.store(2);
    int st = 0;
    waitpid(kid, &st, 0);
    std::printf("  %llu sends to partition 0: nobody parked %.1f ms; one consumer parked on partition 1 %.1f ms "
                "(best of 3; the parked consumer returned from poll %llu times in all)\n",
                (unsigned long long)sends, idle * 1e3, parked * 1e3, (unsigned long long)sh->received.load());
    (void)mgr.remove("wake");
}

}  // namespace

int main(int argc, char** argv) {
    const bool wake_only = argc > 1 && std::strcmp(argv[1], "wake") == 0;
    const int count_arg = wake_only ? 2 : 1;
    const uint64_t n = argc > count_arg ? std::strtoull(argv[count_arg], nullptr, 10) : wake_only ? 100'000 : 2'000'000;
    const std::string name = "bench-mq-" + std::to_string(getpid());
    auto pool = Pool::create(PoolOptions{name, 64ull << 20});
    if (!pool) die("create pool", pool.error());
    Shared* sh = shared_map();
    if (wake_only) {
        std::printf("wake isolation (2 partitions, 64-byte messages, overwrite):\n");
        wake_isolation(name, *pool, n, sh);
        (void)Pool::remove(name, true);
        return 0;
    }
    std::printf("per-side cost (1 process, 64-byte messages):\n");
    per_side_cost(*pool, false);
    per_side_cost(*pool, true);
    std::printf("throughput (2 processes, 64-byte messages, spin mode, 1 partition x 4096 slots):\n");
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) best = std::max(best, throughput(name, *pool, "tput", OnFull::block, n, sh));
    throughput(name, *pool, "tputo", OnFull::overwrite, n, sh);
    std::printf("latency (spin mode, coordinated-omission corrected):\n");
    latency(name, *pool, best * 0.5, std::min<uint64_t>(n / 2, 1u << 20), sh);
    latency(name, *pool, 100'000, 200'000, sh);
    std::printf("parked mode (consumers sleep on the shared futex):\n");
    parked(name, *pool, 20'000, sh);
    std::printf("wake isolation (2 partitions, 64-byte messages, overwrite):\n");
    wake_isolation(name, *pool, 100'000, sh);
    (void)Pool::remove(name, true);
    return 0;
}
