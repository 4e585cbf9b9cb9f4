"""Typed, validated stack configuration for the two stack roles, ``hub`` and ``edge``.

Every key of the ``fedobs:`` config namespace is parsed into one pydantic model per role
(:class:`HubConfig`, :class:`EdgeConfig`). Parsing collects *every* problem and raises one
:class:`ConfigError` whose message lists each problem by its config key path
(``fedobs:cluster.pools[0].autoscaler``), before the program registers any resource.

Secret values are never accepted in plain text: a model field marked with :data:`SECRET`
must come from a config key that Pulumi holds as a secret (``pulumi config set --secret``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from components.cert_sync_cadence import interval_problem

NAMESPACE = "fedobs"

#: Field metadata marking a value that must be a Pulumi secret.
SECRET: dict[str, Any] = {"fedobs_secret": True}

LINODE_REGION = re.compile(r"^[a-z]{2}-[a-z]{3,}(-[0-9])?$")
K8S_MINOR_VERSION = re.compile(r"^1\.[0-9]{2}$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
STACK_REFERENCE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
CRON = re.compile(r"^(\S+\s+){4}\S+$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|m|k|M|G)?$")


def _check(pattern: re.Pattern[str], example: str) -> Callable[[str], str]:
    def validate(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not valid (expected something like {example!r})")
        return value

    return validate


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        raise ValueError(f"{value!r} is not a CIDR block such as '203.0.113.0/24' ({err})") from None
    return value


def _cert_sync_interval(value: int) -> int:
    problem = interval_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Region = Annotated[str, AfterValidator(_check(LINODE_REGION, "us-ord"))]
KubernetesVersion = Annotated[str, AfterValidator(_check(K8S_MINOR_VERSION, "1.33"))]
DnsLabel = Annotated[str, AfterValidator(_check(DNS_LABEL, "edge-eu-1"))]
DnsName = Annotated[str, AfterValidator(_check(DNS_NAME, "vault.hub.example.com"))]
Cidr = Annotated[str, AfterValidator(_cidr)]
LabelKey = Annotated[str, AfterValidator(_check(LABEL_KEY, "fedobs.io/pool"))]
Cron = Annotated[str, AfterValidator(_check(CRON, "0 * * * *"))]
Quantity = Annotated[str, AfterValidator(_check(QUANTITY, "10Gi"))]


class Model(BaseModel):
    """Base of every config model: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# --- cluster ---------------------------------------------------------------------------------


class Autoscaler(Model):
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Autoscaler:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Taint(Model):
    key: LabelKey
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodePool(Model):
    """One LKE node pool; ``count`` is the initial size when an autoscaler is set."""

    type: str = Field(pattern=r"^g[0-9]+-[a-z0-9-]+$")
    count: int = Field(ge=1, le=100)
    autoscaler: Autoscaler | None = None
    labels: dict[LabelKey, str] = Field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    tags: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _count_within_autoscaler(self) -> NodePool:
        if self.autoscaler and not self.autoscaler.min <= self.count <= self.autoscaler.max:
            raise ValueError(
                f"count ({self.count}) is outside the autoscaler range {self.autoscaler.min}..{self.autoscaler.max}"
            )
        return self


class LkeClusterSettings(Model):
    """A new Linode Kubernetes Engine cluster declared by the stack."""

    mode: Literal["lke"]
    label: DnsLabel
    region: Region
    kubernetes_version: KubernetesVersion
    ha_control_plane: bool
    control_plane_acl: tuple[Cidr, ...] = ()
    pools: tuple[NodePool, ...]
    tags: tuple[str, ...] = ()

    @field_validator("pools")
    @classmethod
    def _at_least_one_pool(cls, pools: tuple[NodePool, ...]) -> tuple[NodePool, ...]:
        # Not Field(min_length=1): pydantic would also report it when one pool is invalid.
        if not pools:
            raise ValueError("at least one node pool is required")
        return pools


