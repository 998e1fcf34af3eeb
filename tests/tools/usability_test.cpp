// SPDX-License-Identifier: MIT
// The command line as a new user meets it: -h/--help and --version everywhere, help texts
// with real defaults, every option an error message hints at exists where the message is
// printed, errors that name options rather than struct fields, pool create's store
// options, the dump's --check labels and FRAG, the dlq commands, and the install step that
// runs ldconfig.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../mq/mq_test_util.h"
#include "../support/test_support.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/version.h"
#include "hints.h"
#include "layout/pool_layout.h"

using namespace fabric_shm;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string q(const std::string& s) {
    std::string r = "'";
    for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return r + "'";
}

std::string bin(const std::string& program) {
    if (program == "fabric-shm") return test::build_path("tools/fabric-shm");
    if (program == "fabric-shm-dump") return test::build_path("tools/dump/fabric-shm-dump");
    if (program == "fabric-shm-reaper") return test::build_path("tools/reaper/fabric-shm-reaper");
    if (program == "fabric-shm-producer") return test::build_path("workers/fabric-shm-producer");
    if (program == "fabric-shm-worker") return test::build_path("workers/fabric-shm-worker");
    FAIL("unknown program " << program);
    return "";
}

struct Run {
    int rc = -1;
    std::string out;  ///< stdout and stderr
};

/// "fabric-shm pool create --help" -> runs build/tools/fabric-shm with "pool create --help".
Run run(const std::string& command_line, const std::string& env = "") {
    const size_t space = command_line.find(' ');
    const std::string program = command_line.substr(0, space);
    const std::string args = space == std::string::npos ? "" : command_line.substr(space + 1);
    Run r;
    r.rc = test::run_command(env + " " + q(bin(program)) + " " + args + " 2>&1", &r.out);
    return r;
}

std::string source_dir() {
    const char* src = std::getenv("FABRIC_SHM_SOURCE_DIR");
    REQUIRE(src != nullptr);
    return src;
}

std::string read_text(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

/// Every command a user can ask for help, as typed.
const std::vector<std::string> kCommands = {
    "fabric-shm",           "fabric-shm pool",        "fabric-shm pool create", "fabric-shm pool ls",
    "fabric-shm pool rm",   "fabric-shm pool export", "fabric-shm pool import", "fabric-shm lease",       "fabric-shm lease ls",    "fabric-shm lease renew",
    "fabric-shm topic",     "fabric-shm topic create", "fabric-shm send",       "fabric-shm tail",
    "fabric-shm group",     "fabric-shm put",         "fabric-shm get",         "fabric-shm head",
    "fabric-shm rm",        "fabric-shm ls",          "fabric-shm dlq",         "fabric-shm dlq replay",
    "fabric-shm-dump",      "fabric-shm-reaper",      "fabric-shm-producer",    "fabric-shm-worker",
};

json parse_json(const std::string& text) { return json::parse(text, nullptr, false); }

/// A pool of 8 MiB with its default store, removed at the end (the dump tests' set-up).
struct StorePool {
    test::PoolCleanup cleanup;
    const std::string& name = cleanup.name();
    Pool pool;
    std::unique_ptr<MemObjectStore> store;
    explicit StorePool(const std::string& tag) : cleanup(test::unique_pool_name(tag)) {
        auto p = Pool::create(PoolOptions{name, 8ull << 20});
        REQUIRE(p.ok());
        pool = std::move(*p);
        auto s = MemObjectStore::open(pool);
        REQUIRE(s.ok());
        store = std::move(*s);
    }
};

/// Topic "ev" (one partition) in `pool` whose messages (key, value) group "g" dead-letters
/// with `reason`, as a worker would after its last attempt.
void dead_letter_on_ev(Pool& pool, const std::vector<std::pair<std::string, std::string>>& messages,
                       const std::string& reason) {
    TopicConfig tc;
    tc.num_partitions = 1;
    REQUIRE(TopicManager(pool).create("ev", tc).ok());
    auto c = Consumer::open(pool, "ev", "g");
    REQUIRE(c.ok());
    REQUIRE(c->assign_all().ok());
    auto router = DlqRouter::open(pool, "ev", "g");
    REQUIRE(router.ok());
    auto prod = Producer::open(pool, "ev");
    REQUIRE(prod.ok());
    for (const auto& [key, value] : messages) REQUIRE(prod->send(key, value).ok());
    MessageBatch b;
    REQUIRE(c->poll(b, 8, Duration::zero()).value() == messages.size());
    for (const Message& m : b) REQUIRE(router->dead_letter(m, 3, reason).ok());
    REQUIRE(c->commit().ok());
}

}  // namespace

