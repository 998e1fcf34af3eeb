// SPDX-License-Identifier: MIT
// fabric-shm-bench <scenario> [options]: runs one scenario and prints a table (or --json).
// Scenarios register themselves from bench/scenario_*.cpp (see harness/bench.h).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "fabric_shm/version.h"
#include "harness/bench.h"
#include "harness/procs.h"

using namespace fabric_shm::bench;

namespace {

void print_list() {
    std::cout << "Usage: fabric-shm-bench <scenario> [--json] [--out FILE] [--quick] [--pin] [scenario options]\n"
                 "       fabric-shm-bench <scenario> --help\n       fabric-shm-bench --version\n\nScenarios:\n";
    for (const auto& s : scenarios()) std::cout << "  " << s.name << std::string(s.name.size() < 10 ? 10 - s.name.size() : 1, ' ') << s.summary << "\n";
    std::cout << "\nBuild with buildtype=release or debugoptimized for numbers; progress goes to stderr.\n";
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && std::string(argv[1]) == "--version") {
        std::cout << fabric_shm::version_line("fabric-shm-bench") << "\n";
        return 0;
    }
    if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
        std::string(argv[1]) == "--list") {
        print_list();
        return argc < 2 ? 2 : 0;
    }
    const std::string name = argv[1];
    const Scenario* scenario = nullptr;
    for (const auto& s : scenarios())
        if (s.name == name) scenario = &s;
    if (!scenario) {
        std::fprintf(stderr, "fabric-shm-bench: usage error: unknown scenario '%s'\n", name.c_str());
        print_list();
        return 2;
    }
    const std::string argv0 = "fabric-shm-bench " + name;
    cxxopts::Options o(argv0, scenario->summary);
    o.add_options()("json", "print the JSON report on stdout")("out", "also write the JSON report to FILE",
                                                               cxxopts::value<std::string>())(
        "quick", "small sizes and counts: a smoke run, not for numbers")(
        "pin", "pin the processes a run forks to the allowed CPUs in turn, one each while there are enough "
               "(unpinned, the two spinning sides of a run can share one vCPU)")("h,help", "show this help");
    if (scenario->add_options) scenario->add_options(o);
    std::vector<char*> args = {const_cast<char*>(argv0.c_str())};
    for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    cxxopts::ParseResult r;
    try {
        r = o.parse(int(args.size()), args.data());
    } catch (const cxxopts::exceptions::exception& e) {
        std::fprintf(stderr, "fabric-shm-bench: usage error: %s\n", e.what());
        return 2;
    }
    if (r.count("help")) {
        std::cout << o.help();
        return 0;
    }
    if (!r.unmatched().empty()) {
        std::fprintf(stderr, "fabric-shm-bench: usage error: unexpected argument '%s'\n", r.unmatched()[0].c_str());
        return 2;
    }
    Report report(name, nlohmann::json::object());
    if (r.count("pin")) {
        if (!pin_children()) {
            std::fprintf(stderr, "fabric-shm-bench: --pin: cannot read the allowed CPUs\n");
            return 2;
        }
    }
    Context ctx{r, report, r.count("quick") > 0};
    const int rc = scenario->run(ctx);
    if (rc != 0) return rc;
    if (child_pinning().on) {  // after the run: a scenario sets its config as a whole
        nlohmann::json cpus = nlohmann::json::array();
        for (int c : child_pinning().cpus) cpus.push_back(c);
        report.config()["pinned_cpus"] = cpus;  // each run's children take these in turn
    }
    const nlohmann::json doc = report.to_json();
    if (r.count("out")) {
        std::ofstream f(r["out"].as<std::string>());
        f << doc.dump(2) << "\n";
        if (!f) {
            std::fprintf(stderr, "fabric-shm-bench: cannot write %s\n", r["out"].as<std::string>().c_str());
            return 1;
        }
    }
    if (r.count("json"))
        std::cout << doc.dump(2) << "\n";
    else
        std::cout << report.to_text();
    return 0;
}
