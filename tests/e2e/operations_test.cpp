// SPDX-License-Identifier: MIT
// Operating the producer and worker as a user does: an oversize file does not stop a batch,
// Ctrl-C ends a back-pressure wait at once and says what was done, a re-run skips what is
// stored, a pool is never created silently, Ctrl-C on a worker busy in --exec says what it
// finishes and a second one stops it, and workers sharing a terminal never mix their lines.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "e2e_support.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "../support/test_support.h"

using namespace fabric_shm;
using namespace fabric_shm::e2e;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {


using Fixture = PoolFixture;

json last_json(const std::string& out) {
    const size_t start = out.rfind("\n{");
    return json::parse(start == std::string::npos ? out : out.substr(start + 1), nullptr, false);
}

bool pool_exists(const std::string& name) {
    const auto pools = Pool::list();
    return std::find(pools.begin(), pools.end(), name) != pools.end();
}

/// The first child of `pid` (pgrep -P), 0 while it has none.
pid_t child_of(pid_t pid) {
    std::string out;
    test::run_command("pgrep -P " + std::to_string(pid), &out);
    return pid_t(std::atol(out.c_str()));
}

/// sh() with *out holding this command's output only (sh appends).
int run(const std::string& command, std::string* out) {
    out->clear();
    return sh(command, out);
}

/// Kills a process group at scope exit: an --exec command left running by a failed check
/// (disarmed, pgid = 0, once the group is known to be gone).
struct GroupKiller {
    pid_t pgid = 0;
    ~GroupKiller() {
        if (pgid > 0) ::kill(-pgid, SIGKILL);
    }
};

uint64_t messages_in(Pool& pool, const std::string& topic) {
    auto d = TopicManager(pool).describe(topic);
    if (!d) return 0;
    uint64_t n = 0;
    for (const auto& p : d->partitions) n += p.next;
    return n;
}

}  // namespace

TEST_CASE("producer: an oversize file is reported and counted, the files after it are still stored; --fail-fast stops") {
    // The producer creates this pool itself, with objects up to 4 KiB.
    const std::string name = test::unique_pool_name("ops-big");
    test::PoolCleanup cleanup(name);
    ScratchDir dir;
    dir.file("a.txt", "first");
    dir.file("b-big.bin", std::string(8192, 'x'));
    dir.file("c.txt", "after the big one");
    std::string out;
    const int rc = sh(q(producer_bin()) + " --pool " + name + " --max-object-size 4K --topic ev --json " +
                          q(dir.path) + " 2>" + q(dir.path + ".err"),
                      &out);
    std::string err;
    test::run_command("cat " + q(dir.path + ".err") + "; rm -f " + q(dir.path + ".err"), &err);
    INFO(out << err);
    CHECK(rc == 1);  // something was not stored
    const json j = last_json(out);
    REQUIRE(j.is_object());
    CHECK(j["stored"] == 2);
    CHECK(j["notified"] == 2);
    REQUIRE(j["failed"].size() == 1);
    CHECK(j["failed"][0]["input"].get<std::string>().find("b-big.bin") != std::string::npos);
    CHECK(j["failed"][0]["code"] == "object_too_large");
    // The hint names an option of this program.
    const std::string message = j["failed"][0]["message"];
    CHECK(message.find("exceeds --max-object-size 4096") != std::string::npos);
    CHECK(message.find("raise with --max-object-size") != std::string::npos);
    CHECK(err.find("not stored: " + dir.path + "/b-big.bin") != std::string::npos);
    CHECK(err.find("created pool '" + name + "'") != std::string::npos);
    std::string help;
    REQUIRE(sh(q(producer_bin()) + " --help", &help) == 0);
    CHECK(help.find("--max-object-size") != std::string::npos);

    auto pool = Pool::open(name);
    REQUIRE(pool.ok());
    CHECK(get_text(*pool, "fabric://" + name + "/uploads/c.txt") == "after the big one");
    CHECK(get_text(*pool, "fabric://" + name + "/uploads/b-big.bin") == "<absent>");

    // --fail-fast: the old behaviour, the files after it are not stored.
    const int ff = run(q(producer_bin()) + " --pool " + name + " --bucket ff --fail-fast --topic ev --quiet " +
                      q(dir.path) + " 2>&1", &out);
    CHECK(ff == 1);
    CHECK(get_text(*pool, "fabric://" + name + "/ff/a.txt") == "first");
    CHECK(get_text(*pool, "fabric://" + name + "/ff/c.txt") == "<absent>");
}

