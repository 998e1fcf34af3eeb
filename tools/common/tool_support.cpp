// SPDX-License-Identifier: MIT
// Helpers shared by the tool executables; see tool_support.h.
#include "tool_support.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "fabric_shm/clock.h"

namespace fabric_shm::cli {

bool argv_has_json(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::strcmp(argv[i], "--json") == 0) return true;
    return false;
}

bool parse_options(cxxopts::Options& options, int argc, char** argv, const Output& out,
                   cxxopts::ParseResult& result, int* exit_code) {
    try {
        result = options.parse(argc, argv);
        return true;
    } catch (const cxxopts::exceptions::exception& e) {
        *exit_code = usage(out, e.what());
        return false;
    }
}

std::string opt_string(const cxxopts::ParseResult& r, const std::string& name, const std::string& fallback) {
    return r.count(name) ? r[name].as<std::string>() : fallback;
}

bool no_create_requested(bool flag) {
    if (flag) return true;
    const char* env = std::getenv("FABRIC_SHM_NO_CREATE");
    return env && *env && std::strcmp(env, "0") != 0;
}

Result<Pool> open_or_create_pool(const Output& out, const std::string& name, const PoolCreation& creation) {
    OpenOptions options;
    options.create_if_missing = !no_create_requested(creation.no_create);
    options.create.size_bytes = creation.size_bytes;
    Result<Pool> pool = Pool::open(name, options);
    if (!pool) {
        if (pool.code() != Errc::not_found || options.create_if_missing) return pool;
        Error e = pool.error();
        e.message = "pool '" + name + "' does not exist and " +
                    (creation.no_create ? std::string("--no-create") : std::string("FABRIC_SHM_NO_CREATE")) +
                    " forbids creating it";
        return with_pool_list(std::move(e));
    }
    if (pool->created()) {
        std::string others;
        for (const std::string& p : Pool::list())
            if (p != name) others += (others.empty() ? "" : ", ") + p;
        uint64_t ttl = 0;
        if (auto lease = pool->lease(pool->pool_lease_id())) ttl = lease->ttl_ns;
        stderr_line(out.program + ": created pool '" + name + "' (" + format_bytes(pool->size()) + ", lease TTL " +
                    format_duration_ns(ttl) + ", " + Pool::segment_path(name) + "): it did not exist" +
                    (others.empty() ? std::string() : " (pools present: " + others + ")") +
                    "; --no-create or FABRIC_SHM_NO_CREATE=1 refuses instead");
    }
    return pool;
}

void add_store_options(cxxopts::Options& o, const std::string& when) {
    o.add_options()("heap-size",
                    "object store heap size " + when + " (default: half the pool)",
                    cxxopts::value<std::string>())(
        "max-object-size", "largest object " + when + " (default: a quarter of the heap, at most 16M)",
        cxxopts::value<std::string>())("table-entries",
                                       "object store table entries " + when +
                                           " (default: one per KiB of heap, at least 1024)",
                                       cxxopts::value<std::string>());
}

Status parse_store_options(const cxxopts::ParseResult& r, PoolCreation* creation) {
    if (r.count("heap-size")) {
        auto v = parse_size_option("heap-size", r["heap-size"].as<std::string>());
        if (!v) return v.error();
        if (*v == 0) return make_error(Errc::invalid_argument, "--heap-size must be greater than 0");
        creation->store.heap_bytes = *v;
        creation->store_given = true;
    }
    if (r.count("max-object-size")) {
        auto v = parse_size_option("max-object-size", r["max-object-size"].as<std::string>());
        if (!v) return v.error();
        if (*v == 0) return make_error(Errc::invalid_argument, "--max-object-size must be greater than 0");
        creation->store.max_object_bytes = *v;
        creation->store_given = true;
    }
    if (r.count("table-entries")) {
        const std::string text = r["table-entries"].as<std::string>();
        char* end = nullptr;
        errno = 0;
        const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
        if (text.empty() || text[0] == '-' || errno != 0 || *end != '\0' || v == 0 || v > UINT32_MAX)
            return make_error(Errc::invalid_argument,
                              "--table-entries '" + text + "' is not a number between 1 and 4294967295");
        creation->store.table_entries = uint32_t(v);
        creation->store_given = true;
    }
    return {};
}

