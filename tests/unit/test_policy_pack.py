"""The policy pack (policy/): each rule against a passing and a failing resource, the whole pack over the
hub and edge plans recorded under mocks (zero violations), and the pack process booted as the CLI boots it."""

from __future__ import annotations

import copy
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2
from pulumi.runtime import proto
from pulumi.runtime.proto import analyzer_pb2_grpc
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy import policy as sdk_policy
from pulumi_policy.deserialize import deserialize_properties as sdk_deserialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from components.vault_server_config import TransitSealSpec, VaultServerSpec, render_server_hcl
from offline.engine import RecordedResource, Recording
from policy import rules
from rig.policy_runner import (
    PackRunner,
    analyze_request,
    cli_config,
    recorded_validation_args,
    stack_config,
    validation_args,
)
from rig.schemas import schemas_dir

REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "policy"
RULES = {p.name: p for p in rules.policies()}

RELEASE = "kubernetes:helm.sh/v3:Release"
LKE = "linode:index/lkeCluster:LkeCluster"
K8S_ROLE = "vault:kubernetes/authBackendRole:AuthBackendRole"
CONNECTION = "kubernetes:secrets.hashicorp.com/v1beta1:VaultConnection"


def violations(rule: str, args: ResourceValidationArgs) -> list[str]:
    policy = RULES[rule]
    assert isinstance(policy, ResourceValidationPolicy)
    found: list[str] = []
    policy.validate(args, lambda message, urn=None: found.append(message))
    return found


def stack_violations(rule: str, resources: list[PolicyResource]) -> list[tuple[str, str | None]]:
    policy = RULES[rule]
    assert isinstance(policy, StackValidationPolicy)
    found: list[tuple[str, str | None]] = []
    policy.validate(StackValidationArgs(resources), lambda message, urn=None: found.append((message, urn)))
    return found


def one_violation(rule: str, args: ResourceValidationArgs, *fragments: str) -> str:
    found = violations(rule, args)
    assert len(found) == 1, found
    for fragment in fragments:
        assert fragment in found[0], (fragment, found[0])
    return found[0]


def test_every_rule_is_mandatory_and_named() -> None:
    assert set(RULES) == {
        "vault-tls-enabled",
        "vault-kubernetes-auth-roles-exact",
        "vso-connections-verify-tls",
        "charts-and-images-pinned",
        "no-plaintext-secret-inputs",
        "hub-control-plane-acl",
        "stateful-resources-protected",
        "stateful-namespaces-protected",
        "lke-load-balancers-firewalled",
    }
    assert all(p.enforcement_level is EnforcementLevel.MANDATORY for p in RULES.values())
    assert isinstance(RULES["stateful-namespaces-protected"], StackValidationPolicy)
    assert isinstance(RULES["lke-load-balancers-firewalled"], StackValidationPolicy)


# --- Vault TLS ---------------------------------------------------------------------------------------

SPEC = VaultServerSpec(cluster_name="policy-test", external_hostname="vault.example.com")


def vault_release(values: dict[str, Any], chart: str = "vault") -> ResourceValidationArgs:
    return validation_args(
        RELEASE,
        {"chart": chart, "version": "0.34.1", "namespace": "vault", "values": values},
        name="vault-release",
        protect=True,
    )


def raft_values(config: Any, tls_disable: Any = False) -> dict[str, Any]:
    return {
        "global": {"tlsDisable": tls_disable},
        "server": {"ha": {"enabled": True, "raft": {"enabled": True, "config": config}}},
    }


def test_vault_release_with_the_stacks_server_config_passes() -> None:
    assert violations("vault-tls-enabled", vault_release(raft_values(render_server_hcl(SPEC)))) == []
    transit = TransitSealSpec(
        address="https://vault.hub.example.com:8200", key_name="edge-eu", tls_server_name="vault.hub.example.com"
    )
    config = render_server_hcl(VaultServerSpec(cluster_name="e", external_hostname="v.example.com", seal=transit))
    assert violations("vault-tls-enabled", vault_release(raft_values(config))) == []


@pytest.mark.parametrize("setting", ["tls_disable = 1", 'tls_disable = "true"', "tls_disable = true"])
def test_listener_with_tls_disabled_fails(setting: str) -> None:
    config = render_server_hcl(SPEC).replace("tls_disable = false", setting)
    one_violation(
        "vault-tls-enabled",
        vault_release(raft_values(config)),
        "server.ha.raft.config",
        'listener "tcp"',
        "tls_disable",
    )


