// SPDX-License-Identifier: MIT
// ByteView: the one way every call that takes bytes takes them (store puts, producer sends,
// job outputs), whatever the caller holds them in.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ranges>
#include <span>
#include <string_view>
#include <type_traits>

namespace fabric_shm {

/// A non-owning view of bytes, like std::string_view: valid while what it views lives (a
/// call's argument lives until the call returns). Converts implicitly from every contiguous
/// container of one-byte elements: std::span<const uint8_t>, std::span<const std::byte>,
/// std::string_view, std::string, std::vector<uint8_t>, std::vector<std::byte>, std::array,
/// and from a NUL-terminated C string (without its NUL).
class ByteView {
public:
    constexpr ByteView() noexcept = default;
    ByteView(const void* data, size_t size) noexcept : data_(static_cast<const uint8_t*>(data)), size_(size) {}
    /// Any contiguous, sized range of one-byte trivially copyable elements.
    template <class Range>
        requires(!std::same_as<std::remove_cvref_t<Range>, ByteView> && std::ranges::contiguous_range<Range> &&
                 std::ranges::sized_range<Range> && sizeof(std::ranges::range_value_t<Range>) == 1 &&
                 std::is_trivially_copyable_v<std::ranges::range_value_t<Range>>)
    ByteView(const Range& range) noexcept  // NOLINT(google-explicit-constructor): implicit by design
        : data_(reinterpret_cast<const uint8_t*>(std::ranges::data(range))), size_(std::ranges::size(range)) {}
    /// A C string, without its terminating NUL.
    ByteView(const char* text) noexcept  // NOLINT(google-explicit-constructor)
        : data_(reinterpret_cast<const uint8_t*>(text)), size_(text ? std::strlen(text) : 0) {}

    const uint8_t* data() const noexcept { return data_; }
    size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    const uint8_t* begin() const noexcept { return data_; }
    const uint8_t* end() const noexcept { return data_ + size_; }
    /// ByteView is itself a contiguous range: std::span<const uint8_t> converts from it too.
    std::span<const uint8_t> span() const noexcept { return {data_, size_}; }
    std::span<const std::byte> as_bytes() const noexcept { return {reinterpret_cast<const std::byte*>(data_), size_}; }
    std::string_view str() const noexcept { return {reinterpret_cast<const char*>(data_), size_}; }

private:
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace fabric_shm
