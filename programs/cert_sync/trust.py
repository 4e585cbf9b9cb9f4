"""Trust bundles: which CA certificates a peer must trust while certificates travel through Vault.

cert-sync never reads a CA's own Secret (it holds the CA's private key). It learns each CA from the
``ca.crt`` of the leaf Secrets it copies: cert-manager's CA issuer writes there the certificate of
the CA that signed the leaf, when it signs it, and never rewrites it when that CA changes
(cert-manager issues #2478, #9076: leaves are not re-issued on a CA change). A trust bundle is the
set of CA certificates the leaves of one group (``--trust NAMESPACE/NAME=KV_PATH``) may chain to,
stored as ``{"ca.crt": <PEM>}``. :func:`next_bundle` computes it, pass after pass:

* an **active** CA signed a leaf that one of the group's Secrets holds now;
* a **retired** CA signs none of them any more, but may have signed a certificate that a peer still
  presents: it stays until its ``trusted until``, fixed once when it retires as the later of the
  expiry of every published certificate (the group's KV copies) it signed and now + the longest
  lifetime of the group's current leaves (any leaf it signed before was issued before now, so it
  expires before that); then it leaves the bundle;
* a CA that enters the bundle is stamped ``trusted since``. :func:`trusted_for` tells whether the
  stored bundle has held a CA for ``lead`` seconds: until then cert-sync holds back a leaf that CA
  signed (its KV copy keeps the previous certificate while that one stays valid), so that every
  peer trusts the new CA before anyone presents a certificate from it.

The dates travel in the bundle itself, as explanatory text before each certificate (RFC 7468,
section 5.2: text outside the encapsulation boundaries is ignored; Go's ``encoding/pem``, which the
collector's ``x509.CertPool.AppendCertsFromPEM`` uses, and OpenSSL's PEM reader skip it)::

    # fedobs cert-sync trust bundle entry
    # subject: O=fedobs,CN=fedobs OTLP client CA
    # sha256: 3f0c...
    # trusted since: 2026-08-22T10:00:00Z
    # trusted until: 2026-08-23T10:00:00Z          (retired CAs only)
    -----BEGIN CERTIFICATE-----

A stored bundle that does not parse counts as empty: every CA is then new (held leaves, never an
outage) and the retired ones are found again from the published copies.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

__all__ = [
    "Entry",
    "Published",
    "active_issuer",
    "issuer_of",
    "next_bundle",
    "parse_bundle",
    "render_bundle",
    "signer_of",
    "trusted_for",
]

_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL)
_SINCE, _UNTIL = "# trusted since: ", "# trusted until: "
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Entry:
    """One CA certificate of a bundle: ``since`` it was first written (``None``: trusted before
    cert-sync recorded it), ``until`` when a retired CA leaves the bundle (``None``: active)."""

    certificate: x509.Certificate
    since: _dt.datetime | None = None
    until: _dt.datetime | None = None

    @property
    def fingerprint(self) -> bytes:
        return _fingerprint(self.certificate)


@dataclass(frozen=True)
class Published:
    """A KV copy as stored now: its certificate chain (``tls.crt``, leaf first) and the CA
    certificates it carries (``ca.crt``)."""

    chain: tuple[x509.Certificate, ...]
    carried: tuple[x509.Certificate, ...] = ()


def _fingerprint(certificate: x509.Certificate) -> bytes:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()


def _stamp(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).strftime(_STAMP)


def _moment(text: str) -> _dt.datetime | None:
    try:
        return _dt.datetime.strptime(text.strip(), _STAMP).replace(tzinfo=_dt.UTC)
    except ValueError:
        return None


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def parse_bundle(text: str) -> list[Entry]:
    """The entries of a stored bundle (its dates read from the text before each certificate); an
    empty list if any certificate does not parse."""
    entries: list[Entry] = []
    start = 0
    for match in _CERT.finditer(text):
        preamble = text[start : match.start()].splitlines()
        start = match.end()
        try:
            certificate = x509.load_pem_x509_certificate(match.group(0).encode())
        except ValueError:
            return []
        since = next((_moment(line[len(_SINCE) :]) for line in preamble if line.startswith(_SINCE)), None)
        until = next((_moment(line[len(_UNTIL) :]) for line in preamble if line.startswith(_UNTIL)), None)
        entries.append(Entry(certificate, since, until))
    return entries


def render_bundle(entries: Iterable[Entry]) -> str:
    """The PEM text of ``entries``, each after its explanatory lines (see the module docstring)."""
    parts = []
    for entry in entries:
        lines = [
            "# fedobs cert-sync trust bundle entry",
            f"# subject: {_printable(entry.certificate.subject.rfc4514_string())}",
            f"# sha256: {entry.fingerprint.hex()}",
        ]
        if entry.since is not None:
            lines.append(f"{_SINCE}{_stamp(entry.since)}")
        if entry.until is not None:
            lines.append(f"{_UNTIL}{_stamp(entry.until)}")
        pem = entry.certificate.public_bytes(serialization.Encoding.PEM).decode()
        parts.append("\n".join(lines) + "\n" + pem)
    return "".join(parts)


def _issued(certificate: x509.Certificate, by: x509.Certificate) -> bool:
    if certificate.issuer != by.subject:
        return False
    try:
        certificate.verify_directly_issued_by(by)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def issuer_of(chain: Sequence[x509.Certificate], candidates: Iterable[x509.Certificate]) -> x509.Certificate | None:
    """The CA certificate among ``candidates`` that signed the top of ``chain`` (the last
    certificate of a ``tls.crt``; cert-manager leaves a self-signed root out of it), if any."""
    top = chain[-1]
    for candidate in candidates:
        if _is_ca(candidate) and (_fingerprint(candidate) == _fingerprint(top) or _issued(top, candidate)):
            return candidate
    return None


def signer_of(chain: Sequence[x509.Certificate], candidates: Iterable[x509.Certificate]) -> x509.Certificate | None:
    """The CA that signed the leaf itself (``chain[0]``): an intermediate of ``chain`` or a candidate."""
    return issuer_of(chain[:1], [*chain[1:], *candidates])


def active_issuer(chain: Sequence[x509.Certificate], carried: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The CA a bundle trusts for a leaf Secret: the one that signed the leaf, provided the chain goes
    up to a CA the Secret's ``ca.crt`` (``carried``) names (cert-manager's CA issuer writes there
    the root-most certificate of the signing chain)."""
    if issuer_of(chain, carried) is None:
        return None
    return signer_of(chain, carried)


