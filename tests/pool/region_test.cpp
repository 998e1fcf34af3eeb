// SPDX-License-Identifier: MIT
// Regions: allocation, lookup, fail-closed expiry, stale handles, reaper reclaim rules,
// repair of half-created entries, orphans, and directory lock takeover.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <optional>

#include "../support/test_support.h"
#include "crash_point.h"
#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"
#include "pool_internal.h"

using namespace fabric_shm;

namespace {
RegionSpec spec(const std::string& name, uint64_t length, uint64_t ttl = 0) {
    RegionSpec s;
    s.kind = RegionKind::test;
    s.name = name;
    s.length = length;
    s.ttl = ns_duration(ttl);
    return s;
}
layout::RegionEntry& entry_of(const Pool& pool, RegionRef ref) {
    auto* entries = reinterpret_cast<layout::RegionEntry*>(detail::pool_base(pool) + layout::kDirectoryOffset);
    return entries[ref.index];
}
}  // namespace

TEST_CASE("regions: created zeroed and initialised, found by name, never overlapping") {
    test::TempPool temp("regions", 4 << 20);
    Pool& pool = temp.pool;
    RegionSpec a = spec("a", 10000);
    a.init = [](std::byte* p, uint64_t n) {
        CHECK(n == 12288);
        for (uint64_t i = 0; i < n; ++i) CHECK(p[i] == std::byte{0});
        std::memcpy(p, "hello", 5);
        return Status{};
    };
    auto ra = pool.create_region(a);
    REQUIRE(ra);
    auto rb = pool.create_region(spec("b", 4096));
    REQUIRE(rb);
    CHECK((ra->offset() + ra->length() <= rb->offset() || rb->offset() + rb->length() <= ra->offset()));
    CHECK(ra->offset() % layout::kPageSize == 0);
    auto found = pool.open_region(RegionKind::test, "a");
    REQUIRE(found);
    CHECK(std::memcmp(found->data(), "hello", 5) == 0);
    CHECK(pool.create_region(spec("a", 4096)).code() == Errc::already_exists);
    CHECK(pool.open_region(RegionKind::test, "zzz").code() == Errc::not_found);
}

TEST_CASE("regions: a region created over a reclaimed one's extent reads zeros, small or large") {
    // 64 KiB: zeroed through the mapping; 3 MiB + 100 bytes: its pages punched out and placed
    // again (its tail page too, though only 100 bytes of it are the region's).
    for (const uint64_t length : {uint64_t(64) << 10, (uint64_t(3) << 20) + 100}) {
        CAPTURE(length);
        test::TempPool temp("rezero", 8 << 20);
        Pool& pool = temp.pool;
        auto old = pool.create_region(spec("old", length));
        REQUIRE(old);
        const uint64_t offset = old->offset();
        std::memset(old->data(), 0xAB, old->length());
        REQUIRE(pool.remove_region(old->ref()));
        *old = Region();
        REQUIRE(pool.reap(MonoClock::now(), false, false).reclaimed_regions == 1);
        auto fresh = pool.create_region(spec("fresh", length));
        REQUIRE(fresh);
        REQUIRE(fresh->offset() == offset);  // first fit: the same extent
        const auto* bytes = reinterpret_cast<const unsigned char*>(fresh->data());
        CHECK(std::all_of(bytes, bytes + fresh->length(), [](unsigned char b) { return b == 0; }));
        std::memset(fresh->data(), 0xCD, fresh->length());  // placed: writable without a fault of its own
        CHECK(bytes[fresh->length() - 1] == 0xCD);
    }
}

TEST_CASE("regions: a region larger than the free area fails with capacity_exceeded naming the largest extent") {
    test::TempPool temp("full", 2 << 20);
    Pool& pool = temp.pool;
    auto r = pool.create_region(spec("big", 100 << 20));
    CHECK(r.code() == Errc::capacity_exceeded);
    auto r2 = pool.create_region(spec("fits", 1 << 20));
    REQUIRE(r2);
    auto r3 = pool.create_region(spec("nofit", 1 << 20));
    CHECK(r3.code() == Errc::capacity_exceeded);
    CHECK(r3.error().message.find("largest free extent") != std::string::npos);
}

