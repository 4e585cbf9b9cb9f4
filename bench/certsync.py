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

Per repetition: a full sync (every hub path and the pass's index deleted first, so every certificate
is written), a no-op run (nothing changed: its writes are counted in the hub's audit log; with the
index it reads no copy, ``programs.cert_sync.index``), the hourly verification (the index's
``verifiedAt`` set an hour back: the pass reads every copy, writes the index), and a renewal (one
edge's Secret replaced, then the hub run that writes it and the edge follower's poll that pulls it:
the two run times of the rotation delay).

Then the edge's follower itself (:func:`follower_cost`, :func:`propagation`):

* its cost at the hub while nothing changes, counted in the hub's real audit log (its AppRole logins
  and every request made with a token of its policy): a run of ``FOLLOWER_POLLS + 1`` polls less a
  run of one poll is ``FOLLOWER_POLLS`` unchanged polls; with the shipped poll and token lifetime
  that gives the requests per edge per minute (polls, plus a login and a revoke per token);
* the end-to-end propagation with the shipped intervals: the hub's CronJob command started every 60 s
  as the CronJob controller would (three passes, 20 s apart), the edge's follower running with its
  shipped 75 s poll; the edge's Secret renewed on the hub's Kubernetes API at a random moment, and the
  time measured until the edge Vault holds the new certificate (read with the edge's root token every
  0.2 s: the hub sees none of it).
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.evaluation import hub_config
from components.cert_sync_cadence import EDGE_TOKEN_TTL_SECONDS, FOLLOW_POLL_SECONDS
from components.vault_names import EDGE_APPROLE_MOUNT
from offline.engine import RecordedResource, Recording, run_program
from programs.cert_sync.follow import TOKEN_RESERVE_SECONDS
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
    start_cert_sync,
)
from rig.kube_api import KubeAPIServer
from rig.pki import TestCA
from rig.tls_vault import Vault, initialise, start_vault

EDGE = "edge-eu"
#: Unchanged polls of the cost measurement, and their interval there (the count does not depend on it).
FOLLOWER_POLLS = 10
FOLLOWER_BENCH_POLL = 0.5
#: How long one propagation may take before the measurement fails (the target is 120 s).
PROPAGATION_DEADLINE = 240.0
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
    #: The hub pass's index (``--index``), bookkeeping beside the synced paths.
    index_path: str


def force_verification(p: Peers) -> None:
    """Make the next hub pass the hourly one: the index's ``verifiedAt`` an hour and more back (as root)."""
    stored = p.hub_vault.kv(p.index_path)
    if stored is None:
        raise RuntimeError(f"no index at kv/{p.index_path}: has the hub's cert-sync run?")
    p.hub_vault.put(p.index_path, {**stored, "verifiedAt": "2000-01-01T00:00:00Z"})


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
        yield Peers(hub, edge, hub_vault, edge_vault, hub_kube, edge_kube, paths, pki, workdir, options.index)


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
    runs: dict[str, list[Run]] = {"full": [], "noop": [], "verify": [], "rotation_hub": [], "rotation_edge": []}
    with peers(workdir, edges) as p:
        certificates = len(p.synced_paths)
        for _ in range(reps):
            for path in [*p.synced_paths, p.index_path]:
                p.hub_vault.api("DELETE", f"kv/metadata/{path}")
            runs["full"].append(_run(p, "hub"))
            runs["noop"].append(_run(p, "hub"))
            force_verification(p)
            runs["verify"].append(_run(p, "hub"))
            renewed = p.pki.renew_client(EDGE).secret_data
            p.hub_kube.put_secret("fedobs-pki", f"otel-client-tls-{EDGE}", renewed, type="kubernetes.io/tls")
            runs["rotation_hub"].append(_run(p, "hub"))
            runs["rotation_edge"].append(_run(p, "edge"))
            delivered = p.edge_vault.kv("otel/otel-client-tls") or {}
            if delivered.get("tls.crt") != renewed["tls.crt"]:
                raise RuntimeError("the renewed certificate did not reach the edge Vault")

        follower = follower_cost(p)
        end_to_end = propagation(p, min(reps, 3))

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
        "noop_vault_requests": median("noop", "vault_requests"),
        "verify_seconds": median("verify", "seconds"),
        "verify_writes": median("verify", "vault_writes"),
        "verify_vault_requests_per_certificate": median("verify", "vault_requests") / certificates,
        "rotation_hub_seconds": median("rotation_hub", "seconds"),
        "rotation_hub_writes": median("rotation_hub", "vault_writes"),
        "rotation_edge_seconds": median("rotation_edge", "seconds"),
        "rotation_edge_writes": median("rotation_edge", "vault_writes"),
        "runs": {kind: [vars(r) for r in items] for kind, items in runs.items()},
        "follower": follower,
        "propagation": end_to_end,
    }


