// SPDX-License-Identifier: MIT
// MemObjectStore across processes: racing conditional puts, disjoint and overlapping
// writers, crash points inside put/commit/loan/pin/remove/alloc, and real SIGKILLs; after
// each, the survivors' view, the store's invariants and the recovered space are checked.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "../support/test_support.h"
#include "fabric_shm/counters.h"
#include "fabric_shm/crash_point.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"

using namespace fabric_shm;

namespace {

std::vector<uint8_t> bytes_of(const std::string& s, size_t n) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = uint8_t(s[i % s.size()] + i);
    return v;
}

FabricUri at(const std::string& pool, const std::string& key) { return FabricUri::make(pool, "b", key).value(); }

/// A child's view: its own registration in the pool (never the parent's inherited one).
struct Child {
    explicit Child(const std::string& name) {
        auto p = Pool::open(name);
        if (!p) _exit(90);
        pool.emplace(std::move(*p));
        auto s = MemObjectStore::open(*pool);
        if (!s) _exit(91);
        store = std::move(*s);
    }
    std::optional<Pool> pool;
    std::unique_ptr<MemObjectStore> store;
};

/// A start line in shared memory so children begin together (no sleeps).
struct Barrier {
    Barrier() {
        mem = static_cast<std::atomic<uint32_t>*>(
            mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
        mem->store(0, std::memory_order_relaxed);
    }
    ~Barrier() { munmap(mem, 4096); }
    void arrive_and_wait(uint32_t n) {
        mem->fetch_add(1, std::memory_order_acq_rel);  // pairs with the loads below in other children
        while (mem->load(std::memory_order_acquire) < n) sched_yield();
    }
    std::atomic<uint32_t>* mem;
};

std::vector<std::string> violations_of(const Pool& pool) {
    std::vector<std::string> violations, in_progress;
    for (const RegionInfo& r : pool.regions())
        if (r.kind == uint32_t(RegionKind::store)) region_kind_ops(r.kind)->check(pool, r, violations, in_progress);
    return violations;
}

void require_clean(const Pool& pool) {
    for (const auto& v : violations_of(pool)) FAIL_CHECK(v);
}

}  // namespace

TEST_CASE("store: two processes racing if-absent on the same keys each win exactly once per key") {
    test::PoolCleanup cleanup(test::unique_pool_name("race"));
    auto pool = Pool::create({cleanup.name(), 16 << 20});
    REQUIRE(pool);
    auto store = MemObjectStore::open(*pool);
    REQUIRE(store);
    constexpr int kKeys = 200;
    Barrier barrier;
    pid_t kids[2];
    for (int c = 0; c < 2; ++c) {
        kids[c] = test::fork_child([&, c] {
            Child me(cleanup.name());
            barrier.arrive_and_wait(2);
            PutOptions o;
            o.condition = PutCondition::if_absent;
            int wins = 0;
            for (int k = 0; k < kKeys; ++k) {
                auto r = me.store->put(at(cleanup.name(), "k" + std::to_string(k)), bytes_of("child" + std::to_string(c), 64), o);
                if (r) ++wins;
                else if (r.code() != Errc::conflict) return 100;
            }
            return wins;  // < 256
        });
    }
    const int w0 = test::wait_child(kids[0]), w1 = test::wait_child(kids[1]);
    CHECK(w0 + w1 == kKeys);
    int from0 = 0;
    for (int k = 0; k < kKeys; ++k) {
        auto g = (*store)->get(at(cleanup.name(), "k" + std::to_string(k)));
        REQUIRE((g && g->has_value()));
        if ((*g)->data == bytes_of("child0", 64)) ++from0;
        else CHECK((*g)->data == bytes_of("child1", 64));
    }
    CHECK(from0 == w0);
    CHECK(counter_total(*pool, CounterId::store_conflicts) == kKeys);
    require_clean(*pool);
}

