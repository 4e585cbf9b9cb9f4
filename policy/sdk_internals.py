"""Every use fedobs makes of Pulumi SDK internals, behind a check of the SDK versions it was verified with.

The Python SDK (``pulumi``) and the policy SDK (``pulumi-policy``) are pinned (``requirements.txt``,
``policy/requirements.txt``); their public APIs are used anywhere, but what is *not* their public API
(private modules and functions, names replaced at run time, wire-format constants) is used only
through this module:

* the offline engine (``offline/engine.py``) runs the program under the SDK's mocks and records what
  the engine would see: it subclasses ``pulumi.runtime.mocks.MockMonitor`` (and relies on its
  ``resources`` registry), deserialises requests with ``pulumi.runtime.rpc`` (keeping unknowns and the
  secret wire form), runs the program with ``pulumi.runtime.stack.run_pulumi_func`` and
  ``pulumi.runtime.sync_await._sync_await``, resets ``pulumi.runtime.settings.ROOT`` and reads the
  root stack's ``outputs``;
* the policy pack (``policy/rules.py``) replaces ``pulumi_policy.policy.deserialize_properties`` so
  that validations see which inputs the engine sent as secrets (:func:`keep_secret_markers`), builds
  on ``pulumi_policy.deserialize`` (its deserialiser and signature constants) and reads unknown values
  through ``pulumi_policy.proxy`` (its sentinels and ``UnknownValueError``).

Importing this module checks the installed versions of both SDKs against :data:`PINNED` (with
``importlib.metadata``) before anything else, and fails with :class:`SdkVersionError` naming the
package, the pinned and the found version and what to re-verify when they differ: a moved SDK fails
at once and clearly instead of recording or validating something subtly different.

Why here, in ``policy/``: the pack runs in its own virtual environment (``policy/venv``, with
``policy/requirements.txt`` only) with the pack directory, not the repository, as its root
(``python -m pulumi.policy <engine> .`` in ``policy/``), so the pack can import nothing outside
``policy/``; the rest of the repository imports ``policy`` as a package from the repository root
(``from policy import sdk_internals``). Both environments install both pinned SDKs (the program's
``.venv`` gets ``pulumi-policy`` from ``requirements-dev.txt``), so one module can check and wrap both.
This module imports nothing of the repository.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from types import MappingProxyType
from typing import Any, Final, TypeVar

T = TypeVar("T")

#: The SDK versions whose internals this module was verified against (keep equal to the requirements files).
PINNED: Final[Mapping[str, str]] = MappingProxyType({"pulumi": "3.272.0", "pulumi-policy": "1.21.0"})

#: What to re-read in each SDK's source before raising its pin (the tests name what they prove).
REVERIFY: Final[Mapping[str, str]] = MappingProxyType(
    {
        "pulumi": (
            "pulumi.runtime.mocks.MockMonitor (RegisterResource, ReadResource, resources), "
            "pulumi.runtime.rpc (deserialize_properties with keep_unknowns, the secret wire form, Unknown), "
            "pulumi.runtime.stack.run_pulumi_func, pulumi.runtime.sync_await._sync_await, "
            "pulumi.runtime.settings.ROOT and the root Stack's outputs"
        ),
        "pulumi-policy": (
            "pulumi_policy.policy still looks deserialize_properties up in its module on every analysis, "
            "pulumi_policy.deserialize (deserialize_properties, SPECIAL_SIG_KEY, SPECIAL_SECRET_SIG), "
            "pulumi_policy.proxy (the UNKNOWN_*_VALUE sentinels, UnknownValueError)"
        ),
    }
)


class SdkVersionError(RuntimeError):
    """An installed SDK is not the version whose internals fedobs was verified against."""


def installed_version(package: str) -> str | None:
    """The installed version of ``package`` (a distribution name), or None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def version_problems() -> list[str]:
    """One message per pinned SDK whose installed version differs from its pin (empty when all match)."""
    problems = []
    for package, pinned in PINNED.items():
        found = installed_version(package)
        if found != pinned:
            problems.append(
                f"{package}: fedobs uses internals of {package} {pinned}, but "
                f"{'it is not installed' if found is None else f'{found} is installed'}. "
                f"Re-verify {REVERIFY[package]} against {package} {found or '(none)'}: read their source, run "
                "tests/unit/test_sdk_internals.py, test_policy_pack.py and the engine's tests, then update "
                "PINNED in policy/sdk_internals.py with requirements.txt and policy/requirements.txt."
            )
    return problems


def check_pinned_versions() -> None:
    """Raise :class:`SdkVersionError` unless every SDK in :data:`PINNED` is installed at its pinned version."""
    problems = version_problems()
    if problems:
        raise SdkVersionError("Pulumi SDK version check failed (policy/sdk_internals.py):\n" + "\n".join(problems))


# Checked before any internal is imported: an SDK that moved may not even have these names any more.
check_pinned_versions()

from pulumi.output import Unknown as _Unknown  # noqa: E402
from pulumi.runtime import mocks as _mocks  # noqa: E402
from pulumi.runtime import rpc as _rpc  # noqa: E402
from pulumi.runtime import settings as _settings  # noqa: E402
from pulumi.runtime.stack import run_pulumi_func as _run_pulumi_func  # noqa: E402
from pulumi.runtime.sync_await import _sync_await  # noqa: E402
from pulumi_policy import Secret  # noqa: E402
from pulumi_policy import deserialize as _policy_deserialize  # noqa: E402
from pulumi_policy import policy as _policy  # noqa: E402
from pulumi_policy import proxy as _proxy  # noqa: E402

