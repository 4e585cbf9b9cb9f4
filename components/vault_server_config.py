"""The Vault server configuration (HCL) of one cluster, generated from data in one place.

Pure functions, no Pulumi: the Vault component puts :func:`render_server_hcl` into the chart's
``server.ha.raft.config``, the TLS certificate is issued for :func:`server_certificate_dns_names`,
and the real-cluster tests start exactly this text as OpenBao processes (after the documented
localisation of pod addresses and paths in ``rig/openbao.py``).

Inside a pod, the chart itself sets ``api_addr`` and ``cluster_addr`` through the
``VAULT_API_ADDR``/``VAULT_CLUSTER_ADDR`` environment variables and the Raft node id through
``VAULT_RAFT_NODE_ID`` (``setNodeId``), so the HCL does not repeat them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, model_validator

from components.settings import Settings
from components.vault_names import (
    API_PORT,
    CLUSTER_PORT,
    EXTERNAL_API_PORT,
    TRANSIT_MOUNT,
    VAULT_NAMESPACE,
    VAULT_RELEASE,
)

#: Where the chart mounts the ``vault-server-tls`` Secret (``server.volumes``/``volumeMounts``).
TLS_DIR = "/vault/userconfig/vault-server-tls"
#: Where an edge mounts the hub Vault's CA for the transit seal.
HUB_CA_DIR = "/vault/userconfig/hub-vault-ca"
DATA_PATH = "/vault/data"


@dataclass(frozen=True)
class TransitSealSpec:
    """Auto-unseal through a transit key on another Vault (the hub).

    The token is not in the HCL: the pod gets it as ``VAULT_TOKEN`` from a Secret.
    """

    address: str
    key_name: str
    tls_server_name: str
    mount_path: str = f"{TRANSIT_MOUNT}/"
    tls_ca_cert: str = f"{HUB_CA_DIR}/ca.crt"


class ShamirSeal(Settings):
    """Unseal keys split into shares; a Shamir hub needs operators to unseal after a restart."""

    type: Literal["shamir"]
    key_shares: int = Field(default=5, ge=1, le=10)
    key_threshold: int = Field(default=3, ge=1, le=10)

    @model_validator(mode="after")
    def _threshold_not_above_shares(self) -> ShamirSeal:
        if self.key_threshold > self.key_shares:
            raise ValueError(f"keyThreshold ({self.key_threshold}) is greater than keyShares ({self.key_shares})")
        return self


class TransitSeal(Settings):
    """Auto-unseal through this edge's transit key on the hub Vault (edge stacks only)."""

    type: Literal["transit"]
    recovery_shares: int = Field(default=5, ge=1, le=10)
    recovery_threshold: int = Field(default=3, ge=1, le=10)


class AwsKmsSeal(Settings):
    """Auto-unseal with an AWS KMS key; credentials come from the secret ``fedobs:awsKmsCredentials``
    and reach the pod as environment variables from a Secret."""

    type: Literal["awskms"]
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
    kms_key_id: str = Field(min_length=1)
    endpoint: str | None = Field(default=None, pattern=r"^https://")
    recovery_shares: int = Field(default=5, ge=1, le=10)
    recovery_threshold: int = Field(default=3, ge=1, le=10)


Seal = Annotated[ShamirSeal | TransitSeal | AwsKmsSeal, Field(discriminator="type")]


def key_split(seal: ShamirSeal | TransitSeal | AwsKmsSeal) -> tuple[int, int]:
    """``(shares, threshold)`` of the unseal keys (Shamir) or the recovery keys (auto-unseal)."""
    if isinstance(seal, ShamirSeal):
        return seal.key_shares, seal.key_threshold
    return seal.recovery_shares, seal.recovery_threshold


SealSpec = TransitSealSpec | AwsKmsSeal | None


@dataclass(frozen=True)
class ExternalListener:
    """The listener behind the external LoadBalancer: PROXY protocol from the load balancer's addresses.

    Vault's ``proxy_protocol_behavior = "allow_authorized"`` (hashicorp/vault and openbao/openbao
    ``helper/proxyutil/proxyutil.go``, ``WrapInProxyProto``) wraps the listener in go-proxyproto with a
    policy per connection: from an address in ``proxy_protocol_authorized_addrs`` the policy is ``USE``
    (the header's source address becomes the client address; a connection without a header is still
    accepted as it is), from any other address ``IGNORE`` (a header is read and discarded, the TCP peer
    stays the client address, so nobody else can claim an address). pires/go-proxyproto v0.14.0
    ``protocol.go`` (``readHeader``): no header is an error only under ``REQUIRE``. So in-cluster
    traffic that kube-proxy short-circuits to this port (a Pod dialling the load balancer's IP) still
    works without a header. In-cluster clients use the plain listener on ``API_PORT`` anyway: this one
    exists so that only the load balancer's path runs the PROXY protocol code."""

    authorized_addrs: tuple[str, ...]
    port: int = EXTERNAL_API_PORT


@dataclass(frozen=True)
class VaultServerSpec:
    """Everything the server configuration depends on."""

    cluster_name: str
    external_hostname: str
    release: str = VAULT_RELEASE
    namespace: str = VAULT_NAMESPACE
    replicas: int = 3
    seal: SealSpec = None
    #: The PROXY protocol listener of a LoadBalancer exposure (None: no external Service).
    external_listener: ExternalListener | None = None

    @property
    def internal_service(self) -> str:
        return f"{self.release}-internal"

    def peer_hostname(self, index: int) -> str:
        """The stable DNS name of pod ``index`` through the headless service."""
        return f"{self.release}-{index}.{self.internal_service}"


