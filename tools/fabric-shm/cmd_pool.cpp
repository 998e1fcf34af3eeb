// SPDX-License-Identifier: MIT
// `fabric-shm pool create|ls|rm` and `fabric-shm lease ls|renew`.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "cli.h"
#include "cmd_pool_archive.h"
#include "fault_guard.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "tool_support.h"

namespace fabric_shm::cli {
namespace {


bool wants_help(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") return true;
    return false;
}

void add_common(cxxopts::Options& o) {
    o.add_options()("pool", pool_option_help(), cxxopts::value<std::string>())(
        "json", "machine-readable output; errors as {\"error\":{\"code\",\"message\"}}")("h,help", "show this help");
}

Result<uint32_t> parse_mode(const std::string& text) {
    char* end = nullptr;
    errno = 0;
    const unsigned long v = std::strtoul(text.c_str(), &end, 8);
    if (text.empty() || errno != 0 || *end != '\0' || v > 0777)
        return make_error(Errc::invalid_argument,
                          "--mode '" + text + "' is not an octal permission mode between 0 and 0777 (e.g. 0600, 0660)");
    if ((v & 0600) != 0600)
        return make_error(Errc::invalid_argument,
                          "--mode '" + text + "' must keep owner read and write (0600): the creator maps the pool rw");
    return uint32_t(v);
}

Result<int> parse_numa_node(const std::string& text) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || errno != 0 || *end != '\0' || v < 0 || v > 1023)
        return make_error(Errc::invalid_argument, "--numa-node '" + text + "' is not a node number between 0 and 1023");
    return int(v);
}

std::string mode_text(uint32_t mode) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0%03o", mode & 0777u);
    return buf;
}

nlohmann::json pool_summary_json(const Pool& pool, uint64_t now) {
    const PoolSettings h = pool.settings();
    nlohmann::json doc = {
        {"pool", pool.name()},
        {"path", Pool::segment_path(pool.name())},
        {"size", pool.size()},
        {"mode", mode_text(h.mode)},
        {"numa_node", h.numa_node},
        {"default_ttl_ns", h.default_ttl_ns},
        {"state", pool.wholly_expired(MonoClock::from_ns(now)) ? std::string("expired") : pool.lifecycle()},
    };
    Result<LeaseInfo> lease = pool.lease(pool.pool_lease_id());
    if (lease) doc["lease"] = lease_json(lease.value(), now);
    return doc;
}

// ---- pool create -------------------------------------------------------------------

cxxopts::Options pool_create_options(const std::string& argv0) {
    cxxopts::Options o(argv0, "Creates a pool: one shared-memory segment /dev/shm/fabric-shm.<pool>");
    add_common(o);
    o.add_options()("size", "segment size (e.g. 32M, 1G; at least 1M)", cxxopts::value<std::string>()->default_value("32M"))(
        "ttl", "pool lease TTL (500ms, 30s, 5m, 1h, 2d)", cxxopts::value<std::string>()->default_value("1h"))(
        "mode", "permission bits, octal (0660 lets the group attach)", cxxopts::value<std::string>()->default_value("0600"))(
        "numa-node", "bind the pool's memory to this NUMA node (default: none; warns and continues on one node)",
        cxxopts::value<std::string>())("exist-ok",
                                       "succeed if the pool already exists and attaches (a wholly expired pool "
                                       "is re-created)");
    add_store_options(o, "of the pool's default store, created with the pool when any of these three is given");
    return o;
}

nlohmann::json store_json(const MemObjectStore& store) {
    const StoreStats st = store.stats();
    return {{"name", store.config().name},
            {"heap_bytes", st.heap_capacity_bytes},
            {"max_object_bytes", st.max_object_bytes},
            {"table_entries", st.table_entries}};
}

