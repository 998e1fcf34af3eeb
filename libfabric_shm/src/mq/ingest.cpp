// SPDX-License-Identifier: MIT
#include "fabric_shm/ingest.h"

#include <string>

#include "decimal.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/placement_hint.h"
#include "fabric_shm/worker_loop.h"  // kHeaderVersion, kHeaderPutTime: the workers' side of the contract

namespace fabric_shm {

bool IngestResult::all_notified() const {
    for (const Result<SendResult>& sent : notified)
        if (!sent) return false;
    return true;
}

Result<IngestResult> put_and_notify(ObjectStore& store, std::span<Producer* const> producers, const FabricUri& uri,
                                    ByteView bytes, const PutOptions& options) {
    IngestResult out;
    // The earliest the object expires, taken before the put (never later than the store's).
    const uint64_t expires = options.ttl > Duration::zero() ? wall_now_ns() + to_ns(options.ttl) : 0;
    // Where the object went, for the workers' prefetch (a MemObjectStore's put knows).
    PlacementHint placed;
    auto* const mem = dynamic_cast<MemObjectStore*>(&store);
    FABRIC_TRY_ASSIGN(out.version, mem ? mem->put(uri.view(), bytes, options, placed) : store.put(uri, bytes, options));
    // Notified only once the object is visible: a worker that reads the notification finds
    // this version (or a newer one).
    out.put_wall_ns = wall_now_ns();
    // The notification's text and headers, formatted without allocating per call: the URI into
    // this thread's buffer (its capacity kept), the numbers on the stack.
    thread_local std::string uri_text;
    uri.view().to_string(uri_text);
    char version_buf[24], put_ts_buf[24], expires_buf[24];
    std::string topics;  // fan-out: every topic told (a --delete-input worker keeps the input)
    if (producers.size() > 1)
        for (Producer* producer : producers)
            if (producer) {
                if (!topics.empty()) topics += ',';
                topics += producer->topic();
            }
    const PlacementHint::Text placed_text = placed.text();
    MessageHeader headers[5] = {{kHeaderVersion, detail::decimal(version_buf, out.version)},
                                {kHeaderPutTime, detail::decimal(put_ts_buf, out.put_wall_ns)}};
    size_t header_count = 2;
    if (expires != 0) headers[header_count++] = {kHeaderExpiresTime, detail::decimal(expires_buf, expires)};
    if (producers.size() > 1) headers[header_count++] = {kHeaderTopics, topics};
    out.notified.reserve(producers.size());
    for (Producer* producer : producers) {
        if (producer == nullptr) {
            out.notified.push_back(make_error(Errc::invalid_argument, "put_and_notify: producer is null"));
            continue;
        }
        // The hint only where it fits the topic's slot: a long URI is sent without it.
        size_t count = header_count;
        if (!placed.empty()) {
            headers[count] = {kHeaderPlacement, std::string_view(placed_text.data(), placed_text.size())};
            if (producer->fits({uri_text, uri.key(), std::span<const MessageHeader>(headers, count + 1)})) ++count;
        }
        out.notified.push_back(
            producer->send_keyed(uri.key(), uri_text, std::span<const MessageHeader>(headers, count)));
    }
    return out;
}

}  // namespace fabric_shm