TEST_CASE("producer: Ctrl-C while it waits for the next --stdin-list path exits 130, not as a finished list") {
    Fixture f("ops-stdin");
    ScratchDir dir;
    const std::string first = dir.file("first.txt", "stored before the signal");
    const std::string fifo = dir.path + "/paths";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    Proc p(q(producer_bin()) + " --pool " + f.name + " --topic ev --stdin-list --json < " + q(fifo));
    // Opening for writing waits for the producer's shell to open the other end.
    const int list = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(list >= 0);
    const std::string line = first + "\n";
    REQUIRE(::write(list, line.data(), line.size()) == ssize_t(line.size()));
    // The first input is stored; the producer then blocks reading the next line of the list.
    REQUIRE(eventually([&] { return object_version(f.pool, f.uri("uploads", "first.txt")) != 0; }));
    p.signal(SIGINT);
    const int rc = p.wait(10000);
    ::close(list);
    INFO(p.out() << p.err());
    CHECK(rc == 130);
    const json j = last_json(p.out());
    REQUIRE(j.is_object());
    CHECK(j["interrupted"] == true);
    CHECK(j["stored"] == 1);
    CHECK(j["notified"] == 1);
    CHECK(j["exit_code"] == 130);
}

TEST_CASE("producer: Ctrl-C during a back-pressure wait exits 130 at once and says what was stored and notified") {
    Fixture f("ops-int");
    TopicConfig tc;
    tc.num_partitions = 1;
    tc.partition_capacity = 2;
    REQUIRE(TopicManager(f.pool).create("bp", tc).ok());
    auto slow = Consumer::open(f.pool, "bp", "slow");  // registered, never commits: the topic fills at 2
    REQUIRE(slow.ok());
    Proc p(q(producer_bin()) + " --pool " + f.name + " --topic bp --synthetic 5 --size 10 --wait 60s --json");
    // The third object is stored; its notification waits for space (up to a minute).
    REQUIRE(eventually([&] { return object_version(f.pool, f.uri("uploads", "synthetic-000002")) != 0; }));
    const uint64_t t0 = mono_now_ns();
    p.signal(SIGINT);
    const int rc = p.wait(10000);
    const uint64_t took = mono_now_ns() - t0;
    INFO(p.out() << p.err());
    CHECK(rc == 130);
    CHECK(took < kNsPerSec);
    const json j = last_json(p.out());
    REQUIRE(j.is_object());
    CHECK(j["interrupted"] == true);
    CHECK(j["stored"] == 3);
    CHECK(j["notified"] == 2);
    CHECK(j["exit_code"] == 130);
    CHECK(j["stored_not_notified"] == f.uri("uploads", "synthetic-000002"));
    CHECK(object_version(f.pool, f.uri("uploads", "synthetic-000003")) == 0);  // never started

    // Without --json the summary line says the same.
    Proc text(q(producer_bin()) + " --pool " + f.name + " --topic bp --bucket b2 --synthetic 5 --size 10 --wait 60s");
    REQUIRE(eventually([&] { return object_version(f.pool, f.uri("b2", "synthetic-000000")) != 0; }));
    text.signal(SIGINT);
    CHECK(text.wait(10000) == 130);
    CHECK(text.err().find("interrupted: 1 objects") != std::string::npos);
    CHECK(text.err().find("0 notified") != std::string::npos);
    CHECK(text.err().find("--skip-existing") != std::string::npos);
}

