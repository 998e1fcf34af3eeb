// SPDX-License-Identifier: MIT
// `fabric-shm pool export` and `fabric-shm pool import`: a pool's contents (objects, topics
// with their unconsumed messages, groups with their committed offsets) carried across a
// layout change through an archive file (archive_format.h; procedure in docs/upgrades.md).
#include "cmd_pool_archive.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <limits>
#include <type_traits>
#include <variant>
#include <string>
#include <vector>

#include "archive_format.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/names.h"
#include "fabric_shm/offset_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/version.h"
#include "fabric_shm/worker_loop.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {

using archive::Record;
using nlohmann::json;

std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// ---- export -------------------------------------------------------------------------

cxxopts::Options archive_export_options(const std::string& argv0) {
    cxxopts::Options o(argv0,
                       "Writes the pool's objects, topics with their unconsumed messages and groups with their "
                       "committed offsets to FILE ('-': standard output), in a format every later build reads "
                       "(docs/upgrades.md). Stop producers and workers first: refused while other processes "
                       "are registered, unless --allow-live.");
    o.positional_help("FILE");
    o.add_options()("pool", pool_option_help(), cxxopts::value<std::string>())(
        "allow-live", "export although other processes are registered (their later writes are not in the archive)")(
        "json", "machine-readable summary; errors as {\"error\":{\"code\",\"message\"}}")("h,help", "show this help");
    return o;
}

// Other live registrations, as "pid (comm)" texts.
std::vector<std::string> other_live_processes(const Pool& pool) {
    std::vector<std::string> out;
    const MonoTime now = MonoClock::now();
    const ProcessRegistry registry = pool.registry();
    for (const ProcessInfo& p : registry.list(now)) {
        if (p.token == pool.self() || p.fenced) continue;
        if (registry.process_liveness(p.token, now) == Liveness::certainly_dead) continue;
        out.push_back(std::to_string(p.pid) + " (" + p.comm + ")");
    }
    return out;
}

struct ExportCounts {
    uint64_t stores = 0, objects = 0, object_bytes = 0, topics = 0, groups = 0, messages = 0, lost = 0;
};

Status export_objects(Pool& pool, archive::Writer& w, ExportCounts& n) {
    for (const RegionInfo& r : pool.regions()) {
        if (r.kind != uint32_t(RegionKind::store) || r.state != "live") continue;
        auto store = MemObjectStore::attach(pool, r.name);
        if (!store) return std::move(store).error();
        const StoreStats st = (*store)->stats();
        FABRIC_TRY(w.write({{"type", "store"},
                            {"name", r.name},
                            {"table_entries", st.table_entries},
                            {"heap_bytes", st.heap_capacity_bytes},
                            {"max_object_bytes", st.max_object_bytes}}));
        ++n.stores;
        auto keys = (*store)->list_all();
        if (!keys) return std::move(keys).error();
        for (const std::string& bucket_key : *keys) {
            const size_t slash = bucket_key.find('/');
            if (slash == std::string::npos) continue;
            auto uri = FabricUri::make(pool.name(), bucket_key.substr(0, slash), bucket_key.substr(slash + 1));
            if (!uri) return std::move(uri).error();
            auto got = (*store)->get(*uri);
            if (!got) return Error{got.code(), "export " + uri->to_string() + ": " + got.error().message};
            if (!*got) continue;  // removed or expired since the listing
            const ObjectInfo& info = (*got)->info;
            json metadata = json::object();
            for (const auto& [k, v] : info.metadata) metadata[k] = archive::bytes_json(v);
            FABRIC_TRY(w.write({{"type", "object"},
                                {"store", r.name},
                                {"bucket", uri->bucket()},
                                {"key", archive::bytes_json(uri->key())},
                                {"version", info.version},
                                {"content_type", archive::bytes_json(info.content_type)},
                                {"metadata", metadata},
                                {"created_wall_ns", info.created_wall_ns},
                                {"expires_wall_ns", info.expires_wall_ns}},
                               (*got)->data));
            ++n.objects;
            n.object_bytes += (*got)->data.size();
        }
    }
    return {};
}

// One partition's messages from `from` up to `to` (exclusive), read by an observer (it holds
// nothing back). A slot still being written is waited for up to the claim timeout, after
// which the consumer turns it into a skip record.
Status export_partition(const Pool& pool, const std::string& topic, uint32_t p, uint64_t from, uint64_t to,
                        archive::Writer& w, ExportCounts& n) {
    auto c = Consumer::open(pool, topic, "");
    if (!c) return std::move(c).error();
    const uint32_t parts[] = {p};
    FABRIC_TRY(c->assign(parts));
    FABRIC_TRY(c->seek(p, SeekPolicy::Offset(from)));
    MessageBatch batch;
    const uint64_t deadline = mono_now_ns() + 30 * kNsPerSec;
    for (;;) {
        auto pos = c->position(p);
        if (!pos) return std::move(pos).error();
        if (*pos >= to) return {};
        if (mono_now_ns() > deadline)
            return make_error(Errc::timeout, "export topic '" + topic + "' partition " + std::to_string(p) +
                                                 ": no progress past offset " + std::to_string(*pos) + " of " +
                                                 std::to_string(to) + " in 30 s");
        auto got = c->poll(batch, 256, std::chrono::milliseconds(100));
        if (!got) return std::move(got).error();
        n.lost += batch.lost();
        for (const Message& m : batch) {
            if (m.offset >= to) return {};
            std::vector<uint8_t> payload;
            payload.reserve(m.key.size() + m.headers_raw.size() + m.value.size());
            payload.insert(payload.end(), m.key.begin(), m.key.end());
            payload.insert(payload.end(), m.headers_raw.begin(), m.headers_raw.end());
            payload.insert(payload.end(), m.value.begin(), m.value.end());
            FABRIC_TRY(w.write({{"type", "message"},
                                {"topic", topic},
                                {"partition", m.partition},
                                {"offset", m.offset},
                                {"timestamp_ns", m.timestamp_ns},
                                {"key_bytes", m.key.size()},
                                {"headers_bytes", m.headers_raw.size()}},
                               payload));
            ++n.messages;
        }
    }
}

