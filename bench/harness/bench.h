// SPDX-License-Identifier: MIT
// The benchmark harness shared by every fabric-shm-bench scenario: timing, CPU time,
// machine description, results with latency percentiles, JSON and text reports, and the
// scenario registry. Scenarios live in bench/scenario_*.cpp and register themselves.
#pragma once

#include <time.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "histogram.h"

namespace fabric_shm::bench {

inline uint64_t now_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

/// Keeps the compiler from deleting a computation whose result is otherwise unused.
template <class T>
inline void do_not_optimize(const T& value) {
    asm volatile("" : : "r,m"(value) : "memory");
}

/// User + system CPU time of this process (getrusage), in ns.
uint64_t process_cpu_ns();

/// Median cost of one now_ns() call, measured; reported so per-op latencies can be read
/// with the timer's own cost in mind.
uint64_t timer_overhead_ns();

/// nproc, CPU model (/proc/cpuinfo), kernel, page size, memory.
nlohmann::json machine_json();

/// One measured series: `ops` operations in `seconds` of wall time, a latency histogram of
/// the individually timed operations (may be empty when only batches were timed), and the
/// CPU time the process spent.
struct Measurement {
    std::string name;
    uint64_t ops = 0;
    double seconds = 0;
    uint64_t cpu_ns = 0;
    Histogram latency;
    uint64_t bytes_per_op = 0;   ///< for bandwidth (0: not a byte-moving operation)
    nlohmann::json extra = nlohmann::json::object();

    nlohmann::json to_json() const;
};

/// Times `ops` calls of fn (each timed individually into the histogram) after `warmup`
/// untimed calls. fn receives the iteration index.
Measurement measure(const std::string& name, uint64_t warmup, uint64_t ops, const std::function<void(uint64_t)>& fn);
/// Like measure() but times batches of `batch` calls only (for operations shorter than the
/// timer); the histogram holds per-op averages of each batch.
Measurement measure_batched(const std::string& name, uint64_t warmup, uint64_t ops, uint64_t batch,
                            const std::function<void(uint64_t)>& fn);

class Report {
public:
    Report(std::string scenario, nlohmann::json config);
    void add(Measurement m);
    void note(const std::string& text) { notes_.push_back(text); }
    nlohmann::json to_json() const;
    std::string to_text() const;
    nlohmann::json& config() { return config_; }

private:
    std::string scenario_;
    nlohmann::json config_;
    std::vector<Measurement> results_;
    std::vector<std::string> notes_;
    uint64_t started_wall_ns_;
};

/// What a scenario gets: its parsed options, and the report to fill.
struct Context {
    const cxxopts::ParseResult& options;
    Report& report;
    bool quick;  ///< --quick: small sizes and counts (a smoke run, not for numbers)
};

struct Scenario {
    std::string name;
    std::string summary;
    std::function<void(cxxopts::Options&)> add_options;  ///< may be empty
    /// Returns 0 on success; on failure prints the reason to stderr and returns 1.
    std::function<int(Context&)> run;
};
std::vector<Scenario>& scenarios();
/// For `static const bool registered = register_scenario({...});` in a scenario file.
bool register_scenario(Scenario scenario);

/// "4K" / "16M" / "1024" -> bytes; "1e3" / "1000" -> count. Exit with a usage error on bad input.
std::vector<uint64_t> parse_size_list(const std::string& text);
std::vector<uint64_t> parse_count_list(const std::string& text);
std::string human_bytes(uint64_t bytes);

/// Removes the named pool (if any) when the scenario leaves, also on an early return.
struct PoolGuard {
    std::string name;
    ~PoolGuard();
};

}  // namespace fabric_shm::bench