# ---------------------------------------------------------------------------------------------
# the edge's follower
# ---------------------------------------------------------------------------------------------
def follower_requests(vault: Vault, since: int, edge: str = EDGE) -> dict[str, int]:
    """The follower's requests at the hub after ``since``, by path, from the real audit log: its
    AppRole logins and every request made with a token carrying its policy (``hub-access-<edge>``)."""
    policy, login = f"hub-access-{edge}", f"auth/{EDGE_APPROLE_MOUNT}/login"
    with open(vault.audit_path, "rb") as handle:
        handle.seek(since)
        entries = [json.loads(line) for line in handle.read().splitlines() if line.strip()]
    counts: dict[str, int] = {}
    for entry in entries:
        if entry.get("type") != "request":
            continue
        path, policies = str(entry["request"].get("path")), (entry.get("auth") or {}).get("policies") or []
        if path == login or policy in policies:
            counts[path] = counts.get(path, 0) + 1
    return counts


def _follow(p: Peers, polls: int) -> dict[str, int]:
    mark = p.hub_vault.audit_mark()
    run = run_cert_sync(
        p.edge,
        p.edge_vault.url,
        p.edge_vault.ca_file,
        p.edge_kube,
        p.workdir / "follow",
        passes=polls,
        poll=FOLLOWER_BENCH_POLL,
    )
    if run.returncode != 0:
        raise RuntimeError(f"the edge follower failed ({run.returncode}): {run.stderr.strip()}")
    return follower_requests(p.hub_vault, mark)


def follower_cost(p: Peers) -> dict[str, Any]:
    """Hub requests of the follower while nothing changes (module docstring)."""
    one, many = _follow(p, 1), _follow(p, FOLLOWER_POLLS + 1)
    per_poll = (sum(many.values()) - sum(one.values())) / FOLLOWER_POLLS
    per_token = many.get(f"auth/{EDGE_APPROLE_MOUNT}/login", 0) + many.get("auth/token/revoke-self", 0)
    tokens_per_minute = 60 / (EDGE_TOKEN_TTL_SECONDS - TOKEN_RESERVE_SECONDS)
    return {
        "polls": FOLLOWER_POLLS,
        "requests_one_poll_run": one,
        "requests_many_poll_run": many,
        "per_unchanged_poll": per_poll,
        "per_token": per_token,
        "poll_seconds": FOLLOW_POLL_SECONDS,
        "token_seconds": EDGE_TOKEN_TTL_SECONDS - TOKEN_RESERVE_SECONDS,
        "per_minute": per_poll * 60 / FOLLOW_POLL_SECONDS + per_token * tokens_per_minute,
    }


