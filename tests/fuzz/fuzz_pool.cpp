// SPDX-License-Identifier: MIT
// Fuzzes attaching to a segment another (possibly malicious or crashed) process wrote:
// Pool::open read-only, then everything a reader does with it (regions, leases, registry,
// region-kind checks as fabric-shm-dump --check runs them, the object store's attach, list,
// head and get). Any crash, sanitizer report or write to the read-only mapping is a defect.
//
// At start-up a real pool (1 MiB, two test regions, a store with three objects) is built in
// a private $FABRIC_SHM_DIR and its bytes kept as the template. Each input is then one of:
//   byte 0 % 4 == 0  raw: the rest of the input IS the whole segment file
//   byte 0 % 4 == 1  header: the template with its first bytes replaced by the input
//   byte 0 % 4 == 2  patches: records of 12 bytes {u24 offset, u8 length 1-8, 8 value bytes}
//                    written over the template (offset modulo the segment size)
//   byte 0 % 4 == 3  truncated patches: byte 1-3 = new file length (modulo the size), then
//                    patches as above
// A store get that returns bytes must return bytes matching their CRC (readers never hand
// out torn or damaged objects).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "region_kinds.h"

using namespace fabric_shm;

namespace {

constexpr const char* kPool = "fz";
std::string g_dir;
std::string g_path;
std::vector<uint8_t> g_template;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "fuzz_pool: setup failed: %s\n", what.c_str());
    std::abort();
}

void remove_dir() {
    if (g_dir.empty()) return;
    if (DIR* d = opendir(g_dir.c_str())) {
        while (dirent* e = readdir(d))
            if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
                ::unlink((g_dir + "/" + e->d_name).c_str());
        closedir(d);
    }
    ::rmdir(g_dir.c_str());
}

std::vector<uint8_t> read_file(const std::string& path) {
    std::vector<uint8_t> bytes;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) die("open " + path);
    uint8_t buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + n);
    std::fclose(f);
    return bytes;
}

void write_file(const std::vector<uint8_t>& bytes, size_t length) {
    const int fd = ::open(g_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) die("write " + g_path);
    size_t done = 0;
    while (done < length) {
        const ssize_t w = ::write(fd, bytes.data() + done, length - done);
        if (w <= 0) die("short write " + g_path);
        done += size_t(w);
    }
    ::close(fd);
}

void build_template() {
    char tmpl[] = "/dev/shm/fabric-fuzz-pool-XXXXXX";
    if (!mkdtemp(tmpl)) die("mkdtemp");
    g_dir = tmpl;
    std::atexit(remove_dir);
    setenv("FABRIC_SHM_DIR", g_dir.c_str(), 1);
    g_path = Pool::segment_path(kPool);

    auto pool = Pool::create({kPool, 1 << 20});
    if (!pool) die(pool.error().message);
    RegionSpec spec;
    spec.name = "fuzz-a";
    spec.length = 8192;
    auto a = pool->create_region(spec);
    if (!a) die(a.error().message);
    spec.name = "fuzz-b";
    spec.parent = a->ref();
    auto b = pool->create_region(spec);
    if (!b) die(b.error().message);
    StoreConfig cfg;
    cfg.table_entries = 1024;
    cfg.heap_bytes = 256 << 10;
    auto store = MemObjectStore::open(*pool, cfg);
    if (!store) die(store.error().message);
    const char* keys[] = {"a.txt", "dir/b.bin", "c"};
    for (int i = 0; i < 3; ++i) {
        std::vector<uint8_t> data(size_t(100 + 900 * i), uint8_t('A' + i));
        PutOptions po;
        po.content_type = "text/plain";
        po.metadata["k"] = "v";
        auto r = (*store)->put(FabricUri::make(kPool, "b", keys[i]).value(), data, po);
        if (!r) die(r.error().message);
    }
    // Snapshot while this process is registered and holds handles: a realistic live pool.
    g_template = read_file(g_path);
}

