// SPDX-License-Identifier: MIT
// Floor: what a process pays the first time it touches a page of a pool, per 4 KiB page. A
// pool is a file on tmpfs that every process maps; a process that opens it (a worker started
// after a backlog built up, each run of a command-line producer) reaches each page it uses for
// the first time through its own page tables, whatever other processes did before. The
// program writes a 64 MiB tmpfs file through one mapping (its pages then exist and are up to
// date, as a warm pool's are), then, through fresh mappings of it:
//   - first_touch read_written: one read per page (the kernel's fault-around maps 16 pages per
//     fault for reads of pages it holds);
//   - first_touch write_written: one write per page (a write fault maps one page);
//   - first_touch populated_read: the mapping made with MAP_POPULATE (no fault left to take);
//   - second_touch read: another line of each page, through a mapping already touched (a
//     cache miss per page, the reference);
// and, on a second file that was only allocated (fallocate), never written:
//   - first_touch write_fresh: one write per page (a pool just created).
// Each row: pages per second over the pass; percentiles over 16-page windows (the time of a
// window divided by 16); the page faults the process took (getrusage). On bare metal a first
// touch after fault-around costs about a TLB miss; on a VM whose hypervisor fills its own page
// tables per page, each page costs microseconds however the guest's were filled.
// Usage: floor_first_touch [--size BYTES (default 64 MiB)] [--only NAME]
#include "common.h"

#include <fcntl.h>

using namespace floorbench;

namespace {

constexpr uint64_t kPage = 4096, kWindow = 16;

long minor_faults() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/// A tmpfs file of `size` bytes, allocated; written through one mapping first when `written`.
int make_file(const std::string& path, uint64_t size, bool written) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) { std::perror(path.c_str()); std::exit(1); }
    ::unlink(path.c_str());  // nothing left behind, whatever happens next
    if (int err = posix_fallocate(fd, 0, off_t(size)); err != 0) {
        std::fprintf(stderr, "posix_fallocate: %s\n", std::strerror(err));
        std::exit(1);
    }
    if (written) {
        auto* p = static_cast<volatile char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
        if (p == MAP_FAILED) { std::perror("mmap"); std::exit(1); }
        for (uint64_t i = 0; i < size; i += kPage) p[i] = 1;
        ::munmap(const_cast<char*>(p), size);
    }
    return fd;
}

/// One pass over every page of a mapping: `touch(page address)`, timed per 16-page window.
template <class Touch>
void pass(const char* scenario, const char* variant, char* base, uint64_t size, Touch touch) {
    Histogram h;
    const long f0 = minor_faults();
    const uint64_t t0 = now_ns();
    uint64_t t = t0;
    for (uint64_t w = 0; w < size; w += kWindow * kPage) {
        for (uint64_t i = w; i < w + kWindow * kPage && i < size; i += kPage) touch(base + i);
        const uint64_t t1 = now_ns();
        h.record((t1 - t) / kWindow);
        t = t1;
    }
    const uint64_t pages = size / kPage;
    const double secs = double(t - t0) / 1e9;
    Json().s("system", "floor").s("scenario", scenario).s("variant", variant).s("mode", "cpu")
        .u("size", kPage).u("count", pages).d("seconds", secs).d("throughput", double(pages) / secs)
        .s("unit", "pages/s").hist(h).s("latency", "per_page").u("page_faults", uint64_t(minor_faults() - f0))
        .print();
}

char* map(int fd, uint64_t size, int extra_flags = 0) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | extra_flags, fd, 0);
    if (p == MAP_FAILED) { std::perror("mmap"); std::exit(1); }
    return static_cast<char*>(p);
}

}  // namespace

int main(int argc, char** argv) {
    Opts o = parse_opts(argc, argv);
    const uint64_t size = o.size ? (o.size + kPage - 1) / kPage * kPage : (64ull << 20);
    const std::string dir = "/dev/shm/", tag = "floor-first-touch-" + std::to_string(getpid());
    volatile char sink = 0;
    const int written = make_file(dir + tag + "-w", size, true);
    if (wanted(o, "read_written")) {
        char* p = map(written, size);
        pass("first_touch", "read_written", p, size, [&](char* a) { sink = sink + *reinterpret_cast<volatile char*>(a); });
        if (wanted(o, "second_touch"))
            pass("second_touch", "read", p, size, [&](char* a) { sink = sink + *reinterpret_cast<volatile char*>(a + 64); });
        ::munmap(p, size);
    }
    if (wanted(o, "write_written")) {
        char* p = map(written, size);
        pass("first_touch", "write_written", p, size, [](char* a) { *reinterpret_cast<volatile char*>(a) = 2; });
        ::munmap(p, size);
    }
    if (wanted(o, "populated_read")) {
        const uint64_t t0 = now_ns();
        char* p = map(written, size, MAP_POPULATE);
        const uint64_t populate_ns = now_ns() - t0;
        pass("first_touch", "populated_read", p, size, [&](char* a) { sink = sink + *reinterpret_cast<volatile char*>(a); });
        std::fprintf(stderr, "floor_first_touch: MAP_POPULATE took %.0f ns per page\n",
                     double(populate_ns) / double(size / kPage));
        ::munmap(p, size);
    }
    ::close(written);
    if (wanted(o, "write_fresh")) {
        const int fresh = make_file(dir + tag + "-f", size, false);
        char* p = map(fresh, size);
        pass("first_touch", "write_fresh", p, size, [](char* a) { *reinterpret_cast<volatile char*>(a) = 2; });
        ::munmap(p, size);
        ::close(fresh);
    }
    (void)sink;
    return 0;
}