TEST_CASE("cli: every program and command takes -h and --help, exits 0, and shows no empty default") {
    for (const std::string& c : kCommands) {
        // -h everywhere; --help too on the programs themselves (each start costs ~0.3 s under ASan).
        const bool program = c.find(' ') == std::string::npos;
        for (const char* flag : {"-h", "--help"}) {
            if (!program && std::string(flag) == "--help") continue;
            const Run r = run(c + " " + flag);
            INFO(c << " " << flag << "\n" << r.out);
            CHECK(r.rc == 0);
            CHECK(r.out.find("Usage") != std::string::npos);
            CHECK(r.out.find("(default: \"\")") == std::string::npos);
            CHECK(r.out.find("(default: -1)") == std::string::npos);
        }
    }
    // --pool names the default in effect.
    const Run r = run("fabric-shm-producer --help", "FABRIC_SHM_POOL=my-pool");
    CHECK(r.out.find("(default: \"my-pool\" from") != std::string::npos);
}

TEST_CASE("cli: --version on every program prints the release and the pool layout version") {
    const std::string layout = std::to_string(layout::kLayoutMajor) + "." + std::to_string(layout::kLayoutMinor);
    CHECK(layout_version().major == layout::kLayoutMajor);
    CHECK(layout_version().minor == layout::kLayoutMinor);
    for (const char* program : {"fabric-shm", "fabric-shm-dump", "fabric-shm-reaper", "fabric-shm-producer",
                                "fabric-shm-worker"}) {
        const Run r = run(std::string(program) + " --version");
        INFO(r.out);
        CHECK(r.rc == 0);
        CHECK(r.out == std::string(program) + " " + std::string(library_version()) + " (pool layout " + layout + ")\n");
    }
    CHECK_FALSE(library_version().empty());
}

TEST_CASE("cli: every option an error hint names exists in the help of each program that prints it") {
    // The hints, collected from the library's sources (string literals with "raise with --X",
    // "lower --X", ...), as the user would read them.
    std::set<std::string> hinted;
    for (const auto& e : fs::recursive_directory_iterator(source_dir() + "/libfabric_shm")) {
        if (!e.is_regular_file()) continue;
        const std::string ext = e.path().extension().string();
        if (ext != ".cpp" && ext != ".h") continue;
        std::istringstream lines(read_text(e.path().string()));
        for (std::string line; std::getline(lines, line);) {
            // Each string literal of the line on its own.
            for (size_t open = line.find('"'); open != std::string::npos;) {
                const size_t close = line.find('"', open + 1);
                if (close == std::string::npos) break;
                for (const std::string& o : cli::hinted_options(line.substr(open + 1, close - open - 1))) hinted.insert(o);
                open = line.find('"', close + 1);
            }
        }
    }
    INFO("hinted options: " << [&] {
        std::string s;
        for (const auto& o : hinted) s += o + " ";
        return s;
    }());
    // The four the library is known to hint at (the scan works).
    for (const char* known : {"--heap-size", "--max-object-size", "--table-entries", "--size"})
        CHECK(hinted.count(known) == 1);

    // Each program that can print them (it creates pools, stores or topics), with its spelling.
    struct Program {
        std::string command;
        cli::OptionSpelling spelling;
    };
    const std::vector<Program> programs = {
        {"fabric-shm pool create", cli::spelling_pool_create()},
        {"fabric-shm topic create", cli::spelling_topic_create()},
        {"fabric-shm put", cli::spelling_put()},
        {"fabric-shm-producer", cli::spelling_producer()},
        {"fabric-shm-worker", cli::spelling_worker()},
        {"fabric-shm send", {}},  // no creation options at all: the hint names the command
    };
    std::map<std::string, std::string> helps;  // command -> its --help
    auto help_of = [&](const std::string& command) -> const std::string& {
        auto it = helps.find(command);
        if (it == helps.end()) it = helps.emplace(command, run(command + " --help").out).first;
        return it->second;
    };
    for (const Program& p : programs) {
        const std::string& help = help_of(p.command);
        for (const std::string& option : hinted) {
            const std::string hint = cli::localize("(raise with " + option + ")", p.spelling);
            INFO(p.command << ": " << option << " -> " << hint);
            const size_t tick = hint.find('`');
            if (tick == std::string::npos) {
                // Named as this program's own option: its --help has it.
                const size_t dash = hint.find("--");
                REQUIRE(dash != std::string::npos);
                const std::string own = hint.substr(dash, hint.find(')', dash) - dash);
                CHECK(help.find(own + " ") != std::string::npos);
            } else {
                // Named with the command that has it: "`fabric-shm pool create --heap-size`".
                const std::string quoted = hint.substr(tick + 1, hint.find('`', tick + 1) - tick - 1);
                const size_t dash = quoted.find(" --");
                const std::string command = quoted.substr(0, dash), own = quoted.substr(dash + 1);
                CHECK(help_of(command).find(own + " ") != std::string::npos);
            }
        }
    }
}

