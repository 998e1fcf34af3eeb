// SPDX-License-Identifier: MIT
// fabric-shm-dump section "store": every object store in the pool (regions of kind store),
// attached read-only through MemObjectStore::attach, with its occupancy, heap use, largest
// free extent, fragmentation, active loans/pins and heap bytes per object, objects and bytes
// per bucket, the objects that expire soonest, plus the pool-wide store counters.
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/counters.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "store/store_core.h"
#include "store/store_layout.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {

/// How splintered the free superblocks are: 1 - largest run of free superblocks / all free
/// superblock bytes. 0 when the free superblocks are one run, towards 1 when they are
/// scattered (a large put fails although the total would hold it). Free blocks inside
/// small-object superblocks do not count: they serve their size class and are not
/// fragmentation, and a full heap (no free superblock) is full, not fragmented (0).
double fragmentation(const detail::StoreCore::Usage& u, uint64_t sb_bytes) {
    if (u.superblocks_free == 0 || sb_bytes == 0) return 0.0;
    const uint64_t free_run_bytes = u.superblocks_free * sb_bytes;
    const uint64_t largest_run = u.largest_free_extent >= sb_bytes ? u.largest_free_extent : 0;
    if (largest_run >= free_run_bytes) return 0.0;
    return 1.0 - double(largest_run) / double(free_run_bytes);
}

/// Fragmentation of a store region (0 when it cannot be bound: the error shows elsewhere).
double store_fragmentation(const Pool& pool, const RegionInfo& r) {
    auto root = pool.open_region(r.ref);
    if (!root) return 0.0;
    auto bound = detail::bind_store_regions(pool, std::move(*root));
    if (!bound || !bound->core) return 0.0;
    return fragmentation(bound->core->usage(), bound->core->sb_bytes());
}

std::string percent(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f%%", v * 100.0);
    return buf;
}

/// Objects, payload bytes and heap bytes of one bucket.
struct BucketUse {
    uint64_t objects = 0, bytes = 0, heap_bytes = 0;
};

/// The soonest expiries shown.
constexpr size_t kSoonestExpiries = 5;

/// Per bucket, and the objects that expire soonest: the table's objects ("bucket/key",
/// expired ones skipped) bound read-only through the same binding as MemObjectStore::attach
/// (the public API lists one bucket at a time only).
struct StoreWalk {
    std::map<std::string, BucketUse> buckets;
    std::vector<detail::StoreCore::Entry> soonest;  ///< ascending expiry, at most kSoonestExpiries
    uint64_t with_ttl = 0;                          ///< objects that have an expiry
};

Result<StoreWalk> walk_store(const Pool& pool, const RegionInfo& r) {
    auto root = pool.open_region(r.ref);
    if (!root) return std::move(root).error();
    auto bound = detail::bind_store_regions(pool, std::move(*root));
    if (!bound) return std::move(bound).error();
    auto entries = bound->core->entries(mono_now_ns());
    if (!entries) return std::move(entries).error();
    StoreWalk w;
    for (detail::StoreCore::Entry& e : *entries) {
        const size_t slash = e.key.find('/');
        BucketUse& b = w.buckets[slash == std::string::npos ? std::string() : e.key.substr(0, slash)];
        ++b.objects;
        b.bytes += e.size;
        b.heap_bytes += e.block_bytes;
        if (e.expires_mono_ns == 0) continue;
        ++w.with_ttl;
        w.soonest.push_back(std::move(e));
        std::sort(w.soonest.begin(), w.soonest.end(),
                  [](const auto& x, const auto& y) { return x.expires_mono_ns < y.expires_mono_ns; });
        if (w.soonest.size() > kSoonestExpiries) w.soonest.pop_back();
    }
    return w;
}

