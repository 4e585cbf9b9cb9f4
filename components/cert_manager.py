"""cert-manager, installed by its own Helm chart (CRDs included) on every cluster."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.pod_security import restricted_namespace

TYPE_TOKEN = "fedobs:pki:CertManager"


CERT_MANAGER_NAMESPACE = "cert-manager"


def cert_manager_values() -> dict[str, object]:
    """Chart values: CRDs installed and kept by the chart, restricted pods, two webhook replicas."""
    restricted = {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "crds": {"enabled": True, "keep": True},
        "replicaCount": 2,
        "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
        "securityContext": restricted,
        "webhook": {"replicaCount": 2, "securityContext": restricted},
        "cainjector": {"replicaCount": 1, "securityContext": restricted},
        "prometheus": {"enabled": True},
    }


class CertManager(pulumi.ComponentResource):
    """cert-manager at the pinned version, its CRDs included.

    Guarantees: a component that issues certificates and waits for this one finds the CRDs served.
    """

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        """The Kubernetes provider comes through ``opts``; children inherit it."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        namespace = restricted_namespace(
            f"{name}-namespace", CERT_MANAGER_NAMESPACE, pulumi.ResourceOptions(parent=self)
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name="cert-manager",
            chart=versions.CERT_MANAGER_CHART,
            version=versions.CERT_MANAGER_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=versions.CERT_MANAGER_REPO),
            namespace=CERT_MANAGER_NAMESPACE,
            values=cert_manager_values(),
            atomic=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace]),
        )
        self.register_outputs({"namespace": CERT_MANAGER_NAMESPACE, "version": versions.CERT_MANAGER_VERSION})