int pool_create(int argc, char** argv, Output& out) {
    out.spelling = spelling_pool_create();
    cxxopts::Options o = pool_create_options(argv[0]);
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    if (!r.unmatched().empty()) return usage(out, "unexpected argument '" + r.unmatched()[0] + "'");

    PoolCreation creation;
    if (Status st = parse_store_options(r, &creation); !st) return fail(out, st.error());
    Result<std::string> name = resolve_pool(opt_string(r, "pool"));
    if (!name) return fail(out, name.error());
    PoolOptions options;
    options.name = name.value();
    Result<uint64_t> size = parse_size_option("size", r["size"].as<std::string>());
    if (!size) return fail(out, size.error());
    options.size_bytes = size.value();
    Result<uint64_t> ttl = parse_duration_option("ttl", r["ttl"].as<std::string>());
    if (!ttl) return fail(out, ttl.error());
    if (ttl.value() == 0) return fail(out, Errc::invalid_argument, "--ttl must be longer than 0");
    options.ttl = ns_duration(ttl.value());
    Result<uint32_t> mode = parse_mode(r["mode"].as<std::string>());
    if (!mode) return fail(out, mode.error());
    options.mode = mode.value();
    if (r.count("numa-node")) {
        Result<int> node = parse_numa_node(r["numa-node"].as<std::string>());
        if (!node) return fail(out, node.error());
        options.numa_node = node.value();
    }

    bool created = true;
    Result<Pool> pool = Pool::create(options);
    if (!pool && pool.code() == Errc::already_exists && r.count("exist-ok")) {
        OpenOptions open;
        open.create_if_missing = true;  // re-creates a wholly expired pool
        open.create = options;
        pool = Pool::open(options.name, open);
        created = false;
    }
    if (!pool) return fail(out, pool.error());

    // The default store, with the geometry asked for. A pool this call made goes again when
    // its store cannot be made (e.g. a heap larger than the pool): nothing half-configured
    // stays behind under the name.
    std::unique_ptr<MemObjectStore> store;
    if (creation.store_given) {
        auto opened = open_default_store(out, pool.value(), creation);
        if (!opened) {
            if (created) {
                pool = Error{};  // detach before removing
                (void)Pool::remove(options.name, true);
            }
            return fail(out, opened.error());
        }
        store = std::move(opened.value());
    }

    const uint64_t now = mono_now_ns();
    if (out.json) {
        nlohmann::json doc = pool_summary_json(pool.value(), now);
        doc["created"] = created;
        if (store) doc["store"] = store_json(*store);
        print_json(doc);
    } else {
        const Pool& p = pool.value();
        std::cout << (created ? "created" : "exists:") << " pool '" << p.name() << "' " << format_bytes(p.size())
                  << " at " << Pool::segment_path(p.name()) << ", mode " << mode_text(p.settings().mode)
                  << ", lease TTL " << format_duration_ns(p.settings().default_ttl_ns) << "\n";
        if (store) {
            const nlohmann::json sj = store_json(*store);
            std::cout << "store '" << sj["name"].get<std::string>() << "': heap "
                      << format_bytes(sj["heap_bytes"].get<uint64_t>()) << ", objects up to "
                      << format_bytes(sj["max_object_bytes"].get<uint64_t>()) << ", "
                      << sj["table_entries"].get<uint64_t>() << " table entries\n";
        }
    }
    return kExitOk;
}

// ---- pool ls -----------------------------------------------------------------------

cxxopts::Options pool_ls_options(const std::string& argv0) {
    cxxopts::Options o(argv0, "Lists the pools present (read-only: attaches to nothing, creates nothing)");
    o.add_options()("json", "machine-readable output")("h,help", "show this help");
    return o;
}

