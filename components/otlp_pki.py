"""The hub's OTLP mTLS PKI, issued by cert-manager: two self-signed roots that share nothing, the
server CA ``otel-server-ca`` (the gateway's server certificate, the only CA the edges trust) and the
client CA ``client-ca`` (one client certificate per edge, the only CA the gateway trusts).

Each CA's key stays in its cert-manager Secret: nothing but cert-manager reads a CA's Secret. The hub's
cert-sync builds the trust bundles from the ``ca.crt`` of the leaf Secrets it copies (``trust_map``):
cert-manager's CA issuer writes the certificate of the CA that signed the leaf there
(``pkg/controller/certificaterequests/ca/ca.go``, ``pkg/util/pki/parse_certificate_chain.go``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pulumi
import pulumi_kubernetes as k8s
from pydantic import AfterValidator, Field, model_validator

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
#: The client trust bundle: the gateway's ``client_ca_file`` (every client-ca certificate an edge's
#: published certificate may chain to).
CLIENT_CA_KV_PATH = f"{OTEL_KV_PREFIX}/client-ca"
#: The server trust bundle: every server CA certificate the gateway's published certificate may chain
#: to; cert-sync writes it into each edge's bundle as ``ca.crt`` (the edge exporter's ``ca_file``).
SERVER_CA_KV_PATH = f"{OTEL_KV_PREFIX}/server-ca"
#: Where an edge's own Vault keeps its client certificate (edge cert-sync writes it, VSO reads it).
EDGE_CLIENT_TLS_KV_PATH = f"{OTEL_KV_PREFIX}/otel-client-tls"

#: The two roots (Certificate, Secret and Issuer names alike).
SERVER_CA = "otel-server-ca"
CLIENT_CA = "client-ca"
#: The longest lifetime of an edge's client certificate: no revocation list is checked, so expiry is
#: what cuts a removed edge off.
MAX_CLIENT_CERT_HOURS = 24


def hub_client_tls_kv_path(edge: str) -> str:
    """Where the hub Vault keeps one edge's client certificate (under that edge's own prefix)."""
    return f"{EDGES_KV_PREFIX}/{edge}/otel-client-tls"


def _at_most_a_day(hours: int) -> int:
    if hours > MAX_CLIENT_CERT_HOURS:
        raise ValueError(
            f"{hours} hours is longer than {MAX_CLIENT_CERT_HOURS}: the gateway checks no revocation list, so an "
            f"edge removed from fedobs:edges keeps mTLS access until its certificate expires"
        )
    return hours


#: Hours, at least 1 (cert-manager's shortest ``duration``), at most a day.
ClientCertHours = Annotated[int, Field(ge=1), AfterValidator(_at_most_a_day)]


class PkiSettings(Settings):
    """``fedobs:pki`` (hub): the OTLP mTLS PKI's key type, lifetimes, subjects, receiver names."""

    namespace: DnsLabel = "fedobs-pki"
    organization: str = Field(default="fedobs", min_length=1)
    key_algorithm: KeyAlgorithm = "ECDSA"
    key_size: int = 256
    #: Both roots.
    ca_duration_hours: int = Field(default=43800, ge=720)
    #: The gateway's server certificate.
    cert_duration_hours: int = Field(default=2160, ge=24)
    #: Each edge's client certificate (renewed at 2/3: 8 h before it expires with the default 24 h).
    client_cert_duration_hours: ClientCertHours = MAX_CLIENT_CERT_HOURS
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
    """Which leaf Secret (``namespace/name``) the hub's cert-sync copies whole to which KV path."""
    mapping = {f"{settings.namespace}/{GATEWAY_TLS_SECRET}": GATEWAY_TLS_KV_PATH}
    mapping.update({f"{settings.namespace}/{client_secret_name(e)}": hub_client_tls_kv_path(e) for e in edges})
    return mapping


