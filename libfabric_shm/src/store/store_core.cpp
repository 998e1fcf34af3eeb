// SPDX-License-Identifier: MIT
// The object store's shared-memory algorithms. Protocols, invariants and the crash analysis
// per step are in docs/store.md; comments here name the partner of each acquire/release.
#include "store/store_core.h"
#include "cpu_relax.h"
#include "seqlock_copy.h"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "fabric_shm/clock.h"
#include "fabric_shm/counters.h"
#include "crash_point.h"
#include "fabric_shm/registry.h"
#include "pool_impl.h"
#include "thread_tag.h"

namespace fabric_shm::detail {

using namespace store_layout;

namespace {

/// The writer lock stripe of a key's hash (store_layout.h "Stripe lock").
uint32_t stripe_of(uint64_t hash) noexcept { return uint32_t((hash >> 20) % kStripes); }

/// A stripe lock kept this long by one holder without announcing anything new is taken over
/// (and the holder fenced): store critical sections take microseconds, so only a stopped,
/// starved or dead holder gets there. A holder that was merely slow starts its operation again.
constexpr uint64_t kStripeHoldLimitNs = 50 * kNsPerMs;
/// A waiter gives up with Errc::busy only after this long without getting the lock while its
/// holders keep changing (livelock insurance; a stopped holder is taken over long before).
constexpr uint64_t kStripeWaitLimitNs = 10 * kNsPerSec;
/// An operation fenced this many times in a row gives up with Errc::busy.
constexpr uint32_t kMaxRelocks = 1000;
/// A read of one slot (a lookup, a listing's) that found the slot changed under it this many
/// times in a row gives up with Errc::busy: only a key overwritten without pause gets there.
constexpr int kLookupAttempts = 10000;

constexpr uint64_t align64(uint64_t v) { return (v + 63) & ~uint64_t(63); }
uint64_t pow2_ceil(uint64_t v) {
    uint64_t p = 1;
    while (p < v) p <<= 1;
    return p;
}

/// Block sizes: powers of two with 4 sub-steps (128, 160, 192, 224, 256, 320, ...), up to
/// sb_bytes / 4 (larger objects take runs of whole superblocks).
uint32_t compute_classes(uint64_t sb_bytes, uint64_t* out) {
    uint32_t n = 0;
    for (uint32_t k = 0; k < kMaxClasses; ++k) {
        const uint64_t size = uint64_t(4 + (k % 4)) * (uint64_t(32) << (k / 4));
        if (size > sb_bytes / 4) break;
        out[n++] = size;
    }
    return n;
}

uint64_t wall_coarse_ns() {
    // CLOCK_REALTIME_COARSE: ~5 ns against ~70 ns for CLOCK_REALTIME on this VM; the
    // creation time of an object is for display, so a few ms of resolution is enough.
    timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return uint64_t(ts.tv_sec) * kNsPerSec + uint64_t(ts.tv_nsec);
}

void nap_ns(uint64_t ns) {
    timespec ts{time_t(ns / kNsPerSec), long(ns % kNsPerSec)};
    nanosleep(&ts, nullptr);
}

std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

}  // namespace

// ---- geometry ------------------------------------------------------------------------

uint64_t StoreGeometry::root_bytes() const {
    const uint64_t w = sb_bytes / kMinBlock;
    return sizeof(StoreHeader) + bucket_count * sizeof(Bucket) + align64(sb_count * 8) + align64(sb_count * 8) +
           align64(sb_count * w * 8) + align64(pin_slots * 8);
}

Result<StoreGeometry> derive_store_geometry(uint64_t pool_size, uint32_t table_entries, uint64_t heap_bytes,
                                            uint64_t max_object_bytes) {
    // Every input may be hostile (an archive's store record, a CLI option): no sum or product
    // below may wrap, or a config open() cannot bind would pass here and be created.
    StoreGeometry g;
    const uint64_t heap = heap_bytes ? heap_bytes : pool_size / 2;
    // pow2_ceil's argument capped at the largest superblock (the clamp's bound anyway): it never
    // has to double past 2^63.
    g.sb_bytes = std::clamp<uint64_t>(pow2_ceil(std::clamp<uint64_t>(heap / 1024, 1, kMaxSbBytes)), kMinSbBytes,
                                      kMaxSbBytes);
    g.sb_count = heap / g.sb_bytes;
    if (g.sb_count < 4)
        return make_error(Errc::invalid_argument, "store heap of " + std::to_string(heap) +
                                                      " bytes is smaller than 4 superblocks of " +
                                                      std::to_string(g.sb_bytes) + " (raise with --heap-size)");
    // sb_count * words >= 2^31, as a division (words is a power of two at most 2^31): with a heap
    // near 2^64 the product would come close to wrapping.
    if (g.sb_count >= (1ULL << 31) / (g.sb_bytes / kMinBlock))
        return make_error(Errc::invalid_argument,
                          "store heap of " + std::to_string(heap) + " bytes exceeds the 2^31-block limit");
    const uint64_t entries =
        table_entries ? table_entries : std::clamp<uint64_t>(g.sb_count * g.sb_bytes / 1024, 1024, 1ULL << 24);
    if (entries > (1ULL << 28))
        return make_error(Errc::invalid_argument,
                          "store table of " + std::to_string(entries) + " entries exceeds the limit 268435456");
    g.bucket_count = std::max<uint64_t>(2, pow2_ceil((entries + kSlotsPerBucket - 1) / kSlotsPerBucket));
    const uint64_t heap_total = g.heap_bytes();
    g.max_object_bytes = max_object_bytes ? max_object_bytes : std::min<uint64_t>(heap_total / 4, 16ULL << 20);
    // An object takes its header and trailer besides its bytes. Compared without the sum: a
    // max_object_bytes near 2^64 would wrap it, pass, and give a store whose header bind()
    // refuses (created, then never attachable).
    if (g.max_object_bytes > heap_total || heap_total - g.max_object_bytes < kPayloadOffset + kMaxTrailer)
        return make_error(Errc::invalid_argument, "max object size " + std::to_string(g.max_object_bytes) +
                                                      " does not fit the store heap of " + std::to_string(heap_total) +
                                                      " bytes (raise --heap-size or lower --max-object-size)");
    g.pin_slots = 1024;
    return g;
}

Status init_store_root(std::byte* data, uint64_t length, const StoreGeometry& g) {
    if (length < g.root_bytes())
        return make_error(Errc::too_small, "store root region of " + std::to_string(length) + " bytes, need " +
                                               std::to_string(g.root_bytes()));
    auto* h = reinterpret_cast<StoreHeader*>(data);
    const uint64_t w = g.sb_bytes / kMinBlock;
    h->layout_version = kStoreLayoutVersion;
    h->header_size = sizeof(StoreHeader);
    h->bucket_count = g.bucket_count;
    h->sb_bytes = g.sb_bytes;
    h->sb_count = g.sb_count;
    h->words_per_sb = w;
    h->heap_bytes = g.heap_bytes();
    h->max_object_bytes = g.max_object_bytes;
    h->pin_slots = g.pin_slots;
    uint64_t classes[kMaxClasses];
    h->class_count = compute_classes(g.sb_bytes, classes);
    h->buckets_offset = sizeof(StoreHeader);
    h->desc_offset = h->buckets_offset + g.bucket_count * sizeof(Bucket);
    h->used_offset = h->desc_offset + align64(g.sb_count * 8);
    h->words_offset = h->used_offset + align64(g.sb_count * 8);
    h->pins_offset = h->words_offset + align64(g.sb_count * w * 8);
    h->root_bytes = g.root_bytes();
    h->created_wall_ns = wall_now_ns();
    // Everything else is zero: empty slots, UNASSIGNED superblocks, uninitialised block
    // words, free pin records and stripe locks. Release: pairs with bind()'s acquire load.
    h->magic.store(kStoreMagic, std::memory_order_release);
    return {};
}

// ---- keys ------------------------------------------------------------------------------

uint64_t hash_store_key(const char* p, size_t n) noexcept {
    // 8 bytes per step, multiply-xorshift; finalised with the murmur3 fmix64.
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xff51afd7ed558ccdULL);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        std::memcpy(&v, p + i, 8);
        h = (h ^ (v * 0x87c37b91114253d5ULL)) * 0x4cf5ad432745937fULL;
        h ^= h >> 31;
    }
    uint64_t tail = 0;
    std::memcpy(&tail, p + i, n - i);
    h = (h ^ (tail * 0x87c37b91114253d5ULL)) * 0x4cf5ad432745937fULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

Status fill_store_key(const FabricUriView& uri, StoreKey& k) {
    const size_t n = uri.bucket().size() + 1 + uri.key().size();
    if (uri.bucket().empty() || uri.key().empty() || n > kMaxStoreKey)
        return make_error(Errc::invalid_uri, "invalid URI '" + uri.to_string() + "': bucket/key of " +
                                                 std::to_string(n) + " bytes (limit " + std::to_string(kMaxStoreKey) +
                                                 ")");
    std::memcpy(k.bytes, uri.bucket().data(), uri.bucket().size());
    k.bytes[uri.bucket().size()] = '/';
    std::memcpy(k.bytes + uri.bucket().size() + 1, uri.key().data(), uri.key().size());
    k.len = uint32_t(n);
    k.hash = hash_store_key(k.bytes, n);
    return {};
}

Result<StoreKey> make_store_key(const FabricUriView& uri) {
    StoreKey k;
    FABRIC_TRY(fill_store_key(uri, k));
    return k;
}

// ---- binding ----------------------------------------------------------------------------

Result<BoundStore> bind_store_regions(const Pool& pool, Region root) {
    if (root.length() < sizeof(StoreHeader))
        return make_error(Errc::too_small, "store root region of " + std::to_string(root.length()) +
                                               " bytes is shorter than its " + std::to_string(sizeof(StoreHeader)) +
                                               "-byte header");
    const auto* h = reinterpret_cast<const StoreHeader*>(root.data());
    // Acquire: pairs with MemObjectStore::open's release store of heap_ref before it
    // publishes the root.
    const uint64_t href = h->heap_ref.load(std::memory_order_acquire);
    if (href == 0) return make_error(Errc::corrupt, "store has no heap region");
    auto heap = pool.open_region(RegionRef::unpack(href));
    if (!heap) return std::move(heap).error();
    if (detail::region_entry(*heap).kind.load(std::memory_order_relaxed) != uint32_t(RegionKind::store_heap))
        return make_error(Errc::corrupt, "store heap reference names a region of another kind");
    auto core = StoreCore::bind(pool, root.data(), root.length(), heap->data(), heap->length());
    if (!core) return std::move(core).error();
    BoundStore b;
    b.root = std::move(root);
    b.heap = std::move(*heap);
    b.core.emplace(std::move(*core));
    return b;
}

Result<StoreCore> StoreCore::bind(const Pool& pool, std::byte* root, uint64_t root_len, std::byte* heap,
                                  uint64_t heap_len) {
    auto bad = [](const std::string& what) {
        return make_error(Errc::corrupt, "store header: " + what);
    };
    if (root_len < sizeof(StoreHeader)) return make_error(Errc::too_small, "store root region shorter than its header");
    auto* h = reinterpret_cast<StoreHeader*>(root);
    // Acquire: pairs with init_store_root's release store of magic.
    if (h->magic.load(std::memory_order_acquire) != kStoreMagic) return bad("bad magic");
    if (h->layout_version != kStoreLayoutVersion)
        return make_error(Errc::version_mismatch, "store layout version " + std::to_string(h->layout_version) +
                                                      ", this build reads " + std::to_string(kStoreLayoutVersion));
    if (h->header_size != sizeof(StoreHeader)) return bad("header size " + std::to_string(h->header_size));
    const uint64_t sb = h->sb_bytes;
    if (sb < kMinSbBytes || sb > kMaxSbBytes || (sb & (sb - 1)) != 0) return bad("superblock size " + std::to_string(sb));
    if (h->words_per_sb != sb / kMinBlock) return bad("words per superblock");
    if (h->sb_count == 0 || h->sb_count > (1ULL << 31) / h->words_per_sb) return bad("superblock count");
    if (h->heap_bytes != sb * h->sb_count || heap_len < h->heap_bytes)
        return bad("heap of " + std::to_string(h->heap_bytes) + " bytes, region " + std::to_string(heap_len));
    const uint64_t bc = h->bucket_count;
    if (bc < 2 || (bc & (bc - 1)) != 0 || bc > (1ULL << 28)) return bad("bucket count " + std::to_string(bc));
    if (h->pin_slots == 0 || h->pin_slots > (1ULL << 20)) return bad("pin slots");
    StoreCore c;
    c.class_count_ = compute_classes(sb, c.class_sizes_);
    if (h->class_count != c.class_count_) return bad("class count");
    StoreGeometry g{bc, sb, h->sb_count, h->max_object_bytes, h->pin_slots};
    if (h->root_bytes != g.root_bytes() || root_len < g.root_bytes()) return bad("root size");
    if (h->buckets_offset != sizeof(StoreHeader) || h->desc_offset != h->buckets_offset + bc * sizeof(Bucket) ||
        h->used_offset != h->desc_offset + align64(h->sb_count * 8) ||
        h->words_offset != h->used_offset + align64(h->sb_count * 8) ||
        h->pins_offset != h->words_offset + align64(h->sb_count * h->words_per_sb * 8))
        return bad("table offsets");
    if (h->max_object_bytes > h->heap_bytes || h->max_object_bytes + kPayloadOffset + kMaxTrailer > h->heap_bytes)
        return bad("max object size");
    c.pool_ = &pool;
    c.hdr_ = h;
    c.buckets_ = reinterpret_cast<Bucket*>(root + h->buckets_offset);
    c.desc_ = reinterpret_cast<std::atomic<uint64_t>*>(root + h->desc_offset);
    c.used_ = reinterpret_cast<std::atomic<uint32_t>*>(root + h->used_offset);
    c.words_ = reinterpret_cast<std::atomic<uint64_t>*>(root + h->words_offset);
    c.pins_ = reinterpret_cast<std::atomic<uint64_t>*>(root + h->pins_offset);
    c.heap_ = heap;
    c.mask_ = bc - 1;
    c.sb_bytes_ = sb;
    c.sb_count_ = h->sb_count;
    c.words_per_sb_ = h->words_per_sb;
    c.words_per_sb_shift_ = uint32_t(std::countr_zero(h->words_per_sb));
    for (uint32_t k = 0; k < c.class_count_; ++k) c.class_blocks_[k] = sb / c.class_sizes_[k];
    c.max_object_ = h->max_object_bytes;
    c.pin_slots_ = h->pin_slots;
    return c;
}

// ---- blocks -----------------------------------------------------------------------------

bool StoreCore::locate(uint32_t block, BlockLoc& loc) const noexcept {
    if (block >= block_count()) return false;
    const uint64_t sb = sb_of(block), i = index_in_sb(block);
    // Acquire: pairs with the release CAS that assigned the superblock (assign_sb/alloc_run).
    const uint64_t d = desc_[sb].load(std::memory_order_acquire);
    // DRAINING keeps the layout: a drain attempt enters it from SMALL with the same class and
    // only turns FREE blocks DRAINED; any block that is not FREE (a loan, an object) makes it
    // roll back to SMALL. Such a block stays where it is throughout, and its owner and readers
    // must find it: a drain attempt runs whenever a racy used-block hint says the superblock
    // may be empty, and a loan that could not be located was written through a null address.
    if (sb_state(d) == kSbSmall || sb_state(d) == kSbDraining) {
        const uint32_t c = sb_class(d);
        if (c >= class_count_) return false;
        const uint64_t cs = class_sizes_[c];
        if ((i + 1) * cs > sb_bytes_) return false;
        loc.data = heap_ + sb * sb_bytes_ + i * cs;
        loc.capacity = cs;
        return true;
    }
    if (sb_state(d) == kSbRunHead && i == 0) {
        const uint64_t len = sb_aux(d);
        if (len == 0 || sb + len > sb_count_) return false;
        loc.data = heap_ + sb * sb_bytes_;
        loc.capacity = len * sb_bytes_;
        return true;
    }
    return false;
}

