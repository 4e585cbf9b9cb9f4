"""Tests of the schema-validation harness in rig/schemas.py (offline, fast)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from rig import schemas
from rig.schemas import (
    apply_defaults,
    kubernetes_schema_version,
    register_chart,
    schemas_dir,
    unknown_helm_keys,
    unknown_keys,
    validate_helm_values,
    validate_kubernetes_object,
)

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "apps", "labels": {"app.kubernetes.io/name": "web"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:1.27",
                        "ports": [{"containerPort": 8080, "name": "http"}],
                        "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "50m"}},
                    }
                ]
            },
        },
    },
}

VAULT_CONNECTION: dict[str, Any] = {
    "apiVersion": "secrets.hashicorp.com/v1beta1",
    "kind": "VaultConnection",
    "metadata": {"name": "hub-vault", "namespace": "vso"},
    "spec": {
        "address": "https://vault.vault.svc:8200",
        "caCertSecretRef": "vault-ca",
        "tlsServerName": "vault.vault.svc",
        "skipTLSVerify": False,
        "timeout": "30s",
    },
}

VAULT_STATIC_SECRET: dict[str, Any] = {
    "apiVersion": "secrets.hashicorp.com/v1beta1",
    "kind": "VaultStaticSecret",
    "metadata": {"name": "grafana-admin", "namespace": "observability"},
    "spec": {
        "vaultAuthRef": "default",
        "mount": "kv",
        "type": "kv-v2",
        "path": "observability/grafana",
        "refreshAfter": "90m",
        "destination": {"name": "grafana-admin", "create": True},
        "rolloutRestartTargets": [{"kind": "Deployment", "name": "grafana"}],
    },
}

CERTIFICATE: dict[str, Any] = {
    "apiVersion": "cert-manager.io/v1",
    "kind": "Certificate",
    "metadata": {"name": "vault-server-tls", "namespace": "vault"},
    "spec": {
        "secretName": "vault-server-tls",
        "issuerRef": {"name": "fedobs-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
        "commonName": "vault.vault.svc",
        "dnsNames": ["vault.vault.svc", "*.vault-internal"],
        "ipAddresses": ["127.0.0.1"],
        "duration": "2160h",
        "renewBefore": "360h",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "usages": ["server auth", "client auth"],
    },
}


def with_changes(obj: dict[str, Any], path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    """A deep copy of ``obj`` with the dotted ``path`` set to ``value`` (or deleted)."""
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return out


# --- schemas_dir -----------------------------------------------------------------------------------


def test_schemas_dir_defaults_beside_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDOBS_SCHEMAS", raising=False)
    repo_root = Path(schemas.__file__).resolve().parents[1]
    assert schemas_dir() == repo_root.parent / "shared" / "schemas"
    assert (schemas_dir() / "index.json").is_file()


def test_schemas_dir_env_override_and_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDOBS_SCHEMAS", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"FEDOBS_SCHEMAS.*index\.json|index\.json.*FEDOBS_SCHEMAS"):
        schemas_dir()


# --- built-in kinds ----------------------------------------------------------------------------------


def test_valid_deployment_passes() -> None:
    assert validate_kubernetes_object(DEPLOYMENT) == []


def test_misspelled_deployment_field_names_kind_name_and_path() -> None:
    broken = with_changes(DEPLOYMENT, "spec.replicas", delete=True)
    broken["spec"]["replica"] = 2
    problems = validate_kubernetes_object(broken)
    assert len(problems) == 1, problems
    assert problems[0].startswith("Deployment/web: spec.replica:")
    assert "unknown field" in problems[0]


def test_nested_deployment_errors_carry_the_json_path() -> None:
    broken = copy.deepcopy(DEPLOYMENT)
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    problems = validate_kubernetes_object(broken)
    assert any("spec.template.spec.containers[0].ports[0].containerPort:" in p for p in problems), problems
    assert any("spec.template.spec.containers[0].imagePullPolicyy: unknown field" in p for p in problems)


def test_missing_required_builtin_field_fails() -> None:
    problems = validate_kubernetes_object(with_changes(DEPLOYMENT, "spec.selector", delete=True))
    assert problems and "'selector' is a required property" in problems[0]


@pytest.mark.parametrize(
    ("asked", "used"), [("1.33", "1.33.0"), ("v1.33.4", "1.33.0"), ("1.99", "1.37.0"), ("1.9", "1.25.0")]
)
def test_kubernetes_version_picks_the_closest_shipped_schema(asked: str, used: str) -> None:
    assert kubernetes_schema_version(asked) == used


# --- custom resources -----------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [VAULT_CONNECTION, VAULT_STATIC_SECRET, CERTIFICATE], ids=lambda o: o["kind"])
def test_valid_custom_resources_pass(obj: dict[str, Any]) -> None:
    assert validate_kubernetes_object(obj) == []


def test_vault_static_secret_misspelled_key_is_unknown() -> None:
    broken = with_changes(VAULT_STATIC_SECRET, "spec.refreshAftr", "90m")
    problems = validate_kubernetes_object(broken)
    assert len(problems) == 1, problems
    assert problems[0].startswith("VaultStaticSecret/grafana-admin: spec.refreshAftr: unknown field")


def test_vault_static_secret_compound_duration_fails_the_pattern() -> None:
    problems = validate_kubernetes_object(with_changes(VAULT_STATIC_SECRET, "spec.refreshAfter", "1h30m"))
    assert len(problems) == 1, problems
    assert "spec.refreshAfter:" in problems[0] and "does not match" in problems[0]


def test_vault_connection_without_skip_tls_verify_passes_only_through_defaulting() -> None:
    obj = with_changes(VAULT_CONNECTION, "spec.skipTLSVerify", delete=True)
    assert validate_kubernetes_object(obj) == []
    # the same object against the raw CRD schema, without the API server's defaulting, is invalid
    crd = yaml.safe_load(
        (schemas_dir() / "vault-secrets-operator/crds/secrets.hashicorp.com_vaultconnections.yaml").read_text()
    )
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]
    errors = list(jsonschema.Draft4Validator(schema).iter_errors(obj))
    assert [e.message for e in errors] == ["'skipTLSVerify' is a required property"]
    assert apply_defaults(copy.deepcopy(obj), schema)["spec"]["skipTLSVerify"] is False


def test_custom_resource_metadata_is_checked_against_object_meta() -> None:
    broken = with_changes(VAULT_STATIC_SECRET, "metadata.lables", {"a": "b"})
    broken["metadata"]["annotations"] = {"note": 1}
    problems = validate_kubernetes_object(broken)
    assert any("metadata.lables: unknown field" in p for p in problems), problems
    assert any("metadata.annotations.note:" in p and "not of type 'string'" in p for p in problems), problems


def test_cluster_issuer_unknown_nested_key_and_valid_one() -> None:
    issuer: dict[str, Any] = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": "fedobs-ca"},
        "spec": {"ca": {"secretName": "fedobs-root-ca"}},
    }
    assert validate_kubernetes_object(issuer) == []
    issuer["spec"]["ca"]["secretNmae"] = issuer["spec"]["ca"].pop("secretName")
    assert validate_kubernetes_object(issuer) == [
        "ClusterIssuer/fedobs-ca: spec.ca: 'secretName' is a required property",
        "ClusterIssuer/fedobs-ca: spec.ca.secretNmae: unknown field "
        "(the cert-manager.io/v1 ClusterIssuer schema has no such key)",
    ]


def test_kyverno_pattern_below_preserve_unknown_fields_is_free() -> None:
    policy: dict[str, Any] = {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": "require-team-label"},
        "spec": {
            "validationFailureAction": "Enforce",
            "rules": [
                {
                    "name": "team-label",
                    "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                    "validate": {
                        "message": "team label",
                        "pattern": {"metadata": {"labels": {"team": "?*"}}},
                    },
                }
            ],
        },
    }
    assert validate_kubernetes_object(policy) == []
    policy["spec"]["rules"][0]["validatee"] = {}
    assert validate_kubernetes_object(policy) == [
        "ClusterPolicy/require-team-label: spec.rules[0].validatee: unknown field "
        "(the kyverno.io/v1 ClusterPolicy schema has no such key)"
    ]


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"}},
        {"apiVersion": "apps/v1", "kind": "Deploymnt", "metadata": {"name": "m"}},
        {"apiVersion": "cert-manager.io/v2", "kind": "Certificate", "metadata": {"name": "m"}},
        {"apiVersion": "secrets.hashicorp.com/v1beta1", "kind": "VaultSecret", "metadata": {"name": "m"}},
        {"kind": "Deployment", "metadata": {"name": "m"}},
    ],
    ids=["unknown-group", "unknown-builtin-kind", "unknown-crd-version", "unknown-crd-kind", "no-apiVersion"],
)
def test_unknown_api_version_or_kind_is_a_problem(obj: dict[str, Any]) -> None:
    problems = validate_kubernetes_object(obj)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{obj['kind']}/m: <root>:")


# --- unknown_keys ---------------------------------------------------------------------------------


def test_unknown_keys_rules() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "items": {"type": "array", "items": {"type": "object", "properties": {"a": {}}}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "bare": {"type": "object"},
                    "nested": {
                        "type": "object",
                        "additionalProperties": {"type": "object", "properties": {"x": {"type": "string"}}},
                    },
                },
            }
        },
    }
    obj = {
        "spec": {
            "labels": {"any.key/here": "v"},
            "items": [{"a": 1}, {"b": 2}],
            "free": {"anything": {"deep": [1]}},
            "bare": {"pruned": 1},
            "nested": {"k": {"x": "1", "y": "2"}},
            "extra": 1,
        },
        "top": 1,
    }
    assert sorted(unknown_keys(obj, schema)) == sorted(
        ["spec.items[1].b", "spec.bare.pruned", "spec.nested.k.y", "spec.extra", "top"]
    )


# --- Helm values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chart", ["vault", "vault-secrets-operator"])
def test_chart_defaults_pass(chart: str) -> None:
    folder = {"vault": "vault-helm", "vault-secrets-operator": "vault-secrets-operator"}[chart]
    defaults = yaml.safe_load((schemas_dir() / folder / "values.yaml").read_text())
    assert validate_helm_values(chart, defaults) == []


def test_vault_misspelled_raft_key_fails() -> None:
    problems = validate_helm_values("vault", {"server": {"ha": {"enabled": True, "raft": {"enabeld": True}}}})
    assert problems == ["vault values: server.ha.raft.enabeld: unknown key (not in the chart's values.yaml)"]


def test_vault_schema_types_are_checked_on_the_merged_values() -> None:
    problems = validate_helm_values("vault", {"server": {"ha": {"replicas": "three"}}})
    assert problems == ["vault values: server.ha.replicas: 'three' is not of type 'integer'"]


def test_vault_realistic_values_pass() -> None:
    values = {
        "global": {"tlsDisable": False},
        "injector": {"enabled": False},
        "server": {
            "image": {"repository": "hashicorp/vault", "tag": "2.0.4"},
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "vault", "effect": "NoSchedule"}],
            "extraEnvironmentVars": {"VAULT_CACERT": "/vault/userconfig/tls/ca.crt"},
            "extraSecretEnvironmentVars": [{"envName": "X", "secretName": "s", "secretKey": "k"}],
            "volumes": [{"name": "tls", "secret": {"secretName": "vault-tls"}}],
            "service": {"type": "ClusterIP", "annotations": {"a": "b"}},
            "dataStorage": {"size": "20Gi", "storageClass": "linode-block-storage-retain"},
            "statefulSet": {
                "securityContext": {"pod": {"fsGroup": 1000}, "container": {"readOnlyRootFilesystem": True}}
            },
            "ha": {
                "enabled": True,
                "replicas": 3,
                "apiAddr": "https://$(POD_IP):8200",
                "raft": {
                    "enabled": True,
                    "setNodeId": True,
                    "config": 'storage "raft" { path = "/vault/data" }',
                },
            },
        },
        "ui": {
            "enabled": True,
            "serviceType": "LoadBalancer",
            "loadBalancerSourceRanges": ["203.0.113.0/24"],
        },
    }
    assert validate_helm_values("vault", values) == []


def test_helm_null_deletes_a_default_like_helm() -> None:
    # server.ha.apiAddr defaults to null (anything goes below it); a null must not fail the schema
    assert validate_helm_values("vault", {"server": {"ha": {"apiAddr": None, "clusterAddr": "https://x:8201"}}}) == []


def test_vso_values_unknown_and_free_form_keys() -> None:
    values = {
        "controller": {
            "replicas": 2,
            "manager": {
                "resources": {"limits": {"ephemeral-storage": "1Gi"}},
                "clientCache": {"persistenceModel": "direct-encrypted", "cacheSize": 1000},
                "imag": {"tag": "1.4.1"},
            },
            "podSecurityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "securityContext": {"readOnlyRootFilesystem": True},
        },
        "defaultVaultConnection": {"enabled": {"oops": True}},
    }
    prefix = "vault-secrets-operator values: "
    assert validate_helm_values("vault-secrets-operator", values) == [
        prefix + "controller.manager.imag: unknown key (not in the chart's values.yaml)",
        prefix + "defaultVaultConnection.enabled: a mapping here, but the chart default "
        "is a boolean (keys oops are unknown)",
    ]


def test_unknown_helm_keys_generic_rules() -> None:
    defaults = {"a": {"b": 1, "empty": {}, "none": None, "lst": [1]}, "annotations": "x: y"}
    values = {
        "a": {"b": 2, "empty": {"x": {"y": 1}}, "none": {"z": 1}, "lst": [{"q": 1}], "c": 3},
        "annotations": {"free": "form"},
        "d": 1,
    }
    assert unknown_helm_keys(values, defaults) == [
        "a.c: unknown key (not in the chart's values.yaml)",
        "d: unknown key (not in the chart's values.yaml)",
    ]


def test_register_chart(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text("replicaCount: 1\npodLabels: {}\nwebhook:\n  timeoutSeconds: 10\n")
    (tmp_path / "values.schema.json").write_text(
        '{"type": "object", "properties": {"replicaCount": {"type": "integer", "minimum": 1}}}'
    )
    register_chart("demo", tmp_path / "values.yaml", tmp_path / "values.schema.json")
    try:
        assert validate_helm_values("demo", {"podLabels": {"a": "b"}, "webhook": {"timeoutSeconds": 5}}) == []
        assert validate_helm_values("demo", {"replicaCount": 0, "webhook": {"timeoutSecond": 5}}) == [
            "demo values: replicaCount: 0 is less than the minimum of 1",
            "demo values: webhook.timeoutSecond: unknown key (not in the chart's values.yaml)",
        ]
    finally:
        schemas._CHARTS.pop("demo", None)
    with pytest.raises(KeyError, match="demo"):
        validate_helm_values("demo", {})