TEST_CASE("store: processes writing disjoint and overlapping keys leave a consistent final state") {
    test::PoolCleanup cleanup(test::unique_pool_name("mpw"));
    auto pool = Pool::create({cleanup.name(), 32 << 20});
    REQUIRE(pool);
    auto store = MemObjectStore::open(*pool);
    REQUIRE(store);
    constexpr int kProcs = 3, kOps = 3000;
    Barrier barrier;
    std::vector<pid_t> kids;
    for (int c = 0; c < kProcs; ++c) {
        kids.push_back(test::fork_child([&, c] {
            Child me(cleanup.name());
            barrier.arrive_and_wait(kProcs);
            std::mt19937 rng(c + 1);
            for (int i = 0; i < kOps; ++i) {
                // Own keys: the final value is known. Shared keys: any writer may win.
                const std::string own = "own-" + std::to_string(c) + "-" + std::to_string(i % 50);
                const size_t n = 1 + rng() % 3000;
                if (!me.store->put(at(cleanup.name(), own), bytes_of(own + ":" + std::to_string(i), n))) return 101;
                const std::string shared = "shared-" + std::to_string(rng() % 20);
                if (rng() % 5 == 0) {
                    if (!me.store->remove(at(cleanup.name(), shared))) return 102;
                } else if (!me.store->put(at(cleanup.name(), shared), bytes_of(shared + "/" + std::to_string(c), 1 + rng() % 5000))) {
                    return 103;
                }
                auto g = me.store->get(at(cleanup.name(), shared));
                if (!g) return 104;  // never torn, never corrupt
            }
            return 0;
        }));
    }
    for (pid_t k : kids) CHECK(test::wait_child(k, 60000) == 0);
    for (int c = 0; c < kProcs; ++c) {
        for (int j = 0; j < 50; ++j) {
            const std::string own = "own-" + std::to_string(c) + "-" + std::to_string(j);
            auto g = (*store)->get(at(cleanup.name(), own));
            REQUIRE((g && g->has_value()));
            const int last = kOps - 50 + j;
            const auto want = bytes_of(own + ":" + std::to_string(last), (*g)->data.size());
            CHECK((*g)->data == want);
        }
    }
    uint64_t last_version = 0;
    for (int s = 0; s < 20; ++s) {
        auto g = (*store)->get(at(cleanup.name(), "shared-" + std::to_string(s)));
        REQUIRE(g);  // present or absent, never corrupt
        if (g->has_value()) last_version = std::max(last_version, (*g)->info.version);
    }
    const StoreStats st = (*store)->stats();
    CHECK(st.objects >= uint64_t(kProcs * 50));
    CHECK(st.objects <= uint64_t(kProcs * 50 + 20));
    CHECK(st.loans_active == 0);
    CHECK(st.pins_active == 0);
    require_clean(*pool);
}

// ---- crash points ---------------------------------------------------------------------------

