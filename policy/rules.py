"""The rules of the fedobs policy pack (``pulumi preview --policy-pack policy``).

Every rule is a ``pulumi_policy`` validation with enforcement level MANDATORY; ``policies()``
returns them and ``__main__.py`` (the only place a ``PolicyPack`` is built) serves them. This module
imports nothing of the repository outside ``policy/`` because the Pulumi CLI runs the pack in its own
virtual environment with ``policy/requirements.txt`` only; what it needs of the SDKs' internals comes
from ``sdk_internals.py`` beside it, which checks the pinned SDK versions when imported.

How resources reach a rule
--------------------------
``args.props`` are the resource's inputs as the engine sends them: unknown values (during a preview)
raise ``UnknownValueError`` when read through the SDK's proxy. :func:`plain` turns them into plain
Python data once, with :data:`UNKNOWN` in place of a value not known yet; a rule skips what it cannot
judge yet (``pulumi up`` runs the pack again with every input known, before each resource changes).

Secretness
----------
The engine sends secret inputs to a policy pack marked as secrets, but pulumi-policy 1.21 unwraps
them before a *validation* sees them (only its remediation path keeps them, and remediations cannot
report violations). :func:`keep_secret_markers`, called by ``__main__.py`` before the pack starts,
makes the SDK hand validations a ``pulumi_policy.Secret`` wrapper where the engine sent a secret,
so "no plain-text secret inputs" can be enforced. Without it every secret-bearing input looks plain
and that rule fails closed (it reports every one).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

import hcl2
import pulumi.runtime
from hcl2 import SerializationOptions
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)

try:
    from policy import sdk_internals
except ImportError:  # run by the CLI: the repository root is not on sys.path, this directory is
    import sdk_internals  # type: ignore[no-redef]

# What policy/__main__.py applies before the pack starts (see "Secretness" above and sdk_internals).
keep_secret_markers: Final = sdk_internals.keep_secret_markers
deserialize_keeping_secrets: Final = sdk_internals.deserialize_keeping_secrets

PACK_NAME = "fedobs"

# --- reading what the engine sent ------------------------------------------------------------------


class _Unknown:
    """A value the engine does not know yet (an output of a resource not created yet, at preview)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unknown until the update>"


UNKNOWN: Final = _Unknown()
_UNKNOWN_SENTINELS: Final = sdk_internals.UNKNOWN_SENTINELS


def plain(value: Any) -> Any:
    """The SDK's proxied props as plain dicts and lists; unknowns become :data:`UNKNOWN`, secrets stay
    ``Secret`` (with a plain value inside)."""
    if isinstance(value, Secret):
        return Secret(plain(value.value))
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in value:
            try:
                item = value[key]
            except sdk_internals.UnknownValueError:
                item = UNKNOWN
            out[str(key)] = plain(item)
        return out
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                item = value[index]
            except sdk_internals.UnknownValueError:
                item = UNKNOWN
            items.append(plain(item))
        return items
    return value


def reveal(value: Any) -> Any:
    """``value`` with every ``Secret`` wrapper removed (for rules that do not care about secretness)."""
    if isinstance(value, Secret):
        return reveal(value.value)
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def dig(node: Any, *path: str) -> Any:
    """The value at ``path`` in plain (revealed) data, or None when any step is missing."""
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def truthy(value: Any) -> bool:
    """Whether a setting is on, as Vault, Helm and the providers read it (``true``, ``1``, ``"true"``, ``"1"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in ("1", "t", "true", "yes", "on")
    return False


def _known(value: Any) -> bool:
    return value is not None and value is not UNKNOWN


# --- rule: Vault TLS is never disabled ---------------------------------------------------------------

_HCL_OPTIONS: Final = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
_VAULT_SERVER_CONFIGS: Final = (("ha", "raft", "config"), ("ha", "config"), ("standalone", "config"))


def chart_name(props: Mapping[str, Any]) -> str:
    """The chart's own name: ``vault`` for ``vault``, ``hashicorp/vault`` or ``oci://…/vault``."""
    chart = props.get("chart")
    if not isinstance(chart, str):
        return ""
    return chart.rstrip("/").rsplit("/", 1)[-1]


def is_helm_release(resource_type: str) -> bool:
    return resource_type in ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")


