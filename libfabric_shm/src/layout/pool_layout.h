// SPDX-License-Identifier: MIT
// The pool segment's fixed structures, as every process sees them. Plain data only: no
// behaviour, no pointers (offsets from the segment start), every atomic lock-free and at
// most 8 bytes, every field another process reads pinned by a static_assert below.
// Any change here changes kLayoutFingerprint (layout/fingerprint.h, which also covers the
// store, metrics, topic and group layouts); incompatible changes bump kLayoutMajor.
//
// Segment map (offsets from the start of /dev/shm/fabric-shm.<pool>):
//   0                      PoolHeader          4 KiB
//   registry_offset        ProcessSlot[256]    256 KiB  (1 KiB each)
//   directory_offset       RegionEntry[1024]   256 KiB  (256 B each)
//   data_offset            region area: page-aligned extents described by RegionEntry
#pragma once

#include "private.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "fabric_shm/owner_token.h"

namespace fabric_shm::layout {

constexpr uint64_t kPoolMagic = 0x4853434952424146ULL;  ///< "FABRICSH" in little-endian bytes
constexpr uint16_t kLayoutMajor = 13;  ///< differs: refuse (VersionMismatch); 2: fence eras (PoolHeader::fence_floor, GroupSlot::era); 3: topic waiter bits and table (mq/topic_layout.h); 4: registry word namespace bit, store slot generations and fenced stripe locks; 5: child process groups per registration (ProcessSlot::child_groups, killed by the retirer), GroupSlot result-bucket record; 6: per-offset attempt window per group partition (GroupPartition::attempt_window); 7: counter shards split into a single-writer half and a shared half (kCounterSharedCells); 8: PoolHeader::registrations_ended and scanned_through (an open's reap scans regions only after a registration ended; a build without them would end registrations unseen); 9: a lease's state word carries its region's generation (make_lease_state: a stale remover cannot revoke a region re-created in the entry); 10: the fields a renewer writes after its checks (ttl, renewed, last_renewer, renew_count) carry the generation too (make_lease_field: a stale renewer writes nothing into a region re-created in the entry); 11: a large object's run is released by the freer that claims its head block's word (FREE -> DRAINED(owner)): a build without the claim would release a run another process is releasing, or ignore a dead releaser's claim; 12: ProcessSlot::retirer, the retirer's start time, so that a RETIRING slot whose retirer's pid was reused is finished (a build without it would judge such a slot by the pid and keep it for good); 13: TopicHeader::space_parked_ns, stamped by every park of a blocked producer (a build that does not stamp it would have its parked producers' wakes skipped as a dead producer's leftover count, each then waiting out its 50 ms park)
constexpr uint16_t kLayoutMinor = 0;  ///< higher minor: compatible additions (none yet in 11; 7.1-7.4 added the metrics and bridge region kinds, counter worker_handler_restarts and StoreHeader::class_spare, all part of 8.0)
constexpr uint64_t kPageSize = 4096;
constexpr uint64_t kCacheLine = 64;

constexpr uint32_t kRegistrySlots = 256;
constexpr uint32_t kDirectoryEntries = 1024;
constexpr uint32_t kCounterCells = 64;
/// A counter's value in a process shard is cells[id] + cells[kCounterSharedCells + id]: the
/// first half has one writer (the process's counting thread: relaxed load + store, no locked
/// instruction on the hot path), the second half takes every other thread's fetch_add.
constexpr uint32_t kCounterSharedCells = kCounterCells / 2;
constexpr uint32_t kAttachWords = kDirectoryEntries / 64;
constexpr uint32_t kRegionNameBytes = 96;
constexpr uint32_t kChildGroupSlots = 32;  ///< process groups one registration may record (child_groups.h)

// ---- Owner tokens --------------------------------------------------------------------
// A registration in the process registry: (slot generation << 8) | slot index. Every
// ownership word elsewhere (locks, loans, pins, slot claims, group members) stores one,
// so a survivor can ask the registry whether the owner is certainly dead. Generation
// starts at 1, so a token is never 0 (0 = "no owner"). The type is fabric_shm::OwnerToken
// (fabric_shm/owner_token.h: the one definition, shared with the API).
constexpr uint32_t kTokenSlotBits = 8;
static_assert((1u << kTokenSlotBits) == kRegistrySlots, "token slot field must cover the registry");
constexpr uint32_t token_slot(OwnerToken t) { return t & ((1u << kTokenSlotBits) - 1); }
constexpr uint32_t token_gen(OwnerToken t) { return t >> kTokenSlotBits; }
constexpr OwnerToken make_token(uint32_t slot, uint32_t gen) { return (gen << kTokenSlotBits) | slot; }
constexpr uint32_t kSlotGenMask = (1u << 24) - 1;

// ---- Lease header (pool and every region) -----------------------------------------
enum LeaseState : uint32_t { kLeaseActive = 1, kLeaseRevoked = 2 };
/// LeaseHeader::state = generation(24) << 8 | LeaseState(8). The generation is the region's
/// directory-entry generation (the pool lease's: its own, 1): a remover revokes by CAS from
/// (ACTIVE, the generation it judged), so a remover that paused while the region was reclaimed
/// and another created in the entry revokes nothing of the new one.
constexpr uint32_t make_lease_state(LeaseState s, uint32_t gen) { return ((gen & kSlotGenMask) << 8) | uint32_t(s); }
static_assert((uint64_t(kSlotGenMask) << 8 | 0xffu) <= UINT32_MAX,
              "a directory entry's whole generation and the state fit the lease's 32-bit state word");
constexpr uint32_t lease_state_of(uint32_t w) { return w & 0xffu; }
constexpr uint32_t lease_state_gen(uint32_t w) { return w >> 8; }
constexpr bool lease_active(uint32_t w) { return lease_state_of(w) == kLeaseActive; }

/// The fields a renewer writes after its checks carry the generation too:
/// generation(24) << 40 | value(40). A renewer paused past its checks may resume after its
/// region was reclaimed and another created in the entry; its CAS from a word of its own
/// generation then fails, so nothing of it lands in the new region's lease.
constexpr uint32_t kLeaseFieldValueBits = 40;
constexpr uint64_t kLeaseFieldValueMask = (1ULL << kLeaseFieldValueBits) - 1;
constexpr uint64_t make_lease_field(uint32_t gen, uint64_t value) {
    return uint64_t(gen & kSlotGenMask) << kLeaseFieldValueBits | (value & kLeaseFieldValueMask);
}
constexpr uint32_t lease_field_gen(uint64_t w) { return uint32_t(w >> kLeaseFieldValueBits); }
constexpr uint64_t lease_field_value(uint64_t w) { return w & kLeaseFieldValueMask; }
static_assert(kLeaseFieldValueBits + 24 == 64 && (uint64_t(kSlotGenMask) << kLeaseFieldValueBits) >> kLeaseFieldValueBits ==
                                                     kSlotGenMask,
              "a directory entry's whole generation and a 40-bit value share one 64-bit word");
/// TTLs and renewal times are kept in milliseconds in those words: 2^40 ms is 34 years. A TTL
/// rounds up (a lease too long is the safe failure), a renewal time down (a renewal scheduled
/// from it comes early, never late).
constexpr uint64_t kLeaseFieldUnitNs = 1'000'000;
constexpr uint64_t lease_ttl_field_value(uint64_t ttl_ns) {
    const uint64_t ms = ttl_ns / kLeaseFieldUnitNs + (ttl_ns % kLeaseFieldUnitNs != 0);
    return ms < kLeaseFieldValueMask ? ms : kLeaseFieldValueMask;
}
/// The longest TTL a lease takes: what its TTL field can record. A longer one (a caller's, or
/// the header's default_ttl_ns, which any writer may rewrite) is cut to it, so that `now + TTL`
/// cannot wrap into a lease that has expired at birth.
constexpr uint64_t kLeaseTtlMaxNs = kLeaseFieldValueMask * kLeaseFieldUnitNs;

struct LeaseHeader {
    std::atomic<uint64_t> lease_id;     ///< immutable after publish; (generation << 32) | (entry index + 1), pool: gen << 32
    std::atomic<uint64_t> created_ns;   ///< monotonic ns; immutable after publish
    std::atomic<uint64_t> expires_ns;   ///< monotonic ns; renewers move it forward by CAS only (never back)
    std::atomic<uint64_t> ttl;          ///< make_lease_field(gen, TTL ms): extension per renewal; creator, then `lease renew --ttl` (CAS within gen)
    std::atomic<uint64_t> renewed;      ///< make_lease_field(gen, ms since created_ns) of the latest renewal; renewer (CAS within gen, forward only)
    std::atomic<uint32_t> state;        ///< make_lease_state(LeaseState, generation); remover CASes ACTIVE -> REVOKED (never back)
    uint32_t reserved0;
    std::atomic<uint64_t> last_renewer; ///< make_lease_field(gen, OwnerToken) of the latest renewer; renewer (CAS within gen)
    std::atomic<uint64_t> renew_count;  ///< make_lease_field(gen, renewals); renewer (CAS within gen)
};
static_assert(sizeof(LeaseHeader) == 64, "a lease is one cache line, embedded in the pool header and every directory entry");
static_assert(sizeof(OwnerToken) * 8 <= kLeaseFieldValueBits, "an owner token fits a lease field's value");
static_assert(offsetof(LeaseHeader, expires_ns) == 16, "every accessor's fail-closed check reads expires_ns: it must not move");

// ---- Process registry ------------------------------------------------------------
// word = creator_ns(1) << 63 | state(7) << 56 | generation(24) << 32 | pid(32)
//   FREE(g)                 unused; every per-occupant field is zero (cleared by the retirer)
//   CLAIMING(g, pid)        pid won the slot and is writing its fields; judged by pid alone
//   LIVE(g, pid)            registered; fields valid (written before the release CAS to LIVE)
//   FENCED(g, pid)          its declared heartbeat timeout ran out while its pid still runs
//                           (stopped, hung): the registration is over (token certainly dead,
//                           what it owned may be taken over by CAS), but the slot and its
//                           fields stay until the pid exits, so its late writes to the slot
//                           (heartbeat, counters, attach bits) land nowhere that matters and
//                           memory it was lent (store loans, pins) is not reused meanwhile
//   RETIRING(g, pid)        pid (the retirer: the owner itself or a reaper) folds the counter
//                           shard and clears the fields before FREE(g+1); judged by pid alone
// creator_ns: the process named by `pid` runs in the pool creator's pid namespace
// (PoolHeader::creator_pidns), so a judge in that namespace may probe the pid even before
// the occupant's own pidns field is written (CLAIMING) or after it was cleared (RETIRING).
enum SlotState : uint64_t { kSlotFree = 0, kSlotClaiming = 1, kSlotLive = 2, kSlotRetiring = 3, kSlotFenced = 4 };
constexpr uint64_t kSlotCreatorNsBit = 1ULL << 63;
constexpr uint64_t make_slot_word(uint64_t state, uint32_t gen, uint32_t pid, bool creator_ns = false) {
    return (creator_ns ? kSlotCreatorNsBit : 0) | (state << 56) | (uint64_t(gen & kSlotGenMask) << 32) | pid;
}
constexpr uint64_t slot_word_state(uint64_t w) { return (w >> 56) & 0x7f; }
constexpr uint32_t slot_word_gen(uint64_t w) { return uint32_t(w >> 32) & kSlotGenMask; }
constexpr uint32_t slot_word_pid(uint64_t w) { return uint32_t(w); }
constexpr bool slot_word_creator_ns(uint64_t w) { return (w & kSlotCreatorNsBit) != 0; }
static_assert(slot_word_state(make_slot_word(kSlotRetiring, kSlotGenMask, ~0u, true)) == kSlotRetiring,
              "the namespace bit never leaks into the state");

struct alignas(kCacheLine) ProcessSlot {
    std::atomic<uint64_t> word;          ///< CAS only: claimant FREE->CLAIMING->LIVE, reaper LIVE->FENCED, owner/reaper ->RETIRING->FREE(gen+1)
    // Per-occupant fields: written by the claimant while CLAIMING (before its release CAS to
    // LIVE), zeroed by the retirer while RETIRING (before its release CAS to FREE), so a
    // CLAIMING slot never shows a previous occupant's values.
    std::atomic<uint64_t> start_time;    ///< claimant: /proc/<pid>/stat field 22 (clock ticks since boot)
    std::atomic<uint64_t> pidns;         ///< claimant: inode of /proc/self/ns/pid
    std::atomic<uint64_t> heartbeat_ns;  ///< claimant, then owner: monotonic ns of its last heartbeat
    std::atomic<uint64_t> timeout_ns;    ///< claimant: heartbeat older than this = dead; 0 = pid only
    std::atomic<uint64_t> registered_ns; ///< claimant: monotonic ns
    std::atomic<uint64_t> comm[2];       ///< claimant: process name, 16 bytes NUL-padded
    /// retirer_word() of whoever holds the slot RETIRING, so that a finisher tells a retirer
    /// whose pid now names another process (dead) from one that runs or is stopped (waited
    /// for). 0 = unknown (judged by the pid alone). Stored 0 before every CAS into RETIRING,
    /// the winner's own value after it, 0 again before the CAS to FREE.
    std::atomic<uint64_t> retirer;
    uint64_t reserved0[7];
    std::atomic<uint64_t> attached[kAttachWords];  ///< owner: bit e = "I hold a handle to region entry e" (seq_cst)
    std::atomic<uint64_t> counters[kCounterCells]; ///< owner: per-process counter shard, relaxed; [id] the counting thread's (load + store), [kCounterSharedCells + id] other threads' (fetch_add)
    /// Process groups this registration started (an --exec command, a long-lived handler), so
    /// that they do not outlive it: entry = child_group_word(leader start time, pgid), 0 = free.
    /// The owner CASes 0 -> entry when the group exists (before its leader may run the user's
    /// command) and entry -> 0 after reaping the leader; the retirer (owner at exit, or whoever
    /// retires a certainly-dead registration) kills each recorded group whose leader still runs
    /// with that start time (never a reused pid), then zeroes the entries; a group evicting a
    /// dead member does the same kill early. One word per entry: nothing can be torn.
    std::atomic<uint64_t> child_groups[kChildGroupSlots];
};
static_assert(sizeof(ProcessSlot) == 1024, "the registry is an array of slots every process indexes by token");
static_assert(offsetof(ProcessSlot, attached) == 128, "reclaimers read every slot's attach bits (Dekker with attach_bit)");
static_assert(offsetof(ProcessSlot, counters) == 256, "reapers fold a dead process's counter shard from here");
static_assert(offsetof(ProcessSlot, child_groups) == 768,
              "child groups are read by every retirer and evicter: survivors of a crash must find them here");

/// A child-group entry: the leader's start time (clock ticks since boot, /proc/<pid>/stat
/// field 22) truncated to 32 bits, and the group id (the leader's pid, never 0). The truncated
/// start time tells a reused pid from the leader unless the reuse starts a multiple of 2^32
/// ticks (497 days at 100 Hz) later, to the tick.
constexpr uint64_t child_group_word(uint64_t leader_start_time, uint32_t pgid) {
    return (uint64_t(uint32_t(leader_start_time)) << 32) | pgid;
}
constexpr uint32_t child_group_pgid(uint64_t w) { return uint32_t(w); }

/// ProcessSlot::retirer: the retirer's pid and its start time truncated to 32 bits (as in
/// child_group_word, a reuse of the pid tells itself apart unless it starts a multiple of 2^32
/// ticks later, to the tick).
constexpr uint64_t retirer_word(uint32_t pid, uint64_t start_time) {
    return (uint64_t(pid) << 32) | uint32_t(start_time);
}
constexpr uint32_t retirer_pid(uint64_t w) { return uint32_t(w >> 32); }
constexpr uint32_t retirer_start(uint64_t w) { return uint32_t(w); }
constexpr uint32_t child_group_start(uint64_t w) { return uint32_t(w >> 32); }

// ---- Region directory ------------------------------------------------------------
// word = (state << 56) | (generation(24) << 32) | owner token(32)
//   FREE(g)            entry unused; fields may be garbage
//   CREATING(g, o)     extent reserved by o (under the meta lock), memory being initialised
//   LIVE(g, o)         published; o = creator (informational)
//   RECLAIMING(g, o)   o is checking attachments before freeing; dead o -> anyone redoes it
// Freeing stores FREE(g+1): every handle made under g then sees StaleGeneration.
enum EntryState : uint64_t { kEntryFree = 0, kEntryCreating = 1, kEntryLive = 2, kEntryReclaiming = 3 };
constexpr uint64_t make_entry_word(uint64_t state, uint32_t gen, OwnerToken owner) {
    return (state << 56) | (uint64_t(gen & kSlotGenMask) << 32) | owner;
}
constexpr uint64_t entry_word_state(uint64_t w) { return w >> 56; }
constexpr uint32_t entry_word_gen(uint64_t w) { return uint32_t(w >> 32) & kSlotGenMask; }
constexpr OwnerToken entry_word_owner(uint64_t w) { return OwnerToken(w); }

struct alignas(kCacheLine) RegionEntry {
    std::atomic<uint64_t> word;        ///< state machine above; CAS only
    std::atomic<uint64_t> offset;      ///< meta-lock holder while FREE; immutable while not FREE
    std::atomic<uint64_t> length;      ///< same
    std::atomic<uint32_t> kind;        ///< same (RegionKind)
    std::atomic<uint32_t> flags;       ///< same
    std::atomic<uint64_t> parent;      ///< same; (gen << 32) | (index + 1) of the parent entry, 0 = root
    std::atomic<uint64_t> created_wall_ns; ///< same
    std::atomic<uint64_t> params[3];   ///< same; kind-specific small immutable parameters
    std::atomic<uint64_t> name[kRegionNameBytes / 8]; ///< same; NUL-padded
    LeaseHeader lease;                 ///< see LeaseHeader
    uint64_t reserved[3];
};
static_assert(sizeof(RegionEntry) == 256, "the directory is an array of entries every process indexes");
static_assert(offsetof(RegionEntry, name) == 72, "openers match region names by reading them in place");
static_assert(offsetof(RegionEntry, lease) == 168, "every region access checks the lease in place");

// ---- Pool header -------------------------------------------------------------------
// Everything up to `lifecycle` is immutable once the segment is published under its final
// name (it is written under a temporary name, then link()ed). `magic` is written last.
enum PoolLifecycle : uint64_t { kPoolLive = 1, kPoolReclaiming = 3, kPoolGone = 4 };
constexpr uint64_t make_lifecycle(uint64_t state, OwnerToken owner) { return (state << 56) | owner; }
constexpr uint64_t lifecycle_state(uint64_t w) { return w >> 56; }
constexpr OwnerToken lifecycle_owner(uint64_t w) { return OwnerToken(w); }

struct alignas(kPageSize) PoolHeader {
    std::atomic<uint64_t> magic;       ///< kPoolMagic, release-stored last by the creator
    uint16_t version_major;
    uint16_t version_minor;
    uint32_t header_size;              ///< sizeof(PoolHeader)
    uint64_t fingerprint;              ///< kLayoutFingerprint (layout/fingerprint.h) of the creator's build
    uint64_t pool_size;                ///< bytes; must equal the file size
    uint64_t registry_offset;
    uint32_t registry_slots;
    uint32_t registry_slot_size;
    uint64_t directory_offset;
    uint32_t directory_entries;
    uint32_t directory_entry_size;
    uint64_t data_offset;              ///< region area, page aligned
    uint64_t data_size;
    uint64_t incarnation;              ///< random per creation: tells a re-created pool from the old one
    uint32_t creator_pid;
    uint32_t mode;                     ///< permission bits requested at creation
    uint64_t creator_start_time;       ///< /proc stat starttime of the creator
    uint64_t creator_pidns;
    uint64_t created_wall_ns;
    uint64_t created_mono_ns;
    uint64_t default_ttl_ns;           ///< TTL for the pool lease and regions created without one
    int32_t numa_node;                 ///< -1: not bound
    uint32_t flags;
    char name[72];                     ///< pool name, NUL-terminated
    uint64_t reserved_immutable[16];