TEST_CASE("regions: a length within a page of 2^64 is refused as too large, not rounded up to nothing") {
    test::TempPool temp("huge-length", 2 << 20);
    const size_t before = temp.pool.regions().size();
    for (const uint64_t length : {UINT64_MAX, UINT64_MAX - 100, UINT64_MAX - 4095}) {
        CAPTURE(length);
        auto r = temp.pool.create_region(spec("huge", length));
        CHECK(r.code() == Errc::capacity_exceeded);
        if (!r) CHECK(r.error().message.find(std::to_string(length)) != std::string::npos);
    }
    CHECK(temp.pool.regions().size() == before);
}

TEST_CASE("regions: an expired lease fails closed, a reclaimed region makes old handles stale") {
    test::TempPool temp("failclosed", 2 << 20);
    Pool& pool = temp.pool;
    auto r = pool.create_region(spec("short", 4096, 100 * kNsPerMs));
    REQUIRE(r);
    CHECK(r->check(MonoClock::now()));
    CHECK(r->check(MonoClock::now() + std::chrono::seconds(1)).code() == Errc::lease_expired);
    const RegionRef ref = r->ref();
    // Held by us: the reaper keeps it even though it expired.
    ReapReport kept = pool.reap(MonoClock::now() + std::chrono::seconds(1));
    CHECK(kept.busy_regions == 1);
    CHECK(kept.reclaimed_regions == 0);
    *r = Region();  // drop our handle
    ReapReport gone = pool.reap(MonoClock::now() + std::chrono::seconds(1), false, false);  // reaped as of a later instant
    CHECK(gone.reclaimed_regions == 1);
    CHECK(pool.open_region(ref).code() == Errc::stale_generation);
    // The space is reusable; the entry's generation moved on.
    auto again = pool.create_region(spec("short", 4096));
    REQUIRE(again);
    if (again->ref().index == ref.index) CHECK(again->ref().generation != ref.generation);
}

TEST_CASE("regions: a removed region is revoked at once and reclaimed when the last handle goes") {
    test::TempPool temp("remove", 2 << 20);
    Pool& pool = temp.pool;
    auto r = pool.create_region(spec("doomed", 4096));
    REQUIRE(r);
    REQUIRE(pool.remove_region(r->ref()));
    CHECK(r->check().code() == Errc::lease_expired);
    CHECK(pool.open_region(RegionKind::test, "doomed").code() == Errc::not_found);
    const RegionRef ref = r->ref();
    *r = Region();
    ReapReport rep = pool.reap(MonoClock::now(), false, false);
    CHECK(rep.reclaimed_regions == 1);
    CHECK(pool.open_region(ref).code() == Errc::stale_generation);
}

TEST_CASE("regions: a forked child that drops the handle it inherited leaves its parent attached") {
    test::TempPool temp("forkattach", 2 << 20);
    Pool& pool = temp.pool;
    auto r = pool.create_region(spec("held", 4096));
    REQUIRE(r);
    std::optional<Region> held(std::move(*r));
    auto attached = [&] {
        const auto info = test::region_named(pool, "held");
        return info ? info->attached_processes : 0u;
    };
    REQUIRE(attached() == 1);
    const pid_t child = test::fork_child([&] {
        held.reset();
        return 0;
    });
    REQUIRE(test::wait_child(child) == 0);
    CHECK(attached() == 1);  // the parent still holds it: a removal must not reclaim it under the parent
    held.reset();
    CHECK(attached() == 0);
}

TEST_CASE("regions: a region a forked child opens and drops through its parent's pool handle leaves the parent's "
          "attach bit set") {
    test::TempPool temp("forkchildattach", 2 << 20);
    Pool& pool = temp.pool;
    RegionRef ref;
    {
        auto r = pool.create_region(spec("held", 4096));
        REQUIRE(r);
        ref = r->ref();
    }  // the parent holds nothing of it at the fork
    auto attached = [&] {
        const auto info = test::region_named(pool, "held");
        return info ? info->attached_processes : 0u;
    };
    REQUIRE(attached() == 0);
    const pid_t child = test::fork_child([&] {
        auto mine = pool.open_region(ref);  // the child's own handle, through the inherited pool
        if (!mine) return 10;
        ::raise(SIGSTOP);
        return 0;  // drops it
    });
    REQUIRE(test::wait_stopped(child));
    auto held = pool.open_region(ref);  // the parent opens it after the fork
    REQUIRE(held);
    REQUIRE(attached() == 1);
    test::resume(child);
    REQUIRE(test::wait_child(child) == 0);
    CHECK(attached() == 1);
    REQUIRE(pool.remove_region(ref).ok());  // revoked, but not reclaimed under the parent's handle
    CHECK(test::region_named(pool, "held").has_value());
}