Status export_topics(Pool& pool, archive::Writer& w, ExportCounts& n) {
    TopicManager topics(pool);
    for (const std::string& name : topics.list()) {
        auto d = topics.describe(name);
        if (!d) {
            if (d.code() == Errc::not_found) continue;  // removed since the listing
            return std::move(d).error();
        }
        const TopicConfig& cfg = d->config;
        FABRIC_TRY(w.write({{"type", "topic"},
                            {"name", name},
                            {"num_partitions", cfg.num_partitions},
                            {"partition_capacity", cfg.partition_capacity},
                            {"partition_stride", cfg.partition_stride},
                            {"on_full", std::string(on_full_name(cfg.on_full))},
                            {"ttl_ns", to_ns(cfg.ttl)}}));
        ++n.topics;
        // Where each partition's export starts: the slowest group's committed offset (what
        // some group has not consumed yet), or the oldest retained message without groups.
        std::vector<uint64_t> from(cfg.num_partitions, UINT64_MAX);
        for (const GroupDescription& g : d->groups) {
            json committed = json::array();
            for (const GroupPartitionDescription& gp : g.partitions) {
                committed.push_back({{"partition", gp.partition}, {"offset", gp.committed}});
                if (gp.partition < from.size()) from[gp.partition] = std::min(from[gp.partition], gp.committed);
            }
            FABRIC_TRY(w.write({{"type", "group"},
                                {"topic", name},
                                {"group", g.name},
                                {"ttl_ns", g.lease_ttl_ns},
                                {"committed", committed}}));
            ++n.groups;
        }
        for (const PartitionDescription& pd : d->partitions) {
            if (pd.partition >= from.size()) continue;
            const uint64_t start = std::clamp(from[pd.partition] == UINT64_MAX ? pd.oldest : from[pd.partition],
                                              pd.oldest, pd.next);
            FABRIC_TRY(export_partition(pool, name, pd.partition, start, pd.next, w, n));
        }
    }
    return {};
}

/// An export or import command line: its options, its one FILE and the pool it names.
struct ArchiveCommand {
    cxxopts::ParseResult options;
    std::string file, pool;
};

// Parses options and exactly one FILE. An exit code when the command ends here (help shown,
// a usage error, an unknown pool flag value), else the parsed command.
std::variant<int, ArchiveCommand> parse_archive_command(cxxopts::Options o, int argc, char** argv, Output& out,
                                                        const std::string& synopsis) {
    o.parse_positional({"file"});
    o.add_options()("file", "", cxxopts::value<std::string>());
    ArchiveCommand c;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, c.options, &rc)) return rc;
    if (c.options.count("help")) return std::cout << o.help(), kExitOk;
    if (!c.options.unmatched().empty()) return usage(out, "unexpected argument '" + c.options.unmatched()[0] + "'");
    if (!c.options.count("file")) return usage(out, "missing FILE: " + synopsis);
    c.file = c.options["file"].as<std::string>();
    Result<std::string> name = resolve_pool(opt_string(c.options, "pool"));
    if (!name) return fail(out, name.error());
    c.pool = *name;
    return c;
}

int pool_export(int argc, char** argv, Output& out) {
    auto parsed = parse_archive_command(archive_export_options(argv[0]), argc, argv, out,
                                        "fabric-shm pool export [--pool NAME] FILE|-");
    if (const int* rc = std::get_if<int>(&parsed)) return *rc;
    const ArchiveCommand& cmd = std::get<ArchiveCommand>(parsed);
    const cxxopts::ParseResult& r = cmd.options;
    const std::string& file = cmd.file;
    const std::string& name = cmd.pool;
    Result<Pool> pool = Pool::open(name);
    if (!pool) return fail(out, with_pool_list(pool.error()));
    if (!r.count("allow-live")) {
        const std::vector<std::string> live = other_live_processes(*pool);
        if (!live.empty()) {
            std::string pids;
            for (const std::string& p : live) pids += (pids.empty() ? "" : ", ") + p;
            return fail(out, Errc::busy,
                        "pool '" + name + "' has " + std::to_string(live.size()) +
                            " other live process(es): " + pids +
                            "; stop producers, let groups reach lag 0, stop workers, then export "
                            "(docs/upgrades.md), or give --allow-live for a copy that may miss their latest writes");
        }
    }
    auto w = archive::Writer::open(file);
    if (!w) return fail(out, w.error());
    const PoolSettings settings = pool->settings();
    const LayoutVersion lv = layout_version();
    Status s = w->write({{"type", "pool"},
                         {"name", name},
                         {"size_bytes", pool->size()},
                         {"ttl_ns", settings.default_ttl_ns},
                         {"layout", std::to_string(lv.major) + "." + std::to_string(lv.minor)},
                         {"library", std::string(library_version())},
                         {"exported_wall_ns", wall_now_ns()}});
    ExportCounts n;
    if (s) s = export_objects(*pool, *w, n);
    if (s) s = export_topics(*pool, *w, n);
    if (s) s = w->finish();
    if (!s) {
        if (file != "-") ::unlink(file.c_str());  // never leave half an archive behind
        return fail(out, s.error());
    }
    const json summary = {{"pool", name},       {"file", file},         {"stores", n.stores},
                          {"objects", n.objects}, {"object_bytes", n.object_bytes}, {"topics", n.topics},
                          {"groups", n.groups},   {"messages", n.messages},        {"lost", n.lost}};
    if (out.json && file != "-") {
        print_json(summary);
    } else {
        // With FILE '-' the archive owns standard output: the summary goes to stderr.
        std::string line = "exported pool '" + name + "' to " + (file == "-" ? "standard output" : file) + ": " +
                           std::to_string(n.objects) + " objects (" + std::to_string(n.object_bytes) + " bytes), " +
                           std::to_string(n.topics) + " topics, " + std::to_string(n.messages) +
                           " unconsumed messages, " + std::to_string(n.groups) + " groups";
        if (n.lost) line += "; " + std::to_string(n.lost) + " messages were overwritten while reading (on_full=overwrite)";
        (file == "-" ? std::cerr : std::cout) << line << "\n";
    }
    return kExitOk;
}

// ---- import -------------------------------------------------------------------------

