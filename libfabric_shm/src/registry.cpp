// SPDX-License-Identifier: MIT
// Process registry: slot claim/free protocol and the "certainly dead" test.
//
// Slot word protocol (one CAS per transition, see layout/pool_layout.h):
//   FREE(g) --claimant CAS--> CLAIMING(g', pid) --claimant CAS (release)--> LIVE(g', pid)
//   LIVE/CLAIMING --owner (unregister) or reaper (certainly dead) CAS--> RETIRING(g', retirer pid)
//   LIVE (heartbeat past its timeout, pid still running) --reaper CAS--> FENCED(g', pid)
//   FENCED --reaper, once the pid is gone--> RETIRING(g', reaper pid)
//   RETIRING --the retirer, after folding counters and clearing the fields--> FREE(g'+1)
//   RETIRING(dead retirer) --anyone CAS--> RETIRING(g', my pid), then finish
// A token (g', slot) stays valid exactly while the word carries g' and is not FREE/RETIRING;
// every ownership record elsewhere compares against it, so a freed registration reads as dead.
//
// Dead or paused? A CLAIMING slot's fields may not be written yet, so it is judged by the
// pid in its word alone (gone or zombie), never by its fields' heartbeat; a RETIRING slot is
// judged by its retirer's pid. A paused process keeps its pid, so pid checks never declare it
// dead; only a heartbeat timeout the process itself declared can, and only once it is LIVE.
// Even then its slot is only FENCED (token dead, slot kept) until its pid exits: liveness()
// answers "may others take over what it owns by CAS", process_liveness() "may it still run
// and touch memory it was lent".
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "child_groups_internal.h"
#include "fabric_shm/counters.h"
#include "crash_point.h"
#include "pool_impl.h"

namespace fabric_shm {

using namespace layout;

namespace {
uint32_t next_gen(uint32_t gen) {
    gen = (gen + 1) & kSlotGenMask;
    return gen == 0 ? 1 : gen;
}

ProcessSlot* slots_of(const Pool& pool) {
    return reinterpret_cast<ProcessSlot*>(detail::pool_base(pool) + kRegistryOffset);
}
}  // namespace

namespace {
/// The state letter of /proc/<path>'s stat line: the field after the command name, which may
/// itself contain spaces and ')'. '\0' when the file is gone (ENOENT, ESRCH: the thread exited),
/// '?' when it could not be read for another reason (EMFILE, EACCES, ...: unknown).
char stat_state(const char* path) {
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ESRCH ? '\0' : '?';
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    const int read_errno = errno;
    ::close(fd);
    if (n == 0 || (n < 0 && read_errno == ESRCH)) return '\0';  // the thread went while we read
    if (n < 0) return '?';
    buf[n] = '\0';
    const char* p = std::strrchr(buf, ')');
    if (!p) return '?';
    ++p;
    while (*p == ' ') ++p;
    return *p;
}

/// Whether a process whose leader thread shows Z or X is a zombie indeed: the leader of a
/// thread group stays Z after it exits (pthread_exit from main) while the other threads run
/// on, so /proc/<pid>/stat alone would call a live process dead. Dead only when no thread of
/// /proc/<pid>/task is in another state. A task list we cannot read (raced with the reaping
/// of the process, or not allowed) counts as alive: "certainly dead" must be certain.
bool every_thread_exited(uint32_t pid) {
    char dir_path[64];
    std::snprintf(dir_path, sizeof dir_path, "/proc/%u/task", pid);
    DIR* dir = ::opendir(dir_path);
    if (!dir) return false;
    bool exited = true;
    int seen = 0;
    while (const dirent* e = ::readdir(dir)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[96];
        std::snprintf(path, sizeof path, "/proc/%u/task/%.20s/stat", pid, e->d_name);
        const char st = stat_state(path);
        ++seen;
        // '\0': the thread went while we looked (it exited). '?': unknown, so alive.
        if (st != '\0' && st != 'Z' && st != 'X') {
            exited = false;
            break;
        }
    }
    ::closedir(dir);
    return exited && seen > 0;
}
}  // namespace

PidProbe probe_pid(uint32_t pid) {
    PidProbe probe;
    if (pid == 0) return probe;
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        // EACCES etc.: the process exists but we may not look (hidepid=1): maybe alive.
        if (errno != ENOENT && errno != ESRCH) {
            probe.exists = true;
            return probe;
        }
        // ENOENT is also what a /proc mounted hidepid=2 ("invisible": systemd's
        // ProtectProc=invisible) says of another uid's live process. The kernel's own answer
        // decides, through a pidfd (not procfs, so hidepid does not hide it): none means no
        // such process; one that polls readable is a process that exited (a zombie). Kernels
        // without pidfd_open (before 5.3): signal 0, EPERM meaning it exists. A pid above
        // INT32_MAX (damaged) would name a process group to kill(): no such process. Start
        // time stays unknown, so a pid reused by another uid's process reads as maybe alive.
        if (pid > uint32_t(INT32_MAX)) return probe;
        const int pidfd = int(::syscall(SYS_pidfd_open, pid_t(pid), 0));
        if (pidfd >= 0) {
            pollfd pfd{pidfd, POLLIN, 0};
            const int ready = ::poll(&pfd, 1, 0);
            ::close(pidfd);
            probe.exists = true;
            probe.zombie = ready > 0 && (pfd.revents & POLLIN);
            return probe;
        }
        if (errno == ESRCH) return probe;
        if (::kill(pid_t(pid), 0) == 0 || errno == EPERM) probe.exists = true;
        return probe;
    }
    char buf[1024];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    const int read_errno = errno;
    ::close(fd);
    // 0 or ESRCH: it exited after the open. Any other failure (EINTR, ENOMEM, ...) says nothing
    // about the process: maybe alive, start time unknown, never "certainly dead".
    if (n < 0 && read_errno != ESRCH) probe.exists = true;
    if (n <= 0) return probe;
    buf[n] = '\0';
    probe.exists = true;
    // comm may contain spaces and ')': fields resume after the LAST ')'.
    const char* p = std::strrchr(buf, ')');
    if (!p) return probe;
    ++p;
    int field = 2;
    const char* tok = p;
    while (*tok) {
        while (*tok == ' ') ++tok;
        if (!*tok) break;
        ++field;
        if (field == 3) probe.zombie = (*tok == 'Z' || *tok == 'X');
        if (field == 22) {
            probe.start_time = std::strtoull(tok, nullptr, 10);
            break;
        }
        while (*tok && *tok != ' ') ++tok;
    }
    if (probe.zombie) probe.zombie = every_thread_exited(pid);
    return probe;
}

