// SPDX-License-Identifier: MIT
// Permissions and names. Mode bits on the segment are the only access control, so:
//  - a 0600 pool made by root cannot be attached (read-write or read-only) or removed by a
//    process that dropped to uid/gid 65534 BEFORE attaching: Errc::permission_denied with a
//    message naming the pool, and the segment is byte-for-byte unchanged (same mtime too);
//  - a 0666 pool, and a 0660 pool whose group is the child's, are attachable by that child;
//  - names with '/', "..", NUL, control characters or more than 64 characters are refused
//    with invalid_name before any syscall: no file appears, nothing outside the directory
//    is touched even where a traversal would resolve, and pointing $FABRIC_SHM_DIR at a
//    directory that does not exist does not change the error.
// The uid tests need root (to drop privileges); they are skipped with a message otherwise.
#include <doctest/doctest.h>
#include <dirent.h>
#include <grp.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "../support/test_support.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/names.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/registry.h"

using namespace fabric_shm;
using namespace std::chrono_literals;

namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

std::vector<char> read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// In a forked child: drop every privilege to uid/gid 65534 (supplementary groups too).
bool drop_to_nobody() {
    if (setgroups(0, nullptr) != 0 || setgid(kNogroup) != 0 || setuid(kNobody) != 0) return false;
    return getuid() == kNobody && geteuid() == kNobody && getgid() == kNogroup && setuid(0) != 0;
}

/// Child exit codes, named in the failure message.
const char* child_reason(int rc) {
    switch (rc) {
        case 0: return "ok";
        case 20: return "could not drop to uid 65534";
        case 21: return "read-write open was not refused with permission_denied";
        case 22: return "read-only open was not refused with permission_denied";
        case 23: return "the refusal message does not name the pool and 'permission denied'";
        case 24: return "pool remove --force was not refused";
        case 25: return "open failed for a pool the child may attach";
        case 26: return "could not create a region in an attachable pool";
        case 27: return "a removal it may not finish was not refused with permission_denied";
        case 28: return "the refusal does not name the pool, its owner and the sticky directory";
        case 29: return "could not attach to the expired pool to reap it";
        case 30: return "the reap reported the pool removed, or did not say why it was left";
        case 31: return "could not enter a user namespace mapping only uid/gid 65534";
        case 32: return "open-or-create of an expired pool it may not remove did not say permission_denied at once";
        case 33: return "could not mount a /proc that hides other uids' processes (hidepid=2) in a mount namespace";
        case 34: return "the mounted /proc still shows the parent's process to uid 65534";
        case 35: return "could not attach to the shared pool, or its reap failed";
        default: return "crashed or unexpected exit";
    }
}

Pool make_pool(const std::string& name, uint32_t mode) {
    PoolOptions o;
    o.name = name;
    o.size_bytes = kMinPoolSize;
    o.mode = mode;
    auto p = Pool::create(o);
    REQUIRE_MESSAGE(p, p.error().message);
    return std::move(p.value());
}

std::vector<std::string> list_dir(const std::string& dir) {
    std::vector<std::string> names;
    if (DIR* d = opendir(dir.c_str())) {
        while (dirent* e = readdir(d))
            if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") names.push_back(e->d_name);
        closedir(d);
    }
    return names;
}

/// Sets $FABRIC_SHM_DIR for one scope and restores the previous value.
class ShmDirOverride {
public:
    explicit ShmDirOverride(const std::string& dir) {
        if (const char* v = std::getenv("FABRIC_SHM_DIR")) old_ = v, had_ = true;
        setenv("FABRIC_SHM_DIR", dir.c_str(), 1);
    }
    ~ShmDirOverride() {
        if (had_) setenv("FABRIC_SHM_DIR", old_.c_str(), 1);
        else unsetenv("FABRIC_SHM_DIR");
    }

private:
    std::string old_;
    bool had_ = false;
};

}  // namespace

