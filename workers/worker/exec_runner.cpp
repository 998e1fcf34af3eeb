// SPDX-License-Identifier: MIT
// The --exec runner. The command runs in its own process group (a timeout kills everything
// it started, as does its end: nothing it started outlives it; a Ctrl-C meant for the worker
// does not interrupt it mid-object). Every pipe is
// O_CLOEXEC and the child gets only stdin/stdout/stderr: it inherits no pool descriptor, and
// exec drops the pool mapping.
#include "exec_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fabric_shm/clock.h"

extern char** environ;

namespace fabric_shm::workers {

namespace {

constexpr uint64_t kKeepAliveEveryNs = 100 * kNsPerMs;
/// After the shell exited, how long a background straggler holding stdout may keep it open.
constexpr uint64_t kDrainGraceNs = 200 * kNsPerMs;
constexpr size_t kChunk = 64 * 1024;

struct Fd {
    int fd = -1;
    Fd() = default;
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    void reset() {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
};

bool make_pipe(Fd& r, Fd& w) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return false;
    r.fd = p[0];
    w.fd = p[1];
    return true;
}

void set_nonblock(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

std::string ExecOutcome::describe(const ExecSpec& spec) const {
    std::string s;
    if (result_too_large)
        s = "result larger than --max-result-size " + std::to_string(spec.max_result_bytes) + " bytes";
    else if (timed_out)
        s = "timed out after --exec-timeout " + format_duration_ns(spec.timeout_ns) + " (killed)";
    else if (signal != 0)
        s = "killed by signal " + std::to_string(signal) + " (" + ::strsignal(signal) + ")";
    else
        s = "exit status " + std::to_string(exit_code);
    std::string tail = stderr_tail;
    while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
    if (!tail.empty()) s += "; stderr: " + tail;
    return s;
}

Result<ExecOutcome> run_exec(const ExecSpec& spec, std::span<const uint8_t> input,
                             const std::function<Status()>& keep_alive) {
    // Everything the child needs is built before fork (no allocation after it).
    std::vector<std::string> env_strings;
    for (char** e = environ; e && *e; ++e) {
        const std::string_view kv(*e);
        const std::string_view name = kv.substr(0, kv.find('='));
        bool overridden = false;
        for (const auto& [k, v] : spec.env) overridden |= (k == name);
        if (!overridden) env_strings.emplace_back(kv);
    }
    for (const auto& [k, v] : spec.env) env_strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string cmd = spec.command;
    char sh[] = "/bin/sh", dash_c[] = "-c";
    char* argv[] = {sh, dash_c, cmd.data(), nullptr};

    Fd in_r, in_w, out_r, out_w, err_r, err_w, go_r, go_w;
    if (!make_pipe(in_r, in_w) || !make_pipe(out_r, out_w) || !make_pipe(err_r, err_w) || !make_pipe(go_r, go_w))
        return errno_error(errno, "--exec: pipe");

    const pid_t pid = ::fork();
    if (pid < 0) return errno_error(errno, "--exec: fork");
    if (pid == 0) {
        ::setpgid(0, 0);
        // Wait for the parent to record our group (on_started): one byte means go; end of
        // file means the parent died or refused first, and nothing may run unrecorded.
        ::close(go_w.fd);
        char go = 0;
        ssize_t k;
        while ((k = ::read(go_r.fd, &go, 1)) < 0 && errno == EINTR) {
        }
        if (k != 1) ::_exit(127);
        ::dup2(in_r.fd, 0);  // dup2 clears O_CLOEXEC on 0, 1, 2 only
        ::dup2(out_w.fd, 1);
        ::dup2(err_w.fd, 2);
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) ::sigaction(s, &dfl, nullptr);  // ignored dispositions survive exec
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execve(sh, argv, envp.data());
        ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here: no race with the child's own call
    go_r.reset();
    if (spec.on_started) {
        if (Status st = spec.on_started(pid); !st) {
            go_w.reset();  // the child reads end of file and exits without running the command
            int ignored = 0;
            while (::waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
            }
            return std::move(st).error();
        }
    }
    // From the first byte on the command runs; on_finished pairs with on_started on every
    // path below (each reaps the child before it returns).
    struct Finished {
        const ExecSpec& spec;
        pid_t pid;
        ~Finished() {
            if (spec.on_finished) spec.on_finished(pid);
        }
    } finished{spec, pid};
    {
        const char go = 1;
        while (::write(go_w.fd, &go, 1) < 0 && errno == EINTR) {
        }
        go_w.reset();
    }
    // Published after the group exists; cleared once the child is reaped (until then its pid,
    // and so the group id, cannot be reused). Its exit is seen without reaping it (WNOWAIT):
    // what it left running in its group is killed first, by that group id, which only the
    // zombie keeps from being reused.
    if (spec.running_pgid) *spec.running_pgid = pid;
    // A pidfd makes the child's exit wake poll(); without one (old kernel) poll every 5 ms.
    Fd pidfd;
#ifdef SYS_pidfd_open
    pidfd.fd = int(::syscall(SYS_pidfd_open, pid, 0));
#endif
    in_r.reset();
    out_w.reset();
    err_w.reset();
    set_nonblock(in_w.fd);
    set_nonblock(out_r.fd);
    set_nonblock(err_r.fd);

    ExecOutcome out;
    std::string err_buf;
    size_t written = 0;
    if (input.empty()) in_w.reset();
    const uint64_t start = mono_now_ns();
    uint64_t last_alive = start, exited_at = 0;
    bool exited = false, killed = false;
    int status = 0;
    Error alive_error;
    auto kill_all = [&] {
        if (!killed) {
            ::kill(-pid, SIGKILL);
            ::kill(pid, SIGKILL);
            killed = true;
        }
    };

    while (out_r.fd >= 0 || err_r.fd >= 0 || !exited) {
        const uint64_t now = mono_now_ns();
        if (!exited) {
            siginfo_t si{};
            if (::waitid(P_PID, id_t(pid), &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid) {
                exited = true;
                exited_at = now;
                in_w.reset();
            }
        }
        if (exited && out_r.fd < 0 && err_r.fd < 0) break;
        if (exited && now - exited_at > kDrainGraceNs) break;  // a straggler keeps the pipes open
        if (!killed && spec.timeout_ns != 0 && now - start >= spec.timeout_ns) {
            out.timed_out = true;
            kill_all();
        }
        if (now - last_alive >= kKeepAliveEveryNs) {
            last_alive = now;
            if (keep_alive) {
                if (Status st = keep_alive(); !st) {
                    alive_error = std::move(st).error();
                    kill_all();
                }
            }
        }
        pollfd fds[4];
        nfds_t n = 0;
        int idx_in = -1, idx_out = -1, idx_err = -1;
        if (pidfd.fd >= 0 && !exited) fds[n++] = {pidfd.fd, POLLIN, 0};
        if (in_w.fd >= 0) { idx_in = int(n); fds[n++] = {in_w.fd, POLLOUT, 0}; }
        if (out_r.fd >= 0) { idx_out = int(n); fds[n++] = {out_r.fd, POLLIN, 0}; }
        if (err_r.fd >= 0) { idx_err = int(n); fds[n++] = {err_r.fd, POLLIN, 0}; }
        uint64_t wait_ns = pidfd.fd >= 0 ? kKeepAliveEveryNs : 5 * kNsPerMs;
        if (exited) wait_ns = std::min(wait_ns, kDrainGraceNs);
        if (spec.timeout_ns != 0 && !killed) wait_ns = std::min(wait_ns, start + spec.timeout_ns - std::min(now, start + spec.timeout_ns));
        const int wait_ms = int(std::max<uint64_t>(1, wait_ns / kNsPerMs));
        if (n == 0) {
            ::usleep(unsigned(wait_ms) * 1000);
            continue;
        }
        const int r = ::poll(fds, n, wait_ms);
        if (r < 0 && errno != EINTR) {
            const int err = errno;
            kill_all();
            while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            if (spec.running_pgid) *spec.running_pgid = 0;
            return errno_error(err, "--exec: poll");
        }
        if (r <= 0) continue;
        if (idx_in >= 0 && (fds[idx_in].revents & (POLLOUT | POLLERR | POLLHUP))) {
            const size_t len = std::min(kChunk, input.size() - written);
            const ssize_t k = ::write(in_w.fd, input.data() + written, len);
            if (k > 0) written += size_t(k);
            else if (k < 0 && errno != EAGAIN && errno != EINTR) in_w.reset();  // EPIPE: it stopped reading
            if (written == input.size()) in_w.reset();
        }
        if (idx_out >= 0 && (fds[idx_out].revents & (POLLIN | POLLERR | POLLHUP))) {
            uint8_t buf[kChunk];
            const ssize_t k = ::read(out_r.fd, buf, sizeof buf);
            if (k > 0) {
                if (spec.max_result_bytes != 0 && out.stdout_bytes.size() + size_t(k) > spec.max_result_bytes) {
                    out.result_too_large = true;
                    out_r.reset();
                    kill_all();
                } else {
                    out.stdout_bytes.insert(out.stdout_bytes.end(), buf, buf + k);
                }
            } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
                out_r.reset();
            }
        }
        if (idx_err >= 0 && (fds[idx_err].revents & (POLLIN | POLLERR | POLLHUP))) {
            char buf[4096];
            const ssize_t k = ::read(err_r.fd, buf, sizeof buf);
            if (k > 0) {
                err_buf.append(buf, size_t(k));
                if (err_buf.size() > 2 * spec.stderr_tail_bytes)
                    err_buf.erase(0, err_buf.size() - spec.stderr_tail_bytes);
            } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
                err_r.reset();
            }
        }
    }
    // The command is done (or was killed): whatever it left running in its group, a background
    // job that holds none of its pipes included, goes too. on_finished is about to forget the
    // group, and nothing may run unrecorded.
    ::kill(-pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (spec.running_pgid) *spec.running_pgid = 0;
    if (err_buf.size() > spec.stderr_tail_bytes) err_buf.erase(0, err_buf.size() - spec.stderr_tail_bytes);
    out.stderr_tail = std::move(err_buf);
    if (WIFEXITED(status)) out.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) out.signal = WTERMSIG(status);
    if (alive_error.code != Errc::ok) return alive_error;
    return out;
}

}  // namespace fabric_shm::workers
