// SPDX-License-Identifier: MIT
#include "handler_pool.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <unordered_map>

#include "fabric_shm/clock.h"
#include "handler_protocol.h"

extern char** environ;

namespace fabric_shm::workers {

namespace proto = handler_protocol;

namespace {

constexpr uint64_t kServiceEveryNs = 50 * kNsPerMs;
constexpr uint64_t kRestartFirstNs = 50 * kNsPerMs;
constexpr uint64_t kRestartMaxNs = 5 * kNsPerSec;
constexpr size_t kReadChunk = 256 * 1024;
/// At most this much unparsed output is read before parsing: a handler that writes as fast as
/// it is read (a pipe it enlarged) must not make rbuf grow ahead of what the parser drops.
constexpr size_t kReadPerCall = 4 * kReadChunk;
constexpr size_t kStderrTail = 512;
/// After an error ends run(): how long the handlers may take to exit once their stdin closed
/// (at most --handler's drain grace). Short: the worker is stopping on a failure it cannot
/// recover from (its pool removed, its membership fenced), so it must not hang on a handler
/// stuck in a request, but one idle at its read gets its end of input and exits cleanly.
constexpr uint64_t kErrorGraceNs = kNsPerSec;

void set_nonblock(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + ::strsignal(WTERMSIG(status)) + ")";
    return "status " + std::to_string(status);
}

struct InFlight {
    WorkTicket ticket;
    uint64_t sent_ns = 0;
};

struct Handler {
    uint32_t index = 0;
    pid_t pid = 0;
    int in = -1, out = -1, err = -1;
    enum class State : uint8_t { down, starting, ready, closing } state = State::down;
    std::vector<uint8_t> wbuf;
    size_t wpos = 0;
    /// The handler's output not yet parsed: rbuf[0, rlen). rbuf only grows (its tail is never
    /// zero-filled again per read: a 256 KiB resize per read cost more than the rest of the
    /// worker together).
    std::vector<uint8_t> rbuf;
    size_t rlen = 0;
    /// Bytes still to come of a reply that was answered from its fixed fields alone (larger
    /// than --max-result-size): dropped as they arrive, never buffered.
    uint64_t skip = 0;
    std::string err_tail;
    std::unordered_map<uint64_t, InFlight> in_flight;
    uint64_t started_ns = 0, restart_at_ns = 0;
    uint32_t failures = 0, restarts = 0;
};

class Pool {
public:
    Pool(WorkerLoop& loop, const HandlerSpec& spec) : loop_(loop), spec_(spec), handlers_(spec.slots) {
        for (uint32_t i = 0; i < spec.slots; ++i) handlers_[i].index = i;
        env_strings_ = build_env();
    }
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;
    /// Every way out of run() passes here, an error's too (the loop's fatal error, a spawn or
    /// poll that failed): handlers still running get their stdin closed and a short grace,
    /// then their groups are killed and reaped, and forgotten (the signal handler's table, the
    /// pool's record). Otherwise they would run on until the worker's exit, where the pool's
    /// registry kills their groups without the end of input a drain gives. After a drain
    /// (close_all already ran) nothing is left to do. The tickets still in flight are dropped
    /// after this, with handlers_: uncommitted, they are redelivered.
    ~Pool() {
        size_t running = 0;
        for (const Handler& h : handlers_) running += h.pid != 0;
        if (running == 0) return;
        const uint64_t grace = std::min(spec_.drain_timeout_ns, kErrorGraceNs);
        log("stopping on an error: closing the stdin of " + std::to_string(running) +
            " handler(s); killed if still running after " + format_duration_ns(grace));
        close_all(grace);
    }

