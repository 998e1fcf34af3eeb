# SPDX-License-Identifier: MIT
"""Whether a handler is an ``async def``, answered without importing ``inspect`` or ``asyncio``.

``Worker.run()`` asks this of every handler before choosing its driver. Importing the asyncio
driver (``_async_worker``: ``asyncio`` and ``inspect``) to ask took ~80 ms of a worker's start
on the 2-vCPU VM, for plain handlers that never use it.
"""

import functools
import sys
import types

_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE


def _is_coroutine_function(f):
    """inspect.iscoroutinefunction: bound methods and functools.partial unwrapped, then the code
    object's CO_COROUTINE flag. A function marked with inspect.markcoroutinefunction (3.12) is
    recognised through inspect itself, which the caller imported to mark it."""
    inspect = sys.modules.get("inspect")
    if inspect is not None:
        return inspect.iscoroutinefunction(f)
    while True:
        if isinstance(f, types.MethodType):
            f = f.__func__
        elif isinstance(f, functools.partial):
            f = f.func
        else:
            break
    return isinstance(f, types.FunctionType) and bool(f.__code__.co_flags & _CO_COROUTINE)


def is_async_handler(handler):
    """True for an ``async def`` function (or an object whose ``__call__`` is one)."""
    return _is_coroutine_function(handler) or _is_coroutine_function(getattr(handler, "__call__", None))
