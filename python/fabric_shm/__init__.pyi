# SPDX-License-Identifier: MIT
from ._core import *  # noqa: F401,F403
from ._core import __version__, layout_version  # noqa: F401

HEADER_VERSION: str
HEADER_PUT_TIME: str
