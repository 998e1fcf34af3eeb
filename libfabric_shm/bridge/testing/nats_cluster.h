// SPDX-License-Identifier: MIT
// A nats-server cluster with JetStream on loopback for the bridge tests and benchmark: free
// ports asked of the kernel, store directories in a temporary directory, every server started
// as a child (it dies with the parent: PR_SET_PDEATHSIG) and stopped by PID, the directory
// removed at the end. Not part of the library.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fabric_shm/result.h"

namespace fabric_shm::bridge::testing {

struct ClusterOptions {
    int nodes = 3;               ///< 1: a standalone JetStream server (no cluster block)
    std::string config_extra;    ///< appended to every node's configuration (authorization, tls, ...)
    std::string client_scheme = "nats";  ///< "tls" when config_extra turns TLS on
    uint64_t ready_timeout_ns = 20'000'000'000ull;
};

/// The nats-server binary: $NATS_SERVER, then PATH, then /usr/sbin and /usr/bin. "" if absent.
std::string find_nats_server();

class NatsCluster {
public:
    /// Starts every node and waits until JetStream answers on each (a meta leader is elected).
    static Result<std::unique_ptr<NatsCluster>> start(const ClusterOptions& options = {});
    ~NatsCluster();  ///< stops every node by PID (SIGTERM, then SIGKILL) and removes the directory
    NatsCluster(const NatsCluster&) = delete;

    int nodes() const { return int(nodes_.size()); }
    std::string urls() const;       ///< "nats://127.0.0.1:P1,nats://127.0.0.1:P2,..."
    std::string url(int i) const;
    const std::string& dir() const { return dir_; }
    pid_t pid(int i) const { return nodes_[size_t(i)].pid; }
    std::string log(int i) const;   ///< the node's output so far

    /// Sends `sig` to node i and waits for it to exit (SIGKILL after 10 s).
    void stop_node(int i, int sig = SIGTERM);
    /// Starts node i again (same ports and store directory).
    Status start_node(int i);
    void stop_all(int sig = SIGTERM);
    Status start_all();
    /// Waits until JetStream answers on every running node.
    Status wait_ready(uint64_t timeout_ns) const;

private:
    struct Node {
        int client_port = 0, route_port = 0;
        std::string config, log;
        pid_t pid = -1;
    };
    NatsCluster() = default;
    Status write_configs(const ClusterOptions& o);
    std::string server_;
    std::string dir_;
    std::string scheme_ = "nats";
    std::vector<Node> nodes_;
};

}  // namespace fabric_shm::bridge::testing
