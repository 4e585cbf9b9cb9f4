"""The database secrets engine's SQL and connection URLs, per engine and access level, as data.

Templates carry Vault's own placeholders (``{{name}}``, ``{{password}}``, ``{{expiration}}``,
``{{username}}``), which Vault fills, and ours in angle brackets (``<schema>``, ``<privileges>``,
``<host>``...), which :func:`fill` replaces. No ``str.format``: the SQL is full of braces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Engine = Literal["postgresql", "mysql"]
Access = Literal["read", "readwrite"]

PLUGINS: dict[Engine, str] = {"postgresql": "postgresql-database-plugin", "mysql": "mysql-database-plugin"}
PRIVILEGES: dict[Access, str] = {"read": "SELECT", "readwrite": "SELECT, INSERT, UPDATE, DELETE"}

CREATION: dict[Engine, tuple[str, ...]] = {
    "postgresql": (
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        'GRANT USAGE ON SCHEMA <schema> TO "{{name}}";',
        'GRANT <privileges> ON ALL TABLES IN SCHEMA <schema> TO "{{name}}";',
    ),
    "mysql": (
        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
        "GRANT <privileges> ON <schema>.* TO '{{name}}'@'%';",
    ),
}
REVOCATION: dict[Engine, tuple[str, ...]] = {
    "postgresql": (
        'REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA <schema> FROM "{{name}}";',
        'REVOKE USAGE ON SCHEMA <schema> FROM "{{name}}";',
        'DROP ROLE IF EXISTS "{{name}}";',
    ),
    "mysql": ("DROP USER IF EXISTS '{{name}}'@'%';",),
}
CONNECTION_URL: dict[Engine, str] = {
    "postgresql": "postgresql://{{username}}:{{password}}@<host>:<port>/<database>?sslmode=<sslmode>",
    "mysql": "{{username}}:{{password}}@tcp(<host>:<port>)/<database><tls>",
}


def fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace(f"<{key}>", value)
    return template


@dataclass(frozen=True)
class RoleStatements:
    creation: tuple[str, ...]
    revocation: tuple[str, ...]


def role_statements(engine: Engine, access: Access, schema: str) -> RoleStatements:
    """What Vault runs to create and to drop a user of this role."""
    values = {"schema": schema, "privileges": PRIVILEGES[access]}
    return RoleStatements(
        tuple(fill(s, **values) for s in CREATION[engine]), tuple(fill(s, **values) for s in REVOCATION[engine])
    )


def connection_url(engine: Engine, host: str, port: int, database: str, tls: bool) -> str:
    """The templated connection URL: Vault fills in the login; the URL never holds a secret."""
    if engine == "postgresql":
        return fill(
            CONNECTION_URL[engine],
            host=host,
            port=str(port),
            database=database or "postgres",
            sslmode="require" if tls else "disable",
        )
    return fill(CONNECTION_URL[engine], host=host, port=str(port), database=database, tls="?tls=true" if tls else "")