cxxopts::Options archive_import_options(const std::string& argv0) {
    cxxopts::Options o(argv0,
                       "Re-creates what `fabric-shm pool export` wrote to FILE in a pool of this build (created "
                       "when missing, with the archive's size unless --size). Refused, before anything is "
                       "written, when a topic or an object of the archive already exists there, when an object "
                       "is larger than its store there takes (the store the import creates: as its record or "
                       "the pool's size sets it), or when the stores it creates do not fit the pool.");
    o.positional_help("FILE");
    o.add_options()("pool", pool_option_help(), cxxopts::value<std::string>())(
        "size", "size of the pool when import creates it (default: the exported pool's size)",
        cxxopts::value<std::string>())("json", "machine-readable summary; errors as {\"error\":{\"code\",\"message\"}}")(
        "h,help", "show this help");
    return o;
}

// The record's type for an error message. Never throws: `h` may be anything a crafted archive
// holds (json::value() throws on a non-object, or on a type that is not a string).
std::string record_type(const json& h) {
    if (h.is_object())
        if (const auto t = h.find("type"); t != h.end() && t->is_string()) return t->get<std::string>();
    return "?";
}

template <typename T>
Result<T> field(const json& h, const char* name) {
    if (!h.is_object() || !h.contains(name))
        return make_error(Errc::corrupt, "archive " + record_type(h) + " record has no '" + name + "'");
    const auto bad = [&](const std::string& why) {
        return make_error(Errc::corrupt, "archive " + record_type(h) + " record: '" + name + "' is " + h[name].dump() + why);
    };
    try {
        if constexpr (std::is_integral_v<T>) {
            if (!h[name].is_number_unsigned()) return bad(" (not an unsigned integer)");
            const uint64_t v = h[name].get<uint64_t>();
            if (v > uint64_t(std::numeric_limits<T>::max()))
                return bad(" (limit " + std::to_string(std::numeric_limits<T>::max()) + ")");
            return T(v);
        } else {
            return h[name].get<T>();
        }
    } catch (const json::exception&) {
        return bad("");
    }
}

// What an imported object was and became: results record their input's URI and version, and
// notifications carry the version in a header; both are rewritten to the new pool's values.
struct ImportMap {
    std::string old_pool, new_pool;
    std::map<std::string, uint64_t> exported;               ///< old URI text -> old version
    std::map<std::string, std::pair<uint64_t, uint64_t>> versions;  ///< old URI text -> (old, new) version
    /// `text` with the old pool's name replaced when it is a URI into the old pool.
    std::string rename(const std::string& text) const {
        auto u = FabricUri::parse(text);
        if (!u || u->pool() != old_pool || old_pool == new_pool) return text;
        auto v = FabricUri::make(new_pool, u->bucket(), u->key());
        return v ? v->to_string() : text;
    }
};

struct ObjectRecord {
    std::string store, uri_text;  ///< uri_text names the old pool
    FabricUri uri;                ///< in the new pool
    uint64_t version = 0, expires_wall_ns = 0;
    PutOptions options;
    std::string input_uri;  ///< old text, from the result metadata (empty: not a result)
    uint64_t input_version = 0;
};

Result<ObjectRecord> object_record(const json& h, const ImportMap& map) {
    ObjectRecord o;
    FABRIC_TRY_ASSIGN(o.store, field<std::string>(h, "store"));
    FABRIC_TRY_ASSIGN(std::string bucket, field<std::string>(h, "bucket"));
    if (!h.contains("key")) return make_error(Errc::corrupt, "archive object record has no 'key'");
    FABRIC_TRY_ASSIGN(std::string key, archive::json_bytes(h["key"], "an object key"));
    FABRIC_TRY_ASSIGN(o.version, field<uint64_t>(h, "version"));
    FABRIC_TRY_ASSIGN(o.expires_wall_ns, field<uint64_t>(h, "expires_wall_ns"));
    auto old_uri = FabricUri::make(map.old_pool, bucket, key);
    if (!old_uri) return std::move(old_uri).error();
    o.uri_text = old_uri->to_string();
    FABRIC_TRY_ASSIGN(o.uri, FabricUri::make(map.new_pool, bucket, key));
    if (h.contains("content_type")) {
        FABRIC_TRY_ASSIGN(o.options.content_type, archive::json_bytes(h["content_type"], "a content type"));
    }
    if (h.contains("metadata") && h["metadata"].is_object())
        for (const auto& [k, v] : h["metadata"].items()) {
            FABRIC_TRY_ASSIGN(std::string value, archive::json_bytes(v, "metadata '" + k + "'"));
            o.options.metadata[k] = value;
        }
    // What a put would refuse, refused here: pass 1 runs this too, so one object's options
    // cannot stop the import after the objects before it were written.
    if (o.options.content_type.size() > kMaxContentTypeLength)
        return make_error(Errc::corrupt, "archive object " + o.uri_text + ": content type of " +
                                             std::to_string(o.options.content_type.size()) + " bytes exceeds " +
                                             std::to_string(kMaxContentTypeLength));
    if (o.options.metadata.size() > kMaxMetadataEntries)
        return make_error(Errc::corrupt, "archive object " + o.uri_text + ": " +
                                             std::to_string(o.options.metadata.size()) + " metadata entries exceed " +
                                             std::to_string(kMaxMetadataEntries));
    uint64_t meta_bytes = 0;
    for (const auto& [k, v] : o.options.metadata) {
        if (k.empty()) return make_error(Errc::corrupt, "archive object " + o.uri_text + ": an empty metadata key");
        meta_bytes += k.size() + v.size();
    }
    const auto in = o.options.metadata.find(std::string(kResultInputUri));
    const auto ver = o.options.metadata.find(std::string(kResultInputVersion));
    // A result's input URI is rewritten to the new pool's name when it is put: its size then.
    // (Its input version is rewritten too; the new pool's versions restart, counted here with
    // the old one's digits.)
    if (in != o.options.metadata.end()) meta_bytes = meta_bytes - in->second.size() + map.rename(in->second).size();
    if (meta_bytes > kMaxMetadataBytes)
        return make_error(Errc::corrupt, "archive object " + o.uri_text + ": metadata of " + std::to_string(meta_bytes) +
                                             " bytes" + (in != o.options.metadata.end() ? " (its input URI in pool '" + map.new_pool + "')" : "") +
                                             " exceeds " + std::to_string(kMaxMetadataBytes));
    if (in != o.options.metadata.end() && ver != o.options.metadata.end()) {
        o.input_uri = in->second;
        o.input_version = std::strtoull(ver->second.c_str(), nullptr, 10);
    }
    return o;
}