TEST_CASE("permissions: a 0600 pool refuses another uid with permission_denied and stays unchanged") {
    if (getuid() != 0) {
        MESSAGE("skipped: dropping to uid 65534 needs root");
        return;
    }
    const std::string name = test::unique_pool_name("perm600");
    test::PoolCleanup cleanup(name);
    Pool pool = make_pool(name, 0600);
    RegionSpec spec;
    spec.name = "owned";
    spec.length = 4096;
    auto region = pool.create_region(spec);
    REQUIRE(region);
    const std::string path = Pool::segment_path(name);
    struct stat before {};
    REQUIRE(::stat(path.c_str(), &before) == 0);
    CHECK((before.st_mode & 0777) == 0600);
    const std::vector<char> bytes_before = read_file(path);

    const pid_t child = test::fork_child([&] {
        if (!drop_to_nobody()) return 20;
        auto rw = Pool::open(name);
        if (rw || rw.code() != Errc::permission_denied) {
            std::fprintf(stderr, "read-write open: %s\n", rw ? "succeeded" : rw.error().message.c_str());
            return 21;
        }
        const std::string& msg = rw.error().message;
        if (msg.find(name) == std::string::npos || msg.find("permission denied") == std::string::npos) {
            std::fprintf(stderr, "message: %s\n", msg.c_str());
            return 23;
        }
        OpenOptions ro;
        ro.read_only = true;
        auto r = Pool::open(name, ro);
        if (r || r.code() != Errc::permission_denied) return 22;
        if (Pool::remove(name, /*force=*/true)) return 24;
        return 0;
    });
    const int rc = test::wait_child(child);
    CHECK_MESSAGE(rc == 0, "child: " << std::string(child_reason(rc)) << " (exit " << rc << ")");

    struct stat after {};
    REQUIRE_MESSAGE(::stat(path.c_str(), &after) == 0, "the segment was removed by the refused process");
    CHECK(after.st_mtim.tv_sec == before.st_mtim.tv_sec);
    CHECK(after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
    CHECK(after.st_size == before.st_size);
    CHECK(after.st_uid == before.st_uid);
    CHECK((after.st_mode & 0777) == 0600);
    CHECK_MESSAGE(read_file(path) == bytes_before, "the segment's bytes changed");
    CHECK(region->check().ok());
}

TEST_CASE("permissions: a 0666 pool and a 0660 pool of the child's group are attachable after dropping privileges") {
    if (getuid() != 0) {
        MESSAGE("skipped: dropping to uid 65534 needs root");
        return;
    }
    struct Case {
        uint32_t mode;
        gid_t group;
        bool attachable;
    };
    for (const Case c : {Case{0666, 0, true}, Case{0660, kNogroup, true}, Case{0660, 0, false}, Case{0640, kNogroup, false}}) {
        CAPTURE(c.mode);
        CAPTURE(c.group);
        const std::string name = test::unique_pool_name("perm" + std::to_string(c.mode));
        test::PoolCleanup cleanup(name);
        Pool pool = make_pool(name, c.mode);
        REQUIRE(::chown(Pool::segment_path(name).c_str(), uid_t(-1), c.group) == 0);
        const pid_t child = test::fork_child([&] {
            if (!drop_to_nobody()) return 20;
            auto p = Pool::open(name);
            if (!c.attachable) return !p && p.code() == Errc::permission_denied ? 0 : 21;
            if (!p) {
                std::fprintf(stderr, "open: %s\n", p.error().message.c_str());
                return 25;
            }
            RegionSpec spec;
            spec.name = "from-nobody";
            spec.length = 4096;
            auto r = p->create_region(spec);
            if (!r) {
                std::fprintf(stderr, "create_region: %s\n", r.error().message.c_str());
                return 26;
            }
            return 0;
        });
        const int rc = test::wait_child(child);
        CHECK_MESSAGE(rc == 0, "child: " << std::string(child_reason(rc)) << " (exit " << rc << ")");
        if (c.attachable) {
            auto r = pool.open_region(RegionKind::test, "from-nobody");
            CHECK_MESSAGE(r, "the region the dropped child created is not visible");
        }
    }
}

/// In a forked child: a mount namespace of its own whose /proc hides other uids' processes
/// (hidepid=2, what systemd's ProtectProc=invisible sets for a service); 0 or an exit code.
int mount_hiding_proc() {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2") != 0)
        return 33;
    return 0;
}

TEST_CASE("permissions: where /proc hides other uids' processes (hidepid=2), a reaper of another uid judges a "
          "live process maybe alive and leaves its registration and regions, and retires a dead one's") {
    if (getuid() != 0) {
        MESSAGE("skipped: mounting /proc and dropping to uid 65534 need root");
        return;
    }
    const std::string name = test::unique_pool_name("hidepid");
    test::PoolCleanup cleanup(name);
    Pool pool = make_pool(name, 0666);
    RegionSpec spec;
    spec.name = "roots";
    spec.length = 4096;
    auto region = pool.create_region(spec);
    REQUIRE_MESSAGE(region, region.error().message);
    // And a process of root that died registered, not yet reaped by its parent: a zombie,
    // which the hidden /proc does not show either.
    const pid_t zombie = test::fork_child([&] {
        auto* leaked = new Pool(Pool::open(name).value());  // exits registered
        (void)leaked;
        return 0;
    });
    for (int i = 0; i < 2000 && !probe_pid(uint32_t(zombie)).zombie; ++i) ::usleep(1000);
    REQUIRE(probe_pid(uint32_t(zombie)).zombie);
    auto registered = [&](pid_t pid) {
        for (const ProcessInfo& p : pool.registry().list(MonoClock::now()))
            if (p.pid == uint32_t(pid) && !p.fenced) return true;
        return false;
    };
    REQUIRE(registered(zombie));
    const pid_t parent = ::getpid();
    const pid_t child = test::fork_child([&] {
        if (const int rc = mount_hiding_proc(); rc != 0) return rc;
        if (!drop_to_nobody()) return 20;
        const std::string stat_path = "/proc/" + std::to_string(parent) + "/stat";
        const int fd = ::open(stat_path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT) return 34;  // the case under test: the parent looks gone
        auto p = Pool::open(name);  // an open reaps dead registrations
        if (!p) return 35;
        (void)p->reap(MonoClock::now());
        return 0;
    });
    const int rc = test::wait_child(child);
    if (rc == 33) {
        MESSAGE("skipped: this kernel or container does not let root mount a hiding /proc");
        return;
    }
    REQUIRE_MESSAGE(rc == 0, "child: " << std::string(child_reason(rc)) << " (exit " << rc << ")");
    CHECK_MESSAGE(pool.heartbeat().ok(), "the parent's registration was retired by a reaper that could not see it");
    CHECK(region->check().ok());
    CHECK(pool.open_region(RegionKind::test, "roots").ok());
    CHECK_MESSAGE(!registered(zombie), "the dead process's registration was kept");
    CHECK(test::wait_child(zombie) == 0);
}

/// Whether the pools' directory is sticky (/dev/shm is): only then may another uid attach to a
/// 0666 pool but not unlink its name.
bool shm_dir_is_sticky() {
    const std::string path = Pool::segment_path("x");
    struct stat st {};
    return ::stat(path.substr(0, path.rfind('/')).c_str(), &st) == 0 && (st.st_mode & S_ISVTX);
}

/// Whether this run can test another uid's removal of a pool (root, to drop to uid 65534, and
/// a sticky pool directory); says why not.
bool can_test_foreign_unlink() {
    if (getuid() == 0 && shm_dir_is_sticky()) return true;
    MESSAGE("skipped: needs root (to drop to uid 65534) and a sticky pool directory");
    return false;
}

/// A refused removal marked nothing: the pool stays live and its holder creates a region.
void check_pool_goes_on(Pool& pool) {
    CHECK(pool.lifecycle() == "live");
    RegionSpec spec;
    spec.name = "after-refusal";
    spec.length = 4096;
    auto region = pool.create_region(spec);
    CHECK_MESSAGE(region, region.error().message);
}

TEST_CASE("permissions: a uid that may not unlink a shared pool's name is refused before the pool is marked, and "
          "its holders go on") {
    if (!can_test_foreign_unlink()) return;
    const std::string name = test::unique_pool_name("permrm");
    test::PoolCleanup cleanup(name);
    Pool pool = make_pool(name, 0666);
    const pid_t child = test::fork_child([&] {
        if (!drop_to_nobody()) return 20;
        // --force: the holder (this test) is live, and the refusal must not depend on that.
        const Status removed = Pool::remove(name, /*force=*/true);
        if (removed.ok() || removed.code() != Errc::permission_denied) {
            std::fprintf(stderr, "remove: %s\n", removed.ok() ? "succeeded" : removed.error().message.c_str());
            return 27;
        }
        const std::string& msg = removed.error().message;
        if (msg.find(name) == std::string::npos || msg.find("sticky") == std::string::npos ||
            msg.find("uid 0") == std::string::npos) {
            std::fprintf(stderr, "message: %s\n", msg.c_str());
            return 28;
        }
        return 0;
    });
    const int rc = test::wait_child(child);
    CHECK_MESSAGE(rc == 0, "child: " << std::string(child_reason(rc)) << " (exit " << rc << ")");
    // Not marked: the holder goes on, and the name still opens the same pool.
    check_pool_goes_on(pool);
    auto again = Pool::open(name);
    REQUIRE_MESSAGE(again, again.error().message);
    CHECK(again->settings().incarnation == pool.settings().incarnation);
}

TEST_CASE("permissions: a reaper that may not unlink an expired shared pool's name leaves it live for one that may") {
    if (!can_test_foreign_unlink()) return;
    const std::string name = test::unique_pool_name("permreap");
    test::PoolCleanup cleanup(name);
    {
        PoolOptions o;
        o.name = name;
        o.size_bytes = kMinPoolSize;
        o.mode = 0666;
        o.ttl = 100ms;
        auto created = Pool::create(o);
        REQUIRE_MESSAGE(created, created.error().message);
    }
    usleep(200 * 1000);  // the pool's lease runs out (nothing renews it once its handle closed)
    OpenOptions expired;
    expired.allow_expired = true;
    expired.reap_on_open = false;
    const pid_t child = test::fork_child([&] {
        if (!drop_to_nobody()) return 20;
        auto p = Pool::open(name, expired);
        if (!p) {
            std::fprintf(stderr, "open: %s\n", p.error().message.c_str());
            return 29;
        }
        // A dry run says what the pass will do (it used to say "would remove").
        const ReapReport dry = p->reap(MonoClock::now(), /*dry_run=*/true);
        bool dry_said = false;
        for (const std::string& note : dry.notes) dry_said = dry_said || note.find("would be left") != std::string::npos;
        if (dry.pool_removed || !dry_said) {
            for (const std::string& note : dry.notes) std::fprintf(stderr, "dry-run note: %s\n", note.c_str());
            return 30;
        }
        const ReapReport report = p->reap(MonoClock::now());
        bool said = false;
        for (const std::string& note : report.notes)
            said = said || (note.find("left to a process that may remove it") != std::string::npos &&
                            note.find("sticky") != std::string::npos);
        if (report.pool_removed || !said) {
            for (const std::string& note : report.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
            return 30;
        }
        // Open-or-create of the name says why at once (it used to retry 50 times and then
        // report the pool as "kept changing").
        OpenOptions create;
        create.create_if_missing = true;
        auto reopened = Pool::open(name, create);
        if (reopened || reopened.code() != Errc::permission_denied ||
            reopened.error().message.find("expired") == std::string::npos) {
            std::fprintf(stderr, "open-or-create: %s\n", reopened ? "succeeded" : reopened.error().message.c_str());
            return 32;
        }
        return 0;
    });
    const int rc = test::wait_child(child);
    CHECK_MESSAGE(rc == 0, "child: " << std::string(child_reason(rc)) << " (exit " << rc << ")");
    auto p = Pool::open(name, expired);
    REQUIRE_MESSAGE(p, p.error().message);
    CHECK(p->lifecycle() == "live");
    const ReapReport report = p->reap(MonoClock::now());  // its owner's reaper removes it
    CHECK(report.pool_removed);
    struct stat st {};
    CHECK(::stat(Pool::segment_path(name).c_str(), &st) != 0);
}

/// Enters a new user namespace that maps only 65534 (this process's uid and gid) to itself, as
/// a rootless container running as `nobody` with the host's /dev/shm does: every file of an
/// unmapped owner (root's pools, /dev/shm itself) then stats as uid 65534, the overflow uid.
bool enter_userns_mapping_only_nobody() {
    // Dropping uids made this process non-dumpable, its /proc/self files root's: writable again.
    if (prctl(PR_SET_DUMPABLE, 1) != 0 || unshare(CLONE_NEWUSER) != 0) return false;
    auto write_file = [](const char* path, const std::string& text) {
        const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) return false;
        const bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
        ::close(fd);
        return ok;
    };
    return write_file("/proc/self/setgroups", "deny") && write_file("/proc/self/uid_map", "65534 65534 1\n") &&
           write_file("/proc/self/gid_map", "65534 65534 1\n") && geteuid() == kNobody;
}

TEST_CASE("permissions: in a user namespace where the pool's owner is unmapped (it stats as the overflow uid), a "
          "uid that may not unlink the name is still refused before the pool is marked") {
    if (!can_test_foreign_unlink()) return;
    const std::string name = test::unique_pool_name("permns");
    test::PoolCleanup cleanup(name);
    Pool pool = make_pool(name, 0666);  // owned by uid 0: unmapped in the child's namespace
    const pid_t child = test::fork_child([&] {
        if (!drop_to_nobody()) return 20;
        if (!enter_userns_mapping_only_nobody()) return 31;
        const Status removed = Pool::remove(name, /*force=*/true);
        if (removed.ok() || removed.code() != Errc::permission_denied ||
            removed.error().message.find("nothing was changed") == std::string::npos) {
            std::fprintf(stderr, "remove: %s\n", removed.ok() ? "succeeded" : removed.error().message.c_str());
            return 27;
        }
        return 0;
    });
    const int rc = test::wait_child(child);
    if (rc == 31) {
        MESSAGE("skipped: this kernel refuses an unprivileged user namespace");
        return;
    }
    CHECK_MESSAGE(rc == 0, "child: " << std::string(child_reason(rc)) << " (exit " << rc << ")");
    check_pool_goes_on(pool);  // "gone" while the name stays, had the check trusted the overflow uid
}

TEST_CASE("names: '/', '..', NUL, control characters and over-long names are refused before any syscall") {
    char tmpl[] = "/dev/shm/fabric-rel-names-XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    const std::string top = tmpl;
    const std::string dir = top + "/shm";
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    // Make traversals resolvable: dir/fabric-shm.x/../../escape would be top/escape.
    REQUIRE(::mkdir((dir + "/fabric-shm.x").c_str(), 0700) == 0);
    REQUIRE(::mkdir((dir + "/fabric-shm.").c_str(), 0700) == 0);

    const std::vector<std::string> bad = {
        "a/b", "x/../../escape", "..", "../escape", ".", "./x", "/abs", "x/", std::string("a\0b", 3),
        std::string("\0", 1), "a\nb", "tab\there", "sp ace", std::string(65, 'n'), std::string(4096, 'n'), "",
        "-dash", ".hidden", "\xc3\xa4", "x/../../../../../../tmp/escape",
    };
    for (const std::string& shm_dir : {dir, top + "/does-not-exist"}) {
        ShmDirOverride override_dir(shm_dir);
        for (const std::string& n : bad) {
            CAPTURE(n);
            CAPTURE(shm_dir);
            PoolOptions po;
            po.name = n;
            po.size_bytes = kMinPoolSize;
            CHECK(Pool::create(po).code() == Errc::invalid_name);
            CHECK(Pool::open(n).code() == Errc::invalid_name);
            OpenOptions oo;
            oo.create_if_missing = true;
            CHECK(Pool::open(n, oo).code() == Errc::invalid_name);
            oo.read_only = true;
            CHECK(Pool::open(n, oo).code() == Errc::invalid_name);
            CHECK(Pool::remove(n, /*force=*/true).code() == Errc::invalid_name);
            CHECK(FabricUri::make(n, "b", "k").code() != Errc::ok);
            CHECK(FabricUri::make("p", n, "k").code() != Errc::ok);
            // (With a '/', "fabric://a/b/b/k" is a different, valid URI: pool a, bucket b.)
            if (n.find('/') == std::string::npos) CHECK(FabricUri::parse("fabric://" + n + "/b/k").code() != Errc::ok);
            Status s = validate_name("pool", n);
            CHECK(s.code() == Errc::invalid_name);
            CHECK(!s.error().message.empty());
        }
    }
    {
        // A store name goes through the same rule (a store is a region named after it).
        ShmDirOverride override_dir(dir);
        Pool pool = make_pool("ok", 0600);
        const size_t regions_before = pool.regions().size();
        for (const std::string& n : bad) {
            CAPTURE(n);
            StoreConfig cfg;
            cfg.name = n;
            auto store = MemObjectStore::open(pool, cfg);
            CHECK(store.code() == Errc::invalid_name);
            CHECK(MemObjectStore::attach(pool, n).code() == Errc::invalid_name);
        }
        CHECK(pool.regions().size() == regions_before);
    }
    // Nothing was created anywhere: only the two directories made above, both still empty,
    // the valid pool "ok" (now closed), and nothing next to or above them.
    std::vector<std::string> in_dir = list_dir(dir);
    std::sort(in_dir.begin(), in_dir.end());
    CHECK(in_dir == std::vector<std::string>{"fabric-shm.", "fabric-shm.ok", "fabric-shm.x"});
    CHECK(list_dir(dir + "/fabric-shm.x").empty());
    CHECK(list_dir(dir + "/fabric-shm.").empty());
    CHECK(list_dir(top) == std::vector<std::string>{"shm"});
    struct stat st {};
    CHECK(::stat("/tmp/escape", &st) != 0);

    ::unlink((dir + "/fabric-shm.ok").c_str());
    ::rmdir((dir + "/fabric-shm.x").c_str());
    ::rmdir((dir + "/fabric-shm.").c_str());
    ::rmdir(dir.c_str());
    ::rmdir(top.c_str());
}
