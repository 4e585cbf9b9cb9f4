"""Bootstrap of the hub's 3-node Vault by the project's own code, beside the same cluster with the
server's default Raft timings.

The cluster is what ``tests/real/test_vault_bootstrap.py`` starts: the server HCL the hub stack
renders for its pods (with its audit device in OpenBao's config form), localised to loopback by
``rig.vault_cluster``, a server certificate with exactly the SANs of the stack's
``Certificate``, and the stack's bootstrap Job command localised by ``localize_job_command``. The
bootstrap runs in this process with that argument list (as the first bootstrap of the test does), so
every progress line it logs gets a timestamp; "time to 3 healthy voters" runs from the Job's start
against three started, uninitialised nodes to its "3 voters, autopilot healthy" line.

The project tunes one server timing: ``performance_multiplier = 1`` in ``storage "raft"``
(``components.vault_server_config``; the server's default scales Raft's timeouts by 5). The
"server defaults" variant removes that line and changes nothing else. ``localize_job_command`` adds
what the tests add to the Job's own flags: deadlines, a 0.2 s poll and an autopilot
``server_stabilization_time`` of 2 s (the stack leaves the server's 10 s); the bench leaves that
last test shortcut out, so the autopilot runs at its own defaults as in the cluster.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from offline.engine import Recording
from programs.vault_bootstrap.__main__ import build_parser, config_from_args
from programs.vault_bootstrap.bootstrap import FileStateStore, run
from rig.hub_edge import bootstrap_job_command, openbao_pod_hcl
from rig.vault_cluster import build_loopback_vault, running, stack_server

TUNED_LINE = re.compile(r"^[ \t]*performance_multiplier[ \t]*=[ \t]*1[ \t]*\n", re.MULTILINE)
VOTERS_LINE = re.compile(r"^\d+ voters, autopilot healthy$")
PASSWORD = "bench admin password 0123456789"
TIMEOUT = 120.0


def server_defaults(pod_hcl: str) -> str:
    """The pod HCL without the project's Raft tuning (``ValueError`` if it has none)."""
    untuned, count = TUNED_LINE.subn("", pod_hcl)
    if count != 1:
        raise ValueError(f"expected one 'performance_multiplier = 1' in the rendered HCL, found {count}")
    return untuned


def bootstrap_once(hub: Recording, base: Path, *, tuned: bool) -> dict[str, float]:
    """Start the cluster, run the Job's bootstrap, return its timeline (seconds)."""
    server = stack_server(hub)
    pod_hcl = openbao_pod_hcl(hub)
    vault = build_loopback_vault(
        base / "cluster",
        server.spec,
        pod_hcl=pod_hcl if tuned else server_defaults(pod_hcl),
        dns_names=server.dns_names,
    )
    job = base / "job"
    command = bootstrap_job_command(hub, vault, job, PASSWORD, timeout=TIMEOUT, autopilot_stabilization=None)
    config, _ = config_from_args(build_parser().parse_args(command))
    timeline: dict[str, float] = {}
    with running(vault.cluster):
        started = time.perf_counter()

        def log(message: str) -> None:
            if VOTERS_LINE.match(message):
                timeline["voters"] = time.perf_counter() - started

        run(config, FileStateStore(job / "vault-init.json"), log=log)
        timeline["job"] = time.perf_counter() - started
    if "voters" not in timeline:
        raise RuntimeError("the bootstrap finished without reporting healthy voters")
    return timeline


VARIANTS: dict[str, dict[str, bool]] = {
    "stack": {"tuned": True},
    "server_defaults": {"tuned": False},
}


def measure(
    hub: Recording, workdir: Path, reps: int = 3, progress: Callable[[str], None] = lambda m: None
) -> dict[str, Any]:
    """Each repetition bootstraps every variant once, side by side; medians and per-repetition ratios."""
    runs: list[dict[str, dict[str, float]]] = []
    for rep in range(reps):
        run_result: dict[str, dict[str, float]] = {}
        for name, options in VARIANTS.items():
            progress(f"bootstrap {name} ({rep + 1}/{reps})")
            run_result[name] = bootstrap_once(hub, workdir / f"{name}-{rep}", **options)
        runs.append(run_result)
    return {
        "reps": reps,
        "voters": {name: statistics.median(r[name]["voters"] for r in runs) for name in VARIANTS},
        "job": {name: statistics.median(r[name]["job"] for r in runs) for name in VARIANTS},
        "ratio_defaults_to_stack": statistics.median(
            r["server_defaults"]["voters"] / r["stack"]["voters"] for r in runs
        ),
        "runs": runs,
    }
