"""Pulumi's own Vault identity on a real OpenBao: it applies what the hub declares for its edges, and
is refused what would unseal-proof or blind the hub (unmounting or retuning transit, deleting or
exporting a seal key, making one deletable, disabling an audit device, moving a mount).

The policy is the one the hub stack renders (``components.admin_policy``), written by root as the
bootstrap writes it, and used through a token that holds it and nothing else of note (``default``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from offline.engine import Recording, load_stack_file, run_program
from rig.applier import VaultApplier
from rig.deploy_identity import DeployKey, edge_link_resources, trusting
from rig.hub_edge import children
from rig.openbao import ApiResponse, api
from rig.pki import TestCA
from rig.tls_vault import Vault, initialise, start_vault

pytestmark = pytest.mark.real


@dataclass
class Admin:
    vault: Vault
    token: str
    hub: Recording

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> ApiResponse:
        return api(self.vault.url, method, path, token=self.token, body=body, ca_file=self.vault.ca_file)


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    config, secret_keys = load_stack_file("hub")
    hub = run_program("hub", trusting(config, DeployKey()), secret_keys)
    assert hub.error is None, hub.error
    policy = hub.one("vault:index/policy:Policy", "hub-vault-admin-acl").inputs["policy"]
    node = start_vault("hub", tmp_path_factory.mktemp("admin-policy") / "hub", TestCA("fedobs-test-vault-ca"))
    try:
        vault = initialise("hub", node, kv=False)
        vault.ok("PUT", "sys/policies/acl/fedobs-admin", {"policy": policy})
        token = vault.ok("POST", "auth/token/create", {"policies": ["fedobs-admin"], "ttl": "1h"}).body["auth"][
            "client_token"
        ]
        # What the hub declares for its edges and its KV, applied with the admin token alone.
        kv = [
            r
            for r in children(hub, "hub-vault-config")
            if r.name in ("hub-vault-config-kv", "hub-vault-config-kv-config")
        ]
        declared = [*edge_link_resources(hub), *kv]
        VaultApplier(vault.url, token, ca_file=vault.ca_file).apply(declared)
        yield Admin(vault, token, hub)
    finally:
        node.stop()


def test_the_admin_applied_what_the_hub_declares(admin: Admin) -> None:
    keys = admin.call("LIST", "transit/keys")
    assert sorted(keys.data["keys"]) == ["edge-ap", "edge-eu"]
    config = admin.call("GET", "transit/keys/edge-eu").data
    assert (config["deletion_allowed"], config["exportable"], config["allow_plaintext_backup"]) == (False, False, False)
    assert admin.call("GET", "kv/config").data["cas_required"] is True
    # what the provider sends for a declared key: the protected settings false
    kept = admin.call("POST", "transit/keys/edge-eu/config", {"deletion_allowed": False, "exportable": False})
    assert kept.status in (200, 204), kept.text
    assert admin.call("POST", "transit/keys/a-new-key", {"type": "aes256-gcm96"}).status in (200, 204)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("DELETE", "sys/mounts/transit", None),
        ("DELETE", "sys/mounts/transit/", None),
        ("POST", "sys/mounts/transit/tune", {"max_lease_ttl": "1h"}),
        ("POST", "sys/remount", {"from": "transit", "to": "moved"}),
        ("POST", "transit/keys/edge-eu/config", {"deletion_allowed": True}),
        ("POST", "transit/keys/edge-eu/config", {"deletion_allowed": "true"}),
        ("POST", "transit/keys/edge-eu/config", {"deletion_allowed": "1"}),
        ("POST", "transit/keys/edge-eu/config", {"exportable": True}),
        ("POST", "transit/keys/edge-eu/config", {"allow_plaintext_backup": True}),
        ("POST", "transit/keys/exportable-key", {"type": "aes256-gcm96", "exportable": True}),
        ("DELETE", "transit/keys/edge-eu", None),
        ("GET", "transit/export/encryption-key/edge-eu", None),
        ("GET", "transit/backup/edge-eu", None),
        ("DELETE", "sys/audit/file", None),
        ("PUT", "sys/raw/core/mounts", {"value": "x"}),
        ("PUT", "sys/seal", None),
    ],
)
def test_the_admin_is_refused(admin: Admin, method: str, path: str, body: dict[str, Any] | None) -> None:
    answer = admin.call(method, path, body)
    assert answer.status == 403, (method, path, answer.status, answer.text)


def test_the_refusals_left_the_seal_keys_and_the_audit_device(admin: Admin, tmp_path: Path) -> None:
    assert admin.call("GET", "transit/keys/edge-eu").data["deletion_allowed"] is False
    assert "file/" in admin.vault.api("GET", "sys/audit").data
    assert "transit/" in admin.call("GET", "sys/mounts").data
