#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# aarch64 cross build and unit tests under qemu-user: scripts/cross-aarch64.sh [SUITE...]
#
# Why: x86 orders stores more strongly than the C++ memory model requires; ARM does not. A
# missing release fence or an unguarded x86 intrinsic builds and passes on x86 and breaks
# here. Builds the library, tools and tests with Debian's g++-aarch64-linux-gnu into
# build-aarch64 and runs the unit suites under qemu-aarch64 (user mode: one host kernel, so
# shm, futexes and fork behave as on the host; futex_waitv may be missing, which exercises
# the waiter's fallback) when this host's qemu can run threads and fork (probed below; exit
# status 3: built, tests not run). qemu emulates ARM's weaker ordering only partly: a pass here proves
# the code builds and runs on aarch64, not that every ordering is right (that is what the
# fences and their comments are for).
#
# Sysroot: libnuma-dev:arm64 comes from apt (multi-arch co-installable). libisal-dev:arm64 is
# NOT installed with apt: on Debian 12 it is not co-installable with the amd64 package (apt
# removes libisal-dev:amd64 to install it), so its .debs are downloaded and unpacked into
# build-aarch64-sysroot instead. Header-only dependencies (Boost, cxxopts, doctest,
# nlohmann/json) are architecture-independent and come from the host's /usr/include.
# The bridge module and the benchmark program are not cross-built (no libnats:arm64 needed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

# Default suites: the unit suites (not the multi-process e2e suites, which take minutes under
# emulation and test the tools, not the architecture).
suites=("$@")
[ "${#suites[@]}" -gt 0 ] || suites=(pool store mq groups)

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    "${sudo_cmd[@]}" dpkg --add-architecture arm64
    "${sudo_cmd[@]}" apt-get update
fi
bash scripts/install-deps.sh g++-aarch64-linux-gnu qemu-user libnuma-dev:arm64

sysroot="$root/build-aarch64-sysroot"
if [ ! -f "$sysroot/usr/include/isa-l.h" ]; then
    debs=$(mktemp -d)
    trap 'rm -rf "$debs"' EXIT
    (cd "$debs" && apt-get download libisal-dev:arm64 libisal2:arm64) ||
        { "${sudo_cmd[@]}" apt-get update && (cd "$debs" && apt-get download libisal-dev:arm64 libisal2:arm64); }
    mkdir -p "$sysroot"
    for d in "$debs"/*.deb; do dpkg -x "$d" "$sysroot"; done
fi
libdir="$sysroot/usr/lib/aarch64-linux-gnu"
# libisal-dev's .pc file names prefix=/usr; point it at the sysroot.
mkdir -p "$sysroot/pkgconfig"
sed "s|^prefix=.*|prefix=$sysroot/usr|" "$libdir/pkgconfig/libisal.pc" >"$sysroot/pkgconfig/libisal.pc"

cross="$root/build-aarch64-sysroot/aarch64.ini"
cat >"$cross" <<EOF
[binaries]
c = 'aarch64-linux-gnu-gcc'
cpp = 'aarch64-linux-gnu-g++'
ar = 'aarch64-linux-gnu-ar'
strip = 'aarch64-linux-gnu-strip'
pkg-config = 'pkg-config'
cmake = 'cmake'
exe_wrapper = ['env', 'LD_LIBRARY_PATH=$libdir', 'qemu-aarch64', '-L', '/usr/aarch64-linux-gnu']

[built-in options]
cpp_args = ['-isystem', '$sysroot/usr/include']
cpp_link_args = ['-L$libdir', '-Wl,-rpath-link,$libdir']

[properties]
pkg_config_libdir = ['$sysroot/pkgconfig', '/usr/lib/aarch64-linux-gnu/pkgconfig', '/usr/share/pkgconfig']

[host_machine]
system = 'linux'
cpu_family = 'aarch64'
cpu = 'aarch64'
endian = 'little'
EOF

if [ ! -f build-aarch64/build.ninja ]; then
    rm -rf build-aarch64
    meson setup build-aarch64 --cross-file "$cross" -Dbridge=disabled -Dbench=false \
        -Doptimization=2 -Ddebug=false -Dcpp_args=-g1
fi
rm -f build-aarch64/meson-logs/testlog.json   # a failed build must not leave an old result behind
ninja -C build-aarch64 -j "$(nproc)"
file -L build-aarch64/libfabric_shm/libfabric_shm.so | grep -q 'ARM aarch64' ||
    { echo "cross-aarch64: the library is not an aarch64 binary" >&2; exit 1; }

# Can this qemu run our tests? qemu-user 7.2 (Debian 12) on some host kernels cannot start a
# thread or fork: the new thread or child spins in user space forever (seen on kernel 6.18,
# even for a program that only starts a std::thread, or only forks and _exits). Every suite
# starts threads or forks children, so then the cross build is the whole check (it still
# proves that the library, tools and tests compile and link for aarch64, x86 intrinsics
# guarded), and the script says so instead of hanging.
probe="build-aarch64/qemu-probe"
printf '%s\n' '#include <unistd.h>' '#include <sys/wait.h>' '#include <thread>' \
    'int main() { int v = 0; std::thread t([&] { v = 7; }); t.join();' \
    '  pid_t p = fork(); if (p == 0) _exit(v); int st = 0;' \
    '  return waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 7 ? 0 : 1; }' |
    aarch64-linux-gnu-g++ -std=c++20 -pthread -x c++ - -o "$probe"
if ! timeout 20 qemu-aarch64 -L /usr/aarch64-linux-gnu "$probe"; then
    echo "cross-aarch64: built for aarch64; tests NOT run: $(qemu-aarch64 --version | head -n 1) on kernel" \
         "$(uname -r) cannot start a thread or fork a child (probe: $probe)" >&2
    exit 3
fi
args=()
for s in "${suites[@]}"; do args+=(--suite "$s"); done
# Emulation is ~10-30x slower than native: longer timeouts, not looser assertions.
meson test -C build-aarch64 --print-errorlogs --timeout-multiplier 8 "${args[@]}"
