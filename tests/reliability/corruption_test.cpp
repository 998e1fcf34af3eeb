// SPDX-License-Identifier: MIT
// Corruption: a real pool (regions, a store with objects, a live registration) is copied and
// random bytes are flipped in one structure at a time (header, registry, directory, store
// table, store heap), hundreds of times. On every damaged copy:
//  - fabric-shm-dump --check --json (and the text form every 4th time) must exit 0, 1 or 3,
//    never by a signal or a sanitizer, and print valid JSON; its SIGBUS/SIGSEGV guard must not
//    fire (a guarded fault means reading code left the mapping: a missing bounds check);
//  - in a forked child, Pool::open read-only plus everything a reader does (regions, leases,
//    registry, region-kind checks, store list/head/get) must return, never crash or hang,
//    and a store get must return the original bytes or an error, never other bytes;
//  - then Pool::open read-write in the child (registration, reaping, a put) must not crash
//    or hang either.
// FABRIC_RELIABILITY_SEED and FABRIC_RELIABILITY_ITERATIONS override the defaults (1, 300);
// a failure message names the iteration and the flipped offsets, so one seed reproduces it.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../support/test_support.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"
#include "region_kinds.h"

using namespace fabric_shm;
namespace L = fabric_shm::layout;

namespace {

uint64_t env_u64(const char* name, uint64_t fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

std::vector<uint8_t> read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, bytes.data(), bytes.size()) == ssize_t(bytes.size()));
    ::close(fd);
}

struct Area {
    std::string name;
    uint64_t begin = 0, end = 0;
    std::vector<uint64_t> nonzero;  ///< offsets of non-zero template bytes: flips that matter
};

struct Healthy {
    std::vector<uint8_t> bytes;
    std::vector<Area> areas;
    std::map<std::string, std::vector<uint8_t>> objects;  ///< key -> content
};

/// Builds a 2 MiB pool with two test regions and a store holding a few objects, snapshots
/// it while this process is registered and attached, then closes it.
Healthy build_pool(const std::string& name) {
    Healthy h;
    auto pool = Pool::create({name, 2u << 20});
    REQUIRE_MESSAGE(pool, pool.error().message);
    RegionSpec spec;
    spec.name = "rel-a";
    spec.length = 8192;
    auto a = pool->create_region(spec);
    REQUIRE_MESSAGE(a, a.error().message);
    spec.name = "rel-b";
    spec.parent = a->ref();
    auto b = pool->create_region(spec);
    REQUIRE_MESSAGE(b, b.error().message);
    StoreConfig cfg;
    cfg.table_entries = 1024;
    cfg.heap_bytes = 512 << 10;
    auto store = MemObjectStore::open(*pool, cfg);
    REQUIRE_MESSAGE(store, store.error().message);
    for (int i = 0; i < 6; ++i) {
        const std::string key = "obj-" + std::to_string(i) + (i % 2 ? "/nested.bin" : ".txt");
        std::vector<uint8_t> data(size_t(50 + 700 * i));
        for (size_t j = 0; j < data.size(); ++j) data[j] = uint8_t(j * 7 + i);
        PutOptions po;
        po.content_type = "application/octet-stream";
        po.metadata["i"] = std::to_string(i);
        auto r = (*store)->put(FabricUri::make(name, "b", key).value(), data, po);
        REQUIRE_MESSAGE(r, r.error().message);
        h.objects[key] = data;
    }
    REQUIRE((*store)->remove(FabricUri::make(name, "b", "obj-0.txt").value()).value());  // a tombstone/free block
    h.objects.erase("obj-0.txt");

    h.areas.push_back({"header", 0, L::kRegistryOffset, {}});
    h.areas.push_back({"registry", L::kRegistryOffset, L::kDirectoryOffset, {}});
    h.areas.push_back({"directory", L::kDirectoryOffset, L::kDataOffset, {}});
    for (const RegionInfo& r : pool->regions()) {
        if (r.kind == uint32_t(RegionKind::store)) h.areas.push_back({"store table", r.offset, r.offset + r.length, {}});
        if (r.kind == uint32_t(RegionKind::store_heap)) h.areas.push_back({"store heap", r.offset, r.offset + r.length, {}});
    }
    REQUIRE(h.areas.size() == 5);
    h.bytes = read_file(Pool::segment_path(name));
    REQUIRE(h.bytes.size() == pool->size());
    for (Area& area : h.areas)
        for (uint64_t o = area.begin; o < area.end; ++o)
            if (h.bytes[o] != 0) area.nonzero.push_back(o);
    return h;
}