uint64_t self_start_time() {
    // Cached per pid: a forked child must not inherit its parent's start time (it would
    // then look like a reused pid and be reaped as dead).
    static std::atomic<uint64_t> cached_pid{0}, cached_start{0};
    const uint64_t pid = uint64_t(getpid());
    if (cached_pid.load(std::memory_order_acquire) != pid) {
        cached_start.store(probe_pid(uint32_t(pid)).start_time, std::memory_order_relaxed);
        cached_pid.store(pid, std::memory_order_release);
    }
    return cached_start.load(std::memory_order_relaxed);
}

uint64_t self_pidns() {
    struct stat st {};
    if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
    return uint64_t(st.st_ino);
}

namespace detail {

std::string load_fixed_string(const std::atomic<uint64_t>* words, size_t n_words) {
    std::string out;
    for (size_t i = 0; i < n_words; ++i) {
        const uint64_t w = words[i].load(std::memory_order_relaxed);
        for (int b = 0; b < 8; ++b) {
            const char c = char((w >> (8 * b)) & 0xff);
            if (c == '\0') return out;
            out += c;
        }
    }
    return out;
}

void store_fixed_string(std::atomic<uint64_t>* words, size_t n_words, std::string_view s) {
    for (size_t i = 0; i < n_words; ++i) {
        uint64_t w = 0;
        for (size_t b = 0; b < 8; ++b) {
            const size_t k = i * 8 + b;
            if (k < s.size()) w |= uint64_t(uint8_t(s[k])) << (8 * b);
        }
        words[i].store(w, std::memory_order_relaxed);
    }
}

namespace {
/// Whether this process may probe the pid named in `word` (it lives in our pid namespace).
/// `pidns_field`: the occupant's own record, 0 when not (yet) written. `header` may be null
/// (then only that field can tell).
/// An unknown namespace (a process that could not stat /proc/self/ns/pid records 0; so may a
/// creator, or this judge) is never "ours": a pid probed across namespaces names an unrelated
/// process or none, and would judge a live process dead.
bool pid_in_our_namespace(const PoolHeader* header, uint64_t word, uint64_t pidns_field) {
    if (pidns_field != 0) return pidns_field == self_pidns();
    return header != nullptr && slot_word_creator_ns(word) && header->creator_pidns != 0 &&
           header->creator_pidns == self_pidns();
}

/// The pid probe shared by every state: gone, zombie, or (when a start time is recorded)
/// reused. A paused process passes all three.
bool pid_certainly_dead(uint32_t pid, uint64_t recorded_start, std::string* why) {
    const PidProbe probe = probe_pid(pid);
    if (!probe.exists) {
        if (why) *why = "pid " + std::to_string(pid) + " gone";
        return true;
    }
    if (probe.zombie) {
        if (why) *why = "pid " + std::to_string(pid) + " is a zombie";
        return true;
    }
    if (recorded_start != 0 && probe.start_time != 0 && probe.start_time != recorded_start) {
        if (why)
            *why = "pid " + std::to_string(pid) + " reused (start time " + std::to_string(probe.start_time) +
                   ", registered " + std::to_string(recorded_start) + ")";
        return true;
    }
    return false;
}

const PoolHeader* header_of(const Pool& pool) { return &detail::pool_header(pool); }
}  // namespace

Liveness slot_liveness(const PoolHeader* header, const ProcessSlot& slot, uint64_t word, uint64_t now_ns,
                       std::string* reason) {
    std::string why;
    auto dead = [&](std::string w) {
        if (reason) *reason = std::move(w);
        return Liveness::certainly_dead;
    };
    auto alive = [&] {
        if (reason) reason->clear();
        return Liveness::maybe_alive;
    };
    const uint64_t state = slot_word_state(word);
    if (state == kSlotFree || state == kSlotRetiring) return dead("registration ended");
    if (state == kSlotFenced) return dead("fenced: its heartbeat timed out (pid " + std::to_string(slot_word_pid(word)) + ")");
    if (state != kSlotClaiming && state != kSlotLive) return dead("registry slot in unknown state " + std::to_string(state));
    const uint32_t pid = slot_word_pid(word);
    // Relaxed field loads: the caller acquired `word`. For LIVE that pairs with the owner's
    // release CAS to LIVE (fields complete); for CLAIMING with the retirer's release CAS to
    // FREE that the claim CAS continued (fields zero, or the claimant's own).
    const uint64_t pidns = slot.pidns.load(std::memory_order_relaxed);
    const uint64_t recorded_start = slot.start_time.load(std::memory_order_relaxed);
    if (state == kSlotClaiming) {
        // Between its claim and its publication a claimant is judged by its pid alone: the
        // heartbeat and timeout may not be written yet, and a paused claimant keeps its pid.
        // A non-zero start time can only be the claimant's own (the retirer zeroed it).
        if (!pid_in_our_namespace(header, word, pidns)) return alive();
        if (pid_certainly_dead(pid, recorded_start, &why)) return dead("claimant " + why);
        return alive();
    }
    // The pid is probed only where it names the process (as for CLAIMING above): a LIVE slot
    // whose pidns is 0 registered without knowing its namespace, and is judged by heartbeat.
    if (pid_in_our_namespace(header, word, pidns) && pid_certainly_dead(pid, recorded_start, &why)) return dead(why);
    const uint64_t timeout = slot.timeout_ns.load(std::memory_order_relaxed);
    const uint64_t heartbeat = slot.heartbeat_ns.load(std::memory_order_relaxed);
    if (timeout != 0 && now_ns > heartbeat && now_ns - heartbeat > timeout)
        return dead("heartbeat " + format_duration_ns(now_ns - heartbeat) + " old (timeout " +
                    format_duration_ns(timeout) + ")");
    // Ahead of `now` by more than a timeout: the caller's clock read may be stale (it paused
    // since), so the clock is read again. Ahead of that too, it was written by no clock
    // (damage), and heartbeats only move forward (Pool::heartbeat), so its process could never
    // bring it back: without this, it would never be found silent.
    if (timeout != 0 && heartbeat > now_ns && heartbeat - now_ns > timeout) {
        const uint64_t fresh = mono_now_ns();
        if (heartbeat > fresh && heartbeat - fresh > timeout)
            return dead("heartbeat " + format_duration_ns(heartbeat - fresh) + " in the future (damaged; timeout " +
                        format_duration_ns(timeout) + ")");
    }
    return alive();
}

Liveness slot_liveness(const ProcessSlot& slot, uint64_t word, uint64_t now_ns, std::string* reason) {
    return slot_liveness(nullptr, slot, word, now_ns, reason);
}

Liveness slot_process_liveness(const PoolHeader* header, const ProcessSlot& slot, uint64_t word, uint64_t now_ns,
                               std::string* reason) {
    const uint64_t state = slot_word_state(word);
    if (state != kSlotClaiming && state != kSlotLive && state != kSlotFenced) {
        if (reason) *reason = "registration ended";
        return Liveness::certainly_dead;
    }
    const uint64_t pidns = slot.pidns.load(std::memory_order_relaxed);
    if (!pid_in_our_namespace(header, word, pidns)) {
        // Across pid namespaces a heartbeat is all anyone can see (a FENCED slot there is
        // only a moment: the reaper retires it at once).
        return state == kSlotFenced ? Liveness::certainly_dead : slot_liveness(header, slot, word, now_ns, reason);
    }
    std::string why;
    if (pid_certainly_dead(slot_word_pid(word), slot.start_time.load(std::memory_order_relaxed), &why)) {
        if (reason) *reason = std::move(why);
        return Liveness::certainly_dead;
    }
    if (reason) reason->clear();
    return Liveness::maybe_alive;
}

namespace {
/// True when the retirer named in a RETIRING word is certainly dead (so its work may be
/// finished by someone else): its pid is gone or a zombie, or it names a process started at
/// another time than the retirer recorded in the slot. A paused retirer is waited for.
bool retirer_certainly_dead(const PoolHeader& header, const ProcessSlot& slot, uint64_t retiring_word) {
    if (!pid_in_our_namespace(&header, retiring_word, 0)) return false;
    const uint32_t pid = slot_word_pid(retiring_word);
    if (pid_certainly_dead(pid, 0, nullptr)) return true;
    // Acquire: pairs with the retirer's release store after its CAS. A value naming another
    // pid is a previous retirer's, stored before this one's CAS took the slot over: unknown.
    const uint64_t recorded = slot.retirer.load(std::memory_order_acquire);
    if (recorded == 0 || retirer_pid(recorded) != pid) return false;
    const PidProbe probe = probe_pid(pid);
    return probe.exists && probe.start_time != 0 && uint32_t(probe.start_time) != retirer_start(recorded);
}

/// Moves a RETIRING slot that this process owns (its pid is in the word) to FREE(g+1):
/// kills the occupant's recorded child process groups (it is gone, or it is us at exit: they
/// must not outlive the registration), folds the counter shard into the pool totals
/// (exchange(0): each cell folds exactly once), drops the attach bits and zeroes the
/// per-occupant fields, so the next claimant starts from a slot that names nobody. Only the
/// retirer writes here: another process finishes a retirement only after taking the
/// RETIRING word over from a certainly-dead retirer (which redoes the kills: idempotent).
void retire_slot(PoolHeader& header, ProcessSlot& slot, uint64_t retiring_word, std::vector<std::string>* notes) {
    // Before pidns is cleared: the kill needs the namespace the pgids belong to.
    kill_child_groups(header, slot, slot.pidns.load(std::memory_order_relaxed), true, notes);
    for (uint32_t i = 0; i < kCounterCells; ++i) {
        const uint64_t v = slot.counters[i].exchange(0, std::memory_order_relaxed);
        if (v) header.retired_counters[i].fetch_add(v, std::memory_order_relaxed);
    }
    for (auto& a : slot.attached) a.store(0, std::memory_order_relaxed);
    slot.start_time.store(0, std::memory_order_relaxed);
    slot.pidns.store(0, std::memory_order_relaxed);
    slot.heartbeat_ns.store(0, std::memory_order_relaxed);
    slot.timeout_ns.store(0, std::memory_order_relaxed);
    slot.registered_ns.store(0, std::memory_order_relaxed);
    store_fixed_string(slot.comm, 2, "");
    slot.retirer.store(0, std::memory_order_relaxed);
    FABRIC_PAUSE_POINT("registry.retire.before_free");
    // Release: the zeroed shard and fields are visible before a new claimant can win the
    // FREE word (pairs with the claim CAS's acquire and with slot_liveness's callers).
    uint64_t expected = retiring_word;
    slot.word.compare_exchange_strong(expected, make_slot_word(kSlotFree, next_gen(slot_word_gen(retiring_word)), 0),
                                      std::memory_order_release, std::memory_order_relaxed);
}

/// Who retires a slot: its owner at exit (unregister) or a reaper of a dead occupant. Each has
/// its own fault point (the names are literals so that tools can list every point).
enum class Retirer : uint8_t { owner, reaper };

/// Takes slot `slot` (word `w`, certainly dead, or RETIRING with a dead retirer) into
/// RETIRING(me) by CAS and retires it. False when the word moved on meanwhile.
bool take_and_retire(PoolHeader& header, ProcessSlot& slot, uint64_t w, Retirer who,
                     std::vector<std::string>* notes = nullptr) {
    const bool creator_ns = header.creator_pidns == self_pidns();
    const uint32_t pid = uint32_t(getpid());
    // A takeover from RETIRING moves the generation on, so that the word changes whoever takes
    // it: a process whose pid is the dead retirer's (reused) would otherwise CAS the word to
    // itself unchanged, and a finisher that judged the dead retirer before and paused would
    // then win its own CAS against our retirement, free the slot, and leave us clearing the
    // fields of its next occupant.
    const uint32_t gen = slot_word_state(w) == kSlotRetiring ? next_gen(slot_word_gen(w)) : slot_word_gen(w);
    const uint64_t retiring = make_slot_word(kSlotRetiring, gen, pid, creator_ns);
    // Unknown first: a finisher that sees our RETIRING word must not judge us by the previous
    // retirer's pid and start time (a dead retirer's pid may be ours now). Ordered before the
    // CAS by its release. A racer that loses the CAS may store this 0 over the winner's value:
    // that only makes the winner judged by its pid alone, as before the field existed.
    slot.retirer.store(0, std::memory_order_relaxed);
    // acq_rel: acquire orders our reads of the shard after the occupant's last writes we can
    // see; release publishes the takeover to a competing finisher.
    if (!slot.word.compare_exchange_strong(w, retiring, std::memory_order_acq_rel, std::memory_order_relaxed))
        return false;
    // Release: pairs with retirer_certainly_dead's acquire load. Without our start time (a
    // /proc we may not read) it stays unknown.
    if (const uint64_t start = self_start_time(); start != 0)
        slot.retirer.store(retirer_word(pid, start), std::memory_order_release);
    if (who == Retirer::owner)
        FABRIC_CRASH_POINT("registry.unregister.retiring");
    else
        FABRIC_CRASH_POINT("registry.reap.retiring");
    // After the CAS: a reap pass that reads the count from here on sees the occupant dead
    // (seq_cst, the pass's load). Counted when a reaper ends the registration, and when anyone
    // retires a FENCED one: its fence's count may be lost (a reaper killed between the fence and
    // its add), and a fenced owner's releases at exit failed (its token judged dead). A reaper
    // killed or stopped before this add left the slot RETIRING: every reap pass walks while it
    // sees one (reap_pass), and whoever finishes it for a dead retirer comes here and counts it.
    if (who == Retirer::reaper || slot_word_state(w) == kSlotFenced)
        header.registrations_ended.fetch_add(1, std::memory_order_seq_cst);
    retire_slot(header, slot, retiring, notes);
    return true;
}

/// Frees `slot` when its occupant is certainly dead, or finishes the retirement of a
/// retirer that is certainly dead. Returns true when this call freed it.
bool reap_slot(PoolHeader& header, ProcessSlot& slot, uint64_t now_ns, std::vector<std::string>* notes = nullptr) {
    const uint64_t w = slot.word.load(std::memory_order_acquire);
    const uint64_t state = slot_word_state(w);
    if (state == kSlotFree) return false;
    if (state == kSlotRetiring) {
        // A retirer died between winning the slot and freeing it: take over and finish.
        if (!retirer_certainly_dead(header, slot, w)) return false;
        FABRIC_PAUSE_POINT("registry.reap.retirer_judged");
        return take_and_retire(header, slot, w, Retirer::reaper, notes);
    }
    if (state == kSlotFenced) {
        // Retired once the fenced process is gone (its pid can no longer write anything).
        if (slot_process_liveness(&header, slot, w, now_ns, nullptr) != Liveness::certainly_dead) return false;
        return take_and_retire(header, slot, w, Retirer::reaper, notes);
    }
    if (slot_liveness(&header, slot, w, now_ns, nullptr) != Liveness::certainly_dead) return false;
    FABRIC_PAUSE_POINT("registry.reap.judged");
    // Judged again after any pause here: the process may have resumed and heartbeated since,
    // and its heartbeat does not change the word the CAS below expects.
    if (slot.word.load(std::memory_order_acquire) != w ||
        slot_liveness(&header, slot, w, now_ns, nullptr) != Liveness::certainly_dead)
        return false;
    if (state == kSlotLive && slot_process_liveness(&header, slot, w, now_ns, nullptr) != Liveness::certainly_dead) {
        // Dead by its heartbeat only: the pid still runs (stopped or hung). End the
        // registration (its token is dead from now on) but keep the slot until the pid exits.
        uint64_t expect = w;
        if (!slot.word.compare_exchange_strong(
                expect, make_slot_word(kSlotFenced, slot_word_gen(w), slot_word_pid(w), slot_word_creator_ns(w)),
                std::memory_order_acq_rel, std::memory_order_relaxed))
            return false;
        FABRIC_CRASH_POINT("registry.reap.fenced");
        // As in take_and_retire. Killed before this add, the fence goes uncounted until the
        // slot is retired (by its owner at exit, or by a reaper once the pid is gone: counted
        // then); until then only a full reap looks for what the fenced registration left.
        header.registrations_ended.fetch_add(1, std::memory_order_seq_cst);
        return true;
    }
    return take_and_retire(header, slot, w, Retirer::reaper, notes);
}
}  // namespace

namespace {

/// OpenOptions::heartbeat_timeout_ns, or when 0 the environment's FABRIC_SHM_HEARTBEAT_TIMEOUT
/// (how a container's entrypoint gives every program in it a heartbeat timeout).
Result<uint64_t> effective_heartbeat_timeout(uint64_t requested) {
    if (requested != 0) return requested;
    const char* env = std::getenv("FABRIC_SHM_HEARTBEAT_TIMEOUT");
    if (!env || !*env) return uint64_t(0);
    auto d = parse_duration_ns(env);
    if (!d)
        return make_error(Errc::invalid_argument,
                          "FABRIC_SHM_HEARTBEAT_TIMEOUT='" + std::string(env) + "': " + d.error().message);
    return *d;
}

/// Across pid namespaces a pid says nothing, so a process there is judged dead only by a
/// heartbeat timeout that it declared. Two registrations in different namespaces where
/// either declared none would each be unable to tell that the other died: its locks,
/// partitions and lent memory would stay held for good. Refused (the later of the two; both,
/// if they publish at the same moment), naming the other process and the fix. Run after
/// publishing our LIVE word (seq_cst), reading every word seq_cst: of two concurrent
/// registrants at least one sees the other.
std::string namespace_conflict(const PoolHeader& header, const ProcessSlot* slots, uint32_t mine, uint64_t my_pidns,
                               uint64_t my_timeout) {
    if (my_pidns == 0) return {};
    for (uint32_t i = 0; i < kRegistrySlots; ++i) {
        if (i == mine) continue;
        const ProcessSlot& other = slots[i];
        const uint64_t w = other.word.load(std::memory_order_seq_cst);
        if (slot_word_state(w) != kSlotLive) continue;  // FENCED: already over; CLAIMING: it checks after publishing
        // Relaxed: written before its release (seq_cst) CAS to LIVE, which we acquired.
        const uint64_t ns = other.pidns.load(std::memory_order_relaxed);
        const uint64_t timeout = other.timeout_ns.load(std::memory_order_relaxed);
        if (ns == 0 || ns == my_pidns || (my_timeout != 0 && timeout != 0)) continue;
        if (other.word.load(std::memory_order_acquire) != w) continue;  // left meanwhile
        const std::string comm = load_fixed_string(other.comm, 2);
        const std::string who = my_timeout == 0 && timeout == 0 ? "neither declared a heartbeat timeout"
                                : my_timeout == 0 ? "this process declared no heartbeat timeout"
                                                  : "that process declared no heartbeat timeout";
        return "pool '" + std::string(header.name, strnlen(header.name, sizeof header.name)) +
               "' is shared with pid " + std::to_string(slot_word_pid(w)) + " (" + comm +
               ") in another pid namespace (pid:[" + std::to_string(ns) + "], this process pid:[" +
               std::to_string(my_pidns) + "]) and " + who + ": across pid namespaces a crash is only visible as a heartbeat "
               "that stops, so a dead process's locks, partitions and memory would stay held. Give every "
               "process sharing the pool one: FABRIC_SHM_HEARTBEAT_TIMEOUT=5s in each container's environment "
               "(OpenOptions::heartbeat_timeout_ns in the library)";
    }
    return {};
}

}  // namespace

Result<OwnerToken> registry_register(Pool::Impl& impl, uint64_t requested_timeout_ns, uint64_t now_ns) {
    auto timeout = effective_heartbeat_timeout(requested_timeout_ns);
    if (!timeout) return std::move(timeout).error();
    const uint64_t heartbeat_timeout_ns = *timeout;
    const uint32_t pid = uint32_t(getpid());
    const uint64_t start = self_start_time();
    const uint64_t pidns = self_pidns();
    const bool creator_ns = impl.header()->creator_pidns == pidns;
    char comm[17] = {0};
    if (FILE* f = std::fopen("/proc/self/comm", "re")) {
        if (std::fgets(comm, sizeof comm, f)) comm[std::strcspn(comm, "\n")] = '\0';
        std::fclose(f);
    }
    ProcessSlot* slots = impl.slots();
    for (int pass = 0; pass < 2; ++pass) {
        for (uint32_t k = 0; k < kRegistrySlots; ++k) {
            const uint32_t i = (pid + k) % kRegistrySlots;
            ProcessSlot& slot = slots[i];
            uint64_t w = slot.word.load(std::memory_order_acquire);
            if (slot_word_state(w) != kSlotFree) continue;
            const uint32_t gen = slot_word_gen(w) == 0 ? 1 : slot_word_gen(w);
            const uint64_t claiming = make_slot_word(kSlotClaiming, gen, pid, creator_ns);
            // acq_rel: wins the slot; pairs with retire_slot's release (zeroed shard and fields visible).
            if (!slot.word.compare_exchange_strong(w, claiming, std::memory_order_acq_rel, std::memory_order_relaxed))
                continue;
            FABRIC_CRASH_POINT("registry.register.claimed");
            // pidns first: from here on a judge in any namespace can tell whether it may probe us.
            slot.pidns.store(pidns, std::memory_order_relaxed);
            slot.start_time.store(start, std::memory_order_relaxed);
            for (auto& a : slot.attached) a.store(0, std::memory_order_relaxed);
            for (auto& c : slot.counters) c.store(0, std::memory_order_relaxed);
            for (auto& c : slot.child_groups) c.store(0, std::memory_order_relaxed);
            slot.heartbeat_ns.store(now_ns, std::memory_order_relaxed);
            slot.timeout_ns.store(heartbeat_timeout_ns, std::memory_order_relaxed);
            slot.registered_ns.store(now_ns, std::memory_order_relaxed);
            store_fixed_string(slot.comm, 2, comm);
            FABRIC_CRASH_POINT("registry.register.before_publish");
            // CAS, not a store: should our claim have been taken from us while we were
            // stopped (a judge that wrongly found us dead), the new owner's word stays and we
            // look for another slot. Release: the fields above are visible to whoever
            // acquires LIVE (dump, liveness); seq_cst: the pid-namespace check below.
            uint64_t expect = claiming;
            const uint64_t live = make_slot_word(kSlotLive, gen, pid, creator_ns);
            if (!slot.word.compare_exchange_strong(expect, live, std::memory_order_seq_cst, std::memory_order_relaxed))
                continue;
            FABRIC_PAUSE_POINT("registry.register.published");
            if (std::string conflict = namespace_conflict(*impl.header(), slots, i, pidns, heartbeat_timeout_ns);
                !conflict.empty()) {
                (void)take_and_retire(*impl.header(), slot, live, Retirer::owner);
                return make_error(Errc::unsupported, std::move(conflict));
            }
            impl.self_slot = i;
            impl.self_pid = pid;
            return make_token(i, gen);
        }
        if (pass == 0) {
            // Registry full: free dead processes' slots, then try once more.
            for (uint32_t i = 0; i < kRegistrySlots; ++i) reap_slot(*impl.header(), slots[i], now_ns);
        }
    }
    return make_error(Errc::capacity_exceeded, "process registry of pool '" + impl.name + "' is full (" +
                                                   std::to_string(kRegistrySlots) +
                                                   " live processes); stop some processes or run fabric-shm-reaper");
}

void registry_unregister(Pool::Impl& impl) noexcept {
    if (!impl.self) return;
    if (uint32_t(getpid()) != impl.self_pid) {
        // A forked child dropping the handle it inherited: the registration is its parent's,
        // which still runs (the slot word names the parent's pid, so the check below would pass).
        impl.self = 0;
        return;
    }
    ProcessSlot& slot = impl.slots()[impl.self_slot];
    const uint64_t w = slot.word.load(std::memory_order_acquire);
    const uint64_t state = slot_word_state(w);
    if ((state != kSlotLive && state != kSlotFenced) || slot_word_gen(w) != token_gen(impl.self) ||
        slot_word_pid(w) != impl.self_pid) {
        impl.self = 0;  // already reaped (we were presumed dead): nothing of ours to free
        return;
    }
    (void)take_and_retire(*impl.header(), slot, w, Retirer::owner);
    impl.self = 0;
}

}  // namespace detail

