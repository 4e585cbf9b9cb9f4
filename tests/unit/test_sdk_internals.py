"""policy/sdk_internals.py: the pinned-version check, and each wrapped SDK internal behaving as the SDK's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pulumi.runtime.sync_await import _sync_await
from pulumi_policy import Secret
from pulumi_policy import policy as sdk_policy
from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY
from pulumi_policy.deserialize import deserialize_properties as sdk_deserialize_properties
from pulumi_policy.proxy import UNKNOWN_OBJECT_VALUE, UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy import rules, sdk_internals
from policy.rules import reveal

REPO = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))  # type: ignore[misc]


# --- the version fence -----------------------------------------------------------------------------------


def test_the_pins_are_the_requirements_and_the_installed_versions() -> None:
    program, pack, dev = (
        pins(REPO / "requirements.txt"),
        pins(REPO / "policy/requirements.txt"),
        pins(REPO / "requirements-dev.txt"),
    )
    assert dict(sdk_internals.PINNED) == {"pulumi": program["pulumi"], "pulumi-policy": pack["pulumi-policy"]}
    assert pack["pulumi"] == program["pulumi"] and dev["pulumi-policy"] == pack["pulumi-policy"]
    assert sdk_internals.version_problems() == []
    sdk_internals.check_pinned_versions()
    assert set(sdk_internals.REVERIFY) == set(sdk_internals.PINNED)


@pytest.mark.parametrize(
    ("package", "found", "shown"),
    [
        ("pulumi", "3.273.0", "3.273.0 is installed"),
        ("pulumi-policy", "1.22.0", "1.22.0 is installed"),
        ("pulumi-policy", None, "it is not installed"),
    ],
)
def test_a_moved_sdk_fails_naming_package_versions_and_what_to_reverify(
    monkeypatch: pytest.MonkeyPatch, package: str, found: str | None, shown: str
) -> None:
    real = sdk_internals.installed_version
    monkeypatch.setattr(sdk_internals, "installed_version", lambda name: found if name == package else real(name))
    with pytest.raises(sdk_internals.SdkVersionError) as raised:
        sdk_internals.check_pinned_versions()
    message = str(raised.value)
    pinned = sdk_internals.PINNED[package]
    assert f"{package}: fedobs uses internals of {package} {pinned}, but {shown}" in message
    assert sdk_internals.REVERIFY[package] in message
    assert "tests/unit/test_sdk_internals.py" in message and "policy/sdk_internals.py" in message
    assert len(sdk_internals.version_problems()) == 1  # only the moved package is named


def test_importing_the_fence_under_a_moved_sdk_fails_before_anything_else() -> None:
    """In a fresh interpreter, as the engine and the pack import it."""
    code = (
        "from importlib import metadata\n"
        "real = metadata.version\n"
        "metadata.version = lambda name: '3.999.0' if name == 'pulumi' else real(name)\n"
        "import policy.sdk_internals\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0
    assert "SdkVersionError" in done.stderr
    assert "pulumi: fedobs uses internals of pulumi 3.272.0, but 3.999.0 is installed" in done.stderr


# --- pulumi (the offline engine) --------------------------------------------------------------------------

SECRET_WIRE = {rpc._special_sig_key: rpc._special_secret_sig, "value": "s3cr3t"}


def test_deserialisation_is_the_sdks_keeping_secrets_and_unknowns() -> None:
    state = {"a": "x", "n": 3, "secret": SECRET_WIRE, "deep": {"u": rpc.UNKNOWN, "l": [1, "y"]}}
    struct = _sync_await(rpc.serialize_properties(state, {}))
    kept = sdk_internals.deserialize_properties(struct, keep_unknowns=True)
    theirs = rpc.deserialize_properties(struct, True)
    assert kept.keys() == theirs.keys() == state.keys() and kept["secret"] == theirs["secret"]
    assert sdk_internals.is_secret(kept["secret"]) and sdk_internals.unwrap_secret(kept["secret"]) == "s3cr3t"
    assert sdk_internals.is_unknown(kept["deep"]["u"]) and isinstance(kept["deep"]["u"], Unknown)
    assert kept["deep"]["l"] == theirs["deep"]["l"] == [1, "y"] and kept["n"] == theirs["n"] == 3
    assert type(theirs["deep"]["u"]) is Unknown
    assert not sdk_internals.is_secret(kept["deep"]) and sdk_internals.unwrap_secret("plain") == "plain"
    assert sdk_internals.wrap_secret("v") == rpc.wrap_rpc_secret("v") and sdk_internals.is_unknown(
        sdk_internals.unknown()
    )


def test_sync_await_and_running_a_program_function_are_the_sdks() -> None:
    output = pulumi.Output.secret("v")
    assert sdk_internals.sync_await(output.future()) == "v"
    assert sdk_internals.sync_await(output.is_secret())
    ran: list[bool] = []
    sdk_internals.run_program_function(lambda: ran.append(True))
    assert ran == [True]
    with pytest.raises(ValueError, match="boom"):
        sdk_internals.run_program_function(lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_the_mock_monitor_is_the_sdks() -> None:
    from pulumi.runtime.mocks import MockMonitor

    assert sdk_internals.MockMonitor is MockMonitor
    assert callable(MockMonitor.RegisterResource) and callable(MockMonitor.ReadResource)


# --- pulumi-policy (the pack) -----------------------------------------------------------------------------


def test_the_unknown_sentinels_are_what_the_proxy_raises_on() -> None:
    assert (
        UNKNOWN_STRING_VALUE in sdk_internals.UNKNOWN_SENTINELS
        and UNKNOWN_OBJECT_VALUE in sdk_internals.UNKNOWN_SENTINELS
    )
    assert len(sdk_internals.UNKNOWN_SENTINELS) == 7
    assert sdk_internals.UnknownValueError is UnknownValueError
    proxy = unknown_checking_proxy({"known": "x", "later": UNKNOWN_STRING_VALUE})
    with pytest.raises(sdk_internals.UnknownValueError):
        proxy["later"]


def shape(value: Any) -> Any:
    """Comparable form of deserialised values (assets compared by type and fields)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if hasattr(value, "__dict__"):
        return (type(value).__name__, shape(vars(value)))
    return value


