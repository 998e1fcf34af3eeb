// SPDX-License-Identifier: MIT
// The result-bucket record of a group (result_buckets.h). Crash safety: the record is only
// an announcement; whether it counts is decided by the group's live members (rows LIVE whose
// process is not certainly dead), so a crashed group stops counting as soon as the registry
// can tell, with nothing to repair. A writer killed mid-seqlock leaves results_seq odd: the
// next writer (under the lock, stolen from the dead holder) completes it; readers that find
// it odd for long treat the record as unreadable (no conflict).
#include "mq/result_buckets.h"

#include <time.h>

#include <cstring>

#include "fabric_shm/clock.h"
#include "fabric_shm/registry.h"
#include "fabric_shm/topic.h"
#include "mq/group_internal.h"
#include "owner_lock.h"

namespace fabric_shm::mq {

namespace {

/// Live members of group slot `g` (rows LIVE whose process is not certainly dead), as
/// "id (pid N)" strings; `except` (a member id) is left out.
std::vector<std::string> live_members(const Pool& pool, const GroupSlot& g, std::string_view except, uint64_t now) {
    std::vector<std::string> out;
    for (const GroupMember& gm : g.members) {
        const uint64_t w = gm.word.load(std::memory_order_acquire);  // pairs with the joiner's LIVE CAS
        if (member_state(w) != kMemberLive) continue;
        std::string id = member_id(gm);
        if (id == except) continue;
        if (owner_certainly_dead(pool, member_owner(w), now)) continue;
        out.push_back(std::move(id));
    }
    return out;
}

std::string quoted_list(const std::vector<std::string>& names) {
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "'" : ", '") + n + "'";
    return s;
}

}  // namespace

