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

from components.admin_policy import admin_policy_hcl
from components.admission_policies import admission_policies, require_vso_policy
from components.vault_config import VaultConfigSettings
from components.vault_server_config import ExternalListener, TransitSealSpec, VaultServerSpec, render_server_hcl
from offline.engine import RecordedResource, Recording, engine_form, load_stack_file, run_program
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
POLICY = "vault:index/policy:Policy"
ENDPOINT = "vault:generic/endpoint:Endpoint"
MOUNT = "vault:index/mount:Mount"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
KYVERNO_POLICY = "kubernetes:policies.kyverno.io/v1:ValidatingPolicy"


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
        "vault-no-dev-server",
        "vault-listeners-hardened",
        "vault-kubernetes-auth-roles-exact",
        "vault-policies-bounded",
        "vault-roles-and-policies-typed",
        "no-plaintext-credentials-in-config",
        "admission-policy-enforced",
        "vault-unseal-keys-encrypted",
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


# --- Vault's dev server and listeners ------------------------------------------------------------------

EXTERNAL = 'proxy_protocol_authorized_addrs = ["192.168.255.0/24"]'
#: The server configuration the shipped stacks render: the plain listener and the PROXY protocol one trusting
#: the NodeBalancers' 192.168.255.0/24.
EXPOSED = VaultServerSpec(
    cluster_name="policy-test",
    external_hostname="vault.example.com",
    external_listener=ExternalListener(authorized_addrs=("192.168.255.0/24",)),
)


def test_the_vault_chart_without_dev_mode_passes() -> None:
    values = raft_values(render_server_hcl(EXPOSED))
    assert violations("vault-no-dev-server", vault_release(values)) == []
    values["server"]["dev"] = {"enabled": False, "devRootToken": "root"}
    assert violations("vault-no-dev-server", vault_release(values)) == []
    other = validation_args(RELEASE, {"chart": "cert-manager", "version": "v1.21.1", "values": {"server": {"dev": {}}}})
    assert violations("vault-no-dev-server", other) == []


@pytest.mark.parametrize("enabled", [True, "true", 1])
def test_the_vault_chart_in_dev_mode_fails(enabled: Any) -> None:
    values = raft_values(render_server_hcl(EXPOSED))
    values["server"]["dev"] = {"enabled": enabled}
    one_violation(
        "vault-no-dev-server", vault_release(values), f"values server.dev.enabled is {enabled!r}", "dev server"
    )


def test_the_stacks_listeners_pass() -> None:
    config = render_server_hcl(EXPOSED)
    assert 'proxy_protocol_authorized_addrs = ["192.168.255.0/24"]' in config
    assert violations("vault-listeners-hardened", vault_release(raft_values(config))) == []
    tls13 = config.replace('tls_min_version = "tls12"', 'tls_min_version = "tls13"')
    assert violations("vault-listeners-hardened", vault_release(raft_values(tls13))) == []
    # The broadest ranges still accepted: an IPv4 /8 and an IPv6 /32 (rules.BROADEST_PREFIX).
    wide = config.replace('["192.168.255.0/24"]', '["10.0.0.0/8", "2001:db8::/32"]')
    assert violations("vault-listeners-hardened", vault_release(raft_values(wide))) == []
    xff = config.replace(EXTERNAL, 'x_forwarded_for_authorized_addrs = "192.168.255.0/24, 2001:db8::/48"')
    assert violations("vault-listeners-hardened", vault_release(raft_values(xff))) == []


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('tls_min_version = "tls12"', 'tls_min_version = "tls10"', "tls_min_version = 'tls10'"),
        ('tls_min_version = "tls12"', 'tls_min_version = "tls11"', "tls_min_version = 'tls11'"),
        ('tls_min_version = "tls12"', 'tls_max_version = "tls11"', "tls_max_version = 'tls11'"),
        (
            EXTERNAL,
            'x_forwarded_for_authorized_addrs = "0.0.0.0/0"',
            "x_forwarded_for_authorized_addrs allows '0.0.0.0/0', every address",
        ),
        (
            EXTERNAL,
            'x_forwarded_for_authorized_addrs = "10.0.0.0/8, ::/0"',
            "x_forwarded_for_authorized_addrs allows '::/0', every address",
        ),
        (
            EXTERNAL,
            'proxy_protocol_authorized_addrs = ["0.0.0.0/0"]',
            "proxy_protocol_authorized_addrs allows '0.0.0.0/0'",
        ),
        (
            EXTERNAL,
            'proxy_protocol_authorized_addrs = ["0.0.0.0/1", "128.0.0.0/1"]',
            "proxy_protocol_authorized_addrs allows '0.0.0.0/1', broader than the /8",
        ),
        (EXTERNAL, 'proxy_protocol_authorized_addrs = ["2001::/16"]', "allows '2001::/16', broader than the /32"),
        (
            EXTERNAL,
            'proxy_protocol_authorized_addrs = ["the-load-balancer"]',
            "lists 'the-load-balancer', which is not",
        ),
        ('proxy_protocol_behavior = "allow_authorized"', 'proxy_protocol_behavior = "use_always"', "use_always"),
        (
            "unauthenticated_metrics_access = false",
            "unauthenticated_metrics_access = true",
            "telemetry { unauthenticated_metrics_access = True }",
        ),
    ],
)
def test_a_weakened_listener_fails(old: str, new: str, named: str) -> None:
    config = render_server_hcl(EXPOSED)
    assert old in config
    found = violations("vault-listeners-hardened", vault_release(raft_values(config.replace(old, new, 1))))
    assert any(named in message for message in found), found
    assert len(found) == (2 if '/1"' in new else 1), found  # each /1 on its own
    assert all(m.startswith('values server.ha.raft.config listener "tcp" at \'[::]:') for m in found), found