def _blocks(parsed: Mapping[str, Any], name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(label, body)`` of every ``name`` block, from python-hcl2's form or Vault's JSON config form."""
    found = parsed.get(name)
    for entry in found if isinstance(found, list) else [found]:
        if not isinstance(entry, dict):
            continue
        for label, body in entry.items():
            for item in body if isinstance(body, list) else [body]:
                if isinstance(item, dict):
                    yield label, item


def server_config_tls_problems(config: Any) -> list[str]:
    """What in one Vault server configuration (HCL text or Vault's JSON form) turns TLS off."""
    if isinstance(config, str):
        try:
            parsed: Any = hcl2.loads(config, serialization_options=_HCL_OPTIONS)
        except Exception as exc:  # any parse error: a config the pack cannot read is not accepted
            return [f"is not valid HCL ({type(exc).__name__}), so its listeners cannot be checked"]
    else:
        parsed = config
    if not isinstance(parsed, dict):
        return ["is neither HCL text nor a configuration object"]
    problems: list[str] = []
    for label, listener in _blocks(parsed, "listener"):
        if truthy(listener.get("tls_disable")):
            problems.append(f'listener "{label}" sets tls_disable = {listener.get("tls_disable")!r}')
    for label, seal in _blocks(parsed, "seal"):
        if truthy(seal.get("tls_skip_verify")):
            problems.append(f'seal "{label}" sets tls_skip_verify = {seal.get("tls_skip_verify")!r}')
        address = seal.get("address")
        if label == "transit" and isinstance(address, str) and not address.lower().startswith("https://"):
            problems.append(f'seal "transit" address {address!r} is not https')
    for _, storage in _blocks(parsed, "storage"):
        joins = storage.get("retry_join")
        for join in joins if isinstance(joins, list) else [joins]:
            address = join.get("leader_api_addr") if isinstance(join, dict) else None
            if isinstance(address, str) and address.lower().startswith("http://"):
                problems.append(f"retry_join leader_api_addr {address!r} is not https")
    return problems


def _active_server_config(values: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The values path of the configuration the chart renders (None when the chart runs no server)."""
    server = values.get("server")
    server = server if isinstance(server, dict) else {}
    if "enabled" in server and not truthy(server["enabled"]) and server["enabled"] != "-":
        return None
    ha = server.get("ha") if isinstance(server.get("ha"), dict) else {}
    if truthy(dig(ha, "enabled")):
        return ("ha", "raft", "config") if truthy(dig(ha, "raft", "enabled")) else ("ha", "config")
    return ("standalone", "config")


def _check_vault_release(values: Any, report: Callable[[str], None]) -> None:
    if values is UNKNOWN:
        return
    values = values if isinstance(values, dict) else {}
    tls_disable = dig(values, "global", "tlsDisable")
    if tls_disable is not UNKNOWN and (tls_disable is None or truthy(tls_disable)):
        shown = "not set (the chart's default is true)" if tls_disable is None else repr(tls_disable)
        report(f"values global.tlsDisable is {shown}: it must be false, or Vault serves plain HTTP")
    active = _active_server_config(values)
    server = values.get("server") if isinstance(values.get("server"), dict) else {}
    if active is not None and dig(server, *active) is None:
        report(f"values server.{'.'.join(active)} is not set: the chart's default configuration has tls_disable = 1")
    for path in _VAULT_SERVER_CONFIGS:
        config = dig(server, *path)
        if not _known(config):
            continue
        for problem in server_config_tls_problems(config):
            report(f"values server.{'.'.join(path)} {problem}")


def _check_vault_provider(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    skip = props.get("skipTlsVerify")
    if _known(skip) and truthy(skip):
        report(f"skipTlsVerify is {skip!r}: the provider must verify Vault's certificate")
    address = props.get("address")
    if address is UNKNOWN:
        return
    if not isinstance(address, str) or not address:
        report("address is not set: the provider would take VAULT_ADDR from the environment, unchecked")
    elif not address.lower().startswith("https://"):
        report(f"address {address!r} is not https")


def validate_vault_tls(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """The ``vault`` chart with TLS on (global.tlsDisable false, no listener with tls_disable) and the
    Vault provider verifying TLS."""

    def report(message: str) -> None:
        report_violation(message, None)

    if is_helm_release(args.resource_type):
        props = reveal(plain(args.props))
        if chart_name(props) == "vault":
            _check_vault_release(props.get("values"), report)
    elif args.resource_type == "pulumi:providers:vault":
        _check_vault_provider(reveal(plain(args.props)), report)


# --- rule: Kubernetes auth roles are bound to exact service accounts ---------------------------------


def _selector_is_empty(selector: Any) -> bool:
    if selector is None or selector == "":
        return True
    if isinstance(selector, str):
        try:
            selector = json.loads(selector)
        except ValueError:
            return False
    return isinstance(selector, dict) and not selector.get("matchLabels") and not selector.get("matchExpressions")


def validate_kubernetes_auth_role(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """A ``vault:kubernetes/authBackendRole`` names its service accounts and namespaces; none is ``*``."""
    if args.resource_type != "vault:kubernetes/authBackendRole:AuthBackendRole":
        return
    props = reveal(plain(args.props))
    names = props.get("boundServiceAccountNames")
    namespaces = props.get("boundServiceAccountNamespaces")
    for prop, values in (("boundServiceAccountNames", names), ("boundServiceAccountNamespaces", namespaces)):
        for value in values if isinstance(values, list) else []:
            if isinstance(value, str) and "*" in value:
                report_violation(f"{prop} contains {value!r}: bind the role to exact names, never a wildcard", None)
    if isinstance(names, list) and not names:
        report_violation("boundServiceAccountNames is empty: the role must name its service accounts", None)
    selector = props.get("boundServiceAccountNamespaceSelector")
    if isinstance(namespaces, list) and not namespaces and selector is not UNKNOWN and _selector_is_empty(selector):
        report_violation(
            "boundServiceAccountNamespaces is empty and boundServiceAccountNamespaceSelector selects "
            "every namespace: bind the role to exact namespaces",
            None,
        )


# --- rule: VSO connections verify Vault's TLS ----------------------------------------------------------


def _check_connection(spec: Any, where: str, report: Callable[[str], None]) -> None:
    if not isinstance(spec, dict):
        return
    skip = spec.get("skipTLSVerify")
    if _known(skip) and truthy(skip):
        report(f"{where}skipTLSVerify is {skip!r}: VSO must verify Vault's certificate")
    address = spec.get("address")
    if isinstance(address, str) and address and not address.lower().startswith("https://"):
        report(f"{where}address {address!r} is not https")


def validate_vso_connection(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """No ``VaultConnection`` (or the VSO chart's default connection) skips TLS verification or uses http."""

    def report(message: str) -> None:
        report_violation(message, None)

    resource_type = args.resource_type
    if resource_type.startswith("kubernetes:secrets.hashicorp.com/") and resource_type.endswith(":VaultConnection"):
        _check_connection(reveal(plain(args.props)).get("spec"), "spec.", report)
    elif is_helm_release(resource_type):
        props = reveal(plain(args.props))
        if chart_name(props) == "vault-secrets-operator":
            default = dig(props, "values", "defaultVaultConnection")
            if isinstance(default, dict) and truthy(default.get("enabled")):
                _check_connection(default, "values defaultVaultConnection.", report)


# --- rule: charts and images are pinned ----------------------------------------------------------------

#: An exact chart version (SemVer 2, optional leading v): no range, no "latest", no partial version.
EXACT_VERSION: Final = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
)
#: Tags that name a moving target.
FLOATING_TAGS: Final = frozenset({"latest", "stable", "main", "master", "nightly", "edge", "dev"})
_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
#: Workload kinds and where their pod spec is.
POD_SPEC_PATHS: Final[dict[str, tuple[str, ...]]] = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
_CONTAINER_LISTS: Final = ("initContainers", "containers", "ephemeralContainers")


def image_pin_problem(ref: str) -> str | None:
    """Why an image reference is not pinned, or None: it needs a tag that is not floating, or a digest."""
    if "@" in ref:
        digest = ref.split("@", 1)[1]
        return None if _DIGEST.fullmatch(digest) else f"has a malformed digest {digest!r}"
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag, so it pulls 'latest'"
    tag = last.split(":", 1)[1]
    if not tag or tag.lower() in FLOATING_TAGS:
        return f"uses the floating tag {tag!r}"
    return None


def _values_images(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """``(values path, problem)`` for every image in Helm values that is not pinned."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _values_images(item, f"{path}[{index}]")
        return
    if not isinstance(node, dict):
        return
    digest = node.get("digest")
    pinned_by_digest = isinstance(digest, str) and _DIGEST.fullmatch(digest) is not None
    if "repository" in node and "tag" in node and not pinned_by_digest:
        tag = node["tag"]
        # An empty or null tag makes the chart use its appVersion, which the pinned chart version fixes.
        if isinstance(tag, str) and tag.lower() in FLOATING_TAGS:
            yield f"{path}.tag" if path else "tag", f"image {node['repository']!r} uses the floating tag {tag!r}"
    for key, value in node.items():
        child = f"{path}.{key}" if path else key
        if isinstance(value, str) and value and (key == "image" or key.endswith("Image")):
            sibling_tag = node.get("tag", node.get("imageTag"))
            if sibling_tag is not None or pinned_by_digest:
                continue
            problem = image_pin_problem(value)
            if problem:
                yield child, f"image {value!r} {problem}"
        else:
            yield from _values_images(value, child)


def _check_chart(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    chart = props.get("chart")
    version = props.get("version")
    if not isinstance(chart, str):
        return
    local = chart.startswith((".", "/")) or chart.endswith(".tgz")
    if version is UNKNOWN or local:
        pass
    elif not isinstance(version, str) or not version:
        report(f"chart {chart!r} has no version: Helm would install whatever is newest")
    elif not EXACT_VERSION.fullmatch(version):
        report(
            f"chart {chart!r} version {version!r} is not an exact version (ranges, 'latest' and partial versions float)"
        )
    for where, problem in _values_images(props.get("values"), ""):
        report(f"chart {chart!r} values {where}: {problem}")


def _check_workload(kind: str, props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    path = POD_SPEC_PATHS[kind]
    pod_spec = dig(props, *path)
    if not isinstance(pod_spec, dict):
        return
    prefix = ".".join(path)
    for list_name in _CONTAINER_LISTS:
        containers = pod_spec.get(list_name)
        for index, container in enumerate(containers if isinstance(containers, list) else []):
            if not isinstance(container, dict):
                continue
            where = f"{prefix}.{list_name}[{index}] ({container.get('name')!r})"
            image = container.get("image")
            if image is UNKNOWN:
                continue
            if not isinstance(image, str) or not image:
                report(f"{where} has no image")
                continue
            problem = image_pin_problem(image)
            if problem:
                report(f"{where} image {image!r} {problem}")


def validate_pinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Every Helm chart at an exact version; every container image (workloads and chart values) tagged
    with a fixed tag or pinned by digest."""

    def report(message: str) -> None:
        report_violation(message, None)

    resource_type = args.resource_type
    if is_helm_release(resource_type):
        _check_chart(reveal(plain(args.props)), report)
        return
    kind = resource_type.rsplit(":", 1)[-1]
    if resource_type.startswith("kubernetes:") and kind in POD_SPEC_PATHS:
        _check_workload(kind, reveal(plain(args.props)), report)


# --- rule: no plain-text secret inputs -----------------------------------------------------------------

#: Secret fields of the database engine blocks of ``vault:database/secretBackendConnection`` (pulumi-vault
#: 7.7.0 marks them ``secret: true``; a test compares this with the schema extract).
DATABASE_SECRET_FIELDS: Final = (
    "password",
    "passwordWo",
    "privateKey",
    "privateKeyWo",
    "pemBundle",
    "pemJson",
    "base64Pem",
    "tlsCertificateKey",
    "serviceAccountJson",
)

#: Inputs that carry a credential, by resource type. A path step ``*`` is every key (or item) at that
#: level; a provider's structured inputs arrive as JSON text and are looked into.
SECRET_INPUTS: Final[dict[str, tuple[str, ...]]] = {
    "kubernetes:core/v1:Secret": ("data.*", "stringData.*"),
    "pulumi:providers:kubernetes": ("kubeconfig",),
    "pulumi:providers:linode": ("token",),
    "pulumi:providers:vault": (
        "token",
        "authLogin.parameters",
        "authLoginUserpass.password",
        "authLoginApprole.secretId",
        "authLoginJwt.jwt",
        "authLoginKubernetes.jwt",
        "authLoginAzure.jwt",
        "authLoginGcp.jwt",
        "authLoginGcp.credentials",
        "authLoginAws.awsSecretAccessKey",
        "authLoginAws.awsSessionToken",
        "authLoginRadius.password",
    ),
    "vault:database/secretBackendConnection:SecretBackendConnection": (
        *(f"*.{field}" for field in DATABASE_SECRET_FIELDS),
        "redisElasticache.username",
    ),
    "vault:aws/secretBackend:SecretBackend": ("accessKey", "secretKey", "secretKeyWo"),
    "vault:kubernetes/authBackendConfig:AuthBackendConfig": ("tokenReviewerJwt", "tokenReviewerJwtWo"),
    "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId": ("secretId",),
    "vault:appRole/authBackendLogin:AuthBackendLogin": ("secretId",),
    "vault:generic/endpoint:Endpoint": ("dataJson",),
    "vault:generic/secret:Secret": ("dataJson",),
    "vault:kv/secret:Secret": ("dataJson",),
    "vault:kv/secretV2:SecretV2": ("dataJson",),
    "tls:index/selfSignedCert:SelfSignedCert": ("privateKeyPem",),
    "tls:index/certRequest:CertRequest": ("privateKeyPem",),
    "tls:index/locallySignedCert:LocallySignedCert": ("caPrivateKeyPem",),
}
_PRIVATE_KEY_PEM: Final = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def _is_empty(value: Any) -> bool:
    return value is None or value in ("", "{}", "[]", "null") or (isinstance(value, dict | list) and not value)


def _normal(key: str) -> str:
    return key.replace("_", "").lower()


def _children(node: Any, step: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, str) and node.lstrip().startswith(("{", "[")):
        try:  # a provider's structured input, sent as JSON text
            node = json.loads(node)
        except ValueError:
            return
    if isinstance(node, dict):
        if step == "*":
            yield from ((str(k), v) for k, v in node.items())
        else:
            yield from ((str(k), v) for k, v in node.items() if k == step or _normal(str(k)) == _normal(step))
    elif isinstance(node, list) and step == "*":
        yield from ((str(i), v) for i, v in enumerate(node))


def _plain_leaves(node: Any, path: str) -> Iterator[str]:
    """Paths of the non-empty values under ``node`` that are not inside a ``Secret``."""
    if isinstance(node, Secret) or node is UNKNOWN or _is_empty(node):
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _plain_leaves(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _plain_leaves(value, f"{path}.{index}")
    else:
        yield path


def plaintext_at(props: Any, spec: str) -> list[str]:
    """Paths matching ``spec`` whose value reaches the engine without the secret marker."""
    found: list[str] = []

    def walk(node: Any, steps: list[str], path: str) -> None:
        if isinstance(node, Secret) or node is UNKNOWN:
            return  # secret as a whole, or not known yet
        if not steps:
            found.extend(_plain_leaves(node, path))
            return
        for key, child in _children(node, steps[0]):
            walk(child, steps[1:], f"{path}.{key}" if path else key)

    walk(props, spec.split("."), "")
    return found


def _private_keys_in_plain(node: Any, path: str) -> Iterator[str]:
    if isinstance(node, Secret):
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _private_keys_in_plain(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _private_keys_in_plain(value, f"{path}.{index}" if path else str(index))
    elif isinstance(node, str) and _PRIVATE_KEY_PEM.search(node):
        yield path


def validate_secret_inputs(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Credential-bearing inputs (``SECRET_INPUTS``) and any PEM private key reach the engine as secrets."""
    props = plain(args.props)
    reported: set[str] = set()
    for spec in SECRET_INPUTS.get(args.resource_type, ()):
        for path in plaintext_at(props, spec):
            if path not in reported:
                reported.add(path)
                report_violation(
                    f"input {path} is not a secret: wrap it in pulumi.Output.secret (or take it from secret config)",
                    None,
                )
    for path in _private_keys_in_plain(props, ""):
        if path not in reported:
            reported.add(path)
            report_violation(f"input {path} holds a PEM private key in plain text: make it a secret", None)


# --- rule: the hub's LKE control plane has an ACL ------------------------------------------------------

HUB_ROLE_CONFIG_KEY: Final = "fedobs:role"
HUB_TAG: Final = "hub"
_OPEN_NETWORKS: Final = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def stack_role() -> str | None:
    """``fedobs:role`` of the stack being previewed: the Pulumi CLI gives a policy pack the stack's
    config (``PULUMI_CONFIG``), which the SDK loads before each analysis."""
    role = pulumi.runtime.get_config(HUB_ROLE_CONFIG_KEY)
    return role if isinstance(role, str) else None


def is_hub_cluster(props: Mapping[str, Any]) -> bool:
    """The hub: the stack's ``fedobs:role`` is ``hub``, or (config not visible) the cluster is tagged ``hub``."""
    tags = props.get("tags")
    tagged = isinstance(tags, list) and any(isinstance(t, str) and t.lower() == HUB_TAG for t in tags)
    return stack_role() == "hub" or tagged


def validate_hub_control_plane_acl(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """The hub's LKE cluster has ``controlPlane.acl.enabled`` and at least one allowed address, none open to all."""
    if args.resource_type != "linode:index/lkeCluster:LkeCluster":
        return
    props = reveal(plain(args.props))
    if not is_hub_cluster(props):
        return
    enabled = dig(props, "controlPlane", "acl", "enabled")
    if enabled is not UNKNOWN and not truthy(enabled):
        report_violation(
            f"controlPlane.acl.enabled is {enabled!r} on the hub: the Kubernetes API of the cluster "
            "every edge trusts must be reachable only from listed addresses",
            None,
        )
    addresses = dig(props, "controlPlane", "acl", "addresses")
    if addresses is UNKNOWN:
        return
    listed: list[str] = []
    for entry in addresses if isinstance(addresses, list) else []:
        for family in ("ipv4s", "ipv6s"):
            values = entry.get(family) if isinstance(entry, dict) else None
            listed += [v for v in values if isinstance(v, str) and v] if isinstance(values, list) else []
    if not listed:
        report_violation(
            "controlPlane.acl.addresses lists no address on the hub: an ACL must allow at least "
            "the operators' and CI's addresses",
            None,
        )
    for address in listed:
        try:
            network = ipaddress.ip_network(address, strict=False)
        except ValueError:
            continue
        if network in _OPEN_NETWORKS:
            report_violation(f"controlPlane.acl.addresses allows {address!r}, every address", None)


# --- rule: on LKE, every LoadBalancer has a Cloud Firewall ----------------------------------------------

CLUSTER_CONFIG_KEY: Final = "fedobs:cluster"
LKE_CLUSTER_TYPE: Final = "linode:index/lkeCluster:LkeCluster"
SERVICE_TYPE: Final = "kubernetes:core/v1:Service"
#: The Linode CCM's annotations (linode/linode-cloud-controller-manager ``cloud/annotations/annotations.go``:
#: ``AnnLinodeCloudFirewallACL``, ``AnnLinodeCloudFirewallID``); the CCM never reads
#: ``spec.loadBalancerSourceRanges``, so one of these is the only restriction a NodeBalancer has.
FIREWALL_ACL_ANNOTATION: Final = "service.beta.kubernetes.io/linode-loadbalancer-firewall-acl"
FIREWALL_ID_ANNOTATION: Final = "service.beta.kubernetes.io/linode-loadbalancer-firewall-id"


def stack_cluster_mode() -> str | None:
    """``fedobs:cluster.mode`` of the stack being previewed (``lke`` or ``existing``), from the config the
    CLI passes the pack (``PULUMI_CONFIG``, structured values as JSON text); None when not visible."""
    raw = pulumi.runtime.get_config(CLUSTER_CONFIG_KEY)
    if not isinstance(raw, str):
        return None
    try:
        cluster = json.loads(raw)
    except ValueError:
        return None
    mode = cluster.get("mode") if isinstance(cluster, dict) else None
    return mode if isinstance(mode, str) else None


def firewall_acl_problem(value: Any) -> str | None:
    """Why a ``firewall-acl`` annotation does not restrict a NodeBalancer, or None. The CCM
    (``cloud/linode/services/firewalls.go``, ``CreateFirewallOptsForSvc``) takes JSON with exactly one of
    ``allowList``/``denyList``, each ``{"ipv4": [...], "ipv6": [...]}``; only an allowList (inbound policy
    DROP) restricts who connects, and only if it lists something narrower than everything."""
    try:
        acl = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        acl = None
    if not isinstance(acl, dict):
        return "is not a JSON object (the CCM fails to build the firewall)"
    if "denyList" in acl:
        return "has a denyList: every address it does not list may connect"
    allow = acl.get("allowList")
    if not isinstance(allow, dict):
        return "has no allowList"
    listed: list[str] = []
    for family in ("ipv4", "ipv6"):
        addresses = allow.get(family)
        listed += [a for a in addresses if isinstance(a, str)] if isinstance(addresses, list) else []
    if not listed:
        return "allows no address"
    for address in listed:
        try:
            network = ipaddress.ip_network(address, strict=False)
        except ValueError:
            return f"lists {address!r}, which is not an address or CIDR"
        if network in _OPEN_NETWORKS:
            return f"allows {address!r}, every address"
    return None


def _load_balancer_problem(props: Mapping[str, Any]) -> str | None:
    if dig(props, "spec", "type") != "LoadBalancer":
        return None
    annotations = dig(props, "metadata", "annotations")
    if annotations is UNKNOWN:
        return None
    annotations = annotations if isinstance(annotations, dict) else {}
    firewall_id = annotations.get(FIREWALL_ID_ANNOTATION)
    if firewall_id is UNKNOWN or (isinstance(firewall_id, str) and firewall_id.strip().isdigit()):
        return None  # the CCM prefers the id over an ACL (UpdateNodeBalancerFirewall)
    if firewall_id is not None:
        return f"annotation {FIREWALL_ID_ANNOTATION} is {firewall_id!r}, not a Cloud Firewall id"
    acl = annotations.get(FIREWALL_ACL_ANNOTATION)
    if acl is UNKNOWN:
        return None
    if acl is None:
        return (
            f"has neither {FIREWALL_ACL_ANNOTATION} nor {FIREWALL_ID_ANNOTATION}: its NodeBalancer is open to "
            "the Internet (the Linode CCM ignores spec.loadBalancerSourceRanges)"
        )
    problem = firewall_acl_problem(acl)
    return f"annotation {FIREWALL_ACL_ANNOTATION} {problem}" if problem else None


def validate_lke_load_balancer_firewalls(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """In LKE mode every ``type: LoadBalancer`` Service carries a Cloud Firewall annotation that restricts it.

    LKE mode: the stack's ``fedobs:cluster.mode`` is ``lke``, or (config not visible) the stack declares
    an LKE cluster; on an existing cluster the annotations mean nothing to its cloud."""
    mode = stack_cluster_mode()
    lke = mode == "lke" or (mode is None and any(r.resource_type == LKE_CLUSTER_TYPE for r in args.resources))
    if not lke:
        return
    for resource in args.resources:
        if resource.resource_type != SERVICE_TYPE:
            continue
        props = reveal(plain(resource.props))
        problem = _load_balancer_problem(props)
        if problem is not None:
            name = dig(props, "metadata", "name")
            report_violation(f"LoadBalancer Service {name!r} ({resource.name}) {problem}", resource.urn)


# --- rule: stateful resources are protected ----------------------------------------------------------

#: Resource types that hold state Pulumi must never delete or replace by accident, and why.
STATEFUL_TYPES: Final[dict[str, str]] = {
    "linode:index/lkeCluster:LkeCluster": "the cluster holds every volume, Secret and workload of the stack",
    "linode:index/objectStorageBucket:ObjectStorageBucket": "the bucket holds the Raft snapshots",
    "vault:transit/secretBackendKey:SecretBackendKey": (
        "an edge Vault unseals with this key: losing it leaves that Vault sealed for good"
    ),
    "kubernetes:core/v1:PersistentVolumeClaim": "the claim holds a volume's data",
}
#: Charts whose release owns persistent volumes.
STATEFUL_CHARTS: Final[dict[str, str]] = {"vault": "the release owns Vault's Raft data and audit volumes"}


def stateful_reason(resource_type: str, props: Mapping[str, Any]) -> str | None:
    """Why a resource is stateful, or None. ``props`` are plain (revealed) inputs or outputs."""
    if resource_type in STATEFUL_TYPES:
        return STATEFUL_TYPES[resource_type]
    if is_helm_release(resource_type):
        return STATEFUL_CHARTS.get(chart_name(props))
    statefulset = resource_type.startswith("kubernetes:apps/") and resource_type.endswith(":StatefulSet")
    if statefulset and dig(props, "spec", "volumeClaimTemplates"):
        return "the StatefulSet owns persistent volume claims"
    return None


def validate_stateful_protected(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Clusters, the snapshot bucket, transit unseal keys, PVCs, PVC-owning StatefulSets and the Vault
    release are declared with ``protect=True``."""
    reason = stateful_reason(args.resource_type, reveal(plain(args.props)))
    if reason is not None and not args.opts.protect:
        report_violation(f"{args.resource_type} {args.name!r} is not protected (protect=True): {reason}", None)


def _namespace_of(resource: PolicyResource) -> str | None:
    props = reveal(plain(resource.props))
    namespace = (
        props.get("namespace") if is_helm_release(resource.resource_type) else dig(props, "metadata", "namespace")
    )
    return namespace if isinstance(namespace, str) and namespace else None


def validate_stateful_namespaces(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """A Namespace the stack declares that holds a stateful release, StatefulSet or PVC is protected:
    deleting a namespace deletes its volume claims."""
    holders: dict[str, str] = {}
    for resource in args.resources:
        props = reveal(plain(resource.props))
        if stateful_reason(resource.resource_type, props) is None:
            continue
        namespace = _namespace_of(resource)
        if namespace is not None:
            holders.setdefault(namespace, f"{resource.resource_type} {resource.name!r}")
    for resource in args.resources:
        if resource.resource_type != "kubernetes:core/v1:Namespace" or resource.opts.protect:
            continue
        name = dig(reveal(plain(resource.props)), "metadata", "name")
        if isinstance(name, str) and name in holders:
            report_violation(
                f"Namespace {name!r} ({resource.name}) is not protected (protect=True): it holds "
                f"{holders[name]}, and deleting the namespace deletes its volume claims",
                resource.urn,
            )


# --- the pack's policies ---------------------------------------------------------------------------

Validation = Callable[[ResourceValidationArgs, ReportViolation], None]

RESOURCE_RULES: Final[tuple[tuple[str, str, Validation], ...]] = (
    (
        "vault-tls-enabled",
        "Vault TLS is never disabled: the vault chart keeps TLS on every listener "
        "(global.tlsDisable false) and the Vault provider verifies https.",
        validate_vault_tls,
    ),
    (
        "vault-kubernetes-auth-roles-exact",
        "Kubernetes auth roles are bound to exact service accounts and namespaces, never '*'.",
        validate_kubernetes_auth_role,
    ),
    (
        "vso-connections-verify-tls",
        "Vault Secrets Operator connections use https and verify Vault's certificate (no skipTLSVerify).",
        validate_vso_connection,
    ),
    (
        "charts-and-images-pinned",
        "Helm charts are pinned to exact versions and container images to fixed tags "
        "or digests (no 'latest', no ranges).",
        validate_pinned,
    ),
    (
        "no-plaintext-secret-inputs",
        "Inputs that carry credentials reach the engine as secrets.",
        validate_secret_inputs,
    ),
    (
        "hub-control-plane-acl",
        "The hub's LKE control plane has an ACL with at least one allowed address.",
        validate_hub_control_plane_acl,
    ),
    (
        "stateful-resources-protected",
        "Stateful resources (clusters, snapshot buckets, transit unseal keys, "
        "volumes, the Vault release) are protected from deletion and replacement.",
        validate_stateful_protected,
    ),
)
STACK_RULES: Final[tuple[tuple[str, str, Callable[[StackValidationArgs, ReportViolation], None]], ...]] = (
    (
        "stateful-namespaces-protected",
        "Namespaces that hold stateful releases or volumes are protected.",
        validate_stateful_namespaces,
    ),
    (
        "lke-load-balancers-firewalled",
        "On LKE every LoadBalancer Service has a Cloud Firewall (the CCM's firewall-acl allowList or "
        "firewall-id annotation); loadBalancerSourceRanges restricts nothing there.",
        validate_lke_load_balancer_firewalls,
    ),
)


def policies() -> list[Policy]:
    """Every rule of the pack, each MANDATORY."""
    built: list[Policy] = [
        ResourceValidationPolicy(
            name=name, description=description, validate=validate, enforcement_level=EnforcementLevel.MANDATORY
        )
        for name, description, validate in RESOURCE_RULES
    ]
    built += [
        StackValidationPolicy(
            name=name, description=description, validate=validate, enforcement_level=EnforcementLevel.MANDATORY
        )
        for name, description, validate in STACK_RULES
    ]
    return built
