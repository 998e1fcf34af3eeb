// SPDX-License-Identifier: MIT
// Peer: Eclipse iceoryx 2.0.3 (Debian; needs iox-roudi running), zero-copy loan/publish,
// both sides busy-polling take() (spin mode; no WaitSet; PAUSE then sched_yield after 256
// empty polls, see Backoff in common.h):
//  - notify: 64-byte chunks publisher -> subscriber, lossless (WAIT_FOR_CONSUMER /
//    BLOCK_PRODUCER, queue capacity 256). Latency = stamp before loan -> take() returned.
//  - pipeline: the 1 KiB object carried in the chunk: the producer loans a chunk, writes the
//    1 KiB object into it and publishes on Jobs; the worker takes it, CRC-32s the object
//    (ISA-L crc32_gzip_refl, standard CRC-32), loans+publishes a result {seq, crc} on Results,
//    releases the job chunk. Latency = producer's stamp before the loan -> result published.
//    The producer drains Results as it goes (results topic: default discard-oldest policy).
// Runs window 1 (unloaded latency) and window 256 (throughput). Each run is a fresh pair of
// processes (an iceoryx runtime can be initialised once per process).
// Usage: peer_iceoryx [--seconds S] [--window W] [--only NAME]
#include "../floor/common.h"

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/popo/publisher.hpp"
#include "iceoryx_posh/popo/subscriber.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"

#include <isa-l/crc.h>

#include <memory>
#include <thread>

using namespace floorbench;