Liveness ProcessRegistry::liveness(OwnerToken token, MonoTime now, std::string* reason) const {
    const uint64_t now_ns = to_ns(now);
    const uint32_t index = token_slot(token);
    if (token == 0 || index >= kRegistrySlots) {
        if (reason) *reason = "no owner";
        return Liveness::certainly_dead;
    }
    const ProcessSlot& slot = slots_of(pool_)[index];
    // Acquire: pairs with the owner's release CAS to LIVE (fields written before it).
    const uint64_t w = slot.word.load(std::memory_order_acquire);
    if (slot_word_gen(w) != token_gen(token)) {
        if (reason) *reason = "registration ended (slot re-used)";
        return Liveness::certainly_dead;
    }
    return detail::slot_liveness(detail::header_of(pool_), slot, w, now_ns, reason);
}

Liveness ProcessRegistry::process_liveness(OwnerToken token, MonoTime now, std::string* reason) const {
    const uint64_t now_ns = to_ns(now);
    const uint32_t index = token_slot(token);
    if (token == 0 || index >= kRegistrySlots) {
        if (reason) *reason = "no owner";
        return Liveness::certainly_dead;
    }
    const ProcessSlot& slot = slots_of(pool_)[index];
    // Acquire: as in liveness(). A FENCED slot keeps its generation until its pid is gone.
    const uint64_t w = slot.word.load(std::memory_order_acquire);
    if (slot_word_gen(w) != token_gen(token)) {
        if (reason) *reason = "registration ended (slot re-used)";
        return Liveness::certainly_dead;
    }
    return detail::slot_process_liveness(detail::header_of(pool_), slot, w, now_ns, reason);
}

