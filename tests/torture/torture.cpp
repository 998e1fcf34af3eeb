// SPDX-License-Identifier: MIT
// Crash torture (issue 8): producers and workers run the pipeline on one pool while this
// harness SIGKILLs a random one at a random moment, again and again, and starts a
// replacement each time; some replacements are armed with a named crash point
// (FABRIC_SHM_CRASH_POINT) so they die at an instruction where a half-done step is left in
// the pool. Once the kills stop and the input is drained, the invariants are checked.
//
// Processes:
//  - workers: the real fabric-shm-worker executable (--builtin crc32): the consumer side
//    is exactly what users run (group membership, takeover, fenced result put, commit);
//  - producers: this executable re-executed with --child-producer. The harness must know
//    which puts and sends *returned success* before the kill; the real producer prints
//    that only at exit. The child appends one line to its own log after each successful
//    call (a SIGKILL between the call and the line only makes the harness expect less).
//    It uses the same library calls as fabric-shm-producer (loan + commit or put, then
//    send_keyed with the fabric-version and fabric-put-ts headers), plus objects in a
//    "scratch" bucket that are overwritten and removed on purpose, never notified.
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
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/worker_loop.h"
#include "store/store_core.h"
#include "torture_support.h"

using namespace fabric_shm;
namespace fs = std::filesystem;

namespace {

constexpr const char* kTopic = "torture-events";
constexpr const char* kGroup = "torture";
constexpr const char* kInBucket = "in";
constexpr const char* kScratchBucket = "scratch";
constexpr const char* kResultBucket = "results";
/// The worker's result key for an input key: "<input bucket>/<key>".
std::string result_key(const std::string& key) { return std::string(kInBucket) + "/" + key; }

// ---- producer child ----------------------------------------------------------------------------

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

/// One line per call, appended with a single write(2): a SIGKILL leaves whole lines only.
void log_line(int fd, const std::string& line) {
    const std::string l = line + "\n";
    ssize_t n;
    do n = ::write(fd, l.data(), l.size());
    while (n < 0 && errno == EINTR);
}

int producer_child(const std::string& pool_name, const std::string& log_path, const std::string& prefix,
                   uint64_t seed, uint64_t max_objects) {
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return 2;
    auto pool = Pool::open(pool_name);
    if (!pool) {
        log_line(fd, "E open " + pool.error().message);
        return 1;
    }
    auto store = MemObjectStore::open(*pool);
    if (!store) {
        log_line(fd, "E store " + store.error().message);
        return 1;
    }
    ProducerOptions po;
    po.block_timeout_ns = 30 * kNsPerSec;
    auto producer = Producer::open(*pool, kTopic, po);
    if (!producer) {
        log_line(fd, "E producer " + producer.error().message);
        return 1;
    }
    torture::Rng rng(seed);
    for (uint64_t n = 0; n < max_objects && !g_stop; ++n) {
        const std::string key = prefix + "-" + std::to_string(n);
        if (rng.below(100) < 15) {
            // Scratch: put, maybe overwrite, maybe remove; never notified.
            auto uri = FabricUri::make(pool->name(), kScratchBucket, key);
            const int steps = 1 + int(rng.below(3));  // 1: put; 2: put, overwrite; 3: put, overwrite, remove
            for (int v = 1; v <= steps; ++v) {
                if (v == 3) {
                    log_line(fd, "IR " + key);
                    auto r = (*store)->remove(*uri);
                    if (!r || !*r) {
                        log_line(fd, "E remove " + key + " " + (r ? "absent" : r.error().message));
                        return 1;
                    }
                    log_line(fd, "R " + key);
                    break;
                }
                const uint64_t size = torture::pick_size(rng);
                const std::string data = torture::content(key, v, size);
                log_line(fd, "IS " + key + " " + std::to_string(v) + " " + std::to_string(size));
                auto ver = (*store)->put(*uri, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), size));
                if (!ver) {
                    log_line(fd, "E put " + key + " " + ver.error().message);
                    return 1;
                }
                log_line(fd, "S " + key + " " + std::to_string(v) + " " + std::to_string(size) + " " +
                                 std::to_string(*ver));
            }
        } else {
            auto uri = FabricUri::make(pool->name(), kInBucket, key);
            const uint64_t size = torture::pick_size(rng);
            const std::string data = torture::content(key, 1, size);
            Result<uint64_t> ver = uint64_t(0);
            if (size > 0 && rng.below(2) == 0) {  // zero-copy path, as fabric-shm-producer does
                auto loan = (*store)->loan(size);
                if (!loan) {
                    log_line(fd, "E loan " + key + " " + loan.error().message);
                    return 1;
                }
                std::memcpy(loan->bytes().data(), data.data(), size);
                ver = (*store)->commit(std::move(*loan), *uri);
            } else {
                ver = (*store)->put(*uri, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), size));
            }
            if (!ver) {
                log_line(fd, "E put " + key + " " + ver.error().message);
                return 1;
            }
            log_line(fd, "P " + key + " " + std::to_string(size) + " " + std::to_string(*ver));
            const std::string uri_s = uri->to_string(), ver_s = std::to_string(*ver),
                              ts_s = std::to_string(wall_now_ns());
            const MessageHeader headers[] = {{kHeaderVersion, ver_s}, {kHeaderPutTime, ts_s}};
            auto sent = producer->send_keyed(
                std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(key.data()), key.size()),
                std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(uri_s.data()), uri_s.size()), headers);
            if (!sent) {
                log_line(fd, "E send " + key + " " + sent.error().message);
                return 1;
            }
            log_line(fd, "N " + key + " " + std::to_string(sent->partition) + " " + std::to_string(sent->offset));
        }
        ::usleep(useconds_t(500 + rng.below(2000)));  // leave CPU to the workers (2 vCPUs)
    }
    ::close(fd);
    return 0;
}

