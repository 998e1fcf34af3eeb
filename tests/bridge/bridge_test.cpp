// SPDX-License-Identifier: MIT
// fabric-shm-bridge across hosts: the real producer, workers and bridge processes on separate
// "hosts" (each its own FABRIC_SHM_DIR, i.e. its own /dev/shm, and pool), joined by a 3-node
// nats-server cluster with JetStream (replicas 3, file storage) on loopback. Every fault test
// ends with the same question: is every input's result there, correct, and computed once?
// Faults are placed deterministically with the bridge's crash and pause points.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <nats/nats.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include "bridge_harness.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/uri.h"
#include "../support/test_support.h"

using namespace fabric_shm;
using namespace fabric_shm::bridge_test;
using e2e::eventually;

namespace {

std::string key(int i) {
    char k[32];
    std::snprintf(k, sizeof k, "synthetic-%06d", i);
    return k;
}

std::string worker(const std::string& args) { return e2e::worker_bin() + " --json --builtin crc32 " + args; }

std::string produce(const Host& h, const std::string& args) {
    std::string out;
    const int rc = e2e::sh(h.cmd(e2e::producer_bin() + " --quiet " + args + " 2>&1"), &out);
    CHECK_MESSAGE(rc == 0, out);
    return out;
}

/// The key of input i's result: the worker keys results by the input's bucket and key, and the
/// producer and the importer keep the bucket ("uploads").
std::string result_key(int i) { return "uploads/" + key(i); }

/// Every synthetic input 0..n-1 has its crc32 result in `bucket` of host h.
bool all_results(const Host& h, int n, int size = 1024, const std::string& bucket = "results") {
    if (h.count(bucket) < size_t(n)) return false;
    for (int i = 0; i < n; ++i)
        if (h.get(bucket, result_key(i)) != e2e::crc_hex(e2e::synthetic_content(uint64_t(i), uint64_t(size)))) return false;
    return true;
}

std::string wrong_results(const Host& h, int n, int size = 1024) {
    std::string s;
    for (int i = 0; i < n; ++i) {
        const std::string got = h.get("results", result_key(i));
        if (got != e2e::crc_hex(e2e::synthetic_content(uint64_t(i), uint64_t(size)))) s += key(i) + "=" + got + " ";
    }
    return s;
}

/// Runs fn with a JetStream context on a connection of its own to `url` (what an operator's
/// tool would do); false when none could be made, and fn is not called.
bool with_jetstream(const std::string& url, const std::function<void(jsCtx*)>& fn) {
    natsConnection* nc = nullptr;
    if (natsConnection_ConnectTo(&nc, url.c_str()) != NATS_OK) return false;
    jsCtx* js = nullptr;
    const bool ok = natsConnection_JetStream(&js, nc, nullptr) == NATS_OK;
    if (ok) fn(js);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return ok;
}

/// Stream leader, consumer leader (server names "n1".."n3"); "" when unknown.
std::pair<std::string, std::string> leaders(const std::string& url, const std::string& stream, const std::string& durable) {
    std::pair<std::string, std::string> out;
    with_jetstream(url, [&](jsCtx* js) {
        jsStreamInfo* si = nullptr;
        if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, nullptr) == NATS_OK && si->Cluster && si->Cluster->Leader)
            out.first = si->Cluster->Leader;
        jsStreamInfo_Destroy(si);
        jsConsumerInfo* ci = nullptr;
        if (js_GetConsumerInfo(&ci, js, stream.c_str(), durable.c_str(), nullptr, nullptr) == NATS_OK && ci->Cluster &&
            ci->Cluster->Leader)
            out.second = ci->Cluster->Leader;
        jsConsumerInfo_Destroy(ci);
    });
    return out;
}

/// Publishes raw bytes on a subject of a stream (what a buggy or hostile publisher could do).
bool publish_raw(const std::string& url, const std::string& subject, const std::string& payload) {
    bool ok = false;
    with_jetstream(url, [&](jsCtx* js) {
        ok = js_Publish(nullptr, js, subject.c_str(), payload.data(), int(payload.size()), nullptr, nullptr) == NATS_OK;
    });
    return ok;
}

/// Deletes durable `durable` of stream `stream`, as an operator might.
bool delete_durable(const std::string& url, const std::string& stream, const std::string& durable) {
    bool ok = false;
    with_jetstream(url, [&](jsCtx* js) {
        ok = js_DeleteConsumer(js, stream.c_str(), durable.c_str(), nullptr, nullptr) == NATS_OK;
    });
    return ok;
}

/// How many messages stream `stream` holds now (nullopt when it cannot be asked).
std::optional<uint64_t> stream_message_count(const std::string& url, const std::string& stream) {
    std::optional<uint64_t> count;
    with_jetstream(url, [&](jsCtx* js) {
        jsStreamInfo* si = nullptr;
        if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, nullptr) == NATS_OK) count = si->State.Msgs;
        jsStreamInfo_Destroy(si);
    });
    return count;
}

/// True once the child has exited (a zombie not yet reaped), without reaping or killing it.
bool exited(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const size_t close = text.rfind(')');
    return close == std::string::npos || (close + 2 < text.size() && text[close + 2] == 'Z');
}

#define REQUIRE_CLUSTER() REQUIRE_MESSAGE(cluster() != nullptr, "nats-server cluster: " << cluster_error())

/// Member "intruder" of `group` on host h's `topic` claims until it owns every partition (a
/// member silent for `session` is evicted by that claim and its partitions taken), then leaves.
void evict_silent_members(const Host& h, const std::string& topic, const std::string& group, Duration session) {
    h.with([&] {
        auto pool = Pool::open(h.pool());
        REQUIRE_MESSAGE(pool.ok(), pool.error().message);
        auto described = TopicManager(*pool).describe(topic);
        REQUIRE_MESSAGE(described.ok(), described.error().message);
        const uint32_t partitions = uint32_t(described->partitions.size());
        GroupConfig config;
        config.session_timeout = session;
        auto g = ConsumerGroup::open(*pool, topic, group, partitions, config);
        REQUIRE_MESSAGE(g.ok(), g.error().message);
        auto joined = g->join("intruder");
        REQUIRE_MESSAGE(joined.ok(), joined.error().message);
        size_t owned = joined->partitions.size();
        const uint64_t start = mono_now_ns();
        while (owned < partitions && mono_now_ns() - start < 10 * kNsPerSec) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            auto c = g->claim("intruder");
            REQUIRE_MESSAGE(c.ok(), c.error().message);
            owned = c->partitions.size();
        }
        REQUIRE(owned == partitions);
        REQUIRE(g->leave("intruder").ok());
    });
}

}  // namespace

