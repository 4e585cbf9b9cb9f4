"""The offline engine's shortcuts (docs/performance.md) answer exactly as the SDK's own code does."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pulumi.runtime.resource import create_urn as sdk_create_urn
from pulumi.runtime.sync_await import _sync_await

from offline import engine
from offline.engine import ChildError, in_child, run_program

SECRET = {rpc._special_sig_key: rpc._special_secret_sig, "value": "s3cr3t"}


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"a": "x", "n": 3, "f": 2.5, "t": True, "gone": None},
        {"nested": {"keep": None, "empty": {}, "list": [1, None, "x", {"k": []}]}, "empty": [], "none": None},
        {"secret": SECRET, "inside": {"secret": SECRET}},
        {"unknown": Unknown(), "deep": {"u": [Unknown(), "x"]}},
    ],
)
def test_plain_state_serialises_as_the_sdk_serialises_it(state: dict[str, Any]) -> None:
    assert engine._is_plain(state)
    assert engine._serialize_plain(state) == _sync_await(rpc.serialize_properties(state, {}))


def test_what_is_not_plain() -> None:
    assert not engine._is_plain({"a": [object()]})
    assert not engine._is_plain({"a": ("tuple",)})


@pytest.mark.parametrize(
    ("name", "type_", "parent"),
    [
        ("hub-vault", "fedobs:vault:Vault", None),
        ("hub-vault-release", "kubernetes:helm.sh/v3:Release", "urn:pulumi:hub::fedobs::fedobs:vault:Vault::hub-vault"),
        ("x", "a:b:C", "urn:pulumi:hub::fedobs::fedobs:a:Outer$fedobs:b:Inner::y"),
        ("x", "a:b:C", ""),
    ],
)
def test_urns_are_the_sdks(name: str, type_: str, parent: str | None) -> None:
    ours = engine._create_urn(name, type_, parent, "fedobs", "hub")
    theirs = sdk_create_urn(name, type_, parent, "fedobs", "hub")
    assert _sync_await(ours.future()) == _sync_await(theirs.future())
    assert _sync_await(ours.is_known()) and not _sync_await(ours.is_secret())


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


def test_children_start_with_the_cyclic_collector_off_and_report_failures() -> None:
    assert in_child(_child_state, 21) == (42, False)
    assert gc.isenabled()
    with pytest.raises(ChildError, match="KeyError: 'nope'"):
        in_child(_child_fails)