/// A message record split into its parts; the spans point into the record's payload.
struct MessageParts {
    std::string topic;
    uint32_t partition = 0;
    uint64_t offset = 0;
    std::span<const uint8_t> key, headers_raw, value;
    std::string where() const { return topic + "/" + std::to_string(partition) + "@" + std::to_string(offset); }
};

// The declared key and header sizes must fit the payload, and the headers must decode to
// exactly their declared bytes (the ring's encoding: 2 + 2 length bytes, name, value each).
Result<MessageParts> message_parts(const json& h, std::span<const uint8_t> payload) {
    MessageParts m;
    FABRIC_TRY_ASSIGN(m.topic, field<std::string>(h, "topic"));
    FABRIC_TRY_ASSIGN(m.partition, field<uint32_t>(h, "partition"));
    FABRIC_TRY_ASSIGN(m.offset, field<uint64_t>(h, "offset"));
    FABRIC_TRY_ASSIGN(uint64_t key_bytes, field<uint64_t>(h, "key_bytes"));
    FABRIC_TRY_ASSIGN(uint64_t headers_bytes, field<uint64_t>(h, "headers_bytes"));
    if (key_bytes > payload.size() || headers_bytes > payload.size() - key_bytes)
        return make_error(Errc::corrupt, "archive: message " + m.where() + " declares " + std::to_string(key_bytes) +
                                             " key and " + std::to_string(headers_bytes) + " header bytes, which do not fit its " +
                                             std::to_string(payload.size()) + "-byte payload");
    m.key = payload.first(key_bytes);
    m.headers_raw = payload.subspan(key_bytes, headers_bytes);
    m.value = payload.subspan(key_bytes + headers_bytes);
    Message decoded;
    decoded.headers_raw = m.headers_raw;
    uint64_t read = 0;
    for (size_t i = 0, n = decoded.header_count(); i < n; ++i) {
        const MessageHeader mh = decoded.header_at(i);
        read += 4 + mh.name.size() + mh.value.size();
    }
    if (read != headers_bytes)
        return make_error(Errc::corrupt, "archive: message " + m.where() + " declares " + std::to_string(headers_bytes) +
                                             " header bytes, of which only " + std::to_string(read) + " encode headers");
    return m;
}

// A store, topic or group record as the import uses it. Parsed in the first pass too, so
// that a record of the wrong shape refuses the archive before anything is written.

/// A name in a record that the pool would refuse (validate_name's rule), refused as corrupt.
Status valid_record_name(const json& h, const char* what, const std::string& name) {
    if (Status v = validate_name(what, name); !v)
        return make_error(Errc::corrupt, "archive " + record_type(h) + " record: " + v.error().message);
    return {};
}

Result<StoreConfig> store_record(const json& h) {
    StoreConfig cfg;
    FABRIC_TRY_ASSIGN(cfg.name, field<std::string>(h, "name"));
    FABRIC_TRY_ASSIGN(cfg.table_entries, field<uint32_t>(h, "table_entries"));
    FABRIC_TRY_ASSIGN(cfg.heap_bytes, field<uint64_t>(h, "heap_bytes"));
    FABRIC_TRY_ASSIGN(cfg.max_object_bytes, field<uint64_t>(h, "max_object_bytes"));
    FABRIC_TRY(valid_record_name(h, "store", cfg.name));
    return cfg;
}

struct TopicRecord {
    std::string name;
    TopicConfig cfg;
};

Result<TopicRecord> topic_record(const json& h) {
    TopicRecord t;
    FABRIC_TRY_ASSIGN(t.name, field<std::string>(h, "name"));
    FABRIC_TRY(valid_record_name(h, "topic", t.name));
    FABRIC_TRY_ASSIGN(t.cfg.num_partitions, field<uint32_t>(h, "num_partitions"));
    FABRIC_TRY_ASSIGN(t.cfg.partition_capacity, field<uint32_t>(h, "partition_capacity"));
    FABRIC_TRY_ASSIGN(t.cfg.partition_stride, field<uint32_t>(h, "partition_stride"));
    FABRIC_TRY_ASSIGN(std::string on_full, field<std::string>(h, "on_full"));
    auto parsed = parse_on_full(on_full);
    if (!parsed) return make_error(Errc::corrupt, "archive topic record '" + t.name + "': " + parsed.error().message);
    t.cfg.on_full = *parsed;
    FABRIC_TRY_ASSIGN(uint64_t ttl_ns, field<int64_t>(h, "ttl_ns"));
    t.cfg.ttl = ns_duration(ttl_ns);
    // Only a dead-letter topic has slots above what a creator may ask for (its own checks).
    if (t.cfg.partition_stride <= kMaxPartitionStride)
        if (Status v = validate_topic_config(t.cfg); !v)
            return make_error(Errc::corrupt, "archive topic record '" + t.name + "': " + v.error().message);
    return t;
}

struct GroupImport {
    std::string topic, group;
    uint64_t ttl_ns = 0;
    std::vector<std::pair<uint32_t, uint64_t>> committed;  ///< (partition, old offset)
};

Result<GroupImport> group_record(const json& h) {
    GroupImport g;
    FABRIC_TRY_ASSIGN(g.topic, field<std::string>(h, "topic"));
    FABRIC_TRY_ASSIGN(g.group, field<std::string>(h, "group"));
    FABRIC_TRY(valid_record_name(h, "topic", g.topic));
    FABRIC_TRY(valid_record_name(h, "group", g.group));
    FABRIC_TRY_ASSIGN(g.ttl_ns, field<int64_t>(h, "ttl_ns"));
    if (g.ttl_ns == 0) return make_error(Errc::corrupt, "archive group record '" + g.group + "': 'ttl_ns' is 0 (a group's lease is > 0)");
    if (!h.contains("committed")) return g;
    const json& committed = h["committed"];
    if (!committed.is_array())
        return make_error(Errc::corrupt, "archive group record '" + g.group + "': 'committed' is " + committed.dump() +
                                             " (not an array of {partition, offset})");
    for (const json& c : committed) {
        if (!c.is_object())
            return make_error(Errc::corrupt, "archive group record '" + g.group + "': a committed entry is " + c.dump() +
                                                 " (not a {partition, offset} object)");
        FABRIC_TRY_ASSIGN(uint32_t p, field<uint32_t>(c, "partition"));
        FABRIC_TRY_ASSIGN(uint64_t off, field<uint64_t>(c, "offset"));
        g.committed.push_back({p, off});
    }
    return g;
}

