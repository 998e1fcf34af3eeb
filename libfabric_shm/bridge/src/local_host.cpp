// SPDX-License-Identifier: MIT
#include "local_host.h"

#include <time.h>

#include <algorithm>

#include "fabric_shm/clock.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/names.h"

namespace fabric_shm::bridge {

namespace {
constexpr uint64_t kStatusTtlNs = 60 * kNsPerSec;  ///< a dead bridge's status stays visible this long
}

bool pool_lost(Errc code) noexcept {
    return code == Errc::lease_expired || code == Errc::stale_generation;
}

Status ensure_topic_exists(Pool& pool, const std::string& name, const TopicConfig& config) {
    // Creates it, or waits (bounded) for another process's creation in progress to publish it.
    // Only a dead-letter topic has slots above what a creator may ask for.
    if (config.partition_stride > kMaxPartitionStride)
        return ensure_dead_letter_topic(pool, name, config, std::chrono::seconds(10));
    return TopicManager(pool).ensure(name, config, std::chrono::seconds(10));
}

Status sleep_keeping_alive(uint64_t ns, const std::function<Status()>& keep_alive, const std::function<bool()>& stop) {
    constexpr uint64_t kSliceNs = 50 * kNsPerMs;
    const uint64_t end = mono_now_ns() + ns;
    for (uint64_t now = mono_now_ns(); now < end; now = mono_now_ns()) {
        if (stop && stop()) return {};
        if (keep_alive) FABRIC_TRY(keep_alive());
        const uint64_t slice = std::min(kSliceNs, end - now);
        timespec ts{time_t(slice / kNsPerSec), long(slice % kNsPerSec)};
        nanosleep(&ts, nullptr);
    }
    return {};
}

LocalHost::LocalHost(LocalSettings settings, StatusIdentity identity)
    : settings_(std::move(settings)), identity_(std::move(identity)) {
    pool_name_ = settings_.pool.empty() ? std::string(default_pool_name()) : settings_.pool;
}

LocalHost::~LocalHost() { close(); }

void LocalHost::close() {
    status_ = StatusWriter();
    renewals_.reset();
    store_.reset();
    pool_.reset();
}

Status LocalHost::open() {
    FABRIC_TRY(validate_name("pool", pool_name_));
    OpenOptions oo;
    oo.create_if_missing = true;
    oo.create.size_bytes = settings_.pool_size;
    if (settings_.pool_ttl_ns) oo.create.ttl = ns_duration(settings_.pool_ttl_ns);
    auto pool = Pool::open(pool_name_, oo);
    if (!pool) return std::move(pool).error();
    pool_ = std::make_unique<Pool>(std::move(pool.value()));
    auto store = MemObjectStore::open(*pool_);
    if (!store) return std::move(store).error();
    store_ = std::move(store.value());
    renewals_ = std::make_unique<RenewalManager>(*pool_);
    FABRIC_TRY(renewals_->register_lease(pool_->pool_lease_id()));
    for (uint64_t id : store_->lease_ids()) FABRIC_TRY(renewals_->register_lease(id));
    // A dead bridge's status stays visible for a minute, but never outlives the pool's own TTL
    // (it would keep an otherwise expired pool alive).
    uint64_t status_ttl = kStatusTtlNs;
    if (auto pl = pool_->lease(pool_->pool_lease_id()); pl && pl->ttl_ns) status_ttl = std::min(status_ttl, pl->ttl_ns);
    auto status = StatusWriter::open(*pool_, identity_, status_ttl);
    if (!status) return std::move(status).error();
    status_ = std::move(status.value());
    FABRIC_TRY(renewals_->register_lease(status_.lease_id()));
    for (size_t i = 0; i < topics_.size(); ++i) {
        FABRIC_TRY(ensure_topic_exists(*pool_, topics_[i], topic_configs_[i]));
        auto d = TopicManager(*pool_).describe(topics_[i]);
        if (!d) return std::move(d).error();
        for (uint64_t id : d->lease_ids) FABRIC_TRY(renewals_->register_lease(id));
    }
    return {};
}

Status LocalHost::reopen() {
    close();
    ++recoveries_;
    return open();
}

Status LocalHost::ensure_topic(const std::string& name, const TopicConfig& config) {
    if (std::find(topics_.begin(), topics_.end(), name) == topics_.end()) {
        topics_.push_back(name);
        topic_configs_.push_back(config);
    }
    FABRIC_TRY(ensure_topic_exists(*pool_, name, config));
    auto d = TopicManager(*pool_).describe(name);
    if (!d) return std::move(d).error();
    for (uint64_t id : d->lease_ids) FABRIC_TRY(renewals_->register_lease(id));
    return {};
}

Status LocalHost::tick(uint64_t mono_now) {
    if (!renewals_) return make_error(Errc::not_ready, "pool '" + pool_name_ + "' is not open");
    const TickSummary summary = renewals_->tick(MonoClock::from_ns(mono_now));
    // Fenced while paused (stale_generation): the caller treats it as a lost pool and opens
    // it again, under a new registration.
    if (!summary.registration) return summary.registration;
    for (const RenewalOutcome& o : summary.outcomes)
        if (o.kind == RenewalOutcomeKind::dropped)
            return make_error(Errc::lease_expired, "pool '" + pool_name_ + "': lease " + std::to_string(o.lease_id) +
                                                       " could not be renewed: " + o.error.message);
    return {};
}

}  // namespace fabric_shm::bridge
