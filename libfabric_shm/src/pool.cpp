// SPDX-License-Identifier: MIT
// Pool lifecycle (create/attach/validate/remove), the region directory and the reaper.
// See docs/ARCHITECTURE.md for the state machines; every transition is one CAS.
#include "fabric_shm/pool.h"

#include <dirent.h>
#include <fcntl.h>
#include <numa.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>

#include "fabric_shm/counters.h"
#include "crash_point.h"
#include "fabric_shm/names.h"
#include "layout/fingerprint.h"
#include "owner_lock.h"
#include "pool_impl.h"
#include "region_kinds.h"

namespace fabric_shm {

using namespace layout;

namespace {

constexpr const char* kSegmentPrefix = "fabric-shm.";
constexpr uint64_t kMetaLockTimeoutNs = 10 * kNsPerSec;

std::mutex g_attach_mutex;  // guards local attach counts and their registry bits

std::string shm_dir() {
    const char* env = std::getenv("FABRIC_SHM_DIR");
    return env && *env ? std::string(env) : std::string("/dev/shm");
}

uint32_t next_gen(uint32_t gen) {
    gen = (gen + 1) & kSlotGenMask;
    return gen == 0 ? 1 : gen;
}

uint64_t random_u64() {
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ rd() ^ mono_now_ns();
}

const char* entry_state_name(uint64_t state) {
    switch (state) {
    case kEntryCreating: return "creating";
    case kEntryLive: return "live";
    case kEntryReclaiming: return "reclaiming";
    default: return "free";
    }
}

LeaseInfo lease_info_of(const LeaseHeader& l) {
    LeaseInfo info;
    info.lease_id = l.lease_id.load(std::memory_order_relaxed);
    info.created_ns = l.created_ns.load(std::memory_order_relaxed);
    info.expires_ns = l.expires_ns.load(std::memory_order_acquire);
    info.ttl_ns = l.ttl_ns.load(std::memory_order_relaxed);
    info.renewed_ns = l.renewed_ns.load(std::memory_order_relaxed);
    info.renew_count = l.renew_count.load(std::memory_order_relaxed);
    info.revoked = l.state.load(std::memory_order_acquire) != kLeaseActive;
    info.last_renewer = l.last_renewer.load(std::memory_order_relaxed);
    return info;
}

void init_lease(LeaseHeader& l, uint64_t id, uint64_t now, uint64_t ttl, OwnerToken me) {
    l.lease_id.store(id, std::memory_order_relaxed);
    l.created_ns.store(now, std::memory_order_relaxed);
    l.expires_ns.store(now + ttl, std::memory_order_relaxed);
    l.ttl_ns.store(ttl, std::memory_order_relaxed);
    l.renewed_ns.store(now, std::memory_order_relaxed);
    l.state.store(kLeaseActive, std::memory_order_relaxed);
    l.last_renewer.store(me, std::memory_order_relaxed);
    l.renew_count.store(0, std::memory_order_relaxed);
}

/// Unlinks the pool's name only if it still refers to this mapping's inode (never a
/// re-created pool that took the name meanwhile).
void unlink_if_same(const Pool::Impl& impl) {
    struct stat by_name {}, by_fd {};
    if (::stat(impl.path.c_str(), &by_name) == 0 && fstat(impl.fd, &by_fd) == 0 && by_name.st_ino == by_fd.st_ino &&
        by_name.st_dev == by_fd.st_dev)
        ::unlink(impl.path.c_str());
}

std::string pools_hint() {
    auto names = Pool::list();
    if (names.empty()) return " (no pools exist)";
    std::string s = " (existing pools:";
    for (auto& n : names) s += " " + n;
    return s + ")";
}

/// Validates every header field before anything else trusts it.
Status validate_header(const std::byte* base, uint64_t file_size, std::string_view name) {
    const auto* h = reinterpret_cast<const PoolHeader*>(base);
    const uint64_t magic = h->magic.load(std::memory_order_acquire);
    if (magic == 0) {
        bool all_zero = true;
        for (size_t i = 0; i < sizeof(PoolHeader) && all_zero; ++i) all_zero = base[i] == std::byte{0};
        return make_error(Errc::not_ready, "pool '" + std::string(name) + "' is not initialised (" +
                                               (all_zero ? "header is all zero" : "magic is zero") +
                                               "); remove it with `fabric-shm pool rm --force`");
    }
    if (magic != kPoolMagic) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)magic);
        return make_error(Errc::corrupt, "pool '" + std::string(name) + "' is not a fabric-shm segment (magic " + buf +
                                             "); remove it with `fabric-shm pool rm --force`");
    }
    if (h->version_major != kLayoutMajor)
        return make_error(Errc::version_mismatch,
                          "pool '" + std::string(name) + "' has layout version " + std::to_string(h->version_major) + "." +
                              std::to_string(h->version_minor) + ", this build reads " + std::to_string(kLayoutMajor) +
                              ".x (created by another build; remove and re-create it)");
    if (h->fingerprint != kLayoutFingerprint)
        return make_error(Errc::version_mismatch, "pool '" + std::string(name) +
                                                      "' has a different layout fingerprint (same major version, "
                                                      "different build options); remove and re-create it");
    auto corrupt = [&](const std::string& what) {
        return make_error(Errc::corrupt, "pool '" + std::string(name) + "' header is corrupt: " + what);
    };
    if (h->header_size != sizeof(PoolHeader)) return corrupt("header_size " + std::to_string(h->header_size));
    if (h->pool_size > file_size)
        return make_error(Errc::too_small, "pool '" + std::string(name) + "' is truncated: header says " +
                                               std::to_string(h->pool_size) + " bytes, file has " +
                                               std::to_string(file_size));
    if (h->pool_size != file_size)
        return corrupt("pool_size " + std::to_string(h->pool_size) + " differs from file size " + std::to_string(file_size));
    if (h->registry_offset != kRegistryOffset || h->registry_slots != kRegistrySlots ||
        h->registry_slot_size != sizeof(ProcessSlot))
        return corrupt("registry table at offset " + std::to_string(h->registry_offset) + " with " +
                       std::to_string(h->registry_slots) + " slots does not match this layout");
    if (h->directory_offset != kDirectoryOffset || h->directory_entries != kDirectoryEntries ||
        h->directory_entry_size != sizeof(RegionEntry))
        return corrupt("directory at offset " + std::to_string(h->directory_offset) + " does not match this layout");
    if (h->data_offset != kDataOffset || h->data_size > file_size || h->data_offset > file_size - h->data_size)
        return corrupt("data area [" + std::to_string(h->data_offset) + ", +" + std::to_string(h->data_size) +
                       ") is past the end of the " + std::to_string(file_size) + "-byte segment");
    if (file_size < kDataOffset) return corrupt("segment shorter than its fixed tables");
    return {};
}

}  // namespace

std::string_view region_kind_name(uint32_t kind) noexcept {
    switch (RegionKind(kind)) {
    case RegionKind::test: return "test";
    case RegionKind::store: return "store";
    case RegionKind::store_heap: return "store-heap";
    case RegionKind::topic: return "topic";
    case RegionKind::partition: return "partition";
    case RegionKind::group: return "group";
    case RegionKind::job_outputs: return "job-outputs";
    case RegionKind::metrics: return "metrics";
    case RegionKind::bridge: return "bridge";
    }
    return "unknown";
}

std::string Pool::segment_path(std::string_view name) { return shm_dir() + "/" + kSegmentPrefix + std::string(name); }

std::vector<std::string> Pool::list() {
    std::vector<std::string> names;
    DIR* d = opendir(shm_dir().c_str());
    if (!d) return names;
    const std::string prefix = kSegmentPrefix;
    while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n.rfind(prefix, 0) != 0) continue;
        n = n.substr(prefix.size());
        if (n.find(".tmp-") != std::string::npos) continue;
        if (!validate_name("pool", n)) continue;
        names.push_back(n);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