// ---- harness -----------------------------------------------------------------------------------

struct Options {
    uint64_t seed = 0;
    uint64_t kills = 100;
    int producers = 2, workers = 3;
    uint64_t session_timeout_ms = 2000;
    uint64_t objects_per_producer = 60;  ///< per incarnation; then it exits and is replaced
    int mean_interval_ms = 120;          ///< mean delay between kills
    int crash_point_percent = 35;        ///< replacements armed with a named crash point
    int stall_percent = 0;               ///< events that SIGSTOP a worker past its session timeout instead of a kill
    bool keep = false;
    bool verbose = false;
};

// Crash points a process of each role reaches (libfabric_shm/include/fabric_shm/crash_point.h).
const std::vector<std::string> kProducerPoints = {
    "store.alloc.after_claim", "store.alloc.assigning", "store.alloc.run_claimed", "store.put.after_alloc",
    "store.put.after_fill", "store.loan.after_alloc", "store.commit.before_publish", "store.put.after_mark",
    "store.put.after_link", "store.put.after_retire", "store.remove.after_mark", "store.remove.after_unlink",
    "store.drain.marking", "mq.send.after_claim", "mq.send.before_publish", "registry.register.claimed",
    "registry.register.before_publish", "registry.reap.retiring", "pool.reap.reclaiming"};
const std::vector<std::string> kWorkerPoints = {
    "store.pin.after_record", "store.pin.after_mark", "store.alloc.after_claim", "store.put.after_alloc",
    "store.put.after_fill", "store.put.after_mark", "store.put.after_link", "store.put.after_retire",
    "store.drain.marking", "group.join.before_publish", "group.claim.after_take", "dlq.begin.before_count",
    "registry.register.claimed", "registry.register.before_publish", "registry.reap.retiring",
    "pool.reap.reclaiming"};

enum class Role { producer, worker };

struct Child {
    pid_t pid = -1;
    Role role = Role::producer;
    int slot = 0;
    std::string crash_point;  ///< "" when not armed
    std::string log;          ///< stderr (workers) or ack log (producers)
};

/// What the producers' logs say about one key.
struct KeyState {
    std::string log;  ///< the producer incarnation's log
    // in-objects (notified)
    bool put_acked = false, notified = false;
    uint64_t size = 0, version = 0;
    uint32_t partition = 0;
    uint64_t offset = 0;
    // scratch objects: the state each call leaves; steps[0] = absent before the first put
    std::vector<std::optional<std::pair<int, uint64_t>>> steps;  ///< (variant, size) or absent
    int acked_steps = 0;  ///< steps[acked_steps]: the state after the last acknowledged call
    bool done = false;    ///< verified and removed on purpose by the harness
};

struct Counts {
    uint64_t puts = 0, notifications = 0, results = 0, unacked_results = 0;
    uint64_t verified_in = 0, scratch_live = 0, scratch_removed = 0, cleaned = 0;
};

