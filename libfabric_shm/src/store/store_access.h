// SPDX-License-Identifier: MIT
// The store's calls for a key made once and used again: the worker loop looks its result up
// when it hands a message out and puts it when the message completes, both under one key, and
// reads only the result's version, fence token and two metadata values; it makes the input's
// key early too, to start fetching its table line before it pins the input.
// prepare() checks the URI's pool and makes the key (its bytes and hash) as head_into() and
// put() would; the keyed calls then skip that and do everything else those calls do (the
// leases, the options, the conditions, the counters). Private to the library.
#pragma once

#include "fabric_shm/mem_object_store.h"
#include "store/store_core.h"

namespace fabric_shm::detail {

struct StoreAccess {
    /// The key of `uri` in `store`, or the refusal of the URI (another pool, a key the store
    /// cannot hold) as head_into would name it.
    static Status prepare(const MemObjectStore& store, const FabricUriView& uri, StoreKey& key);
    /// head_into(uri, ...) under `key`, which prepare made from `uri`, filling `meta` where
    /// head_into fills an ObjectInfo: the version, the fence token and the metadata pairs as
    /// stored (no map built); with `found`, where the object was found (set when present), for
    /// a later put of the key that judged its condition by `meta`.
    static Result<bool> head_meta(MemObjectStore& store, const FabricUriView& uri, const StoreKey& key,
                                  StoredMeta& meta, Found* found = nullptr);
    /// put(uri, data, options) under `key`, which prepare made from `uri`; with `placed`, where
    /// the object went (set on success). With `expected`, what head_meta found of the key: an
    /// overwrite tries first from it, without a lookup of its own (StoreCore::PublishArgs).
    static Result<uint64_t> put(MemObjectStore& store, const StoreKey& key, ByteView data, const PutOptions& options,
                                PlacementHint* placed = nullptr, const Found* expected = nullptr);
    /// pin(uri) under `key`, which prepare made from `uri`.
    static Result<std::optional<PinnedView>> pin(MemObjectStore& store, const FabricUriView& uri, const StoreKey& key);
    /// Starts fetching the table line a lookup of `key` reads first (StoreCore::prefetch_bucket).
    static void prefetch(const MemObjectStore& store, const StoreKey& key) noexcept;
    /// Starts fetching the block `key`'s table slot links (StoreCore::prefetch_linked): for a
    /// lookup made after other work, once prefetch() had time to bring the table line.
    static void prefetch_linked(const MemObjectStore& store, const StoreKey& key) noexcept;
};

}  // namespace fabric_shm::detail
