"""The programs' one HTTP client (programs/vault_http.py): its policy against loopback HTTPS servers
started here (``http.server`` in a thread, wrapped in ``ssl``, on a port the kernel picks).

Every wait has a deadline: the client's own timeouts (a couple of seconds), the server threads'
joins and the slow handler's event wait."""

from __future__ import annotations

import io
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from programs.errors import PodProgramError, UsageError, exit_code_of
from programs.vault_http import (
    BadResponse,
    HttpFailure,
    HttpReply,
    RequestRefused,
    ServerUnreachable,
    VaultHttp,
    WriteConflict,
    error_detail,
    tls_context,
)
from rig.pki import TestCA

TOKEN = "s.this-token-must-never-leak-0123456789"
DEADLINE = 5.0

#: One answer: status, headers, body (bytes), or a callable run instead (e.g. to stall).
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Loopback:
    """An HTTPS server on 127.0.0.1 answering from ``routes`` (path -> answer), logging requests."""

    url: str
    routes: dict[str, Answer]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    #: the client port of each request: one port, one TCP connection
    ports: list[int] = field(default_factory=list)
    #: HTTP/1.1 only: close the connection after this many requests on it (0: keep it open)
    close_after: int = 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("vault-http-pki")
    ca, other = TestCA("vault-http CA"), TestCA("some other CA")
    cert, key = ca.issue("loopback", ["vault.test"], ["127.0.0.1"]).write(base / "server")
    named, named_key = ca.issue("named", ["vault.test"], []).write(base / "named")
    return {
        "ca": ca.write(base, "ca.crt"),
        "other_ca": other.write(base, "other-ca.crt"),
        "cert": cert,
        "key": key,
        "named_cert": named,
        "named_key": named_key,
    }


@pytest.fixture
def serve(pki: dict[str, Path]) -> Iterator[Callable[..., Loopback]]:
    started: list[tuple[ThreadingHTTPServer, threading.Thread, Loopback]] = []

    def start(
        routes: dict[str, Answer] | None = None, *, cert: str = "cert", key: str = "key", keep_alive: bool = False
    ) -> Loopback:
        box: list[Loopback] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            served = 0

            def _answer(self) -> None:
                server = box[0]
                server.ports.append(self.client_address[1])
                self.served += 1
                if server.close_after and self.served >= server.close_after:
                    self.close_connection = True
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.requests.append((self.command, self.path, dict(self.headers.items())))
                if self.path == "/v1/slow":
                    server.release.wait(DEADLINE)  # bounded: the client gives up long before
                    answer: Answer = (200, {}, b"{}")
                else:
                    answer = server.routes.get(self.path, (404, {}, b'{"errors": []}'))
                status, headers, body = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki[cert], pki[key])
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        loop = Loopback(f"https://127.0.0.1:{httpd.server_address[1]}", dict(routes or {}))
        box.append(loop)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((httpd, thread, loop))
        return loop

    yield start
    for httpd, thread, loop in started:
        loop.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(DEADLINE)
        assert not thread.is_alive()


def json_answer(status: int, body: object) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def client(url: str, ca: Path | None, **kwargs: object) -> VaultHttp:
    return VaultHttp(url, str(ca) if ca else None, timeout=2.0, flag="--vault-addr", ca_flag="--ca-file", **kwargs)  # type: ignore[arg-type]


def assert_no_token(*texts: object) -> None:
    for text in texts:
        assert TOKEN not in str(text) and TOKEN not in repr(text), text


# ---------------------------------------------------------------------------------------------
def test_an_answer_is_read_with_the_token_in_a_header_only(
    serve: Callable[..., Loopback], pki: dict[str, Path]
) -> None:
    server = serve({"/v1/sys/health": json_answer(200, {"ok": True})})
    vault = client(server.url, pki["ca"])
    reply = vault.raw("GET", "sys/health", token=TOKEN)
    assert reply.status == 200 and reply.body == {"ok": True}
    ((method, path, headers),) = server.requests
    assert (method, path, headers["X-Vault-Token"]) == ("GET", "/v1/sys/health", TOKEN)
    assert_no_token(vault, reply)


def test_a_redirect_is_refused_and_its_location_never_sees_the_token(
    serve: Callable[..., Loopback], pki: dict[str, Path]
) -> None:
    elsewhere = serve({"/v1/secret/x": json_answer(200, {"data": {}})})
    for status in (301, 302, 307, 308):
        server = serve({"/v1/secret/x": (status, {"Location": f"{elsewhere.url}/v1/secret/x"}, b"")})
        vault = client(server.url, pki["ca"])
        with pytest.raises(
            BadResponse, match=rf"HTTP {status}: a redirect to https://127\.0\.0\.1:\d+; redirects"
        ) as e:
            vault.call("GET", "secret/x", token=TOKEN)
        assert e.value.status == status and f"{server.url}/v1/secret/x" in str(e.value)
        assert_no_token(e.value)
        assert len(server.requests) == 1
    assert elsewhere.requests == []  # nothing, and so no token, ever reached the Location


