"""Builds one fedobs stack, hub or edge, from its validated config.

Hub and edge run the same code; what differs between them is data in their config (the edge
list, the seal mode, the hub stack reference), never a second code path per role.
"""

from __future__ import annotations

from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from components.admission import Admission, AdmissionArgs
from components.agent_injector import InjectedCredential, InjectorSettings
from components.cert_manager import CertManager, CertManagerArgs
from components.cert_sync import CertSync, CertSyncArgs, EdgeSource, HubSource, cert_sync_role
from components.cluster import Cluster, ClusterArgs, ExistingClusterSpec, LkeClusterSpec, PoolSpec
from components.collectors import GRPC_PORT, CollectorArgs, MtlsExporter, MtlsReceiver, OtelCollector
from components.dynamic_secrets import DynamicSecrets, DynamicSecretsArgs
from components.hub_link import HubLink, HubLinkArgs
from components.kubernetes_auth import KubernetesAuth, KubernetesAuthArgs, WorkloadRole
from components.otlp_pki import OtlpPki, OtlpPkiArgs
from components.raft_snapshots import RaftSnapshots, RaftSnapshotsArgs, snapshot_role
from components.transit_unseal import TransitUnseal, TransitUnsealArgs
from components.vault import (
    AwsKmsCredentials,
    LoadBalancerAccess,
    OperatorAddress,
    TransitSealInput,
    Vault,
    VaultArgs,
)
from components.vault_config import (
    AwsRoleSpec,
    AwsSpec,
    DatabaseConnectionSpec,
    DatabaseRoleSpec,
    DatabaseSpec,
    KvSpec,
    VaultConfiguration,
    VaultConfigurationArgs,
)
from components.vault_policies import credentials, kv_read, kv_write, render_policy
from components.vault_server_config import AwsKmsSealSpec, VaultServerSpec
from components.vso import RestartTarget, SecretSync, VaultSecretsOperator, VsoArgs, vso_roles
from config import (
    COLLECTOR_SHAPES,
    AnyStackConfig,
    AwsKmsSeal,
    EdgeConfig,
    ExistingClusterSettings,
    HubConfig,
    LkeClusterSettings,
    LoadBalancerExposure,
    ShamirSeal,
    TransitSeal,
)


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


def vault_args(
    cfg: AnyStackConfig, provider: k8s.Provider, cert_manager: CertManager, hub: HubLink | None
) -> VaultArgs:
    settings = cfg.vault
    aws_seal: AwsKmsSealSpec | None = None
    aws_credentials: AwsKmsCredentials | None = None
    transit: TransitSealInput | None = None
    if isinstance(settings.seal, TransitSeal):
        assert hub is not None and isinstance(cfg, EdgeConfig)
        transit = TransitSealInput(
            address=hub.vault_address,
            key_name=cfg.edge_name,
            tls_server_name=hub.vault_hostname,
            token=hub.transit_token,
            hub_ca_cert=hub.vault_ca_cert,
        )
    elif isinstance(settings.seal, AwsKmsSeal):
        assert cfg.aws_kms_credentials is not None
        aws_seal = AwsKmsSealSpec(
            region=settings.seal.region, kms_key_id=settings.seal.kms_key_id, endpoint=settings.seal.endpoint
        )
        aws_credentials = AwsKmsCredentials(
            access_key_id=pulumi.Output.secret(cfg.aws_kms_credentials.access_key_id),
            secret_access_key=pulumi.Output.secret(cfg.aws_kms_credentials.secret_access_key),
        )
    shares, threshold = (
        (settings.seal.key_shares, settings.seal.key_threshold)
        if isinstance(settings.seal, ShamirSeal)
        else (settings.seal.recovery_shares, settings.seal.recovery_threshold)
    )
    exposure = settings.exposure
    return VaultArgs(
        provider=provider,
        server=VaultServerSpec(
            cluster_name=f"fedobs-{stack_prefix(cfg)}",
            external_hostname=exposure.hostname,
            replicas=settings.replicas,
            seal=aws_seal,
        ),
        access=LoadBalancerAccess(exposure.allowed_source_ranges)
        if isinstance(exposure, LoadBalancerExposure)
        else OperatorAddress(exposure.address),
        cert_manager=cert_manager.ready,
        storage_class=settings.storage_class,
        data_storage_size=settings.data_storage_size,
        audit_storage_size=settings.audit_storage_size,
        injector_replicas=settings.injector_replicas,
        transit_seal=transit,
        aws_kms_credentials=aws_credentials,
        key_shares=shares,
        key_threshold=threshold,
        operator_pgp_keys=settings.operator_pgp_keys,
        admin_credential_generation=settings.admin_credential_generation,
    )


