// SPDX-License-Identifier: MIT
// The pool handle: copies, close(), settings, the heartbeat, the lifecycle. Creating and
// attaching: pool_open.cpp; regions: region_directory.cpp; leases: pool_leases.cpp; the
// reaper: reaper.cpp. See docs/ARCHITECTURE.md for the state machines; every transition is one CAS.
#include "fabric_shm/pool.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "crash_point.h"
#include "fabric_shm/counters.h"
#include "fabric_shm/names.h"
#include "pool_impl.h"
#include "pool_internal.h"

namespace fabric_shm {

using namespace layout;

namespace detail {

std::string shm_dir() {
    const char* env = std::getenv("FABRIC_SHM_DIR");
    return env && *env ? std::string(env) : std::string("/dev/shm");
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
    info.ttl_ns = lease_field_value(l.ttl.load(std::memory_order_relaxed)) * kLeaseFieldUnitNs;
    info.renewed_ns = info.created_ns + lease_field_value(l.renewed.load(std::memory_order_relaxed)) * kLeaseFieldUnitNs;
    info.renew_count = lease_field_value(l.renew_count.load(std::memory_order_relaxed));
    info.revoked = !lease_active(l.state.load(std::memory_order_acquire));
    info.last_renewer = OwnerToken(lease_field_value(l.last_renewer.load(std::memory_order_relaxed)));
    return info;
}

bool revoke_lease(LeaseHeader& l, uint32_t gen) noexcept {
    uint32_t active = make_lease_state(kLeaseActive, gen);
    // Release: pairs with the accessors' acquire load (they fail closed from now on).
    return l.state.compare_exchange_strong(active, make_lease_state(kLeaseRevoked, gen), std::memory_order_release,
                                           std::memory_order_relaxed);
}

void init_lease(LeaseHeader& l, uint64_t id, uint64_t now, uint64_t ttl, OwnerToken me) {
    ttl = std::min(ttl, kLeaseTtlMaxNs);  // never wraps `now + ttl` (kLeaseTtlMaxNs)
    const uint32_t gen = uint32_t(id >> 32);
    l.lease_id.store(id, std::memory_order_relaxed);
    l.created_ns.store(now, std::memory_order_relaxed);
    l.expires_ns.store(now + ttl, std::memory_order_relaxed);
    // Plain stores: the entry is not published yet (the creator's release of the entry word
    // orders them); a stale renewer's CAS against any of them fails on the generation.
    l.ttl.store(make_lease_field(gen, lease_ttl_field_value(ttl)), std::memory_order_relaxed);
    l.renewed.store(make_lease_field(gen, 0), std::memory_order_relaxed);
    l.state.store(make_lease_state(kLeaseActive, gen), std::memory_order_relaxed);
    l.last_renewer.store(make_lease_field(gen, me), std::memory_order_relaxed);
    l.renew_count.store(make_lease_field(gen, 0), std::memory_order_relaxed);
}

namespace {
/// unlink_name_if_file's steps on `own_fd`, a description of the file `path` named when opened.
int unlink_with_lock(const std::string& path, int fd, int own_fd) {
    struct stat ours {}, opened {};
    if (fstat(fd, &ours) != 0 || fstat(own_fd, &opened) != 0) return errno;
    if (ours.st_ino != opened.st_ino || ours.st_dev != opened.st_dev) return 0;  // another file: not ours
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = 0;
    lock.l_len = 1;
    if (::fcntl(own_fd, F_OFD_SETLK, &lock) != 0)
        return errno == EACCES ? EAGAIN : errno;  // EAGAIN, EACCES: another description holds it
    struct stat by_name {};
    if (::stat(path.c_str(), &by_name) != 0) return errno == ENOENT ? 0 : errno;
    if (by_name.st_ino != ours.st_ino || by_name.st_dev != ours.st_dev)
        return 0;  // unlinked under the lock by another, maybe re-created since
    FABRIC_PAUSE_POINT("pool.unlink.checked");
    return ::unlink(path.c_str()) == 0 || errno == ENOENT ? 0 : errno;
}
}  // namespace

int unlink_name_if_file(const std::string& path, int fd) {
    // Checking that the name still is this file and unlinking it are two calls, and several
    // processes may finish one removal (the remover, a reaper or an opener cleaning up after one
    // that died, `pool rm --force`). One paused between its check and its unlink, while another
    // unlinked the name and a new pool was created under it, would unlink the new pool: its
    // holders would go on writing into a pool nobody can open again. So every unlink of a pool's
    // name happens under an exclusive lock of the file: an open-file-description record lock
    // (F_OFD_SETLK on byte 0), through a description of our own (a handle's is shared by its
    // copies, threads and forked children; and OFD locks never collide with a user's flock of
    // the file, as scripts/run-demo.sh takes). Held by another (maybe paused) process: it is
    // unlinking this name, leave it to it. A holder killed drops its lock with its descriptors.
    // While the name is this file no new pool can take it (creation link()s, which fails on an
    // existing name), so the check stays true under the lock.
    const int own_fd = ::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (own_fd < 0) return errno == ENOENT ? 0 : errno;
    const int result = unlink_with_lock(path, fd, own_fd);
    ::close(own_fd);  // drops the lock
    return result;
}

bool unlink_if_same(const Pool::Impl& impl) { return unlink_name_if_file(impl.path, impl.fd) == 0; }

namespace {
/// CAP_FOWNER in the effective set (capget: no libcap for one bit). A failed capget says no.
bool has_cap_fowner() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
    if (::syscall(SYS_capget, &header, data) != 0) return false;
    return (data[CAP_FOWNER / 32].effective >> (CAP_FOWNER % 32)) & 1u;
}

/// Whether this process is in the initial user namespace (its uid map is the identity over
/// every id). Unknown (no /proc) is judged as another namespace: the answer that refuses more.
bool in_initial_user_namespace() {
    std::FILE* f = std::fopen("/proc/self/uid_map", "re");
    if (!f) return false;
    unsigned long inside = 1, outside = 1, count = 0;
    const int fields = std::fscanf(f, "%lu %lu %lu", &inside, &outside, &count);
    int c = std::fgetc(f);
    while (c == ' ' || c == '\n') c = std::fgetc(f);
    std::fclose(f);
    return fields == 3 && c == EOF && inside == 0 && outside == 0 && count == 4294967295ul;
}

/// The id an unmapped owner stats as in a user namespace (/proc/sys/kernel/overflow[ug]id).
unsigned long overflow_id(const char* path) {
    unsigned long id = 65534;
    if (std::FILE* f = std::fopen(path, "re")) {
        if (std::fscanf(f, "%lu", &id) != 1) id = 65534;
        std::fclose(f);
    }
    return id;
}
}  // namespace

Status may_unlink_name(const std::string& name, const std::string& path, int fd) {
    const size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    const uid_t me = uid_t(setfsuid(uid_t(-1)));  // an invalid id changes nothing and returns the current one
    const std::string what = "pool '" + name + "' cannot be removed by this process (uid " + std::to_string(me) +
                             "); nothing was changed: ";
    if (::faccessat(AT_FDCWD, dir.c_str(), W_OK | X_OK, AT_EACCESS) != 0)
        return errno_error(errno, what + "no write access to its directory " + dir);
    struct stat in_dir {}, file {};
    if (::stat(dir.c_str(), &in_dir) != 0) return errno_error(errno, "stat " + dir);
    if (fstat(fd, &file) != 0) return errno_error(errno, "stat " + path);
    if (!(in_dir.st_mode & S_ISVTX)) return {};
    // The kernel compares the ids it holds, not the ones stat shows: in a user namespace an
    // owner it does not map stats as the overflow id, which may be our own (a rootless
    // container running as nobody with the host's /dev/shm), and CAP_FOWNER there covers only
    // files whose uid and gid it maps. Such an owner proves nothing; a wrong "no" only keeps
    // the pool live.
    const bool initial = in_initial_user_namespace();
    const uid_t unmapped_uid = uid_t(overflow_id("/proc/sys/kernel/overflowuid"));
    const gid_t unmapped_gid = gid_t(overflow_id("/proc/sys/kernel/overflowgid"));
    auto owned_by_me = [&](uid_t owner) { return owner == me && (initial || owner != unmapped_uid); };
    const bool file_mapped = initial || (file.st_uid != unmapped_uid && file.st_gid != unmapped_gid);
    if (owned_by_me(file.st_uid) || owned_by_me(in_dir.st_uid) || (file_mapped && has_cap_fowner())) return {};
    auto owner_text = [&](uid_t owner) {
        return initial || owner != unmapped_uid
                   ? "uid " + std::to_string(owner)
                   : "an owner this user namespace does not map (shown as uid " + std::to_string(owner) + ")";
    };
    return make_error(Errc::permission_denied,
                      what + "its file " + path + " belongs to " + owner_text(file.st_uid) + " and " + dir +
                          " is sticky (only the file's owner, the directory's owner (" + owner_text(in_dir.st_uid) +
                          ") or a process with CAP_FOWNER over the file may unlink it)");
}

}  // namespace detail

