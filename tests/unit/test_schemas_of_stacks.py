"""Every Kubernetes object and Helm values block both stacks declare conforms to upstream schemas."""

from __future__ import annotations

import pytest

from offline.engine import Recording
from rig.schemas import validate_helm_values, validate_kubernetes_object
from rig.vault_cluster import bootstrap_job, stack_server
from rig.vault_pod import vault_server_pod

#: Charts whose upstream values (and schema, where one exists) are in ../shared/schemas.
VALIDATED_CHARTS = {"vault": "vault", "vault-secrets-operator": "vault-secrets-operator"}


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_every_kubernetes_object_is_valid(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    objects = recording.kubernetes_objects()
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Secret", "Job", "Service", "Issuer", "Certificate"} <= kinds
    problems = [p for obj in objects for p in validate_kubernetes_object(obj)]
    assert problems == []


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_chart_values_are_valid(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    releases = recording.of_type("kubernetes:helm.sh/v3:Release")
    checked = 0
    for release in releases:
        chart = VALIDATED_CHARTS.get(release.inputs["chart"])
        if chart is None:
            continue
        assert validate_helm_values(chart, release.inputs["values"]) == []
        checked += 1
    assert checked == 2


def test_a_misspelled_object_is_caught(hub: Recording) -> None:
    """The validators are not vacuous on our own objects."""
    job = bootstrap_job(hub)
    broken = {**job, "spec": {**job["spec"], "backofLimit": 3}}
    assert any("backofLimit" in p for p in validate_kubernetes_object(broken))
    release = next(r for r in hub.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault")
    values = release.inputs["values"]
    broken_values = {**values, "server": {**values["server"], "ha": {**values["server"]["ha"], "replica": 3}}}
    assert any("server.ha.replica" in p for p in validate_helm_values("vault", broken_values))


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_the_vault_server_pod_the_chart_renders_is_valid(stack: str, request: pytest.FixtureRequest) -> None:
    """The Pod template ``rig.vault_pod`` derives from the chart's templates, with the stack's
    ``extraContainers`` (the audit-rotate sidecar), is a valid Pod: the values schema leaves it free."""
    recording: Recording = request.getfixturevalue(stack)
    values = stack_server(recording).values
    template = vault_server_pod(values)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vault-0", **template["metadata"]}}
    pod["spec"] = template["spec"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["vault", "audit-rotate"]
    assert validate_kubernetes_object(pod) == []