def consumer_roles(cfg: AnyStackConfig) -> list[WorkloadRole]:
    """Each declared consumer as a Kubernetes-auth role with the smallest policy for its access."""
    settings = cfg.vault_config
    engine_paths = {
        "database": settings.database.path if settings.database else "database",
        "aws": settings.aws.path if settings.aws else "aws",
    }
    roles = []
    for consumer in settings.consumers:
        grants = [
            *(g for path in consumer.kv_read for g in kv_read(settings.kv.path, path)),
            *(g for path in consumer.kv_write for g in kv_write(settings.kv.path, path)),
            *(
                g
                for ref in consumer.credentials
                for g in credentials(engine_paths[ref.split("/")[0]], ref.split("/")[1])
            ),
        ]
        roles.append(
            WorkloadRole(
                name=consumer.name,
                service_account=consumer.service_account,
                namespace=consumer.namespace,
                policy_hcl=render_policy(consumer.name, grants),
                token_ttl_seconds=consumer.token_ttl,
                token_max_ttl_seconds=consumer.token_max_ttl,
            )
        )
    return roles


def vault_configuration_args(cfg: AnyStackConfig, vault: Vault) -> VaultConfigurationArgs:
    settings = cfg.vault_config
    database = None
    if settings.database and settings.database.enabled:
        database = DatabaseSpec(
            path=settings.database.path,
            connections=tuple(
                DatabaseConnectionSpec(
                    name=c.name,
                    engine=c.engine,
                    host=c.host,
                    port=c.port,
                    database=c.database,
                    tls=c.tls,
                    roles=tuple(
                        DatabaseRoleSpec(
                            name=r.name, access=r.access, schema=r.schema_, default_ttl=r.default_ttl, max_ttl=r.max_ttl
                        )
                        for r in c.roles
                    ),
                    admin_username=pulumi.Output.secret(cfg.database_admins[c.name].username),
                    admin_password=pulumi.Output.secret(cfg.database_admins[c.name].password),
                )
                for c in settings.database.connections
            ),
        )
    aws = None
    if settings.aws and settings.aws.enabled:
        assert cfg.aws_root_credentials is not None
        aws = AwsSpec(
            path=settings.aws.path,
            region=settings.aws.region,
            roles=tuple(
                AwsRoleSpec(
                    name=r.name, role_arns=r.role_arns, default_sts_ttl=r.default_sts_ttl, max_sts_ttl=r.max_sts_ttl
                )
                for r in settings.aws.roles
            ),
            access_key_id=pulumi.Output.secret(cfg.aws_root_credentials.access_key_id),
            secret_access_key=pulumi.Output.secret(cfg.aws_root_credentials.secret_access_key),
            iam_endpoint=settings.aws.iam_endpoint,
            sts_endpoint=settings.aws.sts_endpoint,
        )
    return VaultConfigurationArgs(
        vault_provider=vault.vault_provider,
        kv=KvSpec(path=settings.kv.path, max_versions=settings.kv.max_versions),
        database=database,
        aws=aws,
        edges=tuple(e.name for e in cfg.edges) if isinstance(cfg, HubConfig) else (),
    )


def stack_prefix(cfg: AnyStackConfig) -> str:
    """The name prefix of every top-level component: ``hub`` or the edge's name."""
    return cfg.edge_name if isinstance(cfg, EdgeConfig) else "hub"


def injected_credential(
    cfg: AnyStackConfig, name: str, reference: str, file_format: Literal["dotenv", "json"], env_prefix: str
) -> InjectedCredential:
    """``database/readonly`` -> the file rendered from ``<database mount>/creds/readonly``."""
    engine, role = reference.split("/", 1)
    settings = cfg.vault_config
    path = (
        settings.database.path
        if engine == "database" and settings.database
        else settings.aws.path
        if engine == "aws" and settings.aws
        else engine
    )
    kind: Literal["database", "aws"] = "database" if engine == "database" else "aws"
    return InjectedCredential(
        name=name, path=f"{path}/creds/{role}", kind=kind, format=file_format, env_prefix=env_prefix
    )


def otlp_pki_args(cfg: HubConfig, provider: k8s.Provider, cert_manager: CertManager) -> OtlpPkiArgs:
    assert cfg.pki is not None
    return OtlpPkiArgs(
        provider=provider,
        cert_manager=cert_manager.ready,
        edges=tuple(e.name for e in cfg.edges),
        receiver_hostnames=cfg.pki.receiver_hostnames,
        namespace=cfg.pki.namespace,
        organization=cfg.pki.organization,
        key_algorithm=cfg.pki.key_algorithm,
        key_size=cfg.pki.key_size,
        ca_duration_hours=cfg.pki.ca_duration_hours,
        cert_duration_hours=cfg.pki.cert_duration_hours,
    )


