"""The cert-sync CronJob: certificates into Vault KV on the hub, the edge's own one pulled from the hub."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.cert_sync_cadence import JOB_DEADLINE_SECONDS, TRUST_LEAD_SECONDS, passes_per_run
from components.kubernetes_auth import WorkloadRole
from components.otlp_pki import EDGE_CLIENT_TLS_KV_PATH
from components.pod_security import SECRET_FILE_MODE, restricted_container, restricted_namespace, restricted_pod
from components.vault_names import CERT_SYNC_ROLE, in_cluster_address
from components.vault_policies import kv_write, render_policy
from components.vault_server_config import TLS_DIR
from components.vso import DistributionSettings

TYPE_TOKEN = "fedobs:distribution:CertSync"
CERT_SYNC_NAMESPACE = "fedobs-cert-sync"
SERVICE_ACCOUNT = "cert-sync"
ROLE = CERT_SYNC_ROLE
JWT_DIR = "/var/run/secrets/vault"
HUB_DIR = "/fedobs/hub"


@dataclass(frozen=True)
class HubSource:
    """Hub mode: leaf Secrets (``namespace/name``) copied to KV paths; ``trust``: each trust bundle's
    KV path and the leaf Secrets whose ``ca.crt`` it follows; ``peer_ca``: copies that carry a bundle
    as their ``ca.crt``. No CA's own Secret is ever read (``programs.cert_sync.trust``)."""

    secrets: dict[str, str]
    trust: dict[str, tuple[str, ...]] = field(default_factory=dict)
    peer_ca: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EdgeSource:
    """Edge mode: this edge's certificate from the hub Vault, with its scoped AppRole."""

    edge: str
    hub_address: pulumi.Input[str]
    hub_ca_cert: pulumi.Input[str]
    hub_credential: pulumi.Input[dict[str, str]]
    kv_path: str = EDGE_CLIENT_TLS_KV_PATH


def written_paths(source: HubSource | EdgeSource) -> list[str]:
    """Every KV path the job publishes: the copies and, on the hub, the trust bundles."""
    if isinstance(source, EdgeSource):
        return [source.kv_path]
    return sorted({*source.secrets.values(), *source.trust})


def cert_sync_role(source: HubSource | EdgeSource, kv_mount: str) -> WorkloadRole:
    """The Vault role the job logs in with: check-and-set writes on exactly the paths it syncs."""
    grants = [g for path in written_paths(source) for g in kv_write(kv_mount, path)]
    return WorkloadRole(
        name=ROLE,
        service_account=SERVICE_ACCOUNT,
        namespace=CERT_SYNC_NAMESPACE,
        policy_hcl=render_policy(ROLE, grants),
        token_ttl_seconds=300,
        token_max_ttl_seconds=600,
    )


def command(source: HubSource | EdgeSource, interval: int) -> list[str]:
    """The program's command line; ``interval`` seconds between the passes of one run."""
    base = ["python", "-m", "programs.cert_sync"]
    passes = passes_per_run(interval)
    cadence = ["--passes", str(passes), "--interval", str(interval)] if passes > 1 else []
    if isinstance(source, HubSource):
        trust = [("--trust", f"{ref}={path}") for path, refs in sorted(source.trust.items()) for ref in sorted(refs)]
        peers = [("--peer-ca", f"{path}={bundle}") for path, bundle in sorted(source.peer_ca.items())]
        lead = ["--trust-lead", str(TRUST_LEAD_SECONDS)] if source.trust else []
        return [
            *base,
            "hub",
            *[part for secret, path in sorted(source.secrets.items()) for part in ("--secret", f"{secret}={path}")],
            *[part for pair in (*trust, *peers) for part in pair],
            *lead,
            *cadence,
        ]
    return [
        *base,
        "edge",
        "--edge",
        source.edge,
        "--kv-path",
        source.kv_path,
        "--hub-ca-file",
        f"{HUB_DIR}/ca.crt",
        "--hub-role-id-file",
        f"{HUB_DIR}/role-id",
        "--hub-secret-id-file",
        f"{HUB_DIR}/secret-id",
        *cadence,
    ]


