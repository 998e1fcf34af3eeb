// SPDX-License-Identifier: MIT
// The shared-memory layout of one bridge process's status region (RegionKind::bridge, one
// page). Plain structs and static_asserts only; behaviour is in status.cpp. Who writes what is
// in docs/bridge.md ("State in the pool").
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace fabric_shm::bridge::layout {

constexpr uint64_t kStatusMagic = 0x3147445242534653ull;  ///< "FSBRBDG1" little-endian
constexpr uint32_t kStatusVersion = 1;
constexpr uint64_t kStatusRegionBytes = 4096;  ///< one page: the pool rounds regions up to it anyway

constexpr size_t kTextWords = 8;     ///< 64-byte text fields (names are at most 64 bytes)
constexpr size_t kLongTextWords = 32;  ///< 256-byte fields (server lists, error text)

/// Text written once before the region is published (Region init), NUL-padded; readers copy
/// at most its size and stop at the first NUL. Relaxed atomic words so that a takeover's
/// rewrite (after the owner CAS, see BridgeStatusRegion::owner) is not a data race.
template <size_t N>
struct Text {
    std::atomic<uint64_t> words[N];
};

/// A text the owner rewrites while readers may copy it (the last error, the connected
/// server): a seqlock over relaxed atomic words. Writer: seq odd (release fence after), words,
/// seq even (release). Reader: seq (acquire), words, acquire fence, seq again; retry while odd
/// or changed. One writer per field (the owner's main thread).
template <size_t N>
struct SeqText {
    std::atomic<uint64_t> seq;
    std::atomic<uint64_t> words[N];
};

/// Connection state values (BridgeStatusRegion::connection).
enum ConnectionState : uint64_t {
    kConnecting = 0,    ///< no connection made yet (the cluster may be down: retrying)
    kConnected = 1,
    kReconnecting = 2,  ///< lost the server, retrying with backoff
    kClosed = 3,        ///< the process closed it (exiting)
};

/// Roles (BridgeStatusRegion::role).
enum Role : uint32_t {
    kRoleExport = 1,
    kRoleImport = 2,
};

/// Counter cells (BridgeStatusRegion::counters). Append only: readers of an older version
/// stop at their count.
enum Counter : uint32_t {
    kMessages = 0,        ///< export: published and acknowledged by the stream; import: put + notified
    kBytes,               ///< payload bytes (frames) of those messages
    kObjects,             ///< objects carried (export: read and sent; import: written or found)
    kAcked,               ///< export: local offsets committed; import: stream messages acked
    kDuplicates,          ///< export: the server said duplicate; import: object already present (same identity)
    kDeadLettered,        ///< import: corrupt / oversize / unstorable messages sent to the local DLQ
    kRedeliveries,        ///< import: messages delivered more than once by the stream
    kRetries,             ///< publish / put / send attempts retried (cluster down, back-pressure)
    kReconnects,
    kDisconnects,
    kErrors,              ///< errors reported in last_error
    kChunks,              ///< side-channel chunk messages (objects larger than --chunk-size)
    kPoolRecoveries,      ///< the local pool expired or vanished and was opened again
    kCounterCount,
};
constexpr uint32_t kCounterCells = 24;
static_assert(kCounterCount <= kCounterCells, "every counter has a cell in the status region");

/// Gauge cells (BridgeStatusRegion::gauges).
enum Gauge : uint32_t {
    kLag = 0,           ///< export: local group lag (messages not yet acknowledged by the stream);
                        ///< import: messages pending on the stream's consumer
    kInFlight,          ///< export: published, not yet acknowledged; import: put, not yet acked
    kRateMilli,         ///< messages/s over the last second, x1000
    kByteRate,          ///< bytes/s over the last second
    kLastActivityWall,  ///< wall ns of the last message moved
    kLastErrorWall,     ///< wall ns of the last error
    kStreamReady,       ///< 1 once the stream is set up (export) / the durable consumer is bound (import)
    kGaugeCount,
};
constexpr uint32_t kGaugeCells = 16;
static_assert(kGaugeCount <= kGaugeCells, "every gauge has a cell in the status region");

/// One page. Immutable identity first (written by init before publish, or rewritten by a
/// taker-over right after its owner CAS), then the owner, then single-writer cells.
struct BridgeStatusRegion {
    uint64_t magic;                 ///< init, before publish
    uint32_t version;               ///< init
    uint32_t role;                  ///< init: Role
    uint64_t created_wall_ns;       ///< init
    uint64_t reserved0;
    Text<kTextWords> topic;         ///< local topic
    Text<kTextWords> group;         ///< export: local consumer group; import: durable consumer name
    Text<kTextWords> stream;        ///< JetStream stream
    Text<kTextWords> member;        ///< member id (also the region name's suffix)
    Text<kLongTextWords> servers;   ///< --to / --nats as given
    /// (pid << 32) | registry token of the process writing this region. A new process takes a
    /// region over by CAS from an owner the registry judges certainly dead, never from a live
    /// (or paused) one. Written by: the taker (CAS, acq_rel). Read by: the dump (relaxed).
    std::atomic<uint64_t> owner;
    std::atomic<uint64_t> heartbeat_wall_ns;  ///< owner, each loop (relaxed): the dump shows its age
    std::atomic<uint64_t> connection;         ///< owner's main thread and NATS callback thread: ConnectionState (relaxed; last writer wins)
    std::atomic<uint64_t> connection_since_wall_ns;  ///< same writers
    std::atomic<uint64_t> stream_replicas;    ///< owner: of the stream in use (0 unknown)
    std::atomic<uint64_t> stream_storage;     ///< owner: 1 file, 2 memory, 0 unknown
    std::atomic<uint64_t> counters[kCounterCells];  ///< owner (main thread; reconnect counters: the NATS callback thread), relaxed fetch_add
    std::atomic<uint64_t> gauges[kGaugeCells];      ///< owner's main thread, relaxed store
    SeqText<kLongTextWords> last_error;       ///< owner's main thread
    SeqText<kTextWords * 2> server_url;       ///< owner: the server connected to now
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "cross-process atomics must be lock-free");
static_assert(offsetof(BridgeStatusRegion, topic) == 32, "identity fields are read by older dump builds");
static_assert(offsetof(BridgeStatusRegion, owner) == 32 + 4 * 64 + 256, "owner word follows the identity");
static_assert(sizeof(BridgeStatusRegion) <= kStatusRegionBytes, "the status must fit one page");
static_assert(alignof(BridgeStatusRegion) == 8, "the region holds plain 8-byte atomics at their natural alignment");

}  // namespace fabric_shm::bridge::layout
