// SPDX-License-Identifier: MIT
// Process registry: registration, certainly-dead detection (gone, reused, zombie, heartbeat),
// reaping of dead slots, crash while registering, lock takeover from a dead holder.
#include <doctest/doctest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "../support/registry_slots.h"
#include "../support/test_support.h"
#include "fabric_shm/counters.h"
#include "crash_point.h"
#include "fabric_shm/lease.h"
#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"
#include "owner_lock.h"
#include "pool_impl.h"

using namespace fabric_shm;

namespace {
/// Forks a child that registers in the pool, writes its token into a pipe and exits
/// (when `linger` is false) or waits to be killed.
OwnerToken child_token(const std::string& name, pid_t* pid, bool linger) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    *pid = test::fork_child([&] {
        auto p = Pool::open(name);
        OwnerToken t = p ? p->self() : 0;
        if (write(fds[1], &t, sizeof t) != sizeof t) return 2;
        if (linger) pause();
        // Leave without unregistering, as a crash would.
        _exit(0);
    });
    OwnerToken t = 0;
    REQUIRE(read(fds[0], &t, sizeof t) == sizeof t);
    close(fds[0]);
    close(fds[1]);
    return t;
}
}  // namespace

TEST_CASE("registry: a live process is maybe_alive, and it leaves the registry on close") {
    test::TempPool temp("reg", 2 << 20);
    Pool& pool = temp.pool;
    CHECK(pool.registry().liveness(pool.self(), MonoClock::now()) == Liveness::maybe_alive);
    OwnerToken second_token = 0;
    {
        auto second = Pool::open(temp.name());
        REQUIRE(second);
        second_token = second->self();
        CHECK(pool.registry().list(MonoClock::now()).size() == 2);
    }
    CHECK(pool.registry().list(MonoClock::now()).size() == 1);
    std::string why;
    CHECK(pool.registry().liveness(second_token, MonoClock::now(), &why) == Liveness::certainly_dead);
    CHECK(why.find("registration ended") != std::string::npos);
}

TEST_CASE("registry: a forked child that drops the pool handle it inherited leaves its parent registered") {
    test::TempPool temp("regfork", 2 << 20);
    const OwnerToken parent = temp.pool.self();
    pid_t kid = test::fork_child([&] {
        // The child's copy of the parent's only handle: dropping it destroys the child's copy of
        // the mapping and registration state, and an owner would end its registration here.
        temp.pool = Pool();
        return 0;
    });
    REQUIRE(test::wait_child(kid) == 0);
    CHECK(temp.pool.registry().liveness(parent, MonoClock::now()) == Liveness::maybe_alive);
    CHECK(temp.pool.registry().list(MonoClock::now()).size() == 1);
}

TEST_CASE("registry: a process whose pid is gone is certainly dead and its slot is reaped") {
    test::TempPool temp("gone", 2 << 20);
    Pool& pool = temp.pool;
    pid_t kid;
    const OwnerToken t = child_token(temp.name(), &kid, false);
    REQUIRE(t != 0);
    CHECK(test::wait_child(kid) == 0);
    std::string why;
    CHECK(pool.registry().liveness(t, MonoClock::now(), &why) == Liveness::certainly_dead);
    CHECK(why.find("gone") != std::string::npos);
    CHECK(pool.registry().reap_dead(MonoClock::now()) == 1);
    CHECK(pool.registry().list(MonoClock::now()).size() == 1);
    CHECK(pool.registry().liveness(t, MonoClock::now()) == Liveness::certainly_dead);
}

TEST_CASE("registry: a zombie (exited, not yet waited for) is certainly dead") {
    test::TempPool temp("zombie", 2 << 20);
    Pool& pool = temp.pool;
    pid_t kid;
    const OwnerToken t = child_token(temp.name(), &kid, false);
    // Do not reap the child: wait until it is a zombie.
    for (int i = 0; i < 2000 && !probe_pid(uint32_t(kid)).zombie; ++i) usleep(1000);
    REQUIRE(probe_pid(uint32_t(kid)).zombie);
    std::string why;
    CHECK(pool.registry().liveness(t, MonoClock::now(), &why) == Liveness::certainly_dead);
    CHECK(why.find("zombie") != std::string::npos);
    CHECK(test::wait_child(kid) == 0);
}

