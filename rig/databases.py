"""Throwaway PostgreSQL and MariaDB servers on loopback, for tests of Vault's database secrets engine.

Each server lives in its own fresh temporary directory, listens on ``127.0.0.1`` on a free port
only, is started and stopped inside the test run and is removed with its directory on ``stop()``.
Needs the Debian packages: ``apt-get install -y postgresql mariadb-server`` (``available()`` says
whether they are there; the ``psycopg`` and ``PyMySQL`` Python packages come from requirements-dev).

Stable API:

``available(engines=("postgresql", "mariadb")) -> (bool, str)``
    Whether the server binaries (and the Python drivers and, when we are root, the ``postgres`` /
    ``mysql`` OS users) are there; the string says what is missing and how to install it. Tests
    should ``pytest.fail`` with it (not skip), so a missing package is a visible failure.
``DatabaseServerError(RuntimeError)``
    Raised when a server cannot be initialised or started (or a wait runs out); the message carries
    the tail of the relevant log files.
``PostgresServer(*, startup_timeout=20.0, stop_timeout=5.0, settings=None)`` (context manager)
    ``initdb`` (scram-sha-256 everywhere, random superuser password, no fsync) into a temporary
    directory, then the postmaster in the foreground as a direct child of the test process
    (``postgres -D DATA -p PORT -k SOCKDIR -c listen_addresses=127.0.0.1``, plus ``settings``).
    When we are root both run as the ``postgres`` OS user (``initdb`` and ``postgres`` refuse root).
    Ready when ``postmaster.pid`` says ``ready`` and a TCP login succeeds.
    ``.host`` (``127.0.0.1``), ``.port``, ``.superuser``, ``.superuser_password``,
    ``.superuser_dsn`` (libpq URL to database ``postgres``), ``.pid``, ``.data_dir``, ``.workdir``,
    ``dsn(user, password, dbname)``, ``connect(user=None, password=None, dbname="postgres")``
    (psycopg connection, autocommit; ``None`` user = superuser),
    ``vault_connection_url(dbname="app")`` (``postgresql://{{username}}:{{password}}@127.0.0.1:PORT/app
    ?sslmode=disable``, the templated form Vault's ``connection_url`` wants),
    ``ensure_database(name)``, ``seed(sql, database="app")`` (runs ``sql``, several statements allowed,
    as the superuser in ``database``, creating the database and a schema named like it first),
    ``create_vault_admin(name, password, database="app", schema=None) -> VaultAdmin``,
    ``server_pids()`` (postmaster + its children), ``log_text()``, ``stop()``.
``MariaDBServer(*, startup_timeout=20.0, stop_timeout=5.0, options=())`` (context manager)
    ``mariadb-install-db --no-defaults --skip-test-db --skip-name-resolve`` (root gets a random
    password on ``localhost`` and ``127.0.0.1``), then ``mariadbd --no-defaults --datadir --socket
    --port --bind-address=127.0.0.1 --skip-name-resolve`` (plus ``options``) as a direct child. When
    we are root both run as the ``mysql`` OS user (we switch user ourselves instead of passing
    ``--user=mysql``, so the parent-death signal survives). Ready when root can log in over TCP.
    ``.host``, ``.port``, ``.superuser`` (``root``), ``.superuser_password``, ``.pid``,
    ``.data_dir``, ``.socket_path``, ``.workdir``, ``connect(user=None, password=None,
    database=None)`` (PyMySQL connection, autocommit), ``vault_connection_url(database="")``
    (``{{username}}:{{password}}@tcp(127.0.0.1:PORT)/``), ``ensure_database(name)``,
    ``seed(sql, database="app")``, ``create_vault_admin(name, password, database="app") ->
    VaultAdmin``, ``server_pids()``, ``log_text()``, ``stop()``.
``VaultAdmin``
    What ``create_vault_admin`` made: ``username``, ``password``, ``database``, ``schema``
    (PostgreSQL; ``None`` for MariaDB) and ``connection_url`` (templated, for Vault's
    ``database/config/<name>``: give Vault ``username``/``password`` separately).
``live_servers()`` / ``reap() -> list[str]``
    Servers started and not stopped yet / stop them all and name them (a session-end guard; after
    a clean run the list is empty).

``stop()`` (also on ``__exit__``, idempotent): PostgreSQL gets ``pg_ctl stop -m immediate``, MariaDB
SIGTERM; SIGKILL when ``stop_timeout`` runs out; then every process of the server (recorded while it
ran) is waited for (killed on a deadline) and the temporary directory is removed. Every server
process also gets ``PR_SET_PDEATHSIG=SIGKILL`` (the MariaDB daemon and the postmaster are direct
children; PostgreSQL backends exit on postmaster death), so nothing outlives a killed test run. If the
``with`` block raises, the server log tail is printed to stderr (pytest shows it with the failure).

The Vault admin role is deliberately not the superuser (``rotate-root`` locks the old password
out): it can create and drop login roles/users and hand out SELECT on the one application schema /
database, nothing else:

* PostgreSQL 15: ``LOGIN CREATEROLE`` (in 15 that is enough to create and drop non-superuser roles;
  16+ would also want ADMIN OPTION on the roles it did not create), ``CONNECT`` on the database,
  ``USAGE`` on the schema and ``SELECT`` on all its tables, both ``WITH GRANT OPTION`` (a non-owner
  may only grant what it holds with grant option; the tables stay owned by the superuser), and
  default privileges so tables the superuser creates later are covered too. A role it granted to can
  be dropped once those grants are revoked, which the grantor (the admin) may do.
* MariaDB 10.11: global ``CREATE USER`` (covers ``CREATE USER``, ``DROP USER``, ``ALTER USER`` for
  ``rotate-root`` and ``REVOKE ALL PRIVILEGES, GRANT OPTION``) and ``SELECT ON db.* WITH GRANT
  OPTION``; the account is ``'name'@'%'`` as Vault's MySQL root-rotation statement assumes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rig.openbao import free_port, wait_until
from rig.processes import child_setup

__all__ = [
    "INSTALL_COMMAND",
    "DatabaseServerError",
    "MariaDBServer",
    "PostgresServer",
    "VaultAdmin",
    "available",
    "live_servers",
    "mariadb_binaries",
    "postgres_bin_dir",
    "reap",
]

INSTALL_COMMAND = "apt-get install -y postgresql mariadb-server"
HOST = "127.0.0.1"
_LOG_TAIL_LINES = 60


class DatabaseServerError(RuntimeError):
    """A throwaway database server could not be initialised, started or reached in time."""


@dataclass(frozen=True)
class VaultAdmin:
    """The dedicated account Vault's database engine logs in with (see the module docstring)."""

    username: str
    password: str
    database: str
    schema: str | None
    connection_url: str


