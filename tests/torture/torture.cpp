// SPDX-License-Identifier: MIT
// Crash and stall torture: producers and workers run the pipeline on one pool while this
// harness SIGKILLs a random one at a random moment, again and again, and starts a
// replacement each time; some replacements are armed with a named crash point
// (FABRIC_SHM_CRASH_POINT) so they die at an instruction where a half-done step is left in
// the pool. With --stalls it also stops processes: SIGSTOP for spans around the session
// timeout, and replacements armed to stop themselves at named pause points
// (FABRIC_SHM_PAUSE_POINT, FABRIC_SHM_PAUSE_RANDOM) that it holds and then resumes; a reaper
// and a side-pool "ops" process join the producers and workers so that every fault point of
// the library is reached. Once the kills stop and the input is drained, the invariants are
// checked; the stall invariants are also checked while processes are held.
//
// Processes:
//  - workers: the real fabric-shm-worker executable (--builtin crc32): the consumer side
//    is exactly what users run (group membership, takeover, fenced result put, commit);
//  - producers: this executable re-executed with --child-producer (torture_children.cpp).
//    The harness must know which puts and sends *returned success* before the kill; the
//    real producer prints that only at exit. The child appends one line to its log after
//    each successful call (a SIGKILL between the call and the line only makes the harness
//    expect less);
//  - with --stalls: fabric-shm-reaper runs every few hundred ms, on the main pool or the side
//    pool; and one --child-ops process creates a side pool, uses a store, a tiered store and a
//    short-lived topic group in it, lets its leases run out and reaps it, round after round.
//
// Seeded: every decision (victim, delay, sizes, crash points) comes from --seed, so a seed
// replays the same schedule of decisions (not the same interleaving: timing still varies).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../e2e/e2e_support.h"
#include "../support/test_support.h"
#include "fabric_shm/clock.h"
#include "pool_impl.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/tiered_object_store.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/worker_loop.h"
#include "layout/pool_layout.h"
#include "store/store_core.h"
#include "torture_children.h"
#include "torture_points.h"
#include "torture_support.h"

using namespace fabric_shm;
using namespace fabric_shm::torture;
namespace fs = std::filesystem;

namespace {

// ---- harness -----------------------------------------------------------------------------------

struct Options {
    uint64_t seed = 0;
    uint64_t kills = 100;
    int producers = 2, workers = 3;
    uint64_t session_timeout_ms = 2000;
    uint64_t objects_per_producer = 60;  ///< per incarnation; then it exits and is replaced
    int mean_interval_ms = 120;          ///< mean delay between events
    int crash_point_percent = 35;        ///< replacements armed with a named crash point
    int stall_percent = 0;               ///< events that SIGSTOP a process instead of killing one
    // --stalls
    bool stalls = false;                 ///< stall mode: reaper and ops roles, pause points, stall invariants
    uint64_t stall_target = 0;           ///< run until this many stalls (SIGSTOPs + pauses held) too
    int pause_point_percent = 25;        ///< replacements armed to stop at a named pause point
    int random_pause_percent = 25;       ///< replacements armed with FABRIC_SHM_PAUSE_RANDOM
    int heartbeat_percent = 50;          ///< producers that declare a registry heartbeat timeout
    int poison_percent = 3;              ///< notifications naming an object never put (dead-lettered)
    uint64_t max_seconds = 0;            ///< end the kill phase after this long (0: no limit)
    bool keep = false;
    bool verbose = false;
};

enum class Role { producer, worker, reaper, ops };
const char* role_name(Role r) {
    switch (r) {
        case Role::producer: return "producer";
        case Role::worker: return "worker";
        case Role::reaper: return "reaper";
        case Role::ops: return "ops";
    }
    return "?";
}
uint8_t role_bit(Role r) {
    switch (r) {
        case Role::producer: return kProducerRole;
        case Role::worker: return kWorkerRole;
        case Role::reaper: return kReaperRole;
        case Role::ops: return kOpsRole;
    }
    return 0;
}

struct Child {
    pid_t pid = -1;
    Role role = Role::producer;
    int slot = 0;
    std::string crash_point;   ///< "" when not armed
    std::string pause_point;   ///< FABRIC_SHM_PAUSE_POINT, "" when not armed
    uint32_t pause_ppm = 0;    ///< FABRIC_SHM_PAUSE_RANDOM
    uint64_t heartbeat_ms = 0; ///< registry heartbeat timeout it declared (producers)
    bool side_pool = false;    ///< a reaper of the side pool
    std::string log;           ///< stderr (workers, reaper), ack log (producers, ops)
    bool armed() const { return !crash_point.empty() || !pause_point.empty() || pause_ppm != 0; }
};

/// One registry slot a stopped process occupies (as registrant or as retirer).
struct SlotSnap {
    uint32_t slot = 0;
    uint64_t word = 0;
};

/// A process the harness holds stopped: SIGSTOPped by it, or stopped by itself at a pause point.
struct Hold {
    uint64_t since_ns = 0, until_ns = 0;
    std::string why;             ///< "SIGSTOP" or the pause point's name
    std::vector<SlotSnap> slots; ///< its registry slots when the hold began
};

/// What the producers' logs say about one key.
struct KeyState {
    std::string log;  ///< the producer incarnation's log
    // in-objects (notified)
    bool put_acked = false, notified = false, poison = false;
    uint64_t size = 0, version = 0;
    uint32_t partition = 0;
    uint64_t offset = 0;
    // scratch objects: the state each call leaves; steps[0] = absent before the first put
    std::vector<std::optional<std::pair<int, uint64_t>>> steps;  ///< (variant, size) or absent
    int acked_steps = 0;  ///< steps[acked_steps]: the state after the last acknowledged call
    bool done = false;    ///< verified and removed on purpose by the harness (poison: its dead letter seen)
};

struct Counts {
    uint64_t puts = 0, notifications = 0, results = 0, unacked_results = 0, poison = 0, resent = 0;
    uint64_t verified_in = 0, scratch_live = 0, scratch_removed = 0, cleaned = 0, spot_checks = 0;
    uint64_t fenced_exits = 0, fenced_seen = 0, registry_checks = 0, token_checks = 0;
    uint64_t tiered_acked = 0, tiered_durable = 0, ops_closed = 0, ops_rounds = 0, reaper_runs = 0;
};

class Harness {
public:
    Harness(Options o, std::string exe) : o_(std::move(o)), exe_(std::move(exe)), rng_(o_.seed) {}
    int run();

private:
    void spawn(Role role, int slot, bool may_arm);
    void arm(Child& c);
    void reap_exited();
    void on_exit(const Child& c, int status);
    bool kill_one();
    void stall_one();
    void hold(pid_t pid, const std::string& why);
    void resume_held(bool all);
    void schedule_reaper();
    void finish_kill_phase();
    void ingest();
    void ingest_pause_log();
    bool verify_in(MemObjectStore& store, const std::string& key, const KeyState& k, bool need_result);
    bool verify_scratch(MemObjectStore& store, const std::string& key, const KeyState& k);
    void clean(Pool& pool);
    void check_tokens(Pool& pool);
    void collect_dead_letters(Pool& pool);
    bool drained(Pool& pool, std::string* why);
    int check(Pool& pool);
    void check_ops();
    std::vector<SlotSnap> slots_of(pid_t pid) const;
    const Child* child(pid_t pid) const {
        for (const Child& c : live_)
            if (c.pid == pid) return &c;
        return nullptr;
    }
    uint64_t stalls() const { return sigstops_ + pauses_held_; }
    uint64_t kills() const { return random_kills_ + crash_point_deaths_; }
    uint64_t hold_span_ms() {
        // Around the session timeout: from a quarter of it (nobody may judge anything) to
        // twice it (the group evicts, heartbeat-timeout producers are fenced).
        return o_.session_timeout_ms / 4 + rng_.below(o_.session_timeout_ms * 7 / 4 + 1);
    }
    void fail(const std::string& what) {
        ++violations_;
        if (violations_ <= 50) std::fprintf(stderr, "torture: VIOLATION: %s\n", what.c_str());
    }

