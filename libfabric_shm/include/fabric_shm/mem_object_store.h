// SPDX-License-Identifier: MIT
// MemObjectStore: the object store inside the pool (an open-addressing table plus a payload
// heap in leased regions), shared by every process that opens the same store name.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "fabric_shm/batch.h"
#include "fabric_shm/object_store.h"
#include "fabric_shm/placement_hint.h"
#include "fabric_shm/pool.h"

namespace fabric_shm {

namespace detail {
struct StoreAccess;
}  // namespace detail

struct StoreConfig {
    std::string name = "default";   ///< store name within the pool (name rule)
    uint32_t table_entries = 0;     ///< 0: derived from the pool size (documented in docs/store.md)
    uint64_t heap_bytes = 0;        ///< 0: derived from the pool size
    uint64_t max_object_bytes = 0;  ///< 0: derived (<= heap / 4, <= 16 MiB)
    Duration ttl{0};                ///< region leases; 0: the pool's default TTL
};

struct StoreStats {
    uint64_t objects = 0, table_entries = 0;
    uint64_t heap_used_bytes = 0, heap_capacity_bytes = 0, largest_free_extent = 0;
    uint64_t max_object_bytes = 0;
    uint64_t loans_active = 0, pins_active = 0;
    /// Table buckets (one cache line each) a lookup reads on average, of a present key and of
    /// an absent one, as the table stands (1.0: every key in its home bucket).
    double probe_buckets_hit = 0, probe_buckets_miss = 0;
};

/// What a store created with a StoreConfig in a given pool gets (MemObjectStore::plan): the
/// fields StoreConfig leaves at 0 derived, the others as given.
struct StorePlan {
    uint64_t table_entries = 0;     ///< table slots: the request rounded up to whole buckets
    uint64_t heap_bytes = 0;        ///< heap capacity: whole superblocks
    uint64_t max_object_bytes = 0;  ///< the largest object a put takes
    uint64_t region_bytes = 0;      ///< pool bytes its two regions (table, heap) take, in whole pages
};

/// Zero-copy write: bytes reserved in the pool, filled in place, published by commit().
/// Dropping an uncommitted loan frees it; a dead owner's loan is freed by the reaper.
class ObjectLoan {
public:
    ObjectLoan();
    ObjectLoan(ObjectLoan&&) noexcept;
    ObjectLoan& operator=(ObjectLoan&&) noexcept;
    ~ObjectLoan();
    std::span<uint8_t> bytes() const;
    bool valid() const;
    /// For a loan made by MemObjectStore::loan(uri, size, options): publishes all `size`
    /// bytes under the loan's URI with its options; returns the version. On a failed
    /// condition (conflict, stale_epoch) the loan stays valid: retry or drop it.
    Result<uint64_t> commit();
    /// Publishes the first n <= size bytes. When the object then fits a smaller block, it is
    /// moved there (one copy of n bytes) and the loaned block goes back to the heap; if no
    /// smaller block is free it is published in place.
    Result<uint64_t> commit(uint64_t n);
    /// Where the loan's bytes are: the object's placement once commit() publishes them in place
    /// (send it with the notification; see PlacementHint), as it does for a loan(uri, size,
    /// options) committed whole. A commit that moves the object leaves the hint stale (it then
    /// only costs its prefetches): commit(n) of a much smaller n, and usually the commit of a
    /// loan(size), whose block was sized for any key. Empty for an empty loan.
    PlacementHint placement() const;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Zero-copy read: the object's bytes in the pool, valid until the view is destroyed, even
/// if the object is overwritten or removed meanwhile. verify() checks the stored CRC.
class PinnedView {
public:
    PinnedView();
    PinnedView(PinnedView&&) noexcept;
    PinnedView& operator=(PinnedView&&) noexcept;
    ~PinnedView();
    std::span<const uint8_t> bytes() const;
    const ObjectInfo& info() const;
    Status verify() const;  ///< Errc::corrupt on CRC mismatch
    /// Copies the bytes into `out` and checks them against the stored CRC in the same pass
    /// (where the CPU allows, one read of each line: a copied get into a buffer of the
    /// caller's, e.g. an uninitialised one, with no allocation and no zero-fill).
    /// Errc::invalid_argument unless out.size() == bytes().size() (nothing copied);
    /// Errc::corrupt on a CRC mismatch (`out` then holds the bytes that did not match).
    Status copy_to(std::span<uint8_t> out) const;
    bool valid() const;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// One object of MemObjectStore::put_many.
struct PutRequest {
    FabricUriView uri;
    ByteView data;
    const PutOptions* options = nullptr;  ///< nullptr: the defaults (no condition, no metadata)
};

class MemObjectStore final : public ObjectStore {
public:
    /// Opens the named store in the pool, creating it with `config` if absent. Opening an
    /// existing store with different explicit parameters attaches to it; *note says so.
    static Result<std::unique_ptr<MemObjectStore>> open(Pool& pool, const StoreConfig& config = {},
                                                        std::string* note = nullptr);
    /// The store open(pool, config) would create, if the pool had no store of that name:
    /// derived by the same code as open(), from the pool's size (not from its free space), and
    /// refused with the error open() returns for that config (a name the pool refuses, a heap
    /// under 4 superblocks, a largest object that does not fit the heap, ...). Nothing is
    /// created or reserved, so whether the regions find room in the pool is open()'s to say
    /// (their bytes are in region_bytes). For a caller that must know a store's limits before it
    /// writes anything (pool import checks the whole archive first).
    static Result<StorePlan> plan(const Pool& pool, const StoreConfig& config = {});
    /// Attach only (read paths: get/head/ls never create). NotFound if absent.
    static Result<std::unique_ptr<MemObjectStore>> attach(const Pool& pool, std::string_view name = "default");
    ~MemObjectStore() override;

