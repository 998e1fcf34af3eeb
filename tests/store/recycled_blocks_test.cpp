// SPDX-License-Identifier: MIT
// RecycledBlocks<T> (src/recycled_blocks.h): the per-thread freed blocks that let a pinned view or
// a loan per message cost no heap allocation. Counted with this program's operator new
// (alloc_counter.cpp).
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "alloc_counter.h"
#include "recycled_blocks.h"

namespace {

using fabric_shm::detail::RecycledBlocks;
using fabric_shm::test::heap_allocations;

// One tag type per test case: each has blocks of its own in every thread.
struct SameThreadTag {
    char bytes[96];
};
struct OtherThreadTag {
    char bytes[96];
};
struct BoundTag {
    char bytes[96];
};

}  // namespace

TEST_CASE("a block a thread keeps is handed back by its next take, without an allocation") {
    using Blocks = RecycledBlocks<SameThreadTag>;
    void* first = Blocks::take(sizeof(SameThreadTag));
    Blocks::keep(first, sizeof(SameThreadTag));
    const uint64_t before = heap_allocations();
    void* again = Blocks::take(sizeof(SameThreadTag));
    CHECK(again == first);
    CHECK(heap_allocations() == before);
    // Another size (a class derived from T) is never kept nor handed out.
    void* other = Blocks::take(2 * sizeof(SameThreadTag));
    CHECK(heap_allocations() == before + 1);
    Blocks::keep(other, 2 * sizeof(SameThreadTag));
    Blocks::keep(again, sizeof(SameThreadTag));
}

TEST_CASE("a block freed on another thread goes to that thread's blocks, and the thread's exit frees them") {
    using Blocks = RecycledBlocks<OtherThreadTag>;
    void* made = Blocks::take(sizeof(OtherThreadTag));
    void* reused = nullptr;
    uint64_t allocations_in_thread = 0;
    std::thread other([&] {
        Blocks::keep(made, sizeof(OtherThreadTag));  // a view or loan dropped on this thread
        const uint64_t before = heap_allocations();
        reused = Blocks::take(sizeof(OtherThreadTag));
        allocations_in_thread = heap_allocations() - before;
        Blocks::keep(reused, sizeof(OtherThreadTag));  // kept at the thread's exit: freed then
    });
    other.join();
    CHECK(reused == made);
    CHECK(allocations_in_thread == 0);
    // This thread kept nothing: its take allocates.
    const uint64_t before = heap_allocations();
    void* mine = Blocks::take(sizeof(OtherThreadTag));
    CHECK(heap_allocations() == before + 1);
    Blocks::keep(mine, sizeof(OtherThreadTag));
}

TEST_CASE("a thread keeps a bounded number of blocks; the ones beyond it are freed") {
    using Blocks = RecycledBlocks<BoundTag>;
    std::vector<void*> blocks;
    for (int i = 0; i < 20; ++i) blocks.push_back(Blocks::take(sizeof(BoundTag)));
    for (void* p : blocks) Blocks::keep(p, sizeof(BoundTag));
    blocks.clear();
    const uint64_t before = heap_allocations();
    for (int i = 0; i < 20; ++i) blocks.push_back(Blocks::take(sizeof(BoundTag)));
    const uint64_t made = heap_allocations() - before;
    CHECK(made > 0);   // not all 20 were kept
    CHECK(made < 20);  // but some were
    for (void* p : blocks) Blocks::keep(p, sizeof(BoundTag));
}
