// SPDX-License-Identifier: MIT
// TopicManager, topic open/validation, the group table, and the reaper/check hooks for the
// topic and partition region kinds. Layout: topic_layout.h; design: docs/topics.md.
#include "fabric_shm/topic.h"

#include <time.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <optional>
#include <random>

#include "fabric_shm/clock.h"
#include "fabric_shm/counters.h"
#include "clock_read.h"
#include "crash_point.h"
#include "fabric_shm/names.h"
#include "futex.h"
#include "layout/pool_layout.h"
#include "mq/group_internal.h"
#include "mq/topic_internal.h"
#include "mq/waiting.h"
#include "owner_lock.h"
#include "pool_impl.h"
#include "region_kinds.h"

namespace fabric_shm {

void (*detail::g_mq_after_claim_hook)() = nullptr;

std::string_view on_full_name(OnFull mode) noexcept {
    switch (mode) {
        case OnFull::block: return "block";
        case OnFull::reject: return "reject";
        case OnFull::overwrite: return "overwrite";
    }
    return "unknown";
}

Result<OnFull> parse_on_full(std::string_view text) {
    if (text == "block") return OnFull::block;
    if (text == "reject") return OnFull::reject;
    if (text == "overwrite") return OnFull::overwrite;
    return make_error(Errc::invalid_argument,
                      "on_full '" + std::string(text) + "' is not one of block, reject, overwrite");
}

uint64_t max_message_bytes(uint32_t stride) noexcept {
    return stride > mq::kEnvelopeBytes ? stride - mq::kEnvelopeBytes : 0;
}

Status validate_topic_config(const TopicConfig& c) { return mq::validate_topic_config(c, mq::kMaxStride); }

Status mq::validate_topic_config(const TopicConfig& c, uint64_t max_stride) {
    if (c.num_partitions == 0 || c.num_partitions > kMaxPartitions)
        return make_error(Errc::invalid_argument, "num_partitions " + std::to_string(c.num_partitions) +
                                                      " is outside 1.." + std::to_string(kMaxPartitions));
    if (c.partition_capacity < 2 || c.partition_capacity > kMaxCapacity || !std::has_single_bit(c.partition_capacity))
        return make_error(Errc::invalid_argument,
                          "partition_capacity " + std::to_string(c.partition_capacity) +
                              " must be a power of two in 2.." + std::to_string(kMaxCapacity));
    if (c.partition_stride < kMinStride || c.partition_stride > max_stride || c.partition_stride % 64 != 0)
        return make_error(Errc::invalid_argument,
                          "partition_stride " + std::to_string(c.partition_stride) +
                              " must be a multiple of 64 in " + std::to_string(kMinStride) + ".." +
                              std::to_string(max_stride) + " (the envelope takes " +
                              std::to_string(kEnvelopeBytes) + " bytes of each slot)");
    if (uint32_t(c.on_full) > 2)
        return make_error(Errc::invalid_argument, "on_full " + std::to_string(uint32_t(c.on_full)) +
                                                      " is not block(0), reject(1) or overwrite(2)");
    return {};
}

uint64_t key_hash(ByteView key) noexcept {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint8_t b : key) {
        h ^= b;
        h *= 0x100000001b3ULL;
    }
    return h;
}

