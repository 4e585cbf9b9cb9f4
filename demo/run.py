"""``make demo``: the Vault side of a hub and one edge, for real on this machine, from what the stacks
declare. Every step is the rig's (``rig/``, as the tests use it), run in order, each with a check that
must hold; docs/demo.md says what each step proves.

1. ``plan``         the hub stack under mocks (``offline/engine.py``), against a local PostgreSQL
2. ``hub-cluster``  3 OpenBao nodes from the hub's rendered server HCL with TLS, bootstrapped by the
                    hub's own bootstrap Job command
3. ``hub-config``   the hub's ``pulumi_vault`` resources applied (``rig/applier.py``) with
                    the bootstrap's admin login
4. ``edge-unseal``  the edge stack under mocks with the real hub's outputs; its Vault auto-unsealed
                    through the hub's transit key, also after a restart
5. ``edge-config``  the edge's ``pulumi_vault`` resources applied with its own admin login
6. ``pki``          the edge's client certificate issued as the hub's ``Certificate`` specifies
7. ``cert-sync``    the hub's cert-sync CronJob, then the edge's follower (one poll); the edge VSO role reads the result
8. ``database``     the agent renders a PostgreSQL credential from the example Job's annotations;
                    the Job's consumer loads it and uses it (skipped with ``--no-database`` or
                    when PostgreSQL is not installed)

Every server listens on 127.0.0.1-3 only. Everything lives in one temporary directory; on exit,
on a failed check and on SIGINT/SIGTERM every server is stopped and the directory removed.
``--keep`` (``make demo KEEP=1``) leaves it all running until Ctrl-C and prints the ``export``
lines for the ``bao`` CLI. Exit status: 0 when every step passed (or was skipped), 1 when a check
failed (the step is named), 130/143 when interrupted by SIGINT/SIGTERM (0 in ``--keep``'s wait).
SIGUSR1 prints the stack of every thread to stderr (to diagnose a hang).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import json
import os
import posixpath
import secrets
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from cryptography.x509 import ExtendedKeyUsage, NameOID, load_pem_x509_certificates
from cryptography.x509.oid import ExtendedKeyUsageOID

from components.vault import ADMIN_USERNAME
from components.vault_names import ADMIN_AUTH_MOUNT, ADMIN_POLICY
from offline.engine import RecordedResource, Recording, load_stack_file, run_program
from programs import credentials
from rig import databases, processes
from rig.agent import agent_config_from_annotations, run_agent, select_injected_secrets
from rig.applier import AppliedVault, VaultApplier
from rig.deploy_identity import DeployKey, edge_on_real_hub, trusting
from rig.hub_edge import (
    REPO,
    Pki,
    admin_token,
    edge_vault,
    issue_pki,
    k8s_object,
    kubernetes_auth_overrides,
    openbao_pod_hcl,
    pod_template,
    publish_pki,
    real_hub_outputs,
    run_bootstrap_job,
    run_cert_sync,
    vso_login,
)
from rig.kube_api import KubeAPIServer
from rig.local_hub import (
    AWS_TYPES,
    MYSQL_CONNECTION,
    PG_CONNECTION,
    connection_resources,
    hub_against,
    seeded_postgres,
    use_telemetry,
)
from rig.openbao import ApiResponse, BaoNode, api, live_clusters, wait_until
from rig.programs_env import programs_python
from rig.tls_vault import audit_requests
from rig.vault_cluster import LoopbackVault, build_loopback_vault, running, stack_server

STEPS: tuple[tuple[str, str], ...] = (
    ("plan", "evaluate the hub stack under mocks (offline/engine.py)"),
    ("hub-cluster", "start the hub's Vault: 3 nodes from its rendered server config, bootstrapped by its Job"),
    ("hub-config", "apply the hub's Vault configuration with the bootstrap's admin login"),
    ("edge-unseal", "evaluate the edge with the real hub's outputs; its Vault auto-unseals through the hub"),
    ("edge-config", "apply the edge's Vault configuration with its admin login"),
    ("pki", "issue the hub's OTLP certificates as its Certificate resources specify"),
    ("cert-sync", "run the hub's cert-sync CronJob, then the edge's follower"),
    ("database", "the agent renders a PostgreSQL credential from the example Job's annotations; it is used"),
)
EXAMPLE_JOB = "notebook-validation-example"


class CheckFailed(Exception):
    """A step's check did not hold."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; raised from the signal handler so every ``with`` block cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def check(condition: object, failure: str) -> None:
    """Fail the current step with ``failure`` unless ``condition`` holds (never skipped like ``assert``)."""
    if not condition:
        raise CheckFailed(failure)


