"""Cutting an edge off, the documented flow (docs/security.md, "To cut an edge off"), on a real hub.

The hub serves edge-eu and edge-ap. edge-ap mints its credentials with its own deploy identity, as
its ``pulumi up`` would, and uses each of them. Then the flow: (a) edge-ap leaves ``fedobs:edges``
for ``fedobs:retiredEdges`` and the hub's ``pulumi up`` deletes, with terraform-provider-vault's
Delete calls (``VaultApplier.delete_removed``), everything of edge-ap except its protected transit
key; the operator revokes the tokens minted through its token role; (b) the operator deletes its KV
copies. Afterwards every credential edge-ap held is refused by the server, and edge-eu's still work.
Today's flow (remove the edge, ``pulumi up``) stops on the protected key before deleting anything;
the retired key is destroyed only by an explicit second step (d).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from offline.engine import Recording, load_stack_file, run_program
from rig.applier import ApplyError, ProtectedResource, VaultApplier
from rig.deploy_identity import (
    DeployKey,
    deploy_login,
    edge_jwt,
    edge_link_resources,
    edge_on_real_hub,
    trusting,
)
from rig.hub_edge import real_hub_outputs
from rig.openbao import ApiResponse, api
from rig.pki import TestCA
from rig.tls_vault import Vault, initialise, start_vault

pytestmark = pytest.mark.real

KV_COPY = "edges/{edge}/otel-client-tls"
CERTIFICATE = ("kubernetes:cert-manager.io/v1:Certificate", "hub-otlp-pki-otel-client-tls-edge-ap")


@dataclass
class Held:
    """What one edge holds on the hub after its ``pulumi up`` (and its cert-sync's copy there)."""

    edge: str
    seal_token: str
    secret_id: str
    ciphertext: str


@dataclass
class Hub:
    vault: Vault
    key: DeployKey
    config: dict[str, Any]
    secret_keys: set[str]
    before: Recording

    def record(self, **config: Any) -> Recording:
        recording = run_program("hub", {**self.config, **config}, self.secret_keys)
        assert recording.error is None, recording.error
        return recording

    def call(self, method: str, path: str, token: str | None = None, body: dict[str, Any] | None = None) -> ApiResponse:
        return api(self.vault.url, method, path, token=token or self.vault.root, body=body, ca_file=self.vault.ca_file)

    def applier(self) -> VaultApplier:
        return VaultApplier(self.vault.url, self.vault.root, ca_file=self.vault.ca_file)

    def mint(self, edge: str) -> Held:
        """``pulumi up`` of ``edge``: its seal token and secret_id, made with its deploy login."""
        outputs = real_hub_outputs(self.before, address=self.vault.url, ca_pem=Path(self.vault.ca_file).read_text())
        _, applied = edge_on_real_hub(self.before, self.key, outputs, self.vault.url, self.vault.ca_file, edge=edge)
        seal_token = applied.tokens[f"{edge}-hub-transit-token"]
        sealed = self.call("POST", f"transit/encrypt/{edge}", seal_token, {"plaintext": "c2VhbGVk"})
        assert sealed.status == 200, sealed.text
        # the hub's cert-sync copies the edge's certificate (it writes with its own role; root here)
        self.vault.put(KV_COPY.format(edge=edge), {"tls.crt": f"cert of {edge}", "tls.key": "key", "ca.crt": "ca"})
        return Held(edge, seal_token, applied.secret_ids[f"{edge}-hub-secret-id"], sealed.data["ciphertext"])

    # --- each credential, used as the edge uses it: the status the server answers ---------------

    def approle_read(self, held: Held) -> int:
        """The edge's cert-sync: AppRole login, then a read of its own copy."""
        login = self.call(
            "POST",
            "auth/approle-edges/login",
            body={"role_id": f"edge-{held.edge}", "secret_id": held.secret_id},
        )
        if login.status != 200:
            return login.status
        return self.call("GET", f"kv/data/{KV_COPY.format(edge=held.edge)}", login.body["auth"]["client_token"]).status

    def seal(self, held: Held, operation: str) -> int:
        body = {"plaintext": "c2VhbGVk"} if operation == "encrypt" else {"ciphertext": held.ciphertext}
        return self.call("POST", f"transit/{operation}/{held.edge}", held.seal_token, body).status

    def deploy(self, edge: str) -> int:
        return deploy_login(self.vault.url, self.vault.ca_file, edge, edge_jwt(self.key, self.before, edge)).status


def cut_off_kv(hub: Hub, edge: str) -> list[str]:
    """Step (b), as documented: ``bao kv metadata delete`` of every path under ``kv/edges/<edge>/``."""
    listed = hub.call("LIST", f"kv/metadata/edges/{edge}/")
    keys = listed.data["keys"] if listed.status == 200 else []
    for key in keys:
        assert hub.call("DELETE", f"kv/metadata/edges/{edge}/{key}").status == 204
    return list(keys)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("edge-cutoff")
    key = DeployKey()
    config, secret_keys = load_stack_file("hub")
    config = trusting(config, key)
    assert [e["name"] for e in config["fedobs:edges"]] == ["edge-eu", "edge-ap"]
    before = run_program("hub", config, secret_keys)
    assert before.error is None, before.error
    node = start_vault("hub", base / "hub", TestCA("fedobs-test-vault-ca"))
    try:
        vault = initialise("hub", node)  # KV v2 at kv, as the hub's Vault configuration mounts it
        VaultApplier(vault.url, vault.root, ca_file=vault.ca_file).apply(edge_link_resources(before))
        yield Hub(vault, key, config, set(secret_keys), before)
    finally:
        node.stop()


def test_removing_the_edge_alone_stops_on_its_protected_key_and_deletes_nothing(hub: Hub) -> None:
    """Today's documented flow: the update stops; edge-ap keeps every grant."""
    removed = hub.record(**{"fedobs:edges": [{"name": "edge-eu"}]})
    applier = hub.applier()
    with pytest.raises(ProtectedResource, match="hub-transit-unseal-edge-ap-key"):
        applier.delete_removed(hub.before.resources, removed.resources)
    assert applier.result.calls == [] and applier.result.deleted == []
    assert hub.call("GET", "sys/policies/acl/hub-access-edge-ap").status == 200


def test_cutting_an_edge_off_refuses_every_credential_it_held(hub: Hub) -> None:
    eu, ap = hub.mint("edge-eu"), hub.mint("edge-ap")
    for held in (eu, ap):
        assert hub.approle_read(held) == 200
        assert hub.seal(held, "encrypt") == 200 and hub.seal(held, "decrypt") == 200
        assert hub.deploy(held.edge) == 200
    # the token edge-ap's cert-sync follower keeps between its polls (up to 20 minutes)
    kept = hub.call("POST", "auth/approle-edges/login", body={"role_id": "edge-edge-ap", "secret_id": ap.secret_id})
    assert kept.status == 200, kept.text
    kept_token = kept.body["auth"]["client_token"]
    kept_uses = [
        ("GET", f"kv/metadata/{KV_COPY.format(edge='edge-ap')}", None),
        ("GET", f"kv/data/{KV_COPY.format(edge='edge-ap')}", None),
        ("POST", "auth/approle-edges/role/edge-ap/secret-id", {}),
    ]
    assert [hub.call(m, path, kept_token, body).status for m, path, body in kept_uses] == [200, 200, 200]

    # (a) edge-ap leaves fedobs:edges for fedobs:retiredEdges; the hub's `pulumi up`
    after = hub.record(**{"fedobs:edges": [{"name": "edge-eu"}], "fedobs:retiredEdges": ["edge-ap"]})
    applied = hub.applier().delete_removed(hub.before.resources, after.resources)
    assert {name for _, name in applied.deleted} == {
        "hub-vault-config-edge-edge-ap-policy",
        "hub-vault-config-edge-edge-ap-role",
        "hub-transit-unseal-edge-ap-policy",
        "hub-transit-unseal-edge-ap-token-role",
        "hub-edge-identity-edge-ap-policy",
        "hub-edge-identity-edge-ap-role",
    }
    assert applied.not_deleted == [CERTIFICATE]  # cert-manager's, deleted by the Kubernetes provider
    #     then the operator revokes every token minted through edge-ap's token role
    assert hub.call("PUT", "sys/leases/revoke-prefix/auth/token/create/transit-unseal-edge-ap").status == 204
    # (b) the operator deletes edge-ap's KV copies on the hub
    assert cut_off_kv(hub, "edge-ap") == ["otel-client-tls"]

    assert hub.approle_read(ap) == 400  # invalid role_id: the role and its secret_ids are gone
    # the follower's kept token outlives its policy and its role, and can do nothing with them gone
    assert [hub.call(m, path, kept_token, body).status for m, path, body in kept_uses] == [403, 403, 403]
    assert hub.seal(ap, "encrypt") == 403 and hub.seal(ap, "decrypt") == 403
    assert hub.call("GET", "auth/token/lookup-self", ap.seal_token).status == 403  # revoked
    assert hub.deploy("edge-ap") == 400  # role "edge-deploy-edge-ap" could not be found
    assert hub.call("GET", f"kv/metadata/{KV_COPY.format(edge='edge-ap')}").status == 404
    # the retired key stays (protected, not deletable): edge-ap's Vault data can still be unsealed
    key = hub.call("GET", "transit/keys/edge-ap")
    assert key.status == 200 and key.data["deletion_allowed"] is False

    assert hub.approle_read(eu) == 200
    assert hub.seal(eu, "encrypt") == 200 and hub.seal(eu, "decrypt") == 200
    assert hub.deploy("edge-eu") == 200

    # (d) the retired key goes only with an explicit second step: dropped from retiredEdges, the
    # update stops on it; unprotected in the state (`pulumi state unprotect`), Vault still refuses
    # until the operator allows its deletion
    final = hub.record(**{"fedobs:edges": [{"name": "edge-eu"}]})
    with pytest.raises(ProtectedResource, match="hub-transit-unseal-edge-ap-key"):
        hub.applier().delete_removed(after.resources, final.resources)
    unprotected = [
        replace(r, protect=False) if r.name == "hub-transit-unseal-edge-ap-key" else r for r in after.resources
    ]
    with pytest.raises(ApplyError, match=r"DELETE transit/keys/edge-ap -> 400"):
        hub.applier().delete_removed(unprotected, final.resources)
    assert hub.call("POST", "transit/keys/edge-ap/config", body={"deletion_allowed": True}).status in (200, 204)
    destroyed = hub.applier().delete_removed(unprotected, final.resources)
    assert destroyed.deleted == [("vault:transit/secretBackendKey:SecretBackendKey", "hub-transit-unseal-edge-ap-key")]
    assert hub.call("GET", "transit/keys/edge-ap").status == 404
    assert hub.seal(eu, "encrypt") == 200