struct ImportCounts {
    uint64_t stores = 0, objects = 0, object_bytes = 0, expired = 0, topics = 0, groups = 0, messages = 0;
};

// A store the archive names (in a store record or as an object's store), as pass 1 sees it.
struct StoreCheck {
    std::unique_ptr<MemObjectStore> in_pool;  ///< the pool's store of that name; nullptr: the import creates it
    uint64_t max_object_bytes = 0;            ///< in_pool's limit, read once: stats() walks the store
    /// The first store record's config: import_stores creates the store with it (a later record
    /// of the name attaches). None: import_objects creates it with the config derived from the pool.
    std::optional<StoreConfig> record;
    bool puts = false;        ///< for a store the import creates: an object of it is put (one not expired)
    uint64_t largest = 0;     ///< its largest object that is put
    std::string largest_uri;  ///< that object (the first of that size)
};

// The store MemObjectStore::open(pool, cfg) would create, or its refusal of the config in this
// pool (with the library's reason). Asked for a store the pool has too: open derives the
// geometry before it looks for the store, so import_stores would fail on such a record.
Result<StorePlan> store_plan(const Pool& pool, const StoreConfig& cfg, const std::string& new_pool) {
    auto plan = MemObjectStore::plan(pool, cfg);
    if (!plan)
        return make_error(plan.code(), "archive store '" + cfg.name + "' cannot be made in pool '" + new_pool + "': " +
                                           plan.error().message + " (nothing was imported)");
    return plan;
}

// a + b, or 2^64 - 1 where that wraps: sums of sizes an archive (or a damaged pool) states
// must not wrap into something small enough to pass a check.
uint64_t add_saturated(uint64_t a, uint64_t b) {
    constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
    return a > kMax - b ? kMax : a + b;
}

// The regions the import creates besides its stores': every topic of the archive is new (pass 1
// refuses one the pool has), and takes a root region and one per partition.
struct TopicRegions {
    uint64_t topics = 0, regions = 0;
};

// The stores the import creates, judged once the whole archive is read (a store's record may come
// after its objects): each must take its largest object, and together their regions must fit the
// pool's free bytes. Only the total is known here: the pool places regions first-fit, so a
// fragmented pool may still fail to place one, which import_stores then reports. The stores' and
// the topics' regions must also fit the free entries of the pool's region directory, which has a
// fixed number of them: otherwise the import would stop at the first region it cannot enter.
Status check_created_stores(const Pool& pool, const std::map<std::string, StoreCheck>& stores,
                            const TopicRegions& topics, const std::string& new_pool) {
    uint64_t needed = 0, created = 0;
    std::string which;
    for (const auto& [name, s] : stores) {
        // A store without a record is created by its first put (import_objects): with every
        // object of it expired, it is not created at all.
        if (s.in_pool || (!s.record && !s.puts)) continue;
        StoreConfig cfg = s.record.value_or(StoreConfig{});
        cfg.name = name;
        FABRIC_TRY_ASSIGN(const StorePlan plan, store_plan(pool, cfg, new_pool));
        if (s.largest > plan.max_object_bytes) {
            const bool derived = cfg.max_object_bytes == 0;
            return make_error(Errc::object_too_large,
                              "archive object " + s.largest_uri + " is " + std::to_string(s.largest) +
                                  " bytes, more than store '" + name + "', which the import creates in pool '" + new_pool +
                                  "', would take (max_object_bytes " + std::to_string(plan.max_object_bytes) +
                                  (derived ? ", derived from the pool's size of " + std::to_string(pool.size()) +
                                                 " bytes): import into a larger pool, or create the store there first "
                                                 "with a larger max object size (an existing store is used as it is)"
                                           : ", as the archive's store record sets it): import into a pool whose store '" +
                                                 name + "' takes it (an existing store is used as it is)") +
                                  " (nothing was imported)");
        }
        needed = add_saturated(needed, plan.region_bytes);
        ++created;
        which += (which.empty() ? "" : ", ") + ("'" + name + "' " + std::to_string(plan.region_bytes));
    }
    if (needed == 0 && topics.regions == 0) return {};
    const std::vector<RegionInfo> regions = pool.regions();
    const PoolSettings settings = pool.settings();
    // Every entry listed is taken, whatever its state: one being reclaimed is not free yet.
    const uint64_t free_entries =
        settings.directory_entries > regions.size() ? settings.directory_entries - regions.size() : 0;
    const uint64_t store_regions = created * 2;  // a store's table and its heap
    const uint64_t new_regions = add_saturated(store_regions, topics.regions);
    if (new_regions > free_entries)
        return make_error(Errc::capacity_exceeded,
                          "the import creates " + std::to_string(new_regions) + " regions in pool '" + new_pool + "' (" +
                              std::to_string(store_regions) + " for " + std::to_string(created) + " stores, " +
                              std::to_string(topics.regions) + " for " + std::to_string(topics.topics) +
                              " topics with their partitions), more than the " + std::to_string(free_entries) +
                              " free entries of its region directory (" + std::to_string(regions.size()) + " of " +
                              std::to_string(settings.directory_entries) +
                              " taken): import into a pool with fewer regions (nothing was imported)");
    if (needed == 0) return {};
    uint64_t used = 0;
    for (const RegionInfo& r : regions) used = add_saturated(used, r.length);
    const uint64_t area = settings.data_size;
    const uint64_t free_bytes = area > used ? area - used : 0;
    if (needed > free_bytes)
        return make_error(Errc::capacity_exceeded,
                          "the stores the import creates need " + std::to_string(needed) + " bytes of pool '" + new_pool +
                              "' (store " + which + "), more than its " + std::to_string(free_bytes) +
                              " free bytes (of a region area of " + std::to_string(area) +
                              "): import into a larger pool (--size, when the import creates it) (nothing was imported)");
    return {};
}

