// SPDX-License-Identifier: MIT
// Waiting for messages: a send wakes only the waiters of its partition (no syscall when nobody
// waits there); a Waiter waits on several topics at once, is interruptible and bridges to an
// eventfd; a waiter killed while registered is repaired (reaper hook, or the producers
// themselves); a paused one is never judged dead.
#include <doctest/doctest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <thread>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/waiter.h"
#include "futex.h"
#include "mq/topic_layout.h"
#include "mq_test_util.h"
#include "region_kinds.h"
#include "spin_yield.h"

using namespace fabric_shm;
using namespace mqtest;

namespace {

Consumer open_observer(const Pool& pool, const char* topic, std::initializer_list<uint32_t> parts,
                       uint64_t spin_ns = 0) {
    ConsumerOptions o;
    o.spin = ns_duration(spin_ns);  // park at once
    auto c = Consumer::open(pool, topic, "", o);
    REQUIRE(c.ok());
    const std::vector<uint32_t> v(parts);
    REQUIRE(c->assign(v).ok());
    return std::move(c.value());
}

Result<SendResult> send_to(Producer& p, uint32_t partition, std::string_view value) {
    return p.send_to(partition, {bytes(value), {}, {}});
}

/// Polls `pred` until it holds (true) or timeout_ms passes: parked waiters wake every 50 ms to
/// re-check and re-register, so a transient look at their bits may fall between two rounds.
template <typename Pred>
bool eventually(Pred pred, int timeout_ms = 5000) {
    const uint64_t end = mono_now_ns() + uint64_t(timeout_ms) * kNsPerMs;
    while (mono_now_ns() < end) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return false;
}

/// The topic's waiter table and one partition's waiter bits (forging and inspecting).
mq::WaiterSlot* waiter_table(const Pool& pool, const char* topic) {
    auto r = pool.open_region(RegionKind::topic, topic);
    REQUIRE(r.ok());
    return reinterpret_cast<mq::WaiterSlot*>(r->data() + mq::kWaitersOffset);
}

/// A consumer child that parks on partition 0 and stops itself at mq.wait.registered (its bit
/// set); after SIGCONT it expects the message "hello" and exits 0 when it got it.
pid_t parked_child(const std::string& pool_name) {
    return test::fork_child([pool_name]() -> int {
        auto pool = Pool::open(pool_name);
        if (!pool) return 90;
        ConsumerOptions o;
        o.spin = Duration::zero();
        auto c = Consumer::open(*pool, "t", "", o);
        const uint32_t p0[] = {0};
        if (!c || !c->assign(p0).ok()) return 91;
        ::setenv("FABRIC_SHM_PAUSE_POINT", "mq.wait.registered", 1);
        detail::crash_point_rearm();
        MessageBatch b;
        const uint64_t end = mono_now_ns() + 10 * kNsPerSec;
        while (mono_now_ns() < end) {
            auto n = c->poll(b, 4, std::chrono::milliseconds(100));
            if (!n) return 92;
            for (const Message& m : b)
                if (m.value_str() == "hello") return 0;
        }
        return 93;
    });
}

}  // namespace

TEST_CASE("wake: a send to a partition nobody waits on makes no futex call while a consumer is parked on another") {
    TestPool tp("wakeiso");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 64, OnFull::overwrite)).ok());
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod.ok());
    Consumer cons = open_observer(tp.pool, "t", {1});
    std::atomic<pid_t> tid{0};
    std::string got;
    std::thread waiter([&] {
        tid = this_tid();
        MessageBatch b;
        auto n = cons.poll(b, 4, std::chrono::seconds(20));
        REQUIRE(n.ok());
        if (*n) got = std::string(b[0].value_str());
    });
    while (!tid.load()) std::this_thread::yield();
    REQUIRE(wait_in_futex(getpid(), tid.load()));
    auto* p1 = partition_header(tp.pool, "t", 1);
    CHECK(eventually([&] { return p1->waiters.load() != 0; }));  // the parked consumer's bit, on its partition only
    CHECK(partition_header(tp.pool, "t", 0)->waiters.load() == 0);
    const uint64_t calls = detail::futex_wake_calls();
    for (int i = 0; i < 1000; ++i) REQUIRE(send_to(*prod, 0, "elsewhere").ok());
    CHECK(detail::futex_wake_calls() - calls == 0);
    // A send to its own partition wakes it: one wake call, which found it asleep (it re-parks
    // every 50 ms: catch it asleep again right before the send).
    const uint64_t woken = detail::futex_woken();
    REQUIRE(wait_in_futex(getpid(), tid.load()));
    REQUIRE(send_to(*prod, 1, "mine").ok());
    waiter.join();
    CHECK(got == "mine");
    CHECK(detail::futex_wake_calls() - calls == 1);
    CHECK(detail::futex_woken() - woken == 1);
    // Awake again: its bit is gone, so sends to partition 1 cost nothing either.
    CHECK(p1->waiters.load() == 0);
    REQUIRE(send_to(*prod, 1, "later").ok());
    CHECK(detail::futex_wake_calls() - calls == 1);
}