namespace mq {
namespace {

std::string partition_region_name(std::string_view topic, uint32_t i) {
    return std::string(topic) + "." + std::to_string(i);
}

uint64_t new_incarnation() {
    std::random_device rd;
    uint64_t v = (uint64_t(rd()) << 32) ^ rd() ^ wall_now_ns();
    return v ? v : 1;
}

Error corrupt(std::string_view topic, const std::string& what) {
    return make_error(Errc::corrupt, "topic '" + std::string(topic) + "': " + what);
}

}  // namespace

namespace {

void nap(uint64_t ns) {
    timespec ts{time_t(ns / kNsPerSec), long(ns % kNsPerSec)};
    nanosleep(&ts, nullptr);
}

/// The root region, waiting up to `wait_ns` while another process creates the topic (its
/// root stays CREATING until every partition exists, then is published at once).
Result<Region> open_root(const Pool& pool, std::string_view name, uint64_t wait_ns) {
    auto root = pool.open_region(RegionKind::topic, name);
    if (root || root.code() != Errc::not_ready || wait_ns == 0) return root;
    FABRIC_PAUSE_POINT("topic.open.waiting");
    const uint64_t deadline = mono_now_ns() + wait_ns;
    for (;;) {
        nap(kNsPerMs);  // a creation takes microseconds to milliseconds (zeroing the rings)
        root = pool.open_region(RegionKind::topic, name);
        if (root || root.code() != Errc::not_ready) return root;
        if (mono_now_ns() >= deadline) {
            Error e = std::move(root).error();
            e.message += ", and did not become ready within " + format_duration_ns(wait_ns) +
                         " (is its creator stopped?)";
            return e;
        }
    }
}

/// Empty when `r`, opened through a topic header's partition ref, is a partition of the topic
/// whose root region is `topic` (a partition region created as that root's child); else what
/// the ref names instead. The header's own fields (magic, index, incarnation) can all be copied
/// from another topic's partition; the directory entry's parent cannot be set through the
/// topic's memory.
std::string not_a_partition_of(const Pool& pool, const Region& r, RegionRef topic) {
    // Read in place: kind and parent are immutable while the entry is not FREE, and our handle
    // (attached) keeps it this generation; open_region's acquire of its word made them visible.
    const layout::RegionEntry& e = detail::region_entry(r);
    if (e.kind.load(std::memory_order_relaxed) == uint32_t(RegionKind::partition) &&
        RegionRef::unpack(e.parent.load(std::memory_order_relaxed)) == topic)
        return {};
    auto info = pool.region_info(r.ref());  // the refusal only: name what the ref names
    if (!info) return "a region that could not be described (" + info.error().message + ")";
    return "region '" + info->name + "' (kind " + std::to_string(info->kind) + ")";
}
}  // namespace

Result<std::unique_ptr<TopicHandle>> open_topic(const Pool& pool, std::string_view name, uint64_t creation_wait_ns) {
    FABRIC_TRY(validate_name("topic", name));
    auto root = open_root(pool, name, creation_wait_ns);
    if (!root) {
        if (root.code() == Errc::not_found)
            return make_error(Errc::not_found, "topic '" + std::string(name) + "' does not exist in pool '" +
                                                   pool.name() + "' (create it with `fabric-shm topic create`)");
        return std::move(root).error();
    }
    auto t = std::make_unique<TopicHandle>();
    t->pool_handle = pool;
    t->pool = &t->pool_handle;
    t->name = std::string(name);
    t->root = std::move(root.value());
    if (t->root.length() < kTopicRegionBytes)
        return corrupt(name, "root region of " + std::to_string(t->root.length()) + " bytes is shorter than " +
                                 std::to_string(kTopicRegionBytes));
    t->hdr = reinterpret_cast<TopicHeader*>(t->root.data());
    t->groups = reinterpret_cast<GroupSlot*>(t->root.data() + kGroupsOffset);
    t->waiters = reinterpret_cast<WaiterSlot*>(t->root.data() + kWaitersOffset);
    const TopicHeader& h = *t->hdr;
    if (h.magic != kTopicMagic) return corrupt(name, "bad magic in the root region");
    if (h.version != kTopicLayoutVersion)
        return make_error(Errc::version_mismatch, "topic '" + std::string(name) + "' has layout version " +
                                                      std::to_string(h.version) + ", this build reads " +
                                                      std::to_string(kTopicLayoutVersion));
    if (h.layout_fingerprint != kTopicLayoutFingerprint)
        return make_error(Errc::version_mismatch,
                          "topic '" + std::string(name) + "' was created by a build with other topic structures "
                          "(layout fingerprint " + std::to_string(h.layout_fingerprint) + ", this build's " +
                          std::to_string(kTopicLayoutFingerprint) + "); re-create it with this build");
    // Copy the immutable config out once and validate it before using any of it.
    TopicConfig cfg;
    cfg.num_partitions = h.num_partitions;
    cfg.partition_capacity = uint32_t(std::min<uint64_t>(h.capacity, UINT32_MAX));
    cfg.partition_stride = uint32_t(std::min<uint64_t>(h.stride, UINT32_MAX));
    cfg.on_full = OnFull(h.on_full);
    if (auto st = validate_topic_config(cfg, kMaxSlotStride); !st) return corrupt(name, st.error().message);
    t->incarnation = h.incarnation;
    t->num_partitions = cfg.num_partitions;
    t->on_full = OnFullCode(cfg.on_full);
    t->capacity = cfg.partition_capacity;
    t->stride = cfg.partition_stride;
    const uint64_t need = partition_region_bytes(t->capacity, t->stride);
    for (uint32_t i = 0; i < t->num_partitions; ++i) {
        const RegionRef ref = RegionRef::unpack(h.partition_refs[i]);
        auto r = pool.open_region(ref);
        if (!r) {
            Error e = std::move(r).error();
            e.message = "topic '" + std::string(name) + "' partition " + std::to_string(i) + ": " + e.message;
            return e;
        }
        if (std::string other = not_a_partition_of(pool, *r, t->root.ref()); !other.empty())
            return corrupt(name, "partition " + std::to_string(i) + " ref names " + other +
                                     ", which is not a partition of this topic");
        if (r->length() < need)
            return corrupt(name, "partition " + std::to_string(i) + " region of " + std::to_string(r->length()) +
                                     " bytes is shorter than " + std::to_string(need));
        auto* ph = reinterpret_cast<PartitionHeader*>(r->data());
        if (ph->magic != kPartitionMagic || ph->index != i || ph->capacity != t->capacity || ph->stride != t->stride ||
            ph->incarnation != t->incarnation || ph->slots_offset != kSlotsOffset || ph->on_full != t->on_full)
            return corrupt(name, "partition " + std::to_string(i) + " header does not match the topic");
        PartitionView v;
        v.hdr = ph;
        v.slots = r->data() + kSlotsOffset;
        v.capacity = t->capacity;
        v.mask = t->capacity - 1;
        v.stride = t->stride;
        v.log2 = uint32_t(std::countr_zero(t->capacity));
        v.base = ph->base_offset;
        v.index = i;
        t->parts.push_back(v);
        t->part_headers.push_back(ph);
        t->part_regions.push_back(std::move(r.value()));
        t->part_gates.push_back(detail::LeaseGate::of(t->part_regions.back()));
    }
    t->root_gate = detail::LeaseGate::of(t->root);
    return t;
}

Status check_topic(const TopicHandle& t, int partition) {
    return check_topic_at(t, detail::read_clock(CLOCK_MONOTONIC_COARSE), partition);
}

Status check_topic_at(const TopicHandle& t, uint64_t coarse_now, int partition) {
    if (partition < 0 && t.root_gate.entry && t.root_gate.passes(coarse_now)) [[likely]]
        return {};  // the common call (a poll, a commit, a hand-out count) in one test
    FABRIC_TRY(detail::check_through(t.root_gate, t.root, coarse_now));
    if (partition < 0) return {};
    const size_t p = size_t(partition);
    return detail::check_through(t.part_gates[p], t.part_regions[p], coarse_now);
}

uint64_t oldest_offset(const TopicHandle& t, const PartitionView& p) {
    // Acquire: pairs with the tail CAS (release) of claimers and helpers.
    const uint64_t tail = p.hdr->tail.load(std::memory_order_acquire);
    if (t.on_full == kOnFullOverwrite) return oldest_held(p, tail);
    // Acquire: pairs with raise_head's CAS.
    const uint64_t head = p.hdr->head.load(std::memory_order_acquire);
    return std::min(head, tail);
}

// ---- groups ---------------------------------------------------------------------------

std::string group_name(const GroupSlot& g) {
    char buf[kGroupNameWords * 8 + 1] = {};
    for (uint32_t i = 0; i < kGroupNameWords; ++i) {
        const uint64_t w = g.name[i].load(std::memory_order_relaxed);  // immutable while LIVE
        std::memcpy(buf + 8 * i, &w, 8);
    }
    return std::string(buf, strnlen(buf, sizeof buf - 1));
}

bool group_name_is(const GroupSlot& g, std::string_view name) { return group_name(g) == name; }

int find_group(const TopicHandle& t, std::string_view name, uint64_t* word) {
    for (uint32_t i = 0; i < kMaxGroups; ++i) {
        // Acquire: pairs with the registrant's release store of LIVE (name written before).
        const uint64_t w = t.groups[i].word.load(std::memory_order_acquire);
        if (group_state(w) == kGroupLive && group_name_is(t.groups[i], name)) {
            if (word) *word = w;
            return int(i);
        }
    }
    return -1;
}

namespace {
/// Wakes the producers parked on the topic's space_seq; the caller saw space_waiters != 0.
void wake_parked_producers(TopicHeader& hdr) {
    hdr.space_seq.fetch_add(1, std::memory_order_release);  // pairs with the waiter's acquire load
    detail::futex_wake(hdr.space_seq, INT32_MAX);
}

/// Ends the registration whose LIVE word is `registration` in slot `g` of the topic `hdr`, if
/// its lease ran out (force: regardless); nothing when the slot holds another or a renewal
/// keeps it. True if this call removed it. The one way a registration ends: `group rm`, a
/// registrant replacing an expired one, and the reaper all come here.
bool end_registration(TopicHeader& hdr, GroupSlot& g, uint64_t registration, bool force, uint64_t now_ns) {
    // Acquire: pairs with the registrant's release store of LIVE.
    uint64_t w = g.word.load(std::memory_order_acquire);
    if (group_state(w) != kGroupLive || w != registration) return false;
    // Step 1: expires -> 0 by CAS, so a renewer racing with us either wins (group stays) or
    // finds 0 (group gone). A crash after this step leaves LIVE with expires 0 = expired.
    // Each lease read is checked to be the registration's: a caller paused after finding it
    // (`group rm` and the reaper take no lock) may resume after it was removed and another
    // registered in the slot, whose lease it must not end (the new registration stores its
    // lease with a release after its CREATING CAS, so seeing that lease means seeing the word
    // changed).
    uint64_t e = g.lease_expires_ns.load(std::memory_order_acquire);  // pairs with renew CAS
    while (e != 0) {
        if (g.word.load(std::memory_order_acquire) != registration) return false;
        if (!force && e > now_ns) return false;
        if (g.lease_expires_ns.compare_exchange_weak(e, 0, std::memory_order_acq_rel, std::memory_order_acquire))
            break;
    }
    FABRIC_PAUSE_POINT("group.lease.expire");
    // Step 2: LIVE(g) -> FREE(g+1); consumers holding the LIVE word see the group gone.
    // seq_cst: release pairs with find_group/register's acquire of the word; the total order
    // pairs with an epoch drawer's raise_fence_floor then seq_cst re-check of the word (a token
    // drawn by this registration is either refused or below the next registration's era).
    const bool removed = g.word.compare_exchange_strong(w, make_group_word(kGroupFree, group_gen(w) + 1, 0),
                                                        std::memory_order_seq_cst, std::memory_order_relaxed);
    // seq_cst: pairs with the blocked producer's seq_cst increment (Dekker with the group gone).
    if (removed && hdr.space_waiters.load(std::memory_order_seq_cst) != 0) wake_parked_producers(hdr);
    return removed;
}
}  // namespace

bool deregister_group(TopicHandle& t, int index, uint64_t registration, bool force, uint64_t now_ns) {
    return end_registration(*t.hdr, t.groups[index], registration, force, now_ns);
}

// ---- fence tokens -------------------------------------------------------------------------

namespace {
std::atomic<uint64_t>& fence_floor(const Pool& pool) {
    // The pool header's mutable words are shared state (see stolen_locks in owner_lock.cpp).
    return detail::pool_header(pool).fence_floor;
}
}  // namespace

Result<uint64_t> allocate_fence_era(const Pool& pool) {
    auto& floor = fence_floor(pool);
    uint64_t cur = floor.load(std::memory_order_seq_cst);  // pairs with raise_fence_floor's CAS
    for (;;) {
        if (cur >= kMaxFenceEra - 1 || wall_now_ns() >= kMaxFenceEra)
            return make_error(Errc::capacity_exceeded,
                              "fence floor " + std::to_string(cur) + " (or the wall clock) leaves no room for a new "
                              "registration's tokens: eras stay below " + std::to_string(kMaxFenceEra) +
                              " (2^62 - 2^32); the pool header is corrupt or the clock is wrong: re-create the pool");
        // Above every token issued here (the floor), and at least the wall clock: a pool that is
        // new (re-created, its results kept by a TieredObjectStore) has no floor, but every token
        // of the lost pool was drawn at an earlier wall-clock ns from an era at most that ns,
        // plus fewer epochs than nanoseconds have passed since.
        const uint64_t era = std::max<uint64_t>(wall_now_ns(), cur + 1);
        // seq_cst: the next registration's load sees this era (no two registrations share one).
        if (floor.compare_exchange_weak(cur, era, std::memory_order_seq_cst, std::memory_order_seq_cst)) return era;
    }
}

Status note_fence_token(const Pool& pool, uint64_t token) {
    if (token >= kMaxNotedFenceToken)
        return make_error(Errc::invalid_argument, "fence token " + std::to_string(token) +
                                                      " is at or above the bound " + std::to_string(kMaxNotedFenceToken) +
                                                      " (2^61) that keeps every later token from wrapping; not noted");
    raise_fence_floor(pool, token);
    return {};
}

void raise_fence_floor(const Pool& pool, uint64_t token) {
    auto& floor = fence_floor(pool);
    uint64_t cur = floor.load(std::memory_order_seq_cst);  // see allocate_fence_era
    while (cur < token &&
           !floor.compare_exchange_weak(cur, token, std::memory_order_seq_cst, std::memory_order_seq_cst)) {
    }
}

void raise_head(PartitionHeader* h, uint64_t value) {
    // seq_cst, the load as well as the CAS: whichever is the caller's last access of the head
    // (a raise of its own, or a head already that high) is the store half of the registration
    // handshake; partner: register_group's seq_cst store of LIVE and settle_group_starts'
    // seq_cst load of the head.
    uint64_t cur = h->head.load(std::memory_order_seq_cst);
    while (int64_t(value - cur) > 0 &&
           !h->head.compare_exchange_weak(cur, value, std::memory_order_seq_cst, std::memory_order_seq_cst)) {
    }
}

namespace {
/// The registrant's half of the registration handshake, after its seq_cst store of LIVE:
/// moves each partition's start up to the head if a producer (or a dead-letter purge) raised
/// the head past it meanwhile. Returns true when it moved any.
///
/// The start was read (oldest_offset, or the tail for `latest`) before the group was
/// published, and a blocked producer decides what it may overwrite from the group table it
/// read before raising the head (producer.cpp, wait_for_space). Handshake (Dekker): the
/// producer raises the head (seq_cst), then re-reads the group table (seq_cst) and overwrites
/// nothing past a group it finds there; we store LIVE (seq_cst), then read the head here
/// (seq_cst). Either the producer sees our group (and waits for it, as for any slow group), or
/// we see its raise and start past what it overwrites: the registration then takes effect
/// after the raise, and `earliest` is the earliest message still retained. When both see each
/// other, our move ends the producer's wait (the caller wakes it). A raise we do not see comes
/// after our store in the seq_cst order, so every producer that would overwrite past it
/// re-reads the table after it and finds our group: our start stays below that head and the
/// offsets in between are kept for us (our consumer reads from the committed offset, not from
/// the head: consumer.cpp, Impl::from_committed).
bool settle_group_starts(const TopicHandle& t, GroupSlot& g) {
    bool moved = false;
    for (uint32_t p = 0; p < t.num_partitions; ++p) {
        // seq_cst: the load half of the handshake above; partner: the producer's seq_cst head
        // raise (raise_head) before its seq_cst re-read of the group table (min_committed).
        const uint64_t head = t.parts[p].hdr->head.load(std::memory_order_seq_cst);
        std::atomic<uint64_t>& committed = g.parts[p].committed;
        uint64_t start = committed.load(std::memory_order_relaxed);  // ours: the group is not handed out yet
        // Never backwards. seq_cst: a producer parked on this group re-reads committed after its
        // seq_cst space_waiters increment (the commit handshake, commit_in_pool); wake_space's
        // seq_cst load of space_waiters is the other half. A CAS, not a store: an operator's
        // reset (find_group needs no group lock) may commit meanwhile.
        while (int64_t(head - start) > 0 &&
               !committed.compare_exchange_weak(start, head, std::memory_order_seq_cst, std::memory_order_relaxed)) {
        }
        if (int64_t(head - start) > 0) moved = true;
    }
    return moved;
}
}  // namespace

Result<GroupRef> register_group(TopicHandle& t, std::string_view group, const GroupOptions& options) {
    FABRIC_TRY(validate_name("group", group));
    if (options.ttl <= Duration::zero()) return make_error(Errc::invalid_argument, "group ttl 0 must be > 0");
    const Pool& pool = *t.pool;
    const OwnerToken me = pool.self();
    if (me == 0)
        return make_error(Errc::permission_denied, "registering group '" + std::string(group) +
                                                       "' needs a writable pool (this handle is read-only)");
    auto lk = detail::owner_lock_acquire(t.hdr->groups_lock, pool, me, 2 * kNsPerSec, "topic group lock");
    if (!lk) return std::move(lk).error();
    detail::OwnerLockGuard guard(t.hdr->groups_lock, me);
    uint64_t now = mono_now_ns();
    // We hold the lock, so a CREATING slot belongs to a holder that died (stolen) or to us never.
    for (uint32_t i = 0; i < kMaxGroups; ++i) {
        uint64_t w = t.groups[i].word.load(std::memory_order_acquire);  // pairs with LIVE/FREE release stores
        if (group_state(w) == kGroupCreating)
            t.groups[i].word.compare_exchange_strong(w, make_group_word(kGroupFree, group_gen(w) + 1, 0),
                                                     std::memory_order_release, std::memory_order_relaxed);
    }
    // One LIVE slot per name. A registration found expired is taken over only once our
    // deregistration removed it: a member's renewal may land after we judged it expired (the
    // renewer read its clock before ours and paused, or read the coarse clock a tick behind),
    // and then the registration lives on and is the one to return. Each round either returns,
    // or removed the slot, or saw the lease or the word move; a few rounds settle it.
    for (uint32_t round = 0;; ++round) {
        if (round == kRegisterRounds)
            return make_error(Errc::busy, "group '" + std::string(group) + "' on topic '" + t.name +
                                              "': its expired registration could not be removed in " +
                                              std::to_string(kRegisterRounds) +
                                              " tries (renewed and expired again meanwhile); try again");
        uint64_t w = 0;
        const int idx = find_group(t, group, &w);
        if (idx < 0) break;
        GroupSlot& g = t.groups[idx];
        if (!group_expired(g, now)) {
            uint64_t e = g.lease_expires_ns.load(std::memory_order_acquire);  // pairs with renew/deregister
            const uint64_t ne = now + g.lease_ttl_ns.load(std::memory_order_relaxed);
            if (e != 0 && (e >= ne || g.lease_expires_ns.compare_exchange_strong(e, ne, std::memory_order_acq_rel,
                                                                                std::memory_order_relaxed)))
                return GroupRef{idx, w};
            // The lease moved since we judged it: set to 0 by someone who acted on its expiry
            // (a producer, the reaper), or renewed. Judged again; never handed out at 0.
            now = mono_now_ns();
            continue;
        }
        FABRIC_PAUSE_POINT("group.register.found_expired");
        if (deregister_group(t, idx, w, false, now)) break;
        now = mono_now_ns();
    }
    // Drawn before a slot is taken, so a refusal leaves nothing half-registered (a floor raised
    // for a registration that then finds no free slot only skips eras).
    auto era = allocate_fence_era(pool);
    if (!era) return std::move(era).error();
    std::optional<Error> slot_busy;
    uint64_t slot_wait_end = 0;
    for (uint32_t i = 0; i < kMaxGroups; ++i) {
        GroupSlot& g = t.groups[i];
        uint64_t fw = g.word.load(std::memory_order_acquire);  // pairs with deregister's release
        if (group_state(fw) == kGroupLive && group_expired(g, now)) {
            deregister_group(t, int(i), fw, false, now);
            fw = g.word.load(std::memory_order_acquire);
        }
        if (group_state(fw) != kGroupFree) continue;
        const uint32_t gen = group_gen(fw);
        const uint64_t creating = make_group_word(kGroupCreating, gen, me);
        // Acquire: nothing of ours is written to the slot before we own it.
        if (!g.word.compare_exchange_strong(fw, creating, std::memory_order_acquire, std::memory_order_relaxed))
            continue;
        // The slot's own lock, taken before any field is rewritten and held until the new
        // registration is LIVE. Its holder may belong to the slot's previous registration: a
        // committer, dead-letter writer or joiner that checked the old group word under the
        // lock and then paused. Its stores must land before ours (it still writes into the
        // old registration) or never: it keeps the lock while paused, so the slot is left as
        // it was and the next one tried. A holder that is certainly dead is taken over; what
        // it left half-written is rewritten below. Later lockers of the old registration
        // find the group word changed and write nothing.
        // One wait per registration in all (a few milliseconds per slot after it, enough to
        // take over a dead holder's lock): the topic's group lock is held meanwhile.
        const uint64_t at = mono_now_ns();
        if (slot_wait_end == 0) slot_wait_end = at + kReusedSlotLockWaitNs;
        const uint64_t wait = std::max(slot_wait_end > at ? slot_wait_end - at : 0, kReusedSlotLockMinWaitNs);
        auto slot_lock = detail::owner_lock_acquire(g.lock, pool, me, wait, "group lock of a freed slot");
        if (!slot_lock) {
            uint64_t c = creating;
            // Release: nothing was written; the slot is FREE at the generation it had.
            g.word.compare_exchange_strong(c, fw, std::memory_order_release, std::memory_order_relaxed);
            slot_busy = std::move(slot_lock).error();
            continue;
        }
        std::optional<detail::OwnerLockGuard> slot_guard;
        slot_guard.emplace(g.lock, me);
        char name[kGroupNameWords * 8] = {};
        std::memcpy(name, group.data(), std::min(group.size(), sizeof name));
        for (uint32_t k = 0; k < kGroupNameWords; ++k) {
            uint64_t v;
            std::memcpy(&v, name + 8 * k, 8);
            g.name[k].store(v, std::memory_order_relaxed);  // published by the LIVE release store
        }
        g.lease_ttl_ns.store(to_ns(options.ttl), std::memory_order_relaxed);
        // The lease counts from now, not from when we took the group lock: the era and the
        // freed slot's lock may have taken a while (a short TTL would be born expired, and a
        // producer acting on it would end the group before its consumer's first poll).
        now = mono_now_ns();
        // Release: a renewer of the slot's previous registration that reloads this lease after
        // its CAS failed sees our CREATING word too, and gives up (renew_group).
        g.lease_expires_ns.store(now + to_ns(options.ttl), std::memory_order_release);
        g.registered_ns.store(now, std::memory_order_relaxed);
        g.epoch.store(0, std::memory_order_relaxed);
        g.flags.store(0, std::memory_order_relaxed);
        g.era.store(*era, std::memory_order_relaxed);  // published by the LIVE release store
        // A new registration writes no results yet (a previous one's record must not count).
        g.results_seq.store(0, std::memory_order_relaxed);
        g.results_flags.store(0, std::memory_order_relaxed);
        for (auto& b : g.results_bucket) b.store(0, std::memory_order_relaxed);
        for (auto& m : g.members) {
            // FREE at a higher generation, not 0: a member of the earlier registration paused
            // before its CAS of a row word (an eviction, a leave) must not match a word of ours.
            const uint64_t was = m.word.load(std::memory_order_relaxed);
            m.word.store(make_member_word(kMemberFree, member_gen(was) + 1, 0), std::memory_order_relaxed);
            m.heartbeat_ns.store(0, std::memory_order_relaxed);
            m.epoch.store(0, std::memory_order_relaxed);
            for (auto& x : m.id) x.store(0, std::memory_order_relaxed);
        }
        // Release fence: a reader that checked the slot's word was an earlier registration's
        // and then reads one of the offsets below re-reads the word after an acquire fence
        // (Consumer's resolve with an offset store); fence to fence, it sees CREATING or later.
        std::atomic_thread_fence(std::memory_order_release);
        for (uint32_t p = 0; p < kMaxPartitions; ++p) {
            uint64_t start = 0;
            if (p < t.num_partitions) {
                const PartitionView& pv = t.parts[p];
                start = options.start == GroupStart::latest ? pv.hdr->tail.load(std::memory_order_acquire)
                                                            : oldest_offset(t, pv);
            }
            g.parts[p].committed.store(start, std::memory_order_relaxed);
            g.parts[p].commit_epoch.store(0, std::memory_order_relaxed);
            g.parts[p].owner.store(0, std::memory_order_relaxed);
            g.parts[p].reserved_attempts[0] = g.parts[p].reserved_attempts[1] = 0;
            for (auto& a : g.parts[p].attempt_window) a.store(0, std::memory_order_relaxed);
            g.parts[p].commits.store(0, std::memory_order_relaxed);
            g.parts[p].dead_letter_offset.store(0, std::memory_order_relaxed);
            g.parts[p].dead_letter_epoch.store(0, std::memory_order_relaxed);
        }
        FABRIC_PAUSE_POINT("group.register.before_publish");
        const uint64_t live = make_group_word(kGroupLive, gen, me);
        // seq_cst: a release (publishes name, lease and offsets to find_group's acquire load),
        // and the store half of the registration handshake with a blocked producer: see
        // settle_group_starts, which must come after it.
        g.word.store(live, std::memory_order_seq_cst);
        // LIVE: a stale locker now finds the word changed. Released before the settling below,
        // which does not need it (its start moves by CAS), so that the new group's members
        // and operators need not wait for this registrant.
        slot_guard.reset();
        FABRIC_PAUSE_POINT("group.register.after_publish");
        // A producer parked on our old start waits no longer than this wake (a registration
        // is rare: the system call under the topic's group lock costs only other registrants).
        if (settle_group_starts(t, g)) wake_space(t);
        return GroupRef{int(i), live};
    }
    // Every free slot was locked by a live, stopped process of an earlier registration.
    if (slot_busy) return std::move(*slot_busy);
    return make_error(Errc::capacity_exceeded, "topic '" + t.name + "' already has " + std::to_string(kMaxGroups) +
                                                   " groups registered (the limit); remove one with `fabric-shm group rm`");
}

namespace {
Error deregistered_error(const TopicHandle& t, std::string_view group) {
    return make_error(Errc::not_found, "group '" + std::string(group) + "' on topic '" + t.name +
                                           "' was deregistered (lease expired or removed); open a new consumer");
}
}  // namespace

Status renew_group(TopicHandle& t, const GroupRef& ref, std::string_view group, uint64_t now_ns) {
    GroupSlot& g = t.groups[ref.index];
    // Acquire: pairs with deregister's release store (and, after a failed CAS below, with a new
    // registration's release store of its lease).
    auto still_ours = [&] { return g.word.load(std::memory_order_acquire) == ref.word; };
    if (!still_ours()) return deregistered_error(t, group);
    uint64_t e = g.lease_expires_ns.load(std::memory_order_acquire);  // pairs with the CASes below
    const uint64_t ttl = g.lease_ttl_ns.load(std::memory_order_relaxed);
    for (;;) {
        if (e == 0)
            return make_error(Errc::lease_expired, "group '" + std::string(group) + "' on topic '" + t.name +
                                                       "': its lease ran out and a producer or the reaper acted on "
                                                       "it (ttl " + format_duration_ns(ttl) + ")");
        if (e <= now_ns)
            return make_error(Errc::lease_expired, "group '" + std::string(group) + "' on topic '" + t.name +
                                                       "': lease ran out " + format_duration_ns(now_ns - e) +
                                                       " ago (ttl " + format_duration_ns(ttl) + ")");
        if (e - now_ns > ttl - ttl / 4) return {};  // more than 3/4 left: nothing to do
        FABRIC_PAUSE_POINT("group.lease.renew");
        // `now_ns` may be older than the CAS (a pause, the coarse clock), so the CAS may land
        // after `e` passed. That is harmless unless someone acted on the expiry meanwhile, and
        // whoever does sets the lease to 0 first (deregister_group, min_committed acting): then
        // this CAS fails and the reload says expired.
        if (g.lease_expires_ns.compare_exchange_weak(e, now_ns + ttl, std::memory_order_acq_rel,
                                                     std::memory_order_acquire))
            return {};
        // Reloaded: a lease we did not write. The slot may hold another registration by now
        // (removed and registered again while we paused); its lease is not ours to move.
        if (!still_ours()) return deregistered_error(t, group);
    }
}

Status commit_in_pool(TopicHandle& t, const GroupRef& ref, std::string_view group,
                      std::span<const OffsetCommit> commits, uint64_t lock_wait_ns) {
    const Pool& pool = *t.pool;
    const OwnerToken me = pool.self();
    if (me == 0) return make_error(Errc::permission_denied, "commit needs a writable pool");
    const uint64_t coarse = mono_coarse_ns();
    FABRIC_TRY(check_topic_at(t, coarse));  // fail closed: a removed topic takes no commits
    FABRIC_TRY(renew_group(t, ref, group, coarse));
    GroupSlot& g = t.groups[ref.index];
    for (const auto& c : commits)
        if (c.partition >= t.num_partitions)
            return make_error(Errc::invalid_argument, "partition " + std::to_string(c.partition) + " >= " +
                                                          std::to_string(t.num_partitions) + " partitions of topic '" +
                                                          t.name + "'");
    FABRIC_PAUSE_POINT("group.commit.before_lock");
    {
        // Threads of this process exclude each other through the lock word's thread tag: no
        // process-wide mutex, whose wait would be unbounded and shared by every group.
        auto lk = detail::owner_lock_acquire(g.lock, pool, me, lock_wait_ns, "group commit lock");
        if (!lk) return std::move(lk).error();
        // A stolen lock needs no repair: each committer stores commit_epoch before committed, so a
        // crash between the two leaves (new epoch, old offset): a re-commit, never a lost fence.
        detail::OwnerLockGuard guard(g.lock, me);
        if (!holds_registration(g, ref.word))
            return make_error(Errc::not_found, "group '" + std::string(group) + "' was deregistered during commit");
        for (const auto& c : commits) {
            const uint64_t stored = g.parts[c.partition].commit_epoch.load(std::memory_order_relaxed);  // under lock
            if (c.epoch < stored)
                return make_error(Errc::stale_epoch, "commit to group '" + std::string(group) + "' topic '" + t.name +
                                                         "' partition " + std::to_string(c.partition) + " under epoch " +
                                                         std::to_string(c.epoch) + " < stored epoch " +
                                                         std::to_string(stored));
        }
        FABRIC_PAUSE_POINT("group.commit.locked");
        for (const auto& c : commits) {
            GroupPartition& gp = g.parts[c.partition];
            gp.commit_epoch.store(c.epoch, std::memory_order_relaxed);  // under lock; before committed (see above)
            // seq_cst: pairs with a blocked producer's seq_cst space_waiters increment and its
            // seq_cst loads in min_committed (Dekker: one of us sees the other).
            gp.committed.store(c.offset, std::memory_order_seq_cst);
            // Release: a consumer resuming from an offset store reads commits (acquire), then
            // committed, and trusts the latter as a commit only when it sees one counted.
            gp.commits.fetch_add(1, std::memory_order_release);
        }
    }
    // After the lock: a wake is a system call (microseconds when a producer sleeps), and the
    // group's other members wait for this lock to commit. The Dekker pairing is the seq_cst
    // store above and wake_space_if_room's seq_cst load, whichever side of the release they fall.
    for (const auto& c : commits)
        if (wake_space_if_room(t, c.partition, c.offset, coarse)) break;
    return {};
}

namespace {
/// A fenced step on one partition of a group: `step(partition's row)` runs under the group's
/// lock, the lock a new owner raises its fence under before it reads or counts anything of
/// the partition, and only while `token` is at or above that fence. So a step that runs lands
/// before any newer owner's fence, and one that comes later (its caller paused, was evicted
/// and the partition moved) changes nothing: stale_epoch, whose message says what the newer
/// owner does instead (`newer_owner`). `what` names the step in errors ("dead letter",
/// "attempt refund"), `where` adds to the partition's coordinates (" offset 7"), `lock_name`
/// names the lock in a busy error.
template <class Step>
Status fenced_partition_step(TopicHandle& t, const GroupRef& ref, std::string_view group, uint32_t partition,
                             uint64_t token, const char* what, const std::string& where,
                             std::string_view newer_owner, const char* lock_name, uint64_t lock_wait_ns,
                             Step&& step) {
    const Pool& pool = *t.pool;
    const OwnerToken me = pool.self();
    if (me == 0) return make_error(Errc::permission_denied, std::string(what) + " needs a writable pool");
    if (partition >= t.num_partitions)
        return make_error(Errc::invalid_argument, "partition " + std::to_string(partition) + " >= " +
                                                      std::to_string(t.num_partitions) + " partitions of topic '" +
                                                      t.name + "'");
    GroupSlot& g = t.groups[ref.index];
    auto lk = detail::owner_lock_acquire(g.lock, pool, me, lock_wait_ns, lock_name);
    if (!lk) return std::move(lk).error();
    // A stolen lock needs no repair: every step's stores are single words, epoch before offset.
    detail::OwnerLockGuard guard(g.lock, me);
    if (!holds_registration(g, ref.word))
        return make_error(Errc::not_found,
                          "group '" + std::string(group) + "' was deregistered before a " + std::string(what));
    GroupPartition& gp = g.parts[partition];
    const uint64_t fence = gp.commit_epoch.load(std::memory_order_relaxed);  // under the lock
    if (token < fence)
        return make_error(Errc::stale_epoch, std::string(what) + " for group '" + std::string(group) + "' topic '" +
                                                 t.name + "' partition " + std::to_string(partition) + where +
                                                 " under fence token " + std::to_string(token) + " < " +
                                                 std::to_string(fence) + ": the partition has a newer owner, " +
                                                 std::string(newer_owner));
    step(gp);
    return {};
}
}  // namespace

Status record_dead_letter(TopicHandle& t, const GroupRef& ref, std::string_view group, uint32_t partition,
                          uint64_t offset, uint64_t token, uint64_t lock_wait_ns) {
    // Checked here too (fenced_partition_step does), before the renewal below writes the
    // group's lease: a read-only mapping must not be written.
    if (t.pool->self() == 0) return make_error(Errc::permission_denied, "dead letter needs a writable pool");
    const uint64_t coarse = mono_coarse_ns();
    FABRIC_TRY(check_topic_at(t, coarse));
    FABRIC_TRY(renew_group(t, ref, group, coarse));
    bool moved = false;
    FABRIC_TRY(fenced_partition_step(
        t, ref, group, partition, token, "dead letter", " offset " + std::to_string(offset),
        "which handles that message", "group dead-letter lock", lock_wait_ns, [&](GroupPartition& gp) {
            // One record per partition, so it must always name the first uncommitted offset: a
            // successor starts at the committed offset and must meet the record before any
            // message after it (or it would process a message already dead-lettered, or record
            // an earlier one over it). Everything before `offset` was handled in order by this
            // owner (processed, skipped or dead-lettered: the DlqRouter contract), so commit up
            // to it in this same fenced step. Never backwards. Epoch before offset, as in
            // commit_in_pool. A record exists only if it was written before a new owner's fence,
            // and the new owner, which reads records after fencing, honours it.
            gp.commit_epoch.store(token, std::memory_order_relaxed);  // under the lock; token >= fence (checked)
            if (gp.committed.load(std::memory_order_relaxed) < offset) {
                // seq_cst: as in commit_in_pool (a blocked producer's Dekker pairing).
                gp.committed.store(offset, std::memory_order_seq_cst);
                gp.commits.fetch_add(1, std::memory_order_release);  // as in commit_in_pool
                moved = true;
            }
            gp.dead_letter_epoch.store(token, std::memory_order_relaxed);       // before the offset (see the layout)
            gp.dead_letter_offset.store(offset + 1, std::memory_order_release);  // pairs with dead_letter_recorded
        }));
    if (moved) wake_space(t);  // after the lock, as in commit_in_pool
    return {};
}

Status refund_attempts(TopicHandle& t, const GroupRef& ref, std::string_view group, uint32_t partition,
                       std::span<const uint64_t> offsets, uint64_t token, uint64_t lock_wait_ns) {
    // A new owner reads and counts the window only after fencing, so a refund that runs can only
    // take back a count of ours; the offset check keeps it off an entry reused for a later offset.
    return fenced_partition_step(t, ref, group, partition, token, "attempt refund", "", "whose counts stay",
                                 "group attempt-refund lock", lock_wait_ns, [&](GroupPartition& gp) {
                                     for (uint64_t offset : offsets)
                                         take_back_attempt(gp.attempt_window[offset % kAttemptWindow], offset);
                                 });
}

bool dead_letter_recorded(const TopicHandle& t, const GroupRef& ref, uint32_t partition, uint64_t offset) {
    if (partition >= t.num_partitions) return false;
    // Acquire: pairs with record_dead_letter's release store (and its lock release).
    return t.groups[ref.index].parts[partition].dead_letter_offset.load(std::memory_order_acquire) == offset + 1;
}

namespace {
/// Whether group `g` (LIVE) holds the partition's floor at `now_ns`: its lease runs. Acting, a
/// lease found run out is first set to 0 (deregister_group's first step) so that no renewal
/// can revive a group the caller then passes over: a renewer whose clock read came before the
/// expiry and whose CAS lands after it finds 0 and says expired. A renewal that lands first
/// keeps the group counted.
bool lease_runs(GroupSlot& g, uint64_t now_ns, bool acting) {
    uint64_t e = g.lease_expires_ns.load(std::memory_order_acquire);  // pairs with renew/deregister CASes
    while (e != 0 && e <= now_ns) {
        if (!acting) return false;
        FABRIC_PAUSE_POINT("group.lease.expire_acting");
        // A failed CAS reloads e: a renewal into the future keeps the group; one that landed
        // and still left it expired (a renewer with an even older clock read) is CASed again,
        // or a second late renewal could revive the group we pass over.
        if (g.lease_expires_ns.compare_exchange_weak(e, 0, std::memory_order_acq_rel, std::memory_order_acquire))
            return false;
    }
    return e > now_ns;
}
}  // namespace

uint64_t min_committed(const TopicHandle& t, uint32_t p, uint64_t now_ns, Slowest* slowest, bool acting) {
    const PartitionView& pv = t.parts[p];
    uint64_t best = 0;
    bool any = false;
    int best_idx = -1;
    for (uint32_t i = 0; i < kMaxGroups; ++i) {
        GroupSlot& g = t.groups[i];
        // seq_cst: see commit_in_pool.
        if (group_state(g.word.load(std::memory_order_seq_cst)) != kGroupLive || !lease_runs(g, now_ns, acting)) continue;
        const uint64_t c = g.parts[p].committed.load(std::memory_order_seq_cst);
        if (!any || int64_t(c - best) < 0) {
            best = c;
            best_idx = int(i);
        }
        any = true;
    }
    if (!any) best = pv.hdr->head.load(std::memory_order_seq_cst);
    if (slowest) {
        slowest->any_group = any;
        slowest->group = any ? group_name(t.groups[best_idx]) : std::string();
        slowest->committed = best;
    }
    return best;
}

void wake_space(const TopicHandle& t) {
    // seq_cst: pairs with the blocked producer's seq_cst increment (Dekker with committed).
    if (t.hdr->space_waiters.load(std::memory_order_seq_cst) != 0) wake_parked_producers(*t.hdr);
}

bool wake_space_if_room(const TopicHandle& t, uint32_t p, uint64_t committed, uint64_t now_ns) {
    // seq_cst: pairs with the blocked producer's seq_cst increment (Dekker with committed).
    // Checked first: the tail below is a line every send writes.
    if (t.hdr->space_waiters.load(std::memory_order_seq_cst) == 0) return false;
    // Relaxed: the increment we saw published its park's stamp (wait_for_space). A count no
    // producer parked under for kParkedStaleNs is a killed producer's: its scan, its tail read
    // and its system call would wake nobody, on every commit that leaves room, for good.
    const uint64_t parked = t.hdr->space_parked_ns.load(std::memory_order_relaxed);
    if (now_ns > parked && now_ns - parked > kParkedStaleNs) return false;
    const PartitionView& pv = t.parts[p];
    // Relaxed: a stale (lower) tail only makes the lag look smaller, so it can add a wake,
    // never lose one.
    const uint64_t tail = pv.hdr->tail.load(std::memory_order_relaxed);
    const uint64_t limit = pv.capacity - space_wake_room(pv.capacity);
    auto lag_from = [tail](uint64_t floor) { return int64_t(tail - floor) > 0 ? tail - floor : 0; };
    if (lag_from(committed) > limit) return false;  // not even our group leaves the room
    // Producers go on by the slowest group's offset: a faster group's commit frees nothing for
    // them, and waking them would only make them re-check and park again. seq_cst loads after
    // our seq_cst store: of two groups committing at once, at least one sees both offsets.
    if (lag_from(min_committed(t, p, now_ns, nullptr, /*acting=*/false)) > limit) return false;
    wake_parked_producers(*t.hdr);
    return true;
}

bool owner_certainly_dead(const Pool& pool, OwnerToken owner, uint64_t now_ns) {
    if (owner == 0) return true;
    // By pid only, never by heartbeat: what this decides is handed on (a ring claim's bytes,
    // which its claimant copies into with plain stores; a waiter entry whose bit it set with
    // fetch_or; a CREATING group slot). Group members are also judged by their session timeout.
    return pool.registry().process_liveness(owner, MonoClock::from_ns(now_ns)) == Liveness::certainly_dead;
}

bool skip_claim(const Pool& pool, const PartitionView& p, SlotHeader* s, uint64_t word, bool quarantine) {
    const uint64_t st = slot_state(word);
    if (st != kSlotClaimed && st != kSlotQuarantined) return false;
    const uint64_t next = make_slot_word(quarantine ? kSlotQuarantined : kSlotSkipped, slot_lap(word), slot_owner(word));
    // A repairer paused here acts on a judgement that may be stale: the CAS from the exact word
    // fails if the claimer published (or anyone else repaired) meanwhile.
    if (quarantine) FABRIC_PAUSE_POINT("mq.slot.before_quarantine");
    else FABRIC_PAUSE_POINT("mq.slot.before_skip");
    // Release: pairs with readers' acquire of the state word (nothing else to publish; the
    // claimer's bytes are never read behind a skip record).
    if (!s->state.compare_exchange_strong(word, next, std::memory_order_acq_rel, std::memory_order_relaxed))
        return false;
    if (st == kSlotClaimed) {
        p.hdr->skipped_claims.fetch_add(1, std::memory_order_relaxed);
        if (quarantine) p.hdr->quarantined.fetch_add(1, std::memory_order_relaxed);
        detail::count(pool, CounterId::mq_claims_skipped, 1);
    }
    return true;
}

}  // namespace mq

