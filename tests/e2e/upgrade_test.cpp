// SPDX-License-Identifier: MIT
// The upgrade procedure seen from the command line (docs/upgrades.md): a drained pipeline is
// exported with `fabric-shm pool export`, imported into another pool with `pool import`,
// and a worker there processes exactly what had not been consumed. Also the archive file
// itself: binary keys and values survive, a damaged file is refused before anything is written.
#include <doctest/doctest.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <map>
#include <string>

#include "../../tools/fabric-shm/archive_format.h"
#include "e2e_support.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/topic.h"

using namespace fabric_shm;
using namespace fabric_shm::e2e;

namespace {

/// `fabric-shm ARGS`: its exit status, *out what it printed (stdout and stderr).
int run_cli(const std::string& args, std::string* out) { return sh(q(cli_bin()) + " " + args + " 2>&1", out); }

struct Upgrade {
    ScratchDir dir;
    PoolFixture from{"upgrade-from"}, to{"upgrade-to"};
    std::string archive = dir.path + "/pool.fsa";

    int cli(const std::string& args, std::string* out) const { return run_cli(args, out); }
    void produce(const PoolFixture& p, const std::vector<std::string>& names) const {
        std::string files;
        for (const std::string& n : names) files += " " + q(dir.file(n, "content of " + n));
        std::string out;
        REQUIRE_MESSAGE(sh(q(producer_bin()) + " --pool " + p.name + " --bucket uploads --topic ev --quiet" + files + " 2>&1",
                           &out) == 0,
                        out);
    }
    /// Export refuses while other processes are registered: this test process is one, until
    /// it lets its handle on the exported pool go.
    void release_from() { from.pool = Pool(); }
    /// A worker until idle; its JSON summary.
    std::string work(const PoolFixture& p) const {
        Proc w(q(worker_bin()) + " --pool " + p.name + " --topic ev --group g --builtin upper --exit-when-idle 800ms --json");
        CHECK_MESSAGE(w.wait(30000) == 0, w.err());
        return w.out();
    }
};

size_t topic_count(Pool& pool) { return TopicManager(pool).list().size(); }

/// The pool's store regions (tables and heaps): none when no store was created.
size_t store_regions(const Pool& pool) {
    size_t n = 0;
    for (const RegionInfo& r : pool.regions())
        n += r.kind == uint32_t(RegionKind::store) || r.kind == uint32_t(RegionKind::store_heap);
    return n;
}

/// Writes an archive of `records` (after a pool record); an object's payload is `payloads[key]`,
/// or "hi".
void write_archive(const std::string& path, const std::vector<nlohmann::json>& records,
                   const std::map<std::string, std::string>& payloads = {}) {
    auto w = cli::archive::Writer::open(path);
    REQUIRE(w.ok());
    REQUIRE(w->write({{"type", "pool"}, {"name", "crafted"}, {"size_bytes", 32u << 20}}).ok());
    for (const nlohmann::json& h : records) {
        std::string payload;
        if (h["type"] == "object") {
            const auto p = payloads.find(h["key"].get<std::string>());
            payload = p == payloads.end() ? "hi" : p->second;
        }
        REQUIRE(w->write(h, std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size())).ok());
    }
    REQUIRE(w->finish().ok());
}

/// Archive records as `pool export` writes them: a store (0: derived from the pool), an object
/// (its payload given to write_archive), a topic.
nlohmann::json store_record(const std::string& name, uint64_t heap_bytes = 0, uint64_t max_object_bytes = 0) {
    return {{"type", "store"}, {"name", name}, {"table_entries", 0}, {"heap_bytes", heap_bytes},
            {"max_object_bytes", max_object_bytes}};
}
nlohmann::json object_record(const std::string& store, const std::string& key) {
    return {{"type", "object"}, {"store", store}, {"bucket", "uploads"}, {"key", key}, {"version", 1},
            {"content_type", ""}, {"metadata", nlohmann::json::object()}, {"created_wall_ns", 0}, {"expires_wall_ns", 0}};
}
nlohmann::json topic_record(const std::string& name = "ev", uint32_t partitions = 1) {
    return {{"type", "topic"}, {"name", name}, {"num_partitions", partitions}, {"partition_capacity", 16},
            {"partition_stride", 512}, {"on_full", "block"}, {"ttl_ns", 0}};
}

