"""What lives inside a cluster's Vault: KV v2, the database and AWS engines, and (on the hub) the
credential each edge uses to reach the hub."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_vault as vault

from components.database_engines import Access, Engine, connection_url, role_statements
from components.vault_policies import kv_read, render_policy, transit_use

TYPE_TOKEN = "fedobs:vault:Configuration"
EDGE_APPROLE_MOUNT = "approle-edges"


@dataclass(frozen=True)
class KvSpec:
    path: str = "kv"
    max_versions: int = 10


@dataclass(frozen=True)
class DatabaseRoleSpec:
    name: str
    access: Access
    schema: str
    default_ttl: int = 3600
    max_ttl: int = 86400


@dataclass(frozen=True)
class DatabaseConnectionSpec:
    name: str
    engine: Engine
    host: str
    port: int
    database: str
    tls: bool
    roles: tuple[DatabaseRoleSpec, ...]
    admin_username: pulumi.Input[str]
    admin_password: pulumi.Input[str]


@dataclass(frozen=True)
class DatabaseSpec:
    path: str
    connections: tuple[DatabaseConnectionSpec, ...]


@dataclass(frozen=True)
class AwsRoleSpec:
    name: str
    role_arns: tuple[str, ...]
    default_sts_ttl: int = 3600
    max_sts_ttl: int = 3600


@dataclass(frozen=True)
class AwsSpec:
    path: str
    region: str
    roles: tuple[AwsRoleSpec, ...]
    access_key_id: pulumi.Input[str]
    secret_access_key: pulumi.Input[str]
    iam_endpoint: str | None = None
    sts_endpoint: str | None = None


@dataclass(frozen=True)
class VaultConfigurationArgs:
    vault_provider: vault.Provider
    kv: KvSpec
    database: DatabaseSpec | None = None
    aws: AwsSpec | None = None
    #: Hub only: the edges that get a credential for their own prefix and transit key.
    edges: tuple[str, ...] = ()
    transit_mount: str = "transit"


def edge_kv_prefix(edge: str) -> str:
    """Where the hub keeps what one edge may read: ``<kv>/data/edges/<edge>/*``."""
    return f"edges/{edge}/*"


def edge_access_policy(edge: str, kv_mount: str, transit_mount: str) -> str:
    return render_policy(
        f"hub-access-{edge}", [*kv_read(kv_mount, edge_kv_prefix(edge)), *transit_use(transit_mount, edge)]
    )


class VaultConfiguration(pulumi.ComponentResource):
    """The engines and credentials declared inside one Vault.

    Guarantees: KV v2 requires check-and-set and keeps ``max_versions``; database connections use
    templated URLs (never a literal password) with a dedicated admin login whose password Vault
    rotates right after setup; role SQL comes from ``components.database_engines``; AWS roles are
    ``assumed_role`` only; each edge's hub credential (an AppRole) can read only its own KV prefix
    and use only its own transit key, and is a secret output.
    """

    edge_credentials: dict[str, pulumi.Output[dict[str, str]]]

    def __init__(self, name: str, args: VaultConfigurationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        self.vault_opts = pulumi.ResourceOptions(parent=self, provider=args.vault_provider)
        kv_mount = vault.Mount(
            f"{name}-kv",
            path=args.kv.path,
            type="kv",
            options={"version": "2"},
            description="Platform secrets (certificates)",
            opts=self.vault_opts,
        )
        #: What a KV writer waits for: the mount with check-and-set required.
        self.kv_ready = vault.kv.SecretBackendV2(
            f"{name}-kv-config",
            mount=kv_mount.path,
            max_versions=args.kv.max_versions,
            cas_required=True,
            opts=self.vault_opts,
        )
        #: What a credentials consumer waits for: every database and AWS role.
        self.credential_roles: list[pulumi.Resource] = []
        if args.database is not None:
            self._database(name, args.database)
        if args.aws is not None:
            self._aws(name, args.aws)
        self.edge_credentials = self._edge_access(name, args) if args.edges else {}
        self.register_outputs({"kv_path": args.kv.path, "edge_credentials": self.edge_credentials})

    def _database(self, name: str, spec: DatabaseSpec) -> None:
        mount = vault.Mount(
            f"{name}-database",
            path=spec.path,
            type="database",
            description="Short-lived database users",
            opts=self.vault_opts,
        )
        for connection in spec.connections:
            prefix = f"{name}-db-{connection.name}"
            url = connection_url(
                connection.engine, connection.host, connection.port, connection.database, connection.tls
            )
            username = pulumi.Output.secret(connection.admin_username)
            password = pulumi.Output.secret(connection.admin_password)
            created = vault.database.SecretBackendConnection(
                prefix,
                backend=mount.path,
                name=connection.name,
                allowed_roles=[role.name for role in connection.roles],
                verify_connection=True,
                postgresql=vault.database.SecretBackendConnectionPostgresqlArgs(
                    connection_url=url, username=username, password=password, max_open_connections=4
                )
                if connection.engine == "postgresql"
                else None,
                mysql=vault.database.SecretBackendConnectionMysqlArgs(
                    connection_url=url, username=username, password=password, max_open_connections=4
                )
                if connection.engine == "mysql"
                else None,
                opts=pulumi.ResourceOptions.merge(
                    self.vault_opts,
                    pulumi.ResourceOptions(
                        # After rotate-root only Vault knows the admin password; never send the old one.
                        ignore_changes=[f"{connection.engine}.password"]
                    ),
                ),
            )
            roles: list[pulumi.Resource] = []
            for role in connection.roles:
                statements = role_statements(connection.engine, role.access, role.schema)
                roles.append(
                    vault.database.SecretBackendRole(
                        f"{prefix}-{role.name}",
                        backend=mount.path,
                        name=role.name,
                        db_name=created.name,
                        creation_statements=list(statements.creation),
                        revocation_statements=list(statements.revocation),
                        default_ttl=role.default_ttl,
                        max_ttl=role.max_ttl,
                        opts=self.vault_opts,
                    )
                )
            vault.generic.Endpoint(
                f"{prefix}-rotate-root",
                path=pulumi.Output.concat(mount.path, "/rotate-root/", created.name),
                data_json=json.dumps({}),
                disable_read=True,
                disable_delete=True,
                opts=pulumi.ResourceOptions.merge(self.vault_opts, pulumi.ResourceOptions(depends_on=roles)),
            )
            self.credential_roles.extend(roles)

    def _aws(self, name: str, spec: AwsSpec) -> None:
        backend = vault.aws.SecretBackend(
            f"{name}-aws",
            path=spec.path,
            access_key=pulumi.Output.secret(spec.access_key_id),
            secret_key=pulumi.Output.secret(spec.secret_access_key),
            region=spec.region,
            iam_endpoint=spec.iam_endpoint,
            sts_endpoint=spec.sts_endpoint,
            description="Short-lived AWS credentials (assumed roles)",
            opts=self.vault_opts,
        )
        for role in spec.roles:
            self.credential_roles.append(
                vault.aws.SecretBackendRole(
                    f"{name}-aws-{role.name}",
                    backend=spec.path,
                    name=role.name,
                    credential_type="assumed_role",
                    role_arns=list(role.role_arns),
                    default_sts_ttl=role.default_sts_ttl,
                    max_sts_ttl=role.max_sts_ttl,
                    # the path is known up front; the dependency orders the role after its backend
                    opts=pulumi.ResourceOptions.merge(self.vault_opts, pulumi.ResourceOptions(depends_on=[backend])),
                )
            )

    def _edge_access(self, name: str, args: VaultConfigurationArgs) -> dict[str, pulumi.Output[dict[str, str]]]:
        backend = vault.AuthBackend(
            f"{name}-edge-approle",
            type="approle",
            path=EDGE_APPROLE_MOUNT,
            description="One credential per edge cluster",
            opts=self.vault_opts,
        )
        credentials: dict[str, pulumi.Output[dict[str, str]]] = {}
        for edge in args.edges:
            policy = vault.Policy(
                f"{name}-edge-{edge}-policy",
                name=f"hub-access-{edge}",
                policy=edge_access_policy(edge, args.kv.path, args.transit_mount),
                opts=self.vault_opts,
            )
            role = vault.approle.AuthBackendRole(
                f"{name}-edge-{edge}-role",
                backend=backend.path,
                role_name=edge,
                token_policies=[policy.name],
                token_ttl=3600,
                token_max_ttl=14400,
                secret_id_num_uses=0,
                opts=self.vault_opts,
            )
            secret_id = vault.approle.AuthBackendRoleSecretId(
                f"{name}-edge-{edge}-secret-id", backend=backend.path, role_name=role.role_name, opts=self.vault_opts
            )
            credentials[edge] = pulumi.Output.secret(
                pulumi.Output.all(role.role_id, secret_id.secret_id).apply(
                    lambda ids: {"mount": EDGE_APPROLE_MOUNT, "roleId": ids[0], "secretId": ids[1]}
                )
            )
        return credentials
