"""Real OpenBao Raft clusters on loopback built from what a stack declares.

``stack_server(recording)`` reads, from a stack run under mocks, exactly what the pods would get:
the server HCL in the vault chart's values and the SAN list of the ``vault-server-tls``
Certificate. ``build_loopback_vault`` starts that HCL (localised by
``rig.openbao.localize_server_hcl``) as N ``bao`` processes on 127.0.0.1/.2/.3 with a
test PKI whose server certificate carries exactly those DNS names plus the loopback IPs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.vault import PLAINTEXT_UNSEAL_KEYS_FLAG
from components.vault_names import API_PORT, CLUSTER_PORT, EXTERNAL_API_PORT
from components.vault_server_config import (
    SERVER_CERTIFICATE_IP_ADDRESSES,
    TLS_DIR,
    VaultServerSpec,
    render_server_hcl,
    server_certificate_dns_names,
)
from offline.engine import Recording
from rig.openbao import LoopbackLayout, RaftCluster, localize_server_hcl, loopback_layout
from rig.pki import TestCA


@dataclass(frozen=True)
class StackServer:
    """What a stack gives its Vault pods: the server HCL, the certificate's names, the replicas, and
    the vault chart's values they come from."""

    pod_hcl: str
    dns_names: list[str]
    ip_addresses: list[str]
    spec: VaultServerSpec
    values: dict[str, Any]