def cert_sync_source(cfg: AnyStackConfig, pki: OtlpPki | None, hub: HubLink | None) -> HubSource | EdgeSource | None:
    """What this cluster's cert-sync copies: the hub's PKI Secrets, or this edge's client certificate."""
    if isinstance(cfg, EdgeConfig):
        assert hub is not None
        return EdgeSource(
            edge=cfg.edge_name,
            hub_address=hub.vault_address,
            hub_ca_cert=hub.vault_ca_cert,
            hub_credential=hub.hub_credential,
        )
    if pki is None:
        return None
    return HubSource(secrets=pki.sync_map, ca_secrets=pki.ca_sync_map)


def collector_args(
    cfg: AnyStackConfig, provider: k8s.Provider, after: tuple[pulumi.Resource, ...], hub: HubLink | None
) -> CollectorArgs | None:
    """The hub's mTLS gateway or this edge's forwarding collector, mounting the Secrets VSO syncs."""
    settings = cfg.collector
    if settings is None or not settings.enabled:
        return None
    shape = COLLECTOR_SHAPES[cfg.role]
    receiver = exporter = None
    if isinstance(cfg, HubConfig):
        assert cfg.pki is not None
        server_tls, client_ca = shape.mounted_secrets
        receiver = MtlsReceiver(
            server_tls_secret=server_tls,
            client_ca_secret=client_ca,
            hostname=cfg.pki.receiver_hostnames[0],
            allowed_source_ranges=settings.allowed_source_ranges,
        )
    else:
        assert hub is not None
        (client_tls,) = shape.mounted_secrets
        exporter = MtlsExporter(
            endpoint=hub.otlp_endpoint.apply(lambda url: url.removeprefix("https://")), client_tls_secret=client_tls
        )
    return CollectorArgs(
        provider=provider,
        deployment=shape.deployment,
        namespace=settings.namespace,
        after=after,
        replicas=settings.replicas,
        tls_min_version=settings.tls_min_version,
        memory_limit=settings.memory_limit,
        receiver=receiver,
        exporter=exporter,
    )


def admission_args(cfg: AnyStackConfig, provider: k8s.Provider, vso: VaultSecretsOperator | None) -> AdmissionArgs:
    """Kyverno's guard over the collector namespace: its Deployments mount only VSO's Secrets.
    (An enabled collector always has VSO syncs in its namespace: config.py checks it.)"""
    assert cfg.admission is not None
    namespaces = (cfg.collector.namespace,) if cfg.collector is not None and cfg.collector.enabled else ()
    return AdmissionArgs(
        provider=provider,
        mode=cfg.admission.mode,
        collector_namespaces=namespaces,
        namespaces_ready=tuple(vso.target_namespaces[ns] for ns in namespaces) if vso else (),
    )


