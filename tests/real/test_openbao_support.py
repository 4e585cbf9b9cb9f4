"""The test machinery itself: ``localize_server_hcl`` changes only what it documents, the PKI helper
issues exactly the SANs it is given, the dev server and waits behave."""

from __future__ import annotations

import copy
import ipaddress
import re
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import hcl2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from hcl2 import SerializationOptions

from components.vault_server_config import TLS_DIR, render_server_hcl
from rig.openbao import (
    apply_chart_placeholders,
    bao_binary,
    dev_server,
    localize_server_hcl,
    loopback_layout,
    wait_until,
)
from rig.pki import TestCA
from rig.vault_cluster import build_loopback_vault, make_spec

# A richer pod config than the component renders today: chart placeholders, an audit device, a
# client-cert join, comments, a heredoc, object syntax and a transit seal that must stay untouched.
HANDWRITTEN_POD_HCL = """\
# rendered for the chart's server.ha.raft.config
ui = true
cluster_name = "fedobs-hub"   # a comment with a { brace and a "quote

listener "tcp" {
  address            = "[::]:8200"
  cluster_address    = "[::]:8201"
  tls_cert_file      = "/vault/userconfig/vault-server-tls/tls.crt"
  tls_key_file       = "/vault/userconfig/vault-server-tls/tls.key"
  tls_client_ca_file = "/vault/userconfig/vault-server-tls/ca.crt"
  tls_disable        = 0
  x_forwarded_for_authorized_addrs = "10.0.0.0/8"
}

storage "raft" {
  path    = "/vault/data"
  node_id = "HOSTNAME"
  performance_multiplier = 1
  retry_join {
    leader_api_addr         = "https://vault-0.vault-internal:8200"
    leader_ca_cert_file     = "/vault/userconfig/vault-server-tls/ca.crt"
    leader_client_cert_file = "/vault/userconfig/vault-server-tls/tls.crt"
    leader_client_key_file  = "/vault/userconfig/vault-server-tls/tls.key"
    leader_tls_servername   = "vault-0.vault-internal"
  }
  retry_join {
    leader_api_addr       = "https://vault-1.vault-internal:8200"
    leader_ca_cert_file   = "/vault/userconfig/vault-server-tls/ca.crt"
    leader_tls_servername = "vault.vault.svc"
  }
}

service_registration "kubernetes" {}

audit "file" "file" {
  options = {
    file_path = "/vault/audit/vault_audit.log"
    log_raw   = "false"
  }
}

seal "transit" {
  address         = "https://vault.hub.example:8200"
  key_name        = "edge-a"
  tls_ca_cert     = "/vault/userconfig/hub-vault-ca/ca.crt"
  tls_server_name = "vault.hub.example"
}

telemetry {
  prometheus_retention_time = "30s"
  disable_hostname          = true
}

plugin_directory = <<EOT
/vault/plugins
EOT
"""

PARSE = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
TLS_FILES = ("tls.crt", "tls.key", "ca.crt")


def parse(text: str) -> dict[str, Any]:
    return hcl2.loads(text, serialization_options=PARSE)


def strip_documented(doc: dict[str, Any]) -> dict[str, Any]:
    """Remove, independently of the implementation, every key localize_server_hcl may change."""
    doc = copy.deepcopy(doc)
    doc.pop("api_addr", None)
    doc.pop("cluster_addr", None)
    for listener in doc.get("listener", []):
        for body in listener.values():
            for key in ("address", "cluster_address", "tls_cert_file", "tls_key_file", "tls_client_ca_file"):
                body.pop(key, None)
    for storage in doc.get("storage", []):
        for kind, body in storage.items():
            if kind == "raft":
                body.pop("path", None)
            for join in body.get("retry_join", []):
                for key in (
                    "leader_api_addr",
                    "leader_ca_cert_file",
                    "leader_client_cert_file",
                    "leader_client_key_file",
                ):
                    join.pop(key, None)
    for audit in doc.get("audit", []):
        for kind, named in audit.items():
            for body in named.values():
                options = body.get("options")
                for opts in options if isinstance(options, list) else [options]:
                    if kind == "file" and isinstance(opts, dict):
                        opts.pop("file_path", None)
    for seal in doc.get("seal", []):
        for body in seal.values():
            for key in ("tls_ca_cert", "tls_client_cert", "tls_client_key"):
                body.pop(key, None)
    registrations = [r for r in doc.get("service_registration", []) if "kubernetes" not in r]
    if registrations:
        doc["service_registration"] = registrations
    else:
        doc.pop("service_registration", None)
    return doc