def test_listeners_in_vaults_json_form_and_other_modes_are_checked() -> None:
    values = {
        "global": {"tlsDisable": False},
        "server": {
            "standalone": {
                "config": {
                    "listener": [
                        {
                            "tcp": {
                                "address": "[::]:8200",
                                "x_forwarded_for_authorized_addrs": ["0.0.0.0/1", "128.0.0.0/1"],
                                "telemetry": {"unauthenticated_metrics_access": "true"},
                                "profiling": {"unauthenticated_pprof_access": True},
                            }
                        }
                    ]
                }
            },
            "ha": {"config": 'listener "tcp" {\n  address = "[::]:8200"\n  tls_min_version = "tls10"\n}\n'},
        },
    }
    found = violations("vault-listeners-hardened", vault_release(values))
    assert len(found) == 5, found
    as_text = copy.deepcopy(values)  # the same configuration as JSON text (Vault reads .json config files)
    as_text["server"]["standalone"]["config"] = json.dumps(values["server"]["standalone"]["config"])
    assert violations("vault-listeners-hardened", vault_release(as_text)) == found
    assert sum("server.standalone.config" in m and "broader than the /8" in m for m in found) == 2, found
    assert any("telemetry { unauthenticated_metrics_access = 'true' }" in m for m in found), found
    assert any("profiling { unauthenticated_pprof_access = True }" in m for m in found), found
    assert any("server.ha.config" in m and "tls_min_version = 'tls10'" in m for m in found), found


def test_the_internet_in_many_pieces_is_as_broad_as_one() -> None:
    # 512 /9s: each within the /8 limit, together every IPv4 address.
    pieces = [f"{a}.{b}.0.0/9" for a in range(256) for b in (0, 128)]
    (problem,) = rules.breadth_problems(pieces)
    assert "allows 4294967296 IPv4 addresses in all" in problem and "more than the one /8" in problem
    assert rules.breadth_problems(["10.0.0.0/9", "10.128.0.0/9", "2001:db8::/33", "2001:db8:8000::/33"]) == []
    # An IPv4-mapped IPv6 range is the IPv4 range it maps.
    (mapped,) = rules.breadth_problems(["::ffff:0.0.0.0/96"])
    assert mapped == "allows '::ffff:0.0.0.0/96', every address"


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


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease"])
def test_role_bound_to_a_system_namespace_fails(namespace: str) -> None:
    one_violation(
        "vault-kubernetes-auth-roles-exact",
        role(["vso-auth"], ["observability", namespace]),
        f"boundServiceAccountNamespaces contains {namespace!r}",
        "system namespace",
    )
    selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}]}
    one_violation(
        "vault-kubernetes-auth-roles-exact",
        role(["vso-auth"], [], boundServiceAccountNamespaceSelector=json.dumps(selector)),
        f"boundServiceAccountNamespaceSelector selects {namespace!r}",
    )


def test_role_selecting_ordinary_namespaces_by_name_passes() -> None:
    selector = json.dumps({"matchLabels": {"kubernetes.io/metadata.name": "observability"}})
    assert (
        violations(
            "vault-kubernetes-auth-roles-exact", role(["vso-auth"], [], boundServiceAccountNamespaceSelector=selector)
        )
        == []
    )


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
    broadest = {"enabled": True, "addresses": [{"ipv4s": ["10.0.0.0/8"], "ipv6s": ["2001:db8::/32"]}]}
    with stack_config(None):
        assert violations("hub-control-plane-acl", lke(["fedobs", "hub"], GOOD_ACL)) == []
        assert violations("hub-control-plane-acl", lke(["fedobs", "hub"], broadest)) == []
        assert violations("hub-control-plane-acl", lke(["fedobs", "edge"], None)) == []


