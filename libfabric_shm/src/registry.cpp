// SPDX-License-Identifier: MIT
// Process registry: slot claim/free protocol and the "certainly dead" test.
//
// Slot word protocol (one CAS per transition, see layout/pool_layout.h):
//   FREE(g) --claimant CAS--> CLAIMING(g', pid) --owner release store--> LIVE(g', pid)
//   LIVE/CLAIMING --owner (unregister) or reaper (certainly dead) CAS--> RETIRING(g', pid)
//   RETIRING --same process, after folding counters--> FREE(g'+1)
// A token (g', slot) stays valid exactly while the word carries g' and is not FREE/RETIRING;
// every ownership record elsewhere compares against it, so a freed registration reads as dead.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "fabric_shm/counters.h"
#include "fabric_shm/crash_point.h"
#include "pool_impl.h"

namespace fabric_shm {

using namespace layout;

namespace {
constexpr uint64_t kSlotRetiring = 3;

uint32_t next_gen(uint32_t gen) {
    gen = (gen + 1) & kSlotGenMask;
    return gen == 0 ? 1 : gen;
}

ProcessSlot* slots_of(const Pool& pool) {
    return reinterpret_cast<ProcessSlot*>(pool.base() + kRegistryOffset);
}
}  // namespace

PidProbe probe_pid(uint32_t pid) {
    PidProbe probe;
    if (pid == 0) return probe;
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        // EACCES etc.: the process exists but we may not look (hidepid): maybe alive.
        if (errno != ENOENT && errno != ESRCH) probe.exists = true;
        return probe;
    }
    char buf[1024];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return probe;  // raced with exit
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

Liveness slot_liveness(const ProcessSlot& slot, uint64_t word, uint64_t now_ns, std::string* reason) {
    auto dead = [&](std::string why) {
        if (reason) *reason = std::move(why);
        return Liveness::certainly_dead;
    };
    const uint64_t state = slot_word_state(word);
    if (state == kSlotFree || state == kSlotRetiring) return dead("registration ended");
    const uint32_t pid = slot_word_pid(word);
    const uint64_t pidns = slot.pidns.load(std::memory_order_relaxed);
    const uint64_t recorded_start = slot.start_time.load(std::memory_order_relaxed);
    const bool same_ns = pidns == 0 || pidns == self_pidns();
    if (same_ns) {
        const PidProbe probe = probe_pid(pid);
        if (!probe.exists) return dead("pid " + std::to_string(pid) + " gone");
        if (probe.zombie) return dead("pid " + std::to_string(pid) + " is a zombie");
        if (recorded_start != 0 && probe.start_time != 0 && probe.start_time != recorded_start)
            return dead("pid " + std::to_string(pid) + " reused (start time " + std::to_string(probe.start_time) +
                        ", registered " + std::to_string(recorded_start) + ")");
    }
    const uint64_t timeout = slot.timeout_ns.load(std::memory_order_relaxed);
    const uint64_t heartbeat = slot.heartbeat_ns.load(std::memory_order_relaxed);
    if (timeout != 0 && now_ns > heartbeat && now_ns - heartbeat > timeout)
        return dead("heartbeat " + format_duration_ns(now_ns - heartbeat) + " old (timeout " +
                    format_duration_ns(timeout) + ")");
    if (reason) reason->clear();
    return Liveness::maybe_alive;
}

namespace {
/// Moves a RETIRING slot to FREE(g+1), folding its counter shard into the pool totals.
/// exchange(0) makes each cell fold exactly once even if two reapers finish the same slot;
/// attach bits are left alone (a dead registration's bits are ignored, and the next
/// claimant zeroes them), so a late finisher can never clear a new owner's bits.
void retire_slot(PoolHeader& header, ProcessSlot& slot, uint64_t retiring_word) {
    for (uint32_t i = 0; i < kCounterCells; ++i) {
        const uint64_t v = slot.counters[i].exchange(0, std::memory_order_relaxed);
        if (v) header.retired_counters[i].fetch_add(v, std::memory_order_relaxed);
    }
    // Release: the zeroed shard is visible before a new claimant can win the FREE word.
    uint64_t expected = retiring_word;
    slot.word.compare_exchange_strong(expected, make_slot_word(kSlotFree, next_gen(slot_word_gen(retiring_word)), 0),
                                      std::memory_order_release, std::memory_order_relaxed);
}
}  // namespace

Result<OwnerToken> registry_register(Pool::Impl& impl, uint64_t heartbeat_timeout_ns, uint64_t now_ns) {
    const uint32_t pid = uint32_t(getpid());
    const uint64_t start = self_start_time();
    const uint64_t pidns = self_pidns();
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
            // acq_rel: wins the slot; pairs with retire_slot's release (zeroed shard visible).
            if (!slot.word.compare_exchange_strong(w, make_slot_word(kSlotClaiming, gen, pid), std::memory_order_acq_rel,
                                                   std::memory_order_relaxed))
                continue;
            FABRIC_CRASH_POINT("registry.register.claimed");
            for (auto& a : slot.attached) a.store(0, std::memory_order_relaxed);
            for (auto& c : slot.counters) c.store(0, std::memory_order_relaxed);
            slot.start_time.store(start, std::memory_order_relaxed);
            slot.pidns.store(pidns, std::memory_order_relaxed);
            slot.heartbeat_ns.store(now_ns, std::memory_order_relaxed);
            slot.timeout_ns.store(heartbeat_timeout_ns, std::memory_order_relaxed);
            slot.registered_ns.store(now_ns, std::memory_order_relaxed);
            store_fixed_string(slot.comm, 2, comm);
            FABRIC_CRASH_POINT("registry.register.before_publish");
            // Release: the fields above are visible to whoever acquires LIVE (dump, liveness).
            slot.word.store(make_slot_word(kSlotLive, gen, pid), std::memory_order_release);
            impl.self_slot = i;
            impl.self_pid = pid;
            return make_token(i, gen);
        }
        if (pass == 0) {
            // Registry full: free dead processes' slots, then try once more.
            for (uint32_t i = 0; i < kRegistrySlots; ++i) {
                ProcessSlot& slot = slots[i];
                uint64_t w = slot.word.load(std::memory_order_acquire);
                if (slot_word_state(w) == kSlotFree) continue;
                if (slot_liveness(slot, w, now_ns, nullptr) != Liveness::certainly_dead) continue;
                const uint64_t retiring = make_slot_word(kSlotRetiring, slot_word_gen(w), slot_word_pid(w));
                if (slot_word_state(w) == kSlotRetiring ||
                    slot.word.compare_exchange_strong(w, retiring, std::memory_order_acq_rel, std::memory_order_relaxed))
                    retire_slot(*impl.header(), slot, retiring);
            }
        }
    }
    return make_error(Errc::capacity_exceeded, "process registry of pool '" + impl.name + "' is full (" +
                                                   std::to_string(kRegistrySlots) +
                                                   " live processes); stop some processes or run fabric-shm-reaper");
}

