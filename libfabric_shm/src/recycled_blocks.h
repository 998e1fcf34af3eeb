// SPDX-License-Identifier: MIT
// RecycledBlocks<T>: a thread's freed heap blocks of one type, reused by its next objects of
// that type. For the handles the hot paths make and drop once per message (a pinned view, a
// loan), whose class declares
//     static void* operator new(size_t n) { return RecycledBlocks<Impl>::take(n); }
//     static void operator delete(void* p, size_t n) noexcept { RecycledBlocks<Impl>::keep(p, n); }
// so that the steady state allocates nothing. A block freed on another thread goes to that
// thread's blocks. A kept block is not freed memory to AddressSanitizer: a use of a dropped view
// or loan through a stale pointer shows there only once the thread's blocks are full or freed.
// Private to the library.
#pragma once

#include "private.h"

#include <cstddef>
#include <new>

namespace fabric_shm::detail {

template <class T>
class RecycledBlocks {
public:
    /// A block of `n` bytes: one this thread kept, or a new one.
    static void* take(size_t n) {
        Blocks& c = t_blocks;
        if (n == sizeof(T) && c.n > 0) return c.blocks[--c.n];
        return ::operator new(n);
    }
    /// Keeps `p` (of `n` bytes) for this thread's next take(), or frees it: beyond kMax kept,
    /// a size that is not T's (a derived class), or once the thread is exiting.
    static void keep(void* p, size_t n) noexcept {
        Blocks& c = t_blocks;
        if (p && n == sizeof(T) && !c.gone && c.n < kMax) {
            if (!c.armed) {
                c.armed = true;
                t_reaper.used = true;  // first use constructs it: its destructor runs at this thread's exit
            }
            c.blocks[c.n++] = p;
            return;
        }
        ::operator delete(p);
    }

private:
    static constexpr int kMax = 8;
    /// Plain data, zero-initialised: the hot path pays one TLS lookup and no initialisation guard.
    struct Blocks {
        void* blocks[kMax];
        int n;
        bool armed, gone;  ///< reaper constructed; reaper ran (the thread is exiting: free directly)
    };
    /// Frees the kept blocks at the thread's exit (constructed by the first keep()).
    struct Reaper {
        volatile bool used = false;
        ~Reaper() {
            Blocks& c = t_blocks;
            while (c.n > 0) ::operator delete(c.blocks[--c.n]);
            c.gone = true;
        }
    };
    static thread_local Blocks t_blocks;
    static thread_local Reaper t_reaper;
};

template <class T>
thread_local typename RecycledBlocks<T>::Blocks RecycledBlocks<T>::t_blocks;
template <class T>
thread_local typename RecycledBlocks<T>::Reaper RecycledBlocks<T>::t_reaper;

}  // namespace fabric_shm::detail
