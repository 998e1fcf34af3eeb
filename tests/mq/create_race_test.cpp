// SPDX-License-Identifier: MIT
// Creation on demand under races: a topic whose creation another thread or process has in
// progress is waited for (bounded), never reported missing; a creator that dies half way
// leaves nothing that stops the next one. The creator is held at the pause point
// `topic.create.before_publish` (every partition made, the root not yet published), and
// each racer proves it reached the wait at `topic.open.waiting`.
#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "crash_point.h"
#include "fabric_shm/topic.h"
#include "mq_test_util.h"

using namespace fabric_shm;
using namespace mqtest;

namespace {

/// Messages held by every partition of `topic`.
uint64_t messages_in(Pool& pool, const std::string& topic) {
    auto d = TopicManager(pool).describe(topic);
    REQUIRE_MESSAGE(d.ok(), d.error().message);
    uint64_t n = 0;
    for (const auto& p : d->partitions) n += p.next - p.oldest;
    return n;
}

/// The in-process hook: the creator thread stops at topic.create.before_publish until
/// released; every racer that reaches topic.open.waiting is counted.
std::atomic<int> g_creator_state{0};  // 0 running, 1 held, 2 released
std::atomic<int> g_waiting{0};
void race_hook(const char* name) {
    if (std::strcmp(name, "topic.create.before_publish") == 0) {
        int running = 0;
        if (!g_creator_state.compare_exchange_strong(running, 1)) return;  // only the first creator is held
        while (g_creator_state.load() == 1) std::this_thread::sleep_for(std::chrono::microseconds(100));
    } else if (std::strcmp(name, "topic.open.waiting") == 0) {
        g_waiting.fetch_add(1);
    }
}

bool until(const std::function<bool()>& pred, int timeout_ms = 10000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
}

/// What each racing process runs: ensure (or only open a producer) and send one message.
int race_once(const std::string& pool_name, bool ensure) {
    auto p = Pool::open(pool_name);
    if (!p) return 10;
    if (ensure) {
        if (Status st = TopicManager(*p).ensure("ev", config(4, 16)); !st) {
            std::fprintf(stderr, "ensure: %s\n", st.error().message.c_str());
            return 11;
        }
    }
    auto prod = Producer::open(*p, "ev");
    if (!prod) {
        std::fprintf(stderr, "open: %s\n", prod.error().message.c_str());
        return 12;
    }
    return prod->send("k", "v") ? 0 : 13;
}

}  // namespace

TEST_CASE("create race: threads that ensure or open a topic while another thread creates it all wait and succeed") {
    TestPool tp("crace-threads");
    g_creator_state = 0;
    g_waiting = 0;
    detail::set_pause_hook(&race_hook);
    Status created;
    std::thread creator([&] { created = TopicManager(tp.pool).ensure("ev", config(4, 16)); });
    REQUIRE(until([] { return g_creator_state.load() == 1; }));  // partitions made, root unpublished

    constexpr int kRacers = 8;
    std::vector<std::thread> racers;
    std::vector<std::string> errors(kRacers);
    for (int i = 0; i < kRacers; ++i)
        racers.emplace_back([&, i] {
            // Half create on demand, half only open a producer (send never creates).
            if (i % 2 == 0)
                if (Status st = TopicManager(tp.pool).ensure("ev", config(4, 16)); !st) {
                    errors[size_t(i)] = "ensure: " + st.error().message;
                    return;
                }
            auto prod = Producer::open(tp.pool, "ev");
            if (!prod) {
                errors[size_t(i)] = "open: " + prod.error().message;
                return;
            }
            if (auto s = prod->send("k", "v"); !s) errors[size_t(i)] = "send: " + s.error().message;
        });
    // Every racer is inside the wait while the creation is held (not failed with not_found).
    const bool all_waiting = until([] { return g_waiting.load() >= kRacers; });
    g_creator_state = 2;
    creator.join();
    for (auto& t : racers) t.join();
    detail::set_pause_hook(nullptr);
    CHECK(all_waiting);
    CHECK_MESSAGE(created.ok(), created.error().message);
    for (int i = 0; i < kRacers; ++i) CHECK_MESSAGE(errors[size_t(i)].empty(), "racer ", i, ": ", errors[size_t(i)]);
    CHECK(TopicManager(tp.pool).list() == std::vector<std::string>{"ev"});
    CHECK(messages_in(tp.pool, "ev") == uint64_t(kRacers));
}

