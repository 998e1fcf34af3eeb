// SPDX-License-Identifier: MIT
// Shared CLI conventions: exit codes, error output (text or JSON), pool name resolution.
#include "cli.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "fabric_shm/names.h"
#include "fabric_shm/version.h"

namespace fabric_shm::cli {

int fail(const Output& out, const Error& error) {
    const bool usage_error = error.code == Errc::invalid_argument || error.code == Errc::invalid_name ||
                             error.code == Errc::invalid_uri;
    const std::string message = message_of(out, error);
    if (out.json) {
        print_json({{"error", {{"code", std::string(errc_name(error.code))}, {"message", message}}}});
    } else {
        std::fflush(stdout);
        stderr_line((out.program.empty() ? "fabric-shm" : out.program) + ": error: " + message);
    }
    if (error.code == Errc::interrupted) return kExitInterrupted;
    return usage_error ? kExitUsage : kExitRuntime;
}

int fail(const Output& out, Errc code, const std::string& message) { return fail(out, make_error(code, message)); }

int usage(const Output& out, const std::string& message) {
    if (out.json) {
        print_json({{"error", {{"code", "usage"}, {"message", message}}}});
    } else {
        std::fflush(stdout);
        const std::string program = out.program.empty() ? "fabric-shm" : out.program;
        stderr_line(program + ": usage error: " + message + " (see " + program + " --help)");
    }
    return kExitUsage;
}

void print_json(const nlohmann::json& doc) {
    // error_handler::replace: names read from a corrupt segment may hold invalid UTF-8;
    // the dump must still print valid JSON rather than throw.
    const std::string text = doc.dump(isatty(STDOUT_FILENO) ? 2 : -1, ' ', false,
                                      nlohmann::json::error_handler_t::replace);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

std::string message_of(const Output& out, const Error& error) { return localize(error.message, out.spelling); }

void write_line(int fd, std::string line) {
    if (line.empty() || line.back() != '\n') line += '\n';
    size_t done = 0;
    while (done < line.size()) {
        const ssize_t n = ::write(fd, line.data() + done, line.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  // nowhere to report a failing stderr
        }
        done += size_t(n);
    }
}

bool argv_has_version(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::strcmp(argv[i], "--version") == 0) return true;
    return false;
}

int print_version(const std::string& program) {
    std::cout << version_line(program) << "\n";
    return kExitOk;
}

std::string pool_option_help(const std::string& extra) {
    const char* env = std::getenv("FABRIC_SHM_POOL");
    std::string text = "pool name (default: ";
    if (env && *env) text += "\"" + std::string(env) + "\" from $FABRIC_SHM_POOL";
    else text += "\"default\"; $FABRIC_SHM_POOL overrides";
    text += ")";
    if (!extra.empty()) text += "; " + extra;
    return text;
}

Result<std::string> resolve_pool(const std::string& flag_value) {
    std::string name = flag_value.empty() ? std::string(default_pool_name()) : flag_value;
    Status valid = validate_name("pool", name);
    if (!valid) {
        Error e = valid.error();
        if (flag_value.empty()) e.message += " (from $FABRIC_SHM_POOL)";
        return e;
    }
    return name;
}

std::vector<DumpSection>& dump_sections() {
    static std::vector<DumpSection> sections;
    return sections;
}

}  // namespace fabric_shm::cli
