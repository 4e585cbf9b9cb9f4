"""Initialise, unseal and hand over a Vault (HA Raft) cluster: the fedobs bootstrap Job.

Runs in production as a Kubernetes Job in the Vault namespace (each pod is reachable as
``https://vault-N.vault-internal:8200``). Standard library only (http.client + ssl + json): it ships
in a minimal image. Every request (to the peers and to the Kubernetes API) goes through
:mod:`programs.vault_http`: ``https://`` only (an ``http://`` peer is a usage error), TLS verified
against ``--ca-file`` (the system's CAs only without one), redirects never followed, bounded
answers, a timeout on every request.

What a run guarantees
=====================
1. Waits (deadline ``--timeout``) until every peer answers ``sys/seal-status``; an unreachable peer
   is reported with its URL.
2. ``sys/init`` is called at most once in the life of a cluster: only when NO peer is initialised
   and the state store holds no init result, and only on peer 0. The init result (unseal keys for
   ``shamir``, recovery keys for ``auto`` seals — exactly as Vault returned them: plaintext when no
   operator PGP keys are configured, PGP-encrypted otherwise) is written to the state store
   IMMEDIATELY after init, before anything else happens.
3. The root token is never persisted and never printed. It lives in memory, is used to create the
   admin auth path, and is revoked (``auth/token/revoke-self``) at the end of the run, also after a
   failure; the revocation is verified (``auth/token/lookup-self`` with it must answer 403). If the
   cluster is sealed at that point (PGP-encrypted keys, item 4) it cannot be revoked and is dropped
   unseen with the process (operators may revoke all root tokens after recovery). The one
   exception is ``--root-token-pgp-key``: then Vault only returns the token PGP-encrypted, the
   bootstrap cannot use it, it stores that ciphertext for the operators (``root_token_pgp``) and
   exits ``EXIT_OPERATOR_ACTION``.
4. Shamir: every sealed peer is unsealed with the stored plaintext keys; a follower gets keys only
   after it reports ``initialized: true`` (retry_join has fetched the challenge; earlier keys are
   discarded by Vault). PGP-encrypted keys: stops with ``EXIT_OPERATOR_ACTION`` naming the sealed
   peers. Auto seal: waits until the peers unseal themselves.
5. Waits for a leader and until ALL peers are Raft voters and autopilot reports every server healthy
   (``sys/storage/raft/configuration``, ``sys/storage/raft/autopilot/state``). Joined nodes are
   non-voters until autopilot promotes them.
6. First run (or ``--root-token-file``): enables ``userpass`` at ``--userpass-path``, writes the
   admin policy, creates the admin user with the password from ``--password-file``,
   ``token_policies=[admin policy]`` and a short token TTL, and verifies that a login works and
   carries the policy.
7. Re-run (already initialised): unseals sealed peers if plaintext keys are stored, logs in as the
   admin user, confirms the voters, applies ``--autopilot-*`` settings only if they differ, and
   changes nothing else (a changed policy file is NOT re-applied: after the hand-over the admin
   policy is Pulumi's to manage). Nothing is written to the state store. If the admin login fails and
   ``--rotate-admin-password true`` is given, the admin password is rotated from the previous one
   (below). Otherwise, if no ``--root-token-file`` was given, exits ``EXIT_ADMIN_LOGIN`` pointing at
   the ``generate-root`` recovery below. The admin policy must allow reading
   ``sys/storage/raft/configuration`` and ``sys/storage/raft/autopilot/state`` (and writing
   ``sys/storage/raft/autopilot/configuration`` when ``--autopilot-*`` flags are used, and
   ``auth/<userpass path>/users/<user>/password`` for the rotation).
8. On failure: exit code != 0 and ONE line on stderr saying why. Progress goes to stdout. No key,
   password or token is ever written to stdout/stderr.
9. The state record holds the init result and nothing else: never the root token (item 3), never
   an admin password (see 'Admin password rotation' and 'Upgrade').
10. With ``--role-binding``/``--job-name``/``--job-uid`` (the Job passes them from its Pod's labels),
    the run's first request, before any file or Vault is touched beyond the local checks, makes that
    RoleBinding (its own grant) a dependent of its Job (:meth:`KubernetesSecretStateStore.hand_grant_to_job`),
    so the garbage collector deletes the grant with the Job; if that is refused the run stops
    (exit 1) before it talks to Vault.

Shamir unseal keys are stored encrypted to the operators' ``--pgp-key``s (one per share). Without them
the run refuses to start (usage error, before anything is contacted) unless
``--insecure-plaintext-unseal-keys-for-development true`` is given: then the keys are stored in plain
text, which only a development cluster may do (the stack passes this flag only for
``fedobs:vault.insecurePlaintextUnsealKeysForDevelopment`` on a ``fedobs:developmentMode`` stack, and
the policy pack's ``vault-unseal-keys-encrypted`` refuses it anywhere else).

Admin password rotation (``--rotate-admin-password true``)
========================================================
The password files are the source of truth: Pulumi keeps the current generation's password and the
previous one (``--password-file``, ``--previous-password-file``; components/vault.py keeps one random
password per generation parity, so the previous generation's is still in its state) and re-runs the Job
when the current one changes. When the login with the current password is refused (4xx), the run logs
in with the previous one, sets the current one (``POST auth/<userpass path>/users/<user>/password``
with the old login's token), logs in with it (the login must carry the admin policy) and, if that
login fails, sets the previous one again. Nothing is recorded anywhere but in Vault, so nothing can get
out of step: a run that died after Vault took the new password is followed by one whose login with it
works; one that died before, by one that rotates again. When neither password logs in (two
generations bumped without a successful run between them) or rotation is not enabled:
``EXIT_ADMIN_LOGIN``, the ``generate-root`` recovery. Rotation is off by default because it turns a
wrong password file into a password change: enable it where the password files are managed (the Job).

Why the previous password comes from Pulumi and is not stored by the bootstrap: the record holding the
unseal or recovery keys is what an attacker of the cluster wants most; a password beside the keys
widens what one leak of that Secret gives, and a second Secret for it would be one more long-lived
copy of a credential Pulumi already holds (encrypted, in its state). Supplied by Pulumi, rotation
stays unattended, works when the keys are PGP-encrypted (it did not before), and the cluster holds
only what the Job mounts: the current password and, until the next rotation, the previous one, which
stops working the moment the rotation succeeds. The passwords are never printed.

Upgrade: a record written by an earlier version may hold ``admin_password_applied`` (and
``admin_password_pending``). This version reads them only as further rotation candidates (so a
generation bumped together with the upgrade still rotates) and removes them from the record
(compare-and-swap) once the admin login works without them; a record without them is never written.

Exit codes: 0 ok; 1 failure (unreachable peer, HTTP error such as 403, timeout, store problem);
2 usage/config error; 3 operator action required (PGP-encrypted unseal keys and sealed peers, or a
PGP-encrypted root token); 4 admin login failed and no root token (run the generate-root recovery).

Recovery when the admin login is lost (exit 4): ``vault operator generate-root -init`` (note the
OTP), each key holder runs ``vault operator generate-root`` with their unseal/recovery key, decode the
encoded token with ``vault operator generate-root -decode=<encoded> -otp=<otp>``, write it to a file
readable only by the Job and re-run with ``--root-token-file FILE``: the admin auth path is
re-created with the current password and that root token is revoked at the end of the run.
(HashiCorp Vault serves the unauthenticated ``sys/generate-root/*`` endpoints; OpenBao >= 2.5.3 only
with the listener option ``disable_unauthed_generate_root_endpoints = false``.)

State stores (``--state``): ``file:PATH`` (:class:`FileStateStore`, mode 0600, atomic temp+rename)
or ``kubernetes-secret:NAMESPACE/NAME`` (:class:`KubernetesSecretStateStore`, in-cluster API access
with the pod's service-account token; needs get/create/update on that Secret). A store never replaces
a record blindly: the init result is created once; the upgrade's removal is a compare-and-swap of the
whole record.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import json
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Literal, Protocol

from programs.errors import ExitCodes, PodProgramError, UsageError
from programs.vault_http import (
    HttpFailure,
    HttpReply,
    PinnedHttps,
    ServerUnreachable,
    VaultHttp,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_OPERATOR_ACTION = 3
EXIT_ADMIN_LOGIN = 4

RECORD_FORMAT = "fedobs.vault-bootstrap/v1"
#: How long ``sys/init`` may take, beyond the per-request timeout: its answer is the only copy of the
#: keys, so giving up early would leave an initialised cluster nobody can unseal. The server creates
#: the keyring and writes it through Raft before answering; the bench measured over 10 s with the
#: server's default Raft timings on this machine (``make bench``, bootstrap ``server_defaults``).
INIT_TIMEOUT_SECONDS = 120.0
#: Record fields in which versions before this one kept the admin password (applied, and pending during
#: a rotation). This version never writes them: it reads them once as rotation candidates and removes them
#: from the record once the admin login works (see 'Upgrade').
LEGACY_PASSWORD_FIELDS = ("admin_password_applied", "admin_password_pending")
GENERATE_ROOT_HINT = (
    "recover with `vault operator generate-root` and re-run with --root-token-file "
    "(see programs/vault_bootstrap/bootstrap.py, 'Recovery')"
)

SealKind = Literal["shamir", "auto"]
Json = dict[str, Any]


# ------------------------------------------------------------------------------------------------
# errors: the bootstrap's own failure kinds; EXIT_CODES maps them and the shared ones to exit codes
# ------------------------------------------------------------------------------------------------
class BootstrapError(PodProgramError):
    """A failure with a one-line, secret-free reason (exit code: :data:`EXIT_CODES`)."""


class OperatorActionRequired(BootstrapError):
    """Operators must act (PGP-encrypted keys and sealed peers, a PGP-encrypted root token)."""


class AdminLoginFailed(BootstrapError):
    """The admin login failed and no root token is available."""


class WaitTimeout(BootstrapError):
    """A wait ran past ``--timeout``."""


EXIT_CODES: ExitCodes = {
    UsageError: EXIT_USAGE,
    OperatorActionRequired: EXIT_OPERATOR_ACTION,
    AdminLoginFailed: EXIT_ADMIN_LOGIN,
    BootstrapError: EXIT_FAILURE,
    HttpFailure: EXIT_FAILURE,  # a peer unreachable, an HTTP error such as 403 (programs.vault_http)
}
"""Each failure's exit code (the module docstring)."""


