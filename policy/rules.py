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


def parse_hcl(config: Any) -> dict[str, Any] | str:
    """HCL text (or the JSON form Vault also reads, as text or an object) parsed, or why it cannot be read."""
    if isinstance(config, str) and config.lstrip().startswith("{"):
        try:  # HCL has no top-level object: this is Vault's JSON form
            config = json.loads(config)
        except ValueError:
            return "is not valid JSON"
    if isinstance(config, str):
        try:
            parsed: Any = hcl2.loads(config, serialization_options=_HCL_OPTIONS)
        except Exception as exc:  # any parse error: a config the pack cannot read is not accepted
            return f"is not valid HCL ({type(exc).__name__})"
    else:
        parsed = config
    if not isinstance(parsed, dict):
        return "is neither HCL text nor a configuration object"
    return parsed


def server_config_tls_problems(config: Any) -> list[str]:
    """What in one Vault server configuration (HCL text or Vault's JSON form) turns TLS off."""
    parsed = parse_hcl(config)
    if isinstance(parsed, str):
        suffix = ", so its listeners cannot be checked" if parsed.startswith("is not valid") else ""
        return [parsed + suffix]
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


# --- rule: the vault chart never runs a dev server -----------------------------------------------------


def validate_vault_not_dev(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """The ``vault`` chart with ``server.dev.enabled`` off: the chart's dev mode runs ``vault server -dev``
    (in-memory storage, unsealed, plain HTTP, a root token from the values)."""
    if not is_helm_release(args.resource_type):
        return
    props = reveal(plain(args.props))
    if chart_name(props) != "vault":
        return
    enabled = dig(props, "values", "server", "dev", "enabled")
    if _known(enabled) and truthy(enabled):
        report_violation(
            f"values server.dev.enabled is {enabled!r}: the chart would run Vault's dev server (in-memory "
            "storage, unsealed, plain HTTP, a root token in server.dev.devRootToken)",
            None,
        )


# --- rule: Vault's listeners are hardened --------------------------------------------------------------

#: TLS versions Vault accepts for ``tls_min_version``/``tls_max_version``; below tls12 is refused.
ACCEPTED_TLS_VERSIONS: Final = ("tls12", "tls13")
#: Listener options naming the addresses whose client-address claims Vault believes.
TRUSTED_PROXY_OPTIONS: Final = ("x_forwarded_for_authorized_addrs", "proxy_protocol_authorized_addrs")
#: ``(block, option)`` of a listener that open an endpoint to unauthenticated clients.
UNAUTHENTICATED_ACCESS: Final = (
    ("telemetry", "unauthenticated_metrics_access"),
    ("profiling", "unauthenticated_pprof_access"),
    ("inflight_requests_logging", "unauthenticated_in_flight_requests_access"),
)


def _addresses_of(value: Any) -> list[str]:
    """A listener's address list: HCL/JSON list, or one comma-separated string (Vault reads both)."""
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def _listener_problems(label: str, listener: Mapping[str, Any]) -> Iterator[str]:
    address = listener.get("address")
    name = f'listener "{label}"' + (f" at {address!r}" if isinstance(address, str) else "")
    for option in ("tls_min_version", "tls_max_version"):
        version = listener.get(option)
        if version is not None and str(version).lower() not in ACCEPTED_TLS_VERSIONS:
            yield f"{name} sets {option} = {version!r}: TLS below 1.2 is refused (accepted: tls12, tls13)"
    for option in TRUSTED_PROXY_OPTIONS:
        if listener.get(option) is not None:
            for problem in breadth_problems(_addresses_of(listener[option])):
                yield f"{name} {option} {problem}: any such client may claim any address"
    behavior = listener.get("proxy_protocol_behavior")
    if isinstance(behavior, str) and behavior == "use_always":
        yield (
            f"{name} sets proxy_protocol_behavior = 'use_always': the PROXY header of every client is "
            "believed (use allow_authorized or deny_unauthorized with proxy_protocol_authorized_addrs)"
        )
    for block, option in UNAUTHENTICATED_ACCESS:
        for body in _sub_blocks(listener.get(block)):
            if truthy(body.get(option)):
                yield f"{name} sets {block} {{ {option} = {body.get(option)!r} }}: that endpoint needs no token"


def _sub_blocks(value: Any) -> Iterator[Mapping[str, Any]]:
    """An unlabelled nested block (``telemetry { ... }``): a list of bodies from HCL, one object from JSON."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            yield item


def server_config_listener_problems(config: Any) -> list[str]:
    """What in one Vault server configuration weakens a listener: TLS below 1.2, client-address claims
    believed from (nearly) everyone, unauthenticated metrics, pprof or in-flight request endpoints. A
    configuration that does not parse is left to ``vault-tls-enabled``, which refuses it."""
    parsed = parse_hcl(config)
    if isinstance(parsed, str):
        return []
    return [problem for label, body in _blocks(parsed, "listener") for problem in _listener_problems(label, body)]


def validate_vault_listeners(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Every listener of the ``vault`` chart's server configurations: ``tls_min_version`` (and
    ``tls_max_version``) tls12 or later; ``x_forwarded_for_authorized_addrs`` and
    ``proxy_protocol_authorized_addrs`` within :data:`BROADEST_PREFIX`, ``proxy_protocol_behavior`` not
    ``use_always``; no ``unauthenticated_metrics_access`` (nor pprof, in-flight requests)."""
    if not is_helm_release(args.resource_type):
        return
    props = reveal(plain(args.props))
    if chart_name(props) != "vault":
        return
    server = dig(props, "values", "server")
    for path in _VAULT_SERVER_CONFIGS:
        config = dig(server, *path)
        if _known(config):
            for problem in server_config_listener_problems(config):
                report_violation(f"values server.{'.'.join(path)} {problem}", None)


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


#: Namespaces of the cluster itself: their service accounts (controllers, kube-proxy, CSI and CNI agents,
#: and whatever a cluster add-on runs there) are no workload's identity to hand Vault policies to.
SYSTEM_NAMESPACES: Final = ("kube-system", "kube-public", "kube-node-lease")
_NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"


def _selected_system_namespaces(selector: Any) -> list[str]:
    """System namespaces a ``boundServiceAccountNamespaceSelector`` names by their ``kubernetes.io/metadata.name``
    label (``matchLabels`` or an ``In`` expression); other selectors cannot be judged without the cluster."""
    if isinstance(selector, str):
        try:
            selector = json.loads(selector)
        except ValueError:
            return []
    if not isinstance(selector, dict):
        return []
    named: list[Any] = []
    labels = selector.get("matchLabels")
    if isinstance(labels, dict):
        named.append(labels.get(_NAMESPACE_NAME_LABEL))
    expressions = selector.get("matchExpressions")
    for expression in expressions if isinstance(expressions, list) else []:
        if not isinstance(expression, dict) or expression.get("key") != _NAMESPACE_NAME_LABEL:
            continue
        if expression.get("operator") == "In" and isinstance(expression.get("values"), list):
            named += expression["values"]
    return [n for n in named if n in SYSTEM_NAMESPACES]


def validate_kubernetes_auth_role(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """A ``vault:kubernetes/authBackendRole`` names its service accounts and namespaces; none is ``*``,
    and no namespace is one of the cluster's own (:data:`SYSTEM_NAMESPACES`)."""
    if args.resource_type != "vault:kubernetes/authBackendRole:AuthBackendRole":
        return
    props = reveal(plain(args.props))
    names = props.get("boundServiceAccountNames")
    namespaces = props.get("boundServiceAccountNamespaces")
    for prop, values in (("boundServiceAccountNames", names), ("boundServiceAccountNamespaces", namespaces)):
        for value in values if isinstance(values, list) else []:
            if isinstance(value, str) and "*" in value:
                report_violation(f"{prop} contains {value!r}: bind the role to exact names, never a wildcard", None)
    for value in namespaces if isinstance(namespaces, list) else []:
        if isinstance(value, str) and value.strip() in SYSTEM_NAMESPACES:
            report_violation(
                f"boundServiceAccountNamespaces contains {value!r}: a system namespace's service accounts "
                "belong to the cluster's own components, never a Vault role",
                None,
            )
    for value in _selected_system_namespaces(props.get("boundServiceAccountNamespaceSelector")):
        report_violation(
            f"boundServiceAccountNamespaceSelector selects {value!r}: a system namespace's service accounts "
            "belong to the cluster's own components, never a Vault role",
            None,
        )
    if isinstance(names, list) and not names:
        report_violation("boundServiceAccountNames is empty: the role must name its service accounts", None)
    selector = props.get("boundServiceAccountNamespaceSelector")
    if isinstance(namespaces, list) and not namespaces and selector is not UNKNOWN and _selector_is_empty(selector):
        report_violation(
            "boundServiceAccountNamespaces is empty and boundServiceAccountNamespaceSelector selects "
            "every namespace: bind the role to exact namespaces",
            None,
        )


# --- rule: Vault ACL policies grant nothing root-wide, sudo only to fedobs-admin --------------------------

POLICY_TYPE: Final = "vault:index/policy:Policy"
#: The stack's own admin policy (components/admin_policy.py) and the only paths it may hold ``sudo`` on:
#: enabling auth methods and audit devices needs it in Vault (and OpenBao).
ADMIN_POLICY_NAME: Final = "fedobs-admin"
ADMIN_SUDO_PATHS: Final = frozenset({"sys/auth/*", "sys/audit", "sys/audit/*"})
#: The one workload policy that may hold ``sudo``: the hub's transit watch (components/transit_watch.py)
#: lists the leases of each edge's transit-unseal tokens, and OpenBao makes every list under
#: ``sys/leases/lookup/`` a root path (internal/vault/logical_system.go ``PathsSpecial.Root``:
#: ``leases/lookup/*``). Allowed: exactly ``list`` and ``sudo``, on one exact token-role lease prefix per path.
WATCH_POLICY_NAME: Final = "transit-watch"
WATCH_SUDO_PATH: Final = re.compile(
    r"sys/leases/lookup/auth/token/create/transit-unseal-[a-z0-9]([a-z0-9-]*[a-z0-9])?/"
)


def is_root_wide(path: str) -> bool:
    """Whether a policy path matches across mounts the policy does not name: its first segment is ``+`` or
    globbed (``*``, ``+/...``, ``s*``), or it is empty. Such a path reaches ``sys/`` and ``auth/`` too."""
    first = path.lstrip("/").split("/", 1)[0]
    return first in ("", "+") or first.endswith("*")


def _capabilities(body: Mapping[str, Any]) -> set[str]:
    """A path's capabilities, with the legacy ``policy = "read|write|sudo|deny"`` form read the same way."""
    found = {str(c).lower() for c in body.get("capabilities") or [] if isinstance(c, str)}
    legacy = body.get("policy")
    if isinstance(legacy, str):
        found.add(legacy.lower())
    return found


def sudo_allowed(name: Any, path: str, granted: Sequence[str]) -> bool:
    """Whether ``sudo`` (with ``granted``) on ``path`` is one of the pack's two exceptions."""
    if name == ADMIN_POLICY_NAME:
        return path in ADMIN_SUDO_PATHS
    return name == WATCH_POLICY_NAME and bool(WATCH_SUDO_PATH.fullmatch(path)) and list(granted) == ["list", "sudo"]


def policy_problems(name: Any, text: Any) -> list[str]:
    """What a Vault ACL policy grants that the pack refuses: a root-wide path with any capability but
    ``deny``, or ``sudo`` anywhere but on :data:`ADMIN_SUDO_PATHS` of :data:`ADMIN_POLICY_NAME` (and
    ``list`` + ``sudo`` on a :data:`WATCH_SUDO_PATH` of :data:`WATCH_POLICY_NAME`)."""
    parsed = parse_hcl(text)
    if isinstance(parsed, str):
        return [f"policy {parsed}, so its paths cannot be checked"]
    problems: list[str] = []
    for path, body in _blocks(parsed, "path"):
        granted = sorted(_capabilities(body) - {"deny"})
        if granted and is_root_wide(path):
            problems.append(f"policy path {path!r} grants {granted} on every mount (sys/ and auth/ included)")
        if "sudo" in granted and not sudo_allowed(name, path, granted):
            allowed = (
                f"only {ADMIN_POLICY_NAME!r} may hold sudo, on {', '.join(sorted(ADMIN_SUDO_PATHS))}, and "
                f"{WATCH_POLICY_NAME!r} list+sudo on one token role's lease prefix"
            )
            problems.append(f"policy path {path!r} grants sudo in policy {name!r}: {allowed}")
    return problems


def validate_vault_policy(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """A ``vault:index/policy:Policy`` grants nothing on ``*``/``+`` root globs and ``sudo`` only where the
    stack's admin policy needs it."""
    if args.resource_type != POLICY_TYPE:
        return
    props = reveal(plain(args.props))
    name, text = props.get("name"), props.get("policy")
    if name is UNKNOWN or not _known(text):
        return
    for problem in policy_problems(name, text):
        report_violation(problem, None)


# --- rule: auth roles and ACL policies are typed resources, never generic writes ------------------------

GENERIC_WRITE_TYPES: Final = ("vault:generic/endpoint:Endpoint", "vault:generic/secret:Secret")
#: Paths that declare who may log in with which policies, or the policies themselves; pulumi-vault has a
#: typed resource for each (``*.AuthBackendRole``, ``vault.Policy``, ...), which the pack's rules check.
_AUTH_ENTITY_PATH: Final = re.compile(r"auth/.+/(role|roles|users|certs|groups)(/|$)")
_POLICY_PATH: Final = re.compile(r"sys/(policy|policies/acl)(/|$)")
#: The one generic write to an auth entity let through: a userpass user's address binding and nothing
#: else (pulumi-vault has no userpass user resource; the field grants no policy and sets no credential).
_USER_PATH: Final = re.compile(r"auth/[^/]+/users/[^/]+$")
ADDRESS_BINDING_FIELDS: Final = frozenset({"token_bound_cidrs"})


def _binds_addresses_only(data_json: Any) -> bool:
    try:
        data = json.loads(data_json) if isinstance(data_json, str) else None
    except ValueError:
        return False
    return isinstance(data, dict) and bool(data) and set(data) <= ADDRESS_BINDING_FIELDS


def generic_write_problem(path: str, data_json: Any = None) -> str | None:
    """Why a generic write of ``data_json`` to ``path`` is refused, or None."""
    path = path.strip().lstrip("/")
    if _USER_PATH.match(path) and _binds_addresses_only(data_json):
        return None
    if _AUTH_ENTITY_PATH.match(path):
        return (
            f"path {path!r} writes an auth role (or user, certificate, group) through a generic write: declare it "
            "as its typed resource (vault.kubernetes.AuthBackendRole, vault.jwt.AuthBackendRole, "
            "vault.tokenauth.AuthBackendRole, ...) so the pack's rules see its bindings and policies"
        )
    if _POLICY_PATH.match(path):
        return f"path {path!r} writes an ACL policy through a generic write: declare it as vault.Policy to be checked"
    return None


def validate_generic_writes(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """No ``vault.generic.Endpoint``/``Secret`` writes an auth role or an ACL policy."""
    if args.resource_type not in GENERIC_WRITE_TYPES:
        return
    props = reveal(plain(args.props))
    path = props.get("path")
    if isinstance(path, str):
        problem = generic_write_problem(path, props.get("dataJson"))
        if problem is not None:
            report_violation(problem, None)


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


def containers_of(kind: str, props: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, container)`` for every container, init and ephemeral container of a workload's pod spec;
    ``where`` reads like ``spec.template.spec.containers[0] ('app')``."""
    path = POD_SPEC_PATHS[kind]
    pod_spec = dig(props, *path)
    if not isinstance(pod_spec, dict):
        return
    prefix = ".".join(path)
    for list_name in _CONTAINER_LISTS:
        containers = pod_spec.get(list_name)
        for index, container in enumerate(containers if isinstance(containers, list) else []):
            if isinstance(container, dict):
                yield f"{prefix}.{list_name}[{index}] ({container.get('name')!r})", container


def _check_workload(kind: str, props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    for where, container in containers_of(kind, props):
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


# --- rule: no credentials as plain literals in Helm values, container env or ConfigMaps ------------------
#
# A heuristic on key names, since these places hold any kind of setting. A key names a credential when its
# last word (keys split at camelCase, ``_``, ``-``, ``.``; a plural read as its singular) is one of
# CREDENTIAL_WORDS or ends like CREDENTIAL_ENDINGS, or its last two words are one of CREDENTIAL_PAIRS. So
# ``VAULT_TOKEN``, ``dbPassword``, ``client_secret``, ``apiKey``, ``AWS_SECRET_ACCESS_KEY`` name credentials,
# and ``VAULT_TOKEN_FILE``, ``SNAPSHOT_JWT_FILE``, ``secretName``, ``tokenTtl``, ``AWS_ACCESS_KEY_ID`` do not
# (the last word names a file, a Secret, a duration, an identifier). Such a key is refused when its value
# is a non-empty literal string or number: not a secret (Pulumi's marker), not unknown yet, not a whole
# reference resolved elsewhere (``$(VAR)``, ``${...}``, ``{{ ... }}``) and not an absolute path.

#: Last words that make a key name a credential.
CREDENTIAL_WORDS: Final = frozenset(
    {"password", "passwd", "passphrase", "pass", "pwd", "secret", "token", "credential", "jwt", "apikey"}
)
#: Endings of a key's last word that name a credential (``dbpassword``, ``authtoken``, ``privatekey``).
CREDENTIAL_ENDINGS: Final = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "accesskey",
    "secretkey",
)
#: Last two words that name a credential (``api_key``, ``PRIVATE_KEY``, ``secret_access_key``, ``secretId``).
CREDENTIAL_PAIRS: Final = frozenset(
    {
        ("api", "key"),
        ("private", "key"),
        ("access", "key"),
        ("secret", "key"),
        ("signing", "key"),
        ("encryption", "key"),
        ("master", "key"),
        ("hmac", "key"),
        ("shared", "key"),
        ("account", "key"),
        ("client", "key"),
        ("secret", "id"),
    }
)
#: Words before a final ``secret`` that make the key name a Kubernetes Secret rather than hold one
#: (``existingSecret``, ``caCertSecret``, ``tlsSecret``, ``imagePullSecrets``).
SECRET_NAME_QUALIFIERS: Final = frozenset({"existing", "cert", "tls", "ca", "pull"})
#: Keys that, set (non-empty), make a mapping a reference to a Kubernetes Secret (vault-helm's
#: ``extraSecretEnvironmentVars`` items, an env var's ``valueFrom``): there an entry whose last word is ``key``
#: (``secretKey: token``) names a key of that Secret and holds nothing. Its other entries are still judged.
SECRET_REFERENCE_KEYS: Final = frozenset({"secretName", "existingSecret", "secretRef", "secretKeyRef", "valueFrom"})
_KEY_WORD: Final = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_REFERENCE_VALUE: Final = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)|\$\{[^{}]+\}|\{\{.*\}\}|/\S*", re.DOTALL)
CONFIG_MAP_TYPE: Final = "kubernetes:core/v1:ConfigMap"


def credential_key(key: str) -> bool:
    """Whether a setting's key names a credential (see the heuristic above)."""
    words = [word.lower() for word in _KEY_WORD.findall(key)]
    if not words:
        return False
    last = words[-1]
    stem = last[:-1] if last.endswith("s") and not last.endswith("ss") else last
    previous = words[-2] if len(words) > 1 else ""
    if stem == "secret" and previous in SECRET_NAME_QUALIFIERS:
        return False
    return (
        bool({last, stem} & CREDENTIAL_WORDS)
        or stem.endswith(CREDENTIAL_ENDINGS)
        or (previous, stem) in CREDENTIAL_PAIRS
    )


def is_plain_literal(value: Any) -> bool:
    """A non-empty literal string or number in plain text (not a secret, not unknown, not a reference)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and bool(value.strip()) and not _REFERENCE_VALUE.fullmatch(value.strip())


def values_credentials(node: Any, path: str) -> Iterator[str]:
    """Paths in Helm values where a key naming a credential holds a plain literal (``{name, value}`` items,
    the env-var form many charts take, are judged by their ``name``)."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from values_credentials(item, f"{path}[{index}]")
        return
    if not isinstance(node, dict):
        return
    name = node.get("name")
    if isinstance(name, str) and credential_key(name) and is_plain_literal(node.get("value")):
        yield f"{path}.value ({name!r})" if path else f"value ({name!r})"
    reference = any(node.get(key) not in (None, "", {}) for key in SECRET_REFERENCE_KEYS)
    for key, value in node.items():
        child = f"{path}.{key}" if path else key
        if isinstance(value, dict | list):
            yield from values_credentials(value, child)
        elif credential_key(key) and is_plain_literal(value) and not (reference and _names_a_key(key)):
            yield child


def _names_a_key(key: str) -> bool:
    """``secretKey``, ``tokenKey``: the name of a key inside the Secret a mapping references."""
    words = _KEY_WORD.findall(key)
    return bool(words) and words[-1].lower() == "key"


def _env_credentials(kind: str, props: Mapping[str, Any]) -> Iterator[str]:
    for where, container in containers_of(kind, props):
        env = container.get("env")
        for index, var in enumerate(env if isinstance(env, list) else []):
            name = var.get("name") if isinstance(var, dict) else None
            if isinstance(name, str) and credential_key(name) and is_plain_literal(var.get("value")):
                yield f"{where}.env[{index}] {name!r} has a plain value: take it from a Secret (valueFrom.secretKeyRef)"


def validate_plain_credentials(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """No Helm value, container env var or ConfigMap entry whose key names a credential holds a plain literal."""
    resource_type = args.resource_type
    kind = resource_type.rsplit(":", 1)[-1]
    props = plain(args.props)
    if is_helm_release(resource_type):
        chart = reveal(props.get("chart"))
        for where in values_credentials(props.get("values"), ""):
            report_violation(
                f"chart {chart!r} values {where} holds a credential in plain text: reference a Secret "
                "(the chart's existingSecret/secretName setting) or at least pass it as a Pulumi secret",
                None,
            )
    elif resource_type.startswith("kubernetes:") and kind in POD_SPEC_PATHS:
        for problem in _env_credentials(kind, props):
            report_violation(problem, None)
    elif resource_type == CONFIG_MAP_TYPE:
        for field in ("data", "binaryData"):
            entries = props.get(field)
            for key, value in entries.items() if isinstance(entries, dict) else []:
                if credential_key(key) and is_plain_literal(value):
                    report_violation(
                        f"{field}.{key} holds a credential in a ConfigMap, readable by anyone who may read "
                        "ConfigMaps in its namespace: put it in a Secret",
                        None,
                    )


# --- address ranges: how broad an allowlist may be -------------------------------------------------------

#: The broadest range an allowlist the pack checks may hold, as a prefix length per IP version: an IPv4 /8
#: (16.7 million addresses, what a regional registry hands out at most) and an IPv6 /32 (an ISP's whole
#: allocation). All ranges of one family together may not cover more addresses than one such range either,
#: so the Internet split into pieces (two /1s, 256 /8s) is refused like 0.0.0.0/0 itself.
BROADEST_PREFIX: Final[dict[int, int]] = {4: 8, 6: 32}
_IPV4_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _judged_network(network: Network) -> Network:
    """An IPv4-mapped IPv6 range (``::ffff:0.0.0.0/96`` and narrower) judged as the IPv4 range it is."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_IPV4_MAPPED):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


def breadth_problems(addresses: Sequence[str]) -> list[str]:
    """Why a list of addresses and CIDRs lets (close to) everyone in, or ``[]``: an entry that is not an
    address or CIDR, an entry broader than :data:`BROADEST_PREFIX`, or one family's entries together
    covering more addresses than the broadest range accepted."""
    problems: list[str] = []
    by_family: dict[int, list[Any]] = {4: [], 6: []}
    too_broad: set[int] = set()
    for address in addresses:
        try:
            network = _judged_network(ipaddress.ip_network(address.strip(), strict=False))
        except ValueError:
            problems.append(f"lists {address!r}, which is not an address or CIDR")
            continue
        limit = BROADEST_PREFIX[network.version]
        if network.prefixlen == 0:
            problems.append(f"allows {address!r}, every address")
            too_broad.add(network.version)
        elif network.prefixlen < limit:
            problems.append(f"allows {address!r}, broader than the /{limit} the pack accepts for IPv{network.version}")
            too_broad.add(network.version)
        by_family[network.version].append(network)
    for version, networks in by_family.items():
        bits = 32 if version == 4 else 128
        limit = BROADEST_PREFIX[version]
        union = sum(n.num_addresses for n in ipaddress.collapse_addresses(networks))
        if version not in too_broad and union > 2 ** (bits - limit):
            problems.append(
                f"allows {union} IPv{version} addresses in all ({', '.join(map(str, networks))}), more than "
                f"the one /{limit} the pack accepts"
            )
    return problems


# --- rule: the hub's LKE control plane has an ACL ------------------------------------------------------

HUB_ROLE_CONFIG_KEY: Final = "fedobs:role"
HUB_TAG: Final = "hub"


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
    """The hub's LKE cluster has ``controlPlane.acl.enabled`` and at least one allowed address, none of them
    (nor all together) broader than :data:`BROADEST_PREFIX`."""
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
    for problem in breadth_problems(listed):
        report_violation(f"controlPlane.acl.addresses {problem}", None)


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
    DROP) restricts who connects, and only if what it lists stays within :data:`BROADEST_PREFIX`."""
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
    problems = breadth_problems(listed)
    return problems[0] if problems else None


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


#: Vault mounts that hold state, by their ``type``.
STATEFUL_MOUNTS: Final[dict[str, str]] = {
    "transit": "the mount holds every edge's unseal key: unmounting it deletes them and seals every edge Vault "
    "for good",
}
MOUNT_TYPE: Final = "vault:index/mount:Mount"


def stateful_reason(resource_type: str, props: Mapping[str, Any]) -> str | None:
    """Why a resource is stateful, or None. ``props`` are plain (revealed) inputs or outputs."""
    if resource_type in STATEFUL_TYPES:
        return STATEFUL_TYPES[resource_type]
    if resource_type == MOUNT_TYPE:
        mount_type = props.get("type")
        return STATEFUL_MOUNTS.get(mount_type) if isinstance(mount_type, str) else None
    if is_helm_release(resource_type):
        return STATEFUL_CHARTS.get(chart_name(props))
    statefulset = resource_type.startswith("kubernetes:apps/") and resource_type.endswith(":StatefulSet")
    if statefulset and dig(props, "spec", "volumeClaimTemplates"):
        return "the StatefulSet owns persistent volume claims"
    return None


def validate_stateful_protected(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Clusters, the snapshot bucket, the transit mount and its unseal keys, PVCs, PVC-owning StatefulSets and
    the Vault release are declared with ``protect=True``."""
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


# --- rule: the Kyverno admission policy denies and fails closed -----------------------------------------

DEVELOPMENT_CONFIG_KEY: Final = "fedobs:developmentMode"
#: Kyverno's CEL policy kinds (``policies.kyverno.io``), which take validationActions and failurePolicy.
KYVERNO_VALIDATING_KINDS: Final = ("ValidatingPolicy", "NamespacedValidatingPolicy")


def stack_is_development() -> bool:
    """``fedobs:developmentMode`` of the stack being previewed (from ``PULUMI_CONFIG``, as :func:`stack_role`);
    False when it is not set or not visible."""
    return truthy(pulumi.runtime.get_config(DEVELOPMENT_CONFIG_KEY))


def is_kyverno_validating_policy(resource_type: str) -> bool:
    return resource_type.startswith("kubernetes:policies.kyverno.io/") and (
        resource_type.rsplit(":", 1)[-1] in KYVERNO_VALIDATING_KINDS
    )


def admission_problems(spec: Any) -> list[str]:
    """Why a Kyverno ValidatingPolicy spec does not refuse what it finds, or ``[]``."""
    if not isinstance(spec, dict):
        return [] if spec is UNKNOWN else ["spec is not set"]
    problems: list[str] = []
    actions = spec.get("validationActions")
    if actions is not UNKNOWN and not (isinstance(actions, list) and "Deny" in actions):
        shown = "not set" if actions is None else repr(actions)
        problems.append(f"spec.validationActions is {shown}: without 'Deny' a violation is only recorded or warned")
    failure = spec.get("failurePolicy")
    if isinstance(failure, str) and failure == "Ignore":
        problems.append(
            "spec.failurePolicy is 'Ignore': while Kyverno is unreachable or an expression fails, every request "
            "is admitted (fail open)"
        )
    admission = dig(spec, "evaluation", "admission", "enabled")
    if _known(admission) and not truthy(admission):
        problems.append(f"spec.evaluation.admission.enabled is {admission!r}: the policy is not applied at admission")
    return problems


def validate_admission_enforced(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Kyverno ValidatingPolicies deny (``validationActions`` has ``Deny``), fail closed (``failurePolicy``
    not ``Ignore``) and run at admission, unless the stack sets ``fedobs:developmentMode: true``."""
    if not is_kyverno_validating_policy(args.resource_type) or stack_is_development():
        return
    for problem in admission_problems(reveal(plain(args.props)).get("spec")):
        report_violation(f"{problem} (allowed only on a stack with {DEVELOPMENT_CONFIG_KEY}: true)", None)


# --- rule: the unseal keys are stored encrypted, outside development stacks ----------------------------

#: The bootstrap program (programs/vault_bootstrap) and its development flag (components/vault.py
#: ``PLAINTEXT_UNSEAL_KEYS_FLAG``; a test checks both spellings agree), as flag and as environment variable.
BOOTSTRAP_MODULE: Final = "programs.vault_bootstrap"
PLAINTEXT_UNSEAL_KEYS_FLAG: Final = "--insecure-plaintext-unseal-keys-for-development"
PLAINTEXT_UNSEAL_KEYS_ENV: Final = "VAULT_BOOTSTRAP_INSECURE_PLAINTEXT_UNSEAL_KEYS_FOR_DEVELOPMENT"


def plaintext_unseal_key_problems(container: Mapping[str, Any]) -> list[str]:
    """Where a container running the bootstrap is told to store Shamir unseal keys in plain text."""
    argv = [a for a in [*(container.get("command") or []), *(container.get("args") or [])] if isinstance(a, str)]
    if BOOTSTRAP_MODULE not in argv:
        return []
    problems: list[str] = []
    for index, arg in enumerate(argv):
        value = argv[index + 1] if index + 1 < len(argv) else "true"
        if arg.startswith(PLAINTEXT_UNSEAL_KEYS_FLAG + "="):
            value = arg.split("=", 1)[1]
        elif arg != PLAINTEXT_UNSEAL_KEYS_FLAG:
            continue
        if value.lower() != "false":
            problems.append(f"passes {PLAINTEXT_UNSEAL_KEYS_FLAG} {value}")
    for item in container.get("env") or []:
        if isinstance(item, dict) and item.get("name") == PLAINTEXT_UNSEAL_KEYS_ENV and item.get("value") == "true":
            problems.append(f"sets {PLAINTEXT_UNSEAL_KEYS_ENV}=true")
    return problems


def validate_unseal_keys_encrypted(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """The Vault bootstrap never stores Shamir unseal keys in plain text (``fedobs:vault.
    insecurePlaintextUnsealKeysForDevelopment``, which renders the flag) unless the stack sets
    ``fedobs:developmentMode: true``."""
    resource_type = args.resource_type
    kind = resource_type.rsplit(":", 1)[-1]
    if not resource_type.startswith("kubernetes:") or kind not in POD_SPEC_PATHS or stack_is_development():
        return
    for where, container in containers_of(kind, reveal(plain(args.props))):
        for problem in plaintext_unseal_key_problems(container):
            report_violation(
                f"{where} {problem}: the Vault bootstrap would store the unseal keys in plain text in the "
                "vault-init Secret (fedobs:vault.insecurePlaintextUnsealKeysForDevelopment); give "
                f"fedobs:vault.operatorPgpKeys instead. Allowed only on a stack with {DEVELOPMENT_CONFIG_KEY}: true",
                None,
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
        "vault-no-dev-server",
        "The vault chart never runs Vault's dev server (server.dev.enabled).",
        validate_vault_not_dev,
    ),
    (
        "vault-listeners-hardened",
        "Vault listeners: TLS 1.2 or later, client-address claims (X-Forwarded-For, PROXY protocol) believed "
        "only from narrow ranges, no unauthenticated metrics, pprof or in-flight request endpoints.",
        validate_vault_listeners,
    ),
    (
        "vault-kubernetes-auth-roles-exact",
        "Kubernetes auth roles are bound to exact service accounts and namespaces, never '*' and never "
        "kube-system, kube-public or kube-node-lease.",
        validate_kubernetes_auth_role,
    ),
    (
        "vault-policies-bounded",
        "Vault ACL policies grant nothing on root globs ('*', '+/...') and sudo only in fedobs-admin, on the "
        "paths it needs, and in transit-watch, to list one token role's leases.",
        validate_vault_policy,
    ),
    (
        "vault-roles-and-policies-typed",
        "Auth roles and ACL policies are declared as their typed resources, never written through "
        "vault.generic.Endpoint or vault.generic.Secret.",
        validate_generic_writes,
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
        "no-plaintext-credentials-in-config",
        "Helm values, container env vars and ConfigMap entries whose key names a credential hold no plain literal.",
        validate_plain_credentials,
    ),
    (
        "admission-policy-enforced",
        "Kyverno ValidatingPolicies deny and fail closed (validationActions Deny, failurePolicy not Ignore), "
        "outside stacks marked fedobs:developmentMode.",
        validate_admission_enforced,
    ),
    (
        "vault-unseal-keys-encrypted",
        "The Vault bootstrap stores unseal keys encrypted to the operators' PGP keys: a Job passing its "
        "plaintext development flag is refused outside stacks marked fedobs:developmentMode.",
        validate_unseal_keys_encrypted,
    ),
    (
        "hub-control-plane-acl",
        "The hub's LKE control plane has an ACL with at least one allowed address, none of them broader "
        "than an IPv4 /8 or IPv6 /32, nor all together.",
        validate_hub_control_plane_acl,
    ),
    (
        "stateful-resources-protected",
        "Stateful resources (clusters, snapshot buckets, the transit mount and its unseal keys, "
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
