#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures (once) and builds a build directory: scripts/build.sh [DIR] [meson -D options].
# DIR defaults to `build`. Options given for an existing directory are applied with
# `meson configure`; ninja re-runs meson by itself when a meson.build changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir="${1:-build}"
[ "$#" -gt 0 ] && shift

if [ ! -f "$dir/build.ninja" ]; then
    if [ -d "$dir" ]; then
        meson setup --wipe "$dir" "$@"   # left half-configured: start over
    else
        meson setup "$dir" "$@"
    fi
elif [ "$#" -gt 0 ]; then
    meson configure "$dir" "$@"
fi
ninja -C "$dir" -j "$(nproc)"