TEST_CASE("producer: a full store is back-pressure: the put waits for space within --wait and the run completes") {
    Fixture f("ops-store-full");
    StoreConfig sc;
    sc.heap_bytes = 256 << 10;  // 4 superblocks of 64 KiB: 24 objects of 8 KiB fit
    auto store = MemObjectStore::open(f.pool, sc);
    REQUIRE(store.ok());
    Proc p(q(producer_bin()) + " --pool " + f.name + " --topic full --synthetic 40 --size 8K --wait 60s --json");
    // It stops at the full store and says so once, then waits (renewing) instead of failing.
    REQUIRE(eventually([&] { return p.err().find("store full, waiting up to 1m") != std::string::npos; }));
    CHECK(object_version(f.pool, f.uri("uploads", "synthetic-000039")) == 0);
    // Space comes back: the rest of the run lands.
    auto names = (*store)->list(f.name, "uploads", "");
    REQUIRE(names.ok());
    REQUIRE(names->size() >= 16);
    for (size_t i = 0; i < 16; ++i) REQUIRE((*store)->remove(*FabricUri::make(f.name, "uploads", (*names)[i])).ok());
    const int rc = p.wait(30000);
    INFO(p.out() << p.err());
    CHECK(rc == 0);
    const json j = last_json(p.out());
    REQUIRE(j.is_object());
    CHECK(j["stored"] == 40);
    CHECK(j["notified"] == 40);
    CHECK(j["store_waits"].get<uint64_t>() > 0);
    CHECK(object_version(f.pool, f.uri("uploads", "synthetic-000039")) != 0);

    // With no space coming back, --wait bounds the wait and the error names the option.
    Proc bounded(q(producer_bin()) + " --pool " + f.name + " --topic full --bucket more --synthetic 40 --size 8K --wait 200ms");
    CHECK(bounded.wait(30000) == 1);
    CHECK(bounded.err().find("--heap-size") != std::string::npos);
}

TEST_CASE("worker: a full store under --store-wait dead-letters nothing and the work resumes when space returns") {
    Fixture f("ops-worker-full");
    StoreConfig sc;
    sc.heap_bytes = 256 << 10;
    auto store = MemObjectStore::open(f.pool, sc);
    REQUIRE(store.ok());
    TopicConfig tc;
    tc.num_partitions = 1;
    REQUIRE(TopicManager(f.pool).create("t", tc).ok());
    auto producer = Producer::open(f.pool, "t");
    REQUIRE(producer.ok());
    const std::vector<uint8_t> input(3000, 'i');
    for (int i = 0; i < 3; ++i) {
        const auto u = FabricUri::make(f.name, "uploads", "in" + std::to_string(i)).value();
        REQUIRE((*store)->put(u, input).ok());
        const std::string us = u.to_string();
        REQUIRE(producer->send(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(us.data()), us.size())).ok());
    }
    // Fill the heap with objects of the results' size class: every result put finds it full.
    std::vector<FabricUri> fillers;
    for (int i = 0; i < 10000; ++i) {
        const auto u = FabricUri::make(f.name, "filler", "f" + std::to_string(i)).value();
        auto v = (*store)->put(u, input);
        if (!v) {
            REQUIRE(v.code() == Errc::capacity_exceeded);
            break;
        }
        fillers.push_back(u);
    }
    REQUIRE(fillers.size() >= 3);
    Proc w(q(worker_bin()) + " --pool " + f.name + " --topic t --group g --builtin copy --max-attempts 1" +
           " --store-wait 200ms --count 3 --json");
    REQUIRE(eventually([&] { return w.err().find("capacity_exceeded: ") != std::string::npos; }));
    CHECK(w.err().find("bytes used") != std::string::npos);
    CHECK(w.err().find("not dead-lettered") != std::string::npos);
    for (int i = 0; i < 3; ++i) REQUIRE((*store)->remove(fillers[fillers.size() - 1 - size_t(i)]).ok());
    const int rc = w.wait(30000);
    INFO(w.out() << w.err());
    CHECK(rc == 0);
    const json j = last_json(w.out());
    REQUIRE(j.is_object());
    CHECK(j["processed"] == 3);
    CHECK(j["dead_lettered"] == 0);
    CHECK(j["failed_attempts"] == 0);
    CHECK(j["store_full"].get<uint64_t>() >= 1);
    for (int i = 0; i < 3; ++i)
        CHECK(get_text(f.pool, f.uri("results", "uploads/in" + std::to_string(i))) == std::string(3000, 'i'));
    CHECK(read_dlq(f.pool, "t.dlq").empty());
}

