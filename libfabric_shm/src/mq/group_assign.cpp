// SPDX-License-Identifier: MIT
// The consumer group's target assignment: a pure, deterministic, sticky function of the
// sorted live member ids and the current owners (docs/groups.md, "Assignment").
#include "fabric_shm/consumer_group.h"

#include <algorithm>
#include <numeric>

namespace fabric_shm {

std::vector<int> assign_partitions(uint32_t num_partitions, std::span<const std::string> members,
                                   std::span<const int> previous) {
    std::vector<int> out(num_partitions, -1);
    const size_t n = members.size();
    if (n == 0 || num_partitions == 0) return out;

    // 1. Everyone keeps what it owns (owners outside [0, n) are treated as dead).
    std::vector<std::vector<uint32_t>> owned(n);
    for (uint32_t p = 0; p < num_partitions; ++p) {
        const int o = p < previous.size() ? previous[p] : -1;
        if (o >= 0 && size_t(o) < n) owned[size_t(o)].push_back(p);
    }

    // 2. Quotas: base for everyone, +1 for the `extra` members holding the most partitions
    //    (ties: member order). Giving the larger quotas to the largest holders is what makes
    //    a join take only from others' surplus and a leave give only the leaver's partitions.
    const uint32_t base = num_partitions / uint32_t(n);
    const uint32_t extra = num_partitions % uint32_t(n);
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return owned[a].size() > owned[b].size(); });
    std::vector<uint32_t> quota(n, base);
    for (uint32_t k = 0; k < extra; ++k) quota[order[k]] = base + 1;

    // 3. Members above quota give up their highest-numbered partitions.
    std::vector<uint32_t> free_parts;
    for (uint32_t p = 0; p < num_partitions; ++p) {
        const int o = p < previous.size() ? previous[p] : -1;
        if (o < 0 || size_t(o) >= n) free_parts.push_back(p);
    }
    for (size_t m = 0; m < n; ++m) {
        while (owned[m].size() > quota[m]) {
            free_parts.push_back(owned[m].back());  // owned[m] is ascending
            owned[m].pop_back();
        }
        for (uint32_t p : owned[m]) out[p] = int(m);
    }

    // 4. Free partitions, ascending, fill members below quota in member order.
    std::sort(free_parts.begin(), free_parts.end());
    size_t next = 0;
    for (size_t m = 0; m < n && next < free_parts.size(); ++m)
        for (size_t have = owned[m].size(); have < quota[m] && next < free_parts.size(); ++have)
            out[free_parts[next++]] = int(m);
    return out;
}

}  // namespace fabric_shm
