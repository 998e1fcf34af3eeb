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
#include "fabric_shm/pool.h"
#include "fabric_shm/registry.h"

namespace fabric_shm::cli {

/// True when argv holds --json: scanned before parsing so that a usage error is JSON too.
bool argv_has_json(int argc, char** argv);

/// Parses argv; on a cxxopts error prints a usage error and returns false with *exit_code = 2.
bool parse_options(cxxopts::Options& options, int argc, char** argv, const Output& out,
                   cxxopts::ParseResult& result, int* exit_code);

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

/// Left-aligned text table with a header row; columns sized to their widest cell.
class Table {
public:
    explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
    void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
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