// The leader thread of a process that called pthread_exit() from main shows Z in
// /proc/<pid>/stat while its other threads run on: the process is alive, and whatever it
// holds must not be reclaimed under it.
TEST_CASE("registry: a process whose main thread exited while another thread runs is maybe_alive, not a zombie") {
    test::TempPool temp("zombie-leader", 2 << 20);
    Pool& pool = temp.pool;
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    const pid_t kid = test::fork_child([&] {
        auto p = Pool::open(temp.name());
        OwnerToken t = p ? p->self() : 0;
        pthread_t runner;
        if (pthread_create(&runner, nullptr, [](void*) -> void* {
                for (;;) pause();  // until SIGKILL: the process lives on in this thread
            }, nullptr) != 0)
            return 3;
        if (write(fds[1], &t, sizeof t) != sizeof t) return 2;
        // The leader thread exits (the exit system call ends one thread; no unwinding, which
        // would run this test's frames); the pool handle stays open in the process.
        syscall(SYS_exit, 0);
        return 4;
    });
    OwnerToken t = 0;
    REQUIRE(read(fds[0], &t, sizeof t) == sizeof t);
    close(fds[0]);
    close(fds[1]);
    REQUIRE(t != 0);
    // Wait until the leader shows Z (the state /proc/<pid>/stat reports for the process).
    auto leader_state = [&] {
        std::FILE* f = std::fopen(("/proc/" + std::to_string(kid) + "/stat").c_str(), "r");
        if (!f) return '?';
        char buf[512] = {};
        const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
        std::fclose(f);
        const char* p = std::strrchr(buf, ')');
        return n > 0 && p && p[1] == ' ' ? p[2] : '?';
    };
    for (int i = 0; i < 2000 && leader_state() != 'Z'; ++i) usleep(1000);
    REQUIRE(leader_state() == 'Z');
    CHECK_FALSE(probe_pid(uint32_t(kid)).zombie);
    {
        // With one descriptor left the task list opens but no thread's stat does: unknown is
        // alive, never "every thread exited".
        std::vector<int> taken;
        for (int fd; (fd = dup(0)) >= 0;) taken.push_back(fd);
        REQUIRE_FALSE(taken.empty());
        close(taken.back());
        taken.pop_back();
        const bool zombie = probe_pid(uint32_t(kid)).zombie;
        for (int fd : taken) close(fd);
        CHECK_FALSE(zombie);
    }
    std::string why;
    CHECK_MESSAGE(pool.registry().liveness(t, MonoClock::now(), &why) == Liveness::maybe_alive, why);
    CHECK(pool.registry().reap_dead(MonoClock::now()) == 0);
    // Killed, it is a zombie indeed until waited for, then gone.
    kill(kid, SIGKILL);
    for (int i = 0; i < 2000 && !probe_pid(uint32_t(kid)).zombie; ++i) usleep(1000);
    CHECK(probe_pid(uint32_t(kid)).zombie);
    CHECK(pool.registry().liveness(t, MonoClock::now()) == Liveness::certainly_dead);
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
}

TEST_CASE("registry: a reused pid (start time differs) is certainly dead; a matching one is maybe_alive") {
    test::TempPool temp("reuse", 2 << 20);
    Pool& pool = temp.pool;
    pid_t kid;
    const OwnerToken t = child_token(temp.name(), &kid, true);
    CHECK(pool.registry().liveness(t, MonoClock::now()) == Liveness::maybe_alive);
    // Forge what pid reuse looks like: the live pid's start time no longer matches.
    auto& slot = test::slot_of(pool, t);
    const uint64_t real = slot.start_time.load();
    slot.start_time.store(real + 12345);
    std::string why;
    CHECK(pool.registry().liveness(t, MonoClock::now(), &why) == Liveness::certainly_dead);
    CHECK(why.find("reused") != std::string::npos);
    slot.start_time.store(real);
    CHECK(pool.registry().liveness(t, MonoClock::now()) == Liveness::maybe_alive);
    kill(kid, SIGKILL);
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    CHECK(pool.registry().liveness(t, MonoClock::now()) == Liveness::certainly_dead);
}

TEST_CASE("registry: a stale heartbeat past its declared timeout is certainly dead, without one it is not") {
    test::PoolCleanup cleanup(test::unique_pool_name("hb"));
    REQUIRE(Pool::create({cleanup.name(), 2 << 20}));
    OpenOptions with_timeout;
    with_timeout.heartbeat_timeout = std::chrono::seconds(2);
    auto pool = Pool::open(cleanup.name(), with_timeout);
    REQUIRE(pool);
    const uint64_t now = mono_now_ns();
    REQUIRE(pool->heartbeat(MonoClock::from_ns(now)));
    CHECK(pool->registry().liveness(pool->self(), MonoClock::from_ns(now + kNsPerSec)) == Liveness::maybe_alive);
    std::string why;
    CHECK(pool->registry().liveness(pool->self(), MonoClock::from_ns(now + 3 * kNsPerSec), &why) == Liveness::certainly_dead);
    CHECK(why.find("heartbeat") != std::string::npos);
    auto pid_only = Pool::open(cleanup.name());
    REQUIRE(pid_only);
    CHECK(pool->registry().liveness(pid_only->self(), MonoClock::from_ns(now + 3600 * kNsPerSec)) == Liveness::maybe_alive);
}

