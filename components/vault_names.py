"""Names inside and around one cluster's Vault, defined once: mounts, the release, its addresses.

Every component, program command line and doc generator that names a Vault mount or the in-cluster
Vault address takes it from here.
"""

from __future__ import annotations

#: The Helm release and namespace of Vault in every cluster.
VAULT_RELEASE = "vault"
VAULT_NAMESPACE = "vault"
#: Vault's API port (the chart's ``server.service.port`` default, and every listener's port).
API_PORT = 8200
#: Vault's cluster (Raft and request forwarding) port.
CLUSTER_PORT = 8201
#: The listener only the external LoadBalancer (a NodeBalancer with PROXY protocol v2) reaches; not
#: 8202, which the chart's StatefulSet already names ``https-rep`` (vault-helm v0.34.1
#: ``templates/server-statefulset.yaml``, the container's ``ports``). In-cluster clients use ``API_PORT``.
EXTERNAL_API_PORT = 8203

#: Default KV v2 mount for platform secrets (``fedobs:vaultConfig.kv.path`` may change it).
DEFAULT_KV_MOUNT = "kv"
#: The hub's transit mount holding one auto-unseal key per edge.
TRANSIT_MOUNT = "transit"
#: The Kubernetes auth mount every workload role lives in.
KUBERNETES_AUTH_MOUNT = "kubernetes"
#: The userpass mount of the identity Pulumi uses inside Vault.
ADMIN_AUTH_MOUNT = "userpass-pulumi"
#: The hub's JWT mount where Pulumi's own identity logs in from CI (``components.admin_identity``), and
#: its one role there.
ADMIN_JWT_MOUNT = "jwt-pulumi"
ADMIN_JWT_ROLE = "pulumi"
#: Where the Vault provider reads a deploy JWT (terraform-provider-vault ``internal/provider/auth_jwt.go``:
#: the ``jwt`` field of ``auth_login_jwt`` defaults to this variable), so no JWT enters a program, its
#: inputs or its state. An edge's job carries its edge deploy identity here, the hub's job the hub's.
DEPLOY_JWT_ENV = "TERRAFORM_VAULT_AUTH_JWT"
#: The hub's AppRole mount holding one credential per edge.
EDGE_APPROLE_MOUNT = "approle-edges"
#: The hub's JWT mount where each edge's deploy identity logs in (``components.edge_identity``).
EDGE_DEPLOY_JWT_MOUNT = "jwt-edges"
#: Default mount paths of the dynamic-secret engines.
DEFAULT_DATABASE_MOUNT = "database"
DEFAULT_AWS_MOUNT = "aws"

#: Policies and roles the platform declares in every Vault, by name or by prefix (per edge, per
#: namespace). A consumer may take none of them: its policy would replace the platform's.
ADMIN_POLICY = "fedobs-admin"
CERT_SYNC_ROLE = "cert-sync"
SNAPSHOT_ROLE = "raft-snapshot"
EDGE_ACCESS_PREFIX = "hub-access-"
TRANSIT_UNSEAL_PREFIX = "transit-unseal-"
EDGE_DEPLOY_PREFIX = "edge-deploy-"
VSO_ROLE_PREFIX = "vso-"
RESERVED_POLICY_NAMES = ("default", "root", ADMIN_POLICY, CERT_SYNC_ROLE, SNAPSHOT_ROLE)
RESERVED_POLICY_PREFIXES = (EDGE_ACCESS_PREFIX, TRANSIT_UNSEAL_PREFIX, EDGE_DEPLOY_PREFIX, VSO_ROLE_PREFIX)
#: KV prefixes cert-sync writes: each edge's copies on the hub, the OTLP identities everywhere.
EDGES_KV_PREFIX = "edges"
OTEL_KV_PREFIX = "otel"
RESERVED_KV_PREFIXES = (EDGES_KV_PREFIX, OTEL_KV_PREFIX)


def in_cluster_host(release: str = VAULT_RELEASE, namespace: str = VAULT_NAMESPACE) -> str:
    """The active Vault node's Service as seen from inside the cluster (a name its certificate carries)."""
    return f"{release}-active.{namespace}.svc"


def in_cluster_address(release: str = VAULT_RELEASE, namespace: str = VAULT_NAMESPACE) -> str:
    """Vault's API as seen from inside the cluster: the active node's Service, over TLS."""
    return f"https://{in_cluster_host(release, namespace)}:{API_PORT}"
