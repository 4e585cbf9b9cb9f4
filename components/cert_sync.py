"""cert-sync: on the hub a CronJob puts certificates into Vault KV; on an edge a Deployment follows the
hub and pulls the edge's own one (``programs.cert_sync``, docs/secret-flow.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.cert_sync_cadence import (
    FOLLOW_POLL_SECONDS,
    JOB_DEADLINE_SECONDS,
    TRUST_LEAD_SECONDS,
    passes_per_run,
)
from components.kubernetes_auth import WorkloadRole
from components.otlp_pki import EDGE_CLIENT_TLS_KV_PATH
from components.pod_security import SECRET_FILE_MODE, restricted_container, restricted_namespace, restricted_pod
from components.vault_names import CERT_SYNC_ROLE, OTEL_KV_PREFIX, in_cluster_address
from components.vault_policies import kv_write, render_policy
from components.vault_server_config import TLS_DIR
from components.vso import DistributionSettings

TYPE_TOKEN = "fedobs:distribution:CertSync"
CERT_SYNC_NAMESPACE = "fedobs-cert-sync"
SERVICE_ACCOUNT = "cert-sync"
ROLE = CERT_SYNC_ROLE
JWT_DIR = "/var/run/secrets/vault"
HUB_DIR = "/fedobs/hub"
#: The edge's hub role_id and the hub's CA (Pulumi-managed, mounted).
HUB_CREDENTIAL_SECRET = "hub-credential"
#: The edge's hub secret_id: created by Pulumi once, then owned by the follower, which replaces it
#: through the Kubernetes API (``programs.cert_sync.follow``); Pulumi ignores changes to its data.
HUB_SECRET_ID_SECRET = "hub-secret-id"
#: The hub cert-sync's index of what it wrote (``programs.cert_sync.index``): a pass reads it instead
#: of every edge's copy. Below the reserved ``otel/`` prefix; only the hub's cert-sync role may read
#: or write it (an edge's AppRole reads ``edges/<edge>/*`` only, ``components.vault_config``).
HUB_INDEX_KV_PATH = f"{OTEL_KV_PREFIX}/cert-sync-index"
#: Failed polls in a row before the follower exits (the pod restarts): 8 x 75 s = 10 minutes.
FOLLOW_MAX_FAILURES = 8


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
    """The Vault role the job logs in with: check-and-set writes on exactly the paths it syncs and,
    on the hub, its index."""
    index = [HUB_INDEX_KV_PATH] if isinstance(source, HubSource) else []
    grants = [g for path in [*written_paths(source), *index] for g in kv_write(kv_mount, path)]
    return WorkloadRole(
        name=ROLE,
        service_account=SERVICE_ACCOUNT,
        namespace=CERT_SYNC_NAMESPACE,
        policy_hcl=render_policy(ROLE, grants),
        token_ttl_seconds=300,
        token_max_ttl_seconds=600,
    )


def command(source: HubSource | EdgeSource, interval: int) -> list[str]:
    """The program's command line: on the hub ``interval`` seconds between the passes of one run; on an
    edge the follower, polling every ``FOLLOW_POLL_SECONDS``."""
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
            "--index",
            HUB_INDEX_KV_PATH,
            *cadence,
        ]
    return [
        *base,
        "follow",
        "--edge",
        source.edge,
        "--kv-path",
        source.kv_path,
        "--hub-ca-file",
        f"{HUB_DIR}/ca.crt",
        "--hub-role-id-file",
        f"{HUB_DIR}/role-id",
        "--hub-credential",
        f"{CERT_SYNC_NAMESPACE}/{HUB_SECRET_ID_SECRET}",
        "--poll",
        str(FOLLOW_POLL_SECONDS),
        "--max-failures",
        str(FOLLOW_MAX_FAILURES),
    ]


def pod_spec(
    settings: DistributionSettings,
    source: HubSource | EdgeSource,
    kv_mount: str,
    hub_address: str | None,
    image: str,
) -> dict[str, Any]:
    """The pod of the hub's Job or of the edge's Deployment."""
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
        volumes.append(
            {"name": "hub", "secret": {"secretName": HUB_CREDENTIAL_SECRET, "defaultMode": SECRET_FILE_MODE}}
        )
    return {
        "serviceAccountName": SERVICE_ACCOUNT,
        # Both read the Kubernetes API with the pod's own token: the hub its Secrets, an edge its secret_id.
        "automountServiceAccountToken": True,
        "restartPolicy": "Never" if hub_mode else "Always",
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
    }


def cronjob_spec(
    settings: DistributionSettings,
    source: HubSource,
    kv_mount: str,
    image: str,
) -> dict[str, Any]:
    """The hub's CronJob."""
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
                    "spec": pod_spec(settings, source, kv_mount, None, image),
                },
            }
        },
    }