TEST_CASE("registry: a heartbeat stamped in the future or out of order does not keep a silent process alive") {
    test::PoolCleanup cleanup(test::unique_pool_name("hbfwd"));
    REQUIRE(Pool::create({cleanup.name(), 2 << 20}));
    OpenOptions with_timeout;
    with_timeout.heartbeat_timeout = std::chrono::seconds(2);
    auto pool = Pool::open(cleanup.name(), with_timeout);
    REQUIRE(pool);
    // A renewal tick given an hour ahead (to make every lease due), then a real heartbeat: the
    // word holds the real time, so the process silent 3 s later is judged by that.
    RenewalManager renewals(*pool);
    (void)renewals.tick(MonoClock::from_ns(mono_now_ns() + 3600 * kNsPerSec));
    REQUIRE(pool->heartbeat());
    const uint64_t now = mono_now_ns();
    CHECK(pool->registry().liveness(pool->self(), MonoClock::from_ns(now + 3 * kNsPerSec)) == Liveness::certainly_dead);
    // A thread that read the clock before another's heartbeat and stores after it does not
    // move the word back.
    REQUIRE(pool->heartbeat(MonoClock::from_ns(now - 10 * kNsPerSec)));
    CHECK(pool->registry().liveness(pool->self(), MonoClock::from_ns(now + kNsPerSec)) == Liveness::maybe_alive);
}

TEST_CASE("registry: a process killed while registering leaves a slot the reaper frees") {
    for (const char* point : {"registry.register.claimed", "registry.register.before_publish"}) {
        CAPTURE(point);
        test::PoolCleanup cleanup(test::unique_pool_name("crashreg"));
        auto pool = Pool::create({cleanup.name(), 2 << 20});
        REQUIRE(pool);
        pid_t kid = test::fork_child([&] {
            setenv("FABRIC_SHM_CRASH_POINT", point, 1);
            detail::crash_point_rearm();
            auto p = Pool::open(cleanup.name());
            return 0;
        });
        CHECK(test::wait_child(kid) == 128 + SIGKILL);
        auto listed = pool->registry().list(MonoClock::now());
        REQUIRE(listed.size() == 2);
        CHECK(pool->registry().reap_dead(MonoClock::now()) == 1);
        CHECK(pool->registry().list(MonoClock::now()).size() == 1);
        // The next process registers fine.
        auto again = Pool::open(cleanup.name());
        CHECK(again);
    }
}

TEST_CASE("registry: a dead process's counter shard is folded into the pool totals") {
    test::TempPool temp("counters", 2 << 20);
    Pool& pool = temp.pool;
    pid_t kid = test::fork_child([&] {
        auto p = Pool::open(temp.name());
        if (!p) return 1;
        detail::count(*p, CounterId::store_puts, 41);
        _exit(0);  // no unregister: a crash
    });
    CHECK(test::wait_child(kid) == 0);
    detail::count(pool, CounterId::store_puts, 1);
    CHECK(counter_total(pool, CounterId::store_puts) == 42);
    CHECK(pool.registry().reap_dead(MonoClock::now()) == 1);
    CHECK(counter_total(pool, CounterId::store_puts) == 42);
}

TEST_CASE("owner lock: a lock held by a dead process is taken over and the takeover is reported") {
    test::TempPool temp("lock", 2 << 20);
    Pool& pool = temp.pool;
    pid_t kid;
    const OwnerToken dead = child_token(temp.name(), &kid, false);
    CHECK(test::wait_child(kid) == 0);
    std::atomic<uint64_t> word{dead};
    auto got = detail::owner_lock_acquire(word, pool, pool.self(), 5 * kNsPerSec, "test lock");
    REQUIRE(got);
    CHECK(got->stolen);
    CHECK(OwnerToken(word.load()) == pool.self());
    // The presumed-dead holder's release now fails instead of releasing our lock.
    CHECK_FALSE(detail::owner_lock_release(word, dead));
    CHECK(detail::owner_lock_release(word, pool.self()));
}

TEST_CASE("owner lock: a lock held by a live process times out with busy naming the holder") {
    test::TempPool temp("lockbusy", 2 << 20);
    Pool& pool = temp.pool;
    pid_t kid;
    const OwnerToken live = child_token(temp.name(), &kid, true);
    std::atomic<uint64_t> word{live};
    auto got = detail::owner_lock_acquire(word, pool, pool.self(), 50 * kNsPerMs, "test lock");
    CHECK(got.code() == Errc::busy);
    CHECK(got.error().message.find("test lock") != std::string::npos);
    kill(kid, SIGKILL);
    test::wait_child(kid);
}

// ---- stalls: a paused process is never judged dead by pid, and its late writes fail ----------