TEST_CASE("regions: a live process in another process holding a handle blocks reclaim; its death unblocks it") {
    test::TempPool temp("pinned", 2 << 20);
    Pool& pool = temp.pool;
    auto r = pool.create_region(spec("shared", 4096, 200 * kNsPerMs));
    REQUIRE(r);
    const RegionRef ref = r->ref();
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t kid = test::fork_child([&] {
        auto p = Pool::open(temp.name());
        if (!p) return 1;
        auto h = p->open_region(ref);
        if (!h) return 2;
        if (write(fds[1], "k", 1) != 1) return 3;
        pause();
        return 0;
    });
    char c;
    REQUIRE(read(fds[0], &c, 1) == 1);
    *r = Region();
    // Reaped as of an instant past the 200 ms lease: no sleeping for it to run out.
    const MonoTime expired = MonoClock::now() + std::chrono::seconds(1);
    CHECK(pool.reap(expired, false, false).busy_regions == 1);
    kill(kid, SIGKILL);
    test::wait_child(kid);
    ReapReport after = pool.reap(expired, false, false);
    CHECK(after.reclaimed_regions == 1);
    CHECK(after.dead_processes == 1);
    close(fds[0]);
    close(fds[1]);
}

TEST_CASE("regions: a creator killed between reserving and publishing leaves an entry the next creator repairs") {
    for (const char* point : {"region.create.reserved", "region.create.before_publish"}) {
        CAPTURE(point);
        test::PoolCleanup cleanup(test::unique_pool_name("crashregion"));
        auto pool = Pool::create({cleanup.name(), 2 << 20});
        REQUIRE(pool);
        pid_t kid = test::fork_child([&] {
            setenv("FABRIC_SHM_CRASH_POINT", point, 1);
            detail::crash_point_rearm();
            auto p = Pool::open(cleanup.name());
            if (!p) return 1;
            auto r = p->create_region(spec("half", 1 << 20));
            return 0;
        });
        CHECK(test::wait_child(kid) == 128 + SIGKILL);
        CHECK(pool->open_region(RegionKind::test, "half").code() == Errc::not_found);
        // Same name and most of the space are available again.
        auto r = pool->create_region(spec("half", 1 << 20));
        REQUIRE(r);
        CHECK(detail::pool_header(*pool).repaired_entries.load() >= 1);
    }
}

TEST_CASE("regions: a directory lock left by a dead process is stolen and creation proceeds") {
    test::TempPool temp("metalock", 2 << 20);
    Pool& pool = temp.pool;
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t kid = test::fork_child([&] {
        auto p = Pool::open(temp.name());
        OwnerToken t = p ? p->self() : 0;
        if (write(fds[1], &t, sizeof t) != sizeof t) return 1;
        _exit(0);
    });
    OwnerToken dead = 0;
    REQUIRE(read(fds[0], &dead, sizeof dead) == sizeof dead);
    CHECK(test::wait_child(kid) == 0);
    auto& header = detail::pool_header(pool);
    header.meta_lock.store(dead);  // forge: the child died holding the directory lock
    auto r = pool.create_region(spec("after", 4096));
    REQUIRE(r);
    CHECK(header.stolen_locks.load() == 1);
    CHECK(header.meta_lock.load() == 0);
    close(fds[0]);
    close(fds[1]);
}

TEST_CASE("regions: children of a removed parent are orphans and the reaper reclaims them") {
    test::TempPool temp("orphan", 2 << 20);
    Pool& pool = temp.pool;
    RegionSpec root = spec("root", 4096);
    root.publish = false;
    auto r = pool.create_region(root);
    REQUIRE(r);
    RegionSpec child = spec("child", 4096);
    child.parent = r->ref();
    auto c = pool.create_region(child);
    REQUIRE(c);
    REQUIRE(r->publish());
    const RegionRef child_ref = c->ref();
    *c = Region();
    // Forge a dead parent: its entry freed without the children being removed.
    auto& e = entry_of(pool, r->ref());
    *r = Region();
    e.word.store(layout::make_entry_word(layout::kEntryFree, r->ref().generation + 1, 0));
    ReapReport rep = pool.reap(MonoClock::now(), false, false);
    CHECK(rep.reclaimed_regions == 1);
    CHECK(pool.open_region(child_ref).code() == Errc::stale_generation);
}