    Result<WorkerExit> run(const volatile sig_atomic_t* stop);

private:
    WorkerLoop& loop_;
    const HandlerSpec& spec_;
    std::vector<Handler> handlers_;
    std::vector<std::string> env_strings_;
    uint64_t next_id_ = 0;
    std::string uri_text_;  ///< dispatch: the request's input URI, reused
    uint64_t last_service_ns_ = 0;
    /// Messages that were in flight at a handler when it failed, (partition, offset) -> when.
    /// While any is left, every handler gets one request at a time, so a poison message that
    /// kills its handler again is charged alone (its neighbours were charged once, by the
    /// first failure). An entry leaves when its message gets an answer, or after a while (it
    /// was dead-lettered, or its partition moved).
    std::map<std::pair<uint32_t, uint64_t>, uint64_t> suspects_;
    static constexpr uint64_t kSuspectForgetNs = 30 * kNsPerSec;
    uint32_t per_handler_limit() {
        const uint64_t now = mono_now_ns();
        for (auto it = suspects_.begin(); it != suspects_.end();)
            it = now - it->second > kSuspectForgetNs ? suspects_.erase(it) : std::next(it);
        return suspects_.empty() ? spec_.max_in_flight : 1;
    }

    void log(const std::string& line) const {
        if (spec_.log) spec_.log(line);
    }
    std::vector<std::string> build_env() const;
    Status spawn(Handler& h);
    /// How fail() treats the handler's output that was not parsed yet.
    enum class Unread : uint8_t {
        take_replies,  ///< well framed so far: every complete reply in it is taken first
        discard,       ///< a protocol error: the framing is lost, nothing after it is trusted
    };
    Status fail(Handler& h, const std::string& reason, Unread unread = Unread::take_replies);
    Status on_readable(Handler& h);
    /// Why read_output stopped: a short read or `max_bytes` unparsed (more may come), nothing
    /// to read now (EAGAIN), or end of file (or a read error).
    enum class ReadEnd : uint8_t { paused, drained, closed };
    /// Appends what the handler's stdout has to rbuf, until a short read, EAGAIN, end of file
    /// or `max_bytes` unparsed.
    ReadEnd read_output(Handler& h, size_t max_bytes);
    /// Parses rbuf[0, rlen): takes the hello and every reply whose request is settled by what
    /// is in (a complete reply, or the fixed fields of one too large to keep), leaving a
    /// partial frame at the front. Fails nobody: what the handler wrote against the protocol
    /// is said in *protocol_error (parsing stops there) and the caller decides. The error is
    /// WorkerLoop::complete's, which stops the parse after the reply it refused.
    Status take_replies(Handler& h, std::string* protocol_error);
    /// fail()'s first step for a handler whose process group is dead (its pipes hold all it
    /// will ever write): the complete replies in rbuf and its stdout are taken, a bounded
    /// amount. Returns how many requests they settled; *st, WorkerLoop::complete's error;
    /// *protocol_error, what the handler wrote against the protocol (the take stopped there).
    size_t take_replies_left(Handler& h, Status* st, std::string* protocol_error);
    /// Why a reply naming request `id` may not be taken (before the hello, or a request not in
    /// flight at this handler): the protocol error; nullopt when it may.
    std::optional<std::string> refusal(const Handler& h, uint64_t id) const;
    /// The request a reply names, out of flight; nullopt when there is none (*protocol_error
    /// then says why).
    std::optional<WorkTicket> answered(Handler& h, uint64_t id, std::string* protocol_error);
    /// "N bytes is larger than --max-result-size M", of a reply's body.
    std::string over_cap(uint64_t bytes) const {
        return std::to_string(bytes) + " bytes is larger than --max-result-size " + std::to_string(spec_.max_result_bytes);
    }
    void on_stderr(Handler& h);
    Status flush(Handler& h);
    size_t capacity();
    size_t in_flight() const;
    /// Every handler up and past its hello, none still sending the rest of a reply that was
    /// answered early (that one is read at the pipe's pace, not the service tick's).
    bool all_ready() const;
    Handler* least_loaded();
    Status dispatch(std::span<WorkTicket> tickets);
    void close_all(uint64_t grace_ns);
    /// Kills the handler's process group (whatever the command started goes too) and, unless
    /// `collected`, its leader, and waits for it; then forgets the group (the signal handler's
    /// table, the pool's record). The pipes stay open: what they hold can still be read.
    void end_process(Handler& h, bool collected, int* status);
    void close_pipes(Handler& h);
    /// end_process, close_pipes: the handler is gone.
    void reap(Handler& h, bool collected, int* status);
};

std::vector<std::string> Pool::build_env() const {
    std::vector<std::string> out;
    for (char** e = environ; e && *e; ++e) {
        const std::string_view kv(*e);
        const std::string_view name = kv.substr(0, kv.find('='));
        bool overridden = false;
        for (const auto& [k, v] : spec_.env) overridden |= (k == name);
        if (!overridden) out.emplace_back(kv);
    }
    for (const auto& [k, v] : spec_.env) out.push_back(k + "=" + v);
    return out;
}

Status Pool::spawn(Handler& h) {
    std::vector<std::string> env = env_strings_;
    env.push_back("FABRIC_HANDLER_SLOT=" + std::to_string(h.index));
    env.push_back("FABRIC_HANDLER_MAX_IN_FLIGHT=" + std::to_string(spec_.max_in_flight));
    std::vector<char*> envp;
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string cmd = spec_.command;
    char sh[] = "/bin/sh", dash_c[] = "-c";
    char* argv[] = {sh, dash_c, cmd.data(), nullptr};
    int in_p[2], out_p[2], err_p[2], go_p[2];
    if (::pipe2(in_p, O_CLOEXEC) != 0) return errno_error(errno, "--handler: pipe");
    if (::pipe2(out_p, O_CLOEXEC) != 0 || ::pipe2(err_p, O_CLOEXEC) != 0 || ::pipe2(go_p, O_CLOEXEC) != 0)
        return errno_error(errno, "--handler: pipe");
    const pid_t pid = ::fork();
    if (pid < 0) return errno_error(errno, "--handler: fork");
    if (pid == 0) {
        ::setpgid(0, 0);
        ::close(go_p[1]);
        char go = 0;
        ssize_t k;
        while ((k = ::read(go_p[0], &go, 1)) < 0 && errno == EINTR) {
        }
        if (k != 1) ::_exit(127);  // the worker died or refused before recording our group
        ::dup2(in_p[0], 0);
        ::dup2(out_p[1], 1);
        ::dup2(err_p[1], 2);
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) ::sigaction(s, &dfl, nullptr);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execve(sh, argv, envp.data());
        ::_exit(127);
    }
    ::setpgid(pid, pid);
    ::close(go_p[0]);
    ::close(in_p[0]);
    ::close(out_p[1]);
    ::close(err_p[1]);
    auto close_ours = [&] {
        ::close(in_p[1]);
        ::close(out_p[0]);
        ::close(err_p[0]);
    };
    if (spec_.on_started) {
        if (Status st = spec_.on_started(pid); !st) {
            ::close(go_p[1]);
            close_ours();
            int ignored;
            while (::waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
            }
            return st;
        }
    }
    const char go = 1;
    while (::write(go_p[1], &go, 1) < 0 && errno == EINTR) {
    }
    ::close(go_p[1]);
    if (spec_.running_pgids) spec_.running_pgids[h.index] = pid;
    h.pid = pid;
    h.in = in_p[1];
    h.out = out_p[0];
    h.err = err_p[0];
    for (int fd : {h.in, h.out, h.err}) set_nonblock(fd);
    h.state = Handler::State::starting;
    h.wbuf.clear();
    h.wpos = 0;
    h.rlen = 0;
    h.skip = 0;
    h.err_tail.clear();
    h.started_ns = mono_now_ns();
    proto::append_hello(h.wbuf, spec_.max_in_flight);
    return {};
}

void Pool::end_process(Handler& h, bool collected, int* status) {
    ::kill(-h.pid, SIGKILL);  // the whole group: whatever the command started goes too
    if (!collected) {
        ::kill(h.pid, SIGKILL);
        while (::waitpid(h.pid, status, 0) < 0 && errno == EINTR) {
        }
    }
    if (spec_.running_pgids) spec_.running_pgids[h.index] = 0;
    if (spec_.on_finished) spec_.on_finished(h.pid);
}

void Pool::close_pipes(Handler& h) {
    for (int* fd : {&h.in, &h.out, &h.err})
        if (*fd >= 0) {
            ::close(*fd);
            *fd = -1;
        }
}

void Pool::reap(Handler& h, bool collected, int* status) {
    end_process(h, collected, status);
    close_pipes(h);
    h.pid = 0;
}

// The handler is done for: kill its group, take the replies it had written, fail what it
// still had in flight (one attempt each), schedule a restart with backoff.
Status Pool::fail(Handler& h, const std::string& reason, Unread unread) {
    int status = 0;
    // It may have exited by itself (a crash): give its status a moment to be collectable.
    pid_t w = 0;
    for (int i = 0; i < 20 && (w = ::waitpid(h.pid, &status, WNOHANG)) == 0; ++i) ::usleep(1000);
    std::string why = reason;
    if (w == h.pid) why += ": " + describe_status(status);
    // Its group is killed first (stragglers of one that exited, all of one that did not):
    // nothing writes to its pipes any more, so what they hold is all it ever answered.
    end_process(h, w == h.pid, &status);
    // A reply it wrote before it died (or before the write that found its stdin closed, or the
    // timeout) is an answer like any other: failing its request would run the object again
    // and count a failed attempt (a handler that exits after N requests would turn every
    // N-th success into one). Only the requests it did not answer fail below.
    size_t taken = 0;
    Status took;
    std::string left_error;
    if (unread == Unread::take_replies) taken = take_replies_left(h, &took, &left_error);
    // The requests after a bad frame in what it left fail because of it, not of `reason` alone:
    // the log and their failure say so.
    if (!left_error.empty()) why += "; then a protocol error in the output it left: " + left_error;
    h.rlen = 0;  // a partial frame, or what followed a protocol error, goes with the handler
    h.skip = 0;
    on_stderr(h);  // whatever it said last: the reason is most useful with it
    close_pipes(h);
    h.pid = 0;
    if (h.err_tail.size() > kStderrTail) h.err_tail.erase(0, h.err_tail.size() - kStderrTail);
    std::string tail = h.err_tail;
    while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
    if (!tail.empty()) why += "; stderr: " + tail;
    const size_t lost = h.in_flight.size();
    ++h.failures;
    ++h.restarts;
    if (spec_.on_restart) spec_.on_restart();
    const uint64_t delay = std::min<uint64_t>(kRestartMaxNs, kRestartFirstNs << std::min<uint32_t>(h.failures - 1, 16));
    h.restart_at_ns = mono_now_ns() + delay;
    h.state = Handler::State::down;
    log("handler " + std::to_string(h.index) + ": " + why + "; " +
        (taken != 0 ? std::to_string(taken) + " reply(s) left in its output taken; " : std::string()) +
        std::to_string(lost) + " request(s) in flight fail once; restarting in " + format_duration_ns(delay) +
        " (restart " + std::to_string(h.restarts) + ")");
    // A refused result is the loop's fatal error: what is still in flight is left uncommitted
    // (redelivered), as when a fail below meets one.
    if (!took) return took;
    std::unordered_map<uint64_t, InFlight> failed;
    failed.swap(h.in_flight);
    if (lost > 1 || !suspects_.empty())
        for (auto& [id, f] : failed) suspects_[{f.ticket.item().partition, f.ticket.item().offset}] = mono_now_ns();
    for (auto& [id, f] : failed)
        FABRIC_TRY(loop_.complete(std::move(f.ticket), make_error(Errc::io_error, "handler " + why), false));
    return {};
}

size_t Pool::take_replies_left(Handler& h, Status* st, std::string* protocol_error) {
    // Its group is dead, so its pipe holds at most a pipe's capacity (1 MiB unless the system
    // allows more); the bound stops a writer outside the group (one that left it) from keeping
    // the worker here.
    constexpr size_t kMaxLeftBytes = 16 * kReadPerCall;
    const size_t before = h.in_flight.size();
    size_t read = 0;
    for (;;) {
        ReadEnd end = ReadEnd::closed;
        if (h.out >= 0) {
            const size_t had = h.rlen;
            end = read_output(h, kReadPerCall);
            read += h.rlen - had;
        }
        *st = take_replies(h, protocol_error);
        // What follows a protocol error cannot be framed: its requests fail.
        if (!*st || !protocol_error->empty() || end != ReadEnd::paused || read >= kMaxLeftBytes) break;
    }
    return before - h.in_flight.size();
}

void Pool::on_stderr(Handler& h) {
    if (h.err < 0) return;
    char buf[4096];
    for (;;) {
        const ssize_t k = ::read(h.err, buf, sizeof buf);
        if (k > 0) {
            h.err_tail.append(buf, size_t(k));
            if (h.err_tail.size() > 2 * kStderrTail) h.err_tail.erase(0, h.err_tail.size() - kStderrTail);
            continue;
        }
        if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
            ::close(h.err);
            h.err = -1;
        }
        return;
    }
}