TEST_CASE("wake: every consumer parked on a partition is woken by a send to it") {
    TestPool tp("wakeall");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64, OnFull::overwrite)).ok());
    auto prod = Producer::open(tp.pool, "t");
    Consumer a = open_observer(tp.pool, "t", {0});
    Consumer b = open_observer(tp.pool, "t", {0});
    std::atomic<pid_t> ta{0}, tb{0};
    std::atomic<int> got{0};
    auto run = [&](Consumer& c, std::atomic<pid_t>& tid) {
        tid = this_tid();
        MessageBatch batch;
        auto n = c.poll(batch, 4, std::chrono::seconds(20));
        if (n.ok() && *n == 1 && batch[0].value_str() == "both") got.fetch_add(1);
    };
    std::thread t1(run, std::ref(a), std::ref(ta));
    std::thread t2(run, std::ref(b), std::ref(tb));
    while (!ta.load() || !tb.load()) std::this_thread::yield();
    REQUIRE(wait_in_futex(getpid(), ta.load()));
    REQUIRE(wait_in_futex(getpid(), tb.load()));
    auto* p0 = partition_header(tp.pool, "t", 0);
    CHECK(eventually([&] { return std::popcount(p0->waiters.load()) == 2; }));  // one entry each
    REQUIRE(prod->send("both").ok());
    t1.join();
    t2.join();
    CHECK(got.load() == 2);
}

namespace {
void wait_on_two_topics(bool fallback) {
    CAPTURE(fallback);
    detail::futex_force_fallback(fallback);
    TestPool tp("waitmany");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("a", config(2, 64, OnFull::overwrite)).ok());
    REQUIRE(mgr.create("b", config(1, 64, OnFull::overwrite)).ok());
    Consumer ca = open_observer(tp.pool, "a", {0, 1});
    Consumer cb = open_observer(tp.pool, "b", {0});
    Waiter w;
    REQUIRE(w.add(ca).ok());
    REQUIRE(w.add(cb).ok());
    CHECK(w.add(cb).code() == Errc::invalid_argument);
    CHECK(w.size() == 2);
    auto r0 = w.wait(Duration::zero());
    REQUIRE(r0.ok());
    CHECK(*r0 == WaitResult::timeout);  // nothing yet, and timeout 0 never sleeps

    std::atomic<pid_t> tid{0};
    Result<WaitResult> r = make_error(Errc::ok, "");
    std::thread t([&] {
        tid = this_tid();
        r = w.wait(std::chrono::seconds(20));
    });
    while (!tid.load()) std::this_thread::yield();
    REQUIRE(wait_in_futex(getpid(), tid.load()));
    auto pb = Producer::open(tp.pool, "b");
    REQUIRE(pb->send("to b").ok());
    t.join();
    REQUIRE(r.ok());
    CHECK(*r == WaitResult::ready);
    if (!fallback) {
        // futex_waitv exists when an empty call says EINVAL, not ENOSYS (valgrind 3.19 and
        // kernels before 5.16 say ENOSYS; the wait then used the sliced fallback).
        const bool kernel_has_waitv = syscall(SYS_futex_waitv, nullptr, 0, 0, nullptr, 0) == -1 && errno == EINVAL;
        CHECK(detail::futex_waitv_in_use() == kernel_has_waitv);
    }
    MessageBatch batch;
    auto n = cb.poll(batch, 4, Duration::zero());
    REQUIRE(n.ok());
    CHECK(*n == 1);
    // Registrations end with the wait: no bit is left behind on either topic.
    for (const char* topic : {"a", "b"})
        for (uint32_t p = 0; p < (topic[0] == 'a' ? 2u : 1u); ++p)
            CHECK(partition_header(tp.pool, topic, p)->waiters.load() == 0);
    // Data already there: ready at once.
    auto pa = Producer::open(tp.pool, "a");
    REQUIRE(send_to(*pa, 1, "to a").ok());
    auto r2 = w.wait(std::chrono::seconds(20));
    REQUIRE(r2.ok());
    CHECK(*r2 == WaitResult::ready);
    CHECK(w.remove(ca).ok());
    CHECK(w.remove(ca).code() == Errc::not_found);
    detail::futex_force_fallback(false);
}
}  // namespace

