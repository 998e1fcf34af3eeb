// SPDX-License-Identifier: MIT
// TieredObjectStore: a MemObjectStore (hot, in the pool) in front of a cold tier made of an
// append-only, CRC-checked record log plus a checkpointed index, in a directory.
//
// Cold directory:
//   LOCK             flock(LOCK_EX) by the one open store; holds the holder's pid (text)
//   cold.<G>.log     records, appended; G = log generation, bumped by compaction
//   cold.index       the checkpoint: log generation, covered length, entries (whole-file CRC)
//   cold.index.tmp   a checkpoint being written (renamed over cold.index when complete)
//
// A record is [RecordHeader 64 B][key][meta][payload][zero pad to 8]. header_crc covers the
// header (with header_crc = 0), key and meta; data_crc covers the payload and is the object's
// CRC-32. A record is valid only if magic, format, type, lengths (bounded by the file size)
// and both CRCs check, so a torn write (any prefix of the record, or flipped bytes) is never
// served: reads of indexed records fail with Errc::corrupt, and the open-time replay of the
// log tail stops at the first invalid record and cuts the file there.
//
// Ordering that keeps every acknowledged object somewhere readable:
//   demote:  append cold record -> [fdatasync if every_write] -> index it -> remove hot copy
//   promote: put hot copy (same tier version) -> keep the cold copy (demoting it again later
//            costs no write while the version is unchanged)
//   overwrite/remove of a key with a cold copy: tombstone record appended first, so a stale
//            cold version never resurfaces after the hot copy is lost with the pool.
//   remove of a key with only a hot copy: the store-wide floor record appended first (when
//            the version is above the floor), so a later owner never reuses the version.
//   remove of a key whose cold copy expired: the store floor raised to its version first.
//   a tracked hot copy found gone (its TTL ran out) by a put, remove, demotion or checkpoint:
//            the store floor raised to the version the store tracked for it, before the key
//            is forgotten; a checkpoint lists hot keys with those versions for the next open.
//   compaction: the per-key floors and the versions of the records it drops (expired,
//            damaged) are folded into the store floor it writes at the head of the new log.
//   checkpoint: [include_hot copies] -> [compact to cold.<G+1>.log] -> fdatasync log ->
//            write cold.index.tmp -> fsync -> rename -> fsync dir -> unlink old log
// A process killed at any step leaves either the hot copy, the cold copy, or both.
#include "fabric_shm/tiered_object_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>

#include "fabric_shm/clock.h"
#include "fabric_shm/counters.h"
#include "crash_point.h"
#include "fabric_shm/names.h"
#include "pool_impl.h"

