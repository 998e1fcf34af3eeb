// SPDX-License-Identifier: MIT
// JobCoordinator: skip existing outputs, retry transient errors with backoff, never retry
// permanent ones, aggregate only when complete, and an idempotent re-run after a killed process
// with the pool-backed output store.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "../mq/mq_test_util.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/mem_object_store.h"

using namespace fabric_shm;
using namespace mqtest;

namespace {

std::vector<WorkChunk> make_chunks(uint32_t n) {
    std::vector<WorkChunk> c;
    for (uint32_t i = 0; i < n; ++i) {
        const std::string s = "chunk" + std::to_string(i);
        c.push_back(WorkChunk{100 + i, std::vector<uint8_t>(s.begin(), s.end())});
    }
    return c;
}

Result<std::vector<uint8_t>> upper(std::span<const uint8_t> in) {
    std::vector<uint8_t> out(in.begin(), in.end());
    for (auto& ch : out) ch = uint8_t(toupper(ch));
    return out;
}

std::vector<uint8_t> concat(const JobCoordinator::Outputs& outs) {
    std::vector<uint8_t> all;
    for (const auto& [id, o] : outs) {
        all.insert(all.end(), o.begin(), o.end());
        all.push_back(',');
    }
    return all;
}

std::string str(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

}  // namespace

TEST_CASE("jobs: RetryPolicy defaults retry transient errors only, with doubling backoff") {
    RetryPolicy p;
    CHECK(p.max_attempts == 4);
    CHECK(p.backoff(1) == std::chrono::milliseconds(50));
    CHECK(p.backoff(2) == std::chrono::milliseconds(100));
    CHECK(p.backoff(30) == std::chrono::seconds(2));
    CHECK(p.is_retryable(Errc::lease_expired));
    CHECK(p.is_retryable(Errc::timeout));
    CHECK_FALSE(p.is_retryable(Errc::not_found));
    CHECK_FALSE(p.is_retryable(Errc::invalid_argument));
    CHECK_FALSE(p.is_retryable(Errc::corrupt));
    CHECK_FALSE(p.is_retryable(Errc::stale_epoch));
}

TEST_CASE("jobs: a run executes every chunk, aggregates in chunk order, and a re-run skips them all") {
    MemoryOutputStore out;
    JobCoordinator jc;
    const auto chunks = make_chunks(4);
    int execs = 0;
    auto exec = [&](std::span<const uint8_t> in) { ++execs; return upper(in); };
    auto r = jc.run(chunks, out, exec, concat);
    REQUIRE(r.ok());
    CHECK(r->complete);
    CHECK(r->executed == 4);
    CHECK(str(r->aggregate) == "CHUNK0,CHUNK1,CHUNK2,CHUNK3,");
    auto again = jc.run(chunks, out, exec, concat);
    REQUIRE(again.ok());
    CHECK(again->skipped == 4);
    CHECK(execs == 4);
    CHECK(str(again->aggregate) == str(r->aggregate));
    std::vector<WorkChunk> dup = make_chunks(2);
    dup[1].id = dup[0].id;
    CHECK(jc.run(dup, out, exec, concat).code() == Errc::invalid_argument);
}

TEST_CASE("jobs: retryable errors are retried with backoff; permanent ones never; no aggregate on failure") {
    std::vector<uint64_t> slept;
    RetryPolicy p;
    p.sleep = [&](Duration wait) { slept.push_back(to_ns(wait)); };
    JobCoordinator jc(p);
    MemoryOutputStore out;
    const auto chunks = make_chunks(3);
    std::map<ChunkId, int> calls;
    bool aggregated = false;
    auto exec = [&](std::span<const uint8_t> in) -> Result<std::vector<uint8_t>> {
        const std::string s(in.begin(), in.end());
        const int n = ++calls[s == "chunk0" ? 100 : s == "chunk1" ? 101 : 102];
        if (s == "chunk0" && n < 3) return make_error(Errc::lease_expired, "lease ran out");  // transient, then ok
        if (s == "chunk1") return make_error(Errc::not_found, "object gone");                 // permanent
        if (s == "chunk2") return make_error(Errc::busy, "always busy");                      // exhausts retries
        return upper(in);
    };
    auto r = jc.run(chunks, out, exec, [&](const JobCoordinator::Outputs& o) { aggregated = true; return concat(o); });
    REQUIRE(r.ok());
    CHECK_FALSE(r->complete);
    CHECK_FALSE(aggregated);
    CHECK(calls[100] == 3);
    CHECK(calls[101] == 1);
    CHECK(calls[102] == 4);
    REQUIRE(r->failed.size() == 2);
    CHECK(r->failed[0].id == 101);
    CHECK(r->failed[0].error.code == Errc::not_found);
    CHECK(r->failed[0].attempts == 1);
    CHECK(r->failed[1].id == 102);
    CHECK(r->failed[1].error.code == Errc::busy);
    CHECK(r->failed[1].attempts == 4);
    CHECK(slept == std::vector<uint64_t>{50'000'000ull, 100'000'000ull, 50'000'000ull, 100'000'000ull, 200'000'000ull});
    CHECK(out.contains(100).value());
}

namespace {
/// An output store that is full for its first `full_puts` puts.
struct FullForAWhile final : JobOutputStore {
    MemoryOutputStore inner;
    int full_puts = 0, puts = 0;
    Status put(ChunkId id, ByteView output) override {
        if (puts++ < full_puts) return make_error(Errc::capacity_exceeded, "store full");
        return inner.put(id, output);
    }
    Result<std::optional<std::vector<uint8_t>>> get(ChunkId id) override { return inner.get(id); }
    Result<bool> contains(ChunkId id) override { return inner.contains(id); }
    Status clear() override { return inner.clear(); }
};
}  // namespace

TEST_CASE("jobs: a full output store makes a chunk's output wait for room; the chunk is not run again and no attempt "
          "is counted") {
    std::vector<uint64_t> slept;
    RetryPolicy p;
    p.sleep = [&](Duration wait) { slept.push_back(to_ns(wait)); };
    FullForAWhile out;
    out.full_puts = 3;
    int runs = 0;
    auto exec = [&](std::span<const uint8_t> in) {
        ++runs;
        return upper(in);
    };
    auto r = JobCoordinator(p).run(make_chunks(2), out, exec, concat);
    REQUIRE_MESSAGE(r.ok(), r.error().message);
    CHECK(r->complete);
    CHECK(str(r->aggregate) == "CHUNK0,CHUNK1,");
    CHECK(runs == 2);  // each chunk ran once
    CHECK(r->retries == 0);
    CHECK(r->failed.empty());
    CHECK(slept == std::vector<uint64_t>{50'000'000ull, 100'000'000ull, 200'000'000ull});

    // Still full past store_wait: the run ends with the store's error, naming the wait.
    FullForAWhile never;
    never.full_puts = 1 << 30;
    slept.clear();
    p.store_wait = std::chrono::seconds(1);
    auto stuck = JobCoordinator(p).run(make_chunks(1), never, exec, concat);
    REQUIRE_FALSE(stuck.ok());
    CHECK(stuck.code() == Errc::capacity_exceeded);
    CHECK(stuck.error().message.find("store_wait") != std::string::npos);
    uint64_t waited = 0;
    for (uint64_t w : slept) waited += w;
    CHECK(waited >= 1'000'000'000ull);
    CHECK(waited < 3'500'000'000ull);

    // A zero backoff still waits at least 1 ms a time, and the wait still ends.
    slept.clear();
    p.initial_backoff = Duration::zero();
    p.store_wait = std::chrono::milliseconds(10);
    auto spun = JobCoordinator(p).run(make_chunks(1), never, exec, concat);
    REQUIRE_FALSE(spun.ok());
    CHECK(spun.code() == Errc::capacity_exceeded);
    CHECK(slept.size() == 10);
    for (uint64_t w : slept) CHECK(w == 1'000'000ull);
}

TEST_CASE("jobs: should_stop ends a run before its next chunk, retry or wait for room; the stored outputs stay") {
    bool stop = false;
    int waits = 0;
    RetryPolicy p;
    p.sleep = [&](Duration) { ++waits; };
    p.should_stop = [&] { return stop; };
    int runs = 0;
    auto stop_after_two = [&](std::span<const uint8_t> in) {
        if (++runs == 2) stop = true;  // asked for while the second chunk runs (a Ctrl-C then)
        return upper(in);
    };
    MemoryOutputStore out;
    auto r = JobCoordinator(p).run(make_chunks(4), out, stop_after_two, concat);
    REQUIRE_FALSE(r.ok());
    CHECK(r.code() == Errc::interrupted);
    CHECK(runs == 2);
    CHECK(out.contains(100).value());
    CHECK(out.contains(101).value());
    CHECK_FALSE(out.contains(102).value());

    // Asked for during a retry's backoff: no further attempt.
    stop = false;
    runs = 0;
    p.sleep = [&](Duration) { stop = true; };
    auto busy = [&](std::span<const uint8_t>) -> Result<std::vector<uint8_t>> {
        ++runs;
        return make_error(Errc::busy, "converter busy");
    };
    MemoryOutputStore none;
    r = JobCoordinator(p).run(make_chunks(1), none, busy, concat);
    CHECK(r.code() == Errc::interrupted);
    CHECK(runs == 1);

    // Asked for during a wait for room in a full store: one wait, not store_wait's worth.
    stop = false;
    waits = 0;
    p.sleep = [&](Duration) {
        ++waits;
        stop = true;
    };
    FullForAWhile full;
    full.full_puts = 1 << 30;
    r = JobCoordinator(p).run(make_chunks(1), full, upper, concat);
    CHECK(r.code() == Errc::interrupted);
    CHECK(waits == 1);
    CHECK(full.puts == 2);

    // The default sleep asks too, every 20 ms: a stop during a 10 s backoff ends it.
    RetryPolicy slow;
    slow.initial_backoff = std::chrono::seconds(10);
    const uint64_t start = mono_now_ns();
    slow.should_stop = [&] { return mono_now_ns() - start > 50 * kNsPerMs; };
    runs = 0;
    MemoryOutputStore none2;
    r = JobCoordinator(slow).run(make_chunks(1), none2, busy, concat);
    CHECK(r.code() == Errc::interrupted);
    CHECK(runs == 1);
    CHECK(mono_now_ns() - start < 2 * kNsPerSec);
}

TEST_CASE("jobs: a killed process's replacement skips the chunks it finished (pool-backed outputs)") {
    TestPool tp("jobs-kill");
    REQUIRE(MemObjectStore::open(tp.pool).ok());
    const std::string name = tp.cleanup.name();
    const auto chunks = make_chunks(6);
    auto* executed = static_cast<std::atomic<uint32_t>*>(
        mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    REQUIRE(executed != MAP_FAILED);
    new (executed) std::atomic<uint32_t>(0);
    auto run_job = [&](bool die_on_chunk3) {
        auto p = Pool::open(name);
        if (!p) return 90;
        auto store = MemObjectStore::open(*p);
        if (!store) return 91;
        ObjectOutputStore out(**store, name, "job-1");
        JobCoordinator jc;
        auto r = jc.run(chunks, out,
                        [&](std::span<const uint8_t> in) {
                            if (die_on_chunk3 && std::string(in.begin(), in.end()) == "chunk3") raise(SIGKILL);
                            executed->fetch_add(1, std::memory_order_relaxed);
                            return upper(in);
                        },
                        concat);
        if (!r || !r->complete) return 92;
        return str(r->aggregate) == "CHUNK0,CHUNK1,CHUNK2,CHUNK3,CHUNK4,CHUNK5," && r->skipped == 3 ? 0 : 93;
    };
    CHECK(test::wait_child(test::fork_child([&] { return run_job(true); })) == 128 + SIGKILL);
    CHECK(executed->load() == 3);
    CHECK(test::wait_child(test::fork_child([&] { return run_job(false); })) == 0);
    CHECK(executed->load() == 6);  // chunks 0-2 were not executed again
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    ObjectOutputStore out(**store, name, "job-1");
    CHECK(out.contains(105).value());
    REQUIRE(out.clear().ok());
    CHECK_FALSE(out.contains(105).value());
    munmap(executed, 4096);
}

TEST_CASE("jobs: clearing a job's outputs leaves another job's alone, even one whose name extends it") {
    TestPool tp("jobs-clear");
    REQUIRE(MemObjectStore::open(tp.pool).ok());
    auto store = MemObjectStore::open(tp.pool);
    REQUIRE(store.ok());
    const std::string name = tp.cleanup.name();
    ObjectOutputStore nightly(**store, name, "nightly"), dated(**store, name, "nightly/2026-12-06");
    const std::string out = "OUTPUT";
    const ByteView bytes(reinterpret_cast<const uint8_t*>(out.data()), out.size());
    REQUIRE(nightly.put(1, bytes).ok());
    REQUIRE(dated.put(1, bytes).ok());
    REQUIRE(dated.put(2, bytes).ok());
    REQUIRE(nightly.clear().ok());
    CHECK_FALSE(nightly.contains(1).value());
    CHECK(dated.contains(1).value());
    CHECK(dated.contains(2).value());
}
