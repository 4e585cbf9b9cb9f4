"""The Kyverno ``ValidatingPolicy`` objects of the admission guardrail (pure data: the tests evaluate
their CEL with a real CEL engine).

1. ``require-vault-secrets-operator``: every way a Pod comes to run in a collector namespace (a Pod
   created, bare or by a controller; a Deployment, StatefulSet, DaemonSet, ReplicaSet,
   ReplicationController, Job or CronJob created or updated; an ephemeral container added through
   ``pods/ephemeralcontainers``) may reference only Secrets that VSO created for a VaultStaticSecret
   of that namespace, judged by the Secret's owner reference and the owner's UID, never by a label.
2. ``vso-secrets-written-only-by-vso``: in the collector namespaces only VSO's controller may create
   or update a Secret that carries VSO's marks (its managed-by or owner-UID label, an owner reference
   to a ``secrets.hashicorp.com`` object) or that a VaultStaticSecret names as its destination. This
   is what makes the owner reference of rule 1 proof of VSO's authorship.
3. ``otel-collectors-in-collector-namespaces``: a workload or Pod labelled as an OpenTelemetry
   collector runs only in the collector namespaces (no lookup).

What VSO does, at the pinned v1.4.1 (hashicorp/vault-secrets-operator commit 9b840a5a):
``helpers/secrets.go`` ``SyncSecret`` creates a destination with ``create: true`` with exactly one
owner reference ``{apiVersion: secrets.hashicorp.com/v1beta1, kind: VaultStaticSecret, name, uid}``
of the VaultStaticSecret (``common/common.go`` ``NewSyncableSecretMetaData`` takes the owner's
apiVersion and kind) and the labels of ``OwnerLabelsForObj`` (``app.kubernetes.io/managed-by:
hashicorp-vso``, ``app.kubernetes.io/name``, ``app.kubernetes.io/component: secret-sync``,
``secrets.hashicorp.com/vso-ownerRefUID: <uid>``); with ``overwrite: false`` it refuses a
pre-existing Secret whose labels and owner references are not exactly those
(``checkSecretIsOwnedByObj``); test/integration/integration_test.go ``assertSyncableSecret``
asserts the same owner reference. It writes with ``client.Create``/``Update``/``Delete`` as its
controller's ServiceAccount (:data:`components.vso.CONTROLLER_USERNAME`).

What Kyverno does, at the pinned v1.19.0 (kyverno/kyverno commit ee97ce09): ``resource.Get`` is a
plain GET through the dynamic client (pkg/cel/libs/context.go ``GetResource``: RBAC ``get``),
``resource.List`` a LIST (``list``); a policy's ``matchConstraints.namespaceSelector`` and
``objectSelector`` become its webhook's (pkg/controllers/webhook/validating.go,
``resolveNamespaceSelector``), so the API server calls Kyverno only for the collector namespaces;
a policy matching more than one resource rule is not auto-generated for Pod controllers
(pkg/cel/autogen/support.go ``CanAutoGen``), so every kind's Pod spec path is written here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from components.collectors import COMPONENT_LABEL
from components.vso import CONTROLLER_USERNAME, VAULT_AUTH

POLICY_API_VERSION = "policies.kyverno.io/v1"
POLICY_KIND = "ValidatingPolicy"
POLICY_NAME = "require-vault-secrets-operator"
SECRETS_POLICY_NAME = "vso-secrets-written-only-by-vso"
PLACEMENT_POLICY_NAME = "otel-collectors-in-collector-namespaces"

#: VSO's labels on every Secret it creates (``OwnerLabels`` and ``labelOwnerRefUID`` in helpers/secrets.go).
VSO_MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
VSO_MANAGED_BY = "hashicorp-vso"
VSO_OWNER_UID_LABEL = "secrets.hashicorp.com/vso-ownerRefUID"
VSO_GROUP = "secrets.hashicorp.com"
VSS_API_VERSION = f"{VSO_GROUP}/v1beta1"
VSS_KIND = "VaultStaticSecret"

Mode = Literal["Audit", "Enforce"]

#: Every way a Pod comes to run: the Pod itself (created bare or by any controller), an ephemeral
#: container added to a running Pod, and each built-in controller of Pods (created or updated).
POD_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]},
    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods/ephemeralcontainers"]},
    {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["replicationcontrollers"],
    },
    {
        "apiGroups": ["apps"],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
    },
    {
        "apiGroups": ["batch"],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["jobs", "cronjobs"],
    },
]

#: Where each kind keeps its Pod spec (every other matched kind: ``spec.template.spec``).
POD_SPEC = (
    'object.kind == "Pod" ? object.spec'
    ' : (object.kind == "CronJob" ? object.spec.jobTemplate.spec.template.spec : object.spec.template.spec)'
)

#: Secret names a volume may carry, below the volume (each a LocalObjectReference or a name in the
#: Pod's namespace): ``secret`` and the volume plugins whose credentials come from a Secret.
VOLUME_SECRET_FIELDS = (
    "secret.?secretName",
    "csi.?nodePublishSecretRef.?name",
    "cephfs.?secretRef.?name",
    "rbd.?secretRef.?name",
    "iscsi.?secretRef.?name",
    "flexVolume.?secretRef.?name",
    "azureFile.?secretName",
    "scaleIO.?secretRef.?name",
    "storageos.?secretRef.?name",
)


def validation_actions(mode: Mode) -> list[str]:
    """Enforce denies the request; Audit admits it and records the violation in a policy report."""
    return ["Deny"] if mode == "Enforce" else ["Audit"]


def failure_policy(mode: Mode) -> str:
    """Enforce fails closed (an unreachable Kyverno or a failed lookup refuses the request); Audit must
    never block, so its webhook ignores Kyverno being unavailable."""
    return "Fail" if mode == "Enforce" else "Ignore"


def _cel_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of a DNS label or label key is a valid CEL string literal


def _cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_cel_string(v) for v in values) + "]"


def _names(items: str, var: str, fields: Sequence[str]) -> str:
    """CEL: the names at ``fields`` of each element of ``items``, joined with commas."""
    picks = ", ".join(f'{var}.?{f}.orValue("")' for f in fields)
    return f'{items}.map({var}, [{picks}].join(","))'


#: The Pod spec's Secret references, flattened without ``flatten()`` (cel-expr-python lacks it):
#: every nested list is joined with commas, then the whole is split again and each name kept once.
#: Secret names are DNS-1123 subdomains, which never contain a comma.
SECRET_NAMES_EXPRESSION = (
    "("
    + _names("variables.podSpec.?volumes.orValue([])", "v", VOLUME_SECRET_FIELDS)
    + " + variables.podSpec.?volumes.orValue([]).map(v, v.?projected.?sources.orValue([])"
    '.map(p, p.?secret.?name.orValue("")).join(","))'
    " + variables.containers.map(c, c.?env.orValue([])"
    '.map(e, e.?valueFrom.?secretKeyRef.?name.orValue("")).join(","))'
    ' + variables.containers.map(c, c.?envFrom.orValue([]).map(e, e.?secretRef.?name.orValue("")).join(","))'
    ' + variables.podSpec.?imagePullSecrets.orValue([]).map(s, s.?name.orValue(""))'
    ').join(",").split(",").filter(n, n != "").distinct()'
)


def _owner_auth_refs(secret: str, name: str, ns: str) -> str:
    """CEL: the ``vaultAuthRef`` of each VaultStaticSecret that really owns ``secret`` (named
    ``name``): an owner reference of kind VaultStaticSecret, apiVersion secrets.hashicorp.com/v1beta1,
    to a VaultStaticSecret of the namespace that exists now with that UID and names ``name`` as its
    destination. One GET per such owner reference."""
    get_owner = f'resource.Get({_cel_string(VSS_API_VERSION)}, "vaultstaticsecrets", {ns}, r.name)'
    return (
        f"{secret}.metadata.?ownerReferences.orValue([])"
        f".filter(r, r.kind == {_cel_string(VSS_KIND)} && r.apiVersion == {_cel_string(VSS_API_VERSION)})"
        f".map(r, cel.bind(v, {get_owner}, type(v) != type(null) && v.metadata.uid == r.uid"
        f' && v.spec.?destination.?name.orValue("") == {name}'
        ' ? optional.of(v.spec.?vaultAuthRef.orValue("")) : optional.none()))'
        ".filter(o, o.hasValue()).map(o, o.value())"
    )


def _verdict(ns: str) -> str:
    """CEL, for one referenced Secret name ``n``: ``""`` when VSO created it for a VaultStaticSecret
    of the namespace that authenticates through the stack's VaultAuth, else ``n`` and the reason.
    A workload (never a Pod) may name a Secret that does not exist yet when such a VaultStaticSecret
    (``create: true``) will create it: one ``pulumi up`` applies both before VSO's first sync, and the
    Pods stay refused until VSO has created it."""
    auth = _cel_string(VAULT_AUTH)
    pending = (
        f'resource.List({_cel_string(VSS_API_VERSION)}, "vaultstaticsecrets", {ns}).items.exists(v,'
        ' v.spec.?destination.?name.orValue("") == n && v.spec.?destination.?create.orValue(false) == true'
        f' && v.spec.?vaultAuthRef.orValue("") == {auth})'
    )
    missing = (
        f'(variables.isPod ? n + " (does not exist)" : ({pending} ? "" : n + " (does not exist, and no'
        f' VaultStaticSecret of its namespace syncing through VaultAuth {VAULT_AUTH} creates it)"))'
    )
    return (
        f'cel.bind(s, resource.Get("v1", "secrets", {ns}, n), type(s) == type(null) ? {missing}'
        f" : cel.bind(auths, {_owner_auth_refs('s', 'n', ns)},"
        ' size(auths) == 0 ? n + " (not owned by a VaultStaticSecret of its namespace)"'
        f' : (auths.all(a, a == {auth}) ? "" : n + " (its VaultStaticSecret does not authenticate through'
        f' VaultAuth {VAULT_AUTH})")))'
    )


def _pod_variables() -> list[dict[str, str]]:
    """The Pod spec's Secret references and the verdict on each (lazily evaluated, once)."""
    ns = "object.metadata.namespace"
    return [
        {"name": "isPod", "expression": 'object.kind == "Pod"'},
        {"name": "podSpec", "expression": POD_SPEC},
        {
            "name": "containers",
            "expression": "variables.podSpec.?containers.orValue([])"
            " + variables.podSpec.?initContainers.orValue([])"
            " + variables.podSpec.?ephemeralContainers.orValue([])",
        },
        {"name": "secretNames", "expression": SECRET_NAMES_EXPRESSION},
        {"name": "refused", "expression": f'variables.secretNames.map(n, {_verdict(ns)}).filter(r, r != "")'},
        {
            "name": "subject",
            "expression": f'(variables.isPod && request.operation == "UPDATE" ? "Pod " + {ns} + "/"'
            ' + object.metadata.name + " (ephemeral containers)"'
            f' : object.kind + " " + {ns} + "/" + object.metadata.?name.orValue(""))',
        },
    ]


