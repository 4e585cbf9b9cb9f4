"""Rung 5: the stacks' containers run as the kubelet would run them (``rig.pod_sandbox``).

Each container is taken from the recorded plan (its Pod spec exactly: user, groups, fsGroup,
read-only root, volumes with their modes, env, command) and run in the sandbox against the same
real loopback peers the rung-4 tests use. What a test changes is listed where it does it, and is
only what has no equivalent here: addresses (no cluster DNS, loopback ports) and the contents of
the objects the volumes and env refer to (test certificates, test credentials, tokens of the
loopback Kubernetes API).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components.vault_server_config import SERVER_CERTIFICATE_IP_ADDRESSES, TLS_DIR
from offline.engine import Recording
from rig.applier import VaultApplier
from rig.hub_edge import children, k8s_object, kubernetes_auth_overrides, pod_template
from rig.kube_api import KubeAPIServer
from rig.openbao import api, bao_binary, localize_server_hcl, loopback_layout, wait_until
from rig.pki import TestCA
from rig.pod_sandbox import Cluster, PodSandbox, programs_image, stop, vault_image
from rig.raft_single import RaftSingleNode
from rig.s3 import MotoS3
from rig.tls_vault import Vault
from rig.vault_cluster import TLS_FILE_NAMES, LoopbackVault, bootstrap_job, stack_server
from rig.vault_pod import config_map_data, vault_server_pod
from tests.real import test_hub_edge_flow as hub_edge_flow

pytestmark = pytest.mark.real

PASSWORD = "pod-sandbox-admin-password"  # the test's value of the vault-admin-credential Secret


def vault_values(recording: Recording) -> dict[str, Any]:
    release = next(r for r in recording.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault")
    return dict(release.inputs["values"])


def token_source(kube: KubeAPIServer, namespace: str, account: str) -> Any:
    """A projected token of ``account``: what the kubelet asks the API server for (TokenRequest)."""

    def token(audience: str | None, seconds: int) -> str:
        audiences = [audience] if audience else None
        return kube.mint_service_account_token(namespace, account, audiences=audiences, ttl=seconds)

    return token


def api_server(kube: KubeAPIServer) -> tuple[str, int, str]:
    return ("127.0.0.1", kube.port, kube.ca_pem)


# --------------------------------------------------------------------------------------------------
# the Vault server container, with the chart's start command
# --------------------------------------------------------------------------------------------------
def vault_server_sandbox(
    recording: Recording, workdir: Path, kube: KubeAPIServer
) -> tuple[PodSandbox, str, dict[str, str]]:
    """Pod ``vault-0`` of the stack's server StatefulSet (``rig.vault_pod``) in the sandbox, with ``bao``
    as ``vault``. Localised: the ConfigMap's HCL by ``localize_server_hcl`` with the pod's own file
    paths kept (listener and retry_join addresses -> loopback, ``api_addr``/``cluster_addr`` written,
    ``service_registration "kubernetes"`` removed: it PATCHes the pod's labels on the API server) and
    ``VAULT_API_ADDR``/``VAULT_CLUSTER_ADDR`` (the chart's ``$(POD_IP):8200``, ``$(HOSTNAME).vault-internal``)
    to the same loopback addresses. Returns the sandbox, the API URL and the env overrides."""
    values = vault_values(recording)
    server = stack_server(recording)
    hosts = [server.spec.peer_hostname(i) for i in range(server.spec.replicas)]
    layout = loopback_layout(hosts)
    ca = TestCA("fedobs pod-sandbox CA")
    leaf = ca.issue("vault-0", server.dns_names, list(dict.fromkeys([*SERVER_CERTIFICATE_IP_ADDRESSES, *layout.ips])))
    data_path = values["server"]["dataStorage"]["mountPath"]
    config = config_map_data(values)["extraconfig-from-values.hcl"]
    localized = localize_server_hcl(
        config,
        node_index=0,
        addresses=layout.addresses,
        ports=layout.ports,
        tls_files={f"{TLS_DIR}/{n}": f"{TLS_DIR}/{n}" for n in TLS_FILE_NAMES},
        data_dir=data_path,
    )
    cluster = Cluster(
        server.spec.namespace,
        secrets={"vault-server-tls": {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca.cert_pem}},
        config_maps={"vault-config": {"extraconfig-from-values.hcl": localized}},
        token=token_source(kube, server.spec.namespace, "vault"),
        api_server=api_server(kube),
    )
    (workdir / "ca.crt").write_text(ca.cert_pem)
    box = PodSandbox(
        vault_server_pod(values, release=server.spec.release),
        "vault",
        vault_image(bao_binary()),
        cluster,
        workdir,
        pod_name=f"{server.spec.release}-0",
        pod_ip=layout.ips[0],
        host_ip=layout.ips[0],
    )
    url = layout.api_url(0)
    overrides = {
        "VAULT_API_ADDR": url,
        "VAULT_CLUSTER_ADDR": f"https://{layout.ips[0]}:{layout.ports[8201]}",
    }
    return box, url, overrides


def test_the_vault_server_container_starts_with_the_charts_command(hub: Recording, tmp_path: Path) -> None:
    with KubeAPIServer() as kube:
        box, url, overrides = vault_server_sandbox(hub, tmp_path, kube)
        log = tmp_path / "vault-0.log"
        proc = box.popen(env_overrides=overrides, log=log)
        ca_file = str(tmp_path / "ca.crt")
        try:

            def answers() -> bool:
                assert proc.poll() is None, f"the server container exited {proc.returncode}:\n{log.read_text()}"
                try:
                    return api(url, "GET", "sys/seal-status", ca_file=ca_file).status == 200
                except OSError:
                    return False

            wait_until(answers, timeout=30, what="the sandboxed server answers")
            init = api(url, "POST", "sys/init", body={"secret_shares": 1, "secret_threshold": 1}, ca_file=ca_file)
            assert init.status == 200, init.text
            unseal = api(url, "POST", "sys/unseal", body={"key": init.body["keys"][0]}, ca_file=ca_file)
            assert unseal.status == 200 and unseal.body["sealed"] is False, unseal.text
            token = init.body["root_token"]
            wait_until(
                lambda: api(url, "GET", "sys/leader", token=token, ca_file=ca_file).body.get("is_self") is True,
                timeout=30,
                what="the node leads",
            )
            # Raft wrote to the data PVC as the container's user, group-owned by the fsGroup (setgid)
            data = box.volume_dirs["data"]
            owners = {(p.stat().st_uid, p.stat().st_gid) for p in data.rglob("*") if not p.is_symlink()}
            assert owners and owners <= {(100, 1000)}, owners
            # the chart's copy of the config, with the placeholders substituted, is in the /tmp emptyDir
            assert (box.volume_dirs["tmp"] / "storageconfig.hcl").is_file()
        finally:
            stop(proc)
        assert "storageconfig.hcl" in box.container["args"][0]


# --------------------------------------------------------------------------------------------------
# the bootstrap Job
# --------------------------------------------------------------------------------------------------
def bootstrap_sandbox(recording: Recording, vault: LoopbackVault, kube: KubeAPIServer, workdir: Path) -> PodSandbox:
    job = bootstrap_job(recording)
    namespace = job["metadata"]["namespace"]
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    kube.allow_service_account(namespace, account, ["get", "create", "update"], ["secrets"], namespace)
    policy = k8s_object(recording, "ConfigMap", "vault-admin-policy")["data"]
    cluster = Cluster(
        namespace,
        secrets={
            "vault-server-tls": {"ca.crt": Path(vault.ca_file).read_text()},
            "vault-admin-credential": {"password": PASSWORD},
        },
        config_maps={"vault-admin-policy": policy},
        token=token_source(kube, namespace, account),
        api_server=api_server(kube),
    )
    return PodSandbox(job["spec"]["template"], "bootstrap", programs_image(), cluster, workdir, pod_name="bootstrap")


def bootstrap_command(box: PodSandbox, vault: LoopbackVault) -> list[str]:
    """The Job's command with its ``--peer`` URLs on loopback (pods not started dropped), plus test
    deadlines and a short autopilot stabilisation time. Files and the state Secret are the pod's own."""
    command = list(box.container["command"])
    peers = iter(vault.urls)
    localized: list[str] = command[:3]
    parts = iter(command[3:])
    for flag in parts:
        value = next(parts)
        if flag == "--peer":
            value = next(peers, "")
            if not value:
                continue
        localized += [flag, value]
    return [*localized, "--timeout", "45", "--poll-interval", "0.2", "--autopilot-server-stabilization-time", "2s"]


def test_the_bootstrap_job_runs_in_its_pod(hub: Recording, loopback_vault: Any, tmp_path: Path) -> None:
    vault = loopback_vault(
        stack_server(hub).spec, pod_hcl=stack_server(hub).pod_hcl, dns_names=stack_server(hub).dns_names
    )
    with KubeAPIServer() as kube:
        box = bootstrap_sandbox(hub, vault, kube, tmp_path)
        result = box.run(bootstrap_command(box, vault), timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert PASSWORD not in result.stdout + result.stderr
        stored = kube.secret_data("vault", "vault-init")
        assert stored is not None and "init.json" in stored
    login = api(
        vault.urls[0], "POST", "auth/userpass-pulumi/login/pulumi", body={"password": PASSWORD}, ca_file=vault.ca_file
    )
    assert login.status == 200, login.text


# --------------------------------------------------------------------------------------------------
# both cert-sync CronJobs (hub, then edge), on the two real Vaults of tests/real/test_hub_edge_flow.py
# --------------------------------------------------------------------------------------------------
flow = hub_edge_flow.flow  # the same fixture: both stacks' Vault configurations applied to real servers


def cert_sync_sandbox(
    recording: Recording, vault: Vault, kube: KubeAPIServer, workdir: Path
) -> tuple[PodSandbox, list[str]]:
    """The stack's cert-sync CronJob pod; its command with one pass instead of the CronJob's three (20 s apart)."""
    cronjob = k8s_object(recording, "CronJob", "cert-sync")
    template = pod_template(recording, "CronJob", "cert-sync")
    namespace = cronjob["metadata"]["namespace"]
    secrets: dict[str, dict[str, str]] = {"vault-ca": {"ca.crt": Path(vault.ca_file).read_text()}}
    if any(v["name"] == "hub" for v in template["spec"]["volumes"]):
        secrets["hub-credential"] = dict(k8s_object(recording, "Secret", "hub-credential")["stringData"])
    cluster = Cluster(
        namespace,
        secrets=secrets,
        token=token_source(kube, namespace, template["spec"]["serviceAccountName"]),
        api_server=api_server(kube),
    )
    box = PodSandbox(template, "cert-sync", programs_image(), cluster, workdir, pod_name=f"cert-sync-{recording.stack}")
    command = list(box.container["command"])
    command[command.index("--passes") + 1] = "1"
    return box, command


def test_both_cert_sync_cronjobs_run_in_their_pods(flow: hub_edge_flow.Flow, tmp_path: Path) -> None:
    # localised: where each Vault is (the spec's in-cluster Service names), the hub's address for the
    # edge, and the hub's Kubernetes API (https://kubernetes.default.svc) -- nothing else
    hub_box, hub_command = cert_sync_sandbox(flow.hub, flow.hub_vault, flow.hub_kube, tmp_path / "hub")
    hub_run = hub_box.run(
        hub_command, env_overrides={"VAULT_ADDR": flow.hub_vault.url, "CERT_SYNC_KUBE_API": flow.hub_kube.url}
    )
    assert hub_run.returncode == 0, hub_run.stdout + hub_run.stderr
    edge_box, edge_command = cert_sync_sandbox(flow.edge, flow.edge_vault, flow.edge_kube, tmp_path / "edge")
    edge_run = edge_box.run(
        edge_command, env_overrides={"VAULT_ADDR": flow.edge_vault.url, "CERT_SYNC_HUB_ADDR": flow.hub_vault.url}
    )
    assert edge_run.returncode == 0, edge_run.stdout + edge_run.stderr
    assert flow.edge_vault.kv("otel/otel-client-tls") == flow.pki.client(hub_edge_flow.EDGE).secret_data
    # the credential files are root-owned, group fsGroup, 0440: readable by the program only through the group
    credential = edge_box.volume_dirs["hub"] / "..data" / "secret-id"
    assert (credential.stat().st_uid, credential.stat().st_gid, credential.stat().st_mode & 0o7777) == (
        0,
        65532,
        0o440,
    )


# --------------------------------------------------------------------------------------------------
# the Raft snapshot CronJob, on a real Raft node with the hub's Kubernetes auth roles, to moto's S3
# --------------------------------------------------------------------------------------------------
def test_the_raft_snapshot_cronjob_runs_in_its_pod(hub: Recording, tmp_path: Path) -> None:
    cronjob = k8s_object(hub, "CronJob", "vault-raft-snapshot")
    template = pod_template(hub, "CronJob", "vault-raft-snapshot")
    namespace = cronjob["metadata"]["namespace"]
    env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
    ca = TestCA("fedobs pod-sandbox snapshot CA")
    with KubeAPIServer() as kube, MotoS3() as s3, RaftSingleNode(tmp_path / "raft", ca, "raft") as node:
        root = node.initialize(shares=1, threshold=1).root_token
        VaultApplier(node.url, root, ca_file=node.ca_file, in_cluster_overrides=kubernetes_auth_overrides(kube)).apply(
            children(hub, "hub-kubernetes-auth")
        )
        bucket = s3.create_bucket(env["SNAPSHOT_S3_BUCKET"])
        moto = s3.env()
        cluster = Cluster(
            namespace,
            secrets={
                "vault-server-tls": {"ca.crt": ca.cert_pem},
                "vault-snapshot-s3": {
                    "access-key-id": moto["AWS_ACCESS_KEY_ID"],
                    "secret-access-key": moto["AWS_SECRET_ACCESS_KEY"],
                },
            },
            token=token_source(kube, namespace, template["spec"]["serviceAccountName"]),
        )
        box = PodSandbox(template, "snapshot", programs_image(), cluster, tmp_path / "pod", pod_name="snapshot")
        # localised: where Vault and the object storage are
        result = box.run(env_overrides={"VAULT_ADDR": node.url, "SNAPSHOT_S3_ENDPOINT": s3.endpoint_url}, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        keys = s3.keys(bucket)
        assert len(keys) == 1 and env["SNAPSHOT_CLUSTER_NAME"] in keys[0], keys
