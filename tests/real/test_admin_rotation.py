"""Rotation of the admin credential by the bootstrap Job (programs/vault_bootstrap), no root token.

A 1-node OpenBao cluster started from the hub stack's own pod HCL and certificate SANs, driven by the
hub's own Job command (localised: it carries ``--rotate-admin-password true`` and the previous
generation's password file, as the Job's Secret mounts them). The tests run in file order and build
on each other: first run -> rotation -> unchanged re-run -> failures in the middle -> crash recovery
-> two generations without a run -> upgrade of a record that held the password -> lost credential and
the generate-root recovery. Throughout, the state record holds the init result and never a password.
Failures are real where the server can produce them (a policy that denies the password update answers
403); the two that a server cannot produce on demand (a login failing right after the update, a crash
between the update and the verifying login) are injected into an in-process run.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import components.vault as vault_component
from components.vault_names import ADMIN_AUTH_MOUNT, ADMIN_POLICY
from offline.engine import Recording
from programs.vault_bootstrap.__main__ import build_parser, config_from_args
from programs.vault_bootstrap.bootstrap import (
    EXIT_ADMIN_LOGIN,
    EXIT_FAILURE,
    LEGACY_PASSWORD_FIELDS,
    BootstrapError,
    Config,
    FileStateStore,
    KubernetesSecretStateStore,
    run,
)
from programs.vault_http import HttpReply, VaultHttp
from rig.hub_edge import shipped_admin_policy
from rig.kube_api import KubeAPIServer
from rig.openbao import ApiResponse, api
from rig.programs_env import programs_python
from rig.vault_cluster import (
    LoopbackVault,
    build_loopback_vault,
    job_command,
    localize_job_command,
    running,
    stack_server,
)

REPO = Path(__file__).resolve().parents[2]
ADMIN_POLICY_HCL = shipped_admin_policy()
MOUNT, USER = ADMIN_AUTH_MOUNT, vault_component.ADMIN_USERNAME
PASSWORD_PATH = f"auth/{MOUNT}/users/{USER}/password"
TIMEOUT = 45.0
P0 = "generation-0-never-applied-0000"
P1 = "first-admin-password-0001"
P2 = "second-admin-password-0002"
P3 = "third-admin-password-0003"
P4 = "fourth-admin-password-0004"
P5 = "fifth-admin-password-0005"
LOST = "set-behind-the-jobs-back-0006"
P6 = "sixth-admin-password-0006"
P7 = "seventh-admin-password-0007"
ALL_PASSWORDS = (P0, P1, P2, P3, P4, P5, P6, LOST, P7)
#: What the record holds: the init result, nothing else.
RECORD_FIELDS = {"format", "seal", "shares", "threshold", "pgp_encrypted", "initialized_at", "init_response"}


@dataclass
class Rotation:
    vault: LoopbackVault
    workdir: Path
    state_file: Path
    command: list[str]

    @property
    def url(self) -> str:
        return self.vault.urls[0]

    def set_password_files(self, password: str, previous: str) -> None:
        """What the Job's Secret mounts: this generation's password and the previous one's."""
        (self.workdir / "password").write_text(password + "\n")
        (self.workdir / "previous-password").write_text(previous + "\n")

    def cli(self, *extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [programs_python(), "-m", "programs.vault_bootstrap", *self.command, *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=2 * TIMEOUT + 30,
            env={k: v for k, v in os.environ.items() if not k.startswith("VAULT_BOOTSTRAP_")},
        )
        leaked = [p for p in ALL_PASSWORDS if p in result.stdout + result.stderr]
        assert leaked == [], "a password was printed"
        return result

    def config(self) -> Config:
        config, _ = config_from_args(build_parser().parse_args(self.command))
        return config

    def login(self, password: str) -> ApiResponse:
        return api(
            self.url,
            "POST",
            f"auth/{MOUNT}/login/{USER}",
            body={"password": password},
            ca_file=self.vault.ca_file,
        )

    def token(self, password: str) -> str:
        resp = self.login(password)
        assert resp.status == 200, resp.text
        assert ADMIN_POLICY in resp.body["auth"]["token_policies"]
        return str(resp.body["auth"]["client_token"])

    def record(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data

    def user(self, password: str) -> dict[str, Any]:
        token = self.token(password)
        resp = api(self.url, "GET", f"auth/{MOUNT}/users/{USER}", token=token, ca_file=self.vault.ca_file)
        assert resp.status == 200, resp.text
        return resp.data


@pytest.fixture(scope="module")
def rot(tmp_path_factory: pytest.TempPathFactory, hub: Recording) -> Iterator[Rotation]:
    base = tmp_path_factory.mktemp("rotation")
    server = stack_server(hub)
    vault = build_loopback_vault(
        base / "cluster", server.spec, pod_hcl=server.pod_hcl, dns_names=server.dns_names, nodes=[0]
    )
    (node,) = vault.cluster.nodes
    # OpenBao >= 2.5.3 disables the unauthenticated sys/generate-root/* endpoints by default; HashiCorp
    # Vault, which production runs, serves them (needed by the last test's recovery only).
    text = node.config_path.read_text()
    assert 'listener "tcp" {' in text
    node.config_path.write_text(
        text.replace('listener "tcp" {', 'listener "tcp" {\n  disable_unauthed_generate_root_endpoints = false', 1)
    )
    workdir = base / "job"
    workdir.mkdir()
    (workdir / "admin-policy.hcl").write_text(ADMIN_POLICY_HCL)
    state_file = workdir / "vault-init.json"
    command = localize_job_command(job_command(hub), vault, workdir, state_file, timeout=TIMEOUT)
    with running(vault.cluster):
        assert command[command.index("--rotate-admin-password") + 1] == "true"
        assert command[command.index("--admin-previous-password-file") + 1] == str(workdir / "previous-password")
        yield Rotation(vault, workdir, state_file, command)


def recording_factory(calls: list[tuple[str, str]], fake: Any = None) -> Any:
    """A client class that records (method, path) and lets ``fake(method, path, body)`` answer instead."""

    class Client(VaultHttp):
        def raw(self, method: str, path: str, **kw: Any) -> HttpReply:
            calls.append((method, path))
            answer = fake(method, path, kw.get("body")) if fake else None
            return answer if answer is not None else super().raw(method, path, **kw)

    return Client


def refused(resp: ApiResponse) -> bool:
    return resp.status in (400, 403)


# ------------------------------------------------------------------------------------------------
@pytest.mark.real
def test_first_run_records_the_init_result_and_no_password(rot: Rotation) -> None:
    rot.set_password_files(P1, P0)
    result = rot.cli()
    assert result.returncode == 0, result.stderr
    record = rot.record()
    assert set(record) == RECORD_FIELDS and record["init_response"]["keys"]
    assert not [p for p in ALL_PASSWORDS if p in rot.state_file.read_text()]
    assert stat.S_IMODE(rot.state_file.stat().st_mode) == 0o600
    rot.token(P1)
    assert refused(rot.login(P0))


@pytest.mark.real
def test_a_new_generation_rotates_from_the_previous_password(rot: Rotation) -> None:
    store_bytes = rot.state_file.read_bytes()
    user_before = rot.user(P1)
    rot.set_password_files(P2, P1)
    result = rot.cli()
    assert result.returncode == 0, result.stderr
    assert "admin password rotated and verified" in result.stdout
    rot.token(P2)
    old = rot.login(P1)
    assert refused(old), old.text  # the real server's answer to the old password
    assert rot.state_file.read_bytes() == store_bytes  # nothing recorded
    assert rot.user(P2) == user_before  # policy, TTLs: only the password changed


@pytest.mark.real
def test_a_rerun_with_the_same_password_changes_nothing(rot: Rotation) -> None:
    store_bytes = rot.state_file.read_bytes()
    user_before = rot.user(P2)
    result = rot.cli()
    assert result.returncode == 0, result.stderr
    assert "rotating the password" not in result.stdout and "removed" not in result.stdout
    calls: list[tuple[str, str]] = []
    run(rot.config(), FileStateStore(rot.state_file), client_factory=recording_factory(calls), log=lambda m: None)
    reads = ("auth/token/", f"auth/{MOUNT}/login")  # logins and token revocations only
    writes = [c for c in calls if c[0] in ("PUT", "POST") and not c[1].startswith(reads)]
    assert writes == [], writes
    assert rot.state_file.read_bytes() == store_bytes
    assert rot.user(P2) == user_before
    rot.token(P2)


@pytest.mark.real
def test_vault_refusing_the_update_leaves_the_old_password(rot: Rotation) -> None:
    """A real 403: the admin policy (as Pulumi could change it) denies the password update."""
    token = rot.token(P2)
    denied = ADMIN_POLICY_HCL + f'path "{PASSWORD_PATH}" {{ capabilities = ["deny"] }}\n'
    policy_path = f"sys/policies/acl/{ADMIN_POLICY}"
    ca = rot.vault.ca_file
    assert api(rot.url, "PUT", policy_path, token=token, body={"policy": denied}, ca_file=ca).status == 204
    store_bytes = rot.state_file.read_bytes()
    try:
        rot.set_password_files(P3, P2)
        result = rot.cli()
    finally:
        rot.set_password_files(P2, P1)
        original = {"policy": ADMIN_POLICY_HCL}
        restore = api(rot.url, "PUT", policy_path, token=rot.token(P2), body=original, ca_file=ca)
        assert restore.status == 204, restore.text
    assert result.returncode == EXIT_FAILURE, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert PASSWORD_PATH in line and "403" in line and "permission denied" in line, line
    assert rot.state_file.read_bytes() == store_bytes
    rot.token(P2)
    assert refused(rot.login(P3))


@pytest.mark.real
def test_a_failed_login_after_the_update_rolls_back(rot: Rotation) -> None:
    """Injected: the server takes the new password but the verifying login is refused -> roll back."""
    store_bytes = rot.state_file.read_bytes()
    rot.set_password_files(P3, P2)
    calls: list[tuple[str, str]] = []

    def fake(method: str, path: str, body: Any) -> HttpReply | None:
        if path == f"auth/{MOUNT}/login/{USER}" and body == {"password": P3} and ("POST", PASSWORD_PATH) in calls:
            return HttpReply(400, {"errors": ["invalid username or password (injected)"]})
        return None

    try:
        with pytest.raises(BootstrapError, match="rolled back to the previous password") as failure:
            store = FileStateStore(rot.state_file)
            run(rot.config(), store, client_factory=recording_factory(calls, fake), log=lambda m: None)
    finally:
        rot.set_password_files(P2, P1)
    assert all(p not in str(failure.value) for p in ALL_PASSWORDS)
    assert calls.count(("POST", PASSWORD_PATH)) == 2  # the update, then the roll-back
    assert rot.state_file.read_bytes() == store_bytes
    rot.token(P2)
    assert refused(rot.login(P3))


@pytest.mark.real
def test_a_run_that_dies_after_vault_took_the_password_is_completed_by_the_next(rot: Rotation) -> None:
    """Injected: the pod dies right after Vault accepted the new password (before verifying it)."""
    store_bytes = rot.state_file.read_bytes()
    rot.set_password_files(P3, P2)
    calls: list[tuple[str, str]] = []

    def fake(method: str, path: str, body: Any) -> HttpReply | None:
        if path == f"auth/{MOUNT}/login/{USER}" and body == {"password": P3} and ("POST", PASSWORD_PATH) in calls:
            raise BootstrapError("simulated crash after the update")
        return None

    with pytest.raises(BootstrapError, match="simulated crash"):
        run(
            rot.config(),
            FileStateStore(rot.state_file),
            client_factory=recording_factory(calls, fake),
            log=lambda m: None,
        )
    rot.token(P3)
    assert refused(rot.login(P2))
    result = rot.cli()  # the same files, as the Job's next attempt mounts them
    assert result.returncode == 0, result.stderr
    assert "rotating the password" not in result.stdout  # the login with the current password works at once
    rot.token(P3)
    assert rot.state_file.read_bytes() == store_bytes


@pytest.mark.real
def test_two_generations_without_a_run_between_them_exit_4(rot: Rotation) -> None:
    rot.set_password_files(P5, P4)  # Vault still has P3
    result = rot.cli()
    assert result.returncode == EXIT_ADMIN_LOGIN, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "also with the previous admin password" in line and "generate-root" in line, line
    rot.token(P3)
    assert refused(rot.login(P4)) and refused(rot.login(P5))


@pytest.mark.real
def test_without_rotation_enabled_a_new_password_still_exits_4(rot: Rotation) -> None:
    store_bytes = rot.state_file.read_bytes()
    rot.set_password_files(P4, P3)
    result = rot.cli("--rotate-admin-password", "false")
    assert result.returncode == EXIT_ADMIN_LOGIN, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "generate-root" in line
    assert rot.state_file.read_bytes() == store_bytes
    rot.token(P3)
    assert refused(rot.login(P4))


@pytest.mark.real
def test_upgrade_a_record_holding_the_password_loses_it_on_the_next_run(rot: Rotation) -> None:
    """A record an earlier version wrote (applied and pending passwords beside the keys): the next run
    still rotates from the applied one (a generation bumped with the upgrade, whose previous slot Vault
    never had) and takes both out of the record; the init result stays byte for byte."""
    clean = rot.record()
    legacy = clean | {LEGACY_PASSWORD_FIELDS[0]: P3, LEGACY_PASSWORD_FIELDS[1]: P5}
    rot.state_file.write_text(json.dumps(legacy))
    rot.set_password_files(P4, P0)
    result = rot.cli()
    assert result.returncode == 0, result.stderr
    assert "admin password rotated and verified" in result.stdout
    assert "removed the admin password an earlier version kept" in result.stdout
    assert rot.record() == clean
    rot.token(P4)
    assert refused(rot.login(P3))
    # without a rotation: the current password logs in, the stale fields still go
    rot.state_file.write_text(json.dumps(clean | {LEGACY_PASSWORD_FIELDS[0]: P4}))
    result = rot.cli()
    assert result.returncode == 0, result.stderr
    assert "rotating the password" not in result.stdout and rot.record() == clean


@pytest.mark.real
def test_neither_password_works_exits_4_and_generate_root_recovery_sets_the_new_one(rot: Rotation) -> None:
    # someone changed the password behind the Job's back: neither file opens the door
    token = rot.token(P4)
    lost = api(rot.url, "POST", PASSWORD_PATH, token=token, body={"password": LOST}, ca_file=rot.vault.ca_file)
    assert lost.status == 204, lost.text
    store_bytes = rot.state_file.read_bytes()
    rot.set_password_files(P5, P4)
    result = rot.cli()
    assert result.returncode == EXIT_ADMIN_LOGIN, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "also with the previous admin password" in line and "generate-root" in line, line
    assert rot.state_file.read_bytes() == store_bytes
    assert refused(rot.login(P4)) and refused(rot.login(P5))

    # the documented recovery, with the stored plaintext unseal keys (the development setting)
    (node,) = rot.vault.cluster.nodes
    record = rot.record()
    attempt = node.api("PUT", "sys/generate-root/attempt", body={})
    assert attempt.status == 200, attempt.text
    nonce, otp = attempt.body["nonce"], attempt.body["otp"]
    for key in record["init_response"]["keys"][: record["threshold"]]:
        update = node.api("PUT", "sys/generate-root/update", body={"key": key, "nonce": nonce})
    encoded = update.body["encoded_token"]
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    root = bytes(a ^ b for a, b in zip(raw, otp.encode(), strict=True)).decode()
    root_file = rot.workdir / "root-token"
    root_file.write_text(root)
    root_file.chmod(0o600)
    rot.set_password_files(P7, P5)
    result = rot.cli("--root-token-file", str(root_file))
    assert result.returncode == 0, result.stderr
    assert root not in result.stdout + result.stderr
    rot.token(P7)
    assert node.api("GET", "auth/token/lookup-self", token=root).status == 403  # revoked
    assert rot.state_file.read_bytes() == store_bytes


# ------------------------------------------------------------------------------------------------
# the production store's compare-and-swap, against a loopback fake of the Kubernetes API
# ------------------------------------------------------------------------------------------------
def test_kubernetes_secret_store_replace_is_a_compare_and_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with KubeAPIServer() as kube:
        kube.create_service_account("vault", "vault-bootstrap")
        kube.allow_service_account("vault", "vault-bootstrap", ["get", "create", "update"], ["secrets"], "vault")
        token = tmp_path / "token"
        token.write_text(kube.mint_service_account_token("vault", "vault-bootstrap") + "\n")
        store = KubernetesSecretStateStore(
            "vault", "vault-init", api_url=kube.url, token_file=token, ca_file=kube.ca_file
        )

        def puts() -> list[str | None]:
            return [r.resource_version for r in kube.requests if r.method == "PUT"]

        first = {"format": "x", "init_response": {"keys": ["k"]}}
        store.save(first)
        saved = kube.get_secret("vault", "vault-init")
        assert saved is not None
        second = first | {"note": "a"}
        store.replace(first, second)
        assert store.load() == second and puts() == [saved["metadata"]["resourceVersion"]]
        store.replace(first, second)  # already there: no write
        assert len(puts()) == 1
        with pytest.raises(BootstrapError, match="changed during the run"):
            store.replace(first, first | {"note": "b"})
        # someone writes between our GET and our PUT: the conditional PUT answers 409
        real_load = store.load

        def load_then_race() -> dict[str, Any] | None:
            loaded = real_load()
            current = kube.secret_data("vault", "vault-init")
            assert current is not None
            kube.put_secret("vault", "vault-init", current)  # the same data, a new resourceVersion
            return loaded

        monkeypatch.setattr(store, "load", load_then_race)
        with pytest.raises(BootstrapError, match="modified concurrently"):
            store.replace(second, second | {"note": "c"})
        monkeypatch.undo()
        assert store.load() == second
        assert [r.status for r in kube.requests if r.method == "PUT"] == [200, 409]
