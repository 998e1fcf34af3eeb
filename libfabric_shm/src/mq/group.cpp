// SPDX-License-Identifier: MIT
// ConsumerGroup: membership rows, CAS-only partition owner words and epoch fences in the
// topic's group table (mq/topic_layout.h: GroupSlot::members, GroupPartition::owner).
// No coordinator: every member's claim() evicts dead members, computes the same sticky
// target and moves owner words by CAS. docs/groups.md has the state machines and proofs.
#include "fabric_shm/consumer_group.h"

#include <time.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "fabric_shm/clock.h"
#include "crash_point.h"
#include "fabric_shm/registry.h"
#include "mq/group_internal.h"
#include "mq/result_buckets.h"
#include "owner_lock.h"

namespace fabric_shm {

using namespace mq;

namespace mq {

std::string member_id(const GroupMember& m) {
    char buf[kMemberIdWords * 8 + 1] = {};
    for (uint32_t i = 0; i < kMemberIdWords; ++i) {
        const uint64_t w = m.id[i].load(std::memory_order_relaxed);  // written while FREE; re-check the word
        std::memcpy(buf + 8 * i, &w, 8);
    }
    return std::string(buf, strnlen(buf, kMemberIdWords * 8));
}

Status validate_member_id(std::string_view id) {
    if (id.empty() || id.size() > kMaxMemberIdLength)
        return make_error(Errc::invalid_argument, "member id of " + std::to_string(id.size()) +
                                                      " bytes must be 1.." + std::to_string(kMaxMemberIdLength) +
                                                      " bytes");
    for (char c : id)
        if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f)
            return make_error(Errc::invalid_argument, "member id '" + std::string(id) +
                                                          "' must be printable ASCII without spaces");
    return {};
}

Result<std::pair<uint32_t, uint64_t>> raise_fences(const Pool& pool, GroupSlot& g, uint64_t registration,
                                                   std::span<const uint32_t> parts, uint64_t epoch,
                                                   uint64_t lock_wait_ns) {
    bool needed = false;
    for (uint32_t p : parts)
        // Relaxed: only decides whether to take the lock; re-read under it.
        if (g.parts[p].commit_epoch.load(std::memory_order_relaxed) < epoch) needed = true;
    if (!needed) return std::pair<uint32_t, uint64_t>{0, 0};
    const OwnerToken me = pool.self();
    auto lk = detail::owner_lock_acquire(g.lock, pool, me, lock_wait_ns, "group fence lock");
    if (!lk) return std::move(lk).error();
    // A stolen lock needs no repair: a fence is one store, and commit_in_pool's own crash
    // window (epoch stored, offset not) is harmless (see there).
    detail::OwnerLockGuard guard(g.lock, me);
    // A fence drawn for a group that was removed meanwhile must not land in the next one.
    if (!holds_registration(g, registration))
        return make_error(Errc::not_found, "the group was deregistered (lease expired or removed) before its fences "
                                           "were raised; open it again");
    uint32_t raised = 0;
    for (uint32_t p : parts) {
        auto& ce = g.parts[p].commit_epoch;
        if (ce.load(std::memory_order_relaxed) < epoch) {  // under the lock, as commit_in_pool
            ce.store(epoch, std::memory_order_relaxed);       // the lock's release publishes it
            ++raised;
        }
    }
    return std::pair<uint32_t, uint64_t>{raised, epoch};
}

}  // namespace mq

namespace {

struct LocalMember {
    std::string id;
    uint32_t row = 0;
    uint32_t gen = 0;        ///< row generation at our LIVE store
    uint64_t word = 0;       ///< our LIVE row word
    uint64_t epoch = 0;      ///< our current epoch (relative to the era; the fence token is era + epoch)
    std::vector<uint32_t> last_parts;
    uint64_t last_epoch = 0;
};

struct Probe {
    uint64_t word = 0;      ///< row word the verdict is for
    uint64_t at_ns = 0;
    bool dead = false;
};

}  // namespace

struct ConsumerGroup::Impl {
    Pool pool_handle;  ///< keeps the mapping alive: the caller's Pool may be moved or dropped
    const Pool* pool = nullptr;  ///< &pool_handle
    std::string group, topic;
    uint32_t num_partitions = 0;
    GroupConfig config;
    std::unique_ptr<TopicHandle> t;
    GroupRef gref;
    uint64_t era = 0;  ///< GroupSlot::era of our registration: fence tokens are era + epoch
    std::vector<LocalMember> members;
    std::array<Probe, kMaxMembers> probes{};

    GroupSlot& slot() const { return t->groups[gref.index]; }
    /// A member's wait for the group's lock: bounded by its session, since the wait keeps the
    /// process's registration alive but not the member's row.
    uint64_t lock_wait_ns() const { return group_lock_wait_for_session(to_ns(config.session_timeout)); }
    // era < kMaxFenceEra (checked at open) and epoch <= kMaxOwnerEpoch (draw_epoch): below 2^62.
    uint64_t token(uint64_t epoch) const { return era + epoch; }
    static_assert(kMaxOwnerEpoch < (uint64_t(1) << 32), "era + epoch must stay below 2^62 (kMaxFenceEra)");

    Status check(uint64_t now) {
        Status topic = check_topic(*t);
        // busy: a reaper between its marks on the topic's region while its lease lives (it
        // keeps the region while we hold it). The group's lease is renewed all the same: a
        // caller that waits out the busy answer must not let the group's lease run out
        // meanwhile, or producers pass the group over.
        if (!topic && topic.code() != Errc::busy) return topic;
        FABRIC_TRY(renew_group(*t, gref, group, now));
        return topic;
    }

    LocalMember* find(std::string_view id) {
        for (auto& m : members)
            if (m.id == id) return &m;
        return nullptr;
    }

