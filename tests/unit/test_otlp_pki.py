"""The hub's OTLP mTLS PKI as declared: issuers, usages, SANs, lifetimes, what cert-sync copies."""

from __future__ import annotations

from typing import Any

import pytest

from components.otlp_pki import renew_before
from offline.engine import Recording


def certificates(recording: Recording) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o["spec"]
        for o in recording.kubernetes_objects()
        if o["kind"] == "Certificate" and o["metadata"]["namespace"] == "fedobs-pki"
    }


def issuers(recording: Recording) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o["spec"]
        for o in recording.kubernetes_objects()
        if o["kind"] == "Issuer" and o["metadata"]["namespace"] == "fedobs-pki"
    }


def test_two_self_signed_roots_one_for_each_side(hub: Recording) -> None:
    """The gateway's server certificate and the edges' client certificates come from two roots that
    share no key: a holder of client-ca's key cannot mint a server certificate the edges trust."""
    assert issuers(hub) == {
        "selfsigned": {"selfSigned": {}},
        "otel-server-ca": {"ca": {"secretName": "otel-server-ca"}},
        "client-ca": {"ca": {"secretName": "client-ca"}},
    }
    certs = certificates(hub)
    for root in ("otel-server-ca", "client-ca"):
        assert certs[root]["isCA"] and certs[root]["issuerRef"]["name"] == "selfsigned", root
        assert certs[root]["secretName"] == root
    assert certs["otel-gateway-tls"]["issuerRef"]["name"] == "otel-server-ca"
    leaves = {name: spec["issuerRef"]["name"] for name, spec in certs.items() if not spec.get("isCA")}
    assert leaves == {
        "otel-gateway-tls": "otel-server-ca",
        "otel-client-tls-edge-eu": "client-ca",
        "otel-client-tls-edge-ap": "client-ca",
    }


def test_each_root_is_name_constrained(hub: Recording) -> None:
    """cert-manager's nameConstraints (beta, on by default since v1.17): the server root vouches only
    for the receiver's names, client-ca for no DNS name or IP address at all."""
    certs = certificates(hub)
    assert certs["otel-server-ca"]["nameConstraints"] == {
        "critical": True,
        "permitted": {"dnsDomains": ["otlp.hub.fedobs.example.com", "otel-gateway.observability.svc"]},
    }
    assert certs["client-ca"]["nameConstraints"] == {
        "critical": True,
        "excluded": {"dnsDomains": [""], "ipRanges": ["0.0.0.0/0", "::/0"]},
    }
    assert all("nameConstraints" not in spec for spec in certs.values() if not spec.get("isCA"))


def test_edge_client_certificates_come_from_client_ca_for_client_auth_only(hub: Recording) -> None:
    certs = certificates(hub)
    for edge in ("edge-eu", "edge-ap"):
        spec = certs[f"otel-client-tls-{edge}"]
        assert spec["commonName"] == edge and spec["secretName"] == f"otel-client-tls-{edge}"
        assert spec["issuerRef"] == {"name": "client-ca", "kind": "Issuer", "group": "cert-manager.io"}
        assert spec["usages"] == ["client auth", "digital signature", "key encipherment"]
        assert "dnsNames" not in spec and not spec.get("isCA")


def test_receiver_certificate_is_server_auth_for_its_names(hub: Recording) -> None:
    spec = certificates(hub)["otel-gateway-tls"]
    assert spec["dnsNames"] == ["otlp.hub.fedobs.example.com", "otel-gateway.observability.svc"]
    assert spec["usages"] == ["server auth", "digital signature", "key encipherment"]
    assert spec["issuerRef"]["name"] == "otel-server-ca"
    assert hub.outputs["otlpEndpoint"] == "https://otlp.hub.fedobs.example.com:4317"


