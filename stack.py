"""Builds one fedobs stack, hub or edge, from its validated config.

A stack is a shared core (cluster, cert-manager, Vault and what lives in it, VSO, admission, the
collector, dynamic secrets) plus one role part: the hub adds its OTLP PKI, the edges' transit keys
and credentials; an edge adds its link to the hub, which unseals its Vault and feeds its cert-sync.
The role parts differ by type, so nothing narrows a role with an ``assert``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.admin_identity import AdminDeployIdentity
from components.admin_policy import admin_policy_hcl
from components.admission import Admission
from components.cert_manager import CertManager
from components.cert_sync import CertSync, EdgeSource, HubSource, cert_sync_role
from components.cluster import Cluster, Platform
from components.collectors import GRPC_PORT, MtlsExporter, MtlsReceiver, OtelCollector
from components.dynamic_secrets import DynamicSecrets, notebook_vso_roles
from components.edge_identity import EdgeDeployIdentity
from components.hub_link import HubLink
from components.kubernetes_auth import KubernetesAuth, WorkloadRole
from components.notebook_validation import NotebookValidation
from components.otlp_pki import OtlpPki
from components.raft_snapshots import RaftSnapshots, snapshot_role
from components.transit_unseal import TransitUnseal
from components.transit_watch import TransitWatch, transit_watch_role
from components.vault import TransitSealInput, Vault
from components.vault_config import VaultConfiguration, consumer_roles
from components.vault_server_config import TransitSeal
from components.vso import SyncSettings, VaultSecretsOperator, vso_roles
from config import AnyStackConfig, EdgeConfig, HubConfig

#: The hub's outputs besides its OTLP endpoint: no credential, no kubeconfig, nothing per edge.
HUB_PUBLIC_OUTPUTS = ("role", "vaultAddress", "vaultCaCert")


@dataclass(frozen=True)
class RolePart:
    """What the role adds to the core: how Vault unseals, what cert-sync copies, the collector's end."""

    transit_seal: TransitSealInput | None
    cert_sync: HubSource | EdgeSource | None
    receiver: MtlsReceiver | None = None
    exporter: MtlsExporter | None = None


def build_stack(cfg: AnyStackConfig) -> dict[str, Any]:
    """Declare every resource of the stack; returns the stack outputs to export."""
    if cfg.development_mode:
        pulumi.log.warn(
            f"fedobs:developmentMode is on: Jobs and CronJobs may run {cfg.programs_image!r}, an image not "
            "pinned by digest. Never deploy a production stack this way (README, 'The programs image')."
        )
    if isinstance(cfg, HubConfig):
        return build_hub(cfg)
    return build_edge(cfg)


def build_cluster(cfg: AnyStackConfig, prefix: str) -> tuple[Cluster, CertManager]:
    """The cluster, its Kubernetes provider and cert-manager: what every other part stands on."""
    cluster = Cluster(f"{prefix}-cluster", cfg.cluster, kubeconfig=cfg.kubeconfig or None)
    cert_manager = CertManager(f"{prefix}-cert-manager", opts=pulumi.ResourceOptions(provider=cluster.provider))
    return cluster, cert_manager


def build_hub(cfg: HubConfig) -> dict[str, Any]:
    prefix = "hub"
    cluster, cert_manager = build_cluster(cfg, prefix)
    outputs: dict[str, Any] = {}
    part = RolePart(transit_seal=None, cert_sync=None)
    if cfg.pki is not None:
        pki = OtlpPki(
            f"{prefix}-otlp-pki",
            cfg.pki,
            edges=cfg.edge_names,
            opts=pulumi.ResourceOptions(provider=cluster.provider, depends_on=[cert_manager]),
        )
        hostname = cfg.pki.receiver_hostnames[0]
        outputs["otlpEndpoint"] = f"https://{hostname}:{GRPC_PORT}"
        part = RolePart(
            transit_seal=None,
            cert_sync=HubSource(secrets=pki.sync_map, trust=pki.trust_map, peer_ca=pki.peer_trust_map),
            receiver=MtlsReceiver(hostname=hostname),
        )
    core = build_core(cfg, prefix, cluster, cert_manager, part, edges=cfg.edge_names)
    in_vault = pulumi.ResourceOptions(provider=core.vault.vault_provider)
    TransitUnseal(f"{prefix}-transit-unseal", cfg.edge_names, retired=cfg.retired_edges, opts=in_vault)
    if cfg.hub_deploy_identity is not None:
        AdminDeployIdentity(
            f"{prefix}-admin-identity", cfg.hub_deploy_identity, admin_policy=core.vault.admin_policy, opts=in_vault
        )
    if cfg.edges:
        identity = cfg.require(cfg.edge_deploy_identity, "edgeDeployIdentity")
        EdgeDeployIdentity(f"{prefix}-edge-identity", identity, subjects=cfg.deploy_subjects(identity), opts=in_vault)
    # What every edge may know, and nothing else: a StackReference reads every output, and the
    # referencing stack keeps what it read in its own state.
    return {**{k: core.outputs[k] for k in HUB_PUBLIC_OUTPUTS}, **outputs}


