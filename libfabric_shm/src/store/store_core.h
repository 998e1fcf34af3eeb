// SPDX-License-Identifier: MIT
// StoreCore: the object store's shared-memory algorithms (allocator, table, pins, repair)
// over one mapped store (root + heap). Used by MemObjectStore, the reaper hook and the dump
// tool. Every offset and length read from shared memory is bounds-checked here.
#pragma once

#include "private.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/object_store.h"
#include "fabric_shm/placement_hint.h"
#include "fabric_shm/pool.h"
#include "store/store_layout.h"

namespace fabric_shm::detail {

/// Parameters of a store to create (all derived and validated).
struct StoreGeometry {
    uint64_t bucket_count = 0, sb_bytes = 0, sb_count = 0, max_object_bytes = 0, pin_slots = 0;
    uint64_t root_bytes() const;
    uint64_t heap_bytes() const { return sb_bytes * sb_count; }
    uint64_t table_slots() const { return bucket_count * store_layout::kSlotsPerBucket; }
};
/// Derives the geometry from a config (0 = default, from the pool size); errors name the option.
/// MemObjectStore::open creates a store with it and MemObjectStore::plan reports it: one
/// derivation, so a plan is what open then gives.
Result<StoreGeometry> derive_store_geometry(uint64_t pool_size, uint32_t table_entries, uint64_t heap_bytes,
                                            uint64_t max_object_bytes);
/// Writes a fresh header into a zeroed root region (the create_region init callback).
Status init_store_root(std::byte* data, uint64_t length, const StoreGeometry& g);

/// "bucket/key" in a stack buffer, with its hash.
struct StoreKey {
    char bytes[store_layout::kMaxStoreKey];
    uint32_t len = 0;
    uint64_t hash = 0;
    std::string_view view() const { return {bytes, len}; }
};
Result<StoreKey> make_store_key(const FabricUriView& uri);
/// make_store_key into the caller's key (no copy of the key through a Result: the hot paths).
Status fill_store_key(const FabricUriView& uri, StoreKey& key);
inline Result<StoreKey> make_store_key(const FabricUri& uri) { return make_store_key(uri.view()); }
uint64_t hash_store_key(const char* p, size_t n) noexcept;

/// A PlacementHint's bits: block + 1 in the high half (0: no hint), the payload's size,
/// capped, in the low half.
inline PlacementHint placement_of(uint32_t block, uint64_t size) noexcept {
    return PlacementHint(((uint64_t(block) + 1) << 32) | std::min<uint64_t>(size, UINT32_MAX));
}
inline std::optional<uint32_t> placement_block(PlacementHint hint) noexcept {
    if (hint.empty()) return std::nullopt;
    return uint32_t((hint.bits() >> 32) - 1);
}
inline uint64_t placement_size(PlacementHint hint) noexcept { return hint.bits() & UINT32_MAX; }

/// Where a block lives in the heap.
struct BlockLoc {
    std::byte* data = nullptr;
    uint64_t capacity = 0;  ///< bytes of the block
};

/// A validated snapshot of an object's header (copied out of shared memory).
struct HeaderSnapshot {
    store_layout::ObjectHeader h{};
    BlockLoc loc;
    uint64_t trailer_offset = 0;  ///< from the block start
};

/// An object's version, fence token and metadata pairs as stored, copied out of one header
/// snapshot: for the library's own judgements that read a value or two and need no ObjectInfo
/// (no map, no strings). Meaningful only once the caller's unchanged() check passed.
struct StoredMeta {
    uint64_t version = 0;
    uint64_t fence_token = 0;
    uint32_t pairs = 0;
    uint32_t len = 0;  ///< bytes of `bytes` in use
    char bytes[kMaxMetadataBytes + 4 * store_layout::kMaxMetaPairs];
    /// The first values stored under `a` and under `b` (as info_into keeps them; nullopt for a
    /// key with none), in one walk of the pairs. Stops at a pair cut short, as info_into does.
    void values(std::string_view a, std::optional<std::string_view>& value_a, std::string_view b,
                std::optional<std::string_view>& value_b) const noexcept;
};

/// Result of a lookup: the slot, its value and the block's word when it was validated.
struct Found {
    std::atomic<uint64_t>* slot = nullptr;
    uint64_t slot_value = 0;
    uint64_t bucket = 0;     ///< bucket index of the slot
    uint64_t slot_index = 0; ///< bucket * kSlotsPerBucket + position: what a writer announces before its CAS
    uint32_t block = 0;
    uint64_t word = 0;       ///< block word at validation
    HeaderSnapshot snap;
};

struct RepairCounts {
    uint64_t loans = 0, pins = 0, blocks = 0, superblocks = 0, expired = 0;
    bool incomplete = false;  ///< a dead writer's block left as it was: its key's lock stayed busy
    uint64_t total() const { return loans + pins + blocks + superblocks + expired; }
};

class StoreCore {
public:
    /// Validates the header against the region lengths before trusting any field.
    static Result<StoreCore> bind(const Pool& pool, std::byte* root, uint64_t root_len, std::byte* heap,
                                  uint64_t heap_len);