TEST_CASE("regions: dry-run reaping reports what it would do and changes nothing") {
    test::TempPool temp("dry", 2 << 20);
    Pool& pool = temp.pool;
    { auto r = pool.create_region(spec("x", 4096, 10 * kNsPerMs)); REQUIRE(r); }
    const MonoTime expired = MonoClock::now() + std::chrono::seconds(1);  // past the 10 ms lease
    ReapReport dry = pool.reap(expired, true, false);
    CHECK(dry.reclaimed_regions == 1);
    CHECK(pool.regions().size() == 1);
    ReapReport real = pool.reap(expired, false, false);
    CHECK(real.reclaimed_regions == 1);
    CHECK(pool.regions().empty());
}

namespace {
/// The pool whose region "r" the pause hook removes and replaces with "d" (in the same
/// directory entry), and how many removals it does it in.
Pool* g_remove_pool = nullptr;
RegionRef g_remove_ref;
std::atomic<int> g_removals_to_race{0};

/// At "region.remove.checked" (the remover judged the entry, revoked nothing yet): another
/// remover removes and reclaims the region, and an unrelated region takes its entry, as other
/// processes would while the first remover is paused there.
void replace_removed_region(const char* name) {
    if (std::string(name) != "region.remove.checked" || g_removals_to_race.load() == 0) return;
    g_removals_to_race.fetch_sub(1);
    REQUIRE(g_remove_pool->remove_region(g_remove_ref));  // the hook is spent: runs through
    RegionSpec d;
    d.name = "d";
    d.length = 4096;
    auto made = g_remove_pool->create_region(d);
    REQUIRE(made);
    std::memcpy(made->data(), "new data", 8);
}
}  // namespace

TEST_CASE("regions: a remover paused after its checks, resumed after the entry was reused, neither revokes nor reclaims the new region") {
    test::TempPool temp("remove-stale", 4 << 20);
    Pool& pool = temp.pool;
    RegionSpec r;
    r.name = "r";
    r.length = 4096;
    RegionRef r_ref;
    {
        auto made = pool.create_region(r);
        REQUIRE(made);
        r_ref = made->ref();
    }  // no handle left: a remove reclaims it at once
    g_remove_pool = &pool;
    g_remove_ref = r_ref;
    g_removals_to_race.store(1);
    detail::set_pause_hook(&replace_removed_region);
    (void)pool.remove_region(r_ref);  // removed already by the time it resumes: its outcome is either
    detail::set_pause_hook(nullptr);
    g_remove_pool = nullptr;
    REQUIRE(g_removals_to_race.load() == 0);  // the hook ran inside the removal
    // "d" took r's entry under a new generation; it is live, its lease active, its bytes there.
    auto d = pool.open_region(RegionKind::test, "d");
    REQUIRE_MESSAGE(d, d.error().message);
    CHECK(d->ref().index == r_ref.index);
    CHECK(d->ref().generation != r_ref.generation);
    CHECK(d->check());
    CHECK(std::memcmp(d->data(), "new data", 8) == 0);
    auto info = pool.region_info(d->ref());
    REQUIRE(info);
    CHECK_FALSE(info->lease.revoked);
    CHECK(info->state == "live");
}

TEST_CASE("regions: a holder checking while a reaper judges its live region is told to retry, not that it was "
          "reclaimed, and the region is kept") {
    test::TempPool temp("judgedcheck", 2 << 20);
    Pool& pool = temp.pool;
    const std::string name = temp.name();
    auto r = pool.create_region(spec("held", 4096, 60 * kNsPerSec));
    REQUIRE(r);
    // A reaper that finds the lease expired (judging at an instant 120 s ahead, in place of
    // one whose judgement a renewal raced) marks the region and stops before it counts the
    // processes holding it.
    const pid_t reaper = test::reaper_stopped_at(name, "region.reclaim.marked", std::chrono::seconds(120));
    REQUIRE(reaper != 0);
    const Status judged = r->check();
    REQUIRE_FALSE(judged.ok());
    CHECK_MESSAGE(judged.code() == Errc::busy, judged.error().message);  // a worker ends on stale_generation
    test::resume(reaper);
    CHECK(test::wait_child(reaper) == 1);  // it counted this process as a holder: kept
    CHECK(r->check());
}

