// SPDX-License-Identifier: MIT
// Shared-memory layout of a topic: the root region (RegionKind::topic: config, incarnation,
// wake-up words, group table) and one ring per partition (RegionKind::partition). Plain data
// only, offsets not pointers, every atomic lock-free and <= 8 bytes, every field another
// process reads pinned below. See docs/topics.md for the state machines.
//
// Root region (one per topic, name = topic name):
//   0        TopicHeader         4 KiB   config, incarnation, layout fingerprint, partition refs,
//                                        the blocked-producer futex word, the group lock
//   4096     GroupSlot[16]       16 x 6400 B
//   106496   WaiterSlot[64]      64 x 64 B: parked consumers / Waiters, one futex word each
//
// Partition region (name = "<topic>.<n>", child of the root):
//   0        PartitionHeader     1 KiB   immutable geometry, then tail / head / counters / waiter-bits lines
//   1024     slots               capacity x stride bytes; slot i holds offsets o with o % capacity == i
#pragma once

#include "private.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "fabric_shm/topic.h"
#include "layout/pool_layout.h"

namespace fabric_shm::mq {

constexpr uint64_t kTopicMagic = 0x43504f5442414600ULL;      ///< "\0FABTOPC"
constexpr uint64_t kPartitionMagic = 0x5452415042414600ULL;  ///< "\0FABPART"
/// 2: GroupSlot::era, GroupPartition dead-letter record.
/// 3: per-partition waiter bits and the waiter table replaced the topic-wide data futex word;
/// the envelope fields became (relaxed) atomics; TopicHeader carries kTopicLayoutFingerprint.
/// 4: GroupSlot's result-bucket record (results_seq, results_flags, results_bucket).
/// 5: GroupPartition's attempt window (two lines; one counter per in-flight offset).
/// 6: TopicHeader::space_parked_ns (the last blocked producer's park).
constexpr uint32_t kTopicLayoutVersion = 6;

constexpr uint32_t kMaxPartitions = 64;
constexpr uint32_t kMaxGroups = 16;
constexpr uint32_t kMaxMembers = 32;        ///< member rows per consumer group
constexpr uint32_t kMaxWaiters = 64;        ///< waiter table entries per topic: one bit each in PartitionHeader::waiters
constexpr uint64_t kMaxCapacity = 1u << 20;  ///< slots per partition
constexpr uint64_t kMinStride = 64;
constexpr uint64_t kMaxStride = kMaxPartitionStride;  ///< the largest slot a topic's creator may ask for
/// The largest slot any topic has, and what an opener accepts: a dead-letter topic's stride is
/// its source's + kDeadLetterStrideRoom (fabric_shm/topic.h).
constexpr uint64_t kMaxSlotStride = kMaxStride + kDeadLetterStrideRoom;
constexpr uint64_t kLine = 64;

// ---- Slot state word ----------------------------------------------------------------
// word = state(3) << 61 | lap(29) << 32 | owner token(32)
//   lap = (offset >> log2(capacity)) mod 2^29: which trip round the ring the word belongs to.
//   EMPTY       never written (lap 0, token 0): the slot's first lap is claimable
//   CLAIMED     a producer owns offset `lap` of this slot and is writing the envelope
//   PUBLISHED   envelope complete; readers copy, then re-check the word (seqlock)
//   SKIPPED     a skip record: the claimer died (or released its quarantined claim); reusable
//   QUARANTINED a skip record whose claimer timed out but may be alive and still writing the
//               slot bytes: nobody reuses the bytes; the next lap rolls it forward as another
//               skip until the claimer releases it (-> SKIPPED) or is certainly dead.
enum SlotState : uint64_t {
    kSlotEmpty = 0,
    kSlotClaimed = 1,
    kSlotPublished = 2,
    kSlotSkipped = 3,
    kSlotQuarantined = 4,
};
constexpr uint32_t kLapBits = 29;
constexpr uint64_t kLapMask = (1ull << kLapBits) - 1;
constexpr uint64_t make_slot_word(uint64_t state, uint64_t lap, OwnerToken owner) {
    return (state << 61) | ((lap & kLapMask) << 32) | owner;
}
constexpr uint64_t slot_state(uint64_t w) { return w >> 61; }
constexpr uint64_t slot_lap(uint64_t w) { return (w >> 32) & kLapMask; }
constexpr OwnerToken slot_owner(uint64_t w) { return OwnerToken(w); }
/// Signed distance between two laps modulo 2^29 (a reader 2^28 laps behind is not
/// distinguished; the full offset in the envelope catches that ABA).
constexpr int64_t lap_diff(uint64_t a, uint64_t b) {
    int64_t d = int64_t((a - b) & kLapMask);
    return d >= int64_t(1ull << (kLapBits - 1)) ? d - int64_t(1ull << kLapBits) : d;
}

/// Envelope at the start of every slot; key, headers and value bytes follow it.
/// Headers are encoded as repeated [u16 name_len][u16 value_len][name][value].
/// The envelope fields are seqlock data: the claimer stores them (relaxed) after the claim CAS
/// and a release fence, readers load them (relaxed) between two loads of `state` with an
/// acquire fence before the second (docs/topics.md, "Send" / "Poll"). Atomic, so that the
/// overlap of a stale reader with the next lap's writer is defined behaviour (and TSan-clean);
/// relaxed accesses compile to plain moves.
struct SlotHeader {
    std::atomic<uint64_t> state;         ///< slot state word above; producers CAS, consumers/reaper CAS claimed->skip
    std::atomic<uint64_t> offset;        ///< producer (while CLAIMED): the message's 64-bit offset
    std::atomic<uint64_t> timestamp_ns;  ///< producer: wall-clock ns at send
    std::atomic<uint32_t> value_len;     ///< producer: bytes
    std::atomic<uint16_t> key_len;       ///< producer: bytes (0 = no key)
    std::atomic<uint16_t> headers_len;   ///< producer: encoded header bytes
};
static_assert(sizeof(SlotHeader) == 32, "the envelope is part of every slot's stride: max_message_bytes depends on it");
static_assert(offsetof(SlotHeader, state) == 0 && offsetof(SlotHeader, offset) == 8,
              "consumers of any build read the state word and the offset first (seqlock)");
static_assert(offsetof(SlotHeader, value_len) == 24 && offsetof(SlotHeader, headers_len) == 30,
              "lengths are read between the two state loads: producers and consumers must agree");
static_assert(std::atomic<uint16_t>::is_always_lock_free, "envelope atomics must be lock-free in every process");
constexpr uint64_t kEnvelopeBytes = sizeof(SlotHeader);

// ---- Partition header -----------------------------------------------------------------
enum OnFullCode : uint32_t { kOnFullBlock = 0, kOnFullReject = 1, kOnFullOverwrite = 2 };

struct alignas(128) PartitionHeader {  // 128, not kLine: its members are alignas(128) (clang rejects a weaker alignas)
    uint64_t magic;               ///< creator, before publish: kPartitionMagic
    uint32_t version;             ///< creator: kTopicLayoutVersion
    uint32_t index;               ///< creator: partition number in the topic
    uint64_t capacity;            ///< creator: slots (power of two)
    uint32_t capacity_log2;       ///< creator
    uint32_t on_full;             ///< creator: OnFullCode
    uint64_t stride;              ///< creator: bytes per slot (multiple of 64)
    uint64_t slots_offset;        ///< creator: bytes from the region start to slot 0
    uint64_t base_offset;         ///< creator (tests may forge it before the first send): first offset ever
    uint64_t incarnation;         ///< creator: the topic's incarnation id
    uint64_t reserved0[7];
    alignas(128) std::atomic<uint64_t> tail;  ///< producers: next offset to claim (CAS; helpers advance it past a claimed slot)
    uint64_t pad_tail[15];
    alignas(128) std::atomic<uint64_t> head;  ///< producers (block/reject): offsets below are released (max of
                                              ///< the slowest group's commit); only grows; new groups start here
    uint64_t pad_head[15];
    alignas(128) std::atomic<uint64_t> skipped_claims;  ///< consumers/producers/reaper: claims turned into skips (fetch_add)
    std::atomic<uint64_t> quarantined;        ///< same: of which timed out with a maybe-alive owner
    uint64_t reserved1[14];
    /// Waiters: bit e is set while entry e of the topic's waiter table waits on this partition
    /// (the waiter's fetch_or before it parks, fetch_and after; a repairer's fetch_and for a
    /// dead waiter). Producers load it (seq_cst) after every publish and wake only the entries
    /// it names: no bit, no syscall.
    alignas(128) std::atomic<uint64_t> waiters;
    uint64_t pad_waiters[15];
    uint64_t reserved2[16];
};
static_assert(sizeof(PartitionHeader) == 768, "slots start after the header (slots_offset) in every build");
static_assert(offsetof(PartitionHeader, tail) == 128, "tail on its own 128-byte line");
static_assert(offsetof(PartitionHeader, head) - offsetof(PartitionHeader, tail) == 128, "no false sharing");
static_assert(offsetof(PartitionHeader, skipped_claims) == 384, "the skip counters on their own line, away from tail and head");
static_assert(offsetof(PartitionHeader, waiters) == 512,
              "waiter bits on their own 128-byte line: producers read them on every send, so a waiter's "
              "fetch_or must not bounce the tail line producers write, and tail writes must not evict them");
static_assert(kMaxWaiters == 64, "PartitionHeader::waiters has one bit per waiter entry");
constexpr uint64_t kSlotsOffset = 1024;

// ---- Groups ---------------------------------------------------------------------------
// GroupSlot::word = state(8) << 56 | generation(24) << 32 | owner token(32)
//   FREE(g)        unused
//   CREATING(g,o)  o holds the topic's group lock and is filling the slot
//   LIVE(g,o)      registered; o = registrant (informational)
// Deregistration stores FREE(g+1): a handle remembering g sees the group gone.
enum GroupState : uint64_t { kGroupFree = 0, kGroupCreating = 1, kGroupLive = 2 };
constexpr uint64_t make_group_word(uint64_t state, uint32_t gen, OwnerToken owner) {
    return (state << 56) | (uint64_t(gen & 0xffffff) << 32) | owner;
}
constexpr uint64_t group_state(uint64_t w) { return w >> 56; }
constexpr uint32_t group_gen(uint64_t w) { return uint32_t(w >> 32) & 0xffffff; }
constexpr uint32_t kGroupNameWords = 8;  ///< 64 bytes, NUL-padded (kMaxNameLength)

/// Hand-outs counted per in-flight offset: a partition's owner may process up to this many
/// messages past its first message not done at once (WorkerConfig::window), and each one's
/// attempts are counted in the pool, so they survive the member.
constexpr uint32_t kAttemptWindow = 8;
/// How far past the committed offset a later owner looks for the previous owner's counted
/// hand-outs (DlqRouter::uncommitted_window_end), to run them one at a time. An owner commits
/// often enough that its hand-outs stay inside it (WorkerConfig::commit_every + the window).
constexpr uint64_t kAttemptScanOffsets = kAttemptWindow * 4;

/// One entry of GroupPartition::attempt_window: offset << 8 | hand-outs (0..255). One word, so
/// a crash between two stores never attributes a count to the wrong offset. Offset o lives in
/// entry o % kAttemptWindow: the offsets of one window [first not done, + W) never share an
/// entry (an entry is reused only once its offset is done and acknowledged). Offsets are kept modulo 2^56 (a partition never gets that far).
constexpr uint64_t kAttemptCountBits = 8;
constexpr uint64_t kAttemptCountMax = (uint64_t(1) << kAttemptCountBits) - 1;
constexpr uint64_t kAttemptOffsetMask = (uint64_t(1) << (64 - kAttemptCountBits)) - 1;
constexpr uint64_t make_attempt_word(uint64_t offset, uint64_t count) {
    return ((offset & kAttemptOffsetMask) << kAttemptCountBits) | (count & kAttemptCountMax);
}
constexpr uint64_t attempt_word_offset(uint64_t w) { return w >> kAttemptCountBits; }
constexpr uint64_t attempt_word_count(uint64_t w) { return w & kAttemptCountMax; }
constexpr bool attempt_word_is(uint64_t w, uint64_t offset) {
    return attempt_word_offset(w) == (offset & kAttemptOffsetMask);
}

/// Per (group, partition): committed offset, its fence, the owner word, the dead-letter
/// decision record, and (second line) the attempt counters of the in-flight window. Epochs
/// stored here are fence tokens (GroupSlot::era + the member's epoch), comparable across
/// registrations.
struct alignas(kLine) GroupPartition {
    std::atomic<uint64_t> committed;      ///< committer under GroupSlot::lock: next offset to read
    std::atomic<uint64_t> commit_epoch;   ///< committer / fence raiser under the lock, stored BEFORE committed: the fence token
    std::atomic<uint64_t> owner;          ///< (member row gen, row + 1) << 32 | member epoch (relative to the era), CAS only; 0 = unowned
    uint64_t reserved_attempts[2];        ///< layout 5's one-offset counter (attempt_offset, attempts); now attempt_window
    std::atomic<uint64_t> commits;        ///< committer (release, after committed): commits of this registration; 0 at registration
    std::atomic<uint64_t> dead_letter_offset;  ///< dead-letterer under GroupSlot::lock, fence checked: offset + 1 decided for the DLQ; 0 = none
    std::atomic<uint64_t> dead_letter_epoch;   ///< same, stored before dead_letter_offset: the fence token of the decision
    /// The owner (DlqRouter::begin/ack, seq_cst, single writer: a zombie racing the owner can
    /// only skew a count): make_attempt_word entries, offset o at o % kAttemptWindow. A later
    /// owner reads them to find the previous owner's uncommitted window (re-run one at a time).
    std::atomic<uint64_t> attempt_window[kAttemptWindow];
};
static_assert(sizeof(GroupPartition) == 128, "two lines: the owner's commit line and its attempt window");
static_assert(offsetof(GroupPartition, dead_letter_offset) == 48,
              "the dead-letter record is read by every later owner of the partition before it processes");
static_assert(offsetof(GroupPartition, attempt_window) == 64, "the attempt window has its own line");

/// A consumer group's membership row (consumer_group.h): who is a member, with its heartbeat
/// and the epoch it joined with.
struct alignas(kLine) GroupMember {
    std::atomic<uint64_t> word;           ///< state/gen/owner token (group_internal.h), CAS only
    std::atomic<uint64_t> id[4];          ///< member id, 32 bytes NUL-padded
    std::atomic<uint64_t> heartbeat_ns;   ///< the member's last heartbeat, monotonic ns
    std::atomic<uint64_t> epoch;          ///< epoch granted at join
    uint64_t reserved[1];
};
static_assert(sizeof(GroupMember) == 64, "one line per member: heartbeats of different members do not bounce");

struct alignas(kLine) GroupSlot {
    std::atomic<uint64_t> word;                     ///< group state word above; CAS under the topic's group lock
    std::atomic<uint64_t> name[kGroupNameWords];    ///< registrant while CREATING; immutable while LIVE
    std::atomic<uint64_t> lease_expires_ns;         ///< consumers (poll/commit) move it forward; monotonic ns
    std::atomic<uint64_t> lease_ttl_ns;             ///< registrant: extension per renewal
    std::atomic<uint64_t> registered_ns;            ///< registrant: monotonic ns
    std::atomic<uint64_t> lock;                     ///< owner-word lock (owner_lock.h) for commits and membership
    std::atomic<uint64_t> epoch;                    ///< epoch counter (relative to era): fetch_add per join and acquisition
    std::atomic<uint64_t> flags;                    ///< reserved
    /// Registrant while CREATING, immutable while LIVE: the fence-token base of this
    /// registration. Tokens are era + epoch (epoch < 2^32); the era is above every token the
    /// pool issued before (PoolHeader::fence_floor) and at least the wall clock in ns, so a
    /// re-registered group (or a re-created topic or pool) fences above every older result.
    std::atomic<uint64_t> era;
    /// The result bucket this group's workers write (WorkerLoop; docs/groups.md, "Result
    /// buckets"), so that a worker of another group can refuse to write the same one. Written
    /// by a joining worker under `lock` as a seqlock: results_seq odd while the two fields
    /// below change (relaxed stores between a relaxed odd store + release fence and a release
    /// even store); readers retry until they read one even value before and after (acquire
    /// fence before the second load). 0 = no record.
    std::atomic<uint64_t> results_seq;
    std::atomic<uint64_t> results_flags;             ///< kResultsShared | kResultsSet
    std::atomic<uint64_t> results_bucket[kGroupNameWords];  ///< bucket name, NUL-padded
    uint64_t reserved[6];
    GroupMember members[kMaxMembers];               ///< membership rows (consumer groups)
    GroupPartition parts[kMaxPartitions];           ///< committed offsets, owners, attempts
};
static_assert(offsetof(GroupSlot, lease_expires_ns) == 72, "producers read every group's lease to find the slowest live group");
static_assert(offsetof(GroupSlot, era) == 120, "members read the era once at open: it must not move");
static_assert(offsetof(GroupSlot, results_seq) == 128 && offsetof(GroupSlot, results_bucket) == 144,
              "every worker of every group reads the result-bucket records when it starts");
constexpr uint64_t kResultsSet = 1;     ///< results_flags: the record names a bucket
constexpr uint64_t kResultsShared = 2;  ///< results_flags: written with --shared-results
static_assert(offsetof(GroupSlot, members) == 256, "member rows are indexed by every member");
static_assert(offsetof(GroupSlot, parts) == 256 + 64 * kMaxMembers, "producers read the committed offsets of every group");
static_assert(sizeof(GroupSlot) == 256 + 64 * kMaxMembers + sizeof(GroupPartition) * kMaxPartitions,
              "the group table is an array every process indexes");

// ---- Topic header ---------------------------------------------------------------------
struct alignas(4096) TopicHeader {
    uint64_t magic;                      ///< creator, before publish: kTopicMagic
    uint32_t version;                    ///< creator: kTopicLayoutVersion
    uint32_t header_size;                ///< creator: sizeof(TopicHeader)
    uint64_t incarnation;                ///< creator: random, never 0; differs for a re-created topic
    uint32_t num_partitions;             ///< creator
    uint32_t on_full;                    ///< creator: OnFullCode
    uint64_t capacity;                   ///< creator: slots per partition
    uint64_t stride;                     ///< creator: bytes per slot
    uint64_t created_wall_ns;            ///< creator
    uint64_t layout_fingerprint;         ///< creator: kTopicLayoutFingerprint (another build's shapes: version_mismatch)
    uint64_t reserved0[8];
    uint64_t partition_refs[kMaxPartitions];  ///< creator, before publish: packed RegionRef of each partition
    uint64_t reserved_wake[16];  ///< layout 1's topic-wide data futex line (now per partition and per waiter)
    alignas(128) std::atomic<uint32_t> space_seq;     ///< bumped (+wake) when space_waiters != 0: by a commit leaving a quarter free, deregistration, DLQ drops
    std::atomic<uint32_t> space_waiters;              ///< blocked producers: ++ before parking, -- after
    /// Blocked producers: the coarse monotonic instant of the last park, stored before its
    /// ++space_waiters. A commit's wake skips a count no producer parked under for a while: a
    /// producer killed while parked never decrements it (wake_space_if_room).
    std::atomic<uint64_t> space_parked_ns;
    uint32_t pad_space[28];
    alignas(128) std::atomic<uint64_t> groups_lock;   ///< owner-word lock: group register/deregister
    uint64_t reserved1[15];
};
static_assert(offsetof(TopicHeader, partition_refs) == 128, "every opener finds the partitions through these refs");
static_assert(offsetof(TopicHeader, space_seq) == 128 + 8 * kMaxPartitions + 128,
              "space_seq on its own 128-byte line (committers and blocked producers only)");
static_assert(offsetof(TopicHeader, space_parked_ns) == offsetof(TopicHeader, space_seq) + 8,
              "space_parked_ns on space_seq's line: written only where space_waiters is");
static_assert(sizeof(TopicHeader) == 4096, "the group table starts on the second page (kGroupsOffset)");

// ---- Waiter table ---------------------------------------------------------------------
// WaiterSlot::word = state(2) << 62 | generation(30) << 32 | owner token(32)
//   FREE(g)          unused
//   LIVE(g, o)       a thread of o waits (or is about to) on the partitions whose `waiters`
//                    word carries this entry's bit; producers bump wake_seq and FUTEX_WAKE it
//   RELEASING(g, r)  r clears this entry's bit on every partition it may have set, then stores
//                    FREE(g + 1): r is the waiter itself, or a repairer that took the entry over
//                    from a certainly-dead waiter (CAS LIVE(g, dead) -> RELEASING(g, me)), or one
//                    that took it over from a certainly-dead repairer.
// Every transition is a CAS from the exact word, so a waiter that resumes after a repairer took
// its entry sees its own CAS fail and touches no bit.
enum WaiterState : uint64_t { kWaiterFree = 0, kWaiterLive = 1, kWaiterReleasing = 2 };
constexpr uint32_t kWaiterGenBits = 30;
constexpr uint64_t make_waiter_word(uint64_t state, uint32_t gen, OwnerToken owner) {
    return (state << 62) | (uint64_t(gen & ((1u << kWaiterGenBits) - 1)) << 32) | owner;
}
constexpr uint64_t waiter_state(uint64_t w) { return w >> 62; }
constexpr uint32_t waiter_gen(uint64_t w) { return uint32_t(w >> 32) & ((1u << kWaiterGenBits) - 1); }
constexpr OwnerToken waiter_owner(uint64_t w) { return OwnerToken(w); }

struct alignas(kLine) WaiterSlot {
    std::atomic<uint64_t> word;      ///< state word above: CAS by the waiter and by repairers
    std::atomic<uint32_t> wake_seq;  ///< the waiter's futex word: producers fetch_add (release) + FUTEX_WAKE
                                     ///< after publishing to a partition that carries this entry's bit
    uint32_t pad0;
    uint64_t reserved[6];
};
static_assert(sizeof(WaiterSlot) == 64,
              "one line per waiter: a producer waking one waiter never bounces another waiter's line");
static_assert(offsetof(WaiterSlot, wake_seq) == 8, "producers of any build bump and wake this futex word");

constexpr uint64_t kGroupsOffset = sizeof(TopicHeader);
constexpr uint64_t kWaitersOffset = kGroupsOffset + uint64_t(kMaxGroups) * sizeof(GroupSlot);
static_assert(kWaitersOffset % kLine == 0, "waiter slots are line-aligned: a wake never bounces a group line");
constexpr uint64_t kTopicRegionBytes = kWaitersOffset + uint64_t(kMaxWaiters) * sizeof(WaiterSlot);

static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "shm atomics must be lock-free in every process");

