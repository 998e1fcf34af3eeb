// SPDX-License-Identifier: MIT
// Counting replacements of the global operator new and new[] (the whole test_store program).
// They count, then forward to the definitions they replace (RTLD_NEXT: libstdc++'s, or a
// sanitizer's or valgrind's), and operator delete is left alone, so every block is freed by the
// allocator that made it in every build. The library's own calls to operator new resolve to
// these (the executable comes first in symbol lookup).
#include "alloc_counter.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<uint64_t> g_allocations{0};
using NewFn = void* (*)(std::size_t);
NewFn next_new(const char* symbol) {
    auto fn = reinterpret_cast<NewFn>(dlsym(RTLD_NEXT, symbol));
    if (!fn) std::abort();  // no operator new behind this one: nothing can work
    return fn;
}
}  // namespace

void* operator new(std::size_t n) {
    static const NewFn next = next_new("_Znwm");
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    return next(n);
}
void* operator new[](std::size_t n) {
    static const NewFn next = next_new("_Znam");
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    return next(n);
}

namespace fabric_shm::test {
uint64_t heap_allocations() noexcept { return g_allocations.load(std::memory_order_relaxed); }
}  // namespace fabric_shm::test