namespace {
layout::ProcessSlot* all_slots(const Pool& pool) {
    return reinterpret_cast<layout::ProcessSlot*>(detail::pool_base(pool) + layout::kRegistryOffset);
}
/// The registry entry of a process (CLAIMING or LIVE), or nullptr.
const ProcessInfo* find_pid(const std::vector<ProcessInfo>& list, pid_t pid) {
    for (const ProcessInfo& p : list)
        if (p.pid == uint32_t(pid)) return &p;
    return nullptr;
}
/// Forks a child that opens the pool with `point` armed to pause, and reports the token it
/// ended up with through a pipe. The caller resumes it and collects the token with read_token.
pid_t paused_registrant(const std::string& name, const char* point, int fds[2]) {
    REQUIRE(pipe(fds) == 0);
    const pid_t kid = test::fork_child([&] {
        setenv("FABRIC_SHM_PAUSE_POINT", point, 1);
        detail::crash_point_rearm();
        auto p = Pool::open(name);
        const OwnerToken t = p ? p->self() : 0;
        if (write(fds[1], &t, sizeof t) != sizeof t) return 2;
        _exit(p ? 0 : 1);  // no unregister: leaves the slot LIVE for the parent to inspect
    });
    return kid;
}
OwnerToken read_token(int fds[2]) {
    OwnerToken t = 0;
    REQUIRE(read(fds[0], &t, sizeof t) == sizeof t);
    close(fds[0]);
    close(fds[1]);
    return t;
}
}  // namespace

TEST_CASE("registry: a claimant paused before publishing is not judged dead by a previous occupant's fields and keeps its slot") {
    test::TempPool temp("claimwin", 2 << 20);
    Pool& pool = temp.pool;
    // Every free slot looks like the slot of a previous occupant that declared a 1 ms heartbeat
    // timeout and stopped beating long ago: what judging a claimant by its slot's fields would
    // call certainly dead.
    for (uint32_t i = 0; i < layout::kRegistrySlots; ++i) {
        layout::ProcessSlot& s = all_slots(pool)[i];
        if (layout::slot_word_state(s.word.load()) != layout::kSlotFree) continue;
        s.timeout_ns.store(kNsPerMs);
        s.heartbeat_ns.store(1);
    }
    int fds[2];
    const pid_t kid = paused_registrant(temp.name(), "registry.register.claimed", fds);
    REQUIRE(test::wait_stopped(kid));
    auto listed = pool.registry().list(MonoClock::now());
    const ProcessInfo* claimant = find_pid(listed, kid);
    REQUIRE(claimant);
    CHECK(claimant->claiming);
    CHECK(claimant->liveness == Liveness::maybe_alive);
    const OwnerToken claimed = claimant->token;
    // The reaper must not free the slot of a stopped, live claimant.
    CHECK(pool.registry().reap_dead(MonoClock::now() + std::chrono::hours(1)) == 0);
    CHECK(pool.registry().liveness(claimed, MonoClock::now()) == Liveness::maybe_alive);
    test::resume(kid);
    const OwnerToken got = read_token(fds);
    CHECK(test::wait_child(kid) == 0);
    CHECK(got == claimed);  // it published the slot it claimed
    const uint64_t w = test::slot_of(pool, got).word.load();
    CHECK(layout::slot_word_state(w) == layout::kSlotLive);
    CHECK(layout::slot_word_pid(w) == uint32_t(kid));
}

namespace {
/// A process registered in pool `name` and stopped (SIGSTOP) right after; SIGKILLed and
/// waited for at the end of the scope.
struct StoppedRegistrant {
    pid_t pid = -1;
    OwnerToken token = 0;
    explicit StoppedRegistrant(const std::string& name) {
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        pid = test::fork_child([&] {
            auto p = Pool::open(name);
            const OwnerToken t = p ? p->self() : 0;
            if (write(fds[1], &t, sizeof t) != sizeof t) return 2;
            ::raise(SIGSTOP);
            return 0;
        });
        token = read_token(fds);
        REQUIRE(token != 0);
        REQUIRE(test::wait_stopped(pid));
    }
    /// Its slot, with the heartbeat timeout it declared and its last heartbeat set as given.
    layout::ProcessSlot& forge_heartbeat(Pool& pool, uint64_t timeout_ns, uint64_t heartbeat_ns) const {
        layout::ProcessSlot& slot = test::slot_of(pool, token);
        slot.timeout_ns.store(timeout_ns);
        slot.heartbeat_ns.store(heartbeat_ns);
        return slot;
    }
    ~StoppedRegistrant() {
        ::kill(pid, SIGKILL);
        CHECK(test::wait_child(pid) == 128 + SIGKILL);
    }
};
}  // namespace

TEST_CASE("pool rm: a process stopped past its declared heartbeat timeout still counts as attached; removal "
          "without --force is refused naming it") {
    test::TempPool temp("rmstopped", 2 << 20);
    Pool& pool = temp.pool;
    const StoppedRegistrant kid(temp.name());
    (void)kid.forge_heartbeat(pool, kNsPerMs, 1);  // a 1 ms timeout declared, stopped longer
    Status removed = Pool::remove(temp.name(), false);
    CHECK(removed.code() == Errc::busy);
    CHECK(removed.error().message.find(std::to_string(kid.pid)) != std::string::npos);
    CHECK(pool.lifecycle() == "live");
}