/// `fabric-shm pool import --json` of the archive at `path` into pool `pool`.
int import_archive(const std::string& pool, const std::string& path, std::string* out) {
    return run_cli("pool import --json --pool " + pool + " " + q(path), out);
}

}  // namespace

TEST_CASE("pool export then import: objects, unconsumed notifications and committed offsets carry over; "
          "the new pool's worker processes exactly what was not consumed") {
    Upgrade u;
    u.produce(u.from, {"a", "b", "c"});
    CHECK(json_number(u.work(u.from), "processed") == 3);
    // Not consumed yet: two new inputs and a new version of "a".
    u.produce(u.from, {"d", "e", "a"});

    std::string out;
    u.release_from();
    REQUIRE_MESSAGE(u.cli("pool export --pool " + u.from.name + " " + q(u.archive), &out) == 0, out);
    CHECK(out.find("3 unconsumed messages") != std::string::npos);
    REQUIRE_MESSAGE(u.cli("pool import --pool " + u.to.name + " " + q(u.archive) + " --json", &out) == 0, out);
    CHECK(json_number(out, "messages") == 3);
    CHECK(json_number(out, "groups") == 1);

    const std::string summary = u.work(u.to);
    CHECK_MESSAGE(json_number(summary, "processed") == 3, summary);  // d, e and the new "a"
    CHECK(json_number(summary, "skipped") == 0);
    CHECK(json_number(summary, "dead_lettered") == 0);
    for (std::string k : {"a", "b", "c", "d", "e"}) {
        std::string upper = "CONTENT OF " + k;
        upper.back() = char(upper.back() - 'a' + 'A');
        CHECK(get_text(u.to.pool, u.to.uri("results", "uploads/" + k)) == upper);
    }
    // Results name their input in the new pool, with the input's version there.
    const std::string result_b = u.to.uri("results", "uploads/b");
    CHECK(result_metadata(u.to.pool, result_b, "input-uri") == u.to.uri("uploads", "b"));
    CHECK(result_metadata(u.to.pool, result_b, "input-version") ==
          std::to_string(object_version(u.to.pool, u.to.uri("uploads", "b"))));
    // Nothing left: a second worker finds no lag.
    CHECK(json_number(u.work(u.to), "processed") == 0);
}

TEST_CASE("pool export refuses while another process is registered, naming it; --allow-live exports anyway") {
    Upgrade u;
    u.produce(u.from, {"a"});
    Proc worker(q(worker_bin()) + " --pool " + u.from.name + " --topic ev --group g --builtin upper");
    REQUIRE(eventually([&] { return alive_members(u.from.pool, "ev", "g") == 1; }));
    u.release_from();
    std::string out;
    CHECK(u.cli("pool export --pool " + u.from.name + " " + q(u.archive), &out) != 0);
    CHECK_MESSAGE(out.find(std::to_string(worker.pid())) != std::string::npos, out);
    CHECK(out.find("--allow-live") != std::string::npos);
    CHECK(access(u.archive.c_str(), F_OK) != 0);  // nothing written
    CHECK_MESSAGE(u.cli("pool export --allow-live --pool " + u.from.name + " " + q(u.archive), &out) == 0, out);
}

