// SPDX-License-Identifier: MIT
// assign_partitions: determinism, balance and stickiness over many random membership
// sequences (property-style, seeded so failures reproduce).
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fabric_shm/consumer_group.h"

using namespace fabric_shm;

namespace {

/// prev over the new member list, from an owner-by-id map.
std::vector<int> previous_for(const std::vector<std::string>& members, const std::vector<std::string>& owner_ids) {
    std::vector<int> prev(owner_ids.size(), -1);
    for (size_t p = 0; p < owner_ids.size(); ++p) {
        auto it = std::find(members.begin(), members.end(), owner_ids[p]);
        if (it != members.end()) prev[p] = int(it - members.begin());
    }
    return prev;
}

void check_balanced(const std::vector<int>& a, size_t n) {
    std::vector<size_t> count(n, 0);
    for (int o : a) {
        REQUIRE(o >= 0);
        REQUIRE(size_t(o) < n);
        ++count[size_t(o)];
    }
    const auto [mn, mx] = std::minmax_element(count.begin(), count.end());
    REQUIRE(*mx - *mn <= 1);
}

}  // namespace

TEST_CASE("assign: no members leaves every partition unowned") {
    const std::vector<std::string> none;
    const std::vector<int> prev(8, -1);
    const auto a = assign_partitions(8, none, prev);
    CHECK(a == std::vector<int>(8, -1));
}

TEST_CASE("assign: one member gets everything; equal inputs give equal outputs") {
    const std::vector<std::string> one{"w1"};
    const std::vector<int> prev(5, -1);
    CHECK(assign_partitions(5, one, prev) == std::vector<int>(5, 0));
    const std::vector<std::string> three{"a", "b", "c"};
    const std::vector<int> p3{0, -1, 2, 2, 2, -1, 1};
    CHECK(assign_partitions(7, three, p3) == assign_partitions(7, three, p3));
}

TEST_CASE("assign: more members than partitions gives at most one partition each") {
    const std::vector<std::string> m{"a", "b", "c", "d", "e"};
    const auto a = assign_partitions(3, m, std::vector<int>(3, -1));
    std::set<int> owners(a.begin(), a.end());
    CHECK(owners.size() == 3);
}

TEST_CASE("assign: random join/leave sequences keep balance and move only the joiner's or leaver's partitions") {
    std::mt19937_64 rng(20261127);
    int joins = 0, leaves = 0;
    for (int seq = 0; seq < 300; ++seq) {
        const uint32_t parts = 1 + uint32_t(rng() % 64);
        std::vector<std::string> members;                 // sorted
        std::vector<std::string> owner(parts);            // owner id per partition ("" = none)
        int next_id = 0;
        for (int step = 0; step < 40; ++step) {
            const bool join = members.empty() || (members.size() < 32 && rng() % 2 == 0);
            std::string changed;
            if (join) {
                changed = "m" + std::to_string(rng() % 1000) + "-" + std::to_string(next_id++);
                members.insert(std::upper_bound(members.begin(), members.end(), changed), changed);
                ++joins;
            } else {
                const size_t k = rng() % members.size();
                changed = members[k];
                members.erase(members.begin() + long(k));
                ++leaves;
            }
            const auto prev = previous_for(members, owner);
            const auto a = assign_partitions(parts, members, prev);
            REQUIRE(a == assign_partitions(parts, members, prev));  // deterministic
            if (members.empty()) {
                CHECK(a == std::vector<int>(parts, -1));
                std::fill(owner.begin(), owner.end(), std::string());
                continue;
            }
            check_balanced(a, members.size());
            const bool was_complete =
                std::none_of(owner.begin(), owner.end(), [](const std::string& s) { return s.empty(); });
            for (uint32_t p = 0; p < parts; ++p) {
                const std::string& now = members[size_t(a[p])];
                if (now == owner[p] || !was_complete) continue;
                if (join)
                    REQUIRE_MESSAGE(now == changed, "join moved partition " << p << " from " << owner[p] << " to "
                                                                            << now << " (joiner " << changed << ")");
                else
                    REQUIRE_MESSAGE(owner[p] == changed, "leave of " << changed << " moved partition " << p
                                                                     << " owned by " << owner[p]);
            }
            for (uint32_t p = 0; p < parts; ++p) owner[p] = members[size_t(a[p])];
        }
    }
    CHECK(joins > 1000);
    CHECK(leaves > 1000);
}
