"""A real mTLS handshake between the edge collector and the hub gateway, on loopback with Python's ssl.

Certificates are issued as the hub's cert-manager ``Certificate`` resources specify them
(``rig.cert_manager_pki``), then follow the stacks' own data flow into the files each
collector reads: the hub's cert-sync command, planned by the program's own code
(``rig.hub_edge.hub_cert_sync_pass``), says what each KV path holds (the leaf copies, the trust
bundles, and the server bundle inside each edge's copy), the VaultStaticSecrets say which KV path
becomes which Secret, the Deployments say where each Secret is mounted, and the collectors'
ConfigMaps say which files the receiver and the exporter use and with which TLS settings.

A rotation of either root is followed step by step, the clock of each cert-sync pass given: every
step's handshakes use the files the collectors hold at that step (and the ones they held at the
step before, as a collector that has not restarted yet would).

The server mirrors the collector's Go TLS server: ``ClientCAs`` = ``client_ca_file`` with every
certificate in it a trust anchor (OpenSSL's ``X509_V_FLAG_PARTIAL_CHAIN``; Go builds chains to any
certificate of the pool) and client certificates checked for the client-auth usage (OpenSSL's
``sslclient`` purpose on a server, Go's ``ExtKeyUsageClientAuth``).
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from offline.engine import Recording
from programs.cert_sync import trust
from rig.cert_manager_pki import Issued, issue, issue_secrets
from rig.hub_edge import (
    PKI_NAMESPACE,
    cert_sync_command,
    hub_cert_sync_options,
    hub_cert_sync_pass,
    issue_pki,
)
from rig.mtls import Gateway

pytestmark = pytest.mark.real

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def objects(recording: Recording, kind: str) -> list[dict[str, Any]]:
    return [o for o in recording.kubernetes_objects() if o["kind"] == kind]


def named(recording: Recording, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects(recording, kind) if o["metadata"]["name"] == name)


def hub_kv(
    hub: Recording,
    issued: dict[str, Issued],
    stored: dict[str, dict[str, str]] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, dict[str, str]]:
    """The hub KV after one pass of the hub's cert-sync CronJob (its own command line and planning
    code) over the Secrets ``issued``, from the KV ``stored`` before it (empty: the first pass)."""
    assert {spec.ref.split("/")[0] for spec in hub_cert_sync_options(hub).secrets} == {PKI_NAMESPACE}
    secrets = {name: i.secret_data for name, i in issued.items()}
    before = dict(stored or {})
    written = hub_cert_sync_pass(hub, secrets, before, now or dt.datetime.now(dt.UTC))
    return {**before, **written}


def vso_secrets(recording: Recording, kv: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The Secrets VSO creates from the stack's VaultStaticSecrets, by name."""
    return {o["spec"]["destination"]["name"]: kv[o["spec"]["path"]] for o in objects(recording, "VaultStaticSecret")}