Result<std::unique_ptr<MemObjectStore>> open_default_store(const Output& out, Pool& pool,
                                                           const PoolCreation& creation) {
    std::string note;
    auto store = MemObjectStore::open(pool, creation.store, &note);
    if (store && !note.empty())
        stderr_line(out.program + ": warning: " + localize(note, out.spelling) +
                    "; the store's geometry is fixed when it is created (with the pool): re-create the pool to change it");
    return store;
}

Error with_pool_list(Error error) {
    if (error.code != Errc::not_found) return error;
    // The library's own NotFound may already list them.
    for (const char* marker : {"existing pools", "no pools exist", "pools present"})
        if (error.message.find(marker) != std::string::npos) return error;
    const std::vector<std::string> pools = Pool::list();
    if (pools.empty()) {
        error.message += " (no pools exist; create one with `fabric-shm pool create --pool NAME`)";
    } else {
        error.message += " (pools present:";
        for (const auto& p : pools) error.message += " " + p;
        error.message += ")";
    }
    return error;
}

Result<Pool> open_read_only(const std::string& name) {
    OpenOptions options;
    options.read_only = true;
    options.create_if_missing = false;
    options.reap_on_open = false;
    Result<Pool> pool = Pool::open(name, options);
    if (!pool) return with_pool_list(pool.error());
    return pool;
}

Result<uint64_t> parse_duration_option(const std::string& option, const std::string& text) {
    Result<uint64_t> v = parse_duration_ns(text);
    if (!v) return make_error(Errc::invalid_argument, "--" + option + ": " + v.error().message);
    return v;
}

Result<uint64_t> parse_size_option(const std::string& option, const std::string& text) {
    Result<uint64_t> v = parse_size_bytes(text);
    if (!v) return make_error(Errc::invalid_argument, "--" + option + ": " + v.error().message);
    return v;
}

int64_t ttl_remaining_ns(uint64_t expires_ns, uint64_t now_ns) {
    if (expires_ns >= now_ns) {
        const uint64_t d = expires_ns - now_ns;
        return d > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(d);
    }
    const uint64_t d = now_ns - expires_ns;
    return d > uint64_t(INT64_MAX) ? INT64_MIN : -int64_t(d);
}

std::string ttl_text(const LeaseInfo& lease, uint64_t now_ns) {
    if (lease.revoked) return "revoked";
    if (now_ns < lease.expires_ns) return format_duration_ns(lease.expires_ns - now_ns);
    return "expired " + format_duration_ns(now_ns - lease.expires_ns) + " ago";
}

std::string hex(uint64_t value) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(value));
    return buf;
}

nlohmann::json lease_json(const LeaseInfo& lease, uint64_t now_ns) {
    return {
        {"lease_id", lease.lease_id},
        {"is_pool", lease.is_pool},
        {"kind", lease.is_pool ? std::string("pool") : std::string(region_kind_name(lease.kind))},
        {"name", lease.name},
        {"region_index", lease.region.index},
        {"generation", lease.region.generation},
        {"created_ns", lease.created_ns},
        {"expires_ns", lease.expires_ns},
        {"expires_wall", format_wall_ns(mono_to_wall_ns(lease.expires_ns))},
        {"ttl_ns", lease.ttl_ns},
        {"ttl_remaining_ns", ttl_remaining_ns(lease.expires_ns, now_ns)},
        {"ttl_remaining", ttl_text(lease, now_ns)},
        {"renewed_ns", lease.renewed_ns},
        {"renew_count", lease.renew_count},
        {"revoked", lease.revoked},
        {"expired", lease.expired(MonoClock::from_ns(now_ns))},
        {"last_renewer", lease.last_renewer},
    };
}

nlohmann::json region_json(const RegionInfo& region, uint64_t now_ns) {
    return {
        {"index", region.ref.index},
        {"generation", region.ref.generation},
        {"ref", region.ref.packed()},
        {"state", region.state},
        {"kind", std::string(region_kind_name(region.kind))},
        {"kind_id", region.kind},
        {"name", region.name},
        {"offset", region.offset},
        {"length", region.length},
        {"parent", region.parent.valid() ? nlohmann::json(region.parent.packed()) : nlohmann::json(nullptr)},
        {"owner", region.owner},
        {"params", {region.params[0], region.params[1], region.params[2]}},
        {"attached_processes", region.attached_processes},
        {"lease", lease_json(region.lease, now_ns)},
    };
}