    Error not_member(std::string_view id) const {
        return make_error(Errc::not_found, "member '" + std::string(id) + "' has not joined group '" + group +
                                               "' through this handle");
    }

    Error evicted(const LocalMember& m) const {
        return make_error(Errc::stale_epoch, "member '" + m.id + "' of group '" + group + "' (epoch " +
                                                 std::to_string(m.epoch) +
                                                 ") was evicted (heartbeat older than the session timeout " +
                                                 format_duration_ns(to_ns(config.session_timeout)) +
                                                 ", or presumed dead); join again");
    }

    /// Alive = LIVE, heartbeat within the session timeout, process not certainly dead
    /// (asked at most every liveness_probe per row word).
    bool alive(uint32_t row, uint64_t word, uint64_t now) {
        if (member_state(word) != kMemberLive) return false;
        for (const auto& m : members)
            if (m.row == row && m.word == word) return true;  // ourselves (the word alone is not unique per row)
        const GroupMember& gm = slot().members[row];
        const uint64_t hb = gm.heartbeat_ns.load(std::memory_order_acquire);  // pairs with heartbeat's release
        const uint64_t session = to_ns(config.session_timeout);
        // Ahead of our `now` by more than a session: our clock read may be stale (we paused
        // since), so the member is judged against a fresh read. A heartbeat ahead of that too
        // was written by no clock (damage), and heartbeats only move forward
        // (raise_heartbeat), so its member could never bring it back: judged silent, as if it
        // stopped (it joins again).
        const uint64_t at = hb > now && hb - now > session ? mono_now_ns() : now;
        if (at > hb ? at - hb > session : hb - at > session) return false;
        Probe& pr = probes[row];
        if (pr.word != word || now - pr.at_ns >= to_ns(config.liveness_probe)) {
            pr.word = word;
            pr.at_ns = now;
            pr.dead = owner_certainly_dead(*pool, member_owner(word), now);
        }
        return !pr.dead;
    }

    /// After evicting a member: when its process is certainly dead (not merely silent past the
    /// session timeout), end its registration now rather than at the next reap, which kills
    /// the child process groups it recorded (its --exec command) within moments of the death.
    void end_registration_if_dead(OwnerToken owner) const {
        if (owner != 0) (void)pool->registry().reap_registration(owner, MonoClock::now());
    }

    bool mine(const LocalMember& m, uint64_t owner) const {
        return owner != 0 && owner_row(owner) == m.row + 1 && owner_gen(owner) == (m.gen & 0xffffff);
    }

    /// Our owner word on p and no fence above our token (a new owner CASes the owner word
    /// before it raises the fence, so one of the two shows it).
    bool holds(const LocalMember& m, uint32_t p) const {
        const GroupPartition& gp = slot().parts[p];
        if (!mine(m, gp.owner.load(std::memory_order_seq_cst))) return false;  // pairs with owner CASes
        return gp.commit_epoch.load(std::memory_order_acquire) <= token(m.epoch);
    }

    Status verify_row(const LocalMember& m) const {
        // seq_cst: pairs with an evicter's seq_cst CAS then epoch draw (docs/groups.md, "zombies").
        if (slot().members[m.row].word.load(std::memory_order_seq_cst) != m.word) return evicted(m);
        return {};
    }

    /// A fresh epoch (relative to the era). Its token is noted in the pool's fence floor
    /// before the registration is re-checked, so the token is either refused here (the group
    /// was deregistered) or below every later registration's era.
    Result<uint64_t> draw_epoch(const LocalMember& m) {
        const uint64_t e = slot().epoch.fetch_add(1, std::memory_order_seq_cst) + 1;  // after our evictions
        if (e > kMaxOwnerEpoch)
            return make_error(Errc::capacity_exceeded, "group '" + group + "' epoch " + std::to_string(e) +
                                                           " exceeds the owner word's limit " +
                                                           std::to_string(kMaxOwnerEpoch) +
                                                           "; remove and re-register the group");
        raise_fence_floor(*pool, token(e));
        // seq_cst: pairs with deregister_group's seq_cst CAS (see raise_fence_floor).
        if (slot().word.load(std::memory_order_seq_cst) != gref.word)
            return make_error(Errc::not_found, "group '" + group + "' on topic '" + topic +
                                                   "' was deregistered (lease expired or removed); open it again");
        FABRIC_TRY(verify_row(m));  // drawn after our eviction => every zombie epoch is lower
        return e;
    }
    /// Makes `e` (from draw_epoch) the member's epoch, and notes its token in the member's row
    /// (diagnostics only: owner words and fences carry the epochs that decide).
    void adopt_epoch(LocalMember& m, uint64_t e) {
        m.epoch = e;
        slot().members[m.row].epoch.store(token(e), std::memory_order_relaxed);
    }

    Result<Claim> claim(LocalMember& m, const std::function<void(uint32_t)>& giving_up);
};

