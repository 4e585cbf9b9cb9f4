"""Child processes of the rig that neither the parent's death nor its SIGINT/SIGTERM leave behind.

* :func:`child_setup` runs in every child before ``exec``: ``PR_SET_PDEATHSIG`` (the kernel kills the
  child when the parent dies) and SIGINT/SIGTERM unblocked (a child inherits the parent's mask).
* :func:`run` is ``subprocess.run`` for one-shot programs, except that the process is created with
  SIGINT/SIGTERM blocked in the parent. ``make demo`` and the tests turn those signals into an
  exception; raised while ``Popen`` is still starting the child (forked, not yet returned), it would
  leave that child running with nobody to stop it: seen with ``demo``'s SIGTERM test under load. Here
  the signal is delivered once the process object exists, and the child is killed and reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

#: The signals the demo and tests turn into an exception.
INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM})
_PR_SET_PDEATHSIG = 1


def child_setup() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)


def run(
    args: Sequence[str],
    *,
    timeout: float | None = None,
    input: str | None = None,
    capture_output: bool = False,
    **popen: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` to its end, text mode, like ``subprocess.run(..., text=True, check=False)``:
    ``subprocess.TimeoutExpired`` (the process killed and reaped) after ``timeout``."""
    if capture_output:
        popen |= {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        process = subprocess.Popen(list(args), text=True, preexec_fn=child_setup, **popen)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    with process:
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a pending signal is handled here
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        except BaseException:
            process.kill()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