TEST_CASE("producer: --skip-existing does not put an object whose bytes are stored, and still notifies it") {
    Fixture f("ops-skip");
    ScratchDir dir;
    dir.file("one.txt", "1");
    dir.file("two.txt", "22");
    dir.file("three.txt", "333");
    std::string out;
    REQUIRE(run(q(producer_bin()) + " --pool " + f.name + " --topic ev --json " + q(dir.path), &out) == 0);
    std::map<std::string, uint64_t> versions;
    for (const char* k : {"one.txt", "two.txt", "three.txt"}) versions[k] = object_version(f.pool, f.uri("uploads", k));

    REQUIRE(run(q(producer_bin()) + " --pool " + f.name + " --topic ev --skip-existing --json " + q(dir.path), &out) == 0);
    json j = last_json(out);
    CHECK(j["skipped_existing"] == 3);
    CHECK(j["stored"] == 0);
    CHECK(j["notified"] == 3);
    for (const auto& [k, v] : versions) CHECK(object_version(f.pool, f.uri("uploads", k)) == v);  // not put again
    CHECK(messages_in(f.pool, "ev") == 6);  // but notified again

    dir.file("two.txt", "changed");  // different bytes: put again
    REQUIRE(run(q(producer_bin()) + " --pool " + f.name + " --topic ev --skip-existing --json " + q(dir.path), &out) == 0);
    j = last_json(out);
    CHECK(j["skipped_existing"] == 2);
    CHECK(j["stored"] == 1);
    CHECK(object_version(f.pool, f.uri("uploads", "two.txt")) > versions["two.txt"]);
    CHECK(get_text(f.pool, f.uri("uploads", "two.txt")) == "changed");
}

TEST_CASE("producer and worker: a pool they create is announced on stderr; --no-create and FABRIC_SHM_NO_CREATE refuse") {
    const std::string name = test::unique_pool_name("ops-typo");
    test::PoolCleanup cleanup(name);
    std::string out;
    CHECK(run(q(producer_bin()) + " --pool " + name + " --topic t --synthetic 1 --no-create 2>&1", &out) == 1);
    CHECK(out.find("pool '" + name + "' does not exist and --no-create forbids creating it") != std::string::npos);
    CHECK_FALSE(pool_exists(name));
    CHECK(run("FABRIC_SHM_NO_CREATE=1 " + q(worker_bin()) + " --pool " + name +
                 " --topic t --group g --builtin copy --exit-when-idle 10ms 2>&1",
             &out) == 1);
    CHECK(out.find("FABRIC_SHM_NO_CREATE forbids creating it") != std::string::npos);
    CHECK_FALSE(pool_exists(name));

    CHECK(run(q(worker_bin()) + " --pool " + name + " --topic t --group g --builtin copy --exit-when-idle 10ms 2>&1",
             &out) == 0);
    CHECK(out.find("created pool '" + name + "' (32.0 MiB, lease TTL 1h") != std::string::npos);
    CHECK(out.find("--no-create or FABRIC_SHM_NO_CREATE=1 refuses instead") != std::string::npos);
    REQUIRE(run(q(producer_bin()) + " --pool " + name + " --topic t --synthetic 1 --quiet 2>&1", &out) == 0);
    CHECK(out.find("created pool") == std::string::npos);  // it exists now: nothing to announce
}

TEST_CASE("worker: Ctrl-C during --exec says which object it finishes, finishes it, commits and exits 0") {
    Fixture f("ops-wint");
    ScratchDir dir;
    const std::string fifo = dir.path + "/release";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    REQUIRE(sh(q(producer_bin()) + " --pool " + f.name + " --topic ev --synthetic 1 --size 10 --quiet") == 0);
    Proc w(q(worker_bin()) + " --pool " + f.name + " --topic ev --group g --id w --json --exec " +
           q("cat >/dev/null; cat " + fifo));
    GroupKiller command;  // declared after w: killed before w's destructor SIGKILLs the worker
    REQUIRE(eventually([&] { return (command.pgid = child_of(w.pid())) != 0; }));  // the command is running
    w.signal(SIGINT);
    const std::string object = f.uri("uploads", "synthetic-000000");
    REQUIRE(eventually([&] { return w.err().find("interrupt: finishing " + object) != std::string::npos; }));
    {
        std::ofstream release(fifo);  // the command finishes: it prints this
        release << "released\n";
    }
    CHECK(w.wait() == 0);
    command.pgid = 0;  // it finished: its pid may belong to someone else by now
    INFO(w.err());
    CHECK(get_text(f.pool, f.uri("results", "uploads/synthetic-000000")) == "released\n");
    CHECK(last_json(w.out())["processed"] == 1);
}

