"""The offline engine runs the program as the SDK's mocks do, without shortcuts (docs/performance.md):
children start as their parent (the cyclic garbage collector on), failures come back as errors, and
inputs a recording cannot carry are refused with the resource named."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from offline.engine import ChildError, in_child, run_program


def test_a_program_with_a_resource_reference_input_fails_with_a_clear_error(tmp_path: Path) -> None:
    program = tmp_path / "__main__.py"
    program.write_text(
        "import pulumi\n"
        "import pulumi_random as random\n"
        "a = random.RandomPassword('a', length=12)\n"
        "pulumi.CustomResource('test:index:Thing', 'b', {'ref': a})\n"
    )
    recording = run_program("hub", {}, program=program)
    assert recording.error is not None
    assert "test:index:Thing 'b': the offline engine records plain inputs only" in str(recording.error)
    assert [r.name for r in recording.resources] == ["a"]


def _child_state(value: int) -> tuple[int, bool]:
    return value * 2, gc.isenabled()


def _child_fails() -> None:
    raise KeyError("nope")


def test_children_start_as_their_parent_and_report_failures() -> None:
    # The cyclic collector stays on in the child (issue 16 removed the benchmark's gc.disable()).
    assert in_child(_child_state, 21) == (42, True)
    assert gc.isenabled()
    with pytest.raises(ChildError, match="KeyError: 'nope'"):
        in_child(_child_fails)
