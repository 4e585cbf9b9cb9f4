"""Typed, validated stack configuration for the two stack roles, ``hub`` and ``edge``.

Every key of the ``fedobs:`` config namespace is parsed into one pydantic model per role
(:class:`HubConfig`, :class:`EdgeConfig`), composed of the settings models each component defines
beside itself (``components/*.py``); rules across sections are model validators here and in those
models. Parsing collects *every* problem and raises one
:class:`ConfigError` whose message lists each problem by its config key path
(``fedobs:cluster.pools[0].autoscaler``), before the program registers any resource.

Secret values are never accepted in plain text: a model field marked with :data:`SECRET`
must come from a config key that Pulumi holds as a secret (``pulumi config set --secret``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from components.admin_identity import AdminDeployIdentitySettings
from components.admission import AdmissionSettings
from components.cluster import ClusterSettings, ExistingClusterSettings, LkeClusterSettings, platform_of
from components.collectors import (
    FORWARDER,
    GATEWAY,
    CollectorSettings,
    CollectorShape,
    collector_syncs,
    collector_workload,
)
from components.dynamic_secrets import DynamicWorkloadSettings, dynamic_secret_problems
from components.edge_identity import EdgeDeployIdentitySettings
from components.otlp_pki import PkiSettings
from components.programs_image import EXAMPLE as PROGRAMS_IMAGE_EXAMPLE
from components.programs_image import ProgramsImage, is_pinned_by_digest
from components.raft_snapshots import creates_bucket, linode_region_problem
from components.settings import CONFIG_NAMESPACE, SECRET, AccessKeyPair, Cidr, DnsLabel, RuleProblem, Settings
from components.vault import (
    LINODE_STORAGE_CLASS_PREFIX,
    AddressExposure,
    LoadBalancerExposure,
    VaultSettings,
    unseal_key_problems,
)
from components.vault_config import DatabaseAdmin, VaultConfigSettings
from components.vault_server_config import AwsKmsSeal, TransitSeal
from components.vso import DistributionSettings, SyncSettings

NS = CONFIG_NAMESPACE
STACK_REFERENCE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")
#: The pydantic error type of the cross-section rules; its context carries every finding.
RULES_ERROR = "fedobs_rules"
#: How often a config with field errors is pruned to still evaluate the rules on the rest.
MAX_PRUNE_ROUNDS = 8
#: Discriminator tags pydantic puts into the location of tagged unions; they are not config keys.
UNION_TAGS = frozenset({"lke", "existing", "shamir", "transit", "awskms", "loadBalancer", "address"})
T = TypeVar("T")


class EdgeEntry(Settings):
    """An edge cluster the hub serves: its client certificate, transit key and scoped credential.

    ``deploySubject``: the ``sub`` of this edge's deploy JWT, when it does not follow
    ``fedobs:edgeDeployIdentity.subjectTemplate``. ``egressCidrs``: where the edge's cert-sync reaches
    the hub from; its AppRole secret_id and tokens work from there only (empty: anywhere).
    """

    name: DnsLabel
    deploy_subject: str | None = Field(default=None, min_length=1)
    egress_cidrs: tuple[Cidr, ...] = ()


class StackConfig(Settings):
    """What every stack has, whatever its role. Each section is its component's settings model."""

    role: Literal["hub", "edge"]
    cluster: ClusterSettings
    vault: VaultSettings
    #: The image every Job and CronJob runs, by digest (components/programs_image.py).
    programs_image: ProgramsImage
    #: Loudly named: allows a programs image without a digest, for a development stack only.
    development_mode: bool = False
    kubeconfig: str | None = Field(default=None, json_schema_extra=SECRET)
    vault_config: VaultConfigSettings = VaultConfigSettings()
    distribution: DistributionSettings = DistributionSettings()
    dynamic_secrets: tuple[DynamicWorkloadSettings, ...] = ()
    collector: CollectorSettings | None = None
    admission: AdmissionSettings | None = None
    aws_kms_credentials: AccessKeyPair | None = None
    snapshot_credentials: AccessKeyPair | None = None
    aws_root_credentials: AccessKeyPair | None = None
    database_admins: dict[DnsLabel, DatabaseAdmin] = Field(default_factory=dict, json_schema_extra=SECRET)

    #: Hub and edge differ by their collector's shape (data), not by code paths.
    collector_shape: ClassVar[CollectorShape]

    @property
    def enabled_collector(self) -> CollectorSettings | None:
        return self.collector if self.collector is not None and self.collector.enabled else None

    @property
    def enabled_admission(self) -> AdmissionSettings | None:
        return self.admission if self.admission is not None and self.admission.enabled else None

    @property
    def own_syncs(self) -> tuple[SyncSettings, ...]:
        """The syncs the stack derives itself: every Secret its collector mounts."""
        collector = self.enabled_collector
        return collector_syncs(collector, self.collector_shape) if collector else ()

    @property
    def all_syncs(self) -> tuple[SyncSettings, ...]:
        return (*self.distribution.syncs, *self.own_syncs)

    def rule_problems(self) -> list[RuleProblem]:
        """Rules across sections, each finding named by its config key (without the namespace)."""
        problems: list[RuleProblem] = []
        if not self.development_mode and not is_pinned_by_digest(self.programs_image):
            problems.append(
                RuleProblem(
                    "programsImage",
                    f"{self.programs_image!r} is not pinned by digest: a tag can be moved to other content. Give "
                    f"the digest release.yml recorded ({PROGRAMS_IMAGE_EXAMPLE}), or set {NS}:developmentMode: "
                    "true on a development stack",
                    ("programsImage", "developmentMode"),
                )
            )
        problems += unseal_key_problems(self.vault, self.development_mode)
        seal = self.vault.seal
        if isinstance(seal, AwsKmsSeal) and self.aws_kms_credentials is None:
            problems.append(
                RuleProblem(
                    "awsKmsCredentials",
                    f"required when {NS}:vault.seal.type is 'awskms'",
                    ("vault.seal", "awsKmsCredentials"),
                )
            )
        if self.vault.enabled_snapshots is not None and self.snapshot_credentials is None:
            problems.append(
                RuleProblem(
                    "snapshotCredentials",
                    f"required when {NS}:vault.snapshots is enabled",
                    ("vault.snapshots", "snapshotCredentials"),
                )
            )
        problems += self.vault_config.reference_problems(self.database_admins, self.aws_root_credentials)
        collector = self.enabled_collector
        own_workloads = (collector_workload(collector, self.collector_shape),) if collector else ()
        problems += self.distribution.restart_target_problems(own_workloads)
        problems += self.distribution.reserved_secret_problems(self.own_syncs)
        problems += dynamic_secret_problems(
            self.dynamic_secrets, self.vault_config, {s.namespace for s in self.all_syncs}
        )
        if isinstance(self.cluster, ExistingClusterSettings) and self.kubeconfig and self.cluster.context:
            problems.append(
                RuleProblem(
                    "cluster.context", f"give either this or {NS}:kubeconfig, not both", ("cluster", "kubeconfig")
                )
            )
        if isinstance(self.cluster, ExistingClusterSettings):
            problems += linode_only_problems(self.vault)
        problems += client_address_problems(self.vault, [("vault.adminCidrs", self.vault.admin_cidrs)])
        snapshots = self.vault.snapshots
        platform = platform_of(self.cluster)
        if snapshots is not None and platform.linode and creates_bucket(snapshots.bucket, platform):
            # the bucket the stack creates on LKE is a Linode one: its region must be a Linode region
            region = linode_region_problem(snapshots.bucket.region)
            if region is not None:
                problems.append(
                    RuleProblem("vault.snapshots.bucket.region", region, ("vault.snapshots.bucket", "cluster"))
                )
        return problems

    @model_validator(mode="after")
    def _rules(self) -> Self:
        problems = self.rule_problems()
        if problems:
            raise PydanticCustomError(
                RULES_ERROR, "{count} rule problems", {"count": len(problems), "problems": problems}
            )
        return self

    def require(self, value: T | None, key: str) -> T:
        """A value the rules above guarantee; a ``ConfigError`` (never an ``assert``) if they did not."""
        if value is None:
            raise ConfigError(str(self.role), [Problem(f"{NS}:{key}", "required here")])
        return value


