#!/bin/sh
# SPDX-License-Identifier: MIT
# Run by `meson install` (meson.add_install_script). After installing libfabric_shm.so into a
# system prefix (/usr or /usr/local), the dynamic linker's cache must be refreshed before
# programs find it ("error while loading shared libraries: libfabric_shm.so.0"). This runs
# ldconfig when that is this machine's job: installing as root, without DESTDIR (a DESTDIR
# install is a package being staged for another machine). Otherwise it says what to do.
# Argument: the library directory. Tests override FABRIC_SHM_LDCONFIG (the command) and
# FABRIC_SHM_INSTALL_UID (the user id).
libdir="${1:-$MESON_INSTALL_PREFIX/lib}"
prefix="${MESON_INSTALL_PREFIX:-}"
uid="${FABRIC_SHM_INSTALL_UID:-$(id -u)}"
ldconfig_cmd="${FABRIC_SHM_LDCONFIG:-ldconfig}"

[ -n "${DESTDIR:-}" ] && exit 0
case "$prefix" in
    /usr | /usr/local) ;;
    *)
        echo "fabric-shm: installed into $prefix, which the dynamic linker does not search: run programs with"
        echo "fabric-shm:   LD_LIBRARY_PATH=$libdir, or add $libdir to /etc/ld.so.conf.d/ and run ldconfig"
        exit 0
        ;;
esac
if [ "$uid" != 0 ]; then
    echo "fabric-shm: run \`sudo ldconfig\` so that programs find libfabric_shm in $libdir"
    exit 0
fi
echo "fabric-shm: running ldconfig (libfabric_shm in $libdir)"
$ldconfig_cmd
