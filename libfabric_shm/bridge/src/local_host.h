// SPDX-License-Identifier: MIT
// The local side of a bridge process: the pool (created when missing), its object store, the
// topics the process uses, lease renewal, and the process's status region. When the pool
// expires or vanishes under the process (every lease ran out, `pool rm --force`, a reboot's
// empty /dev/shm), reopen() drops every handle and opens (re-creates) it again, so the bridge
// rebuilds what it needs instead of exiting. Private to the bridge module.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/lease.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm_bridge/bridge.h"
#include "fabric_shm_bridge/status.h"

namespace fabric_shm::bridge {

/// True for the errors that mean "this pool (or a region of it) is gone": the handles are
/// dead, the pool must be opened again.
bool pool_lost(Errc code) noexcept;

class LocalHost {
public:
    LocalHost(LocalSettings settings, StatusIdentity identity);
    ~LocalHost();

    /// Opens (creates) the pool, the store and the status region. Called again by reopen().
    Status open();
    /// Drops every handle (the caller dropped its own first), then open(). Counts a recovery.
    Status reopen();
    void close();

    /// Creates the topic when missing (waiting for a concurrent creator to finish) and renews
    /// its leases from now on.
    Status ensure_topic(const std::string& name, const TopicConfig& config);
    /// Renews due leases and heartbeats; pool_lost-type error when a lease ran out (reopen()).
    Status tick(uint64_t mono_now);

    Pool& pool() { return *pool_; }
    MemObjectStore& store() { return *store_; }
    StatusWriter& status() { return status_; }
    bool is_open() const { return pool_ != nullptr; }
    uint64_t recoveries() const { return recoveries_; }
    const std::string& pool_name() const { return pool_name_; }

private:
    LocalSettings settings_;
    StatusIdentity identity_;
    std::string pool_name_;
    std::unique_ptr<Pool> pool_;
    std::unique_ptr<MemObjectStore> store_;
    std::unique_ptr<RenewalManager> renewals_;
    StatusWriter status_;
    std::vector<std::string> topics_;  ///< re-ensured by reopen()
    std::vector<TopicConfig> topic_configs_;
    uint64_t recoveries_ = 0;
};

/// Ensures the topic exists (create, or wait up to 10 s for another creator's publish).
Status ensure_topic_exists(Pool& pool, const std::string& name, const TopicConfig& config);

/// Wall-clock sleep in slices, calling keep_alive between them (stops at its first error).
Status sleep_keeping_alive(uint64_t ns, const std::function<Status()>& keep_alive, const std::function<bool()>& stop);

}  // namespace fabric_shm::bridge