TEST_CASE("cli: errors name the option the user typed, not the library's field") {
    const std::string name = test::unique_pool_name("fields");
    test::PoolCleanup cleanup(name);
    Run r = run("fabric-shm topic create t --capacity 100 --pool " + name);
    CHECK(r.rc == 2);
    CHECK(r.out.find("--capacity 100 must be a power of two") != std::string::npos);
    CHECK(r.out.find("partition_capacity") == std::string::npos);
    r = run("fabric-shm topic create t --stride 100 --pool " + name);
    CHECK(r.out.find("--stride 100 must be a multiple of 64") != std::string::npos);
    r = run("fabric-shm topic create t --partitions 64 --capacity 65536 --pool " + name);
    CHECK(r.rc == 2);
    CHECK(r.out.find("(lower --capacity or --stride)") != std::string::npos);
    CHECK(r.out.find("partition_") == std::string::npos);
    // The same field names, met in the producer (which has no --capacity), point to the command that has it.
    CHECK(cli::localize("(lower partition_capacity or partition_stride)", cli::spelling_producer()) ==
          "(lower `fabric-shm topic create --capacity` or `fabric-shm topic create --stride`)");
    // A program's own messages about its own options are left alone.
    CHECK(cli::localize("--size: not a size", cli::spelling_producer()) == "--size: not a size");
    CHECK(cli::localize("pool too small (raise with --size)", cli::spelling_producer()) ==
          "pool too small (raise with --pool-size)");
    // The worker's group settings, met in the worker.
    const std::string name2 = test::unique_pool_name("fields2");
    test::PoolCleanup cleanup2(name2);
    r = run("fabric-shm-worker --pool " + name2 + " --topic t --group g --builtin copy --session-timeout 0");
    CHECK(r.rc == 2);
    CHECK(r.out.find("--session-timeout 0 must be > 0") != std::string::npos);
}

