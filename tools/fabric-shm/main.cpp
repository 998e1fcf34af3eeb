// SPDX-License-Identifier: MIT
// `fabric-shm <command> [args]`: the control CLI. Each cmd_*.cpp registers its commands;
// this file only dispatches.
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cli.h"
#include "cmd_group.h"
#include "tool_support.h"

using namespace fabric_shm;

namespace {

/// Every registration function linked into this binary. A new command family adds its
/// function here and its cmd_*.cpp to tools/meson.build.
using Registration = void (*)(std::vector<cli::Command>&);
const std::vector<Registration> kRegistrations = {
    cli::register_pool_commands,  // pool create|ls|rm, lease ls|renew
    cli::register_group_commands,  // group ls|describe|rm|reset|skip
    cli::register_object_commands,  // put, get, head, rm, ls
    cli::register_topic_commands,  // topic create|ls|describe|rm, send, tail
    cli::register_dlq_commands,    // dlq ls|show|replay|purge
};

void print_help(const std::vector<cli::Command>& commands) {
    std::string text =
        "fabric-shm: control a fabric-shm pool (one POSIX shared-memory segment per pool)\n"
        "Usage:\n  fabric-shm <command> [options]   (fabric-shm <command> --help for its options)\n\n"
        "Commands:\n";
    size_t width = 0;
    for (const auto& c : commands) width = std::max(width, c.name.size());
    for (const auto& c : commands) text += "  " + c.name + std::string(width - c.name.size() + 2, ' ') + c.summary + "\n";
    text +=
        "\nEvery command takes --pool NAME (default $FABRIC_SHM_POOL, else \"default\"), --json and -h/--help.\n"
        "fabric-shm --version prints the version and the pool layout version.\n"
        "Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 --check found violations.\n"
        "Related tools: fabric-shm-dump (inspect, --check), fabric-shm-reaper (reclaim expired leases).\n";
    std::cout << text;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<cli::Command> commands;
    for (Registration r : kRegistrations) r(commands);

    cli::Output out{cli::argv_has_json(argc, argv), "fabric-shm"};
    if (argc < 2) {
        print_help(commands);
        return cli::usage(out, "missing command");
    }
    const std::string name = argv[1];
    if (name == "--help" || name == "-h" || name == "help") {
        print_help(commands);
        return cli::kExitOk;
    }
    if (name == "--version" || name == "version") return cli::print_version("fabric-shm");
    for (const auto& c : commands) {
        if (c.name != name) continue;
        std::string argv0 = "fabric-shm " + name;
        std::vector<char*> args;
        args.push_back(argv0.data());
        for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
        args.push_back(nullptr);
        return c.run(int(args.size() - 1), args.data());
    }
    std::string known;
    for (const auto& c : commands) known += (known.empty() ? "" : ", ") + c.name;
    return cli::usage(out, "unknown command '" + name + "' (commands: " + known + ")");
}
