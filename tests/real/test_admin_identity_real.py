"""Pulumi's CI login to the hub's Vault on a real OpenBao: the JWT mount the hub stack declares
(``fedobs:hubDeployIdentity``, components/admin_identity.py), with keys generated here.

The hub stack is evaluated with its shipped config, its identities trusting a test key pair instead of
GitHub (``rig.deploy_identity.trusting``). The server is set up as the bootstrap leaves it (the admin
policy, the userpass admin). Then, as in production:

1. the first run logs in with userpass and applies the hub's CI login (the chicken and egg: the mount
   cannot be used by the run that creates it);
2. a JWT of the hub's deploy job (the subject and audience the role is bound to) logs in, gets
   ``fedobs-admin`` and nothing else, for the declared TTL, renewable no further;
3. with that token alone the admin applies what the hub declares for its Vault (its own policy, the
   userpass admin's address binding, the KV mount, Kubernetes auth and every workload role, the edges'
   transit keys, token roles, deploy identities and AppRoles) and is still refused what the admin
   policy denies;
4. a JWT of another repository, another environment, another audience, another issuer or another key
   is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from offline.engine import RecordedResource, Recording, load_stack_file, run_program
from rig.applier import VaultApplier
from rig.deploy_identity import DeployKey, edge_link_resources, trusting
from rig.hub_edge import children
from rig.kube_api import KubeAPIServer
from rig.openbao import ApiResponse, api
from rig.pki import TestCA
from rig.tls_vault import Vault, initialise, start_vault

pytestmark = pytest.mark.real

PASSWORD = "first-run-password-of-the-userpass-admin"


@dataclass
class Hub:
    vault: Vault
    hub: Recording
    key: DeployKey
    kube: KubeAPIServer
    #: ``fedobs:hubDeployIdentity`` as configured: what the hub's deploy job's JWT carries
    identity: dict[str, Any]

    @property
    def role(self) -> RecordedResource:
        return self.hub.one("vault:jwt/authBackendRole:AuthBackendRole", "hub-admin-identity-role")

    def login(self, jwt: str) -> ApiResponse:
        return api(
            self.vault.url,
            "POST",
            "auth/jwt-pulumi/login",
            body={"role": "pulumi", "jwt": jwt},
            ca_file=self.vault.ca_file,
        )

    def ci_jwt(self, **changes: Any) -> str:
        """A JWT as the hub's deploy job gets it, with ``changes`` (subject, audience, issuer, key)."""
        key = changes.pop("key", self.key)
        subject = changes.pop("subject", self.identity["subject"])
        audience = changes.pop("audience", self.identity["audience"])
        return str(key.sign(subject, audience, **changes))

    def applier(self, token: str) -> VaultApplier:
        return VaultApplier(
            self.vault.url,
            token,
            ca_file=self.vault.ca_file,
            in_cluster_overrides={
                "vault:kubernetes/authBackendConfig:AuthBackendConfig": {
                    "kubernetesHost": self.kube.url,
                    "kubernetesCaCert": self.kube.ca_pem,
                    "disableLocalCaJwt": True,
                    "tokenReviewerJwt": self.kube.mint_service_account_token("vault", "vault"),
                }
            },
        )


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    key = DeployKey()
    config, secret_keys = load_stack_file("hub")
    recording = run_program("hub", trusting(config, key), secret_keys)
    assert recording.error is None, recording.error
    policy = recording.one("vault:index/policy:Policy", "hub-vault-admin-acl").inputs["policy"]
    node = start_vault("hub", tmp_path_factory.mktemp("admin-identity") / "hub", TestCA("fedobs-test-vault-ca"))
    try:
        with KubeAPIServer() as kube:
            vault = initialise("hub", node, kv=False)
            # what programs/vault_bootstrap leaves: the admin policy and the userpass admin
            vault.ok("PUT", "sys/policies/acl/fedobs-admin", {"policy": policy})
            vault.ok("POST", "sys/auth/userpass-pulumi", {"type": "userpass"})
            vault.ok(
                "POST",
                "auth/userpass-pulumi/users/pulumi",
                {"password": PASSWORD, "token_policies": ["fedobs-admin"], "token_ttl": "20m"},
            )
            yield Hub(vault, recording, key, kube, dict(config["fedobs:hubDeployIdentity"]))
    finally:
        node.stop()


@pytest.fixture(scope="module")
def declared_by_userpass(hub: Hub) -> Hub:
    """Step 1: the first run, logged in with userpass, declares the CI login."""
    login = api(
        hub.vault.url,
        "POST",
        "auth/userpass-pulumi/login/pulumi",
        body={"password": PASSWORD},
        ca_file=hub.vault.ca_file,
    )
    assert login.status == 200, login.text
    admin = str(login.body["auth"]["client_token"])
    # before the first run there is no jwt-pulumi to log in through (an unknown path: permission denied)
    assert hub.login(hub.ci_jwt()).status == 403
    hub.applier(admin).apply(children(hub.hub, "hub-admin-identity"))
    return hub


