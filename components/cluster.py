"""The Kubernetes cluster a stack deploys into, and the provider every other component uses."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s
import pulumi_linode as linode

TYPE_TOKEN = "fedobs:cluster:Cluster"


@dataclass(frozen=True)
class PoolSpec:
    type: str
    count: int
    autoscaler: tuple[int, int] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[tuple[str, str, str], ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LkeClusterSpec:
    """A new LKE cluster."""

    label: str
    region: str
    kubernetes_version: str
    ha_control_plane: bool
    control_plane_acl: tuple[str, ...]
    pools: tuple[PoolSpec, ...]
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExistingClusterSpec:
    """An existing cluster: a kubeconfig (a Pulumi secret) or a context of the local kubeconfig."""

    kubeconfig: pulumi.Input[str] | None = None
    context: str | None = None


@dataclass(frozen=True)
class ClusterArgs:
    spec: LkeClusterSpec | ExistingClusterSpec


def _acl_addresses(cidrs: tuple[str, ...]) -> linode.LkeClusterControlPlaneAclAddressArgs:
    networks = [ipaddress.ip_network(c) for c in cidrs]
    return linode.LkeClusterControlPlaneAclAddressArgs(
        ipv4s=[str(n) for n in networks if n.version == 4],
        ipv6s=[str(n) for n in networks if n.version == 6],
    )


def _decode_kubeconfig(encoded: str) -> str:
    # LKE returns the kubeconfig base64-encoded; the Kubernetes provider wants the YAML text.
    return base64.b64decode(encoded).decode()


class Cluster(pulumi.ComponentResource):
    """A cluster and its ``kubernetes.Provider``.

    Guarantees: an LKE cluster is protected from deletion and replacement by accident, its
    control plane is reachable only from ``control_plane_acl`` when that is set, and its
    kubeconfig is only ever a secret output. In existing-cluster mode no cloud resource is
    declared; the provider targets the given kubeconfig or context.
    """

    kubeconfig: pulumi.Output[str]
    api_endpoint: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec = args.spec
        if isinstance(spec, LkeClusterSpec):
            lke = linode.LkeCluster(
                f"{name}-lke",
                label=spec.label,
                region=spec.region,
                k8s_version=spec.kubernetes_version,
                tags=list(spec.tags),
                control_plane=linode.LkeClusterControlPlaneArgs(
                    high_availability=spec.ha_control_plane,
                    acl=linode.LkeClusterControlPlaneAclArgs(
                        enabled=bool(spec.control_plane_acl),
                        addresses=[_acl_addresses(spec.control_plane_acl)] if spec.control_plane_acl else None,
                    ),
                ),
                pools=[
                    linode.LkeClusterPoolArgs(
                        type=pool.type,
                        count=pool.count,
                        autoscaler=linode.LkeClusterPoolAutoscalerArgs(min=pool.autoscaler[0], max=pool.autoscaler[1])
                        if pool.autoscaler
                        else None,
                        labels=dict(pool.labels),
                        taints=[linode.LkeClusterPoolTaintArgs(key=k, value=v, effect=e) for k, v, e in pool.taints],
                        tags=list(pool.tags),
                    )
                    for pool in spec.pools
                ],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    protect=True,
                    additional_secret_outputs=["kubeconfig"],
                    # The autoscaler owns the live node count; Pulumi must not fight it.
                    ignore_changes=[f"pools[{i}].count" for i, p in enumerate(spec.pools) if p.autoscaler],
                ),
            )
            self.kubeconfig = pulumi.Output.secret(lke.kubeconfig.apply(_decode_kubeconfig))
            self.api_endpoint = lke.api_endpoints.apply(lambda endpoints: endpoints[0] if endpoints else "")
            self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, opts=child)
        else:
            kubeconfig = pulumi.Output.secret(spec.kubeconfig) if spec.kubeconfig is not None else None
            self.kubeconfig = kubeconfig if kubeconfig is not None else pulumi.Output.secret("")
            self.api_endpoint = pulumi.Output.from_input("(from the operator's kubeconfig)")
            self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=kubeconfig, context=spec.context, opts=child)
        self.register_outputs({"kubeconfig": self.kubeconfig, "api_endpoint": self.api_endpoint})