/// Changes whenever a topic structure changes size or shape; written into every TopicHeader and
/// checked by open_topic, so two builds with the same kTopicLayoutVersion but different shapes
/// refuse each other's topics (version_mismatch) instead of misreading them.
constexpr uint64_t kTopicLayoutFingerprint = [] {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint64_t v :
         {uint64_t(kTopicLayoutVersion), uint64_t(sizeof(TopicHeader)), uint64_t(sizeof(PartitionHeader)),
          uint64_t(sizeof(SlotHeader)), uint64_t(sizeof(GroupSlot)), uint64_t(sizeof(GroupPartition)),
          uint64_t(sizeof(GroupMember)), uint64_t(sizeof(WaiterSlot)), uint64_t(kMaxPartitions), uint64_t(kMaxGroups),
          uint64_t(kMaxMembers), uint64_t(kMaxWaiters), uint64_t(kSlotsOffset), uint64_t(kGroupsOffset),
          uint64_t(kWaitersOffset), uint64_t(offsetof(TopicHeader, space_seq)),
          uint64_t(offsetof(TopicHeader, groups_lock)), uint64_t(offsetof(PartitionHeader, tail)),
          uint64_t(offsetof(PartitionHeader, head)), uint64_t(offsetof(PartitionHeader, waiters)),
          uint64_t(offsetof(GroupSlot, members)), uint64_t(offsetof(GroupSlot, parts)), uint64_t(kLapBits),
          uint64_t(offsetof(GroupSlot, results_seq)), uint64_t(offsetof(GroupSlot, results_bucket))})
        h = layout::fnv1a_mix(h, v);
    return h;
}();

inline uint64_t partition_region_bytes(uint64_t capacity, uint64_t stride) {
    return kSlotsOffset + capacity * stride;
}

}  // namespace fabric_shm::mq
