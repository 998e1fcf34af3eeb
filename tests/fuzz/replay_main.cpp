// SPDX-License-Identifier: MIT
// A fuzz target's inputs without libFuzzer: every file of the seed corpus, then mutations of
// them (bit flips, interesting bytes, inserts, erases, splices, truncations) drawn from a
// seeded generator until a time budget is spent. The test command builds each target this way
// with gcc, in its normal and its ASan+UBSan build, so the targets' checks run on every change
// without a clang build; coverage-guided fuzzing with libFuzzer is scripts/fuzz.sh.
//
//   fuzz_<name>_replay [--seconds S] [--runs N] [--seed N] [--artifact PREFIX] CORPUS_DIR|FILE...
//
// Mutations stop after S seconds (default 5) or N mutations, whichever comes first; the seed
// defaults to 1. When a sanitizer ends the process, or the target aborts, crashes or hangs
// (no input may take 25 s), the input being run is written to PREFIXseed<N>-corpus<I> or
// PREFIXseed<N>-mutation<I> first and its kind and index are printed: run the target on that
// file, or again with the same seed and --runs <I+1>, to reproduce.

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);
// Present when the program runs under ASan/UBSan: called before the sanitizer ends the process.
extern "C" __attribute__((weak)) void __sanitizer_set_death_callback(void (*callback)());

namespace {

// The input being run, which one it is, and where to write it if a sanitizer ends the process.
std::vector<uint8_t> g_current;
std::string g_artifact_prefix;
uint64_t g_seed = 1;
const char* g_kind = "corpus";  // "corpus" or "mutation"
uint64_t g_index = 0;

void write_current_input() {
    if (g_artifact_prefix.empty()) return;
    char path[4096];
    std::snprintf(path, sizeof path, "%sseed%llu-%s%llu", g_artifact_prefix.c_str(),
                  static_cast<unsigned long long>(g_seed), g_kind, static_cast<unsigned long long>(g_index));
    const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    const ssize_t written = ::write(fd, g_current.data(), g_current.size());
    ::close(fd);
    std::fprintf(stderr, "replay: the failing input (%s %llu, %zd bytes) is in %s\n", g_kind,
                 static_cast<unsigned long long>(g_index), written, path);
}

// The target's own checks abort(), which ASan does not intercept by default; a crash outside
// the sanitizers' view and a hang (SIGALRM, armed per input) end the process too.
extern "C" void on_fatal_signal(int sig) {
    write_current_input();
    std::fprintf(stderr, "replay: signal %d while running %s %llu\n", sig, g_kind,
                 static_cast<unsigned long long>(g_index));
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

constexpr unsigned kInputTimeoutSeconds = 25;

/// splitmix64: small, seedable, and the same sequence on every platform.
struct Rng {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    size_t below(size_t n) { return n == 0 ? 0 : size_t(next() % n); }
};

bool read_file(const std::string& path, std::vector<uint8_t>& out) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return false;
    out.clear();
    uint8_t buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        out.insert(out.end(), buf, buf + n);
    }
    ::close(fd);
    return true;
}

/// Every regular file under `path` (or `path` itself), in name order so runs are reproducible.
void collect(const std::string& path, std::vector<std::vector<uint8_t>>& corpus) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) {
        std::fprintf(stderr, "replay: %s: %s\n", path.c_str(), std::strerror(errno));
        std::exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        std::vector<uint8_t> data;
        if (read_file(path, data)) corpus.push_back(std::move(data));
        return;
    }
    std::vector<std::string> names;
    if (DIR* dir = ::opendir(path.c_str())) {
        while (dirent* entry = ::readdir(dir)) {
            if (entry->d_name[0] != '.') names.emplace_back(entry->d_name);
        }
        ::closedir(dir);
    }
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) collect(path + "/" + name, corpus);
}