Status Pool::flush(Handler& h) {
    while (h.wpos < h.wbuf.size()) {
        const ssize_t k = ::write(h.in, h.wbuf.data() + h.wpos, h.wbuf.size() - h.wpos);
        if (k > 0) {
            h.wpos += size_t(k);
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN) return {};
        return fail(h, "closed its stdin");
    }
    h.wbuf.clear();
    h.wpos = 0;
    return {};
}

std::optional<std::string> Pool::refusal(const Handler& h, uint64_t id) const {
    if (h.state != Handler::State::ready && h.state != Handler::State::closing) return "a reply before the hello";
    if (!h.in_flight.count(id))
        return "a reply for request " + std::to_string(id) + ", which is not in flight at this handler";
    return std::nullopt;
}

std::optional<WorkTicket> Pool::answered(Handler& h, uint64_t id, std::string* protocol_error) {
    if (std::optional<std::string> refused = refusal(h, id)) {
        *protocol_error = std::move(*refused);
        return std::nullopt;
    }
    auto it = h.in_flight.find(id);
    WorkTicket ticket = std::move(it->second.ticket);
    h.in_flight.erase(it);
    if (!suspects_.empty()) suspects_.erase({ticket.item().partition, ticket.item().offset});
    return ticket;
}

Pool::ReadEnd Pool::read_output(Handler& h, size_t max_bytes) {
    for (;;) {
        if (h.rbuf.size() - h.rlen < kReadChunk) h.rbuf.resize(h.rlen + kReadChunk);
        const size_t room = h.rbuf.size() - h.rlen;
        const ssize_t k = ::read(h.out, h.rbuf.data() + h.rlen, room);
        if (k > 0) {
            h.rlen += size_t(k);
            if (size_t(k) < room || h.rlen >= max_bytes) return ReadEnd::paused;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN) return ReadEnd::drained;
        return ReadEnd::closed;
    }
}