def _namespace_selector(namespaces: Sequence[str]) -> dict[str, Any]:
    return {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(namespaces)}]}


def _policy(name: str, mode: Mode, background_scan: bool, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": POLICY_API_VERSION,
        "kind": POLICY_KIND,
        "metadata": {"name": name},
        "spec": {
            "validationActions": validation_actions(mode),
            "failurePolicy": failure_policy(mode),
            "evaluation": {"admission": {"enabled": True}, "background": {"enabled": background_scan}},
            # Kubernetes' own ValidatingAdmissionPolicy has no resource lookups: never generate one.
            "autogen": {"validatingAdmissionPolicy": {"enabled": False}},
            **spec,
        },
    }


def require_vso_policy(
    mode: Mode, collector_namespaces: Sequence[str], background_scan: bool = False
) -> dict[str, Any]:
    """Rule 1 (``require-vault-secrets-operator``), for ``collector_namespaces`` (at least one).

    Every Secret a Pod spec references (secret and projected volumes, the Secret of a volume plugin,
    ``env[].valueFrom.secretKeyRef`` and ``envFrom[].secretRef`` of every container, init and
    ephemeral container, ``imagePullSecrets``) must exist and be owned by a VaultStaticSecret of its
    namespace that exists with the owner reference's UID, names that Secret as its destination and
    authenticates through the stack's VaultAuth ``vault``. A Secret is looked up with ``resource.Get``
    (one GET per referenced Secret and per owner reference), VaultStaticSecrets with ``resource.Get``
    and, only for a workload naming a Secret that does not exist yet, ``resource.List``.
    """
    return _policy(
        POLICY_NAME,
        mode,
        background_scan,
        {
            "matchConstraints": {
                "resourceRules": [{**rule, "scope": "Namespaced"} for rule in POD_RULES],
                "namespaceSelector": _namespace_selector(collector_namespaces),
            },
            "variables": _pod_variables(),
            "validations": [
                {
                    "expression": "size(variables.refused) == 0",
                    "message": "Pods in the collector namespaces may reference only Secrets the Vault Secrets "
                    "Operator created for a VaultStaticSecret of their namespace",
                    "messageExpression": 'variables.subject + " references Secret(s) the Vault Secrets Operator'
                    ' did not create for a VaultStaticSecret of its namespace: " + variables.refused.join(", ")',
                },
            ],
        },
    )


