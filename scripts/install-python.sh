#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Makes `python3 -c 'import fabric_shm'` work with a build directory's package, without
# `meson install`: builds only the package's targets (the extension and its modules, assembled in
# DIR/python/fabric_shm), then writes `fabric_shm.pth` (one line: the absolute path of
# DIR/python) into the site-packages of each python3 that can load that extension:
# /usr/bin/python3, which meson builds for, and the `python3` first in PATH when it is another
# interpreter of the same ABI (pyenv's 3.11 on the development VM). As root that is the
# interpreter's own site directory (/usr/local/lib/python3.11/dist-packages on Debian 12),
# otherwise the user's (python3 -m site --user-site). The extension finds libfabric_shm through
# its build RPATH, so nothing else is installed. `meson install -C DIR` installs a copy instead,
# which takes precedence (site-packages come before what .pth files add).
#   bash scripts/install-python.sh [DIR] [--site-dir SITE]   (SITE: write the .pth there only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir=build
site_dir=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --site-dir)
            [ "$#" -ge 2 ] && [ -n "$2" ] || { echo "install-python: --site-dir needs a directory (--site-dir SITE)" >&2; exit 1; }
            site_dir="$2"; shift 2 ;;
        -*) echo "install-python: unknown option $1 (usage: install-python.sh [DIR] [--site-dir SITE])" >&2; exit 1 ;;
        *) dir="$1"; shift ;;
    esac
done
[ -f "$dir/build.ninja" ] || { echo "install-python: $dir is not a configured build directory (bash scripts/build.sh $dir)" >&2; exit 1; }
dir=$(cd "$dir" && pwd -P)

# The package's targets: whatever meson defines under python/ (the extension and the copies).
mapfile -t targets < <(meson introspect "$dir" --targets | /usr/bin/python3 -c '
import json, os, sys
build = sys.argv[1]
for t in json.load(sys.stdin):
    for f in t["filename"]:
        if f.startswith(os.path.join(build, "python") + os.sep):
            print(os.path.relpath(f, build))
' "$dir")
if [ "${#targets[@]}" -eq 0 ]; then
    echo "install-python: the build in $dir has no Python package (python3-dev or pybind11-dev missing, or -Dpython=disabled)" >&2
    exit 1
fi
ninja -C "$dir" -j "$(nproc)" "${targets[@]}"
shopt -s nullglob
cores=("$dir"/python/fabric_shm/_core*.so)
shopt -u nullglob
if [ "${#cores[@]}" -ne 1 ]; then
    echo "install-python: expected one extension $dir/python/fabric_shm/_core*.so, found ${#cores[@]}:" \
        "${cores[*]:-none} (a stale one from another Python version? remove it and rebuild)" >&2
    exit 1
fi
core=${cores[0]}
suffix=${core#"$dir"/python/fabric_shm/_core}

write_pth() {  # write_pth SITE_DIR
    mkdir -p "$1"
    printf '%s\n' "$dir/python" >"$1/fabric_shm.pth"
    echo "install-python: $1/fabric_shm.pth -> $dir/python"
}

if [ -n "$site_dir" ]; then
    write_pth "$site_dir"
    exit 0
fi
declare -A seen=()
written=0
for py in /usr/bin/python3 "$(command -v python3 || true)"; do
    [ -x "$py" ] || continue
    real=$(readlink -f "$py")
    [ -z "${seen[$real]:-}" ] || continue
    seen[$real]=1
    if [ "$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')" != "$suffix" ]; then
        echo "install-python: $py cannot load $core (another Python version); skipped"
        continue
    fi
    if [ "$(id -u)" = 0 ]; then
        target=$("$py" -c 'import site; print(site.getsitepackages()[0])')
    else
        target=$("$py" -m site --user-site)
    fi
    write_pth "$target"
    (cd / && "$py" -c 'import fabric_shm; fabric_shm.Pool') || { echo "install-python: $py still cannot import fabric_shm" >&2; exit 1; }
    written=$((written + 1))
done
if [ "$written" -eq 0 ]; then
    echo "install-python: no python3 here can load $core (extension suffix $suffix); nothing was installed." \
        "Reconfigure the build for this interpreter, or name a site directory with --site-dir" >&2
    exit 1
fi