def mounted_files(
    recording: Recording, deployment: str, secrets: dict[str, dict[str, str]], directory: Path
) -> dict[str, str]:
    """The collector's mounted Secret files written under ``directory``: container path -> local path."""
    pod = named(recording, "Deployment", deployment)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}
    for mount in pod["containers"][0]["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "secret" not in volume:
            continue
        for key, text in secrets[volume["secret"]["secretName"]].items():
            local = directory / mount["name"] / key
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(text)
            files[f"{mount['mountPath']}/{key}"] = str(local)
    return files


def collector_config(recording: Recording, deployment: str) -> dict[str, Any]:
    text = named(recording, "ConfigMap", f"{deployment}-config")["data"]["config.yaml"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


@dataclass
class Mtls:
    gateway: Gateway
    receiver_tls: dict[str, Any]
    exporter_tls: dict[str, Any]
    edge_files: dict[str, str]
    endpoint_host: str
    issued: dict[str, Issued]
    workdir: Path
    gateway_files: dict[str, str] = field(default_factory=dict)

    def edge_client(self, certificate: tuple[str, str] | None = None, *, anonymous: bool = False) -> ssl.SSLContext:
        """The edge exporter's client context exactly as its ConfigMap declares; ``certificate``
        (cert and key files) presents another certificate, ``anonymous`` none at all."""
        tls = self.exporter_tls
        assert tls["insecure"] is False
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = TLS_VERSIONS[tls["min_version"]]
        context.load_verify_locations(self.edge_files[tls["ca_file"]])
        if certificate is not None:
            context.load_cert_chain(*certificate)
        elif not anonymous:
            context.load_cert_chain(self.edge_files[tls["cert_file"]], self.edge_files[tls["key_file"]])
        return context

    def write(self, name: str, issued: Issued) -> tuple[str, str]:
        data = issued.secret_data
        cert, key = self.workdir / f"{name}.crt", self.workdir / f"{name}.key"
        cert.write_text(data["tls.crt"])
        key.write_text(data["tls.key"])
        return str(cert), str(key)


def deploy(
    hub: Recording, edge: Recording, kv: dict[str, dict[str, str]], issued: dict[str, Issued], workdir: Path
) -> Mtls:
    """The gateway and the edge collector as they run with the hub KV ``kv``: the edge's cert-sync
    copies the hub's ``edges/<edge>/otel-client-tls`` to its own KV path unchanged, each VSO makes
    the Secrets, each Deployment mounts them."""
    hub_files = mounted_files(hub, "otel-gateway", vso_secrets(hub, kv), workdir / "hub")
    command = cert_sync_command(edge)
    edge_id, edge_path = command[command.index("--edge") + 1], command[command.index("--kv-path") + 1]
    edge_kv = {edge_path: kv[f"edges/{edge_id}/otel-client-tls"]}
    edge_files = mounted_files(edge, "otel-collector", vso_secrets(edge, edge_kv), workdir / "edge")

    receiver_tls = collector_config(hub, "otel-gateway")["receivers"]["otlp"]["protocols"]["grpc"]["tls"]
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = TLS_VERSIONS[receiver_tls["min_version"]]
    server.load_cert_chain(hub_files[receiver_tls["cert_file"]], hub_files[receiver_tls["key_file"]])
    server.load_verify_locations(hub_files[receiver_tls["client_ca_file"]])
    server.verify_mode = ssl.CERT_REQUIRED
    server.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    exporter = collector_config(edge, "otel-collector")["exporters"]["otlp/hub"]
    host = exporter["endpoint"].rsplit(":", 1)[0]
    return Mtls(Gateway(server), receiver_tls, exporter["tls"], edge_files, host, issued, workdir, hub_files)


@pytest.fixture(scope="module")
def mtls(hub: Recording, edge: Recording, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mtls]:
    workdir = tmp_path_factory.mktemp("mtls")
    issued = issue_secrets(hub.kubernetes_objects(), PKI_NAMESPACE)
    yield deploy(hub, edge, hub_kv(hub, issued), issued, workdir)


def test_certificates_are_issued_as_the_hub_declares(hub: Recording, mtls: Mtls) -> None:
    specs = {o["spec"]["secretName"]: o["spec"] for o in objects(hub, "Certificate")}
    gateway = mtls.issued["otel-gateway-tls"].certificate
    sans = gateway.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert sans == specs["otel-gateway-tls"]["dnsNames"]
    assert mtls.endpoint_host in sans, "the edge dials a name the gateway's certificate does not carry"
    client = mtls.issued["otel-client-tls-edge-eu"].certificate
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edge-eu"
    assert client.issuer == mtls.issued["client-ca"].certificate.subject
    key = client.public_key()
    assert (
        isinstance(key, ec.EllipticCurvePublicKey)
        and key.curve.key_size == specs["otel-client-tls-edge-eu"]["privateKey"]["size"]
    )
    assert mtls.receiver_tls["min_version"] == "1.3"


def test_the_edge_collector_is_accepted(mtls: Mtls) -> None:
    result = mtls.gateway.handshake(mtls.edge_client(), mtls.endpoint_host)
    assert (result.server_error, result.client_error) == (None, None)
    assert result.peer_common_name == "edge-eu"


def test_a_certificate_from_another_ca_is_refused(mtls: Mtls) -> None:
    foreign_root = issue(
        {
            "isCA": True,
            "commonName": "foreign CA",
            "usages": ["cert sign", "crl sign"],
            "privateKey": {"algorithm": "ECDSA", "size": 256},
        },
        None,
    )
    spec = {
        "commonName": "edge-eu",
        "usages": ["client auth", "digital signature", "key encipherment"],
        "privateKey": {"algorithm": "ECDSA", "size": 256},
    }
    cert, key = mtls.write("foreign", issue(spec, foreign_root))
    result = mtls.gateway.handshake(mtls.edge_client((cert, key)), mtls.endpoint_host)
    assert result.server_error is not None and "certificate verify failed" in result.server_error
    assert result.peer_common_name is None


def test_a_server_usage_only_certificate_from_client_ca_is_refused(mtls: Mtls) -> None:
    spec = {
        "commonName": "edge-eu",
        "usages": ["server auth", "digital signature", "key encipherment"],
        "privateKey": {"algorithm": "ECDSA", "size": 256},
    }
    cert, key = mtls.write("server-only", issue(spec, mtls.issued["client-ca"]))
    result = mtls.gateway.handshake(mtls.edge_client((cert, key)), mtls.endpoint_host)
    assert result.server_error is not None and "unsuitable certificate purpose" in result.server_error


def test_the_gateways_own_certificate_is_not_a_client_certificate(mtls: Mtls) -> None:
    cert, key = mtls.write("gateway", mtls.issued["otel-gateway-tls"])
    result = mtls.gateway.handshake(mtls.edge_client((cert, key)), mtls.endpoint_host)
    assert result.server_error is not None and "certificate verify failed" in result.server_error


def test_a_client_without_certificate_is_refused(mtls: Mtls) -> None:
    result = mtls.gateway.handshake(mtls.edge_client(anonymous=True), mtls.endpoint_host)
    assert result.server_error is not None and "certificate" in result.server_error.lower()
    assert result.peer_common_name is None


def test_tls_below_the_declared_minimum_is_refused(mtls: Mtls) -> None:
    old = mtls.edge_client()
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    result = mtls.gateway.handshake(old, mtls.endpoint_host)
    assert result.client_error is not None and result.server_error is not None
    assert "unsupported protocol" in result.server_error.lower()


def test_the_edge_refuses_a_gateway_it_cannot_verify(mtls: Mtls) -> None:
    impostor_root = issue({"isCA": True, "commonName": "impostor", "usages": ["cert sign", "crl sign"]}, None)
    impostor = issue(
        {
            "commonName": mtls.endpoint_host,
            "dnsNames": [mtls.endpoint_host],
            "usages": ["server auth", "digital signature"],
        },
        impostor_root,
    )
    cert, key = mtls.write("impostor", impostor)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    result = Gateway(server).handshake(mtls.edge_client(), mtls.endpoint_host)
    assert result.client_error is not None and "certificate verify failed" in result.client_error


# ---------------------------------------------------------------------------------------------
# two roots: what each side trusts
# ---------------------------------------------------------------------------------------------
def pem_certificates(path: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def serving(cert_key: tuple[str, str]) -> Gateway:
    """A TLS server presenting ``cert_key`` (no client certificate asked): what an edge dials."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(*cert_key)
    return Gateway(server)


def test_each_side_trusts_only_the_other_sides_root(mtls: Mtls) -> None:
    """The edge verifies the gateway with the server root alone, the gateway the edges with client-ca
    alone (both from the trust bundles cert-sync builds, never from a CA's own Secret)."""
    edge_trust = pem_certificates(mtls.edge_files[mtls.exporter_tls["ca_file"]])
    assert edge_trust == [mtls.issued["otel-server-ca"].certificate]
    assert mtls.issued["otel-gateway-tls"].certificate.issuer == edge_trust[0].subject
    client_trust = pem_certificates(mtls.gateway_files[mtls.receiver_tls["client_ca_file"]])
    assert client_trust == [mtls.issued["client-ca"].certificate]


def test_a_server_certificate_minted_with_the_client_ca_key_is_refused_by_the_edge(mtls: Mtls) -> None:
    """Whoever holds client-ca's key can mint client certificates, not a gateway the edges accept."""
    spec = {
        "commonName": mtls.endpoint_host,
        "dnsNames": [mtls.endpoint_host],
        "usages": ["server auth", "digital signature", "key encipherment"],
        "privateKey": {"algorithm": "ECDSA", "size": 256},
    }
    minted = mtls.write("minted-by-client-ca", issue(spec, mtls.issued["client-ca"]))
    result = serving(minted).handshake(mtls.edge_client(), mtls.endpoint_host)
    assert result.client_error is not None and "certificate verify failed" in result.client_error


def test_a_client_certificate_minted_with_the_server_root_key_is_refused_by_the_gateway(mtls: Mtls) -> None:
    spec = {
        "commonName": "edge-eu",
        "usages": ["client auth", "digital signature", "key encipherment"],
        "privateKey": {"algorithm": "ECDSA", "size": 256},
    }
    minted = mtls.write("minted-by-server-ca", issue(spec, mtls.issued["otel-server-ca"]))
    result = mtls.gateway.handshake(mtls.edge_client(minted), mtls.endpoint_host)
    assert result.server_error is not None and "certificate verify failed" in result.server_error
    assert result.peer_common_name is None


def test_name_constraints_hold_even_where_the_wrong_root_is_trusted(mtls: Mtls) -> None:
    """client-ca may vouch for no name at all, the server root only for the receiver's names: checked
    by the verifier (OpenSSL here, Go's crypto/x509 in the collector) whatever it trusts."""
    both = mtls.workdir / "both-roots.crt"
    both.write_text("".join(mtls.issued[r].secret_data["tls.crt"] for r in ("otel-server-ca", "client-ca")))
    careless = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    careless.load_verify_locations(str(both))
    server_spec = {"usages": ["server auth", "digital signature"], "privateKey": {"algorithm": "ECDSA", "size": 256}}
    by_client_ca = issue(
        {**server_spec, "commonName": mtls.endpoint_host, "dnsNames": [mtls.endpoint_host]}, mtls.issued["client-ca"]
    )
    result = serving(mtls.write("server-by-client-ca", by_client_ca)).handshake(careless, mtls.endpoint_host)
    assert result.client_error is not None and "excluded subtree violation" in result.client_error
    elsewhere = "vault.hub.fedobs.example.com"
    by_server_ca = issue(
        {**server_spec, "commonName": elsewhere, "dnsNames": [elsewhere]}, mtls.issued["otel-server-ca"]
    )
    result = serving(mtls.write("elsewhere", by_server_ca)).handshake(careless, elsewhere)
    assert result.client_error is not None and "permitted subtree violation" in result.client_error
    # the shipped certificates keep within them
    result = serving(mtls.write("the-gateway", mtls.issued["otel-gateway-tls"])).handshake(careless, mtls.endpoint_host)
    assert result.client_error is None


# ---------------------------------------------------------------------------------------------
# rotating a root, step by step
# ---------------------------------------------------------------------------------------------
LEAD = dt.timedelta(minutes=5)


@dataclass
class Step:
    """The hub KV after one cert-sync pass, and the two collectors as they run with it."""

    kv: dict[str, dict[str, str]]
    running: Mtls

    def accepts(self, client: ssl.SSLContext, host: str, cn: str = "edge-eu") -> bool:
        result = self.running.gateway.handshake(client, host)
        return (result.server_error, result.client_error, result.peer_common_name) == (None, None, cn)

    def trusted(self, path: str) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.kv[path]["ca.crt"].encode())


class Rotation:
    def __init__(self, hub: Recording, edge: Recording, workdir: Path) -> None:
        assert hub_cert_sync_options(hub).trust.lead == LEAD
        self.hub, self.edge, self.workdir = hub, edge, workdir
        self.pki = issue_pki(hub)
        self.kv: dict[str, dict[str, str]] = {}

    def sync(self, now: dt.datetime, label: str) -> Step:
        self.kv = hub_kv(self.hub, self.pki.issued, self.kv, now)
        return Step(self.kv, deploy(self.hub, self.edge, self.kv, self.pki.issued, self.workdir / label))

    def connects(self, gateway: Step, edge: Step) -> bool:
        """The edge collector of step ``edge`` sends to the gateway of step ``gateway``."""
        return gateway.accepts(edge.running.edge_client(), edge.running.endpoint_host)


def test_a_client_ca_rotation_keeps_every_edge_connected(hub: Recording, edge: Recording, tmp_path: Path) -> None:
    """client-ca renews its key (cert-manager: at 2/3 of its life, re-issuing none of its leaves);
    the edges' certificates move to it one by one at their own renewals. At every step, every gateway
    and edge collector that may be running (one restarted on the new files, one not yet) connect."""
    rotation = Rotation(hub, edge, tmp_path)
    pki, t0 = rotation.pki, dt.datetime.now(dt.UTC)
    s0 = rotation.sync(t0, "s0")
    old_ca, eu_old, ap_old = pki.client_ca, pki.client("edge-eu"), pki.client("edge-ap")
    host = s0.running.endpoint_host
    assert rotation.connects(s0, s0)

    new_ca = pki.renew("client-ca", at=t0 + dt.timedelta(minutes=1))  # a new key: no leaf is re-issued
    s1 = rotation.sync(t0 + dt.timedelta(minutes=1), "s1")
    assert s1.kv == s0.kv  # nobody holds a certificate of the new CA yet
    assert rotation.connects(s1, s1)

    eu_new = pki.renew_client("edge-eu")  # edge-eu's renewal comes from the new CA
    t2 = t0 + dt.timedelta(minutes=2)
    s2 = rotation.sync(t2, "s2")
    assert s2.trusted("otel/client-ca") == [new_ca.certificate, old_ca.certificate]
    assert s2.kv["edges/edge-eu/otel-client-tls"]["tls.crt"] == eu_old.secret_data["tls.crt"]  # held back
    assert all(rotation.connects(g, e) for g in (s1, s2) for e in (s1, s2))
    assert s2.accepts(s2.running.edge_client(s2.running.write("eu-new", eu_new)), host)  # trusted before published

    s3 = rotation.sync(t2 + LEAD, "s3")
    assert s3.kv["edges/edge-eu/otel-client-tls"]["tls.crt"] == eu_new.secret_data["tls.crt"]
    # a gateway still on the bundle of s2 accepts the new certificate; edge-ap still has old's
    assert all(rotation.connects(g, e) for g in (s2, s3) for e in (s2, s3))
    assert s3.accepts(s3.running.edge_client(s3.running.write("ap-old", ap_old)), host, "edge-ap")

    ap_new = pki.renew_client("edge-ap")  # the last leaf moves: the old CA retires
    t4 = t2 + LEAD + dt.timedelta(minutes=1)
    s4 = rotation.sync(t4, "s4")
    active, retired = trust.parse_bundle(s4.kv["otel/client-ca"]["ca.crt"])
    assert (active.certificate, active.until) == (new_ca.certificate, None)
    assert retired.certificate == old_ca.certificate and retired.until is not None
    assert retired.until >= ap_old.certificate.not_valid_after_utc and retired.until >= t4 + dt.timedelta(hours=24)
    for presented, cn in ((ap_old, "edge-ap"), (ap_new, "edge-ap"), (eu_old, "edge-eu"), (eu_new, "edge-eu")):
        assert s4.accepts(s4.running.edge_client(s4.running.write(f"s4-{cn}", presented)), host, cn), cn

    # once every certificate the old CA signed may have expired, it leaves the gateway's trust
    for name in ("otel-client-tls-edge-eu", "otel-client-tls-edge-ap"):
        pki.renew(name, at=retired.until - dt.timedelta(hours=1))  # the renewals of that day
    s5 = rotation.sync(retired.until, "s5")
    assert s5.trusted("otel/client-ca") == [new_ca.certificate]
    refused = s5.running.gateway.handshake(s5.running.edge_client(s5.running.write("s5-old", eu_old)), host)
    assert refused.server_error is not None and "certificate verify failed" in refused.server_error
    assert s5.accepts(s5.running.edge_client(s5.running.write("s5-new", eu_new)), host)


def test_a_server_root_rotation_keeps_every_edge_connected(hub: Recording, edge: Recording, tmp_path: Path) -> None:
    """The server root renews its key, then the gateway's certificate moves to it: the edges learn
    the new root (in their bundles' ca.crt) a lead before the gateway presents a certificate from it."""
    rotation = Rotation(hub, edge, tmp_path)
    pki, t0 = rotation.pki, dt.datetime.now(dt.UTC)
    s0 = rotation.sync(t0, "s0")
    old_root, old_gateway = pki.server_ca, pki.issued["otel-gateway-tls"]
    edge_path = "edges/edge-eu/otel-client-tls"

    new_root = pki.renew("otel-server-ca", at=t0 + dt.timedelta(minutes=1))
    s1 = rotation.sync(t0 + dt.timedelta(minutes=1), "s1")
    assert s1.kv == s0.kv

    new_gateway = pki.renew("otel-gateway-tls")
    t2 = t0 + dt.timedelta(minutes=2)
    s2 = rotation.sync(t2, "s2")
    assert s2.trusted(edge_path) == [new_root.certificate, old_root.certificate]  # the edges learn it first
    assert s2.kv["otel/otel-gateway-tls"] == s0.kv["otel/otel-gateway-tls"]  # the gateway still serves the old one
    assert all(rotation.connects(g, e) for g in (s1, s2) for e in (s1, s2))

    s3 = rotation.sync(t2 + LEAD, "s3")
    assert s3.kv["otel/otel-gateway-tls"]["tls.crt"] == new_gateway.secret_data["tls.crt"]
    assert all(rotation.connects(g, e) for g in (s2, s3) for e in (s2, s3))
    # why the lead: an edge that had not picked up s2 within it would refuse the new gateway
    assert not rotation.connects(s3, s1)

    (active, retired) = trust.parse_bundle(s3.kv[edge_path]["ca.crt"])
    assert (active.certificate, retired.certificate) == (new_root.certificate, old_root.certificate)
    assert retired.until is not None and retired.until >= old_gateway.certificate.not_valid_after_utc
    for name in ("otel-gateway-tls", "otel-client-tls-edge-eu", "otel-client-tls-edge-ap"):
        pki.renew(name, at=retired.until - dt.timedelta(hours=1))  # the renewals of that day
    s4 = rotation.sync(retired.until, "s4")
    assert s4.trusted(edge_path) == [new_root.certificate]
    old = serving(s4.running.write("old-gateway", old_gateway)).handshake(
        s4.running.edge_client(), s4.running.endpoint_host
    )
    assert old.client_error is not None and "certificate verify failed" in old.client_error
    new = serving(s4.running.write("new-gateway", new_gateway)).handshake(
        s4.running.edge_client(), s4.running.endpoint_host
    )
    assert new.client_error is None


def former_single_root_kv(
    hub: Recording, edges: tuple[str, ...]
) -> tuple[dict[str, dict[str, str]], dict[str, Issued]]:
    """The hub KV as the former PKI left it: one root (``otel-root-ca``) signing ``client-ca`` and the
    gateway's certificate, 90-day leaves, and cert-sync copying ``client-ca``'s certificate."""
    key = {"algorithm": "ECDSA", "size": 256}
    root_spec = {"isCA": True, "usages": ["cert sign", "crl sign"], "privateKey": key, "duration": "43800h"}
    root = issue({**root_spec, "commonName": "fedobs OTLP root CA"}, None)
    client_ca = issue({**root_spec, "commonName": "fedobs OTLP client CA"}, root)
    hosts = hub_cert_sync_options(hub)  # (only to make sure this is the hub)
    assert hosts.secrets
    names = ["otlp.hub.fedobs.example.com", "otel-gateway.observability.svc"]
    gateway = issue(
        {
            "commonName": names[0],
            "dnsNames": names,
            "usages": ["server auth", "digital signature", "key encipherment"],
            "privateKey": key,
            "duration": "2160h",
        },
        root,
    )
    issued = {"otel-root-ca": root, "client-ca": client_ca, "otel-gateway-tls": gateway}
    kv = {"otel/otel-gateway-tls": gateway.secret_data, "otel/client-ca": {"ca.crt": client_ca.secret_data["tls.crt"]}}
    for edge_name in edges:
        leaf = issue(
            {
                "commonName": edge_name,
                "usages": ["client auth", "digital signature", "key encipherment"],
                "privateKey": key,
                "duration": "2160h",
            },
            client_ca,
        )
        issued[f"otel-client-tls-{edge_name}"] = leaf
        kv[f"edges/{edge_name}/otel-client-tls"] = leaf.secret_data
    return kv, issued


def test_the_upgrade_from_the_single_root_keeps_every_edge_connected(
    hub: Recording, edge: Recording, tmp_path: Path
) -> None:
    """The upgrade note of docs/security.md: a hub whose KV the former PKI filled gets both new roots
    and new certificates at once; the first pass keeps the former CAs in the bundles and the former
    certificates published, the pass after the lead publishes the new ones, and every collector that
    may run at each step still connects."""
    former_kv, former = former_single_root_kv(hub, ("edge-eu", "edge-ap"))
    assert former["otel-client-tls-edge-eu"].secret_data["ca.crt"] == former["otel-root-ca"].secret_data["tls.crt"]
    rotation = Rotation(hub, edge, tmp_path)
    before = Step(former_kv, deploy(hub, edge, former_kv, former, tmp_path / "former"))
    assert rotation.connects(before, before)
    rotation.kv = dict(former_kv)
    t0 = dt.datetime.now(dt.UTC)
    s1 = rotation.sync(t0, "s1")
    assert s1.trusted("otel/client-ca") == [rotation.pki.client_ca.certificate, former["client-ca"].certificate]
    assert s1.trusted("otel/server-ca") == [rotation.pki.server_ca.certificate, former["otel-root-ca"].certificate]
    assert s1.kv["otel/otel-gateway-tls"] == former_kv["otel/otel-gateway-tls"]  # held: edges learn the new root first
    eu = s1.kv["edges/edge-eu/otel-client-tls"]
    assert eu["tls.crt"] == former_kv["edges/edge-eu/otel-client-tls"]["tls.crt"]  # held, with the new server bundle
    assert all(rotation.connects(g, e) for g in (before, s1) for e in (before, s1))
    s2 = rotation.sync(t0 + LEAD, "s2")
    assert s2.kv["otel/otel-gateway-tls"] == rotation.pki.issued["otel-gateway-tls"].secret_data
    assert s2.kv["edges/edge-eu/otel-client-tls"]["tls.crt"] == rotation.pki.client("edge-eu").secret_data["tls.crt"]
    assert all(rotation.connects(g, e) for g in (s1, s2) for e in (s1, s2))
    # the former client certificate keeps working until it expires (an edge whose copy lags)
    former_leaf = s2.running.write("former-eu", former["otel-client-tls-edge-eu"])
    assert s2.accepts(s2.running.edge_client(former_leaf), s2.running.endpoint_host)
    retired = trust.parse_bundle(s2.kv["otel/client-ca"]["ca.crt"])[1]
    assert retired.until is not None
    assert retired.until >= former["otel-client-tls-edge-eu"].certificate.not_valid_after_utc