# --------------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------------
def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.name))


def postgres_bin_dir() -> Path | None:
    """Newest ``/usr/lib/postgresql/<major>/bin`` with ``initdb``, ``postgres`` and ``pg_ctl``."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if all(os.access(Path(candidate) / tool, os.X_OK) for tool in ("initdb", "postgres", "pg_ctl")):
            return Path(candidate)
    return None


def mariadb_binaries() -> tuple[str, str] | None:
    """``(mariadb-install-db, mariadbd)`` paths, or ``None``."""
    install_db = shutil.which("mariadb-install-db")
    daemon = shutil.which("mariadbd") or next(
        (p for p in ("/usr/sbin/mariadbd", "/usr/libexec/mariadbd") if os.access(p, os.X_OK)), None
    )
    return (install_db, daemon) if install_db and daemon else None


def _os_user_missing(name: str) -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        return f"OS user {name!r} is missing (we run as root and the server refuses root)"
    return None


def available(engines: Iterable[str] = ("postgresql", "mariadb")) -> tuple[bool, str]:
    """``(True, "")`` if every engine in ``engines`` can be started here, else ``(False, why)``."""
    problems: list[str] = []
    for engine in engines:
        if engine == "postgresql":
            if postgres_bin_dir() is None:
                problems.append("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
            elif missing := _os_user_missing("postgres"):
                problems.append(missing)
            try:
                import psycopg  # noqa: F401
            except ImportError:
                problems.append("Python package psycopg is not installed (requirements-dev.txt)")
        elif engine == "mariadb":
            if mariadb_binaries() is None:
                problems.append("mariadb-install-db / mariadbd not found")
            elif missing := _os_user_missing("mysql"):
                problems.append(missing)
            try:
                import pymysql  # noqa: F401
            except ImportError:
                problems.append("Python package PyMySQL is not installed (requirements-dev.txt)")
        else:
            raise ValueError(f"unknown engine {engine!r}")
    if problems:
        return False, "; ".join(problems) + f" -- install with: {INSTALL_COMMAND} (as root, Debian)"
    return True, ""


# --------------------------------------------------------------------------------------------------
# process plumbing
# --------------------------------------------------------------------------------------------------
def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    if not path.exists():
        return f"--- {path.name}: (no file)"
    text = path.read_text(errors="replace").splitlines()
    return f"--- {path.name} (last {min(lines, len(text))} of {len(text)} lines)\n" + "\n".join(text[-lines:])


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def process_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


_LIVE: list[_Server] = []


def live_servers() -> list[_Server]:
    """Servers started and not stopped yet."""
    return list(_LIVE)


def reap() -> list[str]:
    """Stop every live server; return their descriptions (empty after a clean run)."""
    names = [repr(s) for s in _LIVE]
    for server in list(_LIVE):
        server.stop()
    return names


class _Server:
    """Common part: temp dir owned by the service user, child processes, logs, start/stop."""

    engine = ""
    os_user = ""
    superuser = ""

    def __init__(self, *, startup_timeout: float, stop_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.host = HOST
        self.port = 0
        self.superuser_password = secrets.token_urlsafe(18)
        self.workdir = Path()
        self.process: subprocess.Popen[bytes] | None = None
        self._pids: set[int] = set()
        self._uid: int | None = None
        self._gid: int | None = None
        self._log_files: list[Path] = []
        self.startup_seconds = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.pid} dir={self.workdir}>"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not isinstance(exc, DatabaseServerError):
            print(f"{self!r} logs:\n{self.log_text()}", file=sys.stderr)
        self.stop()

    def start(self) -> None:
        if self.process is not None:
            raise DatabaseServerError(f"{self!r} already started")
        ok, why = available([self.engine])
        if not ok:
            raise DatabaseServerError(why)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.os_user)
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
        self.workdir = Path(tempfile.mkdtemp(prefix=f"fedobs-{self.engine}-"))
        if self._uid is not None and self._gid is not None:
            os.chown(self.workdir, self._uid, self._gid)
        _LIVE.append(self)
        try:
            self._initialise()
            self._launch()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (deadline, then SIGKILL), wait for all its processes, remove its directory."""
        proc = self.process
        if proc is not None:
            self._pids |= set(self.server_pids())
            if proc.poll() is None:
                with contextlib.suppress(Exception):
                    self._request_stop()
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(timeout=10)
            deadline = time.monotonic() + self.stop_timeout
            while (left := [p for p in self._pids if process_alive(p)]) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in left:  # only processes of this server (recorded as its descendants)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self in _LIVE:
            _LIVE.remove(self)
        if self.workdir != Path() and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def server_pids(self) -> list[int]:
        """The server's process and all its descendants (recorded so ``stop()`` can wait for them)."""
        if self.process is None or self.process.poll() is not None:
            return []
        pids, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            pids.append(pid)
            queue.extend(_children(pid))
        self._pids |= set(pids)
        return pids

    def log_text(self) -> str:
        return "\n".join(_tail(p) for p in self._log_files)

    # -- helpers for subclasses --------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        keep = ("PATH", "LANG", "TZ")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update({"HOME": str(self.workdir), "LC_ALL": "C", "TMPDIR": str(self.workdir)})
        return env

    def _own(self, path: Path) -> None:
        if self._uid is not None and self._gid is not None:
            os.chown(path, self._uid, self._gid)

    def _popen(self, args: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
        if log_path not in self._log_files:
            self._log_files.append(log_path)
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                list(args),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                user=self._uid,
                group=self._gid,
                extra_groups=[] if self._uid is not None else None,
                start_new_session=True,
                preexec_fn=child_setup,
            )

    def _run(self, args: Sequence[str], log_path: Path, what: str, timeout: float) -> None:
        proc = self._popen(args, log_path)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise DatabaseServerError(f"{what} did not finish within {timeout:g}s\n{_tail(log_path)}") from None
        if rc != 0:
            raise DatabaseServerError(f"{what} failed with exit code {rc}\n{_tail(log_path)}")

    def _wait_ready(self, check: Any, ignore: tuple[type[BaseException], ...], what: str) -> None:
        proc = self.process
        assert proc is not None
        deadline_start = time.monotonic()

        def ready() -> bool:
            if proc.poll() is not None:
                raise DatabaseServerError(f"{what} exited with code {proc.returncode}\n{self.log_text()}")
            return bool(check())

        try:
            wait_until(ready, self.startup_timeout, interval=0.05, what=what, ignore=ignore)
        except TimeoutError as exc:
            raise DatabaseServerError(f"{exc}\n{self.log_text()}") from None
        self.startup_seconds = time.monotonic() - deadline_start
        self.server_pids()

    def _initialise(self) -> None:
        raise NotImplementedError

    def _launch(self) -> None:
        raise NotImplementedError

    def _request_stop(self) -> None:
        raise NotImplementedError


