"""cert-sync against real OpenBao with the certificates of a hub with N edges.

Everything is the stacks' own, made real on loopback by the rig (``rig/``) as the hub-to-edge test
does (``tests/real/test_hub_edge_flow.py``): the hub evaluated with N edges, the part of its Vault
configuration cert-sync uses (KV, Kubernetes auth with every role and policy, the edges' AppRoles
and transit tokens)
applied to a real OpenBao with a file audit device, the hub's ``Certificate`` resources issued by a
test CA and served as cert-manager's Secrets by the loopback Kubernetes API, the edge stack
evaluated with the real hub's outputs and its configuration applied to a second OpenBao, and the
stacks' own cert-sync CronJobs run as their pods would (``run_cert_sync``: one pass each, the
interpreter start included, as in a Job's container).

Per repetition: a full sync (every hub path deleted first, so every certificate is written), a
no-op run (nothing changed: its writes are counted in the hub's audit log), and a renewal (one
edge's Secret replaced, then the hub run that writes it and the edge run that pulls it: the two
pass run times of the rotation delay).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.evaluation import hub_config
from offline.engine import RecordedResource, Recording, run_program
from rig.applier import VaultApplier
from rig.deploy_identity import DeployKey, edge_on_real_hub, trusting
from rig.hub_edge import (
    Pki,
    children,
    hub_cert_sync_options,
    issue_pki,
    kubernetes_auth_overrides,
    publish_pki,
    real_hub_outputs,
    run_cert_sync,
)
from rig.kube_api import KubeAPIServer
from rig.pki import TestCA
from rig.tls_vault import Vault, initialise, start_vault

EDGE = "edge-eu"
#: What cert-sync does not use and OpenBao or this machine cannot serve without databases.
NOT_APPLIED = ("vault:database/", "vault:aws/", "vault:generic/endpoint:Endpoint")


def cert_sync_configuration(hub: Recording) -> list[RecordedResource]:
    """The hub's Vault configuration without its database and AWS engines: cert-sync uses KV,
    Kubernetes auth and, for the edges, the AppRoles; an edge's deploy identity also creates its
    transit token (through its token role) and its AppRole secret_id."""
    return [
        r
        for r in children(
            hub,
            f"{hub.stack}-vault-config",
            f"{hub.stack}-kubernetes-auth",
            f"{hub.stack}-transit-unseal",
            f"{hub.stack}-edge-identity",
        )
        if not r.type.startswith(NOT_APPLIED)
        and not (r.type == "vault:index/mount:Mount" and r.inputs.get("type") == "database")
    ]


@dataclass
class Peers:
    hub: Recording
    edge: Recording
    hub_vault: Vault
    edge_vault: Vault
    hub_kube: KubeAPIServer
    edge_kube: KubeAPIServer
    synced_paths: list[str]
    pki: Pki
    workdir: Path


@contextmanager
def peers(workdir: Path, edges: int) -> Iterator[Peers]:
    config, secret_keys = hub_config(edges)
    key = DeployKey()
    hub = run_program("hub", trusting(config, key), secret_keys)
    if hub.error is not None:
        raise RuntimeError(f"the hub with {edges} edges failed: {hub.error}")
    ca = TestCA("bench-vault-ca")
    with ExitStack() as stack:
        hub_kube = stack.enter_context(KubeAPIServer())
        edge_kube = stack.enter_context(KubeAPIServer())
        hub_node = start_vault("hub", workdir / "hub", ca)
        stack.callback(hub_node.kill)
        edge_node = start_vault("edge", workdir / "edge", ca)
        stack.callback(edge_node.kill)
        hub_vault, edge_vault = initialise("hub", hub_node, kv=False), initialise("edge", edge_node, kv=False)
        VaultApplier(
            hub_vault.url,
            hub_vault.root,
            ca_file=hub_vault.ca_file,
            in_cluster_overrides=kubernetes_auth_overrides(hub_kube),
        ).apply(cert_sync_configuration(hub))
        outputs = real_hub_outputs(hub, address=hub_vault.url, ca_pem=ca.cert_pem)
        edge, _ = edge_on_real_hub(hub, key, outputs, hub_vault.url, hub_vault.ca_file)
        VaultApplier(
            edge_vault.url,
            edge_vault.root,
            ca_file=edge_vault.ca_file,
            in_cluster_overrides=kubernetes_auth_overrides(edge_kube),
        ).apply(children(edge, f"{EDGE}-vault-config", f"{EDGE}-kubernetes-auth"))
        pki = issue_pki(hub)
        publish_pki(hub, hub_kube, pki)
        options = hub_cert_sync_options(hub)
        paths = [*(spec.kv_path for spec in options.secrets), *options.trust.bundles]
        yield Peers(hub, edge, hub_vault, edge_vault, hub_kube, edge_kube, paths, pki, workdir)


@dataclass(frozen=True)
class Run:
    seconds: float
    vault_requests: int
    vault_writes: int
    kube_requests: int


def _run(p: Peers, side: str) -> Run:
    recording, vault, kube = (p.hub, p.hub_vault, p.hub_kube) if side == "hub" else (p.edge, p.edge_vault, p.edge_kube)
    mark, kube_before = vault.audit_mark(), len(kube.requests)
    started = time.perf_counter()
    result = run_cert_sync(recording, vault.url, vault.ca_file, kube, p.workdir / "job")
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the {side} cert-sync failed ({result.returncode}): {result.stderr.strip()}")
    return Run(seconds, len(vault.audit_requests(mark)), len(vault.kv_writes(mark)), len(kube.requests) - kube_before)


def measure(workdir: Path, edges: int = 100, reps: int = 5) -> dict[str, Any]:
    runs: dict[str, list[Run]] = {"full": [], "noop": [], "rotation_hub": [], "rotation_edge": []}
    with peers(workdir, edges) as p:
        certificates = len(p.synced_paths)
        for _ in range(reps):
            for path in p.synced_paths:
                p.hub_vault.api("DELETE", f"kv/metadata/{path}")
            runs["full"].append(_run(p, "hub"))
            runs["noop"].append(_run(p, "hub"))
            renewed = p.pki.renew_client(EDGE).secret_data
            p.hub_kube.put_secret("fedobs-pki", f"otel-client-tls-{EDGE}", renewed, type="kubernetes.io/tls")
            runs["rotation_hub"].append(_run(p, "hub"))
            runs["rotation_edge"].append(_run(p, "edge"))
            delivered = p.edge_vault.kv("otel/otel-client-tls") or {}
            if delivered.get("tls.crt") != renewed["tls.crt"]:
                raise RuntimeError("the renewed certificate did not reach the edge Vault")

    def median(kind: str, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in runs[kind]))

    return {
        "edges": edges,
        "certificates": certificates,
        "reps": reps,
        "full_seconds": median("full", "seconds"),
        "full_writes": median("full", "vault_writes"),
        "full_vault_requests_per_certificate": median("full", "vault_requests") / certificates,
        "full_kube_requests_per_certificate": median("full", "kube_requests") / certificates,
        "noop_seconds": median("noop", "seconds"),
        "noop_writes": max(r.vault_writes for r in runs["noop"]),
        "noop_vault_requests_per_certificate": median("noop", "vault_requests") / certificates,
        "noop_kube_requests_per_certificate": median("noop", "kube_requests") / certificates,
        "rotation_hub_seconds": median("rotation_hub", "seconds"),
        "rotation_hub_writes": median("rotation_hub", "vault_writes"),
        "rotation_edge_seconds": median("rotation_edge", "seconds"),
        "rotation_edge_writes": median("rotation_edge", "vault_writes"),
        "runs": {kind: [vars(r) for r in items] for kind, items in runs.items()},
    }