TEST_CASE("worker: a second Ctrl-C kills the --exec command's process group and exits 130 at once") {
    Fixture f("ops-wint2");
    ScratchDir dir;
    const std::string fifo = dir.path + "/never";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    REQUIRE(sh(q(producer_bin()) + " --pool " + f.name + " --topic ev --synthetic 1 --size 10 --quiet") == 0);
    Proc w(q(worker_bin()) + " --pool " + f.name + " --topic ev --group g --id w --exec " +
           q("cat >/dev/null; cat " + fifo));  // never finishes by itself
    GroupKiller guard;
    pid_t command = 0;
    REQUIRE(eventually([&] { return (guard.pgid = command = child_of(w.pid())) != 0; }));
    w.signal(SIGINT);
    REQUIRE(eventually([&] { return w.err().find("interrupt: finishing") != std::string::npos; }));
    const uint64_t t0 = mono_now_ns();
    w.signal(SIGINT);
    CHECK(w.wait(10000) == 130);
    CHECK(mono_now_ns() - t0 < kNsPerSec);
    INFO(w.err());
    CHECK(w.err().find("second interrupt: killed the --exec command's process group") != std::string::npos);
    // The command (its own process group, pgid = its pid) and its child `cat` are gone.
    if (eventually([&] { return ::kill(-command, 0) != 0 && errno == ESRCH; })) guard.pgid = 0;
    CHECK(guard.pgid == 0);
    CHECK(get_text(f.pool, f.uri("results", "uploads/synthetic-000000")) == "<absent>");  // not committed: redelivered
}

TEST_CASE("worker: several workers writing to one stderr never put two workers' text on one line") {
    Fixture f("ops-lines");
    REQUIRE(sh(q(producer_bin()) + " --pool " + f.name + " --topic ev --synthetic 8 --size 10 --quiet") == 0);
    // A datagram socket as the shared stderr: every write(2) arrives as one datagram, so a
    // line written in pieces shows as pieces.
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    std::vector<pid_t> workers;
    for (const char* id : {"w1", "w2"}) {
        const std::string cmd = "exec " + q(worker_bin()) + " --pool " + f.name + " --topic ev --group g --id " + id +
                                " --max-attempts 2 --backoff 1ms --exit-when-idle 700ms --exec 'exit 3' >/dev/null";
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            ::dup2(sv[1], 2);
            ::close(sv[0]);
            ::close(sv[1]);
            ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
        workers.push_back(pid);
    }
    ::close(sv[1]);
    for (pid_t pid : workers) CHECK(test::wait_child(pid, 30000) == 0);
    std::vector<std::string> writes;
    char buf[8192];
    for (;;) {
        const ssize_t n = ::recv(sv[0], buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) break;
        writes.emplace_back(buf, size_t(n));
    }
    ::close(sv[0]);
    CHECK(writes.size() >= 8 * 2);  // at least the failed attempts' lines
    std::set<std::string> who;
    for (const std::string& w : writes) {
        INFO(w);
        CHECK(w.rfind("fabric-shm-worker[", 0) == 0);  // a write starts a line
        CHECK(w.back() == '\n');                        // and ends it
        CHECK(std::count(w.begin(), w.end(), '\n') == 1);
        CHECK(w.find("fabric-shm-worker[", 1) == std::string::npos);
        who.insert(w.substr(0, w.find(']') + 1));
    }
    CHECK(who.size() == 2);
}

TEST_CASE("worker: --help lists every FABRIC_* variable the README's worker section lists") {
    const char* src = std::getenv("FABRIC_SHM_SOURCE_DIR");
    REQUIRE(src != nullptr);
    std::ifstream readme(std::string(src) + "/README.md");
    std::stringstream ss;
    ss << readme.rdbuf();
    const std::string text = ss.str();
    const size_t begin = text.find("### `fabric-shm-worker`");
    REQUIRE(begin != std::string::npos);
    const size_t end = text.find("\n### ", begin + 1);
    const std::string section = text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    std::set<std::string> vars;  // FABRIC_[A-Z_]+
    for (size_t at = section.find("FABRIC_"); at != std::string::npos; at = section.find("FABRIC_", at + 1)) {
        size_t e = at + 7;
        while (e < section.size() && (std::isupper(static_cast<unsigned char>(section[e])) || section[e] == '_')) ++e;
        vars.insert(section.substr(at, e - at));
    }
    CHECK(vars.size() >= 9);
    std::string help;
    REQUIRE(sh(q(worker_bin()) + " --help", &help) == 0);
    for (const std::string& v : vars) {
        INFO(v);
        CHECK(help.find(v) != std::string::npos);
    }
}

// ---- streams that never fill the store ------------------------------------------------------

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

}  // namespace

