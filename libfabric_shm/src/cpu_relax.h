// SPDX-License-Identifier: MIT
// One step of a spin-wait: tells the core we are spinning (x86 PAUSE, AArch64 YIELD), so a
// sibling hyperthread gets the pipeline and the loop does not flood the memory system. On
// other architectures it is nothing (the loop still re-reads an atomic, which is all the
// correctness needs). The only place in the tree that names an architecture's spin hint.
#pragma once

#include "private.h"

namespace fabric_shm::detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

}  // namespace fabric_shm::detail