# ------------------------------------------------------------------------------------------------
# peers (each one a programs.vault_http.VaultHttp)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peer:
    """One Vault server: its API URL and, optionally, the TLS server name to verify (SNI)."""

    url: str
    server_name: str | None = None


ClientFactory = Callable[..., VaultHttp]
"""Builds a peer's client: called like :class:`VaultHttp` (``url, ca_file, timeout=, server_name=,
flag=, ca_flag=``); tests pass a subclass that records or answers requests."""


# ------------------------------------------------------------------------------------------------
# state stores
# ------------------------------------------------------------------------------------------------
class StateStore(Protocol):
    """Where the init result lives. ``save`` must never silently replace a different record."""

    def describe(self) -> str: ...

    def preflight(self) -> None:
        """Raise ``BootstrapError`` if the store cannot be read or written (checked BEFORE init)."""

    def load(self) -> Json | None: ...

    def save(self, record: Json) -> None: ...

    def replace(self, expected: Json, record: Json) -> None:
        """Compare-and-swap: store ``record`` only if the store still holds ``expected`` (no-op if it
        already holds ``record``); otherwise raise ``BootstrapError`` and leave the store alone."""


class FileStateStore:
    """A JSON file, mode 0600, replaced atomically (temp file in the same directory + rename)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"file {self.path}"

    def preflight(self) -> None:
        parent = self.path.parent
        if not parent.is_dir():
            raise BootstrapError(f"state store directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise BootstrapError(f"state store directory {parent} is not writable")
        if self.path.exists() and not os.access(self.path, os.R_OK):
            raise BootstrapError(f"state store {self.path} is not readable")

    def load(self) -> Json | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BootstrapError(f"cannot read state store {self.path}: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BootstrapError(f"state store {self.path} is not valid JSON") from exc
        if not isinstance(data, dict):
            raise BootstrapError(f"state store {self.path} does not hold a JSON object")
        return data

    def save(self, record: Json) -> None:
        existing = self.load()
        if existing == record:
            return
        if existing is not None:
            raise BootstrapError(f"state store {self.path} already holds a different init result; not replacing it")
        self._write(record)

    def replace(self, expected: Json, record: Json) -> None:
        existing = self.load()
        if existing == record:
            return
        if existing != expected:
            raise BootstrapError(f"state store {self.path} changed during the run; not replacing it")
        self._write(record)

    def _write(self, record: Json) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubernetesSecretStateStore:
    """A Secret (``data[key]`` = the JSON record) read and written through the Kubernetes API.

    In-cluster only: API server from ``KUBERNETES_SERVICE_HOST``/``_PORT``, bearer token and CA from
    the pod's service-account mount (the token is re-read on every call: projected tokens rotate).
    Creates the Secret with POST (409 -> refuses: someone else wrote one) and updates it with PUT
    carrying the ``resourceVersion`` it read (optimistic concurrency; ``replace`` is a compare-and-swap
    on top of that). Needs RBAC get + create + update on that one Secret. ``preflight`` does a GET and
    a server-side dry-run create.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        key: str = "init.json",
        api_url: str | None = None,
        token_file: str | os.PathLike[str] = SA_DIR / "token",
        ca_file: str | os.PathLike[str] | None = SA_DIR / "ca.crt",
        timeout: float = 10.0,
    ) -> None:
        if api_url is None:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise UsageError("KUBERNETES_SERVICE_HOST is not set: the kubernetes-secret store works in a pod only")
            api_url = f"https://{f'[{host}]' if ':' in host else host}:{port}"
        self.namespace, self.name, self.key = namespace, name, key
        self.api_url = api_url.rstrip("/")
        self.token_file = Path(token_file)
        self.ca_file = str(ca_file) if ca_file else None
        self.timeout = timeout
        self._resource_version: str | None = None

    def describe(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    @cached_property
    def _api(self) -> PinnedHttps:
        """The shared HTTPS policy: https only, pinned CA, no redirects, capped (made at first use)."""
        return PinnedHttps(
            self.api_url, self.ca_file, timeout=self.timeout, label="Kubernetes API", flag="Kubernetes API URL"
        )

    def _request(
        self, method: str, path: str, body: Json | None = None, content_type: str = "application/json"
    ) -> tuple[int, Json]:
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise BootstrapError(f"cannot read service-account token {self.token_file}: {exc.strerror}") from exc
        headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
        try:
            reply = self._api.send(method, path, headers=headers, body=body)
        except HttpFailure as exc:
            raise BootstrapError(f"Kubernetes API {self.api_url} unreachable: {exc}") from None
        return reply.status, reply.body

    def _secret_path(self, name: str | None = None) -> str:
        base = f"/api/v1/namespaces/{urllib.parse.quote(self.namespace)}/secrets"
        return f"{base}/{urllib.parse.quote(name)}" if name else base

    def _fail(self, verb: str, status: int, body: Json) -> BootstrapError:
        return BootstrapError(f"{verb} {self.describe()} answered {status}: {body.get('message', '')}")

    def _manifest(self, record: Json) -> Json:
        encoded = base64.b64encode(json.dumps(record, sort_keys=True).encode()).decode()
        meta: Json = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/managed-by": "fedobs-vault-bootstrap"},
        }
        if self._resource_version:
            meta["resourceVersion"] = self._resource_version
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": meta,
            "data": {self.key: encoded},
        }

    def preflight(self) -> None:
        status, body = self._request("GET", self._secret_path(self.name))
        if status == 404:
            status, body = self._request("POST", self._secret_path() + "?dryRun=All", self._manifest({}))
            if status not in (200, 201):
                raise self._fail("dry-run create of", status, body)
        elif status != 200:
            raise self._fail("GET", status, body)

    def load(self) -> Json | None:
        status, body = self._request("GET", self._secret_path(self.name))
        if status == 404:
            self._resource_version = None
            return None
        if status != 200:
            raise self._fail("GET", status, body)
        self._resource_version = str(body.get("metadata", {}).get("resourceVersion") or "") or None
        encoded = (body.get("data") or {}).get(self.key)
        if not encoded:
            return None
        try:
            data = json.loads(base64.b64decode(encoded))
        except ValueError as exc:
            raise BootstrapError(f"{self.describe()} key {self.key} is not base64 JSON") from exc
        return data if isinstance(data, dict) else None

    def save(self, record: Json) -> None:
        existing = self.load()
        if existing == record:
            return
        if existing is not None:
            raise BootstrapError(f"{self.describe()} already holds a different init result; not replacing it")
        if self._resource_version is None:
            status, body = self._request("POST", self._secret_path(), self._manifest(record))
            if status == 409:
                raise BootstrapError(f"{self.describe()} was created concurrently; not replacing it")
            if status not in (200, 201):
                raise self._fail("create", status, body)
        else:
            status, body = self._request("PUT", self._secret_path(self.name), self._manifest(record))
            if status not in (200, 201):
                raise self._fail("update", status, body)
        self._resource_version = str(body.get("metadata", {}).get("resourceVersion") or "") or None

    def replace(self, expected: Json, record: Json) -> None:
        existing = self.load()  # also takes the resourceVersion the PUT below is conditional on
        if existing == record:
            return
        if existing != expected or self._resource_version is None:
            raise BootstrapError(f"{self.describe()} changed during the run; not replacing it")
        status, body = self._request("PUT", self._secret_path(self.name), self._manifest(record))
        if status == 409:
            raise BootstrapError(f"{self.describe()} was modified concurrently; not replacing it")
        if status not in (200, 201):
            raise self._fail("update", status, body)
        self._resource_version = str(body.get("metadata", {}).get("resourceVersion") or "") or None

    def hand_grant_to_job(self, grant: JobGrant) -> None:
        """Make the RoleBinding that grants this run its access a dependent of the run's Job.

        A JSON merge patch of ``metadata.ownerReferences`` alone: Kubernetes lets a subject that may
        ``patch`` a RoleBinding change only those garbage-collection fields without the escalation check
        it applies to a binding's other fields (kubernetes/kubernetes
        pkg/registry/rbac/rolebinding/policybased/storage.go, ``IsOnlyMutatingGCFields``). From then on
        the garbage collector deletes the binding when the Job is deleted (the Job's
        ``ttlSecondsAfterFinished``: components/vault.py); ``blockOwnerDeletion`` stays unset, which needs
        no permission on the Job. Idempotent: every attempt of the Job sets the same reference."""
        path = (
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{urllib.parse.quote(self.namespace)}"
            f"/rolebindings/{urllib.parse.quote(grant.role_binding)}"
        )
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": grant.job_name, "uid": grant.job_uid}
        body = {"metadata": {"ownerReferences": [owner]}}
        status, reply = self._request("PATCH", path, body, content_type="application/merge-patch+json")
        if status != 200:
            where = f"RoleBinding {self.namespace}/{grant.role_binding}"
            raise BootstrapError(
                f"handing {where} to Job {grant.job_name} answered {status}: {reply.get('message', '')}"
            )


