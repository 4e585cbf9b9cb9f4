"""Targets, the results page (``results.md``) and its plot (``results.png``): pure, given the figures."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Section", "Target", "missed", "render_markdown", "write_plot"]

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Target:
    """One figure with its limit: ``value <op> limit``."""

    figure: str
    value: float
    op: str
    limit: float
    unit: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS:
            raise ValueError(f"unknown comparison {self.op!r}")

    @property
    def met(self) -> bool:
        return _OPERATORS[self.op](self.value, self.limit)

    def shown(self, value: float) -> str:
        text = f"{value:.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
        return f"{text}{self.unit}"


@dataclass
class Section:
    """A part of the page: a title, paragraphs or tables as markdown lines, and its targets."""

    title: str
    lines: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def missed(targets: Sequence[Target]) -> list[Target]:
    return [t for t in targets if not t.met]


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table (cells are str()-ed, pipes escaped)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    return [
        f"| {' | '.join(map(cell, header))} |",
        f"|{'|'.join('---' for _ in header)}|",
        *(f"| {' | '.join(map(cell, row))} |" for row in rows),
    ]


def render_markdown(title: str, context: Sequence[str], sections: Sequence[Section], plot: str | None) -> str:
    """The whole page: context, the targets of every section in one table, then each section."""
    targets = [t for s in sections for t in s.targets]
    lines = [f"# {title}", "", *context, ""]
    if targets:
        verdict = (
            "every target met" if not missed(targets) else f"{len(missed(targets))} of {len(targets)} targets missed"
        )
        lines += [
            "## Targets",
            "",
            f"**{verdict}**",
            "",
            *table(
                ["figure", "value", "target", "met"],
                [
                    [t.figure, t.shown(t.value), f"{t.op} {t.shown(t.limit)}", "yes" if t.met else "**no**"]
                    for t in targets
                ],
            ),
            "",
        ]
    if plot:
        lines += [f"![the figures]({plot})", ""]
    for section in sections:
        lines += [f"## {section.title}", "", *section.lines, ""]
    return "\n".join(lines).rstrip() + "\n"


def write_plot(path: Path, panels: Sequence[Mapping[str, Any]]) -> None:
    """One PNG with a panel per figure. A panel: ``title``, ``kind`` (``line`` or ``bar``),
    ``x`` and ``y`` (or ``series``, a list of ``{label, y}``; or ``labels`` and ``values`` for bars), optional
    ``logx`` (a logarithmic x axis), ``ylabel`` and ``limit``
    (a dashed horizontal line) and ``baseline`` (a dotted one, with ``baseline_label``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2
    rows = max(1, (len(panels) + columns - 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(11, 4 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, panel in zip(flat, panels, strict=False):
        if panel["kind"] == "line":
            for series in panel.get("series") or [{"y": panel["y"]}]:
                ax.plot(panel["x"], series["y"], marker="o", label=series.get("label"))
            ax.set_xlabel(panel.get("xlabel", ""))
            if panel.get("logx"):
                ax.set_xscale("log")
        else:
            bars = ax.bar(panel["labels"], panel["values"], color=panel.get("colors"))
            ax.bar_label(bars, fmt="%.2f")
            ax.tick_params(axis="x", labelsize=8)
        if "limit" in panel:
            ax.axhline(panel["limit"], linestyle="--", color="tab:red", label=panel.get("limit_label", "target"))
        if "baseline" in panel:
            ax.axhline(panel["baseline"], linestyle=":", color="tab:gray", label=panel.get("baseline_label", ""))
        if "limit" in panel or "baseline" in panel or "series" in panel:
            ax.legend(fontsize=8)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.set_ylim(bottom=0)
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
