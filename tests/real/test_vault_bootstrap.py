"""The bootstrap Job (programs/vault_bootstrap) against a real 3-node OpenBao Raft cluster with TLS.

The cluster runs exactly the HCL ``components.vault_server_config.render_server_hcl`` renders for the
pods (localised to loopback by ``localize_server_hcl``), with a server certificate for exactly
``server_certificate_dns_names(spec)`` plus the loopback IPs.

The module shares one cluster: the tests run in file order and each builds on the state the
previous ones left (first bootstrap -> checks -> re-run -> leader loss -> recovery). The first
bootstrap runs in-process with a recording HTTP client (the only way a test can see the root token,
which the program never stores); the later runs go through the real command line.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

import components.vault as vault_component
from components.vault_names import ADMIN_AUTH_MOUNT, ADMIN_POLICY
from components.vault_server_config import (
    HUB_CA_DIR,
    ShamirSeal,
    TransitSealSpec,
    VaultServerSpec,
    server_certificate_dns_names,
)
from offline.engine import Recording, plan_operator_pgp_keys
from programs.errors import UsageError
from programs.vault_bootstrap.__main__ import build_parser, config_from_args
from programs.vault_bootstrap.bootstrap import (
    EXIT_ADMIN_LOGIN,
    EXIT_FAILURE,
    EXIT_OPERATOR_ACTION,
    EXIT_USAGE,
    INIT_TIMEOUT_SECONDS,
    BootstrapError,
    Config,
    FileStateStore,
    JobGrant,
    KubernetesSecretStateStore,
    run,
)
from programs.vault_http import HttpReply, VaultHttp
from rig.applier import VaultApplier
from rig.hub_edge import NEVER_APPLIED_PASSWORD, k8s_object, openbao_pod_hcl, shipped_admin_policy
from rig.kube_api import KubeAPIServer
from rig.local_hub import AWS_TYPES, hub_against
from rig.openbao import ApiResponse, BaoNode, api, dev_server, free_port, wait_until
from rig.pki import TestCA
from rig.pod_sandbox import http_probe
from rig.programs_env import programs_python
from rig.s3 import MotoS3
from rig.vault_cluster import (
    LoopbackVault,
    bootstrap_job,
    build_loopback_vault,
    job_command,
    localize_job_command,
    make_spec,
    running,
    stack_server,
)
from rig.vault_pod import readiness_probe
from tests.support.local_databases import local_databases

REPO = Path(__file__).resolve().parents[2]
#: The hub's admin policy, rendered from its shipped mounts, as its ConfigMap carries it (checked below).
ADMIN_POLICY_HCL = shipped_admin_policy()
PASSWORD = "correct horse battery staple 42"
TIMEOUT = 45.0


# ------------------------------------------------------------------------------------------------
# a recording client: sees every request of an in-process run, and the root token of sys/init
# ------------------------------------------------------------------------------------------------
@dataclass
class Recorder:
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    root_tokens: list[str] = field(default_factory=list)
    timeouts: dict[str, float | None] = field(default_factory=dict)

    def paths(self, method: str, path: str) -> list[str]:
        return [url for m, p, url in self.calls if m == method and p == path]

    def factory(self) -> Any:
        recorder = self

        class RecordingClient(VaultHttp):
            def raw(self, method: str, path: str, **kw: Any) -> HttpReply:
                resp = super().raw(method, path, **kw)
                recorder.calls.append((method, path, self.url))
                recorder.timeouts[f"{method} {path}"] = kw.get("timeout")
                if path == "sys/init" and method == "PUT" and resp.status == 200:
                    recorder.root_tokens.append(resp.body["root_token"])
                return resp

        return RecordingClient


@dataclass
class Bootstrapped:
    vault: LoopbackVault
    workdir: Path
    state_file: Path
    config: Config
    first_run: Recorder
    first_run_seconds: float
    command: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> list[BaoNode]:
        return self.vault.cluster.nodes

    def cli_args(self, **overrides: str) -> list[str]:
        """The stack's Job command (localised), with flag values replaced by ``overrides``."""
        args = list(self.command)
        for flag, value in overrides.items():
            if flag in args:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        return args

    def cli(self, *extra: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [programs_python(), "-m", "programs.vault_bootstrap", *self.cli_args(**overrides), *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=2 * TIMEOUT + 30,
            env={k: v for k, v in os.environ.items() if not k.startswith("VAULT_BOOTSTRAP_")},
        )

    def admin_token(self) -> str:
        resp = api(
            self.vault.urls[0],
            "POST",
            "auth/userpass-pulumi/login/pulumi",
            body={"password": PASSWORD},
            ca_file=self.vault.ca_file,
        )
        assert resp.status == 200, resp.text
        return str(resp.body["auth"]["client_token"])

    def secrets_in(self, text: str) -> list[str]:
        """Which init secrets (keys, root token) occur in ``text``."""
        result = json.loads(self.state_file.read_text())["init_response"]
        secrets = [*result["keys"], *result["keys_base64"], *self.first_run.root_tokens, PASSWORD]
        return [s for s in secrets if s in text]


@pytest.fixture(scope="module")
def boot(tmp_path_factory: pytest.TempPathFactory, hub: Recording) -> Iterator[Bootstrapped]:
    """The hub stack's own Vault: its rendered HCL, its certificate's SANs, its bootstrap Job command."""
    base = tmp_path_factory.mktemp("bootstrap")
    server = stack_server(hub)
    # the pods' HCL + the hub's declared audit device in OpenBao's config form
    vault = build_loopback_vault(
        base / "cluster", server.spec, pod_hcl=openbao_pod_hcl(hub), dns_names=server.dns_names
    )
    workdir = base / "job"
    workdir.mkdir()
    (workdir / "password").write_text(PASSWORD + "\n")
    (workdir / "previous-password").write_text(NEVER_APPLIED_PASSWORD + "\n")
    policy_map = next(
        o
        for o in hub.kubernetes_objects()
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "vault-admin-policy"
    )
    assert policy_map["data"]["admin.hcl"] == ADMIN_POLICY_HCL
    (workdir / "admin-policy.hcl").write_text(policy_map["data"]["admin.hcl"])
    state_file = workdir / "vault-init.json"
    command = localize_job_command(job_command(hub), vault, workdir, state_file, timeout=TIMEOUT)
    with running(vault.cluster):
        config, _ = config_from_args(build_parser().parse_args(command))
        recorder = Recorder()
        started = time.monotonic()
        run(config, FileStateStore(state_file), client_factory=recorder.factory(), log=lambda m: None)
        yield Bootstrapped(vault, workdir, state_file, config, recorder, time.monotonic() - started, command)


def raft_servers(boot: Bootstrapped, token: str) -> list[dict[str, Any]]:
    resp = api(boot.vault.urls[0], "GET", "sys/storage/raft/configuration", token=token, ca_file=boot.vault.ca_file)
    assert resp.status == 200, resp.text
    return list(resp.data["config"]["servers"])


def leaders(nodes: list[BaoNode]) -> list[BaoNode]:
    found = []
    for node in nodes:
        if node.running:
            with_leader = node.api("GET", "sys/leader", timeout=2)
            if with_leader.status == 200 and with_leader.body.get("is_self"):
                found.append(node)
    return found


def all_unsealed(nodes: list[BaoNode]) -> bool:
    return all(n.seal_status().get("initialized") and not n.seal_status().get("sealed") for n in nodes)


# ------------------------------------------------------------------------------------------------
# first run
# ------------------------------------------------------------------------------------------------
@pytest.mark.real
def test_first_run_initialises_once_on_peer0_and_unseals_all(boot: Bootstrapped) -> None:
    assert boot.first_run.paths("PUT", "sys/init") == [boot.vault.urls[0]]
    # its answer is the only copy of the keys: it may take longer than any other request
    assert boot.first_run.timeouts["PUT sys/init"] == min(INIT_TIMEOUT_SECONDS, boot.config.timeout)
    assert boot.first_run.timeouts["PUT sys/init"] > boot.config.request_timeout
    assert all_unsealed(boot.nodes)
    record = json.loads(boot.state_file.read_text())
    assert stat.S_IMODE(boot.state_file.stat().st_mode) == 0o600
    assert record["seal"] == "shamir" and record["pgp_encrypted"] is False
    # the hub's shipped config: 5 shares, threshold 3
    assert len(record["init_response"]["keys"]) == 5 and (record["shares"], record["threshold"]) == (5, 3)
    assert "root_token" not in record["init_response"]
    assert boot.first_run.root_tokens and boot.first_run.root_tokens[0] not in boot.state_file.read_text()
    # the init result and nothing else: no admin password beside the keys
    assert set(record) == {"format", "seal", "shares", "threshold", "pgp_encrypted", "initialized_at", "init_response"}
    assert PASSWORD not in boot.state_file.read_text()
    # unseal keys went to each follower only after it reported initialized (retry_join done)
    unseal_targets = {url for url in boot.first_run.paths("PUT", "sys/unseal")}
    assert unseal_targets == set(boot.vault.urls)
    assert boot.first_run_seconds < TIMEOUT


@pytest.mark.real
def test_three_voters_and_exactly_one_leader(boot: Bootstrapped) -> None:
    servers = raft_servers(boot, boot.admin_token())
    assert sorted(s["node_id"] for s in servers) == ["vault-0", "vault-1", "vault-2"]
    assert all(s["voter"] for s in servers), servers
    assert sum(1 for s in servers if s["leader"]) == 1
    assert len(leaders(boot.nodes)) == 1


@pytest.mark.real
def test_root_token_is_revoked(boot: Bootstrapped) -> None:
    assert boot.first_run.paths("POST", "auth/token/revoke-self")
    (root,) = boot.first_run.root_tokens
    resp = api(boot.vault.urls[0], "GET", "auth/token/lookup-self", token=root, ca_file=boot.vault.ca_file)
    assert resp.status == 403, resp.text


@pytest.mark.real
def test_admin_userpass_login_has_the_admin_policy(boot: Bootstrapped) -> None:
    token = boot.admin_token()
    me = api(boot.vault.urls[1], "GET", "auth/token/lookup-self", token=token, ca_file=boot.vault.ca_file)
    assert me.status == 200, me.text
    assert ADMIN_POLICY in me.data["policies"] and "root" not in me.data["policies"]
    assert 0 < me.data["ttl"] <= 20 * 60  # the short default TTL
    for path, allowed in (
        ("sys/mounts/x", "create"),
        ("sys/generate-root/attempt", None),
        ("sys/rekey/init", None),
        ("sys/raw/x", None),
    ):
        caps = api(
            boot.vault.urls[0],
            "POST",
            "sys/capabilities-self",
            token=token,
            body={"paths": [path]},
            ca_file=boot.vault.ca_file,
        )
        if allowed:
            assert allowed in caps.body["capabilities"], (path, caps.body)
        else:
            assert caps.body["capabilities"] == ["deny"], (path, caps.body)
    policy = api(boot.vault.urls[0], "GET", f"sys/policies/acl/{ADMIN_POLICY}", token=token, ca_file=boot.vault.ca_file)
    assert policy.data["policy"] == ADMIN_POLICY_HCL


# ------------------------------------------------------------------------------------------------
# re-runs
# ------------------------------------------------------------------------------------------------
def observable_state(boot: Bootstrapped) -> dict[str, Any]:
    token = boot.admin_token()
    url, ca = boot.vault.urls[0], boot.vault.ca_file

    def get(path: str) -> Any:
        resp = api(url, "GET", path, token=token, ca_file=ca)
        assert resp.status == 200, (path, resp.text)
        return resp.data

    auth = {k: (v["type"], v["accessor"]) for k, v in get("sys/auth").items()}
    return {
        "store": boot.state_file.read_bytes(),
        "auth": auth,
        "policy": get(f"sys/policies/acl/{ADMIN_POLICY}")["policy"],
        "policies": sorted(get("sys/policies/acl?list=true")["keys"]),
        "user": get("auth/userpass-pulumi/users/pulumi"),
        "autopilot": get("sys/storage/raft/autopilot/configuration"),
        "servers": sorted(
            (s["node_id"], s["voter"]) for s in get("sys/storage/raft/configuration")["config"]["servers"]
        ),
    }


@pytest.mark.real
def test_rerun_changes_nothing_and_never_calls_init(boot: Bootstrapped) -> None:
    before = observable_state(boot)
    recorder = Recorder()
    run(boot.config, FileStateStore(boot.state_file), client_factory=recorder.factory(), log=lambda m: None)
    assert not recorder.paths("PUT", "sys/init")
    assert not [c for c in recorder.calls if c[0] in ("PUT", "POST") and c[1].startswith(("sys/auth/", "sys/policies"))]
    result = boot.cli()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "init is not called" in result.stdout
    assert boot.secrets_in(result.stdout + result.stderr) == []
    assert observable_state(boot) == before


@pytest.mark.real
def test_rerun_with_a_wrong_admin_password_exits_4_pointing_at_generate_root(boot: Bootstrapped) -> None:
    wrong = boot.workdir / "wrong-password"
    wrong.write_text("not the password\n")
    before = boot.state_file.read_bytes()
    # the stack's Job rotates to a new password file; without rotation a wrong one is refused
    result = boot.cli(**{"--admin-password-file": str(wrong), "--rotate-admin-password": "false"})
    assert result.returncode == EXIT_ADMIN_LOGIN, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "generate-root" in lines[0], result.stderr
    assert boot.state_file.read_bytes() == before


@pytest.mark.real
def test_unreachable_peer_fails_with_one_line_naming_it(boot: Bootstrapped) -> None:
    dead = f"https://127.0.0.1:{free_port()}"
    result = boot.cli("--peer", dead, **{"--timeout": "1.5"})
    assert result.returncode == EXIT_FAILURE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and dead in lines[0] and "unreachable" in lines[0], result.stderr


def kv_read(node: BaoNode, path: str, token: str) -> ApiResponse | None:
    resp = node.api("GET", path, token=token)
    return resp if resp.status == 200 else None


# ------------------------------------------------------------------------------------------------
# leader loss
# ------------------------------------------------------------------------------------------------
@pytest.mark.real
def test_leader_sigkill_new_leader_serves_writes_and_rerun_unseals_the_restarted_node(
    boot: Bootstrapped,
) -> None:
    token = boot.admin_token()
    ca = boot.vault.ca_file
    enable = api(boot.vault.urls[0], "POST", "sys/mounts/kv", token=token, body={"type": "kv-v2"}, ca_file=ca)
    assert enable.status in (200, 204), enable.text
    (old,) = leaders(boot.nodes)
    state_before = boot.state_file.read_bytes()

    old.kill()
    killed_at = time.monotonic()

    def write_on_new_leader() -> BaoNode | None:
        found = leaders([n for n in boot.nodes if n is not old])
        if not found:
            return None
        resp = found[0].api("POST", "kv/data/failover", token=token, body={"data": {"v": "after"}}, timeout=2)
        return found[0] if resp.status == 200 else None

    new = wait_until(write_on_new_leader, 20, 0.1, "a new leader to serve a KV write", ignore=(OSError,))
    failover_seconds = time.monotonic() - killed_at
    assert new is not old and failover_seconds < 20

    old.start()
    assert old.seal_status()["sealed"] is True  # Shamir: a restarted node comes back sealed
    result = boot.cli()
    assert result.returncode == 0, result.stderr
    assert "init is not called" in result.stdout and f"unsealed {old.url}" in result.stdout
    assert boot.state_file.read_bytes() == state_before
    assert all_unsealed(boot.nodes)
    servers = raft_servers(boot, token)
    assert len(servers) == 3 and all(s["voter"] for s in servers)
    # the rejoined node has the write made while it was dead (it serves reads as a standby)
    read = wait_until(
        lambda: kv_read(old, "kv/data/failover", token),
        10,
        0.2,
        "the restarted node to serve the KV value written during its absence",
        ignore=(OSError,),
    )
    assert read.data["data"] == {"v": "after"}
    # leave the cluster as bootstrap made it: the stack declares its own `kv` mount later
    gone = api(new.url, "DELETE", "sys/mounts/kv", token=token, ca_file=ca)
    assert gone.status == 204, gone.text


@pytest.mark.real
def test_the_readiness_probe_passes_standbys_and_fails_a_sealed_pod_which_bootstrap_still_reaches(
    boot: Bootstrapped, hub: Recording
) -> None:
    """The hub's own readiness probe (chart values -> the StatefulSet's probe, run as the kubelet runs
    it): an unsealed standby is Ready, so the PodDisruptionBudget counts it; a restarted (Shamir:
    sealed) pod is not, so a drain cannot take a second pod while it is sealed. The bootstrap Job
    reaches the sealed pod anyway: its peers are per-pod addresses (``vault-N.vault-internal`` in the
    cluster, a headless Service that publishes not-ready addresses), not a Service of Ready pods."""
    probe = readiness_probe(stack_server(hub).values)
    (active,) = leaders(boot.nodes)
    assert [http_probe(probe, n.url) for n in boot.nodes] == [(True, 200)] * 3
    assert all(n.api("GET", "sys/health").body["standby"] for n in boot.nodes if n is not active)
    restarted = next(n for n in boot.nodes if n is not active)
    restarted.kill()
    restarted.start()
    assert restarted.seal_status()["sealed"] is True
    assert http_probe(probe, restarted.url) == (False, 503)
    assert all(http_probe(probe, n.url) == (True, 200) for n in boot.nodes if n is not restarted)
    command = job_command(hub)
    peers = [command[i + 1] for i, part in enumerate(command) if part == "--peer"]
    assert peers == [f"https://vault-{i}.vault-internal:8200" for i in range(3)]  # the headless Service's names
    result = boot.cli()
    assert result.returncode == 0, result.stderr
    assert f"unsealed {restarted.url}" in result.stdout
    wait_until(lambda: http_probe(probe, restarted.url)[0], 20, 0.2, "the unsealed standby to be Ready")
    assert restarted.api("GET", "sys/health").body["standby"] is True
    assert all_unsealed(boot.nodes)


@pytest.mark.real
def test_the_admin_credential_applies_everything_the_hub_declares(boot: Bootstrapped, hub: Recording) -> None:
    """The admin policy is enough for Pulumi's own declarations: apply every vault resource of the hub."""
    (leader,) = leaders(boot.nodes)  # OpenBao standbys answer writes with "readonly storage"
    url, ca = leader.url, boot.vault.ca_file
    with KubeAPIServer() as kube, MotoS3() as s3, local_databases() as (pg, mysql):
        declared = hub_against(pg, mysql)  # the hub's databases, here on loopback
        # Inside the cluster Vault reviews tokens with its own ServiceAccount (system:auth-delegator);
        # here that is a token of the same account, given explicitly.
        kube.allow_token_reviews("system:serviceaccount:vault:vault")
        applier = VaultApplier(
            url,
            boot.admin_token(),
            ca_file=ca,
            not_in_openbao=AWS_TYPES,
            in_cluster_overrides={
                "vault:kubernetes/authBackendConfig:AuthBackendConfig": {
                    "kubernetesHost": kube.url,
                    "kubernetesCaCert": kube.ca_pem,
                    "disableLocalCaJwt": True,
                    "tokenReviewerJwt": kube.mint_service_account_token("vault", "vault"),
                }
            },
        )
        applied = applier.apply(declared.resources)
        token = boot.admin_token()
        keys = api(url, "LIST", "transit/keys", token=token, ca_file=ca)
        assert sorted(keys.data["keys"]) == ["edge-ap", "edge-eu"]
        role = api(url, "GET", "auth/kubernetes/role/raft-snapshot", token=token, ca_file=ca).data
        assert role["bound_service_account_names"] == ["vault-snapshot"]
        assert role["bound_service_account_namespaces"] == ["vault"]
        autopilot = api(url, "GET", "sys/storage/raft/autopilot/configuration", token=token, ca_file=ca).data
        assert autopilot["cleanup_dead_servers"] is True and autopilot["min_quorum"] == 3
        assert applied.tokens == {}, "the hub mints no edge's token: each edge's deploy identity does"
        deploy_roles = api(url, "LIST", "auth/jwt-edges/role", token=token, ca_file=ca)
        assert sorted(deploy_roles.data["keys"]) == ["edge-deploy-edge-ap", "edge-deploy-edge-eu"]

        # The hub's snapshot CronJob, as its pod runs it, against this cluster with the declared role.
        cronjob = next(
            o
            for o in hub.kubernetes_objects()
            if o["kind"] == "CronJob" and o["metadata"]["name"] == "vault-raft-snapshot"
        )
        container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        pod_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        jwt_file = boot.workdir / "snapshot-token"
        jwt_file.write_text(kube.mint_service_account_token("vault", "vault-snapshot", audiences=["vault"]))
        (boot.workdir / "scratch").mkdir(exist_ok=True)
        bucket = s3.create_bucket(pod_env["SNAPSHOT_S3_BUCKET"])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VAULT_", "SNAPSHOT_", "BAO_"))}
        env |= (
            pod_env
            | s3.env()
            | {
                # what differs from the pod: where Vault, its CA, the token, scratch space and S3 are
                "VAULT_ADDR": url,
                "VAULT_CACERT": ca,
                "SNAPSHOT_JWT_FILE": str(jwt_file),
                "SNAPSHOT_TMP_DIR": str(boot.workdir / "scratch"),
                "SNAPSHOT_S3_ENDPOINT": s3.endpoint_url,
                "AWS_CONFIG_FILE": str(boot.workdir / "none"),
                "AWS_SHARED_CREDENTIALS_FILE": str(boot.workdir / "none"),
            }
        )
        result = subprocess.run(
            [programs_python(), *container["command"][1:]],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        keys_in_bucket = s3.keys(bucket, f"vault-raft-snapshots/{pod_env['SNAPSHOT_CLUSTER_NAME']}/")
        assert len(keys_in_bucket) == 1 and keys_in_bucket[0].endswith(".snap")
        # the role's token can take snapshots and nothing else
        login = api(
            url,
            "POST",
            "auth/kubernetes/login",
            ca_file=ca,
            body={"role": "raft-snapshot", "jwt": jwt_file.read_text()},
        )
        assert login.status == 200, login.text
        snapshot_token = login.body["auth"]["client_token"]
        caps = api(
            url,
            "POST",
            "sys/capabilities-self",
            token=snapshot_token,
            ca_file=ca,
            body={
                "paths": [
                    "sys/storage/raft/snapshot",
                    "sys/storage/raft/snapshot-force",
                    "transit/keys",
                    "sys/policies/acl/fedobs-admin",
                ]
            },
        )
        assert caps.body["sys/storage/raft/snapshot"] == ["read"]
        for other in ("sys/storage/raft/snapshot-force", "transit/keys", "sys/policies/acl/fedobs-admin"):
            assert caps.body[other] == ["deny"], (other, caps.body)


# ------------------------------------------------------------------------------------------------
# TLS: leader_tls_servername must be in the leader's certificate
# ------------------------------------------------------------------------------------------------
@pytest.mark.real
def test_join_fails_when_leader_cert_lacks_the_leader_tls_servername(tmp_path: Path) -> None:
    spec = make_spec(3)
    servername = spec.peer_hostname(0)  # what the rendered retry_join verifies for vault-0
    vault = build_loopback_vault(
        tmp_path,
        spec,
        nodes=[0, 1],
        dns_names_for=lambda i: [n for n in server_certificate_dns_names(spec) if i != 0 or n != servername],
    )
    assert f'leader_tls_servername = "{servername}"' in vault.localized[1]
    with running(vault.cluster):
        leader, joiner = vault.cluster.nodes
        init = leader.api("PUT", "sys/init", body={"secret_shares": 1, "secret_threshold": 1})
        assert init.status == 200, init.text
        leader.api("PUT", "sys/unseal", body={"key": init.body["keys"][0]})
        wait_until(lambda: not leader.seal_status()["sealed"], 10, 0.1, "the leader to unseal")
        needle = "x509: certificate is valid for"
        wait_until(
            lambda: needle in joiner.log_text() and servername in joiner.log_text(),
            10,
            0.2,
            "the joiner to log the x509 name mismatch",
        )
        status = joiner.seal_status()
        assert status["initialized"] is False, status
        line = next(x for x in joiner.log_text().splitlines() if needle in x)
        assert f"not {servername}" in line


# ------------------------------------------------------------------------------------------------
# small single-node clusters for the other seal/key paths
# ------------------------------------------------------------------------------------------------
def job_files(tmp: Path) -> dict[str, str]:
    (tmp / "password").write_text(PASSWORD + "\n")
    (tmp / "admin-policy.hcl").write_text(ADMIN_POLICY_HCL)
    return {
        "--password-file": str(tmp / "password"),
        "--admin-policy-file": str(tmp / "admin-policy.hcl"),
        "--admin-policy-name": ADMIN_POLICY,
        "--state": f"file:{tmp / 'vault-init.json'}",
        "--timeout": "20",
        "--poll-interval": "0.2",
        "--key-shares": "3",
        "--key-threshold": "2",
    }


def cli(vault: LoopbackVault, opts: Mapping[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    args = [a for url in vault.urls for a in ("--peer", url)] + ["--ca-file", vault.ca_file]
    for key, value in opts.items():
        args += [key, value]
    return subprocess.run(
        [programs_python(), "-m", "programs.vault_bootstrap", *args, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("VAULT_BOOTSTRAP_")},
    )


def admin_login(vault: LoopbackVault) -> ApiResponse:
    return api(
        vault.urls[0],
        "POST",
        "auth/userpass-pulumi/login/pulumi",
        body={"password": PASSWORD},
        ca_file=vault.ca_file,
    )


@pytest.mark.real
def test_transit_auto_unseal_stores_recovery_keys_and_needs_no_unseal(loopback_vault: Any, tmp_path: Path) -> None:
    with dev_server() as hub:
        assert hub.api("POST", "sys/mounts/transit", {"type": "transit"}).status == 204
        assert hub.api("POST", "transit/keys/edge-a", {}).status in (200, 204)
        policy = (
            'path "transit/encrypt/edge-a" { capabilities = ["update"] }\n'
            'path "transit/decrypt/edge-a" { capabilities = ["update"] }\n'
        )
        assert hub.api("PUT", "sys/policies/acl/edge-a", {"policy": policy}).status == 204
        orphan = hub.api("POST", "auth/token/create-orphan", {"policies": ["edge-a"], "period": "1h"})
        edge_token = orphan.body["auth"]["client_token"]
        spec = VaultServerSpec(
            cluster_name="edge-a",
            external_hostname="vault.edge-a.test",
            replicas=1,
            seal=TransitSealSpec(address=hub.url, key_name="edge-a", tls_server_name="vault.hub.test"),
        )
        hub_ca = tmp_path / "hub-ca.crt"
        hub_ca.write_text(TestCA("hub CA").cert_pem)
        vault = loopback_vault(
            spec,
            extra_tls_files={f"{HUB_CA_DIR}/ca.crt": str(hub_ca)},
            extra_env={"VAULT_TOKEN": edge_token, "BAO_TOKEN": edge_token},
        )
        (node,) = vault.cluster.nodes
        opts = job_files(tmp_path) | {"--seal": "auto"}
        result = cli(vault, opts)
        assert result.returncode == 0, result.stderr
        record = json.loads((tmp_path / "vault-init.json").read_text())
        assert record["seal"] == "auto" and len(record["init_response"]["recovery_keys"]) == 3
        assert not record["init_response"].get("keys")
        assert admin_login(vault).status == 200
        # restart: unsealed by the hub alone; a re-run sends no unseal key and changes nothing
        node.restart()
        wait_until(
            lambda: node.seal_status().get("sealed") is False,
            15,
            0.1,
            "the edge to auto-unseal",
            ignore=(OSError,),
        )
        again = cli(vault, opts)
        assert again.returncode == 0, again.stderr
        assert "unsealed" not in again.stdout and "init is not called" in again.stdout


def gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args],
        input=data,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


@pytest.fixture
def operator_pgp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    try:
        gpg(home, "--quick-gen-key", "Operator <operator@fedobs.test>", "rsa2048", "encrypt", "never")
        yield home, base64.b64encode(gpg(home, "--export", "operator@fedobs.test")).decode()
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30)


@pytest.mark.real
def test_pgp_keys_stop_for_the_operators_and_generate_root_recovers(
    request: pytest.FixtureRequest, operator_pgp: tuple[Path, str], tmp_path: Path
) -> None:
    home, pubkey = operator_pgp
    vault = build_loopback_vault(tmp_path / "cluster", make_spec(1))
    (node,) = vault.cluster.nodes
    # OpenBao >= 2.5.3 disables the unauthenticated sys/generate-root/* endpoints by default (405);
    # HashiCorp Vault, which production runs, serves them. Emulate Vault's default for this test only.
    text = node.config_path.read_text()
    node.config_path.write_text(
        text.replace('listener "tcp" {', 'listener "tcp" {\n  disable_unauthed_generate_root_endpoints = false', 1)
    )
    request.addfinalizer(vault.cluster.close)  # always, also when the test fails
    vault.cluster.start()
    opts = job_files(tmp_path)
    pgp = [a for _ in range(3) for a in ("--pgp-key", pubkey)]

    # without the operators' keys (and without the development flag) a Shamir run refuses to start
    refused = cli(vault, opts)
    assert refused.returncode == EXIT_USAGE and "a Shamir seal needs --pgp-key" in refused.stderr, refused.stderr
    assert node.seal_status()["initialized"] is False and not (tmp_path / "vault-init.json").exists()

    first = cli(vault, opts, *pgp)
    assert first.returncode == EXIT_OPERATOR_ACTION, first.stderr
    (line,) = first.stderr.strip().splitlines()
    assert "PGP-encrypted" in line and "operators must unseal" in line and node.url in line
    record = json.loads((tmp_path / "vault-init.json").read_text())
    assert record["pgp_encrypted"] is True

    # the operators decrypt their shares and unseal
    keys = [
        gpg(home, "--decrypt", data=base64.b64decode(k)).decode().strip()
        for k in record["init_response"]["keys_base64"][:2]
    ]
    for key in keys:
        node.api("PUT", "sys/unseal", body={"key": key})
    assert node.seal_status()["sealed"] is False

    # the root token of the first run was never stored: the admin path does not exist yet
    second = cli(vault, opts, *pgp)
    assert second.returncode == EXIT_ADMIN_LOGIN and "generate-root" in second.stderr, second.stderr

    # the documented recovery: generate-root, then re-run with --root-token-file
    attempt = node.api("PUT", "sys/generate-root/attempt", body={})
    nonce, otp = attempt.body["nonce"], attempt.body["otp"]
    for key in keys:
        update = node.api("PUT", "sys/generate-root/update", body={"key": key, "nonce": nonce})
    encoded = update.body["encoded_token"]
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    root = bytes(a ^ b for a, b in zip(raw, otp.encode(), strict=True)).decode()
    root_file = tmp_path / "root-token"
    root_file.write_text(root)
    root_file.chmod(0o600)
    third = cli(vault, opts, *pgp, "--root-token-file", str(root_file))
    assert third.returncode == 0, third.stderr
    assert root not in third.stdout + third.stderr
    assert admin_login(vault).status == 200
    assert node.api("GET", "auth/token/lookup-self", token=root).status == 403  # revoked at the end
    assert json.loads((tmp_path / "vault-init.json").read_text()) == record  # untouched


# ------------------------------------------------------------------------------------------------
# the Kubernetes Secret state store, against the loopback fake of the API server (no cluster here)
# ------------------------------------------------------------------------------------------------
def test_kubernetes_secret_store_creates_once_and_never_replaces(tmp_path: Path) -> None:
    with KubeAPIServer() as kube:
        kube.create_service_account("vault", "vault-bootstrap")
        kube.allow_service_account("vault", "vault-bootstrap", ["get", "create", "update"], ["secrets"], "vault")
        token = tmp_path / "token"
        token.write_text(kube.mint_service_account_token("vault", "vault-bootstrap") + "\n")

        def store_for(name: str) -> KubernetesSecretStateStore:
            return KubernetesSecretStateStore("vault", name, api_url=kube.url, token_file=token, ca_file=kube.ca_file)

        store = store_for("vault-init")
        store.preflight()  # GET 404, then a dry-run create: nothing stored
        assert kube.get_secret("vault", "vault-init") is None
        assert kube.count("POST", "/api/v1/namespaces/vault/secrets", status=201) == 1
        assert store.load() is None
        record = {"format": "x", "init_response": {"keys": ["k1"]}}
        store.save(record)
        stored = kube.secret_data("vault", "vault-init")
        assert stored is not None and json.loads(stored["init.json"]) == record
        assert store.load() == record
        store.save(record)  # same record: no write
        with pytest.raises(BootstrapError, match="already holds a different init result"):
            store.save({"format": "x", "init_response": {"keys": ["other"]}})
        assert {r.method for r in kube.requests} == {"GET", "POST"}
        assert all(r.user == "system:serviceaccount:vault:vault-bootstrap" for r in kube.requests)
        # an existing Secret without the key is updated with its resourceVersion
        existing = kube.put_secret("vault", "other", {})
        store_for("other").save(record)
        (update,) = [r for r in kube.requests if r.method == "PUT"]
        assert (update.path, update.status) == ("/api/v1/namespaces/vault/secrets/other", 200)
        assert update.resource_version == existing["metadata"]["resourceVersion"]


def test_the_stacks_role_is_all_the_store_needs_and_creates_no_secret(tmp_path: Path, hub: Recording) -> None:
    """With exactly the Role the stack declares and the empty Secret it creates, the Job's store
    reads and writes the init state; creating any other Secret (say, a token Secret of another
    ServiceAccount) is refused."""
    role = k8s_object(hub, "Role", "vault-bootstrap")
    declared = k8s_object(hub, "Secret", "vault-init")
    with KubeAPIServer() as kube:
        kube.create_service_account("vault", "vault-bootstrap")
        kube.put_role("vault", "vault-bootstrap", role["rules"])
        binding = k8s_object(hub, "RoleBinding", bootstrap_job(hub)["metadata"]["name"])
        kube.put_role_binding("vault", binding["metadata"]["name"], binding["roleRef"]["name"], binding["subjects"])
        kube.put_secret("vault", "vault-init", {}, labels=declared["metadata"]["labels"])
        token = tmp_path / "token"
        token.write_text(kube.mint_service_account_token("vault", "vault-bootstrap") + "\n")

        def store_for(name: str) -> KubernetesSecretStateStore:
            return KubernetesSecretStateStore("vault", name, api_url=kube.url, token_file=token, ca_file=kube.ca_file)

        store = store_for("vault-init")
        store.preflight()
        assert store.load() is None
        record = {"format": "x", "init_response": {"keys": ["k1"]}}
        store.save(record)
        stored = kube.secret_data("vault", "vault-init")
        assert stored is not None and json.loads(stored["init.json"]) == record
        assert {r.method for r in kube.requests if r.status < 400} == {"GET", "PUT"}
        with pytest.raises(BootstrapError, match="403"):
            store_for("vault-token").save(record)
        assert kube.get_secret("vault", "vault-token") is None


# ------------------------------------------------------------------------------------------------
# the command line the Vault component puts into the Job is one this program accepts
# ------------------------------------------------------------------------------------------------
def test_the_components_job_command_parses() -> None:
    spec = make_spec(3)
    settings = vault_component.VaultSettings(
        exposure=vault_component.AddressExposure(
            type="address", address="https://vault.test:8200", hostname="vault.test"
        ),
        seal=ShamirSeal(type="shamir", key_shares=5, key_threshold=3),
        operator_pgp_keys=tuple(plan_operator_pgp_keys()),
    )
    command = vault_component.bootstrap_command(settings, spec)
    assert command[:3] == ["python", "-m", "programs.vault_bootstrap"]
    config, state = config_from_args(build_parser().parse_args(command[3:]))
    assert [p.url for p in config.peers] == [f"https://{spec.peer_hostname(i)}:8200" for i in range(3)]
    assert (config.key_shares, config.key_threshold, len(config.pgp_keys)) == (5, 3, 5)
    assert config.userpass_path == ADMIN_AUTH_MOUNT
    assert config.username == vault_component.ADMIN_USERNAME
    assert config.admin_policy_name == ADMIN_POLICY
    assert state == f"kubernetes-secret:{spec.namespace}/{vault_component.INIT_STATE_SECRET}"


def test_the_command_line_refuses_plaintext_shamir_keys_and_a_half_given_grant(tmp_path: Path) -> None:
    """Usage errors before anything is contacted: a Shamir seal with neither operator keys nor the
    development flag, both at once, a grant without its Job's uid, a grant with the file store."""
    files = ["--password-file", "p", "--admin-policy-file", "a", "--peer", "https://vault-0.vault-internal:8200"]
    pgp = ["--key-shares", "1", "--key-threshold", "1", "--pgp-key", plan_operator_pgp_keys()[0]]
    plaintext = [vault_component.PLAINTEXT_UNSEAL_KEYS_FLAG, "true"]
    for args, message in (
        ([], "a Shamir seal needs --pgp-key"),
        ([*pgp, *plaintext], "exclude each other"),
        ([*plaintext, "--role-binding", "b", "--job-name", "b"], "go together"),
    ):
        with pytest.raises(UsageError, match=message):
            config_from_args(build_parser().parse_args([*files, *args]))
    auto, _ = config_from_args(build_parser().parse_args([*files, "--seal", "auto", "--state", "file:x"]))
    assert auto.pgp_keys == () and not auto.plaintext_unseal_keys  # recovery keys: not this rule's
    grant = ["--role-binding", "vault-bootstrap-1", "--job-name", "vault-bootstrap-1", "--job-uid", "0f0e-1a2b-3c4d"]
    config, _ = config_from_args(build_parser().parse_args([*files, *plaintext, *grant, "--state", "file:x"]))
    assert config.job_grant == JobGrant("vault-bootstrap-1", "vault-bootstrap-1", "0f0e-1a2b-3c4d")
    (tmp_path / "p").write_text("pw")
    (tmp_path / "a").write_text("policy")
    config = replace(config, password_file=str(tmp_path / "p"), admin_policy_file=str(tmp_path / "a"))
    with pytest.raises(UsageError, match="needs the kubernetes-secret state store"):
        run(config, FileStateStore(tmp_path / "state.json"), log=lambda m: None)
