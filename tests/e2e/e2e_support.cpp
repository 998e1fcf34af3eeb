// SPDX-License-Identifier: MIT
// End-to-end test helpers (see e2e_support.h).
#include "e2e_support.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "fabric_shm/consumer_group.h"
#include "fabric_shm/dlq.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/object_store.h"
#include "../support/test_support.h"

namespace fabric_shm::e2e {

ScratchDir::ScratchDir() {
    // Throws, not REQUIRE: this library is also linked into programs without doctest (the
    // torture and the soak); doctest reports an exception as the test's failure.
    char tmpl[] = "/tmp/fabric-e2e-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp /tmp/fabric-e2e-XXXXXX failed");
    path = tmpl;
}
ScratchDir::~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
}
std::string ScratchDir::file(const std::string& name, const std::string& content) const {
    const std::string p = path + "/" + name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
}

namespace {
Pool create_pool(const std::string& name, uint64_t size) {
    PoolOptions o;
    o.name = name;
    o.size_bytes = size;
    auto p = Pool::create(o);
    if (!p) throw std::runtime_error("creating the test pool: " + p.error().message);
    return std::move(p.value());
}
}  // namespace

PoolFixture::PoolFixture(const std::string& tag, uint64_t size)
    : name(test::unique_pool_name(tag)), cleanup(name), pool(create_pool(name, size)) {}

namespace {
int g_seq = 0;
std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}
void sleep_ms(int ms) {
    timespec ts{ms / 1000, long(ms % 1000) * 1'000'000};
    nanosleep(&ts, nullptr);
}
}  // namespace

std::string producer_bin() { return test::build_path("workers/fabric-shm-producer"); }
std::string worker_bin() { return test::build_path("workers/fabric-shm-worker"); }
std::string cli_bin() { return test::build_path("tools/fabric-shm"); }

std::string q(const std::string& s) {
    std::string r = "'";
    for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return r + "'";
}

Proc::Proc(const std::string& command) {
    const std::string base = "/tmp/fabric-e2e-" + std::to_string(getpid()) + "-" + std::to_string(++g_seq);
    out_path_ = base + ".out";
    err_path_ = base + ".err";
    const std::string full = "exec " + command + " >" + out_path_ + " 2>" + err_path_;
    pid_ = fork();
    if (pid_ == 0) {
        execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
}

Proc::~Proc() {
    if (pid_ > 0 && !reaped_) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    unlink(out_path_.c_str());
    unlink(err_path_.c_str());
}

int Proc::wait(int timeout_ms) {
    if (reaped_) return status_;
    const int rc = test::wait_child(pid_, timeout_ms);  // kills on timeout
    reaped_ = true;
    status_ = rc;
    return rc;
}

void Proc::signal(int sig) {
    if (!reaped_) kill(pid_, sig);
}
std::string Proc::out() const { return slurp(out_path_); }
std::string Proc::err() const { return slurp(err_path_); }

int sh(const std::string& command, std::string* output) {
    return test::run_command("timeout 60 sh -c " + q(command), output);
}

std::string get_text(Pool& pool, const std::string& uri_text) {
    auto store = MemObjectStore::attach(pool);
    if (!store) return "<error: " + store.error().message + ">";
    auto uri = FabricUri::parse(uri_text);
    if (!uri) return "<error: " + uri.error().message + ">";
    auto got = (*store)->get(*uri);
    if (!got) return "<error: " + got.error().message + ">";
    if (!*got) return "<absent>";
    return std::string((*got)->data.begin(), (*got)->data.end());
}

uint64_t object_version(Pool& pool, const std::string& uri_text) {
    auto store = MemObjectStore::attach(pool);
    auto uri = FabricUri::parse(uri_text);
    if (!store || !uri) return 0;
    auto h = (*store)->head(*uri);
    return h && *h ? (*h)->version : 0;
}

std::string result_metadata(Pool& pool, const std::string& uri_text, const std::string& key) {
    auto store = MemObjectStore::attach(pool);
    auto uri = FabricUri::parse(uri_text);
    if (!store || !uri) return "";
    auto h = (*store)->head(*uri);
    if (!h || !*h) return "";
    auto it = (*h)->metadata.find(key);
    return it == (*h)->metadata.end() ? "" : it->second;
}

size_t alive_members(const Pool& pool, const std::string& topic, const std::string& group) {
    auto d = describe_consumer_group(pool, topic, group);
    if (!d) return 0;
    size_t n = 0;
    for (const auto& m : d->members) n += m.alive ? 1 : 0;
    return n;
}

bool eventually(const std::function<bool()>& pred, int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (pred()) return true;
        sleep_ms(20);
    }
    return pred();
}

std::vector<DeadLetter> read_dlq(const Pool& pool, const std::string& topic) {
    std::vector<DeadLetter> out;
    auto c = Consumer::open(pool, topic, "");
    if (!c) return out;
    if (!c->assign_all() || !c->seek(SeekPolicy::Earliest())) return out;
    MessageBatch batch;
    for (;;) {
        auto n = c->poll(batch, 64, Duration::zero());
        if (!n || *n == 0) break;
        for (const Message& m : batch)
            out.push_back({std::string(m.value_str()), std::string(m.header(kDlqHeaderReason)),
                           std::string(m.header(kDlqHeaderAttempts)), std::string(m.header(kDlqHeaderTopic)),
                           std::string(m.header(kDlqHeaderPartition)), std::string(m.header(kDlqHeaderOffset))});
    }
    return out;
}

size_t count_keys(Pool& pool, const std::string& bucket) {
    auto store = MemObjectStore::attach(pool);
    if (!store) return 0;
    auto keys = (*store)->list(pool.name(), bucket, "");
    return keys ? keys->size() : 0;
}

uint64_t json_number(const std::string& json, const std::string& field) {
    const std::string needle = "\"" + field + "\":";
    const size_t at = json.find(needle);
    return at == std::string::npos ? 0 : std::strtoull(json.c_str() + at + needle.size(), nullptr, 10);
}

std::string crc_hex(const std::string& data) {
    char text[16];
    std::snprintf(text, sizeof text, "%08x\n", unsigned(crc32(data.data(), data.size())));
    return text;
}

std::string synthetic_content(uint64_t index, uint64_t size) {
    // What fabric-shm-producer --synthetic writes, spelled out byte by byte: byte i is a letter
    // from byte i % 8 of the xorshift state after step i / 8 + 1, or a newline at i % 64 == 63.
    std::string out(size, '\0');
    uint64_t x = index * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    for (size_t i = 0; i < size; ++i) {
        if (i % 8 == 0) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        const uint64_t byte = (x >> (8 * (i % 8))) & 0xff;
        out[i] = i % 64 == 63 ? '\n' : char('a' + byte * 26 / 256);
    }
    return out;
}

}  // namespace fabric_shm::e2e
