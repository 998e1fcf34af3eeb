// SPDX-License-Identifier: MIT
// Latency histograms in the pool (fabric_shm/metrics.h): bucket math, percentiles, and the
// per-process shards summed across processes, including a dead process's shard before and
// after the reaper folds it.
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <vector>

#include <doctest/doctest.h>

#include "fabric_shm/clock.h"
#include "fabric_shm/metrics.h"
#include "fabric_shm/pool.h"
#include "layout/metrics_layout.h"
#include "../support/test_support.h"
#include "region_kinds.h"
#include "crash_point.h"
#include "pool_impl.h"

using namespace fabric_shm;

namespace {

const LatencyKeyStats* find_key(const std::vector<LatencyKeyStats>& stats, const std::string& topic,
                                const std::string& group) {
    for (const auto& k : stats)
        if (k.topic == topic && k.group == group) return &k;
    return nullptr;
}

/// What a pause hook's other recorder does meanwhile: 5 samples under "t2"/"g2".
void record_five_as_t2(Pool& pool) {
    auto other = LatencyRecorder::open(pool, "t2", "g2");
    REQUIRE(other);
    for (int i = 0; i < 5; ++i) other->record(1000);
}

/// The recorder of "t2"/"g2" that a pause hook made recorded 5 samples, under its own name
/// (the keys seen are named on failure).
void check_t2_recorded_five(const Pool& pool) {
    auto stats = read_latency(pool);
    REQUIRE(stats);
    std::string seen;
    for (const auto& k : *stats) seen += " " + k.topic + "/" + k.group + "=" + std::to_string(k.histogram.count());
    const LatencyKeyStats* t2 = find_key(*stats, "t2", "g2");
    CHECK_MESSAGE(t2 != nullptr, "keys:" << seen);
    if (t2) CHECK_MESSAGE(t2->histogram.count() == 5, "keys:" << seen);
}

}  // namespace

TEST_CASE("latency buckets: 0..7 ns are exact, then 8 buckets per power of two, contiguous") {
    for (uint64_t v = 0; v < 8; ++v) {
        CHECK(latency_bucket_index(v) == v);
        CHECK(latency_bucket_lower(uint32_t(v)) == v);
        CHECK(latency_bucket_upper(uint32_t(v)) == v);
    }
    CHECK(latency_bucket_index(8) == 8);
    CHECK(latency_bucket_index(15) == 15);
    CHECK(latency_bucket_index(16) == 16);
    CHECK(latency_bucket_index(17) == 16);  // 16..17 share a bucket (width 2)
    CHECK(latency_bucket_index(18) == 17);
    for (uint32_t i = 0; i + 1 < kLatencyHistogramBuckets; ++i) {
        CAPTURE(i);
        REQUIRE(latency_bucket_upper(i) + 1 == latency_bucket_lower(i + 1));
        REQUIRE(latency_bucket_index(latency_bucket_lower(i)) == i);
        REQUIRE(latency_bucket_index(latency_bucket_upper(i)) == i);
        // HDR-style precision: a bucket is at most 1/8 of its lower bound wide.
        if (i >= 8) REQUIRE((latency_bucket_upper(i) - latency_bucket_lower(i) + 1) * 8 <= latency_bucket_lower(i));
    }
    // Every power of two below 2^42 starts a bucket; larger values clamp to the last one.
    for (uint32_t e = 3; e < 42; ++e) CHECK(latency_bucket_lower(latency_bucket_index(uint64_t(1) << e)) == uint64_t(1) << e);
    CHECK(latency_bucket_index((uint64_t(1) << 42) - 1) == kLatencyHistogramBuckets - 1);
    CHECK(latency_bucket_index(uint64_t(1) << 42) == kLatencyHistogramBuckets - 1);
    CHECK(latency_bucket_index(UINT64_MAX) == kLatencyHistogramBuckets - 1);
    CHECK(latency_bucket_upper(kLatencyHistogramBuckets - 1) == UINT64_MAX);
}