def cronjob_spec(
    settings: DistributionSettings,
    source: HubSource | EdgeSource,
    kv_mount: str,
    hub_address: str | None,
    image: str,
) -> dict[str, Any]:
    hub_mode = isinstance(source, HubSource)
    env = [
        {"name": "VAULT_ADDR", "value": in_cluster_address()},
        {"name": "VAULT_CACERT", "value": f"{TLS_DIR}/ca.crt"},
        {"name": "CERT_SYNC_ROLE", "value": ROLE},
        {"name": "CERT_SYNC_KV_MOUNT", "value": kv_mount},
        {"name": "CERT_SYNC_JWT_FILE", "value": f"{JWT_DIR}/token"},
    ]
    if hub_address is not None:
        env.append({"name": "CERT_SYNC_HUB_ADDR", "value": hub_address})
    mounts = [
        {"name": "vault-token", "mountPath": JWT_DIR, "readOnly": True},
        {"name": "vault-ca", "mountPath": TLS_DIR, "readOnly": True},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "vault-token",
            "projected": {
                "sources": [{"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 600}}]
            },
        },
        {"name": "vault-ca", "secret": {"secretName": "vault-ca"}},
    ]
    if not hub_mode:
        mounts.append({"name": "hub", "mountPath": HUB_DIR, "readOnly": True})
        volumes.append({"name": "hub", "secret": {"secretName": "hub-credential", "defaultMode": SECRET_FILE_MODE}})
    return {
        "schedule": settings.cert_sync_schedule,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 50,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 5,
        "jobTemplate": {
            "spec": {
                "backoffLimit": 1,
                # Over before the next every-minute run, which Forbid would otherwise skip.
                "activeDeadlineSeconds": JOB_DEADLINE_SECONDS,
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "cert-sync"}},
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        # Hub mode reads Secrets from the Kubernetes API with the pod's own token.
                        "automountServiceAccountToken": hub_mode,
                        "restartPolicy": "Never",
                        "securityContext": restricted_pod(reads_secret_files=True),
                        "containers": [
                            {
                                "name": "cert-sync",
                                "image": image,
                                "command": command(source, settings.cert_sync_interval),
                                "env": env,
                                "securityContext": restricted_container(),
                                "resources": {
                                    "requests": {"cpu": "20m", "memory": "64Mi"},
                                    "limits": {"cpu": "200m", "memory": "128Mi"},
                                },
                                "volumeMounts": mounts,
                            }
                        ],
                        "volumes": volumes,
                    },
                },
            }
        },
    }