Result<ConsumerGroup> ConsumerGroup::open(const Pool& pool, std::string_view topic, std::string_view group,
                                          uint32_t num_partitions, const GroupConfig& config) {
    if (pool.self() == 0)
        return make_error(Errc::permission_denied, "consumer group '" + std::string(group) +
                                                       "' needs a writable pool (this handle is read-only)");
    if (config.session_timeout <= Duration::zero())
        return make_error(Errc::invalid_argument, "session_timeout 0 must be > 0");
    auto t = open_topic(pool, topic);
    if (!t) return std::move(t).error();
    if ((*t)->num_partitions != num_partitions)
        return make_error(Errc::invalid_argument, "consumer group '" + std::string(group) + "' expects " +
                                                      std::to_string(num_partitions) + " partitions but topic '" +
                                                      std::string(topic) + "' has " +
                                                      std::to_string((*t)->num_partitions));
    auto ref = register_group(**t, group, config.registration);
    if (!ref) return std::move(ref).error();
    auto im = std::make_unique<Impl>();
    im->pool_handle = pool;
    im->pool = &im->pool_handle;
    im->group = std::string(group);
    im->topic = std::string(topic);
    im->num_partitions = num_partitions;
    im->config = config;
    im->t = std::move(*t);
    im->gref = *ref;
    // Relaxed: written while CREATING and published by the LIVE release store that
    // register_group's find/CAS acquired; immutable while the registration lives.
    im->era = im->t->groups[ref->index].era.load(std::memory_order_relaxed);
    // Not trusted: era + every epoch must stay below the bound, or tokens would wrap.
    if (im->era >= kMaxFenceEra)
        return make_error(Errc::corrupt, "group '" + std::string(group) + "' on topic '" + std::string(topic) +
                                             "': fence era " + std::to_string(im->era) + " is above the bound " +
                                             std::to_string(kMaxFenceEra) +
                                             " (2^62 - 2^32); remove and re-register the group");
    return ConsumerGroup(std::move(im));
}

ConsumerGroup::ConsumerGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ConsumerGroup::ConsumerGroup(ConsumerGroup&&) noexcept = default;
ConsumerGroup& ConsumerGroup::operator=(ConsumerGroup&&) noexcept = default;
ConsumerGroup::~ConsumerGroup() = default;

const std::string& ConsumerGroup::group() const { return impl_->group; }
const std::string& ConsumerGroup::topic() const { return impl_->topic; }
uint32_t ConsumerGroup::num_partitions() const { return impl_->num_partitions; }
const Pool& ConsumerGroup::pool() const { return *impl_->pool; }

Result<Claim> ConsumerGroup::join(std::string_view member_id) {
    Impl& im = *impl_;
    FABRIC_TRY(validate_member_id(member_id));
    if (im.find(member_id))
        return make_error(Errc::already_exists, "member '" + std::string(member_id) +
                                                    "' already joined group '" + im.group + "' through this handle");
    uint64_t now = mono_now_ns();
    FABRIC_TRY(im.check(now));
    const OwnerToken me = im.pool->self();
    GroupSlot& g = im.slot();
    LocalMember m;
    std::vector<OwnerToken> evicted;  // ended after the lock is released
    struct EndEvicted {
        Impl& im;
        std::vector<OwnerToken>& tokens;
        ~EndEvicted() {
            for (OwnerToken t : tokens) im.end_registration_if_dead(t);
        }
    } end_evicted{im, evicted};
    {
        FABRIC_PAUSE_POINT("group.join.before_lock");
        auto lk = detail::owner_lock_acquire(g.lock, *im.pool, me, im.lock_wait_ns(), "group membership lock");
        if (!lk) return std::move(lk).error();
        // A stolen lock needs no repair: a joiner writes a FREE row's fields and publishes
        // them with one CAS; a crash before it leaves the row FREE (fields ignored).
        detail::OwnerLockGuard guard(g.lock, me);
        // A join that read the group before it was deregistered adds no member to the next one.
        if (!holds_registration(g, im.gref.word))
            return make_error(Errc::not_found, "group '" + im.group + "' on topic '" + im.topic +
                                                   "' was deregistered (lease expired or removed); open it again");
        now = mono_now_ns();
        int free_row = -1;
        for (uint32_t r = 0; r < kMaxMembers; ++r) {
            GroupMember& gm = g.members[r];
            uint64_t w = gm.word.load(std::memory_order_seq_cst);  // pairs with LIVE/FREE CASes
            if (member_state(w) == kMemberLive) {
                const bool same_id = mq::member_id(gm) == member_id;
                if (im.alive(r, w, now)) {
                    if (same_id)
                        return make_error(Errc::already_exists,
                                          "member id '" + std::string(member_id) + "' is already live in group '" +
                                              im.group + "' (row " + std::to_string(r) + ", owner token " +
                                              std::to_string(member_owner(w)) + "); choose another --id");
                    continue;
                }
                // Dead: evict (CAS from the exact word) so the row and its partitions are freed.
                const OwnerToken owner = member_owner(w);
                if (!gm.word.compare_exchange_strong(w, make_member_word(kMemberFree, member_gen(w) + 1, 0),
                                                     std::memory_order_seq_cst, std::memory_order_seq_cst))
                    continue;
                evicted.push_back(owner);
                w = make_member_word(kMemberFree, member_gen(w) + 1, 0);
            }
            if (member_state(w) == kMemberFree && free_row < 0) free_row = int(r);
        }
        if (free_row < 0)
            return make_error(Errc::capacity_exceeded, "group '" + im.group + "' already has " +
                                                           std::to_string(kMaxMembers) + " live members (the limit)");
        GroupMember& gm = g.members[free_row];
        uint64_t fw = gm.word.load(std::memory_order_acquire);  // FREE: only joiners (under the lock) change it
        // Release fence: a claimer that reads one of the id words below while it still holds
        // the row's previous LIVE word re-checks that word after an acquire fence (claim, step
        // 1); fence to fence, it then sees the row changed (the eviction we saw FREE from).
        std::atomic_thread_fence(std::memory_order_release);
        char idbuf[kMemberIdWords * 8] = {};
        std::memcpy(idbuf, member_id.data(), member_id.size());
        for (uint32_t k = 0; k < kMemberIdWords; ++k) {
            uint64_t v;
            std::memcpy(&v, idbuf + 8 * k, 8);
            gm.id[k].store(v, std::memory_order_relaxed);  // published by the LIVE CAS below
        }
        gm.heartbeat_ns.store(now, std::memory_order_relaxed);
        gm.epoch.store(0, std::memory_order_relaxed);
        FABRIC_PAUSE_POINT("group.join.before_publish");
        const uint32_t gen = member_gen(fw) + 1;
        const uint64_t live = make_member_word(kMemberLive, gen, me);
        // seq_cst (release part): publishes id/heartbeat to readers' acquire of the word.
        if (!gm.word.compare_exchange_strong(fw, live, std::memory_order_seq_cst, std::memory_order_relaxed))
            return make_error(Errc::corrupt, "group '" + im.group + "' member row " + std::to_string(free_row) +
                                                 " changed while the membership lock was held");
        m.id = std::string(member_id);
        m.row = uint32_t(free_row);
        m.gen = gen & 0xffffff;
        m.word = live;
    }
    auto e = im.draw_epoch(m);
    if (!e) return std::move(e).error();
    im.adopt_epoch(m, *e);
    FABRIC_PAUSE_POINT("group.join.joined");
    im.members.push_back(std::move(m));
    return im.claim(im.members.back(), {});
}

