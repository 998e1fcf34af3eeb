// SPDX-License-Identifier: MIT
// When a spin-wait offers its core away. A spinning consumer must not hold a core that the
// producer it waits for needs (processes outnumber cores: on 2 vCPUs with other load a pure
// busy-poll held that core, light-load notify p50 1.4-2.1 ms against 22-24 us yielding;
// docs/benchmarks.md). But sched_yield() is a system call (about a microsecond on the 2-vCPU
// VM), and a message that lands during one waits it out: yielding once per 64 empty polls put
// about 45 % of an idle spinner's time in the call, and the bare ring spinning that way showed
// light-load p50 555-607 ns against 350-400 ns never yielding (docs/benchmarks.md "Light
// load"). So the rate adapts to what the yields find: one that returns at once (nobody else
// wanted the core) halves the rate, down to one per kRoundsPerYieldIdle polls (~1 % of the
// time in the call); one that took long (someone else ran) brings back one per
// kRoundsPerYieldContended at once. Process-local state; the idle path only.
#pragma once

#include <sched.h>

#include <algorithm>
#include <cstdint>

#include "fabric_shm/clock.h"
#include "private.h"

namespace fabric_shm::detail {

class SpinYield {
public:
    static constexpr uint32_t kRoundsBeforeYield = 256;         ///< empty polls of one wait before any yield
    static constexpr uint32_t kRoundsPerYieldContended = 64;    ///< after a yield that gave the core away
    static constexpr uint32_t kRoundsPerYieldIdle = 4096;       ///< the rarest, while yields find the core idle
    /// A yield longer than this ran someone else: an uncontended one is a system call of about a
    /// microsecond here, a switch to another process and back several.
    static constexpr uint64_t kGaveCoreNs = 5 * kNsPerUs;
    static_assert((kRoundsPerYieldContended & (kRoundsPerYieldContended - 1)) == 0 &&
                      (kRoundsPerYieldIdle & (kRoundsPerYieldIdle - 1)) == 0,
                  "due() tests the round number with a mask");

    /// Whether empty round `spins` of a wait should yield rather than PAUSE.
    bool due(uint32_t spins) const noexcept { return spins >= kRoundsBeforeYield && (spins & (every_ - 1)) == 0; }

    /// Yields, and adapts the rate to how long the yield took.
    void yield() noexcept {
        const uint64_t before = mono_now_ns();
        sched_yield();
        yielded(mono_now_ns() - before);
    }

    /// The adaptation alone (tests feed it durations).
    void yielded(uint64_t took_ns) noexcept {
        every_ = took_ns > kGaveCoreNs ? kRoundsPerYieldContended : std::min(every_ * 2, kRoundsPerYieldIdle);
    }

    /// Empty polls per yield now.
    uint32_t every() const noexcept { return every_; }

private:
    uint32_t every_ = kRoundsPerYieldContended;
};

}  // namespace fabric_shm::detail