TEST_CASE("bridge: producer on A, workers on B and C behind one durable, results back on A: N results, each once") {
    REQUIRE_CLUSTER();
    Host a("pipe", "a"), b("pipe", "b"), c("pipe", "c");
    const std::string up = unique("UP"), res = unique("RES"), durable = unique("workers");
    const int n = 200;
    Fleet f;
    INFO(f.logs());
    for (Host* h : {&b, &c}) {
        const std::string p = h->pool();
        f.start("import-" + p, h->cmd(import_args(up, durable, "jobs", "--id imp-" + p + " --batch 8")));
        f.start("w1-" + p, h->cmd(worker("--topic jobs --group w --next-topic results-ev --id w1-" + p)));
        if (h == &b) f.start("w2-" + p, h->cmd(worker("--topic jobs --group w --next-topic results-ev --id w2-" + p)));
        f.start("export-" + p, h->cmd(export_args("results-ev", res, "--id exp-" + p)));
    }
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a")));
    f.start("import-a", a.cmd(import_args(res, "host-a", "results-ev", "--id imp-a")));
    // The application on A reading its results as they arrive (commits, so the importer acks).
    REQUIRE(eventually([&] { return a.has_topic("results-ev"); }));
    f.start("reader-a", a.cmd(e2e::cli_bin() + " tail results-ev --group app --follow --commit --json"));
    REQUIRE(eventually([&] { return b.members("jobs", "w") == 2 && c.members("jobs", "w") == 1; }));
    // Both importers bound to the durable before anything is produced (else one takes it all).
    auto bound = [](const Host& h) {
        for (const auto& s : h.bridges())
            if (s.role == bridge::Role::importer && s.gauges[uint32_t(bridge::StatusGauge::stream_ready)] == 1) return true;
        return false;
    };
    REQUIRE(eventually([&] { return bound(b) && bound(c); }, 30000));
    REQUIRE(eventually([&] { return a.has_group("results-ev", "app") && a.members("uploads-ev", "bridge") == 1; }));

    produce(a, "--topic uploads-ev --synthetic " + std::to_string(n) + " --size 1K");
    const bool done = eventually([&] { return all_results(a, n); }, 60000);
    CHECK_MESSAGE(done, "missing or wrong on A: " << wrong_results(a, n) << "\n" << a.dump());
    // Each result on A names A's own input and its version: the origin's identity came back.
    for (int i = 0; i < n; i += 37) {
        CHECK(a.metadata("results", result_key(i), "input-uri") == "fabric://host-a/uploads/" + key(i));
        CHECK(a.metadata("results", result_key(i), "input-version") == std::to_string(a.version("uploads", key(i))));
    }

    for (const char* w : {"w1-host-b", "w2-host-b", "w1-host-c"}) CHECK(f.stop(w) == 0);
    uint64_t processed = 0, skipped = 0;
    for (const char* w : {"w1-host-b", "w2-host-b", "w1-host-c"}) {
        processed += field(f[w].out(), "processed");
        skipped += field(f[w].out(), "skipped");
    }
    CHECK(processed == uint64_t(n));  // every input computed once, across both hosts
    CHECK(skipped == 0);
    for (const char* p : {"import-host-b", "import-host-c", "export-host-b", "export-host-c", "export-a", "import-a"})
        CHECK_MESSAGE(f.stop(p) == 0, p);
    // The durable shared the stream between B and C.
    CHECK(field(f["import-host-b"].out(), "messages") > 0);
    CHECK(field(f["import-host-c"].out(), "messages") > 0);
    CHECK(field(f["import-host-b"].out(), "messages") + field(f["import-host-c"].out(), "messages") == uint64_t(n));
    CHECK(field(f["export-a"].out(), "messages") == uint64_t(n));
    CHECK(field(f["import-a"].out(), "objects") == uint64_t(n));  // each result written on A exactly once
    CHECK(field(f["import-a"].out(), "duplicates") == 0);
}

TEST_CASE("bridge: an exporter SIGKILLed after the stream acked a round is restarted; the server drops the re-sent round") {
    REQUIRE_CLUSTER();
    Host a("expkill", "a"), b("expkill", "b");
    const std::string up = unique("UP"), durable = unique("d");
    const int n = 120;
    Fleet f;
    INFO(f.logs());
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b")));
    f.start("worker-b", b.cmd(worker("--topic jobs --group w --id wb")));
    produce(a, "--topic uploads-ev --synthetic " + std::to_string(n) + " --size 1K");
    // Killed right after its third round was acknowledged by the stream, before the commit.
    f.start("export-1", "env FABRIC_SHM_CRASH_POINT=bridge.export.after_ack:3 " +
                            a.cmd(export_args("uploads-ev", up, "--id exp-a --batch 10")));
    CHECK(f["export-1"].wait(30000) == 128 + SIGKILL);
    f.start("export-2", a.cmd(export_args("uploads-ev", up, "--id exp-a --batch 10")));
    CHECK_MESSAGE(eventually([&] { return all_results(b, n); }, 40000), wrong_results(b, n));
    CHECK(f.stop("export-2") == 0);
    CHECK(f.stop("worker-b") == 0);
    CHECK(f.stop("import-b") == 0);
    // The restarted exporter published the third round again; the stream recognised every
    // message of it by its id, so the importer saw each message once.
    CHECK(field(f["export-2"].out(), "duplicates") >= 1);
    CHECK(field(f["import-b"].out(), "messages") == uint64_t(n));
    CHECK(field(f["worker-b"].out(), "processed") == uint64_t(n));
    CHECK(field(f["worker-b"].out(), "skipped") == 0);
}