@pytest.mark.parametrize(
    ("acl", "named"),
    [
        ({"enabled": False, "addresses": GOOD_ACL["addresses"]}, "controlPlane.acl.enabled is False"),
        (None, "controlPlane.acl.enabled is None"),
        ({"enabled": True, "addresses": [{"ipv4s": [], "ipv6s": []}]}, "controlPlane.acl.addresses lists no address"),
        ({"enabled": True, "addresses": [{"ipv4s": ["0.0.0.0/0"]}]}, "allows '0.0.0.0/0'"),
        (
            {"enabled": True, "addresses": [{"ipv4s": ["0.0.0.0/1", "128.0.0.0/1"]}]},
            "controlPlane.acl.addresses allows '128.0.0.0/1', broader than the /8",
        ),
        (
            {"enabled": True, "addresses": [{"ipv4s": ["203.0.113.0/24"], "ipv6s": ["2000::/3"]}]},
            "controlPlane.acl.addresses allows '2000::/3', broader than the /32",
        ),
        (
            {"enabled": True, "addresses": [{"ipv4s": ["10.0.0.0/8", "11.0.0.0/8"]}]},
            "controlPlane.acl.addresses allows 33554432 IPv4 addresses in all",
        ),
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
        (MOUNT, {"type": "transit", "path": "transit"}),
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
        (MOUNT, {"type": "kv", "path": "kv", "options": {"version": "2"}}),
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
    broadest = json.dumps({"allowList": {"ipv4": ["10.0.0.0/8"], "ipv6": ["2001:db8::/32"]}})
    for firewall in ({FIREWALL_ACL: allow}, {FIREWALL_ACL: broadest}, {FIREWALL_ID: "12345"}):
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
        (
            {FIREWALL_ACL: json.dumps({"allowList": {"ipv4": ["0.0.0.0/1", "128.0.0.0/1"]}})},
            "allows '0.0.0.0/1', broader than the /8 the pack accepts for IPv4",
        ),
        (
            {FIREWALL_ACL: json.dumps({"allowList": {"ipv6": ["::ffff:0:0/96"]}})},
            "allows '::ffff:0:0/96', every address",
        ),
        (
            {FIREWALL_ACL: json.dumps({"allowList": {"ipv4": [f"{a}.0.0.0/8" for a in range(1, 129)]}})},
            "allows 2147483648 IPv4 addresses in all",
        ),
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


def test_an_unprotected_transit_mount_is_named_with_what_it_holds() -> None:
    mount = validation_args(MOUNT, {"type": "transit", "path": "transit"}, name="hub-transit-unseal-mount")
    one_violation(
        "stateful-resources-protected", mount, "'hub-transit-unseal-mount' is not protected", "every edge's unseal key"
    )


# --- Vault ACL policies -------------------------------------------------------------------------------


def vault_policy(name: str, text: Any) -> ResourceValidationArgs:
    return validation_args(POLICY, {"name": name, "policy": text})


HUB_VAULT_CONFIG = VaultConfigSettings.model_validate(
    {"kv": {"path": "kv"}, "database": {"connections": []}, "aws": {"enabled": True, "region": "eu-central-1"}}
)


def test_the_stacks_own_policies_pass() -> None:
    for transit in (True, False):
        admin = admin_policy_hcl(HUB_VAULT_CONFIG, transit=transit)
        assert 'path "sys/audit" { capabilities = ["read", "sudo"] }' in admin
        assert violations("vault-policies-bounded", vault_policy("fedobs-admin", admin)) == []
    workload = (
        'path "kv/data/otel/client-ca" { capabilities = ["read"] }\n'
        'path "transit/keys/+/config" { capabilities = ["read"] }\n'
    )
    assert violations("vault-policies-bounded", vault_policy("vso-observability", workload)) == []
    # Denying everything is no grant; Vault's JSON policy form is read as well.
    deny_all = json.dumps({"path": {"*": {"capabilities": ["deny"]}, "kv/data/x": {"capabilities": ["read"]}}})
    assert violations("vault-policies-bounded", vault_policy("locked", deny_all)) == []
    assert violations("vault-policies-bounded", vault_policy("later", UNKNOWN_STRING_VALUE)) == []


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        ("ops", 'path "*" { capabilities = ["read"] }', "policy path '*' grants ['read'] on every mount"),
        ("ops", 'path "+/*" { capabilities = ["list"] }', "policy path '+/*' grants ['list'] on every mount"),
        ("ops", 'path "+" { capabilities = ["update"] }', "policy path '+' grants ['update'] on every mount"),
        ("ops", 'path "s*" { capabilities = ["read"] }', "policy path 's*' grants ['read'] on every mount"),
        ("ops", 'path "/*" {\n  policy = "write"\n}\n', "policy path '/*' grants ['write'] on every mount"),
        (
            "ops",
            'path "sys/mounts/*" { capabilities = ["update", "sudo"] }',
            "policy path 'sys/mounts/*' grants sudo in policy 'ops'",
        ),
        (
            "ops",
            'path "sys/audit" { capabilities = ["sudo"] }',
            "grants sudo in policy 'ops': only 'fedobs-admin' may hold sudo",
        ),
        (
            "fedobs-admin",
            'path "sys/raw/*" { capabilities = ["read", "sudo"] }',
            "policy path 'sys/raw/*' grants sudo in policy 'fedobs-admin'",
        ),
        ("fedobs-admin", 'path "sys/*" {\n  policy = "sudo"\n}\n', "policy path 'sys/*' grants sudo"),
        ("ops", 'path "kv/*" { capabilities = ["read"] ', "policy is not valid HCL"),
    ],
)
def test_a_root_wide_or_sudo_policy_fails(name: str, text: str, named: str) -> None:
    one_violation("vault-policies-bounded", vault_policy(name, text), named)


