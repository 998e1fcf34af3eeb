// SPDX-License-Identifier: MIT
// Floor 4: the recipe's pipeline job (`fabric-shm-bench pipeline --sizes 1K --configs
// spin-1w`) done by a bare single-producer single-consumer ring: no store, no topic, no
// crash safety, no URIs. What is left is the physical work per object:
//  - producer (parent): writes a 16-byte stamp {0, sequence number} over a fixed pattern
//    (byte i = i * 131 + 7, as the pipeline bench), CRC-32 of the 1 KiB (ISA-L
//    crc32_gzip_refl, the library's checksum), copies payload + CRC into the next slot of a
//    ring of cache-line-aligned 1 KiB slots (512 by default, --slots N) and publishes the
//    slot's sequence word (release); when the ring is full it spin-waits for the slot
//    (Backoff, common.h).
//  - consumer (forked child): spin-waits on the slot's sequence word (acquire), CRC-32 of
//    the payload, checks it against the stored CRC and the stamp against the sequence number,
//    writes the 4-byte CRC into a result array of 1024 entries (index = sequence % 1024:
//    the "result put"), then frees the slot (release).
// Closed loop over a fixed count: `--count` objects (default 2,000,000) after a warm-up of
// count / 10 that is drained before the clock starts; throughput = count / (time from the
// drained warm-up to the producer seeing the last slot freed). CPU/object = producer +
// consumer process CPU over the measured objects (both busy-poll: about 2 cores / rate).
// A CRC or stamp mismatch stops both processes and exits non-zero (--corrupt N flips one
// byte of object N after its CRC: a self-test of that check).
// The ring's size is the job's working set: 512 slots (~0.5 MiB) stay in a core's L2, while
// the pipeline bench cycles 8,192 keys of 1 KiB, each put into a fresh block (~8-16 MiB of
// heap). `--slots 8192` runs the floor over that much memory.
// Usage: floor_spsc_pipeline [--count N] [--slots N] [--corrupt N] [--cpu-a N --cpu-b N]
//        (--seconds / --warmup are accepted, as for every floor program, and ignored)
#include "common.h"

#include <isa-l/crc.h>

#include <new>
#include <string_view>

using namespace floorbench;

namespace {

constexpr size_t kPayload = 1024;
constexpr size_t kDefaultSlots = 512;
constexpr size_t kMaxSlots = 65536;
constexpr size_t kResults = 1024; // power of two
constexpr uint64_t kTimeoutNs = 60ull * 1000000000ull;  // per wait: a lost partner ends the run, not the machine

struct alignas(64) Slot {
    std::atomic<uint64_t> seq;  ///< == n: free for object n; == n + 1: object n written (release)
    uint32_t crc;               ///< producer: CRC-32 of payload, written before seq
    char pad[64 - 12];
    alignas(64) unsigned char payload[kPayload];
};
static_assert(sizeof(Slot) == 64 + kPayload, "one header line + 16 payload lines per slot");

struct Ring {
    alignas(64) std::atomic<uint32_t> failed;  ///< either side: 1 = stop (mismatch or timeout)
    uint64_t consumer_cpu_ns;                   ///< consumer: its CPU over the measured objects (read after wait)
    alignas(64) uint32_t results[kResults];    ///< consumer: the 4-byte result "put"
};

struct Stamp {
    uint64_t sched_ns, index;  ///< as bench/scenario_pipeline.cpp; index = sequence number
};
static_assert(sizeof(Stamp) == 16);

/// Spins until ready() (common.h); false if the partner failed or this wait outlasted kTimeoutNs.
template <class Ready>
bool wait_for(Ready ready, const Ring* r) noexcept {
    return spin_until(ready, r->failed, kTimeoutNs);
}

}  // namespace

