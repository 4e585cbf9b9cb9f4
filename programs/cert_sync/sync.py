"""Copy TLS certificates into Vault's KV v2: the program of the cert-sync CronJobs.

One client certificate travels hub -> edge (docs: DESIGN "Data flow of one client certificate")::

    hub cert-manager Secret --[hub mode]--> hub Vault kv/edges/<edge>/otel-client-tls
    hub Vault kv/edges/<edge>/otel-client-tls --[edge mode, on the edge]--> edge Vault kv/otel/otel-client-tls

Run it as ``python -m programs.cert_sync hub|edge [options]``. Python standard library +
``cryptography`` only (both baked into the image; nothing is installed at run time).

``hub`` mode
    For every ``--secret NAMESPACE/NAME=KV_PATH``: reads the Secret (type ``kubernetes.io/tls``,
    keys ``tls.crt``, ``tls.key``, ``ca.crt``; other keys are ignored) from the Kubernetes API with
    the pod's service-account token, and stores ``{"tls.crt", "tls.key", "ca.crt"}`` (the PEM text,
    byte for byte) at ``<kv-mount>/data/<KV_PATH>`` in the Vault at ``--vault-addr``. It never
    reads a CA's own Secret (that holds the CA's private key): CA certificates come from the
    ``ca.crt`` of the leaf Secrets, as trust bundles (:mod:`programs.cert_sync.trust`):

    * ``--trust NAMESPACE/NAME=BUNDLE_PATH`` (the Secret also given as a ``--secret``): the CA in the
      Secret's ``ca.crt`` that signed its ``tls.crt`` (a ``ca.crt`` naming a CA that did not is
      invalid data) joins the trust bundle stored at ``BUNDLE_PATH`` as ``{"ca.crt": <PEM>}``; a CA
      whose leaves were all replaced stays until every certificate it signed that was published may
      have expired. Repeat it for every leaf of the group (the edges' certificates, for the
      gateway's client CA file).
    * A leaf signed by a CA that the stored bundle has not held for ``--trust-lead`` seconds is held
      back: its KV copy keeps the previously published certificate while that one stays valid for
      longer than the lead, so that the peers trust a new CA before anyone presents its certificate.
    * ``--peer-ca KV_PATH=BUNDLE_PATH`` (``KV_PATH`` of a ``--secret``, ``BUNDLE_PATH`` of a
      ``--trust``): the copy stored at ``KV_PATH`` carries that bundle as its ``ca.crt`` instead of
      its own issuer: what its holder verifies its peer with (an edge verifies the gateway's server
      certificate with the server bundle).
    * ``--index KV_PATH`` (the hub CronJob gives it): the pass does not read every copy from Vault to
      learn whether it changed; one index document at ``KV_PATH`` holds the SHA-256 and KV version of
      what each copy holds, and only a copy whose expected content it does not vouch for is read
      (rule 2 below), all of them when the index is older than an hour, missing or malformed
      (:mod:`programs.cert_sync.index`). A pass where nothing changed costs the hub's Vault a login,
      one read (plus one per trust bundle) and a revoke, however many edges there are.
``edge`` mode
    Logs in to the hub Vault with the edge's AppRole (``--hub-role-id-file``,
    ``--hub-secret-id-file``), reads ``<hub-kv-mount>/data/edges/<EDGE>/otel-client-tls``, revokes
    that hub token, and stores the same three keys at ``<kv-mount>/data/<kv-path>`` in the local
    Vault at ``--vault-addr``.

Both modes log in to the TARGET Vault with Kubernetes auth (``--auth-path``, ``--role``, the
projected token in ``--jwt-file``) and follow the same rules:

1. Everything is fetched and validated BEFORE anything is written (:func:`validate_bundle`):
   ``tls.crt`` holds only PEM certificates, the first one (the leaf) currently valid (not expired,
   not before its notBefore); ``tls.key`` is one unencrypted PEM private key whose public key is
   the leaf's; ``ca.crt`` holds only PEM certificates, at least one. One bad item: nothing is
   written at all.
2. For every target path the current version is read first (``GET <kv>/data/<path>``). Identical
   content: no write. Otherwise one write with ``options.cas`` = the version just read (0 when the
   path has no secret yet). With ``--index`` a path the index vouches for is not read, unless it is
   about to be written: every write follows a read of the version it replaces. The mount must be
   KV v2 (``cas_required`` is expected); a write that
   Vault refuses because the version moved on (a concurrent writer) is a failure, never retried
   blindly and never forced.
3. Before the first write it asks ``sys/capabilities-self`` (granted by Vault's ``default``
   policy; skipped when refused) whether the token may write every changed path, so that a
   missing grant fails before anything is written instead of half-way.
4. Its Vault tokens are revoked at the end (``auth/token/revoke-self``, best effort: they are
   short-lived anyway).

Point ``--vault-addr`` (and ``--hub-addr``) at the ACTIVE node (in cluster
``https://<release>-active.<namespace>.svc:8200``, as ``components.raft_snapshots`` does; the hub's
external Service also selects ``vault-active``): standbys answer reads themselves and were seen
stale right after a write, and a stale version read makes the check-and-set write fail (exit 6,
harmless, but noisy). A failed run changes nothing that the next scheduled run cannot finish.

Vault capabilities it uses (for the Pulumi side, see also ``components.vault_policies.kv_write``):

* target Vault, Kubernetes auth role: ``create``, ``read``, ``update`` on ``<kv>/data/<KV_PATH>``
  for each ``--secret``, ``--trust`` bundle and the ``--index`` (hub mode) or on
  ``<kv>/data/<kv-path>`` (edge mode); optionally
  ``update`` on ``sys/capabilities-self`` (in the ``default`` policy) for the pre-flight check.
* hub Vault, the edge's AppRole (edge mode): ``read`` on ``<kv>/data/edges/<EDGE>/*``.
* Kubernetes (hub mode): ``get`` on each ``--secret`` (a Role with ``resourceNames``); never on a
  CA's Secret.

Options (flags win over environment variables)::

    common
      --vault-addr URL            target Vault, https only           VAULT_ADDR
      --ca-file PEM               CA bundle for it (else system CAs)  VAULT_CACERT
      --auth-path PATH            Kubernetes auth mount [kubernetes]  CERT_SYNC_AUTH_PATH
      --role NAME                 Kubernetes auth role [cert-sync]    CERT_SYNC_ROLE
      --jwt-file PATH             service-account token for Vault     CERT_SYNC_JWT_FILE
                                  [/var/run/secrets/vault/token]
      --kv-mount PATH             KV v2 mount [kv]                    CERT_SYNC_KV_MOUNT
      --timeout SECONDS           per network operation [30]          CERT_SYNC_TIMEOUT
      --passes N                  sync passes in this run [1]         CERT_SYNC_PASSES
      --interval SECONDS          between the starts of two passes    CERT_SYNC_INTERVAL
                                  (required when --passes > 1)
    hub
      --secret NS/NAME=KV_PATH    repeatable                          CERT_SYNC_SECRETS
                                  (several, separated by spaces, commas or newlines)
      --trust NS/NAME=BUNDLE_PATH repeatable                          CERT_SYNC_TRUST
      --peer-ca KV_PATH=BUNDLE_PATH  repeatable                       CERT_SYNC_PEER_CA
      --trust-lead SECONDS        [300]                               CERT_SYNC_TRUST_LEAD
      --index KV_PATH             the pass's index [none: read all]   CERT_SYNC_INDEX
      --kube-api URL              [https://kubernetes.default.svc]    CERT_SYNC_KUBE_API
      --kube-token-file PATH      [/var/run/secrets/kubernetes.io/serviceaccount/token]
                                                                      CERT_SYNC_KUBE_TOKEN_FILE
      --kube-ca-file PATH         [/var/run/secrets/kubernetes.io/serviceaccount/ca.crt]
                                                                      CERT_SYNC_KUBE_CA_FILE
    edge
      --edge NAME                 this edge's name                    CERT_SYNC_EDGE
      --hub-addr URL              hub Vault, https only               CERT_SYNC_HUB_ADDR
      --hub-ca-file PEM           CA bundle for it                    CERT_SYNC_HUB_CA_FILE
      --hub-approle-mount PATH    [approle-edges]                     CERT_SYNC_HUB_APPROLE_MOUNT
      --hub-role-id-file PATH     AppRole role_id                     CERT_SYNC_HUB_ROLE_ID_FILE
      --hub-secret-id-file PATH   AppRole secret_id                   CERT_SYNC_HUB_SECRET_ID_FILE
      --hub-kv-mount PATH         the hub's KV v2 mount [kv]          CERT_SYNC_HUB_KV_MOUNT
      --kv-path PATH              [otel/otel-client-tls]              CERT_SYNC_KV_PATH

The mode itself may come from ``CERT_SYNC_MODE`` when no ``hub``/``edge`` argument is given.
Every request (Vault and the Kubernetes API) goes through :mod:`programs.vault_http`: TLS is always
verified (there is no option to skip it; a given CA file is the only CA trusted) and every address
must be ``https://``; HTTP redirects are not followed (the token would travel with them): a 3xx is a
failure; answers over 4 MiB are refused; every request has the ``--timeout``. Nothing prints keys,
tokens, role or secret ids.

Passes (``--passes N --interval SECONDS``): a CronJob cannot run more often than once a minute, so
one run may sync several times: pass k (k = 0, 1, ...) starts ``k * interval`` seconds after the
program started (at once if the previous pass ended later than that). Every pass is a complete sync
with all the guarantees above: it reads its token files again, logs in, fetches and validates
everything before writing, writes with check-and-set and revokes its tokens; a change that lands
between two passes is picked up by the next one. The first pass that fails ends the run: no further
pass starts, and the run exits with that pass's exit code and one line naming the pass
(``cert-sync: error: pass 2 of 3: <reason>``). What the passes before it wrote stays written: each
of those writes was a complete, validated bundle written with check-and-set, exactly what a
separate earlier run would have left, so a failure in pass 2 after pass 1 succeeded means "pass 1's
sync is in Vault, pass 2's is not": the Job is marked failed (a failed pass is always visible), and
the Job's retry or the next run finishes the work. The Job's ``activeDeadlineSeconds`` bounds the whole
run; a run stopped by it exits 143 like any SIGTERM. The default, one pass, is a single sync.

Output: on success one line on stdout per pass, ``cert-sync: synced N, unchanged M (...)``; with
more than one pass each line starts ``cert-sync: pass K of N: ``.

Exit codes: 0 success; 2 usage or configuration error (flags, unreadable token or CA files);
3 the SOURCE failed (hub mode: the Kubernetes API, the Secret missing or forbidden; edge mode: the
hub Vault: unreachable, timeout, TLS, login refused, 403, nothing stored at the path);
4 the certificate data is invalid, or a ``--trust`` Secret's ca.crt did not sign its tls.crt (nothing
written); 5 the TARGET Vault failed (unreachable,
timeout, TLS, login refused, 403, any refused read or write); 6 check-and-set conflict: another
writer changed a target path between this program's read and its write (nothing overwritten);
1 anything unexpected; 143 terminated by SIGTERM. A failure prints exactly one line on stderr:
``cert-sync: error: <reason>``, naming the Secret, the Vault URL, the KV path and the HTTP status
as they apply.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as _dt
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from programs.cert_sync import index as cert_index
from programs.cert_sync import trust
from programs.cli import UsageErrorParser, env, run_program
from programs.errors import EXIT_TERMINATED, EXIT_UNEXPECTED, ExitCodes, PodProgramError, UsageError
from programs.vault_http import (
    HttpFailure,
    KvState,
    PinnedHttps,
    RequestRefused,
    VaultHttp,
    WriteConflict,
    https_url,
)

__all__ = [
    "DEFAULT_HUB_APPROLE_MOUNT",
    "DEFAULT_JWT_FILE",
    "DEFAULT_KV_MOUNT",
    "DEFAULT_KV_PATH",
    "EXIT_CONFLICT",
    "EXIT_INVALID",
    "EXIT_SOURCE",
    "EXIT_TARGET",
    "EXIT_TERMINATED",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "HUB_KV_NAME",
    "TLS_KEYS",
    "CertSummary",
    "ConflictError",
    "InvalidCertificateError",
    "SecretSpec",
    "SourceError",
    "SyncError",
    "TargetError",
    "UsageError",
    "hub_kv_path",
    "main",
    "parse_secret_spec",
    "validate_bundle",
]

PROG = "cert-sync"
TLS_KEYS: tuple[str, ...] = ("tls.crt", "tls.key", "ca.crt")
"""The keys copied, in the Secret and in every KV secret written."""

DEFAULT_JWT_FILE = "/var/run/secrets/vault/token"
DEFAULT_KUBE_API = "https://kubernetes.default.svc"
DEFAULT_KUBE_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEFAULT_KUBE_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
DEFAULT_AUTH_PATH = "kubernetes"
DEFAULT_ROLE = "cert-sync"
DEFAULT_KV_MOUNT = "kv"
DEFAULT_KV_PATH = "otel/otel-client-tls"
DEFAULT_HUB_APPROLE_MOUNT = "approle-edges"
DEFAULT_TIMEOUT = 30.0
DEFAULT_TRUST_LEAD = 300.0
HUB_KV_NAME = "otel-client-tls"
"""The secret's name under ``edges/<edge>/`` on the hub (see :func:`hub_kv_path`)."""
MAX_PASSES = 60
MAX_INTERVAL = 3600.0

