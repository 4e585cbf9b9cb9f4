"""Vault Secrets Operator: Vault KV data turned into Kubernetes Secrets, per target namespace."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.kubernetes_auth import WorkloadRole
from components.pod_security import restricted_namespace
from components.vault_policies import kv_read, render_policy

TYPE_TOKEN = "fedobs:distribution:VaultSecretsOperator"
OPERATOR_NAMESPACE = "vault-secrets-operator"
SERVICE_ACCOUNT = "vso-auth"
REFRESH_AFTER = "60s"


@dataclass(frozen=True)
class RestartTarget:
    kind: str
    name: str


@dataclass(frozen=True)
class SecretSync:
    """Sync Vault KV ``kv_path`` into Secret ``secret_name`` of ``namespace``; restart ``restart``."""

    namespace: str
    secret_name: str
    kv_path: str
    restart: tuple[RestartTarget, ...] = ()
    secret_type: str = "kubernetes.io/tls"


@dataclass(frozen=True)
class VsoArgs:
    provider: k8s.Provider
    syncs: tuple[SecretSync, ...]
    vault_address: str
    vault_tls_server_name: str
    vault_ca_cert: pulumi.Input[str]
    kv_mount: str = "kv"
    auth_mount: str = "kubernetes"
    use_vault_auth_global: bool = False


def role_name(namespace: str) -> str:
    return f"vso-{namespace}"


def namespaces(syncs: Iterable[SecretSync]) -> list[str]:
    return sorted({s.namespace for s in syncs})


def vso_roles(syncs: tuple[SecretSync, ...], kv_mount: str) -> list[WorkloadRole]:
    """One Vault role per target namespace: its ``vso-auth`` account reads exactly its synced paths."""
    roles = []
    for namespace in namespaces(syncs):
        paths = sorted({s.kv_path for s in syncs if s.namespace == namespace})
        name = role_name(namespace)
        roles.append(
            WorkloadRole(
                name=name,
                service_account=SERVICE_ACCOUNT,
                namespace=namespace,
                policy_hcl=render_policy(name, [g for p in paths for g in kv_read(kv_mount, p)]),
                token_ttl_seconds=600,
                token_max_ttl_seconds=1200,
            )
        )
    return roles


def operator_values() -> dict[str, Any]:
    """Chart values (checked against the chart's values.yaml in the tests)."""
    return {
        "controller": {
            "replicas": 2,
            "manager": {
                "image": {"repository": "hashicorp/vault-secrets-operator", "tag": versions.VSO_VERSION},
                "resources": {
                    "requests": {"cpu": "50m", "memory": "128Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"},
                },
            },
            "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
        },
        # No default connection or auth method: every namespace gets its own, bound to its own role.
        "defaultVaultConnection": {"enabled": False},
        "defaultAuthMethod": {"enabled": False},
    }


def static_secret_spec(sync: SecretSync, kv_mount: str) -> dict[str, Any]:
    return {
        "vaultAuthRef": "vault",
        "type": "kv-v2",
        "mount": kv_mount,
        "path": sync.kv_path,
        "refreshAfter": REFRESH_AFTER,
        "hmacSecretData": True,
        "destination": {"name": sync.secret_name, "create": True, "overwrite": False, "type": sync.secret_type},
        "rolloutRestartTargets": [{"kind": t.kind, "name": t.name} for t in sync.restart],
    }


class VaultSecretsOperator(pulumi.ComponentResource):
    """VSO at the pinned version and, per target namespace, everything it needs there.

    Guarantees: VaultConnection and VaultAuth live in each namespace (VSO forbids cross-namespace
    references to them), the connection verifies Vault's TLS with the Vault CA (never
    ``skipTLSVerify``), each namespace's ``vso-auth`` account logs in to its own role that may read
    exactly its synced paths, and every VaultStaticSecret refreshes every 60 s, checks drift by HMAC
    and restarts the workloads it names.
    """

    def __init__(self, name: str, args: VsoArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        operator_ns = restricted_namespace(f"{name}-namespace", OPERATOR_NAMESPACE, k8s_opts)
        release = k8s.helm.v3.Release(
            f"{name}-release",
            name="vault-secrets-operator",
            chart="vault-secrets-operator",
            version=versions.VSO_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=versions.VAULT_CHART_REPO),
            namespace=OPERATOR_NAMESPACE,
            values=operator_values(),
            atomic=True,
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[operator_ns])),
        )
        after = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[release]))

        created: dict[str, pulumi.Resource] = {OPERATOR_NAMESPACE: operator_ns}

        def custom(
            resource: str, kind: str, namespace: str, object_name: str, spec: dict[str, Any]
        ) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(
                f"{name}-{resource}",
                api_version="secrets.hashicorp.com/v1beta1",
                kind=kind,
                metadata={"name": object_name, "namespace": namespace},
                spec=spec,
                opts=pulumi.ResourceOptions.merge(after, pulumi.ResourceOptions(depends_on=[created[namespace]])),
            )

        kubernetes_auth = {"serviceAccount": SERVICE_ACCOUNT, "audiences": ["vault"], "tokenExpirationSeconds": 600}
        if args.use_vault_auth_global:
            custom(
                "auth-global",
                "VaultAuthGlobal",
                OPERATOR_NAMESPACE,
                "default",
                {
                    "allowedNamespaces": namespaces(args.syncs),
                    "defaultAuthMethod": "kubernetes",
                    "kubernetes": {"mount": args.auth_mount, **kubernetes_auth},
                },
            )
        for namespace in namespaces(args.syncs):
            # The target namespaces are declared here; the workloads in them use them as they are.
            target = restricted_namespace(f"{name}-{namespace}", namespace, k8s_opts)
            created[namespace] = target
            in_target = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[target]))
            k8s.core.v1.ServiceAccount(
                f"{name}-{namespace}-sa",
                metadata={"name": SERVICE_ACCOUNT, "namespace": namespace},
                automount_service_account_token=False,
                opts=in_target,
            )
            k8s.core.v1.Secret(
                f"{name}-{namespace}-vault-ca",
                metadata={"name": "vault-ca", "namespace": namespace},
                string_data={"ca.crt": args.vault_ca_cert},
                opts=in_target,
            )
            custom(
                f"{namespace}-connection",
                "VaultConnection",
                namespace,
                "vault",
                {
                    "address": args.vault_address,
                    "tlsServerName": args.vault_tls_server_name,
                    "caCertSecretRef": "vault-ca",
                    "skipTLSVerify": False,
                },
            )
            auth: dict[str, Any] = {
                "vaultConnectionRef": "vault",
                "method": "kubernetes",
                "mount": args.auth_mount,
                "kubernetes": {"role": role_name(namespace), **kubernetes_auth},
            }
            if args.use_vault_auth_global:
                auth = {
                    "vaultConnectionRef": "vault",
                    "vaultAuthGlobalRef": {"name": "default", "namespace": OPERATOR_NAMESPACE, "allowDefault": False},
                    "kubernetes": {"role": role_name(namespace), "serviceAccount": SERVICE_ACCOUNT},
                }
            custom(f"{namespace}-auth", "VaultAuth", namespace, "vault", auth)
        for sync in args.syncs:
            custom(
                f"{sync.namespace}-{sync.secret_name}",
                "VaultStaticSecret",
                sync.namespace,
                sync.secret_name,
                static_secret_spec(sync, args.kv_mount),
            )
        #: The target namespaces this component declares, by name.
        self.target_namespaces = {ns: created[ns] for ns in namespaces(args.syncs)}
        self.register_outputs({"namespaces": namespaces(args.syncs), "version": versions.VSO_VERSION})