@pytest.mark.parametrize(
    "props",
    [
        {},
        {"a": "x", "n": 3, "b": True, "none": None, "nested": {"l": [1, {"k": "v"}]}},
        {
            "s": {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": "p"},
            "in": [{SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": {"k": 1}}],
        },
        {"asset": {SPECIAL_SIG_KEY: "c44067f5952c0a294b673a41bacd8c17", "text": "hello"}},
    ],
)
def test_keeping_secrets_changes_nothing_but_the_secret_markers(props: dict[str, Any]) -> None:
    ours = sdk_internals.deserialize_keeping_secrets(props)
    theirs = sdk_deserialize_properties(props)
    assert shape(reveal(ours)) == shape(theirs)
    proxied, sdk_proxied = (
        sdk_internals.deserialize_keeping_secrets(props, True),
        sdk_deserialize_properties(props, True),
    )
    assert type(proxied) is type(sdk_proxied) and list(proxied) == list(sdk_proxied)  # the remediation path: the SDK's
    if "s" in props:
        assert isinstance(ours["s"], Secret) and ours["s"].value == "p" and theirs["s"] == "p"
        assert isinstance(ours["in"][0], Secret) and ours["in"][0].value == {"k": 1}


def test_keep_secret_markers_replaces_the_sdks_own_deserializer_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_policy, "deserialize_properties", sdk_deserialize_properties)
    assert sdk_internals.SDK_DESERIALIZE_PROPERTIES is sdk_deserialize_properties
    rules.keep_secret_markers()
    assert sdk_policy.deserialize_properties is sdk_internals.deserialize_keeping_secrets  # type: ignore[attr-defined]
    rules.keep_secret_markers()  # idempotent
    assert sdk_policy.deserialize_properties is sdk_internals.deserialize_keeping_secrets  # type: ignore[attr-defined]
    monkeypatch.setattr(sdk_policy, "deserialize_properties", lambda props, proxy_secrets=False: props)
    with pytest.raises(RuntimeError, match="not the SDK's own function"):
        sdk_internals.keep_secret_markers()
