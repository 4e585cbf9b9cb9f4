"""The hub's edge deploy identities as declared: one JWT role per edge, bound to that edge's subject,
whose policy reaches only that edge's token role and AppRole (proven on OpenBao in
tests/real/test_edge_identity_real.py)."""

from __future__ import annotations

import pytest

from components.edge_identity import deploy_policy_hcl
from components.vault_policies import Grant, render_policy
from offline.engine import Recording, load_stack_file, run_program
from tests.unit.test_vault_config import policy_of


@pytest.mark.parametrize("edge", ["edge-eu", "edge-ap"])
def test_each_edge_has_a_role_bound_to_its_own_subject(hub: Recording, edge: str) -> None:
    role = hub.one("vault:jwt/authBackendRole:AuthBackendRole", f"hub-edge-identity-{edge}-role")
    assert role.inputs["roleName"] == f"edge-deploy-{edge}"
    assert role.inputs["backend"] == "jwt-edges" and role.inputs["roleType"] == "jwt"
    assert role.inputs["userClaim"] == "sub"
    assert role.inputs["boundSubject"] == f"repo:fedobs/fedobs:environment:{edge}"
    assert role.inputs["boundAudiences"] == ["fedobs-hub-vault"]
    assert role.inputs["tokenPolicies"] == [f"edge-deploy-{edge}"]
    assert role.inputs["tokenNoDefaultPolicy"] is True
    assert role.inputs["tokenTtl"] == role.inputs["tokenMaxTtl"] == 900


def test_the_mount_trusts_one_issuer(hub: Recording) -> None:
    backend = hub.one("vault:jwt/authBackend:AuthBackend", "hub-edge-identity-jwt")
    assert backend.inputs["path"] == "jwt-edges" and backend.inputs["type"] == "jwt"
    assert backend.inputs["boundIssuer"] == "https://token.actions.githubusercontent.com"
    assert backend.inputs["oidcDiscoveryUrl"] == "https://token.actions.githubusercontent.com"
    assert "jwtValidationPubkeys" not in backend.inputs


@pytest.mark.parametrize("edge", ["edge-eu", "edge-ap"])
def test_a_deploy_policy_reaches_only_its_own_edge(hub: Recording, edge: str) -> None:
    role = f"auth/approle-edges/role/{edge}"
    assert policy_of(hub, f"edge-deploy-{edge}") == {
        f"auth/token/create/transit-unseal-{edge}": ["update"],
        "auth/token/lookup-accessor": ["update"],
        "auth/token/lookup-self": ["read"],
        "auth/token/revoke-accessor": ["update"],
        f"{role}/secret-id": ["update"],
        f"{role}/secret-id-accessor/destroy": ["update"],
        f"{role}/secret-id-accessor/lookup": ["update"],
    }


def test_only_the_edge_token_role_may_be_granted() -> None:
    assert 'path "auth/token/create/transit-unseal-edge-eu"' in deploy_policy_hcl("edge-eu")
    for path in ("auth/token/create", "auth/token/create/transit-unseal-edge-ap", "auth/token/create-orphan"):
        with pytest.raises(ValueError, match="is not a workload path"):
            render_policy("edge-deploy-edge-eu", [Grant(path, ("update",))], token_roles=("transit-unseal-edge-eu",))


def test_a_removed_edge_loses_its_role() -> None:
    """An edge dropped from fedobs:edges has no role (Pulumi deletes it): it can log in to none."""
    config, secret_keys = load_stack_file("hub")
    config = {**config, "fedobs:edges": [{"name": "edge-eu"}]}
    hub = run_program("hub", config, secret_keys)
    assert hub.error is None, hub.error
    roles = {
        r.inputs["roleName"]
        for r in hub.of_type("vault:jwt/authBackendRole:AuthBackendRole")
        if r.inputs["backend"] == "jwt-edges"
    }
    assert roles == {"edge-deploy-edge-eu"}
    policies = {r.inputs["name"] for r in hub.of_type("vault:index/policy:Policy")}
    assert not {p for p in policies if p.endswith("edge-ap")}