def _vso_marks(obj: str) -> str:
    """CEL: ``obj`` (a Secret) carries one of VSO's marks."""
    return (
        f'({obj}.metadata.?labels[?{_cel_string(VSO_MANAGED_BY_LABEL)}].orValue("") == {_cel_string(VSO_MANAGED_BY)}'
        f" || {obj}.metadata.?labels[?{_cel_string(VSO_OWNER_UID_LABEL)}].hasValue()"
        f" || {obj}.metadata.?ownerReferences.orValue([]).exists(r,"
        f" r.apiVersion.startsWith({_cel_string(VSO_GROUP + '/')})))"
    )


def vso_secrets_policy(
    mode: Mode, collector_namespaces: Sequence[str], background_scan: bool = False
) -> dict[str, Any]:
    """Rule 2 (``vso-secrets-written-only-by-vso``): in ``collector_namespaces`` (at least one) a Secret
    that carries VSO's marks (before or after the change) or that a VaultStaticSecret of its namespace
    names as its destination is created and updated only by VSO's controller
    (:data:`components.vso.CONTROLLER_USERNAME`). Deletions are not matched (the garbage collector
    and namespace deletion remove VSO's Secrets, and VSO re-creates a deleted one)."""
    ns, name = "object.metadata.namespace", "object.metadata.name"
    secret = f'"Secret " + {ns} + "/" + {name}'
    only = f'"; only {CONTROLLER_USERNAME} may create or update it"'
    return _policy(
        SECRETS_POLICY_NAME,
        mode,
        background_scan,
        {
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["secrets"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": _namespace_selector(collector_namespaces),
            },
            "variables": [
                {"name": "byVso", "expression": f"request.userInfo.username == {_cel_string(CONTROLLER_USERNAME)}"},
                {
                    "name": "marked",
                    "expression": f"{_vso_marks('object')} || (oldObject != null && {_vso_marks('oldObject')})",
                },
                {
                    "name": "destinationOf",
                    "expression": f'resource.List({_cel_string(VSS_API_VERSION)}, "vaultstaticsecrets", {ns}).items'
                    f'.filter(v, v.spec.?destination.?name.orValue("") == {name}).map(v, v.metadata.name)',
                },
            ],
            "validations": [
                {
                    "expression": "variables.byVso || !variables.marked",
                    "message": "only the Vault Secrets Operator may write a Secret that carries its marks",
                    "messageExpression": f"{secret} + \" carries the Vault Secrets Operator's marks"
                    f" ({VSO_MANAGED_BY_LABEL}={VSO_MANAGED_BY}, {VSO_OWNER_UID_LABEL} or an owner reference to"
                    f' a {VSO_GROUP} object) and is written by " + request.userInfo.username + {only}',
                },
                {
                    "expression": "variables.byVso || size(variables.destinationOf) == 0",
                    "message": "only the Vault Secrets Operator may write the destination of a VaultStaticSecret",
                    "messageExpression": f'{secret} + " is the destination of VaultStaticSecret(s) "'
                    ' + variables.destinationOf.join(", ") + " and is written by " + request.userInfo.username'
                    f" + {only}",
                },
            ],
        },
    )