def test_path_star_with_sudo_is_refused_twice() -> None:
    found = violations("vault-policies-bounded", vault_policy("fedobs-admin", 'path "*" { capabilities = ["sudo"] }'))
    assert len(found) == 2, found
    assert "policy path '*' grants ['sudo'] on every mount" in found[0]
    assert "policy path '*' grants sudo in policy 'fedobs-admin'" in found[1]


# --- auth roles and policies are typed resources --------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "auth/kubernetes/role/any-pod",
        "auth/token/roles/minter",
        "/auth/jwt-edges/role/edge-deploy-edge-eu",
        "auth/approle-edges/role/edge-eu/secret-id",
        "auth/userpass-pulumi/users/pulumi",
        "auth/cert/certs/ops",
        "auth/team/ldap/groups/admins",
    ],
)
def test_a_generic_write_of_an_auth_role_fails(path: str) -> None:
    for resource_type in (ENDPOINT, "vault:generic/secret:Secret"):
        args = validation_args(resource_type, {"path": path, "dataJson": Secret("{}")})
        one_violation(
            "vault-roles-and-policies-typed", args, f"path {path.lstrip('/')!r} writes an auth role", "typed resource"
        )


@pytest.mark.parametrize(
    "data",
    [
        '{"token_bound_cidrs": ["203.0.113.0/24"], "token_policies": ["root"]}',
        '{"token_bound_cidrs": [], "password": "x"}',
        '{"policies": ["fedobs-admin"]}',
        "not json",
    ],
)
def test_a_generic_write_to_a_user_that_does_more_than_bind_addresses_fails(data: str) -> None:
    args = validation_args(ENDPOINT, {"path": "auth/userpass-pulumi/users/pulumi", "dataJson": data})
    one_violation("vault-roles-and-policies-typed", args, "writes an auth role", "typed resource")


@pytest.mark.parametrize("cidrs", [[], ["203.0.113.0/24", "10.2.0.0/16"]])
def test_a_users_address_binding_alone_passes(cidrs: list[str]) -> None:
    """What components.vault declares for its admin user (no typed resource exists for a userpass user)."""
    data = json.dumps({"token_bound_cidrs": cidrs})
    args = validation_args(ENDPOINT, {"path": "auth/userpass-pulumi/users/pulumi", "dataJson": data})
    assert violations("vault-roles-and-policies-typed", args) == []
    role = validation_args(ENDPOINT, {"path": "auth/approle/role/x", "dataJson": data})
    assert len(violations("vault-roles-and-policies-typed", role)) == 1, "roles are typed resources, always"


@pytest.mark.parametrize("path", ["sys/policy/ops", "sys/policies/acl/ops"])
def test_a_generic_write_of_a_policy_fails(path: str) -> None:
    args = validation_args(ENDPOINT, {"path": path, "dataJson": Secret('{"policy": "path \\"*\\" {}"}')})
    one_violation("vault-roles-and-policies-typed", args, f"path {path!r} writes an ACL policy", "vault.Policy")


@pytest.mark.parametrize(
    "path", ["database/rotate-root/telemetry-pg", "auth/kubernetes/config", "auth/role/config", "kv/data/role/x"]
)
def test_other_generic_writes_pass(path: str) -> None:
    args = validation_args(ENDPOINT, {"path": path, "dataJson": Secret("{}"), "disableRead": True})
    assert violations("vault-roles-and-policies-typed", args) == []


# --- no plain credentials in Helm values, env or ConfigMaps ---------------------------------------------