def ci_token(hub: Hub) -> str:
    login = hub.login(hub.ci_jwt())
    assert login.status == 200, login.text
    return str(login.body["auth"]["client_token"])


def test_the_ci_identity_gets_the_admin_policy_for_the_declared_ttl(declared_by_userpass: Hub) -> None:
    hub = declared_by_userpass
    login = hub.login(hub.ci_jwt())
    assert login.status == 200, login.text
    auth = login.body["auth"]
    assert auth["policies"] == ["fedobs-admin"] and auth["token_policies"] == ["fedobs-admin"]
    declared = hub.role.inputs["tokenTtl"]
    assert declared == 1200 and auth["lease_duration"] == declared
    assert auth["metadata"]["role"] == "pulumi"
    token = str(auth["client_token"])
    me = api(hub.vault.url, "GET", "auth/token/lookup-self", token=token, ca_file=hub.vault.ca_file).data
    assert me["path"] == "auth/jwt-pulumi/login" and me["policies"] == ["fedobs-admin"]
    assert declared - 30 < me["ttl"] <= declared
    # renewing asks for an hour; token_max_ttl keeps it at the declared lifetime from the login
    renewed = api(
        hub.vault.url, "POST", "auth/token/renew-self", token=token, body={"increment": "1h"}, ca_file=hub.vault.ca_file
    )
    assert renewed.status == 200 and renewed.body["auth"]["lease_duration"] <= declared, renewed.text


def test_the_ci_identity_applies_what_the_hub_declares_for_its_vault(declared_by_userpass: Hub) -> None:
    hub = declared_by_userpass
    token = ci_token(hub)
    kv = [
        r
        for r in children(hub.hub, "hub-vault-config")
        if r.name in ("hub-vault-config-kv", "hub-vault-config-kv-config")
    ]
    own = [
        hub.hub.one("vault:index/policy:Policy", "hub-vault-admin-acl"),
        hub.hub.one("vault:generic/endpoint:Endpoint", "hub-vault-admin-cidrs"),
    ]
    declared = [
        *own,
        *kv,
        *children(hub.hub, "hub-kubernetes-auth"),
        *edge_link_resources(hub.hub),
        hub.role,  # its own role, updated (the mount exists since the first run)
    ]
    applied = hub.applier(token).apply(declared)
    assert not applied.skipped
    call = hub.vault.ok
    assert sorted(call("LIST", "transit/keys").data["keys"]) == ["edge-ap", "edge-eu"]
    assert {"approle-edges/", "jwt-edges/", "jwt-pulumi/", "kubernetes/", "userpass-pulumi/"} <= set(
        call("GET", "sys/auth").data
    )
    assert sorted(call("LIST", "auth/kubernetes/role").data["keys"]) == sorted(
        r.inputs["roleName"] for r in hub.hub.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
    )
    # the userpass admin still logs in (the address binding write kept its password) ...
    login = api(
        hub.vault.url,
        "POST",
        "auth/userpass-pulumi/login/pulumi",
        body={"password": PASSWORD},
        ca_file=hub.vault.ca_file,
    )
    assert login.status == 200, login.text
    # ... and the CI admin is refused what the policy denies
    for method, path in (("DELETE", "sys/mounts/transit"), ("DELETE", "sys/audit/file"), ("PUT", "sys/seal")):
        answer = api(hub.vault.url, method, path, token=token, ca_file=hub.vault.ca_file)
        assert answer.status == 403, (method, path, answer.text)


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "repo:someone/fork:environment:production"},
        {"subject": "repo:fedobs/fedobs:environment:edge-eu"},
        {"subject": "repo:fedobs/fedobs:ref:refs/heads/main"},
        {"audience": "fedobs-hub-vault"},
        {"issuer": "https://token.actions.githubusercontent.com"},
        {"key": DeployKey()},
        {"ttl": -60},
    ],
    ids=[
        "other-repository",
        "edge-environment",
        "no-environment",
        "edge-audience",
        "other-issuer",
        "other-key",
        "expired",
    ],
)
def test_any_other_jwt_is_refused(declared_by_userpass: Hub, change: dict[str, Any]) -> None:
    answer = declared_by_userpass.login(declared_by_userpass.ci_jwt(**change))
    assert answer.status in (400, 403), answer.text
    assert not (answer.body or {}).get("auth"), answer.text
