"""What the in-pod programs' command lines share: settings from the environment, and SIGTERM."""

from __future__ import annotations

import argparse
import os
from types import FrameType
from typing import NoReturn

from programs.errors import Terminated, UsageError


class UsageErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`~programs.errors.UsageError` (one line, the
    program's usage exit code) instead of argparse's own exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


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
