// SPDX-License-Identifier: MIT
// fabric-shm-reaper: reclaims what expired leases and dead processes left behind, for one
// pool or all of them, once or every --watch DURATION. Each pool is attached, reaped with
// Pool::reap(now, dry_run) (dead registrations, half-made entries, expired or orphaned
// regions not held by a live process, region-kind hooks; the pool itself is unlinked when
// every lease ran out), and leftover temporary segments of dead creators are removed.
// Safe while live processes attach, create and renew: every step is a CAS in the library.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cli.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/registry.h"
#include "tool_support.h"

using namespace fabric_shm;

namespace {

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

constexpr std::string_view kSegmentPrefix = "fabric-shm.";
constexpr std::string_view kTempMarker = ".tmp-";
constexpr int64_t kTempGraceSeconds = 10;  ///< temp files younger than this are never removed

struct TempFile {
    std::string path;
    std::string pool;
    uint32_t pid = 0;
};

/// Temporary segments "fabric-shm.<pool>.tmp-<pid>-<random>" (a creator builds a pool under
/// such a name, then links it into place). Those of a creator that is certainly dead are
/// leftovers of a killed creation (once older than kTempGraceSeconds).
std::vector<TempFile> dead_creators_temp_files(const std::vector<std::string>& only_pools, bool all) {
    std::vector<TempFile> found;
    const std::string probe = Pool::segment_path("x");
    const std::string dir = probe.substr(0, probe.rfind('/'));
    DIR* d = opendir(dir.c_str());
    if (!d) return found;
    while (dirent* e = readdir(d)) {
        const std::string n = e->d_name;
        if (n.rfind(kSegmentPrefix, 0) != 0) continue;
        const size_t mark = n.rfind(kTempMarker);
        if (mark == std::string::npos || mark < kSegmentPrefix.size()) continue;
        TempFile t;
        t.path = dir + "/" + n;
        t.pool = n.substr(kSegmentPrefix.size(), mark - kSegmentPrefix.size());
        const std::string rest = n.substr(mark + kTempMarker.size());  // "<pid>-<random>"
        char* end = nullptr;
        errno = 0;
        const unsigned long pid = std::strtoul(rest.c_str(), &end, 10);
        if (errno != 0 || end == rest.c_str() || *end != '-' || pid == 0 || pid > UINT32_MAX) continue;
        t.pid = uint32_t(pid);
        if (!all) {
            bool wanted = false;
            for (const auto& p : only_pools) wanted |= p == t.pool;
            if (!wanted) continue;
        }
        const PidProbe probe_result = probe_pid(t.pid);
        if (probe_result.exists && !probe_result.zombie) continue;  // creator may still be working
        // A creator in another pid namespace sharing /dev/shm is invisible to probe_pid: only
        // files untouched for a while are leftovers (a creation takes milliseconds).
        struct stat st {};
        if (::stat(t.path.c_str(), &st) != 0) continue;
        const int64_t age_s = int64_t(::time(nullptr)) - int64_t(st.st_mtime);
        if (age_s < kTempGraceSeconds) continue;
        found.push_back(std::move(t));
    }
    closedir(d);
    return found;
}

nlohmann::json report_json(const std::string& name, const ReapReport& r, bool dry_run) {
    return {
        {"pool", name},
        {"dry_run", dry_run},
        {"dead_processes", r.dead_processes},
        {"repaired_entries", r.repaired_entries},
        {"reclaimed_regions", r.reclaimed_regions},
        {"busy_regions", r.busy_regions},
        {"reclaimed_bytes", r.reclaimed_bytes},
        {"kind_items", r.kind_items},
        {"pool_removed", r.pool_removed},
        {"notes", r.notes},
    };
}

std::string report_text(const std::string& name, const ReapReport& r, bool dry_run) {
    std::string t = "pool '" + name + "'" + (dry_run ? " (dry run: nothing changed)" : "") + ": " +
                    std::to_string(r.dead_processes) + " dead processes, " + std::to_string(r.repaired_entries) +
                    " repaired entries, " + std::to_string(r.reclaimed_regions) + " reclaimed regions (" +
                    format_bytes(r.reclaimed_bytes) + "), " + std::to_string(r.busy_regions) +
                    " expired but attached, " + std::to_string(r.kind_items) + " items released" +
                    (r.pool_removed ? ", pool removed (every lease ran out)" : "") + "\n";
    for (const auto& n : r.notes) t += "  " + n + "\n";
    return t;
}

/// Attaches writable without reaping (reap() below produces the report) and never creates.
/// allow_expired: a wholly expired pool, or one whose remover died mid-way, is exactly what
/// the reaper is for.
/// A pass takes milliseconds: the reaper declares a heartbeat timeout of its own, so that it
/// may attach to a pool shared across pid namespaces (where every registrant needs one) and
/// is judged dead by others there should it die mid-pass. $FABRIC_SHM_HEARTBEAT_TIMEOUT wins.
constexpr uint64_t kReaperHeartbeatTimeoutNs = 60 * kNsPerSec;

Result<Pool> attach_for_reaping(const std::string& name) {
    OpenOptions open;
    open.reap_on_open = false;
    open.allow_expired = true;
    const char* env = std::getenv("FABRIC_SHM_HEARTBEAT_TIMEOUT");
    if (!env || !*env) open.heartbeat_timeout = ns_duration(kReaperHeartbeatTimeoutNs);
    return Pool::open(name, open);
}

}  // namespace

