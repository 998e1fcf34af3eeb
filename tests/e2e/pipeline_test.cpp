// SPDX-License-Identifier: MIT
// End-to-end: the real fabric-shm-producer and fabric-shm-worker executables on unique pools.
#include <doctest/doctest.h>
#include <signal.h>

#include <fstream>

#include "e2e_support.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/placement_hint.h"
#include "fabric_shm/pool.h"
#include "../support/test_support.h"

using namespace fabric_shm;
using namespace fabric_shm::e2e;

namespace {

struct Fixture : PoolFixture {
    using PoolFixture::PoolFixture;
    std::string produce(const std::string& args) const {
        std::string out;
        const int rc = sh(q(producer_bin()) + " --pool " + name + " " + args + " 2>&1", &out);
        CHECK_MESSAGE(rc == 0, out);
        return out;
    }
    std::string worker(const std::string& args) const {
        return q(worker_bin()) + " --pool " + name + " --json " + args;
    }
};

std::string key(int i) {
    char k[32];
    std::snprintf(k, sizeof k, "synthetic-%06d", i);
    return k;
}

}  // namespace

TEST_CASE("e2e: N objects through two workers of one group give N correct results, each once") {
    Fixture f("e2e-n");
    const int n = 60;
    Proc a(f.worker("--topic ev --group g --id a --builtin crc32 --exit-when-idle 1500ms"));
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 1; }));
    Proc b(f.worker("--topic ev --group g --id b --builtin crc32 --exit-when-idle 1500ms"));
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 2; }));
    f.produce("--topic ev --synthetic " + std::to_string(n) + " --size 2K --quiet");
    REQUIRE(a.wait() == 0);
    REQUIRE(b.wait() == 0);
    for (int i = 0; i < n; ++i)
        CHECK(get_text(f.pool, f.uri("results", "uploads/" + key(i))) == crc_hex(synthetic_content(uint64_t(i), 2048)));
    CHECK(json_number(a.out(), "processed") + json_number(b.out(), "processed") == uint64_t(n));  // none twice
}

TEST_CASE("e2e: one put fans out to two topics, one group and result bucket each") {
    Fixture f("e2e-fan");
    f.produce("--topic t1 --topic t2 --synthetic 10 --size 100 --quiet");
    Proc w1(f.worker("--topic t1 --group g1 --builtin upper --result-bucket up --count 10"));
    Proc w2(f.worker("--topic t2 --group g2 --builtin crc32 --result-bucket crc --count 10"));
    REQUIRE(w1.wait() == 0);
    REQUIRE(w2.wait() == 0);
    for (int i = 0; i < 10; ++i) {
        std::string in = synthetic_content(uint64_t(i), 100), up = in;
        for (char& c : up) c = char(std::toupper(static_cast<unsigned char>(c)));
        CHECK(get_text(f.pool, f.uri("up", "uploads/" + key(i))) == up);
        CHECK(get_text(f.pool, f.uri("crc", "uploads/" + key(i))) == crc_hex(in));
    }
}

