// SPDX-License-Identifier: MIT
// When a spin-wait offers its core away. A spinning consumer must not hold a core that the
// producer it waits for needs (processes outnumber cores: on 2 vCPUs with other load a pure
// busy-poll held that core, light-load notify p50 1.4-2.1 ms against 22-24 us yielding;
// docs/benchmarks.md). But sched_yield() is a system call (about a microsecond on the 2-vCPU
// VM), and a message that lands during one waits it out: yielding once per 64 empty polls put
// about 45 % of an idle spinner's time in the call, and the bare ring spinning that way showed
// light-load p50 555-607 ns against 350-400 ns never yielding (docs/benchmarks.md "Light
// load"). So the rate adapts to whether anyone else wants the core: after each yield the
// thread's count of involuntary context switches (getrusage RUSAGE_THREAD) says whether it
// was switched out since the last look, by this yield or by a preemption. No switch: nobody
// else was runnable here, halve the rate, down to one per kRoundsPerYieldIdle polls (about 2 %
// of the time in the two calls). A switch: one per kRoundsPerYieldContended at once. The
// count, not the yield's duration: a partner that itself yields back at once (a producer
// waiting for its send time) makes a contended yield as short as an idle one. Process-local
// state; the idle path only.
#pragma once

#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdint>

#include "private.h"

namespace fabric_shm::detail {

class SpinYield {
public:
    static constexpr uint32_t kRoundsBeforeYield = 256;         ///< empty polls of one wait before any yield
    static constexpr uint32_t kRoundsPerYieldContended = 64;    ///< after a yield that gave the core away
    static constexpr uint32_t kRoundsPerYieldIdle = 4096;       ///< the rarest, while nobody else wants the core
    static_assert((kRoundsPerYieldContended & (kRoundsPerYieldContended - 1)) == 0 &&
                      (kRoundsPerYieldIdle & (kRoundsPerYieldIdle - 1)) == 0,
                  "due() tests the round number with a mask");

    /// Whether empty round `spins` of a wait should yield rather than PAUSE.
    bool due(uint32_t spins) const noexcept { return spins >= kRoundsBeforeYield && (spins & (every_ - 1)) == 0; }

    /// Yields, and adapts the rate to whether this thread was switched out since the last yield.
    void yield() noexcept {
        sched_yield();
        rusage ru{};
        if (getrusage(RUSAGE_THREAD, &ru) != 0) return;  // cannot fail for RUSAGE_THREAD; keep the rate if it does
        const uint64_t switches = uint64_t(ru.ru_nivcsw);
        yielded(switches != involuntary_switches_);
        involuntary_switches_ = switches;
    }

    /// The adaptation alone (tests feed it outcomes).
    void yielded(bool switched_out) noexcept {
        every_ = switched_out ? kRoundsPerYieldContended : std::min(every_ * 2, kRoundsPerYieldIdle);
    }

    /// Empty polls per yield now.
    uint32_t every() const noexcept { return every_; }

private:
    uint32_t every_ = kRoundsPerYieldContended;
    uint64_t involuntary_switches_ = UINT64_MAX;  ///< at the last yield; the first yield counts as contended
};

}  // namespace fabric_shm::detail
