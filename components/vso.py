"""Vault Secrets Operator: Vault KV data and dynamic credentials turned into Kubernetes Secrets, per
target namespace."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pulumi
import pulumi_kubernetes as k8s
from pydantic import AfterValidator

from components import versions
from components.cert_sync_cadence import CertSyncInterval
from components.kubernetes_auth import WorkloadRole
from components.pod_security import restricted_namespace
from components.settings import CONFIG_NAMESPACE, Cron, DnsLabel, RuleProblem, Settings, pattern_check
from components.vault_names import KUBERNETES_AUTH_MOUNT, VSO_ROLE_PREFIX, in_cluster_address, in_cluster_host
from components.vault_policies import Grant, kv_read, render_policy

TYPE_TOKEN = "fedobs:distribution:VaultSecretsOperator"
OPERATOR_NAMESPACE = "vault-secrets-operator"
RELEASE_NAME = "vault-secrets-operator"
#: The ServiceAccount VSO's controller runs as, and so the identity that writes every Secret VSO
#: syncs: chart v1.4.1 (commit 9b840a5a), chart/templates/deployment.yaml names it
#: ``{{ include "vso.chart.fullname" . }}-controller-manager`` (ServiceAccount and the Deployment's
#: ``serviceAccountName``), and ``vso.chart.fullname`` (chart/templates/_helpers.tpl) is the release
#: name when it contains the chart's name, as ``vault-secrets-operator`` does (no ``fullnameOverride``
#: or ``nameOverride`` is set, :func:`operator_values`).
CONTROLLER_SERVICE_ACCOUNT = f"{RELEASE_NAME}-controller-manager"
CONTROLLER_USERNAME = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{CONTROLLER_SERVICE_ACCOUNT}"
#: The VaultAuth of each target namespace, and every VaultStaticSecret's ``vaultAuthRef``.
VAULT_AUTH = "vault"
SERVICE_ACCOUNT = "vso-auth"
REFRESH_AFTER = "60s"
#: How each namespace's ``vso-auth`` account logs in (a short-lived token for the ``vault`` audience).
KUBERNETES_LOGIN: dict[str, Any] = {
    "serviceAccount": SERVICE_ACCOUNT,
    "audiences": ["vault"],
    "tokenExpirationSeconds": 600,
}


SyncKvPath = Annotated[
    str,
    AfterValidator(
        pattern_check(re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$"), "otel/otel-client-tls")
    ),
]
WorkloadKind = Literal["Deployment", "DaemonSet", "StatefulSet"]


class RestartTargetSettings(Settings):
    kind: WorkloadKind
    name: DnsLabel


class SyncSettings(Settings):
    """Sync one KV v2 path into one Secret and restart the workloads that mount it."""

    namespace: DnsLabel
    secret_name: DnsLabel
    kv_path: SyncKvPath
    secret_type: Literal["kubernetes.io/tls", "Opaque"] = "kubernetes.io/tls"
    restart: tuple[RestartTargetSettings, ...] = ()


class WorkloadRef(Settings):
    kind: WorkloadKind
    namespace: DnsLabel
    name: DnsLabel


class DistributionSettings(Settings):
    """``fedobs:distribution``: which Vault paths VSO turns into which Secrets where, and the
    cert-sync cadence that fills those paths."""

    vault_auth_global: bool = False
    #: How often cert-sync copies certificates into Vault (hub) or from the hub (edge).
    cert_sync_schedule: Cron = "* * * * *"
    #: Seconds between the sync passes of one cert-sync run, through the minute after each scheduled
    #: run (20: three passes; 60: one). See components/cert_sync_cadence.py and docs/secret-flow.md.
    cert_sync_interval: CertSyncInterval = 20
    #: Syncs of the stack's own workloads; the collector's are added by the stack (collectors.py).
    syncs: tuple[SyncSettings, ...] = ()
    #: The workloads of this cluster a sync may restart (a restart target must be one of them).
    workloads: tuple[WorkloadRef, ...] = ()

    def restart_target_problems(self, own_workloads: Iterable[WorkloadRef]) -> list[RuleProblem]:
        """A sync may only restart a workload the stack declares, in the sync's own namespace."""
        known = {(w.kind, w.namespace, w.name) for w in (*self.workloads, *own_workloads)}
        return [
            RuleProblem(
                f"distribution.syncs[{i}].restart[{j}]",
                f"{target.kind} {sync.namespace}/{target.name} is not a workload of this stack "
                f"({CONFIG_NAMESPACE}:distribution.workloads or an enabled {CONFIG_NAMESPACE}:collector)",
                (f"distribution.syncs[{i}]", "distribution.workloads", "collector"),
            )
            for i, sync in enumerate(self.syncs)
            for j, target in enumerate(sync.restart)
            if (target.kind, sync.namespace, target.name) not in known
        ]

    def reserved_secret_problems(self, own_syncs: Iterable[SyncSettings]) -> list[RuleProblem]:
        """A configured sync may not replace one the stack derives itself (the collector's)."""
        reserved = {(s.namespace, s.secret_name) for s in own_syncs}
        return [
            RuleProblem(
                f"distribution.syncs[{i}]",
                f"Secret {sync.namespace}/{sync.secret_name} is synced by the stack itself for its collector",
                (f"distribution.syncs[{i}]", "collector"),
            )
            for i, sync in enumerate(self.syncs)
            if (sync.namespace, sync.secret_name) in reserved
        ]