    const store_layout::StoreHeader& header() const { return *hdr_; }
    uint64_t sb_bytes() const { return sb_bytes_; }
    uint64_t sb_count() const { return sb_count_; }
    uint64_t heap_bytes() const { return sb_bytes_ * sb_count_; }
    uint64_t max_object_bytes() const { return max_object_; }
    uint64_t table_slots() const { return (mask_ + 1) * store_layout::kSlotsPerBucket; }
    uint64_t block_count() const { return sb_count_ * words_per_sb_; }

    // ---- allocator ----
    /// Claims a block of >= bytes for `me` (LOANED). Slow path repairs and reclaims before
    /// giving up with capacity_exceeded.
    Result<uint32_t> alloc(uint64_t bytes, OwnerToken me, uint64_t* word_out);
    /// LOANED(me) -> FREE (a put that failed, a dropped loan).
    void free_loan(uint32_t block, OwnerToken me) noexcept;
    bool locate(uint32_t block, BlockLoc& loc) const noexcept;
    std::atomic<uint64_t>& word(uint32_t block) const noexcept { return words_[block]; }

    // ---- table ----
    /// Lock-free lookup. Returns found (validated), nullopt (absent), or corrupt/busy.
    Result<std::optional<Found>> lookup(const StoreKey& key) const;
    /// Copies the payload of a found object into out (validated against reuse; restart on
    /// false). The caller verifies the CRC.
    bool copy_payload(const Found& f, uint8_t* out) const noexcept;
    ObjectInfo info_of(const HeaderSnapshot& snap) const;
    /// info_of into `info`, reusing its strings and metadata entries (no allocation when it
    /// held the same metadata keys with values as long before).
    void info_into(const HeaderSnapshot& snap, ObjectInfo& info) const;
    /// The snapshot's version, fence token and metadata bytes into `meta` (a seqlock read: the
    /// caller validates the block afterwards).
    void meta_into(const HeaderSnapshot& snap, StoredMeta& meta) const noexcept;
    /// True when the found block was not reused since the lookup validated it.
    bool unchanged(const Found& f) const noexcept { return copy_payload_n(f, nullptr, 0); }

