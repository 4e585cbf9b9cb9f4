"""The hub's OTLP mTLS PKI, issued by cert-manager: a root, the ``client-ca``, the hub receiver's
server certificate and one client certificate per edge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from components.pod_security import restricted_namespace

TYPE_TOKEN = "fedobs:pki:OtlpMtls"
KeyAlgorithm = Literal["ECDSA", "RSA", "Ed25519"]


@dataclass(frozen=True)
class OtlpPkiArgs:
    provider: k8s.Provider
    cert_manager: pulumi.Resource
    edges: tuple[str, ...]
    receiver_hostnames: tuple[str, ...]
    namespace: str = "fedobs-pki"
    organization: str = "fedobs"
    key_algorithm: KeyAlgorithm = "ECDSA"
    key_size: int = 256
    ca_duration_hours: int = 43800
    cert_duration_hours: int = 2160


def client_secret_name(edge: str) -> str:
    return f"otel-client-tls-{edge}"


def sync_map(args: OtlpPkiArgs) -> dict[str, str]:
    """Which Secret (``namespace/name``) the hub's cert-sync copies whole to which KV path."""
    mapping = {f"{args.namespace}/otel-gateway-tls": "otel/otel-gateway-tls"}
    mapping.update({f"{args.namespace}/{client_secret_name(e)}": f"edges/{e}/otel-client-tls" for e in args.edges})
    return mapping


def ca_sync_map(args: OtlpPkiArgs) -> dict[str, str]:
    """CA Secrets of which cert-sync copies only the certificate (the receiver trusts client-ca)."""
    return {f"{args.namespace}/client-ca": "otel/client-ca"}


def _lifetime(hours: int) -> dict[str, str]:
    # cert-manager renews at renewBefore: a third of the lifetime left, i.e. at 2/3 of it.
    return {"duration": f"{hours}h", "renewBefore": f"{hours // 3}h"}


def certificate_specs(args: OtlpPkiArgs) -> dict[str, dict[str, Any]]:
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
            "secretName": "otel-gateway-tls",
            "subject": subject,
            "privateKey": key,
            "issuerRef": issuer("otel-root"),
            "usages": ["server auth", "digital signature", "key encipherment"],
            **_lifetime(args.cert_duration_hours),
        },
    }
    for edge in args.edges:
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

    def __init__(self, name: str, args: OtlpPkiArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        namespace = restricted_namespace(f"{name}-namespace", args.namespace, k8s_opts)
        # Issuers and Certificates only need cert-manager's CRDs: cert-manager itself issues each
        # Certificate once the Issuer it names (and that Issuer's CA Secret) is ready.
        after: list[pulumi.Resource] = [namespace, args.cert_manager]

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

        specs = certificate_specs(args)
        issuer("selfsigned", "selfsigned", {"selfSigned": {}})
        issuer("otel-root", "otel-root", {"ca": {"secretName": "otel-root-ca"}})
        issuer("client-ca-issuer", "client-ca", {"ca": {"secretName": "client-ca"}})
        for cert_name, spec in specs.items():
            certificate(cert_name, spec)
        self.sync_map = sync_map(args)
        self.ca_sync_map = ca_sync_map(args)
        self.register_outputs({"namespace": args.namespace, "sync_map": self.sync_map, "ca_sync_map": self.ca_sync_map})
