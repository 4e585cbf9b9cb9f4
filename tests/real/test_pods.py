"""Rung 5: the stacks' containers run as the kubelet would run them (``rig.pod_sandbox``).

Each container is taken from the recorded plan (its Pod spec exactly: user, groups, fsGroup,
read-only root, volumes with their modes, env, command) and run in the sandbox against the same
real loopback peers the rung-4 tests use. What a test changes is listed where it does it, and is
only what has no equivalent here: addresses (no cluster DNS, loopback ports) and the contents of
the objects the volumes and env refer to (test certificates, test credentials, tokens of the
loopback Kubernetes API). The collectors' image cannot run here: their test keeps the Pod as planned and
replaces only the command, by a reader of every file the collector's configuration names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import components.vault as vault_component
from components.collectors import COLLECTOR_UID
from components.pod_security import PROGRAMS_UID
from components.vault_server_config import HUB_CA_DIR, SERVER_CERTIFICATE_IP_ADDRESSES, TLS_DIR
from offline.engine import Recording, load_stack_file, run_program
from rig.applier import VaultApplier
from rig.deploy_identity import DeployKey, edge_link_resources, edge_on_real_hub, trusting
from rig.hub_edge import (
    NEVER_APPLIED_PASSWORD,
    admin_login,
    cert_sync_workload,
    children,
    edge_secret_id_on,
    k8s_object,
    kubernetes_auth_overrides,
    openbao_audit_stanzas,
    pod_template,
    real_hub_outputs,
)
from rig.kube_api import KubeAPIServer
from rig.openbao import api, bao_binary, localize_server_hcl, loopback_layout, wait_until
from rig.pki import TestCA
from rig.pod_sandbox import Cluster, Image, PodSandbox, http_probe, programs_image, stop, vault_image
from rig.raft_single import RaftSingleNode
from rig.s3 import MotoS3
from rig.tls_vault import Vault, initialise, start_vault
from rig.vault_cluster import (
    POD_PORTS,
    TLS_FILE_NAMES,
    LoopbackVault,
    bootstrap_job,
    localize_job_command,
    stack_server,
)
from rig.vault_pod import config_map_data, vault_server_pod
from tests.real import test_hub_edge_flow as hub_edge_flow

pytestmark = pytest.mark.real

PASSWORD = "pod-sandbox-admin-password"  # the test's value of the vault-admin-credential Secret


def token_source(kube: KubeAPIServer, namespace: str, account: str) -> Any:
    """A projected token of ``account``: what the kubelet asks the API server for (TokenRequest)."""

    def token(audience: str | None, seconds: int) -> str:
        audiences = [audience] if audience else None
        return kube.mint_service_account_token(namespace, account, audiences=audiences, ttl=seconds)

    return token


def api_server(kube: KubeAPIServer) -> tuple[str, int, str]:
    return ("127.0.0.1", kube.port, kube.ca_pem)


def owner_group_mode(box: PodSandbox, volume: str, key: str) -> tuple[int, int, int]:
    """The owner, group and mode the kubelet gave the file ``key`` of the pod's ``volume``."""
    info = (box.volume_dirs[volume] / "..data" / key).stat()
    return info.st_uid, info.st_gid, info.st_mode & 0o7777