    /// Publishes block `b` (LOANED(me), header fields written by this call except those
    /// given) under the key. An overwrite of a present key links with one slot CAS, without
    /// the key's stripe lock; an insert, or an overwrite whose slot keeps changing, takes the
    /// lock. On a failed condition returns conflict/stale_epoch and leaves the block LOANED(me).
    struct PublishArgs {
        const StoreKey* key = nullptr;
        uint32_t block = 0;
        const PutOptions* options = nullptr;
        /// Where `block` lies, when the caller located its loan already (not located again:
        /// a loan's superblock stays assigned while its owner lives); null: located here.
        const BlockLoc* loc = nullptr;
        /// The key's object as a lookup the caller made earlier found it (what it judged the
        /// options' condition by): the first overwrite attempt starts from it instead of looking
        /// the key up, and its slot CAS decides exactly as after a fresh lookup. Used only
        /// while it still names this core's slot for this key and its block is still in the
        /// life found (expected_still_found), so an old lookup is never trusted on the slot's
        /// 24-bit generation alone; a condition it refuses, or a failed CAS, looks the key up
        /// afresh.
        const Found* expected = nullptr;
    };
    Result<uint64_t> publish(const PublishArgs& args, OwnerToken me);
    /// Starts fetching, for writing, the lines a publish of this key touches first (its home
    /// bucket and its stripe lock), so that a batch overlaps one key's misses with the work of
    /// the key before it. A hint: no effect on the outcome.
    void prefetch_for_publish(const StoreKey& key) const noexcept;
    /// Starts fetching the line a lookup of this key reads first (its home bucket), so that a
    /// caller who knows the key early overlaps that miss with other work. A hint: no effect on
    /// the outcome.
    void prefetch_bucket(const StoreKey& key) const noexcept;
    /// Starts fetching the lines a reader of the object in `block` (a payload of `size` bytes)
    /// waits on after its lookup: the block's word, its header, the key after the payload and
    /// the payload's first kPrefetchPayloadBytes. A hint (a PlacementHint's fields, untrusted):
    /// an index outside the heap does nothing, a size larger than the block is cut to it, and
    /// nothing is read (but the superblock's descriptor, as locate() does) or written.
    void prefetch_object(uint32_t block, uint64_t size) const noexcept;
    /// Starts fetching the block a lookup of this key would find in its home bucket (the first
    /// slot whose tag matches): its word and its first kPrefetchLinkedBytes, where a small
    /// object's header, payload, key and metadata lie. For a caller that looks the key up after
    /// other work and whose bucket line was asked for earlier (prefetch_bucket): the block's
    /// misses then overlap that work too. A hint: the slot is read relaxed and not validated
    /// (lookup reads it again), the block index is bounds-checked and located as lookup does
    /// (reading its superblock's descriptor), and nothing is written.
    void prefetch_linked(const StoreKey& key) const noexcept;
    static constexpr uint64_t kPrefetchLinkedBytes = 256;
    /// Payload bytes prefetch_object fetches: past them the CPU's stream prefetcher is running.
    static constexpr uint64_t kPrefetchPayloadBytes = 1024;
    /// A remove limited to one life of one block (the TTL reclaim's): its index and sequence.
    struct OnlyBlock {
        uint32_t block = 0;
        uint64_t seq = 0;
    };
    Result<bool> remove(const StoreKey& key, std::optional<uint64_t> if_version, OwnerToken me,
                        std::optional<OnlyBlock> only_block = std::nullopt);

    // ---- pins ----
    /// Pins the found object; nullopt if it changed meanwhile (the caller looks up again).
    Result<std::optional<uint32_t>> pin(const Found& f, OwnerToken me);
    void unpin(uint32_t record, uint32_t block, OwnerToken me) noexcept;

    // ---- batched frees of retired blocks ----
    /// Blocks retired with PINNED set that this core's process may free together after one
    /// scan of the pin records, instead of one scan each (docs/store.md "Batched frees").
    static constexpr uint32_t kRetiredBatch = 32;
    /// Turns batching on for this core and its copies (long-lived handles; a core without it,
    /// such as the reaper's or the dump tool's, frees each retired block at once).
    void enable_batched_frees();
    /// Frees every batched block no pin record references; the pinned ones are left to their
    /// last unpin, as without batching. A store handle's stats() and close call it.
    void flush_retired() noexcept;

    // ---- maintenance ----
    /// Releases what certainly-dead owners left (loans, pins, half-done commits/removes,
    /// superblock transitions), drains empty superblocks, reclaims expired objects.
    RepairCounts repair(uint64_t now_ns, bool dry_run, OwnerToken me, std::vector<std::string>* notes);
    /// repair()'s first step alone: releases certainly-dead owners' pin records (one pass over
    /// the records, a liveness question per owner). What a pin that found every record held
    /// runs before it gives up; returns how many it released.
    uint64_t release_dead_pin_records(uint64_t now_ns, OwnerToken me);
    void check(std::vector<std::string>& violations, std::vector<std::string>& in_progress) const;