nlohmann::json process_json(const ProcessInfo& p, uint64_t now_ns) {
    return {
        {"slot", p.slot},
        {"token", p.token},
        {"pid", p.pid},
        {"comm", p.comm},
        {"start_time", p.start_time},
        {"pidns", p.pidns},
        {"claiming", p.claiming},
        {"alive", p.liveness == Liveness::maybe_alive},
        {"dead_reason", p.dead_reason},
        {"heartbeat_ns", p.heartbeat_ns},
        {"heartbeat_age_ns", p.heartbeat_ns <= now_ns ? now_ns - p.heartbeat_ns : 0},
        {"timeout_ns", p.timeout_ns},
        {"registered_ns", p.registered_ns},
        {"child_groups", p.child_groups},
    };
}

namespace {
/// Bytes in a UTF-8 sequence starting at `p` (up to `end`) that decodes to a code point at or
/// above U+00A0 (shown as it is); 0 for a C1 control (U+0080..U+009F) or anything invalid.
size_t printable_utf8(const unsigned char* p, const unsigned char* end) {
    const unsigned char lead = p[0];
    const size_t n = lead >= 0xf0 && lead <= 0xf4 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc2 && lead <= 0xdf ? 2 : 0;
    if (n == 0 || size_t(end - p) < n) return 0;
    uint32_t cp = lead & (0x7f >> n);
    for (size_t i = 1; i < n; ++i) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    // Overlong forms, surrogates, past U+10FFFF, and the C1 controls.
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff) ||
        cp < 0xa0)
        return 0;
    return n;
}
}  // namespace

std::string terminal_safe(std::string text) {
    auto plain = [](unsigned char c) { return c >= 0x20 && c < 0x7f; };
    if (std::all_of(text.begin(), text.end(), [&](char c) { return plain(uint8_t(c)); })) return text;
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(text.size() + 16);
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = p + text.size();
    while (p < end) {
        if (plain(*p)) {
            out += char(*p++);
            continue;
        }
        if (const size_t n = *p >= 0x80 ? printable_utf8(p, end) : 0; n != 0) {
            out.append(reinterpret_cast<const char*>(p), n);
            p += n;
            continue;
        }
        out += "\\x";
        out += kHex[*p >> 4];
        out += kHex[*p & 15];
        ++p;
    }
    return out;
}

std::string terminal_safe_lines(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (;;) {
        const size_t nl = text.find('\n');
        out += terminal_safe(std::string(text.substr(0, nl)));
        if (nl == std::string_view::npos) return out;
        out += '\n';
        text.remove_prefix(nl + 1);
    }
}

void Table::add(std::vector<std::string> row) {
    for (std::string& cell : row) cell = terminal_safe(std::move(cell));
    rows_.push_back(std::move(row));
}

void Table::render(std::string& out, const std::string& indent) const {
    std::vector<size_t> widths;
    for (const auto& row : rows_) {
        if (widths.size() < row.size()) widths.resize(row.size(), 0);
        for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
    }
    for (const auto& row : rows_) {
        std::string line = indent;
        for (size_t i = 0; i < row.size(); ++i) {
            line += row[i];
            if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out += line + "\n";
    }
}

Result<std::vector<std::string>> select_pools(const std::string& pool_flag, bool all) {
    if (all) {
        if (!pool_flag.empty())
            return make_error(Errc::invalid_argument, "--pool " + pool_flag + " and --all are exclusive");
        return Pool::list();
    }
    Result<std::string> name = resolve_pool(pool_flag);
    if (!name) return name.error();
    return std::vector<std::string>{name.value()};
}

SubArgs split_action(int argc, char** argv) {
    SubArgs s;
    s.argv0 = argv[0];
    int first = 1;
    if (argc >= 2 && argv[1][0] != '-') {
        s.action = argv[1];
        s.argv0 += " " + s.action;
        first = 2;
    }
    s.argv.push_back(s.argv0.data());
    for (int i = first; i < argc; ++i) s.argv.push_back(argv[i]);
    s.argv.push_back(nullptr);
    return s;
}

}  // namespace fabric_shm::cli
