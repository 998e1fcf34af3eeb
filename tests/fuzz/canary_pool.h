// SPDX-License-Identifier: MIT
// A fuzz target's template pool in a private $FABRIC_SHM_DIR, with canary regions, and the
// check that a damaged structure's repair or reader wrote nothing outside the regions the input
// damaged. ASan sees only the mapping's edges; a write into a neighbouring region inside the
// mapping is seen only by comparing bytes. Used by fuzz_topic and fuzz_store.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fabric_shm/pool.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"
#include "region_kinds.h"

namespace fabric_shm::fuzz {

struct Span {
    uint64_t begin, length;
};

/// Leases far longer than any fuzzing run: a reap that reclaims an expired region writes to it,
/// which the check would take for a stray write.
constexpr Duration kLongTtl = std::chrono::hours(24 * 365);
constexpr uint64_t kCanaryBytes = 8192;

/// `n` bytes of `p`, little-endian.
inline uint32_t le(const uint8_t* p, int n) {
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint32_t(p[i]) << (8 * i);
    return v;
}

/// Applies 12-byte patches {u24 offset, u8 length 1-8, 8 value bytes} to `seg`: record r picks
/// area raw % areas.size(), and the offset within it is (raw / areas.size()) % its length.
inline void apply_patches(std::vector<uint8_t>& seg, const std::vector<Span>& areas, const uint8_t* data, size_t size) {
    for (; size >= 12; data += 12, size -= 12) {
        const uint32_t raw = le(data, 3);
        const Span& area = areas[raw % areas.size()];
        const uint64_t off = area.begin + (raw / areas.size()) % area.length;
        const size_t n = std::min<uint64_t>(1 + data[3] % 8, area.begin + area.length - off);
        std::memcpy(seg.data() + off, data + 4, n);
    }
}

/// The segment file of one pool in a private directory (removed at exit), and the template's
/// bytes once captured.
class CanaryPool {
public:
    /// `target` names the fuzz target in messages ("fuzz_topic"); the directory is
    /// /dev/shm/fabric-fuzz-<target without "fuzz_">-XXXXXX, which scripts/fuzz.sh cleans up
    /// after a crash.
    CanaryPool(const char* target, const char* pool_name) : target_(target), pool_name_(pool_name) {}

    [[noreturn]] void die(const std::string& what) const {
        std::fprintf(stderr, "%s: setup failed: %s\n", target_, what.c_str());
        std::abort();
    }

    /// Makes the directory and creates the pool (long leases).
    Pool create(uint64_t size_bytes = 1 << 20) {
        std::string_view short_name(target_);
        if (short_name.starts_with("fuzz_")) short_name.remove_prefix(5);
        std::string tmpl = "/dev/shm/fabric-fuzz-" + std::string(short_name) + "-XXXXXX";
        if (!mkdtemp(tmpl.data())) die("mkdtemp");
        dir_() = tmpl;
        setenv("FABRIC_SHM_DIR", dir_().c_str(), 1);
        path_() = Pool::segment_path(pool_name_);
        std::atexit([] {
            ::unlink(path_().c_str());
            ::rmdir(dir_().c_str());
        });
        PoolOptions options{pool_name_, size_bytes};
        options.ttl = kLongTtl;
        auto pool = Pool::create(options);
        if (!pool) die(pool.error().message);
        return std::move(*pool);
    }

    /// A region of a fixed pattern, to lie beside the regions under test.
    Region canary(Pool& pool, const char* name) const {
        RegionSpec spec;
        spec.name = name;
        spec.length = kCanaryBytes;
        spec.ttl = kLongTtl;
        spec.init = [](std::byte* data, uint64_t length) {
            for (uint64_t i = 0; i < length; ++i) data[i] = std::byte(0xA5 ^ (i * 131));
            return Status{};
        };
        auto r = pool.create_region(spec);
        if (!r) die(r.error().message);
        return std::move(*r);
    }

