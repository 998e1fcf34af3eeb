# SPDX-License-Identifier: MIT
"""fabric_shm: an event pipeline in one POSIX shared-memory pool, from Python.

Objects land in a store, a notification goes onto a topic, workers in a consumer group process
them and write results back -- every hop a write into one shared-memory segment that all
processes map. The compiled module ``fabric_shm._core`` binds the C++ library; this package
re-exports its public names::

    import fabric_shm as fs

    with fs.Pool.open("demo", create_if_missing=True) as pool:
        store = pool.store()
        store.put("fabric://demo/uploads/a.txt", b"hello")
        with store.get("fabric://demo/uploads/a.txt") as obj:
            print(bytes(obj.data))          # obj.data: a zero-copy memoryview of the pool's bytes

Durations are ``datetime.timedelta`` or seconds (int or float). Errors are ``fabric_shm.Error``
subclasses, one per library error code (``NotFound``, ``BackPressure``, ``Closed``, ...), with
``.code`` and ``.message``. Blocking calls release the GIL; Ctrl-C interrupts them.
"""

try:
    from . import _core
except ImportError as _core_error:
    # The source tree (PYTHONPATH=python) has no compiled module: fabric_shm.handler, the
    # standard-library-only helper of `fabric-shm-worker --handler`, must still import there.
    # Everything else says what is missing when it is used.
    _core = None
    _core_import_error = _core_error

    def __getattr__(name):
        raise ImportError(
            f"fabric_shm.{name}: the compiled module fabric_shm._core is not importable here "
            f"({_core_import_error}); build with meson and use PYTHONPATH=build/python, or `meson install -C build`"
        ) from _core_import_error

if _core is not None:
    from ._core import *  # noqa: F401,F403  (the public names: see __all__)
    from ._core import __version__, layout_version  # noqa: F401

    __all__ = [name for name in dir(_core) if not name.startswith("_")] + ["__version__"]

HEADER_VERSION = "fabric-version"  #: message header: the object's version (decimal; put_and_notify writes it)
HEADER_PUT_TIME = "fabric-put-ts"  #: message header: wall ns after the put (decimal)


def _pool_store(self, name="default", **config):
    """The object store `name` in this pool (created when absent): MemObjectStore(self, name, ...)."""
    return _core.MemObjectStore(self, name, **config)


def _pool_topics(self):
    """A TopicManager for this pool."""
    return _core.TopicManager(self)


if _core is not None:
    _core.Pool.store = _pool_store
    _core.Pool.topics = _pool_topics
