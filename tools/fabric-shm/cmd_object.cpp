// SPDX-License-Identifier: MIT
// `fabric-shm put|get|head|rm|ls`: the object store from the shell. Bytes travel on
// stdin/stdout untouched; messages go to stderr (or stdout as JSON with --json).
//
// The pool comes from the URI. --pool is accepted for symmetry with the other commands, but
// when it names a different pool than the URI that is a usage error (exit 2): the URI wins
// and a silent choice between the two would surprise someone. `put` creates the pool (and
// the store) when missing; get, head, rm and ls never create anything.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "cli.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/ingest.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/names.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/uri.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {

void add_object_common(cxxopts::Options& o) {
    o.add_options()("pool", "must match the URI's pool if given (the URI's pool wins)",
                    cxxopts::value<std::string>())(
        "store", "store name within the pool", cxxopts::value<std::string>()->default_value("default"))(
        "json", "machine-readable output; errors as {\"error\":{\"code\",\"message\"}}")("h,help", "show this help");
}

/// The URI's pool wins; a different --pool is a usage error.
Status check_pool_flag(const std::string& flag, const std::string& uri_pool) {
    if (!flag.empty() && flag != uri_pool)
        return make_error(Errc::invalid_argument, "--pool '" + flag + "' differs from the URI's pool '" + uri_pool +
                                                      "' (the URI names the pool; drop --pool)");
    return {};
}

/// Positional arguments (cxxopts leaves them unmatched); flags it did not know were already
/// refused by cxxopts.
std::vector<std::string> positionals(const cxxopts::ParseResult& r) { return r.unmatched(); }

Result<FabricUri> parse_uri_arg(const std::vector<std::string>& pos, const cxxopts::ParseResult& r) {
    if (pos.empty()) return make_error(Errc::invalid_argument, "missing URI (fabric://POOL/BUCKET/KEY)");
    auto uri = FabricUri::parse(pos[0]);
    if (!uri) return uri;
    FABRIC_TRY(check_pool_flag(opt_string(r, "pool"), uri->pool()));
    return uri;
}

/// Attaches to an existing pool for writing (registers, never creates).
Result<Pool> open_existing(const std::string& name) {
    OpenOptions options;
    options.create_if_missing = false;
    Result<Pool> pool = Pool::open(name, options);
    if (!pool) return with_pool_list(pool.error());
    return pool;
}

int not_found(const Output& out, const std::string& uri) { return fail(out, Errc::not_found, "not found: " + uri); }

/// Pulls every "--meta k=v" / "--meta=k=v" out of argv before cxxopts sees it (its vector
/// values split on commas, and metadata values may contain commas).
Result<std::map<std::string, std::string>> extract_meta(std::vector<char*>& args) {
    std::map<std::string, std::string> meta;
    std::vector<char*> rest;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string_view a = args[i] ? std::string_view(args[i]) : std::string_view();
        std::string kv;
        if (a == "--meta") {
            if (i + 1 >= args.size() || !args[i + 1])
                return make_error(Errc::invalid_argument, "--meta needs a value k=v");
            kv = args[++i];
        } else if (a.substr(0, 7) == "--meta=") {
            kv = std::string(a.substr(7));
        } else {
            rest.push_back(args[i]);
            continue;
        }
        const size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0)
            return make_error(Errc::invalid_argument, "--meta '" + kv + "' is not k=v with a non-empty key");
        meta[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    args = std::move(rest);
    return meta;
}

Result<std::vector<uint8_t>> read_input(const std::string& path) {
    int fd = STDIN_FILENO;
    if (path != "-") {
        fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return errno_error(errno, "open " + path);
    }
    std::vector<uint8_t> data;
    struct stat sb{};
    if (::fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)) data.reserve(size_t(sb.st_size));
    uint8_t buf[1 << 16];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            const int err = errno;
            if (fd != STDIN_FILENO) ::close(fd);
            return errno_error(err, "read " + path);
        }
        if (n == 0) break;
        data.insert(data.end(), buf, buf + n);
    }
    if (fd != STDIN_FILENO) ::close(fd);
    return data;
}

Status write_output(int fd, std::span<const uint8_t> data, const std::string& what) {
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno_error(errno, "write " + what);
        }
        done += size_t(n);
    }
    return {};
}

