"""A real mTLS handshake between the edge collector and the hub gateway, on loopback with Python's ssl.

Certificates are issued as the hub's cert-manager ``Certificate`` resources specify them
(``rig.cert_manager_pki``), then follow the stacks' own data flow into the files each
collector reads: the hub's cert-sync command says which Secret goes to which KV path (whole, or the
CA certificate only), the VaultStaticSecrets say which KV path becomes which Secret, the
Deployments say where each Secret is mounted, and the collectors' ConfigMaps say which files the
receiver and the exporter use and with which TLS settings.

The server mirrors the collector's Go TLS server: ``ClientCAs`` = ``client_ca_file`` with every
certificate in it a trust anchor (OpenSSL's ``X509_V_FLAG_PARTIAL_CHAIN``; Go builds chains to any
certificate of the pool) and client certificates checked for the client-auth usage (OpenSSL's
``sslclient`` purpose on a server, Go's ``ExtKeyUsageClientAuth``).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from offline.engine import Recording
from rig.cert_manager_pki import Issued, issue, issue_secrets
from rig.hub_edge import PKI_NAMESPACE, cert_sync_command, hub_cert_sync_sources

pytestmark = pytest.mark.real

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def objects(recording: Recording, kind: str) -> list[dict[str, Any]]:
    return [o for o in recording.kubernetes_objects() if o["kind"] == kind]


def named(recording: Recording, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects(recording, kind) if o["metadata"]["name"] == name)


def hub_kv(hub: Recording, issued: dict[str, Issued]) -> dict[str, dict[str, str]]:
    """What the hub's cert-sync CronJob writes to KV, from its own command line."""
    kv: dict[str, dict[str, str]] = {}
    for source, path, certificate_only in hub_cert_sync_sources(hub):
        namespace, name = source.split("/", 1)
        assert namespace == PKI_NAMESPACE
        data = issued[name].secret_data
        kv[path] = {"ca.crt": data["tls.crt"]} if certificate_only else data
    return kv


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
class Handshake:
    server_error: str | None
    peer_common_name: str | None
    client_error: str | None


@dataclass
class Gateway:
    context: ssl.SSLContext

    def handshake(self, client: ssl.SSLContext, server_hostname: str) -> Handshake:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(10)
        outcome: dict[str, Any] = {"error": None, "cn": None}

        def serve() -> None:
            connection, _ = listener.accept()
            connection.settimeout(10)
            try:
                with self.context.wrap_socket(connection, server_side=True) as tls:
                    peer = tls.getpeercert()
                    outcome["cn"] = dict(item[0] for item in peer["subject"])["commonName"] if peer else None
                    tls.sendall(b"ok:" + tls.recv(16))
            except (ssl.SSLError, OSError) as err:
                outcome["error"] = str(err)

        thread = threading.Thread(target=serve)
        thread.start()
        client_error = None
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                tls.sendall(b"ping")
                if tls.recv(16) != b"ok:ping":
                    client_error = "no answer"
        except (ssl.SSLError, OSError) as err:
            client_error = str(err)
        thread.join(timeout=15)
        listener.close()
        return Handshake(outcome["error"], outcome["cn"], client_error)


@dataclass
class Mtls:
    gateway: Gateway
    receiver_tls: dict[str, Any]
    exporter_tls: dict[str, Any]
    edge_files: dict[str, str]
    endpoint_host: str
    issued: dict[str, Issued]
    workdir: Path

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


@pytest.fixture(scope="module")
def mtls(hub: Recording, edge: Recording, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mtls]:
    workdir = tmp_path_factory.mktemp("mtls")
    issued = issue_secrets(hub.kubernetes_objects(), PKI_NAMESPACE)
    kv = hub_kv(hub, issued)
    hub_files = mounted_files(hub, "otel-gateway", vso_secrets(hub, kv), workdir / "hub")
    command = cert_sync_command(edge)
    edge_id, edge_path = command[command.index("--edge") + 1], command[command.index("--kv-path") + 1]
    # The edge's cert-sync copies the hub's edges/<edge>/otel-client-tls to its own KV path unchanged.
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
    yield Mtls(Gateway(server), receiver_tls, exporter["tls"], edge_files, host, issued, workdir)


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
