// SPDX-License-Identifier: MIT
#define DOCTEST_CONFIG_IMPLEMENT
#include "bridge_harness.h"

#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "fabric_shm/consumer_group.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/uri.h"
#include "../support/test_support.h"

namespace fabric_shm::bridge_test {

namespace {

std::unique_ptr<bridge::testing::NatsCluster> g_cluster;
std::string g_cluster_error;
bool g_cluster_tried = false;

/// Sets FABRIC_SHM_DIR for the scope (restores the previous value).
class DirScope {
public:
    explicit DirScope(const std::string& dir) {
        const char* old = std::getenv("FABRIC_SHM_DIR");
        had_ = old != nullptr;
        if (old) old_ = old;
        ::setenv("FABRIC_SHM_DIR", dir.c_str(), 1);
    }
    ~DirScope() {
        if (had_) ::setenv("FABRIC_SHM_DIR", old_.c_str(), 1);
        else ::unsetenv("FABRIC_SHM_DIR");
    }

private:
    bool had_ = false;
    std::string old_;
};

}  // namespace

bridge::testing::NatsCluster* cluster() {
    if (!g_cluster_tried) {
        g_cluster_tried = true;
        auto c = bridge::testing::NatsCluster::start({});
        if (c) g_cluster = std::move(c.value());
        else g_cluster_error = c.error().message;
    }
    return g_cluster.get();
}
std::string cluster_error() { return g_cluster_error; }

std::string bridge_bin() { return test::build_path("workers/fabric-shm-bridge"); }

std::string unique(const std::string& tag) {
    static int n = 0;
    return tag + "-" + std::to_string(getpid()) + "-" + std::to_string(++n);
}

Host::Host(const std::string& tag, const std::string& host) {
    // A directory on tmpfs stands for the host's own /dev/shm (what a mount namespace would give).
    const std::string base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path().string();
    dir_ = base + "/" + test::unique_pool_name("bridge-" + tag + "-" + host);
    std::filesystem::create_directories(dir_);
    pool_ = "host-" + host;
}

Host::~Host() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

std::string Host::cmd(const std::string& program_and_args) const {
    return "env FABRIC_SHM_DIR=" + e2e::q(dir_) + " FABRIC_SHM_POOL=" + pool_ + " " + program_and_args;
}

void Host::with(const std::function<void()>& fn) const {
    DirScope scope(dir_);
    fn();
}

bool Host::pool_exists() const {
    bool exists = false;
    with([&] { exists = std::filesystem::exists(Pool::segment_path(pool_)); });
    return exists;
}

uint64_t Host::incarnation() const {
    uint64_t inc = 0;
    with([&] {
        OpenOptions ro;
        ro.read_only = true;
        if (auto p = Pool::open(pool_, ro)) inc = p->incarnation();
    });
    return inc;
}

std::string Host::get(const std::string& bucket, const std::string& key) const {
    std::string out = "<absent>";
    with([&] {
        auto p = Pool::open(pool_);
        if (!p) {
            out = "<no pool: " + p.error().message + ">";
            return;
        }
        out = e2e::get_text(*p, "fabric://" + pool_ + "/" + bucket + "/" + key);
    });
    return out;
}

std::string Host::metadata(const std::string& bucket, const std::string& key, const std::string& name) const {
    std::string out;
    with([&] {
        if (auto p = Pool::open(pool_)) out = e2e::result_metadata(*p, "fabric://" + pool_ + "/" + bucket + "/" + key, name);
    });
    return out;
}

uint64_t Host::version(const std::string& bucket, const std::string& key) const {
    uint64_t v = 0;
    with([&] {
        if (auto p = Pool::open(pool_)) v = e2e::object_version(*p, "fabric://" + pool_ + "/" + bucket + "/" + key);
    });
    return v;
}

size_t Host::count(const std::string& bucket) const {
    size_t n = 0;
    with([&] {
        if (auto p = Pool::open(pool_)) n = e2e::count_keys(*p, bucket);
    });
    return n;
}

std::vector<bridge::BridgeStatus> Host::bridges() const {
    std::vector<bridge::BridgeStatus> out;
    with([&] {
        OpenOptions ro;
        ro.read_only = true;
        if (auto p = Pool::open(pool_, ro)) out = bridge::read_bridge_status(*p);
    });
    return out;
}

size_t Host::members(const std::string& topic, const std::string& group) const {
    size_t n = 0;
    with([&] {
        OpenOptions ro;
        ro.read_only = true;
        if (auto p = Pool::open(pool_, ro)) n = e2e::alive_members(*p, topic, group);
    });
    return n;
}

bool Host::has_topic(const std::string& topic) const {
    bool found = false;
    with([&] {
        OpenOptions ro;
        ro.read_only = true;
        if (auto p = Pool::open(pool_, ro)) found = TopicManager(*p).describe(topic).ok();
    });
    return found;
}

bool Host::has_group(const std::string& topic, const std::string& group) const {
    bool found = false;
    with([&] {
        OpenOptions ro;
        ro.read_only = true;
        auto p = Pool::open(pool_, ro);
        if (!p) return;
        if (auto d = TopicManager(*p).describe(topic))
            for (const auto& g : d->groups) found |= g.name == group && !g.expired;
    });
    return found;
}

std::vector<e2e::DeadLetter> Host::dead_letters(const std::string& dlq_topic) const {
    std::vector<e2e::DeadLetter> out;
    with([&] {
        OpenOptions ro;
        ro.read_only = true;
        if (auto p = Pool::open(pool_, ro)) out = e2e::read_dlq(*p, dlq_topic);
    });
    return out;
}

std::string Host::dump() const {
    std::string out;
    e2e::sh(cmd(test::build_path("tools/dump/fabric-shm-dump") + " 2>&1"), &out);
    return out;
}

e2e::Proc& Fleet::start(const std::string& name, const std::string& command) {
    procs_.emplace_back(name, std::make_unique<e2e::Proc>(command));
    return *procs_.back().second;
}

e2e::Proc& Fleet::operator[](const std::string& name) {
    for (auto it = procs_.rbegin(); it != procs_.rend(); ++it)
        if (it->first == name) return *it->second;
    FAIL("no process named " << name);
    return *procs_.front().second;
}

TempDir::TempDir(const std::string& tag) : path("/tmp/" + unique(tag)) { std::filesystem::create_directories(path); }
TempDir::~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
}

