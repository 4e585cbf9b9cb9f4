"""The benchmark harness's pure parts (the wait graph and its longest chain, targets, the results
page) and a smoke run of the harness on the sections that need no server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.bootstrap import server_defaults
from bench.chains import longest_chain, nodes_of, render_chain
from bench.evaluation import edge_names, hub_config
from bench.report import Section, Target, missed, render_markdown, table
from bench.run import HUB_CHAIN_LIMIT
from offline.engine import ROOT, RecordedResource, Recording
from rig.vault_cluster import job_command, localize_job_command


def resource(
    name: str, *, custom: bool = True, parent: str = "", provider: str = "", dependencies: tuple[str, ...] = ()
) -> RecordedResource:
    return RecordedResource(
        urn=f"urn:{name}",
        type="test:index:Thing" if custom else "test:index:Component",
        name=name,
        custom=custom,
        inputs={},
        secret_inputs=set(),
        parent=parent,
        provider=provider,
        dependencies=list(dependencies),
        protect=False,
        ignore_changes=[],
        additional_secret_outputs=[],
    )


def test_the_longest_chain_follows_inputs_parents_and_providers() -> None:
    graph = [
        resource("cluster"),
        resource("provider", dependencies=("urn:cluster",)),
        resource("component", custom=False, dependencies=("urn:provider",)),  # a component's dependsOn...
        resource("child", parent="urn:component"),  # ...holds back its children
        resource("uses-provider", provider="urn:provider::some-id"),
        resource("after-child", dependencies=("urn:child",)),
        resource("alone"),
    ]
    chain = longest_chain(nodes_of(graph))
    assert chain.steps == 4  # cluster, provider, child, after-child: the component adds no step
    assert [n.name for n in chain.nodes] == ["cluster", "provider", "component", "child", "after-child"]
    lines = render_chain(chain)
    assert lines[0] == " 1. test:index:Thing cluster"
    assert lines[2] == "    (component test:index:Component component)  <- input or dependsOn"
    assert lines[3] == " 3. test:index:Thing child  <- parent"
    only_provider = longest_chain(nodes_of([resource("p"), resource("r", provider="urn:p::id")]))
    assert only_provider.steps == 2 and render_chain(only_provider)[1].endswith("<- provider")


def test_waits_outside_the_recording_are_dropped_and_cycles_refused() -> None:
    assert longest_chain(nodes_of([resource("a", parent="urn:the-stack", provider="urn:default::x")])).steps == 1
    with pytest.raises(ValueError, match="dependency cycle"):
        longest_chain(nodes_of([resource("a", dependencies=("urn:b",)), resource("b", dependencies=("urn:a",))]))
    assert longest_chain({}).steps == 0


def test_targets_and_the_results_page() -> None:
    met = Target("evaluation, 100 edges / 1 edge", 1.62, "<=", 2.0, "x")
    over = Target("longest dependency chain, hub", 18, "<=", 8, " steps")
    exact = Target("no-op writes", 0, "==", 0)
    assert met.met and not over.met and exact.met
    assert missed([met, over, exact]) == [over]
    with pytest.raises(ValueError):
        Target("x", 1, "~", 1)
    page = render_markdown(
        "fedobs benchmarks",
        ["context line"],
        [Section("Evaluation", ["a | b"], [met]), Section("Chains", ["```", "1. x", "```"], [over])],
        "results.png",
    )
    assert page.startswith("# fedobs benchmarks\n\ncontext line\n\n## Targets\n\n**1 of 2 targets missed**\n")
    assert "| evaluation, 100 edges / 1 edge | 1.62x | <= 2x | yes |" in page
    assert "| longest dependency chain, hub | 18 steps | <= 8 steps | **no** |" in page
    assert "![the figures](results.png)" in page and "## Chains\n\n```\n1. x\n```" in page
    assert table(["a"], [["x|y"]]) == ["| a |", "|---|", "| x\\|y |"]


def test_hub_configs_of_n_edges_keep_the_shipped_edges_first() -> None:
    assert edge_names(1) == ["edge-eu"] and edge_names(3) == ["edge-eu", "edge-ap", "edge-003"]
    config, secret_keys = hub_config(100)
    assert len(config["fedobs:edges"]) == 100 and "fedobs:snapshotCredentials" in secret_keys
    assert len({e["name"] for e in config["fedobs:edges"]}) == 100


def test_server_defaults_remove_only_the_raft_tuning() -> None:
    hcl = 'storage "raft" {\n  path = "/vault/data"\n  performance_multiplier = 1\n}\n'
    assert server_defaults(hcl) == 'storage "raft" {\n  path = "/vault/data"\n}\n'
    with pytest.raises(ValueError, match="found 0"):
        server_defaults('storage "raft" {}\n')


def test_the_bench_runs_the_job_with_the_autopilot_at_its_own_defaults(hub: Recording, tmp_path: Path) -> None:
    vault = SimpleNamespace(
        ca_file="/ca.pem", urls=["https://127.0.0.1:1", "https://127.0.0.1:2", "https://127.0.0.1:3"]
    )
    flag = "--autopilot-server-stabilization-time"
    as_tests_run = localize_job_command(job_command(hub), vault, tmp_path, tmp_path / "init.json")  # type: ignore[arg-type]
    as_deployed = localize_job_command(
        job_command(hub),
        vault,
        tmp_path,
        tmp_path / "init.json",  # type: ignore[arg-type]
        autopilot_stabilization=None,
    )
    assert as_tests_run[as_tests_run.index(flag) + 1] == "2s" and flag not in as_deployed
    assert as_tests_run[: as_tests_run.index(flag)] == as_deployed


def test_the_harness_writes_its_page_and_exits_1_exactly_when_a_target_is_missed(tmp_path: Path) -> None:
    """The sections without servers, quick (a few seconds)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--sections", "chains,rotation", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    steps = json.loads((tmp_path / "results.json").read_text())["chain_hub"]["steps"]
    assert done.returncode == (1 if steps > 8 else 0), done.stderr
    assert ("MISSED longest dependency chain, hub" in done.stderr) == (steps > 8)
    page = (tmp_path / "results.md").read_text()
    assert f"**hub: {steps} steps**" in page and "## Worst-case rotation delay (shipped config)" in page
    assert "the run times are missing and the target is not checked" in page
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_enforces_growth_and_reports_the_import_ratio_without_a_target(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 16: the engine runs without shortcuts; 100 edges / 1 edge stays a target, 1 edge / SDK import is
    measured and shown but no longer fails the run."""
    from bench import run

    figures = {
        "edges": [1, 100],
        "reps": 1,
        "sdk_modules": 455,
        "sdk_packages": ["pulumi_vault"],
        "resources": {"1": 107, "100": 899},
        "sdk_import": 0.7,
        "program": {"1": 1.4, "100": 2.6},
        "largest": 100,
        "ratio_largest_to_1": 1.86,
        "ratio_1_to_import": 2.0,
    }
    done = SimpleNamespace(returncode=0, stdout=json.dumps(figures), stderr="")
    monkeypatch.setattr(run.subprocess, "run", lambda *args, **kwargs: done)
    bench = run.Bench(reps=1, quick=True, workdir=tmp_path)
    bench.evaluation()
    (section,) = bench.sections
    assert [(t.figure, t.limit, t.met) for t in section.targets] == [("evaluation, 100 edges / 1 edge", 2.0, True)]
    assert any("1-edge hub / SDK import: **2.00x** (informational" in line for line in section.lines)


# --------------------------------------------------------------------------------------------------
# the fleet (rig/fleet.py) and the capacity section's pure parts
# --------------------------------------------------------------------------------------------------
def test_request_kinds_name_what_an_edge_sends() -> None:
    from rig.fleet import request_kind

    assert request_kind("GET", "/v1/kv/metadata/edges/edge-eu/otel-client-tls") == "kv metadata"
    assert request_kind("GET", "/v1/kv/data/edges/edge-eu/otel-client-tls") == "kv data"
    assert request_kind("POST", "/v1/auth/approle-edges/login") == "login"
    assert request_kind("POST", "/v1/auth/token/revoke-self") == "revoke-self"
    assert request_kind("POST", "transit/encrypt/edge-eu") == "transit encrypt"
    assert request_kind("POST", "auth/approle-edges/role/edge-eu/secret-id/lookup") == "approle secret-id/lookup"


def test_percentiles_are_nearest_rank_and_leases_group_without_the_edge_name() -> None:
    from rig.fleet import _grouped, percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0 and percentile([], 99) == 0.0
    assert _grouped(
        {
            "auth/token/create/transit-unseal-edge-eu": 1,
            "auth/token/create/transit-unseal-edge-007": 1,
            "auth/approle-edges/login": 5,
        }
    ) == {"auth/approle-edges/login": 5, "auth/token/create/transit-unseal-*": 2}


def test_the_schedule_hands_out_what_is_due_in_time_order() -> None:
    from rig.fleet import Schedule

    schedule = Schedule()
    for due, edge in ((3.0, 1), (1.0, 2), (2.0, 3)):
        schedule.push(due, edge, "poll")
    assert schedule.pop_due(2.5) == [(1.0, 2, "poll"), (2.0, 3, "poll")]
    assert schedule.next_due() == 3.0 and schedule.pop_due(2.9) == []


def test_rates_envelope_and_the_link_resources_of_another_edge() -> None:
    from bench.capacity import envelope, follower_rate, link_resources_for, seal_rate

    run = {
        "edges": 10,
        "simulated_seconds": 3600,
        "per_kind": {
            "kv metadata": {"count": 480},
            "login": {"count": 30},
            "revoke-self": {"count": 30},
            "transit encrypt": {"count": 60},
            "transit decrypt": {"count": 60},
            "renew-self": {"count": 0},
        },
    }
    assert follower_rate(run) == pytest.approx(0.9) and seal_rate(run) == pytest.approx(0.2)
    runs = [
        {"edges": 10, "p99_ms": 20.0, "errors": 0},
        {"edges": 100, "p99_ms": 60.0, "errors": 0},
        {"edges": 500, "p99_ms": 90.0, "errors": 2},
        {"edges": 1000, "p99_ms": 150.0, "errors": 0},
    ]
    assert envelope(runs) == 100 and envelope(runs[2:]) == 0
    template = [
        RecordedResource(
            urn="urn:x::edge-eu-hub-transit-token",
            type="vault:index/token:Token",
            name="edge-eu-hub-transit-token",
            custom=True,
            inputs={"roleName": "transit-unseal-edge-eu", "policies": ["transit-unseal-edge-eu"], "renewable": True},
            secret_inputs=set(),
            parent="urn:link",
            provider="",
            dependencies=[],
            protect=False,
            ignore_changes=[],
            additional_secret_outputs=[],
        )
    ]
    (renamed,) = link_resources_for(template, "edge-042")
    assert renamed.name == "edge-042-hub-transit-token" and renamed.inputs == {
        "roleName": "transit-unseal-edge-042",
        "policies": ["transit-unseal-edge-042"],
        "renewable": True,
    }
    assert template[0].inputs["roleName"] == "transit-unseal-edge-eu"  # the template is left as it was


def test_the_shipped_hubs_critical_path_stays_within_its_target(hub: Recording) -> None:
    """The bench's hub target, kept by the suite: a component waited for as a whole (the consumer's
    DynamicSecrets, whose example Job waits for the Vault roles) once put the NotebookValidationJob
    two steps behind it (10 steps)."""
    chain = longest_chain(nodes_of(hub.resources))
    assert chain.steps <= HUB_CHAIN_LIMIT, "\n".join(render_chain(chain))