using detail::kSegmentPrefix;
using detail::shm_dir;

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
    s.directory_entries = h.directory_entries;  // checked equal to the layout's at attach
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
    // Never past the real clock: the word only moves forward (below), so a caller's instant in
    // the future (a tick(now + 1 h) that makes every lease due) would stick, keeping a dead
    // process alive for a reaper until the clock caught up.
    const uint64_t now_ns = std::min(to_ns(now), mono_now_ns());
    auto* slot = impl_ ? impl_->my_slot() : nullptr;
    if (!slot) return check_open();
    // Stored even after close(): the registration lives until the last object or pinned view
    // goes, and a view's pin is only as safe as the heartbeat that keeps its owner alive
    // (a heartbeat timeout is how other pid namespaces judge us).
    // Forward only: threads heartbeat at once (lock waits, the renewal tick, members), and a
    // thread descheduled between its clock read and its store must not put back an instant a
    // reaper would judge stale. Relaxed: the word is a clock reading, read by reapers alone.
    uint64_t seen = slot->heartbeat_ns.load(std::memory_order_relaxed);
    while (int64_t(now_ns - seen) > 0 &&
           !slot->heartbeat_ns.compare_exchange_weak(seen, now_ns, std::memory_order_relaxed)) {
    }
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
namespace {
/// The thread of this process that owns the single-writer half of its counter shards: the
/// first thread that counts (0: none yet). Compared with pthread_self() (no TLS lookup on the
/// hot path). A forked child inherits the value, but only the forking thread runs there, so
/// there is still at most one writer; a thread that later reuses the id of an exited owner
/// simply continues as the one writer.
std::atomic<pthread_t> g_counting_thread{};
static_assert(std::atomic<pthread_t>::is_always_lock_free, "compared on every count");
bool counting_thread() noexcept {
    const pthread_t me = pthread_self();
    pthread_t owner = g_counting_thread.load(std::memory_order_relaxed);  // relaxed: picks a writer only
    if (owner == me) return true;
    if (owner != pthread_t{}) return false;
    return g_counting_thread.compare_exchange_strong(owner, me, std::memory_order_relaxed);
}
}  // namespace

