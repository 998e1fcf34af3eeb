// SPDX-License-Identifier: MIT
// Fuzzes the object store's repair and its writers over a store another (possibly malicious or
// crashed) process left damaged. At start-up a real pool (4 MiB) holds a store (table of 1024
// entries, 1 MiB heap) with small objects, a large one (a run of superblocks), an overwritten and a
// removed key, a loan and a pin held open, between two canary regions of a fixed pattern; its
// bytes are kept. Each input is a list of 12-byte patches {u24 offset, u8 length 1-8, 8 value
// bytes} applied inside the store's regions (the first byte odd: the heap only, else the root,
// its table, descriptors, block words and pin records, and the heap). Then, in a read-write
// mapping: the store's region-kind checks as fabric-shm-dump --check runs them, the reaper's
// walk dry and real (the store's repair: dead owners' loans, pins and half-done writes, expired
// objects, superblock drains), then every listed key read (get, head, pin), a put of a new key,
// an overwrite, a loan committed and a remove.
// Properties: no crash, no sanitizer report, a get returns bytes matching their size and CRC,
// and no byte of the data area outside the store's regions changes: whatever a damaged word,
// descriptor, slot or pin record says, a repair or a writer writes only inside its store (a
// sanitizer sees only the mapping's edges, not a write into a neighbouring region).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "canary_pool.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "region_kinds.h"

using namespace fabric_shm;

namespace {

constexpr const char* kPool = "fs";
fuzz::CanaryPool g_pool("fuzz_store", kPool);
std::vector<fuzz::Span> g_store, g_heap;
const char* const kKeys[] = {"a.txt", "dir/b.bin", "c", "large", "gone"};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 7);
    return v;
}

FabricUri uri_of(const std::string& key) { return FabricUri::make(kPool, "b", key).value(); }

void build_template() {
    Pool pool = g_pool.create(4 << 20);
    const Region before = g_pool.canary(pool, "canary-before");
    StoreConfig cfg;
    cfg.table_entries = 1024;
    cfg.heap_bytes = 1 << 20;  // 16 superblocks of 64 KiB: a few size classes and a run
    cfg.ttl = fuzz::kLongTtl;
    auto opened = MemObjectStore::open(pool, cfg);
    if (!opened) g_pool.die(opened.error().message);
    MemObjectStore& store = **opened;
    const Region after = g_pool.canary(pool, "canary-after");
    auto put = [&](const char* key, size_t n, uint8_t seed) {
        PutOptions po;
        po.content_type = "application/octet-stream";
        po.metadata["k"] = key;
        auto r = store.put(uri_of(key), pattern(n, seed), po);
        if (!r) g_pool.die(r.error().message);
    };
    put("a.txt", 100, 1);
    put("dir/b.bin", 1000, 2);
    put("c", 3000, 3);
    put("a.txt", 200, 4);               // an overwrite: the first version retired and freed
    put("large", 40 << 10, 5);          // past a quarter superblock: a run
    put("gone", 50, 6);
    if (auto r = store.remove(uri_of("gone")); !r) g_pool.die(r.error().message);
    // Held while the bytes are captured: a loan (LOANED block) and a pin (a record and the
    // PINNED bit), whose owner is this process's registration in the template.
    auto loan = store.loan(uri_of("loaned"), 500);
    if (!loan) g_pool.die(loan.error().message);
    auto pinned = store.pin(uri_of("dir/b.bin"));
    if (!pinned || !pinned->has_value()) g_pool.die("pin of dir/b.bin");
    for (const RegionInfo& r : pool.regions()) {
        if (r.kind == uint32_t(RegionKind::store) || r.kind == uint32_t(RegionKind::store_heap))
            g_store.push_back({r.offset, r.length});
        if (r.kind == uint32_t(RegionKind::store_heap)) g_heap.push_back({r.offset, r.length});
    }
    if (g_store.size() != 2 || g_heap.size() != 1) g_pool.die("expected one store root and one heap");
    g_pool.capture(pool, g_store, {&before, &after});
}

/// A get that returns bytes returns bytes matching their size and CRC.
void check_get(MemObjectStore& store, const FabricUri& uri) {
    auto got = store.get(uri);
    if (!got || !got->has_value()) return;
    const ObjectData& d = **got;
    if (d.data.size() != d.info.size || crc32(d.data.data(), d.data.size()) != d.info.crc32) {
        std::fprintf(stderr, "fuzz_store: get returned %zu bytes that do not match their size/CRC\n", d.data.size());
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    build_template();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    auto pool = g_pool.open_damaged(data, size, g_heap, g_store);
    if (!pool) return 0;
    g_pool.reap_and_check(*pool, /*dry=*/true);
    g_pool.reap_and_check(*pool, /*dry=*/false);
    {
        auto store = MemObjectStore::attach(*pool);
        if (store) {
            MemObjectStore& s = **store;
            (void)s.stats();
            if (auto keys = s.list(kPool, "b", "")) {
                for (const std::string& key : *keys) {
                    auto uri = FabricUri::make(kPool, "b", key);
                    if (!uri) continue;  // a damaged key is listed as it is
                    (void)s.head(*uri);
                    check_get(s, *uri);
                    if (auto view = s.pin(*uri); view && view->has_value()) (void)(*view)->verify();
                }
            }
            for (const char* key : kKeys) check_get(s, uri_of(key));
            (void)s.put(uri_of("new"), pattern(300, 7));
            (void)s.put(uri_of("a.txt"), pattern(700, 8));
            if (auto loan = s.loan(uri_of("loaned-now"), 200)) {
                std::fill(loan->bytes().begin(), loan->bytes().end(), uint8_t(0x5a));
                (void)loan->commit();
            }
            (void)s.remove(uri_of("c"));
            check_get(s, uri_of("new"));
            check_get(s, uri_of("a.txt"));
        }
    }
    g_pool.check_outside_unchanged(*pool, "the store's readers and writers");
    return 0;
}