#: Besides the shared EXIT_UNEXPECTED (1) and EXIT_TERMINATED (143) of programs.errors:
EXIT_USAGE = 2
EXIT_SOURCE = 3
EXIT_INVALID = 4
EXIT_TARGET = 5
EXIT_CONFLICT = 6

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_CERT_PEM_TYPES = ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE")


# ---------------------------------------------------------------------------------------------
# errors: the program's own failure kinds; EXIT_CODES maps them and the shared ones to exit codes
# ---------------------------------------------------------------------------------------------
class SyncError(PodProgramError):
    """A cert-sync failure; ``str()`` is the one line printed on stderr."""


class SourceError(SyncError):
    """The Kubernetes API (hub mode) or the hub Vault (edge mode) failed."""


class InvalidCertificateError(SyncError):
    """The data to copy is not a valid, current certificate with its key."""


class TargetError(SyncError):
    """The Vault written to failed."""


ConflictError = WriteConflict
"""Check-and-set refused the write: someone else wrote the path after it was read."""

EXIT_CODES: ExitCodes = {
    UsageError: EXIT_USAGE,
    SourceError: EXIT_SOURCE,
    InvalidCertificateError: EXIT_INVALID,
    TargetError: EXIT_TARGET,
    WriteConflict: EXIT_CONFLICT,
}
"""Each failure's exit code (the module docstring). A failure of the HTTP client is first made a
:class:`SourceError` or a :class:`TargetError` by the side it happened on (:func:`_side`), except a
lost check-and-set, which is always ``EXIT_CONFLICT``."""


