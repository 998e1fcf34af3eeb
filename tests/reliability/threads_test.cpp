// SPDX-License-Identifier: MIT
// The shared-memory concurrency of the pool and the object store, run as THREADS of one
// process sharing one mapping, so that ThreadSanitizer (-Db_sanitize=thread) can see data
// races; between processes it cannot. In one pool, at the same time:
//  - two threads create and remove regions under overlapping names (already_exists races,
//    remove while another thread holds a handle, reuse of freed extents);
//  - one thread lists and renews every lease, lists regions and the registry, and reaps;
//  - three threads open the same store concurrently (creation race), then put / get / pin /
//    remove / loan+commit on 8 overlapping keys; every object is self-describing, so a
//    reader checks it received a whole object, never a torn one.
// Each thread stops after its operation budget or a deadline (8 s; TSan is slow), and the
// test prints the operation counts. Passes when no check fails and (under TSan) no race is
// reported: a report fails the executable with exit code 66.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <latch>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../support/test_support.h"
#include "fabric_shm/lease.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "region_kinds.h"

using namespace fabric_shm;

namespace {

using SteadyClock = std::chrono::steady_clock;

/// A self-describing payload: byte 0-3 = size, byte 4 = fill, the rest = fill.
std::vector<uint8_t> payload(uint32_t size, uint8_t fill) {
    std::vector<uint8_t> v(size, fill);
    std::memcpy(v.data(), &size, 4);
    return v;
}
bool whole(std::span<const uint8_t> v) {
    if (v.size() < 5) return false;
    uint32_t size = 0;
    std::memcpy(&size, v.data(), 4);
    if (size != v.size()) return false;
    for (size_t i = 5; i < v.size(); ++i)
        if (v[i] != v[4]) return false;
    return true;
}

struct Counts {
    std::atomic<uint64_t> ops{0}, failures{0};
};

}  // namespace

