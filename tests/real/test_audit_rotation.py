"""The audit-rotate sidecar of the Vault pods against a real OpenBao (``components/vault_audit.py``).

The hub's declared audit devices run on a real server whose audit log sits on a small filesystem,
and the sidecar's own program (the command the hub's chart values give the container) runs beside
it. What the test changes, and why: the file device's path (the pod's ``/vault/audit`` is this
test's small filesystem), the server process the sidecar looks for (its arguments here are
``server -config=<this node's config>``, in the pod those of the chart's start command), the
rotation size (the stack's rule, 1/20 of the volume, for this volume's size) and the interval
between checks (0.1 s instead of 60 s, so that a round takes a moment). Not modelled: the pod's
shared process namespace and users (here the sidecar and the server run as the test's user, in the
pod both as uid 100, which is what lets the sidecar signal Vault without a capability).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.vault_audit import AUDIT_DIR, MAX_USED_PERCENT, rotate_bytes, rotation_env
from offline.engine import Recording
from rig.hub_edge import openbao_audit_stanzas
from rig.openbao import wait_until
from rig.pki import TestCA
from rig.pod_sandbox import mount_sized_filesystem, unmount
from rig.tls_vault import Vault, initialise, start_vault
from rig.vault_cluster import stack_server

pytestmark = pytest.mark.real

#: The audit volume: 64 blocks of 4 KiB, rotated at 1/20 (13 KiB, a few requests).
VOLUME = 256 * 1024


@pytest.fixture
def audit_volume(tmp_path: Path) -> Iterator[Path]:
    volume = tmp_path / "audit-volume"
    volume.mkdir()
    mount_sized_filesystem(volume, VOLUME)
    try:
        yield volume
    finally:
        unmount(volume)


def sidecar(hub: Recording) -> dict[str, Any]:
    (container,) = stack_server(hub).values["server"]["extraContainers"]
    assert container["name"] == "audit-rotate"
    return dict(container)


def entries(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_sidecar_rotates_the_live_log_without_losing_entries_and_bounds_the_volume(
    hub: Recording, tmp_path: Path, audit_volume: Path
) -> None:
    container = sidecar(hub)
    stanzas = openbao_audit_stanzas(hub).replace(f'"{AUDIT_DIR}/', f'"{audit_volume}/')
    assert f'"{audit_volume}/audit.log"' in stanzas and '"stdout"' in stanzas
    node = start_vault("rotation", tmp_path / "node", TestCA("rotation test CA"), audit=stanzas)
    try:
        vault: Vault = initialise("rotation", node, kv=False, audit_path=audit_volume / "audit.log")
        declared = {e["name"]: e["value"] for e in container["env"]}
        assert declared == rotation_env(10 * 2**30)
        env = {
            **rotation_env(VOLUME),
            "AUDIT_LOG": str(audit_volume / "audit.log"),
            "VAULT_SERVER_ARGS": f"server -config={node.config_path}",
            "ROTATE_INTERVAL_SECONDS": "0.1",
            "PATH": "/usr/bin:/bin",
        }
        log = tmp_path / "sidecar.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(container["command"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            written, peak = run_rounds(vault, audit_volume, proc, log)
        finally:
            proc.terminate()
            proc.wait(10)
        sidecar_log = log.read_text()
        # the volume never went past the bound: archives pruned at 60 %, the live file and one archive
        # being written on top (each 1/20 of the volume), plus the requests between two checks
        print(f"peak use of the audit volume: {peak} %, {written} writes")
        assert peak <= MAX_USED_PERCENT + 20, (peak, sidecar_log)
        assert "removed" in sidecar_log, sidecar_log
        # what survives is a suffix of the writes, each request exactly once: rotation lost nothing
        archives = sorted(audit_volume.glob("audit-*.log.gz"))
        assert archives and not list(audit_volume.glob("audit-*.log")), sorted(p.name for p in audit_volume.iterdir())
        texts = [gzip.decompress(a.read_bytes()).decode() for a in archives]
        texts.append((audit_volume / "audit.log").read_text())
        kept = [
            e["request"]["path"].removeprefix("cubbyhole/rot-")
            for text in texts
            for e in entries(text)
            if e["type"] == "request" and e["request"]["path"].startswith("cubbyhole/rot-")
        ]
        first = int(kept[0])
        assert first > 0, "nothing was pruned"
        assert [int(k) for k in kept] == list(range(first, written)), "a rotation lost or repeated entries"
        # and the file device never failed
        assert "backend failed to log" not in node.log_text()
    finally:
        node.kill()


def run_rounds(vault: Vault, volume: Path, proc: subprocess.Popen[bytes], log: Path) -> tuple[int, int]:
    """Writes until the live log reaches the rotation size, waits for the sidecar to rotate it, and
    again, until three rounds after the sidecar first pruned. Returns (writes, peak volume use in %)."""
    threshold = rotate_bytes(VOLUME)
    live = volume / "audit.log"
    written = 0
    raw = 0
    peak = [0]

    def sample() -> None:
        usage = shutil.disk_usage(volume)
        peak[0] = max(peak[0], -(-100 * usage.used // usage.total))  # rounded up, as df does

    pruned_rounds = 0
    while pruned_rounds < 3:
        assert raw < 50 * VOLUME, f"nothing pruned after {raw} bytes: {log.read_text()}"
        if "removed" in log.read_text():
            pruned_rounds += 1
        while live.stat().st_size < threshold:
            body = {"data": {f"field{i}": f"value {i} of write {written}" for i in range(20)}}
            resp = vault.api("POST", f"cubbyhole/rot-{written}", body)
            assert resp.status in (200, 204), resp.text
            written += 1
            sample()
        raw += live.stat().st_size

        def rotated(inode: int = live.stat().st_ino) -> bool:
            assert proc.poll() is None, f"the sidecar exited {proc.returncode}: {log.read_text()}"
            sample()
            reopened = live.exists() and live.stat().st_ino != inode
            return reopened and not list(volume.glob("audit-*.log"))

        wait_until(rotated, 20, 0.05, "the sidecar to rotate and compress the live log")
    return written, peak[0]