TEST_CASE("registry: a heartbeat damaged into the future does not keep its registration alive for ever; the reap "
          "fences it") {
    test::TempPool temp("futurehb", 2 << 20);
    Pool& pool = temp.pool;
    const StoppedRegistrant kid(temp.name());
    // Damaged: an hour ahead.
    layout::ProcessSlot& slot = kid.forge_heartbeat(pool, kNsPerSec, mono_now_ns() + 3600 * kNsPerSec);
    std::string why;
    CHECK(pool.registry().liveness(kid.token, MonoClock::now(), &why) == Liveness::certainly_dead);
    CHECK(why.find("in the future") != std::string::npos);
    CHECK(pool.registry().reap_dead(MonoClock::now()) == 1);
    CHECK(layout::slot_word_state(slot.word.load()) == layout::kSlotFenced);  // its pid runs: fenced, not freed
}

TEST_CASE("registry: a claimant whose slot was taken while it was stopped publishes nowhere near the new owner") {
    test::TempPool temp("claimcas", 2 << 20);
    Pool& pool = temp.pool;
    int fds[2];
    const pid_t kid = paused_registrant(temp.name(), "registry.register.before_publish", fds);
    REQUIRE(test::wait_stopped(kid));
    const auto listed = pool.registry().list(MonoClock::now());
    const ProcessInfo* claimant = find_pid(listed, kid);
    REQUIRE(claimant);
    layout::ProcessSlot& slot = test::slot_of(pool, claimant->token);
    // Forge what a wrong "certainly dead" verdict leads to: the slot retired and re-claimed by
    // another live process (this one) under the next generation.
    uint64_t claiming = slot.word.load();
    REQUIRE(layout::slot_word_state(claiming) == layout::kSlotClaiming);
    const uint64_t usurper = layout::make_slot_word(layout::kSlotLive, layout::slot_word_gen(claiming) + 1,
                                                    uint32_t(getpid()), layout::slot_word_creator_ns(claiming));
    REQUIRE(slot.word.compare_exchange_strong(claiming, usurper));
    slot.start_time.store(self_start_time());  // the new owner's own fields, as its claim writes them
    slot.pidns.store(self_pidns());
    slot.timeout_ns.store(0);
    test::resume(kid);
    const OwnerToken got = read_token(fds);
    CHECK(test::wait_child(kid) == 0);
    // Its publication was a CAS from its own CLAIMING word: it failed, and it registered elsewhere.
    CHECK(slot.word.load() == usurper);
    CHECK(got != 0);
    CHECK(layout::token_slot(got) != layout::token_slot(claimant->token));
    slot.word.store(layout::make_slot_word(layout::kSlotFree, layout::slot_word_gen(usurper) + 1, 0));
}

TEST_CASE("registry: a retired slot names nobody: its per-occupant fields are cleared") {
    test::TempPool temp("retclear", 2 << 20);
    Pool& pool = temp.pool;
    auto cleared = [&](const layout::ProcessSlot& s) {
        CHECK(s.start_time.load() == 0);
        CHECK(s.pidns.load() == 0);
        CHECK(s.heartbeat_ns.load() == 0);
        CHECK(s.timeout_ns.load() == 0);
        CHECK(s.registered_ns.load() == 0);
        CHECK(s.comm[0].load() == 0);
        CHECK(s.retirer.load() == 0);
        for (const auto& a : s.attached) CHECK(a.load() == 0);
    };
    SUBCASE("reaped after a crash") {
        int fds[2];
        REQUIRE(pipe(fds) == 0);
        const pid_t kid = test::fork_child([&] {
            OpenOptions o;
            o.heartbeat_timeout = std::chrono::seconds(5);
            auto p = Pool::open(temp.name(), o);
            const OwnerToken t = p ? p->self() : 0;
            if (write(fds[1], &t, sizeof t) != sizeof t) return 2;
            _exit(0);
        });
        const OwnerToken t = read_token(fds);
        CHECK(test::wait_child(kid) == 0);
        REQUIRE(test::slot_of(pool, t).timeout_ns.load() == 5 * kNsPerSec);
        CHECK(pool.registry().reap_dead(MonoClock::now()) == 1);
        CHECK(layout::slot_word_state(test::slot_of(pool, t).word.load()) == layout::kSlotFree);
        cleared(test::slot_of(pool, t));
    }
    SUBCASE("unregistered on close") {
        OwnerToken t = 0;
        {
            OpenOptions o;
            o.heartbeat_timeout = std::chrono::seconds(5);
            auto second = Pool::open(temp.name(), o);
            REQUIRE(second);
            t = second->self();
        }
        CHECK(layout::slot_word_state(test::slot_of(pool, t).word.load()) == layout::kSlotFree);
        cleared(test::slot_of(pool, t));
    }
}

