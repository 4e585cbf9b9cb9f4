"""The edge's cert-sync as a long-running follower of the hub Vault (``python -m programs.cert_sync follow``).

The edge side of one client certificate (docs/secret-flow.md)::

    hub kv/edges/<EDGE>/otel-client-tls --[follow: on the edge, every --poll s]--> edge kv/otel/otel-client-tls

A Deployment (one replica) runs it. It logs in to the hub with the edge's AppRole ONCE and keeps the
token; every ``--poll`` seconds it asks the hub for the KV v2 *metadata* of its path (one request:
``GET <hub-kv>/metadata/edges/<EDGE>/otel-client-tls``, its ``current_version``), reads the data
only when that version differs from the one it last applied, and writes its own edge Vault only
then, with everything ``edge`` mode guarantees (:func:`programs.cert_sync.sync.validate_bundle`
before anything is written, :func:`programs.cert_sync.sync.write_changed`: change detection,
check-and-set, the capability pre-flight, its edge token revoked). Steady state, nothing changed: one
hub request per poll, plus one login and one revoke per token lifetime (docs/performance.md).

The hub token. A new login happens when there is no token, when the token has less than
:data:`TOKEN_RESERVE_SECONDS` left (from the login answer's ``lease_duration``), or fewer than
:data:`USES_RESERVE` uses (``num_uses``); the old token is revoked then (``revoke-self``, best
effort). A cached token the hub refuses (revoked, expired early) is dropped, and the poll logs in
once more and retries the read once. The edge AppRole's token TTL and use count are chosen for this
rhythm: ``components/cert_sync_cadence.py``.

The secret_id (with ``--hub-credential NAMESPACE/NAME``). The follower reads its secret_id from that
Kubernetes Secret (key ``secret-id``) through the Kubernetes API, not from a mounted file (a mounted
Secret is refreshed by the kubelet only after a delay, and a restart right after a rotation must see
the new one). Once per process it looks its secret_id up on the hub (``role/<EDGE>/secret-id/lookup``:
creation time and TTL); when the secret_id has lived :data:`ROTATE_AT` of its TTL (or has no TTL at
all), it creates a new one for its own role (``role/<EDGE>/secret-id``: OpenBao refuses a ``ttl`` or
``num_uses`` beyond the role's, ``builtin/credential/approle/path_role.go``
``handleRoleSecretIDCommon``; none is asked for here), replaces the Secret's ``secret-id`` (a PUT
carrying the ``resourceVersion`` it read: a concurrent change is a conflict, not an overwrite), and
only then destroys every other secret_id of its role by accessor (``LIST role/<EDGE>/secret-id``,
``secret-id-accessor/destroy``): the old one, and any a ``pulumi up`` minted after a ``pulumi refresh``
dropped the destroyed one from its state (terraform-provider-vault
``resource_approle_auth_backend_role_secret_id.go``: a lookup answering "failed to find accessor
entry" removes the resource from state). If storing the new secret_id fails, the new one is destroyed
and the old one stays in use; a sweep that fails is retried at every later poll.

Failures. A poll that cannot reach the hub, is refused, or meets data that is missing or invalid,
and an edge write that fails, change nothing on the edge (everything is validated before the first
write; a check-and-set conflict overwrites nothing) and print one line on stderr,
``cert-sync: error: <reason>``, exactly as a one-shot run would; the follower forgets the version it
applied (the next poll reads and validates the data again) and goes on polling every ``--poll``
seconds, so a hub outage heals at the first poll after it, without the kubelet's restart back-off
(up to five minutes, which would break the two-minute propagation). After ``--max-failures``
consecutive failed polls it exits with the last failure's exit code (the codes of ``edge`` mode), so
a lasting failure shows as a restarting, not-ready pod. A usage error exits at once with 2; SIGTERM
revokes the hub token and exits 143.

Output: one line per poll that applied something (``cert-sync: hub version N: synced ...``) and one at
a secret_id rotation; an unchanged poll prints nothing.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from programs.cert_sync.sync import (
    EXIT_CODES,
    PROG,
    TLS_KEYS,
    Item,
    KubeAPI,
    SourceError,
    TargetError,
    _describe,
    _into_target,
    _read_secret_file,
    _target,
    hub_client,
    hub_kv_path,
    validate_bundle,
)
from programs.errors import PodProgramError, UsageError, exit_code_of
from programs.vault_http import HttpFailure, KvState, RequestRefused, VaultHttp, WriteConflict

__all__ = [
    "ROTATE_AT",
    "TOKEN_RESERVE_SECONDS",
    "USES_RESERVE",
    "CredentialSecret",
    "HubFollower",
    "follow",
]

#: A new login when the token has less than this left: more than two requests at the longest timeout
#: (30 s each) would not fit, and a token must never expire in the middle of a poll.
TOKEN_RESERVE_SECONDS = 60.0
#: A new login when the token has fewer uses left than one poll can need: metadata and data reads
#: (2), a secret_id lookup, create and list (3), destroying two secret_ids (2) and the revoke (1).
USES_RESERVE = 8
#: The share of its TTL after which a secret_id is replaced (as cert-manager renews at 2/3).
ROTATE_AT = 2 / 3

_FRACTION = re.compile(r"(\.\d{1,6})\d*")


@contextlib.contextmanager
def _hub_side() -> Iterator[None]:
    """A client failure at the hub is the program's :class:`SourceError` (exit 3)."""
    try:
        yield
    except WriteConflict:
        raise
    except HttpFailure as exc:
        raise SourceError(str(exc)) from None


