// SPDX-License-Identifier: MIT
// MemObjectStore: the public object-store API over StoreCore (store/store_core.cpp), plus
// zero-copy loans and pinned views, and the store's reaper/check hooks.
#include "fabric_shm/mem_object_store.h"

#include <time.h>

#include <algorithm>
#include <cstring>

#include "fabric_shm/clock.h"
#include "fabric_shm/counters.h"
#include "crash_point.h"
#include "fabric_shm/names.h"
#include "batch_status.h"
#include "clock_read.h"
#include "seqlock_copy.h"
#include "store/copy_crc32.h"
#include "store/store_access.h"
#include "store/store_core.h"
#include "pool_impl.h"
#include "recycled_blocks.h"
#include "region_kinds.h"

namespace fabric_shm {

using namespace store_layout;
using detail::StoreCore;

/// What loans and pinned views share with the store object, so they may outlive it (and the
/// Pool it was opened from: `handle` keeps the mapping).
struct StoreShared {
    Pool pool_handle;  ///< keeps the mapping alive: the caller's Pool may be moved or dropped
    const Pool* pool = nullptr;  ///< &pool_handle
    Region root, heap;
    /// root's and heap's lease gates, made once when the store is bound: every call reads
    /// the words they point at fresh (Region::check's passing case, without its walk from the
    /// handle to the entry). Null until then.
    detail::LeaseGate root_gate, heap_gate;
    std::optional<StoreCore> core;
    StoreConfig config;
    /// When this handle's pins last swept the pin records for dead owners (monotonic ns): a
    /// full table of live readers' pins is swept at most every kPinSweepEveryNs, not per pin.
    std::atomic<uint64_t> last_pin_sweep_ns{0};
    static constexpr uint64_t kPinSweepEveryNs = 100'000'000;

