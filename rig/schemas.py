"""Offline schema validation for Kubernetes objects and Helm values (the schema half of the test harness).

Public API (stable; the offline plan and later tests import it):

``schemas_dir() -> Path``
    The reference-schema directory: ``$FEDOBS_SCHEMAS`` if set, else ``<repo root>/../shared/schemas``.
    Raises :class:`SchemasNotFoundError` (a ``FileNotFoundError``) naming both places when it is missing.

``validate_kubernetes_object(obj, kubernetes_version="1.33") -> list[str]``
    Problems with one manifest, ``[]`` when it is valid. Each problem reads ``"<kind>/<metadata.name>:
    <path>: <message>"``, the path written like ``spec.template.spec.containers[0]`` (``<root>`` for the
    object itself).

    * Built-in kinds (core ``v1`` and every ``*.k8s.io``/dot-less group: apps, batch, policy, rbac,
      networking, ...) are checked with the STRICT schemas shipped by ``kubernetes-validate`` (unknown
      fields rejected) for the closest Kubernetes version it ships: the newest one not newer than the one
      asked for, else its oldest.
    * Custom resources whose group is in ``schemas/index.json`` (cert-manager.io, secrets.hashicorp.com,
      kyverno.io, policies.kyverno.io) are checked with ``jsonschema.Draft4Validator`` against the CRD's
      ``spec.versions[?name==V].schema.openAPIV3Schema`` AFTER the CRD's ``default`` values are applied the
      way the API server applies them (so VaultConnection's required-but-defaulted ``skipTLSVerify`` may be
      left out), and with :func:`unknown_keys` (the CRDs have no ``additionalProperties: false``, the API
      server would silently prune a misspelled field). ``metadata`` is checked against the ObjectMeta fields
      a manifest may set: name, namespace, generateName, labels, annotations, finalizers, ownerReferences.
    * An apiVersion/kind found in neither is itself a problem; nothing passes silently.

``validate_helm_values(chart, values) -> list[str]``
    Problems with user-supplied values for a registered chart, each ``"<chart> values: <path>: <message>"``.
    When the chart has a ``values.schema.json`` the values are coalesced over the chart defaults the way
    Helm does (maps merge, lists and scalars replace, ``null`` deletes) and the result is validated with
    ``jsonschema.Draft7Validator``. The user values (not the merged result) also go through
    :func:`unknown_helm_keys`. Built-in charts: ``"vault"`` (schemas/vault-helm, with its schema) and
    ``"vault-secrets-operator"`` (no schema upstream: unknown-key check only).

``register_chart(name, values_yaml_path, schema_path=None, *, free_form=None, documented_keys=())``
    Adds (or replaces) a chart. Relative paths are taken relative to :func:`schemas_dir` at validation time.
    ``free_form`` defaults to :data:`COMMON_FREE_FORM`; ``documented_keys`` lists dotted paths the chart
    documents only in comments of values.yaml (a commented-out example), so they are known though absent
    from the defaults.

``unknown_keys(obj, schema) -> list[str]``
    Paths of the keys of ``obj`` that a Kubernetes structural schema does not know (what the API server
    would prune). Rules: a key is known if it is in ``properties``; otherwise an ``additionalProperties``
    schema (a map) takes it and is walked into, ``additionalProperties: true`` or
    ``x-kubernetes-preserve-unknown-fields: true`` allow it with anything below (declared ``properties`` are
    still walked), ``x-kubernetes-embedded-resource`` allows apiVersion/kind/metadata; lists are walked with
    ``items``. An explicit ``type: object`` with none of
    ``properties``/``additionalProperties``/preserve-unknown-fields knows no key at all (the API server
    prunes them all), a schema without ``type: object`` and without those constrains no key.

``unknown_helm_keys(values, defaults, *, schema=None, free_form=COMMON_FREE_FORM, documented_keys=())``
    -> ``list[str]``, the Helm unknown-key rule, each result ``"<path>: <why>"``. A key is known if it
    exists at that place in the chart's default values.yaml, or in the ``properties`` of the chart's values
    schema at that place, or is one of ``documented_keys``. Anything goes below: a default that is ``{}`` or
    ``null``; a key known only through the schema or the documentation; a key whose name matches a free-form
    pattern. A list in the defaults accepts any items. A mapping given where the default is a non-empty
    scalar or a list is reported (its keys cannot be known).

Free-form patterns are dotted suffixes of a path (``"securityContext.container"`` matches
``csi.agent.securityContext.container``). :data:`COMMON_FREE_FORM` holds the keys that are free-form by
nature in both charts, read off their values.yaml:

* ``annotations``, ``labels``, ``extraLabels``, ``podLabels``: user-chosen Kubernetes label/annotation
  names; vault-helm documents its annotations as "either YAML or a YAML-formatted multi-line templated
  string map" (``global.psp.annotations`` defaults to a string).
* ``nodeSelector``: "formatted as a multi-line string or YAML map" of arbitrary node labels.
* ``resources``: a PodSpec ResourceRequirements; VSO's defaults (``controller.manager.resources`` and
  others) spell out only limits/requests cpu/memory, so e.g. ``limits.ephemeral-storage`` would otherwise
  look unknown.
* ``tolerations``, ``affinity``, ``topologySpreadConstraints``: "either a multi-line string or YAML matching
  the PodSpec's ..." field; vault's ``server.affinity`` defaults to a templated string, so a YAML map is a
  change of form.
* ``extraEnvironmentVars``: a map of arbitrary environment variable names.

Per chart: ``vault`` adds ``config`` (``server.standalone.config``, ``server.ha.config``,
``server.ha.raft.config`` are HCL strings that values.schema.json also allows as an object),
``objectSelector`` (``injector.webhook``'s is a templated string that the schema also allows as a
LabelSelector object), and ``securityContext.pod`` / ``securityContext.container`` (PodSecurityContext /
SecurityContext; ``csi.agent.securityContext.container`` has non-empty defaults; ``securityContext`` itself
stays strict: it only holds ``pod`` and ``container``). ``vault-secrets-operator`` adds ``securityContext``
and ``podSecurityContext`` (the container and pod contexts themselves; the defaults set one field each).
``extraSecretEnvironmentVars`` items need no entry: its default is a list, and a list accepts any items.

Helpers also exported: ``apply_defaults(obj, schema)`` (API-server defaulting, in place),
``format_path(parts)``, ``kubernetes_schema_version(v)`` (the kubernetes-validate version used for ``v``),
``registered_charts()``, ``OBJECT_META_SCHEMA`` and ``COMMON_FREE_FORM``.

All loaded schemas and validators are cached (``functools.lru_cache``) per file path.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import referencing
import yaml
from packaging.version import Version

__all__ = [
    "COMMON_FREE_FORM",
    "OBJECT_META_SCHEMA",
    "SchemasNotFoundError",
    "apply_defaults",
    "format_path",
    "kubernetes_schema_version",
    "register_chart",
    "registered_charts",
    "schemas_dir",
    "unknown_helm_keys",
    "unknown_keys",
    "validate_helm_values",
    "validate_kubernetes_object",
]

_REPO_ROOT = Path(__file__).resolve().parents[1]
_MAX_MESSAGE = 300

PathParts = tuple[str | int, ...]


class SchemasNotFoundError(FileNotFoundError):
    """The reference-schema directory is missing."""


def schemas_dir() -> Path:
    """``$FEDOBS_SCHEMAS`` if set, else ``<repo root>/../shared/schemas``; raises if it is not a directory."""
    env = os.environ.get("FEDOBS_SCHEMAS")
    candidate = Path(env) if env else _REPO_ROOT.parent / "shared" / "schemas"
    if not (candidate / "index.json").is_file():
        origin = "$FEDOBS_SCHEMAS" if env else f"<repo root>/../shared/schemas (repo root {_REPO_ROOT})"
        raise SchemasNotFoundError(
            f"reference schemas not found at {candidate} (from {origin}): expected a directory holding "
            "index.json; set FEDOBS_SCHEMAS or clone shared/ beside the repository"
        )
    return candidate


# --- paths and messages --------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(parts: Iterable[str | int]) -> str:
    """``("spec", "containers", 0, "image")`` -> ``spec.containers[0].image``; ``()`` -> ``<root>``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "<root>"


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def _object_label(obj: Mapping[str, Any]) -> str:
    kind = obj.get("kind") or "<no kind>"
    meta = obj.get("metadata")
    name: Any = None
    if isinstance(meta, Mapping):
        name = meta.get("name") or (f"{meta['generateName']}*" if meta.get("generateName") else None)
    return f"{kind}/{name or '<unnamed>'}"


