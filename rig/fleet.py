"""A fleet of simulated edges against a real hub Vault, and what it costs the hub.

Each simulated edge does against the hub exactly what an edge does, and nothing else:

* its certificate follower: the product's own :class:`programs.cert_sync.follow.HubFollower`, with
  the edge's own AppRole credential (the role_id the hub declares, the secret_id its deploy identity
  created), its ``poll()`` called every :data:`~programs.cert_sync.follow.POLL_INTERVAL_SECONDS`;
* its Vault's transit seal, with the edge's own periodic seal token, as OpenBao's transit wrapper
  and seal run it (:class:`TransitSeal`, each request as the Go client sends it):

  - at start the wrapper renews the token once (``auth/token/renew-self``; openbao/go-kms-wrapping
    ``wrappers/transit/transit_client.go`` l. 185-219: "Renew the token immediately", then an
    ``api.LifetimeWatcher``), and the watcher renews again after 2/3 of the lease plus a third of
    its grace (openbao/openbao ``api/lifetime_watcher.go``, ``calculateSleepDuration``; the grace is
    10-20 % of the lease, ``calculateGrace``): with the 768 h period of the edges' seal tokens
    (``components.transit_unseal.TOKEN_PERIOD_SECONDS``) about every 22 days;
  - the seal's health check encrypts a heartbeat and decrypts it again every 10 minutes (every
    minute while unhealthy): openbao/openbao ``internal/vault/seal_autoseal.go``, ``StartHealthCheck``,
    with ``internal/helper/configutil/kms.go``'s defaults ``DefaultSealHealthCheckInterval = 10m``,
    ``...Unhealthy = 1m`` (the edge's ``seal "transit"`` stanza sets none of the ``health_check_*`` keys).

Time is compressed by a ``factor``: every schedule above runs ``factor`` times faster (a follower
polls every 75 s / factor), so N edges send the hub ``factor`` times the request rate of N real edges,
and a simulated hour takes 3600 / factor seconds. The follower is given the same compressed clock,
so that its own token lifetime runs on the simulated schedule too.

Measured (:func:`run_fleet`): the latency of every request each edge sends (from the request to the
whole answer read, connection set-up included: what the edge waits), its HTTP status, the generator's
own lag (how late each scheduled action started: a late generator would hide load), the hub server
processes' CPU time and resident memory from ``/proc``, the audit log bytes and requests the real
file device appended, and, on the real server, its token accessors and leases before and after
(``auth/token/accessors``, ``sys/leases/lookup``, listed with a token of :func:`census_token`).
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import http.client
import json
import os
import secrets
import ssl
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.transit_unseal import TOKEN_PERIOD_SECONDS
from components.vault_names import TRANSIT_MOUNT
from programs.cert_sync.follow import HubFollower
from programs.vault_http import HttpFailure, HttpReply, VaultHttp
from rig.openbao import api

#: The seal's health check (openbao ``configutil.DefaultSealHealthCheckInterval``): an encrypt and a decrypt.
SEAL_HEALTH_CHECK_SECONDS = 600.0
#: The lifetime watcher's first sleep for a lease of ``TOKEN_PERIOD_SECONDS`` (2/3 of it plus a third
#: of a grace of 10-20 %, taken at its middle, 15 %).
SEAL_RENEW_SECONDS = TOKEN_PERIOD_SECONDS * (2 / 3 + 0.15 / 3)
#: Seconds in a day, for per-day rates.
DAY = 86400.0

__all__ = [
    "SEAL_HEALTH_CHECK_SECONDS",
    "SEAL_RENEW_SECONDS",
    "Census",
    "EdgeCredential",
    "FleetResult",
    "ProcessSample",
    "Recorder",
    "TransitSeal",
    "census",
    "census_token",
    "percentile",
    "process_sample",
    "run_fleet",
]


# --------------------------------------------------------------------------------------------------
# recording what the edges see
# --------------------------------------------------------------------------------------------------
@dataclass
class Recorder:
    """Every request the fleet sends: ``(kind, seconds, status)``; status 0 is a request that got no
    answer (refused, reset, timed out). Thread-safe; ``enabled`` off during set-up."""

    samples: list[tuple[str, float, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    enabled: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float, status: int) -> None:
        if self.enabled:
            with self._lock:
                self.samples.append((kind, seconds, status))

    def fail(self, message: str) -> None:
        if self.enabled:
            with self._lock:
                self.failures.append(message)

    def lag(self, seconds: float) -> None:
        if self.enabled:
            with self._lock:
                self.lags.append(seconds)

    def clear(self) -> None:
        with self._lock:
            self.samples.clear()
            self.failures.clear()
            self.lags.clear()


def request_kind(method: str, path: str) -> str:
    """A short name for a request, for the per-kind table (``GET kv/metadata/...`` -> ``kv metadata``)."""
    parts = path.split("?")[0].strip("/").split("/")
    if parts[0] == "v1":
        parts = parts[1:]
    if len(parts) >= 3 and parts[0] == "auth" and parts[2] == "login":
        return "login"
    if len(parts) >= 5 and parts[0] == "auth" and parts[2] == "role":  # the follower's own secret_id
        return "approle " + "/".join(parts[4:])
    if parts[:2] == ["auth", "token"]:
        return parts[2] if len(parts) > 2 else "token"
    if len(parts) >= 2 and parts[1] in ("metadata", "data", "encrypt", "decrypt"):
        return f"{parts[0]} {parts[1]}"
    return f"{method} {'/'.join(parts[:2])}"


class TimedVaultHttp(VaultHttp):
    """The programs' own Vault client, timing every request it sends into a :class:`Recorder`."""

    def __init__(self, *args: Any, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder

    def send(self, method: str, target: str, **kwargs: Any) -> HttpReply:
        started = time.perf_counter()
        try:
            reply = super().send(method, target, **kwargs)
        except HttpFailure:
            self.recorder.add(request_kind(method, target), time.perf_counter() - started, 0)
            raise
        self.recorder.add(request_kind(method, target), time.perf_counter() - started, reply.status)
        return reply


# --------------------------------------------------------------------------------------------------
# the edge's transit seal
# --------------------------------------------------------------------------------------------------
class TransitSeal:
    """What an edge Vault's ``seal "transit"`` sends to the hub with the edge's seal token.

    Each operation opens one connection and sends its requests over it: Go's pooled transport keeps
    an idle connection 90 s (``IdleConnTimeout``), shorter than the seal's 10-minute health check and
    its renewals, so every check or renewal starts with a new TLS connection, as here."""

    def __init__(self, url: str, ca_file: str, key_name: str, token: str, recorder: Recorder) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 443
        self.context = ssl.create_default_context(cafile=ca_file)
        self.key_name, self.token, self.recorder = key_name, token, recorder

    def _post(self, conn: http.client.HTTPSConnection, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        headers = {"X-Vault-Token": self.token, "X-Vault-Request": "true", "Content-Type": "application/json"}
        started = time.perf_counter()
        try:
            conn.request("POST", f"/v1/{path}", body=json.dumps(body), headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.recorder.add(request_kind("POST", path), time.perf_counter() - started, 0)
            raise ConnectionError(f"POST {path}: {type(exc).__name__}: {exc}") from None
        self.recorder.add(request_kind("POST", path), time.perf_counter() - started, response.status)
        if response.status != 200:
            raise ConnectionError(f"POST {path}: HTTP {response.status}: {raw[:200]!r}")
        answer: dict[str, Any] = json.loads(raw)
        return answer

    @contextlib.contextmanager
    def _connection(self) -> Iterator[http.client.HTTPSConnection]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
        try:
            yield conn
        finally:
            conn.close()

    def renew(self) -> None:
        """``RenewTokenAsSelf(token, 0)``: ``PUT auth/token/renew-self`` with increment 0."""
        with self._connection() as conn:
            self._post(conn, "auth/token/renew-self", {"increment": 0})

    def health_check(self) -> None:
        """``StartHealthCheck``'s tick: encrypt ``Heartbeat <n>``, decrypt it, compare."""
        plaintext = base64.b64encode(f"Heartbeat {secrets.randbelow(1000)}".encode()).decode()
        with self._connection() as conn:
            sealed = self._post(conn, f"{TRANSIT_MOUNT}/encrypt/{self.key_name}", {"plaintext": plaintext})
            ciphertext = sealed["data"]["ciphertext"]
            opened = self._post(conn, f"{TRANSIT_MOUNT}/decrypt/{self.key_name}", {"ciphertext": ciphertext})
        if opened["data"]["plaintext"] != plaintext:
            raise ConnectionError("the seal health test value did not decrypt to itself")


# --------------------------------------------------------------------------------------------------
# the hub's processes and its token and lease counts
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessSample:
    """CPU seconds (user + system) and resident memory (bytes) of some processes at one moment."""

    at: float
    cpu_seconds: float
    rss_bytes: int


_TICKS = os.sysconf("SC_CLK_TCK")


def process_sample(pids: Sequence[int]) -> ProcessSample:
    """``/proc/<pid>/stat`` (utime + stime) and ``/proc/<pid>/status`` (``VmRSS``), summed over ``pids``."""
    cpu, rss = 0.0, 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of proc(5)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
    return ProcessSample(time.monotonic(), cpu, rss)


#: The census policy: list (with ``sudo``, which both endpoints require) token accessors and leases.
CENSUS_POLICY = """path "auth/token/accessors" { capabilities = ["list", "sudo"] }
path "auth/token/accessors/" { capabilities = ["list", "sudo"] }
path "sys/leases/lookup" { capabilities = ["list", "sudo"] }
path "sys/leases/lookup/*" { capabilities = ["list", "sudo"] }
"""
CENSUS_NAME = "fleet-census"


def census_token(url: str, ca_file: str, admin_token: str) -> str:
    """A token that may list the hub's token accessors and leases (``sudo``, which the stack's admin
    policy leaves out): the admin login writes a policy and a token role for it, and mints one token
    through that role (Vault's rule for token roles: the creator need not hold the policy)."""

    def ok(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = api(url, method, path, token=admin_token, body=body, ca_file=ca_file, timeout=30)
        if resp.status not in (200, 204):
            raise RuntimeError(f"census set-up: {method} {path} -> {resp.status} {resp.text}")
        return resp.body if resp.status == 200 else {}

    ok("PUT", f"sys/policies/acl/{CENSUS_NAME}", {"policy": CENSUS_POLICY})
    ok("POST", f"auth/token/roles/{CENSUS_NAME}", {"allowed_policies": [CENSUS_NAME], "orphan": True})
    answer = ok("POST", f"auth/token/create/{CENSUS_NAME}", {"policies": [CENSUS_NAME], "ttl": "24h"})
    return str(answer["auth"]["client_token"])


@dataclass(frozen=True)
class Census:
    """The hub's token accessors and leases at one moment; leases by the prefix they were issued under."""

    accessors: int
    leases: dict[str, int]

    @property
    def lease_total(self) -> int:
        return sum(self.leases.values())


def _listed(url: str, ca_file: str, token: str, path: str) -> list[str]:
    resp = api(url, "LIST", path, token=token, ca_file=ca_file, timeout=60)
    if resp.status == 404:
        return []
    if resp.status != 200:
        raise RuntimeError(f"census: LIST {path} -> {resp.status} {resp.text}")
    return [str(k) for k in resp.data.get("keys", [])]


def census(url: str, ca_file: str, token: str) -> Census:
    """Count, on the real server, every token accessor and every lease (walking ``sys/leases/lookup``);
    leases are grouped by their issuing path without the edge name (``auth/approle-edges/login``)."""
    accessors = len(_listed(url, ca_file, token, "auth/token/accessors"))
    leases: dict[str, int] = {}
    pending = [""]
    while pending:
        prefix = pending.pop()
        for key in _listed(url, ca_file, token, f"sys/leases/lookup/{prefix}"):
            if key.endswith("/"):
                pending.append(prefix + key)
            else:
                group = prefix.rstrip("/")
                leases[group] = leases.get(group, 0) + 1
    return Census(accessors, _grouped(leases))


def _grouped(leases: Mapping[str, int]) -> dict[str, int]:
    """``auth/token/create/transit-unseal-edge-007`` -> ``auth/token/create/transit-unseal-*``."""
    grouped: dict[str, int] = {}
    for prefix, count in leases.items():
        parts = prefix.split("/")
        if len(parts) >= 4 and parts[:3] == ["auth", "token", "create"]:
            prefix = "/".join(parts[:3]) + "/" + parts[3].split("-edge")[0] + "-*"
        grouped[prefix] = grouped.get(prefix, 0) + count
    return dict(sorted(grouped.items()))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


# --------------------------------------------------------------------------------------------------
# the fleet
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EdgeCredential:
    """What an edge holds for the hub: its name, its AppRole role_id and secret_id, its seal token."""

    name: str
    role_id: str
    secret_id: str
    transit_token: str


class CompressedClock:
    """Wall-clock seconds that run ``factor`` times faster from now on (a simulated clock): the
    follower keeps its token's and secret_id's deadlines in it."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.wall, self.start = time.time(), time.monotonic()

    def __call__(self) -> float:
        return self.wall + (time.monotonic() - self.start) * self.factor


@dataclass
class SimulatedEdge:
    credential: EdgeCredential
    follower: HubFollower
    seal: TransitSeal
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Schedule:
    """Due actions ordered by time (real seconds on the monotonic clock)."""

    heap: list[tuple[float, int, int, str]] = field(default_factory=list)
    seq: int = 0

    def push(self, due: float, edge: int, action: str) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (due, self.seq, edge, action))

    def pop_due(self, now: float) -> list[tuple[float, int, str]]:
        due: list[tuple[float, int, str]] = []
        while self.heap and self.heap[0][0] <= now:
            when, _, edge, action = heapq.heappop(self.heap)
            due.append((when, edge, action))
        return due

    def next_due(self) -> float | None:
        return self.heap[0][0] if self.heap else None


@dataclass
class FleetResult:
    """What one run of the fleet measured (see :func:`run_fleet`)."""

    edges: int
    factor: float
    simulated_seconds: float
    real_seconds: float
    samples: list[tuple[str, float, int]]
    failures: list[str]
    lags: list[float]
    cpu_seconds: float
    rss_bytes: int
    rss_peak_bytes: int
    generator_cpu_seconds: float
    audit_bytes: int
    audit_requests: int
    census_before: Census
    census_after: Census
    polls: int
    health_checks: int
    renewals: int
    skipped: int = 0
    #: Per request kind: ``count``, ``p50_ms``, ``p99_ms``.
    per_kind: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def latencies(self) -> list[float]:
        return [s for _, s, _ in self.samples]

    @property
    def errors(self) -> int:
        return sum(1 for _, _, status in self.samples if status == 0 or status >= 400) + len(self.failures)

    def summary(self) -> dict[str, Any]:
        latencies = self.latencies
        requests = len(self.samples)
        return {
            "edges": self.edges,
            "factor": self.factor,
            "simulated_seconds": self.simulated_seconds,
            "real_seconds": self.real_seconds,
            "requests": requests,
            "requests_per_second": requests / self.real_seconds if self.real_seconds else 0.0,
            "requests_per_edge_per_minute": requests / self.edges / (self.simulated_seconds / 60),
            "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99),
            "max_ms": 1000 * max(latencies, default=0.0),
            "mean_ms": 1000 * statistics.fmean(latencies) if latencies else 0.0,
            "errors": self.errors,
            "error_rate": self.errors / requests if requests else 0.0,
            "failures": self.failures[:10],
            "lag_p99_ms": 1000 * percentile(self.lags, 99),
            "hub_cpu_percent": 100 * self.cpu_seconds / self.real_seconds if self.real_seconds else 0.0,
            "hub_rss_mib": self.rss_bytes / 2**20,
            "hub_rss_peak_mib": self.rss_peak_bytes / 2**20,
            "generator_cpu_percent": 100 * self.generator_cpu_seconds / self.real_seconds,
            "audit_bytes": self.audit_bytes,
            "audit_requests": self.audit_requests,
            "audit_requests_per_edge_per_minute": self.audit_requests / self.edges / (self.simulated_seconds / 60),
            "audit_bytes_per_edge_per_day": self.audit_bytes / self.edges / (self.simulated_seconds / DAY),
            "census_before": {"accessors": self.census_before.accessors, "leases": self.census_before.leases},
            "census_after": {"accessors": self.census_after.accessors, "leases": self.census_after.leases},
            "polls": self.polls,
            "health_checks": self.health_checks,
            "renewals": self.renewals,
            "skipped": self.skipped,
            "per_kind": self.per_kind,
        }


def make_follower(
    hub: VaultHttp, credential: EdgeCredential, *, approle_mount: str, kv_mount: str, clock: Callable[[], float]
) -> HubFollower:
    """The product's follower of ``credential``'s edge, as the edge's Deployment runs it: with a place
    to store a replaced secret_id (the edge's Kubernetes Secret there, a variable here), so it looks
    its secret_id up once and replaces it at 2/3 of its TTL; on ``clock`` (the compressed one)."""
    stored: list[str] = []
    return HubFollower(
        hub,
        approle_mount=approle_mount,
        role_id=credential.role_id,
        secret_id=credential.secret_id,
        kv_mount=kv_mount,
        edge=credential.name,
        store_secret_id=stored.append,
        clock=clock,
    )


@dataclass
class FleetHub:
    """Where the fleet sends its requests and what it measures there."""

    url: str
    ca_file: str
    pids: list[int]
    audit_path: Path
    census_token: str
    approle_mount: str
    kv_mount: str
    server_name: str | None = None


class _Runner:
    """Runs every edge's actions on schedule with a pool of threads; one action of an edge at a time."""

    def __init__(self, edges: list[SimulatedEdge], intervals: Mapping[str, float], recorder: Recorder) -> None:
        self.edges, self.intervals, self.recorder = edges, intervals, recorder
        self.schedule = Schedule()
        self.counts: dict[str, int] = dict.fromkeys(intervals, 0)
        self.lock = threading.Lock()
        #: (edge, action) submitted and not finished; ``skipped``: due while still busy (not sent twice).
        self.busy: set[tuple[int, str]] = set()
        #: Edges whose first poll (login, secret_id lookup, data read) is done: the warm-up.
        self.polled: set[int] = set()
        self.skipped = 0
        self.stop_at = float("inf")
        self.thread = threading.Thread(target=self._loop, name="fleet-scheduler", daemon=True)
        self.pool = ThreadPoolExecutor(max_workers=min(128, max(4, len(edges) // 4)), thread_name_prefix="edge")

    def start(self, phases: Mapping[str, Callable[[int], float]]) -> None:
        now = time.monotonic()
        for i in range(len(self.edges)):
            for action, phase in phases.items():
                self.schedule.push(now + phase(i), i, action)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            if now >= self.stop_at:
                return
            for due, i, action in self.schedule.pop_due(now):
                self.schedule.push(due + self.intervals[action], i, action)
                with self.lock:
                    if (i, action) in self.busy:  # a real edge does not catch up: the next one is late
                        self.skipped += 1
                        continue
                    self.busy.add((i, action))
                self.pool.submit(self._run, due, i, action)
            upcoming = self.schedule.next_due()
            time.sleep(max(0.0005, min(0.05, (upcoming or now + 0.05) - time.monotonic())))

    def _run(self, due: float, i: int, action: str) -> None:
        edge = self.edges[i]
        with edge.lock:
            self.recorder.lag(time.monotonic() - due)
            try:
                if action == "poll":
                    edge.follower.poll()
                elif action == "health":
                    edge.seal.health_check()
                else:
                    edge.seal.renew()
            except Exception as exc:  # every failure is counted and shown, none stops the fleet
                self.recorder.fail(f"{edge.credential.name} {action}: {type(exc).__name__}: {exc}")
        with self.lock:
            self.counts[action] += 1
            self.busy.discard((i, action))
            if action == "poll":
                self.polled.add(i)

    def stop(self) -> None:
        self.stop_at = time.monotonic()
        self.thread.join(timeout=60)
        self.pool.shutdown(wait=True)


def _audit_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _audit_requests(path: Path, since: int, until: int) -> int:
    with open(path, "rb") as handle:
        handle.seek(since)
        chunk = handle.read(until - since)
    return sum(1 for line in chunk.splitlines() if b'"type":"request"' in line)


def build_edges(
    hub: FleetHub, credentials: Sequence[EdgeCredential], recorder: Recorder, clock: Callable[[], float]
) -> list[SimulatedEdge]:
    edges = []
    for credential in credentials:
        http_client = TimedVaultHttp(
            hub.url, hub.ca_file, recorder=recorder, label="hub Vault", server_name=hub.server_name
        )
        follower = make_follower(
            http_client, credential, approle_mount=hub.approle_mount, kv_mount=hub.kv_mount, clock=clock
        )
        seal = TransitSeal(hub.url, hub.ca_file, credential.name, credential.transit_token, recorder)
        edges.append(SimulatedEdge(credential, follower, seal))
    return edges


def run_fleet(
    hub: FleetHub,
    credentials: Sequence[EdgeCredential],
    *,
    factor: float,
    simulated_seconds: float,
    poll_seconds: float,
    progress: Callable[[str], None] = lambda message: None,
) -> FleetResult:
    """Run ``credentials``' edges against ``hub`` for ``simulated_seconds`` of simulated time at
    ``factor``, after a warm-up of one poll interval (every edge's first poll, spread over it, not
    measured); every edge's actions start at random phases of their intervals. Returns what was
    measured over the run (not the warm-up), then closes every follower (revoking its token)."""
    recorder = Recorder()
    edges = build_edges(hub, credentials, recorder, CompressedClock(factor))
    rng = secrets.SystemRandom()
    intervals = {
        "poll": poll_seconds / factor,
        "health": SEAL_HEALTH_CHECK_SECONDS / factor,
        "renew": SEAL_RENEW_SECONDS / factor,
    }
    runner = _Runner(edges, intervals, recorder)
    warmup = intervals["poll"]
    runner.start(
        {
            "poll": lambda i: rng.uniform(0, intervals["poll"]),
            "health": lambda i: rng.uniform(0, intervals["health"]),
            "renew": lambda i: rng.uniform(0, intervals["renew"]),
        }
    )
    try:
        warm_start = time.monotonic()
        time.sleep(warmup)
        deadline = time.monotonic() + 120
        while len(runner.polled) < len(edges) and time.monotonic() < deadline:
            time.sleep(0.1)
        progress(
            f"{len(runner.polled)} of {len(edges)} edges warmed up in {time.monotonic() - warm_start:.1f} s; "
            f"measuring {simulated_seconds / factor:.0f} s"
        )
        before = census(hub.url, hub.ca_file, hub.census_token)
        recorder.clear()
        counts_before, skipped_before = dict(runner.counts), runner.skipped
        mark, sample, own = _audit_size(hub.audit_path), process_sample(hub.pids), time.process_time()
        started = time.monotonic()
        peak = _sleep_sampling(hub.pids, started + simulated_seconds / factor)
        recorder.enabled = False
        end_sample, end_mark, own_end = process_sample(hub.pids), _audit_size(hub.audit_path), time.process_time()
        real = time.monotonic() - started
    finally:
        runner.stop()
    after = census(hub.url, hub.ca_file, hub.census_token)
    samples, failures, lags = list(recorder.samples), list(recorder.failures), list(recorder.lags)
    _close(edges)
    by_kind: dict[str, list[float]] = {}
    for kind, seconds, _ in samples:
        by_kind.setdefault(kind, []).append(seconds)
    per_kind = {
        kind: {"count": len(v), "p50_ms": 1000 * percentile(v, 50), "p99_ms": 1000 * percentile(v, 99)}
        for kind, v in by_kind.items()
    }
    return FleetResult(
        edges=len(edges),
        factor=factor,
        simulated_seconds=real * factor,
        real_seconds=real,
        samples=samples,
        failures=failures,
        lags=lags,
        cpu_seconds=end_sample.cpu_seconds - sample.cpu_seconds,
        rss_bytes=end_sample.rss_bytes,
        rss_peak_bytes=max(peak, end_sample.rss_bytes),
        generator_cpu_seconds=own_end - own,
        audit_bytes=end_mark - mark,
        audit_requests=_audit_requests(hub.audit_path, mark, end_mark),
        census_before=before,
        census_after=after,
        polls=runner.counts["poll"] - counts_before["poll"],
        health_checks=runner.counts["health"] - counts_before["health"],
        renewals=runner.counts["renew"] - counts_before["renew"],
        skipped=runner.skipped - skipped_before,
        per_kind=dict(sorted(per_kind.items())),
    )


def _sleep_sampling(pids: Sequence[int], until: float) -> int:
    """Sleep until ``until``, sampling the processes' resident memory every second; the largest sum."""
    peak = 0
    while (left := until - time.monotonic()) > 0:
        peak = max(peak, process_sample(pids).rss_bytes)
        time.sleep(min(1.0, left))
    return peak


def _close(edges: Sequence[SimulatedEdge]) -> None:
    """Every follower's ``close()`` (revokes its token), a few at a time."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        for edge in edges:
            pool.submit(edge.follower.close)
