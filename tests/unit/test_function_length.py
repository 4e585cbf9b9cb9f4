"""No function of the product's core is longer than a reader can hold.

Every function and method (nested ones included) of ``components/``, ``config.py`` and ``stack.py``
is measured with ``ast`` from its ``def`` line to its last line; one over ``MAX_LINES`` fails the
test, named by file, qualified name, line and length.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKED = ("components", "config.py", "stack.py")
MAX_LINES = 80


@dataclass(frozen=True)
class Function:
    module: str
    name: str
    line: int
    length: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.name} is {self.length} lines"


def modules_of(roots: tuple[str, ...], repo: Path = REPO) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        path = repo / root
        found.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return found


def functions_of(source: str, module: str) -> list[Function]:
    """Every function in ``source`` with its qualified name (``Class.method``, ``outer.inner``)."""
    found: list[Function] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                found.append(Function(module, prefix + child.name, child.lineno, length))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=module), "")
    return found


def too_long(paths: list[Path], limit: int = MAX_LINES, repo: Path = REPO) -> list[Function]:
    found: list[Function] = []
    for path in paths:
        module = path.relative_to(repo).as_posix()
        found.extend(f for f in functions_of(path.read_text(encoding="utf-8"), module) if f.length > limit)
    return found


def test_no_function_is_longer_than_the_limit() -> None:
    paths = modules_of(CHECKED)
    assert any(p.parent.name == "components" for p in paths), "no module found in components/"
    found = too_long(paths)
    assert not found, f"functions over {MAX_LINES} lines (split them into helpers):\n" + "\n".join(map(str, found))


def test_checker_names_file_function_and_length(tmp_path: Path) -> None:
    source = (
        "class C:\n"
        "    def method(self):\n"
        "        def inner():\n"
        "            pass\n"
        "        x = 1\n"
        "        return x\n"
        "\n"
        "def short():\n"
        "    pass\n"
    )
    module = tmp_path / "components" / "x.py"
    module.parent.mkdir()
    module.write_text(source)
    assert {f.name for f in functions_of(source, "x.py")} == {"C.method", "C.method.inner", "short"}
    found = too_long([module], limit=4, repo=tmp_path)
    assert [str(f) for f in found] == ["components/x.py:2: C.method is 5 lines"]
