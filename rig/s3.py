"""A moto S3 server on loopback, with failures on demand, for the programs that talk to S3.

:class:`MotoS3` runs moto's ``ThreadedMotoServer`` in this process, bound to 127.0.0.1 on a
free port (moto binds 0.0.0.0 unless told otherwise), and puts a small WSGI layer in front of
moto that

* logs every request (:attr:`MotoS3.requests`: method, path, query, S3 operation class, status),
* fails requests of chosen operation classes on demand (:meth:`MotoS3.fail`,
  :meth:`MotoS3.failing`): the request body is read and discarded, then the client gets an S3
  error document (default ``403 AccessDenied``, what a bucket policy or a read-only key gives;
  ``500 InternalError`` / ``503 SlowDown`` exercise client retries). Failed requests never reach
  moto, so a denied upload stores nothing.
* can be taken down and brought back on the same port (:meth:`MotoS3.down`): clients get
  ``connection refused`` meanwhile; moto's state lives in this process and survives.

Operation classes (path-style requests, which is what botocore uses for an IP endpoint):
``upload`` (PutObject, CopyObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload),
``download`` (GetObject), ``head`` (HeadObject, HeadBucket), ``list`` (ListObjects[V2],
ListMultipartUploads), ``delete`` (DeleteObject, DeleteObjects, AbortMultipartUpload),
``bucket`` (other bucket-level calls).

Credentials are dummy values; :meth:`MotoS3.env` returns the standard ``AWS_*`` variables for a
subprocess (no endpoint variable: pass :attr:`MotoS3.endpoint_url` to the program explicitly).
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import boto3
from botocore.config import Config
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from werkzeug.serving import make_server

__all__ = ["OPERATIONS", "FaultRule", "MotoS3", "S3Request", "classify"]

OPERATIONS = ("upload", "download", "head", "list", "delete", "bucket")

_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Slow Down",
}

_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def classify(method: str, path: str, query: str, headers: dict[str, str] | None = None) -> str:
    """The operation class of a path-style S3 request (see the module docstring)."""
    parts = path.lstrip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    params = parse_qs(query, keep_blank_values=True)
    if method == "PUT" and has_key:
        if params.keys() & {"tagging", "acl", "retention", "legal-hold"}:
            return "bucket"
        return "upload"
    if method == "POST" and has_key and ("uploads" in params or "uploadId" in params):
        return "upload"
    if method == "DELETE" and has_key:
        return "delete"
    if method == "POST" and "delete" in params:
        return "delete"
    if method == "HEAD":
        return "head"
    if method == "GET" and has_key:
        return "download" if "uploadId" not in params else "list"
    if method == "GET" and (
        not params.keys()
        - {
            "list-type",
            "prefix",
            "delimiter",
            "max-keys",
            "continuation-token",
            "start-after",
            "marker",
            "encoding-type",
            "fetch-owner",
            "uploads",
        }
    ):
        return "list"
    return "bucket"


@dataclass(frozen=True)
class S3Request:
    """One request seen by the fixture (``failed`` when a fault rule answered it)."""

    method: str
    path: str
    query: str
    operation: str
    status: int
    failed: bool


@dataclass
class FaultRule:
    """Answer requests of ``operations`` with ``status``/``code`` (``count=None``: until removed).

    ``bucket`` limits the rule to one bucket; ``skip`` lets that many matching requests through
    first (e.g. fail the second part of a multipart upload).
    """

    operations: frozenset[str]
    status: int = 403
    code: str = "AccessDenied"
    message: str = "Access Denied"
    bucket: str | None = None
    count: int | None = None
    skip: int = 0
    hits: int = field(default=0, init=False)

    def applies(self, operation: str, path: str) -> bool:
        if operation not in self.operations:
            return False
        if self.bucket is not None and path.lstrip("/").split("/", 1)[0] != self.bucket:
            return False
        return self.count is None or self.hits < self.count + self.skip


class _Server(ThreadedMotoServer):
    """ThreadedMotoServer with the fault/log middleware around moto's WSGI app."""

    def __init__(self, ip_address: str, port: int, wrap: Callable[[_WSGIApp], _WSGIApp]) -> None:
        super().__init__(ip_address=ip_address, port=port, verbose=False)
        self._wrap = wrap

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        class _QuietHandler(MotoRequestHandler):
            def log(self, *args: Any) -> None:
                """No access log on the test's stderr."""

        app = self._wrap(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=_QuietHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


class MotoS3:
    """moto's S3 on ``http://127.0.0.1:<free port>`` with fault injection (module docstring).

    ``reset=True`` resets moto's in-process state on start (every moto backend in the process).
    """

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        access_key_id: str = "fedobs-test-key",
        secret_access_key: str = "fedobs-test-secret",
        reset: bool = True,
    ) -> None:
        self.region = region
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self._reset = reset
        self._server: _Server | None = None
        self._port = 0
        self._lock = threading.Lock()
        self._faults: list[FaultRule] = []
        self._log: list[S3Request] = []

    # ------------------------------------------------------------------ lifecycle

    def _start_server(self, port: int) -> None:
        server = _Server("127.0.0.1", port, self._middleware)
        server.start()
        self._server = server
        self._port = server.get_host_and_port()[1]

    def start(self) -> MotoS3:
        """Start serving (a free port on 127.0.0.1). Returns ``self``."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._start_server(0)
        if self._reset:
            request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", data=b"", method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        return self

    def stop(self) -> None:
        """Stop serving. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @contextlib.contextmanager
    def down(self, restart_timeout: float = 10.0) -> Iterator[None]:
        """Refuse connections inside the block; serve again (same port, same data) after it."""
        port = self._port
        self.stop()
        try:
            yield
        finally:
            deadline = time.monotonic() + restart_timeout
            while True:
                try:
                    self._start_server(port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("not started")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ clients

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style, few retries). ``config`` goes to
        ``botocore.config.Config``."""
        settings: dict[str, Any] = {
            "retries": {"max_attempts": 2, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 30,
            "s3": {"addressing_style": "path"},
        }
        settings.update(config)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(**settings),
        )

    def env(self, **extra: str) -> dict[str, str]:
        """The standard AWS variables a subprocess needs for this server (plus ``extra``)."""
        values = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        values.update(extra)
        return values

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (random name by default); returns its name."""
        bucket = name or f"bucket-{uuid.uuid4().hex[:12]}"
        client = self.client()
        if self.region == "us-east-1":
            client.create_bucket(Bucket=bucket)
        else:
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": self.region})
        return bucket

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (sorted)."""
        paginator = self.client().get_paginator("list_objects_v2")
        found: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            found.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(found)

    def get(self, bucket: str, key: str) -> bytes:
        """An object's content."""
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def multipart_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """Multipart uploads started and neither completed nor aborted."""
        uploads: list[dict[str, Any]] = self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return uploads

    # ------------------------------------------------------------------ faults and log

    def fail(
        self,
        operations: Iterable[str] = ("upload",),
        *,
        status: int = 403,
        code: str = "AccessDenied",
        message: str = "Access Denied",
        bucket: str | None = None,
        count: int | None = None,
        skip: int = 0,
    ) -> FaultRule:
        """Make requests of ``operations`` fail from now on (see :class:`FaultRule`)."""
        ops = frozenset(operations)
        unknown = ops - set(OPERATIONS)
        if unknown:
            raise ValueError(f"unknown operation classes {sorted(unknown)}; use {OPERATIONS}")
        rule = FaultRule(ops, status, code, message, bucket, count, skip)
        with self._lock:
            self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @contextlib.contextmanager
    def failing(self, operations: Iterable[str] = ("upload",), **kwargs: Any) -> Iterator[FaultRule]:
        """:meth:`fail` for the duration of a ``with`` block."""
        rule = self.fail(operations, **kwargs)
        try:
            yield rule
        finally:
            with self._lock:
                if rule in self._faults:
                    self._faults.remove(rule)

    @property
    def requests(self) -> list[S3Request]:
        """A copy of the request log (moto-api calls excluded), oldest first."""
        with self._lock:
            return list(self._log)

    def count(self, operation: str | None = None, *, failed: bool | None = None) -> int:
        """How many logged requests had that operation class (and failed / did not)."""
        return sum(
            1
            for r in self.requests
            if (operation is None or r.operation == operation) and (failed is None or r.failed == failed)
        )

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _middleware(self, app: _WSGIApp) -> _WSGIApp:
        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            method = str(environ.get("REQUEST_METHOD", "GET"))
            path = str(environ.get("PATH_INFO", "/"))
            query = str(environ.get("QUERY_STRING", ""))
            if path.startswith("/moto-api"):
                return app(environ, start_response)
            operation = classify(method, path, query)
            rule: FaultRule | None = None
            with self._lock:
                for candidate in self._faults:
                    if candidate.applies(operation, path):
                        candidate.hits += 1
                        if candidate.hits > candidate.skip:
                            rule = candidate
                            break
            if rule is not None:
                _drain(environ)
                request_id = uuid.uuid4().hex[:16].upper()
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{rule.code}</Code><Message>{rule.message}</Message>"
                    f"<RequestId>{request_id}</RequestId><HostId>fedobs-moto</HostId></Error>"
                ).encode()
                reason = _REASONS.get(rule.status, "Error")
                start_response(
                    f"{rule.status} {reason}",
                    [
                        ("Content-Type", "application/xml"),
                        ("Content-Length", "0" if method == "HEAD" else str(len(body))),
                        ("x-amz-request-id", request_id),
                        ("Connection", "close"),
                    ],
                )
                self._append(S3Request(method, path, query, operation, rule.status, True))
                return [] if method == "HEAD" else [body]
            status_holder: list[int] = []

            def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
                status_holder.append(int(status.split(" ", 1)[0]))
                return start_response(status, headers, exc_info)

            result = app(environ, recording_start_response)
            self._append(S3Request(method, path, query, operation, status_holder[0] if status_holder else 0, False))
            return result

        return wrapped

    def _append(self, record: S3Request) -> None:
        with self._lock:
            self._log.append(record)


def _drain(environ: dict[str, Any]) -> None:
    """Read and discard the request body so the connection is left in a clean state."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    length = int(environ.get("CONTENT_LENGTH") or 0)
    with contextlib.suppress(Exception):
        while length > 0:
            chunk = stream.read(min(length, 65536))
            if not chunk:
                break
            length -= len(chunk)