int Fleet::stop(const std::string& name, int timeout_ms) {
    e2e::Proc& p = (*this)[name];
    p.signal(SIGTERM);
    return p.wait(timeout_ms);
}

std::string Fleet::logs() const {
    std::string s;
    for (const auto& [name, p] : procs_) {
        std::string err = p->err();
        if (err.size() > 2500) err = "..." + err.substr(err.size() - 2500);
        s += "--- " + name + " (pid " + std::to_string(p->pid()) + ") stderr:\n" + err + "\n";
    }
    return s;
}

uint64_t field(const std::string& json, const std::string& name) { return e2e::json_number(json, name); }

std::string export_args(const std::string& topic, const std::string& stream, const std::string& extra) {
    return bridge_bin() + " export --topic " + topic + " --stream " + stream + " --to " + cluster()->urls() +
           " --replicas 3 --reconnect-wait 50ms --reconnect-max 500ms --publish-timeout 1s --json " + extra;
}

std::string import_args(const std::string& stream, const std::string& durable, const std::string& topic,
                        const std::string& extra) {
    return bridge_bin() + " import --from " + stream + " --durable " + durable + " --topic " + topic + " --nats " +
           cluster()->urls() + " --replicas 3 --reconnect-wait 50ms --reconnect-max 500ms --json " + extra;
}

}  // namespace fabric_shm::bridge_test

int main(int argc, char** argv) {
    // Meson's skip code: without a nats-server there is nothing to bridge through (install-deps
    // installs it; a build without the bridge module does not build this program at all).
    if (fabric_shm::bridge::testing::find_nats_server().empty()) {
        std::printf("SKIP: nats-server is not installed (apt-get install nats-server)\n");
        return 77;
    }
    fabric_shm::test::self_exe_setting_build_dir();
    doctest::Context context(argc, argv);
    const int rc = context.run();
    fabric_shm::bridge_test::g_cluster.reset();  // stop the servers by PID before exiting
    return rc;
}
