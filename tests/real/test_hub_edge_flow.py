"""One client certificate from the hub's cert-manager to the edge's VSO role, through two real Vaults.

Both stacks are evaluated under mocks; the hub's Vault configuration is applied to a real hub
OpenBao (its databases on loopback, as ``rig.local_hub`` declares them), the edge stack is then
evaluated with the REAL hub outputs in its stack reference (address, CA) and the hub credentials its
own deploy identity created on the hub (a JWT signed by a key this test owns, which the hub trusts),
and its configuration applied to a real edge OpenBao. Certificates are issued by a test CA exactly
as the hub's ``Certificate`` resources specify and served as cert-manager Secrets by the hub's
loopback Kubernetes API, readable by the cert-sync ServiceAccount exactly as the hub's Role says.
Then the two cert-sync CronJobs run as their pods would (their own command and environment, only
addresses and mounted files replaced), hub first, then edge, and the edge's VSO role is checked to
read exactly what its VaultStaticSecret names.
"""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from components.cert_sync_cadence import EDGE_SECRET_ID_TTL_SECONDS, EDGE_TOKEN_TTL_SECONDS, FOLLOW_POLL_SECONDS
from components.otlp_pki import CLIENT_CA_KV_PATH, EDGE_CLIENT_TLS_KV_PATH, GATEWAY_TLS_KV_PATH
from components.vault_names import EDGE_APPROLE_MOUNT
from offline.engine import Recording
from programs.cert_sync.follow import TOKEN_RESERVE_SECONDS
from rig.applier import AppliedVault, VaultApplier
from rig.deploy_identity import DeployKey, edge_on_real_hub
from rig.hub_edge import (
    Pki,
    children,
    issue_pki,
    k8s_object,
    kubernetes_auth_overrides,
    publish_pki,
    real_hub_outputs,
    run_cert_sync,
    secret_value,
    vso_login,
)
from rig.kube_api import KubeAPIServer
from rig.local_hub import AWS_TYPES, hub_against
from rig.mtls import Gateway, Handshake
from rig.openbao import api
from rig.pki import TestCA
from rig.tls_vault import Vault, initialise, start_vault
from tests.support.local_databases import local_databases

pytestmark = pytest.mark.real

