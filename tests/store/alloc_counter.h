// SPDX-License-Identifier: MIT
// The heap allocations this test program made: test_store replaces the global operator new
// and new[] with counting ones (alloc_counter.cpp), so every `new` of the program and of the
// library it links is counted.
#pragma once

#include <cstdint>

namespace fabric_shm::test {

/// operator new and new[] calls so far, in all threads of this process (a forked child counts
/// its own from the parent's number on). Under valgrind the library's calls go to valgrind's
/// replacement instead: only the test's own code is counted there.
uint64_t heap_allocations() noexcept;

}  // namespace fabric_shm::test
