// SPDX-License-Identifier: MIT
// Input enumeration and reading for fabric-shm-producer.
#include "inputs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <iostream>

namespace fabric_shm::workers {

namespace {

std::string base_name(const std::string& path) {
    std::string p = path;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    const size_t slash = p.rfind('/');
    return slash == std::string::npos ? p : p.substr(slash + 1);
}

Result<std::vector<std::string>> expand(const std::string& arg) {
    struct stat st {};
    if (::stat(arg.c_str(), &st) != 0) return errno_error(errno, "input '" + arg + "'");
    if (S_ISREG(st.st_mode)) return std::vector<std::string>{arg};
    if (!S_ISDIR(st.st_mode))
        return make_error(Errc::invalid_argument, "input '" + arg + "' is neither a regular file nor a directory");
    DIR* d = ::opendir(arg.c_str());
    if (!d) return errno_error(errno, "input directory '" + arg + "'");
    std::vector<std::string> files;
    while (dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        const std::string full = arg + (arg.back() == '/' ? "" : "/") + name;
        struct stat fst {};
        if (::stat(full.c_str(), &fst) == 0 && S_ISREG(fst.st_mode)) files.push_back(full);
    }
    ::closedir(d);
    std::sort(files.begin(), files.end());
    return files;
}

Result<InputItem> describe(const std::string& path) {
    struct stat st {};
    // Messages without the path: the producer prints them after it (InputSource::last_path).
    if (::stat(path.c_str(), &st) != 0) return errno_error(errno, "stat");
    if (!S_ISREG(st.st_mode)) return make_error(Errc::invalid_argument, "not a regular file");
    InputItem item;
    item.key = base_name(path);
    item.path = path;
    item.size = uint64_t(st.st_size);
    return item;
}

}  // namespace

Result<InputSource> InputSource::make(const std::vector<std::string>& args, bool stdin_list, uint64_t synthetic,
                                      uint64_t synthetic_size) {
    InputSource s;
    const int modes = (args.empty() ? 0 : 1) + (stdin_list ? 1 : 0) + (synthetic ? 1 : 0);
    if (modes != 1)
        return make_error(Errc::invalid_argument,
                          "give exactly one input: FILE/DIR arguments, --stdin-list, or --synthetic N --size BYTES");
    s.stdin_ = stdin_list;
    s.synthetic_ = synthetic;
    s.synthetic_size_ = synthetic_size;
    for (const auto& a : args) {
        auto files = expand(a);
        if (!files) return std::move(files).error();
        s.paths_.insert(s.paths_.end(), files->begin(), files->end());
    }
    s.total_ = synthetic ? synthetic : s.paths_.size();
    return s;
}

namespace {
/// "synthetic-" and the index in at least six digits, zero-padded (synthetic-000042), into
/// `key` (its capacity kept: no allocation per item).
void synthetic_key(uint64_t index, std::string& key) {
    constexpr std::string_view kPrefix = "synthetic-";
    char digits[20];
    const auto end = std::to_chars(digits, digits + sizeof digits, index).ptr;
    const size_t n = size_t(end - digits), pad = n < 6 ? 6 - n : 0;
    key.assign(kPrefix);
    key.append(pad, '0');
    key.append(digits, n);
}
}  // namespace

Result<bool> InputSource::next(InputItem& item) {
    if (synthetic_) {
        if (made_ >= synthetic_) return false;
        synthetic_key(made_, item.key);
        item.path.clear();
        item.size = synthetic_size_;
        item.index = made_++;
        return true;
    }
    std::string path;
    if (stdin_) {
        std::string line;
        for (;;) {
            if (!std::getline(std::cin, line)) return false;
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (!line.empty()) break;
        }
        path = std::move(line);
    } else {
        if (pos_ >= paths_.size()) return false;
        path = paths_[pos_++];
    }
    last_path_ = path;
    auto described = describe(path);
    if (!described) return std::move(described).error();
    item = std::move(*described);
    return true;
}

Status fill_input(const InputItem& item, std::span<uint8_t> out) {
    if (item.path.empty()) {
        // Eight letters per xorshift step: byte j of the state, v, becomes 'a' + v * 26 / 256.
        // The eight products are made two words at a time (SWAR: v * 26 < 2^16 stays inside
        // its 16-bit lane), then every 64th byte is a newline. Made and stored a letter at a
        // time, they cost a synthetic 1 KiB object ~16,000 instructions, two thirds of the
        // producer's.
        constexpr uint64_t kEvenBytes = 0x00FF00FF00FF00FFull;
        constexpr uint64_t kLetterA = 0x6161616161616161ull;  // 'a' in every byte
        uint64_t x = item.index * 0x9E3779B97F4A7C15ull + 0x1234567ull;
        auto next_letters = [&x]() -> uint64_t {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            const uint64_t even = ((x & kEvenBytes) * 26 >> 8) & kEvenBytes;  // bytes 0, 2, 4, 6
            const uint64_t odd = (((x >> 8) & kEvenBytes) * 26) & ~kEvenBytes;  // bytes 1, 3, 5, 7
            const uint64_t letters = (even | odd) + kLetterA;  // each byte at most 25: no carry
            if constexpr (std::endian::native == std::endian::big) return __builtin_bswap64(letters);
            return letters;  // byte j first in memory
        };
        const size_t n = out.size(), whole = n & ~size_t(7);
        for (size_t i = 0; i < whole; i += 8) {
            const uint64_t letters = next_letters();
            std::memcpy(out.data() + i, &letters, 8);
        }
        if (whole < n) {
            const uint64_t letters = next_letters();
            std::memcpy(out.data() + whole, &letters, n - whole);
        }
        for (size_t i = 63; i < n; i += 64) out[i] = '\n';
        return {};
    }
    const int fd = ::open(item.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno_error(errno, "open");
    size_t got = 0;
    while (got < out.size()) {
        const ssize_t k = ::read(fd, out.data() + got, out.size() - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            const int err = errno;
            ::close(fd);
            if (k < 0) return errno_error(err, "read");
            return make_error(Errc::io_error, "shrank while being read (" + std::to_string(got) + " of " +
                                                  std::to_string(out.size()) + " bytes)");
        }
        got += size_t(k);
    }
    ::close(fd);
    return {};
}

}  // namespace fabric_shm::workers
