// SPDX-License-Identifier: MIT
// Child process groups of a registration (child_groups.h): recorded by the parent, killed
// (grandchildren included) by whoever ends a dead parent's registration, never when the
// leader's pid was reused, and bounded per registration.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include "../support/registry_slots.h"
#include "../support/test_support.h"
#include "fabric_shm/child_groups.h"
#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"

using namespace fabric_shm;

namespace {

/// No such process any more, or a zombie (it runs nothing).
bool gone(pid_t pid) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t paren = stat.rfind(')');
    return paren == std::string::npos || (paren + 2 < stat.size() && (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X'));
}

/// This test process adopts orphans (and reaps them), so a killed grandchild never lingers
/// as a zombie of some init that does not reap.
struct Subreaper {
    Subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }
    ~Subreaper() {
        ::prctl(PR_SET_CHILD_SUBREAPER, 0);
        while (::waitpid(-1, nullptr, WNOHANG) > 0) {
        }
    }
};

/// What the parent child reports through a pipe.
struct Report {
    OwnerToken token = 0;
    pid_t leader = 0;   ///< group leader (pid == pgid)
    pid_t member = 0;   ///< a child of the leader in the same group (a grandchild of the parent)
    int status = 0;     ///< register_child_group's code (0 = ok)
};

/// Forks a "worker" that registers in the pool, starts a process group (a leader running a
/// child of its own), records it, reports, then waits to be killed (or exits cleanly when
/// `clean_exit`, without unregistering the group).
Report start_parent(const std::string& pool_name, pid_t* parent, bool clean_exit = false) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    *parent = test::fork_child([&] {
        Report r;
        {
            auto p = Pool::open(pool_name);
            if (!p) return 10;
            r.token = p->self();
            int inner[2];
            if (::pipe(inner) != 0) return 11;
            const pid_t leader = ::fork();
            if (leader == 0) {
                ::setpgid(0, 0);
                const pid_t member = ::fork();
                if (member == 0) {
                    for (;;) ::pause();
                }
                (void)!::write(inner[1], &member, sizeof member);
                for (;;) ::pause();
            }
            ::setpgid(leader, leader);
            if (::read(inner[0], &r.member, sizeof r.member) != sizeof r.member) return 12;
            r.leader = leader;
            r.status = int(register_child_group(*p, leader).code());
            if (::write(fds[1], &r, sizeof r) != sizeof r) return 13;
            if (!clean_exit) {
                for (;;) ::pause();
            }
        }  // the Pool closes: the registration ends with the group still recorded
        return 0;
    });
    Report r;
    REQUIRE(::read(fds[0], &r, sizeof r) == sizeof r);
    ::close(fds[0]);
    ::close(fds[1]);
    return r;
}

struct Cleanup {
    std::vector<pid_t> groups;
    ~Cleanup() {
        for (pid_t g : groups) ::kill(-g, SIGKILL);
    }
};

}  // namespace

TEST_CASE("child groups: a SIGKILLed parent's recorded group, grandchildren included, is killed by the reaper") {
    Subreaper adopt;
    test::TempPool temp("cg-reap", 2 << 20);
    Pool& pool = temp.pool;
    pid_t parent = 0;
    const Report r = start_parent(temp.name(), &parent);
    Cleanup guard{{r.leader}};
    REQUIRE(r.status == 0);
    REQUIRE(child_groups_of(pool, r.token).size() == 1);
    CHECK(child_groups_of(pool, r.token)[0].pgid == uint32_t(r.leader));
    ::kill(parent, SIGKILL);
    CHECK(test::wait_child(parent) == 128 + SIGKILL);
    CHECK(!gone(r.leader));  // a parent-death signal would not reach r.member anyway: nothing did yet
    const uint64_t killed_before = detail::pool_header(pool).killed_child_groups.load();
    const ReapReport report = pool.reap(MonoClock::now());
    CHECK(report.dead_processes == 1);
    bool noted = false;
    for (const auto& n : report.notes) noted |= n == "killed child process group " + std::to_string(r.leader);
    CHECK(noted);
    CHECK(detail::pool_header(pool).killed_child_groups.load() == killed_before + 1);
    CHECK(test::wait_child(r.leader, 2000) == 128 + SIGKILL);  // adopted by us: reap it
    CHECK(test::wait_child(r.member, 2000) == 128 + SIGKILL);
}

TEST_CASE("child groups: a group whose leader's pid now belongs to another process (other start time) is left alone") {
    Subreaper adopt;
    test::TempPool temp("cg-reuse", 2 << 20);
    Pool& pool = temp.pool;
    pid_t parent = 0;
    const Report r = start_parent(temp.name(), &parent);
    Cleanup guard{{r.leader}};
    REQUIRE(r.status == 0);
    ::kill(parent, SIGKILL);
    CHECK(test::wait_child(parent) == 128 + SIGKILL);
    // Forge the reuse: the entry now carries another start time for the same pid.
    auto& entry = test::slot_of(pool, r.token).child_groups[0];
    const uint64_t w = entry.load();
    REQUIRE(layout::child_group_pgid(w) == uint32_t(r.leader));
    entry.store(layout::child_group_word(uint64_t(layout::child_group_start(w)) + 1, uint32_t(r.leader)));
    const ReapReport report = pool.reap(MonoClock::now());
    bool noted = false;
    for (const auto& n : report.notes) noted |= n.find("left child process group " + std::to_string(r.leader)) == 0;
    CHECK(noted);
    CHECK(!gone(r.leader));  // never signalled
    CHECK(!gone(r.member));
    CHECK(child_groups_of(pool, r.token).empty());  // the registration ended all the same
}

