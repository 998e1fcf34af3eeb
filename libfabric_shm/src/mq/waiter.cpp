// SPDX-License-Identifier: MIT
// Waiter: a multi-topic wait (one waiter entry per watched consumer, all their futex words in
// one futex_waitv) and its eventfd bridge thread. docs/topics.md, "Waiting on many topics".
#include "fabric_shm/waiter.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "fabric_shm/clock.h"
#include "crash_point.h"
#include "futex.h"
#include "mq/waiting.h"

namespace fabric_shm {

using namespace mq;

namespace {

constexpr uint64_t kRoundNs = 50 * kNsPerMs;  ///< longest sleep before re-registering and re-checking
constexpr uint64_t kStuckNs = 2 * kNsPerMs;   ///< a claim stuck this long: report ready so poll probes it
constexpr uint64_t kNoEntryNapNs = kNsPerMs;         ///< no free waiter entry: re-check this often

/// One watched consumer, as the wait sees it: its topic, its token in that pool, and the
/// partitions with the positions taken when the wait (or arm) began.
struct Watch {
    const Consumer::Impl* owner = nullptr;
    const TopicHandle* topic = nullptr;
    OwnerToken me = 0;
    std::vector<WatchedPartition> parts;
};

void take_watch(const Consumer::Impl* c, Watch& w) {
    w.owner = c;
    w.topic = &consumer_topic(*c);
    w.me = w.topic->pool->self();
    w.parts.clear();
    consumer_watch(*c, w.parts);
}

/// The wait itself: register (one entry per watch, its bit on each watched partition), read
/// the futex words, re-check every partition, sleep on all words and `ctrl` at once; repeat in
/// rounds of at most 50 ms. Registrations are released before it returns. `regs` and `items`
/// are the caller's, reused from wait to wait (the bridge waits again after every arm()).
WaitResult wait_watches(const std::vector<Watch>& watches, std::vector<WaitRegistration>& regs,
                        std::vector<detail::FutexWaitItem>& items, std::atomic<uint32_t>& ctrl, uint32_t ctrl_seen,
                        uint64_t deadline, bool heartbeat) {
    regs.resize(watches.size());
    items.reserve(watches.size() + 1);
    bool was_stuck = false;
    auto done = [&](WaitResult r) {
        for (WaitRegistration& reg : regs) reg.release();
        return r;
    };
    for (;;) {
        bool napping = false;
        for (size_t i = 0; i < watches.size(); ++i) {
            const Watch& w = watches[i];
            if (w.parts.empty()) continue;
            if (regs[i].claimed() && regs[i].still_ours()) continue;
            // Unclaimed, or taken over by a repairer that judged this process dead by its
            // heartbeat while it was paused: claim (again) and set the bits (again).
            regs[i].release();
            if (!regs[i].claim(*w.topic, w.me)) {
                napping = true;
                continue;
            }
            for (const WatchedPartition& p : w.parts) regs[i].watch(p.index);
        }
        FABRIC_PAUSE_POINT("mq.wait.registered");
        items.clear();
        for (const WaitRegistration& reg : regs)
            if (reg.claimed()) items.push_back(detail::FutexWaitItem{&reg.word(), reg.load_seq(), true});
        items.push_back(detail::FutexWaitItem{&ctrl, ctrl_seen, false});
        // The re-check (seq_cst loads) after the bits were set: see WaitRegistration::watch.
        bool stuck = false;
        for (const Watch& w : watches)
            for (const WatchedPartition& p : w.parts) {
                const SlotReadiness r = slot_readiness(*p.pv, p.pos);
                if (r == SlotReadiness::ready) return done(WaitResult::ready);
                stuck |= r == SlotReadiness::stuck;
            }
        // A claim that stays in the way for a whole stuck round: let poll probe its owner.
        if (stuck && was_stuck) return done(WaitResult::ready);
        was_stuck = stuck;
        const uint64_t now = mono_now_ns();
        if (now >= deadline) return done(WaitResult::timeout);
        uint64_t slice = std::min(deadline - now, stuck ? kStuckNs : kRoundNs);
        if (napping) slice = std::min(slice, kNoEntryNapNs);
        const detail::FutexWaitStatus st = detail::futex_wait_any(items, slice);
        if (st == detail::FutexWaitStatus::interrupted) return done(WaitResult::interrupted);
        if (ctrl.load(std::memory_order_acquire) != ctrl_seen) return done(WaitResult::interrupted);  // pairs with the bump
        if (heartbeat) {
            const Pool* last = nullptr;
            for (const Watch& w : watches)
                if (w.topic->pool != last) {
                    last = w.topic->pool;
                    // A fenced process learns it from its next send, poll or tick (this
                    // wait has no error channel of its own).
                    (void)last->heartbeat();
                }
        }
    }
}

}  // namespace

std::string_view wait_result_name(WaitResult result) noexcept {
    switch (result) {
        case WaitResult::ready: return "ready";
        case WaitResult::timeout: return "timeout";
        case WaitResult::interrupted: return "interrupted";
    }
    return "unknown";
}

struct Waiter::Impl {
    std::vector<const Consumer::Impl*> consumers;
    std::vector<Watch> watches;         ///< wait()'s snapshot, reused
    std::vector<WaitRegistration> regs;  ///< wait()'s registrations (released between waits)
    std::vector<detail::FutexWaitItem> items;  ///< wait()'s futex words, reused
    std::atomic<uint32_t> ctrl{0};       ///< private futex word: interrupt() bumps it
    std::atomic<bool> interrupted{false};

