#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures (once) and builds a build directory: scripts/build.sh [DIR] [meson -D options].
# DIR defaults to `build`. Options given for an existing directory are applied with
# `meson configure`; ninja re-runs meson by itself when a meson.build changed.
# FABRIC_SHM_TARGETS="a b" builds only those ninja targets (paths relative to DIR, e.g.
# workers/fabric-shm-worker) instead of everything: run-demo.sh builds only its programs.
# FABRIC_SHM_TARGETS=none configures without building (`meson test NAME...` then builds what
# the named tests need, as scripts/test.sh does for its sanitizer pass).
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
[ "${FABRIC_SHM_TARGETS:-}" = none ] && exit 0
# shellcheck disable=SC2086  # a space-separated list of targets, split on purpose
ninja -C "$dir" -j "$(nproc)" ${FABRIC_SHM_TARGETS:-}
