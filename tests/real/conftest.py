"""Fixtures for tests against real OpenBao servers on loopback.

``loopback_vault(...)`` (factory fixture) starts the server HCL that ``components.vault_server_config``
renders for the pods, localised by ``tests.support.openbao.localize_server_hcl``, as N ``bao`` processes
on 127.0.0.1/.2/.3 with a test PKI whose server certificate carries exactly
``server_certificate_dns_names(spec)`` plus the loopback IPs (unless a test overrides a node's names).
Every cluster it started is killed at teardown, also when the test fails; the node logs are printed
then (pytest shows them with the failure).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components.vault_server_config import (
    SERVER_CERTIFICATE_IP_ADDRESSES,
    TLS_DIR,
    VaultServerSpec,
    render_server_hcl,
    server_certificate_dns_names,
)
from tests.support.openbao import (
    LoopbackLayout,
    RaftCluster,
    live_clusters,
    localize_server_hcl,
    loopback_layout,
    reap_spawned,
)
from tests.support.pki import TestCA

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
    return VaultServerSpec(
        cluster_name="fedobs-test", external_hostname="vault.fedobs.test", replicas=replicas
    )


def build_loopback_vault(
    base: Path,
    spec: VaultServerSpec,
    *,
    nodes: Sequence[int] | None = None,
    dns_names_for: Callable[[int], list[str]] | None = None,
    extra_tls_files: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> LoopbackVault:
    """Render, localise and create (not start) a cluster of ``spec.replicas`` pods (or only ``nodes``).

    ``dns_names_for(i)`` overrides node i's certificate DNS names; ``extra_tls_files`` maps more pod file
    paths (e.g. the hub CA of a transit seal) to local files; ``extra_env`` is the pods' extra
    environment (e.g. ``VAULT_TOKEN`` for the transit seal)."""
    pod_hcl = render_server_hcl(spec)
    hosts = [spec.peer_hostname(i) for i in range(spec.replicas)]
    layout = loopback_layout(hosts)
    ca = TestCA("fedobs test CA")
    ca_file = str(ca.write(base))
    wanted = list(nodes) if nodes is not None else list(range(spec.replicas))
    ips = list(dict.fromkeys([*SERVER_CERTIFICATE_IP_ADDRESSES, *layout.ips]))
    texts: list[str] = []
    for i in wanted:
        node_dir = base / f"node{i}"
        tls_dir = node_dir / "tls"
        dns = dns_names_for(i) if dns_names_for else server_certificate_dns_names(spec)
        ca.issue(f"vault-{i}", dns, ips).write(tls_dir)
        ca.write(tls_dir)
        (node_dir / "data").mkdir(mode=0o700, parents=True, exist_ok=True)
        texts.append(
            localize_server_hcl(
                pod_hcl,
                node_index=i,
                addresses=layout.addresses,
                ports=layout.ports,
                tls_files={f"{TLS_DIR}/{n}": str(tls_dir / n) for n in TLS_FILE_NAMES}
                | dict(extra_tls_files or {}),
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


@pytest.fixture(scope="session", autouse=True)
def no_bao_left_behind() -> Iterator[None]:
    """Session guard: every ``bao`` started through tests.support.openbao is dead at the end."""
    yield
    leftovers = reap_spawned()
    assert not leftovers, f"bao processes were still running at session end (killed now): {leftovers}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of every live OpenBao cluster to a failing test's report."""
    report = yield
    if report.failed:
        for cluster in live_clusters():
            report.sections.append(("OpenBao node logs", cluster.logs()))
    return report


@contextlib.contextmanager
def running(cluster: RaftCluster) -> Iterator[RaftCluster]:
    """Start the cluster (deadline) and always kill it afterwards; logs go to failing reports."""
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def loopback_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LoopbackVault]]:
    """Factory: ``loopback_vault(spec, **build_loopback_vault kwargs)`` -> a started ``LoopbackVault``."""
    stack = contextlib.ExitStack()

    def make(spec: VaultServerSpec, **kwargs: Any) -> LoopbackVault:
        vault = build_loopback_vault(tmp_path_factory.mktemp("vault"), spec, **kwargs)
        stack.enter_context(running(vault.cluster))
        return vault

    with stack:
        yield make
