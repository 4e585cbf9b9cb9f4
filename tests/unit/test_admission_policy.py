"""The Kyverno guardrail's policies: their objects against the CRD, their CEL run on a real CEL engine
(cel-expr-python) with Kyverno's resource library stood in for, the collectors the stacks declare, and
the Admission component under mocks. The catalogue of evasion attempts is in test_admission_evasions.py."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest

from components import versions
from components.admission import LOOKUP_RULES, UNFILTERED_RESOURCES, AdmissionSettings, kyverno_values
from components.admission_policies import (
    PLACEMENT_POLICY_NAME,
    POLICY_NAME,
    SECRETS_POLICY_NAME,
    admission_policies,
    placement_policy,
    require_vso_policy,
    vso_secrets_policy,
)
from offline.engine import Recording, run_program
from rig.kyverno_cel import Cluster, PolicyCompileError, compile_policy, evaluate
from rig.schemas import validate_kubernetes_object
from tests.support.admission import (
    COLLECTOR_LABELS,
    DEPLOYMENT_CONTROLLER,
    NS,
    PULUMI,
    REPLICASET_CONTROLLER,
    VSO,
    collector_namespace,
    plain_secret,
    pod_of,
    replica_set_of,
    static_secret,
    synced,
    with_ephemeral_container,
    workload,
)

ENFORCE = require_vso_policy("Enforce", (NS,))
AUDIT = require_vso_policy("Audit", (NS,))
SECRETS = vso_secrets_policy("Enforce", (NS,))
PLACEMENT = placement_policy("Enforce", (NS,))
NOT_OWNED = "not owned by a VaultStaticSecret of its namespace"


@pytest.fixture
def cluster() -> Cluster:
    return collector_namespace()


def refused(reasons: str, subject: str = f"Deployment {NS}/otel-gateway") -> str:
    return (
        f"{subject} references Secret(s) the Vault Secrets Operator did not create for a VaultStaticSecret of "
        f"its namespace: {reasons}"
    )


def deployment(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return workload("Deployment", extra)


# --- (a) the objects against the ValidatingPolicy CRD ----------------------------------------------------


@pytest.mark.parametrize(
    "policies",
    [
        admission_policies("Enforce", (NS,)),
        admission_policies("Audit", (NS, "observability-2")),
        admission_policies("Enforce", (NS,), background_scan=True),
        admission_policies("Enforce", ()),
    ],
    ids=["enforce", "audit-two-namespaces", "background", "no-collector-namespace"],
)
def test_policies_are_valid_against_the_crd(policies: list[dict[str, Any]]) -> None:
    for policy in policies:
        assert policy["apiVersion"] == "policies.kyverno.io/v1" and policy["kind"] == "ValidatingPolicy"
        assert validate_kubernetes_object(policy) == [], policy["metadata"]["name"]
        compile_policy(policy)
    names = [p["metadata"]["name"] for p in policies]
    assert names == (
        [PLACEMENT_POLICY_NAME] if len(policies) == 1 else [POLICY_NAME, SECRETS_POLICY_NAME, PLACEMENT_POLICY_NAME]
    )


def test_schema_check_is_not_vacuous() -> None:
    broken = copy.deepcopy(ENFORCE)
    broken["spec"]["validationAction"] = broken["spec"].pop("validationActions")
    broken["spec"]["validations"][0]["messageExpresion"] = "'x'"
    broken["spec"]["failurePolicy"] = "Deny"
    broken["spec"]["matchConstraints"]["namespaceSelectr"] = {}
    problems = " ".join(validate_kubernetes_object(broken))
    for key in ("validationAction", "messageExpresion", "Deny", "namespaceSelectr"):
        assert key in problems


def test_modes_map_to_validation_actions_and_failure_policies() -> None:
    for policy in admission_policies("Enforce", (NS,)):
        assert policy["spec"]["validationActions"] == ["Deny"] and policy["spec"]["failurePolicy"] == "Fail"
    for policy in admission_policies("Audit", (NS,)):
        assert policy["spec"]["validationActions"] == ["Audit"] and policy["spec"]["failurePolicy"] == "Ignore"
    with pytest.raises(ValueError, match="'Audit' or 'Enforce'"):
        AdmissionSettings(mode="Warn")  # type: ignore[arg-type]


def test_every_expression_compiles_and_broken_ones_do_not() -> None:
    for spoil in ("size(variables.refused) == ", "'x'", "object.metadata.name", "size(variables.later) == 0"):
        broken = copy.deepcopy(ENFORCE)
        broken["spec"]["validations"][0]["expression"] = spoil
        with pytest.raises(PolicyCompileError):
            compile_policy(broken)
    broken = copy.deepcopy(ENFORCE)
    broken["spec"]["variables"][1]["expression"] = "variables.containers"  # defined only after it
    with pytest.raises(PolicyCompileError, match="defined before"):
        compile_policy(broken)


def test_the_pod_rules_cover_every_way_a_pod_comes_to_run() -> None:
    """Kyverno would not auto-generate controller rules for a policy with several resource rules
    (pkg/cel/autogen/support.go ``CanAutoGen``): each kind is matched here, in the collector
    namespaces only (the webhook's namespaceSelector), never a DELETE."""
    constraints = ENFORCE["spec"]["matchConstraints"]
    matched = {
        (group, resource, operation)
        for rule in constraints["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    }
    expected = {("", "pods", "CREATE"), ("", "pods/ephemeralcontainers", "UPDATE")} | {
        (group, resource, operation)
        for group, resource in [
            ("", "replicationcontrollers"),
            *(("apps", r) for r in ("deployments", "statefulsets", "daemonsets", "replicasets")),
            ("batch", "jobs"),
            ("batch", "cronjobs"),
        ]
        for operation in ("CREATE", "UPDATE")
    }
    assert matched == expected
    assert constraints["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [NS]}]
    }
    assert "objectSelector" not in constraints and "matchConditions" not in ENFORCE["spec"]


# --- (b) the CEL, evaluated ------------------------------------------------------------------------


def test_a_compliant_collector_passes_with_one_get_per_secret_and_owner(cluster: Cluster) -> None:
    result = evaluate(ENFORCE, deployment(), cluster, user=PULUMI)
    assert result.matched and result.status == "pass" and not result.denied
    vss = "secrets.hashicorp.com/v1beta1"
    assert cluster.calls == [
        ("Get", ("v1", "secrets", NS, "otel-gateway-tls")),
        ("Get", (vss, "vaultstaticsecrets", NS, "otel-gateway-tls")),
        ("Get", ("v1", "secrets", NS, "otel-client-ca")),
        ("Get", (vss, "vaultstaticsecrets", NS, "otel-client-ca")),
    ]


@pytest.mark.parametrize(
    ("extra", "names"),
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
        ({"imagePullSecrets": [{"name": "vault-ca"}]}, "vault-ca"),
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
                    {"name": "init", "image": "busybox:1.37", "envFrom": [{"secretRef": {"name": "vault-ca"}}]}
                ]
            },
            "vault-ca",
        ),
        (
            {
                "ephemeralContainers": [
                    {"name": "debug", "image": "busybox:1.37", "envFrom": [{"secretRef": {"name": "hand-made"}}]}
                ]
            },
            "hand-made",
        ),
        (
            {
                "volumes": [
                    {
                        "name": "x",
                        "csi": {"driver": "secrets-store.csi.k8s.io", "nodePublishSecretRef": {"name": "hand-made"}},
                    },
                    {"name": "y", "azureFile": {"secretName": "vault-ca", "shareName": "s"}},
                ]
            },
            "hand-made, vault-ca",
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
        "volume-plugin-secrets",
    ],
)
def test_every_kind_of_secret_reference_is_judged(cluster: Cluster, extra: dict[str, Any], names: str) -> None:
    for kind in ("Deployment", "Pod"):
        result = evaluate(ENFORCE, workload(kind, extra), cluster)
        assert result.status == "fail" and result.denied
        reasons = ", ".join(f"{n} ({NOT_OWNED})" for n in names.split(", "))
        assert result.message == refused(reasons, f"{kind} {NS}/otel-gateway")