    std::atomic<uint64_t> lifecycle;   ///< PoolLifecycle word; CAS only (reaper, re-initialiser, pool rm)
    std::atomic<uint64_t> meta_lock;   ///< owner-word lock for directory allocation (OwnerLock); 0 = free
    std::atomic<uint64_t> reaped_processes;  ///< reaper, fetch_add
    std::atomic<uint64_t> reclaimed_regions; ///< reaper, fetch_add
    std::atomic<uint64_t> stolen_locks;      ///< lock stealers, fetch_add
    std::atomic<uint64_t> repaired_entries;  ///< reaper, fetch_add
    /// Group registrants and epoch drawers (CAS max, never lowered): at least every fence token
    /// (GroupSlot::era + epoch) issued in this pool. A new registration's era starts above it
    /// (and at least at the wall clock), so its tokens fence out every earlier registration's
    /// results, across `group rm` and a topic re-create. docs/groups.md, "Fence tokens".
    std::atomic<uint64_t> fence_floor;
    std::atomic<uint64_t> killed_child_groups;  ///< retirers and evicters, fetch_add: child process groups of dead registrations killed
    /// Registrations that others ended: a reaper's CAS that retired a dead occupant's slot (or
    /// took over a dead retirer's) or fenced a timed-out one, each followed by one fetch_add
    /// (seq_cst). From that CAS on the occupant's token judges dead and whatever it left inside
    /// regions (loans, pins, slot claims) is the reaper's to release. An owner ending its own
    /// registration at exit does not count: its handles, and so its claims, are gone by then.
    std::atomic<uint64_t> registrations_ended;
    /// The registrations_ended value a reap pass read, after retiring the dead, before running
    /// every region hook that scans a whole region (RegionKindOps::scans) to the end; raised to
    /// it then (CAS, never lowered). An open's reap skips those scans while the two are equal:
    /// no registration ended since a complete pass looked, so nothing dead is left to release.
    std::atomic<uint64_t> scanned_through;
    uint64_t reserved_mutable[6];
    LeaseHeader lease;                 ///< the pool's own lease
    std::atomic<uint64_t> retired_counters[kCounterCells]; ///< counter shards of reaped processes, folded in
};
static_assert(sizeof(PoolHeader) == kPageSize, "the registry starts on the second page (kRegistryOffset)");
static_assert(offsetof(PoolHeader, fingerprint) == 16, "any build reads magic, version and fingerprint before trusting anything else");
static_assert(offsetof(PoolHeader, lifecycle) == 344, "removers, reapers and re-creators CAS the lifecycle word here");
static_assert(offsetof(PoolHeader, fence_floor) == 344 + 6 * 8,
              "fence_floor is read and CAS-raised by every group registrant and epoch drawer");
static_assert(offsetof(PoolHeader, killed_child_groups) == 344 + 7 * 8, "the dump tool of any build reads this counter");
static_assert(offsetof(PoolHeader, registrations_ended) == 344 + 8 * 8 && offsetof(PoolHeader, scanned_through) == 344 + 9 * 8,
              "every reaper and every opener reads these two words to decide whether an open's reap scans regions");

// Every atomic type placed in the segment must be lock-free in every process: libatomic's
// fallback lock for wider types is per-process and silently breaks across processes.
static_assert(std::atomic<uint64_t>::is_always_lock_free, "64-bit words are shared between processes");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "32-bit words are shared between processes");
static_assert(std::atomic<uint16_t>::is_always_lock_free, "16-bit words are shared between processes");
static_assert(std::atomic<uint8_t>::is_always_lock_free, "8-bit words are shared between processes");
static_assert(sizeof(std::atomic<uint64_t>) == 8 && alignof(std::atomic<uint64_t>) == 8,
              "an atomic word has the size and alignment of the plain word the layout reserves");

