"""Kubernetes auth on a cluster's own Vault, with roles bound to exact service accounts."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_vault as vault

from components.vault_names import KUBERNETES_AUTH_MOUNT

TYPE_TOKEN = "fedobs:vault:KubernetesAuth"
IN_CLUSTER_API = "https://kubernetes.default.svc"


@dataclass(frozen=True)
class WorkloadRole:
    """A workload that logs in to Vault as one ServiceAccount in one namespace.

    ``policy_hcl`` is the role's own policy, written by whoever declares the role; it is stored
    as ``<name>`` and is the only policy the role's tokens get besides Vault's ``default``.
    """

    name: str
    service_account: str
    namespace: str
    policy_hcl: str
    token_ttl_seconds: int = 3600
    token_max_ttl_seconds: int = 14400
    audience: str = "vault"


class KubernetesAuth(pulumi.ComponentResource):
    """Kubernetes auth for the local cluster, and one role + policy per declared workload.

    Guarantees: Vault validates tokens against the in-cluster API with its own service account
    (TokenReview through ``system:auth-delegator``); every role is bound to exactly one
    ServiceAccount name and one namespace (never ``*``) and to an audience.
    """

    def __init__(self, name: str, roles: tuple[WorkloadRole, ...], opts: pulumi.ResourceOptions | None = None) -> None:
        """The Vault provider comes through ``opts``; children inherit it."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        for role in roles:
            for field_name, value in (("service_account", role.service_account), ("namespace", role.namespace)):
                if not value or "*" in value:
                    raise ValueError(f"role {role.name}: {field_name} must name exactly one, got {value!r}")
        vault_opts = pulumi.ResourceOptions(parent=self)
        backend = vault.AuthBackend(
            f"{name}-backend",
            type="kubernetes",
            path=KUBERNETES_AUTH_MOUNT,
            description="Service accounts of this cluster",
            opts=vault_opts,
        )
        vault.kubernetes.AuthBackendConfig(
            f"{name}-config",
            backend=backend.path,
            kubernetes_host=IN_CLUSTER_API,
            disable_local_ca_jwt=False,
            opts=vault_opts,
        )
        self.role_names: dict[str, pulumi.Output[str]] = {}
        for role in roles:
            policy = vault.Policy(f"{name}-{role.name}-policy", name=role.name, policy=role.policy_hcl, opts=vault_opts)
            created = vault.kubernetes.AuthBackendRole(
                f"{name}-{role.name}-role",
                backend=backend.path,
                role_name=role.name,
                bound_service_account_names=[role.service_account],
                bound_service_account_namespaces=[role.namespace],
                audience=role.audience,
                token_policies=[policy.name],
                token_ttl=role.token_ttl_seconds,
                token_max_ttl=role.token_max_ttl_seconds,
                opts=vault_opts,  # a role needs the mount, not the backend's config
            )
            self.role_names[role.name] = created.role_name
        self.register_outputs({"mount_path": backend.path, "roles": self.role_names})
