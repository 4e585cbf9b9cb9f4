"""The hub under a fleet: a 3-node TLS Raft OpenBao cluster with the hub's own configuration for N
edges, driven by N simulated edges (``rig.fleet``), for each N of the sweep.

Per N, everything is the stack's own, made real on loopback by the rig:

1. the hub evaluated by the offline engine with N edges (``bench.evaluation.hub_config``: the shipped
   ``edge-eu``, ``edge-ap``, then ``edge-003``...), its deploy identities trusting a test key;
2. its rendered server HCL (with its audit devices in OpenBao's config form) on three loopback nodes
   with a certificate carrying the stack's SANs, bootstrapped by the stack's own Job command
   (``rig.hub_edge.run_bootstrap_job``), then the Job's admin login;
3. its Vault configuration applied by the rig's applier with the provider's calls
   (``bench.certsync.cert_sync_configuration``: everything but the database and AWS engines, which
   need servers no edge talks to; Kubernetes auth against the loopback API stand-in);
4. for every edge what its own ``pulumi up`` does on the hub: the deploy login with a JWT for its
   subject, then its ``HubLink``'s Vault resources (its seal token, its AppRole secret_id) applied
   with that login. The edge stack is evaluated for ``edge-eu`` with the real hub's outputs; the other
   edges' resources are that ``HubLink``'s with the edge name replaced, checked equal, field by field,
   to a second evaluation of the edge stack as ``edge-ap`` (evaluating the edge program once per edge
   would take about 1.5 s each);
5. the fleet run (``rig.fleet.run_fleet``) against the active node.

Each stage is timed (``setup`` in the result): applying the configuration of 1000 edges is what a
``pulumi up`` of such a hub sends, one call after the other.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.certsync import cert_sync_configuration
from bench.evaluation import edge_names, hub_config
from components.vault_config import edge_role_id
from components.vault_names import DEFAULT_KV_MOUNT, EDGE_APPROLE_MOUNT
from offline.engine import RecordedResource, Recording, load_stack_file, run_program
from offline.secret_flow import cronjob_cadence
from rig.applier import VaultApplier
from rig.deploy_identity import DeployKey, deploy_token, edge_jwt, trusting
from rig.fleet import EdgeCredential, FleetHub, census_token, run_fleet
from rig.hub_edge import (
    admin_token,
    cert_sync_command,
    issue_pki,
    k8s_object,
    kubernetes_auth_overrides,
    openbao_pod_hcl,
    publish_pki,
    real_hub_outputs,
    run_bootstrap_job,
    run_cert_sync,
)
from rig.kube_api import KubeAPIServer
from rig.vault_cluster import LoopbackVault, build_loopback_vault, running, stack_server

PASSWORD = "bench admin password 0123456789"
TEMPLATE_EDGE = "edge-eu"
CHECK_EDGE = "edge-ap"
LINK_TYPE = "fedobs:link:HubLink"


@dataclass
class CapacityHub:
    """A running hub for N edges, with what each edge holds for it, and how long each stage took."""

    recording: Recording
    vault: LoopbackVault
    fleet: FleetHub
    credentials: list[EdgeCredential]
    #: The follower's poll interval as the edge stack renders it (``--poll`` of its Deployment).
    poll_seconds: float
    setup: dict[str, float] = field(default_factory=dict)
    #: The hub's own cert-sync: one no-op pass (``hub_pass_cost``).
    hub_pass: dict[str, float] = field(default_factory=dict)


def _edge_recording(hub: Recording, outputs: Mapping[str, Any], edge: str) -> Recording:
    config, secret_keys = load_stack_file("edge")
    config = {**config, "fedobs:edgeName": edge}
    recording = run_program("edge", config, secret_keys, {str(config["fedobs:hubStack"]): outputs})
    if recording.error is not None:
        raise RuntimeError(f"the edge stack ({edge}) failed under mocks: {recording.error}")
    return recording


def _link_resources(recording: Recording) -> list[RecordedResource]:
    link = recording.one(LINK_TYPE)
    return [r for r in recording.resources if r.parent == link.urn]


def _renamed(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_renamed(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _renamed(v, old, new) for k, v in value.items()}
    return value


def link_resources_for(template: Sequence[RecordedResource], edge: str) -> list[RecordedResource]:
    """``template`` (``edge-eu``'s ``HubLink`` resources) as ``edge``'s: the name replaced everywhere."""
    return [
        replace(
            r,
            urn=r.urn.replace(TEMPLATE_EDGE, edge),
            name=r.name.replace(TEMPLATE_EDGE, edge),
            inputs=_renamed(r.inputs, TEMPLATE_EDGE, edge),
        )
        for r in template
    ]


def link_template(hub: Recording, outputs: Mapping[str, Any]) -> tuple[list[RecordedResource], float]:
    """``edge-eu``'s ``HubLink`` resources, after checking that renaming them gives exactly what the
    edge stack declares for ``edge-ap`` (type, name and every input); and the seconds between two
    polls of the follower the edge stack renders (its Deployment's ``--poll``)."""
    edge = _edge_recording(hub, outputs, TEMPLATE_EDGE)
    command = cert_sync_command(edge)
    poll = float(command[command.index("--poll") + 1])
    template = _link_resources(edge)
    declared = _link_resources(_edge_recording(hub, outputs, CHECK_EDGE))
    renamed = link_resources_for(template, CHECK_EDGE)
    # sorted: the SDK registers resources from a thread pool, in an order a run does not fix
    got = sorted(((r.type, r.name, r.inputs) for r in renamed), key=lambda t: (t[0], t[1]))
    want = sorted(((r.type, r.name, r.inputs) for r in declared), key=lambda t: (t[0], t[1]))
    if got != want:
        raise RuntimeError(f"renaming {TEMPLATE_EDGE}'s HubLink does not give {CHECK_EDGE}'s: {got} != {want}")
    return template, poll


def _link_edge(
    url: str, ca_file: str, hub: Recording, key: DeployKey, template: Sequence[RecordedResource], edge: str
) -> EdgeCredential:
    """``edge``'s deploy login, then its HubLink's resources applied with it: its hub credentials."""
    token = deploy_token(url, ca_file, edge, edge_jwt(key, hub, edge))
    applied = VaultApplier(url, token, ca_file=ca_file).apply(link_resources_for(template, edge))
    (transit,) = applied.tokens.values()
    (secret_id,) = applied.secret_ids.values()
    return EdgeCredential(edge, edge_role_id(edge), secret_id, transit)


def _hub_cert_sync(hub: Recording, url: str, ca_file: str, kube: KubeAPIServer, workdir: Path) -> None:
    """What the followers poll: the hub's certificates issued per its ``Certificate``s, served as
    cert-manager's Secrets, and one pass of the hub's own cert-sync CronJob writing them to its KV."""
    publish_pki(hub, kube, issue_pki(hub))
    _hub_pass(hub, url, ca_file, kube, workdir)


def _hub_pass(hub: Recording, url: str, ca_file: str, kube: KubeAPIServer, workdir: Path) -> float:
    """One pass of the hub's own cert-sync CronJob command (interpreter start included); its seconds."""
    started = time.perf_counter()
    result = run_cert_sync(hub, url, ca_file, kube, workdir, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"the hub's cert-sync failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return time.perf_counter() - started


def hub_pass_cost(hub: CapacityHub, kube: KubeAPIServer, workdir: Path) -> dict[str, float]:
    """The hub's own load at N edges, beside the fleet's: one no-op pass of its cert-sync CronJob
    (every certificate read, none changed), its seconds and what the hub's audit log got."""
    mark = hub.fleet.audit_path.stat().st_size
    seconds = _hub_pass(hub.recording, hub.fleet.url, hub.fleet.ca_file, kube, workdir)
    end = hub.fleet.audit_path.stat().st_size
    with open(hub.fleet.audit_path, "rb") as handle:
        handle.seek(mark)
        requests = sum(1 for line in handle.read(end - mark).splitlines() if b'"type":"request"' in line)
    return {"seconds": seconds, "audit_bytes": end - mark, "requests": requests}


@contextlib.contextmanager
def capacity_hub(
    workdir: Path, edges: int, progress: Callable[[str], None] = lambda message: None
) -> Iterator[CapacityHub]:
    """The hub of ``edges`` edges running on three loopback nodes, configured and linked (see above)."""
    setup: dict[str, float] = {}
    key = DeployKey()
    started = time.perf_counter()
    config, secret_keys = hub_config(edges)
    hub = run_program("hub", trusting(config, key), secret_keys)
    if hub.error is not None:
        raise RuntimeError(f"the hub with {edges} edges failed: {hub.error}")
    setup["evaluate hub"] = time.perf_counter() - started
    server = stack_server(hub)
    vault = build_loopback_vault(
        workdir / "cluster", server.spec, pod_hcl=openbao_pod_hcl(hub), dns_names=server.dns_names
    )
    with running(vault.cluster), KubeAPIServer() as kube:
        started = time.perf_counter()
        job = run_bootstrap_job(hub, vault, workdir / "job", PASSWORD, timeout=120)
        if job.returncode != 0:
            raise RuntimeError(f"the hub's bootstrap Job exited {job.returncode}: {job.stderr.strip()[-2000:]}")
        leader = vault.cluster.leader(timeout=30)
        token = admin_token(leader.url, vault.ca_file, PASSWORD)
        setup["bootstrap"] = time.perf_counter() - started
        progress(f"{edges} edges: hub bootstrapped; applying its configuration")
        started = time.perf_counter()
        resources = cert_sync_configuration(hub)
        VaultApplier(
            leader.url, token, ca_file=vault.ca_file, in_cluster_overrides=kubernetes_auth_overrides(kube)
        ).apply(resources)
        setup["apply configuration"] = time.perf_counter() - started
        setup["resources applied"] = len(resources)
        started = time.perf_counter()
        outputs = real_hub_outputs(hub, address=leader.url, ca_pem=vault.ca.cert_pem)
        template, poll_seconds = link_template(hub, outputs)
        setup["evaluate edge (twice)"] = time.perf_counter() - started
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            credentials = list(
                pool.map(lambda e: _link_edge(leader.url, vault.ca_file, hub, key, template, e), edge_names(edges))
            )
        setup["edges' deploy logins and credentials"] = time.perf_counter() - started
        started = time.perf_counter()
        _hub_cert_sync(hub, leader.url, vault.ca_file, kube, workdir / "hub-cert-sync")
        setup["hub cert-sync: issue, publish, first sync"] = time.perf_counter() - started
        fleet = FleetHub(
            url=leader.url,
            ca_file=vault.ca_file,
            pids=[n.pid for n in vault.cluster.nodes if n.pid is not None],
            audit_path=leader.workdir / "audit.log",
            census_token=census_token(leader.url, vault.ca_file, token),
            approle_mount=EDGE_APPROLE_MOUNT,
            kv_mount=DEFAULT_KV_MOUNT,
        )
        capacity = CapacityHub(hub, vault, fleet, credentials, poll_seconds, setup)
        capacity.hub_pass = hub_pass_cost(capacity, kube, workdir / "hub-cert-sync")
        yield capacity


def measure_one(
    workdir: Path,
    edges: int,
    *,
    factor: float,
    simulated_seconds: float,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """One N: set-up, then the fleet; the fleet's summary with the set-up timings."""
    with capacity_hub(workdir, edges, progress) as hub:
        progress(f"{edges} edges: set up in {sum(v for k, v in hub.setup.items() if k != 'resources applied'):.0f} s")
        result = run_fleet(
            hub.fleet,
            hub.credentials,
            factor=factor,
            simulated_seconds=simulated_seconds,
            poll_seconds=hub.poll_seconds,
            progress=progress,
        )
        summary = result.summary()
        summary["poll_seconds"] = hub.poll_seconds
        cadence = cronjob_cadence(k8s_object(hub.recording, "CronJob", "cert-sync")["spec"])
        summary["hub_pass"] = {**hub.hub_pass, "per_day": 86400 / 60 * cadence.passes}
        summary["setup"] = hub.setup
        summary["gzip_ratio"] = _gzip_ratio(hub.fleet.audit_path)
    return summary


def _gzip_ratio(path: Path) -> float:
    """How much gzip (the rotation sidecar's, at its default level 6) shrinks the hub's audit log."""
    import gzip

    raw = path.read_bytes()[-32 * 2**20 :]
    return len(raw) / len(gzip.compress(raw, compresslevel=6)) if raw else 0.0


# --------------------------------------------------------------------------------------------------
# the sweep and its page
# --------------------------------------------------------------------------------------------------
#: Issue 21's targets.
P99_LIMIT_MS = 100.0
PER_EDGE_LIMIT = 1.0


def follower_rate(summary: Mapping[str, Any]) -> float:
    """The follower's hub requests per edge per simulated minute (logins, KV reads, its token's calls)."""
    requests = sum(
        v["count"]
        for kind, v in summary["per_kind"].items()
        if not kind.startswith("transit ") and kind != "renew-self"
    )
    return float(requests) / float(summary["edges"]) / (float(summary["simulated_seconds"]) / 60)


def seal_rate(summary: Mapping[str, Any]) -> float:
    """The transit seal's hub requests per edge per simulated minute (health checks and renewals)."""
    requests = sum(
        v["count"] for kind, v in summary["per_kind"].items() if kind.startswith("transit ") or kind == "renew-self"
    )
    return float(requests) / float(summary["edges"]) / (float(summary["simulated_seconds"]) / 60)


def envelope(runs: Sequence[Mapping[str, Any]]) -> int:
    """The largest N whose run met p99 < 100 ms with no error (0 if none did)."""
    return max((r["edges"] for r in runs if r["p99_ms"] < P99_LIMIT_MS and r["errors"] == 0), default=0)


def measure(
    workdir: Path,
    sizes: Sequence[int],
    *,
    factor: float,
    simulated_seconds: float,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    runs = []
    for n in sizes:
        progress(f"capacity: {n} edges at {factor:g}x for {simulated_seconds / 60:.0f} simulated minutes")
        runs.append(
            measure_one(
                workdir / f"n{n}",
                n,
                factor=factor,
                simulated_seconds=simulated_seconds,
                progress=progress,
            )
        )
    return {
        "factor": factor,
        "simulated_seconds": simulated_seconds,
        "poll_seconds": runs[0]["poll_seconds"],
        "runs": runs,
        "envelope": envelope(runs),
    }


def _row(r: Mapping[str, Any]) -> list[Any]:
    setup = sum(v for k, v in r["setup"].items() if k != "resources applied")
    return [
        r["edges"],
        f"{r['requests_per_second']:.0f}",
        f"{follower_rate(r):.2f} + {seal_rate(r):.2f}",
        f"{r['p50_ms']:.1f}",
        f"**{r['p99_ms']:.1f}**",
        f"{r['max_ms']:.0f}",
        f"{r['errors']} ({100 * r['error_rate']:.2f} %)",
        f"{r['hub_cpu_percent']:.0f} %",
        f"{r['hub_rss_mib']:.0f} ({r['hub_rss_peak_mib']:.0f})",
        f"{r['generator_cpu_percent']:.0f} %",
        f"{r['lag_p99_ms']:.0f}",
        f"{setup:.0f}",
    ]


def render(result: Mapping[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """The page's section and the plot's panels for :func:`measure`'s result."""
    from bench.report import Section, Target, table

    runs = result["runs"]
    largest = runs[-1]
    factor, minutes = result["factor"], result["simulated_seconds"] / 60
    lines = [
        f"A 3-node TLS Raft OpenBao cluster (the hub's rendered HCL, bootstrapped by its Job) configured with the "
        f"hub's declared Vault configuration for N edges, under N simulated edges (`rig/fleet.py`): each polls with "
        f"the product's `HubFollower` every {result['poll_seconds']:g} s with its own AppRole secret_id and runs its "
        f"transit seal's health check (encrypt + decrypt, every 10 min) and token renewals (~22 days) with its own "
        f"seal token. Time compressed **{factor:g}x**: N edges send {factor:g} times the request rate of N real "
        f"edges; each N ran {minutes:.0f} simulated minutes ({result['simulated_seconds'] / factor:.0f} s) after a "
        "warm-up poll. Latency is per request, measured by the edge from sending to the whole answer (TLS set-up "
        "included); CPU and resident memory of the three server processes from /proc (RSS at the end, peak in "
        "brackets); lag: how late the generator started a scheduled action.",
        "",
        *table(
            [
                "edges",
                "requests/s",
                "per edge/min (follower + seal)",
                "p50 ms",
                "p99 ms",
                "max ms",
                "errors",
                "hub CPU",
                "hub RSS MiB",
                "generator CPU",
                "lag p99 ms",
                "set-up s",
            ],
            [_row(r) for r in runs],
        ),
        "",
        f"**Capacity envelope: {result['envelope']} edges** at {factor:g}x (p99 < {P99_LIMIT_MS:g} ms, no error).",
        "",
        *_census_lines(runs),
        "",
        *_setup_lines(runs),
        "",
        *_hub_pass_lines(runs),
        "",
        *_kind_lines(largest),
        "",
        f"Audit: the hub's file device appended **{largest['audit_bytes_per_edge_per_day'] / 1e6:.2f} MB per edge "
        f"per simulated day** at {largest['edges']} edges ({largest['audit_requests']} requests in its log for "
        f"{largest['requests']} sent; gzip shrinks them {largest['gzip_ratio']:.1f}x): the follower and the seal "
        "together, beside the audit section's figure for the follower alone.",
    ]
    section = Section("The hub under a fleet (capacity)", lines)
    section.targets += [
        Target(
            f"hub p99 latency, {largest['edges']} edges at {factor:g}x", largest["p99_ms"], "<", P99_LIMIT_MS, " ms"
        ),
        Target(f"hub errors, {largest['edges']} edges", largest["errors"], "==", 0),
        Target("follower: hub requests per edge per minute", follower_rate(largest), "<=", PER_EDGE_LIMIT),
        Target(
            f"token accessors after {minutes:.0f} simulated minutes - before ({largest['edges']} edges)",
            largest["census_after"]["accessors"] - largest["census_before"]["accessors"],
            "<=",
            0,
        ),
        Target(
            f"leases after {minutes:.0f} simulated minutes - before ({largest['edges']} edges)",
            sum(largest["census_after"]["leases"].values()) - sum(largest["census_before"]["leases"].values()),
            "<=",
            0,
        ),
    ]
    ns = [r["edges"] for r in runs]
    panels = [
        {
            "title": f"hub latency against edges ({factor:g}x compressed)",
            "kind": "line",
            "x": ns,
            "series": [
                {"label": "p50", "y": [r["p50_ms"] for r in runs]},
                {"label": "p99", "y": [r["p99_ms"] for r in runs]},
            ],
            "xlabel": "edges",
            "ylabel": "ms",
            "logx": True,
            "limit": P99_LIMIT_MS,
            "limit_label": "p99 target",
        },
        {
            "title": "hub CPU (3 servers) against edges",
            "kind": "line",
            "x": ns,
            "y": [r["hub_cpu_percent"] for r in runs],
            "xlabel": "edges",
            "ylabel": "% of one core",
            "logx": True,
        },
    ]
    return section, panels


def _census_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    from bench.report import table

    def login_leases(census: Mapping[str, Any]) -> int:
        return int(census["leases"].get(f"auth/{EDGE_APPROLE_MOUNT}/login", 0))

    rows = [
        [
            r["edges"],
            f"{r['census_before']['accessors']} → {r['census_after']['accessors']}",
            f"{sum(r['census_before']['leases'].values())} → {sum(r['census_after']['leases'].values())}",
            f"{login_leases(r['census_before'])} → {login_leases(r['census_after'])}",
        ]
        for r in runs
    ]
    return [
        "Tokens and leases on the real server before and after the simulated time (listed with a token that may: "
        "`LIST auth/token/accessors`, a walk of `sys/leases/lookup/`):",
        "",
        *table(["edges", "token accessors", "leases", "of which the followers' AppRole logins"], rows),
    ]


def _hub_pass_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    from bench.report import table

    rows = [
        [
            r["edges"],
            f"{r['hub_pass']['seconds']:.2f}",
            r["hub_pass"]["requests"],
            f"{r['hub_pass']['requests'] * r['hub_pass']['per_day'] / 86400:.1f}",
            f"{r['hub_pass']['audit_bytes'] * r['hub_pass']['per_day'] / 1e9:.2f}",
        ]
        for r in runs
    ]
    return [
        "Not in the fleet's load: the hub's own cert-sync CronJob (with its index, a pass that changes nothing "
        "reads the index, not every edge's copy; an hourly one verifies every copy). "
        "One no-op pass of its command against the same cluster (before the fleet started), and what its "
        f"{runs[0]['hub_pass']['per_day']:.0f} passes a day make of it (real time, not compressed):",
        "",
        *table(["edges", "seconds per pass", "hub requests per pass", "hub requests/s", "audit GB/day"], rows),
    ]


def _setup_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    from bench.report import table

    stages = [k for k in runs[-1]["setup"] if k != "resources applied"]
    rows = [[r["edges"], r["setup"]["resources applied"], *(f"{r['setup'][k]:.1f}" for k in stages)] for r in runs]
    return ["Set-up per N, seconds:", "", *table(["edges", "resources applied", *stages], rows)]


def _kind_lines(largest: Mapping[str, Any]) -> list[str]:
    from bench.report import table

    minutes = largest["simulated_seconds"] / 60
    rows = [
        [kind, v["count"], f"{v['count'] / largest['edges'] / minutes:.3f}", f"{v['p50_ms']:.1f}", f"{v['p99_ms']:.1f}"]
        for kind, v in sorted(largest["per_kind"].items(), key=lambda kv: -kv[1]["count"])
    ]
    return [
        f"By request, {largest['edges']} edges (where the latency is):",
        "",
        *table(["request", "count", "per edge per simulated minute", "p50 ms", "p99 ms"], rows),
    ]
