// SPDX-License-Identifier: MIT
// Small pieces both bridge roles use: the imported-object metadata, the rate gauge, copying
// the connection's state into the status region. Private to the bridge module.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm_bridge/bridge.h"
#include "fabric_shm_bridge/frame.h"
#include "fabric_shm_bridge/status.h"

namespace fabric_shm::bridge {

class NatsLink;

uint64_t parse_u64(std::string_view text, uint64_t fallback = 0);
std::string join_servers(const std::vector<std::string>& servers);

/// The value of the "fabric-bridge" metadata key: "<identity>;<message id>".
struct BridgeMetadata {
    ObjectIdentity identity;
    std::string message_id;
};
BridgeMetadata parse_bridge_metadata(std::string_view value);
std::string format_bridge_metadata(const ObjectIdentity& identity, std::string_view message_id);

/// Says whether an error should be logged: a new text at once, the same text again at most
/// every `interval_ns` (a retry loop while the cluster is away repeats it every few ms).
class RepeatFilter {
public:
    explicit RepeatFilter(uint64_t interval_ns) : interval_ns_(interval_ns) {}
    bool should_log(const std::string& text, uint64_t mono_now) {
        if (text == last_ && mono_now - last_ns_ <= interval_ns_) return false;
        last_ = text;
        last_ns_ = mono_now;
        return true;
    }

private:
    uint64_t interval_ns_;
    std::string last_;
    uint64_t last_ns_ = 0;
};

/// Messages/s and bytes/s over the last interval, into the status gauges.
class RateMeter {
public:
    void update(uint64_t mono_now, uint64_t messages, uint64_t bytes, StatusWriter& status);

private:
    uint64_t last_ns_ = 0, last_messages_ = 0, last_bytes_ = 0;
};

/// What the status region last got from the connection's counters.
struct LinkCounters {
    uint64_t reconnects = 0, disconnects = 0;
    uint64_t state_since = ~0ull;
    std::string url;
};
void copy_link_state(const NatsLink& link, StatusWriter& status, LinkCounters& seen, BridgeStats& stats);

}  // namespace fabric_shm::bridge