namespace fabric_shm {
namespace {

constexpr uint32_t kRecordMagic = 0x52435346;  // "FSCR" little-endian
constexpr uint32_t kIndexMagic = 0x49435346;   // "FSCI"
constexpr uint16_t kFormat = 1;
constexpr uint16_t kTypeObject = 1;
constexpr uint16_t kTypeTombstone = 2;
constexpr uint32_t kMaxObjectKeyBytes = 2 * kMaxNameLength + 1 + kMaxKeyLength + 8;
constexpr uint32_t kMaxMetaBytes = 4 + kMaxContentTypeLength + 4 * 64 + kMaxMetadataBytes + 256;
constexpr uint64_t kMaxRecordData = 1ull << 40;
constexpr uint64_t kCompactMinGarbage = 1ull << 20;
/// The store-wide version floor travels as a tombstone of this key and as the index's floor
/// entry of it. Every object key is "bucket/key", so a key without '/' never names an object;
/// and a store that predates the floor reads it as one more per-key floor (it replays and
/// re-indexes it unchanged) instead of stopping at an unknown record type, which would cut
/// the log there and lose every record after it. So the format stays 1 both ways.
constexpr std::string_view kStoreFloorKey = "fabric-store-floor";
/// How far ahead of a version lost to a TTL the store floor is written (see forget_gone).
constexpr uint64_t kStoreFloorReserve = 4096;
/// Reserved hot-copy metadata: "<tier version> <created wall ns> <fence token>".
constexpr std::string_view kTierMetaKey = "fabric-tier";
constexpr size_t kTierMetaReserve = 80;  ///< key + longest value, taken from kMaxMetadataBytes

/// On-disk record header (host byte order; the format is local to one machine like the pool).
struct RecordHeader {
    uint32_t magic;            ///< kRecordMagic
    uint16_t format;           ///< kFormat
    uint16_t type;             ///< kTypeObject / kTypeTombstone
    uint32_t header_crc;       ///< crc32(header with this field 0, key, meta)
    uint32_t data_crc;         ///< crc32(payload): the object's CRC-32
    uint32_t key_len;          ///< bytes of "bucket/key" after the header
    uint32_t meta_len;         ///< bytes of serialized content type + metadata after the key
    uint64_t data_len;         ///< payload bytes after the meta
    uint64_t version;          ///< tier version (tombstone: the removed version)
    uint64_t fence_token;      ///< fence stored with the object
    uint64_t created_wall_ns;  ///< when the version was first published
    uint64_t expires_wall_ns;  ///< per-object TTL deadline, 0 = none
};
static_assert(sizeof(RecordHeader) == 64, "record header is part of the cold log format");
static_assert(offsetof(RecordHeader, data_len) == 24 && offsetof(RecordHeader, expires_wall_ns) == 56,
              "record header is part of the cold log format");

struct IndexHeader {
    uint32_t magic;           ///< kIndexMagic
    uint16_t format;          ///< kFormat
    uint16_t reserved0;       ///< 0
    uint32_t file_crc;        ///< crc32 of the whole file with this field 0
    uint32_t reserved1;       ///< 0
    uint64_t file_bytes;      ///< total length of the index file
    uint64_t log_generation;  ///< the log (cold.<G>.log) these offsets refer to
    uint64_t covered_length;  ///< log bytes reflected in the entries; replay starts here
    uint64_t entry_count;     ///< entries following the header
};
static_assert(sizeof(IndexHeader) == 48, "index header is part of the cold index format");

enum IndexFlags : uint32_t { kEntryCold = 1, kEntryFloor = 2, kEntryHot = 3 };
struct IndexEntry {
    uint64_t offset;      ///< cold: record offset in the log
    uint64_t record_len;  ///< cold: aligned record length
    uint64_t version;     ///< cold: record version; floor: last removed version; hot: tier version (0 before it was kept)
    uint32_t key_len;     ///< key bytes following the entry (then pad to 8)
    uint32_t kind;        ///< IndexFlags; hot entries come in LRU order, least recent first
};
static_assert(sizeof(IndexEntry) == 32, "index entry is part of the cold index format");

/// Records and keys in the cold log start on 8-byte boundaries.
uint64_t align_record(uint64_t v) { return (v + 7) & ~uint64_t(7); }

Error sys_error(const std::string& what) { return errno_error(errno, what); }

Status write_all(int fd, const void* data, size_t len, uint64_t offset, const std::string& path) {
    auto* p = static_cast<const uint8_t*>(data);
    while (len > 0) {
        ssize_t n = ::pwrite(fd, p, len, off_t(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("write " + path);
        }
        p += n;
        len -= size_t(n);
        offset += uint64_t(n);
    }
    return {};
}

/// Reads exactly len bytes; Errc::corrupt when the file ends first (a torn record).
Status read_all(int fd, void* data, size_t len, uint64_t offset, const std::string& path) {
    auto* p = static_cast<uint8_t*>(data);
    while (len > 0) {
        ssize_t n = ::pread(fd, p, len, off_t(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("read " + path);
        }
        if (n == 0)
            return make_error(Errc::corrupt, path + ": record at offset " + std::to_string(offset) +
                                                 " runs past the end of the file");
        p += n;
        len -= size_t(n);
        offset += uint64_t(n);
    }
    return {};
}

Status sync_fd(int fd, const std::string& path, bool data_only) {
    if ((data_only ? ::fdatasync(fd) : ::fsync(fd)) != 0) return sys_error("fsync " + path);
    return {};
}

Status sync_dir(const std::string& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return sys_error("open directory " + dir);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return errno_error(err, "fsync directory " + dir);
    return {};
}

void put_u16(std::string& out, size_t v) {
    out.push_back(char(v & 0xff));
    out.push_back(char((v >> 8) & 0xff));
}

std::string encode_meta(const std::string& content_type, const std::map<std::string, std::string>& meta) {
    std::string out;
    put_u16(out, content_type.size());
    out += content_type;
    put_u16(out, meta.size());
    for (const auto& [k, v] : meta) {
        put_u16(out, k.size());
        out += k;
        put_u16(out, v.size());
        out += v;
    }
    return out;
}

bool decode_meta(std::string_view in, std::string& content_type, std::map<std::string, std::string>& meta) {
    size_t pos = 0;
    auto u16 = [&](size_t& v) {
        if (in.size() - pos < 2) return false;
        v = size_t(uint8_t(in[pos])) | size_t(uint8_t(in[pos + 1])) << 8;
        pos += 2;
        return true;
    };
    auto str = [&](std::string& s) {
        size_t n;
        if (!u16(n) || in.size() - pos < n) return false;
        s.assign(in.substr(pos, n));
        pos += n;
        return true;
    };
    size_t count;
    if (!str(content_type) || !u16(count)) return false;
    for (size_t i = 0; i < count; ++i) {
        std::string k, v;
        if (!str(k) || !str(v)) return false;
        meta.emplace(std::move(k), std::move(v));
    }
    return pos == in.size();
}

struct TierMeta {
    uint64_t version = 0, created_wall_ns = 0, fence_token = 0;
};

std::string encode_tier_meta(const TierMeta& t) {
    return std::to_string(t.version) + " " + std::to_string(t.created_wall_ns) + " " + std::to_string(t.fence_token);
}

bool decode_tier_meta(std::string_view s, TierMeta& t) {
    uint64_t* fields[3] = {&t.version, &t.created_wall_ns, &t.fence_token};
    const char* p = s.data();
    const char* end = s.data() + s.size();
    for (int i = 0; i < 3; ++i) {
        auto [next, ec] = std::from_chars(p, end, *fields[i]);
        if (ec != std::errc()) return false;
        p = next;
        if (i < 2) {
            if (p == end || *p != ' ') return false;
            ++p;
        }
    }
    return p == end;
}

/// Splits "bucket/key" (buckets contain no '/').
Result<FabricUri> uri_of(const std::string& pool, const std::string& object_key) {
    size_t slash = object_key.find('/');
    if (slash == std::string::npos)
        return make_error(Errc::corrupt, "cold key '" + object_key + "' has no bucket");
    return FabricUri::make(pool, std::string_view(object_key).substr(0, slash),
                           std::string_view(object_key).substr(slash + 1));
}

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    ~Fd() { reset(); }
    int get() const { return fd_; }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

}  // namespace

struct TieredObjectStore::Impl {
    struct ColdEntry {
        uint64_t offset = 0, record_len = 0, version = 0;
        bool torn = false;  ///< the record lies (partly) past the end of the log
    };
    /// A validated record, read back.
    struct Record {
        RecordHeader h{};
        std::string key;
        ObjectInfo info;
    };

    Pool pool_handle;  ///< keeps the mapping alive: the caller's Pool may be moved or dropped
    Pool* pool = nullptr;  ///< &pool_handle
    TieredConfig config;
    std::unique_ptr<MemObjectStore> hot;
    mutable std::mutex mu;

    Fd lock_fd, log_fd;
    std::string log_path;
    uint64_t generation = 1;
    uint64_t log_end = 0;  ///< append offset == valid log length
    uint64_t covered = 0;  ///< log length reflected in the last checkpoint

    std::unordered_map<std::string, ColdEntry> cold;    ///< live cold records by "bucket/key"
    std::unordered_map<std::string, uint64_t> floors;   ///< keys whose cold copy was tombstoned: highest version used
    /// Highest version removed from a key that had no cold copy (so no tombstone), or lost
    /// without a remove (TTL), or folded in by compaction. A key with no object starts above
    /// it; it is on the log (or in the index) before the version could be handed out again.
    uint64_t store_floor = 0;
    /// The highest store floor on disk (a floor record on the log, or the index's entry): a
    /// raise above it appends first. Kept apart from store_floor, which may run ahead in
    /// memory where its source is on disk already (a compaction's fold); may run ahead of
    /// store_floor by a reservation (forget_gone).
    uint64_t durable_floor = 0;
    uint64_t live_bytes = 0;

    std::list<FabricUri> lru;  ///< front = least recently used
    /// A tracked hot key's place in the LRU and the highest tier version this store saw it
    /// at: when its hot copy is found gone (TTL, or removed behind the store's back) that
    /// version is all that is left of it, and it goes into the store floor.
    struct Tracked {
        std::list<FabricUri>::iterator pos;
        uint64_t version = 0;
    };
    std::unordered_map<std::string, Tracked> lru_pos;

    TieredStats st;

    std::string path(const std::string& name) const { return config.cold_dir + "/" + name; }
    std::string log_name(uint64_t gen) const { return "cold." + std::to_string(gen) + ".log"; }
    bool sync_writes() const { return config.fsync == FsyncPolicy::every_write; }

    Status check_pool(std::string_view uri_pool) const {
        if (uri_pool != pool->name())
            return make_error(Errc::invalid_argument, "URI pool '" + std::string(uri_pool) +
                                                          "' is not this tiered store's pool '" + pool->name() + "'");
        return {};
    }

    // ---- LRU ----------------------------------------------------------------------------
    void touch(const FabricUri& uri, const std::string& key, uint64_t version) {
        auto it = lru_pos.find(key);
        if (it != lru_pos.end()) {
            lru.splice(lru.end(), lru, it->second.pos);
            it->second.version = std::max(it->second.version, version);
            return;
        }
        lru.push_back(uri);
        lru_pos.emplace(key, Tracked{std::prev(lru.end()), version});
    }
    void forget_hot(const std::string& key) {
        auto it = lru_pos.find(key);
        if (it == lru_pos.end()) return;
        lru.erase(it->second.pos);
        lru_pos.erase(it);
    }
    uint64_t tracked_version(const std::string& key) const {
        auto it = lru_pos.find(key);
        return it == lru_pos.end() ? 0 : it->second.version;
    }
    /// Forgets a tracked key whose hot copy is gone without a remove (its TTL ran out, or it
    /// was removed from the hot store directly). Nothing else records the version it had, so
    /// the store floor is raised to it first (on the log): a later put of the key, in this run
    /// or after a restart, starts above every version a client may still hold.
    Status forget_gone(const std::string& key) {
        // Reserved ahead: a key with a TTL put again after each expiry raises the floor by one
        // version each time, which would otherwise cost a log append (and a sync under
        // every_write) per put.
        FABRIC_TRY(raise_store_floor(tracked_version(key), kStoreFloorReserve));
        forget_hot(key);
        return {};
    }

    // ---- cold records -------------------------------------------------------------------
    void drop_cold(const std::string& key) {
        auto it = cold.find(key);
        if (it == cold.end()) return;
        if (!it->second.torn) live_bytes -= std::min(live_bytes, it->second.record_len);
        cold.erase(it);
    }

    /// The record's header, key and meta with the header CRC filled in (the payload follows).
    static std::string encode_record_head(uint16_t type, const std::string& key, const ObjectInfo& info,
                                          uint64_t data_len) {
        std::string meta = type == kTypeObject ? encode_meta(info.content_type, info.metadata) : std::string();
        RecordHeader h{};
        h.magic = kRecordMagic;
        h.format = kFormat;
        h.type = type;
        h.data_crc = type == kTypeObject ? info.crc32 : 0;
        h.key_len = uint32_t(key.size());
        h.meta_len = uint32_t(meta.size());
        h.data_len = data_len;
        h.version = info.version;
        h.fence_token = info.fence_token;
        h.created_wall_ns = info.created_wall_ns;
        h.expires_wall_ns = info.expires_wall_ns;
        std::string head(reinterpret_cast<const char*>(&h), sizeof h);
        head += key;
        head += meta;
        h.header_crc = crc32(head.data(), head.size());
        std::memcpy(head.data() + offsetof(RecordHeader, header_crc), &h.header_crc, sizeof h.header_crc);
        return head;
    }

    /// The store floor's record: a tombstone of kStoreFloorKey, 88 bytes whatever the floor.
    static std::string encode_store_floor(uint64_t floor) {
        ObjectInfo info;
        info.version = floor;
        std::string rec = encode_record_head(kTypeTombstone, std::string(kStoreFloorKey), info, 0);
        rec.resize(size_t(align_record(rec.size())), '\0');
        return rec;
    }

    /// Appends one record; returns its (offset, length). On failure the log is cut back.
    Result<ColdEntry> append(uint16_t type, const std::string& key, const ObjectInfo& info,
                             std::span<const uint8_t> data) {
        const std::string head = encode_record_head(type, key, info, data.size());
        const uint64_t offset = log_end;
        const uint64_t total = align_record(head.size() + data.size());
        Status s = write_all(log_fd.get(), head.data(), head.size(), offset, log_path);
        if (s) {
            // A kill here leaves a header without its payload: the replay's data CRC rejects it.
            FABRIC_CRASH_POINT("tiered.append.after_header");
            static const uint8_t zeros[8] = {};
            const size_t pad = size_t(total - head.size() - data.size());
            s = write_all(log_fd.get(), data.data(), data.size(), offset + head.size(), log_path);
            if (s && pad) s = write_all(log_fd.get(), zeros, pad, offset + head.size() + data.size(), log_path);
        }
        if (s && sync_writes()) s = sync_fd(log_fd.get(), log_path, true);
        if (!s) {
            (void)::ftruncate(log_fd.get(), off_t(offset));  // best effort; the replay would cut it too
            return std::move(s).error();
        }
        log_end = offset + total;
        return ColdEntry{offset, total, info.version, false};
    }

    Status append_tombstone(const std::string& key, uint64_t version) {
        ObjectInfo info;
        info.version = version;
        auto r = append(kTypeTombstone, key, info, {});
        if (!r) return std::move(r).error();
        return {};
    }

    /// Raises the store floor to `version`, on the log first (synced under every_write like
    /// any tombstone): a remove that returned is never forgotten by the next owner. One record
    /// per raise, whatever the key; replay keeps the highest and a checkpoint indexes one value.
    /// With `reserve`, the record says version + reserve, so that the next raises up to it
    /// append nothing (a restart then starts new keys above the reservation: harmless).
    Status raise_store_floor(uint64_t version, uint64_t reserve = 0) {
        if (version > durable_floor) {
            const uint64_t target = version + std::min(reserve, UINT64_MAX - version);
            FABRIC_TRY(append_tombstone(std::string(kStoreFloorKey), target));
            durable_floor = target;
        }
        store_floor = std::max(store_floor, version);
        return {};
    }

    Error damaged(const std::string& key, uint64_t offset, const std::string& why) const {
        detail::count(*pool, CounterId::store_corrupt, 1);
        return make_error(Errc::corrupt, "cold record of '" + key + "' at " + log_path + " offset " +
                                             std::to_string(offset) + " is damaged (" + why +
                                             "); not served (remove or overwrite the object)");
    }

    /// Reads and validates the record at `offset` bounded by `limit` (the log length). With
    /// `data` the payload is read into it and its CRC checked; else only the header + meta.
    Result<Record> read_record(uint64_t offset, uint64_t limit, std::vector<uint8_t>* data) const {
        const std::string& p = log_path;
        if (offset > limit || limit - offset < sizeof(RecordHeader))
            return make_error(Errc::corrupt, "record header at offset " + std::to_string(offset) +
                                                 " runs past the end of the log (" + std::to_string(limit) + " bytes)");
        Record rec;
        FABRIC_TRY(read_all(log_fd.get(), &rec.h, sizeof rec.h, offset, p));
        const RecordHeader& h = rec.h;
        if (h.magic != kRecordMagic) return make_error(Errc::corrupt, "bad record magic");
        if (h.format != kFormat) return make_error(Errc::corrupt, "record format " + std::to_string(h.format));
        if (h.type != kTypeObject && h.type != kTypeTombstone)
            return make_error(Errc::corrupt, "record type " + std::to_string(h.type));
        if (h.key_len == 0 || h.key_len > kMaxObjectKeyBytes || h.meta_len > kMaxMetaBytes || h.data_len > kMaxRecordData)
            return make_error(Errc::corrupt, "record lengths out of range (key " + std::to_string(h.key_len) +
                                                 ", meta " + std::to_string(h.meta_len) + ", data " +
                                                 std::to_string(h.data_len) + ")");
        const uint64_t total = align_record(sizeof h + h.key_len + h.meta_len + h.data_len);
        if (limit - offset < total)
            return make_error(Errc::corrupt, "record of " + std::to_string(total) + " bytes at offset " +
                                                 std::to_string(offset) + " runs past the end of the log (" +
                                                 std::to_string(limit) + " bytes): torn write");
        std::string head(sizeof h + h.key_len + h.meta_len, '\0');
        FABRIC_TRY(read_all(log_fd.get(), head.data(), head.size(), offset, p));
        const uint32_t stored = h.header_crc;
        std::memset(head.data() + offsetof(RecordHeader, header_crc), 0, sizeof stored);
        if (crc32(head.data(), head.size()) != stored) return make_error(Errc::corrupt, "header CRC mismatch");
        rec.key.assign(head, sizeof h, h.key_len);
        ObjectInfo& info = rec.info;
        if (h.type == kTypeTombstone) {
            if (h.meta_len != 0 || h.data_len != 0) return make_error(Errc::corrupt, "tombstone with a payload");
        } else if (!decode_meta(std::string_view(head).substr(sizeof h + h.key_len), info.content_type,
                                info.metadata)) {
            return make_error(Errc::corrupt, "metadata does not decode");
        }
        info.size = h.data_len;
        info.crc32 = h.data_crc;
        info.version = h.version;
        info.fence_token = h.fence_token;
        info.created_wall_ns = h.created_wall_ns;
        info.expires_wall_ns = h.expires_wall_ns;
        if (data) {
            data->resize(h.data_len);
            FABRIC_TRY(read_all(log_fd.get(), data->data(), data->size(), offset + head.size(), p));
            const uint32_t got = crc32(data->data(), data->size());
            if (got != h.data_crc) {
                char buf[64];
                std::snprintf(buf, sizeof buf, "data CRC 0x%08x, stored 0x%08x", got, h.data_crc);
                return make_error(Errc::corrupt, buf);
            }
        }
        return rec;
    }

    /// Reads a cold object by key. Errors name the record; torn entries fail at once.
    Result<Record> read_cold(const std::string& key, const ColdEntry& e, std::vector<uint8_t>* data) const {
        if (e.torn) return damaged(key, e.offset, "the log ends before this record (truncated)");
        auto r = read_record(e.offset, log_end, data);
        if (!r) return damaged(key, e.offset, r.error().message);
        if (r->key != key || r->h.type != kTypeObject || r->h.version != e.version)
            return damaged(key, e.offset, "the record there belongs to another key or version");
        return r;
    }

    static bool expired(const ObjectInfo& info, uint64_t now_wall) {
        return info.expires_wall_ns != 0 && now_wall >= info.expires_wall_ns;
    }

    // ---- hot copies ---------------------------------------------------------------------
    /// Replaces the hot store's version, created time and fence with the tier's (reserved
    /// metadata) and removes the reserved key.
    static void to_tier_info(ObjectInfo& info) {
        auto it = info.metadata.find(std::string(kTierMetaKey));
        if (it == info.metadata.end()) return;  // written to the hot store directly: keep its values
        TierMeta t;
        if (decode_tier_meta(it->second, t)) {
            info.version = t.version;
            if (t.created_wall_ns) info.created_wall_ns = t.created_wall_ns;
            info.fence_token = t.fence_token;
        }
        info.metadata.erase(it);
    }

    Result<uint64_t> put_hot(const FabricUri& uri, std::span<const uint8_t> data, const PutOptions& user,
                             const TierMeta& t) {
        PutOptions o;
        o.content_type = user.content_type;
        o.metadata = user.metadata;
        o.metadata[std::string(kTierMetaKey)] = encode_tier_meta(t);
        o.ttl = user.ttl;
        o.fence_token = t.fence_token;
        if ((user.condition == PutCondition::fence || user.condition == PutCondition::fence_if_version_equals) &&
            user.fence_holds) {
            // The caller's external fence is asked where the hot copy publishes (the cold
            // tier's own check above runs under this store's mutex, the hot put's just before
            // the slot CAS that publishes it).
            o.condition = PutCondition::fence;
            o.fence_holds = user.fence_holds;
        }
        for (;;) {
            auto r = hot->put(uri, data, o);
            // A full hot tier makes room by demoting, as long as there is something to demote.
            if (r || r.code() != Errc::capacity_exceeded || lru.empty()) return r;
            const size_t before = lru.size();
            FABRIC_TRY(demote_front(&uri));
            if (lru.size() == before) return r;  // only the object being written is left
        }
    }

    /// Demotes the least recently used hot object (skipping `except`).
    Status demote_front(const FabricUri* except) {
        auto it = lru.begin();
        if (except && it != lru.end() && it->object_key() == except->object_key()) ++it;
        if (it == lru.end()) return {};
        FabricUri uri = *it;
        return demote(uri);
    }

    Status demote(const FabricUri& uri) {
        const std::string key = uri.object_key();
        auto got = hot->get(uri);
        if (!got) return std::move(got).error();
        if (!got->has_value()) return forget_gone(key);  // expired or removed behind our back
        ObjectData& obj = **got;
        const uint64_t hot_version = obj.info.version;
        to_tier_info(obj.info);
        auto c = cold.find(key);
        if (c == cold.end() || c->second.version != obj.info.version || c->second.torn) {
            auto e = append(kTypeObject, key, obj.info, obj.data);
            if (!e) return std::move(e).error();
            drop_cold(key);
            cold.emplace(key, *e);
            live_bytes += e->record_len;
            floors.erase(key);
        }
        // Killed here: the object is hot and cold with the same version; either copy serves.
        FABRIC_CRASH_POINT("tiered.demote.before_hot_remove");
        RemoveOptions ro;
        ro.if_version = hot_version;
        auto removed = hot->remove(uri, ro);
        if (!removed && removed.code() != Errc::conflict) return std::move(removed).error();
        forget_hot(key);
        ++st.demotions;
        return {};
    }

    Status enforce_max_hot(const FabricUri* keep) {
        while (lru.size() > config.max_hot) {
            const size_t before = lru.size();
            FABRIC_TRY(demote_front(keep));
            if (lru.size() == before) break;
        }
        return {};
    }

    /// The current object's tier info (hot first, then cold), or nullopt when absent/expired.
    Result<std::optional<ObjectInfo>> current(const FabricUri& uri, const std::string& key) {
        auto h = hot->head(uri);
        if (!h) return std::move(h).error();
        if (h->has_value()) {
            ObjectInfo info = **h;
            to_tier_info(info);
            return std::optional<ObjectInfo>(std::move(info));
        }
        auto c = cold.find(key);
        if (c == cold.end()) return std::optional<ObjectInfo>();
        auto rec = read_cold(key, c->second, nullptr);
        if (!rec) return std::move(rec).error();
        if (expired(rec->info, wall_now_ns())) return std::optional<ObjectInfo>();
        return std::optional<ObjectInfo>(std::move(rec->info));
    }

    /// Above the current object's version, the cold copy's and the key's floor; a key with no
    /// object also above the store floor (it may be a key removed while only hot).
    uint64_t next_version(const std::string& key, const std::optional<ObjectInfo>& cur) const {
        uint64_t v = cur ? cur->version : store_floor;
        if (auto c = cold.find(key); c != cold.end()) v = std::max(v, c->second.version);
        if (auto f = floors.find(key); f != floors.end()) v = std::max(v, f->second);
        return v + 1;
    }

    // ---- open / checkpoint --------------------------------------------------------------
    Status lock_dir() {
        const std::string p = path("LOCK");
        lock_fd = Fd(::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        if (lock_fd.get() < 0) return sys_error("open " + p);
        if (::flock(lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
            int err = errno;
            char buf[32] = {};
            ssize_t n = ::pread(lock_fd.get(), buf, sizeof buf - 1, 0);
            std::string holder = n > 0 ? std::string(buf, size_t(n)) : std::string("?");
            if (err == EWOULDBLOCK)
                return make_error(Errc::busy, "cold directory " + config.cold_dir + " is in use by pid " + holder +
                                                  " (one TieredObjectStore per directory)");
            return errno_error(err, "flock " + p);
        }
        std::string pid = std::to_string(::getpid());
        if (::ftruncate(lock_fd.get(), 0) != 0) return sys_error("truncate " + p);
        return write_all(lock_fd.get(), pid.data(), pid.size(), 0, p);
    }

    std::vector<uint64_t> log_generations() const {
        std::vector<uint64_t> gens;
        DIR* d = ::opendir(config.cold_dir.c_str());
        if (!d) return gens;
        while (dirent* ent = ::readdir(d)) {
            std::string_view n = ent->d_name;
            if (n.size() < 10 || n.substr(0, 5) != "cold." || n.substr(n.size() - 4) != ".log") continue;
            uint64_t g = 0;
            auto digits = n.substr(5, n.size() - 9);
            auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), g);
            if (ec == std::errc() && p == digits.data() + digits.size() && g > 0) gens.push_back(g);
        }
        ::closedir(d);
        std::sort(gens.begin(), gens.end());
        return gens;
    }

    /// Loads cold.index. Not found -> NotFound; anything invalid -> Corrupt (the caller rebuilds).
    Status load_index(std::vector<std::pair<std::string, uint64_t>>& hot_keys) {
        const std::string p = path("cold.index");
        Fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        if (fd.get() < 0) return sys_error("open " + p);
        struct stat sb{};
        if (::fstat(fd.get(), &sb) != 0) return sys_error("stat " + p);
        const uint64_t size = uint64_t(sb.st_size);
        if (size < sizeof(IndexHeader) || size > (1ull << 32))
            return make_error(Errc::corrupt, p + " has " + std::to_string(size) + " bytes");
        std::string buf(size, '\0');
        FABRIC_TRY(read_all(fd.get(), buf.data(), buf.size(), 0, p));
        IndexHeader h;
        std::memcpy(&h, buf.data(), sizeof h);
        if (h.magic != kIndexMagic || h.format != kFormat || h.file_bytes != size)
            return make_error(Errc::corrupt, p + ": bad magic, format or length");
        std::memset(buf.data() + offsetof(IndexHeader, file_crc), 0, sizeof h.file_crc);
        if (crc32(buf.data(), buf.size()) != h.file_crc) return make_error(Errc::corrupt, p + ": CRC mismatch");
        if (h.log_generation == 0) return make_error(Errc::corrupt, p + ": log generation 0");
        uint64_t pos = sizeof h;
        std::unordered_map<std::string, ColdEntry> c;
        std::unordered_map<std::string, uint64_t> f;
        uint64_t sf = 0;
        std::vector<std::pair<std::string, uint64_t>> hk;
        for (uint64_t i = 0; i < h.entry_count; ++i) {
            IndexEntry e;
            if (size - pos < sizeof e) return make_error(Errc::corrupt, p + ": entries run past the end");
            std::memcpy(&e, buf.data() + pos, sizeof e);
            pos += sizeof e;
            if (e.key_len == 0 || e.key_len > kMaxObjectKeyBytes || size - pos < align_record(e.key_len))
                return make_error(Errc::corrupt, p + ": entry key length " + std::to_string(e.key_len));
            std::string key(buf.data() + pos, e.key_len);
            pos += align_record(e.key_len);
            if (e.kind == kEntryCold) {
                if (e.offset > h.covered_length || e.record_len > h.covered_length - e.offset || e.record_len == 0)
                    return make_error(Errc::corrupt, p + ": entry outside the covered log");
                c[key] = ColdEntry{e.offset, e.record_len, e.version, false};
            } else if (e.kind == kEntryFloor) {
                if (key == kStoreFloorKey)
                    sf = std::max(sf, e.version);
                else
                    f[key] = e.version;
            } else if (e.kind == kEntryHot) {
                hk.emplace_back(std::move(key), e.version);
            } else {
                return make_error(Errc::corrupt, p + ": entry kind " + std::to_string(e.kind));
            }
        }
        generation = h.log_generation;
        covered = h.covered_length;
        cold = std::move(c);
        floors = std::move(f);
        store_floor = durable_floor = sf;
        hot_keys = std::move(hk);
        return {};
    }

    /// Replays records from `from` to the end of the log; cuts a torn tail.
    Status replay(uint64_t from, uint64_t file_size, std::string& note) {
        uint64_t pos = from;
        while (pos < file_size) {
            auto r = read_record(pos, file_size, nullptr);
            std::vector<uint8_t> data;
            if (r && r->h.type == kTypeObject) r = read_record(pos, file_size, &data);  // data CRC too
            if (!r) {
                st.discarded_tail_bytes = file_size - pos;
                note += "cold log " + log_path + ": cut a torn tail of " + std::to_string(file_size - pos) +
                        " bytes at offset " + std::to_string(pos) + " (" + r.error().message + ")\n";
                if (::ftruncate(log_fd.get(), off_t(pos)) != 0) return sys_error("truncate " + log_path);
                if (config.fsync != FsyncPolicy::never) FABRIC_TRY(sync_fd(log_fd.get(), log_path, true));
                break;
            }
            const uint64_t total = align_record(sizeof(RecordHeader) + r->h.key_len + r->h.meta_len + r->h.data_len);
            drop_cold(r->key);
            if (r->h.type == kTypeObject) {
                cold[r->key] = ColdEntry{pos, total, r->h.version, false};
                live_bytes += total;
                floors.erase(r->key);
            } else if (r->key == kStoreFloorKey) {
                store_floor = std::max(store_floor, r->h.version);
                durable_floor = store_floor;
            } else {
                floors[r->key] = r->h.version;
            }
            ++st.recovered_records;
            pos += total;
        }
        log_end = pos;
        return {};
    }

    Status open_log(uint64_t gen) {
        log_path = path(log_name(gen));
        log_fd = Fd(::open(log_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        if (log_fd.get() < 0) return sys_error("open " + log_path);
        return {};
    }

    Status open_cold(std::string& note) {
        if (::mkdir(config.cold_dir.c_str(), 0700) != 0 && errno != EEXIST)
            return sys_error("create cold directory " + config.cold_dir);
        FABRIC_TRY(lock_dir());
        std::vector<std::pair<std::string, uint64_t>> hot_keys;
        Status idx = load_index(hot_keys);
        std::vector<uint64_t> gens = log_generations();
        if (!idx) {
            if (idx.code() != Errc::not_found) note += "cold index damaged (" + idx.error().message + "); rebuilt from the log\n";
            cold.clear();
            floors.clear();
            store_floor = durable_floor = 0;
            hot_keys.clear();
            covered = 0;
            // Compaction unlinks the old log only after the new index is durable, so without
            // a usable index the oldest log is the complete one.
            generation = gens.empty() ? 1 : gens.front();
        }
        for (uint64_t g : gens)
            if (g != generation) {
                note += "removed stale log " + path(log_name(g)) + "\n";
                ::unlink(path(log_name(g)).c_str());
            }
        FABRIC_TRY(open_log(generation));
        struct stat sb{};
        if (::fstat(log_fd.get(), &sb) != 0) return sys_error("stat " + log_path);
        const uint64_t file_size = uint64_t(sb.st_size);
        live_bytes = 0;
        for (auto& [key, e] : cold) {
            if (e.offset + e.record_len > file_size) {
                e.torn = true;
                note += "cold record of '" + key + "' lies past the end of " + log_path + " (truncated)\n";
            } else {
                live_bytes += e.record_len;
            }
        }
        if (covered > file_size) {
            note += log_path + " is shorter (" + std::to_string(file_size) + " bytes) than its checkpoint (" +
                    std::to_string(covered) + " bytes)\n";
            log_end = file_size;
        } else {
            FABRIC_TRY(replay(covered, file_size, note));
        }
        st.log_generation = generation;
        // Hot LRU order from the checkpoint. Keys whose hot copy is gone (TTL ran out, pool
        // lost) drop out, and the version the checkpoint saw them at goes into the store floor:
        // nothing else may record it, and a client may still hold it.
        uint64_t gone = 0;
        for (const auto& [key, version] : hot_keys) {
            auto uri = uri_of(pool->name(), key);
            if (!uri) continue;
            auto h = hot->head(*uri);
            if (h && h->has_value()) {
                ObjectInfo info = **h;
                to_tier_info(info);
                touch(*uri, key, std::max(version, info.version));
            } else {
                gone = std::max(gone, version);
            }
        }
        FABRIC_TRY(raise_store_floor(gone));
        if (Status tracked = track_unlisted_hot(); !tracked)
            note += "hot copies written after the last checkpoint not tracked (" + tracked.error().message +
                    "): a checkpoint(include_hot) does not copy them\n";
        return {};
    }

    /// The hot copies this store wrote (tier metadata) that the checkpoint does not list: put
    /// after it by an owner that died before its next one. Tracked after the listed ones,
    /// oldest first, so that max_hot counts them, demotion reaches them and
    /// checkpoint(include_hot) copies them; otherwise an acknowledged put would be lost with
    /// the pool although a later checkpoint(include_hot) succeeded.
    Status track_unlisted_hot() {
        auto all = hot->list_all();
        if (!all) return std::move(all).error();
        struct Found {
            uint64_t created = 0, version = 0;  // hot created time, tier version
            FabricUri uri;
        };
        std::vector<Found> found;
        for (const std::string& key : *all) {
            if (lru_pos.count(key)) continue;
            auto uri = uri_of(pool->name(), key);
            if (!uri) continue;
            auto h = hot->head(*uri);
            if (!h) return std::move(h).error();
            if (!h->has_value() || !(*h)->metadata.count(std::string(kTierMetaKey))) continue;
            ObjectInfo info = **h;
            to_tier_info(info);
            found.push_back({(*h)->created_wall_ns, info.version, std::move(*uri)});
        }
        std::stable_sort(found.begin(), found.end(),
                         [](const auto& a, const auto& b) { return a.created < b.created; });
        for (const auto& f : found) touch(f.uri, f.uri.object_key(), f.version);
        return {};
    }

    Status compact(std::string& note) {
        const uint64_t new_gen = generation + 1;
        const std::string new_path = path(log_name(new_gen));
        Fd nfd(::open(new_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (nfd.get() < 0) return sys_error("create " + new_path);
        const uint64_t now_wall = wall_now_ns();
        // The new log keeps no tombstones and no expired or damaged records, and the index
        // written next no per-key floors: the versions they held all go into the store floor,
        // the one record at the head of the new log, so that neither a later put nor a rebuild
        // from this log (the index lost) hands one of them out again. It also keeps the index
        // from growing by one floor per removed key across compactions.
        uint64_t floor = std::max(store_floor, durable_floor);
        for (const auto& [key, v] : floors) floor = std::max(floor, v);
        std::vector<std::pair<const std::string*, const ColdEntry*>> keep;
        for (const auto& [key, e] : cold) {
            auto rec = e.torn ? Result<Record>(make_error(Errc::corrupt, "truncated")) : read_record(e.offset, log_end, nullptr);
            if (!rec || rec->key != key || rec->h.version != e.version) {
                note += "compaction dropped the damaged cold record of '" + key + "'\n";
                floor = std::max(floor, e.version);
                continue;
            }
            if (expired(rec->info, now_wall)) {
                floor = std::max(floor, e.version);
                continue;
            }
            keep.emplace_back(&key, &e);
        }
        // The fold becomes the store floor only with the switch below: a compaction that fails
        // leaves the old log and index authoritative, and a floor raised in memory alone would
        // let a later raise (a remove) skip the append it needs.
        uint64_t folded = floor;
        std::unordered_map<std::string, ColdEntry> moved;
        uint64_t pos = 0;
        if (folded > 0) {
            // First in the new log, so that a rebuild from the log (the index lost) keeps it.
            const std::string rec = encode_store_floor(folded);
            FABRIC_TRY(write_all(nfd.get(), rec.data(), rec.size(), pos, new_path));
            pos += rec.size();
        }
        uint64_t live = 0;  // the floor records are not live data
        std::vector<uint8_t> buf;
        for (const auto& [key_p, e_p] : keep) {
            const std::string& key = *key_p;
            const ColdEntry& e = *e_p;
            auto rec = read_record(e.offset, log_end, nullptr);
            if (rec) {
                buf.resize(e.record_len);
                FABRIC_TRY(read_all(log_fd.get(), buf.data(), buf.size(), e.offset, log_path));
            }
            if (!rec || crc32(buf.data() + sizeof(RecordHeader) + rec->h.key_len + rec->h.meta_len,
                              rec->h.data_len) != rec->h.data_crc) {
                note += "compaction dropped the damaged cold record of '" + key + "'\n";
                folded = std::max(folded, e.version);  // recorded after the loop
                continue;
            }
            FABRIC_TRY(write_all(nfd.get(), buf.data(), buf.size(), pos, new_path));
            moved[key] = ColdEntry{pos, e.record_len, e.version, false};
            pos += e.record_len;
            live += e.record_len;
        }
        if (folded > floor) {
            // A payload found damaged only while copying: its version after the records (replay
            // keeps the highest floor record).
            const std::string rec = encode_store_floor(folded);
            FABRIC_TRY(write_all(nfd.get(), rec.data(), rec.size(), pos, new_path));
            pos += rec.size();
        }
        if (config.fsync != FsyncPolicy::never) FABRIC_TRY(sync_fd(nfd.get(), new_path, true));
        // Switch in memory; the index written next names the new generation. Until it lands
        // on disk the old log stays authoritative, so a failure switches back.
        std::string other_path = new_path;
        uint64_t other_gen = new_gen, other_live = live, other_end = pos, other_store_floor = std::max(store_floor, folded);
        std::unordered_map<std::string, uint64_t> other_floors;
        auto swap_state = [&] {
            std::swap(store_floor, other_store_floor);
            std::swap(log_fd, nfd);
            std::swap(log_path, other_path);
            std::swap(generation, other_gen);
            std::swap(cold, moved);
            std::swap(floors, other_floors);
            std::swap(live_bytes, other_live);
            std::swap(log_end, other_end);
        };
        swap_state();
        bool renamed = false;
        Status s = write_index(&renamed);
        if (!s && !renamed) {
            swap_state();
            ::unlink(new_path.c_str());
            return s;
        }
        // Renamed: the index on disk names the new log, so the switch stands even if the
        // directory sync after it failed (switching back would unlink the log the index names,
        // and the next open would find every cold record gone). That error is still returned.
        ::unlink(other_path.c_str());  // the old log
        if (config.fsync != FsyncPolicy::never) FABRIC_TRY(sync_dir(config.cold_dir));
        ++st.compactions;
        st.log_generation = generation;
        return s;
    }

    /// `renamed` (when given): set once cold.index is the new file, even if a later step fails.
    Status write_index(bool* renamed = nullptr) {
        std::string buf(sizeof(IndexHeader), '\0');
        uint64_t count = 0;
        auto add = [&](const std::string& key, uint32_t kind, uint64_t offset, uint64_t len, uint64_t version) {
            IndexEntry e{offset, len, version, uint32_t(key.size()), kind};
            buf.append(reinterpret_cast<const char*>(&e), sizeof e);
            buf += key;
            buf.append(size_t(align_record(key.size()) - key.size()), '\0');
            ++count;
        };
        for (const auto& [key, e] : cold)
            if (!e.torn) add(key, kEntryCold, e.offset, e.record_len, e.version);
        for (const auto& [key, v] : floors) add(key, kEntryFloor, 0, 0, v);
        const uint64_t floor = std::max(store_floor, durable_floor);
        if (floor > 0) add(std::string(kStoreFloorKey), kEntryFloor, 0, 0, floor);
        // A hot entry's version (0 before it was kept) is the tier version last seen: the next
        // open raises the store floor to it if the hot copy is gone by then.
        for (const FabricUri& uri : lru) {
            const std::string key = uri.object_key();
            add(key, kEntryHot, 0, 0, tracked_version(key));
        }
        IndexHeader h{};
        h.magic = kIndexMagic;
        h.format = kFormat;
        h.file_bytes = buf.size();
        h.log_generation = generation;
        h.covered_length = log_end;
        h.entry_count = count;
        std::memcpy(buf.data(), &h, sizeof h);
        h.file_crc = crc32(buf.data(), buf.size());
        std::memcpy(buf.data() + offsetof(IndexHeader, file_crc), &h.file_crc, sizeof h.file_crc);

        const std::string tmp = path("cold.index.tmp");
        const std::string fin = path("cold.index");
        Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (fd.get() < 0) return sys_error("create " + tmp);
        FABRIC_TRY(write_all(fd.get(), buf.data(), buf.size(), 0, tmp));
        if (config.fsync != FsyncPolicy::never) FABRIC_TRY(sync_fd(fd.get(), tmp, false));
        fd.reset();
        FABRIC_CRASH_POINT("tiered.checkpoint.before_rename");
        if (::rename(tmp.c_str(), fin.c_str()) != 0) return sys_error("rename " + tmp + " to " + fin);
        if (renamed) *renamed = true;
        durable_floor = floor;  // renamed: what an open reads (the sync below makes it last a power loss)
        if (config.fsync != FsyncPolicy::never) FABRIC_TRY(sync_dir(config.cold_dir));
        covered = log_end;
        return {};
    }
};

TieredObjectStore::TieredObjectStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TieredObjectStore::~TieredObjectStore() = default;

Result<std::unique_ptr<TieredObjectStore>> TieredObjectStore::open(Pool& pool, const TieredConfig& config,
                                                                   std::string* note) {
    if (config.cold_dir.empty())
        return make_error(Errc::invalid_argument, "TieredConfig::cold_dir is empty (give a directory for the cold tier)");
    if (config.max_hot == 0)
        return make_error(Errc::invalid_argument, "TieredConfig::max_hot is 0 (at least 1 hot object)");
    if (!(config.compact_garbage_fraction >= 0.0 && config.compact_garbage_fraction <= 1.0))
        return make_error(Errc::invalid_argument, "TieredConfig::compact_garbage_fraction must be within [0, 1]");
    auto impl = std::make_unique<Impl>();
    impl->pool_handle = pool;
    impl->pool = &impl->pool_handle;
    impl->config = config;
    std::string notes;
    auto hot = MemObjectStore::open(pool, config.hot, &notes);
    if (!hot) return std::move(hot).error();
    if (!notes.empty() && notes.back() != '\n') notes += '\n';
    impl->hot = std::move(*hot);
    FABRIC_TRY(impl->open_cold(notes));
    if (note) *note = std::move(notes);
    return std::unique_ptr<TieredObjectStore>(new TieredObjectStore(std::move(impl)));
}

Result<uint64_t> TieredObjectStore::put(const FabricUri& uri, ByteView data, const PutOptions& options) {
    Impl& m = *impl_;
    std::lock_guard lock(m.mu);
    FABRIC_TRY(m.check_pool(uri.pool()));
    size_t meta_bytes = 0;
    for (const auto& [k, v] : options.metadata) {
        if (k == kTierMetaKey)
            return make_error(Errc::invalid_argument, "metadata key '" + k + "' is reserved by the tiered store");
        meta_bytes += k.size() + v.size();
    }
    if (meta_bytes > kMaxMetadataBytes - kTierMetaReserve)
        return make_error(Errc::invalid_argument,
                          "metadata of " + std::to_string(meta_bytes) + " bytes exceeds the tiered store's limit of " +
                              std::to_string(kMaxMetadataBytes - kTierMetaReserve) + " (kMaxMetadataBytes minus " +
                              std::to_string(kTierMetaReserve) + " reserved)");
    const std::string key = uri.object_key();
    auto cur = m.current(uri, key);
    if (!cur && cur.code() != Errc::corrupt) return std::move(cur).error();
    // A damaged cold copy counts as present for the conditions but may be overwritten.
    std::optional<ObjectInfo> now = cur ? std::move(*cur) : std::optional<ObjectInfo>();
    if (!cur && !m.cold.count(key)) return std::move(cur).error();  // corrupt, but not a cold record
    const bool exists = now.has_value() || !cur;
    const uint64_t cur_version = now ? now->version : (exists ? m.cold.find(key)->second.version : 0);
    switch (options.condition) {
        case PutCondition::none:
            break;
        case PutCondition::if_absent:
            if (exists) {
                detail::count(*m.pool, CounterId::store_conflicts, 1);
                return make_error(Errc::conflict, uri.to_string() + " exists (version " + std::to_string(cur_version) +
                                                      "); put was conditional on absence");
            }
            break;
        case PutCondition::if_version_equals:
            if (cur_version != options.expected_version) {
                detail::count(*m.pool, CounterId::store_conflicts, 1);
                return make_error(Errc::conflict, uri.to_string() + " is at version " + std::to_string(cur_version) +
                                                      ", put expected version " +
                                                      std::to_string(options.expected_version));
            }
            break;
        case PutCondition::fence:
        case PutCondition::fence_if_version_equals:
            if (now && options.fence_token < now->fence_token) {
                detail::count(*m.pool, CounterId::store_conflicts, 1);
                return make_error(Errc::stale_epoch, uri.to_string() + " is fenced at " +
                                                         std::to_string(now->fence_token) + "; put brought token " +
                                                         std::to_string(options.fence_token));
            }
            if (options.condition != PutCondition::fence_if_version_equals) break;
            // The whole fence before the version, as in the in-pool store: a writer fenced out
            // is told so (stale_epoch), not sent to read the key again. The hot put asks it
            // again where it publishes.
            if (options.fence_holds && !options.fence_holds()) {
                detail::count(*m.pool, CounterId::store_conflicts, 1);
                return make_error(Errc::stale_epoch, uri.to_string() + ": fence token " +
                                                         std::to_string(options.fence_token) +
                                                         " no longer holds: a newer owner fenced it");
            }
            if (cur_version != options.expected_version) {
                detail::count(*m.pool, CounterId::store_conflicts, 1);
                return make_error(Errc::conflict, uri.to_string() + " is at version " + std::to_string(cur_version) +
                                                      ", put expected version " +
                                                      std::to_string(options.expected_version));
            }
            break;
    }
    // A tracked key with no hot copy lost it to its TTL (a cold copy, if any, has its version
    // already): its last version goes into the store floor before a new one is handed out.
    if (!now) FABRIC_TRY(m.forget_gone(key));
    TierMeta t;
    t.version = m.next_version(key, now);
    t.fence_token = options.fence_token;
    auto r = m.put_hot(uri, data, options, t);
    if (!r) return std::move(r).error();
    // The cold copy now holds an older version: a tombstone keeps it from resurfacing if the
    // hot copy is later lost with the pool, and carries the new version as the key's floor
    // so versions stay monotonic even then. Killed before the tombstone, the newer hot copy
    // still wins while the pool lives. A failed tombstone write does not undo the published
    // put: the entry is dropped from the index here and the next checkpoint persists that.
    if (m.cold.count(key)) {
        (void)m.append_tombstone(key, t.version);
        m.drop_cold(key);
        m.floors[key] = t.version;
    } else if (auto f = m.floors.find(key); f != m.floors.end() && f->second < t.version) {
        m.floors.erase(f);
    }
    m.touch(uri, key, t.version);
    FABRIC_TRY(m.enforce_max_hot(&uri));
    return t.version;
}

Result<std::optional<ObjectData>> TieredObjectStore::get(const FabricUri& uri) {
    Impl& m = *impl_;
    std::lock_guard lock(m.mu);
    FABRIC_TRY(m.check_pool(uri.pool()));
    const std::string key = uri.object_key();
    auto h = m.hot->get(uri);
    if (!h) return std::move(h).error();
    if (h->has_value()) {
        ObjectData d = std::move(**h);
        Impl::to_tier_info(d.info);
        m.touch(uri, key, d.info.version);
        FABRIC_TRY(m.enforce_max_hot(&uri));
        return std::optional<ObjectData>(std::move(d));
    }
    auto c = m.cold.find(key);
    if (c == m.cold.end()) return std::optional<ObjectData>();
    ObjectData d;
    auto rec = m.read_cold(key, c->second, &d.data);
    if (!rec) return std::move(rec).error();
    d.info = std::move(rec->info);
    const uint64_t now_wall = wall_now_ns();
    if (Impl::expired(d.info, now_wall)) return std::optional<ObjectData>();
    // Promote: same tier version, created time and fence; the cold copy stays (same version).
    PutOptions o;
    o.content_type = d.info.content_type;
    o.metadata = d.info.metadata;
    if (d.info.expires_wall_ns) o.ttl = ns_duration(d.info.expires_wall_ns - now_wall);
    TierMeta t{d.info.version, d.info.created_wall_ns, d.info.fence_token};
    auto p = m.put_hot(uri, d.data, o, t);
    if (p) {
        ++m.st.promotions;
        m.touch(uri, key, t.version);
        FABRIC_TRY(m.enforce_max_hot(&uri));
    } else if (p.code() != Errc::capacity_exceeded && p.code() != Errc::object_too_large) {
        return std::move(p).error();
    }  // else: served from cold without promotion (the hot tier cannot hold it)
    return std::optional<ObjectData>(std::move(d));
}

Result<std::optional<ObjectData>> TieredObjectStore::peek(const FabricUri& uri) {
    Impl& m = *impl_;
    std::lock_guard lock(m.mu);
    FABRIC_TRY(m.check_pool(uri.pool()));
    const std::string key = uri.object_key();
    auto h = m.hot->get(uri);
    if (!h) return std::move(h).error();
    if (h->has_value()) {
        ObjectData d = std::move(**h);
        Impl::to_tier_info(d.info);
        return std::optional<ObjectData>(std::move(d));
    }
    auto c = m.cold.find(key);
    if (c == m.cold.end()) return std::optional<ObjectData>();
    ObjectData d;
    auto rec = m.read_cold(key, c->second, &d.data);
    if (!rec) return std::move(rec).error();
    d.info = std::move(rec->info);
    if (Impl::expired(d.info, wall_now_ns())) return std::optional<ObjectData>();
    return std::optional<ObjectData>(std::move(d));
}

Result<std::optional<ObjectInfo>> TieredObjectStore::head(const FabricUri& uri) {
    Impl& m = *impl_;
    std::lock_guard lock(m.mu);
    FABRIC_TRY(m.check_pool(uri.pool()));
    return m.current(uri, uri.object_key());
}

Result<bool> TieredObjectStore::remove(const FabricUri& uri, const RemoveOptions& options) {
    Impl& m = *impl_;
    std::lock_guard lock(m.mu);
    FABRIC_TRY(m.check_pool(uri.pool()));
    const std::string key = uri.object_key();
    auto cur = m.current(uri, key);
    if (!cur && cur.code() != Errc::corrupt) return std::move(cur).error();
    const bool damaged = !cur;  // a damaged cold copy can always be removed
    uint64_t version = 0;
    if (!damaged) {
        if (!cur->has_value()) {
            // Nothing to remove, but an expired cold copy (or a hot copy whose TTL ran out) is
            // the only record of its version: dropped without a tombstone, it goes into the
            // store floor first, or the next put of the key would hand it out again.
            uint64_t gone = m.tracked_version(key);
            if (auto c = m.cold.find(key); c != m.cold.end()) gone = std::max(gone, c->second.version);
            FABRIC_TRY(m.raise_store_floor(gone));
            m.drop_cold(key);
            m.forget_hot(key);
            return false;
        }
        version = (*cur)->version;
    } else {
        auto c = m.cold.find(key);
        if (c == m.cold.end()) return std::move(cur).error();  // corrupt, but not a cold record
        version = c->second.version;
    }
    if (options.if_version && *options.if_version != version) {
        detail::count(*m.pool, CounterId::store_conflicts, 1);
        return make_error(Errc::conflict, uri.to_string() + " is at version " + std::to_string(version) +
                                              ", remove expected version " + std::to_string(*options.if_version));
    }
    if (m.cold.count(key)) {
        FABRIC_TRY(m.append_tombstone(key, version));
        m.drop_cold(key);
        m.floors[key] = std::max(m.floors[key], version);
    } else {
        // No cold copy, so no tombstone: the store-wide floor keeps the version from being
        // reused by a later owner, in one value however many keys are removed (a per-key floor
        // here would grow the index by one entry per removed key).
        FABRIC_TRY(m.raise_store_floor(version));
    }
    auto r = m.hot->remove(uri);
    if (!r) return std::move(r).error();
    m.forget_hot(key);
    detail::count(*m.pool, CounterId::store_removes, 1);
    return true;
}

Result<std::vector<std::string>> TieredObjectStore::list(std::string_view pool, std::string_view bucket,
                                                         std::string_view prefix) {
    Impl& m = *impl_;
    std::lock_guard lock(m.mu);
    FABRIC_TRY(m.check_pool(pool));
    auto keys = m.hot->list(pool, bucket, prefix);
    if (!keys) return std::move(keys).error();
    std::vector<std::string> out = std::move(*keys);
    const std::string lead = std::string(bucket) + "/" + std::string(prefix);
    const uint64_t now_wall = wall_now_ns();
    for (const auto& [key, e] : m.cold) {
        if (key.compare(0, lead.size(), lead) != 0) continue;
        // Expired cold objects read as absent, so they are not listed; damaged ones are
        // (they exist, and a get reports them Corrupt).
        auto rec = m.read_cold(key, e, nullptr);
        if (rec && Impl::expired(rec->info, now_wall)) continue;
        out.push_back(key.substr(bucket.size() + 1));
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

Status TieredObjectStore::checkpoint(bool include_hot) {
    Impl& m = *impl_;
    std::lock_guard lock(m.mu);
    std::string note;
    if (include_hot) {
        for (auto it = m.lru.begin(); it != m.lru.end();) {
            const FabricUri uri = *it++;
            const std::string key = uri.object_key();
            auto got = m.hot->get(uri);
            if (!got) return std::move(got).error();
            if (!got->has_value()) {
                FABRIC_TRY(m.forget_gone(key));
                continue;
            }
            ObjectData& obj = **got;
            Impl::to_tier_info(obj.info);
            auto c = m.cold.find(key);
            if (c != m.cold.end() && c->second.version == obj.info.version && !c->second.torn) continue;
            auto e = m.append(kTypeObject, key, obj.info, obj.data);
            if (!e) return std::move(e).error();
            m.drop_cold(key);
            m.cold.emplace(key, *e);
            m.live_bytes += e->record_len;
            m.floors.erase(key);
        }
    }
    const uint64_t garbage = m.log_end - std::min(m.log_end, m.live_bytes);
    if (m.config.compact_garbage_fraction > 0 && garbage >= kCompactMinGarbage &&
        double(garbage) >= m.config.compact_garbage_fraction * double(m.log_end))
        FABRIC_TRY(m.compact(note));
    if (m.config.fsync != FsyncPolicy::never) FABRIC_TRY(sync_fd(m.log_fd.get(), m.log_path, true));
    FABRIC_TRY(m.write_index());
    ++m.st.checkpoints;
    return {};
}

Status TieredObjectStore::demote_until(uint64_t keep_hot) {
    Impl& m = *impl_;
    std::lock_guard lock(m.mu);
    while (m.lru.size() > keep_hot) {
        const size_t before = m.lru.size();
        FABRIC_TRY(m.demote_front(nullptr));
        if (m.lru.size() == before) break;
    }
    return {};
}

std::string_view TieredObjectStore::tier_of(const FabricUri& uri) {
    Impl& m = *impl_;
    std::lock_guard lock(m.mu);
    auto h = m.hot->head(uri);
    if (h && h->has_value()) return "hot";
    if (m.cold.count(uri.object_key())) return "cold";
    return "absent";
}

TieredStats TieredObjectStore::stats() const {
    Impl& m = *impl_;
    std::lock_guard lock(m.mu);
    TieredStats s = m.st;
    s.hot_objects = m.lru.size();
    s.cold_objects = m.cold.size();
    s.cold_torn = uint64_t(std::count_if(m.cold.begin(), m.cold.end(), [](const auto& kv) { return kv.second.torn; }));
    s.cold_log_bytes = m.log_end;
    s.cold_live_bytes = m.live_bytes;
    s.log_generation = m.generation;
    return s;
}

MemObjectStore& TieredObjectStore::hot() const { return *impl_->hot; }
const TieredConfig& TieredObjectStore::config() const { return impl_->config; }

}  // namespace fabric_shm
