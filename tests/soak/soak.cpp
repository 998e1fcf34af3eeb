// SPDX-License-Identifier: MIT
// Soak: a churn run at a steady object count for a configurable time, sampling the
// pool from the inside and every process's private anonymous memory, and requiring both to
// stay flat after a warm-up.
//
// Processes:
//  - churners: this executable re-executed with --child-churn. Over a fixed key set they
//    put (copy or loan + commit), overwrite, remove, get and pin objects ("churn" bucket), and
//    overwrite + notify a smaller set ("events" bucket, never removed) on the topic;
//  - workers: the real fabric-shm-worker (--builtin crc32) consuming the topic as one group
//    and writing one result per event key (so results are overwritten, not accumulated).
//
// Samples (every --sample-ms): heap used bytes, objects, largest free extent, free
// superblocks and the table's overflow counts (the store has no tombstones: removals clear
// their slot; overflow counts are what a removal leaves behind, docs/store.md), the pool's
// region count and bytes, and "Anonymous:" of /proc/PID/smaps_rollup for every process
// (shared pool pages are not anonymous: total RSS grows as they are first touched, which is
// not a leak). Flatness is judged on the samples after the warm-up; see docs/reliability.md.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "../e2e/e2e_support.h"
#include "../support/test_support.h"
#include "../torture/torture_support.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/worker_loop.h"

using namespace fabric_shm;
namespace fs = std::filesystem;