TEST_CASE("pool create: --heap-size, --max-object-size and --table-entries make the default store with the pool") {
    const std::string name = test::unique_pool_name("geom");
    test::PoolCleanup cleanup(name);
    Run r = run("fabric-shm pool create --pool " + name + " --heap-size 4M --max-object-size 64K --table-entries 2048 --json");
    REQUIRE_MESSAGE(r.rc == 0, r.out);
    const json doc = parse_json(r.out);
    CHECK(doc["store"]["heap_bytes"] == 4ull << 20);
    CHECK(doc["store"]["max_object_bytes"] == 64ull << 10);
    CHECK(doc["store"]["table_entries"].get<uint64_t>() >= 2048);
    // An object above it is refused naming the option that raises it, with the command that has it.
    std::string big = "/tmp/fabric-geom-" + std::to_string(getpid());
    std::ofstream(big) << std::string(100 * 1024, 'x');
    r = run("fabric-shm put fabric://" + name + "/b/k " + big);
    ::unlink(big.c_str());
    CHECK(r.rc == 1);
    CHECK(r.out.find("exceeds --max-object-size 65536 (raise with --max-object-size)") != std::string::npos);
    // A store that cannot fit the pool: the pool is not left behind.
    const std::string small = test::unique_pool_name("geom-small");
    test::PoolCleanup small_cleanup(small);
    r = run("fabric-shm pool create --pool " + small + " --size 8M --heap-size 64M");
    CHECK(r.rc == 1);
    CHECK(r.out.find("raise with --size") != std::string::npos);
    const auto pools = Pool::list();
    CHECK(std::find(pools.begin(), pools.end(), small) == pools.end());
    // --exist-ok with other numbers: the store keeps its geometry, and says so.
    r = run("fabric-shm pool create --pool " + name + " --exist-ok --heap-size 8M");
    CHECK(r.rc == 0);
    CHECK(r.out.find("store 'default' exists with --heap-size=4194304") != std::string::npos);
}

TEST_CASE("pool --help and lease --help list the options of every action") {
    Run r = run("fabric-shm pool --help");
    CHECK(r.rc == 0);
    for (const char* o : {"fabric-shm pool create", "fabric-shm pool ls", "fabric-shm pool rm", "--size", "--ttl", "--mode",
                          "--numa-node", "--exist-ok", "--heap-size", "--max-object-size", "--table-entries", "--force"})
        CHECK(r.out.find(o) != std::string::npos);
    r = run("fabric-shm lease --help");
    for (const char* o : {"fabric-shm lease ls", "fabric-shm lease renew", "--all", "--ttl"})
        CHECK(r.out.find(o) != std::string::npos);
}

TEST_CASE("dump --check: a state in progress is listed once, under its label") {
    StorePool sp("inprog");
    auto loan = sp.store->loan(100);  // held: the block is "loaned" while the dump runs
    REQUIRE(loan.ok());
    Run r = run("fabric-shm-dump --check --pool " + sp.name);
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find("  in progress: store block") != std::string::npos);
    CHECK(r.out.find("in progress: in progress") == std::string::npos);
    r = run("fabric-shm-dump --check --json --pool " + sp.name);
    const json doc = parse_json(r.out);
    REQUIRE(doc["check"]["in_progress"].size() >= 1);
    for (const auto& line : doc["check"]["in_progress"]) CHECK(line.get<std::string>().rfind("in progress", 0) != 0);
}

TEST_CASE("dump: FRAG of a full heap is 0 %, not 100 %") {
    const std::string name = test::unique_pool_name("frag");
    test::PoolCleanup cleanup(name);
    auto pool = Pool::create(PoolOptions{name, 4ull << 20});
    REQUIRE(pool.ok());
    StoreConfig sc;
    sc.heap_bytes = 1ull << 20;
    auto store = MemObjectStore::open(*pool, sc);
    REQUIRE(store.ok());
    const std::vector<uint8_t> kib(1000, 'x');
    int stored = 0;
    for (;; ++stored) {
        auto uri = FabricUri::make(name, "b", "k" + std::to_string(stored));
        auto v = (*store)->put(*uri, kib);
        if (!v) {
            REQUIRE(v.code() == Errc::capacity_exceeded);
            break;
        }
    }
    CHECK(stored > 100);
    const Run r = run("fabric-shm-dump --json --pool " + name);
    const json s = parse_json(r.out)["store"]["stores"][0];
    // The formula the dump used to apply (1 - largest free extent / free bytes) gives 100 %.
    const double free_bytes = double(s["heap_capacity_bytes"].get<uint64_t>() - s["heap_used_bytes"].get<uint64_t>());
    CHECK(free_bytes > 0);
    CHECK(1.0 - double(s["largest_free_extent"].get<uint64_t>()) / free_bytes > 0.99);
    CHECK(s["fragmentation"].get<double>() == 0.0);
    CHECK(run("fabric-shm-dump --pool " + name).out.find("0.0%") != std::string::npos);
}