def client_address_problems(vault: VaultSettings, bindings: Iterable[tuple[str, tuple[str, ...]]]) -> list[RuleProblem]:
    """CIDR bindings (config key, CIDRs) need an exposure that passes the client's address to Vault."""
    if not isinstance(vault.exposure, AddressExposure):
        return []
    return [
        RuleProblem(
            key,
            f"binds logins to addresses, but with {NS}:vault.exposure.type 'address' Vault sees the address of "
            "the proxy, ingress or tunnel in front of it, never the client's: every login would be refused. Use "
            "a 'loadBalancer' exposure (on LKE the NodeBalancer passes the client's address by PROXY protocol)",
            (key, "vault.exposure"),
        )
        for key, cidrs in bindings
        if cidrs
    ]


def linode_only_problems(vault: VaultSettings) -> list[RuleProblem]:
    """Values that exist only on Linode, in a stack whose cluster is an existing one (which may run
    anywhere): each named by its key, with what to give instead."""
    problems: list[RuleProblem] = []
    existing = f"in existing-cluster mode ({NS}:cluster.mode 'existing')"
    storage_class = vault.storage_class
    if storage_class is not None and storage_class.startswith(LINODE_STORAGE_CLASS_PREFIX):
        problems.append(
            RuleProblem(
                "vault.storageClass",
                f"'{storage_class}' is a storage class of Linode's Block Storage CSI driver, which only LKE has: "
                f"{existing} leave it unset for the cluster's default StorageClass, or name one of the cluster's own",
                ("cluster", "vault.storageClass"),
            )
        )
    exposure = vault.exposure
    if isinstance(exposure, LoadBalancerExposure) and exposure.node_balancer_ranges is not None:
        problems.append(
            RuleProblem(
                "vault.exposure.nodeBalancerRanges",
                f"where Linode NodeBalancers connect from, so whose PROXY protocol headers Vault believes: {existing} "
                "no NodeBalancer sends any, and the Service targets Vault's plain listener (leave this unset)",
                ("cluster", "vault.exposure"),
            )
        )
    if vault.snapshots is not None and vault.snapshots.bucket.create:
        problems.append(
            RuleProblem(
                "vault.snapshots.bucket.create",
                f"declares a Linode Object Storage bucket, which only an LKE stack does: {existing} give an "
                "existing bucket at any S3-compatible endpoint (leave this unset or false)",
                ("cluster", "vault.snapshots.bucket"),
            )
        )
    return problems