Status Pool::on_readable(Handler& h) {
    // fail() takes the complete replies read before the end of file (or still in the pipe).
    if (read_output(h, kReadPerCall) == ReadEnd::closed)
        return fail(h, h.state == Handler::State::closing ? "exited" : "closed its stdout");
    std::string protocol_error;
    FABRIC_TRY(take_replies(h, &protocol_error));
    if (!protocol_error.empty()) return fail(h, "protocol error: " + protocol_error, Unread::discard);
    return {};
}

Status Pool::take_replies(Handler& h, std::string* protocol_error) {
    size_t pos = 0;
    if (h.skip != 0) {  // the rest of a reply already answered
        pos = size_t(std::min<uint64_t>(h.skip, h.rlen));
        h.skip -= pos;
    }
    Status result;
    const std::span<const uint8_t> unparsed(h.rbuf.data(), h.rlen);
    while (pos < unparsed.size()) {
        size_t used = 0;
        proto::Reply reply;
        uint16_t version = 0;
        std::string why;
        const auto p = proto::parse_frame(unparsed.subspan(pos), &used, &reply, &version, &why);
        if (p == proto::Parse::error) {
            *protocol_error = std::move(why);
            break;
        }
        if (p == proto::Parse::need_more) {
            // A reply is judged by its fixed fields as soon as they are in. One larger than
            // --max-result-size is answered now and the rest of it dropped as it comes: the
            // worker never holds more of a result than that cap (a frame may say 1 GiB).
            proto::Reply head;
            uint64_t frame_bytes = 0;
            if (proto::parse_reply_head(unparsed.subspan(pos), &head, &frame_bytes, &why) != proto::Parse::reply) break;
            const uint64_t body = frame_bytes - proto::kReplyHeadBytes;
            if (spec_.max_result_bytes == 0 || body <= spec_.max_result_bytes) {
                // It will be kept: but one that names no request in flight is refused now.
                if (std::optional<std::string> refused = refusal(h, head.id)) *protocol_error = std::move(*refused);
                break;
            }
            std::optional<WorkTicket> ticket = answered(h, head.id, protocol_error);
            if (!ticket) break;
            const std::string size = over_cap(body);
            if (head.status == proto::kStatusOk) {
                h.failures = 0;
                result = loop_.complete(std::move(*ticket),
                                        make_error(Errc::invalid_argument, "handler result of " + size), true);
            } else {
                result = loop_.complete(std::move(*ticket),
                                        make_error(head.status == proto::kStatusPermanent ? Errc::invalid_argument
                                                                                          : Errc::io_error,
                                                   "handler: an error message of " + size + " (not kept)"),
                                        head.status == proto::kStatusPermanent);
            }
            h.skip = frame_bytes - (unparsed.size() - pos);
            pos = unparsed.size();
            break;
        }
        pos += used;
        if (p == proto::Parse::hello) {
            if (h.state != Handler::State::starting) {
                *protocol_error = "a second hello";
                break;
            }
            if (version != proto::kVersion) {
                *protocol_error = "the handler speaks version " + std::to_string(version) + ", this worker version " +
                                  std::to_string(proto::kVersion);
                break;
            }
            h.state = Handler::State::ready;
            continue;
        }
        std::optional<WorkTicket> ticket = answered(h, reply.id, protocol_error);
        if (!ticket) break;
        if (reply.status == proto::kStatusOk) {
            h.failures = 0;
            if (spec_.max_result_bytes != 0 && reply.body.size() > spec_.max_result_bytes) {
                result = loop_.complete(
                    std::move(*ticket), make_error(Errc::invalid_argument, "handler result of " + over_cap(reply.body.size())),
                    true);
            } else {
                result = loop_.complete(std::move(*ticket), reply.body);
            }
        } else {
            const std::string msg(reply.body.begin(), reply.body.end());
            result = loop_.complete(std::move(*ticket),
                                    make_error(reply.status == proto::kStatusPermanent ? Errc::invalid_argument
                                                                                       : Errc::io_error,
                                               "handler: " + msg),
                                    reply.status == proto::kStatusPermanent);
        }
        if (!result) break;
    }
    // What is left (a partial frame) moves to the front; rbuf keeps its size. Also on an
    // early stop: a reply taken is never parsed again.
    if (pos > 0) {
        std::memmove(h.rbuf.data(), h.rbuf.data() + pos, h.rlen - pos);
        h.rlen -= pos;
    }
    return result;
}