def test_every_refused_secret_is_named_once_with_its_reason(cluster: Cluster) -> None:
    extra = {
        "volumes": [{"name": "x", "secret": {"secretName": "hand-made"}}],
        "containers": [
            {
                "name": "side",
                "image": "busybox:1.37",
                "envFrom": [{"secretRef": {"name": "hand-made"}}, {"secretRef": {"name": "ghost"}}],
            }
        ],
        "imagePullSecrets": [{"name": "hand-made"}],
    }
    assert evaluate(ENFORCE, workload("Pod", extra), cluster).message == refused(
        f"hand-made ({NOT_OWNED}), ghost (does not exist)", f"Pod {NS}/otel-gateway"
    )
    # the Secret is looked up once, however often it is referenced
    assert [c for c in cluster.calls if c == ("Get", ("v1", "secrets", NS, "hand-made"))] == [
        ("Get", ("v1", "secrets", NS, "hand-made"))
    ]


def test_a_workload_may_name_a_secret_vso_will_create_but_its_pods_wait_for_it(cluster: Cluster) -> None:
    """One ``pulumi up`` applies a VaultStaticSecret and the collector before VSO's first sync: the
    workload is admitted; its Pods are refused until VSO has created the Secret (the ReplicaSet
    controller retries), then admitted."""
    pending = static_secret("pending-tls")
    cluster.objects.append(pending)
    extra = {"volumes": [{"name": "x", "secret": {"secretName": "pending-tls"}}]}
    collector = deployment(extra)
    assert evaluate(ENFORCE, collector, cluster).status == "pass"
    assert ("List", ("secrets.hashicorp.com/v1beta1", "vaultstaticsecrets", NS, {})) in cluster.calls
    pod = pod_of(replica_set_of(collector))
    result = evaluate(ENFORCE, pod, cluster, user=REPLICASET_CONTROLLER)
    assert result.denied and result.message == refused(
        "pending-tls (does not exist)", f"Pod {NS}/otel-gateway-5d4f8b7c9-x2x9z"
    )
    cluster.objects.append(synced(pending))
    assert evaluate(ENFORCE, pod, cluster, user=REPLICASET_CONTROLLER).status == "pass"