TEST_CASE("latency histogram: percentiles are within one bucket (12.5 %) and capped at the maximum") {
    LatencyHistogramData h;
    CHECK(h.count() == 0);
    CHECK(h.percentile(0.5) == 0);
    for (uint64_t us = 1; us <= 1000; ++us) h.record(us * 1000);
    CHECK(h.count() == 1000);
    CHECK(h.sum_ns == 500500ull * 1000);
    CHECK(h.max_ns == 1'000'000);
    const uint64_t p50 = h.percentile(0.50), p99 = h.percentile(0.99), p999 = h.percentile(0.999);
    CHECK(p50 >= 500'000);
    CHECK(p50 <= 500'000 + 500'000 / 8);
    CHECK(p99 >= 990'000);
    CHECK(p99 <= 1'000'000);
    CHECK(p999 == 1'000'000);  // capped at max
    CHECK(h.percentile(1.0) == h.max_ns);
    CHECK(h.percentile(0.0) == latency_bucket_upper(latency_bucket_index(1000)));
    // count_at_most is exact at bucket upper bounds.
    const uint32_t b = latency_bucket_index(100'000);
    uint64_t expect = 0;
    for (uint64_t us = 1; us <= 1000; ++us) expect += us * 1000 <= latency_bucket_upper(b) ? 1 : 0;
    CHECK(h.count_at_most(latency_bucket_upper(b)) == expect);

    LatencyHistogramData other;
    other.record(5'000'000);
    h.merge(other);
    CHECK(h.count() == 1001);
    CHECK(h.max_ns == 5'000'000);
}

TEST_CASE("latency recorder: shards of live, exited and killed processes are summed; the reaper folds the dead") {
    test::TempPool temp("latency", 4 << 20);
    Pool& pool = temp.pool;
    {
        auto none = read_latency(pool);
        REQUIRE(none);
        CHECK(none->empty());  // no region until someone records
    }

    // A process that records 100 samples of 1 ms and is SIGKILLed: its shard stays owned.
    pid_t killed = test::fork_child([&] {
        auto p = Pool::open(temp.name());
        if (!p) return 1;
        auto rec = LatencyRecorder::open(*p, "events", "workers");
        if (!rec || rec->shared_fallback()) return 2;
        for (int i = 0; i < 100; ++i) rec->record(1'000'000);
        raise(SIGKILL);
        return 3;
    });
    CHECK(test::wait_child(killed) == 128 + SIGKILL);
    auto before = read_latency(pool);
    REQUIRE(before);
    const LatencyKeyStats* k = find_key(*before, "events", "workers");
    REQUIRE(k);
    CHECK(k->histogram.count() == 100);
    CHECK(k->histogram.sum_ns == 100ull * 1'000'000);
    CHECK(k->histogram.max_ns == 1'000'000);
    CHECK(k->live_shards == 1);  // the killed process's shard, not yet folded, still counted

    // --check's hook lists the unfolded shard as in progress (not a violation).
    auto check = [&] {
        std::vector<std::string> violations, in_progress;
        for (const RegionInfo& r : pool.regions())
            if (r.kind == uint32_t(RegionKind::metrics))
                region_kind_ops(r.kind)->check(pool, r, violations, in_progress);
        CHECK(violations.empty());
        return in_progress;
    };
    const auto pending = check();
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].find("latency shard") != std::string::npos);
    CHECK(pending[0].find("not yet folded") != std::string::npos);

    // The reaper folds the dead shard into the key's totals: nothing lost, nothing doubled.
    ReapReport report = pool.reap(MonoClock::now(), false, false);
    bool folded_note = false;
    for (const auto& n : report.notes) folded_note |= n.find("folded latency shard") != std::string::npos;
    CHECK(folded_note);
    auto after = read_latency(pool);
    REQUIRE(after);
    k = find_key(*after, "events", "workers");
    REQUIRE(k);
    CHECK(k->histogram.count() == 100);
    CHECK(k->histogram.sum_ns == 100ull * 1'000'000);
    CHECK(k->live_shards == 0);
    CHECK(check().empty());
    // A second reap has nothing left to fold.
    report = pool.reap(MonoClock::now(), false, false);
    for (const auto& n : report.notes) CHECK(n.find("latency shard") == std::string::npos);

    // A process that records 50 samples of 4 ms and exits cleanly: it folds its own shard.
    pid_t exited = test::fork_child([&] {
        auto p = Pool::open(temp.name());
        if (!p) return 1;
        auto rec = LatencyRecorder::open(*p, "events", "workers");
        if (!rec) return 2;
        for (int i = 0; i < 50; ++i) rec->record(4'000'000);
        return 0;
    });
    CHECK(test::wait_child(exited) == 0);

    after = read_latency(pool);
    REQUIRE(after);
    k = find_key(*after, "events", "workers");
    REQUIRE(k);
    CHECK(k->histogram.count() == 150);
    CHECK(k->histogram.sum_ns == 100ull * 1'000'000 + 50ull * 4'000'000);
    CHECK(k->histogram.max_ns == 4'000'000);
    CHECK(k->live_shards == 0);  // it folded its own shard at exit
    CHECK(k->histogram.percentile(0.5) >= 1'000'000);
    CHECK(k->histogram.percentile(0.5) <= 1'000'000 + 1'000'000 / 8);
    CHECK(k->histogram.percentile(0.99) == 4'000'000);

    // This process records into the same key (reusing a freed shard) and into another key.
    {
        auto rec = LatencyRecorder::open(pool, "events", "workers");
        REQUIRE(rec);
        CHECK_FALSE(rec->shared_fallback());
        rec->record(2'000'000);
        auto other = LatencyRecorder::open(pool, "events", "indexers");
        REQUIRE(other);
        other->record(7);
        auto live = read_latency(pool);
        REQUIRE(live);
        REQUIRE(live->size() == 2);
        CHECK(find_key(*live, "events", "workers")->histogram.count() == 151);
        CHECK(find_key(*live, "events", "workers")->live_shards == 1);
        CHECK(find_key(*live, "events", "indexers")->histogram.count() == 1);
        CHECK(find_key(*live, "events", "indexers")->histogram.max_ns == 7);
    }
    // Recorders destroyed: their shards were folded, the counts stay.
    auto end = read_latency(pool);
    REQUIRE(end);
    CHECK(find_key(*end, "events", "workers")->histogram.count() == 151);
    CHECK(find_key(*end, "events", "workers")->live_shards == 0);
}

TEST_CASE("latency recorder: a forked child that drops the recorder it inherited leaves its parent's shard recording") {
    test::TempPool temp("latency-fork", 4 << 20);
    Pool& pool = temp.pool;
    auto opened = LatencyRecorder::open(pool, "t", "g");
    REQUIRE(opened);
    REQUIRE_FALSE(opened->shared_fallback());
    std::optional<LatencyRecorder> rec(std::move(*opened));
    for (int i = 0; i < 10; ++i) rec->record(1000);
    const pid_t child = test::fork_child([&] {
        rec.reset();
        return 0;
    });
    REQUIRE(test::wait_child(child) == 0);
    for (int i = 0; i < 5; ++i) rec->record(2000);
    auto s = read_latency(pool);
    REQUIRE(s);
    const LatencyKeyStats* k = find_key(*s, "t", "g");
    REQUIRE(k);
    CHECK(k->live_shards == 1);
    CHECK(k->histogram.count() == 15);  // nothing recorded after the child's exit went into a freed shard
}

TEST_CASE("latency recorder: with every shard taken, recorders share the key's aggregate and nothing is lost") {
    test::TempPool temp("latency-full", 4 << 20);
    Pool& pool = temp.pool;
    std::vector<LatencyRecorder> recs;
    for (uint32_t i = 0; i < layout::kMetricsShards; ++i) {
        auto r = LatencyRecorder::open(pool, "t", "g");
        REQUIRE(r);
        CHECK_FALSE(r->shared_fallback());
        recs.push_back(std::move(r.value()));
    }
    auto extra = LatencyRecorder::open(pool, "t", "g");
    REQUIRE(extra);
    CHECK(extra->shared_fallback());
    for (auto& r : recs) r.record(1000);
    extra->record(9000);
    auto s = read_latency(pool);
    REQUIRE(s);
    REQUIRE(s->size() == 1);
    CHECK((*s)[0].histogram.count() == layout::kMetricsShards + 1);
    CHECK((*s)[0].histogram.max_ns == 9000);
    recs.clear();
    s = read_latency(pool);
    REQUIRE(s);
    CHECK((*s)[0].histogram.count() == layout::kMetricsShards + 1);
    CHECK((*s)[0].live_shards == 0);
}

TEST_CASE("latency recorder: a shard word whose key was damaged is left alone when its recorder closes; nothing is "
          "written outside the keys") {
    test::TempPool temp("latency-badkey", 4 << 20);
    Pool& pool = temp.pool;
    auto rec = LatencyRecorder::open(pool, "t", "g");
    REQUIRE(rec);
    REQUIRE_FALSE(rec->shared_fallback());
    rec->record(1000);
    auto region = pool.open_region(RegionKind::metrics, "latency");
    REQUIRE(region);
    auto* shards = reinterpret_cast<layout::LatencyShard*>(region->data() + layout::kMetricsShardsOffset);
    layout::LatencyShard* ours = nullptr;
    for (uint32_t i = 0; i < layout::kMetricsShards; ++i)
        if (layout::shard_word_state(shards[i].word.load()) == layout::kShardOwned) ours = &shards[i];
    REQUIRE(ours != nullptr);
    const uint64_t damaged = layout::make_shard_word(layout::kShardOwned, 0xffffff, pool.self());
    ours->word.store(damaged);
    std::vector<std::byte> before(region->data(), region->data() + layout::kMetricsShardsOffset);
    rec = make_error(Errc::ok, "");  // the recorder closes
    CHECK(ours->word.load() == damaged);
    CHECK(std::memcmp(before.data(), region->data(), before.size()) == 0);  // header and keys untouched
}

TEST_CASE("latency recorder: refuses over-long keys and read-only pools; a damaged region header reads as corrupt") {
    test::TempPool temp("latency-bad", 4 << 20);
    Pool& pool = temp.pool;
    auto too_long = LatencyRecorder::open(pool, std::string(100, 't'), std::string(40, 'g'));
    REQUIRE_FALSE(too_long);
    CHECK(too_long.code() == Errc::invalid_argument);
    CHECK(too_long.error().message.find("128") != std::string::npos);
    CHECK(LatencyRecorder::open(pool, "", "g").code() == Errc::invalid_argument);
    OpenOptions ro;
    ro.read_only = true;
    auto view = Pool::open(temp.name(), ro);
    REQUIRE(view);
    CHECK(LatencyRecorder::open(*view, "t", "g").code() == Errc::invalid_argument);

    auto rec = LatencyRecorder::open(pool, "t", "g");
    REQUIRE(rec);
    auto region = pool.open_region(RegionKind::metrics, "latency");
    REQUIRE(region);
    auto* header = reinterpret_cast<layout::MetricsHeader*>(region->data());
    header->buckets = 321;
    auto bad = read_latency(*view);
    REQUIRE_FALSE(bad);
    CHECK(bad.code() == Errc::corrupt);
    CHECK(bad.error().message.find("321 buckets") != std::string::npos);
    header->buckets = layout::kLatencyBuckets;
    CHECK(read_latency(*view));
}

namespace {
/// The pool whose metrics region the pause hook removes, and what the hook saw right after.
Pool* g_hook_pool = nullptr;
std::string g_state_in_hook;

/// At "pool.reap.hook" (the reaper is about to run a region kind's hook): the region is
/// removed, as another process may do while the reaper is paused in the hook.
void remove_under_the_hook(const char* name) {
    if (std::string(name) != "pool.reap.hook" || !g_hook_pool || !g_state_in_hook.empty()) return;
    for (const RegionInfo& r : g_hook_pool->regions())
        if (r.kind == uint32_t(RegionKind::metrics)) {
            (void)g_hook_pool->remove_region(r.ref);
            g_state_in_hook = "free";
            for (const RegionInfo& after : g_hook_pool->regions())
                if (after.ref == r.ref) g_state_in_hook = after.state;
        }
}
}  // namespace

// The reaper's hooks write into their region (the metrics hook folds a dead process's shards).
// The region must not be reclaimed, and its extent handed to another region, while a hook runs
// in it: the reaper holds it attached meanwhile, as any user does.
TEST_CASE("reaper: a region removed while its kind's hook runs in it is not reclaimed until the hook is done") {
    test::TempPool temp("reap-hook", 4 << 20);
    Pool& pool = temp.pool;
    {
        auto rec = LatencyRecorder::open(pool, "events", "workers");
        REQUIRE(rec);
        rec->record(1000);
    }  // this process holds no handle of the metrics region any more
    g_hook_pool = &pool;
    g_state_in_hook.clear();
    detail::set_pause_hook(&remove_under_the_hook);
    (void)pool.reap(MonoClock::now(), false, false);
    detail::set_pause_hook(nullptr);
    g_hook_pool = nullptr;
    REQUIRE_FALSE(g_state_in_hook.empty());  // the hook point was reached with the region there
    CHECK_MESSAGE(g_state_in_hook == "live", "state while the hook ran: " << g_state_in_hook);
    // Done with it: the next pass reclaims it (removed, and nobody holds it).
    (void)pool.reap(MonoClock::now(), false, false);
    bool gone = true;
    for (const RegionInfo& r : pool.regions()) gone = gone && r.kind != uint32_t(RegionKind::metrics);
    CHECK(gone);
}

namespace {
Pool* g_judge = nullptr;
bool g_key_hook_done = false;
/// At "metrics.key.claimed" (a recorder claimed a FREE key, CREATING, before its name and LIVE):
/// the claimant stays past its declared heartbeat timeout while another process reaps and then
/// records under another key.
void reap_and_record_elsewhere(const char* name) {
    if (std::string(name) != "metrics.key.claimed" || !g_judge || g_key_hook_done) return;
    g_key_hook_done = true;
    ::usleep(200 * 1000);  // past the claimant's 50 ms heartbeat timeout: it is only paused
    (void)g_judge->reap(MonoClock::now(), false, false);
    record_five_as_t2(*g_judge);
}
}  // namespace

TEST_CASE("latency keys: a creator paused past its heartbeat timeout does not overwrite the key another recorder made") {
    test::TempPool temp("key-late", 4 << 20);
    {  // the metrics region exists, held by nobody's recorder
        auto first = LatencyRecorder::open(temp.pool, "t0", "g0");
        REQUIRE(first);
    }
    OpenOptions oo;
    oo.heartbeat_timeout = std::chrono::milliseconds(50);
    oo.reap_on_open = false;
    auto paused = Pool::open(temp.name(), oo);
    REQUIRE(paused);
    g_judge = &temp.pool;
    g_key_hook_done = false;
    detail::set_pause_hook(&reap_and_record_elsewhere);
    auto late = LatencyRecorder::open(*paused, "t1", "g1");
    detail::set_pause_hook(nullptr);
    g_judge = nullptr;
    REQUIRE(g_key_hook_done);
    check_t2_recorded_five(temp.pool);
}

namespace {
Pool* g_second_reaper = nullptr;
bool g_reset_hook_done = false;
/// At "metrics.key.reset.judged" (a reaper judged a half-created key's creator dead, before it
/// resets the key): the reaper stays paused while a second reaper resets the key and a
/// recorder of another name claims it, names it and records.
void reset_and_record_meanwhile(const char* name) {
    if (std::string(name) != "metrics.key.reset.judged" || !g_second_reaper || g_reset_hook_done) return;
    g_reset_hook_done = true;
    (void)g_second_reaper->reap(MonoClock::now(), false, false);
    record_five_as_t2(*g_second_reaper);
}
}  // namespace

TEST_CASE("latency keys: a reaper paused before resetting a dead creator's key leaves the key another recorder made meanwhile intact") {
    test::TempPool temp("key-reset-late", 4 << 20);
    {  // the metrics region exists, with key 0 live
        auto first = LatencyRecorder::open(temp.pool, "t0", "g0");
        REQUIRE(first);
    }
    OwnerToken dead = 0;
    {  // a registration that has ended: its token is certainly dead
        OpenOptions oo;
        oo.reap_on_open = false;
        auto gone = Pool::open(temp.name(), oo);
        REQUIRE(gone);
        dead = gone->self();
    }
    REQUIRE(dead != 0);
    REQUIRE(dead != temp.pool.self());
    // Forge the crash state: the first free key claimed (CREATING) by the dead token.
    layout::MetricsKey* keys = nullptr;
    for (const RegionInfo& r : temp.pool.regions())
        if (r.kind == uint32_t(RegionKind::metrics))
            keys = reinterpret_cast<layout::MetricsKey*>(detail::pool_base(temp.pool) + r.offset + layout::kMetricsKeysOffset);
    REQUIRE(keys != nullptr);
    uint32_t forged = layout::kMetricsKeys;
    for (uint32_t i = 0; i < layout::kMetricsKeys && forged == layout::kMetricsKeys; ++i) {
        uint64_t expected = uint64_t(layout::kKeyFree) << 56;
        if (keys[i].word.compare_exchange_strong(expected, (uint64_t(layout::kKeyCreating) << 56) | dead)) forged = i;
    }
    REQUIRE(forged < layout::kMetricsKeys);

    g_second_reaper = &temp.pool;
    g_reset_hook_done = false;
    detail::set_pause_hook(&reset_and_record_meanwhile);
    (void)temp.pool.reap(MonoClock::now(), false, false);  // pauses after judging the creator dead
    detail::set_pause_hook(nullptr);
    g_second_reaper = nullptr;
    REQUIRE(g_reset_hook_done);

    check_t2_recorded_five(temp.pool);
}