# --- unknown keys against a structural (CRD) schema ----------------------------------------------

OBJECT_META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "generateName": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["apiVersion", "kind", "name", "uid"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "name": {"type": "string"},
                    "uid": {"type": "string"},
                    "controller": {"type": "boolean"},
                    "blockOwnerDeletion": {"type": "boolean"},
                },
            },
        },
    },
}
"""The ObjectMeta fields a manifest may set, used for ``metadata`` of custom resources (the CRDs only say
``metadata: {type: object}``)."""


def unknown_keys(obj: Any, schema: Mapping[str, Any]) -> list[str]:
    """Paths (``format_path`` form) of the keys in ``obj`` that ``schema`` does not know (see module doc)."""
    found: list[PathParts] = []
    _walk_unknown(obj, schema, (), found)
    return [format_path(p) for p in found]


def _walk_unknown(obj: Any, schema: Any, path: PathParts, found: list[PathParts]) -> None:
    if not isinstance(schema, Mapping):
        return
    if isinstance(obj, Mapping):
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else None
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        if props is None and additional is None and not preserve and not embedded and schema.get("type") != "object":
            return  # this schema does not constrain keys
        for key, value in obj.items():
            where = (*path, str(key))
            if props is not None and key in props:
                _walk_unknown(value, props[key], where, found)
            elif embedded and key in ("apiVersion", "kind"):
                continue
            elif embedded and key == "metadata":
                _walk_unknown(value, OBJECT_META_SCHEMA, where, found)
            elif isinstance(additional, Mapping):
                _walk_unknown(value, additional, where, found)
            elif additional is True or preserve:
                continue
            else:
                found.append(where)
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(obj):
                _walk_unknown(item, items, (*path, index), found)


