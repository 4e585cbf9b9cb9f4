"""Scheduled Raft snapshots of a cluster's Vault to S3-compatible object storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_linode as linode

from components import versions
from components.kubernetes_auth import WorkloadRole
from components.pod_security import restricted_container, restricted_pod
from components.vault_server_config import TLS_DIR
from programs.raft_snapshot.snapshot import SNAPSHOT_POLICY_HCL

TYPE_TOKEN = "fedobs:vault:RaftSnapshots"
SERVICE_ACCOUNT = "vault-snapshot"
ROLE = "raft-snapshot"
JWT_DIR = "/var/run/secrets/vault"


def in_cluster_vault_address(release: str, namespace: str) -> str:
    """Vault's API as seen from inside the cluster: the active node's service."""
    return f"https://{release}-active.{namespace}.svc:8200"


@dataclass(frozen=True)
class RaftSnapshotsArgs:
    provider: k8s.Provider
    namespace: str
    release: str
    cluster_name: str
    schedule: str
    retain: int
    bucket_name: str
    bucket_region: str
    bucket_endpoint: str
    create_bucket: bool
    access_key_id: pulumi.Input[str]
    secret_access_key: pulumi.Input[str]
    vault_ready: pulumi.Resource


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


def snapshot_cronjob_spec(args: RaftSnapshotsArgs) -> dict[str, Any]:
    env = [
        {"name": "VAULT_ADDR", "value": in_cluster_vault_address(args.release, args.namespace)},
        {"name": "VAULT_CACERT", "value": f"{TLS_DIR}/ca.crt"},
        {"name": "SNAPSHOT_VAULT_ROLE", "value": ROLE},
        {"name": "SNAPSHOT_VAULT_AUTH_PATH", "value": "kubernetes"},
        {"name": "SNAPSHOT_JWT_FILE", "value": f"{JWT_DIR}/token"},
        {"name": "SNAPSHOT_S3_ENDPOINT", "value": args.bucket_endpoint},
        {"name": "SNAPSHOT_S3_REGION", "value": args.bucket_region},
        {"name": "SNAPSHOT_S3_BUCKET", "value": args.bucket_name},
        {"name": "SNAPSHOT_CLUSTER_NAME", "value": args.cluster_name},
        {"name": "SNAPSHOT_KEEP", "value": str(args.retain)},
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
    return {
        "schedule": args.schedule,
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
                        "containers": [
                            {
                                "name": "snapshot",
                                "image": versions.PROGRAMS_IMAGE,
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
                        ],
                        "volumes": [
                            # A short-lived token for audience "vault" only, not the API token.
                            {
                                "name": "vault-token",
                                "projected": {
                                    "sources": [
                                        {
                                            "serviceAccountToken": {
                                                "path": "token",
                                                "audience": "vault",
                                                "expirationSeconds": 600,
                                            }
                                        }
                                    ]
                                },
                            },
                            {
                                "name": "tls",
                                "secret": {
                                    "secretName": "vault-server-tls",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                },
                            },
                            {"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}},
                        ],
                    },
                },
            }
        },
    }


class RaftSnapshots(pulumi.ComponentResource):
    """Hourly (by default) Raft snapshots kept N deep in a bucket.

    Guarantees: the CronJob never overlaps itself, runs as a restricted non-root pod, logs in
    with its own role that can only read ``sys/storage/raft/snapshot``, uploads only verified
    snapshots and prunes only after a verified upload; a created bucket is protected.
    """

    def __init__(self, name: str, args: RaftSnapshotsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        if args.create_bucket:
            linode.ObjectStorageBucket(
                f"{name}-bucket",
                label=args.bucket_name,
                region=args.bucket_region,
                versioning=True,
                acl="private",
                opts=pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True),
            )
        credentials = k8s.core.v1.Secret(
            f"{name}-s3-credentials",
            metadata={"name": "vault-snapshot-s3", "namespace": args.namespace},
            string_data={
                "access-key-id": pulumi.Output.secret(args.access_key_id),
                "secret-access-key": pulumi.Output.secret(args.secret_access_key),
            },
            opts=k8s_opts,
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={"name": SERVICE_ACCOUNT, "namespace": args.namespace},
            automount_service_account_token=False,
            opts=k8s_opts,
        )
        k8s.batch.v1.CronJob(
            f"{name}-cronjob",
            metadata={"name": "vault-raft-snapshot", "namespace": args.namespace},
            spec=snapshot_cronjob_spec(args),
            opts=pulumi.ResourceOptions.merge(
                k8s_opts, pulumi.ResourceOptions(depends_on=[credentials, account, args.vault_ready])
            ),
        )
        self.register_outputs({"bucket": args.bucket_name, "schedule": args.schedule, "retain": args.retain})