@contextlib.contextmanager
def _side(kind: type[SyncError]) -> Iterator[None]:
    """Client failures (unreachable, refused, bad response) inside the block are ``kind``'s."""
    try:
        yield
    except WriteConflict:
        raise
    except HttpFailure as exc:
        raise kind(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CertSummary:
    """What :func:`validate_bundle` found in a valid bundle (nothing secret)."""

    subject: str
    serial: int
    not_before: _dt.datetime
    not_after: _dt.datetime
    chain_length: int
    ca_certificates: int


def _pem_certificates(text: str, key: str, what: str) -> list[x509.Certificate]:
    blocks = _PEM_BLOCK.findall(text)
    if not blocks:
        raise InvalidCertificateError(f"{what}: {key} holds no PEM certificate")
    others = sorted({b for b in blocks if b not in _CERT_PEM_TYPES})
    if others:
        raise InvalidCertificateError(
            f"{what}: {key} holds PEM blocks that are not certificates ({', '.join(o.lower() for o in others)})"
        )
    try:
        certificates = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise InvalidCertificateError(f"{what}: {key} is not valid PEM certificate data") from None
    if len(certificates) != len(blocks):
        raise InvalidCertificateError(f"{what}: {key} holds PEM blocks that do not parse as certificates")
    return certificates


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _utc(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_bundle(bundle: Mapping[str, object], what: str, now: _dt.datetime | None = None) -> CertSummary:
    """Check one ``{"tls.crt", "tls.key", "ca.crt"}`` bundle (see the module docstring, rule 1);
    raise :class:`InvalidCertificateError` naming ``what`` and the reason. Never puts key
    material into the message."""
    for key in TLS_KEYS:
        value = bundle.get(key)
        if value is None:
            raise InvalidCertificateError(f"{what}: {key} is missing")
        if not isinstance(value, str):
            raise InvalidCertificateError(f"{what}: {key} is not text")
        if not value.strip():
            raise InvalidCertificateError(f"{what}: {key} is empty")
    cert_text, key_text, ca_text = (str(bundle[k]) for k in TLS_KEYS)
    chain = _pem_certificates(cert_text, "tls.crt", what)
    leaf = chain[0]
    try:
        leaf_public = _spki(leaf.public_key())
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidCertificateError(f"{what}: the public key in tls.crt is not supported") from None
    key_blocks = _PEM_BLOCK.findall(key_text)
    if len(key_blocks) != 1 or not key_blocks[0].endswith("PRIVATE KEY"):
        raise InvalidCertificateError(f"{what}: tls.key must hold exactly one PEM private key")
    try:
        private_key = serialization.load_pem_private_key(key_text.encode(), password=None)
    except TypeError:
        raise InvalidCertificateError(f"{what}: tls.key is encrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidCertificateError(f"{what}: tls.key is not a valid PEM private key") from None
    if _spki(private_key.public_key()) != leaf_public:
        raise InvalidCertificateError(
            f"{what}: tls.key does not match the certificate in tls.crt "
            f"({leaf.subject.rfc4514_string()}, serial {leaf.serial_number:x})"
        )
    moment = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if moment < not_before:
        raise InvalidCertificateError(
            f"{what}: the certificate in tls.crt is not valid yet (notBefore {_utc(not_before)})"
        )
    if moment > not_after:
        raise InvalidCertificateError(f"{what}: the certificate in tls.crt expired at {_utc(not_after)}")
    ca = _pem_certificates(ca_text, "ca.crt", what)
    return CertSummary(leaf.subject.rfc4514_string(), leaf.serial_number, not_before, not_after, len(chain), len(ca))


# ---------------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SecretSpec:
    """One ``--secret NAMESPACE/NAME=KV_PATH`` (or ``--trust NAMESPACE/NAME=BUNDLE_PATH``)."""

    namespace: str
    name: str
    kv_path: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def _check_kv_path(path: str, flag: str) -> str:
    segments = path.split("/")
    if not path or not all(_PATH_SEGMENT.match(s) for s in segments):
        raise UsageError(
            f"{flag} {path!r} is not a KV path (segments of letters, digits, '_', '.', '-', "
            "separated by '/', no leading or trailing '/')"
        )
    return path


def parse_secret_spec(text: str, flag: str = "--secret") -> SecretSpec:
    """``NAMESPACE/NAME=KV_PATH`` -> :class:`SecretSpec`; :class:`UsageError` if malformed."""
    source, sep, kv_path = text.strip().partition("=")
    namespace, slash, name = source.partition("/")
    if not sep or not slash:
        raise UsageError(f"{flag} {text!r} must look like NAMESPACE/NAME=KV_PATH")
    if not _DNS_LABEL.match(namespace):
        raise UsageError(f"{flag} {text!r}: {namespace!r} is not a Kubernetes namespace name")
    if not _DNS_SUBDOMAIN.match(name):
        raise UsageError(f"{flag} {text!r}: {name!r} is not a Kubernetes Secret name")
    return SecretSpec(namespace, name, _check_kv_path(kv_path, f"{flag} KV_PATH"))


class KubeAPI(PinnedHttps):
    """The Kubernetes API, under the same HTTPS policy as Vault (:mod:`programs.vault_http`)."""

    def __init__(self, url: str, token: str, ca_file: str | None, timeout: float) -> None:
        super().__init__(
            url, ca_file, timeout=timeout, label="Kubernetes API", flag="--kube-api", ca_flag="--kube-ca-file"
        )
        self._token = token

    def read_tls_secret(self, spec: SecretSpec) -> dict[str, str]:
        """The Secret's ``tls.crt``/``tls.key``/``ca.crt`` as text (only those keys)."""
        what = f"Secret {spec.ref}"
        path = f"/api/v1/namespaces/{spec.namespace}/secrets/{spec.name}"
        action = f"reading {what} from the Kubernetes API"
        auth = {"Authorization": f"Bearer {self._token}"}
        response = self.send("GET", path, action=action, headers=auth)
        if response.status != 200:
            raise self.fail(response, "GET", path, action=action, secrets=(self._token,))
        obj = response.body
        if not obj or obj.get("kind", "Secret") != "Secret":
            raise SourceError(f"{action}: GET {self.full_url(path)} did not return a Secret")
        if obj.get("type") != "kubernetes.io/tls":
            raise InvalidCertificateError(f"{what} has type {obj.get('type')!r}, not kubernetes.io/tls")
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise InvalidCertificateError(f"{what}: data is not a map")
        bundle: dict[str, str] = {}
        for key in TLS_KEYS:
            encoded = data.get(key)
            if encoded is None:
                raise InvalidCertificateError(f"{what}: {key} is missing")
            try:
                bundle[key] = base64.b64decode(str(encoded), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise InvalidCertificateError(f"{what}: {key} is not base64-encoded UTF-8 text") from None
        return bundle


# ---------------------------------------------------------------------------------------------
# Vault (the shared client: programs.vault_http.VaultHttp)
# ---------------------------------------------------------------------------------------------
def check_can_write(vault: VaultHttp, token: str, mount: str, states: Mapping[str, KvState]) -> None:
    """Pre-flight (module docstring, rule 3): raise if the token cannot write a path."""
    paths = {f"{mount}/data/{path}": state for path, state in states.items()}
    answer = vault.capabilities_self(token, paths)
    if answer is None:
        return  # not allowed to ask (no default policy): the writes themselves will tell
    denied: list[str] = []
    for api_path, state in sorted(paths.items()):
        capabilities = answer.get(api_path)
        if capabilities is None:
            continue
        needed = "update" if state.version else "create"
        if needed not in capabilities and "root" not in capabilities:
            denied.append(f"{needed} on {api_path} (it has: {', '.join(capabilities)})")
    if denied:
        raise RequestRefused(
            f"permission denied: the token lacks {', '.join(denied)} at the {vault.label} "
            f"{vault.url}; nothing was written"
        )


# ---------------------------------------------------------------------------------------------
# the sync itself
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One validated bundle and where it goes (``kv_path`` below the target's KV mount)."""

    source: str
    kv_path: str
    bundle: dict[str, str]
    summary: CertSummary | None = None


@dataclass(frozen=True)
class Outcome:
    written: list[tuple[str, int]]
    unchanged: list[tuple[str, int]]


def write_changed(
    vault: VaultHttp, token: str, mount: str, items: Sequence[Item], states: Mapping[str, KvState] | None = None
) -> Outcome:
    """Rule 2 and 3 of the module docstring: read every target (unless ``states`` holds what was
    just read), then write what differs, in the order of ``items``."""
    states = dict(states or {})
    for item in items:
        if item.kv_path not in states:
            states[item.kv_path] = vault.kv_read(token, mount, item.kv_path)
    changed = [item for item in items if states[item.kv_path].data != item.bundle]
    unchanged = [
        (f"{mount}/data/{item.kv_path}", states[item.kv_path].version) for item in items if item not in changed
    ]
    if changed:
        check_can_write(vault, token, mount, {item.kv_path: states[item.kv_path] for item in changed})
    written: list[tuple[str, int]] = []
    for item in changed:
        try:
            version = vault.kv_write(token, mount, item.kv_path, item.bundle, states[item.kv_path].version)
        except PodProgramError as exc:
            if written:
                done = ", ".join(f"{p} (version {v})" for p, v in written)
                raise type(exc)(f"{exc} (written before this failure: {done})", exc.exit_code) from None
            raise
        written.append((f"{mount}/data/{item.kv_path}", version))
    return Outcome(written, unchanged)


def _read_secret_file(path: str, what: str, flag: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} file {path} ({flag}): {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"the {what} file {path} ({flag}) is not text") from None
    if not value:
        raise UsageError(f"the {what} file {path} ({flag}) is empty")
    return value


def hub_kv_path(edge: str) -> str:
    """Where the hub keeps an edge's client certificate, below its KV mount."""
    return f"edges/{edge}/{HUB_KV_NAME}"


def _target(args: argparse.Namespace) -> VaultHttp:
    label = "edge Vault" if args.mode == "edge" else "Vault"
    return VaultHttp(
        args.vault_addr, args.ca_file, timeout=args.timeout, label=label, flag="--vault-addr", ca_flag="--ca-file"
    )


def hub_client(args: argparse.Namespace) -> VaultHttp:
    """The edge's client of the hub's Vault (``--hub-addr``, ``--hub-ca-file``)."""
    return VaultHttp(
        args.hub_addr,
        args.hub_ca_file,
        timeout=args.timeout,
        label="hub Vault",
        flag="--hub-addr",
        ca_flag="--hub-ca-file",
    )


def _into_target(
    args: argparse.Namespace,
    vault: VaultHttp,
    jwt: str,
    items: Sequence[Item] | Callable[[Mapping[str, KvState]], Sequence[Item]],
    read_first: Sequence[str] = (),
) -> Outcome:
    """Log in, write what changed, revoke the token. ``items`` may be a function of the stored state
    of the ``read_first`` paths (the hub's trust bundles depend on what is published now)."""
    with _side(TargetError):
        token = vault.login_kubernetes(args.auth_path, args.role, jwt)
        try:
            states = {path: vault.kv_read(token, args.kv_mount, path) for path in read_first}
            planned = items(states) if callable(items) else items
            return write_changed(vault, token, args.kv_mount, planned, states)
        finally:
            vault.revoke_self(token)


@dataclass(frozen=True)
class Source:
    """A validated leaf Secret (hub mode): its bundle, summary and certificate chain."""

    spec: SecretSpec
    bundle: dict[str, str]
    summary: CertSummary
    chain: tuple[x509.Certificate, ...]

    @property
    def what(self) -> str:
        return f"Secret {self.spec.ref}"

    def issuer(self) -> x509.Certificate:
        """The CA in its ``ca.crt`` that signed its ``tls.crt`` (:class:`InvalidCertificateError` if none)."""
        carried = _pem_certificates(self.bundle["ca.crt"], "ca.crt", self.what)
        issuer = trust.active_issuer(self.chain, carried)
        if issuer is None:
            raise InvalidCertificateError(
                f"{self.what}: no CA certificate in ca.crt signed its certificate in tls.crt "
                f"({self.chain[-1].issuer.rfc4514_string()}); it is not put in a trust bundle"
            )
        return issuer


def source_of(spec: SecretSpec, bundle: dict[str, str], now: _dt.datetime | None = None) -> Source:
    """The Secret's bundle, validated (:class:`InvalidCertificateError` if it is not)."""
    what = f"Secret {spec.ref}"
    summary = validate_bundle(bundle, what, now)
    return Source(spec, bundle, summary, tuple(_pem_certificates(bundle["tls.crt"], "tls.crt", what)))


def read_source(kube: KubeAPI, spec: SecretSpec) -> Source:
    with _side(SourceError):
        bundle = kube.read_tls_secret(spec)
    return source_of(spec, bundle)


@dataclass(frozen=True)
class TrustPlan:
    """Hub mode's trust options: each bundle's member Secrets (``--trust``, by ref), the copies that
    carry a bundle as their ``ca.crt`` (``--peer-ca``) and the lead a new CA gets."""

    bundles: Mapping[str, Sequence[str]]
    peer_ca: Mapping[str, str]
    lead: _dt.timedelta


def _stored_copy(state: KvState | None, now: _dt.datetime) -> tuple[dict[str, str], CertSummary] | None:
    """A published copy that is still a valid bundle at ``now`` (else ``None``)."""
    data = state.data if state is not None else None
    if not data:
        return None
    bundle = {key: data[key] for key in TLS_KEYS if isinstance(data.get(key), str)}
    try:
        return bundle, validate_bundle(bundle, "the published copy", now)
    except InvalidCertificateError:
        return None


def _published(copy: tuple[dict[str, str], CertSummary] | None) -> list[trust.Published]:
    if copy is None:
        return []
    bundle = copy[0]
    chain = _pem_certificates(bundle["tls.crt"], "tls.crt", "the published copy")
    return [trust.Published(tuple(chain), tuple(_pem_certificates(bundle["ca.crt"], "ca.crt", "the published copy")))]


def plan_trust(
    sources: Sequence[Source], options: TrustPlan, stored: Mapping[str, KvState], now: _dt.datetime
) -> tuple[dict[str, list[trust.Entry]], set[str]]:
    """Each bundle's entries after this pass, and the refs of the Secrets held back (their copies
    keep what is published: :mod:`programs.cert_sync.trust`)."""
    by_ref = {source.spec.ref: source for source in sources}
    bundles: dict[str, list[trust.Entry]] = {}
    held: set[str] = set()
    for path, refs in sorted(options.bundles.items()):
        members = [by_ref[ref] for ref in refs]
        state = stored.get(path)
        text = state.data.get("ca.crt") if state is not None and state.data else None
        before = trust.parse_bundle(text) if isinstance(text, str) else []
        issuers = {m.spec.ref: m.issuer() for m in members}
        copies = {m.spec.ref: _stored_copy(stored.get(m.spec.kv_path), now) for m in members}
        bundles[path] = trust.next_bundle(
            before,
            list(issuers.values()),
            [p for copy in copies.values() for p in _published(copy)],
            lifetime=max(m.summary.not_after - m.summary.not_before for m in members),
            now=now,
        )
        held.update(
            ref for ref, issuer in issuers.items() if _holds_back(copies[ref], issuer, before, options.lead, now)
        )
    return bundles, held


def _holds_back(
    copy: tuple[dict[str, str], CertSummary] | None,
    issuer: x509.Certificate,
    before: Sequence[trust.Entry],
    lead: _dt.timedelta,
    now: _dt.datetime,
) -> bool:
    """Whether a Secret's KV copy keeps what is published: its CA changed, the stored bundle has not
    held the new CA for ``lead`` yet, and the published certificate stays valid beyond that."""
    if copy is None or copy[1].not_after <= now + lead:
        return False
    if trust.issuer_of(_published(copy)[0].chain[:1], [issuer]) is not None:
        return False  # the same CA signed what is published: the peers trust it already
    return not trust.trusted_for(before, issuer, lead, now)


def plan_hub(
    sources: Sequence[Source], options: TrustPlan, stored: Mapping[str, KvState], now: _dt.datetime
) -> list[Item]:
    """Everything one hub pass writes, trust bundles first (a peer learns a CA before its leaves)."""
    bundles, held = plan_trust(sources, options, stored, now)
    rendered = {path: trust.render_bundle(entries) for path, entries in sorted(bundles.items())}
    items = [Item(f"trust bundle {path}", path, {"ca.crt": text}) for path, text in rendered.items()]
    for source in sources:
        bundle, what = dict(source.bundle), source.what
        copy = _stored_copy(stored.get(source.spec.kv_path), now) if source.spec.ref in held else None
        if copy is not None:
            bundle, what = dict(copy[0]), f"{what} (held back: its CA is new to the trust bundle)"
        if source.spec.kv_path in options.peer_ca:
            bundle["ca.crt"] = rendered[options.peer_ca[source.spec.kv_path]]
        items.append(Item(what, source.spec.kv_path, bundle, validate_bundle(bundle, what, now)))
    return items


def cmd_hub(args: argparse.Namespace) -> Outcome:
    specs: list[SecretSpec] = args.secrets
    jwt = _read_secret_file(args.jwt_file, "Vault service-account token", "--jwt-file")
    kube_token = _read_secret_file(args.kube_token_file, "Kubernetes service-account token", "--kube-token-file")
    vault = _target(args)
    kube = KubeAPI(args.kube_api, kube_token, args.kube_ca_file, args.timeout)
    sources = [read_source(kube, spec) for spec in specs]
    options: TrustPlan = args.trust
    for refs in options.bundles.values():  # every trusted CA checked before logging in
        for ref in refs:
            next(s for s in sources if s.spec.ref == ref).issuer()
    if args.index:
        return _indexed_pass(args, vault, jwt, sources)
    if not options.bundles:
        return _into_target(args, vault, jwt, [Item(s.what, s.spec.kv_path, s.bundle, s.summary) for s in sources])
    paths = [*sorted(options.bundles), *(s.spec.kv_path for s in sources)]
    return _into_target(
        args, vault, jwt, lambda stored: plan_hub(sources, options, stored, _dt.datetime.now(_dt.UTC)), paths
    )


# ---------------------------------------------------------------------------------------------
# hub mode with --index (programs.cert_sync.index): a pass's Vault reads do not grow with the edges
# ---------------------------------------------------------------------------------------------
def _expected(source: Source, options: TrustPlan, stored: Mapping[str, KvState]) -> dict[str, str]:
    """What the copy of ``source`` holds when nothing changed: the Secret's bundle, with the stored
    trust bundle as its ``ca.crt`` when it is a ``--peer-ca`` copy. A copy held back by the trust
    logic differs, so it does not match the index and is read from Vault."""
    bundle = dict(source.bundle)
    peer = options.peer_ca.get(source.spec.kv_path)
    state = stored.get(peer) if peer is not None else None
    text = state.data.get("ca.crt") if state is not None and state.data else None
    if isinstance(text, str):
        bundle["ca.crt"] = text
    return bundle


def _confirmed_plan(
    vault: VaultHttp,
    token: str,
    mount: str,
    plan: Callable[[Mapping[str, KvState]], Sequence[Item]],
    states: dict[str, KvState],
    read: set[str],
) -> list[Item]:
    """``plan(states)``, where every path it would write was read from Vault in this pass: a path
    known only from the index is read before it is written (nothing is overwritten on the index's
    word alone); when what is stored differs from what the index said, plan again with it."""
    while True:
        items = list(plan(states))
        unread = [i.kv_path for i in items if i.kv_path not in read and states[i.kv_path].data != i.bundle]
        moved = False
        for path in unread:
            state = vault.kv_read(token, mount, path)
            read.add(path)
            if state != states[path]:
                states[path], moved = state, True
        if not moved:
            return items


def _known_states(
    vault: VaultHttp, token: str, args: argparse.Namespace, sources: Sequence[Source], index: cert_index.Index
) -> tuple[dict[str, KvState], set[str]]:
    """The stored state of the trust bundles (always read) and of every copy: from the index when
    the index vouches for the content the copy should have, else read from Vault. Also the paths
    read from Vault."""
    options: TrustPlan = args.trust
    states = {path: vault.kv_read(token, args.kv_mount, path) for path in sorted(options.bundles)}
    read = set(states)
    for source in sources:
        path = source.spec.kv_path
        expected, entry = _expected(source, options, states), index.entries.get(path)
        if entry is not None and entry.sha256 == cert_index.digest(expected):
            states[path] = KvState(entry.version, expected)
        else:
            states[path] = vault.kv_read(token, args.kv_mount, path)
            read.add(path)
    return states, read


def _store_index(vault: VaultHttp, token: str, args: argparse.Namespace, index: cert_index.Index, cas: int) -> int:
    return vault.kv_write(token, args.kv_mount, args.index, index.document(), cas)


def _indexed_pass(args: argparse.Namespace, vault: VaultHttp, jwt: str, sources: Sequence[Source]) -> Outcome:
    """One hub pass with the index (module docstring of :mod:`programs.cert_sync.index`): login, the
    index, the trust bundles, only the copies the index cannot vouch for, the writes, the index."""
    options: TrustPlan = args.trust
    now, mount = _dt.datetime.now(_dt.UTC), args.kv_mount
    copies = {source.spec.kv_path for source in sources}

    def plan(stored: Mapping[str, KvState]) -> list[Item]:
        if options.bundles:
            return plan_hub(sources, options, stored, now)
        return [Item(s.what, s.spec.kv_path, s.bundle, s.summary) for s in sources]

    with _side(TargetError):
        token = vault.login_kubernetes(args.auth_path, args.role, jwt)
        try:
            index_state = vault.kv_read(token, mount, args.index)
            stored = cert_index.parse(index_state.data)
            verify = not stored.fresh(now)
            states, read = _known_states(vault, token, args, sources, cert_index.EMPTY if verify else stored)
            items = _confirmed_plan(vault, token, mount, plan, states, read)
            cas = index_state.version
            changing = {i.kv_path for i in items if states[i.kv_path].data != i.bundle}
            if changing & set(stored.entries):  # never vouch for what this pass may change
                stored = cert_index.Index(
                    {p: e for p, e in stored.entries.items() if p not in changing}, stored.verified_at
                )
                cas = _store_index(vault, token, args, stored, cas)
            outcome = write_changed(vault, token, mount, items, states)
            versions = {p: s.version for p, s in states.items()} | {
                p.removeprefix(f"{mount}/data/"): v for p, v in outcome.written
            }
            entries = {
                i.kv_path: cert_index.IndexEntry(cert_index.digest(i.bundle), versions[i.kv_path]) for i in items
            }
            fresh = cert_index.Index(
                {p: e for p, e in entries.items() if p in copies}, now if verify else stored.verified_at
            )
            if stored.verified_at is None or fresh.document() != stored.document():
                _record(vault, token, args, fresh, cas, outcome)
            return outcome
        finally:
            vault.revoke_self(token)


def _record(
    vault: VaultHttp, token: str, args: argparse.Namespace, index: cert_index.Index, cas: int, outcome: Outcome
) -> None:
    """Write the index after the copies; a failure names what the pass wrote before it."""
    try:
        _store_index(vault, token, args, index, cas)
    except PodProgramError as exc:
        if outcome.written:
            done = ", ".join(f"{p} (version {v})" for p, v in outcome.written)
            raise type(exc)(f"{exc} (written before this failure: {done})", exc.exit_code) from None
        raise


def cmd_edge(args: argparse.Namespace) -> Outcome:
    jwt = _read_secret_file(args.jwt_file, "Vault service-account token", "--jwt-file")
    role_id = _read_secret_file(args.hub_role_id_file, "AppRole role_id", "--hub-role-id-file")
    secret_id = _read_secret_file(args.hub_secret_id_file, "AppRole secret_id", "--hub-secret-id-file")
    vault = _target(args)
    hub = hub_client(args)
    source_path = hub_kv_path(args.edge)
    with _side(SourceError):
        token = hub.login_approle(args.hub_approle_mount, role_id, secret_id)
        try:
            state = hub.kv_read(token, args.hub_kv_mount, source_path)
        finally:
            hub.revoke_self(token)
    what = f"{args.hub_kv_mount}/data/{source_path} at the hub Vault {hub.url}"
    if state.data is None:
        detail = f"its version {state.version} is deleted or destroyed" if state.version else "nothing is stored there"
        raise SourceError(f"reading {what}: {detail} (has the hub's cert-sync run?)")
    bundle = {key: state.data[key] for key in TLS_KEYS if key in state.data}
    summary = validate_bundle(bundle, what)
    return _into_target(args, vault, jwt, [Item(what, args.kv_path, bundle, summary)])


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _lead(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_INTERVAL * 24:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_INTERVAL * 24:g} seconds")
    return value


def _passes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of passes") from None
    if not 1 <= value <= MAX_PASSES:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PASSES}")
    return value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_INTERVAL:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_INTERVAL:g} seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every option also reads an environment variable)."""
    common = UsageErrorParser(add_help=False)
    v = common.add_argument_group("target Vault (TLS is always verified)")
    v.add_argument("--vault-addr", default=env("VAULT_ADDR"), help="target Vault URL, https:// [VAULT_ADDR]")
    v.add_argument(
        "--ca-file",
        default=env("VAULT_CACERT"),
        help="PEM CA bundle for the target Vault (default: system CAs) [VAULT_CACERT]",
    )
    v.add_argument(
        "--auth-path",
        default=env("CERT_SYNC_AUTH_PATH", DEFAULT_AUTH_PATH),
        help=f"Kubernetes auth mount (default {DEFAULT_AUTH_PATH}) [CERT_SYNC_AUTH_PATH]",
    )
    v.add_argument(
        "--role",
        default=env("CERT_SYNC_ROLE", DEFAULT_ROLE),
        help=f"Kubernetes auth role (default {DEFAULT_ROLE}) [CERT_SYNC_ROLE]",
    )
    v.add_argument(
        "--jwt-file",
        default=env("CERT_SYNC_JWT_FILE", DEFAULT_JWT_FILE),
        help=f"projected service-account token (default {DEFAULT_JWT_FILE}) [CERT_SYNC_JWT_FILE]",
    )
    v.add_argument(
        "--kv-mount",
        default=env("CERT_SYNC_KV_MOUNT", DEFAULT_KV_MOUNT),
        help=f"KV v2 mount (default {DEFAULT_KV_MOUNT}) [CERT_SYNC_KV_MOUNT]",
    )
    v.add_argument(
        "--timeout",
        type=_timeout,
        default=env("CERT_SYNC_TIMEOUT", str(DEFAULT_TIMEOUT)),
        help=f"seconds per network operation (default {DEFAULT_TIMEOUT:g}) [CERT_SYNC_TIMEOUT]",
    )
    r = common.add_argument_group("passes (a run may sync several times: see the module docstring)")
    r.add_argument(
        "--passes",
        type=_passes,
        default=env("CERT_SYNC_PASSES", "1"),
        help="sync passes in this run (default 1) [CERT_SYNC_PASSES]",
    )
    r.add_argument(
        "--interval",
        type=_interval,
        default=env("CERT_SYNC_INTERVAL"),
        help="seconds between the starts of two passes; required with more than one pass [CERT_SYNC_INTERVAL]",
    )

    parser = UsageErrorParser(prog="python -m programs.cert_sync", description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    hub = sub.add_parser("hub", parents=[common], help="Kubernetes TLS Secrets -> this cluster's Vault")
    hub.add_argument(
        "--secret",
        action="append",
        metavar="NS/NAME=KV_PATH",
        dest="secret",
        help="a Secret and the KV path to store it at; repeatable [CERT_SYNC_SECRETS]",
    )
    hub.add_argument(
        "--trust",
        action="append",
        metavar="NS/NAME=BUNDLE_PATH",
        dest="trust",
        help="the CA in a --secret's ca.crt joins the trust bundle at BUNDLE_PATH; repeatable [CERT_SYNC_TRUST]",
    )
    hub.add_argument(
        "--peer-ca",
        action="append",
        metavar="KV_PATH=BUNDLE_PATH",
        dest="peer_ca",
        help="the copy at KV_PATH carries the trust bundle BUNDLE_PATH as its ca.crt; repeatable [CERT_SYNC_PEER_CA]",
    )
    hub.add_argument(
        "--trust-lead",
        type=_lead,
        default=env("CERT_SYNC_TRUST_LEAD", str(DEFAULT_TRUST_LEAD)),
        help=f"seconds a new CA is trusted before its certificates are published "
        f"(default {DEFAULT_TRUST_LEAD:g}) [CERT_SYNC_TRUST_LEAD]",
    )
    hub.add_argument(
        "--index",
        default=env("CERT_SYNC_INDEX"),
        metavar="KV_PATH",
        help="the KV path of the index document: a pass reads the copies from Vault only when the index "
        "cannot vouch for them, and all of them once an hour (programs.cert_sync.index) [CERT_SYNC_INDEX]",
    )
    hub.add_argument(
        "--kube-api",
        default=env("CERT_SYNC_KUBE_API", DEFAULT_KUBE_API),
        help=f"Kubernetes API URL (default {DEFAULT_KUBE_API}) [CERT_SYNC_KUBE_API]",
    )
    hub.add_argument(
        "--kube-token-file",
        default=env("CERT_SYNC_KUBE_TOKEN_FILE", DEFAULT_KUBE_TOKEN_FILE),
        help="token for the Kubernetes API [CERT_SYNC_KUBE_TOKEN_FILE]",
    )
    hub.add_argument(
        "--kube-ca-file",
        default=env("CERT_SYNC_KUBE_CA_FILE", DEFAULT_KUBE_CA_FILE),
        help="CA of the Kubernetes API [CERT_SYNC_KUBE_CA_FILE]",
    )

    edge = sub.add_parser("edge", parents=[common], help="the hub Vault -> this edge's Vault")
    _edge_arguments(edge)
    follow = sub.add_parser(
        "follow", parents=[common], help="edge mode as a long-running follower of the hub (programs.cert_sync.follow)"
    )
    _edge_arguments(follow)
    _follow_arguments(follow)
    return parser


def _edge_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``edge`` and ``follow`` mode: this edge, the hub Vault and the AppRole."""
    parser.add_argument("--edge", default=env("CERT_SYNC_EDGE"), help="this edge's name [CERT_SYNC_EDGE]")
    parser.add_argument("--hub-addr", default=env("CERT_SYNC_HUB_ADDR"), help="hub Vault URL [CERT_SYNC_HUB_ADDR]")
    parser.add_argument(
        "--hub-ca-file",
        default=env("CERT_SYNC_HUB_CA_FILE"),
        help="PEM CA bundle for the hub Vault [CERT_SYNC_HUB_CA_FILE]",
    )
    parser.add_argument(
        "--hub-approle-mount",
        default=env("CERT_SYNC_HUB_APPROLE_MOUNT", DEFAULT_HUB_APPROLE_MOUNT),
        help=f"AppRole mount on the hub (default {DEFAULT_HUB_APPROLE_MOUNT}) [CERT_SYNC_HUB_APPROLE_MOUNT]",
    )
    parser.add_argument(
        "--hub-role-id-file",
        default=env("CERT_SYNC_HUB_ROLE_ID_FILE"),
        help="file with the AppRole role_id [CERT_SYNC_HUB_ROLE_ID_FILE]",
    )
    parser.add_argument(
        "--hub-secret-id-file",
        default=env("CERT_SYNC_HUB_SECRET_ID_FILE"),
        help="file with the AppRole secret_id [CERT_SYNC_HUB_SECRET_ID_FILE]",
    )
    parser.add_argument(
        "--hub-kv-mount",
        default=env("CERT_SYNC_HUB_KV_MOUNT", DEFAULT_KV_MOUNT),
        help=f"the hub's KV v2 mount (default {DEFAULT_KV_MOUNT}) [CERT_SYNC_HUB_KV_MOUNT]",
    )
    parser.add_argument(
        "--kv-path",
        default=env("CERT_SYNC_KV_PATH", DEFAULT_KV_PATH),
        help=f"where to store it locally (default {DEFAULT_KV_PATH}) [CERT_SYNC_KV_PATH]",
    )


def _follow_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``follow`` mode only (module docstring of :mod:`programs.cert_sync.follow`)."""
    parser.add_argument(
        "--poll",
        type=_interval,
        default=env("CERT_SYNC_POLL"),
        help="seconds between the starts of two polls of the hub [CERT_SYNC_POLL]",
    )
    parser.add_argument(
        "--max-failures",
        type=_passes,
        default=env("CERT_SYNC_MAX_FAILURES", "8"),
        help="exit after this many failed polls in a row (default 8) [CERT_SYNC_MAX_FAILURES]",
    )
    parser.add_argument(
        "--polls",
        type=_passes,
        default=env("CERT_SYNC_POLLS"),
        help="stop after this many polls (default: poll until SIGTERM) [CERT_SYNC_POLLS]",
    )
    parser.add_argument(
        "--hub-credential",
        default=env("CERT_SYNC_HUB_CREDENTIAL"),
        metavar="NAMESPACE/NAME",
        help="the Secret holding secret-id: read from and rotated through the Kubernetes API "
        "(else --hub-secret-id-file, never rotated) [CERT_SYNC_HUB_CREDENTIAL]",
    )
    parser.add_argument("--kube-api", default=env("CERT_SYNC_KUBE_API", DEFAULT_KUBE_API), help="[CERT_SYNC_KUBE_API]")
    parser.add_argument(
        "--kube-token-file",
        default=env("CERT_SYNC_KUBE_TOKEN_FILE", DEFAULT_KUBE_TOKEN_FILE),
        help="[CERT_SYNC_KUBE_TOKEN_FILE]",
    )
    parser.add_argument(
        "--kube-ca-file", default=env("CERT_SYNC_KUBE_CA_FILE", DEFAULT_KUBE_CA_FILE), help="[CERT_SYNC_KUBE_CA_FILE]"
    )


_REQUIRED = {
    "hub": (("vault_addr", "--vault-addr (VAULT_ADDR)"),),
    "edge": (
        ("vault_addr", "--vault-addr (VAULT_ADDR)"),
        ("edge", "--edge (CERT_SYNC_EDGE)"),
        ("hub_addr", "--hub-addr (CERT_SYNC_HUB_ADDR)"),
        ("hub_role_id_file", "--hub-role-id-file (CERT_SYNC_HUB_ROLE_ID_FILE)"),
        ("hub_secret_id_file", "--hub-secret-id-file (CERT_SYNC_HUB_SECRET_ID_FILE)"),
    ),
    "follow": (
        ("vault_addr", "--vault-addr (VAULT_ADDR)"),
        ("edge", "--edge (CERT_SYNC_EDGE)"),
        ("hub_addr", "--hub-addr (CERT_SYNC_HUB_ADDR)"),
        ("hub_role_id_file", "--hub-role-id-file (CERT_SYNC_HUB_ROLE_ID_FILE)"),
        ("poll", "--poll (CERT_SYNC_POLL)"),
    ),
}


def _listed(given: list[str] | None, variable: str) -> list[str]:
    """A repeatable flag's values, else its variable's (separated by spaces, commas or newlines)."""
    raw = given if given is not None else re.split(r"[\s,]+", env(variable, "") or "")
    return [text for text in raw if text.strip()]


def _trust_plan(args: argparse.Namespace) -> TrustPlan:
    """``--trust`` and ``--peer-ca``, checked against the ``--secret`` list (:class:`UsageError`)."""
    by_ref = {spec.ref: spec for spec in args.secrets}
    seen: dict[str, str] = {}
    for spec in args.secrets:
        if spec.kv_path in seen:
            raise UsageError(f"KV path {spec.kv_path} is given twice ({seen[spec.kv_path]} and {spec.ref})")
        seen[spec.kv_path] = spec.ref
    bundles: dict[str, list[str]] = {}
    for text in _listed(args.trust, "CERT_SYNC_TRUST"):
        member = parse_secret_spec(text, "--trust")
        if member.ref not in by_ref:
            raise UsageError(f"--trust {text!r}: {member.ref} is not a --secret (its published copy decides the trust)")
        if member.kv_path in seen:
            raise UsageError(f"--trust {text!r}: {member.kv_path} is the KV path of --secret {seen[member.kv_path]}")
        bundles.setdefault(member.kv_path, []).append(member.ref)
    peer_ca: dict[str, str] = {}
    for text in _listed(args.peer_ca, "CERT_SYNC_PEER_CA"):
        path, sep, bundle = text.strip().partition("=")
        if not sep or path not in seen or bundle not in bundles:
            raise UsageError(
                f"--peer-ca {text!r} must be KV_PATH=BUNDLE_PATH, KV_PATH of a --secret and BUNDLE_PATH of a --trust"
            )
        peer_ca[path] = bundle
    return TrustPlan(bundles, peer_ca, _dt.timedelta(seconds=args.trust_lead))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and check the command line (:class:`UsageError` on any problem)."""
    arguments = list(argv)
    mode_env = env("CERT_SYNC_MODE")
    if mode_env and not (arguments and arguments[0] in ("hub", "edge", "follow", "-h", "--help")):
        arguments.insert(0, mode_env)
    args = build_parser().parse_args(arguments)
    missing = [flag for name, flag in _REQUIRED[args.mode] if not getattr(args, name)]
    if args.mode == "follow" and not (args.hub_credential or args.hub_secret_id_file):
        missing.append("--hub-credential (CERT_SYNC_HUB_CREDENTIAL) or --hub-secret-id-file")
    if args.passes > 1 and args.interval is None:
        missing.append(f"--interval (CERT_SYNC_INTERVAL), needed with --passes {args.passes}")
    if missing:
        raise UsageError(f"missing {', '.join(missing)}")
    https_url(args.vault_addr, "--vault-addr")
    _check_kv_path(args.kv_mount, "--kv-mount")
    if args.mode == "hub":
        args.secrets = [parse_secret_spec(text) for text in _listed(args.secret, "CERT_SYNC_SECRETS")]
        if not args.secrets:
            raise UsageError("missing --secret NAMESPACE/NAME=KV_PATH (CERT_SYNC_SECRETS)")
        args.trust = _trust_plan(args)
        if args.index:
            taken = {spec.kv_path for spec in args.secrets} | set(args.trust.bundles)
            if _check_kv_path(args.index, "--index") in taken:
                raise UsageError(f"--index {args.index!r} is the KV path of a --secret or a --trust bundle")
        https_url(args.kube_api, "--kube-api")
    else:
        if not _DNS_LABEL.match(args.edge):
            raise UsageError(f"--edge {args.edge!r} is not a valid edge name (a DNS label)")
        https_url(args.hub_addr, "--hub-addr")
        _check_kv_path(args.hub_kv_mount, "--hub-kv-mount")
        _check_kv_path(args.kv_path, "--kv-path")
    if args.mode == "follow" and args.hub_credential:
        namespace, slash, name = args.hub_credential.partition("/")
        if not slash or not _DNS_LABEL.match(namespace) or not _DNS_SUBDOMAIN.match(name):
            raise UsageError(f"--hub-credential {args.hub_credential!r} must be NAMESPACE/NAME of a Secret")
        https_url(args.kube_api, "--kube-api")
    return args


def _describe(outcome: Outcome) -> str:
    parts = [f"written {p} (version {v})" for p, v in outcome.written]
    parts += [f"unchanged {p} (version {v})" for p, v in outcome.unchanged]
    return f"synced {len(outcome.written)}, unchanged {len(outcome.unchanged)} ({'; '.join(parts)})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the program; returns the exit code (see the module docstring)."""
    return run_program(PROG, EXIT_CODES, lambda: _run(parse_args(sys.argv[1:] if argv is None else argv)))


def _run(args: argparse.Namespace) -> int:
    if args.mode == "follow":
        from programs.cert_sync.follow import follow  # it imports this module

        return follow(args)
    sync = cmd_hub if args.mode == "hub" else cmd_edge
    started = time.monotonic()
    for index in range(args.passes):
        label = f"pass {index + 1} of {args.passes}: " if args.passes > 1 else ""
        if index:
            time.sleep(max(0.0, started + index * args.interval - time.monotonic()))
        try:
            outcome = sync(args)
        except PodProgramError as exc:
            raise type(exc)(f"{label}{exc}", exc.exit_code) from None
        print(f"{PROG}: {label}{_describe(outcome)}", flush=True)
    return 0
