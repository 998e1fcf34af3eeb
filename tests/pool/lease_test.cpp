// SPDX-License-Identifier: MIT
// Leases: renewal schedule (injected time), fail-closed expiry, pool expiry and re-creation.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <optional>
#include <thread>

#include "../support/test_support.h"
#include "crash_point.h"
#include "fabric_shm/lease.h"
#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"

using namespace fabric_shm;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {
/// A one-page test region `name` with lease `ttl` (zero: the pool's default TTL).
Region page_region(Pool& pool, const std::string& name, Duration ttl) {
    RegionSpec spec;
    spec.name = name;
    spec.length = 4096;
    spec.ttl = ttl;
    auto region = pool.create_region(spec);
    REQUIRE_MESSAGE(region, region.error().message);
    return std::move(*region);
}

/// Creates region "short" with lease `ttl` and drops the handle (detached: nothing but its
/// lease keeps it); returns the lease id.
uint64_t detached_short_region(Pool& pool, Duration ttl) { return page_region(pool, "short", ttl).lease_id(); }

/// Waits (at most 10 s) until every lease of `pool` has run out.
void wait_wholly_expired(const Pool& pool) {
    const MonoTime deadline = MonoClock::now() + 10s;
    while (!pool.wholly_expired() && MonoClock::now() < deadline) usleep(10 * 1000);
    REQUIRE(pool.wholly_expired());
}
}  // namespace

TEST_CASE("renewal policy: deadline is created + 75% of the TTL, moved by a bounded deterministic jitter") {
    RenewalPolicy p;
    const MonoTime created = MonoClock::from_ns(1000 * kNsPerSec), expires = created + 300s;
    for (uint64_t seed = 0; seed < 5000; seed += 37) {
        const MonoTime d = p.renewal_deadline(created, expires, seed);
        CHECK(d >= created + 195s);  // 225 s - 30 s
        CHECK(d <= created + 255s);  // 225 s + 30 s
        CHECK(d == p.renewal_deadline(created, expires, seed));
    }
    CHECK(p.renewal_deadline(created, expires, 1000) == created + 225s);  // zero jitter
    RenewalPolicy no_jitter;
    no_jitter.jitter_fraction = 0;
    CHECK(no_jitter.renewal_deadline(created, expires, 7) == created + 225s);
}

TEST_CASE("renewal manager: renews on schedule with an injected clock and nothing in between") {
    test::TempPool temp("renew", 2 << 20, 4s);
    Pool& pool = temp.pool;
    RenewalManager mgr(pool);
    RenewalPolicy policy;
    policy.jitter_fraction = 0;
    REQUIRE(mgr.register_lease(pool.pool_lease_id(), policy));
    const LeaseInfo before = pool.lease(pool.pool_lease_id()).value();
    ManualClock clock(before.created_ns);
    // Before 75% of the 4 s TTL: nothing is due, nothing renewed, no allocation.
    clock.advance(2 * kNsPerSec);
    TickSummary early = mgr.tick(clock.now());
    CHECK(early.outcomes.empty());
    CHECK(early.next_due == MonoClock::from_ns(before.created_ns) + 3s);
    clock.advance(1 * kNsPerSec + 1);
    TickSummary due = mgr.tick(clock.now());
    REQUIRE(due.renewed == 1);
    CHECK(due.outcomes[0].new_expiry == clock.now() + 4s);
    CHECK(pool.lease(pool.pool_lease_id())->expires_ns == clock.now_ns() + 4 * kNsPerSec);
    // Next renewal 3 s after this one.
    CHECK(due.next_due == clock.now() + 3s);
}

TEST_CASE("renewal manager: min_renew rate-limits renewals but never lengthens a lease") {
    test::TempPool temp("minrenew", 2 << 20, 10s);
    Pool& pool = temp.pool;
    RenewalManager mgr(pool);
    RenewalPolicy eager;
    eager.renew_at_fraction = 0.01;  // would renew every 100 ms
    eager.jitter_fraction = 0;
    eager.min_renew = 2s;
    REQUIRE(mgr.register_lease(pool.pool_lease_id(), eager));
    const MonoTime t0 = MonoClock::from_ns(pool.lease(pool.pool_lease_id())->created_ns);
    CHECK(mgr.next_due() == t0 + 2s);
    TickSummary s = mgr.tick(t0 + 2s);
    REQUIRE(s.renewed == 1);
    CHECK(s.outcomes[0].new_expiry == t0 + 12s);  // now + TTL, not now + 2 s
}

