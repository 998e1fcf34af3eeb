// SPDX-License-Identifier: MIT
// The bridge status region: what a bridge process writes is what fabric-shm-dump reads (also
// through a read-only mapping), a restarted process with the same id takes over the region of
// a dead one but never of a live one, and a damaged region is reported, not trusted.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>

#include "fabric_shm/clock.h"
#include "fabric_shm/pool.h"
#include "fabric_shm_bridge/status.h"
#include "../support/test_support.h"

using namespace fabric_shm;
using namespace fabric_shm::bridge;

namespace {

struct Fixture {
    std::string name = test::unique_pool_name("bridge-status");
    test::PoolCleanup cleanup{name};
    Pool pool = make(name);
    static Pool make(const std::string& n) {
        PoolOptions o;
        o.name = n;
        o.size_bytes = 4ull << 20;
        auto p = Pool::create(o);
        REQUIRE_MESSAGE(p.ok(), p.error().message);
        return std::move(p.value());
    }
};

StatusIdentity identity(const std::string& member) {
    StatusIdentity id;
    id.role = Role::importer;
    id.member = member;
    id.topic = "jobs";
    id.group = "workers";
    id.stream = "UP";
    id.servers = "nats://127.0.0.1:4222,nats://127.0.0.1:4223";
    return id;
}

}  // namespace

TEST_CASE("bridge status: what the process writes the dump reads, also read-only") {
    Fixture f;
    auto w = StatusWriter::open(f.pool, identity("imp-1"), 60 * kNsPerSec);
    REQUIRE_MESSAGE(w.ok(), w.error().message);
    w->add(StatusCounter::messages, 41);
    w->add(StatusCounter::messages);
    w->add(StatusCounter::duplicates, 3);
    w->set(StatusGauge::lag, 17);
    w->set(StatusGauge::in_flight, 5);
    w->connection(ConnectionState::reconnecting, 123);
    w->stream_config(3, false);
    w->server_url("nats://127.0.0.1:4223");
    w->error("stream 'UP' refused a message: maximum bytes exceeded", 456);

    OpenOptions ro;
    ro.read_only = true;
    auto reader = Pool::open(f.name, ro);
    REQUIRE(reader.ok());
    std::vector<std::string> violations;
    const auto all = read_bridge_status(*reader, &violations);
    CHECK(violations.empty());
    REQUIRE(all.size() == 1);
    const BridgeStatus& s = all[0];
    CHECK(s.region_name == "bridge-import-imp-1");
    CHECK(s.role == Role::importer);
    CHECK(s.topic == "jobs");
    CHECK(s.group == "workers");
    CHECK(s.stream == "UP");
    CHECK(s.servers == "nats://127.0.0.1:4222,nats://127.0.0.1:4223");
    CHECK(s.pid == uint32_t(getpid()));
    CHECK(s.owner_alive);
    CHECK(s.counters[uint32_t(StatusCounter::messages)] == 42);
    CHECK(s.counters[uint32_t(StatusCounter::duplicates)] == 3);
    CHECK(s.counters[uint32_t(StatusCounter::errors)] == 1);
    CHECK(s.gauges[uint32_t(StatusGauge::lag)] == 17);
    CHECK(s.gauges[uint32_t(StatusGauge::in_flight)] == 5);
    CHECK(s.connection == ConnectionState::reconnecting);
    CHECK(s.connection_since_wall_ns == 123);
    CHECK(s.stream_replicas == 3);
    CHECK(s.stream_storage == "file");
    CHECK(s.server_url == "nats://127.0.0.1:4223");
    CHECK(s.last_error == "stream 'UP' refused a message: maximum bytes exceeded");
}

TEST_CASE("bridge status: a restarted process takes over a dead one's region, never a live one's") {
    Fixture f;
    // A live holder in another process: refused.
    int ready[2], release[2];
    REQUIRE(pipe(ready) == 0);
    REQUIRE(pipe(release) == 0);
    const pid_t live = test::fork_child([&] {
        auto p = Pool::open(f.name);
        if (!p) return 1;
        auto w = StatusWriter::open(*p, identity("same-id"), 60 * kNsPerSec);
        if (!w) return 2;
        w->add(StatusCounter::messages, 7);
        char c = 1;
        if (write(ready[1], &c, 1) != 1) return 3;
        if (read(release[0], &c, 1) != 1) return 4;  // hold the region until the parent has tried
        kill(getpid(), SIGKILL);                     // die holding it, like a crash
        return 0;
    });
    char c = 0;
    REQUIRE(read(ready[0], &c, 1) == 1);
    auto refused = StatusWriter::open(f.pool, identity("same-id"), 60 * kNsPerSec);
    CHECK(refused.code() == Errc::already_exists);
    if (!refused) CHECK(refused.error().message.find(std::to_string(live)) != std::string::npos);
    REQUIRE(write(release[1], &c, 1) == 1);
    CHECK(test::wait_child(live) == 128 + SIGKILL);
    // Its owner is certainly dead now: the same id takes the region over, counters and all.
    auto taken = StatusWriter::open(f.pool, identity("same-id"), 60 * kNsPerSec);
    REQUIRE_MESSAGE(taken.ok(), taken.error().message);
    const auto all = read_bridge_status(f.pool);
    REQUIRE(all.size() == 1);
    CHECK(all[0].pid == uint32_t(getpid()));
    CHECK(all[0].owner_alive);
    CHECK(all[0].counters[uint32_t(StatusCounter::messages)] == 7);
    for (int fd : {ready[0], ready[1], release[0], release[1]}) close(fd);
}

TEST_CASE("bridge status: a dead owner is shown as dead until its region expires") {
    Fixture f;
    const pid_t child = test::fork_child([&] {
        auto p = Pool::open(f.name);
        if (!p) return 1;
        auto w = StatusWriter::open(*p, identity("gone"), 60 * kNsPerSec);
        if (!w) return 2;
        kill(getpid(), SIGKILL);
        return 0;
    });
    CHECK(test::wait_child(child) == 128 + SIGKILL);
    const auto all = read_bridge_status(f.pool);
    REQUIRE(all.size() == 1);
    CHECK_FALSE(all[0].owner_alive);
    CHECK(all[0].pid == uint32_t(child));
    CHECK_FALSE(all[0].dead_reason.empty());
}

TEST_CASE("bridge status: a region with a foreign header is reported, not read") {
    Fixture f;
    RegionSpec spec;
    spec.kind = RegionKind::bridge;
    spec.name = "bridge-export-forged";
    spec.length = 4096;
    spec.init = [](std::byte* data, uint64_t) -> Status {
        std::memset(data, 0x7f, 64);  // not our magic
        return {};
    };
    auto r = f.pool.create_region(spec);
    REQUIRE(r.ok());
    std::vector<std::string> violations;
    CHECK(read_bridge_status(f.pool, &violations).empty());
    REQUIRE(violations.size() == 1);
    CHECK(violations[0].find("bridge-export-forged") != std::string::npos);
}
