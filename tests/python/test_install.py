# SPDX-License-Identifier: MIT
# `meson install` puts the package where the interpreter imports it from: installed into a
# scratch DESTDIR, `import fabric_shm` works from there (with the installed library), and the
# type stubs come along.
import os
import pathlib
import subprocess
import sys

from conftest import BUILD_DIR


def test_meson_install_puts_an_importable_package_where_python_looks(tmp_path):
    out = subprocess.run(["meson", "install", "-C", str(BUILD_DIR), "--destdir", str(tmp_path), "--no-rebuild",
                          "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    (package,) = [p for p in tmp_path.rglob("fabric_shm") if (p / "__init__.py").exists()]
    site_dir = "/" + str(package.parent.relative_to(tmp_path))
    assert site_dir in subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages())"],
                                      capture_output=True, text=True, check=True).stdout, \
        f"{site_dir} is not where {sys.executable} imports from"
    assert (package / "_core.pyi").exists() and (package / "py.typed").exists()
    (lib,) = {p.parent for p in tmp_path.rglob("libfabric_shm.so.0")}
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(package.parent), "LD_LIBRARY_PATH": str(lib)}
    check = subprocess.run([sys.executable, "-c", "import fabric_shm, sys; print(fabric_shm.__file__); "
                            "print(fabric_shm.Pool.list is not None)"], env=env, capture_output=True, text=True,
                           cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines()[0].startswith(str(package))


def test_the_source_tree_imports_the_handler_helper_without_the_compiled_module(tmp_path):
    # fabric-shm-worker --handler runs handlers with PYTHONPATH=python (docs/handlers.md).
    from conftest import SOURCE_DIR
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(SOURCE_DIR / "python")}
    code = ("import fabric_shm.handler\n"
            "try:\n    import fabric_shm; fabric_shm.Pool\nexcept ImportError as e:\n    print('ImportError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "fabric_shm._core is not importable" in out.stdout and "PYTHONPATH=build/python" in out.stdout


def test_install_python_links_the_build_so_a_plain_python3_imports_it(tmp_path):
    # What run-demo.sh does after the demo: a fabric_shm.pth naming the build's python/ directory
    # in a site directory; a python3 without PYTHONPATH then imports the package from the build.
    from conftest import SOURCE_DIR
    site_dir = tmp_path / "site"
    out = subprocess.run(["bash", str(SOURCE_DIR / "scripts" / "install-python.sh"), str(BUILD_DIR), "--site-dir",
                          str(site_dir)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (site_dir / "fabric_shm.pth").read_text().strip() == str((BUILD_DIR / "python").resolve())
    code = (f"import site; site.addsitedir({str(site_dir)!r})\n"  # what python3 does with its site-packages
            "import fabric_shm; print(fabric_shm.__file__); print(fabric_shm.Pool.list is not None)")
    # -S -s: without the machine's own site directories, where the fabric_shm.pth of another
    # build (run-demo.sh run from another clone) would be read first and win.
    check = subprocess.run([sys.executable, "-S", "-s", "-c", code], env={"PATH": os.environ["PATH"]},
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines() == [str((BUILD_DIR / "python" / "fabric_shm" / "__init__.py").resolve()), "True"]


def test_install_python_says_what_is_missing_when_site_dir_has_no_value():
    from conftest import SOURCE_DIR
    out = subprocess.run(["bash", str(SOURCE_DIR / "scripts" / "install-python.sh"), str(BUILD_DIR), "--site-dir"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "--site-dir needs a directory" in out.stderr, out.stderr
