"""What every in-pod program fails with: one exception base carrying an exit code and one line.

Shared failures (a usage error, the typed failures of :mod:`programs.vault_http`) carry no exit
code of their own that a program relies on: each program declares an :data:`ExitCodes` table (the
failure classes it can see, each with its exit code) and its ``main`` picks the code with
:func:`exit_code_of`. So the client reports *what* failed (unreachable, refused, bad response,
conflict) and each program alone says what that means for its exit code.
"""

from __future__ import annotations

from collections.abc import Mapping


class PodProgramError(Exception):
    """A failure of an in-pod program; ``str()`` is the single line printed on stderr.

    ``exit_code`` is the fallback when a program's :data:`ExitCodes` table has no entry for it.
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(PodProgramError):
    """The command line, the environment or a file named by them is wrong (nothing was done)."""

    exit_code = 2


ExitCodes = Mapping[type[PodProgramError], int]
"""A program's exit code for each failure class it declares (the nearest class in the MRO wins)."""


def exit_code_of(failure: PodProgramError, codes: ExitCodes) -> int:
    """``failure``'s exit code by ``codes`` (its own class first, then its bases), else its own."""
    for kind in type(failure).__mro__:
        if kind in codes:
            return codes[kind]
    return failure.exit_code


#: The exit code of a failure no program anticipated (a bug): its type and message on one line.
EXIT_UNEXPECTED = 1
#: The exit code after SIGTERM (128 + 15, what a shell reports for a process the signal ended).
EXIT_TERMINATED = 143


class Terminated(BaseException):
    """Raised from a SIGTERM handler, so that cleanup runs on the way out."""