TEST_CASE("bridge: an exporter evicted while paused, and again while paused inside its own rejoin, joins again and "
          "exports everything") {
    REQUIRE_CLUSTER();
    Host a("exprejoin", "a"), b("exprejoin", "b");
    const std::string up = unique("UP"), durable = unique("d");
    const int half = 40;
    const auto session = std::chrono::milliseconds(500);
    Fleet f;
    INFO(f.logs());
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b")));
    f.start("worker-b", b.cmd(worker("--topic jobs --group w --id wb")));
    produce(a, "--topic uploads-ev --synthetic " + std::to_string(half) + " --size 1K");
    // Its second join (the rejoin after the first eviction) stops it once the row is published.
    e2e::Proc& exporter = f.start("export-a", "env FABRIC_SHM_PAUSE_POINT=group.join.joined:2 " +
                                                  a.cmd(export_args("uploads-ev", up, "--id exp-a --session-timeout 500ms")));
    REQUIRE_MESSAGE(eventually([&] { return all_results(b, half); }, 40000), wrong_results(b, half));
    // Paused past its session: another member's claims evict it.
    REQUIRE(kill(exporter.pid(), SIGSTOP) == 0);
    REQUIRE(test::wait_stopped(exporter.pid()));
    evict_silent_members(a, "uploads-ev", "bridge", session);
    test::resume(exporter.pid());
    // It finds itself evicted and rejoins; the rejoin stops it with its new row published.
    REQUIRE_MESSAGE(test::wait_stopped(exporter.pid()), "the exporter never reached its rejoin");
    evict_silent_members(a, "uploads-ev", "bridge", session);
    test::resume(exporter.pid());
    // The rejoin's claim finds the row evicted again: the exporter joins at its next keep-alive
    // or poll, and exports what comes next.
    produce(a, "--topic uploads-ev --synthetic " + std::to_string(2 * half) + " --size 1K");
    CHECK_MESSAGE(eventually([&] { return all_results(b, 2 * half); }, 40000), wrong_results(b, 2 * half));
    CHECK_MESSAGE(!exited(exporter.pid()), "the exporter exited: ", exporter.out());
    CHECK(f.stop("export-a") == 0);
    CHECK(f.stop("worker-b") == 0);
    CHECK(f.stop("import-b") == 0);
}

TEST_CASE("bridge: an importer SIGKILLed between put and ack: the redelivery finds the object, the workers skip") {
    REQUIRE_CLUSTER();
    Host a("impkill", "a"), b("impkill", "b");
    const std::string up = unique("UP"), durable = unique("d");
    const int n = 100;
    Fleet f;
    INFO(f.logs());
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a")));
    f.start("worker-b", b.cmd(worker("--topic jobs --group w --id wb")));
    // First: killed after notifying its 30th message, before acking it (the workers may have
    // processed it). Second: killed after storing its 20th object, before notifying.
    f.start("import-1", "env FABRIC_SHM_CRASH_POINT=bridge.import.after_send:30 " +
                            b.cmd(import_args(up, durable, "jobs", "--id imp-b --ack-wait 2s")));
    produce(a, "--topic uploads-ev --synthetic " + std::to_string(n) + " --size 1K");
    CHECK(f["import-1"].wait(30000) == 128 + SIGKILL);
    f.start("import-2", "env FABRIC_SHM_CRASH_POINT=bridge.import.after_put:20 " +
                            b.cmd(import_args(up, durable, "jobs", "--id imp-b --ack-wait 2s")));
    CHECK(f["import-2"].wait(30000) == 128 + SIGKILL);
    f.start("import-3", b.cmd(import_args(up, durable, "jobs", "--id imp-b --ack-wait 2s")));
    CHECK_MESSAGE(eventually([&] { return all_results(b, n); }, 40000), wrong_results(b, n));
    // Let the redeliveries of the last unacked messages land and be skipped.
    CHECK(eventually([&] {
        auto st = b.bridges();
        for (const auto& s : st)
            if (s.role == bridge::Role::importer && s.owner_alive)
                return s.gauges[uint32_t(bridge::StatusGauge::in_flight)] == 0 &&
                       s.gauges[uint32_t(bridge::StatusGauge::lag)] == 0;
        return false;
    }, 20000));
    CHECK(f.stop("import-3") == 0);
    CHECK(f.stop("worker-b") == 0);
    CHECK(f.stop("export-a") == 0);
    CHECK(field(f["import-3"].out(), "redeliveries") >= 1);
    CHECK(field(f["import-3"].out(), "duplicates") >= 1);      // objects found already stored
    CHECK(field(f["worker-b"].out(), "processed") == uint64_t(n));  // no result computed twice
    CHECK(b.dead_letters("jobs.dlq").empty());
}

TEST_CASE("bridge: one nats-server node SIGKILLed: the cluster keeps quorum and the bridge reconnects") {
    REQUIRE_CLUSTER();
    auto* cl = cluster();
    Host a("nodekill", "a"), b("nodekill", "b");
    const std::string up = unique("UP"), durable = unique("d");
    const int n = 300;
    Fleet f;
    INFO(f.logs());
    f.start("worker-b", b.cmd(worker("--topic jobs --group w --id wb")));
    // Messages the server sent to the importer on the connection that dies are redelivered after
    // the consumer's ack wait (30 s by default, measured as catch-ups of 30.5 s against the 40 s
    // bound below): 5 s keeps this case about the reconnection.
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b --batch 16 --ack-wait 5s")));
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a --batch 16")));
    produce(a, "--topic uploads-ev --synthetic 20 --size 1K");
    REQUIRE(eventually([&] { return b.count("results") >= 20; }, 20000));
    // Both bridges connected to node 1 (first in their server list). Kill it unless it leads
    // the stream or the consumer: then the one that leads neither is the victim, and the bridges
    // started anew connect to it first. (Losing a leader stalls the stream for the RAFT election,
    // 4-9 s in 2.9.10; that path is the whole-cluster test's.)
    auto [stream_leader, consumer_leader] = leaders(cl->url(0), up, durable);
    int victim = 0;
    for (int i = 0; i < cl->nodes(); ++i) {
        const std::string name = "n" + std::to_string(i + 1);
        if (name != stream_leader && name != consumer_leader) {
            victim = i;
            break;
        }
    }
    if (victim != 0) {
        std::string order = cl->url(victim);
        for (int i = 0; i < cl->nodes(); ++i)
            if (i != victim) order += "," + cl->url(i);
        CHECK(f.stop("import-b") == 0);
        CHECK(f.stop("export-a") == 0);
        f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b --batch 16 --ack-wait 5s --nats " + order)));
        f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a --batch 16 --to " + order)));
    }
    produce(a, "--topic uploads-ev --synthetic " + std::to_string(n) + " --size 1K");  // keys 0..n-1 again: new versions
    auto connected = [](const Host& h) {
        for (const auto& s : h.bridges())
            if (s.owner_alive && s.connection == bridge::ConnectionState::connected) return true;
        return false;
    };
    REQUIRE(eventually([&] { return connected(a) && connected(b); }));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    cl->stop_node(victim, SIGKILL);
    const auto killed_at = std::chrono::steady_clock::now();
    const bool done = eventually(
        [&] {
            if (b.count("results") < size_t(n)) return false;
            auto st = b.bridges();
            uint64_t in_flight = 0;
            for (const auto& s : st) in_flight += s.gauges[uint32_t(bridge::StatusGauge::in_flight)];
            return in_flight == 0 && all_results(b, n);
        },
        40000);
    CHECK_MESSAGE(done, wrong_results(b, n) << "\n" << b.dump());
    const auto caught_up_at = std::chrono::steady_clock::now();
    REQUIRE(cl->start_node(victim).ok());
    CHECK(cl->wait_ready(30 * kNsPerSec).ok());
    const auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
    MESSAGE("node n" << victim + 1 << " killed (stream leader " << stream_leader << ", consumer leader "
                     << consumer_leader << "): caught up in " << ms(caught_up_at - killed_at) << " ms, node back in "
                     << ms(std::chrono::steady_clock::now() - caught_up_at) << " ms");
    CHECK(f.stop("export-a") == 0);
    CHECK(f.stop("import-b") == 0);
    CHECK(f.stop("worker-b") == 0);
    CHECK(field(f["export-a"].out(), "reconnects") + field(f["import-b"].out(), "reconnects") >= 1);
    // 20 first versions, then n new ones: every version processed once (a skip is a redelivery).
    CHECK(field(f["worker-b"].out(), "processed") == uint64_t(20 + n));
}

