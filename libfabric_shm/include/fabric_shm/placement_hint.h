// SPDX-License-Identifier: MIT
// PlacementHint: where a put placed an object in the store's heap, for a reader to prefetch.
//
// A worker that reads an object another core has just stored waits on its cache lines one
// after another: the table slot names the block, the block's header gives the payload's size,
// the size places the key, and only then does the payload start to stream in. Each is a
// transfer from the writer's core (a few hundred ns on a virtual machine). The writer knows
// where the object went; sent with the notification (the kHeaderPlacement header), that lets
// MemObjectStore::prefetch start every one of those fetches at once, before the lookup.
//
// Only a hint: nothing is decided on it. pin() and get() look the key up and check the block
// exactly as without it, so a stale hint (the object was overwritten and its block reused), a
// forged one or one from another store costs a few useless prefetches, never a wrong result.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace fabric_shm {

/// The notification header that carries a PlacementHint's text (put_and_notify and
/// fabric-shm-producer send it where it fits the topic's slot; WorkerLoop reads it).
inline constexpr std::string_view kHeaderPlacement = "fabric-at";

class PlacementHint {
public:
    /// No hint: prefetch() does nothing.
    PlacementHint() = default;
    /// A hint from its bits(): the store's block index + 1 in the high 32 bits, the payload's
    /// size (capped at 2^32 - 1) in the low 32. Opaque to callers; any value is safe to use.
    explicit constexpr PlacementHint(uint64_t bits) noexcept : bits_(bits) {}

    constexpr uint64_t bits() const noexcept { return bits_; }
    /// Names no block (its high half is 0): prefetch() does nothing with it.
    constexpr bool empty() const noexcept { return (bits_ >> 32) == 0; }

    /// The header's text: bits() as 16 lowercase hexadecimal digits.
    using Text = std::array<char, 16>;
    Text text() const noexcept;
    /// The hint a header's text names: empty for anything but exactly 16 hexadecimal digits
    /// (a missing or foreign header means "no hint", never an error).
    static PlacementHint parse(std::string_view text) noexcept;

    friend constexpr bool operator==(PlacementHint, PlacementHint) = default;

private:
    uint64_t bits_ = 0;
};

}  // namespace fabric_shm