namespace {

constexpr const char* kTopic = "soak-events";
constexpr const char* kGroup = "soak";

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

std::span<const uint8_t> bytes_of(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

/// Publishes the process's malloc state to `path` (one fixed-width line, rewritten in
/// place): bytes in use by live allocations, and bytes glibc holds from the kernel. The
/// first is the exact leak signal; the second explains anonymous memory that malloc keeps.
void publish_malloc(int fd) {
    const struct mallinfo2 mi = ::mallinfo2();
    char line[64];
    const int n = std::snprintf(line, sizeof line, "%20zu %20zu\n", mi.uordblks + mi.hblkhd, mi.arena + mi.hblkhd);
    if (n > 0) (void)::pwrite(fd, line, size_t(n), 0);
}

/// Reads what publish_malloc wrote: {in use, held}, or {-1, -1}.
std::pair<long, long> read_malloc(const std::string& path) {
    std::pair<long, long> r{-1, -1};
    if (FILE* f = std::fopen(path.c_str(), "r")) {
        if (std::fscanf(f, "%ld %ld", &r.first, &r.second) != 2) r = {-1, -1};
        std::fclose(f);
    }
    return r;
}

/// Writes "ops errors" to its stdout at exit (read by the parent).
int churn_child(const std::string& pool_name, int id, uint64_t seed, uint64_t keys, uint64_t events,
                const std::string& malloc_path) {
    const int mfd = ::open(malloc_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
    auto pool = Pool::open(pool_name);
    if (!pool) return std::fprintf(stderr, "churn: %s\n", pool.error().message.c_str()), 1;
    auto store = MemObjectStore::open(*pool);
    if (!store) return std::fprintf(stderr, "churn: %s\n", store.error().message.c_str()), 1;
    ProducerOptions po;
    po.block_timeout = std::chrono::seconds(30);
    auto producer = Producer::open(*pool, kTopic, po);
    if (!producer) return std::fprintf(stderr, "churn: %s\n", producer.error().message.c_str()), 1;
    torture::Rng rng(seed);
    uint64_t ops = 0, errors = 0;
    std::string data;
    // Counts a failed call and prints the first ones (the parent shows the file on failure).
    auto bad = [&](const char* what, const Error& e) {
        if (++errors <= 5) std::fprintf(stderr, "churn %d: %s: %s: %s\n", id, what, std::string(errc_name(e.code)).c_str(), e.message.c_str());
    };
    while (!g_stop) {
        for (int i = 0; i < 64 && !g_stop; ++i, ++ops) {
            const uint64_t r = rng.below(100);
            // Sizes up to 4 KiB, 1 in 50 up to 160 KiB (superblock runs).
            uint64_t size = rng.below(50) == 0 ? torture::pick_size(rng) : rng.below(4097);
            if (r < 10) {  // overwrite an event object and notify it
                const std::string key = "e" + std::to_string(rng.below(events));
                data = torture::content(key, int(ops % 1000), size);
                auto uri = FabricUri::make(pool->name(), "events", key);
                auto v = (*store)->put(*uri, bytes_of(data));
                if (!v) {
                    bad("put", v.error());
                    continue;
                }
                const std::string uri_s = uri->to_string(), ver = std::to_string(*v), ts = std::to_string(wall_now_ns());
                const MessageHeader headers[] = {{kHeaderVersion, ver}, {kHeaderPutTime, ts}};
                if (auto sent = producer->send_keyed(bytes_of(key), bytes_of(uri_s), headers); !sent) bad("send", sent.error());
                continue;
            }
            const std::string key = "c" + std::to_string(id) + "-" + std::to_string(rng.below(keys));
            auto uri = FabricUri::make(pool->name(), "churn", key);
            if (r < 45) {  // put / overwrite
                data = torture::content(key, int(ops % 1000), size);
                if (auto v = (*store)->put(*uri, bytes_of(data)); !v) bad("put", v.error());
            } else if (r < 55) {  // zero-copy put
                auto loan = (*store)->loan(size ? size : 1);
                if (!loan) {
                    bad("loan", loan.error());
                    continue;
                }
                std::memset(loan->bytes().data(), 'x', loan->bytes().size());
                if (auto v = (*store)->commit(std::move(*loan), *uri); !v) bad("commit", v.error());
            } else if (r < 80) {  // remove (absent is fine)
                if (auto r = (*store)->remove(*uri); !r) bad("remove", r.error());
            } else if (r < 90) {  // get (CRC verified)
                if (auto g = (*store)->get(*uri); !g) bad("get", g.error());
            } else {  // pin, verify, unpin
                auto p = (*store)->pin(*uri);
                if (!p)
                    bad("pin", p.error());
                else if (*p)
                    if (Status v = (*p)->verify(); !v) bad("verify", v.error());
            }
        }
        ::usleep(2000);  // ~64 ops per 2 ms at most: leave CPU to others on 2 vCPUs
        if (mfd >= 0 && ops % 4096 < 64) publish_malloc(mfd);
    }
    std::printf("%" PRIu64 " %" PRIu64 "\n", ops, errors);
    return errors ? 1 : 0;
}

struct Options {
    uint64_t seconds = 60, warmup_s = 0, sample_ms = 1000, seed = 1;
    uint64_t keys = 300, events = 64;
    int churners = 2, workers = 2;
    uint64_t rss_tolerance_kib = 128;
    double heap_tolerance = 0.15;
    bool judge_memory = true;  ///< false in sanitizer builds (ASan's quarantine and shadow grow by design)
    std::string csv;
};

struct Sample {
    double t = 0;
    torture::Space sp;
    uint64_t regions = 0, region_bytes = 0;
    std::vector<long> anon_kib;  ///< per process, in process order
    std::vector<long> malloc_in_use, malloc_held;  ///< per churner (mallinfo2), bytes
};

double mean(const std::vector<double>& v, size_t from, size_t to) {
    double s = 0;
    for (size_t i = from; i < to; ++i) s += v[i];
    return to > from ? s / double(to - from) : 0;
}

/// Sample variance of v[from, to).
double variance(const std::vector<double>& v, size_t from, size_t to) {
    if (to - from < 2) return 0;
    const double m = mean(v, from, to);
    double s = 0;
    for (size_t i = from; i < to; ++i) s += (v[i] - m) * (v[i] - m);
    return s / double(to - from - 1);
}

int run(const Options& o, const std::string& exe) {
    const std::string pool_name = test::unique_pool_name("soak");
    test::PoolCleanup cleanup(pool_name);
    const uint64_t warmup = o.warmup_s ? o.warmup_s : std::max<uint64_t>(10, o.seconds / 4);
    std::printf("soak: pool %s, %" PRIu64 " s (warm-up %" PRIu64 " s), %d churners x %" PRIu64
                " keys, %" PRIu64 " event keys, %d workers, seed %" PRIu64 "\n",
                pool_name.c_str(), o.seconds, warmup, o.churners, o.keys, o.events, o.workers, o.seed);
    std::fflush(stdout);
    OpenOptions oo;
    oo.create_if_missing = true;
    oo.create.size_bytes = 64ull << 20;
    auto pool = Pool::open(pool_name, oo);
    if (!pool) return std::fprintf(stderr, "soak: %s\n", pool.error().message.c_str()), 1;
    if (auto s = MemObjectStore::open(*pool); !s) return std::fprintf(stderr, "soak: %s\n", s.error().message.c_str()), 1;
    TopicManager tm(*pool);
    if (Status st = tm.create(kTopic, TopicConfig{}); !st) return std::fprintf(stderr, "soak: %s\n", st.error().message.c_str()), 1;
    if (Status st = tm.register_group(kTopic, kGroup); !st) return std::fprintf(stderr, "soak: %s\n", st.error().message.c_str()), 1;

    const std::string dir = (fs::temp_directory_path() / ("fabric-soak-" + std::to_string(getpid()))).string();
    fs::create_directories(dir);
    struct Proc {
        pid_t pid;
        std::string name, out;
    };
    std::vector<Proc> procs;
    auto start = [&](const std::string& name, std::vector<std::string> args) {
        Proc p{-1, name, dir + "/" + name + ".out"};
        p.pid = test::spawn_program(std::move(args), p.out);
        procs.push_back(p);
    };
    for (int i = 0; i < o.workers; ++i)
        start("worker" + std::to_string(i),
              {e2e::worker_bin(), "--pool", pool_name, "--topic", kTopic, "--group", kGroup, "--builtin", "crc32",
               "--json"});  // no --quiet: the event log (dead letters, rebalances) goes to the .out file
    for (int i = 0; i < o.churners; ++i)
        start("churn" + std::to_string(i), {exe, "--child-churn", pool_name, std::to_string(i),
                                            std::to_string(o.seed * 1000 + uint64_t(i)), std::to_string(o.keys),
                                            std::to_string(o.events), dir + "/churn" + std::to_string(i) + ".malloc"});

    FILE* csv = o.csv.empty() ? nullptr : std::fopen(o.csv.c_str(), "w");
    if (csv) {
        std::fprintf(csv, "t_s,objects,heap_used_bytes,largest_free_extent,free_superblocks,overflow_counts,regions,region_bytes");
        for (const Proc& p : procs) std::fprintf(csv, ",%s_anon_kib", p.name.c_str());
        std::fprintf(csv, ",soak_anon_kib");
        for (int i = 0; i < o.churners; ++i) std::fprintf(csv, ",churn%d_malloc_in_use,churn%d_malloc_held", i, i);
        std::fprintf(csv, "\n");
    }
    std::vector<Sample> samples;
    const uint64_t t0 = mono_now_ns();
    // Why the run failed, one entry per check, printed again as the last line: a CI log shows
    // only its tail, and stderr (unbuffered) lands above stdout (buffered) in a merged log.
    std::vector<std::string> failures;
    while (mono_now_ns() - t0 < o.seconds * kNsPerSec) {
        ::usleep(useconds_t(o.sample_ms * 1000));
        Sample s;
        s.t = double(mono_now_ns() - t0) / 1e9;
        s.sp = torture::measure_space(*pool);
        for (const RegionInfo& r : pool->regions()) {
            ++s.regions;
            s.region_bytes += r.length;
        }
        for (const Proc& p : procs) s.anon_kib.push_back(torture::anonymous_kib(p.pid));
        s.anon_kib.push_back(torture::anonymous_kib(getpid()));
        for (int i = 0; i < o.churners; ++i) {
            const auto m = read_malloc(dir + "/churn" + std::to_string(i) + ".malloc");
            s.malloc_in_use.push_back(m.first);
            s.malloc_held.push_back(m.second);
        }
        if (csv) {
            std::fprintf(csv, "%.1f,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64, s.t,
                         s.sp.objects, s.sp.used_bytes, s.sp.largest_free_extent, s.sp.superblocks_free,
                         s.sp.overflow_counts, s.regions, s.region_bytes);
            for (long k : s.anon_kib) std::fprintf(csv, ",%ld", k);
            for (int i = 0; i < o.churners; ++i) std::fprintf(csv, ",%ld,%ld", s.malloc_in_use[size_t(i)], s.malloc_held[size_t(i)]);
            std::fprintf(csv, "\n");
            std::fflush(csv);
        }
        bool dead = false;
        for (const Proc& p : procs) {
            int status = 0;
            if (::waitpid(p.pid, &status, WNOHANG) == p.pid) {
                std::fprintf(stderr, "soak: %s exited early (status %d)\n", p.name.c_str(), status);
                dead = true;
            }
        }
        if (dead) {
            failures.push_back("a process exited early");
            break;
        }
        samples.push_back(std::move(s));
    }
    if (csv) std::fclose(csv);

    // Stop: churners first (a churner blocked on a full partition needs the workers), then
    // the workers; then the exact space check.
    uint64_t ops = 0, errors = 0, processed = 0, skipped = 0;
    std::vector<const Proc*> order;
    for (const char* role : {"churn", "worker"})
        for (const Proc& p : procs)
            if (p.name.rfind(role, 0) == 0) order.push_back(&p);
    for (const Proc* pp : order) {
        const Proc& p = *pp;
        ::kill(p.pid, SIGTERM);
        const int rc = test::wait_child(p.pid, 30000);
        std::string out;
        test::run_command("cat " + p.out, &out);
        if (p.name.rfind("churn", 0) == 0) {
            unsigned long long a = 0, b = 0;
            if (std::sscanf(out.c_str(), "%llu %llu", &a, &b) == 2) {
                ops += a;
                errors += b;
            }
        }
        if (p.name.rfind("worker", 0) == 0) {
            processed += e2e::json_number(out, "processed");
            skipped += e2e::json_number(out, "skipped");
        }
        if (rc != 0) {
            std::fprintf(stderr, "soak: %s exited %d: %s\n", p.name.c_str(), rc, out.substr(0, 400).c_str());
            failures.push_back(p.name + " exited " + std::to_string(rc));
        }
    }
    // Nothing is removed from the "events" bucket, so no notification may be dead-lettered.
    // (The 30-minute run of 2026-11-27 dead-lettered one after 20 minutes; this prints why.)
    const auto dead = e2e::read_dlq(*pool, std::string(kTopic) + ".dlq");
    for (const auto& d : dead)
        std::fprintf(stderr, "soak: DEAD LETTER %s (partition %s offset %s, %s attempt(s)): %s\n", d.value.c_str(),
                     d.partition.c_str(), d.offset.c_str(), d.attempts.c_str(), d.reason.c_str());
    if (!dead.empty()) failures.push_back(std::to_string(dead.size()) + " dead letter(s), first: " + dead[0].reason);
    std::string out;
    (void)test::run_command(test::build_path("tools/reaper/fabric-shm-reaper") + " --pool " + pool_name + " 2>&1", &out);
    const torture::Space end = torture::measure_space(*pool);
    if (end.used_bytes != end.live_block_bytes || end.loans || end.pins) {
        std::fprintf(stderr, "soak: LEAK: heap used %" PRIu64 " B after the reaper, live objects' blocks %" PRIu64
                     " B, loans %" PRIu64 ", pins %" PRIu64 "\n",
                     end.used_bytes, end.live_block_bytes, end.loans, end.pins);
        failures.push_back("space leaked after the reaper");
    }
    out.clear();
    const int rc = test::run_command(test::build_path("tools/dump/fabric-shm-dump") + " --pool " + pool_name + " --check 2>&1", &out);
    if (rc != 0) {
        std::fprintf(stderr, "soak: fabric-shm-dump --check exited %d:\n%s\n", rc, out.c_str());
        failures.push_back("fabric-shm-dump --check exited " + std::to_string(rc));
    }

    // Flatness after the warm-up: compare the first and last thirds of the samples after it.
    size_t w = 0;
    while (w < samples.size() && samples[w].t < double(warmup)) ++w;
    const size_t n = samples.size() - w;
    if (n < 6) {
        std::fprintf(stderr, "soak: only %zu samples after the warm-up (need 6): run longer\n", n);
        return 1;
    }
    const size_t a0 = w, a1 = w + n / 3, b0 = samples.size() - n / 3, b1 = samples.size();
    auto series = [&](auto f) {
        std::vector<double> v;
        for (const Sample& s : samples) v.push_back(double(f(s)));
        return v;
    };
    auto report = [&](const char* what, const std::vector<double>& v, double allowed_growth, const char* unit,
                      bool judged = true) {
        const double first = mean(v, a0, a1), last = mean(v, b0, b1);
        const double lo = *std::min_element(v.begin() + long(w), v.end()),
                     hi = *std::max_element(v.begin() + long(w), v.end());
        // A quantity that fluctuates (free superblocks move by ±4 as 160 KiB objects come and
        // go) differs between two 10-sample means by chance: a fixed 2 failed 2 soaks in 66.
        // So growth within 4 standard errors of the difference of the means is noise; a leak
        // keeps growing and shows in the exact end-of-run check as well.
        const double noise = 4 * std::sqrt(variance(v, a0, a1) / double(a1 - a0) + variance(v, b0, b1) / double(b1 - b0));
        allowed_growth = std::max(allowed_growth, noise);
        const bool ok = last - first <= allowed_growth;
        if (!judged)
            std::printf("soak: %-28s first third %12.0f  last third %12.0f  (min %.0f, max %.0f after warm-up; not "
                        "judged)\n", what, first, last, lo, hi);
        else
            std::printf("soak: %-28s first third %12.0f  last third %12.0f  (min %.0f, max %.0f after warm-up; growth "
                        "allowed %.0f %s) %s\n",
                        what, first, last, lo, hi, allowed_growth, unit, ok ? "flat" : "GROWING");
        if (judged && !ok) failures.push_back(std::string(what) + " growing");
    };
    const auto used = series([](const Sample& s) { return s.sp.used_bytes; });
    report("heap used bytes", used, std::max(o.heap_tolerance * mean(used, a0, a1), 65536.0), "B");
    report("objects", series([](const Sample& s) { return s.sp.objects; }),
           std::max(o.heap_tolerance * mean(series([](const Sample& s) { return s.sp.objects; }), a0, a1), 16.0), "");
    // Free space must not shrink: report the negated largest free extent and free superblocks.
    const auto lfe = series([](const Sample& s) { return -double(s.sp.largest_free_extent); });
    report("-largest free extent", lfe, std::max(0.10 * -mean(lfe, a0, a1), 65536.0), "B");
    // 6: one object of up to 160 KiB holds a run of 3 superblocks, and the count still settles
    // by about 1 per 30 s in the first minutes (docs/reliability.md, "Noise bound").
    report("-free superblocks", series([](const Sample& s) { return -double(s.sp.superblocks_free); }), 6, "");
    report("table overflow counts", series([](const Sample& s) { return s.sp.overflow_counts; }), 8, "");
    report("pool regions", series([](const Sample& s) { return s.regions; }), 0, "");
    report("pool region bytes", series([](const Sample& s) { return s.region_bytes; }), 0, "B");
    for (size_t p = 0; p <= procs.size(); ++p) {
        const std::string name = (p < procs.size() ? procs[p].name : "soak (parent)") + " anon KiB";
        report(name.c_str(), series([&](const Sample& s) { return s.anon_kib[p]; }), double(o.rss_tolerance_kib), "KiB",
               o.judge_memory && p < procs.size());
    }
    // The exact leak signal: bytes of live malloc allocations in each churner. Nothing in
    // the churn loop keeps memory between operations, so it returns to the same level.
    for (int i = 0; i < o.churners; ++i) {
        const std::string in_use = "churn" + std::to_string(i) + " malloc in use";
        const std::string held = "churn" + std::to_string(i) + " malloc held";
        report(in_use.c_str(), series([&](const Sample& s) { return s.malloc_in_use[size_t(i)]; }), 16384, "B",
               o.judge_memory);
        report(held.c_str(), series([&](const Sample& s) { return s.malloc_held[size_t(i)]; }), 0, "B", false);
    }
    std::printf("soak: %" PRIu64 " churn operations (%.0f/s), %" PRIu64 " errors; workers: %" PRIu64
                " results written, %" PRIu64 " redeliveries skipped; %zu samples; after the reaper heap used "
                "%" PRIu64 " B = live blocks %" PRIu64 " B (%" PRIu64 " objects)\n",
                ops, double(ops) / double(o.seconds), errors, processed, skipped, samples.size(), end.used_bytes,
                end.live_block_bytes, end.objects);
    if (errors) failures.push_back(std::to_string(errors) + " churn error(s)");
    std::string why;
    for (const std::string& f : failures) why += (why.empty() ? "" : "; ") + f;
    if (!failures.empty()) std::printf("soak: FAILED: %s (details above; process logs kept in %s)\n", why.c_str(), dir.c_str());
    else std::printf("soak: PASSED\n");
    if (failures.empty()) fs::remove_all(dir);
    return failures.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && std::string(argv[1]) == "--child-churn") {
        if (argc != 8) return 2;
        return churn_child(argv[2], std::atoi(argv[3]), std::strtoull(argv[4], nullptr, 10),
                           std::strtoull(argv[5], nullptr, 10), std::strtoull(argv[6], nullptr, 10), argv[7]);
    }
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has = i + 1 < argc;
        if (a == "--seconds" && has) o.seconds = std::strtoull(argv[++i], nullptr, 10);
        else if (a == "--warmup" && has) o.warmup_s = std::strtoull(argv[++i], nullptr, 10);
        else if (a == "--sample-ms" && has) o.sample_ms = std::max<uint64_t>(100, std::strtoull(argv[++i], nullptr, 10));
        else if (a == "--seed" && has) o.seed = std::strtoull(argv[++i], nullptr, 10);
        else if (a == "--keys" && has) o.keys = std::max<uint64_t>(1, std::strtoull(argv[++i], nullptr, 10));
        else if (a == "--churners" && has) o.churners = std::clamp(std::atoi(argv[++i]), 1, 16);
        else if (a == "--workers" && has) o.workers = std::clamp(std::atoi(argv[++i]), 1, 16);
        else if (a == "--rss-tolerance-kib" && has) o.rss_tolerance_kib = std::strtoull(argv[++i], nullptr, 10);
        else if (a == "--csv" && has) o.csv = argv[++i];
        else if (a == "--memory-not-judged") o.judge_memory = false;
        else {
            std::fprintf(stderr,
                         "usage: soak [--seconds 60] [--warmup S] [--sample-ms 1000] [--seed N] [--keys 300]\n"
                         "            [--churners 2] [--workers 2] [--rss-tolerance-kib 128] [--csv FILE] [--memory-not-judged]\n");
            return 2;
        }
    }
    if (const char* s = std::getenv("FABRIC_SHM_SOAK_SECONDS"); s && *s) o.seconds = std::strtoull(s, nullptr, 10);
    const std::string exe = test::self_exe_setting_build_dir();  // run by hand: finds the tools too
    if (exe.empty()) return 1;
    return run(o, exe);
}