TEST_CASE("threads: pool registry, regions, leases and the store race safely in one mapping") {
    const std::string name = test::unique_pool_name("threads");
    test::PoolCleanup cleanup(name);
    auto created = Pool::create({name, 16u << 20});
    REQUIRE_MESSAGE(created, created.error().message);
    Pool& pool = created.value();

    const auto deadline = SteadyClock::now() + std::chrono::seconds(8);
    constexpr int kRegionThreads = 2, kStoreThreads = 3;
    constexpr uint64_t kOpsPerThread = 4000;
    std::latch start(kRegionThreads + 1 + kStoreThreads + 1);  // + the lease thread + this one
    std::atomic<bool> stop{false};
    Counts region_ops, lease_ops, store_ops;
    std::atomic<uint64_t> torn{0}, unexpected{0}, self_lock_refusals{0};
    std::mutex errors_mutex;
    std::vector<std::string> errors;  // guarded by errors_mutex
    auto report = [&](const std::string& e) {
        std::lock_guard<std::mutex> lock(errors_mutex);
        if (errors.size() < 20) errors.push_back(e);
        unexpected.fetch_add(1, std::memory_order_relaxed);
    };

    std::vector<std::thread> threads;
    for (int t = 0; t < kRegionThreads; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937_64 rng(100 + t);
            start.arrive_and_wait();
            for (uint64_t i = 0; i < kOpsPerThread && SteadyClock::now() < deadline; ++i) {
                const std::string rname = "r-" + std::to_string(rng() % 6);
                if (rng() % 3 == 0) {
                    // Attach to whatever the other thread made; it may be removed under us.
                    auto h = pool.open_region(RegionKind::test, rname);
                    if (h) {
                        // Created zeroed, then filled with 0xab by its creator thread, possibly right
                        // now: region bytes are the user's to synchronise, so the test touches the
                        // shared byte atomically on both sides (TSan should see the library's races).
                        volatile uint8_t sink =
                            __atomic_load_n(reinterpret_cast<const uint8_t*>(h->data()), __ATOMIC_RELAXED);
                        (void)sink;
                        (void)h->check();
                    } else if (h.code() != Errc::not_found && h.code() != Errc::lease_expired &&
                               h.code() != Errc::stale_generation &&
                               h.code() != Errc::not_ready) {  // another thread is creating it
                        report("open_region " + rname + ": " + h.error().message);
                    }
                    region_ops.ops.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                RegionSpec spec;
                spec.name = rname;
                spec.length = 4096 * (1 + rng() % 3);
                auto r = pool.create_region(spec);
                if (!r) {
                    if (r.code() == Errc::busy && r.error().message.find("already held by this registration") !=
                                                      std::string::npos)
                        self_lock_refusals.fetch_add(1, std::memory_order_relaxed);  // see the may_fail case below
                    else if (r.code() != Errc::already_exists && r.code() != Errc::capacity_exceeded &&
                             r.code() != Errc::no_space)
                        report("create_region " + rname + ": " + r.error().message);
                    region_ops.failures.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                __atomic_store_n(reinterpret_cast<uint8_t*>(r->data()), uint8_t(0xab), __ATOMIC_RELAXED);  // read by openers
                std::memset(reinterpret_cast<uint8_t*>(r->data()) + 1, 0xab, r->length() - 1);
                if (Status s = r->check(); !s) report("check after create: " + s.error().message);
                if (Status s = pool.remove_region(r->ref()); !s && s.code() != Errc::stale_generation) {
                    if (s.code() == Errc::busy &&
                        s.error().message.find("already held by this registration") != std::string::npos)
                        self_lock_refusals.fetch_add(1, std::memory_order_relaxed);
                    else
                        report("remove_region " + rname + ": " + s.error().message);
                }
                region_ops.ops.fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    threads.emplace_back([&] {
        std::mt19937_64 rng(7);
        RenewalManager renewals(pool);
        (void)renewals.register_lease(pool.pool_lease_id());
        start.arrive_and_wait();
        while (!stop.load(std::memory_order_relaxed) && SteadyClock::now() < deadline) {
            const uint64_t now = mono_now_ns();
            for (const LeaseInfo& l : pool.leases()) {
                auto r = pool.renew_lease(l.lease_id, MonoClock::from_ns(now));
                if (!r && r.code() != Errc::lease_expired && r.code() != Errc::stale_generation &&
                    r.code() != Errc::not_found)
                    report("renew_lease: " + r.error().message);
                lease_ops.ops.fetch_add(1, std::memory_order_relaxed);
            }
            for (const RegionInfo& r : pool.regions()) (void)pool.region_info(r.ref);
            (void)pool.registry().list(MonoClock::from_ns(now));
            (void)renewals.tick(MonoClock::from_ns(now + 3600 * kNsPerSec));  // everything due: renews the pool lease
            if (rng() % 8 == 0) (void)pool.reap(MonoClock::from_ns(now));
            (void)pool.heartbeat(MonoClock::from_ns(now));
            std::this_thread::yield();
        }
    });
    for (int t = 0; t < kStoreThreads; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937_64 rng(200 + t);
            StoreConfig cfg;
            cfg.heap_bytes = 4u << 20;
            start.arrive_and_wait();
            // All three open at once: one creates, the others attach (or retry the attach).
            auto opened = MemObjectStore::open(pool, cfg);
            // Known foundation defect (see the may_fail case below): the directory lock cannot
            // tell two threads of one registration apart, so a concurrent create is refused.
            for (int retry = 0; retry < 1000 && !opened && opened.code() == Errc::busy &&
                                opened.error().message.find("already held by this registration") != std::string::npos;
                 ++retry) {
                self_lock_refusals.fetch_add(1, std::memory_order_relaxed);
                std::this_thread::yield();
                opened = MemObjectStore::open(pool, cfg);
            }
            if (!opened) {
                report("store open: " + opened.error().message);
                return;
            }
            MemObjectStore& store = *opened.value();
            for (uint64_t i = 0; i < kOpsPerThread && SteadyClock::now() < deadline; ++i) {
                const FabricUri uri = FabricUri::make(name, "b", "k" + std::to_string(rng() % 8)).value();
                const unsigned op = unsigned(rng() % 10);
                store_ops.ops.fetch_add(1, std::memory_order_relaxed);
                if (op < 3) {
                    auto v = store.put(uri, payload(uint32_t(5 + rng() % 3000), uint8_t(rng())));
                    if (!v && v.code() != Errc::capacity_exceeded) report("put: " + v.error().message);
                } else if (op < 6) {
                    auto g = store.get(uri);
                    if (!g) report("get: " + g.error().message);
                    else if (g->has_value() && !whole((*g)->data)) torn.fetch_add(1, std::memory_order_relaxed);
                } else if (op == 6) {
                    auto p = store.pin(uri);
                    if (!p) report("pin: " + p.error().message);
                    else if (p->has_value()) {
                        if (!(*p)->verify() || !whole((*p)->bytes())) torn.fetch_add(1, std::memory_order_relaxed);
                    }
                } else if (op == 7) {
                    auto r = store.remove(uri);
                    if (!r) report("remove: " + r.error().message);
                } else if (op == 8) {
                    const uint32_t size = uint32_t(5 + rng() % 2000);
                    auto loan = store.loan(size);
                    if (!loan) {
                        if (loan.code() != Errc::capacity_exceeded) report("loan: " + loan.error().message);
                        continue;
                    }
                    const std::vector<uint8_t> p = payload(size, uint8_t(rng()));
                    // A loan's bytes are written by the caller, and a stale reader of the block's
                    // previous object may still be copying (then discarding) them: the documented
                    // exception of docs/store.md. Relaxed atomic stores, as seqlock_copy_in uses
                    // under TSan, keep that intended overlap out of the report.
                    for (size_t i = 0; i < p.size(); ++i)
                        __atomic_store_n(loan->bytes().data() + i, p[i], __ATOMIC_RELAXED);
                    auto v = store.commit(std::move(loan.value()), uri);
                    if (!v && v.code() != Errc::capacity_exceeded) report("commit: " + v.error().message);
                } else {
                    auto h = store.head(uri);
                    if (!h) report("head: " + h.error().message);
                    auto l = store.list(name, "b", "k");
                    if (!l) report("list: " + l.error().message);
                }
            }
        });
    }
    start.arrive_and_wait();
    for (size_t i = 0; i < threads.size(); ++i) {
        if (i == size_t(kRegionThreads)) continue;  // the lease thread runs until the others finish
        threads[i].join();
    }
    stop.store(true, std::memory_order_relaxed);
    threads[kRegionThreads].join();

    for (const std::string& e : errors) FAIL_CHECK(e);
    CHECK(unexpected.load() == 0);
    CHECK(torn.load() == 0);
    // The store's own invariant check (what fabric-shm-dump --check runs) finds nothing.
    for (const RegionInfo& r : pool.regions()) {
        const RegionKindOps* ops = region_kind_ops(r.kind);
        if (!ops || !ops->check) continue;
        std::vector<std::string> violations, in_progress;
        ops->check(pool, r, violations, in_progress);
        for (const std::string& v : violations) FAIL_CHECK(v);
    }
    char line[300];
    std::snprintf(line, sizeof line,
                  "threads: %llu region ops (%llu refused, %llu of them a spurious 'directory lock already held by "
                  "this registration'), %llu lease renewals, %llu store ops",
                  (unsigned long long)region_ops.ops.load(), (unsigned long long)region_ops.failures.load(),
                  (unsigned long long)self_lock_refusals.load(),
                  (unsigned long long)lease_ops.ops.load(), (unsigned long long)store_ops.ops.load());
    MESSAGE(std::string(line));  // not the array: doctest would copy all 300 bytes, most never written
    std::printf("%s\n", line);
    CHECK(store_ops.ops.load() > 0);
    CHECK(region_ops.ops.load() > 0);
}

// The directory lock (libfabric_shm/src/owner_lock.cpp) stores only the OwnerToken, which all
// threads of one process share: a second thread creating or removing a region while another
// holds the lock gets Errc::busy "already held by this registration" instead of waiting. The
// object store's stripe locks already add a per-thread tag to the lock word; the directory
// lock (and the mq group locks built on the same owner_lock_acquire) do not yet. This case
// states the expected behaviour and is marked may_fail until the foundation fix lands.
TEST_CASE("threads: two threads of one process create regions concurrently without a spurious busy" *
          doctest::may_fail()) {
    const std::string name = test::unique_pool_name("threads-lock");
    test::PoolCleanup cleanup(name);
    auto created = Pool::create({name, 8u << 20});
    REQUIRE_MESSAGE(created, created.error().message);
    Pool& pool = created.value();
    std::atomic<uint64_t> refused{0};
    std::latch start(3);
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
        threads.emplace_back([&, t] {
            start.arrive_and_wait();
            for (int i = 0; i < 300; ++i) {
                RegionSpec spec;
                spec.name = "t" + std::to_string(t) + "-" + std::to_string(i % 4);
                spec.length = 4096;
                auto r = pool.create_region(spec);
                if (!r) {
                    refused.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                if (!pool.remove_region(r->ref())) refused.fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    start.arrive_and_wait();
    for (auto& t : threads) t.join();
    CHECK_MESSAGE(refused.load() == 0, refused.load() << " of 1200 create/remove calls were refused");
}