class HubConfig(StackConfig):
    role: Literal["hub"]
    edges: tuple[EdgeEntry, ...] = ()
    #: Edges cut off whose transit keys the hub keeps (protected): the first step of the cut-off
    #: flow (docs/security.md). Destroying a key is a second, explicit step.
    retired_edges: tuple[DnsLabel, ...] = ()
    edge_deploy_identity: EdgeDeployIdentitySettings | None = None
    #: Pulumi's own login from the hub's deploy job (components/admin_identity.py).
    hub_deploy_identity: AdminDeployIdentitySettings | None = None
    pki: PkiSettings | None = None

    collector_shape: ClassVar[CollectorShape] = GATEWAY

    @field_validator("edges")
    @classmethod
    def _unique_edge_names(cls, edges: tuple[EdgeEntry, ...]) -> tuple[EdgeEntry, ...]:
        names = [e.name for e in edges]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate edge names: {', '.join(duplicates)}")
        return edges

    @property
    def edge_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.edges)

    def _retired_edge_problems(self) -> list[RuleProblem]:
        names = set(self.edge_names)
        problems = [
            RuleProblem(
                f"retiredEdges[{index}]",
                f"{edge} is still in {NS}:edges: an edge is served or retired, never both (to cut it off, "
                f"remove it from {NS}:edges; its transit key stays while it is listed here)",
                (f"retiredEdges[{index}]", "edges"),
            )
            for index, edge in enumerate(self.retired_edges)
            if edge in names
        ]
        duplicates = sorted({e for e in self.retired_edges if self.retired_edges.count(e) > 1})
        if duplicates:
            problems.append(
                RuleProblem("retiredEdges", f"duplicate edge names: {', '.join(duplicates)}", ("retiredEdges",))
            )
        return problems

    @property
    def edge_cidrs(self) -> dict[str, tuple[str, ...]]:
        """Each edge's ``egressCidrs``, for those that have any."""
        return {e.name: e.egress_cidrs for e in self.edges if e.egress_cidrs}

    def deploy_subjects(self, identity: EdgeDeployIdentitySettings) -> dict[str, str]:
        """Each edge's deploy JWT subject: its ``deploySubject``, else the identity's template."""
        return {e.name: identity.subject(e.name, e.deploy_subject) for e in self.edges}

    def _deploy_identity_problems(self) -> list[RuleProblem]:
        if not self.edges:
            return []
        identity = self.edge_deploy_identity
        if identity is None:
            return [
                RuleProblem(
                    "edgeDeployIdentity",
                    "required when fedobs:edges is set: each edge creates its own hub credentials, logged in "
                    "with its deploy identity (issuer, audience, subjectTemplate and its keys)",
                    ("edges", "edgeDeployIdentity"),
                )
            ]
        subjects = self.deploy_subjects(identity)
        seen: dict[str, str] = {}
        problems = []
        for index, entry in enumerate(self.edges):
            subject = subjects[entry.name]
            if subject in seen:
                problems.append(
                    RuleProblem(
                        f"edges[{index}].deploySubject",
                        f"{entry.name} would share the deploy subject {subject!r} with {seen[subject]}: "
                        "every edge needs an identity of its own",
                        (f"edges[{index}]", "edgeDeployIdentity"),
                    )
                )
            seen.setdefault(subject, entry.name)
        return problems

    def rule_problems(self) -> list[RuleProblem]:
        problems = [*super().rule_problems(), *self._deploy_identity_problems(), *self._retired_edge_problems()]
        problems += client_address_problems(
            self.vault, [(f"edges[{i}].egressCidrs", e.egress_cidrs) for i, e in enumerate(self.edges)]
        )
        if isinstance(self.vault.seal, TransitSeal):
            problems.append(
                RuleProblem(
                    "vault.seal.type",
                    "'transit' is for edges: the hub has no upstream Vault to unseal through",
                    ("vault.seal",),
                )
            )
        if isinstance(self.cluster, LkeClusterSettings) and not self.cluster.control_plane_acl:
            problems.append(
                RuleProblem(
                    "cluster.controlPlaneAcl",
                    "the hub's control plane must be restricted: list the CIDRs allowed to reach it",
                    ("cluster.controlPlaneAcl",),
                )
            )
        collector = self.enabled_collector
        if collector is not None:
            if self.pki is None:
                problems.append(
                    RuleProblem(
                        "pki",
                        f"required when {NS}:collector is enabled: the gateway's server certificate and the "
                        "client CA come from it",
                        ("pki", "collector"),
                    )
                )
            if not self.edges:
                problems.append(
                    RuleProblem(
                        "edges",
                        f"at least one edge is needed when {NS}:collector is enabled: the gateway trusts client-ca "
                        "only through the certificates it issued to edges (no Role reads a CA's own Secret), so "
                        f"with none it would trust nothing and never start; disable {NS}:collector until the "
                        "first edge",
                        ("edges", "collector"),
                    )
                )
            if not collector.allowed_source_ranges:
                problems.append(
                    RuleProblem(
                        "collector.allowedSourceRanges",
                        "the OTLP LoadBalancer must be restricted: list the CIDRs the edges send from",
                        ("collector.allowedSourceRanges",),
                    )
                )
        return problems