    Options o_;
    std::string exe_;
    Rng rng_;
    std::string pool_name_, side_pool_, dir_, cold_dir_, pause_log_;
    Pool* pool_ = nullptr;
    std::vector<Child> live_;
    std::vector<std::string> producer_logs_, ops_logs_;
    std::map<std::string, uint64_t> log_pos_;  ///< bytes of each log already ingested
    std::set<std::string> finished_logs_;      ///< incarnations that exited or were killed
    std::map<std::string, KeyState> in_, scratch_;
    std::map<std::string, uint64_t> producer_heartbeat_;  ///< producer log -> heartbeat timeout it declared
    std::map<std::string, uint32_t> producer_token_;      ///< producer log -> its registry token
    std::map<std::string, pid_t> log_pid_;                ///< producer log -> pid
    std::optional<Consumer> dlq_;                          ///< the harness's own group on the DLQ topic
    std::set<std::pair<uint32_t, uint64_t>> dead_letters_;  ///< (partition, offset) of the source message
    std::vector<e2e::DeadLetter> dead_letter_list_;          ///< every dead letter read
    uint64_t dead_letter_records_ = 0;
    Counts n_;
    uint64_t incarnations_ = 0, random_kills_ = 0, crash_point_deaths_ = 0, armed_ = 0, clean_exits_ = 0;
    uint64_t failed_exits_ = 0, violations_ = 0;
    std::map<std::string, uint64_t> point_deaths_, point_pauses_;
    std::map<pid_t, std::string> last_pause_;  ///< pid -> the point of its latest self-stop (pause log)
    uint64_t pause_log_pos_ = 0;
    std::map<pid_t, Hold> held_;
    uint64_t sigstops_ = 0, pauses_held_ = 0, killed_while_held_ = 0;
    uint64_t last_kill_ns_ = 0, last_reaper_ns_ = 0;
    bool kill_phase_ = true, reaper_on_side_ = false;
};

void Harness::arm(Child& c) {
    const auto pts = points_of_role(role_bit(c.role));
    const int r = int(rng_.below(100));
    if (r < o_.crash_point_percent) {
        c.crash_point = pts[rng_.below(pts.size())] + ":" + std::to_string(1 + rng_.below(6));
    } else if (o_.stalls && r < o_.crash_point_percent + o_.pause_point_percent) {
        c.pause_point = pts[rng_.below(pts.size())] + ":" + std::to_string(1 + rng_.below(6));
    } else if (o_.stalls && r < o_.crash_point_percent + o_.pause_point_percent + o_.random_pause_percent) {
        c.pause_ppm = uint32_t(20 + rng_.below(400));
    }
    if (c.armed()) ++armed_;
}

void Harness::spawn(Role role, int slot, bool may_arm) {
    Child c;
    c.role = role;
    c.slot = slot;
    const uint64_t inc = ++incarnations_;
    if (may_arm) arm(c);
    const uint64_t child_seed = rng_.next();
    std::vector<std::string> args;
    std::string output = "/dev/null";
    switch (role) {
        case Role::producer: {
            c.log = dir_ + "/p" + std::to_string(slot) + "-" + std::to_string(inc) + ".log";
            if (o_.stalls && int(rng_.below(100)) < o_.heartbeat_percent) c.heartbeat_ms = o_.session_timeout_ms / 2;
            producer_logs_.push_back(c.log);
            producer_heartbeat_[c.log] = c.heartbeat_ms;
            args = {exe_, "--child-producer", pool_name_, c.log, "p" + std::to_string(slot) + "i" + std::to_string(inc),
                    std::to_string(child_seed), std::to_string(o_.objects_per_producer),
                    std::to_string(c.heartbeat_ms), std::to_string(o_.stalls ? o_.poison_percent : 0)};
            break;
        }
        case Role::worker:
            c.log = dir_ + "/w" + std::to_string(slot) + "-" + std::to_string(inc) + ".err";
            output = c.log;
            args = {e2e::worker_bin(), "--pool", pool_name_, "--topic", kTopic, "--group", kGroup, "--builtin", "crc32",
                    "--max-attempts", "1000000", "--session-timeout", std::to_string(o_.session_timeout_ms) + "ms",
                    "--batch", "8", "--no-create"};
            if (!o_.stalls) args.push_back("--quiet");  // stall mode keeps each worker's event log
            break;
        case Role::reaper:
            c.side_pool = reaper_on_side_;
            reaper_on_side_ = !reaper_on_side_;
            c.log = dir_ + "/r-" + std::to_string(inc) + ".err";
            output = c.log;
            args = {test::build_path("tools/reaper/fabric-shm-reaper"), "--pool", c.side_pool ? side_pool_ : pool_name_};
            ++n_.reaper_runs;
            break;
        case Role::ops:
            c.log = dir_ + "/o-" + std::to_string(inc) + ".log";
            ops_logs_.push_back(c.log);
            args = {exe_, "--child-ops", side_pool_, cold_dir_, c.log, "o" + std::to_string(inc),
                    std::to_string(child_seed)};
            break;
    }
    const pid_t pid = test::spawn_program(std::move(args), output, [&c, this] {
        auto set = [](const char* var, const std::string& v) {
            if (v.empty())
                ::unsetenv(var);
            else
                ::setenv(var, v.c_str(), 1);
        };
        set("FABRIC_SHM_CRASH_POINT", c.crash_point);
        set("FABRIC_SHM_PAUSE_POINT", c.pause_point);
        set("FABRIC_SHM_PAUSE_RANDOM", c.pause_ppm ? std::to_string(c.pause_ppm) : std::string());
        set("FABRIC_SHM_PAUSE_LOG", c.pause_point.empty() && !c.pause_ppm ? std::string() : pause_log_);
    });
    c.pid = pid;
    if (role == Role::producer) log_pid_[c.log] = pid;
    if (o_.verbose)
        std::fprintf(stderr, "torture: start %s %d pid %d%s%s%s%s%s\n", role_name(role), slot, int(pid),
                     c.crash_point.empty() ? "" : " crash point ", c.crash_point.c_str(),
                     c.pause_point.empty() ? "" : " pause point ", c.pause_point.c_str(),
                     c.pause_ppm ? (" random pauses " + std::to_string(c.pause_ppm) + " ppm").c_str() : "");
    live_.push_back(std::move(c));
}

/// The registry slots naming `pid`: as registrant (CLAIMING, LIVE, FENCED) or as retirer
/// (RETIRING). Raw words: the harness reads the layout like fabric-shm-dump does.
std::vector<SlotSnap> Harness::slots_of(pid_t pid) const {
    std::vector<SlotSnap> out;
    const auto* slots = reinterpret_cast<const layout::ProcessSlot*>(detail::pool_base(*pool_) + layout::kRegistryOffset);
    for (uint32_t i = 0; i < layout::kRegistrySlots; ++i) {
        const uint64_t w = slots[i].word.load(std::memory_order_acquire);
        if (layout::slot_word_state(w) != layout::kSlotFree && layout::slot_word_pid(w) == uint32_t(pid))
            out.push_back({i, w});
    }
    return out;
}

std::string describe_slot_word(uint64_t w) {
    static const char* names[] = {"FREE", "CLAIMING", "LIVE", "RETIRING", "FENCED"};
    const uint64_t st = layout::slot_word_state(w);
    return std::string(st < 5 ? names[st] : "?") + "(gen " + std::to_string(layout::slot_word_gen(w)) + ", pid " +
           std::to_string(layout::slot_word_pid(w)) + ")";
}

/// Starts holding a stopped child: remembers its registry slots, which nobody may take from it
/// while it lives (checked when it is resumed).
void Harness::hold(pid_t pid, const std::string& why) {
    Hold h;
    h.since_ns = mono_now_ns();
    h.until_ns = h.since_ns + hold_span_ms() * kNsPerMs;
    h.why = why;
    h.slots = slots_of(pid);
    held_[pid] = std::move(h);
    if (o_.verbose) std::fprintf(stderr, "torture: holding pid %d (%s)\n", int(pid), why.c_str());
}

/// Resumes held children whose time is up (or all). Before the SIGCONT: a process that was
/// stopped all along is alive, so no registry slot it held may have been taken from it by a
/// pid judgement. Only a heartbeat timeout it declared itself may have fenced it (LIVE ->
/// FENCED, same generation and pid).
void Harness::resume_held(bool all) {
    const uint64_t now = mono_now_ns();
    for (auto it = held_.begin(); it != held_.end();) {
        if (!all && now < it->second.until_ns) {
            ++it;
            continue;
        }
        const pid_t pid = it->first;
        const Hold& h = it->second;
        const Child* c = child(pid);
        const bool heartbeat = c && c->heartbeat_ms != 0;
        const auto* slots = reinterpret_cast<const layout::ProcessSlot*>(detail::pool_base(*pool_) + layout::kRegistryOffset);
        // Only the main pool's registry is watched (the ops child's slot is in its side pool).
        if (c && !(c->role == Role::ops) && !(c->role == Role::reaper && c->side_pool)) {
            ++n_.registry_checks;
            for (const SlotSnap& s : h.slots) {
                const uint64_t w = slots[s.slot].word.load(std::memory_order_acquire);
                const bool same = layout::slot_word_gen(w) == layout::slot_word_gen(s.word) &&
                                  layout::slot_word_pid(w) == layout::slot_word_pid(s.word);
                const uint64_t was = layout::slot_word_state(s.word), is = layout::slot_word_state(w);
                bool ok = same && (is == was || (heartbeat && was == layout::kSlotLive && is == layout::kSlotFenced));
                if (same && was == layout::kSlotLive && is == layout::kSlotFenced && heartbeat) ++n_.fenced_seen;
                if (!ok)
                    fail(std::string(role_name(c->role)) + " pid " + std::to_string(pid) + " (" + h.why + ", stopped " +
                         std::to_string((now - h.since_ns) / kNsPerMs) + " ms, alive) lost registry slot " +
                         std::to_string(s.slot) + ": " + describe_slot_word(s.word) + " -> " + describe_slot_word(w) +
                         (heartbeat ? "" : " (it declared no heartbeat timeout: judged dead by pid while it lived)"));
            }
            // And the one-sided question every repairer asks: a stopped pid-only process is
            // never certainly dead, and nobody may reuse memory a stopped process may touch.
            for (const SlotSnap& s : h.slots) {
                if (layout::slot_word_state(s.word) != layout::kSlotLive) continue;
                const OwnerToken t = layout::make_token(s.slot, layout::slot_word_gen(s.word));
                std::string why;
                if (!heartbeat && pool_->registry().liveness(t, MonoClock::now(), &why) == Liveness::certainly_dead)
                    fail(std::string(role_name(c->role)) + " pid " + std::to_string(pid) + " (stopped, alive): liveness(" +
                         std::to_string(t) + ") says certainly dead: " + why);
                if (pool_->registry().process_liveness(t, MonoClock::now(), &why) == Liveness::certainly_dead)
                    fail(std::string(role_name(c->role)) + " pid " + std::to_string(pid) +
                         " (stopped, alive): process_liveness(" + std::to_string(t) + ") says certainly dead: " + why);
            }
        }
        ::kill(pid, SIGCONT);
        it = held_.erase(it);
    }
}

/// Collects children that exited on their own: a producer that finished its objects, or a
/// process killed by its crash point. Replaces them while the kill phase runs (workers always).
/// Children that stopped themselves at a pause point are held.
void Harness::reap_exited() {
    for (size_t i = 0; i < live_.size();) {
        int status = 0;
        const pid_t r = ::waitpid(live_[i].pid, &status, WNOHANG | WUNTRACED);
        if (r != live_[i].pid) {
            ++i;
            continue;
        }
        if (WIFSTOPPED(status)) {
            // Our own SIGSTOPs are consumed in stall_one; this one stopped itself.
            if (!held_.count(r)) {
                ingest_pause_log();
                const std::string point = last_pause_.count(r) ? last_pause_[r] : std::string("(unlogged)");
                ++point_pauses_[point];
                ++pauses_held_;
                hold(r, point);
            }
            ++i;
            continue;
        }
        Child c = live_[i];
        live_.erase(live_.begin() + long(i));
        held_.erase(c.pid);
        on_exit(c, status);
    }
}

void Harness::on_exit(const Child& c, int status) {
    if (c.role == Role::producer) finished_logs_.insert(c.log);
    const bool sigkilled = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (sigkilled && !c.crash_point.empty()) {
        ++crash_point_deaths_;
        ++point_deaths_[c.crash_point.substr(0, c.crash_point.find(':'))];
        last_kill_ns_ = mono_now_ns();
    } else if (code == 0 ||
               (!kill_phase_ && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM && c.role != Role::worker)) {
        ++clean_exits_;  // finished, or stopped by SIGTERM before its handler was installed
    } else if (c.role == Role::producer && code == kExitFenced && c.heartbeat_ms != 0) {
        ++n_.fenced_exits;  // judged dead by its own heartbeat timeout, refused, stopped (log line F)
    } else if (c.role == Role::reaper && c.side_pool && code == 1) {
        ++clean_exits_;  // the side pool did not exist at that moment
    } else {
        ++failed_exits_;
        std::string tail;
        std::ifstream f(c.log);
        std::stringstream ss;
        ss << f.rdbuf();
        tail = ss.str();
        if (tail.size() > 600) tail = tail.substr(tail.size() - 600);
        fail(std::string(role_name(c.role)) + " pid " + std::to_string(c.pid) + " exited with " +
             (WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                                : "signal " + std::to_string(WTERMSIG(status))) +
             " (crash point '" + c.crash_point + "', pause point '" + c.pause_point + "', random pauses " +
             std::to_string(c.pause_ppm) + " ppm); log " + c.log + ":\n" + tail);
    }
    // Replacements: producers and the ops child while the kill phase runs, workers always;
    // the reaper runs on its own schedule.
    if (c.role == Role::worker || (kill_phase_ && (c.role == Role::producer || c.role == Role::ops)))
        spawn(c.role, c.slot, kill_phase_);
}

bool Harness::kill_one() {
    if (live_.empty()) return false;
    // Mostly running processes; one in five draws may also hit a held (stopped) one.
    std::vector<size_t> pick;
    const bool any = rng_.below(5) == 0;
    for (size_t j = 0; j < live_.size(); ++j)
        if (any || !held_.count(live_[j].pid)) pick.push_back(j);
    if (pick.empty()) return false;
    const size_t i = pick[rng_.below(pick.size())];
    Child c = live_[i];
    if (held_.erase(c.pid)) ++killed_while_held_;
    ::kill(c.pid, SIGKILL);
    int status = 0;
    while (::waitpid(c.pid, &status, 0) == c.pid && WIFSTOPPED(status)) {
    }
    live_.erase(live_.begin() + long(i));
    if (c.role == Role::producer) finished_logs_.insert(c.log);
    if (WIFEXITED(status)) {
        on_exit(c, status);  // it exited just before the signal
        return true;
    }
    ++random_kills_;
    last_kill_ns_ = mono_now_ns();
    if (o_.verbose) std::fprintf(stderr, "torture: SIGKILL %s pid %d\n", role_name(c.role), int(c.pid));
    if (c.role != Role::reaper) spawn(c.role, c.slot, true);
    return true;
}

/// SIGSTOPs a random process for a span around the session timeout. Without --stalls only
/// workers: the group evicts the stalled worker, a live member takes its partitions over,
/// and when it resumes it is a zombie whose writes must be fenced.
void Harness::stall_one() {
    std::vector<pid_t> pids;
    for (const Child& c : live_)
        if (!held_.count(c.pid) && (o_.stalls || c.role == Role::worker)) pids.push_back(c.pid);
    if (pids.empty()) return;
    const pid_t pid = pids[rng_.below(pids.size())];
    ::kill(pid, SIGSTOP);
    // Wait for the stop (consumes its report, so reap_exited does not take it for a pause).
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WUNTRACED);
    if (r == pid && !WIFSTOPPED(status)) {
        // It exited before the signal landed.
        for (size_t i = 0; i < live_.size(); ++i)
            if (live_[i].pid == pid) {
                Child c = live_[i];
                live_.erase(live_.begin() + long(i));
                on_exit(c, status);
                break;
            }
        return;
    }
    ++sigstops_;
    hold(pid, "SIGSTOP");
}