TEST_CASE("create race: processes that ensure or open a topic while a stopped process creates it wait for it") {
    TestPool tp("crace-procs");
    const std::string name = tp.cleanup.name();
    pid_t creator = test::fork_child([&] {
        setenv("FABRIC_SHM_PAUSE_POINT", "topic.create.before_publish", 1);
        detail::crash_point_rearm();
        auto p = Pool::open(name);
        if (!p) return 10;
        return TopicManager(*p).ensure("ev", config(4, 16)) ? 0 : 11;
    });
    REQUIRE(test::wait_stopped(creator));
    constexpr int kRacers = 4;
    std::vector<pid_t> racers;
    for (int i = 0; i < kRacers; ++i) {
        racers.push_back(test::fork_child([&, i] {
            setenv("FABRIC_SHM_PAUSE_POINT", "topic.open.waiting", 1);
            detail::crash_point_rearm();
            return race_once(name, i % 2 == 0);
        }));
        int code = -1;
        // Stopped at the wait: it saw the creation in progress (a racer that reported the
        // topic missing would have exited instead).
        CHECK_MESSAGE(test::wait_stopped(racers.back(), 20000, &code), "racer ", i, " exited with ", code);
    }
    for (pid_t r : racers) test::resume(r);  // they go on waiting: the creator is still stopped
    test::resume(creator);
    CHECK(test::wait_child(creator) == 0);
    for (pid_t r : racers) CHECK(test::wait_child(r) == 0);
    CHECK(messages_in(tp.pool, "ev") == uint64_t(kRacers));
}

TEST_CASE("create race: a creator killed before publishing leaves nothing that stops the waiters creating the topic") {
    TestPool tp("crace-dead");
    const std::string name = tp.cleanup.name();
    pid_t creator = test::fork_child([&] {
        setenv("FABRIC_SHM_PAUSE_POINT", "topic.create.before_publish", 1);
        detail::crash_point_rearm();
        auto p = Pool::open(name);
        if (!p) return 10;
        return TopicManager(*p).ensure("ev", config(4, 16)) ? 0 : 11;
    });
    REQUIRE(test::wait_stopped(creator));
    std::vector<pid_t> racers;
    for (int i = 0; i < 3; ++i) {
        racers.push_back(test::fork_child([&] {
            setenv("FABRIC_SHM_PAUSE_POINT", "topic.open.waiting", 1);
            detail::crash_point_rearm();
            return race_once(name, true);
        }));
        CHECK(test::wait_stopped(racers.back()));
    }
    ::kill(creator, SIGKILL);  // its root stays CREATING under a dead owner, its partitions orphaned
    CHECK(test::wait_child(creator) == 128 + SIGKILL);
    for (pid_t r : racers) test::resume(r);
    for (pid_t r : racers) CHECK(test::wait_child(r) == 0);  // one of them created it, the others waited
    CHECK(TopicManager(tp.pool).list() == std::vector<std::string>{"ev"});
    CHECK(messages_in(tp.pool, "ev") == 3);
}

TEST_CASE("create race: an open gives up on a creation held longer than its wait, naming the creator") {
    TestPool tp("crace-held");
    const std::string name = tp.cleanup.name();
    pid_t creator = test::fork_child([&] {
        setenv("FABRIC_SHM_PAUSE_POINT", "topic.create.before_publish", 1);
        detail::crash_point_rearm();
        auto p = Pool::open(name);
        if (!p) return 10;
        return TopicManager(*p).create("ev", config(2, 16)) ? 0 : 11;
    });
    REQUIRE(test::wait_stopped(creator));
    const auto start = std::chrono::steady_clock::now();
    Status st = TopicManager(tp.pool).ensure("ev", config(2, 16), std::chrono::milliseconds(200));
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK(st.code() == Errc::not_ready);
    CHECK(st.error().message.find("pid " + std::to_string(creator)) != std::string::npos);
    CHECK(waited >= std::chrono::milliseconds(200));
    CHECK(waited < std::chrono::seconds(5));
    test::resume(creator);
    CHECK(test::wait_child(creator) == 0);
    CHECK(TopicManager(tp.pool).ensure("ev", config(2, 16)).ok());
}