@pytest.mark.parametrize(
    ("key", "credential"),
    [
        ("password", True),
        ("dbPassword", True),
        ("MYSQL_ROOT_PASSWORD", True),
        ("passwd", True),
        ("client_secret", True),
        ("clientSecret", True),
        ("VAULT_TOKEN", True),
        ("authToken", True),
        ("tokens", True),
        ("apiKey", True),
        ("api_key", True),
        ("APIKey", True),
        ("apikey", True),
        ("privateKey", True),
        ("PRIVATE_KEY", True),
        ("accessKey", True),
        ("secret_access_key", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("secretId", True),
        ("jwt", True),
        ("VAULT_TOKEN_FILE", False),
        ("SNAPSHOT_JWT_FILE", False),
        ("CERT_SYNC_JWT_FILE", False),
        ("secretName", False),
        ("existingSecret", False),
        ("caCertSecret", False),
        ("imagePullSecrets", False),
        ("tokenTtl", False),
        ("tokenReviewerJwtPath", False),
        ("AWS_ACCESS_KEY_ID", False),
        ("passwordLength", False),
        ("bypass", False),
        ("VAULT_CACERT", False),
        ("tls.key", False),
        ("config.yaml", False),
    ],
)
def test_which_keys_name_a_credential(key: str, credential: bool) -> None:
    assert rules.credential_key(key) is credential


def chart_release(values: dict[str, Any], chart: str = "vault") -> ResourceValidationArgs:
    return validation_args(RELEASE, {"chart": chart, "version": "0.34.1", "values": values}, protect=True)


def test_settings_that_name_files_secrets_or_references_pass() -> None:
    values = {
        "server": {
            "extraEnvironmentVars": {"VAULT_CACERT": "/vault/userconfig/tls/ca.crt", "VAULT_TOKEN_FILE": "/run/t"},
            "extraSecretEnvironmentVars": [
                {"envName": "VAULT_TOKEN", "secretName": "vault-seal", "secretKey": "token"}
            ],
            "volumes": [{"name": "tls", "secret": {"secretName": "vault-server-tls"}}],
        },
        "db": {"existingSecret": "db-credentials", "passwordKey": "password"},
        "auth": {
            "password": "",
            "token": Secret("hvs.secret"),
            "apiKey": UNKNOWN_STRING_VALUE,
            "clientSecret": "$(CLIENT_SECRET)",
            "jwt": "/var/run/secrets/kubernetes.io/serviceaccount/token",
        },
        "defaultVaultConnection": {"caCertSecret": "vault-ca"},
        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
        "tokenTtl": 3600,
        "enabled": True,
    }
    assert violations("no-plaintext-credentials-in-config", chart_release(values)) == []


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (
            {"server": {"extraEnvironmentVars": {"VAULT_TOKEN": "hvs.CAES"}}},
            "values server.extraEnvironmentVars.VAULT_TOKEN",
        ),
        ({"auth": {"password": "hunter2"}}, "values auth.password"),
        ({"auth": {"existingSecret": "", "password": "hunter2"}}, "values auth.password"),
        ({"auth": {"existingSecret": "db", "password": "hunter2"}}, "values auth.password"),
        ({"aws": {"secretName": "", "secretKey": "wJalrXUtnFEMI"}}, "values aws.secretKey"),
        ({"auth": {"pin": 1, "password": 12345678}}, "values auth.password"),
        ({"s3": {"secret_access_key": "wJalrXUtnFEMI"}}, "values s3.secret_access_key"),
        ({"oidc": {"clientSecret": "kd93js"}}, "values oidc.clientSecret"),
        ({"signer": {"privateKey": "MHcCAQEEI"}}, "values signer.privateKey"),
        ({"extraEnv": [{"name": "API_KEY", "value": "abc123"}]}, "values extraEnv[0].value ('API_KEY')"),
        ({"server": {"dev": {"enabled": False, "devRootToken": "root"}}}, "values server.dev.devRootToken"),
    ],
)
def test_a_plain_credential_in_helm_values_fails(values: dict[str, Any], named: str) -> None:
    one_violation("no-plaintext-credentials-in-config", chart_release(values), f"chart 'vault' {named}", "plain text")


def deployment(env: list[dict[str, Any]]) -> ResourceValidationArgs:
    pod = {"containers": [{"name": "app", "image": "ghcr.io/fedobs/programs:0.1.0", "env": env}]}
    return workload("Deployment", "kubernetes:apps/v1:Deployment", pod)