void mutate(std::vector<uint8_t>& data, const std::vector<std::vector<uint8_t>>& corpus, Rng& rng) {
    static constexpr uint8_t kInteresting[] = {0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x20, 0x40};
    const int steps = 1 + int(rng.below(4));
    for (int step = 0; step < steps; ++step) {
        switch (rng.below(7)) {
            case 0:  // flip one bit
                if (!data.empty()) data[rng.below(data.size())] ^= uint8_t(1u << rng.below(8));
                break;
            case 1:  // an interesting byte
                if (!data.empty()) data[rng.below(data.size())] = kInteresting[rng.below(sizeof kInteresting)];
                break;
            case 2: {  // insert random bytes
                const size_t at = rng.below(data.size() + 1);
                const size_t n = 1 + rng.below(16);
                std::vector<uint8_t> bytes(n);
                for (uint8_t& b : bytes) b = uint8_t(rng.next());
                data.insert(data.begin() + ptrdiff_t(at), bytes.begin(), bytes.end());
                break;
            }
            case 3: {  // erase a range
                if (data.empty()) break;
                const size_t at = rng.below(data.size());
                const size_t n = 1 + rng.below(std::min<size_t>(16, data.size() - at));
                data.erase(data.begin() + ptrdiff_t(at), data.begin() + ptrdiff_t(at + n));
                break;
            }
            case 4: {  // splice a piece of another corpus input
                const std::vector<uint8_t>& other = corpus[rng.below(corpus.size())];
                if (other.empty()) break;
                const size_t from = rng.below(other.size());
                const size_t n = 1 + rng.below(other.size() - from);
                const size_t at = rng.below(data.size() + 1);
                data.insert(data.begin() + ptrdiff_t(at), other.begin() + ptrdiff_t(from),
                            other.begin() + ptrdiff_t(from + n));
                break;
            }
            case 5:  // truncate
                data.resize(rng.below(data.size() + 1));
                break;
            default:  // a little-endian word of an interesting size
                if (data.size() >= 4) {
                    static constexpr uint32_t kWords[] = {0, 1, 0xffffffffu, 0x7fffffffu, 0x80000000u, 4096};
                    const uint32_t w = kWords[rng.below(std::size(kWords))];
                    std::memcpy(data.data() + rng.below(data.size() - 3), &w, 4);
                }
                break;
        }
    }
    if (data.size() > (1u << 20)) data.resize(1u << 20);
}

void run(const std::vector<uint8_t>& input) {
    g_current = input;
    // A copy the target cannot read past (ASan sees the exact size), as libFuzzer does; an empty
    // input still gets a valid pointer, as libFuzzer passes.
    std::vector<uint8_t> exact(g_current);
    static const uint8_t empty = 0;
    ::alarm(kInputTimeoutSeconds);
    LLVMFuzzerTestOneInput(exact.empty() ? &empty : exact.data(), exact.size());
    ::alarm(0);
}

/// A number argument, whole or refused (a typo must not turn into 0 seconds of fuzzing).
double number_arg(const char* self, const std::string& name, const char* value) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(value, &end);
    if (errno != 0 || end == value || *end != '\0' || !(v >= 0)) {
        std::fprintf(stderr, "%s: %s %s is not a non-negative number\n", self, name.c_str(), value);
        std::exit(2);
    }
    return v;
}

[[noreturn]] void usage(const char* self) {
    std::fprintf(stderr, "usage: %s [--seconds S] [--runs N] [--seed N] [--artifact PREFIX] CORPUS_DIR|FILE...\n", self);
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    double seconds = 5;
    uint64_t max_runs = UINT64_MAX;
    std::vector<std::string> paths;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if ((arg == "--seconds" || arg == "--runs" || arg == "--seed" || arg == "--artifact") && i + 1 < argc) {
            const char* value = argv[++i];
            if (arg == "--seconds") seconds = number_arg(argv[0], arg, value);
            else if (arg == "--runs") max_runs = uint64_t(number_arg(argv[0], arg, value));
            else if (arg == "--seed") g_seed = uint64_t(number_arg(argv[0], arg, value));
            else g_artifact_prefix = value;
        } else if (!arg.empty() && arg[0] != '-') {
            paths.push_back(arg);
        } else {
            usage(argv[0]);
        }
    }
    if (paths.empty()) usage(argv[0]);

    std::vector<std::vector<uint8_t>> corpus;
    for (const std::string& path : paths) collect(path, corpus);
    if (corpus.empty()) {
        std::fprintf(stderr, "replay: no inputs under the given paths\n");
        return 2;
    }
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(write_current_input);
    for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGALRM}) ::signal(sig, on_fatal_signal);

    for (size_t i = 0; i < corpus.size(); ++i) {
        g_index = i;
        run(corpus[i]);
    }
    g_kind = "mutation";
    Rng rng{g_seed};
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    uint64_t mutated = 0;
    std::vector<uint8_t> input;
    while (mutated < max_runs && std::chrono::steady_clock::now() < deadline) {
        input = corpus[rng.below(corpus.size())];
        mutate(input, corpus, rng);
        g_index = mutated;
        run(input);
        ++mutated;
    }
    std::printf("replay: %zu corpus inputs and %llu mutations (seed %llu, %.0f s): no failure\n",
                corpus.size(), static_cast<unsigned long long>(mutated),
                static_cast<unsigned long long>(g_seed), seconds);
    return 0;
}