TEST_CASE("bridge: a corrupt and an oversize message on the stream are dead-lettered locally; the import continues") {
    REQUIRE_CLUSTER();
    Host a("corrupt", "a"), b("corrupt", "b");
    const std::string up = unique("UP"), durable = unique("d");
    Fleet f;
    INFO(f.logs());
    // Inputs: two small files, a 300 KiB one (sent in 64 KiB chunks), a 600 KiB one (over the
    // importer's 512 KiB limit).
    const TempDir temp("bridge-inputs");
    const std::string& dir = temp.path;
    auto write = [&](const std::string& name, size_t size) {
        std::ofstream(dir + "/" + name, std::ios::binary) << e2e::synthetic_content(size, size);
        return e2e::synthetic_content(size, size);
    };
    const std::string small1 = write("a-small", 100), small2 = write("b-small", 2000);
    const std::string large = write("c-large", 300 << 10), huge = write("d-huge", 600 << 10);
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a --chunk-size 64K")));
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b --max-message 512K")));
    f.start("worker-b", b.cmd(worker("--topic jobs --group w --id wb")));
    produce(a, "--topic uploads-ev " + dir);
    REQUIRE(eventually([&] { return b.count("results") >= 3; }, 20000));
    // A message no bridge wrote, on the stream's message subject.
    REQUIRE(publish_raw(cluster()->url(0), "fabric." + up + ".m.0", "this is not a frame"));
    // And the import goes on.
    const std::string later = write("e-later", 500);
    std::filesystem::remove(dir + "/a-small");
    std::filesystem::remove(dir + "/b-small");
    std::filesystem::remove(dir + "/c-large");
    std::filesystem::remove(dir + "/d-huge");
    produce(a, "--topic uploads-ev " + dir);
    CHECK(eventually([&] { return b.count("results") >= 4; }, 20000));
    CHECK(b.get("results", "uploads/a-small") == e2e::crc_hex(small1));
    CHECK(b.get("results", "uploads/b-small") == e2e::crc_hex(small2));
    CHECK(b.get("results", "uploads/c-large") == e2e::crc_hex(large));
    CHECK(b.get("uploads", "c-large") == large);  // reassembled from its chunks, byte for byte
    CHECK(b.get("results", "uploads/e-later") == e2e::crc_hex(later));
    CHECK(b.get("uploads", "d-huge") == "<absent>");
    const auto dl = b.dead_letters("jobs.dlq");
    REQUIRE(dl.size() == 2);
    std::string reasons = dl[0].reason + " | " + dl[1].reason;
    CHECK_MESSAGE(reasons.find("exceeds the limit") != std::string::npos, reasons);
    CHECK_MESSAGE(reasons.find("not a fabric-shm bridge frame") != std::string::npos, reasons);
    CHECK(f.stop("import-b") == 0);
    CHECK(field(f["import-b"].out(), "dead_lettered") == 2);
    CHECK(field(f["import-b"].out(), "chunks") >= 5);
}

TEST_CASE("bridge: a full local topic slows the import, nothing is dropped; the dump and Prometheus show the bridge") {
    REQUIRE_CLUSTER();
    Host a("full", "a"), b("full", "b");
    const std::string up = unique("UP"), durable = unique("d");
    const int n = 30;
    Fleet f;
    INFO(f.logs());
    // B's topic holds 4 notifications; nobody consumes it yet.
    std::string out;
    REQUIRE_MESSAGE(e2e::sh(b.cmd(e2e::cli_bin() + " topic create jobs --partitions 1 --capacity 4 2>&1"), &out) == 0, out);
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a")));
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b")));
    produce(a, "--topic uploads-ev --synthetic " + std::to_string(n) + " --size 1K");
    auto importer = [&] {
        for (const auto& s : b.bridges())
            if (s.role == bridge::Role::importer) return s;
        return bridge::BridgeStatus{};
    };
    // The import stops at the topic's capacity and waits (its retries count), holding the rest on the stream.
    REQUIRE(eventually([&] { return importer().counters[uint32_t(bridge::StatusCounter::retries)] >= 1; }, 20000));
    CHECK(importer().counters[uint32_t(bridge::StatusCounter::messages)] <= 5);
    CHECK(b.dead_letters("jobs.dlq").empty());
    // What an operator sees meanwhile.
    std::string json, prom;
    REQUIRE(e2e::sh(b.cmd(test::build_path("tools/dump/fabric-shm-dump") + " --json"), &json) == 0);
    CHECK(json.find("\"bridge\":{\"processes\":[{") != std::string::npos);
    CHECK(json.find("\"connection\":\"connected\"") != std::string::npos);
    CHECK(json.find("\"durable\":\"" + durable + "\"") != std::string::npos);
    CHECK(json.find("is full") != std::string::npos);  // the last error names the waiting
    REQUIRE(e2e::sh(b.cmd(test::build_path("tools/dump/fabric-shm-dump") + " --prometheus"), &prom) == 0);
    CHECK(prom.find("fabric_shm_bridge_connected{pool=\"host-b\",role=\"import\",member=\"imp-b\",topic=\"jobs\",stream=\"" + up +
                    "\"} 1") != std::string::npos);
    CHECK(prom.find("# TYPE fabric_shm_bridge_retries_total counter") != std::string::npos);
    CHECK(prom.find("fabric_shm_bridge_stream_ready{") != std::string::npos);
    // A consumer arrives: the import resumes and everything gets through, once.
    f.start("worker-b", b.cmd(worker("--topic jobs --group w --id wb")));
    CHECK_MESSAGE(eventually([&] { return all_results(b, n); }, 30000), wrong_results(b, n));
    CHECK(f.stop("import-b") == 0);
    CHECK(f.stop("worker-b") == 0);
    CHECK(field(f["import-b"].out(), "messages") == uint64_t(n));
    // Each object was stored once and found by no redelivery: waiting is not a duplicate.
    CHECK(field(f["import-b"].out(), "objects") == uint64_t(n));
    CHECK(field(f["import-b"].out(), "duplicates") == 0);
    CHECK(field(f["worker-b"].out(), "processed") == uint64_t(n));
    CHECK(b.dead_letters("jobs.dlq").empty());
}

