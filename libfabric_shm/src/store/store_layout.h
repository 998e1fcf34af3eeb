// SPDX-License-Identifier: MIT
// The object store's shared-memory layout: the store root region (header, hash table,
// superblock descriptors, block state words, pin table) and the payload heap region.
// Plain data only; every word another process reads is a lock-free atomic of <= 8 bytes.
// docs/store.md explains the protocols; this header is the single source of the layout.
//
// Root region (RegionKind::store, name = store name), offsets from the region start:
//   0                StoreHeader                       4 KiB
//   buckets_offset   Bucket[bucket_count]              64 B each (7 slots + overflow count)
//   desc_offset      atomic<u64>[superblocks]          superblock descriptor words
//   used_offset      atomic<u32>[superblocks]          approximate used-block counts (hints)
//   words_offset     atomic<u64>[superblocks * W]      block state words, W = words_per_sb
//   pins_offset      atomic<u64>[pin_slots]            pin records (owner, block)
// Heap region (RegionKind::store_heap, child of the root): superblocks of sb_bytes each.
#pragma once

#include "private.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "layout/pool_layout.h"

namespace fabric_shm::store_layout {

constexpr uint64_t kStoreMagic = 0x3145524F54534246ULL;  ///< "FBSTORE1" little-endian
constexpr uint32_t kStoreLayoutVersion = 4;  ///< 2: pin_high_water replaced pin_cursor; 3: slot generations, fenced stripe locks; 4: an overwrite links without the stripe lock (its slot CAS decides), so a writer may no longer assume one active writer per key under the lock
constexpr uint32_t kObjectMagic = 0x4A424F46;            ///< "FOBJ"

constexpr uint32_t kSlotsPerBucket = 7;
constexpr uint32_t kStripes = 128;          ///< writer lock stripes (by key hash)
constexpr uint64_t kMinBlock = 128;         ///< smallest size class; W = sb_bytes / kMinBlock
constexpr uint64_t kMinSbBytes = 64 << 10;
constexpr uint64_t kMaxSbBytes = 1 << 20;
constexpr uint32_t kMaxClasses = 48;
constexpr uint32_t kMaxProbeBuckets = 128;  ///< an insert that finds no empty slot this far: table full
/// Payloads, keys and trailers start on 8-byte boundaries inside a block.
constexpr uint64_t align8(uint64_t v) { return (v + 7) & ~uint64_t(7); }

// ---- Block state word -----------------------------------------------------------------
// bits 0..31 owner token (LOANED, COMMITTING, REMOVING), bits 32..35 state, bit 36 PINNED
// ("a pin record may reference this block"), bits 37..63 seq (bumped on every state change,
// so a word value never repeats within 2^27 changes: CASes from a stale read fail).
enum BlockState : uint64_t {
    kBlockNone = 0,        ///< never initialised under the current superblock assignment
    kBlockFree = 1,        ///< allocatable
    kBlockLoaned = 2,      ///< owned by `owner`, being filled (loan or put in progress)
    kBlockCommitting = 3,  ///< header written; owner is linking it into the table (readable)
    kBlockPublished = 4,   ///< referenced by a table slot (readable)
    kBlockRemoving = 5,    ///< owner is unlinking it (readable until the slot is cleared)
    kBlockRetired = 6,     ///< unlinked; freed as soon as no pin record references it (readable)
    kBlockDrained = 7,     ///< superblock being returned to the unassigned pool
};
constexpr uint64_t kBlockPinnedBit = 1ULL << 36;
constexpr uint64_t block_owner(uint64_t w) { return w & 0xffffffffULL; }
constexpr uint64_t block_state(uint64_t w) { return (w >> 32) & 0xf; }
constexpr bool block_pinned(uint64_t w) { return (w & kBlockPinnedBit) != 0; }
constexpr uint64_t block_seq(uint64_t w) { return w >> 37; }
constexpr uint64_t make_block(uint64_t state, uint64_t seq, uint64_t owner, bool pinned) {
    return ((seq & ((1ULL << 27) - 1)) << 37) | (pinned ? kBlockPinnedBit : 0) | (state << 32) | owner;
}
/// The next word for a state change: seq + 1, PINNED preserved.
constexpr uint64_t next_block(uint64_t w, uint64_t state, uint64_t owner) {
    return make_block(state, block_seq(w) + 1, owner, block_pinned(w));
}
/// A large object's run release claimed by `owner` on its head block's word `w` (FREE, or a
/// dead claimant's claim): DRAINED with the claimant's token (a drain's DRAINED words carry 0).
constexpr uint64_t run_release_claim(uint64_t w, uint64_t owner) {
    return make_block(kBlockDrained, block_seq(w) + 1, owner, false);
}
constexpr bool is_run_release_claim(uint64_t w) { return block_state(w) == kBlockDrained && block_owner(w) != 0; }
constexpr bool block_readable(uint64_t w) {
    const uint64_t s = block_state(w);
    return s == kBlockCommitting || s == kBlockPublished || s == kBlockRemoving || s == kBlockRetired;
}

// ---- Superblock descriptor word -------------------------------------------------------
// bits 0..31 aux (owner token for ASSIGNING/DRAINING/CLAIMING, run length for RUN_HEAD,
// head index for RUN_TAIL), bits 32..35 state, bits 36..41 size class (SMALL, DRAINING,
// ASSIGNING), bits 42..63 gen (bumped on every change).
enum SbState : uint64_t {
    kSbUnassigned = 0,
    kSbAssigning = 1,  ///< owner is initialising the block words for `class`
    kSbSmall = 2,      ///< blocks of one size class
    kSbDraining = 3,   ///< owner is marking every FREE block DRAINED before UNASSIGNED
    kSbClaiming = 4,   ///< owner is claiming a run of contiguous superblocks
    kSbRunHead = 5,    ///< first superblock of a large object; aux = run length
    kSbRunTail = 6,    ///< further superblock of a run; aux = head index
};
constexpr uint64_t sb_aux(uint64_t d) { return d & 0xffffffffULL; }
constexpr uint64_t sb_state(uint64_t d) { return (d >> 32) & 0xf; }
constexpr uint32_t sb_class(uint64_t d) { return uint32_t((d >> 36) & 0x3f); }
constexpr uint64_t sb_gen(uint64_t d) { return d >> 42; }
constexpr uint64_t make_sb(uint64_t state, uint32_t cls, uint64_t gen, uint64_t aux) {
    return ((gen & ((1ULL << 22) - 1)) << 42) | (uint64_t(cls & 0x3f) << 36) | (state << 32) | (aux & 0xffffffffULL);
}
constexpr uint64_t next_sb(uint64_t d, uint64_t state, uint32_t cls, uint64_t aux) {
    return make_sb(state, cls, sb_gen(d) + 1, aux);
}

// ---- Table slot -------------------------------------------------------------------------
// tag(8) << 56 | gen(24) << 32 | (block index + 1)(32); block + 1 == 0 means empty (whatever
// the gen). `gen` goes up on every write of the slot, including a "bump" that changes nothing
// else, so a slot value never repeats within 2^24 writes: a writer whose CAS is based on a stale
// read (it was paused, and another writer or a stripe-lock thief changed the slot) always
// fails. Written by CAS only: an overwriter of a present key (no lock: its CAS from the value
// it looked up is its only fence), the holder of the key's stripe lock (inserts, removes), a
// thief fencing the previous holder's announced slot. Read by everyone.
constexpr uint64_t make_slot(uint8_t tag, uint32_t gen, uint32_t block) {
    return (uint64_t(tag) << 56) | (uint64_t(gen & 0xffffff) << 32) | (uint64_t(block) + 1);
}
constexpr uint64_t make_empty_slot(uint32_t gen) { return uint64_t(gen & 0xffffff) << 32; }
constexpr bool slot_empty(uint64_t s) { return uint32_t(s) == 0; }
constexpr uint8_t slot_tag(uint64_t s) { return uint8_t(s >> 56); }
constexpr uint32_t slot_gen(uint64_t s) { return uint32_t(s >> 32) & 0xffffff; }
constexpr uint32_t slot_block(uint64_t s) { return uint32_t(s) - 1; }
/// The same content (key and block, or empty) under the next generation.
constexpr uint64_t bump_slot(uint64_t s) {
    return slot_empty(s) ? make_empty_slot(slot_gen(s) + 1) : make_slot(slot_tag(s), slot_gen(s) + 1, slot_block(s));
}
/// The 8-bit tag kept in a slot: filters lookups before the block's header is read.
constexpr uint8_t key_tag(uint64_t hash) { return uint8_t(hash >> 56); }
static_assert(slot_block(make_slot(0xab, 0xffffff, 0x7ffffffe)) == 0x7ffffffe && slot_tag(make_slot(0xab, 1, 0)) == 0xab,
              "tag, generation and block do not overlap");
static_assert(bump_slot(make_empty_slot(0xffffff)) == make_empty_slot(0), "the generation wraps inside its field");

// ---- Stripe lock --------------------------------------------------------------------------
// Writers of one key serialise on its stripe (hash >> 20) % kStripes. `holder` is the lock:
// (thread tag << 32) | owner token, 0 = free. `intent` is the fencing token:
// seq(32) << 32 | (slot index + 1)(32), 0 = nothing announced yet. Before every slot CAS the
// holder CASes `intent` from the value it last saw to (seq + 1, that slot). A waiter that takes
// the lock over from a holder that kept it too long (paused, or certainly dead) first bumps
// the announced slot (bump_slot) and then CASes `intent` to (seq + 1, none): the old holder's
// next intent CAS fails, and the one slot CAS it may still have in flight fails on the bumped
// generation. So a stolen holder's late writes never land, and nobody has to be judged dead.
constexpr uint64_t make_intent(uint32_t seq, uint64_t slot_plus_one) { return (uint64_t(seq) << 32) | slot_plus_one; }
constexpr uint32_t intent_seq(uint64_t i) { return uint32_t(i >> 32); }
constexpr uint64_t intent_slot_plus_one(uint64_t i) { return i & 0xffffffffULL; }

struct alignas(16) StripeLock {
    std::atomic<uint64_t> holder;  ///< (thread tag << 32) | token; CAS by acquirers, thieves; release CAS by the holder
    std::atomic<uint64_t> intent;  ///< fencing token above; CAS by the holder and by a thief (seq_cst)
};
static_assert(sizeof(StripeLock) == 16, "four stripes per cache line");

// ---- Pin record -------------------------------------------------------------------------
// 0 = free; else (owner token << 32) | (block index + 1).
constexpr uint64_t make_pin(uint32_t owner, uint32_t block) { return (uint64_t(owner) << 32) | (uint64_t(block) + 1); }
constexpr uint32_t pin_owner(uint64_t p) { return uint32_t(p >> 32); }
constexpr uint32_t pin_block(uint64_t p) { return uint32_t(p) - 1; }

struct alignas(64) Bucket {
    std::atomic<uint64_t> slots[kSlotsPerBucket];  ///< see "Table slot"; key's lock holder CASes, readers load
    /// Inserters passing this bucket (full) increment before claiming a slot further on;
    /// removers decrement after clearing it. Never below the true count; lookups of a key
    /// whose home is here stop when it is 0. Low 32 bits used.
    std::atomic<uint64_t> overflow;
};
static_assert(sizeof(Bucket) == 64, "a bucket is one cache line: a lookup touches one line per bucket");

struct alignas(layout::kPageSize) StoreHeader {
    std::atomic<uint64_t> magic;          ///< kStoreMagic; creator, release-stored last in init
    uint32_t layout_version;              ///< kStoreLayoutVersion; creator, immutable
    uint32_t header_size;                 ///< sizeof(StoreHeader); creator, immutable
    uint64_t bucket_count;                ///< power of two; creator, immutable
    uint64_t sb_bytes;                    ///< superblock size (power of two); immutable
    uint64_t sb_count;                    ///< superblocks in the heap; immutable
    uint64_t words_per_sb;                ///< sb_bytes / kMinBlock; immutable
    uint64_t heap_bytes;                  ///< sb_count * sb_bytes; immutable
    uint64_t max_object_bytes;            ///< payload limit; immutable
    uint64_t pin_slots;                   ///< pin records; immutable
    uint64_t class_count;                 ///< size classes in use (block sizes <= sb_bytes / 4); immutable
    uint64_t buckets_offset;              ///< from the root region start; immutable
    uint64_t desc_offset;                 ///< immutable
    uint64_t used_offset;                 ///< immutable
    uint64_t words_offset;                ///< immutable
    uint64_t pins_offset;                 ///< immutable
    uint64_t root_bytes;                  ///< bytes of the root region used; immutable
    uint64_t created_wall_ns;             ///< creator; immutable
    uint64_t reserved0[12];
    std::atomic<uint64_t> heap_ref;       ///< RegionRef::packed of the heap; creator, before the root is published
    uint64_t reserved1[7];
    alignas(64) std::atomic<uint64_t> version_counter;  ///< last version handed out; writers fetch_add
    uint64_t reserved2[7];
    alignas(64) std::atomic<uint32_t> class_cursor[64]; ///< per class: superblock to try first (hint); allocators
    /// 1 + the highest pin record index ever claimed (never lowered). Pinners claim the lowest
    /// free record and raise this (relaxed) before their release CAS of the PINNED bit, so a
    /// retirer that acquired a PINNED word scans only [0, pin_high_water) of the pin table.
    alignas(64) std::atomic<uint32_t> pin_high_water;
    uint32_t reserved3[15];
    alignas(64) StripeLock stripes[kStripes];  ///< writer locks with their fencing tokens (see "Stripe lock")
    /// Per class: 1 + a superblock of the class that emptied and was kept instead of drained,
    /// for the class to fill next (0 = none; a hint, relaxed, checked against the descriptor
    /// before use). Freers set it, allocators clear it when they move their cursor there, and
    /// repair's drain of empty superblocks clears it. docs/store.md "allocator". Added in
    /// layout minor 4 where the header page was padding: an older build leaves it 0 (no spare)
    /// and ignores it, and a hint it left stale is checked before use.
    alignas(64) std::atomic<uint32_t> class_spare[64];
};
static_assert(sizeof(StoreHeader) == layout::kPageSize, "the store header is one page");
static_assert(offsetof(StoreHeader, heap_ref) == 232, "heap_ref is read by every attacher and the dump tool");
static_assert(offsetof(StoreHeader, version_counter) == 320, "version counter on its own line");
static_assert(offsetof(StoreHeader, stripes) == 704, "stripe locks after the hint lines");
static_assert(offsetof(StoreHeader, class_spare) == 704 + sizeof(StripeLock) * kStripes,
              "128 stripes of (lock, fencing token), then the spare hints");
static_assert(offsetof(StoreHeader, class_spare) + sizeof(StoreHeader::class_spare) <= layout::kPageSize,
              "the spare hints fit in the header page");

/// At the start of every object's block (heap). Written by the block's owner while LOANED;
/// published by the release store that makes the block COMMITTING and by the slot CAS.
/// Then immutable until the block is FREE again. Followed by the payload (size bytes) at
/// offset 64, then, 8-aligned, the trailer: key ("bucket/key"), content type, metadata
/// pairs (u16 key length, u16 value length, key, value).
struct ObjectHeader {
    uint32_t magic;            ///< kObjectMagic
    uint32_t crc32;            ///< CRC-32 of the payload
    uint64_t size;             ///< payload bytes
    uint64_t version;          ///< store-wide monotonic
    uint64_t fence_token;      ///< PutOptions::fence_token of the writer
    uint64_t created_wall_ns;  ///< CLOCK_REALTIME ns at publication
    uint64_t expires_mono_ns;  ///< CLOCK_MONOTONIC ns; 0 = no TTL
    uint64_t replaces;         ///< (seq << 32) | (block + 1) of the object this one overwrote; 0 = none
    uint16_t key_len;          ///< bytes of "bucket/key"
    uint8_t ctype_len;         ///< bytes of the content type
    uint8_t meta_pairs;        ///< metadata entries
    uint16_t meta_len;         ///< encoded metadata bytes
    uint16_t reserved;         ///< 0
};
static_assert(sizeof(ObjectHeader) == 64, "payload starts at offset 64 of a block");
static_assert(offsetof(ObjectHeader, key_len) == 56, "repair reads the key of a dead writer's block through these lengths");
/// The header's fields a publish decides (version, fence_token, created_wall_ns,
/// expires_mono_ns, replaces), written as one run of words after write_header() filled the rest.
constexpr size_t kHeaderDecidedWords = 5;
static_assert(offsetof(ObjectHeader, fence_token) == offsetof(ObjectHeader, version) + 8 &&
                  offsetof(ObjectHeader, created_wall_ns) == offsetof(ObjectHeader, version) + 16 &&
                  offsetof(ObjectHeader, expires_mono_ns) == offsetof(ObjectHeader, version) + 24 &&
                  offsetof(ObjectHeader, replaces) == offsetof(ObjectHeader, version) + 8 * (kHeaderDecidedWords - 1),
              "mark_committing writes the fields a publish decides as one run of words");
static_assert(std::is_standard_layout_v<ObjectHeader> && std::is_trivially_copyable_v<ObjectHeader>,
              "the header is copied out of the heap with a seqlock copy (bytes, not members)");

constexpr uint64_t kPayloadOffset = sizeof(ObjectHeader);
constexpr uint64_t kMaxStoreKey = 64 + 1 + 256;  ///< "bucket/key"
constexpr uint64_t kMaxMetaPairs = 32;
constexpr uint64_t kMaxTrailer = ((kMaxStoreKey + 64 + 512 + 4 * kMaxMetaPairs) + 7) / 8 * 8;

static_assert(std::atomic<uint64_t>::is_always_lock_free && sizeof(std::atomic<uint64_t>) == 8,
              "slot, block and superblock words are shared between processes");
static_assert(std::atomic<uint32_t>::is_always_lock_free && sizeof(std::atomic<uint32_t>) == 4,
              "class cursors and used-block hints are shared between processes");

}  // namespace fabric_shm::store_layout
