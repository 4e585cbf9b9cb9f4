"""The Kyverno guardrail ``require-vault-secrets-operator``: its object against the CRD, its CEL run on a
real CEL engine (cel-expr-python) with Kyverno's resource library stood in for, the collectors the
stacks declare, and the Admission component under mocks."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest

from components import versions
from components.admission import (
    POLICY_NAME,
    AdmissionSettings,
    kyverno_values,
    require_vso_policy,
)
from offline.engine import Recording, run_program
from rig.kyverno_cel import (
    Cluster,
    PolicyCompileError,
    compile_policy,
    evaluate,
    evaluate_all,
    vso_secret,
)
from rig.schemas import validate_kubernetes_object

NS = "observability"
ENFORCE = require_vso_policy("Enforce", (NS,))
AUDIT = require_vso_policy("Audit", (NS,))
COLLECTOR_LABELS = {"app.kubernetes.io/component": "opentelemetry-collector"}


def static_secret(name: str, namespace: str = NS, create: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "secrets.hashicorp.com/v1beta1",
        "kind": "VaultStaticSecret",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "vaultAuthRef": "vault",
            "type": "kv-v2",
            "mount": "kv",
            "path": f"otel/{name}",
            "destination": {"name": name, "create": create, "type": "kubernetes.io/tls"},
        },
    }


def plain_secret(name: str, namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {},
    }


def deployment(
    pod: dict[str, Any] | None = None,
    name: str = "otel-gateway",
    namespace: str = NS,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A collector mounting the two VSO Secrets, as the hub's gateway does; ``pod`` is merged into its Pod spec."""
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "otelcol",
                "image": "otel/opentelemetry-collector-k8s:0.117.0",
                "volumeMounts": [{"name": "tls", "mountPath": "/tls"}, {"name": "ca", "mountPath": "/ca"}],
            }
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": "otel-gateway-config"}},
            {"name": "tls", "secret": {"secretName": "otel-gateway-tls"}},
            {"name": "ca", "secret": {"secretName": "otel-client-ca"}},
        ],
    }
    for key, value in (pod or {}).items():
        spec[key] = spec.get(key, []) + value if isinstance(value, list) else value
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


@pytest.fixture
def cluster() -> Cluster:
    """VSO's two Secrets in the collector namespace, a hand-made one beside them, and a VSO Secret of
    another namespace."""
    synced = [static_secret("otel-gateway-tls"), static_secret("otel-client-ca")]
    return Cluster(
        [
            *synced,
            *(vso_secret(s) for s in synced),
            plain_secret("hand-made"),
            vso_secret(static_secret("elsewhere-tls", namespace="apps")),
        ]
    )


def refused(names: str, deployment_name: str = "otel-gateway", namespace: str = NS) -> str:
    return (
        f"Deployment {namespace}/{deployment_name} references Secret(s) not managed by the Vault Secrets "
        f"Operator: {names} (sync them with a VaultStaticSecret)"
    )


# --- (a) the object against the ValidatingPolicy CRD ----------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [ENFORCE, AUDIT, require_vso_policy("Enforce", (), background_scan=True)],
    ids=["enforce", "audit", "background"],
)
def test_policy_is_valid_against_the_crd(policy: dict[str, Any]) -> None:
    assert policy["apiVersion"] == "policies.kyverno.io/v1" and policy["kind"] == "ValidatingPolicy"
    assert policy["metadata"] == {"name": POLICY_NAME}
    assert validate_kubernetes_object(policy) == []


def test_schema_check_is_not_vacuous() -> None:
    broken = copy.deepcopy(ENFORCE)
    broken["spec"]["validationAction"] = broken["spec"].pop("validationActions")
    broken["spec"]["validations"][0]["messageExpresion"] = "'x'"
    broken["spec"]["failurePolicy"] = "Deny"
    problems = " ".join(validate_kubernetes_object(broken))
    assert "validationAction" in problems and "messageExpresion" in problems and "Deny" in problems


def test_modes_map_to_validation_actions() -> None:
    assert ENFORCE["spec"]["validationActions"] == ["Deny"] and ENFORCE["spec"]["failurePolicy"] == "Fail"
    assert AUDIT["spec"]["validationActions"] == ["Audit"] and AUDIT["spec"]["failurePolicy"] == "Ignore"
    with pytest.raises(ValueError, match="'Audit' or 'Enforce'"):
        AdmissionSettings(mode="Warn")  # type: ignore[arg-type]