class EdgeConfig(StackConfig):
    role: Literal["edge"]
    edge_name: DnsLabel
    hub_stack: str = Field(pattern=STACK_REFERENCE.pattern)

    collector_shape: ClassVar[CollectorShape] = FORWARDER

    def rule_problems(self) -> list[RuleProblem]:
        problems = super().rule_problems()
        collector = self.enabled_collector
        if collector is not None and collector.allowed_source_ranges:
            problems.append(
                RuleProblem(
                    "collector.allowedSourceRanges",
                    "only the hub exposes an OTLP receiver",
                    ("collector.allowedSourceRanges",),
                )
            )
        return problems


AnyStackConfig = HubConfig | EdgeConfig

_MODEL_OF_ROLE: dict[str, type[HubConfig] | type[EdgeConfig]] = {"hub": HubConfig, "edge": EdgeConfig}


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
    text = f"{NS}:{parts[0]}" if parts else NS
    for part in parts[1:]:
        # pydantic puts the discriminator tag in the location of tagged unions; it is not a key.
        if isinstance(part, str) and part in UNION_TAGS:
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


def _split_errors(err: ValidationError) -> tuple[list[Problem], list[RuleProblem], list[tuple[Any, ...]]]:
    """Field problems, rule findings and the locations of the failing fields."""
    fields: list[Problem] = []
    rules: list[RuleProblem] = []
    locations: list[tuple[Any, ...]] = []
    for error in err.errors():
        if error["type"] == RULES_ERROR:
            rules.extend(error["ctx"]["problems"])
        else:
            fields.append(Problem(_key_path(error["loc"]), _message(error)))
            locations.append(tuple(error["loc"]))
    return fields, rules, locations


