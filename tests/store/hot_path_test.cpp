// SPDX-License-Identifier: MIT
// The recipe's per-object hot path (producer: put + send; worker: poll, parse the URI, pin,
// CRC, put the result under a second URI, commit) in its steady state makes no system call and
// no heap allocation per object. Counted, not assumed:
//  - allocations: this test binary replaces the global operator new with a counting one
//    (alloc_counter.cpp);
//  - system calls: in a forked child, a seccomp filter traps every system call of the measuring
//    thread (SIGSYS), and the handler counts it and performs it from the one instruction the
//    filter lets through, so the run behaves exactly as without the filter (x86-64 only).
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#endif

#include "../support/test_support.h"
#include "alloc_counter.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/uri.h"

#if defined(__SANITIZE_THREAD__)
#define HOT_PATH_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HOT_PATH_TSAN 1
#endif
#endif

// ---- system call counting (x86-64) -------------------------------------------------------------

#if defined(__x86_64__) && !defined(HOT_PATH_TSAN)
#define HOT_PATH_COUNTS_SYSCALLS 1
// The one system call instruction the filter allows: the SIGSYS handler performs every trapped
// call through it. The filter recognises it by the address after it (seccomp_data's
// instruction_pointer is the return address of the call).
extern "C" long hot_path_raw_syscall(long nr, long a1, long a2, long a3, long a4, long a5, long a6);
extern "C" char hot_path_raw_syscall_return[];
asm(R"(
    .pushsection .text
    .globl hot_path_raw_syscall
    .type hot_path_raw_syscall, @function
hot_path_raw_syscall:
    movq %rdi, %rax
    movq %rsi, %rdi
    movq %rdx, %rsi
    movq %rcx, %rdx
    movq %r8, %r10
    movq %r9, %r8
    movq 8(%rsp), %r9
    syscall
    .globl hot_path_raw_syscall_return
hot_path_raw_syscall_return:
    ret
    .size hot_path_raw_syscall, .-hot_path_raw_syscall
    .popsection
)");

namespace {
constexpr int kSyscallNumbers = 512;
struct SyscallCounts {
    std::atomic<uint64_t> total{0};
    std::atomic<uint64_t> by_nr[kSyscallNumbers] = {};
};
SyscallCounts* g_syscalls = nullptr;  // in the child: points into a MAP_SHARED page

void on_sigsys(int, siginfo_t* info, void* ctx) {
    auto* uc = static_cast<ucontext_t*>(ctx);
    greg_t* r = uc->uc_mcontext.gregs;
    const int nr = info->si_syscall;
    if (g_syscalls) {
        g_syscalls->total.fetch_add(1, std::memory_order_relaxed);
        if (nr >= 0 && nr < kSyscallNumbers) g_syscalls->by_nr[nr].fetch_add(1, std::memory_order_relaxed);
    }
    r[REG_RAX] = hot_path_raw_syscall(nr, r[REG_RDI], r[REG_RSI], r[REG_RDX], r[REG_R10], r[REG_R8], r[REG_R9]);
}

/// From now on every system call of this thread is counted (and still performed). Irrevocable:
/// call it in a forked child only. False when the kernel refuses the filter.
bool count_syscalls_from_now() {
    struct sigaction sa{};
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, nullptr) != 0) return false;
    const uint64_t ip = reinterpret_cast<uint64_t>(hot_path_raw_syscall_return);
    const uint32_t ip_lo = uint32_t(ip), ip_hi = uint32_t(ip >> 32);
    sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        // The signal return itself must not trap.
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_rt_sigreturn, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, instruction_pointer)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ip_lo, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, instruction_pointer) + 4),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ip_hi, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
    };
    sock_fprog fprog{static_cast<unsigned short>(sizeof prog / sizeof prog[0]), prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) == 0;
}
}  // namespace
#endif

