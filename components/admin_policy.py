"""The policy of Pulumi's own Vault identity (``fedobs-admin``), rendered from the stack's mounts.

The bootstrap Job writes it once, to hand Pulumi a login; from then on it is a ``vault.Policy`` of
the stack, so a change here reaches running clusters on the next ``pulumi up``.

It grants what the stack declares and refuses what no declaration needs and an attacker would:
no ``delete`` on audit devices (disabling one is refused), and on the hub's transit mount (every
edge's seal key) no unmount, no retune, no key deletion and no key made deletable, exportable or
backed up in plain text (``allowed_parameters``: false only). Root-token operations stay out (no ``sudo`` on
``sys/generate-root`` or ``sys/rekey``, no ``sys/raw``, no ``sys/seal``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from components.vault_config import VaultConfigSettings
from components.vault_names import TRANSIT_MOUNT

ALL = ("create", "read", "update", "delete", "list")
#: Transit key settings no declaration sets to true; an admin token may set them to false only.
#: An allow-list of values, not a deny-list: Vault compares values as sent, and ``true``, ``"true"``,
#: ``"1"`` and ``"t"`` are all true to it. ``"*" = []`` leaves every other parameter allowed.
PROTECTED_KEY_SETTINGS: Mapping[str, Sequence[object]] = {
    "*": [],
    "deletion_allowed": [False, "false"],
    "exportable": [False, "false"],
    "allow_plaintext_backup": [False, "false"],
}


def _rule(path: str, capabilities: Sequence[str], allowed: Mapping[str, Sequence[object]] | None = None) -> str:
    body = f"capabilities = {json.dumps(list(capabilities))}"
    if allowed:
        params = ", ".join(f"{json.dumps(k)} = {json.dumps(list(v))}" for k, v in allowed.items())
        body += f"\n  allowed_parameters = {{ {params} }}\n"
        return f"path {json.dumps(path)} {{\n  {body}}}"
    return f"path {json.dumps(path)} {{ {body} }}"


def _platform_rules() -> list[str]:
    return [
        _rule("sys/mounts", ["read", "list"]),
        _rule("sys/mounts/*", ALL),
        _rule("sys/auth", ["read", "list"]),
        _rule("sys/auth/*", ["create", "read", "update", "delete", "sudo"]),
        _rule("sys/policies/acl", ["list"]),
        _rule("sys/policies/acl/*", ALL),
        _rule("sys/policy/*", ["create", "read", "update", "delete"]),
        # Audit devices are declared, never disabled: no delete.
        _rule("sys/audit", ["read", "sudo"]),
        _rule("sys/audit/*", ["create", "read", "update", "sudo"]),
        _rule("sys/storage/raft/autopilot/configuration", ["read", "update"]),
        _rule("sys/storage/raft/configuration", ["read"]),
        _rule("sys/storage/raft/autopilot/state", ["read"]),
        _rule("sys/seal-status", ["read"]),
        _rule("auth/*", ALL),
        _rule("auth/token/create", ["create", "update"]),
        _rule("auth/token/lookup-self", ["read"]),
    ]


def _transit_rules(mount: str) -> list[str]:
    """The transit mount holds every edge's seal key: mounted once, never unmounted or retuned;
    keys created and read, never deleted or made deletable, exportable or backed up."""
    return [
        _rule(f"sys/mounts/{mount}", ["create", "read", "update"]),
        _rule(f"sys/mounts/{mount}/", ["read"]),
        _rule(f"sys/mounts/{mount}/tune", ["read"]),
        _rule(f"{mount}/keys", ["list"]),
        _rule(f"{mount}/keys/*", ["create", "read", "update", "list"], PROTECTED_KEY_SETTINGS),
        _rule(f"{mount}/keys/+/config", ["read", "update"], PROTECTED_KEY_SETTINGS),
    ]


def admin_policy_hcl(vault_config: VaultConfigSettings, *, transit: bool) -> str:
    """The admin policy for a stack with these engines (at their configured mounts); ``transit``:
    the hub, which holds the edges' seal keys."""
    engines = [vault_config.kv.path]
    if vault_config.enabled_database is not None:
        engines.append(vault_config.enabled_database.path)
    if vault_config.enabled_aws is not None:
        engines.append(vault_config.enabled_aws.path)
    rules = [
        "# fedobs-admin: what Pulumi needs to declare this Vault's configuration (components/admin_policy.py).",
        *_platform_rules(),
        *(_rule(f"{path}/*", ALL) for path in engines),
        *(_transit_rules(TRANSIT_MOUNT) if transit else []),
    ]
    return "\n".join(rules) + "\n"
