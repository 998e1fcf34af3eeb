// SPDX-License-Identifier: MIT
// PlacementHint's header text, eight characters per 64-bit word: the producer formats one and
// the worker parses one per message, so a loop over characters (~160 instructions each way)
// would cost more than the prefetch it carries.
#include "fabric_shm/placement_hint.h"

#include <bit>
#include <cstring>

namespace fabric_shm {

namespace {

constexpr uint64_t kEachByte = 0x0101010101010101ULL;
constexpr uint64_t kHighBits = 0x8080808080808080ULL;

/// The 8 nibbles of x, one per byte, the most significant in the lowest byte (text order).
constexpr uint64_t spread_nibbles(uint32_t x) {
    uint64_t r = x;
    r = (r | (r << 16)) & 0x0000FFFF0000FFFFULL;
    r = (r | (r << 8)) & 0x00FF00FF00FF00FFULL;
    r = (r | (r << 4)) & 0x0F0F0F0F0F0F0F0FULL;  // byte i holds nibble i (least significant first)
    return __builtin_bswap64(r);
}

/// 8 nibble values (0..15) to their lowercase hex digits, byte by byte.
constexpr uint64_t hex_digits(uint64_t nibbles) {
    const uint64_t letters = ((nibbles + 6 * kEachByte) >> 4) & kEachByte;  // 1 where the nibble is >= 10
    return nibbles + '0' * kEachByte + letters * ('a' - '0' - 10);
}

/// The bytes of x in [lo, hi] (every byte of x below 0x80): their high bit set, others clear.
constexpr uint64_t in_range(uint64_t x, uint8_t lo, uint8_t hi) {
    const uint64_t at_least_lo = x + (0x80 - lo) * kEachByte;  // high bit: x >= lo
    const uint64_t above_hi = x + (0x7F - hi) * kEachByte;     // high bit: x > hi
    return at_least_lo & ~above_hi & kHighBits;
}

/// Eight hex digits (either case, text order) to their 32-bit value; false for anything else.
constexpr bool parse_word(uint64_t text, uint32_t* value) {
    if (text & kHighBits) return false;
    const uint64_t lower = text | 0x20 * kEachByte;  // 'A'..'F' -> 'a'..'f'; digits keep their code
    const uint64_t digits = in_range(text, '0', '9');
    const uint64_t letters = in_range(lower, 'a', 'f');
    if ((digits | letters) != kHighBits) return false;
    // A digit's low nibble is its value; a letter's low nibble is its value - 9.
    uint64_t r = __builtin_bswap64((text & 0x0F * kEachByte) + (letters >> 7) * 9);
    r = (r | (r >> 4)) & 0x00FF00FF00FF00FFULL;
    r = (r | (r >> 8)) & 0x0000FFFF0000FFFFULL;
    r = (r | (r >> 16)) & 0x00000000FFFFFFFFULL;
    *value = uint32_t(r);
    return true;
}

static_assert(std::endian::native == std::endian::little, "the words are loaded and stored as little-endian");
static_assert(hex_digits(spread_nibbles(0x0123abcdU)) == 0x6463626133323130ULL, "\"0123abcd\" in text order");

constexpr uint64_t load_word(const char* p) {
    uint64_t w = 0;
    for (int i = 7; i >= 0; --i) w = (w << 8) | uint8_t(p[i]);
    return w;
}
static_assert([] {
    uint32_t v = 0;
    return parse_word(load_word("00C0ffEe"), &v) && v == 0x00c0ffee && !parse_word(load_word("0000000g"), &v) &&
           !parse_word(load_word("/0000000"), &v) && !parse_word(load_word("0000:000"), &v) &&
           !parse_word(load_word("@0000000"), &v) && !parse_word(load_word("G0000000"), &v) &&
           !parse_word(load_word("`0000000"), &v);
}(), "each neighbour of the digit and letter ranges is refused");

}  // namespace

PlacementHint::Text PlacementHint::text() const noexcept {
    const uint64_t high = hex_digits(spread_nibbles(uint32_t(bits_ >> 32)));
    const uint64_t low = hex_digits(spread_nibbles(uint32_t(bits_)));
    Text out;
    std::memcpy(out.data(), &high, 8);
    std::memcpy(out.data() + 8, &low, 8);
    return out;
}

PlacementHint PlacementHint::parse(std::string_view text) noexcept {
    if (text.size() != Text{}.size()) return {};
    uint64_t high_text, low_text;
    std::memcpy(&high_text, text.data(), 8);
    std::memcpy(&low_text, text.data() + 8, 8);
    uint32_t high, low;
    if (!parse_word(high_text, &high) || !parse_word(low_text, &low)) return {};
    return PlacementHint((uint64_t(high) << 32) | low);
}

}  // namespace fabric_shm