int pool_ls(int argc, char** argv, Output& out) {
    cxxopts::Options o = pool_ls_options(argv[0]);
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    if (!r.unmatched().empty()) return usage(out, "unexpected argument '" + r.unmatched()[0] + "'");

    const uint64_t now = mono_now_ns();
    nlohmann::json pools = nlohmann::json::array();
    Table table({"POOL", "SIZE", "STATE", "TTL LEFT", "PROCESSES", "REGIONS"});
    for (const std::string& name : Pool::list()) {
        // Read under the fault guard: a pool truncated while we read it is listed as corrupt.
        nlohmann::json doc;
        std::vector<std::string> row;
        Status read = read_guarded(
            [&]() -> Status {
                Result<Pool> pool = open_read_only(name);
                if (!pool) return pool.error();
                const Pool& p = pool.value();
                FABRIC_TRY(p.check_mapping());
                uint32_t alive = 0;
                for (const ProcessInfo& proc : p.registry().list(MonoClock::from_ns(now)))
                    if (proc.liveness == Liveness::maybe_alive && !proc.claiming) ++alive;
                const size_t regions = p.regions().size();
                Result<LeaseInfo> lease = p.lease(p.pool_lease_id());
                doc = pool_summary_json(p, now);
                doc["processes"] = alive;
                doc["regions"] = regions;
                row = {name, format_bytes(p.size()), doc["state"].get<std::string>(),
                       lease ? ttl_text(lease.value(), now) : "?", std::to_string(alive), std::to_string(regions)};
                return {};
            },
            "pool '" + name + "'");
        if (!read) {
            pools.push_back({{"pool", name},
                             {"error", {{"code", std::string(errc_name(read.code()))}, {"message", read.error().message}}}});
            table.add({name, "-", std::string(errc_name(read.code())), "-", "-", "-"});
            continue;
        }
        pools.push_back(std::move(doc));
        table.add(std::move(row));
    }
    if (out.json) {
        print_json({{"pools", pools}});
    } else if (table.empty()) {
        std::cout << "no pools (create one with `fabric-shm pool create --pool NAME`)\n";
    } else {
        std::string text;
        table.render(text);
        std::cout << text;
    }
    if (fault_count() != 0) {
        // What the faulting read owned is orphaned: leave without running destructors.
        std::fflush(stdout);
        _exit(kExitOk);
    }
    return kExitOk;
}

// ---- pool rm -----------------------------------------------------------------------

cxxopts::Options pool_rm_options(const std::string& argv0) {
    cxxopts::Options o(argv0, "Removes a pool (refuses while other live processes are attached)");
    add_common(o);
    o.add_options()("force", "remove even while processes are attached, or when the segment cannot be attached "
                             "(corrupt, or written by an incompatible build)");
    return o;
}

int pool_rm(int argc, char** argv, Output& out) {
    cxxopts::Options o = pool_rm_options(argv[0]);
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    if (!r.unmatched().empty()) return usage(out, "unexpected argument '" + r.unmatched()[0] + "'");
    Result<std::string> name = resolve_pool(opt_string(r, "pool"));
    if (!name) return fail(out, name.error());

    Status removed = Pool::remove(name.value(), r.count("force") > 0);
    if (!removed) return fail(out, with_pool_list(removed.error()));
    if (out.json)
        print_json({{"pool", name.value()}, {"removed", true}});
    else
        std::cout << "removed pool '" << name.value() << "'\n";
    return kExitOk;
}

int pool_command(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm pool"};
    SubArgs s = split_action(argc, argv);
    if (s.action.empty()) {
        if (wants_help(argc, argv)) {
            std::cout << "Usage: fabric-shm pool create|ls|rm|export|import [options]\n\n"
                      << pool_create_options("fabric-shm pool create").help() << "\n"
                      << pool_ls_options("fabric-shm pool ls").help() << "\n"
                      << pool_rm_options("fabric-shm pool rm").help() << "\n"
                      << pool_archive_help();
            return kExitOk;
        }
        return usage(out, "missing action: fabric-shm pool create|ls|rm|export|import");
    }
    out.program = s.argv0;
    if (s.action == "create") return pool_create(s.argc(), s.argv.data(), out);
    if (s.action == "ls" || s.action == "list") return pool_ls(s.argc(), s.argv.data(), out);
    if (s.action == "rm" || s.action == "remove") return pool_rm(s.argc(), s.argv.data(), out);
    if (s.action == "export" || s.action == "import") return pool_archive_command(s.action, s.argc(), s.argv.data(), out);
    return usage(out, "unknown action '" + s.action + "' (fabric-shm pool create|ls|rm|export|import)");
}