namespace {

enum class Op { put_small, put_large, remove, loan_commit, pin, put_new_small };
struct CrashCase {
    const char* point;
    Op op;
    bool new_visible;  ///< after the crash, the child's write is visible (v2 / removed)
};

/// Runs `op` in a child that SIGKILLs itself at `point`, then checks what survivors see.
void crash_at(const CrashCase& cc) {
    INFO("crash point ", std::string(cc.point));
    test::PoolCleanup cleanup(test::unique_pool_name("crash"));
    auto pool = Pool::create({cleanup.name(), 32 << 20});
    REQUIRE(pool);
    // A new key goes into a nearly full 14-entry table (so inserts pass full buckets) and
    // a size class no superblock serves yet (so the allocator assigns one).
    const bool new_key = cc.op == Op::put_new_small;
    StoreConfig cfg;
    if (new_key) cfg.table_entries = 14;
    auto store = MemObjectStore::open(*pool, cfg);
    REQUIRE(store);
    const bool large = cc.op == Op::put_large;
    const size_t n = large ? (2 << 20) : 1000;
    const auto v1 = bytes_of("first", n), v2 = bytes_of("second", new_key ? 5000 : n);
    const FabricUri key = at(cleanup.name(), "k");
    REQUIRE((*store)->put(key, v1));
    REQUIRE((*store)->put(at(cleanup.name(), "other"), bytes_of("x", 300)));
    std::vector<std::string> fillers;
    for (int i = 0; new_key && i < 12; ++i) {
        fillers.push_back("f" + std::to_string(i));
        REQUIRE((*store)->put(at(cleanup.name(), fillers.back()), bytes_of("f", 10)));
    }
    const pid_t kid = test::fork_child([&] {
        Child me(cleanup.name());
        setenv("FABRIC_SHM_CRASH_POINT", cc.point, 1);
        detail::crash_point_rearm();
        switch (cc.op) {
        case Op::put_small:
        case Op::put_large:
            (void)me.store->put(key, v2);
            break;
        case Op::put_new_small:
            (void)me.store->put(at(cleanup.name(), "brand-new-key"), v2);
            break;
        case Op::remove:
            (void)me.store->remove(key);
            break;
        case Op::loan_commit: {
            auto loan = me.store->loan(n);
            if (!loan) return 2;
            std::memcpy(loan->bytes().data(), v2.data(), n);
            (void)me.store->commit(std::move(*loan), key);
            break;
        }
        case Op::pin: {
            auto p = me.store->pin(key);
            if (!p || !p->has_value()) return 3;
            setenv("FABRIC_SHM_CRASH_POINT", "never", 1);
            detail::crash_point_rearm();
            kill(getpid(), SIGKILL);  // die holding the pin
            break;
        }
        }
        return 0;  // the crash point was not reached
    });
    const int rc = test::wait_child(kid);
    CHECK(rc == 128 + SIGKILL);

    // Survivors' view before any repair: the old or the new object, whole.
    auto g = (*store)->get(key);
    REQUIRE_MESSAGE(g, g.error().message);
    if (cc.op == Op::remove) {
        CHECK(g->has_value() == !cc.new_visible);
    } else if (cc.op != Op::put_new_small) {
        REQUIRE(g->has_value());
        CHECK((*g)->data == (cc.new_visible ? v2 : v1));
    }
    for (const auto& v : violations_of(*pool)) FAIL_CHECK(v);

    // Repair: the reaper frees what the dead child owned.
    ReapReport rep = pool->reap(mono_now_ns(), false, false);
    CHECK(rep.dead_processes <= 1);  // the registry may already have reaped it
    const StoreStats st = (*store)->stats();
    CHECK(st.loans_active == 0);
    CHECK(st.pins_active == 0);
    require_clean(*pool);
    // The key is writable again (stripe lock taken over), and all space comes back.
    REQUIRE((*store)->put(key, v1));
    g = (*store)->get(key);
    REQUIRE((g && g->has_value()));
    CHECK((*g)->data == v1);
    fillers.insert(fillers.end(), {"k", "other", "brand-new-key"});
    for (const std::string& k : fillers) REQUIRE((*store)->remove(at(cleanup.name(), k)));
    pool->reap(mono_now_ns(), false, false);
    const StoreStats end = (*store)->stats();
    CHECK(end.objects == 0);
    CHECK(end.heap_used_bytes == 0);
    CHECK(end.largest_free_extent == end.heap_capacity_bytes);
    require_clean(*pool);
}

}  // namespace

TEST_CASE("store: a put killed at any step leaves the old or the new object and no lost space") {
    const CrashCase cases[] = {
        {"store.alloc.after_claim", Op::put_small, false},   {"store.alloc.assigning", Op::put_new_small, false},
        {"store.put.after_alloc", Op::put_small, false},     {"store.put.after_fill", Op::put_small, false},
        {"store.put.after_mark", Op::put_small, false},      {"store.put.after_link", Op::put_small, true},
        {"store.put.after_retire", Op::put_small, true},     {"store.put.after_overflow", Op::put_new_small, false},
        {"store.alloc.run_claimed", Op::put_large, false},   {"store.put.after_mark", Op::put_large, false},
        {"store.put.after_link", Op::put_large, true},
    };
    for (const CrashCase& cc : cases) crash_at(cc);
}

