// SPDX-License-Identifier: MIT
// fabric-shm-bridge as a library: Exporter (a consumer-group member of a local topic that
// publishes each message, with the object it names, to a NATS JetStream stream and commits
// only what the stream acknowledged) and Importer (a durable pull consumer that puts each
// object into the local store, sends the notification, and acks the stream message only after
// the local group committed past it). The NATS client stays behind this header (pimpl): users
// of the core library never link it. Guarantees and design: docs/bridge.md.
// Fork before opening an Exporter or Importer, never after: the NATS client's threads and its
// inbox prefix are per process, and a forked copy would share the parent's replies.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/result.h"
#include "fabric_shm_bridge/frame.h"

namespace fabric_shm::bridge {

/// How to reach the cluster. Credentials and TLS files are passed to the NATS client as given.
struct NatsSettings {
    std::vector<std::string> servers = {"nats://127.0.0.1:4222"};  ///< tried in this order, then at random
    std::string name;                     ///< connection name shown by the server ("" : fabric-shm-bridge)
    std::string user, password;           ///< user/password authentication
    std::string token;                    ///< token authentication
    std::string creds_file;               ///< JWT + NKey seed (.creds)
    std::string nkey_seed_file;           ///< NKey seed file (its public key is derived)
    bool tls = false;                     ///< require TLS (implied by tls:// URLs and the files below)
    std::string tls_ca_file;              ///< trusted CA certificates (PEM)
    std::string tls_cert_file, tls_key_file;  ///< client certificate chain and key (PEM)
    bool tls_skip_verify = false;         ///< testing only: do not verify the server certificate
    uint64_t reconnect_wait_ns = 100'000'000;    ///< first reconnect delay; doubles per attempt
    uint64_t reconnect_max_ns = 5'000'000'000;   ///< cap of the reconnect delay (+-20 % jitter)
    uint64_t connect_timeout_ns = 2'000'000'000; ///< per TCP connect attempt
    uint64_t api_timeout_ns = 5'000'000'000;     ///< JetStream API requests (stream/consumer info)
};
/// Parses "nats://h:p,nats://h2:p2" (also "h:p") into servers; invalid_argument naming the bad item.
Result<std::vector<std::string>> parse_server_list(std::string_view text);

/// The stream, as the bridge creates it when it does not exist (an existing stream is used as
/// it is; a difference is logged and shown in the dump).
struct StreamSettings {
    bool memory_storage = false;  ///< file (default): survives a restart of the whole cluster; memory does not
    int replicas = 3;             ///< RAFT replicas (1..5); 3 survives the loss of one server
    bool work_queue = true;       ///< a message leaves the stream once a durable acked it; false: limits
    uint64_t max_age_ns = 0;      ///< 0: no age limit (limits retention: set one)
    int64_t max_bytes = -1;       ///< -1: unlimited; when reached, publishes are refused (discard new): export waits
    uint64_t duplicate_window_ns = 120'000'000'000;  ///< server-side de-duplication by message id
};

enum class BridgeExit : uint8_t { stopped, count_reached, idle };
std::string_view bridge_exit_name(BridgeExit e) noexcept;

struct BridgeStats {
    uint64_t messages = 0;      ///< export: acknowledged by the stream; import: put and notified
    uint64_t bytes = 0;         ///< frame bytes
    uint64_t objects = 0;
    uint64_t acked = 0;         ///< export: local offsets committed; import: stream acks sent
    uint64_t duplicates = 0;    ///< export: the server said duplicate; import: object already present
    uint64_t dead_lettered = 0;
    uint64_t redeliveries = 0;
    uint64_t retries = 0;
    uint64_t reconnects = 0, disconnects = 0;
    uint64_t errors = 0;
    uint64_t chunks = 0;
    uint64_t pool_recoveries = 0;
    uint64_t skipped_loops = 0;  ///< export: messages that came from this stream (not sent back)
    uint64_t lag = 0;           ///< at exit: export: local group lag; import: stream messages pending
    std::string last_error;
};

struct LocalSettings {
    std::string pool;                       ///< "" : $FABRIC_SHM_POOL or "default"
    uint64_t pool_size = 32ull << 20;       ///< when the bridge creates the pool
    uint64_t pool_ttl_ns = 0;               ///< when the bridge creates the pool; 0: the library default
    std::string member_id;                  ///< "" : host-pid-starttime
    uint32_t partitions_if_created = 4;
};

struct ExportConfig {
    LocalSettings local;
    std::string topic;
    std::string group = "bridge";           ///< the local consumer group the exporters share
    std::string stream;                     ///< "" : the topic name with '.' made '_'
    NatsSettings nats;
    StreamSettings stream_settings;
    uint32_t batch = 256;                   ///< local messages per publish round
    uint64_t chunk_bytes = 256ull << 10;    ///< larger frames go as chunks (also capped by the server's max payload)
    uint64_t publish_timeout_ns = 5'000'000'000;  ///< wait for the stream's acks before retrying a round
    uint64_t retry_initial_ns = 100'000'000;      ///< backoff between failed rounds, doubling
    uint64_t retry_max_ns = 5'000'000'000;
    uint64_t session_timeout_ns = 10'000'000'000; ///< group session (the loop heartbeats while retrying)
    uint64_t count = 0;                     ///< stop after this many messages acknowledged (0: no limit)
    uint64_t exit_when_idle_ns = 0;         ///< stop after this long without a local message (0: never)
};

enum class AckAfter : uint8_t {
    commit,  ///< ack once every waited-for local group committed past the notification (default)
    send,    ///< ack once the object is stored and the notification sent (the pool holds them)
};

struct ImportConfig {
    LocalSettings local;
    std::string stream;
    std::string durable;                    ///< importers with one durable name share the stream's messages
    std::string topic;
    std::string bucket;                     ///< "" : the source bucket
    std::string dlq_topic;                  ///< "" : "<topic>.dlq"
    NatsSettings nats;
    StreamSettings stream_settings;         ///< used when the stream does not exist yet
    AckAfter ack_after = AckAfter::commit;
    std::vector<std::string> ack_groups;    ///< groups to wait for; empty: every registered group
    uint32_t batch = 64;                    ///< messages per fetch
    uint32_t max_in_flight = 1024;          ///< put but not yet acked (the local back-pressure)
    uint64_t ack_wait_ns = 30'000'000'000;  ///< the consumer's ack deadline; extended while waiting
    int64_t max_deliver = -1;               ///< -1: redeliver forever (nothing is dropped by the server)
    int64_t max_ack_pending = 4096;         ///< the consumer's limit across all its importers
    uint32_t stride_if_created = 1024;      ///< topic slots when the importer creates the topic
    uint32_t capacity_if_created = 256;
    uint64_t count = 0;                     ///< stop after this many messages handled (0: no limit)
    uint64_t exit_when_idle_ns = 0;
    uint64_t drain_timeout_ns = 5'000'000'000;  ///< at stop: wait this long for pending acks
    FrameLimits limits;
};

/// One export process. Not thread-safe.
class Exporter {
public:
    /// Validates names, opens (creates) the pool, the topic (when missing) and the group, and
    /// starts connecting (a cluster that is down is retried in the background by run()).
    static Result<Exporter> open(const ExportConfig& config);
    Exporter(Exporter&&) noexcept;
    Exporter& operator=(Exporter&&) noexcept;
    ~Exporter();  ///< leaves the group

    /// Runs until should_stop() (checked between rounds and every ~50 ms), count or idle.
    /// Returns an error only for what retrying cannot fix (a local pool that cannot be
    /// re-created, a stream with another subject layout); the cluster being down is not one.
    Result<BridgeExit> run(const std::function<bool()>& should_stop);
    const BridgeStats& stats() const;
    const std::string& member_id() const;
    void set_log(std::function<void(std::string_view)> log);

    struct Impl;

private:
    explicit Exporter(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// One import process. Not thread-safe.
class Importer {
public:
    static Result<Importer> open(const ImportConfig& config);
    Importer(Importer&&) noexcept;
    Importer& operator=(Importer&&) noexcept;
    ~Importer();

    Result<BridgeExit> run(const std::function<bool()>& should_stop);
    const BridgeStats& stats() const;
    const std::string& member_id() const;
    void set_log(std::function<void(std::string_view)> log);

    struct Impl;

private:
    explicit Importer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace fabric_shm::bridge