size_t Pool::capacity() {
    const uint32_t limit = per_handler_limit();
    size_t c = 0;
    for (const Handler& h : handlers_)
        if (h.state == Handler::State::ready && h.in_flight.size() < limit) c += limit - h.in_flight.size();
    return c;
}

bool Pool::all_ready() const {
    for (const Handler& h : handlers_)
        if (h.state != Handler::State::ready || h.skip != 0) return false;
    return true;
}

size_t Pool::in_flight() const {
    size_t n = 0;
    for (const Handler& h : handlers_) n += h.in_flight.size();
    return n;
}

Handler* Pool::least_loaded() {
    const uint32_t limit = suspects_.empty() ? spec_.max_in_flight : 1;
    Handler* best = nullptr;
    for (Handler& h : handlers_)
        if (h.state == Handler::State::ready && h.in_flight.size() < limit &&
            (!best || h.in_flight.size() < best->in_flight.size()))
            best = &h;
    return best;
}

Status Pool::dispatch(std::span<WorkTicket> tickets) {
    const uint64_t now = mono_now_ns();
    for (WorkTicket& t : tickets) {
        Handler* h = least_loaded();
        if (!h) break;  // cannot happen: acquire was bounded by capacity()
        const WorkItem& item = t.item();
        item.uri.view().to_string(uri_text_);  // into a kept string: no allocation per request
        const std::string& uri = uri_text_;
        proto::RequestFields r;
        r.id = ++next_id_;
        r.attempt = item.attempt;
        r.partition = item.partition;
        r.offset = item.offset;
        r.version = item.version;
        r.uri = uri;
        r.key = std::string_view(reinterpret_cast<const char*>(item.key.data()), item.key.size());
        r.topic = item.topic;
        r.data = item.data;
        proto::append_request(h->wbuf, r);
        h->in_flight.emplace(r.id, InFlight{std::move(t), now});
    }
    for (Handler& h : handlers_)
        if (h.pid != 0 && h.wpos < h.wbuf.size()) FABRIC_TRY(flush(h));
    return {};
}