nlohmann::json info_json(const FabricUri& uri, const ObjectInfo& info) {
    char crc[16];
    std::snprintf(crc, sizeof crc, "0x%08x", info.crc32);
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [k, v] : info.metadata) meta[k] = v;
    nlohmann::json doc = {
        {"uri", uri.to_string()},
        {"size", info.size},
        {"version", info.version},
        {"crc32", crc},
        {"content_type", info.content_type},
        {"metadata", meta},
        {"created", format_wall_ns(info.created_wall_ns)},
        {"created_wall_ns", info.created_wall_ns},
    };
    if (info.expires_wall_ns) {
        doc["expires"] = format_wall_ns(info.expires_wall_ns);
        doc["expires_wall_ns"] = info.expires_wall_ns;
    }
    if (info.fence_token) doc["fence_token"] = info.fence_token;
    return doc;
}

// ---- put ---------------------------------------------------------------------------

int cmd_put(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm put", spelling_put()};
    std::vector<char*> args(argv, argv + argc);
    auto meta = extract_meta(args);
    if (!meta) return fail(out, meta.error());
    cxxopts::Options o(argv[0], "Stores FILE (or stdin with '-' or no FILE) under URI; prints the new version.\n"
                                "  fabric-shm put fabric://POOL/BUCKET/KEY [FILE|-] [options]");
    add_object_common(o);
    o.add_options()("content-type", "content type stored with the object (default: none)",
                    cxxopts::value<std::string>())(
        "meta", "user metadata k=v (repeatable; values may contain commas)")(
        "ttl", "per-object expiry (500ms, 30s, 5m, 1h, 2d); expired objects read as absent",
        cxxopts::value<std::string>())("if-absent", "only if no object exists under URI (else exit 1, conflict)")(
        "if-version", "only if the current version is N (else exit 1, conflict)", cxxopts::value<uint64_t>())(
        "pool-size", "size of the pool when put creates it", cxxopts::value<std::string>()->default_value("32M"))(
        "no-create", "fail if the URI's pool does not exist (also: FABRIC_SHM_NO_CREATE=1)")(
        "notify", "after the put, send the URI (headers fabric-version, fabric-put-ts; keyed by the object key) "
                  "on TOPIC (repeatable: fan-out)",
        cxxopts::value<std::vector<std::string>>());
    add_store_options(o, "when put creates the pool");
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, int(args.size()), args.data(), out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    const auto pos = positionals(r);
    if (pos.size() > 2) return usage(out, "unexpected argument '" + pos[2] + "'");
    auto uri = parse_uri_arg(pos, r);
    if (!uri) return fail(out, uri.error());
    if (r.count("if-absent") && r.count("if-version"))
        return usage(out, "--if-absent and --if-version exclude each other");
    Status store_name = validate_name("store", r["store"].as<std::string>());
    if (!store_name) return fail(out, store_name.error());

    PutOptions options;
    options.content_type = opt_string(r, "content-type");
    options.metadata = std::move(*meta);
    if (r.count("ttl")) {
        auto ttl = parse_duration_option("ttl", r["ttl"].as<std::string>());
        if (!ttl) return fail(out, ttl.error());
        if (*ttl == 0) return fail(out, Errc::invalid_argument, "--ttl must be longer than 0");
        options.ttl = ns_duration(*ttl);
    }
    if (r.count("if-absent")) options.condition = PutCondition::if_absent;
    if (r.count("if-version")) {
        options.condition = PutCondition::if_version_equals;
        options.expected_version = r["if-version"].as<uint64_t>();
    }
    PoolCreation creation;
    auto pool_size = parse_size_option("pool-size", r["pool-size"].as<std::string>());
    if (!pool_size) return fail(out, pool_size.error());
    creation.size_bytes = *pool_size;
    creation.no_create = r.count("no-create") > 0;
    if (Status st = parse_store_options(r, &creation); !st) return fail(out, st.error());
    creation.store.name = r["store"].as<std::string>();

    const std::string input = pos.size() > 1 ? pos[1] : "-";
    if (input == "-" && isatty(STDIN_FILENO))
        return usage(out, "no FILE given and stdin is a terminal (pipe the bytes in, or name a FILE)");
    auto data = read_input(input);
    if (!data) return fail(out, data.error());

    Result<Pool> pool = open_or_create_pool(out, uri->pool(), creation);
    if (!pool) return fail(out, pool.error());
    auto store = open_default_store(out, *pool, creation);
    if (!store) return fail(out, store.error());
    // The topics' producers first: a topic that cannot be opened is reported like a failed
    // send, and the object is stored all the same.
    const std::vector<std::string> topics =
        r.count("notify") ? r["notify"].as<std::vector<std::string>>() : std::vector<std::string>{};
    std::vector<Result<Producer>> opened;
    for (const std::string& topic : topics) opened.push_back(Producer::open(*pool, topic));
    std::vector<Producer*> producers;  // into `opened`, complete now: no reallocation moves them
    for (Result<Producer>& p : opened)
        if (p) producers.push_back(&*p);
    // put_and_notify notifies after the object is visible. Each topic is tried; a failure is
    // reported per topic and the object stays (at-least-once: re-running the put + notify is
    // safe for workers).
    auto ingested = put_and_notify(**store, producers, *uri, *data, options);
    if (!ingested) return fail(out, ingested.error());
    nlohmann::json notified = nlohmann::json::array();
    std::vector<std::string> failed;
    for (size_t i = 0, sent_index = 0; i < topics.size(); ++i) {
        const std::string& topic = topics[i];
        const Result<SendResult> sent =
            opened[i] ? ingested->notified[sent_index++] : Result<SendResult>(opened[i].error());
        if (sent) {
            notified.push_back({{"topic", topic}, {"partition", sent->partition}, {"offset", sent->offset}});
        } else {
            failed.push_back(topic);
            notified.push_back({{"topic", topic}, {"error", {{"code", std::string(errc_name(sent.code()))},
                                                             {"message", sent.error().message}}}});
            if (!out.json) std::cerr << "fabric-shm put: notify '" << topic << "' failed: " << sent.error().message << "\n";
        }
    }
    if (out.json) {
        nlohmann::json doc = {{"uri", uri->to_string()}, {"version", ingested->version}, {"size", data->size()},
                              {"crc32", crc32(data->data(), data->size())}};
        if (r.count("notify")) doc["notified"] = notified;
        print_json(doc);
    } else {
        std::cout << ingested->version << "\n";
    }
    if (!failed.empty()) {
        std::string names;
        for (const auto& t : failed) names += (names.empty() ? "" : ", ") + t;
        if (!out.json)
            std::cerr << "fabric-shm put: stored " << uri->to_string() << " version " << ingested->version
                      << " but did not notify: " << names << "\n";
        return kExitRuntime;
    }
    return kExitOk;
}

