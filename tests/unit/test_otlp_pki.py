"""The hub's OTLP mTLS PKI as declared: issuers, usages, SANs, lifetimes, what cert-sync copies."""

from __future__ import annotations

from typing import Any

from offline.engine import Recording


def certificates(recording: Recording) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o["spec"]
        for o in recording.kubernetes_objects()
        if o["kind"] == "Certificate" and o["metadata"]["namespace"] == "fedobs-pki"
    }


def test_issuer_chain(hub: Recording) -> None:
    issuers = {
        o["metadata"]["name"]: o["spec"]
        for o in hub.kubernetes_objects()
        if o["kind"] == "Issuer" and o["metadata"]["namespace"] == "fedobs-pki"
    }
    assert issuers == {
        "selfsigned": {"selfSigned": {}},
        "otel-root": {"ca": {"secretName": "otel-root-ca"}},
        "client-ca": {"ca": {"secretName": "client-ca"}},
    }
    certs = certificates(hub)
    assert certs["otel-root-ca"]["isCA"] and certs["otel-root-ca"]["issuerRef"]["name"] == "selfsigned"
    assert certs["client-ca"]["isCA"] and certs["client-ca"]["issuerRef"]["name"] == "otel-root"


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
    assert spec["issuerRef"]["name"] == "otel-root"
    assert hub.outputs["otlpEndpoint"] == "https://otlp.hub.fedobs.example.com:4317"


def test_lifetimes_keys_and_renewal_at_two_thirds(hub: Recording) -> None:
    for name, spec in certificates(hub).items():
        hours = int(spec["duration"].removesuffix("h"))
        assert int(spec["renewBefore"].removesuffix("h")) * 3 == hours, name
        assert spec["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}
        assert spec["subject"] == {"organizations": ["fedobs"]}
        assert hours == (43800 if spec.get("isCA") else 2160), name


def test_cert_sync_copies_the_pki_and_only_the_certificate_of_client_ca(hub: Recording) -> None:
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
        "--ca-secret",
        "fedobs-pki/client-ca=otel/client-ca",
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
