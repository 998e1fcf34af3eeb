// SPDX-License-Identifier: MIT
// Fuzzes message/envelope decoding: what a consumer does with a partition ring that another
// (possibly malicious or crashed) process wrote. At start-up a real pool with one topic
// (1 partition, 8 slots of 256 bytes, overwrite mode) is filled with keyed messages that
// carry headers, and its bytes are kept. Each input is a list of 12-byte patches
// {u24 offset, u8 length 1-8, 8 value bytes} applied inside the partition region (offset
// modulo the region length: slot state words, envelope offsets, key/header/value lengths,
// encoded headers) or, when the first byte is odd, anywhere in the topic's regions. Then the
// topic's region-kind check runs as fabric-shm-dump --check would, the reaper's dry walk, an
// observer Consumer's polls (it seeks to the earliest offset and polls everything, decoding
// every header of every message), the reaper's real walk, and a second observer's polls. The
// first observer meets what the damage left, claims of dead owners included, and repairs
// them itself; the second meets what the reaper repaired. Where a poll stops at a claim in
// progress, the observer sleeps a little over its claim timeout (1 ms) and polls again, at
// most twice: its liveness probe then skips a dead owner's claim, and its timeout quarantines
// the claim of an owner that may be alive.
// In the template, slot s of the 8 sits at partition offset 1024 + 256 s (its state word,
// little-endian: state << 61 | lap << 32 | owner token), offsets 3..10 are held (slots 3..7
// lap 0, slots 0..2 lap 1) and the tail is 11 (partition offset 128). Every word names the
// template's creator, whose registration (its registry slot follows the pid) stays live in
// the template: rewriting only a word's byte 7 (0x40 published -> 0x20 claimed) makes a claim
// whose owner looks alive; owner 0, or a token whose generation no registry slot has, is dead.
// Two canary regions of a fixed pattern lie on either side of the topic's regions.
// Properties: no crash, no sanitizer report, every header's name and value lie inside its
// message's header bytes, no message is longer than its slot, and no
// byte of the data area outside the topic's regions changed: whatever a damaged ring, header or
// partition ref says, a repair or a reader writes only inside the topic it damaged (a sanitizer
// sees only the mapping's edges, not a write into a neighbouring region).
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fabric_shm/consumer.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "mq/topic_layout.h"
#include "canary_pool.h"
#include "pool_impl.h"
#include "region_kinds.h"

using namespace fabric_shm;

