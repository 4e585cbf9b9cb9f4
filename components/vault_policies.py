"""Least-privilege Vault policies generated from declared access, never written by hand per path.

A consumer declares what it needs ("read kv path P", "credentials of database role R"); these
functions turn that into the smallest set of ``path`` rules, with KV v2's ``data/`` and
``metadata/`` split handled, and render them as HCL. No rule ever grants ``sudo`` or touches
``sys/``: that is for the admin policy alone (``components.admin_policy``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

CAPABILITY_ORDER = ("create", "read", "update", "patch", "delete", "list")


@dataclass(frozen=True)
class Grant:
    path: str
    capabilities: tuple[str, ...]


def kv_read(mount: str, path: str) -> list[Grant]:
    """Read one KV v2 secret (or every secret below ``prefix/*``): its ``data/`` path only."""
    return [Grant(f"{mount}/data/{path}", ("read",))]


def kv_write(mount: str, path: str) -> list[Grant]:
    """Write with check-and-set: create/update and read ``data/`` (the current version for ``cas``)."""
    return [Grant(f"{mount}/data/{path}", ("create", "read", "update"))]


def credentials(engine_path: str, role: str) -> list[Grant]:
    """Issue credentials of one dynamic-secrets role (``database/creds/<role>``, ``aws/creds/<role>``)."""
    return [Grant(f"{engine_path}/creds/{role}", ("read",))]


def transit_use(mount: str, key: str) -> list[Grant]:
    """Encrypt and decrypt with one transit key, nothing else of the mount."""
    return [Grant(f"{mount}/encrypt/{key}", ("update",)), Grant(f"{mount}/decrypt/{key}", ("update",))]


def merged(grants: Iterable[Grant]) -> list[Grant]:
    """One rule per path, capabilities united and ordered; paths sorted."""
    by_path: dict[str, set[str]] = {}
    for grant in grants:
        by_path.setdefault(grant.path, set()).update(grant.capabilities)
    return [Grant(path, tuple(c for c in CAPABILITY_ORDER if c in caps)) for path, caps in sorted(by_path.items())]


def token_role_use(role: str) -> list[Grant]:
    """Create tokens through one token role (its ``allowed_policies`` bound what they hold)."""
    return [Grant(f"auth/token/create/{role}", ("update",))]


def render_policy(name: str, grants: Iterable[Grant], *, token_roles: Iterable[str] = ()) -> str:
    """The policy's HCL; refuses anything a workload policy must never hold.

    ``token_roles``: the only ``auth/token/create/<role>`` paths this policy may grant (an edge's
    deploy identity mints its seal token through its own role); any other token creation is refused.
    """
    given = list(grants)
    role_paths = {f"auth/token/create/{role}" for role in token_roles}
    for rule in given:
        if rule.path.startswith("sys/") or "sudo" in rule.capabilities:
            raise ValueError(f"policy {name}: {rule.path} {rule.capabilities} is reserved to the admin policy")
        if rule.path in ("*", "") or (rule.path.startswith("auth/token/create") and rule.path not in role_paths):
            raise ValueError(f"policy {name}: {rule.path!r} is not a workload path")
        unknown = set(rule.capabilities) - set(CAPABILITY_ORDER)
        if unknown:
            raise ValueError(f"policy {name}: {rule.path} has capabilities a workload never needs: {sorted(unknown)}")
    rules = merged(given)
    lines = [f"# {name}: generated from declared access (components/vault_policies.py)"]
    lines += [f"path {json.dumps(r.path)} {{ capabilities = {json.dumps(list(r.capabilities))} }}" for r in rules]
    return "\n".join(lines) + "\n"
