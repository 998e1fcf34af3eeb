// SPDX-License-Identifier: MIT
#include "nats_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fabric_shm/clock.h"

namespace fabric_shm::bridge::testing {

namespace {

/// A free loopback port: bound to port 0, the kernel picks one; the socket stays open (so two
/// calls never return the same port) until the caller closes it right before the server binds.
Result<std::pair<int, int>> reserve_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error(errno, "socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        const int e = errno;
        ::close(fd);
        return errno_error(e, "bind 127.0.0.1:0");
    }
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    return std::pair<int, int>{fd, int(ntohs(a.sin_port))};
}

void sleep_ms(long ms) {
    timespec ts{ms / 1000, (ms % 1000) * 1'000'000};
    nanosleep(&ts, nullptr);
}

/// waitpid with a deadline; true when the child was reaped.
bool reap(pid_t pid, int timeout_ms) {
    for (int waited = 0; waited <= timeout_ms; waited += 5) {
        int status = 0;
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) return true;
        sleep_ms(5);
    }
    return false;
}

/// True when JetStream answers an account-info request on 127.0.0.1:`port` (its meta leader is
/// elected). Spoken in the NATS text protocol over a plain socket, in this thread: the NATS client
/// library would start threads and keep process-wide state (the inbox prefix) that every later
/// fork() copies, and ThreadSanitizer refuses a forked child that starts threads.
bool probe_jetstream(int port, int timeout_ms) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(uint16_t(port));
    timeval tv{0, 100'000};  // each recv waits at most 100 ms; the loop below bounds the total
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    bool ok = false;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        // headers + no_responders: a JetStream that is not up yet answers at once with a
        // 503 status message (HMSG) instead of leaving the request unanswered.
        const std::string hello =
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\n"
            "SUB _PROBE.reply 1\r\n"
            "PUB $JS.API.INFO _PROBE.reply 0\r\n\r\n"
            "PING\r\n";
        if (::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) == ssize_t(hello.size())) {
            std::string in;
            const uint64_t deadline = mono_now_ns() + uint64_t(timeout_ms) * 1'000'000;
            char buf[4096];
            while (!ok && mono_now_ns() < deadline && in.size() < (1u << 20)) {
                const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
                if (n == 0) break;
                if (n < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
                    break;
                }
                in.append(buf, size_t(n));
                if (in.find("HMSG _PROBE.reply") != std::string::npos) break;  // 503: not up yet
                // "MSG _PROBE.reply 1 <len>\r\n<payload>\r\n": an account-info reply.
                const size_t m = in.find("MSG _PROBE.reply 1 ");
                if (m == std::string::npos) continue;
                const size_t eol = in.find("\r\n", m);
                if (eol == std::string::npos) continue;
                const size_t len = size_t(std::strtoul(in.c_str() + m + 19, nullptr, 10));
                if (in.size() < eol + 2 + len) continue;
                const std::string payload = in.substr(eol + 2, len);
                ok = payload.find("account_info_response") != std::string::npos &&
                     payload.find("\"error\"") == std::string::npos;
                break;
            }
        }
    }
    ::close(fd);
    return ok;
}

}  // namespace

std::string find_nats_server() {
    if (const char* e = std::getenv("NATS_SERVER"); e && *e && ::access(e, X_OK) == 0) return e;
    if (const char* path = std::getenv("PATH")) {
        std::stringstream ss(path);
        std::string d;
        while (std::getline(ss, d, ':'))
            if (!d.empty() && ::access((d + "/nats-server").c_str(), X_OK) == 0) return d + "/nats-server";
    }
    for (const char* p : {"/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"})
        if (::access(p, X_OK) == 0) return p;
    return "";
}

