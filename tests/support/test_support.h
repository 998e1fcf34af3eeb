// SPDX-License-Identifier: MIT
// Helpers every test uses: unique pool names, pools removed even on failure, forked children.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "fabric_shm/pool.h"

namespace fabric_shm::test {

/// "t-<tag>-<pid>-<n>": unique per process and call, so parallel tests never collide.
std::string unique_pool_name(const std::string& tag);

/// Removes the pool's segment (and any temp files of it) when it goes out of scope.
class PoolCleanup {
public:
    explicit PoolCleanup(std::string name) : name_(std::move(name)) {}
    PoolCleanup(const PoolCleanup&) = delete;
    ~PoolCleanup();
    const std::string& name() const { return name_; }

private:
    std::string name_;
};

/// n bytes that differ from any other seed's at almost every offset (a payload whose every
/// byte a test can check).
std::vector<uint8_t> pattern(size_t n, uint8_t seed);

/// A fresh pool under a unique name, removed (with any temp files of it) at scope exit:
///     test::TempPool tp("store-ttl");          // tp.pool, tp.name()
/// Creation failure throws (doctest reports the message as the test's failure).
struct TempPool {
    explicit TempPool(const std::string& tag, uint64_t size_bytes = 16ull << 20, Duration ttl = kDefaultPoolTtl);
    const std::string& name() const { return cleanup.name(); }
    PoolCleanup cleanup;  ///< declared first: removed after the pool handle is gone
    Pool pool;
};

/// Forks; the child runs fn and leaves with _exit(fn()) (never returns into doctest).
pid_t fork_child(const std::function<int()>& fn);
/// Waits for a child at most timeout_ms; kills it on timeout. Returns the exit code, or
/// 128 + signal number, or -1 on timeout.
int wait_child(pid_t pid, int timeout_ms = 20000);
/// Waits at most timeout_ms until child `pid` is stopped (SIGSTOP, e.g. at an armed
/// FABRIC_SHM_PAUSE_POINT). True when it stopped; false on timeout or when it exited (its exit
/// status then goes to *exit_code when given: the code, or 128 + signal).
bool wait_stopped(pid_t pid, int timeout_ms = 20000, int* exit_code = nullptr);
/// Resumes a stopped child (SIGCONT).
void resume(pid_t pid);
/// Forks a reaper of pool `name` that reaps as at now + `ahead` with fault point `point`
/// armed as a pause, and returns its pid once it stopped there (0 when it did not). Resumed,
/// it exits 0 when its pass reclaimed a region, 1 when none, 10 when the pool did not open.
pid_t reaper_stopped_at(const std::string& name, const char* point, Duration ahead = Duration::zero());
/// The same reaper killed at `point` instead; returns its exit status (128 + SIGKILL when the
/// point was reached).
int reaper_killed_at(const std::string& name, const char* point, Duration ahead = Duration::zero());
/// The pool's region named `name` as it is now (its state, lease, holders); nullopt when none.
std::optional<RegionInfo> region_named(const Pool& pool, const std::string& name);
/// Exit status of `sh -c command` (128+sig on signal), output captured into *output if given.
int run_command(const std::string& command, std::string* output = nullptr);
/// How many of this process's mappings are of the pool's segment (/proc/self/maps).
int mappings_of(const std::string& pool_name);
/// Build root (FABRIC_SHM_TEST_BUILD_DIR) for locating tools: build_path("tools/fabric-shm").
std::string build_path(const std::string& relative);

/// For test programs that are also run by hand and re-execute themselves (torture, soak): the
/// path of this executable, and FABRIC_SHM_TEST_BUILD_DIR set (unless already set) to the build
/// root three levels up (BUILD/tests/<suite>/<program>). "" when /proc/self/exe is unreadable.
std::string self_exe_setting_build_dir();

/// Starts args[0] with args (execv, no shell), stdout and stderr to `output` (created 0600),
/// after `in_child` ran in the child (e.g. setenv). Flushes stdio first. Returns the pid (-1
/// when fork fails); an exec failure exits the child with 127.
pid_t spawn_program(std::vector<std::string> args, const std::string& output,
                    const std::function<void()>& in_child = {});

}  // namespace fabric_shm::test