EDGE = "edge-eu"


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

    def cert_sync(
        self, recording: Recording, vault: Vault, kube: KubeAPIServer, trust_lead: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the stack's cert-sync CronJob as its pod would."""
        return run_cert_sync(recording, vault.url, vault.ca_file, kube, self.workdir, trust_lead=trust_lead)

    def both(self, trust_lead: float | None = None) -> None:
        """A hub run, then an edge run: both must succeed."""
        for recording, vault, kube in (
            (self.hub, self.hub_vault, self.hub_kube),
            (self.edge, self.edge_vault, self.edge_kube),
        ):
            run = self.cert_sync(recording, vault, kube, trust_lead)
            assert run.returncode == 0, run.stderr

    def handshake(self) -> Handshake:
        """The edge collector sending to the gateway, each with the files its VSO makes from its own
        Vault now: the gateway's certificate and client CA bundle from the hub's, the edge's
        certificate and server CA bundle from the edge's."""
        files: dict[str, str] = {}
        for vault, path in (
            (self.hub_vault, GATEWAY_TLS_KV_PATH),
            (self.hub_vault, CLIENT_CA_KV_PATH),
            (self.edge_vault, EDGE_CLIENT_TLS_KV_PATH),
        ):
            data = vault.kv(path)
            assert data is not None, path
            for key, text in data.items():
                files[f"{path}/{key}"] = str(self.workdir / "tls" / path / key)
                Path(files[f"{path}/{key}"]).parent.mkdir(parents=True, exist_ok=True)
                Path(files[f"{path}/{key}"]).write_text(text)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(files[f"{GATEWAY_TLS_KV_PATH}/tls.crt"], files[f"{GATEWAY_TLS_KV_PATH}/tls.key"])
        server.load_verify_locations(files[f"{CLIENT_CA_KV_PATH}/ca.crt"])
        server.verify_mode = ssl.CERT_REQUIRED
        server.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(files[f"{EDGE_CLIENT_TLS_KV_PATH}/ca.crt"])
        client.load_cert_chain(files[f"{EDGE_CLIENT_TLS_KV_PATH}/tls.crt"], files[f"{EDGE_CLIENT_TLS_KV_PATH}/tls.key"])
        host = self.hub.outputs["otlpEndpoint"].removeprefix("https://").rsplit(":", 1)[0]
        return Gateway(server).handshake(client, host)


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    base = tmp_path_factory.mktemp("flow")
    ca = TestCA("fedobs-test-vault-ca")
    with local_databases() as (pg, mysql), KubeAPIServer() as hub_kube, KubeAPIServer() as edge_kube:
        key = DeployKey()
        hub = hub_against(pg, mysql, key)
        hub_node = start_vault("hub", base / "hub", ca)
        edge_node = start_vault("edge", base / "edge", ca)
        try:
            hub_vault, edge_vault = initialise("hub", hub_node, kv=False), initialise("edge", edge_node, kv=False)
            applied_hub = VaultApplier(
                hub_vault.url,
                hub_vault.root,
                ca_file=hub_vault.ca_file,
                not_in_openbao=AWS_TYPES,
                in_cluster_overrides=kubernetes_auth_overrides(hub_kube),
            ).apply(children(hub, "hub-vault-config", "hub-kubernetes-auth", "hub-transit-unseal", "hub-edge-identity"))
            hub_outputs = real_hub_outputs(hub, address=hub_vault.url, ca_pem=ca.cert_pem)
            edge, _ = edge_on_real_hub(hub, key, hub_outputs, hub_vault.url, hub_vault.ca_file)
            VaultApplier(
                edge_vault.url,
                edge_vault.root,
                ca_file=edge_vault.ca_file,
                in_cluster_overrides=kubernetes_auth_overrides(edge_kube),
            ).apply(children(edge, f"{EDGE}-vault-config", f"{EDGE}-kubernetes-auth"))

            pki = issue_pki(hub)
            publish_pki(hub, hub_kube, pki)
            yield Flow(hub, edge, hub_vault, edge_vault, hub_kube, edge_kube, pki, applied_hub, base)
        finally:
            hub_node.stop()
            edge_node.stop()


def certificates(data: dict[str, Any] | None, key: str = "ca.crt") -> list[x509.Certificate]:
    assert data is not None
    return x509.load_pem_x509_certificates(str(data[key]).encode())


def test_hub_then_edge_cert_sync_delivers_the_edge_certificate(flow: Flow) -> None:
    flow.both()
    delivered = flow.edge_vault.kv("otel/otel-client-tls")
    issued = flow.pki.client(EDGE).secret_data
    assert delivered is not None and set(delivered) == {"tls.crt", "tls.key", "ca.crt"}
    assert (delivered["tls.crt"], delivered["tls.key"]) == (issued["tls.crt"], issued["tls.key"])
    # the edge verifies the gateway with the server root alone
    assert certificates(delivered) == [flow.pki.server_ca.certificate]
    # the gateway trusts client-ca alone, learnt from the leaves' ca.crt: no Role reads a CA's Secret
    assert certificates(flow.hub_vault.kv("otel/client-ca")) == [flow.pki.client_ca.certificate]
    assert certificates(flow.hub_vault.kv("otel/server-ca")) == [flow.pki.server_ca.certificate]
    for ca in ("client-ca", "otel-server-ca"):
        assert flow.hub_kube.count("GET", f"/api/v1/namespaces/fedobs-pki/secrets/{ca}") == 0, ca
    assert flow.hub_vault.kv(f"edges/{EDGE}/otel-client-tls") == delivered
    handshake = flow.handshake()
    assert (handshake.server_error, handshake.client_error, handshake.peer_common_name) == (None, None, EDGE)


def test_a_renewed_certificate_reaches_the_edge(flow: Flow) -> None:
    before = flow.edge_vault.version("otel/otel-client-tls")
    renewed = flow.pki.renew_client(EDGE).secret_data
    flow.hub_kube.put_secret("fedobs-pki", f"otel-client-tls-{EDGE}", renewed, type="kubernetes.io/tls")
    for recording, vault, kube in (
        (flow.hub, flow.hub_vault, flow.hub_kube),
        (flow.edge, flow.edge_vault, flow.edge_kube),
    ):
        result = flow.cert_sync(recording, vault, kube)
        assert result.returncode == 0, result.stderr
    assert flow.edge_vault.version("otel/otel-client-tls") == before + 1
    assert flow.edge_vault.kv("otel/otel-client-tls")["tls.crt"] == renewed["tls.crt"]  # type: ignore[index]
    assert flow.handshake().peer_common_name == EDGE


def test_the_edge_vso_role_reads_exactly_what_its_static_secret_names(flow: Flow) -> None:
    static = k8s_object(flow.edge, "VaultStaticSecret", "otel-client-tls")["spec"]
    login, path = vso_login(flow.edge, flow.edge_vault.url, flow.edge_vault.ca_file, flow.edge_kube)
    assert login.status == 200, login.text
    token = login.body["auth"]["client_token"]
    assert path == f"{static['mount']}/data/{static['path']}"
    read = api(flow.edge_vault.url, "GET", path, token=token, ca_file=flow.edge_vault.ca_file)
    assert read.status == 200 and read.data["data"]["tls.crt"].startswith("-----BEGIN CERTIFICATE-----")
    others = [
        f"{static['mount']}/data/otel/other",
        f"{static['mount']}/metadata/{static['path']}",
        f"{static['mount']}/data/edges/{EDGE}/otel-client-tls",
        "sys/mounts",
        "auth/token/create",
    ]
    capabilities = api(
        flow.edge_vault.url,
        "POST",
        "sys/capabilities",
        token=flow.edge_vault.root,
        ca_file=flow.edge_vault.ca_file,
        body={"token": token, "paths": [path, *others]},
    ).body
    assert capabilities[path] == ["read"]
    for other in others:
        assert capabilities[other] == ["deny"], other
    write = api(
        flow.edge_vault.url,
        "POST",
        path,
        token=token,
        ca_file=flow.edge_vault.ca_file,
        body={"options": {"cas": 1}, "data": {"x": "y"}},
    )
    assert write.status == 403


def test_a_client_ca_rotation_through_both_vaults_never_breaks_the_edge(flow: Flow) -> None:
    """client-ca renews its key (its leaves are not re-issued: cert-manager #2478, #9076), then the
    edge's certificate renews from it. After every hub run and edge run, the edge still connects to
    the gateway with what the two real Vaults hold; the new certificate reaches the edge only once
    the gateway's bundle has held the new CA for the lead (2 s here instead of 300)."""
    flow.both()
    old_ca, published = flow.pki.client_ca, flow.edge_vault.kv("otel/otel-client-tls")
    new_ca = flow.pki.renew("client-ca")
    flow.hub_kube.put_secret("fedobs-pki", "client-ca", new_ca.secret_data, type="kubernetes.io/tls")
    flow.both(trust_lead=2)
    assert flow.edge_vault.kv("otel/otel-client-tls") == published
    assert flow.handshake().peer_common_name == EDGE

    renewed = flow.pki.renew_client(EDGE).secret_data  # from the new CA
    flow.hub_kube.put_secret("fedobs-pki", f"otel-client-tls-{EDGE}", renewed, type="kubernetes.io/tls")
    flow.both(trust_lead=2)
    assert certificates(flow.hub_vault.kv("otel/client-ca")) == [new_ca.certificate, old_ca.certificate]
    assert flow.edge_vault.kv("otel/otel-client-tls") == published  # held back
    assert flow.handshake().peer_common_name == EDGE

    time.sleep(2)
    flow.both(trust_lead=2)
    delivered = flow.edge_vault.kv("otel/otel-client-tls")
    assert delivered is not None and delivered["tls.crt"] == renewed["tls.crt"]
    handshake = flow.handshake()
    assert (handshake.server_error, handshake.client_error, handshake.peer_common_name) == (None, None, EDGE)


# ---------------------------------------------------------------------------------------------
# the edge's follower on the stacks' own hub configuration: its cost at the hub, its secret_id
# ---------------------------------------------------------------------------------------------
def hub_requests_by_path(flow: Flow, mark: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in flow.hub_vault.audit_requests(mark):
        counts[str(request.get("path"))] = counts.get(str(request.get("path")), 0) + 1
    return counts


def test_an_unchanged_edge_costs_the_hub_one_request_per_poll(flow: Flow) -> None:
    """Counted in the real hub's audit log while nothing changes: each poll is one read of the KV
    metadata; the login, the secret_id lookup and the revoke happen once per process (per token, when
    it runs for longer than one: components/cert_sync_cadence.py)."""
    flow.both()
    polls = 8
    mark = flow.hub_vault.audit_mark()
    run = run_cert_sync(
        flow.edge, flow.edge_vault.url, flow.edge_vault.ca_file, flow.edge_kube, flow.workdir, passes=polls, poll=0.3
    )
    assert run.returncode == 0, run.stderr
    role = f"auth/{EDGE_APPROLE_MOUNT}/role/{EDGE}"
    assert hub_requests_by_path(flow, mark) == {
        f"auth/{EDGE_APPROLE_MOUNT}/login": 1,
        f"{role}/secret-id/lookup": 1,
        f"kv/metadata/edges/{EDGE}/otel-client-tls": polls,
        f"kv/data/edges/{EDGE}/otel-client-tls": 1,  # the first poll: nothing applied yet in this process
        "auth/token/revoke-self": 1,
    }
    # what that makes per minute with the shipped poll and token (the amortised login and revoke)
    steady = 60 / FOLLOW_POLL_SECONDS
    per_token = 2 * 60 / (EDGE_TOKEN_TTL_SECONDS - TOKEN_RESERVE_SECONDS)
    assert steady + per_token <= 1.0


def test_the_edge_follower_may_touch_only_its_own_role_on_the_applied_hub(flow: Flow) -> None:
    """With the hub's applied configuration: edge-eu's AppRole token can mint, list, look up and destroy
    secret_ids of its own role only; never edge-ap's, never choose its own, never change the role."""
    secret_id = secret_value(flow.edge, "hub-secret-id", "secret-id")
    login = flow.hub_vault.api(
        "POST", f"auth/{EDGE_APPROLE_MOUNT}/login", {"role_id": f"edge-{EDGE}", "secret_id": secret_id}
    )
    assert login.status == 200, login.text
    token = login.body["auth"]["client_token"]
    other = f"auth/{EDGE_APPROLE_MOUNT}/role/edge-ap"
    own = f"auth/{EDGE_APPROLE_MOUNT}/role/{EDGE}"
    for method, path, body in (
        ("POST", f"{other}/secret-id", {}),
        ("LIST", f"{other}/secret-id", None),
        ("POST", f"{other}/secret-id-accessor/destroy", {"secret_id_accessor": "x"}),
        ("POST", f"{own}/custom-secret-id", {"secret_id": "chosen"}),
        ("POST", own, {"secret_id_ttl": 0}),
        ("GET", f"{own}/role-id", None),
    ):
        assert flow.hub_vault.api(method, path, body, token=token).status == 403, (method, path)
    minted = flow.hub_vault.api("POST", f"{own}/secret-id", {}, token=token)
    assert minted.status == 200 and minted.data["secret_id_ttl"] == EDGE_SECRET_ID_TTL_SECONDS, minted.text
    destroyed = flow.hub_vault.api(
        "POST",
        f"{own}/secret-id-accessor/destroy",
        {"secret_id_accessor": minted.data["secret_id_accessor"]},
        token=token,
    )
    assert destroyed.status == 204, destroyed.text
    flow.hub_vault.api("POST", "auth/token/revoke-self", {}, token=token)
