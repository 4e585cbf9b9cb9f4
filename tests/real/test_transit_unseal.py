"""Transit auto-unseal for real: an edge Vault unseals through its key on a hub Vault.

Both servers run what the stacks declare. The hub: a node of the hub stack's server HCL,
bootstrapped by the hub's Job command, with what the hub declares for its edges applied by the
applier (transit keys and token roles, the edges' AppRoles, their deploy identities, trusting a
key this test generates). The edge: the edge stack evaluated under mocks with the REAL hub outputs
in its stack reference (address, CA), its seal token created on the hub by its own deploy identity
(a JWT signed with the test key) as its ``HubLink`` declares, then started with the seal stanza the
edge stack renders, the hub CA from its ``hub-vault-ca`` Secret and the token from its
``vault-seal`` Secret, and bootstrapped by the edge's Job command (``--seal auto``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from offline.engine import Recording, load_stack_file, run_program
from rig.applier import VaultApplier
from rig.deploy_identity import DeployKey, edge_link_resources, edge_on_real_hub, trusting
from rig.hub_edge import (
    admin_token,
    edge_vault,
    real_hub_outputs,
    run_bootstrap_job,
    secret_value,
)
from rig.openbao import BaoNode, api, wait_until
from rig.vault_cluster import LoopbackVault, build_loopback_vault, running, stack_server

PASSWORD = "transit test admin password 0123456789"
TIMEOUT = 45.0


@dataclass
class Hub:
    recording: Recording
    vault: LoopbackVault
    token: str
    outputs: dict[str, Any]
    key: DeployKey

    @property
    def url(self) -> str:
        return self.vault.urls[0]


@pytest.fixture(scope="module")
def real_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("transit-hub")
    key = DeployKey()
    config, secret_keys = load_stack_file("hub")
    hub = run_program("hub", trusting(config, key), secret_keys)
    assert hub.error is None, hub.error
    server = stack_server(hub)
    vault = build_loopback_vault(
        base / "cluster", server.spec, pod_hcl=server.pod_hcl, dns_names=server.dns_names, nodes=[0]
    )
    with running(vault.cluster):
        result = run_bootstrap_job(hub, vault, base / "job", PASSWORD, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr
        token = admin_token(vault.urls[0], vault.ca_file, PASSWORD)
        VaultApplier(vault.urls[0], token, ca_file=vault.ca_file).apply(edge_link_resources(hub))
        outputs = real_hub_outputs(hub, address=vault.urls[0], ca_pem=vault.ca.cert_pem)
        yield Hub(hub, vault, token, outputs, key)


@contextlib.contextmanager
def bootstrapped_edge(edge_plan: Recording, tmp_path: Path) -> Iterator[BaoNode]:
    """One edge pod, started and bootstrapped by the edge's Job command; killed on exit."""
    edge = edge_vault(edge_plan, tmp_path / "edge")
    with running(edge.cluster):
        (node,) = edge.cluster.nodes
        result = run_bootstrap_job(edge_plan, edge, tmp_path / "edge-job", PASSWORD, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr
        yield node


@pytest.fixture(scope="module")
def edge_plan(real_hub: Hub) -> Recording:
    """The edge stack with the seal token its deploy identity created on the real hub."""
    url, ca_file = real_hub.url, real_hub.vault.ca_file
    recording, applied = edge_on_real_hub(real_hub.recording, real_hub.key, real_hub.outputs, url, ca_file)
    assert list(applied.tokens) == ["edge-eu-hub-transit-token"]
    return recording


@pytest.mark.real
def test_edge_renders_a_seal_stanza_for_the_real_hub(edge_plan: Recording, real_hub: Hub) -> None:
    pod_hcl = stack_server(edge_plan).pod_hcl
    assert f'address = "{real_hub.url}"' in pod_hcl
    assert 'key_name = "edge-eu"' in pod_hcl
    seal_token = secret_value(edge_plan, "vault-seal", "token")
    lookup = api(
        real_hub.url,
        "POST",
        "auth/token/lookup",
        token=real_hub.token,
        body={"token": seal_token},
        ca_file=real_hub.vault.ca_file,
    )
    assert lookup.status == 200, lookup.text
    assert lookup.data["policies"] == ["transit-unseal-edge-eu"] and lookup.data["orphan"] is True
    # minted through the edge's token role: periodic (768 h, no max TTL), as the role says
    assert lookup.data["role"] == "transit-unseal-edge-eu" and lookup.data["creation_ttl"] == 768 * 3600
    assert lookup.data["explicit_max_ttl"] == 0


@pytest.mark.real
def test_edge_auto_unseals_through_its_hub_key_after_a_restart(
    edge_plan: Recording, real_hub: Hub, tmp_path: Path
) -> None:
    with bootstrapped_edge(edge_plan, tmp_path) as node:
        record = json.loads((tmp_path / "edge-job" / "vault-init.json").read_text())
        assert record["seal"] == "auto"
        assert len(record["init_response"]["recovery_keys"]) == 5  # the edge's recoveryShares
        assert not record["init_response"].get("keys"), "an auto-unsealed Vault has no unseal keys"

        node.restart()  # nothing in this test sends an unseal key after this
        wait_until(
            lambda: node.seal_status().get("sealed") is False,
            15,
            0.1,
            "the restarted edge to auto-unseal through the hub",
            ignore=(OSError,),
        )
        # the key used is this edge's own: the hub's transit key has been used to wrap it
        key = api(real_hub.url, "GET", "transit/keys/edge-eu", token=real_hub.token, ca_file=real_hub.vault.ca_file)
        assert key.status == 200 and key.data["name"] == "edge-eu"


@pytest.mark.real
def test_a_token_that_cannot_decrypt_leaves_the_edge_sealed(
    edge_plan: Recording, real_hub: Hub, tmp_path: Path
) -> None:
    with bootstrapped_edge(edge_plan, tmp_path) as node:
        node.stop()

        # A token that may encrypt but not decrypt with the edge's key, issued the way the hub
        # issues seal tokens (a token role), by Pulumi's admin identity.
        url, ca, token = real_hub.url, real_hub.vault.ca_file, real_hub.token
        policy = 'path "transit/encrypt/edge-eu" { capabilities = ["update"] }\n'
        assert (
            api(url, "PUT", "sys/policies/acl/encrypt-only", token=token, body={"policy": policy}, ca_file=ca).status
            == 204
        )
        assert (
            api(
                url,
                "POST",
                "auth/token/roles/encrypt-only",
                token=token,
                body={"allowed_policies": ["encrypt-only"], "orphan": True},
                ca_file=ca,
            ).status
            == 204
        )
        weak = api(
            url,
            "POST",
            "auth/token/create/encrypt-only",
            token=token,
            body={"policies": ["encrypt-only"], "ttl": "10m"},
            ca_file=ca,
        )
        assert weak.status == 200, weak.text
        weak_token = weak.body["auth"]["client_token"]
        node.env.update({"VAULT_TOKEN": weak_token, "BAO_TOKEN": weak_token})
        node.start(wait=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "permission denied" not in node.log_text():
            time.sleep(0.2)
        log = node.log_text()
        assert "permission denied" in log, log[-2000:]
        status = wait_until(lambda: node.seal_status(), 10, 0.2, "the edge API to answer", ignore=(OSError,))
        assert status["sealed"] is True