def _prune(values: Any, loc: tuple[Any, ...], removed: list[tuple[str, int]]) -> str | None:
    """Drop the deepest existing value on ``loc``; returns its key path and records list removals."""
    node: Any = values
    parent: Any = None
    last: Any = None
    path: list[Any] = []
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            parent, last = node, part
            path.append(part)
            node = node[part]
    if parent is None:
        return None
    if isinstance(parent, list) and isinstance(last, int):
        removed.append((_key_path(path[:-1]), last))
    del parent[last]
    return _key_path(path).removeprefix(f"{NS}:")


def _restore_index(key: str, removed: list[tuple[str, int]]) -> str:
    """A rule key about a pruned tree, with list indices as in the user's config."""
    for list_key, index in reversed(removed):
        prefix = f"{list_key}["
        if key.startswith(prefix):
            number, _, rest = key[len(prefix) :].partition("]")
            if number.isdigit() and int(number) >= index:
                key = f"{prefix}{int(number) + 1}]{rest}"
    return key


def _rules_despite_field_errors(
    model: type[HubConfig] | type[EdgeConfig], values: dict[str, Any], locations: list[tuple[Any, ...]]
) -> list[Problem]:
    """Rule findings of a config that has field errors too: the failing values are pruned until the
    rest parses, so one run still reports every problem; a rule that read a pruned value is skipped."""
    tree = copy.deepcopy(values)
    removed: list[tuple[str, int]] = []
    pruned: list[str] = []
    for _ in range(MAX_PRUNE_ROUNDS):
        # Highest list indices first: removing an item shifts the ones after it.
        ordered = sorted(
            locations,
            key=lambda loc: [(isinstance(p, int), p if isinstance(p, int) else 0, str(p)) for p in loc],
            reverse=True,
        )
        pruned += [key for loc in ordered if (key := _prune(tree, loc, removed)) is not None]
        try:
            model.model_validate(tree)
            return []
        except ValidationError as err:
            _, rules, locations = _split_errors(err)
        if not locations:
            return [
                Problem(_restore_index(f"{NS}:{rule.key}", removed), rule.message)
                for rule in rules
                if not any(_overlap(read, gone) for read in rule.inputs for gone in pruned)
            ]
    return []


def _overlap(first: str, second: str) -> bool:
    """Whether one key is the other or lies inside it (``a.b`` and ``a.b[0].c``)."""
    shorter, longer = sorted((first, second), key=len)
    return longer == shorter or longer.startswith((f"{shorter}.", f"{shorter}["))


def parse_stack_config(stack: str, raw: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> AnyStackConfig:
    """Parse the ``fedobs:`` config of one stack.

    ``raw`` maps config keys without the namespace (``cluster``) to their values, as Pulumi gives
    them (objects already decoded, plain strings possibly holding JSON). ``secret_keys`` names the
    keys Pulumi holds as secrets. Raises :class:`ConfigError` listing every problem.
    """
    values = {key: _decode(value) for key, value in raw.items()}
    role = values.get("role")
    model = _MODEL_OF_ROLE.get(role) if isinstance(role, str) else None
    if model is None:
        raise ConfigError(stack, [Problem(f"{NS}:role", f"must be 'hub' or 'edge', got {role!r}")])
    secret = set(secret_keys)
    problems = [
        Problem(
            f"{NS}:{'.'.join(path)}",
            f"must be a secret: pulumi config set --secret --path '{NS}:{'.'.join(path)}' ...",
        )
        for path in _secret_fields(model)
        if _has_path(values, path) and path[0] not in secret
    ]
    try:
        parsed = model.model_validate(values)
    except ValidationError as err:
        fields, rules, locations = _split_errors(err)
        problems += fields + [Problem(f"{NS}:{rule.key}", rule.message) for rule in rules]
        if locations:
            problems += _rules_despite_field_errors(model, values, locations)
        unique = {(p.key, p.message): p for p in problems}
        raise ConfigError(stack, sorted(unique.values(), key=lambda p: (p.key, p.message))) from None
    if problems:
        raise ConfigError(stack, sorted(problems, key=lambda p: (p.key, p.message)))
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

    prefix = f"{NS}:"
    all_config = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw = {k[len(prefix) :]: v for k, v in all_config.items() if k.startswith(prefix)}
    secret_keys = [k for k in raw if runtime_config.is_config_secret(prefix + k)]
    return parse_stack_config(pulumi.get_stack(), raw, secret_keys)
