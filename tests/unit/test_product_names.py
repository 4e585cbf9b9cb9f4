"""One type per concept: no class name is defined twice in the product's modules (issue 16).

The modules are parsed with ``ast`` (nothing is imported or run); every ``class`` statement counts,
nested ones included, so two programs cannot each grow their own ``VaultClient`` or ``UsageError``
again, and an error class of the in-pod programs cannot share a name with one of the engine's."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("programs", "components", "policy", "offline", "config.py", "stack.py", "__main__.py")


def product_files() -> list[Path]:
    files: list[Path] = []
    for name in PRODUCT:
        path = REPO / name
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def class_definitions(files: list[Path], root: Path = REPO) -> dict[str, list[str]]:
    """Class name -> every ``file:line`` (relative to ``root``) defining it."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ClassDef):
                found[node.name].append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_the_product_modules_are_all_found() -> None:
    files = {str(p.relative_to(REPO)) for p in product_files()}
    for expected in (
        "programs/vault_http.py",
        "programs/errors.py",
        "programs/cert_sync/sync.py",
        "programs/raft_snapshot/snapshot.py",
        "programs/vault_bootstrap/bootstrap.py",
        "components/vault.py",
        "offline/engine.py",
        "policy/rules.py",
        "config.py",
        "stack.py",
    ):
        assert expected in files


def test_no_class_name_is_defined_twice() -> None:
    twice = {name: places for name, places in class_definitions(product_files()).items() if len(places) > 1}
    assert twice == {}, "class names defined more than once: " + "; ".join(
        f"{name} at {', '.join(places)}" for name, places in sorted(twice.items())
    )


def test_the_check_sees_a_duplicate(tmp_path: Path) -> None:
    one, two = tmp_path / "one.py", tmp_path / "two.py"
    one.write_text("class VaultClient:\n    class Inner: ...\n")
    two.write_text("def f():\n    class Inner: ...\nclass VaultClient(object): ...\nclass Only: ...\n")
    assert class_definitions([one, two], tmp_path) == {
        "VaultClient": ["one.py:1", "two.py:3"],
        "Inner": ["one.py:2", "two.py:2"],
        "Only": ["two.py:4"],
    }
