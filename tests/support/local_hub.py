"""The hub stack pointed at real databases on loopback, for tests that apply its Vault configuration.

``local_databases()`` starts PostgreSQL 15 and MariaDB (``tests.support.databases``) with the
schemas the shipped hub config grants on (``telemetry``/``app`` and ``results``), seeded with a row
each, and the dedicated admin logins Vault's database engine uses. ``hub_against(pg, mysql)``
evaluates the hub stack under mocks with its shipped config, changed only where a real peer must be
named: the connections' host and port, TLS off on loopback, and the admin logins (as secrets).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import pytest

from offline.engine import Recording, load_stack_file, run_program
from tests.support.databases import MariaDBServer, PostgresServer, available

PG_ADMIN = ("vault-admin", "pg-admin-password-0123456789")
MYSQL_ADMIN = ("vault-admin", "my-admin-password-0123456789")
#: OpenBao has no AWS secrets engine; tests that apply the hub list these as not applicable.
AWS_TYPES = ("vault:aws/secretBackend:SecretBackend", "vault:aws/secretBackendRole:SecretBackendRole")


@contextlib.contextmanager
def local_databases() -> Iterator[tuple[PostgresServer, MariaDBServer]]:
    ok, reason = available()
    if not ok:
        pytest.fail(reason)
    with PostgresServer() as pg, MariaDBServer() as mysql:
        pg.ensure_database("telemetry")
        pg.seed("CREATE SCHEMA app; CREATE TABLE app.metrics (name text, value int);"
                "INSERT INTO app.metrics VALUES ('up', 1);", database="telemetry")
        pg.create_vault_admin(*PG_ADMIN, database="telemetry", schema="app")
        mysql.ensure_database("results")
        mysql.seed("CREATE TABLE results (run varchar(32), ok int); INSERT INTO results VALUES ('r1', 1);",
                   database="results")
        mysql.create_vault_admin(*MYSQL_ADMIN, database="results")
        yield pg, mysql


def hub_against(pg: PostgresServer, mysql: MariaDBServer) -> Recording:
    config, secret_keys = load_stack_file("hub")
    config = copy.deepcopy(config)
    connections = config["fedobs:vaultConfig"]["database"]["connections"]
    for connection, server in zip(connections, (pg, mysql), strict=True):
        connection.update(host="127.0.0.1", port=server.port, tls=False)
    config["fedobs:databaseAdmins"] = {
        "telemetry-pg": {"username": PG_ADMIN[0], "password": PG_ADMIN[1]},
        "results-mysql": {"username": MYSQL_ADMIN[0], "password": MYSQL_ADMIN[1]},
    }
    recording = run_program("hub", config, secret_keys)
    assert recording.error is None, recording.error
    return recording