// ---- TopicManager ---------------------------------------------------------------------

using namespace mq;

Status TopicManager::create(std::string_view name, const TopicConfig& config) {
    return create_topic(pool_, name, config, kMaxStride);
}

Status mq::create_topic(Pool& pool, std::string_view name, const TopicConfig& config, uint64_t max_stride) {
    FABRIC_TRY(validate_name("topic", name));
    FABRIC_TRY(validate_topic_config(config, max_stride));
    const uint64_t part_bytes = partition_region_bytes(config.partition_capacity, config.partition_stride);
    const uint64_t total = kTopicRegionBytes + uint64_t(config.num_partitions) * part_bytes;
    if (total > pool.size())
        return make_error(Errc::invalid_argument,
                          "topic '" + std::string(name) + "' needs " + format_bytes(total) + " (" +
                              std::to_string(config.num_partitions) + " partitions x " + format_bytes(part_bytes) +
                              " + " + format_bytes(kTopicRegionBytes) + " root) but pool '" + pool.name() + "' is " +
                              format_bytes(pool.size()) + " (lower partition_capacity or partition_stride)");
    if (auto existing = pool.open_region(RegionKind::topic, name); existing || existing.code() == Errc::not_ready)
        return make_error(Errc::already_exists, "topic '" + std::string(name) + "' already exists in pool '" +
                                                    pool.name() + "'" + (existing ? "" : " (being created)"));
    const uint64_t incarnation = new_incarnation();
    RegionSpec rs;
    rs.kind = RegionKind::topic;
    rs.name = std::string(name);
    rs.length = kTopicRegionBytes;
    rs.ttl = config.ttl;
    rs.params[0] = config.num_partitions;
    rs.params[1] = config.partition_capacity;
    rs.params[2] = config.partition_stride;
    rs.publish = false;  // partitions first; openers never see a half-made topic
    rs.init = [&](std::byte* data, uint64_t length) -> Status {
        if (length < kTopicRegionBytes) return make_error(Errc::corrupt, "topic root region too short");
        auto* h = reinterpret_cast<TopicHeader*>(data);
        h->magic = kTopicMagic;
        h->version = kTopicLayoutVersion;
        h->header_size = sizeof(TopicHeader);
        h->incarnation = incarnation;
        h->num_partitions = config.num_partitions;
        h->on_full = uint32_t(config.on_full);
        h->capacity = config.partition_capacity;
        h->stride = config.partition_stride;
        h->created_wall_ns = wall_now_ns();
        h->layout_fingerprint = kTopicLayoutFingerprint;
        return {};
    };
    auto root = pool.create_region(rs);
    if (!root) {
        if (root.code() == Errc::already_exists)
            return make_error(Errc::already_exists, "topic '" + std::string(name) + "' already exists in pool '" +
                                                        pool.name() + "'");
        return std::move(root).error();
    }
    auto* hdr = reinterpret_cast<TopicHeader*>(root->data());
    std::vector<RegionRef> made;
    for (uint32_t i = 0; i < config.num_partitions; ++i) {
        RegionSpec ps;
        ps.kind = RegionKind::partition;
        ps.name = partition_region_name(name, i);
        ps.length = part_bytes;
        ps.ttl = config.ttl;
        ps.parent = root->ref();
        ps.params[0] = i;
        ps.params[1] = config.partition_capacity;
        ps.params[2] = config.partition_stride;
        ps.init = [&, i](std::byte* data, uint64_t length) -> Status {
            if (length < part_bytes) return make_error(Errc::corrupt, "partition region too short");
            auto* ph = reinterpret_cast<PartitionHeader*>(data);
            ph->magic = kPartitionMagic;
            ph->version = kTopicLayoutVersion;
            ph->index = i;
            ph->capacity = config.partition_capacity;
            ph->capacity_log2 = uint32_t(std::countr_zero(config.partition_capacity));
            ph->on_full = uint32_t(config.on_full);
            ph->stride = config.partition_stride;
            ph->slots_offset = kSlotsOffset;
            ph->base_offset = 0;
            ph->incarnation = incarnation;
            ph->tail.store(0, std::memory_order_relaxed);  // published by the region publish
            ph->head.store(0, std::memory_order_relaxed);
            return {};
        };
        auto pr = pool.create_region(ps);
        if (!pr) {
            for (RegionRef r : made) (void)pool.remove_region(r);
            (void)pool.remove_region(root->ref());
            Error e = std::move(pr).error();
            e.message = "creating partition " + std::to_string(i) + " of topic '" + std::string(name) + "': " + e.message;
            return e;
        }
        hdr->partition_refs[i] = pr->ref().packed();  // published by root.publish() below
        made.push_back(pr->ref());
    }
    // Every partition exists, the root is not published: openers of the name wait here
    // (open_topic), creators racing us get already_exists and wait too (ensure).
    FABRIC_PAUSE_POINT("topic.create.before_publish");
    return root->publish();
}