// ---- lease ls ----------------------------------------------------------------------

cxxopts::Options lease_ls_options(const std::string& argv0) {
    cxxopts::Options o(argv0, "Lists the pool's lease and every region lease (read-only)");
    add_common(o);
    return o;
}

int lease_ls(int argc, char** argv, Output& out) {
    cxxopts::Options o = lease_ls_options(argv[0]);
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    if (!r.unmatched().empty()) return usage(out, "unexpected argument '" + r.unmatched()[0] + "'");
    Result<std::string> name = resolve_pool(opt_string(r, "pool"));
    if (!name) return fail(out, name.error());
    Result<Pool> pool = open_read_only(name.value());
    if (!pool) return fail(out, pool.error());

    const uint64_t now = mono_now_ns();
    nlohmann::json leases = nlohmann::json::array();
    Table table({"LEASE", "KIND", "NAME", "TTL LEFT", "EXPIRES (UTC)", "TTL", "RENEWALS", "LAST RENEWER"});
    for (const LeaseInfo& l : pool->leases()) {
        leases.push_back(lease_json(l, now));
        table.add({std::to_string(l.lease_id), l.is_pool ? "pool" : std::string(region_kind_name(l.kind)),
                   l.is_pool ? "-" : l.name, ttl_text(l, now), format_wall_ns(mono_to_wall_ns(l.expires_ns)),
                   format_duration_ns(l.ttl_ns), std::to_string(l.renew_count),
                   l.last_renewer ? std::to_string(l.last_renewer) : "-"});
    }
    if (out.json) {
        print_json({{"pool", name.value()}, {"leases", leases}});
    } else {
        std::string text;
        table.render(text);
        std::cout << text;
    }
    return kExitOk;
}

// ---- lease renew -------------------------------------------------------------------

Result<uint64_t> parse_lease_id(const std::string& text) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text.c_str(), &end, 0);
    if (text.empty() || text[0] == '-' || errno != 0 || *end != '\0')
        return make_error(Errc::invalid_argument,
                          "lease id '" + text + "' is not a number (see `fabric-shm lease ls`) or \"pool\"");
    return uint64_t(v);
}

cxxopts::Options lease_renew_options(const std::string& argv0) {
    cxxopts::Options o(argv0, "Renews a lease to now + TTL: LEASE_ID (from `fabric-shm lease ls`), \"pool\" "
                              "(the default: the pool's own lease) or --all (every live lease)");
    add_common(o);
    o.add_options()("all", "renew every lease that has not run out")(
        "ttl", "new TTL (also becomes the lease's TTL); default: the lease's own TTL",
        cxxopts::value<std::string>())("lease", "LEASE_ID or \"pool\"", cxxopts::value<std::vector<std::string>>());
    o.parse_positional({"lease"});
    o.positional_help("[LEASE_ID | pool]");
    return o;
}

