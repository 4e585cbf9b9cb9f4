"""The snapshot program (``python -m programs.raft_snapshot``) against real peers.

Peers, all on 127.0.0.1 and started/stopped by this module: a single-node OpenBao Raft server
with TLS (``rig.raft_single``) whose Kubernetes auth is configured against the fake
Kubernetes API (``rig.kube_api``, TokenReview), a role bound to the snapshot service
account with only ``SNAPSHOT_POLICY_HCL``; moto's S3 (``rig.s3``) with failures on
demand; and, for the restore procedure, a second, fresh Raft node.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from programs.raft_snapshot.snapshot import (
    EXIT_STORAGE,
    EXIT_USAGE,
    EXIT_VAULT,
    EXIT_VERIFY,
    SNAPSHOT_POLICY_HCL,
    SnapshotInvalidError,
    verify_snapshot,
)
from rig.kube_api import KubeAPIServer
from rig.openbao import bao_binary, free_port
from rig.pki import TestCA
from rig.programs_env import programs_python
from rig.raft_single import InitResult, RaftSingleNode
from rig.s3 import MotoS3

pytestmark = pytest.mark.real

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "vault"
SNAPSHOT_SA = "raft-snapshot"
ROLE = "raft-snapshot"
PREFIX = "vault-raft-snapshots"
SHARES, THRESHOLD = 3, 2
KV_DATA = {"username": "otel", "password": "s3cr3t-value"}


@dataclass
class Env:
    source: RaftSingleNode
    source_init: InitResult
    fresh: RaftSingleNode
    kube: KubeAPIServer
    s3: MotoS3
    bucket: str
    jwt_file: Path
    jwt: str
    workdir: Path

    def run(
        self,
        *args: str,
        timeout: float = 60,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the program as a subprocess, as the CronJob pod would (env + flags)."""
        scrubbed = ("AWS_", "VAULT_", "SNAPSHOT_", "BAO_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(scrubbed)}
        env.update(self.s3.env())
        env.update(
            AWS_CONFIG_FILE=str(self.workdir / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.workdir / "no-aws-credentials"),
            VAULT_ADDR=self.source.url,
            VAULT_CACERT=self.source.ca_file,
            SNAPSHOT_JWT_FILE=str(self.jwt_file),
            SNAPSHOT_S3_ENDPOINT=self.s3.endpoint_url,
            SNAPSHOT_S3_BUCKET=self.bucket,
            SNAPSHOT_S3_PREFIX=PREFIX,
            SNAPSHOT_TMP_DIR=str(self.workdir / "tmp"),
        )
        env.update(extra_env or {})
        return subprocess.run(
            [programs_python(), "-m", "programs.raft_snapshot", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def snapshots(self, cluster: str) -> list[str]:
        return self.s3.keys(self.bucket, f"{PREFIX}/{cluster}/")


def _assert_failed_with_one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    print(f"exit {result.returncode}: {result.stderr.strip()}")  # shown by pytest -s / on failure
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("raft-snapshot: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _assert_no_secrets(env: Env, result: subprocess.CompletedProcess[str], *extra: str) -> None:
    output = result.stdout + result.stderr
    for secret in (env.jwt, env.source_init.root_token, env.s3.secret_access_key, *extra):
        assert secret not in output


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("raft-snapshot")
    (base / "tmp").mkdir()
    ca = TestCA("fedobs-test-vault-ca")
    with (
        KubeAPIServer() as kube,
        MotoS3() as s3,
        RaftSingleNode(base / "source", ca, "source") as source,
        RaftSingleNode(base / "fresh", ca, "fresh") as fresh,
    ):
        init = source.initialize(shares=SHARES, threshold=THRESHOLD)
        root = init.root_token

        def ok(method: str, path: str, body: dict[str, object]) -> None:
            resp = source.api(method, path, token=root, body=body)
            assert resp.status in (200, 204), (path, resp.status, resp.text)

        # Vault's own service account reviews tokens (the chart binds it to system:auth-delegator).
        kube.allow_token_reviews(f"system:serviceaccount:{NAMESPACE}:vault")
        reviewer = kube.mint_service_account_token(NAMESPACE, "vault")
        ok("POST", "sys/auth/kubernetes", {"type": "kubernetes"})
        ok(
            "POST",
            "auth/kubernetes/config",
            {
                "kubernetes_host": kube.url,
                "kubernetes_ca_cert": kube.ca_pem,
                "token_reviewer_jwt": reviewer,
            },
        )
        ok("PUT", f"sys/policies/acl/{ROLE}", {"policy": SNAPSHOT_POLICY_HCL})
        ok(
            "POST",
            f"auth/kubernetes/role/{ROLE}",
            {
                "bound_service_account_names": [SNAPSHOT_SA],
                "bound_service_account_namespaces": [NAMESPACE],
                "token_policies": [ROLE],
                "token_no_default_policy": False,
                "token_ttl": "5m",
            },
        )
        ok("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}})
        deadline = time.monotonic() + 10
        while True:  # a new KV v2 mount needs a moment before it accepts writes
            resp = source.api("POST", "secret/data/otel/db", token=root, body={"data": KV_DATA})
            if resp.status == 200 or time.monotonic() > deadline:
                assert resp.status == 200, resp.text
                break
            time.sleep(0.1)
        jwt = kube.mint_service_account_token(NAMESPACE, SNAPSHOT_SA)
        jwt_file = base / "token"
        jwt_file.write_text(jwt)
        bucket = s3.create_bucket("fedobs-vault-snapshots")
        yield Env(source, init, fresh, kube, s3, bucket, jwt_file, jwt, base)


def test_snapshot_role_has_only_the_snapshot_capability(env: Env) -> None:
    login = env.source.api("POST", "auth/kubernetes/login", body={"role": ROLE, "jwt": env.jwt})
    assert login.status == 200, login.text
    token = login.body["auth"]["client_token"]
    caps = env.source.api(
        "POST",
        "sys/capabilities-self",
        token=token,
        body={
            "paths": ["sys/storage/raft/snapshot", "sys/storage/raft/snapshot-force", "secret/data/otel/db"],
        },
    ).body
    assert caps["sys/storage/raft/snapshot"] == ["read"]
    assert caps["sys/storage/raft/snapshot-force"] == ["deny"]
    assert caps["secret/data/otel/db"] == ["deny"]
    env.source.api("POST", "auth/token/revoke-self", token=token)


def test_take_uploads_a_verified_snapshot(env: Env) -> None:
    env.s3.clear_log()
    result = env.run("--cluster-name", "hub")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    keys = env.snapshots("hub")
    assert len(keys) == 1
    key = keys[0]
    assert key.startswith(f"{PREFIX}/hub/") and key.endswith("Z.snap")
    assert key in result.stdout
    _assert_no_secrets(env, result)

    data = env.s3.get(env.bucket, key)
    local = env.workdir / "downloaded.snap"
    local.write_bytes(data)
    info = verify_snapshot(local)
    assert {"meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"} <= set(info.files)
    head = env.s3.client().head_object(Bucket=env.bucket, Key=key)
    import hashlib

    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert head["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert head["Metadata"]["cluster"] == "hub"
    # the pod's identity was checked by the Kubernetes API's TokenReview, on Vault's behalf
    assert (
        env.kube.count(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            user=f"system:serviceaccount:{NAMESPACE}:vault",
            status=201,
        )
        >= 1
    )
    assert env.s3.count("upload") == 1
    assert not list((env.workdir / "tmp").iterdir()), "the temporary snapshot file was left behind"


def test_retention_keeps_the_newest_n(env: Env) -> None:
    keep = 2
    # Objects retention must never touch: not snapshots of this cluster or not snapshot names.
    bystanders = [
        f"{PREFIX}/edge-a/README.txt",
        f"{PREFIX}/edge-b/20000101T000000.000Z.snap",
        f"{PREFIX}/edge-a/nested/20000101T000000.000Z.snap",
    ]
    for key in bystanders:
        env.s3.client().put_object(Bucket=env.bucket, Key=key, Body=b"x")
    seen: list[str] = []
    for _ in range(keep + 2):
        result = env.run("--cluster-name", "edge-a", "--keep", str(keep))
        assert result.returncode == 0, result.stderr
        new = sorted(set(env.snapshots("edge-a")) - set(seen) - set(bystanders))
        assert len(new) == 1
        seen.append(new[0])
    remaining = [k for k in env.snapshots("edge-a") if k not in bystanders]
    assert remaining == sorted(seen)[-keep:]
    assert set(bystanders) <= set(env.s3.keys(env.bucket))

    listed = env.run("list", "--cluster-name", "edge-a")
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == sorted(remaining, reverse=True)


def _seed(env: Env, cluster: str) -> list[str]:
    result = env.run("--cluster-name", cluster)
    assert result.returncode == 0, result.stderr
    before = env.snapshots(cluster)
    assert len(before) == 1
    return before


def test_denied_upload_fails_and_keeps_earlier_snapshots(env: Env) -> None:
    before = _seed(env, "denied")
    env.s3.clear_log()
    with env.s3.failing(["upload"]):
        result = env.run("--cluster-name", "denied", "--keep", "1")
    _assert_failed_with_one_line(result, EXIT_STORAGE, "AccessDenied", "HTTP 403", f"s3://{env.bucket}/")
    assert env.snapshots("denied") == before
    assert env.s3.count("delete") == 0, "retention must not run after a failed upload"
    assert env.s3.multipart_uploads(env.bucket) == []
    _assert_no_secrets(env, result)


def test_s3_down_fails_and_keeps_earlier_snapshots(env: Env) -> None:
    before = _seed(env, "outage")
    with env.s3.down():
        result = env.run("--cluster-name", "outage", "--keep", "1", "--timeout", "2")
    _assert_failed_with_one_line(result, EXIT_STORAGE, env.s3.endpoint_url)
    assert env.snapshots("outage") == before


def test_failed_multipart_upload_is_aborted(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto enforces S3's 5 MiB minimum part size; the test snapshots are ~20 KiB.
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", 1024)
    ok = env.run("--cluster-name", "multipart", "--part-size", "4096")
    assert ok.returncode == 0, ok.stderr
    [key] = env.snapshots("multipart")
    head = env.s3.client().head_object(Bucket=env.bucket, Key=key)
    assert head["ETag"].strip('"').endswith(f"-{-(-head['ContentLength'] // 4096)}")

    env.s3.clear_log()
    with env.s3.failing(["upload"], skip=2, status=500, code="InternalError", message="boom"):
        result = env.run("--cluster-name", "multipart", "--part-size", "4096", "--keep", "1")
    _assert_failed_with_one_line(result, EXIT_STORAGE, "part 2", "InternalError")
    assert env.snapshots("multipart") == [key]
    assert env.s3.multipart_uploads(env.bucket) == []
    assert env.s3.count("delete") == 1  # the AbortMultipartUpload, not a retention delete


def test_vault_unreachable_names_the_url(env: Env) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    result = env.run("--cluster-name", "hub", "--vault-addr", url)
    _assert_failed_with_one_line(result, EXIT_VAULT, f"{url}/v1/auth/kubernetes/login", "cannot reach Vault")


def test_vault_tls_is_verified(env: Env) -> None:
    result = env.run("--cluster-name", "hub", extra_env={"VAULT_CACERT": env.kube.ca_file})
    _assert_failed_with_one_line(result, EXIT_VAULT, "TLS verification", env.source.url)


def test_wrong_service_account_is_refused(env: Env) -> None:
    other = env.workdir / "other-token"
    other.write_text(env.kube.mint_service_account_token(NAMESPACE, "otel-collector"))
    env.s3.clear_log()
    result = env.run("--cluster-name", "hub", "--jwt-file", str(other))
    _assert_failed_with_one_line(result, EXIT_VAULT, "HTTP 403", "service account name not authorized")
    assert env.s3.count() == 0
    _assert_no_secrets(env, result, other.read_text())


def test_corrupt_snapshot_is_never_restored(env: Env) -> None:
    key = f"{PREFIX}/corrupt/20000101T000000.000Z.snap"
    good = env.s3.get(env.bucket, env.snapshots("hub")[0])
    env.s3.client().put_object(Bucket=env.bucket, Key=key, Body=good[: len(good) // 2])
    token_file = env.workdir / "source-root"
    token_file.write_text(env.source_init.root_token)
    result = env.run("restore", "--key", key, "--token-file", str(token_file), "--yes")
    _assert_failed_with_one_line(result, EXIT_VERIFY, "truncated")
    assert env.source.api("GET", "sys/health").status == 200  # untouched


def test_verification_rejects_damaged_real_snapshots(env: Env, tmp_path: Path) -> None:
    good = env.s3.get(env.bucket, env.snapshots("hub")[0])
    truncated = tmp_path / "truncated.snap"
    truncated.write_bytes(good[:-100])
    with pytest.raises(SnapshotInvalidError, match="truncated"):
        verify_snapshot(truncated)
    # Re-pack the same archive with one byte of state.bin changed: gzip is fine, SHA256SUMS is not.
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(good))) as archive:
        members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()]  # type: ignore[union-attr]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as out:
        for member, content in members:
            if member.name == "state.bin":
                content = bytes([content[0] ^ 0xFF]) + content[1:]
            out.addfile(member, io.BytesIO(content))
    tampered = tmp_path / "tampered.snap"
    tampered.write_bytes(gzip.compress(buffer.getvalue()))
    with pytest.raises(SnapshotInvalidError, match=r"SHA-256 of state\.bin"):
        verify_snapshot(tampered)


def test_restore_into_a_fresh_cluster(env: Env) -> None:
    result = env.run("--cluster-name", "restore-src")
    assert result.returncode == 0, result.stderr
    [key] = env.snapshots("restore-src")

    fresh_init = env.fresh.initialize(shares=SHARES, threshold=THRESHOLD)
    assert env.fresh.api("GET", "secret/data/otel/db", token=fresh_init.root_token).status in (403, 404)
    token_file = env.workdir / "fresh-root"
    token_file.write_text(fresh_init.root_token)
    target = {"VAULT_ADDR": env.fresh.url, "VAULT_CACERT": env.fresh.ca_file}

    dry = env.run("restore", "--key", key, "--token-file", str(token_file), extra_env=target)
    _assert_failed_with_one_line(dry, EXIT_USAGE, "--yes")
    assert env.fresh.api("GET", "sys/health").status == 200

    restored = env.run("restore", "--key", key, "--token-file", str(token_file), "--yes", extra_env=target)
    assert restored.returncode == 0, restored.stderr
    assert "unseal" in restored.stdout
    _assert_no_secrets(env, restored, fresh_init.root_token)

    env.fresh.wait_sealed()
    env.fresh.unseal(env.source_init.keys[-THRESHOLD:])  # the SOURCE cluster's keys
    read = env.fresh.api("GET", "secret/data/otel/db", token=env.source_init.root_token)
    assert read.status == 200, read.text
    assert read.data["data"] == KV_DATA
    assert env.fresh.api("GET", "secret/data/otel/db", token=fresh_init.root_token).status == 403


def documented_block(marker: str) -> str:
    """The shell block that follows ``<!-- marker -->`` in docs/vault.md."""
    text = (REPO / "docs" / "vault.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)```", text, re.S)
    assert match, f"docs/vault.md has no block marked {marker}"
    return match.group(1)


def test_the_documented_restore_procedure_brings_the_data_back(env: Env, tmp_path: Path) -> None:
    """docs/vault.md "Restore", run as written: HashiCorp's `vault` CLI is played by OpenBao's `bao`."""
    assert env.run("--cluster-name", "doc-restore").returncode == 0
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "vault").symlink_to(bao_binary())
    (shim / "python").symlink_to(programs_python())
    ca = TestCA("fedobs-test-restore-target")
    with RaftSingleNode(tmp_path / "target", ca, "target") as target:
        target_init = target.initialize(shares=SHARES, threshold=THRESHOLD)  # same shares as the source
        token_file = tmp_path / "target-token"
        token_file.write_text(target_init.root_token)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VAULT_", "SNAPSHOT_", "BAO_"))}
        shell_env = {
            **base_env,
            **env.s3.env(),
            "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "VAULT_ADDR": target.url,
            "VAULT_CACERT": target.ca_file,
            "SNAPSHOT_S3_ENDPOINT": env.s3.endpoint_url,
            "SNAPSHOT_S3_BUCKET": env.bucket,
            "SNAPSHOT_S3_PREFIX": PREFIX,
            "SNAPSHOT_TMP_DIR": str(env.workdir / "tmp"),
            "CLUSTER": "doc-restore",
            "TOKEN_FILE": str(token_file),
        }
        restore = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", documented_block("restore-procedure")],
            cwd=REPO,
            env=shell_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert restore.returncode == 0, restore.stderr
        assert "doc-restore/" in restore.stdout  # the list step showed the snapshot
        target.wait_sealed()
        for key in env.source_init.keys[:THRESHOLD]:
            unseal = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", documented_block("unseal-procedure")],
                cwd=REPO,
                env={**shell_env, "UNSEAL_KEY": key},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert unseal.returncode == 0, unseal.stderr
        target.wait_active()
        read = target.api("GET", "secret/data/otel/db", token=env.source_init.root_token)
        assert read.status == 200, read.text
        assert read.data["data"] == KV_DATA
