// SPDX-License-Identifier: MIT
// FsyncPolicy: when the file-backed parts (the tiered store's cold tier, FileOffsetStore)
// call fdatasync/fsync. One type for both, so one program configures them alike.
#pragma once

#include <cstdint>

namespace fabric_shm {

/// What each choice keeps after a power loss is tabulated in docs/tiered-store.md (cold tier)
/// and docs/topics.md (offset files). A process crash or a clean reboot never loses a
/// completed write under any policy: the page cache survives both.
enum class FsyncPolicy : uint8_t {
    never,          ///< leave it to the kernel's writeback (tests, scratch data)
    on_checkpoint,  ///< tiered store: checkpoint() syncs the log, then the index. FileOffsetStore:
                    ///< every commit is its own checkpoint, so this syncs each commit
    every_write,    ///< every write is synced (tiered store: each demotion and removal record too)
};

}  // namespace fabric_shm