Result<Claim> ConsumerGroup::claim(std::string_view member_id) { return claim(member_id, {}); }

Result<Claim> ConsumerGroup::claim(std::string_view member_id, const std::function<void(uint32_t)>& giving_up) {
    LocalMember* m = impl_->find(member_id);
    // First claim through this handle: join (the recipe's sequence); it owns nothing to give up.
    if (!m) return join(member_id);
    return impl_->claim(*m, giving_up);
}

Result<Claim> ConsumerGroup::Impl::claim(LocalMember& m, const std::function<void(uint32_t)>& giving_up) {
    const uint64_t now = mono_now_ns();
    FABRIC_TRY(check(now));
    FABRIC_TRY(verify_row(m));
    GroupSlot& g = slot();
    raise_heartbeat(g.members[m.row].heartbeat_ns, now);
    FABRIC_TRY(pool->heartbeat(MonoClock::from_ns(now)));  // fenced (judged dead by its heartbeat): fail closed
    FABRIC_PAUSE_POINT("group.claim.before_scan");

    // 1. Live members (evicting the dead: CAS from the exact word, so a wrongly presumed
    //    member's own row check fails instead of two members sharing a row).
    struct Live {
        std::string id;
        uint32_t row;
        uint32_t gen;
    };
    std::vector<Live> live;
    for (uint32_t r = 0; r < kMaxMembers; ++r) {
        GroupMember& gm = g.members[r];
        uint64_t w = gm.word.load(std::memory_order_seq_cst);  // pairs with join/leave/evict CASes
        if (member_state(w) != kMemberLive) continue;
        if (!alive(r, w, now)) {
            FABRIC_PAUSE_POINT("group.evict.before_cas");
            const OwnerToken owner = member_owner(w);
            if (gm.word.compare_exchange_strong(w, make_member_word(kMemberFree, member_gen(w) + 1, 0),
                                                std::memory_order_seq_cst, std::memory_order_seq_cst))
                end_registration_if_dead(owner);
            continue;
        }
        std::string id = mq::member_id(gm);
        // Acquire fence: orders the id's relaxed loads before the word's re-load (a seqlock
        // read; partner: the joiner's release fence before it writes the id).
        std::atomic_thread_fence(std::memory_order_acquire);
        if (gm.word.load(std::memory_order_relaxed) != w) continue;  // row reused while reading the id
        live.push_back(Live{std::move(id), r, member_gen(w) & 0xffffff});
    }
    std::sort(live.begin(), live.end(), [](const Live& a, const Live& b) { return a.id < b.id; });
    int me_pos = -1;
    std::vector<std::string> ids;
    ids.reserve(live.size());
    for (size_t i = 0; i < live.size(); ++i) {
        ids.push_back(live[i].id);
        if (live[i].row == m.row && live[i].gen == m.gen) me_pos = int(i);
    }
    if (me_pos < 0) return evicted(m);

    // 2. Current owners -> positions in `live` (a dead or unknown owner counts as none).
    std::vector<uint64_t> words(num_partitions);
    std::vector<int> prev(num_partitions, -1);
    for (uint32_t p = 0; p < num_partitions; ++p) {
        words[p] = g.parts[p].owner.load(std::memory_order_seq_cst);  // pairs with owner CASes
        const uint64_t w = words[p];
        if (w == 0) continue;
        for (size_t i = 0; i < live.size(); ++i)
            if (owner_row(w) == live[i].row + 1 && owner_gen(w) == live[i].gen) prev[p] = int(i);
    }
    const std::vector<int> target = assign_partitions(num_partitions, ids, prev);

    // 3. Release what the target gives to others (the caller committed before claiming).
    for (uint32_t p = 0; p < num_partitions; ++p) {
        if (!mine(m, words[p]) || target[p] == me_pos) continue;
        if (giving_up) giving_up(p);  // still ours: the caller settles its hand-outs first
        uint64_t w = words[p];
        g.parts[p].owner.compare_exchange_strong(w, 0, std::memory_order_seq_cst, std::memory_order_seq_cst);
    }

    // 4. Take target partitions that are unowned or owned by a dead member, under a fresh
    //    epoch drawn after the evictions above.
    Claim c;
    std::vector<uint32_t> take;
    for (uint32_t p = 0; p < num_partitions; ++p) {
        if (target[p] != me_pos || mine(m, words[p])) continue;
        if (prev[p] >= 0)
            ++c.pending;  // a live member still holds it; it releases on its next claim
        else
            take.push_back(p);
    }
    if (!take.empty()) {
        auto e = draw_epoch(m);
        if (!e) return std::move(e).error();
        FABRIC_PAUSE_POINT("group.claim.before_take");
        bool any = false;
        for (uint32_t p : take) {
            uint64_t w = words[p];
            const uint64_t next = make_owner_word(m.row, m.gen, *e);
            if (g.parts[p].owner.compare_exchange_strong(w, next, std::memory_order_seq_cst,
                                                         std::memory_order_seq_cst))
                any = true;
            else
                ++c.pending;  // someone else moved it first; look again next claim
        }
        if (any) adopt_epoch(m, *e);
        FABRIC_CRASH_POINT("group.claim.after_take");
    }

    // 5. Owned now; fence every owned partition at our epoch (zombies' commits then fail).
    for (uint32_t p = 0; p < num_partitions; ++p)
        if (mine(m, g.parts[p].owner.load(std::memory_order_seq_cst))) c.partitions.push_back(p);
    // An owner word CASed from the value read before a pause (0 again after another member
    // took the partition, fenced it under a newer epoch and released it) may carry a fence
    // above our token: no commit of ours would ever pass it, and nobody else takes the
    // partition while we live. A fresh epoch is above every fence of this registration.
    for (uint32_t p : c.partitions)
        if (g.parts[p].commit_epoch.load(std::memory_order_acquire) > token(m.epoch)) {
            auto e = draw_epoch(m);
            if (!e) return std::move(e).error();
            adopt_epoch(m, *e);
            break;
        }
    FABRIC_PAUSE_POINT("group.claim.before_fence");
    auto fenced = raise_fences(*pool, g, gref.word, c.partitions, token(m.epoch), lock_wait_ns());
    if (!fenced) return std::move(fenced).error();
    c.epoch = token(m.epoch);
    c.era = era;
    c.changed = c.partitions != m.last_parts || c.epoch != m.last_epoch;
    m.last_parts = c.partitions;
    m.last_epoch = c.epoch;
    return c;
}

