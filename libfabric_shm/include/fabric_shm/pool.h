// SPDX-License-Identifier: MIT
// The pool: one POSIX shared-memory segment /dev/shm/fabric-shm.<name>, its header, process
// registry, region directory with leases, and the reaper. Everything else lives in regions.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/owner_token.h"
#include "fabric_shm/result.h"

namespace fabric_shm {

namespace detail {
struct PoolAccess;  // the library's own access to the mapping (src/pool_impl.h)
}  // namespace detail

class ProcessRegistry;  // registry.h (included at the end: it holds a Pool)

constexpr uint64_t kDefaultPoolSize = 32ull << 20;  ///< fits twice in Docker's 64 MB /dev/shm
constexpr uint64_t kMinPoolSize = 1ull << 20;
constexpr uint64_t kMaxPoolSize = 1ull << 40;
constexpr Duration kDefaultPoolTtl = std::chrono::hours(1);  ///< the recipe's retention

/// Region kinds. Numbers are part of the layout (stored in RegionEntry::kind).
enum class RegionKind : uint32_t {
    test = 1,          ///< used by tests only
    store = 2,         ///< object store root (table)
    store_heap = 3,    ///< object store payload heap (child of store)
    topic = 10,        ///< topic root: config and groups
    partition = 11,    ///< one partition ring (child of topic)
    group = 12,        ///< consumer group table (child of topic)
    job_outputs = 20,  ///< pool-backed JobOutputStore
    metrics = 30,      ///< latency histograms (metrics.h), one per pool
    bridge = 40,       ///< status of one fabric-shm-bridge process (libfabric_shm/bridge, docs/bridge.md)
};
std::string_view region_kind_name(uint32_t kind) noexcept;

/// A pool's creation settings, as recorded in its header.
struct PoolSettings {
    uint32_t mode = 0;                ///< permission bits of the segment
    int numa_node = -1;               ///< -1: not bound
    uint64_t default_ttl_ns = 0;      ///< TTL of the pool lease and of regions created without one
    uint64_t incarnation = 0;         ///< random, differs for a re-created pool of the same name
    uint64_t created_wall_ns = 0;
    uint32_t creator_pid = 0;
    uint64_t data_offset = 0, data_size = 0;  ///< the region area
    uint16_t layout_major = 0, layout_minor = 0;
    /// The region directory's entries: at most this many regions exist at once, of every kind
    /// and state (regions() lists the taken ones). A store takes 2, a topic 1 + its partitions.
    uint32_t directory_entries = 0;
};

struct PoolOptions {
    std::string name;
    uint64_t size_bytes = kDefaultPoolSize;
    Duration ttl = kDefaultPoolTtl;
    uint32_t mode = 0600;
    /// -1: not bound. Else every page of the segment is allocated on this NUMA node (the file's
    /// shared policy is set before its pages are); an invalid node or no NUMA support warns and
    /// creates the pool unbound.
    int numa_node = -1;
};

struct OpenOptions {
    bool read_only = false;              ///< map PROT_READ, never register, never reap
    bool create_if_missing = false;      ///< with `create`; re-creates a wholly expired pool
    PoolOptions create;                  ///< used when creating (name is taken from open's argument)
    /// Registry: a heartbeat older than this = dead. 0: $FABRIC_SHM_HEARTBEAT_TIMEOUT (a
    /// duration, e.g. 5s) when set, else pid only. Required (on every process) to share a pool
    /// across pid namespaces, where pids cannot be probed: registering is refused otherwise.
    Duration heartbeat_timeout{0};
    bool reap_on_open = true;            ///< opportunistic reaping (dead processes, expired regions)
    bool allow_expired = false;          ///< attach even when every lease ran out or removal is under way (reaper, lease tools)
};

/// Identifies a region across processes: directory index + generation.
struct RegionRef {
    uint32_t index = 0;
    uint32_t generation = 0;
    uint64_t packed() const { return (uint64_t(generation) << 32) | (index + 1); }
    static RegionRef unpack(uint64_t v) { return {uint32_t(v) - 1, uint32_t(v >> 32)}; }
    bool valid() const { return generation != 0; }
    friend bool operator==(RegionRef, RegionRef) = default;
};

struct LeaseInfo {
    uint64_t lease_id = 0;
    bool is_pool = false;
    uint32_t kind = 0;
    std::string name;          ///< region name ("" for the pool lease)
    RegionRef region;
    uint64_t created_ns = 0, expires_ns = 0, ttl_ns = 0, renewed_ns = 0, renew_count = 0;
    bool revoked = false;
    OwnerToken last_renewer = 0;
    bool expired(MonoTime now) const { return revoked || to_ns(now) >= expires_ns; }
};

struct RegionInfo {
    RegionRef ref;
    std::string state;  ///< "creating", "live", "reclaiming"
    uint32_t kind = 0;
    std::string name;
    uint64_t offset = 0, length = 0;
    RegionRef parent;
    OwnerToken owner = 0;
    uint64_t params[3] = {0, 0, 0};
    LeaseInfo lease;
    uint32_t attached_processes = 0;  ///< live registrations holding a handle
};

class Region;

struct RegionSpec {
    RegionKind kind = RegionKind::test;
    std::string name;          ///< unique per kind among non-free regions; <= 95 bytes
    uint64_t length = 0;       ///< rounded up to the page size
    Duration ttl{0};           ///< 0: the pool's default TTL
    RegionRef parent;          ///< orphans (parent gone) are reclaimed
    uint64_t params[3] = {0, 0, 0};
    bool publish = true;       ///< false: stays CREATING until Region::publish() (for multi-region objects)
    /// Initialises the zeroed region before it is published; an error frees the region.
    std::function<Status(std::byte* data, uint64_t length)> init;
};

struct ReapReport {
    uint32_t dead_processes = 0;
    uint32_t repaired_entries = 0;    ///< CREATING/RECLAIMING entries of dead owners
    uint32_t reclaimed_regions = 0;
    uint32_t busy_regions = 0;        ///< expired but still attached by a live process
    uint64_t reclaimed_bytes = 0;
    uint64_t kind_items = 0;          ///< loans/pins/claims released by region-kind hooks
    bool pool_removed = false;        ///< marked gone and its name unlinked (a name that stayed: in notes)
    std::vector<std::string> notes;   ///< one line per action, for --dry-run and logs
};

/// A shared handle to one mapped pool and this process's registration in it, copied like a
/// std::shared_ptr. Every object opened on a pool (stores, topics, producers, consumers,
/// groups, renewals, regions, loans and pinned views) keeps a copy, so moving or dropping the
/// Pool it was opened from never invalidates it; the memory is unmapped and the registration
/// retired when the last copy is gone. close() closes the pool for every copy: later calls on
/// it, and on everything opened from it, return Errc::closed (pinned views stay readable).
/// Copies may be used from different threads; one object opened from it may not, unless its
/// header says so. A default-constructed or moved-from Pool is empty: only assigning to it,
/// valid() and destroying it are allowed.
class Pool {
public:
    /// Creates a new pool; AlreadyExists if the name is taken. Atomic: built under a
    /// temporary name and link()ed into place, so a killed creator leaves nothing.
    static Result<Pool> create(const PoolOptions& options);
    /// Attaches to an existing pool (or creates it, see OpenOptions). Validates the header
    /// and every table offset before trusting any field.
    static Result<Pool> open(std::string_view name, const OpenOptions& options = {});
    /// Names of the pools present (sorted).
    static std::vector<std::string> list();
    /// Marks the pool gone and unlinks it. Refuses while other live processes are registered
    /// unless `force`; with `force` also removes a segment that cannot be attached.
    static Status remove(std::string_view name, bool force);
    /// Path of a pool's segment: $FABRIC_SHM_DIR (default /dev/shm) + "/fabric-shm." + name.
    static std::string segment_path(std::string_view name);

