# SPDX-License-Identifier: MIT
# Prints the site-packages directory under PREFIX that this interpreter imports from, or nothing.
# Debian's python3 reads /usr/local/lib/python3.11/dist-packages (site.getsitepackages()), while
# meson's default for the prefix /usr/local is /usr/local/lib/python3/dist-packages, which it
# never reads: `import fabric_shm` would fail after `meson install`.
import os
import site
import sys

prefix = os.path.realpath(sys.argv[1])
for directory in site.getsitepackages():
    if os.path.realpath(directory).startswith(prefix + os.sep):
        print(directory)
        break
