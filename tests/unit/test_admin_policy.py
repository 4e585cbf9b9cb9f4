"""Pulumi's own Vault policy as the stacks declare it: managed by the stack, rendered from its mounts,
with the denials that keep an admin token from unsealing edges' data or blinding the audit trail
(proven on OpenBao in tests/real/test_admin_policy_real.py)."""

from __future__ import annotations

import hcl2
from hcl2.utils import SerializationOptions

from components.admin_policy import admin_policy_hcl
from components.vault_config import VaultConfigSettings
from offline.engine import Recording


def rules(text: str) -> dict[str, dict[str, object]]:
    parsed = hcl2.loads(
        text, serialization_options=SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    )
    return {path: rule for entry in parsed.get("path", []) for path, rule in entry.items()}


def test_the_stack_manages_the_policy_the_bootstrap_wrote(hub: Recording, edge: Recording) -> None:
    for recording, prefix in ((hub, "hub"), (edge, "edge-eu")):
        policy = recording.one("vault:index/policy:Policy", f"{prefix}-vault-admin-acl")
        assert policy.inputs["name"] == "fedobs-admin"
        config_map = next(
            o
            for o in recording.kubernetes_objects()
            if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "vault-admin-policy"
        )
        assert config_map["data"]["admin.hcl"] == policy.inputs["policy"]
        provider = recording.one("pulumi:providers:vault", f"{prefix}-vault-provider")
        assert policy.provider.startswith(provider.urn + "::")


def test_the_hub_policy_never_deletes_audit_devices_or_transit_keys(hub: Recording) -> None:
    policy = rules(hub.one("vault:index/policy:Policy", "hub-vault-admin-acl").inputs["policy"])
    assert "delete" not in policy["sys/audit/*"]["capabilities"]  # type: ignore[operator]
    assert policy["sys/mounts/transit"]["capabilities"] == ["create", "read", "update"]
    assert policy["sys/mounts/transit/"]["capabilities"] == ["read"]
    assert policy["sys/mounts/transit/tune"]["capabilities"] == ["read"]
    assert policy["transit/keys/*"]["capabilities"] == ["create", "read", "update", "list"]
    for path in ("transit/keys/*", "transit/keys/+/config"):
        assert policy[path]["allowed_parameters"] == {  # type: ignore[comparison-overlap]
            "*": [],
            "deletion_allowed": [False, "false"],
            "exportable": [False, "false"],
            "allow_plaintext_backup": [False, "false"],
        }
    for never in ("sys/generate-root", "sys/rekey", "sys/raw", "sys/seal", "sys/remount", "transit/*"):
        assert never not in policy, never


def test_an_edge_policy_has_no_transit_mount(edge: Recording) -> None:
    policy = rules(edge.one("vault:index/policy:Policy", "edge-eu-vault-admin-acl").inputs["policy"])
    assert not [path for path in policy if "transit" in path]


def test_the_engines_are_reached_at_their_configured_mounts() -> None:
    settings = VaultConfigSettings.model_validate(
        {
            "kv": {"path": "platform-kv"},
            "database": {"path": "dbs", "connections": []},
            "aws": {"enabled": False, "path": "cloud", "region": "eu-central-1"},
        }
    )
    policy = rules(admin_policy_hcl(settings, transit=False))
    assert {"platform-kv/*", "dbs/*"} <= set(policy)
    assert not {"kv/*", "database/*", "aws/*", "cloud/*"} & set(policy), "only enabled engines, where they are"