TEST_CASE("bridge: a pool that expires on one host loses nothing the stream holds: the importer re-creates it") {
    REQUIRE_CLUSTER();
    Host a("expire", "a"), b("expire", "b");
    const std::string up = unique("UP"), durable = unique("d");
    const int n = 30;
    Fleet f;
    INFO(f.logs());
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a")));
    // B's pool lives 2 s unless renewed. The importer stops itself (SIGSTOP, like a host that
    // froze) after putting and notifying its 5th message; nothing has processed them.
    f.start("import-b", "env FABRIC_SHM_PAUSE_POINT=bridge.import.after_send:5 " +
                            b.cmd(import_args(up, durable, "jobs", "--id imp-b --pool-ttl 2s")));
    produce(a, "--topic uploads-ev --synthetic " + std::to_string(n) + " --size 1K");
    REQUIRE(test::wait_stopped(f["import-b"].pid(), 20000));
    const uint64_t old_incarnation = b.incarnation();
    REQUIRE(old_incarnation != 0);
    // Every lease runs out; the reaper removes the pool.
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    std::string out;
    e2e::sh(b.cmd(test::build_path("tools/reaper/fabric-shm-reaper") + " 2>&1"), &out);
    CHECK_MESSAGE(!b.pool_exists(), out);
    test::resume(f["import-b"].pid());
    // The importer notices, hands its unacked messages back, and builds the pool anew.
    REQUIRE(eventually([&] { return b.pool_exists() && b.incarnation() != old_incarnation; }, 20000));
    f.start("worker-b", b.cmd(worker("--topic jobs --group w --id wb")));
    CHECK_MESSAGE(eventually([&] { return all_results(b, n); }, 30000), wrong_results(b, n));
    CHECK(f.stop("import-b") == 0);
    CHECK(f.stop("worker-b") == 0);
    CHECK(field(f["import-b"].out(), "pool_recoveries") >= 1);
    CHECK(field(f["worker-b"].out(), "processed") == uint64_t(n));
}

TEST_CASE("bridge: credentials and TLS reach the server; without them nothing moves and the status says so") {
    const TempDir temp("bridge-tls");
    const std::string& dir = temp.path;
    std::string extra = "authorization { user: bridge, password: s3cret }\n";
    std::string scheme = "nats", tls_args;
    std::string out;
    const bool have_openssl = e2e::sh("command -v openssl >/dev/null") == 0;
    if (have_openssl) {
        const std::string gen =
            "cd " + dir +
            " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem"
            " -days 1 -subj /CN=fabric-test-ca"
            " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key"
            " -out server.csr -subj /CN=127.0.0.1"
            " && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext"
            " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1"
            " -extfile san.ext 2>&1";
        REQUIRE_MESSAGE(e2e::sh(gen, &out) == 0, out);
        extra += "tls { cert_file: \"" + dir + "/server.pem\"\n key_file: \"" + dir + "/server.key\" }\n";
        scheme = "tls";
        tls_args = " --tls-ca " + dir + "/ca.pem";
    } else {
        MESSAGE("openssl not installed: credentials only, no TLS");
    }
    bridge::testing::ClusterOptions o;
    o.nodes = 1;
    o.config_extra = extra;
    o.client_scheme = scheme;
    auto server = bridge::testing::NatsCluster::start(o);
    REQUIRE_MESSAGE(server.ok(), server.error().message);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const std::string url = (*server)->url(0);
    Host a("tls", "a"), b("tls", "b"), d("tls", "d");
    const std::string up = unique("UP");
    const std::string creds = " --user bridge --password s3cret" + tls_args;
    Fleet f;
    INFO(f.logs());
    const std::string common = " --replicas 1 --json --reconnect-wait 50ms --reconnect-max 200ms";
    f.start("export-a", a.cmd(bridge_bin() + " export --topic uploads-ev --stream " + up + " --to " + url + common +
                              " --id exp-a" + creds));
    f.start("import-b", b.cmd(bridge_bin() + " import --from " + up + " --durable d --topic jobs --nats " + url + common +
                              " --id imp-b --ack-after send" + creds));
    // The same, without the password: refused by the server.
    f.start("export-d", d.cmd(bridge_bin() + " export --topic uploads-ev --stream " + up + "x --to " + url + common +
                              " --id exp-d" + tls_args));
    produce(a, "--topic uploads-ev --synthetic 10 --size 1K");
    CHECK(eventually([&] { return b.count("uploads") == 10; }, 20000));
    for (int i = 0; i < 10; ++i) CHECK(b.get("uploads", key(i)) == e2e::synthetic_content(uint64_t(i), 1024));
    produce(d, "--topic uploads-ev --synthetic 3 --size 1K");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    // Either it gave up at once with a permission error, or it is still trying and says so.
    if (exited(f["export-d"].pid())) {
        CHECK(f["export-d"].wait() == 1);
        CHECK(f["export-d"].out().find("permission_denied") != std::string::npos);
    } else {
        auto st = d.bridges();
        REQUIRE(st.size() == 1);
        CHECK(st[0].connection != bridge::ConnectionState::connected);
        CHECK(st[0].counters[uint32_t(bridge::StatusCounter::messages)] == 0);
    }
    CHECK(f.stop("export-a") == 0);
    CHECK(f.stop("import-b") == 0);
    CHECK(field(f["import-b"].out(), "messages") == 10);
}