TEST_CASE("e2e: --builtin upper turns a-z into A-Z and leaves every other byte as it is") {
    Fixture f("e2e-upper");
    std::string in;  // every byte value three times, then a tail that fills no whole word
    for (int round = 0; round < 3; ++round)
        for (int b = 0; b < 256; ++b) in += char(b);
    in += "az{`@";
    std::string expected = in;
    for (char& c : expected)
        if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
    const std::string path = "/tmp/fabric-e2e-upper-" + std::to_string(getpid()) + ".bin";
    { std::ofstream(path, std::ios::binary) << in; }
    f.produce("--topic ev " + path + " --quiet");
    std::remove(path.c_str());
    { Proc w(f.worker("--topic ev --group g --count 1 --builtin upper")); REQUIRE(w.wait() == 0); }
    const std::string got = get_text(f.pool, f.uri("results", "uploads/" + path.substr(path.rfind('/') + 1)));
    REQUIRE(got.size() == expected.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK_MESSAGE(got[i] == expected[i], "byte " << i << " (input " << int(uint8_t(in[i])) << ")");
}

TEST_CASE("e2e: a two-stage pipeline forwards results to the next topic") {
    Fixture f("e2e-ms");
    f.produce("--topic s1 --synthetic 8 --size 300 --quiet");
    Proc st1(f.worker("--topic s1 --group g1 --builtin upper --result-bucket stage1 --next-topic s2 --count 8"));
    Proc st2(f.worker("--topic s2 --group g2 --builtin crc32 --result-bucket stage2 --count 8"));
    REQUIRE(st1.wait() == 0);
    REQUIRE(st2.wait() == 0);
    for (int i = 0; i < 8; ++i) {
        std::string up = synthetic_content(uint64_t(i), 300);
        for (char& c : up) c = char(std::toupper(static_cast<unsigned char>(c)));
        CHECK(get_text(f.pool, f.uri("stage2", "stage1/uploads/" + key(i))) == crc_hex(up));
        CHECK(result_metadata(f.pool, f.uri("stage2", "stage1/uploads/" + key(i)), "input-uri") == f.uri("stage1", "uploads/" + key(i)));
    }
    // Every notification says where its object lies: the producer's input, the first stage's result.
    for (const char* topic : {"s1", "s2"}) {
        auto c = Consumer::open(f.pool, topic, "");
        REQUIRE(c);
        REQUIRE(c->assign_all());
        REQUIRE(c->seek(SeekPolicy::Earliest()));
        MessageBatch batch;
        size_t seen = 0;
        for (auto n = c->poll(batch, 16, Duration::zero()); n && *n > 0; n = c->poll(batch, 16, Duration::zero())) {
            seen += *n;
            for (const Message& m : batch)
                CHECK_MESSAGE(!PlacementHint::parse(m.header(kHeaderPlacement)).empty(), topic, " ", m.value_str());
        }
        CHECK(seen == 8);
    }
}

TEST_CASE("e2e: --exec gets the object on stdin and its coordinates in the environment") {
    Fixture f("e2e-exec");
    f.produce("--topic ev --synthetic 3 --size 50 --quiet");
    Proc w(f.worker("--topic ev --group g --count 3 --exec " +
                    q("printf '%s|%s|%s|' \"$FABRIC_KEY\" \"$FABRIC_TOPIC\" \"$FABRIC_VERSION\"; cat")));
    REQUIRE(w.wait() == 0);
    for (int i = 0; i < 3; ++i) {
        const std::string u = f.uri("uploads", key(i));
        const std::string want = key(i) + "|ev|" + std::to_string(object_version(f.pool, u)) + "|" +
                                 synthetic_content(uint64_t(i), 50);
        CHECK(get_text(f.pool, f.uri("results", "uploads/" + key(i))) == want);
    }
}

TEST_CASE("e2e: a failing --exec is retried, then dead-lettered with its exit status and stderr") {
    Fixture f("e2e-dlq");
    f.produce("--topic ev --synthetic 1 --size 10 --quiet");
    Proc w(f.worker("--topic ev --group g --count 1 --max-attempts 2 --backoff 10ms --exec " +
                    q("echo 'broken input' >&2; exit 3")));
    REQUIRE(w.wait() == 0);
    const auto dl = read_dlq(f.pool, "ev.dlq");
    REQUIRE(dl.size() == 1);
    CHECK(dl[0].value == f.uri("uploads", key(0)));
    CHECK(dl[0].attempts == "2");
    CHECK(dl[0].topic == "ev");
    CHECK(dl[0].reason.find("exit status 3") != std::string::npos);
    CHECK(dl[0].reason.find("broken input") != std::string::npos);
    CHECK(get_text(f.pool, f.uri("results", "uploads/" + key(0))) == "<absent>");
}

TEST_CASE("e2e: --exec-timeout kills a hung command and dead-letters the object") {
    Fixture f("e2e-tmo");
    f.produce("--topic ev --synthetic 1 --size 10 --quiet");
    Proc w(f.worker("--topic ev --group g --count 1 --max-attempts 1 --exec-timeout 300ms --exec 'sleep 30'"));
    REQUIRE(w.wait(15000) == 0);
    const auto dl = read_dlq(f.pool, "ev.dlq");
    REQUIRE(dl.size() == 1);
    CHECK(dl[0].reason.find("timed out") != std::string::npos);
}

TEST_CASE("e2e: a background process an --exec command leaves running is killed with the command's process group") {
    Fixture f("e2e-orphan");
    const std::string pidfile = "/tmp/fabric-e2e-orphan-" + std::to_string(getpid()) + ".pid";
    std::remove(pidfile.c_str());
    f.produce("--topic ev --synthetic 1 --size 10 --quiet");
    // The straggler holds none of the command's pipes: the command's end is all the worker sees.
    Proc w(f.worker("--topic ev --group g --count 1 --exec 'sleep 30 </dev/null >/dev/null 2>&1 & echo $! > " + pidfile +
                    "; cat'"));
    REQUIRE(w.wait(15000) == 0);
    pid_t straggler = 0;
    {
        std::ifstream in(pidfile);
        in >> straggler;
    }
    std::remove(pidfile.c_str());
    REQUIRE(straggler > 0);
    // Gone, or a zombie its new parent has yet to reap.
    const auto running = [&] {
        std::ifstream stat("/proc/" + std::to_string(straggler) + "/stat");
        std::string text((std::istreambuf_iterator<char>(stat)), {});
        const size_t paren = text.rfind(") ");
        return paren != std::string::npos && text.size() > paren + 2 && text[paren + 2] != 'Z';
    };
    const bool gone = eventually([&] { return !running(); }, 5000);
    if (!gone) ::kill(straggler, SIGKILL);
    CHECK_MESSAGE(gone, "the --exec command's background process " << straggler << " outlived it");
}

TEST_CASE("e2e: an 8 MiB object goes through --exec cat without a pipe deadlock") {
    Fixture f("e2e-big", 128ull << 20);
    const std::string path = "/tmp/fabric-e2e-big-" + std::to_string(getpid()) + ".bin";
    std::string data = synthetic_content(7, 8u << 20);
    { std::ofstream(path, std::ios::binary) << data; }
    f.produce("--topic ev " + path + " --quiet");
    std::remove(path.c_str());
    Proc w(f.worker("--topic ev --group g --count 1 --exec cat"));
    REQUIRE(w.wait() == 0);
    const std::string k = path.substr(path.rfind('/') + 1);
    CHECK(get_text(f.pool, f.uri("results", "uploads/" + k)) == data);
}

TEST_CASE("e2e: a missing object is dead-lettered at once, without retries") {
    Fixture f("e2e-miss");
    f.produce("--topic ev --synthetic 1 --size 10 --quiet");
    REQUIRE(sh(q(cli_bin()) + " rm " + f.uri("uploads", key(0)) + " >/dev/null") == 0);
    Proc w(f.worker("--topic ev --group g --count 1 --max-attempts 3 --exec cat"));
    REQUIRE(w.wait() == 0);
    const auto dl = read_dlq(f.pool, "ev.dlq");
    REQUIRE(dl.size() == 1);
    CHECK(dl[0].attempts == "1");
    CHECK(dl[0].reason.find("not found") != std::string::npos);
}

TEST_CASE("e2e: a re-uploaded input is processed again; a redelivered one is skipped") {
    Fixture f("e2e-reup");
    const std::string path = "/tmp/fabric-e2e-reup-" + std::to_string(getpid()) + ".txt";
    const std::string k = path.substr(path.rfind('/') + 1);
    { std::ofstream(path) << "first"; }
    f.produce("--topic ev " + path + " --quiet");
    { Proc w(f.worker("--topic ev --group g --count 1 --builtin upper")); REQUIRE(w.wait() == 0); }
    CHECK(get_text(f.pool, f.uri("results", "uploads/" + k)) == "FIRST");
    { std::ofstream(path) << "second"; }
    f.produce("--topic ev " + path + " --quiet");
    std::remove(path.c_str());
    { Proc w(f.worker("--topic ev --group g --count 1 --builtin upper")); REQUIRE(w.wait() == 0); }
    CHECK(get_text(f.pool, f.uri("results", "uploads/" + k)) == "SECOND");
    CHECK(result_metadata(f.pool, f.uri("results", "uploads/" + k), "input-version") ==
          std::to_string(object_version(f.pool, f.uri("uploads", k))));
    // Redelivery: a second group writing the same bucket reads the current version (2) for both
    // notifications and finds its result there: both skipped, nothing recomputed.
    Proc w(f.worker("--topic ev --group other --count 2 --builtin upper"));
    REQUIRE(w.wait() == 0);
    CHECK(json_number(w.out(), "skipped") == 2);
    CHECK(json_number(w.out(), "processed") == 0);
}

TEST_CASE("e2e: a second live worker with the same --id is refused") {
    Fixture f("e2e-dup");
    Proc a(f.worker("--topic ev --group g --id same --builtin copy"));
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 1; }));
    Proc b(f.worker("--topic ev --group g --id same --builtin copy"));
    CHECK(b.wait() == 1);
    CHECK(b.out().find("already_exists") != std::string::npos);
    a.signal(SIGTERM);
    CHECK(a.wait() == 0);
}