def _port_in_use(log: Path) -> bool:
    return log.exists() and "ddress already in use" in log.read_text(errors="replace")


# --------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------
class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster on 127.0.0.1 (see the module docstring)."""

    engine = "postgresql"
    os_user = "postgres"
    superuser = "postgres"

    def __init__(
        self,
        *,
        startup_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.settings = {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "40",
            "shared_buffers": "16MB",
        } | dict(settings or {})
        self.bin_dir = postgres_bin_dir() or Path("/usr/lib/postgresql/missing/bin")

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def superuser_dsn(self) -> str:
        return self.dsn(self.superuser, self.superuser_password, "postgres")

    def dsn(self, user: str, password: str, dbname: str = "postgres") -> str:
        from urllib.parse import quote

        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}/{dbname}"

    def vault_connection_url(self, dbname: str = "app") -> str:
        return f"postgresql://{{{{username}}}}:{{{{password}}}}@{self.host}:{self.port}/{dbname}?sslmode=disable"

    def connect(self, user: str | None = None, password: str | None = None, dbname: str = "postgres") -> Any:
        """A psycopg connection (autocommit) over TCP; ``user=None`` logs in as the superuser."""
        import psycopg

        if user is None:
            user, password = self.superuser, self.superuser_password
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=user,
            password=password or "",
            dbname=dbname,
            connect_timeout=5,
            sslmode="disable",
            autocommit=True,
        )

    def _initialise(self) -> None:
        pwfile = self.workdir / "superuser.pw"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        args = [
            str(self.bin_dir / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={self.superuser}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--no-locale",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        ]
        try:
            self._run(args, self.workdir / "initdb.log", "initdb", timeout=max(self.startup_timeout, 30.0))
        finally:
            pwfile.unlink(missing_ok=True)

    def _launch(self) -> None:
        log = self.workdir / "postgres.log"
        for attempt in range(3):
            self.port = free_port(self.host)
            args = [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.workdir),
                "-c",
                f"listen_addresses={self.host}",
            ]
            for key, value in self.settings.items():
                args += ["-c", f"{key}={value}"]
            self.process = self._popen(args, log)
            try:
                self._wait_ready(self._probe, ignore=(_pg_errors()), what="PostgreSQL to accept logins")
                return
            except DatabaseServerError:
                if attempt < 2 and self.process.poll() is not None and _port_in_use(log):
                    log.write_text("")  # a port race with another process: try a new port
                    continue
                raise

    def _probe(self) -> bool:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[7].strip() != "ready":
            return False
        with self.connect() as conn:
            conn.execute("SELECT 1")
        return True

    def _request_stop(self) -> None:
        subprocess.run(
            [
                str(self.bin_dir / "pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "immediate",
                "-w",
                "-t",
                str(max(1, int(self.stop_timeout))),
            ],
            cwd=self.workdir,
            env=self._env(),
            user=self._uid,
            group=self._gid,
            extra_groups=[] if self._uid is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=self.stop_timeout + 2,
            check=False,
        )

    # -- data helpers ----------------------------------------------------------------------------------
    def ensure_database(self, name: str) -> None:
        from psycopg import sql

        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def seed(self, sql_text: str, database: str = "app") -> None:
        """Run ``sql_text`` as the superuser in ``database`` (created, with a schema of the same name)."""
        from psycopg import sql

        self.ensure_database(database)
        with self.connect(dbname=database) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(database)))
            conn.execute(sql_text.encode())

    def create_vault_admin(
        self, name: str, password: str, database: str = "app", schema: str | None = None
    ) -> VaultAdmin:
        """Create the dedicated, non-superuser role Vault's database engine administers users with."""
        from psycopg import sql

        schema = schema or database
        self.ensure_database(database)
        role, db, sch, su = (sql.Identifier(x) for x in (name, database, schema, self.superuser))
        with self.connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} WITH LOGIN CREATEROLE NOSUPERUSER NOCREATEDB PASSWORD {}").format(
                    role, sql.Literal(password)
                )
            )
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {} WITH GRANT OPTION").format(db, role))
        with self.connect(dbname=database) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sch))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {} WITH GRANT OPTION").format(sch, role))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {} WITH GRANT OPTION").format(sch, role))
            conn.execute(
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {} WITH GRANT OPTION"
                ).format(su, sch, role)
            )
        return VaultAdmin(name, password, database, schema, self.vault_connection_url(database))


