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
#include "hints.h"

namespace fabric_shm::cli {

enum ExitCode : int {
    kExitOk = 0,
    kExitRuntime = 1,     ///< the operation failed (not found, expired, full, ...)
    kExitUsage = 2,       ///< bad command line (unknown option, invalid name/URI/duration)
    kExitViolations = 3,  ///< --check found violations
    kExitInterrupted = 130,  ///< stopped by Ctrl-C (SIGINT) or SIGTERM before the work was done (128 + SIGINT)
};

/// Output mode chosen by --json, shared by the helpers below.
struct Output {
    Output(bool json_output = false, std::string program_name = {}, OptionSpelling option_spelling = {})
        : json(json_output), program(std::move(program_name)), spelling(std::move(option_spelling)) {}
    bool json = false;
    std::string program;  ///< "fabric-shm", "fabric-shm-dump", ...
    /// How this program spells the settings library messages name (hints.h); error
    /// messages are rewritten with it.
    OptionSpelling spelling;
};

/// Prints the error ({"error":{"code":"not_found","message":"..."}} on stdout with --json,
/// "<program>: error: <message>" on stderr otherwise) and returns the exit code: kExitUsage for
/// invalid_argument / invalid_name / invalid_uri, else kExitRuntime.
int fail(const Output& out, const Error& error);
int fail(const Output& out, Errc code, const std::string& message);
int usage(const Output& out, const std::string& message);  ///< kExitUsage with code "usage"
/// Prints a JSON document (pretty when stdout is a terminal) followed by a newline.
void print_json(const nlohmann::json& doc);
/// The error's message in this program's option names (hints.h).
std::string message_of(const Output& out, const Error& error);

/// Writes `line` (a newline is added when missing) to fd with one write(2) where possible:
/// the lines of several processes sharing a terminal or pipe never mix within a line.
void write_line(int fd, std::string line);
inline void stderr_line(std::string line) { write_line(2, std::move(line)); }

/// True when argv holds --version (any position); the caller prints version_line(program).
bool argv_has_version(int argc, char** argv);
/// Prints "<program> <release> (pool layout M.m)" on stdout; returns kExitOk.
int print_version(const std::string& program);

/// Help text for --pool: names the default this invocation would use and where it comes from.
std::string pool_option_help(const std::string& extra = "");

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
void register_dlq_commands(std::vector<Command>& commands);     ///< dlq ls|show|replay|purge

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