Pool::Pool() noexcept = default;
Pool::Pool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pool::Pool(const Pool& other) noexcept = default;
Pool& Pool::operator=(const Pool& other) noexcept = default;
Pool::Pool(Pool&& other) noexcept = default;
Pool& Pool::operator=(Pool&& other) noexcept = default;
Pool::~Pool() = default;

Pool::Impl::~Impl() {
    detail::registry_unregister(*this);
    if (base) munmap(base, size);
    if (fd >= 0) ::close(fd);
}

void Pool::close() noexcept {
    if (impl_) impl_->closed.store(true, std::memory_order_relaxed);
}
bool Pool::closed() const noexcept { return impl_ && impl_->closed.load(std::memory_order_relaxed); }
Status Pool::check_open() const {
    if (closed()) return detail::closed_error(*this);
    return {};
}

namespace detail {
Error closed_error(const Pool& pool) {
    return make_error(Errc::closed, "pool '" + pool.name() + "' was closed (Pool::close): nothing opened from it works any more");
}
}  // namespace detail

const std::string& Pool::name() const { return impl_->name; }
bool Pool::created() const { return impl_->created; }
bool Pool::read_only() const { return impl_->read_only; }
uint64_t Pool::size() const { return impl_->size; }
PoolSettings Pool::settings() const {
    const PoolHeader& h = *impl_->header();
    PoolSettings s;
    s.mode = h.mode;
    s.numa_node = h.numa_node;
    s.default_ttl_ns = h.default_ttl_ns;
    s.incarnation = h.incarnation;
    s.created_wall_ns = h.created_wall_ns;
    s.creator_pid = h.creator_pid;
    s.data_offset = h.data_offset;
    s.data_size = h.data_size;
    s.layout_major = h.version_major;
    s.layout_minor = h.version_minor;
    return s;
}
OwnerToken Pool::self() const { return impl_->self; }
uint64_t Pool::incarnation() const { return impl_->header()->incarnation; }  // immutable after publish

bool Pool::Impl::in_bounds(uint64_t offset, uint64_t length) const noexcept {
    return offset <= size && length <= size - offset;
}

Status Pool::check_mapping() const {
    FABRIC_TRY(check_open());

    struct stat st {};
    if (fstat(impl_->fd, &st) != 0) return errno_error(errno, "fstat " + impl_->path);
    if (uint64_t(st.st_size) < impl_->size)
        return make_error(Errc::corrupt, "pool '" + impl_->name + "' was truncated to " + std::to_string(st.st_size) +
                                             " bytes after mapping (expected " + std::to_string(impl_->size) + ")");
    return {};
}

ProcessRegistry Pool::registry() const { return ProcessRegistry(*this); }

Status Pool::heartbeat(MonoTime now) const {
    const uint64_t now_ns = to_ns(now);
    auto* slot = impl_ ? impl_->my_slot() : nullptr;
    if (!slot) return check_open();
    // Stored even after close(): the registration lives until the last object or pinned view
    // goes, and a view's pin is only as safe as the heartbeat that keeps its owner alive
    // (a heartbeat timeout is how other pid namespaces judge us).
    slot->heartbeat_ns.store(now_ns, std::memory_order_relaxed);
    FABRIC_TRY(check_open());
    // Acquire: pairs with the reaper's acq_rel CAS to FENCED (or the retirement's release).
    const uint64_t w = slot->word.load(std::memory_order_acquire);
    if (slot_word_state(w) != kSlotLive || slot_word_gen(w) != token_gen(impl_->self) ||
        slot_word_pid(w) != impl_->self_pid)
        return make_error(Errc::stale_generation,
                          "this process's registration in pool '" + impl_->name + "' (token " +
                              std::to_string(impl_->self) + ") was ended by a reaper" +
                              (slot_word_state(w) == kSlotFenced ? " (fenced: its heartbeat was older than its timeout)"
                                                                 : "") +
                              "; its locks, claims and loans may have been taken over: open the pool again");
    return {};
}

namespace detail {
void count(const Pool& pool, CounterId id, uint64_t n) noexcept {
    if (auto* slot = PoolAccess::impl(pool).my_slot(); slot && uint32_t(id) < kCounterCells)
        slot->counters[uint32_t(id)].fetch_add(n, std::memory_order_relaxed);  // own shard: no cross-core bounce
}
}  // namespace detail

// ---- creation and attach ----------------------------------------------------------

namespace {

Result<std::unique_ptr<Pool::Impl>> map_segment(const std::string& name, const std::string& path, bool read_only) {
    const int fd = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        const int err = errno;
        if (err == ENOENT) return make_error(Errc::not_found, "pool '" + name + "' does not exist" + pools_hint());
        if (err == EACCES || err == EPERM)
            return make_error(Errc::permission_denied,
                              "pool '" + name + "': permission denied opening " + path + " (mode set at creation; "
                              "widen with `fabric-shm pool create --mode`)");
        return errno_error(err, "open " + path);
    }
    struct stat st {};
    if (fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        return errno_error(err, "fstat " + path);
    }
    const uint64_t size = uint64_t(st.st_size);
    if (size < sizeof(PoolHeader)) {
        ::close(fd);
        if (size == 0)
            return make_error(Errc::not_ready, "pool '" + name + "' is an empty file (creator died before sizing it)");
        return make_error(Errc::too_small, "pool '" + name + "' is " + std::to_string(size) +
                                               " bytes, shorter than its " + std::to_string(sizeof(PoolHeader)) +
                                               "-byte header");
    }
    void* base = mmap(nullptr, size, read_only ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        return errno_error(err, "mmap " + path);
    }
    auto impl = std::make_unique<Pool::Impl>();
    impl->name = name;
    impl->path = path;
    impl->fd = fd;
    impl->base = static_cast<std::byte*>(base);
    impl->size = size;
    impl->read_only = read_only;
    impl->local_attach = std::make_unique<std::atomic<uint32_t>[]>(kDirectoryEntries);
    if (Status s = validate_header(impl->base, size, name); !s) return std::move(s).error();
    return impl;
}

void bind_numa(std::byte* base, uint64_t size, int node, const std::string& name) {
    if (node < 0) return;
    if (numa_available() < 0) {
        std::fprintf(stderr, "fabric-shm: warning: pool '%s': NUMA is not available; --numa-node %d ignored\n",
                     name.c_str(), node);
        return;
    }
    if (numa_num_configured_nodes() < 2)
        std::fprintf(stderr, "fabric-shm: warning: pool '%s': this machine has one NUMA node; binding to node %d is a no-op\n",
                     name.c_str(), node);
    if (node > numa_max_node() || !numa_bitmask_isbitset(numa_all_nodes_ptr, unsigned(node))) {
        std::fprintf(stderr, "fabric-shm: warning: pool '%s': NUMA node %d does not exist (max %d); not bound\n",
                     name.c_str(), node, numa_max_node());
        return;
    }
    numa_tonode_memory(base, size, node);
}

}  // namespace

Result<Pool> Pool::create(const PoolOptions& options) { return create_and_register(options, Duration::zero()); }

