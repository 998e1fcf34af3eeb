// SPDX-License-Identifier: MIT
// Floor 5: the recipe's pipeline job (`fabric-shm-bench pipeline --sizes 1K --configs
// spin-1w`) in the store's shape, without the library: the object lives in a block of a heap
// named by a hashed index, and the notification carries only the key and the block. What
// floor_spsc_pipeline leaves out and the product cannot (a key names an object; the object
// outlives its notification; the worker's result is an object too) is here; every check,
// lease, owner, generation and crash-repair step is not. Per object:
//  - producer (parent): key k = i mod 8,192 (the bench's key ring at 1 KiB). Takes the next
//    free block (a FIFO: a block is reused 64 puts after it was retired, 8,256 after its own
//    put), writes its
//    header line {size, CRC, key length}, the payload (a 16-byte stamp over the bench's
//    pattern, CRC-32 by ISA-L as the library's checksum, then copied) and the key's line after
//    the payload (as the store's trailer); swaps the block into the key's index word
//    (release) and retires the block it replaced; then sends {key, block} in the next slot of
//    a ring of 4,096 128-byte slots (the topic's shape) and publishes the slot's sequence word.
//  - consumer (forked child): waits for the slot (acquire), prefetches the named block's
//    header, payload and key lines (the library's placement hint; --no-hint leaves it out),
//    loads the key's index word (acquire), reads the block's header, compares the key, CRCs
//    the payload against the header's CRC and checks the stamp, then puts its 4-byte result:
//    a block of its own heap with a header, the value and the key, swapped into the result
//    key's index word (its own lines). Frees the ring slot (release).
//  --block-words: each block also has an 8-byte state word, eight to a line as in the store:
//    the producer CASes it from free to published when it takes the block and back to free when
//    it retires it (after the last unpin); the consumer adds and removes a pin on it
//    (fetch_add / fetch_sub). The store's pin protocol's lines, without its records.
//  --producer-work NS / --consumer-work NS (0 to 1,000,000): each side also spins NS ns (clock
//    reads) per object, touching no shared line: work of the library's kind (checks, hashing,
//    bookkeeping) without the lines it shares, to tell the two costs apart.
// No reader can see a block reused under it: the ring holds 4,096 notifications and a block
// is retired 8,192 puts after its own, so its reader is done before the retire; the CRC, key
// and stamp checks would report it otherwise.
// Closed loop over a fixed count (--count, default 2,000,000) after a drained warm-up of
// max(count / 10, 16,384); throughput = count / (drained warm-up -> the producer sees the last slot freed).
// A mismatch stops both processes and exits non-zero (--corrupt N flips one payload byte of
// object N after its CRC: a self-test of that check). A wait longer than 60 s (a partner that
// died or stopped) ends the run with an error.
// Usage: floor_store_pipeline [--count N] [--no-hint] [--block-words] [--producer-work NS]
//        [--consumer-work NS] [--corrupt N] [--cpu-a N --cpu-b N]   (--seconds / --warmup are accepted and ignored)
#include "common.h"

#include <isa-l/crc.h>

#include <charconv>
#include <new>
#include <vector>
#include <string_view>

using namespace floorbench;