def ok(response: ApiResponse, what: str) -> ApiResponse:
    check(response.status in (200, 204), f"{what}: HTTP {response.status} {response.text.strip()[:300]}")
    return response


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------------
@dataclass
class StepResult:
    name: str
    title: str
    status: str = "PENDING"  # PASS, SKIP, FAIL, INTERRUPTED
    seconds: float = 0.0
    proofs: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Listener:
    what: str
    url: str

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urllib.parse.urlsplit(self.url)
        return parts.hostname or "127.0.0.1", int(parts.port or 0)


class Report:
    """Prints progress step by step and keeps what was proven."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.results = [StepResult(name, title) for name, title in STEPS]
        self.current: StepResult | None = None
        self.listeners: list[Listener] = []

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepResult]:
        index, result = next((i, r) for i, r in enumerate(self.results, 1) if r.name == name)
        self.line(f"[{index}/{len(self.results)}] {name}: {result.title}")
        self.current = result
        started = time.monotonic()
        try:
            yield result
        except Interrupted:
            result.status = "INTERRUPTED"
            raise
        except BaseException:
            result.status = "FAIL"
            raise
        finally:
            result.seconds = time.monotonic() - started
            self.current = None
        result.status = "PASS"
        self.line(f"      done in {result.seconds:.1f} s")

    def skip(self, name: str, why: str) -> None:
        index, result = next((i, r) for i, r in enumerate(self.results, 1) if r.name == name)
        result.status, result.note = "SKIP", why
        self.line(f"[{index}/{len(self.results)}] {name}: skipped ({why})")

    def proven(self, text: str) -> None:
        assert self.current is not None
        self.current.proofs.append(text)
        self.line(f"      ✓ {text}")

    def info(self, text: str) -> None:
        self.line(f"      {text}")

    def listening(self, what: str, url: str, extra: str = "") -> None:
        self.listeners.append(Listener(what, url))
        self.info(f"listening: {what} at {url}{f'  ({extra})' if extra else ''}")

    def failed_step(self) -> StepResult | None:
        return next((r for r in self.results if r.status in ("FAIL", "INTERRUPTED")), None)


# --------------------------------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------------------------------
@dataclass
class Hub:
    recording: Recording
    vault: LoopbackVault
    leader: BaoNode
    password: str
    kube: KubeAPIServer | None = None
    applied: AppliedVault | None = None

    @property
    def url(self) -> str:
        return self.leader.url

    @property
    def ca_file(self) -> str:
        return self.vault.ca_file

    def token(self) -> str:
        return admin_token(self.url, self.ca_file, self.password)


@dataclass
class Edge:
    name: str
    recording: Recording
    vault: LoopbackVault
    password: str
    kube: KubeAPIServer | None = None

    @property
    def node(self) -> BaoNode:
        return self.vault.cluster.nodes[0]

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def ca_file(self) -> str:
        return self.vault.ca_file

    def token(self) -> str:
        return admin_token(self.url, self.ca_file, self.password)


def vault_resources(recording: Recording) -> list[RecordedResource]:
    """The Vault resources the stack declares in its own Vault (an edge's HubLink ones go to the hub)."""
    own = next(p for p in recording.of_type("pulumi:providers:vault") if p.name.endswith("-vault-provider"))
    return [r for r in recording.resources if r.type.startswith("vault:") and r.provider.startswith(own.urn + "::")]


def listed(response: ApiResponse) -> list[str]:
    return sorted(str(k).rstrip("/") for k in response.data.get("keys", []))


def edge_names(hub: Recording) -> list[str]:
    """The edges the hub serves: one transit key each."""
    return sorted(k.inputs["name"] for k in hub.of_type("vault:transit/secretBackendKey:SecretBackendKey"))


class Demo:
    def __init__(self, report: Report, stack: contextlib.ExitStack, base: Path, *, database: bool) -> None:
        self.report = report
        self.stack = stack
        self.base = base
        self.database = database
        self.pg: databases.PostgresServer | None = None
        self.hub_recording: Recording | None = None
        #: The edges' deploy identity provider of the demo (GitHub's OIDC in CI): the hub trusts its key.
        self.deploy_key = DeployKey()
        self.hub: Hub | None = None
        self.edge: Edge | None = None
        self.issued: Pki | None = None

    def kube_api(self) -> KubeAPIServer:
        """A loopback Kubernetes API, stopped with the rest. Its threads are started with SIGINT/SIGTERM
        blocked, so those signals always reach the main thread (a signal taken by another thread
        would not wake the main thread from a blocking wait)."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            return self.stack.enter_context(KubeAPIServer())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    # -- 1 ---------------------------------------------------------------------------------------
    def plan(self) -> None:
        r = self.report
        if self.database:
            self.pg = self.stack.enter_context(seeded_postgres())
            r.listening(
                "PostgreSQL",
                f"postgresql://{self.pg.host}:{self.pg.port}",
                "database telemetry; Vault's admin role vault-admin",
            )
            recording = hub_against(self.pg, None, self.deploy_key)
            r.info(f"the hub's {PG_CONNECTION} connection points at it; {MYSQL_CONNECTION} (MariaDB) is not started")
        else:
            config, secret_keys = load_stack_file("hub")
            recording = run_program("hub", trusting(config, self.deploy_key), secret_keys)
            check(recording.error is None, f"the hub stack failed under mocks: {recording.error}")
        server = stack_server(recording)
        declared = vault_resources(recording)
        r.proven(
            f"hub program evaluated with Pulumi.hub.yaml: {len(recording.resources)} resources, "
            f"{len(declared)} of them Vault configuration; Vault: {server.spec.replicas} replicas, "
            f"edges {', '.join(edge_names(recording))}; "
            f"its outputs hold no credential: {', '.join(sorted(recording.outputs))}"
        )
        self.hub_recording = recording

    # -- 2 ---------------------------------------------------------------------------------------
    def hub_cluster(self) -> None:
        r, recording = self.report, self.hub_recording
        assert recording is not None
        server = stack_server(recording)
        vault = build_loopback_vault(
            self.base / "hub" / "cluster", server.spec, pod_hcl=openbao_pod_hcl(recording), dns_names=server.dns_names
        )
        self.stack.enter_context(running(vault.cluster))
        for i, node in enumerate(vault.cluster.nodes):
            r.listening(f"hub Vault {server.spec.release}-{i}", node.url)
        r.info(
            f"TLS: server certificate with the {len(server.dns_names)} DNS names of the hub's vault-server-tls "
            f"Certificate + the loopback IPs, CA {vault.ca_file}"
        )
        password = secrets.token_urlsafe(24)
        started = time.monotonic()
        job = run_bootstrap_job(recording, vault, self.base / "hub" / "job", password)
        check(job.returncode == 0, f"the hub's bootstrap Job exited {job.returncode}:\n{tail(job.stderr + job.stdout)}")
        leader = vault.cluster.leader(timeout=20)
        hub = Hub(recording, vault, leader, password)
        self.hub = hub
        token = hub.token()
        servers = ok(
            api(leader.url, "GET", "sys/storage/raft/configuration", token=token, ca_file=vault.ca_file),
            "raft configuration",
        ).data["config"]["servers"]
        check(
            len(servers) == 3 and all(s["voter"] for s in servers),
            f"expected 3 voters, got {[(s['node_id'], s['voter']) for s in servers]}",
        )
        check(sum(1 for s in servers if s["leader"]) == 1, "expected exactly one leader")
        r.proven(
            f"bootstrap Job ({' '.join(['python', '-m', 'programs.vault_bootstrap'])} with the Job's arguments) "
            f"exited 0 in {time.monotonic() - started:.1f} s: 3 voters "
            f"({', '.join(sorted(s['node_id'] for s in servers))}), leader "
            f"{next(s['node_id'] for s in servers if s['leader'])}"
        )
        state_file = self.base / "hub" / "job" / "vault-init.json"
        record = json.loads(state_file.read_text())
        check(stat.S_IMODE(state_file.stat().st_mode) == 0o600, "the init result is not private (0600)")
        check("root_token" not in record["init_response"], "the init result kept the root token")
        check(len(record["init_response"]["keys"]) == record["shares"], "unseal key count != shares")
        r.proven(
            f"Shamir init once: {record['shares']} key shares, threshold {record['threshold']}, stored 0600 "
            "(stands for Secret vault/vault-init); the root token was not stored"
        )
        me = ok(api(leader.url, "GET", "auth/token/lookup-self", token=token, ca_file=vault.ca_file), "lookup-self")
        check(
            ADMIN_POLICY in me.data["policies"] and "root" not in me.data["policies"],
            f"admin login policies: {me.data['policies']}",
        )
        r.proven(
            f"admin login auth/{ADMIN_AUTH_MOUNT}/login/{ADMIN_USERNAME} works with policies "
            f"{sorted(me.data['policies'])} (not root)"
        )

    # -- 3 ---------------------------------------------------------------------------------------
    def hub_config(self) -> None:
        r, hub = self.report, self.hub
        assert hub is not None
        hub.kube = self.kube_api()
        r.listening("hub Kubernetes API (loopback stand-in: TokenReview, Secrets)", hub.kube.url)
        declared = vault_resources(hub.recording)
        without = [PG_CONNECTION, MYSQL_CONNECTION] if self.pg is None else [MYSQL_CONNECTION]
        left_out = {x.urn for x in connection_resources(declared, without)}
        applier = VaultApplier(
            hub.url,
            hub.token(),
            ca_file=hub.ca_file,
            not_in_openbao=AWS_TYPES,
            in_cluster_overrides=kubernetes_auth_overrides(hub.kube),
        )
        hub.applied = applier.apply([x for x in declared if x.urn not in left_out])
        applied = len(declared) - len(left_out) - len(hub.applied.skipped)
        r.proven(
            f"{applied} of {len(declared)} declared Vault resources applied with the provider's API calls "
            f"({len(hub.applied.calls)} calls) by the admin login, not root"
        )
        r.info(
            f"left out: {len(hub.applied.skipped)} AWS engine resources (not in OpenBao); {len(left_out)} of the "
            f"{'/'.join(without)} connection(s) (no server for them here)"
        )
        token = hub.token()
        edges = edge_names(hub.recording)
        keys = listed(ok(api(hub.url, "LIST", "transit/keys", token=token, ca_file=hub.ca_file), "transit keys"))
        check(keys == edges, f"transit keys {keys} != edges {edges}")
        roles = listed(ok(api(hub.url, "LIST", "auth/kubernetes/role", token=token, ca_file=hub.ca_file), "roles"))
        declared_roles = sorted(
            x.inputs["roleName"] for x in declared if x.type == "vault:kubernetes/authBackendRole:AuthBackendRole"
        )
        check(roles == declared_roles, f"Kubernetes auth roles {roles} != declared {declared_roles}")
        kv = ok(api(hub.url, "GET", "kv/config", token=token, ca_file=hub.ca_file), "kv config").data
        check(kv.get("cas_required") is True, "kv does not require check-and-set")
        r.proven(f"read back: transit keys {keys}; Kubernetes auth roles {roles}; kv/ requires check-and-set")

    # -- 4 ---------------------------------------------------------------------------------------
    def edge_unseal(self) -> None:
        r, hub = self.report, self.hub
        assert hub is not None and hub.applied is not None
        config, _ = load_stack_file("edge")
        name, hub_ref = str(config["fedobs:edgeName"]), str(config["fedobs:hubStack"])
        outputs = real_hub_outputs(hub.recording, address=hub.url, ca_pem=hub.vault.ca.cert_pem)
        recording, minted = edge_on_real_hub(hub.recording, self.deploy_key, outputs, hub.url, hub.ca_file)
        r.proven(
            f"{name}'s deploy identity (a JWT for its own subject) logged in to the hub and created its own "
            f"hub credentials there: {', '.join(sorted([*minted.tokens, *minted.secret_ids]))}"
        )
        pod_hcl = openbao_pod_hcl(recording)
        check(
            f'address = "{hub.url}"' in pod_hcl and f'key_name = "{name}"' in pod_hcl,
            "the edge's seal stanza does not name the real hub and its key",
        )
        r.proven(
            f"edge program ({name}) evaluated with the real hub outputs in its stack reference {hub_ref}: "
            f'seal "transit" at {hub.url}, key {name}, the hub\'s transit token in Secret vault-seal'
        )
        vault = edge_vault(recording, self.base / "edge", pod_hcl=pod_hcl)
        self.stack.enter_context(running(vault.cluster))
        edge = Edge(name, recording, vault, secrets.token_urlsafe(24))
        self.edge = edge
        r.listening(f"edge Vault {name} (1 of its pods)", edge.url)
        job = run_bootstrap_job(recording, vault, self.base / "edge" / "job", edge.password)
        check(
            job.returncode == 0, f"the edge's bootstrap Job exited {job.returncode}:\n{tail(job.stderr + job.stdout)}"
        )
        record = json.loads((self.base / "edge" / "job" / "vault-init.json").read_text())
        check(
            record["seal"] == "auto" and not record["init_response"].get("keys"),
            f"the edge was not initialised for auto-unseal: seal={record['seal']}",
        )
        r.proven(
            f"edge bootstrap Job exited 0: auto-unseal init, {len(record['init_response']['recovery_keys'])} "
            "recovery keys and no unseal keys"
        )
        audit_log = self.hub_audit_log()
        mark = audit_log.stat().st_size
        restarted = time.monotonic()
        edge.node.restart()
        wait_until(
            lambda: edge.node.seal_status().get("sealed") is False,
            20,
            0.05,
            "the restarted edge to auto-unseal",
            ignore=(OSError,),
        )
        took = time.monotonic() - restarted
        wait_until(
            lambda: edge.node.api("GET", "sys/health", timeout=2).status == 200,
            20,
            0.05,
            "the restarted edge to become active",
            ignore=(OSError,),
        )
        status = edge.node.seal_status()
        decrypts = [q for q in audit_requests(audit_log, mark) if q.get("path") == f"transit/decrypt/{name}"]
        check(status.get("type") == "transit", f"the edge's seal type is {status.get('type')}")
        check(decrypts, f"the hub's audit log shows no transit/decrypt/{name} after the edge restarted")
        r.proven(
            f"restarted edge (SIGTERM, start) unsealed itself {took:.1f} s later, no unseal key sent: "
            f"seal type transit, {len(decrypts)} transit/decrypt/{name} request(s) in the hub's audit log"
        )

    def hub_audit_log(self) -> Path:
        hub = self.hub
        assert hub is not None
        # the file device on the audit volume (the other one writes to stdout)
        audit = hub.recording.one("vault:index/audit:Audit", "hub-vault-audit")
        return hub.leader.workdir / posixpath.basename(str(audit.inputs["options"]["file_path"]))

    # -- 5 ---------------------------------------------------------------------------------------
    def edge_config(self) -> None:
        r, edge = self.report, self.edge
        assert edge is not None
        edge.kube = self.kube_api()
        r.listening(f"edge {edge.name} Kubernetes API (loopback stand-in)", edge.kube.url)
        declared = vault_resources(edge.recording)
        applied = VaultApplier(
            edge.url, edge.token(), ca_file=edge.ca_file, in_cluster_overrides=kubernetes_auth_overrides(edge.kube)
        ).apply(declared)
        r.proven(
            f"all {len(declared)} declared Vault resources applied ({len(applied.calls)} calls) by the edge's "
            "admin login"
        )
        token = edge.token()
        roles = listed(ok(api(edge.url, "LIST", "auth/kubernetes/role", token=token, ca_file=edge.ca_file), "roles"))
        kv = ok(api(edge.url, "GET", "kv/config", token=token, ca_file=edge.ca_file), "kv config").data
        check(kv.get("cas_required") is True, "the edge's kv does not require check-and-set")
        r.proven(f"read back: Kubernetes auth roles {roles}; kv/ requires check-and-set")

    # -- 6 ---------------------------------------------------------------------------------------
    def pki(self) -> None:
        r, hub, edge = self.report, self.hub, self.edge
        assert hub is not None and hub.kube is not None and edge is not None
        self.issued = issued = issue_pki(hub.recording)
        spec = issued.specs[f"otel-client-tls-{edge.name}"]
        cert = issued.client(edge.name).certificate
        cn = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        usages = list(cert.extensions.get_extension_for_class(ExtendedKeyUsage).value)
        check(cn == spec["commonName"], f"CN {cn!r} != the spec's {spec['commonName']!r}")
        check(usages == [ExtendedKeyUsageOID.CLIENT_AUTH], f"extended key usages {usages}")
        cert.verify_directly_issued_by(issued.client_ca.certificate)
        r.proven(
            f"{edge.name}'s client certificate per Certificate otel-client-tls-{edge.name} "
            f"(issuer {spec['issuerRef']['name']}, {spec['privateKey']['algorithm']}): CN={cn}, clientAuth only, "
            "signed by the client CA"
        )
        names = publish_pki(hub.recording, hub.kube, issued)
        readable = k8s_object(hub.recording, "Role", "cert-sync-reader")["rules"][0]["resourceNames"]
        r.proven(
            f"served as cert-manager's Secrets in fedobs-pki on the hub's Kubernetes API ({', '.join(names)}); "
            f"cert-sync may get only those its Role cert-sync-reader names ({', '.join(readable)})"
        )

    # -- 7 ---------------------------------------------------------------------------------------
    def cert_sync(self) -> None:
        r, hub, edge, issued = self.report, self.hub, self.edge, self.issued
        assert hub is not None and hub.kube is not None and edge is not None and edge.kube is not None
        assert issued is not None
        hub_kube, edge_kube = hub.kube, edge.kube
        workdir = self.base / "cert-sync"

        def both() -> None:
            for recording, url, ca, kube in (
                (hub.recording, hub.url, hub.ca_file, hub_kube),
                (edge.recording, edge.url, edge.ca_file, edge_kube),
            ):
                run = run_cert_sync(recording, url, ca, kube, workdir)
                check(
                    run.returncode == 0,
                    f"the {recording.stack} cert-sync exited {run.returncode}:\n{tail(run.stderr + run.stdout)}",
                )

        def version(url: str, ca: str, token: str, path: str) -> int:
            meta = api(url, "GET", f"kv/metadata/{path}", token=token, ca_file=ca)
            return int(meta.data["current_version"]) if meta.status == 200 else 0

        both()
        hub_token, edge_token = hub.token(), edge.token()
        delivered = api(edge.url, "GET", "kv/data/otel/otel-client-tls", token=edge_token, ca_file=edge.ca_file)
        leaf = issued.client(edge.name).secret_data
        data = delivered.data.get("data") or {}
        check(
            delivered.status == 200
            and {k: data.get(k) for k in ("tls.crt", "tls.key")} == {k: leaf[k] for k in ("tls.crt", "tls.key")}
            and load_pem_x509_certificates(str(data.get("ca.crt", "")).encode()) == [issued.server_ca.certificate],
            "the edge's kv/otel/otel-client-tls does not hold the issued certificate and key with the server CA",
        )
        expected = data
        on_hub = api(hub.url, "GET", f"kv/data/edges/{edge.name}/otel-client-tls", token=hub_token, ca_file=hub.ca_file)
        check(on_hub.status == 200 and on_hub.data.get("data") == expected, "the hub's copy differs")
        client_ca = api(hub.url, "GET", "kv/data/otel/client-ca", token=hub_token, ca_file=hub.ca_file)
        bundle = (client_ca.data.get("data") or {}) if client_ca.status == 200 else {}
        check(
            set(bundle) == {"ca.crt"}
            and load_pem_x509_certificates(str(bundle["ca.crt"]).encode()) == [issued.client_ca.certificate],
            "the hub's kv/otel/client-ca is not the client CA's certificate alone",
        )
        r.proven(
            f"hub run then edge run: hub kv/edges/{edge.name}/otel-client-tls -> edge kv/otel/otel-client-tls, "
            "byte for byte, carrying the server CA the edge verifies the gateway with; the gateway's client "
            "trust bundle holds the client CA's certificate, taken from the leaf's ca.crt (no Role reads a CA's Secret)"
        )
        paths = [
            (hub.url, hub.ca_file, hub_token, f"edges/{edge.name}/otel-client-tls"),
            (hub.url, hub.ca_file, hub_token, "otel/client-ca"),
            (edge.url, edge.ca_file, edge_token, "otel/otel-client-tls"),
        ]
        before = [version(*p) for p in paths]
        both()
        after = [version(*p) for p in paths]
        check(before == after, f"a second run wrote again: KV versions {before} -> {after}")
        r.proven(f"a second run of both wrote nothing (KV versions stay {after})")
        login, path = vso_login(edge.recording, edge.url, edge.ca_file, edge_kube)
        check(login.status == 200, f"the edge VSO login failed: {login.text.strip()}")
        vso = str(login.body["auth"]["client_token"])
        read = api(edge.url, "GET", path, token=vso, ca_file=edge.ca_file)
        check(read.status == 200 and read.data.get("data") == expected, f"the VSO role cannot read {path}")
        denied = api(edge.url, "GET", "kv/data/otel/other", token=vso, ca_file=edge.ca_file)
        written = api(
            edge.url,
            "POST",
            path,
            token=vso,
            ca_file=edge.ca_file,
            body={"options": {"cas": after[2]}, "data": {"x": "y"}},
        )
        check(denied.status == 403 and written.status == 403, "the VSO role can do more than read its one path")
        r.proven(
            f"the edge VSO's VaultAuth login reads {path} (what its VaultStaticSecret names) and may neither "
            "read another path nor write"
        )

    # -- 8 ---------------------------------------------------------------------------------------
    def database_credential(self) -> None:
        r, hub, pg = self.report, self.hub, self.pg
        assert hub is not None and hub.kube is not None and pg is not None
        template = pod_template(hub.recording, "Job", EXAMPLE_JOB)
        annotations = select_injected_secrets(template["metadata"]["annotations"], ["db"])
        job = k8s_object(hub.recording, "Job", EXAMPLE_JOB)
        namespace, account = job["metadata"]["namespace"], template["spec"]["serviceAccountName"]
        pod = self.base / "pod"
        secrets_dir, home, jwt = pod / "secrets", pod / "home", pod / "token"
        secrets_dir.mkdir(parents=True)
        jwt.write_text(hub.kube.mint_service_account_token(namespace, account, audiences=["vault"]))
        config = agent_config_from_annotations(
            annotations,
            vault_addr=hub.url,
            ca_file=hub.ca_file,
            jwt_file=str(jwt),
            secrets_dir=str(secrets_dir),
            home_dir=str(home),
        )
        started = time.monotonic()
        agent = run_agent(config, pod / "agent", timeout=30)
        check(agent.returncode == 0, f"bao agent exited {agent.returncode}:\n{tail(agent.stdout)}")
        rendered = secrets_dir / "db"
        check(
            rendered.exists() and stat.S_IMODE(rendered.stat().st_mode) == 0o400,
            "the agent did not render /vault/secrets/db with mode 0400",
        )
        r.proven(
            f"bao agent (pre-populate, Kubernetes auth as {namespace}/{account}, role "
            f"{annotations['vault.hashicorp.com/role']}) rendered /vault/secrets/db (0400) in "
            f"{time.monotonic() - started:.1f} s; the Job's other files (MariaDB, AWS) are left out here"
        )
        command = template["spec"]["containers"][0]["command"]
        args = [
            str(secrets_dir / "db") if a == "/vault/secrets/db" else a
            for a in command[1:]
            if not a.startswith("/vault/secrets/") or a == "/vault/secrets/db"
        ]
        consumer = processes.run([programs_python(), *args], cwd=REPO, capture_output=True, timeout=30)
        check(consumer.returncode == 0, f"the Job's consumer failed: {consumer.stderr.strip()}")
        creds = credentials.load_dotenv(rendered)
        value, refused = use_telemetry(pg, creds["DB_USERNAME"], creds["DB_PASSWORD"])
        check(value == 1, f"SELECT with the rendered credential read {value!r}")
        check(refused == "InsufficientPrivilege", f"INSERT with the rendered credential: {refused or 'allowed'}")
        r.proven(
            f"the Job's own consumer command loaded it ({consumer.stdout.strip()}); as "
            f"{creds['DB_USERNAME'][:24]}… SELECT on telemetry.app.metrics works, INSERT is refused"
        )

    # -- keep ---------------------------------------------------------------------------------------
    def exports(self) -> list[str]:
        """Shell lines for the ``bao`` CLI, one block per Vault (paste one), with a fresh admin token."""
        lines: list[str] = []
        for label, target, job in (
            ("the hub", self.hub, "hub"),
            (f"the edge {self.edge.name}" if self.edge else "", self.edge, "edge"),
        ):
            if target is None:
                continue
            token = target.token()
            password = self.base / job / "job" / "password"
            login = (
                f".venv/bin/bao login -no-store -token-only -method=userpass -path={ADMIN_AUTH_MOUNT} "
                f'username={ADMIN_USERNAME} password="$(cat {password})"'
            )
            lines += [
                f"# {label}: an admin token (policy {ADMIN_POLICY}, expires after 20 min; a new one: "
                f"export BAO_TOKEN=$({login}))",
                f"export BAO_ADDR={target.url} BAO_CACERT={target.ca_file} BAO_TOKEN={token}",
                f"export VAULT_ADDR={target.url} VAULT_CACERT={target.ca_file} VAULT_TOKEN={token}",
            ]
        return lines


# --------------------------------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------------------------------
def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--no-database", action="store_true", help="skip the database step (PostgreSQL is not started)")
    parser.add_argument(
        "--keep",
        action="store_true",
        default=os.environ.get("KEEP", "") in ("1", "true", "yes"),
        help="leave everything running until Ctrl-C (also KEEP=1)",
    )
    return parser.parse_args(argv)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parse_args(argv)
    if isinstance(out, io.TextIOWrapper):
        out.reconfigure(errors="replace")  # a terminal without UTF-8 gets '?' for the check marks
    started = time.monotonic()
    report = Report(out)
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # diagnosis of a hang: kill -USR1 <pid>
    base = Path(tempfile.mkdtemp(prefix="fedobs-demo-"))
    clusters_before = {id(c) for c in live_clusters()}  # main() may run inside another process (a test)
    databases_before = {id(d) for d in databases.live_servers()}
    if args.no_database:
        database, why = False, "--no-database"
    else:
        available, reason = databases.available(["postgresql"])
        database, why = available, f"PostgreSQL not installed: {reason}"
    report.line("fedobs demo: the Vault side of a hub and one edge, for real on loopback, from what the stacks declare")
    report.line(f"work directory {base} (removed at the end)")
    code = 0
    steps_done = 0.0
    stack = contextlib.ExitStack()
    try:
        with stack:
            demo = Demo(report, stack, base, database=database)
            steps: list[tuple[str, Callable[[], None]]] = [
                ("plan", demo.plan),
                ("hub-cluster", demo.hub_cluster),
                ("hub-config", demo.hub_config),
                ("edge-unseal", demo.edge_unseal),
                ("edge-config", demo.edge_config),
                ("pki", demo.pki),
                ("cert-sync", demo.cert_sync),
                ("database", demo.database_credential),
            ]
            for name, run in steps:
                if name == "database" and not database:
                    report.skip(name, why)
                    continue
                with report.step(name):
                    run()
            steps_done = time.monotonic() - started
            report.line()
            report.line("what was proven:")
            for result in report.results:
                checks = f"{len(result.proofs)} check{'' if len(result.proofs) == 1 else 's'} held"
                detail = f"{result.seconds:5.1f} s  {checks}" if result.status == "PASS" else result.note
                report.line(f"  {result.status:<4} {result.name:<12} {detail}")
            report.line(f"all steps passed in {steps_done:.1f} s")
            if not args.keep:
                report.line("(make demo KEEP=1 leaves everything running, to explore with the bao CLI)")
            if args.keep:
                report.line()
                report.line("KEEP: everything stays up until Ctrl-C. Servers:")
                for listener in report.listeners:
                    report.line(f"  {listener.what:<62} {listener.url}")
                report.line(
                    "To use the bao CLI from the venv (e.g. .venv/bin/bao operator raft list-peers), paste one "
                    "block into a shell:"
                )
                for line in demo.exports():
                    report.line(line)
                try:
                    while True:
                        time.sleep(0.5)
                except Interrupted as exc:
                    report.line(f"\n{exc}: stopping")
    except Interrupted as exc:
        step = report.failed_step()
        report.line(f"\ninterrupted by {exc}{f' during step {step.name}' if step else ''}: stopping")
        code = 128 + exc.signum
    except Exception as exc:  # a failed check or anything the support code raised
        step = report.failed_step()
        name = step.name if step else "setup"
        detail = str(exc) if isinstance(exc, CheckFailed) else f"{type(exc).__name__}: {exc}"
        report.line(f"\nFAILED at step {name}: {detail}")
        for cluster in live_clusters():
            if id(cluster) not in clusters_before:
                print(tail(cluster.logs(), 40), file=sys.stderr)
        code = 1
    finally:
        for sig in previous:  # a second Ctrl-C must not abort the cleanup half-way
            signal.signal(sig, signal.SIG_IGN)
        cleaned = cleanup(report, base, clusters_before, databases_before)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not cleaned and code == 0:
        code = 1
    report.line(f"total {time.monotonic() - started:.1f} s" + (f" (steps {steps_done:.1f} s)" if steps_done else ""))
    return code


def processes_naming(path: Path) -> list[int]:
    """Processes whose command line names ``path`` (a ``bao server -config=<path>/...`` of this run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(path) in cmdline:
                found.append(int(entry.name))
    return found


def cleanup(report: Report, base: Path, clusters_before: set[int], databases_before: set[int]) -> bool:
    """Every server this run started is stopped (the ``with`` blocks did it; this double-checks and
    stops leftovers of this run only) and the work directory is gone. Returns whether nothing was left."""
    leftovers: list[str] = []
    for cluster in live_clusters():
        if id(cluster) not in clusters_before:
            leftovers.append(f"OpenBao cluster {cluster.urls}")
            cluster.close()
    for server in databases.live_servers():
        if id(server) not in databases_before:
            leftovers.append(repr(server))
            server.stop()
    for pid in processes_naming(base):
        leftovers.append(f"pid {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)
    still = [listener for listener in report.listeners if port_open(*listener.host_port)]
    if leftovers or still or base.exists():
        report.line(f"cleanup: LEFT BEHIND {leftovers} {[x.url for x in still]} {base if base.exists() else ''}")
        return False
    report.line(f"cleanup: {len(report.listeners)} servers stopped, nothing listening any more, {base} removed")
    return True