def stack_server(recording: Recording) -> StackServer:
    release = next(r for r in recording.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault")
    values = release.inputs["values"]
    certificate = next(
        o
        for o in recording.kubernetes_objects()
        if o["kind"] == "Certificate" and o["metadata"]["name"] == "vault-server-tls"
    )
    replicas = int(values["server"]["ha"]["replicas"])
    spec = VaultServerSpec(
        cluster_name=recording.stack,
        external_hostname=certificate["spec"]["dnsNames"][-1],
        release=release.inputs["name"],
        namespace=release.inputs["namespace"],
        replicas=replicas,
    )
    return StackServer(
        values["server"]["ha"]["raft"]["config"],
        list(certificate["spec"]["dnsNames"]),
        list(certificate["spec"].get("ipAddresses", [])),
        spec,
        dict(values),
    )


#: Every port a Vault pod listens on (API, cluster, the external LoadBalancer's PROXY protocol listener),
#: each mapped to one loopback port.
POD_PORTS = (API_PORT, CLUSTER_PORT, EXTERNAL_API_PORT)

#: The files of the ``vault-server-tls`` Secret as the chart mounts them.
TLS_FILE_NAMES = ("tls.crt", "tls.key", "ca.crt")


@dataclass
class LoopbackVault:
    """A started loopback cluster built from the rendered pod HCL, and how it was built."""

    spec: VaultServerSpec
    pod_hcl: str
    layout: LoopbackLayout
    ca: TestCA
    ca_file: str
    cluster: RaftCluster
    localized: list[str]
    base: Path

    @property
    def urls(self) -> list[str]:
        return self.cluster.urls


def make_spec(replicas: int = 3) -> VaultServerSpec:
    """The spec the real tests render: 3 pods of release ``vault`` in namespace ``vault``."""
    return VaultServerSpec(cluster_name="fedobs-test", external_hostname="vault.fedobs.test", replicas=replicas)


def build_loopback_vault(
    base: Path,
    spec: VaultServerSpec,
    *,
    pod_hcl: str | None = None,
    dns_names: Sequence[str] | None = None,
    nodes: Sequence[int] | None = None,
    dns_names_for: Callable[[int], list[str]] | None = None,
    extra_tls_files: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> LoopbackVault:
    """Render, localise and create (not start) a cluster of ``spec.replicas`` pods (or only ``nodes``).

    ``dns_names_for(i)`` overrides node i's certificate DNS names; ``extra_tls_files`` maps more pod file
    paths (e.g. the hub CA of a transit seal) to local files; ``extra_env`` is the pods' extra
    environment (e.g. ``VAULT_TOKEN`` for the transit seal). ``pod_hcl`` and ``dns_names`` default to
    what ``components.vault_server_config`` renders for ``spec``; pass a stack's (``stack_server``)."""
    pod_hcl = pod_hcl if pod_hcl is not None else render_server_hcl(spec)
    hosts = [spec.peer_hostname(i) for i in range(spec.replicas)]
    layout = loopback_layout(hosts, POD_PORTS)
    ca = TestCA("fedobs test CA")
    ca_file = str(ca.write(base))
    wanted = list(nodes) if nodes is not None else list(range(spec.replicas))
    ips = list(dict.fromkeys([*SERVER_CERTIFICATE_IP_ADDRESSES, *layout.ips]))
    texts: list[str] = []
    for i in wanted:
        node_dir = base / f"node{i}"
        tls_dir = node_dir / "tls"
        default_dns = list(dns_names) if dns_names is not None else server_certificate_dns_names(spec)
        dns = dns_names_for(i) if dns_names_for else default_dns
        ca.issue(f"vault-{i}", dns, ips).write(tls_dir)
        ca.write(tls_dir)
        (node_dir / "data").mkdir(mode=0o700, parents=True, exist_ok=True)
        texts.append(
            localize_server_hcl(
                pod_hcl,
                node_index=i,
                addresses=layout.addresses,
                ports=layout.ports,
                tls_files={f"{TLS_DIR}/{n}": str(tls_dir / n) for n in TLS_FILE_NAMES} | dict(extra_tls_files or {}),
                data_dir=str(node_dir / "data"),
            )
        )
    cluster = RaftCluster(
        base,
        texts,
        [layout.api_url(i) for i in wanted],
        ca_file,
        names=[f"node{i}" for i in wanted],
        # the chart's setNodeId: VAULT_RAFT_NODE_ID=$(pod name); OpenBao reads BAO_RAFT_NODE_ID
        node_env=[{"BAO_RAFT_NODE_ID": f"{spec.release}-{i}", **(extra_env or {})} for i in wanted],
    )
    return LoopbackVault(spec, pod_hcl, layout, ca, ca_file, cluster, texts, base)


def bootstrap_job(recording: Recording) -> dict[str, Any]:
    """The stack's bootstrap Job (``vault-bootstrap-<digest>``), whatever else the stack runs as Jobs."""
    (job,) = [
        o
        for o in recording.kubernetes_objects()
        if o["kind"] == "Job" and o["metadata"]["name"].startswith("vault-bootstrap-")
    ]
    return job


def job_command(recording: Recording) -> list[str]:
    job = bootstrap_job(recording)
    return list(job["spec"]["template"]["spec"]["containers"][0]["command"])


def localize_job_command(
    command: list[str],
    vault: LoopbackVault,
    workdir: Path | None = None,
    state_file: Path | None = None,
    *,
    timeout: float = 45.0,
    autopilot_stabilization: str | None = "2s",
    keep_pgp_keys: bool = False,
) -> list[str]:
    """The bootstrap Job's arguments (after ``python -m programs.vault_bootstrap``) as they run here:
    pod peers -> the cluster's loopback URLs (pods that were not started are dropped), mounted files
    -> ``workdir/password``, ``workdir/previous-password`` and ``workdir/admin-policy.hcl``, the
    Kubernetes Secret store -> the file ``state_file``; plus test deadlines and, unless
    ``autopilot_stabilization`` is ``None`` (the server's own 10 s, as deployed), a short autopilot
    stabilisation time. Without ``workdir`` the
    files keep their pod paths and without ``state_file`` the state stays in the Kubernetes Secret
    (a pod sandbox mounts the one and reaches the other). The operators' ``--pgp-key``s (the shipped hub
    gives them; nobody here holds their private halves) become the development setting's plaintext
    keys, so a run can unseal by itself, unless ``keep_pgp_keys`` (the PGP path is proven in
    tests/real/test_vault_bootstrap.py with keys the test generates). Everything else is the Job's own list."""
    replacements: dict[str, str] = {}
    if workdir is not None:
        replacements = {
            "--ca-file": vault.ca_file,
            "--admin-password-file": str(workdir / "password"),
            "--admin-previous-password-file": str(workdir / "previous-password"),
            "--admin-policy-file": str(workdir / "admin-policy.hcl"),
        }
    args: list[str] = []
    peers = iter(vault.urls)
    parts = iter(command[3:])
    plaintext = False
    for part in parts:
        value = next(parts)
        if part == "--pgp-key" and not keep_pgp_keys:
            plaintext = True
            continue
        if part == "--peer":
            value = next(peers, "")
            if not value:
                continue
        elif part == "--state-kubernetes-secret" and state_file is not None:
            part, value = "--state-file", str(state_file)
        args += [part, replacements.get(part, value)]
    if plaintext:
        args += [PLAINTEXT_UNSEAL_KEYS_FLAG, "true"]
    args += ["--timeout", str(timeout), "--poll-interval", "0.2"]
    if autopilot_stabilization is not None:
        args += ["--autopilot-server-stabilization-time", autopilot_stabilization]
    return args


@contextlib.contextmanager
def running(cluster: RaftCluster) -> Iterator[RaftCluster]:
    """Start the cluster (deadline) and always kill it afterwards; logs go to failing reports."""
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