def test_container_env_naming_files_or_secrets_passes() -> None:
    env = [
        {"name": "VAULT_ADDR", "value": "https://vault-active.vault.svc:8200"},
        {"name": "SNAPSHOT_JWT_FILE", "value": "/var/run/secrets/vault/token"},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "vault-snapshot-s3", "key": "a"}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "vault-snapshot-s3", "key": "s"}}},
        {"name": "VAULT_TOKEN", "value": Secret("hvs.x")},
        {"name": "DB_PASSWORD", "value": "$(PASSWORD_FROM_SECRET)"},
        {"name": "GOMEMLIMIT", "value": "409MiB"},
    ]
    assert violations("no-plaintext-credentials-in-config", deployment(env)) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [("VAULT_TOKEN", "hvs.CAESIJ"), ("AWS_SECRET_ACCESS_KEY", "wJalrXUtn"), ("DB_PASSWORD", "hunter2")],
)
def test_a_plain_credential_in_container_env_fails(name: str, value: str) -> None:
    env = [{"name": "VAULT_ADDR", "value": "https://v:8200"}, {"name": name, "value": value}]
    one_violation(
        "no-plaintext-credentials-in-config",
        deployment(env),
        f"spec.template.spec.containers[0] ('app').env[1] {name!r} has a plain value",
        "secretKeyRef",
    )


def test_configmap_entries_naming_credentials_must_not_hold_them() -> None:
    good = validation_args(CONFIG_MAP, {"data": {"config.yaml": "receivers: {}\n", "ca.crt": "-----BEGIN CERT"}})
    assert violations("no-plaintext-credentials-in-config", good) == []
    secret = validation_args(CONFIG_MAP, {"data": Secret({"password": "hunter2"})})
    assert violations("no-plaintext-credentials-in-config", secret) == []
    bad = validation_args(CONFIG_MAP, {"data": {"config.yaml": "x: 1\n", "admin_password": "hunter2"}})
    one_violation("no-plaintext-credentials-in-config", bad, "data.admin_password holds a credential in a ConfigMap")
    binary = validation_args(CONFIG_MAP, {"binaryData": {"api-token": "aHVudGVyMg=="}})
    one_violation("no-plaintext-credentials-in-config", binary, "binaryData.api-token holds a credential")


def test_a_private_key_in_helm_values_or_env_fails() -> None:
    # Any PEM private key in plain text, wherever it is, is no-plaintext-secret-inputs' (whatever its key).
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n-----END RSA PRIVATE KEY-----\n"
    one_violation(
        "no-plaintext-secret-inputs",
        chart_release({"server": {"extraEnvironmentVars": {"SIGNER": pem}}}),
        "input values.server.extraEnvironmentVars.SIGNER holds a PEM private key",
    )
    one_violation(
        "no-plaintext-secret-inputs",
        deployment([{"name": "SIGNER", "value": pem}]),
        "input spec.template.spec.containers.0.env.0.value holds a PEM private key",
    )


# --- the Kyverno admission policy denies and fails closed ------------------------------------------------


def kyverno_policy(mode: str = "Enforce", **spec: Any) -> ResourceValidationArgs:
    policy = require_vso_policy("Enforce" if mode == "Enforce" else "Audit", ["observability"])
    policy["spec"].update(spec)
    return validation_args(KYVERNO_POLICY, policy, name="hub-admission-policy")


def test_the_stacks_enforcing_policies_pass() -> None:
    policies = admission_policies("Enforce", ["observability"])
    assert len(policies) == 3
    with stack_config(cli_config("hub")):
        for policy in policies:
            assert violations("admission-policy-enforced", validation_args(KYVERNO_POLICY, policy)) == []
    default_failure_policy = require_vso_policy("Enforce", ["observability"])
    del default_failure_policy["spec"]["failurePolicy"]  # Kyverno's default is Fail
    with stack_config(None):
        assert violations("admission-policy-enforced", kyverno_policy()) == []
        assert violations("admission-policy-enforced", validation_args(KYVERNO_POLICY, default_failure_policy)) == []


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"validationActions": ["Audit"]}, "spec.validationActions is ['Audit']: without 'Deny'"),
        ({"validationActions": ["Warn", "Audit"]}, "spec.validationActions is ['Warn', 'Audit']"),
        ({"validationActions": None}, "spec.validationActions is not set"),
        ({"failurePolicy": "Ignore"}, "spec.failurePolicy is 'Ignore'"),
        ({"evaluation": {"admission": {"enabled": False}}}, "spec.evaluation.admission.enabled is False"),
    ],
)
def test_a_policy_that_only_audits_or_fails_open_fails(spec: dict[str, Any], named: str) -> None:
    with stack_config(cli_config("hub")):
        one_violation("admission-policy-enforced", kyverno_policy(**spec), named, "fedobs:developmentMode: true")


