"""Runs the real fedobs program under Pulumi's mocks and records every registered resource.

This is the one engine behind the offline plan (``make plan``), the unit tests and the
benchmarks: no Pulumi CLI, no credentials, no network. The program is ``__main__.py`` itself,
with the stack's config read from ``Pulumi.<stack>.yaml`` (secure values replaced by marked
placeholders, their keys flagged secret as the engine would; the programs image's placeholder
digest replaced by :data:`RELEASED_PROGRAMS_IMAGE`, see :func:`load_stack_file`).

The program runs on the SDK's own code, mocks and mock monitor included, with no shortcut of it
(``docs/performance.md``); what the engine needs of the SDK beyond its public API comes from
``policy/sdk_internals.py``, which checks the pinned SDK versions when imported.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import multiprocessing
import os
import runpy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

from components.programs_image import PLACEHOLDER as PROGRAMS_IMAGE_PLACEHOLDER
from components.vault import PGP_KEY_PLACEHOLDER_PREFIX
from components.versions import PROGRAMS_IMAGE_REPOSITORY

# Every SDK internal the engine uses comes from here (it checks the pinned SDK versions on import).
from policy import sdk_internals as sdk

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "fedobs"
#: Stands for a ``secure:`` value the plan cannot decrypt (long enough for length checks).
SECRET_PLACEHOLDER = "[secret-placeholder-value]"
#: Stands for the digest an operator puts in place of the shipped placeholder (``fedobs:programsImage``,
#: components/programs_image.py): no release exists here, so this names no real image. Its digest is the
#: sha256 of a sentence saying so, which makes it recognisable in a plan.
RELEASED_PROGRAMS_IMAGE = (
    f"{PROGRAMS_IMAGE_REPOSITORY}@sha256:"
    + hashlib.sha256(b"fedobs offline plan: stands in for the digest release.yml records").hexdigest()
)
PROGRAMS_IMAGE_KEY = "fedobs:programsImage"
VAULT_KEY = "fedobs:vault"


@dataclass
class RecordedResource:
    """One resource as the engine received it."""

    urn: str
    type: str
    name: str
    custom: bool
    inputs: dict[str, Any]
    secret_inputs: set[str]
    parent: str
    provider: str
    dependencies: list[str]
    protect: bool
    ignore_changes: list[str]
    additional_secret_outputs: list[str]
    #: The former identities the resource claims (``ResourceOptions.aliases``), each an alias URN or
    #: the fields of an alias spec (``{"type": ...}``) as the SDK sends them to the engine.
    aliases: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def is_secret_input(self, path: str) -> bool:
        """Whether the input at ``path`` reaches the engine as a secret (itself or an enclosing value)."""
        parts = path.split(".")
        return any(".".join(parts[:i]) in self.secret_inputs for i in range(1, len(parts) + 1))

    def get(self, path: str, default: Any = None) -> Any:
        """An input by dotted path (``metadata.name``, ``pools.0.type``)."""
        node: Any = self.inputs
        for part in path.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return default
        return node


@dataclass
class Recording:
    """Everything one program run registered, with queries over it."""

    stack: str
    resources: list[RecordedResource]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    error: BaseException | None = None

    def of_type(self, type_token: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> RecordedResource:
        found = [r for r in self.of_type(type_token) if name is None or r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_token)]
            raise LookupError(f"expected one {type_token} named {name!r}, found {len(found)} among {names}")
        return found[0]

    def by_urn(self, urn: str) -> RecordedResource | None:
        return self._by_urn.get(urn)

    @functools.cached_property
    def _by_urn(self) -> dict[str, RecordedResource]:
        # built on first use: callers look up every resource's parent and provider
        return {r.urn: r for r in self.resources}

    def children_of(self, urn: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.parent == urn]

    def kubernetes_objects(self) -> list[dict[str, Any]]:
        """Every Kubernetes object the stack would create, as the API would receive it."""
        objects = []
        for r in self.resources:
            if r.type.startswith("kubernetes:") and r.custom and "apiVersion" in r.inputs:
                obj = {k: v for k, v in r.inputs.items() if not k.startswith("__")}
                objects.append(obj)
        return objects


def _strip_secrets(value: Any, path: str, secret_paths: set[str]) -> Any:
    if sdk.is_secret(value):
        secret_paths.add(path)
        return _strip_secrets(sdk.unwrap_secret(value), path, secret_paths)
    if isinstance(value, dict):
        return {k: _strip_secrets(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_secrets(v, f"{path}.{i}" if path else str(i), secret_paths) for i, v in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        # The wire format has one number type; Kubernetes and Helm schemas want integers back.
        return int(value)
    return value


FAKE_KUBECONFIG = yaml.safe_dump(
    {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lke", "cluster": {"server": "https://mock.lke.invalid:443"}}],
        "users": [{"name": "lke-admin", "user": {"token": "mock-token"}}],
        "contexts": [{"name": "lke", "context": {"cluster": "lke", "user": "lke-admin"}}],
        "current-context": "lke",
    }
)


class FedobsMocks(pulumi.runtime.Mocks):
    """Provider stand-ins: outputs are the inputs plus what the real provider would compute."""

    def __init__(
        self,
        stack_references: Mapping[str, Mapping[str, Any]],
        provider_outputs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.stack_references = stack_references
        #: Outputs a real provider returned, by resource name, laid over the stand-ins' (the rig
        #: passes what it created on a real Vault, so the stack is recorded with those values).
        self.provider_outputs = provider_outputs or {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        digest = hashlib.sha256(f"{args.typ}/{args.name}".encode()).hexdigest()[:12]
        resource_id = f"{args.name}-{digest}"
        if args.typ == "linode:index/lkeCluster:LkeCluster":
            outputs["kubeconfig"] = base64.b64encode(FAKE_KUBECONFIG.encode()).decode()
            outputs["apiEndpoints"] = [f"https://{digest}.cpc.linodelke.net:443"]
            outputs["status"] = "ready"
        elif args.typ == "pulumi:pulumi:StackReference":
            name = args.inputs.get("name", args.name)
            if name not in self.stack_references:
                raise LookupError(f"no mocked outputs for stack reference {name!r}")
            outputs = {"name": name, "outputs": dict(self.stack_references[name]), "secretOutputNames": []}
        elif args.typ == "tls:index/privateKey:PrivateKey":
            outputs["privateKeyPem"] = f"-----BEGIN PRIVATE KEY-----\nmock-{digest}\n-----END PRIVATE KEY-----\n"
        elif args.typ == "tls:index/selfSignedCert:SelfSignedCert":
            outputs["certPem"] = f"-----BEGIN CERTIFICATE-----\nmock-{digest}\n-----END CERTIFICATE-----\n"
        elif args.typ == "vault:appRole/authBackendRole:AuthBackendRole":
            outputs["roleId"] = f"mock-role-id-{digest}"
        elif args.typ == "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId":
            outputs["secretId"] = f"mock-secret-id-{digest}"
        elif args.typ == "vault:index/token:Token":
            outputs["clientToken"] = f"mock-token-{digest}"
        elif args.typ == "random:index/randomPassword:RandomPassword":
            # A new value whenever the keepers change, as the provider does.
            keepers = json.dumps(args.inputs.get("keepers") or {}, sort_keys=True)
            outputs["result"] = f"mock-password-{hashlib.sha256((digest + keepers).encode()).hexdigest()[:16]}"
        elif args.typ.startswith("kubernetes:helm.sh/v3:Release"):
            outputs["status"] = {
                "name": args.inputs.get("name", args.name),
                "namespace": args.inputs.get("namespace", "default"),
                "status": "deployed",
            }
        outputs.update(self.provider_outputs.get(args.name, {}))
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        raise RuntimeError(f"the program made an invoke ({args.token}); fedobs programs must not read at plan time")


def _is_recordable(value: Any) -> bool:
    """Whether deserialised inputs hold only what JSON holds (secrets are dicts in their wire form) and
    unknowns: no resource references, assets or output values, which a recording cannot carry out of
    the child process."""
    if isinstance(value, dict):
        return all(_is_recordable(v) for v in value.values())
    if isinstance(value, list):
        return all(_is_recordable(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool) or sdk.is_unknown(value)


def _alias_fields(alias: Any) -> dict[str, Any]:
    """An ``Alias`` message as plain data: ``{"urn": ...}`` or the spec's fields that are set."""
    if alias.HasField("urn"):
        return {"urn": alias.urn}
    return {field.name: value for field, value in alias.spec.ListFields()}


