#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The README's C++ library example, as a user builds it: `meson install --destdir` of this
# build, the example cut from README.md between its markers, compiled with
# `pkg-config --cflags --libs fabric_shm` against the installed fabric_shm.pc, then run on a
# unique pool with the build's producer feeding it; its printed result count is checked.
# Usage: readme_example_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
tmp=$(mktemp -d)
pool="t-readme-$$-$RANDOM"
example_pid=
cleanup() {
    [ -n "$example_pid" ] && kill -KILL "$example_pid" 2>/dev/null || true
    "$build/tools/fabric-shm" pool rm --force --pool "$pool" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# As a user would: no path into the build tree (meson test sets LD_LIBRARY_PATH to it).
unset LD_LIBRARY_PATH

# 1. Install the build into a staging root.
meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "meson install --destdir failed"; }
pc=$(find "$tmp/root" -name fabric_shm.pc | head -1)
[ -n "$pc" ] || fail "no fabric_shm.pc installed under $tmp/root"
prefix=$(sed -n 's/^prefix=//p' "$pc")
[ -n "$prefix" ] || fail "fabric_shm.pc has no prefix= line"
export PKG_CONFIG_PATH="$(dirname "$pc")"
pkgconf() { pkg-config --define-variable=prefix="$tmp/root$prefix" "$@" fabric_shm; }
libdir=$(pkgconf --variable=libdir)
[ -f "$libdir/libfabric_shm.so" ] || fail "libdir '$libdir' from fabric_shm.pc holds no libfabric_shm.so"
[ -f "$(pkgconf --variable=includedir)/fabric_shm/worker_loop.h" ] || fail "worker_loop.h is not installed"

# 2. The example, between its markers, without the code fence.
awk '/<!-- readme-example:library begin/{on=1; next} /<!-- readme-example:library end/{on=0} on' \
    "$src/README.md" | sed '/^```/d' >"$tmp/example.cpp"
[ "$(grep -c 'int main' "$tmp/example.cpp")" = 1 ] || fail "README.md: no example between the readme-example:library markers"

# 3. Compile it the way the README says: C++20, flags from pkg-config only.
# shellcheck disable=SC2046
${CXX:-c++} -std=c++20 -o "$tmp/example" "$tmp/example.cpp" $(pkgconf --cflags --libs) -Wl,-rpath,"$libdir" \
    2>"$tmp/compile.log" || { cat "$tmp/compile.log" >&2; fail "the README example does not compile against fabric_shm.pc"; }
# (ldd's output is captured first: `ldd | grep -q` under pipefail fails when grep exits early.)
linked=$(ldd "$tmp/example")
grep -q "$libdir/libfabric_shm.so" <<<"$linked" || { echo "$linked" >&2; fail "the example is not linked to the installed library in $libdir"; }

# 4. Run it on a unique pool: 5 objects in, 5 results out, SIGTERM, its summary line.
FABRIC_SHM_POOL="$pool" "$tmp/example" >"$tmp/out" 2>"$tmp/err" &
example_pid=$!
for _ in $(seq 100); do
    grep -q '"processors"' <<<"$("$build/tools/dump/fabric-shm-dump" --pool "$pool" --json 2>/dev/null)" && break
    sleep 0.1
done
kill -0 "$example_pid" 2>/dev/null || { cat "$tmp/err" >&2; fail "the example exited at start"; }
"$build/workers/fabric-shm-producer" --pool "$pool" --topic object-events --synthetic 5 --size 64 --quiet ||
    fail "producer failed"
for _ in $(seq 200); do
    n=$("$build/tools/fabric-shm" ls "fabric://$pool/results/" 2>/dev/null | wc -l)
    [ "$n" -ge 5 ] && break
    sleep 0.1
done
kill -TERM "$example_pid"
rc=0
wait "$example_pid" || rc=$?
example_pid=
[ "$rc" = 0 ] || { cat "$tmp/err" >&2; fail "the example exited $rc"; }
grep -Eq '^5 results, latency p99 [1-9][0-9]* ns$' "$tmp/out" || { cat "$tmp/out" "$tmp/err" >&2; fail "unexpected output"; }
echo "ok: README example built with pkg-config ($(pkgconf --modversion)) from $pc printed: $(cat "$tmp/out")"