    Status check_leases() const {
        // Fail closed: an expired or re-created region is never written or read.
        const uint64_t now = detail::read_clock(CLOCK_MONOTONIC_COARSE);  // one coarse read for both
        if (root_gate.entry && root_gate.passes(now) && heap_gate.passes(now)) [[likely]]
            return {};
        FABRIC_TRY(detail::check_through(root_gate, root, now));  // names what failed
        return detail::check_through(heap_gate, heap, now);
    }
    void count(CounterId id, uint64_t n) const noexcept { detail::count(*pool, id, n); }
    void count(CounterId a, uint64_t na, CounterId b, uint64_t nb) const noexcept { detail::count(*pool, a, na, b, nb); }
    /// The handle's batch of retired blocks is freed with it (the last loan, view or handle),
    /// unless the regions expired: nothing is written into a region that may be re-created.
    ~StoreShared() {
        try {
            if (core && check_leases()) core->flush_retired();
        } catch (...) {  // an error message that could not be allocated: repair() frees them
        }
    }
};

struct MemObjectStore::Impl {
    std::shared_ptr<StoreShared> s;
};

struct ObjectLoan::Impl {
    std::shared_ptr<StoreShared> s;
    uint32_t block = 0;
    OwnerToken owner = 0;
    std::span<uint8_t> bytes;
    /// Set by loan(uri, size, options): the key and options the block's trailer was sized for.
    std::optional<detail::StoreKey> key;
    PutOptions options;
    /// The fork count where the loan was taken: a forked child's copy frees nothing.
    uint32_t made_in = detail::fork_generation();
    uint64_t meta_len = 0;
    uint64_t trailer_room = 0;  ///< bytes reserved after the aligned payload
    // A zero-copy producer makes and commits one loan per object: the loan's state is recycled
    // per thread instead of costing a heap allocation each time.
    static void* operator new(size_t n) { return detail::RecycledBlocks<Impl>::take(n); }
    static void operator delete(void* p, size_t n) noexcept { detail::RecycledBlocks<Impl>::keep(p, n); }
};

struct PinnedView::Impl {
    std::shared_ptr<StoreShared> s;
    uint32_t record = 0, block = 0;
    OwnerToken owner = 0;
    std::span<const uint8_t> bytes;
    ObjectInfo info;
    /// The fork count where the pin was taken: a forked child's copy unpins nothing.
    uint32_t made_in = detail::fork_generation();
    // A worker pins and drops one view per message: the view's state is recycled per thread
    // instead of costing a heap allocation each time.
    static void* operator new(size_t n) { return detail::RecycledBlocks<Impl>::take(n); }
    static void operator delete(void* p, size_t n) noexcept { detail::RecycledBlocks<Impl>::keep(p, n); }
};

// ---- ObjectLoan / PinnedView ----------------------------------------------------------------

ObjectLoan::ObjectLoan() = default;
ObjectLoan::ObjectLoan(ObjectLoan&&) noexcept = default;
ObjectLoan& ObjectLoan::operator=(ObjectLoan&& o) noexcept {
    if (this != &o) {
        ObjectLoan dropped(std::move(*this));
        impl_ = std::move(o.impl_);
    }
    return *this;
}
ObjectLoan::~ObjectLoan() {
    if (impl_ && impl_->s && impl_->made_in == detail::fork_generation())
        impl_->s->core->free_loan(impl_->block, impl_->owner);
}
std::span<uint8_t> ObjectLoan::bytes() const { return impl_ ? impl_->bytes : std::span<uint8_t>{}; }
bool ObjectLoan::valid() const { return impl_ != nullptr; }

PinnedView::PinnedView() = default;
PinnedView::PinnedView(PinnedView&&) noexcept = default;
PinnedView& PinnedView::operator=(PinnedView&& o) noexcept {
    if (this != &o) {
        PinnedView dropped(std::move(*this));
        impl_ = std::move(o.impl_);
    }
    return *this;
}
PinnedView::~PinnedView() {
    if (impl_ && impl_->s && impl_->made_in == detail::fork_generation())
        impl_->s->core->unpin(impl_->record, impl_->block, impl_->owner);
}
std::span<const uint8_t> PinnedView::bytes() const { return impl_ ? impl_->bytes : std::span<const uint8_t>{}; }
const ObjectInfo& PinnedView::info() const {
    static const ObjectInfo empty;
    return impl_ ? impl_->info : empty;
}
namespace {
/// verify()'s and copy_to()'s judgement of the CRC `computed` over a pinned object's bytes.
Status check_pinned_crc(const PinnedView::Impl& v, uint32_t computed) {
    if (computed == v.info.crc32) return {};
    v.s->count(CounterId::store_corrupt, 1);
    return make_error(Errc::corrupt, "pinned object version " + std::to_string(v.info.version) +
                                         ": CRC mismatch (stored " + std::to_string(v.info.crc32) + ", computed " +
                                         std::to_string(computed) + ")");
}
}  // namespace

Status PinnedView::verify() const {
    if (!impl_) return make_error(Errc::invalid_argument, "verify of an empty PinnedView");
    return check_pinned_crc(*impl_, crc32(impl_->bytes.data(), impl_->bytes.size()));
}

Status PinnedView::copy_to(std::span<uint8_t> out) const {
    if (!impl_) return make_error(Errc::invalid_argument, "copy_to of an empty PinnedView");
    if (out.size() != impl_->bytes.size())
        return make_error(Errc::invalid_argument, "copy_to: a buffer of " + std::to_string(out.size()) +
                                                      " bytes for an object of " +
                                                      std::to_string(impl_->bytes.size()) + " bytes");
    // The pin keeps the block from reuse: one copy, no check of the block word after it.
    return check_pinned_crc(*impl_, detail::copy_crc32(out.data(), impl_->bytes.data(), out.size()));
}
bool PinnedView::valid() const { return impl_ != nullptr; }

// ---- open / attach -------------------------------------------------------------------------

namespace {

Result<std::shared_ptr<StoreShared>> bind_store(const Pool& pool, Region root) {
    auto s = std::make_shared<StoreShared>();
    s->pool_handle = pool;
    s->pool = &s->pool_handle;
    auto b = detail::bind_store_regions(*s->pool, std::move(root));  // the core points at our pool_handle
    if (!b) return std::move(b).error();
    s->core.emplace(std::move(*b->core));
    s->core->enable_batched_frees();
    s->root = std::move(b->root);
    s->heap = std::move(b->heap);
    s->root_gate = detail::LeaseGate::of(s->root);
    s->heap_gate = detail::LeaseGate::of(s->heap);
    s->config.table_entries = uint32_t(std::min<uint64_t>(s->core->table_slots(), UINT32_MAX));
    s->config.heap_bytes = s->core->heap_bytes();
    s->config.max_object_bytes = s->core->max_object_bytes();
    if (auto l = pool.lease(s->root.lease_id()); l) s->config.ttl = ns_duration(l->ttl_ns);
    return s;
}

void nap_ms(int ms) {
    timespec ts{0, long(ms) * 1000000L};
    nanosleep(&ts, nullptr);
}

/// The geometry a store created with `config` in `pool` gets, or why it cannot be created with
/// it: open() creates with this and plan() reports it, so a plan is what open() then gives.
Result<detail::StoreGeometry> creation_geometry(const Pool& pool, const StoreConfig& config) {
    FABRIC_TRY(validate_name("store", config.name));
    return detail::derive_store_geometry(pool.size(), config.table_entries, config.heap_bytes,
                                         config.max_object_bytes);
}

}  // namespace

MemObjectStore::MemObjectStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MemObjectStore::~MemObjectStore() = default;

Result<StorePlan> MemObjectStore::plan(const Pool& pool, const StoreConfig& config) {
    auto geo = creation_geometry(pool, config);
    if (!geo) return std::move(geo).error();
    StorePlan p;
    p.table_entries = geo->table_slots();
    p.heap_bytes = geo->heap_bytes();
    p.max_object_bytes = geo->max_object_bytes;
    // open() asks for these two lengths; the pool reserves each in whole pages.
    p.region_bytes = detail::region_reserved_bytes(geo->root_bytes()) + detail::region_reserved_bytes(geo->heap_bytes());
    return p;
}

Result<std::unique_ptr<MemObjectStore>> MemObjectStore::open(Pool& pool, const StoreConfig& config, std::string* note) {
    auto geo = creation_geometry(pool, config);
    if (!geo) return std::move(geo).error();
    const detail::StoreGeometry g = *geo;
    for (int attempt = 0; attempt < 2000; ++attempt) {
        auto existing = pool.open_region(RegionKind::store, config.name);
        if (existing) {
            auto s = bind_store(pool, std::move(*existing));
            if (!s) return std::move(s).error();
            s.value()->config.name = config.name;
            const StoreConfig& have = s.value()->config;
            std::string diff;
            if (config.table_entries && have.table_entries != g.table_slots())
                diff += " table_entries=" + std::to_string(have.table_entries);
            if (config.heap_bytes && have.heap_bytes != g.heap_bytes())
                diff += " heap_bytes=" + std::to_string(have.heap_bytes);
            if (config.max_object_bytes && have.max_object_bytes != config.max_object_bytes)
                diff += " max_object_bytes=" + std::to_string(have.max_object_bytes);
            if (note)
                *note = diff.empty() ? "" : "store '" + config.name + "' exists with" + diff +
                                                "; attached to it (the requested parameters were not applied)";
            auto impl = std::make_unique<Impl>();
            impl->s = std::move(*s);
            return std::unique_ptr<MemObjectStore>(new MemObjectStore(std::move(impl)));
        }
        if (existing.code() == Errc::not_ready) {  // a concurrent creator: wait for it to publish
            nap_ms(1);
            continue;
        }
        if (existing.code() != Errc::not_found) return std::move(existing).error();
        RegionSpec root_spec;
        root_spec.kind = RegionKind::store;
        root_spec.name = config.name;
        root_spec.length = g.root_bytes();
        root_spec.ttl = config.ttl;
        root_spec.publish = false;  // published once the heap exists (attachers need both)
        root_spec.init = [g](std::byte* data, uint64_t length) { return detail::init_store_root(data, length, g); };
        auto root = pool.create_region(root_spec);
        if (!root) {
            if (root.code() == Errc::already_exists) {  // a concurrent creator: wait for it to publish
                nap_ms(1);
                continue;
            }
            Error e = std::move(root).error();
            e.message += " (store table of " + std::to_string(g.table_slots()) +
                         " entries; lower --table-entries or raise the pool --size)";
            return e;
        }
        FABRIC_CRASH_POINT("store.create.root");
        RegionSpec heap_spec;
        heap_spec.kind = RegionKind::store_heap;
        heap_spec.name = config.name;
        heap_spec.length = g.heap_bytes();
        heap_spec.ttl = config.ttl;
        heap_spec.parent = root->ref();
        auto heap = pool.create_region(heap_spec);
        if (!heap) {
            (void)pool.remove_region(root->ref());
            Error e = std::move(heap).error();
            e.message += " (store heap of " + std::to_string(heap_spec.length) +
                         " bytes; lower --heap-size or raise the pool --size)";
            return e;
        }
        auto* h = reinterpret_cast<StoreHeader*>(root->data());
        // Release: pairs with bind_store's acquire load.
        h->heap_ref.store(heap->ref().packed(), std::memory_order_release);
        FABRIC_TRY(root->publish());
        auto s = bind_store(pool, std::move(*root));
        if (!s) return std::move(s).error();
        s.value()->config.name = config.name;
        if (note) note->clear();
        auto impl = std::make_unique<Impl>();
        impl->s = std::move(*s);
        return std::unique_ptr<MemObjectStore>(new MemObjectStore(std::move(impl)));
    }
    return make_error(Errc::busy, "store '" + config.name + "' is being created by another process for more than 2s");
}

Result<std::unique_ptr<MemObjectStore>> MemObjectStore::attach(const Pool& pool, std::string_view name) {
    FABRIC_TRY(validate_name("store", name));
    auto root = pool.open_region(RegionKind::store, name);
    if (!root) return std::move(root).error();
    auto s = bind_store(pool, std::move(*root));
    if (!s) return std::move(s).error();
    s.value()->config.name = std::string(name);
    auto impl = std::make_unique<Impl>();
    impl->s = std::move(*s);
    return std::unique_ptr<MemObjectStore>(new MemObjectStore(std::move(impl)));
}

// ---- operations ----------------------------------------------------------------------------

namespace {

Status check_uri_pool(const StoreShared& s, const FabricUriView& uri) {
    if (uri.pool() != s.pool->name())
        return make_error(Errc::invalid_argument, "URI " + uri.to_string() + " names pool '" + std::string(uri.pool()) +
                                                      "', but this store is in pool '" + s.pool->name() + "'");
    return {};
}
Status check_uri_pool(const StoreShared& s, const FabricUri& uri) { return check_uri_pool(s, uri.view()); }

static_assert(kMaxMetaPairs == kMaxMetadataEntries, "the public limit is the layout's: a header counts them in a byte");

/// Validates content type and metadata; returns the encoded metadata length.
Result<uint64_t> check_options(const PutOptions& o) {
    if (o.content_type.size() > kMaxContentTypeLength)
        return make_error(Errc::invalid_argument, "content type of " + std::to_string(o.content_type.size()) +
                                                      " bytes exceeds " + std::to_string(kMaxContentTypeLength));
    if (o.metadata.size() > kMaxMetaPairs)
        return make_error(Errc::invalid_argument, std::to_string(o.metadata.size()) +
                                                      " metadata entries exceed the limit of " +
                                                      std::to_string(kMaxMetaPairs));
    uint64_t sum = 0, enc = 0;
    for (const auto& [k, v] : o.metadata) {
        if (k.empty()) return make_error(Errc::invalid_argument, "empty metadata key");
        sum += k.size() + v.size();
        enc += 4 + k.size() + v.size();
    }
    if (sum > kMaxMetadataBytes)
        return make_error(Errc::invalid_argument, "metadata of " + std::to_string(sum) + " bytes exceeds " +
                                                      std::to_string(kMaxMetadataBytes));
    return enc;
}

/// Writes header (except the fields publish() sets) and trailer into a loaned block. A stale
/// reader may still be copying from this block (it was free a moment ago): the bytes go in
/// through seqlock_copy_in (src/seqlock_copy.h).
void write_header(std::byte* block, uint64_t size, uint32_t crc, const detail::StoreKey& key, const PutOptions& o,
                  uint64_t meta_len) {
    ObjectHeader h{};
    h.magic = kObjectMagic;
    h.crc32 = crc;
    h.size = size;
    h.key_len = uint16_t(key.len);
    h.ctype_len = uint8_t(o.content_type.size());
    h.meta_pairs = uint8_t(o.metadata.size());
    h.meta_len = uint16_t(meta_len);
    h.reserved = 0;
    detail::seqlock_copy_in(block, &h, sizeof h);
    std::byte* t = block + kPayloadOffset + align8(size);
    detail::seqlock_copy_in(t, key.bytes, key.len);
    t += key.len;
    detail::seqlock_copy_in(t, o.content_type.data(), o.content_type.size());
    t += o.content_type.size();
    for (const auto& [k, v] : o.metadata) {
        const uint16_t kl = uint16_t(k.size()), vl = uint16_t(v.size());
        detail::seqlock_copy_in(t, &kl, 2);
        detail::seqlock_copy_in(t + 2, &vl, 2);
        detail::seqlock_copy_in(t + 4, k.data(), kl);
        detail::seqlock_copy_in(t + 4 + kl, v.data(), vl);
        t += 4 + kl + vl;
    }
}

/// A loan is committed only by the process that took it: another registration's token, or a
/// parent's loan inherited over fork() (the parent may go on writing its bytes), is refused.
Status check_loan_is_ours(const StoreShared& s, const ObjectLoan::Impl& loan) {
    if (loan.owner != s.pool->self() || loan.made_in != detail::fork_generation())
        return make_error(Errc::invalid_argument, "commit of a loan made by another process (a parent before fork())");
    return {};
}

/// Where a block just claimed by `me` for a put or a loan lies. It cannot fail but for a corrupt
/// descriptor; then the block goes back and nothing is written through it.
Result<detail::BlockLoc> locate_claimed(StoreCore& core, uint32_t block, OwnerToken me, const char* what) {
    detail::BlockLoc loc;
    if (core.locate(block, loc)) return loc;
    core.free_loan(block, me);
    return make_error(Errc::corrupt,
                      "store: block " + std::to_string(block) + " allocated for a " + what + " cannot be located");
}

Error too_large(uint64_t size, uint64_t max) {
    return make_error(Errc::object_too_large, "object of " + std::to_string(size) + " bytes exceeds max_object_bytes " +
                                                  std::to_string(max) + " (raise with --max-object-size)");
}

}  // namespace

Result<uint64_t> MemObjectStore::put(const FabricUri& uri, ByteView data, const PutOptions& options) {
    return put(uri.view(), data, options);
}

namespace {

/// A put whose URI, options and leases were checked: allocate, copy in, publish. On a failed
/// publish the block goes back to the heap.
Result<uint64_t> put_checked(StoreShared& s, const detail::StoreKey& key, ByteView data, const PutOptions& options,
                             uint64_t meta_len, OwnerToken me, PlacementHint* placed = nullptr,
                             const detail::Found* expected = nullptr) {
    StoreCore& core = *s.core;
    if (data.size() > core.max_object_bytes()) return too_large(data.size(), core.max_object_bytes());
    const uint64_t need = kPayloadOffset + align8(data.size()) + key.len + options.content_type.size() + meta_len;
    uint64_t word = 0;
    auto block = core.alloc(need, me, &word);
    if (!block) return std::move(block).error();
    FABRIC_CRASH_POINT("store.put.after_alloc");
    FABRIC_TRY_ASSIGN(const detail::BlockLoc loc, locate_claimed(core, *block, me, "put"));
    const uint32_t crc = detail::copy_crc32(loc.data + kPayloadOffset, data.data(), data.size());
    write_header(loc.data, data.size(), crc, key, options, meta_len);
    FABRIC_CRASH_POINT("store.put.after_fill");
    auto v = core.publish({&key, *block, &options, &loc, expected}, me);
    if (!v)
        core.free_loan(*block, me);
    else if (placed)
        *placed = detail::placement_of(*block, data.size());
    return v;
}

bool is_conflict(const Error& e) { return e.code == Errc::conflict || e.code == Errc::stale_epoch; }

Error read_only(const StoreShared& s, const char* what) {
    return make_error(Errc::permission_denied, std::string(what) + ": pool '" + s.pool->name() + "' is open read-only");
}

/// put() under a key made already, by `me` (not 0: the pool is writable). Inlined into both
/// callers: the public put pays no extra call for the split.
[[gnu::always_inline]] inline Result<uint64_t> put_keyed(StoreShared& s, const detail::StoreKey& key, ByteView data,
                                                         const PutOptions& options, OwnerToken me,
                                                         PlacementHint* placed = nullptr,
                                                         const detail::Found* expected = nullptr) {
    // The key's bucket and stripe lines are read only at the publish, after the allocation
    // and the copy: their fetch (the bucket's usually a miss: the table is larger than a
    // core's cache) overlaps those instead.
    s.core->prefetch_for_publish(key);
    auto meta_len = check_options(options);
    if (!meta_len) return std::move(meta_len).error();
    FABRIC_TRY(s.check_leases());
    auto v = put_checked(s, key, data, options, *meta_len, me, placed, expected);
    if (!v) {
        if (is_conflict(v.error())) s.count(CounterId::store_conflicts, 1);
        return v;
    }
    s.count(CounterId::store_puts, 1, CounterId::store_put_bytes, data.size());
    return v;
}

/// head_into's lookup under a key made already (the URI names the object in its errors):
/// `copy_out(snap)` copies what the caller wants out of the found header, kept once the block
/// proves unchanged after it.
template <typename CopyOut>
[[gnu::always_inline]] inline Result<bool> head_keyed(StoreShared& s, const FabricUriView& uri,
                                                      const detail::StoreKey& key, CopyOut&& copy_out,
                                                      detail::Found* found = nullptr) {
    StoreCore& core = *s.core;
    FABRIC_TRY(s.check_leases());
    for (int attempt = 0; attempt < 10000; ++attempt) {
        auto f = core.lookup(key);
        if (!f) return std::move(f).error();
        if (!f->has_value() || ((*f)->snap.h.expires_mono_ns && (*f)->snap.h.expires_mono_ns <= mono_now_ns()))
            return false;
        copy_out((*f)->snap);
        if (!core.unchanged(**f))
            continue;
        if (found) *found = **f;
        return true;
    }
    return make_error(Errc::busy, "head " + uri.to_string() + ": overwritten 10000 times while reading");
}

/// pin() under a key made already, by `me` (not 0). Inlined into both callers: the public
/// pin pays no extra call for the split.
[[gnu::always_inline]] inline Result<std::optional<PinnedView>> pin_keyed(const std::shared_ptr<StoreShared>& shared,
                                                                          const FabricUriView& uri,
                                                                          const detail::StoreKey& key, OwnerToken me) {
    StoreShared& s = *shared;
    StoreCore& core = *s.core;
    FABRIC_TRY(s.check_leases());
    // The get is counted where the call ends, with its bytes or its miss: one shard lookup.
    bool repaired = false;
    for (int attempt = 0; attempt < 10000; ++attempt) {
        auto f = core.lookup(key);
        if (!f) {
            s.count(CounterId::store_gets, 1);
            return std::move(f).error();
        }
        if (!f->has_value() || ((*f)->snap.h.expires_mono_ns && (*f)->snap.h.expires_mono_ns <= mono_now_ns())) {
            s.count(CounterId::store_gets, 1, CounterId::store_misses, 1);
            return std::optional<PinnedView>{};
        }
        auto rec = core.pin(**f, me);
        if (!rec) {
            // Every record held: some may be dead processes' (a killed reader's pins stay
            // until a repair). Release them and try once more; a table full of live readers'
            // pins is swept at most every kPinSweepEveryNs by this handle.
            if (rec.code() == Errc::capacity_exceeded && !repaired && me != 0) {
                repaired = true;
                const uint64_t now = mono_now_ns();
                uint64_t last = s.last_pin_sweep_ns.load(std::memory_order_relaxed);
                if (now - last >= StoreShared::kPinSweepEveryNs &&
                    s.last_pin_sweep_ns.compare_exchange_strong(last, now, std::memory_order_relaxed) &&
                    core.release_dead_pin_records(now, me) != 0)
                    continue;
            }
            s.count(CounterId::store_gets, 1);
            return std::move(rec).error();
        }
        if (!rec->has_value()) continue;  // changed before the pin took: look again
        PinnedView view;
        view.impl_ = std::make_unique<PinnedView::Impl>();
        view.impl_->s = shared;
        view.impl_->record = **rec;
        view.impl_->block = (*f)->block;
        view.impl_->owner = me;
        // Pinned: the block can no longer be freed, so its header and bytes are stable.
        core.info_into((*f)->snap, view.impl_->info);
        view.impl_->bytes = std::span<const uint8_t>(
            reinterpret_cast<const uint8_t*>((*f)->snap.loc.data + kPayloadOffset), (*f)->snap.h.size);
        s.count(CounterId::store_gets, 1, CounterId::store_get_bytes, (*f)->snap.h.size);
        return std::optional<PinnedView>(std::move(view));
    }
    s.count(CounterId::store_gets, 1);
    return make_error(Errc::busy, "pin " + uri.to_string() + ": overwritten 10000 times while pinning");
}

[[gnu::always_inline]] inline Status prepare_key(const StoreShared& s, const FabricUriView& uri, detail::StoreKey& key) {
    FABRIC_TRY(check_uri_pool(s, uri));
    return detail::fill_store_key(uri, key);
}

}  // namespace

Result<uint64_t> MemObjectStore::put(const FabricUriView& uri, ByteView data, const PutOptions& options) {
    return put_placed(uri, data, options, nullptr);
}

Result<uint64_t> MemObjectStore::put(const FabricUriView& uri, ByteView data, const PutOptions& options,
                                     PlacementHint& placed) {
    return put_placed(uri, data, options, &placed);
}

Result<uint64_t> MemObjectStore::put_placed(const FabricUriView& uri, ByteView data, const PutOptions& options,
                                            PlacementHint* placed) {
    StoreShared& s = *impl_->s;
    FABRIC_TRY(check_uri_pool(s, uri));
    const OwnerToken me = s.pool->self();
    if (me == 0) return read_only(s, "put");  // before the key, as every write call
    detail::StoreKey key;
    FABRIC_TRY(detail::fill_store_key(uri, key));
    return put_keyed(s, key, data, options, me, placed);
}

void MemObjectStore::prefetch(PlacementHint hint) const noexcept {
    if (const auto at = detail::placement_block(hint)) impl_->s->core->prefetch_object(*at, detail::placement_size(hint));
}

Status MemObjectStore::put_many(std::span<const PutRequest> requests, std::span<BatchStatus> statuses) {
    return put_many(requests, statuses, {});
}

Status MemObjectStore::put_many(std::span<const PutRequest> requests, std::span<BatchStatus> statuses,
                                std::span<PlacementHint> placed) {
    StoreShared& s = *impl_->s;
    if (statuses.size() != requests.size())
        return make_error(Errc::invalid_argument, "put_many: " + std::to_string(statuses.size()) + " statuses for " +
                                                      std::to_string(requests.size()) + " requests (one each)");
    if (!placed.empty() && placed.size() != requests.size())
        return make_error(Errc::invalid_argument, "put_many: " + std::to_string(placed.size()) +
                                                      " placement hints for " + std::to_string(requests.size()) +
                                                      " requests (one each, or none)");
    FABRIC_TRY(s.pool->check_open());
    const OwnerToken me = s.pool->self();
    if (me == 0) return read_only(s, "put_many");
    static const PutOptions kDefaults;
    // Options shared by consecutive requests (the usual batch) are checked once.
    const PutOptions* checked = nullptr;
    Result<uint64_t> meta_len = uint64_t(0);
    // Two keys in turn: request i's while request i+1's is made and its lines are fetched.
    detail::StoreKey keys[2];
    Status next_ok;
    auto prepare = [&](size_t i) {
        next_ok = check_uri_pool(s, requests[i].uri);
        if (next_ok) next_ok = detail::fill_store_key(requests[i].uri, keys[i & 1]);
        if (next_ok) s.core->prefetch_for_publish(keys[i & 1]);
    };
    uint64_t stored = 0, bytes = 0, conflicts = 0;
    if (!requests.empty()) prepare(0);
    for (size_t i = 0; i < requests.size(); ++i) {
        const PutRequest& rq = requests[i];
        BatchStatus& st = statuses[i];
        if (!placed.empty()) placed[i] = PlacementHint();  // a request that fails has none
        Status this_ok = std::move(next_ok);
        if (i + 1 < requests.size()) prepare(i + 1);
        if (!this_ok) {
            detail::batch_failed(st, 0, std::move(this_ok).error());
            continue;
        }
        const PutOptions& options = rq.options ? *rq.options : kDefaults;
        if (&options != checked) {
            meta_len = check_options(options);
            checked = &options;
        }
        if (!meta_len) {
            detail::batch_failed(st, 0, meta_len.error());
            continue;
        }
        // Fail closed per request: a long batch must not write into a region that expired in it.
        if (Status leases = s.check_leases(); !leases) {
            detail::batch_failed(st, 0, std::move(leases).error());
            continue;
        }
        auto v = put_checked(s, keys[i & 1], rq.data, options, *meta_len, me, placed.empty() ? nullptr : &placed[i]);
        if (!v) {
            conflicts += is_conflict(v.error()) ? 1 : 0;
            detail::batch_failed(st, 0, std::move(v).error());
            continue;
        }
        detail::batch_ok(st, 0, *v);
        ++stored;
        bytes += rq.data.size();
    }
    if (conflicts) s.count(CounterId::store_conflicts, conflicts);
    if (stored) {
        s.count(CounterId::store_puts, stored, CounterId::store_put_bytes, bytes);
    }
    return {};
}

namespace {

/// Copies a payload out of its block into `out` and returns the CRC of the bytes copied (the
/// caller checks the block afterwards: a copy that raced a reuse is discarded). Large payloads
/// take the one-pass copy + CRC into a zero-filled vector; small ones a copy without the fill,
/// then the CRC while the bytes are in L1.
uint32_t copy_out_with_crc(std::vector<uint8_t>& out, const std::byte* payload, uint64_t size) {
    if (size >= detail::kCopyCrcFusedMin) {
        out.resize(size);
        return detail::copy_crc32(out.data(), payload, size);
    }
    detail::seqlock_assign(out, payload, size);  // no zero-fill first
    return crc32(out.data(), out.size());
}

}  // namespace

Result<std::optional<ObjectData>> MemObjectStore::get(const FabricUri& uri) {
    StoreShared& s = *impl_->s;
    StoreCore& core = *s.core;
    FABRIC_TRY(check_uri_pool(s, uri));
    auto key = detail::make_store_key(uri);
    if (!key) return std::move(key).error();
    FABRIC_TRY(s.check_leases());
    s.count(CounterId::store_gets, 1);
    for (int attempt = 0; attempt < 10000; ++attempt) {
        auto f = core.lookup(*key);
        if (!f) return std::move(f).error();
        if (!f->has_value() ||
            ((*f)->snap.h.expires_mono_ns && (*f)->snap.h.expires_mono_ns <= mono_now_ns())) {
            s.count(CounterId::store_misses, 1);
            return std::optional<ObjectData>{};
        }
        const detail::Found& found = **f;
        ObjectData od;
        od.info = core.info_of(found.snap);
        const uint32_t c = copy_out_with_crc(od.data, found.snap.loc.data + kPayloadOffset, found.snap.h.size);
        if (!core.unchanged(found)) continue;  // overwritten while copying: look again
        if (c != od.info.crc32) {
            s.count(CounterId::store_corrupt, 1);
            return make_error(Errc::corrupt, "object " + uri.to_string() + " version " +
                                                 std::to_string(od.info.version) + ": CRC mismatch (stored " +
                                                 std::to_string(od.info.crc32) + ", computed " + std::to_string(c) + ")");
        }
        s.count(CounterId::store_get_bytes, od.data.size());
        return std::optional<ObjectData>(std::move(od));
    }
    return make_error(Errc::busy, "get " + uri.to_string() + ": overwritten 10000 times while copying");
}

Result<std::optional<ObjectInfo>> MemObjectStore::head(const FabricUri& uri) {
    ObjectInfo info;
    auto found = head_into(uri.view(), info);
    if (!found) return std::move(found).error();
    if (!*found) return std::optional<ObjectInfo>{};
    return std::optional<ObjectInfo>(std::move(info));
}

Result<bool> MemObjectStore::head_into(const FabricUriView& uri, ObjectInfo& info) {
    StoreShared& s = *impl_->s;
    detail::StoreKey key;
    FABRIC_TRY(prepare_key(s, uri, key));
    return head_keyed(s, uri, key, [&](const detail::HeaderSnapshot& snap) { s.core->info_into(snap, info); });
}

Status detail::StoreAccess::prepare(const MemObjectStore& store, const FabricUriView& uri, StoreKey& key) {
    return prepare_key(*store.impl_->s, uri, key);
}

Result<bool> detail::StoreAccess::head_meta(MemObjectStore& store, const FabricUriView& uri, const StoreKey& key,
                                            StoredMeta& meta, Found* found) {
    StoreShared& s = *store.impl_->s;
    return head_keyed(s, uri, key, [&](const HeaderSnapshot& snap) { s.core->meta_into(snap, meta); }, found);
}

Result<uint64_t> detail::StoreAccess::put(MemObjectStore& store, const StoreKey& key, ByteView data,
                                          const PutOptions& options, PlacementHint* placed, const Found* expected) {
    StoreShared& s = *store.impl_->s;
    const OwnerToken me = s.pool->self();
    if (me == 0) return read_only(s, "put");
    return put_keyed(s, key, data, options, me, placed, expected);
}

Result<bool> MemObjectStore::remove(const FabricUri& uri, const RemoveOptions& options) {
    StoreShared& s = *impl_->s;
    FABRIC_TRY(check_uri_pool(s, uri));
    const OwnerToken me = s.pool->self();
    if (me == 0) return read_only(s, "remove");
    auto key = detail::make_store_key(uri);
    if (!key) return std::move(key).error();
    FABRIC_TRY(s.check_leases());
    auto r = s.core->remove(*key, options.if_version, me);
    if (!r && r.code() == Errc::conflict) s.count(CounterId::store_conflicts, 1);
    if (r && *r) s.count(CounterId::store_removes, 1);
    return r;
}

Result<std::vector<std::string>> MemObjectStore::list(std::string_view pool, std::string_view bucket,
                                                      std::string_view prefix) {
    StoreShared& s = *impl_->s;
    if (pool != s.pool->name())
        return make_error(Errc::invalid_argument,
                          "list names pool '" + std::string(pool) + "', but this store is in pool '" + s.pool->name() + "'");
    FABRIC_TRY(validate_name("bucket", bucket));
    FABRIC_TRY(s.check_leases());
    const std::string want = std::string(bucket) + "/" + std::string(prefix);
    auto keys = s.core->keys(mono_now_ns());
    if (!keys) return std::move(keys).error();
    std::vector<std::string> out;
    for (std::string& k : *keys)
        if (k.compare(0, want.size(), want) == 0) out.push_back(k.substr(bucket.size() + 1));
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

Result<std::vector<std::string>> MemObjectStore::list_all() {
    StoreShared& s = *impl_->s;
    FABRIC_TRY(s.check_leases());
    auto keys = s.core->keys(mono_now_ns());
    if (!keys) return std::move(keys).error();
    std::vector<std::string> out = std::move(*keys);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

namespace {

uint64_t trailer_bytes(const detail::StoreKey& key, const PutOptions& o, uint64_t meta_len) {
    return key.len + o.content_type.size() + meta_len;
}

/// Writes the header and trailer for the first n bytes of a loaned block and publishes it.
/// When the object fits a block at least a fifth smaller, it is first moved to one (the
/// loaned block is then freed), so a loan committed short gives its tail back.
Result<uint64_t> publish_loan(StoreShared& s, ObjectLoan::Impl& l, const detail::StoreKey& key,
                              const PutOptions& options, uint64_t meta_len, uint64_t n) {
    StoreCore& core = *s.core;
    const OwnerToken me = l.owner;
    detail::BlockLoc loc;
    if (!core.locate(l.block, loc)) return make_error(Errc::corrupt, "loaned block vanished");
    // The object this commit replaces, if any, is read by the publish's lookup (its header and
    // key): its lines are asked for now and arrive during the CRC pass. A loan made for its
    // URI asked for the key's table line already, which came during the caller's fill.
    core.prefetch_linked(key);
    const uint8_t* payload = l.bytes.data();
    const uint64_t need = kPayloadOffset + align8(n) + trailer_bytes(key, options, meta_len);
    uint32_t block = l.block;
    std::optional<uint32_t> crc;
    if (need + need / 4 < loc.capacity) {
        uint64_t word = 0;
        auto smaller = core.alloc(need, me, &word);
        detail::BlockLoc to;
        if (smaller && core.locate(*smaller, to) && to.capacity < loc.capacity) {
            crc = detail::copy_crc32(to.data + kPayloadOffset, payload, n);  // the CRC of what moved
            block = *smaller;
            loc = to;
        } else if (smaller) {
            core.free_loan(*smaller, me);  // no smaller block after all: publish in place
        }
    }
    if (!crc) crc = crc32(payload, n);
    write_header(loc.data, n, *crc, key, options, meta_len);
    FABRIC_CRASH_POINT("store.commit.before_publish");
    auto v = core.publish({&key, block, &options}, me);
    if (!v) {  // the loan stays valid (still LOANED to us): the caller may retry or drop it
        if (block != l.block) core.free_loan(block, me);
        if (v.code() == Errc::conflict || v.code() == Errc::stale_epoch) s.count(CounterId::store_conflicts, 1);
        return v;
    }
    if (block != l.block) core.free_loan(l.block, me);  // moved: the loaned block goes back
    s.count(CounterId::store_puts, 1, CounterId::store_put_bytes, n);
    return v;
}

}  // namespace

Result<ObjectLoan> MemObjectStore::loan(const FabricUri& uri, uint64_t size, const PutOptions& options) {
    StoreShared& s = *impl_->s;
    FABRIC_TRY(check_uri_pool(s, uri));
    const OwnerToken me = s.pool->self();
    if (me == 0) return read_only(s, "loan");
    auto key = detail::make_store_key(uri);
    if (!key) return std::move(key).error();
    auto meta_len = check_options(options);
    if (!meta_len) return std::move(meta_len).error();
    if (size > s.core->max_object_bytes()) return too_large(size, s.core->max_object_bytes());
    FABRIC_TRY(s.check_leases());
    // The commit's publish reads the key's bucket and stripe lines: their fetch overlaps the
    // caller's fill of the loan instead of waiting at the commit.
    s.core->prefetch_for_publish(*key);
    // The key and options are known now, so the trailer is reserved at its exact size.
    const uint64_t trailer = trailer_bytes(*key, options, *meta_len);
    uint64_t word = 0;
    auto block = s.core->alloc(kPayloadOffset + align8(size) + trailer, me, &word);
    if (!block) return std::move(block).error();
    FABRIC_CRASH_POINT("store.loan.after_alloc");
    FABRIC_TRY_ASSIGN(const detail::BlockLoc loc, locate_claimed(*s.core, *block, me, "loan"));
    ObjectLoan loan;
    loan.impl_ = std::make_unique<ObjectLoan::Impl>();
    loan.impl_->s = impl_->s;
    loan.impl_->block = *block;
    loan.impl_->owner = me;
    loan.impl_->bytes = std::span<uint8_t>(reinterpret_cast<uint8_t*>(loc.data + kPayloadOffset), size);
    loan.impl_->key = *key;
    loan.impl_->options = options;
    loan.impl_->meta_len = *meta_len;
    loan.impl_->trailer_room = trailer;
    return loan;
}

PlacementHint ObjectLoan::placement() const {
    if (!impl_) return {};
    return detail::placement_of(impl_->block, impl_->bytes.size());
}

Result<uint64_t> ObjectLoan::commit() {
    if (!impl_) return make_error(Errc::invalid_argument, "commit of an empty loan");
    return commit(impl_->bytes.size());
}

Result<uint64_t> ObjectLoan::commit(uint64_t n) {
    if (!impl_) return make_error(Errc::invalid_argument, "commit of an empty loan");
    if (!impl_->key)
        return make_error(Errc::invalid_argument,
                          "commit() of a loan made without a URI (loan(size)): use MemObjectStore::commit(loan, uri)");
    if (n > impl_->bytes.size())
        return make_error(Errc::invalid_argument, "commit of " + std::to_string(n) + " bytes exceeds the loan's " +
                                                      std::to_string(impl_->bytes.size()));
    StoreShared& s = *impl_->s;
    FABRIC_TRY(s.check_leases());
    FABRIC_TRY(check_loan_is_ours(s, *impl_));
    auto v = publish_loan(s, *impl_, *impl_->key, impl_->options, impl_->meta_len, n);
    if (v) impl_.reset();  // published (or moved and freed): nothing to free
    return v;
}

Result<ObjectLoan> MemObjectStore::loan(uint64_t size) {
    StoreShared& s = *impl_->s;
    const OwnerToken me = s.pool->self();
    if (me == 0) return read_only(s, "loan");
    if (size > s.core->max_object_bytes()) return too_large(size, s.core->max_object_bytes());
    FABRIC_TRY(s.check_leases());
    uint64_t word = 0;
    // The trailer (key, content type, metadata) goes after the payload, so its room is
    // reserved at its maximum now: the key is only known at commit.
    auto block = s.core->alloc(kPayloadOffset + align8(size) + kMaxTrailer, me, &word);
    if (!block) return std::move(block).error();
    FABRIC_CRASH_POINT("store.loan.after_alloc");
    FABRIC_TRY_ASSIGN(const detail::BlockLoc loc, locate_claimed(*s.core, *block, me, "loan"));
    ObjectLoan loan;
    loan.impl_ = std::make_unique<ObjectLoan::Impl>();
    loan.impl_->s = impl_->s;
    loan.impl_->block = *block;
    loan.impl_->owner = me;
    loan.impl_->bytes = std::span<uint8_t>(reinterpret_cast<uint8_t*>(loc.data + kPayloadOffset), size);
    return loan;
}

Result<uint64_t> MemObjectStore::commit(ObjectLoan&& loan, const FabricUri& uri, const PutOptions& options) {
    StoreShared& s = *impl_->s;
    if (!loan.impl_ || loan.impl_->s.get() != impl_->s.get())
        return make_error(Errc::invalid_argument, "commit of a loan that is empty or from another store");
    FABRIC_TRY(check_uri_pool(s, uri));
    auto key = detail::make_store_key(uri);
    if (!key) return std::move(key).error();
    auto meta_len = check_options(options);
    if (!meta_len) return std::move(meta_len).error();
    FABRIC_TRY(s.check_leases());
    const OwnerToken me = loan.impl_->owner;
    FABRIC_TRY(check_loan_is_ours(s, *loan.impl_));
    if (loan.impl_->key) {  // a loan(uri, size): its block was sized for its own key
        if (loan.impl_->key->view() != key->view())
            return make_error(Errc::invalid_argument, "commit of the loan for '" + std::string(loan.impl_->key->view()) +
                                                          "' under " + uri.to_string());
        if (trailer_bytes(*key, options, *meta_len) > loan.impl_->trailer_room)
            return make_error(Errc::invalid_argument,
                              "commit options need a trailer of " + std::to_string(trailer_bytes(*key, options, *meta_len)) +
                                  " bytes; the loan reserved " + std::to_string(loan.impl_->trailer_room) +
                                  " (pass the options to loan())");
        auto v = publish_loan(s, *loan.impl_, *key, options, *meta_len, loan.impl_->bytes.size());
        if (v) loan.impl_.reset();
        return v;
    }
    detail::BlockLoc loc;
    if (!s.core->locate(loan.impl_->block, loc)) return make_error(Errc::corrupt, "loaned block vanished");
    const std::span<uint8_t> bytes = loan.impl_->bytes;
    // The only per-byte cost of the zero-copy path.
    write_header(loc.data, bytes.size(), crc32(bytes.data(), bytes.size()), *key, options, *meta_len);
    FABRIC_CRASH_POINT("store.commit.before_publish");
    auto v = s.core->publish({&*key, loan.impl_->block, &options}, me);
    if (!v) {  // the loan stays valid (still LOANED to us): the caller may retry or drop it
        if (v.code() == Errc::conflict || v.code() == Errc::stale_epoch) s.count(CounterId::store_conflicts, 1);
        return v;
    }
    loan.impl_.reset();  // published: nothing to free
    s.count(CounterId::store_puts, 1, CounterId::store_put_bytes, bytes.size());
    return v;
}

Result<std::optional<PinnedView>> MemObjectStore::pin(const FabricUri& uri) { return pin(uri.view()); }

Result<std::optional<PinnedView>> MemObjectStore::pin(const FabricUriView& uri) {
    StoreShared& s = *impl_->s;
    FABRIC_TRY(check_uri_pool(s, uri));
    const OwnerToken me = s.pool->self();
    if (me == 0) return read_only(s, "pin");
    detail::StoreKey key;
    FABRIC_TRY(detail::fill_store_key(uri, key));
    return pin_keyed(impl_->s, uri, key, me);
}

Result<std::optional<PinnedView>> detail::StoreAccess::pin(MemObjectStore& store, const FabricUriView& uri,
                                                           const StoreKey& key) {
    StoreShared& s = *store.impl_->s;
    const OwnerToken me = s.pool->self();
    if (me == 0) return read_only(s, "pin");
    return pin_keyed(store.impl_->s, uri, key, me);
}

void detail::StoreAccess::prefetch(const MemObjectStore& store, const StoreKey& key) noexcept {
    store.impl_->s->core->prefetch_bucket(key);
}

void detail::StoreAccess::prefetch_linked(const MemObjectStore& store, const StoreKey& key) noexcept {
    store.impl_->s->core->prefetch_linked(key);
}

StoreStats MemObjectStore::stats() const {
    StoreShared& s = *impl_->s;
    // What this handle holds back for its next batch counts as free in what it reports.
    if (s.pool->self() != 0 && s.check_leases()) s.core->flush_retired();
    const StoreCore::Usage u = s.core->usage();
    StoreStats st;
    st.objects = u.objects;
    st.table_entries = s.core->table_slots();
    st.heap_used_bytes = u.used_bytes;
    st.heap_capacity_bytes = s.core->heap_bytes();
    st.largest_free_extent = u.largest_free_extent;
    st.max_object_bytes = s.core->max_object_bytes();
    st.loans_active = u.loans;
    st.pins_active = u.pins;
    st.probe_buckets_hit = u.probe_buckets_hit;
    st.probe_buckets_miss = u.probe_buckets_miss;
    return st;
}

std::vector<uint64_t> MemObjectStore::lease_ids() const {
    return {impl_->s->root.lease_id(), impl_->s->heap.lease_id()};
}

const StoreConfig& MemObjectStore::config() const { return impl_->s->config; }

// ---- region-kind hooks -------------------------------------------------------------------------

namespace detail {

namespace {
/// Binds the store behind a region-kind hook's region; *why gets the reason when it cannot.
std::optional<BoundStore> bind_for_hook(const Pool& pool, const RegionInfo& info, std::string* why) {
    auto root = pool.open_region(info.ref);
    if (!root) {
        if (why) *why = root.error().message;
        return std::nullopt;
    }
    auto b = bind_store_regions(pool, std::move(*root));
    if (!b) {
        if (why) *why = b.error().message;
        return std::nullopt;
    }
    return std::move(*b);
}
}  // namespace

namespace {
RegionKindOps store_region_kind_ops() {
    RegionKindOps ops;
    ops.reap = [](const Pool& pool, const RegionInfo& info, uint64_t now, bool dry_run,
                  std::vector<std::string>& notes) -> RegionReapResult {
        auto b = bind_for_hook(pool, info, nullptr);
        if (!b) return {};  // not bindable (corrupt, expired): nothing to walk, now or later
        const RepairCounts c = b->core->repair(now, dry_run, pool.self(), &notes);
        return {c.total(), !c.incomplete};
    };
    ops.check = [](const Pool& pool, const RegionInfo& info, std::vector<std::string>& violations,
                   std::vector<std::string>& in_progress) {
        std::string why;
        auto b = bind_for_hook(pool, info, &why);
        if (!b) {
            violations.push_back("violation: store '" + info.name + "': " + why);
            return;
        }
        b->core->check(violations, in_progress);
    };
    ops.scans = true;  // every block word, table slot and object header (StoreCore::repair)
    return ops;
}
const RegionKindRegistration store_region_kind(RegionKind::store, store_region_kind_ops());
}  // namespace

}  // namespace detail
}  // namespace fabric_shm
