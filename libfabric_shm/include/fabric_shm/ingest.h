// SPDX-License-Identifier: MIT
// put_and_notify: the recipe's ingest (store an object, then tell each topic) in one call.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "fabric_shm/bytes.h"
#include "fabric_shm/object_store.h"
#include "fabric_shm/result.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/uri.h"

namespace fabric_shm {

struct IngestResult {
    uint64_t version = 0;      ///< the object's new version (the fabric-version header)
    uint64_t put_wall_ns = 0;  ///< wall clock right after the put (the fabric-put-ts header)
    /// One per producer, in the order given: where its notification went, or why it failed.
    std::vector<Result<SendResult>> notified;
    /// True when every producer's notification was sent.
    bool all_notified() const;
};

/// Puts `bytes` under `uri` in `store`, then sends one notification through each producer:
/// keyed by the object's key (one key, one partition, in order), the URI as its value, and
/// the headers fabric-version (the new version, decimal) and fabric-put-ts (wall ns after the
/// put, decimal) that fabric-shm-worker and WorkerLoop read; with options.ttl also
/// fabric-expires-ts (wall ns, taken before the put), and with several producers fabric-topics
/// (their topics, comma separated: a --delete-input worker keeps such an input). A failed put sends nothing and is
/// the error. A failed notification does not stop the others; the object stays stored, so
/// calling again (a new version, notified again) is safe for workers (at-least-once).
Result<IngestResult> put_and_notify(ObjectStore& store, std::span<Producer* const> producers, const FabricUri& uri,
                                    ByteView bytes, const PutOptions& options = {});

}  // namespace fabric_shm