class ExistingClusterSettings(Model):
    """An existing cluster reached through a kubeconfig (secret key ``fedobs:kubeconfig``)
    or a context of the operator's own kubeconfig file."""

    mode: Literal["existing"]
    context: str | None = None


ClusterSettings = Annotated[LkeClusterSettings | ExistingClusterSettings, Field(discriminator="mode")]


# --- vault -----------------------------------------------------------------------------------


class ShamirSeal(Model):
    type: Literal["shamir"]
    key_shares: int = Field(default=5, ge=1, le=10)
    key_threshold: int = Field(default=3, ge=1, le=10)

    @model_validator(mode="after")
    def _threshold_not_above_shares(self) -> ShamirSeal:
        if self.key_threshold > self.key_shares:
            raise ValueError(f"keyThreshold ({self.key_threshold}) is greater than keyShares ({self.key_shares})")
        return self


class TransitSeal(Model):
    """Auto-unseal through this edge's transit key on the hub Vault (edge stacks only)."""

    type: Literal["transit"]
    recovery_shares: int = Field(default=5, ge=1, le=10)
    recovery_threshold: int = Field(default=3, ge=1, le=10)


class AwsKmsSeal(Model):
    """Auto-unseal with an AWS KMS key; credentials come from the secret ``fedobs:awsKmsCredentials``."""

    type: Literal["awskms"]
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
    kms_key_id: str = Field(min_length=1)
    endpoint: str | None = Field(default=None, pattern=r"^https://")
    recovery_shares: int = Field(default=5, ge=1, le=10)
    recovery_threshold: int = Field(default=3, ge=1, le=10)


Seal = Annotated[ShamirSeal | TransitSeal | AwsKmsSeal, Field(discriminator="type")]


class LoadBalancerExposure(Model):
    """A LoadBalancer Service (a Linode NodeBalancer) in front of the active Vault node; TLS
    terminates at Vault itself, and only ``allowedSourceRanges`` may connect."""

    type: Literal["loadBalancer"]
    hostname: DnsName
    allowed_source_ranges: tuple[Cidr, ...] = Field(min_length=1)


class AddressExposure(Model):
    """The operator provides the address (an ingress, a tunnel, a port-forward) by which Pulumi
    and the edges reach this Vault; the stack creates no external Service."""

    type: Literal["address"]
    address: str = Field(pattern=r"^https://[^/]+$")
    hostname: DnsName


Exposure = Annotated[LoadBalancerExposure | AddressExposure, Field(discriminator="type")]


class SnapshotBucket(Model):
    """Where Raft snapshots go: an S3-compatible bucket (Linode Object Storage)."""

    create: bool = True
    name: DnsLabel
    region: str = Field(pattern=r"^[a-z]{2}-[a-z]+-[0-9]$")
    endpoint: str = Field(pattern=r"^https://[^/]+$")


class SnapshotSettings(Model):
    enabled: bool = True
    schedule: Cron = "0 * * * *"
    retain: int = Field(default=24, ge=1, le=1000)
    bucket: SnapshotBucket


class VaultSettings(Model):
    replicas: int = Field(default=3, ge=1, le=7)
    seal: Seal = ShamirSeal(type="shamir")
    exposure: Exposure
    storage_class: str = "linode-block-storage-retain"
    data_storage_size: Quantity = "10Gi"
    audit_storage_size: Quantity = "10Gi"
    injector_replicas: int = Field(default=2, ge=1, le=5)
    operator_pgp_keys: tuple[str, ...] = ()
    #: Bump to rotate the password Pulumi's own Vault login uses (docs/vault.md, "Rotation").
    admin_credential_generation: int = Field(default=1, ge=1)
    snapshots: SnapshotSettings | None = None

    @field_validator("replicas")
    @classmethod
    def _odd_replicas(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"replicas must be odd for a Raft quorum, got {value}")
        return value