bool StoreCore::read_header(uint32_t block, uint64_t, HeaderSnapshot& snap) const noexcept {
    if (!locate(block, snap.loc) || snap.loc.capacity < kPayloadOffset) return false;
    seqlock_copy_out(&snap.h, snap.loc.data, sizeof(ObjectHeader));
    const ObjectHeader& h = snap.h;
    if (h.magic != kObjectMagic) return false;
    if (h.size > snap.loc.capacity - kPayloadOffset) return false;
    snap.trailer_offset = kPayloadOffset + align8(h.size);
    if (h.key_len == 0 || h.key_len > kMaxStoreKey || h.ctype_len > kMaxContentTypeLength ||
        h.meta_pairs > kMaxMetaPairs || h.meta_len > kMaxMetadataBytes + 4 * kMaxMetaPairs)
        return false;
    return snap.trailer_offset + h.key_len + h.ctype_len + h.meta_len <= snap.loc.capacity;
}

bool StoreCore::key_matches(const HeaderSnapshot& snap, std::string_view key) const noexcept {
    return snap.h.key_len == key.size() &&
           seqlock_equal(snap.loc.data + snap.trailer_offset, key.data(), key.size());
}

bool StoreCore::header_key_has_tag(const HeaderSnapshot& snap, uint8_t tag) const noexcept {
    char bytes[store_layout::kMaxStoreKey];
    const size_t n = std::min<size_t>(snap.h.key_len, sizeof bytes);  // read_header bounded it
    seqlock_copy_out(bytes, snap.loc.data + snap.trailer_offset, n);
    return key_tag(hash_store_key(bytes, n)) == tag;
}

Result<uint32_t> StoreCore::alloc(uint64_t bytes, OwnerToken me, uint64_t* word_out) {
    uint32_t block = 0;
    uint64_t w = 0;
    if (bytes > sb_bytes_ / 4) {
        const uint64_t n = (bytes + sb_bytes_ - 1) / sb_bytes_;
        for (int pass = 0; pass < 2; ++pass) {
            if (alloc_run(n, me, &block, &w) || (pass == 0 && drain_spares(me) && alloc_run(n, me, &block, &w))) {
                *word_out = w;
                return block;
            }
            if (pass == 0) repair(mono_now_ns(), false, me, nullptr);
        }
        return make_error(Errc::capacity_exceeded,
                          "store heap full: no " + std::to_string(n) + " contiguous free superblocks of " +
                              std::to_string(sb_bytes_) + " bytes for a block of " + std::to_string(bytes) +
                              " bytes (heap capacity " + std::to_string(heap_bytes()) + " bytes; raise with --heap-size)");
    }
    // The class from the size (compute_classes: four steps per power of two from 128), then the
    // table's own check (at most one step): no walk over the class table per allocation.
    uint32_t cls = 0;
    if (bytes > class_sizes_[0]) {
        const uint32_t group = uint32_t(std::bit_width(bytes - 1)) - 8;  // 128 << group < bytes <= 256 << group
        const uint64_t step = uint64_t(32) << group;
        cls = std::min<uint32_t>(4 * group + uint32_t((bytes + step - 1) >> (group + 5)) - 4, class_count_);
        while (cls > 0 && class_sizes_[cls - 1] >= bytes) --cls;
    }
    while (cls < class_count_ && class_sizes_[cls] < bytes) ++cls;
    const uint64_t nb = class_blocks_[cls];
    // Fast path: the class's current superblock.
    uint32_t sb = hdr_->class_cursor[cls].load(std::memory_order_relaxed);  // relaxed: a hint
    if (sb < sb_count_ && claim_in_sb(sb, cls, me, &block, &w)) {
        *word_out = w;
        return block;
    }
    // Next, the superblock the class emptied and kept (keep_as_spare): it becomes the cursor.
    // claim_in_sb checks its descriptor. Either way the hint is spent: cleared if it still
    // names that superblock (a stale one, drained, re-assigned or out of range, costs one try).
    if (uint32_t spare = hdr_->class_spare[cls].load(std::memory_order_relaxed); spare != 0) {
        const bool claimed = spare - 1 < sb_count_ && spare - 1 != sb && claim_in_sb(spare - 1, cls, me, &block, &w);
        if (claimed) hdr_->class_cursor[cls].store(spare - 1, std::memory_order_relaxed);
        hdr_->class_spare[cls].compare_exchange_strong(spare, 0, std::memory_order_relaxed);
        if (claimed) {
            *word_out = w;
            return block;
        }
    }
    int assigned = 0;
    bool spares_drained = false;
    for (int pass = 0; pass < 2; ++pass) {
        for (uint32_t s = 0; s < sb_count_; ++s) {
            const uint64_t d = desc_[s].load(std::memory_order_relaxed);  // relaxed: filter only; claim re-reads
            if (sb_state(d) != kSbSmall || sb_class(d) != cls) continue;
            if (pass == 0 && used_[2 * s].load(std::memory_order_relaxed) >= nb) continue;
            if (claim_in_sb(s, cls, me, &block, &w)) {
                hdr_->class_cursor[cls].store(s, std::memory_order_relaxed);
                uint32_t spare = s + 1;  // it is the cursor now, no longer a spare
                hdr_->class_spare[cls].compare_exchange_strong(spare, 0, std::memory_order_relaxed);
                *word_out = w;
                return block;
            }
        }
        if (assign_sb(cls, me, &sb)) {
            hdr_->class_cursor[cls].store(sb, std::memory_order_relaxed);
            if (claim_in_sb(sb, cls, me, &block, &w)) {
                *word_out = w;
                return block;
            }
            if (++assigned < 4) --pass;  // others took the whole new superblock: look again
            continue;
        }
        // No free superblock: the spares of every class go back first, before a repair pass.
        if (pass == 0 && !spares_drained && (spares_drained = drain_spares(me))) {
            --pass;
            continue;
        }
        if (pass == 0) repair(mono_now_ns(), false, me, nullptr);
    }
    return make_error(Errc::capacity_exceeded, "store heap full: no free block of " + std::to_string(class_sizes_[cls]) +
                                                   " bytes and no free superblock (heap capacity " +
                                                   std::to_string(heap_bytes()) + " bytes; raise with --heap-size)");
}