def test_global_tls_disable_must_be_false() -> None:
    one_violation(
        "vault-tls-enabled",
        vault_release(raft_values(render_server_hcl(SPEC), tls_disable=True)),
        "global.tlsDisable is True",
    )


def test_chart_defaults_alone_disable_tls() -> None:
    found = violations("vault-tls-enabled", vault_release({}))
    assert len(found) == 2, found
    assert "global.tlsDisable is not set" in found[0]
    assert "server.standalone.config is not set" in found[1] and "tls_disable = 1" in found[1]


def test_standalone_json_config_and_seal_and_join_are_checked() -> None:
    values = {
        "global": {"tlsDisable": False},
        "server": {
            "standalone": {
                "config": {
                    "listener": [{"tcp": {"address": "[::]:8200", "tls_disable": "1"}}],
                    "seal": {"transit": {"address": "http://hub:8200", "tls_skip_verify": "true"}},
                }
            },
            "ha": {"config": 'storage "raft" {\n  retry_join {\n    leader_api_addr = "http://vault-0:8200"\n  }\n}\n'},
        },
    }
    found = violations("vault-tls-enabled", vault_release(values))
    assert any("server.standalone.config" in m and "tls_disable = '1'" in m for m in found), found
    assert any("tls_skip_verify" in m for m in found), found
    assert any("seal \"transit\" address 'http://hub:8200' is not https" in m for m in found), found
    assert any("server.ha.config" in m and "leader_api_addr 'http://vault-0:8200'" in m for m in found), found


def test_unparsable_server_config_fails_closed() -> None:
    one_violation("vault-tls-enabled", vault_release(raft_values('listener "tcp" {')), "not valid HCL")


def test_other_charts_are_not_vault() -> None:
    assert violations("vault-tls-enabled", vault_release({}, chart="cert-manager")) == []


def test_vault_provider_must_verify_https() -> None:
    good = {"address": "https://vault.example.com:8200", "skipTlsVerify": "false", "caCertFile": "/ca.pem"}
    assert violations("vault-tls-enabled", validation_args("pulumi:providers:vault", good)) == []
    one_violation(
        "vault-tls-enabled",
        validation_args("pulumi:providers:vault", {**good, "skipTlsVerify": "true"}),
        "skipTlsVerify is 'true'",
    )
    one_violation(
        "vault-tls-enabled",
        validation_args("pulumi:providers:vault", {**good, "address": "http://vault.example.com:8200"}),
        "address 'http://vault.example.com:8200' is not https",
    )


# --- Kubernetes auth roles -----------------------------------------------------------------------------


def role(names: list[str], namespaces: list[str], **extra: Any) -> ResourceValidationArgs:
    return validation_args(
        K8S_ROLE,
        {
            "backend": "kubernetes",
            "roleName": "r",
            "boundServiceAccountNames": names,
            "boundServiceAccountNamespaces": namespaces,
            **extra,
        },
    )


def test_role_bound_to_exact_accounts_passes() -> None:
    assert violations("vault-kubernetes-auth-roles-exact", role(["vso-auth"], ["observability"])) == []
    selector = json.dumps({"matchLabels": {"fedobs.io/vault": "true"}})
    assert (
        violations(
            "vault-kubernetes-auth-roles-exact", role(["vso-auth"], [], boundServiceAccountNamespaceSelector=selector)
        )
        == []
    )


@pytest.mark.parametrize(
    ("names", "namespaces", "named"),
    [
        (["*"], ["observability"], "boundServiceAccountNames contains '*'"),
        (["vso-auth"], ["*"], "boundServiceAccountNamespaces contains '*'"),
        (["vso-*"], ["observability"], "boundServiceAccountNames contains 'vso-*'"),
        (["vso-auth"], [], "boundServiceAccountNamespaces is empty"),
    ],
)
def test_role_with_a_wildcard_fails(names: list[str], namespaces: list[str], named: str) -> None:
    one_violation("vault-kubernetes-auth-roles-exact", role(names, namespaces), named)


# --- VSO connections -----------------------------------------------------------------------------------