def test_every_expression_compiles_and_broken_ones_do_not() -> None:
    compile_policy(ENFORCE)
    for spoil in ("size(variables.offending) == ", "'x'", "object.metadata.name", "size(variables.later) == 0"):
        broken = copy.deepcopy(ENFORCE)
        broken["spec"]["validations"][0]["expression"] = spoil
        with pytest.raises(PolicyCompileError):
            compile_policy(broken)
    broken = copy.deepcopy(ENFORCE)
    broken["spec"]["variables"][0]["expression"] = "variables.containers"  # defined only after it
    with pytest.raises(PolicyCompileError, match="defined before"):
        compile_policy(broken)


# --- (b) the CEL, evaluated ------------------------------------------------------------------------


def test_compliant_collector_passes(cluster: Cluster) -> None:
    result = evaluate(ENFORCE, deployment(), cluster)
    assert result.matched and result.status == "pass" and not result.denied
    assert ("List", ("v1", "secrets", NS, {})) in cluster.calls


@pytest.mark.parametrize(
    ("pod", "names"),
    [
        ({"volumes": [{"name": "x", "secret": {"secretName": "hand-made"}}]}, "hand-made"),
        (
            {
                "volumes": [
                    {
                        "name": "x",
                        "projected": {
                            "sources": [
                                {"configMap": {"name": "otel-gateway-config"}},
                                {"secret": {"name": "otel-client-ca"}},
                                {"secret": {"name": "hand-made", "items": [{"key": "k", "path": "k"}]}},
                            ]
                        },
                    }
                ]
            },
            "hand-made",
        ),
        (
            {
                "containers": [
                    {
                        "name": "side",
                        "image": "busybox:1.37",
                        "env": [
                            {"name": "PLAIN", "value": "x"},
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hand-made", "key": "token"}}},
                        ],
                    }
                ]
            },
            "hand-made",
        ),
        (
            {
                "containers": [
                    {
                        "name": "side",
                        "image": "busybox:1.37",
                        "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "hand-made"}}],
                    }
                ]
            },
            "hand-made",
        ),
        ({"imagePullSecrets": [{"name": "registry-creds"}]}, "registry-creds"),
        (
            {
                "initContainers": [
                    {
                        "name": "init",
                        "image": "busybox:1.37",
                        "env": [
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hand-made", "key": "token"}}}
                        ],
                    }
                ]
            },
            "hand-made",
        ),
        (
            {
                "initContainers": [
                    {"name": "init", "image": "busybox:1.37", "envFrom": [{"secretRef": {"name": "init-creds"}}]}
                ]
            },
            "init-creds",
        ),
        (
            {
                "ephemeralContainers": [
                    {"name": "debug", "image": "busybox:1.37", "envFrom": [{"secretRef": {"name": "hand-made"}}]}
                ]
            },
            "hand-made",
        ),
    ],
    ids=[
        "secret-volume",
        "projected-secret",
        "env-secretKeyRef",
        "envFrom-secretRef",
        "imagePullSecret",
        "initContainer-secretKeyRef",
        "initContainer-envFrom",
        "ephemeralContainer-envFrom",
    ],
)
def test_a_secret_vso_does_not_manage_is_refused(cluster: Cluster, pod: dict[str, Any], names: str) -> None:
    result = evaluate(ENFORCE, deployment(pod), cluster)
    assert result.status == "fail" and result.denied
    assert result.message == refused(names)


def test_every_offending_secret_is_named_once(cluster: Cluster) -> None:
    pod = {
        "volumes": [{"name": "x", "secret": {"secretName": "hand-made"}}],
        "containers": [
            {
                "name": "side",
                "image": "busybox:1.37",
                "envFrom": [{"secretRef": {"name": "hand-made"}}, {"secretRef": {"name": "ghost"}}],
            }
        ],
        "imagePullSecrets": [{"name": "registry-creds"}],
    }
    assert evaluate(ENFORCE, deployment(pod), cluster).message == refused("hand-made, ghost, registry-creds")


def test_a_secret_vso_will_create_passes_before_the_first_sync(cluster: Cluster) -> None:
    cluster.objects.append(static_secret("pending-tls"))
    pod = {"volumes": [{"name": "x", "secret": {"secretName": "pending-tls"}}]}
    assert evaluate(ENFORCE, deployment(pod), cluster).status == "pass"
    assert ("List", ("secrets.hashicorp.com/v1beta1", "vaultstaticsecrets", NS, {})) in cluster.calls


