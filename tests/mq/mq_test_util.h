// SPDX-License-Identifier: MIT
// Helpers for the topic tests: a pool per test, forging partition positions, byte spans, an
// in-process pause gate, and "is that thread asleep in a futex call yet".
#pragma once

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <thread>

#include "../support/test_support.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "crash_point.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "mq/topic_layout.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449  // every architecture (asm-generic); older headers lack the name
#endif

namespace mqtest {

using namespace fabric_shm;

inline std::span<const uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

/// send_batch as a call that must succeed; how many of its messages were sent.
inline size_t send_batch_sent(Producer& producer, std::span<const OutgoingMessage> messages,
                              std::span<BatchStatus> statuses) {
    const Status call = producer.send_batch(messages, statuses);
    INFO("send_batch: " << (call ? std::string("ok") : call.error().message));
    REQUIRE(call.ok());
    size_t sent = 0;
    for (const BatchStatus& st : statuses) sent += st.ok() ? 1 : 0;
    return sent;
}

/// A pool removed at scope exit (test::TempPool).
using TestPool = test::TempPool;

/// Partition p's header (forging positions in tests).
inline mq::PartitionHeader* partition_header(const Pool& pool, std::string_view topic, uint32_t p) {
    auto r = pool.open_region(RegionKind::partition, std::string(topic) + "." + std::to_string(p));
    REQUIRE(r.ok());
    return reinterpret_cast<mq::PartitionHeader*>(r->data());
}

/// Starts every partition of a fresh (never written) topic at `offset`: base, tail and head.
inline void forge_start(const Pool& pool, std::string_view topic, uint32_t partitions, uint64_t offset) {
    for (uint32_t p = 0; p < partitions; ++p) {
        auto* h = partition_header(pool, topic, p);
        h->base_offset = offset;
        h->tail.store(offset, std::memory_order_relaxed);
        h->head.store(offset, std::memory_order_relaxed);
    }
}

inline TopicConfig config(uint32_t parts, uint32_t cap, OnFull on_full = OnFull::block, uint32_t stride = 256) {
    TopicConfig c;
    c.num_partitions = parts;
    c.partition_capacity = cap;
    c.partition_stride = stride;
    c.on_full = on_full;
    return c;
}

/// Waits (at most timeout_ms) until thread `tid` of process `pid` is inside one of these system
/// calls (/proc/<pid>/task/<tid>/syscall): a barrier for "the waiter sleeps now", not a sleep.
inline bool wait_in_syscall(pid_t pid, pid_t tid, std::initializer_list<long> calls, int timeout_ms = 10000) {
    const std::string path = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/syscall";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
        std::ifstream f(path);
        long nr = -1;
        if (f >> nr)
            for (long c : calls)
                if (nr == c) return true;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return false;
}
inline bool wait_in_futex(pid_t pid, pid_t tid, int timeout_ms = 10000) {
    return wait_in_syscall(pid, tid, {SYS_futex, SYS_futex_waitv}, timeout_ms);
}
inline pid_t this_tid() { return pid_t(syscall(SYS_gettid)); }

/// In a forked child: the pool opened again (a child must not use the parent's handle's
/// registration); exits 90 when it cannot be opened.
inline Pool open_child_pool(const std::string& name) {
    auto p = Pool::open(name);
    if (!p) _exit(90);
    return std::move(p.value());
}

/// `topic`'s next offset claimed by a producer (in a forked child) SIGKILLed before it
/// published: what a process killed mid-send leaves; readers step over it (a skip record) once
/// the dead claimer is judged.
inline void send_killed_after_claim(const std::string& pool_name, const std::string& topic) {
    const pid_t kid = test::fork_child([&]() -> int {
        Pool pool = open_child_pool(pool_name);
        auto prod = Producer::open(pool, topic);
        if (!prod) return 81;
        ::setenv("FABRIC_SHM_CRASH_POINT", "mq.send.after_claim", 1);
        detail::crash_point_rearm();
        (void)prod->send("never published");
        return 0;  // not reached
    });
    REQUIRE(test::wait_child(kid) == 128 + SIGKILL);
}

/// In-process pause points (detail::set_pause_hook): a thread that reaches an armed point
/// blocks there until the test releases it. One gate per point name, a few at a time; a gate
/// may be limited to one thread.
class PauseGate {
public:
    /// Arms `point` (for `only` when given); the next thread to reach it stops there.
    static void arm(const char* point, std::thread::id only = {}) {
        for (Slot& g : all())
            if (g.state.load() == kIdle) {
                std::strncpy(g.name, point, sizeof g.name - 1);
                g.only = only;
                g.state.store(kArmed);
                detail::set_pause_hook(&hook);
                return;
            }
        FAIL("PauseGate: no free gate");
    }
    /// Waits until a thread stopped at `point` (true), or timeout.
    static bool wait_arrived(const char* point, int timeout_ms = 10000) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        while (std::chrono::steady_clock::now() < deadline) {
            for (Slot& g : all())
                if (g.state.load() == kArrived && std::strcmp(g.name, point) == 0) return true;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        return false;
    }
    /// Lets the thread stopped at `point` go on (and disarms that gate).
    static void release(const char* point) {
        for (Slot& g : all())
            if (g.state.load() == kArrived && std::strcmp(g.name, point) == 0) g.state.store(kReleased);
    }
    /// Disarms every gate (threads still stopped are released) and removes the hook.
    static void reset() {
        for (Slot& g : all()) {
            int armed = kArmed;
            if (g.state.compare_exchange_strong(armed, kIdle)) continue;  // never reached
            int arrived = kArrived;
            g.state.compare_exchange_strong(arrived, kReleased);
            while (g.state.load() == kReleased) std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        detail::set_pause_hook(nullptr);
    }

private:
    enum : int { kIdle, kArmed, kArrived, kReleased };
    struct Slot {
        char name[96] = {};
        std::thread::id only;
        std::atomic<int> state{kIdle};
    };
    static Slot* slots() {
        static Slot s[4];
        return s;
    }
    struct SlotRange {
        Slot* b;
        Slot* begin() const { return b; }
        Slot* end() const { return b + 4; }
    };
    static SlotRange all() { return {slots()}; }
    static void hook(const char* name) {
        for (Slot& g : all()) {
            int armed = kArmed;
            if (g.state.load() != kArmed) continue;  // name and thread are written before kArmed
            if (std::strcmp(g.name, name) != 0 || (g.only != std::thread::id() && g.only != std::this_thread::get_id()))
                continue;
            if (!g.state.compare_exchange_strong(armed, kArrived)) continue;
            while (g.state.load() == kArrived) std::this_thread::sleep_for(std::chrono::microseconds(100));
            g.state.store(kIdle);
            return;
        }
    }
};

/// A live process registered in the pool and paused as far as anyone can tell (it waits in
/// pause() until SIGKILL): what a stopped holder of a lock looks like to the others. Killed
/// and waited for by the destructor.
struct PausedProcess {
    pid_t pid = -1;
    uint32_t token = 0;
    explicit PausedProcess(const std::string& pool_name) {
        void* mem = ::mmap(nullptr, sizeof(std::atomic<uint32_t>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                           -1, 0);
        REQUIRE(mem != MAP_FAILED);
        auto* shared = new (mem) std::atomic<uint32_t>{0};
        pid = test::fork_child([&] {
            auto p = Pool::open(pool_name);
            if (!p) return 10;
            shared->store(p->self());
            ::pause();  // until SIGKILL
            return 0;
        });
        while (shared->load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        token = shared->load();
        ::munmap(mem, sizeof(std::atomic<uint32_t>));
    }
    ~PausedProcess() {
        ::kill(pid, SIGKILL);
        test::wait_child(pid);
    }
    PausedProcess(const PausedProcess&) = delete;
    PausedProcess& operator=(const PausedProcess&) = delete;
};

/// The slot of `topic`'s one live group, in the topic's root region (mapped while `pool` is).
inline mq::GroupSlot* live_group_slot(const Pool& pool, const std::string& topic) {
    auto root = pool.open_region(RegionKind::topic, topic);
    REQUIRE(root.ok());
    auto* groups = reinterpret_cast<mq::GroupSlot*>(reinterpret_cast<char*>(root->data()) + mq::kGroupsOffset);
    for (int i = 0; i < int(mq::kMaxGroups); ++i)
        if (mq::group_state(groups[i].word.load()) == mq::kGroupLive) return &groups[i];
    return nullptr;
}

/// A producer child that sends `value` to topic "t" and stops itself (SIGSTOP) right after its
/// claim of the next offset (pause point mq.send.after_claim): readers stand before that claim
/// until its timeout. After SIGCONT it exits with judge(the send's result).
inline pid_t producer_stopped_after_claim(const std::string& pool_name, std::string value,
                                          std::function<int(const Result<SendResult>&)> judge) {
    return test::fork_child([pool_name, value, judge]() -> int {
        auto pool = Pool::open(pool_name);
        if (!pool) return 80;
        auto prod = Producer::open(*pool, "t");
        if (!prod) return 81;
        ::setenv("FABRIC_SHM_PAUSE_POINT", "mq.send.after_claim", 1);
        detail::crash_point_rearm();
        return judge(prod->send(value));
    });
}

/// Samples, from a thread of its own, the heartbeat age of `member` in `group` on `topic`
/// every 2 ms until stop() (or its destructor): the largest age seen says whether the member
/// stayed silent past its session timeout (another member's claim would evict it).
class HeartbeatWatch {
public:
    HeartbeatWatch(const Pool& pool, std::string topic, std::string group, std::string member)
        : thread_([this, &pool, topic = std::move(topic), group = std::move(group), member = std::move(member)] {
              while (!stop_.load()) {
                  if (auto d = describe_consumer_group(pool, topic, group); d.ok())
                      for (const auto& m : d->members)
                          if (m.id == member && m.heartbeat_age_ns > max_age_ns_.load())
                              max_age_ns_.store(m.heartbeat_age_ns);
                  std::this_thread::sleep_for(std::chrono::milliseconds(2));
              }
          }) {}
    ~HeartbeatWatch() { stop(); }
    void stop() {
        stop_.store(true);
        if (thread_.joinable()) thread_.join();
    }
    uint64_t max_age_ns() const { return max_age_ns_.load(); }

private:
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> max_age_ns_{0};
    std::thread thread_;
};

}  // namespace mqtest
