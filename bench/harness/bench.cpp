// SPDX-License-Identifier: MIT
#include "bench.h"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "fabric_shm/clock.h"
#include "fabric_shm/pool.h"

namespace fabric_shm::bench {

uint64_t process_cpu_ns() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto ns = [](const timeval& tv) { return uint64_t(tv.tv_sec) * 1'000'000'000ull + uint64_t(tv.tv_usec) * 1000ull; };
    return ns(ru.ru_utime) + ns(ru.ru_stime);
}

uint64_t timer_overhead_ns() {
    std::vector<uint64_t> d(1001);
    for (auto& x : d) {
        const uint64_t a = now_ns();
        const uint64_t b = now_ns();
        x = b - a;
    }
    std::nth_element(d.begin(), d.begin() + 500, d.end());
    return d[500];
}

nlohmann::json machine_json() {
    nlohmann::json m;
    m["nproc"] = sysconf(_SC_NPROCESSORS_ONLN);
    std::ifstream cpu("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpu, line)) {
        if (line.rfind("model name", 0) == 0) {
            const size_t colon = line.find(':');
            if (colon != std::string::npos) m["cpu_model"] = line.substr(line.find_first_not_of(" \t", colon + 1));
            break;
        }
    }
    utsname u{};
    if (uname(&u) == 0) m["kernel"] = std::string(u.sysname) + " " + u.release + " " + u.machine;
    m["page_size"] = sysconf(_SC_PAGESIZE);
    m["memory_bytes"] = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
    // Other processes' load skews every number: record it with the results.
    std::ifstream load("/proc/loadavg");
    std::string loadavg;
    if (std::getline(load, loadavg)) m["loadavg"] = loadavg;
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0) m["hostname"] = host;
    return m;
}

nlohmann::json Measurement::to_json() const {
    nlohmann::json j;
    j["name"] = name;
    j["ops"] = ops;
    j["seconds"] = seconds;
    j["throughput_ops_s"] = seconds > 0 ? double(ops) / seconds : 0.0;
    j["cpu_ns_per_op"] = ops ? double(cpu_ns) / double(ops) : 0.0;
    if (bytes_per_op) {
        j["bytes_per_op"] = bytes_per_op;
        j["bandwidth_gb_s"] = seconds > 0 ? double(ops) * double(bytes_per_op) / seconds / 1e9 : 0.0;
    }
    if (latency.count()) {
        j["latency_ns"] = {{"samples", latency.count()},   {"min", latency.min()},
                           {"mean", latency.mean()},        {"p50", latency.percentile(50)},
                           {"p90", latency.percentile(90)}, {"p99", latency.percentile(99)},
                           {"p99_9", latency.percentile(99.9)}, {"max", latency.max()}};
        // Points of the latency CDF (percentile, ns) for plots.
        nlohmann::json cdf = nlohmann::json::array();
        for (double p : {0.1, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99,
                         100.0})
            cdf.push_back({p, latency.percentile(p)});
        j["latency_cdf_ns"] = cdf;
    }
    for (const auto& [k, v] : extra.items()) j[k] = v;
    return j;
}

Measurement measure(const std::string& name, uint64_t warmup, uint64_t ops, const std::function<void(uint64_t)>& fn) {
    for (uint64_t i = 0; i < warmup; ++i) fn(i);
    Measurement m;
    m.name = name;
    m.ops = ops;
    const uint64_t cpu0 = process_cpu_ns();
    const uint64_t t0 = now_ns();
    uint64_t prev = t0;
    for (uint64_t i = 0; i < ops; ++i) {
        fn(i);
        const uint64_t t = now_ns();
        m.latency.record(t - prev);
        prev = t;
    }
    m.seconds = double(prev - t0) / 1e9;
    m.cpu_ns = process_cpu_ns() - cpu0;
    return m;
}

Measurement measure_batched(const std::string& name, uint64_t warmup, uint64_t ops, uint64_t batch,
                            const std::function<void(uint64_t)>& fn) {
    for (uint64_t i = 0; i < warmup; ++i) fn(i);
    batch = std::max<uint64_t>(1, batch);
    Measurement m;
    m.name = name;
    const uint64_t cpu0 = process_cpu_ns();
    const uint64_t t0 = now_ns();
    uint64_t prev = t0, done = 0;
    while (done < ops) {
        const uint64_t n = std::min(batch, ops - done);
        for (uint64_t i = 0; i < n; ++i) fn(done + i);
        const uint64_t t = now_ns();
        m.latency.record((t - prev) / n);
        prev = t;
        done += n;
    }
    m.ops = done;
    m.seconds = double(prev - t0) / 1e9;
    m.cpu_ns = process_cpu_ns() - cpu0;
    m.extra["timed_in_batches_of"] = batch;
    return m;
}

Report::Report(std::string scenario, nlohmann::json config)
    : scenario_(std::move(scenario)), config_(std::move(config)), started_wall_ns_(wall_now_ns()) {}

