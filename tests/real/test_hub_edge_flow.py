"""One client certificate from the hub's cert-manager to the edge's VSO role, through two real Vaults.

Both stacks are evaluated under mocks; the hub's Vault configuration is applied to a real hub
OpenBao (its databases on loopback, as ``tests.support.local_hub`` declares them), the edge stack is
then evaluated with the REAL hub outputs in its stack reference (address, CA, transit tokens and
its AppRole credential as the applier created them) and its configuration applied to a real edge
OpenBao. Certificates are issued by a test CA exactly as the hub's ``Certificate`` resources
specify and served as cert-manager Secrets by the hub's loopback Kubernetes API, readable by the
cert-sync ServiceAccount exactly as the hub's Role says. Then the two cert-sync CronJobs run as
their pods would (their own command and environment, only addresses and mounted files replaced),
hub first, then edge, and the edge's VSO role is checked to read exactly what its
VaultStaticSecret names.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from offline.engine import RecordedResource, Recording, run_stack_file
from tests.support.applier import AppliedVault, VaultApplier
from tests.support.kube_api import KubeAPIServer
from tests.support.local_hub import AWS_TYPES, hub_against, local_databases
from tests.support.openbao import api
from tests.support.pki import IssuedCert, TestCA
from tests.support.tls_vault import Vault, initialise, start_vault

pytestmark = pytest.mark.real

REPO = Path(__file__).resolve().parents[2]
HUB_REF = "organization/fedobs/hub"
EDGE = "edge-eu"


def children(recording: Recording, *components: str) -> list[RecordedResource]:
    urns = {r.urn for r in recording.resources if not r.custom and r.name in components}
    return [r for r in recording.resources if r.parent in urns]


def k8s(recording: Recording, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in recording.kubernetes_objects() if o["kind"] == kind and o["metadata"]["name"] == name)


@dataclass
class Pki:
    root: TestCA
    client_ca: TestCA
    gateway: IssuedCert
    clients: dict[str, IssuedCert]


def issue_pki(hub: Recording) -> Pki:
    """Certificates as the hub's Certificate resources specify them (names, usages)."""
    specs = {o["metadata"]["name"]: o["spec"] for o in hub.kubernetes_objects()
             if o["kind"] == "Certificate" and o["metadata"]["namespace"] == "fedobs-pki"}
    root = TestCA(specs["otel-root-ca"]["commonName"])
    client_ca = TestCA(specs["client-ca"]["commonName"])  # self-signed here; the hub chains it to the root
    gateway_spec = specs["otel-gateway-tls"]
    gateway = root.issue(gateway_spec["commonName"], gateway_spec["dnsNames"], [], server=True)
    clients = {}
    for name, spec in specs.items():
        if name.startswith("otel-client-tls-"):
            assert spec["usages"] == ["client auth", "digital signature", "key encipherment"]
            clients[spec["commonName"]] = client_ca.issue(spec["commonName"], [], [], server=False, client=True)
    return Pki(root, client_ca, gateway, clients)


def tls_secret(cert: str, key: str, ca: str) -> dict[str, str]:
    return {"tls.crt": cert, "tls.key": key, "ca.crt": ca}