class Harness {
public:
    Harness(Options o, std::string exe) : o_(std::move(o)), exe_(std::move(exe)), rng_(o_.seed) {}
    int run();

private:
    void spawn(Role role, int slot, bool may_arm);
    void reap_exited();
    bool kill_one();
    void stall_one();
    void resume_stalled(bool all);
    void finish_kill_phase();
    void ingest();
    bool verify_in(MemObjectStore& store, const std::string& key, const KeyState& k, bool need_result);
    bool verify_scratch(MemObjectStore& store, const std::string& key, const KeyState& k);
    void clean(Pool& pool);
    bool drained(Pool& pool, std::string* why);
    int check(Pool& pool);
    void fail(const std::string& what) {
        ++violations_;
        if (violations_ <= 50) std::fprintf(stderr, "torture: VIOLATION: %s\n", what.c_str());
    }

    Options o_;
    std::string exe_;
    torture::Rng rng_;
    std::string pool_name_, dir_;
    std::vector<Child> live_;
    std::vector<std::string> producer_logs_;
    std::map<std::string, uint64_t> log_pos_;  ///< bytes of each log already ingested
    std::set<std::string> finished_logs_;      ///< incarnations that exited or were killed
    std::map<std::string, KeyState> in_, scratch_;
    Counts n_;
    uint64_t incarnations_ = 0, random_kills_ = 0, crash_point_deaths_ = 0, armed_ = 0, clean_exits_ = 0;
    uint64_t failed_exits_ = 0, violations_ = 0;
    std::map<std::string, uint64_t> point_deaths_;
    std::map<pid_t, uint64_t> stalled_;  ///< SIGSTOPped worker -> when to SIGCONT it
    uint64_t stalls_ = 0;
    uint64_t last_kill_ns_ = 0;
    bool kill_phase_ = true;
};

void Harness::spawn(Role role, int slot, bool may_arm) {
    Child c;
    c.role = role;
    c.slot = slot;
    const uint64_t inc = ++incarnations_;
    if (may_arm && int(rng_.below(100)) < o_.crash_point_percent) {
        const auto& pts = role == Role::producer ? kProducerPoints : kWorkerPoints;
        c.crash_point = pts[rng_.below(pts.size())] + ":" + std::to_string(1 + rng_.below(6));
        ++armed_;
    }
    const uint64_t child_seed = rng_.next();
    std::vector<std::string> args;
    if (role == Role::producer) {
        c.log = dir_ + "/p" + std::to_string(slot) + "-" + std::to_string(inc) + ".log";
        producer_logs_.push_back(c.log);
        args = {exe_, "--child-producer", pool_name_, c.log, "p" + std::to_string(slot) + "i" + std::to_string(inc),
                std::to_string(child_seed), std::to_string(o_.objects_per_producer)};
    } else {
        c.log = dir_ + "/w" + std::to_string(slot) + "-" + std::to_string(inc) + ".err";
        args = {e2e::worker_bin(), "--pool", pool_name_, "--topic", kTopic, "--group", kGroup, "--builtin", "crc32",
                "--max-attempts", "1000000", "--session-timeout", std::to_string(o_.session_timeout_ms) + "ms",
                "--batch", "8", "--quiet"};
    }
    const pid_t pid = test::spawn_program(std::move(args), role == Role::worker ? c.log : "/dev/null", [&c] {
        if (c.crash_point.empty())
            ::unsetenv("FABRIC_SHM_CRASH_POINT");
        else
            ::setenv("FABRIC_SHM_CRASH_POINT", c.crash_point.c_str(), 1);
    });
    c.pid = pid;
    if (o_.verbose)
        std::fprintf(stderr, "torture: start %s %d pid %d%s%s\n", role == Role::producer ? "producer" : "worker", slot,
                     int(pid), c.crash_point.empty() ? "" : " armed ", c.crash_point.c_str());
    live_.push_back(std::move(c));
}