Status ConsumerGroup::heartbeat(std::string_view member_id) {
    Impl& im = *impl_;
    LocalMember* m = im.find(member_id);
    if (!m) return im.not_member(member_id);
    const uint64_t now = mono_now_ns();
    FABRIC_TRY(im.verify_row(*m));
    FABRIC_PAUSE_POINT("group.heartbeat.before_store");
    raise_heartbeat(im.slot().members[m->row].heartbeat_ns, now);
    FABRIC_TRY(im.pool->heartbeat(MonoClock::from_ns(now)));
    // A member alive enough to heartbeat keeps its group registered: without this a member
    // heartbeating through a long message let the group lease run out, producers stopped
    // counting the group (on_full=block) and overwrote what it had not committed.
    return im.check(mono_coarse_ns());
}

Status ConsumerGroup::leave(std::string_view member_id) {
    Impl& im = *impl_;
    LocalMember* m = im.find(member_id);
    if (!m) return im.not_member(member_id);
    GroupSlot& g = im.slot();
    Status st;
    if (g.word.load(std::memory_order_acquire) == im.gref.word) {  // group still registered
        for (uint32_t p = 0; p < im.num_partitions; ++p) {
            uint64_t w = g.parts[p].owner.load(std::memory_order_seq_cst);
            if (im.mine(*m, w))
                g.parts[p].owner.compare_exchange_strong(w, 0, std::memory_order_seq_cst, std::memory_order_seq_cst);
        }
        uint64_t w = m->word;
        if (!g.members[m->row].word.compare_exchange_strong(w, make_member_word(kMemberFree, m->gen + 1, 0),
                                                            std::memory_order_seq_cst, std::memory_order_seq_cst))
            st = im.evicted(*m);
    }
    im.members.erase(im.members.begin() + (m - im.members.data()));
    return st;
}

bool ConsumerGroup::owns(std::string_view member_id, uint32_t partition) const {
    const Impl& im = *impl_;
    if (partition >= im.num_partitions) return false;
    for (const auto& m : im.members)
        if (m.id == member_id) return im.holds(m, partition);
    return false;
}

// ---- describe ---------------------------------------------------------------------------