// Drain's end: close every handler's stdin (a helper's cue to exit), wait for them, then kill
// what is left of their groups.
void Pool::close_all(uint64_t grace_ns) {
    const uint64_t end = mono_now_ns() + grace_ns;
    for (Handler& h : handlers_)
        if (h.pid != 0 && h.in >= 0) {
            ::close(h.in);
            h.in = -1;
            h.state = Handler::State::closing;
        }
    for (Handler& h : handlers_) {
        if (h.pid == 0) continue;
        int status = 0;
        pid_t w = 0;
        while ((w = ::waitpid(h.pid, &status, WNOHANG)) == 0 && mono_now_ns() < end) {
            // Nothing a handler still writes is wanted (every request is settled), but one
            // blocked writing the rest of a reply into a full pipe (answered early, too large
            // to keep) could not get to its end of file and exit: drop what comes, from every
            // handler (the others must not sit blocked while this one is waited for), a
            // bounded amount per pass so that one writing without end still meets the grace.
            for (Handler& o : handlers_) {
                on_stderr(o);
                char sink[16384];
                for (int reads = 0; o.out >= 0 && reads < 64 && ::read(o.out, sink, sizeof sink) > 0; ++reads) {
                }
            }
            ::usleep(2000);
        }
        if (w != h.pid) log("handler " + std::to_string(h.index) + " did not exit after its stdin closed: killed");
        reap(h, w == h.pid, &status);  // kills the group's stragglers; reaps if not yet
    }
}