def _by_fingerprint(entries: Iterable[Entry]) -> dict[bytes, Entry]:
    return {entry.fingerprint: entry for entry in entries}


def _retired_until(
    previous: Entry | None, expiries: Sequence[_dt.datetime], now: _dt.datetime, lifetime: _dt.timedelta
) -> _dt.datetime:
    if previous is not None and previous.until is not None:
        return max([previous.until, *expiries])  # fixed when it retired; a later copy may only extend it
    return max([now + lifetime, *expiries])


def next_bundle(
    stored: Sequence[Entry],
    active: Sequence[x509.Certificate],
    published: Sequence[Published],
    *,
    lifetime: _dt.timedelta,
    now: _dt.datetime,
) -> list[Entry]:
    """The bundle after this pass: the ``active`` CAs (each leaf Secret's verified issuer), then the
    retired ones that may still be needed, by the rules of the module docstring. ``published`` are
    the group's KV copies as stored before this pass; ``lifetime`` the longest lifetime of the
    group's current leaves. Deterministic: the same inputs give the same text, so an unchanged
    bundle is never rewritten."""
    before = _by_fingerprint(stored)
    result: dict[bytes, Entry] = {}
    for ca in sorted(active, key=lambda c: (c.not_valid_before_utc, _fingerprint(c)), reverse=True):
        previous = before.get(_fingerprint(ca))
        result.setdefault(_fingerprint(ca), Entry(ca, previous.since if previous else now))
    candidates = [*active, *(e.certificate for e in stored), *(c for p in published for c in p.carried)]
    retired: dict[bytes, x509.Certificate] = {e.fingerprint: e.certificate for e in stored}
    expiries: dict[bytes, list[_dt.datetime]] = {}
    for copy in published:
        signer = signer_of(copy.chain, candidates)
        if signer is not None:
            retired.setdefault(_fingerprint(signer), signer)
            expiries.setdefault(_fingerprint(signer), []).append(copy.chain[0].not_valid_after_utc)
    leaving = []
    for fingerprint, ca in retired.items():
        if fingerprint in result:
            continue
        previous = before.get(fingerprint)
        until = _retired_until(previous, expiries.get(fingerprint, []), now, lifetime)
        if until > now and ca.not_valid_after_utc > now:
            leaving.append(Entry(ca, previous.since if previous else None, until))
    leaving.sort(key=lambda e: (e.until or now, e.fingerprint), reverse=True)
    return [*result.values(), *leaving]


def trusted_for(stored: Sequence[Entry], ca: x509.Certificate, lead: _dt.timedelta, now: _dt.datetime) -> bool:
    """Whether the stored bundle has held ``ca`` for at least ``lead`` (an entry without a date was
    trusted before cert-sync recorded it)."""
    entry = _by_fingerprint(stored).get(_fingerprint(ca))
    return entry is not None and (entry.since is None or entry.since + lead <= now)