    struct Usage {
        uint64_t objects = 0, used_bytes = 0, largest_free_extent = 0, loans = 0, pins = 0;
        uint64_t superblocks_small = 0, superblocks_run = 0, superblocks_free = 0;
        /// Buckets (cache lines) a lookup reads, on average: of a present key (1 + the buckets
        /// its entry passed on insert: the sum of the buckets' overflow counts over the objects)
        /// and of an absent key (from each home bucket, 1 + the run of buckets whose overflow
        /// count says an entry passed them: where a lookup stops).
        double probe_buckets_hit = 0, probe_buckets_miss = 0;
    };
    Usage usage() const;
    /// Keys (bucket/key) in the table, unsorted, expired ones skipped. busy as entries().
    Result<std::vector<std::string>> keys(uint64_t now_mono) const;
    /// One live object as the table and its header say (a racy snapshot, for tools).
    struct Entry {
        std::string key;               ///< "bucket/key"
        uint64_t size = 0;             ///< payload bytes
        uint64_t block_bytes = 0;      ///< heap bytes its block takes (header, trailer, rounding)
        uint64_t expires_mono_ns = 0;  ///< 0: no TTL
    };
    /// Every live object (expired ones skipped), in table order. busy when one slot changed
    /// under every one of lookup()'s 10000 reads (a key overwritten without pause): never a
    /// listing that silently lacks a key present throughout.
    Result<std::vector<Entry>> entries(uint64_t now_mono) const;