int main(int argc, char** argv) {
    // Own options first (common.h's parse_opts rejects unknown ones), then the shared ones.
    uint64_t count = 2000000;
    uint64_t corrupt = ~0ull;
    uint64_t slots = kDefaultSlots;
    int n = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if ((a == "--count" || a == "--corrupt" || a == "--slots") && i + 1 < argc) {
            (a == "--count" ? count : a == "--slots" ? slots : corrupt) = parse_u64_option(argv[i], argv[i + 1]);
            ++i;
        } else {
            argv[n++] = argv[i];
        }
    }
    const Opts o = parse_opts(n, argv);
    if (o.size != 0 && o.size != kPayload) {
        std::fprintf(stderr, "floor_spsc_pipeline: only --size %zu is supported\n", kPayload);
        return 2;
    }
    if (count == 0 || count > (1ull << 40)) { std::fprintf(stderr, "floor_spsc_pipeline: --count out of range\n"); return 2; }
    if (slots < 2 || slots > kMaxSlots || (slots & (slots - 1)) != 0) {
        std::fprintf(stderr, "floor_spsc_pipeline: --slots %llu must be a power of two from 2 to %zu\n",
                     (unsigned long long)slots, kMaxSlots);
        return 2;
    }
    const uint64_t mask = slots - 1;
    const uint64_t warmup = count / 10 > slots ? count / 10 : slots;
    const uint64_t total = warmup + count;

    auto* ring = new (shared_page(sizeof(Ring))) Ring{};
    auto* ring_slots = static_cast<Slot*>(shared_page(sizeof(Slot) * slots));
    for (size_t k = 0; k < slots; ++k) {
        new (ring_slots + k) Slot{};
        ring_slots[k].seq.store(k, std::memory_order_relaxed);
    }
    auto* ctl = new (shared_page()) Ctl{};

    const pid_t child = fork_child([&]() -> int {
        pin(o.cpu_b);
        ctl_set_ready(ctl);
        uint64_t cpu0 = cpu_ns_self();
        for (uint64_t i = 0; i < total; ++i) {
            Slot& s = ring_slots[i & mask];
            if (!wait_for([&] { return s.seq.load(std::memory_order_acquire) == i + 1; }, ring)) {  // partner: producer's release
                if (ring->failed.load() == 0) std::fprintf(stderr, "floor_spsc_pipeline: consumer timed out at object %llu\n", (unsigned long long)i);
                ring->failed.store(1);
                return 3;
            }
            const uint32_t crc = crc32_gzip_refl(0, s.payload, kPayload);
            Stamp st;
            std::memcpy(&st, s.payload, sizeof st);
            if (crc != s.crc || st.index != i) {
                std::fprintf(stderr, "floor_spsc_pipeline: %s mismatch at object %llu: stored crc %08x index %llu, "
                             "computed crc %08x\n", crc != s.crc ? "CRC" : "sequence", (unsigned long long)i, s.crc,
                             (unsigned long long)st.index, crc);
                ring->failed.store(1);
                return 5;
            }
            ring->results[i & (kResults - 1)] = crc;          // the result put
            s.seq.store(i + slots, std::memory_order_release);  // free; partner: producer's acquire
            if (i + 1 == warmup) cpu0 = cpu_ns_self();
        }
        ring->consumer_cpu_ns = cpu_ns_self() - cpu0;
        return 0;
    });

    pin(o.cpu_a);
    ctl_wait_ready(ctl);
    alignas(64) unsigned char obj[kPayload];
    for (size_t b = 0; b < kPayload; ++b) obj[b] = static_cast<unsigned char>(b * 131 + 7);
    uint64_t t0 = 0, cpu0 = 0, t_end = 0;
    uint32_t last_crc = 0;
    bool ok = true;
    auto freed = [&](uint64_t i) {  // object i's slot freed by the consumer (and so every earlier one)
        Slot& s = ring_slots[i & mask];
        return wait_for([&] { return s.seq.load(std::memory_order_acquire) == i + slots; }, ring);
    };
    for (uint64_t i = 0; i < total && ok; ++i) {
        if (i == warmup) {  // the measurement starts from a drained ring
            if (!(ok = freed(i - 1))) break;
            t0 = now_ns();
            cpu0 = cpu_ns_self();
        }
        Slot& s = ring_slots[i & mask];
        if (!(ok = wait_for([&] { return s.seq.load(std::memory_order_acquire) == i; }, ring))) break;  // partner: consumer's release
        const Stamp st{0, i};
        std::memcpy(obj, &st, sizeof st);
        last_crc = crc32_gzip_refl(0, obj, kPayload);
        std::memcpy(s.payload, obj, kPayload);
        s.crc = last_crc;
        if (i == corrupt) s.payload[kPayload / 2] ^= 1;
        s.seq.store(i + 1, std::memory_order_release);  // partner: consumer's acquire
    }
    if (ok) {
        ctl->producer_cpu_ns.store(cpu_ns_self() - cpu0, std::memory_order_relaxed);
        ok = freed(total - 1);
        t_end = now_ns();
    }
    if (!ok) ring->failed.store(1);
    const int rc = wait_child(child);
    if (!ok || rc != 0) {
        std::fprintf(stderr, "floor_spsc_pipeline: FAILED (consumer exit %d%s)\n", rc,
                     ok ? "" : ", producer stopped: partner failed or timed out");
        return 1;
    }
    if (ring->results[(total - 1) & (kResults - 1)] != last_crc) {
        std::fprintf(stderr, "floor_spsc_pipeline: FAILED: last result %08x, expected CRC %08x\n",
                     ring->results[(total - 1) & (kResults - 1)], last_crc);
        return 1;
    }
    const double secs = double(t_end - t0) / 1e9;
    Json().s("system", "floor").s("scenario", "spsc_pipeline").s("variant", "shm_spsc_ring_crc32").s("mode", "spin")
        .u("size", kPayload).u("count", count).d("seconds", secs)
        .d("throughput", double(count) / secs).s("unit", "objects/s")
        .s("latency", "none").u("warmup", warmup).u("ring_slots", slots)
        .cpu(ctl, ring->consumer_cpu_ns, count).u("child_rc", uint64_t(rc)).print();
    return 0;
}