    Result<uint64_t> put(const FabricUri& uri, ByteView data, const PutOptions& options = {}) override;
    /// put() of a URI view (FabricUriView::parse of a notification: no copy of the URI).
    Result<uint64_t> put(const FabricUriView& uri, ByteView data, const PutOptions& options = {});
    /// put() that also says where the object was placed (set on success): send it with the
    /// object's notification for the reader's prefetch().
    Result<uint64_t> put(const FabricUriView& uri, ByteView data, const PutOptions& options, PlacementHint& placed);
    /// Puts each request, in order; statuses[i] says what became of requests[i] (its version
    /// in `value`). Each request is a put of its own (its own version, conditions and
    /// visibility): one that fails (a bad URI or options, too large, a failed condition, a
    /// full heap) stores nothing and does not stop the others. Cheaper than a loop of put():
    /// counters are bumped once, options shared by consecutive requests are checked once, and
    /// the next request's table bucket and lock line are fetched while this one is copied in.
    /// Fails as a whole (nothing stored) only when the spans' sizes differ or the pool is
    /// read-only or closed.
    Status put_many(std::span<const PutRequest> requests, std::span<BatchStatus> statuses);
    /// put_many() that also says where each object went: placed[i] for requests[i] (empty when
    /// it failed). `placed` has one per request, or is empty.
    Status put_many(std::span<const PutRequest> requests, std::span<BatchStatus> statuses,
                    std::span<PlacementHint> placed);
    Result<std::optional<ObjectData>> get(const FabricUri& uri) override;
    Result<std::optional<ObjectInfo>> head(const FabricUri& uri) override;
    /// head() into the caller's `info`, for a loop that asks again and again: `info` keeps its
    /// strings and metadata entries from call to call, so no allocation is made once it has
    /// held an object with the same metadata keys and values as long. True when the object
    /// exists (`info` is then its); false when absent (`info` is then unspecified).
    Result<bool> head_into(const FabricUriView& uri, ObjectInfo& info);
    Result<bool> remove(const FabricUri& uri, const RemoveOptions& options = {}) override;
    Result<std::vector<std::string>> list(std::string_view pool, std::string_view bucket, std::string_view prefix) override;
    /// Every live object of this store as "bucket/key", sorted bytewise (pool export).
    Result<std::vector<std::string>> list_all();

    /// A loan of `size` bytes for `uri`: the block holds exactly the payload and this key's
    /// trailer (key, content type, metadata), like put(). Publish with loan.commit().
    Result<ObjectLoan> loan(const FabricUri& uri, uint64_t size, const PutOptions& options = {});
    /// Deprecated: a loan whose key is not known yet reserves the largest possible trailer
    /// (1,032 B per object). Use loan(uri, size, options).
    Result<ObjectLoan> loan(uint64_t size);
    /// Publishes the loan under uri (same conditions and visibility as put); returns the version.
    /// Deprecated with loan(size); for a loan(uri, size, ...) the URI must be the loan's and
    /// the options' trailer must fit what the loan reserved.
    Result<uint64_t> commit(ObjectLoan&& loan, const FabricUri& uri, const PutOptions& options = {});
    /// nullopt when absent.
    Result<std::optional<PinnedView>> pin(const FabricUri& uri);
    Result<std::optional<PinnedView>> pin(const FabricUriView& uri);
    /// Starts fetching the cache lines of the object a put placed where `hint` says (its
    /// block's state word, header, key and first KiB), so that a pin() or get() of its URI
    /// right after finds them arriving instead of fetching them one after another. Call it for
    /// one object, just before its pin() or get(): prefetching a whole poll's objects first
    /// measured no faster than not at all (docs/benchmarks.md). Only a hint (see
    /// PlacementHint): it writes nothing, checks nothing it is given against the object, and
    /// ignores a hint outside this store's heap; a stale or empty hint does nothing useful and
    /// nothing harmful. It checks no lease either: it reads only a superblock descriptor of the
    /// mapping this handle holds, and the pin() or get() after it checks the leases as always.
    void prefetch(PlacementHint hint) const noexcept;

    /// Usage now. It first frees the blocks this handle holds back for its next batch (retired
    /// objects that had been pinned, docs/store.md "Batched frees"), so they count as free.
    StoreStats stats() const;
    /// Lease ids of the store's regions (register them with a RenewalManager).
    std::vector<uint64_t> lease_ids() const;
    const StoreConfig& config() const;

    struct Impl;

private:
    friend struct detail::StoreAccess;  // the library's own calls under a key made once
    explicit MemObjectStore(std::unique_ptr<Impl> impl);
    Result<uint64_t> put_placed(const FabricUriView& uri, ByteView data, const PutOptions& options,
                                PlacementHint* placed);
    std::unique_ptr<Impl> impl_;
};

}  // namespace fabric_shm
