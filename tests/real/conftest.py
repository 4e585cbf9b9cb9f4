"""Fixtures for tests against real OpenBao servers on loopback.

``loopback_vault(...)`` (factory fixture) starts the server HCL that ``components.vault_server_config``
renders for the pods, localised by ``rig.openbao.localize_server_hcl``, as N ``bao`` processes
on 127.0.0.1/.2/.3 with a test PKI whose server certificate carries exactly
``server_certificate_dns_names(spec)`` plus the loopback IPs (unless a test overrides a node's names).
Every cluster it started is killed at teardown, also when the test fails; the node logs are printed
then (pytest shows them with the failure).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from components.vault_server_config import VaultServerSpec
from rig.openbao import live_clusters, reap_spawned
from rig.vault_cluster import LoopbackVault, build_loopback_vault, make_spec, running

__all__ = ["make_spec"]


@pytest.fixture(scope="session", autouse=True)
def no_bao_left_behind() -> Iterator[None]:
    """Session guard: every ``bao`` started through rig.openbao is dead at the end."""
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
