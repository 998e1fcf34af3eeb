// SPDX-License-Identifier: MIT
// End-to-end test helpers: the real producer/worker executables as background processes
// (killed and reaped on scope exit, even when a check fails), commands with timeouts, and
// direct reads of the pool (store, topics, groups) to check what the executables did.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../support/test_support.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/pool.h"

namespace fabric_shm::e2e {

/// A directory under /tmp, removed with everything in it at scope exit.
struct ScratchDir {
    std::string path;
    ScratchDir();
    ~ScratchDir();
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    /// Writes `content` to `name` in the directory; returns its path.
    std::string file(const std::string& name, const std::string& content) const;
};

/// A fresh pool of a unique name (the tag names the test), removed at scope exit. Test files
/// derive their fixtures from it.
struct PoolFixture {
    std::string name;
    test::PoolCleanup cleanup;
    Pool pool;
    explicit PoolFixture(const std::string& tag, uint64_t size = 32ull << 20);
    std::string uri(const std::string& bucket, const std::string& key) const {
        return "fabric://" + name + "/" + bucket + "/" + key;
    }
};

std::string producer_bin();
std::string worker_bin();
std::string cli_bin();
/// Single-quotes for sh.
std::string q(const std::string& s);

/// A background `sh -c "exec COMMAND"` with stdout/stderr in files. SIGKILLed and reaped on
/// destruction if still running.
class Proc {
public:
    explicit Proc(const std::string& command);
    Proc(const Proc&) = delete;
    ~Proc();
    pid_t pid() const { return pid_; }
    /// Exit code, 128 + signal, or -1 on timeout (then it is killed).
    int wait(int timeout_ms = 30000);
    void signal(int sig);
    std::string out() const;
    std::string err() const;

private:
    pid_t pid_ = -1;
    bool reaped_ = false;
    int status_ = -1;
    std::string out_path_, err_path_;
};

/// `timeout 60 sh -c COMMAND`; stdout (and stderr with 2>&1 in the command) into *output.
int sh(const std::string& command, std::string* output = nullptr);

/// Object bytes, or "<absent>" / "<error: ...>".
std::string get_text(Pool& pool, const std::string& uri);
uint64_t object_version(Pool& pool, const std::string& uri);  ///< 0 when absent
std::string result_metadata(Pool& pool, const std::string& uri, const std::string& key);

/// Live members of a group (0 while the topic or group does not exist).
size_t alive_members(const Pool& pool, const std::string& topic, const std::string& group);
/// Waits until `pred` is true (polling every 20 ms) or timeout_ms passed; returns pred().
bool eventually(const std::function<bool()>& pred, int timeout_ms = 20000);

struct DeadLetter {
    std::string value;
    std::string reason, attempts, topic, partition, offset;
};
/// Every message of a DLQ topic (observer read, nothing committed).
std::vector<DeadLetter> read_dlq(const Pool& pool, const std::string& topic);

/// Number of keys in a bucket.
size_t count_keys(Pool& pool, const std::string& bucket);
/// The number after "field": in a one-line JSON document (0 when absent).
uint64_t json_number(const std::string& json, const std::string& field);
std::string crc_hex(const std::string& data);  ///< as --builtin crc32 writes it
/// The content fabric-shm-producer --synthetic gives object `index` of `size` bytes.
std::string synthetic_content(uint64_t index, uint64_t size);

}  // namespace fabric_shm::e2e
