// SPDX-License-Identifier: MIT
// The one system-wide clock for leases and heartbeats, wall time for display, durations.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "fabric_shm/result.h"

namespace fabric_shm {

/// A duration in the API: std::chrono::nanoseconds. Anything that converts to it without loss
/// (std::chrono::seconds, 250ms, ...) is accepted; a bare integer is not, because its unit
/// would be a guess (the recipe's `tick(unix_seconds)` compiled and meant something else).
using Duration = std::chrono::nanoseconds;

/// CLOCK_MONOTONIC as a std::chrono clock: the clock of lease deadlines, heartbeats and
/// timeouts. Its instants (MonoTime) are a type of their own, so wall-clock or unix-epoch
/// numbers cannot be passed where a monotonic instant is meant.
struct MonoClock {
    using rep = int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<MonoClock>;
    static constexpr bool is_steady = true;
    /// CLOCK_MONOTONIC (mono_now_ns()).
    static time_point now() noexcept;
    /// CLOCK_MONOTONIC_COARSE (mono_coarse_ns()): for fail-closed lease checks on hot paths.
    static time_point coarse_now() noexcept;
    /// The instant `ns` nanoseconds after the clock's epoch (as mono_now_ns() counts).
    static constexpr time_point from_ns(uint64_t ns) noexcept {
        return time_point(duration(ns > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(ns)));
    }
};
/// A monotonic instant (CLOCK_MONOTONIC).
using MonoTime = MonoClock::time_point;

/// Nanoseconds since the monotonic epoch, the unit of every monotonic field in the pool.
constexpr uint64_t to_ns(MonoTime t) noexcept {
    const int64_t n = t.time_since_epoch().count();
    return n < 0 ? 0 : uint64_t(n);
}
/// A duration in nanoseconds; negative durations count as zero (a timeout already over).
constexpr uint64_t to_ns(Duration d) noexcept { return d.count() < 0 ? 0 : uint64_t(d.count()); }
/// A duration of `ns` nanoseconds (saturating at the largest Duration).
constexpr Duration ns_duration(uint64_t ns) noexcept {
    return Duration(ns > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(ns));
}

/// CLOCK_MONOTONIC in ns: identical in every process on the host (outside time namespaces),
/// never jumps. Lease deadlines, heartbeats and timeouts are in this clock.
/// It does not advance during system suspend: leases count awake time only.
uint64_t mono_now_ns() noexcept;
/// CLOCK_MONOTONIC_COARSE (~4 ms resolution, no vDSO fence): for fail-closed lease checks
/// on hot paths, where a few ms of slack are irrelevant next to TTLs of seconds.
uint64_t mono_coarse_ns() noexcept;
/// CLOCK_REALTIME in ns since the epoch: message timestamps and display only.
uint64_t wall_now_ns() noexcept;
/// Converts a monotonic instant into wall time (now-relative; for display).
uint64_t mono_to_wall_ns(uint64_t mono_ns) noexcept;

/// Injectable clock for deterministic tests of schedules (RenewalManager, liveness).
class Clock {
public:
    virtual ~Clock() = default;
    virtual uint64_t now_ns() const noexcept = 0;
    MonoTime now() const noexcept { return MonoClock::from_ns(now_ns()); }
};
class SystemClock final : public Clock {
public:
    uint64_t now_ns() const noexcept override { return mono_now_ns(); }
    static const SystemClock& instance() noexcept;
};
class ManualClock final : public Clock {
public:
    explicit ManualClock(uint64_t start_ns = 1'000'000'000) : now_(start_ns) {}
    uint64_t now_ns() const noexcept override { return now_; }
    void set(uint64_t ns) noexcept { now_ = ns; }
    void advance(uint64_t ns) noexcept { now_ += ns; }

private:
    uint64_t now_;
};

constexpr uint64_t kNsPerUs = 1'000;
constexpr uint64_t kNsPerMs = 1'000'000;
constexpr uint64_t kNsPerSec = 1'000'000'000;

/// Parses "250ns", "10us", "500ms", "30s", "5m", "1h", "2d" (a bare number is seconds).
/// Errors name the text and the accepted units; overflow past ~292 years is refused.
Result<uint64_t> parse_duration_ns(std::string_view text);
/// "1h2m", "4.2s", "350ms" — compact, for tools.
std::string format_duration_ns(uint64_t ns);
/// Parses "64M", "1G", "4096", "512K" (binary multiples) into bytes.
Result<uint64_t> parse_size_bytes(std::string_view text);
std::string format_bytes(uint64_t bytes);
/// ISO-8601 UTC with milliseconds, for wall-clock ns.
std::string format_wall_ns(uint64_t wall_ns);

}  // namespace fabric_shm