namespace {

constexpr size_t kPayload = 1024;
constexpr uint64_t kKeys = 8192;             // the pipeline bench's key ring at 1 KiB
constexpr uint64_t kRingSlots = 4096;        // the topic's default partition
constexpr uint64_t kIndexWords = 4 * kKeys * 2;  // inputs + results at a quarter load: a word per line's eighth
constexpr uint64_t kSpareBlocks = 64;        // free blocks beyond one per key
constexpr uint64_t kHeapBlocks = kKeys + kSpareBlocks;
constexpr uint64_t kTimeoutNs = 60ull * 1000000000ull;
static_assert(kRingSlots * 2 <= kKeys, "a block is retired only after its notification was consumed");

struct alignas(64) Block {
    uint64_t size;
    uint32_t crc, key_len;
    char header_rest[64 - 16];
    alignas(64) unsigned char payload[kPayload];
    alignas(64) char key[64];  ///< the key after the payload, as the store's trailer
};
static_assert(sizeof(Block) == 64 + kPayload + 64, "header line, 16 payload lines, key line");

struct alignas(64) ResultBlock {
    uint64_t size;
    uint32_t value, key_len;
    char key[48];  ///< a 4-byte result: header, value and key in one line
};
static_assert(sizeof(ResultBlock) == 64);

struct alignas(128) RingSlot {
    std::atomic<uint64_t> seq;  ///< == n: free for notification n; == n + 1: written (release)
    uint64_t key, block;
    char rest[128 - 24];
};
static_assert(sizeof(RingSlot) == 128);

struct Shared {
    alignas(64) std::atomic<uint32_t> failed;   ///< either side: 1 = stop
    uint64_t consumer_cpu_ns;
    uint32_t last_result;                        ///< consumer: the value of the last result put
    alignas(64) std::atomic<uint64_t> index[kIndexWords];  ///< key -> block + 1 (0: none)
    alignas(64) std::atomic<uint64_t> words[kHeapBlocks];  ///< --block-words: state | pin count
    alignas(64) RingSlot ring[kRingSlots];
    Block heap[kHeapBlocks];                     ///< the producer's objects
    ResultBlock results[kKeys + kSpareBlocks];   ///< the consumer's results
};

struct Stamp {  ///< the pipeline bench's stamp; no schedule here (sched_ns 0)
    uint64_t sched_ns, index;
};

/// The index word of a key: a multiplicative hash, so consecutive keys land on scattered
/// lines as in the store's table. Inputs and results share the index.
uint64_t index_of(uint64_t key, bool result) {
    const uint64_t h = (key + (result ? kKeys : 0) + 1) * 0x9E3779B97F4A7C15ull;
    return h >> (64 - 16);  // kIndexWords = 65,536
}
static_assert(kIndexWords == 65536);

/// The bench's key text ("obj-N"), formatted without a locale (std::to_chars).
int key_text(char* out, uint64_t key) {
    std::memcpy(out, "obj-", 4);
    return int(std::to_chars(out + 4, out + 24, key).ptr - out);
}

/// Spins until ready() (common.h); false if the partner failed or this wait outlasted kTimeoutNs.
template <class Ready>
bool wait_for(Ready ready, const Shared* s) noexcept {
    return spin_until(ready, s->failed, kTimeoutNs);
}

/// A free-block FIFO private to one side (wrapped by comparison: no division per object, as in
/// the library's allocator).
struct FreeFifo {
    uint32_t* ring;
    uint64_t cap, head = 0, tail = 0;
    uint32_t pop() {
        const uint32_t b = ring[head];
        head = head + 1 == cap ? 0 : head + 1;
        return b;
    }
    void push(uint32_t b) {
        ring[tail] = b;
        tail = tail + 1 == cap ? 0 : tail + 1;
    }
};

constexpr uint64_t kWordPublished = 1ull << 32;  // --block-words: state in the high half, pins low
constexpr uint64_t kMaxWorkNs = 1000000;

/// Spends `ns` of this core's time without touching a shared line.
void work(uint64_t ns) noexcept {
    if (ns == 0) return;
    for (const uint64_t until = now_ns() + ns; now_ns() < until;) {
    }
}

}  // namespace