@pytest.mark.parametrize("case", ["create-false", "other-namespace", "other-vault-auth", "exists-unowned"])
def test_a_declared_secret_vso_would_not_create_is_refused(cluster: Cluster, case: str) -> None:
    reason = "does not exist, and no VaultStaticSecret of its namespace syncing through VaultAuth vault creates it"
    if case == "create-false":
        cluster.objects.append(static_secret("pending-tls", create=False))
    elif case == "other-namespace":
        cluster.objects.append(static_secret("pending-tls", namespace="apps"))
    elif case == "other-vault-auth":
        cluster.objects.append(static_secret("pending-tls", auth="intruders-vault"))
    else:  # VSO (overwrite: false) refuses to take over a Secret it does not own
        cluster.objects += [static_secret("pending-tls"), plain_secret("pending-tls")]
        reason = NOT_OWNED
    extra = {"volumes": [{"name": "x", "secret": {"secretName": "pending-tls"}}]}
    assert evaluate(ENFORCE, deployment(extra), cluster).message == refused(f"pending-tls ({reason})")


def test_a_vso_secret_of_another_namespace_does_not_exist_here(cluster: Cluster) -> None:
    extra = {"volumes": [{"name": "x", "secret": {"secretName": "elsewhere-tls"}}]}
    result = evaluate(ENFORCE, workload("Pod", extra), cluster)
    assert result.denied and result.message == refused("elsewhere-tls (does not exist)", f"Pod {NS}/otel-gateway")


def test_other_namespaces_and_deletions_are_not_matched(cluster: Cluster) -> None:
    extra = {"volumes": [{"name": "x", "secret": {"secretName": "hand-made"}}]}
    for kind in ("Deployment", "Pod", "CronJob"):
        elsewhere = workload(kind, extra, name="web", namespace="apps")
        for policy in (ENFORCE, SECRETS, PLACEMENT):
            assert evaluate(policy, elsewhere, cluster).status == "skip"
    assert (
        evaluate(
            SECRETS, plain_secret("x", "apps", labels={"app.kubernetes.io/managed-by": "hashicorp-vso"}), cluster
        ).status
        == "skip"
    )
    assert cluster.calls == []
    assert evaluate(ENFORCE, deployment(extra), cluster, operation="DELETE").status == "skip"
    # a plain Pod update cannot add a Secret reference (the Pod spec is immutable but for images)
    pod = workload("Pod", extra)
    assert evaluate(ENFORCE, pod, cluster, operation="UPDATE", old_object=pod).status == "skip"


