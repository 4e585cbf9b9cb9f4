"""cert-sync (``python -m programs.cert_sync hub|edge``) as its CronJobs run it, against real peers.

Peers, all on 127.0.0.1 and started/stopped by this module:

* two real OpenBao servers, "hub" and "edge" (``rig.openbao.BaoNode``: in-memory
  storage, a TLS listener with a certificate from a test CA, and a file AUDIT device, which OpenBao
  takes only from the server config). Each has KV v2 at ``kv`` with ``cas_required = true``. Writes
  are counted in the servers' own audit logs, not in the program.
* one fake Kubernetes API per cluster (``rig.kube_api``): the hub's serves the
  cert-manager Secrets (RBAC: ``get`` on exactly the leaf Secrets, by name; the CA's own Secret is
  there too, readable by nobody but cert-manager) and both answer TokenReviews for
  their Vault's Kubernetes auth (``token_reviewer_jwt`` of a service account allowed to review).
* Vault roles and policies with exactly the capabilities the program documents, rendered with the
  project's own policy helpers (``kv_write``, ``edge_access_policy``); the edge reads the hub with
  the AppRole on ``approle-edges`` whose policy is ``hub-access-<edge>``.
* for the check-and-set conflict, a TLS-terminating loopback proxy in front of a Vault that, when
  the program's write arrives, first writes the same path itself (the concurrent writer) and then
  forwards the program's write, whose ``cas`` is now stale.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from components.cert_sync import HUB_INDEX_KV_PATH, HubSource, cert_sync_role, written_paths
from components.cert_sync_cadence import (
    EDGE_SECRET_ID_TTL_SECONDS,
    EDGE_TOKEN_MAX_TTL_SECONDS,
    EDGE_TOKEN_NUM_USES,
    EDGE_TOKEN_TTL_SECONDS,
)
from components.vault_config import edge_access_policy
from components.vault_names import EDGE_APPROLE_MOUNT, OTEL_KV_PREFIX, RESERVED_KV_PREFIXES
from components.vault_policies import kv_read, kv_write, render_policy
from programs.cert_sync.index import digest
from programs.cert_sync.sync import (
    EXIT_CONFLICT,
    EXIT_INVALID,
    EXIT_SOURCE,
    EXIT_TARGET,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from rig.kube_api import KubeAPIServer
from rig.openbao import free_port
from rig.pki import IssuedCert, TestCA
from rig.programs_env import programs_python
from rig.tls_vault import Vault, initialise, start_vault

pytestmark = pytest.mark.real

REPO = Path(__file__).resolve().parents[2]
EDGE, OTHER_EDGE = "edge-eu", "edge-ap"
SYNC_NS, SYNC_SA = "vault", "cert-sync"
CERT_NS = "otel"
EDGE_SECRET, CA_SECRET = f"otel-client-tls-{EDGE}", "client-ca"
EDGE_KV, CA_KV = f"edges/{EDGE}/otel-client-tls", "otel/client-ca"
LOCAL_KV = "otel/otel-client-tls"
#: The hub job copies the edge's Secret and keeps the trust bundle of its CA (from its ca.crt).
HUB_SECRETS, HUB_TRUST = f"{CERT_NS}/{EDGE_SECRET}={EDGE_KV}", f"{CERT_NS}/{EDGE_SECRET}={CA_KV}"
#: A second edge's Secret, for the runs that need two sources (given as flags).
US_EDGE = "edge-us"
US_SECRET, US_KV = f"otel-client-tls-{US_EDGE}", f"edges/{US_EDGE}/otel-client-tls"


# ---------------------------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------------------------
def configure_kubernetes_auth(vault: Vault, kube: KubeAPIServer) -> None:
    """Vault's own service account reviews tokens (the chart binds it to system:auth-delegator)."""
    kube.allow_token_reviews(f"system:serviceaccount:{SYNC_NS}:vault")
    vault.ok("POST", "sys/auth/kubernetes", {"type": "kubernetes"})
    vault.ok(
        "POST",
        "auth/kubernetes/config",
        {
            "kubernetes_host": kube.url,
            "kubernetes_ca_cert": kube.ca_pem,
            "token_reviewer_jwt": kube.mint_service_account_token(SYNC_NS, "vault"),
        },
    )


def kube_role(vault: Vault, role: str, policy_hcl: str, *, default_policy: bool = True) -> None:
    vault.ok("PUT", f"sys/policies/acl/{role}", {"policy": policy_hcl})
    vault.ok(
        "POST",
        f"auth/kubernetes/role/{role}",
        {
            "bound_service_account_names": [SYNC_SA],
            "bound_service_account_namespaces": [SYNC_NS],
            "token_policies": [role],
            "token_no_default_policy": not default_policy,
            "token_ttl": "5m",
        },
    )