Status TopicManager::ensure(std::string_view name, const TopicConfig& config, Duration wait) {
    return ensure_topic(pool_, name, config, wait, kMaxStride);
}

Status mq::ensure_topic(Pool& pool, std::string_view name, const TopicConfig& config, Duration wait,
                        uint64_t max_stride) {
    const uint64_t wait_ns = to_ns(wait);
    const uint64_t deadline = mono_now_ns() + wait_ns;
    for (;;) {
        Status st = create_topic(pool, name, config, max_stride);
        if (st || st.code() != Errc::already_exists) return st;
        // Exists, or is being created by a process that may still finish: wait for it. A
        // creator that dies meanwhile leaves its entries to the next create (not_found here).
        const uint64_t now = mono_now_ns();
        auto t = open_topic(pool, name, deadline > now ? deadline - now : 0);
        if (t) return {};
        if (t.code() != Errc::not_found) return std::move(t).error();
        if (mono_now_ns() >= deadline)
            return make_error(Errc::not_ready, "topic '" + std::string(name) + "' in pool '" + pool.name() +
                                                   "' could not be created or opened within " +
                                                   format_duration_ns(wait_ns) + ": " + t.error().message);
        nap(kNsPerMs);
    }
}

Status TopicManager::remove(std::string_view name) {
    auto t = open_topic(pool_, name);
    if (!t) return std::move(t).error();
    std::vector<RegionRef> refs;
    for (auto& r : (*t)->part_regions) refs.push_back(r.ref());
    const RegionRef root = (*t)->root.ref();
    t.value().reset();  // drop our handles so the memory can be reclaimed at once
    FABRIC_TRY(pool_.remove_region(root));  // first: new opens fail from here on
    for (RegionRef r : refs) (void)pool_.remove_region(r);
    return {};
}

