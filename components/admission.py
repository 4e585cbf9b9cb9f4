"""Kyverno and the admission guardrail for the OTel collectors (its policies:
components/admission_policies.py)."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.admission_policies import (
    PLACEMENT_POLICY_NAME,
    POLICY_NAME,
    SECRETS_POLICY_NAME,
    Mode,
    admission_policies,
    validation_actions,
)
from components.pod_security import restricted_namespace
from components.settings import Settings

TYPE_TOKEN = "fedobs:guardrails:Admission"
KYVERNO_NAMESPACE = "kyverno"
#: The admission controller's ServiceAccount, named explicitly in the chart values so that the
#: namespaced lookup grants below bind to it.
ADMISSION_SERVICE_ACCOUNT = "kyverno-admission-controller"
LOOKUP_ROLE = "kyverno-vso-lookups"
#: What the policies' lookups read, granted only inside the collector namespaces (never cluster-wide):
#: a referenced Secret by name (``resource.Get`` is a GET, no ``list``: Kyverno never reads the other
#: Secrets of the namespace), VaultStaticSecrets by name (the owner check) and as a list (which one
#: names a Secret as its destination).
LOOKUP_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": ["secrets.hashicorp.com"], "resources": ["vaultstaticsecrets"], "verbs": ["get", "list"]},
]
#: Kyverno's default ``config.resourceFilters`` (chart 3.9.0 values.yaml) skip every ReplicaSet
#: before any policy sees it (pkg/webhooks/handlers/filter.go ``withFilter``, also for
#: ValidatingPolicies); removed through ``config.resourceFiltersExclude`` so that a ReplicaSet made
#: by hand in a collector namespace is judged like every other Pod controller.
UNFILTERED_RESOURCES = ["[ReplicaSet,*,*]", "[ReplicaSet/?*,*,*]"]
#: Each policy's Pulumi resource name, after the component's (``<name>-policy`` is the one the
#: guardrail always had, so an update keeps it).
POLICY_RESOURCES = {
    POLICY_NAME: "policy",
    SECRETS_POLICY_NAME: "secrets-policy",
    PLACEMENT_POLICY_NAME: "placement-policy",
}


#: Admission controller replicas; the webhook of an Enforce policy fails closed, so one pod is never enough.
ADMISSION_REPLICAS = 3
#: Existing objects are not evaluated in Kyverno's background scans (reports): the lookups would
#: need the reports controller to get, list and watch every Secret in the cluster (the chart grants its
#: extra resources with exactly those verbs), while admission already sees every create and update.
BACKGROUND_SCAN = False


class AdmissionSettings(Settings):
    """``fedobs:admission``: Kyverno and the guardrail's policies."""

    enabled: bool = True
    #: Enforce refuses violations; Audit admits them and records them in policy reports.
    mode: Mode = "Enforce"


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
      the chart defaults): the admission controller creates and renews its own CA and serving cert;
    * ``config.resourceFiltersExclude``: entries removed, verbatim, from ``config.resourceFilters``
      before they are templated (templates/config/_helpers.tpl, ``kyverno.config.resourceFilters``:
      ``without $resourceFilters $resourceExclude``); see :data:`UNFILTERED_RESOURCES`.
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
        "config": {"resourceFiltersExclude": UNFILTERED_RESOURCES},
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
    """Kyverno (pinned chart and images, HA admission controller) and the guardrail's policies
    (components/admission_policies.py).

    Guarantees: Kyverno may read Secrets (``get`` only) and VaultStaticSecrets only in the collector
    namespaces (a Role per namespace, no cluster-wide grant). In Enforce mode the API server refuses,
    in the collector namespaces, a Pod (bare or made by a controller), a Pod controller of any
    built-in kind or an ephemeral container that references a Secret VSO did not create for a
    VaultStaticSecret of that namespace (owner reference and UID; naming the object and each Secret
    with the reason), and a write of a Secret carrying VSO's marks or named as a VaultStaticSecret's
    destination by anyone but VSO's controller; anywhere, it refuses a Pod or Pod controller
    labelled as a collector outside the collector namespaces. Every policy fails closed (a failed
    lookup or an unreachable Kyverno refuses the request) and no PolicyException can lift it. In
    Audit mode the same violations are admitted and recorded in policy reports.
    """

    def __init__(
        self,
        name: str,
        settings: AdmissionSettings,
        *,
        collector_namespaces: tuple[str, ...],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """Every Pod of ``collector_namespaces`` is judged. The Kubernetes provider comes through
        ``opts``; the caller makes the component wait for the collector namespaces (``depends_on``),
        where its lookup grants are created."""
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
        grants = self._lookup_grants(name, collector_namespaces, k8s_opts)
        after = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[self.release, *grants]))
        policies = admission_policies(settings.mode, collector_namespaces, BACKGROUND_SCAN)
        self.policies = [
            k8s.apiextensions.CustomResource(
                f"{name}-{POLICY_RESOURCES[policy['metadata']['name']]}",
                api_version=policy["apiVersion"],
                kind=policy["kind"],
                metadata=policy["metadata"],
                spec=policy["spec"],
                opts=after,
            )
            for policy in policies
        ]
        self.register_outputs(
            {
                "policies": [policy["metadata"]["name"] for policy in policies],
                "mode": settings.mode,
                "validationActions": validation_actions(settings.mode),
                "kyvernoVersion": versions.KYVERNO_VERSION,
                "namespace": KYVERNO_NAMESPACE,
            }
        )

    @staticmethod
    def _lookup_grants(
        name: str, collector_namespaces: tuple[str, ...], k8s_opts: pulumi.ResourceOptions
    ) -> list[pulumi.Resource]:
        """A Role with :data:`LOOKUP_RULES` bound to Kyverno's admission controller, per collector namespace."""
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
        return grants