    Pool() noexcept;
    Pool(const Pool& other) noexcept;
    Pool& operator=(const Pool& other) noexcept;
    Pool(Pool&& other) noexcept;
    Pool& operator=(Pool&& other) noexcept;
    ~Pool();

    /// False for an empty handle (default-constructed or moved-from).
    bool valid() const noexcept { return impl_ != nullptr; }
    /// Closes the pool for this process: every copy of this handle and every object opened
    /// from it fails later calls with Errc::closed ("pool 'x' was closed") without touching
    /// the mapping. Pinned views and loans already handed out stay readable/droppable; the
    /// mapping and the registration go when the last of them is destroyed. Idempotent.
    void close() noexcept;
    bool closed() const noexcept;
    /// Errc::closed when close() was called; OK otherwise.
    Status check_open() const;

    const std::string& name() const;
    /// True when the call that returned this handle created the segment (Pool::create, or
    /// Pool::open with create_if_missing that found no pool, or only a wholly expired one):
    /// programs that create a pool as a side effect say so.
    bool created() const;
    bool read_only() const;
    uint64_t size() const;
    /// What the pool was created with (copied out of its header).
    PoolSettings settings() const;
    OwnerToken self() const;  ///< this process's registration; 0 when read-only
    /// Random 64-bit id drawn at creation: tells a re-created pool of the same name from the old one.
    uint64_t incarnation() const;
    /// The registry of this pool; it holds a copy of this handle.
    ProcessRegistry registry() const;

