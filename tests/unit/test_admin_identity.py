"""Pulumi's own Vault identity as the stacks declare it: the hub's JWT login for CI beside userpass, the
provider's choice between them, and the CIDR bindings of the userpass admin and of each edge's AppRole.
What Vault does with them is proven on OpenBao in tests/real/test_admin_identity_real.py and
tests/real/test_cidr_binding_real.py."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from components.admin_identity import jwt_login
from components.vault_names import DEPLOY_JWT_ENV
from config import HubConfig, parse_stack_config
from offline.engine import Recording, load_stack_file, run_program
from rig.deploy_identity import DeployKey, trusting

JWT_ENV = DEPLOY_JWT_ENV


def hub_run(config: dict[str, Any] | None = None) -> Recording:
    shipped, secret_keys = load_stack_file("hub")
    recording = run_program("hub", config or shipped, secret_keys)
    assert recording.error is None, recording.error
    return recording


def test_the_hub_declares_its_ci_login_bound_to_its_environment(hub: Recording) -> None:
    backend = hub.one("vault:jwt/authBackend:AuthBackend", "hub-admin-identity-jwt")
    assert backend.inputs["path"] == "jwt-pulumi" and backend.inputs["type"] == "jwt"
    assert (
        backend.inputs["boundIssuer"]
        == backend.inputs["oidcDiscoveryUrl"]
        == "https://token.actions.githubusercontent.com"
    )
    role = hub.one("vault:jwt/authBackendRole:AuthBackendRole", "hub-admin-identity-role")
    inputs = role.inputs
    assert (inputs["backend"], inputs["roleName"], inputs["roleType"]) == ("jwt-pulumi", "pulumi", "jwt")
    assert inputs["userClaim"] == "sub"
    assert inputs["boundSubject"] == "repo:fedobs/fedobs:environment:production"
    assert inputs["boundAudiences"] == ["fedobs-hub-admin"]
    assert inputs["tokenPolicies"] == ["fedobs-admin"] and inputs["tokenNoDefaultPolicy"] is True
    assert inputs["tokenTtl"] == inputs["tokenMaxTtl"] == 1200
    policy = hub.one("vault:index/policy:Policy", "hub-vault-admin-acl")
    assert policy.urn in role.dependencies


def test_an_edge_declares_no_admin_jwt_login(edge: Recording) -> None:
    mounts = {r.inputs["path"] for r in edge.of_type("vault:jwt/authBackend:AuthBackend")}
    assert "jwt-pulumi" not in mounts


def test_without_a_jwt_the_provider_logs_in_with_userpass(hub: Recording) -> None:
    provider = hub.one("pulumi:providers:vault", "hub-vault-provider")
    assert "authLoginJwt" not in provider.inputs
    assert provider.inputs["authLoginUserpass"]


def test_with_a_jwt_the_hub_provider_logs_in_as_its_ci_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JWT_ENV, "header.claims.signature")
    hub = hub_run()
    provider = hub.one("pulumi:providers:vault", "hub-vault-provider")
    assert "authLoginUserpass" not in provider.inputs
    login = provider.inputs["authLoginJwt"]
    login = json.loads(login) if isinstance(login, str) else login
    assert login == {"role": "pulumi", "mount": "jwt-pulumi"}, "the JWT itself stays in the environment"
    assert "header.claims.signature" not in json.dumps(provider.inputs)
    # the mount it logs in through is still declared (by this run, for the next)
    assert hub.one("vault:jwt/authBackendRole:AuthBackendRole", "hub-admin-identity-role")


def test_a_hub_without_the_identity_ignores_a_jwt(monkeypatch: pytest.MonkeyPatch) -> None:
    """An edge's job carries its own JWT for the hub; a stack that declares no admin identity never
    tries it on its own Vault."""
    monkeypatch.setenv(JWT_ENV, "header.claims.signature")
    config, _ = load_stack_file("hub")
    config = {k: v for k, v in config.items() if k != "fedobs:hubDeployIdentity"}
    hub = hub_run(config)
    provider = hub.one("pulumi:providers:vault", "hub-vault-provider")
    assert "authLoginJwt" not in provider.inputs and provider.inputs["authLoginUserpass"]
    assert not [r for r in hub.of_type("vault:jwt/authBackend:AuthBackend") if r.inputs["path"] == "jwt-pulumi"]


def test_jwt_login_needs_both_the_identity_and_a_jwt() -> None:
    config, secret_keys = load_stack_file("hub")
    raw = {k.removeprefix("fedobs:"): v for k, v in config.items() if k.startswith("fedobs:")}
    hub = parse_stack_config("hub", raw, {k.removeprefix("fedobs:") for k in secret_keys})
    assert isinstance(hub, HubConfig) and hub.hub_deploy_identity is not None
    assert jwt_login(hub.hub_deploy_identity, {}) is None
    assert jwt_login(hub.hub_deploy_identity, {JWT_ENV: ""}) is None
    assert jwt_login(None, {JWT_ENV: "x.y.z"}) is None
    login = jwt_login(hub.hub_deploy_identity, {JWT_ENV: "x.y.z"})
    assert login is not None and (login.role, login.mount) == ("pulumi", "jwt-pulumi")


def test_the_test_key_replaces_github_for_both_identities() -> None:
    config, _ = load_stack_file("hub")
    key = DeployKey()
    changed = trusting(config, key)
    for name in ("fedobs:edgeDeployIdentity", "fedobs:hubDeployIdentity"):
        identity = changed[name]
        assert identity["issuer"] == key.issuer and identity["jwtValidationPubkeys"] == [key.public_pem]
        assert "oidcDiscoveryUrl" not in identity


# --- CIDR bindings ------------------------------------------------------------------------------------------


def test_without_cidrs_nothing_is_bound(hub: Recording) -> None:
    endpoint = hub.one("vault:generic/endpoint:Endpoint", "hub-vault-admin-cidrs")
    assert endpoint.inputs["path"] == "auth/userpass-pulumi/users/pulumi"
    assert json.loads(endpoint.inputs["dataJson"]) == {"token_bound_cidrs": []}
    for role in hub.of_type("vault:appRole/authBackendRole:AuthBackendRole"):
        assert "secretIdBoundCidrs" not in role.inputs and "tokenBoundCidrs" not in role.inputs


def test_configured_cidrs_bind_the_admin_user_and_each_edges_approle() -> None:
    config, _ = load_stack_file("hub")
    config = copy.deepcopy(config)
    config["fedobs:vault"]["adminCidrs"] = ["203.0.113.0/24", "10.2.0.0/16"]
    config["fedobs:edges"] = [{"name": "edge-eu", "egressCidrs": ["198.51.100.0/28"]}, {"name": "edge-ap"}]
    hub = hub_run(config)
    endpoint = hub.one("vault:generic/endpoint:Endpoint", "hub-vault-admin-cidrs")
    assert json.loads(endpoint.inputs["dataJson"]) == {"token_bound_cidrs": ["203.0.113.0/24", "10.2.0.0/16"]}
    # written alone, never read back (a /32 comes back without its length), never deleted (the user)
    assert endpoint.inputs["disableRead"] is True and endpoint.inputs["disableDelete"] is True
    eu = hub.one("vault:appRole/authBackendRole:AuthBackendRole", "hub-vault-config-edge-edge-eu-role")
    assert eu.inputs["secretIdBoundCidrs"] == eu.inputs["tokenBoundCidrs"] == ["198.51.100.0/28"]
    ap = hub.one("vault:appRole/authBackendRole:AuthBackendRole", "hub-vault-config-edge-edge-ap-role")
    assert "secretIdBoundCidrs" not in ap.inputs and "tokenBoundCidrs" not in ap.inputs
