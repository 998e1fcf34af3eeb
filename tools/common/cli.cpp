// SPDX-License-Identifier: MIT
// Shared CLI conventions: exit codes, error output (text or JSON), pool name resolution.
#include "cli.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "fabric_shm/names.h"

namespace fabric_shm::cli {

int fail(const Output& out, const Error& error) {
    const bool usage_error = error.code == Errc::invalid_argument || error.code == Errc::invalid_name ||
                             error.code == Errc::invalid_uri;
    if (out.json) {
        print_json({{"error", {{"code", std::string(errc_name(error.code))}, {"message", error.message}}}});
    } else {
        std::fflush(stdout);
        std::cerr << (out.program.empty() ? "fabric-shm" : out.program) << ": error: " << error.message << "\n";
    }
    return usage_error ? kExitUsage : kExitRuntime;
}

int fail(const Output& out, Errc code, const std::string& message) { return fail(out, make_error(code, message)); }

int usage(const Output& out, const std::string& message) {
    if (out.json) {
        print_json({{"error", {{"code", "usage"}, {"message", message}}}});
    } else {
        std::fflush(stdout);
        const std::string program = out.program.empty() ? "fabric-shm" : out.program;
        std::cerr << program << ": usage error: " << message << " (see " << program << " --help)\n";
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
