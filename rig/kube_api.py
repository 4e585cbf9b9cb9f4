"""A loopback stand-in for the Kubernetes API, for exactly what fedobs' programs and Vault use.

No Kubernetes API server runs on the test machines, so this module serves the few endpoints the
project's pods and Vault's Kubernetes auth method call, with the behaviour the Kubernetes API
documents for them:

* ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (``201 Created``): ``status.authenticated``
  is true only for an unexpired service-account token this server minted, whose service account
  still exists with the same uid, and whose ``aud`` intersects ``spec.audiences`` (or, when the
  request names no audiences, the API server's own audiences, ``api_audiences``). ``status.user``
  then carries ``username = system:serviceaccount:<ns>:<name>``, the service account's ``uid``,
  the groups ``system:serviceaccounts``, ``system:serviceaccounts:<ns>``, ``system:authenticated``
  and ``extra["authentication.kubernetes.io/credential-id"] = ["JTI=<jti>"]``; ``status.audiences``
  is that intersection. A rejected token gives ``authenticated: false`` and ``status.error``.
  Creating a TokenReview is itself authorised (verb ``create``, resource ``tokenreviews``,
  cluster scope), as with the ``system:auth-delegator`` ClusterRole.
* Secrets (``/api/v1/namespaces/<ns>/secrets[/<name>]`` and ``/api/v1/secrets``): ``get``, ``list``
  (with an equality-based ``labelSelector``), ``create`` (POST: ``201``, ``409 AlreadyExists``;
  with ``?dryRun=All`` authorised and validated the same way, then not stored),
  ``update`` (PUT: ``409 Conflict`` on a stale ``metadata.resourceVersion``, unconditional when
  the body has none, ``404`` when the Secret does not exist, ``400`` when the body's name or
  namespace does not match the URL), ``patch`` (JSON merge patch / strategic merge patch, which
  are the same for a Secret) and ``delete`` (``200`` with a ``Success`` Status). ``data`` values
  must be base64; ``stringData`` is merged into ``data`` on write and never returned. Every write
  bumps a server-wide ``resourceVersion``. Errors are ``Status`` objects shaped like the real API's.
* Authentication: ``Authorization: Bearer <token>`` with a token minted here (an invalid one is
  ``401 Unauthorized``; no token at all is the user ``system:anonymous`` in the group
  ``system:unauthenticated``). Authorisation: an RBAC-like rule table (:class:`Rule`: subject =
  user or group, verbs, resources, namespace or cluster-wide, resourceNames), with the real
  API's semantics: ``resourceNames`` never match ``create`` or ``list`` (the request has no
  name), a namespaced rule never matches cluster-scoped requests. Denials are ``403 Forbidden``
  Status objects with the real message (``secrets "x" is forbidden: User "..." cannot get
  resource "secrets" in API group "" in the namespace "ns"``).
* RBAC objects and the garbage collector, for what the bootstrap Job's grant needs (components/vault.py
  ``Vault._bootstrap_rbac``): Roles and RoleBindings are put here as the stack declares them
  (:meth:`KubeAPIServer.put_role`, :meth:`KubeAPIServer.put_role_binding`) and authorise requests like
  real RBAC (a binding's subjects — ServiceAccount, User, Group — get its Role's rules in its namespace:
  ``apiGroups``, ``resources``, ``verbs``, ``resourceNames``, ``*`` wildcards). The API serves
  ``/apis/rbac.authorization.k8s.io/v1/namespaces/<ns>/rolebindings/<name>``: ``get``; ``patch`` (JSON
  merge patch; ``roleRef`` is immutable, ``422``; a change beyond ``metadata.ownerReferences`` and
  ``finalizers`` needs ``bind`` on the Role or the Role already bound to the requester, like the
  escalation check of pkg/registry/rbac/rolebinding/policybased/storage.go; a change of
  ``ownerReferences`` needs ``delete`` on the binding, as the OwnerReferencesPermissionEnforcement
  admission plugin demands, modelled as enabled); ``delete``. Jobs exist as owners only
  (:meth:`KubeAPIServer.create_job` gives one its uid); :meth:`KubeAPIServer.delete_job` is what the
  TTL-after-finished controller does to a finished Job ("delete it cascadingly"): the Job goes, then
  the garbage collector (:meth:`KubeAPIServer.collect_garbage`) deletes every RoleBinding and Secret all
  of whose ``ownerReferences`` name an owner that no longer exists (matched by uid).
* Service-account issuer discovery: ``/.well-known/openid-configuration`` and
  ``/openid/v1/jwks`` (public), and ``/version``.

Tokens come from :meth:`KubeAPIServer.mint_service_account_token`: RS256 JWS (``kid`` = base64url
SHA-256 of the public key, as Kubernetes does) with the claims Vault/OpenBao parse: ``iss``,
``sub = system:serviceaccount:<ns>:<name>``, ``aud`` (a list), ``exp``, ``iat``, ``nbf``, ``jti``
and ``kubernetes.io: {namespace, serviceaccount: {name, uid}[, pod: {name, uid}]}``.

The server listens on 127.0.0.1 on a free port, HTTPS by default, with a throw-away CA generated
here (:attr:`KubeAPIServer.ca_pem`, to hand to Vault as ``kubernetes_ca_cert``, which Vault
requires even for ``http://``). Every request is logged (:attr:`KubeAPIServer.requests`,
:meth:`KubeAPIServer.count`). Use it as a context manager or call ``start()``/``stop()``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as _dt
import hashlib
import json
import re
import secrets as _secrets
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from rig.pki import TestCA

__all__ = [
    "DEFAULT_ISSUER",
    "KubeAPIServer",
    "RequestRecord",
    "Rule",
    "service_account_username",
]

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
"""The issuer (and default API audience) of a kubeadm/LKE-style cluster."""

_JSON = dict[str, Any]


def service_account_username(namespace: str, name: str) -> str:
    """The username Kubernetes gives a service account: ``system:serviceaccount:<ns>:<name>``."""
    return f"system:serviceaccount:{namespace}:{name}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now_rfc3339() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Rule:
    """One RBAC grant: ``subject`` (a username or a group) may use ``verbs`` on ``resources``.

    ``namespace=None`` is a ClusterRoleBinding (every namespace and cluster-scoped resources);
    a namespace is a RoleBinding in that namespace only. ``resource_names`` restricts the rule to
    named objects; like real RBAC it then never matches requests without a name (create, list).
    ``"*"`` is a wildcard in ``verbs`` and ``resources``.
    """

    subject: str
    verbs: tuple[str, ...]
    resources: tuple[str, ...]
    namespace: str | None = None
    resource_names: tuple[str, ...] = ()

    def matches(self, identities: Iterable[str], verb: str, resource: str, namespace: str, name: str) -> bool:
        """Whether this rule grants ``verb`` on ``resource``/``name`` in ``namespace`` ('' = cluster)."""
        if self.subject not in identities:
            return False
        if self.namespace is not None and self.namespace != namespace:
            return False
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if "*" not in self.resources and resource not in self.resources:
            return False
        return not self.resource_names or (bool(name) and name in self.resource_names)


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered: ``user`` is the authenticated username (or
    ``system:anonymous``, or ``None`` when the bearer token was rejected)."""

    method: str
    path: str
    query: str
    user: str | None
    verb: str | None
    status: int
    #: For a write: the ``metadata.resourceVersion`` its body carried (a conditional update's precondition).
    resource_version: str | None = None