def test_the_configs_audit_mode_is_refused_outside_development_stacks() -> None:
    rendered = admission_policies("Audit", ["observability"])  # what fedobs:admission.mode: Audit renders
    assert all(p["spec"]["validationActions"] == ["Audit"] and p["spec"]["failurePolicy"] == "Ignore" for p in rendered)
    for policy in rendered:
        audit = validation_args(KYVERNO_POLICY, policy)
        for config in (cli_config("hub"), {**cli_config("edge"), "fedobs:developmentMode": "false"}, None):
            with stack_config(config):
                assert len(violations("admission-policy-enforced", audit)) == 2
        with stack_config({**cli_config("hub"), "fedobs:developmentMode": "true"}):
            assert violations("admission-policy-enforced", audit) == []


# --- the unseal keys are stored encrypted outside development stacks -------------------------------------

JOB = "kubernetes:batch/v1:Job"


def bootstrap_job_args(command: list[str], env: list[dict[str, str]] | None = None) -> ResourceValidationArgs:
    container: dict[str, Any] = {"name": "bootstrap", "image": "img:1", "command": command}
    if env is not None:
        container["env"] = env
    return validation_args(
        JOB, {"spec": {"template": {"spec": {"containers": [container]}}}}, name="hub-vault-bootstrap"
    )


def test_the_pack_the_component_and_the_program_spell_the_plaintext_flag_alike() -> None:
    from components.vault import PLAINTEXT_UNSEAL_KEYS_FLAG
    from programs.vault_bootstrap.__main__ import build_parser

    assert rules.PLAINTEXT_UNSEAL_KEYS_FLAG == PLAINTEXT_UNSEAL_KEYS_FLAG
    parsed = build_parser().parse_args([PLAINTEXT_UNSEAL_KEYS_FLAG, "true"])
    assert parsed.insecure_plaintext_unseal_keys_for_development == "true"
    variable = PLAINTEXT_UNSEAL_KEYS_FLAG.removeprefix("--").upper().replace("-", "_")
    assert f"VAULT_BOOTSTRAP_{variable}" == rules.PLAINTEXT_UNSEAL_KEYS_ENV


def test_a_bootstrap_job_with_plaintext_unseal_keys_fails_outside_development_stacks() -> None:
    base = ["python", "-m", "programs.vault_bootstrap", "--seal", "shamir"]
    failing = [
        (bootstrap_job_args([*base, rules.PLAINTEXT_UNSEAL_KEYS_FLAG, "true"]), "passes --insecure-plaintext"),
        (bootstrap_job_args([*base, f"{rules.PLAINTEXT_UNSEAL_KEYS_FLAG}=true"]), "passes --insecure-plaintext"),
        (bootstrap_job_args(base, [{"name": rules.PLAINTEXT_UNSEAL_KEYS_ENV, "value": "true"}]), "sets VAULT_"),
    ]
    for config in (cli_config("hub"), {**cli_config("hub"), "fedobs:developmentMode": "false"}, None):
        with stack_config(config):
            for args, named in failing:
                one_violation("vault-unseal-keys-encrypted", args, named, "fedobs:vault.operatorPgpKeys")
    with stack_config({**cli_config("hub"), "fedobs:developmentMode": "true"}):
        for args, _ in failing:
            assert violations("vault-unseal-keys-encrypted", args) == []


def test_a_bootstrap_job_with_pgp_keys_or_another_program_passes() -> None:
    with stack_config(cli_config("hub")):
        for args in (
            bootstrap_job_args(["python", "-m", "programs.vault_bootstrap", "--pgp-key", "bXk="]),
            bootstrap_job_args(["python", "-m", "programs.vault_bootstrap", rules.PLAINTEXT_UNSEAL_KEYS_FLAG, "false"]),
            bootstrap_job_args(["python", "-m", "programs.other", rules.PLAINTEXT_UNSEAL_KEYS_FLAG, "true"]),
        ):
            assert violations("vault-unseal-keys-encrypted", args) == []


def test_the_kind_example_may_keep_plaintext_unseal_keys_because_it_is_a_development_stack() -> None:
    """examples/kind sets insecurePlaintextUnsealKeysForDevelopment (with developmentMode): the pack
    accepts its bootstrap Job there and refuses the same plan once the stack is not marked development."""
    config, secret_keys = load_stack_file("kind", REPO / "examples" / "kind")
    assert config["fedobs:vault"]["insecurePlaintextUnsealKeysForDevelopment"] is True
    recording = run_program("kind", config, secret_keys)
    assert recording.error is None, recording.error
    runner = PackRunner([RULES["vault-unseal-keys-encrypted"]])
    assert runner.run(recording, engine_form(config)) == []
    production = {**engine_form(config), "fedobs:developmentMode": "false"}
    (found,) = runner.run(recording, production)
    assert found.urn.endswith("::hub-vault-bootstrap") and "passes --insecure-plaintext" in found.message


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


