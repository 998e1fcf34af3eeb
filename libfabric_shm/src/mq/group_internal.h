// SPDX-License-Identifier: MIT
// Internal to consumer groups: the encodings of the member row word and the
// partition owner word inside mq/topic_layout.h's GroupSlot, shared by group.cpp, dlq.cpp
// and the tools. docs/groups.md has the state machines.
#pragma once

#include "private.h"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "fabric_shm/consumer_group.h"
#include "fabric_shm/result.h"
#include "fetch_max.h"
#include "mq/topic_internal.h"
#include "mq/topic_layout.h"

namespace fabric_shm::mq {

// ---- GroupMember::word = state(8) << 56 | generation(24) << 32 | owner token(32) ----------
//   FREE(g)       unused; a joiner holding GroupSlot::lock writes id/heartbeat, then CASes
//   LIVE(g+1, o)  member of process o; heartbeat_ns refreshed by claim/heartbeat (only forward)
// LIVE -> FREE(g+1) by CAS from the exact word: leave (the member) or eviction (anyone, when
// the heartbeat is older than the session timeout or the process is certainly dead). A new
// registration of the slot sets every row FREE(g+1), never back to 0: the generations of a row
// only grow, so a CAS from a word of an earlier registration fails.
enum MemberState : uint64_t { kMemberFree = 0, kMemberLive = 2 };
constexpr uint64_t make_member_word(uint64_t state, uint32_t gen, OwnerToken owner) {
    return (state << 56) | (uint64_t(gen & 0xffffff) << 32) | owner;
}
constexpr uint64_t member_state(uint64_t w) { return w >> 56; }
constexpr uint32_t member_gen(uint64_t w) { return uint32_t(w >> 32) & 0xffffff; }
constexpr OwnerToken member_owner(uint64_t w) { return OwnerToken(w); }
/// Stores a member's heartbeat only forward. A member that read its clock, checked its row and
/// paused may resume after it was evicted and its row taken by a newer member; its late store
/// of the older instant would make the newcomer look silent, and the next claim evict it.
/// Release: pairs with alive()'s acquire.
inline void raise_heartbeat(std::atomic<uint64_t>& heartbeat_ns, uint64_t now) noexcept {
    detail::fetch_max(heartbeat_ns, now, std::memory_order_release);
}
constexpr uint32_t kMemberIdWords = 4;  ///< GroupMember::id: 32 bytes NUL-padded
static_assert(kMemberIdWords * 8 == kMaxMemberIdLength, "the longest member id fills GroupMember::id exactly");

// ---- GroupPartition::owner = (row generation(24) << 8 | (row + 1)(8)) << 32 | epoch(32) ----
//   0 = unowned. The row generation makes an owner word of a departed member recognisably
//   stale even after its row is reused; the epoch is the fence token drawn at acquisition.
//   Changed only by CAS: acquire (0 or dead owner -> me), release/leave (me -> 0).
constexpr uint64_t kMaxOwnerEpoch = 0xffffffffull;
constexpr uint64_t make_owner_word(uint32_t row, uint32_t gen, uint64_t epoch) {
    return (uint64_t((gen & 0xffffff) << 8 | ((row + 1) & 0xff)) << 32) | (epoch & kMaxOwnerEpoch);
}
constexpr uint32_t owner_row(uint64_t w) { return uint32_t(w >> 32) & 0xff; }  ///< row + 1; 0 = none
constexpr uint32_t owner_gen(uint64_t w) { return uint32_t(w >> 40) & 0xffffff; }
constexpr uint64_t owner_epoch(uint64_t w) { return w & kMaxOwnerEpoch; }
static_assert(kMaxMembers < 255, "row + 1 fits 8 bits");

/// A member with nothing to read re-claims at least this often (the 50 ms takeover bound).
constexpr uint64_t kGroupRecheckNs = 50'000'000ull;
/// A busy GroupConsumer claims (heartbeat + rebalance) at most this often.
constexpr uint64_t kClaimIntervalNs = 10'000'000ull;

std::string member_id(const GroupMember& m);
Status validate_member_id(std::string_view id);

/// Raises commit_epoch of each partition to at least `epoch` under GroupSlot::lock (the lock
/// commit_in_pool checks epochs under), while the slot still holds `registration` (the group
/// word). Returns (fences raised, epoch).
Result<std::pair<uint32_t, uint64_t>> raise_fences(const Pool& pool, GroupSlot& g, uint64_t registration,
                                                   std::span<const uint32_t> parts, uint64_t epoch);

}  // namespace fabric_shm::mq
