// SPDX-License-Identifier: MIT
// The product's worker loop (WorkerLoop: fabric-shm-worker, the Python Worker) in its steady
// state makes no heap allocation per message, like the hand-written loop of hot_path_test.cpp:
// notification -> URI -> result-URI -> head -> pin -> result put (metadata: input URI and
// version) -> forward (headers) -> ack -> commit, and with --delete-input the input's removal.
// Counted with the counting operator new of this test program (alloc_counter.cpp), over 4096
// messages after a warm-up, in one process: the test's producer puts and notifies one 1 KiB
// object per message handled (256 keys overwritten in a ring, the headers fabric-shm-producer
// writes), so the loop always has a backlog and never waits.
//
// What the handler itself allocates (run()'s Processor returns a std::vector) is counted apart
// and not charged to the loop. The loop's periodic upkeep (heartbeat and lease renewal every
// 20 ms, rebalance check every 50 ms, the group check of --delete-input every second) runs by the
// clock, not per message (a rebalance check makes ~15 allocations, a heartbeat a few); the test
// allows kUpkeepAllocations per 20 ms elapsed, far below one per message (4096 messages take
// 40-100 ms on the 2-vCPU machine: an allowance of 100-200). Before the loop was made
// allocation-free it counted 18 allocations per message. Under valgrind the library's calls to
// operator new go to valgrind's replacement and are not counted.
//
// System calls, counted in a forked child with syscall_counter.h: the form driven by an event
// loop (acquire/complete with wait_fd, as fabric-shm-worker --handler and the Python Worker's
// asyncio driver use it) makes none per message under a backlog either: its eventfd, Waiter and
// timer change only when the loop's state does (idle, out of capacity, a new instant).
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "../support/test_support.h"
#include "alloc_counter.h"
#include "syscall_counter.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/uri.h"
#include "fabric_shm/worker_loop.h"