class RecordingMonitor(sdk.MockMonitor):
    """A mock monitor that keeps what the engine would see: parents, providers, dependencies.

    ``RegisterResource`` is the SDK's ``MockMonitor.RegisterResource`` (the mocks get the deserialised
    inputs, their state is serialised back as the response and kept in ``resources``); the request
    is also deserialised for the recording, keeping unknowns and which inputs are secret. Inputs must
    be plain data: a resource reference, asset or output value among them is an error naming the
    resource (a recording of them could not leave the child process).
    """

    def __init__(self, mocks: FedobsMocks) -> None:
        super().__init__(mocks)
        self.recorded: list[RecordedResource] = []

    def RegisterResource(self, request: Any) -> Any:
        if request.type == "pulumi:pulumi:Stack":
            return super().RegisterResource(request)  # type: ignore[no-untyped-call]
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        # After the SDK's own call: it gives this thread the event loop a resource reference needs.
        raw_inputs = sdk.deserialize_properties(request.object, keep_unknowns=True)
        if not _is_recordable(raw_inputs):
            raise RuntimeError(
                f"{request.type} {request.name!r}: the offline engine records plain inputs only, "
                "not resource references, assets or output values"
            )
        self._record(request, response.urn, raw_inputs)
        return response

    def _record(self, request: Any, urn: str, raw_inputs: Any) -> None:
        secret_paths: set[str] = set()
        inputs = _strip_secrets(raw_inputs, "", secret_paths)
        self.recorded.append(
            RecordedResource(
                urn=urn,
                type=request.type,
                name=request.name,
                custom=bool(request.custom),
                inputs=inputs,
                secret_inputs=secret_paths,
                parent=request.parent,
                provider=request.provider,
                dependencies=list(request.dependencies),
                protect=bool(request.protect),
                ignore_changes=list(request.ignoreChanges),
                additional_secret_outputs=list(request.additionalSecretOutputs),
                aliases=[_alias_fields(alias) for alias in request.aliases],
            )
        )

    def ReadResource(self, request: Any) -> Any:
        response = super().ReadResource(request)  # type: ignore[no-untyped-call]
        self.recorded.append(
            RecordedResource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=True,
                inputs=_strip_secrets(sdk.deserialize_properties(request.properties), "", set()),
                secret_inputs=set(),
                parent=request.parent,
                provider=request.provider,
                dependencies=list(request.dependencies),
                protect=False,
                ignore_changes=[],
                additional_secret_outputs=list(request.additionalSecretOutputs),
            )
        )
        return response


