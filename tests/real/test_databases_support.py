"""rig.databases: real PostgreSQL 15 / MariaDB 10.11 servers start fast on loopback, the
dedicated Vault admin account can do exactly what Vault's database engine does with it (create a
user with a password, grant SELECT on the app tables, revoke and drop it), and ``stop()`` leaves no
process and no directory behind.

The statements run as the admin are the shapes Vault's ``postgresql-database-plugin`` and
``mysql-database-plugin`` send (creation statements as a role would configure them, revocation like
the plugins' defaults).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.databases import (
    DatabaseServerError,
    MariaDBServer,
    PostgresServer,
    available,
    live_servers,
    process_alive,
    reap,
)

pytestmark = pytest.mark.real

START_BUDGET_S = 5.0
SEED = """
CREATE TABLE {schema}items (id integer PRIMARY KEY, name varchar(40) NOT NULL);
INSERT INTO {schema}items (id, name) VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma');
"""


def _require(engine: str) -> None:
    ok, why = available([engine])
    if not ok:
        pytest.fail(f"{engine} test servers are not available: {why}")


@pytest.fixture(autouse=True, scope="module")
def no_database_left_behind() -> Iterator[None]:
    yield
    leftovers = reap()
    assert not leftovers, f"database servers were still running (stopped now): {leftovers}"


def _pgrep(pattern: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, timeout=10, check=False)
    return [line for line in out.stdout.splitlines() if line.strip()]


def _assert_gone(server: PostgresServer | MariaDBServer, pids: list[int], data_dir: Path, workdir: Path) -> None:
    assert server not in live_servers()
    assert not [p for p in pids if process_alive(p)], f"server processes survived stop(): {pids}"
    assert _pgrep(str(data_dir)) == [], _pgrep(str(data_dir))
    assert not workdir.exists()


# --------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------
def test_postgres_vault_admin_round_trip() -> None:
    import psycopg

    _require("postgresql")
    began = time.monotonic()
    server = PostgresServer()
    with server:
        elapsed = time.monotonic() - began
        assert elapsed < START_BUDGET_S, f"PostgreSQL took {elapsed:.2f}s to start"
        assert server.host == "127.0.0.1"
        with server.connect() as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("15")
        with psycopg.connect(server.superuser_dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)

        server.seed(SEED.format(schema="app."))
        admin = server.create_vault_admin("vault-admin", "admin-pw-1")
        assert (
            admin.connection_url
            == f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{server.port}/app?sslmode=disable"
        )
        server.seed("CREATE TABLE app.later (n integer); INSERT INTO app.later VALUES (7);")  # default privileges

        with server.connect() as conn:
            row = conn.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'vault-admin'"
            ).fetchone()
            assert row == (False, True, False)

        user, password = "v-token-readonly-Ab12Cd34-1700000000", "A1a-generated-password"
        with server.connect("vault-admin", "admin-pw-1", "app") as conn:
            conn.execute(
                f"CREATE ROLE \"{user}\" WITH LOGIN PASSWORD '{password}' VALID UNTIL '2099-01-01 00:00:00+00';"
                f'GRANT USAGE ON SCHEMA app TO "{user}";'
                f'GRANT SELECT ON ALL TABLES IN SCHEMA app TO "{user}";'.encode()
            )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO app.items VALUES (9, 'admin may not write')")

        with server.connect(user, password, "app") as conn:
            assert conn.execute("SELECT count(*) FROM app.items").fetchone() == (3,)
            assert conn.execute("SELECT n FROM app.later").fetchone() == (7,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO app.items VALUES (4, 'delta')")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            server.connect(user, "wrong", "app")

        # revocation as the plugin's default does it, then DROP ROLE
        with server.connect("vault-admin", "admin-pw-1", "app") as conn:
            conn.execute(
                f'REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA app FROM "{user}";'
                f'REVOKE USAGE ON SCHEMA app FROM "{user}";'
                f'REVOKE ALL ON DATABASE app FROM "{user}";'
                f'DROP ROLE IF EXISTS "{user}";'.encode()
            )
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            server.connect(user, password, "app")

        pids = server.server_pids()
        assert len(pids) > 1  # postmaster + background workers
        data_dir, workdir = server.data_dir, server.workdir
        assert _pgrep(str(data_dir)), "pgrep should see the running postmaster"
    _assert_gone(server, pids, data_dir, workdir)
    server.stop()  # idempotent


def test_postgres_start_failure_reports_the_log() -> None:
    _require("postgresql")
    server = PostgresServer(settings={"shared_buffers": "not-a-size"})
    with pytest.raises(DatabaseServerError, match=r"postgres\.log"):
        server.start()
    assert server not in live_servers()
    assert not server.workdir.exists()


# --------------------------------------------------------------------------------------------------
# MariaDB
# --------------------------------------------------------------------------------------------------
def test_mariadb_vault_admin_round_trip() -> None:
    import pymysql

    _require("mariadb")
    began = time.monotonic()
    server = MariaDBServer()
    with server:
        elapsed = time.monotonic() - began
        assert elapsed < START_BUDGET_S, f"MariaDB took {elapsed:.2f}s to start"
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT @@bind_address, @@port, VERSION()")
            bind, port, version = cur.fetchone()
            assert (bind, port) == ("127.0.0.1", server.port)
            assert version.startswith("10.11")

        server.seed(SEED.format(schema=""))
        admin = server.create_vault_admin("vault-admin", "admin-pw-1")
        assert admin.connection_url == f"{{{{username}}}}:{{{{password}}}}@tcp(127.0.0.1:{server.port})/"
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT Super_priv, Create_user_priv FROM mysql.user WHERE User = 'vault-admin'")
            assert cur.fetchone() == ("N", "Y")

        user, password = "v-token-readonly-Ab12Cd34-170000", "A1a-generated-password"  # 32 chars, the plugin's cap
        assert len(user) == 32
        with contextlib.closing(server.connect("vault-admin", "admin-pw-1")) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
            cur.execute(f"GRANT SELECT ON app.* TO '{user}'@'%'")
            with pytest.raises(pymysql.err.OperationalError):  # 1142 INSERT command denied
                cur.execute("INSERT INTO app.items VALUES (9, 'admin may not write')")

        with contextlib.closing(server.connect(user, password, "app")) as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM items")
            assert cur.fetchone() == (3,)
            with pytest.raises(pymysql.err.OperationalError) as denied:
                cur.execute("INSERT INTO items VALUES (4, 'delta')")
            assert denied.value.args[0] == 1142
        with pytest.raises(pymysql.err.OperationalError) as wrong:
            server.connect(user, "wrong", "app")
        assert wrong.value.args[0] == 1045

        # the plugin's default revocation, then check a *new* connection is refused
        with contextlib.closing(server.connect("vault-admin", "admin-pw-1")) as conn, conn.cursor() as cur:
            cur.execute(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{user}'@'%'")
            cur.execute(f"DROP USER '{user}'@'%'")
            # rotate-root: the admin may change its own password (Vault's default statement)
            cur.execute("ALTER USER 'vault-admin'@'%' IDENTIFIED BY 'admin-pw-2'")
        with pytest.raises(pymysql.err.OperationalError) as gone:
            server.connect(user, password, "app")
        assert gone.value.args[0] == 1045
        server.connect("vault-admin", "admin-pw-2").close()

        pids = server.server_pids()
        data_dir, workdir = server.data_dir, server.workdir
        assert _pgrep(str(data_dir)), "pgrep should see the running mariadbd"
    _assert_gone(server, pids, data_dir, workdir)
    server.stop()


def test_mariadb_start_failure_reports_the_log() -> None:
    _require("mariadb")
    server = MariaDBServer(options=["--no-such-option-at-all"])
    with pytest.raises(DatabaseServerError, match="mariadbd"):
        server.start()
    assert server not in live_servers()
    assert not server.workdir.exists()
