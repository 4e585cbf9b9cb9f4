"""Runs the fedobs policy pack over a plan recorded under mocks, as ``pulumi preview --policy-pack`` would.

No Pulumi CLI runs here, so this module plays the engine's part of the analyzer protocol:

* :func:`analyze_request` turns a :class:`~offline.engine.RecordedResource` into the ``AnalyzeRequest``
  the engine sends a policy pack for that resource: its inputs marshalled the way the engine marshals
  them for analyzers (secret inputs as secret-signature objects, keys starting ``__`` dropped), its
  options (``protect``, ``ignoreChanges``, ``parent``, ``additionalSecretOutputs``) and its provider
  resource with that provider's inputs. :func:`analyze_stack_request` does the same for the
  end-of-run ``AnalyzeStackRequest`` (resources with their recorded outputs, secret where the inputs
  or ``additionalSecretOutputs`` were, parents and dependencies).
* :class:`PackRunner` hands those requests to pulumi-policy's own analyzer servicer (the object a
  ``PolicyPack`` serves over gRPC) holding the pack's policies, after
  :func:`policy.rules.keep_secret_markers` exactly as ``policy/__main__.py`` applies it, with the stack's
  config in ``PULUMI_CONFIG`` as the CLI passes it. So the rules receive ``ResourceValidationArgs`` and
  ``StackValidationArgs`` built by the SDK itself, from the same wire form.
* :func:`validation_args` builds ``ResourceValidationArgs`` directly (for hand-made resources in unit
  tests); :func:`recorded_validation_args` builds them for a recorded resource through the same SDK path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2
from pulumi.runtime import config as runtime_config
from pulumi.runtime import proto
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
)
from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import unknown_checking_proxy

from offline.engine import RecordedResource, Recording, engine_form, load_stack_file
from policy import rules


@dataclass(frozen=True)
class Violation:
    """One diagnostic the pack returned."""

    policy: str
    urn: str
    message: str
    enforcement_level: str

    def __str__(self) -> str:
        return f"[{self.policy}] {self.urn}: {self.message}"


def _join(path: str, key: str | int) -> str:
    # The same path form as offline.engine records secret inputs with.
    return f"{path}.{key}" if path else str(key)


def _wire(value: Any, path: str, secret_paths: set[str]) -> Any:
    if isinstance(value, dict):
        inner: Any = {k: _wire(v, _join(path, k), secret_paths) for k, v in value.items()}
    elif isinstance(value, list):
        inner = [_wire(v, _join(path, i), secret_paths) for i, v in enumerate(value)]
    else:
        inner = value
    if path in secret_paths:
        return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": inner}
    return inner


def wire_properties(values: Mapping[str, Any], secret_paths: set[str]) -> struct_pb2.Struct:
    """Properties as the engine marshals them for an analyzer (``KeepSecrets``, ``SkipInternalKeys``)."""
    struct = struct_pb2.Struct()
    struct.update({k: _wire(v, k, secret_paths) for k, v in values.items() if not k.startswith("__")})
    return struct


def _provider_of(recording: Recording, resource: RecordedResource) -> RecordedResource | None:
    # A provider reference is "<provider urn>::<provider id>".
    if not resource.provider:
        return None
    return recording.by_urn(resource.provider.rsplit("::", 1)[0])


def _options(resource: RecordedResource) -> proto.AnalyzerResourceOptions:
    return proto.AnalyzerResourceOptions(
        protect=resource.protect,
        ignoreChanges=list(resource.ignore_changes),
        additionalSecretOutputs=list(resource.additional_secret_outputs),
        parent=resource.parent,
    )


def _provider_message(recording: Recording, resource: RecordedResource) -> proto.AnalyzerProviderResource | None:
    provider = _provider_of(recording, resource)
    if provider is None:
        return None
    return proto.AnalyzerProviderResource(
        type=provider.type,
        name=provider.name,
        urn=provider.urn,
        properties=wire_properties(provider.inputs, provider.secret_inputs),
    )


def analyze_request(recording: Recording, resource: RecordedResource) -> proto.AnalyzeRequest:
    """What the engine sends the pack before it creates or updates ``resource``."""
    request = proto.AnalyzeRequest(
        urn=resource.urn,
        type=resource.type,
        name=resource.name,
        properties=wire_properties(resource.inputs, resource.secret_inputs),
        options=_options(resource),
    )
    provider = _provider_message(recording, resource)
    if provider is not None:
        request.provider.CopyFrom(provider)
    return request


def analyze_stack_request(recording: Recording) -> proto.AnalyzeStackRequest:
    """What the engine sends the pack once every resource of the run is known."""
    resources = []
    for resource in recording.resources:
        secret = set(resource.secret_inputs) | set(resource.additional_secret_outputs)
        message = proto.AnalyzerResource(
            urn=resource.urn,
            type=resource.type,
            name=resource.name,
            properties=wire_properties(resource.outputs or resource.inputs, secret),
            options=_options(resource),
            parent=resource.parent,
            dependencies=list(resource.dependencies),
        )
        provider = _provider_message(recording, resource)
        if provider is not None:
            message.provider.CopyFrom(provider)
        resources.append(message)
    return proto.AnalyzeStackRequest(resources=resources)


def cli_config(stack: str) -> dict[str, str]:
    """The stack's config as the CLI hands it to a policy pack in ``PULUMI_CONFIG``: every value a string,
    structured values as JSON (``secure:`` values are placeholders here, as in the offline engine)."""
    return engine_form(load_stack_file(stack)[0])


@contextmanager
def stack_config(config: Mapping[str, str] | None) -> Iterator[None]:
    """``PULUMI_CONFIG`` set as the CLI sets it for the pack process; the SDK's runtime config restored after."""
    saved_env = os.environ.get("PULUMI_CONFIG")
    saved_config = dict(runtime_config.CONFIG.get())
    if config is None:
        os.environ.pop("PULUMI_CONFIG", None)
    else:
        os.environ["PULUMI_CONFIG"] = json.dumps(dict(config))
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("PULUMI_CONFIG", None)
        else:
            os.environ["PULUMI_CONFIG"] = saved_env
        # The SDK copies PULUMI_CONFIG into a process-wide map on every analysis; put it back.
        current = runtime_config.CONFIG.get()
        current.clear()
        current.update(saved_config)


