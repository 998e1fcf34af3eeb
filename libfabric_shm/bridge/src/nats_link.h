// SPDX-License-Identifier: MIT
// The bridge's NATS connection: options (servers, credentials, TLS, reconnect backoff with
// jitter), connection-state bookkeeping the NATS callback threads write and the bridge loop
// reads, and the stream set-up both roles share. Private to the bridge module.
#pragma once

#include <nats/nats.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "fabric_shm/result.h"
#include "fabric_shm_bridge/bridge.h"
#include "fabric_shm_bridge/status.h"

namespace fabric_shm::bridge {

/// "what: <status text> (<last error>)" as a typed error: timeouts and lost connections are
/// Errc::timeout / io_error (retryable), authentication and TLS failures permission_denied.
Error nats_error(natsStatus s, std::string_view what, jsErrCode js_code = jsErrCode(0));

/// A delete or a get by sequence answered "no such message": done, for a caller deleting it.
/// (The server answers a delete of a message already removed with JSStreamMsgDeleteFailed.)
bool message_already_gone(natsStatus s, jsErrCode js_code) noexcept;

class NatsLink {
public:
    /// Creates the connection; when no server answers it keeps trying in the background
    /// (connected() turns true later). Errors: bad options (unreadable credential files).
    static Result<std::unique_ptr<NatsLink>> open(const NatsSettings& settings);
    ~NatsLink();
    NatsLink(const NatsLink&) = delete;

    natsConnection* connection() const { return nc_; }
    jsCtx* js() const { return js_; }
    bool connected() const;
    /// Largest message the server accepts (0 until connected).
    int64_t max_payload() const;

    /// Makes sure the stream exists: creates it with `settings` when missing (both roles may),
    /// otherwise uses it as it is. *note describes a difference from `settings`.
    Status ensure_stream(const std::string& stream, const StreamSettings& settings, std::string* note);
    uint64_t stream_replicas() const { return replicas_; }
    bool stream_memory() const { return memory_; }
    bool stream_work_queue() const { return work_queue_; }
    /// When the stream was created (UTC ns): another value means another stream of the same
    /// name, whose sequences name other messages.
    int64_t stream_created() const { return created_; }
    /// The stream's creation time as the server tells it now (the wait bounded), to compare with
    /// stream_created() before acting on sequences. NATS_OK and *created, or the failure.
    natsStatus read_stream_created(const std::string& stream, int64_t wait_ms, int64_t* created, jsErrCode* js_code) const;

    /// Connection events, written by NATS callback threads (relaxed: counters and a state
    /// word; the loop copies them into the status region).
    ConnectionState state() const { return ConnectionState(state_.load(std::memory_order_relaxed)); }
    uint64_t state_since_wall_ns() const { return since_.load(std::memory_order_relaxed); }
    uint64_t reconnects() const { return reconnects_.load(std::memory_order_relaxed); }
    uint64_t disconnects() const { return disconnects_.load(std::memory_order_relaxed); }
    std::string connected_url() const;
    /// Async errors the client reported (slow consumer, permission errors); "" when none since the last call.
    std::string take_async_error();

    /// Async publish acks land here (set by the exporter before publishing).
    void set_ack_handler(jsPubAckHandler handler, void* closure);

private:
    NatsLink() = default;
    static void on_disconnected(natsConnection* nc, void* closure);
    static void on_reconnected(natsConnection* nc, void* closure);
    static void on_connected(natsConnection* nc, void* closure);
    static void on_closed(natsConnection* nc, void* closure);
    static void on_error(natsConnection* nc, natsSubscription* sub, natsStatus err, void* closure);
    static int64_t reconnect_delay(natsConnection* nc, int attempts, void* closure);
    static void dispatch_ack(jsCtx* js, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure);
    void set_state(ConnectionState s);

    NatsSettings settings_;
    natsOptions* opts_ = nullptr;
    natsConnection* nc_ = nullptr;
    jsCtx* js_ = nullptr;
    std::atomic<uint64_t> state_{uint64_t(ConnectionState::connecting)};
    std::atomic<uint64_t> since_{0};
    std::atomic<uint64_t> reconnects_{0}, disconnects_{0};
    std::atomic<bool> closed_{false};  ///< the closed callback ran: no callback uses `this` after it
    std::atomic<jsPubAckHandler> ack_handler_{nullptr};
    std::atomic<void*> ack_closure_{nullptr};
    mutable std::mutex error_mutex_;  ///< guards async_error_ (callback thread vs the loop)
    std::string async_error_;
    uint64_t replicas_ = 0;
    bool memory_ = false;
    bool work_queue_ = false;
    int64_t created_ = 0;
};

/// RAII holders for NATS objects.
struct NatsMsgDeleter {
    void operator()(natsMsg* m) const { natsMsg_Destroy(m); }
};
using NatsMsgPtr = std::unique_ptr<natsMsg, NatsMsgDeleter>;

}  // namespace fabric_shm::bridge