Result<WorkerExit> Pool::run(const volatile sig_atomic_t* stop) {
    auto wfd = loop_.wait_fd();
    if (!wfd) return std::move(wfd).error();
    std::vector<WorkTicket> tickets(256);
    std::vector<pollfd> fds;
    std::vector<std::pair<Handler*, int>> owners;  // fds[i] -> (handler, 0 out / 1 err / 2 in)
    WorkerExit why = WorkerExit::stopped;
    bool draining = false;
    for (;;) {
        uint64_t now = mono_now_ns();
        if (!draining && (*stop || loop_.finished())) {
            draining = true;
            why = *stop ? WorkerExit::stopped : spec_.count_limited ? WorkerExit::count_reached : WorkerExit::idle;
            if (in_flight() > 0)
                log("draining: " + std::to_string(in_flight()) + " request(s) in flight finish first");
        }
        if (draining && in_flight() == 0) break;
        for (Handler& h : handlers_)
            if (h.state == Handler::State::down && now >= h.restart_at_ns && !draining) FABRIC_TRY(spawn(h));
        // Timeouts: the hello, then each request (against a clock read after every send).
        if (const uint64_t now = mono_now_ns(); spec_.timeout_ns != 0)
            for (Handler& h : handlers_) {
                if (h.pid == 0) continue;
                if (h.state == Handler::State::starting && now > h.started_ns && now - h.started_ns > spec_.timeout_ns) {
                    FABRIC_TRY(fail(h, "no hello within --exec-timeout " + format_duration_ns(spec_.timeout_ns)));
                    continue;
                }
                for (const auto& [id, f] : h.in_flight)
                    if (now > f.sent_ns && now - f.sent_ns > spec_.timeout_ns) {
                        FABRIC_TRY(fail(h, "request " + std::to_string(id) + " timed out after --exec-timeout " +
                                               format_duration_ns(spec_.timeout_ns) + " (killed)"));
                        break;
                    }
            }
        if (!draining) {
            const size_t cap = std::min(capacity(), tickets.size());
            if (cap > 0) {
                // Idle (nothing in flight, every handler up): park on the topic itself until a
                // message comes or the service tick is due. The next message then costs one
                // futex wake-up, instead of two (the Waiter's thread, then this one through
                // wait_fd): ~40-50 us less at light load on a 2-vCPU VM. A handler's stderr or
                // exit meanwhile waits for the tick at most (kServiceEveryNs), as does a signal.
                uint64_t park_ns = 0;
                if (in_flight() == 0 && all_ready() && now - last_service_ns_ < kServiceEveryNs)
                    park_ns = kServiceEveryNs - (now - last_service_ns_);
                auto n = loop_.acquire(std::span(tickets).first(cap), std::chrono::nanoseconds(park_ns));
                if (!n) return std::move(n).error();
                FABRIC_TRY(dispatch(std::span(tickets).first(*n)));
                if (*n == cap) continue;  // more may be ready: take them before sleeping
            }
        }
        if (now - last_service_ns_ >= kServiceEveryNs) {
            last_service_ns_ = now;
            FABRIC_TRY(loop_.service());
        }
        fds.clear();
        owners.clear();
        // The loop's wait_fd only while we could take what it announces: with every handler's
        // window full (or a handler down, or draining) it may stay readable, and poll() would
        // spin; a reply (a handler's stdout) or the service tick brings us back instead.
        fds.push_back({!draining && capacity() > 0 ? *wfd : -1, POLLIN, 0});
        owners.emplace_back(nullptr, 0);
        uint64_t wait = kServiceEveryNs;
        now = mono_now_ns();
        for (Handler& h : handlers_) {
            if (h.state == Handler::State::down) {
                if (!draining) wait = std::min(wait, h.restart_at_ns > now ? h.restart_at_ns - now : 0);
                continue;
            }
            if (h.out >= 0) {
                fds.push_back({h.out, POLLIN, 0});
                owners.emplace_back(&h, 0);
            }
            if (h.err >= 0) {
                fds.push_back({h.err, POLLIN, 0});
                owners.emplace_back(&h, 1);
            }
            if (h.in >= 0 && h.wpos < h.wbuf.size()) {
                fds.push_back({h.in, POLLOUT, 0});
                owners.emplace_back(&h, 2);
            }
            if (spec_.timeout_ns != 0) {
                uint64_t oldest = h.state == Handler::State::starting ? h.started_ns : UINT64_MAX;
                for (const auto& [id, f] : h.in_flight) oldest = std::min(oldest, f.sent_ns);
                if (oldest != UINT64_MAX) {
                    const uint64_t due = oldest + spec_.timeout_ns;
                    wait = std::min(wait, due > now ? due - now : 0);
                }
            }
        }
        const int r = ::poll(fds.data(), fds.size(), int(wait / kNsPerMs) + 1);
        if (r < 0 && errno != EINTR) return errno_error(errno, "--handler: poll");
        if (r <= 0) continue;
        if (fds[0].revents) {
            last_service_ns_ = mono_now_ns();
            FABRIC_TRY(loop_.service());
        }
        for (size_t i = 1; i < fds.size(); ++i) {
            if (!fds[i].revents) continue;
            Handler& h = *owners[i].first;
            if (h.pid == 0) continue;  // failed earlier in this round
            switch (owners[i].second) {
                case 0: FABRIC_TRY(on_readable(h)); break;
                case 1: on_stderr(h); break;
                case 2: FABRIC_TRY(flush(h)); break;
            }
        }
    }
    close_all(spec_.drain_timeout_ns);
    FABRIC_TRY(loop_.close());
    return why;
}

}  // namespace

Result<WorkerExit> run_handlers(WorkerLoop& loop, const HandlerSpec& spec, const volatile sig_atomic_t* stop) {
    if (spec.slots == 0) return make_error(Errc::invalid_argument, "--concurrency 0: at least one handler is needed");
    if (spec.max_in_flight == 0) return make_error(Errc::invalid_argument, "--max-inflight 0: at least 1 is needed");
    Pool pool(loop, spec);
    return pool.run(stop);
}

}  // namespace fabric_shm::workers
