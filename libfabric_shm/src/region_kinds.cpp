// SPDX-License-Identifier: MIT
// The table of region-kind hooks (reaper, --check), filled by the modules at load.
#include "region_kinds.h"

#include <map>
#include <mutex>

namespace fabric_shm {

namespace {
// Function-local statics: the modules' registrations run during static initialisation, in
// an order across translation units that C++ leaves open.
std::mutex& ops_mutex() {
    static std::mutex m;
    return m;
}
std::map<uint32_t, RegionKindOps>& ops_table() {
    static std::map<uint32_t, RegionKindOps> table;
    return table;
}
}  // namespace

void register_region_kind_ops(RegionKind kind, RegionKindOps ops) {
    std::lock_guard<std::mutex> lock(ops_mutex());
    ops_table()[uint32_t(kind)] = std::move(ops);
}

const RegionKindOps* region_kind_ops(uint32_t kind) {
    std::lock_guard<std::mutex> lock(ops_mutex());
    auto it = ops_table().find(kind);
    // Entries are never erased or replaced after load, so the pointer stays valid.
    return it == ops_table().end() ? nullptr : &it->second;
}

}  // namespace fabric_shm
