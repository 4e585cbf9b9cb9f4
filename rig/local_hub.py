"""The hub stack pointed at real databases on loopback, for tests that apply its Vault configuration.

``seeded_postgres()`` and ``seeded_mariadb()`` start PostgreSQL 15 and MariaDB (``rig.databases``)
with the schemas the shipped hub config grants on (``telemetry``/``app`` and ``results``), seeded
with a row each, and the dedicated admin logins Vault's database engine uses (the tests start both
with ``tests/support/local_databases.py``, which fails the test when the packages are missing).
``hub_against(pg, mysql)`` evaluates the hub stack under mocks with its shipped config, changed only
where a real peer must be named: the connections' host and port, TLS off on loopback, and the admin
logins (as secrets). ``connection_resources`` names what a connection without a running server would
make the applier fail on (``make demo`` leaves those out), and ``use_telemetry`` is what a consumer
of the ``readonly`` credential does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator

from offline.engine import RecordedResource, Recording, load_stack_file, run_program
from rig.databases import MariaDBServer, PostgresServer
from rig.deploy_identity import DeployKey, trusting

PG_ADMIN = ("vault-admin", "pg-admin-password-0123456789")
MYSQL_ADMIN = ("vault-admin", "my-admin-password-0123456789")
#: OpenBao has no AWS secrets engine; tests that apply the hub list these as not applicable.
AWS_TYPES = ("vault:aws/secretBackend:SecretBackend", "vault:aws/secretBackendRole:SecretBackendRole")
#: The shipped hub's connections, in config order: PostgreSQL, then MariaDB.
PG_CONNECTION, MYSQL_CONNECTION = "telemetry-pg", "results-mysql"


@contextlib.contextmanager
def seeded_postgres() -> Iterator[PostgresServer]:
    """PostgreSQL with database ``telemetry``, schema ``app`` (one row in ``app.metrics``) and Vault's admin role."""
    with PostgresServer() as pg:
        pg.ensure_database("telemetry")
        pg.seed(
            "CREATE SCHEMA app; CREATE TABLE app.metrics (name text, value int);"
            "INSERT INTO app.metrics VALUES ('up', 1);",
            database="telemetry",
        )
        pg.create_vault_admin(*PG_ADMIN, database="telemetry", schema="app")
        yield pg


@contextlib.contextmanager
def seeded_mariadb() -> Iterator[MariaDBServer]:
    """MariaDB with database ``results`` (one row in ``results``) and Vault's admin account."""
    with MariaDBServer() as mysql:
        mysql.ensure_database("results")
        mysql.seed(
            "CREATE TABLE results (run varchar(32), ok int); INSERT INTO results VALUES ('r1', 1);", database="results"
        )
        mysql.create_vault_admin(*MYSQL_ADMIN, database="results")
        yield mysql


def hub_against(pg: PostgresServer, mysql: MariaDBServer | None, deploy_key: DeployKey | None = None) -> Recording:
    """The hub under mocks with its connections pointed at ``pg`` and ``mysql``. With ``mysql=None``
    the MariaDB connection keeps its shipped address: leave its ``connection_resources`` out.
    The edges' deploy identities are verified with ``deploy_key`` (``rig.deploy_identity``; a fresh
    key when none is given): GitHub's OIDC discovery, which the shipped file names, needs the network."""
    config, secret_keys = load_stack_file("hub")
    config = trusting(config, deploy_key or DeployKey())
    connections = config["fedobs:vaultConfig"]["database"]["connections"]
    for connection, server in zip(connections, (pg, mysql), strict=True):
        if server is not None:
            connection.update(host="127.0.0.1", port=server.port, tls=False)
    config["fedobs:databaseAdmins"] = {
        PG_CONNECTION: {"username": PG_ADMIN[0], "password": PG_ADMIN[1]},
        MYSQL_CONNECTION: {"username": MYSQL_ADMIN[0], "password": MYSQL_ADMIN[1]},
    }
    recording = run_program("hub", config, secret_keys)
    if recording.error is not None:
        raise RuntimeError(f"the hub stack failed under mocks: {recording.error}")
    return recording


def connection_resources(resources: list[RecordedResource], connections: Collection[str]) -> list[RecordedResource]:
    """The resources that need the named database connections' servers: the connections themselves,
    their roles and their ``rotate-root`` endpoints (each verified against the server when applied)."""

    def needs_them(r: RecordedResource) -> bool:
        if r.type == "vault:database/secretBackendConnection:SecretBackendConnection":
            return r.inputs["name"] in connections
        if r.type == "vault:database/secretBackendRole:SecretBackendRole":
            return r.inputs["dbName"] in connections
        path = str(r.inputs.get("path", ""))
        return r.type == "vault:generic/endpoint:Endpoint" and any(
            path.endswith(f"/rotate-root/{c}") for c in connections
        )

    return [r for r in resources if needs_them(r)]


def use_telemetry(pg: PostgresServer, username: str, password: str) -> tuple[object, str | None]:
    """What a consumer of the ``readonly`` credential does: a NEW connection to ``telemetry`` that
    SELECTs the seeded row, then tries an INSERT. Returns (the value read, the class name of the
    error the INSERT raised, or ``None`` if it was allowed)."""
    import psycopg

    with pg.connect(username, password, "telemetry") as connection:
        row = connection.execute("SELECT value FROM app.metrics WHERE name = 'up'").fetchone()
        try:
            connection.execute("INSERT INTO app.metrics VALUES ('down', 0)")
        except psycopg.Error as exc:
            return (row[0] if row else None), type(exc).__name__
    return (row[0] if row else None), None


def use_results(mysql: MariaDBServer, username: str, password: str) -> tuple[object, str | None]:
    """What a consumer of the ``results-readonly`` credential does: a NEW connection to ``results``
    that SELECTs the seeded row, then tries an INSERT. Returns (the value read, the error the INSERT
    raised as ``<class>: <message>``, or ``None`` if it was allowed)."""
    import pymysql

    connection = mysql.connect(username, password, "results")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT ok FROM results WHERE run = 'r1'")
            row = cursor.fetchone()
            try:
                cursor.execute("INSERT INTO results VALUES ('r2', 0)")
            except pymysql.err.MySQLError as exc:
                return (row[0] if row else None), f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    return (row[0] if row else None), None