TEST_CASE("waiter: one thread waits on two topics at once; a send to either makes it ready") {
    SUBCASE("futex_waitv") { wait_on_two_topics(false); }
    SUBCASE("kernels before 5.16 (sliced FUTEX_WAIT)") { wait_on_two_topics(true); }
}

namespace {
void on_usr1(int) {}
}  // namespace

TEST_CASE("waiter: interrupt() ends a wait at once, or the next one; a signal handler ends it too") {
    TestPool tp("waitintr");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64, OnFull::overwrite)).ok());
    Consumer c = open_observer(tp.pool, "t", {0});
    Waiter w;
    REQUIRE(w.add(c).ok());

    w.interrupt();  // before the wait: the next wait returns at once
    auto r = w.wait(std::chrono::seconds(20));
    REQUIRE(r.ok());
    CHECK(*r == WaitResult::interrupted);

    std::atomic<pid_t> tid{0};
    std::thread t([&] {
        tid = this_tid();
        r = w.wait(std::chrono::seconds(20));
    });
    while (!tid.load()) std::this_thread::yield();
    REQUIRE(wait_in_futex(getpid(), tid.load()));
    w.interrupt();
    t.join();
    REQUIRE(r.ok());
    CHECK(*r == WaitResult::interrupted);

    // A signal whose handler does not ask for SA_RESTART (Python's do not): EINTR -> interrupted,
    // so a binding can run its signal checks (Ctrl-C) and wait again.
    struct sigaction sa {}, old {};
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
    tid = 0;
    pthread_t handle{};
    std::thread t2([&] {
        handle = pthread_self();
        tid = this_tid();
        r = w.wait(std::chrono::seconds(20));
    });
    while (!tid.load()) std::this_thread::yield();
    REQUIRE(wait_in_futex(getpid(), tid.load()));
    pthread_kill(handle, SIGUSR1);
    t2.join();
    sigaction(SIGUSR1, &old, nullptr);
    REQUIRE(r.ok());
    CHECK(*r == WaitResult::interrupted);
}

namespace {
/// Whether `fd` is readable within `ms` milliseconds.
bool fd_readable(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}
}  // namespace

TEST_CASE("waiter fd: readable once armed and a watched partition has data; arm clears it") {
    TestPool tp("waitfd");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("a", config(1, 64, OnFull::overwrite)).ok());
    REQUIRE(mgr.create("b", config(1, 64, OnFull::overwrite)).ok());
    Consumer ca = open_observer(tp.pool, "a", {0});
    Consumer cb = open_observer(tp.pool, "b", {0});
    auto pb = Producer::open(tp.pool, "b");
    Waiter w;
    CHECK(w.arm().code() == Errc::invalid_argument);
    REQUIRE(w.add(ca).ok());
    REQUIRE(w.add(cb).ok());
    auto fd = w.fd();
    REQUIRE(fd.ok());
    auto readable = [&](int ms) { return fd_readable(*fd, ms); };
    REQUIRE(w.arm().ok());
    CHECK_FALSE(readable(20));
    REQUIRE(pb->send("one").ok());
    CHECK(readable(10000));
    CHECK(readable(0));  // stays readable until the next arm
    MessageBatch batch;
    auto n = cb.poll(batch, 8, Duration::zero());
    REQUIRE(n.ok());
    CHECK(*n == 1);
    REQUIRE(w.arm().ok());
    CHECK_FALSE(readable(20));
    // Data that arrives before arm (not yet polled) makes the fd readable right after arm.
    REQUIRE(pb->send("two").ok());
    REQUIRE(w.arm().ok());
    CHECK(readable(10000));
    // Removing a consumer takes it out of the bridge's watch at once.
    REQUIRE(w.remove(cb).ok());
    n = cb.poll(batch, 8, Duration::zero());
    REQUIRE(w.arm().ok());
    REQUIRE(pb->send("three").ok());
    CHECK_FALSE(readable(50));
}