# --- API-server defaulting ----------------------------------------------------------------------


def apply_defaults(obj: Any, schema: Mapping[str, Any]) -> Any:
    """Apply ``default``s in place the way the API server does (structural defaulting): a missing
    property, or a ``null`` one that is not ``nullable``, gets a deep copy of its default; other
    non-nullable ``null``s are pruned; then recurse into properties, ``additionalProperties`` and
    ``items``. Returns ``obj``."""
    if isinstance(obj, dict):
        props = schema.get("properties")
        if isinstance(props, Mapping):
            for key, prop in props.items():
                if not isinstance(prop, Mapping):
                    continue
                if key in obj and obj[key] is None and not prop.get("nullable", False):
                    del obj[key]
                if key not in obj and "default" in prop and prop["default"] is not None:
                    obj[key] = copy.deepcopy(prop["default"])
        additional = schema.get("additionalProperties")
        for key, value in obj.items():
            if isinstance(props, Mapping) and key in props and isinstance(props[key], Mapping):
                apply_defaults(value, props[key])
            elif isinstance(additional, Mapping):
                apply_defaults(value, additional)
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for item in obj:
                apply_defaults(item, items)
    return obj


# --- custom resources ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _index(schemas: str) -> dict[tuple[str, str], dict[str, Any]]:
    with open(Path(schemas) / "index.json", encoding="utf-8") as fh:
        data = json.load(fh)
    return {(entry["apiVersion"], entry["kind"]): entry for entry in data["crds"]}


@functools.lru_cache(maxsize=8)
def _index_groups(schemas: str) -> frozenset[str]:
    return frozenset(api_version.split("/", 1)[0] for api_version, _ in _index(schemas))