/// The reaper role: one fabric-shm-reaper at a time, every 200-600 ms, alternating between
/// the main pool and the side pool.
void Harness::schedule_reaper() {
    for (const Child& c : live_)
        if (c.role == Role::reaper) return;
    const uint64_t now = mono_now_ns();
    if (now - last_reaper_ns_ < (200 + rng_.below(400)) * kNsPerMs) return;
    last_reaper_ns_ = now;
    spawn(Role::reaper, 0, true);
}

/// Ends the kill phase: held processes are resumed; processes still armed are killed (so no
/// crash point fires after "the last kill", and nothing stops itself any more) and workers
/// are replaced unarmed; the reaper and ops children are killed; producers are asked to stop.
void Harness::finish_kill_phase() {
    kill_phase_ = false;
    resume_held(true);
    std::vector<Child> doomed;
    for (const Child& c : live_)
        if (c.armed() || c.role == Role::reaper || c.role == Role::ops) doomed.push_back(c);
    for (const Child& c : doomed) {
        ::kill(c.pid, SIGKILL);
        int status = 0;
        while (::waitpid(c.pid, &status, 0) == c.pid && WIFSTOPPED(status)) {
        }
        live_.erase(std::find_if(live_.begin(), live_.end(), [&](const Child& x) { return x.pid == c.pid; }));
        if (c.role == Role::producer) finished_logs_.insert(c.log);
        if (WIFSIGNALED(status)) ++random_kills_;
        last_kill_ns_ = mono_now_ns();
        if (c.role == Role::worker) spawn(Role::worker, c.slot, false);
    }
    for (const Child& c : live_)
        if (c.role == Role::producer) ::kill(c.pid, SIGTERM);
}

