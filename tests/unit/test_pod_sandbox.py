"""The pod sandbox itself (``rig.pod_sandbox``): the kernel enforces what a Pod spec says.

Each test runs a real process in bwrap as the spec's user; nothing is simulated but the kubelet's
volume layout, which is checked here against its documented modes and ownership.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

from components.pod_security import PROGRAMS_UID, restricted_container, restricted_pod
from rig.pki import TestCA
from rig.pod_sandbox import (
    REPO,
    Cluster,
    PodSandbox,
    PodSpecError,
    http_probe,
    programs_image,
    sandbox_tools_missing,
)

SECRET = {"password": "s3cr3t"}


@pytest.fixture(autouse=True)
def _tools() -> None:
    assert not sandbox_tools_missing(), f"install {sandbox_tools_missing()} (make system-packages)"


def pod(
    *,
    default_mode: int | None = 0o400,
    fs_group: int | None = None,
    extra_volumes: list[dict[str, Any]] | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
    container_context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    secret: dict[str, Any] = {"secretName": "admin"}
    if default_mode is not None:
        secret["defaultMode"] = default_mode
    pod_context = restricted_pod() | ({"fsGroup": fs_group} if fs_group is not None else {})
    return {
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": pod_context,
            "containers": [
                {
                    "name": "c",
                    "image": "ghcr.io/fedobs/programs:test",
                    "command": ["true"],
                    "securityContext": container_context or restricted_container(),
                    "volumeMounts": [
                        {"name": "admin", "mountPath": "/fedobs/admin", "readOnly": True},
                        *(extra_mounts or []),
                    ],
                }
            ],
            "volumes": [{"name": "admin", "secret": secret}, *(extra_volumes or [])],
        }
    }


def sandbox(tmp_path: Path, spec: dict[str, Any], **kwargs: Any) -> PodSandbox:
    cluster = Cluster(
        "test", secrets={"admin": SECRET}, token=lambda audience, seconds: f"jwt-for-{audience}-{seconds}"
    )
    return PodSandbox(spec, "c", programs_image(), cluster, tmp_path, **kwargs)


def sh(box: PodSandbox, script: str) -> tuple[int, str]:
    result = box.run(["sh", "-c", script], timeout=30)
    return result.returncode, result.stdout + result.stderr


def test_a_root_owned_0400_secret_file_is_unreadable_as_the_programs_user(tmp_path: Path) -> None:
    box = sandbox(tmp_path, pod(default_mode=0o400))
    data = box.volume_dirs["admin"] / "..data" / "password"
    assert (data.stat().st_mode & 0o7777, data.stat().st_uid, data.stat().st_gid) == (0o400, 0, 0)
    code, out = sh(box, "id -u; id -G; cat /fedobs/admin/password")
    assert code != 0
    assert out.splitlines()[:2] == [str(PROGRAMS_UID), str(PROGRAMS_UID)]
    assert "/fedobs/admin/password: Permission denied" in out, out


def test_with_fs_group_a_0440_secret_file_is_group_readable(tmp_path: Path) -> None:
    box = sandbox(tmp_path, pod(default_mode=0o440, fs_group=PROGRAMS_UID))
    code, out = sh(box, "id -G; stat -L -c '%a %u %g' /fedobs/admin/password; cat /fedobs/admin/password")
    assert code == 0, out
    assert out.splitlines() == [f"{PROGRAMS_UID}", f"440 0 {PROGRAMS_UID}", SECRET["password"]]


def test_fs_group_adds_group_read_and_an_unset_default_mode_is_0644(tmp_path: Path) -> None:
    # SetVolumeOwnership on a read-only volume: mode |= 0440, group = fsGroup (0400 -> 0440)
    box = sandbox(tmp_path, pod(default_mode=0o400, fs_group=4242))
    code, out = sh(box, "id -G; stat -L -c '%a %u %g' /fedobs/admin/password; cat /fedobs/admin/password")
    assert code == 0, out
    assert out.splitlines() == [f"{PROGRAMS_UID} 4242", "440 0 4242", SECRET["password"]]
    box = sandbox(tmp_path / "default", pod(default_mode=None))
    code, out = sh(box, "stat -L -c '%a %u %g' /fedobs/admin/password; ls -a /fedobs/admin")
    assert code == 0, out
    assert out.splitlines()[0] == "644 0 0"
    assert set(out.split()[3:]) >= {"..data", "password"}  # the atomic writer's layout


def test_the_read_only_root_filesystem_is_enforced(tmp_path: Path) -> None:
    box = sandbox(tmp_path, pod())
    code, out = sh(box, "echo x > /etc/fedobs-test")
    assert code != 0 and "Read-only file system" in out, out
    code, out = sh(box, "touch /tmp/x")  # no volume at /tmp: the image's /tmp is read-only too
    assert code != 0 and "Read-only file system" in out, out


def test_undeclared_paths_of_the_checkout_are_not_writable(tmp_path: Path) -> None:
    box = sandbox(tmp_path, pod())
    venv = box.image.env["PATH"].split(":")[0]
    for path in ("/opt/fedobs/programs/x", f"{venv}/x", f"{REPO}/build/x", "/var/tmp/x"):
        code, out = sh(box, f"touch {path}")
        assert code != 0, (path, out)
        assert "Read-only file system" in out or "No such file or directory" in out, (path, out)
    assert not (REPO / "programs" / "x").exists()


def test_an_empty_dir_is_writable_and_group_owned_with_fs_group(tmp_path: Path) -> None:
    spec = pod(
        fs_group=PROGRAMS_UID,
        default_mode=0o440,
        extra_volumes=[{"name": "tmp", "emptyDir": {}}],
        extra_mounts=[{"name": "tmp", "mountPath": "/tmp"}],
    )
    box = sandbox(tmp_path, spec)
    code, out = sh(box, "stat -c '%a %g' /tmp; touch /tmp/x && stat -c '%g' /tmp/x")
    assert code == 0, out
    assert out.split() == ["2777", str(PROGRAMS_UID), str(PROGRAMS_UID)]


def test_the_programs_image_runs_the_repositorys_code_with_the_venv(tmp_path: Path) -> None:
    box = sandbox(tmp_path, pod())
    result = box.run(["python", "-c", "import os, programs, boto3; print(programs.__file__, os.getcwd())"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/opt/fedobs/programs/__init__.py", "/opt/fedobs"]


def test_a_projected_token_is_0600_and_owned_by_the_pods_user_with_fs_group(tmp_path: Path) -> None:
    token = {"projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "vault"}}]}}
    spec = pod(
        fs_group=PROGRAMS_UID,
        default_mode=0o440,
        extra_volumes=[{"name": "tok", **token}],
        extra_mounts=[{"name": "tok", "mountPath": "/var/run/secrets/vault", "readOnly": True}],
    )
    code, out = sh(sandbox(tmp_path, spec), "stat -L -c '%a %u %g' /var/run/secrets/vault/token")
    assert code == 0, out
    assert out.split() == ["640", str(PROGRAMS_UID), str(PROGRAMS_UID)]  # 0600 + group read from fsGroup


def test_the_kubelet_refuses_root_with_run_as_non_root(tmp_path: Path) -> None:
    with pytest.raises(PodSpecError, match="runAsNonRoot"):
        sandbox(tmp_path, pod(container_context={**restricted_container(), "runAsUser": 0}))


def test_env_expands_references_and_reads_secret_keys(tmp_path: Path) -> None:
    spec = pod()
    spec["spec"]["containers"][0]["env"] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "ADDR", "value": "https://$(POD_IP):8200 $$(POD_IP) $(UNSET)"},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "admin", "key": "password"}}},
    ]
    env = sandbox(tmp_path, spec, pod_ip="127.0.0.9").environment()
    assert env["ADDR"] == "https://127.0.0.9:8200 $(POD_IP) $(UNSET)"
    assert env["PW"] == SECRET["password"]


def test_a_persistent_volume_with_a_capacity_fills_up_as_the_containers_user(tmp_path: Path) -> None:
    volume = {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
    spec = pod(fs_group=PROGRAMS_UID, extra_volumes=[volume], extra_mounts=[{"name": "data", "mountPath": "/data"}])
    with sandbox(tmp_path, spec, capacities={"data": 64 * 1024}) as box:
        root = box.volume_dirs["data"]
        assert (root.stat().st_uid, root.stat().st_gid, root.stat().st_mode & 0o7777) == (0, PROGRAMS_UID, 0o2775)
        code, out = sh(box, "head -c 100000 /dev/zero > /data/big")
        assert code != 0 and "No space left on device" in out, out
        assert (root / "big").stat().st_uid == PROGRAMS_UID
    assert not any(line.split()[1] == str(root) for line in Path("/proc/mounts").read_text().splitlines())


def test_an_https_probe_succeeds_from_200_to_399_without_verifying_the_certificate(tmp_path: Path) -> None:
    leaf = TestCA("probe test CA").issue("probe", ["elsewhere.test"], ["127.0.0.1"])  # not the name probed
    cert, key = leaf.write(tmp_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(int(self.path.rsplit("=", 1)[1]))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"https://127.0.0.1:{server.server_address[1]}"
        probe = {"httpGet": {"path": "/health?code=204", "port": 8200, "scheme": "HTTPS"}, "timeoutSeconds": 3}
        assert http_probe(probe, base) == (True, 204)
        for code, ready in ((200, True), (399, True), (429, False), (501, False), (503, False)):
            probe["httpGet"]["path"] = f"/health?code={code}"
            assert http_probe(probe, base) == (ready, code)
        assert http_probe(probe, "https://127.0.0.1:1") == (False, None)  # refused: a Failure
    finally:
        server.shutdown()
        server.server_close()
