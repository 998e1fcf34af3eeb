// SPDX-License-Identifier: MIT
// JobCoordinator (skip existing outputs, bounded retries of transient errors), the memory and
// object-store output stores, and the result-identity helpers.
#include "fabric_shm/jobs.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "fabric_shm/clock.h"
#include "fabric_shm/dlq.h"  // sleep_with_heartbeat

namespace fabric_shm {

// ---- MemoryOutputStore --------------------------------------------------------------------

Status MemoryOutputStore::put(ChunkId id, ByteView output) {
    outputs_[id].assign(output.begin(), output.end());
    return {};
}

Result<std::optional<std::vector<uint8_t>>> MemoryOutputStore::get(ChunkId id) {
    auto it = outputs_.find(id);
    if (it == outputs_.end()) return std::optional<std::vector<uint8_t>>{};
    return std::optional<std::vector<uint8_t>>{it->second};
}

Result<bool> MemoryOutputStore::contains(ChunkId id) { return outputs_.count(id) != 0; }

Status MemoryOutputStore::clear() {
    outputs_.clear();
    return {};
}

// ---- ObjectOutputStore --------------------------------------------------------------------

Result<FabricUri> ObjectOutputStore::uri(ChunkId id) const {
    char digits[24];
    std::snprintf(digits, sizeof digits, "%020llu", static_cast<unsigned long long>(id));
    return FabricUri::make(pool_, bucket_, job_ + "/" + digits);
}

Status ObjectOutputStore::put(ChunkId id, ByteView output) {
    auto u = uri(id);
    if (!u) return std::move(u).error();
    PutOptions o;
    o.condition = PutCondition::if_absent;
    auto r = store_->put(*u, output, o);
    if (!r && r.code() != Errc::conflict) return std::move(r).error();
    return {};  // conflict: another run stored this chunk's output first; outputs are idempotent
}

Result<std::optional<std::vector<uint8_t>>> ObjectOutputStore::get(ChunkId id) {
    auto u = uri(id);
    if (!u) return std::move(u).error();
    auto r = store_->get(*u);
    if (!r) return std::move(r).error();
    if (!*r) return std::optional<std::vector<uint8_t>>{};
    return std::optional<std::vector<uint8_t>>{std::move((*r)->data)};
}

Result<bool> ObjectOutputStore::contains(ChunkId id) {
    auto u = uri(id);
    if (!u) return std::move(u).error();
    auto r = store_->head(*u);
    if (!r) return std::move(r).error();
    return r->has_value();
}

Status ObjectOutputStore::clear() {
    const std::string prefix = job_ + "/";
    auto keys = store_->list(pool_, bucket_, prefix);
    if (!keys) return std::move(keys).error();
    for (const auto& k : *keys) {
        // Only this job's chunk outputs (PREFIX + 20 digits): the prefix also matches the
        // outputs of a job whose name extends this one's ("nightly" and "nightly/2026-12-06").
        const std::string_view rest = std::string_view(k).substr(std::min(prefix.size(), k.size()));
        if (rest.size() != 20 || rest.find_first_not_of("0123456789") != std::string_view::npos) continue;
        auto u = FabricUri::make(pool_, bucket_, k);
        if (!u) return std::move(u).error();
        auto r = store_->remove(*u);
        if (!r) return std::move(r).error();
    }
    return {};
}

// ---- RetryPolicy / JobCoordinator -----------------------------------------------------------

bool RetryPolicy::is_retryable(Errc code) const {
    return std::find(retryable.begin(), retryable.end(), code) != retryable.end();
}

Duration RetryPolicy::backoff(uint32_t attempt) const {
    const uint64_t initial = to_ns(initial_backoff), cap = to_ns(max_backoff);
    uint64_t b = initial;
    for (uint32_t i = 1; i < attempt && b < cap; ++i) b = b > cap / 2 ? cap : b * 2;
    return ns_duration(std::min(b, cap));
}

namespace {
bool stop_asked(const RetryPolicy& policy) { return policy.should_stop && policy.should_stop(); }

/// The wait RetryPolicy::sleep stands for: whole, or with should_stop in slices of at most
/// 20 ms, so that a stop asked for meanwhile (a Ctrl-C) ends it.
void default_sleep(const RetryPolicy& policy, Duration wait) {
    const uint64_t ns = to_ns(wait);
    if (!policy.should_stop) {
        timespec ts{time_t(ns / 1'000'000'000ull), long(ns % 1'000'000'000ull)};
        while (nanosleep(&ts, &ts) != 0) {
        }
        return;
    }
    (void)sleep_with_heartbeat(wait, std::chrono::milliseconds(20), [&]() -> Status {
        if (stop_asked(policy)) return make_error(Errc::interrupted, "stop asked for");
        return {};
    });
}

/// A full store (or a key lock held by a paused process) makes its writer wait, not fail.
bool store_waits(Errc code) {
    return code == Errc::capacity_exceeded || code == Errc::no_space || code == Errc::back_pressure ||
           code == Errc::busy;
}

Error stopped(ChunkId id) {
    return make_error(Errc::interrupted, "stopped by its caller (RetryPolicy.should_stop) at chunk " + std::to_string(id) +
                                             "; the outputs stored so far stay");
}

Status put_waiting_for_room(const RetryPolicy& policy, JobOutputStore& outputs, ChunkId id, ByteView output,
                            const std::function<void(Duration)>& sleep) {
    // The output is kept and put again after a backoff: running the chunk again would redo its
    // work, and counting an attempt would turn a slow reader of the store into a failed job.
    // Bounded twice: by the waits asked for (a sleep a test records takes no time) and by the
    // clock (time spent in the puts counts too). Each wait is at least 1 ms: a zero backoff
    // must not turn the wait into a spin that never adds up.
    Status put = outputs.put(id, output);
    const uint64_t limit = uint64_t(to_ns(policy.store_wait)), start = mono_now_ns();
    uint64_t waited = 0;
    for (uint32_t n = 1; !put && store_waits(put.code()) && waited < limit && mono_now_ns() - start < limit; ++n) {
        if (stop_asked(policy)) return stopped(id);
        const Duration wait = std::max<Duration>(policy.backoff(n), std::chrono::milliseconds(1));
        sleep(wait);
        waited += to_ns(wait);
        put = outputs.put(id, output);
    }
    if (!put && store_waits(put.code()))
        return make_error(put.code(), "output of chunk " + std::to_string(id) + " waited " + format_duration_ns(waited) +
                                          " (RetryPolicy.store_wait) for room in the output store: " + put.error().message);
    return put;
}
}  // namespace

Result<JobResult> JobCoordinator::run(std::span<const WorkChunk> chunks, JobOutputStore& outputs, const Exec& exec,
                                      const Aggregate& aggregate) {
    if (policy_.max_attempts == 0) return make_error(Errc::invalid_argument, "RetryPolicy.max_attempts 0 must be >= 1");
    std::set<ChunkId> ids;
    for (const auto& c : chunks)
        if (!ids.insert(c.id).second)
            return make_error(Errc::invalid_argument, "chunk id " + std::to_string(c.id) + " appears twice");
    const std::function<void(Duration)> sleep =
        policy_.sleep ? policy_.sleep : [this](Duration wait) { default_sleep(policy_, wait); };
    JobResult res;
    for (const auto& c : chunks) {
        if (stop_asked(policy_)) return stopped(c.id);
        auto have = outputs.contains(c.id);
        if (!have) return std::move(have).error();
        if (*have) {
            ++res.skipped;
            continue;
        }
        ChunkFailure fail{c.id, {}, 0};
        bool done = false;
        for (uint32_t attempt = 1; attempt <= policy_.max_attempts; ++attempt) {
            fail.attempts = attempt;
            auto out = exec(c.data);
            if (out) {
                FABRIC_TRY(put_waiting_for_room(policy_, outputs, c.id, *out, sleep));
                done = true;
                break;
            }
            fail.error = std::move(out).error();
            if (!policy_.is_retryable(fail.error.code) || attempt == policy_.max_attempts) break;
            ++res.retries;
            sleep(policy_.backoff(attempt));
            if (stop_asked(policy_)) return stopped(c.id);
        }
        if (done)
            ++res.executed;
        else
            res.failed.push_back(std::move(fail));
    }
    std::sort(res.failed.begin(), res.failed.end(), [](const ChunkFailure& a, const ChunkFailure& b) { return a.id < b.id; });
    if (!res.failed.empty()) return res;
    Outputs all;
    all.reserve(chunks.size());
    for (const auto& c : chunks) {
        auto o = outputs.get(c.id);
        if (!o) return std::move(o).error();
        if (!*o)
            return make_error(Errc::not_found, "output of chunk " + std::to_string(c.id) +
                                                   " vanished from the output store before aggregation");
        all.emplace_back(c.id, std::move(**o));
    }
    res.aggregate = aggregate(all);
    res.complete = true;
    return res;
}

// ---- result identity ---------------------------------------------------------------------------

PutOptions result_put_options(std::string_view input_uri, uint64_t input_version, uint64_t epoch) {
    PutOptions o;
    o.condition = PutCondition::fence;
    o.fence_token = epoch;
    o.metadata[std::string(kResultInputUri)] = std::string(input_uri);
    o.metadata[std::string(kResultInputVersion)] = std::to_string(input_version);
    return o;
}

Result<bool> result_is_current(ObjectStore& store, const FabricUri& result, std::string_view input_uri,
                               uint64_t input_version) {
    auto h = store.head(result);
    if (!h) return std::move(h).error();
    if (!*h) return false;
    const auto& md = (*h)->metadata;
    auto uri = md.find(std::string(kResultInputUri));
    auto version = md.find(std::string(kResultInputVersion));
    return uri != md.end() && uri->second == input_uri && version != md.end() &&
           version->second == std::to_string(input_version);
}

Result<std::string> result_input_uri(ObjectStore& store, const FabricUri& result) {
    auto h = store.head(result);
    if (!h) return std::move(h).error();
    if (!*h) return std::string();
    auto it = (*h)->metadata.find(std::string(kResultInputUri));
    return it == (*h)->metadata.end() ? std::string() : it->second;
}

}  // namespace fabric_shm