std::vector<std::string> TopicManager::list() const {
    std::vector<std::string> names;
    const uint64_t now = mono_now_ns();
    for (const RegionInfo& r : pool_.regions())
        if (r.kind == uint32_t(RegionKind::topic) && r.state == "live" && !r.lease.expired(MonoClock::from_ns(now)))
            names.push_back(r.name);
    std::sort(names.begin(), names.end());
    return names;
}

Result<TopicDescription> TopicManager::describe(std::string_view name, TopicDetail detail) const {
    auto tr = open_topic(pool_, name);
    if (!tr) return std::move(tr).error();
    TopicHandle& t = **tr;
    TopicDescription d;
    d.name = t.name;
    d.incarnation = t.incarnation;
    d.config.num_partitions = t.num_partitions;
    d.config.partition_capacity = uint32_t(t.capacity);
    d.config.partition_stride = uint32_t(t.stride);
    d.config.on_full = OnFull(t.on_full);
    d.created_wall_ns = t.hdr->created_wall_ns;
    d.lease_id = t.root.lease_id();
    d.lease_ids.push_back(d.lease_id);
    for (auto& r : t.part_regions) d.lease_ids.push_back(r.lease_id());
    const uint64_t now = mono_now_ns();
    for (uint32_t p = 0; p < t.num_partitions; ++p) {
        const PartitionView& pv = t.parts[p];
        PartitionDescription pd;
        pd.partition = p;
        pd.next = pv.hdr->tail.load(std::memory_order_acquire);  // pairs with the tail CAS
        pd.head = pv.hdr->head.load(std::memory_order_acquire);  // pairs with raise_head
        pd.oldest = oldest_offset(t, pv);
        pd.capacity = pv.capacity;
        if (t.on_full == kOnFullOverwrite) {
            pd.fill = pd.next - pd.oldest;
        } else {
            const uint64_t low = min_committed(t, p, now, nullptr, /*acting=*/false);
            pd.fill = int64_t(pd.next - low) > 0 ? pd.next - low : 0;
        }
        pd.skipped_claims = pv.hdr->skipped_claims.load(std::memory_order_relaxed);
        pd.quarantined = pv.hdr->quarantined.load(std::memory_order_relaxed);
        for (uint64_t i = 0; detail == TopicDetail::full && i < pv.capacity; ++i) {
            const uint64_t w = pv.slot(i)->state.load(std::memory_order_relaxed);  // diagnostic snapshot
            if (slot_state(w) == kSlotClaimed) ++pd.claims_in_progress;
        }
        d.partitions.push_back(pd);
    }
    for (uint32_t i = 0; i < kMaxGroups; ++i) {
        const GroupSlot& g = t.groups[i];
        if (group_state(g.word.load(std::memory_order_acquire)) != kGroupLive) continue;  // pairs with LIVE store
        GroupDescription gd;
        gd.name = group_name(g);
        gd.lease_expires_ns = g.lease_expires_ns.load(std::memory_order_acquire);
        gd.lease_ttl_ns = g.lease_ttl_ns.load(std::memory_order_relaxed);
        gd.registered_ns = g.registered_ns.load(std::memory_order_relaxed);
        gd.expired = gd.lease_expires_ns <= now;
        for (uint32_t p = 0; p < t.num_partitions; ++p) {
            GroupPartitionDescription gp;
            gp.partition = p;
            gp.committed = g.parts[p].committed.load(std::memory_order_acquire);
            gp.epoch = g.parts[p].commit_epoch.load(std::memory_order_relaxed);
            const uint64_t next = d.partitions[p].next;
            gp.lag = int64_t(next - gp.committed) > 0 ? next - gp.committed : 0;
            gd.partitions.push_back(gp);
        }
        d.groups.push_back(std::move(gd));
    }
    return d;
}

