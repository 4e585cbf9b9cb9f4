"""The Kubernetes cluster a stack deploys into, and the provider every other component uses."""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Literal

import pulumi
import pulumi_kubernetes as k8s
import pulumi_linode as linode
from pydantic import AfterValidator, Field, field_validator, model_validator

from components.settings import Cidr, DnsLabel, LabelKey, Settings, pattern_check

TYPE_TOKEN = "fedobs:cluster:Cluster"


LINODE_REGION = re.compile(r"^[a-z]{2}-[a-z]{3,}(-[0-9])?$")
K8S_MINOR_VERSION = re.compile(r"^1\.[0-9]{2}$")
Region = Annotated[str, AfterValidator(pattern_check(LINODE_REGION, "us-ord"))]
KubernetesVersion = Annotated[str, AfterValidator(pattern_check(K8S_MINOR_VERSION, "1.33"))]


class Autoscaler(Settings):
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Autoscaler:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Taint(Settings):
    key: LabelKey
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodePool(Settings):
    """One LKE node pool; ``count`` is the initial size when an autoscaler is set."""

    type: str = Field(pattern=r"^g[0-9]+-[a-z0-9-]+$")
    count: int = Field(ge=1, le=100)
    autoscaler: Autoscaler | None = None
    labels: dict[LabelKey, str] = Field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    tags: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _count_within_autoscaler(self) -> NodePool:
        if self.autoscaler and not self.autoscaler.min <= self.count <= self.autoscaler.max:
            raise ValueError(
                f"count ({self.count}) is outside the autoscaler range {self.autoscaler.min}..{self.autoscaler.max}"
            )
        return self


class LkeClusterSettings(Settings):
    """A new Linode Kubernetes Engine cluster declared by the stack."""

    mode: Literal["lke"]
    label: DnsLabel
    region: Region
    kubernetes_version: KubernetesVersion
    ha_control_plane: bool
    #: Who may reach the Kubernetes API; empty means anyone (refused on the hub by config.py).
    control_plane_acl: tuple[Cidr, ...] = ()
    pools: tuple[NodePool, ...]
    tags: tuple[str, ...] = ()

    @field_validator("pools")
    @classmethod
    def _at_least_one_pool(cls, pools: tuple[NodePool, ...]) -> tuple[NodePool, ...]:
        # Not Field(min_length=1): pydantic would also report it when one pool is invalid.
        if not pools:
            raise ValueError("at least one node pool is required")
        return pools


class ExistingClusterSettings(Settings):
    """An existing cluster reached through a kubeconfig (secret key ``fedobs:kubeconfig``)
    or a context of the operator's own kubeconfig file."""

    mode: Literal["existing"]
    context: str | None = None


ClusterSettings = Annotated[LkeClusterSettings | ExistingClusterSettings, Field(discriminator="mode")]


@dataclass(frozen=True)
class Platform:
    """What the stack may assume of the cluster's cloud. ``linode``: an LKE cluster the stack declares,
    so Linode's own things exist: the Block Storage CSI driver's storage classes, NodeBalancers that
    read the ``service.beta.kubernetes.io/linode-*`` annotations, Object Storage buckets. An existing
    cluster may run anywhere (kind, k3d, another cloud): nothing Linode-only is declared there."""

    linode: bool


def platform_of(settings: LkeClusterSettings | ExistingClusterSettings) -> Platform:
    return Platform(linode=isinstance(settings, LkeClusterSettings))


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
    declared; the provider targets the given kubeconfig or context, and ``platform`` tells the other
    components to declare nothing Linode-only either.
    """

    kubeconfig: pulumi.Output[str]
    api_endpoint: pulumi.Output[str]
    provider: k8s.Provider
    platform: Platform

    def __init__(
        self,
        name: str,
        settings: LkeClusterSettings | ExistingClusterSettings,
        kubeconfig: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``kubeconfig``: existing-cluster mode only, the secret ``fedobs:kubeconfig``."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec = settings
        self.platform = platform_of(settings)
        if isinstance(spec, LkeClusterSettings):
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
                        autoscaler=linode.LkeClusterPoolAutoscalerArgs(min=pool.autoscaler.min, max=pool.autoscaler.max)
                        if pool.autoscaler
                        else None,
                        labels=dict(pool.labels),
                        taints=[
                            linode.LkeClusterPoolTaintArgs(key=t.key, value=t.value, effect=t.effect)
                            for t in pool.taints
                        ],
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
            secret_kubeconfig = pulumi.Output.secret(kubeconfig) if kubeconfig is not None else None
            self.kubeconfig = secret_kubeconfig if secret_kubeconfig is not None else pulumi.Output.secret("")
            self.api_endpoint = pulumi.Output.from_input("(from the operator's kubeconfig)")
            self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=secret_kubeconfig, context=spec.context, opts=child)
        self.register_outputs({"kubeconfig": self.kubeconfig, "api_endpoint": self.api_endpoint})