/// What a reader does with a pool; returns 0, or 10 when a get returned bytes that are not
/// the object's original content.
int read_everything(const Pool& pool, const std::string& name, const Healthy& h) {
    const uint64_t now = mono_now_ns();
    (void)pool.lifecycle();
    (void)pool.wholly_expired(MonoClock::from_ns(now));
    (void)pool.registry().list(MonoClock::from_ns(now));
    for (const LeaseInfo& l : pool.leases()) (void)pool.lease(l.lease_id);
    for (const RegionInfo& r : pool.regions()) {
        if (const RegionKindOps* ops = region_kind_ops(r.kind); ops && ops->check) {
            std::vector<std::string> violations, in_progress;
            ops->check(pool, r, violations, in_progress);
        }
    }
    auto store = MemObjectStore::attach(pool, "default");
    if (!store) return 0;
    (void)(*store)->stats();
    (void)(*store)->list(name, "b", "");
    for (const auto& [key, content] : h.objects) {
        const FabricUri uri = FabricUri::make(name, "b", key).value();
        (void)(*store)->head(uri);
        auto got = (*store)->get(uri);
        if (got && got->has_value() && (*got)->data != content) {
            std::fprintf(stderr, "corruption: get %s returned %zu bytes that are not its content\n", key.c_str(),
                         (*got)->data.size());
            return 10;
        }
    }
    return 0;
}

}  // namespace