bool StoreCore::claim_in_sb(uint32_t sb, uint32_t cls, OwnerToken me, uint32_t* block, uint64_t* word) {
    // Acquire: pairs with assign_sb's release CAS to SMALL (block words initialised before).
    const uint64_t d = desc_[sb].load(std::memory_order_acquire);
    if (sb_state(d) != kSbSmall || sb_class(d) != cls) return false;
    const uint64_t nb = class_blocks_[cls];
    const uint64_t hint = used_[2 * sb + 1].load(std::memory_order_relaxed);  // relaxed: a hint
    uint64_t i = hint < nb ? hint : 0;
    for (uint64_t k = 0; k < nb; ++k, i = i + 1 == nb ? 0 : i + 1) {
        const uint32_t b = uint32_t(sb * words_per_sb_ + i);
        uint64_t x = words_[b].load(std::memory_order_relaxed);
        if (block_state(x) != kBlockFree) continue;
        const uint64_t nw = make_block(kBlockLoaned, block_seq(x) + 1, me, false);
        // acq_rel: acquire pairs with the release that freed the block (its last reader is
        // done); release orders nothing yet. The owner token in the word is the loan record.
        if (!words_[b].compare_exchange_strong(x, nw, std::memory_order_acq_rel, std::memory_order_relaxed)) continue;
        // A stale descriptor read: the superblock may have been drained and re-assigned
        // between our descriptor load and the claim. Re-check (docs/store.md "allocator").
        if (desc_[sb].load(std::memory_order_acquire) != d) {
            uint64_t mine = nw;
            words_[b].compare_exchange_strong(mine, make_block(kBlockFree, block_seq(nw) + 1, 0, false),
                                              std::memory_order_release, std::memory_order_relaxed);
            return false;
        }
        FABRIC_CRASH_POINT("store.alloc.after_claim");
        // A hint for draining, not a count: a plain load/store (no locked RMW on the hot
        // path); lost updates between racing processes only delay or waste a drain attempt.
        used_[2 * sb].store(used_[2 * sb].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        used_[2 * sb + 1].store(uint32_t(i + 1), std::memory_order_relaxed);
        // Release fence: the owner's payload and header stores come next (plain memcpy, or
        // relaxed atomics under TSan). A stale seqlock reader still copying this block's
        // previous object must, if it sees any of those bytes, also see our claim when it
        // re-reads the word after its acquire fence (fence-fence synchronisation). The CAS's
        // own release half orders only what came before it; on x86 this compiles to nothing,
        // on AArch64 to a DMB.
        std::atomic_thread_fence(std::memory_order_release);
        *block = b;
        *word = nw;
        return true;
    }
    return false;
}

bool StoreCore::assign_sb(uint32_t cls, OwnerToken me, uint32_t* sb_out) {
    const uint64_t nb = class_blocks_[cls];
    for (uint32_t s = 0; s < sb_count_; ++s) {  // small blocks from the bottom, runs from the top
        uint64_t d = desc_[s].load(std::memory_order_relaxed);
        if (sb_state(d) != kSbUnassigned) continue;
        const uint64_t assigning = next_sb(d, kSbAssigning, cls, me);
        if (!desc_[s].compare_exchange_strong(d, assigning, std::memory_order_acq_rel, std::memory_order_relaxed))
            continue;
        FABRIC_CRASH_POINT("store.alloc.assigning");
        bool still_ours = true;
        for (uint64_t i = 0; i < nb && still_ours; ++i) {
            std::atomic<uint64_t>& wd = words_[s * words_per_sb_ + i];
            // Acquire (here and on a failed CAS): a word written by whoever reassigned the
            // superblock is read before the descriptor below, which then shows the change.
            uint64_t x = wd.load(std::memory_order_acquire);
            for (;;) {
                // The superblock must still be ours before each word: an assigner taken for
                // dead while only stopped (judged by its heartbeat, in another pid namespace)
                // is reset by repair, and the superblock may then be assigned and filled by
                // others; their words are not ours to free. Acquire: pairs with the release
                // CAS of whoever reassigned it (its words then moved, and our CAS from `x`
                // fails until we see the descriptor changed).
                if (desc_[s].load(std::memory_order_acquire) != assigning) {
                    still_ours = false;
                    break;
                }
                // Release: a stale claimer that CASes this fresh FREE word acquires it and then
                // sees the descriptor no longer matches (see claim_in_sb).
                if (wd.compare_exchange_weak(x, make_block(kBlockFree, block_seq(x) + 1, 0, false),
                                             std::memory_order_acq_rel, std::memory_order_acquire))
                    break;
            }
        }
        if (!still_ours) continue;  // a reaper presumed us dead and reset it
        used_[2 * s].store(0, std::memory_order_relaxed);
        used_[2 * s + 1].store(0, std::memory_order_relaxed);
        uint64_t expect = assigning;
        // Release: publishes the initialised block words to claim_in_sb's acquire load.
        if (!desc_[s].compare_exchange_strong(expect, next_sb(assigning, kSbSmall, cls, 0), std::memory_order_release,
                                              std::memory_order_relaxed))
            continue;  // a reaper presumed us dead and reset it
        *sb_out = s;
        return true;
    }
    return false;
}

bool StoreCore::alloc_run(uint64_t n, OwnerToken me, uint32_t* block, uint64_t* word) {
    if (n == 0 || n > sb_count_) return false;
    for (uint64_t k1 = sb_count_ - n + 1; k1-- > 0;) {
        const uint64_t k = k1;
        bool all_free = true;
        for (uint64_t j = k; j < k + n && all_free; ++j)
            all_free = sb_state(desc_[j].load(std::memory_order_relaxed)) == kSbUnassigned;
        if (!all_free) continue;
        // Claim in order; release on failure.
        uint64_t claimed = 0;
        bool ok = true;
        for (uint64_t j = k; j < k + n; ++j) {
            uint64_t d = desc_[j].load(std::memory_order_relaxed);
            const uint64_t c = next_sb(d, kSbClaiming, 0, me);
            if (sb_state(d) != kSbUnassigned ||
                !desc_[j].compare_exchange_strong(d, c, std::memory_order_acq_rel, std::memory_order_relaxed)) {
                ok = false;
                break;
            }
            ++claimed;
        }
        // Our claims still standing back to UNASSIGNED: after a failure here, or once a reaper
        // reset one of them (it presumed us dead while we were stopped), the rest would stay
        // CLAIMING(us) for as long as we live, since repair resets only a dead owner's.
        auto unclaim = [&](uint64_t end) {
            for (uint64_t j = k; j < end; ++j) {
                uint64_t c = desc_[j].load(std::memory_order_relaxed);
                if (sb_state(c) == kSbClaiming && sb_aux(c) == me)
                    desc_[j].compare_exchange_strong(c, next_sb(c, kSbUnassigned, 0, 0), std::memory_order_release,
                                                     std::memory_order_relaxed);
            }
        };
        if (!ok) {
            unclaim(k + claimed);
            continue;
        }
        FABRIC_CRASH_POINT("store.alloc.run_claimed");
        const uint32_t head = uint32_t(k * words_per_sb_);
        // Acquire (here and on a failed CAS): as in assign_sb, a word written by whoever took
        // the superblock over is read before the descriptor check, which then shows it.
        uint64_t x = words_[head].load(std::memory_order_acquire);
        uint64_t nw;
        for (;;) {
            // Still our claim of the head superblock (as in assign_sb: a claimant taken for
            // dead while stopped must not take over a word of whoever got the superblock).
            const uint64_t hd = desc_[k].load(std::memory_order_acquire);
            if (sb_state(hd) != kSbClaiming || sb_aux(hd) != me) {
                unclaim(k + n);
                return false;
            }
            nw = make_block(kBlockLoaned, block_seq(x) + 1, me, false);
            if (words_[head].compare_exchange_weak(x, nw, std::memory_order_acq_rel, std::memory_order_acquire)) break;
        }
        bool lost = false;
        for (uint64_t j = k + 1; j < k + n; ++j) {
            uint64_t c = desc_[j].load(std::memory_order_relaxed);
            if (sb_state(c) != kSbClaiming || sb_aux(c) != me ||
                !desc_[j].compare_exchange_strong(c, next_sb(c, kSbRunTail, 0, k), std::memory_order_release,
                                                  std::memory_order_relaxed))
                lost = true;
        }
        uint64_t hd = desc_[k].load(std::memory_order_relaxed);
        // Release: publishes the run (and the LOANED head word) to locate()'s acquire load.
        if (lost || sb_state(hd) != kSbClaiming || sb_aux(hd) != me ||
            !desc_[k].compare_exchange_strong(hd, next_sb(hd, kSbRunHead, 0, n), std::memory_order_release,
                                              std::memory_order_relaxed)) {
            // A reaper presumed us dead. Our claims still standing go back; tails already made
            // RUN_TAIL of a head that is not a run are reset by repair, and the head word
            // LOANED(us) in an UNASSIGNED superblock is rewritten by whoever assigns it.
            unclaim(k + n);
            return false;
        }
        // Release fence before the owner writes the run's bytes: a stale reader of a block that
        // lived in these superblocks (drained, or an older run) re-checks that block's word
        // after its copy, and the drain's or free's word change happened-before our claim.
        // See claim_in_sb.
        std::atomic_thread_fence(std::memory_order_release);
        *block = head;
        *word = nw;
        return true;
    }
    return false;
}

void StoreCore::free_loan(uint32_t block, OwnerToken me) noexcept {
    if (block >= block_count()) return;
    FABRIC_PAUSE_POINT("store.loan.release");
    uint64_t w = words_[block].load(std::memory_order_relaxed);
    while (block_state(w) == kBlockLoaned && block_owner(w) == me) {
        // Release: our writes to the block happen-before the next claimer's acquire.
        if (words_[block].compare_exchange_weak(w, make_block(kBlockFree, block_seq(w) + 1, 0, false),
                                                std::memory_order_release, std::memory_order_relaxed)) {
            after_free(block);
            return;
        }
    }
}

void StoreCore::after_free(uint32_t block) noexcept {
    const uint32_t sb = uint32_t(sb_of(block));
    const uint64_t d = desc_[sb].load(std::memory_order_acquire);
    if (sb_state(d) == kSbRunHead && index_in_sb(block) == 0) {
        release_run(sb);
        return;
    }
    if (sb_state(d) != kSbSmall) return;
    const uint32_t u = used_[2 * sb].load(std::memory_order_relaxed);  // a hint (see claim_in_sb)
    if (u > 0) used_[2 * sb].store(u - 1, std::memory_order_relaxed);
    if (u == 1 && hdr_->class_cursor[sb_class(d)].load(std::memory_order_relaxed) != sb && pool_->self() != 0 &&
        !keep_as_spare(sb, sb_class(d)))
        try_drain(sb, pool_->self());
}

// The heap has no unassigned superblock: give back every class's spare (at most one try_drain
// each, which rolls back if the superblock is no longer empty) before a full repair pass.
bool StoreCore::drain_spares(OwnerToken me) noexcept {
    bool drained = false;
    for (uint32_t c = 0; c < class_count_; ++c) {
        uint32_t spare = hdr_->class_spare[c].load(std::memory_order_relaxed);
        if (spare == 0) continue;
        const uint32_t sb = spare - 1;
        if (sb < sb_count_ && sb != hdr_->class_cursor[c].load(std::memory_order_relaxed) && try_drain(sb, me))
            drained = true;
        hdr_->class_spare[c].compare_exchange_strong(spare, 0, std::memory_order_relaxed);  // drained or stale
    }
    return drained;
}

// A class whose objects are overwritten at a steady count empties its oldest superblock while
// it fills its newest: draining the empty one (a CAS on each of its block words) and then
// assigning a fresh one when the newest is full (another CAS on each) cost two locked
// instructions per small put in the steady state, a fifth of a 4-byte put's
// (docs/benchmarks.md). So one emptied superblock per class is kept, for the class to fill
// next; any further one is drained as before. Memory is not lost: an allocation that finds no
// free superblock gives the spares back (drain_spares) before it runs a repair pass, whose drain
// of empty superblocks takes spares too.
bool StoreCore::keep_as_spare(uint32_t sb, uint32_t cls) noexcept {
    if (cls >= class_count_ || class_sizes_[cls] == 0) return false;  // corrupt: try_drain refuses it too
    std::atomic<uint32_t>& spare = hdr_->class_spare[cls];
    uint32_t cur = spare.load(std::memory_order_relaxed);  // relaxed: a hint, checked before use
    if (cur == sb + 1) return true;
    // A spare still of this class with room is kept; one that is now the cursor, was drained
    // or re-assigned, or names nothing valid, is replaced.
    if (cur != 0 && cur - 1 < sb_count_ && cur - 1 != hdr_->class_cursor[cls].load(std::memory_order_relaxed)) {
        const uint64_t d = desc_[cur - 1].load(std::memory_order_relaxed);
        if (sb_state(d) == kSbSmall && sb_class(d) == cls &&
            used_[2 * (cur - 1)].load(std::memory_order_relaxed) < class_blocks_[cls])
            return false;
    }
    return spare.compare_exchange_strong(cur, sb + 1, std::memory_order_relaxed);
}

void StoreCore::release_run(uint32_t head) noexcept {
    if (head >= sb_count_) return;
    const OwnerToken me = pool_->self();
    // A read-only handle (the dump tool) claims nothing: a run whose head block is FREE is
    // released by any writer's repair pass (repair_dead_blocks).
    if (me == 0) return;
    const uint64_t d = desc_[head].load(std::memory_order_acquire);
    if (sb_state(d) != kSbRunHead) return;
    std::atomic<uint64_t>& hw = words_[uint64_t(head) * words_per_sb_];
    uint64_t w = hw.load(std::memory_order_acquire);
    if (block_state(w) != kBlockFree) return;
    // The FREE word is this run's head only if the run is still there after it was read: a
    // freer stopped between the two loads may read the word of block 0 of a small-object class
    // that took the superblock meanwhile (assign_sb writes its words only after its CAS to
    // ASSIGNING, so this acquire reload then sees the descriptor changed). Claiming that word
    // would take a free block out of the class.
    if (desc_[head].load(std::memory_order_acquire) != d) return;
    FABRIC_PAUSE_POINT("store.run.release");
    // Several freers may release one run (the block's freer and repair()), and one stopped here
    // may resume after the run was released and its superblocks reused, many times over. So the
    // release is claimed first, on the head block's word: FREE(s) -> DRAINED(s + 1, us), a CAS
    // from the exact word read (27-bit sequence). Exactly one freer wins a FREE head, and a
    // stale one fails here: the word of every later life of the head block has moved on. The
    // descriptors are only then read and changed, by the winner alone. Comparing them with a
    // descriptor read before a pause would not do: a superblock that is released and claimed
    // for a run three times in a row brings its 22-bit descriptor back to the same word after
    // about 1.4 million reuses (seconds of a large-object loop), and the stale release would
    // have unassigned a live object's run. Acq_rel: acquire orders the free we saw (its
    // freer's last reader is done) before the release; nothing is published yet.
    const uint64_t claimed = run_release_claim(w, me);
    if (!hw.compare_exchange_strong(w, claimed, std::memory_order_acq_rel, std::memory_order_relaxed)) return;
    finish_run_release(head, claimed);
}

void StoreCore::finish_run_release(uint32_t head, uint64_t claimed) noexcept {
    std::atomic<uint64_t>& hw = words_[uint64_t(head) * words_per_sb_];
    // Read under the claim: no other releaser gets past the claim, no allocator takes a
    // superblock that is not UNASSIGNED, and repair resets only tails no head covers, so the
    // run stays as read until the CASes below.
    const uint64_t d = desc_[head].load(std::memory_order_acquire);
    if (sb_state(d) != kSbRunHead) {
        // The FREE word claimed is not a run's head: the superblock was released and taken by
        // another allocator while this freer was stopped after its checks, and the word came
        // back to the value read (a 27-bit sequence wrap; a repairer's stale RUN_HEAD read
        // claims a DRAINED word of an UNASSIGNED or DRAINING superblock the same way). Give the
        // block back as FREE; an allocator that took the superblock replaced the word already.
        uint64_t c = claimed;
        hw.compare_exchange_strong(c, make_block(kBlockFree, block_seq(claimed) + 1, 0, false),
                                   std::memory_order_release, std::memory_order_relaxed);
        return;
    }
    // Still our claim, read after the descriptor: a repairer that read RUN_HEAD before the
    // run's own freer released it claims the DRAINED word that freer left in the UNASSIGNED
    // superblock, and a new run may have taken the superblock since. Its allocator replaced
    // the head word (acq_rel CAS) before it made the head RUN_HEAD (release CAS), so the
    // acquire load above that saw the new run makes this load see the word moved: the new run
    // is not ours to release.
    if (hw.load(std::memory_order_acquire) != claimed) return;
    FABRIC_PAUSE_POINT("store.run.release_claimed");
    // Tails first: a run's head is UNASSIGNED only once no tail names it (an allocator takes a
    // run only of UNASSIGNED superblocks, and the head's UNASSIGNED releases them all).
    const uint64_t len = sb_aux(d);
    for (uint64_t j = uint64_t(head) + 1; j < uint64_t(head) + len && j < sb_count_; ++j) {
        // Acquire: pairs with alloc_run's release CAS of the tail.
        uint64_t t = desc_[j].load(std::memory_order_acquire);
        if (sb_state(t) != kSbRunTail || sb_aux(t) != head) continue;
        desc_[j].compare_exchange_strong(t, next_sb(t, kSbUnassigned, 0, 0), std::memory_order_release,
                                         std::memory_order_relaxed);
    }
    // The head word stays DRAINED: an UNASSIGNED superblock's words are overwritten by whoever
    // assigns it (alloc_run, assign_sb), as after a drain. Release: the tails' resets before.
    uint64_t e = d;
    desc_[head].compare_exchange_strong(e, next_sb(d, kSbUnassigned, 0, 0), std::memory_order_release,
                                        std::memory_order_relaxed);
}

bool StoreCore::try_drain(uint32_t sb, OwnerToken me) noexcept {
    if (sb >= sb_count_) return false;
    uint64_t d = desc_[sb].load(std::memory_order_acquire);
    if (sb_state(d) != kSbSmall || me == 0) return false;
    const uint32_t cls = sb_class(d);
    // The class comes from shared memory: a corrupt descriptor must not index past the class
    // table or divide by an unused (zero) class size. Left as it is; check() reports it.
    if (cls >= class_count_ || class_sizes_[cls] == 0) return false;
    const uint64_t draining = next_sb(d, kSbDraining, cls, me);
    if (!desc_[sb].compare_exchange_strong(d, draining, std::memory_order_acq_rel, std::memory_order_relaxed))
        return false;
    const uint64_t nb = class_blocks_[cls];
    bool ok = true;
    uint64_t last_i = UINT64_MAX, last_mark = 0;  // our latest mark, as written
    for (uint64_t i = 0; i < nb && ok; ++i) {
        std::atomic<uint64_t>& wd = words_[sb * words_per_sb_ + i];
        // Acquire: as in assign_sb, the word before the descriptor check.
        uint64_t x = wd.load(std::memory_order_acquire);
        // FREE -> DRAINED by CAS: a claimer racing on the same word either wins (we see
        // LOANED and roll back) or fails. Only while the drain is still ours: a drainer taken
        // for dead while stopped (across pid namespaces) is rolled back by repair, and marks
        // in a superblock that is SMALL again would stay for good.
        const uint64_t mark = make_block(kBlockDrained, block_seq(x) + 1, 0, false);
        ok = desc_[sb].load(std::memory_order_acquire) == draining && block_state(x) == kBlockFree &&
             wd.compare_exchange_strong(x, mark, std::memory_order_acq_rel, std::memory_order_relaxed);
        if (ok) {
            last_i = i;
            last_mark = mark;
        }
        if (i == 0) FABRIC_CRASH_POINT("store.drain.marking");
    }
    uint64_t e = draining;
    if (ok && desc_[sb].compare_exchange_strong(e, next_sb(draining, kSbUnassigned, 0, 0), std::memory_order_release,
                                                std::memory_order_relaxed))
        return true;
    if (desc_[sb].load(std::memory_order_acquire) == draining) {
        rollback_drain(sb, draining);  // still our drain: every mark back to FREE, then SMALL
    } else if (last_i != UINT64_MAX) {
        // A reaper rolled our drain back while we were stopped (it took us for dead). At most
        // our latest mark came after its rollback (each mark re-checks the descriptor first):
        // that one word back, from exactly what we wrote; anything else is no longer ours.
        uint64_t m = last_mark;
        words_[sb * words_per_sb_ + last_i].compare_exchange_strong(
            m, make_block(kBlockFree, block_seq(last_mark) + 1, 0, false), std::memory_order_acq_rel,
            std::memory_order_relaxed);
    }
    return false;
}

void StoreCore::rollback_drain(uint32_t sb, uint64_t draining) noexcept {
    const uint32_t cls = sb_class(draining);
    if (sb >= sb_count_ || cls >= class_count_ || class_sizes_[cls] == 0) return;
    const uint64_t nb = class_blocks_[cls];
    for (uint64_t i = 0; i < nb; ++i) {
        std::atomic<uint64_t>& wd = words_[sb * words_per_sb_ + i];
        // Acquire: the word before the descriptor re-check, as in assign_sb.
        uint64_t x = wd.load(std::memory_order_acquire);
        // Only drain marks (owner 0; a run's release claim is DRAINED with its claimer), and
        // only while the drain rolled back is still the superblock's: a roller stopped here may
        // resume after the superblock was drained, reused and made a run.
        if (block_state(x) != kBlockDrained || block_owner(x) != 0) continue;
        if (desc_[sb].load(std::memory_order_acquire) != draining) return;
        wd.compare_exchange_strong(x, make_block(kBlockFree, block_seq(x) + 1, 0, false), std::memory_order_acq_rel,
                                   std::memory_order_relaxed);
    }
    uint64_t e = draining;
    // Release: the FREE words above are visible to claimers that acquire the descriptor.
    desc_[sb].compare_exchange_strong(e, next_sb(draining, kSbSmall, cls, 0), std::memory_order_release,
                                      std::memory_order_relaxed);
}

// ---- retire / free / pins -----------------------------------------------------------------

template <class F>
bool StoreCore::any_pin_record(F&& f) const noexcept {
    // Relaxed: the caller acquired a block word with PINNED set (directly, or through a batch
    // entry), and every pinner raised the high water before its release CAS of that bit (pin()).
    // Clamped: shared memory is not trusted.
    const uint64_t high = std::min<uint64_t>(hdr_->pin_high_water.load(std::memory_order_relaxed), pin_slots_);
    for (uint64_t i = 0; i < high; ++i) {
        // Acquire: pairs with pin()'s release CAS of the record. seq_cst: the retirer's half of
        // the unpin/retire handshake (see unpin()).
        const uint64_t p = pins_[i].load(std::memory_order_seq_cst);
        if (p != 0 && f(pin_block(p))) return true;
    }
    return false;
}

bool StoreCore::pinned_by_any(uint32_t block) const noexcept {
    return any_pin_record([block](uint32_t b) { return b == block; });
}

void StoreCore::free_retired_word(uint32_t block, uint64_t w) noexcept {
    // acq_rel: acquire orders us after the pinners' record releases we judged; release hands
    // the block to its next claimer. Fails if the word moved at all since `w` was read (a
    // paused freer frees nothing that was reused meanwhile).
    if (words_[block].compare_exchange_strong(w, make_block(kBlockFree, block_seq(w) + 1, 0, false),
                                              std::memory_order_acq_rel, std::memory_order_relaxed))
        after_free(block);
}

void StoreCore::maybe_free_retired(uint32_t block) noexcept {
    // seq_cst: the unpinner's half of the unpin/retire handshake (see unpin()).
    const uint64_t w = words_[block].load(std::memory_order_seq_cst);
    if (block_state(w) != kBlockRetired || !block_pinned(w)) return;
    // A RETIRED block gains no new pins (pin() requires a live state), so if no record
    // references it now, none will.
    if (pinned_by_any(block)) return;
    free_retired_word(block, w);
}

bool StoreCore::retired_entry_word(uint64_t entry, uint32_t& block, uint64_t& w) const noexcept {
    block = uint32_t(entry >> 32);
    if (block >= block_count()) return false;
    // Acquire: synchronises with whichever RETIRED CAS wrote the word (ours or, after the block
    // was freed, reused and retired again at a seq that wrapped round to the entry's, another
    // process's), so a scan of the pin records made after this comes after that retirement.
    w = words_[block].load(std::memory_order_acquire);
    // Anything else: freed (by an unpin, repair, another flush) and maybe reused since.
    return block_state(w) == kBlockRetired && block_pinned(w) && block_seq(w) == (entry & 0xffffffffULL) >> 1;
}

void StoreCore::enable_batched_frees() {
    if (!retired_) retired_ = std::make_shared<RetiredBatch>();
}

void StoreCore::free_retired_later(uint32_t block, uint64_t retired) noexcept {
    // A large object's run is freed at once: holding back a batch of them could hold most of
    // the heap, and its one scan is small next to its bytes.
    if (!retired_ || sb_state(desc_[sb_of(block)].load(std::memory_order_relaxed)) == kSbRunHead) {
        maybe_free_retired(block);
        return;
    }
    RetiredBatch& batch = *retired_;
    const uint64_t entry = (uint64_t(block) << 32) | (block_seq(retired) << 1) | 1;
    // A plain load and store, no locked increment: the cursor only spreads pushes over the
    // entries (the exchange below publishes). Threads of ours racing here may push into one
    // entry (the displaced one is handled below) or skip or repeat a flush (harmless).
    const uint64_t n = batch.cursor.load(std::memory_order_relaxed);
    batch.cursor.store(n + 1, std::memory_order_relaxed);
    // acq_rel: the release half carries our RETIRED CAS to the flush that takes this entry
    // (its scan must come after the retirement, see flush_retired); the acquire half does the
    // same for an entry we displace, which only another thread of ours can have left there.
    if (const uint64_t displaced = batch.entries[n % kRetiredBatch].exchange(entry, std::memory_order_acq_rel))
        maybe_free_retired_entry(displaced);
    if (n % kRetiredBatch == kRetiredBatch - 1) flush_retired();
}

void StoreCore::maybe_free_retired_entry(uint64_t entry) noexcept {
    // As flush_retired does for a batch: the word first, then the scan, then a CAS from it.
    uint32_t block = 0;
    uint64_t w = 0;
    if (retired_entry_word(entry, block, w) && !pinned_by_any(block)) free_retired_word(block, w);
}

void StoreCore::flush_retired() noexcept {
    if (!retired_) return;
    // (block, its RETIRED|PINNED word read before the scan), sorted by block.
    std::pair<uint32_t, uint64_t> live[kRetiredBatch];
    uint32_t n = 0;
    for (std::atomic<uint64_t>& e : retired_->entries) {
        if (e.load(std::memory_order_relaxed) == 0) continue;
        // acq_rel: acquires the pusher's RETIRED CAS (see free_retired_later).
        const uint64_t entry = e.exchange(0, std::memory_order_acq_rel);
        if (entry != 0 && retired_entry_word(entry, live[n].first, live[n].second)) ++n;
    }
    if (n == 0) return;
    std::sort(live, live + n);  // one binary search per pin record
    bool referenced[kRetiredBatch] = {};
    // One scan for the whole batch. It is sound for each block as maybe_free_retired's scan
    // is for one: a RETIRED block gains no pin, and every pinner that set its PINNED bit stored
    // its record before (release CAS; the RETIRED CAS acquired it, and the word loads above
    // carry that here), so a record we do not see now is gone for good.
    (void)any_pin_record([&](uint32_t b) {
        for (auto* it = std::lower_bound(live, live + n, std::pair<uint32_t, uint64_t>{b, 0});
             it != live + n && it->first == b; ++it)
            referenced[it - live] = true;
        return false;
    });
    for (uint32_t k = 0; k < n; ++k) {
        // A referenced block is freed by its last unpin (unpin -> maybe_free_retired), as it
        // would have been without the batch.
        if (referenced[k]) continue;
        FABRIC_PAUSE_POINT("store.retired.flush");
        free_retired_word(live[k].first, live[k].second);
    }
}

void StoreCore::retire(uint32_t block, uint64_t expect_seq, int depth) noexcept {
    if (block >= block_count() || depth > 8) return;
    bool pred_done = false;
    for (;;) {
        uint64_t w = words_[block].load(std::memory_order_acquire);
        if (block_seq(w) != (expect_seq & ((1ULL << 27) - 1))) return;  // already moved on by someone
        const uint64_t s = block_state(w);
        if (s != kBlockCommitting && s != kBlockPublished && s != kBlockRemoving) return;
        if (s == kBlockCommitting && !pred_done) {
            // Its writer died, stopped or is still running between linking it and retiring
            // what it replaced: do that first, or the predecessor would stay PUBLISHED and
            // unreferenced.
            retire_replaced(block, w, depth, true);
            pred_done = true;
            continue;
        }
        if (!block_pinned(w)) {
            // acq_rel: release publishes nothing new; acquire orders us after a pinner's CAS.
            if (words_[block].compare_exchange_strong(w, make_block(kBlockFree, block_seq(w) + 1, 0, false),
                                                      std::memory_order_acq_rel, std::memory_order_relaxed)) {
                after_free(block);
                return;
            }
            continue;
        }
        // Acquire: reads the pinners' word CASes, whose records were stored before them;
        // maybe_free_retired's scan then sees those records. seq_cst: the retirer's half of
        // the unpin/retire handshake (see unpin()).
        const uint64_t retired = make_block(kBlockRetired, block_seq(w) + 1, 0, true);
        if (words_[block].compare_exchange_strong(w, retired, std::memory_order_seq_cst, std::memory_order_relaxed)) {
            free_retired_later(block, retired);
            return;
        }
    }
}

template <class F>
bool StoreCore::any_link_in_window(uint32_t block, uint64_t hash, F&& f) const noexcept {
    const uint64_t home = hash & mask_;
    const uint64_t limit = std::min<uint64_t>(mask_ + 1, kMaxProbeBuckets);
    for (uint64_t p = 0; p < limit; ++p) {
        Bucket& bk = buckets_[(home + p) & mask_];
        for (uint32_t j = 0; j < kSlotsPerBucket; ++j) {
            // Acquire: pairs with the linking CAS (its block word is then at least COMMITTING).
            const uint64_t v = bk.slots[j].load(std::memory_order_acquire);
            if (!slot_empty(v) && slot_block(v) == block && f(bk.slots[j], v)) return true;
        }
    }
    return false;
}

bool StoreCore::linked_in_window(uint32_t block, uint64_t hash) const noexcept {
    return any_link_in_window(block, hash, [](std::atomic<uint64_t>&, uint64_t) { return true; });
}

void StoreCore::bump_links_of(uint32_t block, uint64_t hash) noexcept {
    any_link_in_window(block, hash, [](std::atomic<uint64_t>& slot, uint64_t v) {
        // One attempt: a slot that changed meanwhile fails a CAS prepared against the old
        // value just as the bump would. acq_rel: continues the release sequence of the value
        // we replace (readers still synchronise with its writer).
        slot.compare_exchange_strong(v, bump_slot(v), std::memory_order_acq_rel, std::memory_order_relaxed);
        return false;  // every link
    });
}

bool StoreCore::read_key(uint32_t block, uint64_t w, HeaderSnapshot& snap, StoreKey& key) const noexcept {
    if (!read_header(block, w, snap)) return false;
    key.len = snap.h.key_len;
    seqlock_copy_out(key.bytes, snap.loc.data + snap.trailer_offset, key.len);
    // Acquire: the header and key reads above happen before this re-read of the word.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (block_seq(words_[block].load(std::memory_order_relaxed)) != block_seq(w)) return false;
    key.hash = hash_store_key(key.bytes, key.len);
    return true;
}

void StoreCore::retire_replaced(uint32_t block, uint64_t w, int depth, bool linked_over) noexcept {
    if (depth > 8) return;
    // The block may have been unlinked, freed and reused since `w` was read (its finisher was
    // stopped meanwhile): its header would then name another key's live object.
    HeaderSnapshot snap;
    StoreKey k;
    if (!read_key(block, w, snap, k) || snap.h.replaces == 0) return;
    retire_unlinked(uint32_t(snap.h.replaces) - 1, snap.h.replaces >> 32, k, depth + 1, linked_over);
}

void StoreCore::retire_unlinked(uint32_t block, uint64_t expect_seq, const StoreKey& key, int depth,
                                bool linked_over) noexcept {
    // The life named by `expect_seq` was linked when the replacing writer looked it up (lookup
    // validates against the slot), and a life is linked at most once (a writer whose slot CAS
    // failed reverts to LOANED, a new life). So once no slot links it, it is garbage in any
    // state, COMMITTING included (its own writer's finish then finds the sequence moved).
    if (linked_over || (block < block_count() && !linked_in_window(block, key.hash))) retire(block, expect_seq, depth);
    // The word may have moved since the replacing writer's lookup: a remover's mark
    // (PUBLISHED -> REMOVING(it)) and its revert (-> PUBLISHED) after its slot CAS failed, or
    // the finish (COMMITTING -> PUBLISHED) of the writer that linked it. Its slot CAS fails
    // (or it already linked), so it never retires the block; the block is unlinked, so we
    // must, at whatever sequence it now has. Only while it is still this key's object,
    // PUBLISHED or REMOVING, and no slot of the key's probe window points at it: a word
    // unchanged across that scan cannot have been linked meanwhile (linking needs a
    // COMMITTING word), so nobody else can still reach it but a writer that also wants it gone.
    for (int tries = 0; tries < 8 && block < block_count(); ++tries) {
        const uint64_t w = words_[block].load(std::memory_order_acquire);
        if (block_state(w) != kBlockPublished && block_state(w) != kBlockRemoving) return;
        HeaderSnapshot snap;
        if (!read_header(block, w, snap) || !key_matches(snap, key.view())) return;
        if (linked_in_window(block, key.hash)) return;
        // Acquire: the header and slot reads above happen before this re-read of the word.
        std::atomic_thread_fence(std::memory_order_acquire);
        if (block_seq(words_[block].load(std::memory_order_relaxed)) != block_seq(w)) continue;
        retire(block, block_seq(w), depth);
    }
}

void StoreCore::finish_commit(uint32_t block, uint64_t w, int depth) noexcept {
    FABRIC_PAUSE_POINT("store.finish_commit.before_header");
    retire_replaced(block, w, depth, true);
    for (;;) {
        uint64_t cur = words_[block].load(std::memory_order_acquire);
        if (block_state(cur) != kBlockCommitting || block_seq(cur) != block_seq(w)) return;
        if (words_[block].compare_exchange_weak(cur, next_block(cur, kBlockPublished, 0), std::memory_order_release,
                                                std::memory_order_relaxed))
            return;
    }
}

Result<std::optional<uint32_t>> StoreCore::pin(const Found& f, OwnerToken me) {
    if (me == 0) return make_error(Errc::permission_denied, "pin: a read-only pool cannot record pins");
    // 1. The record first (owner + block), so the reaper can release it if we die.
    const uint64_t rec = make_pin(me, f.block);
    // Lowest free record first: keeps pin_high_water (the retirers' scan length) near the
    // number of pins held at once instead of the table size.
    uint32_t idx = UINT32_MAX;
    for (uint64_t i = 0; i < pin_slots_; ++i) {
        uint64_t z = 0;
        if (pins_[i].load(std::memory_order_relaxed) == 0 &&
            // Release: the record is visible before our word CAS below (see retire()).
            pins_[i].compare_exchange_strong(z, rec, std::memory_order_release, std::memory_order_relaxed)) {
            idx = uint32_t(i);
            break;
        }
    }
    if (idx == UINT32_MAX)
        return make_error(Errc::capacity_exceeded, "all " + std::to_string(pin_slots_) +
                                                       " pin records of the store are in use (release PinnedViews)");
    // Relaxed: published by the release CAS of the PINNED bit below (pinned_by_any's partner).
    // A crash before that CAS leaves a record no PINNED bit depends on (the reaper frees it).
    uint32_t high = hdr_->pin_high_water.load(std::memory_order_relaxed);
    while (high < idx + 1 &&
           !hdr_->pin_high_water.compare_exchange_weak(high, idx + 1, std::memory_order_relaxed)) {
    }
    FABRIC_CRASH_POINT("store.pin.after_record");
    // 2. Set PINNED on the exact block version we found, while it is still live.
    for (;;) {
        uint64_t cur = words_[f.block].load(std::memory_order_acquire);
        const uint64_t s = block_state(cur);
        if (block_seq(cur) != block_seq(f.word) ||
            (s != kBlockCommitting && s != kBlockPublished && s != kBlockRemoving)) {
            unpin(idx, f.block, me);
            return std::optional<uint32_t>{};
        }
        // acq_rel: release orders our record before the bit; the retirer acquires it.
        if (words_[f.block].compare_exchange_weak(cur, cur | kBlockPinnedBit, std::memory_order_acq_rel,
                                                  std::memory_order_relaxed))
            break;
    }
    FABRIC_CRASH_POINT("store.pin.after_mark");
    return std::optional<uint32_t>{idx};
}

void StoreCore::unpin(uint32_t record, uint32_t block, OwnerToken me) noexcept {
    if (record >= pin_slots_) return;
    uint64_t expect = make_pin(me, block);
    // Release: our reads of the block happen-before whoever frees it after seeing the record gone.
    // seq_cst, with maybe_free_retired's word load (ours), and the RETIRED CAS and record scan
    // (the retirer's): a store-buffering handshake. Each side writes, then reads what the other
    // wrote; with release/acquire alone both could read the old value (we see the block not
    // RETIRED yet, the retirer still sees our record) and nobody would free the block until
    // the next repair. In one total order of the four, one side sees the other.
    if (!pins_[record].compare_exchange_strong(expect, 0, std::memory_order_seq_cst, std::memory_order_relaxed))
        return;  // the reaper presumed us dead and released it
    FABRIC_PAUSE_POINT("store.unpin.after_release");
    maybe_free_retired(block);
}

// ---- table ---------------------------------------------------------------------------------

namespace {
[[gnu::cold, gnu::noinline]] Error damaged_entry_error(uint32_t block) {
    return make_error(Errc::corrupt, "store: block " + std::to_string(block) +
                                         " referenced by the table has an invalid object header, or one naming a "
                                         "key of another tag (written over after it was linked)");
}
}  // namespace

Result<std::optional<Found>> StoreCore::lookup(const StoreKey& key) const {
    const uint64_t home = key.hash & mask_;
    const uint8_t tag = key_tag(key.hash);
    for (int attempt = 0; attempt < kLookupAttempts; ++attempt) {
        bool restart = false;
        // A linked block of our tag whose header is damaged (check() reports it): not taken for
        // our key's entry, nor for the end of the search. Our key may be linked further on (a
        // damaged entry of another key would otherwise hide it: readers got `corrupt`, and
        // writers, taking that for absent, linked a second copy of a present key). Only when
        // the key is found nowhere is the lookup `corrupt`: the damaged entry may be the key's.
        uint32_t damaged = UINT32_MAX;
        for (uint64_t p = 0; p <= mask_ && !restart; ++p) {
            const uint64_t bi = (home + p) & mask_;
            Bucket& bk = buckets_[bi];
            for (uint32_t j = 0; j < kSlotsPerBucket; ++j) {
                // Acquire: pairs with publish()'s release CAS of the slot.
                const uint64_t v = bk.slots[j].load(std::memory_order_acquire);
                if (slot_empty(v) || slot_tag(v) != tag) continue;
                const uint32_t b = slot_block(v);
                if (b >= block_count()) continue;  // reported by check()
                FABRIC_PAUSE_POINT("store.lookup.after_slot");
                // The block word and the header are two more cache lines, usually cold (the
                // writer was another core): start both fetches before waiting on either.
                if (BlockLoc pre; locate(b, pre)) __builtin_prefetch(pre.data);
                // Acquire: pairs with the release store that made the block COMMITTING.
                const uint64_t w1 = words_[b].load(std::memory_order_acquire);
                const uint64_t s = block_state(w1);
                if (s != kBlockCommitting && s != kBlockPublished && s != kBlockRemoving) {
                    if (bk.slots[j].load(std::memory_order_acquire) != v) restart = true;
                    if (restart) break;
                    continue;
                }
                Found f;
                bool header_ok = read_header(b, w1, f.snap);
                const bool match = header_ok && key_matches(f.snap, key.view());
                // Another key under our tag: a tag collision, or a block whose header names a
                // key of another tag, which no put links here (a writer taken for dead while
                // stopped wrote it into a block reused meanwhile: docs/threat-model.md). The
                // second is damage: reported, never read as "absent" past it. One hash, only
                // on a collision of tags (1 in 256 occupied slots on the path).
                if (header_ok && !match && !header_key_has_tag(f.snap, tag)) header_ok = false;
                // Seqlock-style validation: the block was not freed and reused while we read.
                std::atomic_thread_fence(std::memory_order_acquire);
                const uint64_t w2 = words_[b].load(std::memory_order_relaxed);
                if (block_seq(w2) != block_seq(w1)) {
                    restart = true;
                    break;
                }
                if (!header_ok || !match) {
                    // The slot may have moved on: an overwrite linked our key's new block and the
                    // old one was freed and reused for another key between our slot load and our
                    // word load. Skipping the slot would then report a present key as absent
                    // (a worker dead-lettered "object not found" under churn in the soak).
                    if (bk.slots[j].load(std::memory_order_acquire) != v) {
                        restart = true;
                        break;
                    }
                    if (!header_ok && damaged == UINT32_MAX) damaged = b;
                    continue;
                }
                // The slot must still hold v: the block's life validated above is then the one
                // the slot linked all along (a linked block is never freed). Otherwise the block
                // may have been freed and taken by another writer of this key, COMMITTING and
                // not linked yet (maybe never): a reader would see a put that has not landed,
                // and a writer would decide on it and name it in its header's `replaces`.
                if (bk.slots[j].load(std::memory_order_acquire) != v) {
                    restart = true;
                    break;
                }
                f.slot = &bk.slots[j];
                f.slot_value = v;
                f.bucket = bi;
                f.slot_index = bi * kSlotsPerBucket + j;
                f.block = b;
                f.word = w1;
                return std::optional<Found>(f);
            }
            if (restart) break;
            // Acquire: pairs with insert()'s release increment before it claims further on.
            if (bk.overflow.load(std::memory_order_acquire) == 0) {
                if (damaged != UINT32_MAX) [[unlikely]] return damaged_entry_error(damaged);
                return std::optional<Found>{};
            }
        }
        if (!restart) {
            if (damaged != UINT32_MAX) [[unlikely]] return damaged_entry_error(damaged);
            return std::optional<Found>{};
        }
    }
    return make_error(Errc::busy, "store lookup restarted " + std::to_string(kLookupAttempts) +
                                      " times under concurrent overwrites");
}

bool StoreCore::copy_payload(const Found& f, uint8_t* out) const noexcept {
    return copy_payload_n(f, out, f.snap.h.size);
}

bool StoreCore::copy_payload_n(const Found& f, uint8_t* out, uint64_t n) const noexcept {
    seqlock_copy_out(out, f.snap.loc.data + kPayloadOffset, n);
    std::atomic_thread_fence(std::memory_order_acquire);
    return block_seq(words_[f.block].load(std::memory_order_relaxed)) == block_seq(f.word);
}

namespace {
/// Calls f(key, value) for the metadata pairs in `t` ({u16 key length, u16 value length, key,
/// value} each, `len` bytes, `pairs` of them: copied out of a block, untrusted) in order, until
/// f returns false or a pair runs past `len` (racy or corrupt: the caller validates the block).
template <typename F>
void for_each_meta_pair(const char* t, uint64_t len, uint32_t pairs, F&& f) {
    uint64_t off = 0;
    for (uint32_t i = 0; i < pairs; ++i) {
        if (off + 4 > len) return;
        uint16_t kl, vl;
        std::memcpy(&kl, t + off, 2);
        std::memcpy(&vl, t + off + 2, 2);
        if (off + 4 + kl + vl > len) return;
        if (!f(std::string_view(t + off + 4, kl), std::string_view(t + off + 4 + kl, vl))) return;
        off += 4 + kl + vl;
    }
}
}  // namespace

ObjectInfo StoreCore::info_of(const HeaderSnapshot& snap) const {
    ObjectInfo info;
    info_into(snap, info);
    return info;
}

void StoreCore::info_into(const HeaderSnapshot& snap, ObjectInfo& info) const {
    info.size = snap.h.size;
    info.crc32 = snap.h.crc32;
    info.version = snap.h.version;
    info.fence_token = snap.h.fence_token;
    info.created_wall_ns = snap.h.created_wall_ns;
    info.expires_wall_ns = snap.h.expires_mono_ns ? mono_to_wall_ns(snap.h.expires_mono_ns) : 0;
    if (snap.h.ctype_len == 0 && snap.h.meta_len == 0) {  // most objects: nothing to copy or parse
        info.content_type.clear();
        info.metadata.clear();
        return;
    }
    // One copy of content type + metadata out of the block (a seqlock read: the caller
    // validates the block afterwards), then parse the private copy.
    char trailer[kMaxContentTypeLength + kMaxMetadataBytes + 4 * kMaxMetaPairs];
    static_assert(sizeof trailer <= 16384, "the trailer copy lives on the stack");
    const uint64_t tlen = uint64_t(snap.h.ctype_len) + snap.h.meta_len;
    if (tlen > sizeof trailer) {  // impossible after read_header's checks
        info.content_type.clear();
        info.metadata.clear();
        return;
    }
    seqlock_copy_out(trailer, snap.loc.data + snap.trailer_offset + snap.h.key_len, tlen);
    const char* t = trailer;
    info.content_type.assign(t, snap.h.ctype_len);
    t += snap.h.ctype_len;
    // The pairs were written in the map's (sorted) order, so `info`'s entries are walked along
    // with them: an entry whose key comes again gets its value assigned in place (no node, no
    // string allocated once it is large enough), others are erased or inserted. The result is
    // what emplacing every pair into an empty map gives, whatever order the (untrusted) pairs
    // come in: a key inserted lands before `at`, so `at` only meets entries of the old map.
    auto& md = info.metadata;
    auto at = md.begin();
    for_each_meta_pair(t, snap.h.meta_len, snap.h.meta_pairs, [&](std::string_view key, std::string_view value) {
        while (at != md.end() && std::string_view(at->first) < key) at = md.erase(at);
        if (at != md.end() && std::string_view(at->first) == key) {
            at->second.assign(value);
            ++at;
        } else {
            md.emplace_hint(at, std::string(key), std::string(value));  // a duplicate key keeps its first value
        }
        return true;
    });
    md.erase(at, md.end());
}

void StoreCore::meta_into(const HeaderSnapshot& snap, StoredMeta& meta) const noexcept {
    meta.version = snap.h.version;
    meta.fence_token = snap.h.fence_token;
    static_assert(sizeof meta.bytes == kMaxMetadataBytes + 4 * kMaxMetaPairs, "read_header's bound on meta_len");
    if (snap.h.meta_len > sizeof meta.bytes) {  // impossible after read_header's checks
        meta.pairs = meta.len = 0;
        return;
    }
    meta.pairs = snap.h.meta_pairs;
    meta.len = snap.h.meta_len;
    seqlock_copy_out(meta.bytes, snap.loc.data + snap.trailer_offset + snap.h.key_len + snap.h.ctype_len, meta.len);
}

void StoredMeta::values(std::string_view a, std::optional<std::string_view>& value_a, std::string_view b,
                        std::optional<std::string_view>& value_b) const noexcept {
    value_a.reset();
    value_b.reset();
    for_each_meta_pair(bytes, len, pairs, [&](std::string_view k, std::string_view v) {
        if (!value_a && k == a) value_a = v;
        else if (!value_b && k == b) value_b = v;
        return !value_a || !value_b;
    });
}

Result<std::optional<Found>> StoreCore::find_locked(const StoreKey& key) const {
    // Under the key's lock its own writers wait, but overwriters of other keys of its tag on
    // its probe path do not (their stripes differ): a lookup they keep restarting says busy,
    // and so does this after a few, instead of spinning with the lock held (and on without it,
    // once it is taken over).
    for (uint32_t round = 0;; ++round) {
        auto r = lookup(key);
        if (r.ok()) return *r;
        // corrupt: the key is linked nowhere readable and a damaged entry of its tag is on its
        // path (maybe its own): writers take it for absent and link the key anew.
        if (r.code() != Errc::busy) return std::optional<Found>{};
        if (round + 1 == kFindLockedRounds) return std::move(r).error();
    }
}

// ---- stripe locks ----------------------------------------------------------------------------

std::atomic<uint64_t>* StoreCore::slot_at(uint64_t slot_index) const noexcept {
    if (slot_index >= table_slots()) return nullptr;  // a token from shared memory: not trusted
    return &buckets_[slot_index / kSlotsPerBucket].slots[slot_index % kSlotsPerBucket];
}

uint64_t StoreCore::fence_previous_holder(StripeLock& sl) const noexcept {
    for (;;) {
        // seq_cst, here and in announce(): the token is the one word both sides CAS, so the
        // previous holder either announced before our read (we bump that slot) or finds its
        // next announce failing after our CAS below.
        uint64_t token = sl.intent.load(std::memory_order_seq_cst);
        if (const uint64_t s1 = intent_slot_plus_one(token); s1 != 0) {
            if (std::atomic<uint64_t>* s = slot_at(s1 - 1)) {
                uint64_t v = s->load(std::memory_order_relaxed);
                // One attempt is enough: if the CAS fails the slot changed, and a changed slot
                // fails the previous holder's CAS just as the bump would. acq_rel: continues
                // the release sequence of the value we replace (readers still synchronise with
                // its writer).
                s->compare_exchange_strong(v, bump_slot(v), std::memory_order_acq_rel, std::memory_order_relaxed);
            }
        }
        const uint64_t closed = make_intent(intent_seq(token) + 1, 0);
        if (sl.intent.compare_exchange_strong(token, closed, std::memory_order_seq_cst, std::memory_order_relaxed))
            return closed;
    }
}

bool StoreCore::announce(StripeHold& hold, uint64_t slot_index) const noexcept {
    StripeLock& sl = hdr_->stripes[hold.stripe];
    const uint64_t next = make_intent(intent_seq(hold.intent) + 1, slot_index + 1);
    uint64_t expect = hold.intent;
    // seq_cst: see fence_previous_holder. Failure: a thief closed our token (we were stopped
    // past kStripeHoldLimitNs, or judged dead); it may have bumped our last announced slot.
    if (!sl.intent.compare_exchange_strong(expect, next, std::memory_order_seq_cst, std::memory_order_relaxed))
        return false;
    hold.intent = next;
    return true;
}

void StoreCore::prefetch_for_publish(const StoreKey& key) const noexcept {
    __builtin_prefetch(&buckets_[key.hash & mask_], 1);
    __builtin_prefetch(&hdr_->stripes[stripe_of(key.hash)], 1);
}

void StoreCore::prefetch_bucket(const StoreKey& key) const noexcept { __builtin_prefetch(&buckets_[key.hash & mask_]); }

namespace {
/// Asks for every cache line of [from, from + bytes): from the one holding `from` (a block of a
/// class that is not a multiple of 64 bytes starts inside a line) to the one holding the last byte.
void prefetch_lines(const std::byte* from, uint64_t bytes) noexcept {
    const auto first = reinterpret_cast<uintptr_t>(from) & ~uintptr_t(63);
    const auto end = reinterpret_cast<uintptr_t>(from + bytes);
    for (uintptr_t line = first; line < end; line += 64) __builtin_prefetch(reinterpret_cast<const void*>(line));
}
}  // namespace

void StoreCore::prefetch_object(uint32_t block, uint64_t size) const noexcept {
    BlockLoc loc;
    if (!locate(block, loc) || loc.capacity < kPayloadOffset) return;  // bounds-checked
    __builtin_prefetch(&words_[block]);
    const uint64_t payload = std::min(size, loc.capacity - kPayloadOffset);
    // A size at the hint's cap is not the object's own: its trailer is somewhere else.
    if (const uint64_t trailer = kPayloadOffset + align8(payload); trailer < loc.capacity && size < UINT32_MAX)
        __builtin_prefetch(loc.data + trailer);
    // Every line from the header's to the last of the prefetched payload.
    prefetch_lines(loc.data, kPayloadOffset + std::min(payload, kPrefetchPayloadBytes));
}

void StoreCore::prefetch_linked(const StoreKey& key) const noexcept {
    const Bucket& bk = buckets_[key.hash & mask_];
    const uint8_t tag = key_tag(key.hash);
    for (uint32_t j = 0; j < kSlotsPerBucket; ++j) {
        // Relaxed: a hint; lookup() loads the slot again with acquire and validates the block.
        const uint64_t v = bk.slots[j].load(std::memory_order_relaxed);
        if (slot_empty(v) || slot_tag(v) != tag) continue;
        const uint32_t b = slot_block(v);
        BlockLoc loc;
        if (b >= block_count() || !locate(b, loc)) return;  // bounds-checked, as lookup() does
        __builtin_prefetch(&words_[b]);
        prefetch_lines(loc.data, std::min(loc.capacity, kPrefetchLinkedBytes));
        return;
    }
}

Result<StoreCore::StripeHold> StoreCore::lock_stripe(uint64_t hash, OwnerToken me) const {
    StripeHold hold;
    hold.stripe = stripe_of(hash);
    hold.mine = thread_tag() | me;
    StripeLock& sl = hdr_->stripes[hold.stripe];
    uint64_t start = 0, seen_since = 0, next_probe = 0, backoff = 20 * kNsPerUs;
    uint64_t seen_holder = 0, seen_intent = 0;
    for (int spin = 0;; ++spin) {
        uint64_t held = sl.holder.load(std::memory_order_relaxed);
        if (held == 0) {
            // seq_cst: the acquire half pairs with unlock_stripe's release (the previous
            // holder's critical section happens-before ours); the total order with a thief's
            // steal makes the check below sound.
            if (!sl.holder.compare_exchange_weak(held, hold.mine, std::memory_order_seq_cst, std::memory_order_relaxed))
                continue;
            hold.intent = sl.intent.load(std::memory_order_seq_cst);
            // The token we start from must predate any steal of this acquisition, else our
            // first announce could succeed after the thief closed the token.
            if (sl.holder.load(std::memory_order_seq_cst) != hold.mine) continue;
            FABRIC_PAUSE_POINT("store.stripe.held");
            return hold;
        }
        if (spin < 32 && held != hold.mine) {
            cpu_relax();
            continue;
        }
        if (spin < 64 && held != hold.mine) {
            sched_yield();
            continue;
        }
        const uint64_t now = mono_now_ns();
        const uint64_t token = sl.intent.load(std::memory_order_relaxed);  // progress marker only
        if (start == 0 || held != seen_holder || token != seen_intent) {
            if (start == 0) {
                start = now;
                next_probe = now + 2 * kNsPerMs;
            }
            seen_holder = held;
            seen_intent = token;
            seen_since = now;
        }
        // Take the lock over (never judging anyone dead for it) when:
        //  - the word is this thread's own (left by an acquisition a thief fenced: we are not in
        //    a critical section, as no code path nests stripe locks);
        //  - the same holder has kept it, announcing nothing new, for kStripeHoldLimitNs: it is
        //    stopped or starved; its late writes will fail (fence_previous_holder), and if it was
        //    only slow it starts its operation again;
        //  - the registry says the holder is certainly dead (probed every 2 ms).
        bool take = held == hold.mine || now - seen_since >= kStripeHoldLimitNs;
        if (!take && now >= next_probe) {
            next_probe = now + 2 * kNsPerMs;
            const OwnerToken holder = OwnerToken(held);
            take = holder != me && pool_->registry().liveness(holder, MonoClock::from_ns(now)) == Liveness::certainly_dead;
        }
        if (take && sl.holder.compare_exchange_strong(held, hold.mine, std::memory_order_seq_cst,
                                                      std::memory_order_relaxed)) {
            FABRIC_PAUSE_POINT("store.stripe.stolen");
            hold.intent = fence_previous_holder(sl);
            // A thief of our own may have come while we were stopped between the steal and the
            // fence: then the lock is not ours, wait again.
            if (sl.holder.load(std::memory_order_seq_cst) != hold.mine) continue;
            hold.stolen = true;
            detail::pool_header(*pool_).stolen_locks.fetch_add(1, std::memory_order_relaxed);
            FABRIC_PAUSE_POINT("store.stripe.held");
            return hold;
        }
        if (now - start > kStripeWaitLimitNs)
            return make_error(Errc::busy, "store key stripe lock held by process token " +
                                              std::to_string(OwnerToken(held)) + ": not acquired in " +
                                              format_duration_ns(kStripeWaitLimitNs) + " (writers keep it busy)");
        nap_ns(backoff);
        backoff = std::min<uint64_t>(backoff * 2, kNsPerMs);
    }
}

void StoreCore::unlock_stripe(const StripeHold& hold) const noexcept {
    uint64_t expect = hold.mine;
    // Release: publishes our critical section to the next holder's acquire. Fails (harmlessly)
    // when a thief took the lock over.
    hdr_->stripes[hold.stripe].holder.compare_exchange_strong(expect, 0, std::memory_order_release,
                                                              std::memory_order_relaxed);
}

void StoreCore::dec_overflow(uint64_t home, uint64_t buckets) noexcept {
    // A count, not an end bucket: an insert that found the whole table full passed every
    // bucket, and its end would be its home again.
    for (uint64_t k = 0; k < buckets; ++k) {
        std::atomic<uint64_t>& o = buckets_[(home + k) & mask_].overflow;
        uint64_t v = o.load(std::memory_order_relaxed);
        // Never below zero: a count may only be too high (after a crash), never too low.
        while (v > 0 && !o.compare_exchange_weak(v, v - 1, std::memory_order_release, std::memory_order_relaxed)) {
        }
    }
}

namespace {
/// Unlocks a stripe on every path out of a critical section.
struct StripeUnlock {
    const StoreCore* core;
    const StoreCore::StripeHold* hold;
    ~StripeUnlock();
};

/// Moves our block `w` (COMMITTING or REMOVING of this version) back to `state` unless someone
/// moved it on (a thief retired it); keeps a PINNED bit a reader added meanwhile.
void revert_block(std::atomic<uint64_t>& wd, uint64_t ours, uint64_t state, uint64_t owner) noexcept {
    uint64_t c = wd.load(std::memory_order_relaxed);
    while (block_seq(c) == block_seq(ours) && block_state(c) == block_state(ours) &&
           !wd.compare_exchange_weak(c, next_block(c, state, owner), std::memory_order_release,
                                     std::memory_order_relaxed)) {
    }
}
}  // namespace

StripeUnlock::~StripeUnlock() { core->unlock_stripe(*hold); }

Result<uint64_t> StoreCore::publish(const PublishArgs& a, OwnerToken me) {
    if (auto overwritten = publish_overwrite(a, me)) return std::move(*overwritten);
    bool repaired = false;
    for (uint32_t relocks = 0;; ++relocks) {
        if (relocks > kMaxRelocks)
            return make_error(Errc::busy, "store put of '" + std::string(a.key->view()) + "': the key's lock was taken " +
                                              "over " + std::to_string(kMaxRelocks) + " times while this writer was stopped");
        Result<uint64_t> out = uint64_t(0);
        Locked step;
        {
            auto held = lock_stripe(a.key->hash, me);
            if (!held) return std::move(held).error();
            StripeHold hold = *held;
            StripeUnlock unlock{this, &hold};
            step = publish_locked(a, me, hold, out);
        }
        if (step != Locked::done) continue;
        // A full table may be full of expired objects: like a full heap (alloc), reclaim them
        // on the put path, then try once more. Outside the key's stripe: repair() removes
        // under the stripes of the keys it reclaims. The loan is still ours (publish_locked
        // turned it back into a loan).
        if (!out && out.code() == Errc::capacity_exceeded && !repaired) {
            repaired = true;
            --relocks;  // not a lock takeover
            (void)repair(mono_now_ns(), false, me, nullptr);
            continue;
        }
        return out;
    }
}

std::optional<Error> StoreCore::condition_refusal(const PutOptions& opt, const StoreKey& key,
                                                  const std::optional<Found>& f) const {
    const bool present = f && !(f->snap.h.expires_mono_ns && f->snap.h.expires_mono_ns <= mono_now_ns());
    const uint64_t cur_version = present ? f->snap.h.version : 0;
    const uint64_t cur_fence = present ? f->snap.h.fence_token : 0;
    switch (opt.condition) {
    case PutCondition::none: break;
    case PutCondition::if_absent:
        if (present)
            return make_error(Errc::conflict, "if-absent: '" + std::string(key.view()) + "' exists at version " +
                                                  std::to_string(cur_version));
        break;
    case PutCondition::if_version_equals:
        if (cur_version != opt.expected_version)
            return make_error(Errc::conflict, "if-version: '" + std::string(key.view()) + "' is at version " +
                                                  std::to_string(cur_version) + ", expected " +
                                                  std::to_string(opt.expected_version));
        break;
    case PutCondition::fence:
    case PutCondition::fence_if_version_equals:
        if (opt.fence_token < cur_fence)
            return make_error(Errc::stale_epoch, "fence token " + std::to_string(opt.fence_token) +
                                                     " is older than the stored token " + std::to_string(cur_fence) +
                                                     " of '" + std::string(key.view()) + "'");
        // Asked on every pass, after the object it is judged against was read and before the
        // slot CAS that publishes: a writer that stops after this check either publishes
        // before a newer owner's write to this key changes the slot, or finds its slot CAS
        // failing and comes back here.
        if (opt.fence_holds && !opt.fence_holds())
            return make_error(Errc::stale_epoch, "fence token " + std::to_string(opt.fence_token) + " of '" +
                                                     std::string(key.view()) +
                                                     "' no longer holds: a newer owner fenced it");
        if (opt.condition == PutCondition::fence_if_version_equals && cur_version != opt.expected_version)
            return make_error(Errc::conflict, "if-version: '" + std::string(key.view()) + "' is at version " +
                                                  std::to_string(cur_version) + ", expected " +
                                                  std::to_string(opt.expected_version));
        break;
    }
    return std::nullopt;
}

bool StoreCore::mark_committing(const PublishArgs& a, OwnerToken me, const std::optional<Found>& f, uint64_t version,
                                uint64_t& committing, Result<uint64_t>& out) const {
    BlockLoc loc;
    if (a.loc) {
        loc = *a.loc;
    } else if (!locate(a.block, loc)) {
        out = make_error(Errc::corrupt, "store: loaned block " + std::to_string(a.block) + " vanished");
        return false;
    }
    const PutOptions& opt = *a.options;
    std::atomic<uint64_t>& wd = words_[a.block];
    // Still our loan? (Repair takes a loan back only once our pid is gone, so this holds
    // while we run; checked before writing into the block all the same.)
    uint64_t w = wd.load(std::memory_order_relaxed);
    if (block_state(w) != kBlockLoaned || block_owner(w) != me) {
        out = make_error(Errc::corrupt, "store: our loan of block " + std::to_string(a.block) +
                                            " was taken over (were we presumed dead?)");
        return false;
    }
    // The fields only the publish knows, version through replaces (contiguous: asserted in
    // store_layout.h); write_header() filled the rest and they stay as they are.
    const uint64_t decided[kHeaderDecidedWords] = {
        version,
        opt.fence_token,
        wall_coarse_ns(),
        opt.ttl > Duration::zero() ? mono_now_ns() + to_ns(opt.ttl) : 0,
        f ? (block_seq(f->word) << 32) | (uint64_t(f->block) + 1) : 0,
    };
    seqlock_copy_in(loc.data + offsetof(ObjectHeader, version), decided, sizeof decided);
    committing = next_block(w, kBlockCommitting, me);
    // CAS from our exact loan, never a plain store over a word someone else may have
    // moved. Release: header and payload happen-before any reader that acquires this word.
    if (!wd.compare_exchange_strong(w, committing, std::memory_order_release, std::memory_order_relaxed)) {
        out = make_error(Errc::corrupt, "store: our loan of block " + std::to_string(a.block) +
                                            " was taken over (were we presumed dead?)");
        return false;
    }
    FABRIC_CRASH_POINT("store.put.after_mark");
    return true;
}

void StoreCore::finish_publish(const PublishArgs& a, const std::optional<Found>& f, uint64_t committing) noexcept {
    FABRIC_CRASH_POINT("store.put.after_link");
    if (f) retire_unlinked(f->block, block_seq(f->word), *a.key);
    FABRIC_CRASH_POINT("store.put.after_retire");
    // Our version only (same seq; a reader may have added PINNED): if a writer that linked
    // over us, or took our lock over, already replaced and freed this block, it stays theirs.
    std::atomic<uint64_t>& wd = words_[a.block];
    for (uint64_t c = wd.load(std::memory_order_relaxed);
         block_state(c) == kBlockCommitting && block_seq(c) == block_seq(committing);) {
        if (wd.compare_exchange_weak(c, next_block(c, kBlockPublished, 0), std::memory_order_release,
                                     std::memory_order_relaxed))
            break;
    }
}

bool StoreCore::expected_still_found(const Found& f, const StoreKey& key) const noexcept {
    // This core's slot, naming `key`'s tag and the block found (not a lookup through another
    // mapping, nor of another key)...
    if (slot_at(f.slot_index) != f.slot || slot_empty(f.slot_value) || slot_tag(f.slot_value) != key_tag(key.hash) ||
        slot_block(f.slot_value) != f.block || f.block >= block_count())
        return false;
    // ...whose block is in the life it was found in: the object found has not been unlinked
    // (and the block reused) since. The slot CAS alone would take a slot that came back to the
    // same value after 2^24 writes as unchanged, and a handler can run long enough for that
    // under a hot key; this bounds the window to the one a fresh lookup has. Its finish after
    // the lookup (COMMITTING -> PUBLISHED) is the one step it may have taken. Acquire: pairs
    // with the release CASes of the block word (finish_commit, retire).
    const uint64_t w = words_[f.block].load(std::memory_order_acquire);
    if (block_seq(w) == block_seq(f.word))
        return block_state(w) == kBlockPublished || block_state(w) == kBlockCommitting;
    return block_state(f.word) == kBlockCommitting && block_state(w) == kBlockPublished &&
           block_seq(w) == block_seq(next_block(f.word, kBlockPublished, 0));
}

std::optional<Result<uint64_t>> StoreCore::publish_overwrite(const PublishArgs& a, OwnerToken me) {
    const StoreKey& key = *a.key;
    const StripeLock& stripe = hdr_->stripes[stripe_of(key.hash)];
    // The caller's earlier lookup, as an extra first attempt (attempt -1).
    const bool expected_usable = a.expected && expected_still_found(*a.expected, key);
    for (int attempt = expected_usable ? -1 : 0; attempt < kOverwriteAttempts; ++attempt) {
        // A locked writer of this stripe goes first: overwriters that kept winning the slot
        // would make its CAS fail pass after pass while it holds the lock (announcing, so
        // never taken over), and every insert and remove of the stripe's keys would wait. A
        // hint, relaxed: the slot CAS below decides what lands.
        if (stripe.holder.load(std::memory_order_relaxed) != 0) return std::nullopt;
        Result<std::optional<Found>> found =
            attempt < 0 ? Result<std::optional<Found>>(std::optional<Found>(*a.expected)) : lookup(key);
        if (!found || !*found) return std::nullopt;  // absent (an insert), or busy/corrupt: under the lock
        const std::optional<Found>& f = *found;
        if (auto refusal = condition_refusal(*a.options, key, f)) {
            if (attempt < 0) continue;  // judged by an old read: only a fresh one may refuse
            return Result<uint64_t>(std::move(*refusal));
        }
        // The slot CAS below checks that the object read is still the key's current one, so
        // its version + 1 lands in order without the lock.
        Result<uint64_t> out = f->snap.h.version + 1;
        uint64_t committing = 0;
        if (!mark_committing(a, me, f, *out, committing, out)) return out;
        FABRIC_PAUSE_POINT("store.put.before_link");
        uint64_t expect = f->slot_value;
        // Release: pairs with lookup()'s acquire load of the slot. The atomic step that
        // publishes: it fails if anything wrote the slot since our lookup (an overwrite, a
        // remove, a locked writer's bump of a slot it fenced).
        if (f->slot->compare_exchange_strong(expect, make_slot(key_tag(key.hash), slot_gen(expect) + 1, a.block),
                                             std::memory_order_acq_rel, std::memory_order_relaxed)) {
            finish_publish(a, f, committing);
            return out;
        }
        // Back to a loan of ours; look again.
        revert_block(words_[a.block], committing, kBlockLoaned, me);
    }
    return std::nullopt;  // the key keeps changing under us: queue on its lock
}

StoreCore::Locked StoreCore::publish_locked(const PublishArgs& a, OwnerToken me, StripeHold& hold,
                                            Result<uint64_t>& out) {
    const StoreKey& key = *a.key;
    const uint64_t home = key.hash & mask_;
    const uint8_t tag = key_tag(key.hash);
    std::atomic<uint64_t>& wd = words_[a.block];
    for (;;) {
        auto found = find_locked(key);
        if (!found) {
            out = std::move(found).error();
            return Locked::done;
        }
        const std::optional<Found>& f = *found;
        if (auto refusal = condition_refusal(*a.options, key, f)) {
            out = std::move(*refusal);
            return Locked::done;
        }
        // Versions grow per key: an overwrite takes the old version + 1 (its slot CAS fails if
        // the slot changed since: a lock-free overwrite, or a thief's bump after it took our
        // lock over); a new key takes the store counter + 1, and remove() raises the counter
        // to the removed version first, so a re-put after a remove still grows. relaxed:
        // monotonicity comes from the RMW and the lock; the slot CAS publishes.
        const uint64_t version =
            f ? f->snap.h.version + 1 : hdr_->version_counter.fetch_add(1, std::memory_order_relaxed) + 1;
        uint64_t committing = 0;
        if (!mark_committing(a, me, f, version, committing, out)) return Locked::done;
        bool linked = false, full = false, lost = false;
        uint64_t passed = 0;
        if (f) {
            if (announce(hold, f->slot_index)) {
                FABRIC_PAUSE_POINT("store.put.before_link");
                uint64_t expect = f->slot_value;
                // Release: pairs with lookup()'s acquire load of the slot. This CAS is the atomic
                // step that publishes: it fails if anything changed since the condition was read,
                // including a thief's bump after it took our lock over.
                linked = f->slot->compare_exchange_strong(expect, make_slot(tag, slot_gen(expect) + 1, a.block),
                                                          std::memory_order_acq_rel, std::memory_order_relaxed);
            } else {
                lost = true;
            }
        } else {
            // `passed`: buckets we found full and counted in their overflow (undone on failure).
            const uint64_t limit = std::min<uint64_t>(mask_ + 1, kMaxProbeBuckets);
            while (passed < limit) {
                const uint64_t bi = (home + passed) & mask_;
                Bucket& bk = buckets_[bi];
                for (uint32_t j = 0; j < kSlotsPerBucket && !linked && !lost; ++j) {
                    uint64_t cur = bk.slots[j].load(std::memory_order_relaxed);
                    if (!slot_empty(cur)) continue;
                    if (!announce(hold, bi * kSlotsPerBucket + j)) {
                        lost = true;
                        break;
                    }
                    FABRIC_PAUSE_POINT("store.put.before_link");
                    // Claims the empty slot only if nobody wrote it since our load, a thief's
                    // bump included: an insert decided before a takeover never lands beside the
                    // thief's own insert of the same key.
                    linked = bk.slots[j].compare_exchange_strong(cur, make_slot(tag, slot_gen(cur) + 1, a.block),
                                                                 std::memory_order_acq_rel, std::memory_order_relaxed);
                }
                if (linked || lost) break;
                // Release: pairs with lookup()'s acquire; counted before we claim further on.
                bk.overflow.fetch_add(1, std::memory_order_release);
                FABRIC_CRASH_POINT("store.put.after_overflow");
                ++passed;
            }
            if (!linked) {
                full = !lost;
                dec_overflow(home, passed);
            }
        }
        if (!linked) {
            // Back to a loan of ours: the caller retries, or frees it.
            revert_block(wd, committing, kBlockLoaned, me);
            if (lost) return Locked::relock;  // a thief fenced us: start over under the lock again
            if (full) {
                out = make_error(Errc::capacity_exceeded,
                                 "store table full: no free slot within " +
                                     std::to_string(std::min<uint64_t>(mask_ + 1, kMaxProbeBuckets) * kSlotsPerBucket) +
                                     " probes of " + std::to_string(table_slots()) + " entries (raise with --table-entries)");
                return Locked::done;
            }
            continue;
        }
        finish_publish(a, f, committing);
        out = version;
        return Locked::done;
    }
}

Result<bool> StoreCore::remove(const StoreKey& key, std::optional<uint64_t> if_version, OwnerToken me,
                               std::optional<OnlyBlock> only_block) {
    for (uint32_t relocks = 0;; ++relocks) {
        if (relocks > kMaxRelocks)
            return make_error(Errc::busy, "store remove of '" + std::string(key.view()) + "': the key's lock was taken " +
                                              "over " + std::to_string(kMaxRelocks) + " times while this writer was stopped");
        auto held = lock_stripe(key.hash, me);
        if (!held) return std::move(held).error();
        StripeHold hold = *held;
        StripeUnlock unlock{this, &hold};
        Result<bool> out = false;
        if (remove_locked(key, if_version, me, only_block, hold, out) == Locked::done) return out;
    }
}

StoreCore::Locked StoreCore::remove_locked(const StoreKey& key, std::optional<uint64_t> if_version, OwnerToken me,
                                           std::optional<OnlyBlock> only_block, StripeHold& hold, Result<bool>& out) {
    for (;;) {
        auto found = find_locked(key);
        if (!found) {
            out = std::move(found).error();
            return Locked::done;
        }
        const std::optional<Found>& f = *found;
        // only_block is the TTL reclaim's: that life of that block (it may have been freed and
        // reused by a newer put of the key since the reclaim saw it expired).
        if (!f || (only_block && (f->block != only_block->block || block_seq(f->word) != only_block->seq))) {
            out = false;
            return Locked::done;
        }
        const bool expired = f->snap.h.expires_mono_ns && f->snap.h.expires_mono_ns <= mono_now_ns();
        if (if_version && (expired || f->snap.h.version != *if_version)) {
            out = make_error(Errc::conflict, "remove if-version: '" + std::string(key.view()) + "' is at version " +
                                                 std::to_string(expired ? 0 : f->snap.h.version) + ", expected " +
                                                 std::to_string(*if_version));
            return Locked::done;
        }
        std::atomic<uint64_t>& wd = words_[f->block];
        uint64_t w = wd.load(std::memory_order_acquire);
        if (block_seq(w) != block_seq(f->word)) continue;
        if (block_state(w) == kBlockCommitting) {  // its writer died or was fenced before finishing
            finish_commit(f->block, w, 0);
            continue;
        }
        // From PUBLISHED, or from REMOVING of a remover whose lock we took over (its slot CAS
        // is fenced, so the removal is ours to finish).
        const uint64_t removing = next_block(w, kBlockRemoving, me);
        if (!wd.compare_exchange_strong(w, removing, std::memory_order_acq_rel, std::memory_order_relaxed)) continue;
        FABRIC_CRASH_POINT("store.remove.after_mark");
        // Before the key can vanish: a later put of it must get a higher version.
        uint64_t vc = hdr_->version_counter.load(std::memory_order_relaxed);
        while (vc < f->snap.h.version &&
               !hdr_->version_counter.compare_exchange_weak(vc, f->snap.h.version, std::memory_order_relaxed)) {
        }
        if (!announce(hold, f->slot_index)) {
            revert_block(wd, removing, kBlockPublished, 0);
            return Locked::relock;
        }
        FABRIC_PAUSE_POINT("store.remove.before_unlink");
        uint64_t expect = f->slot_value;
        if (!f->slot->compare_exchange_strong(expect, make_empty_slot(slot_gen(expect) + 1), std::memory_order_acq_rel,
                                              std::memory_order_relaxed)) {
            revert_block(wd, removing, kBlockPublished, 0);
            continue;
        }
        dec_overflow(key.hash & mask_, (f->bucket - (key.hash & mask_)) & mask_);  // the buckets before its own
        FABRIC_CRASH_POINT("store.remove.after_unlink");
        retire_unlinked(f->block, block_seq(removing), key);
        out = !expired;
        return Locked::done;
    }
}

// ---- maintenance -------------------------------------------------------------------------

bool StoreCore::sb_live_owner(OwnerToken t, uint64_t now, std::map<OwnerToken, bool>& cache) const {
    if (t == 0) return false;
    if (t == pool_->self()) return true;
    auto it = cache.find(t);
    if (it != cache.end()) return it->second;
    // By pid, not by heartbeat: everything repair() takes back (loans, pins, blocks and
    // superblocks mid-transition) is memory its owner may still write or read with plain
    // accesses when it resumes, which no CAS could fence. A stopped or hung owner keeps it.
    const bool alive = pool_->registry().process_liveness(t, MonoClock::from_ns(now)) != Liveness::certainly_dead;
    cache.emplace(t, alive);
    return alive;
}

RepairCounts StoreCore::repair(uint64_t now, bool dry, OwnerToken me, std::vector<std::string>* notes) {
    RepairPass pass;
    pass.now = now;
    pass.dry = dry || me == 0;  // without a registration nothing may be written
    pass.me = me;
    pass.notes = notes;
    release_dead_pins(pass);
    reset_dead_superblock_transitions(pass);
    repair_dead_blocks(pass);
    reclaim_expired(pass);
    // What the steps above retired with PINNED set went into our batch (a handle's core):
    // free it now, or the drain below and the allocator that called us would not see it.
    if (!pass.dry) flush_retired();
    if (!pass.dry) drain_empty_superblocks(me);
    return pass.counts;
}

uint64_t StoreCore::release_dead_pin_records(uint64_t now, OwnerToken me) {
    if (me == 0) return 0;
    RepairPass pass;
    pass.now = now;
    pass.me = me;
    release_dead_pins(pass);
    flush_retired();  // as repair(): what the releases retired with PINNED set went into our batch
    return pass.counts.pins;
}

/// Step 1: pin records of dead pinners.
void StoreCore::release_dead_pins(RepairPass& pass) {
    for (uint64_t i = 0; i < pin_slots_; ++i) {
        uint64_t p = pins_[i].load(std::memory_order_acquire);
        if (p == 0 || sb_live_owner(pin_owner(p), pass.now, pass.live)) continue;
        ++pass.counts.pins;
        pass.note("store: release pin of dead owner " + std::to_string(pin_owner(p)) + " on block " +
                  std::to_string(pin_block(p)));
        if (pass.dry) continue;
        FABRIC_PAUSE_POINT("store.repair.pin");
        // seq_cst: the unpinner's half of the unpin/retire handshake, done for the dead (unpin()).
        if (pins_[i].compare_exchange_strong(p, 0, std::memory_order_seq_cst, std::memory_order_relaxed)) {
            detail::count(*pool_, CounterId::store_pins_released, 1);
            if (pin_block(p) < block_count()) maybe_free_retired(pin_block(p));
        }
    }
}

/// Step 2: superblock transitions of dead owners, and run tails no run covers.
void StoreCore::reset_dead_superblock_transitions(RepairPass& pass) {
    for (uint32_t s = 0; s < sb_count_; ++s) {
        uint64_t d = desc_[s].load(std::memory_order_acquire);
        const uint64_t st = sb_state(d);
        if ((st == kSbAssigning || st == kSbDraining || st == kSbClaiming) &&
            !sb_live_owner(OwnerToken(sb_aux(d)), pass.now, pass.live)) {
            ++pass.counts.superblocks;
            pass.note("store: reset superblock " + std::to_string(s) + " left mid-transition by dead owner " +
                      std::to_string(sb_aux(d)));
            if (pass.dry) continue;
            if (st == kSbDraining)
                rollback_drain(s, d);
            else
                desc_[s].compare_exchange_strong(d, next_sb(d, kSbUnassigned, 0, 0), std::memory_order_release,
                                                 std::memory_order_relaxed);
        } else if (st == kSbRunTail) {
            const uint64_t h = sb_aux(d);
            const uint64_t hd = h < sb_count_ ? desc_[h].load(std::memory_order_acquire) : 0;
            const bool covered =
                h < s && ((sb_state(hd) == kSbRunHead && h + sb_aux(hd) > s) ||
                          (sb_state(hd) == kSbClaiming && sb_live_owner(OwnerToken(sb_aux(hd)), pass.now, pass.live)));
            if (covered) continue;
            ++pass.counts.superblocks;
            pass.note("store: reset orphan run superblock " + std::to_string(s));
            if (!pass.dry)
                desc_[s].compare_exchange_strong(d, next_sb(d, kSbUnassigned, 0, 0), std::memory_order_release,
                                                 std::memory_order_relaxed);
        }
    }
}

/// Step 3: block words: dead loans, half-done commits/removes, retired blocks nobody pins.
void StoreCore::repair_dead_blocks(RepairPass& pass) {
    for (uint32_t s = 0; s < sb_count_; ++s) {
        const uint64_t d = desc_[s].load(std::memory_order_acquire);
        uint64_t nb = 0;
        if (sb_state(d) == kSbSmall && sb_class(d) < class_count_)
            nb = class_blocks_[sb_class(d)];
        else if (sb_state(d) == kSbRunHead)
            nb = 1;
        for (uint64_t i = 0; i < nb; ++i) {
            const uint32_t b = uint32_t(s * words_per_sb_ + i);
            if (sb_state(d) == kSbRunHead) FABRIC_PAUSE_POINT("store.repair.run_head");
            uint64_t w = words_[b].load(std::memory_order_acquire);
            const uint64_t st = block_state(w);
            if (st == kBlockFree && sb_state(d) == kSbRunHead) {
                if (!pass.dry) release_run(s);
                continue;
            }
            if (is_run_release_claim(w) && sb_state(d) == kSbRunHead) {
                // A release claimed by a freer that died before it unassigned the run. One
                // that is only stopped finishes it itself (and a second claimant would race it).
                if (sb_live_owner(OwnerToken(block_owner(w)), pass.now, pass.live)) continue;
                ++pass.counts.superblocks;
                pass.note("store: finish the release of run superblock " + std::to_string(s) +
                          " begun by dead owner " + std::to_string(block_owner(w)));
                if (pass.dry) continue;
                // Claimed again, by us, from the exact word: one repairer finishes it.
                const uint64_t ours = run_release_claim(w, pass.me);
                if (pass.me != 0 && words_[b].compare_exchange_strong(w, ours, std::memory_order_acq_rel,
                                                                      std::memory_order_relaxed)) {
                    FABRIC_PAUSE_POINT("store.repair.run_claimed");
                    finish_run_release(s, ours);
                }
                continue;
            }
            if (st == kBlockRetired) {
                if (!pass.dry) maybe_free_retired(b);
                continue;
            }
            if (st != kBlockLoaned && st != kBlockCommitting && st != kBlockRemoving) continue;
            if (sb_live_owner(OwnerToken(block_owner(w)), pass.now, pass.live)) continue;
            if (st != kBlockLoaned) {
                finish_dead_write(pass, b, w);
                continue;
            }
            ++pass.counts.loans;
            pass.note("store: free block " + std::to_string(b) + " loaned by dead owner " +
                      std::to_string(block_owner(w)));
            if (pass.dry) continue;
            FABRIC_PAUSE_POINT("store.repair.loan");
            if (words_[b].compare_exchange_strong(w, make_block(kBlockFree, block_seq(w) + 1, 0, false),
                                                  std::memory_order_release, std::memory_order_relaxed)) {
                detail::count(*pool_, CounterId::store_loans_reclaimed, 1);
                after_free(b);
            }
        }
    }
}

void StoreCore::finish_dead_write(RepairPass& pass, uint32_t b, uint64_t w) {
    const uint64_t st = block_state(w);
    HeaderSnapshot snap;
    StoreKey k;
    if (!read_key(b, w, snap, k)) return;  // a damaged header (reported by check()), or b moved on
    ++pass.counts.blocks;
    pass.note(std::string("store: finish ") + (st == kBlockCommitting ? "commit" : "remove") + " of '" +
              std::string(k.view()) + "' left by dead owner " + std::to_string(block_owner(w)));
    if (pass.dry) return;
    auto held = lock_stripe(k.hash, pass.me);
    if (!held) {
        pass.counts.incomplete = true;  // the next pass that walks finishes it
        return;
    }
    // Every write below is a CAS from the exact word read under the lock, so a repairer
    // whose lock is taken over while it is stopped changes nothing that moved on. Linked means
    // a slot of the key's probe window points at b: asked of the slots themselves, not of a
    // lookup, which a damaged entry of another key on the probe path turns into "absent".
    // A COMMITTING block of an overwrite, its writer taken for dead: that writer may be only
    // stopped (judged by its heartbeat in another pid namespace) before its lock-free slot
    // CAS, prepared against the slot that links the object it replaces. Were we to free the
    // block while that slot stays as it was, the resumed writer would link the block, reused
    // by then for another key, over its key's object. The slot is bumped first, so that CAS
    // fails; a CAS that landed before the bump is seen as linked below and published.
    if (st == kBlockCommitting && snap.h.replaces != 0 && uint32_t(snap.h.replaces) - 1 < block_count())
        bump_links_of(uint32_t(snap.h.replaces) - 1, k.hash);
    const bool linked = linked_in_window(b, k.hash);
    uint64_t cur = words_[b].load(std::memory_order_acquire);
    if (block_seq(cur) == block_seq(w)) {
        if (linked && st == kBlockCommitting) {
            finish_commit(b, cur, 0);
        } else if (linked) {  // REMOVING never unlinked: the remove did not happen
            words_[b].compare_exchange_strong(cur, next_block(cur, kBlockPublished, 0), std::memory_order_release,
                                              std::memory_order_relaxed);
        } else if (st == kBlockCommitting) {
            // Not linked now: never linked (its predecessor is still current, and stays), or
            // linked and already replaced by an overwrite whose writer has not retired it yet
            // (that writer's retire then finds the sequence moved). The predecessor is retired
            // only if no slot links it.
            retire_replaced(b, cur, 0, false);
            if (!block_pinned(cur) &&
                words_[b].compare_exchange_strong(cur, make_block(kBlockFree, block_seq(cur) + 1, 0, false),
                                                  std::memory_order_release, std::memory_order_relaxed))
                after_free(b);
        } else {
            retire(b, block_seq(cur), 0);
        }
    }
    unlock_stripe(*held);
}

/// Step 4: expired objects.
void StoreCore::reclaim_expired(RepairPass& pass) {
    for (uint64_t bi = 0; bi <= mask_; ++bi) {
        for (uint32_t j = 0; j < kSlotsPerBucket; ++j) {
            const uint64_t v = buckets_[bi].slots[j].load(std::memory_order_acquire);
            if (slot_empty(v) || slot_block(v) >= block_count()) continue;
            const uint32_t b = slot_block(v);
            const uint64_t w = words_[b].load(std::memory_order_acquire);
            if (block_state(w) != kBlockPublished) continue;
            HeaderSnapshot snap;
            StoreKey k;
            if (!read_key(b, w, snap, k) || snap.h.expires_mono_ns == 0 || snap.h.expires_mono_ns > pass.now) continue;
            ++pass.counts.expired;
            pass.note("store: reclaim expired object '" + std::string(k.view()) + "'");
            FABRIC_PAUSE_POINT("store.reclaim.before_remove");
            if (!pass.dry) (void)remove(k, std::nullopt, pass.me, OnlyBlock{b, block_seq(w)});
        }
    }
}

/// Step 5: empty small-object superblocks back to the unassigned pool.
void StoreCore::drain_empty_superblocks(OwnerToken me) {
    for (uint32_t s = 0; s < sb_count_; ++s) {
        const uint64_t d = desc_[s].load(std::memory_order_acquire);
        if (sb_state(d) != kSbSmall || sb_class(d) >= class_count_) continue;
        const uint64_t nb = class_blocks_[sb_class(d)];
        bool empty = true;
        for (uint64_t i = 0; i < nb && empty; ++i)
            empty = block_state(words_[s * words_per_sb_ + i].load(std::memory_order_relaxed)) == kBlockFree;
        if (empty && try_drain(s, me)) {
            for (uint32_t c = 0; c < class_count_; ++c) {
                uint32_t cur = s;  // forget a cursor or a spare that pointed here
                hdr_->class_cursor[c].compare_exchange_strong(cur, UINT32_MAX, std::memory_order_relaxed);
                uint32_t spare = s + 1;
                hdr_->class_spare[c].compare_exchange_strong(spare, 0, std::memory_order_relaxed);
            }
        }
    }
}

void StoreCore::check(std::vector<std::string>& violations, std::vector<std::string>& in_progress) const {
    std::vector<bool> linked(block_count(), false);
    for (uint64_t bi = 0; bi <= mask_; ++bi) {
        for (uint32_t j = 0; j < kSlotsPerBucket; ++j) {
            const uint64_t v = buckets_[bi].slots[j].load(std::memory_order_acquire);
            if (slot_empty(v)) continue;
            const uint32_t b = slot_block(v);
            if (b < block_count()) linked[b] = true;
            if (b >= block_count()) {
                violations.push_back("violation: store slot " + std::to_string(bi) + "." + std::to_string(j) +
                                     " points to block " + std::to_string(b) + " outside the heap (" +
                                     std::to_string(block_count()) + " blocks)");
                continue;
            }
            const uint64_t w = words_[b].load(std::memory_order_acquire);
            const uint64_t s = block_state(w);
            if (s != kBlockPublished && s != kBlockCommitting && s != kBlockRemoving) {
                violations.push_back("violation: store slot " + std::to_string(bi) + "." + std::to_string(j) +
                                     " points to block " + std::to_string(b) + " in state " + std::to_string(s));
                continue;
            }
            HeaderSnapshot snap;
            const bool header_ok = read_header(b, w, snap);
            const bool tag_ok = header_ok && header_key_has_tag(snap, slot_tag(v));
            if (block_seq(words_[b].load(std::memory_order_acquire)) != block_seq(w)) continue;  // reused meanwhile
            // Still linked by this slot (as lookup re-checks): on a live pool an overwrite may
            // have unlinked the block and it been reused since the slot load.
            if (buckets_[bi].slots[j].load(std::memory_order_acquire) != v) continue;
            if (!header_ok)
                violations.push_back("violation: store block " + std::to_string(b) + " is published with a bad header");
            else if (!tag_ok)
                violations.push_back("violation: store slot " + std::to_string(bi) + "." + std::to_string(j) +
                                     " links block " + std::to_string(b) + ", whose header names a key of another "
                                     "tag (written over after the slot linked it)");
        }
    }
    // PUBLISHED blocks no slot pointed at during the scan above, and what COMMITTING blocks replace.
    std::vector<std::pair<uint32_t, uint64_t>> unlinked;
    std::vector<uint64_t> replaced;
    for (uint32_t s = 0; s < sb_count_; ++s) {
        const uint64_t d = desc_[s].load(std::memory_order_acquire);
        const uint64_t st = sb_state(d);
        if (st == kSbAssigning || st == kSbDraining || st == kSbClaiming)
            in_progress.push_back("in progress: store superblock " + std::to_string(s) + " state " +
                                  std::to_string(st) + " by owner " + std::to_string(sb_aux(d)));
        else if (st > kSbRunTail)
            violations.push_back("violation: store superblock " + std::to_string(s) + " descriptor " + hex(d));
        else if (st == kSbSmall && sb_class(d) >= class_count_)
            violations.push_back("violation: store superblock " + std::to_string(s) + " has size class " +
                                 std::to_string(sb_class(d)));
        else if (st == kSbRunHead && (sb_aux(d) == 0 || s + sb_aux(d) > sb_count_))
            violations.push_back("violation: store run at superblock " + std::to_string(s) + " of length " +
                                 std::to_string(sb_aux(d)) + " overruns the heap");
        else if (st == kSbRunHead) {
            // Every superblock a run covers is its tail while its head block is in use. With the
            // head block FREE a release is under way (tails go first), which is in progress.
            const uint64_t hw = words_[s * words_per_sb_].load(std::memory_order_relaxed);
            const bool head_free = block_state(hw) == kBlockFree || is_run_release_claim(hw);
            for (uint64_t j = s + 1; j < s + sb_aux(d); ++j) {
                const uint64_t t = desc_[j].load(std::memory_order_acquire);
                if (sb_state(t) == kSbRunTail && sb_aux(t) == s) continue;
                (head_free ? in_progress : violations)
                    .push_back(std::string(head_free ? "in progress" : "violation") + ": store run at superblock " +
                               std::to_string(s) + " of length " + std::to_string(sb_aux(d)) + ": superblock " +
                               std::to_string(j) + " is not its tail (descriptor " + hex(t) + ")");
            }
        }
        uint64_t nb = 0;
        if (st == kSbSmall && sb_class(d) < class_count_) nb = class_blocks_[sb_class(d)];
        if (st == kSbRunHead) nb = 1;
        for (uint64_t i = 0; i < nb; ++i) {
            const uint64_t w = words_[s * words_per_sb_ + i].load(std::memory_order_relaxed);
            const uint64_t bs = block_state(w);
            if (bs == kBlockPublished && !linked[s * words_per_sb_ + i])
                unlinked.push_back({uint32_t(s * words_per_sb_ + i), w});
            if (bs == kBlockLoaned || bs == kBlockCommitting || bs == kBlockRemoving)
                in_progress.push_back("in progress: store block " + std::to_string(s * words_per_sb_ + i) +
                                      " state " + std::to_string(bs) + " owner " + std::to_string(block_owner(w)));
            if (bs == kBlockCommitting) {
                HeaderSnapshot snap;
                if (read_header(uint32_t(s * words_per_sb_ + i), w, snap) && snap.h.replaces != 0)
                    replaced.push_back(snap.h.replaces);
            }
            else if (is_run_release_claim(w) && st == kSbRunHead)
                in_progress.push_back("in progress: store run at superblock " + std::to_string(s) +
                                      " being released by owner " + std::to_string(block_owner(w)));
            else if (bs == kBlockNone || bs == kBlockDrained)
                violations.push_back("violation: store block " + std::to_string(s * words_per_sb_ + i) +
                                     " of an assigned superblock in state " + std::to_string(bs));
        }
    }
    // A PUBLISHED block that no slot points at is reachable by nobody and freed by nobody: a
    // leak, unless a writer is between its slot CAS and retiring it (its new block, COMMITTING
    // until then, names it in `replaces`). Looked at again, since a block published after the
    // slot scan above was linked after it.
    for (const auto& [b, w] : unlinked) {
        const uint64_t now = words_[b].load(std::memory_order_acquire);
        if (now != w) continue;
        HeaderSnapshot snap;
        if (!read_header(b, w, snap)) continue;  // reported elsewhere if it stays so
        bool still = true;
        for (uint64_t bi = 0; bi <= mask_ && still; ++bi)
            for (uint32_t j = 0; j < kSlotsPerBucket && still; ++j) {
                const uint64_t v = buckets_[bi].slots[j].load(std::memory_order_acquire);
                still = slot_empty(v) || slot_block(v) != b;
            }
        if (!still || words_[b].load(std::memory_order_acquire) != w) continue;
        // By index, not sequence: a remover whose lock was taken over may have moved the
        // sequence since the replacing writer's lookup (retire_unlinked handles that).
        const bool being_replaced = std::any_of(replaced.begin(), replaced.end(),
                                                [block = b](uint64_t r) { return uint32_t(r) == uint64_t(block) + 1; });
        (being_replaced ? in_progress : violations)
            .push_back(std::string(being_replaced ? "in progress" : "violation") + ": store block " +
                       std::to_string(b) + " is published but no slot points at it (" +
                       (being_replaced ? "its replacement is committing" : "leaked: never reclaimed") + ")");
    }
    for (uint64_t i = 0; i < pin_slots_; ++i) {
        const uint64_t p = pins_[i].load(std::memory_order_relaxed);
        if (p == 0) continue;
        if (pin_block(p) >= block_count())
            violations.push_back("violation: store pin record " + std::to_string(i) + " names block " +
                                 std::to_string(pin_block(p)) + " outside the heap");
        else
            in_progress.push_back("in progress: store pin of block " + std::to_string(pin_block(p)) + " by owner " +
                                  std::to_string(pin_owner(p)));
    }
    for (uint32_t i = 0; i < kStripes; ++i) {
        const uint64_t l = hdr_->stripes[i].holder.load(std::memory_order_relaxed);
        if (l) in_progress.push_back("in progress: store stripe lock " + std::to_string(i) + " held by owner " +
                                     std::to_string(OwnerToken(l)));
    }
}

StoreCore::Usage StoreCore::usage() const {
    Usage u;
    uint64_t run = 0;
    uint64_t largest_block = 0;
    for (uint32_t s = 0; s < sb_count_; ++s) {
        const uint64_t d = desc_[s].load(std::memory_order_acquire);
        const uint64_t st = sb_state(d);
        if (st == kSbUnassigned) {
            ++u.superblocks_free;
            run += sb_bytes_;
            u.largest_free_extent = std::max(u.largest_free_extent, run);
            continue;
        }
        run = 0;
        if (st == kSbRunHead) {
            ++u.superblocks_run;
            u.used_bytes += sb_aux(d) * sb_bytes_;
            if (block_state(words_[s * words_per_sb_].load(std::memory_order_relaxed)) == kBlockLoaned) ++u.loans;
        } else if (st == kSbSmall && sb_class(d) < class_count_) {
            ++u.superblocks_small;
            const uint64_t cs = class_sizes_[sb_class(d)], nb = sb_bytes_ / cs;
            for (uint64_t i = 0; i < nb; ++i) {
                const uint64_t bs = block_state(words_[s * words_per_sb_ + i].load(std::memory_order_relaxed));
                if (bs == kBlockFree)
                    largest_block = std::max(largest_block, cs);
                else
                    u.used_bytes += cs;
                if (bs == kBlockLoaned) ++u.loans;
            }
        }
    }
    u.largest_free_extent = std::max(u.largest_free_extent, largest_block);
    uint64_t passes = 0;
    for (uint64_t bi = 0; bi <= mask_; ++bi) {
        for (uint32_t j = 0; j < kSlotsPerBucket; ++j)
            if (!slot_empty(buckets_[bi].slots[j].load(std::memory_order_relaxed))) ++u.objects;
        passes += uint32_t(buckets_[bi].overflow.load(std::memory_order_relaxed));
    }
    if (u.objects != 0) u.probe_buckets_hit = 1.0 + double(passes) / double(u.objects);
    // Runs of passed buckets, computed backwards twice round the table (a run may wrap), the
    // second time summed; capped where lookups and inserts stop probing.
    const uint64_t buckets = mask_ + 1, limit = std::min<uint64_t>(buckets, kMaxProbeBuckets);
    uint64_t passed_run = 0, miss_total = 0;
    for (uint64_t i = 2 * buckets; i-- > 0;) {
        const bool passed = uint32_t(buckets_[i & mask_].overflow.load(std::memory_order_relaxed)) != 0;
        passed_run = passed ? std::min(passed_run + 1, limit - 1) : 0;
        if (i < buckets) miss_total += 1 + passed_run;
    }
    u.probe_buckets_miss = double(miss_total) / double(buckets);
    for (uint64_t i = 0; i < pin_slots_; ++i)
        if (pins_[i].load(std::memory_order_relaxed) != 0) ++u.pins;
    return u;
}

Result<std::vector<std::string>> StoreCore::keys(uint64_t now_mono) const {
    auto all = entries(now_mono);
    if (!all) return std::move(all).error();
    std::vector<std::string> out;
    out.reserve(all->size());
    for (Entry& e : *all) out.push_back(std::move(e.key));
    return out;
}

Result<std::vector<StoreCore::Entry>> StoreCore::entries(uint64_t now_mono) const {
    std::vector<Entry> out;
    for (uint64_t bi = 0; bi <= mask_; ++bi) {
        for (uint32_t j = 0; j < kSlotsPerBucket; ++j) {
            for (int attempt = 0;; ++attempt) {
                if (attempt == kLookupAttempts)
                    return make_error(Errc::busy, "store listing: slot " + std::to_string(j) + " of bucket " +
                                                      std::to_string(bi) + " changed under " +
                                                      std::to_string(kLookupAttempts) +
                                                      " reads (a key overwritten without pause); list again");
                const uint64_t v = buckets_[bi].slots[j].load(std::memory_order_acquire);
                if (slot_empty(v) || slot_block(v) >= block_count()) break;
                const uint32_t b = slot_block(v);
                FABRIC_PAUSE_POINT("store.entries.after_slot");
                const uint64_t w = words_[b].load(std::memory_order_acquire);
                const uint64_t s = block_state(w);
                if (s != kBlockCommitting && s != kBlockPublished && s != kBlockRemoving) {
                    if (buckets_[bi].slots[j].load(std::memory_order_acquire) == v) break;
                    continue;
                }
                HeaderSnapshot snap;
                const bool ok = read_header(b, w, snap);
                std::string k;
                if (ok) {
                    k.resize(snap.h.key_len);
                    seqlock_copy_out(k.data(), snap.loc.data + snap.trailer_offset, snap.h.key_len);
                }
                std::atomic_thread_fence(std::memory_order_acquire);
                if (block_seq(words_[b].load(std::memory_order_relaxed)) != block_seq(w)) continue;
                // The slot must still link that life of the block (as lookup() re-checks): between
                // our slot load and word load the key may have been overwritten and the old block
                // freed and taken by another key (listing that key here and missing this one), or
                // taken by a writer that has not linked it (maybe never).
                if (buckets_[bi].slots[j].load(std::memory_order_acquire) != v) continue;
                if (ok && !(snap.h.expires_mono_ns && snap.h.expires_mono_ns <= now_mono))
                    out.push_back(Entry{std::move(k), snap.h.size, snap.loc.capacity, snap.h.expires_mono_ns});
                break;
            }
        }
    }
    return out;
}

}  // namespace fabric_shm::detail
