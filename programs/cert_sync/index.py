"""The hub cert-sync's index: what it last wrote or verified at each KV path, in one KV document.

Without it every hub pass reads every edge's published copy to learn whether it differs from the
Secret (``GET <kv>/data/edges/<edge>/otel-client-tls``): one Vault read per edge per pass, the
largest part of the hub's audit log and a request rate that grows with the fleet. With it
(``--index KV_PATH``) a pass reads the one document and knows, for each copy, the SHA-256 of what is
stored and its KV version: the Kubernetes Secrets (the hub's own API, not Vault) are read as before,
and only a copy whose expected content does not match the index is read from Vault. The document::

    {"verifiedAt": "2026-12-06T04:00:00Z",
     "paths": "{\"edges/edge-eu/otel-client-tls\":{\"sha256\":\"<hex>\",\"version\":3},...}"}

``sha256`` is :func:`digest` of the KV secret's data (canonical JSON); ``version`` is its KV version
(a write's check-and-set needs it, and the pass reports it). ``verifiedAt`` is when a pass last read
every indexed path from Vault itself. ``paths`` is that map as ONE string of JSON, not a nested map:
the audit device logs every response with each string value replaced by its HMAC and map keys in
clear (seen in the real server's log: ``{"edges/fleet-00/...": {"sha256": "hmac-sha256:...",
"version": 2}, ...}``, ~150 bytes per edge), so a nested map would make each pass's audited read grow
with the fleet; one string is one HMAC, the same size for 2 or 1000 edges.

What it guarantees (``programs.cert_sync.sync``, ``_hub_pass``):

* **Drift repair.** A copy changed behind the program's back (by hand, a restore) is invisible to the
  index until the next verification: a pass whose index is older than :data:`VERIFY_SECONDS`, or
  missing, or not a valid index document (never a crash: :func:`parse` returns an index that
  vouches for nothing), reads every path as a pass without an index does and writes a fresh
  ``verifiedAt``. So a hand change lives at most an hour (plus one CronJob run).
* **It never vouches for content a pass may be changing.** Before the first write of a copy the index
  vouches for, the pass writes the index without that path (check-and-set), then the copies, then
  the index with their new digests and versions. A pass that fails half-way leaves those paths out
  of the index, so the next pass reads them from Vault.
* **Nothing written blindly.** Before writing a copy that it knows only from the index, the pass reads
  it from Vault; if that differs from what the index said, the pass plans again with what is really
  stored. Every write keeps the check-and-set of the version read.
* **Forbidden is not missing.** A refused read of the index fails the pass (exit 5) like any refused
  read; only an absent, deleted or malformed document means "verify everything".
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["VERIFY_SECONDS", "Index", "IndexEntry", "digest", "parse"]

VERIFY_SECONDS = 3600.0
"""A pass whose index was verified longer ago than this reads every path from Vault."""
VERIFIED_AT = "verifiedAt"
PATHS = "paths"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RFC3339_UTC = "%Y-%m-%dT%H:%M:%SZ"


def digest(data: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a KV secret's data as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class IndexEntry:
    """What the index says is stored at one path: the data's :func:`digest` and its KV version."""

    sha256: str
    version: int


@dataclass(frozen=True)
class Index:
    """The document's content (``verified_at`` ``None``: it vouches for nothing, verify everything)."""

    entries: Mapping[str, IndexEntry]
    verified_at: _dt.datetime | None

    def fresh(self, now: _dt.datetime) -> bool:
        """Whether a pass at ``now`` may trust it (verified less than :data:`VERIFY_SECONDS` ago, and
        not in the future: a clock that went back, or a forged date, means verify)."""
        if self.verified_at is None:
            return False
        age = (now - self.verified_at).total_seconds()
        return 0 <= age < VERIFY_SECONDS

    def document(self) -> dict[str, Any]:
        """The KV data to store (``verified_at`` must be set)."""
        assert self.verified_at is not None
        paths = {p: {"sha256": e.sha256, "version": e.version} for p, e in sorted(self.entries.items())}
        return {
            VERIFIED_AT: self.verified_at.astimezone(_dt.UTC).strftime(_RFC3339_UTC),
            PATHS: json.dumps(paths, sort_keys=True, separators=(",", ":")),
        }


EMPTY = Index({}, None)


def _entry(value: object) -> IndexEntry | None:
    if not isinstance(value, dict):
        return None
    sha, version = value.get("sha256"), value.get("version")
    if not isinstance(sha, str) or not _HEX64.match(sha):
        return None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return None
    return IndexEntry(sha, version)


def parse(data: Mapping[str, Any] | None) -> Index:
    """The stored document, or :data:`EMPTY` (vouches for nothing) when it is absent or is not a
    valid index in every part: one malformed entry and nothing of it is trusted."""
    if not data:
        return EMPTY
    stamp, text = data.get(VERIFIED_AT), data.get(PATHS)
    if not isinstance(stamp, str) or not isinstance(text, str):
        return EMPTY
    try:
        verified_at = _dt.datetime.strptime(stamp, _RFC3339_UTC).replace(tzinfo=_dt.UTC)
        paths = json.loads(text)
    except ValueError:  # json.JSONDecodeError is one
        return EMPTY
    if not isinstance(paths, dict):
        return EMPTY
    entries = {path: _entry(value) for path, value in paths.items()}
    valid = {path: entry for path, entry in entries.items() if entry is not None and isinstance(path, str)}
    if len(valid) != len(entries):
        return EMPTY
    return Index(valid, verified_at)
