// SPDX-License-Identifier: MIT
// Internal to the mq module: an opened topic (root + partition handles with geometry copied
// out of shm once and validated), group-table helpers shared by TopicManager, Producer,
// Consumer and MemOffsetStore.
#pragma once

#include "private.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/offset_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "mq/topic_layout.h"
#include "pool_impl.h"

namespace fabric_shm::mq {

/// A partition's immutable geometry, copied from shm and validated at open; never re-read.
struct PartitionView {
    PartitionHeader* hdr = nullptr;
    std::byte* slots = nullptr;
    uint64_t capacity = 0, mask = 0, stride = 0, base = 0;
    uint32_t log2 = 0, index = 0;
    SlotHeader* slot(uint64_t offset) const {
        return reinterpret_cast<SlotHeader*>(slots + (offset & mask) * stride);
    }
    uint64_t lap(uint64_t offset) const { return offset >> log2; }
};

struct TopicHandle {
    Pool pool_handle;  ///< keeps the mapping alive: the caller's Pool may be moved or dropped
    const Pool* pool = nullptr;  ///< &pool_handle
    std::string name;
    Region root;
    std::vector<Region> part_regions;
    /// check_topic's passing case: root's and each partition's gate, made at open (the
    /// addresses of the words Region::check reads; the words are read fresh at every check).
    detail::LeaseGate root_gate;
    std::vector<detail::LeaseGate> part_gates;
    TopicHeader* hdr = nullptr;
    GroupSlot* groups = nullptr;    ///< kMaxGroups entries
    WaiterSlot* waiters = nullptr;  ///< kMaxWaiters entries
    std::vector<PartitionView> parts;
    std::vector<PartitionHeader*> part_headers;  ///< parts[i].hdr, for the waiter bits
    uint64_t incarnation = 0;
    uint32_t num_partitions = 0;
    OnFullCode on_full = kOnFullBlock;
    uint64_t capacity = 0, stride = 0;
};

/// How long an open waits for a topic another process is creating (its root region
/// CREATING by a maybe-alive creator): a creation takes milliseconds, only a stopped creator
/// takes longer.
constexpr uint64_t kTopicCreationWaitNs = 5'000'000'000ull;
/// How long a registration waits in all for the locks of freed group slots that processes of
/// the slots' previous registrations still hold (stopped inside their critical sections)
/// before it tries the next free slot. A live holder's section is microseconds long; a dead one is
/// taken over within milliseconds (owner_lock_acquire). Bounded well below the 2 s other
/// registrants wait for the topic's group lock, which the registration holds meanwhile.
constexpr uint64_t kReusedSlotLockWaitNs = 250'000'000ull;
/// Past that wait, what each further freed slot's lock gets: enough for owner_lock_acquire to
/// ask the registry once whether a holder is certainly dead (it asks every ~2 ms).
constexpr uint64_t kReusedSlotLockMinWaitNs = 5'000'000ull;

/// How many times a registration that found its name's registration expired, and whose removal
/// a renewal beat, judges the name again before it says busy. Each round either returns the
/// renewed registration or removes it; another round needs the lease to run out again within
/// microseconds, so more than a couple means a lease renewed with a TTL of about nothing.
constexpr uint32_t kRegisterRounds = 8;

/// validate_topic_config with a stride limit: kMaxStride for what users create, kMaxSlotStride
/// for what openers accept and for dead-letter topics (their slots are a source's + room).
Status validate_topic_config(const TopicConfig& config, uint64_t max_stride);
/// TopicManager::create and ensure, with a stride limit (as above).
Status create_topic(Pool& pool, std::string_view name, const TopicConfig& config, uint64_t max_stride);
Status ensure_topic(Pool& pool, std::string_view name, const TopicConfig& config, Duration wait, uint64_t max_stride);
/// Opens and validates a live topic: NotFound, Corrupt naming the field that is wrong, or
/// NotReady when it is still being created after `creation_wait_ns`.
Result<std::unique_ptr<TopicHandle>> open_topic(const Pool& pool, std::string_view name,
                                                uint64_t creation_wait_ns = kTopicCreationWaitNs);
/// Fail closed: lease and generation of the root and (when `partition` >= 0) that partition.
Status check_topic(const TopicHandle& t, int partition = -1);
/// check_topic at `coarse_now` (CLOCK_MONOTONIC_COARSE ns), for a caller that reads that
/// clock for other checks too.
Status check_topic_at(const TopicHandle& t, uint64_t coarse_now, int partition = -1);

/// Earliest offset still readable: block/reject: the head floor; overwrite: max(base, tail - capacity).
uint64_t oldest_offset(const TopicHandle& t, const PartitionView& p);
/// The oldest offset a ring whose tail is `tail` still holds: the last capacity offsets, never
/// below the first offset ever (base). Below it, producers have overwritten.
inline uint64_t oldest_held(const PartitionView& p, uint64_t tail) {
    return tail - p.base > p.capacity ? tail - p.capacity : p.base;
}

// ---- groups -----------------------------------------------------------------------------
std::string group_name(const GroupSlot& g);
bool group_name_is(const GroupSlot& g, std::string_view name);
/// Index of the LIVE group with this name (expired or not), -1 if none; *word gets its state word.
int find_group(const TopicHandle& t, std::string_view name, uint64_t* word = nullptr);
/// Whether slot `g` still holds the registration whose LIVE word is `registration`. Every writer
/// under GroupSlot::lock asks this after taking the lock: a registration that reuses the slot
/// takes the lock before it rewrites anything (register_group), so a writer that passes writes
/// into its own group. Acquire: pairs with deregister's release store.
inline bool holds_registration(const GroupSlot& g, uint64_t registration) {
    return g.word.load(std::memory_order_acquire) == registration;
}
/// Lease run out (0 = being deregistered).
inline bool group_expired(const GroupSlot& g, uint64_t now_ns) {
    return g.lease_expires_ns.load(std::memory_order_acquire) <= now_ns;  // pairs with renew/deregister CAS
}

struct GroupRef {
    int index = -1;
    uint64_t word = 0;  ///< LIVE word at registration: a later mismatch means deregistered
};
/// Registers (or returns the live registration of) `group` under the topic's group lock.
Result<GroupRef> register_group(TopicHandle& t, std::string_view group, const GroupOptions& options);
/// Deregisters the registration whose LIVE word is `registration` in slot `index` if its lease
/// ran out (force: regardless); nothing when the slot holds another. True if this call removed it.
bool deregister_group(TopicHandle& t, int index, uint64_t registration, bool force, uint64_t now_ns);
/// Moves the lease to now + ttl when less than 3/4 of it remains; LeaseExpired / NotFound
/// (naming the group) when it already ran out or the slot changed hands. A renewal whose CAS
/// lands after the lease ran out (`now_ns` read before a pause, or a coarse clock behind) wins
/// only if nobody acted on the expiry meanwhile: whoever does sets the lease to 0 first.
Status renew_group(TopicHandle& t, const GroupRef& ref, std::string_view group, uint64_t now_ns);
/// The longest wait for a group's lock (commits, fences, dead-letter records, refunds, joins)
/// held by another process, maybe paused; past it the step fails with busy and changes nothing.
/// A group member passes less (a quarter of its session timeout): the wait keeps the process's
/// registration alive, but not the member's row in the group.
constexpr uint64_t kGroupLockWaitNs = 2 * kNsPerSec;
/// A member's wait: a quarter of its session timeout, at most kGroupLockWaitNs, at least 1 ms.
constexpr uint64_t group_lock_wait_for_session(uint64_t session_timeout_ns) {
    return std::max<uint64_t>(kNsPerMs, std::min(kGroupLockWaitNs, session_timeout_ns / 4));
}
/// An option's lock wait in ns for owner_lock_acquire, whose 0 means "without bound": a wait of
/// 0 or below tries once (and asks once whether the holder died).
constexpr uint64_t lock_wait_ns(Duration wait) { return std::max<uint64_t>(1, to_ns(wait)); }
/// Commits under the group's owner lock, all or nothing; StaleEpoch names both epochs.
Status commit_in_pool(TopicHandle& t, const GroupRef& ref, std::string_view group,
                      std::span<const OffsetCommit> commits, uint64_t lock_wait_ns = kGroupLockWaitNs);

/// Records, under the group's lock and only if `token` is not below the partition's fence,
/// that `offset` is decided for the dead-letter topic. StaleEpoch when a newer owner fenced
/// the partition (the caller must not send the dead letter).
Status record_dead_letter(TopicHandle& t, const GroupRef& ref, std::string_view group, uint32_t partition,
                          uint64_t offset, uint64_t token, uint64_t lock_wait_ns = kGroupLockWaitNs);
/// True when the partition's dead-letter record names `offset` (an earlier owner decided it).
bool dead_letter_recorded(const TopicHandle& t, const GroupRef& ref, uint32_t partition, uint64_t offset);
/// Takes back one counted hand-out of each of `offsets` in the partition's attempt window
/// (same offset, never below 0), in one step under the group's lock with the check that
/// `token` is not below the partition's fence. StaleEpoch (nothing changed) when a newer owner
/// fenced the partition: its counts are its own, and the caller's hand-outs are then counted
/// as a crashed owner's are.
Status refund_attempts(TopicHandle& t, const GroupRef& ref, std::string_view group, uint32_t partition,
                       std::span<const uint64_t> offsets, uint64_t token, uint64_t lock_wait_ns = kGroupLockWaitNs);

// ---- fence tokens (docs/groups.md, "Fence tokens") ----------------------------------------
/// Bounds that keep fence-token arithmetic from wrapping (docs/groups.md, "Fence tokens").
/// A token noted into the floor is below kMaxNotedFenceToken (2^61): a token read from an
/// object (any PutOptions user can choose one; a cold-tier record can be corrupt) above it is
/// refused, so it can neither make later tokens wrap to small numbers nor use up the room
/// below kMaxFenceEra (2^62 - 2^32) that later eras need. Every era is below kMaxFenceEra, so
/// every token (era + epoch, epoch < 2^32, the owner word's limit) is below 2^62. A wall-clock
/// era (about 1.8e18 ns in 2026) stays below 2^61 until the year 2043 and below 2^62 until 2116.
constexpr uint64_t kMaxNotedFenceToken = uint64_t(1) << 61;
constexpr uint64_t kMaxFenceEra = (uint64_t(1) << 62) - (uint64_t(1) << 32);
/// A new registration's era: above PoolHeader::fence_floor and at least the wall clock in ns;
/// raises the floor to it. capacity_exceeded when the era would reach kMaxFenceEra (a floor
/// that high means a corrupt pool header or a clock a century ahead).
Result<uint64_t> allocate_fence_era(const Pool& pool);
/// Raises PoolHeader::fence_floor to at least `token` (seq_cst), before the token is used: a
/// token of one of this pool's registrations (era + epoch, below 2^62 by construction).
void raise_fence_floor(const Pool& pool, uint64_t token);
/// Raises the floor to a token found outside (on a stored object), so later registrations
/// fence above it. invalid_argument for a token at or above kMaxNotedFenceToken (the floor is
/// left as it was).
Status note_fence_token(const Pool& pool, uint64_t token);

struct Slowest {
    bool any_group = false;
    std::string group;     ///< the slowest live group (empty when none)
    uint64_t committed = 0;
};
/// Minimum committed offset over live (unexpired) groups for partition p; with no group, the
/// partition's head. Loads are seq_cst: they pair with commit's seq_cst store in the
/// blocked-producer handshake (see producer.cpp). `acting`: the caller may release what an
/// expired group has not read (raise the head, send past it); each expired lease it passes
/// over is set to 0 first, so that no late renewal revives the group (lease_runs in topic.cpp).
uint64_t min_committed(const TopicHandle& t, uint32_t p, uint64_t now_ns, Slowest* slowest, bool acting);
/// Takes back one counted hand-out of `offset` from its attempt-window entry (never below 0;
/// nothing when the entry holds another offset: reused for a later one). The offset stays,
/// like ack, so a count of 0 makes the next begin() count 1 again. seq_cst: pairs with
/// DlqRouter::begin/ack's seq_cst CASes and loads of the entry (the owner's, and a later
/// owner's uncommitted_window_end and begin after its fence).
inline void take_back_attempt(std::atomic<uint64_t>& entry, uint64_t offset) {
    uint64_t w = entry.load(std::memory_order_seq_cst);
    while (attempt_word_is(w, offset) && attempt_word_count(w) > 0 &&
           !entry.compare_exchange_weak(w, make_attempt_word(offset, attempt_word_count(w) - 1),
                                        std::memory_order_seq_cst)) {
    }
}
/// Raises partition `h`'s head to `value`, never lowering it: offsets below it may be
/// overwritten. seq_cst: the store half of the registration handshake (settle_group_starts in
/// topic.cpp), so a caller that means to overwrite re-reads the group table after it.
void raise_head(PartitionHeader* h, uint64_t value);

/// Wakes producers blocked on a full partition (when any are parked).
void wake_space(const TopicHandle& t);

/// The room a commit must leave in its partition (as its group sees it) before it wakes
/// blocked producers: a quarter of the ring, at least one slot. A producer that filled the
/// ring then sleeps until it can send a quarter ring's worth, instead of being woken (a
/// system call and a context switch on each side) by every commit to send one message and
/// park again. A producer whose partition stays fuller than that re-checks after its bounded
/// park (producer.cpp, kMaxParkNs).
constexpr uint64_t space_wake_room(uint64_t capacity) { return capacity / 4 > 0 ? capacity / 4 : 1; }
/// A parked producer re-checks at least this often, and parks again (stamping
/// TopicHeader::space_parked_ns) while its partition stays full.
constexpr uint64_t kMaxParkNs = 50 * kNsPerMs;
/// A space_waiters count whose last park is older than this counts no live parked producer: a
/// producer killed while parked left it (it never decrements). A live producer that is merely
/// paused as long re-checks by itself within kMaxParkNs of resuming.
constexpr uint64_t kParkedStaleNs = 4 * kMaxParkNs;

/// A commit's wake: wake_space when, after a group committed `committed` on partition p, the
/// partition has at least space_wake_room free for producers (tail - min_committed at most
/// capacity - room). A faster group's commit frees nothing for them and wakes nobody; the
/// slowest group's does. min_committed is read only when a producer is parked and this
/// group's own lag passes the test. True when it woke.
bool wake_space_if_room(const TopicHandle& t, uint32_t p, uint64_t committed, uint64_t now_ns);

/// Liveness probe used by producers, consumers and the reaper for a claimed slot.
bool owner_certainly_dead(const Pool& pool, OwnerToken owner, uint64_t now_ns);

/// Converts a claimed/quarantined slot word into a skip record by CAS; counts it.
/// `quarantine`: the owner may be alive (timeout), so the slot's bytes stay untouched.
bool skip_claim(const Pool& pool, const PartitionView& p, SlotHeader* s, uint64_t word, bool quarantine);

}  // namespace fabric_shm::mq

namespace fabric_shm::detail {
/// Test hook: called between a send's claim and its envelope write when set.
extern void (*g_mq_after_claim_hook)();
}  // namespace fabric_shm::detail
