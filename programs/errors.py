"""What every in-pod program fails with: one exception carrying its exit code and one line."""

from __future__ import annotations


class ProgramError(Exception):
    """A failure with its exit code; ``str()`` is the single line printed on stderr."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        if exit_code is not None:
            self.exit_code = exit_code


class Terminated(BaseException):
    """Raised from a SIGTERM handler, so that cleanup runs on the way out."""