TEST_CASE("pool import refuses, before writing anything, a pool that already holds one of the archive's topics or objects") {
    Upgrade u;
    u.produce(u.from, {"a", "b"});
    std::string out;
    u.release_from();
    REQUIRE_MESSAGE(u.cli("pool export --pool " + u.from.name + " " + q(u.archive), &out) == 0, out);
    u.produce(u.to, {"b"});  // the same object and topic already in the target
    const size_t before = count_keys(u.to.pool, "uploads");
    CHECK(u.cli("pool import --pool " + u.to.name + " " + q(u.archive), &out) != 0);
    CHECK_MESSAGE(out.find("already exists") != std::string::npos, out);
    CHECK(count_keys(u.to.pool, "uploads") == before);
}

TEST_CASE("pool import refuses, before writing anything, an object larger than the target store takes") {
    Upgrade u;
    {
        auto from = MemObjectStore::open(u.from.pool);
        REQUIRE(from.ok());
        for (const char* key : {"a", "m", "z"}) REQUIRE((*from)->put(*FabricUri::parse(u.from.uri("uploads", key)), std::vector<uint8_t>(16, 'x')));
        REQUIRE((*from)->put(*FabricUri::parse(u.from.uri("uploads", "big")), std::vector<uint8_t>(200 << 10, 'b')));
    }
    std::string out;
    u.release_from();
    REQUIRE_MESSAGE(u.cli("pool export --pool " + u.from.name + " " + q(u.archive), &out) == 0, out);
    StoreConfig small;  // the target's store exists already, taking objects up to 64 KiB
    small.max_object_bytes = 64 << 10;
    REQUIRE(MemObjectStore::open(u.to.pool, small).ok());
    CHECK(import_archive(u.to.name, u.archive, &out) != 0);
    INFO(out);
    CHECK(out.find("\"code\":\"object_too_large\"") != std::string::npos);
    CHECK(out.find("204800 bytes") != std::string::npos);
    CHECK(out.find("65536") != std::string::npos);
    CHECK(out.find("nothing was imported") != std::string::npos);
    CHECK(count_keys(u.to.pool, "uploads") == 0);
}

TEST_CASE("pool import refuses, before writing anything, an object larger than a store it would create takes, "
          "wherever the store's record is") {
    ScratchDir dir;
    using nlohmann::json;
    // All fields 0: the store derives its geometry from the pool it is created in (as it does
    // with no record at all). In a 4 MiB pool: a 2 MiB heap, objects up to 512 KiB.
    const json store = store_record("default");
    const auto object = [](const char* key) { return object_record("default", key); };
    const json topic = topic_record();
    const std::map<std::string, std::string> payloads = {{"big", std::string(600 << 10, 'b')}};
    struct Case {
        const char* what;
        std::vector<json> records;
    };
    const std::vector<Case> cases = {
        {"the exporter's order: the store's record, then its objects", {store, object("a"), object("big"), topic}},
        {"the store's record after its objects", {object("a"), object("big"), store, topic}},
        {"no store record", {object("a"), object("big"), topic}},
    };
    int i = 0;
    for (const Case& c : cases) {
        const std::string what = c.what;
        CAPTURE(what);
        PoolFixture to("upgrade-derived", 4 << 20);  // a fresh, small target each
        REQUIRE(MemObjectStore::plan(to.pool)->max_object_bytes == 512u << 10);
        const std::string path = dir.path + "/derived-" + std::to_string(i++) + ".fsa";
        write_archive(path, c.records, payloads);
        std::string out;
        CHECK(import_archive(to.name, path, &out) != 0);
        INFO(out);
        CHECK(out.find("\"code\":\"object_too_large\"") != std::string::npos);
        CHECK(out.find(to.uri("uploads", "big")) != std::string::npos);
        CHECK(out.find("614400 bytes") != std::string::npos);
        CHECK(out.find("store 'default'") != std::string::npos);
        CHECK(out.find("524288") != std::string::npos);  // the derived limit (the CLI names it --max-object-size)
        CHECK(out.find("nothing was imported") != std::string::npos);
        // Nothing written: no store (so not the small object either), no topic.
        CHECK(store_regions(to.pool) == 0);
        CHECK(MemObjectStore::attach(to.pool).code() == Errc::not_found);
        CHECK(count_keys(to.pool, "uploads") == 0);
        CHECK(topic_count(to.pool) == 0);
    }
}