def _timestamp(text: object) -> float | None:
    """An RFC 3339 time from Vault (nanoseconds allowed) as a POSIX timestamp; ``None`` if it is not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = _dt.datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)).timestamp()


@dataclass
class _Token:
    value: str
    deadline: float  # clock time after which it must not be used (0: no TTL)
    uses_left: int | None  # None: unlimited


@dataclass(frozen=True)
class SecretIdInfo:
    """What the follower knows of its current secret_id: its accessor and when to replace it."""

    accessor: str
    rotate_after: float  # clock time; 0: at once (a secret_id without TTL)


class HubFollower:
    """One edge's view of the hub Vault: a kept AppRole token and the KV v2 version last applied.

    ``poll()`` is one poll against the hub only (it never touches the edge): it logs in when it has
    no usable token, reads the metadata version of ``<kv_mount>/metadata/edges/<edge>/otel-client-tls``,
    and reads the data only when the version differs from the last one it returned; it returns that
    new state, or ``None`` when nothing changed. Every failure at the hub is a :class:`SourceError`.
    With ``store_secret_id`` it also replaces its secret_id at :data:`ROTATE_AT` of its TTL (the
    module docstring); without, it never touches its secret_id. ``close()`` revokes its token.
    ``clock`` (wall-clock seconds) is the time the token and secret_id deadlines are kept in.
    """

    def __init__(
        self,
        hub: VaultHttp,
        *,
        approle_mount: str,
        role_id: str,
        secret_id: str,
        kv_mount: str,
        edge: str,
        store_secret_id: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.approle_mount = approle_mount.strip("/")
        self.kv_mount = kv_mount
        self.edge = edge
        self.path = hub_kv_path(edge)
        self._role_id = role_id
        self._secret_id = secret_id
        self._store = store_secret_id
        self._clock = clock
        self._token: _Token | None = None
        self._version: int | None = None
        self._secret_info: SecretIdInfo | None = None
        self._sweep_pending = False
        #: Hub requests made (logins included), for the logs and the benchmarks.
        self.requests = 0
        self.logins = 0
        #: Accessors of the secret_ids this follower created (the last is the current one).
        self.rotations: list[str] = []

    # -- public -------------------------------------------------------------------------------
    @property
    def version(self) -> int | None:
        """The hub version last returned by :meth:`poll` (``None``: none yet, or forgotten)."""
        return self._version

    @property
    def secret_id(self) -> str:
        return self._secret_id

    def forget(self) -> None:
        """Make the next poll read and return the data even if the version did not change (after the
        edge could not apply what the last poll returned)."""
        self._version = None

    def poll(self) -> KvState | None:
        """One poll (class docstring). Raises :class:`SourceError` on refusal, unreachable, or when
        nothing is stored at the path (deleted, destroyed, never written)."""
        with _hub_side():
            version = self._with_token(self._metadata_version)
            state: KvState | None = None
            if version != self._version:
                state = self._with_token(self._read_data)
                self._version = state.version
            if self._store is not None:
                self._maintain_secret_id()
        return state

    def close(self) -> None:
        """Revoke the hub token (best effort); the next poll logs in again."""
        token, self._token = self._token, None
        if token is not None and token.uses_left != 0:
            self.requests += 1
            self.hub.revoke_self(token.value)

    # -- token --------------------------------------------------------------------------------
    def _usable(self, token: _Token | None) -> bool:
        if token is None:
            return False
        if token.deadline and self._clock() + TOKEN_RESERVE_SECONDS >= token.deadline:
            return False
        return token.uses_left is None or token.uses_left >= USES_RESERVE

    def _login(self) -> _Token:
        path = f"auth/{self.approle_mount}/login"
        action = f"AppRole login to the {self.hub.label}"
        started = self._clock()
        self.requests += 1
        self.logins += 1
        reply = self.hub.raw("POST", path, body={"role_id": self._role_id, "secret_id": self._secret_id}, action=action)
        if reply.status != 200:
            failure = self.hub.fail_for(reply, "POST", path, action=action)
            raise RequestRefused(str(failure), status=400) if reply.status == 400 else failure
        found = reply.body.get("auth")
        auth: dict[str, Any] = found if isinstance(found, dict) else {}
        value, ttl, uses = auth.get("client_token"), auth.get("lease_duration"), auth.get("num_uses")
        if not isinstance(value, str) or not value:
            raise SourceError(f"{action}: POST {self.hub.endpoint(path)} returned no client token")
        deadline = started + ttl if isinstance(ttl, int) and ttl > 0 else 0.0
        return _Token(value, deadline, uses if isinstance(uses, int) and uses > 0 else None)

    def _with_token(self, request: Callable[[str], Any]) -> Any:
        """``request(token)`` with a usable token; a cached token the hub refuses is replaced once."""
        fresh = not self._usable(self._token)
        if fresh:
            self.close()
            self._token = self._login()
        assert self._token is not None
        try:
            return request(self._token.value)
        except RequestRefused:
            if fresh:
                raise
            self._token = self._login()  # the kept token was refused (revoked, expired): once more
            return request(self._token.value)

    def _call(self, token: str, method: str, path: str, body: dict[str, Any] | None, action: str) -> dict[str, Any]:
        self._spend()
        return self.hub.call(method, path, token=token, body=body, action=action)

    def _spend(self) -> None:
        self.requests += 1
        if self._token is not None and self._token.uses_left is not None:
            self._token.uses_left -= 1

    # -- KV -----------------------------------------------------------------------------------
    def _what(self) -> str:
        return f"{self.kv_mount}/data/{self.path} at the hub Vault {self.hub.url}"

    def _metadata_version(self, token: str) -> int:
        api_path = f"{self.kv_mount}/metadata/{self.path}"
        action = f"reading {api_path} from the {self.hub.label}"
        self._spend()
        reply = self.hub.raw("GET", api_path, token=token, action=action)
        if reply.status == 404:
            raise SourceError(f"reading {self._what()}: nothing is stored there (has the hub's cert-sync run?)")
        if reply.status != 200:
            raise self.hub.fail_for(reply, "GET", api_path, action=action, token=token)
        data = reply.body.get("data")
        version = data.get("current_version") if isinstance(data, dict) else None
        if not isinstance(version, int):
            raise SourceError(f"{action}: the answer has no current_version (is {self.kv_mount} a KV v2 mount?)")
        return version

    def _read_data(self, token: str) -> KvState:
        self._spend()
        state = self.hub.kv_read(token, self.kv_mount, self.path)
        if state.data is None:
            detail = f"its version {state.version} is deleted or destroyed" if state.version else "nothing stored"
            raise SourceError(f"reading {self._what()}: {detail} (has the hub's cert-sync run?)")
        return state

    # -- secret_id ----------------------------------------------------------------------------
    def _role_path(self, suffix: str) -> str:
        return f"auth/{self.approle_mount}/role/{self.edge}/{suffix}"

    def _maintain_secret_id(self) -> None:
        if self._secret_info is None:
            self._secret_info = self._with_token(self._lookup)
        if self._clock() >= self._secret_info.rotate_after:
            self._with_token(self._rotate)
        if self._sweep_pending:
            self._with_token(self._sweep)

    def _lookup(self, token: str) -> SecretIdInfo:
        data = self._call(
            token,
            "POST",
            self._role_path("secret-id/lookup"),
            {"secret_id": self._secret_id},
            "looking up this edge's secret_id on the hub",
        ).get("data")
        data = data if isinstance(data, dict) else {}
        accessor, ttl, created = data.get("secret_id_accessor"), data.get("secret_id_ttl"), data.get("creation_time")
        created_at = _timestamp(created)
        if not isinstance(accessor, str) or not isinstance(ttl, int) or created_at is None:
            raise SourceError(
                "looking up this edge's secret_id on the hub: no accessor, TTL or creation time in the answer"
            )
        return SecretIdInfo(accessor, created_at + ttl * ROTATE_AT if ttl > 0 else 0.0)

    def _rotate(self, token: str) -> None:
        action = "creating a new secret_id for this edge's role on the hub"
        data = self._call(token, "POST", self._role_path("secret-id"), {}, action).get("data")
        data = data if isinstance(data, dict) else {}
        new, accessor, ttl = data.get("secret_id"), data.get("secret_id_accessor"), data.get("secret_id_ttl")
        if not isinstance(new, str) or not new or not isinstance(accessor, str) or not isinstance(ttl, int):
            raise SourceError(f"{action}: the answer has no secret_id, accessor or TTL")
        assert self._store is not None
        try:
            self._store(new)
        except PodProgramError:
            with contextlib.suppress(HttpFailure):  # the new one was never stored: nobody may hold it
                self._destroy(token, accessor)
            raise
        self._secret_id = new
        self._secret_info = SecretIdInfo(accessor, self._clock() + ttl * ROTATE_AT if ttl > 0 else 0.0)
        self.rotations.append(accessor)
        self._sweep_pending = True
        print(f"{PROG}: replaced this edge's hub secret_id (accessor {accessor}, TTL {ttl} s)", flush=True)

    def _destroy(self, token: str, accessor: str) -> None:
        action = "destroying a former secret_id of this edge's role on the hub"
        body = {"secret_id_accessor": accessor}
        self._call(token, "POST", self._role_path("secret-id-accessor/destroy"), body, action)

    def _sweep(self, token: str) -> None:
        """Destroy every secret_id of the role but the current one."""
        assert self._secret_info is not None
        self._spend()
        path = self._role_path("secret-id")
        reply = self.hub.raw("LIST", path, token=token, action="listing this edge's secret_ids on the hub")
        if reply.status not in (200, 404):
            raise self.hub.fail_for(reply, "LIST", path, token=token)
        data = reply.body.get("data")
        keys = data.get("keys") if isinstance(data, dict) else None
        for accessor in keys if isinstance(keys, list) else []:
            if isinstance(accessor, str) and accessor != self._secret_info.accessor:
                self._destroy(token, accessor)
        self._sweep_pending = False


# ---------------------------------------------------------------------------------------------
# the program's follow mode
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CredentialSecret:
    """The edge's Kubernetes Secret holding its hub secret_id (key ``secret-id``), read and replaced
    through the Kubernetes API with the pod's service-account token."""

    kube: KubeAPI
    namespace: str
    name: str
    token: str

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/secrets/{self.name}"

    def _get(self) -> dict[str, Any]:
        action = f"reading Secret {self.namespace}/{self.name} from the Kubernetes API"
        reply = self.kube.send("GET", self._path, action=action, headers={"Authorization": f"Bearer {self.token}"})
        if reply.status != 200 or reply.body.get("kind", "Secret") != "Secret":
            raise self.kube.fail(reply, "GET", self._path, action=action, secrets=(self.token,))
        return reply.body

    def read(self) -> str:
        data = self._get().get("data")
        encoded = data.get("secret-id") if isinstance(data, dict) else None
        try:
            value = base64.b64decode(str(encoded), validate=True).decode().strip() if encoded else ""
        except (binascii.Error, ValueError):
            value = ""
        if not value:
            raise UsageError(f"Secret {self.namespace}/{self.name} has no secret-id")
        return value

    def write(self, secret_id: str) -> None:
        """Replace ``secret-id`` (PUT with the ``resourceVersion`` read: a concurrent change fails).
        Any failure is a :class:`TargetError`: the edge's own Kubernetes API is this program's target."""
        try:
            obj = self._get()
        except HttpFailure as exc:
            raise TargetError(str(exc)) from None
        found = obj.get("data")
        data: dict[str, Any] = found if isinstance(found, dict) else {}
        obj["data"] = {**data, "secret-id": base64.b64encode(secret_id.encode()).decode()}
        action = f"storing the new secret_id in Secret {self.namespace}/{self.name}"
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        try:
            reply = self.kube.send("PUT", self._path, action=action, headers=headers, body=obj)
        except HttpFailure as exc:
            raise TargetError(str(exc)) from None
        if reply.status != 200:
            failure = self.kube.fail(reply, "PUT", self._path, action=action, secrets=(self.token, secret_id))
            raise TargetError(str(failure))