@dataclass
class Flow:
    hub: Recording
    edge: Recording
    hub_vault: Vault
    edge_vault: Vault
    hub_kube: KubeAPIServer
    edge_kube: KubeAPIServer
    pki: Pki
    applied_hub: AppliedVault
    workdir: Path

    def cert_sync(self, recording: Recording, vault: Vault, kube: KubeAPIServer) -> subprocess.CompletedProcess[str]:
        """Run the stack's cert-sync CronJob as its pod would."""
        cronjob = k8s(recording, "CronJob", "cert-sync")
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "CERT_SYNC_", "BAO_"))}
        env |= {e["name"]: e["value"] for e in container["env"]}
        jwt = self.workdir / f"{recording.stack}-jwt"
        jwt.write_text(kube.mint_service_account_token(
            cronjob["metadata"]["namespace"], pod["serviceAccountName"], audiences=["vault"]))
        # what differs from the pod: where Vault is, and the files its volumes would mount
        env |= {"VAULT_ADDR": vault.url, "VAULT_CACERT": vault.ca_file, "CERT_SYNC_JWT_FILE": str(jwt)}
        command = list(container["command"])
        if command[3] == "hub":
            kube_token = self.workdir / "kube-token"
            kube_token.write_text(kube.mint_service_account_token("fedobs-cert-sync", "cert-sync"))
            command += ["--kube-api", kube.url, "--kube-token-file", str(kube_token), "--kube-ca-file", kube.ca_file]
        else:
            credential = k8s(recording, "Secret", "hub-credential")["stringData"]
            mounted = self.workdir / "hub"
            mounted.mkdir(exist_ok=True)
            for key in ("role-id", "secret-id", "ca.crt"):
                (mounted / key).write_text(credential[key])
            command = [str(mounted / part.removeprefix("/fedobs/hub/")) if part.startswith("/fedobs/hub/") else part
                       for part in command]
        return subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=90)


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    base = tmp_path_factory.mktemp("flow")
    ca = TestCA("fedobs-test-vault-ca")
    with (local_databases() as (pg, mysql), KubeAPIServer() as hub_kube, KubeAPIServer() as edge_kube):
        hub = hub_against(pg, mysql)
        hub_node = start_vault("hub", base / "hub", ca)
        edge_node = start_vault("edge", base / "edge", ca)
        try:
            hub_vault, edge_vault = initialise("hub", hub_node, kv=False), initialise("edge", edge_node, kv=False)

            def overrides(kube: KubeAPIServer) -> dict[str, dict[str, Any]]:
                kube.allow_token_reviews("system:serviceaccount:vault:vault")
                return {"vault:kubernetes/authBackendConfig:AuthBackendConfig": {
                    "kubernetesHost": kube.url, "kubernetesCaCert": kube.ca_pem, "disableLocalCaJwt": True,
                    "tokenReviewerJwt": kube.mint_service_account_token("vault", "vault")}}

            applied_hub = VaultApplier(hub_vault.url, hub_vault.root, ca_file=hub_vault.ca_file,
                                       not_in_openbao=AWS_TYPES, in_cluster_overrides=overrides(hub_kube)).apply(
                children(hub, "hub-vault-config", "hub-kubernetes-auth", "hub-transit-unseal"))
            credential = {"mount": "approle-edges",
                          "roleId": applied_hub.role_ids[f"hub-vault-config-edge-{EDGE}-role"],
                          "secretId": applied_hub.secret_ids[f"hub-vault-config-edge-{EDGE}-secret-id"]}
            tokens = {name.removeprefix("hub-transit-unseal-").removesuffix("-token"): token
                      for name, token in applied_hub.tokens.items()}
            hub_outputs = {**hub.outputs, "vaultAddress": hub_vault.url, "vaultCaCert": ca.cert_pem,
                           "edgeTransitTokens": tokens, "edgeCredentials": {EDGE: credential}}
            edge = run_stack_file("edge", {HUB_REF: hub_outputs})
            assert edge.error is None, edge.error
            VaultApplier(edge_vault.url, edge_vault.root, ca_file=edge_vault.ca_file,
                         in_cluster_overrides=overrides(edge_kube)).apply(
                children(edge, f"{EDGE}-vault-config", f"{EDGE}-kubernetes-auth"))

            pki = issue_pki(hub)
            reader = k8s(hub, "Role", "cert-sync-reader")
            hub_kube.allow_service_account("fedobs-cert-sync", "cert-sync", verbs=["get"], resources=["secrets"],
                                           namespace=reader["metadata"]["namespace"],
                                           resource_names=reader["rules"][0]["resourceNames"])
            secrets = {"otel-gateway-tls": tls_secret(pki.gateway.cert_pem, pki.gateway.key_pem, pki.root.cert_pem),
                       "client-ca": tls_secret(pki.client_ca.cert_pem, pki.client_ca.key_pem, pki.root.cert_pem)}
            for edge_name, cert in pki.clients.items():
                secrets[f"otel-client-tls-{edge_name}"] = tls_secret(cert.cert_pem, cert.key_pem,
                                                                     pki.client_ca.cert_pem)
            for name, data in secrets.items():
                hub_kube.put_secret("fedobs-pki", name, data, type="kubernetes.io/tls")
            yield Flow(hub, edge, hub_vault, edge_vault, hub_kube, edge_kube, pki, applied_hub, base)
        finally:
            hub_node.stop()
            edge_node.stop()