def role_name(namespace: str) -> str:
    return f"{VSO_ROLE_PREFIX}{namespace}"


def namespaces(syncs: Iterable[SyncSettings]) -> list[str]:
    return sorted({s.namespace for s in syncs})


def vso_roles(syncs: tuple[SyncSettings, ...], kv_mount: str) -> list[WorkloadRole]:
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


def static_secret_spec(sync: SyncSettings, kv_mount: str) -> dict[str, Any]:
    return {
        "vaultAuthRef": VAULT_AUTH,
        "type": "kv-v2",
        "mount": kv_mount,
        "path": sync.kv_path,
        "refreshAfter": REFRESH_AFTER,
        "hmacSecretData": True,
        "destination": {"name": sync.secret_name, "create": True, "overwrite": False, "type": sync.secret_type},
        "rolloutRestartTargets": [{"kind": t.kind, "name": t.name} for t in sync.restart],
    }


#: When VSO renews a dynamic secret's lease (or, for a lease that cannot be renewed, such as STS
#: credentials, fetches new ones): at this percent of the lease duration, plus VSO's jitter. It is
#: VSO's own default (api/v1beta1/vaultdynamicsecret_types.go, v1.4.1), stated so it is reviewed.
RENEWAL_PERCENT = 67


@dataclass(frozen=True)
class DynamicSync:
    """One VaultDynamicSecret: credentials read from ``<mount>/<path>`` and written, through
    ``templates`` (Secret key -> Go template text over ``.Secrets``, VSO's name for Vault's answer),
    into the Opaque Secret ``secret_name`` of ``namespace`` with nothing else in it."""

    namespace: str
    secret_name: str
    mount: str
    path: str
    templates: Mapping[str, str]