int main(int argc, char** argv) {
    cli::Output out{cli::argv_has_json(argc, argv), "fabric-shm-reaper"};
    cxxopts::Options o("fabric-shm-reaper",
                       "Reclaims expired regions, dead processes' leftovers and wholly expired pools. Run it "
                       "from cron or a systemd timer: nothing reaps while no process is alive.");
    o.add_options()("pool", cli::pool_option_help(), cxxopts::value<std::string>())("all", "every pool present")(
        "dry-run", "report what would be reclaimed; change nothing")(
        "json", "machine-readable output; errors as {\"error\":{\"code\",\"message\"}}")(
        "watch", "repeat every DURATION (500ms, 30s, 5m, ...) until interrupted", cxxopts::value<std::string>())(
        "version", "print the version and the pool layout version")("h,help", "show this help");
    cxxopts::ParseResult r;
    int rc = 0;
    if (!cli::parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("version")) return cli::print_version(out.program);
    if (r.count("help")) {
        std::cout << o.help() << "Exit codes: 0 ok, 1 error (a pool could not be attached), 2 usage error.\n";
        return cli::kExitOk;
    }
    if (!r.unmatched().empty()) return cli::usage(out, "unexpected argument '" + r.unmatched()[0] + "'");
    const bool all = r.count("all") > 0;
    const bool dry_run = r.count("dry-run") > 0;
    uint64_t watch_ns = 0;
    if (r.count("watch")) {
        Result<uint64_t> w = cli::parse_duration_option("watch", r["watch"].as<std::string>());
        if (!w) return cli::fail(out, w.error());
        if (w.value() == 0) return cli::fail(out, Errc::invalid_argument, "--watch must be longer than 0");
        watch_ns = w.value();
    }
    const std::string pool_flag = cli::opt_string(r, "pool");
    if (all && !pool_flag.empty()) return cli::usage(out, "--pool and --all are exclusive");
    if (!all) {
        Result<std::string> name = cli::resolve_pool(pool_flag);  // validated before any syscall
        if (!name) return cli::fail(out, name.error());
    }
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);

    int exit_code = cli::kExitOk;
    for (;;) {
        Result<std::vector<std::string>> pools = cli::select_pools(pool_flag, all);
        if (!pools) return cli::fail(out, pools.error());
        nlohmann::json reports = nlohmann::json::array();
        std::string text;
        bool any_error = false;
        // Temporary segments first: a creator killed before publishing leaves only those.
        nlohmann::json temps = nlohmann::json::array();
        std::vector<std::string> temp_pools;
        for (const TempFile& t : dead_creators_temp_files(pools.value(), all)) {
            std::string outcome = dry_run ? "would remove" : "removed";
            if (!dry_run && ::unlink(t.path.c_str()) != 0 && errno != ENOENT) {
                outcome = std::string("failed to remove: ") + std::strerror(errno);
                any_error = true;
            }
            temps.push_back({{"path", t.path}, {"pool", t.pool}, {"creator_pid", t.pid}, {"outcome", outcome}});
            text += outcome + " " + t.path + " (creator pid " + std::to_string(t.pid) + " is dead)\n";
            temp_pools.push_back(t.pool);
        }
        for (const std::string& name : pools.value()) {
            Result<Pool> pool = attach_for_reaping(name);
            const bool had_temp = std::find(temp_pools.begin(), temp_pools.end(), name) != temp_pools.end();
            // Removed since it was listed, or only a killed creator's temp file was left.
            if (!pool && pool.code() == Errc::not_found && (all || had_temp)) continue;
            if (!pool) {
                Error e = cli::with_pool_list(pool.error());
                if (!all) return cli::fail(out, e);
                any_error = true;
                reports.push_back({{"pool", name},
                                   {"error", {{"code", std::string(errc_name(e.code))}, {"message", e.message}}}});
                text += "pool '" + name + "': error: " + e.message + "\n";
                continue;
            }
            const ReapReport report = pool->reap(MonoClock::now(), dry_run);
            reports.push_back(report_json(name, report, dry_run));
            text += report_text(name, report, dry_run);
        }
        if (out.json) {
            cli::print_json({{"pools", reports}, {"temp_files", temps}});
        } else {
            if (pools->empty() && temps.empty()) text = "no pools\n";
            // Pool and file names come from /dev/shm (any local user names them) and notes
            // from the pool: escaped, as every table is.
            std::cout << cli::terminal_safe_lines(text) << std::flush;
        }
        exit_code = any_error ? cli::kExitRuntime : cli::kExitOk;
        if (!watch_ns || g_stop) break;
        struct timespec ts = {time_t(watch_ns / kNsPerSec), long(watch_ns % kNsPerSec)};
        while (nanosleep(&ts, &ts) != 0 && !g_stop) {
        }
        if (g_stop) break;
    }
    return exit_code;
}