Status TopicManager::register_group(std::string_view topic, std::string_view group, const GroupOptions& options) {
    auto t = open_topic(pool_, topic);
    if (!t) return std::move(t).error();
    FABRIC_TRY(check_topic(**t));
    auto r = mq::register_group(**t, group, options);
    if (!r) return std::move(r).error();
    return {};
}

Status TopicManager::remove_group(std::string_view topic, std::string_view group) {
    FABRIC_TRY(validate_name("group", group));
    auto t = open_topic(pool_, topic);
    if (!t) return std::move(t).error();
    uint64_t registration = 0;
    const int idx = find_group(**t, group, &registration);
    FABRIC_PAUSE_POINT("group.remove.found");
    if (idx < 0 || !deregister_group(**t, idx, registration, true, mono_now_ns()))
        return make_error(Errc::not_found, "group '" + std::string(group) + "' is not registered on topic '" +
                                               std::string(topic) + "'");
    return {};
}

// ---- reaper and --check hooks -----------------------------------------------------------

namespace {

PartitionHeader* partition_at(const Pool& pool, const RegionInfo& info, PartitionView* v, std::string* why) {
    if (!detail::region_extent_ok(pool, info.offset, info.length) || info.length < kSlotsOffset) {
        *why = "region extent [" + std::to_string(info.offset) + ", +" + std::to_string(info.length) +
               ") out of bounds, too short or not on a page";
        return nullptr;
    }
    auto* ph = reinterpret_cast<PartitionHeader*>(detail::pool_base(pool) + info.offset);
    const uint64_t cap = ph->capacity, stride = ph->stride;
    if (ph->magic != kPartitionMagic) {
        *why = "bad partition magic";
        return nullptr;
    }
    if (cap < 2 || cap > kMaxCapacity || !std::has_single_bit(cap) || stride < kMinStride || stride > kMaxSlotStride ||
        stride % 64 != 0 || ph->slots_offset != kSlotsOffset || partition_region_bytes(cap, stride) > info.length) {
        *why = "partition geometry (capacity " + std::to_string(cap) + ", stride " + std::to_string(stride) +
               ") does not fit its region of " + std::to_string(info.length) + " bytes";
        return nullptr;
    }
    v->hdr = ph;
    v->slots = detail::pool_base(pool) + info.offset + kSlotsOffset;
    v->capacity = cap;
    v->mask = cap - 1;
    v->stride = stride;
    v->log2 = uint32_t(std::countr_zero(cap));
    v->base = ph->base_offset;
    v->index = ph->index;
    return ph;
}

uint64_t reap_partition(const Pool& pool, const RegionInfo& info, uint64_t now_ns, bool dry_run,
                        std::vector<std::string>& notes) {
    PartitionView v;
    std::string why;
    if (!partition_at(pool, info, &v, &why)) return 0;
    uint64_t n = 0;
    for (uint64_t i = 0; i < v.capacity; ++i) {
        SlotHeader* s = v.slot(i);
        const uint64_t w = s->state.load(std::memory_order_acquire);  // pairs with claim/publish CAS
        const uint64_t st = slot_state(w);
        if ((st != kSlotClaimed && st != kSlotQuarantined) || !owner_certainly_dead(pool, slot_owner(w), now_ns))
            continue;
        notes.push_back("partition '" + info.name + "' slot " + std::to_string(i) + ": " +
                        (st == kSlotClaimed ? "claim" : "quarantined claim") + " of dead owner " +
                        std::to_string(slot_owner(w)) + " -> skip record");
        if (dry_run) {
            ++n;
            continue;
        }
        // A dead owner writes nothing more: release a quarantine as a plain skip.
        FABRIC_PAUSE_POINT("mq.reap.before_skip");
        uint64_t expect = w;
        const uint64_t next = make_slot_word(kSlotSkipped, slot_lap(w), slot_owner(w));
        if (s->state.compare_exchange_strong(expect, next, std::memory_order_acq_rel, std::memory_order_relaxed)) {
            ++n;
            if (st == kSlotClaimed) {
                v.hdr->skipped_claims.fetch_add(1, std::memory_order_relaxed);
                detail::count(pool, CounterId::mq_claims_skipped, 1);
            }
        }
    }
    return n;
}

void check_partition(const Pool& pool, const RegionInfo& info, std::vector<std::string>& violations,
                     std::vector<std::string>& in_progress) {
    PartitionView v;
    std::string why;
    const std::string who = "partition '" + info.name + "'";
    if (!partition_at(pool, info, &v, &why)) {
        violations.push_back(who + ": " + why);
        return;
    }
    const uint64_t tail = v.hdr->tail.load(std::memory_order_acquire);  // pairs with the tail CAS
    const uint64_t head = v.hdr->head.load(std::memory_order_acquire);  // pairs with raise_head
    if (int64_t(tail - v.base) < 0)
        violations.push_back(who + ": tail " + std::to_string(tail) + " below base offset " +
                             std::to_string(v.base));
    if (v.hdr->on_full != kOnFullOverwrite) {
        const int64_t fill = int64_t(tail - head);
        if (fill < 0 || uint64_t(fill) > v.capacity)
            violations.push_back(who + ": fill " + std::to_string(fill) + " (tail " +
                                 std::to_string(tail) + " - head " + std::to_string(head) + ") outside 0.." +
                                 std::to_string(v.capacity));
    }
    for (uint64_t i = 0; i < v.capacity; ++i) {
        const uint64_t w = v.slot(i)->state.load(std::memory_order_acquire);  // pairs with claim/publish CAS
        const uint64_t st = slot_state(w);
        if (st > kSlotQuarantined) {
            violations.push_back(who + " slot " + std::to_string(i) + ": state " + std::to_string(st));
            continue;
        }
        if (st == kSlotClaimed)
            in_progress.push_back("in progress: " + who + " slot " + std::to_string(i) + " claimed by owner " +
                                  std::to_string(slot_owner(w)));
        // Latest offset below the tail that maps to this slot.
        if (tail == v.base || int64_t(tail - 1 - v.base) < 0) {
            if (st != kSlotEmpty && !(st == kSlotClaimed && (tail & v.mask) == i))
                violations.push_back(who + " slot " + std::to_string(i) +
                                     " is written but no offset was ever claimed");
            continue;
        }
        const uint64_t o = tail - 1 - ((tail - 1 - i) & v.mask);
        if (int64_t(o - v.base) < 0) {
            if (st != kSlotEmpty && !((tail & v.mask) == i))
                violations.push_back(who + " slot " + std::to_string(i) + " written before base");
            continue;
        }
        const int64_t d = lap_diff(slot_lap(w), v.lap(o));
        // d == 1 is a claim at the tail not yet advanced, or a racing producer; more is impossible.
        if (st == kSlotEmpty || d < 0 || d > 1)
            violations.push_back(who + " slot " + std::to_string(i) + ": tag lap " +
                                 std::to_string(slot_lap(w)) + " (state " + std::to_string(st) +
                                 ") impossible for offset " + std::to_string(o) + " (lap " +
                                 std::to_string(v.lap(o) & kLapMask) + ")");
    }
}

/// Waiter entries whose owner is certainly dead (killed while parked): clear their bits on every
/// partition, free them. Until then each send to such a partition costs its producer a futex
/// wake that wakes nobody (producers also repair it themselves, at most every 10 ms each).
uint64_t reap_waiters(const Pool& pool, const RegionInfo& info, TopicHeader* hdr, uint64_t now_ns, bool dry_run,
                      std::vector<std::string>& notes) {
    auto* table = reinterpret_cast<WaiterSlot*>(detail::pool_base(pool) + info.offset + kWaitersOffset);
    std::vector<uint32_t> dead;
    for (uint32_t i = 0; i < kMaxWaiters; ++i) {
        const uint64_t w = table[i].word.load(std::memory_order_acquire);  // pairs with claim/release CASes
        const uint64_t st = waiter_state(w);
        if ((st == kWaiterLive || st == kWaiterReleasing) && owner_certainly_dead(pool, waiter_owner(w), now_ns))
            dead.push_back(i);
    }
    if (dead.empty()) return 0;
    for (uint32_t i : dead)
        notes.push_back("topic '" + info.name + "': waiter entry " + std::to_string(i) + " of dead owner " +
                        std::to_string(waiter_owner(table[i].word.load(std::memory_order_relaxed))) +
                        " -> bits cleared, free");
    if (dry_run || pool.self() == 0) return dead.size();
    // The partitions, through handles (validated like open_topic does, and attached so that
    // none is reclaimed under us); one that cannot be opened has no bits worth clearing.
    const uint32_t np = std::min<uint32_t>(hdr->num_partitions, kMaxPartitions);
    std::vector<Region> handles;
    std::vector<PartitionHeader*> parts;
    for (uint32_t i = 0; i < np; ++i) {
        auto r = pool.open_region(RegionRef::unpack(hdr->partition_refs[i]));
        if (!r || r->length() < kSlotsOffset || !not_a_partition_of(pool, *r, info.ref).empty()) continue;
        auto* ph = reinterpret_cast<PartitionHeader*>(r->data());
        // This topic's partition i, as open_topic checks it (its child, magic, index,
        // incarnation): a damaged ref naming another region must not have bits of its words
        // cleared.
        if (ph->magic != kPartitionMagic || ph->index != i || ph->incarnation != hdr->incarnation) continue;
        parts.push_back(ph);
        handles.push_back(std::move(r.value()));
    }
    uint64_t n = 0;
    for (uint32_t i : dead) n += repair_waiter(pool, table, i, parts, pool.self(), now_ns) ? 1 : 0;
    return n;
}

uint64_t reap_topic(const Pool& pool, const RegionInfo& info, uint64_t now_ns, bool dry_run,
                    std::vector<std::string>& notes) {
    if (!detail::region_extent_ok(pool, info.offset, info.length) || info.length < kTopicRegionBytes) return 0;
    auto* hdr = reinterpret_cast<TopicHeader*>(detail::pool_base(pool) + info.offset);
    if (hdr->magic != kTopicMagic || hdr->layout_fingerprint != kTopicLayoutFingerprint) return 0;
    auto* groups = reinterpret_cast<GroupSlot*>(detail::pool_base(pool) + info.offset + kGroupsOffset);
    uint64_t n = reap_waiters(pool, info, hdr, now_ns, dry_run, notes);
    for (uint32_t i = 0; i < kMaxGroups; ++i) {
        GroupSlot& g = groups[i];
        uint64_t w = g.word.load(std::memory_order_acquire);  // pairs with LIVE/FREE release stores
        if (group_state(w) == kGroupCreating && owner_certainly_dead(pool, OwnerToken(w), now_ns)) {
            notes.push_back("topic '" + info.name + "': group slot " + std::to_string(i) +
                            " half-registered by a dead process -> free");
            ++n;
            if (!dry_run)
                g.word.compare_exchange_strong(w, make_group_word(kGroupFree, group_gen(w) + 1, 0),
                                               std::memory_order_release, std::memory_order_relaxed);
            continue;
        }
        if (group_state(w) != kGroupLive || !group_expired(g, now_ns)) continue;
        // The name before the removal frees the slot for the next registration's name.
        std::string note = "topic '" + info.name + "': group '" + group_name(g) + "' lease expired -> deregistered";
        FABRIC_PAUSE_POINT("group.reap.found_expired");
        // Counted only when it happened: a renewal that lands before the lease's CAS keeps the
        // group, and a registration that took the slot meanwhile is not this one.
        if (!dry_run && !end_registration(*hdr, g, w, false, now_ns)) continue;
        notes.push_back(std::move(note));
        ++n;
    }
    return n;
}

void check_topic_region(const Pool& pool, const RegionInfo& info, std::vector<std::string>& violations,
                        std::vector<std::string>& in_progress) {
    const std::string who = "topic '" + info.name + "'";
    if (!detail::region_extent_ok(pool, info.offset, info.length) || info.length < kTopicRegionBytes) {
        violations.push_back(who + ": root region [" + std::to_string(info.offset) + ", +" +
                             std::to_string(info.length) + ") too short, out of bounds or not on a page");
        return;
    }
    auto* hdr = reinterpret_cast<TopicHeader*>(detail::pool_base(pool) + info.offset);
    if (hdr->magic != kTopicMagic) {
        if (info.state == "live") violations.push_back(who + ": bad magic");
        return;
    }
    if (hdr->num_partitions == 0 || hdr->num_partitions > kMaxPartitions)
        violations.push_back(who + ": num_partitions " + std::to_string(hdr->num_partitions));
    if (hdr->layout_fingerprint != kTopicLayoutFingerprint) {
        violations.push_back(who + ": layout fingerprint " + std::to_string(hdr->layout_fingerprint) +
                             " is not this build's " + std::to_string(kTopicLayoutFingerprint));
        return;
    }
    auto* groups = reinterpret_cast<GroupSlot*>(detail::pool_base(pool) + info.offset + kGroupsOffset);
    for (uint32_t i = 0; i < kMaxGroups; ++i) {
        const uint64_t w = groups[i].word.load(std::memory_order_acquire);  // pairs with LIVE/FREE stores
        if (group_state(w) > kGroupLive)
            violations.push_back(who + " group slot " + std::to_string(i) + ": state " +
                                 std::to_string(group_state(w)));
        else if (group_state(w) == kGroupCreating)
            in_progress.push_back("in progress: " + who + " group slot " + std::to_string(i) + " being registered");
    }
    auto* waiters = reinterpret_cast<WaiterSlot*>(detail::pool_base(pool) + info.offset + kWaitersOffset);
    for (uint32_t i = 0; i < kMaxWaiters; ++i) {
        const uint64_t w = waiters[i].word.load(std::memory_order_acquire);  // pairs with claim/release CASes
        if (waiter_state(w) > kWaiterReleasing)
            violations.push_back(who + " waiter entry " + std::to_string(i) + ": state " +
                                 std::to_string(waiter_state(w)));
        else if (waiter_state(w) == kWaiterReleasing)
            in_progress.push_back("in progress: " + who + " waiter entry " + std::to_string(i) + " being released by " +
                                  std::to_string(waiter_owner(w)));
    }
}

}  // namespace

namespace {
const detail::RegionKindRegistration partition_kind(
    RegionKind::partition, RegionKindOps{always_complete<reap_partition>, check_partition, /*scans=*/true});
const detail::RegionKindRegistration topic_kind(RegionKind::topic,
                                                RegionKindOps{always_complete<reap_topic>, check_topic_region});
}  // namespace

}  // namespace fabric_shm