def test_hub_then_edge_cert_sync_delivers_the_edge_certificate(flow: Flow) -> None:
    hub_run = flow.cert_sync(flow.hub, flow.hub_vault, flow.hub_kube)
    assert hub_run.returncode == 0, hub_run.stderr
    edge_run = flow.cert_sync(flow.edge, flow.edge_vault, flow.edge_kube)
    assert edge_run.returncode == 0, edge_run.stderr
    delivered = flow.edge_vault.kv("otel/otel-client-tls")
    assert delivered == tls_secret(flow.pki.clients[EDGE].cert_pem, flow.pki.clients[EDGE].key_pem,
                                   flow.pki.client_ca.cert_pem)
    # the hub keeps client-ca's certificate only: its private key never leaves the cluster
    assert flow.hub_vault.kv("otel/client-ca") == {"ca.crt": flow.pki.client_ca.cert_pem}
    assert flow.hub_vault.kv(f"edges/{EDGE}/otel-client-tls") == delivered


def test_a_renewed_certificate_reaches_the_edge(flow: Flow) -> None:
    before = flow.edge_vault.version("otel/otel-client-tls")
    renewed = flow.pki.client_ca.issue(EDGE, [], [], server=False, client=True)
    flow.hub_kube.put_secret("fedobs-pki", f"otel-client-tls-{EDGE}",
                             tls_secret(renewed.cert_pem, renewed.key_pem, flow.pki.client_ca.cert_pem),
                             type="kubernetes.io/tls")
    for recording, vault, kube in ((flow.hub, flow.hub_vault, flow.hub_kube),
                                   (flow.edge, flow.edge_vault, flow.edge_kube)):
        result = flow.cert_sync(recording, vault, kube)
        assert result.returncode == 0, result.stderr
    assert flow.edge_vault.version("otel/otel-client-tls") == before + 1
    assert flow.edge_vault.kv("otel/otel-client-tls")["tls.crt"] == renewed.cert_pem  # type: ignore[index]


def test_the_edge_vso_role_reads_exactly_what_its_static_secret_names(flow: Flow) -> None:
    static = k8s(flow.edge, "VaultStaticSecret", "otel-client-tls")["spec"]
    auth = k8s(flow.edge, "VaultAuth", "vault")
    kubernetes = auth["spec"]["kubernetes"]
    jwt = flow.edge_kube.mint_service_account_token(auth["metadata"]["namespace"], kubernetes["serviceAccount"],
                                                    audiences=kubernetes["audiences"])
    login = api(flow.edge_vault.url, "POST", f"auth/{auth['spec']['mount']}/login", ca_file=flow.edge_vault.ca_file,
                body={"role": kubernetes["role"], "jwt": jwt})
    assert login.status == 200, login.text
    token = login.body["auth"]["client_token"]
    path = f"{static['mount']}/data/{static['path']}"
    read = api(flow.edge_vault.url, "GET", path, token=token, ca_file=flow.edge_vault.ca_file)
    assert read.status == 200 and read.data["data"]["tls.crt"].startswith("-----BEGIN CERTIFICATE-----")
    others = [f"{static['mount']}/data/otel/other", f"{static['mount']}/metadata/{static['path']}",
              f"{static['mount']}/data/edges/{EDGE}/otel-client-tls", "sys/mounts", "auth/token/create"]
    capabilities = api(flow.edge_vault.url, "POST", "sys/capabilities", token=flow.edge_vault.root,
                       ca_file=flow.edge_vault.ca_file, body={"token": token, "paths": [path, *others]}).body
    assert capabilities[path] == ["read"]
    for other in others:
        assert capabilities[other] == ["deny"], other
    write = api(flow.edge_vault.url, "POST", path, token=token, ca_file=flow.edge_vault.ca_file,
                body={"options": {"cas": 1}, "data": {"x": "y"}})
    assert write.status == 403