@pytest.mark.parametrize("case", ["create-false", "other-namespace", "exists-unlabelled"])
def test_a_declared_secret_vso_would_not_create_is_refused(cluster: Cluster, case: str) -> None:
    if case == "create-false":
        cluster.objects.append(static_secret("pending-tls", create=False))
    elif case == "other-namespace":
        cluster.objects.append(static_secret("pending-tls", namespace="apps"))
    else:  # VSO (overwrite: false) refuses to take over a Secret it does not own
        cluster.objects += [static_secret("pending-tls"), plain_secret("pending-tls")]
    pod = {"volumes": [{"name": "x", "secret": {"secretName": "pending-tls"}}]}
    assert evaluate(ENFORCE, deployment(pod), cluster).message == refused("pending-tls")


def test_a_vso_secret_of_another_namespace_is_refused(cluster: Cluster) -> None:
    pod = {"volumes": [{"name": "x", "secret": {"secretName": "elsewhere-tls"}}]}
    result = evaluate(ENFORCE, deployment(pod), cluster)
    assert result.denied and result.message == refused("elsewhere-tls")


def test_a_labelled_collector_outside_the_collector_namespaces_is_refused_without_lookups(cluster: Cluster) -> None:
    labelled = deployment(name="otel-agent", namespace="apps", labels=COLLECTOR_LABELS)
    labelled["spec"]["template"]["spec"]["volumes"] = [{"name": "x", "secret": {"secretName": "elsewhere-tls"}}]
    result = evaluate(ENFORCE, labelled, cluster)
    assert result.denied and result.message == (
        "Deployment apps/otel-agent is labelled as an OpenTelemetry collector but runs outside the collector "
        "namespaces (observability)"
    )
    # Kyverno may look Secrets up only in the collector namespaces: none is attempted elsewhere.
    assert all(args[2] == NS for _, args in cluster.calls), cluster.calls


def test_other_deployments_are_not_matched(cluster: Cluster) -> None:
    pod = {"volumes": [{"name": "x", "secret": {"secretName": "hand-made"}}]}
    other = deployment(pod, name="web", namespace="apps", labels={"app.kubernetes.io/component": "frontend"})
    result = evaluate(ENFORCE, other, cluster)
    assert result.status == "skip" and not result.denied and cluster.calls == []
    # and neither are deletions of collectors
    assert evaluate(ENFORCE, deployment(pod), cluster, operation="DELETE").status == "skip"


def test_updates_are_checked(cluster: Cluster) -> None:
    pod = {"volumes": [{"name": "x", "secret": {"secretName": "hand-made"}}]}
    assert evaluate(ENFORCE, deployment(pod), cluster, operation="UPDATE", old_object=deployment()).denied


def test_audit_admits_and_reports(cluster: Cluster) -> None:
    pod = {"volumes": [{"name": "x", "secret": {"secretName": "hand-made"}}]}
    result = evaluate(AUDIT, deployment(pod), cluster)
    assert result.status == "fail" and result.audited and not result.denied
    assert result.message == refused("hand-made")


def test_a_failed_lookup_fails_closed_in_enforce(cluster: Cluster) -> None:
    """Without VSO's CRD the pending-sync lookup fails: Enforce refuses, Audit admits and reports."""
    no_vso = Cluster(cluster.objects, served=frozenset({("v1", "secrets")}))
    pod = {"volumes": [{"name": "x", "secret": {"secretName": "pending-tls"}}]}
    result = evaluate(ENFORCE, deployment(pod), no_vso)
    assert result.status == "error" and result.denied and "failed to list resource" in result.message
    assert evaluate(AUDIT, deployment(pod), no_vso).audited
    # when every referenced Secret exists, VaultStaticSecrets are never needed
    assert evaluate(ENFORCE, deployment(), no_vso).status == "pass"


def probe(expression: str) -> dict[str, Any]:
    """A one-validation policy on Deployments, to exercise the resource-library stand-in directly."""
    return {
        "apiVersion": "policies.kyverno.io/v1",
        "kind": "ValidatingPolicy",
        "metadata": {"name": "probe"},
        "spec": {
            "validationActions": ["Deny"],
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["deployments"],
                    }
                ]
            },
            "validations": [{"expression": expression}],
        },
    }