# --- what lives inside Vault ------------------------------------------------------------------

KvPath = Annotated[
    str,
    AfterValidator(
        _check(
            re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*(/\*)?$"),
            "otel/otel-client-tls or edges/edge-eu/*",
        )
    ),
]
CredentialRef = Annotated[
    str,
    AfterValidator(_check(re.compile(r"^(database|aws)/[a-z0-9][a-z0-9-]*$"), "database/readonly or aws/s3-readonly")),
]


class KvSettings(Model):
    """The KV v2 mount for platform secrets (certificates)."""

    path: DnsLabel = "kv"
    max_versions: int = Field(default=10, ge=1, le=100)


class Consumer(Model):
    """A workload that reads from Vault as one ServiceAccount in one namespace.

    ``kvRead``/``kvWrite`` are paths under the KV mount (``prefix/*`` for a subtree); ``credentials``
    names dynamic-secret roles as ``<engine>/<role>``. The consumer's policy allows exactly that.
    """

    name: DnsLabel
    namespace: DnsLabel
    service_account: DnsLabel
    kv_read: tuple[KvPath, ...] = ()
    kv_write: tuple[KvPath, ...] = ()
    credentials: tuple[CredentialRef, ...] = ()
    token_ttl: int = Field(default=3600, ge=60, le=86400)
    token_max_ttl: int = Field(default=14400, ge=60, le=604800)

    @model_validator(mode="after")
    def _ttl_order(self) -> Consumer:
        if self.token_ttl > self.token_max_ttl:
            raise ValueError(f"tokenTtl ({self.token_ttl}) is greater than tokenMaxTtl ({self.token_max_ttl})")
        return self


class DatabaseRoleSettings(Model):
    name: DnsLabel
    access: Literal["read", "readwrite"] = "read"
    schema_: str = Field(default="public", alias="schema", pattern=r"^[a-z_][a-z0-9_]*$")
    default_ttl: int = Field(default=3600, ge=60)
    max_ttl: int = Field(default=86400, ge=60)

    @model_validator(mode="after")
    def _ttl_order(self) -> DatabaseRoleSettings:
        if self.default_ttl > self.max_ttl:
            raise ValueError(f"defaultTtl ({self.default_ttl}) is greater than maxTtl ({self.max_ttl})")
        return self


class DatabaseConnectionSettings(Model):
    """One database Vault manages users in; its admin login is the secret ``fedobs:databaseAdmins.<name>``."""

    name: DnsLabel
    engine: Literal["postgresql", "mysql"]
    host: str = Field(pattern=r"^[A-Za-z0-9.-]+$")
    port: int = Field(ge=1, le=65535)
    database: str = Field(default="", pattern=r"^[A-Za-z0-9_]*$")
    tls: bool = True
    roles: tuple[DatabaseRoleSettings, ...] = Field(min_length=1)


class DatabaseSettings(Model):
    enabled: bool = True
    path: DnsLabel = "database"
    connections: tuple[DatabaseConnectionSettings, ...] = ()


class AwsRoleSettings(Model):
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


class AwsSettings(Model):
    """The AWS secrets engine issuing ``assumed_role`` credentials; root credentials are the secret
    ``fedobs:awsRootCredentials``."""

    enabled: bool = True
    path: DnsLabel = "aws"
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
    iam_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    sts_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    roles: tuple[AwsRoleSettings, ...] = ()


class VaultConfigSettings(Model):
    kv: KvSettings = KvSettings()
    consumers: tuple[Consumer, ...] = ()
    database: DatabaseSettings | None = None
    aws: AwsSettings | None = None


class RestartTargetSettings(Model):
    kind: Literal["Deployment", "DaemonSet", "StatefulSet"]
    name: DnsLabel


