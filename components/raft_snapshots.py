"""Scheduled Raft snapshots of a cluster's Vault to S3-compatible object storage."""

from __future__ import annotations

import re
from typing import Annotated, Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_linode as linode
from pydantic import AfterValidator, Field, model_validator

from components.cluster import Platform
from components.kubernetes_auth import WorkloadRole
from components.pod_security import restricted_container, restricted_pod
from components.settings import AccessKeyPair, Cron, DnsLabel, Settings
from components.vault_names import SNAPSHOT_ROLE, VAULT_NAMESPACE, in_cluster_address
from components.vault_server_config import TLS_DIR
from programs.raft_snapshot.snapshot import SNAPSHOT_POLICY_HCL

TYPE_TOKEN = "fedobs:vault:RaftSnapshots"
SERVICE_ACCOUNT = "vault-snapshot"
ROLE = SNAPSHOT_ROLE
JWT_DIR = "/var/run/secrets/vault"


#: A Linode region id (``us-ord``), what pulumi-linode's ``ObjectStorageBucket.region`` takes.
OBJECT_STORAGE_REGION = re.compile(r"^[a-z]{2}-[a-z]+$")
#: A legacy Object Storage cluster id (``us-ord-1``): the provider's deprecated ``cluster`` input, not a region.
OBJECT_STORAGE_CLUSTER = re.compile(r"^(?P<region>[a-z]{2}-[a-z]+)-[0-9]+$")
#: Linode's own Object Storage endpoints: ``https://<cluster id>.linodeobjects.com``.
LINODE_OBJECTS_HOST = re.compile(r"^(?P<cluster>[a-z0-9-]+)\.linodeobjects\.com$")


#: The region an S3 client signs for, at any S3-compatible endpoint (``us-ord``, ``us-east-1``, ``auto``).
S3_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def _s3_region(value: str) -> str:
    if not S3_REGION.match(value):
        raise ValueError(
            f"{value!r} is not a Linode region (expected something like 'us-ord') nor another S3 region "
            "name (such as 'us-east-1')"
        )
    return value


def linode_region_problem(value: str) -> str | None:
    """Why ``value`` is not a region a Linode Object Storage bucket is created in (None: it is one).

    pulumi-linode v6.0.0 ``linode:index/objectStorageBucket:ObjectStorageBucket`` (provider/cmd/
    pulumi-resource-linode/schema.json): ``region`` is "The region of the Linode Object Storage Bucket";
    ``cluster`` is deprecated: "a cluster value of `us-mia-1` can be translated to a region value of
    `us-mia`". A cluster id given as the region is the usual mistake: name the region it stands for."""
    cluster = OBJECT_STORAGE_CLUSTER.match(value)
    if cluster:
        return (
            f"{value!r} is an Object Storage cluster id, not a region: the bucket takes the region "
            f"{cluster['region']!r} (its S3 endpoint stays https://{value}.linodeobjects.com)"
        )
    if not OBJECT_STORAGE_REGION.match(value):
        return f"{value!r} is not a Linode region (expected something like 'us-ord')"
    return None


class SnapshotBucket(Settings):
    """Where Raft snapshots go: a bucket in ``region`` at any S3-compatible ``endpoint`` (Linode Object
    Storage, AWS S3, MinIO, ...; for Linode ``https://<cluster id>.linodeobjects.com``, e.g. ``us-ord-1``
    for ``us-ord``). ``create`` declares it as a Linode Object Storage bucket, which only an LKE stack
    does (unset: yes on LKE, no on an existing cluster, where the bucket must exist); a created bucket's
    ``region`` must be a Linode region (:func:`linode_region_problem`, checked in config.py)."""

    create: bool | None = None
    name: DnsLabel
    region: Annotated[str, AfterValidator(_s3_region)]
    endpoint: str = Field(pattern=r"^https://[^/]+$")

    @model_validator(mode="after")
    def _endpoint_in_region(self) -> SnapshotBucket:
        host = LINODE_OBJECTS_HOST.match(self.endpoint.removeprefix("https://"))
        # the region, or the cluster id itself (an existing bucket's signing region; a bucket the stack
        # creates takes the region, which config.py checks with linode_region_problem)
        if host and not (host["cluster"] == self.region or host["cluster"].startswith(f"{self.region}-")):
            raise ValueError(
                f"endpoint {self.endpoint!r} is Object Storage cluster {host['cluster']!r}, not one of region "
                f"{self.region!r}: a bucket is reached at its own region's endpoint"
            )
        return self


def creates_bucket(bucket: SnapshotBucket, platform: Platform) -> bool:
    """Whether the stack declares the bucket (``create``; unset: on LKE only)."""
    return bucket.create if bucket.create is not None else platform.linode


class SnapshotSettings(Settings):
    """``fedobs:vault.snapshots``: a CronJob's schedule and how many snapshots the bucket keeps."""

    enabled: bool = True
    schedule: Cron = "0 * * * *"
    retain: int = Field(default=24, ge=1, le=1000)
    bucket: SnapshotBucket


def snapshot_role(namespace: str) -> WorkloadRole:
    """The Vault role the CronJob logs in with: the snapshot SA only, read on the snapshot only."""
    return WorkloadRole(
        name=ROLE,
        service_account=SERVICE_ACCOUNT,
        namespace=namespace,
        policy_hcl=SNAPSHOT_POLICY_HCL,
        token_ttl_seconds=600,
        token_max_ttl_seconds=900,
    )