def _placeholders(value: Any) -> tuple[Any, bool]:
    """Replace ``secure:`` values (which only the secrets provider can decrypt) by placeholders."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return SECRET_PLACEHOLDER, True
        found = False
        out = {}
        for k, v in value.items():
            out[k], inner = _placeholders(v)
            found = found or inner
        return out, found
    if isinstance(value, list):
        items = [_placeholders(v) for v in value]
        return [v for v, _ in items], any(s for _, s in items)
    return value, False


def load_stack_file(stack: str, root: Path = ROOT, *, released: bool = True) -> tuple[dict[str, Any], list[str]]:
    """Config of ``Pulumi.<stack>.yaml`` as the engine hands it to the program: (config, secret keys).

    Like a ``secure:`` value, the shipped placeholder digest of the programs image is a slot the operator
    fills before the first preview (the program refuses it). With ``released`` (the default) the plan
    fills it with :data:`RELEASED_PROGRAMS_IMAGE`, and the ``operatorPgpKeys`` placeholders with
    :func:`plan_operator_pgp_keys`; ``released=False`` keeps the file's own values."""
    data = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text()) or {}
    config: dict[str, Any] = {}
    secret_keys: list[str] = []
    for key, value in (data.get("config") or {}).items():
        plain, secret = _placeholders(value)
        config[key] = plain
        if secret:
            secret_keys.append(key)
    if released and config.get(PROGRAMS_IMAGE_KEY) == PROGRAMS_IMAGE_PLACEHOLDER:
        config[PROGRAMS_IMAGE_KEY] = RELEASED_PROGRAMS_IMAGE
    vault = config.get(VAULT_KEY)
    if released and isinstance(vault, dict) and isinstance(vault.get("operatorPgpKeys"), list):
        keys = iter(plan_operator_pgp_keys())
        vault["operatorPgpKeys"] = [
            next(keys) if isinstance(k, str) and k.startswith(PGP_KEY_PLACEHOLDER_PREFIX) else k
            for k in vault["operatorPgpKeys"]
        ]
    return config, secret_keys