# --------------------------------------------------------------------------------------------------
# the Vault server container, with the chart's start command
# --------------------------------------------------------------------------------------------------
def vault_server_sandbox(
    recording: Recording,
    workdir: Path,
    kube: KubeAPIServer,
    *,
    with_audit: bool = False,
    capacities: dict[str, int] | None = None,
    secrets: dict[str, dict[str, str]] | None = None,
) -> tuple[PodSandbox, str, dict[str, str]]:
    """Pod ``vault-0`` of the stack's server StatefulSet (``rig.vault_pod``) in the sandbox, with ``bao``
    as ``vault``. Localised: the ConfigMap's HCL by ``localize_server_hcl`` with the pod's own file
    paths kept (listener and retry_join addresses -> loopback, ``api_addr``/``cluster_addr`` written,
    ``service_registration "kubernetes"`` removed: it PATCHes the pod's labels on the API server) and
    ``VAULT_API_ADDR``/``VAULT_CLUSTER_ADDR`` (the chart's ``$(POD_IP):8200``, ``$(HOSTNAME).vault-internal``)
    to the same loopback addresses. ``with_audit`` appends the stack's audit devices in OpenBao's
    config form (OpenBao takes them only from its config; their file paths are the pod's own, which
    the sandbox has), ``capacities`` sizes its persistent volumes and ``secrets`` adds the stack's
    other Secrets the pod mounts or reads (an edge's ``vault-seal`` and ``hub-vault-ca``). Returns the
    sandbox, the API URL and the env overrides."""
    server = stack_server(recording)
    values = server.values
    hosts = [server.spec.peer_hostname(i) for i in range(server.spec.replicas)]
    layout = loopback_layout(hosts, POD_PORTS)
    ca = TestCA("fedobs pod-sandbox CA")
    leaf = ca.issue("vault-0", server.dns_names, list(dict.fromkeys([*SERVER_CERTIFICATE_IP_ADDRESSES, *layout.ips])))
    data_path = values["server"]["dataStorage"]["mountPath"]
    config = config_map_data(values)["extraconfig-from-values.hcl"]
    localized = localize_server_hcl(
        config,
        node_index=0,
        addresses=layout.addresses,
        ports=layout.ports,
        # the pod's own paths: the server's TLS files and, on an edge, the hub CA of its seal stanza
        tls_files={
            **{f"{TLS_DIR}/{n}": f"{TLS_DIR}/{n}" for n in TLS_FILE_NAMES},
            **({f"{HUB_CA_DIR}/ca.crt": f"{HUB_CA_DIR}/ca.crt"} if "hub-vault-ca" in (secrets or {}) else {}),
        },
        data_dir=data_path,
    )
    if with_audit:
        localized += openbao_audit_stanzas(recording)
    cluster = Cluster(
        server.spec.namespace,
        secrets={
            "vault-server-tls": {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca.cert_pem},
            **(secrets or {}),
        },
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
        capacities=capacities,
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
            # the pod's readiness probe, as the kubelet runs it: not Ready while uninitialised or sealed
            readiness = box.container["readinessProbe"]
            assert http_probe(readiness, url) == (False, 501)
            init = api(url, "POST", "sys/init", body={"secret_shares": 1, "secret_threshold": 1}, ca_file=ca_file)
            assert init.status == 200, init.text
            assert http_probe(readiness, url) == (False, 503)
            unseal = api(url, "POST", "sys/unseal", body={"key": init.body["keys"][0]}, ca_file=ca_file)
            assert unseal.status == 200 and unseal.body["sealed"] is False, unseal.text
            token = init.body["root_token"]
            wait_until(
                lambda: api(url, "GET", "sys/leader", token=token, ca_file=ca_file).body.get("is_self") is True,
                timeout=30,
                what="the node leads",
            )
            assert http_probe(readiness, url) == (True, 200)
            # Raft wrote to the data PVC as the container's user, group-owned by the fsGroup (setgid)
            data = box.volume_dirs["data"]
            owners = {(p.stat().st_uid, p.stat().st_gid) for p in data.rglob("*") if not p.is_symlink()}
            assert owners and owners <= {(100, 1000)}, owners
            # the chart's copy of the config, with the placeholders substituted, is in the /tmp emptyDir
            assert (box.volume_dirs["tmp"] / "storageconfig.hcl").is_file()
        finally:
            stop(proc)
        assert "storageconfig.hcl" in box.container["args"][0]


def test_the_edge_vault_server_container_auto_unseals_through_the_hub(tmp_path: Path) -> None:
    """The edge's Vault pod as planned (chart command, its seal stanza, VAULT_TOKEN from its
    ``vault-seal`` Secret, the hub CA from ``hub-vault-ca``), its seal token created on a real hub by
    the edge's own deploy identity: after init it is unsealed by the hub's transit key, and Ready."""
    key = DeployKey()
    config, secret_keys = load_stack_file("hub")
    hub = run_program("hub", trusting(config, key), secret_keys)
    assert hub.error is None, hub.error
    ca = TestCA("fedobs-test-hub-ca")
    hub_node = start_vault("hub", tmp_path / "hub", ca)
    try:
        hub_vault = initialise("hub", hub_node, kv=False)
        VaultApplier(hub_vault.url, hub_vault.root, ca_file=hub_vault.ca_file).apply(edge_link_resources(hub))
        outputs = real_hub_outputs(hub, address=hub_vault.url, ca_pem=ca.cert_pem)
        edge, _ = edge_on_real_hub(hub, key, outputs, hub_vault.url, hub_vault.ca_file)
        seal_secrets = {
            name: dict(k8s_object(edge, "Secret", name)["stringData"]) for name in ("vault-seal", "hub-vault-ca")
        }
        (tmp_path / "edge").mkdir()
        with KubeAPIServer() as kube:
            box, url, overrides = vault_server_sandbox(edge, tmp_path / "edge", kube, secrets=seal_secrets)
            log = tmp_path / "edge-vault-0.log"
            proc = box.popen(env_overrides=overrides, log=log)
            ca_file = str(tmp_path / "edge" / "ca.crt")
            try:
                wait_until(
                    lambda: proc.poll() is None and api(url, "GET", "sys/seal-status", ca_file=ca_file).status == 200,
                    timeout=30,
                    what="the sandboxed edge server answers",
                    ignore=(OSError,),
                )
                assert proc.poll() is None, log.read_text()
                status = api(url, "GET", "sys/seal-status", ca_file=ca_file).body
                assert status["type"] == "transit", status
                init = api(
                    url, "POST", "sys/init", body={"recovery_shares": 1, "recovery_threshold": 1}, ca_file=ca_file
                )
                assert init.status == 200, init.text
                wait_until(
                    lambda: api(url, "GET", "sys/seal-status", ca_file=ca_file).body.get("sealed") is False,
                    timeout=30,
                    what="the edge to unseal through the hub's transit key",
                )
                wait_until(
                    lambda: http_probe(box.container["readinessProbe"], url) == (True, 200),
                    timeout=30,
                    what="the edge pod to become Ready",
                )
            finally:
                stop(proc)
        decrypts = hub_vault.count(0, "transit/decrypt/edge-eu") + hub_vault.count(0, "transit/encrypt/edge-eu")
        assert decrypts >= 1, "the edge's seal used its key on the hub"
    finally:
        hub_node.stop()


#: The audit volume of the full-disk test: a few dozen requests fill it.
SMALL_AUDIT_VOLUME = 256 * 1024


def test_the_vault_pod_keeps_serving_when_its_audit_volume_is_full(hub: Recording, tmp_path: Path) -> None:
    """Issue 17, "one full disk stops the hub": the hub's Vault pod as planned, with the audit devices
    the stack declares and an audit volume of 256 KiB. Vault completes a request only if one audit
    device logged it; once the volume is full the file device fails (ENOSPC) and every request must
    still succeed, logged by the stdout device into the container's log. (With the file device alone,
    the old stack, each such request was answered 500.)"""
    with KubeAPIServer() as kube:
        box, url, overrides = vault_server_sandbox(
            hub, tmp_path, kube, with_audit=True, capacities={"audit": SMALL_AUDIT_VOLUME}
        )
        with box:
            log = tmp_path / "vault-0.log"
            proc = box.popen(env_overrides=overrides, log=log)
            ca_file = str(tmp_path / "ca.crt")
            try:
                wait_until(
                    lambda: api(url, "GET", "sys/seal-status", ca_file=ca_file).status == 200,
                    timeout=30,
                    what="the sandboxed server answers",
                    ignore=(OSError,),
                )
                init = api(url, "POST", "sys/init", body={"secret_shares": 1, "secret_threshold": 1}, ca_file=ca_file)
                api(url, "POST", "sys/unseal", body={"key": init.body["keys"][0]}, ca_file=ca_file)
                token = init.body["root_token"]
                wait_until(
                    lambda: api(url, "GET", "sys/leader", token=token, ca_file=ca_file).body.get("is_self") is True,
                    timeout=30,
                    what="the node leads",
                )
                audit_log = box.volume_dirs["audit"] / "audit.log"

                def write(key: str) -> None:
                    body = {"data": {f"field{i}": f"value {i} of {key}" for i in range(20)}}
                    resp = api(url, "POST", f"cubbyhole/{key}", token=token, body=body, ca_file=ca_file)
                    assert resp.status in (200, 204), f"{key}: {resp.status} {resp.text}"

                # fill the audit volume with the file device's own entries, until it cannot grow
                for i in range(2000):
                    before = audit_log.stat().st_size
                    write(f"fill-{i}")
                    if audit_log.stat().st_size == before:
                        break
                else:
                    raise AssertionError("the 256 KiB audit volume never filled")
                assert shutil.disk_usage(box.volume_dirs["audit"]).free < 8192
                full_size = audit_log.stat().st_size
                # with the volume full, requests still succeed, and the stdout device audits them
                for i in range(20):
                    write(f"after-full-{i}")
                assert audit_log.stat().st_size == full_size
                entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
                audited = {e["request"]["path"] for e in entries if e.get("type") == "request"}
                assert {f"cubbyhole/after-full-{i}" for i in range(20)} <= audited
                assert "backend failed to log request: backend=file/" in log.read_text()
            finally:
                stop(proc)


# --------------------------------------------------------------------------------------------------
# the bootstrap Job
# --------------------------------------------------------------------------------------------------
def declare_bootstrap_grant(recording: Recording, kube: KubeAPIServer) -> tuple[str, str]:
    """What ``pulumi up`` creates before the Job, in the stand-in as the stack declares it: the Role, the
    RoleBinding named like the Job and the empty init state Secret; then the Job itself (its uid, which
    the Job controller puts on its Pods). ``(job name, job uid)``."""
    job = bootstrap_job(recording)
    namespace, job_name = job["metadata"]["namespace"], job["metadata"]["name"]
    role = k8s_object(recording, "Role", "vault-bootstrap")
    kube.put_role(namespace, role["metadata"]["name"], role["rules"])
    binding = k8s_object(recording, "RoleBinding", job_name)
    kube.put_role_binding(namespace, job_name, binding["roleRef"]["name"], binding["subjects"])
    state = k8s_object(recording, "Secret", vault_component.INIT_STATE_SECRET)
    if kube.get_secret(namespace, vault_component.INIT_STATE_SECRET) is None:
        kube.put_secret(namespace, vault_component.INIT_STATE_SECRET, {}, labels=state["metadata"]["labels"])
    return job_name, kube.create_job(namespace, job_name)


def bootstrap_sandbox(
    recording: Recording, vault: LoopbackVault, kube: KubeAPIServer, workdir: Path, job: tuple[str, str]
) -> PodSandbox:
    """The Job's Pod for the Job ``job`` (name, uid): the labels the Job controller gives it."""
    template = bootstrap_job(recording)["spec"]["template"]
    namespace = bootstrap_job(recording)["metadata"]["namespace"]
    account = template["spec"]["serviceAccountName"]
    policy = k8s_object(recording, "ConfigMap", "vault-admin-policy")["data"]
    cluster = Cluster(
        namespace,
        secrets={
            "vault-server-tls": {"ca.crt": Path(vault.ca_file).read_text()},
            "vault-admin-credential": {"password": PASSWORD, "previous-password": NEVER_APPLIED_PASSWORD},
        },
        config_maps={"vault-admin-policy": policy},
        token=token_source(kube, namespace, account),
        api_server=api_server(kube),
    )
    labels = {vault_component.JOB_NAME_LABEL: job[0], vault_component.JOB_UID_LABEL: job[1]}
    return PodSandbox(template, "bootstrap", programs_image(), cluster, workdir, pod_name="bootstrap", labels=labels)


def bootstrap_command(box: PodSandbox, vault: LoopbackVault) -> list[str]:
    """The Job's command with its ``--peer`` URLs on loopback (pods not started dropped), plus test
    deadlines and a short autopilot stabilisation time. Files and the state Secret are the pod's own."""
    command = box.container["command"]
    return [*command[:3], *localize_job_command(command, vault)]


def may_read_init_state(kube: KubeAPIServer) -> int:
    """The status the bootstrap's ServiceAccount gets for the init state Secret, with a fresh token."""
    token = kube.mint_service_account_token("vault", "vault-bootstrap")
    path = f"/api/v1/namespaces/vault/secrets/{vault_component.INIT_STATE_SECRET}"
    status, _ = kube.handle("GET", path, {"Authorization": f"Bearer {token}"}, b"")
    return status


def test_the_bootstrap_job_runs_in_its_pod_and_its_grant_ends_with_it(
    hub: Recording, loopback_vault: Any, tmp_path: Path
) -> None:
    """The hub's Job, in its pod, against the Kubernetes API stand-in holding exactly the RBAC the stack
    declares: the run reads and writes vault-init, hands its RoleBinding to its Job, and once the Job is
    deleted (``ttlSecondsAfterFinished: 0``) the garbage collector takes the binding and the account can
    read nothing. ``pulumi up --refresh`` afterwards (the Job and binding gone, so created again) grants
    again only for the new run, which ends the same way; that run also removes an admin password an
    earlier version left in the record (the upgrade, through the production store)."""
    server = stack_server(hub)
    vault = loopback_vault(server.spec, pod_hcl=server.pod_hcl, dns_names=server.dns_names)
    with KubeAPIServer() as kube:
        kube.create_service_account("vault", "vault-bootstrap")
        assert may_read_init_state(kube) == 403  # nothing before the stack declares the grant
        job = declare_bootstrap_grant(hub, kube)
        box = bootstrap_sandbox(hub, vault, kube, tmp_path / "first", job)
        result = box.run(bootstrap_command(box, vault), timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert PASSWORD not in result.stdout + result.stderr
        # root-owned, group fsGroup, 0440: readable by the program only through the group
        assert owner_group_mode(box, "admin", "password") == (0, PROGRAMS_UID, 0o440)
        stored = kube.secret_data("vault", "vault-init")
        assert stored is not None and PASSWORD.encode() not in stored["init.json"]
        record = json.loads(stored["init.json"])
        binding = kube.get_role_binding("vault", job[0])
        assert binding is not None
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job[0], "uid": job[1]}
        assert binding["metadata"]["ownerReferences"] == [owner]
        kube.delete_job("vault", job[0])  # the TTL-after-finished controller, at once
        assert kube.get_role_binding("vault", job[0]) is None and may_read_init_state(kube) == 403

        # pulumi up --refresh: both gone, so both created again; a record from an earlier version
        legacy = record | {"admin_password_applied": PASSWORD}
        kube.put_secret("vault", "vault-init", {"init.json": json.dumps(legacy)})
        again = declare_bootstrap_grant(hub, kube)
        assert again[0] == job[0] and again[1] != job[1]
        box = bootstrap_sandbox(hub, vault, kube, tmp_path / "refresh", again)
        result = box.run(bootstrap_command(box, vault), timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "init is not called" in result.stdout and "removed the admin password" in result.stdout
        stored = kube.secret_data("vault", "vault-init")
        assert stored is not None and json.loads(stored["init.json"]) == record
        assert kube.get_role_binding("vault", job[0])["metadata"]["ownerReferences"][0]["uid"] == again[1]  # type: ignore[index]
        kube.delete_job("vault", again[0])
        assert kube.get_role_binding("vault", job[0]) is None and may_read_init_state(kube) == 403
    login = admin_login(vault.urls[0], vault.ca_file, PASSWORD)
    assert login.status == 200, login.text


def test_a_bootstrap_pod_that_cannot_hand_over_its_grant_stops_before_vault(
    hub: Recording, loopback_vault: Any, tmp_path: Path
) -> None:
    """Without patch and delete on its binding (an older Role), the run stops first, before it talks to
    Vault: a grant that would outlive the Job is a failure, visible in ``pulumi up``."""
    server = stack_server(hub)
    vault = loopback_vault(server.spec, pod_hcl=server.pod_hcl, dns_names=server.dns_names)
    with KubeAPIServer() as kube:
        kube.create_service_account("vault", "vault-bootstrap")
        job = declare_bootstrap_grant(hub, kube)
        role = k8s_object(hub, "Role", "vault-bootstrap")
        kube.put_role("vault", "vault-bootstrap", role["rules"][:1])  # the secret rule only
        box = bootstrap_sandbox(hub, vault, kube, tmp_path, job)
        result = box.run(bootstrap_command(box, vault), timeout=120)
        assert result.returncode == 1, result.stdout + result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert f"handing RoleBinding vault/{job[0]} to Job {job[0]} answered 403" in line, line
        assert kube.secret_data("vault", "vault-init") == {}
    assert vault.cluster.nodes[0].seal_status()["initialized"] is False


# --------------------------------------------------------------------------------------------------
# both cert-sync workloads (the hub's CronJob, then the edge's follower Deployment), on the two real
# Vaults of tests/real/test_hub_edge_flow.py
# --------------------------------------------------------------------------------------------------
flow = hub_edge_flow.flow  # the same fixture: both stacks' Vault configurations applied to real servers


def cert_sync_sandbox(
    recording: Recording, vault: Vault, kube: KubeAPIServer, workdir: Path
) -> tuple[PodSandbox, list[str]]:
    """The stack's cert-sync pod; its command with one pass instead of the CronJob's three (20 s apart),
    or one poll of the edge's follower instead of polling until stopped (its secret_id Secret on the
    edge's Kubernetes API, readable and writable by its ServiceAccount as the edge's Role says)."""
    kind = cert_sync_workload(recording)
    workload = k8s_object(recording, kind, "cert-sync")
    template = pod_template(recording, kind, "cert-sync")
    namespace = workload["metadata"]["namespace"]
    secrets: dict[str, dict[str, str]] = {"vault-ca": {"ca.crt": Path(vault.ca_file).read_text()}}
    if any(v["name"] == "hub" for v in template["spec"]["volumes"]):
        secrets["hub-credential"] = dict(k8s_object(recording, "Secret", "hub-credential")["stringData"])
        edge_secret_id_on(recording, kube)
    cluster = Cluster(
        namespace,
        secrets=secrets,
        token=token_source(kube, namespace, template["spec"]["serviceAccountName"]),
        api_server=api_server(kube),
    )
    box = PodSandbox(template, "cert-sync", programs_image(), cluster, workdir, pod_name=f"cert-sync-{recording.stack}")
    command = list(box.container["command"])
    if kind == "CronJob":
        command[command.index("--passes") + 1] = "1"
    else:
        command += ["--polls", "1"]
    return box, command


def test_both_cert_sync_workloads_run_in_their_pods(flow: hub_edge_flow.Flow, tmp_path: Path) -> None:
    # localised: where each Vault is (the spec's in-cluster Service names), the hub's address for the
    # edge, and the hub's Kubernetes API (https://kubernetes.default.svc) -- nothing else
    hub_box, hub_command = cert_sync_sandbox(flow.hub, flow.hub_vault, flow.hub_kube, tmp_path / "hub")
    hub_run = hub_box.run(
        hub_command, env_overrides={"VAULT_ADDR": flow.hub_vault.url, "CERT_SYNC_KUBE_API": flow.hub_kube.url}
    )
    assert hub_run.returncode == 0, hub_run.stdout + hub_run.stderr
    edge_box, edge_command = cert_sync_sandbox(flow.edge, flow.edge_vault, flow.edge_kube, tmp_path / "edge")
    edge_run = edge_box.run(
        edge_command,
        env_overrides={
            "VAULT_ADDR": flow.edge_vault.url,
            "CERT_SYNC_HUB_ADDR": flow.hub_vault.url,
            "CERT_SYNC_KUBE_API": flow.edge_kube.url,
        },
    )
    assert edge_run.returncode == 0, edge_run.stdout + edge_run.stderr
    delivered, issued = flow.edge_vault.kv("otel/otel-client-tls"), flow.pki.client(hub_edge_flow.EDGE).secret_data
    assert delivered is not None and [delivered[k] for k in ("tls.crt", "tls.key")] == [
        issued["tls.crt"],
        issued["tls.key"],
    ]
    # and the server trust bundle as its CA (docs/secret-flow.md, "Trust bundles")
    assert delivered["ca.crt"] == flow.hub_vault.kv("otel/server-ca")["ca.crt"]  # type: ignore[index]
    # the credential files are root-owned, group fsGroup, 0440: readable by the program only through the group
    assert owner_group_mode(edge_box, "hub", "role-id") == (0, PROGRAMS_UID, 0o440)


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


# --------------------------------------------------------------------------------------------------
# the OpenTelemetry collectors (hub gateway, edge forwarder): their image cannot run here
# --------------------------------------------------------------------------------------------------
#: Stands in for ``otel/opentelemetry-collector-contrib`` (distroless, its ``otelcol-contrib`` binary the
#: entrypoint; neither can be pulled or run here): the host's ``cat``, run as the collector's user. What
#: the test proves is the Pod's part, which is the plan's own: its user, groups and fsGroup and its volumes
#: with their modes, i.e. that the container can read every file its configuration makes it load.
COLLECTOR_STAND_IN = Image(
    "otel/opentelemetry-collector-contrib", COLLECTOR_UID, COLLECTOR_UID, "/", {"PATH": "/usr/bin:/bin"}
)


def files_named(config: Any) -> list[str]:
    """Every ``*_file`` value of a collector configuration (the TLS certificates, keys and CAs it loads)."""
    if isinstance(config, dict):
        return [f for key, value in config.items() for f in ([value] if key.endswith("_file") else files_named(value))]
    if isinstance(config, list):
        return [f for item in config for f in files_named(item)]
    return []


@pytest.mark.parametrize(("stack", "deployment"), [("hub", "otel-gateway"), ("edge", "otel-collector")])
def test_the_collectors_read_the_secret_files_their_config_names(
    stack: str, deployment: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    recording: Recording = request.getfixturevalue(stack)
    template = k8s_object(recording, "Deployment", deployment)["spec"]["template"]
    container = template["spec"]["containers"][0]
    config_map = k8s_object(recording, "ConfigMap", f"{deployment}-config")
    config_text = config_map["data"]["config.yaml"]
    files = list(dict.fromkeys(files_named(yaml.safe_load(config_text))))
    assert files, "the collector's configuration names no file"
    # the test's contents of the VSO-synced Secrets: one value per file the configuration names
    volume_at = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    secret_of = {v["name"]: v["secret"]["secretName"] for v in template["spec"]["volumes"] if "secret" in v}
    secrets: dict[str, dict[str, str]] = {}
    for path in files:
        directory, key = path.rsplit("/", 1)
        assert volume_at.get(directory) in secret_of, f"{path}: no Secret volume is mounted at {directory}"
        secrets.setdefault(secret_of[volume_at[directory]], {})[key] = f"test contents of {path}\n"
    cluster = Cluster(
        config_map["metadata"]["namespace"],
        secrets=secrets,
        config_maps={config_map["metadata"]["name"]: config_map["data"]},
    )
    box = PodSandbox(template, container["name"], COLLECTOR_STAND_IN, cluster, tmp_path, pod_name=f"{deployment}-0")
    config_file = container["args"][0].removeprefix("--config=")
    result = box.run(["cat", config_file, *files])
    assert result.returncode == 0, result.stderr
    assert result.stdout == config_text + "".join(f"test contents of {path}\n" for path in files)
    # each Secret file is root-owned, group fsGroup, 0440: readable by the collector only through the group
    for path in files:
        directory, key = path.rsplit("/", 1)
        assert owner_group_mode(box, volume_at[directory], key) == (0, COLLECTOR_UID, 0o440), path