TEST_CASE("waiter fd and parked poll: a paused partition is not waited for; resumed, it is") {
    TestPool tp("waitpause");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("a", config(2, 64, OnFull::overwrite)).ok());
    Consumer c = open_observer(tp.pool, "a", {0, 1});
    auto prod = Producer::open(tp.pool, "a");
    REQUIRE(c.pause(1).ok());
    Waiter w;
    REQUIRE(w.add(c).ok());
    auto fd = w.fd();
    REQUIRE(fd.ok());
    auto readable = [&](int ms) { return fd_readable(*fd, ms); };
    REQUIRE(w.arm().ok());
    REQUIRE(prod->send_to(1, OutgoingMessage{ByteView("to the paused one"), {}, {}}).ok());
    CHECK_FALSE(readable(50));
    // A parked poll neither returns it nor stops waiting for it (bounded: the timeout).
    MessageBatch batch;
    const uint64_t t0 = mono_now_ns();
    CHECK(c.poll(batch, 8, std::chrono::milliseconds(40)).value() == 0);
    CHECK(mono_now_ns() - t0 >= 35 * kNsPerMs);
    // A send to the partition still read wakes both.
    REQUIRE(w.arm().ok());
    REQUIRE(prod->send_to(0, OutgoingMessage{ByteView("to the read one"), {}, {}}).ok());
    CHECK(readable(10000));
    REQUIRE(c.poll(batch, 8, Duration::zero()).value() == 1);
    CHECK(batch[0].partition == 0);
    // Resumed: the message already there makes the fd readable right after arm.
    REQUIRE(c.resume(1).ok());
    REQUIRE(w.arm().ok());
    CHECK(readable(10000));
    REQUIRE(c.poll(batch, 8, Duration::zero()).value() == 1);
    CHECK(batch[0].value_str() == "to the paused one");
}

TEST_CASE("dead waiter: a consumer killed while parked leaves its bit; the reaper hook clears it and frees the entry") {
    TestPool tp("deadwait");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64, OnFull::overwrite)).ok());
    const pid_t kid = parked_child(tp.cleanup.name());
    REQUIRE(test::wait_stopped(kid));
    auto* p0 = partition_header(tp.pool, "t", 0);
    const uint64_t bits = p0->waiters.load();
    REQUIRE(std::popcount(bits) == 1);
    const uint32_t entry = uint32_t(std::countr_zero(bits));
    mq::WaiterSlot* table = waiter_table(tp.pool, "t");
    CHECK(mq::waiter_state(table[entry].word.load()) == mq::kWaiterLive);
    kill(kid, SIGKILL);
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    ReapReport rep = tp.pool.reap(MonoClock::now());
    CHECK(rep.kind_items >= 1);
    CHECK(p0->waiters.load() == 0);
    CHECK(mq::waiter_state(table[entry].word.load()) == mq::kWaiterFree);
    auto prod = Producer::open(tp.pool, "t");
    const uint64_t calls = detail::futex_wake_calls();
    for (int i = 0; i < 100; ++i) REQUIRE(prod->send("x").ok());
    CHECK(detail::futex_wake_calls() - calls == 0);
}

TEST_CASE("dead waiter: a damaged partition ref in the topic does not make the reaper clear a bit of another "
          "topic's partition") {
    TestPool tp("deadwaitref");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64, OnFull::overwrite)).ok());
    REQUIRE(mgr.create("u", config(1, 64, OnFull::overwrite)).ok());
    const pid_t kid = parked_child(tp.cleanup.name());
    REQUIRE(test::wait_stopped(kid));
    const uint64_t bits = partition_header(tp.pool, "t", 0)->waiters.load();
    REQUIRE(std::popcount(bits) == 1);
    // Topic u's partition has a waiter of its own at the same entry number; t's ref to its
    // partition 0 is damaged to name u's.
    auto* u0 = partition_header(tp.pool, "u", 0);
    u0->waiters.store(bits);
    auto t_root = tp.pool.open_region(RegionKind::topic, "t");
    auto u_part = tp.pool.open_region(RegionKind::partition, "u.0");
    REQUIRE(t_root.ok());
    REQUIRE(u_part.ok());
    auto* t_header = reinterpret_cast<mq::TopicHeader*>(t_root->data());
    t_header->partition_refs[0] = u_part->ref().packed();
    SUBCASE("the ref alone") {}
    SUBCASE("and the topic's incarnation, so that u's partition header matches t's in every field") {
        t_header->incarnation = u0->incarnation;
        auto opened = Consumer::open(tp.pool, "t", "");
        CHECK_FALSE(opened.ok());  // not REQUIRE: the stopped child is killed below either way
        if (!opened.ok()) CHECK(opened.error().message.find("not a partition of this topic") != std::string::npos);
    }
    kill(kid, SIGKILL);
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    (void)tp.pool.reap(MonoClock::now());
    CHECK(u0->waiters.load() == bits);  // u's waiter is not t's to clear
}

