// SPDX-License-Identifier: MIT
// What survivors do about a dead worker, seen from the command line: its --exec command (and
// the command's own children) is killed by the group member that evicts it, or by the reaper;
// two workers dead-lettering at the same moment both create-or-wait for the DLQ topic; and
// two pid namespaces ("containers") share a pool with heartbeat timeouts, one is SIGKILLed
// and the other takes its partitions over (without the timeouts, sharing is refused).
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "e2e_support.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "../support/test_support.h"

using namespace fabric_shm;
using namespace fabric_shm::e2e;
namespace fs = std::filesystem;

namespace {


struct Fixture : PoolFixture {
    using PoolFixture::PoolFixture;
    std::string worker(const std::string& args) const {
        return q(worker_bin()) + " --pool " + name + " --json " + args;
    }
};

/// The pid a command wrote into `path` (0 until it did).
pid_t pid_in(const std::string& path) {
    std::ifstream f(path);
    long v = 0;
    return (f >> v) ? pid_t(v) : 0;
}

/// Gone: no such process, or a zombie nobody reaped yet (it runs nothing any more).
bool gone(pid_t pid) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t paren = stat.rfind(')');
    return paren == std::string::npos || (paren + 2 < stat.size() && (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X'));
}

/// SIGKILLs what a failed check left running (the processes of an --exec command).
struct Reaper {
    std::vector<pid_t> pids;
    ~Reaper() {
        for (pid_t p : pids)
            if (p > 0 && !gone(p)) ::kill(p, SIGKILL);
    }
};

/// An --exec command that, on its first attempt, records its shell's pid (the process group
/// leader) and a background child's pid, then waits for the child: a grandchild of the
/// worker that no parent-death signal would reach. Later attempts just copy.
std::string sleeper(const ScratchDir& dir) {
    return q("if [ \"$FABRIC_ATTEMPT\" = 1 ]; then sleep 30 & echo $! > " + dir.path + "/child; echo $$ > " + dir.path +
             "/leader; wait; fi; cat");
}

int members(const std::string& pool, const std::string& topic, const std::string& group) {
    OpenOptions ro;
    ro.read_only = true;
    auto p = Pool::open(pool, ro);
    return p ? int(alive_members(*p, topic, group)) : -1;
}

}  // namespace

TEST_CASE("worker: SIGKILLed during --exec, its command and the command's children are killed by the member that "
          "evicts it") {
    Fixture f("surv-evict");
    ScratchDir dir;
    TopicConfig one;
    one.num_partitions = 1;  // the first worker owns it; the second owns nothing until it takes over
    REQUIRE(TopicManager(f.pool).create("ev", one).ok());
    Proc a(f.worker("--topic ev --group g --id a --exec " + sleeper(dir)));
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 1; }));
    Proc b(f.worker("--topic ev --group g --id b --count 1 --exec cat"));
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 2; }));
    std::string out;
    REQUIRE(sh(q(producer_bin()) + " --pool " + f.name + " --topic ev --synthetic 1 --size 10 --quiet 2>&1", &out) == 0);
    Reaper cleanup;
    // The command writes child, then leader: wait for both.
    REQUIRE(eventually([&] { return pid_in(dir.path + "/child") != 0 && pid_in(dir.path + "/leader") != 0; }));
    const pid_t leader = pid_in(dir.path + "/leader"), child = pid_in(dir.path + "/child");
    cleanup.pids = {leader, child};
    REQUIRE(leader != 0);
    CHECK(!gone(leader));

    a.signal(SIGKILL);
    CHECK(a.wait() == 128 + SIGKILL);
    // b notices (its claim evicts a's row: a's pid is gone), and kills a's command then.
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 1; }, 10000));
    const uint64_t noticed = mono_now_ns();
    CHECK(eventually([&] { return gone(leader) && gone(child); }, 5000));
    const uint64_t took = mono_now_ns() - noticed;
    CHECK_MESSAGE(took < kNsPerSec, "the command outlived the eviction by ", format_duration_ns(took));
    MESSAGE("the dead worker's --exec command was gone ", format_duration_ns(took), " after the eviction");
    CHECK(b.wait() == 0);  // and b processed the object (the second attempt copies)
    CHECK(get_text(f.pool, "fabric://" + f.name + "/results/uploads/synthetic-000000") ==
          synthetic_content(0, 10));
}

TEST_CASE("reaper: a dead worker's --exec command is killed by fabric-shm-reaper, which says so") {
    Fixture f("surv-reaper");
    ScratchDir dir;
    Proc a(f.worker("--topic ev --group g --id a --exec " + sleeper(dir)));
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 1; }));
    std::string out;
    REQUIRE(sh(q(producer_bin()) + " --pool " + f.name + " --topic ev --synthetic 1 --size 10 --quiet 2>&1", &out) == 0);
    Reaper cleanup;
    // The command writes child, then leader: wait for both.
    REQUIRE(eventually([&] { return pid_in(dir.path + "/child") != 0 && pid_in(dir.path + "/leader") != 0; }));
    const pid_t leader = pid_in(dir.path + "/leader"), child = pid_in(dir.path + "/child");
    cleanup.pids = {leader, child};
    a.signal(SIGKILL);
    CHECK(a.wait() == 128 + SIGKILL);
    // Nobody else is a member: the command runs on, orphaned, until the reaper.
    CHECK(!gone(leader));
    REQUIRE(sh(q(test::build_path("tools/reaper/fabric-shm-reaper")) + " --pool " + f.name + " 2>&1", &out) == 0);
    INFO(out);
    CHECK(out.find("killed child process group " + std::to_string(leader)) != std::string::npos);
    CHECK(eventually([&] { return gone(leader) && gone(child); }, 1000));
}

