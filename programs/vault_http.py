"""The one HTTP client of the in-pod programs: Vault's API (and, through the same transport, the
Kubernetes API cert-sync reads Secrets from).

Policy, the same for every program and every request:

* **HTTPS only.** An ``http://`` (or any non-``https``) address is a :class:`~programs.errors.UsageError`
  naming the address and the flag it came from.
* **Pinned trust.** Certificates are verified against the CA file the program was given, and only
  against it; the system's CAs are used only when the program was given no CA file at all. An
  unreadable CA file is a usage error. A TLS server name other than the URL's host can be given
  (the bootstrap's ``--tls-server-name``).
* **No redirects.** A 3xx answer is a :class:`BadResponse`; nothing is ever re-sent anywhere
  else, so a token never travels to the ``Location`` of a redirect.
* **Bounded bodies.** A response body larger than ``max_body`` (default :data:`MAX_BODY`) is
  refused (:class:`BadResponse`) after reading at most one byte more than the cap. Large downloads
  (Raft snapshots) are streamed into a file with their own cap (:meth:`VaultHttp.download`).
* **Timeouts.** Every connection and every read has one (``timeout``, seconds).
* **No secrets in messages.** Tokens go in headers only; they never appear in an exception message
  (an answer echoing a header's value is scrubbed), a log line or a ``repr``. Answers (which carry
  login tokens) are not part of their ``repr``.

Failures are typed, not numbered: :class:`ServerUnreachable` (network, TLS, timeout),
:class:`RequestRefused` (401/403), :class:`BadResponse` (any other unexpected status, a redirect, a
body over the cap or not the expected JSON), :class:`WriteConflict` (a KV check-and-set that lost).
Each program maps them to its own exit codes with an :data:`programs.errors.ExitCodes` table. Their
text names the action, the method, the full URL and, for an HTTP answer, the status and Vault's
error message.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import ssl
import urllib.parse
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from programs.errors import PodProgramError, UsageError

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BODY",
    "BadResponse",
    "HttpFailure",
    "HttpReply",
    "KvState",
    "PinnedHttps",
    "RequestRefused",
    "ServerUnreachable",
    "VaultHttp",
    "WriteConflict",
    "error_detail",
    "https_url",
]

MAX_BODY = 4 * 1024 * 1024
"""Largest response body read into memory (Vault's JSON answers are a few KiB)."""
DEFAULT_TIMEOUT = 30.0
CHUNK = 1024 * 1024

_MULTI_ERROR = re.compile(r"^\d+ errors? occurred: \* ")
_CAS_MISMATCH = "did not match the current version"
_SECRET_HEADERS = ("x-vault-token", "authorization")


# ---------------------------------------------------------------------------------------------
# failures
# ---------------------------------------------------------------------------------------------
class HttpFailure(PodProgramError):
    """A request failed; ``status`` is the HTTP status when the server answered one."""

    def __init__(self, message: str, exit_code: int | None = None, *, status: int | None = None) -> None:
        super().__init__(message, exit_code)
        self.status = status


class ServerUnreachable(HttpFailure):
    """No usable connection: refused, DNS, TLS (verification or handshake), timeout, broken off."""


class RequestRefused(HttpFailure):
    """The server answered 401 or 403 (a login refused, a token without the capability)."""


class BadResponse(HttpFailure):
    """An answer that is not what was asked for: another status, a redirect, a body over the cap,
    not the expected JSON."""


class WriteConflict(HttpFailure):
    """A KV v2 check-and-set write lost: another writer changed the path after it was read."""


# ---------------------------------------------------------------------------------------------
# answers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpReply:
    """An HTTP answer: the status, the JSON object it carried (``{}`` if none) and its text.

    Body and text are left out of ``repr`` (a login answer carries a token)."""

    status: int
    body: dict[str, Any] = field(default_factory=dict, repr=False)
    text: str = field(default="", repr=False)

    @property
    def errors(self) -> list[str]:
        errs = self.body.get("errors")
        return [str(e) for e in errs] if isinstance(errs, list) else []


def _reply(status: int, raw: bytes) -> HttpReply:
    text = raw.decode(errors="replace")
    try:
        parsed = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = None
    return HttpReply(status, parsed if isinstance(parsed, dict) else {}, text)


def error_detail(reply: HttpReply) -> str:
    """Vault's (or the Kubernetes API's) error message in one line."""
    errors = reply.errors
    if errors:
        # Vault wraps many messages as "1 error occurred:\n\t* permission denied\n\n"
        texts = [_MULTI_ERROR.sub("", " ".join(e.split())).replace(" * ", "; ") for e in errors]
        return "; ".join(t for t in texts if t) or "no details"
    if reply.body.get("kind") == "Status" and reply.body.get("message"):
        return str(reply.body["message"])
    text = " ".join(reply.text.split())
    return text[:200] if text else (http.client.responses.get(reply.status, "") or "no details")


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _scrub(text: str, secrets: Collection[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def _describe_network(reason: BaseException) -> str:
    """A network failure other than a timeout (each caller reports a timeout with its deadline)."""
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS verification failed: {reason.verify_message or reason}"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason.reason or reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return f"{type(reason).__name__}: {reason}"


# ---------------------------------------------------------------------------------------------
# transport
# ---------------------------------------------------------------------------------------------
def https_url(addr: str, flag: str) -> str:
    """``addr`` without a trailing ``/`` if it is a plain ``https://host[:port][/path]`` URL; else a
    :class:`UsageError` naming ``flag`` and the address."""
    parsed = urllib.parse.urlsplit(addr)
    if parsed.scheme != "https" or not parsed.hostname:
        raise UsageError(f"{flag} {addr!r} must be an https:// URL (TLS is always used and verified)")
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        raise UsageError(f"{flag} {addr!r} must be a plain https://host[:port][/path] URL")
    try:
        parsed.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise UsageError(f"{flag} {addr!r} has an invalid port") from None
    return addr.rstrip("/")


def tls_context(ca_file: str | None, ca_flag: str) -> ssl.SSLContext:
    """Verification against ``ca_file`` only (the system's CAs only when there is no file)."""
    try:
        # With a cafile, create_default_context loads that file and NOT the system's CAs.
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot load the CA file {ca_file} ({ca_flag}): {reason}") from None


class _PinnedConnection(http.client.HTTPSConnection):
    """An HTTPS connection that verifies ``server_name`` instead of the URL's host when given."""

    def __init__(
        self, host: str, port: int | None, *, context: ssl.SSLContext, server_name: str | None, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._pinned_context = context
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._pinned_context.wrap_socket(self.sock, server_hostname=self._server_name or self.host)


class PinnedHttps:
    """One HTTPS server, talked to under the module's policy (see the module docstring).

    ``label`` names the server in messages (``hub Vault``, ``Kubernetes API``); ``flag`` and
    ``ca_flag`` name where the address and the CA file came from, for usage errors."""

    def __init__(
        self,
        base_url: str,
        ca_file: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        label: str = "Vault",
        flag: str = "address",
        ca_flag: str = "CA file",
        server_name: str | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.url = https_url(base_url, flag)
        parts = urllib.parse.urlsplit(self.url)
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path
        self.label = label
        self.timeout = timeout
        self.server_name = server_name
        self.max_body = max_body
        self._context = tls_context(ca_file, ca_flag)
        #: The connection of the last GET whose answer was read to the end, for the next GET.
        self._idle: _PinnedConnection | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, label={self.label!r})"

    def full_url(self, target: str) -> str:
        """The absolute URL of ``target`` (a path starting with ``/``) on this server."""
        return f"{self.url}{target}"

    @contextlib.contextmanager
    def _exchange(
        self,
        method: str,
        target: str,
        *,
        where: str,
        headers: Mapping[str, str],
        body: bytes | IO[bytes] | None,
        timeout: float,
        secrets: Collection[str],
    ) -> Iterator[http.client.HTTPResponse]:
        """Send one request; yield the (non-3xx) response while the connection is open.

        A GET goes over the connection of the previous GET when that one was read to the end (the
        server kept it open), and once more over a new one if the server had closed it meanwhile: a
        GET changes nothing, so sending it again is safe. Every other request has a connection of its
        own, never reused and never repeated."""
        reused, conn = self._connection(method, timeout)
        url = f"{self._prefix}{target}"
        keep = False
        try:
            try:
                try:
                    response = self._request(conn, method, url, body, headers)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    if not reused:
                        raise
                    conn.close()  # the server closed the idle connection: a new one, once
                    conn = self._new_connection(timeout)
                    response = self._request(conn, method, url, body, headers)
            except TimeoutError:
                raise ServerUnreachable(f"{where}: no answer from {self.label}: timed out after {timeout:g}s") from None
            except OSError as exc:  # refused, DNS, TLS (ssl.SSLError is an OSError), reset
                raise ServerUnreachable(
                    f"{where}: cannot reach {self.label}: {_scrub(_describe_network(exc), secrets)}"
                ) from None
            except http.client.HTTPException as exc:
                raise ServerUnreachable(
                    f"{where}: {self.label} broke off: {_scrub(_describe_network(exc), secrets)}"
                ) from None
            if 300 <= response.status < 400:
                location = urllib.parse.urlsplit(response.getheader("Location") or "")
                to = f" to {location.scheme}://{location.netloc}" if location.netloc else ""
                raise BadResponse(
                    f"{where}: HTTP {response.status}: a redirect{_scrub(to, secrets)}; redirects are never followed",
                    status=response.status,
                )
            yield response
            keep = method == "GET" and response.isclosed() and not response.will_close
        finally:
            if keep:
                self._idle = conn
            else:
                conn.close()

    def _new_connection(self, timeout: float) -> _PinnedConnection:
        return _PinnedConnection(
            self._host, self._port, context=self._context, server_name=self.server_name, timeout=timeout
        )

    def _connection(self, method: str, timeout: float) -> tuple[bool, _PinnedConnection]:
        """(reused?, the connection): the idle one for a GET, else a new one."""
        idle, self._idle = self._idle, None
        if idle is not None and method == "GET" and idle.sock is not None:
            idle.timeout = timeout
            idle.sock.settimeout(timeout)
            return True, idle
        if idle is not None:
            idle.close()
        return False, self._new_connection(timeout)

    @staticmethod
    def _request(
        conn: _PinnedConnection,
        method: str,
        target: str,
        body: bytes | IO[bytes] | None,
        headers: Mapping[str, str],
    ) -> http.client.HTTPResponse:
        conn.request(method, target, body=body, headers=dict(headers))
        return conn.getresponse()

    def _read_failure(self, where: str, exc: BaseException, timeout: float, got: str = "") -> ServerUnreachable:
        """A read of an answer that timed out or broke off (``got``: what had come before)."""
        if isinstance(exc, TimeoutError):
            return ServerUnreachable(f"{where}: no answer from {self.label}{got}: timed out after {timeout:g}s")
        return ServerUnreachable(f"{where}: {self.label} broke off{got}: {_describe_network(exc)}")

    def _read_reply(self, response: http.client.HTTPResponse, where: str, timeout: float) -> HttpReply:
        """The whole answer, at most ``max_body`` bytes."""
        try:
            raw = response.read(self.max_body + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise self._read_failure(where, exc, timeout) from None
        if len(raw) > self.max_body:
            raise BadResponse(
                f"{where}: HTTP {response.status}: the answer is larger than {self.max_body} bytes; refused",
                status=response.status,
            )
        return _reply(response.status, raw)

    def send(
        self,
        method: str,
        target: str,
        *,
        action: str = "",
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> HttpReply:
        """One request with a JSON body (or none); any non-3xx status is returned, not raised."""
        wait = self.timeout if timeout is None else timeout
        secrets = self._secrets(headers)
        where = self._where(action, method, target)
        all_headers = {"Accept": "application/json", **(headers or {})}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")  # a PATCH names its own
        with self._exchange(
            method, target, where=where, headers=all_headers, body=payload, timeout=wait, secrets=secrets
        ) as response:
            return self._read_reply(response, where, wait)

    def fail(
        self, reply: HttpReply, method: str, target: str, *, action: str = "", secrets: Collection[str] = ()
    ) -> HttpFailure:
        """The failure for an unexpected status: :class:`RequestRefused` for 401/403, else :class:`BadResponse`."""
        kind = RequestRefused if reply.status in (401, 403) else BadResponse
        detail = _scrub(error_detail(reply), secrets)
        return kind(f"{self._where(action, method, target)}: HTTP {reply.status}: {detail}", status=reply.status)

    def _where(self, action: str, method: str, target: str) -> str:
        where = f"{method} {self.full_url(target)}"
        return f"{action}: {where}" if action else where

    @staticmethod
    def _secrets(headers: Mapping[str, str] | None) -> list[str]:
        found: list[str] = []
        for name, value in (headers or {}).items():
            if name.lower() in _SECRET_HEADERS:
                found.append(value)
                found.append(value.split(" ", 1)[-1])  # "Bearer <token>"
        return found


# ---------------------------------------------------------------------------------------------
# Vault
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KvState:
    """What ``GET <kv>/data/<path>`` said: the current version (0: never written) and its data
    (``None`` when there is none: never written, deleted or destroyed)."""

    version: int
    data: dict[str, Any] | None = field(repr=False)


class VaultHttp(PinnedHttps):
    """Vault's HTTP API (``/v1/...``) on one server, with the calls the programs share."""

    def endpoint(self, path: str) -> str:
        """The full URL of API path ``path`` (``sys/seal-status`` -> ``https://.../v1/sys/seal-status``)."""
        return self.full_url(self._target(path))

    @staticmethod
    def _target(path: str) -> str:
        return f"/v1/{path.lstrip('/')}"

    @staticmethod
    def _headers(token: str | None) -> dict[str, str]:
        headers = {"X-Vault-Request": "true"}
        if token:
            headers["X-Vault-Token"] = token
        return headers

    def raw(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        action: str = "",
    ) -> HttpReply:
        """One request to ``/v1/<path>``; any non-3xx status is returned, not raised."""
        return self.send(
            method, self._target(path), action=action, headers=self._headers(token), body=body, timeout=timeout
        )

    def fail_for(self, reply: HttpReply, method: str, path: str, *, action: str = "", token: str = "") -> HttpFailure:
        """The typed failure for an unexpected answer to ``method path``."""
        return self.fail(reply, method, self._target(path), action=action, secrets=(token,))

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Mapping[str, Any] | None = None,
        ok: Collection[int] = (200, 204),
        action: str = "",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Like :meth:`raw`, but a status outside ``ok`` raises; returns the JSON object."""
        reply = self.raw(method, path, token=token, body=body, action=action, timeout=timeout)
        if reply.status not in ok:
            raise self.fail_for(reply, method, path, action=action, token=token or "")
        return reply.body

    # -- auth ---------------------------------------------------------------------------------
    def login(self, mount: str, payload: Mapping[str, str], *, action: str = "", path: str = "") -> str:
        """``POST auth/<mount>/login`` (or ``path``); the client token. A refusal (401/403, or 400:
        Vault's answer to a wrong password or role) is a :class:`RequestRefused`."""
        path = path or f"auth/{mount.strip('/')}/login"
        reply = self.raw("POST", path, body=payload, action=action)
        if reply.status != 200:
            failure = self.fail_for(reply, "POST", path, action=action)
            if reply.status == 400:
                raise RequestRefused(str(failure), status=400)
            raise failure
        token = _mapping(reply.body.get("auth")).get("client_token")
        if not isinstance(token, str) or not token:
            raise BadResponse(f"{self._where(action, 'POST', self._target(path))}: returned no client token")
        return token

    def login_kubernetes(self, mount: str, role: str, jwt: str, *, action: str = "") -> str:
        action = action or f"Kubernetes auth login (role {role}) to the {self.label}"
        return self.login(mount, {"role": role, "jwt": jwt}, action=action)

    def login_approle(self, mount: str, role_id: str, secret_id: str, *, action: str = "") -> str:
        action = action or f"AppRole login to the {self.label}"
        return self.login(mount, {"role_id": role_id, "secret_id": secret_id}, action=action)

    def revoke_self(self, token: str, *, timeout: float = 5.0) -> None:
        """``auth/token/revoke-self``, best effort (the programs' tokens are short-lived anyway)."""
        with contextlib.suppress(HttpFailure):
            self.raw(
                "POST",
                "auth/token/revoke-self",
                token=token,
                body={},
                timeout=min(self.timeout, timeout),
                action="token revocation",
            )

    # -- KV v2 --------------------------------------------------------------------------------
    def kv_read(self, token: str, mount: str, path: str, *, action: str = "") -> KvState:
        """The current version and data of a KV v2 secret (version 0, no data: never written)."""
        api_path = f"{mount}/data/{path}"
        action = action or f"reading {api_path} from the {self.label}"
        reply = self.raw("GET", api_path, token=token, action=action)
        outer = _mapping(reply.body.get("data"))
        metadata = _mapping(outer.get("metadata"))
        if reply.status == 404:
            version = metadata.get("version")
            return KvState(version if isinstance(version, int) else 0, None)
        if reply.status != 200:
            raise self.fail_for(reply, "GET", api_path, action=action, token=token)
        version, data = metadata.get("version"), outer.get("data")
        if not isinstance(version, int) or not (data is None or isinstance(data, dict)):
            raise BadResponse(
                f"{action}: GET {self.endpoint(api_path)} did not return a KV v2 secret "
                f"(is {mount} a KV version 2 mount?)",
                status=reply.status,
            )
        return KvState(version, data)

    def kv_write(self, token: str, mount: str, path: str, data: Mapping[str, Any], cas: int) -> int:
        """Write with check-and-set ``cas``; the new version. A lost check-and-set is a :class:`WriteConflict`."""
        api_path = f"{mount}/data/{path}"
        action = f"writing {api_path} to the {self.label}"
        reply = self.raw(
            "POST", api_path, token=token, body={"options": {"cas": cas}, "data": dict(data)}, action=action
        )
        if reply.status == 400 and _CAS_MISMATCH in reply.text:
            raise WriteConflict(
                f"{action}: POST {self.endpoint(api_path)}: HTTP 400: {error_detail(reply)}: another writer "
                f"changed it after this run read version {cas}; nothing was overwritten",
                status=400,
            )
        if reply.status == 204:
            raise BadResponse(
                f"{action}: POST {self.endpoint(api_path)}: HTTP 204 without a version: "
                f"is {mount} a KV version 2 mount?",
                status=204,
            )
        if reply.status != 200:
            raise self.fail_for(reply, "POST", api_path, action=action, token=token)
        version = _mapping(reply.body.get("data")).get("version")
        return version if isinstance(version, int) else cas + 1

    def capabilities_self(self, token: str, paths: Collection[str], *, action: str = "") -> dict[str, list[str]] | None:
        """``sys/capabilities-self`` for ``paths``; ``None`` when the token may not ask."""
        action = action or f"checking the token's capabilities at the {self.label}"
        reply = self.raw("POST", "sys/capabilities-self", token=token, body={"paths": sorted(paths)}, action=action)
        if reply.status != 200 or not reply.body:
            return None
        answer = _mapping(reply.body.get("data")) or reply.body
        return {p: [str(c) for c in answer[p]] for p in paths if isinstance(answer.get(p), list)}

    # -- streams ------------------------------------------------------------------------------
    def download(self, path: str, dest: IO[bytes], *, token: str, max_bytes: int, action: str = "") -> int:
        """Stream ``GET /v1/<path>`` (200 only) into ``dest``, at most ``max_bytes``; the byte count."""
        where = self._where(action, "GET", self._target(path))
        written = 0
        with self._exchange(
            "GET",
            self._target(path),
            where=where,
            headers=self._headers(token),
            body=None,
            timeout=self.timeout,
            secrets=(token,),
        ) as response:
            if response.status != 200:
                reply = self._read_reply(response, where, self.timeout)
                raise self.fail_for(reply, "GET", path, action=action, token=token)
            try:
                while chunk := response.read(CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise BadResponse(f"{where}: the answer is larger than {max_bytes} bytes; refused", status=200)
                    dest.write(chunk)
            except (OSError, http.client.HTTPException) as exc:
                raise self._read_failure(where, exc, self.timeout, f" after {written} bytes") from None
        dest.flush()
        if written == 0:
            raise BadResponse(f"{where}: returned an empty body", status=200)
        return written

    def upload(
        self, method: str, path: str, source: IO[bytes], size: int, *, token: str, action: str = ""
    ) -> HttpReply:
        """Send ``size`` bytes of ``source`` as the body of ``method /v1/<path>``; 2xx only."""
        where = self._where(action, method, self._target(path))
        headers = self._headers(token) | {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        with self._exchange(
            method,
            self._target(path),
            where=where,
            headers=headers,
            body=source,
            timeout=self.timeout,
            secrets=(token,),
        ) as response:
            reply = self._read_reply(response, where, self.timeout)
        if not 200 <= reply.status < 300:
            raise self.fail_for(reply, method, path, action=action, token=token)
        return reply
