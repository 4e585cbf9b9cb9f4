"""Audit log volume per edge, measured on real OpenBao servers with the stacks' own programs.

The set-up is ``bench/certsync.py``'s with the shipped hub (two edges): the hub's and the edge's Vault
configurations applied to two real servers with a file audit device, the hub's certificates served
as cert-manager's Secrets. After one full sync on each side (so that what follows is the steady
state: nothing changed), each repetition measures the bytes the file audit device appends for:

* one poll of the edge's cert-sync follower while nothing changes: on the hub's Vault (one read of
  the KV metadata) and on the edge's (nothing: an unchanged poll never reaches it), measured as the
  difference between a follower run of ``FOLLOWER_POLLS + 1`` polls and one of a single poll; and
  what one token adds at the hub (that single-poll run less one poll: its login, secret_id lookup,
  first data read and revocation, an upper bound of a login and a revoke);
* one pass of the hub's cert-sync CronJob while nothing changes (with its index it reads no edge's
  copy, so its bytes do not depend on the number of edges: ``programs.cert_sync.index``), and the
  part one edge certificate adds to the hourly verification pass (its KV read; the index's
  ``verifiedAt`` set back an hour to make the measured pass that one);
* one refresh of the edge's ``VaultStaticSecret`` (a KV read with the operator's token) and one
  login of its ``VaultAuth``;
* the probes' endpoints (``sys/health``, ``sys/seal-status``, ``sys/leader``), which Vault does not audit.

From the rates the stacks render (the hub CronJob's schedule and passes, the index's verification
interval, the edge follower's poll and its hub token's TTL, ``refreshAfter``, the VSO role's token
TTL) it derives the bytes per day each edge writes to its own audit volume and adds to the hub's, the
days until a volume of the stack's
``auditStorageSize`` would be full without rotation, and the days of history the rotated, compressed
files keep (``components/vault_audit.py``: archives up to ``MAX_USED_PERCENT`` of the volume,
compressed at the ratio measured on these very entries).
"""

from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path
from typing import Any

from bench.certsync import EDGE, Peers, force_verification, peers
from components.settings import quantity_bytes
from components.vault_audit import MAX_USED_PERCENT
from offline.secret_flow import cronjob_cadence, workload_cadence
from programs.cert_sync.follow import TOKEN_RESERVE_SECONDS
from programs.cert_sync.index import VERIFY_SECONDS
from rig.hub_edge import cert_sync_workload, k8s_object, run_cert_sync, vso_login
from rig.tls_vault import Vault

SECONDS_PER_DAY = 86400
#: The shipped hub has two edges; each figure "per edge" is what one of them adds.
SHIPPED_EDGES = 2
#: Hub sizes the lifetime table shows.
HUB_SIZES = (2, 10, 100, 1000)
#: Polls of the longer follower run (its steady polls are the difference to a one-poll run).
FOLLOWER_POLLS = 5


def _bytes(vault: Vault, action: Any) -> int:
    mark = vault.audit_mark()
    action()
    return vault.audit_mark() - mark


def _pass(p: Peers, side: str, polls: int = 1) -> None:
    """One hub pass, or an edge follower run of ``polls`` polls 0.2 s apart."""
    recording, vault, kube = (p.hub, p.hub_vault, p.hub_kube) if side == "hub" else (p.edge, p.edge_vault, p.edge_kube)
    poll = 0.2 if side == "edge" else None
    result = run_cert_sync(
        recording, vault.url, vault.ca_file, kube, p.workdir / f"audit-{side}", passes=polls, poll=poll
    )
    if result.returncode != 0:
        raise RuntimeError(f"the {side} cert-sync failed ({result.returncode}): {result.stderr.strip()}")


