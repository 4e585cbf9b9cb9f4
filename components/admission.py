"""Kyverno and the ``require-vault-secrets-operator`` admission guardrail for OTel collectors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.collectors import COMPONENT_LABEL
from components.pod_security import restricted_namespace
from components.settings import Settings

TYPE_TOKEN = "fedobs:guardrails:Admission"
KYVERNO_NAMESPACE = "kyverno"
POLICY_NAME = "require-vault-secrets-operator"
POLICY_API_VERSION = "policies.kyverno.io/v1"
POLICY_KIND = "ValidatingPolicy"

#: What VSO puts on every Secret it creates or owns: ``OwnerLabels`` in helpers/secrets.go of
#: hashicorp/vault-secrets-operator v1.4.1 (commit 9b840a5a0c3455278d580418d6336f2011cf8574):
#: ``app.kubernetes.io/managed-by: hashicorp-vso`` (plus ``app.kubernetes.io/name:
#: vault-secrets-operator``, ``app.kubernetes.io/component: secret-sync`` and the owner's UID).
VSO_MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
VSO_MANAGED_BY = "hashicorp-vso"
#: The admission controller's ServiceAccount, named explicitly in the chart values so that the
#: namespaced lookup grants below bind to it.
ADMISSION_SERVICE_ACCOUNT = "kyverno-admission-controller"
LOOKUP_ROLE = "kyverno-vso-lookups"
#: What the policy's lookups read, granted only inside the collector namespaces (never cluster-wide).
LOOKUP_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]},
    {"apiGroups": ["secrets.hashicorp.com"], "resources": ["vaultstaticsecrets"], "verbs": ["get", "list"]},
]

Mode = Literal["Audit", "Enforce"]


#: Admission controller replicas; the webhook of an Enforce policy fails closed, so one pod is never enough.
ADMISSION_REPLICAS = 3
#: Existing Deployments are not evaluated in Kyverno's background scans (reports): the lookups would
#: need the reports controller to get, list and watch every Secret in the cluster (the chart grants its
#: extra resources with exactly those verbs), while admission already sees every create and update.
BACKGROUND_SCAN = False


class AdmissionSettings(Settings):
    """``fedobs:admission``: Kyverno and the ``require-vault-secrets-operator`` policy."""

    enabled: bool = True
    #: Enforce refuses violations; Audit admits them and records them in policy reports.
    mode: Mode = "Enforce"


def validation_actions(mode: Mode) -> list[str]:
    """Enforce denies the request; Audit admits it and records the violation in a policy report."""
    return ["Deny"] if mode == "Enforce" else ["Audit"]


def failure_policy(mode: Mode) -> str:
    """Enforce fails closed (an unreachable Kyverno or a failed lookup refuses the request); Audit must
    never block a Deployment, so its webhook ignores Kyverno being unavailable."""
    return "Fail" if mode == "Enforce" else "Ignore"


def _cel_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of a DNS label or label key is a valid CEL string literal


def _cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_cel_string(v) for v in values) + "]"


#: The Pod template's Secret references, flattened without ``flatten()`` (cel-go's ext.Lists has it,
#: cel-expr-python does not): every nested list is joined with commas, then the whole is split
#: again. Secret names are DNS-1123 subdomains, which never contain a comma.
SECRET_NAMES_EXPRESSION = (
    '(variables.podSpec.?volumes.orValue([]).map(v, v.?secret.?secretName.orValue(""))'
    " + variables.podSpec.?volumes.orValue([]).map(v, v.?projected.?sources.orValue([])"
    '.map(p, p.?secret.?name.orValue("")).join(","))'
    " + variables.containers.map(c, c.?env.orValue([])"
    '.map(e, e.?valueFrom.?secretKeyRef.?name.orValue("")).join(","))'
    ' + variables.containers.map(c, c.?envFrom.orValue([]).map(e, e.?secretRef.?name.orValue("")).join(","))'
    ' + variables.podSpec.?imagePullSecrets.orValue([]).map(s, s.?name.orValue(""))'
    ').join(",").split(",").filter(n, n != "")'
)


def _policy_variables() -> list[dict[str, str]]:
    """The policy's CEL variables: the Pod template's Secret references and the lookups that
    judge them (evaluated lazily, so only where a validation reads them)."""
    ns = "object.metadata.namespace"
    return [
        {"name": "podSpec", "expression": "object.spec.template.spec"},
        {
            "name": "containers",
            "expression": "variables.podSpec.?containers.orValue([])"
            " + variables.podSpec.?initContainers.orValue([])"
            " + variables.podSpec.?ephemeralContainers.orValue([])",
        },
        {"name": "secretNames", "expression": SECRET_NAMES_EXPRESSION},
        {"name": "namespaceSecrets", "expression": f'resource.List("v1", "secrets", {ns}).items'},
        # Existing referenced Secrets VSO does not manage; one entry per Secret (names are unique).
        {
            "name": "unmanagedSecrets",
            "expression": (
                "variables.namespaceSecrets.filter(s, s.metadata.name in variables.secretNames"
                f' && s.metadata.?labels[?{_cel_string(VSO_MANAGED_BY_LABEL)}].orValue("")'
                f" != {_cel_string(VSO_MANAGED_BY)}).map(s, s.metadata.name)"
            ),
        },
        # Where VSO will create a Secret: only listed when some referenced Secret does not exist.
        {
            "name": "syncTargets",
            "expression": (
                f'resource.List("secrets.hashicorp.com/v1beta1", "vaultstaticsecrets", {ns}).items'
                ".filter(v, v.spec.?destination.?create.orValue(false) == true).map(v, v.spec.destination.name)"
            ),
        },
        # Referenced Secrets that neither exist nor will be created. Named once per reference: without
        # ext.Lists' distinct() (absent from cel-expr-python) standard CEL cannot deduplicate a list.
        {
            "name": "missingSecrets",
            "expression": (
                "variables.secretNames.filter(n, !variables.namespaceSecrets.exists(s, s.metadata.name == n)"
                " && !(n in variables.syncTargets))"
            ),
        },
        {"name": "offending", "expression": "variables.unmanagedSecrets + variables.missingSecrets"},
    ]


def _in_collector_namespace(collector_namespaces: Sequence[str]) -> str:
    """CEL: the Deployment runs in one of the collector namespaces."""
    return f"object.metadata.namespace in {_cel_list(collector_namespaces)}"


def _is_collector(collector_namespaces: Sequence[str]) -> str:
    """CEL: the Deployment is a collector, by its namespace
    or by its component label."""
    ((label, component),) = COMPONENT_LABEL.items()
    return (
        f"{_in_collector_namespace(collector_namespaces)}"
        f' || object.metadata.?labels[?{_cel_string(label)}].orValue("")'
        f" == {_cel_string(component)}"
    )


def _policy_validations(collector_namespaces: Sequence[str]) -> list[dict[str, str]]:
    """A collector runs only in the collector namespaces,
    and references only Secrets VSO manages."""
    ns = "object.metadata.namespace"
    in_collector_namespace = _in_collector_namespace(collector_namespaces)
    listed = ", ".join(collector_namespaces)
    return [
        {
            "expression": in_collector_namespace,
            "message": f"OpenTelemetry collector Deployments run only in the collector namespaces ({listed})",
            "messageExpression": (
                f'"Deployment " + {ns} + "/" + object.metadata.name + " is labelled as an OpenTelemetry '
                f'collector but runs outside the collector namespaces ({listed})"'
            ),
        },
        {
            # Outside the collector namespaces the first validation already failed, and the lookups
            # (lazily evaluated variables) are never made there.
            "expression": f"!({in_collector_namespace}) || size(variables.offending) == 0",
            "message": "OpenTelemetry collector Deployments may reference only Secrets managed by the "
            "Vault Secrets Operator (sync them with a VaultStaticSecret)",
            "messageExpression": (
                f'"Deployment " + {ns} + "/" + object.metadata.name'
                ' + " references Secret(s) not managed by the Vault Secrets Operator: "'
                ' + variables.offending.join(", ") + " (sync them with a VaultStaticSecret)"'
            ),
        },
    ]


def require_vso_policy(
    mode: Mode, collector_namespaces: Sequence[str], background_scan: bool = False
) -> dict[str, Any]:
    """The ``require-vault-secrets-operator`` ValidatingPolicy (pure: the tests evaluate its CEL).

    A Deployment labelled ``app.kubernetes.io/component: opentelemetry-collector`` must run in one of
    ``collector_namespaces`` (the only namespaces where Kyverno may look Secrets up). A collector
    Deployment (any Deployment of those namespaces, or a labelled one) may reference, from its Pod
    template, only Secrets of its own namespace that VSO manages: a Secret that exists must carry
    ``app.kubernetes.io/managed-by: hashicorp-vso``; one that does not exist yet must be the
    ``destination`` (with ``create: true``) of a VaultStaticSecret in that namespace, so that one
    ``pulumi up`` may apply both before VSO's first sync. Lookups use Kyverno's resource library
    (``resource.List``, https://kyverno.io/docs/policy-types/cel-libraries/); only standard CEL,
    optionals and the strings extension otherwise.
    """
    return {
        "apiVersion": POLICY_API_VERSION,
        "kind": POLICY_KIND,
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "validationActions": validation_actions(mode),
            "failurePolicy": failure_policy(mode),
            "evaluation": {"admission": {"enabled": True}, "background": {"enabled": background_scan}},
            # Kubernetes' own ValidatingAdmissionPolicy has no resource lookups: never generate one.
            "autogen": {"validatingAdmissionPolicy": {"enabled": False}},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                        "scope": "Namespaced",
                    }
                ]
            },
            "matchConditions": [{"name": "is-otel-collector", "expression": _is_collector(collector_namespaces)}],
            "variables": _policy_variables(),
            "validations": _policy_validations(collector_namespaces),
        },
    }


def kyverno_values(replicas: int = 3, background_scan: bool = False) -> dict[str, Any]:
    """Chart values for kyverno 3.9.0.

    Every key below was checked against the chart's values.yaml at tag ``kyverno-chart-3.9.0``
    (kyverno/kyverno commit ee97ce09538b09b6f1b03853cc41a62654d6a58f, charts/kyverno/values.yaml)
    with ``rig.schemas.unknown_helm_keys``: no unknown key. The upstream file is not
    vendored (there is no copy in ../shared/schemas), so tests/unit/test_admission_policy.py pins the
    verified paths instead. Notes from that file and its templates:

    * every image is pinned: the controllers default their tag to the appVersion, but ``test.image``
      defaults to ``latest`` and the hook images to the appVersion only through the templates;
    * ``podDisruptionBudget.minAvailable``: the chart refuses ``minAvailable`` and ``maxUnavailable``
      together and defaults ``minAvailable: 1``, so availability is expressed as ``replicas - 1``;
    * ``rbac.clusterRole.extraResources`` are whole RBAC rules for the admission controller; the
      reports controller's are granted get, list and watch whatever the rule says;
    * webhook certificates stay Kyverno-managed (``createSelfSignedCert: false`` and no cert-manager,
      the chart defaults): the admission controller creates and renews its own CA and serving cert.
    """

    def image(repository: str, registry: str = versions.KYVERNO_REGISTRY) -> dict[str, str]:
        return {"registry": registry, "repository": repository, "tag": versions.KYVERNO_VERSION}

    lookups = LOOKUP_RULES
    reports: dict[str, Any] = {"image": image("kyverno/reports-controller")}
    if background_scan:
        reports["rbac"] = {
            "clusterRole": {
                "extraResources": [{"apiGroups": rule["apiGroups"], "resources": rule["resources"]} for rule in lookups]
            }
        }
    return {
        "crds": {"migration": {"image": image("kyverno/kyverno-cli")}},
        "webhooksCleanup": {"image": image("kyverno/readiness-checker", versions.KYVERNO_HOOK_REGISTRY)},
        "test": {"image": image("kyverno/readiness-checker", versions.KYVERNO_HOOK_REGISTRY)},
        # No PolicyException (kyverno.io or policies.kyverno.io) can exempt a collector (the default, pinned).
        "features": {"policyExceptions": {"enabled": False}},
        "admissionController": {
            "replicas": replicas,
            "podDisruptionBudget": {"enabled": True, "minAvailable": replicas - 1},
            "initContainer": {"image": image("kyverno/kyvernopre")},
            "container": {"image": image("kyverno/kyverno")},
            # The lookups are granted per collector namespace by the component (Role + RoleBinding).
            "rbac": {"serviceAccount": {"name": ADMISSION_SERVICE_ACCOUNT}},
        },
        "backgroundController": {"image": image("kyverno/background-controller")},
        "cleanupController": {"image": image("kyverno/cleanup-controller")},
        "reportsController": reports,
    }


class Admission(pulumi.ComponentResource):
    """Kyverno (pinned chart and images, HA admission controller) and the policy
    ``require-vault-secrets-operator``.

    Guarantee: Kyverno may read Secrets and VaultStaticSecrets only in the collector namespaces (a
    Role per namespace, no cluster-wide grant). In Enforce mode the API server refuses a Deployment
    labelled as a collector outside those namespaces, and refuses to create or update an OTel collector
    Deployment (every Deployment in ``collector_namespaces``, and any Deployment labelled
    ``app.kubernetes.io/component: opentelemetry-collector``) whose Pod template references a Secret
    (secret and projected volumes, ``secretKeyRef``, ``envFrom.secretRef`` and ``imagePullSecrets`` of
    every container, init and ephemeral container) that the Vault Secrets Operator does not manage
    in the Deployment's namespace, naming the Deployment and each such Secret; the check fails
    closed (a failed lookup or an unreachable Kyverno refuses the request) and no PolicyException
    can lift it. In Audit mode the same violations are admitted and recorded in policy reports.
    Secret references of volume plugins (e.g. ``csi.nodePublishSecretRef``), which reach the volume
    driver rather than the containers, are not checked.
    """

    def __init__(
        self,
        name: str,
        settings: AdmissionSettings,
        *,
        collector_namespaces: tuple[str, ...],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """Every Deployment in ``collector_namespaces`` is treated as a collector (besides the labelled
        ones). The Kubernetes provider comes through ``opts``; the caller makes the component wait for
        the collector namespaces (``depends_on``), where its lookup grants are created."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self)
        namespace = restricted_namespace(f"{name}-namespace", KYVERNO_NAMESPACE, k8s_opts)
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name="kyverno",
            chart=versions.KYVERNO_CHART,
            version=versions.KYVERNO_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=versions.KYVERNO_CHART_REPO),
            namespace=KYVERNO_NAMESPACE,
            values=kyverno_values(ADMISSION_REPLICAS, BACKGROUND_SCAN),
            atomic=True,
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[namespace])),
        )
        grants: list[pulumi.Resource] = []
        for collector_namespace in collector_namespaces:
            metadata = {"name": LOOKUP_ROLE, "namespace": collector_namespace}
            role = k8s.rbac.v1.Role(
                f"{name}-{collector_namespace}-lookups",
                metadata=metadata,
                rules=LOOKUP_RULES,
                opts=k8s_opts,
            )
            grants.append(
                k8s.rbac.v1.RoleBinding(
                    f"{name}-{collector_namespace}-lookups-binding",
                    metadata=metadata,
                    role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LOOKUP_ROLE},
                    subjects=[
                        {"kind": "ServiceAccount", "name": ADMISSION_SERVICE_ACCOUNT, "namespace": KYVERNO_NAMESPACE}
                    ],
                    opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[role])),
                )
            )
        policy = require_vso_policy(settings.mode, collector_namespaces, BACKGROUND_SCAN)
        self.policy = k8s.apiextensions.CustomResource(
            f"{name}-policy",
            api_version=policy["apiVersion"],
            kind=policy["kind"],
            metadata=policy["metadata"],
            spec=policy["spec"],
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[self.release, *grants])),
        )
        self.register_outputs(
            {
                "policy": POLICY_NAME,
                "mode": settings.mode,
                "validationActions": validation_actions(settings.mode),
                "kyvernoVersion": versions.KYVERNO_VERSION,
                "namespace": KYVERNO_NAMESPACE,
            }
        )