namespace {

constexpr const char* kPool = "ft";
fuzz::CanaryPool g_pool("fuzz_topic", kPool);
std::vector<fuzz::Span> g_partitions, g_topic;
/// The observers' claim timeout, short enough to pass within an input: a claim whose owner may
/// be alive is quarantined after it (the default, 2 s, would never pass).
constexpr Duration kClaimTimeout = std::chrono::milliseconds(1);
/// A poll stopped at a claim is retried after this: over the claim timeout and over the
/// consumer's 1 ms wait before it probes the owner's liveness (consumer.cpp kProbeAfterNs).
constexpr long kStuckSleepNs = 1'200'000;
constexpr int kMaxStuckSleeps = 2;

void build_template() {
    Pool pool_handle = g_pool.create();
    Pool* pool = &pool_handle;
    const Region before = g_pool.canary(*pool, "canary-before");
    TopicConfig tc;
    tc.num_partitions = 1;
    tc.partition_capacity = 8;
    tc.partition_stride = 256;
    tc.on_full = OnFull::overwrite;
    if (Status s = TopicManager(*pool).create("t", tc); !s) g_pool.die(s.error().message);
    auto producer = Producer::open(*pool, "t");
    if (!producer) g_pool.die(producer.error().message);
    for (int i = 0; i < 11; ++i) {  // wraps the 8-slot ring once
        const std::string key = "key-" + std::to_string(i);
        const std::string value = "fabric://" + std::string(kPool) + "/b/object-" + std::to_string(i);
        const std::string attempt = std::to_string(i);
        const MessageHeader headers[] = {{"content-type", "text/plain"}, {"attempt", attempt}};
        OutgoingMessage m;
        m.key = {reinterpret_cast<const uint8_t*>(key.data()), key.size()};
        m.value = {reinterpret_cast<const uint8_t*>(value.data()), value.size()};
        m.headers = headers;
        auto r = producer->send_to(0, m);
        if (!r) g_pool.die(r.error().message);
    }
    const Region after = g_pool.canary(*pool, "canary-after");
    for (const RegionInfo& r : pool->regions()) {
        if (r.kind == uint32_t(RegionKind::partition)) g_partitions.push_back({r.offset, r.length});
        if (r.kind == uint32_t(RegionKind::topic) || r.kind == uint32_t(RegionKind::partition) ||
            r.kind == uint32_t(RegionKind::group))
            g_topic.push_back({r.offset, r.length});
    }
    if (g_partitions.empty()) g_pool.die("no partition region");
    g_pool.capture(*pool, g_topic, {&before, &after});
}

/// True when the slot of the consumer's position in partition 0 shows a claim of that
/// offset's lap: the poll stopped at a claim in progress, which only time resolves. Reads the
/// geometry from the (possibly damaged) partition header the consumer opened with, bounded by
/// the partition region.
bool stopped_at_claim(const Pool& pool, const Consumer& consumer) {
    auto pos = consumer.position(0);
    if (!pos) return false;
    const fuzz::Span& part = g_partitions[0];
    const auto* base = reinterpret_cast<const uint8_t*>(detail::pool_base(pool)) + part.begin;
    uint64_t capacity = 0, stride = 0;
    std::memcpy(&capacity, base + offsetof(mq::PartitionHeader, capacity), 8);
    std::memcpy(&stride, base + offsetof(mq::PartitionHeader, stride), 8);
    if (capacity == 0 || (capacity & (capacity - 1)) != 0 || capacity > part.length || stride > part.length)
        return false;
    const uint64_t at = mq::kSlotsOffset + (*pos & (capacity - 1)) * stride;
    if (at > part.length - 8) return false;
    uint64_t word = 0;
    std::memcpy(&word, base + at, 8);
    const uint64_t lap = *pos >> std::countr_zero(capacity);
    return mq::slot_state(word) == mq::kSlotClaimed && mq::slot_lap(word) == (lap & mq::kLapMask);
}

/// An observer seeks to the earliest offset and polls everything, checking what it decodes;
/// a poll stopped at a claim is retried after kStuckSleepNs, at most kMaxStuckSleeps times.
void poll_all(const Pool& pool) {
    ConsumerOptions co;
    co.on_warning = [](std::string_view) {};
    co.claim_timeout = kClaimTimeout;
    auto consumer = Consumer::open(pool, "t", "", co);
    if (!consumer) return;
    if (!consumer->assign_all() || !consumer->seek(SeekPolicy::Earliest())) return;
    MessageBatch batch;
    int sleeps = 0;
    for (int round = 0; round < 4 + kMaxStuckSleeps; ++round) {
        auto n = consumer->poll(batch, 64, Duration{0});
        if (!n) break;
        if (*n == 0 && batch.lost() == 0 && batch.skipped() == 0) {
            if (sleeps == kMaxStuckSleeps || !stopped_at_claim(pool, *consumer)) break;
            ++sleeps;
            const timespec ts{0, kStuckSleepNs};
            nanosleep(&ts, nullptr);
            continue;
        }
        for (const Message& m : batch) {
            (void)m.value_str();
            (void)m.key_str();
            const size_t hc = m.header_count();
            for (size_t i = 0; i < hc; ++i) {
                const MessageHeader h = m.header_at(i);
                const auto* lo = m.headers_raw.data();
                const auto* hi = lo + m.headers_raw.size();
                if (!h.name.empty() && (reinterpret_cast<const uint8_t*>(h.name.data()) < lo ||
                                        reinterpret_cast<const uint8_t*>(h.name.data() + h.name.size()) > hi))
                    std::abort();
                if (!h.value.empty() && (reinterpret_cast<const uint8_t*>(h.value.data()) < lo ||
                                         reinterpret_cast<const uint8_t*>(h.value.data() + h.value.size()) > hi))
                    std::abort();
            }
            (void)m.header("content-type");
            // A message never exceeds its slot: key + headers + value <= stride - envelope.
            if (m.key.size() + m.headers_raw.size() + m.value.size() > 256) std::abort();
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    build_template();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    auto pool = g_pool.open_damaged(data, size, g_topic, g_partitions);
    if (!pool) return 0;
    (void)TopicManager(*pool).describe("t");
    // The reaper's walk over the damaged regions: a dry run reads what a repair would, then a
    // real pass repairs (waiter slots, group rows, partition slots claimed by dead owners);
    // neither may read or write outside its region.
    g_pool.reap_and_check(*pool, /*dry=*/true);
    // An observer before the real reap meets the damaged ring as it is, dead owners' claims
    // included, and repairs what it stops at itself (skip and quarantine records).
    poll_all(*pool);
    g_pool.check_outside_unchanged(*pool, "a consumer's polls before the reaper");
    g_pool.reap_and_check(*pool, /*dry=*/false);
    poll_all(*pool);
    g_pool.check_outside_unchanged(*pool, "a consumer's polls after the reaper");
    return 0;
}