# --- pulumi: the offline engine -------------------------------------------------------------------------

#: The SDK's mock resource monitor; the engine's recording monitor extends it.
MockMonitor = _mocks.MockMonitor


def deserialize_properties(struct: Any, keep_unknowns: bool = False) -> Any:
    """A request's properties as the SDK deserialises them: secrets stay in their wire form (a dict with
    the secret signature, see :func:`is_secret`), unknowns are :func:`is_unknown` values when kept."""
    return _rpc.deserialize_properties(struct, keep_unknowns)


def is_secret(value: Any) -> bool:
    """Whether a deserialised value is a secret in the SDK's wire form."""
    return bool(_rpc.is_rpc_secret(value))


def unwrap_secret(value: Any) -> Any:
    """The value inside a secret in the SDK's wire form (anything else is returned as is)."""
    return _rpc.unwrap_rpc_secret(value)


def wrap_secret(value: Any) -> Any:
    """``value`` as a secret in the SDK's wire form (for tests of the recording)."""
    return _rpc.wrap_rpc_secret(value)


def is_unknown(value: Any) -> bool:
    """Whether a deserialised value is an unknown (a preview value not known yet)."""
    return isinstance(value, _Unknown)


def unknown() -> Any:
    """An unknown as :func:`deserialize_properties` returns it when it keeps unknowns."""
    return _Unknown()  # type: ignore[no-untyped-call]


def sync_await(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` on the SDK's event loop (the SDK's own ``_sync_await``)."""
    return _sync_await(awaitable)


def run_program_function(function: Callable[[], None]) -> None:
    """Run ``function`` as the SDK runs a program (``run_pulumi_func``: then wait for every registration)."""
    _sync_await(_run_pulumi_func(function))


def reset_root_resource() -> None:
    """Forget the root stack resource, so that ``pulumi.runtime.set_mocks`` creates a new one."""
    _settings.ROOT.set(None)


def root_stack_outputs() -> dict[str, Any]:
    """The outputs the program exported (``pulumi.export``) on the root stack resource, unresolved."""
    root = _settings.get_root_resource()
    outputs = getattr(root, "outputs", None) if root is not None else None
    return dict(outputs or {})


# --- pulumi-policy: the policy pack ---------------------------------------------------------------------

#: What a property the engine does not know yet reads as through the SDK's proxy (one per value type).
UNKNOWN_SENTINELS: Final = frozenset(
    {
        _proxy.UNKNOWN_BOOLEAN_VALUE,
        _proxy.UNKNOWN_NUMBER_VALUE,
        _proxy.UNKNOWN_STRING_VALUE,
        _proxy.UNKNOWN_ARRAY_VALUE,
        _proxy.UNKNOWN_ASSET_VALUE,
        _proxy.UNKNOWN_ARCHIVE_VALUE,
        _proxy.UNKNOWN_OBJECT_VALUE,
    }
)
#: Raised by the SDK's proxy when a rule reads an unknown value.
UnknownValueError = _proxy.UnknownValueError
#: The SDK's own deserialiser of analyzer properties (secrets unwrapped, no marker left).
SDK_DESERIALIZE_PROPERTIES: Final[Callable[..., dict[str, Any]]] = _policy_deserialize.deserialize_properties


def deserialize_keeping_secrets(props: dict[str, Any], proxy_secrets: bool = False) -> dict[str, Any]:
    """The SDK's property deserializer, except that a secret the engine sent arrives as ``Secret(value)``.

    ``proxy_secrets=True`` (the SDK's remediation path, unused by this pack) is left to the SDK.
    """
    if proxy_secrets:
        return SDK_DESERIALIZE_PROPERTIES(props, True)
    return {key: _keep_secret(value) for key, value in props.items()}


def _keep_secret(value: Any) -> Any:
    if isinstance(value, list):
        return [_keep_secret(v) for v in value]
    if isinstance(value, dict):
        signature = value.get(_policy_deserialize.SPECIAL_SIG_KEY)
        if signature == _policy_deserialize.SPECIAL_SECRET_SIG:
            return Secret(_keep_secret(value.get("value")))
        if signature is not None:  # an asset or archive: the SDK's own form
            return SDK_DESERIALIZE_PROPERTIES({"value": value})["value"]
        return {key: _keep_secret(v) for key, v in value.items()}
    return value


def keep_secret_markers() -> None:
    """Make pulumi-policy hand validations ``Secret`` wrappers where the engine sent secrets.

    pulumi-policy 1.21 unwraps secrets before a validation runs. Its analyzer looks
    ``deserialize_properties`` up in ``pulumi_policy.policy`` on every call, so replacing that one name
    with :func:`deserialize_keeping_secrets` is enough; anything other than the SDK's own function
    there is refused rather than silently replaced.
    """
    current = getattr(_policy, "deserialize_properties", None)
    if current is deserialize_keeping_secrets:
        return
    if current is not SDK_DESERIALIZE_PROPERTIES:
        raise RuntimeError(
            "pulumi_policy.policy.deserialize_properties is not the SDK's own function; "
            "the fedobs pack cannot see which inputs are secret"
        )
    _policy.deserialize_properties = deserialize_keeping_secrets  # type: ignore[attr-defined]