def localize(pod_hcl: str, node_index: int, tmp: Path) -> tuple[str, dict[str, Any]]:
    hosts = [f"vault-{i}.vault-internal" for i in range(3)]
    layout = loopback_layout(hosts)
    tls_files = {f"/vault/userconfig/vault-server-tls/{n}": str(tmp / "tls" / n) for n in TLS_FILES}
    tls_files["/vault/userconfig/hub-vault-ca/ca.crt"] = str(tmp / "hub-ca.crt")
    text = localize_server_hcl(
        pod_hcl,
        node_index=node_index,
        addresses=layout.addresses,
        ports=layout.ports,
        tls_files=tls_files,
        data_dir=str(tmp / "data"),
    )
    ip = layout.ips[node_index]
    facts = {
        "ip": ip,
        "api": layout.ports[8200],
        "cluster": layout.ports[8201],
        "tls": tls_files,
        "pod_view": apply_chart_placeholders(pod_hcl, {"HOST_IP": ip, "POD_IP": ip, "HOSTNAME": f"vault-{node_index}"}),
    }
    return text, facts


@pytest.mark.real
@pytest.mark.parametrize("source", ["rendered", "handwritten"])
def test_localize_changes_nothing_but_the_documented_keys(source: str, tmp_path: Path) -> None:
    pod_hcl = render_server_hcl(make_spec(3)) if source == "rendered" else HANDWRITTEN_POD_HCL
    assert TLS_DIR == "/vault/userconfig/vault-server-tls"
    text, facts = localize(pod_hcl, 1, tmp_path)
    # the pod's view: the chart's start script has replaced its placeholders (with this node's values)
    original, local = parse(facts["pod_view"]), parse(text)
    assert strip_documented(local) == strip_documented(original)

    # ... and the documented keys hold what they should
    ip, api, cluster = facts["ip"], facts["api"], facts["cluster"]
    assert (local["api_addr"], local["cluster_addr"]) == (f"https://{ip}:{api}", f"https://{ip}:{cluster}")
    (listener,) = [b["tcp"] for b in local["listener"]]
    assert (listener["address"], listener["cluster_address"]) == (f"{ip}:{api}", f"{ip}:{cluster}")
    assert listener["tls_cert_file"] == facts["tls"]["/vault/userconfig/vault-server-tls/tls.crt"]
    (raft,) = [s["raft"] for s in local["storage"]]
    (pod_raft,) = [s["raft"] for s in original["storage"]]
    assert raft["path"] == str(tmp_path / "data")
    assert [j["leader_api_addr"] for j in raft["retry_join"]] == [
        f"https://127.0.0.{i + 1}:{api}" for i in range(len(raft["retry_join"]))
    ]
    # leader_tls_servername is never touched: the pod's name is what the join verifies
    assert [j["leader_tls_servername"] for j in raft["retry_join"]] == [
        j["leader_tls_servername"] for j in pod_raft["retry_join"]
    ]
    assert "service_registration" not in local

    # byte level: every line that holds none of the documented keys survives verbatim
    documented = re.compile(
        r"^\s*(address|cluster_address|tls_cert_file|tls_key_file|tls_client_ca_file|path|leader_api_addr|"
        r"leader_ca_cert_file|leader_client_cert_file|leader_client_key_file|file_path|tls_ca_cert)\s*="
    )
    registration = False
    local_lines = text.splitlines()
    for line in facts["pod_view"].splitlines():
        registration = registration or line.startswith('service_registration "kubernetes"')
        if registration:
            registration = "}" not in line
            continue
        if not documented.match(line):
            assert line in local_lines, line


@pytest.mark.real
def test_localize_handwritten_specifics(tmp_path: Path) -> None:
    text, _ = localize(HANDWRITTEN_POD_HCL, 2, tmp_path)
    local = parse(text)
    (raft,) = [s["raft"] for s in local["storage"]]
    assert raft["node_id"] == "vault-2"  # HOSTNAME, as the chart's start script substitutes it
    assert raft["retry_join"][0]["leader_client_key_file"] == str(tmp_path / "tls" / "tls.key")
    (audit,) = local["audit"]
    assert audit["file"]["file"]["options"]["file_path"] == "vault_audit.log"  # same on every node
    (seal,) = local["seal"]
    assert seal["transit"]["address"] == "https://vault.hub.example:8200"  # not a pod address: kept
    assert seal["transit"]["tls_ca_cert"] == str(tmp_path / "hub-ca.crt")
    assert "# a comment with a { brace" in text and "plugin_directory = <<EOT" in text


