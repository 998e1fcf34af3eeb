// SPDX-License-Identifier: MIT
// Every header under libfabric_shm/src/ includes this first. Those headers are the library's
// internals (shared-memory layouts, the mapping, region-kind hooks, fault points): they change
// with every layout version and are no API. The library, its tests and its internal tools
// (fabric-shm-dump) define FABRIC_SHM_INTERNAL (meson: fabric_internal_dep); a program that
// includes one without it stops here. Programs use the public headers in include/fabric_shm/.
// (The model is libcamera's base/private.h.)
#pragma once

#ifndef FABRIC_SHM_INTERNAL
#error "fabric_shm private header: include only the public headers <fabric_shm/*.h> (internal code is built with FABRIC_SHM_INTERNAL, from fabric_internal_dep)"
#endif