constexpr uint64_t kRegistryOffset = sizeof(PoolHeader);
constexpr uint64_t kDirectoryOffset = kRegistryOffset + uint64_t(kRegistrySlots) * sizeof(ProcessSlot);
constexpr uint64_t kDataOffset = kDirectoryOffset + uint64_t(kDirectoryEntries) * sizeof(RegionEntry);
static_assert(kDataOffset % kPageSize == 0, "regions are page-aligned (NUMA binding, madvise)");

constexpr uint64_t fnv1a_mix(uint64_t h, uint64_t v) {
    for (int i = 0; i < 8; ++i) {
        h ^= (v >> (8 * i)) & 0xff;
        h *= 0x100000001b3ULL;
    }
    return h;
}
/// The pool structures' part of kLayoutFingerprint (layout/fingerprint.h adds the region
/// layouts: store, metrics). Changes whenever a structure above changes size or shape
/// (LMDB's lock-format idea).
constexpr uint64_t kPoolLayoutFingerprint = [] {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint64_t v : {uint64_t(kLayoutMajor), uint64_t(sizeof(PoolHeader)), uint64_t(sizeof(ProcessSlot)),
                       uint64_t(sizeof(RegionEntry)), uint64_t(sizeof(LeaseHeader)), uint64_t(kRegistrySlots),
                       uint64_t(kDirectoryEntries), uint64_t(kCounterCells), uint64_t(kCacheLine),
                       uint64_t(offsetof(PoolHeader, lifecycle)), uint64_t(offsetof(RegionEntry, lease)),
                       uint64_t(offsetof(ProcessSlot, counters)), uint64_t(sizeof(void*)), kSlotCreatorNsBit,
                       uint64_t(offsetof(ProcessSlot, child_groups)), uint64_t(kChildGroupSlots)})
        h = fnv1a_mix(h, v);
    return h;
}();

constexpr uint64_t make_region_ref(uint32_t index, uint32_t gen) { return (uint64_t(gen) << 32) | (index + 1); }
constexpr uint64_t make_lease_id(uint32_t index_plus_one, uint32_t gen) { return (uint64_t(gen) << 32) | index_plus_one; }

}  // namespace fabric_shm::layout