# --- a minimal HCL writer ---------------------------------------------------------------------
# A block is ("block", type, labels, body); an attribute is (name, value). Values are strings,
# booleans, integers or lists of those, written as JSON literals (a subset of HCL syntax).

HclValue = str | bool | int | list[str]
Attribute = tuple[str, HclValue]


@dataclass(frozen=True)
class Block:
    type: str
    labels: tuple[str, ...]
    body: tuple[Attribute | Block, ...]


def _literal(value: HclValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _emit(items: tuple[Attribute | Block, ...], indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for item in items:
        if isinstance(item, Block):
            labels = "".join(f" {json.dumps(label)}" for label in item.labels)
            lines.append(f"{pad}{item.type}{labels} {{")
            lines.extend(_emit(item.body, indent + 1))
            lines.append(f"{pad}}}")
        else:
            name, value = item
            lines.append(f"{pad}{name} = {_literal(value)}")
    return lines


def to_hcl(items: tuple[Attribute | Block, ...]) -> str:
    return "\n".join(_emit(items, 0)) + "\n"


# --- the configuration ------------------------------------------------------------------------


def server_certificate_dns_names(spec: VaultServerSpec) -> list[str]:
    """Every DNS name a client or peer uses to reach this Vault: the SAN list of its certificate."""
    services = [spec.release, f"{spec.release}-active", f"{spec.release}-standby", spec.internal_service]
    names: list[str] = []
    for service in services:
        names += [service, f"{service}.{spec.namespace}", f"{service}.{spec.namespace}.svc"]
    names += [spec.peer_hostname(i) for i in range(spec.replicas)]
    names += [f"{spec.peer_hostname(i)}.{spec.namespace}.svc" for i in range(spec.replicas)]
    names.append(spec.external_hostname)
    return names


#: IP SANs: the CLI inside each pod talks to https://127.0.0.1:8200.
SERVER_CERTIFICATE_IP_ADDRESSES = ("127.0.0.1",)


def _seal_block(seal: SealSpec) -> tuple[Block, ...]:
    if isinstance(seal, TransitSealSpec):
        return (
            Block(
                "seal",
                ("transit",),
                (
                    ("address", seal.address),
                    ("key_name", seal.key_name),
                    ("mount_path", seal.mount_path),
                    ("tls_ca_cert", seal.tls_ca_cert),
                    ("tls_server_name", seal.tls_server_name),
                    ("disable_renewal", False),
                ),
            ),
        )
    if isinstance(seal, AwsKmsSeal):
        body: tuple[Attribute, ...] = (("region", seal.region), ("kms_key_id", seal.kms_key_id))
        if seal.endpoint:
            body += (("endpoint", seal.endpoint),)
        return (Block("seal", ("awskms",), body),)
    return ()


def _listener_tls() -> tuple[Attribute | Block, ...]:
    return (
        ("tls_disable", False),
        ("tls_cert_file", f"{TLS_DIR}/tls.crt"),
        ("tls_key_file", f"{TLS_DIR}/tls.key"),
        ("tls_min_version", "tls12"),
        Block("telemetry", (), (("unauthenticated_metrics_access", False),)),
    )


def _external_listener_block(listener: ExternalListener | None) -> tuple[Block, ...]:
    if listener is None:
        return ()
    return (
        Block(
            "listener",
            ("tcp",),
            (
                ("address", f"[::]:{listener.port}"),
                ("proxy_protocol_behavior", "allow_authorized"),
                ("proxy_protocol_authorized_addrs", list(listener.authorized_addrs)),
                *_listener_tls(),
            ),
        ),
    )


def server_config_blocks(spec: VaultServerSpec) -> tuple[Attribute | Block, ...]:
    """The server configuration as data (what :func:`render_server_hcl` writes)."""
    retry_joins = tuple(
        Block(
            "retry_join",
            (),
            (
                ("leader_api_addr", f"https://{spec.peer_hostname(i)}:{API_PORT}"),
                ("leader_ca_cert_file", f"{TLS_DIR}/ca.crt"),
                ("leader_tls_servername", spec.peer_hostname(i)),
            ),
        )
        for i in range(spec.replicas)
    )
    return (
        ("ui", True),
        ("cluster_name", spec.cluster_name),
        # Raft storage does not use mlock-able swap; HashiCorp recommends disabling mlock with it.
        ("disable_mlock", True),
        Block(
            "listener",
            ("tcp",),
            (
                ("address", f"[::]:{API_PORT}"),
                ("cluster_address", f"[::]:{CLUSTER_PORT}"),
                *_listener_tls(),
            ),
        ),
        *_external_listener_block(spec.external_listener),
        Block(
            "storage",
            ("raft",),
            (
                ("path", DATA_PATH),
                # 1 is HashiCorp's production recommendation: faster leader failure detection.
                ("performance_multiplier", 1),
                *retry_joins,
            ),
        ),
        *_seal_block(spec.seal),
        Block("service_registration", ("kubernetes",), ()),
        Block(
            "telemetry",
            (),
            (
                ("prometheus_retention_time", "30s"),
                ("disable_hostname", True),
            ),
        ),
    )


def render_server_hcl(spec: VaultServerSpec) -> str:
    """The HCL for ``server.ha.raft.config`` of the official chart."""
    return to_hcl(server_config_blocks(spec))