namespace {
/// A pool in which a dead process's registry slot is held RETIRING by a reaper stopped there:
/// a process that registered and reaped, and stopped after taking the slot into RETIRING
/// (before folding its counters and clearing it). Resumed, the reaper exits 0 when it freed
/// exactly that slot.
struct StoppedRetirement {
    explicit StoppedRetirement(const std::string& tag) : cleanup(test::unique_pool_name(tag)) {
        auto created = Pool::create({cleanup.name(), 2 << 20});
        REQUIRE(created);
        pool.emplace(std::move(*created));
        pid_t dead_kid;
        dead = child_token(cleanup.name(), &dead_kid, false);
        CHECK(test::wait_child(dead_kid) == 0);
        reaper = test::fork_child([name = cleanup.name()] {
            setenv("FABRIC_SHM_PAUSE_POINT", "registry.reap.retiring", 1);
            detail::crash_point_rearm();
            OpenOptions o;
            o.reap_on_open = false;
            auto p = Pool::open(name, o);
            if (!p) return 1;
            return p->registry().reap_dead(MonoClock::now()) == 1 ? 0 : 3;
        });
        REQUIRE(test::wait_stopped(reaper));
        REQUIRE(layout::slot_word_state(slot().word.load()) == layout::kSlotRetiring);
    }
    layout::ProcessSlot& slot() const { return test::slot_of(*pool, dead); }

    test::PoolCleanup cleanup;  ///< declared first: removed after the pool handle is gone
    std::optional<Pool> pool;
    OwnerToken dead = 0;
    pid_t reaper = 0;
};
}  // namespace

TEST_CASE("registry: a reaper paused while retiring a dead process's slot is waited for, and finished for only once it is dead") {
    for (const bool kill_reaper : {false, true}) {
        CAPTURE(kill_reaper);
        StoppedRetirement f("retpause");
        Pool& pool = *f.pool;
        layout::ProcessSlot& slot = f.slot();
        // The retirer lives (stopped): nobody else finishes its work, which could otherwise
        // clear the fields of the slot's next owner after it was freed and claimed again.
        CHECK(pool.registry().reap_dead(MonoClock::now()) == 0);
        CHECK(layout::slot_word_state(slot.word.load()) == layout::kSlotRetiring);
        if (kill_reaper) {
            kill(f.reaper, SIGKILL);
            CHECK(test::wait_child(f.reaper) == 128 + SIGKILL);
            CHECK(pool.registry().reap_dead(MonoClock::now()) >= 1);  // the retirer's own slot too
        } else {
            test::resume(f.reaper);
            CHECK(test::wait_child(f.reaper) == 0);
        }
        CHECK(layout::slot_word_state(slot.word.load()) == layout::kSlotFree);
        CHECK(slot.start_time.load() == 0);
    }
}

TEST_CASE("registry: a RETIRING slot whose retirer's pid names a process started at another time is finished") {
    StoppedRetirement f("retreuse");
    Pool& pool = *f.pool;
    layout::ProcessSlot& slot = f.slot();
    const uint64_t recorded = slot.retirer.load();
    REQUIRE(layout::retirer_pid(recorded) == uint32_t(f.reaper));
    CHECK(pool.registry().reap_dead(MonoClock::now()) == 0);  // it runs (stopped): waited for
    // The retirer died and its pid was taken by an unrelated process, which started at another
    // time: forged by moving the recorded start time instead of recycling the pid.
    slot.retirer.store(layout::retirer_word(uint32_t(f.reaper), layout::retirer_start(recorded) + 1));
    CHECK(pool.registry().reap_dead(MonoClock::now()) >= 1);
    CHECK(layout::slot_word_state(slot.word.load()) == layout::kSlotFree);
    CHECK(slot.retirer.load() == 0);
    kill(f.reaper, SIGKILL);  // never resumed: a live retirer finished for would clear a reused slot
    CHECK(test::wait_child(f.reaper) == 128 + SIGKILL);
}

namespace {
/// The finisher the pause hook lets go once this process took the slot over, and its exit.
pid_t g_stale_finisher = 0;
int g_stale_finisher_exit = -1;
void let_the_stale_finisher_go(const char* name) {
    if (std::string_view(name) != "registry.reap.retiring" || g_stale_finisher == 0) return;
    const pid_t f = std::exchange(g_stale_finisher, 0);
    test::resume(f);
    g_stale_finisher_exit = test::wait_child(f);
}
}  // namespace