def connection(**spec: Any) -> ResourceValidationArgs:
    base = {"address": "https://vault-active.vault.svc:8200", "caCertSecretRef": "vault-ca", "skipTLSVerify": False}
    return validation_args(
        CONNECTION,
        {
            "apiVersion": "secrets.hashicorp.com/v1beta1",
            "kind": "VaultConnection",
            "metadata": {"name": "vault", "namespace": "observability"},
            "spec": {**base, **spec},
        },
    )


def test_vault_connection_verifying_tls_passes() -> None:
    assert violations("vso-connections-verify-tls", connection()) == []


def test_vault_connection_skipping_tls_verification_fails() -> None:
    one_violation("vso-connections-verify-tls", connection(skipTLSVerify=True), "spec.skipTLSVerify is True")
    one_violation(
        "vso-connections-verify-tls",
        connection(address="http://vault.vault.svc:8200"),
        "spec.address 'http://vault.vault.svc:8200' is not https",
    )


def test_vso_chart_default_connection_is_checked() -> None:
    values = {"defaultVaultConnection": {"enabled": True, "address": "https://vault:8200", "skipTLSVerify": True}}
    args = validation_args(RELEASE, {"chart": "vault-secrets-operator", "version": "1.4.1", "values": values})
    one_violation("vso-connections-verify-tls", args, "values defaultVaultConnection.skipTLSVerify is True")
    values["defaultVaultConnection"]["enabled"] = False
    assert (
        violations(
            "vso-connections-verify-tls",
            validation_args(RELEASE, {"chart": "vault-secrets-operator", "version": "1.4.1", "values": values}),
        )
        == []
    )


# --- charts and images pinned ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.34.1", "v1.21.1", "3.9.0", "1.0.0-rc.1"])
def test_exact_chart_versions_pass(version: str) -> None:
    args = validation_args(
        RELEASE,
        {
            "chart": "kyverno",
            "version": version,
            "values": {
                "admissionController": {
                    "container": {
                        "image": {"registry": "reg.kyverno.io", "repository": "kyverno/kyverno", "tag": "v1.19.0"}
                    }
                }
            },
        },
    )
    assert violations("charts-and-images-pinned", args) == []


@pytest.mark.parametrize("version", ["", "latest", "^1.2.0", "~1.2.0", ">=1.0.0", "1.2", "1.x", "*", "1.2.*"])
def test_floating_chart_versions_fail(version: str) -> None:
    message = one_violation(
        "charts-and-images-pinned",
        validation_args(RELEASE, {"chart": "kyverno", "version": version}),
        "chart 'kyverno'",
    )
    assert (f"version {version!r}" in message) if version else ("has no version" in message)


def test_chart_values_images_must_be_pinned() -> None:
    values = {
        "controller": {"manager": {"image": {"repository": "hashicorp/vault-secrets-operator", "tag": "latest"}}},
        "sidecar": {"image": "busybox"},
        "helper": {"image": "alpine:3.20"},
    }
    found = violations(
        "charts-and-images-pinned",
        validation_args(RELEASE, {"chart": "vault-secrets-operator", "version": "1.4.1", "values": values}),
    )
    assert len(found) == 2, found
    assert any("controller.manager.image.tag" in m and "'latest'" in m for m in found), found
    assert any("sidecar.image" in m and "'busybox'" in m and "no tag" in m for m in found), found


