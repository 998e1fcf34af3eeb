// SPDX-License-Identifier: MIT
#include "futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

namespace fabric_shm::detail {

bool futex_wait(std::atomic<uint32_t>& word, uint32_t expected, uint64_t timeout_ns) noexcept {
    timespec ts{};
    timespec* tsp = nullptr;
    if (timeout_ns) {
        ts.tv_sec = time_t(timeout_ns / 1'000'000'000);
        ts.tv_nsec = long(timeout_ns % 1'000'000'000);
        tsp = &ts;
    }
    // Shared futex (no FUTEX_PRIVATE_FLAG): the word lives in a MAP_SHARED mapping and the
    // kernel keys it by (inode, offset), so waiters in other processes are found.
    const long rc = syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, expected, tsp, nullptr, 0);
    return !(rc == -1 && errno == ETIMEDOUT);
}

int futex_wake(std::atomic<uint32_t>& word, int n) noexcept {
    const long rc = syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, n, nullptr, nullptr, 0);
    return rc < 0 ? 0 : int(rc);
}

}  // namespace fabric_shm::detail