    // The eventfd bridge. `mu` guards the snapshot and the flags; bridge_ctrl (a private futex
    // word in the bridge's wait) is bumped after each change so the bridge thread notices.
    int efd = -1;
    std::thread bridge;
    std::mutex mu;
    std::condition_variable taken;  ///< the bridge took up generation `gen`
    std::vector<Watch> snapshot;
    /// arm()'s next snapshot, built outside `mu` and swapped with `snapshot`: both keep their
    /// capacity, so arming again and again (WorkerLoop's wait_fd, each time it goes idle) allocates nothing.
    std::vector<Watch> arming;
    uint64_t gen = 0, seen_gen = 0;
    bool armed = false, stop = false;
    std::atomic<uint32_t> bridge_ctrl{0};

    void poke_bridge() {
        bridge_ctrl.fetch_add(1, std::memory_order_release);  // pairs with the bridge's acquire load
        detail::futex_wake_private(bridge_ctrl, INT32_MAX);
    }
    void bridge_main();
    ~Impl() {
        if (bridge.joinable()) {
            {
                std::lock_guard<std::mutex> lk(mu);
                stop = true;
            }
            poke_bridge();
            bridge.join();
        }
        if (efd >= 0) ::close(efd);
    }
};

void Waiter::Impl::bridge_main() {
    std::vector<Watch> snap;  // copy-assigned from `snapshot`: its vectors keep their capacity
    std::vector<WaitRegistration> bregs;
    std::vector<detail::FutexWaitItem> bitems;
    for (;;) {
        const uint32_t c = bridge_ctrl.load(std::memory_order_acquire);  // before reading the state: a later bump wakes us
        bool is_armed;
        uint64_t my_gen;
        {
            std::lock_guard<std::mutex> lk(mu);
            if (stop) break;
            if (seen_gen != gen) {
                snap = snapshot;
                seen_gen = gen;
                taken.notify_all();
            }
            is_armed = armed;
            my_gen = seen_gen;
        }
        if (!is_armed) {
            const detail::FutexWaitItem idle{&bridge_ctrl, c, false};
            (void)detail::futex_wait_any(std::span<const detail::FutexWaitItem>(&idle, 1), 0);
            continue;
        }
        // No deadline: the bridge runs until it finds data, or is poked (arm, remove, close).
        if (wait_watches(snap, bregs, bitems, bridge_ctrl, c, UINT64_MAX, false) != WaitResult::ready) continue;
        std::lock_guard<std::mutex> lk(mu);
        if (armed && gen == my_gen) {
            armed = false;
            const uint64_t one = 1;
            (void)!::write(efd, &one, sizeof one);  // cannot fail: the counter is far from overflowing
        }
    }
}

Waiter::Waiter() : impl_(std::make_unique<Impl>()) {}
Waiter::Waiter(Waiter&&) noexcept = default;
Waiter& Waiter::operator=(Waiter&&) noexcept = default;
Waiter::~Waiter() = default;

size_t Waiter::size() const { return impl_->consumers.size(); }

Status Waiter::add(Consumer& consumer) {
    Impl& im = *impl_;
    const Consumer::Impl* c = consumer.impl_.get();
    if (std::find(im.consumers.begin(), im.consumers.end(), c) != im.consumers.end())
        return make_error(Errc::invalid_argument, "this consumer of topic '" + consumer_topic(*c).name +
                                                      "' is already watched by this waiter");
    if (im.consumers.size() >= kMaxConsumers)
        return make_error(Errc::capacity_exceeded, "a waiter watches at most " + std::to_string(kMaxConsumers) +
                                                       " consumers (futex_waitv's limit); use a second waiter "
                                                       "on another thread");
    im.consumers.push_back(c);
    return {};
}

Status Waiter::remove(Consumer& consumer) {
    Impl& im = *impl_;
    const Consumer::Impl* c = consumer.impl_.get();
    auto it = std::find(im.consumers.begin(), im.consumers.end(), c);
    if (it == im.consumers.end())
        return make_error(Errc::not_found, "this consumer of topic '" + consumer_topic(*c).name +
                                               "' is not watched by this waiter");
    im.consumers.erase(it);
    if (im.bridge.joinable()) {
        // The bridge may be sleeping on this consumer's topic with bits set in it: hand it a
        // snapshot without the consumer and wait until it has let go of the old one.
        std::unique_lock<std::mutex> lk(im.mu);
        std::erase_if(im.snapshot, [&](const Watch& w) { return w.owner == c; });
        const uint64_t want = ++im.gen;
        lk.unlock();
        im.poke_bridge();
        lk.lock();
        im.taken.wait(lk, [&] { return im.seen_gen >= want || im.stop; });
    }
    return {};
}

Result<WaitResult> Waiter::wait(Duration timeout) {
    const uint64_t timeout_ns = to_ns(timeout);
    Impl& im = *impl_;
    const uint32_t seen = im.ctrl.load(std::memory_order_acquire);  // pairs with interrupt()'s bump
    if (im.interrupted.exchange(false, std::memory_order_acq_rel)) return WaitResult::interrupted;
    im.watches.resize(im.consumers.size());
    for (size_t i = 0; i < im.consumers.size(); ++i) take_watch(im.consumers[i], im.watches[i]);
    const uint64_t now = mono_now_ns();
    const uint64_t deadline = timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + timeout_ns;
    const WaitResult r = wait_watches(im.watches, im.regs, im.items, im.ctrl, seen, deadline, true);
    if (r == WaitResult::interrupted) im.interrupted.store(false, std::memory_order_relaxed);  // consumed
    return r;
}

void Waiter::interrupt() noexcept {
    Impl& im = *impl_;
    im.interrupted.store(true, std::memory_order_release);
    im.ctrl.fetch_add(1, std::memory_order_release);  // pairs with wait()'s acquire loads
    detail::futex_wake_private(im.ctrl, INT32_MAX);
}

Result<int> Waiter::fd() {
    Impl& im = *impl_;
    if (im.efd >= 0) return im.efd;
    const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return errno_error(errno, "eventfd for a waiter");
    im.efd = fd;
    try {
        im.bridge = std::thread([p = &im] { p->bridge_main(); });
    } catch (const std::system_error& e) {
        ::close(fd);
        im.efd = -1;
        return make_error(Errc::io_error, std::string("starting the waiter's bridge thread: ") + e.what());
    }
    return fd;
}

Status Waiter::arm() {
    Impl& im = *impl_;
    if (im.efd < 0) return make_error(Errc::invalid_argument, "Waiter::arm before Waiter::fd: no file descriptor to arm");
    uint64_t drained = 0;
    (void)!::read(im.efd, &drained, sizeof drained);  // EAGAIN when not readable: fine
    im.arming.resize(im.consumers.size());
    for (size_t i = 0; i < im.consumers.size(); ++i) take_watch(im.consumers[i], im.arming[i]);
    {
        std::lock_guard<std::mutex> lk(im.mu);
        im.snapshot.swap(im.arming);
        ++im.gen;
        im.armed = true;
    }
    im.poke_bridge();
    return {};
}

}  // namespace fabric_shm
