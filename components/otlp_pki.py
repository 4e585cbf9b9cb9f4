"""The hub's OTLP mTLS PKI, issued by cert-manager: a root, the ``client-ca``, the hub receiver's
server certificate and one client certificate per edge."""

from __future__ import annotations

from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field, model_validator

from components.pod_security import restricted_namespace
from components.settings import DnsLabel, DnsName, Settings
from components.vault_names import EDGES_KV_PREFIX, OTEL_KV_PREFIX

TYPE_TOKEN = "fedobs:pki:OtlpPki"
#: The token this component had before it matched its class name; an alias keeps existing stacks.
FORMER_TYPE_TOKEN = "fedobs:pki:OtlpMtls"
KeyAlgorithm = Literal["ECDSA", "RSA", "Ed25519"]

#: Secret names the PKI writes and the collectors mount, and the KV paths cert-sync carries them on.
GATEWAY_TLS_SECRET = "otel-gateway-tls"
CLIENT_CA_SECRET = "otel-client-ca"
CLIENT_TLS_SECRET = "otel-client-tls"
GATEWAY_TLS_KV_PATH = f"{OTEL_KV_PREFIX}/otel-gateway-tls"
CLIENT_CA_KV_PATH = f"{OTEL_KV_PREFIX}/client-ca"
#: Where an edge's own Vault keeps its client certificate (edge cert-sync writes it, VSO reads it).
EDGE_CLIENT_TLS_KV_PATH = f"{OTEL_KV_PREFIX}/otel-client-tls"


def hub_client_tls_kv_path(edge: str) -> str:
    """Where the hub Vault keeps one edge's client certificate (under that edge's own prefix)."""
    return f"{EDGES_KV_PREFIX}/{edge}/otel-client-tls"


class PkiSettings(Settings):
    """``fedobs:pki`` (hub): the OTLP mTLS PKI's key type, lifetimes, subjects, receiver names."""

    namespace: DnsLabel = "fedobs-pki"
    organization: str = Field(default="fedobs", min_length=1)
    key_algorithm: KeyAlgorithm = "ECDSA"
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


def client_secret_name(edge: str) -> str:
    return f"otel-client-tls-{edge}"


def sync_map(settings: PkiSettings, edges: tuple[str, ...]) -> dict[str, str]:
    """Which Secret (``namespace/name``) the hub's cert-sync copies whole to which KV path."""
    mapping = {f"{settings.namespace}/{GATEWAY_TLS_SECRET}": GATEWAY_TLS_KV_PATH}
    mapping.update({f"{settings.namespace}/{client_secret_name(e)}": hub_client_tls_kv_path(e) for e in edges})
    return mapping


def ca_sync_map(settings: PkiSettings) -> dict[str, str]:
    """CA Secrets of which cert-sync copies only the certificate (the receiver trusts client-ca)."""
    return {f"{settings.namespace}/client-ca": CLIENT_CA_KV_PATH}


def _lifetime(hours: int) -> dict[str, str]:
    # cert-manager renews at renewBefore: a third of the lifetime left, i.e. at 2/3 of it.
    return {"duration": f"{hours}h", "renewBefore": f"{hours // 3}h"}


def certificate_specs(args: PkiSettings, edges: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Every Certificate's spec by name (pure: the tests issue test certificates from these)."""
    key: dict[str, Any] = {"algorithm": args.key_algorithm, "rotationPolicy": "Always"}
    if args.key_algorithm != "Ed25519":
        key["size"] = args.key_size
    subject = {"organizations": [args.organization]}

    def issuer(name: str) -> dict[str, str]:
        return {"name": name, "kind": "Issuer", "group": "cert-manager.io"}

    specs: dict[str, dict[str, Any]] = {
        "otel-root-ca": {
            "isCA": True,
            "commonName": f"{args.organization} OTLP root CA",
            "secretName": "otel-root-ca",
            "subject": subject,
            "privateKey": key,
            "issuerRef": issuer("selfsigned"),
            "usages": ["cert sign", "crl sign"],
            **_lifetime(args.ca_duration_hours),
        },
        "client-ca": {
            "isCA": True,
            "commonName": f"{args.organization} OTLP client CA",
            "secretName": "client-ca",
            "subject": subject,
            "privateKey": key,
            "issuerRef": issuer("otel-root"),
            "usages": ["cert sign", "crl sign"],
            **_lifetime(args.ca_duration_hours),
        },
        "otel-gateway-tls": {
            "commonName": args.receiver_hostnames[0],
            "dnsNames": list(args.receiver_hostnames),
            "secretName": GATEWAY_TLS_SECRET,
            "subject": subject,
            "privateKey": key,
            "issuerRef": issuer("otel-root"),
            "usages": ["server auth", "digital signature", "key encipherment"],
            **_lifetime(args.cert_duration_hours),
        },
    }
    for edge in edges:
        specs[client_secret_name(edge)] = {
            "commonName": edge,
            "secretName": client_secret_name(edge),
            "subject": subject,
            "privateKey": key,
            "issuerRef": issuer("client-ca"),
            "usages": ["client auth", "digital signature", "key encipherment"],
            **_lifetime(args.cert_duration_hours),
        }
    return specs


class OtlpPki(pulumi.ComponentResource):
    """The OTLP mTLS PKI on the hub.

    Guarantees: edge client certificates come only from ``client-ca`` and carry only the client-auth
    usage; the receiver's certificate only server-auth; every certificate renews at 2/3 of its
    lifetime with a fresh key; everything lives in its own restricted namespace, from which the
    hub's cert-sync copies it into Vault (``sync_map``).
    """

    def __init__(
        self,
        name: str,
        settings: PkiSettings,
        *,
        edges: tuple[str, ...],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """The Kubernetes provider comes through ``opts``, and the caller makes the component wait for
        cert-manager (``depends_on``): Issuers and Certificates need only its CRDs, and cert-manager
        itself issues each Certificate once the Issuer it names (and that Issuer's CA Secret) is ready."""
        former = pulumi.Alias(type_=FORMER_TYPE_TOKEN)
        super().__init__(
            TYPE_TOKEN, name, None, pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=[former]))
        )
        args = settings
        k8s_opts = pulumi.ResourceOptions(parent=self)
        namespace = restricted_namespace(f"{name}-namespace", args.namespace, k8s_opts)
        after: list[pulumi.Resource] = [namespace]

        def issuer(resource_name: str, issuer_name: str, spec: dict[str, Any]) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(
                f"{name}-{resource_name}",
                api_version="cert-manager.io/v1",
                kind="Issuer",
                metadata={"name": issuer_name, "namespace": args.namespace},
                spec=spec,
                opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=list(after))),
            )

        def certificate(cert_name: str, spec: dict[str, Any]) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(
                f"{name}-{cert_name}",
                api_version="cert-manager.io/v1",
                kind="Certificate",
                metadata={"name": cert_name, "namespace": args.namespace},
                spec=spec,
                opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=list(after))),
            )

        specs = certificate_specs(settings, edges)
        issuer("selfsigned", "selfsigned", {"selfSigned": {}})
        issuer("otel-root", "otel-root", {"ca": {"secretName": "otel-root-ca"}})
        issuer("client-ca-issuer", "client-ca", {"ca": {"secretName": "client-ca"}})
        for cert_name, spec in specs.items():
            certificate(cert_name, spec)
        self.sync_map = sync_map(settings, edges)
        self.ca_sync_map = ca_sync_map(settings)
        self.register_outputs({"namespace": args.namespace, "sync_map": self.sync_map, "ca_sync_map": self.ca_sync_map})