@pytest.mark.real
def test_localize_refuses_what_it_cannot_map(tmp_path: Path) -> None:
    layout = loopback_layout(["vault-0.vault-internal", "vault-1.vault-internal"])
    ok_files = {f"/vault/userconfig/vault-server-tls/{n}": str(tmp_path / n) for n in TLS_FILES}
    kwargs: dict[str, Any] = dict(node_index=0, addresses=layout.addresses, ports=layout.ports, data_dir="/d")
    with pytest.raises(ValueError, match=r"vault-2\.vault-internal"):
        localize_server_hcl(render_server_hcl(make_spec(3)), tls_files=ok_files, **kwargs)
    with pytest.raises(ValueError, match="tls_files"):
        localize_server_hcl(render_server_hcl(make_spec(2)), tls_files={}, **kwargs)
    with pytest.raises(ValueError, match="port 9999"):
        localize_server_hcl('listener "tcp" {\n  address = "[::]:9999"\n}\n', tls_files={}, **kwargs)


@pytest.mark.real
def test_localized_rendered_config_passes_bao_diagnose(tmp_path: Path) -> None:
    vault = build_loopback_vault(tmp_path, make_spec(3))
    node = vault.cluster.nodes[0]
    result = subprocess.run(
        [bao_binary(), "operator", "diagnose", f"-config={node.config_path}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=node.workdir,
    )
    out = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    failures = [line.strip() for line in out.splitlines() if "[ failure ]" in line]
    # OpenBao 2.7.2's diagnose fails ANY telemetry stanza without Stackdriver settings (the server
    # itself runs fine with it); everything else (listener, TLS files, storage, seal) must pass.
    known = "Check Telemetry: incomplete Stackdriver telemetry configuration"
    assert [f for f in failures if "Vault Diagnose" not in f and known not in f] == [], out
    assert result.returncode in (0, 1, 2), out


# --------------------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------------------
@pytest.mark.real
@pytest.mark.parametrize("algorithm", ["ECDSA", "RSA"])
@pytest.mark.parametrize(("server", "client"), [(True, False), (False, True), (True, True)])
def test_pki_issues_exactly_the_sans_given(algorithm: str, server: bool, client: bool, tmp_path: Path) -> None:
    ca = TestCA("fedobs test CA")
    dns = ["vault-0.vault-internal", "vault.vault.svc", "vault.example.test"]
    ips = ["127.0.0.2", "::1"]
    issued = ca.issue("vault-0", dns, ips, server=server, client=client, key_algorithm=algorithm)  # type: ignore[arg-type]
    cert = issued.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == dns
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(i) for i in ips]
    assert len(list(san)) == len(dns) + len(ips)
    eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [
        o for o, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if on
    ]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey if algorithm == "ECDSA" else rsa.RSAPublicKey)
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert_path, key_path = issued.write(tmp_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert key_path.read_text() == issued.key_pem and "PRIVATE KEY" in issued.key_pem


@pytest.mark.real
def test_pki_without_names_has_no_san_extension() -> None:
    cert = TestCA("ca").issue("lonely", [], []).certificate
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


# --------------------------------------------------------------------------------------------------
# dev server and waits
# --------------------------------------------------------------------------------------------------
@pytest.mark.real
def test_dev_server_serves_and_is_gone_after_the_block() -> None:
    with dev_server() as bao:
        assert bao.url.startswith("http://127.0.0.1:")
        assert bao.api("POST", "secret/data/x", {"data": {"a": "b"}}).status == 200
        assert bao.api("GET", "secret/data/x").data["data"] == {"a": "b"}
        proc = bao.process
    assert proc.poll() is not None


@pytest.mark.real
def test_wait_until_names_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"waiting for the moon to rise \(last error: OSError: nope\)"):
        wait_until(lambda: (_ for _ in ()).throw(OSError("nope")), 0.3, 0.05, "the moon to rise", ignore=(OSError,))
    assert time.monotonic() - started < 2
    assert wait_until(lambda: 42, 1, what="the answer") == 42