@dataclass
class _ServiceAccount:
    uid: str
    deleted: bool = False


@dataclass
class _Identity:
    username: str
    uid: str = ""
    groups: list[str] = field(default_factory=list)
    extra: dict[str, list[str]] = field(default_factory=dict)

    def names(self) -> set[str]:
        return {self.username, *self.groups}


class _TokenError(Exception):
    """A token that does not authenticate; the text becomes ``status.error`` / the log."""


class _APIError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: _JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> _JSON:
        body: _JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _not_found(resource: str, name: str) -> _APIError:
    return _APIError(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource})


def _parse_label_selector(selector: str) -> list[tuple[str, str, str]]:
    """Equality-based selectors only: ``a=b``, ``a==b``, ``a!=b``, ``a`` (exists), ``!a``."""
    terms: list[tuple[str, str, str]] = []
    for raw in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "==" in raw or "=" in raw:
            key, value = re.split("==?", raw, maxsplit=1)
            terms.append((key.strip(), "=", value.strip()))
        elif raw.startswith("!"):
            terms.append((raw[1:].strip(), "!", ""))
        else:
            terms.append((raw, "exists", ""))
    return terms


def _labels_match(labels: Mapping[str, str], terms: list[tuple[str, str, str]]) -> bool:
    for key, op, value in terms:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


_NAME_REQUIRED = "Required value: name or generateName is required"
_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def _copy(obj: _JSON) -> _JSON:
    """A deep copy through JSON (what a client would see)."""
    copied: _JSON = json.loads(json.dumps(obj))
    return copied


_SECRETS_ITEM = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets/([^/]+)$")
_SECRETS_NS = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets$")
_ROLE_BINDINGS_ITEM = re.compile(r"^/apis/rbac\.authorization\.k8s\.io/v1/namespaces/([^/]+)/rolebindings/([^/]+)$")
#: The API group of each resource the stand-in serves ("" = the core group).
_API_GROUPS: dict[str, str] = {
    "tokenreviews": "authentication.k8s.io",
    "rolebindings": "rbac.authorization.k8s.io",
    "roles": "rbac.authorization.k8s.io",
}


def _listed(value: str, allowed: Any) -> bool:
    """Whether an RBAC rule's list (``apiGroups``, ``resources``, ``verbs``) names ``value`` or ``*``."""
    return isinstance(allowed, list) and ("*" in allowed or value in allowed)