TEST_CASE("regions: a held region left being judged by a reaper that was killed is repaired by its holder's check "
          "and renewal, not busy until someone reaps") {
    test::TempPool temp("judgedkilled", 2 << 20);
    Pool& pool = temp.pool;
    const std::string name = temp.name();
    auto r = pool.create_region(spec("held", 4096, 300 * 1'000'000ull));
    REQUIRE(r);
    // The reaper marks the region (judging at an instant 120 s ahead) and is killed there.
    REQUIRE(test::reaper_killed_at(name, "region.reclaim.marked", std::chrono::seconds(120)) == 128 + SIGKILL);
    SUBCASE("by a check") { CHECK(r->check()); }
    SUBCASE("by a renewal") {
        auto renewed = pool.renew_lease(r->lease_id(), MonoClock::now());
        CHECK_MESSAGE(renewed.ok(), renewed.error().message);
        CHECK(r->check());
    }
    const auto held = test::region_named(pool, "held");
    REQUIRE(held);
    CHECK(held->state == "live");
}

TEST_CASE("regions: a read-only observer's check of a region whose reclaimer died at its mark is busy; it writes "
          "nothing") {
    test::TempPool temp("judgedro", 2 << 20);
    Pool& pool = temp.pool;
    const std::string name = temp.name();
    auto r = pool.create_region(spec("held", 4096, 60 * kNsPerSec));
    REQUIRE(r);
    OpenOptions ro;
    ro.read_only = true;
    auto observer_pool = Pool::open(name, ro);
    REQUIRE(observer_pool);
    auto observed = observer_pool->open_region(r->ref());
    REQUIRE(observed);
    REQUIRE(test::reaper_killed_at(name, "region.reclaim.marked", std::chrono::seconds(120)) == 128 + SIGKILL);
    // In a child: the segment is mapped read-only here, and a write would kill the process.
    const pid_t observer = test::fork_child([&] {
        const Status s = observed->check();
        return !s.ok() && s.code() == Errc::busy ? 0 : 1;
    });
    CHECK(test::wait_child(observer) == 0);
    CHECK(r->check());  // the read-write holder repairs it
}

TEST_CASE("regions: a repair of a dead reclaimer's mark that finds the entry moved on repairs nothing") {
    test::TempPool temp("unmarkmoved", 2 << 20);
    Pool& pool = temp.pool;
    auto r = pool.create_region(spec("gone", 4096));
    REQUIRE(r);
    const RegionRef ref = r->ref();
    layout::RegionEntry& e = entry_of(pool, ref);
    const uint64_t live = e.word.load();
    // A mark by a reclaimer that is certainly dead (the token of a registry slot nobody holds),
    // as a renewer or holder saw it; the reclaimer had finished before it died: the entry is FREE.
    const uint64_t seen = layout::make_entry_word(layout::kEntryReclaiming, layout::entry_word_gen(live),
                                                  layout::make_token(layout::kRegistrySlots - 1, 1));
    *r = Region();
    REQUIRE(pool.remove_region(ref));  // reclaimed at once: nobody holds it
    const uint64_t now_word = e.word.load();
    REQUIRE(layout::entry_word_state(now_word) == layout::kEntryFree);
    CHECK_FALSE(detail::unmark_dead_reclaim(pool, e, seen));  // so the caller answers busy, not "renewed"
    CHECK(e.word.load() == now_word);
}