TEST_CASE("pool import refuses, before writing anything, a store record the pool would refuse and stores that together "
          "outgrow the pool") {
    ScratchDir dir;
    using nlohmann::json;
    const auto store = [](const char* name, uint64_t heap, uint64_t max) { return store_record(name, heap, max); };
    const json object = object_record("first", "a");
    const json topic = topic_record();
    {
        INFO("a second store whose largest object does not fit its heap: the first is not created either");
        PoolFixture to("upgrade-geometry");
        const std::string path = dir.path + "/geometry.fsa";
        write_archive(path, {store("first", 0, 0), object, store("second", 256 << 10, 1 << 20), topic});
        std::string out;
        CHECK(import_archive(to.name, path, &out) != 0);
        INFO(out);
        CHECK(out.find("\"code\":\"invalid_argument\"") != std::string::npos);
        CHECK(out.find("store 'second'") != std::string::npos);
        // The library's own reason, with both sizes.
        CHECK(out.find("max object size 1048576 does not fit the store heap of 262144 bytes") != std::string::npos);
        CHECK(out.find("nothing was imported") != std::string::npos);
        CHECK(store_regions(to.pool) == 0);
        CHECK(topic_count(to.pool) == 0);
    }
    {
        INFO("a store record whose largest object is 2^64 - 1 bytes: refused in pass 1, not created unattachable");
        PoolFixture to("upgrade-huge-max");
        const std::string path = dir.path + "/huge-max.fsa";
        write_archive(path, {store("first", 0, std::numeric_limits<uint64_t>::max()), object, topic});
        std::string out;
        CHECK(import_archive(to.name, path, &out) != 0);
        INFO(out);
        CHECK(out.find("\"code\":\"invalid_argument\"") != std::string::npos);
        CHECK(out.find("store 'first'") != std::string::npos);
        CHECK(out.find("max object size 18446744073709551615 does not fit the store heap") != std::string::npos);
        CHECK(out.find("nothing was imported") != std::string::npos);
        CHECK(store_regions(to.pool) == 0);
        CHECK(topic_count(to.pool) == 0);
    }
    {
        INFO("two stores of 4 MiB heaps in an 8 MiB pool: each fits alone, not both");
        PoolFixture to("upgrade-space", 8 << 20);
        StoreConfig one;
        one.name = "first";
        one.heap_bytes = 4 << 20;
        StoreConfig two = one;
        two.name = "second";
        const uint64_t need = MemObjectStore::plan(to.pool, one)->region_bytes + MemObjectStore::plan(to.pool, two)->region_bytes;
        REQUIRE(MemObjectStore::plan(to.pool, one)->region_bytes < to.pool.settings().data_size);
        const std::string path = dir.path + "/space.fsa";
        write_archive(path, {store("first", 4 << 20, 0), object, store("second", 4 << 20, 0), topic});
        std::string out;
        CHECK(import_archive(to.name, path, &out) != 0);
        INFO(out);
        CHECK(out.find("\"code\":\"capacity_exceeded\"") != std::string::npos);
        CHECK(out.find("need " + std::to_string(need) + " bytes") != std::string::npos);
        CHECK(out.find("nothing was imported") != std::string::npos);
        CHECK(store_regions(to.pool) == 0);
        CHECK(topic_count(to.pool) == 0);
    }
}