def test_a_body_over_the_cap_is_refused(serve: Callable[..., Loopback], pki: dict[str, Path]) -> None:
    big = json.dumps({"data": "x" * 2000}).encode()
    server = serve({"/v1/big": (200, {}, big), "/v1/fits": (200, {}, big[:1000])})
    vault = client(server.url, pki["ca"], max_body=1000)
    with pytest.raises(BadResponse, match="larger than 1000 bytes; refused"):
        vault.raw("GET", "big", token=TOKEN)
    assert vault.raw("GET", "fits").text == big[:1000].decode()  # exactly the cap is fine


def test_a_download_streams_to_its_file_with_its_own_cap(serve: Callable[..., Loopback], pki: dict[str, Path]) -> None:
    blob = bytes(range(256)) * 40  # 10240 bytes
    server = serve({"/v1/sys/storage/raft/snapshot": (200, {}, blob)})
    vault = client(server.url, pki["ca"], max_body=100)  # the JSON cap does not apply to a stream
    sink = io.BytesIO()
    assert vault.download("sys/storage/raft/snapshot", sink, token=TOKEN, max_bytes=len(blob)) == len(blob)
    assert sink.getvalue() == blob
    small = io.BytesIO()
    with pytest.raises(BadResponse, match="larger than 4096 bytes; refused") as e:
        vault.download("sys/storage/raft/snapshot", small, token=TOKEN, max_bytes=4096)
    assert len(small.getvalue()) <= 4096
    assert_no_token(e.value)


@pytest.mark.parametrize("addr", ["http://127.0.0.1:8200", "ftp://vault:8200", "127.0.0.1:8200", "https://"])
def test_anything_but_https_is_a_usage_error_naming_the_address(addr: str) -> None:
    with pytest.raises(UsageError, match="must be an https:// URL") as e:
        client(addr, None)
    assert f"--vault-addr {addr!r}" in str(e.value)


def test_a_certificate_from_another_ca_is_refused(serve: Callable[..., Loopback], pki: dict[str, Path]) -> None:
    server = serve({"/v1/sys/health": json_answer(200, {})})
    vault = client(server.url, pki["other_ca"])
    with pytest.raises(ServerUnreachable, match="TLS verification failed") as e:
        vault.raw("GET", "sys/health", token=TOKEN)
    assert server.url in str(e.value)
    assert_no_token(e.value)
    assert [r for r in server.requests if r[1] == "/v1/sys/health"] == []


def test_a_given_ca_file_is_the_only_trust(pki: dict[str, Path]) -> None:
    pinned = tls_context(str(pki["ca"]), "--ca-file")
    assert [c["subject"] for c in pinned.get_ca_certs()] == [((("commonName", "vault-http CA"),),)]
    assert pinned.verify_mode == ssl.CERT_REQUIRED and pinned.check_hostname
    with pytest.raises(UsageError, match=r"cannot load the CA file /nonexistent/ca.crt \(--ca-file\)"):
        client("https://127.0.0.1:1", Path("/nonexistent/ca.crt"))


def test_the_tls_server_name_is_verified_when_given(serve: Callable[..., Loopback], pki: dict[str, Path]) -> None:
    server = serve({"/v1/sys/health": json_answer(200, {})}, cert="named_cert", key="named_key")
    with pytest.raises(ServerUnreachable, match="TLS verification failed"):
        client(server.url, pki["ca"]).raw("GET", "sys/health")
    assert client(server.url, pki["ca"], server_name="vault.test").raw("GET", "sys/health").status == 200


def test_a_silent_server_times_out(serve: Callable[..., Loopback], pki: dict[str, Path]) -> None:
    server = serve()
    vault = VaultHttp(server.url, str(pki["ca"]), timeout=0.5)
    with pytest.raises(ServerUnreachable, match=r"timed out after 0\.5s") as e:
        vault.raw("GET", "slow", token=TOKEN)
    assert_no_token(e.value)


def test_the_token_is_in_no_error_text(serve: Callable[..., Loopback], pki: dict[str, Path]) -> None:
    echo = {"errors": [f"permission denied for token {TOKEN}"]}
    server = serve(
        {
            "/v1/kv/data/x": json_answer(403, echo),
            "/v1/broken": (500, {}, f"<html>internal error with {TOKEN}</html>".encode()),
            "/v1/auth/kubernetes/login": json_answer(200, {"auth": {"client_token": TOKEN}}),
            "/v1/auth/approle/login": json_answer(400, {"errors": ["invalid role or secret ID"]}),
        }
    )
    vault = client(server.url, pki["ca"])
    failures: list[HttpFailure] = []
    with pytest.raises(RequestRefused, match=r"HTTP 403: permission denied for token <redacted>") as refused:
        vault.kv_read(TOKEN, "kv", "x")
    failures.append(refused.value)
    with pytest.raises(BadResponse, match="HTTP 500") as broken:
        vault.call("GET", "broken", token=TOKEN)
    failures.append(broken.value)
    with pytest.raises(RequestRefused, match="HTTP 400: invalid role or secret ID") as login:
        vault.login_approle("approle", "role", TOKEN)
    failures.append(login.value)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    with pytest.raises(ServerUnreachable, match="connection refused") as unreachable:
        client(f"https://127.0.0.1:{port}", pki["ca"]).raw("GET", "sys/health", token=TOKEN)
    failures.append(unreachable.value)
    assert_no_token(*failures, *(f.args for f in failures))
    # a login's token is returned, and kept out of the answer's repr
    assert vault.login_kubernetes("kubernetes", "role", "jwt") == TOKEN
    assert_no_token(vault.raw("POST", "auth/kubernetes/login", body={"role": "r", "jwt": "j"}), vault)