// Pass 1 (headers only): the archive is whole and well-formed, nothing it holds exists in the
// pool yet, every store it names takes its objects, and the stores and topics it creates fit the
// pool's free bytes and directory entries. Nothing is written before this passes.
Status check_archive(archive::Reader& rd, Pool& pool, ImportMap& map, json* pool_record) {
    Record rec;
    std::set<std::string> topics_seen;
    std::map<std::string, StoreCheck> stores;
    // The entry of a store name, looked up in the pool the first time it is named.
    const auto store_check = [&](const std::string& name) -> Result<StoreCheck*> {
        auto known = stores.find(name);
        if (known != stores.end()) return &known->second;
        auto attached = MemObjectStore::attach(pool, name);
        if (!attached && attached.code() != Errc::not_found) return std::move(attached).error();
        StoreCheck c;
        if (attached) {
            c.max_object_bytes = (*attached)->stats().max_object_bytes;
            c.in_pool = std::move(*attached);
        }
        return &stores.emplace(name, std::move(c)).first->second;
    };
    TopicManager topics(pool);
    uint64_t records = 0;
    std::map<std::string, uint32_t> partitions;  // the archive's topics: name -> partitions
    TopicRegions topic_regions;
    for (;;) {
        auto more = rd.next(&rec, [](const json& h) { return h["type"] == "message"; });
        if (!more) return std::move(more).error();
        if (!*more) break;
        const std::string type = rec.header["type"];
        if (records++ == 0) {
            if (type != "pool") return make_error(Errc::corrupt, "archive does not start with its pool record");
            *pool_record = rec.header;
            FABRIC_TRY_ASSIGN(map.old_pool, field<std::string>(rec.header, "name"));
            if (rec.header.contains("size_bytes")) FABRIC_TRY(field<uint64_t>(rec.header, "size_bytes"));
            if (rec.header.contains("layout")) FABRIC_TRY(field<std::string>(rec.header, "layout"));
            continue;
        }
        if (type == "object") {
            FABRIC_TRY_ASSIGN(ObjectRecord o, object_record(rec.header, map));
            map.exported[o.uri_text] = o.version;
            FABRIC_TRY_ASSIGN(StoreCheck * store, store_check(o.store));
            // An object already expired is not put (import_objects skips it): its size is no limit's concern.
            const bool expired = o.expires_wall_ns != 0 && o.expires_wall_ns <= wall_now_ns();
            if (!store->in_pool) {
                // A store the import creates: nothing in it can clash, and its limit is known
                // only once its record, wherever it is, has been read (check_created_stores).
                if (!expired) store->puts = true;
                if (!expired && rec.payload_bytes > store->largest) {
                    store->largest = rec.payload_bytes;
                    store->largest_uri = o.uri.to_string();
                }
                continue;
            }
            // A store the pool has keeps its own limit (import_stores attaches to it).
            if (const uint64_t max = store->max_object_bytes; rec.payload_bytes > max && !expired)
                return make_error(Errc::object_too_large,
                                  "archive object " + o.uri.to_string() + " is " + std::to_string(rec.payload_bytes) +
                                      " bytes, more than store '" + o.store + "' of pool '" + map.new_pool +
                                      "' takes (max_object_bytes " + std::to_string(max) +
                                      "): import into a pool whose store takes it (nothing was imported)");
            auto head = store->in_pool->head(o.uri);
            if (!head) return std::move(head).error();
            if (*head)
                return make_error(Errc::already_exists,
                                  "object " + o.uri.to_string() + " (store '" + o.store + "') already exists in pool '" +
                                      map.new_pool + "': import into a pool without it (nothing was imported)");
        } else if (type == "topic") {
            FABRIC_TRY_ASSIGN(TopicRecord t, topic_record(rec.header));
            const std::string& name = t.name;
            if (!topics_seen.insert(name).second)
                return make_error(Errc::corrupt, "archive holds topic '" + name + "' twice");
            partitions[name] = t.cfg.num_partitions;
            ++topic_regions.topics;
            topic_regions.regions = add_saturated(topic_regions.regions, 1 + uint64_t(t.cfg.num_partitions));
            auto d = topics.describe(name);
            if (d)
                return make_error(Errc::already_exists, "topic '" + name + "' already exists in pool '" + map.new_pool +
                                                            "': import into a pool without it (nothing was imported)");
            if (d.code() != Errc::not_found) return std::move(d).error();
        } else if (type == "message") {
            FABRIC_TRY_ASSIGN(MessageParts m, message_parts(rec.header, rec.payload));
            const auto t = partitions.find(m.topic);
            if (t == partitions.end() || m.partition >= t->second)
                return make_error(Errc::corrupt, "archive: message " + m.where() +
                                                     (t == partitions.end() ? " comes before its topic's record"
                                                                            : " names a partition the topic does not have (" +
                                                                                  std::to_string(t->second) + ")"));
        } else if (type == "store") {
            FABRIC_TRY_ASSIGN(StoreConfig cfg, store_record(rec.header));
            FABRIC_TRY(store_plan(pool, cfg, map.new_pool));
            FABRIC_TRY_ASSIGN(StoreCheck * store, store_check(cfg.name));
            if (!store->record) store->record = cfg;
        } else if (type == "group") {
            FABRIC_TRY_ASSIGN(GroupImport g, group_record(rec.header));
            if (!topics_seen.count(g.topic))
                return make_error(Errc::corrupt, "archive: group '" + g.group + "' comes before its topic '" + g.topic + "'");
        } else {
            return make_error(Errc::corrupt, "archive record " + std::to_string(records) + " has unknown type '" + type +
                                                 "' (written by a newer build?)");
        }
    }
    if (records == 0) return make_error(Errc::corrupt, "archive holds no pool record");
    FABRIC_TRY(check_created_stores(pool, stores, topic_regions, map.new_pool));
    return rd.rewind();
}

