"""Layering: product <- offline tooling <- rig <- tests, demo, bench.

Every module of each layer is parsed with ``ast`` (nothing is imported) and each import is resolved
to the top-level name it reaches: ``import rig.x``, ``from tests.support import y``, relative imports
(``from .. import tests`` in ``components/x.py`` reaches ``tests``) and ``importlib.import_module`` /
``__import__`` with a literal name. A module importing a layer above its own fails the test, naming
the module, the line and the import.

- the product (``components/``, ``programs/``, ``policy/``, ``config.py``, ``stack.py``,
  ``__main__.py``) imports none of ``offline``, ``rig``, ``tests``, ``demo``, ``bench``;
- ``offline/`` imports none of ``rig``, ``tests``, ``demo``, ``bench``;
- ``rig/`` imports none of ``tests``, ``demo``, ``bench``;
- ``demo/`` and ``bench/`` never import ``tests``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PRODUCT = ("components", "programs", "policy", "config.py", "stack.py", "__main__.py")

#: (what is checked, the files and directories it is made of, the top-level names it must not import)
RULES: tuple[tuple[str, tuple[str, ...], frozenset[str]], ...] = (
    ("product", PRODUCT, frozenset({"offline", "rig", "tests", "demo", "bench"})),
    ("offline", ("offline",), frozenset({"rig", "tests", "demo", "bench"})),
    ("rig", ("rig",), frozenset({"tests", "demo", "bench"})),
    ("demo", ("demo",), frozenset({"tests"})),
    ("bench", ("bench",), frozenset({"tests"})),
)

#: What a relative import that climbs above the repository root reaches (always a violation).
ABOVE_ROOT = "<above the repository root>"

#: Directories that are not the project's modules (policy/venv is the pack's virtual environment).
SKIPPED_DIRS = frozenset({"venv", ".venv", "__pycache__", "build", "node_modules"})


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    statement: str
    reaches: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.statement!r} imports {self.reaches!r}"


def modules_of(roots: tuple[str, ...], repo: Path = REPO) -> list[Path]:
    """Every ``.py`` file of ``roots`` (files or directories relative to ``repo``), virtual
    environments and caches left out."""
    found: list[Path] = []
    for root in roots:
        path = repo / root
        if path.is_file():
            found.append(path)
            continue
        for candidate in sorted(path.rglob("*.py")):
            parents = candidate.relative_to(repo).parts[:-1]
            if SKIPPED_DIRS.intersection(parents) or any(
                (repo.joinpath(*parents[: i + 1]) / "pyvenv.cfg").exists() for i in range(len(parents))
            ):
                continue
            found.append(candidate)
    return found


def _package_of(relative: Path) -> tuple[str, ...]:
    """The package a module at ``relative`` (to the repository root) belongs to."""
    return relative.parts[:-1]


def _resolve(package: tuple[str, ...], level: int, name: str | None) -> str:
    """The absolute dotted name a ``from`` import with ``level`` dots reaches from ``package``.
    A relative import that climbs above the repository root reaches ``ABOVE_ROOT``."""
    if level == 0:
        return name or ""
    if level - 1 > len(package):
        return ABOVE_ROOT
    base = list(package[: len(package) - (level - 1)])
    if name:
        base.append(name)
    return ".".join(base)


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def imported_names(source: str, relative: Path) -> list[tuple[int, str, str]]:
    """(line, statement, absolute dotted name) for every import in ``source``, a module at
    ``relative``; ``from a import b`` yields both ``a`` and ``a.b`` (``b`` may be a module)."""
    tree = ast.parse(source, filename=str(relative))
    package = _package_of(relative)
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            statement = ast.unparse(node)
            found.extend((node.lineno, statement, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            statement = ast.unparse(node)
            base = _resolve(package, node.level, node.module)
            found.append((node.lineno, statement, base))
            if base == ABOVE_ROOT:
                continue
            found.extend(
                (node.lineno, statement, f"{base}.{alias.name}" if base else alias.name)
                for alias in node.names
                if alias.name != "*"
            )
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called not in ("import_module", "__import__") or not node.args:
                continue
            name = _literal(node.args[0])
            if name is None:
                continue
            if name.startswith("."):
                anchor = next((_literal(k.value) for k in node.keywords if k.arg == "package"), None)
                if anchor is None and len(node.args) > 1:
                    anchor = _literal(node.args[1])
                level = len(name) - len(name.lstrip("."))
                anchor_parts = tuple(anchor.split(".")) if anchor else package
                name = _resolve(anchor_parts, level, name.lstrip(".") or None)
            found.append((node.lineno, ast.unparse(node), name))
    return found


def violations(paths: list[Path], forbidden: frozenset[str], repo: Path = REPO) -> list[Violation]:
    """Every import in ``paths`` whose top-level name is in ``forbidden`` or that climbs above the
    repository root."""
    result: list[Violation] = []
    for path in paths:
        relative = path.relative_to(repo)
        seen: set[tuple[int, str]] = set()
        for line, statement, name in imported_names(path.read_text(encoding="utf-8"), relative):
            top = ABOVE_ROOT if name == ABOVE_ROOT else name.split(".")[0]
            if (top in forbidden or top == ABOVE_ROOT) and (line, statement) not in seen:
                seen.add((line, statement))
                result.append(Violation(relative.as_posix(), line, statement, name))
    return result


@pytest.mark.parametrize(("layer", "roots", "forbidden"), RULES, ids=[rule[0] for rule in RULES])
def test_layer_imports_nothing_above_it(layer: str, roots: tuple[str, ...], forbidden: frozenset[str]) -> None:
    paths = modules_of(roots)
    assert paths, f"no module found for {layer} ({roots})"
    found = violations(paths, forbidden)
    assert not found, f"{layer} must not import {sorted(forbidden)}:\n" + "\n".join(map(str, found))


def test_every_layer_is_scanned() -> None:
    """The product's own packages are all there (a renamed directory must not pass vacuously)."""
    for root in (*PRODUCT, "offline", "rig", "demo", "bench"):
        assert (REPO / root).exists(), root
    scanned = {p.relative_to(REPO).parts[0] for p in modules_of(PRODUCT)}
    assert scanned == set(PRODUCT)