namespace {

using namespace fabric_shm;

#if defined(HOT_PATH_COUNTS_SYSCALLS)
bool under_valgrind() {
    const char* preload = std::getenv("LD_PRELOAD");
    return preload && std::strstr(preload, "vgpreload");
}
#endif

/// What the forked child reports.
struct HotPathReport {
    std::atomic<uint32_t> stage{0};   ///< last stage reached (a failing child says where)
    std::atomic<uint64_t> objects{0}, allocations{0}, syscalls_counted{0}, failures{0};
    char error[512] = {};
#if defined(HOT_PATH_COUNTS_SYSCALLS)
    SyscallCounts syscalls;
#endif
};

constexpr uint64_t kKeys = 256;       ///< object ring: every key is overwritten in the steady state
constexpr uint64_t kBatch = 16;       ///< objects per send burst and per poll
constexpr uint64_t kWarmup = 4 * kKeys;
constexpr uint64_t kMeasured = 4096;

void note(HotPathReport& rep, const std::string& what) {
    std::snprintf(rep.error, sizeof rep.error, "%s", what.c_str());
    rep.failures.fetch_add(1);
}

/// The recipe job in one process, `count` objects: the producer's put + send in bursts of
/// kBatch, the worker's poll (spin), URI parse, pin, CRC check, result put, commit.
bool run_objects(HotPathReport& rep, MemObjectStore& store, Producer& prod, Consumer& cons, MessageBatch& batch,
                 const std::vector<FabricUri>& uris, const std::vector<std::string>& texts, std::vector<uint8_t>& object, std::string& result_text,
                 std::string_view pool_name, uint64_t& next, uint64_t count) {
    for (uint64_t done = 0; done < count;) {
        for (uint64_t i = 0; i < kBatch; ++i) {
            const uint64_t k = (next + i) % kKeys;
            std::memcpy(object.data(), &k, sizeof k);
            if (auto v = store.put(uris[k], object); !v) return note(rep, "producer: put: " + v.error().message), false;
            if (auto s = prod.send(texts[k]); !s) return note(rep, "producer: send: " + s.error().message), false;
        }
        next += kBatch;
        uint64_t got = 0;
        for (int spins = 0; got < kBatch; ++spins) {
            if (spins > 1000000) return note(rep, "worker: the sent notifications did not arrive"), false;
            auto n = cons.poll(batch, kBatch - got, Duration::zero());
            if (!n) return note(rep, "worker: poll: " + n.error().message), false;
            for (const Message& m : batch) {
                auto uri = FabricUriView::parse(m.value_str());
                if (!uri) return note(rep, "worker: notification: " + uri.error().message), false;
                auto pinned = store.pin(*uri);
                if (!pinned || !pinned->has_value()) return note(rep, "worker: input missing"), false;
                const PinnedView& view = **pinned;
                const uint32_t crc = crc32(view.bytes().data(), view.bytes().size());
                if (crc != view.info().crc32) return note(rep, "worker: CRC mismatch"), false;
                auto out = FabricUriView::format(result_text, pool_name, "results", uri->key());
                if (!out) return note(rep, "worker: result uri: " + out.error().message), false;
                auto put = store.put(*out, ByteView(reinterpret_cast<const uint8_t*>(&crc), sizeof crc));
                if (!put) return note(rep, "worker: result put: " + put.error().message), false;
            }
            if (Status c = cons.commit(); !c) return note(rep, "worker: commit: " + c.error().message), false;
            got += *n;
        }
        done += kBatch;
    }
    return true;
}

int hot_path_child(const std::string& pool_name, HotPathReport& rep, bool count_syscalls) {
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
    uint64_t next = 0;
    rep.stage = 1;
    // Warm-up: every key and result key exists, buffers have their size, pages are touched.
    if (!run_objects(rep, **store, *prod, *cons, batch, uris, texts, object, result_text, pool_name, next, kWarmup)) return 1;
    rep.stage = 2;
#if defined(HOT_PATH_COUNTS_SYSCALLS)
    if (count_syscalls) {
        g_syscalls = &rep.syscalls;
        if (!count_syscalls_from_now()) return note(rep, std::string("seccomp filter refused: ") + std::strerror(errno)), 1;
        rep.syscalls_counted = 1;
    }
#else
    (void)count_syscalls;
#endif
    const uint64_t allocs0 = test::heap_allocations();
    const bool ok = run_objects(rep, **store, *prod, *cons, batch, uris, texts, object, result_text, pool_name, next, kMeasured);
    const uint64_t allocs1 = test::heap_allocations();
#if defined(HOT_PATH_COUNTS_SYSCALLS)
    g_syscalls = nullptr;  // what follows (leaving) is not the hot path
#endif
    rep.allocations = allocs1 - allocs0;
    rep.objects = kMeasured;
    rep.stage = 3;
    return ok ? 0 : 1;
}

}  // namespace

TEST_CASE("the pipeline's steady state makes no system call and no heap allocation per object") {
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
    const bool count_syscalls =
#if defined(HOT_PATH_COUNTS_SYSCALLS)
        !under_valgrind();
#else
        false;
#endif
    void* mem = mmap(nullptr, sizeof(HotPathReport), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    auto* rep = new (mem) HotPathReport();
    const std::string name = tp.name();
    const pid_t pid = test::fork_child([&] { return hot_path_child(name, *rep, count_syscalls); });
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
#if defined(HOT_PATH_COUNTS_SYSCALLS)
    if (count_syscalls) {
        REQUIRE(rep->syscalls_counted.load() == 1);
        const uint64_t calls = rep->syscalls.total.load();
        std::string which;
        for (int nr = 0; nr < kSyscallNumbers; ++nr)
            if (const uint64_t c = rep->syscalls.by_nr[nr].load())
                which += " nr " + std::to_string(nr) + " x" + std::to_string(c);
        MESSAGE("hot path: " << calls << " system calls over " << kMeasured << " objects" << which);
        CHECK_MESSAGE(calls == 0, calls << " system calls over " << kMeasured << " objects:" << which);
    } else {
        MESSAGE("system calls not counted under valgrind");
    }
#else
    MESSAGE("system calls are counted on x86-64 without TSan only");
#endif
    rep->~HotPathReport();
    munmap(mem, sizeof(HotPathReport));
}