@pytest.mark.parametrize(
    "expression",
    [
        'resource.List("v1", "secrets", "observability", {"app.kubernetes.io/managed-by": "hashicorp-vso"})'
        '.items.map(s, s.metadata.name) == ["otel-client-ca", "otel-gateway-tls"]',
        'resource.List("v1", "secrets", "").items.size() == 4'
        ' && resource.List("v1", "secrets", "apps").kind == "SecretList"',
        'resource.list("v1", "secrets", "observability").items.all(s, s.kind == "Secret" && s.apiVersion == "v1")',
        'type(resource.Get("v1", "secrets", "observability", "nope")) == type(null)'
        ' && resource.get("v1", "secrets", "observability", "hand-made").metadata.name == "hand-made"',
    ],
)
def test_resource_library_stand_in(cluster: Cluster, expression: str) -> None:
    assert evaluate(probe(expression), deployment(), cluster).status == "pass"


def test_resource_library_stand_in_errors_on_unserved_resources(cluster: Cluster) -> None:
    result = evaluate(
        probe('resource.List("example.com/v1", "widgets", "apps").items.size() == 0'), deployment(), cluster
    )
    assert result.status == "error" and result.denied and "failed to list resource" in result.message


# --- (c) the collectors the stacks declare ----------------------------------------------------------


