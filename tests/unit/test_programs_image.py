"""The programs image as stack config (``fedobs:programsImage``): by digest, the one every Job and CronJob
runs, refused as a tag (outside ``fedobs:developmentMode``) or as the shipped placeholder, in the form
the release workflow records it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from components.programs_image import PLACEHOLDER, ProgramsImage, is_pinned_by_digest
from components.versions import PROGRAMS_IMAGE_REPOSITORY
from config import ConfigError, parse_stack_config
from offline.engine import (
    RELEASED_PROGRAMS_IMAGE,
    ROOT,
    Recording,
    load_stack_file,
    plan_operator_pgp_keys,
    run_program,
)

NS = "fedobs:"
DIGEST = "sha256:" + "ab" * 32
IMAGE = TypeAdapter(ProgramsImage)


def raw_config(stack: str, *, released: bool = True, **changes: Any) -> tuple[dict[str, Any], set[str]]:
    config, secret_keys = load_stack_file(stack, released=released)
    raw = {k.removeprefix(NS): copy.deepcopy(v) for k, v in config.items() if k.startswith(NS)}
    raw.update(changes)
    return raw, {k.removeprefix(NS) for k in secret_keys}


def programs_containers(recording: Recording) -> dict[str, str]:
    """``kind/name -> image`` of every container that runs one of the repository's programs."""
    found: dict[str, str] = {}
    for obj in recording.kubernetes_objects():
        spec = obj.get("spec") or {}
        if obj["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        pod = (spec.get("template") or {}).get("spec") or {}
        for container in pod.get("containers", []):
            if container["image"].startswith(PROGRAMS_IMAGE_REPOSITORY):
                name = obj["metadata"]["name"]
                name = "vault-bootstrap-<digest>" if name.startswith("vault-bootstrap-") else name
                found[f"{obj['kind']}/{name}"] = container["image"]
    return found


@pytest.mark.parametrize(
    "reference",
    [
        f"ghcr.io/fedobs/programs@{DIGEST}",
        f"ghcr.io/fedobs/programs:0.2.0@{DIGEST}",  # a tag beside the digest is documentation only
        f"registry.example.com:5000/mirror/fedobs-programs@{DIGEST}",
    ],
)
def test_references_by_digest_are_pinned(reference: str) -> None:
    assert IMAGE.validate_python(reference) == reference and is_pinned_by_digest(reference)


@pytest.mark.parametrize(
    ("reference", "named"),
    [
        (PLACEHOLDER, "is the placeholder shipped in Pulumi.<stack>.yaml"),
        ("ghcr.io/fedobs/programs@sha256:abc", "has a malformed digest 'sha256:abc'"),
        (f"ghcr.io/fedobs/programs@{DIGEST.upper()}", "has a malformed digest"),
        ("ghcr.io/Fedobs/programs 0.1", "is not an image reference"),
    ],
)
def test_invalid_references_are_refused(reference: str, named: str) -> None:
    with pytest.raises(ValidationError, match=named.replace(".", r"\.").replace("<", ".").replace(">", ".")):
        IMAGE.validate_python(reference)


def test_a_tag_alone_is_not_pinned() -> None:
    tagged = "ghcr.io/fedobs/programs:0.1.0"
    assert IMAGE.validate_python(tagged) == tagged and not is_pinned_by_digest(tagged)


def test_a_tag_is_a_config_error_outside_development_mode_only() -> None:
    raw, secret = raw_config("hub", programsImage="ghcr.io/fedobs/programs:0.1.0")
    with pytest.raises(ConfigError) as caught:
        parse_stack_config("hub", raw, secret)
    ((key, message),) = [(p.key, p.message) for p in caught.value.problems]
    assert key == "fedobs:programsImage" and "is not pinned by digest" in message
    assert "fedobs:developmentMode" in message
    raw["developmentMode"] = True
    assert parse_stack_config("hub", raw, secret).programs_image == "ghcr.io/fedobs/programs:0.1.0"


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_the_shipped_files_hold_the_placeholder_and_nothing_else_stops_them(stack: str) -> None:
    """As shipped, a stack fails on its programs image, the hub also on its operators' PGP keys (and its
    secrets, which Pulumi cannot decrypt); the offline plan fills the slots as an operator does, with a
    digest no registry serves and public keys whose private halves nobody holds."""
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    assert data["config"]["fedobs:programsImage"] == PLACEHOLDER
    raw, secret = raw_config(stack, released=False)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(stack, raw, secret)
    slots = {"hub": [f"fedobs:vault.operatorPgpKeys[{i}]" for i in range(5)], "edge": []}[stack]
    assert [p.key for p in caught.value.problems] == ["fedobs:programsImage", *slots]
    assert all("placeholder" in p.message for p in caught.value.problems)
    assert raw_config(stack)[0]["vault"].get("operatorPgpKeys", []) == plan_operator_pgp_keys()[: len(slots)]
    assert raw_config(stack)[0]["programsImage"] == RELEASED_PROGRAMS_IMAGE != PLACEHOLDER


def test_every_job_and_cronjob_runs_the_configured_image(hub: Recording, edge: Recording) -> None:
    assert programs_containers(hub) == {
        "Job/vault-bootstrap-<digest>": RELEASED_PROGRAMS_IMAGE,
        "CronJob/vault-raft-snapshot": RELEASED_PROGRAMS_IMAGE,
        "CronJob/cert-sync": RELEASED_PROGRAMS_IMAGE,
        "CronJob/transit-watch": RELEASED_PROGRAMS_IMAGE,
        "Job/notebook-validation-example": RELEASED_PROGRAMS_IMAGE,
    }
    assert set(programs_containers(edge).values()) == {RELEASED_PROGRAMS_IMAGE}
    assert programs_containers(edge)["Deployment/cert-sync"] == RELEASED_PROGRAMS_IMAGE  # the edge's follower
    config, secret_keys = load_stack_file("hub")
    other = f"{PROGRAMS_IMAGE_REPOSITORY}@{DIGEST}"
    recording = run_program("hub", {**config, f"{NS}programsImage": other}, secret_keys)
    assert recording.error is None, recording.error
    assert set(programs_containers(recording).values()) == {other}
    assert len(programs_containers(recording)) == 5


def test_a_tag_registers_no_resource() -> None:
    config, secret_keys = load_stack_file("edge")
    recording = run_program("edge", {**config, f"{NS}programsImage": "ghcr.io/fedobs/programs:0.1.0"}, secret_keys)
    assert recording.error is not None and "fedobs:programsImage" in str(recording.error)
    assert recording.resources == []


def test_what_the_release_workflow_records_is_what_a_stack_takes() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    recorded = "$IMAGE@$DIGEST".replace("$IMAGE", workflow["env"]["IMAGE"]).replace("$DIGEST", DIGEST)
    assert IMAGE.validate_python(recorded) == recorded and is_pinned_by_digest(recorded)
    assert workflow["env"]["IMAGE"] == PROGRAMS_IMAGE_REPOSITORY
    (record,) = [s for s in workflow["jobs"]["programs-image"]["steps"] if "GITHUB_STEP_SUMMARY" in s.get("run", "")]
    assert 'pulumi config set fedobs:programsImage \\"$IMAGE@$DIGEST\\"' in record["run"], "the config command"