// ---- get ---------------------------------------------------------------------------

int cmd_get(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm get"};
    cxxopts::Options o(argv[0], "Writes the object's bytes to stdout (or -o FILE); CRC-checked.\n"
                                "  fabric-shm get fabric://POOL/BUCKET/KEY [-o FILE]");
    add_object_common(o);
    o.add_options()("o,output", "write to FILE instead of stdout", cxxopts::value<std::string>());
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    const auto pos = positionals(r);
    if (pos.size() > 1) return usage(out, "unexpected argument '" + pos[1] + "'");
    auto uri = parse_uri_arg(pos, r);
    if (!uri) return fail(out, uri.error());

    Result<Pool> pool = open_existing(uri->pool());
    if (!pool) return fail(out, pool.error());
    auto store = MemObjectStore::attach(*pool, r["store"].as<std::string>());
    if (!store) return store.code() == Errc::not_found ? not_found(out, uri->to_string()) : fail(out, store.error());
    auto obj = (*store)->get(*uri);
    if (!obj) return fail(out, obj.error());
    if (!obj->has_value()) return not_found(out, uri->to_string());
    const std::vector<uint8_t>& bytes = (**obj).data;
    if (r.count("output")) {
        const std::string path = r["output"].as<std::string>();
        // Written beside the target and renamed over it: a reader never sees half a file.
        const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
        int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) return fail(out, errno_error(errno, "create " + tmp));
        Status w = write_output(fd, bytes, tmp);
        if (::close(fd) != 0 && w) w = errno_error(errno, "close " + tmp);
        if (w && ::rename(tmp.c_str(), path.c_str()) != 0) w = errno_error(errno, "rename to " + path);
        if (!w) {
            ::unlink(tmp.c_str());
            return fail(out, w.error());
        }
        if (out.json) print_json(info_json(*uri, (**obj).info));
        return kExitOk;
    }
    if (out.json) return usage(out, "--json needs -o FILE (the bytes go to stdout otherwise)");
    Status w = write_output(STDOUT_FILENO, bytes, "stdout");
    if (!w) return fail(out, w.error());
    return kExitOk;
}

// ---- head --------------------------------------------------------------------------