def _follower(p: Peers, runs: dict[str, list[int]]) -> None:
    """The follower's steady poll (hub and edge bytes) and what one token adds at the hub."""
    marks = p.hub_vault.audit_mark(), p.edge_vault.audit_mark()
    _pass(p, "edge")
    one = p.hub_vault.audit_mark() - marks[0], p.edge_vault.audit_mark() - marks[1]
    marks = p.hub_vault.audit_mark(), p.edge_vault.audit_mark()
    _pass(p, "edge", FOLLOWER_POLLS + 1)
    many = p.hub_vault.audit_mark() - marks[0], p.edge_vault.audit_mark() - marks[1]
    runs["edge_pass_hub"].append((many[0] - one[0]) // FOLLOWER_POLLS)
    runs["edge_pass_edge"].append((many[1] - one[1]) // FOLLOWER_POLLS)
    runs["edge_token_hub"].append(one[0] - (many[0] - one[0]) // FOLLOWER_POLLS)


def _kv_read_bytes(audit_log: Path, since: int, prefix: str = "kv/data/") -> list[int]:
    """Bytes of each request+response pair on a path under ``prefix`` written after ``since``."""
    with open(audit_log, "rb") as handle:
        handle.seek(since)
        lines = handle.read().splitlines(keepends=True)
    sizes: dict[str, int] = {}
    for line in lines:
        entry = json.loads(line)
        if str(entry["request"].get("path", "")).startswith(prefix):
            sizes[entry["request"]["id"]] = sizes.get(entry["request"]["id"], 0) + len(line)
    return list(sizes.values())


def measure(workdir: Path, reps: int = 3) -> dict[str, Any]:
    runs: dict[str, list[int]] = {
        "edge_pass_edge": [],
        "edge_pass_hub": [],
        "edge_token_hub": [],
        "hub_pass_hub": [],
        "hub_verify_certificate": [],
        "vso_refresh": [],
        "vso_login": [],
        "unaudited": [],
    }
    with peers(workdir, SHIPPED_EDGES) as p:
        _pass(p, "hub")
        _pass(p, "edge")  # first syncs done: what follows is the steady state
        login, read_path = vso_login(p.edge, p.edge_vault.url, p.edge_vault.ca_file, p.edge_kube)
        token = str(login.body["auth"]["client_token"])
        for _ in range(reps):
            _follower(p, runs)
            hub_mark = p.hub_vault.audit_mark()
            _pass(p, "hub")
            runs["hub_pass_hub"].append(p.hub_vault.audit_mark() - hub_mark)
            force_verification(p)
            hub_mark = p.hub_vault.audit_mark()
            _pass(p, "hub")
            runs["hub_verify_certificate"].append(
                int(statistics.median(_kv_read_bytes(p.hub_vault.audit_path, hub_mark, "kv/data/edges/")))
            )

            def refresh() -> None:
                resp = p.edge_vault.api("GET", read_path, token=token)
                if resp.status != 200:
                    raise RuntimeError(f"the VSO read of {read_path} failed: {resp.status} {resp.text}")

            runs["vso_refresh"].append(_bytes(p.edge_vault, refresh))
            runs["vso_login"].append(
                _bytes(p.edge_vault, lambda: vso_login(p.edge, p.edge_vault.url, p.edge_vault.ca_file, p.edge_kube))
            )

            def probes() -> None:
                for path in ("sys/health?standbyok=true", "sys/seal-status", "sys/leader"):
                    p.edge_vault.node.api("GET", path)

            runs["unaudited"].append(_bytes(p.edge_vault, probes))
        ratio = _compression(p.edge_vault)
        hub_ratio = _compression(p.hub_vault)
        rates = _rates(p)
        volume = quantity_bytes(_audit_storage_size(p))
        certificates = len(p.synced_paths)
        hub_static_secrets = len([o for o in p.hub.kubernetes_objects() if o["kind"] == "VaultStaticSecret"])
    per = {kind: float(statistics.median(values)) for kind, values in runs.items()}
    edge_day = (
        rates["edge_passes"] * per["edge_pass_edge"]
        + rates["vso_refreshes"] * per["vso_refresh"]
        + rates["vso_logins"] * per["vso_login"]
    )
    hub_day_per_edge = (
        rates["edge_passes"] * per["edge_pass_hub"]
        + rates["edge_tokens"] * per["edge_token_hub"]
        + rates["hub_verifications"] * per["hub_verify_certificate"]
    )
    # the hub's own load, whatever its edges: its cert-sync passes (with the index a pass reads no
    # edge's copy), and its VaultStaticSecrets (refreshes and logins as measured on the edge)
    hub_day_base = rates["hub_passes"] * per["hub_pass_hub"] + hub_static_secrets * (
        rates["vso_refreshes"] * per["vso_refresh"] + rates["vso_logins"] * per["vso_login"]
    )
    archive = volume * MAX_USED_PERCENT / 100
    hubs = {
        edges: {
            "bytes_per_day": hub_day_base + edges * hub_day_per_edge,
            "days_until_full_without_rotation": volume / (hub_day_base + edges * hub_day_per_edge),
            "days_kept_with_rotation": archive * hub_ratio / (hub_day_base + edges * hub_day_per_edge),
        }
        for edges in HUB_SIZES
    }
    return {
        "certificates_of_the_shipped_hub": certificates,
        "hub_static_secrets": hub_static_secrets,
        "hub_bytes_per_day_base": hub_day_base,
        "hubs": hubs,
        "reps": reps,
        "bytes": per,
        "runs": runs,
        "rates_per_day": rates,
        "compression_ratio": ratio,
        "hub_compression_ratio": hub_ratio,
        "audit_volume_bytes": volume,
        "edge_bytes_per_day": edge_day,
        "hub_bytes_per_day_per_edge": hub_day_per_edge,
        "edge_days_until_full_without_rotation": volume / edge_day,
        "edge_days_kept_with_rotation": archive * ratio / edge_day,
        "hub_days_until_full_without_rotation_per_edge": volume / hub_day_per_edge,
    }


def _compression(vault: Vault) -> float:
    """How much gzip (as the sidecar runs it) shrinks this server's audit log."""
    raw = vault.audit_path.read_bytes()
    return len(raw) / len(gzip.compress(raw, compresslevel=6))  # gzip(1)'s default level


def _rates(p: Peers) -> dict[str, float]:
    """Requests per day from what the stacks render: the hub's cert-sync CronJob (every minute, N
    passes), the edge's follower (a poll every ``--poll`` s, a hub token every token TTL less the
    follower's reserve), the edge's VaultStaticSecret (``refreshAfter``) and the VSO role's token TTL
    (one login each)."""
    cadence = cronjob_cadence(k8s_object(p.hub, "CronJob", "cert-sync")["spec"])
    if cadence.schedule != "* * * * *":
        raise RuntimeError(f"the hub cert-sync schedule {cadence.schedule!r} is not every minute")
    rates: dict[str, float] = {
        "hub_passes": 1440.0 * cadence.passes,
        "hub_verifications": SECONDS_PER_DAY / VERIFY_SECONDS,
    }
    follower = workload_cadence(k8s_object(p.edge, cert_sync_workload(p.edge), "cert-sync"))
    rates["edge_passes"] = SECONDS_PER_DAY / follower.max_gap
    approle = next(
        r for r in p.hub.of_type("vault:appRole/authBackendRole:AuthBackendRole") if r.inputs["roleName"] == EDGE
    )
    rates["edge_tokens"] = SECONDS_PER_DAY / (int(approle.inputs["tokenTtl"]) - TOKEN_RESERVE_SECONDS)
    refresh = str(k8s_object(p.edge, "VaultStaticSecret", "otel-client-tls")["spec"]["refreshAfter"])
    if not refresh.endswith("s"):
        raise RuntimeError(f"refreshAfter {refresh!r} is not in seconds")
    rates["vso_refreshes"] = SECONDS_PER_DAY / int(refresh[:-1])
    role_name = k8s_object(p.edge, "VaultAuth", "vault")["spec"]["kubernetes"]["role"]
    role = next(
        r
        for r in p.edge.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
        if r.inputs["roleName"] == role_name
    )
    rates["vso_logins"] = SECONDS_PER_DAY / int(role.inputs["tokenTtl"])
    return rates


def _audit_storage_size(p: Peers) -> str:
    release = next(r for r in p.edge.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault")
    return str(release.inputs["values"]["server"]["auditStorage"]["size"])


__all__ = ["EDGE", "measure"]
