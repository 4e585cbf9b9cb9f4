"""On the hub: a CronJob watching each edge's transit-unseal token, so its TTL is seen from outside.

The token is renewed only by the edge Vault's own seal; an expired one shows only when that edge
restarts and stays sealed. This CronJob (``programs.transit_watch``) reports every edge's remaining
TTL and last renewal, and fails (a failed Job: the alert) naming each edge whose token is missing or
below ``MIN_TTL_SECONDS``. An operator runs the same check by hand with
``kubectl -n vault create job --from=cronjob/transit-watch transit-watch-now`` (docs/security.md).
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes_auth import WorkloadRole
from components.pod_security import restricted_container, restricted_pod
from components.vault_names import (
    KUBERNETES_AUTH_MOUNT,
    TRANSIT_UNSEAL_PREFIX,
    TRANSIT_WATCH_ROLE,
    VAULT_NAMESPACE,
    in_cluster_address,
)
from components.vault_server_config import TLS_DIR
from programs.transit_watch.watch import DEFAULT_MIN_TTL, watch_policy_hcl

TYPE_TOKEN = "fedobs:vault:TransitWatch"
SERVICE_ACCOUNT = "transit-watch"
CRONJOB = "transit-watch"
JWT_DIR = "/var/run/secrets/vault"
#: Hourly: one login and a few requests per edge; a stopped renewal is seen within the hour.
SCHEDULE = "17 * * * *"
#: What a token must have left (the program's default: 7 days, see ``programs.transit_watch.watch``).
MIN_TTL_SECONDS = DEFAULT_MIN_TTL


def transit_watch_role(namespace: str, edges: tuple[str, ...]) -> WorkloadRole:
    """The Vault role the CronJob logs in with: its ServiceAccount only, the watch policy only."""
    return WorkloadRole(
        name=TRANSIT_WATCH_ROLE,
        service_account=SERVICE_ACCOUNT,
        namespace=namespace,
        policy_hcl=watch_policy_hcl(TRANSIT_UNSEAL_PREFIX, edges),
        token_ttl_seconds=300,
        token_max_ttl_seconds=600,
    )


def _watch_container(edges: tuple[str, ...], namespace: str, image: str) -> dict[str, Any]:
    env = {
        "VAULT_ADDR": in_cluster_address(namespace=namespace),
        "VAULT_CACERT": f"{TLS_DIR}/ca.crt",
        "TRANSIT_WATCH_VAULT_ROLE": TRANSIT_WATCH_ROLE,
        "TRANSIT_WATCH_VAULT_AUTH_PATH": KUBERNETES_AUTH_MOUNT,
        "TRANSIT_WATCH_JWT_FILE": f"{JWT_DIR}/token",
        "TRANSIT_WATCH_EDGES": ",".join(edges),
        "TRANSIT_WATCH_TOKEN_ROLE_PREFIX": TRANSIT_UNSEAL_PREFIX,
        "TRANSIT_WATCH_MIN_TTL": str(MIN_TTL_SECONDS),
    }
    return {
        "name": "watch",
        "image": image,
        "command": ["python", "-m", "programs.transit_watch"],
        "env": [{"name": name, "value": value} for name, value in env.items()],
        "securityContext": restricted_container(),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
        "volumeMounts": [
            {"name": "vault-token", "mountPath": JWT_DIR, "readOnly": True},
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
        ],
    }


def transit_watch_cronjob_spec(edges: tuple[str, ...], namespace: str, image: str) -> dict[str, Any]:
    """Hourly, never overlapping, no API token; a run that finds a problem fails its Job."""
    return {
        "schedule": SCHEDULE,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 600,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {
            "spec": {
                # one retry rides out a blip of the hub Vault; a real finding fails both tries
                "backoffLimit": 1,
                "activeDeadlineSeconds": 300,
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": CRONJOB}},
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        "automountServiceAccountToken": False,
                        "restartPolicy": "Never",
                        "securityContext": restricted_pod(),
                        "containers": [_watch_container(edges, namespace, image)],
                        "volumes": [
                            # a short-lived token for audience "vault" only, not the API token
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
                        ],
                    },
                },
            }
        },
    }


class TransitWatch(pulumi.ComponentResource):
    """The hub's hourly check of every edge's transit-unseal token.

    Guarantees: one CronJob in the Vault namespace, restricted, never overlapping, running
    ``programs.transit_watch`` as its own ServiceAccount (no Kubernetes API token) with the role of
    :func:`transit_watch_role`, which may list the token leases of exactly the configured edges'
    token roles and look a lease up, nothing else; its Job fails naming every edge whose token is
    missing or has less than ``MIN_TTL_SECONDS`` left.
    """

    def __init__(
        self,
        name: str,
        edges: tuple[str, ...],
        *,
        image: str,
        namespace: str = VAULT_NAMESPACE,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``edges``: the edges served (not the retired ones). The Kubernetes provider comes through
        ``opts``; the caller makes the component wait for the role in Vault (``depends_on``)."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={"name": SERVICE_ACCOUNT, "namespace": namespace},
            automount_service_account_token=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        k8s.batch.v1.CronJob(
            f"{name}-cronjob",
            metadata={"name": CRONJOB, "namespace": namespace},
            spec=transit_watch_cronjob_spec(edges, namespace, image),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[account]),
        )
        self.register_outputs({"edges": list(edges), "schedule": SCHEDULE, "minTtlSeconds": MIN_TTL_SECONDS})