TEST_CASE("dump: the store shows bytes per object, objects and bytes per bucket, and the soonest expiries") {
    StorePool sp("dumpbkt");
    const std::vector<uint8_t> kib(1024, 'x');
    for (int i = 0; i < 3; ++i) REQUIRE(sp.store->put(*FabricUri::make(sp.name, "uploads", "u" + std::to_string(i)), kib));
    PutOptions later, sooner;
    later.ttl = std::chrono::hours(2);
    sooner.ttl = std::chrono::hours(1);
    REQUIRE(sp.store->put(*FabricUri::make(sp.name, "results", "late"), kib, later));
    REQUIRE(sp.store->put(*FabricUri::make(sp.name, "results", "soon"), std::vector<uint8_t>(10, 'y'), sooner));
    const Run r = run("fabric-shm-dump --json --pool " + sp.name);
    const json s = parse_json(r.out)["store"]["stores"][0];
    CHECK(s["bytes_per_object"].get<uint64_t>() >= 1024);
    CHECK(s["bytes_per_object"].get<uint64_t>() <= 1280);
    std::map<std::string, json> buckets;
    for (const auto& b : s["buckets"]) buckets[b["bucket"].get<std::string>()] = b;
    REQUIRE(buckets.size() == 2);
    CHECK(buckets["uploads"]["objects"] == 3);
    CHECK(buckets["uploads"]["bytes"] == 3 * 1024);
    CHECK(buckets["uploads"]["heap_bytes"].get<uint64_t>() >= 3 * 1024);
    CHECK(buckets["results"]["bytes"] == 1024 + 10);
    REQUIRE(s["soonest_expiries"].size() == 2);
    CHECK(s["soonest_expiries"][0]["key"] == "results/soon");
    CHECK(s["soonest_expiries"][1]["key"] == "results/late");
    CHECK(s["objects_with_ttl"] == 2);
    const std::string text = run("fabric-shm-dump --pool " + sp.name).out;
    CHECK(text.find("store 'default': ") != std::string::npos);
    CHECK(text.find(" bytes per object (heap, 5 objects)") != std::string::npos);
    CHECK(text.find("uploads=3 objects/3.0 KiB") != std::string::npos);
    CHECK(text.find("expiring soonest (2 objects have a TTL): results/soon in ") != std::string::npos);
}

TEST_CASE("dlq: ls and show print the control bytes a process wrote as \\xNN, never as terminal escapes") {
    const std::string name = test::unique_pool_name("dlqesc");
    test::PoolCleanup cleanup(name);
    auto pool = Pool::create(PoolOptions{name, 16ull << 20});
    REQUIRE(pool.ok());
    // A screen clear in the value, a window-title sequence in the reason (as a handler's stderr
    // could hold), the C1 form of ESC [ (U+009B in UTF-8), which clears the screen too, and a
    // word in another script, which stays readable.
    dead_letter_on_ev(*pool, {{"k\x1b[2J", "fabric://x/b/\x1b[2Jcleared"}},
                      "exit 3; stderr: \x1b]0;owned\x07 \xc2\x9b" "2J caf\xc3\xa9");
    for (const std::string& cmd : {"fabric-shm dlq ls ev --pool " + name, "fabric-shm dlq show ev 0:0 --pool " + name}) {
        Run r = run(cmd);
        INFO(cmd, r.out);
        CHECK(r.rc == 0);
        CHECK(r.out.find('\x1b') == std::string::npos);
        CHECK(r.out.find('\x07') == std::string::npos);
        CHECK(r.out.find("\\x1b[2Jcleared") != std::string::npos);
        CHECK(r.out.find("\\x1b]0;owned\\x07 \\xc2\\x9b2J caf\xc3\xa9") != std::string::npos);
        CHECK(r.out.find("\xc2\x9b") == std::string::npos);
    }
}