# --------------------------------------------------------------------------------------------------
# the checker itself, on made-up modules
# --------------------------------------------------------------------------------------------------
FORBIDDEN_FOR_PRODUCT = RULES[0][2]


@pytest.mark.parametrize(
    ("source", "reaches"),
    [
        ("import rig", "rig"),
        ("import rig.openbao as bao", "rig.openbao"),
        ("import json, tests.support", "tests.support"),
        ("from tests.support.local_databases import local_databases", "tests.support.local_databases"),
        ("from tests import support", "tests"),
        ("from rig import *", "rig"),
        ("from .. import tests", "tests"),
        ("from ..rig.kube_api import KubeAPIServer", "rig.kube_api"),
        ("from ... import rig", ABOVE_ROOT),
        ("import importlib\nimportlib.import_module('tests.support')", "tests.support"),
        ("from importlib import import_module\nimport_module('..rig', package='components')", "rig"),
        ("__import__('rig.schemas')", "rig.schemas"),
        ("def f():\n    from offline.engine import run_program\n", "offline.engine"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import demo.run\n", "demo.run"),
    ],
)
def test_checker_finds_forbidden_import(tmp_path: Path, source: str, reaches: str) -> None:
    module = tmp_path / "components" / "x.py"
    module.parent.mkdir()
    module.write_text(source + "\n")
    found = violations([module], FORBIDDEN_FOR_PRODUCT, repo=tmp_path)
    assert len(found) == 1, found
    assert found[0].module == "components/x.py"
    assert found[0].reaches == reaches
    assert repr(reaches) in str(found[0])


@pytest.mark.parametrize(
    "source",
    [
        "import rigging\nimport testsuite",
        "from offline_tools import x",
        "from . import vault_policies",
        "from .versions import VAULT_CHART",
        "from components.vault import Vault",
        "import rules",
        "importlib.import_module(name)",
    ],
)
def test_checker_accepts_allowed_import(tmp_path: Path, source: str) -> None:
    module = tmp_path / "components" / "x.py"
    module.parent.mkdir()
    module.write_text(source + "\n")
    assert violations([module], FORBIDDEN_FOR_PRODUCT, repo=tmp_path) == []


def test_virtual_environments_are_not_scanned(tmp_path: Path) -> None:
    """``policy/venv`` by name, and any directory holding a ``pyvenv.cfg``."""
    for venv in ("venv", "pack-env"):
        (tmp_path / "policy" / venv / "lib").mkdir(parents=True)
        (tmp_path / "policy" / venv / "lib" / "site.py").write_text("import tests\n")
    (tmp_path / "policy" / "pack-env" / "pyvenv.cfg").write_text("")
    (tmp_path / "policy" / "rules.py").write_text("import json\n")
    assert modules_of(("policy",), repo=tmp_path) == [tmp_path / "policy" / "rules.py"]