ResultsRecord read_results_record(const GroupSlot& g) {
    for (int attempt = 0; attempt < 1000; ++attempt) {
        // Acquire: pairs with the writer's release store of the even value.
        const uint64_t s1 = g.results_seq.load(std::memory_order_acquire);
        if (s1 & 1) {
            timespec ts{0, 20'000};
            nanosleep(&ts, nullptr);
            continue;
        }
        const uint64_t flags = g.results_flags.load(std::memory_order_relaxed);
        char buf[kGroupNameWords * 8 + 1] = {};
        for (uint32_t i = 0; i < kGroupNameWords; ++i) {
            const uint64_t w = g.results_bucket[i].load(std::memory_order_relaxed);
            std::memcpy(buf + 8 * i, &w, 8);
        }
        // Acquire fence: the loads above happen before the re-check (pairs with the writer's
        // release fence after its odd store).
        std::atomic_thread_fence(std::memory_order_acquire);
        if (g.results_seq.load(std::memory_order_relaxed) != s1) continue;
        ResultsRecord r;
        if (flags & kResultsSet) {
            r.bucket = std::string(buf, strnlen(buf, kGroupNameWords * 8));
            r.shared = (flags & kResultsShared) != 0;
        }
        return r;
    }
    return {};  // a writer died mid-record (or is stopped there): unreadable, counts as none
}

namespace {

void write_results_record(GroupSlot& g, const std::string& bucket, bool shared) {
    const uint64_t s = g.results_seq.load(std::memory_order_relaxed);
    const uint64_t odd = (s | 1) == s ? s + 2 : s + 1;  // a dead writer's odd value: move past it
    g.results_seq.store(odd, std::memory_order_relaxed);
    // Release fence: readers that see a field below also see the odd sequence.
    std::atomic_thread_fence(std::memory_order_release);
    g.results_flags.store(kResultsSet | (shared ? kResultsShared : 0), std::memory_order_relaxed);
    char buf[kGroupNameWords * 8] = {};
    std::memcpy(buf, bucket.data(), std::min(bucket.size(), sizeof buf));
    for (uint32_t i = 0; i < kGroupNameWords; ++i) {
        uint64_t w;
        std::memcpy(&w, buf + 8 * i, 8);
        g.results_bucket[i].store(w, std::memory_order_relaxed);
    }
    // Release: the fields above before the even value that validates them.
    g.results_seq.store(odd + 1, std::memory_order_release);
}

}  // namespace

Status claim_result_bucket(const Pool& pool, const std::string& topic, const std::string& group,
                           const std::string& member_id, const std::string& bucket, bool shared,
                           uint64_t lock_wait_ns) {
    auto t = open_topic(pool, topic);
    if (!t) return std::move(t).error();
    uint64_t registration = 0;
    const int idx = find_group(**t, group, &registration);
    if (idx < 0) return make_error(Errc::not_found, "group '" + group + "' is not registered on topic '" + topic + "'");
    GroupSlot& g = (*t)->groups[idx];
    const OwnerToken me = pool.self();
    {
        auto lk = detail::owner_lock_acquire(g.lock, pool, me, lock_wait_ns, "group membership lock");
        if (!lk) return std::move(lk).error();
        detail::OwnerLockGuard guard(g.lock, me);
        // A slot freed and registered again meanwhile holds another group's record.
        if (!holds_registration(g, registration))
            return make_error(Errc::not_found, "group '" + group + "' on topic '" + topic +
                                                   "' was deregistered while its result bucket was claimed; open it again");
        const ResultsRecord have = read_results_record(g);
        if (have.bucket != bucket || have.shared != shared) {
            // Another bucket (or sharing) recorded while other members live: they write there.
            // A sharing that differs counts too: rewriting the record to shared would let
            // another shared group into a bucket that a live member never agreed to share.
            const auto others = have.bucket.empty() ? std::vector<std::string>{}
                                                    : live_members(pool, g, member_id, mono_now_ns());
            if (!others.empty() && have.bucket != bucket)
                return make_error(Errc::conflict,
                                  "group '" + group + "' on topic '" + topic + "' writes its results to bucket '" +
                                      have.bucket + "' (live member(s) " + quoted_list(others) +
                                      "); every member of a group writes one result bucket: use --result-bucket " +
                                      have.bucket + ", or another group");
            if (!others.empty())
                return make_error(Errc::conflict,
                                  "group '" + group + "' on topic '" + topic + "' writes bucket '" + have.bucket +
                                      (have.shared ? "' with" : "' without") + " --shared-results (live member(s) " +
                                      quoted_list(others) + "); every member of a group says the same: " +
                                      (have.shared ? "add" : "drop") + " --shared-results, or stop those members first");
            write_results_record(g, bucket, shared);
        }
    }
    // Our record (and our LIVE row, written before it) before the others' records: with the
    // same fence on their side, of two groups starting together at least one sees the other.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    TopicManager tm(const_cast<Pool&>(pool));
    const uint64_t now = mono_now_ns();
    for (const std::string& name : tm.list()) {
        auto other = name == topic ? Result<std::unique_ptr<TopicHandle>>(std::move(t)) : open_topic(pool, name, 0);
        if (!other) continue;  // removed or being created meanwhile: it has no members yet
        for (uint32_t i = 0; i < kMaxGroups; ++i) {
            const GroupSlot& og = (*other)->groups[i];
            // Acquire: pairs with the registrant's release of LIVE (name complete).
            const uint64_t w = og.word.load(std::memory_order_acquire);
            if (group_state(w) != kGroupLive) continue;
            const std::string other_group = group_name(og);
            if (name == topic && other_group == group) continue;  // ourselves
            const ResultsRecord rec = read_results_record(og);
            if (rec.bucket != bucket || (shared && rec.shared)) continue;
            const auto members = live_members(pool, og, "", now);
            if (members.empty()) continue;  // a group that stopped (or crashed) writes nothing now
            return make_error(
                Errc::conflict,
                "result bucket '" + bucket + "' is written by group '" + other_group + "' on topic '" + name +
                    "' (live member(s) " + quoted_list(members) + ")" +
                    (rec.shared ? "" : " without --shared-results") +
                    ": two groups writing one bucket overwrite each other's results when they see the same inputs. "
                    "Give this group its own --result-bucket, or start every group that writes '" + bucket +
                    "' with --shared-results (results are keyed by input bucket and key, so groups fed by "
                    "different inputs do not collide)");
        }
    }
    return {};
}

}  // namespace fabric_shm::mq