@functools.lru_cache(maxsize=64)
def _load_document(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        if path.endswith(".json"):
            return json.load(fh)
        return yaml.safe_load(fh)


@dataclass(frozen=True)
class _CrdSchema:
    schema: dict[str, Any]
    validator: jsonschema.protocols.Validator


@functools.lru_cache(maxsize=64)
def _crd_schema(path: str, version: str) -> _CrdSchema | None:
    crd = _load_document(path)
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema = dict(entry["schema"]["openAPIV3Schema"])
            schema["properties"] = {**schema.get("properties", {}), "metadata": OBJECT_META_SCHEMA}
            return _CrdSchema(schema, jsonschema.Draft4Validator(schema))
    return None


def _validate_custom(obj: Mapping[str, Any], schemas: Path) -> list[str]:
    label = _object_label(obj)
    api_version, kind = obj["apiVersion"], obj["kind"]
    entry = _index(str(schemas)).get((api_version, kind))
    if entry is None:
        known = sorted(f"{a} {k}" for a, k in _index(str(schemas)) if a.split("/")[0] == api_version.split("/")[0])
        return [
            f"{label}: <root>: unknown apiVersion/kind {api_version} {kind} (schemas/index.json has {', '.join(known)})"
        ]
    version = api_version.split("/", 1)[1]
    crd = _crd_schema(str(schemas / entry["file"]), version)
    if crd is None:
        return [f"{label}: <root>: {entry['file']} serves no version {version}"]
    defaulted = apply_defaults(copy.deepcopy(dict(obj)), crd.schema)
    problems = _schema_errors(crd.validator, defaulted, label)
    problems += [
        f"{label}: {path}: unknown field (the {api_version} {kind} schema has no such key)"
        for path in unknown_keys(obj, crd.schema)
    ]
    return problems


def _schema_errors(validator: jsonschema.protocols.Validator, instance: Any, label: str) -> list[str]:
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            declared = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
            patterns = error.schema.get("patternProperties", {}) if isinstance(error.schema, Mapping) else {}
            extras = [k for k in error.instance if k not in declared and not any(re.search(p, k) for p in patterns)]
            if extras:
                problems += [f"{label}: {format_path((*error.absolute_path, k))}: unknown field" for k in extras]
                continue
        if error.context:
            best = jsonschema.exceptions.best_match(error.context)
            if best is not None:
                error = best
        problems.append(f"{label}: {format_path(error.absolute_path)}: {_short(error.message)}")
    return problems


# --- built-in kinds (kubernetes-validate, strict) ------------------------------------------------


def kubernetes_schema_version(kubernetes_version: str) -> str:
    """The kubernetes-validate schema version used for ``kubernetes_version``: the newest shipped one not
    newer than it (compared by major.minor), else the oldest shipped one. E.g. ``"1.33"`` -> ``"1.33.0"``."""
    wanted = Version(kubernetes_validate.utils.major_minor(kubernetes_version.lstrip("v")))
    shipped = sorted(kubernetes_validate.utils.all_versions(), key=Version)
    older = [v for v in shipped if Version(kubernetes_validate.utils.major_minor(v)) <= wanted]
    return str(older[-1] if older else shipped[0])


@functools.lru_cache(maxsize=4)
def _k8s_registry(schema_version: str) -> referencing.Registry[Any]:
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{schema_version}-local-strict/_definitions.json", schema_version
    )
    return referencing.Resource.from_contents(definitions) @ referencing.Registry()


@functools.lru_cache(maxsize=256)
def _k8s_validator(schema_version: str, filename: str) -> jsonschema.protocols.Validator | None:
    try:
        schema = kubernetes_validate.utils.schema_contents(
            f"kubernetes-json-schema/v{schema_version}-local-strict/{filename}", schema_version
        )
    except FileNotFoundError:
        return None
    registry = referencing.Resource.from_contents(schema) @ _k8s_registry(schema_version)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _is_builtin_group(group: str) -> bool:
    return group == "" or "." not in group or group.endswith(".k8s.io")