Result<Pool> Pool::create_and_register(const PoolOptions& options, Duration heartbeat_timeout) {
    if (Status s = validate_name("pool", options.name); !s) return std::move(s).error();
    if (options.size_bytes < kMinPoolSize || options.size_bytes > kMaxPoolSize)
        return make_error(Errc::invalid_argument, "pool size " + std::to_string(options.size_bytes) +
                                                      " bytes is outside [" + format_bytes(kMinPoolSize) + ", " +
                                                      format_bytes(kMaxPoolSize) + "]");
    if (options.ttl <= Duration::zero()) return make_error(Errc::invalid_argument, "pool TTL must be greater than 0");
    if (options.mode & ~0777u)
        return make_error(Errc::invalid_argument, "pool mode " + std::to_string(options.mode) + " has bits outside 0777");
    const uint64_t size = (options.size_bytes + kPageSize - 1) & ~(kPageSize - 1);
    const std::string final_path = segment_path(options.name);
    char suffix[64];
    std::snprintf(suffix, sizeof suffix, ".tmp-%d-%016llx", getpid(), (unsigned long long)random_u64());
    const std::string tmp_path = final_path + suffix;

    const int fd = ::open(tmp_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return errno_error(errno, "create " + tmp_path);
    auto cleanup = [&](Error e) -> Result<Pool> {
        ::close(fd);
        ::unlink(tmp_path.c_str());
        return e;
    };
    if (fchmod(fd, options.mode) != 0) return cleanup(errno_error(errno, "fchmod " + tmp_path));
    FABRIC_CRASH_POINT("pool.create.tmp_created");
    // Reserve every page now: a sparse file would die with SIGBUS on first touch when /dev/shm fills.
    if (int err = posix_fallocate(fd, 0, off_t(size)); err != 0) {
        struct statvfs vfs {};
        std::string free_text = "unknown";
        if (statvfs(shm_dir().c_str(), &vfs) == 0) free_text = format_bytes(uint64_t(vfs.f_bavail) * vfs.f_frsize);
        if (err == ENOSPC)
            return cleanup(make_error(Errc::no_space, "pool '" + options.name + "' of " + format_bytes(size) +
                                                          " does not fit in " + shm_dir() + " (" + free_text +
                                                          " free); choose a smaller --size or free space"));
        return cleanup(errno_error(err, "posix_fallocate " + tmp_path));
    }
    void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) return cleanup(errno_error(errno, "mmap " + tmp_path));
    bind_numa(static_cast<std::byte*>(base), size, options.numa_node, options.name);

    const uint64_t now = mono_now_ns();
    auto* h = new (base) PoolHeader();  // the fresh file is zero; this writes only defaults
    h->version_major = kLayoutMajor;
    h->version_minor = kLayoutMinor;
    h->header_size = sizeof(PoolHeader);
    h->fingerprint = kLayoutFingerprint;
    h->pool_size = size;
    h->registry_offset = kRegistryOffset;
    h->registry_slots = kRegistrySlots;
    h->registry_slot_size = sizeof(ProcessSlot);
    h->directory_offset = kDirectoryOffset;
    h->directory_entries = kDirectoryEntries;
    h->directory_entry_size = sizeof(RegionEntry);
    h->data_offset = kDataOffset;
    h->data_size = size - kDataOffset;
    h->incarnation = random_u64();
    h->creator_pid = uint32_t(getpid());
    h->mode = options.mode;
    h->creator_start_time = self_start_time();
    h->creator_pidns = self_pidns();
    h->created_wall_ns = wall_now_ns();
    h->created_mono_ns = now;
    h->default_ttl_ns = to_ns(options.ttl);
    h->numa_node = options.numa_node;
    std::strncpy(h->name, options.name.c_str(), sizeof h->name - 1);
    h->lifecycle.store(make_lifecycle(kPoolLive, 0), std::memory_order_relaxed);
    init_lease(h->lease, make_lease_id(0, 1), now, to_ns(options.ttl), 0);
    FABRIC_CRASH_POINT("pool.create.before_magic");
    // Release: all fields above are visible before the magic that validates them.
    h->magic.store(kPoolMagic, std::memory_order_release);
    munmap(base, size);
    FABRIC_CRASH_POINT("pool.create.before_link");
    // link() never replaces: of two racing creators exactly one publishes; the other attaches.
    if (::link(tmp_path.c_str(), final_path.c_str()) != 0) {
        const int err = errno;
        if (err == EEXIST)
            return cleanup(make_error(Errc::already_exists, "pool '" + options.name + "' already exists"));
        return cleanup(errno_error(err, "link " + tmp_path + " -> " + final_path));
    }
    FABRIC_CRASH_POINT("pool.create.after_link");
    ::unlink(tmp_path.c_str());
    ::close(fd);
    OpenOptions open_options;
    open_options.reap_on_open = false;
    open_options.heartbeat_timeout = heartbeat_timeout;  // the creator's own, as any registrant's
    Result<Pool> opened = open(options.name, open_options);
    if (opened) opened.value().impl_->created = true;
    return opened;
}

Result<Pool> Pool::open(std::string_view name_view, const OpenOptions& options) {
    const std::string name(name_view);
    if (Status s = validate_name("pool", name); !s) return std::move(s).error();
    const std::string path = segment_path(name);
    for (int attempt = 0; attempt < 50; ++attempt) {
        auto mapped = map_segment(name, path, options.read_only);
        if (!mapped) {
            if (mapped.code() == Errc::not_found && options.create_if_missing && !options.read_only) {
                PoolOptions po = options.create;
                po.name = name;
                auto created = create_and_register(po, options.heartbeat_timeout);
                if (created || created.code() != Errc::already_exists) return created;
                continue;  // lost the creation race: attach to the winner's pool
            }
            return std::move(mapped).error();
        }
        std::unique_ptr<Impl> impl = std::move(mapped.value());
        const uint64_t lc = impl->header()->lifecycle.load(std::memory_order_acquire);
        if (lifecycle_state(lc) != kPoolLive && !options.allow_expired) {
            // Being removed: the name disappears shortly. Read-only callers may still look;
            // allow_expired callers (the reaper) attach to finish an interrupted removal.
            if (options.read_only) return Pool(std::move(impl));
            if (!options.create_if_missing) return make_error(Errc::not_found, "pool '" + name + "' is being removed");
            Pool doomed(std::move(impl));  // not registered: its destructor only unmaps
            const bool owner_dead =
                lifecycle_state(lc) == kPoolGone ||
                doomed.registry().process_liveness(lifecycle_owner(lc), MonoClock::now()) == Liveness::certainly_dead;
            if (owner_dead) unlink_if_same(*doomed.impl_);  // the remover died before unlinking: finish for it
            else usleep(2000);
            continue;
        }
        Pool pool(std::move(impl));
        if (options.read_only) return pool;
        auto token = detail::registry_register(*pool.impl_, to_ns(options.heartbeat_timeout), mono_now_ns());
        if (!token) return std::move(token).error();
        pool.impl_->self = token.value();
        if (options.reap_on_open) {
            const uint64_t now = mono_now_ns();
            ReapReport report = pool.reap(MonoClock::from_ns(now), false, options.create_if_missing);
            if (report.pool_removed) continue;  // wholly expired: re-create it fresh
        }
        const uint64_t now = mono_now_ns();
        if (options.create_if_missing && (pool.lifecycle() != "live" || pool.wholly_expired(MonoClock::from_ns(now)))) {
            // Someone else is removing this expired pool (or just did): retry until the
            // name is free or a fresh pool took it. Never hand out a gone pool.
            usleep(1000);
            continue;
        }
        if (!options.allow_expired && !options.create_if_missing && pool.wholly_expired(MonoClock::from_ns(now))) {
            const LeaseInfo l = lease_info_of(pool.impl_->header()->lease);
            return make_error(Errc::lease_expired, "pool '" + name + "' expired " +
                                                       format_duration_ns(now - std::min(now, l.expires_ns)) +
                                                       " ago; the reaper will remove it (or re-create it)");
        }
        return pool;
    }
    return make_error(Errc::busy, "pool '" + name + "' kept changing while attaching (being removed and re-created)");
}

