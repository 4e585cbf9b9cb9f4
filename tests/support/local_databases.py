"""Both databases the shipped hub declares, seeded, for a test: a missing package fails the test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from rig.databases import MariaDBServer, PostgresServer, available
from rig.local_hub import seeded_mariadb, seeded_postgres


@contextlib.contextmanager
def local_databases() -> Iterator[tuple[PostgresServer, MariaDBServer]]:
    """PostgreSQL 15 and MariaDB as ``rig.local_hub`` seeds them; ``pytest.fail`` (not skip) when
    ``rig.databases.available()`` says the Debian packages are missing."""
    ok, reason = available()
    if not ok:
        pytest.fail(reason)
    with seeded_postgres() as pg, seeded_mariadb() as mysql:
        yield pg, mysql
