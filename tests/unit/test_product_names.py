"""One type per concept: no class name is defined twice in the product's modules (issue 16).

The modules are parsed with ``ast`` (nothing is imported or run); every ``class`` statement counts,
nested ones included, so two programs cannot each grow their own ``VaultClient`` or ``UsageError``
again, and an error class of the in-pod programs cannot share a name with one of the engine's."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from offline.engine import Recording

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


def test_every_component_type_token_ends_in_its_class_name(hub: Recording, edge: Recording) -> None:
    """A component's type token names its class (``fedobs:<module>:<Class>``), as registered."""
    components = [r for recording in (hub, edge) for r in recording.resources if r.type.startswith("fedobs:")]
    classes = {
        node.name
        for path in sorted((REPO / "components").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and any(ast.unparse(base) == "pulumi.ComponentResource" for base in node.bases)
    }
    registered = {r.type.rsplit(":", 1)[1] for r in components}
    assert registered == classes, f"tokens not ending in a component class: {sorted(registered ^ classes)}"


def test_renamed_tokens_keep_their_former_identity(hub: Recording) -> None:
    """Without the alias the engine would replace every child of the renamed component."""
    for token, former in (
        ("fedobs:vault:VaultConfiguration", "fedobs:vault:Configuration"),
        ("fedobs:pki:OtlpPki", "fedobs:pki:OtlpMtls"),
    ):
        (component,) = hub.of_type(token)
        assert [alias.get("type") for alias in component.aliases] == [former]