TEST_CASE("leases: an expired lease cannot be renewed and the manager drops it") {
    test::TempPool temp("expired", 2 << 20, 1s);
    Pool& pool = temp.pool;
    const LeaseInfo l = pool.lease(pool.pool_lease_id()).value();
    const MonoTime expires = MonoClock::from_ns(l.expires_ns);
    auto late = pool.renew_lease(l.lease_id, expires + 1ns);
    CHECK(late.code() == Errc::lease_expired);
    CHECK(late.error().message.find("expired") != std::string::npos);
    RenewalManager mgr(pool);
    REQUIRE(mgr.register_lease(l.lease_id));
    TickSummary s = mgr.tick(expires + 1s);
    CHECK(s.dropped == 1);
    CHECK(mgr.size() == 0);
}

TEST_CASE("leases: a pool with a short TTL expires after its last renewal, and renewing keeps it") {
    test::TempPool temp("ttl", 2 << 20, 300ms);
    Pool& pool = temp.pool;
    const MonoTime t0 = MonoClock::now();
    CHECK_FALSE(pool.wholly_expired(t0));
    REQUIRE(pool.renew_lease(pool.pool_lease_id(), t0 + 200ms));
    CHECK_FALSE(pool.wholly_expired(t0 + 400ms));
    CHECK(pool.wholly_expired(t0 + 600ms));
}

TEST_CASE("leases: a wholly expired pool is refused on attach, removed by the reaper, re-created on open-or-create") {
    test::PoolCleanup cleanup(test::unique_pool_name("reinit"));
    uint64_t old_incarnation = 0;
    {
        auto pool = Pool::create({cleanup.name(), 2 << 20, 50ms});
        REQUIRE(pool);
        old_incarnation = pool->settings().incarnation;
    }
    usleep(80 * 1000);
    auto refused = Pool::open(cleanup.name());
    CHECK(refused.code() == Errc::lease_expired);
    OpenOptions recreate;
    recreate.create_if_missing = true;
    recreate.create.size_bytes = 2 << 20;
    auto fresh = Pool::open(cleanup.name(), recreate);
    REQUIRE(fresh);
    CHECK(fresh->settings().incarnation != old_incarnation);
    CHECK_FALSE(fresh->wholly_expired(MonoClock::now()));
}

TEST_CASE("leases: a process killed while renewing leaves a consistent lease") {
    test::TempPool temp("crashrenew", 2 << 20, 5s);
    Pool& pool = temp.pool;
    const uint64_t id = pool.pool_lease_id();
    pid_t kid = test::fork_child([&] {
        setenv("FABRIC_SHM_CRASH_POINT", "lease.renew.after_extend", 1);
        detail::crash_point_rearm();
        auto p = Pool::open(temp.name());
        if (!p) return 1;
        auto r = p->renew_lease(id, MonoClock::now());
        return 0;
    });
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    const LeaseInfo l = pool.lease(id).value();
    CHECK(l.expires_ns > mono_now_ns());
    CHECK(pool.renew_lease(id, MonoClock::now()));
    ReapReport r = pool.reap(MonoClock::now());
    CHECK(r.dead_processes == 1);
    CHECK_FALSE(r.pool_removed);
}

TEST_CASE("leases: the reaper and re-initialisers racing on an expired pool never produce two pools") {
    test::PoolCleanup cleanup(test::unique_pool_name("reaprace"));
    const std::string name = cleanup.name();
    for (int round = 0; round < 3; ++round) {
        {
            // A short lease, but long enough to outlast the creation itself on a loaded machine
            // under ThreadSanitizer (30 ms did not: the pool expired before create returned).
            auto pool = Pool::create({name, 2 << 20, 300ms});
            REQUIRE_MESSAGE(pool, pool.error().message);
            wait_wholly_expired(*pool);
        }
        std::vector<pid_t> kids;
        for (int i = 0; i < 4; ++i)
            kids.push_back(test::fork_child([&, i] {
                if (i % 2 == 0) {
                    OpenOptions o;
                    o.create_if_missing = true;
                    o.create.size_bytes = 2 << 20;
                    o.create.ttl = 1h;
                    auto p = Pool::open(name, o);
                    return p ? 0 : 1;
                }
                OpenOptions o;
                o.allow_expired = true;
                o.reap_on_open = false;
                auto p = Pool::open(name, o);
                if (p) p->reap(MonoClock::now());
                return 0;
            }));
        for (pid_t k : kids) CHECK(test::wait_child(k) == 0);
        // Exactly one live pool under the name, long-lived (created by an opener).
        auto p = Pool::open(name);
        REQUIRE(p);
        CHECK(p->lifecycle() == "live");
        CHECK_FALSE(p->wholly_expired(MonoClock::now()));
        REQUIRE(Pool::remove(name, true));
    }
}