def store_from_spec(spec: str) -> StateStore:
    """``file:PATH`` or ``kubernetes-secret:NAMESPACE/NAME``."""
    kind, _, rest = spec.partition(":")
    if kind == "file" and rest:
        return FileStateStore(rest)
    if kind == "kubernetes-secret" and rest.count("/") == 1 and all(rest.split("/")):
        ns, name = rest.split("/")
        return KubernetesSecretStateStore(ns, name)
    raise UsageError(f"--state {spec!r}: use file:PATH or kubernetes-secret:NAMESPACE/NAME")


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
AUTOPILOT_DURATIONS = (
    "server_stabilization_time",
    "last_contact_threshold",
    "dead_server_last_contact_threshold",
)
AUTOPILOT_INTS = ("min_quorum", "max_trailing_logs")
AUTOPILOT_BOOLS = ("cleanup_dead_servers",)


@dataclass(frozen=True)
class JobGrant:
    """The RoleBinding that grants this run its Kubernetes access, and the Job that owns it once the run
    has started (:meth:`KubernetesSecretStateStore.hand_grant_to_job`). In the Job both names and the
    uid come from the Pod's own labels (the downward API; components/vault.py)."""

    role_binding: str
    job_name: str
    job_uid: str


@dataclass(frozen=True)
class Config:
    """Everything a run needs; built by ``__main__`` from flags/env, or directly by tests."""

    peers: tuple[Peer, ...]
    password_file: str
    admin_policy_file: str
    ca_file: str | None = None
    seal: SealKind = "shamir"
    key_shares: int = 5
    key_threshold: int = 3
    pgp_keys: tuple[str, ...] = ()
    root_token_pgp_key: str | None = None
    userpass_path: str = "userpass-pulumi"
    username: str = "pulumi"
    admin_policy_name: str = "pulumi-admin"
    admin_token_ttl: str = "20m"
    admin_token_max_ttl: str = "1h"
    root_token_file: str | None = None
    rotate_admin_password: bool = False
    #: The previous generation's admin password (rotation logs in with it); optional.
    previous_password_file: str | None = None
    #: The grant to hand to this run's Job (only with the kubernetes-secret store).
    job_grant: JobGrant | None = None
    #: Development only: a Shamir seal without ``pgp_keys`` (the unseal keys stored in plain text).
    plaintext_unseal_keys: bool = False
    autopilot: Mapping[str, str | int | bool] = field(default_factory=dict)
    timeout: float = 600.0
    request_timeout: float = 10.0
    poll_interval: float = 0.5

    def validate(self) -> None:
        if not self.peers:
            raise UsageError("at least one peer URL is required")
        if not 1 <= self.key_threshold <= self.key_shares:
            raise UsageError("need 1 <= key threshold <= key shares")
        if self.key_shares > 1 and self.key_threshold < 2 and self.seal == "shamir":
            raise UsageError("a Shamir threshold of 1 with several shares is not allowed by Vault")
        if self.seal == "shamir" and not self.pgp_keys and not self.plaintext_unseal_keys:
            raise UsageError(
                "a Shamir seal needs --pgp-key (one per key share): the unseal keys are stored encrypted to "
                "them; only a development cluster may pass --insecure-plaintext-unseal-keys-for-development true"
            )
        if self.pgp_keys and self.plaintext_unseal_keys:
            raise UsageError("--pgp-key and --insecure-plaintext-unseal-keys-for-development exclude each other")
        if self.pgp_keys and len(self.pgp_keys) != self.key_shares:
            raise UsageError(f"{len(self.pgp_keys)} PGP keys given for {self.key_shares} key shares")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", self.userpass_path):
            raise UsageError(f"invalid userpass mount path {self.userpass_path!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.@-]+", self.username):
            raise UsageError(f"invalid admin username {self.username!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.admin_policy_name) or self.admin_policy_name in (
            "root",
            "default",
        ):
            raise UsageError(f"invalid admin policy name {self.admin_policy_name!r}")
        grant = self.job_grant
        if grant is not None and not all(
            re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) for name in (grant.role_binding, grant.job_name)
        ):
            raise UsageError(f"invalid RoleBinding or Job name {grant.role_binding!r}, {grant.job_name!r}")
        if grant is not None and not re.fullmatch(r"[0-9a-f-]{8,64}", grant.job_uid):
            raise UsageError(f"invalid Job uid {grant.job_uid!r}")
        for key in self.autopilot:
            if key not in (*AUTOPILOT_DURATIONS, *AUTOPILOT_INTS, *AUTOPILOT_BOOLS):
                raise UsageError(f"unknown autopilot setting {key!r}")


