// SPDX-License-Identifier: MIT
// Renderings of fabric-shm-dump's JSON document (one per pool) other than the full text:
// the Prometheus text exposition format (--prometheus) and the compact live view (--watch).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fabric_shm::cli {

/// Every counter and gauge of the given pool documents as Prometheus text format 0.0.4:
/// metric families fabric_shm_*, each with one # HELP and one # TYPE line, labels
/// pool/store/topic/partition/group (and kind/region/member where they identify a series),
/// the latency histogram as _bucket{le} (cumulative, at powers of two of nanoseconds,
/// expressed in seconds) + _sum + _count.
std::string prometheus_text(const std::vector<nlohmann::json>& pools);

/// The compact view --watch prints: per pool, rates since `previous` (same pool's document
/// from the last refresh, or null), TTLs, lag and assignment per group, latency percentiles.
std::string watch_text(const nlohmann::json& pool, const nlohmann::json& previous, uint64_t interval_ns);

}  // namespace fabric_shm::cli
