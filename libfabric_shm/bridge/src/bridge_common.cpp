// SPDX-License-Identifier: MIT
#include "bridge_common.h"

#include <charconv>

#include "nats_link.h"

namespace fabric_shm::bridge {

uint64_t parse_u64(std::string_view text, uint64_t fallback) {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    return ec == std::errc() && p == text.data() + text.size() && !text.empty() ? v : fallback;
}

std::string join_servers(const std::vector<std::string>& servers) {
    std::string s;
    for (const auto& x : servers) s += (s.empty() ? "" : ",") + x;
    return s;
}

BridgeMetadata parse_bridge_metadata(std::string_view value) {
    BridgeMetadata m;
    const size_t semi = value.find(';');
    if (auto id = ObjectIdentity::parse(value.substr(0, semi))) m.identity = *id;
    if (semi != std::string_view::npos) m.message_id = std::string(value.substr(semi + 1));
    return m;
}

std::string format_bridge_metadata(const ObjectIdentity& identity, std::string_view message_id) {
    return identity.to_string() + ";" + std::string(message_id);
}

void RateMeter::update(uint64_t now, uint64_t messages, uint64_t bytes, StatusWriter& status) {
    if (last_ns_ == 0) {
        last_ns_ = now;
        last_messages_ = messages;
        last_bytes_ = bytes;
        return;
    }
    if (now - last_ns_ < 1'000'000'000ull) return;
    const double secs = double(now - last_ns_) / 1e9;
    status.set(StatusGauge::rate_milli, uint64_t(double(messages - last_messages_) * 1000.0 / secs));
    status.set(StatusGauge::byte_rate, uint64_t(double(bytes - last_bytes_) / secs));
    last_ns_ = now;
    last_messages_ = messages;
    last_bytes_ = bytes;
}

void copy_link_state(const NatsLink& link, StatusWriter& status, LinkCounters& seen, BridgeStats& stats) {
    const uint64_t r = link.reconnects(), d = link.disconnects();
    if (r > seen.reconnects) status.add(StatusCounter::reconnects, r - seen.reconnects);
    if (d > seen.disconnects) status.add(StatusCounter::disconnects, d - seen.disconnects);
    seen.reconnects = stats.reconnects = r;
    seen.disconnects = stats.disconnects = d;
    const uint64_t since = link.state_since_wall_ns();
    if (since != seen.state_since) {
        seen.state_since = since;
        status.connection(link.state(), since);
        std::string url = link.state() == ConnectionState::connected ? link.connected_url() : "";
        if (url != seen.url) {
            seen.url = url;
            status.server_url(url);
        }
    }
}

}  // namespace fabric_shm::bridge