TEST_CASE("tail: a message's control bytes print as \\xNN, and --json prints a message whose bytes are not UTF-8") {
    const std::string name = test::unique_pool_name("tailesc");
    test::PoolCleanup cleanup(name);
    auto pool = Pool::create(PoolOptions{name, 16ull << 20});
    REQUIRE(pool.ok());
    TopicConfig tc;
    tc.num_partitions = 1;
    REQUIRE(TopicManager(*pool).create("ev", tc).ok());
    auto prod = Producer::open(*pool, "ev");
    REQUIRE(prod.ok());
    // A colour change, a byte that is not UTF-8 and a newline in the value; a screen clear and
    // another stray byte in a header.
    const MessageHeader header{"h", "\x1b[2J\xfe"};
    REQUIRE(prod->send(std::string_view("abc\x1b[31mRED\xff\nnext"), std::span(&header, 1)).ok());

    Run text = run("fabric-shm tail ev --pool " + name);
    INFO(text.out);
    CHECK(text.rc == 0);
    CHECK(text.out.find('\x1b') == std::string::npos);
    CHECK(text.out == "0:0\tabc\\x1b[31mRED\\xff\\x0anext\n");  // one message, one line

    Run js = run("fabric-shm tail ev --json --pool " + name);
    INFO(js.out);
    CHECK(js.rc == 0);
    const json doc = parse_json(js.out);
    REQUIRE(doc.is_object());
    CHECK(doc["value"] == "abc\x1b[31mRED\xef\xbf\xbd\nnext");  // U+FFFD for the stray byte
    CHECK(doc["headers"]["h"] == "\x1b[2J\xef\xbf\xbd");
}

TEST_CASE("dump: text outside the tables prints control bytes and invalid UTF-8 as \\xNN") {
    StorePool sp("dumpesc");
    // A key may hold any byte from 0x80 up: 0x9b alone is the C1 form of ESC [ to a terminal
    // reading 8-bit controls. The dump names it in its "expiring soonest" line.
    PutOptions ttl;
    ttl.ttl = std::chrono::hours(1);
    REQUIRE(sp.store->put(*FabricUri::make(sp.name, "b", "k\x9b" "2J\xff"), std::vector<uint8_t>(4, 'x'), ttl));
    Run r = run("fabric-shm-dump --pool " + sp.name);
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find("b/k\\x9b2J\\xff in ") != std::string::npos);
    CHECK(r.out.find('\x9b') == std::string::npos);
    CHECK(r.out.find("\n  ") != std::string::npos);  // the report's lines stay lines
}

TEST_CASE("dlq ls: the count of retained dead letters leaves out the skip record of a worker killed mid-dead-letter") {
    const std::string name = test::unique_pool_name("dlqcnt");
    test::PoolCleanup cleanup(name);
    auto pool = Pool::create(PoolOptions{name, 16ull << 20});
    REQUIRE(pool.ok());
    dead_letter_on_ev(*pool, {{"a", "fabric://x/b/a"}, {"b", "fabric://x/b/b"}}, "exit 1");  // ev.dlq 0:0, 0:1
    mqtest::send_killed_after_claim(name, "ev.dlq");  // 0:2, a skip record once the reaper judges it
    pool->reap(MonoClock::now());
    REQUIRE(dead_letter_count(*pool, "ev.dlq").value() == 2);

    Run text = run("fabric-shm dlq ls ev.dlq --pool " + name);
    INFO(text.out);
    CHECK(text.rc == 0);
    CHECK(text.out.find("'ev.dlq': 2 dead letter(s) retained\n") == 0);
    Run js = run("fabric-shm dlq ls ev.dlq --json --pool " + name);
    INFO(js.out);
    const json doc = parse_json(js.out);
    CHECK(doc["retained"] == 2);
    CHECK(doc["dead_letters"].size() == 2);
    Run limited = run("fabric-shm dlq ls ev.dlq --limit 1 --pool " + name);
    INFO(limited.out);
    CHECK(limited.out.find("'ev.dlq': 2 dead letter(s) retained, 1 shown (--limit)\n") == 0);
}