def cluster_of(recording: Recording) -> tuple[Cluster, list[dict[str, Any]]]:
    """The stack's objects as they would be in the cluster once VSO synced its VaultStaticSecrets."""
    objects = recording.kubernetes_objects()
    synced = [
        vso_secret(o) for o in objects if o["kind"] == "VaultStaticSecret" and o["spec"]["destination"].get("create")
    ]
    declared = [o for o in objects if o["kind"] == "Secret" or o["kind"] == "VaultStaticSecret"]
    return Cluster([*declared, *synced]), objects


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_the_stacks_collectors_mount_only_vso_secrets(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    cluster, objects = cluster_of(recording)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    (policy,) = [o for o in objects if o["kind"] == "ValidatingPolicy" and o["metadata"]["name"] == POLICY_NAME]
    assert policy["spec"]["validationActions"] == ["Deny"]  # the shipped stacks enforce
    results = evaluate_all(policy, deployments, cluster)
    checked = [(d, r) for d, r in results if r.matched]
    assert checked, f"no collector Deployment among {[d['metadata']['name'] for d in deployments]}"
    assert [(d["metadata"]["name"], r.message) for d, r in checked if not r.passed] == []
    # Not vacuous: each of them is refused once it also mounts a hand-made Secret.
    for collector, _ in checked:
        spoiled = copy.deepcopy(collector)
        spoiled["spec"]["template"]["spec"].setdefault("volumes", []).append(
            {"name": "spoil", "secret": {"secretName": "hand-made"}}
        )
        cluster.objects.append(plain_secret("hand-made", collector["metadata"]["namespace"]))
        assert "hand-made" in evaluate(policy, spoiled, cluster).message


# --- the component and its chart values --------------------------------------------------------------

#: Every values path the component sets, each found at that place in charts/kyverno/values.yaml of
#: kyverno/kyverno at tag kyverno-chart-3.9.0 (commit ee97ce09538b09b6f1b03853cc41a62654d6a58f), read
#: through git and checked with rig.schemas.unknown_helm_keys (no unknown key). The chart's
#: values.yaml is not in ../shared/schemas; a new path must be checked the same way and added here.
VERIFIED_VALUE_PATHS = {
    "admissionController.replicas",
    "admissionController.podDisruptionBudget.enabled",
    "admissionController.podDisruptionBudget.minAvailable",
    "admissionController.rbac.serviceAccount.name",
    *(
        f"{image}.{part}"
        for image in (
            "admissionController.container.image",
            "admissionController.initContainer.image",
            "backgroundController.image",
            "cleanupController.image",
            "reportsController.image",
            "crds.migration.image",
            "webhooksCleanup.image",
            "test.image",
        )
        for part in ("registry", "repository", "tag")
    ),
    "reportsController.rbac.clusterRole.extraResources",
    "features.policyExceptions.enabled",
}


def leaf_paths(values: Any, prefix: str = "") -> set[str]:
    if isinstance(values, dict):
        return {p for k, v in values.items() for p in leaf_paths(v, f"{prefix}.{k}" if prefix else k)}
    return {prefix}


@pytest.mark.parametrize("background", [False, True])
def test_chart_values_use_only_verified_keys_and_pin_every_image(background: bool) -> None:
    values = kyverno_values(3, background)
    assert leaf_paths(values) <= VERIFIED_VALUE_PATHS
    images = [p.removesuffix(".tag") for p in leaf_paths(values) if p.endswith("image.tag")]
    assert len(images) == 8
    for image in images:
        node: Any = values
        for part in image.split("."):
            node = node[part]
        assert node["tag"] == versions.KYVERNO_VERSION and node["registry"] in ("reg.kyverno.io", "ghcr.io")
    controller = values["admissionController"]
    assert controller["replicas"] == 3 and controller["podDisruptionBudget"] == {"enabled": True, "minAvailable": 2}
    # No cluster-wide grant: the lookups are granted per collector namespace by the component.
    assert controller["rbac"] == {"serviceAccount": {"name": "kyverno-admission-controller"}}
    assert ("rbac" in values["reportsController"]) is background


PROGRAM = textwrap.dedent("""
    import pulumi_kubernetes as k8s
    import pulumi
    from components.admission import Admission, AdmissionSettings

    provider = k8s.Provider("k8s", kubeconfig="{}")
    Admission(
        "guardrails",
        AdmissionSettings(mode="Audit"),
        collector_namespaces=("observability",),
        opts=pulumi.ResourceOptions(provider=provider),
    )
""")


def test_component_installs_kyverno_then_the_policy(tmp_path: Path) -> None:
    program = tmp_path / "__main__.py"
    program.write_text(PROGRAM)
    recording = run_program("admission", {}, program=program)
    assert recording.error is None, recording.error
    component = recording.one("fedobs:guardrails:Admission", "guardrails")
    children = recording.children_of(component.urn)
    assert {c.type for c in children} == {
        "kubernetes:core/v1:Namespace",
        "kubernetes:helm.sh/v3:Release",
        "kubernetes:rbac.authorization.k8s.io/v1:Role",
        "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
        "kubernetes:policies.kyverno.io/v1:ValidatingPolicy",
    }
    assert all(c.name.startswith("guardrails-") and c.provider for c in children)
    namespace = next(c for c in children if c.type == "kubernetes:core/v1:Namespace")
    assert namespace.inputs["metadata"] == {
        "name": "kyverno",
        "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
    }
    release = next(c for c in children if c.type == "kubernetes:helm.sh/v3:Release")
    assert (release.inputs["chart"], release.inputs["version"], release.inputs["namespace"]) == (
        "kyverno",
        "3.9.0",
        "kyverno",
    )
    assert release.inputs["repositoryOpts"]["repo"] == "https://kyverno.github.io/kyverno/"
    assert release.inputs["values"] == kyverno_values(3, False) and namespace.urn in release.dependencies
    policy = next(c for c in children if c.type.endswith(":ValidatingPolicy"))
    assert release.urn in policy.dependencies
    role = next(c for c in children if c.type.endswith(":Role"))
    binding = next(c for c in children if c.type.endswith(":RoleBinding"))
    assert role.inputs["metadata"] == {"name": "kyverno-vso-lookups", "namespace": "observability"}
    assert role.inputs["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]},
        {"apiGroups": ["secrets.hashicorp.com"], "resources": ["vaultstaticsecrets"], "verbs": ["get", "list"]},
    ]
    assert binding.inputs["subjects"] == [
        {"kind": "ServiceAccount", "name": "kyverno-admission-controller", "namespace": "kyverno"}
    ]
    assert binding.inputs["roleRef"]["name"] == "kyverno-vso-lookups" and binding.urn in policy.dependencies
    assert {k: v for k, v in policy.inputs.items() if not k.startswith("__")} == require_vso_policy("Audit", (NS,))
    for obj in (namespace.inputs, policy.inputs):
        assert validate_kubernetes_object({k: v for k, v in obj.items() if not k.startswith("__")}) == []


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_lookup_grants_wait_for_the_collector_namespace(stack: str, request: pytest.FixtureRequest) -> None:
    """The stack makes the whole component wait for the namespace VSO creates for the collector
    (``depends_on``); the grants inside it are its children, so they wait through their parent."""
    recording: Recording = request.getfixturevalue(stack)
    component = recording.one("fedobs:guardrails:Admission")
    (namespace,) = [r for r in recording.of_type("kubernetes:core/v1:Namespace") if r.get("metadata.name") == NS]
    assert namespace.parent != component.urn and namespace.urn in component.dependencies
    grants = [c for c in recording.children_of(component.urn) if c.type.endswith((":Role", ":RoleBinding"))]
    assert len(grants) == 2 and all(g.get("metadata.namespace") == NS for g in grants)