TEST_CASE("worker: two workers that dead-letter at the same moment both get the DLQ topic created, neither fails") {
    Fixture f("surv-dlq");
    REQUIRE(TopicManager(f.pool).create("ev").ok());
    // A notification of an object that does not exist: a dead letter at once, in each group.
    const std::string missing = "fabric://" + f.name + "/uploads/missing";
    {
        auto p = Producer::open(f.pool, "ev");
        REQUIRE(p.ok());
        REQUIRE(p->send(missing).ok());
    }
    // a stops half way through creating ev.dlq (partitions made, not published) ...
    Proc a("env FABRIC_SHM_PAUSE_POINT=topic.create.before_publish " + f.worker("--topic ev --group ga --count 1 --exec cat"));
    int code = -1;
    REQUIRE_MESSAGE(test::wait_stopped(a.pid(), 20000, &code), "a exited with ", code, ": ", a.err());
    // ... and b, dead-lettering too, finds it being created and waits for it (it used to exit 1
    // with "not_found: topic 'ev.dlq' does not exist").
    Proc b("env FABRIC_SHM_PAUSE_POINT=topic.open.waiting " + f.worker("--topic ev --group gb --result-bucket results-b --count 1 --exec cat"));
    CHECK_MESSAGE(test::wait_stopped(b.pid(), 20000, &code), "b exited with ", code, ": ", b.out(), b.err());
    test::resume(b.pid());  // b goes on waiting: a still holds the creation
    test::resume(a.pid());
    CHECK_MESSAGE(a.wait() == 0, a.err());
    CHECK_MESSAGE(b.wait() == 0, b.err());
    const auto dl = read_dlq(f.pool, "ev.dlq");
    REQUIRE(dl.size() == 2);
    for (const auto& d : dl) {
        CHECK(d.value == missing);
        CHECK(d.reason.find("not found") != std::string::npos);
    }
}

TEST_CASE("containers: two pid namespaces share a pool with heartbeat timeouts; one is SIGKILLed, the other takes "
          "its partitions over; without a timeout sharing is refused") {
    std::string probe;
    if (test::run_command("unshare --pid --fork --mount-proc true 2>&1", &probe) != 0) {
        MESSAGE("skipped: `unshare --pid --fork --mount-proc` is not permitted here (needs root or CAP_SYS_ADMIN): ",
                probe);
        return;
    }
    const std::string name = test::unique_pool_name("surv-ns");
    test::PoolCleanup cleanup(name);
    std::string out;
    REQUIRE(sh(q(cli_bin()) + " pool create --pool " + name + " 2>&1", &out) == 0);
    // A "container": its own pid namespace (and /proc), the host's /dev/shm. --kill-child:
    // SIGKILL to unshare SIGKILLs the worker (pid 1 there), as a container runtime's kill does.
    auto container = [&](const std::string& env, const std::string& args) {
        return "unshare --pid --fork --mount-proc --kill-child env " + env + " " + q(worker_bin()) + " --pool " + name +
               " --json --topic ev --group g --builtin upper --session-timeout 1s --partitions 4 " + args;
    };
    const std::string hb = "FABRIC_SHM_HEARTBEAT_TIMEOUT=1s";
    Proc a(container(hb, "--id a"));
    REQUIRE(eventually([&] { return members(name, "ev", "g") == 1; }));
    Proc b(container(hb, "--id b --exit-when-idle 3s"));
    REQUIRE(eventually([&] { return members(name, "ev", "g") == 2; }));

    // A third container without a heartbeat timeout is refused, and says what to set.
    {
        Proc c(container("FABRIC_SHM_NO_CREATE=1", "--id c"));
        const int code = c.wait();
        INFO(c.err() << c.out());
        CHECK(code == 1);
        CHECK(c.out().find("another pid namespace") != std::string::npos);
        CHECK(c.out().find("FABRIC_SHM_HEARTBEAT_TIMEOUT") != std::string::npos);
    }

    a.signal(SIGKILL);  // the container of a: its worker dies with it
    CHECK(a.wait() == 128 + SIGKILL);
    // Produced after the kill: b can only have them once it took a's partitions over.
    const int n = 24;
    REQUIRE(sh("env " + hb + " " + q(producer_bin()) + " --pool " + name + " --topic ev --synthetic " +
                   std::to_string(n) + " --size 32 --quiet 2>&1",
               &out) == 0);
    REQUIRE_MESSAGE(b.wait(60000) == 0, b.err());
    INFO(b.out());
    CHECK(json_number(b.out(), "processed") == uint64_t(n));
    CHECK(b.out().find("\"partitions\":[0,1,2,3]") != std::string::npos);

    // Read from this namespace, declaring a timeout too (a's registration may still be there).
    OpenOptions oo;
    oo.heartbeat_timeout = std::chrono::seconds(1);
    auto pool = Pool::open(name, oo);
    REQUIRE_MESSAGE(pool.ok(), pool.error().message);
    for (int i = 0; i < n; ++i) {
        char key[40];
        std::snprintf(key, sizeof key, "synthetic-%06d", i);
        std::string up = synthetic_content(uint64_t(i), 32);
        for (char& ch : up) ch = char(std::toupper(static_cast<unsigned char>(ch)));
        CHECK(get_text(*pool, "fabric://" + name + "/results/uploads/" + key) == up);
    }
}
