// SPDX-License-Identifier: MIT
// MemOffsetStore (the in-pool group table) and FileOffsetStore (a double-buffered record
// file with CRC-32, so a torn write leaves the previous commit readable).
#include "fabric_shm/offset_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <isa-l/crc.h>

#include "fabric_shm/clock.h"
#include "fabric_shm/names.h"
#include "mq/topic_internal.h"

namespace fabric_shm {

using namespace mq;

// ---- MemOffsetStore ---------------------------------------------------------------------

Result<FetchedOffset> MemOffsetStore::fetch(std::string_view topic, uint64_t incarnation, std::string_view group,
                                            uint32_t partition) {
    auto t = open_topic(pool_, topic);
    if (!t) return std::move(t).error();
    FetchedOffset f;
    if ((*t)->incarnation != incarnation) {
        f.incarnation_mismatch = true;
        return f;
    }
    if (partition >= (*t)->num_partitions)
        return make_error(Errc::invalid_argument, "partition " + std::to_string(partition) + " out of range");
    const int idx = find_group(**t, group);
    if (idx < 0) return f;
    const GroupPartition& gp = (*t)->groups[idx].parts[partition];
    f.offset = gp.committed.load(std::memory_order_acquire);  // pairs with commit_in_pool's store
    f.epoch = gp.commit_epoch.load(std::memory_order_relaxed);
    return f;
}

Status MemOffsetStore::commit(std::string_view topic, uint64_t incarnation, std::string_view group,
                              std::span<const OffsetCommit> commits) {
    auto t = open_topic(pool_, topic);
    if (!t) return std::move(t).error();
    if ((*t)->incarnation != incarnation)
        return make_error(Errc::stale_generation, "topic '" + std::string(topic) +
                                                      "' was re-created since these offsets were read");
    uint64_t word = 0;
    const int idx = find_group(**t, group, &word);
    if (idx < 0)
        return make_error(Errc::not_found, "group '" + std::string(group) + "' is not registered on topic '" +
                                               std::string(topic) + "'");
    return commit_in_pool(**t, GroupRef{idx, word}, group, commits);
}

// ---- FileOffsetStore --------------------------------------------------------------------

namespace {

constexpr uint64_t kFileMagic = 0x5346464f42414600ULL;  ///< "\0FABOFFS"
constexpr uint32_t kFileVersion = 1;
constexpr uint64_t kRecordBytes = 4096;  ///< one page per copy: a torn write hits one copy

struct FileEntry {
    uint32_t partition;
    uint32_t valid;  ///< 1 when committed
    uint64_t offset;
    uint64_t epoch;
};
static_assert(sizeof(FileEntry) == 24, "offset files written by one build are read by another");

struct FileRecord {
    uint64_t magic;
    uint32_t version;
    uint32_t count;  ///< entries used
    uint64_t seq;    ///< higher = newer; the commit writes copy seq % 2
    uint64_t incarnation;
    uint64_t written_wall_ns;
    char topic[72];
    char group[72];
    FileEntry entries[kMaxPartitions];
    uint32_t crc;  ///< CRC-32 (gzip) of every byte before this field
    uint32_t pad;
};
static_assert(sizeof(FileRecord) <= kRecordBytes, "one record copy per page: a torn write damages one copy only");
static_assert(offsetof(FileRecord, entries) == 184, "offset files written by one build are read by another");

uint32_t record_crc(const FileRecord& r) {
    return crc32_gzip_refl(0, reinterpret_cast<const unsigned char*>(&r), offsetof(FileRecord, crc));
}

/// A copy is used only when whole and well-formed: its CRC matches (not torn), and its entries
/// name distinct partitions below kMaxPartitions (a file is input like any other: a record
/// written by hand or by a faulty program may carry a valid CRC). Distinct partitions bound
/// what a commit adds: a partition not found among `count` entries leaves room for its own.
bool record_valid(const FileRecord& r) {
    if (r.magic != kFileMagic || r.version != kFileVersion || r.count > kMaxPartitions || record_crc(r) != r.crc)
        return false;
    static_assert(kMaxPartitions <= 64, "one bit per partition in `seen`");
    uint64_t seen = 0;
    for (uint32_t i = 0; i < r.count; ++i) {
        const FileEntry& e = r.entries[i];
        if (e.partition >= kMaxPartitions || e.valid > 1 || (seen >> e.partition & 1)) return false;
        seen |= uint64_t(1) << e.partition;
    }
    return true;
}

struct FdGuard {
    int fd = -1;
    ~FdGuard() {
        if (fd >= 0) ::close(fd);
    }
};

/// Newest valid copy, or nothing.
bool read_newest(int fd, FileRecord* out) {
    bool found = false;
    for (int i = 0; i < 2; ++i) {
        FileRecord r{};
        const ssize_t n = ::pread(fd, &r, sizeof r, off_t(i * kRecordBytes));
        if (n != ssize_t(sizeof r) || !record_valid(r)) continue;
        if (!found || r.seq > out->seq) *out = r;
        found = true;
    }
    return found;
}

}  // namespace

std::string FileOffsetStore::path(std::string_view topic, std::string_view group) const {
    return directory_ + "/" + std::string(topic) + "." + std::string(group) + ".offsets";
}

Result<FetchedOffset> FileOffsetStore::fetch(std::string_view topic, uint64_t incarnation, std::string_view group,
                                             uint32_t partition) {
    FABRIC_TRY(validate_name("topic", topic));
    FABRIC_TRY(validate_name("group", group));
    FetchedOffset f;
    const std::string p = path(topic, group);
    FdGuard g{::open(p.c_str(), O_RDONLY | O_CLOEXEC)};
    if (g.fd < 0) {
        if (errno == ENOENT) return f;
        return errno_error(errno, "open " + p);
    }
    FileRecord r{};
    if (!read_newest(g.fd, &r)) return f;  // nothing valid: as if never committed
    if (r.incarnation != incarnation) {
        f.incarnation_mismatch = true;
        return f;
    }
    for (uint32_t i = 0; i < r.count; ++i)
        if (r.entries[i].partition == partition && r.entries[i].valid == 1) {
            f.offset = r.entries[i].offset;
            f.epoch = r.entries[i].epoch;
        }
    return f;
}

namespace {
/// The file's lock for one commit. The kernel drops a dead holder's lock with its descriptor,
/// so only a live holder is waited for; one stopped while it holds the lock (SIGSTOP,
/// preemption) must not hold every other committer, and its heartbeats, for as long as it
/// stays stopped: past kOffsetFileLockWaitNs the commit is refused as busy, as a group lock
/// held by a stopped process refuses it. A holder's section includes its fdatasync, so a
/// slow disk can make a live holder take that long too. The caller's in-pool commit went
/// first (Consumer::commit); committing again later is safe and writes newer offsets.
Status lock_offset_file(int fd, const std::string& path) {
    const uint64_t deadline = mono_now_ns() + kOffsetFileLockWaitNs;
    for (uint64_t nap_ns = 20'000;; nap_ns = std::min<uint64_t>(nap_ns * 2, 2'000'000)) {
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return {};
        if (errno != EWOULDBLOCK && errno != EINTR) return errno_error(errno, "flock " + path);
        if (mono_now_ns() >= deadline)
            return make_error(Errc::busy, "offset file " + path + " was locked by another committer for " +
                                              format_duration_ns(kOffsetFileLockWaitNs) +
                                              " (a stopped process, or a slow fdatasync); nothing was written, commit again later");
        const timespec ts{0, long(nap_ns)};
        nanosleep(&ts, nullptr);
    }
}
}  // namespace

// fsync policy: FsyncPolicy::on_checkpoint and every_write call fdatasync after writing the record copy (and fsyncs
// the directory when the file was created), so an acknowledged commit survives power loss;
// FsyncPolicy::never leaves it to the page cache (survives process crashes only). Either way
// a torn write can only damage the copy being written; the other copy stays valid.
Status FileOffsetStore::commit(std::string_view topic, uint64_t incarnation, std::string_view group,
                               std::span<const OffsetCommit> commits) {
    FABRIC_TRY(validate_name("topic", topic));
    FABRIC_TRY(validate_name("group", group));
    const std::string p = path(topic, group);
    bool created = false;
    FdGuard g{::open(p.c_str(), O_RDWR | O_CLOEXEC)};
    if (g.fd < 0 && errno == ENOENT) {
        g.fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        created = true;
    }
    if (g.fd < 0) return errno_error(errno, "open " + p);
    FABRIC_TRY(lock_offset_file(g.fd, p));  // released by close
    FileRecord cur{};
    const bool have = read_newest(g.fd, &cur);
    FileRecord next{};
    next.magic = kFileMagic;
    next.version = kFileVersion;
    next.seq = have ? cur.seq + 1 : 1;
    next.incarnation = incarnation;
    next.written_wall_ns = wall_now_ns();
    std::memcpy(next.topic, topic.data(), std::min(topic.size(), sizeof next.topic - 1));
    std::memcpy(next.group, group.data(), std::min(group.size(), sizeof next.group - 1));
    if (have && cur.incarnation == incarnation) {  // another incarnation's offsets are dropped
        next.count = cur.count;
        std::memcpy(next.entries, cur.entries, sizeof next.entries);
    }
    for (const OffsetCommit& c : commits) {
        if (c.partition >= kMaxPartitions)
            return make_error(Errc::invalid_argument, "partition " + std::to_string(c.partition) + " >= " +
                                                          std::to_string(kMaxPartitions));
        FileEntry* e = nullptr;
        for (uint32_t i = 0; i < next.count; ++i)
            if (next.entries[i].partition == c.partition) e = &next.entries[i];
        if (e && e->valid == 1 && c.epoch < e->epoch)
            return make_error(Errc::stale_epoch, "commit to " + p + " partition " + std::to_string(c.partition) +
                                                     " under epoch " + std::to_string(c.epoch) + " < stored epoch " +
                                                     std::to_string(e->epoch));
        if (!e) {
            if (next.count >= kMaxPartitions)  // distinct partitions below the bound (record_valid)
                return make_error(Errc::corrupt, "offset file " + p + ": no entry left for partition " +
                                                     std::to_string(c.partition));
            e = &next.entries[next.count++];
        }
        *e = FileEntry{c.partition, 1, c.offset, c.epoch};
    }
    next.crc = record_crc(next);
    const off_t at = off_t((next.seq % 2) * kRecordBytes);
    const ssize_t n = ::pwrite(g.fd, &next, sizeof next, at);
    if (n != ssize_t(sizeof next)) return errno_error(n < 0 ? errno : EIO, "write " + p);
    if (fsync_ != FsyncPolicy::never) {
        if (::fdatasync(g.fd) != 0) return errno_error(errno, "fdatasync " + p);
        // The directory entry, by whoever writes the first record (not only the creator: it
        // may have died, or given up on the lock, before its own sync).
        if (created || !have) {
            FdGuard d{::open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
            if (d.fd >= 0) (void)::fsync(d.fd);
        }
    }
    return {};
}

}  // namespace fabric_shm