def workload(kind: str, type_token: str, pod_spec: dict[str, Any]) -> ResourceValidationArgs:
    template = {"metadata": {"labels": {"app": "x"}}, "spec": pod_spec}
    spec: dict[str, Any] = {"template": template}
    if kind == "CronJob":
        spec = {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": template}}}
    return validation_args(type_token, {"apiVersion": "v1", "kind": kind, "metadata": {"name": "w"}, "spec": spec})


@pytest.mark.parametrize(
    ("kind", "type_token"),
    [
        ("Deployment", "kubernetes:apps/v1:Deployment"),
        ("StatefulSet", "kubernetes:apps/v1:StatefulSet"),
        ("DaemonSet", "kubernetes:apps/v1:DaemonSet"),
        ("Job", "kubernetes:batch/v1:Job"),
        ("CronJob", "kubernetes:batch/v1:CronJob"),
    ],
)
def test_workload_images_must_be_pinned(kind: str, type_token: str) -> None:
    digest = "sha256:" + "a" * 64
    pinned = {
        "containers": [
            {"name": "app", "image": "otel/opentelemetry-collector-k8s:0.117.0"},
            {"name": "side", "image": f"ghcr.io/fedobs/programs@{digest}"},
        ],
        "initContainers": [{"name": "init", "image": "ghcr.io/fedobs/programs:0.1.0"}],
    }
    assert violations("charts-and-images-pinned", workload(kind, type_token, pinned)) == []
    floating = copy.deepcopy(pinned)
    floating["initContainers"][0]["image"] = "busybox"
    floating["containers"][0]["image"] = "otel/opentelemetry-collector-k8s:latest"
    found = violations("charts-and-images-pinned", workload(kind, type_token, floating))
    assert len(found) == 2, found
    assert "initContainers[0] ('init') image 'busybox' has no tag" in found[0]
    assert "containers[0] ('app') image 'otel/opentelemetry-collector-k8s:latest' uses the floating tag" in found[1]


def test_pod_image_with_registry_port_and_no_tag_fails() -> None:
    args = validation_args(
        "kubernetes:core/v1:Pod",
        {"spec": {"containers": [{"name": "c", "image": "registry.example.com:5000/team/app"}]}},
    )
    one_violation(
        "charts-and-images-pinned", args, "spec.containers[0]", "'registry.example.com:5000/team/app'", "no tag"
    )


# --- no plain-text secret inputs -----------------------------------------------------------------------


def test_secret_inputs_that_are_secrets_pass() -> None:
    whole = validation_args(
        "kubernetes:core/v1:Secret", {"metadata": {"name": "s"}, "stringData": Secret({"password": "p", "user": "u"})}
    )
    per_key = validation_args(
        "kubernetes:core/v1:Secret", {"metadata": {"name": "s"}, "data": {"password": Secret("cA=="), "empty": ""}}
    )
    db = validation_args(
        "vault:database/secretBackendConnection:SecretBackendConnection",
        {
            "name": "pg",
            "postgresql": Secret(
                {"connectionUrl": "postgres://{{username}}:{{password}}@h/db", "username": "admin", "password": "p"}
            ),
        },
    )
    provider = validation_args(
        "pulumi:providers:vault",
        {"address": "https://v:8200", "authLoginUserpass": Secret('{"mount": "m", "password": "p"}')},
    )
    for args in (whole, per_key, db, provider):
        assert violations("no-plaintext-secret-inputs", args) == [], args.resource_type


@pytest.mark.parametrize(
    ("resource_type", "props", "named"),
    [
        (
            "kubernetes:core/v1:Secret",
            {"stringData": {"password": "hunter2", "ok": Secret("x")}},
            "stringData.password",
        ),
        (
            "vault:database/secretBackendConnection:SecretBackendConnection",
            {
                "name": "pg",
                "postgresql": {"connectionUrl": "postgres://h/db", "username": "admin", "password": "hunter2"},
            },
            "postgresql.password",
        ),
        ("vault:aws/secretBackend:SecretBackend", {"accessKey": Secret("AKIA"), "secretKey": "hunter2"}, "secretKey"),
        (
            "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId",
            {"roleName": "r", "secretId": "s"},
            "secretId",
        ),
        ("pulumi:providers:kubernetes", {"kubeconfig": "apiVersion: v1\nkind: Config\n"}, "kubeconfig"),
        ("pulumi:providers:vault", {"address": "https://v:8200", "token": "hvs.x"}, "token"),
        (
            "pulumi:providers:vault",
            {
                "address": "https://v:8200",
                "authLoginUserpass": '{"mount": "m", "username": "u", "password": "hunter2"}',
            },
            "authLoginUserpass.password",
        ),
    ],
)
def test_plain_secret_inputs_fail(resource_type: str, props: dict[str, Any], named: str) -> None:
    one_violation("no-plaintext-secret-inputs", validation_args(resource_type, props), f"input {named} is not a secret")


def test_private_key_in_any_plain_input_fails() -> None:
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHc...\n-----END EC PRIVATE KEY-----\n"
    args = validation_args("kubernetes:core/v1:ConfigMap", {"metadata": {"name": "c"}, "data": {"tls.key": pem}})
    one_violation("no-plaintext-secret-inputs", args, "input data.tls.key holds a PEM private key")
    secret = validation_args("kubernetes:core/v1:ConfigMap", {"metadata": {"name": "c"}, "data": Secret({"k": pem})})
    assert violations("no-plaintext-secret-inputs", secret) == []


def test_unknown_values_are_judged_at_update_time() -> None:
    # At preview an input may be unknown; the SDK raises on reading it. The rule does not guess: `pulumi up`
    # runs the pack again with the value known, before the resource is created.
    args = validation_args("kubernetes:core/v1:Secret", {"stringData": {"password": UNKNOWN_STRING_VALUE}})
    assert violations("no-plaintext-secret-inputs", args) == []


def test_secret_inputs_table_covers_the_provider_schema() -> None:
    """Every input pulumi-vault 7.7.0 marks ``secret: true`` (schema extract in ../shared/schemas) is listed."""
    schema = json.loads((schemas_dir() / "pulumi" / "pulumi-vault-v7.7.0.selected-resources.schema.json").read_text())
    for token, resource in schema["resources"].items():
        secret = {name for name, prop in resource.get("inputProperties", {}).items() if prop.get("secret")}
        if token == "vault:database/secretBackendConnection:SecretBackendConnection":
            continue
        assert secret <= set(rules.SECRET_INPUTS.get(token, ())), token
    engine_fields = {
        name
        for token, t in schema["types"].items()
        if token.startswith("vault:database/")
        for name, prop in t.get("properties", {}).items()
        if prop.get("secret")
    }
    table = set(rules.SECRET_INPUTS["vault:database/secretBackendConnection:SecretBackendConnection"])
    assert {f"*.{name}" for name in engine_fields} - {"*.username"} <= table
    assert "redisElasticache.username" in table


def analyze_request_for(resource_type: str, props: dict[str, Any], secret_paths: set[str]) -> proto.AnalyzeRequest:
    resource = RecordedResource(
        urn=f"urn:pulumi:t::fedobs::{resource_type}::r",
        type=resource_type,
        name="r",
        custom=True,
        inputs=props,
        secret_inputs=secret_paths,
        parent="",
        provider="",
        dependencies=[],
        protect=False,
        ignore_changes=[],
        additional_secret_outputs=[],
    )
    return analyze_request(Recording("t", [resource], {}, set()), resource)


def test_the_sdk_alone_hides_secretness_and_the_pack_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limitation, proven on the SDK itself: the engine sends the secret marker, pulumi-policy 1.21 drops it
    before a validation runs. With keep_secret_markers (what policy/__main__.py does) the rule sees it."""
    request = analyze_request_for("kubernetes:core/v1:Secret", {"stringData": {"password": "p"}}, {"stringData"})
    assert "1b47061264138c4ac30d75fd1eb44270" in str(request.properties)  # the engine's secret signature
    runner = PackRunner([RULES["no-plaintext-secret-inputs"]])
    assert runner.analyze(request) == []
    monkeypatch.setattr(sdk_policy, "deserialize_properties", sdk_deserialize_properties)
    (found,) = runner.analyze(request)
    assert "input stringData.password is not a secret" in found.message
    assert found.enforcement_level == "MANDATORY"


def test_keep_secret_markers_refuses_a_foreign_deserializer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_policy, "deserialize_properties", lambda props, proxy_secrets=False: props)
    with pytest.raises(RuntimeError, match="not the SDK's own function"):
        rules.keep_secret_markers()


# --- the hub's control-plane ACL -----------------------------------------------------------------------


def lke(tags: list[str], acl: dict[str, Any] | None) -> ResourceValidationArgs:
    return validation_args(
        LKE,
        {"label": "c", "region": "us-ord", "tags": tags, "controlPlane": {"highAvailability": True, "acl": acl}},
        protect=True,
    )


GOOD_ACL = {"enabled": True, "addresses": [{"ipv4s": ["203.0.113.0/24"], "ipv6s": []}]}


def test_hub_with_an_acl_passes_and_edges_are_not_the_hub() -> None:
    with stack_config(None):
        assert violations("hub-control-plane-acl", lke(["fedobs", "hub"], GOOD_ACL)) == []
        assert violations("hub-control-plane-acl", lke(["fedobs", "edge"], None)) == []


@pytest.mark.parametrize(
    ("acl", "named"),
    [
        ({"enabled": False, "addresses": GOOD_ACL["addresses"]}, "controlPlane.acl.enabled is False"),
        (None, "controlPlane.acl.enabled is None"),
        ({"enabled": True, "addresses": [{"ipv4s": [], "ipv6s": []}]}, "controlPlane.acl.addresses lists no address"),
        ({"enabled": True, "addresses": [{"ipv4s": ["0.0.0.0/0"]}]}, "allows '0.0.0.0/0'"),
    ],
)
def test_hub_without_a_working_acl_fails(acl: dict[str, Any] | None, named: str) -> None:
    with stack_config(None):
        found = violations("hub-control-plane-acl", lke(["fedobs", "hub"], acl))
    assert any(named in m for m in found), found


def test_hub_is_recognised_by_the_stack_config_the_cli_passes() -> None:
    untagged = lke(["fedobs"], {"enabled": False})
    with stack_config({"fedobs:role": "hub"}):
        assert any("controlPlane.acl.enabled" in m for m in violations("hub-control-plane-acl", untagged))
    with stack_config({"fedobs:role": "edge"}):
        assert violations("hub-control-plane-acl", untagged) == []


# --- stateful resources protected ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "props"),
    [
        (LKE, {"label": "c"}),
        ("linode:index/objectStorageBucket:ObjectStorageBucket", {"label": "b"}),
        ("vault:transit/secretBackendKey:SecretBackendKey", {"name": "edge-eu"}),
        ("kubernetes:core/v1:PersistentVolumeClaim", {"metadata": {"name": "data"}}),
        (RELEASE, {"chart": "vault", "version": "0.34.1"}),
        ("kubernetes:apps/v1:StatefulSet", {"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}}]}}),
    ],
)
def test_stateful_resources_must_be_protected(resource_type: str, props: dict[str, Any]) -> None:
    unprotected = validation_args(resource_type, props, name="thing")
    one_violation("stateful-resources-protected", unprotected, resource_type, "'thing' is not protected")
    assert violations("stateful-resources-protected", validation_args(resource_type, props, protect=True)) == []


def test_stateless_resources_need_no_protection() -> None:
    for resource_type, props in (
        (RELEASE, {"chart": "cert-manager", "version": "v1.21.1"}),
        ("kubernetes:apps/v1:StatefulSet", {"spec": {"replicas": 1}}),
        ("kubernetes:apps/v1:Deployment", {"spec": {}}),
    ):
        assert violations("stateful-resources-protected", validation_args(resource_type, props)) == []


def policy_resource(resource_type: str, props: dict[str, Any], name: str, protect: bool = False) -> PolicyResource:
    options = PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    urn = f"urn:pulumi:t::fedobs::{resource_type}::{name}"
    return PolicyResource(resource_type, unknown_checking_proxy(props), urn, name, options, None, None, [], {})


def test_namespace_holding_the_vault_release_must_be_protected() -> None:
    release = policy_resource(RELEASE, {"chart": "vault", "namespace": "vault"}, "vault-release", protect=True)
    cert_manager = policy_resource(RELEASE, {"chart": "cert-manager", "namespace": "cert-manager"}, "cm-release")
    vault_ns = policy_resource("kubernetes:core/v1:Namespace", {"metadata": {"name": "vault"}}, "vault-ns")
    cm_ns = policy_resource("kubernetes:core/v1:Namespace", {"metadata": {"name": "cert-manager"}}, "cm-ns")
    ((message, urn),) = stack_violations("stateful-namespaces-protected", [release, cert_manager, vault_ns, cm_ns])
    assert "Namespace 'vault' (vault-ns) is not protected" in message and "'vault-release'" in message
    assert urn == vault_ns.urn
    vault_ns.opts.protect = True
    assert stack_violations("stateful-namespaces-protected", [release, cert_manager, vault_ns, cm_ns]) == []


# --- LoadBalancers on LKE have a Cloud Firewall ------------------------------------------------------------

FIREWALL_ACL = "service.beta.kubernetes.io/linode-loadbalancer-firewall-acl"
FIREWALL_ID = "service.beta.kubernetes.io/linode-loadbalancer-firewall-id"
LKE_CONFIG = {"fedobs:cluster": json.dumps({"mode": "lke", "label": "c"})}
EXISTING_CONFIG = {"fedobs:cluster": json.dumps({"mode": "existing"})}


def service(annotations: dict[str, str] | None, service_type: str = "LoadBalancer", **spec: Any) -> PolicyResource:
    metadata: dict[str, Any] = {"name": "vault-external", "namespace": "vault"}
    if annotations is not None:
        metadata["annotations"] = annotations
    props = {"metadata": metadata, "spec": {"type": service_type, **spec}}
    return policy_resource("kubernetes:core/v1:Service", props, "hub-vault-external")


def firewall_violations(resources: list[PolicyResource], config: dict[str, str] | None) -> list[str]:
    with stack_config(config):
        found = stack_violations("lke-load-balancers-firewalled", resources)
    assert all(urn == resources[0].urn for _, urn in found), found
    return [message for message, _ in found]


def test_lke_load_balancers_with_a_restricting_firewall_pass() -> None:
    allow = json.dumps({"allowList": {"ipv4": ["203.0.113.0/24"], "ipv6": ["2001:db8::/32"]}})
    for firewall in ({FIREWALL_ACL: allow}, {FIREWALL_ID: "12345"}):
        assert firewall_violations([service(firewall)], LKE_CONFIG) == []
    # Not a LoadBalancer: nothing to restrict.
    assert firewall_violations([service(None, "ClusterIP")], LKE_CONFIG) == []


@pytest.mark.parametrize(
    ("annotations", "named"),
    [
        (None, "has neither"),
        ({"service.beta.kubernetes.io/linode-loadbalancer-default-protocol": "tcp"}, "open to the Internet"),
        ({FIREWALL_ACL: json.dumps({"denyList": {"ipv4": ["198.51.100.0/24"]}})}, "has a denyList"),
        ({FIREWALL_ACL: json.dumps({"allowList": {"ipv4": []}})}, "allows no address"),
        ({FIREWALL_ACL: json.dumps({"allowList": {"ipv4": ["0.0.0.0/0"]}})}, "allows '0.0.0.0/0', every address"),
        ({FIREWALL_ACL: json.dumps({"allowList": {"ipv6": ["::/0"]}})}, "allows '::/0', every address"),
        ({FIREWALL_ACL: "allow 203.0.113.0/24"}, "is not a JSON object"),
        ({FIREWALL_ID: "my-firewall"}, "not a Cloud Firewall id"),
    ],
)
def test_lke_load_balancer_without_a_restricting_firewall_fails(annotations: dict[str, str] | None, named: str) -> None:
    # loadBalancerSourceRanges does not count: the Linode CCM never reads it.
    resource = service(annotations, loadBalancerSourceRanges=["203.0.113.0/24"])
    (message,) = firewall_violations([resource], LKE_CONFIG)
    assert "'vault-external' (hub-vault-external)" in message and named in message, message


def test_lke_mode_comes_from_the_stack_config_or_else_from_an_lke_cluster_in_the_stack() -> None:
    open_service = service(None)
    cluster = policy_resource(LKE, {"label": "c"}, "hub-cluster-lke", protect=True)
    assert firewall_violations([open_service], EXISTING_CONFIG) == []
    assert firewall_violations([open_service, cluster], EXISTING_CONFIG) == []  # the config decides
    assert firewall_violations([open_service], None) == []
    assert len(firewall_violations([open_service, cluster], None)) == 1


# --- the whole pack over the recorded hub and edge plans ------------------------------------------------


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_the_pack_passes_the_shipped_stacks(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    runner = PackRunner()
    found = runner.run(recording, cli_config(stack))
    assert found == [], "\n".join(map(str, found))
    # The same without the stack's config (an engine that passes none): the hub is then known by its tag.
    assert runner.run(recording, None) == []


def test_the_runner_presents_secretness_and_protect_as_the_engine_does(hub: Recording) -> None:
    provider = recorded_validation_args(hub, hub.one("pulumi:providers:kubernetes"))
    assert isinstance(provider.props["kubeconfig"], Secret)
    cluster = recorded_validation_args(hub, hub.one(LKE))
    assert cluster.opts.protect is True and not isinstance(cluster.props["label"], Secret)
    release = next(r for r in hub.of_type(RELEASE) if r.inputs["chart"] == "cert-manager")
    assert recorded_validation_args(hub, release).opts.protect is False


def test_the_pack_catches_a_broken_hub_plan(hub: Recording) -> None:
    """The recorded hub, made wrong in ways the rules forbid: each is reported, nothing else."""
    broken = copy.deepcopy(hub)
    lke_cluster = broken.one(LKE)
    lke_cluster.protect = False
    lke_cluster.inputs["controlPlane"]["acl"] = {"enabled": False}
    broken.one("pulumi:providers:kubernetes").secret_inputs.clear()
    role_resource = next(r for r in broken.of_type(K8S_ROLE) if r.inputs["roleName"] == "cert-sync")
    role_resource.inputs["boundServiceAccountNamespaces"] = ["*"]
    release = next(r for r in broken.of_type(RELEASE) if r.inputs["chart"] == "vault")
    raft = release.inputs["values"]["server"]["ha"]["raft"]
    raft["config"] = raft["config"].replace("tls_disable = false", "tls_disable = true", 1)  # one listener
    next(
        r for r in broken.of_type("kubernetes:core/v1:Namespace") if r.inputs["metadata"]["name"] == "vault"
    ).protect = False
    job = broken.one("kubernetes:batch/v1:Job", "hub-vault-bootstrap")
    job.inputs["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/fedobs/programs:latest"
    gateway = broken.one("kubernetes:core/v1:Service", "hub-collector-service")
    del gateway.inputs["metadata"]["annotations"][FIREWALL_ACL]
    gateway.outputs = {}  # the stack rule reads outputs; the mock's echo of the inputs is rebuilt from them
    found = PackRunner().run(broken, cli_config("hub"))
    assert sorted((v.policy, v.urn.rsplit("::", 1)[-1]) for v in found) == [
        ("charts-and-images-pinned", "hub-vault-bootstrap"),
        ("hub-control-plane-acl", "hub-cluster-lke"),
        ("hub-control-plane-acl", "hub-cluster-lke"),
        ("lke-load-balancers-firewalled", "hub-collector-service"),
        ("no-plaintext-secret-inputs", "hub-cluster-k8s"),
        ("stateful-namespaces-protected", "hub-vault-namespace"),
        ("stateful-resources-protected", "hub-cluster-lke"),
        ("vault-kubernetes-auth-roles-exact", "hub-kubernetes-auth-cert-sync-role"),
        ("vault-tls-enabled", "hub-vault-release"),
    ], "\n".join(map(str, found))
    assert all(v.enforcement_level == "MANDATORY" for v in found)


# --- the pack as the CLI starts it ----------------------------------------------------------------------


def test_pack_files_pin_what_the_program_uses() -> None:
    manifest = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"] == {"name": "python", "options": {"virtualenv": "venv"}}
    pins = dict(
        line.split("==")
        for line in (POLICY_DIR / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    program_pins = dict(
        line.split("==")
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["pulumi-policy"] == "1.21.0" and pins["pulumi"] == program_pins["pulumi"]
    for package, version in pins.items():  # the tests run the pack with exactly these versions
        assert metadata.version(package) == version, package


@pytest.fixture
def pack_process() -> Iterator[int]:
    """``policy/`` started the way ``pulumi-analyzer-policy-python`` starts it; yields the gRPC port."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PULUMI_CONFIG"] = json.dumps({"fedobs:role": "hub"})
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."],
        cwd=POLICY_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        line = ""
        while not line and time.monotonic() < deadline and process.poll() is None:
            if selector.select(timeout=1):
                line = process.stdout.readline().strip()
        if not line.isdigit():
            process.kill()
            _, stderr = process.communicate(timeout=10)
            pytest.fail(f"the pack did not start: {line!r} {stderr}")
        yield int(line)
    finally:
        process.kill()
        process.wait(timeout=10)