def test_updates_are_checked(cluster: Cluster) -> None:
    extra = {"volumes": [{"name": "x", "secret": {"secretName": "hand-made"}}]}
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob"):
        assert evaluate(ENFORCE, workload(kind, extra), cluster, operation="UPDATE", old_object=workload(kind)).denied


def test_audit_admits_and_reports(cluster: Cluster) -> None:
    extra = {"volumes": [{"name": "x", "secret": {"secretName": "hand-made"}}]}
    result = evaluate(AUDIT, deployment(extra), cluster)
    assert result.status == "fail" and result.audited and not result.denied
    assert result.message == refused(f"hand-made ({NOT_OWNED})")


def test_a_failed_lookup_fails_closed_in_enforce(cluster: Cluster) -> None:
    """Without VSO's CRD the owner lookup fails: Enforce refuses, Audit admits and reports."""
    no_vso = Cluster(cluster.objects, served=frozenset({("v1", "secrets")}))
    result = evaluate(ENFORCE, deployment(), no_vso)
    assert result.status == "error" and result.denied and "failed to get resource" in result.message
    assert evaluate(AUDIT, deployment(), no_vso).audited
    secret = plain_secret("anything")
    assert evaluate(SECRETS, secret, no_vso).denied  # which VaultStaticSecret names it cannot be known
    assert evaluate(vso_secrets_policy("Audit", (NS,)), secret, no_vso).audited
    # a Pod that references no Secret needs no lookup
    bare = workload("Pod")
    bare["spec"]["volumes"] = []
    assert evaluate(ENFORCE, bare, no_vso).status == "pass"


def test_the_secrets_rule_admits_vso_and_anyone_writing_other_secrets(cluster: Cluster) -> None:
    gateway = synced(static_secret("otel-gateway-tls"))
    for operation, old in (("CREATE", None), ("UPDATE", gateway)):
        assert evaluate(SECRETS, gateway, cluster, operation, old, user=VSO).status == "pass"
    # VSO re-creating a Secret whose type changed: it first drops the labels (helpers/secrets.go)
    unlabelled = copy.deepcopy(gateway)
    del unlabelled["metadata"]["labels"]
    assert evaluate(SECRETS, unlabelled, cluster, "UPDATE", gateway, user=VSO).status == "pass"
    for secret in (
        plain_secret("vault-ca"),
        plain_secret("app-config", labels={"app.kubernetes.io/managed-by": "Helm"}),
    ):
        assert evaluate(SECRETS, secret, cluster, user=PULUMI).status == "pass"
        assert evaluate(SECRETS, secret, cluster, "UPDATE", secret, user=PULUMI).status == "pass"


def test_placement(cluster: Cluster) -> None:
    for kind in ("Deployment", "DaemonSet", "CronJob", "Pod"):
        labelled = workload(kind, name="otel-agent", namespace="apps", labels=COLLECTOR_LABELS)
        result = evaluate(PLACEMENT, labelled, cluster)
        assert result.denied and result.message == (
            f"{kind} apps/otel-agent is labelled as an OpenTelemetry collector but runs outside the collector "
            "namespaces (observability)"
        )
        assert evaluate(PLACEMENT, workload(kind, namespace=NS, labels=COLLECTOR_LABELS), cluster).status == "pass"
        assert evaluate(PLACEMENT, workload(kind, name="web", namespace="apps"), cluster).status == "skip"
    # Kyverno looks nothing up for it
    assert cluster.calls == []
    nowhere = placement_policy("Enforce", ())
    labelled = workload("Deployment", namespace=NS, labels=COLLECTOR_LABELS)
    assert evaluate(nowhere, labelled, cluster).message.endswith(
        "outside the collector namespaces (none is configured)"
    )


