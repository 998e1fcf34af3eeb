# SPDX-License-Identifier: MIT
from typing import Any, Sequence, Tuple, Union

from ._core import *  # noqa: F401,F403
from ._core import Bytes, MemObjectStore, Producer, SendResult, UriLike, __version__, layout_version  # noqa: F401

HEADER_VERSION: str
HEADER_PUT_TIME: str

def put_and_notify(store: MemObjectStore, producers: Union[Producer, Sequence[Producer]], uri: UriLike, data: Bytes,
                   **put_options: Any) -> Tuple[int, list[SendResult]]: ...
