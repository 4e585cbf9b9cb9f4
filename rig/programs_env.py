"""The in-pod programs' own Python environment, as the programs image has it.

``programs/Containerfile`` installs ``programs/requirements.lock`` (hashes, wheels only) into the base
image's Python and nothing else; ``make setup`` builds the same into ``build/programs-venv``. The rig
runs every in-pod program with this interpreter, and the pod rung's programs image puts it on ``PATH``
(``rig.pod_sandbox.programs_image``): a module the lock lacks, or one only the development environment
has, fails the tests here rather than the pods in a cluster.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROGRAMS_VENV = REPO / "build" / "programs-venv"


def programs_python() -> str:
    """The programs environment's interpreter (``RuntimeError`` naming ``make setup`` if it is missing)."""
    python = PROGRAMS_VENV / "bin" / "python"
    if not python.exists():
        raise RuntimeError(
            f"{python} is missing: `make setup` builds it from programs/requirements.lock "
            "(as programs/Containerfile builds the image)"
        )
    return str(python)