def _identity(name: str, vault_ca_cert: pulumi.Input[str], in_ns: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """The job's ServiceAccount, and the CA of this cluster's Vault
    as the Secret the job mounts."""
    account = k8s.core.v1.ServiceAccount(
        f"{name}-sa",
        metadata={"name": SERVICE_ACCOUNT, "namespace": CERT_SYNC_NAMESPACE},
        automount_service_account_token=False,
        opts=in_ns,
    )
    ca = k8s.core.v1.Secret(
        f"{name}-vault-ca",
        metadata={"name": "vault-ca", "namespace": CERT_SYNC_NAMESPACE},
        string_data={"ca.crt": vault_ca_cert},
        opts=in_ns,
    )
    return [account, ca]


def _secret_readers(name: str, source: HubSource, in_ns: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """Hub mode: per namespace, a Role that may ``get`` exactly
    the synced Secrets, bound to the job's ServiceAccount."""
    by_namespace: dict[str, list[str]] = {}
    for secret in source.secrets:
        secret_namespace, secret_name = secret.split("/", 1)
        by_namespace.setdefault(secret_namespace, []).append(secret_name)
    bindings: list[pulumi.Resource] = []
    for secret_namespace, names in sorted(by_namespace.items()):
        rules: Any = [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": sorted(names), "verbs": ["get"]}]
        role = k8s.rbac.v1.Role(
            f"{name}-{secret_namespace}-reader",
            metadata={"name": "cert-sync-reader", "namespace": secret_namespace},
            rules=rules,
            opts=in_ns,
        )
        subjects: Any = [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": CERT_SYNC_NAMESPACE}]
        bindings.append(
            k8s.rbac.v1.RoleBinding(
                f"{name}-{secret_namespace}-reader-binding",
                metadata={"name": "cert-sync-reader", "namespace": secret_namespace},
                role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": "cert-sync-reader"},
                subjects=subjects,
                opts=pulumi.ResourceOptions.merge(in_ns, pulumi.ResourceOptions(depends_on=[role])),
            )
        )
    return bindings


def _hub_credential(name: str, source: EdgeSource, in_ns: pulumi.ResourceOptions) -> k8s.core.v1.Secret:
    """Edge mode: the hub's CA and this edge's AppRole credential,
    as the Secret the job mounts."""
    credential = pulumi.Output.secret(source.hub_credential)
    return k8s.core.v1.Secret(
        f"{name}-hub-credential",
        metadata={"name": "hub-credential", "namespace": CERT_SYNC_NAMESPACE},
        string_data={
            "role-id": credential.apply(lambda c: c["roleId"]),
            "secret-id": credential.apply(lambda c: c["secretId"]),
            "ca.crt": source.hub_ca_cert,
        },
        opts=in_ns,
    )


class CertSync(pulumi.ComponentResource):
    """The cert-sync CronJob of one cluster.

    Guarantees: it never overlaps itself (each Job is stopped before the next scheduled run, and
    syncs every ``interval`` seconds until then: ``components.cert_sync_cadence``); it runs as a
    restricted non-root pod; on the hub its ServiceAccount may ``get`` exactly the named leaf Secrets
    and nothing else (never a CA's Secret: trust bundles come from the leaves' ``ca.crt``); it
    writes with its own Vault role (``cert_sync_role``) to exactly the paths it publishes; on an edge
    the hub credential reaches it only as a Secret mounted read-only.
    """

    def __init__(
        self,
        name: str,
        settings: DistributionSettings,
        *,
        source: HubSource | EdgeSource,
        kv_mount: str,
        vault_ca_cert: pulumi.Input[str],
        image: str,
        vault_ready: tuple[pulumi.Resource, ...] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``image``: the programs image (``fedobs:programsImage``). The Kubernetes provider comes through
        ``opts``. Only the CronJob waits for ``vault_ready`` (its Vault role and the KV mount it writes);
        its namespace, RBAC and Secrets do not."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        namespace = restricted_namespace(f"{name}-namespace", CERT_SYNC_NAMESPACE, pulumi.ResourceOptions(parent=self))
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        dependencies = _identity(name, vault_ca_cert, in_ns)
        hub_address: pulumi.Input[str] | None = None
        if isinstance(source, HubSource):
            dependencies += _secret_readers(name, source, in_ns)
        else:
            dependencies.append(_hub_credential(name, source, in_ns))
            hub_address = source.hub_address
        spec = pulumi.Output.from_input(hub_address).apply(
            lambda address: cronjob_spec(settings, source, kv_mount, address, image)
        )
        k8s.batch.v1.CronJob(
            f"{name}-cronjob",
            metadata={"name": "cert-sync", "namespace": CERT_SYNC_NAMESPACE},
            spec=spec,
            opts=pulumi.ResourceOptions.merge(in_ns, pulumi.ResourceOptions(depends_on=[*dependencies, *vault_ready])),
        )
        self.register_outputs(
            {
                "namespace": CERT_SYNC_NAMESPACE,
                "schedule": settings.cert_sync_schedule,
                "passesPerRun": passes_per_run(settings.cert_sync_interval),
                "paths": written_paths(source),
            }
        )
