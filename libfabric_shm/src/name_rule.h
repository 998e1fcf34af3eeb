// SPDX-License-Identifier: MIT
// The naming rule (names.h) and the key rule (uri.h) as predicates: true or false, nothing
// built. Every notification a worker takes is parsed, and every result URI formatted, so the
// passing case is a few vector operations per 16 characters (one table load per character
// where there is no SSE2, or fewer than 16 bytes), inlined; the functions that say
// *why* a value breaks a rule (validate_name, FabricUriView's errors) run only after one of
// these said false, and stay the one source of the messages.
#pragma once

#include "private.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "fabric_shm/names.h"
#include "fabric_shm/uri.h"

namespace fabric_shm::detail {

/// How the scans read: 16 bytes per step where the target has SSE2 and the string is at least
/// 16 bytes long, else a byte at a time. Tests run the bytewise scan on every target, so the
/// fallback is held to the same rule where SSE2 exists.
enum class Scan { vector, bytewise };
#if defined(__SSE2__)
inline constexpr Scan kScan = Scan::vector;
#else
inline constexpr Scan kScan = Scan::bytewise;
#endif

/// Character classes of the rules, one byte per character.
enum : uint8_t {
    kNameCharClass = 1,  ///< [A-Za-z0-9._-]: may appear in a pool, bucket, topic or group name
    kKeyStopClass = 2,   ///< a control character, DEL or '/': what a key scan must look at
};
inline constexpr std::array<uint8_t, 256> kCharClass = [] {
    std::array<uint8_t, 256> t{};
    for (int c = 0; c < 256; ++c) {
        const bool name = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                          c == '_' || c == '-';
        t[size_t(c)] = uint8_t((name ? kNameCharClass : 0) | (c < 0x20 || c == 0x7f || c == '/' ? kKeyStopClass : 0));
    }
    return t;
}();

#if defined(__SSE2__)
/// Bit i set where byte i of `v` is a name character.
inline uint32_t name_char_bits(__m128i v) {
    // Unsigned "x - lo < n" as a signed compare: bias by 128.
    auto below = [](__m128i x, char lo, int n) {
        return _mm_cmplt_epi8(_mm_add_epi8(x, _mm_set1_epi8(char(-128 - lo))), _mm_set1_epi8(char(-128 + n)));
    };
    const __m128i letter = below(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 26);  // A-Z folded onto a-z
    const __m128i digit = below(v, '0', 10);
    const __m128i dash_dot = below(v, '-', 2);  // '-' and '.' are adjacent
    const __m128i underscore = _mm_cmpeq_epi8(v, _mm_set1_epi8('_'));
    return uint32_t(_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(letter, digit), _mm_or_si128(dash_dot, underscore))));
}
/// Bit i set where byte i of `v` is a control character, DEL or '/'.
inline uint32_t key_stop_bits(__m128i v) {
    const __m128i control = _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8(char(-128))), _mm_set1_epi8(char(-128 + 0x20)));
    const __m128i del_or_slash =
        _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f)), _mm_cmpeq_epi8(v, _mm_set1_epi8('/')));
    return uint32_t(_mm_movemask_epi8(_mm_or_si128(control, del_or_slash)));
}
/// The first byte at or after `from` whose bit `bits` leaves clear (`want` = 0: the first
/// whose bit is set), 16 bytes per step. Only whole 16-byte loads inside `s`: the last one
/// ends at s's end and overlaps bytes already judged, which the mask ignores.
template <class Bits>
inline size_t first_from16(std::string_view s, size_t from, Bits bits, bool want) {
    const char* p = s.data();
    for (;;) {
        const size_t at = std::min(from, s.size() - 16);
        uint32_t hit = bits(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at)));
        if (want) hit = ~hit;
        hit &= 0xffffu << (from - at);
        if (hit) return at + size_t(__builtin_ctz(hit));
        if (at + 16 >= s.size()) return s.size();
        from = at + 16;
    }
}
#endif

/// The runs the rules scan for: name characters, and key bytes up to a control byte, DEL or '/'.
enum class Run { name_chars, key_until_stop };