def _follower(args: argparse.Namespace) -> HubFollower:
    role_id = _read_secret_file(args.hub_role_id_file, "AppRole role_id", "--hub-role-id-file")
    hub = hub_client(args)
    store: Callable[[str], None] | None = None
    if args.hub_credential:
        namespace, _, name = args.hub_credential.partition("/")
        kube_token = _read_secret_file(args.kube_token_file, "Kubernetes service-account token", "--kube-token-file")
        kube = KubeAPI(args.kube_api, kube_token, args.kube_ca_file, args.timeout)
        credential = CredentialSecret(kube, namespace, name, kube_token)
        try:
            secret_id = credential.read()
        except HttpFailure as exc:
            raise TargetError(str(exc)) from None
        store = credential.write
    else:
        secret_id = _read_secret_file(args.hub_secret_id_file, "AppRole secret_id", "--hub-secret-id-file")
    return HubFollower(
        hub,
        approle_mount=args.hub_approle_mount,
        role_id=role_id,
        secret_id=secret_id,
        kv_mount=args.hub_kv_mount,
        edge=args.edge,
        store_secret_id=store,
    )


def apply(args: argparse.Namespace, follower: HubFollower, state: KvState) -> str:
    """Validate what the hub holds and write the edge Vault if it differs; the line to log."""
    assert state.data is not None
    what = f"{follower.kv_mount}/data/{follower.path} at the hub Vault {follower.hub.url}"
    bundle = {key: state.data[key] for key in TLS_KEYS if key in state.data}
    summary = validate_bundle(bundle, what)
    jwt = _read_secret_file(args.jwt_file, "Vault service-account token", "--jwt-file")
    outcome = _into_target(args, _target(args), jwt, [Item(what, args.kv_path, bundle, summary)])
    return f"hub version {state.version}: {_describe(outcome)}"


def follow(args: argparse.Namespace, sleep: Callable[[float], None] = time.sleep) -> int:
    """Poll until SIGTERM (or ``--polls`` polls, or ``--max-failures`` failures in a row); the exit code."""
    follower = _follower(args)
    failures, done, last = 0, 0, 0
    try:
        while args.polls is None or done < args.polls:
            started = time.monotonic()
            try:
                state = follower.poll()
                if state is not None:
                    print(f"{PROG}: {apply(args, follower, state)}", flush=True)
                failures = 0
            except PodProgramError as exc:
                follower.forget()
                failures += 1
                last = exit_code_of(exc, EXIT_CODES)
                print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
                if failures >= args.max_failures:
                    return last
            done += 1
            if args.polls is None or done < args.polls:
                sleep(max(0.0, started + args.poll - time.monotonic()))
        return last if failures else 0
    finally:
        follower.close()