void registry_unregister(Pool::Impl& impl) noexcept {
    if (!impl.self) return;
    ProcessSlot& slot = impl.slots()[impl.self_slot];
    uint64_t w = slot.word.load(std::memory_order_acquire);
    const uint64_t mine = make_slot_word(kSlotLive, token_gen(impl.self), impl.self_pid);
    if (w != mine) return;  // already reaped (we were presumed dead): nothing of ours to free
    const uint64_t retiring = make_slot_word(kSlotRetiring, slot_word_gen(w), slot_word_pid(w));
    if (slot.word.compare_exchange_strong(w, retiring, std::memory_order_acq_rel, std::memory_order_relaxed))
        retire_slot(*impl.header(), slot, retiring);
    impl.self = 0;
}

}  // namespace detail

Liveness ProcessRegistry::liveness(OwnerToken token, uint64_t now_ns, std::string* reason) const {
    const uint32_t index = token_slot(token);
    if (token == 0 || index >= kRegistrySlots) {
        if (reason) *reason = "no owner";
        return Liveness::certainly_dead;
    }
    const ProcessSlot& slot = slots_of(*pool_)[index];
    // Acquire: pairs with the owner's release store of LIVE (fields written before it).
    const uint64_t w = slot.word.load(std::memory_order_acquire);
    if (slot_word_gen(w) != token_gen(token)) {
        if (reason) *reason = "registration ended (slot re-used)";
        return Liveness::certainly_dead;
    }
    return detail::slot_liveness(slot, w, now_ns, reason);
}

std::vector<ProcessInfo> ProcessRegistry::list(uint64_t now_ns) const {
    std::vector<ProcessInfo> out;
    const ProcessSlot* slots = slots_of(*pool_);
    for (uint32_t i = 0; i < kRegistrySlots; ++i) {
        const ProcessSlot& slot = slots[i];
        const uint64_t w = slot.word.load(std::memory_order_acquire);
        const uint64_t state = slot_word_state(w);
        if (state != kSlotLive && state != kSlotClaiming) continue;
        ProcessInfo info;
        info.slot = i;
        info.token = make_token(i, slot_word_gen(w));
        info.claiming = state == kSlotClaiming;
        info.pid = slot_word_pid(w);
        info.start_time = slot.start_time.load(std::memory_order_relaxed);
        info.pidns = slot.pidns.load(std::memory_order_relaxed);
        info.heartbeat_ns = slot.heartbeat_ns.load(std::memory_order_relaxed);
        info.timeout_ns = slot.timeout_ns.load(std::memory_order_relaxed);
        info.registered_ns = slot.registered_ns.load(std::memory_order_relaxed);
        info.comm = detail::load_fixed_string(slot.comm, 2);
        info.liveness = detail::slot_liveness(slot, w, now_ns, &info.dead_reason);
        out.push_back(std::move(info));
    }
    return out;
}

uint32_t ProcessRegistry::reap_dead(uint64_t now_ns) const {
    if (pool_->read_only()) return 0;
    uint32_t freed = 0;
    ProcessSlot* slots = slots_of(*pool_);
    auto& header = const_cast<PoolHeader&>(pool_->header());
    for (uint32_t i = 0; i < kRegistrySlots; ++i) {
        ProcessSlot& slot = slots[i];
        uint64_t w = slot.word.load(std::memory_order_acquire);
        const uint64_t state = slot_word_state(w);
        if (state == kSlotFree) continue;
        if (state == kSlotRetiring) {
            // A retirer died between winning the slot and freeing it: finish its work.
            if (detail::slot_liveness(slot, make_slot_word(kSlotLive, slot_word_gen(w), slot_word_pid(w)), now_ns,
                                      nullptr) == Liveness::certainly_dead) {
                detail::retire_slot(header, slot, w);
                ++freed;
            }
            continue;
        }
        if (detail::slot_liveness(slot, w, now_ns, nullptr) != Liveness::certainly_dead) continue;
        const uint64_t retiring = make_slot_word(kSlotRetiring, slot_word_gen(w), slot_word_pid(w));
        if (!slot.word.compare_exchange_strong(w, retiring, std::memory_order_acq_rel, std::memory_order_relaxed))
            continue;
        FABRIC_CRASH_POINT("registry.reap.retiring");
        detail::retire_slot(header, slot, retiring);
        header.reaped_processes.fetch_add(1, std::memory_order_relaxed);
        ++freed;
    }
    return freed;
}

}  // namespace fabric_shm