def dynamic_secret_spec(sync: DynamicSync) -> dict[str, Any]:
    """The VaultDynamicSecret spec (hashicorp/vault-secrets-operator v1.4.1, commit 9b840a5a):

    - ``renewalPercent``: VSO renews the lease at that share of its duration
      (controllers/vaultdynamicsecret_controller.go ``renewLease``: ``sys/leases/renew`` with the
      lease's own duration as increment); when Vault truncates the renewal at the role's max TTL, or the
      lease is not renewable, VSO reads new credentials and rewrites the Secret.
    - ``revoke: false``: VSO revokes with ``sys/leases/revoke`` on deletion (``revokeLease``), which
      needs that capability in the role's policy, and ``sys/leases/revoke`` takes any lease ID: the
      role does not get it. The credentials end with VSO's token (Vault revokes a token's leases with
      it) or at their max TTL.
    - ``allowStaticCreds: false``: these are dynamic roles; ``refreshAfter`` is left out: VSO uses it
      only when a secret has no lease duration (``getRotationDuration``).
    - ``transformation``: ``excludes: [".*"]`` and ``excludeRaw`` drop Vault's own field names and the
      ``_raw`` answer (helpers/secrets.go ``makeK8sData``); only the templates' keys remain
      (helpers/template.go ``renderTemplates``, templates/template.go: Go text/template with sprig).
    """
    return {
        "vaultAuthRef": VAULT_AUTH,
        "mount": sync.mount,
        "path": sync.path,
        "renewalPercent": RENEWAL_PERCENT,
        "revoke": False,
        "allowStaticCreds": False,
        "destination": {
            "name": sync.secret_name,
            "create": True,
            "overwrite": False,
            "type": "Opaque",
            "transformation": {
                "excludeRaw": True,
                "excludes": [".*"],
                "templates": {key: {"text": text} for key, text in sync.templates.items()},
            },
        },
    }


def dynamic_vso_role(namespace: str, grants: Iterable[Grant], *, token_ttl: int, token_max_ttl: int) -> WorkloadRole:
    """The role VSO logs in to for ``namespace``'s dynamic secrets: it may read exactly ``grants``
    (the declared ``creds`` paths) and, through Vault's ``default`` policy, renew leases
    (``sys/leases/renew``). Its token lifetimes are the consumer's: Vault revokes the credentials a
    token read when that token ends, and VSO reads new ones after each login."""
    name = role_name(namespace)
    return WorkloadRole(
        name=name,
        service_account=SERVICE_ACCOUNT,
        namespace=namespace,
        policy_hcl=render_policy(name, grants),
        token_ttl_seconds=token_ttl,
        token_max_ttl_seconds=token_max_ttl,
    )


def connection_spec() -> dict[str, Any]:
    """A namespace's VaultConnection: Vault's in-cluster address, verified with the Vault CA."""
    return {
        "address": in_cluster_address(),
        "tlsServerName": in_cluster_host(),
        "caCertSecretRef": "vault-ca",
        "skipTLSVerify": False,
    }


def auth_spec(namespace: str, *, global_auth: bool) -> dict[str, Any]:
    """A namespace's VaultAuth: its ``vso-auth`` account logs in to ``vso-<namespace>``."""
    if global_auth:
        return {
            "vaultConnectionRef": "vault",
            "vaultAuthGlobalRef": {"name": "default", "namespace": OPERATOR_NAMESPACE, "allowDefault": False},
            "kubernetes": {"role": role_name(namespace), "serviceAccount": SERVICE_ACCOUNT},
        }
    return {
        "vaultConnectionRef": "vault",
        "method": "kubernetes",
        "mount": KUBERNETES_AUTH_MOUNT,
        "kubernetes": {"role": role_name(namespace), **KUBERNETES_LOGIN},
    }