def _snapshot_env(settings: SnapshotSettings, cluster_name: str, namespace: str) -> list[dict[str, Any]]:
    """What programs.raft_snapshot reads: the Vault to log in to,
    the bucket, the S3 key pair."""
    return [
        {"name": "VAULT_ADDR", "value": in_cluster_address(namespace=namespace)},
        {"name": "VAULT_CACERT", "value": f"{TLS_DIR}/ca.crt"},
        {"name": "SNAPSHOT_VAULT_ROLE", "value": ROLE},
        {"name": "SNAPSHOT_VAULT_AUTH_PATH", "value": "kubernetes"},
        {"name": "SNAPSHOT_JWT_FILE", "value": f"{JWT_DIR}/token"},
        {"name": "SNAPSHOT_S3_ENDPOINT", "value": settings.bucket.endpoint},
        {"name": "SNAPSHOT_S3_REGION", "value": settings.bucket.region},
        {"name": "SNAPSHOT_S3_BUCKET", "value": settings.bucket.name},
        {"name": "SNAPSHOT_CLUSTER_NAME", "value": cluster_name},
        {"name": "SNAPSHOT_KEEP", "value": str(settings.retain)},
        {"name": "SNAPSHOT_TMP_DIR", "value": "/scratch"},
        {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "vault-snapshot-s3", "key": "access-key-id"}},
        },
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "vault-snapshot-s3", "key": "secret-access-key"}},
        },
    ]


def _snapshot_container(env: list[dict[str, Any]], image: str) -> dict[str, Any]:
    """The snapshot container: the programs image, restricted,
    its token, CA and scratch space mounted."""
    return {
        "name": "snapshot",
        "image": image,
        "command": ["python", "-m", "programs.raft_snapshot", "take"],
        "env": env,
        "securityContext": restricted_container(),
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "512Mi"},
        },
        "volumeMounts": [
            {"name": "vault-token", "mountPath": JWT_DIR, "readOnly": True},
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    }


def _snapshot_volumes() -> list[dict[str, Any]]:
    """A Vault-audience token, the server certificate's CA
    and a bounded scratch directory."""
    return [
        # A short-lived token for audience "vault" only, not the API token.
        {
            "name": "vault-token",
            "projected": {
                "sources": [{"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 600}}]
            },
        },
        {
            "name": "tls",
            "secret": {"secretName": "vault-server-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        },
        {"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}},
    ]


def snapshot_cronjob_spec(settings: SnapshotSettings, cluster_name: str, namespace: str, image: str) -> dict[str, Any]:
    """The snapshot CronJob's spec: on ``settings.schedule``,
    never overlapping, no API token."""
    return {
        "schedule": settings.schedule,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 600,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 5,
        "jobTemplate": {
            "spec": {
                "backoffLimit": 2,
                "activeDeadlineSeconds": 900,
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "vault-snapshot"}},
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        "automountServiceAccountToken": False,
                        "restartPolicy": "Never",
                        "securityContext": restricted_pod(),
                        "containers": [_snapshot_container(_snapshot_env(settings, cluster_name, namespace), image)],
                        "volumes": _snapshot_volumes(),
                    },
                },
            }
        },
    }


class RaftSnapshots(pulumi.ComponentResource):
    """Hourly (by default) Raft snapshots kept N deep in a bucket.

    Guarantees: the CronJob never overlaps itself, runs as a restricted non-root pod, logs in
    with its own role that can only read ``sys/storage/raft/snapshot``, uploads only verified
    snapshots and prunes only after a verified upload; a created bucket (LKE only) is protected.
    """

    def __init__(
        self,
        name: str,
        settings: SnapshotSettings,
        *,
        cluster_name: str,
        credentials: AccessKeyPair,
        platform: Platform,
        image: str,
        namespace: str = VAULT_NAMESPACE,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``image``: the programs image (``fedobs:programsImage``). The Kubernetes provider comes
        through ``opts``; the caller makes the component wait for the snapshot role in Vault
        (``depends_on``)."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        if creates_bucket(settings.bucket, platform):
            # Versioning needs Object Storage keys at apply time (pulumi-linode ``ObjectStorageBucket``:
            # "Requires access_key and secret_key"); the snapshot key pair is limited to this bucket, so
            # it cannot exist before it. The provider makes short-lived keys itself instead
            # (``obj_use_temp_keys``, terraform-provider-linode's temp-keys acceptance templates);
            # its API token comes from LINODE_TOKEN, as the default provider's does.
            object_storage = linode.Provider(f"{name}-object-storage", obj_use_temp_keys=True, opts=child)
            linode.ObjectStorageBucket(
                f"{name}-bucket",
                label=settings.bucket.name,
                region=settings.bucket.region,
                versioning=True,
                acl="private",
                opts=pulumi.ResourceOptions(parent=self, provider=object_storage, protect=True, retain_on_delete=True),
            )
        key_pair = k8s.core.v1.Secret(
            f"{name}-s3-credentials",
            metadata={"name": "vault-snapshot-s3", "namespace": namespace},
            string_data={
                "access-key-id": pulumi.Output.secret(credentials.access_key_id),
                "secret-access-key": pulumi.Output.secret(credentials.secret_access_key),
            },
            opts=child,
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={"name": SERVICE_ACCOUNT, "namespace": namespace},
            automount_service_account_token=False,
            opts=child,
        )
        k8s.batch.v1.CronJob(
            f"{name}-cronjob",
            metadata={"name": "vault-raft-snapshot", "namespace": namespace},
            spec=snapshot_cronjob_spec(settings, cluster_name, namespace, image),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[key_pair, account]),
        )
        self.register_outputs(
            {"bucket": settings.bucket.name, "schedule": settings.schedule, "retain": settings.retain}
        )
