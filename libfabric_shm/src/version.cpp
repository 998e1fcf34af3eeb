// SPDX-License-Identifier: MIT
// Version reporting (version.h). The layout numbers come from the private layout header so
// that tools never include it.
#include "fabric_shm/version.h"

#include "fabric_shm_release_version.h"  // generated: FABRIC_SHM_RELEASE_VERSION (meson.project_version())
#include "layout/pool_layout.h"

namespace fabric_shm {

std::string_view library_version() noexcept { return FABRIC_SHM_RELEASE_VERSION; }

LayoutVersion layout_version() noexcept { return {layout::kLayoutMajor, layout::kLayoutMinor}; }

std::string version_line(std::string_view program) {
    const LayoutVersion l = layout_version();
    return std::string(program) + " " + std::string(library_version()) + " (pool layout " + std::to_string(l.major) +
           "." + std::to_string(l.minor) + ")";
}

}  // namespace fabric_shm