def trust_map(settings: PkiSettings, edges: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each trust bundle's KV path and the leaf Secrets whose ``ca.crt`` (their issuer) it holds: the
    client bundle follows the edges' certificates, the server bundle the gateway's. No CA Secret."""
    return {
        CLIENT_CA_KV_PATH: tuple(f"{settings.namespace}/{client_secret_name(e)}" for e in edges),
        SERVER_CA_KV_PATH: (f"{settings.namespace}/{GATEWAY_TLS_SECRET}",),
    }


def peer_trust_map(edges: tuple[str, ...]) -> dict[str, str]:
    """Each edge's bundle carries the server trust bundle as its ``ca.crt``: the edge verifies the
    gateway with it, never with its own certificate's issuer."""
    return {hub_client_tls_kv_path(e): SERVER_CA_KV_PATH for e in edges}


def renew_before(hours: int) -> str:
    """cert-manager renews at renewBefore: a third of the lifetime left, i.e. at 2/3 of it."""
    minutes = hours * 60 // 3
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def _lifetime(hours: int) -> dict[str, str]:
    return {"duration": f"{hours}h", "renewBefore": renew_before(hours)}


def name_constraints(args: PkiSettings) -> dict[str, dict[str, Any]]:
    """Each root's X.509 name constraints (cert-manager ``spec.nameConstraints``, beta and on by
    default since v1.17; only on CA Certificates). The server CA may vouch only for the receiver's
    names; the client CA for no DNS name and no IP address at all (an empty DNS constraint matches
    every name: RFC 5280 leaves it open, Go's crypto/x509 and OpenSSL follow NSS), so whatever it
    signs fails as a server certificate even where it were trusted. Client certificates carry no
    SAN (the edge's name is the common name), which no constraint restricts."""
    return {
        SERVER_CA: {"critical": True, "permitted": {"dnsDomains": list(args.receiver_hostnames)}},
        CLIENT_CA: {"critical": True, "excluded": {"dnsDomains": [""], "ipRanges": ["0.0.0.0/0", "::/0"]}},
    }


def _root(args: PkiSettings, name: str, title: str, key: dict[str, Any]) -> dict[str, Any]:
    return {
        "isCA": True,
        "commonName": f"{args.organization} OTLP {title}",
        "secretName": name,
        "subject": {"organizations": [args.organization]},
        "privateKey": key,
        "issuerRef": {"name": "selfsigned", "kind": "Issuer", "group": "cert-manager.io"},
        "usages": ["cert sign", "crl sign"],
        "nameConstraints": name_constraints(args)[name],
        **_lifetime(args.ca_duration_hours),
    }


def certificate_specs(args: PkiSettings, edges: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Every Certificate's spec by name (pure: the tests issue test certificates from these)."""
    key: dict[str, Any] = {"algorithm": args.key_algorithm, "rotationPolicy": "Always"}
    if args.key_algorithm != "Ed25519":
        key["size"] = args.key_size
    subject = {"organizations": [args.organization]}

    def issuer(name: str) -> dict[str, str]:
        return {"name": name, "kind": "Issuer", "group": "cert-manager.io"}

    specs: dict[str, dict[str, Any]] = {
        SERVER_CA: _root(args, SERVER_CA, "server CA", key),
        CLIENT_CA: _root(args, CLIENT_CA, "client CA", key),
        GATEWAY_TLS_SECRET: {
            "commonName": args.receiver_hostnames[0],
            "dnsNames": list(args.receiver_hostnames),
            "secretName": GATEWAY_TLS_SECRET,
            "subject": subject,
            "privateKey": key,
            "issuerRef": issuer(SERVER_CA),
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
            "issuerRef": issuer(CLIENT_CA),
            "usages": ["client auth", "digital signature", "key encipherment"],
            **_lifetime(args.client_cert_duration_hours),
        }
    return specs


class OtlpPki(pulumi.ComponentResource):
    """The OTLP mTLS PKI on the hub.

    Guarantees: two self-signed roots that share no key: the gateway's certificate comes only from
    ``otel-server-ca`` (server-auth usage, constrained to the receiver's names), edge client
    certificates only from ``client-ca`` (client-auth usage, at most a day); every certificate renews
    at 2/3 of its lifetime with a fresh key; everything lives in its own restricted namespace, from
    which the hub's cert-sync copies the leaf Secrets into Vault (``sync_map``) and builds the trust
    bundles from their ``ca.crt`` (``trust_map``, ``peer_trust_map``): no Role but cert-manager's
    reads a CA's Secret.
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
        issuer(f"{SERVER_CA}-issuer", SERVER_CA, {"ca": {"secretName": SERVER_CA}})
        issuer(f"{CLIENT_CA}-issuer", CLIENT_CA, {"ca": {"secretName": CLIENT_CA}})
        for cert_name, spec in specs.items():
            certificate(cert_name, spec)
        self.sync_map = sync_map(settings, edges)
        self.trust_map = trust_map(settings, edges)
        self.peer_trust_map = peer_trust_map(edges)
        self.register_outputs({"namespace": args.namespace, "sync_map": self.sync_map, "trust_map": self.trust_map})