namespace {
/// Adds `n` to counter `id` of `slot`: in the single-writer half when `single` (this thread is
/// the process's counting thread), else in the shared half.
void add_to(layout::ProcessSlot& slot, bool single, CounterId id, uint64_t n) noexcept {
    if (single) {
        // One writer (this thread) while the process lives; readers and the retirer's fold
        // (after the process is gone, or at its own exit) are relaxed. No locked instruction.
        std::atomic<uint64_t>& c = slot.counters[uint32_t(id)];
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    } else {
        slot.counters[kCounterSharedCells + uint32_t(id)].fetch_add(n, std::memory_order_relaxed);
    }
}
}  // namespace

void count(const Pool& pool, CounterId id, uint64_t n) noexcept {
    static_assert(uint32_t(CounterId::count_) <= kCounterSharedCells, "each counter has a cell in both halves");
    auto* slot = PoolAccess::impl(pool).my_slot();
    if (!slot || uint32_t(id) >= kCounterSharedCells) return;
    add_to(*slot, counting_thread(), id, n);
}

void count(const Pool& pool, CounterId a, uint64_t na, CounterId b, uint64_t nb) noexcept {
    auto* slot = PoolAccess::impl(pool).my_slot();
    if (!slot || uint32_t(a) >= kCounterSharedCells || uint32_t(b) >= kCounterSharedCells) return;
    const bool single = counting_thread();
    add_to(*slot, single, a, na);
    add_to(*slot, single, b, nb);
}
}  // namespace detail

std::string Pool::lifecycle() const {
    if (closed()) return "closed";
    switch (lifecycle_state(impl_->header()->lifecycle.load(std::memory_order_acquire))) {
    case kPoolLive: return "live";
    case kPoolReclaiming: return "reclaiming";
    case kPoolGone: return "gone";
    default: return "unknown";
    }
}

}  // namespace fabric_shm
