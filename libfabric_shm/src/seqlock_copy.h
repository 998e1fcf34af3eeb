// SPDX-License-Identifier: MIT
// Byte copies into and out of shared memory that another process may reuse at the same time:
// store heap blocks and topic ring slots (the consumer's envelope copy is the same pattern).
//
// The store's readers are seqlock readers: they copy an object's header, key, trailer or
// payload out of its block without a lock, then re-read the block's word (acquire fence +
// relaxed load, StoreCore::copy_payload_n) and discard the copy if the block was freed or
// reused meanwhile. A writer filling a reused block can therefore overlap a stale reader's
// copy: that race is the design, and its result is never used when torn.
//
// In normal builds these are memcpy/memcmp (full bandwidth: the copy path is the hot path of
// get and put). Under ThreadSanitizer they are relaxed atomic byte accesses, which is what
// the C++ memory model asks of seqlock data (Boehm, "Can seqlocks get along with programming
// language memory models?", 2012): TSan then checks the protocol around the copies (block
// words, pins, stripe locks) instead of reporting the intended overlap. The two variants
// move the same bytes; only the instrumentation differs.
#pragma once

#include "private.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SANITIZE_THREAD__)
#define FABRIC_SHM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FABRIC_SHM_TSAN 1
#endif
#endif

namespace fabric_shm::detail {

/// Copies n bytes out of a block (seqlock read side); validate the block word afterwards.
inline void seqlock_copy_out(void* dst, const void* shm_src, size_t n) noexcept {
#if defined(FABRIC_SHM_TSAN)
    auto* d = static_cast<unsigned char*>(dst);
    auto* s = static_cast<const unsigned char*>(shm_src);
    for (size_t i = 0; i < n; ++i) d[i] = __atomic_load_n(s + i, __ATOMIC_RELAXED);
#else
    if (n) std::memcpy(dst, shm_src, n);
#endif
}

/// Copies n bytes into a block that is loaned to this writer (a stale reader may still look).
inline void seqlock_copy_in(void* shm_dst, const void* src, size_t n) noexcept {
#if defined(FABRIC_SHM_TSAN)
    auto* d = static_cast<unsigned char*>(shm_dst);
    auto* s = static_cast<const unsigned char*>(src);
    for (size_t i = 0; i < n; ++i) __atomic_store_n(d + i, s[i], __ATOMIC_RELAXED);
#else
    if (n) std::memcpy(shm_dst, src, n);
#endif
}

/// Copies n bytes where either side may be a block another process reads or reuses (a copy
/// out of one block, or into a loaned one, through code that serves both).
inline void seqlock_copy(void* dst, const void* src, size_t n) noexcept {
#if defined(FABRIC_SHM_TSAN)
    auto* d = static_cast<unsigned char*>(dst);
    auto* s = static_cast<const unsigned char*>(src);
    for (size_t i = 0; i < n; ++i) __atomic_store_n(d + i, __atomic_load_n(s + i, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
#else
    if (n) std::memcpy(dst, src, n);
#endif
}

/// vec.assign(shm_src, shm_src + n) as one copy (no zero-fill first), seqlock read side.
template <typename Vector>
inline void seqlock_assign(Vector& vec, const void* shm_src, size_t n) {
#if defined(FABRIC_SHM_TSAN)
    vec.resize(n);
    seqlock_copy_out(vec.data(), shm_src, n);
#else
    const auto* s = static_cast<const typename Vector::value_type*>(shm_src);
    vec.assign(s, s + n);
#endif
}

/// memcmp(shm, p, n) == 0 for bytes in a block (seqlock read side).
inline bool seqlock_equal(const void* shm, const void* p, size_t n) noexcept {
#if defined(FABRIC_SHM_TSAN)
    auto* a = static_cast<const unsigned char*>(shm);
    auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i)
        if (__atomic_load_n(a + i, __ATOMIC_RELAXED) != b[i]) return false;
    return true;
#else
    return n == 0 || std::memcmp(shm, p, n) == 0;
#endif
}

}  // namespace fabric_shm::detail