namespace {
/// The pool whose region "a" the pause hook replaces, at which pause point, and how many
/// renewals it does it in.
Pool* g_replacing_pool = nullptr;
std::string g_replace_at;
std::atomic<int> g_renewals_to_race{0};

/// At g_replace_at ("lease.renew.checked": the renewer checked the lease's region, wrote
/// nothing; "lease.renew.confirmed": it extended the lease and found the entry still its
/// region's, its other fields not written yet): the region is removed and reclaimed, and
/// region "b" is created in its directory entry, as by other processes while the renewer is
/// paused there.
void replace_the_region(const char* name) {
    if (g_replace_at != name || g_renewals_to_race.load() == 0) return;
    g_renewals_to_race.fetch_sub(1);
    Pool& pool = *g_replacing_pool;
    for (const RegionInfo& r : pool.regions())
        if (r.name == "a") REQUIRE(pool.remove_region(r.ref));
    RegionSpec b;
    b.name = "b";
    b.length = 4096;
    b.ttl = 5s;
    REQUIRE(pool.create_region(b));
}
}  // namespace

TEST_CASE("leases: a renewal paused after its checks, resumed after its region was replaced, leaves the new lease as it was") {
    SUBCASE("paused before its extension") { g_replace_at = "lease.renew.checked"; }
    SUBCASE("paused after its extension and its generation check") { g_replace_at = "lease.renew.confirmed"; }
    test::TempPool temp("renew-stale", 2 << 20);
    Pool& pool = temp.pool;
    RegionSpec a;
    a.name = "a";
    a.length = 4096;
    a.ttl = 5s;
    uint64_t stale_id = 0;
    RegionRef a_ref;
    {
        auto region = pool.create_region(a);
        REQUIRE(region);
        stale_id = region->lease_id();
        a_ref = region->ref();
    }  // detached: removing it reclaims it at once
    g_replacing_pool = &pool;
    g_renewals_to_race.store(1);
    detail::set_pause_hook(&replace_the_region);
    auto renewed = pool.renew_lease(stale_id, MonoClock::now(), 60s);
    detail::set_pause_hook(nullptr);
    g_replacing_pool = nullptr;
    REQUIRE(g_renewals_to_race.load() == 0);  // the hook ran inside the renewal
    REQUIRE_FALSE(renewed.ok());
    CHECK_MESSAGE(renewed.code() == Errc::stale_generation, renewed.error().message);
    // "b" took a's entry; its lease keeps its own TTL, 5 s, and no renewal is counted (this
    // process created it, so its last renewer is this process either way).
    const std::optional<RegionInfo> b = test::region_named(pool, "b");
    REQUIRE(b.has_value());
    REQUIRE(b->ref.index == a_ref.index);
    CHECK(b->lease.ttl_ns == uint64_t(5'000'000'000));
    CHECK(b->lease.renew_count == 0);
    // Its expiry may have been pushed out by the stale extension (a lease only ever ends later
    // than its holders expect), never pulled in.
    CHECK(b->lease.expires_ns >= b->lease.created_ns + 5'000'000'000ull);
}

TEST_CASE("leases: a reaper stopped after judging a pool wholly expired does not remove it once a region was "
          "created in it") {
    test::PoolCleanup cleanup(test::unique_pool_name("reapjudged"));
    const std::string name = cleanup.name();
    auto pool = Pool::create({name, 2 << 20, 300ms});
    REQUIRE_MESSAGE(pool, pool.error().message);
    wait_wholly_expired(*pool);
    // A reaper judges every lease expired and stops before it marks the pool for removal.
    const pid_t reaper = test::fork_child([name] {
        OpenOptions o;
        o.allow_expired = true;
        o.reap_on_open = false;
        auto p = Pool::open(name, o);
        if (!p) return 10;
        setenv("FABRIC_SHM_PAUSE_POINT", "pool.reap.judged_expired", 1);
        detail::crash_point_rearm();
        return p->reap(MonoClock::now()).pool_removed ? 1 : 0;
    });
    REQUIRE(test::wait_stopped(reaper));
    // Meanwhile a holder of the pool creates a region with a live lease.
    Region region = page_region(*pool, "fresh", 60s);
    CHECK_FALSE(pool->wholly_expired());
    test::resume(reaper);
    CHECK(test::wait_child(reaper) == 0);  // judged again under the directory lock: not removed
    CHECK(region.check());
    OpenOptions o;
    o.allow_expired = true;
    CHECK(Pool::open(name, o));
}

namespace {
/// The token of a registration that has ended (a child that opened the pool and exited).
OwnerToken dead_token(const std::string& name) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t child = test::fork_child([&] {
        auto p = Pool::open(name);
        const OwnerToken t = p ? p->self() : 0;
        return ::write(fds[1], &t, sizeof t) == sizeof t ? 0 : 2;
    });
    OwnerToken token = 0;
    REQUIRE(::read(fds[0], &token, sizeof token) == sizeof token);
    ::close(fds[0]);
    ::close(fds[1]);
    REQUIRE(test::wait_child(child) == 0);
    REQUIRE(token != 0);
    return token;
}
}  // namespace

TEST_CASE("leases: a remover that died between its mark and its second judgement, while a lease was live, is not "
          "finished: the pool is put back to LIVE") {
    // The state a reaper leaves when a renewal (its `now` stale) lands between its judgement and
    // its mark CAS and the reaper is killed before it judges again (pool.reap.reclaiming): the
    // renewer saw LIVE and reported "renewed", so holders acknowledged data under that lease.
    // Forged: the lifecycle word RECLAIMING with an ended registration's token, a lease live.
    test::PoolCleanup cleanup(test::unique_pool_name("deadmark"));
    const std::string name = cleanup.name();
    auto pool = Pool::create({name, 2 << 20, 60s});
    REQUIRE_MESSAGE(pool, pool.error().message);
    Region region = page_region(*pool, "acked", 60s);
    region.data()[0] = std::byte{42};
    const uint64_t incarnation = pool->incarnation();
    const OwnerToken dead = dead_token(name);
    REQUIRE(pool->registry().process_liveness(dead, MonoClock::now()) == Liveness::certainly_dead);
    detail::pool_header(*pool).lifecycle.store(layout::make_lifecycle(layout::kPoolReclaiming, dead));
    REQUIRE(pool->lifecycle() == "reclaiming");

    SUBCASE("a reaper, given an instant past every lease") {
        const ReapReport r = pool->reap(MonoClock::now() + 120s);
        CHECK_FALSE(r.pool_removed);
    }
    SUBCASE("a reaper, given the real instant") {
        const ReapReport r = pool->reap(MonoClock::now());
        CHECK_FALSE(r.pool_removed);
    }
    SUBCASE("a create_if_missing opener") {
        OpenOptions o;
        o.create_if_missing = true;
        auto opened = Pool::open(name, o);
        REQUIRE_MESSAGE(opened, opened.error().message);
        CHECK(opened->incarnation() == incarnation);  // attached to it, not a fresh pool
    }
    CHECK(pool->lifecycle() == "live");
    CHECK(region.check());
    auto again = Pool::open(name);
    REQUIRE_MESSAGE(again, again.error().message);
    CHECK(again->incarnation() == incarnation);
    auto reopened = again->open_region(RegionKind::test, "acked");
    REQUIRE_MESSAGE(reopened, reopened.error().message);
    CHECK(reopened->data()[0] == std::byte{42});
}

TEST_CASE("leases: a default TTL rewritten near 2^64 in the header gives a region the longest lease, not one expired "
          "at birth") {
    test::TempPool temp("hugettl", 2 << 20, 60s);
    Pool& pool = temp.pool;
    // Read again at every create_region; any writer may rewrite it (threat-model.md).
    detail::pool_header(pool).default_ttl_ns = UINT64_MAX - 5;
    Region region = page_region(pool, "defaulted", Duration::zero());  // the pool's default TTL
    CHECK_MESSAGE(region.check(), "a lease expired at birth");
    const LeaseInfo l = pool.lease(region.lease_id()).value();
    CHECK(l.expires_ns == l.created_ns + layout::kLeaseTtlMaxNs);
    // A renewal asking for as much is cut the same way, never wrapped into no extension.
    auto renewed = pool.renew_lease(region.lease_id(), MonoClock::now() + 1s, ns_duration(UINT64_MAX - 5));
    REQUIRE_MESSAGE(renewed, renewed.error().message);
    CHECK(to_ns(*renewed) > l.expires_ns);
}

TEST_CASE("leases: a remover that died after its mark is finished once every lease has run out") {
    test::PoolCleanup cleanup(test::unique_pool_name("deadmarkexp"));
    const std::string name = cleanup.name();
    auto pool = Pool::create({name, 2 << 20, 300ms});
    REQUIRE_MESSAGE(pool, pool.error().message);
    const uint64_t incarnation = pool->incarnation();
    const OwnerToken dead = dead_token(name);
    wait_wholly_expired(*pool);
    detail::pool_header(*pool).lifecycle.store(layout::make_lifecycle(layout::kPoolReclaiming, dead));
    SUBCASE("by a reaper") {
        const ReapReport r = pool->reap(MonoClock::now());
        CHECK(r.pool_removed);
        CHECK(pool->lifecycle() == "gone");
        CHECK_FALSE(fs::exists(Pool::segment_path(name)));
    }
    SUBCASE("by a create_if_missing opener, which then creates it afresh") {
        OpenOptions o;
        o.create_if_missing = true;
        auto opened = Pool::open(name, o);
        REQUIRE_MESSAGE(opened, opened.error().message);
        CHECK(opened->incarnation() != incarnation);
        CHECK(pool->lifecycle() == "gone");
    }
}

namespace {
std::atomic<int> g_unlink_holds{0};       ///< how many callers of the point are still to hold
std::atomic<bool> g_unlink_held{false};   ///< one is held there now
std::atomic<bool> g_unlink_release{false};
/// At "pool.unlink.checked" (a remover checked that the name is its pool's file, before its
/// unlink): the first caller stays there until released.
void hold_first_unlink(const char* name) {
    if (std::string(name) != "pool.unlink.checked" || g_unlink_holds.fetch_sub(1) <= 0) return;
    g_unlink_held.store(true);
    while (!g_unlink_release.load()) ::usleep(1000);
}
}  // namespace

TEST_CASE("leases: a remover stopped between its check of the name and its unlink never unlinks a pool created "
          "under the name meanwhile") {
    // A remover killed between its CAS to GONE and its unlink leaves the name on a removed pool
    // (forged: GONE with an ended registration's token). A reaper cleans the name up and is
    // held just before its unlink; meanwhile a create_if_missing opener finds the removed pool.
    test::PoolCleanup cleanup(test::unique_pool_name("unlinkrace"));
    const std::string name = cleanup.name();
    auto old = Pool::create({name, 2 << 20, 60s});
    REQUIRE_MESSAGE(old, old.error().message);
    const uint64_t old_incarnation = old->incarnation();
    detail::pool_header(*old).lifecycle.store(layout::make_lifecycle(layout::kPoolGone, dead_token(name)));

    g_unlink_holds.store(1);
    g_unlink_held.store(false);
    g_unlink_release.store(false);
    detail::set_pause_hook(&hold_first_unlink);
    std::thread reaper([&] { (void)old->reap(MonoClock::now(), false, true); });
    while (!g_unlink_held.load()) ::usleep(1000);
    std::optional<Pool> created;
    std::string open_error;
    std::thread opener([&] {
        OpenOptions o;
        o.create_if_missing = true;
        auto p = Pool::open(name, o);
        if (p)
            created.emplace(std::move(*p));
        else
            open_error = p.error().message;
    });
    // Long enough for an opener that does not wait for the held remover to unlink the old name
    // and create anew; shorter than an opener's wait for a remover (50 tries 2 ms apart).
    ::usleep(50 * 1000);
    g_unlink_release.store(true);
    reaper.join();
    opener.join();
    detail::set_pause_hook(nullptr);
    if (!created) {  // the remover held past the opener's wait (a slow machine): busy, not a pool
        INFO(open_error);
        CHECK(open_error.find("kept changing") != std::string::npos);
        OpenOptions o;
        o.create_if_missing = true;
        auto p = Pool::open(name, o);
        REQUIRE_MESSAGE(p, p.error().message);
        created.emplace(std::move(*p));
    }
    CHECK(created->incarnation() != old_incarnation);
    CHECK(created->lifecycle() == "live");
    // The name is the pool the opener made and holds: a second opener attaches to it.
    auto again = Pool::open(name);
    REQUIRE_MESSAGE(again, again.error().message);
    CHECK(again->incarnation() == created->incarnation());
}

TEST_CASE("pool rm: a pool whose file a user holds flock()ed (as run-demo.sh does) is removed, its name gone") {
    test::PoolCleanup cleanup(test::unique_pool_name("rmflock"));
    const std::string name = cleanup.name();
    {
        auto pool = Pool::create({name, 2 << 20, 60s});
        REQUIRE_MESSAGE(pool, pool.error().message);
    }
    const int held = ::open(Pool::segment_path(name).c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(held >= 0);
    REQUIRE(::flock(held, LOCK_EX | LOCK_NB) == 0);
    const Status removed = Pool::remove(name, true);
    CHECK_MESSAGE(removed.ok(), (removed ? std::string() : removed.error().message));
    CHECK_FALSE(fs::exists(Pool::segment_path(name)));  // reported removed: the name is gone
    ::close(held);
}

TEST_CASE("pool rm --force: a live pool this process cannot register in is refused with that error, never "
          "unlinked unmarked") {
    test::PoolCleanup cleanup(test::unique_pool_name("rmforcelive"));
    const std::string name = cleanup.name();
    auto pool = Pool::create({name, 2 << 20, 60s});
    REQUIRE_MESSAGE(pool, pool.error().message);
    ::setenv("FABRIC_SHM_HEARTBEAT_TIMEOUT", "bogus", 1);  // the remover's open fails, not the file
    const Status removed = Pool::remove(name, true);
    ::unsetenv("FABRIC_SHM_HEARTBEAT_TIMEOUT");
    REQUIRE_FALSE(removed.ok());
    CHECK(removed.error().message.find("FABRIC_SHM_HEARTBEAT_TIMEOUT") != std::string::npos);
    CHECK(fs::exists(Pool::segment_path(name)));
    CHECK(pool->lifecycle() == "live");
}

TEST_CASE("pool names: a name with '.tmp-' (the mark of a pool being created) is refused at creation, opening and "
          "removal, naming the rule") {
    test::PoolCleanup cleanup("bk.tmp-2024-12");
    auto pool = Pool::create({"bk.tmp-2024-12", 2 << 20, 60s});
    REQUIRE_FALSE(pool);
    CHECK(pool.code() == Errc::invalid_name);
    CHECK(pool.error().message.find("'.tmp-'") != std::string::npos);
    const Status removed = Pool::remove("bk.tmp-2024-12", true);  // nor removed: a creator's file
    REQUIRE_FALSE(removed.ok());
    CHECK(removed.code() == Errc::invalid_name);

    // A creator's temporary file, here a complete pool's file under such a name (as it is
    // between its creator's initialisation and its link): never attached to by that name.
    test::TempPool temp("tmpname", 2 << 20, 60s);
    const std::string temp_name = temp.name() + ".tmp-9-1";
    const std::string temp_path = Pool::segment_path(temp_name);
    REQUIRE(::link(Pool::segment_path(temp.name()).c_str(), temp_path.c_str()) == 0);
    auto attached = Pool::open(temp_name);
    ::unlink(temp_path.c_str());
    REQUIRE_FALSE(attached);
    CHECK(attached.code() == Errc::invalid_name);
    CHECK(attached.error().message.find("'.tmp-'") != std::string::npos);
}

TEST_CASE("leases: a renewal stopped after its checks, resumed after the pool was judged expired and removed, fails "
          "instead of extending a lease nobody can use") {
    test::PoolCleanup cleanup(test::unique_pool_name("renewremoved"));
    const std::string name = cleanup.name();
    auto pool = Pool::create({name, 2 << 20, 300ms});
    REQUIRE_MESSAGE(pool, pool.error().message);
    Region region = page_region(*pool, "short", 300ms);
    const uint64_t id = region.lease_id();
    // A renewer takes its `now` while the lease is live and stops after its checks.
    const pid_t renewer = test::fork_child([name, id] {
        auto p = Pool::open(name);
        if (!p) return 10;
        const MonoTime now = MonoClock::now();
        setenv("FABRIC_SHM_PAUSE_POINT", "lease.renew.checked", 1);
        detail::crash_point_rearm();
        auto r = p->renew_lease(id, now);
        if (r || r.code() != Errc::busy) return r ? 0 : 2;  // refused, retryable: not "renewed"
        auto again = p->renew_lease(id, MonoClock::now());
        return !again && again.code() == Errc::stale_generation ? 1 : 3;  // renewed again: the pool is gone
    });
    REQUIRE(test::wait_stopped(renewer));
    wait_wholly_expired(*pool);
    CHECK(pool->reap(MonoClock::now()).pool_removed);
    test::resume(renewer);
    CHECK(test::wait_child(renewer) == 1);  // its extension lands in a removed pool: refused
}

TEST_CASE("leases: a renewal that meets its region being judged by a reaper is busy, not expired, and the region is "
          "kept") {
    test::TempPool temp("renewjudged", 2 << 20, 60s);
    Pool& pool = temp.pool;
    const std::string name = temp.name();
    const MonoTime before_expiry = MonoClock::now();
    const uint64_t id = detached_short_region(pool, 300ms);
    const MonoTime deadline = MonoClock::now() + 10s;
    while (!pool.lease(id)->expired(MonoClock::now()) && MonoClock::now() < deadline) usleep(10 * 1000);
    REQUIRE(pool.lease(id)->expired(MonoClock::now()));
    // A reaper finds the lease expired, marks the region RECLAIMING and stops before it judges
    // the lease again.
    const pid_t reaper = test::reaper_stopped_at(name, "region.reclaim.marked");
    REQUIRE(reaper != 0);
    // A renewer whose `now` was taken before the expiry (it paused before it renewed) extends
    // the lease, then finds the entry being judged: the reaper may yet keep the region, so
    // this is no reason to drop the lease.
    auto renewed = pool.renew_lease(id, before_expiry, 60s);
    REQUIRE_FALSE(renewed.ok());
    CHECK_MESSAGE(renewed.code() == Errc::busy, renewed.error().message);
    test::resume(reaper);
    CHECK(test::wait_child(reaper) == 1);  // it judged again, saw the extension, kept the region
    auto again = pool.renew_lease(id, MonoClock::now(), 60s);
    CHECK_MESSAGE(again.ok(), again.error().message);
    const auto kept = test::region_named(pool, "short");
    REQUIRE(kept);
    CHECK(kept->state == "live");
}

TEST_CASE("renewal manager: a lease whose renewals are busy while a reaper judges its region is tried again before it "
          "runs out, not dropped") {
    test::TempPool temp("renewbusy", 2 << 20, 60s);
    Pool& pool = temp.pool;
    const std::string name = temp.name();
    const uint64_t id = detached_short_region(pool, 5s);
    // A reaper judging at an instant 60 s ahead (a clock its pause made stale) marks the region
    // RECLAIMING and stops there, for as long as the test runs.
    const pid_t reaper = test::reaper_stopped_at(name, "region.reclaim.marked", 60s);
    REQUIRE(reaper != 0);
    RenewalManager mgr(pool);
    REQUIRE(mgr.register_lease(id).ok());
    // Ticks at each due instant (a clock that jumps from one to the next): every renewal is
    // busy and extends the lease; the next try must come before the extended lease ends.
    int busy = 0, dropped = 0;
    for (int i = 0; i < 12; ++i) {
        const MonoTime due = mgr.next_due();
        for (const RenewalOutcome& o : mgr.tick(due).outcomes) {
            if (o.kind == RenewalOutcomeKind::failed && o.error.code == Errc::busy) ++busy;
            if (o.kind == RenewalOutcomeKind::dropped) ++dropped;
        }
        const LeaseInfo lease = pool.lease(id).value();
        CHECK(to_ns(mgr.next_due()) < lease.expires_ns);
    }
    CHECK(busy == 12);
    CHECK(dropped == 0);
    ::kill(reaper, SIGKILL);
    CHECK(test::wait_child(reaper) == 128 + SIGKILL);
}
