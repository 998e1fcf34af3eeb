// SPDX-License-Identifier: MIT
// Latency histograms in the pool's metrics region (layout/metrics_layout.h).
//
// Writers: a LatencyRecorder owns one shard (claimed with one CAS) and is its only writer,
// so record() is relaxed loads and stores (no lock prefix). A recorder that finds every
// shard taken writes the key's aggregate with fetch_add instead. Shards go back to FREE when
// their recorder is destroyed (folded by the owner) or, for a dead process, when the reaper
// hook folds them. Readers sum aggregate + shards per key, relaxed.
#include "fabric_shm/metrics.h"

#include <time.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "crash_point.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/registry.h"
#include "fetch_max.h"
#include "layout/metrics_layout.h"
#include "pool_impl.h"
#include "region_kinds.h"

namespace fabric_shm {

using namespace layout;

static_assert(kLatencyHistogramBuckets == kLatencyBuckets, "public bucket count must match the layout");

// ---- bucket math ---------------------------------------------------------------------

uint32_t latency_bucket_index(uint64_t ns) noexcept {
    if (ns < kLatencySub) return uint32_t(ns);
    const uint32_t msb = uint32_t(std::bit_width(ns)) - 1;  // >= kLatencySubBits
    if (msb >= kLatencyTopExponent) return kLatencyBuckets - 1;
    const uint32_t sub = uint32_t(ns >> (msb - kLatencySubBits)) & (kLatencySub - 1);
    return (msb - kLatencySubBits + 1) * kLatencySub + sub;
}

uint64_t latency_bucket_lower(uint32_t index) noexcept {
    if (index < kLatencySub) return index;
    if (index >= kLatencyBuckets) return UINT64_MAX;
    const uint32_t msb = index / kLatencySub + kLatencySubBits - 1;
    const uint64_t sub = index % kLatencySub;
    return (uint64_t(kLatencySub) + sub) << (msb - kLatencySubBits);
}

uint64_t latency_bucket_upper(uint32_t index) noexcept {
    if (index + 1 >= kLatencyBuckets) return UINT64_MAX;
    return latency_bucket_lower(index + 1) - 1;
}

void LatencyHistogramData::record(uint64_t ns) noexcept {
    ++buckets[latency_bucket_index(ns)];
    sum_ns += ns;
    max_ns = std::max(max_ns, ns);
}

void LatencyHistogramData::merge(const LatencyHistogramData& other) noexcept {
    for (uint32_t i = 0; i < kLatencyBuckets; ++i) buckets[i] += other.buckets[i];
    sum_ns += other.sum_ns;
    max_ns = std::max(max_ns, other.max_ns);
}

uint64_t LatencyHistogramData::count() const noexcept {
    uint64_t n = 0;
    for (uint64_t b : buckets) n += b;
    return n;
}

uint64_t LatencyHistogramData::percentile(double q) const noexcept {
    const uint64_t n = count();
    if (n == 0) return 0;
    q = std::clamp(q, 0.0, 1.0);
    const uint64_t rank = std::max<uint64_t>(1, uint64_t(std::ceil(q * double(n))));
    uint64_t seen = 0;
    for (uint32_t i = 0; i < kLatencyBuckets; ++i) {
        seen += buckets[i];
        if (seen >= rank) return std::min(latency_bucket_upper(i), max_ns);
    }
    return max_ns;
}

uint64_t LatencyHistogramData::count_at_most(uint64_t ns) const noexcept {
    uint64_t n = 0;
    for (uint32_t i = 0; i < kLatencyBuckets && latency_bucket_lower(i) <= ns; ++i) n += buckets[i];
    return n;
}

// ---- region access -------------------------------------------------------------------

namespace {

constexpr std::string_view kRegionName = "latency";

Status check_region(const std::byte* data, uint64_t length) {
    if (length < kMetricsRegionBytes)
        return make_error(Errc::corrupt, "metrics region is " + std::to_string(length) + " bytes, the layout needs " +
                                             std::to_string(kMetricsRegionBytes));
    MetricsHeader h;
    std::memcpy(&h, data, sizeof h);
    if (h.magic != kMetricsMagic || h.version != kMetricsVersion || h.buckets != kLatencyBuckets ||
        h.keys != kMetricsKeys || h.shards != kMetricsShards || h.keys_offset != kMetricsKeysOffset ||
        h.shards_offset != kMetricsShardsOffset)
        return make_error(Errc::corrupt, "metrics region header (version " + std::to_string(h.version) + ", " +
                                             std::to_string(h.buckets) + " buckets, " + std::to_string(h.keys) +
                                             " keys, " + std::to_string(h.shards) +
                                             " shards) does not match this build's layout (version " +
                                             std::to_string(kMetricsVersion) + ", " + std::to_string(kLatencyBuckets) +
                                             " buckets, " + std::to_string(kMetricsKeys) + " keys, " +
                                             std::to_string(kMetricsShards) + " shards)");
    return {};
}

MetricsKey* keys_of(std::byte* data) { return reinterpret_cast<MetricsKey*>(data + kMetricsKeysOffset); }
LatencyShard* shards_of(std::byte* data) { return reinterpret_cast<LatencyShard*>(data + kMetricsShardsOffset); }

std::string key_name(std::string_view topic, std::string_view group) {
    std::string s(topic);
    s += '\0';
    s += group;
    return s;
}

/// The key's name, or "" for a name without its separator or terminator (corrupt: ignored).
std::string load_key_name(const MetricsKey& k) {
    char buf[kMetricsKeyNameBytes];
    for (uint32_t w = 0; w < kMetricsKeyNameBytes / 8; ++w) {
        // relaxed: immutable once LIVE (the caller acquired the LIVE word).
        const uint64_t v = k.name[w].load(std::memory_order_relaxed);
        std::memcpy(buf + 8 * w, &v, 8);
    }
    const char* sep = static_cast<const char*>(std::memchr(buf, '\0', sizeof buf));
    if (!sep || sep == buf) return {};
    const size_t topic_len = size_t(sep - buf);
    const char* end = static_cast<const char*>(std::memchr(sep + 1, '\0', sizeof buf - topic_len - 1));
    if (!end || end == sep + 1) return {};
    return std::string(buf, size_t(end - buf));
}

void store_key_name(MetricsKey& k, const std::string& name) {
    char buf[kMetricsKeyNameBytes] = {};
    std::memcpy(buf, name.data(), std::min(name.size(), sizeof buf - 1));
    for (uint32_t w = 0; w < kMetricsKeyNameBytes / 8; ++w) {
        uint64_t v;
        std::memcpy(&v, buf + 8 * w, 8);
        k.name[w].store(v, std::memory_order_relaxed);  // published by the LIVE release store
    }
}

void read_cells(const LatencyCells& c, LatencyHistogramData& into) {
    // relaxed: statistics; a sample being recorded may be half visible (bucket without sum).
    LatencyHistogramData d;
    for (uint32_t i = 0; i < kLatencyBuckets; ++i) d.buckets[i] = c.buckets[i].load(std::memory_order_relaxed);
    d.sum_ns = c.sum_ns.load(std::memory_order_relaxed);
    d.max_ns = c.max_ns.load(std::memory_order_relaxed);
    into.merge(d);
}

/// Moves every cell of a shard into the key's aggregate (exchange(0): each count is moved
/// once even when two folders race or a folder is redone), then frees the shard.
void fold_shard(MetricsKey& key, LatencyShard& shard, uint64_t folding_word) {
    for (uint32_t i = 0; i < kLatencyBuckets; ++i) {
        const uint64_t v = shard.cells.buckets[i].exchange(0, std::memory_order_relaxed);
        if (v) key.aggregate.buckets[i].fetch_add(v, std::memory_order_relaxed);
    }
    const uint64_t sum = shard.cells.sum_ns.exchange(0, std::memory_order_relaxed);
    if (sum) key.aggregate.sum_ns.fetch_add(sum, std::memory_order_relaxed);
    const uint64_t mx = shard.cells.max_ns.exchange(0, std::memory_order_relaxed);
    if (mx) detail::fetch_max(key.aggregate.max_ns, mx);
    // Release: the zeroed cells are visible before a claimant can win the FREE word (pairs
    // with the claimant's acq_rel CAS).
    uint64_t expected = folding_word;
    shard.word.compare_exchange_strong(expected, make_shard_word(kShardFree, 0, 0), std::memory_order_release,
                                       std::memory_order_relaxed);
}

Result<Region> open_or_create_region(Pool& pool) {
    for (int attempt = 0; attempt < 200; ++attempt) {
        auto opened = pool.open_region(RegionKind::metrics, kRegionName);
        if (opened) {
            FABRIC_TRY(check_region(opened->data(), opened->length()));
            return opened;
        }
        if (opened.code() == Errc::not_ready) {  // another process is creating it
            timespec ts{0, 5'000'000};
            nanosleep(&ts, nullptr);
            continue;
        }
        if (opened.code() != Errc::not_found) return std::move(opened).error();
        RegionSpec spec;
        spec.kind = RegionKind::metrics;
        spec.name = std::string(kRegionName);
        spec.length = kMetricsRegionBytes;
        spec.init = [](std::byte* data, uint64_t) -> Status {
            // The region arrives zeroed: every key and shard FREE with zero cells.
            MetricsHeader h{};
            h.magic = kMetricsMagic;
            h.version = kMetricsVersion;
            h.buckets = kLatencyBuckets;
            h.keys = kMetricsKeys;
            h.shards = kMetricsShards;
            h.keys_offset = kMetricsKeysOffset;
            h.shards_offset = kMetricsShardsOffset;
            std::memcpy(data, &h, sizeof h);
            return {};
        };
        auto created = pool.create_region(spec);
        if (created) return created;
        if (created.code() != Errc::already_exists) return std::move(created).error();
        // Another process is creating it: it is published within microseconds.
        timespec ts{0, 5'000'000};
        nanosleep(&ts, nullptr);
    }
    return make_error(Errc::timeout, "metrics region of pool '" + pool.name() + "' stayed unpublished for 1 s");
}

/// Finds the LIVE key `name`, or creates it. Not the hot path.
Result<uint32_t> find_or_create_key(Pool& pool, std::byte* data, const std::string& name) {
    MetricsKey* keys = keys_of(data);
    for (int attempt = 0; attempt < 200; ++attempt) {
        bool creating_seen = false;
        uint32_t free_index = kMetricsKeys;
        for (uint32_t i = 0; i < kMetricsKeys; ++i) {
            // Acquire: pairs with the creator's release store of LIVE (name visible).
            const uint64_t w = keys[i].word.load(std::memory_order_acquire);
            const uint64_t state = w >> 56;
            if (state == kKeyLive && load_key_name(keys[i]) == name) return i;
            if (state == kKeyCreating) creating_seen = true;
            if (state == kKeyFree && free_index == kMetricsKeys) free_index = i;
        }
        if (creating_seen) {  // maybe our key: wait for it rather than make a duplicate
            timespec ts{0, 5'000'000};
            nanosleep(&ts, nullptr);
            if (attempt < 20) continue;
        }
        if (free_index == kMetricsKeys)
            return make_error(Errc::capacity_exceeded, "metrics region of pool '" + pool.name() + "' has all " +
                                                           std::to_string(kMetricsKeys) + " latency keys in use");
        uint64_t expected = uint64_t(kKeyFree) << 56;
        // acq_rel: wins the entry; a reset by the reaper (CREATING -> FREE) is release.
        if (!keys[free_index].word.compare_exchange_strong(expected, (uint64_t(kKeyCreating) << 56) | pool.self(),
                                                           std::memory_order_acq_rel, std::memory_order_relaxed))
            continue;
        FABRIC_PAUSE_POINT("metrics.key.claimed");
        store_key_name(keys[free_index], name);
        // Release: the name is visible to whoever acquires LIVE. A CAS from our own CREATING
        // word: a claim reset meanwhile (its creator judged dead) is not published over the
        // key another recorder made there since.
        uint64_t mine = (uint64_t(kKeyCreating) << 56) | pool.self();
        if (!keys[free_index].word.compare_exchange_strong(mine, uint64_t(kKeyLive) << 56, std::memory_order_release,
                                                           std::memory_order_relaxed))
            continue;
        return free_index;
    }
    return make_error(Errc::timeout, "latency key in pool '" + pool.name() + "' stayed half-created");
}

}  // namespace

Result<std::vector<LatencyKeyStats>> read_latency(const Pool& pool) {
    std::vector<LatencyKeyStats> out;
    auto opened = pool.open_region(RegionKind::metrics, kRegionName);
    if (!opened) {
        if (opened.code() == Errc::not_found || opened.code() == Errc::not_ready) return out;  // none yet, or being created
        return std::move(opened).error();
    }
    std::byte* data = opened->data();
    FABRIC_TRY(check_region(data, opened->length()));
    const MetricsKey* keys = keys_of(data);
    const LatencyShard* shards = shards_of(data);
    std::vector<int> slot_of_key(kMetricsKeys, -1);  // merged entry per key index
    for (uint32_t i = 0; i < kMetricsKeys; ++i) {
        const uint64_t w = keys[i].word.load(std::memory_order_acquire);  // pairs with the creator's LIVE release
        if ((w >> 56) != kKeyLive) continue;
        const std::string name = load_key_name(keys[i]);
        if (name.empty()) continue;
        const size_t sep = name.find('\0');
        std::string topic = name.substr(0, sep), group = name.substr(sep + 1);
        int at = -1;
        for (size_t k = 0; k < out.size(); ++k)
            if (out[k].topic == topic && out[k].group == group) at = int(k);
        if (at < 0) {
            at = int(out.size());
            out.push_back({std::move(topic), std::move(group), {}, 0});
        }
        slot_of_key[i] = at;
        read_cells(keys[i].aggregate, out[size_t(at)].histogram);
    }
    for (uint32_t s = 0; s < kMetricsShards; ++s) {
        // Acquire: pairs with the claimant's CAS (key index valid) and the folder's FREE release.
        const uint64_t w = shards[s].word.load(std::memory_order_acquire);
        const uint64_t state = shard_word_state(w);
        if (state != kShardOwned && state != kShardFolding) continue;
        const uint32_t k = shard_word_key(w);
        if (k >= kMetricsKeys || slot_of_key[k] < 0) continue;
        read_cells(shards[s].cells, out[size_t(slot_of_key[k])].histogram);
        if (state == kShardOwned) ++out[size_t(slot_of_key[k])].live_shards;
    }
    std::sort(out.begin(), out.end(), [](const LatencyKeyStats& a, const LatencyKeyStats& b) {
        return a.topic != b.topic ? a.topic < b.topic : a.group < b.group;
    });
    return out;
}

// ---- recorder ------------------------------------------------------------------------

Result<LatencyRecorder> LatencyRecorder::open(Pool& pool, std::string_view topic, std::string_view group) {
    if (pool.read_only() || pool.self() == 0)
        return make_error(Errc::invalid_argument, "latency recording needs a writable, registered pool handle");
    if (topic.empty() || group.empty() || topic.find('\0') != std::string_view::npos ||
        group.find('\0') != std::string_view::npos)
        return make_error(Errc::invalid_argument, "latency key needs a non-empty topic and group without NUL bytes");
    if (topic.size() + group.size() + 2 > kMetricsKeyNameBytes)
        return make_error(Errc::invalid_argument, "latency key '" + std::string(topic) + "/" + std::string(group) +
                                                      "' is " + std::to_string(topic.size() + group.size() + 2) +
                                                      " bytes with separators; the limit is " +
                                                      std::to_string(kMetricsKeyNameBytes));
    auto region = open_or_create_region(pool);
    if (!region) return std::move(region).error();
    std::byte* data = region->data();
    auto key = find_or_create_key(pool, data, key_name(topic, group));
    if (!key) return std::move(key).error();

    LatencyRecorder rec;
    LatencyShard* shards = shards_of(data);
    const uint64_t mine = make_shard_word(kShardOwned, *key, pool.self());
    for (uint32_t s = 0; s < kMetricsShards && !rec.cells_; ++s) {
        uint64_t expected = make_shard_word(kShardFree, 0, 0);
        // acq_rel: pairs with the folder's release store of FREE (cells zeroed before).
        if (shards[s].word.compare_exchange_strong(expected, mine, std::memory_order_acq_rel,
                                                   std::memory_order_relaxed))
            rec.cells_ = &shards[s].cells;
    }
    if (!rec.cells_) {  // every shard taken: share the key's aggregate (fetch_add)
        rec.cells_ = &keys_of(data)[*key].aggregate;
        rec.shared_ = true;
    }
    rec.region_ = std::move(region.value());
    rec.made_in_ = detail::fork_generation();
    return rec;
}

LatencyRecorder::LatencyRecorder(LatencyRecorder&& o) noexcept
    : region_(std::move(o.region_)), cells_(o.cells_), shared_(o.shared_), made_in_(o.made_in_) {
    o.cells_ = nullptr;
}

LatencyRecorder& LatencyRecorder::operator=(LatencyRecorder&& o) noexcept {
    if (this != &o) {
        release();
        region_ = std::move(o.region_);
        cells_ = o.cells_;
        shared_ = o.shared_;
        made_in_ = o.made_in_;
        o.cells_ = nullptr;
    }
    return *this;
}

LatencyRecorder::~LatencyRecorder() { release(); }

void LatencyRecorder::release() noexcept {
    // Not in a forked child of the opener: the shard is its parent's, which still records into it.
    if (!cells_ || shared_ || !region_.valid() || made_in_ != detail::fork_generation()) {
        cells_ = nullptr;
        return;
    }
    // Give the shard back: fold it into the key's aggregate and free it, unless a reaper
    // presumed us dead and is folding it already (then it is no longer ours).
    auto* shard = reinterpret_cast<LatencyShard*>(static_cast<std::byte*>(cells_) - offsetof(LatencyShard, cells));
    uint64_t w = shard->word.load(std::memory_order_acquire);
    // The key is read back from shared memory: a damaged one would index past the keys (and
    // fold into whatever lies there). Left as it is, for --check (as the reaper's fold does).
    if (shard_word_state(w) == kShardOwned && shard_word_token(w) == region_.pool().self() &&
        shard_word_key(w) < kMetricsKeys) {
        const uint64_t folding = make_shard_word(kShardFolding, shard_word_key(w), region_.pool().self());
        if (shard->word.compare_exchange_strong(w, folding, std::memory_order_acq_rel, std::memory_order_relaxed))
            fold_shard(keys_of(region_.data())[shard_word_key(w)], *shard, folding);
    }
    cells_ = nullptr;
}

void LatencyRecorder::record(uint64_t ns) noexcept {
    if (!cells_) return;
    auto* c = static_cast<LatencyCells*>(cells_);
    std::atomic<uint64_t>& bucket = c->buckets[latency_bucket_index(ns)];
    if (shared_) {
        bucket.fetch_add(1, std::memory_order_relaxed);
        c->sum_ns.fetch_add(ns, std::memory_order_relaxed);
        detail::fetch_max(c->max_ns, ns);
        return;
    }
    // Single writer: relaxed load + store (a plain mov each on x86 and arm64). Readers and a
    // folder (after our death) pair with nothing: statistics, best effort.
    bucket.store(bucket.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    c->sum_ns.store(c->sum_ns.load(std::memory_order_relaxed) + ns, std::memory_order_relaxed);
    if (ns > c->max_ns.load(std::memory_order_relaxed)) c->max_ns.store(ns, std::memory_order_relaxed);
}

uint64_t LatencyRecorder::lease_id() const { return region_.valid() ? region_.lease_id() : 0; }

// ---- reaper hook ---------------------------------------------------------------------

namespace {
/// Folds the shards of certainly-dead registrations into their key's aggregate and frees them;
/// resets keys left half-created by a dead process. Returns the number of shards folded (or
/// that would be, with dry_run).
uint64_t fold_dead_latency_shards(const Pool& pool, const RegionInfo& region, uint64_t now_ns, bool dry_run,
                                  std::vector<std::string>& notes) {
    if (!detail::region_extent_ok(pool, region.offset, region.length)) return 0;
    std::byte* data = detail::pool_base(pool) + region.offset;
    if (!check_region(data, region.length)) return 0;  // not ours to repair: --check reports it
    if (pool.read_only()) dry_run = true;
    const ProcessRegistry reg = pool.registry();
    MetricsKey* keys = keys_of(data);
    LatencyShard* shards = shards_of(data);
    uint64_t folded = 0;
    for (uint32_t i = 0; i < kMetricsKeys; ++i) {
        uint64_t w = keys[i].word.load(std::memory_order_acquire);
        if ((w >> 56) != kKeyCreating) continue;
        // By pid (process_liveness): a creator that is only paused writes the name when it resumes.
        if (reg.process_liveness(OwnerToken(w), MonoClock::from_ns(now_ns)) != Liveness::certainly_dead) continue;
        notes.push_back(std::string(dry_run ? "would reset" : "reset") + " latency key " + std::to_string(i) +
                        " left half-created by dead token " + std::to_string(OwnerToken(w)));
        FABRIC_PAUSE_POINT("metrics.key.reset.judged");
        // The reset is this one CAS and nothing before it: a reaper paused here while another
        // reset the key and a recorder named it and made it LIVE would otherwise write over that
        // name when it resumes. The name needs no clearing: a creator writes every word of it.
        if (!dry_run)
            keys[i].word.compare_exchange_strong(w, uint64_t(kKeyFree) << 56, std::memory_order_release,
                                                 std::memory_order_relaxed);
    }
    for (uint32_t s = 0; s < kMetricsShards; ++s) {
        uint64_t w = shards[s].word.load(std::memory_order_acquire);
        const uint64_t state = shard_word_state(w);
        if (state != kShardOwned && state != kShardFolding) continue;
        const uint32_t k = shard_word_key(w);
        if (k >= kMetricsKeys) continue;  // corrupt word: leave it for --check
        // By pid: a shard's owner (and a folder) writes its cells with plain stores when it resumes.
        if (reg.process_liveness(shard_word_token(w), MonoClock::from_ns(now_ns)) != Liveness::certainly_dead) continue;
        ++folded;
        notes.push_back(std::string(dry_run ? "would fold" : "folded") + " latency shard " + std::to_string(s) +
                        " of dead token " + std::to_string(shard_word_token(w)) + " into key " + std::to_string(k));
        if (dry_run) continue;
        const uint64_t folding = make_shard_word(kShardFolding, k, pool.self());
        if (!shards[s].word.compare_exchange_strong(w, folding, std::memory_order_acq_rel, std::memory_order_relaxed))
            continue;
        fold_shard(keys[k], shards[s], folding);
    }
    return folded;
}

RegionKindOps metrics_region_kind_ops() {
    RegionKindOps ops;
    ops.reap = always_complete<fold_dead_latency_shards>;
    ops.check = [](const Pool& pool, const RegionInfo& region, std::vector<std::string>& violations,
                   std::vector<std::string>& in_progress) {
        if (!detail::region_extent_ok(pool, region.offset, region.length)) {
            violations.push_back("metrics region [" + std::to_string(region.offset) + ", +" +
                                 std::to_string(region.length) + ") out of bounds or not on a page");
            return;
        }
        const std::byte* data = detail::pool_base(pool) + region.offset;
        if (Status st = check_region(data, region.length); !st) {
            violations.push_back(st.error().message);
            return;
        }
        const auto* shards = reinterpret_cast<const LatencyShard*>(data + kMetricsShardsOffset);
        const auto* keys = reinterpret_cast<const MetricsKey*>(data + kMetricsKeysOffset);
        const uint64_t now = mono_now_ns();
        for (uint32_t s = 0; s < kMetricsShards; ++s) {
            const uint64_t w = shards[s].word.load(std::memory_order_acquire);
            const uint64_t state = shard_word_state(w);
            if (state == kShardFree) continue;
            const std::string where = "latency shard " + std::to_string(s);
            if (state > kShardFolding) {
                violations.push_back(where + " word has no valid state");
                continue;
            }
            const uint32_t k = shard_word_key(w);
            if (k >= kMetricsKeys || (keys[k].word.load(std::memory_order_acquire) >> 56) != kKeyLive)
                violations.push_back(where + " names key " + std::to_string(k) + ", which is not live");
            else if (pool.registry().liveness(shard_word_token(w), MonoClock::from_ns(now)) == Liveness::certainly_dead)
                in_progress.push_back(where + " of dead token " +
                                      std::to_string(shard_word_token(w)) + " not yet folded (the reaper folds it)");
        }
    };
    return ops;
}
const detail::RegionKindRegistration metrics_region_kind(RegionKind::metrics, metrics_region_kind_ops());
}  // namespace

}  // namespace fabric_shm