Result<ConsumerGroupDescription> describe_consumer_group(const Pool& pool, std::string_view topic,
                                                         std::string_view group) {
    auto t = open_topic(pool, topic);
    if (!t) return std::move(t).error();
    TopicHandle& th = **t;
    const int idx = find_group(th, group);
    if (idx < 0)
        return make_error(Errc::not_found, "group '" + std::string(group) + "' is not registered on topic '" +
                                               std::string(topic) + "'");
    const GroupSlot& g = th.groups[idx];
    ConsumerGroupDescription d;
    d.group = std::string(group);
    d.topic = std::string(topic);
    d.era = g.era.load(std::memory_order_relaxed);  // immutable while LIVE (find_group acquired the word)
    d.epoch = d.era + g.epoch.load(std::memory_order_relaxed);
    const ResultsRecord results = read_results_record(g);
    d.result_bucket = results.bucket;
    d.shared_results = results.shared;
    const uint64_t now = mono_now_ns();
    const auto procs = pool.registry().list(MonoClock::from_ns(now));
    std::vector<uint32_t> live_gen(kMaxMembers, UINT32_MAX);
    for (uint32_t r = 0; r < kMaxMembers; ++r) {
        const GroupMember& gm = g.members[r];
        const uint64_t w = gm.word.load(std::memory_order_acquire);  // pairs with the LIVE CAS
        if (member_state(w) != kMemberLive) continue;
        MemberDescription md;
        md.slot = r;
        md.id = member_id(gm);
        md.owner = member_owner(w);
        md.epoch = gm.epoch.load(std::memory_order_relaxed);
        const uint64_t hb = gm.heartbeat_ns.load(std::memory_order_acquire);
        md.heartbeat_age_ns = now > hb ? now - hb : 0;
        for (const auto& pi : procs)
            if (pi.token == md.owner) md.pid = pi.pid;
        md.alive = !owner_certainly_dead(pool, md.owner, now);  // heartbeat age reported separately
        live_gen[r] = member_gen(w) & 0xffffff;
        d.members.push_back(std::move(md));
    }
    for (uint32_t p = 0; p < th.num_partitions; ++p) {
        const GroupPartition& gp = g.parts[p];
        PartitionOwnerDescription pd;
        pd.partition = p;
        const uint64_t w = gp.owner.load(std::memory_order_acquire);
        if (w != 0 && owner_row(w) >= 1 && owner_row(w) <= kMaxMembers && live_gen[owner_row(w) - 1] == owner_gen(w))
            pd.member_slot = int(owner_row(w) - 1);
        pd.owner_epoch = w == 0 ? 0 : d.era + owner_epoch(w);
        pd.committed = gp.committed.load(std::memory_order_acquire);
        pd.commit_epoch = gp.commit_epoch.load(std::memory_order_relaxed);
        const uint64_t next = th.parts[p].hdr->tail.load(std::memory_order_acquire);
        pd.lag = int64_t(next - pd.committed) > 0 ? next - pd.committed : 0;
        // The lowest counted offset of the attempt window (the one holding the others up).
        for (const auto& e : gp.attempt_window) {
            const uint64_t w = e.load(std::memory_order_relaxed);
            if (attempt_word_count(w) == 0) continue;
            const uint64_t o = (pd.committed & ~kAttemptOffsetMask) | attempt_word_offset(w);
            if (pd.attempts == 0 || o < pd.attempt_offset) {
                pd.attempt_offset = o;
                pd.attempts = attempt_word_count(w);
            }
        }
        d.partitions.push_back(pd);
    }
    return d;
}

Result<std::vector<ConsumerGroupDescription>> describe_consumer_groups(const Pool& pool, std::string_view topic) {
    auto t = open_topic(pool, topic);
    if (!t) return std::move(t).error();
    std::vector<std::string> names;
    for (uint32_t i = 0; i < kMaxGroups; ++i)
        // Acquire: pairs with the registrant's release store of LIVE (name written before).
        if (group_state((*t)->groups[i].word.load(std::memory_order_acquire)) == kGroupLive)
            names.push_back(group_name((*t)->groups[i]));
    std::vector<ConsumerGroupDescription> out;
    for (const auto& n : names) {
        auto d = describe_consumer_group(pool, topic, n);
        if (d) out.push_back(std::move(*d));  // a group deregistered meanwhile is simply absent
    }
    return out;
}

// ---- operator actions -----------------------------------------------------------------------

namespace {

struct OperatorTarget {
    std::unique_ptr<TopicHandle> t;
    GroupRef ref;
};

Result<OperatorTarget> operator_target(const Pool& pool, std::string_view topic, std::string_view group, bool force) {
    if (pool.self() == 0)
        return make_error(Errc::permission_denied, "changing group '" + std::string(group) +
                                                       "' offsets needs a writable pool (this handle is read-only)");
    auto t = open_topic(pool, topic);
    if (!t) return std::move(t).error();
    uint64_t word = 0;
    const int idx = find_group(**t, group, &word);
    if (idx < 0)
        return make_error(Errc::not_found, "group '" + std::string(group) + "' is not registered on topic '" +
                                               std::string(topic) + "'");
    if (!force) {
        auto d = describe_consumer_group(pool, topic, group);
        if (!d) return std::move(d).error();
        std::string live;
        for (const auto& m : d->members)
            if (m.alive) live += (live.empty() ? "" : ", ") + m.id + " (pid " + std::to_string(m.pid) + ")";
        if (!live.empty())
            return make_error(Errc::busy, "group '" + std::string(group) + "' has live members: " + live +
                                              "; stop them first (their next commit would undo this) or use --force");
    }
    return OperatorTarget{std::move(*t), GroupRef{idx, word}};
}

}  // namespace

Status reset_group_offsets(const Pool& pool, std::string_view topic, std::string_view group, ResetTo to,
                           uint64_t offset, int partition, bool force) {
    auto tg = operator_target(pool, topic, group, force);
    if (!tg) return std::move(tg).error();
    TopicHandle& t = *tg->t;
    if (partition >= int(t.num_partitions))
        return make_error(Errc::invalid_argument, "partition " + std::to_string(partition) + " >= " +
                                                      std::to_string(t.num_partitions) + " partitions of topic '" +
                                                      t.name + "'");
    std::vector<OffsetCommit> commits;
    GroupSlot& g = t.groups[tg->ref.index];
    for (uint32_t p = 0; p < t.num_partitions; ++p) {
        if (partition >= 0 && p != uint32_t(partition)) continue;
        const uint64_t oldest = oldest_offset(t, t.parts[p]);
        const uint64_t next = t.parts[p].hdr->tail.load(std::memory_order_acquire);  // pairs with tail CAS
        uint64_t o = to == ResetTo::earliest ? oldest : to == ResetTo::latest ? next : offset;
        if (int64_t(o - oldest) < 0) o = oldest;
        if (int64_t(o - next) > 0) o = next;
        // The stored epoch passes the fence; a live member's later commit (higher or equal) wins.
        commits.push_back({p, o, g.parts[p].commit_epoch.load(std::memory_order_relaxed)});
    }
    FABRIC_TRY(commit_in_pool(t, tg->ref, group, commits));
    // A reset replays messages on purpose: a dead-letter decision recorded for one of them
    // must not turn the replay into another dead letter.
    // (No live member: refused above unless forced. Release: pairs with dead_letter_recorded.)
    for (const OffsetCommit& c : commits) g.parts[c.partition].dead_letter_offset.store(0, std::memory_order_release);
    return {};
}