class _HubCron:
    """The hub's cert-sync CronJob on its schedule: its command (three passes, 20 s apart) started
    every 60 s, each run stopped before the next as ``activeDeadlineSeconds`` would."""

    def __init__(self, p: Peers) -> None:
        self.p, self.stop, self.runs = p, threading.Event(), 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            workdir = self.p.workdir / "cron" / str(self.runs)
            workdir.mkdir(parents=True, exist_ok=True)
            run = start_cert_sync(
                self.p.hub, self.p.hub_vault.url, self.p.hub_vault.ca_file, self.p.hub_kube, workdir, passes=None
            )
            self.runs += 1
            self.stop.wait(55)
            _end(run)
            self.stop.wait(max(0.0, started + 60 - time.monotonic()))

    def __enter__(self) -> _HubCron:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def _end(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _until_edge_holds(p: Peers, certificate: str, deadline: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        held = p.edge_vault.kv("otel/otel-client-tls") or {}
        if held.get("tls.crt") == certificate:
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"the renewed certificate did not reach the edge Vault within {deadline:g} s")


def propagation(p: Peers, reps: int, seed: int = 21) -> dict[str, Any]:
    """End to end with the shipped intervals (module docstring): seconds from a changed hub Secret
    until the edge Vault holds it, ``reps`` times at random moments."""
    chooser = random.Random(seed)  # noqa: S311 - when to change the Secret, not a secret
    workdir = p.workdir / "follower"
    workdir.mkdir(parents=True, exist_ok=True)
    seconds: list[float] = []
    with _HubCron(p) as cron:
        follower = start_cert_sync(p.edge, p.edge_vault.url, p.edge_vault.ca_file, p.edge_kube, workdir, passes=None)
        try:
            current = p.pki.client(EDGE).secret_data["tls.crt"]
            _until_edge_holds(p, current, PROPAGATION_DEADLINE)  # the follower's first poll applied it
            mark = p.hub_vault.audit_mark()
            started = time.monotonic()
            for _ in range(reps):
                time.sleep(chooser.uniform(0, FOLLOW_POLL_SECONDS))
                renewed = p.pki.renew_client(EDGE).secret_data
                p.hub_kube.put_secret("fedobs-pki", f"otel-client-tls-{EDGE}", renewed, type="kubernetes.io/tls")
                seconds.append(_until_edge_holds(p, renewed["tls.crt"], PROPAGATION_DEADLINE))
            window = time.monotonic() - started
            requests = follower_requests(p.hub_vault, mark)
        finally:
            _end(follower)
        log = (workdir / "cert-sync.log").read_text()
        failures = [
            line
            for line in log.splitlines()
            if line.startswith("cert-sync: error:") and line != "cert-sync: error: terminated by SIGTERM"
        ]
        if failures:  # SIGTERM is how it was stopped
            raise RuntimeError(f"the edge follower reported a failure: {failures}")
    return {
        "reps": reps,
        "seconds": seconds,
        "max_seconds": max(seconds),
        "median_seconds": statistics.median(seconds),
        "hub_cron_runs": cron.runs,
        "window_seconds": window,
        "follower_requests_in_window": requests,
        "poll_seconds": FOLLOW_POLL_SECONDS,
    }


# ---------------------------------------------------------------------------------------------
# what bench/run.py shows of it
# ---------------------------------------------------------------------------------------------
#: Issue 21's targets: hub requests per edge per minute when nothing changed; a changed hub Secret in
#: the edge Vault (end to end, real servers, shipped intervals).
REQUESTS_PER_MINUTE_LIMIT = 1.0
PROPAGATION_LIMIT_SECONDS = 120.0


def follower_lines(result: dict[str, Any]) -> list[str]:
    cost, end = result["follower"], result["propagation"]
    seconds = ", ".join(f"{s:.1f}" for s in end["seconds"])
    return [
        "",
        f"**The edge's follower, nothing changed:** {cost['per_unchanged_poll']:.2f} hub requests per poll "
        f"({cost['polls']} unchanged polls, counted in the hub's audit log: a run of {cost['polls'] + 1} polls less a "
        f"run of one), {cost['per_token']} per token (login, revoke); with the shipped poll "
        f"({cost['poll_seconds']} s) and token ({cost['token_seconds']} s of use) **{cost['per_minute']:.2f} hub "
        "requests per edge per minute** (before the follower: 3 passes x 3 = 9).",
        "",
        f"**End to end, shipped intervals:** the hub's CronJob command every 60 s (3 passes, 20 s apart), the "
        f"follower polling every {end['poll_seconds']} s, the edge's Secret renewed {end['reps']} times at random "
        f"moments: the edge Vault held it after {seconds} s (**max {end['max_seconds']:.1f} s**). The follower's "
        f"hub requests in those {end['window_seconds']:.0f} s: {end['follower_requests_in_window']}.",
    ]


def follower_targets(result: dict[str, Any], target: Any) -> list[Any]:
    return [
        target(
            "hub requests per edge per minute, nothing changed",
            result["follower"]["per_minute"],
            "<=",
            REQUESTS_PER_MINUTE_LIMIT,
        ),
        target(
            "hub Secret -> edge Vault, end to end (max)",
            result["propagation"]["max_seconds"],
            "<=",
            PROPAGATION_LIMIT_SECONDS,
            " s",
        ),
    ]


def rotation_rows(delay: Any, hub: Any, edge: Any, refresh: str, measured: dict[str, Any] | None) -> list[list[Any]]:
    """The rows of bench/run.py's rotation table (``offline.secret_flow`` figures)."""
    rows: list[list[Any]] = [
        [
            "hub cert-sync: longest gap between passes",
            f"{hub.passes} passes, {hub.interval} s apart, `{hub.schedule}`",
            delay.hub_sync_gap,
        ],
        [
            "hub cert-sync: one pass (measured, 100 edges)" if measured else "hub cert-sync: one pass",
            "renewal run" if measured else "not measured",
            f"{delay.hub_sync_run:.2f}",
        ],
        ["edge follower: poll", f"`--poll {edge.max_gap}`", delay.edge_sync_gap],
        [
            "edge follower: one poll that applies" + (" (measured)" if measured else ""),
            "renewal run" if measured else "not measured",
            f"{delay.edge_sync_run:.2f}",
        ],
        ["**to the edge Vault**", "the 2-minute target", f"**{delay.to_edge_vault:.1f}**"],
        ["VSO refresh", f"`refreshAfter: {refresh}`", delay.vso_refresh],
        ["**worst case**", "renewal → edge Secret updated → restart", f"**{delay.total:.1f}**"],
    ]
    if measured:
        rows.insert(
            5, ["measured end to end (max)", "hub Secret → edge Vault", f"{measured['propagation']['max_seconds']:.1f}"]
        )
    return rows