TEST_CASE("pool import refuses, before writing anything, stores and topics whose regions outnumber the free entries of "
          "the pool's region directory") {
    ScratchDir dir;
    using nlohmann::json;
    PoolFixture to("upgrade-directory");
    const PoolSettings settings = to.pool.settings();
    REQUIRE(settings.directory_entries == 1024);
    // The directory filled up to 5 free entries, with regions of one page (bytes are plenty).
    constexpr size_t kFree = 5;
    const size_t fill = settings.directory_entries - to.pool.regions().size() - kFree;
    for (size_t i = 0; i < fill; ++i) {
        RegionSpec spec;
        spec.kind = RegionKind::test;
        spec.name = "filler-" + std::to_string(i);
        spec.length = 4096;
        auto r = to.pool.create_region(spec);
        REQUIRE_MESSAGE(r, r.error().message);
    }
    REQUIRE(to.pool.regions().size() == settings.directory_entries - kFree);
    const size_t regions_before = to.pool.regions().size();
    const auto store = [](const char* name) { return store_record(name, 256 << 10); };
    const auto topic = [](const char* name, uint32_t partitions) { return topic_record(name, partitions); };
    struct Case {
        const char* what;
        std::vector<json> records;
        std::string says;
    };
    // Each case would write its first regions before meeting the full directory: two stores
    // (4 regions) and a topic's root, then its first partition finds no entry.
    const std::vector<Case> cases = {
        {"two stores and a topic of 2 partitions", {store("first"), store("second"), topic("ev", 2)},
         "the import creates 7 regions in pool '" + to.name + "' (4 for 2 stores, 3 for 1 topics"},
        {"one store and two topics", {store("first"), topic("ev", 1), topic("dlq", 1)},
         "the import creates 6 regions in pool '" + to.name + "' (2 for 1 stores, 4 for 2 topics"},
    };
    int i = 0;
    for (const Case& c : cases) {
        const std::string what = c.what;
        CAPTURE(what);
        const std::string path = dir.path + "/directory-" + std::to_string(i++) + ".fsa";
        write_archive(path, c.records);
        std::string out;
        CHECK(import_archive(to.name, path, &out) != 0);
        INFO(out);
        CHECK(out.find("\"code\":\"capacity_exceeded\"") != std::string::npos);
        CHECK(out.find(c.says) != std::string::npos);
        CHECK(out.find("more than the 5 free entries of its region directory (1019 of 1024 taken)") != std::string::npos);
        CHECK(out.find("nothing was imported") != std::string::npos);
        CHECK(store_regions(to.pool) == 0);
        CHECK(topic_count(to.pool) == 0);
        CHECK(to.pool.regions().size() == regions_before);
    }
}

TEST_CASE("a truncated or foreign archive is refused with a typed error and nothing is imported") {
    Upgrade u;
    u.produce(u.from, {"a", "b"});
    std::string out;
    u.release_from();
    REQUIRE_MESSAGE(u.cli("pool export --pool " + u.from.name + " " + q(u.archive), &out) == 0, out);
    std::string whole;
    {
        std::ifstream f(u.archive, std::ios::binary);
        whole.assign(std::istreambuf_iterator<char>(f), {});
    }
    const std::string cut = u.dir.path + "/cut.fsa", foreign = u.dir.path + "/foreign.fsa";
    for (size_t keep : {whole.size() - 1, whole.size() / 2, size_t(12)}) {
        std::ofstream(cut, std::ios::binary | std::ios::trunc) << whole.substr(0, keep);
        CHECK(import_archive(u.to.name, cut, &out) != 0);
        CHECK_MESSAGE(out.find("\"code\":\"corrupt\"") != std::string::npos, out);
        CHECK(topic_count(u.to.pool) == 0);
        CHECK(count_keys(u.to.pool, "uploads") == 0);
    }
    std::ofstream(foreign, std::ios::binary) << "PK\x03\x04 not an archive";
    CHECK(u.cli("pool import --pool " + u.to.name + " " + q(foreign), &out) != 0);
    CHECK_MESSAGE(out.find("not a fabric-shm pool archive") != std::string::npos, out);
}