int cmd_head(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm head"};
    cxxopts::Options o(argv[0], "Prints the object's metadata (size, version, CRC, content type, metadata, times).\n"
                                "  fabric-shm head fabric://POOL/BUCKET/KEY [--json]");
    add_object_common(o);
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    const auto pos = positionals(r);
    if (pos.size() > 1) return usage(out, "unexpected argument '" + pos[1] + "'");
    auto uri = parse_uri_arg(pos, r);
    if (!uri) return fail(out, uri.error());

    Result<Pool> pool = open_read_only(uri->pool());
    if (!pool) return fail(out, pool.error());
    auto store = MemObjectStore::attach(*pool, r["store"].as<std::string>());
    if (!store) return store.code() == Errc::not_found ? not_found(out, uri->to_string()) : fail(out, store.error());
    auto info = (*store)->head(*uri);
    if (!info) return fail(out, info.error());
    if (!info->has_value()) return not_found(out, uri->to_string());
    const nlohmann::json doc = info_json(*uri, **info);
    if (out.json) {
        print_json(doc);
        return kExitOk;
    }
    Table t({"FIELD", "VALUE"});
    t.add({"uri", doc["uri"].get<std::string>()});
    t.add({"size", std::to_string((**info).size) + " (" + format_bytes((**info).size) + ")"});
    t.add({"version", std::to_string((**info).version)});
    t.add({"crc32", doc["crc32"].get<std::string>()});
    t.add({"content-type", (**info).content_type.empty() ? "-" : (**info).content_type});
    t.add({"created", doc["created"].get<std::string>()});
    t.add({"expires", (**info).expires_wall_ns ? doc["expires"].get<std::string>() : "-"});
    if ((**info).fence_token) t.add({"fence", std::to_string((**info).fence_token)});
    for (const auto& [k, v] : (**info).metadata) t.add({"meta." + k, v});
    std::string text;
    t.render(text);
    // The header row is for the table helper's sake; drop it for a plain key/value listing.
    const size_t nl = text.find('\n');
    std::cout << (nl == std::string::npos ? text : text.substr(nl + 1));
    return kExitOk;
}

// ---- listing targets ---------------------------------------------------------------

struct ListTarget {
    std::string pool, bucket, prefix;
};

/// "fabric://POOL/BUCKET/[PREFIX]" (the trailing slash and the prefix are optional).
Result<ListTarget> parse_list_target(const std::string& text) {
    constexpr std::string_view scheme = "fabric://";
    if (text.compare(0, scheme.size(), scheme) != 0)
        return make_error(Errc::invalid_uri, "'" + text + "' is not fabric://POOL/BUCKET/[PREFIX]");
    std::string_view rest = std::string_view(text).substr(scheme.size());
    const size_t s1 = rest.find('/');
    if (s1 == std::string_view::npos)
        return make_error(Errc::invalid_uri, "'" + text + "' names no bucket (fabric://POOL/BUCKET/[PREFIX])");
    ListTarget t;
    t.pool = std::string(rest.substr(0, s1));
    rest = rest.substr(s1 + 1);
    const size_t s2 = rest.find('/');
    t.bucket = std::string(rest.substr(0, s2));
    if (s2 != std::string_view::npos) t.prefix = std::string(rest.substr(s2 + 1));
    Status v = validate_name("pool", t.pool);
    if (!v) return make_error(Errc::invalid_uri, "'" + text + "': " + v.error().message);
    v = validate_name("bucket", t.bucket);
    if (!v) return make_error(Errc::invalid_uri, "'" + text + "': " + v.error().message);
    if (t.prefix.size() > kMaxKeyLength)
        return make_error(Errc::invalid_uri, "prefix of " + std::to_string(t.prefix.size()) +
                                                 " bytes exceeds the key limit " + std::to_string(kMaxKeyLength));
    return t;
}

/// --older-than: the keys of `keys` whose current version was published at least `age` ago
/// (an object removed meanwhile is left out).
Result<std::vector<std::string>> older_than(MemObjectStore& store, const ListTarget& t,
                                            const std::vector<std::string>& keys, uint64_t age_ns) {
    const uint64_t now = wall_now_ns();
    const uint64_t cutoff = now > age_ns ? now - age_ns : 0;
    std::vector<std::string> out;
    for (const std::string& k : keys) {
        auto uri = FabricUri::make(t.pool, t.bucket, k);
        if (!uri) return std::move(uri).error();
        auto info = store.head(*uri);
        if (!info) return std::move(info).error();
        if (info->has_value() && (**info).created_wall_ns <= cutoff) out.push_back(k);
    }
    return out;
}

