"""What the in-pod programs' command lines share: settings from the environment, and SIGTERM."""

from __future__ import annotations

import os
from types import FrameType
from typing import NoReturn

from programs.errors import Terminated


def env(name: str, default: str | None = None, *fallbacks: str) -> str | None:
    """The first of ``name`` and ``fallbacks`` set to a non-empty value in the environment, else ``default``."""
    for candidate in (name, *fallbacks):
        value = os.environ.get(candidate)
        if value:
            return value
    return default


def raise_terminated(signum: int, frame: FrameType | None) -> NoReturn:
    """The SIGTERM handler: unwind through the program's cleanup (``finally`` blocks) and exit."""
    raise Terminated()