def _validate_builtin(obj: Mapping[str, Any], kubernetes_version: str) -> list[str]:
    label = _object_label(obj)
    schema_version = kubernetes_schema_version(kubernetes_version)
    # kubernetes-validate's file naming: rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1
    api_part = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    validator = _k8s_validator(schema_version, f"{str(obj['kind']).lower()}-{api_part}.json")
    if validator is None:
        return [
            f"{label}: <root>: unknown apiVersion/kind {obj['apiVersion']} {obj['kind']} (no schema in "
            f"kubernetes-validate {kubernetes_validate.__version__} for Kubernetes {schema_version})"
        ]
    return _schema_errors(validator, dict(obj), label)


# --- entry point for manifests ---------------------------------------------------------------------


def validate_kubernetes_object(obj: Mapping[str, Any], kubernetes_version: str = "1.33") -> list[str]:
    """Problems with one Kubernetes manifest (``[]`` = valid); see the module doc."""
    if not isinstance(obj, Mapping):
        return [f"<not an object>: <root>: expected a mapping, got {type(obj).__name__}"]
    label = _object_label(obj)
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not api_version or not isinstance(kind, str) or not kind:
        return [f"{label}: <root>: apiVersion and kind must both be non-empty strings (got {api_version!r}, {kind!r})"]
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    schemas = schemas_dir()
    if group in _index_groups(str(schemas)):
        return _validate_custom(obj, schemas)
    if _is_builtin_group(group):
        return _validate_builtin(obj, kubernetes_version)
    return [
        f"{label}: <root>: unknown apiVersion/kind {api_version} {kind} (group {group!r} is neither "
        "built into Kubernetes nor in schemas/index.json)"
    ]


# --- Helm values ----------------------------------------------------------------------------------

COMMON_FREE_FORM: tuple[str, ...] = (
    "annotations",
    "labels",
    "extraLabels",
    "podLabels",
    "nodeSelector",
    "resources",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "extraEnvironmentVars",
)
"""Free-form key patterns shared by the built-in charts (why: see the module doc)."""


@dataclass(frozen=True)
class ChartSpec:
    name: str
    values_yaml: str
    schema: str | None
    free_form: tuple[str, ...]
    documented_keys: tuple[str, ...]


_CHARTS: dict[str, ChartSpec] = {}


def register_chart(
    name: str,
    values_yaml_path: str | os.PathLike[str],
    schema_path: str | os.PathLike[str] | None = None,
    *,
    free_form: Iterable[str] | None = None,
    documented_keys: Iterable[str] = (),
) -> None:
    """Register (or replace) chart ``name`` for :func:`validate_helm_values`; see the module doc."""
    _CHARTS[name] = ChartSpec(
        name=name,
        values_yaml=os.fspath(values_yaml_path),
        schema=os.fspath(schema_path) if schema_path is not None else None,
        free_form=tuple(free_form) if free_form is not None else COMMON_FREE_FORM,
        documented_keys=tuple(documented_keys),
    )


def registered_charts() -> list[str]:
    return sorted(_CHARTS)


register_chart(
    "vault",
    "vault-helm/values.yaml",
    "vault-helm/values.schema.json",
    free_form=(
        *COMMON_FREE_FORM,
        "config",
        "objectSelector",
        "securityContext.pod",
        "securityContext.container",
    ),
    # Documented only as commented-out examples in vault-helm's values.yaml (v0.34.1), read by its templates.
    documented_keys=(
        "injector.uid",  # "runAsUser: {{ .Values.injector.uid | default 100 }}"
        "injector.gid",
        "injector.agentDefaults.ephemeralLimit",  # "# ephemeralLimit: ..." (also in values.schema.json)
        "injector.agentDefaults.ephemeralRequest",
        "server.uid",  # "runAsUser: {{ .Values.server.uid | default 100 }}"
        "server.gid",
        "server.readinessProbe.path",  # "# path: /v1/sys/health?standbyok=true"
        "server.service.type",  # "#type: ClusterIP"
        "server.service.clusterIP",  # "# clusterIP: None"
        "server.service.nodePort",  # "#nodePort: 30000" (also in values.schema.json)
        "server.service.activeNodePort",
        "server.service.standbyNodePort",
        "ui.loadBalancerSourceRanges",  # "#loadBalancerSourceRanges:"
        "ui.loadBalancerIP",  # "# loadBalancerIP:"
    ),
)
register_chart(
    "vault-secrets-operator",
    "vault-secrets-operator/values.yaml",
    None,
    free_form=(*COMMON_FREE_FORM, "securityContext", "podSecurityContext"),
)


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else schemas_dir() / p