TEST_CASE("bridge: the whole cluster stopped for 10 s: export lags and waits, then everything catches up") {
    REQUIRE_CLUSTER();
    auto* cl = cluster();
    Host a("outage", "a"), b("outage", "b");
    const std::string up = unique("UP"), durable = unique("d");
    Fleet f;
    INFO(f.logs());
    f.start("worker-b", b.cmd(worker("--topic jobs --group w --id wb")));
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b")));
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a")));
    produce(a, "--topic uploads-ev --synthetic 40 --size 1K");
    REQUIRE(eventually([&] { return all_results(b, 40); }, 30000));

    const auto stopped_at = std::chrono::steady_clock::now();
    cl->stop_all(SIGTERM);
    // Producers on A go on: the local topic holds their messages while the cluster is away.
    produce(a, "--topic uploads-ev --synthetic 80 --size 1K");  // keys 0..39 again (new versions) and 40..79
    auto exporter = [&] {
        for (const auto& s : a.bridges())
            if (s.owner_alive && s.role == bridge::Role::exporter) return s;
        return bridge::BridgeStatus{};
    };
    CHECK_MESSAGE(eventually([&] {
                      const auto s = exporter();
                      return s.connection != bridge::ConnectionState::connected &&
                             s.gauges[uint32_t(bridge::StatusGauge::lag)] > 0;
                  }, 9000),
                  a.dump());
    std::this_thread::sleep_until(stopped_at + std::chrono::seconds(10));
    REQUIRE(cl->start_all().ok());
    REQUIRE(cl->wait_ready(40 * kNsPerSec).ok());
    const bool caught_up = eventually(
        [&] {
            const auto s = exporter();
            return s.connection == bridge::ConnectionState::connected && s.gauges[uint32_t(bridge::StatusGauge::lag)] == 0 &&
                   all_results(b, 80);
        },
        60000);
    CHECK_MESSAGE(caught_up, wrong_results(b, 80) << "\n" << a.dump() << b.dump());
    CHECK(f.stop("export-a") == 0);
    CHECK(f.stop("import-b") == 0);
    CHECK(f.stop("worker-b") == 0);
    CHECK(field(f["export-a"].out(), "reconnects") >= 1);
    CHECK(field(f["import-b"].out(), "reconnects") >= 1);
    CHECK(field(f["worker-b"].out(), "processed") == 120);  // 40 + 80 versions, each processed once
}