void fill_store(const Pool& pool, nlohmann::json& out) {
    nlohmann::json stores = nlohmann::json::array();
    nlohmann::json violations = nlohmann::json::array();
    for (const RegionInfo& r : pool.regions()) {
        if (r.kind != uint32_t(RegionKind::store) || r.state != "live") continue;
        nlohmann::json doc = {{"name", r.name}, {"region", r.ref.index}};
        auto store = MemObjectStore::attach(pool, r.name);
        if (!store) {
            doc["error"] = {{"code", std::string(errc_name(store.code()))}, {"message", store.error().message}};
            if (store.code() == Errc::corrupt) violations.push_back("store '" + r.name + "': " + store.error().message);
            stores.push_back(doc);
            continue;
        }
        const StoreStats s = (*store)->stats();
        doc["objects"] = s.objects;
        doc["table_entries"] = s.table_entries;
        doc["heap_used_bytes"] = s.heap_used_bytes;
        doc["heap_capacity_bytes"] = s.heap_capacity_bytes;
        doc["largest_free_extent"] = s.largest_free_extent;
        doc["fragmentation"] = store_fragmentation(pool, r);
        doc["max_object_bytes"] = s.max_object_bytes;
        doc["loans_active"] = s.loans_active;
        doc["pins_active"] = s.pins_active;
        // Table buckets (cache lines) a lookup reads on average, present and absent keys.
        doc["probe_buckets_hit"] = s.probe_buckets_hit;
        doc["probe_buckets_miss"] = s.probe_buckets_miss;
        // Heap block bytes per stored object (header, trailer and size-class rounding included;
        // loans in progress count as used): what one more object of the current mix costs.
        doc["bytes_per_object"] = s.objects ? s.heap_used_bytes / s.objects : 0;
        nlohmann::json buckets = nlohmann::json::array();
        nlohmann::json soonest = nlohmann::json::array();
        if (auto walk = walk_store(pool, r); walk) {
            for (const auto& [bucket, u] : walk->buckets)
                buckets.push_back({{"bucket", bucket}, {"objects", u.objects}, {"bytes", u.bytes},
                                   {"heap_bytes", u.heap_bytes}});
            const uint64_t now = mono_now_ns();
            for (const auto& e : walk->soonest)
                soonest.push_back({{"key", e.key},
                                   {"expires_in_ns", e.expires_mono_ns > now ? e.expires_mono_ns - now : 0},
                                   {"expires", format_wall_ns(mono_to_wall_ns(e.expires_mono_ns))}});
            doc["objects_with_ttl"] = walk->with_ttl;
        }
        doc["buckets"] = buckets;
        doc["soonest_expiries"] = soonest;
        if (s.objects > s.table_entries)
            violations.push_back("store '" + r.name + "': " + std::to_string(s.objects) + " objects exceed " +
                                 std::to_string(s.table_entries) + " table entries");
        if (s.heap_used_bytes > s.heap_capacity_bytes)
            violations.push_back("store '" + r.name + "': heap used " + std::to_string(s.heap_used_bytes) +
                                 " bytes exceeds its capacity " + std::to_string(s.heap_capacity_bytes));
        else if (s.largest_free_extent > s.heap_capacity_bytes - s.heap_used_bytes)
            violations.push_back("store '" + r.name + "': largest free extent " + std::to_string(s.largest_free_extent) +
                                 " exceeds the free bytes " + std::to_string(s.heap_capacity_bytes - s.heap_used_bytes));
        stores.push_back(doc);
    }
    nlohmann::json counters = nlohmann::json::object();
    for (CounterId id : {CounterId::store_puts, CounterId::store_gets, CounterId::store_misses, CounterId::store_removes,
                         CounterId::store_conflicts, CounterId::store_corrupt, CounterId::store_put_bytes,
                         CounterId::store_get_bytes, CounterId::store_loans_reclaimed, CounterId::store_pins_released})
        counters[std::string(counter_name(id))] = counter_total(pool, id);
    out["stores"] = stores;
    out["counters"] = counters;
    if (!violations.empty()) out["violations"] = violations;
}

void render_store(const nlohmann::json& out, std::string& text) {
    const auto& stores = out["stores"];
    if (stores.empty()) text += "  no object store in this pool (`fabric-shm put` creates one)\n";
    Table t({"STORE", "OBJECTS", "ENTRIES", "HEAP USED", "CAPACITY", "LARGEST FREE", "FRAG", "MAX OBJECT", "LOANS",
             "PINS"});
    bool any = false;
    for (const auto& s : stores) {
        if (s.contains("error")) {
            text += "  store '" + s["name"].get<std::string>() + "': " + s["error"]["code"].get<std::string>() + ": " +
                    s["error"]["message"].get<std::string>() + "\n";
            continue;
        }
        any = true;
        t.add({s["name"].get<std::string>(), std::to_string(s["objects"].get<uint64_t>()),
               std::to_string(s["table_entries"].get<uint64_t>()), format_bytes(s["heap_used_bytes"].get<uint64_t>()),
               format_bytes(s["heap_capacity_bytes"].get<uint64_t>()),
               format_bytes(s["largest_free_extent"].get<uint64_t>()), percent(s["fragmentation"].get<double>()),
               format_bytes(s["max_object_bytes"].get<uint64_t>()), std::to_string(s["loans_active"].get<uint64_t>()),
               std::to_string(s["pins_active"].get<uint64_t>())});
    }
    if (any) t.render(text, "  ");
    for (const auto& s : stores)
        if (s.contains("bytes_per_object") && s["objects"].get<uint64_t>() > 0)
            text += "  store '" + s["name"].get<std::string>() + "': " +
                    std::to_string(s["bytes_per_object"].get<uint64_t>()) + " bytes per object (heap, " +
                    std::to_string(s["objects"].get<uint64_t>()) + " objects)\n";
    for (const auto& s : stores) {
        if (!s.contains("buckets") || s["buckets"].empty()) continue;
        std::string line = "  store '" + s["name"].get<std::string>() + "' per bucket:";
        for (const auto& b : s["buckets"])
            line += " " + b["bucket"].get<std::string>() + "=" + std::to_string(b["objects"].get<uint64_t>()) +
                    " objects/" + format_bytes(b["bytes"].get<uint64_t>()) + " (" +
                    format_bytes(b["heap_bytes"].get<uint64_t>()) + " heap)";
        text += line + "\n";
    }
    for (const auto& s : stores) {
        if (!s.contains("soonest_expiries") || s["soonest_expiries"].empty()) continue;
        std::string line = "  store '" + s["name"].get<std::string>() + "' expiring soonest (" +
                           std::to_string(s["objects_with_ttl"].get<uint64_t>()) + " objects have a TTL):";
        for (const auto& e : s["soonest_expiries"])
            line += " " + e["key"].get<std::string>() + " in " + format_duration_ns(e["expires_in_ns"].get<uint64_t>()) + ";";
        line.pop_back();
        text += line + "\n";
    }
    std::string c = "  counters:";
    for (const auto& [k, v] : out["counters"].items()) c += " " + k + "=" + std::to_string(v.get<uint64_t>());
    text += c + "\n";
}

const bool store_section_registered = [] {
    dump_sections().push_back({"store", fill_store, render_store});
    return true;
}();

}  // namespace
}  // namespace fabric_shm::cli