Status skip_group_offset(const Pool& pool, std::string_view topic, std::string_view group, uint32_t partition,
                         uint64_t offset, bool force) {
    auto tg = operator_target(pool, topic, group, force);
    if (!tg) return std::move(tg).error();
    TopicHandle& t = *tg->t;
    if (partition >= t.num_partitions)
        return make_error(Errc::invalid_argument, "partition " + std::to_string(partition) + " >= " +
                                                      std::to_string(t.num_partitions) + " partitions of topic '" +
                                                      t.name + "'");
    const GroupPartition& gp = t.groups[tg->ref.index].parts[partition];
    const uint64_t committed = gp.committed.load(std::memory_order_acquire);  // pairs with commit_in_pool
    if (committed != offset)
        return make_error(Errc::conflict, "group '" + std::string(group) + "' partition " + std::to_string(partition) +
                                              " is committed at " + std::to_string(committed) + ", not " +
                                              std::to_string(offset) + "; only the next offset to read can be skipped");
    const uint64_t next = t.parts[partition].hdr->tail.load(std::memory_order_acquire);  // pairs with tail CAS
    if (int64_t(offset + 1 - next) > 0)
        return make_error(Errc::invalid_argument, "offset " + std::to_string(offset) + " of partition " +
                                                      std::to_string(partition) + " was never written (next " +
                                                      std::to_string(next) + ")");
    const OffsetCommit c{partition, offset + 1, gp.commit_epoch.load(std::memory_order_relaxed)};
    return commit_in_pool(t, tg->ref, group, std::span<const OffsetCommit>(&c, 1));
}

// ---- GroupConsumer ------------------------------------------------------------------------

struct GroupConsumer::Impl {
    ConsumerGroup group;
    Consumer consumer;
    std::string id;
    Claim claim;
    uint64_t last_claim_ns = 0;
    /// The consumer reads by `claim`. False after an assign that failed (the offset store's
    /// fetch of a start): the group's next claim says "unchanged", so the next apply assigns
    /// again rather than leave the partitions it gained unread while partitions() lists them.
    bool assigned = true;
    /// While `assigned` is false, the member's pauses: those the consumer had when the assign
    /// failed, as GroupConsumer::pause and resume edited them since. Paused again by the assign
    /// that succeeds, where it keeps them (a partition stays paused while it stays assigned).
    uint64_t paused_across_failure = 0;

    Status apply(Result<Claim> c) {
        if (!c) return std::move(c).error();
        last_claim_ns = mono_now_ns();
        claim = std::move(*c);
        if (!claim.changed && assigned) return {};
        Status st = consumer.assign(claim);  // partitions and the fence epoch together
        if (!st) {
            // The failed assign kept the old partitions (under the previous epoch), a partition
            // the claim moved to another member among them: read and commit none until the
            // next poll's claim (at once) assigns again. Emptying the assignment forgets the pauses:
            // those of partitions the claim keeps are remembered (one that leaves forgets its
            // pause, as an assign does). Meanwhile GroupConsumer::pause and resume edit what
            // is remembered; consumer().pause and resume refuse them as not assigned.
            uint64_t kept = 0;
            for (uint32_t p : claim.partitions) kept |= uint64_t(1) << p;
            paused_across_failure &= kept;
            for (uint32_t p : consumer.assignment())
                if (consumer.paused(p)) paused_across_failure |= (uint64_t(1) << p) & kept;
            (void)consumer.assign(std::span<const uint32_t>{});
            assigned = false;
            last_claim_ns = 0;
            return st;
        }
        if (!assigned)
            for (uint32_t p : claim.partitions)
                if (paused_across_failure >> p & 1) (void)consumer.pause(p);
        paused_across_failure = 0;
        assigned = true;
        return st;
    }

    bool claims(uint32_t partition) const {
        return std::find(claim.partitions.begin(), claim.partitions.end(), partition) != claim.partitions.end();
    }

    /// GroupConsumer::pause (pause true) and resume: the consumer's own while it reads by the
    /// claim; while an assignment waits for its retry, the pause remembered for that retry.
    Status set_paused(uint32_t partition, bool pause) {
        if (!claims(partition)) {
            std::string owned;
            for (uint32_t p : claim.partitions) owned += (owned.empty() ? "" : ", ") + std::to_string(p);
            return make_error(Errc::invalid_argument, "member '" + id + "' owns partitions [" + owned + "] of topic '" +
                                                          group.topic() + "', not " + std::to_string(partition) +
                                                          "; not " + (pause ? "paused" : "resumed"));
        }
        if (assigned) return pause ? consumer.pause(partition) : consumer.resume(partition);
        static_assert(kMaxPartitions <= 64, "paused_across_failure holds one bit per partition");
        const uint64_t bit = uint64_t(1) << partition;  // below kMaxPartitions: a claim's partition
        paused_across_failure = pause ? paused_across_failure | bit : paused_across_failure & ~bit;
        return {};
    }
};