void Report::add(Measurement m) {
    std::fprintf(stderr, "  %-48s %10.0f ops/s  p50 %6llu ns  p99 %7llu ns\n", m.name.c_str(),
                 m.seconds > 0 ? double(m.ops) / m.seconds : 0.0, (unsigned long long)m.latency.percentile(50),
                 (unsigned long long)m.latency.percentile(99));
    results_.push_back(std::move(m));
}

nlohmann::json Report::to_json() const {
    nlohmann::json j;
    j["benchmark"] = "fabric-shm-bench";
    j["scenario"] = scenario_;
    j["started"] = format_wall_ns(started_wall_ns_);
    j["config"] = config_;
    j["machine"] = machine_json();
    j["timer_overhead_ns"] = timer_overhead_ns();
    nlohmann::json rs = nlohmann::json::array();
    for (const auto& m : results_) rs.push_back(m.to_json());
    j["results"] = rs;
    j["notes"] = notes_;
    return j;
}

namespace {
std::string fmt(const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return buf;
}
std::string ns_text(uint64_t ns) {
    if (ns < 10'000) return std::to_string(ns) + " ns";
    if (ns < 10'000'000) return fmt("%.1f us", double(ns) / 1e3);
    return fmt("%.1f ms", double(ns) / 1e6);
}
}  // namespace

std::string Report::to_text() const {
    const nlohmann::json m = machine_json();
    std::string t = "scenario " + scenario_ + " on " + std::to_string(m["nproc"].get<long>()) + " x " +
                    m.value("cpu_model", std::string("?")) + " (" + m.value("kernel", std::string("?")) +
                    "), loadavg " + m.value("loadavg", std::string("?")) + "\n";
    t += "config " + config_.dump() + "\n";
    std::vector<std::vector<std::string>> rows = {
        {"name", "ops", "ops/s", "p50", "p90", "p99", "p99.9", "max", "cpu/op", "GB/s"}};
    for (const auto& r : results_) {
        const bool lat = r.latency.count() > 0;
        rows.push_back({r.name, std::to_string(r.ops), fmt("%.0f", r.seconds > 0 ? double(r.ops) / r.seconds : 0.0),
                        lat ? ns_text(r.latency.percentile(50)) : "-", lat ? ns_text(r.latency.percentile(90)) : "-",
                        lat ? ns_text(r.latency.percentile(99)) : "-", lat ? ns_text(r.latency.percentile(99.9)) : "-",
                        lat ? ns_text(r.latency.max()) : "-", ns_text(r.ops ? r.cpu_ns / r.ops : 0),
                        r.bytes_per_op && r.seconds > 0
                            ? fmt("%.2f", double(r.ops) * double(r.bytes_per_op) / r.seconds / 1e9)
                            : "-"});
    }
    std::vector<size_t> w(rows[0].size(), 0);
    for (const auto& row : rows)
        for (size_t i = 0; i < row.size(); ++i) w[i] = std::max(w[i], row[i].size());
    for (const auto& row : rows) {
        std::string line;
        for (size_t i = 0; i < row.size(); ++i) {
            std::string cell = row[i];
            if (i == 0)
                line += cell + std::string(w[i] - cell.size() + 2, ' ');
            else
                line += std::string(w[i] - cell.size(), ' ') + cell + "  ";
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        t += line + "\n";
    }
    for (const auto& n : notes_) t += "note: " + n + "\n";
    return t;
}

std::vector<Scenario>& scenarios() {
    static std::vector<Scenario> all;
    return all;
}

bool register_scenario(Scenario scenario) {
    scenarios().push_back(std::move(scenario));
    return true;
}

namespace {
[[noreturn]] void bad_list(const std::string& text, const char* what) {
    std::fprintf(stderr, "fabric-shm-bench: usage error: '%s' is not a comma-separated list of %s\n", text.c_str(), what);
    std::exit(2);
}
}  // namespace

std::vector<uint64_t> parse_size_list(const std::string& text) {
    std::vector<uint64_t> out;
    size_t pos = 0;
    while (pos <= text.size()) {
        const size_t comma = text.find(',', pos);
        const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        auto v = parse_size_bytes(item);
        if (!v || *v == 0) bad_list(text, "sizes (4K, 1M, 4096)");
        out.push_back(*v);
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return out;
}

std::vector<uint64_t> parse_count_list(const std::string& text) {
    std::vector<uint64_t> out;
    size_t pos = 0;
    while (pos <= text.size()) {
        const size_t comma = text.find(',', pos);
        const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        char* end = nullptr;
        const double v = std::strtod(item.c_str(), &end);
        if (item.empty() || *end != '\0' || !(v >= 1) || v > 1e9 || v != std::floor(v))
            bad_list(text, "counts (1000, 1e6)");
        out.push_back(uint64_t(v));
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return out;
}

std::string human_bytes(uint64_t bytes) {
    if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + "MiB";
    if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + "KiB";
    return std::to_string(bytes) + "B";
}

PoolGuard::~PoolGuard() {
    if (!name.empty()) (void)Pool::remove(name, true);
}

}  // namespace fabric_shm::bench
