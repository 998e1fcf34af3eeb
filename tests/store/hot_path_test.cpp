// SPDX-License-Identifier: MIT
// The recipe's per-object hot path (producer: put + send, or a loan filled in place and
// committed + send; worker: poll, parse the URI, pin, CRC, put the result under a second URI,
// commit) in its steady state makes no system call and no heap allocation per object. Counted,
// not assumed:
//  - allocations: this test binary replaces the global operator new with a counting one
//    (alloc_counter.cpp);
//  - system calls: in a forked child, with syscall_counter.h's seccomp filter (x86-64 only).
#include <doctest/doctest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "../support/test_support.h"
#include "alloc_counter.h"
#include "syscall_counter.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/uri.h"

namespace {

using namespace fabric_shm;

/// What the forked child reports.
struct HotPathReport {
    std::atomic<uint32_t> stage{0};   ///< last stage reached (a failing child says where)
    std::atomic<uint64_t> objects{0}, allocations{0}, syscalls_counted{0}, failures{0};
    char error[512] = {};
    test::SyscallCounts syscalls;
};

constexpr uint64_t kKeys = 256;       ///< object ring: every key is overwritten in the steady state
constexpr uint64_t kBatch = 16;       ///< objects per send burst and per poll
constexpr uint64_t kWarmup = 4 * kKeys;
constexpr uint64_t kMeasured = 4096;

/// How the producer side stores its objects.
enum class Mode {
    one_at_a_time,  ///< put + send per object
    batched,        ///< put_many + send_batch per burst; the worker's results by put_many
    loaned,         ///< loan(uri, size), the object written into the loan, commit() + send
};

void note(HotPathReport& rep, const std::string& what) {
    std::snprintf(rep.error, sizeof rep.error, "%s", what.c_str());
    rep.failures.fetch_add(1);
}

/// The batched calls' buffers, sized once (a batch of kBatch objects, notifications, results).
struct BatchBuffers {
    std::vector<std::vector<uint8_t>> objects;
    std::vector<PutRequest> items, results;
    std::vector<BatchStatus> stored, sent;
    std::vector<OutgoingMessage> messages;
    std::vector<std::string> result_texts;
    std::vector<uint32_t> crcs;
    std::vector<PlacementHint> placed;  ///< where each put left its object, sent as a header
    std::vector<PlacementHint::Text> placed_texts;
    std::vector<MessageHeader> placed_headers;
    explicit BatchBuffers(const std::vector<uint8_t>& object)
        : objects(kBatch, object), stored(kBatch), sent(kBatch), messages(kBatch), result_texts(kBatch),
          crcs(kBatch), placed(kBatch), placed_texts(kBatch), placed_headers(kBatch) {
        items.reserve(kBatch);
        results.reserve(kBatch);
    }
};

/// The recipe job in one process, `count` objects: the producer's put + send (with the
/// object's placement hint) in bursts of kBatch, the worker's poll (spin), URI parse, prefetch
/// by the hint, pin, CRC check, result put, commit. With
/// `batched`, the producer calls put_many and send_batch once per burst and the worker stores
/// a poll's results with one put_many. With `loaned`, the producer writes each object into a
/// loan made for its URI and commits it.
bool run_objects(HotPathReport& rep, MemObjectStore& store, Producer& prod, Consumer& cons, MessageBatch& batch,
                 const std::vector<FabricUri>& uris, const std::vector<std::string>& texts, std::vector<uint8_t>& object, std::string& result_text,
                 std::string_view pool_name, uint64_t& next, uint64_t count, BatchBuffers* batched, bool loaned) {
    for (uint64_t done = 0; done < count;) {
        if (batched) {
            BatchBuffers& bb = *batched;
            bb.items.clear();
            for (uint64_t i = 0; i < kBatch; ++i) {
                const uint64_t k = (next + i) % kKeys;
                std::memcpy(bb.objects[i].data(), &k, sizeof k);
                bb.items.push_back({uris[k].view(), bb.objects[i]});
                bb.messages[i] = {ByteView(reinterpret_cast<const uint8_t*>(texts[k].data()), texts[k].size()), {}, {}};
            }
            if (!store.put_many(bb.items, bb.stored, bb.placed)) return note(rep, "producer: put_many failed"), false;
            for (const BatchStatus& st : bb.stored)
                if (!st.ok()) return note(rep, "producer: put_many: " + st.message), false;
            for (uint64_t i = 0; i < kBatch; ++i) {
                bb.placed_texts[i] = bb.placed[i].text();
                bb.placed_headers[i] = {kHeaderPlacement, std::string_view(bb.placed_texts[i].data(), 16)};
                bb.messages[i].headers = std::span(&bb.placed_headers[i], 1);
            }
            if (!prod.send_batch(bb.messages, bb.sent)) return note(rep, "producer: send_batch failed"), false;
            for (const BatchStatus& st : bb.sent)
                if (!st.ok()) return note(rep, "producer: send_batch: " + st.message), false;
        }
        for (uint64_t i = 0; !batched && i < kBatch; ++i) {
            const uint64_t k = (next + i) % kKeys;
            std::memcpy(object.data(), &k, sizeof k);
            PlacementHint placed;
            if (loaned) {
                auto loan = store.loan(uris[k], object.size());
                if (!loan) return note(rep, "producer: loan: " + loan.error().message), false;
                std::memcpy(loan->bytes().data(), object.data(), object.size());
                placed = loan->placement();
                if (auto v = loan->commit(); !v) return note(rep, "producer: commit: " + v.error().message), false;
            } else if (auto v = store.put(uris[k].view(), object, {}, placed); !v) {
                return note(rep, "producer: put: " + v.error().message), false;
            }
            const PlacementHint::Text placed_text = placed.text();
            const MessageHeader header{kHeaderPlacement, std::string_view(placed_text.data(), placed_text.size())};
            if (auto s = prod.send(texts[k], std::span(&header, 1)); !s)
                return note(rep, "producer: send: " + s.error().message), false;
        }
        next += kBatch;
        uint64_t got = 0;
        for (int spins = 0; got < kBatch; ++spins) {
            if (spins > 1000000) return note(rep, "worker: the sent notifications did not arrive"), false;
            auto n = cons.poll(batch, kBatch - got, Duration::zero());
            if (!n) return note(rep, "worker: poll: " + n.error().message), false;
            if (batched) batched->results.clear();
            for (const Message& m : batch) {
                auto uri = FabricUriView::parse(m.value_str());
                if (!uri) return note(rep, "worker: notification: " + uri.error().message), false;
                const PlacementHint hint = PlacementHint::parse(m.header(kHeaderPlacement));
                if (hint.empty()) return note(rep, "worker: notification without its placement hint"), false;
                store.prefetch(hint);
                auto pinned = store.pin(*uri);
                if (!pinned || !pinned->has_value()) return note(rep, "worker: input missing"), false;
                const PinnedView& view = **pinned;
                const uint32_t crc = crc32(view.bytes().data(), view.bytes().size());
                if (crc != view.info().crc32) return note(rep, "worker: CRC mismatch"), false;
                if (batched) {
                    BatchBuffers& bb = *batched;
                    const size_t j = bb.results.size();
                    auto out = FabricUriView::format(bb.result_texts[j], pool_name, "results", uri->key());
                    if (!out) return note(rep, "worker: result uri: " + out.error().message), false;
                    bb.crcs[j] = crc;
                    bb.results.push_back({*out, ByteView(reinterpret_cast<const uint8_t*>(&bb.crcs[j]), sizeof crc)});
                    continue;
                }
                auto out = FabricUriView::format(result_text, pool_name, "results", uri->key());
                if (!out) return note(rep, "worker: result uri: " + out.error().message), false;
                auto put = store.put(*out, ByteView(reinterpret_cast<const uint8_t*>(&crc), sizeof crc));
                if (!put) return note(rep, "worker: result put: " + put.error().message), false;
            }
            if (batched && !batched->results.empty()) {
                const auto statuses = std::span(batched->stored).first(batched->results.size());
                if (!store.put_many(batched->results, statuses)) return note(rep, "worker: put_many failed"), false;
                for (const BatchStatus& st : statuses)
                    if (!st.ok()) return note(rep, "worker: result put_many: " + st.message), false;
            }
            if (Status c = cons.commit(); !c) return note(rep, "worker: commit: " + c.error().message), false;
            got += *n;
        }
        done += kBatch;
    }
    return true;
}

int hot_path_child(const std::string& pool_name, HotPathReport& rep, bool count_syscalls, Mode mode) {
    auto pool = Pool::open(pool_name);
    if (!pool) return note(rep, "open pool: " + pool.error().message), 1;
    auto store = MemObjectStore::attach(*pool);
    if (!store) return note(rep, "attach store: " + store.error().message), 1;
    auto prod = Producer::open(*pool, "hot");
    if (!prod) return note(rep, "producer: " + prod.error().message), 1;
    ConsumerOptions co;
    co.wait = WaitMode::spin;
    auto cons = Consumer::open(*pool, "hot", "workers", co);
    if (!cons) return note(rep, "consumer: " + cons.error().message), 1;
    if (Status st = cons->assign_all(); !st) return note(rep, "assign: " + st.error().message), 1;
    std::vector<std::string> texts;
    std::vector<FabricUri> uris;  // the producer's own URIs (built once, as a producer would)
    for (uint64_t k = 0; k < kKeys; ++k) {
        auto u = FabricUri::make(pool_name, "in", "obj-" + std::to_string(k));
        if (!u) return note(rep, "uri: " + u.error().message), 1;
        uris.push_back(*u);
        texts.push_back(u->to_string());
    }
    std::vector<uint8_t> object(1024);
    for (size_t i = 0; i < object.size(); ++i) object[i] = uint8_t(i * 131 + 7);
    MessageBatch batch;
    std::string result_text;
    BatchBuffers buffers(object);
    BatchBuffers* const bb = mode == Mode::batched ? &buffers : nullptr;
    const bool loaned = mode == Mode::loaned;
    uint64_t next = 0;
    rep.stage = 1;
    // Warm-up: every key and result key exists, buffers have their size, pages are touched.
    if (!run_objects(rep, **store, *prod, *cons, batch, uris, texts, object, result_text, pool_name, next, kWarmup, bb,
                     loaned))
        return 1;
    rep.stage = 2;
    if (count_syscalls) {
        if (!test::count_syscalls_from_now(rep.syscalls))
            return note(rep, std::string("seccomp filter refused: ") + std::strerror(errno)), 1;
        rep.syscalls_counted = 1;
    }
    const uint64_t allocs0 = test::heap_allocations();
    const bool ok =
        run_objects(rep, **store, *prod, *cons, batch, uris, texts, object, result_text, pool_name, next, kMeasured, bb, loaned);
    const uint64_t allocs1 = test::heap_allocations();
    test::stop_counting_syscalls();  // what follows (leaving) is not the hot path
    rep.allocations = allocs1 - allocs0;
    rep.objects = kMeasured;
    rep.stage = 3;
    return ok ? 0 : 1;
}

}  // namespace