TEST_CASE("registry: a finisher that judged a dead retirer and paused cannot take the slot from the process that "
          "reused the retirer's pid and took it over") {
    test::PoolCleanup cleanup(test::unique_pool_name("retabba"));
    auto pool = Pool::create({cleanup.name(), 2 << 20});
    REQUIRE(pool);
    pid_t dead_kid;
    const OwnerToken dead = child_token(cleanup.name(), &dead_kid, false);
    CHECK(test::wait_child(dead_kid) == 0);
    // Its retirer died, and this process now has the retirer's pid: forged as a RETIRING word
    // naming our pid, with a recorded start time that is not ours.
    layout::ProcessSlot& slot = test::slot_of(*pool, dead);
    const uint64_t live = slot.word.load();
    const uint64_t my_start = test::slot_of(*pool, pool->self()).start_time.load();
    REQUIRE(my_start != 0);
    slot.word.store(layout::make_slot_word(layout::kSlotRetiring, layout::slot_word_gen(live), uint32_t(getpid()),
                                           layout::slot_word_creator_ns(live)));
    slot.retirer.store(layout::retirer_word(uint32_t(getpid()), my_start + 1));
    // A finisher judges that retirer dead and stops before its takeover CAS.
    const pid_t finisher = test::fork_child([name = cleanup.name()] {
        OpenOptions o;
        o.reap_on_open = false;
        auto p = Pool::open(name, o);
        if (!p) return 10;
        setenv("FABRIC_SHM_PAUSE_POINT", "registry.reap.retirer_judged", 1);
        detail::crash_point_rearm();
        return int(p->registry().reap_dead(MonoClock::now()));  // slots it freed
    });
    REQUIRE(test::wait_stopped(finisher));
    // We take the slot over and, inside our retirement, let the finisher go on.
    g_stale_finisher = finisher;
    detail::set_pause_hook(&let_the_stale_finisher_go);
    const uint32_t freed = pool->registry().reap_dead(MonoClock::now());
    detail::set_pause_hook(nullptr);
    CHECK(g_stale_finisher == 0);             // the hook ran inside our retirement
    CHECK(g_stale_finisher_exit == 0);        // its CAS failed: the word we took over is not the one it judged
    CHECK(freed == 1);
    CHECK(layout::slot_word_state(slot.word.load()) == layout::kSlotFree);
    CHECK(slot.retirer.load() == 0);
}

// ---- a process judged dead by its heartbeat while it was only paused --------------------------

TEST_CASE("region: a creator paused past its heartbeat timeout keeps its entry; the region created after it is not zeroed") {
    // The creator holds the directory lock, its entry CREATING; its heartbeat goes stale. It is
    // not certainly dead (its pid runs), so nobody steals the lock or frees the entry: when it
    // resumes it zeroes its own extent, not one handed to someone else.
    test::TempPool temp("hbcreate", 16 << 20);
    Pool& pool = temp.pool;
    const pid_t kid = test::fork_child([&] {
        OpenOptions o;
        o.heartbeat_timeout = std::chrono::milliseconds(200);  // judged dead by its heartbeat after 200 ms of silence
        auto p = Pool::open(temp.name(), o);
        if (!p) return 90;
        setenv("FABRIC_SHM_PAUSE_POINT", "region.create.reserved", 1);
        detail::crash_point_rearm();
        RegionSpec s;
        s.name = "c";
        s.length = 64 << 10;
        auto r = p->create_region(s);
        return r ? 0 : 10 + int(r.code());
    });
    REQUIRE(test::wait_stopped(kid));
    Result<Region> d = make_error(Errc::busy, "not yet");
    std::thread other([&] {
        RegionSpec spec;
        spec.name = "d";
        spec.length = 64 << 10;
        d = pool.create_region(spec);
        if (d) std::memset(d->data(), 0xab, d->length());
    });
    timespec ts{0, 400'000'000};
    nanosleep(&ts, nullptr);  // the creator's heartbeat is now twice its declared timeout
    test::resume(kid);
    CHECK(test::wait_child(kid) == 0);  // its create finished: it was never fenced out of its entry
    other.join();
    REQUIRE_MESSAGE(d, d.error().message);
    size_t changed = 0;
    for (uint64_t i = 0; i < d->length(); ++i) changed += d->data()[i] != std::byte{0xab};
    CHECK_MESSAGE(changed == 0, changed << " of " << d->length() << " bytes of region 'd' were overwritten");
    auto c = pool.open_region(RegionKind::test, "c");
    CHECK_MESSAGE(c, c.error().message);
    if (c) CHECK(c->ref().index != d->ref().index);
}

TEST_CASE("registry: a process fenced while paused is told at its next heartbeat and tick") {
    test::TempPool temp("hbfenced", 4 << 20);
    Pool& pool = temp.pool;
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    const pid_t kid = test::fork_child([&] {
        OpenOptions o;
        o.heartbeat_timeout = std::chrono::milliseconds(200);
        auto p = Pool::open(temp.name(), o);
        if (!p) return 90;
        const OwnerToken t = p->self();
        if (write(fds[1], &t, sizeof t) != sizeof t) return 91;
        if (!p->heartbeat()) return 92;  // LIVE: fine
        raise(SIGSTOP);                  // the harness fences it meanwhile
        auto hb = p->heartbeat();
        if (hb || hb.code() != Errc::stale_generation) return 1;
        RenewalManager renewals(*p);
        const TickSummary t2 = renewals.tick(MonoClock::now());
        if (t2.registration || t2.registration.code() != Errc::stale_generation) return 2;
        return 0;
    });
    OwnerToken token = 0;
    REQUIRE(read(fds[0], &token, sizeof token) == sizeof token);
    close(fds[0]);
    close(fds[1]);
    REQUIRE(test::wait_stopped(kid));
    const uint64_t later = mono_now_ns() + 3600 * kNsPerSec;  // its heartbeat is an hour old
    pool.reap(MonoClock::from_ns(later), false, false);
    bool fenced = false;
    for (const ProcessInfo& p : pool.registry().list(MonoClock::from_ns(later))) fenced = fenced || (p.token == token && p.fenced);
    REQUIRE(fenced);
    test::resume(kid);
    CHECK(test::wait_child(kid) == 0);
}