std::vector<ProcessInfo> ProcessRegistry::list(MonoTime now) const {
    const uint64_t now_ns = to_ns(now);
    std::vector<ProcessInfo> out;
    const ProcessSlot* slots = slots_of(pool_);
    for (uint32_t i = 0; i < kRegistrySlots; ++i) {
        const ProcessSlot& slot = slots[i];
        const uint64_t w = slot.word.load(std::memory_order_acquire);
        const uint64_t state = slot_word_state(w);
        if (state != kSlotLive && state != kSlotClaiming && state != kSlotFenced) continue;
        ProcessInfo info;
        info.slot = i;
        info.token = make_token(i, slot_word_gen(w));
        info.claiming = state == kSlotClaiming;
        info.fenced = state == kSlotFenced;
        info.pid = slot_word_pid(w);
        info.start_time = slot.start_time.load(std::memory_order_relaxed);
        info.pidns = slot.pidns.load(std::memory_order_relaxed);
        info.heartbeat_ns = slot.heartbeat_ns.load(std::memory_order_relaxed);
        info.timeout_ns = slot.timeout_ns.load(std::memory_order_relaxed);
        info.registered_ns = slot.registered_ns.load(std::memory_order_relaxed);
        info.comm = detail::load_fixed_string(slot.comm, 2);
        for (const auto& c : slot.child_groups)
            if (const uint64_t cw = c.load(std::memory_order_relaxed); cw != 0) info.child_groups.push_back(child_group_pgid(cw));
        info.liveness = detail::slot_liveness(detail::header_of(pool_), slot, w, now_ns, &info.dead_reason);
        out.push_back(std::move(info));
    }
    return out;
}

