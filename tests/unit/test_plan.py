"""The offline plan a reviewer runs: `python -m offline.plan --stack <stack>`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from offline.engine import ROOT


def run_plan(stack: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offline.plan", "--stack", stack, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_hub_plan_prints_the_tree_and_writes_objects(tmp_path: Path) -> None:
    result = run_plan("hub", tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("stack hub: ")
    for line in (
        "  fedobs:cluster:Cluster  hub-cluster",
        "    linode:index/lkeCluster:LkeCluster  hub-cluster-lke [protected]",
        "  fedobs:vault:Vault  hub-vault",
        "    kubernetes:helm.sh/v3:Release  hub-vault-release [protected]",
        "    vault:transit/secretBackendKey:SecretBackendKey  hub-transit-unseal-edge-eu-key [protected]",
        "  vaultAddress: https://vault.hub.fedobs.example.com:8200",
    ):
        assert line in out, line
    assert "mock-password" not in out and "mock-token" not in out and "PRIVATE KEY" not in out
    files = sorted(p.name for p in (tmp_path / "hub").glob("*.yaml"))
    assert "Certificate-hub-vault-server-certificate.yaml" in files and "Job-hub-vault-bootstrap.yaml" in files
    admin = yaml.safe_load((tmp_path / "hub" / "Secret-hub-vault-admin-credential.yaml").read_text())
    assert admin["stringData"] == "[secret]"


def test_edge_plan_reads_the_hub_plan(tmp_path: Path) -> None:
    result = run_plan("edge", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pulumi:pulumi:StackReference  edge-eu-hub-ref" in result.stdout
    assert "hubVaultAddress: https://vault.hub.fedobs.example.com:8200" in result.stdout
    release = yaml.safe_load((tmp_path / "edge" / "Release-edge-eu-vault-release.yaml").read_text())
    assert 'seal "transit"' in release["values"]["server"]["ha"]["raft"]["config"]


def test_plan_of_a_bad_config_names_every_problem(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump({"config": {"fedobs:role": "hub", "fedobs:clustr": {}}}))
    result = subprocess.run(
        [sys.executable, "-m", "offline.plan", "--stack", "bad", "--out", str(tmp_path), "--config-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    for key in (
        "fedobs:clustr: unknown key",
        "fedobs:cluster: required key is missing",
        "fedobs:vault: required key is missing",
    ):
        assert key in result.stderr, result.stderr
