// SPDX-License-Identifier: MIT
// A bridge process's state in its local pool: one small region per process (RegionKind::bridge,
// named "bridge-<role>-<member id>") that the process writes and fabric-shm-dump reads. No
// network code here: the dump links this without the NATS client. Layout and who writes
// what: src/status_layout.h, docs/bridge.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"

namespace fabric_shm::bridge {

enum class Role : uint32_t { exporter = 1, importer = 2 };
std::string_view role_name(Role role) noexcept;  ///< "export" / "import"

enum class ConnectionState : uint64_t { connecting = 0, connected = 1, reconnecting = 2, closed = 3 };
std::string_view connection_state_name(ConnectionState state) noexcept;

/// Counters (monotonic) a bridge process publishes; indices match the layout's cells.
enum class StatusCounter : uint32_t {
    messages = 0, bytes, objects, acked, duplicates, dead_lettered, redeliveries, retries,
    reconnects, disconnects, errors, chunks, pool_recoveries, count_
};
std::string_view status_counter_name(StatusCounter c) noexcept;  ///< "messages", "bytes", ...

/// Gauges; indices match the layout's cells.
enum class StatusGauge : uint32_t {
    lag = 0, in_flight, rate_milli, byte_rate, last_activity_wall_ns, last_error_wall_ns,
    stream_ready,  ///< 1 once the stream is set up (export) / the durable consumer is bound (import)
    count_
};

/// What identifies a bridge process's region (written when it is created or taken over).
struct StatusIdentity {
    Role role = Role::exporter;
    std::string member;   ///< <= 32 bytes; the region is named "bridge-<role>-<member>"
    std::string topic;    ///< local topic
    std::string group;    ///< export: consumer group; import: durable consumer name
    std::string stream;
    std::string servers;  ///< truncated to 255 bytes
};

/// The writer: creates (or takes over from a certainly-dead owner) the process's status region
/// and updates it. Every update is a relaxed store or fetch_add into its own cell: no syscall,
/// no lock. Not copyable; movable. Thread use: connection() may be called from the NATS
/// callback thread, everything else from one thread.
class StatusWriter {
public:
    /// already_exists when a live (or maybe-alive) process owns a region with this name.
    static Result<StatusWriter> open(Pool& pool, const StatusIdentity& identity, uint64_t ttl_ns);
    StatusWriter() = default;
    StatusWriter(StatusWriter&&) noexcept = default;
    StatusWriter& operator=(StatusWriter&&) noexcept = default;

    bool valid() const { return cells_ != nullptr; }
    uint64_t lease_id() const { return region_.valid() ? region_.lease_id() : 0; }
    void add(StatusCounter c, uint64_t n = 1) noexcept;
    void set(StatusGauge g, uint64_t value) noexcept;
    void heartbeat(uint64_t wall_ns) noexcept;
    void connection(ConnectionState state, uint64_t wall_ns) noexcept;
    void stream_config(uint64_t replicas, bool memory_storage) noexcept;
    void server_url(std::string_view url) noexcept;
    /// Records the error text (truncated to 255 bytes), its time, and counts it.
    void error(std::string_view text, uint64_t wall_ns) noexcept;

private:
    Region region_;
    void* cells_ = nullptr;  ///< layout::BridgeStatusRegion
};

/// One region as read (racy snapshot: each cell read once).
struct BridgeStatus {
    RegionRef region;
    std::string region_name;
    Role role = Role::exporter;
    std::string topic, group, stream, member, servers;
    uint32_t pid = 0;
    OwnerToken owner = 0;
    bool owner_alive = false;    ///< the registry does not judge the owner certainly dead
    std::string dead_reason;
    uint64_t created_wall_ns = 0, heartbeat_wall_ns = 0;
    ConnectionState connection = ConnectionState::connecting;
    uint64_t connection_since_wall_ns = 0;
    uint64_t stream_replicas = 0;
    std::string stream_storage;  ///< "file", "memory", "" unknown
    uint64_t counters[uint32_t(StatusCounter::count_)] = {};
    uint64_t gauges[uint32_t(StatusGauge::count_)] = {};
    std::string last_error, server_url;
};

/// Every live bridge region of the pool (works on a read-only pool). A region whose header does
/// not match this build's layout is reported in *violations (when given) and skipped.
std::vector<BridgeStatus> read_bridge_status(const Pool& pool, std::vector<std::string>* violations = nullptr);

/// "bridge-export-<member>" / "bridge-import-<member>".
std::string status_region_name(Role role, std::string_view member);

}  // namespace fabric_shm::bridge