def test_the_pack_boots_as_the_cli_runs_it(pack_process: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{pack_process}") as channel:
        stub = analyzer_pb2_grpc.AnalyzerStub(channel)
        info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
        assert info.name == "fedobs"
        assert {p.name: p.enforcementLevel for p in info.policies} == {name: proto.MANDATORY for name in RULES}
        secret = analyze_request_for("kubernetes:core/v1:Secret", {"stringData": {"password": "p"}}, {"stringData"})
        assert list(stub.Analyze(secret, timeout=30).diagnostics) == []
        plain = analyze_request_for("kubernetes:core/v1:Secret", {"stringData": {"password": "p"}}, set())
        (diagnostic,) = stub.Analyze(plain, timeout=30).diagnostics
        assert diagnostic.policyName == "no-plaintext-secret-inputs" and "stringData.password" in diagnostic.message
        # The hub is known from PULUMI_CONFIG (fedobs:role), as the CLI passes the stack's config.
        cluster = analyze_request_for(
            LKE, {"label": "c", "tags": [], "controlPlane": {"acl": {"enabled": False}}}, set()
        )
        cluster.options.protect = True
        names = sorted(d.policyName for d in stub.Analyze(cluster, timeout=30).diagnostics)
        assert names == ["hub-control-plane-acl", "hub-control-plane-acl"]