class SyncSettings(Model):
    """Sync one KV v2 path into one Secret and restart the workloads that mount it."""

    namespace: DnsLabel
    secret_name: DnsLabel
    kv_path: Annotated[
        str,
        AfterValidator(_check(re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$"), "otel/otel-client-tls")),
    ]
    secret_type: Literal["kubernetes.io/tls", "Opaque"] = "kubernetes.io/tls"
    restart: tuple[RestartTargetSettings, ...] = ()


class WorkloadRef(Model):
    kind: Literal["Deployment", "DaemonSet", "StatefulSet"]
    namespace: DnsLabel
    name: DnsLabel


class DistributionSettings(Model):
    """Vault Secrets Operator: which Vault paths become which Secrets where."""

    vault_auth_global: bool = False
    #: How often cert-sync copies certificates into Vault (hub) or from the hub (edge).
    cert_sync_schedule: Cron = "* * * * *"
    #: Seconds between the sync passes of one cert-sync run, through the minute after each scheduled
    #: run (20: three passes; 60: one). See components/cert_sync_cadence.py and docs/secret-flow.md.
    cert_sync_interval: Annotated[int, AfterValidator(_cert_sync_interval)] = 20
    syncs: tuple[SyncSettings, ...] = ()
    #: The workloads of this cluster a sync may restart (a restart target must be one of them).
    workloads: tuple[WorkloadRef, ...] = ()


@dataclass(frozen=True)
class CollectorShape:
    """What a role's OTel collector Deployment is called and which VSO-synced Secrets it mounts."""

    deployment: str
    mounted_secrets: tuple[str, ...]


#: The hub runs the mTLS OTLP gateway (server certificate + the client CA it trusts); an edge runs
#: a collector that forwards to it with its own client certificate.
COLLECTOR_SHAPES: dict[str, CollectorShape] = {
    "hub": CollectorShape("otel-gateway", ("otel-gateway-tls", "otel-client-ca")),
    "edge": CollectorShape("otel-collector", ("otel-client-tls",)),
}


class CollectorSettings(Model):
    """This stack's OpenTelemetry collector: the hub's mTLS OTLP gateway, or an edge's collector
    forwarding to it. It mounts only the Secrets VSO syncs (``distribution.syncs``)."""

    enabled: bool = True
    namespace: DnsLabel = "observability"
    replicas: int = Field(default=2, ge=1, le=20)
    #: Hub only: who may reach the OTLP LoadBalancer (the edges' egress addresses).
    allowed_source_ranges: tuple[Cidr, ...] = ()
    tls_min_version: Literal["1.2", "1.3"] = "1.3"
    memory_limit: Quantity = "512Mi"


class AdmissionSettings(Model):
    """Kyverno and the ``require-vault-secrets-operator`` policy: collectors mount only VSO Secrets."""

    enabled: bool = True
    mode: Literal["Audit", "Enforce"] = "Enforce"


class InjectedFileSettings(Model):
    """One file the Vault Agent renders into the workload's Pods (``/vault/secrets/<name>``)."""

    name: DnsLabel
    credential: CredentialRef
    format: Literal["dotenv", "json"] = "dotenv"
    env_prefix: str = Field(default="", pattern=r"^[A-Z0-9_]*$")


class DynamicWorkloadSettings(Model):
    """A consumer's workloads get its credentials just in time through the Agent Injector."""

    consumer: DnsLabel
    example_job: bool = True
    files: tuple[InjectedFileSettings, ...] = Field(min_length=1)


class DatabaseAdmin(Model):
    username: str = Field(min_length=1, json_schema_extra=SECRET)
    password: str = Field(min_length=12, json_schema_extra=SECRET)


# --- the edges the hub serves, the hub an edge reads ------------------------------------------


class EdgeEntry(Model):
    """An edge cluster the hub serves: its client certificate, transit key and scoped credential."""

    name: DnsLabel


class AwsCredentials(Model):
    access_key_id: str = Field(min_length=16, json_schema_extra=SECRET)
    secret_access_key: str = Field(min_length=16, json_schema_extra=SECRET)


# --- the stack roles -------------------------------------------------------------------------


class StackConfig(Model):
    """What every stack has, whatever its role."""

    role: Literal["hub", "edge"]
    cluster: ClusterSettings
    vault: VaultSettings
    kubeconfig: str | None = Field(default=None, json_schema_extra=SECRET)
    vault_config: VaultConfigSettings = VaultConfigSettings()
    distribution: DistributionSettings = DistributionSettings()
    dynamic_secrets: tuple[DynamicWorkloadSettings, ...] = ()
    collector: CollectorSettings | None = None
    admission: AdmissionSettings | None = None
    aws_kms_credentials: AwsCredentials | None = None
    snapshot_credentials: AwsCredentials | None = None
    aws_root_credentials: AwsCredentials | None = None
    database_admins: dict[DnsLabel, DatabaseAdmin] = Field(default_factory=dict, json_schema_extra=SECRET)


class PkiSettings(Model):
    """The hub's OTLP mTLS PKI (cert-manager): key type, lifetimes, subjects, receiver names."""

    namespace: DnsLabel = "fedobs-pki"
    organization: str = Field(default="fedobs", min_length=1)
    key_algorithm: Literal["ECDSA", "RSA", "Ed25519"] = "ECDSA"
    key_size: int = 256
    ca_duration_hours: int = Field(default=43800, ge=720)
    cert_duration_hours: int = Field(default=2160, ge=24)
    receiver_hostnames: tuple[DnsName, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _key_and_lifetimes(self) -> PkiSettings:
        sizes = {"ECDSA": (256, 384), "RSA": (2048, 3072, 4096), "Ed25519": (self.key_size,)}[self.key_algorithm]
        if self.key_size not in sizes:
            raise ValueError(f"keySize {self.key_size} is not one of {sizes} for {self.key_algorithm}")
        if self.cert_duration_hours > self.ca_duration_hours:
            raise ValueError("certDurationHours is longer than caDurationHours")
        return self


class HubConfig(StackConfig):
    role: Literal["hub"]
    edges: tuple[EdgeEntry, ...] = ()
    pki: PkiSettings | None = None

    @field_validator("edges")
    @classmethod
    def _unique_edge_names(cls, edges: tuple[EdgeEntry, ...]) -> tuple[EdgeEntry, ...]:
        names = [e.name for e in edges]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate edge names: {', '.join(duplicates)}")
        return edges


class EdgeConfig(StackConfig):
    role: Literal["edge"]
    edge_name: DnsLabel
    hub_stack: str = Field(pattern=STACK_REFERENCE.pattern)


AnyStackConfig = HubConfig | EdgeConfig

_KEYS_OF_ROLE: dict[str, type[StackConfig]] = {"hub": HubConfig, "edge": EdgeConfig}


# --- rules across keys ------------------------------------------------------------------------
# They read the raw values, so they run even when other keys failed to parse: one run of the
# program reports every problem.


def _get(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _vault_config_problems(values: Mapping[str, Any]) -> list[Problem]:
    """Consumers may only name engines and roles that are declared and switched on."""
    problems: list[Problem] = []
    base = f"{NAMESPACE}:vaultConfig"
    config = values.get("vaultConfig")
    if not isinstance(config, Mapping):
        return problems
    engines: dict[str, tuple[bool, set[str]]] = {}
    database = config.get("database")
    if isinstance(database, Mapping):
        roles = {
            str(r.get("name"))
            for c in database.get("connections") or []
            if isinstance(c, Mapping)
            for r in c.get("roles") or []
            if isinstance(r, Mapping)
        }
        engines["database"] = (database.get("enabled", True) is not False, roles)
        for i, connection in enumerate(database.get("connections") or []):
            name = connection.get("name") if isinstance(connection, Mapping) else None
            if database.get("enabled", True) is not False and name and name not in (values.get("databaseAdmins") or {}):
                problems.append(
                    Problem(
                        f"{base}.database.connections[{i}]",
                        f"needs its admin login in {NAMESPACE}:databaseAdmins.{name} (a secret)",
                    )
                )
    aws = config.get("aws")
    if isinstance(aws, Mapping):
        roles = {str(r.get("name")) for r in aws.get("roles") or [] if isinstance(r, Mapping)}
        engines["aws"] = (aws.get("enabled", True) is not False, roles)
        if aws.get("enabled", True) is not False and not values.get("awsRootCredentials"):
            problems.append(Problem(f"{NAMESPACE}:awsRootCredentials", f"required when {base}.aws is enabled"))
    for i, consumer in enumerate(config.get("consumers") or []):
        if not isinstance(consumer, Mapping):
            continue
        for j, reference in enumerate(consumer.get("credentials") or []):
            engine, _, role = str(reference).partition("/")
            key = f"{base}.consumers[{i}].credentials[{j}]"
            if engine not in ("database", "aws"):
                continue
            enabled, roles = engines.get(engine, (False, set()))
            if not enabled:
                problems.append(Problem(key, f"names {engine} role '{role}' but {base}.{engine} is not enabled"))
            elif role not in roles:
                problems.append(Problem(key, f"names {engine} role '{role}', which {base}.{engine} does not declare"))
    return problems


def _dynamic_secret_problems(values: Mapping[str, Any]) -> list[Problem]:
    """An injected file names a declared consumer and one of that consumer's credentials."""
    config = values.get("vaultConfig")
    consumers = {
        str(c.get("name")): c
        for c in (config.get("consumers") or [] if isinstance(config, Mapping) else [])
        if isinstance(c, Mapping)
    }
    problems = []
    for i, workload in enumerate(values.get("dynamicSecrets") or []):
        if not isinstance(workload, Mapping):
            continue
        consumer = consumers.get(str(workload.get("consumer")))
        if consumer is None:
            problems.append(
                Problem(
                    f"{NAMESPACE}:dynamicSecrets[{i}].consumer",
                    f"'{workload.get('consumer')}' is not in {NAMESPACE}:vaultConfig.consumers",
                )
            )
            continue
        for j, file in enumerate(workload.get("files") or []):
            if isinstance(file, Mapping) and file.get("credential") not in (consumer.get("credentials") or []):
                problems.append(
                    Problem(
                        f"{NAMESPACE}:dynamicSecrets[{i}].files[{j}].credential",
                        f"'{file.get('credential')}' is not among the credentials of consumer '{consumer.get('name')}'",
                    )
                )
    return problems


def _enabled_collector(values: Mapping[str, Any]) -> Mapping[str, Any] | None:
    collector = values.get("collector")
    if isinstance(collector, Mapping) and collector.get("enabled", True) is not False:
        return collector
    return None


def _collector_workload(role: str, values: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The collector Deployment as a ``(kind, namespace, name)`` workload, when it is enabled."""
    collector = _enabled_collector(values)
    if collector is None or role not in COLLECTOR_SHAPES:
        return None
    return ("Deployment", str(collector.get("namespace", "observability")), COLLECTOR_SHAPES[role].deployment)


def _collector_problems(role: str, values: Mapping[str, Any]) -> list[Problem]:
    """The collector's Secrets come from VSO syncs that restart it; the hub's gateway needs its PKI
    and a restricted LoadBalancer; an edge exposes nothing."""
    collector = _enabled_collector(values)
    workload = _collector_workload(role, values)
    if collector is None or workload is None:
        return []
    base = f"{NAMESPACE}:collector"
    problems: list[Problem] = []
    if role == "hub":
        if not values.get("pki"):
            problems.append(
                Problem(
                    f"{NAMESPACE}:pki",
                    f"required when {base} is enabled: the gateway's server certificate and the client CA come from it",
                )
            )
        if not collector.get("allowedSourceRanges"):
            problems.append(
                Problem(
                    f"{base}.allowedSourceRanges",
                    "the OTLP LoadBalancer must be restricted: list the CIDRs the edges send from",
                )
            )
    elif collector.get("allowedSourceRanges"):
        problems.append(Problem(f"{base}.allowedSourceRanges", "only the hub exposes an OTLP receiver"))
    _, namespace, deployment = workload
    distribution = values.get("distribution")
    syncs = distribution.get("syncs") or [] if isinstance(distribution, Mapping) else []
    for secret in COLLECTOR_SHAPES[role].mounted_secrets:
        found = [
            (i, s)
            for i, s in enumerate(syncs)
            if isinstance(s, Mapping) and s.get("namespace") == namespace and s.get("secretName") == secret
        ]
        if not found:
            problems.append(
                Problem(
                    f"{NAMESPACE}:distribution.syncs",
                    f"the collector {deployment} mounts Secret {namespace}/{secret}: add a sync that creates it",
                )
            )
        for i, sync in found:
            targets = [t for t in sync.get("restart") or [] if isinstance(t, Mapping)]
            if not any(t.get("kind") == "Deployment" and t.get("name") == deployment for t in targets):
                problems.append(
                    Problem(
                        f"{NAMESPACE}:distribution.syncs[{i}].restart",
                        f"must restart Deployment {deployment}, which mounts {secret}",
                    )
                )
    return problems


def _restart_target_problems(role: str, values: Mapping[str, Any]) -> list[Problem]:
    """A sync may only restart a workload the stack declares, in the sync's own namespace."""
    distribution = values.get("distribution")
    if not isinstance(distribution, Mapping):
        return []
    known = {
        (w.get("kind"), w.get("namespace"), w.get("name"))
        for w in distribution.get("workloads") or []
        if isinstance(w, Mapping)
    }
    collector = _collector_workload(role, values)
    if collector is not None:
        known.add(collector)
    problems = []
    for i, sync in enumerate(distribution.get("syncs") or []):
        if not isinstance(sync, Mapping):
            continue
        for j, target in enumerate(sync.get("restart") or []):
            if not isinstance(target, Mapping):
                continue
            if (target.get("kind"), sync.get("namespace"), target.get("name")) not in known:
                problems.append(
                    Problem(
                        f"{NAMESPACE}:distribution.syncs[{i}].restart[{j}]",
                        f"{target.get('kind')} {sync.get('namespace')}/{target.get('name')} is not a workload of this "
                        f"stack (fedobs:distribution.workloads or an enabled fedobs:collector)",
                    )
                )
    return problems


def _cross_key_problems(role: str, values: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    seal = _get(values, "vault.seal.type")
    if role == "hub" and seal == "transit":
        problems.append(
            Problem(
                f"{NAMESPACE}:vault.seal.type",
                "'transit' is for edges: the hub has no upstream Vault to unseal through",
            )
        )
    if seal == "awskms" and not values.get("awsKmsCredentials"):
        problems.append(
            Problem(f"{NAMESPACE}:awsKmsCredentials", f"required when {NAMESPACE}:vault.seal.type is 'awskms'")
        )
    snapshots = _get(values, "vault.snapshots")
    if isinstance(snapshots, Mapping) and snapshots.get("enabled", True) and not values.get("snapshotCredentials"):
        problems.append(
            Problem(f"{NAMESPACE}:snapshotCredentials", f"required when {NAMESPACE}:vault.snapshots is enabled")
        )
    problems.extend(_vault_config_problems(values))
    problems.extend(_restart_target_problems(role, values))
    problems.extend(_collector_problems(role, values))
    problems.extend(_dynamic_secret_problems(values))
    mode = _get(values, "cluster.mode")
    if role == "hub" and mode == "lke" and not _get(values, "cluster.controlPlaneAcl"):
        problems.append(
            Problem(
                f"{NAMESPACE}:cluster.controlPlaneAcl",
                "the hub's control plane must be restricted: list the CIDRs allowed to reach it",
            )
        )
    if mode == "existing" and values.get("kubeconfig") and _get(values, "cluster.context"):
        problems.append(
            Problem(f"{NAMESPACE}:cluster.context", f"give either this or {NAMESPACE}:kubeconfig, not both")
        )
    return problems


# --- parsing and errors ----------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ConfigError(Exception):
    """Every problem of a stack's config, each named by its config key."""

    def __init__(self, stack: str, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"invalid config for stack '{stack}' ({len(problems)} {noun}):\n{lines}")


def _key_path(loc: Iterable[int | str]) -> str:
    parts = list(loc)
    text = f"{NAMESPACE}:{parts[0]}" if parts else NAMESPACE
    for part in parts[1:]:
        # pydantic puts the discriminator tag in the location of tagged unions; it is not a key.
        if isinstance(part, str) and part in {
            "lke",
            "existing",
            "shamir",
            "transit",
            "awskms",
            "loadBalancer",
            "address",
        }:
            continue
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if error["type"] == "extra_forbidden":
        return "unknown key (check its spelling against docs/architecture.md)"
    if error["type"] == "missing":
        return "required key is missing"
    return msg


def _secret_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Alias paths of every field marked SECRET, through nested models."""
    paths: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("fedobs_secret"):
            paths.append((*prefix, alias))
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                paths.extend(_secret_fields(candidate, (*prefix, alias)))
    return paths


def parse_stack_config(stack: str, raw: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> AnyStackConfig:
    """Parse the ``fedobs:`` config of one stack.

    ``raw`` maps config keys without the namespace (``cluster``) to their values, as Pulumi gives
    them (objects already decoded, plain strings possibly holding JSON). ``secret_keys`` names the
    keys Pulumi holds as secrets. Raises :class:`ConfigError` listing every problem.
    """
    values = {key: _decode(value) for key, value in raw.items()}
    secret = set(secret_keys)
    problems: list[Problem] = []
    role = values.get("role")
    model = _KEYS_OF_ROLE.get(role) if isinstance(role, str) else None
    if model is None:
        problems.append(Problem(f"{NAMESPACE}:role", f"must be 'hub' or 'edge', got {role!r}"))
        raise ConfigError(stack, problems)

    for path in _secret_fields(model):
        top = path[0]
        if _has_path(values, path) and top not in secret:
            problems.append(
                Problem(
                    f"{NAMESPACE}:{'.'.join(path)}",
                    f"must be a secret: pulumi config set --secret --path '{NAMESPACE}:{'.'.join(path)}' ...",
                )
            )
    problems.extend(_cross_key_problems(str(role), values))
    try:
        parsed = model.model_validate(values)
    except ValidationError as err:
        problems.extend(Problem(_key_path(e["loc"]), _message(e)) for e in err.errors())
        parsed = None
    if problems or parsed is None:
        unique = {(p.key, p.message): p for p in problems}
        raise ConfigError(stack, sorted(unique.values(), key=lambda p: (p.key, p.message)))
    assert isinstance(parsed, HubConfig | EdgeConfig)
    return parsed


def _decode(value: Any) -> Any:
    """Pulumi hands structured config to the program as JSON text; plain strings stay strings."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def _has_path(values: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = values
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return node is not None


def load_from_pulumi() -> AnyStackConfig:
    """Read and validate the current stack's ``fedobs:`` config from the Pulumi runtime."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    prefix = f"{NAMESPACE}:"
    all_config = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw = {k[len(prefix) :]: v for k, v in all_config.items() if k.startswith(prefix)}
    secret_keys = [k for k in raw if runtime_config.is_config_secret(prefix + k)]
    return parse_stack_config(pulumi.get_stack(), raw, secret_keys)
