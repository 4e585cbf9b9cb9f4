"""Each edge's deploy identity on a real hub: it mints its own hub credentials and nothing else.

The hub stack is evaluated trusting a signing key this test generates (``rig.deploy_identity``);
what it declares for its edges (JWT mount and roles, transit keys and token roles, the edges'
AppRoles and policies) is applied to a real OpenBao. JWTs are signed as an identity provider
signs them. Then the edge stack's ``HubLink`` is applied with edge-eu's own deploy login, as
``pulumi up`` of the edge would, and what the edge holds is checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from offline.engine import Recording, load_stack_file, run_program
from rig.applier import VaultApplier
from rig.deploy_identity import (
    DeployKey,
    deploy_login,
    deploy_token,
    edge_jwt,
    edge_link_resources,
    edge_on_real_hub,
    trusting,
)
from rig.hub_edge import real_hub_outputs, secret_value
from rig.openbao import api
from rig.pki import TestCA
from rig.tls_vault import Vault, initialise, start_vault

pytestmark = pytest.mark.real


@dataclass
class Hub:
    vault: Vault
    recording: Recording
    key: DeployKey

    def jwt(self, edge: str) -> str:
        return edge_jwt(self.key, self.recording, edge)

    def as_token(self, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> int:
        return api(self.vault.url, method, path, token=token, body=body, ca_file=self.vault.ca_file).status


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("edge-identity")
    key = DeployKey()
    config, secret_keys = load_stack_file("hub")
    recording = run_program("hub", trusting(config, key), secret_keys)
    assert recording.error is None, recording.error
    node = start_vault("hub", base / "hub", TestCA("fedobs-test-vault-ca"))
    try:
        vault = initialise("hub", node, kv=False)
        VaultApplier(vault.url, vault.root, ca_file=vault.ca_file).apply(edge_link_resources(recording))
        yield Hub(vault, recording, key)
    finally:
        node.stop()


def test_an_edge_identity_mints_its_own_seal_token_and_cert_sync_secret(hub: Hub) -> None:
    token = deploy_token(hub.vault.url, hub.vault.ca_file, "edge-eu", hub.jwt("edge-eu"))
    created = api(
        hub.vault.url,
        "POST",
        "auth/token/create/transit-unseal-edge-eu",
        token=token,
        body={"policies": ["transit-unseal-edge-eu"], "no_default_policy": True},
        ca_file=hub.vault.ca_file,
    )
    assert created.status == 200, created.text
    assert created.body["auth"]["policies"] == ["transit-unseal-edge-eu"]
    seal_token = created.body["auth"]["client_token"]
    sealed = api(
        hub.vault.url,
        "POST",
        "transit/encrypt/edge-eu",
        token=seal_token,
        body={"plaintext": "AAAA"},
        ca_file=hub.vault.ca_file,
    )
    assert sealed.status == 200, sealed.text
    secret = api(
        hub.vault.url, "POST", "auth/approle-edges/role/edge-eu/secret-id", token=token, ca_file=hub.vault.ca_file
    )
    assert secret.status == 200, secret.text
    login = api(
        hub.vault.url,
        "POST",
        "auth/approle-edges/login",
        body={"role_id": "edge-edge-eu", "secret_id": secret.data["secret_id"]},
        ca_file=hub.vault.ca_file,
    )
    assert login.status == 200, login.text
    assert login.body["auth"]["policies"] == ["hub-access-edge-eu"]  # no default policy


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "auth/token/create/transit-unseal-edge-ap", {"policies": ["transit-unseal-edge-ap"]}),
        ("POST", "auth/approle-edges/role/edge-ap/secret-id", None),
        ("GET", "auth/approle-edges/role/edge-eu/role-id", None),
        ("POST", "auth/token/create", {"policies": ["transit-unseal-edge-eu"]}),
        ("POST", "auth/token/create-orphan", {"policies": ["transit-unseal-edge-eu"]}),
        ("POST", "transit/decrypt/edge-eu", {"ciphertext": "vault:v1:AAAA"}),
        ("PUT", "sys/policies/acl/edge-deploy-edge-eu", {"policy": 'path "*" { capabilities = ["sudo"] }'}),
        ("POST", "auth/jwt-edges/role/edge-deploy-edge-eu", {"bound_subject": "anyone"}),
        ("POST", "auth/token/roles/transit-unseal-edge-eu", {"allowed_policies": ["root"]}),
    ],
)
def test_an_edge_identity_is_refused_everything_else(
    hub: Hub, method: str, path: str, body: dict[str, Any] | None
) -> None:
    token = deploy_token(hub.vault.url, hub.vault.ca_file, "edge-eu", hub.jwt("edge-eu"))
    assert hub.as_token(token, method, path, body) == 403


def test_a_deploy_token_lives_for_one_run_without_the_default_policy(hub: Hub) -> None:
    login = deploy_login(hub.vault.url, hub.vault.ca_file, "edge-eu", hub.jwt("edge-eu"))
    assert login.status == 200, login.text
    auth = login.body["auth"]
    assert auth["token_policies"] == ["edge-deploy-edge-eu"] and auth["lease_duration"] == 900


@pytest.mark.parametrize(
    "forged",
    [
        "another edge's subject",
        "another key, same claims",
        "another issuer",
        "another audience",
        "expired",
    ],
)
def test_a_jwt_for_another_edge_or_from_another_issuer_is_refused(hub: Hub, forged: str) -> None:
    role = hub.recording.one("vault:jwt/authBackendRole:AuthBackendRole", "hub-edge-identity-edge-eu-role")
    subject, audience = role.inputs["boundSubject"], role.inputs["boundAudiences"][0]
    jwt = {
        "another edge's subject": lambda: hub.jwt("edge-ap"),
        "another key, same claims": lambda: DeployKey().sign(subject, audience),
        "another issuer": lambda: hub.key.sign(subject, audience, issuer="https://token.actions.githubusercontent.com"),
        "another audience": lambda: hub.key.sign(subject, "sts.amazonaws.com"),
        "expired": lambda: hub.key.sign(subject, audience, ttl=-120),
    }[forged]()
    login = deploy_login(hub.vault.url, hub.vault.ca_file, "edge-eu", jwt)
    assert login.status in (400, 403), (forged, login.status, login.text)
    assert "auth" not in login.body or login.body["auth"] is None


def test_the_edge_state_holds_its_own_credentials_and_nothing_of_another_edge(hub: Hub, tmp_path: Path) -> None:
    outputs = real_hub_outputs(hub.recording, address=hub.vault.url, ca_pem=Path(hub.vault.ca_file).read_text())
    edge, applied = edge_on_real_hub(hub.recording, hub.key, outputs, hub.vault.url, hub.vault.ca_file)
    assert set(applied.tokens) == {"edge-eu-hub-transit-token"}
    assert set(applied.secret_ids) == {"edge-eu-hub-secret-id"}
    assert secret_value(edge, "vault-seal", "token") == applied.tokens["edge-eu-hub-transit-token"]
    assert secret_value(edge, "hub-secret-id", "secret-id") == applied.secret_ids["edge-eu-hub-secret-id"]
    assert secret_value(edge, "hub-credential", "role-id") == "edge-edge-eu"
    # what a StackReference gave the edge, and everything it declares, names no other edge
    state = json.dumps([outputs, edge.outputs, [r.inputs for r in edge.resources]])
    assert "edge-ap" not in state
    assert set(outputs) == {"role", "vaultAddress", "vaultCaCert", "otlpEndpoint"}