@functools.lru_cache(maxsize=16)
def _draft7_validator(path: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft7Validator(_load_document(path))


def _matches_free_form(path: PathParts, patterns: Sequence[str]) -> bool:
    keys = [p for p in path if isinstance(p, str)]
    for pattern in patterns:
        parts = pattern.split(".")
        if len(keys) >= len(parts) and keys[-len(parts) :] == parts and isinstance(path[-1], str):
            return True
    return False


_TYPE_NAMES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


def unknown_helm_keys(
    values: Any,
    defaults: Any,
    *,
    schema: Mapping[str, Any] | None = None,
    free_form: Sequence[str] = COMMON_FREE_FORM,
    documented_keys: Iterable[str] = (),
) -> list[str]:
    """User ``values`` checked against a chart's ``defaults`` (its parsed values.yaml); see the module doc."""
    documented = {tuple(k.split(".")) for k in documented_keys}
    found: list[str] = []
    _walk_helm(values, defaults, schema, (), free_form, documented, found)
    return found


def _walk_helm(
    values: Any,
    defaults: Any,
    schema: Any,
    path: PathParts,
    free_form: Sequence[str],
    documented: set[tuple[str, ...]],
    found: list[str],
) -> None:
    if not isinstance(values, Mapping):
        return  # scalars and lists: a list in the defaults accepts any items
    if defaults is None or (isinstance(defaults, Mapping) and not defaults):
        return  # below {} or null anything goes
    if not isinstance(defaults, Mapping):
        found.append(
            f"{format_path(path)}: {_TYPE_NAMES.get(type(values), 'a mapping')} here, but the chart "
            f"default is {_TYPE_NAMES.get(type(defaults), type(defaults).__name__)} "
            f"(keys {', '.join(sorted(map(str, values)))} are unknown)"
        )
        return
    schema_props = schema.get("properties") if isinstance(schema, Mapping) else None
    schema_props = schema_props if isinstance(schema_props, Mapping) else {}
    for key, value in values.items():
        where = (*path, str(key))
        if _matches_free_form(where, free_form):
            continue
        if key in defaults:
            _walk_helm(value, defaults[key], schema_props.get(key), where, free_form, documented, found)
        elif key in schema_props or tuple(str(p) for p in where) in documented:
            continue  # known from the schema or the chart's comments; nothing to compare below
        else:
            found.append(f"{format_path(where)}: unknown key (not in the chart's values.yaml)")


def _coalesce(defaults: Any, values: Any) -> Any:
    """Helm's merge of user values over chart defaults: maps merge, ``null`` deletes, the rest replaces."""
    if not (isinstance(defaults, Mapping) and isinstance(values, Mapping)):
        return copy.deepcopy(values)
    merged = copy.deepcopy(dict(defaults))
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = _coalesce(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_helm_values(chart: str, values: Mapping[str, Any]) -> list[str]:
    """Problems with user ``values`` for a registered chart (``[]`` = valid); see the module doc."""
    spec = _CHARTS.get(chart)
    if spec is None:
        raise KeyError(f"unknown chart {chart!r}; registered: {', '.join(registered_charts())}")
    prefix = f"{chart} values"
    if not isinstance(values, Mapping):
        return [f"{prefix}: <root>: expected a mapping, got {type(values).__name__}"]
    defaults = _load_document(str(_resolve(spec.values_yaml))) or {}
    problems: list[str] = []
    schema: Mapping[str, Any] | None = None
    if spec.schema is not None:
        schema_path = str(_resolve(spec.schema))
        schema = _load_document(schema_path)
        validator = _draft7_validator(schema_path)
        problems += _schema_errors(validator, _coalesce(defaults, values), prefix)
    problems += [
        f"{prefix}: {p}"
        for p in unknown_helm_keys(
            values, defaults, schema=schema, free_form=spec.free_form, documented_keys=spec.documented_keys
        )
    ]
    return problems
