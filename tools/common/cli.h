// SPDX-License-Identifier: MIT
// Shared by every executable in tools/ and workers/: exit codes, error output (text or
// JSON), pool name resolution, option parsing helpers. Not part of the library.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fabric_shm/pool.h"
#include "fabric_shm/result.h"

namespace fabric_shm::cli {

enum ExitCode : int {
    kExitOk = 0,
    kExitRuntime = 1,     ///< the operation failed (not found, expired, full, ...)
    kExitUsage = 2,       ///< bad command line (unknown option, invalid name/URI/duration)
    kExitViolations = 3,  ///< --check found violations
};

/// Output mode chosen by --json, shared by the helpers below.
struct Output {
    bool json = false;
    std::string program;  ///< "fabric-shm", "fabric-shm-dump", ...
};

/// Prints the error ({"error":{"code":"not_found","message":"..."}} on stdout with --json,
/// "<program>: error: <message>" on stderr otherwise) and returns the exit code: kExitUsage for
/// invalid_argument / invalid_name / invalid_uri, else kExitRuntime.
int fail(const Output& out, const Error& error);
int fail(const Output& out, Errc code, const std::string& message);
int usage(const Output& out, const std::string& message);  ///< kExitUsage with code "usage"
/// Prints a JSON document (pretty when stdout is a terminal) followed by a newline.
void print_json(const nlohmann::json& doc);

/// --pool value if given, else $FABRIC_SHM_POOL, else "default"; validated (invalid_name).
Result<std::string> resolve_pool(const std::string& flag_value);

/// A subcommand of the `fabric-shm` CLI: `fabric-shm <name> [args...]`. The function gets the
/// arguments after the name (argv[0] = "fabric-shm <name>") and returns the exit code.
struct Command {
    std::string name;
    std::string summary;  ///< one line for `fabric-shm --help`
    std::function<int(int argc, char** argv)> run;
};
/// Each cmd_*.cpp defines one registration function; tools/fabric-shm/main.cpp calls them all.
void register_pool_commands(std::vector<Command>& commands);    ///< pool, lease
void register_object_commands(std::vector<Command>& commands);  ///< put, get, head, rm, ls
void register_topic_commands(std::vector<Command>& commands);   ///< topic, send, tail, group

/// Sections of fabric-shm-dump: each data structure adds one (tools/dump/section_*.cpp).
struct DumpSection {
    std::string name;  ///< JSON key ("store", "topics", ...)
    /// Fills `out` from the pool (read-only mapping); appends violations / in-progress notes.
    std::function<void(const Pool& pool, nlohmann::json& out)> fill;
    /// Human-readable rendering of `out`.
    std::function<void(const nlohmann::json& out, std::string& text)> render;
};
std::vector<DumpSection>& dump_sections();

}  // namespace fabric_shm::cli
