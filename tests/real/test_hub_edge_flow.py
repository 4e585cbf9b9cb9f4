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

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from offline.engine import Recording
from rig.applier import AppliedVault, VaultApplier
from rig.deploy_identity import DeployKey, deploy_token, edge_jwt, edge_on_real_hub
from rig.hub_edge import (
    Pki,
    children,
    issue_pki,
    k8s_object,
    kubernetes_auth_overrides,
    publish_pki,
    real_hub_outputs,
    run_cert_sync,
    vso_login,
)
from rig.kube_api import KubeAPIServer
from rig.local_hub import AWS_TYPES, hub_against
from rig.openbao import api
from rig.pki import TestCA
from rig.tls_vault import Vault, initialise, start_vault
from tests.support.local_databases import local_databases

pytestmark = pytest.mark.real

HUB_REF = "organization/fedobs/hub"
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

    def cert_sync(self, recording: Recording, vault: Vault, kube: KubeAPIServer) -> subprocess.CompletedProcess[str]:
        """Run the stack's cert-sync CronJob as its pod would."""
        return run_cert_sync(recording, vault.url, vault.ca_file, kube, self.workdir)


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
            token = deploy_token(hub_vault.url, hub_vault.ca_file, EDGE, edge_jwt(key, hub, EDGE))
            edge, _ = edge_on_real_hub({HUB_REF: hub_outputs}, hub_vault.url, hub_vault.ca_file, token)
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


def test_hub_then_edge_cert_sync_delivers_the_edge_certificate(flow: Flow) -> None:
    hub_run = flow.cert_sync(flow.hub, flow.hub_vault, flow.hub_kube)
    assert hub_run.returncode == 0, hub_run.stderr
    edge_run = flow.cert_sync(flow.edge, flow.edge_vault, flow.edge_kube)
    assert edge_run.returncode == 0, edge_run.stderr
    delivered = flow.edge_vault.kv("otel/otel-client-tls")
    assert delivered == flow.pki.client(EDGE).secret_data
    # the hub keeps client-ca's certificate only: its private key never leaves the cluster
    assert flow.hub_vault.kv("otel/client-ca") == {"ca.crt": flow.pki.client_ca.secret_data["tls.crt"]}
    assert flow.hub_vault.kv(f"edges/{EDGE}/otel-client-tls") == delivered


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