TEST_CASE("e2e: SIGTERM finishes the object in flight, commits and leaves; nothing is lost") {
    Fixture f("e2e-term");
    f.produce("--topic ev --partitions 1 --synthetic 6 --size 10 --quiet");
    Proc a(f.worker("--topic ev --group g --id a --batch 6 --exec 'sleep 0.3; cat'"));
    REQUIRE(eventually([&] { return count_keys(f.pool, "results") >= 1; }));
    a.signal(SIGTERM);
    REQUIRE(a.wait() == 0);
    CHECK(a.out().find("\"exit\":\"stopped\"") != std::string::npos);
    CHECK(alive_members(f.pool, "ev", "g") == 0);  // it left
    const size_t done = count_keys(f.pool, "results");
    CHECK(done < 6);
    Proc b(f.worker("--topic ev --group g --id b --exit-when-idle 800ms --exec cat"));
    REQUIRE(b.wait() == 0);
    CHECK(count_keys(f.pool, "results") == 6);
    CHECK(b.out().find("\"processed\":" + std::to_string(6 - done)) != std::string::npos);  // resumed at the commit
}

TEST_CASE("e2e: SIGKILL of a worker mid-run with a replacement: every result present and correct") {
    Fixture f("e2e-kill");
    const int n = 60;
    const std::string cmd = "--exec 'sleep 0.01; tr a-z A-Z'";
    Proc a(f.worker("--topic ev --group g --id a --exit-when-idle 2s " + cmd));
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 1; }));
    Proc b(f.worker("--topic ev --group g --id b " + cmd));
    REQUIRE(eventually([&] { return alive_members(f.pool, "ev", "g") == 2; }));
    f.produce("--topic ev --synthetic " + std::to_string(n) + " --size 200 --quiet");
    REQUIRE(eventually([&] { return count_keys(f.pool, "results") >= 10; }));
    b.signal(SIGKILL);
    CHECK(b.wait() == 128 + SIGKILL);
    Proc c(f.worker("--topic ev --group g --id c --exit-when-idle 2s " + cmd));
    REQUIRE(a.wait(60000) == 0);
    REQUIRE(c.wait(60000) == 0);
    CHECK(count_keys(f.pool, "results") == size_t(n));
    for (int i = 0; i < n; ++i) {
        std::string up = synthetic_content(uint64_t(i), 200);
        for (char& ch : up) ch = char(std::toupper(static_cast<unsigned char>(ch)));
        CHECK(get_text(f.pool, f.uri("results", "uploads/" + key(i))) == up);
        CHECK(result_metadata(f.pool, f.uri("results", "uploads/" + key(i)), "input-version") ==
              std::to_string(object_version(f.pool, f.uri("uploads", key(i)))));
    }
    CHECK(read_dlq(f.pool, "ev.dlq").empty());
}