def build_edge(cfg: EdgeConfig) -> dict[str, Any]:
    prefix = cfg.edge_name
    hub = HubLink(f"{prefix}-hub", stack_name=cfg.hub_stack, edge_name=cfg.edge_name)
    cluster, cert_manager = build_cluster(cfg, prefix)
    transit = TransitSealInput(
        address=hub.vault_address,
        key_name=cfg.edge_name,
        tls_server_name=hub.vault_hostname,
        token=hub.transit_token,
        hub_ca_cert=hub.vault_ca_cert,
    )
    part = RolePart(
        # An edge usually auto-unseals through the hub; Shamir or awskms are its own choice.
        transit_seal=transit if isinstance(cfg.vault.seal, TransitSeal) else None,
        cert_sync=EdgeSource(
            edge=cfg.edge_name,
            hub_address=hub.vault_address,
            hub_ca_cert=hub.vault_ca_cert,
            hub_credential=hub.hub_credential,
        ),
        exporter=MtlsExporter(endpoint=hub.otlp_endpoint.apply(lambda url: url.removeprefix("https://"))),
    )
    core = build_core(cfg, prefix, cluster, cert_manager, part)
    return {"hubVaultAddress": hub.vault_address, "hubOtlpEndpoint": hub.otlp_endpoint, **core.outputs}


def build_transit_watch(
    cfg: AnyStackConfig, prefix: str, cluster: Cluster, vault: Vault, auth: KubernetesAuth, edges: tuple[str, ...]
) -> None:
    """The hub's watch on its edges' seal tokens (none without edges), once its Vault role exists."""
    if edges:
        after_auth = pulumi.ResourceOptions(provider=cluster.provider, depends_on=[auth])
        TransitWatch(
            f"{prefix}-transit-watch", edges, image=cfg.programs_image, namespace=vault.namespace, opts=after_auth
        )


@dataclass(frozen=True)
class Core:
    vault: Vault
    configuration: VaultConfiguration
    outputs: dict[str, Any]