TEST_CASE("registry: a reaper killed between fencing a timed-out process and counting it: the fence is counted when its slot is retired") {
    test::TempPool temp("hbfencekill", 4 << 20);
    Pool& pool = temp.pool;
    const layout::PoolHeader& h = detail::pool_header(pool);
    // The fenced one: stops itself with a short heartbeat timeout, then (resumed) exits, ending
    // its own registration.
    const pid_t fenced = test::fork_child([&] {
        OpenOptions o;
        o.heartbeat_timeout = std::chrono::milliseconds(200);
        auto p = Pool::open(temp.name(), o);
        if (!p) return 90;
        raise(SIGSTOP);
        return 0;
    });
    REQUIRE(test::wait_stopped(fenced));
    timespec ts{0, 300'000'000};
    nanosleep(&ts, nullptr);  // its heartbeat is stale, its pid alive: a reaper fences it
    const uint64_t before = h.registrations_ended.load();
    const pid_t reaper = test::fork_child([&] {
        setenv("FABRIC_SHM_CRASH_POINT", "registry.reap.fenced", 1);  // the open's own reap fences
        detail::crash_point_rearm();
        auto p = Pool::open(temp.name());
        return p ? 0 : 90;
    });
    REQUIRE(test::wait_child(reaper) == 128 + SIGKILL);
    bool is_fenced = false;
    for (const ProcessInfo& p : pool.registry().list(MonoClock::now())) is_fenced = is_fenced || p.fenced;
    REQUIRE(is_fenced);
    CHECK(h.registrations_ended.load() == before);  // the fence went uncounted
    // It resumes and exits: retiring its FENCED slot counts the registration that ended.
    test::resume(fenced);
    REQUIRE(test::wait_child(fenced) == 0);
    CHECK(h.registrations_ended.load() == before + 1);
    // The next open retires the killed reaper's registration (counted too) and, since
    // registrations ended, walks the regions and says so.
    REQUIRE(Pool::open(temp.name()));
    CHECK(h.registrations_ended.load() == before + 2);
    CHECK(h.scanned_through.load() == h.registrations_ended.load());
}

TEST_CASE("registry: a reaper paused after judging a process dead by its heartbeat re-checks it before fencing") {
    test::TempPool temp("hbrejudge", 4 << 20);
    Pool& pool = temp.pool;
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    // The judged process: stops itself, then (resumed) heartbeats and reports whether it is fenced.
    const pid_t judged = test::fork_child([&] {
        OpenOptions o;
        o.heartbeat_timeout = std::chrono::milliseconds(200);
        auto p = Pool::open(temp.name(), o);
        if (!p) return 90;
        const OwnerToken t = p->self();
        if (write(fds[1], &t, sizeof t) != sizeof t) return 91;
        raise(SIGSTOP);
        if (!p->heartbeat()) return 1;  // fenced after it had resumed and heartbeated
        raise(SIGSTOP);                 // the reaper finishes now
        return p->heartbeat() ? 0 : 2;
    });
    OwnerToken token = 0;
    REQUIRE(read(fds[0], &token, sizeof token) == sizeof token);
    close(fds[0]);
    close(fds[1]);
    REQUIRE(test::wait_stopped(judged));
    timespec ts{0, 300'000'000};
    nanosleep(&ts, nullptr);  // its heartbeat is stale
    const pid_t reaper = test::fork_child([&] {
        // Armed before opening: Pool::open itself reaps (and may be the one that judges).
        setenv("FABRIC_SHM_PAUSE_POINT", "registry.reap.judged", 1);
        detail::crash_point_rearm();
        auto p = Pool::open(temp.name());
        if (!p) return 90;
        (void)p->registry().reap_dead(MonoClock::now());
        return 0;
    });
    REQUIRE(test::wait_stopped(reaper));  // judged dead by heartbeat, not yet fenced
    test::resume(judged);                 // it resumes and heartbeats
    REQUIRE(test::wait_stopped(judged));
    test::resume(reaper);
    CHECK(test::wait_child(reaper) == 0);
    bool listed = false;
    for (const ProcessInfo& p : pool.registry().list(MonoClock::now()))
        if (p.token == token) {
            listed = true;
            CHECK_FALSE(p.fenced);
        }
    CHECK(listed);
    test::resume(judged);
    CHECK(test::wait_child(judged) == 0);  // its next heartbeat still finds itself LIVE
}