// Registered as its own meson test ('e2e-stream'), run beside the rest of this file. The
// unsanitized run streams 50,000 objects: more results than the default store's table holds
// (28,672 entries), so the worker's result puts find the store full until the first results
// expire (--result-ttl 10s) and the put path reclaims them; the producer meanwhile waits on
// the topic and on the store. Under ASan 10,000 (the same paths short of the full table:
// every process is 3-5x slower there, and the table-bound part costs the TTL's 10 s).
TEST_CASE("streaming: objects through the default pool with --delete-input and --result-ttl all complete, none dead-lettered") {
    const uint64_t n = kSanitized ? 10'000 : 50'000;
    Fixture f("stream");
    const std::string count = std::to_string(n);
    Proc w(q(worker_bin()) + " --pool " + f.name + " --topic s --group g --builtin crc32 --delete-input" +
           " --result-ttl 10s --count " + count + " --json");
    // The group exists before the first notification (a topic with no group keeps nothing back).
    REQUIRE(eventually([&] { return alive_members(f.pool, "s", "g") == 1; }));
    Proc p(q(producer_bin()) + " --pool " + f.name + " --topic s --synthetic " + count +
           " --size 1K --wait 60s --quiet --json");
    const int prc = p.wait(180000);
    INFO("producer: " << p.out() << p.err());
    const int wrc = w.wait(180000);
    INFO("worker: " << w.out() << w.err().substr(0, 4000));
    REQUIRE(prc == 0);
    REQUIRE(wrc == 0);
    const json pj = last_json(p.out()), wj = last_json(w.out());
    REQUIRE((pj.is_object() && wj.is_object()));
    CHECK(pj["stored"] == n);
    CHECK(pj["notified"] == n);
    CHECK(wj["processed"].get<uint64_t>() + wj["skipped"].get<uint64_t>() == n);
    CHECK(wj["dead_lettered"] == 0);
    CHECK(wj["failed_attempts"] == 0);
    CHECK(wj["store_full"] == 0);  // waited within the attempt, never handed back
    CHECK(wj["inputs_deleted"] == n);
    CHECK(w.err().find("capacity_exceeded") == std::string::npos);
    CHECK(read_dlq(f.pool, "s.dlq").empty());
    // Every input is gone; the results of the last objects (younger than the TTL) are right.
    CHECK(count_keys(f.pool, "uploads") == 0);
    for (uint64_t i = n - 200; i < n; ++i) {
        char key[32];
        std::snprintf(key, sizeof key, "synthetic-%06llu", static_cast<unsigned long long>(i));
        REQUIRE(get_text(f.pool, f.uri("results", std::string("uploads/") + key)) ==
                crc_hex(synthetic_content(i, 1024)));
    }
    MESSAGE(n << " objects: producer " << pj["elapsed_s"].get<double>() << " s, worker store waits "
              << wj["store_waits"].get<uint64_t>());
}

TEST_CASE("worker: --delete-input is refused when another group reads the topic") {
    Fixture f("ops-del-groups");
    TopicConfig tc;
    tc.num_partitions = 1;
    REQUIRE(TopicManager(f.pool).create("t", tc).ok());
    REQUIRE(Consumer::open(f.pool, "t", "audit").ok());
    std::string out;
    const int rc = sh(q(worker_bin()) + " --pool " + f.name + " --topic t --group g --builtin copy --delete-input 2>&1",
                      &out);
    INFO(out);
    CHECK(rc == 1);
    CHECK(out.find("--delete-input") != std::string::npos);
    CHECK(out.find("'audit'") != std::string::npos);
}

TEST_CASE("producer: a 1 KiB object put through its loan takes at most 1.25x its size of heap") {
    Fixture f("ops-loan-bytes");
    auto store = MemObjectStore::open(f.pool);
    REQUIRE(store.ok());
    const uint64_t before = (*store)->stats().heap_used_bytes;
    std::string out;
    REQUIRE(sh(q(producer_bin()) + " --pool " + f.name + " --topic t --synthetic 100 --size 1K --quiet 2>&1", &out) == 0);
    const StoreStats s = (*store)->stats();
    REQUIRE(s.objects == 100);
    // A loan that reserved the largest trailer (1,032 B) took 2,560 bytes per 1 KiB object.
    CHECK(double(s.heap_used_bytes - before) / 100.0 <= 1.25 * 1024);
}