namespace {

/// Creates a stream the way an operator might, before any bridge: the bridge's subjects, with
/// a per-message size limit below the exporter's chunk size.
bool create_stream_with_max_msg_size(const std::string& url, const std::string& stream, int32_t max_msg_size) {
    bool ok = false;
    with_jetstream(url, [&](jsCtx* js) {
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        const std::string subjects = "fabric." + stream + ".>";
        const char* subj[] = {subjects.c_str()};
        cfg.Name = stream.c_str();
        cfg.Subjects = subj;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Replicas = 3;
        cfg.Retention = js_WorkQueuePolicy;
        cfg.Discard = js_DiscardNew;
        cfg.MaxMsgSize = max_msg_size;
        cfg.Duplicates = int64_t(120) * 1'000'000'000;
        cfg.AllowDirect = true;
        jsStreamInfo* si = nullptr;
        jsErrCode jerr = jsErrCode(0);
        // Right after the cluster started, the meta leader may still be elected: retry a while.
        for (int i = 0; i < 100 && !ok; ++i) {
            const natsStatus s = js_AddStream(&si, js, &cfg, nullptr, &jerr);
            ok = s == NATS_OK;
            if (!ok) {
                MESSAGE("create stream: " << natsStatus_GetText(s) << " [JetStream error " << int(jerr) << "]");
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
        }
        jsStreamInfo_Destroy(si);
    });
    return ok;
}

/// The importer's status on host h (nullopt while it has none).
std::optional<bridge::BridgeStatus> importer_status(const Host& h) {
    for (const auto& s : h.bridges())
        if (s.role == bridge::Role::importer && s.owner_alive) return s;
    return std::nullopt;
}

/// Every partition of group `group` on `topic` of host h has committed everything (false while
/// the group does not exist).
bool group_caught_up(const Host& h, const std::string& topic, const std::string& group, uint64_t messages) {
    bool ok = false;
    h.with([&] {
        OpenOptions ro;
        ro.read_only = true;
        auto p = Pool::open(h.pool(), ro);
        if (!p) return;
        auto d = describe_consumer_group(*p, topic, group);
        if (!d) return;
        uint64_t committed = 0, lag = 0;
        for (const auto& part : d->partitions) {
            committed += part.committed;
            lag += part.lag;
        }
        ok = lag == 0 && committed >= messages;
    });
    return ok;
}

}  // namespace

TEST_CASE("bridge: a chunked message refused for its size is re-chunked smaller and arrives whole, not dead-lettered, "
          "and the work-queue stream is left empty") {
    REQUIRE_CLUSTER();
    Host a("rechunk", "a"), b("rechunk", "b");
    const std::string up = unique("UP"), durable = unique("d");
    Fleet f;
    INFO(f.logs());
    // The stream takes messages of at most 50000 bytes; the exporter cuts 64 KiB chunks. A
    // frame of two full chunks and a 20 KiB tail: the tail fits and is stored on the first try,
    // the full chunks are refused, and the round is rebuilt in 32 KiB chunks.
    REQUIRE(create_stream_with_max_msg_size(cluster()->url(0), up, 50000));
    const TempDir temp("bridge-rechunk");
    const std::string& dir = temp.path;
    const std::string big = e2e::synthetic_content(7, (128 << 10) + (20 << 10));
    std::ofstream(dir + "/big", std::ios::binary) << big;
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a --chunk-size 64K")));
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b --ack-after send")));
    produce(a, "--topic uploads-ev " + dir);
    const bool arrived = eventually([&] { return b.get("uploads", "big") == big || !b.dead_letters("jobs.dlq").empty(); }, 30000);
    CHECK(arrived);
    const auto dl = b.dead_letters("jobs.dlq");
    CHECK_MESSAGE(dl.empty(), (dl.empty() ? std::string() : dl[0].reason));
    const bool whole = b.get("uploads", "big") == big;
    CHECK_MESSAGE(whole, "the object on B is absent or differs from the one put on A");
    // A work-queue stream keeps a message until it is acked or deleted: the importer acked the
    // manifest and deleted the second cut's chunks once the ack floor had passed it; the first cut's
    // tail, stored before the refusal and named by no manifest, was the exporter's to delete.
    std::optional<uint64_t> left;
    const bool emptied = eventually([&] { return (left = stream_message_count(cluster()->url(0), up)) == uint64_t(0); }, 20000);
    CHECK_MESSAGE(emptied, "stream " << up << " still holds " << (left ? std::to_string(*left) : "?") << " message(s)");
    CHECK(f.stop("export-a") == 0);
    CHECK(f.stop("import-b") == 0);
    CHECK(field(f["export-a"].out(), "messages") == 1);
    // Counted for the cut that was stored (5 chunks of 32 KiB), not once per cut.
    CHECK(field(f["export-a"].out(), "objects") == 1);
    CHECK(field(f["export-a"].out(), "chunks") == 5);
}

TEST_CASE("bridge: an importer that acked a chunked message while its server stops answering keeps running, deletes "
          "the chunks once the ack floor passes the manifest, and stops on SIGTERM within seconds") {
    bridge::testing::ClusterOptions o;
    o.nodes = 1;
    auto server = bridge::testing::NatsCluster::start(o);
    REQUIRE_MESSAGE(server.ok(), server.error().message);
    const std::string url = (*server)->url(0);
    bridge::testing::NatsCluster& node = **server;
    struct Thaw {  // the cluster's destructor stops it by SIGTERM: it must be running
        bridge::testing::NatsCluster& node;
        ~Thaw() {
            if (const pid_t p = node.pid(0); p > 0) kill(p, SIGCONT);  // (-1 while stopped: never kill(-1))
        }
    } thaw{node};
    Host a("unanswered", "a"), b("unanswered", "b");
    const std::string up = unique("UP");
    Fleet f;
    INFO(f.logs());
    const std::string common = " --replicas 1 --json --reconnect-wait 50ms --reconnect-max 200ms";
    const std::string import_cmd = bridge_bin() + " import --from " + up + " --durable d --topic jobs --nats " + url + common +
                                   " --ack-after send";
    // Objects of 64 KiB in 4 KiB chunks: 17 chunks each, deleted once the manifest is acked.
    f.start("export-a", a.cmd(bridge_bin() + " export --topic uploads-ev --stream " + up + " --to " + url + common +
                              " --id exp-a --chunk-size 4K"));
    const TempDir temp("bridge-unanswered");
    const std::string& dir = temp.path;
    for (const char* name : {"first", "restarted", "second", "third", "later"})
        std::ofstream(dir + "/" + name, std::ios::binary) << e2e::synthetic_content(name[0], 64 << 10);
    // Each importer stops itself once it has put and notified its first message, before the ack;
    // then the server freezes (a host that stopped): the connection stays open, nothing answers.
    auto freeze_while_acking = [&](const std::string& importer, const std::string& object) {
        f.start(importer, "env FABRIC_SHM_PAUSE_POINT=bridge.import.after_send:1 " + b.cmd(import_cmd + " --id " + importer));
        produce(a, "--topic uploads-ev " + dir + "/" + object);
        REQUIRE(test::wait_stopped(f[importer].pid(), 30000));
        CHECK(b.get("uploads", object) == e2e::synthetic_content(object[0], 64 << 10));
        REQUIRE(kill(node.pid(0), SIGSTOP) == 0);
        test::resume(f[importer].pid());
    };

    // The ack goes out without waiting; the chunks wait for the durable's ack floor to pass the
    // manifest. Meanwhile the loop goes on: its status heartbeat keeps moving (it stood still
    // while deletes waited 5 s each for a server that did not answer).
    freeze_while_acking("imp-1", "first");
    const uint64_t resumed = wall_now_ns();
    CHECK(eventually(
        [&] {
            const auto st = importer_status(b);
            return st && st->heartbeat_wall_ns >= resumed + 2'000'000'000ull;
        },
        6000));
    // The server answers again and the ack lands: the work-queue stream drops the manifest and
    // keeps its 17 chunks until the importer deletes them (once the floor has stayed past the
    // manifest for 5 s).
    REQUIRE(kill(node.pid(0), SIGCONT) == 0);
    std::optional<uint64_t> left;
    CHECK(eventually([&] { return (left = stream_message_count(url, up)) == uint64_t(17); }, 10000));
    // Then the server restarts (its file store kept) before they went: the importer reconnects,
    // and those chunks go, and those of a message acked after the restart (the durable reports
    // another creation time after a restart; the stream keeps its own). Nothing is left.
    node.stop_node(0);
    REQUIRE(node.start_node(0).ok());
    produce(a, "--topic uploads-ev " + dir + "/restarted");
    CHECK(eventually([&] { return b.get("uploads", "restarted") == e2e::synthetic_content('r', 64 << 10); }, 30000));
    const bool emptied = eventually([&] { return (left = stream_message_count(url, up)) == uint64_t(0); }, 30000);
    CHECK_MESSAGE(emptied, "stream " << up << " still holds " << (left ? std::to_string(*left) : "?") << " message(s)");
    CHECK(f.stop("imp-1") == 0);

    // Stopped while the server does not answer, with two more chunked messages fetched behind
    // the one it acks: neither a wait of seconds per chunk to delete nor one per message to
    // read the chunks of keeps SIGTERM waiting; the two go back to the stream.
    for (const char* name : {"second", "third", "later"}) produce(a, "--topic uploads-ev " + dir + "/" + name);
    REQUIRE(eventually([&] { return stream_message_count(url, up) == uint64_t(3 * 18); }, 20000));
    f.start("imp-2", "env FABRIC_SHM_PAUSE_POINT=bridge.import.after_send:1 " + b.cmd(import_cmd + " --id imp-2"));
    REQUIRE(test::wait_stopped(f["imp-2"].pid(), 30000));
    CHECK(b.get("uploads", "second") == e2e::synthetic_content('s', 64 << 10));
    REQUIRE(kill(node.pid(0), SIGSTOP) == 0);
    test::resume(f["imp-2"].pid());
    const auto t0 = std::chrono::steady_clock::now();
    const int rc = f.stop("imp-2", 15000);
    const auto took_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    CHECK(rc == 0);
    CHECK_MESSAGE(took_ms < 6000, "the importer took " << took_ms << " ms to stop");
    REQUIRE(kill(node.pid(0), SIGCONT) == 0);
    CHECK(b.dead_letters("jobs.dlq").empty());
    CHECK(f.stop("export-a") == 0);
}

TEST_CASE("bridge: an importer whose durable is deleted under it creates it again and goes on importing") {
    REQUIRE_CLUSTER();
    Host a("durable-gone", "a"), b("durable-gone", "b");
    const std::string up = unique("UP"), durable = unique("d");
    Fleet f;
    INFO(f.logs());
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a")));
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b --ack-after send")));
    produce(a, "--topic uploads-ev --synthetic 1 --size 1K");
    REQUIRE(eventually([&] { return b.count("uploads") == 1; }, 20000));
    REQUIRE(delete_durable(cluster()->url(0), up, durable));
    // A pull from a deleted durable is answered by nobody: the importer learns it from the
    // durable's information, read every second, and subscribes again.
    produce(a, "--topic uploads-ev --synthetic 3 --size 1K");
    CHECK(eventually([&] { return b.count("uploads") == 3; }, 20000));
    CHECK(f["import-b"].err().find("is gone: subscribing again") != std::string::npos);
    CHECK(f.stop("import-b") == 0);
    CHECK(f.stop("export-a") == 0);
}

TEST_CASE("bridge: with two --ack-group groups, a message is acked on the stream only once both have committed it") {
    REQUIRE_CLUSTER();
    Host a("ackgroups", "a"), b("ackgroups", "b");
    const std::string up = unique("UP"), durable = unique("d");
    const int n = 5;
    Fleet f;
    INFO(f.logs());
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a")));
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b --ack-group g1 --ack-group g2")));
    f.start("worker-g1", b.cmd(worker("--topic jobs --group g1 --id w1")));
    REQUIRE(eventually([&] { return b.members("jobs", "g1") == 1; }));
    produce(a, "--topic uploads-ev --synthetic " + std::to_string(n) + " --size 1K");
    // g1 processed and committed everything; g2, named as required, has not started yet.
    REQUIRE(eventually([&] { return group_caught_up(b, "jobs", "g1", n); }, 30000));
    // The importer checks the groups' commits every 20 ms: 50 checks, none may ack.
    const bool acked_early = eventually([&] {
        auto s = importer_status(b);
        return s && s->counters[uint32_t(bridge::StatusCounter::acked)] > 0;
    }, 1000);
    CHECK_FALSE(acked_early);
    // Once g2 committed too, everything is acked.
    f.start("worker-g2", b.cmd(worker("--topic jobs --group g2 --id w2 --result-bucket results-g2")));
    CHECK(eventually([&] {
        auto s = importer_status(b);
        return s && s->counters[uint32_t(bridge::StatusCounter::acked)] == uint64_t(n);
    }, 30000));
    CHECK(f.stop("worker-g1") == 0);
    CHECK(f.stop("worker-g2") == 0);
    CHECK(f.stop("import-b") == 0);
    CHECK(f.stop("export-a") == 0);
}

TEST_CASE("bridge: an object the exporter cannot pin for a while is exported with its bytes once it can, never without them") {
    REQUIRE_CLUSTER();
    Host a("pinfull", "a"), b("pinfull", "b");
    const std::string up = unique("UP"), durable = unique("d");
    Fleet f;
    INFO(f.logs());
    produce(a, "--topic uploads-ev --synthetic 1 --size 1K");
    // Another reader of A's store holds every pin record (1024): a pin fails with
    // capacity_exceeded until it lets go. The object is there all along.
    std::optional<Pool> pool;
    std::unique_ptr<MemObjectStore> store;
    std::vector<PinnedView> pins;
    a.with([&] {
        auto p = Pool::open(a.pool());
        REQUIRE(p.ok());
        pool.emplace(std::move(*p));
        auto s = MemObjectStore::attach(*pool);
        REQUIRE(s.ok());
        store = std::move(*s);
        auto uri = FabricUri::parse("fabric://" + a.pool() + "/uploads/" + key(0));
        REQUIRE(uri.ok());
        for (int i = 0; i < 4096; ++i) {
            auto pin = store->pin(*uri);
            if (!pin) {
                REQUIRE(pin.code() == Errc::capacity_exceeded);
                break;
            }
            REQUIRE(pin->has_value());
            pins.push_back(std::move(**pin));
        }
    });
    REQUIRE(!pins.empty());
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a")));
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b --ack-after send")));
    // The exporter met the full pin table...
    REQUIRE(eventually([&] {
        for (const auto& s : a.bridges())
            if (s.role == bridge::Role::exporter && s.last_error.find("pin records") != std::string::npos) return true;
        return false;
    }, 30000));
    // ... and once the reader lets go, B gets the object itself, not a notification without it.
    pins.clear();
    const std::string want = e2e::synthetic_content(0, 1024);
    CHECK(eventually([&] { return b.get("uploads", key(0)) == want; }, 20000));
    CHECK(f.stop("export-a") == 0);
    CHECK(f.stop("import-b") == 0);
    CHECK(field(f["import-b"].out(), "objects") == 1);
    CHECK(field(f["export-a"].out(), "objects") == 1);  // counted once stored, not per try
    store.reset();
    pool.reset();
}

TEST_CASE("bridge: messages fetched with one that waits for a full topic keep their ack deadline: none is redelivered") {
    REQUIRE_CLUSTER();
    Host a("fullbatch", "a"), b("fullbatch", "b");
    const std::string up = unique("UP"), durable = unique("d");
    const int n = 12;
    Fleet f;
    INFO(f.logs());
    std::string out;
    REQUIRE_MESSAGE(e2e::sh(b.cmd(e2e::cli_bin() + " topic create jobs --partitions 1 --capacity 4 2>&1"), &out) == 0, out);
    // Produced before the import starts, so that one fetch takes them all: 4 fit the topic, the
    // 5th waits, and the 7 behind it wait in the importer's hands.
    produce(a, "--topic uploads-ev --synthetic " + std::to_string(n) + " --size 1K");
    f.start("export-a", a.cmd(export_args("uploads-ev", up, "--id exp-a")));
    REQUIRE(eventually([&] { return a.members("uploads-ev", "bridge") == 1; }));
    auto importer = [&] {
        for (const auto& s : b.bridges())
            if (s.role == bridge::Role::importer) return s;
        return bridge::BridgeStatus{};
    };
    f.start("import-b", b.cmd(import_args(up, durable, "jobs", "--id imp-b --ack-wait 1s")));
    REQUIRE(eventually([&] { return importer().counters[uint32_t(bridge::StatusCounter::retries)] >= 1; }, 20000));
    // Held back three ack waits.
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));
    f.start("worker-b", b.cmd(worker("--topic jobs --group w --id wb")));
    CHECK_MESSAGE(eventually([&] { return all_results(b, n); }, 30000), wrong_results(b, n));
    CHECK(eventually([&] { return importer().gauges[uint32_t(bridge::StatusGauge::in_flight)] == 0; }, 10000));
    CHECK(f.stop("import-b") == 0);
    CHECK(f.stop("worker-b") == 0);
    CHECK(f.stop("export-a") == 0);
    CHECK(field(f["import-b"].out(), "redeliveries") == 0);
    CHECK(field(f["import-b"].out(), "messages") == uint64_t(n));
    CHECK(field(f["worker-b"].out(), "skipped") == 0);
}
