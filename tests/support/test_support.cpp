// SPDX-License-Identifier: MIT
#include "test_support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "crash_point.h"

namespace fabric_shm::test {

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 31 + (i >> 8));
    return v;
}

std::string unique_pool_name(const std::string& tag) {
    static std::atomic<int> counter{0};
    return "t-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(counter.fetch_add(1));
}

PoolCleanup::~PoolCleanup() {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::remove(Pool::segment_path(name_), ec);
    const std::string prefix = fs::path(Pool::segment_path(name_)).filename().string() + ".tmp-";
    fs::path dir = fs::path(Pool::segment_path(name_)).parent_path();
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
        if (it->path().filename().string().rfind(prefix, 0) == 0) fs::remove(it->path(), ec);
}

TempPool::TempPool(const std::string& tag, uint64_t size_bytes, Duration ttl) : cleanup(unique_pool_name(tag)) {
    PoolOptions options;
    options.name = cleanup.name();
    options.size_bytes = size_bytes;
    options.ttl = ttl;
    auto created = Pool::create(options);
    if (!created) throw std::runtime_error("TempPool: creating pool '" + cleanup.name() + "': " + created.error().message);
    pool = std::move(created.value());
}

pid_t fork_child(const std::function<int()>& fn) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60);  // a child whose parent failed a REQUIRE must not linger forever
        int rc = 99;
        rc = fn();
        _exit(rc);
    }
    return pid;
}

int wait_child(pid_t pid, int timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
            return -2;
        }
        if (r < 0) return -3;
        if (std::chrono::steady_clock::now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

bool wait_stopped(pid_t pid, int timeout_ms, int* exit_code) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        int status = 0;
        const pid_t r = waitpid(pid, &status, WNOHANG | WUNTRACED);
        if (r == pid) {
            if (WIFSTOPPED(status)) return true;
            if (exit_code) *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            return false;
        }
        if (r < 0 || std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

void resume(pid_t pid) { kill(pid, SIGCONT); }

int run_command(const std::string& command, std::string* output) {
    FILE* f = popen(command.c_str(), "r");
    if (!f) return -1;
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), f)) > 0)
        if (output) output->append(buf.data(), n);
    int status = pclose(f);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

namespace {
pid_t fork_reaper(const std::string& name, const char* variable, const char* point, Duration ahead) {
    return fork_child([&] {
        OpenOptions o;
        o.reap_on_open = false;
        auto p = Pool::open(name, o);
        if (!p) return 10;
        ::setenv(variable, point, 1);
        detail::crash_point_rearm();
        return p->reap(MonoClock::now() + ahead).reclaimed_regions == 0 ? 1 : 0;
    });
}
}  // namespace

pid_t reaper_stopped_at(const std::string& name, const char* point, Duration ahead) {
    const pid_t pid = fork_reaper(name, "FABRIC_SHM_PAUSE_POINT", point, ahead);
    return wait_stopped(pid) ? pid : 0;
}

int reaper_killed_at(const std::string& name, const char* point, Duration ahead) {
    return wait_child(fork_reaper(name, "FABRIC_SHM_CRASH_POINT", point, ahead));
}

std::optional<RegionInfo> region_named(const Pool& pool, const std::string& name) {
    for (const RegionInfo& r : pool.regions())
        if (r.name == name) return r;
    return std::nullopt;
}

std::string build_path(const std::string& relative) {
    const char* root = std::getenv("FABRIC_SHM_TEST_BUILD_DIR");
    return std::string(root ? root : ".") + "/" + relative;
}

pid_t spawn_program(std::vector<std::string> args, const std::string& output,
                    const std::function<void()>& in_child) {
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    if (in_child) in_child();
    const int fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    _exit(127);
}

std::string self_exe_setting_build_dir() {
    char exe[4096];
    const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return {};
    exe[n] = '\0';
    if (!std::getenv("FABRIC_SHM_TEST_BUILD_DIR"))
        ::setenv("FABRIC_SHM_TEST_BUILD_DIR",
                 std::filesystem::path(exe).parent_path().parent_path().parent_path().c_str(), 1);
    return exe;
}

int mappings_of(const std::string& pool_name) {
    std::ifstream maps("/proc/self/maps");
    const std::string path = Pool::segment_path(pool_name);
    int n = 0;
    for (std::string line; std::getline(maps, line);)
        if (line.find(path) != std::string::npos) ++n;
    return n;
}

}  // namespace fabric_shm::test