TEST_CASE("corruption: flipped bytes in every structure never crash dump --check or Pool::open") {
    const std::string name = test::unique_pool_name("corrupt");
    test::PoolCleanup cleanup(name);
    const std::string path = Pool::segment_path(name);
    const Healthy h = build_pool(name);

    const uint64_t seed = env_u64("FABRIC_RELIABILITY_SEED", 1);
    const uint64_t iterations = env_u64("FABRIC_RELIABILITY_ITERATIONS", 300);
    std::mt19937_64 rng(seed);
    const std::string dump = test::build_path("tools/dump/fabric-shm-dump");
    // A sanitizer report must not look like exit 1 ("runtime error"): give it its own code.
    const std::string env = "ASAN_OPTIONS=detect_leaks=1:exitcode=86 UBSAN_OPTIONS=halt_on_error=1:exitcode=87 ";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(env_u64("FABRIC_RELIABILITY_SECONDS", 15));

    std::map<int, int> dump_exits;
    std::map<std::string, int> errors;  // dump error code -> count
    int rw_opened = 0, ro_opened = 0;
    uint64_t done = 0;
    for (uint64_t it = 0; it < iterations && std::chrono::steady_clock::now() < deadline; ++it, ++done) {
        const Area& area = h.areas[it % h.areas.size()];
        std::vector<uint8_t> bytes = h.bytes;
        std::ostringstream flips;
        const int n = 1 + int(rng() % 8);
        for (int k = 0; k < n; ++k) {
            const uint64_t off = (rng() % 4 != 0 && !area.nonzero.empty())
                                     ? area.nonzero[rng() % area.nonzero.size()]
                                     : area.begin + rng() % (area.end - area.begin);
            const uint8_t v = (rng() % 2) ? uint8_t(bytes[off] ^ (1u << (rng() % 8))) : uint8_t(rng());
            flips << " @" << off << "=" << unsigned(v);
            bytes[off] = v;
        }
        const std::string what = "iteration " + std::to_string(it) + " (seed " + std::to_string(seed) + "), " +
                                 area.name + ", flips" + flips.str();
        write_file(path, bytes);

        std::string out;
        const int rc = test::run_command(env + dump + " --pool " + name + " --check --json 2>/dev/null", &out);
        ++dump_exits[rc];
        CHECK_MESSAGE((rc == 0 || rc == 1 || rc == 3), what << ": dump exited " << rc << "\n" << out.substr(0, 2000));
        const nlohmann::json doc = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
        CHECK_MESSAGE(doc.is_object(), what << ": dump printed no valid JSON: " << out.substr(0, 2000));
        if (doc.is_object() && doc.contains("error")) {
            const std::string code = doc["error"].value("code", "?");
            const std::string message = doc["error"].value("message", "");
            ++errors[code];
            CHECK_MESSAGE(message.find("SIGSEGV") == std::string::npos, what << ": the dump's fault guard fired: " << message);
            CHECK_MESSAGE(message.find("SIGBUS") == std::string::npos, what << ": the dump's fault guard fired: " << message);
        }
        if (it % 4 == 0) {
            const int trc = test::run_command(env + dump + " --pool " + name + " --check >/dev/null 2>&1");
            CHECK_MESSAGE((trc == 0 || trc == 1 || trc == 3), what << ": text dump exited " << trc);
        }

        // In-process: read-only first (the file is unchanged by it), then read-write.
        const pid_t child = test::fork_child([&] {
            OpenOptions ro;
            ro.read_only = true;
            int result = 0;
            if (auto pool = Pool::open(name, ro)) result = read_everything(*pool, name, h) ? 10 : 1;
            if (result == 10) return 10;
            auto pool = Pool::open(name);
            if (!pool) return result;  // 0: read-only refused too; 1: read-only opened
            (void)read_everything(*pool, name, h);
            (void)pool->reap(MonoClock::now());
            if (auto store = MemObjectStore::attach(*pool, "default")) {
                std::vector<uint8_t> data(300, 0x5a);
                (void)(*store)->put(FabricUri::make(name, "b", "new").value(), data);
                auto got = (*store)->get(FabricUri::make(name, "b", "new").value());
                if (got && got->has_value() && (*got)->data != data) return 11;
            }
            return result + 2;
        });
        const int crc = test::wait_child(child, 20000);
        CHECK_MESSAGE((crc >= 0 && crc <= 3), what << ": in-process open/read child "
                                                  << (crc == -1 ? "hung (killed after 20 s)"
                                                      : crc == 10 ? "got other bytes from a read-only get"
                                                      : crc == 11 ? "got other bytes back from a read-write put/get"
                                                                  : "exited " + std::to_string(crc)));
        if (crc == 1 || crc == 3) ++ro_opened;
        if (crc == 2 || crc == 3) ++rw_opened;
    }
    std::ostringstream summary;
    summary << done << " iterations; dump exits:";
    for (auto [rc, count] : dump_exits) summary << " " << rc << "x" << count;
    summary << "; dump errors:";
    for (const auto& [code, count] : errors) summary << " " << code << "x" << count;
    summary << "; Pool::open read-only ok " << ro_opened << ", read-write ok " << rw_opened;
    MESSAGE(summary.str());
    std::printf("corruption: %s\n", summary.str().c_str());
    // The budget is wall time: on a loaded machine (each tool start can take 100+ ms) fewer
    // iterations run; say so rather than fail. A quiet 2-vCPU machine runs all 300 in ~10 s.
    if (done < iterations)
        std::printf("corruption: ran %llu of %llu iterations within the time budget (FABRIC_RELIABILITY_SECONDS)\n", (unsigned long long)done,
                    (unsigned long long)iterations);
    CHECK(done >= 1);
}