TEST_CASE("store: loan, commit, pin and remove killed at any step are repaired by the reaper") {
    const CrashCase cases[] = {
        {"store.loan.after_alloc", Op::loan_commit, false},  {"store.commit.before_publish", Op::loan_commit, false},
        {"store.put.after_link", Op::loan_commit, true},     {"store.pin.after_record", Op::pin, false},
        {"store.pin.after_mark", Op::pin, false},            {"never", Op::pin, false},
        {"store.remove.after_mark", Op::remove, false},      {"store.remove.after_unlink", Op::remove, true},
    };
    for (const CrashCase& cc : cases) crash_at(cc);
}

TEST_CASE("store: a dead pinner's pin keeps an overwritten object until the reaper releases it") {
    test::PoolCleanup cleanup(test::unique_pool_name("pinkill"));
    auto pool = Pool::create({cleanup.name(), 16 << 20});
    REQUIRE(pool);
    auto store = MemObjectStore::open(*pool);
    REQUIRE(store);
    const FabricUri key = at(cleanup.name(), "k");
    REQUIRE((*store)->put(key, bytes_of("a", 4000)));
    const pid_t kid = test::fork_child([&] {
        Child me(cleanup.name());
        auto p = me.store->pin(key);
        if (!p || !p->has_value()) return 3;
        kill(getpid(), SIGKILL);
        return 0;
    });
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    REQUIRE((*store)->put(key, bytes_of("b", 4000)));
    const uint64_t used_with_pin = (*store)->stats().heap_used_bytes;
    ReapReport rep = pool->reap(mono_now_ns(), false, false);
    CHECK(rep.kind_items >= 1);
    CHECK(counter_total(*pool, CounterId::store_pins_released) == 1);
    CHECK((*store)->stats().heap_used_bytes < used_with_pin);
    CHECK((*store)->stats().pins_active == 0);
}

TEST_CASE("store: writers SIGKILLed at random moments never leave torn objects or lost space") {
    test::PoolCleanup cleanup(test::unique_pool_name("sigkill"));
    auto pool = Pool::create({cleanup.name(), 32 << 20});
    REQUIRE(pool);
    auto store = MemObjectStore::open(*pool);
    REQUIRE(store);
    std::mt19937 rng(7);
    for (int round = 0; round < 12; ++round) {
        Barrier started;
        const pid_t kid = test::fork_child([&, round] {
            Child me(cleanup.name());
            std::mt19937 r(round * 977 + 1);
            started.arrive_and_wait(1);
            for (uint64_t i = 0;; ++i) {
                const std::string k = "k" + std::to_string(r() % 40);
                const size_t n = (r() % 8 == 0) ? (64 << 10) + r() % (300 << 10) : r() % 4000;
                switch (r() % 5) {
                case 0: (void)me.store->remove(at(cleanup.name(), k)); break;
                case 1: {
                    auto loan = me.store->loan(n);
                    if (!loan) break;
                    std::memcpy(loan->bytes().data(), bytes_of(k, n).data(), n);
                    (void)me.store->commit(std::move(*loan), at(cleanup.name(), k));
                    break;
                }
                case 2: {
                    auto p = me.store->pin(at(cleanup.name(), k));
                    if (p && p->has_value() && !(*p)->verify()) _exit(5);
                    break;
                }
                default: (void)me.store->put(at(cleanup.name(), k), bytes_of(k, n)); break;
                }
            }
            return 0;
        });
        started.mem->load(std::memory_order_acquire);
        while (started.mem->load(std::memory_order_acquire) < 1) sched_yield();
        // Let it run 1-20 ms into its loop, then kill it wherever it is.
        timespec ts{0, long(1 + rng() % 20) * 1000000L};
        nanosleep(&ts, nullptr);
        kill(kid, SIGKILL);
        CHECK(test::wait_child(kid) == 128 + SIGKILL);
        // Survivors read whole objects (never torn: the CRC holds) or nothing.
        for (int k = 0; k < 40; ++k) {
            auto g = (*store)->get(at(cleanup.name(), "k" + std::to_string(k)));
            REQUIRE_MESSAGE(g, g.error().message);
            if (g->has_value()) CHECK((*g)->data == bytes_of("k" + std::to_string(k), (*g)->data.size()));
        }
        pool->reap(mono_now_ns(), false, false);
        require_clean(*pool);
        CHECK((*store)->stats().loans_active == 0);
        CHECK((*store)->stats().pins_active == 0);
    }
    for (int k = 0; k < 40; ++k) REQUIRE((*store)->remove(at(cleanup.name(), "k" + std::to_string(k))));
    pool->reap(mono_now_ns(), false, false);
    const StoreStats end = (*store)->stats();
    CHECK(end.heap_used_bytes == 0);
    CHECK(end.largest_free_extent == end.heap_capacity_bytes);
}