/// Collects children that exited on their own: a producer that finished its objects, or a
/// process killed by its crash point. Replaces them while the kill phase runs (workers always).
void Harness::reap_exited() {
    for (size_t i = 0; i < live_.size();) {
        int status = 0;
        const pid_t r = ::waitpid(live_[i].pid, &status, WNOHANG);
        if (r != live_[i].pid) {
            ++i;
            continue;
        }
        Child c = live_[i];
        live_.erase(live_.begin() + long(i));
        if (c.role == Role::producer) finished_logs_.insert(c.log);
        const bool sigkilled = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        if (sigkilled && !c.crash_point.empty()) {
            ++crash_point_deaths_;
            ++point_deaths_[c.crash_point.substr(0, c.crash_point.find(':'))];
            last_kill_ns_ = mono_now_ns();
        } else if ((WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                   (!kill_phase_ && c.role == Role::producer && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM)) {
            ++clean_exits_;  // finished, or stopped by SIGTERM before its handler was installed
        } else {
            ++failed_exits_;
            std::string tail;
            std::ifstream f(c.log);
            std::stringstream ss;
            ss << f.rdbuf();
            tail = ss.str();
            if (tail.size() > 600) tail = tail.substr(tail.size() - 600);
            fail(std::string(c.role == Role::producer ? "producer" : "worker") + " pid " + std::to_string(c.pid) +
                 " exited with " +
                 (WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                                    : "signal " + std::to_string(WTERMSIG(status))) +
                 " (crash point '" + c.crash_point + "'); log " + c.log + ":\n" + tail);
        }
        if (kill_phase_ || c.role == Role::worker) spawn(c.role, c.slot, kill_phase_);
    }
}

bool Harness::kill_one() {
    if (live_.empty()) return false;
    const size_t i = rng_.below(live_.size());
    Child c = live_[i];
    stalled_.erase(c.pid);
    ::kill(c.pid, SIGKILL);
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    live_.erase(live_.begin() + long(i));
    if (c.role == Role::producer) finished_logs_.insert(c.log);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        ++clean_exits_;  // it finished just before the signal
    else
        ++random_kills_;
    last_kill_ns_ = mono_now_ns();
    if (o_.verbose) std::fprintf(stderr, "torture: SIGKILL pid %d\n", int(c.pid));
    spawn(c.role, c.slot, true);
    return true;
}

/// SIGSTOPs a random worker for 1 to 2 session timeouts: the group evicts it, a live member
/// takes its partitions over, and when it resumes it is a zombie whose writes must be fenced.
void Harness::stall_one() {
    std::vector<pid_t> workers;
    for (const Child& c : live_)
        if (c.role == Role::worker && !stalled_.count(c.pid)) workers.push_back(c.pid);
    if (workers.empty()) return;
    const pid_t pid = workers[rng_.below(workers.size())];
    const uint64_t ms = o_.session_timeout_ms + rng_.below(o_.session_timeout_ms + 1);
    ::kill(pid, SIGSTOP);
    stalled_[pid] = mono_now_ns() + ms * kNsPerMs;
    ++stalls_;
    if (o_.verbose) std::fprintf(stderr, "torture: SIGSTOP pid %d for %" PRIu64 " ms\n", int(pid), ms);
}

void Harness::resume_stalled(bool all) {
    const uint64_t now = mono_now_ns();
    for (auto it = stalled_.begin(); it != stalled_.end();) {
        if (all || now >= it->second) {
            ::kill(it->first, SIGCONT);
            it = stalled_.erase(it);
        } else {
            ++it;
        }
    }
}

/// Ends the kill phase: processes still armed are killed (so no crash point fires after
/// "the last kill") and workers are replaced unarmed; producers are asked to stop.
void Harness::finish_kill_phase() {
    kill_phase_ = false;
    resume_stalled(true);
    std::vector<Child> armed;
    for (const Child& c : live_)
        if (!c.crash_point.empty()) armed.push_back(c);
    for (const Child& c : armed) {
        ::kill(c.pid, SIGKILL);
        int status = 0;
        ::waitpid(c.pid, &status, 0);
        live_.erase(std::find_if(live_.begin(), live_.end(), [&](const Child& x) { return x.pid == c.pid; }));
        if (c.role == Role::producer) finished_logs_.insert(c.log);
        if (WIFSIGNALED(status)) ++random_kills_;
        last_kill_ns_ = mono_now_ns();
        if (c.role == Role::worker) spawn(Role::worker, c.slot, false);
    }
    for (const Child& c : live_)
        if (c.role == Role::producer) ::kill(c.pid, SIGTERM);
}

// ---- what the producers acknowledged -----------------------------------------------------------

/// Reads the whole lines appended to the producers' logs since the last call.
void Harness::ingest() {
    for (const auto& path : producer_logs_) {
        uint64_t& pos = log_pos_[path];
        std::ifstream f(path, std::ios::binary);
        if (!f) continue;
        f.seekg(std::streamoff(pos));
        std::string chunk((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        const size_t end = chunk.rfind('\n');
        if (end == std::string::npos) continue;
        pos += end + 1;
        std::istringstream lines(chunk.substr(0, end + 1));
        std::string line;
        while (std::getline(lines, line)) {
            std::istringstream ls(line);
            std::string tag, key;
            ls >> tag >> key;
            if (tag == "P") {
                KeyState& k = in_[key];
                k.log = path;
                k.put_acked = true;
                ls >> k.size >> k.version;
                ++n_.puts;
            } else if (tag == "N") {
                KeyState& k = in_[key];
                k.notified = true;
                ls >> k.partition >> k.offset;
                ++n_.notifications;
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

/// Keeps the object count steady: verifies and removes (on purpose) the inputs and results
/// of notifications the group committed past (no redelivery can need them), and the scratch
/// keys of producers that are gone.
void Harness::clean(Pool& pool) {
    ingest();
    auto d = describe_consumer_group(pool, kTopic, kGroup);
    auto store_r = MemObjectStore::attach(pool);
    if (!d || !store_r) return;
    std::map<uint32_t, uint64_t> committed;
    for (const auto& p : d->partitions) committed[p.partition] = p.committed;
    MemObjectStore& store = **store_r;
    for (auto& [key, k] : in_) {
        if (k.done || !k.notified || !k.put_acked || committed[k.partition] <= k.offset) continue;
        verify_in(store, key, k, true);
        ++n_.verified_in;
        for (const char* b : {kInBucket, kResultBucket}) {
            auto u = FabricUri::make(pool_name_, b, b == kResultBucket ? result_key(key) : key);
            if (auto r = store.remove(*u); !r) fail("remove " + u->to_string() + ": " + r.error().message);
        }
        k.done = true;
        ++n_.cleaned;
    }
    for (auto& [key, k] : scratch_) {
        if (k.done || !finished_logs_.count(k.log)) continue;
        verify_scratch(store, key, k);
        auto u = FabricUri::make(pool_name_, kScratchBucket, key);
        if (auto r = store.remove(*u); !r) fail("remove " + u->to_string() + ": " + r.error().message);
        k.done = true;
    }
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
        if (k.done || !k.notified) continue;
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
            } else if (it->second.done) {
                fail("result " + key + " reappeared after it was verified and removed (a duplicate delivery)");
            }
        }
    // 4. nothing was dead-lettered (max-attempts is effectively unlimited: no poison messages).
    const auto dlq = e2e::read_dlq(pool, std::string(kTopic) + ".dlq");
    for (const auto& dl : dlq) fail("dead letter " + dl.value + ": " + dl.reason);

    // 5. space: once the reaper ran, the heap holds exactly the live objects' blocks.
    std::string out;
    int rc = test::run_command(test::build_path("tools/reaper/fabric-shm-reaper") + " --pool " + pool_name_ + " 2>&1", &out);
    if (rc != 0) fail("fabric-shm-reaper exited " + std::to_string(rc) + ": " + out);
    const torture::Space sp = torture::measure_space(pool);
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

    std::printf("torture: objects put %" PRIu64 " (acknowledged), notifications %" PRIu64
                " (acknowledged), inputs verified %" PRIu64 ", results %" PRIu64 " (%" PRIu64
                " of sends killed before their acknowledgement), removed on purpose %" PRIu64 "\n",
                n_.puts, n_.notifications, n_.verified_in, n_.results, n_.unacked_results, n_.cleaned);
    std::printf("torture: scratch objects %" PRIu64 " present, %" PRIu64 " absent as allowed; dead letters %zu\n",
                n_.scratch_live, n_.scratch_removed, dlq.size());
    std::printf("torture: space after the reaper: heap used %" PRIu64 " B = live blocks %" PRIu64 " B (%" PRIu64
                " objects, payload %" PRIu64 " B); after removing all: used %" PRIu64
                " B, largest free extent %" PRIu64 " of %" PRIu64 " B\n",
                sp.used_bytes, sp.live_block_bytes, sp.objects, sp.payload_bytes, empty.heap_used_bytes,
                empty.largest_free_extent, empty.heap_capacity_bytes);
    return 0;
}

int Harness::run() {
    pool_name_ = test::unique_pool_name("torture");
    test::PoolCleanup cleanup(o_.keep ? std::string("t-keep-nothing") : pool_name_);
    dir_ = (fs::temp_directory_path() / ("fabric-torture-" + std::to_string(getpid()))).string();
    fs::create_directories(dir_);
    std::printf("torture: seed %" PRIu64 " (replay: --seed %" PRIu64 "), pool %s, %d producers, %d workers, "
                "session timeout %" PRIu64 " ms, target %" PRIu64 " kills\n",
                o_.seed, o_.seed, pool_name_.c_str(), o_.producers, o_.workers, o_.session_timeout_ms, o_.kills);
    std::fflush(stdout);
    OpenOptions oo;
    oo.create_if_missing = true;
    oo.create.size_bytes = 64ull << 20;
    auto pool = Pool::open(pool_name_, oo);
    if (!pool) {
        std::fprintf(stderr, "torture: pool: %s\n", pool.error().message.c_str());
        return 1;
    }
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
    uint64_t last_clean = mono_now_ns();
    while (random_kills_ + crash_point_deaths_ < o_.kills) {
        const int delay = int(rng_.below(uint64_t(2 * o_.mean_interval_ms)));
        const uint64_t until = mono_now_ns() + uint64_t(delay) * kNsPerMs;
        while (mono_now_ns() < until) {
            reap_exited();
            resume_stalled(false);
            ::usleep(5000);
        }
        if (mono_now_ns() - last_clean > 500 * kNsPerMs) {
            clean(*pool);
            last_clean = mono_now_ns();
        }
        reap_exited();
        if (int(rng_.below(100)) < o_.stall_percent)
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

    // Stop the workers (SIGTERM: commit, leave) and check.
    for (const Child& c : live_) ::kill(c.pid, SIGTERM);
    for (const Child& c : live_) {
        const int rc = test::wait_child(c.pid, 15000);
        if (rc != 0) fail("worker pid " + std::to_string(c.pid) + " exited " + std::to_string(rc) + " after SIGTERM");
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
                random_kills_ + crash_point_deaths_, random_kills_, crash_point_deaths_, armed_, incarnations_,
                clean_exits_, double(kill_phase_ns) / 1e9);
    std::string pts;
    for (const auto& [p, n] : point_deaths_) pts += " " + p + "=" + std::to_string(n);
    std::printf("torture: crash points hit:%s\n", pts.empty() ? " none" : pts.c_str());
    if (o_.stall_percent) std::printf("torture: stalls (SIGSTOP past the session timeout) %" PRIu64 "\n", stalls_);
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
                 "               [--keep] [--verbose]\n"
                 "FABRIC_SHM_TORTURE_KILLS=N overrides --kills (CI sanitizer builds use a shorter run).\n");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && std::string(argv[1]) == "--child-producer") {
        if (argc != 7) return 2;
        return producer_child(argv[2], argv[3], argv[4], std::strtoull(argv[5], nullptr, 10),
                              std::strtoull(argv[6], nullptr, 10));
    }
    Options o;
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    o.seed = uint64_t(ts.tv_nsec) ^ (uint64_t(ts.tv_sec) << 20) ^ uint64_t(getpid());
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
        else if (a == "--seed" && num(v)) o.seed = v;
        else if (a == "--kills" && num(v)) o.kills = v;
        else if (a == "--producers" && num(v) && v >= 1 && v <= 16) o.producers = int(v);
        else if (a == "--workers" && num(v) && v >= 1 && v <= 16) o.workers = int(v);
        else if (a == "--session-timeout-ms" && num(v) && v >= 100) o.session_timeout_ms = v;
        else if (a == "--interval-ms" && num(v) && v >= 1) o.mean_interval_ms = int(v);
        else if (a == "--objects" && num(v) && v >= 1) o.objects_per_producer = v;
        else if (a == "--crash-point-percent" && num(v) && v <= 100) o.crash_point_percent = int(v);
        else if (a == "--stall-percent" && num(v) && v <= 100) o.stall_percent = int(v);
        else {
            usage();
            return 2;
        }
    }
    if (const char* k = std::getenv("FABRIC_SHM_TORTURE_KILLS"); k && *k) o.kills = std::strtoull(k, nullptr, 10);
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