int lease_renew(int argc, char** argv, Output& out) {
    cxxopts::Options o = lease_renew_options(argv[0]);
    cxxopts::ParseResult r;
    int rc = 0;
    if (!parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("help")) return std::cout << o.help(), kExitOk;
    std::vector<std::string> ids;
    if (r.count("lease")) ids = r["lease"].as<std::vector<std::string>>();
    if (ids.size() > 1) return usage(out, "give one LEASE_ID (or --all), not " + std::to_string(ids.size()));
    const bool all = r.count("all") > 0;
    if (all && !ids.empty()) return usage(out, "LEASE_ID and --all are exclusive");
    Result<std::string> name = resolve_pool(opt_string(r, "pool"));
    if (!name) return fail(out, name.error());
    uint64_t ttl_ns = 0;
    if (r.count("ttl")) {
        Result<uint64_t> ttl = parse_duration_option("ttl", r["ttl"].as<std::string>());
        if (!ttl) return fail(out, ttl.error());
        if (ttl.value() == 0) return fail(out, Errc::invalid_argument, "--ttl must be longer than 0");
        ttl_ns = ttl.value();
    }
    const bool pool_lease = !all && (ids.empty() || ids[0] == "pool");
    uint64_t lease_id = 0;
    if (!all && !pool_lease) {
        Result<uint64_t> id = parse_lease_id(ids[0]);
        if (!id) return fail(out, id.error());
        lease_id = id.value();
    }

    OpenOptions open;  // writable: renewing writes the lease header; never creates
    Result<Pool> pool = Pool::open(name.value(), open);
    if (!pool) return fail(out, with_pool_list(pool.error()));
    const Pool& p = pool.value();

    std::vector<uint64_t> targets;
    if (all) {
        for (const LeaseInfo& l : p.leases()) targets.push_back(l.lease_id);
    } else {
        targets.push_back(pool_lease ? p.pool_lease_id() : lease_id);
    }

    const uint64_t now = mono_now_ns();
    nlohmann::json results = nlohmann::json::array();
    std::string text;
    int failures = 0;
    Error first_error;
    for (uint64_t id : targets) {
        Result<uint64_t> renewed = p.renew_lease(id, MonoClock::from_ns(now), ns_duration(ttl_ns)).transform(
            [](MonoTime expires) { return to_ns(expires); });
        if (renewed) {
            results.push_back({{"lease_id", id},
                               {"renewed", true},
                               {"expires_ns", renewed.value()},
                               {"expires_wall", format_wall_ns(mono_to_wall_ns(renewed.value()))}});
            text += "renewed lease " + std::to_string(id) + ": expires in " +
                    format_duration_ns(renewed.value() > now ? renewed.value() - now : 0) + " (" +
                    format_wall_ns(mono_to_wall_ns(renewed.value())) + ")\n";
            continue;
        }
        // With --all, leases that already ran out are skipped: a lease never comes back to life.
        if (all && (renewed.code() == Errc::lease_expired || renewed.code() == Errc::stale_generation)) {
            results.push_back({{"lease_id", id}, {"renewed", false}, {"skipped", renewed.error().message}});
            text += "skipped lease " + std::to_string(id) + ": " + renewed.error().message + "\n";
            continue;
        }
        if (failures++ == 0) first_error = renewed.error();
        results.push_back({{"lease_id", id},
                           {"renewed", false},
                           {"error", {{"code", std::string(errc_name(renewed.code()))}, {"message", renewed.error().message}}}});
        text += "failed lease " + std::to_string(id) + ": " + renewed.error().message + "\n";
    }
    if (!all && failures) return fail(out, first_error);
    if (out.json)
        print_json({{"pool", name.value()}, {"leases", results}});
    else
        std::cout << text;
    return failures ? kExitRuntime : kExitOk;
}

int lease_command(int argc, char** argv) {
    Output out{argv_has_json(argc, argv), "fabric-shm lease"};
    SubArgs s = split_action(argc, argv);
    if (s.action.empty()) {
        if (wants_help(argc, argv)) {
            std::cout << "Usage: fabric-shm lease ls|renew [options]\n\n"
                      << lease_ls_options("fabric-shm lease ls").help() << "\n"
                      << lease_renew_options("fabric-shm lease renew").help();
            return kExitOk;
        }
        return usage(out, "missing action: fabric-shm lease ls|renew");
    }
    out.program = s.argv0;
    if (s.action == "ls" || s.action == "list") return lease_ls(s.argc(), s.argv.data(), out);
    if (s.action == "renew") return lease_renew(s.argc(), s.argv.data(), out);
    return usage(out, "unknown action '" + s.action + "' (fabric-shm lease ls|renew)");
}

}  // namespace

void register_pool_commands(std::vector<Command>& commands) {
    commands.push_back({"pool", "create|ls|rm a pool (--size 32M, --ttl 1h, --mode 0600, --numa-node N, --force)",
                        pool_command});
    commands.push_back({"lease", "ls|renew leases (renew [LEASE_ID | pool | --all] [--ttl D])", lease_command});
}

}  // namespace fabric_shm::cli
