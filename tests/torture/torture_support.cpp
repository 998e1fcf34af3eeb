// SPDX-License-Identifier: MIT
#include "torture_support.h"

#include <fstream>
#include <sstream>

#include "fabric_shm/clock.h"
#include "fabric_shm/uri.h"
#include "store/store_core.h"
#include "store/store_layout.h"

namespace fabric_shm::torture {

uint64_t pick_size(Rng& rng) {
    const uint64_t r = rng.below(100);
    if (r < 5) return 0;
    if (r < 75) return 1 + rng.below(4096);
    if (r < 95) return 4097 + rng.below(12 * 1024);
    return 16 * 1024 + rng.below(144 * 1024);
}

std::string content(const std::string& key, int variant, uint64_t size) {
    uint64_t x = 0xcbf29ce484222325ull;
    for (char c : key) x = (x ^ uint8_t(c)) * 0x100000001b3ull;
    x ^= uint64_t(variant) * 0x9E3779B97F4A7C15ull;
    if (!x) x = 1;
    std::string out(size, '\0');
    for (uint64_t i = 0; i < size; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = char('a' + x % 26);
    }
    return out;
}

Space measure_space(const Pool& pool, const std::string& store_name) {
    Space sp;
    std::optional<RegionInfo> root_info;
    for (const RegionInfo& r : pool.regions())
        if (r.kind == uint32_t(RegionKind::store) && r.name == store_name && r.state == "live") root_info = r;
    if (!root_info) {
        sp.error = "no live store '" + store_name + "'";
        return sp;
    }
    auto root = pool.open_region(root_info->ref);
    if (!root) {
        sp.error = root.error().message;
        return sp;
    }
    auto bound = detail::bind_store_regions(pool, std::move(*root));
    if (!bound) {
        sp.error = bound.error().message;
        return sp;
    }
    const detail::StoreCore& core = *bound->core;
    auto keys = core.keys(mono_now_ns());
    if (!keys) {
        sp.error = keys.error().message;
        return sp;
    }
    for (const std::string& bk : *keys) {
        const size_t slash = bk.find('/');
        auto uri = FabricUri::make(pool.name(), bk.substr(0, slash), bk.substr(slash + 1));
        if (!uri) continue;
        auto key = detail::make_store_key(*uri);
        if (!key) continue;
        auto f = core.lookup(*key);
        if (!f || !*f) continue;
        ++sp.objects;
        sp.live_block_bytes += (*f)->snap.loc.capacity;
        sp.payload_bytes += (*f)->snap.h.size;
    }
    const auto u = core.usage();
    sp.used_bytes = u.used_bytes;
    sp.largest_free_extent = u.largest_free_extent;
    sp.capacity_bytes = core.heap_bytes();
    sp.loans = u.loans;
    sp.pins = u.pins;
    sp.superblocks_small = u.superblocks_small;
    sp.superblocks_run = u.superblocks_run;
    sp.superblocks_free = u.superblocks_free;
    const auto& hdr = core.header();
    const auto* buckets = reinterpret_cast<const store_layout::Bucket*>(root->data() + hdr.buckets_offset);
    if (hdr.buckets_offset + hdr.bucket_count * sizeof(store_layout::Bucket) <= root->length())
        for (uint64_t b = 0; b < hdr.bucket_count; ++b)
            sp.overflow_counts += buckets[b].overflow.load(std::memory_order_relaxed);
    return sp;
}

long anonymous_kib(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("Anonymous:", 0) == 0) {
            std::istringstream ls(line.substr(10));
            long kib = -1;
            ls >> kib;
            return kib;
        }
    }
    return -1;
}

}  // namespace fabric_shm::torture