def build_stack(cfg: AnyStackConfig) -> dict[str, Any]:
    """Declare every resource of the stack; returns the stack outputs to export."""
    prefix = stack_prefix(cfg)
    outputs: dict[str, Any] = {"role": cfg.role}
    hub = None
    if isinstance(cfg, EdgeConfig):
        hub = HubLink(f"{prefix}-hub", HubLinkArgs(stack_name=cfg.hub_stack, edge_name=cfg.edge_name))
        outputs["hubVaultAddress"] = hub.vault_address
        outputs["hubOtlpEndpoint"] = hub.otlp_endpoint
    cluster = Cluster(f"{prefix}-cluster", cluster_args(cfg))
    outputs["kubeconfig"] = cluster.kubeconfig
    outputs["apiEndpoint"] = cluster.api_endpoint
    cert_manager = CertManager(f"{prefix}-cert-manager", CertManagerArgs(provider=cluster.provider))
    vault = Vault(f"{prefix}-vault", vault_args(cfg, cluster.provider, cert_manager, hub))
    outputs["vaultAddress"] = vault.address
    outputs["vaultCaCert"] = vault.ca_cert
    pki = None
    if isinstance(cfg, HubConfig) and cfg.pki is not None:
        pki = OtlpPki(f"{prefix}-otlp-pki", otlp_pki_args(cfg, cluster.provider, cert_manager))
        outputs["otlpEndpoint"] = f"https://{cfg.pki.receiver_hostnames[0]}:{GRPC_PORT}"
    configuration = VaultConfiguration(f"{prefix}-vault-config", vault_configuration_args(cfg, vault))
    syncs = tuple(
        SecretSync(
            namespace=s.namespace,
            secret_name=s.secret_name,
            kv_path=s.kv_path,
            secret_type=s.secret_type,
            restart=tuple(RestartTarget(t.kind, t.name) for t in s.restart),
        )
        for s in cfg.distribution.syncs
    )
    kv_mount = cfg.vault_config.kv.path
    roles = [*consumer_roles(cfg), *vso_roles(syncs, kv_mount)]
    snapshots = cfg.vault.snapshots if cfg.vault.snapshots and cfg.vault.snapshots.enabled else None
    if snapshots:
        roles.append(snapshot_role(vault.namespace))
    sync_source = cert_sync_source(cfg, pki, hub)
    if sync_source is not None:
        roles.append(cert_sync_role(sync_source, kv_mount))
    auth = KubernetesAuth(
        f"{prefix}-kubernetes-auth", KubernetesAuthArgs(vault_provider=vault.vault_provider, roles=tuple(roles))
    )
    in_cluster_vault = f"https://{vault.release_name}-active.{vault.namespace}.svc"
    if snapshots:
        assert cfg.snapshot_credentials is not None
        RaftSnapshots(
            f"{prefix}-raft-snapshots",
            RaftSnapshotsArgs(
                provider=cluster.provider,
                namespace=vault.namespace,
                release=vault.release_name,
                cluster_name=f"fedobs-{prefix}",
                schedule=snapshots.schedule,
                retain=snapshots.retain,
                bucket_name=snapshots.bucket.name,
                bucket_region=snapshots.bucket.region,
                bucket_endpoint=snapshots.bucket.endpoint,
                create_bucket=snapshots.bucket.create,
                access_key_id=pulumi.Output.secret(cfg.snapshot_credentials.access_key_id),
                secret_access_key=pulumi.Output.secret(cfg.snapshot_credentials.secret_access_key),
                vault_ready=auth,
            ),
        )
    if sync_source is not None:
        CertSync(
            f"{prefix}-cert-sync",
            CertSyncArgs(
                provider=cluster.provider,
                source=sync_source,
                vault_address=f"{in_cluster_vault}:8200",
                schedule=cfg.distribution.cert_sync_schedule,
                kv_mount=kv_mount,
                interval=cfg.distribution.cert_sync_interval,
                vault_ready=(auth, configuration.kv_ready),
            ),
            vault_ca_cert=vault.ca_cert,
        )
    vso = None
    if syncs:
        vso = VaultSecretsOperator(
            f"{prefix}-vso",
            VsoArgs(
                provider=cluster.provider,
                syncs=syncs,
                vault_address=f"{in_cluster_vault}:8200",
                vault_tls_server_name=in_cluster_vault.removeprefix("https://"),
                vault_ca_cert=vault.ca_cert,
                kv_mount=kv_mount,
                use_vault_auth_global=cfg.distribution.vault_auth_global,
            ),
        )
    guardrails: tuple[pulumi.Resource, ...] = ()
    if cfg.admission is not None and cfg.admission.enabled:
        guardrails = (Admission(f"{prefix}-admission", admission_args(cfg, cluster.provider, vso)),)
    collector = collector_args(cfg, cluster.provider, (*([vso] if vso else []), *guardrails), hub)
    if collector is not None:
        OtelCollector(f"{prefix}-collector", collector)
    for workload in cfg.dynamic_secrets:
        consumer = next(c for c in cfg.vault_config.consumers if c.name == workload.consumer)
        DynamicSecrets(
            f"{prefix}-{consumer.name}",
            DynamicSecretsArgs(
                provider=cluster.provider,
                namespace=consumer.namespace,
                service_account=consumer.service_account,
                injector=InjectorSettings(
                    role=consumer.name,
                    vault_address=f"{in_cluster_vault}:8200",
                    tls_server_name=in_cluster_vault.removeprefix("https://"),
                ),
                credentials=tuple(
                    injected_credential(cfg, f.name, f.credential, f.format, f.env_prefix) for f in workload.files
                ),
                vault_ca_cert=vault.ca_cert,
                example_job=workload.example_job,
                vault_ready=(auth, *configuration.credential_roles),
            ),
        )
    if isinstance(cfg, HubConfig):
        unseal = TransitUnseal(
            f"{prefix}-transit-unseal",
            TransitUnsealArgs(vault_provider=vault.vault_provider, edges=tuple(e.name for e in cfg.edges)),
        )
        outputs["edgeTransitTokens"] = pulumi.Output.secret(unseal.tokens)
        outputs["edgeCredentials"] = pulumi.Output.secret(configuration.edge_credentials)
    return outputs