def _pg_errors() -> tuple[type[BaseException], ...]:
    import psycopg

    return (psycopg.OperationalError,)


# --------------------------------------------------------------------------------------------------
# MariaDB
# --------------------------------------------------------------------------------------------------
def _mysql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _mysql_ident(value: str) -> str:
    return "`" + value.replace("`", "``") + "`"


class MariaDBServer(_Server):
    """A throwaway MariaDB server on 127.0.0.1 (see the module docstring)."""

    engine = "mariadb"
    os_user = "mysql"
    superuser = "root"

    def __init__(
        self, *, startup_timeout: float = 20.0, stop_timeout: float = 5.0, options: Sequence[str] = ()
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.options = list(options)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket_path(self) -> Path:
        return self.workdir / "mariadb.sock"

    def vault_connection_url(self, database: str = "") -> str:
        return f"{{{{username}}}}:{{{{password}}}}@tcp({self.host}:{self.port})/{database}"

    def connect(self, user: str | None = None, password: str | None = None, database: str | None = None) -> Any:
        """A PyMySQL connection (autocommit) over TCP; ``user=None`` logs in as root."""
        import pymysql

        if user is None:
            user, password = self.superuser, self.superuser_password
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=user,
            password=password or "",
            database=database,
            connect_timeout=5,
            autocommit=True,
        )

    def _initialise(self) -> None:
        binaries = mariadb_binaries()
        assert binaries is not None
        pw = _mysql_string(self.superuser_password)
        init_sql = self.workdir / "init.sql"
        init_sql.write_text(  # bootstrap runs with --skip-grant-tables: load them first
            "FLUSH PRIVILEGES;\n"
            f"ALTER USER 'root'@'localhost' IDENTIFIED BY {pw};\n"
            f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY {pw};\n"
            "DROP USER IF EXISTS 'root'@'::1';\n"
            f"DROP USER IF EXISTS 'root'@{_mysql_string(socket.gethostname())};\n"
        )
        init_sql.chmod(0o600)
        self._own(init_sql)
        args = [
            binaries[0],
            "--no-defaults",
            f"--datadir={self.data_dir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            f"--extra-file={init_sql}",
        ]
        try:
            self._run(args, self.workdir / "install-db.log", "mariadb-install-db", max(self.startup_timeout, 30.0))
        finally:
            init_sql.unlink(missing_ok=True)

    def _launch(self) -> None:
        binaries = mariadb_binaries()
        assert binaries is not None
        err_log, out_log = self.workdir / "mariadbd.err", self.workdir / "mariadbd.out"
        self._log_files.append(err_log)
        (self.workdir / "tmp").mkdir()
        self._own(self.workdir / "tmp")
        for attempt in range(3):
            self.port = free_port(self.host)
            args = [
                binaries[1],
                "--no-defaults",
                f"--datadir={self.data_dir}",
                f"--socket={self.socket_path}",
                f"--port={self.port}",
                f"--bind-address={self.host}",
                "--skip-name-resolve",
                f"--log-error={err_log}",
                f"--pid-file={self.workdir / 'mariadbd.pid'}",
                f"--tmpdir={self.workdir / 'tmp'}",
                "--skip-log-bin",
                "--character-set-server=utf8mb4",
                "--innodb-buffer-pool-size=32M",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-fast-shutdown=2",
                *self.options,
            ]
            self.process = self._popen(args, out_log)
            try:
                self._wait_ready(self._probe, ignore=_mysql_errors(), what="MariaDB to accept logins")
                return
            except DatabaseServerError:
                if attempt < 2 and self.process.poll() is not None and _port_in_use(err_log):
                    err_log.write_text("")
                    continue
                raise

    def _probe(self) -> bool:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True

    def _request_stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    # -- data helpers ----------------------------------------------------------------------------------
    def _execute_all(self, statements: Iterable[str], database: str | None = None) -> None:
        with contextlib.closing(self.connect(database=database)) as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def ensure_database(self, name: str) -> None:
        self._execute_all([f"CREATE DATABASE IF NOT EXISTS {_mysql_ident(name)}"])

    def seed(self, sql_text: str, database: str = "app") -> None:
        """Run ``sql_text`` (several statements allowed) as root in ``database`` (created if missing)."""
        import pymysql
        from pymysql.constants import CLIENT

        self.ensure_database(database)
        conn = pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.superuser,
            password=self.superuser_password,
            database=database,
            connect_timeout=5,
            autocommit=True,
            client_flag=CLIENT.MULTI_STATEMENTS,
        )
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute(sql_text)
            while cur.nextset():
                pass

    def create_vault_admin(self, name: str, password: str, database: str = "app") -> VaultAdmin:
        """Create the dedicated, non-root account Vault's database engine administers users with."""
        account = f"{_mysql_string(name)}@'%'"
        self._execute_all(
            [
                f"CREATE DATABASE IF NOT EXISTS {_mysql_ident(database)}",
                f"CREATE USER {account} IDENTIFIED BY {_mysql_string(password)}",
                f"GRANT CREATE USER ON *.* TO {account}",
                f"GRANT SELECT ON {_mysql_ident(database)}.* TO {account} WITH GRANT OPTION",
            ]
        )
        return VaultAdmin(name, password, database, None, self.vault_connection_url())


def _mysql_errors() -> tuple[type[BaseException], ...]:
    import pymysql

    return (pymysql.err.OperationalError,)