def placement_policy(mode: Mode, collector_namespaces: Sequence[str], background_scan: bool = False) -> dict[str, Any]:
    """Rule 3 (``otel-collectors-in-collector-namespaces``): a Pod or Pod controller labelled
    ``app.kubernetes.io/component: opentelemetry-collector`` runs only in ``collector_namespaces``
    (every one is refused when there is none). No lookup: Kyverno reads nothing outside them."""
    ((label, component),) = COMPONENT_LABEL.items()
    listed = ", ".join(collector_namespaces) or "none is configured"
    ns = "object.metadata.namespace"
    rules = [rule for rule in POD_RULES if rule["resources"] != ["pods/ephemeralcontainers"]]
    return _policy(
        PLACEMENT_POLICY_NAME,
        mode,
        background_scan,
        {
            "matchConstraints": {
                "resourceRules": [{**rule, "scope": "Namespaced"} for rule in rules],
                "objectSelector": {"matchLabels": {label: component}},
            },
            "validations": [
                {
                    "expression": f"{ns} in {_cel_list(collector_namespaces)}",
                    "message": f"OpenTelemetry collectors run only in the collector namespaces ({listed})",
                    "messageExpression": f'object.kind + " " + {ns} + "/" + object.metadata.?name.orValue("")'
                    f' + " is labelled as an OpenTelemetry collector but runs outside the collector namespaces'
                    f' ({listed})"',
                },
            ],
        },
    )


def admission_policies(
    mode: Mode, collector_namespaces: Sequence[str], background_scan: bool = False
) -> list[dict[str, Any]]:
    """Every policy of the guardrail: rules 1 and 2 only where there is a collector namespace."""
    placement = placement_policy(mode, collector_namespaces, background_scan)
    if not collector_namespaces:
        return [placement]
    return [
        require_vso_policy(mode, collector_namespaces, background_scan),
        vso_secrets_policy(mode, collector_namespaces, background_scan),
        placement,
    ]