Status import_stores(archive::Reader& rd, Pool& pool, ImportCounts& n) {
    Record rec;
    for (;;) {
        auto more = rd.next_header(&rec);
        if (!more) return std::move(more).error();
        if (!*more) break;
        if (rec.header["type"] != "store") continue;
        FABRIC_TRY_ASSIGN(StoreConfig cfg, store_record(rec.header));
        std::string note;
        auto store = MemObjectStore::open(pool, cfg, &note);
        if (!store) return Error{store.code(), "store '" + cfg.name + "': " + store.error().message};
        if (!note.empty()) stderr_line("fabric-shm pool import: " + note);
        ++n.stores;
    }
    return rd.rewind();
}

// Objects, in as many passes as results build on results: a result is put after its input,
// so the input's new version is known and written into the result's metadata (the worker
// skips an input whose result records its current version). A record is read whole only in
// the pass that puts it.
Status import_objects(archive::Reader& rd, Pool& pool, ImportMap& map, ImportCounts& n) {
    std::set<std::string> done;  // store + "\n" + old URI text: put, or skipped as expired
    std::map<std::string, std::unique_ptr<MemObjectStore>> stores;
    for (bool forced = false;;) {
        bool progress = false, deferred = false;
        Record rec;
        std::optional<ObjectRecord> pending;
        Status bad;
        const auto take = [&](const json& h) {
            pending.reset();
            if (h["type"] != "object") return false;
            auto o = object_record(h, map);
            if (!o) {
                bad = std::move(o).error();
                return false;
            }
            if (done.count(o->store + "\n" + o->uri_text)) return false;
            if (!o->input_uri.empty() && !forced && map.exported.count(o->input_uri) &&
                !map.versions.count(o->input_uri)) {
                deferred = true;  // its input is put in this pass or a later one
                return false;
            }
            pending = std::move(*o);
            return true;
        };
        for (;;) {
            auto more = rd.next(&rec, take);
            FABRIC_TRY(bad);
            if (!more) return std::move(more).error();
            if (!*more) break;
            if (!pending) continue;
            ObjectRecord& o = *pending;
            done.insert(o.store + "\n" + o.uri_text);
            progress = true;
            const uint64_t now = wall_now_ns();
            if (o.expires_wall_ns != 0 && o.expires_wall_ns <= now) {
                ++n.expired;  // it would read as absent: nothing to carry over
                continue;
            }
            if (o.expires_wall_ns != 0) o.options.ttl = ns_duration(o.expires_wall_ns - now);
            if (!o.input_uri.empty()) {
                // The result of the input version that was imported records its new version.
                // Any other (an older version, or an input not in the archive) records 0, which
                // no object has: the new pool's versions restart, and an old number could name
                // another object's content there, making a worker skip an unprocessed input.
                auto v = map.versions.find(o.input_uri);
                const bool current = v != map.versions.end() && v->second.first == o.input_version;
                o.options.metadata[std::string(kResultInputVersion)] = current ? std::to_string(v->second.second) : "0";
                o.options.metadata[std::string(kResultInputUri)] = map.rename(o.input_uri);
            }
            o.options.condition = PutCondition::if_absent;
            std::unique_ptr<MemObjectStore>& store = stores[o.store];
            if (!store) {
                StoreConfig cfg;
                cfg.name = o.store;
                auto opened = MemObjectStore::open(pool, cfg);
                if (!opened) return Error{opened.code(), "store '" + o.store + "': " + opened.error().message};
                store = std::move(*opened);
            }
            auto put = store->put(o.uri, rec.payload, o.options);
            if (!put) return Error{put.code(), "import " + o.uri.to_string() + ": " + put.error().message};
            map.versions[o.uri_text] = {o.version, *put};
            ++n.objects;
            n.object_bytes += rec.payload.size();
        }
        FABRIC_TRY(rd.rewind());
        if (!deferred) return {};
        if (!progress) forced = true;  // results of each other (a cycle): put the rest as they are
    }
}

struct TopicImport {
    uint64_t incarnation = 0;
    std::vector<std::vector<std::pair<uint64_t, uint64_t>>> offsets;  ///< per partition: (old, new), old ascending
    std::vector<uint64_t> next;                                       ///< per partition: the new tail
    std::unique_ptr<Producer> producer;
};

// The old committed offset's place in the new partition: the first message at or after it.
uint64_t new_offset(const TopicImport& t, uint32_t p, uint64_t old) {
    const auto& v = t.offsets[p];
    auto it = std::lower_bound(v.begin(), v.end(), std::pair<uint64_t, uint64_t>{old, 0});
    return it == v.end() ? t.next[p] : it->second;
}