Result<GroupConsumer> GroupConsumer::open(const Pool& pool, std::string_view topic, std::string_view group,
                                          std::string_view member_id, const GroupConsumerOptions& options) {
    auto t = open_topic(pool, topic);
    if (!t) return std::move(t).error();
    auto g = ConsumerGroup::open(pool, topic, group, (*t)->num_partitions, options.group);
    if (!g) return std::move(g).error();
    ConsumerOptions co = options.consumer;
    co.epoch = 0;
    // Its commits wait for the group's lock without heartbeating: within its session.
    co.lock_wait = std::min(co.lock_wait, ns_duration(group_lock_wait_for_session(to_ns(options.group.session_timeout))));
    co.group = options.group.registration;
    auto c = Consumer::open(pool, topic, group, co);
    if (!c) return std::move(c).error();
    auto im = std::unique_ptr<Impl>(new Impl{std::move(*g), std::move(*c), std::string(member_id), {}, 0, true, 0});
    if (Status applied = im->apply(im->group.join(member_id)); !applied) {
        // A join that took its row and then failed its first claim (busy: its fence waited
        // for a lock a paused process holds) must not leave the row live with the partitions
        // it took until its session runs out (a retried open would find the id taken). A join
        // that failed before taking a row has nothing to leave ("not a member").
        (void)im->group.leave(member_id);
        return std::move(applied).error();
    }
    return GroupConsumer(std::move(im));
}

GroupConsumer::GroupConsumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GroupConsumer::GroupConsumer(GroupConsumer&&) noexcept = default;
GroupConsumer& GroupConsumer::operator=(GroupConsumer&&) noexcept = default;
GroupConsumer::~GroupConsumer() = default;

Result<size_t> GroupConsumer::poll(MessageBatch& batch, size_t max, Duration timeout) {
    const uint64_t timeout_ns = to_ns(timeout);
    Impl& im = *impl_;
    const uint64_t start = mono_now_ns();
    for (;;) {
        // Claim (heartbeat + rebalance) at most every kClaimIntervalNs while busy, so a hot
        // poll loop does not scan the member table per poll; always when owning nothing.
        if (im.claim.partitions.empty() || mono_now_ns() - im.last_claim_ns >= kClaimIntervalNs)
            FABRIC_TRY(im.apply(im.group.claim(im.id)));
        const uint64_t now = mono_now_ns();
        const uint64_t left = now - start >= timeout_ns ? 0 : timeout_ns - (now - start);
        const uint64_t wait = std::min<uint64_t>(left, kGroupRecheckNs);
        if (im.claim.partitions.empty()) {
            batch.clear();
            if (wait == 0) return size_t(0);
            // Nothing owned: look again within 50 ms (a dead member's partitions may free up).
            timespec ts{time_t(wait / kNsPerSec), long(wait % kNsPerSec)};
            nanosleep(&ts, nullptr);
            continue;
        }
        auto n = im.consumer.poll(batch, max, ns_duration(wait));
        if (!n) return n;
        // A poll that found only a loss returns it: the next poll would clear the batch, and
        // the loss is reported once (its range is past the position now).
        if (*n > 0 || batch.lost() > 0 || left == 0) return n;
    }
}

Status GroupConsumer::commit(const Message& message) {
    Impl& im = *impl_;
    if (!im.group.owns(im.id, message.partition))
        return make_error(Errc::stale_epoch, "member '" + im.id + "' no longer owns partition " +
                                                 std::to_string(message.partition) + " of topic '" +
                                                 im.group.topic() + "' (epoch " + std::to_string(im.claim.epoch) +
                                                 "); not committing offset " + std::to_string(message.offset));
    // Owned, but its assignment failed (apply): not lost, only not ready; the next poll assigns.
    if (!im.assigned)
        return make_error(Errc::busy, "member '" + im.id + "' owns partition " + std::to_string(message.partition) +
                                          " of topic '" + im.group.topic() +
                                          "' but its assignment failed; poll (which assigns it again), then commit "
                                          "offset " + std::to_string(message.offset));
    return im.consumer.commit(message.partition, message.offset + 1);
}

Status GroupConsumer::commit() { return impl_->consumer.commit(); }
Status GroupConsumer::rejoin() {
    Impl& im = *impl_;
    // Whatever the handle holds of the member is dropped first (joined, evicted, kept by a
    // failed rejoin, or joined quietly by a poll's claim); holding none is "not a member".
    (void)im.group.leave(im.id);
    im.claim = Claim{};
    const Status applied = im.apply(im.group.join(im.id));
    // A join that took its row and then failed its first claim (busy: its fence waited for a
    // lock a paused process holds) keeps its member, unlike open (which has no handle to
    // return): it heartbeats, the next poll's claim raises the fence, and leave() ends it. Any
    // other failure (evicted during the join, the group removed) drops what the handle holds,
    // so that the next rejoin starts afresh.
    if (!applied && !im.group.heartbeat(im.id).ok()) (void)im.group.leave(im.id);
    return applied;
}
Status GroupConsumer::heartbeat() { return impl_->group.heartbeat(impl_->id); }
Status GroupConsumer::leave() {
    Impl& im = *impl_;
    // Whatever the handle holds (a poll's claim may have joined quietly after a failed rejoin);
    // holding no member is no error.
    Status st = im.group.leave(im.id);
    if (!st && st.code() == Errc::not_found) return {};
    return st;
}
Status GroupConsumer::pause(uint32_t partition) { return impl_->set_paused(partition, true); }
Status GroupConsumer::resume(uint32_t partition) { return impl_->set_paused(partition, false); }
bool GroupConsumer::paused(uint32_t partition) const {
    const Impl& im = *impl_;
    if (!im.claims(partition)) return false;
    if (im.assigned) return im.consumer.paused(partition);
    return partition < kMaxPartitions && (im.paused_across_failure >> partition & 1);
}
uint64_t GroupConsumer::epoch() const { return impl_->claim.epoch; }
const std::vector<uint32_t>& GroupConsumer::partitions() const { return impl_->claim.partitions; }
const std::string& GroupConsumer::member_id() const { return impl_->id; }
Consumer& GroupConsumer::consumer() { return impl_->consumer; }
ConsumerGroup& GroupConsumer::group() { return impl_->group; }

}  // namespace fabric_shm