/// Parses --older-than when given (0 otherwise).
Result<uint64_t> older_than_option(const cxxopts::ParseResult& r) {
    if (!r.count("older-than")) return uint64_t(0);
    return parse_duration_option("older-than", r["older-than"].as<std::string>());
}

// ---- rm ----------------------------------------------------------------------------

/// `rm --prefix`: every object under the prefix (and older than --older-than), each removed
/// at the version listed, so an object uploaded again meanwhile is kept (and counted).
int rm_prefix(const Output& out, const cxxopts::ParseResult& r) {
    const auto pos = positionals(r);
    if (!pos.empty()) return usage(out, "unexpected argument '" + pos[0] + "' (--prefix names what to remove)");
    if (r.count("if-version")) return usage(out, "--if-version names one object's version; not with --prefix");
    auto target = parse_list_target(r["prefix"].as<std::string>());
    if (!target) return fail(out, target.error());
    Status flag = check_pool_flag(opt_string(r, "pool"), target->pool);
    if (!flag) return fail(out, flag.error());
    auto age = older_than_option(r);
    if (!age) return fail(out, age.error());
    const bool dry = r.count("dry-run") > 0;
    const std::string what = "fabric://" + target->pool + "/" + target->bucket + "/" + target->prefix;

    Result<Pool> pool = dry ? open_read_only(target->pool) : open_existing(target->pool);
    if (!pool) return fail(out, pool.error());
    std::vector<std::string> keys, removed, kept;
    auto store = MemObjectStore::attach(*pool, r["store"].as<std::string>());
    if (!store && store.code() != Errc::not_found) return fail(out, store.error());
    if (store) {  // no store yet: nothing to remove
        auto listed = (*store)->list(target->pool, target->bucket, target->prefix);
        if (!listed) return fail(out, listed.error());
        keys = std::move(*listed);
        if (*age != 0) {
            auto old = older_than(**store, *target, keys, *age);
            if (!old) return fail(out, old.error());
            keys = std::move(*old);
        }
    }
    for (const std::string& k : keys) {
        if (dry) {
            removed.push_back(k);
            continue;
        }
        auto uri = FabricUri::make(target->pool, target->bucket, k);
        if (!uri) return fail(out, uri.error());
        auto info = (*store)->head(*uri);
        if (!info) return fail(out, info.error());
        if (!info->has_value()) continue;  // gone meanwhile (removed, expired)
        if (*age != 0 && (**info).created_wall_ns > wall_now_ns() - std::min(wall_now_ns(), *age)) {
            kept.push_back(k);  // uploaded again since it was listed: young now
            continue;
        }
        RemoveOptions ro;
        ro.if_version = (**info).version;
        auto done = (*store)->remove(*uri, ro);
        if (done && *done) removed.push_back(k);
        else if (!done && done.code() == Errc::conflict) kept.push_back(k);
        else if (!done) return fail(out, done.error());
    }
    if (out.json) {
        print_json({{"prefix", what}, {"removed", removed.size()}, {"keys", removed}, {"kept", kept},
                    {"dry_run", dry}});
        return kExitOk;
    }
    std::string text;
    if (dry)
        for (const auto& k : removed) text += k + "\n";
    text += std::string(dry ? "would remove " : "removed ") + std::to_string(removed.size()) + " object(s) under " + what;
    if (*age != 0) text += " older than " + format_duration_ns(*age);
    if (!kept.empty()) text += "; kept " + std::to_string(kept.size()) + " uploaded again meanwhile";
    text += "\n";
    if (::isatty(STDOUT_FILENO)) text = terminal_safe_lines(text);  // keys, as `ls` prints them
    std::fwrite(text.data(), 1, text.size(), stdout);
    return kExitOk;
}