def test_lifetimes_keys_and_renewal_at_two_thirds(hub: Recording) -> None:
    """Edge client certificates live a day and renew 8 h before they expire; the gateway's 90 days."""
    lifetimes = {}
    for name, spec in certificates(hub).items():
        hours = int(spec["duration"].removesuffix("h"))
        assert int(spec["renewBefore"].removesuffix("h")) * 3 == hours, name
        assert spec["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}
        assert spec["subject"] == {"organizations": ["fedobs"]}
        lifetimes[name] = (spec["duration"], spec["renewBefore"])
    assert lifetimes == {
        "otel-server-ca": ("43800h", "14600h"),
        "client-ca": ("43800h", "14600h"),
        "otel-gateway-tls": ("2160h", "720h"),
        "otel-client-tls-edge-eu": ("24h", "8h"),
        "otel-client-tls-edge-ap": ("24h", "8h"),
    }


@pytest.mark.parametrize(("hours", "before"), [(24, "8h"), (12, "4h"), (2, "40m"), (1, "20m"), (2160, "720h")])
def test_renewal_at_two_thirds_of_any_lifetime(hours: int, before: str) -> None:
    assert renew_before(hours) == before


def test_no_role_but_cert_managers_reads_a_ca_secret(hub: Recording) -> None:
    """The cert-sync Role names only leaf Secrets: a CA's certificate reaches Vault through the
    ``ca.crt`` of the leaves it signed, its private key never leaves cert-manager's Secret."""
    ca_secrets = {spec["secretName"] for spec in certificates(hub).values() if spec.get("isCA")}
    assert ca_secrets == {"otel-server-ca", "client-ca"}
    for role in (o for o in hub.kubernetes_objects() if o["kind"] in ("Role", "ClusterRole")):
        for rule in role.get("rules", []):
            if "secrets" not in rule.get("resources", []) and "*" not in rule.get("resources", []):
                continue
            where = f"{role['kind']} {role['metadata'].get('namespace', '')}/{role['metadata']['name']}"
            if role["metadata"].get("namespace") == "fedobs-pki" or role["kind"] == "ClusterRole":
                assert rule.get("resourceNames"), f"{where} may read every Secret of the PKI"
                assert not ca_secrets & set(rule["resourceNames"]), f"{where} may read a CA's Secret"
    reader = next(
        o for o in hub.kubernetes_objects() if o["kind"] == "Role" and o["metadata"]["name"] == "cert-sync-reader"
    )
    assert reader["rules"][0]["resourceNames"] == [
        "otel-client-tls-edge-ap",
        "otel-client-tls-edge-eu",
        "otel-gateway-tls",
    ]


def test_cert_sync_builds_the_trust_bundles_from_the_leaves(hub: Recording) -> None:
    cronjob = next(
        o for o in hub.kubernetes_objects() if o["kind"] == "CronJob" and o["metadata"]["name"] == "cert-sync"
    )
    command = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == [
        "python",
        "-m",
        "programs.cert_sync",
        "hub",
        "--secret",
        "fedobs-pki/otel-client-tls-edge-ap=edges/edge-ap/otel-client-tls",
        "--secret",
        "fedobs-pki/otel-client-tls-edge-eu=edges/edge-eu/otel-client-tls",
        "--secret",
        "fedobs-pki/otel-gateway-tls=otel/otel-gateway-tls",
        # the gateway's client CA file: the CAs of the edges' certificates
        "--trust",
        "fedobs-pki/otel-client-tls-edge-ap=otel/client-ca",
        "--trust",
        "fedobs-pki/otel-client-tls-edge-eu=otel/client-ca",
        # what the edges verify the gateway with: the CAs of the gateway's certificate
        "--trust",
        "fedobs-pki/otel-gateway-tls=otel/server-ca",
        "--peer-ca",
        "edges/edge-ap/otel-client-tls=otel/server-ca",
        "--peer-ca",
        "edges/edge-eu/otel-client-tls=otel/server-ca",
        "--trust-lead",
        "300",
        "--index",
        "otel/cert-sync-index",
        "--passes",
        "3",
        "--interval",
        "20",  # the shipped cadence (tests/unit/test_cert_sync_component.py)
    ]


def test_edges_declare_no_otlp_pki(edge: Recording) -> None:
    assert not [o for o in edge.kubernetes_objects() if o["metadata"].get("namespace") == "fedobs-pki"]


def test_the_renamed_component_keeps_its_former_identity(hub: Recording) -> None:
    """``OtlpPki`` was registered as ``fedobs:pki:OtlpMtls`` before its token matched its class. Without
    an alias the engine would see a new component and replace every child (new CA keys: every edge's
    mTLS breaks). The SDK sends the alias spec (``pulumi/runtime/resource.py`` ``prepare_aliases``),
    and the engine derives the children's former URNs from their parent's aliases."""
    (pki,) = hub.of_type("fedobs:pki:OtlpPki")
    assert [alias.get("type") for alias in pki.aliases] == ["fedobs:pki:OtlpMtls"]
