// SPDX-License-Identifier: MIT
// When a spin-wait offers its core away. A spinning consumer must not hold a core that the
// producer it waits for needs (processes outnumber cores: on 2 vCPUs with other load a pure
// busy-poll held that core, light-load notify p50 1.4-2.1 ms against 22-24 us yielding;
// docs/benchmarks.md). But sched_yield() is a system call (about 1.4 us on the 2-vCPU VM), and
// a message that lands during one waits it out: yielding once per 64 empty polls put about
// 45 % of an idle spinner's time in the call, and the bare ring spinning that way showed
// light-load p50 555-607 ns against 350-400 ns never yielding (docs/benchmarks.md "Light
// load"). So how often depends on whether anyone else wants the core. After each yield the
// thread's count of involuntary context switches (getrusage RUSAGE_THREAD; Linux counts a
// yield that switches to another task as involuntary, the yielder being still runnable) says
// whether it was switched out since the previous look. If it was, the core is contended:
// yield once per kRoundsPerYieldContended empty polls, and look again only every
// kJudgeEveryContended-th yield. If not: once per kIdleYieldIntervalNs of
// spinning (about 4 % of the time in the two calls), so that a producer that becomes runnable
// on this core later waits at most that long before the next yield lets it in and makes the
// rate contended. The count, not the yield's duration: a partner that yields straight back
// makes a contended yield as short as an idle one. Rounds and time since the last yield carry
// over from one wait to the next, so a consumer polling with short timeouts yields as often as
// one polling with a long one; a wait's first kRoundsBeforeYield rounds never yield (a
// hand-off under load lands within them). Process-local state; the idle path only.
#pragma once

#include <sched.h>
#include <sys/resource.h>

#include <cstdint>

#include "private.h"

namespace fabric_shm::detail {

class SpinYield {
public:
    static constexpr uint32_t kRoundsBeforeYield = 256;        ///< empty polls of one wait before any yield
    static constexpr uint32_t kRoundsPerYieldContended = 64;   ///< while the core is contended
    static constexpr uint64_t kIdleYieldIntervalNs = 50'000;   ///< while nobody else wants it
    /// While contended, the switch count is read at every kJudgeEveryContended-th yield only:
    /// `getrusage` costs about as much as the yield (1.2 us here), and on a core shared with
    /// the producer every yield's cost is hand-off latency (light-load p90 24-38 us with a read
    /// per yield against 18 us without, both processes on one vCPU).
    static constexpr uint32_t kJudgeEveryContended = 4;

    /// Whether empty round `spins` of the current wait (counted from 1) should yield rather
    /// than PAUSE. `now_ns`: a monotonic reading at most a few microseconds old.
    bool due(uint32_t spins, uint64_t now_ns) noexcept {
        ++rounds_since_yield_;
        if (spins < kRoundsBeforeYield) return false;
        return contended_ ? rounds_since_yield_ >= kRoundsPerYieldContended
                          : now_ns - last_yield_ns_ >= kIdleYieldIntervalNs;
    }

    /// Yields, then judges from the involuntary switches whether the core is contended.
    void yield(uint64_t now_ns) noexcept {
        sched_yield();
        after_yield(now_ns, [] {
            rusage ru{};
            (void)getrusage(RUSAGE_THREAD, &ru);  // cannot fail for RUSAGE_THREAD
            return uint64_t(ru.ru_nivcsw);
        });
    }

    /// What follows a yield; `switches()` reads the thread's involuntary context switches
    /// (tests pass a counter of their own).
    template <class ReadSwitches>
    void after_yield(uint64_t now_ns, ReadSwitches&& switches) noexcept {
        if (contended_ && ++contended_yields_ % kJudgeEveryContended != 0)
            return yielded(true, now_ns);  // contended until the next look, which counts the switches since the last
        const uint64_t n = switches();
        yielded(n != involuntary_switches_, now_ns);
        involuntary_switches_ = n;
    }

    /// The judgement alone (tests feed it outcomes).
    void yielded(bool switched_out, uint64_t now_ns) noexcept {
        contended_ = switched_out;
        last_yield_ns_ = now_ns;
        rounds_since_yield_ = 0;
    }

    bool contended() const noexcept { return contended_; }

private:
    bool contended_ = true;  ///< until the first yield says otherwise
    uint64_t rounds_since_yield_ = 0;
    uint64_t last_yield_ns_ = 0;
    uint64_t involuntary_switches_ = UINT64_MAX;  ///< at the last judgement; the first yield counts as contended
    uint32_t contended_yields_ = 0;               ///< yields while contended, for kJudgeEveryContended
};

}  // namespace fabric_shm::detail