Result<std::unique_ptr<NatsCluster>> NatsCluster::start(const ClusterOptions& o) {
    std::unique_ptr<NatsCluster> c(new NatsCluster());
    c->server_ = find_nats_server();
    if (c->server_.empty()) return make_error(Errc::not_found, "nats-server not found (apt-get install nats-server)");
    if (o.nodes < 1 || o.nodes > 5) return make_error(Errc::invalid_argument, "1 to 5 nodes");
    c->scheme_ = o.client_scheme;
    std::string tmpl = (std::filesystem::temp_directory_path() / "fabric-shm-nats-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) return errno_error(errno, "mkdtemp");
    c->dir_ = tmpl;
    // Ports can be taken by someone else between our close and the server's bind: try again
    // with fresh ones a few times.
    for (int attempt = 0; attempt < 3; ++attempt) {
        std::vector<int> fds;
        c->nodes_.assign(size_t(o.nodes), Node{});
        for (Node& n : c->nodes_) {
            for (int* port : {&n.client_port, &n.route_port}) {
                auto p = reserve_port();
                if (!p) return std::move(p).error();
                fds.push_back(p->first);
                *port = p->second;
            }
        }
        FABRIC_TRY(c->write_configs(o));
        for (int fd : fds) ::close(fd);
        Status st = c->start_all();
        if (st) st = c->wait_ready(o.ready_timeout_ns);
        if (st) return c;
        std::string logs;
        for (int i = 0; i < c->nodes(); ++i) logs += c->log(i);
        c->stop_all(SIGKILL);
        if (logs.find("address already in use") == std::string::npos) return std::move(st).error();
    }
    return make_error(Errc::busy, "no free loopback ports for the nats-server cluster after 3 attempts");
}

Status NatsCluster::write_configs(const ClusterOptions& o) {
    for (size_t i = 0; i < nodes_.size(); ++i) {
        Node& n = nodes_[i];
        const std::string name = "n" + std::to_string(i + 1);
        const std::string store = dir_ + "/" + name;
        n.config = dir_ + "/" + name + ".conf";
        n.log = dir_ + "/" + name + ".log";
        std::ofstream f(n.config, std::ios::trunc);
        f << "server_name: " << name << "\n"
          << "listen: 127.0.0.1:" << n.client_port << "\n"
          << "jetstream {\n  store_dir: \"" << store << "\"\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}\n";
        if (nodes_.size() > 1) {
            f << "cluster {\n  name: fabric-test\n  listen: 127.0.0.1:" << n.route_port << "\n  routes: [\n";
            for (const Node& m : nodes_) f << "    nats-route://127.0.0.1:" << m.route_port << "\n";
            f << "  ]\n}\n";
        }
        f << o.config_extra << "\n";
        if (!f) return make_error(Errc::io_error, "cannot write " + n.config);
    }
    return {};
}

NatsCluster::~NatsCluster() {
    stop_all(SIGTERM);
    if (!dir_.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
}

std::string NatsCluster::url(int i) const {
    return scheme_ + "://127.0.0.1:" + std::to_string(nodes_[size_t(i)].client_port);
}

std::string NatsCluster::urls() const {
    std::string s;
    for (int i = 0; i < nodes(); ++i) s += (s.empty() ? "" : ",") + url(i);
    return s;
}

std::string NatsCluster::log(int i) const {
    std::ifstream f(nodes_[size_t(i)].log);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

Status NatsCluster::start_node(int i) {
    Node& n = nodes_[size_t(i)];
    if (n.pid > 0) return {};
    const int out = ::open(n.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (out < 0) return errno_error(errno, "open " + n.log);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        const int e = errno;
        ::close(out);
        return errno_error(e, "fork");
    }
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
        if (::getppid() != parent) ::_exit(1);
        ::dup2(out, STDOUT_FILENO);
        ::dup2(out, STDERR_FILENO);
        ::execl(server_.c_str(), server_.c_str(), "-c", n.config.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(out);
    n.pid = pid;
    return {};
}

Status NatsCluster::start_all() {
    for (int i = 0; i < nodes(); ++i) FABRIC_TRY(start_node(i));
    return {};
}

void NatsCluster::stop_node(int i, int sig) {
    Node& n = nodes_[size_t(i)];
    if (n.pid <= 0) return;
    ::kill(n.pid, sig);
    if (!reap(n.pid, 10'000)) {
        ::kill(n.pid, SIGKILL);
        reap(n.pid, 10'000);
    }
    n.pid = -1;
}

void NatsCluster::stop_all(int sig) {
    for (Node& n : nodes_)
        if (n.pid > 0) ::kill(n.pid, sig);
    for (int i = 0; i < nodes(); ++i) stop_node(i, sig);
}

Status NatsCluster::wait_ready(uint64_t timeout_ns) const {
    const uint64_t deadline = mono_now_ns() + timeout_ns;
    std::string last = "no attempt";
    for (int i = 0; i < nodes(); ++i) {
        if (nodes_[size_t(i)].pid <= 0) continue;
        for (;;) {
            int status = 0;
            if (::waitpid(nodes_[size_t(i)].pid, &status, WNOHANG) == nodes_[size_t(i)].pid)
                return make_error(Errc::io_error, "nats-server node " + std::to_string(i + 1) + " exited: " + log(i));
            bool ok = false;
            if (scheme_ == "nats") {
                ok = probe_jetstream(nodes_[size_t(i)].client_port, 1000);
                if (!ok) last = "JetStream not ready on " + url(i);
            } else {
                // TLS clusters: the server says when it listens; JetStream is checked by the caller.
                ok = log(i).find("Server is ready") != std::string::npos;
                last = "node " + std::to_string(i + 1) + " not ready";
            }
            if (ok) break;
            if (mono_now_ns() >= deadline)
                return make_error(Errc::timeout, "nats-server cluster not ready: " + last + "\n" + log(i));
            sleep_ms(50);
        }
    }
    return {};
}

}  // namespace fabric_shm::bridge::testing