TEST_CASE("child groups: a parent that exits without forgetting its group takes it with it") {
    Subreaper adopt;
    test::TempPool temp("cg-exit", 2 << 20);
    pid_t parent = 0;
    const Report r = start_parent(temp.name(), &parent, /*clean_exit=*/true);
    Cleanup guard{{r.leader}};
    REQUIRE(r.status == 0);
    CHECK(test::wait_child(parent) == 0);
    CHECK(test::wait_child(r.leader, 2000) == 128 + SIGKILL);
    CHECK(test::wait_child(r.member, 2000) == 128 + SIGKILL);
}

TEST_CASE("child groups: a forked child that drops its parent's registration leaves the record in place") {
    test::TempPool temp("cg-fork", 2 << 20);
    Pool& pool = temp.pool;
    Cleanup guard;
    const pid_t leader = test::fork_child([] {
        ::setpgid(0, 0);
        for (;;) ::pause();
        return 0;
    });
    ::setpgid(leader, leader);
    guard.groups.push_back(leader);
    std::optional<ChildGroupRegistration> reg;
    reg.emplace(pool, leader);
    REQUIRE(reg->ok());
    const pid_t child = test::fork_child([&] {
        reg.reset();
        return 0;
    });
    REQUIRE(test::wait_child(child) == 0);
    CHECK(child_groups_of(pool, pool.self()).size() == 1);  // a reaper still kills the group if we die
    reg.reset();
    CHECK(child_groups_of(pool, pool.self()).empty());
}

TEST_CASE("child groups: registration checks the leader runs, is idempotent, forgets, and is bounded") {
    test::TempPool temp("cg-api", 2 << 20);
    Pool& pool = temp.pool;
    CHECK(register_child_group(pool, 0).code() == Errc::invalid_argument);
    // A pid that does not run (a reaped child's).
    const pid_t done = test::fork_child([] { return 0; });
    REQUIRE(test::wait_child(done) == 0);
    CHECK(register_child_group(pool, done).code() == Errc::invalid_argument);
    // Our own children as stand-in leaders (the table does not care whether they lead a group).
    std::vector<pid_t> kids;
    Cleanup guard;
    for (uint32_t i = 0; i <= kMaxChildGroups; ++i) {
        const pid_t k = test::fork_child([] {
            ::setpgid(0, 0);
            for (;;) ::pause();
            return 0;
        });
        ::setpgid(k, k);
        kids.push_back(k);
        guard.groups.push_back(k);
    }
    for (uint32_t i = 0; i < kMaxChildGroups; ++i) REQUIRE(register_child_group(pool, kids[i]).ok());
    CHECK(register_child_group(pool, kids[0]).ok());  // already recorded
    CHECK(register_child_group(pool, kids.back()).code() == Errc::capacity_exceeded);
    unregister_child_group(pool, kids[0]);
    CHECK(register_child_group(pool, kids.back()).ok());  // room again
    CHECK(child_groups_of(pool, pool.self()).size() == kMaxChildGroups);
    for (pid_t k : kids) unregister_child_group(pool, k);
    CHECK(child_groups_of(pool, pool.self()).empty());
    // A read-only handle records nothing.
    OpenOptions ro;
    ro.read_only = true;
    auto reader = Pool::open(temp.name(), ro);
    REQUIRE(reader);
    CHECK(register_child_group(*reader, kids[0]).code() == Errc::permission_denied);
    for (pid_t k : kids) {
        ::kill(k, SIGKILL);
        test::wait_child(k);
    }
    guard.groups.clear();
}

TEST_CASE("child groups: registration refuses a group that is not a child's own (pid 1, our own group, a child that "
          "leads none), naming it") {
    test::TempPool temp("cg-notchild", 2 << 20);
    Pool& pool = temp.pool;
    // Every attempt is forgotten at once, whatever it returned: a recorded group is SIGKILLed
    // when this registration ends (at our own close too), and group 1 is kill(-1, ...): every
    // process we may signal.
    auto attempt = [&](pid_t pgid) {
        const Status st = register_child_group(pool, pgid);
        unregister_child_group(pool, pgid);
        return st;
    };
    Status st = attempt(1);
    CHECK(st.code() == Errc::invalid_argument);
    if (!st) CHECK(st.error().message.find("process group 1") != std::string::npos);
    // Our own group: its leader is us or an ancestor (a shell): its whole job would go with us.
    st = attempt(::getpgrp());
    CHECK(st.code() == Errc::invalid_argument);
    if (!st) CHECK(st.error().message.find("process group " + std::to_string(::getpgrp())) != std::string::npos);
    // A running child that leads no group (it is in ours): -pid names no group of its own.
    const pid_t kid = test::fork_child([] {
        for (;;) ::pause();
        return 0;
    });
    st = attempt(kid);
    CHECK(st.code() == Errc::invalid_argument);
    if (!st) CHECK(st.error().message.find("process group " + std::to_string(kid)) != std::string::npos);
    ::kill(kid, SIGKILL);
    CHECK(test::wait_child(kid) == 128 + SIGKILL);
    CHECK(child_groups_of(pool, pool.self()).empty());
}