uint32_t ProcessRegistry::reap_dead(MonoTime now, std::vector<std::string>* notes) const {
    const uint64_t now_ns = to_ns(now);
    // Counts registrations ended: slots freed, and slots fenced (heartbeat timed out, pid alive).
    if (pool_.read_only()) return 0;
    uint32_t freed = 0;
    ProcessSlot* slots = slots_of(pool_);
    auto& header = detail::pool_header(pool_);
    for (uint32_t i = 0; i < kRegistrySlots; ++i) {
        if (!detail::reap_slot(header, slots[i], now_ns, notes)) continue;
        header.reaped_processes.fetch_add(1, std::memory_order_relaxed);
        ++freed;
    }
    return freed;
}

}  // namespace fabric_shm

namespace fabric_shm {

bool ProcessRegistry::reap_registration(OwnerToken token, MonoTime now, std::vector<std::string>* notes) const {
    const uint64_t now_ns = to_ns(now);
    const uint32_t index = token_slot(token);
    if (token == 0 || index >= kRegistrySlots || pool_.read_only() || pool_.self() == 0) return false;
    ProcessSlot& slot = slots_of(pool_)[index];
    // Acquire: as in liveness(). Only the registration `token` names, never a later occupant.
    const uint64_t w = slot.word.load(std::memory_order_acquire);
    if (slot_word_gen(w) != token_gen(token)) return false;
    auto& header = detail::pool_header(pool_);
    if (!detail::reap_slot(header, slot, now_ns, notes)) return false;
    header.reaped_processes.fetch_add(1, std::memory_order_relaxed);
    return true;
}

}  // namespace fabric_shm
