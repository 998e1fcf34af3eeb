// SPDX-License-Identifier: MIT
// The bridge tests' world: one 3-node nats-server cluster on loopback for the whole test
// program (started on first use, stopped by PID at exit), and "hosts": each its own
// FABRIC_SHM_DIR (a private /dev/shm) and pool, with the real executables running on it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fabric_shm/pool.h"
#include "fabric_shm_bridge/status.h"
#include "nats_cluster.h"
#include "../e2e/e2e_support.h"

namespace fabric_shm::bridge_test {

/// The shared cluster (nullptr when it could not start; the reason in cluster_error()).
bridge::testing::NatsCluster* cluster();
std::string cluster_error();

std::string bridge_bin();
/// "UP-<pid>-<n>": every test its own streams and durables.
std::string unique(const std::string& tag);

/// One "host": a directory standing for its /dev/shm and a pool in it.
class Host {
public:
    Host(const std::string& tag, const std::string& host);
    ~Host();  ///< removes the directory (every segment in it)
    Host(const Host&) = delete;

    const std::string& pool() const { return pool_; }
    const std::string& dir() const { return dir_; }
    /// "env FABRIC_SHM_DIR=... FABRIC_SHM_POOL=... <program> <args>" for e2e::Proc / e2e::sh.
    std::string cmd(const std::string& program_and_args) const;
    /// Runs fn with FABRIC_SHM_DIR pointing at this host (the test process is single-threaded).
    void with(const std::function<void()>& fn) const;

    bool pool_exists() const;
    uint64_t incarnation() const;  ///< 0 when the pool does not exist
    std::string get(const std::string& bucket, const std::string& key) const;  ///< "<absent>" when absent
    std::string metadata(const std::string& bucket, const std::string& key, const std::string& name) const;
    uint64_t version(const std::string& bucket, const std::string& key) const;  ///< 0 when absent
    size_t count(const std::string& bucket) const;
    std::vector<bridge::BridgeStatus> bridges() const;
    /// Live members of a group (0 while it does not exist).
    size_t members(const std::string& topic, const std::string& group) const;
    bool has_topic(const std::string& topic) const;
    /// The group is registered on the topic (a plain consumer with a group, e.g. `fabric-shm tail --group`).
    bool has_group(const std::string& topic, const std::string& group) const;
    /// Dead letters of a DLQ topic.
    std::vector<e2e::DeadLetter> dead_letters(const std::string& dlq_topic) const;
    std::string dump() const;  ///< fabric-shm-dump text, for failure messages

private:
    std::string dir_, pool_;
};

/// A directory of the test's own under /tmp ("<tag>-<pid>-<n>"), removed with everything in it
/// at scope exit.
struct TempDir {
    explicit TempDir(const std::string& tag);
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string path;
};

/// Processes started by a test, by name; SIGKILLed at scope exit if still running. logs() is
/// for INFO(): every process's stderr tail.
class Fleet {
public:
    e2e::Proc& start(const std::string& name, const std::string& command);
    e2e::Proc& operator[](const std::string& name);
    /// SIGTERM, then wait; the exit code (or 128 + signal).
    int stop(const std::string& name, int timeout_ms = 20000);
    std::string logs() const;

private:
    std::vector<std::pair<std::string, std::unique_ptr<e2e::Proc>>> procs_;
};

/// A number field of a one-line JSON summary (0 when absent).
uint64_t field(const std::string& json, const std::string& name);

/// Bridge command lines with the tests' defaults (3 replicas, file storage, short waits).
std::string export_args(const std::string& topic, const std::string& stream, const std::string& extra = "");
std::string import_args(const std::string& stream, const std::string& durable, const std::string& topic,
                        const std::string& extra = "");

}  // namespace fabric_shm::bridge_test