TEST_CASE("store: the reaper's dry run reports a dead owner's loan without freeing it") {
    test::PoolCleanup cleanup(test::unique_pool_name("dry"));
    auto pool = Pool::create({cleanup.name(), 16 << 20});
    REQUIRE(pool);
    auto store = MemObjectStore::open(*pool);
    REQUIRE(store);
    const pid_t kid = test::fork_child([&] {
        Child me(cleanup.name());
        auto loan = me.store->loan(3000);
        if (!loan) return 2;
        kill(getpid(), SIGKILL);  // die holding the loan
        return 0;
    });
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    CHECK((*store)->stats().loans_active == 1);
    ReapReport dry = pool->reap(mono_now_ns(), true, false);
    CHECK(dry.kind_items >= 1);
    bool noted = false;
    for (const auto& n : dry.notes) noted = noted || n.find("loaned by dead owner") != std::string::npos;
    CHECK(noted);
    CHECK((*store)->stats().loans_active == 1);
    ReapReport real = pool->reap(mono_now_ns(), false, false);
    CHECK(real.kind_items >= 1);
    CHECK((*store)->stats().loans_active == 0);
    CHECK((*store)->stats().heap_used_bytes == 0);
    CHECK(counter_total(*pool, CounterId::store_loans_reclaimed) == 1);
}

TEST_CASE("store: threads of one process writing the same keys exclude each other per key") {
    test::PoolCleanup cleanup(test::unique_pool_name("threads"));
    auto pool = Pool::create({cleanup.name(), 16 << 20});
    REQUIRE(pool);
    auto store = MemObjectStore::open(*pool);
    REQUIRE(store);
    std::atomic<int> failures{0};
    auto work = [&](int t) {
        PutOptions absent;
        absent.condition = PutCondition::if_absent;
        for (int i = 0; i < 3000; ++i) {
            const FabricUri u = at(cleanup.name(), "k" + std::to_string(i % 10));
            if (i % 7 == 0) {
                if (!(*store)->remove(u)) ++failures;
            } else if (i % 5 == 0) {
                auto r = (*store)->put(u, bytes_of("t" + std::to_string(t), 100), absent);
                if (!r && r.code() != Errc::conflict) ++failures;
            } else if (!(*store)->put(u, bytes_of("t" + std::to_string(t), 50 + i % 500))) {
                ++failures;
            }
            auto g = (*store)->get(u);
            if (!g) ++failures;
        }
    };
    std::thread a(work, 0), b(work, 1);
    a.join();
    b.join();
    CHECK(failures.load() == 0);
    auto keys = (*store)->list(cleanup.name(), "b", "");
    REQUIRE(keys);
    CHECK((*store)->stats().objects == keys->size());  // no duplicate keys
    require_clean(*pool);
}
