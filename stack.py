"""Builds one fedobs stack, hub or edge, from its validated config.

Hub and edge run the same code; what differs between them is data in their config (the edge
list, the seal mode, the hub stack reference), never a second code path per role.
"""

from __future__ import annotations

from typing import Any

import pulumi

from components.cluster import Cluster, ClusterArgs, ExistingClusterSpec, LkeClusterSpec, PoolSpec
from components.hub_link import HubLink, HubLinkArgs
from config import AnyStackConfig, EdgeConfig, ExistingClusterSettings, LkeClusterSettings


def cluster_args(cfg: AnyStackConfig) -> ClusterArgs:
    settings = cfg.cluster
    if isinstance(settings, LkeClusterSettings):
        return ClusterArgs(
            LkeClusterSpec(
                label=settings.label,
                region=settings.region,
                kubernetes_version=settings.kubernetes_version,
                ha_control_plane=settings.ha_control_plane,
                control_plane_acl=settings.control_plane_acl,
                tags=settings.tags,
                pools=tuple(
                    PoolSpec(
                        type=pool.type,
                        count=pool.count,
                        autoscaler=(pool.autoscaler.min, pool.autoscaler.max) if pool.autoscaler else None,
                        labels=dict(pool.labels),
                        taints=tuple((t.key, t.value, t.effect) for t in pool.taints),
                        tags=pool.tags,
                    )
                    for pool in settings.pools
                ),
            )
        )
    assert isinstance(settings, ExistingClusterSettings)
    kubeconfig = pulumi.Output.secret(cfg.kubeconfig) if cfg.kubeconfig else None
    return ClusterArgs(ExistingClusterSpec(kubeconfig=kubeconfig, context=settings.context))


def stack_prefix(cfg: AnyStackConfig) -> str:
    """The name prefix of every top-level component: ``hub`` or the edge's name."""
    return cfg.edge_name if isinstance(cfg, EdgeConfig) else "hub"


def build_stack(cfg: AnyStackConfig) -> dict[str, Any]:
    """Declare every resource of the stack; returns the stack outputs to export."""
    prefix = stack_prefix(cfg)
    outputs: dict[str, Any] = {"role": cfg.role}
    hub = None
    if isinstance(cfg, EdgeConfig):
        hub = HubLink(f"{prefix}-hub", HubLinkArgs(stack_name=cfg.hub_stack, edge_name=cfg.edge_name))
        outputs["hubVaultAddress"] = hub.vault_address
    cluster = Cluster(f"{prefix}-cluster", cluster_args(cfg))
    outputs["kubeconfig"] = cluster.kubeconfig
    outputs["apiEndpoint"] = cluster.api_endpoint
    return outputs