def parse_duration(value: str | int | float) -> float:
    """Seconds in a Go duration string (``1m30s``, ``500ms``) or a plain number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise UsageError(f"invalid duration {value!r}")
    return sum(float(n) * units[u] for n, u in parts)


def read_secret_file(path: str, what: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    if not value:
        raise UsageError(f"{what} file {path} is empty")
    return value


# ------------------------------------------------------------------------------------------------
# the bootstrap
# ------------------------------------------------------------------------------------------------
def _say(message: str) -> None:
    print(f"vault-bootstrap: {message}", flush=True)


class Bootstrap:
    """One bootstrap run. ``run()`` returns normally on success and raises ``BootstrapError`` otherwise."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        *,
        client_factory: ClientFactory = VaultHttp,
        log: Callable[[str], None] = _say,
    ) -> None:
        config.validate()
        self.cfg = config
        self.store = store
        self.log = log
        self.clients = [
            client_factory(
                p.url,
                config.ca_file,
                timeout=config.request_timeout,
                server_name=p.server_name,
                flag="--peer",
                ca_flag="--ca-file",
            )
            for p in config.peers
        ]
        self.initialized_now = False
        self.record: Json | None = None  # the state record as last loaded or written

    # -- waiting ------------------------------------------------------------------------------
    def _wait(self, what: str, probe: Callable[[], Any]) -> Any:
        """Poll ``probe`` until truthy; a failed request (:class:`HttpFailure`) counts as 'not yet'."""
        deadline = time.monotonic() + self.cfg.timeout
        last: HttpFailure | None = None
        while True:
            try:
                value = probe()
            except HttpFailure as exc:
                last, value = exc, None
            if value:
                return value
            if time.monotonic() >= deadline:
                suffix = f" (last error: {last})" if last else ""
                raise WaitTimeout(f"timed out after {self.cfg.timeout:g}s waiting for {what}{suffix}")
            time.sleep(self.cfg.poll_interval)

    def seal_status(self, c: VaultHttp) -> Json:
        return c.call("GET", "sys/seal-status")

    def _status_field(self, c: VaultHttp, key: str, want: bool) -> bool:
        return bool(self.seal_status(c).get(key)) == want

    def _wait_answering(self) -> list[Json]:
        """Every peer's seal status; ``ServerUnreachable`` naming the first peer silent past the deadline."""
        statuses: list[Json] = []
        for c in self.clients:
            deadline = time.monotonic() + self.cfg.timeout
            while True:
                try:
                    statuses.append(self.seal_status(c))
                    break
                except HttpFailure as exc:
                    if time.monotonic() >= deadline:
                        raise ServerUnreachable(
                            f"peer {c.url} is unreachable: no answer to sys/seal-status within "
                            f"{self.cfg.timeout:g}s ({exc})"
                        ) from None
                time.sleep(self.cfg.poll_interval)
        return statuses

    # -- init / unseal ------------------------------------------------------------------------
    def _init(self) -> tuple[Json, str | None]:
        c = self.clients[0]
        cfg = self.cfg
        body: Json
        if cfg.seal == "shamir":
            body = {"secret_shares": cfg.key_shares, "secret_threshold": cfg.key_threshold}
            if cfg.pgp_keys:
                body["pgp_keys"] = list(cfg.pgp_keys)
        else:
            body = {"recovery_shares": cfg.key_shares, "recovery_threshold": cfg.key_threshold}
            if cfg.pgp_keys:
                body["recovery_pgp_keys"] = list(cfg.pgp_keys)
        if cfg.root_token_pgp_key:
            body["root_token_pgp_key"] = cfg.root_token_pgp_key
        self.log(f"initialising {c.url} ({cfg.seal}, {cfg.key_shares} shares, threshold {cfg.key_threshold})")
        wait = max(cfg.request_timeout, min(INIT_TIMEOUT_SECONDS, cfg.timeout))
        try:
            resp = c.call("PUT", "sys/init", body=body, timeout=wait)
        except ServerUnreachable as exc:
            raise ServerUnreachable(
                f"{exc}; the server may have initialised without its answer (the only copy of the "
                f"{'unseal' if cfg.seal == 'shamir' else 'recovery'} keys) reaching this run: if {c.url} now "
                "reports initialized while the state store holds no record, the cluster cannot be unsealed "
                "from it (docs/vault.md, 'Bootstrap')"
            ) from None
        result = {k: v for k, v in resp.items() if k != "root_token"}
        record: Json = {
            "format": RECORD_FORMAT,
            "seal": cfg.seal,
            "shares": cfg.key_shares,
            "threshold": cfg.key_threshold,
            "pgp_encrypted": bool(cfg.pgp_keys),
            "initialized_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "init_response": result,
        }
        root = resp.get("root_token")
        if cfg.root_token_pgp_key:
            record["root_token_pgp"] = root  # PGP ciphertext only the operator can open
            root = None
        return record, root if isinstance(root, str) and root else None

    def _unseal_keys(self, record: Json | None) -> list[str] | None:
        """Plaintext keys to unseal with; None if there are none (no record, PGP, auto seal)."""
        if record is None or record.get("seal") != "shamir" or record.get("pgp_encrypted"):
            return None
        result = record.get("init_response") or {}
        keys = result.get("keys_base64") or result.get("keys") or []
        return [str(k) for k in keys] or None

    def _unseal_peer(self, c: VaultHttp, keys: list[str]) -> None:
        """Submit keys (after resetting a half-done attempt) until unsealed; then wait (deadline)."""
        status = self.seal_status(c)
        if not status.get("sealed"):
            return
        if status.get("progress"):
            c.call("PUT", "sys/unseal", body={"reset": True})
        for key in keys:
            resp = c.call("PUT", "sys/unseal", body={"key": key})
            if not resp.get("sealed", True):
                break
        self._wait(f"{c.url} to be unsealed", partial(self._status_field, c, "sealed", False))
        self.log(f"unsealed {c.url}")

    def _unseal_all(self, record: Json | None, *, only_initialized: bool) -> None:
        """Unseal sealed peers (Shamir). With ``only_initialized`` skip peers not yet initialised."""
        keys = self._unseal_keys(record)
        for c in self.clients:
            status = self.seal_status(c)
            if not status.get("initialized"):
                if only_initialized:
                    continue
                self._wait(
                    f"{c.url} to report initialized: true (retry_join fetched the challenge)",
                    partial(self._status_field, c, "initialized", True),
                )
                status = self.seal_status(c)
            if not status.get("sealed"):
                continue
            if self.cfg.seal == "auto" or (record or {}).get("seal") == "auto":
                self._wait(f"{c.url} to auto-unseal", partial(self._status_field, c, "sealed", False))
                continue
            if keys is None:
                sealed = [x.url for x in self.clients if self.seal_status(x).get("sealed")]
                why = (
                    "the unseal keys in the store are PGP-encrypted"
                    if record and record.get("pgp_encrypted")
                    else f"{self.store.describe()} holds no plaintext unseal keys"
                )
                raise OperatorActionRequired(
                    f"{why}: operators must unseal {', '.join(sealed)}; then re-run"
                    + (" with --root-token-file (generate-root)" if self.initialized_now else "")
                )
            self._unseal_peer(c, keys)

    # -- cluster state --------------------------------------------------------------------------
    def find_active(self) -> VaultHttp | None:
        """The peer that says it is the active node right now, or None (no waiting)."""
        for c in self.clients:
            try:
                resp = c.raw("GET", "sys/leader")
            except HttpFailure:
                continue
            if resp.status == 200 and resp.body.get("is_self"):
                return c
        return None

    def active_client(self) -> VaultHttp:
        """The active node among the peers (waits, deadline)."""
        found: VaultHttp = self._wait("an active (leader) node among the peers", self.find_active)
        return found

    def _voters_ready(self, token: str) -> bool:
        active = self.find_active()
        if active is None:
            return False
        config = active.call("GET", "sys/storage/raft/configuration", token=token)
        servers = (config.get("data") or {}).get("config", {}).get("servers") or []
        voters = [s for s in servers if s.get("voter")]
        if len(voters) < len(self.clients) or len(voters) != len(servers):
            return False
        state = active.call("GET", "sys/storage/raft/autopilot/state", token=token).get("data") or {}
        members = (state.get("servers") or {}).values()
        return bool(state.get("healthy")) and all(
            m.get("healthy") and m.get("status") in ("voter", "leader") for m in members
        )

    def wait_voters(self, token: str) -> None:
        """Wait until every peer is a healthy voter; a 403 fails at once, other errors are retried."""
        what = f"all {len(self.clients)} peers to be healthy Raft voters (autopilot promotes joined nodes)"
        deadline = time.monotonic() + self.cfg.timeout
        last: HttpFailure | None = None
        while True:
            try:
                if self._voters_ready(token):
                    break
            except HttpFailure as exc:
                if exc.status == 403:
                    raise
                last = exc
            if time.monotonic() >= deadline:
                suffix = f" (last error: {last})" if last else ""
                raise WaitTimeout(f"timed out after {self.cfg.timeout:g}s waiting for {what}{suffix}")
            time.sleep(self.cfg.poll_interval)
        self.log(f"{len(self.clients)} voters, autopilot healthy")

    def apply_autopilot(self, token: str) -> None:
        """Write the requested autopilot settings if (and only if) they differ from the current ones."""
        if not self.cfg.autopilot:
            return
        active = self.active_client()
        current = active.call("GET", "sys/storage/raft/autopilot/configuration", token=token).get("data") or {}
        changes: Json = {}
        for key, want in self.cfg.autopilot.items():
            have = current.get(key)
            if key in AUTOPILOT_DURATIONS:
                same = have is not None and parse_duration(str(have)) == parse_duration(want)
            else:
                same = have == want
            if not same:
                changes[key] = want
        if changes:
            active.call("POST", "sys/storage/raft/autopilot/configuration", token=token, body=changes)
            self.log(f"autopilot configuration updated: {', '.join(sorted(changes))}")

    # -- admin auth path ------------------------------------------------------------------------
    def admin_login(self) -> str | None:
        """Log in as the admin user with the password file; the token, or None if refused."""
        return self._login(read_secret_file(self.cfg.password_file, "admin password"))

    def _login(self, password: str) -> str | None:
        """Log in as the admin user; the token, or None if the login is refused (4xx; 5xx is retried)."""
        path = f"auth/{self.cfg.userpass_path}/login/{self.cfg.username}"

        def attempt() -> HttpReply | None:
            resp = self.active_client().raw("POST", path, body={"password": password})
            return None if resp.status >= 500 or resp.status == 429 else resp  # 5xx: leader changing

        resp: HttpReply = self._wait(f"an answer to the admin login at {path}", attempt)
        if resp.status != 200:
            return None
        auth = resp.body.get("auth") or {}
        token = auth.get("client_token")
        if not isinstance(token, str) or not token:
            return None
        if self.cfg.admin_policy_name not in (auth.get("token_policies") or auth.get("policies") or []):
            raise BootstrapError(f"admin login works but its token lacks policy {self.cfg.admin_policy_name!r}")
        return token

    def configure_admin(self, root: str) -> str:
        """Enable userpass, write the admin policy and user (idempotent), verify a login; the password."""
        cfg = self.cfg
        policy = Path(cfg.admin_policy_file).read_text()  # exact text (checked non-empty at start)
        password = read_secret_file(cfg.password_file, "admin password")
        c = self.active_client()
        mounts = c.call("GET", "sys/auth", token=root)
        mounts = mounts.get("data") or mounts
        mount = mounts.get(f"{cfg.userpass_path}/")
        if mount is None:
            c.call(
                "POST",
                f"sys/auth/{cfg.userpass_path}",
                token=root,
                body={"type": "userpass", "description": "fedobs: Pulumi admin login (vault-bootstrap)"},
            )
            self.log(f"enabled userpass at auth/{cfg.userpass_path}")
        elif mount.get("type") != "userpass":
            raise BootstrapError(f"auth/{cfg.userpass_path} is a {mount.get('type')} mount, not userpass")
        c.call("PUT", f"sys/policies/acl/{cfg.admin_policy_name}", token=root, body={"policy": policy})
        c.call(
            "POST",
            f"auth/{cfg.userpass_path}/users/{cfg.username}",
            token=root,
            body={
                "password": password,
                "token_policies": [cfg.admin_policy_name],
                "token_ttl": cfg.admin_token_ttl,
                "token_max_ttl": cfg.admin_token_max_ttl,
            },
        )
        self.log(f"admin user {cfg.username!r} with policy {cfg.admin_policy_name!r} written")
        token = self._login(password)
        if token is None:
            raise BootstrapError(
                f"login as {cfg.username!r} at auth/{cfg.userpass_path} failed right after creating it"
            )
        self.revoke(token, "admin")
        self.log("admin login verified")
        return password

    # -- admin password rotation (see the module docstring) ----------------------------------------
    def _replace_record(self, record: Json) -> None:
        assert self.record is not None
        self.store.replace(self.record, record)
        self.record = record

    def drop_legacy_passwords(self) -> None:
        """Upgrade: take the admin password fields an earlier version wrote out of the record (no write
        when there are none). Called only once the admin login works without them."""
        record = self.record
        if record is None or not any(k in record for k in LEGACY_PASSWORD_FIELDS):
            return
        self._replace_record({k: v for k, v in record.items() if k not in LEGACY_PASSWORD_FIELDS})
        self.log(f"removed the admin password an earlier version kept in {self.store.describe()}")

    def _rotation_candidates(self, new: str) -> list[str]:
        """Passwords Vault may still accept: the previous generation's (``--previous-password-file``),
        then any an earlier version left in the record (upgrade)."""
        found: list[Any] = []
        if self.cfg.previous_password_file:
            found.append(read_secret_file(self.cfg.previous_password_file, "previous admin password"))
        record = self.record or {}
        found += [record.get(field) for field in LEGACY_PASSWORD_FIELDS]
        return list(dict.fromkeys(p for p in found if isinstance(p, str) and p and p != new))

    def rotate_admin_password(self, new: str) -> str | None:
        """Move the admin user to ``new`` (the password file's), logging in with a previous password.

        Returns an admin token obtained with the NEW password, or None if no previous password logs in
        (the caller then exits ``EXIT_ADMIN_LOGIN``). Nothing is written anywhere but Vault: a run that
        dies after Vault took ``new`` is followed by one that logs in with it; one that dies before, by
        one that rotates again. When Vault refuses the change (4xx) the old password keeps working; when
        the login with ``new`` fails after the change, the old one is set again."""
        cfg = self.cfg
        old_token: str | None = None
        current = ""
        for candidate in self._rotation_candidates(new):
            old_token = self._login(candidate)
            if old_token is not None:
                current = candidate
                break
        if old_token is None:
            return None
        path = f"auth/{cfg.userpass_path}/users/{cfg.username}/password"
        try:
            self.log(f"rotating the password of admin user {cfg.username!r} at auth/{cfg.userpass_path}")
            self.active_client().call("POST", path, token=old_token, body={"password": new})
            token = self._login(new)
            if token is None:
                self._roll_back(path, old_token, current)
                raise BootstrapError(
                    f"the new admin password was set at {path} but a login with it failed; rolled back to "
                    "the previous password"
                )
            self.log("admin password rotated and verified")
            return token
        finally:
            with contextlib.suppress(PodProgramError):
                self.revoke(old_token, "admin")

    def _roll_back(self, path: str, old_token: str, current: str) -> None:
        """Put the previous password back and check that it logs in again."""
        self.active_client().call("POST", path, token=old_token, body={"password": current})
        check = self._login(current)
        if check is None:
            raise BootstrapError(f"rolling back {path} failed: the previous admin password does not log in")
        with contextlib.suppress(PodProgramError):
            self.revoke(check, "admin")

    def _admin_login_failed(self) -> AdminLoginFailed:
        cfg = self.cfg
        where = f"admin login as {cfg.username!r} at auth/{cfg.userpass_path} failed"
        if not cfg.rotate_admin_password:
            why = ""
        elif not self._rotation_candidates(read_secret_file(cfg.password_file, "admin password")):
            why = " (no previous admin password to rotate from: --previous-password-file)"
        else:
            why = ", also with the previous admin password,"
        return AdminLoginFailed(f"{where}{why} and no root token is available; {GENERATE_ROOT_HINT}")

    def revoke(self, token: str, what: str) -> None:
        """Revoke ``token`` (revoke-self) and verify it is gone (lookup-self -> 403)."""
        last: Exception | None = None
        active = self.find_active()
        for c in [active, *self.clients] if active else self.clients:
            try:
                c.call("POST", "auth/token/revoke-self", token=token)
                check = c.raw("GET", "auth/token/lookup-self", token=token)
                if check.status != 403:
                    raise BootstrapError(f"the {what} token still answers lookup-self ({check.status}) after revoke")
                return
            except HttpFailure as exc:
                last = exc
        raise BootstrapError(f"could not revoke the {what} token: {last}")

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        # everything that can be checked without Vault is checked BEFORE a possible init: a root token
        # lost to a typo in a file name would mean a generate-root ceremony
        read_secret_file(cfg.password_file, "admin password")
        if cfg.previous_password_file:
            read_secret_file(cfg.previous_password_file, "previous admin password")
        read_secret_file(cfg.admin_policy_file, "admin policy")
        if cfg.root_token_file:
            read_secret_file(cfg.root_token_file, "root token")
        if cfg.job_grant is not None:
            if not isinstance(self.store, KubernetesSecretStateStore):
                raise UsageError("--role-binding needs the kubernetes-secret state store")
            self.store.hand_grant_to_job(cfg.job_grant)  # first: the grant ends with the Job, whatever follows
            self.log(f"RoleBinding {cfg.job_grant.role_binding} is now owned by Job {cfg.job_grant.job_name}")
        self.store.preflight()
        record = self.record = self.store.load()
        statuses = self._wait_answering()
        initialized = [c.url for c, s in zip(self.clients, statuses, strict=True) if s.get("initialized")]
        root: str | None = None
        if not initialized:
            if record is not None:
                raise BootstrapError(
                    f"{self.store.describe()} holds an init result but no peer is initialised; refusing to "
                    "initialise again (move the old result aside if the cluster really was wiped)"
                )
            record, root = self._init()
            self.store.save(record)  # persist before anything else can fail
            self.record = record
            self.initialized_now = True
            self.log(f"init result stored in {self.store.describe()}")
            if cfg.root_token_pgp_key:
                self._unseal_all(record, only_initialized=True)
                raise OperatorActionRequired(
                    "the root token is PGP-encrypted (stored as root_token_pgp): decrypt it and re-run with "
                    "--root-token-file to create the admin auth path"
                )
        else:
            self.log(f"already initialised ({', '.join(initialized)}); init is not called")
            if record is None:
                self.log(f"no init result in {self.store.describe()}")
        if root is None and cfg.root_token_file:
            root = read_secret_file(cfg.root_token_file, "root token")
        try:
            self._converge(record, root)
        except BaseException:
            if root is not None:
                try:
                    self.revoke(root, "root")
                    self.log("root token revoked")
                except PodProgramError as exc:  # the original failure is the one to report
                    self.log(f"could not revoke the root token after the failure: {exc}")
            raise
        if root is not None:
            self.revoke(root, "root")
            self.log("root token revoked")

    def _converge(self, record: Json | None, root: str | None) -> None:
        self._unseal_all(record, only_initialized=True)
        self.active_client()
        if root is not None:
            token = root
        else:
            password = read_secret_file(self.cfg.password_file, "admin password")
            admin = self._login(password)
            if admin is None and self.cfg.rotate_admin_password:
                admin = self.rotate_admin_password(password)
            if admin is None:
                raise self._admin_login_failed()
            token = admin
        try:
            self.apply_autopilot(token)
            self._unseal_all(record, only_initialized=False)
            self.wait_voters(token)
            if root is not None:
                self.configure_admin(root)
            self.drop_legacy_passwords()  # the admin login works without them (checked above / just set)
        finally:
            if root is None:
                with contextlib.suppress(PodProgramError):
                    self.revoke(token, "admin")


def run(
    config: Config,
    store: StateStore,
    *,
    client_factory: ClientFactory = VaultHttp,
    log: Callable[[str], None] = _say,
) -> None:
    """Run one bootstrap; raises ``BootstrapError`` (with ``exit_code``) on failure."""
    Bootstrap(config, store, client_factory=client_factory, log=log).run()
