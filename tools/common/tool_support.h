// SPDX-License-Identifier: MIT
// Helpers shared by the tool executables (not part of the library): option parsing that
// honours --json, read-only attach with a helpful NotFound, and JSON/text renderings of
// the pool's process, region and lease records.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/registry.h"

namespace fabric_shm::cli {

/// True when argv holds --json: scanned before parsing so that a usage error is JSON too.
bool argv_has_json(int argc, char** argv);

/// Parses argv; on a cxxopts error prints a usage error and returns false with *exit_code = 2.
bool parse_options(cxxopts::Options& options, int argc, char** argv, const Output& out,
                   cxxopts::ParseResult& result, int* exit_code);

/// An option's value, or `fallback` when it was not given (options without a default_value:
/// help texts then show the real default in their description, never `(default: "")`).
std::string opt_string(const cxxopts::ParseResult& r, const std::string& name, const std::string& fallback = "");

/// What a program that creates its pool as a side effect (producer, worker, put, topic
/// create) creates it with.
struct PoolCreation {
    uint64_t size_bytes = kDefaultPoolSize;
    bool no_create = false;   ///< --no-create given (FABRIC_SHM_NO_CREATE=1 has the same effect)
    StoreConfig store;        ///< the default store, created with the pool when store_given
    bool store_given = false; ///< --heap-size / --max-object-size / --table-entries given
};
/// True when --no-create was given or $FABRIC_SHM_NO_CREATE is set to anything but "" or "0".
bool no_create_requested(bool flag);
/// Attaches to the pool, creating it when missing unless no_create_requested(). A creation
/// is announced on stderr (name, size, TTL, path, the pools that do exist: a typo shows);
/// a refusal is NotFound naming the flag and the pools present.
Result<Pool> open_or_create_pool(const Output& out, const std::string& name, const PoolCreation& creation);

/// Adds --heap-size, --max-object-size and --table-entries (the default store's geometry).
/// `when` says when they apply ("when this producer creates the pool").
void add_store_options(cxxopts::Options& o, const std::string& when);
/// Reads them into creation->store (store_given when any was given); errors name the option.
Status parse_store_options(const cxxopts::ParseResult& r, PoolCreation* creation);
/// Opens (creating when absent) the pool's default store with the requested geometry. When
/// the store exists with another geometry, warns on stderr that the options were not applied.
Result<std::unique_ptr<MemObjectStore>> open_default_store(const Output& out, Pool& pool, const PoolCreation& creation);

/// NotFound for a pool: appends the pools that do exist (read-only commands never create one).
Error with_pool_list(Error error);

/// Attaches read-only: never creates, never registers, never reaps. NotFound lists the pools.
Result<Pool> open_read_only(const std::string& name);

/// Parses an option value with parse_duration_ns / parse_size_bytes; the error names the option.
Result<uint64_t> parse_duration_option(const std::string& option, const std::string& text);
Result<uint64_t> parse_size_option(const std::string& option, const std::string& text);

/// "4m12s" while running, "expired 3.2s ago" after, "revoked" for revoked leases.
std::string ttl_text(const LeaseInfo& lease, uint64_t now_ns);
/// Signed ns until expiry (negative once expired).
int64_t ttl_remaining_ns(uint64_t expires_ns, uint64_t now_ns);
std::string hex(uint64_t value);

nlohmann::json lease_json(const LeaseInfo& lease, uint64_t now_ns);
nlohmann::json region_json(const RegionInfo& region, uint64_t now_ns);
nlohmann::json process_json(const ProcessInfo& process, uint64_t now_ns);

/// `text` with each control byte (below 0x20, 0x7f, and the C1 controls U+0080..U+009F, which
/// terminals also obey) and each byte of invalid UTF-8 written as \xNN; valid UTF-8 is kept.
/// Tables show what processes wrote into shared memory (names, values, reasons): an escape
/// sequence there must not reach the operator's terminal as one.
std::string terminal_safe(std::string text);
/// terminal_safe for a report of many lines: each line escaped, the newlines between them kept.
std::string terminal_safe_lines(std::string_view text);

/// Left-aligned text table with a header row; columns sized to their widest cell. Every cell
/// goes through terminal_safe.
class Table {
public:
    explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
    void add(std::vector<std::string> row);
    bool empty() const { return rows_.size() == 1; }
    void render(std::string& out, const std::string& indent = "") const;

private:
    std::vector<std::vector<std::string>> rows_;
};

/// Pools to operate on: every pool present with --all, else the resolved --pool.
/// Splits `fabric-shm <command> <action> ...` into the action and an argv for cxxopts whose
/// argv[0] names the full command ("fabric-shm pool create").
struct SubArgs {
    std::string action;
    std::string argv0;
    std::vector<char*> argv;
    int argc() const { return int(argv.size()) - 1; }
};
SubArgs split_action(int argc, char** argv);

Result<std::vector<std::string>> select_pools(const std::string& pool_flag, bool all);

}  // namespace fabric_shm::cli