TEST_CASE("an archive message whose declared key and header sizes do not fit its payload is refused as corrupt, "
          "before anything is imported") {
    Upgrade u;
    // Key "k", then 6 header bytes announcing a 2-byte name and a 1-byte value but holding only
    // the name, then the value.
    const std::string payload("k" "\x02\x00" "\x01\x00" "ab" "value", 12);
    const auto bytes = std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
    struct Case {
        uint64_t key_bytes, headers_bytes;
        const char* says;
    };
    for (const Case c : {Case{UINT64_MAX, 2, "do not fit"}, Case{1, UINT64_MAX - 1, "do not fit"},
                         Case{1, 6, "encode headers"}}) {
        const std::string path = u.dir.path + "/crafted-" + std::to_string(c.headers_bytes) + ".fsa";
        {
            auto w = cli::archive::Writer::open(path);
            REQUIRE(w.ok());
            REQUIRE(w->write({{"type", "pool"}, {"name", "crafted"}, {"size_bytes", 32u << 20}}).ok());
            REQUIRE(w->write({{"type", "topic"}, {"name", "ev"}, {"num_partitions", 1}, {"partition_capacity", 16},
                              {"partition_stride", 512}, {"on_full", "block"}, {"ttl_ns", 0}})
                        .ok());
            REQUIRE(w->write({{"type", "message"}, {"topic", "ev"}, {"partition", 0}, {"offset", 0}, {"timestamp_ns", 0},
                              {"key_bytes", c.key_bytes}, {"headers_bytes", c.headers_bytes}},
                             bytes)
                        .ok());
            REQUIRE(w->finish().ok());
        }
        std::string out;
        CHECK(import_archive(u.to.name, path, &out) != 0);
        CHECK_MESSAGE(out.find("\"code\":\"corrupt\"") != std::string::npos, out);
        CHECK_MESSAGE(out.find(c.says) != std::string::npos, out);
        CHECK(topic_count(u.to.pool) == 0);
    }
}

TEST_CASE("an archive whose pool, store, topic or group record has a field of the wrong shape is refused as corrupt, "
          "before anything is imported") {
    Upgrade u;
    using nlohmann::json;
    const json pool = {{"type", "pool"}, {"name", "crafted"}, {"size_bytes", 32u << 20}, {"layout", "5.2"}};
    const json store = store_record("default");
    const json object = object_record("default", "a");
    const json topic = topic_record();
    const json group = {{"type", "group"}, {"topic", "ev"}, {"group", "g"}, {"ttl_ns", uint64_t(60e9)},
                        {"committed", json::array({{{"partition", 0}, {"offset", 0}}})}};
    const auto with = [](json h, const char* field, json value) {
        h[field] = std::move(value);
        return h;
    };
    struct Case {
        const char* what;
        std::vector<json> records;  // after the pool record's default
    };
    const std::vector<Case> cases = {
        {"a committed entry that is not an object", {store, object, topic, with(group, "committed", json::array({5}))}},
        {"committed that is not an array", {store, object, topic, with(group, "committed", "all")}},
        {"a group ttl that is text", {store, object, topic, with(group, "ttl_ns", "soon")}},
        {"a group ttl of 0", {store, object, topic, with(group, "ttl_ns", 0)}},
        {"a group before its topic", {store, object, group, topic}},
        {"an unknown on_full", {store, object, with(topic, "on_full", "sometimes")}},
        {"a partition capacity out of range", {store, object, with(topic, "partition_capacity", 3)}},
        {"table entries past 32 bits", {with(store, "table_entries", (uint64_t(1) << 32) + 7), object, topic}},
        {"a pool size that is text", {with(pool, "size_bytes", "big"), store, object, topic}},
        {"a layout that is a number", {with(pool, "layout", 5), store, object, topic}},
        // Names and options the pool refuses: refused before the objects before them are put.
        {"a group name the pool refuses", {store, object, topic, with(group, "group", "bad/name")}},
        {"an empty group name", {store, object, topic, with(group, "group", "")}},
        {"a store name the pool refuses", {with(store, "name", "no such/store"), object, topic}},
        {"a topic name the pool refuses", {store, object, with(topic, "name", "bad name")}},
        {"an object whose metadata is over the limit, after one that fits",
         {store, object, with(with(object, "key", "b"), "metadata", {{"m", std::string(600, 'x')}}), topic}},
        {"an object whose content type is over the limit",
         {store, with(object, "content_type", std::string(65, 't')), topic}},
        {"an object with 33 metadata entries, after one that fits", {store, object, with(with(object, "key", "b"), "metadata", [] {
             json m = json::object();
             for (int k = 0; k < 33; ++k) m["m" + std::to_string(k)] = "v";
             return m;
         }()), topic}},
        // 512 bytes of metadata naming its input in pool "crafted": over the limit once the
        // input URI names the (longer) pool it is imported into.
        {"a result whose metadata outgrows the limit when its input URI is renamed",
         {store, object,
          with(with(object, "key", "r"), "metadata",
               {{"input-uri", "fabric://crafted/uploads/a"}, {"input-version", "1"}, {"pad", std::string(460, 'x')}}),
          topic}},
    };
    int i = 0;
    for (const Case& c : cases) {
        const std::string what = c.what;
        CAPTURE(what);
        PoolFixture to("upgrade-shape");  // a fresh target each: nothing may be left from the case before
        const std::string path = u.dir.path + "/shape-" + std::to_string(i++) + ".fsa";
        {
            auto w = cli::archive::Writer::open(path);
            REQUIRE(w.ok());
            if (c.records.front()["type"] != "pool") REQUIRE(w->write(pool).ok());
            for (const json& h : c.records) {
                const std::string payload = h["type"] == "object" ? "hi" : "";
                REQUIRE(w->write(h, std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size())).ok());
            }
            REQUIRE(w->finish().ok());
        }
        std::string out;
        CHECK(import_archive(to.name, path, &out) != 0);
        CHECK_MESSAGE(out.find("\"code\":\"corrupt\"") != std::string::npos, out);
        CHECK(topic_count(to.pool) == 0);
        CHECK(count_keys(to.pool, "uploads") == 0);
    }
}