def deployment_spec(
    settings: DistributionSettings,
    source: EdgeSource,
    kv_mount: str,
    hub_address: str,
    image: str,
) -> dict[str, Any]:
    """The edge's follower: one replica, never two at once (``Recreate``: two followers would race to
    replace the secret_id; the Secret's ``resourceVersion`` would refuse the second, but one is enough)."""
    labels = {"app.kubernetes.io/name": "cert-sync"}
    return {
        "replicas": 1,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": pod_spec(settings, source, kv_mount, hub_address, image),
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


def _hub_credential(name: str, source: EdgeSource, in_ns: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """Edge mode: the hub's CA and this edge's role_id as the Secret the follower mounts; its
    secret_id as a Secret of its own, which the follower alone may read and replace (a Role with
    ``get`` and ``update`` on that one Secret). Pulumi writes the secret_id once, at creation, and
    then ignores its data (``ignore_changes``): after the follower replaced it, neither ``pulumi up``
    nor ``pulumi up`` after a ``pulumi refresh`` (which drops the destroyed secret_id from the state
    and mints a new one: ``components.hub_link``) writes a stale or unused secret_id over it; the
    follower destroys such a stray one at its next rotation (docs/secret-flow.md)."""
    credential = pulumi.Output.secret(source.hub_credential)
    mounted = k8s.core.v1.Secret(
        f"{name}-hub-credential",
        metadata={"name": HUB_CREDENTIAL_SECRET, "namespace": CERT_SYNC_NAMESPACE},
        string_data={"role-id": credential.apply(lambda c: c["roleId"]), "ca.crt": source.hub_ca_cert},
        opts=in_ns,
    )
    owned = k8s.core.v1.Secret(
        f"{name}-hub-secret-id",
        metadata={"name": HUB_SECRET_ID_SECRET, "namespace": CERT_SYNC_NAMESPACE},
        string_data={"secret-id": credential.apply(lambda c: c["secretId"])},
        opts=pulumi.ResourceOptions.merge(in_ns, pulumi.ResourceOptions(ignore_changes=["stringData", "data"])),
    )
    rules: Any = [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [HUB_SECRET_ID_SECRET],
            "verbs": ["get", "update"],
        }
    ]
    role = k8s.rbac.v1.Role(
        f"{name}-secret-id-keeper",
        metadata={"name": "cert-sync-secret-id", "namespace": CERT_SYNC_NAMESPACE},
        rules=rules,
        opts=in_ns,
    )
    subjects: Any = [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": CERT_SYNC_NAMESPACE}]
    binding = k8s.rbac.v1.RoleBinding(
        f"{name}-secret-id-keeper-binding",
        metadata={"name": "cert-sync-secret-id", "namespace": CERT_SYNC_NAMESPACE},
        role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": "cert-sync-secret-id"},
        subjects=subjects,
        opts=pulumi.ResourceOptions.merge(in_ns, pulumi.ResourceOptions(depends_on=[role])),
    )
    return [mounted, owned, binding]


class CertSync(pulumi.ComponentResource):
    """cert-sync in one cluster: the hub's CronJob, or an edge's follower Deployment.

    Guarantees: on the hub it never overlaps itself (each Job is stopped before the next scheduled
    run, and syncs every ``interval`` seconds until then: ``components.cert_sync_cadence``); on an edge
    one follower (one replica, ``Recreate``) polls the hub every ``FOLLOW_POLL_SECONDS``. Either runs
    as a restricted non-root pod; on the hub its ServiceAccount may ``get`` exactly the named leaf
    Secrets and nothing else (never a CA's Secret: trust bundles come from the leaves' ``ca.crt``); on
    an edge it may ``get`` and ``update`` exactly its ``hub-secret-id`` Secret; it writes with its own
    Vault role (``cert_sync_role``) to exactly the paths it publishes; on an edge the hub's CA and
    role_id reach it as a Secret mounted read-only.
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
        ``opts``. Only the CronJob or Deployment waits for ``vault_ready`` (its Vault role and the KV
        mount it writes); its namespace, RBAC and Secrets do not."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        namespace = restricted_namespace(f"{name}-namespace", CERT_SYNC_NAMESPACE, pulumi.ResourceOptions(parent=self))
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        dependencies = _identity(name, vault_ca_cert, in_ns)
        metadata = {"name": "cert-sync", "namespace": CERT_SYNC_NAMESPACE}
        if isinstance(source, HubSource):
            dependencies += _secret_readers(name, source, in_ns)
            waits = pulumi.ResourceOptions.merge(
                in_ns, pulumi.ResourceOptions(depends_on=[*dependencies, *vault_ready])
            )
            k8s.batch.v1.CronJob(
                f"{name}-cronjob", metadata=metadata, spec=cronjob_spec(settings, source, kv_mount, image), opts=waits
            )
            cadence: dict[str, Any] = {
                "schedule": settings.cert_sync_schedule,
                "passesPerRun": passes_per_run(settings.cert_sync_interval),
            }
        else:
            dependencies += _hub_credential(name, source, in_ns)
            waits = pulumi.ResourceOptions.merge(
                in_ns, pulumi.ResourceOptions(depends_on=[*dependencies, *vault_ready])
            )
            edge = source
            spec = pulumi.Output.from_input(source.hub_address).apply(
                lambda address: deployment_spec(settings, edge, kv_mount, address, image)
            )
            k8s.apps.v1.Deployment(f"{name}-follower", metadata=metadata, spec=spec, opts=waits)
            cadence = {"pollSeconds": FOLLOW_POLL_SECONDS}
        self.register_outputs({"namespace": CERT_SYNC_NAMESPACE, **cadence, "paths": written_paths(source)})