Status Pool::remove(std::string_view name_view, bool force) {
    const std::string name(name_view);
    if (Status s = validate_name("pool", name); !s) return std::move(s).error();
    const std::string path = segment_path(name);
    OpenOptions oo;
    oo.reap_on_open = false;
    oo.allow_expired = true;
    auto pool = open(name, oo);
    if (!pool) {
        if (force && pool.code() != Errc::not_found && pool.code() != Errc::invalid_name) {
            if (::unlink(path.c_str()) != 0) return errno_error(errno, "unlink " + path);
            return {};
        }
        return std::move(pool).error();
    }
    const uint64_t now = mono_now_ns();
    std::vector<uint32_t> others;
    for (const ProcessInfo& p : pool->registry().list(MonoClock::from_ns(now)))
        if (p.token != pool->self() && p.liveness == Liveness::maybe_alive) others.push_back(p.pid);
    if (!others.empty() && !force) {
        std::string pids;
        for (uint32_t p : others) pids += " " + std::to_string(p);
        return make_error(Errc::busy, "pool '" + name + "' has " + std::to_string(others.size()) +
                                          " live processes attached (pids" + pids + "); use --force to remove anyway");
    }
    auto& lc = pool->impl_->header()->lifecycle;
    uint64_t w = lc.load(std::memory_order_acquire);
    if (lifecycle_state(w) == kPoolGone) return {};
    if (!lc.compare_exchange_strong(w, make_lifecycle(kPoolReclaiming, pool->self()), std::memory_order_acq_rel))
        return make_error(Errc::busy, "pool '" + name + "' is being removed by another process");
    unlink_if_same(*pool->impl_);
    lc.store(make_lifecycle(kPoolGone, pool->self()), std::memory_order_release);
    return {};
}

std::string Pool::lifecycle() const {
    if (closed()) return "closed";
    switch (lifecycle_state(impl_->header()->lifecycle.load(std::memory_order_acquire))) {
    case kPoolLive: return "live";
    case kPoolReclaiming: return "reclaiming";
    case kPoolGone: return "gone";
    default: return "unknown";
    }
}

// ---- regions ----------------------------------------------------------------------

namespace {

bool attach_bit(Pool::Impl& impl, uint32_t index) {
    auto* slot = impl.my_slot();
    if (!slot) return false;
    std::lock_guard<std::mutex> lock(g_attach_mutex);
    if (impl.local_attach[index].fetch_add(1, std::memory_order_relaxed) == 0)
        // seq_cst: Dekker pair with try_reclaim (store RECLAIMING; load bits). Either the
        // reclaimer sees this bit, or we see RECLAIMING in our following seq_cst load.
        slot->attached[index / 64].fetch_or(uint64_t(1) << (index % 64), std::memory_order_seq_cst);
    return true;
}

void detach_bit(Pool::Impl& impl, uint32_t index) {
    auto* slot = impl.my_slot();
    if (!slot) return;
    std::lock_guard<std::mutex> lock(g_attach_mutex);
    if (impl.local_attach[index].fetch_sub(1, std::memory_order_relaxed) == 1)
        slot->attached[index / 64].fetch_and(~(uint64_t(1) << (index % 64)), std::memory_order_seq_cst);
}

}  // namespace