    uint64_t class_size(uint32_t c) const { return class_sizes_[c]; }

private:
    StoreCore() = default;
    bool copy_payload_n(const Found& f, uint8_t* out, uint64_t n) const noexcept;
    bool read_header(uint32_t block, uint64_t word, HeaderSnapshot& snap) const noexcept;
    bool key_matches(const HeaderSnapshot& snap, std::string_view key) const noexcept;
    /// Whether the key in a header read by read_header() hashes to `tag` (a slot's). The copy
    /// may be torn: callers validate the block's life after it, as for any header read.
    bool header_key_has_tag(const HeaderSnapshot& snap, uint8_t tag) const noexcept;
    bool claim_in_sb(uint32_t sb, uint32_t cls, OwnerToken me, uint32_t* block, uint64_t* word);
    bool assign_sb(uint32_t cls, OwnerToken me, uint32_t* sb_out);
    bool alloc_run(uint64_t n, OwnerToken me, uint32_t* block, uint64_t* word);
    void after_free(uint32_t block) noexcept;
    bool keep_as_spare(uint32_t sb, uint32_t cls) noexcept;
    bool drain_spares(OwnerToken me) noexcept;
    bool try_drain(uint32_t sb, OwnerToken me) noexcept;
public:
    /// A held stripe lock: the stripe, our lock word, and the last fencing token we saw or
    /// wrote (docs/store.md "Stripe locks").
    struct StripeHold {
        uint32_t stripe = 0;
        uint64_t mine = 0;
        uint64_t intent = 0;
        bool stolen = false;  ///< taken over from a holder that kept it too long or died
    };
    /// The writer lock of the key with this hash. Taken over (never failing for it) from a
    /// holder that keeps it too long or is certainly dead; the old holder is fenced.
    Result<StripeHold> lock_stripe(uint64_t hash, OwnerToken me) const;
    void unlock_stripe(const StripeHold& hold) const noexcept;

private:
    void rollback_drain(uint32_t sb, uint64_t desc) noexcept;
    /// Releases the run headed by superblock `head_sb` if its head block is FREE: claims the
    /// release on the head block's word (FREE -> DRAINED(owner)), then finish_run_release.
    void release_run(uint32_t head_sb) noexcept;
    /// The claimed release (head word `claimed`, ours): tails, then the head, UNASSIGNED.
    void finish_run_release(uint32_t head_sb, uint64_t claimed) noexcept;
    void retire(uint32_t block, uint64_t expect_seq, int depth) noexcept;
    /// Retires `block`, which a slot CAS unlinked: at `expect_seq` when `linked_over` (our own
    /// CAS unlinked it), then at its current sequence while it is still `key`'s PUBLISHED or
    /// REMOVING object that no slot of the key's probe window links (a remover's mark and
    /// revert, or its linker's finish, moved the sequence since the lookup).
    void retire_unlinked(uint32_t block, uint64_t expect_seq, const StoreKey& key, int depth = 0,
                         bool linked_over = true) noexcept;
    /// The header and key of `block` as of word `w` (key hash included); false if the header
    /// is invalid or the block left w's sequence while they were read.
    bool read_key(uint32_t block, uint64_t w, HeaderSnapshot& snap, StoreKey& key) const noexcept;
    /// Retires what the COMMITTING `block` (read at word `w`) replaced, as its header's
    /// `replaces` names it, through retire_unlinked with the block's own key. Does nothing if
    /// `block` left w's sequence meanwhile (freed and reused: its header names another key's
    /// object).
    void retire_replaced(uint32_t block, uint64_t w, int depth, bool linked_over) noexcept;
    /// Calls f(slot, value) for each slot in the probe window of `hash` that points at `block`,
    /// until f returns true (then true).
    template <class F>
    bool any_link_in_window(uint32_t block, uint64_t hash, F&& f) const noexcept;
    /// True when a slot in the probe window of `hash` points at `block`.
    bool linked_in_window(uint32_t block, uint64_t hash) const noexcept;
    /// Bumps the generation of every slot in `hash`'s probe window that links `block` (a
    /// fencing step that changes nothing else): a slot CAS prepared against those values fails.
    void bump_links_of(uint32_t block, uint64_t hash) noexcept;
    void maybe_free_retired(uint32_t block) noexcept;
    /// RETIRED|PINNED word `w`, read before the caller's scan found no record of it -> FREE.
    void free_retired_word(uint32_t block, uint64_t w) noexcept;
    /// A batch entry's block and its word (acquire); false unless it is still RETIRED|PINNED
    /// at the entry's seq.
    bool retired_entry_word(uint64_t entry, uint32_t& block, uint64_t& w) const noexcept;
    /// A batch entry freed on its own (a scan of its own), when no batch can take it.
    void maybe_free_retired_entry(uint64_t entry) noexcept;
    /// Queues a block we just made RETIRED (word `retired`) for the next batch; frees it at once
    /// when batching is off or it heads a run (a large block is not held back).
    void free_retired_later(uint32_t block, uint64_t retired) noexcept;
    bool pinned_by_any(uint32_t block) const noexcept;
    /// Calls f(block) for each pin record below the high-water mark until f returns true
    /// (then true). The one scan of the records, for one block or for a batch.
    template <class F>
    bool any_pin_record(F&& f) const noexcept;
    void finish_commit(uint32_t block, uint64_t word, int depth) noexcept;
    /// Takes back an insert's overflow counts: `buckets` buckets from `home` on (those it passed).
    void dec_overflow(uint64_t home, uint64_t buckets) noexcept;
    /// Makes the previous holder's announced slot CAS fail (bump) and closes its token.
    uint64_t fence_previous_holder(store_layout::StripeLock& sl) const noexcept;
    /// Announces the slot we are about to CAS (the fencing token). False: the lock was taken
    /// over while we were stopped; do not write, start the operation again.
    bool announce(StripeHold& hold, uint64_t slot_index) const noexcept;
    std::atomic<uint64_t>* slot_at(uint64_t slot_index) const noexcept;
    enum class Locked { done, relock };
    /// The refusal of the options' condition against the key's current object (`f`; nullopt
    /// when absent), or nullopt. Asks fence_holds: call it on every pass, before the slot CAS.
    std::optional<Error> condition_refusal(const PutOptions& opt, const StoreKey& key,
                                           const std::optional<Found>& f) const;
    /// Writes the header fields a publish decides (version, fence, times, the object replaced)
    /// into our loaned block and marks it COMMITTING(me) in `committing`. False, with `out`
    /// set: the loan is no longer ours.
    bool mark_committing(const PublishArgs& args, OwnerToken me, const std::optional<Found>& f, uint64_t version,
                         uint64_t& committing, Result<uint64_t>& out) const;
    /// After our slot CAS linked the block: retires the object it replaced, then COMMITTING ->
    /// PUBLISHED (unless a later writer already replaced it).
    void finish_publish(const PublishArgs& args, const std::optional<Found>& f, uint64_t committing) noexcept;
    /// An overwrite of a present key without the stripe lock: the slot CAS from the value read
    /// decides. nullopt when the key is absent (an insert needs the lock), its lookup failed,
    /// a locked writer holds the key's stripe, or the slot changed kOverwriteAttempts times in
    /// a row: the caller takes the lock.
    std::optional<Result<uint64_t>> publish_overwrite(const PublishArgs& args, OwnerToken me);
    /// Whether a lookup made earlier (PublishArgs::expected) may start an overwrite of `key`:
    /// it names this core's slot, holding `key`'s tag and its block, and that block has not
    /// left the life the lookup found it in (no unlink since, so no reuse).
    bool expected_still_found(const Found& f, const StoreKey& key) const noexcept;
    static constexpr int kOverwriteAttempts = 4;
    Locked publish_locked(const PublishArgs& args, OwnerToken me, StripeHold& hold, Result<uint64_t>& out);
    Locked remove_locked(const StoreKey& key, std::optional<uint64_t> if_version, OwnerToken me,
                         std::optional<OnlyBlock> only_block, StripeHold& hold, Result<bool>& out);
    /// lookup() under the key's lock: busy after kFindLockedRounds lookups that each said busy.
    Result<std::optional<Found>> find_locked(const StoreKey& key) const;
    static constexpr uint32_t kFindLockedRounds = 4;
    bool sb_live_owner(OwnerToken t, uint64_t now, std::map<OwnerToken, bool>& cache) const;