/// Where the run of `run` starting at `from` ends: the first byte at or after `from` outside
/// it (s.size() if none is).
template <Run run, Scan scan>
inline size_t run_end(std::string_view s, size_t from) {
    if (from >= s.size()) return s.size();
#if defined(__SSE2__)
    if (scan == Scan::vector && s.size() >= 16)
        return run == Run::name_chars ? first_from16(s, from, name_char_bits, true)
                                      : first_from16(s, from, key_stop_bits, false);
#endif
    constexpr uint8_t cls = run == Run::name_chars ? kNameCharClass : kKeyStopClass;
    constexpr bool inside = run == Run::name_chars;  // a name runs while in its class, a key while not
    while (from < s.size() && bool(kCharClass[static_cast<unsigned char>(s[from])] & cls) == inside) ++from;
    return from;
}

/// Where the run of name characters starting at `from` ends.
template <Scan scan = kScan>
inline size_t name_chars_from(std::string_view s, size_t from) {
    return run_end<Run::name_chars, scan>(s, from);
}

/// The first control character, DEL or '/' at or after `from` (s.size() if none).
template <Scan scan = kScan>
inline size_t key_stop_from(std::string_view s, size_t from) {
    return run_end<Run::key_until_stop, scan>(s, from);
}

/// The start and length rules of a name whose characters are known to be name characters.
inline bool name_shape_ok(std::string_view name) {
    return !name.empty() && name.size() <= kMaxNameLength && name[0] != '.' && name[0] != '-';
}

/// 1-64 characters of [A-Za-z0-9._-], not starting with '.' or '-' (validate_name's rule).
template <Scan scan = kScan>
inline bool name_ok(std::string_view name) {
    return name_shape_ok(name) && name_chars_from<scan>(name, 0) == name.size();
}

/// A key segment: not empty, not "." or "..".
inline bool key_segment_ok(const char* p, size_t n) {
    return n != 0 && !(p[0] == '.' && (n == 1 || (n == 2 && p[1] == '.')));
}

/// The key rule (FabricUri::parse's) for the bytes of `text` from `from` to its end: 1 to
/// kMaxKeyLength bytes, no control character or DEL, '/'-separated segments that are not empty,
/// "." or "..". Scanning inside the whole text lets a short key take the 16-byte steps too.
template <Scan scan = kScan>
inline bool key_ok_from(std::string_view text, size_t from) {
    if (from >= text.size() || text.size() - from > kMaxKeyLength) return false;
    const char* p = text.data();
    size_t segment = from;
    for (size_t i = key_stop_from<scan>(text, from); i < text.size(); i = key_stop_from<scan>(text, i + 1)) {
        if (p[i] != '/' || !key_segment_ok(p + segment, i - segment)) return false;
        segment = i + 1;
    }
    return key_segment_ok(p + segment, text.size() - segment);
}

template <Scan scan = kScan>
inline bool key_ok(std::string_view key) {
    return key_ok_from<scan>(key, 0);
}

/// Where the parts of a valid "fabric://POOL/BUCKET/KEY" start and end in its text.
struct UriSplit {
    size_t pool_end = 0;    ///< the '/' after the pool (the pool starts after the scheme)
    size_t bucket_end = 0;  ///< the '/' after the bucket (the key starts after it)
};
inline constexpr std::string_view kUriScheme = "fabric://";

/// True, with the split, when `text` is a valid URI by FabricUri::parse's rules: the scheme,
/// a name up to the first '/' (name characters exclude '/', so it is the first), a name up to
/// the second, then a key. False says only "not this way": the caller's checks name why.
template <Scan scan = kScan>
inline bool split_valid_uri(std::string_view text, UriSplit& split) {
    if (!text.starts_with(kUriScheme)) return false;
    const size_t pool_end = name_chars_from<scan>(text, kUriScheme.size());
    if (pool_end >= text.size() || text[pool_end] != '/') return false;
    const size_t bucket_end = name_chars_from<scan>(text, pool_end + 1);
    if (bucket_end >= text.size() || text[bucket_end] != '/') return false;
    if (!name_shape_ok(std::string_view(text.data() + kUriScheme.size(), pool_end - kUriScheme.size())) ||
        !name_shape_ok(std::string_view(text.data() + pool_end + 1, bucket_end - pool_end - 1)) ||
        !key_ok_from<scan>(text, bucket_end + 1))
        return false;
    split.pool_end = pool_end;
    split.bucket_end = bucket_end;
    return true;
}

}  // namespace fabric_shm::detail