void exercise(const Pool& pool) {
    const MonoTime now = MonoClock::now();
    (void)pool.lifecycle();
    (void)pool.wholly_expired(now);
    (void)pool.pool_lease_id();
    (void)pool.check_mapping();
    (void)pool.registry().list(now);
    for (const LeaseInfo& l : pool.leases()) (void)pool.lease(l.lease_id);
    for (const RegionInfo& r : pool.regions()) {
        (void)pool.region_info(r.ref);
        if (const RegionKindOps* ops = region_kind_ops(r.kind); ops && ops->check) {
            std::vector<std::string> violations, in_progress;
            ops->check(pool, r, violations, in_progress);
        }
        if (auto h = pool.open_region(r.ref)) (void)h->check(now);
    }
    // The reaper's walk as `fabric-shm reap --dry-run` runs it (read-only: it judges, writes nothing).
    Pool walker = pool;  // a handle of its own: reap() is not a const call
    (void)walker.reap(now, /*dry_run=*/true, /*allow_pool_removal=*/false);
    auto store = MemObjectStore::attach(pool, "default");
    if (!store) return;
    (void)(*store)->stats();
    // Placement hints read only descriptors (whatever the mutation left in them), write nothing.
    for (uint64_t b = 0; b < 4096; ++b) (*store)->prefetch(PlacementHint(((b + 1) << 32) | ((b * 977) & 0xffffffff)));
    (*store)->prefetch(PlacementHint(~uint64_t(0)));
    auto keys = (*store)->list(kPool, "b", "");
    if (!keys) return;
    for (const std::string& key : keys.value()) {
        auto uri = FabricUri::make(kPool, "b", key);
        if (!uri) continue;  // a damaged key is listed as it is; it need not be a valid URI
        (void)(*store)->head(*uri);
        auto got = (*store)->get(*uri);
        if (got && got->has_value()) {
            const ObjectData& d = **got;
            if (d.data.size() != d.info.size || crc32(d.data.data(), d.data.size()) != d.info.crc32) {
                std::fprintf(stderr, "fuzz_pool: get returned %zu bytes that do not match their size/CRC\n",
                             d.data.size());
                std::abort();
            }
        }
    }
}

uint32_t le(const uint8_t* p, int n) {
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint32_t(p[i]) << (8 * i);
    return v;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    build_template();
    return 0;
}

/// The segment file holds the template except where `dirty` says; patches are written with
/// pwrite and undone after each input, so an input costs a few small writes, not 1 MiB.
static bool g_file_is_template = false;

static void put_bytes(int fd, const uint8_t* p, size_t n, size_t off) {
    if (::pwrite(fd, p, n, off_t(off)) != ssize_t(n)) die("pwrite " + g_path);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const uint8_t mode = data[0] % 4;
    ++data;
    --size;
    std::vector<std::pair<size_t, size_t>> undo;  // (offset, length) to restore from the template
    if (mode == 0 || mode == 3) {
        if (mode == 0) {
            write_file(std::vector<uint8_t>(data, data + size), size);
        } else {
            if (size < 3) return 0;
            std::vector<uint8_t> seg = g_template;
            const size_t length = le(data, 3) % seg.size();
            for (data += 3, size -= 3; size >= 12; data += 12, size -= 12) {
                const size_t off = le(data, 3) % seg.size();
                const size_t n = std::min<size_t>(1 + data[3] % 8, seg.size() - off);
                std::memcpy(seg.data() + off, data + 4, n);
            }
            write_file(seg, length);
        }
        g_file_is_template = false;
    } else {
        if (!g_file_is_template) write_file(g_template, g_template.size());
        g_file_is_template = true;
        const int fd = ::open(g_path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) die("open " + g_path);
        if (mode == 1) {
            const size_t n = std::min(size, g_template.size());
            put_bytes(fd, data, n, 0);
            undo.push_back({0, n});
        } else {
            for (; size >= 12; data += 12, size -= 12) {
                const size_t off = le(data, 3) % g_template.size();
                const size_t n = std::min<size_t>(1 + data[3] % 8, g_template.size() - off);
                put_bytes(fd, data + 4, n, off);
                undo.push_back({off, n});
            }
        }
        ::close(fd);
    }
    {
        OpenOptions oo;
        oo.read_only = true;
        auto pool = Pool::open(kPool, oo);
        if (pool) exercise(*pool);
        else if (pool.error().message.empty()) std::abort();  // every refusal explains itself
    }
    if (!undo.empty()) {
        const int fd = ::open(g_path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) die("open " + g_path);
        for (auto it = undo.rbegin(); it != undo.rend(); ++it) put_bytes(fd, g_template.data() + it->first, it->second, it->first);
        ::close(fd);
    }
    return 0;
}