TEST_CASE("regions: a header whose data area was rewritten after the open never places a region outside the mapping") {
    // A writer may corrupt the pool header after another process validated it at open
    // (threat-model.md: readers then get an error, never a write outside the mapping).
    // create_region re-reads data_offset / data_size from the live header for every placement.
    test::TempPool temp("hdr-area", 1 << 20);
    const std::string name = temp.name();
    const pid_t child = test::fork_child([&] {
        auto pool = Pool::open(name);
        if (!pool) return 20;
        // Whatever lies after the mapping: our own sentinel where the address is free.
        std::byte* const after = detail::pool_base(*pool) + pool->size();
        void* guard = ::mmap(after, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (guard != MAP_FAILED) std::memset(guard, 0xAA, 1 << 20);
        auto& h = detail::pool_header(*pool);
        const uint64_t area = h.data_size;
        // First region: most of the real area, so that the next placement starts near the end.
        auto a = pool->create_region(spec("a", area - 64 * 1024));
        if (!a) return 21;
        h.data_size = uint64_t(1) << 40;  // another writer's corruption, after our validation
        auto b = pool->create_region(spec("b", 512 * 1024));  // < 1 MiB: zeroed with memset
        if (guard != MAP_FAILED) {
            const auto* g = static_cast<const unsigned char*>(guard);
            if (!std::all_of(g, g + (1 << 20), [](unsigned char c) { return c == 0xAA; })) return 4;  // wrote past the mapping
        }
        // Else another mapping lies there: typically the parent's mapping of this same pool
        // (inherited), whose header, registry and directory a write past ours zeroes.
        if (detail::pool_header(temp.pool).magic.load() != layout::kPoolMagic) return 5;
        if (b && (b->offset() + b->length() > pool->size())) return 3;  // a region past the mapping
        return 0;
    });
    const int rc = test::wait_child(child, 20000);
    CHECK_MESSAGE(rc == 0, "child exited " << rc
                                           << " (4, 5: memory after the mapping was overwritten (5: the pool's header, "
                                              "through the mapping next to it); 3: a region was placed past "
                                              "the mapping; 139: SIGSEGV)");
}

TEST_CASE("regions: a creator fenced while paused holds its name: open says not ready, create already exists, and its "
          "child's lease is not revoked") {
    test::TempPool temp("fencedcreator", 4 << 20, 60s);
    Pool& pool = temp.pool;
    const std::string name = temp.name();
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    // A topic-like creator: the root reserved (CREATING, not published), a child under it
    // published, then paused before it publishes the root.
    const pid_t creator = test::fork_child([&] {
        OpenOptions o;
        o.heartbeat_timeout = std::chrono::seconds(5);
        auto p = Pool::open(name, o);
        if (!p) return 10;
        RegionSpec root = spec("obj", 4096);
        root.publish = false;
        auto r = p->create_region(root);
        if (!r) return 11;
        RegionSpec child = spec("obj.part", 4096);
        child.parent = r->ref();
        auto c = p->create_region(child);
        if (!c) return 12;
        const OwnerToken t = p->self();
        if (::write(fds[1], &t, sizeof t) != sizeof t) return 13;
        ::raise(SIGSTOP);
        return r->publish() ? 0 : 14;
    });
    struct KillOnFailure {  // a failed REQUIRE must not leave the stopped child behind
        pid_t pid;
        bool reaped = false;
        ~KillOnFailure() {
            if (!reaped) {
                ::kill(pid, SIGKILL);
                test::wait_child(pid);
            }
        }
    } guard{creator};
    OwnerToken token = 0;
    REQUIRE(::read(fds[0], &token, sizeof token) == sizeof token);
    ::close(fds[0]);
    ::close(fds[1]);
    REQUIRE(test::wait_stopped(creator));
    // Its heartbeat timed out: a reap fences it (token dead), its pid still runs.
    auto* slots = reinterpret_cast<layout::ProcessSlot*>(detail::pool_base(pool) + layout::kRegistryOffset);
    slots[layout::token_slot(token)].heartbeat_ns.store(1);  // the clock's start (not now - 1 h: the machine may be up for less)
    pool.reap(MonoClock::now());
    REQUIRE(pool.registry().liveness(token, MonoClock::now()) == Liveness::certainly_dead);
    REQUIRE(pool.registry().process_liveness(token, MonoClock::now()) == Liveness::maybe_alive);

    auto opened = pool.open_region(RegionKind::test, "obj");
    REQUIRE_FALSE(opened);
    CHECK_MESSAGE(opened.code() == Errc::not_ready, opened.error().message);
    auto again = pool.create_region(spec("obj", 4096));
    REQUIRE_FALSE(again);
    CHECK_MESSAGE(again.code() == Errc::already_exists, again.error().message);
    auto child_again = pool.create_region(spec("obj.part", 4096));
    REQUIRE_FALSE(child_again);
    CHECK_MESSAGE(child_again.code() == Errc::already_exists, child_again.error().message);

    test::resume(creator);
    CHECK(test::wait_child(creator) == 0);  // published its root
    guard.reaped = true;
    const auto part = test::region_named(pool, "obj.part");
    REQUIRE(part);
    CHECK_FALSE(part->lease.revoked);
}