def probe(
    expression: str, resources: tuple[str, ...] = ("deployments",), operations: tuple[str, ...] = ("CREATE",)
) -> dict[str, Any]:
    """A one-validation policy, to exercise the rig's stand-ins directly."""
    return {
        "apiVersion": "policies.kyverno.io/v1",
        "kind": "ValidatingPolicy",
        "metadata": {"name": "probe"},
        "spec": {
            "validationActions": ["Deny"],
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["", "apps"],
                        "apiVersions": ["v1"],
                        "operations": list(operations),
                        "resources": list(resources),
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
        'resource.List("v1", "secrets", "").items.size() == 5'
        ' && resource.List("v1", "secrets", "apps").kind == "SecretList"',
        'resource.list("v1", "secrets", "observability").items.all(s, s.kind == "Secret" && s.apiVersion == "v1")',
        'type(resource.Get("v1", "secrets", "observability", "nope")) == type(null)'
        ' && resource.get("v1", "secrets", "observability", "hand-made").metadata.name == "hand-made"',
        '["b", "b", "c", "a", "c"].distinct() == ["b", "c", "a"] && [].distinct() == []',
        'request.userInfo.username == "system:serviceaccount:test:pulumi" && !has(request.subResource)',
    ],
)
def test_resource_library_and_lists_stand_ins(cluster: Cluster, expression: str) -> None:
    assert evaluate(probe(expression), deployment(), cluster).status == "pass"


def test_resource_library_stand_in_errors_on_unserved_resources(cluster: Cluster) -> None:
    result = evaluate(
        probe('resource.List("example.com/v1", "widgets", "apps").items.size() == 0'), deployment(), cluster
    )
    assert result.status == "error" and result.denied and "failed to list resource" in result.message


def test_subresources_are_matched_as_the_api_server_does(cluster: Cluster) -> None:
    pod = workload("Pod")
    check = 'request.subResource == "ephemeralcontainers" && request.userInfo.username == "someone"'
    for resources, matched in (
        (("pods",), False),
        (("pods/ephemeralcontainers",), True),
        (("pods/*",), True),
        (("*",), False),
        (("*/*",), True),
    ):
        result = evaluate(
            probe(check, resources, ("UPDATE",)),
            pod,
            cluster,
            "UPDATE",
            pod,
            subresource="ephemeralcontainers",
            user="someone",
        )
        assert result.matched is matched, resources
        assert result.status in ("skip", "pass")
    assert evaluate(probe("true", ("pods/ephemeralcontainers",)), pod, cluster).status == "skip"


# --- (c) the collectors the stacks declare ----------------------------------------------------------


def cluster_of(recording: Recording, *, vso_synced: bool = True) -> tuple[Cluster, list[dict[str, Any]]]:
    """The stack's objects as they would be in the cluster (each VaultStaticSecret with the UID the API
    server gave it) and, once VSO synced, the Secrets VSO created for them."""
    objects = recording.kubernetes_objects()
    statics = [
        {**o, "metadata": {**o["metadata"], "uid": f"uid-{o['metadata']['name']}"}}
        for o in objects
        if o["kind"] == "VaultStaticSecret"
    ]
    secrets = [o for o in objects if o["kind"] == "Secret"]
    made = [synced(s) for s in statics if s["spec"]["destination"].get("create")] if vso_synced else []
    return Cluster([*statics, *secrets, *made]), objects


def stack_policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = [POLICY_NAME, SECRETS_POLICY_NAME, PLACEMENT_POLICY_NAME]
    policies = sorted(
        (o for o in objects if o["kind"] == "ValidatingPolicy"), key=lambda p: names.index(p["metadata"]["name"])
    )
    assert [p["metadata"]["name"] for p in policies] == names
    assert all(p["spec"]["validationActions"] == ["Deny"] for p in policies)  # the shipped stacks enforce
    return policies


