// SPDX-License-Identifier: MIT
// The table of region-kind hooks (reaper, --check), filled once per process.
#include "region_kinds.h"

#include <map>
#include <mutex>

#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"  // register_mq_region_kinds (topics, issue 4)

namespace fabric_shm {

namespace {
std::mutex g_ops_mutex;
std::map<uint32_t, RegionKindOps>& ops_table() {
    static std::map<uint32_t, RegionKindOps> table;
    return table;
}
}  // namespace

void register_region_kind_ops(RegionKind kind, RegionKindOps ops) {
    std::lock_guard<std::mutex> lock(g_ops_mutex);
    ops_table()[uint32_t(kind)] = std::move(ops);
}

const RegionKindOps* region_kind_ops(uint32_t kind) {
    std::lock_guard<std::mutex> lock(g_ops_mutex);
    auto it = ops_table().find(kind);
    return it == ops_table().end() ? nullptr : &it->second;
}

namespace detail {

void register_store_region_kinds();  // store/mem_object_store.cpp
void register_metrics_region_kind();  // metrics.cpp (also declared in fabric_shm/metrics.h)

void register_builtin_region_kinds() {
    static std::once_flag once;
    std::call_once(once, [] {
        // Each data structure adds its registration call here (one line each).
        register_store_region_kinds();  // object store (store/mem_object_store.cpp)
        register_mq_region_kinds();  // topic + partition (mq)
        register_metrics_region_kind();  // latency histograms (metrics.cpp)
    });
}

}  // namespace detail
}  // namespace fabric_shm