TEST_CASE("dead waiter: without a reaper, producers repair it themselves after one wake that found nobody") {
    TestPool tp("deadwait2");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64, OnFull::overwrite)).ok());
    const pid_t kid = parked_child(tp.cleanup.name());
    REQUIRE(test::wait_stopped(kid));
    auto* p0 = partition_header(tp.pool, "t", 0);
    REQUIRE(p0->waiters.load() != 0);
    kill(kid, SIGKILL);
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    auto prod = Producer::open(tp.pool, "t");
    const uint64_t calls = detail::futex_wake_calls();
    for (int i = 0; i < 1000; ++i) REQUIRE(prod->send("x").ok());
    CHECK(detail::futex_wake_calls() - calls == 1);
    CHECK(p0->waiters.load() == 0);
}

TEST_CASE("paused waiter: a consumer stopped while registered is not judged dead and gets what was sent meanwhile") {
    TestPool tp("pausewait");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64, OnFull::overwrite)).ok());
    const pid_t kid = parked_child(tp.cleanup.name());
    REQUIRE(test::wait_stopped(kid));
    auto* p0 = partition_header(tp.pool, "t", 0);
    const uint64_t bits = p0->waiters.load();
    REQUIRE(bits != 0);
    bool found = false;
    for (const ProcessInfo& pi : tp.pool.registry().list(MonoClock::now()))
        if (pi.pid == uint32_t(kid)) {
            found = true;
            CHECK(pi.liveness == Liveness::maybe_alive);
        }
    CHECK(found);
    tp.pool.reap(MonoClock::now());
    CHECK(p0->waiters.load() == bits);  // neither the reaper...
    auto prod = Producer::open(tp.pool, "t");
    for (int i = 0; i < 20; ++i) REQUIRE(prod->send("noise").ok());
    CHECK(p0->waiters.load() == bits);  // ...nor a producer's probe takes a live waiter's entry
    REQUIRE(prod->send("hello").ok());
    test::resume(kid);
    CHECK(test::wait_child(kid) == 0);
    CHECK(p0->waiters.load() == 0);
}

TEST_CASE("waiter table full: a consumer that finds no free entry naps and still gets its message") {
    TestPool tp("waitfull");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 64, OnFull::overwrite)).ok());
    mq::WaiterSlot* table = waiter_table(tp.pool, "t");
    for (uint32_t i = 0; i < mq::kMaxWaiters; ++i)  // every entry taken by this (live) process
        table[i].word.store(mq::make_waiter_word(mq::kWaiterLive, 0, tp.pool.self()));
    Consumer c = open_observer(tp.pool, "t", {0});
    std::string got;
    std::atomic<pid_t> tid{0};
    std::thread t([&] {
        tid = this_tid();
        MessageBatch b;
        auto n = c.poll(b, 4, std::chrono::seconds(20));
        if (n.ok() && *n) got = std::string(b[0].value_str());
    });
    while (!tid.load()) std::this_thread::yield();
    REQUIRE(wait_in_syscall(getpid(), tid.load(), {SYS_clock_nanosleep}));  // napping
    auto prod = Producer::open(tp.pool, "t");
    REQUIRE(prod->send("found").ok());
    t.join();
    CHECK(got == "found");
    CHECK(partition_header(tp.pool, "t", 0)->waiters.load() == 0);
    for (uint32_t i = 0; i < mq::kMaxWaiters; ++i) table[i].word.store(0);
}