namespace {

void check_hot_path(Mode mode) {
    test::TempPool tp("hot-path", 64ull << 20);
    {
        auto store = MemObjectStore::open(tp.pool);
        REQUIRE_MESSAGE(store, store.error().message);
        TopicManager mgr(tp.pool);
        TopicConfig tc;
        tc.num_partitions = 2;
        tc.partition_capacity = 64;
        tc.partition_stride = 256;
        REQUIRE(mgr.create("hot", tc));
        REQUIRE(mgr.register_group("hot", "workers"));
    }
    // Neither valgrind (it runs the system calls itself) nor TSan (it defers signals) can run the
    // seccomp counter; the allocation count holds everywhere.
    const bool count_syscalls = test::syscalls_countable();
    void* mem = mmap(nullptr, sizeof(HotPathReport), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    auto* rep = new (mem) HotPathReport();
    const std::string name = tp.name();
    const pid_t pid = test::fork_child([&] { return hot_path_child(name, *rep, count_syscalls, mode); });
    const int code = test::wait_child(pid, 120000);
    INFO("child stage " << rep->stage.load() << ": " << rep->error);
    REQUIRE(code == 0);
    REQUIRE(rep->failures.load() == 0);
    REQUIRE(rep->objects.load() == kMeasured);
    const uint64_t allocs = rep->allocations.load();
    MESSAGE("hot path, " << kMeasured << " objects of 1 KiB after " << kWarmup << " warm-up: " << allocs
                         << " heap allocations");
    CHECK_MESSAGE(allocs == 0, allocs << " heap allocations over " << kMeasured << " objects");
    // (Under valgrind the library's calls to operator new go to valgrind's replacement, not to
    // the counter: there the count covers the test's own code only.)
    if (count_syscalls) {
        REQUIRE(rep->syscalls_counted.load() == 1);
        const uint64_t calls = rep->syscalls.total.load();
        const std::string which = rep->syscalls.which();
        MESSAGE("hot path: " << calls << " system calls over " << kMeasured << " objects" << which);
        CHECK_MESSAGE(calls == 0, calls << " system calls over " << kMeasured << " objects:" << which);
    } else {
        MESSAGE("system calls are counted on x86-64, without TSan and valgrind, only");
    }
    rep->~HotPathReport();
    munmap(mem, sizeof(HotPathReport));
}

}  // namespace

TEST_CASE("the pipeline's steady state makes no system call and no heap allocation per object") {
    check_hot_path(Mode::one_at_a_time);
}

TEST_CASE("the batched pipeline (put_many, send_batch, result put_many) makes no system call and no heap allocation") {
    check_hot_path(Mode::batched);
}

TEST_CASE("the zero-copy producer (a loan per object, filled in place and committed) makes no system call and no heap allocation") {
    check_hot_path(Mode::loaned);
}