def build_core(
    cfg: AnyStackConfig,
    prefix: str,
    cluster: Cluster,
    cert_manager: CertManager,
    part: RolePart,
    edges: tuple[str, ...] = (),
) -> Core:
    """Everything both roles declare, fed with the role's part."""
    k8s = pulumi.ResourceOptions(provider=cluster.provider)
    cluster_name = f"fedobs-{prefix}"
    vault = Vault(
        f"{prefix}-vault",
        cfg.vault,
        cluster_name=cluster_name,
        platform=cluster.platform,
        cert_manager=cert_manager,
        programs_image=cfg.programs_image,
        admin_policy_hcl=admin_policy_hcl(cfg.vault_config, transit=isinstance(cfg, HubConfig)),
        admin_identity=cfg.hub_deploy_identity if isinstance(cfg, HubConfig) else None,
        transit_seal=part.transit_seal,
        aws_kms_credentials=cfg.aws_kms_credentials,
        opts=k8s,
    )
    in_vault = pulumi.ResourceOptions(provider=vault.vault_provider)
    configuration = VaultConfiguration(
        f"{prefix}-vault-config",
        cfg.vault_config,
        database_admins=cfg.database_admins,
        aws_root_credentials=cfg.aws_root_credentials,
        edges=edges,
        edge_cidrs=cfg.edge_cidrs if isinstance(cfg, HubConfig) else {},
        opts=in_vault,
    )
    kv_mount = cfg.vault_config.kv.path
    syncs = cfg.all_syncs
    roles: list[WorkloadRole] = [
        *consumer_roles(cfg.vault_config),
        *vso_roles(syncs, kv_mount),
        *notebook_vso_roles(cfg.dynamic_secrets, cfg.vault_config),
        *([transit_watch_role(vault.namespace, edges)] if edges else []),
    ]
    snapshots = cfg.vault.enabled_snapshots
    if snapshots is not None:
        roles.append(snapshot_role(vault.namespace))
    if part.cert_sync is not None:
        roles.append(cert_sync_role(part.cert_sync, kv_mount))
    auth = KubernetesAuth(f"{prefix}-kubernetes-auth", tuple(roles), opts=in_vault)
    build_transit_watch(cfg, prefix, cluster, vault, auth, edges)
    if snapshots is not None:
        RaftSnapshots(
            f"{prefix}-raft-snapshots",
            snapshots,
            cluster_name=cluster_name,
            credentials=cfg.require(cfg.snapshot_credentials, "snapshotCredentials"),
            platform=cluster.platform,
            image=cfg.programs_image,
            namespace=vault.namespace,
            opts=pulumi.ResourceOptions(provider=cluster.provider, depends_on=[auth]),
        )
    if part.cert_sync is not None:
        CertSync(
            f"{prefix}-cert-sync",
            cfg.distribution,
            source=part.cert_sync,
            kv_mount=kv_mount,
            vault_ca_cert=vault.ca_cert,
            image=cfg.programs_image,
            vault_ready=(auth, configuration.kv_ready),
            opts=k8s,
        )
    build_workloads(cfg, prefix, k8s, syncs, vault, configuration, auth, part, cluster.platform)
    outputs = {
        "role": cfg.role,
        "kubeconfig": cluster.kubeconfig,
        "apiEndpoint": cluster.api_endpoint,
        "vaultAddress": vault.address,
        "vaultCaCert": vault.ca_cert,
    }
    return Core(vault=vault, configuration=configuration, outputs=outputs)


def build_workloads(
    cfg: AnyStackConfig,
    prefix: str,
    k8s: pulumi.ResourceOptions,
    syncs: tuple[SyncSettings, ...],
    vault: Vault,
    configuration: VaultConfiguration,
    auth: KubernetesAuth,
    part: RolePart,
    platform: Platform,
) -> None:
    """VSO (for ``syncs``, every sync of the stack), admission, the collector and the dynamic-secret
    workloads of the cluster (``k8s``: its provider; ``platform``: what may be assumed of its cloud)."""
    vso = None
    if syncs or any(w.notebook_job is not None for w in cfg.dynamic_secrets):
        vso = VaultSecretsOperator(
            f"{prefix}-vso",
            cfg.distribution,
            syncs=syncs,
            vault_ca_cert=vault.ca_cert,
            kv_mount=cfg.vault_config.kv.path,
            opts=k8s,
        )
    collector = cfg.enabled_collector
    collector_namespaces = (collector.namespace,) if collector is not None else ()
    guardrails: tuple[pulumi.Resource, ...] = ()
    admission = cfg.enabled_admission
    if admission is not None:
        namespaces = [vso.target_namespaces[ns] for ns in collector_namespaces] if vso else []
        guardrails = (
            Admission(
                f"{prefix}-admission",
                admission,
                collector_namespaces=collector_namespaces,
                opts=pulumi.ResourceOptions.merge(k8s, pulumi.ResourceOptions(depends_on=namespaces)),
            ),
        )
    if collector is not None:
        OtelCollector(
            f"{prefix}-collector",
            collector,
            shape=cfg.collector_shape,
            platform=platform,
            receiver=part.receiver,
            exporter=part.exporter,
            secrets_ready=(*([vso] if vso else []), *guardrails),
            opts=k8s,
        )
    for workload in cfg.dynamic_secrets:
        consumer = cfg.require(cfg.vault_config.consumer(workload.consumer), "dynamicSecrets")
        workload_secrets = DynamicSecrets(
            f"{prefix}-{consumer.name}",
            workload,
            consumer=consumer,
            vault_config=cfg.vault_config,
            vault_ca_cert=vault.ca_cert,
            image=cfg.programs_image,
            vault_ready=(auth, *configuration.credential_roles),
            opts=k8s,
        )
        if workload.notebook_job is not None and vso is not None:
            NotebookValidation(
                f"{prefix}-{consumer.name}-notebook",
                workload.notebook_job,
                namespace=consumer.namespace,
                vault_config=cfg.vault_config,
                depends_on=(*workload_secrets.ready_for_pods, vso),
                job_depends_on=(auth, *configuration.credential_roles),
                opts=k8s,
            )
