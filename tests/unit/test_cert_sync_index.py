"""The hub cert-sync's index document (``programs.cert_sync.index``): what it vouches for, and that
anything malformed vouches for nothing (the pass then verifies every path; the real-server tests in
``tests/real/test_cert_sync.py`` show the reads and writes that follow)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from programs.cert_sync.index import EMPTY, VERIFY_SECONDS, Index, IndexEntry, digest, parse

NOW = dt.datetime(2026, 12, 6, 4, 0, 0, tzinfo=dt.UTC)
SHA = "a" * 64


def test_a_document_round_trips_and_its_map_is_one_string() -> None:
    index = Index({"edges/e/otel-client-tls": IndexEntry(SHA, 3)}, NOW)
    document = index.document()
    assert document["verifiedAt"] == "2026-12-06T04:00:00Z"
    assert isinstance(document["paths"], str)  # one HMAC in the audit log, whatever the fleet
    assert json.loads(document["paths"]) == {"edges/e/otel-client-tls": {"sha256": SHA, "version": 3}}
    assert parse(document) == index


def test_it_is_fresh_for_an_hour_and_never_from_the_future() -> None:
    index = Index({}, NOW)
    assert index.fresh(NOW) and index.fresh(NOW + dt.timedelta(seconds=VERIFY_SECONDS - 1))
    assert not index.fresh(NOW + dt.timedelta(seconds=VERIFY_SECONDS))
    assert not index.fresh(NOW - dt.timedelta(seconds=1))  # verified "later than now": a clock went back
    assert not EMPTY.fresh(NOW)


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"paths": "{}"},
        {"verifiedAt": "yesterday", "paths": "{}"},
        {"verifiedAt": "2026-12-06T04:00:00Z", "paths": {}},
        {"verifiedAt": "2026-12-06T04:00:00Z", "paths": "{not json"},
        {"verifiedAt": "2026-12-06T04:00:00Z", "paths": "[]"},
        {"verifiedAt": "2026-12-06T04:00:00Z", "paths": json.dumps({"p": {"sha256": "00", "version": 1}})},
        {"verifiedAt": "2026-12-06T04:00:00Z", "paths": json.dumps({"p": {"sha256": SHA, "version": 0}})},
        {"verifiedAt": "2026-12-06T04:00:00Z", "paths": json.dumps({"p": {"sha256": SHA, "version": True}})},
        {"verifiedAt": "2026-12-06T04:00:00Z", "paths": json.dumps({"p": {"sha256": SHA}, "q": 1})},
    ],
)
def test_anything_malformed_vouches_for_nothing(data: dict[str, Any] | None) -> None:
    assert parse(data) == EMPTY


def test_the_digest_is_of_canonical_json() -> None:
    assert digest({"b": "1", "a": "2"}) == digest({"a": "2", "b": "1"})
    assert digest({"a": "1"}) != digest({"a": "1\n"})
