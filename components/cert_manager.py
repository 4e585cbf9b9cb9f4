"""cert-manager, installed by its own Helm chart (CRDs included) on every cluster."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.pod_security import restricted_namespace

TYPE_TOKEN = "fedobs:pki:CertManager"


@dataclass(frozen=True)
class CertManagerArgs:
    provider: k8s.Provider
    namespace: str = "cert-manager"


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
    """cert-manager at the pinned version; components that issue certificates depend on ``ready``."""

    ready: pulumi.Resource

    def __init__(self, name: str, args: CertManagerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        namespace = restricted_namespace(
            f"{name}-namespace", args.namespace, pulumi.ResourceOptions(parent=self, provider=args.provider)
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name="cert-manager",
            chart=versions.CERT_MANAGER_CHART,
            version=versions.CERT_MANAGER_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=versions.CERT_MANAGER_REPO),
            namespace=args.namespace,
            values=cert_manager_values(),
            atomic=True,
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[namespace]),
        )
        self.ready = self.release
        self.register_outputs({"namespace": args.namespace, "version": versions.CERT_MANAGER_VERSION})
