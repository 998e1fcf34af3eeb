// SPDX-License-Identifier: MIT
// The library's release version and the shared-memory layout version it reads and writes.
// Programs print both for --version: two builds share a pool only when their layout majors
// (and struct fingerprints) match, whatever their release versions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fabric_shm {

struct LayoutVersion {
    uint16_t major = 0;  ///< a pool with another major is refused (version_mismatch)
    uint16_t minor = 0;  ///< a higher minor only adds fields in reserved space: attached
};

/// The release version of this build of the library ("0.1.0": meson's project version).
std::string_view library_version() noexcept;
/// The pool layout version this build creates and accepts.
LayoutVersion layout_version() noexcept;
/// "<program> <release> (pool layout <major>.<minor>)": the --version line of every tool.
std::string version_line(std::string_view program);

}  // namespace fabric_shm
