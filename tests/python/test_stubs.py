# SPDX-License-Identifier: MIT
# The type stubs describe the module as built: every public name and method of fabric_shm._core
# is in _core.pyi, and everything the stubs promise exists (editors complete what works).
import ast
import pathlib

import fabric_shm
from fabric_shm import _core

STUB_ALIASES = {"Duration", "Bytes", "Headers", "UriLike", "Handler"}


def stub_tree():
    path = pathlib.Path(fabric_shm.__file__).with_name("_core.pyi")
    return ast.parse(path.read_text())


def test_every_public_name_of_the_module_has_a_stub_and_every_stub_exists():
    tree = stub_tree()
    stubbed = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            stubbed.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            stubbed.add(node.target.id)
        elif isinstance(node, ast.Assign):
            stubbed.update(t.id for t in node.targets)
    public = {n for n in dir(_core) if not n.startswith("_")} | {"__version__"}
    assert public - stubbed == set(), "names without a stub"
    assert stubbed - STUB_ALIASES - {"_OutputStore"} - public == set(), "stubs of names that do not exist"


def test_every_method_and_property_of_a_class_is_stubbed():
    for node in stub_tree().body:
        if not isinstance(node, ast.ClassDef) or not hasattr(_core, node.name):
            continue
        cls = getattr(_core, node.name)
        if issubclass(cls, BaseException):
            continue
        members = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        members |= {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
        runtime = {n for n in vars(cls) if not n.startswith("_")} | \
                  ({n for n in ("__enter__", "__exit__", "__len__", "__iter__", "__bytes__") if n in vars(cls)})
        if isinstance(cls, type) and hasattr(cls, "__members__"):  # enums: the members are the stub
            runtime -= {"name", "value"}
        missing = runtime - members
        assert not missing, f"{node.name}: not in the stubs: {sorted(missing)}"
        extra = {m for m in members if not m.startswith("_")} - runtime - ({"store", "topics"} if node.name == "Pool" else set())
        assert not extra, f"{node.name}: stubbed but missing: {sorted(extra)}"