// ---- what the children acknowledged ------------------------------------------------------------

/// Reads the whole lines appended to a log since the last call.
std::vector<std::string> read_new_lines(const std::string& path, uint64_t& pos) {
    std::vector<std::string> out;
    std::ifstream f(path, std::ios::binary);
    if (!f) return out;
    f.seekg(std::streamoff(pos));
    std::string chunk((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t end = chunk.rfind('\n');
    if (end == std::string::npos) return out;
    pos += end + 1;
    std::istringstream lines(chunk.substr(0, end + 1));
    std::string line;
    while (std::getline(lines, line)) out.push_back(line);
    return out;
}

void Harness::ingest_pause_log() {
    for (const std::string& line : read_new_lines(pause_log_, pause_log_pos_)) {
        std::istringstream ls(line);
        long pid = 0;
        std::string point;
        if (ls >> pid >> point) last_pause_[pid_t(pid)] = point;
    }
}

void Harness::ingest() {
    for (const auto& path : producer_logs_) {
        for (const std::string& line : read_new_lines(path, log_pos_[path])) {
            std::istringstream ls(line);
            std::string tag, key;
            ls >> tag >> key;
            if (tag == "P") {
                KeyState& k = in_[key];
                k.log = path;
                k.put_acked = true;
                ls >> k.size >> k.version;
                ++n_.puts;
            } else if (tag == "N" || tag == "X") {
                KeyState& k = in_[key];
                k.log = path;
                k.notified = true;
                k.poison = tag == "X";
                ls >> k.partition >> k.offset;
                ++(k.poison ? n_.poison : n_.notifications);
            } else if (tag == "IX") {
                KeyState& k = in_[key];
                k.log = path;
                k.poison = true;
            } else if (tag == "T") {
                producer_token_[path] = uint32_t(std::strtoul(key.c_str(), nullptr, 10));
            } else if (tag == "RS") {
                ++n_.resent;
            } else if (tag == "IS") {
                KeyState& k = scratch_[key];
                k.log = path;
                if (k.steps.empty()) k.steps.push_back(std::nullopt);
                int v = 0;
                uint64_t size = 0;
                ls >> v >> size;
                k.steps.push_back(std::make_pair(v, size));
            } else if (tag == "S" || tag == "R") {
                KeyState& k = scratch_[key];
                k.acked_steps = int(k.steps.size()) - 1;
            } else if (tag == "IR") {
                scratch_[key].steps.push_back(std::nullopt);
            } else if (tag == "E") {
                fail("producer call failed: " + path + ": " + line);
            } else if (tag == "F" && producer_heartbeat_[path] == 0) {
                fail("producer without a heartbeat timeout says it was fenced: " + path + ": " + line);
            }
        }
    }
}
/// An acknowledged put is readable with its version and bytes; its result (required once
/// the notification is acknowledged and committed) names the input and holds its crc32.
bool Harness::verify_in(MemObjectStore& store, const std::string& key, const KeyState& k, bool need_result) {
    bool ok = true;
    const std::string data = torture::content(key, 1, k.size);
    auto uri = FabricUri::make(pool_name_, kInBucket, key);
    auto g = store.get(*uri);
    if (!g || !*g) {
        fail("acknowledged put " + uri->to_string() + " v" + std::to_string(k.version) + " is " +
             (g ? "absent" : g.error().message));
        ok = false;
    } else if ((*g)->info.version != k.version || std::string((*g)->data.begin(), (*g)->data.end()) != data) {
        fail(uri->to_string() + ": version " + std::to_string((*g)->info.version) + " size " +
             std::to_string((*g)->data.size()) + ", acknowledged version " + std::to_string(k.version) + " size " +
             std::to_string(k.size));
        ok = false;
    }
    auto ruri = FabricUri::make(pool_name_, kResultBucket, result_key(key));
    auto r = store.get(*ruri);
    if (!r) {
        fail("result " + key + ": " + r.error().message);
        return false;
    }
    if (!*r) {
        if (need_result) {
            fail("acknowledged notification " + key + " (partition " + std::to_string(k.partition) + " offset " +
                 std::to_string(k.offset) + ") has no result");
            return false;
        }
        return ok;
    }
    ++n_.results;
    if (!k.notified) ++n_.unacked_results;
    const std::string body((*r)->data.begin(), (*r)->data.end());
    const auto& md = (*r)->info.metadata;
    const auto iv = md.find(std::string(kResultInputVersion));
    const auto iu = md.find(std::string(kResultInputUri));
    if (body != e2e::crc_hex(data)) {
        fail("result " + key + " is '" + body.substr(0, 32) + "', want the crc32 of the input");
        ok = false;
    }
    if (iv == md.end() || iv->second != std::to_string(k.version)) {
        fail("result " + key + " records input version " + (iv == md.end() ? "none" : iv->second) + ", acknowledged " +
             std::to_string(k.version));
        ok = false;
    }
    if (iu == md.end() || iu->second != uri->to_string()) {
        fail("result " + key + " records input uri " + (iu == md.end() ? "none" : iu->second));
        ok = false;
    }
    return ok;
}

/// A scratch key holds the state after the last acknowledged call, or after the one call
/// that was in flight when its producer died.
bool Harness::verify_scratch(MemObjectStore& store, const std::string& key, const KeyState& k) {
    if (k.steps.empty()) return true;
    auto uri = FabricUri::make(pool_name_, kScratchBucket, key);
    auto g = store.get(*uri);
    if (!g) {
        fail(uri->to_string() + ": " + g.error().message);
        return false;
    }
    auto matches = [&](const std::optional<std::pair<int, uint64_t>>& st) {
        if (!st) return !*g;
        return *g && std::string((**g).data.begin(), (**g).data.end()) == torture::content(key, st->first, st->second);
    };
    const size_t a = size_t(k.acked_steps);
    const bool ok = matches(k.steps[a]) || (a + 1 < k.steps.size() && matches(k.steps[a + 1]));
    if (!ok)
        fail(uri->to_string() + ": " + (*g ? "holds unexpected bytes" : "is absent") + " after " + std::to_string(a) +
             " acknowledged call(s)");
    (*g ? n_.scratch_live : n_.scratch_removed)++;
    return ok;
}

/// Dead letters seen so far, by their source message (partition, offset). The harness reads
/// the DLQ topic as its own group and commits what it read (a block-mode DLQ nobody consumes
/// would fill up), every cleaning round.
void Harness::collect_dead_letters(Pool& pool) {
    if (!o_.stalls) return;
    if (!dlq_) {
        auto c = Consumer::open(pool, kDlqTopic, "torture-dlq-check");
        if (!c) {
            fail("dlq consumer: " + c.error().message);
            return;
        }
        if (Status st = c->assign_all(); !st) {
            fail("dlq consumer: " + st.error().message);
            return;
        }
        dlq_.emplace(std::move(*c));
    }
    MessageBatch batch;
    for (;;) {
        auto n = dlq_->poll(batch, 64, Duration::zero());
        if (!n) {
            fail("dlq poll: " + n.error().message);
            return;
        }
        if (*n == 0) break;
        for (const Message& m : batch) {
            const std::string value(m.value_str()), reason(m.header(kDlqHeaderReason)),
                part(m.header(kDlqHeaderPartition)), off(m.header(kDlqHeaderOffset));
            ++dead_letter_records_;
            dead_letters_.insert({uint32_t(std::strtoul(part.c_str(), nullptr, 10)),
                                  uint64_t(std::strtoull(off.c_str(), nullptr, 10))});
            // Judged in check(), once every producer log is read: a poison notification may
            // be dead-lettered before its producer logged it.
            dead_letter_list_.push_back({value, reason, std::string(), std::string(), part, off});
        }
    }
    if (Status st = dlq_->commit(); !st) fail("dlq commit: " + st.error().message);
}

/// No two live processes share a token: each producer's registry token (its log's T line) and
/// each worker's member token name its own pid while the child lives.
void Harness::check_tokens(Pool& pool) {
    const auto* slots = reinterpret_cast<const layout::ProcessSlot*>(detail::pool_base(pool) + layout::kRegistryOffset);
    auto check = [&](const char* who, pid_t pid, OwnerToken t) {
        if (t == 0) return;
        ++n_.token_checks;
        const uint64_t w = slots[layout::token_slot(t)].word.load(std::memory_order_acquire);
        const uint64_t st = layout::slot_word_state(w);
        if (layout::slot_word_gen(w) != layout::token_gen(t) || st == layout::kSlotFree) return;  // ended (checked on holds)
        if (st == layout::kSlotRetiring) return;  // the retirer's pid is in the word
        if (layout::slot_word_pid(w) != uint32_t(pid))
            fail(std::string(who) + " pid " + std::to_string(pid) + " holds token " + std::to_string(t) +
                 " whose registry slot names " + describe_slot_word(w) + ": two live processes share a token");
    };
    for (const Child& c : live_)
        if (c.role == Role::producer)
            if (auto it = producer_token_.find(c.log); it != producer_token_.end()) check("producer", c.pid, it->second);
    auto d = describe_consumer_group(pool, kTopic, kGroup);
    if (!d) return;
    std::map<OwnerToken, std::string> owners;
    for (const MemberDescription& m : d->members) {
        const Child* c = child(pid_t(m.pid));
        if (!c || c->role != Role::worker) continue;
        check("worker", pid_t(m.pid), m.owner);
        if (!m.alive) continue;
        auto [it, fresh] = owners.emplace(m.owner, m.id);
        if (!fresh)
            fail("live group members '" + it->second + "' and '" + m.id + "' share token " + std::to_string(m.owner));
    }
}

/// Keeps the object count steady: verifies and removes (on purpose) the inputs and results
/// of notifications the group committed past (no redelivery can need them), and the scratch
/// keys of producers that are gone. A committed offset past a message means the message has
/// its result or (poison) its dead letter: both are written before the commit.
void Harness::clean(Pool& pool) {
    ingest();
    // The partitions' heads first, then the group's offsets: a head only follows offsets up,
    // so head <= committed must hold between the two reads too.
    std::vector<PartitionDescription> parts;
    if (o_.stalls)
        if (auto t = TopicManager(pool).describe(kTopic)) parts = t->partitions;
    auto d = describe_consumer_group(pool, kTopic, kGroup);
    auto store_r = MemObjectStore::attach(pool);
    if (!d || !store_r) return;
    std::map<uint32_t, uint64_t> committed;
    for (const auto& p : d->partitions) committed[p.partition] = p.committed;
    for (const PartitionDescription& p : parts)
        if (p.head > committed[p.partition])
            fail("topic '" + std::string(kTopic) + "' partition " + std::to_string(p.partition) + ": head " +
                 std::to_string(p.head) + " passed the group's committed offset " +
                 std::to_string(committed[p.partition]) + " (block mode may overwrite messages the group has not "
                 "committed)");
    MemObjectStore& store = **store_r;
    bool dlq_read = false;
    for (auto& [key, k] : in_) {
        if (k.done || !k.notified || committed[k.partition] <= k.offset) continue;
        if (k.poison) {
            const auto src = std::make_pair(k.partition, k.offset);
            if (!dead_letters_.count(src) && !dlq_read) {
                collect_dead_letters(pool);
                dlq_read = true;
            }
            // Not seen yet is not missing: a DLQ send published after a claim of a sender that
            // is stopped (or was killed) in the same DLQ partition stays unreadable until that
            // claim is published or skipped (the consumer waits for it up to the claim timeout).
            // check() requires every acknowledged poison notification's dead letter at the end.
            if (dead_letters_.count(src)) k.done = true;
            continue;
        }
        if (!k.put_acked) continue;
        verify_in(store, key, k, true);
        ++n_.verified_in;
        for (const char* b : {kInBucket, kResultBucket}) {
            auto u = FabricUri::make(pool_name_, b, b == kResultBucket ? result_key(key) : key);
            if (auto r = store.remove(*u); !r) fail("remove " + u->to_string() + ": " + r.error().message);
        }
        k.done = true;
        ++n_.cleaned;
    }
    if (!dlq_read) collect_dead_letters(pool);
    for (auto& [key, k] : scratch_) {
        if (k.done || !finished_logs_.count(k.log)) continue;
        verify_scratch(store, key, k);
        auto u = FabricUri::make(pool_name_, kScratchBucket, key);
        if (auto r = store.remove(*u); !r) fail("remove " + u->to_string() + ": " + r.error().message);
        k.done = true;
    }
    if (!o_.stalls) return;
    // No object's bytes change after its put was acknowledged: spot-check a few acknowledged
    // inputs the group has not committed past yet (they are checked again when it has).
    std::vector<const std::string*> open;
    for (const auto& [key, k] : in_)
        if (!k.done && k.put_acked) open.push_back(&key);
    for (int i = 0; i < 8 && !open.empty(); ++i) {
        const std::string& key = *open[rng_.below(open.size())];
        verify_in(store, key, in_[key], false);
        ++n_.spot_checks;
    }
    check_tokens(pool);
}

bool Harness::drained(Pool& pool, std::string* why) {
    auto d = describe_consumer_group(pool, kTopic, kGroup);
    if (!d) {
        *why = "group: " + d.error().message;
        return false;
    }
    uint64_t lag = 0;
    for (const auto& p : d->partitions) lag += p.lag;
    if (lag != 0) {
        *why = "group lag " + std::to_string(lag);
        return false;
    }
    // Every worker running is a live member again (replacements joined, zombies rejoined).
    size_t members = 0, workers = 0;
    for (const auto& m : d->members) members += m.alive ? 1 : 0;
    for (const Child& c : live_) workers += c.role == Role::worker ? 1 : 0;
    if (members != workers) {
        *why = std::to_string(members) + " live group members for " + std::to_string(workers) + " workers";
        return false;
    }
    ingest();
    auto store = MemObjectStore::attach(pool);
    if (!store) {
        *why = "store: " + store.error().message;
        return false;
    }
    uint64_t missing = 0;
    for (const auto& [key, k] : in_) {
        if (k.done || !k.notified || k.poison) continue;
        auto u = FabricUri::make(pool.name(), kResultBucket, result_key(key));
        auto h = (*store)->head(*u);
        if (!h || !*h) ++missing;
    }
    if (missing) {
        *why = std::to_string(missing) + " acknowledged notifications without a result";
        return false;
    }
    return true;
}

int dump_check(const std::string& pool, std::string* out) {
    return test::run_command(test::build_path("tools/dump/fabric-shm-dump") + " --pool " + pool + " --check 2>&1", out);
}

/// The ops children's logs: no failure other than failing closed, and every tiered object
/// acknowledged before a checkpoint with the hot objects is readable with its bytes from the
/// cold directory, through a fresh pool (the side pool was removed and re-created many times).
void Harness::check_ops() {
    std::vector<std::pair<std::string, uint64_t>> durable;
    for (const auto& path : ops_logs_) {
        uint64_t pos = 0;
        std::vector<std::pair<std::string, uint64_t>> pending;
        for (const std::string& line : read_new_lines(path, pos)) {
            std::istringstream ls(line);
            std::string tag, key;
            ls >> tag >> key;
            if (tag == "TP") {
                uint64_t size = 0;
                ls >> size;
                pending.emplace_back(key, size);
                ++n_.tiered_acked;
            } else if (tag == "TC") {
                durable.insert(durable.end(), pending.begin(), pending.end());
                pending.clear();
            } else if (tag == "O") {
                // A new round: the hot-only puts of a round that ended without its checkpoint
                // were lost with the side pool (its lease ran out while the child was stopped),
                // as docs/tiered-store.md says of a pool that expires; the next TC is not theirs.
                pending.clear();
            } else if (tag == "L") {
                ++n_.ops_closed;
            } else if (tag == "RP") {
                ++n_.ops_rounds;
            } else if (tag == "E") {
                fail("ops call failed: " + path + ": " + line);
            }
        }
    }
    n_.tiered_durable = durable.size();
    if (ops_logs_.empty()) return;
    const std::string check_pool = test::unique_pool_name("torture-tier");
    test::PoolCleanup cleanup(check_pool);
    OpenOptions oo;
    oo.create_if_missing = true;
    oo.create.size_bytes = 16ull << 20;
    auto pool = Pool::open(check_pool, oo);
    if (!pool) {
        fail("tiered check pool: " + pool.error().message);
        return;
    }
    TieredConfig tc;
    tc.cold_dir = cold_dir_;
    tc.fsync = FsyncPolicy::never;
    tc.max_hot = 64;
    std::string note;
    auto tiered = TieredObjectStore::open(*pool, tc, &note);
    if (!tiered) {
        fail("tiered store over " + cold_dir_ + ": " + tiered.error().message);
        return;
    }
    for (const auto& [key, size] : durable) {
        auto u = FabricUri::make(check_pool, kTieredBucket, key);
        auto g = (*tiered)->peek(*u);
        if (!g || !*g)
            fail("tiered object " + key + " (checkpointed with the hot objects) is " + (g ? "absent" : g.error().message));
        else if (std::string((*g)->data.begin(), (*g)->data.end()) != tiered_content(key, size))
            fail("tiered object " + key + " holds other bytes than its acknowledged put");
    }
}

int Harness::check(Pool& pool) {
    ingest();
    auto store_r = MemObjectStore::attach(pool);
    if (!store_r) {
        fail("store attach: " + store_r.error().message);
        return 1;
    }
    MemObjectStore& store = **store_r;
    // 1.-3. what is left: acknowledged puts readable, acknowledged notifications with one
    // correct result, scratch keys in an allowed state. Results of keys never put: none.
    for (auto& [key, k] : in_) {
        if (k.done || !k.put_acked) continue;
        verify_in(store, key, k, k.notified);
        ++n_.verified_in;
    }
    for (auto& [key, k] : scratch_)
        if (!k.done) verify_scratch(store, key, k);
    if (auto keys = store.list(pool.name(), kResultBucket, ""))
        for (const auto& result : *keys) {
            // Every result is keyed "<input bucket>/<input key>": one without that prefix, or
            // with one naming no input put, is a result nobody asked for.
            const std::string prefix = result_key("");
            const std::string key = result.rfind(prefix, 0) == 0 ? result.substr(prefix.size()) : result;
            auto it = result.rfind(prefix, 0) == 0 ? in_.find(key) : in_.end();
            if (it == in_.end() || !it->second.put_acked) {
                // A put killed before its acknowledgement may still have been notified.
                if (it == in_.end()) fail("result " + key + " has no put in any producer log");
                else if (it->second.poison) fail("result " + key + " was written for a poison notification");
            } else if (it->second.done) {
                fail("result " + key + " reappeared after it was verified and removed (a duplicate delivery)");
            }
        }
    // 4. dead letters: only poison (max-attempts is effectively unlimited: nothing else fails),
    // and every poison notification the group committed past has one.
    const auto dlq = o_.stalls ? std::vector<e2e::DeadLetter>{} : e2e::read_dlq(pool, std::string(kTopic) + ".dlq");
    if (o_.stalls) {
        collect_dead_letters(pool);
        // Only poison is ever dead-lettered (max attempts is effectively unlimited).
        for (const e2e::DeadLetter& dl : dead_letter_list_) {
            auto it = in_.find(dl.value.substr(dl.value.rfind('/') + 1));
            if (it == in_.end() || !it->second.poison)
                fail("dead letter " + dl.value + " (partition " + dl.partition + " offset " + dl.offset +
                     ") is not a poison notification: " + dl.reason);
        }
        // Only acknowledged ones: a poison send in flight when its producer was killed (`IX`
        // without `X`) may or may not have landed, and its partition and offset are unknown.
        for (auto& [key, k] : in_)
            if (k.poison && k.notified && !k.done && !dead_letters_.count({k.partition, k.offset}))
                fail("poison notification " + key + " (partition " + std::to_string(k.partition) + " offset " +
                     std::to_string(k.offset) + ") was not dead-lettered");
    } else {
        for (const auto& dl : dlq) fail("dead letter " + dl.value + ": " + dl.reason);
    }

    // 5. space: once the reaper ran, the heap holds exactly the live objects' blocks.
    std::string out;
    int rc = test::run_command(test::build_path("tools/reaper/fabric-shm-reaper") + " --pool " + pool_name_ + " 2>&1", &out);
    if (rc != 0) fail("fabric-shm-reaper exited " + std::to_string(rc) + ": " + out);
    const Space sp = measure_space(pool);
    if (!sp.error.empty()) fail("space: " + sp.error);
    if (sp.used_bytes != sp.live_block_bytes || sp.loans || sp.pins)
        fail("space leaked after the reaper: heap used " + std::to_string(sp.used_bytes) + " B, live objects' blocks " +
             std::to_string(sp.live_block_bytes) + " B (" + std::to_string(sp.objects) + " objects), loans " +
             std::to_string(sp.loans) + ", pins " + std::to_string(sp.pins));
    out.clear();
    rc = dump_check(pool_name_, &out);
    if (rc != 0) fail("fabric-shm-dump --check (after the reaper) exited " + std::to_string(rc) + ":\n" + out);
    // Then remove every object: the heap must come back whole (no block leaked).
    for (const char* b : {kInBucket, kScratchBucket, kResultBucket}) {
        auto ks = store.list(pool.name(), b, "");
        if (!ks) continue;
        for (const auto& key : *ks) {
            auto u = FabricUri::make(pool.name(), b, key);
            if (u) (void)store.remove(*u);
        }
    }
    (void)test::run_command(test::build_path("tools/reaper/fabric-shm-reaper") + " --pool " + pool_name_ + " >/dev/null 2>&1");
    const StoreStats empty = store.stats();
    if (empty.objects != 0 || empty.heap_used_bytes != 0)
        fail("after removing every object: " + std::to_string(empty.objects) + " objects, heap used " +
             std::to_string(empty.heap_used_bytes) + " B");
    if (o_.stalls) check_ops();

    std::printf("torture: objects put %" PRIu64 " (acknowledged), notifications %" PRIu64
                " (acknowledged), inputs verified %" PRIu64 ", results %" PRIu64 " (%" PRIu64
                " of sends killed before their acknowledgement), removed on purpose %" PRIu64 "\n",
                n_.puts, n_.notifications, n_.verified_in, n_.results, n_.unacked_results, n_.cleaned);
    std::printf("torture: scratch objects %" PRIu64 " present, %" PRIu64 " absent as allowed; dead letters %" PRIu64
                "\n",
                n_.scratch_live, n_.scratch_removed, o_.stalls ? dead_letter_records_ : uint64_t(dlq.size()));
    std::printf("torture: space after the reaper: heap used %" PRIu64 " B = live blocks %" PRIu64 " B (%" PRIu64
                " objects, payload %" PRIu64 " B); after removing all: used %" PRIu64
                " B, largest free extent %" PRIu64 " of %" PRIu64 " B\n",
                sp.used_bytes, sp.live_block_bytes, sp.objects, sp.payload_bytes, empty.heap_used_bytes,
                empty.largest_free_extent, empty.heap_capacity_bytes);
    if (o_.stalls) {
        std::printf("torture: poison notifications %" PRIu64 " (each dead-lettered; %" PRIu64
                    " dead-letter records), sends refused as skipped and sent again %" PRIu64 "\n",
                    n_.poison, dead_letter_records_, n_.resent);
        std::printf("torture: stall checks: %" PRIu64 " registry checks of held processes, %" PRIu64
                    " token checks, %" PRIu64 " spot checks of acknowledged bytes; heartbeat-timeout producers "
                    "fenced while held %" PRIu64 ", stopped after a refused call %" PRIu64 "\n",
                    n_.registry_checks, n_.token_checks, n_.spot_checks, n_.fenced_seen, n_.fenced_exits);
        std::printf("torture: ops: %" PRIu64 " side-pool rounds, %" PRIu64 " calls failed closed, tiered puts %" PRIu64
                    " acknowledged, %" PRIu64 " checkpointed and verified; reaper runs %" PRIu64 "\n",
                    n_.ops_rounds, n_.ops_closed, n_.tiered_acked, n_.tiered_durable, n_.reaper_runs);
    }
    return 0;
}

int Harness::run() {
    pool_name_ = test::unique_pool_name("torture");
    side_pool_ = test::unique_pool_name("torture-side");
    test::PoolCleanup cleanup(o_.keep ? std::string("t-keep-nothing") : pool_name_);
    test::PoolCleanup side_cleanup(side_pool_);
    dir_ = (fs::temp_directory_path() / ("fabric-torture-" + std::to_string(getpid()))).string();
    cold_dir_ = dir_ + "/cold";
    pause_log_ = dir_ + "/pauses.log";
    fs::create_directories(dir_);
    std::printf("torture: seed %" PRIu64 " (replay: --seed %" PRIu64 "), pool %s, %d producers, %d workers, "
                "session timeout %" PRIu64 " ms, target %" PRIu64 " kills",
                o_.seed, o_.seed, pool_name_.c_str(), o_.producers, o_.workers, o_.session_timeout_ms, o_.kills);
    if (o_.stalls)
        std::printf(" and %" PRIu64 " stalls (%d %% of events SIGSTOP, replacements armed: %d %% crash, %d %% pause "
                    "point, %d %% random pauses; reaper and side-pool ops processes)",
                    o_.stall_target, o_.stall_percent, o_.crash_point_percent, o_.pause_point_percent,
                    o_.random_pause_percent);
    if (o_.max_seconds) std::printf(", at most %" PRIu64 " s", o_.max_seconds);
    std::printf("\n");
    std::fflush(stdout);
    OpenOptions oo;
    oo.create_if_missing = true;
    oo.create.size_bytes = 64ull << 20;
    auto pool = Pool::open(pool_name_, oo);
    if (!pool) {
        std::fprintf(stderr, "torture: pool: %s\n", pool.error().message.c_str());
        return 1;
    }
    pool_ = &*pool;
    // The harness's DLQ consumer maps regions of this pool: it closes before the pool unmaps
    // (declared after `pool`, so destroyed first on every return).
    struct CloseBeforePool {
        Harness& h;
        ~CloseBeforePool() {
            h.dlq_.reset();
            h.pool_ = nullptr;
        }
    } close_before_pool{*this};
    if (auto s = MemObjectStore::open(*pool); !s) {
        std::fprintf(stderr, "torture: store: %s\n", s.error().message.c_str());
        return 1;
    }
    TopicManager tm(*pool);
    if (Status st = tm.create(kTopic, TopicConfig{}); !st) {
        std::fprintf(stderr, "torture: topic: %s\n", st.error().message.c_str());
        return 1;
    }
    if (Status st = tm.register_group(kTopic, kGroup); !st) {
        std::fprintf(stderr, "torture: group: %s\n", st.error().message.c_str());
        return 1;
    }
    // Poison notifications are dead-lettered: the DLQ topic is made here so that the pool's
    // regions stay those of the setup.
    TopicConfig dlq_cfg;  // as DlqRouter makes it (mq/dlq.cpp)
    dlq_cfg.partition_capacity = 256;
    dlq_cfg.partition_stride = 1024;
    if (o_.stalls)
        if (Status st = tm.create(kDlqTopic, dlq_cfg); !st) {
            std::fprintf(stderr, "torture: dlq topic: %s\n", st.error().message.c_str());
            return 1;
        }

    // The workers create the pool's latency-histogram region (kind metrics) on their first
    // result, so it is not among the setup's regions: it is checked on its own below.
    auto region_summary = [&] {
        std::string out;
        for (const RegionInfo& r : pool->regions())
            if (r.kind != uint32_t(RegionKind::metrics))
                out += std::string(region_kind_name(r.kind)) + " '" + r.name + "' " + r.state + " " +
                       std::to_string(r.length) + " B; ";
        return out;
    };
    const std::string regions_before = region_summary();
    const uint64_t start = mono_now_ns();
    for (int i = 0; i < o_.workers; ++i) spawn(Role::worker, i, false);
    for (int i = 0; i < o_.producers; ++i) spawn(Role::producer, i, false);
    if (o_.stalls) spawn(Role::ops, 0, false);
    uint64_t last_clean = mono_now_ns();
    auto targets_met = [&] { return kills() >= o_.kills && stalls() >= o_.stall_target; };
    while (!targets_met()) {
        if (o_.max_seconds && mono_now_ns() - start > o_.max_seconds * kNsPerSec) break;
        const int delay = int(rng_.below(uint64_t(2 * o_.mean_interval_ms)));
        const uint64_t until = mono_now_ns() + uint64_t(delay) * kNsPerMs;
        while (mono_now_ns() < until) {
            reap_exited();
            resume_held(false);
            if (o_.stalls) schedule_reaper();
            ::usleep(5000);
        }
        if (mono_now_ns() - last_clean > 500 * kNsPerMs) {
            clean(*pool);
            last_clean = mono_now_ns();
        }
        reap_exited();
        // Once one target is met, the events go to the other.
        const bool stall = kills() >= o_.kills ? true
                           : (o_.stall_target && stalls() >= o_.stall_target) ? false
                                                                             : int(rng_.below(100)) < o_.stall_percent;
        if (stall)
            stall_one();
        else
            kill_one();
        if (failed_exits_ > 20) {
            fail("more than 20 processes failed on their own: stopping the kill phase");
            break;
        }
    }
    finish_kill_phase();
    const uint64_t kill_phase_ns = mono_now_ns() - start;

    // Drain: producers finish their object in flight, then every acknowledged notification
    // must have its result and the group no lag, within the bound.
    for (;;) {
        bool producers_left = false;
        for (const Child& c : live_) producers_left |= c.role == Role::producer;
        if (!producers_left) break;
        reap_exited();
        ::usleep(10000);
        if (mono_now_ns() - last_kill_ns_ > 60 * kNsPerSec) {
            fail("producers did not stop within 60 s of SIGTERM");
            break;
        }
    }
    const uint64_t bound_ns = (o_.session_timeout_ms + 10000) * kNsPerMs;
    std::string why;
    bool ok = false;
    while (!(ok = drained(*pool, &why)) && mono_now_ns() - last_kill_ns_ < bound_ns) {
        reap_exited();
        ::usleep(50000);
    }
    const double drain_s = double(mono_now_ns() - last_kill_ns_) / 1e9;
    if (!ok) fail("not drained " + std::to_string(drain_s) + " s after the last kill: " + why);
    clean(*pool);  // the last committed offsets: results and dead letters present

    // Stop the workers (SIGTERM: commit, leave) and check.
    for (const Child& c : live_) ::kill(c.pid, SIGTERM);
    for (const Child& c : live_) {
        const int rc = test::wait_child(c.pid, 15000);
        if (rc != 0)
            fail(std::string(role_name(c.role)) + " pid " + std::to_string(c.pid) + " exited " + std::to_string(rc) +
                 " after SIGTERM");
    }
    live_.clear();
    std::string out;
    const int rc = dump_check(pool_name_, &out);
    if (rc != 0) fail("fabric-shm-dump --check (before the reaper) exited " + std::to_string(rc) + ":\n" + out);
    check(*pool);
    // The pool itself: after the reaper, exactly the regions made at setup, all live (no
    // half-made region of a killed creator, no region left reclaiming, no DLQ topic).
    const std::string regions_after = region_summary();
    if (regions_after != regions_before)
        fail("pool regions changed: before the kills " + regions_before + "after the reaper " + regions_after);
    int metrics_regions = 0;
    for (const RegionInfo& r : pool->regions()) {
        if (r.kind != uint32_t(RegionKind::metrics)) continue;
        ++metrics_regions;
        if (r.state != "live") fail("metrics region '" + r.name + "' is " + r.state + " after the reaper");
    }
    if (metrics_regions > 1) fail(std::to_string(metrics_regions) + " metrics regions after the reaper (one per pool)");

    std::printf("torture: kills %" PRIu64 " (%" PRIu64 " random SIGKILLs, %" PRIu64 " at crash points; %" PRIu64
                " processes armed), processes started %" PRIu64 ", clean exits %" PRIu64 ", kill phase %.1f s\n",
                kills(), random_kills_, crash_point_deaths_, armed_, incarnations_, clean_exits_,
                double(kill_phase_ns) / 1e9);
    std::string pts;
    for (const auto& [p, n] : point_deaths_) pts += " " + p + "=" + std::to_string(n);
    std::printf("torture: crash points hit:%s\n", pts.empty() ? " none" : pts.c_str());
    if (o_.stall_percent || o_.stalls)
        std::printf("torture: stalls %" PRIu64 " (%" PRIu64 " SIGSTOPs, %" PRIu64 " stops at pause points held; %" PRIu64
                    " held processes killed)\n",
                    stalls(), sigstops_, pauses_held_, killed_while_held_);
    if (o_.stalls) {
        std::string pp;
        for (const auto& [p, n] : point_pauses_) pp += " " + p + "=" + std::to_string(n);
        std::printf("torture: pause points held:%s\n", pp.empty() ? " none" : pp.c_str());
        size_t reached = 0, reachable = 0;
        for (const FaultPoint& p : fault_points()) {
            if (p.roles == 0) continue;  // in code that no torture role runs (the bridge)
            ++reachable;
            reached += point_pauses_.count(p.name) || point_deaths_.count(p.name);
        }
        std::printf("torture: fault points reached %zu of %zu\n", reached, reachable);
    }
    std::printf("torture: drained %.1f s after the last kill (bound %.0f s = session timeout + 10 s)\n", drain_s,
                double(bound_ns) / 1e9);
    std::printf("torture: violations %" PRIu64 "\n", violations_);
    std::printf("torture: %s (seed %" PRIu64 ")\n", violations_ ? "FAILED" : "PASSED", o_.seed);
    if (!violations_ && !o_.keep) fs::remove_all(dir_);
    if (o_.keep) std::printf("torture: kept pool %s and logs in %s\n", pool_name_.c_str(), dir_.c_str());
    return violations_ ? 1 : 0;
}

void usage() {
    std::fprintf(stderr,
                 "usage: torture [--seed N] [--kills N] [--producers N] [--workers N] [--session-timeout-ms N]\n"
                 "               [--interval-ms N] [--objects N] [--crash-point-percent N] [--stall-percent N]\n"
                 "               [--stalls] [--stall-count N] [--pause-point-percent N] [--random-pause-percent N]\n"
                 "               [--heartbeat-percent N] [--poison-percent N] [--max-seconds N] [--keep] [--verbose]\n"
                 "       torture --list-points\n"
                 "--stalls: stall mode (docs/reliability.md): SIGSTOPs and pause points besides the kills, a reaper\n"
                 "and a side-pool process, the stall invariants; defaults --stall-percent 50 --stall-count <kills>\n"
                 "--session-timeout-ms 1000 --producers 3 --workers 3 --crash-point-percent 25.\n"
                 "FABRIC_SHM_TORTURE_KILLS=N overrides --kills (CI sanitizer builds use a shorter run).\n");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && std::string(argv[1]) == "--child-producer") {
        if (argc != 9) return 2;
        ProducerArgs a;
        a.pool = argv[2];
        a.log = argv[3];
        a.prefix = argv[4];
        a.seed = std::strtoull(argv[5], nullptr, 10);
        a.max_objects = std::strtoull(argv[6], nullptr, 10);
        a.heartbeat_timeout_ms = std::strtoull(argv[7], nullptr, 10);
        a.poison_percent = uint32_t(std::strtoul(argv[8], nullptr, 10));
        return producer_child(a);
    }
    if (argc >= 2 && std::string(argv[1]) == "--child-ops") {
        if (argc != 7) return 2;
        OpsArgs a;
        a.pool = argv[2];
        a.cold_dir = argv[3];
        a.log = argv[4];
        a.prefix = argv[5];
        a.seed = std::strtoull(argv[6], nullptr, 10);
        a.rounds = 1'000'000;  // until killed or stopped
        return ops_child(a);
    }
    if (argc == 2 && std::string(argv[1]) == "--list-points") {
        for (const FaultPoint& p : fault_points()) std::printf("%s %u\n", p.name, unsigned(p.roles));
        return 0;
    }
    Options o;
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    o.seed = uint64_t(ts.tv_nsec) ^ (uint64_t(ts.tv_sec) << 20) ^ uint64_t(getpid());
    bool stall_percent_given = false, timeout_given = false, producers_given = false, crash_given = false;
    bool stall_count_given = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto num = [&](uint64_t& v) {
            if (i + 1 >= argc) return false;
            char* end = nullptr;
            v = std::strtoull(argv[++i], &end, 10);
            return end && *end == '\0';
        };
        uint64_t v = 0;
        if (a == "--keep") o.keep = true;
        else if (a == "--verbose") o.verbose = true;
        else if (a == "--stalls") o.stalls = true;
        else if (a == "--seed" && num(v)) o.seed = v;
        else if (a == "--kills" && num(v)) o.kills = v;
        else if (a == "--producers" && num(v) && v >= 1 && v <= 16) o.producers = int(v), producers_given = true;
        else if (a == "--workers" && num(v) && v >= 1 && v <= 16) o.workers = int(v);
        else if (a == "--session-timeout-ms" && num(v) && v >= 100) o.session_timeout_ms = v, timeout_given = true;
        else if (a == "--interval-ms" && num(v) && v >= 1) o.mean_interval_ms = int(v);
        else if (a == "--objects" && num(v) && v >= 1) o.objects_per_producer = v;
        else if (a == "--crash-point-percent" && num(v) && v <= 100) o.crash_point_percent = int(v), crash_given = true;
        else if (a == "--stall-percent" && num(v) && v <= 100) o.stall_percent = int(v), stall_percent_given = true;
        else if (a == "--stall-count" && num(v)) o.stall_target = v, stall_count_given = true;
        else if (a == "--pause-point-percent" && num(v) && v <= 100) o.pause_point_percent = int(v);
        else if (a == "--random-pause-percent" && num(v) && v <= 100) o.random_pause_percent = int(v);
        else if (a == "--heartbeat-percent" && num(v) && v <= 100) o.heartbeat_percent = int(v);
        else if (a == "--poison-percent" && num(v) && v <= 100) o.poison_percent = int(v);
        else if (a == "--max-seconds" && num(v)) o.max_seconds = v;
        else {
            usage();
            return 2;
        }
    }
    if (const char* k = std::getenv("FABRIC_SHM_TORTURE_KILLS"); k && *k) o.kills = std::strtoull(k, nullptr, 10);
    if (o.stalls) {
        if (!stall_percent_given) o.stall_percent = 50;
        if (!stall_count_given) o.stall_target = o.kills;
        if (!timeout_given) o.session_timeout_ms = 1000;
        if (!producers_given) o.producers = 3;
        if (!crash_given) o.crash_point_percent = 25;
        if (o.crash_point_percent + o.pause_point_percent + o.random_pause_percent > 100) {
            std::fprintf(stderr, "torture: --crash-point-percent + --pause-point-percent + --random-pause-percent > 100\n");
            return 2;
        }
    }
    const std::string exe = test::self_exe_setting_build_dir();  // run by hand: finds the tools too
    if (exe.empty()) return 1;
    for (const std::string& tool : {e2e::worker_bin(), test::build_path("tools/dump/fabric-shm-dump"),
                                    test::build_path("tools/reaper/fabric-shm-reaper")})
        if (::access(tool.c_str(), X_OK) != 0) {
            std::fprintf(stderr, "torture: %s is missing (build it, or set FABRIC_SHM_TEST_BUILD_DIR)\n", tool.c_str());
            return 2;
        }
    Harness h(o, exe);
    return h.run();
}
