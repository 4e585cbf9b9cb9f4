"""What the in-pod programs' command lines share: settings from the environment, and SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from programs.errors import (
    EXIT_TERMINATED,
    EXIT_UNEXPECTED,
    ExitCodes,
    PodProgramError,
    Terminated,
    UsageError,
    exit_code_of,
)


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


def read_token_file(path: str) -> str:
    """The service-account token (a projected JWT) from ``path``; unreadable or empty is a usage error."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the service-account token file {path}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"the service-account token file {path} is empty")
    return token


def raise_terminated(signum: int, frame: FrameType | None) -> NoReturn:
    """The SIGTERM handler: unwind through the program's cleanup (``finally`` blocks) and exit."""
    raise Terminated()


def run_program(prog: str, codes: ExitCodes, body: Callable[[], int], terminated_note: str = "") -> int:
    """Run ``body`` as an in-pod program's ``main`` and return its exit code: SIGTERM unwinds
    through its ``finally`` blocks (:func:`raise_terminated`), and every failure ends as ONE line
    ``<prog>: error: <why>`` on stderr with the exit code ``codes`` gives it; a failure nobody
    anticipated (a bug) is :data:`EXIT_UNEXPECTED` with its type and message."""
    previous: Callable[[int, FrameType | None], Any] | int | None = None
    with contextlib.suppress(ValueError):  # not in the main thread
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return body()
    except PodProgramError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return exit_code_of(exc, codes)
    except Terminated:
        print(f"{prog}: error: terminated by SIGTERM{terminated_note}", file=sys.stderr, flush=True)
        return EXIT_TERMINATED
    except Exception as exc:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(f"{prog}: error: unexpected {message}", file=sys.stderr, flush=True)
        return EXIT_UNEXPECTED
    finally:
        if previous is not None:
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGTERM, previous)