int main(int argc, char** argv) {
    uint64_t count = 2000000, corrupt = ~0ull, producer_work = 0, consumer_work = 0;
    bool hint = true, block_words = false;
    int n = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--count" || a == "--corrupt" || a == "--producer-work" || a == "--consumer-work") {
            if (i + 1 >= argc) { std::fprintf(stderr, "floor_store_pipeline: %s needs a value\n", argv[i]); return 2; }
            (a == "--count" ? count : a == "--corrupt" ? corrupt : a == "--producer-work" ? producer_work : consumer_work) =
                parse_u64_option(argv[i], argv[i + 1]);
            ++i;
        } else if (a == "--no-hint") {
            hint = false;
        } else if (a == "--block-words") {
            block_words = true;
        } else {
            argv[n++] = argv[i];
        }
    }
    const Opts o = parse_opts(n, argv);
    if (o.size != 0 && o.size != kPayload) {
        std::fprintf(stderr, "floor_store_pipeline: only --size %zu is supported\n", kPayload);
        return 2;
    }
    if (count == 0 || count > (1ull << 40)) { std::fprintf(stderr, "floor_store_pipeline: --count out of range\n"); return 2; }
    if (producer_work > kMaxWorkNs || consumer_work > kMaxWorkNs) {
        std::fprintf(stderr, "floor_store_pipeline: --producer-work / --consumer-work at most %llu ns\n",
                     (unsigned long long)kMaxWorkNs);
        return 2;
    }
    const uint64_t warmup = count / 10 > 2 * kKeys ? count / 10 : 2 * kKeys;
    const uint64_t total = warmup + count;

    // Every key, input and result, has an index word of its own (the hash spreads the 16,384
    // keys over 65,536 words without a collision: checked, since nothing else would notice).
    {
        std::vector<bool> taken(kIndexWords);
        for (uint64_t k = 0; k < kKeys; ++k)
            for (const bool result : {false, true}) {
                if (taken[index_of(k, result)]) {
                    std::fprintf(stderr, "floor_store_pipeline: index words collide at key %llu\n", (unsigned long long)k);
                    return 2;
                }
                taken[index_of(k, result)] = true;
            }
    }
    auto* sh = new (shared_page(sizeof(Shared))) Shared;  // zeroed by shared_page
    for (uint64_t k = 0; k < kRingSlots; ++k) sh->ring[k].seq.store(k, std::memory_order_relaxed);
    auto* ctl = new (shared_page()) Ctl{};

    const pid_t child = fork_child([&]() -> int {
        pin(o.cpu_b);
        std::vector<uint32_t> free_ring(kKeys + kSpareBlocks);
        FreeFifo free{free_ring.data(), free_ring.size()};
        for (uint32_t b = 0; b < kKeys + kSpareBlocks; ++b) free.push(b);
        char expect_key[24];
        ctl_set_ready(ctl);
        uint64_t cpu0 = cpu_ns_self();
        for (uint64_t i = 0; i < total; ++i) {
            RingSlot& slot = sh->ring[i % kRingSlots];
            if (!wait_for([&] { return slot.seq.load(std::memory_order_acquire) == i + 1; }, sh)) {
                if (sh->failed.load() == 0)
                    std::fprintf(stderr, "floor_store_pipeline: consumer timed out at object %llu\n", (unsigned long long)i);
                sh->failed.store(1);
                return 3;
            }
            const uint64_t key = slot.key;
            work(consumer_work);
            if (hint && slot.block < kHeapBlocks) {  // the placement hint: every line of the object at once
                const auto* p = reinterpret_cast<const char*>(&sh->heap[slot.block]);
                for (size_t off = 0; off < sizeof(Block); off += 64) __builtin_prefetch(p + off);
            }
            const uint64_t at = sh->index[index_of(key, false)].load(std::memory_order_acquire);  // partner: producer's exchange
            const uint64_t b = at - 1;
            if (at == 0 || b >= kHeapBlocks) {
                std::fprintf(stderr, "floor_store_pipeline: key %llu not in the index\n", (unsigned long long)key);
                sh->failed.store(1);
                return 5;
            }
            if (block_words) sh->words[b].fetch_add(1, std::memory_order_acq_rel);  // pin
            const Block& blk = sh->heap[b];
            const int klen = key_text(expect_key, key);
            const uint32_t crc = crc32_gzip_refl(0, blk.payload, kPayload);
            Stamp st;
            std::memcpy(&st, blk.payload, sizeof st);
            if (blk.key_len != uint32_t(klen) || std::memcmp(blk.key, expect_key, size_t(klen)) != 0 ||
                blk.size != kPayload || crc != blk.crc || st.index != i) {
                std::fprintf(stderr, "floor_store_pipeline: mismatch at object %llu: crc %08x against %08x, index %llu\n",
                             (unsigned long long)i, crc, blk.crc, (unsigned long long)st.index);
                sh->failed.store(1);
                return 5;
            }
            if (block_words) sh->words[b].fetch_sub(1, std::memory_order_release);  // unpin
            // The result put: a block of the consumer's own heap, swapped into the result key's word.
            const uint32_t r = free.pop();
            ResultBlock& rb = sh->results[r];
            rb.size = sizeof crc;
            rb.value = crc;
            rb.key_len = uint32_t(klen);
            std::memcpy(rb.key, expect_key, size_t(klen));
            const uint64_t old = sh->index[index_of(key, true)].exchange(r + 1, std::memory_order_acq_rel);
            if (old != 0) free.push(uint32_t(old - 1));
            sh->last_result = crc;
            slot.seq.store(i + kRingSlots, std::memory_order_release);  // free; partner: producer's acquire
            if (i + 1 == warmup) cpu0 = cpu_ns_self();
        }
        sh->consumer_cpu_ns = cpu_ns_self() - cpu0;
        return 0;
    });

    pin(o.cpu_a);
    ctl_wait_ready(ctl);
    std::vector<uint32_t> free_ring(kHeapBlocks);
    FreeFifo free{free_ring.data(), free_ring.size()};
    for (uint32_t b = 0; b < kHeapBlocks; ++b) free.push(b);
    alignas(64) unsigned char obj[kPayload];
    for (size_t b = 0; b < kPayload; ++b) obj[b] = static_cast<unsigned char>(b * 131 + 7);
    uint64_t t0 = 0, cpu0 = 0, t_end = 0;
    uint32_t last_crc = 0;
    bool ok = true;
    auto freed = [&](uint64_t i) {  // notification i consumed (and so every earlier one)
        RingSlot& s = sh->ring[i % kRingSlots];
        return wait_for([&] { return s.seq.load(std::memory_order_acquire) == i + kRingSlots; }, sh);
    };
    for (uint64_t i = 0; i < total && ok; ++i) {
        if (i == warmup) {
            if (!(ok = freed(i - 1))) break;
            t0 = now_ns();
            cpu0 = cpu_ns_self();
        }
        const uint64_t key = i % kKeys;
        work(producer_work);
        // The put: a fresh block, filled, then swapped into the key's index word.
        const uint32_t b = free.pop();
        Block& blk = sh->heap[b];
        if (block_words) {  // free and unpinned: its retire waited for the last unpin
            ok = wait_for([&] {
                uint64_t w = 0;
                return sh->words[b].compare_exchange_strong(w, kWordPublished, std::memory_order_acq_rel);
            }, sh);
            if (!ok) break;
        }
        const Stamp st{0, i};
        std::memcpy(obj, &st, sizeof st);
        last_crc = crc32_gzip_refl(0, obj, kPayload);
        std::memcpy(blk.payload, obj, kPayload);
        if (i == corrupt) blk.payload[kPayload / 2] ^= 1;
        blk.size = kPayload;
        blk.crc = last_crc;
        blk.key_len = uint32_t(key_text(blk.key, key));
        const uint64_t old = sh->index[index_of(key, false)].exchange(b + 1, std::memory_order_acq_rel);  // partner: consumer's acquire
        if (old != 0) {
            if (block_words)  // retire: wait out a pin (none is left: see the file's comment), then free
                ok = wait_for([&] {
                    uint64_t w = kWordPublished;
                    return sh->words[old - 1].compare_exchange_strong(w, 0, std::memory_order_acq_rel);
                }, sh);
            if (!ok) break;
            free.push(uint32_t(old - 1));
        }
        // The notification: {key, block} in the next ring slot.
        RingSlot& s = sh->ring[i % kRingSlots];
        if (!(ok = ok && wait_for([&] { return s.seq.load(std::memory_order_acquire) == i; }, sh))) break;
        s.key = key;
        s.block = b;
        s.seq.store(i + 1, std::memory_order_release);  // partner: consumer's acquire
    }
    if (ok) {
        ctl->producer_cpu_ns.store(cpu_ns_self() - cpu0, std::memory_order_relaxed);
        ok = freed(total - 1);
        t_end = now_ns();
    }
    if (!ok) sh->failed.store(1);
    const int rc = wait_child(child);
    if (!ok || rc != 0) {
        std::fprintf(stderr, "floor_store_pipeline: FAILED (consumer exit %d%s)\n", rc,
                     ok ? "" : ", producer stopped: partner failed or timed out");
        return 1;
    }
    if (sh->last_result != last_crc) {
        std::fprintf(stderr, "floor_store_pipeline: FAILED: last result %08x, expected CRC %08x\n", sh->last_result, last_crc);
        return 1;
    }
    const double secs = double(t_end - t0) / 1e9;
    std::string variant = "shm_index_blocks_crc32";
    if (block_words) variant += "_block_words";
    if (!hint) variant += "_no_hint";
    Json().s("system", "floor").s("scenario", "store_pipeline").s("variant", variant).s("mode", "spin")
        .u("size", kPayload).u("count", count).d("seconds", secs)
        .d("throughput", double(count) / secs).s("unit", "objects/s")
        .s("latency", "none").u("warmup", warmup).u("keys", kKeys)
        .u("producer_work_ns", producer_work).u("consumer_work_ns", consumer_work)
        .cpu(ctl, sh->consumer_cpu_ns, count).u("child_rc", uint64_t(rc)).print();
    return 0;
}