TEST_CASE("archive records keep binary bytes: a key or value that is not UTF-8 round-trips, and a flipped payload bit is caught") {
    ScratchDir dir;
    const std::string path = dir.path + "/records.fsa";
    const std::string binary("\xff\xfe\x00key", 6);
    {
        auto w = cli::archive::Writer::open(path);
        REQUIRE(w.ok());
        const std::string payload = "payload";
        REQUIRE(w->write({{"type", "object"}, {"key", cli::archive::bytes_json(binary)}},
                         std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()))
                    .ok());
        REQUIRE(w->finish().ok());
    }
    {
        auto r = cli::archive::Reader::open(path);
        REQUIRE(r.ok());
        cli::archive::Record rec;
        auto more = r->next(&rec, std::function<bool(const nlohmann::json&)>([](const nlohmann::json&) { return true; }));
        REQUIRE(more.ok());
        REQUIRE(*more);
        CHECK(rec.header["key"].is_object());  // base64: not valid UTF-8
        CHECK(cli::archive::json_bytes(rec.header["key"], "key").value() == binary);
        CHECK(std::string(rec.payload.begin(), rec.payload.end()) == "payload");
        auto end = r->next_header(&rec);
        REQUIRE(end.ok());
        CHECK_FALSE(*end);
    }
    // Flip one payload byte: the record's CRC no longer matches.
    std::string whole;
    {
        std::ifstream f(path, std::ios::binary);
        whole.assign(std::istreambuf_iterator<char>(f), {});
    }
    const size_t at = whole.find("payload");
    REQUIRE(at != std::string::npos);
    whole[at] ^= 0x20;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << whole;
    auto r = cli::archive::Reader::open(path);
    REQUIRE(r.ok());
    cli::archive::Record rec;
    auto more = r->next(&rec, std::function<bool(const nlohmann::json&)>([](const nlohmann::json&) { return true; }));
    CHECK(more.code() == Errc::corrupt);
}
