// SPDX-License-Identifier: MIT
// fabric-shm-worker --handler CMD: N long-lived handler processes (`/bin/sh -c CMD`, each in
// its own process group, recorded in the pool) fed by WorkerLoop's asynchronous form over
// their stdin/stdout with the framed protocol of docs/handlers.md. One thread multiplexes the
// loop's wait_fd and every handler pipe with poll(2). A handler that exits, crashes, writes
// garbage or keeps a request past the timeout is killed with its process group and restarted
// (with backoff when it keeps dying); the complete replies it wrote before are taken, and each
// request it had in flight without one fails once (retryable), so the loop retries it or
// dead-letters it after max_attempts with the reason. Every way out of run_handlers (an error
// too) closes the handlers' stdin, then kills and reaps what is left of them.
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fabric_shm/result.h"
#include "fabric_shm/worker_loop.h"

namespace fabric_shm::workers {

struct HandlerSpec {
    std::string command;                                   ///< given to /bin/sh -c
    std::vector<std::pair<std::string, std::string>> env;  ///< added to the inherited environment
    uint32_t slots = 1;                                    ///< handler processes
    uint32_t max_in_flight = 64;                           ///< requests in flight per handler (K)
    uint64_t timeout_ns = 0;                               ///< per request (and for the hello); 0: none
    uint64_t max_result_bytes = 0;                         ///< 0: no cap
    uint64_t drain_timeout_ns = 10'000'000'000ull;         ///< after stdin closes, before SIGKILL
    /// Records / forgets a handler's process group in the pool (child_groups.h), as --exec does.
    std::function<Status(pid_t pgid)> on_started;
    std::function<void(pid_t pgid)> on_finished;
    /// A handler died (exit, crash, protocol error, timeout) and is restarted after a backoff:
    /// the worker counts it in the pool (the dump shows it per process).
    std::function<void()> on_restart;
    std::function<void(std::string_view)> log;
    /// Process groups of running handlers, for a signal handler that must kill them (a
    /// second interrupt): slot i holds handler i's group id or 0.
    volatile sig_atomic_t* running_pgids = nullptr;
    bool count_limited = false;  ///< WorkerConfig::count set: a finished loop reached it (else: idle)
};

/// Runs `loop` until `*stop` (then drains: no new requests, in-flight ones finish, the
/// handlers' stdin is closed and they are waited for) or the loop finished (count, idle).
Result<WorkerExit> run_handlers(WorkerLoop& loop, const HandlerSpec& spec, const volatile sig_atomic_t* stop);

}  // namespace fabric_shm::workers