namespace {

using namespace fabric_shm;

constexpr uint64_t kLoopKeys = 256;     ///< input keys, overwritten in a ring
constexpr uint64_t kBacklog = 16;   ///< notifications sent ahead of the worker
constexpr uint64_t kLoopWarmup = 1024;  ///< every key and result key exists, buffers have their size
constexpr uint64_t kLoopMeasured = 4096;
/// Allocations the periodic upkeep may make per 20 ms of the measured window (see the top).
constexpr uint64_t kUpkeepAllocations = 32;
constexpr uint64_t kUpkeepPeriodNs = 20 * kNsPerMs;

std::span<const uint8_t> bytes_of(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

std::string_view decimal(char (&buf)[24], uint64_t v) {
    const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
    return {buf, size_t(end - buf)};
}

/// A pool with the default store, the input topic (2 partitions) and a next topic (overwrite:
/// nobody reads it), and the producer side of the recipe.
struct LoopBench {
    test::TempPool tp;
    std::unique_ptr<MemObjectStore> store;
    std::optional<Producer> producer;
    std::vector<FabricUri> uris;
    std::vector<std::string> texts;
    std::vector<uint8_t> object = std::vector<uint8_t>(1024);
    uint64_t sent = 0;

    explicit LoopBench(const std::string& tag) : tp(tag, 64ull << 20) {
        auto s = MemObjectStore::open(tp.pool);
        REQUIRE_MESSAGE(s, s.error().message);
        store = std::move(*s);
        TopicManager mgr(tp.pool);
        TopicConfig tc;
        tc.num_partitions = 2;
        tc.partition_capacity = 64;
        REQUIRE(mgr.create("in", tc));
        TopicConfig next = tc;
        next.num_partitions = 1;
        next.on_full = OnFull::overwrite;
        REQUIRE(mgr.create("out", next));
        auto p = Producer::open(tp.pool, "in");
        REQUIRE_MESSAGE(p, p.error().message);
        producer.emplace(std::move(*p));
        for (uint64_t k = 0; k < kLoopKeys; ++k) {
            auto u = FabricUri::make(tp.name(), "in", "obj-" + std::to_string(k));
            REQUIRE(u);
            uris.push_back(*u);
            texts.push_back(u->to_string());
        }
        for (size_t i = 0; i < object.size(); ++i) object[i] = uint8_t(i * 131 + 7);
    }

    WorkerConfig config() const {
        WorkerConfig cfg;
        cfg.topic = "in";
        cfg.group = "workers";
        cfg.next_topic = "out";
        return cfg;
    }

    /// Puts the next object and notifies it as fabric-shm-producer does (version, put time,
    /// placement hint).
    Status feed() {
        const uint64_t k = sent % kLoopKeys;
        ++sent;
        std::memcpy(object.data(), &sent, sizeof sent);
        PlacementHint placed;
        auto v = store->put(uris[k].view(), object, {}, placed);
        if (!v) return std::move(v).error();
        char version[24], put_ts[24];
        const PlacementHint::Text placed_text = placed.text();
        const MessageHeader headers[] = {{kHeaderVersion, decimal(version, *v)},
                                         {kHeaderPutTime, decimal(put_ts, wall_now_ns())},
                                         {kHeaderPlacement, std::string_view(placed_text.data(), placed_text.size())}};
        auto s = producer->send(bytes_of(texts[k]), headers);
        if (!s) return std::move(s).error();
        return {};
    }
};

/// The measured window: messages kLoopWarmup .. kLoopWarmup + kLoopMeasured - 1, from the handler's entry
/// for the first to its entry for the one after the last (every step of the loop in between).
struct AllocWindow {
    uint64_t start = 0, end = 0, handler_own = 0, t0 = 0, t1 = 0;
    std::string failure;

    /// At the handler's entry for message number i (0-based), with the count read then.
    void enter(uint64_t i, uint64_t allocations) {
        if (i == kLoopWarmup) {
            start = allocations;
            t0 = mono_now_ns();
        } else if (i == kLoopWarmup + kLoopMeasured) {
            end = allocations;
            t1 = mono_now_ns();
        }
    }
    /// What the handler allocated itself for message i (its result, the producer's feed).
    void own(uint64_t i, uint64_t allocations_at_entry) {
        if (i >= kLoopWarmup && i < kLoopWarmup + kLoopMeasured) handler_own += test::heap_allocations() - allocations_at_entry;
    }
    void check(const std::string& form) const {
        REQUIRE_MESSAGE(failure.empty(), failure);
        REQUIRE(end >= start);
        const uint64_t loop = end - start - handler_own;
        const uint64_t elapsed_ns = t1 - t0;
        const uint64_t upkeep = kUpkeepAllocations * (elapsed_ns / kUpkeepPeriodNs + 1);
        MESSAGE(form << ": " << loop << " heap allocations by the loop over " << kLoopMeasured << " messages in "
                     << elapsed_ns / 1000 << " us (the handler's own: " << handler_own << "; upkeep allowance "
                     << upkeep << ")");
        CHECK_MESSAGE(loop <= upkeep, form << ": " << loop << " heap allocations over " << kLoopMeasured
                                           << " messages (" << double(loop) / kLoopMeasured << " per message)");
    }
};

uint32_t crc_of(const WorkItem& item) { return crc32(item.data.data(), item.data.size()); }

}  // namespace

TEST_CASE("WorkerLoop::run makes no heap allocation per message in its steady state; with a ProcessorInto, its results included") {
    for (const bool into : {false, true}) {
        CAPTURE(into);
        LoopBench b(into ? "loop-hot-run-into" : "loop-hot-run");
        for (uint64_t i = 0; i < kBacklog; ++i) REQUIRE(b.feed());
        AllocWindow w;
        uint64_t i = 0;
        WorkerConfig cfg = b.config();
        cfg.count = kLoopWarmup + kLoopMeasured + 1;
        // The handler's own allocations: the producer's feed, and with a Processor its result
        // vector. A ProcessorInto's result goes into run()'s buffer: whatever writing it
        // allocates is charged to the loop.
        auto handle = [&](const WorkItem& item, std::vector<uint8_t>& out) {
            const uint64_t at_entry = test::heap_allocations();
            w.enter(i, at_entry);
            if (!out.empty() && w.failure.empty()) w.failure = "the result buffer was not emptied at message " + std::to_string(i);
            const uint32_t crc = crc_of(item);
            if (crc != item.info->crc32 && w.failure.empty()) w.failure = "CRC mismatch at message " + std::to_string(i);
            const uint64_t before_feed = test::heap_allocations();
            if (Status st = b.feed(); !st && w.failure.empty()) w.failure = "feed: " + st.error().message;
            if (into) w.own(i, before_feed);  // before the result is written: that is the loop's
            out.resize(sizeof crc);
            std::memcpy(out.data(), &crc, sizeof crc);
            if (!into) w.own(i, at_entry);    // the result's new vector included
            ++i;
        };
        auto stop = [] { return false; };  // as fabric-shm-worker: a stop flag, stopped by count here
        Result<WorkerExit> why = WorkerExit::stopped;
        std::optional<WorkerLoop> loop;
        if (into) {
            auto l = WorkerLoop::open(b.tp.pool, cfg);
            REQUIRE_MESSAGE(l, l.error().message);
            loop.emplace(std::move(*l));
            why = loop->run(ProcessorInto([&](const WorkItem& item, std::vector<uint8_t>& out) -> Status {
                                handle(item, out);
                                return {};
                            }),
                            stop);
        } else {
            auto l = WorkerLoop::open(b.tp.pool, cfg, [&](const WorkItem& item) -> Result<std::vector<uint8_t>> {
                std::vector<uint8_t> out;
                handle(item, out);
                return out;
            });
            REQUIRE_MESSAGE(l, l.error().message);
            loop.emplace(std::move(*l));
            why = loop->run(stop);
        }
        REQUIRE_MESSAGE(why, why.error().message);
        CHECK(*why == WorkerExit::count_reached);
        CHECK(loop->stats().processed == cfg.count);
        CHECK(loop->stats().forwarded == cfg.count);
        CHECK(loop->stats().dead_lettered == 0);
        CHECK(loop->stats().bytes_out == sizeof(uint32_t) * cfg.count);
        w.check(into ? "WorkerLoop::run(ProcessorInto)" : "WorkerLoop::run(Processor)");
        // A key last put well before the count ran out: its result is the CRC of that version.
        auto input = b.store->get(b.uris[100]);
        auto result = b.store->get(FabricUri::make(b.tp.name(), "results", "in/obj-100").value());
        REQUIRE((input && input->has_value() && result && result->has_value()));
        const uint32_t crc = crc32((*input)->data.data(), (*input)->data.size());
        REQUIRE((*result)->data.size() == sizeof crc);
        CHECK(std::memcmp((*result)->data.data(), &crc, sizeof crc) == 0);
    }
}

TEST_CASE("WorkerLoop's acquire/complete makes no heap allocation per message in its steady state") {
    LoopBench b("loop-hot-async");
    for (uint64_t i = 0; i < kBacklog; ++i) REQUIRE(b.feed());
    WorkerConfig cfg = b.config();
    cfg.concurrency = 4;
    cfg.delete_input = true;  // each input removed after its commit: the queue of deletions too
    auto loop = WorkerLoop::open(b.tp.pool, cfg);
    REQUIRE_MESSAGE(loop, loop.error().message);
    REQUIRE(loop->wait_fd());  // as the Python Worker and fabric-shm-worker --handler drive it
    AllocWindow w;
    std::array<WorkTicket, 4> tickets;
    uint64_t i = 0;
    for (int rounds = 0; i <= kLoopWarmup + kLoopMeasured; ++rounds) {
        REQUIRE(rounds < 1'000'000);
        auto n = loop->acquire(tickets, std::chrono::milliseconds(10));
        REQUIRE_MESSAGE(n, n.error().message);
        for (size_t t = 0; t < *n; ++t, ++i) {
            const uint64_t at_entry = test::heap_allocations();
            w.enter(i, at_entry);
            const uint32_t crc = crc_of(tickets[t].item());
            if (crc != tickets[t].item().info->crc32 && w.failure.empty())
                w.failure = "CRC mismatch at message " + std::to_string(i);
            if (Status st = b.feed(); !st && w.failure.empty()) w.failure = "feed: " + st.error().message;
            w.own(i, at_entry);
            const Status done = loop->complete(std::move(tickets[t]), bytes_of({reinterpret_cast<const char*>(&crc), sizeof crc}));
            REQUIRE_MESSAGE(done, done.error().message);
        }
        const Status st = loop->service();
        REQUIRE_MESSAGE(st, st.error().message);
    }
    REQUIRE(loop->close());
    CHECK(loop->stats().processed >= kLoopWarmup + kLoopMeasured);
    CHECK(loop->stats().dead_lettered == 0);
    CHECK(loop->stats().inputs_deleted >= kLoopWarmup);
    w.check("WorkerLoop acquire/complete");
}

namespace {

/// What the forked child of the system-call test reports (in a MAP_SHARED page).
struct LoopSyscallReport {
    std::atomic<uint64_t> messages{0}, elapsed_ns{0}, counted{0}, rounds{0};
    char error[512] = {};
    test::SyscallCounts syscalls;
};

/// The loop's shape: 2 partitions with a window of 8 each, so at most 16 messages are buffered
/// or in flight. The driver below takes and completes kAsyncTake per round.
constexpr size_t kAsyncTake = 4;
/// System calls the periodic upkeep may make per 20 ms (the timer set to the next keep-alive,
/// a contended group lock's futex): a handful, against one or more per message before.
constexpr uint64_t kUpkeepSyscalls = 8;

/// Holds up to `hold` tickets in flight, completing the oldest kAsyncTake once it has them, with
/// a loop of the given concurrency. hold < concurrency, hold + kAsyncTake <= 16: the loop always
/// has capacity and work ready. hold == concurrency: it runs out of capacity every round (as
/// fabric-shm-worker --handler does when its handlers' windows are full).
int loop_syscall_child(LoopBench& b, LoopSyscallReport& rep, uint32_t concurrency, size_t hold) {
    auto fail = [&](const std::string& what) {
        std::snprintf(rep.error, sizeof rep.error, "%s", what.c_str());
        return 1;
    };
    WorkerConfig cfg = b.config();
    cfg.concurrency = concurrency;
    cfg.order = OrderMode::none;
    auto loop = WorkerLoop::open(b.tp.pool, cfg);
    if (!loop) return fail("open: " + loop.error().message);
    if (auto fd = loop->wait_fd(); !fd) return fail("wait_fd: " + fd.error().message);
    std::vector<WorkTicket> held;  // in flight: completed oldest first, kAsyncTake at a time
    held.reserve(concurrency);
    std::array<WorkTicket, kAsyncTake> tickets;
    uint64_t done = 0, t0 = 0;
    for (uint64_t rounds = 0; done < kLoopWarmup + kLoopMeasured; ++rounds) {
        if (rounds > 10'000'000) return fail("no progress after 10M rounds, " + std::to_string(done) + " done");
        if (done >= kLoopWarmup && t0 == 0) {
            t0 = mono_now_ns();
            if (!test::count_syscalls_from_now(rep.syscalls)) return fail(std::string("seccomp: ") + std::strerror(errno));
            rep.counted = 1;
        }
        auto n = loop->acquire(tickets, std::chrono::nanoseconds(0));  // as an event loop: never block here
        if (!n) return fail("acquire: " + n.error().message);
        for (size_t t = 0; t < *n; ++t) {
            if (Status st = b.feed(); !st) return fail("feed: " + st.error().message);  // the backlog stays
            held.push_back(std::move(tickets[t]));
        }
        if (held.size() >= hold || *n == 0) {
            const size_t k = std::min(held.size(), kAsyncTake);
            for (size_t t = 0; t < k; ++t, ++done) {
                const uint32_t crc = crc_of(held[t].item());
                if (Status st = loop->complete(std::move(held[t]), bytes_of({reinterpret_cast<const char*>(&crc), sizeof crc})); !st)
                    return fail("complete: " + st.error().message);
            }
            held.erase(held.begin(), held.begin() + ptrdiff_t(k));
        }
        // An event loop calls service() whenever wait_fd is readable; completions keep it so.
        if (Status st = loop->service(); !st) return fail("service: " + st.error().message);
    }
    test::stop_counting_syscalls();
    rep.elapsed_ns = mono_now_ns() - t0;
    rep.messages = done - kLoopWarmup;
    rep.rounds = (done - kLoopWarmup) / kAsyncTake;
    for (WorkTicket& t : held) (void)loop->complete(std::move(t), bytes_of("x"));
    if (Status st = loop->close(); !st) return fail("close: " + st.error().message);
    return 0;
}

/// Runs loop_syscall_child in a forked child; returns its report's counts (calls, allowance).
struct LoopSyscalls {
    uint64_t calls = 0, upkeep = 0, rounds = 0;
};
LoopSyscalls count_loop_syscalls(const std::string& tag, uint32_t concurrency, size_t hold) {
    LoopBench b(tag);
    for (uint64_t i = 0; i < 2 * kBacklog; ++i) REQUIRE(b.feed());
    void* mem = mmap(nullptr, sizeof(LoopSyscallReport), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    auto* rep = new (mem) LoopSyscallReport();
    const pid_t pid = test::fork_child([&] { return loop_syscall_child(b, *rep, concurrency, hold); });
    const int code = test::wait_child(pid, 120000);
    INFO("child: " << rep->error);
    REQUIRE(code == 0);
    REQUIRE(rep->counted.load() == 1);
    LoopSyscalls r;
    r.calls = rep->syscalls.total.load();
    r.rounds = rep->rounds.load();
    const uint64_t elapsed_ns = rep->elapsed_ns.load();
    r.upkeep = kUpkeepSyscalls * (elapsed_ns / kUpkeepPeriodNs + 1);
    MESSAGE("acquire/complete with wait_fd, " << hold << " held, concurrency " << concurrency << ": " << r.calls
                                              << " system calls over " << rep->messages.load() << " messages in "
                                              << r.rounds << " rounds, " << elapsed_ns / 1000
                                              << " us (upkeep allowance " << r.upkeep << "):" << rep->syscalls.which());
    rep->~LoopSyscallReport();
    munmap(mem, sizeof(LoopSyscallReport));
    return r;
}

}  // namespace

TEST_CASE("WorkerLoop's acquire/complete with wait_fd makes no system call per message under a backlog") {
    if (!test::syscalls_countable()) {
        MESSAGE("system calls are counted on x86-64, without TSan and valgrind, only");
        return;
    }
    SUBCASE("with capacity to spare: none but the upkeep's") {
        const LoopSyscalls r = count_loop_syscalls("loop-sys-room", 64, 8);
        CHECK_MESSAGE(r.calls <= r.upkeep, r.calls << " system calls (upkeep allowance " << r.upkeep << ")");
    }
    SUBCASE("out of capacity every round: two per round (wait_fd cleared, then set by a completion)") {
        const LoopSyscalls r = count_loop_syscalls("loop-sys-full", 8, 8);
        CHECK_MESSAGE(r.calls <= r.upkeep + 2 * r.rounds,
                      r.calls << " system calls in " << r.rounds << " rounds (upkeep allowance " << r.upkeep << ")");
    }
}
