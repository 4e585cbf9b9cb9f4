"""The environment the rig runs the in-pod programs with holds what the programs image holds: the
distributions of programs/requirements.lock at their locked versions, and none of the development
environment's (rig/programs_env.py; the image: programs/Containerfile)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from rig.programs_env import programs_python

REPO = Path(__file__).resolve().parents[2]
#: What `python -m venv` puts into every environment (the base image's Python has them too).
VENV_TOOLS = {"pip", "setuptools"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    text = (REPO / "programs" / "requirements.lock").read_text()
    return {_normal(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^ \\\n]+)", text, re.M)}


def installed() -> dict[str, str]:
    listing = subprocess.run(
        [programs_python(), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return {_normal(d["name"]): d["version"] for d in json.loads(listing)}


def test_the_programs_environment_is_the_lock_and_nothing_else() -> None:
    have = {name: version for name, version in installed().items() if name not in VENV_TOOLS}
    assert have == locked()


def test_the_development_packages_are_not_there() -> None:
    probe = "import importlib.util as u; print([m for m in ('pytest', 'hvac', 'pulumi', 'psycopg') if u.find_spec(m)])"
    found = subprocess.run([programs_python(), "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert found.stdout.strip() == "[]"
