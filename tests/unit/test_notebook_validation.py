"""The hub's NotebookValidationJob and the VSO objects that deliver its credentials, as planned."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from components.agent_injector import CONNECTION_FIELDS, FIELDS
from components.vso import connection_spec
from offline.engine import Recording
from rig.hub_edge import k8s_object
from rig.schemas import validate_kubernetes_object
from rig.vso_secret import pod_environment, render, secret_data

NAMESPACE = "notebook-validation"
JOB = "telemetry-validation"


def in_namespace(recording: Recording, kind: str) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o
        for o in recording.kubernetes_objects()
        if o["kind"] == kind and o["metadata"].get("namespace") == NAMESPACE
    }


def test_the_example_job_is_valid_against_the_operators_crd(hub: Recording) -> None:
    job = k8s_object(hub, "NotebookValidationJob", JOB)
    assert job["apiVersion"] == "mlops.mlops.dev/v1alpha1" and job["metadata"]["namespace"] == NAMESPACE
    assert validate_kubernetes_object(job) == []
    # the check is not vacuous, and the CR has no place for the injector's annotations
    broken = copy.deepcopy(job)
    broken["spec"]["podConfig"]["envFromm"] = broken["spec"]["podConfig"].pop("envFrom")
    assert any("envFromm" in p for p in validate_kubernetes_object(broken))
    annotated = copy.deepcopy(job)
    annotated["spec"]["podConfig"]["annotations"] = {"vault.hashicorp.com/agent-inject": "true"}
    assert any("podConfig.annotations" in p for p in validate_kubernetes_object(annotated))


def test_each_credential_is_a_vault_dynamic_secret_the_pod_takes(hub: Recording) -> None:
    job = k8s_object(hub, "NotebookValidationJob", JOB)
    pod = job["spec"]["podConfig"]
    secrets = in_namespace(hub, "VaultDynamicSecret")
    names = {vds["spec"]["destination"]["name"] for vds in secrets.values()}
    assert names == {f"{JOB}-db", f"{JOB}-results", f"{JOB}-aws"}
    assert [e["secretRef"]["name"] for e in pod["envFrom"]] == [f"{JOB}-db", f"{JOB}-results", f"{JOB}-aws"]
    assert {v["secret"]["secretName"] for v in pod["volumes"]} == names
    assert all(m["readOnly"] for m in pod["volumeMounts"])
    assert pod["serviceAccountName"] == "notebook-runner"
    for vds in secrets.values():
        assert validate_kubernetes_object(vds) == []
        spec = vds["spec"]
        assert spec["vaultAuthRef"] == "vault" and spec["revoke"] is False and spec["renewalPercent"] == 67
        assert spec["destination"]["transformation"]["excludeRaw"] is True
        assert spec["destination"]["transformation"]["excludes"] == [".*"]
    db = secrets[f"{JOB}-db"]["spec"]
    assert (db["mount"], db["path"]) == ("database", "creds/readonly")
    templates = {k: t["text"] for k, t in db["destination"]["transformation"]["templates"].items()}
    assert templates == {
        "DB_USERNAME": "{{ .Secrets.username }}",
        "DB_PASSWORD": "{{ .Secrets.password }}",
        "DB_HOST": "telemetry-pg.data.svc.cluster.local",
        "DB_PORT": "5432",
        "DB_NAME": "telemetry",
    }
    aws = secrets[f"{JOB}-aws"]["spec"]["destination"]["transformation"]["templates"]
    assert set(aws) == {v for _, v in (*FIELDS["aws"], *CONNECTION_FIELDS["aws"])}
    assert aws["AWS_REGION"]["text"] == "eu-central-1"
    results = secrets[f"{JOB}-results"]["spec"]["destination"]["transformation"]["templates"]
    assert results["RESULTS_DB_HOST"]["text"] == "results-mysql.data.svc.cluster.local"


def test_vso_in_the_namespace_logs_in_as_its_own_account(hub: Recording) -> None:
    assert in_namespace(hub, "VaultConnection")["vault"]["spec"] == connection_spec()
    auth = in_namespace(hub, "VaultAuth")["vault"]["spec"]
    assert auth["kubernetes"]["role"] == "vso-notebook-validation"
    assert auth["kubernetes"]["serviceAccount"] == "vso-auth"
    accounts = in_namespace(hub, "ServiceAccount")
    for name in ("vso-auth", "notebook-runner", "vault-notebook-sa"):
        assert accounts[name]["automountServiceAccountToken"] is False
    labels = k8s_object(hub, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels == {
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }


def test_vso_role_reads_exactly_the_declared_credentials(hub: Recording) -> None:
    policy = next(p for p in hub.of_type("vault:index/policy:Policy") if p.inputs["name"] == "vso-notebook-validation")
    rules = re.findall(r'^path "([^"]+)" \{ capabilities = (\[[^\]]*\]) \}$', policy.inputs["policy"], re.M)
    assert dict(rules) == {
        "aws/creds/s3-readonly": '["read"]',
        "database/creds/readonly": '["read"]',
        "database/creds/results-readonly": '["read"]',
    }
    assert len(policy.inputs["policy"].strip().splitlines()) == 4  # the header and those three rules
    role = next(
        r
        for r in hub.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
        if r.inputs["roleName"] == "vso-notebook-validation"
    )
    assert role.inputs["boundServiceAccountNames"] == ["vso-auth"]
    assert role.inputs["boundServiceAccountNamespaces"] == [NAMESPACE]
    assert role.inputs["tokenPolicies"] == ["vso-notebook-validation"]
    # the consumer's token lifetimes: VSO's credentials end with its token
    assert (role.inputs["tokenTtl"], role.inputs["tokenMaxTtl"]) == (3600, 14400)


def test_the_rig_renders_only_what_it_models() -> None:
    assert render("{{ .Secrets.username }}@{{.Secrets.host}}", {"username": "u", "host": "h"}) == "u@h"
    assert render("{{ .Secrets.missing }}", {}) == "<no value>"
    with pytest.raises(NotImplementedError):
        render("{{ .Secrets.username | upper }}", {"username": "u"})
    spec = {"destination": {"transformation": {"templates": {"U": {"text": "{{ .Secrets.username }}"}}}}}
    assert secret_data(spec, {"username": "u"}) == {"_raw": '{"username": "u"}', "U": "u", "username": "u"}
    job = {"spec": {"podConfig": {"envFrom": [{"secretRef": {"name": "a"}}, {"secretRef": {"name": "b"}}]}}}
    env = pod_environment(job, {"a": {"X": "1", "HOME": "/x"}, "b": {"X": "2"}})
    assert env["X"] == "2" and env["HOME"] == "/workspace"  # a later source wins; explicit env wins
