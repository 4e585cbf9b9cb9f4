"""The external LoadBalancer's listener on a real server: PROXY protocol v2 as a NodeBalancer sends it.

The hub stack's own server HCL (with its own audit device, in OpenBao's config form) runs as a real
OpenBao node. The one setting changed is ``vault.exposure.nodeBalancerRanges``: on LKE NodeBalancers
connect from ``192.168.255.0/24``, which does not exist here, so the test's "NodeBalancer" is the
loopback address ``127.0.0.1`` and the setting says so. Then, over real TCP and TLS:

* a PROXY v2 header from the trusted address is accepted and the client address it carries is the one
  the audit log records (what a CIDR-bound token or an operator reading the audit trail relies on);
* a connection from the trusted address without a header still works (``allow_authorized`` is ``USE``,
  which makes the header optional: a health check or hairpin connection is not refused);
* a header from any other address is read and thrown away: the audit log records the real peer, so
  no client can claim someone else's address;
* the listener in-cluster clients use (8200) speaks no PROXY protocol: a header there breaks the
  TLS handshake, and requests without one work as before.
"""

from __future__ import annotations

import copy
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.vault_names import API_PORT, EXTERNAL_API_PORT
from offline.engine import Recording, load_stack_file, run_program
from rig.client_address import https_get, proxy_v2_header
from rig.hub_edge import single_hub_pod
from rig.openbao import wait_until
from rig.vault_cluster import LoopbackVault

pytestmark = pytest.mark.real

CLIENT = "203.0.113.7"  # the address a NodeBalancer would report for an allowed client


def audited_addresses(audit_log: Path, path: str) -> list[str]:
    """``request.remote_address`` of every audited request to ``path``, in order."""
    addresses: list[str] = []
    for line in audit_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "request" and entry["request"].get("path") == path:
            addresses.append(entry["request"]["remote_address"])
    return addresses


@pytest.fixture(scope="module")
def hub_trusting_loopback() -> Recording:
    config, secret_keys = load_stack_file("hub")
    config = copy.deepcopy(config)
    config["fedobs:vault"]["exposure"]["nodeBalancerRanges"] = ["127.0.0.1/32"]
    recording = run_program("hub", config, secret_keys)
    assert recording.error is None, recording.error
    return recording


@pytest.fixture
def node(hub_trusting_loopback: Recording, tmp_path: Path) -> Iterator[tuple[LoopbackVault, str]]:
    """Pod ``vault-0`` of the hub, alone (it initialises a one-node Raft cluster), unsealed; yields the
    cluster and the root token."""
    with single_hub_pod(hub_trusting_loopback, tmp_path) as started:
        yield started


def test_the_external_listener_records_the_client_address_only_from_the_nodebalancer(
    node: tuple[LoopbackVault, str],
) -> None:
    vault, token = node
    ip = vault.layout.ips[0]
    external = vault.layout.ports[EXTERNAL_API_PORT]
    common: dict[str, Any] = {"token": token, "ca_file": vault.ca_file, "server_name": vault.spec.external_hostname}
    audit_log = vault.cluster.nodes[0].workdir / "audit.log"

    # From the trusted address: the header's client address is believed and audited.
    proxied = proxy_v2_header(CLIENT, 41000, ip, external)
    assert https_get(ip, external, "auth/token/lookup-self", header=proxied, **common) == 200
    # From the trusted address without a header: accepted as it is.
    assert https_get(ip, external, "auth/token/lookup-self", **common) == 200
    # From another address: the header is read and ignored; the real peer is audited.
    spoofed = proxy_v2_header("198.51.100.9", 41001, ip, external)
    assert https_get(ip, external, "auth/token/lookup-self", source="127.0.0.2", header=spoofed, **common) == 200

    def audited() -> list[str]:
        return audited_addresses(audit_log, "auth/token/lookup-self") if audit_log.exists() else []

    found = wait_until(lambda: audited() if len(audited()) >= 3 else None, timeout=10, what="three audited requests")
    assert found == [CLIENT, "127.0.0.1", "127.0.0.2"]


def test_the_in_cluster_listener_speaks_no_proxy_protocol(node: tuple[LoopbackVault, str]) -> None:
    vault, token = node
    ip = vault.layout.ips[0]
    in_cluster = vault.layout.ports[API_PORT]
    common: dict[str, Any] = {"token": token, "ca_file": vault.ca_file, "server_name": "vault-active.vault.svc"}
    assert https_get(ip, in_cluster, "auth/token/lookup-self", **common) == 200
    header = proxy_v2_header(CLIENT, 41002, ip, in_cluster)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(ip, in_cluster, "auth/token/lookup-self", header=header, **common)
