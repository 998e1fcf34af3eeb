// SPDX-License-Identifier: MIT
// Creating, attaching and removing a pool: the header is validated field by field before
// anything trusts it; creation is atomic (built under a temporary name, then link()ed).
#include "fabric_shm/pool.h"

#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "crash_point.h"
#include "fabric_shm/names.h"
#include "layout/fingerprint.h"
#include "pool_impl.h"
#include "pool_internal.h"
#include "region_kinds.h"

namespace fabric_shm {

using namespace layout;
using detail::init_lease;
using detail::lease_info_of;
using detail::shm_dir;
using detail::unlink_if_same;

namespace {

uint64_t random_u64() {
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ rd() ^ mono_now_ns();
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

/// Whether the pool's pages can be bound to `node`; says why not on stderr (the pool is then
/// created unbound, as documented for --numa-node).
bool numa_node_usable(int node, const std::string& name) {
    if (node < 0) return false;
    if (numa_available() < 0) {
        std::fprintf(stderr, "fabric-shm: warning: pool '%s': NUMA is not available; --numa-node %d ignored\n",
                     name.c_str(), node);
        return false;
    }
    if (node > numa_max_node() || !numa_bitmask_isbitset(numa_all_nodes_ptr, unsigned(node))) {
        std::fprintf(stderr, "fabric-shm: warning: pool '%s': NUMA node %d does not exist (max %d); not bound\n",
                     name.c_str(), node, numa_max_node());
        return false;
    }
    if (numa_num_configured_nodes() < 2)
        std::fprintf(stderr, "fabric-shm: warning: pool '%s': this machine has one NUMA node; binding to node %d changes nothing\n",
                     name.c_str(), node);
    return true;
}

/// Binds the segment file's pages to `node` before any page exists. mbind on a MAP_SHARED
/// mapping of a tmpfs file sets the file's shared policy (kept with the file, seen by every
/// process that maps it), and posix_fallocate then allocates every page under it. Binding after
/// the pages were allocated would leave them where they are (mbind moves nothing without
/// MPOL_MF_MOVE), which is what this replaced.
Status bind_segment_to_node(int fd, uint64_t size, int node, const std::string& path) {
    if (::ftruncate(fd, off_t(size)) != 0) return errno_error(errno, "ftruncate " + path);
    void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) return errno_error(errno, "mmap " + path);
    struct bitmask* nodes = numa_allocate_nodemask();
    numa_bitmask_setbit(nodes, unsigned(node));
    const long bound = mbind(base, size, MPOL_BIND, nodes->maskp, nodes->size + 1, 0);
    const int err = errno;
    numa_free_nodemask(nodes);
    munmap(base, size);
    if (bound != 0) return errno_error(err, "mbind " + path + " to NUMA node " + std::to_string(node));
    return {};
}

/// unlink_name_if_file, retried while another process holds the file's lock (it is unlinking
/// the name, or paused just before): 50 tries 2 ms apart, as an opener waits for a remover.
/// 0, or the last errno (EAGAIN: the lock stayed held).
int unlink_name_eventually(const std::string& path, int fd) {
    int err = EAGAIN;
    for (int attempt = 0; attempt < 50 && err == EAGAIN; ++attempt) {
        err = detail::unlink_name_if_file(path, fd);
        if (err == EAGAIN) usleep(2000);
    }
    return err;
}

/// A removal whose name stayed (unlink_name_eventually's `err`): never reported as done.
Error name_stayed_error(const std::string& name, const std::string& path, int err, const std::string& what) {
    if (err == EAGAIN)
        return make_error(Errc::busy, "pool '" + name + "' " + what + ", but its name is still there: another " +
                                          "process holds it to unlink it; run it again");
    return errno_error(err, "pool '" + name + "' " + what + ", but its name " + path + " could not be unlinked");
}

/// The temporary names a creator builds a pool under (".tmp-<pid>-<random>") must not be a
/// pool's: the reaper removes such files once their creator is gone, and listings skip them.
constexpr std::string_view kTempNameMarker = ".tmp-";
/// Creation, opening and removal refuse them: a pool of that name would be removed by the
/// reaper, and a removal of one would unlink a creator's file before its link (or mark the pool
/// it became).
Status refuse_temp_name(std::string_view name) {
    if (name.find(kTempNameMarker) == std::string_view::npos) return {};
    return make_error(Errc::invalid_name, "pool name '" + std::string(name) + "' contains '" +
                                              std::string(kTempNameMarker) +
                                              "', which marks the temporary file of a pool being created "
                                              "(the reaper removes those)");
}

}  // namespace

Result<Pool> Pool::create(const PoolOptions& options) { return create_and_register(options, Duration::zero()); }

Result<Pool> Pool::create_and_register(const PoolOptions& options, Duration heartbeat_timeout) {
    if (Status s = validate_name("pool", options.name); !s) return std::move(s).error();
    if (Status s = refuse_temp_name(options.name); !s) return std::move(s).error();
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
    std::snprintf(suffix, sizeof suffix, "%s%d-%016llx", kTempNameMarker.data(), getpid(), (unsigned long long)random_u64());
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
    if (numa_node_usable(options.numa_node, options.name)) {
        if (Status s = bind_segment_to_node(fd, size, options.numa_node, tmp_path); !s) return cleanup(std::move(s).error());
        FABRIC_CRASH_POINT("pool.create.numa_bound");
    }
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
    // Such a file is a creator's, not yet a pool: attaching to it would register in a pool that
    // may never be linked under its name, or be deleted by the reaper once its creator died.
    if (Status s = refuse_temp_name(name); !s) return std::move(s).error();
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
            // The remover died before unlinking. Its mark says nothing about the leases now (a
            // renewal that saw LIVE may have landed between its judgement and its mark, and it
            // died before judging again: reap_pass), so they are judged again, behind a fence
            // after the load that saw the mark (the Dekker pair with renew_lease, whose renewer
            // extends, then loads the word): a live lease puts the pool back to LIVE and we
            // attach to it. Otherwise we finish for the remover: its mark taken over (CAS from
            // the exact word to GONE), then the unlink. A remover judged dead by its heartbeat
            // alone (another pid namespace) that is only stopped finds the word changed when it
            // resumes: its revert, or its own CAS to GONE before its unlink, then fails.
            uint64_t marked = lc;
            auto& word = doomed.impl_->header()->lifecycle;
            if (owner_dead && lifecycle_state(lc) == kPoolGone) {
                if (!unlink_if_same(*doomed.impl_)) usleep(2000);  // its remover is unlinking it
            } else if (owner_dead) {
                std::atomic_thread_fence(std::memory_order_seq_cst);
                if (!doomed.wholly_expired(MonoClock::now()))
                    word.compare_exchange_strong(marked, make_lifecycle(kPoolLive, 0), std::memory_order_seq_cst);
                else if (word.compare_exchange_strong(marked, make_lifecycle(kPoolGone, 0), std::memory_order_seq_cst))
                    unlink_if_same(*doomed.impl_);
            } else {
                usleep(2000);
            }
            continue;
        }
        Pool pool(std::move(impl));
        if (options.read_only) return pool;
        auto token = detail::registry_register(*pool.impl_, to_ns(options.heartbeat_timeout), mono_now_ns());
        if (!token) return std::move(token).error();
        pool.impl_->self = token.value();
        if (options.reap_on_open) {
            const uint64_t now = mono_now_ns();
            ReapReport report =
                detail::reap_pass(pool, MonoClock::from_ns(now), false, options.create_if_missing, detail::ReapScope::on_open);
            if (report.pool_removed) continue;  // wholly expired: re-create it fresh
        }
        const uint64_t now = mono_now_ns();
        if (options.create_if_missing && pool.lifecycle() == "live" && pool.wholly_expired(MonoClock::from_ns(now))) {
            // Left live by this process's reap because it may not unlink the name (another
            // user's pool in a sticky directory): waiting for it would wait for nothing.
            if (Status may = detail::may_unlink_name(name, path, pool.impl_->fd); !may)
                return make_error(Errc::permission_denied,
                                  "pool '" + name + "' expired and cannot be created again by this process: " +
                                      may.error().message);
        }
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
    if (Status s = refuse_temp_name(name); !s) return std::move(s).error();
    const std::string path = segment_path(name);
    OpenOptions oo;
    oo.reap_on_open = false;
    oo.allow_expired = true;
    // A forced removal of a file that cannot be attached unlinks its name without marking it
    // (there is no pool to mark). The file is opened before open() judges it, so that the name
    // goes only while it still names that file: a name never comes back to a file it left (a
    // pool is created by linking a new file), so a name that still names it was judged as it.
    // O_NONBLOCK: a FIFO planted under the name would block an open without it.
    const int forced_fd = force ? ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) : -1;
    auto pool = open(name, oo);
    if (!pool) {
        // Only a file that is not a usable pool: any other failure (the registry full, another
        // pid namespace, a bad environment variable, mmap) is this process's, on a pool that
        // may be live, whose holders would go on after its name went. Those are reported.
        const Errc c = pool.code();
        const bool unusable = c == Errc::corrupt || c == Errc::version_mismatch || c == Errc::too_small ||
                              c == Errc::not_ready;
        if (force && unusable && forced_fd >= 0) {
            // The name must still be the file opened before the judgement, else the judgement
            // was of another file (the first removed, a new one created under the name since):
            // unlinking nothing and saying "removed" would leave that one in place.
            struct stat held {}, by_name {};
            if (fstat(forced_fd, &held) == 0 && ::stat(path.c_str(), &by_name) == 0 &&
                (held.st_ino != by_name.st_ino || held.st_dev != by_name.st_dev)) {
                ::close(forced_fd);
                return make_error(Errc::busy, "pool '" + name + "' changed while it was judged (" +
                                                  pool.error().message + "); run it again");
            }
            const int err = unlink_name_eventually(path, forced_fd);
            ::close(forced_fd);
            if (err != 0)
                return name_stayed_error(name, path, err, "cannot be attached (" + pool.error().message + ")");
            return {};
        }
        if (forced_fd >= 0) ::close(forced_fd);
        return std::move(pool).error();
    }
    if (forced_fd >= 0) ::close(forced_fd);
    const uint64_t now = mono_now_ns();
    std::vector<uint32_t> others;
    // Judged by process (pid and start time where it can be probed), not by heartbeat: a
    // process stopped past its declared heartbeat timeout is still attached, and would find
    // its pool gone when it resumes.
    for (const ProcessInfo& p : pool->registry().list(MonoClock::from_ns(now)))
        if (p.token != pool->self() &&
            pool->registry().process_liveness(p.token, MonoClock::from_ns(now)) == Liveness::maybe_alive)
            others.push_back(p.pid);
    if (!others.empty() && !force) {
        std::string pids;
        for (uint32_t p : others) pids += " " + std::to_string(p);
        return make_error(Errc::busy, "pool '" + name + "' has " + std::to_string(others.size()) +
                                          " live processes attached (pids" + pids + "); use --force to remove anyway");
    }
    auto& lc = pool->impl_->header()->lifecycle;
    uint64_t w = lc.load(std::memory_order_acquire);
    if (lifecycle_state(w) == kPoolGone) {  // removed; its remover may have died before the unlink
        if (const int err = unlink_name_eventually(path, pool->impl_->fd); err != 0)
            return name_stayed_error(name, path, err, "is removed");
        return {};
    }
    // Asked before the mark: a mark not followed by the unlink (EPERM in a sticky directory of
    // another owner) would end the pool for every holder while its name stays.
    if (Status may = detail::may_unlink_name(name, path, pool->impl_->fd); !may) return std::move(may).error();
    if (!lc.compare_exchange_strong(w, make_lifecycle(kPoolReclaiming, pool->self()), std::memory_order_acq_rel))
        return make_error(Errc::busy, "pool '" + name + "' is being removed by another process");
    // GONE by CAS from our mark, before the unlink: a process that judged us dead while we were
    // paused (by heartbeat, across pid namespaces) finishes a removal only while every lease has
    // run out, and otherwise puts the pool back to LIVE (Pool::open, reap_pass); its name must
    // then stay.
    uint64_t ours = make_lifecycle(kPoolReclaiming, pool->self());
    if (!lc.compare_exchange_strong(ours, make_lifecycle(kPoolGone, pool->self()), std::memory_order_acq_rel))
        return make_error(Errc::busy, "pool '" + name + "': another process took the removal over while this one "
                                                        "was stopped (kept if a lease was live); run it again");
    if (const int err = unlink_name_eventually(path, pool->impl_->fd); err != 0)
        return name_stayed_error(name, path, err, "is removed");
    return {};
}

}  // namespace fabric_shm