int cmd_rm(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm rm"};
    cxxopts::Options o(argv[0], "Removes the object (exit 1 \"not found\" if absent), or every object under a prefix.\n"
                                "  fabric-shm rm fabric://POOL/BUCKET/KEY [--if-version N]\n"
                                "  fabric-shm rm --prefix fabric://POOL/BUCKET/[PREFIX] [--older-than D] [--dry-run]");
    add_object_common(o);
    o.add_options()("if-version", "only if the current version is N (else exit 1, conflict)",
                    cxxopts::value<uint64_t>())(
        "prefix", "remove every object whose key starts with PREFIX in the bucket (fabric://POOL/BUCKET/ is "
                  "the whole bucket)", cxxopts::value<std::string>())(
        "older-than", "with --prefix: only objects published at least this long ago (30s, 5m, 1h, 2d)",
        cxxopts::value<std::string>())("dry-run", "with --prefix: list what would be removed, remove nothing");
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    if (r.count("prefix")) return rm_prefix(out, r);
    if (r.count("older-than") || r.count("dry-run")) return usage(out, "--older-than and --dry-run go with --prefix");
    const auto pos = positionals(r);
    if (pos.size() > 1) return usage(out, "unexpected argument '" + pos[1] + "'");
    auto uri = parse_uri_arg(pos, r);
    if (!uri) return fail(out, uri.error());

    Result<Pool> pool = open_existing(uri->pool());
    if (!pool) return fail(out, pool.error());
    auto store = MemObjectStore::attach(*pool, r["store"].as<std::string>());
    if (!store) return store.code() == Errc::not_found ? not_found(out, uri->to_string()) : fail(out, store.error());
    RemoveOptions options;
    if (r.count("if-version")) options.if_version = r["if-version"].as<uint64_t>();
    auto removed = (*store)->remove(*uri, options);
    if (!removed) return fail(out, removed.error());
    if (!*removed) return not_found(out, uri->to_string());
    if (out.json)
        print_json({{"uri", uri->to_string()}, {"removed", true}});
    else
        std::cout << "removed " << uri->to_string() << "\n";
    return kExitOk;
}

// ---- ls ----------------------------------------------------------------------------

int cmd_ls(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm ls"};
    cxxopts::Options o(argv[0], "Lists the keys in a bucket starting with PREFIX, sorted bytewise.\n"
                                "  fabric-shm ls fabric://POOL/BUCKET/[PREFIX] [--older-than D] [--json]");
    add_object_common(o);
    o.add_options()("older-than", "only objects published at least this long ago (30s, 5m, 1h, 2d)",
                    cxxopts::value<std::string>());
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    const auto pos = positionals(r);
    if (pos.empty()) return usage(out, "missing fabric://POOL/BUCKET/[PREFIX]");
    if (pos.size() > 1) return usage(out, "unexpected argument '" + pos[1] + "'");
    auto target = parse_list_target(pos[0]);
    if (!target) return fail(out, target.error());
    Status flag = check_pool_flag(opt_string(r, "pool"), target->pool);
    if (!flag) return fail(out, flag.error());
    auto age = older_than_option(r);
    if (!age) return fail(out, age.error());

    Result<Pool> pool = open_read_only(target->pool);
    if (!pool) return fail(out, pool.error());
    std::vector<std::string> keys;
    auto store = MemObjectStore::attach(*pool, r["store"].as<std::string>());
    if (!store && store.code() != Errc::not_found) return fail(out, store.error());
    if (store) {  // no store yet: an empty listing
        auto listed = (*store)->list(target->pool, target->bucket, target->prefix);
        if (!listed) return fail(out, listed.error());
        keys = std::move(*listed);
        if (*age != 0) {
            auto old = older_than(**store, *target, keys, *age);
            if (!old) return fail(out, old.error());
            keys = std::move(*old);
        }
    }
    if (out.json) {
        print_json({{"pool", target->pool}, {"bucket", target->bucket}, {"prefix", target->prefix}, {"keys", keys}});
    } else {
        std::string text;
        for (const auto& k : keys) text += k + "\n";
        // Keys as stored for a pipe (scripts read them back); escaped for a terminal, where a
        // key's C1 control (keys refuse only C0 controls) would act as an escape sequence.
        if (::isatty(STDOUT_FILENO)) text = terminal_safe_lines(text);
        std::fwrite(text.data(), 1, text.size(), stdout);
    }
    return kExitOk;
}

}  // namespace

void register_object_commands(std::vector<Command>& commands) {
    commands.push_back({"put", "store a file or stdin under fabric://POOL/BUCKET/KEY (creates the pool)",
                        cmd_put});
    commands.push_back({"get", "write an object's bytes to stdout or -o FILE",
                        cmd_get});
    commands.push_back({"head", "show an object's metadata",
                        cmd_head});
    commands.push_back({"rm", "remove an object, or every object under --prefix [--older-than D]",
                        cmd_rm});
    commands.push_back({"ls", "list keys: fabric://POOL/BUCKET/[PREFIX] [--older-than D]",
                        cmd_ls});
}

}  // namespace fabric_shm::cli
