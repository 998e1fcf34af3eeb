// SPDX-License-Identifier: MIT
// Runs `/bin/sh -c CMD` with an object on stdin and collects stdout as the result: stdin,
// stdout and stderr pumped together with poll(2) (no deadlock on objects larger than a pipe),
// a result size cap, a timeout that kills the command's process group, and a keep-alive
// callback called at least every 100 ms while the command runs.
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "fabric_shm/result.h"

namespace fabric_shm::workers {

struct ExecSpec {
    std::string command;                                      ///< given to /bin/sh -c
    std::vector<std::pair<std::string, std::string>> env;     ///< added to the inherited environment
    uint64_t timeout_ns = 0;                                  ///< 0: none
    uint64_t max_result_bytes = 0;                            ///< 0: no cap
    size_t stderr_tail_bytes = 512;                           ///< kept for failure reasons
    /// When set, holds the command's process group id while it runs (0 otherwise), for a
    /// signal handler that has to kill it (a second Ctrl-C): a sig_atomic_t is what a
    /// handler may read.
    volatile sig_atomic_t* running_pgid = nullptr;
    /// Called once the command's process group exists and before the command runs (the child
    /// waits on a pipe until this returns; if the worker dies first, the child sees the pipe
    /// close and exits): the worker records the group in the pool (child_groups.h), so that
    /// whoever finds the worker dead kills it. An error: the command is not run.
    std::function<Status(pid_t pgid)> on_started;
    /// Called once the command's leader has been reaped (whatever the outcome).
    std::function<void(pid_t pgid)> on_finished;
};

struct ExecOutcome {
    std::vector<uint8_t> stdout_bytes;
    std::string stderr_tail;
    int exit_code = -1;      ///< when exited normally
    int signal = 0;          ///< when killed by a signal
    bool timed_out = false;
    bool result_too_large = false;
    bool ok() const { return exit_code == 0 && signal == 0 && !timed_out && !result_too_large; }
    /// "exit status 3; stderr: ..." / "killed by signal 9 (timeout 2s); stderr: ..."
    std::string describe(const ExecSpec& spec) const;
};

/// Error only when the command could not be started (pipe/fork failure) or keep_alive
/// failed (the command is then killed and the keep-alive error returned).
Result<ExecOutcome> run_exec(const ExecSpec& spec, std::span<const uint8_t> input,
                             const std::function<Status()>& keep_alive);

}  // namespace fabric_shm::workers
