// SPDX-License-Identifier: MIT
#include "fabric_shm/clock.h"

#include "clock_read.h"

#include <time.h>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <limits>

namespace fabric_shm {

using detail::read_clock;

uint64_t mono_now_ns() noexcept { return read_clock(CLOCK_MONOTONIC); }
uint64_t mono_coarse_ns() noexcept { return read_clock(CLOCK_MONOTONIC_COARSE); }
uint64_t wall_now_ns() noexcept { return read_clock(CLOCK_REALTIME); }

MonoClock::time_point MonoClock::now() noexcept { return from_ns(read_clock(CLOCK_MONOTONIC)); }
MonoClock::time_point MonoClock::coarse_now() noexcept { return from_ns(read_clock(CLOCK_MONOTONIC_COARSE)); }

uint64_t mono_to_wall_ns(uint64_t mono_ns) noexcept {
    const uint64_t mono = mono_now_ns();
    const uint64_t wall = wall_now_ns();
    if (mono_ns >= mono) return wall + (mono_ns - mono);
    const uint64_t back = mono - mono_ns;
    return back > wall ? 0 : wall - back;
}

const SystemClock& SystemClock::instance() noexcept {
    static const SystemClock clock;
    return clock;
}

namespace {
struct Unit {
    const char* suffix;
    uint64_t ns;
};
constexpr Unit kDurationUnits[] = {{"ns", 1},           {"us", kNsPerUs},          {"ms", kNsPerMs},
                                   {"s", kNsPerSec},     {"m", 60 * kNsPerSec},     {"h", 3600 * kNsPerSec},
                                   {"d", 86400 * kNsPerSec}};
}  // namespace

Result<uint64_t> parse_duration_ns(std::string_view text) {
    const std::string quoted = "'" + std::string(text) + "'";
    if (text.empty()) return make_error(Errc::invalid_argument, "empty duration; expected e.g. 500ms, 30s, 5m, 1h");
    size_t digits = 0;
    while (digits < text.size() && (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.')) ++digits;
    if (digits == 0)
        return make_error(Errc::invalid_argument,
                          "invalid duration " + quoted + ": expected a number followed by ns, us, ms, s, m, h or d");
    const std::string_view number = text.substr(0, digits);
    const std::string_view suffix = text.substr(digits);
    uint64_t unit = 0;
    if (suffix.empty()) unit = kNsPerSec;
    for (const Unit& u : kDurationUnits)
        if (suffix == u.suffix) unit = u.ns;
    if (unit == 0)
        return make_error(Errc::invalid_argument, "invalid duration " + quoted + ": unknown unit '" + std::string(suffix) +
                                                      "' (use ns, us, ms, s, m, h or d)");
    double value = 0;
    auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
    if (ec != std::errc() || ptr != number.data() + number.size() || value < 0)
        return make_error(Errc::invalid_argument, "invalid duration " + quoted + ": not a number");
    const double ns = value * double(unit);
    if (ns >= double(std::numeric_limits<uint64_t>::max() / 2))
        return make_error(Errc::invalid_argument, "duration " + quoted + " is too long (limit ~292 years)");
    return uint64_t(ns);
}

std::string format_duration_ns(uint64_t ns) {
    char buf[64];
    if (ns < kNsPerUs) std::snprintf(buf, sizeof buf, "%lluns", (unsigned long long)ns);
    else if (ns < kNsPerMs) std::snprintf(buf, sizeof buf, "%.1fus", double(ns) / double(kNsPerUs));
    else if (ns < kNsPerSec) std::snprintf(buf, sizeof buf, "%.1fms", double(ns) / double(kNsPerMs));
    else if (ns < 60 * kNsPerSec) std::snprintf(buf, sizeof buf, "%.1fs", double(ns) / double(kNsPerSec));
    else {
        uint64_t s = ns / kNsPerSec;
        const uint64_t d = s / 86400, h = (s % 86400) / 3600, m = (s % 3600) / 60;
        s %= 60;
        if (d) std::snprintf(buf, sizeof buf, "%llud%lluh", (unsigned long long)d, (unsigned long long)h);
        else if (h) std::snprintf(buf, sizeof buf, "%lluh%llum", (unsigned long long)h, (unsigned long long)m);
        else std::snprintf(buf, sizeof buf, "%llum%llus", (unsigned long long)m, (unsigned long long)s);
    }
    return buf;
}

Result<uint64_t> parse_size_bytes(std::string_view text) {
    const std::string quoted = "'" + std::string(text) + "'";
    size_t digits = 0;
    while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
    if (digits == 0) return make_error(Errc::invalid_argument, "invalid size " + quoted + ": expected e.g. 4096, 512K, 64M, 1G");
    uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, value);
    if (ec != std::errc()) return make_error(Errc::invalid_argument, "invalid size " + quoted + ": number out of range");
    std::string_view suffix = text.substr(digits);
    if (!suffix.empty() && (suffix.back() == 'B' || suffix.back() == 'b')) suffix.remove_suffix(1);
    if (suffix.size() == 2 && suffix[1] == 'i') suffix.remove_suffix(1);
    int shift = 0;
    if (suffix.empty()) shift = 0;
    else if (suffix == "K" || suffix == "k") shift = 10;
    else if (suffix == "M" || suffix == "m") shift = 20;
    else if (suffix == "G" || suffix == "g") shift = 30;
    else if (suffix == "T" || suffix == "t") shift = 40;
    else return make_error(Errc::invalid_argument, "invalid size " + quoted + ": unknown unit (use K, M, G or T)");
    if (shift && value > (std::numeric_limits<uint64_t>::max() >> shift))
        return make_error(Errc::invalid_argument, "size " + quoted + " is too large");
    return value << shift;
}

std::string format_bytes(uint64_t bytes) {
    char buf[48];
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = double(bytes);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    if (u == 0) std::snprintf(buf, sizeof buf, "%llu B", (unsigned long long)bytes);
    else std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
    return buf;
}

std::string format_wall_ns(uint64_t wall_ns) {
    const time_t secs = time_t(wall_ns / kNsPerSec);
    tm t{};
    gmtime_r(&secs, &t);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03lluZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                  t.tm_hour, t.tm_min, t.tm_sec, (unsigned long long)((wall_ns % kNsPerSec) / kNsPerMs));
    return buf;
}

}  // namespace fabric_shm