TEST_CASE("dlq: ls, show, replay and purge from the command line") {
    const std::string name = test::unique_pool_name("dlqcli");
    test::PoolCleanup cleanup(name);
    auto pool = Pool::create(PoolOptions{name, 16ull << 20});
    REQUIRE(pool.ok());
    dead_letter_on_ev(*pool, {{"k0", "fabric://x/b/k0"}, {"k1", "fabric://x/b/k1"}, {"k2", "fabric://x/b/k2"}},
                      "exit status 3; stderr: boom");
    Run r = run("fabric-shm dlq ls ev --pool " + name);
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find("'ev.dlq': 3 dead letter(s) retained") != std::string::npos);
    CHECK(r.out.find("exit status 3; stderr: boom") != std::string::npos);
    r = run("fabric-shm dlq show ev 0:1 --json --pool " + name);
    json d = parse_json(r.out);
    CHECK(d["key"] == "k1");
    CHECK(d["source_topic"] == "ev");
    CHECK(d["attempts"] == 3);
    CHECK(run("fabric-shm dlq show ev 0:9 --pool " + name).rc == 1);
    // An offset past 2^64 - 1 is not read as UINT64_MAX (strtoull's saturation): named and refused.
    r = run("fabric-shm dlq show ev 0:18446744073709551616 --pool " + name);
    CHECK(r.rc != 0);
    CHECK(r.out.find("'0:18446744073709551616' is not PARTITION:OFFSET") != std::string::npos);
    CHECK(run("fabric-shm dlq replay ev --pool " + name).rc == 2);  // --all or a range
    CHECK(run("fabric-shm dlq replay ev --from 1 --pool " + name).rc == 2);  // offsets need --partition

    r = run("fabric-shm dlq replay ev --partition 0 --from 1 --to 1 --json --pool " + name);
    d = parse_json(r.out);
    CHECK(d["replayed"] == 1);
    CHECK(d["kept"] == 1);  // not at the front
    r = run("fabric-shm dlq replay ev --all --pool " + name);
    CHECK(r.rc == 0);
    CHECK(r.out.find("replayed 3 dead letter(s) to ev (3); removed 3 from 'ev.dlq'") != std::string::npos);
    auto desc = TopicManager(*pool).describe("ev");
    CHECK(desc->partitions[0].next == 3 + 1 + 3);  // the originals and the two replays

    CHECK(run("fabric-shm dlq purge ev --pool " + name).rc == 2);
    r = run("fabric-shm dlq purge ev --older-than 1h --json --pool " + name);
    CHECK(parse_json(r.out)["removed"] == 0);
    r = run("fabric-shm dlq purge ev --all --json --pool " + name);
    CHECK(parse_json(r.out)["remaining"] == 0);
    r = run("fabric-shm dlq ls nope --pool " + name);
    CHECK(r.rc == 1);
    CHECK(r.out.find("has no dead-letter topic 'nope.dlq'") != std::string::npos);
}

TEST_CASE("install: ldconfig runs for a system prefix as root without DESTDIR, and is explained otherwise") {
    const std::string script = source_dir() + "/scripts/install-ldconfig.sh";
    auto install = [&](const std::string& env) {
        Run r;
        r.rc = test::run_command(env + " FABRIC_SHM_LDCONFIG='echo ran-ldconfig' sh " + q(script) + " 2>&1", &r.out);
        return r;
    };
    Run r = install("MESON_INSTALL_PREFIX=/usr/local FABRIC_SHM_INSTALL_UID=0");
    CHECK(r.rc == 0);
    CHECK(r.out.find("ran-ldconfig") != std::string::npos);
    r = install("MESON_INSTALL_PREFIX=/usr/local FABRIC_SHM_INSTALL_UID=1000");
    CHECK(r.out.find("ran-ldconfig") == std::string::npos);
    CHECK(r.out.find("sudo ldconfig") != std::string::npos);
    r = install("MESON_INSTALL_PREFIX=/opt/fabric FABRIC_SHM_INSTALL_UID=0");
    CHECK(r.out.find("ran-ldconfig") == std::string::npos);
    CHECK(r.out.find("LD_LIBRARY_PATH") != std::string::npos);
    r = install("MESON_INSTALL_PREFIX=/usr/local DESTDIR=/tmp/pkg FABRIC_SHM_INSTALL_UID=0");
    CHECK(r.out.find("ran-ldconfig") == std::string::npos);
}
