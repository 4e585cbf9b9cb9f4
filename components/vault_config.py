"""What lives inside a cluster's Vault: KV v2, the database and AWS engines, and (on the hub) the
credential each edge uses to reach the hub."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated

import pulumi
import pulumi_vault as vault
from pydantic import AfterValidator, Field, field_validator, model_validator

from components.cert_sync_cadence import (
    EDGE_SECRET_ID_TTL_SECONDS,
    EDGE_TOKEN_MAX_TTL_SECONDS,
    EDGE_TOKEN_NUM_USES,
    EDGE_TOKEN_TTL_SECONDS,
)
from components.database_engines import Access, Engine, connection_url, role_statements
from components.kubernetes_auth import WorkloadRole
from components.settings import CONFIG_NAMESPACE, SECRET, AccessKeyPair, DnsLabel, RuleProblem, Settings, pattern_check
from components.vault_names import (
    DEFAULT_AWS_MOUNT,
    DEFAULT_DATABASE_MOUNT,
    DEFAULT_KV_MOUNT,
    EDGE_ACCESS_PREFIX,
    EDGE_APPROLE_MOUNT,
    EDGES_KV_PREFIX,
    RESERVED_KV_PREFIXES,
    RESERVED_POLICY_NAMES,
    RESERVED_POLICY_PREFIXES,
)
from components.vault_policies import Grant, credentials, kv_read, kv_write, render_policy

TYPE_TOKEN = "fedobs:vault:VaultConfiguration"
#: The token this component had before its token matched its class; aliased so nothing is replaced.
FORMER_TYPE_TOKEN = "fedobs:vault:Configuration"


KvPath = Annotated[
    str,
    AfterValidator(
        pattern_check(
            re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*(/\*)?$"),
            "otel/otel-client-tls or edges/edge-eu/*",
        )
    ),
]


def _not_platform_kv(path: str) -> str:
    top = path.split("/", 1)[0]
    if top in RESERVED_KV_PREFIXES:
        reserved = ", ".join(f"{p}/" for p in RESERVED_KV_PREFIXES)
        raise ValueError(f"{path!r} is under a platform KV prefix (reserved: {reserved})")
    return path


def _not_platform_name(name: str) -> str:
    if name in RESERVED_POLICY_NAMES or name.startswith(RESERVED_POLICY_PREFIXES):
        reserved = ", ".join([*RESERVED_POLICY_NAMES, *(f"{p}*" for p in RESERVED_POLICY_PREFIXES)])
        raise ValueError(f"{name!r} is a platform policy or role name (reserved: {reserved})")
    return name


ConsumerKvPath = Annotated[KvPath, AfterValidator(_not_platform_kv)]
ConsumerName = Annotated[DnsLabel, AfterValidator(_not_platform_name)]
CredentialRef = Annotated[
    str,
    AfterValidator(
        pattern_check(re.compile(r"^(database|aws)/[a-z0-9][a-z0-9-]*$"), "database/readonly or aws/s3-readonly")
    ),
]


class KvSettings(Settings):
    """The KV v2 mount for platform secrets (certificates)."""

    path: DnsLabel = DEFAULT_KV_MOUNT
    max_versions: int = Field(default=10, ge=1, le=100)


class Consumer(Settings):
    """A workload that reads from Vault as one ServiceAccount in one namespace.

    ``kvRead``/``kvWrite`` are paths under the KV mount (``prefix/*`` for a subtree); ``credentials``
    names dynamic-secret roles as ``<engine>/<role>``. The consumer's policy allows exactly that.
    """

    name: ConsumerName
    namespace: DnsLabel
    service_account: DnsLabel
    kv_read: tuple[ConsumerKvPath, ...] = ()
    kv_write: tuple[ConsumerKvPath, ...] = ()
    credentials: tuple[CredentialRef, ...] = ()
    token_ttl: int = Field(default=3600, ge=60, le=86400)
    token_max_ttl: int = Field(default=14400, ge=60, le=604800)

    @model_validator(mode="after")
    def _ttl_order(self) -> Consumer:
        if self.token_ttl > self.token_max_ttl:
            raise ValueError(f"tokenTtl ({self.token_ttl}) is greater than tokenMaxTtl ({self.token_max_ttl})")
        return self


class DatabaseRoleSettings(Settings):
    name: DnsLabel
    access: Access = "read"
    schema_: str = Field(default="public", alias="schema", pattern=r"^[a-z_][a-z0-9_]*$")
    default_ttl: int = Field(default=3600, ge=60)
    max_ttl: int = Field(default=86400, ge=60)

    @model_validator(mode="after")
    def _ttl_order(self) -> DatabaseRoleSettings:
        if self.default_ttl > self.max_ttl:
            raise ValueError(f"defaultTtl ({self.default_ttl}) is greater than maxTtl ({self.max_ttl})")
        return self


class DatabaseConnectionSettings(Settings):
    """One database Vault manages users in; its admin login is the secret ``fedobs:databaseAdmins.<name>``."""

    name: DnsLabel
    engine: Engine
    host: str = Field(pattern=r"^[A-Za-z0-9.-]+$")
    port: int = Field(ge=1, le=65535)
    database: str = Field(default="", pattern=r"^[A-Za-z0-9_]*$")
    tls: bool = True
    roles: tuple[DatabaseRoleSettings, ...] = Field(min_length=1)


class DatabaseSettings(Settings):
    enabled: bool = True
    path: DnsLabel = DEFAULT_DATABASE_MOUNT
    connections: tuple[DatabaseConnectionSettings, ...] = ()


class AwsRoleSettings(Settings):
    name: DnsLabel
    role_arns: tuple[str, ...] = Field(min_length=1)
    default_sts_ttl: int = Field(default=3600, ge=900, le=43200)
    max_sts_ttl: int = Field(default=3600, ge=900, le=43200)

    @field_validator("role_arns")
    @classmethod
    def _arns(cls, arns: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in arns if not re.match(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]+$", a)]
        if bad:
            raise ValueError(f"not IAM role ARNs: {', '.join(bad)}")
        return arns

    @model_validator(mode="after")
    def _ttl_order(self) -> AwsRoleSettings:
        if self.default_sts_ttl > self.max_sts_ttl:
            raise ValueError(f"defaultStsTtl ({self.default_sts_ttl}) is greater than maxStsTtl ({self.max_sts_ttl})")
        return self


class AwsSettings(Settings):
    """The AWS secrets engine issuing ``assumed_role`` credentials; root credentials are the secret
    ``fedobs:awsRootCredentials``."""

    enabled: bool = True
    path: DnsLabel = DEFAULT_AWS_MOUNT
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
    iam_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    sts_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    roles: tuple[AwsRoleSettings, ...] = ()


class DatabaseAdmin(Settings):
    """A dedicated admin login Vault manages database users with (and rotates right after setup)."""

    username: str = Field(min_length=1, json_schema_extra=SECRET)
    password: str = Field(min_length=12, json_schema_extra=SECRET)


class VaultConfigSettings(Settings):
    """``fedobs:vaultConfig``: the engines inside this Vault and the workloads that use them."""

    kv: KvSettings = KvSettings()
    consumers: tuple[Consumer, ...] = ()
    database: DatabaseSettings | None = None
    aws: AwsSettings | None = None

    @property
    def enabled_database(self) -> DatabaseSettings | None:
        return self.database if self.database is not None and self.database.enabled else None

    @property
    def enabled_aws(self) -> AwsSettings | None:
        return self.aws if self.aws is not None and self.aws.enabled else None

    def engine_path(self, engine: str) -> str:
        """The mount path of ``database`` or ``aws`` (configured, or the default)."""
        if engine == "database":
            return self.database.path if self.database else DEFAULT_DATABASE_MOUNT
        return self.aws.path if self.aws else DEFAULT_AWS_MOUNT

    def connection_data(self, engine: str, role: str) -> dict[str, str | int]:
        """Where a credential of ``engine`` role ``role`` is used: the database connection holding the
        role (host, port, database name), or the AWS region (keys of ``agent_injector.CONNECTION_FIELDS``)."""
        if engine == "aws":
            return {"region": self.aws.region} if self.aws is not None else {}
        for connection in self.database.connections if self.database is not None else ():
            if any(r.name == role for r in connection.roles):
                return {"host": connection.host, "port": connection.port, "database": connection.database}
        return {}

    def consumer(self, name: str) -> Consumer | None:
        return next((c for c in self.consumers if c.name == name), None)

    def reference_problems(
        self, database_admins: Mapping[str, DatabaseAdmin], aws_root: AccessKeyPair | None
    ) -> list[RuleProblem]:
        """Consumers may only name engines and roles that are declared and switched on; every
        enabled engine has its secret credentials."""
        problems: list[RuleProblem] = []
        declared: dict[str, tuple[bool, set[str]]] = {}
        if self.database is not None:
            roles = {r.name for c in self.database.connections for r in c.roles}
            declared["database"] = (self.database.enabled, roles)
            for i, connection in enumerate(self.database.connections):
                if self.database.enabled and connection.name not in database_admins:
                    problems.append(
                        RuleProblem(
                            f"vaultConfig.database.connections[{i}]",
                            f"needs its admin login in {CONFIG_NAMESPACE}:databaseAdmins.{connection.name} (a secret)",
                            (f"vaultConfig.database.connections[{i}]", "databaseAdmins"),
                        )
                    )
        if self.aws is not None:
            declared["aws"] = (self.aws.enabled, {r.name for r in self.aws.roles})
            if self.aws.enabled and aws_root is None:
                problems.append(
                    RuleProblem(
                        "awsRootCredentials",
                        f"required when {CONFIG_NAMESPACE}:vaultConfig.aws is enabled",
                        ("vaultConfig.aws.enabled", "awsRootCredentials"),
                    )
                )
        base = f"{CONFIG_NAMESPACE}:vaultConfig"
        for i, consumer in enumerate(self.consumers):
            for j, reference in enumerate(consumer.credentials):
                engine, _, role = reference.partition("/")
                enabled, roles = declared.get(engine, (False, set()))
                key = f"vaultConfig.consumers[{i}].credentials[{j}]"
                inputs = (key, f"vaultConfig.{engine}")
                if not enabled:
                    problems.append(
                        RuleProblem(key, f"names {engine} role '{role}' but {base}.{engine} is not enabled", inputs)
                    )
                elif role not in roles:
                    problems.append(
                        RuleProblem(
                            key, f"names {engine} role '{role}', which {base}.{engine} does not declare", inputs
                        )
                    )
        return problems


def consumer_roles(settings: VaultConfigSettings) -> list[WorkloadRole]:
    """Each declared consumer as a Kubernetes-auth role with the smallest policy for its access."""
    roles = []
    for consumer in settings.consumers:
        grants = [
            *(g for path in consumer.kv_read for g in kv_read(settings.kv.path, path)),
            *(g for path in consumer.kv_write for g in kv_write(settings.kv.path, path)),
            *(
                g
                for engine, _, role in (ref.partition("/") for ref in consumer.credentials)
                for g in credentials(settings.engine_path(engine), role)
            ),
        ]
        roles.append(
            WorkloadRole(
                name=consumer.name,
                service_account=consumer.service_account,
                namespace=consumer.namespace,
                policy_hcl=render_policy(consumer.name, grants),
                token_ttl_seconds=consumer.token_ttl,
                token_max_ttl_seconds=consumer.token_max_ttl,
            )
        )
    return roles


def edge_kv_prefix(edge: str) -> str:
    """Where the hub keeps what one edge may read: ``<kv>/data/edges/<edge>/*``."""
    return f"{EDGES_KV_PREFIX}/{edge}/*"


def edge_role_id(edge: str) -> str:
    """The role_id of ``edge``'s AppRole: an identifier (the secret_id is the secret), fixed so
    that the edge stack knows it without reading the hub."""
    return f"edge-{edge}"


def edge_access_policy_name(edge: str) -> str:
    return f"{EDGE_ACCESS_PREFIX}{edge}"


def edge_secret_id_grants(edge: str) -> list[Grant]:
    """What an edge's cert-sync follower needs to replace its own secret_id, and nothing of another
    role (``programs/cert_sync/follow.py``): create one (``update`` on ``role/<edge>/secret-id``; the
    server caps its TTL and uses at the role's: OpenBao ``builtin/credential/approle/path_role.go``,
    ``handleRoleSecretIDCommon``), list the accessors (``list`` on the same path), look its current one
    up by value and destroy others by accessor. Not ``custom-secret-id`` (choosing its own), not the
    role, its role_id or another edge's role."""
    role = f"auth/{EDGE_APPROLE_MOUNT}/role/{edge}"
    return [
        Grant(f"{role}/secret-id", ("update", "list")),
        Grant(f"{role}/secret-id/lookup", ("update",)),
        Grant(f"{role}/secret-id-accessor/destroy", ("update",)),
    ]


def edge_access_policy(edge: str, kv_mount: str) -> str:
    """What an edge's cert-sync follower does on the hub, and nothing else: read its own copies and
    their KV metadata (the version it polls), replace its own secret_id, revoke its token (the role
    gives no ``default`` policy). No transit: only the edge's seal token needs that."""
    return render_policy(
        edge_access_policy_name(edge),
        [
            *kv_read(kv_mount, edge_kv_prefix(edge)),
            Grant(f"{kv_mount}/metadata/{edge_kv_prefix(edge)}", ("read",)),
            *edge_secret_id_grants(edge),
            Grant("auth/token/revoke-self", ("update",)),
        ],
    )


class VaultConfiguration(pulumi.ComponentResource):
    """The engines and credentials declared inside one Vault.

    Guarantees: KV v2 requires check-and-set and keeps ``max_versions``; database connections use
    templated URLs (never a literal password) with a dedicated admin login whose password Vault
    rotates right after setup; role SQL comes from ``components.database_engines``; AWS roles are
    ``assumed_role`` only; each edge's AppRole (its cert-sync's hub login) can read only its own
    KV prefix and use only its own transit key. The hub mints no secret_id: each edge's deploy
    identity creates its own (``components.edge_identity``), so it lives only in that edge's state.
    """

    def __init__(
        self,
        name: str,
        settings: VaultConfigSettings,
        *,
        database_admins: Mapping[str, DatabaseAdmin] | None = None,
        aws_root_credentials: AccessKeyPair | None = None,
        edges: tuple[str, ...] = (),
        edge_cidrs: Mapping[str, tuple[str, ...]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """The Vault provider comes through ``opts``. ``database_admins`` and ``aws_root_credentials``
        are the secret logins of the enabled engines; ``edges`` (hub only) get an AppRole each, bound
        to the edge's ``edge_cidrs`` where given (its secret_id and tokens work from there only)."""
        former = pulumi.Alias(type_=FORMER_TYPE_TOKEN)
        super().__init__(
            TYPE_TOKEN, name, None, pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=[former]))
        )
        self.vault_opts = pulumi.ResourceOptions(parent=self)
        self.edge_cidrs = dict(edge_cidrs or {})
        kv_mount = vault.Mount(
            f"{name}-kv",
            path=settings.kv.path,
            type="kv",
            options={"version": "2"},
            description="Platform secrets (certificates)",
            opts=self.vault_opts,
        )
        #: What a KV writer waits for: the mount with check-and-set required.
        self.kv_ready = vault.kv.SecretBackendV2(
            f"{name}-kv-config",
            mount=kv_mount.path,
            max_versions=settings.kv.max_versions,
            cas_required=True,
            opts=self.vault_opts,
        )
        #: What a credentials consumer waits for: every database and AWS role.
        self.credential_roles: list[pulumi.Resource] = []
        if settings.enabled_database is not None:
            self._database(name, settings.enabled_database, database_admins or {})
        if settings.enabled_aws is not None:
            if aws_root_credentials is None:
                raise ValueError("the AWS engine needs aws_root_credentials")
            self._aws(name, settings.enabled_aws, aws_root_credentials)
        if edges:
            self._edge_access(name, edges, settings.kv.path)
        self.register_outputs({"kv_path": settings.kv.path})

    def _database(self, name: str, spec: DatabaseSettings, admins: Mapping[str, DatabaseAdmin]) -> None:
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
            username = pulumi.Output.secret(admins[connection.name].username)
            password = pulumi.Output.secret(admins[connection.name].password)
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
                statements = role_statements(connection.engine, role.access, role.schema_)
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

    def _aws(self, name: str, spec: AwsSettings, root: AccessKeyPair) -> None:
        backend = vault.aws.SecretBackend(
            f"{name}-aws",
            path=spec.path,
            access_key=pulumi.Output.secret(root.access_key_id),
            secret_key=pulumi.Output.secret(root.secret_access_key),
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

    def _edge_access(self, name: str, edges: tuple[str, ...], kv_mount: str) -> None:
        backend = vault.AuthBackend(
            f"{name}-edge-approle",
            type="approle",
            path=EDGE_APPROLE_MOUNT,
            description="One credential per edge cluster",
            opts=self.vault_opts,
        )
        for edge in edges:
            policy = vault.Policy(
                f"{name}-edge-{edge}-policy",
                name=edge_access_policy_name(edge),
                policy=edge_access_policy(edge, kv_mount),
                opts=self.vault_opts,
            )
            vault.approle.AuthBackendRole(
                f"{name}-edge-{edge}-role",
                backend=backend.path,
                role_name=edge,
                role_id=edge_role_id(edge),
                token_policies=[policy.name],
                token_no_default_policy=True,
                token_ttl=EDGE_TOKEN_TTL_SECONDS,
                token_max_ttl=EDGE_TOKEN_MAX_TTL_SECONDS,
                token_num_uses=EDGE_TOKEN_NUM_USES,
                secret_id_num_uses=0,
                secret_id_ttl=EDGE_SECRET_ID_TTL_SECONDS,
                # Checked against the address Vault sees: behind the NodeBalancer the one its PROXY
                # header carries (vault_server_config.ExternalListener). Empty: no binding.
                secret_id_bound_cidrs=list(self.edge_cidrs.get(edge, ())) or None,
                token_bound_cidrs=list(self.edge_cidrs.get(edge, ())) or None,
                opts=self.vault_opts,
            )