def plan_operator_pgp_keys() -> list[str]:
    """The public keys the plan puts into ``operatorPgpKeys`` placeholders (``operator-pgp-keys.txt``)."""
    lines = (Path(__file__).parent / "operator-pgp-keys.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def engine_form(config: Mapping[str, Any]) -> dict[str, str]:
    """Config as the Pulumi engine passes it on: structured values as JSON text, scalars as strings."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def _resolve(value: Any) -> tuple[Any, bool]:
    output = pulumi.Output.from_input(value)
    return sdk.sync_await(output.future()), bool(sdk.sync_await(output.is_secret()))


class ProgramError(Exception):
    """The program failed; carries the message of the original error across the process boundary."""


def run_program(
    stack: str,
    config: Mapping[str, Any],
    secret_keys: list[str] | None = None,
    stack_references: Mapping[str, Mapping[str, Any]] | None = None,
    preview: bool = False,
    program: Path = ROOT / "__main__.py",
    provider_outputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Recording:
    """Run the program once under mocks, in a forked child, and return what it registered.

    Pulumi's runtime keeps process-wide state (settings, the event loop, pending outputs), so
    each run gets a fresh process: a failing run cannot leak into the next one.
    A program error (a config error included) is in ``Recording.error``; the resources
    registered before it are still listed, which lets tests prove that none were.
    """
    try:
        recording: Recording = in_child(
            _run_recorded,
            stack,
            dict(config),
            list(secret_keys or []),
            dict(stack_references or {}),
            preview,
            program,
            dict(provider_outputs or {}),
            what=f"the program for stack {stack!r}",
        )
    except ChildError as exc:
        return Recording(stack, [], {}, set(), ProgramError(str(exc)))
    return recording


def _run_recorded(*args: Any) -> Recording:
    recording = _run_in_process(*args)
    if recording.error is not None:  # any exception type, made picklable
        recording.error = ProgramError(str(recording.error))
    return recording


RUN_TIMEOUT_SECONDS = 120


class ChildError(Exception):
    """The function run by :func:`in_child` raised; carries its type and message."""


def in_child(
    function: Callable[..., Any], *args: Any, what: str = "the child process", timeout: float = RUN_TIMEOUT_SECONDS
) -> Any:
    """``function(*args)`` in a forked child, started as every program run is, and its (picklable)
    result; :class:`ChildError` if it raised, ``TimeoutError`` after ``timeout`` seconds. The
    benchmarks start their children through it too, so that what they compare is started the same way."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(sender, function, args))
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise TimeoutError(f"{what} did not finish in {timeout:g}s")
        ok, value = receiver.recv()
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
    if not ok:
        raise ChildError(value)
    return value


def _child_main(sender: Any, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result: tuple[bool, Any] = (True, function(*args))
    except BaseException as exc:
        result = (False, f"{type(exc).__name__}: {exc}")
    try:
        sender.send(result)
    except Exception as exc:  # an unpicklable result
        sender.send((False, f"{type(exc).__name__}: {exc}"))
    finally:
        sender.close()
        os._exit(0)


def _run_in_process(
    stack: str,
    config: Mapping[str, Any],
    secret_keys: list[str] | None = None,
    stack_references: Mapping[str, Mapping[str, Any]] | None = None,
    preview: bool = False,
    program: Path = ROOT / "__main__.py",
    provider_outputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Recording:
    mocks = FedobsMocks(stack_references or {}, provider_outputs)
    monitor = RecordingMonitor(mocks)
    sdk.reset_root_resource()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    pulumi.runtime.set_all_config(engine_form(config), list(secret_keys or []))
    error: BaseException | None = None

    def run() -> None:
        runpy.run_path(str(program), run_name="__main__")

    try:
        sdk.run_program_function(run)
    except BaseException as exc:
        error = exc
    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()
    if error is None:
        for key, value in sdk.root_stack_outputs().items():
            try:
                outputs[key], secret = _resolve(value)
            except Exception as exc:
                error = exc
                break
            if secret:
                secret_outputs.add(key)
    urn_outputs = {urn: reg.state for urn, reg in monitor.resources.items()}
    for resource in monitor.recorded:
        resource.outputs = dict(urn_outputs.get(resource.urn) or {})
    pulumi.runtime.set_all_config({}, [])
    return Recording(stack, monitor.recorded, outputs, secret_outputs, error)


def run_stack_file(
    stack: str,
    stack_references: Mapping[str, Mapping[str, Any]] | None = None,
    preview: bool = False,
    provider_outputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Recording:
    config, secret_keys = load_stack_file(stack)
    return run_program(stack, config, secret_keys, stack_references, preview, provider_outputs=provider_outputs)


def walk_tree(recording: Recording) -> Iterator[tuple[int, RecordedResource]]:
    """Resources depth-first from the stack root, with their depth."""
    by_parent: dict[str, list[RecordedResource]] = {}
    for r in recording.resources:
        by_parent.setdefault(r.parent, []).append(r)
    roots = [r for r in recording.resources if not r.parent or recording.by_urn(r.parent) is None]

    def visit(node: RecordedResource, depth: int) -> Iterator[tuple[int, RecordedResource]]:
        yield depth, node
        for child in by_parent.get(node.urn, []):
            yield from visit(child, depth + 1)

    for r in roots:
        yield from visit(r, 0)
