// SPDX-License-Identifier: MIT
// Peer: ZeroMQ 4.3 ipc:// PUSH -> PULL, notify scenario (64-byte messages, one producer
// process, one consumer process, blocking zmq_recv). Two runs: window 1 (one message in
// flight: unloaded one-way latency) and window 1000 (max throughput; zmq's own high-water
// marks also bound the queue). The ipc socket file is unlinked at the end (zmq leaves it).
// Usage: peer_zmq [--seconds S] [--window W (throughput run)] [--only latency|throughput]
//        env PEER_ZMQ_DIR: directory for the ipc socket (default /tmp)
#include "../floor/common.h"

#include <zmq.h>

using namespace floorbench;

namespace {

std::string g_endpoint, g_path;

struct Push {
    void* ctx = zmq_ctx_new();
    void* s = zmq_socket(ctx, ZMQ_PUSH);
    Push() {
        if (zmq_connect(s, g_endpoint.c_str()) != 0) { std::fprintf(stderr, "zmq_connect: %s\n", zmq_strerror(errno)); std::exit(2); }
    }
    void send(const Msg64& m) {
        while (zmq_send(s, &m, sizeof m, 0) < 0 && errno == EINTR) {}
    }
    ~Push() { int l = 0; zmq_setsockopt(s, ZMQ_LINGER, &l, sizeof l); zmq_close(s); zmq_ctx_term(ctx); }
};
struct Pull {
    void* ctx = zmq_ctx_new();
    void* s = zmq_socket(ctx, ZMQ_PULL);
    Pull() {
        if (zmq_bind(s, g_endpoint.c_str()) != 0) { std::fprintf(stderr, "zmq_bind %s: %s\n", g_endpoint.c_str(), zmq_strerror(errno)); std::exit(2); }
    }
    bool recv(Msg64& m) {
        for (;;) {
            const int n = zmq_recv(s, &m, sizeof m, 0);
            if (n == int(sizeof m)) return true;
            if (n < 0 && errno == EINTR) continue;
            return false;
        }
    }
    ~Pull() { zmq_close(s); zmq_ctx_term(ctx); }
};

}  // namespace

int main(int argc, char** argv) {
    const Opts o = parse_opts(argc, argv);
    const char* dir = std::getenv("PEER_ZMQ_DIR");
    g_path = std::string(dir ? dir : "/tmp") + "/peer-zmq-" + std::to_string(getpid()) + ".ipc";
    g_endpoint = "ipc://" + g_path;
    int rc = 0;
    if (wanted(o, "latency"))
        rc |= run_notify(o, "zeromq", "push_pull_window1", "parked", 1, false, [] { return Push(); },
                         [] { return Pull(); });
    unlink(g_path.c_str());
    if (wanted(o, "throughput"))
        rc |= run_notify(o, "zeromq", "push_pull_window" + std::to_string(o.window ? o.window : 1000), "parked",
                         o.window ? o.window : 1000, false, [] { return Push(); }, [] { return Pull(); });
    unlink(g_path.c_str());
    return rc;
}