class VaultSecretsOperator(pulumi.ComponentResource):
    """VSO at the pinned version and, per target namespace, everything it needs there.

    Guarantees: VaultConnection and VaultAuth live in each namespace (VSO forbids cross-namespace
    references to them), the connection verifies Vault's TLS with the Vault CA (never
    ``skipTLSVerify``), each namespace's ``vso-auth`` account logs in to its own role that may read
    exactly its synced paths, and every VaultStaticSecret refreshes every 60 s, checks drift by HMAC
    and restarts the workloads it names.
    """

    def __init__(
        self,
        name: str,
        settings: DistributionSettings,
        *,
        syncs: tuple[SyncSettings, ...],
        vault_ca_cert: pulumi.Input[str],
        kv_mount: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``syncs``: every sync of the stack (the configured ones and the collector's own). The
        Kubernetes provider comes through ``opts``; VSO reaches Vault at its in-cluster address."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        self._prefix = name
        self._global = settings.vault_auth_global
        operator_ns = restricted_namespace(f"{name}-namespace", OPERATOR_NAMESPACE, pulumi.ResourceOptions(parent=self))
        release = k8s.helm.v3.Release(
            f"{name}-release",
            name=RELEASE_NAME,
            chart="vault-secrets-operator",
            version=versions.VSO_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=versions.VAULT_CHART_REPO),
            namespace=OPERATOR_NAMESPACE,
            values=operator_values(),
            atomic=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[operator_ns]),
        )
        self._after_release = pulumi.ResourceOptions(parent=self, depends_on=[release])
        self._created: dict[str, pulumi.Resource] = {OPERATOR_NAMESPACE: operator_ns}
        target_namespaces = namespaces(syncs)
        if self._global:
            self._custom(
                "auth-global",
                "VaultAuthGlobal",
                OPERATOR_NAMESPACE,
                "default",
                {
                    "allowedNamespaces": target_namespaces,
                    "defaultAuthMethod": "kubernetes",
                    "kubernetes": {"mount": KUBERNETES_AUTH_MOUNT, **KUBERNETES_LOGIN},
                },
            )
        for namespace in target_namespaces:
            self._target_namespace(namespace, vault_ca_cert)
        for sync in syncs:
            self._custom(
                f"{sync.namespace}-{sync.secret_name}",
                "VaultStaticSecret",
                sync.namespace,
                sync.secret_name,
                static_secret_spec(sync, kv_mount),
            )
        #: The target namespaces this component declares, by name.
        self.target_namespaces = {ns: self._created[ns] for ns in target_namespaces}
        self.register_outputs({"namespaces": target_namespaces, "version": versions.VSO_VERSION})

    def _custom(
        self, resource: str, kind: str, namespace: str, object_name: str, spec: dict[str, Any]
    ) -> k8s.apiextensions.CustomResource:
        """A VSO custom resource, after the operator's CRDs and its namespace."""
        return k8s.apiextensions.CustomResource(
            f"{self._prefix}-{resource}",
            api_version="secrets.hashicorp.com/v1beta1",
            kind=kind,
            metadata={"name": object_name, "namespace": namespace},
            spec=spec,
            opts=pulumi.ResourceOptions.merge(
                self._after_release, pulumi.ResourceOptions(depends_on=[self._created[namespace]])
            ),
        )

    def _target_namespace(self, namespace: str, vault_ca_cert: pulumi.Input[str]) -> None:
        """The namespace, its ``vso-auth`` account, the Vault CA, VaultConnection and VaultAuth."""
        name = self._prefix
        # The target namespaces are declared here; the workloads in them use them as they are.
        target = restricted_namespace(f"{name}-{namespace}", namespace, pulumi.ResourceOptions(parent=self))
        self._created[namespace] = target
        in_target = pulumi.ResourceOptions(parent=self, depends_on=[target])
        k8s.core.v1.ServiceAccount(
            f"{name}-{namespace}-sa",
            metadata={"name": SERVICE_ACCOUNT, "namespace": namespace},
            automount_service_account_token=False,
            opts=in_target,
        )
        k8s.core.v1.Secret(
            f"{name}-{namespace}-vault-ca",
            metadata={"name": "vault-ca", "namespace": namespace},
            string_data={"ca.crt": vault_ca_cert},
            opts=in_target,
        )
        self._custom(f"{namespace}-connection", "VaultConnection", namespace, "vault", connection_spec())
        self._custom(
            f"{namespace}-auth", "VaultAuth", namespace, VAULT_AUTH, auth_spec(namespace, global_auth=self._global)
        )