# ---------------------------------------------------------------------------------------------
# the CAS-conflict proxy
# ---------------------------------------------------------------------------------------------
class InjectingProxy:
    """HTTPS on 127.0.0.1 in front of ``upstream``. Every request is forwarded unchanged; when a
    write to ``/v1/kv/data/<path>`` arrives for the first time, ``before_write(path)`` runs first."""

    def __init__(self, upstream: Vault, cert: IssuedCert, workdir: Path, before_write: Callable[[str], object]) -> None:
        self.upstream = upstream
        self.before_write = before_write
        self.injected: list[str] = []
        self.forwarded: list[tuple[str, str, int]] = []
        cert_file, key_file = cert.write(workdir, cert_name="proxy.crt", key_name="proxy.key")
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_file, key_file)
        self._client_ctx = ssl.create_default_context(cafile=upstream.ca_file)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                prefix = "/v1/kv/data/"
                if self.command in ("POST", "PUT") and self.path.startswith(prefix):
                    path = self.path[len(prefix) :]
                    if path not in proxy.injected:
                        proxy.injected.append(path)
                        proxy.before_write(path)
                host, port = proxy.upstream.url.removeprefix("https://").split(":")
                conn = http.client.HTTPSConnection(host, int(port), context=proxy._client_ctx, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                upstream = conn.getresponse()
                data = upstream.read()
                proxy.forwarded.append((self.command, self.path, upstream.status))
                self.send_response(upstream.status)
                self.send_header("Content-Type", upstream.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = _relay
            do_POST = _relay
            do_PUT = _relay

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = server_ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> InjectingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


# ---------------------------------------------------------------------------------------------
# the environment
# ---------------------------------------------------------------------------------------------
@dataclass
class Env:
    hub: Vault
    edge: Vault
    hub_kube: KubeAPIServer
    edge_kube: KubeAPIServer
    vault_ca: TestCA
    client_ca: TestCA
    workdir: Path
    files: dict[str, Path]
    secrets: list[str] = field(default_factory=list)
    current: dict[str, dict[str, str]] = field(default_factory=dict)

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        scrubbed = ("VAULT_", "CERT_SYNC_", "BAO_")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(scrubbed) and k.lower() not in ("https_proxy", "http_proxy", "all_proxy")
        }
        env.update(extra or {})
        return env

    def run(self, mode: str, *args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [programs_python(), "-m", "programs.cert_sync", mode, *args],
            cwd=REPO,
            env=self._env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = result.stdout + result.stderr
        for secret in self.secrets:
            assert secret not in output, "a key, token or id was printed"
        assert "PRIVATE KEY" not in output
        assert not re.search(r"\bs\.[A-Za-z0-9]{20,}", output), "a Vault token was printed"
        return result

    def start(self, mode: str, *args: str, env: dict[str, str]) -> Passes:
        """The program started (not waited for), its stdout read line by line as it comes."""
        process = subprocess.Popen(
            [programs_python(), "-m", "programs.cert_sync", mode, *args],
            cwd=REPO,
            env=self._env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return Passes(process, self)

    def run_hub(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """As the hub CronJob: env only (flags in ``args`` override it)."""
        return self.run("hub", *args, env=self.hub_env(extra_env))

    def hub_env(self, extra_env: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "VAULT_ADDR": self.hub.url,
            "VAULT_CACERT": self.hub.ca_file,
            "CERT_SYNC_JWT_FILE": str(self.files["hub_jwt"]),
            "CERT_SYNC_KUBE_API": self.hub_kube.url,
            "CERT_SYNC_KUBE_TOKEN_FILE": str(self.files["hub_jwt"]),
            "CERT_SYNC_KUBE_CA_FILE": self.hub_kube.ca_file,
            "CERT_SYNC_SECRETS": HUB_SECRETS,
            "CERT_SYNC_TRUST": HUB_TRUST,
        }
        env.update(extra_env or {})
        return env

    def run_edge(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """As the edge CronJob (env), with ``args`` overriding."""
        return self.run("edge", *args, env=self.edge_env(extra_env))

    def edge_env(self, extra_env: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "VAULT_ADDR": self.edge.url,
            "VAULT_CACERT": self.edge.ca_file,
            "CERT_SYNC_JWT_FILE": str(self.files["edge_jwt"]),
            "CERT_SYNC_EDGE": EDGE,
            "CERT_SYNC_HUB_ADDR": self.hub.url,
            "CERT_SYNC_HUB_CA_FILE": self.hub.ca_file,
            "CERT_SYNC_HUB_ROLE_ID_FILE": str(self.files[f"{EDGE}_role_id"]),
            "CERT_SYNC_HUB_SECRET_ID_FILE": str(self.files[f"{EDGE}_secret_id"]),
        }
        env.update(extra_env or {})
        return env

    def put_secret(self, name: str, bundle: dict[str, str]) -> None:
        self.hub_kube.put_secret(CERT_NS, name, bundle, type="kubernetes.io/tls")
        self.current[name] = bundle
        self.secrets.append(bundle["tls.key"])

    def new_client_cert(self, edge: str = EDGE) -> dict[str, str]:
        leaf = self.client_ca.issue(edge, [], [], server=False, client=True)
        return {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": self.client_ca.cert_pem}

    def trusted(self) -> list[x509.Certificate]:
        """The CA certificates of the hub's trust bundle (what the gateway's client CA file holds)."""
        stored = self.hub.kv(CA_KV)
        assert stored is not None and set(stored) == {"ca.crt"}, stored
        return x509.load_pem_x509_certificates(stored["ca.crt"].encode())

    def versions(self) -> dict[str, int]:
        return {"hub:" + p: self.hub.version(p) for p in (EDGE_KV, CA_KV)} | {
            "edge:" + LOCAL_KV: self.edge.version(LOCAL_KV)
        }

    def marks(self) -> tuple[int, int]:
        return self.hub.audit_mark(), self.edge.audit_mark()

    def writes(self, marks: tuple[int, int]) -> tuple[list[str], list[str]]:
        return self.hub.kv_writes(marks[0]), self.edge.kv_writes(marks[1])

    def synced(self) -> None:
        """Bring hub and edge up to date with the Secrets (both runs must succeed)."""
        for result in (self.run_hub(), self.run_edge()):
            assert result.returncode == 0, result.stderr


class Passes:
    """A running multi-pass cert-sync: its stdout lines as they come, then its end."""

    def __init__(self, process: subprocess.Popen[str], env: Env) -> None:
        self.process, self.env = process, env
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.lines.put(line.rstrip("\n"))

        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()

    def next_line(self, timeout: float = 30) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.process.kill()
            raise AssertionError(f"no pass finished within {timeout}s; so far: {self.seen}") from None
        self.seen.append(line)
        return line

    def finish(self, timeout: float = 60) -> tuple[int, list[str], str]:
        """Exit code, every stdout line, stderr."""
        try:
            self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self.reader.join(5)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.process.stderr is not None
        err = self.process.stderr.read()
        for secret in self.env.secrets:
            assert secret not in "\n".join(self.seen) + err, "a key, token or id was printed"
        return self.process.returncode, list(self.seen), err


def failed_with_one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    print(f"exit {result.returncode}: {result.stderr.strip()}")  # shown with -s / on failure
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cert-sync: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("cert-sync")
    vault_ca = TestCA("cert-sync-test-vault-ca")
    with contextlib.ExitStack() as stack:
        hub_kube = stack.enter_context(KubeAPIServer())
        edge_kube = stack.enter_context(KubeAPIServer())
        nodes = [start_vault(name, base / name, vault_ca) for name in ("hub", "edge")]
        for node in nodes:
            stack.callback(node.kill)
        hub, edge = (initialise(name, node) for name, node in zip(("hub", "edge"), nodes, strict=True))

        # hub: Kubernetes auth for the hub's cert-sync job, AppRoles for the edges
        configure_kubernetes_auth(hub, hub_kube)
        kube_role(hub, "cert-sync", render_policy("cert-sync", [*kv_write("kv", EDGE_KV), *kv_write("kv", CA_KV)]))
        kube_role(hub, "cert-sync-narrow", render_policy("cert-sync-narrow", kv_write("kv", EDGE_KV)))
        read_only = render_policy("cert-sync-readonly", [*kv_read("kv", EDGE_KV), *kv_read("kv", CA_KV)])
        kube_role(hub, "cert-sync-readonly", read_only)
        kube_role(hub, "cert-sync-readonly-nodefault", read_only, default_policy=False)
        kube_role(
            hub,
            "cert-sync-half-nodefault",
            render_policy("cert-sync-half-nodefault", [*kv_read("kv", EDGE_KV), *kv_write("kv", CA_KV)]),
            default_policy=False,
        )
        hub.ok("POST", f"sys/auth/{EDGE_APPROLE_MOUNT}", {"type": "approle"})
        files: dict[str, Path] = {}
        secrets: list[str] = [hub.root, edge.root]
        for name in (EDGE, OTHER_EDGE):
            hub.ok("PUT", f"sys/policies/acl/hub-access-{name}", {"policy": edge_access_policy(name, "kv")})
            hub.ok(  # the role as the hub declares it (components/vault_config.py): short, few uses, no default
                "POST",
                f"auth/{EDGE_APPROLE_MOUNT}/role/{name}",
                {
                    "token_policies": [f"hub-access-{name}"],
                    "token_no_default_policy": True,
                    "token_ttl": EDGE_TOKEN_TTL_SECONDS,
                    "token_max_ttl": EDGE_TOKEN_MAX_TTL_SECONDS,
                    "token_num_uses": EDGE_TOKEN_NUM_USES,
                    "secret_id_num_uses": 0,
                    "secret_id_ttl": EDGE_SECRET_ID_TTL_SECONDS,
                },
            )
            role_id = hub.ok("GET", f"auth/{EDGE_APPROLE_MOUNT}/role/{name}/role-id").data["role_id"]
            secret_id = hub.ok("POST", f"auth/{EDGE_APPROLE_MOUNT}/role/{name}/secret-id").data["secret_id"]
            files[f"{name}_role_id"] = base / f"{name}-role-id"
            files[f"{name}_role_id"].write_text(role_id + "\n")
            files[f"{name}_secret_id"] = base / f"{name}-secret-id"
            files[f"{name}_secret_id"].write_text(secret_id + "\n")
            secrets += [role_id, secret_id]
        # the hub job may get exactly the edges' Secrets, by name: never the CA's own
        hub_kube.allow_service_account(
            SYNC_NS, SYNC_SA, ["get"], ["secrets"], namespace=CERT_NS, resource_names=[EDGE_SECRET, US_SECRET]
        )

        # edge: Kubernetes auth for the edge's cert-sync job
        configure_kubernetes_auth(edge, edge_kube)
        kube_role(edge, "cert-sync", render_policy("cert-sync", kv_write("kv", LOCAL_KV)))

        for name, kube in (("hub_jwt", hub_kube), ("edge_jwt", edge_kube)):
            token = kube.mint_service_account_token(SYNC_NS, SYNC_SA)
            files[name] = base / name
            files[name].write_text(token)
            secrets.append(token)
        environment = Env(hub, edge, hub_kube, edge_kube, vault_ca, TestCA("otel-client-ca"), base, files, secrets)
        environment.put_secret(EDGE_SECRET, environment.new_client_cert())
        environment.put_secret(US_SECRET, environment.new_client_cert(US_EDGE))
        ca = environment.client_ca
        environment.put_secret(CA_SECRET, {"tls.crt": ca.cert_pem, "tls.key": ca.key_pem, "ca.crt": ca.cert_pem})
        yield environment


@pytest.fixture
def restore_secrets(env: Env) -> Iterator[None]:
    """Tests that break a Secret get the last good ones back afterwards."""
    saved = dict(env.current)
    yield
    for name, bundle in saved.items():
        env.put_secret(name, bundle)


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------
def test_roles_have_exactly_the_documented_capabilities(env: Env) -> None:
    def caps(vault: Vault, token: str, paths: list[str]) -> dict[str, list[str]]:
        # asked by root (sys/capabilities): a token without the default policy may not ask for itself
        resp = vault.api("POST", "sys/capabilities", {"token": token, "paths": paths})
        assert resp.status == 200, resp.text
        return {p: sorted(resp.data[p]) for p in paths}

    login = env.hub.api("POST", "auth/kubernetes/login", {"role": "cert-sync", "jwt": env.files["hub_jwt"].read_text()})
    assert login.status == 200, login.text
    hub_caps = caps(
        env.hub,
        login.body["auth"]["client_token"],
        [f"kv/data/{EDGE_KV}", f"kv/data/{CA_KV}", f"kv/metadata/{EDGE_KV}", "kv/data/otel/other"],
    )
    assert hub_caps == {
        f"kv/data/{EDGE_KV}": ["create", "read", "update"],
        f"kv/data/{CA_KV}": ["create", "read", "update"],
        f"kv/metadata/{EDGE_KV}": ["deny"],
        "kv/data/otel/other": ["deny"],
    }
    approle = env.hub.api(
        "POST",
        f"auth/{EDGE_APPROLE_MOUNT}/login",
        {
            "role_id": env.files[f"{EDGE}_role_id"].read_text().strip(),
            "secret_id": env.files[f"{EDGE}_secret_id"].read_text().strip(),
        },
    )
    assert approle.status == 200, approle.text
    edge_caps = caps(
        env.hub,
        approle.body["auth"]["client_token"],
        [
            f"kv/data/{EDGE_KV}",
            f"kv/data/edges/{OTHER_EDGE}/otel-client-tls",
            f"kv/data/{CA_KV}",
            f"transit/encrypt/{EDGE}",
            "auth/token/lookup-self",
            "auth/token/revoke-self",
        ],
    )
    assert edge_caps == {
        f"kv/data/{EDGE_KV}": ["read"],
        f"kv/data/edges/{OTHER_EDGE}/otel-client-tls": ["deny"],
        f"kv/data/{CA_KV}": ["deny"],
        f"transit/encrypt/{EDGE}": ["deny"],  # the seal token's business, not cert-sync's
        "auth/token/lookup-self": ["deny"],  # no default policy
        "auth/token/revoke-self": ["update"],
    }
    auth = approle.body["auth"]
    assert auth["policies"] == [f"hub-access-{EDGE}"] and auth["lease_duration"] == EDGE_TOKEN_TTL_SECONDS
    for token in (login.body["auth"]["client_token"], approle.body["auth"]["client_token"]):
        env.hub.api("POST", "auth/token/revoke-self", {}, token=token)


def test_first_sync_hub_then_edge(env: Env) -> None:
    for vault, path in ((env.hub, EDGE_KV), (env.hub, CA_KV), (env.edge, LOCAL_KV)):  # empty, in any test order
        assert vault.api("DELETE", f"kv/metadata/{path}").status == 204
    assert env.versions() == {f"hub:{EDGE_KV}": 0, f"hub:{CA_KV}": 0, f"edge:{LOCAL_KV}": 0}
    marks = env.marks()
    hub_run = env.run_hub()
    assert hub_run.returncode == 0, hub_run.stderr
    assert hub_run.stderr == ""
    assert hub_run.stdout.startswith("cert-sync: synced 2, unchanged 0 ")
    assert hub_run.stdout.count("\n") == 1
    assert env.hub.kv(EDGE_KV) == env.current[EDGE_SECRET]
    assert env.trusted() == [env.client_ca.certificate]  # the CA that signed the leaf, from its ca.crt

    edge_run = env.run_edge()
    assert edge_run.returncode == 0, edge_run.stderr
    assert edge_run.stdout.startswith("cert-sync: synced 1, unchanged 0 ")
    assert env.edge.kv(LOCAL_KV) == env.current[EDGE_SECRET]
    assert env.versions() == {f"hub:{EDGE_KV}": 1, f"hub:{CA_KV}": 1, f"edge:{LOCAL_KV}": 1}

    hub_writes, edge_writes = env.writes(marks)
    assert sorted(hub_writes) == sorted([f"kv/data/{CA_KV}", f"kv/data/{EDGE_KV}"])
    assert edge_writes == [f"kv/data/{LOCAL_KV}"]
    # every token it got was revoked: one login and one revoke-self per Vault and run
    assert env.hub.count(marks[0], "auth/kubernetes/login") == 1
    assert env.hub.count(marks[0], f"auth/{EDGE_APPROLE_MOUNT}/login") == 1
    assert env.hub.count(marks[0], "auth/token/revoke-self") == 2
    assert env.edge.count(marks[1], "auth/kubernetes/login") == 1
    assert env.edge.count(marks[1], "auth/token/revoke-self") == 1
    # the pod's identity was checked by each cluster's TokenReview, on Vault's behalf
    assert env.hub_kube.count("POST", "/apis/authentication.k8s.io/v1/tokenreviews", status=201) >= 1
    assert env.edge_kube.count("POST", "/apis/authentication.k8s.io/v1/tokenreviews", status=201) >= 1
    assert (
        env.hub_kube.count(
            "GET",
            f"/api/v1/namespaces/{CERT_NS}/secrets/{EDGE_SECRET}",
            user=f"system:serviceaccount:{SYNC_NS}:{SYNC_SA}",
            status=200,
        )
        >= 1
    )
    # the CA's own Secret (its private key) is never asked for
    assert env.hub_kube.count("GET", f"/api/v1/namespaces/{CERT_NS}/secrets/{CA_SECRET}") == 0


def test_a_run_with_nothing_new_writes_nothing(env: Env) -> None:
    env.synced()
    before, marks = env.versions(), env.marks()
    hub_run, edge_run = env.run_hub(), env.run_edge()
    assert hub_run.returncode == 0 and edge_run.returncode == 0, (hub_run.stderr, edge_run.stderr)
    assert hub_run.stdout.startswith("cert-sync: synced 0, unchanged 2 ")
    assert edge_run.stdout.startswith("cert-sync: synced 0, unchanged 1 ")
    assert env.writes(marks) == ([], [])  # counted by the servers' audit logs
    assert env.hub.count(marks[0], f"kv/data/{EDGE_KV}") >= 2  # it did read (hub job and edge job)
    assert env.versions() == before


def test_a_rotated_certificate_reaches_the_edge(env: Env) -> None:
    env.synced()
    before = env.versions()
    rotated = env.new_client_cert()
    env.put_secret(EDGE_SECRET, rotated)
    hub_run = env.run_hub()
    assert hub_run.returncode == 0, hub_run.stderr
    assert hub_run.stdout.startswith("cert-sync: synced 1, unchanged 1 ")
    assert env.hub.kv(EDGE_KV) == rotated
    assert env.edge.kv(LOCAL_KV) != rotated  # not before the edge job runs
    edge_run = env.run_edge()
    assert edge_run.returncode == 0, edge_run.stderr
    assert edge_run.stdout.startswith("cert-sync: synced 1, unchanged 0 ")
    assert env.edge.kv(LOCAL_KV) == rotated
    assert env.versions() == {
        f"hub:{EDGE_KV}": before[f"hub:{EDGE_KV}"] + 1,
        f"hub:{CA_KV}": before[f"hub:{CA_KV}"],
        f"edge:{LOCAL_KV}": before[f"edge:{LOCAL_KV}"] + 1,
    }


#: Both edges' Secrets and their trust bundle, as flags (the environment has only edge-eu's).
TWO_EDGES = (
    *("--secret", HUB_SECRETS, "--secret", f"{CERT_NS}/{US_SECRET}={US_KV}"),
    *("--trust", HUB_TRUST, "--trust", f"{CERT_NS}/{US_SECRET}={CA_KV}"),
)


@pytest.mark.usefixtures("restore_secrets")
@pytest.mark.parametrize("problem", ["mismatched key", "expired", "ca.crt of another CA"])
def test_bad_certificates_are_rejected_and_nothing_is_written(env: Env, problem: str) -> None:
    env.synced()
    # a valid new client certificate (which alone would be written) plus one broken Secret
    env.put_secret(EDGE_SECRET, env.new_client_cert())
    if problem == "mismatched key":
        other = env.client_ca.issue("someone-else", [], [], server=False, client=True)
        broken = {**env.new_client_cert(US_EDGE), "tls.key": other.key_pem}
        needle = "tls.key does not match the certificate in tls.crt"
    elif problem == "expired":
        leaf = env.client_ca.issue(US_EDGE, [], [], server=False, client=True, days=0)  # notAfter = now
        broken = {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": env.client_ca.cert_pem}
        needle = "expired at"
    else:  # a Secret naming a CA that did not sign it: never put in the gateway's trust
        broken = {**env.new_client_cert(US_EDGE), "ca.crt": TestCA("someone else's CA").cert_pem}
        needle = "no CA certificate in ca.crt signed its certificate in tls.crt"
    env.put_secret(US_SECRET, broken)
    before, marks = env.versions(), env.marks()
    result = env.run_hub(*TWO_EDGES)
    failed_with_one_line(result, EXIT_INVALID, f"Secret {CERT_NS}/{US_SECRET}", needle)
    assert env.writes(marks) == ([], [])
    assert env.hub.count(marks[0], "auth/kubernetes/login") == 0  # validated before even logging in
    assert env.versions() == before


def test_the_edge_rejects_bad_data_on_the_hub(env: Env) -> None:
    env.synced()
    good = env.hub.kv(EDGE_KV)
    assert good is not None
    other = env.client_ca.issue("someone-else", [], [], server=False, client=True)
    env.hub.put(EDGE_KV, {**good, "tls.key": other.key_pem})
    env.secrets.append(other.key_pem)
    before, marks = env.versions(), env.marks()
    result = env.run_edge()
    failed_with_one_line(result, EXIT_INVALID, f"kv/data/{EDGE_KV} at the hub Vault {env.hub.url}", "does not match")
    assert env.writes(marks) == ([], [])
    assert env.versions() == before
    env.hub.put(EDGE_KV, good)  # the next hub run would do the same


def test_hub_vault_down(env: Env) -> None:
    env.synced()
    env.put_secret(EDGE_SECRET, env.new_client_cert())  # something to write
    dead = f"https://127.0.0.1:{free_port()}"
    before, marks = env.versions(), env.marks()
    hub_run = env.run_hub("--vault-addr", dead)
    failed_with_one_line(hub_run, EXIT_TARGET, f"{dead}/v1/auth/kubernetes/login", "connection refused")
    edge_run = env.run_edge("--hub-addr", dead)
    failed_with_one_line(
        edge_run, EXIT_SOURCE, f"{dead}/v1/auth/{EDGE_APPROLE_MOUNT}/login", "hub Vault", "connection refused"
    )
    assert env.writes(marks) == ([], [])
    assert env.versions() == before


def test_edge_vault_down(env: Env) -> None:
    env.synced()
    env.put_secret(EDGE_SECRET, env.new_client_cert())
    assert env.run_hub().returncode == 0  # the hub has news for the edge
    dead = f"https://127.0.0.1:{free_port()}"
    before, marks = env.versions(), env.marks()
    result = env.run_edge("--vault-addr", dead)
    failed_with_one_line(result, EXIT_TARGET, f"{dead}/v1/auth/kubernetes/login", "edge Vault", "connection refused")
    assert env.writes(marks) == ([], [])
    assert env.versions() == before
    # it had read the hub first; that token is revoked all the same
    assert env.hub.count(marks[0], f"auth/{EDGE_APPROLE_MOUNT}/login") == 1
    assert env.hub.count(marks[0], "auth/token/revoke-self") == 1


def test_a_hub_vault_that_does_not_answer_times_out(env: Env) -> None:
    env.synced()
    before = env.versions()
    assert env.hub.node.process is not None
    env.hub.node.process.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    try:
        started = time.monotonic()
        result = env.run_edge("--timeout", "1")
        elapsed = time.monotonic() - started
    finally:
        env.hub.node.process.send_signal(signal.SIGCONT)
    failed_with_one_line(result, EXIT_SOURCE, f"{env.hub.url}/v1/auth/{EDGE_APPROLE_MOUNT}/login", "timed out after 1s")
    assert elapsed < 15
    assert env.versions() == before


def test_permission_denied_by_the_hub_vault_is_a_real_403(env: Env) -> None:
    """A role whose policy lacks the second path: Vault answers 403 on reading it, before any
    write, so the pending change of the first path is not written either."""
    env.synced()
    env.put_secret(EDGE_SECRET, env.new_client_cert())
    before, marks = env.versions(), env.marks()
    result = env.run_hub("--role", "cert-sync-narrow")
    failed_with_one_line(
        result,
        EXIT_TARGET,
        f"reading kv/data/{CA_KV}",
        f"{env.hub.url}/v1/kv/data/{CA_KV}",
        "HTTP 403",
        "permission denied",
    )
    assert env.writes(marks) == ([], [])
    assert env.versions() == before


def test_a_read_only_role_writes_nothing(env: Env) -> None:
    env.synced()
    env.put_secret(EDGE_SECRET, env.new_client_cert())
    env.hub.put(CA_KV, {"ca.crt": "tampered"})  # the stored bundle must be rewritten too
    before, marks = env.versions(), env.marks()
    # with Vault's default policy the pre-flight (sys/capabilities-self) stops it before any write
    checked = env.run_hub("--role", "cert-sync-readonly")
    failed_with_one_line(
        checked,
        EXIT_TARGET,
        "permission denied",
        f"lacks update on kv/data/{EDGE_KV}",
        f"update on kv/data/{CA_KV}",
        env.hub.url,
        "nothing was written",
    )
    assert env.writes(marks) == ([], [])
    # without it, the write itself is refused: a real 403 from the server
    refused = env.run_hub(
        "--role",
        "cert-sync-readonly-nodefault",
        "--secret",
        f"{CERT_NS}/{EDGE_SECRET}={EDGE_KV}",
        extra_env={"CERT_SYNC_TRUST": ""},  # the copy alone
    )
    failed_with_one_line(refused, EXIT_TARGET, f"writing kv/data/{EDGE_KV}", "HTTP 403", "permission denied")
    assert env.writes(marks) == ([f"kv/data/{EDGE_KV}"], [])  # attempted, refused
    assert env.versions() == before
    assert env.run_hub().returncode == 0  # the proper role catches up
    assert env.trusted() == [env.client_ca.certificate]


def test_permission_denied_for_another_edges_path(env: Env) -> None:
    env.synced()
    before, marks = env.versions(), env.marks()
    result = env.run_edge(
        extra_env={
            "CERT_SYNC_HUB_ROLE_ID_FILE": str(env.files[f"{OTHER_EDGE}_role_id"]),
            "CERT_SYNC_HUB_SECRET_ID_FILE": str(env.files[f"{OTHER_EDGE}_secret_id"]),
        }
    )
    failed_with_one_line(
        result, EXIT_SOURCE, f"{env.hub.url}/v1/kv/data/{EDGE_KV}", "hub Vault", "HTTP 403", "permission denied"
    )
    assert env.writes(marks) == ([], [])
    assert env.versions() == before


def test_a_service_account_the_role_does_not_bind_is_refused(env: Env) -> None:
    other = env.workdir / "other-sa-token"
    token = env.edge_kube.mint_service_account_token(SYNC_NS, "otel-collector")
    env.secrets.append(token)
    other.write_text(token)
    before = env.versions()
    result = env.run_edge("--jwt-file", str(other))
    failed_with_one_line(
        result,
        EXIT_TARGET,
        "Kubernetes auth login (role cert-sync) to the edge Vault",
        "HTTP 403",
        "service account name not authorized",
    )
    assert env.versions() == before


@pytest.mark.parametrize("mode", ["hub", "edge"])
def test_a_concurrent_write_is_never_overwritten(env: Env, mode: str) -> None:
    """Between the program's read and its write, someone else writes the path (the proxy does it
    when the program's write arrives): check-and-set refuses the program's write."""
    env.synced()
    env.put_secret(EDGE_SECRET, env.new_client_cert())
    if mode == "edge":
        assert env.run_hub().returncode == 0
    target, path = (env.hub, EDGE_KV) if mode == "hub" else (env.edge, LOCAL_KV)
    theirs = {"written-by": "a concurrent writer"}
    before = env.versions()
    proxy_cert = env.vault_ca.issue("proxy", ["localhost"], ["127.0.0.1"])
    with InjectingProxy(target, proxy_cert, env.workdir, lambda p: target.put(p, theirs)) as proxy:
        run = env.run_hub if mode == "hub" else env.run_edge
        result = run("--vault-addr", proxy.url)
    failed_with_one_line(
        result,
        EXIT_CONFLICT,
        f"writing kv/data/{path}",
        f"{proxy.url}/v1/kv/data/{path}",
        "HTTP 400",
        "did not match",
        "nothing was overwritten",
    )
    assert proxy.injected == [path]
    assert ("POST", f"/v1/kv/data/{path}", 400) in proxy.forwarded
    key = f"{mode}:{path}"
    assert env.versions() == {**before, key: before[key] + 1}  # only the concurrent writer's version
    assert target.kv(path) == theirs
    # the next scheduled run (nobody racing) repairs it, with the right cas
    again = run()
    assert again.returncode == 0, again.stderr
    assert target.kv(path) == env.current[EDGE_SECRET]


def test_vault_tls_is_always_verified(env: Env) -> None:
    before = env.versions()
    result = env.run_edge(extra_env={"VAULT_CACERT": env.hub_kube.ca_file})
    failed_with_one_line(result, EXIT_TARGET, "TLS verification failed", env.edge.url)
    plain = env.run_edge("--vault-addr", env.edge.url.replace("https://", "http://"))
    failed_with_one_line(plain, EXIT_USAGE, "--vault-addr", "must be an https:// URL")
    assert env.versions() == before


def test_a_forbidden_secret_names_the_secret_and_status(env: Env) -> None:
    result = env.run_hub("--secret", f"{CERT_NS}/not-granted=otel/x", extra_env={"CERT_SYNC_TRUST": ""})
    failed_with_one_line(
        result,
        EXIT_SOURCE,
        f"Secret {CERT_NS}/not-granted",
        "HTTP 403",
        env.hub_kube.url,
        'secrets "not-granted" is forbidden',
    )


def test_a_write_refused_half_way_names_what_was_written(env: Env) -> None:
    """Without the pre-flight (no default policy, so no sys/capabilities-self) a refusal can come
    after an earlier path was written: the one line says which, and that one is complete and valid.
    The trust bundle is written first (a peer learns a CA before any certificate it signed)."""
    env.synced()
    env.put_secret(EDGE_SECRET, env.new_client_cert())
    env.hub.put(CA_KV, {"ca.crt": "tampered"})
    before, marks = env.versions(), env.marks()
    result = env.run_hub("--role", "cert-sync-half-nodefault")
    failed_with_one_line(
        result,
        EXIT_TARGET,
        f"writing kv/data/{EDGE_KV}",
        "HTTP 403",
        "permission denied",
        f"written before this failure: kv/data/{CA_KV} (version {before[f'hub:{CA_KV}'] + 1})",
    )
    assert env.trusted() == [env.client_ca.certificate]
    assert env.versions() == {**before, f"hub:{CA_KV}": before[f"hub:{CA_KV}"] + 1}
    assert sorted(env.writes(marks)[0]) == sorted([f"kv/data/{EDGE_KV}", f"kv/data/{CA_KV}"])
    assert env.run_hub().returncode == 0


def test_nothing_on_the_hub_for_this_edge(env: Env) -> None:
    before = env.versions()
    result = env.run_edge(
        "--edge",
        OTHER_EDGE,
        extra_env={
            "CERT_SYNC_HUB_ROLE_ID_FILE": str(env.files[f"{OTHER_EDGE}_role_id"]),
            "CERT_SYNC_HUB_SECRET_ID_FILE": str(env.files[f"{OTHER_EDGE}_secret_id"]),
        },
    )
    failed_with_one_line(
        result, EXIT_SOURCE, f"kv/data/edges/{OTHER_EDGE}/otel-client-tls", env.hub.url, "nothing is stored there"
    )
    assert env.versions() == before


def test_sigterm_ends_it_with_one_line(env: Env) -> None:
    """The CronJob's deadline: SIGTERM while it waits on a hub that accepted the connection."""
    before = env.versions()
    accepted = threading.Event()
    held: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as silent:

        def accept() -> None:
            conn, _ = silent.accept()
            held.append(conn)
            accepted.set()

        threading.Thread(target=accept, daemon=True).start()
        hub = f"https://127.0.0.1:{silent.getsockname()[1]}"
        proc = subprocess.Popen(
            [programs_python(), "-m", "programs.cert_sync", "edge", "--hub-addr", hub, "--timeout", "30"],
            cwd=REPO,
            env=env._env(
                {
                    "VAULT_ADDR": env.edge.url,
                    "VAULT_CACERT": env.edge.ca_file,
                    "CERT_SYNC_JWT_FILE": str(env.files["edge_jwt"]),
                    "CERT_SYNC_EDGE": EDGE,
                    "CERT_SYNC_HUB_ROLE_ID_FILE": str(env.files[f"{EDGE}_role_id"]),
                    "CERT_SYNC_HUB_SECRET_ID_FILE": str(env.files[f"{EDGE}_secret_id"]),
                }
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert accepted.wait(20), "the program never connected"
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for conn in held:
                conn.close()
    assert proc.returncode == EXIT_TERMINATED, (proc.returncode, err)
    assert out == "" and err == "cert-sync: error: terminated by SIGTERM\n"
    assert env.versions() == before


def test_a_new_client_ca_reaches_the_trust_bundle_before_its_certificates(env: Env) -> None:
    """client-ca renews its key (cert-manager re-issues none of its leaves) and the edge's next
    certificate comes from it. The first hub pass writes the trust bundle with both CAs and keeps
    the published certificate (the gateway may not trust the new CA yet); the first pass after the
    lead publishes it, and the edge pulls it. The old CA stays in the bundle: certificates it
    signed may still be presented until they expire."""
    env.synced()
    old_ca, published = env.client_ca, env.hub.kv(EDGE_KV)
    env.client_ca = TestCA("otel-client-ca")  # the same name, a new key
    renewed = env.new_client_cert()
    env.put_secret(EDGE_SECRET, renewed)
    before, marks = env.versions(), env.marks()
    first = env.run_hub("--trust-lead", "3")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("cert-sync: synced 1, unchanged 1 "), first.stdout
    assert env.trusted() == [env.client_ca.certificate, old_ca.certificate]
    assert env.hub.kv(EDGE_KV) == published  # held back
    assert env.writes(marks) == ([f"kv/data/{CA_KV}"], [])
    time.sleep(3)
    second = env.run_hub("--trust-lead", "3")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("cert-sync: synced 1, unchanged 1 "), second.stdout
    assert env.hub.kv(EDGE_KV) == renewed
    assert env.trusted() == [env.client_ca.certificate, old_ca.certificate]
    edge_run = env.run_edge()
    assert edge_run.returncode == 0, edge_run.stderr
    assert env.edge.kv(LOCAL_KV) == renewed
    assert env.versions() == {
        f"hub:{EDGE_KV}": before[f"hub:{EDGE_KV}"] + 1,
        f"hub:{CA_KV}": before[f"hub:{CA_KV}"] + 1,
        f"edge:{LOCAL_KV}": before[f"edge:{LOCAL_KV}"] + 1,
    }


def test_the_ca_secret_is_out_of_reach(env: Env) -> None:
    """The job's ServiceAccount may not read a CA's Secret, and no run asked for it."""
    assert env.hub_kube.count("GET", f"/api/v1/namespaces/{CERT_NS}/secrets/{CA_SECRET}") == 0
    result = env.run_hub("--secret", f"{CERT_NS}/{CA_SECRET}=otel/x", extra_env={"CERT_SYNC_TRUST": ""})
    failed_with_one_line(result, EXIT_SOURCE, f"Secret {CERT_NS}/{CA_SECRET}", "HTTP 403", "forbidden")


# ---------------------------------------------------------------------------------------------
# several passes in one run (the CronJob's --passes/--interval)
# ---------------------------------------------------------------------------------------------
def test_a_rotation_between_passes_is_picked_up_by_the_next_pass_of_the_same_run(env: Env) -> None:
    """A hub run of 3 passes 1 s apart; the Secret is renewed after the first pass: a later pass of
    the same run writes it (once), every pass logs in and revokes its token."""
    env.synced()
    before, marks = env.versions(), env.marks()
    run = env.start("hub", "--passes", "3", "--interval", "1", env=env.hub_env())
    first = run.next_line()
    assert first.startswith("cert-sync: pass 1 of 3: synced 0, unchanged 2 "), first
    rotated = env.new_client_cert()
    env.put_secret(EDGE_SECRET, rotated)
    code, lines, err = run.finish()
    assert code == 0 and err == "", (code, err)
    assert [line.split(":")[1].strip() for line in lines] == ["pass 1 of 3", "pass 2 of 3", "pass 3 of 3"]
    synced = [line.split(": ")[2].split(" (")[0] for line in lines]
    # the renewal is written by the first pass after it (pass 2, or pass 3 if pass 1 ran over the interval)
    assert synced in (
        ["synced 0, unchanged 2", "synced 1, unchanged 1", "synced 0, unchanged 2"],
        ["synced 0, unchanged 2", "synced 0, unchanged 2", "synced 1, unchanged 1"],
    ), lines
    assert env.hub.kv(EDGE_KV) == rotated
    assert env.writes(marks) == ([f"kv/data/{EDGE_KV}"], [])  # one write, by the servers' audit log
    assert env.versions() == {**before, f"hub:{EDGE_KV}": before[f"hub:{EDGE_KV}"] + 1}
    assert env.hub.count(marks[0], "auth/kubernetes/login") == 3
    assert env.hub.count(marks[0], "auth/token/revoke-self") == 3


def test_the_edge_pulls_a_hub_change_made_between_its_passes(env: Env) -> None:
    env.synced()
    before, marks = env.versions(), env.marks()
    run = env.start("edge", "--passes", "3", "--interval", "1", env=env.edge_env())
    assert run.next_line().startswith("cert-sync: pass 1 of 3: synced 0, unchanged 1 ")
    rotated = env.new_client_cert()
    env.hub.put(EDGE_KV, rotated)  # what the hub's own cert-sync does on renewal
    code, lines, err = run.finish()
    assert code == 0 and err == "", (code, err)
    assert sum(" synced 1, unchanged 0 " in line for line in lines) == 1, lines
    assert env.edge.kv(LOCAL_KV) == rotated
    assert env.writes(marks)[1] == [f"kv/data/{LOCAL_KV}"]
    assert env.edge.version(LOCAL_KV) == before[f"edge:{LOCAL_KV}"] + 1
    assert env.hub.count(marks[0], f"auth/{EDGE_APPROLE_MOUNT}/login") == 3  # a fresh hub login per pass
    env.put_secret(EDGE_SECRET, rotated)  # the hub's Secret agrees again for the next tests


@pytest.mark.usefixtures("restore_secrets")
def test_a_failed_second_pass_ends_the_run_and_keeps_what_the_first_wrote(env: Env) -> None:
    """Pass 1 writes a renewal; the Secret is broken before pass 2: pass 2 fails validation, writes
    nothing, no pass 3 runs, the run exits 4 naming pass 2, and pass 1's write stays."""
    env.synced()
    before, marks = env.versions(), env.marks()
    renewed = env.new_client_cert()
    env.put_secret(EDGE_SECRET, renewed)
    run = env.start("hub", "--passes", "3", "--interval", "2", env=env.hub_env())
    assert run.next_line().startswith("cert-sync: pass 1 of 3: synced 1, unchanged 1 ")
    other = env.client_ca.issue("someone-else", [], [], server=False, client=True)
    env.put_secret(EDGE_SECRET, {**env.new_client_cert(), "tls.key": other.key_pem})
    code, lines, err = run.finish()
    assert code == EXIT_INVALID, (code, err)
    # the first pass that read the broken Secret failed (pass 2, unless pass 1 ran over the interval)
    failed = len(lines) + 1
    assert failed in (2, 3) and all(" synced " in line for line in lines), lines
    assert err.count("\n") == 1 and err.startswith(
        f"cert-sync: error: pass {failed} of 3: Secret {CERT_NS}/{EDGE_SECRET}: tls.key does not match"
    ), err
    assert env.hub.kv(EDGE_KV) == renewed  # pass 1's complete, validated write
    assert env.writes(marks) == ([f"kv/data/{EDGE_KV}"], [])
    assert env.versions() == {**before, f"hub:{EDGE_KV}": before[f"hub:{EDGE_KV}"] + 1}
    assert env.hub.count(marks[0], "auth/kubernetes/login") == failed - 1  # the failed pass never logged in


# ---------------------------------------------------------------------------------------------
# hub mode with the index (programs.cert_sync.index): a pass's Vault cost does not grow with N
# ---------------------------------------------------------------------------------------------
FLEET_SIZE = 20
FLEET_CLIENT_CA, FLEET_SERVER_CA = "otel/fleet-client-ca", "otel/fleet-server-ca"
GATEWAY_SECRET, GATEWAY_KV = "fleet-gateway-tls", "otel/fleet-gateway-tls"


def fleet_edge(i: int) -> str:
    return f"fleet-{i:02d}"


def fleet_kv(i: int) -> str:
    return f"edges/{fleet_edge(i)}/otel-client-tls"


@dataclass
class Fleet:
    """The shipped hub's shape for ``FLEET_SIZE`` edges: each edge's client certificate copied to
    ``edges/<edge>/``, their CAs in a client trust bundle, a gateway certificate whose CAs form the
    server bundle that every edge copy carries as its ``ca.crt`` (``--peer-ca``), and the index, all
    under the policy the component renders (``components.cert_sync.cert_sync_role``)."""

    env: Env
    server_ca: TestCA
    role: str = "cert-sync-fleet"

    def flags(self, edges: int = FLEET_SIZE) -> list[str]:
        flags = ["--role", self.role, "--index", HUB_INDEX_KV_PATH]
        flags += ["--secret", f"{CERT_NS}/{GATEWAY_SECRET}={GATEWAY_KV}"]
        flags += ["--trust", f"{CERT_NS}/{GATEWAY_SECRET}={FLEET_SERVER_CA}"]
        for i in range(edges):
            flags += ["--secret", f"{CERT_NS}/{fleet_edge(i)}={fleet_kv(i)}"]
            flags += ["--trust", f"{CERT_NS}/{fleet_edge(i)}={FLEET_CLIENT_CA}"]
            flags += ["--peer-ca", f"{fleet_kv(i)}={FLEET_SERVER_CA}"]
        return flags

    def run(self, *extra: str, edges: int = FLEET_SIZE) -> subprocess.CompletedProcess[str]:
        return self.env.run_hub(*self.flags(edges), *extra)

    def synced(self, edges: int = FLEET_SIZE) -> None:
        result = self.run(edges=edges)
        assert result.returncode == 0, result.stderr

    def index(self) -> dict[str, Any]:
        stored = self.env.hub.kv(HUB_INDEX_KV_PATH)
        assert stored is not None
        return stored

    def assert_index_true(self, edges: int = FLEET_SIZE) -> None:
        """The index vouches only for what is really stored, and for every copy once it is written."""
        paths = self.paths()
        for path, entry in paths.items():
            assert entry == {"sha256": digest(self.env.hub.kv(path) or {}), "version": self.env.hub.version(path)}
        assert set(paths) == {GATEWAY_KV, *(fleet_kv(i) for i in range(edges))}

    def paths(self) -> dict[str, Any]:
        """The index's map, stored as one JSON string (one HMAC in the audit log, whatever N)."""
        decoded = json.loads(self.index()["paths"])
        assert isinstance(decoded, dict)
        return decoded

    def set_verified_at(self, stamp: str) -> None:
        self.env.hub.put(HUB_INDEX_KV_PATH, {**self.index(), "verifiedAt": stamp})


def hub_requests(env: Env, mark: int) -> list[str]:
    """Every request the hub's real audit device logged since ``mark``: operation and path."""
    return [f"{r.get('operation')} {r.get('path')}" for r in env.hub.audit_requests(mark)]


@pytest.fixture(scope="module")
def fleet(env: Env) -> Fleet:
    server_ca = TestCA("otel-fleet-server-ca")
    gateway = server_ca.issue("otel-gateway", ["otel-gateway.example"], [])
    env.put_secret(
        GATEWAY_SECRET, {"tls.crt": gateway.cert_pem, "tls.key": gateway.key_pem, "ca.crt": server_ca.cert_pem}
    )
    for i in range(FLEET_SIZE):
        env.put_secret(fleet_edge(i), env.new_client_cert(fleet_edge(i)))
    names = [GATEWAY_SECRET, *(fleet_edge(i) for i in range(FLEET_SIZE))]
    env.hub_kube.allow_service_account(SYNC_NS, SYNC_SA, ["get"], ["secrets"], namespace=CERT_NS, resource_names=names)
    source = HubSource(
        {f"{CERT_NS}/{GATEWAY_SECRET}": GATEWAY_KV}
        | {f"{CERT_NS}/{fleet_edge(i)}": fleet_kv(i) for i in range(FLEET_SIZE)},
        {
            FLEET_SERVER_CA: (f"{CERT_NS}/{GATEWAY_SECRET}",),
            FLEET_CLIENT_CA: tuple(f"{CERT_NS}/{fleet_edge(i)}" for i in range(FLEET_SIZE)),
        },
    )
    kube_role(env.hub, "cert-sync-fleet", cert_sync_role(source, "kv").policy_hcl)
    # the same grants but one copy read-only, and no default policy (no pre-flight): a refusal half-way
    half = [g for g in kv_write_grants(source) if g.path != f"kv/data/{fleet_kv(5)}"] + kv_read("kv", fleet_kv(5))
    kube_role(env.hub, "cert-sync-fleet-half", render_policy("cert-sync-fleet-half", half), default_policy=False)
    return Fleet(env, server_ca)


def kv_write_grants(source: HubSource) -> list[Any]:
    return [g for path in [*written_paths(source), HUB_INDEX_KV_PATH] for g in kv_write("kv", path)]


def test_the_index_is_the_hub_cert_syncs_alone(env: Env, fleet: Fleet) -> None:
    """The fleet role may write it; no edge's AppRole may read it (their policy is unchanged)."""
    fleet.synced()
    login = env.hub.api("POST", "auth/kubernetes/login", {"role": fleet.role, "jwt": env.files["hub_jwt"].read_text()})
    approle = env.hub.api(
        "POST",
        f"auth/{EDGE_APPROLE_MOUNT}/login",
        {
            "role_id": env.files[f"{EDGE}_role_id"].read_text().strip(),
            "secret_id": env.files[f"{EDGE}_secret_id"].read_text().strip(),
        },
    )
    index_path = f"kv/data/{HUB_INDEX_KV_PATH}"
    for response, expected in ((login, ["create", "read", "update"]), (approle, ["deny"])):
        assert response.status == 200, response.text
        token = response.body["auth"]["client_token"]
        caps = env.hub.api("POST", "sys/capabilities", {"token": token, "paths": [index_path]})
        assert sorted(caps.data[index_path]) == expected
        env.hub.api("POST", "auth/token/revoke-self", {}, token=token)
    assert HUB_INDEX_KV_PATH.startswith(f"{OTEL_KV_PREFIX}/") and OTEL_KV_PREFIX in RESERVED_KV_PREFIXES


def test_a_pass_with_nothing_new_costs_the_same_for_2_and_20_edges(env: Env, fleet: Fleet) -> None:
    """Counted in the hub's real audit log: login, the index, the two trust bundles, revoke."""
    counted: dict[int, list[str]] = {}
    audited: dict[int, int] = {}
    for edges in (FLEET_SIZE, 2):
        fleet.synced(edges)  # the index now covers exactly these edges
        mark = env.hub.audit_mark()
        result = fleet.run(edges=edges)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"cert-sync: synced 0, unchanged {edges + 3} "), result.stdout
        counted[edges] = hub_requests(env, mark)
        audited[edges] = env.hub.audit_mark() - mark
        fleet.assert_index_true(edges)
    assert counted[2] == counted[FLEET_SIZE]
    # and its audited bytes: the index's map is one string, one HMAC in the log, whatever the fleet
    print(f"audited bytes of a no-change pass: {audited}")
    assert abs(audited[FLEET_SIZE] - audited[2]) < 100, audited
    assert sorted(counted[2]) == sorted(
        [
            "update auth/kubernetes/login",
            f"read kv/data/{HUB_INDEX_KV_PATH}",
            f"read kv/data/{FLEET_CLIENT_CA}",
            f"read kv/data/{FLEET_SERVER_CA}",
            "update auth/token/revoke-self",
        ]
    )


def test_a_changed_secret_is_written_and_the_index_follows(env: Env, fleet: Fleet) -> None:
    fleet.synced()
    before = env.hub.version(fleet_kv(3))
    renewed = env.new_client_cert(fleet_edge(3))
    env.put_secret(fleet_edge(3), renewed)
    mark = env.hub.audit_mark()
    result = fleet.run()
    requests = hub_requests(env, mark)  # before this test's own (root) reads join the log
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"cert-sync: synced 1, unchanged {FLEET_SIZE + 2} ")
    stored = env.hub.kv(fleet_kv(3))
    assert stored is not None and stored["tls.crt"] == renewed["tls.crt"]
    assert stored["ca.crt"] == (env.hub.kv(FLEET_SERVER_CA) or {})["ca.crt"]  # the edge verifies the gateway
    assert env.hub.version(fleet_kv(3)) == before + 1
    index = f"kv/data/{HUB_INDEX_KV_PATH}"
    # the index first stops vouching for the path, then the copy (read just before), then the index
    assert env.hub.kv_writes(mark) == [index, f"kv/data/{fleet_kv(3)}", index]
    edge_reads = [r for r in requests if r.startswith("read kv/data/edges/")]
    assert edge_reads == [f"read kv/data/{fleet_kv(3)}"]
    fleet.assert_index_true()


def test_a_hand_changed_copy_is_repaired_at_the_next_verification(env: Env, fleet: Fleet) -> None:
    fleet.synced()
    good = env.hub.kv(fleet_kv(7))
    assert good is not None
    env.hub.put(fleet_kv(7), {**good, "tls.crt": good["tls.crt"] + "\n"})  # by hand, behind its back
    assert fleet.run().returncode == 0  # a fresh index vouches for the old content: not seen yet
    assert env.hub.kv(fleet_kv(7)) != good
    fleet.set_verified_at("2000-01-01T00:00:00Z")  # an hour has passed
    mark = env.hub.audit_mark()
    result = fleet.run()
    requests = hub_requests(env, mark)  # before this test's own (root) reads join the log
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"cert-sync: synced 1, unchanged {FLEET_SIZE + 2} ")
    assert env.hub.kv(fleet_kv(7)) == good
    reads = [r for r in requests if r.startswith("read kv/data/edges/")]
    assert sorted(reads) == sorted({f"read kv/data/{fleet_kv(i)}" for i in range(FLEET_SIZE)})  # every copy
    assert fleet.index()["verifiedAt"] > "2026"  # verified now
    fleet.assert_index_true()


@pytest.mark.parametrize(
    "index",
    [
        None,
        {"verifiedAt": "yesterday", "paths": "{}"},
        {"verifiedAt": "2999-01-01T00:00:00Z", "paths": "{}"},
        {"verifiedAt": "NOW", "paths": 3},
        {"verifiedAt": "NOW", "paths": "{not json"},
        {"verifiedAt": "NOW", "paths": '{"edges/fleet-00/otel-client-tls": {"sha256": "00", "version": 1}}'},
    ],
    ids=["missing", "bad date", "future", "not a string", "not json", "bad entry"],
)
def test_a_missing_or_corrupt_index_means_verify_everything(
    env: Env, fleet: Fleet, index: dict[str, Any] | None
) -> None:
    fleet.synced()
    if index is None:
        assert env.hub.api("DELETE", f"kv/metadata/{HUB_INDEX_KV_PATH}").status == 204
    else:  # "NOW": a fresh date, so that only the broken part can make it verify
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        env.hub.put(HUB_INDEX_KV_PATH, {k: now if v == "NOW" else v for k, v in index.items()})
    mark = env.hub.audit_mark()
    result = fleet.run()
    requests = hub_requests(env, mark)  # before this test's own (root) reads join the log
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"cert-sync: synced 0, unchanged {FLEET_SIZE + 3} ")
    reads = [r for r in requests if r.startswith("read kv/data/edges/")]
    assert len(reads) == FLEET_SIZE
    assert env.hub.kv_writes(mark) == [f"kv/data/{HUB_INDEX_KV_PATH}"]  # only the index, rewritten
    fleet.assert_index_true()


@pytest.mark.usefixtures("restore_secrets")
def test_a_refused_write_leaves_the_index_true(env: Env, fleet: Fleet) -> None:
    """Two renewals; the second copy's write is refused half-way (no pre-flight without the default
    policy): the first is written, the index vouches for neither, the next pass finishes the work."""
    fleet.synced()
    for i in (2, 5):
        env.put_secret(fleet_edge(i), env.new_client_cert(fleet_edge(i)))
    mark = env.hub.audit_mark()
    result = fleet.run("--role", "cert-sync-fleet-half")
    failed_with_one_line(
        result,
        EXIT_TARGET,
        f"writing kv/data/{fleet_kv(5)}",
        "HTTP 403",
        f"written before this failure: kv/data/{fleet_kv(2)}",
    )
    index = f"kv/data/{HUB_INDEX_KV_PATH}"
    assert env.hub.kv_writes(mark) == [index, f"kv/data/{fleet_kv(2)}", f"kv/data/{fleet_kv(5)}"]
    paths = fleet.paths()
    assert fleet_kv(2) not in paths and fleet_kv(5) not in paths
    for path, entry in paths.items():  # what it still vouches for is true
        assert entry == {"sha256": digest(env.hub.kv(path) or {}), "version": env.hub.version(path)}
    mark = env.hub.audit_mark()
    assert fleet.run().returncode == 0
    requests = hub_requests(env, mark)
    reads = [r for r in requests if r.startswith("read kv/data/edges/")]
    assert sorted(reads) == [f"read kv/data/{fleet_kv(2)}", f"read kv/data/{fleet_kv(5)}"]
    assert env.hub.kv_writes(mark) == [f"kv/data/{fleet_kv(5)}", index]  # 2 is already right
    assert (env.hub.kv(fleet_kv(5)) or {})["tls.crt"] == env.current[fleet_edge(5)]["tls.crt"]
    fleet.assert_index_true()


def test_an_unreachable_vault_changes_nothing(env: Env, fleet: Fleet) -> None:
    fleet.synced()
    env.put_secret(fleet_edge(4), env.new_client_cert(fleet_edge(4)))
    before = (env.hub.version(HUB_INDEX_KV_PATH), env.hub.version(fleet_kv(4)))
    dead = f"https://127.0.0.1:{free_port()}"
    failed_with_one_line(fleet.run("--vault-addr", dead), EXIT_TARGET, "connection refused")
    assert (env.hub.version(HUB_INDEX_KV_PATH), env.hub.version(fleet_kv(4))) == before
    fleet.assert_index_true()
    assert fleet.run().returncode == 0
    fleet.assert_index_true()


def test_a_copy_the_index_vouches_for_is_read_before_it_is_written(env: Env, fleet: Fleet) -> None:
    """The gateway moves to a new server CA: its bundle gains the CA and every edge copy (which carries
    that bundle) changes. Each copy is read before its write; one changed by hand meanwhile is seen
    (the plan is made again with it) and written with the version really stored."""
    fleet.synced()
    new_ca = TestCA("otel-fleet-server-ca-2")
    gateway = new_ca.issue("otel-gateway", ["otel-gateway.example"], [])
    env.put_secret(GATEWAY_SECRET, {"tls.crt": gateway.cert_pem, "tls.key": gateway.key_pem, "ca.crt": new_ca.cert_pem})
    good = env.hub.kv(fleet_kv(9))
    assert good is not None
    hand = env.hub.put(fleet_kv(9), {**good, "tls.crt": good["tls.crt"] + "\n"})
    mark = env.hub.audit_mark()
    result = fleet.run()
    requests = hub_requests(env, mark)  # before this test's own (root) reads join the log
    assert result.returncode == 0, result.stderr
    for i in range(FLEET_SIZE):
        path = f"kv/data/{fleet_kv(i)}"
        assert requests.index(f"read {path}") < requests.index(f"update {path}"), path
    assert env.hub.version(fleet_kv(9)) == hand + 1
    assert (env.hub.kv(fleet_kv(9)) or {})["tls.crt"] == good["tls.crt"]
    bundle = (env.hub.kv(FLEET_SERVER_CA) or {})["ca.crt"]
    assert all((env.hub.kv(fleet_kv(i)) or {})["ca.crt"] == bundle for i in range(FLEET_SIZE))
    fleet.assert_index_true()
