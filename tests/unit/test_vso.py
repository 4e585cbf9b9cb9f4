"""Vault Secrets Operator objects per target namespace, as declared for hub and edge."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from components.vso import CONTROLLER_USERNAME, RELEASE_NAME
from offline.engine import Recording, load_stack_file, run_program
from rig.schemas import schemas_dir, validate_kubernetes_object


def objects(recording: Recording, kind: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o
        for o in recording.kubernetes_objects()
        if o["kind"] == kind and (namespace is None or o["metadata"].get("namespace") == namespace)
    }


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_each_target_namespace_gets_its_own_connection_and_auth(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    connection = objects(recording, "VaultConnection", "observability")["vault"]["spec"]
    assert connection == {
        "address": "https://vault-active.vault.svc:8200",
        "tlsServerName": "vault-active.vault.svc",
        "caCertSecretRef": "vault-ca",
        "skipTLSVerify": False,
    }
    ca = objects(recording, "Secret", "observability")["vault-ca"]
    assert ca["stringData"]["ca.crt"] == recording.outputs["vaultCaCert"]
    auth = objects(recording, "VaultAuth", "observability")["vault"]["spec"]
    assert auth == {
        "vaultConnectionRef": "vault",
        "method": "kubernetes",
        "mount": "kubernetes",
        "kubernetes": {
            "role": "vso-observability",
            "serviceAccount": "vso-auth",
            "audiences": ["vault"],
            "tokenExpirationSeconds": 600,
        },
    }
    account = objects(recording, "ServiceAccount", "observability")["vso-auth"]
    assert account["automountServiceAccountToken"] is False


def test_edge_static_secret(edge: Recording) -> None:
    spec = objects(edge, "VaultStaticSecret", "observability")["otel-client-tls"]["spec"]
    assert spec == {
        "vaultAuthRef": "vault",
        "type": "kv-v2",
        "mount": "kv",
        "path": "otel/otel-client-tls",
        "refreshAfter": "60s",
        "hmacSecretData": True,
        "destination": {"name": "otel-client-tls", "create": True, "overwrite": False, "type": "kubernetes.io/tls"},
        "rolloutRestartTargets": [{"kind": "Deployment", "name": "otel-collector"}],
    }


def test_hub_static_secrets(hub: Recording) -> None:
    secrets = objects(hub, "VaultStaticSecret", "observability")
    assert {name: s["spec"]["path"] for name, s in secrets.items()} == {
        "otel-gateway-tls": "otel/otel-gateway-tls",
        "otel-client-ca": "otel/client-ca",
    }
    assert secrets["otel-client-ca"]["spec"]["destination"]["type"] == "Opaque"


def test_operator_release_is_pinned_without_defaults(hub: Recording) -> None:
    release = next(
        r for r in hub.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault-secrets-operator"
    )
    assert release.inputs["version"] == "1.4.1" and release.inputs["namespace"] == "vault-secrets-operator"
    values = release.inputs["values"]
    assert values["controller"]["manager"]["image"] == {
        "repository": "hashicorp/vault-secrets-operator",
        "tag": "1.4.1",
    }
    assert values["defaultVaultConnection"] == {"enabled": False}
    assert values["defaultAuthMethod"] == {"enabled": False}


def test_the_controllers_service_account_follows_from_the_release(hub: Recording) -> None:
    """The identity rule 2 of the admission guardrail trusts (components/vso.py
    ``CONTROLLER_USERNAME``): chart v1.4.1 runs the controller as ``<fullname>-controller-manager``
    (chart/templates/deployment.yaml), ``fullname`` being the release name when that contains the
    chart's name and no ``fullnameOverride``/``nameOverride`` is set (chart/templates/_helpers.tpl)."""
    release = next(
        r for r in hub.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault-secrets-operator"
    )
    chart = yaml.safe_load((schemas_dir() / "vault-secrets-operator" / "Chart.yaml").read_text())
    defaults = yaml.safe_load((schemas_dir() / "vault-secrets-operator" / "values.yaml").read_text())
    assert chart["name"] in release.inputs["name"] == RELEASE_NAME
    values = release.inputs["values"]
    for override in ("fullnameOverride", "nameOverride"):
        assert override not in values and not defaults.get(override)
    expected = f"system:serviceaccount:{release.inputs['namespace']}:{release.inputs['name']}-controller-manager"
    assert expected == CONTROLLER_USERNAME
    assert expected.endswith(":vault-secrets-operator:vault-secrets-operator-controller-manager")


def test_vault_auth_global_option() -> None:
    config, secret_keys = load_stack_file("edge")
    config = copy.deepcopy(config)
    config["fedobs:distribution"] = {"vaultAuthGlobal": True}
    hub = run_program("hub", *load_stack_file("hub"))
    recording = run_program("edge", config, secret_keys, {"organization/fedobs/hub": hub.outputs})
    assert recording.error is None, recording.error
    (glob,) = objects(recording, "VaultAuthGlobal").values()
    assert glob["metadata"]["namespace"] == "vault-secrets-operator"
    assert glob["spec"]["allowedNamespaces"] == ["observability"]
    auth = objects(recording, "VaultAuth", "observability")["vault"]["spec"]
    assert auth["vaultAuthGlobalRef"] == {
        "name": "default",
        "namespace": "vault-secrets-operator",
        "allowDefault": False,
    }
    assert auth["kubernetes"] == {"role": "vso-observability", "serviceAccount": "vso-auth"}
    for obj in (glob, objects(recording, "VaultAuth", "observability")["vault"]):
        assert validate_kubernetes_object(obj) == []