class PackRunner:
    """The pack's policies behind pulumi-policy's own analyzer, fed the requests the engine would send."""

    def __init__(self, policies: list[Policy] | None = None) -> None:
        rules.keep_secret_markers()
        self.servicer = _PolicyAnalyzerServicer(
            rules.PACK_NAME, "0.1.0", policies if policies is not None else rules.policies(), EnforcementLevel.MANDATORY
        )

    def _violations(self, response: proto.AnalyzeResponse, default_urn: str = "") -> list[Violation]:
        return [
            Violation(d.policyName, d.urn or default_urn, d.message, proto.EnforcementLevel.Name(d.enforcementLevel))
            for d in response.diagnostics
        ]

    def analyze(self, request: proto.AnalyzeRequest) -> list[Violation]:
        response = self.servicer.Analyze(request, None)  # type: ignore[no-untyped-call]
        return self._violations(response, request.urn)

    def analyze_stack(self, request: proto.AnalyzeStackRequest) -> list[Violation]:
        response = self.servicer.AnalyzeStack(request, None)  # type: ignore[no-untyped-call]
        return self._violations(response)

    def run(self, recording: Recording, config: Mapping[str, str] | None = None) -> list[Violation]:
        """Every resource analyzed as it is registered, then the whole stack, as a preview runs the pack."""
        with stack_config(config):
            found: list[Violation] = []
            for resource in recording.resources:
                found += self.analyze(analyze_request(recording, resource))
            found += self.analyze_stack(analyze_stack_request(recording))
        return found


def validation_args(
    resource_type: str,
    props: Mapping[str, Any],
    *,
    name: str = "example",
    protect: bool = False,
    urn: str | None = None,
) -> ResourceValidationArgs:
    """``ResourceValidationArgs`` for a hand-made resource. Put ``pulumi_policy.Secret(...)`` where the engine
    would send a secret (what :func:`policy.rules.keep_secret_markers` makes the SDK hand the rules)."""
    options = PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    return ResourceValidationArgs(
        resource_type,
        unknown_checking_proxy(dict(props)),
        urn or f"urn:pulumi:test::fedobs::{resource_type}::{name}",
        name,
        options,
        None,
    )


def recorded_validation_args(recording: Recording, resource: RecordedResource) -> ResourceValidationArgs:
    """The ``ResourceValidationArgs`` a rule receives for a recorded resource in a real preview: built from
    the engine's wire form with the deserializer ``keep_secret_markers`` installs and the SDK's proxy."""
    request = analyze_request(recording, resource)
    props = unknown_checking_proxy(rules.deserialize_keeping_secrets(json_format.MessageToDict(request.properties)))
    options = PolicyResourceOptions(
        request.options.protect,
        list(request.options.ignoreChanges),
        None,
        list(request.options.aliases),
        PolicyCustomTimeouts(0, 0, 0),
        list(request.options.additionalSecretOutputs),
        request.options.parent or None,
    )
    return ResourceValidationArgs(request.type, props, request.urn, request.name, options, None)