def _subject_name(subject: Mapping[str, Any], binding_namespace: str) -> str:
    """The username or group a RoleBinding subject stands for."""
    if subject.get("kind") == "ServiceAccount":
        return service_account_username(str(subject.get("namespace") or binding_namespace), str(subject.get("name")))
    return str(subject.get("name"))


class KubeAPIServer:
    """The fake Kubernetes API (see the module docstring). Thread-safe; one instance per test.

    ``tls=False`` serves plain HTTP (the CA is still generated, Vault wants one anyway).
    ``issuer`` is the tokens' ``iss``; ``api_audiences`` the API server's own audiences (default
    ``[issuer]``, like ``--api-audiences`` defaulting to ``--service-account-issuer``).
    """

    def __init__(
        self,
        *,
        tls: bool = True,
        issuer: str = DEFAULT_ISSUER,
        api_audiences: Iterable[str] | None = None,
    ) -> None:
        self.tls = tls
        self.issuer = issuer
        self.api_audiences: list[str] = list(api_audiences) if api_audiences is not None else [issuer]
        self._ca = TestCA("fake-kube-api-ca")
        self._serving = self._ca.issue(
            "kube-apiserver",
            ["localhost", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
            ["127.0.0.1"],
            days=1,
        )
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self._signing_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = _b64url(hashlib.sha256(der).digest())
        self._lock = threading.RLock()
        self._rules: list[Rule] = []
        self._service_accounts: dict[tuple[str, str], _ServiceAccount] = {}
        self._secrets: dict[tuple[str, str], _JSON] = {}
        self._roles: dict[tuple[str, str], list[_JSON]] = {}
        self._role_bindings: dict[tuple[str, str], _JSON] = {}
        self._jobs: dict[tuple[str, str], str] = {}
        self._resource_version = 1000
        self._log: list[RequestRecord] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._connections: set[socket.socket] = set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> KubeAPIServer:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread. Returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError("already started")
        self._tmpdir = tempfile.TemporaryDirectory(prefix="fake-kube-api-")
        tmp = Path(self._tmpdir.name)
        (tmp / "ca.crt").write_text(self._ca.cert_pem)
        context: ssl.SSLContext | None = None
        if self.tls:
            _, key_path = self._serving.write(tmp)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(tmp / "tls.crt", key_path)
        api = self

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = False

            def finish_request(self, request: Any, client_address: Any) -> None:
                # The TLS handshake runs in the per-connection thread, so a client that never
                # completes it cannot block the accept loop.
                request.settimeout(10)
                # The handshake and the answer go out in several small writes; with Nagle's algorithm
                # each waits for the client's delayed ACK (~40 ms a connection). The real API server
                # (Go) sets TCP_NODELAY on every connection, as Go's net package does by default.
                request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if context is not None:
                    try:
                        request = context.wrap_socket(request, server_side=True)
                    except (OSError, ssl.SSLError):
                        return
                with api._lock:
                    api._connections.add(request)
                try:
                    super().finish_request(request, client_address)
                finally:
                    with api._lock:
                        api._connections.discard(request)

        self._httpd = _Server(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-kube-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, remove the temporary CA file. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            with self._lock:
                open_connections = list(self._connections)
            for conn in open_connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>`` (``http://`` with ``tls=False``): Vault's ``kubernetes_host``."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> str:
        """The PEM CA certificate that signed the serving certificate (``kubernetes_ca_cert``)."""
        return self._ca.cert_pem

    @property
    def ca_file(self) -> str:
        """Path of a file holding :attr:`ca_pem` (exists while the server runs)."""
        if self._tmpdir is None:
            raise RuntimeError("not started")
        return str(Path(self._tmpdir.name) / "ca.crt")

    @property
    def public_key_pem(self) -> str:
        """The service-account signing key's public half (for Vault's ``pem_keys``)."""
        return (
            self._signing_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def jwks(self) -> _JSON:
        """The JWKS document served at ``/openid/v1/jwks``."""
        numbers = self._signing_key.public_key().public_numbers()

        def _int(value: int) -> str:
            return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        return {
            "keys": [
                {
                    "use": "sig",
                    "kty": "RSA",
                    "kid": self.key_id,
                    "alg": "RS256",
                    "n": _int(numbers.n),
                    "e": _int(numbers.e),
                }
            ]
        }

    # ------------------------------------------------------------------ service accounts & tokens

    def create_service_account(self, namespace: str, name: str, uid: str | None = None) -> str:
        """Create (or recreate with a new uid) a service account; returns its uid. Recreating with
        a different uid invalidates its earlier tokens, like deleting and recreating it."""
        with self._lock:
            sa = _ServiceAccount(uid or str(uuid.uuid4()))
            self._service_accounts[(namespace, name)] = sa
            return sa.uid

    def delete_service_account(self, namespace: str, name: str) -> None:
        """Delete a service account: its tokens stop authenticating."""
        with self._lock:
            sa = self._service_accounts.get((namespace, name))
            if sa is not None:
                sa.deleted = True

    def mint_service_account_token(
        self,
        namespace: str,
        name: str,
        uid: str | None = None,
        audiences: Iterable[str] | None = None,
        ttl: int = 3600,
        *,
        pod: tuple[str, str] | None = None,
    ) -> str:
        """A signed service-account token (what the kubelet projects into a pod).

        The service account is created on first use (with ``uid`` or a random one); passing a
        ``uid`` different from the existing one recreates it. ``audiences`` defaults to the API
        server's audiences. ``ttl`` seconds from now (``<= 0`` gives an already expired token).
        ``pod=(name, uid)`` binds the token to a pod (claim ``kubernetes.io.pod``).
        """
        with self._lock:
            existing = self._service_accounts.get((namespace, name))
            if existing is None or existing.deleted or (uid is not None and uid != existing.uid):
                sa_uid = self.create_service_account(namespace, name, uid)
            else:
                sa_uid = existing.uid
        now = int(time.time())
        k8s_claims: _JSON = {"namespace": namespace, "serviceaccount": {"name": name, "uid": sa_uid}}
        if pod is not None:
            k8s_claims["pod"] = {"name": pod[0], "uid": pod[1]}
        claims: _JSON = {
            "aud": list(audiences) if audiences is not None else list(self.api_audiences),
            "exp": now + ttl,
            "iat": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": k8s_claims,
            "nbf": now if ttl > 0 else now + ttl - 1,
            "sub": service_account_username(namespace, name),
        }
        if ttl <= 0:
            claims["iat"] = claims["nbf"]
        header = {"alg": "RS256", "kid": self.key_id}
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._signing_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def _validate_token(self, token: str, audiences: list[str]) -> tuple[_Identity, list[str]]:
        """Authenticate a bearer token against ``audiences``; returns the identity and the
        audiences it is valid for, or raises :class:`_TokenError`."""
        parts = token.split(".")
        if len(parts) != 3:
            raise _TokenError("invalid bearer token, token lookup failed")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error) as exc:
            raise _TokenError("invalid bearer token, malformed token") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _TokenError("invalid bearer token, malformed token")
        if header.get("alg") != "RS256" or header.get("kid") != self.key_id:
            raise _TokenError("invalid bearer token, token lookup failed")
        try:
            self._signing_key.public_key().verify(
                signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature as exc:
            raise _TokenError("invalid bearer token, error in cryptographic primitive") from exc
        if claims.get("iss") != self.issuer:
            raise _TokenError("invalid bearer token, token issuer is not accepted")
        now = time.time()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or now >= exp:
            raise _TokenError("invalid bearer token, service account token has expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and now < nbf:
            raise _TokenError("invalid bearer token, service account token is not valid yet")
        raw_aud = claims.get("aud")
        token_aud = [raw_aud] if isinstance(raw_aud, str) else list(raw_aud or [])
        matched = [a for a in audiences if a in token_aud]
        if not matched:
            raise _TokenError(
                f"invalid bearer token, token audiences {json.dumps(token_aud)} is invalid for the "
                f"target audiences {json.dumps(audiences)}"
            )
        k8s = claims.get("kubernetes.io")
        if not isinstance(k8s, dict):
            raise _TokenError("invalid bearer token, token lookup failed")
        sa_claim = k8s.get("serviceaccount")
        if not isinstance(sa_claim, dict):
            raise _TokenError("invalid bearer token, token lookup failed")
        namespace, name, uid = str(k8s.get("namespace")), str(sa_claim.get("name")), str(sa_claim.get("uid"))
        with self._lock:
            sa = self._service_accounts.get((namespace, name))
            if sa is None or sa.deleted:
                raise _TokenError(f"invalid bearer token, service account {namespace}/{name} has been deleted")
            if sa.uid != uid:
                raise _TokenError(f"invalid bearer token, service account UID ({sa.uid}) does not match claim ({uid})")
        identity = _Identity(
            username=service_account_username(namespace, name),
            uid=uid,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            extra={"authentication.kubernetes.io/credential-id": [f"JTI={claims.get('jti')}"]},
        )
        pod = k8s.get("pod")
        if isinstance(pod, dict):
            identity.extra["authentication.kubernetes.io/pod-name"] = [str(pod.get("name"))]
            identity.extra["authentication.kubernetes.io/pod-uid"] = [str(pod.get("uid"))]
        return identity, matched

    # ------------------------------------------------------------------ RBAC

    def allow(
        self,
        subject: str,
        verbs: Iterable[str],
        resources: Iterable[str],
        namespace: str | None = None,
        resource_names: Iterable[str] = (),
    ) -> Rule:
        """Grant ``subject`` (user or group) ``verbs`` on ``resources`` (see :class:`Rule`)."""
        rule = Rule(subject, tuple(verbs), tuple(resources), namespace, tuple(resource_names))
        with self._lock:
            self._rules.append(rule)
        return rule

    def allow_service_account(
        self,
        sa_namespace: str,
        sa_name: str,
        verbs: Iterable[str],
        resources: Iterable[str],
        namespace: str | None = None,
        resource_names: Iterable[str] = (),
    ) -> Rule:
        """:meth:`allow` for ``system:serviceaccount:<sa_namespace>:<sa_name>``."""
        return self.allow(service_account_username(sa_namespace, sa_name), verbs, resources, namespace, resource_names)

    def allow_token_reviews(self, subject: str) -> Rule:
        """What the ``system:auth-delegator`` ClusterRole grants: create TokenReviews."""
        return self.allow(subject, ["create"], ["tokenreviews"])

    def revoke(self, rule: Rule) -> None:
        """Remove a rule added with :meth:`allow`."""
        with self._lock:
            self._rules.remove(rule)

    def _authorize(self, identity: _Identity, verb: str, resource: str, namespace: str, name: str) -> None:
        names = identity.names()
        with self._lock:
            if any(rule.matches(names, verb, resource, namespace, name) for rule in self._rules):
                return
            if self._bound_rules_allow(names, verb, resource, namespace, name):
                return
        group = _API_GROUPS.get(resource, "")
        qualified = f"{resource}.{group}" if group else resource
        what = f'{qualified} "{name}"' if name else qualified
        where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        details: _JSON = {"kind": resource}
        if group:
            details["group"] = group
        if name:
            details["name"] = name
        raise _APIError(
            403,
            "Forbidden",
            f'{what} is forbidden: User "{identity.username}" cannot {verb} resource "{resource}" '
            f'in API group "{group}" {where}',
            details,
        )

    # ------------------------------------------------------------------ RBAC objects, Jobs, garbage collection

    def put_role(self, namespace: str, name: str, rules: Iterable[Mapping[str, Any]]) -> None:
        """A Role as the stack declares it (``rules`` in the API's form)."""
        with self._lock:
            self._roles[(namespace, name)] = [_copy(dict(rule)) for rule in rules]

    def put_role_binding(self, namespace: str, name: str, role: str, subjects: Iterable[Mapping[str, Any]]) -> _JSON:
        """A RoleBinding to the Role ``role`` as the stack declares it (a new one replaces an old one)."""
        obj: _JSON = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [_copy(dict(subject)) for subject in subjects],
        }
        with self._lock:
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._role_bindings[(namespace, name)] = obj
            return _copy(obj)

    def get_role_binding(self, namespace: str, name: str) -> _JSON | None:
        with self._lock:
            obj = self._role_bindings.get((namespace, name))
            return _copy(obj) if obj is not None else None

    def create_job(self, namespace: str, name: str) -> str:
        """A Job as an owner: its uid (what the Job controller puts on its Pods, ``controller-uid``)."""
        uid = str(uuid.uuid4())
        with self._lock:
            self._jobs[(namespace, name)] = uid
        return uid

    def delete_job(self, namespace: str, name: str) -> None:
        """What the TTL-after-finished controller does to a finished Job: delete it cascadingly."""
        with self._lock:
            self._jobs.pop((namespace, name), None)
            self.collect_garbage()

    def collect_garbage(self) -> list[str]:
        """Delete each RoleBinding and Secret whose ownerReferences all name absent owners; what was deleted."""
        with self._lock:
            owners = set(self._jobs.values())
            deleted: list[str] = []
            for kind, store in (("RoleBinding", self._role_bindings), ("Secret", self._secrets)):
                for key, obj in list(store.items()):
                    refs = obj["metadata"].get("ownerReferences") or []
                    if refs and not any(ref.get("uid") in owners for ref in refs):
                        del store[key]
                        deleted.append(f"{kind} {key[0]}/{key[1]}")
            return deleted

    def _bound_rules_allow(self, names: set[str], verb: str, resource: str, namespace: str, name: str) -> bool:
        group = _API_GROUPS.get(resource, "")
        for (ns, _), binding in self._role_bindings.items():
            if ns != namespace or not any(_subject_name(s, ns) in names for s in binding["subjects"]):
                continue
            for rule in self._roles.get((ns, binding["roleRef"]["name"]), []):
                if (
                    _listed(group, rule.get("apiGroups"))
                    and _listed(resource, rule.get("resources"))
                    and _listed(verb, rule.get("verbs"))
                    and (not rule.get("resourceNames") or (bool(name) and name in rule["resourceNames"]))
                ):
                    return True
        return False

    def _role_binding_patch(self, identity: _Identity, namespace: str, name: str, patch: _JSON) -> _JSON:
        with self._lock:
            current = self._role_bindings.get((namespace, name))
            if current is None:
                raise _not_found("rolebindings", name)
            merged = _merge_patch(_copy(current), patch)
            if merged.get("roleRef") != current["roleRef"]:
                raise _APIError(
                    422,
                    "Invalid",
                    f'RoleBinding.rbac.authorization.k8s.io "{name}" is invalid: '
                    "roleRef: Invalid value: cannot change roleRef",
                )
            gc_fields = ("ownerReferences", "finalizers", "resourceVersion")
            rest = [
                {**o, "metadata": {k: v for k, v in o["metadata"].items() if k not in gc_fields}}
                for o in (current, merged)
            ]
            role = merged["roleRef"]["name"]
            if rest[0] != rest[1] and not self._holds_role(identity, namespace, role):
                raise _APIError(
                    403,
                    "Forbidden",
                    f'rolebindings.rbac.authorization.k8s.io "{name}" is forbidden: '
                    f'user "{identity.username}" is attempting to grant RBAC permissions not currently held',
                )
            if merged["metadata"].get("ownerReferences") != current["metadata"].get("ownerReferences"):
                self._authorize(
                    identity, "delete", "rolebindings", namespace, name
                )  # OwnerReferencesPermissionEnforcement
            merged["metadata"]["resourceVersion"] = self._next_rv()
            self._role_bindings[(namespace, name)] = merged
            return _copy(merged)

    def _holds_role(self, identity: _Identity, namespace: str, role: str) -> bool:
        """``bind`` on the Role, or the Role already bound to the requester (so it holds its permissions)."""
        names = identity.names()
        if any(rule.matches(names, "bind", "roles", namespace, role) for rule in self._rules):
            return True
        return any(
            ns == namespace
            and b["roleRef"]["name"] == role
            and any(_subject_name(s, ns) in names for s in b["subjects"])
            for (ns, _), b in self._role_bindings.items()
        )

    def _role_binding_request(
        self, identity: _Identity, method: str, namespace: str, name: str, headers: Mapping[str, str], payload: Any
    ) -> tuple[int, _JSON]:
        verb = {"GET": "get", "PATCH": "patch", "DELETE": "delete"}.get(method)
        if verb is None:
            raise _APIError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        self._authorize(identity, verb, "rolebindings", namespace, name)
        if verb == "get":
            obj = self.get_role_binding(namespace, name)
            if obj is None:
                raise _not_found("rolebindings", name)
            return 200, obj
        if verb == "patch":
            content_type = (headers.get("Content-Type") or headers.get("content-type") or "").split(";")[0].strip()
            if content_type != "application/merge-patch+json" or not isinstance(payload, dict):
                raise _APIError(
                    415, "UnsupportedMediaType", "this stand-in takes a JSON merge patch of a RoleBinding only"
                )
            return 200, self._role_binding_patch(identity, namespace, name, payload)
        with self._lock:
            current = self._role_bindings.pop((namespace, name), None)
            if current is None:
                raise _not_found("rolebindings", name)
            self._next_rv()
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def count(
        self,
        method: str | None = None,
        path: str | None = None,
        user: str | None = None,
        status: int | None = None,
    ) -> int:
        """How many logged requests match every given field (``path`` is exact, without query)."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and (path is None or r.path == path)
            and (user is None or r.user == user)
            and (status is None or r.status == status)
        )

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    # ------------------------------------------------------------------ secrets (direct access)

    def _next_rv(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def put_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes | str],
        *,
        type: str = "Opaque",
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> _JSON:
        """Create or replace a Secret directly (no authorisation, not logged); returns it."""
        encoded = {k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode() for k, v in data.items()}
        with self._lock:
            old = self._secrets.get((namespace, name))
            meta: _JSON = {
                "name": name,
                "namespace": namespace,
                "uid": old["metadata"]["uid"] if old else str(uuid.uuid4()),
                "resourceVersion": self._next_rv(),
                "creationTimestamp": old["metadata"]["creationTimestamp"] if old else _now_rfc3339(),
            }
            if labels:
                meta["labels"] = dict(labels)
            if annotations:
                meta["annotations"] = dict(annotations)
            obj: _JSON = {
                "kind": "Secret",
                "apiVersion": "v1",
                "metadata": meta,
                "data": encoded,
                "type": type,
            }
            self._secrets[(namespace, name)] = obj
            return _copy(obj)

    def get_secret(self, namespace: str, name: str) -> _JSON | None:
        """The stored Secret object (a copy, base64 ``data``) or ``None``."""
        with self._lock:
            obj = self._secrets.get((namespace, name))
            return _copy(obj) if obj is not None else None

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """The Secret's decoded ``data`` or ``None`` if it does not exist."""
        obj = self.get_secret(namespace, name)
        if obj is None:
            return None
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    # ------------------------------------------------------------------ secrets (API semantics)

    @staticmethod
    def _normalize_secret_body(body: _JSON, namespace: str, name: str | None) -> _JSON:
        if not isinstance(body, dict) or body.get("kind", "Secret") != "Secret":
            raise _APIError(400, "BadRequest", "the body of the request was not a Secret")
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        if name is not None and meta.get("name", name) != name:
            raise _APIError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if meta.get("namespace", namespace) != namespace:
            raise _APIError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        data = body.get("data") or {}
        if not isinstance(data, dict):
            raise _APIError(400, "BadRequest", "Secret.data: expected an object")
        for key, value in data.items():
            try:
                base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _APIError(
                    400,
                    "BadRequest",
                    f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at key {key!r}',
                ) from exc
        merged = dict(data)
        for key, value in (body.get("stringData") or {}).items():
            merged[key] = base64.b64encode(str(value).encode()).decode()
        obj: _JSON = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {
                k: v
                for k, v in meta.items()
                if k
                in (
                    "name",
                    "generateName",
                    "labels",
                    "annotations",
                    "resourceVersion",
                    "ownerReferences",
                    "finalizers",
                )
            },
            "data": merged,
            "type": body.get("type") or "Opaque",
        }
        if "immutable" in body:
            obj["immutable"] = body["immutable"]
        obj["metadata"]["namespace"] = namespace
        return obj

    def _secret_create(self, namespace: str, body: _JSON, *, dry_run: bool = False) -> _JSON:
        obj = self._normalize_secret_body(body, namespace, None)
        meta = obj["metadata"]
        meta.pop("resourceVersion", None)
        with self._lock:
            if not meta.get("name"):
                if meta.get("generateName"):
                    meta["name"] = meta["generateName"] + _secrets.token_hex(3)[:5]
                else:
                    raise _APIError(
                        422,
                        "Invalid",
                        f'Secret "" is invalid: metadata.name: {_NAME_REQUIRED}',
                        {
                            "kind": "Secret",
                            "causes": [
                                {
                                    "reason": "FieldValueRequired",
                                    "message": _NAME_REQUIRED,
                                    "field": "metadata.name",
                                }
                            ],
                        },
                    )
            name = meta["name"]
            if (namespace, name) in self._secrets:
                raise _APIError(
                    409,
                    "AlreadyExists",
                    f'secrets "{name}" already exists',
                    {"name": name, "kind": "secrets"},
                )
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now_rfc3339()
            if dry_run:  # what the API server answers for a dry run: the object, nothing persisted
                return _copy(obj)
            meta["resourceVersion"] = self._next_rv()
            self._secrets[(namespace, name)] = obj
            return _copy(obj)

    def _secret_update(self, namespace: str, name: str, body: _JSON) -> _JSON:
        obj = self._normalize_secret_body(body, namespace, name)
        with self._lock:
            current = self._secrets.get((namespace, name))
            if current is None:
                raise _not_found("secrets", name)
            wanted_rv = obj["metadata"].get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise _APIError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on secrets "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    {"name": name, "kind": "secrets"},
                )
            if current.get("immutable"):
                raise _APIError(
                    422,
                    "Invalid",
                    f'Secret "{name}" is invalid: data: Forbidden: field is immutable when `immutable` is set',
                    {"name": name, "kind": "Secret"},
                )
            meta = obj["metadata"]
            meta["name"] = name
            meta["uid"] = current["metadata"]["uid"]
            meta["creationTimestamp"] = current["metadata"]["creationTimestamp"]
            meta["resourceVersion"] = self._next_rv()
            self._secrets[(namespace, name)] = obj
            return _copy(obj)

    def _secret_patch(self, namespace: str, name: str, patch: _JSON) -> _JSON:
        with self._lock:
            current = self._secrets.get((namespace, name))
            if current is None:
                raise _not_found("secrets", name)
            merged = _merge_patch(_copy(current), patch)
            if not (isinstance(patch.get("metadata"), dict) and "resourceVersion" in patch["metadata"]):
                merged.setdefault("metadata", {}).pop("resourceVersion", None)
            return self._secret_update(namespace, name, merged)

    def _secret_delete(self, namespace: str, name: str) -> _JSON:
        with self._lock:
            current = self._secrets.pop((namespace, name), None)
            if current is None:
                raise _not_found("secrets", name)
            self._next_rv()
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": "secrets", "uid": current["metadata"]["uid"]},
        }

    def _secret_list(self, namespace: str, label_selector: str) -> _JSON:
        terms = _parse_label_selector(label_selector)
        with self._lock:
            items = [
                {k: v for k, v in _copy(obj).items() if k not in ("kind", "apiVersion")}
                for (ns, _), obj in sorted(self._secrets.items())
                if (not namespace or ns == namespace) and _labels_match(obj["metadata"].get("labels") or {}, terms)
            ]
            rv = str(self._resource_version)
        return {"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}

    # ------------------------------------------------------------------ token review

    def _token_review(self, body: _JSON) -> _JSON:
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise _APIError(400, "BadRequest", "the body of the request was not a TokenReview")
        token = spec.get("token")
        if not token or not isinstance(token, str):
            raise _APIError(400, "BadRequest", "token is required for TokenReview in authentication")
        requested = [str(a) for a in (spec.get("audiences") or [])]
        status: _JSON
        try:
            identity, matched = self._validate_token(token, requested or self.api_audiences)
            status = {
                "authenticated": True,
                "user": {
                    "username": identity.username,
                    "uid": identity.uid,
                    "groups": identity.groups,
                    "extra": identity.extra,
                },
                "audiences": matched,
            }
        except _TokenError as exc:
            status = {"authenticated": False, "user": {}, "error": str(exc)}
        return {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }

    # ------------------------------------------------------------------ dispatch

    def _authenticate(self, authorization: str | None) -> _Identity:
        if not authorization:
            return _Identity("system:anonymous", groups=["system:unauthenticated"])
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _APIError(401, "Unauthorized", "Unauthorized")
        try:
            identity, _ = self._validate_token(token.strip(), self.api_audiences)
        except _TokenError as exc:
            raise _APIError(401, "Unauthorized", "Unauthorized") from exc
        return identity

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, _JSON]:
        """Answer one request (also usable without HTTP) and log it. Returns (status, JSON body)."""
        split = urlsplit(raw_path)
        path, query = split.path.rstrip("/") or "/", split.query
        seen: dict[str, str | None] = {"user": None, "verb": None, "resource_version": None}
        try:
            code, obj = self._dispatch(method, path, query, headers, body, seen)
        except _APIError as exc:
            code, obj = exc.code, exc.status()
        self._record(RequestRecord(method, path, query, seen["user"], seen["verb"], code, seen["resource_version"]))
        return code, obj

    def _dispatch(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        seen: dict[str, str | None],
    ) -> tuple[int, _JSON]:
        not_allowed = _APIError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )
        if method == "GET" and path == "/.well-known/openid-configuration":
            return 200, {
                "issuer": self.issuer,
                "jwks_uri": f"{self.url}/openid/v1/jwks",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        if method == "GET" and path == "/openid/v1/jwks":
            return 200, self.jwks()
        if method == "GET" and path == "/version":
            return 200, {
                "major": "1",
                "minor": "33",
                "gitVersion": "v1.33.0-fedobs-fake",
                "platform": "linux/amd64",
            }
        identity = self._authenticate(headers.get("Authorization") or headers.get("authorization"))
        seen["user"] = identity.username
        payload: Any = None
        if method in ("POST", "PUT", "PATCH"):
            try:
                payload = json.loads(body or b"null")
            except ValueError as exc:
                raise _APIError(400, "BadRequest", f"the request body is not valid JSON: {exc}") from exc
            if isinstance(payload, dict) and isinstance(payload.get("metadata"), dict):
                seen["resource_version"] = payload["metadata"].get("resourceVersion")
        if path == "/apis/authentication.k8s.io/v1/tokenreviews":
            if method != "POST":
                raise not_allowed
            seen["verb"] = "create"
            self._authorize(identity, "create", "tokenreviews", "", "")
            return 201, self._token_review(payload)
        match_binding = _ROLE_BINDINGS_ITEM.match(path)
        if match_binding:
            seen["verb"] = {"GET": "get", "PATCH": "patch", "DELETE": "delete"}.get(method)
            return self._role_binding_request(
                identity, method, match_binding.group(1), match_binding.group(2), headers, payload
            )
        match_item = _SECRETS_ITEM.match(path)
        if match_item:
            namespace, name = match_item.group(1), match_item.group(2)
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
            if verb is None:
                raise not_allowed
            seen["verb"] = verb
            self._authorize(identity, verb, "secrets", namespace, name)
            if verb == "get":
                obj = self.get_secret(namespace, name)
                if obj is None:
                    raise _not_found("secrets", name)
                return 200, obj
            if verb == "update":
                return 200, self._secret_update(namespace, name, payload)
            if verb == "patch":
                content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
                if content_type not in _PATCH_TYPES:
                    raise _APIError(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types include: "
                        "application/merge-patch+json, application/strategic-merge-patch+json",
                    )
                if not isinstance(payload, dict):
                    raise _APIError(400, "BadRequest", "a merge patch must be a JSON object")
                return 200, self._secret_patch(namespace, name, payload)
            return 200, self._secret_delete(namespace, name)
        match_ns = _SECRETS_NS.match(path)
        if match_ns or path == "/api/v1/secrets":
            namespace = match_ns.group(1) if match_ns else ""
            if method == "GET":
                seen["verb"] = "list"
                self._authorize(identity, "list", "secrets", namespace, "")
                selector = parse_qs(query).get("labelSelector", [""])[0]
                return 200, self._secret_list(namespace, selector)
            if method == "POST" and namespace:
                seen["verb"] = "create"
                self._authorize(identity, "create", "secrets", namespace, "")
                dry_run = parse_qs(query).get("dryRun") == ["All"]
                return 201, self._secret_create(namespace, payload, dry_run=dry_run)
            raise not_allowed
        raise _APIError(404, "NotFound", "the server could not find the requested resource", {})


def _make_handler(api: KubeAPIServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fake-kube-apiserver"
        timeout = 10

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items()}
            code, obj = api.handle(self.command, self.path, headers, body)
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve
        do_PATCH = _serve
        do_DELETE = _serve

    return _Handler