namespace {

constexpr uint64_t kObject = 1024;
struct Job {
    Msg64 hdr;                   ///< seq + stamp
    unsigned char obj[kObject];  ///< the object, written in place in the chunk
};
struct Result {
    uint64_t seq;
    uint64_t ts_ns;
    uint32_t crc;
};

void init_runtime(const char* role) {
    iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn);
    const std::string name = std::string("fsb-") + role + "-" + std::to_string(getpid());
    iox::runtime::PoshRuntime::initRuntime(iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name.c_str()));
}
iox::popo::PublisherOptions lossless_pub() {
    iox::popo::PublisherOptions po;
    po.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
    return po;
}
iox::popo::SubscriberOptions lossless_sub() {
    iox::popo::SubscriberOptions so;
    so.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
    so.queueCapacity = 256;
    return so;
}
template <class P>
void wait_matched(P& pub) {
    while (!pub.hasSubscribers()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

struct NotifyPub {
    std::unique_ptr<iox::popo::Publisher<Msg64>> pub;
    bool matched = false;
    NotifyPub() {
        init_runtime("pub");
        pub = std::make_unique<iox::popo::Publisher<Msg64>>(
            iox::capro::ServiceDescription{"FabricBench", "Notify", "Msg64"}, lossless_pub());
    }
    void send(const Msg64& m) {
        if (!matched) { wait_matched(*pub); matched = true; }
        for (Backoff b;;) {
            auto r = pub->loan();
            if (r.has_error()) { b.pause(); continue; }
            *r.value().get() = m;
            r.value().publish();
            return;
        }
    }
};
struct NotifySub {
    std::unique_ptr<iox::popo::Subscriber<Msg64>> sub;
    NotifySub() {
        init_runtime("sub");
        sub = std::make_unique<iox::popo::Subscriber<Msg64>>(
            iox::capro::ServiceDescription{"FabricBench", "Notify", "Msg64"}, lossless_sub());
    }
    bool recv(Msg64& m) {
        for (Backoff b;;) {
            auto t = sub->take();
            if (!t.has_error()) { m = *t.value().get(); return true; }
            b.pause();
        }
    }
};

int run_pipeline(const Opts& o, uint64_t window) {
    const std::string variant = "loan_publish_window" + std::to_string(window);
    auto* ctl = new (shared_page()) Ctl{};
    const pid_t child = fork_child([&]() -> int {
        pin(o.cpu_b);
        init_runtime("worker");
        iox::popo::Subscriber<Job> jobs({"FabricBench", "Jobs", "Job1K"}, lossless_sub());
        iox::popo::Publisher<Result> results({"FabricBench", "Results", "Result"});
        ctl_set_ready(ctl);
        const uint64_t cpu0 = cpu_ns_self();
        Meter meter;
        uint64_t n = 0;
        Backoff b;
        for (bool stop = false; !stop;) {
            uint64_t stamp = 0;
            {
                auto t = jobs.take();
                if (t.has_error()) { b.pause(); continue; }
                b = Backoff{};
                const Job& j = *t.value().get();
                if (j.hdr.seq == kStopSeq) { stop = true; continue; }
                const uint32_t crc = crc32_gzip_refl(0, j.obj, kObject);
                auto r = results.loan();
                if (!r.has_error()) {
                    Result* res = r.value().get();
                    res->seq = j.hdr.seq;
                    res->ts_ns = j.hdr.ts_ns;
                    res->crc = crc;
                    r.value().publish();
                }
                stamp = j.hdr.ts_ns;
            }  // the job chunk is released here
            meter.sample(ctl, stamp, now_ns());
            ctl_done(ctl, ++n);
        }
        const uint64_t cpu = cpu_ns_self() - cpu0;
        Json().s("system", "iceoryx").s("scenario", "pipeline").s("variant", variant).s("mode", "spin")
            .u("size", kObject).u("count", meter.measured).d("seconds", meter.seconds())
            .d("throughput", meter.rate()).s("unit", "objects/s").hist(meter.hist)
            .s("latency", "end_to_end_loan_start_to_result_published").u("window", window)
            .u("received", n).u("sent", ctl->total.load()).cpu(ctl, cpu, n).s("crc", "crc32_gzip_refl(isa-l)").print();
        return n == ctl->total.load() ? 0 : 4;
    });
    pin(o.cpu_a);
    init_runtime("producer");
    iox::popo::Publisher<Job> jobs({"FabricBench", "Jobs", "Job1K"}, lossless_pub());
    iox::popo::Subscriber<Result> results({"FabricBench", "Results", "Result"});
    unsigned char object[kObject];
    for (uint64_t i = 0; i < kObject; ++i) object[i] = static_cast<unsigned char>('a' + i % 26);
    ctl_wait_ready(ctl);
    wait_matched(jobs);
    const uint64_t cpu0 = cpu_ns_self();
    Clock clk(o, ctl);
    uint64_t sent = 0, got = 0;
    auto drain = [&] {
        for (auto r = results.take(); !r.has_error(); r = results.take()) ++got;
    };
    for (;;) {
        drain();
        ctl_wait_window(ctl, sent, window, true);
        const uint64_t t0 = now_ns();
        auto r = jobs.loan();
        if (r.has_error()) { sched_yield(); continue; }
        Job* j = r.value().get();
        j->hdr.seq = sent;
        j->hdr.ts_ns = t0;
        object[0] = static_cast<unsigned char>(sent);
        std::memcpy(j->obj, object, kObject);  // the put: write the object into the chunk
        r.value().publish();
        ++sent;
        if (clk.over(t0)) break;
    }
    ctl->total.store(sent, std::memory_order_relaxed);
    ctl->producer_cpu_ns.store(cpu_ns_self() - cpu0, std::memory_order_relaxed);
    for (;;) {
        auto r = jobs.loan();
        if (r.has_error()) { drain(); continue; }
        r.value().get()->hdr.seq = kStopSeq;
        r.value().publish();
        break;
    }
    const int rc = wait_child(child);
    drain();
    return rc;
}

/// Runs fn in a fresh process (one iceoryx runtime per process) and returns its status.
template <class Fn>
int in_fresh_process(Fn fn) {
    return wait_child(fork_child(fn));
}

}  // namespace

int main(int argc, char** argv) {
    const Opts o = parse_opts(argc, argv);
    g_children_run_exit_handlers = true;  // deregister every runtime from RouDi on exit
    const uint64_t w = o.window ? o.window : 256;
    int rc = 0;
    for (uint64_t window : {uint64_t(1), w}) {
        if (wanted(o, "notify_window" + std::to_string(window)))
            rc |= in_fresh_process([&] {
                return run_notify(o, "iceoryx", "loan_publish_window" + std::to_string(window), "spin", window,
                                  true, [] { return NotifyPub(); }, [] { return NotifySub(); });
            });
        if (wanted(o, "pipeline_window" + std::to_string(window)))
            rc |= in_fresh_process([&] { return run_pipeline(o, window); });
    }
    return rc;
}