def judge(policies: list[dict[str, Any]], obj: dict[str, Any], cluster: Cluster, **request: Any) -> list[str]:
    """Every refusal of ``obj`` by any of ``policies``; [] when all admit it."""
    return [r.message for p in policies for r in [evaluate(p, obj, cluster, **request)] if not r.passed]


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_the_stacks_collectors_are_admitted_in_every_request_that_runs_them(
    stack: str, request: pytest.FixtureRequest
) -> None:
    """Each collector Deployment (Pulumi), its ReplicaSet (Deployment controller), its Pod (ReplicaSet
    controller), VSO's rollout restart, a debug container without Secrets, VSO writing its Secrets
    and Pulumi writing the VaultConnection's CA: nothing is refused."""
    recording: Recording = request.getfixturevalue(stack)
    cluster, objects = cluster_of(recording)
    policies = stack_policies(objects)
    collectors = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["namespace"] == NS]
    assert [c["metadata"]["name"] for c in collectors] == [{"hub": "otel-gateway", "edge": "otel-collector"}[stack]]
    for collector in collectors:
        assert judge(policies, collector, cluster, user=PULUMI) == []
        replica_set = replica_set_of(collector)
        assert judge(policies, replica_set, cluster, user=DEPLOYMENT_CONTROLLER) == []
        pod = pod_of(replica_set)
        assert judge(policies, pod, cluster, user=REPLICASET_CONTROLLER) == []
        restarted = copy.deepcopy(collector)
        restarted["spec"]["template"]["metadata"].setdefault("annotations", {})[
            "vso.secrets.hashicorp.com/restartedAt"
        ] = "now"
        assert judge(policies, restarted, cluster, operation="UPDATE", old_object=collector, user=VSO) == []
        debug = with_ephemeral_container(
            pod, {"name": "debug", "image": "busybox:1.37", "targetContainerName": "otelcol"}
        )
        assert (
            judge(policies, debug, cluster, operation="UPDATE", old_object=pod, subresource="ephemeralcontainers") == []
        )
        # Not vacuous: each request is refused once it also references a hand-made Secret.
        cluster.objects.append(plain_secret("hand-made", NS))
        spoiled = copy.deepcopy(collector)
        spoiled["spec"]["template"]["spec"]["volumes"].append({"name": "spoil", "secret": {"secretName": "hand-made"}})
        for obj in (spoiled, replica_set_of(spoiled), pod_of(replica_set_of(spoiled))):
            assert any(f"hand-made ({NOT_OWNED})" in m for m in judge(policies, obj, cluster))
    for secret in cluster.objects:
        if secret["kind"] != "Secret":
            continue
        writer = VSO if secret["metadata"].get("ownerReferences") else PULUMI
        assert judge(policies, secret, cluster, user=writer) == []
        assert judge(policies, secret, cluster, operation="UPDATE", old_object=secret, user=writer) == []


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_before_vsos_first_sync_the_collector_is_admitted_and_its_pods_wait(
    stack: str, request: pytest.FixtureRequest
) -> None:
    recording: Recording = request.getfixturevalue(stack)
    cluster, objects = cluster_of(recording, vso_synced=False)
    policies = stack_policies(objects)
    (collector,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["namespace"] == NS]
    assert judge(policies, collector, cluster, user=PULUMI) == []
    pod = pod_of(replica_set_of(collector))
    (message,) = judge(policies, pod, cluster, user=REPLICASET_CONTROLLER)
    assert (
        message.startswith(f"Pod {NS}/{pod['metadata']['name']} references Secret(s)") and "(does not exist)" in message
    )


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
    "config.resourceFiltersExclude",
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
    # ReplicaSets reach the policies (the chart's default resourceFilters skip every one)
    assert values["config"] == {"resourceFiltersExclude": ["[ReplicaSet,*,*]", "[ReplicaSet/?*,*,*]"]}
    assert values["config"]["resourceFiltersExclude"] == UNFILTERED_RESOURCES


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
    # (resources register concurrently: their order in the recording is not the program's)
    order = ["guardrails-policy", "guardrails-secrets-policy", "guardrails-placement-policy"]
    policies = sorted((c for c in children if c.type.endswith(":ValidatingPolicy")), key=lambda c: order.index(c.name))
    assert [p.name for p in policies] == order
    role = next(c for c in children if c.type.endswith(":Role"))
    binding = next(c for c in children if c.type.endswith(":RoleBinding"))
    assert role.inputs["metadata"] == {"name": "kyverno-vso-lookups", "namespace": "observability"}
    # Secrets are read one by one (GET), never listed; VaultStaticSecrets by name and as a list.
    assert (
        role.inputs["rules"]
        == LOOKUP_RULES
        == [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            {"apiGroups": ["secrets.hashicorp.com"], "resources": ["vaultstaticsecrets"], "verbs": ["get", "list"]},
        ]
    )
    assert binding.inputs["subjects"] == [
        {"kind": "ServiceAccount", "name": "kyverno-admission-controller", "namespace": "kyverno"}
    ]
    assert binding.inputs["roleRef"]["name"] == "kyverno-vso-lookups"
    for policy, expected in zip(policies, admission_policies("Audit", (NS,)), strict=True):
        assert release.urn in policy.dependencies and binding.urn in policy.dependencies
        assert {k: v for k, v in policy.inputs.items() if not k.startswith("__")} == expected
    for obj in (namespace.inputs, *(p.inputs for p in policies)):
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