    /// Re-checks the file size (another process may have truncated it): Corrupt if shorter.
    Status check_mapping() const;

    /// Registry heartbeat (RenewalManager::tick and blocking loops call it). stale_generation
    /// when this process's registration is no longer LIVE under its generation: a reaper
    /// judged it dead by its heartbeat (declared timeout) and fenced it while it was paused.
    /// Its token is then dead for good (every lock, claim and loan it holds may be taken over):
    /// stop using this handle and open the pool again.
    Status heartbeat(MonoTime now = MonoClock::now()) const;

    Result<Region> create_region(const RegionSpec& spec);
    Result<Region> open_region(RegionKind kind, std::string_view name) const;
    Result<Region> open_region(RegionRef ref) const;
    /// Revokes the region's lease (accessors fail closed at once) and reclaims its memory
    /// when no live process holds a handle (else the reaper does, later).
    Status remove_region(RegionRef ref);
    std::vector<RegionInfo> regions() const;
    Result<RegionInfo> region_info(RegionRef ref) const;

    std::vector<LeaseInfo> leases() const;
    Result<LeaseInfo> lease(uint64_t lease_id) const;
    uint64_t pool_lease_id() const;
    /// Extends a live lease to now + ttl (ttl 0: its own TTL; a non-zero ttl also becomes its
    /// TTL) and returns the new expiry. LeaseExpired if it already ran out (fail closed),
    /// StaleGeneration if reclaimed. Busy if a reaper was judging the region (or the pool)
    /// for removal meanwhile: the extension may keep it; renew again for the verdict.
    Result<MonoTime> renew_lease(uint64_t lease_id, MonoTime now = MonoClock::now(), Duration ttl = Duration::zero()) const;

    /// True when the pool lease and every region lease have run out.
    bool wholly_expired(MonoTime now = MonoClock::now()) const;
    /// Reaps dead processes, repairs half-made entries, reclaims expired or orphaned regions
    /// not held by a live process, calls each region kind's hook, and unlinks the pool when
    /// wholly expired. `dry_run` reports without changing anything.
    ReapReport reap(MonoTime now = MonoClock::now(), bool dry_run = false, bool allow_pool_removal = true);
    /// Pool lifecycle state as text: "live", "reclaiming", "gone".
    std::string lifecycle() const;

    struct Impl;

private:
    explicit Pool(std::unique_ptr<Impl> impl);
    /// create(), registering the creator with `heartbeat_timeout` (open() with
    /// create_if_missing passes its own: the creator is a registrant like any other).
    static Result<Pool> create_and_register(const PoolOptions& options, Duration heartbeat_timeout);
    std::shared_ptr<Impl> impl_;
    friend class Region;
    friend struct detail::PoolAccess;
};

/// A handle to a region: holds this process's attachment (so the memory is never reused
/// while the handle lives) and a copy of the Pool handle (so the mapping stays), and checks
/// lease and generation on demand.
class Region {
public:
    Region() = default;
    Region(Region&& other) noexcept;
    Region& operator=(Region&& other) noexcept;
    Region(const Region&) = delete;
    ~Region();

    bool valid() const { return pool_.valid(); }
    RegionRef ref() const { return ref_; }
    uint64_t offset() const { return offset_; }
    uint64_t length() const { return length_; }
    std::byte* data() const { return data_; }
    uint64_t lease_id() const;
    const Pool& pool() const { return pool_; }
    /// OK while the entry is live under this handle's generation and the lease has not run
    /// out (coarse clock); else StaleGeneration / LeaseExpired naming the region, or Closed
    /// after Pool::close (every data structure's operations check this first).
    Status check(MonoTime now = MonoClock::coarse_now()) const;
    /// CREATING -> LIVE for regions created with publish = false.
    Status publish();

private:
    friend class Pool;
    friend struct detail::PoolAccess;
    Pool pool_;  ///< keeps the mapping alive while the handle lives; empty when released
    RegionRef ref_;
    uint64_t offset_ = 0, length_ = 0;
    std::byte* data_ = nullptr;
    void release() noexcept;
    Status check_failed(MonoTime now) const;  ///< check()'s error: which test failed, in words
};

}  // namespace fabric_shm

// ProcessRegistry holds a Pool handle, so it is defined after Pool; including pool.h gives both.
#include "fabric_shm/registry.h"  // IWYU pragma: export
