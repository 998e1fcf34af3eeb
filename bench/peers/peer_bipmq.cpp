// SPDX-License-Identifier: MIT
// Peer: Boost.Interprocess message_queue (Boost 1.74: process-shared mutex + condvars in a
// /dev/shm segment, every message copied in and out), notify scenario: 64-byte messages,
// queue of 1024 x 64 B, one producer process, one consumer process, blocking send/receive.
// Two runs: window 1 (unloaded one-way latency) and window 1000 (max throughput). The
// queue is removed at the end (it would otherwise persist in /dev/shm).
// Usage: peer_bipmq [--seconds S] [--window W (throughput run)] [--only latency|throughput]
#include "../floor/common.h"

#include <boost/interprocess/ipc/message_queue.hpp>

#include <memory>

using namespace floorbench;
namespace bip = boost::interprocess;

namespace {

std::string g_name;

struct Sender {
    std::unique_ptr<bip::message_queue> q{new bip::message_queue(bip::open_only, g_name.c_str())};
    void send(const Msg64& m) { q->send(&m, sizeof m, 0); }
};
struct Receiver {
    std::unique_ptr<bip::message_queue> q{new bip::message_queue(bip::open_only, g_name.c_str())};
    bool recv(Msg64& m) {
        bip::message_queue::size_type got = 0;
        unsigned prio = 0;
        q->receive(&m, sizeof m, got, prio);
        return got == sizeof m;
    }
};

int run(const Opts& o, uint64_t window, const std::string& variant) {
    bip::message_queue::remove(g_name.c_str());
    int rc = 0;
    try {
        bip::message_queue q(bip::create_only, g_name.c_str(), 1024, sizeof(Msg64));
        rc = run_notify(o, "boost_mq", variant, "parked", window, false, [] { return Sender(); },
                        [] { return Receiver(); });
    } catch (const std::exception& e) {
        std::fprintf(stderr, "boost message_queue: %s\n", e.what());
        rc = 2;
    }
    bip::message_queue::remove(g_name.c_str());
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    const Opts o = parse_opts(argc, argv);
    g_name = "peer_bipmq_" + std::to_string(getpid());
    const uint64_t w = o.window ? o.window : 1000;
    int rc = 0;
    if (wanted(o, "latency")) rc |= run(o, 1, "message_queue_window1");
    if (wanted(o, "throughput")) rc |= run(o, w, "message_queue_window" + std::to_string(w));
    return rc;
}