Result<Region> Pool::create_region(const RegionSpec& spec) {
    FABRIC_TRY(check_open());

    if (impl_->read_only || !impl_->self)
        return make_error(Errc::permission_denied, "pool '" + impl_->name + "' is open read-only");
    if (spec.name.empty() || spec.name.size() >= kRegionNameBytes || spec.name.find('\0') != std::string::npos)
        return make_error(Errc::invalid_argument, "region name '" + spec.name + "' must be 1-" +
                                                      std::to_string(kRegionNameBytes - 1) + " bytes");
    const uint64_t length = (spec.length + kPageSize - 1) & ~(kPageSize - 1);
    if (spec.length == 0 || length > impl_->header()->data_size)
        return make_error(Errc::capacity_exceeded, "region '" + spec.name + "' of " + std::to_string(spec.length) +
                                                       " bytes does not fit the pool's region area of " +
                                                       format_bytes(impl_->header()->data_size) + " (raise with --size)");
    uint64_t now = mono_now_ns();
    if (lifecycle_state(impl_->header()->lifecycle.load(std::memory_order_acquire)) != kPoolLive)
        return make_error(Errc::stale_generation, "pool '" + impl_->name + "' has been removed");
    const uint64_t ttl = spec.ttl > Duration::zero() ? to_ns(spec.ttl) : impl_->header()->default_ttl_ns;
    PoolHeader& h = *impl_->header();
    RegionEntry* entries = impl_->entries();

    auto locked = detail::owner_lock_acquire(h.meta_lock, *this, impl_->self, kMetaLockTimeoutNs, "directory lock");
    if (!locked) return std::move(locked).error();
    uint32_t index = kDirectoryEntries;
    uint32_t gen = 0;
    uint64_t offset = 0;
    {
        detail::OwnerLockGuard guard(h.meta_lock, impl_->self);
        now = mono_now_ns();
        // Under the lock: repair entries of dead creators, check the name, find space.
        struct Extent {
            uint64_t begin, end;
        };
        std::vector<Extent> used;
        used.reserve(64);
        // A parent entry that is free, re-used, or still CREATING by a dead creator.
        auto parent_gone = [&](RegionEntry* all, RegionRef ref, uint64_t at) {
            if (ref.index >= kDirectoryEntries) return true;
            const uint64_t pw = all[ref.index].word.load(std::memory_order_acquire);
            if (entry_word_gen(pw) != ref.generation || entry_word_state(pw) == kEntryFree) return true;
            return entry_word_state(pw) == kEntryCreating &&
                   registry().liveness(entry_word_owner(pw), MonoClock::from_ns(at)) == Liveness::certainly_dead;
        };
        for (uint32_t i = 0; i < kDirectoryEntries; ++i) {
            RegionEntry& e = entries[i];
            uint64_t w = e.word.load(std::memory_order_acquire);
            const uint64_t state = entry_word_state(w);
            if (state == kEntryFree) {
                if (index == kDirectoryEntries) {
                    index = i;
                    gen = entry_word_gen(w) == 0 ? 1 : entry_word_gen(w);
                }
                continue;
            }
            // By pid only: a creator that was only paused still zeroes the extent and writes
            // the entry's fields when it resumes.
            if (state == kEntryCreating &&
                registry().process_liveness(entry_word_owner(w), MonoClock::from_ns(now)) == Liveness::certainly_dead) {
                // The creator died between reserving and publishing: nobody else can hold it.
                if (e.word.compare_exchange_strong(w, make_entry_word(kEntryFree, next_gen(entry_word_gen(w)), 0),
                                                   std::memory_order_acq_rel)) {
                    h.repaired_entries.fetch_add(1, std::memory_order_relaxed);
                    if (index == kDirectoryEntries) {
                        index = i;
                        gen = next_gen(entry_word_gen(w));
                    }
                    continue;
                }
            }
            const uint64_t off = e.offset.load(std::memory_order_relaxed);
            const uint64_t len = e.length.load(std::memory_order_relaxed);
            if (impl_->in_bounds(off, len)) used.push_back({off, off + len});
            if (e.kind.load(std::memory_order_relaxed) == uint32_t(spec.kind) &&
                detail::load_fixed_string(e.name, kRegionNameBytes / 8) == spec.name &&
                e.lease.state.load(std::memory_order_relaxed) == kLeaseActive) {
                // A child whose parent is gone (a topic's partition whose creator died before
                // publishing the root) keeps its name only until the reaper reclaims it: it
                // must not make the re-creation of its parent fail. Revoked: handles fail closed.
                const uint64_t parent = e.parent.load(std::memory_order_relaxed);
                if (parent != 0 && parent_gone(entries, RegionRef::unpack(parent), now)) {
                    e.lease.state.store(kLeaseRevoked, std::memory_order_release);
                    continue;
                }
                return make_error(Errc::already_exists, std::string(region_kind_name(uint32_t(spec.kind))) + " '" +
                                                            spec.name + "' already exists");
            }
        }
        if (index == kDirectoryEntries)
            return make_error(Errc::capacity_exceeded, "region directory of pool '" + impl_->name + "' is full (" +
                                                           std::to_string(kDirectoryEntries) + " regions)");
        if (spec.parent.valid()) {
            if (spec.parent.index >= kDirectoryEntries)
                return make_error(Errc::invalid_argument, "parent region index out of range");
            const uint64_t pw = entries[spec.parent.index].word.load(std::memory_order_acquire);
            const uint64_t ps = entry_word_state(pw);
            if (entry_word_gen(pw) != spec.parent.generation || (ps != kEntryLive && ps != kEntryCreating))
                return make_error(Errc::stale_generation, "parent region of '" + spec.name + "' no longer exists");
        }
        std::sort(used.begin(), used.end(), [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
        uint64_t cursor = h.data_offset;
        const uint64_t end = h.data_offset + h.data_size;
        bool found = false;
        uint64_t largest = 0;
        for (const Extent& x : used) {
            if (x.begin > cursor) {
                largest = std::max(largest, x.begin - cursor);
                if (x.begin - cursor >= length) {
                    found = true;
                    break;
                }
            }
            cursor = std::max(cursor, (x.end + kPageSize - 1) & ~(kPageSize - 1));
        }
        if (!found) {
            if (cursor < end) largest = std::max(largest, end - cursor);
            if (cursor >= end || end - cursor < length)
                return make_error(Errc::capacity_exceeded,
                                  "pool '" + impl_->name + "' has no free extent of " + format_bytes(length) + " for " +
                                      std::string(region_kind_name(uint32_t(spec.kind))) + " '" + spec.name +
                                      "' (largest free extent " + format_bytes(largest) + "; raise with --size)");
        }
        offset = cursor;
        RegionEntry& e = entries[index];
        // The entry is FREE: only meta-lock holders write FREE entries, so plain stores suffice.
        e.offset.store(offset, std::memory_order_relaxed);
        e.length.store(length, std::memory_order_relaxed);
        e.kind.store(uint32_t(spec.kind), std::memory_order_relaxed);
        e.flags.store(0, std::memory_order_relaxed);
        e.parent.store(spec.parent.valid() ? spec.parent.packed() : 0, std::memory_order_relaxed);
        e.created_wall_ns.store(wall_now_ns(), std::memory_order_relaxed);
        for (int k = 0; k < 3; ++k) e.params[k].store(spec.params[k], std::memory_order_relaxed);
        detail::store_fixed_string(e.name, kRegionNameBytes / 8, spec.name);
        init_lease(e.lease, make_lease_id(index + 1, gen), now, ttl, impl_->self);
        attach_bit(*impl_, index);
        // Release: the fields above are visible to anyone who acquires a non-FREE word.
        e.word.store(make_entry_word(kEntryCreating, gen, impl_->self), std::memory_order_release);
        FABRIC_CRASH_POINT("region.create.reserved");
    }

    Region region;
    region.pool_ = *this;
    region.ref_ = RegionRef{index, gen};
    region.offset_ = offset;
    region.length_ = length;
    region.data_ = impl_->base + offset;
    std::memset(region.data_, 0, length);
    if (spec.init) {
        if (Status s = spec.init(region.data_, length); !s) {
            uint64_t w = make_entry_word(kEntryCreating, gen, impl_->self);
            entries[index].word.compare_exchange_strong(w, make_entry_word(kEntryFree, next_gen(gen), 0),
                                                        std::memory_order_acq_rel);
            return std::move(s).error();
        }
    }
    FABRIC_CRASH_POINT("region.create.before_publish");
    if (spec.publish) FABRIC_TRY(region.publish());
    return region;
}

Status Region::publish() {
    if (pool_.closed()) return detail::closed_error(pool_);
    RegionEntry* entry_ = &detail::PoolAccess::entry(*this);
    uint64_t w = make_entry_word(kEntryCreating, ref_.generation, pool_.self());
    // Release: the initialised region memory is visible to whoever acquires LIVE.
    if (entry_->word.compare_exchange_strong(w, make_entry_word(kEntryLive, ref_.generation, pool_.self()),
                                             std::memory_order_acq_rel))
        return {};
    if (entry_word_state(w) == kEntryLive && entry_word_gen(w) == ref_.generation) return {};
    return make_error(Errc::stale_generation, "region '" +
                                                  detail::load_fixed_string(entry_->name, kRegionNameBytes / 8) +
                                                  "' was reclaimed before it was published (creator presumed dead)");
}

Result<Region> Pool::open_region(RegionRef ref) const {
    FABRIC_TRY(check_open());

    if (ref.index >= kDirectoryEntries) return make_error(Errc::invalid_argument, "region index out of range");
    RegionEntry& e = impl_->entries()[ref.index];
    const std::string name = detail::load_fixed_string(e.name, kRegionNameBytes / 8);
    const bool attached = attach_bit(*impl_, ref.index);
    Region region;
    // seq_cst: second half of the Dekker pair (see attach_bit).
    const uint64_t w = e.word.load(std::memory_order_seq_cst);
    if (entry_word_gen(w) != ref.generation || entry_word_state(w) != kEntryLive) {
        if (attached) detach_bit(*impl_, ref.index);
        return make_error(Errc::stale_generation, "region '" + name + "' was reclaimed or re-created (generation " +
                                                      std::to_string(ref.generation) + ", now " +
                                                      std::to_string(entry_word_gen(w)) + ")");
    }
    const uint64_t off = e.offset.load(std::memory_order_relaxed);
    const uint64_t len = e.length.load(std::memory_order_relaxed);
    if (!impl_->in_bounds(off, len) || off < impl_->header()->data_offset || len == 0) {
        if (attached) detach_bit(*impl_, ref.index);
        return make_error(Errc::corrupt, "region '" + name + "' extent [" + std::to_string(off) + ", +" +
                                             std::to_string(len) + ") is outside the " + std::to_string(size()) +
                                             "-byte pool");
    }
    region.pool_ = *this;
    region.ref_ = ref;
    region.offset_ = off;
    region.length_ = len;
    region.data_ = impl_->base + off;
    if (Status s = region.check(MonoClock::now()); !s) return std::move(s).error();
    return region;
}

Result<Region> Pool::open_region(RegionKind kind, std::string_view name) const {
    FABRIC_TRY(check_open());

    RegionEntry* entries = impl_->entries();
    OwnerToken creator = 0;  // of a CREATING entry of that name, if any
    for (uint32_t i = 0; i < kDirectoryEntries; ++i) {
        const uint64_t w = entries[i].word.load(std::memory_order_acquire);
        const uint64_t state = entry_word_state(w);
        if (state != kEntryLive && state != kEntryCreating) continue;
        if (entries[i].kind.load(std::memory_order_relaxed) != uint32_t(kind)) continue;
        if (detail::load_fixed_string(entries[i].name, kRegionNameBytes / 8) != name) continue;
        if (entries[i].word.load(std::memory_order_acquire) != w) continue;  // changed while reading the name
        if (entries[i].lease.state.load(std::memory_order_acquire) != kLeaseActive) continue;  // removed
        if (state == kEntryCreating) {
            creator = entry_word_owner(w);
            continue;
        }
        return open_region(RegionRef{i, entry_word_gen(w)});
    }
    const std::string what = std::string(region_kind_name(uint32_t(kind))) + " '" + std::string(name) + "'";
    // Being created by a process that may still finish: "not ready", so that openers wait for
    // it instead of reporting it missing (and creators do not race it into already_exists
    // followed by not_found). A dead creator's entry is repaired by the next create.
    if (creator != 0) {
        std::string why;
        if (registry().liveness(creator, MonoClock::now(), &why) != Liveness::certainly_dead) {
            const uint64_t sw = impl_->slots()[token_slot(creator)].word.load(std::memory_order_acquire);
            return make_error(Errc::not_ready, what + " is being created in pool '" + impl_->name + "' by pid " +
                                                   std::to_string(slot_word_pid(sw)));
        }
    }
    return make_error(Errc::not_found, what + " does not exist in pool '" + impl_->name + "'");
}

Region::Region(Region&& o) noexcept
    : pool_(std::move(o.pool_)), ref_(o.ref_), offset_(o.offset_), length_(o.length_), data_(o.data_) {}
Region& Region::operator=(Region&& o) noexcept {
    if (this != &o) {
        release();
        pool_ = std::move(o.pool_);  // empties o.pool_
        ref_ = o.ref_;
        offset_ = o.offset_;
        length_ = o.length_;
        data_ = o.data_;
    }
    return *this;
}
Region::~Region() { release(); }
void Region::release() noexcept {
    if (pool_.impl_) detach_bit(*pool_.impl_, ref_.index);
    pool_ = Pool();  // may drop the last handle: unmaps after the detach above
}

uint64_t Region::lease_id() const { return detail::PoolAccess::entry(*this).lease.lease_id.load(std::memory_order_relaxed); }

Status Region::check(MonoTime now) const {
    const uint64_t now_ns = to_ns(now);
    if (!pool_.valid()) return make_error(Errc::invalid_argument, "check of an empty Region handle");
    if (pool_.closed()) return detail::closed_error(pool_);
    const RegionEntry* entry_ = &detail::PoolAccess::entry(*this);
    // A removed pool (`pool rm --force` with live processes, or a reaped one): every handle
    // fails closed at its next check. The remover's lifecycle CAS comes before its unlink, so
    // nothing is acknowledged into a segment after its name is gone. Acquire: pairs with it.
    if (lifecycle_state(pool_.impl_->header()->lifecycle.load(std::memory_order_acquire)) != kPoolLive)
        return make_error(Errc::stale_generation, "pool '" + pool_.name() +
                                                      "' was removed (fabric-shm pool rm, or reaped): its regions are gone");
    const uint64_t w = entry_->word.load(std::memory_order_acquire);
    if (entry_word_gen(w) != ref_.generation ||
        (entry_word_state(w) != kEntryLive && entry_word_state(w) != kEntryCreating))
        return make_error(Errc::stale_generation, "region '" +
                                                      detail::load_fixed_string(entry_->name, kRegionNameBytes / 8) +
                                                      "' was reclaimed (handle generation " +
                                                      std::to_string(ref_.generation) + ")");
    if (entry_->lease.state.load(std::memory_order_acquire) != kLeaseActive)
        return make_error(Errc::lease_expired, std::string(region_kind_name(entry_->kind.load(std::memory_order_relaxed))) +
                                                   " '" + detail::load_fixed_string(entry_->name, kRegionNameBytes / 8) +
                                                   "' was removed (lease revoked)");
    const uint64_t expires = entry_->lease.expires_ns.load(std::memory_order_acquire);
    if (now_ns >= expires)
        return make_error(Errc::lease_expired, std::string(region_kind_name(entry_->kind.load(std::memory_order_relaxed))) +
                                                   " '" + detail::load_fixed_string(entry_->name, kRegionNameBytes / 8) +
                                                   "' lease expired " + format_duration_ns(now_ns - expires) +
                                                   " ago (renew it with a RenewalManager or `fabric-shm lease renew`)");
    return {};
}

namespace {

struct ReclaimContext {
    Pool* pool;
    Pool::Impl* impl;
    uint64_t now;
    bool dry_run;
    ReapReport* report;
};

uint32_t attached_live_processes(const Pool::Impl& impl, const ProcessRegistry& reg, uint32_t index, uint64_t now) {
    (void)reg;
    uint32_t n = 0;
    const ProcessSlot* slots = impl.slots();
    for (uint32_t s = 0; s < kRegistrySlots; ++s) {
        const ProcessSlot& slot = slots[s];
        // seq_cst: pairs with attach_bit's fetch_or (Dekker).
        if (!(slot.attached[index / 64].load(std::memory_order_seq_cst) & (uint64_t(1) << (index % 64)))) continue;
        const uint64_t w = slot.word.load(std::memory_order_acquire);
        const uint64_t st = slot_word_state(w);
        if (st != kSlotLive && st != kSlotClaiming && st != kSlotFenced) continue;
        // By pid only: a process judged dead by its heartbeat (FENCED included) still maps
        // the region and reads or writes it when it resumes.
        if (detail::slot_process_liveness(impl.header(), slot, w, now, nullptr) == Liveness::certainly_dead) continue;
        ++n;
    }
    return n;
}

/// LIVE/stuck entry -> RECLAIMING(me) -> (no live attachment, still expired) FREE(g+1).
void try_reclaim(ReclaimContext& ctx, uint32_t index, uint64_t w, const std::string& why) {
    RegionEntry& e = ctx.impl->entries()[index];
    const std::string name = std::string(region_kind_name(e.kind.load(std::memory_order_relaxed))) + " '" +
                             detail::load_fixed_string(e.name, kRegionNameBytes / 8) + "'";
    const uint64_t len = e.length.load(std::memory_order_relaxed);
    const uint32_t gen = entry_word_gen(w);
    if (ctx.dry_run) {
        const uint32_t attached = attached_live_processes(*ctx.impl, ctx.pool->registry(), index, ctx.now);
        if (attached) {
            ctx.report->busy_regions++;
            ctx.report->notes.push_back("would keep " + name + " (" + why + ", held by " + std::to_string(attached) +
                                        " live process(es))");
        } else {
            ctx.report->reclaimed_regions++;
            ctx.report->reclaimed_bytes += len;
            ctx.report->notes.push_back("would reclaim " + name + " (" + why + ", " + format_bytes(len) + ")");
        }
        return;
    }
    const uint64_t marked = make_entry_word(kEntryReclaiming, gen, ctx.impl->self);
    // seq_cst: Dekker pair with attach_bit (see there) and with renew_lease (store expiry; load word).
    if (!e.word.compare_exchange_strong(w, marked, std::memory_order_seq_cst)) return;
    FABRIC_CRASH_POINT("region.reclaim.marked");
    const bool still_due = why != "lease expired" || ctx.now >= e.lease.expires_ns.load(std::memory_order_seq_cst);
    const uint32_t attached = attached_live_processes(*ctx.impl, ctx.pool->registry(), index, ctx.now);
    if (attached || !still_due) {
        uint64_t m = marked;
        e.word.compare_exchange_strong(m, make_entry_word(kEntryLive, gen, entry_word_owner(w)), std::memory_order_acq_rel);
        if (attached) {
            ctx.report->busy_regions++;
            ctx.report->notes.push_back("kept " + name + " (" + why + ", held by " + std::to_string(attached) +
                                        " live process(es))");
        }
        return;
    }
    uint64_t m = marked;
    // Release: FREE(g+1) makes the extent reusable; every old handle now sees StaleGeneration.
    if (e.word.compare_exchange_strong(m, make_entry_word(kEntryFree, next_gen(gen), 0), std::memory_order_acq_rel)) {
        ctx.impl->header()->reclaimed_regions.fetch_add(1, std::memory_order_relaxed);
        ctx.report->reclaimed_regions++;
        ctx.report->reclaimed_bytes += len;
        ctx.report->notes.push_back("reclaimed " + name + " (" + why + ", " + format_bytes(len) + ")");
    }
}

}  // namespace

Status Pool::remove_region(RegionRef ref) {
    FABRIC_TRY(check_open());

    if (impl_->read_only || !impl_->self)
        return make_error(Errc::permission_denied, "pool '" + impl_->name + "' is open read-only");
    if (ref.index >= kDirectoryEntries) return make_error(Errc::invalid_argument, "region index out of range");
    RegionEntry* entries = impl_->entries();
    const uint64_t w = entries[ref.index].word.load(std::memory_order_acquire);
    if (entry_word_gen(w) != ref.generation || entry_word_state(w) == kEntryFree)
        return make_error(Errc::stale_generation, "region was already removed");
    // Revoke this region and its descendants: accessors fail closed from now on.
    std::vector<uint32_t> doomed{ref.index};
    for (size_t k = 0; k < doomed.size(); ++k) {
        const uint32_t i = doomed[k];
        const uint64_t iw = entries[i].word.load(std::memory_order_acquire);
        entries[i].lease.state.store(kLeaseRevoked, std::memory_order_release);
        const uint64_t packed = make_region_ref(i, entry_word_gen(iw));
        for (uint32_t c = 0; c < kDirectoryEntries; ++c) {
            if (entry_word_state(entries[c].word.load(std::memory_order_acquire)) == kEntryFree) continue;
            if (entries[c].parent.load(std::memory_order_relaxed) == packed &&
                std::find(doomed.begin(), doomed.end(), c) == doomed.end())
                doomed.push_back(c);
        }
    }
    ReapReport report;
    ReclaimContext ctx{this, impl_.get(), mono_now_ns(), false, &report};
    for (auto it = doomed.rbegin(); it != doomed.rend(); ++it) {
        const uint64_t iw = entries[*it].word.load(std::memory_order_acquire);
        if (entry_word_state(iw) == kEntryLive) try_reclaim(ctx, *it, iw, "removed");
    }
    return {};
}

std::vector<RegionInfo> Pool::regions() const {
    if (closed()) return {};

    std::vector<RegionInfo> out;
    const uint64_t now = mono_now_ns();
    for (uint32_t i = 0; i < kDirectoryEntries; ++i) {
        const RegionEntry& e = impl_->entries()[i];
        const uint64_t w = e.word.load(std::memory_order_acquire);
        if (entry_word_state(w) == kEntryFree) continue;
        RegionInfo info;
        info.ref = RegionRef{i, entry_word_gen(w)};
        info.state = entry_state_name(entry_word_state(w));
        info.kind = e.kind.load(std::memory_order_relaxed);
        info.name = detail::load_fixed_string(e.name, kRegionNameBytes / 8);
        info.offset = e.offset.load(std::memory_order_relaxed);
        info.length = e.length.load(std::memory_order_relaxed);
        const uint64_t parent = e.parent.load(std::memory_order_relaxed);
        if (parent) info.parent = RegionRef::unpack(parent);
        info.owner = entry_word_owner(w);
        for (int k = 0; k < 3; ++k) info.params[k] = e.params[k].load(std::memory_order_relaxed);
        info.lease = lease_info_of(e.lease);
        info.lease.kind = info.kind;
        info.lease.name = info.name;
        info.lease.region = info.ref;
        info.attached_processes = attached_live_processes(*impl_, registry(), i, now);
        out.push_back(std::move(info));
    }
    return out;
}

Result<RegionInfo> Pool::region_info(RegionRef ref) const {
    FABRIC_TRY(check_open());

    for (RegionInfo& info : regions())
        if (info.ref == ref) return std::move(info);
    return make_error(Errc::not_found, "region " + std::to_string(ref.index) + " generation " +
                                           std::to_string(ref.generation) + " does not exist");
}

// ---- leases -----------------------------------------------------------------------

uint64_t Pool::pool_lease_id() const { return impl_->header()->lease.lease_id.load(std::memory_order_relaxed); }

std::vector<LeaseInfo> Pool::leases() const {
    if (closed()) return {};

    std::vector<LeaseInfo> out;
    LeaseInfo pl = lease_info_of(impl_->header()->lease);
    pl.is_pool = true;
    pl.name = impl_->name;
    out.push_back(pl);
    for (RegionInfo& r : regions()) out.push_back(r.lease);
    return out;
}

Result<LeaseInfo> Pool::lease(uint64_t lease_id) const {
    FABRIC_TRY(check_open());

    for (LeaseInfo& l : leases())
        if (l.lease_id == lease_id) return std::move(l);
    return make_error(Errc::not_found, "lease " + std::to_string(lease_id) + " does not exist in pool '" +
                                           impl_->name + "' (it may have been reclaimed)");
}

Result<MonoTime> Pool::renew_lease(uint64_t lease_id, MonoTime now, Duration ttl_duration) const {
    const uint64_t now_ns = to_ns(now);
    const uint64_t ttl_ns = to_ns(ttl_duration);
    FABRIC_TRY(check_open());

    if (impl_->read_only) return make_error(Errc::permission_denied, "pool '" + impl_->name + "' is open read-only");
    if (lifecycle_state(impl_->header()->lifecycle.load(std::memory_order_acquire)) != kPoolLive)
        return make_error(Errc::stale_generation, "pool '" + impl_->name + "' has been removed");
    const uint32_t index_plus_one = uint32_t(lease_id);
    const uint32_t gen = uint32_t(lease_id >> 32);
    LeaseHeader* lease = nullptr;
    RegionEntry* entry = nullptr;
    std::string what;
    if (index_plus_one == 0) {
        lease = &impl_->header()->lease;
        if (lease->lease_id.load(std::memory_order_relaxed) != lease_id)
            return make_error(Errc::not_found, "lease " + std::to_string(lease_id) + " does not exist");
        if (lifecycle_state(impl_->header()->lifecycle.load(std::memory_order_acquire)) != kPoolLive)
            return make_error(Errc::stale_generation, "pool '" + impl_->name + "' has been removed");
        what = "pool '" + impl_->name + "'";
    } else {
        if (index_plus_one > kDirectoryEntries)
            return make_error(Errc::not_found, "lease " + std::to_string(lease_id) + " does not exist");
        entry = &impl_->entries()[index_plus_one - 1];
        const uint64_t w = entry->word.load(std::memory_order_acquire);
        what = std::string(region_kind_name(entry->kind.load(std::memory_order_relaxed))) + " '" +
               detail::load_fixed_string(entry->name, kRegionNameBytes / 8) + "'";
        if (entry_word_gen(w) != (gen & kSlotGenMask) || entry_word_state(w) == kEntryFree)
            return make_error(Errc::stale_generation, "lease " + std::to_string(lease_id) + " belongs to a region that was reclaimed");
        lease = &entry->lease;
    }
    if (lease->state.load(std::memory_order_acquire) != kLeaseActive)
        return make_error(Errc::lease_expired, what + " was removed (lease revoked)");
    if (ttl_ns) lease->ttl_ns.store(ttl_ns, std::memory_order_relaxed);
    const uint64_t ttl = lease->ttl_ns.load(std::memory_order_relaxed);
    uint64_t expires = lease->expires_ns.load(std::memory_order_acquire);
    for (;;) {
        if (now_ns >= expires) {
            detail::count(*this, CounterId::lease_renewal_failures, 1);
            return make_error(Errc::lease_expired, what + " lease expired " + format_duration_ns(now_ns - expires) +
                                                       " ago; an expired lease cannot be renewed (fail closed)");
        }
        const uint64_t target = now_ns + ttl;
        if (target <= expires && !ttl_ns) break;  // already later than we would set (never shorten)
        // seq_cst: Dekker pair with try_reclaim (see there).
        if (lease->expires_ns.compare_exchange_weak(expires, target, std::memory_order_seq_cst)) {
            expires = target;
            break;
        }
    }
    FABRIC_CRASH_POINT("lease.renew.after_extend");
    if (entry) {
        const uint64_t w = entry->word.load(std::memory_order_seq_cst);
        if (entry_word_state(w) != kEntryLive && entry_word_state(w) != kEntryCreating)
            return make_error(Errc::lease_expired, what + " is being reclaimed");
    }
    lease->renewed_ns.store(now_ns, std::memory_order_relaxed);
    lease->last_renewer.store(impl_->self, std::memory_order_relaxed);
    lease->renew_count.fetch_add(1, std::memory_order_relaxed);
    detail::count(*this, CounterId::lease_renewals, 1);
    return MonoClock::from_ns(expires);
}

bool Pool::wholly_expired(MonoTime now) const {
    if (closed()) return false;

    const LeaseInfo pl = lease_info_of(impl_->header()->lease);
    if (!pl.expired(now)) return false;
    for (uint32_t i = 0; i < kDirectoryEntries; ++i) {
        const RegionEntry& e = impl_->entries()[i];
        const uint64_t w = e.word.load(std::memory_order_acquire);
        const uint64_t st = entry_word_state(w);
        if (st == kEntryFree) continue;
        if (st == kEntryCreating &&
            registry().process_liveness(entry_word_owner(w), now) == Liveness::maybe_alive)
            return false;
        if (!lease_info_of(e.lease).expired(now)) return false;
    }
    return true;
}

// ---- reaper -----------------------------------------------------------------------

ReapReport Pool::reap(MonoTime now_time, bool dry_run, bool allow_pool_removal) {
    const uint64_t now = to_ns(now_time);
    if (closed()) {
        ReapReport closed_report;
        closed_report.notes.push_back(detail::closed_error(*this).message);
        return closed_report;
    }
    ReapReport report;
    if (impl_->read_only || !impl_->self) dry_run = true;
    PoolHeader& h = *impl_->header();
    if (lifecycle_state(h.lifecycle.load(std::memory_order_acquire)) == kPoolGone) return report;
    ProcessRegistry reg = registry();
    if (dry_run) {
        for (const ProcessInfo& p : reg.list(now_time))
            if (p.liveness == Liveness::certainly_dead &&
                reg.process_liveness(p.token, now_time) != Liveness::certainly_dead) {
                // Judged by its heartbeat while its pid runs: a reap fences it and frees the
                // slot only once the pid is gone; nothing of it is killed meanwhile.
                report.notes.push_back("would fence registry slot " + std::to_string(p.slot) + " of pid " +
                                       std::to_string(p.pid) + " (" + p.dead_reason +
                                       "; its pid still runs: slot freed once it exits, nothing killed)");
            } else if (p.liveness == Liveness::certainly_dead) {
                report.dead_processes++;
                report.notes.push_back("would free registry slot " + std::to_string(p.slot) + " of pid " +
                                       std::to_string(p.pid) + " (" + p.dead_reason + ")");
                for (uint32_t g : p.child_groups)
                    report.notes.push_back("would kill child process group " + std::to_string(g) + " of pid " +
                                           std::to_string(p.pid) + " (if its leader still runs)");
            }
    } else {
        std::vector<std::string> kills;
        report.dead_processes = reg.reap_dead(now_time, &kills);
        if (report.dead_processes)
            report.notes.push_back("freed " + std::to_string(report.dead_processes) + " registry slot(s) of dead processes");
        for (auto& k : kills) report.notes.push_back(std::move(k));
    }

    ReclaimContext ctx{this, impl_.get(), now, dry_run, &report};
    RegionEntry* entries = impl_->entries();
    for (uint32_t i = 0; i < kDirectoryEntries; ++i) {
        RegionEntry& e = entries[i];
        uint64_t w = e.word.load(std::memory_order_acquire);
        const uint64_t st = entry_word_state(w);
        if (st == kEntryFree) continue;
        const std::string name = std::string(region_kind_name(e.kind.load(std::memory_order_relaxed))) + " '" +
                                 detail::load_fixed_string(e.name, kRegionNameBytes / 8) + "'";
        if (st == kEntryCreating || st == kEntryReclaiming) {
            std::string reason;
            // By pid only (see create_region): a paused creator or reclaimer writes on resuming.
            if (reg.process_liveness(entry_word_owner(w), now_time, &reason) != Liveness::certainly_dead) continue;
            if (st == kEntryCreating) {
                report.repaired_entries++;
                report.notes.push_back(std::string(dry_run ? "would free" : "freed") + " half-created " + name +
                                       " (creator " + reason + ")");
                if (!dry_run &&
                    e.word.compare_exchange_strong(w, make_entry_word(kEntryFree, next_gen(entry_word_gen(w)), 0),
                                                   std::memory_order_acq_rel))
                    h.repaired_entries.fetch_add(1, std::memory_order_relaxed);
                continue;
            }
            // A reclaimer died mid-way: restart from LIVE so try_reclaim re-checks attachments.
            report.repaired_entries++;
            if (!dry_run) {
                if (!e.word.compare_exchange_strong(w, make_entry_word(kEntryLive, entry_word_gen(w), 0),
                                                    std::memory_order_acq_rel))
                    continue;
                w = make_entry_word(kEntryLive, entry_word_gen(w), 0);
            }
        }
        const LeaseInfo l = lease_info_of(e.lease);
        std::string why;
        if (l.revoked) why = "removed";
        else if (l.expired(now_time)) why = "lease expired";
        else if (const uint64_t parent = e.parent.load(std::memory_order_relaxed); parent) {
            const RegionRef pref = RegionRef::unpack(parent);
            if (pref.index >= kDirectoryEntries) why = "orphan";
            else {
                const uint64_t pw = entries[pref.index].word.load(std::memory_order_acquire);
                const uint64_t ps = entry_word_state(pw);
                if (entry_word_gen(pw) != pref.generation || ps == kEntryFree) why = "orphan";
            }
        }
        if (!why.empty()) {
            try_reclaim(ctx, i, w, why);
            continue;
        }
        if (const RegionKindOps* ops = region_kind_ops(e.kind.load(std::memory_order_relaxed)); ops && ops->reap) {
            RegionInfo info;
            info.ref = RegionRef{i, entry_word_gen(w)};
            info.kind = e.kind.load(std::memory_order_relaxed);
            info.name = detail::load_fixed_string(e.name, kRegionNameBytes / 8);
            info.offset = e.offset.load(std::memory_order_relaxed);
            info.length = e.length.load(std::memory_order_relaxed);
            if (impl_->in_bounds(info.offset, info.length)) report.kind_items += ops->reap(*this, info, now, dry_run, report.notes);
        }
    }

    if (allow_pool_removal && wholly_expired(now_time)) {
        if (dry_run) {
            report.notes.push_back("would remove pool '" + impl_->name + "' (every lease expired)");
            report.pool_removed = true;
            return report;
        }
        uint64_t lw = h.lifecycle.load(std::memory_order_acquire);
        if (lifecycle_state(lw) == kPoolLive &&
            h.lifecycle.compare_exchange_strong(lw, make_lifecycle(kPoolReclaiming, impl_->self),
                                                std::memory_order_acq_rel)) {
            FABRIC_CRASH_POINT("pool.reap.reclaiming");
            unlink_if_same(*impl_);
            h.lifecycle.store(make_lifecycle(kPoolGone, impl_->self), std::memory_order_release);
            report.pool_removed = true;
            report.notes.push_back("removed pool '" + impl_->name + "' (every lease expired)");
        } else if (lifecycle_state(lw) == kPoolReclaiming &&
                   reg.process_liveness(lifecycle_owner(lw), now_time) == Liveness::certainly_dead &&
                   h.lifecycle.compare_exchange_strong(lw, make_lifecycle(kPoolReclaiming, impl_->self),
                                                       std::memory_order_acq_rel)) {
            // The previous remover died between marking and unlinking: finish for it.
            unlink_if_same(*impl_);
            h.lifecycle.store(make_lifecycle(kPoolGone, impl_->self), std::memory_order_release);
            report.pool_removed = true;
            report.notes.push_back("finished removing pool '" + impl_->name + "' (previous remover died)");
        }
    }
    return report;
}

}  // namespace fabric_shm
