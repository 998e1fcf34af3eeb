#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what a fresh Debian 12 lacks to build and test fabric-shm: the build tools
# (meson, ninja, g++, cmake for doctest's config, pkg-config, git, python3 for the test
# summary) and the libraries; libnats-dev and nats-server for the optional bridge module
# (fabric-shm-bridge and its tests, which start their own loopback nats-server cluster);
# pybind11-dev and python3-dev for the Python package (python/), python3-pytest and
# python3-numpy for its tests (numpy: the zero-copy checks).
# Idempotent: does nothing when every package is installed, runs `apt-get update` only when
# the package lists are empty or an install fails.
# As root it calls apt-get directly; otherwise through sudo when it exists.
# Extra packages may be named as arguments (scripts/test-extended.sh adds valgrind).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(meson ninja-build g++ cmake pkg-config git python3
          libboost-dev libnuma-dev libcxxopts-dev doctest-dev nlohmann-json3-dev libisal-dev numactl
          libnats-dev nats-server
          pybind11-dev python3-dev python3-pytest python3-numpy
          "$@")

# installed NAME: true when NAME (or NAME:ARCH) is installed. A plain name means the native
# architecture when the package is multi-arch and also installed for another one (the
# aarch64 cross build installs libnuma-dev:arm64; `dpkg -s libnuma-dev` is then ambiguous).
native=$(dpkg --print-architecture)
installed() {
    local name="$1"
    if [[ "$name" != *:* ]] && dpkg-query -W "$name:$native" >/dev/null 2>&1; then
        name="$name:$native"
    fi
    dpkg-query -W -f='${db:Status-Abbrev}\n' "$name" 2>/dev/null | grep -q '^ii'
}
missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages are installed"
    exit 0
fi
echo "install-deps: installing ${missing[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: apt-get not found; install by hand: ${missing[*]}" >&2
    exit 1
fi
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    else
        echo "install-deps: not root and no sudo; run as root: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

apt_install() {
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}
# A fresh machine has empty package lists: update first. Otherwise try the install and
# update only if it fails (stale lists).
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
    "${sudo_cmd[@]}" apt-get update
fi
if ! apt_install; then
    "${sudo_cmd[@]}" apt-get update
    apt_install
fi