    /// One repair() pass: its inputs, the owners' liveness asked so far, what it found.
    struct RepairPass {
        uint64_t now = 0;
        bool dry = false;
        OwnerToken me = 0;
        std::vector<std::string>* notes = nullptr;
        std::map<OwnerToken, bool> live;  ///< liveness per owner, asked once per pass
        RepairCounts counts;
        void note(const std::string& line) const {
            if (notes) notes->push_back(line);
        }
    };
    /// repair()'s steps, in order.
    void release_dead_pins(RepairPass& pass);
    void reset_dead_superblock_transitions(RepairPass& pass);
    void repair_dead_blocks(RepairPass& pass);
    /// A COMMITTING or REMOVING block of a dead writer (word `w`): finished or undone by
    /// whether the table links it, under the key's lock.
    void finish_dead_write(RepairPass& pass, uint32_t block, uint64_t w);
    void reclaim_expired(RepairPass& pass);
    void drain_empty_superblocks(OwnerToken me);

    const Pool* pool_ = nullptr;
    store_layout::StoreHeader* hdr_ = nullptr;
    store_layout::Bucket* buckets_ = nullptr;
    std::atomic<uint64_t>* desc_ = nullptr;
    std::atomic<uint32_t>* used_ = nullptr;  ///< [2 * sb]: used-block hint, next-search cursor
    std::atomic<uint64_t>* words_ = nullptr;
    std::atomic<uint64_t>* pins_ = nullptr;
    std::byte* heap_ = nullptr;
    uint64_t mask_ = 0, sb_bytes_ = 0, sb_count_ = 0, words_per_sb_ = 0, max_object_ = 0, pin_slots_ = 0;
    uint32_t class_count_ = 0;
    /// Process-local, never in shared memory: what a crash or a pause of ours leaves is only
    /// RETIRED|PINNED blocks without records, which repair() and any unpin free as before.
    struct RetiredBatch {
        std::atomic<uint64_t> cursor{0};  ///< pushes so far (racy between threads); every kRetiredBatch-th flushes
        /// (block << 32) | (seq << 1) | 1 of a RETIRED|PINNED word we wrote; 0 = empty.
        std::atomic<uint64_t> entries[kRetiredBatch]{};
    };
    static_assert(std::atomic<uint64_t>::is_always_lock_free, "batch entries are exchanged from any thread");
    std::shared_ptr<RetiredBatch> retired_;
    uint64_t class_sizes_[store_layout::kMaxClasses] = {};
    /// sb_bytes_ / class_sizes_[c] for each class (0 past class_count_), and log2 of
    /// words_per_sb_ (a power of two: attach checks sb_bytes): the hot paths divide by neither.
    uint64_t class_blocks_[store_layout::kMaxClasses] = {};
    uint32_t words_per_sb_shift_ = 0;
    uint64_t sb_of(uint64_t block) const noexcept { return block >> words_per_sb_shift_; }
    uint64_t index_in_sb(uint64_t block) const noexcept { return block & (words_per_sb_ - 1); }
};

/// A store's root and heap regions, held open (neither is reclaimed while held) and bound.
struct BoundStore {
    Region root, heap;
    std::optional<StoreCore> core;  ///< set whenever bind_store_regions succeeded
};

/// Follows the root's heap reference to its heap region, which must be a store heap, and binds
/// both. The one way to attach a store's memory: MemObjectStore, the region-kind hooks and the
/// dump all come through here.
Result<BoundStore> bind_store_regions(const Pool& pool, Region root);

}  // namespace fabric_shm::detail