    /// Captures the template: the pool's bytes, and the data area outside `tested` (the
    /// regions inputs damage), which must contain every canary.
    void capture(const Pool& pool, std::vector<Span> tested, std::initializer_list<const Region*> canaries) {
        std::sort(tested.begin(), tested.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
        uint64_t at = layout::kDataOffset;
        for (const Span& t : tested) {
            if (t.begin > at) outside_.push_back({at, t.begin - at});
            at = std::max(at, t.begin + t.length);
        }
        if (pool.size() > at) outside_.push_back({at, pool.size() - at});
        for (const Region* c : canaries) {
            const RegionInfo info = pool.region_info(c->ref()).value();
            bool covered = false;
            for (const Span& o : outside_)
                covered |= info.offset >= o.begin && info.offset + info.length <= o.begin + o.length;
            if (!covered) die("canary region '" + info.name + "' overlaps the regions under test");
        }
        const auto* base = reinterpret_cast<const uint8_t*>(detail::pool_base(pool));
        template_.assign(base, base + pool.size());
    }

    const std::vector<uint8_t>& bytes() const { return template_; }

    void write_file(const std::vector<uint8_t>& bytes) const {
        const int fd = ::open(path_().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) die("write " + path_());
        if (::write(fd, bytes.data(), bytes.size()) != ssize_t(bytes.size())) die("short write");
        ::close(fd);
    }

    /// The template with an input's patches (its first byte odd: `odd_areas`, else
    /// `even_areas`; the rest: apply_patches records), opened read-write without the reaper,
    /// and every region's kind check run over it as fabric-shm-dump --check runs them. nullopt
    /// when the damaged segment does not open.
    std::optional<Pool> open_damaged(const uint8_t* data, size_t size, const std::vector<Span>& odd_areas,
                                     const std::vector<Span>& even_areas) const {
        std::vector<uint8_t> seg = template_;
        apply_patches(seg, (data[0] & 1) ? odd_areas : even_areas, data + 1, size - 1);
        write_file(seg);
        OpenOptions oo;
        oo.reap_on_open = false;
        auto pool = Pool::open(pool_name_, oo);
        if (!pool) return std::nullopt;
        for (const RegionInfo& r : pool->regions()) {
            if (const RegionKindOps* ops = region_kind_ops(r.kind); ops && ops->check) {
                std::vector<std::string> violations, in_progress;
                ops->check(*pool, r, violations, in_progress);
            }
        }
        return std::move(*pool);
    }

    /// Aborts, naming the first changed byte, when a byte of the data area outside the tested
    /// regions differs from the template.
    void check_outside_unchanged(const Pool& pool, const char* after_what) const {
        const auto* base = reinterpret_cast<const uint8_t*>(detail::pool_base(pool));
        for (const Span& o : outside_) {
            if (std::memcmp(base + o.begin, template_.data() + o.begin, o.length) == 0) continue;
            uint64_t i = o.begin;
            while (base[i] == template_[i]) ++i;
            std::fprintf(stderr, "%s: after %s, byte %llu (outside the regions under test) is 0x%02x, was 0x%02x\n",
                         target_, after_what, static_cast<unsigned long long>(i), base[i], template_[i]);
            std::abort();
        }
    }

    /// The reaper's walk over the damaged segment (`dry`: reading what a repair would; else
    /// repairing), then check_outside_unchanged: a repair writes only inside its region.
    void reap_and_check(Pool& pool, bool dry) const {
        (void)pool.reap(MonoClock::now(), dry, /*allow_pool_removal=*/false);
        check_outside_unchanged(pool, dry ? "the reaper's dry walk" : "the reaper's walk");
    }

private:
    // Function-local statics: the atexit hook takes no capture.
    static std::string& dir_() {
        static std::string dir;
        return dir;
    }
    static std::string& path_() {
        static std::string path;
        return path;
    }
    const char* target_;
    const char* pool_name_;
    std::vector<Span> outside_;
    std::vector<uint8_t> template_;
};

}  // namespace fabric_shm::fuzz