def test_the_pack_refuses_what_issue_18_found_it_let_through(hub: Recording) -> None:
    """The recorded hub with each input the pack used to let through (issue 18): each is reported, by its
    own rule, through the engine's wire form; nothing else is."""
    broken = copy.deepcopy(hub)
    release = next(r for r in broken.of_type(RELEASE) if r.inputs["chart"] == "vault")
    release.inputs["values"]["server"]["dev"] = {"enabled": True}
    raft = release.inputs["values"]["server"]["ha"]["raft"]
    raft["config"] = (
        raft["config"]
        .replace('tls_min_version = "tls12"', 'tls_min_version = "tls10"', 1)
        .replace(EXTERNAL, 'x_forwarded_for_authorized_addrs = "0.0.0.0/0"')
        .replace("unauthenticated_metrics_access = false", "unauthenticated_metrics_access = true", 1)
    )
    broken.one("linode:index/lkeCluster:LkeCluster").inputs["controlPlane"]["acl"]["addresses"] = [
        {"ipv4s": ["0.0.0.0/1", "128.0.0.0/1"]}
    ]
    gateway = broken.one("kubernetes:core/v1:Service", "hub-collector-service")
    gateway.inputs["metadata"]["annotations"][FIREWALL_ACL] = json.dumps({"allowList": {"ipv4": ["0.0.0.0/1"]}})
    gateway.outputs = {}  # the stack rule reads outputs; the mock's echo of the inputs is rebuilt from them
    admin = broken.one(POLICY, "hub-vault-admin-acl")
    admin.inputs["policy"] += 'path "*" { capabilities = ["sudo"] }\n'
    broken.one(ENDPOINT, "hub-vault-config-db-telemetry-pg-rotate-root").inputs["path"] = "auth/kubernetes/role/any"
    cert_sync = next(r for r in broken.of_type(K8S_ROLE) if r.inputs["roleName"] == "cert-sync")
    cert_sync.inputs["boundServiceAccountNamespaces"].append("kube-system")
    collector = broken.one("kubernetes:apps/v1:Deployment", "hub-collector-deployment")
    collector.inputs["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "API_TOKEN", "value": "x1"})
    broken.one(CONFIG_MAP, "hub-collector-config").inputs["data"]["admin_password"] = "hunter2"
    broken.one(MOUNT, "hub-transit-unseal-mount").protect = False
    kyverno = broken.one(KYVERNO_POLICY, "hub-admission-policy")
    kyverno.inputs["spec"].update(validationActions=["Audit"], failurePolicy="Ignore")
    found = PackRunner().run(broken, cli_config("hub"))
    assert sorted((v.policy, v.urn.rsplit("::", 1)[-1]) for v in found) == [
        ("admission-policy-enforced", "hub-admission-policy"),
        ("admission-policy-enforced", "hub-admission-policy"),
        ("hub-control-plane-acl", "hub-cluster-lke"),
        ("hub-control-plane-acl", "hub-cluster-lke"),
        ("lke-load-balancers-firewalled", "hub-collector-service"),
        ("no-plaintext-credentials-in-config", "hub-collector-config"),
        ("no-plaintext-credentials-in-config", "hub-collector-deployment"),
        ("stateful-resources-protected", "hub-transit-unseal-mount"),
        ("vault-kubernetes-auth-roles-exact", "hub-kubernetes-auth-cert-sync-role"),
        ("vault-listeners-hardened", "hub-vault-release"),
        ("vault-listeners-hardened", "hub-vault-release"),
        ("vault-listeners-hardened", "hub-vault-release"),
        ("vault-no-dev-server", "hub-vault-release"),
        ("vault-policies-bounded", "hub-vault-admin-acl"),
        ("vault-policies-bounded", "hub-vault-admin-acl"),
        ("vault-roles-and-policies-typed", "hub-vault-config-db-telemetry-pg-rotate-root"),
    ], "\n".join(map(str, found))
    assert all(v.enforcement_level == "MANDATORY" for v in found)


def test_the_kind_example_may_audit_because_it_is_a_development_stack() -> None:
    """examples/kind sets fedobs:developmentMode: true and admission.mode: Audit: the pack accepts that
    there, and refuses the same plan once the stack is not marked development."""
    config, secret_keys = load_stack_file("kind", REPO / "examples" / "kind")
    assert config["fedobs:developmentMode"] is True and config["fedobs:admission"]["mode"] == "Audit"
    recording = run_program("kind", config, secret_keys)
    assert recording.error is None, recording.error
    runner = PackRunner([RULES["admission-policy-enforced"]])
    assert runner.run(recording, engine_form(config)) == []
    production = {**engine_form(config), "fedobs:developmentMode": "false"}
    found = sorted(v.message.splitlines()[-1].split(":")[0] for v in runner.run(recording, production))
    assert found == ["spec.failurePolicy is 'Ignore'", "spec.validationActions is ['Audit']"], found


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