// Topics, then their groups (registered before any message is sent, so no message is
// released as consumed), then the messages, then the groups' committed offsets.
Status import_topics(archive::Reader& rd, Pool& pool, const ImportMap& map, ImportCounts& n) {
    TopicManager topics(pool);
    std::map<std::string, TopicImport> imported;
    std::vector<GroupImport> groups;
    Record rec;
    for (;;) {
        auto more = rd.next(&rec, [](const json& h) { return h["type"] == "message"; });
        if (!more) return std::move(more).error();
        if (!*more) break;
        const json& h = rec.header;
        const std::string type = h["type"];
        if (type == "topic") {
            FABRIC_TRY_ASSIGN(TopicRecord tr, topic_record(h));
            const std::string& name = tr.name;
            const TopicConfig& cfg = tr.cfg;
            // Only a dead-letter topic has slots above what a creator may ask for.
            const Status c = cfg.partition_stride > kMaxPartitionStride ? create_dead_letter_topic(pool, name, cfg)
                                                                        : topics.create(name, cfg);
            if (!c) return Error{c.code(), "topic '" + name + "': " + c.error().message};
            auto d = topics.describe(name);
            if (!d) return std::move(d).error();
            TopicImport& t = imported[name];
            t.incarnation = d->incarnation;
            t.offsets.resize(cfg.num_partitions);
            t.next.resize(cfg.num_partitions);
            for (const PartitionDescription& pd : d->partitions)
                if (pd.partition < cfg.num_partitions) t.next[pd.partition] = pd.next;
            ++n.topics;
        } else if (type == "group") {
            FABRIC_TRY_ASSIGN(GroupImport g, group_record(h));
            if (!imported.count(g.topic))  // checked in pass 1
                return make_error(Errc::corrupt, "archive: group '" + g.group + "' comes before its topic '" + g.topic + "'");
            GroupOptions go;
            go.ttl = ns_duration(g.ttl_ns);
            go.start = GroupStart::earliest;
            if (Status r = topics.register_group(g.topic, g.group, go); !r)
                return Error{r.code(), "group '" + g.group + "' on topic '" + g.topic + "': " + r.error().message};
            groups.push_back(std::move(g));
            ++n.groups;
        } else if (type == "message") {
            FABRIC_TRY_ASSIGN(MessageParts mp, message_parts(h, rec.payload));
            auto t = imported.find(mp.topic);
            if (t == imported.end() || mp.partition >= t->second.offsets.size())  // checked in pass 1
                return make_error(Errc::corrupt, "archive: message " + mp.where() + " does not fit its topic");
            TopicImport& ti = t->second;
            if (!ti.producer) {
                auto pr = Producer::open(pool, mp.topic);
                if (!pr) return std::move(pr).error();
                ti.producer = std::make_unique<Producer>(std::move(*pr));
            }
            // The notification names an object of the old pool: the new pool's name, and the
            // object's new version in its version header; its placement hint is dropped.
            const std::string value_old(reinterpret_cast<const char*>(mp.value.data()), mp.value.size());
            const std::string value = map.rename(value_old);
            Message decoded;
            decoded.headers_raw = mp.headers_raw;
            std::vector<std::string> names, values;
            for (size_t i = 0, n = decoded.header_count(); i < n; ++i) {
                const MessageHeader mh = decoded.header_at(i);
                if (mh.name == kHeaderPlacement) continue;  // a block of the old pool's heap
                names.emplace_back(mh.name);
                values.emplace_back(mh.value);
                if (mh.name == kHeaderVersion) {
                    auto v = map.versions.find(value_old);
                    if (v != map.versions.end() && std::to_string(v->second.first) == mh.value)
                        values.back() = std::to_string(v->second.second);
                }
            }
            std::vector<MessageHeader> headers;
            for (size_t i = 0; i < names.size(); ++i) headers.push_back({names[i], values[i]});
            OutgoingMessage om;
            om.key = mp.key;
            om.value = bytes_of(value);
            om.headers = headers;
            auto sent = ti.producer->send_to(mp.partition, om);
            if (!sent) return Error{sent.code(), "import message " + mp.where() + ": " + sent.error().message};
            ti.offsets[mp.partition].push_back({mp.offset, sent->offset});
            ti.next[mp.partition] = sent->offset + 1;
            ++n.messages;
        }
    }
    MemOffsetStore offsets(pool);
    for (const GroupImport& g : groups) {
        const TopicImport& t = imported.at(g.topic);
        std::vector<OffsetCommit> commits;
        for (const auto& [p, old] : g.committed)
            if (p < t.offsets.size()) commits.push_back({p, new_offset(t, p, old), 0});
        if (Status c = offsets.commit(g.topic, t.incarnation, g.group, commits); !c)
            return Error{c.code(), "commit group '" + g.group + "' on topic '" + g.topic + "': " + c.error().message};
    }
    return {};
}

int pool_import(int argc, char** argv, Output& out) {
    auto parsed = parse_archive_command(archive_import_options(argv[0]), argc, argv, out,
                                        "fabric-shm pool import [--pool NAME] FILE");
    if (const int* rc = std::get_if<int>(&parsed)) return *rc;
    const ArchiveCommand& cmd = std::get<ArchiveCommand>(parsed);
    const cxxopts::ParseResult& r = cmd.options;
    const std::string& name = cmd.pool;
    auto rd = archive::Reader::open(cmd.file);
    if (!rd) return fail(out, rd.error());

    // The archive's pool record first: its size is the default for a pool import creates.
    Record first;
    auto more = rd->next_header(&first);
    if (!more) return fail(out, more.error());
    if (!*more || first.header["type"] != "pool")
        return fail(out, Errc::corrupt, "archive does not start with its pool record");
    PoolCreation creation;
    creation.size_bytes = kDefaultPoolSize;
    if (first.header.contains("size_bytes")) {
        auto size = field<uint64_t>(first.header, "size_bytes");
        if (!size) return fail(out, size.error());
        creation.size_bytes = *size;
    }
    if (r.count("size")) {
        auto size = parse_size_option("--size", r["size"].as<std::string>());
        if (!size) return fail(out, size.error());
        creation.size_bytes = *size;
    }
    if (Status s = rd->rewind(); !s) return fail(out, s.error());
    Result<Pool> pool = open_or_create_pool(out, name, creation);
    if (!pool) return fail(out, pool.error());

    ImportMap map;
    map.new_pool = name;
    json pool_record;
    ImportCounts n;
    Status s = check_archive(*rd, *pool, map, &pool_record);
    if (s) s = import_stores(*rd, *pool, n);
    if (s) s = import_objects(*rd, *pool, map, n);
    if (s) s = import_topics(*rd, *pool, map, n);
    if (!s) return fail(out, s.error());
    const json summary = {{"pool", name},         {"from_pool", map.old_pool}, {"from_layout", pool_record.value("layout", "")},
                          {"stores", n.stores},    {"objects", n.objects},      {"object_bytes", n.object_bytes},
                          {"expired", n.expired},  {"topics", n.topics},        {"groups", n.groups},
                          {"messages", n.messages}};
    if (out.json) {
        print_json(summary);
    } else {
        std::cout << "imported into pool '" << name << "' (exported from pool '" << map.old_pool << "', layout "
                  << pool_record.value("layout", "?") << "): " << n.objects << " objects (" << n.object_bytes
                  << " bytes), " << n.topics << " topics, " << n.messages << " messages, " << n.groups << " groups";
        if (n.expired) std::cout << "; " << n.expired << " objects had expired and were left out";
        std::cout << "\n";
    }
    return kExitOk;
}

}  // namespace

std::string pool_archive_help() {
    return archive_export_options("fabric-shm pool export").help() + "\n" +
           archive_import_options("fabric-shm pool import").help();
}

int pool_archive_command(const std::string& action, int argc, char** argv, Output& out) {
    return action == "export" ? pool_export(argc, argv, out) : pool_import(argc, argv, out);
}

}  // namespace fabric_shm::cli
