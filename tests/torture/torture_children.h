// SPDX-License-Identifier: MIT
// The torture's own child processes (this executable, re-executed). Each appends one line to
// its log after every call that returned success (a single write(2), so a SIGKILL leaves whole
// lines only) and, before a call whose effect may land without an answer, a line saying what
// is in flight. The harness reads the logs to know what was acknowledged.
//
// Producer log:  T <token>                  registered (its OwnerToken)
//                P <key> <size> <version>   put of in/<key> acknowledged
//                N <key> <partition> <off>  notification for in/<key> acknowledged
//                IX <key>                   a poison notification (names an object never put) in flight
//                X <key> <partition> <off>  poison notification acknowledged
//                RS <key> <error>           a send refused as `skipped` (NOT delivered), sent again
//                IS/S/IR/R ...              scratch calls in flight / acknowledged
//                E <what> <error>           a call failed (a violation)
//                F <what> <error>           a call failed after this process was fenced (heartbeat timeout)
// Ops log:       O <created|attached>       side pool opened
//                TP <key> <size>            tiered put acknowledged
//                TC <n>                     checkpoint (with hot objects) acknowledged: every TP since this round's O is durable
//                L <what> <error>           a call failed closed (side pool expired or removed under it)
//                E <what> <error>           any other failure (a violation)
#pragma once

#include <cstdint>
#include <string>

namespace fabric_shm::torture {

constexpr const char* kTopic = "torture-events";
constexpr const char* kDlqTopic = "torture-events.dlq";
constexpr const char* kGroup = "torture";
constexpr const char* kInBucket = "in";
constexpr const char* kScratchBucket = "scratch";
constexpr const char* kResultBucket = "results";
/// The worker's result key for an input key: "<input bucket>/<key>".
inline std::string result_key(const std::string& key) { return std::string(kInBucket) + "/" + key; }
constexpr const char* kTieredBucket = "tiered";

/// Exit codes of the children besides 0 (done) and 1 (a call failed).
constexpr int kExitFenced = 3;  ///< a heartbeat-timeout producer stopped after a call failed because it was fenced

struct ProducerArgs {
    std::string pool, log, prefix;
    uint64_t seed = 0, max_objects = 60;
    uint64_t heartbeat_timeout_ms = 0;  ///< 0: liveness by pid only (the default of every program)
    uint32_t poison_percent = 0;        ///< notifications naming an object that was never put
};
int producer_child(const ProducerArgs& a);

struct OpsArgs {
    std::string pool, cold_dir, log, prefix;
    uint64_t seed = 0, rounds = 3;
    uint64_t ttl_ms = 1500;  ///< the side pool's and its regions' lease
};
int ops_child(const OpsArgs& a);

/// Deterministic bytes of a tiered key (its whole name is the seed).
std::string tiered_content(const std::string& key, uint64_t size);

}  // namespace fabric_shm::torture