TEST_CASE("spin wait: a contended core gets a yield every 64 empty polls, an idle one every 50 us, and short waits are no exception") {
    using detail::SpinYield;
    constexpr uint64_t kRoundNs = 20;  // a PAUSE round, about
    SpinYield y;
    uint64_t now = 1'000'000;
    // Spins through waits of `rounds` empty polls each; returns the yields, judged as `switched`.
    auto spin = [&](int waits, uint32_t rounds, bool switched) {
        int yields = 0;
        for (int w = 0; w < waits; ++w)
            for (uint32_t spins = 1; spins <= rounds; ++spins, now += kRoundNs)
                if (y.due(spins, now)) {
                    y.yielded(switched, now);
                    ++yields;
                }
        return yields;
    };
    // No wait yields in its first 256 polls, contended or not.
    CHECK(spin(100, SpinYield::kRoundsBeforeYield - 1, true) == 0);
    // Contended (the state before any yield): a long wait yields every 64 polls after its 256th.
    CHECK(spin(1, 256 + 64 * 10, true) == 11);
    // Idle: once the yields find nobody else, one per 50 us of spinning (2,500 rounds here)...
    CHECK(spin(1, 256 + 100'000, false) == 41);
    CHECK_FALSE(y.contended());
    // ...and as many when the spinning is cut into short waits (a consumer polling with short
    // timeouts): the rounds and the time since the last yield carry over.
    const int short_waits = spin(400, 300 + 256, false);  // 400 waits of 556 rounds: 4.4 ms of spinning
    CHECK(short_waits >= 80);
    CHECK(short_waits <= 90);
    // One yield that finds the thread switched out makes the rate contended again at once.
    y.yielded(true, now);
    CHECK(y.contended());
    CHECK(spin(1, 256 + 64 * 4, true) == 5);
}

TEST_CASE("spin wait: while contended the switch count is read at every fourth yield only, and a quiet core is noticed then") {
    using detail::SpinYield;
    SpinYield y;
    uint64_t switches = 100, reads = 0;
    auto read = [&] {
        ++reads;
        return switches;
    };
    // Contended from the start: three yields without a read, the fourth reads (the first read
    // ever counts as a switch).
    for (int i = 0; i < 3; ++i) y.after_yield(1000, read);
    CHECK(reads == 0);
    y.after_yield(1000, read);
    CHECK(reads == 1);
    CHECK(y.contended());
    // Someone else keeps running here: still contended at the next reads.
    switches += 5;
    for (int i = 0; i < 4; ++i) y.after_yield(2000, read);
    CHECK(reads == 2);
    CHECK(y.contended());
    // Nobody else runs any more: the next read finds no new switch, and the core is idle.
    for (int i = 0; i < 4; ++i) y.after_yield(3000, read);
    CHECK(reads == 3);
    CHECK_FALSE(y.contended());
    // Idle, every yield reads: the first switch seen makes it contended again.
    y.after_yield(4000, read);
    CHECK(reads == 4);
    CHECK_FALSE(y.contended());
    ++switches;
    y.after_yield(5000, read);
    CHECK(reads == 5);
    CHECK(y.contended());
}

TEST_CASE("topic layout: a topic whose fingerprint is another build's is refused; check flags bad waiter entries") {
    TestPool tp("fingerprint");
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(1, 8)).ok());
    auto root = tp.pool.open_region(RegionKind::topic, "t");
    REQUIRE(root.ok());
    auto* hdr = reinterpret_cast<mq::TopicHeader*>(root->data());
    auto* table = reinterpret_cast<mq::WaiterSlot*>(root->data() + mq::kWaitersOffset);
    const RegionKindOps* ops = region_kind_ops(uint32_t(RegionKind::topic));
    REQUIRE(ops);
    RegionInfo info;
    for (const RegionInfo& r : tp.pool.regions())
        if (r.kind == uint32_t(RegionKind::topic)) info = r;
    std::vector<std::string> violations, in_progress;
    table[3].word.store(uint64_t(3) << 62);
    ops->check(tp.pool, info, violations, in_progress);
    REQUIRE(violations.size() == 1);
    CHECK(violations[0].find("waiter entry 3: state 3") != std::string::npos);
    table[3].word.store(0);

    hdr->layout_fingerprint ^= 1;
    auto p = Producer::open(tp.pool, "t");
    CHECK(p.code() == Errc::version_mismatch);
    CHECK(p.error().message.find("fingerprint") != std::string::npos);
    CHECK(Consumer::open(tp.pool, "t", "").code() == Errc::version_mismatch);
    hdr->layout_fingerprint ^= 1;
    CHECK(Producer::open(tp.pool, "t").ok());
}