def test_a_lost_check_and_set_is_a_write_conflict(serve: Callable[..., Loopback], pki: dict[str, Path]) -> None:
    mismatch = {"errors": ["check-and-set parameter did not match the current version"]}
    server = serve({"/v1/kv/data/x": json_answer(400, mismatch)})
    with pytest.raises(WriteConflict, match="another writer changed it after this run read version 3"):
        client(server.url, pki["ca"]).kv_write(TOKEN, "kv", "x", {"a": "b"}, 3)


def test_vault_multi_errors_become_one_readable_line() -> None:
    response = HttpReply(403, {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}, "")
    assert error_detail(response) == "permission denied"
    response = HttpReply(400, {"errors": ["2 errors occurred:\n\t* a\n\t* b\n\n"]}, "")
    assert error_detail(response) == "a; b"
    status = {"kind": "Status", "message": 'secrets "x" is forbidden'}
    assert error_detail(HttpReply(403, status, "")) == 'secrets "x" is forbidden'
    assert error_detail(HttpReply(502, {}, "<html>bad\ngateway</html>")) == "<html>bad gateway</html>"


def test_each_program_maps_the_shared_failures_to_its_own_exit_codes() -> None:
    from programs.cert_sync import sync
    from programs.raft_snapshot import snapshot
    from programs.vault_bootstrap import bootstrap

    refused, gone, conflict = RequestRefused("x", status=403), ServerUnreachable("x"), WriteConflict("x")
    assert [exit_code_of(f, snapshot.EXIT_CODES) for f in (refused, gone, conflict)] == [snapshot.EXIT_VAULT] * 3
    assert [exit_code_of(f, bootstrap.EXIT_CODES) for f in (refused, gone)] == [bootstrap.EXIT_FAILURE] * 2
    assert exit_code_of(conflict, sync.EXIT_CODES) == sync.EXIT_CONFLICT
    usage = UsageError("x")
    for codes in (sync.EXIT_CODES, snapshot.EXIT_CODES, bootstrap.EXIT_CODES):
        assert exit_code_of(usage, codes) == 2
    # cert-sync: a client failure takes the exit code of the side it happened on
    with pytest.raises(sync.SourceError) as source, sync._side(sync.SourceError):
        raise gone
    with pytest.raises(sync.TargetError) as target, sync._side(sync.TargetError):
        raise refused
    assert exit_code_of(source.value, sync.EXIT_CODES) == sync.EXIT_SOURCE
    assert exit_code_of(target.value, sync.EXIT_CODES) == sync.EXIT_TARGET
    assert exit_code_of(PodProgramError("unknown"), sync.EXIT_CODES) == 1


def test_a_get_reuses_the_connection_of_the_previous_get(serve: Callable[..., Loopback], pki: dict[str, Path]) -> None:
    """A GET read to the end leaves its connection for the next GET (one TLS handshake for a pass of
    reads); a POST always has a connection of its own, and is never sent twice."""
    server = serve(
        {"/v1/kv/data/a": json_answer(200, {"data": {}}), "/v1/kv/data/b": json_answer(200, {"data": {}})},
        keep_alive=True,
    )
    vault = client(server.url, pki["ca"])
    for path in ("kv/data/a", "kv/data/b", "kv/data/a"):
        assert vault.raw("GET", path, token=TOKEN).status == 200
    assert len(set(server.ports)) == 1, server.ports
    assert vault.raw("POST", "kv/data/a", token=TOKEN, body={"data": {}}).status == 200
    assert vault.raw("GET", "kv/data/b", token=TOKEN).status == 200
    post_port = server.ports[3]
    assert post_port not in (server.ports[0], server.ports[4]), "the POST had a connection of its own"
    assert [r[0] for r in server.requests] == ["GET", "GET", "GET", "POST", "GET"]


def test_a_get_on_a_connection_the_server_closed_is_sent_once_more(
    serve: Callable[..., Loopback], pki: dict[str, Path]
) -> None:
    server = serve({"/v1/kv/data/a": json_answer(200, {"data": {}})}, keep_alive=True)
    vault = client(server.url, pki["ca"])
    assert vault.raw("GET", "kv/data/a").status == 200
    server.close_after = 1  # from now on the server closes each connection after one answer
    for _ in range(3):
        assert vault.raw("GET", "kv/data/a").status == 200
    assert [r[0] for r in server.requests] == ["GET"] * 4
