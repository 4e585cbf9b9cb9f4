"""Login CIDR bindings on a real OpenBao, through the listeners the hub configures.

The hub stack's own server HCL runs as a real OpenBao node (as in test_proxy_protocol.py, the
"NodeBalancer" is the loopback address ``127.0.0.1``). The hub's config binds the userpass admin
(``vault.adminCidrs``) and edge-eu's AppRole (``edges[0].egressCidrs``); what the stack declares for them
is applied as the provider would (the admin user created first as the bootstrap creates it). Then, over
real TCP and TLS:

* the userpass admin logs in when the NodeBalancer's PROXY header carries a bound address, and directly
  from a bound loopback address; it is refused from any other address, and when an unauthorized peer
  sends a header claiming a bound address (the header is ignored); its token works only from a bound
  address; the address binding write kept the admin's password; an empty list unbinds it again;
* edge-eu's cert-sync secret_id logs in only from its egress range and its token works only from there;
  edge-ap, with no egress configured, logs in from anywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components.vault_names import API_PORT, EXTERNAL_API_PORT
from offline.engine import Recording, load_stack_file, run_program
from rig.applier import VaultApplier
from rig.client_address import https_call, proxy_v2_header
from rig.deploy_identity import DeployKey, edge_link_resources, trusting
from rig.hub_edge import single_hub_pod
from rig.openbao import api
from rig.vault_cluster import LoopbackVault

pytestmark = pytest.mark.real

OPERATOR = "203.0.113.7"  # an operator's address, as the NodeBalancer reports it
RUNNER = "127.0.0.3"  # a client reaching the plain listener directly (in-cluster, like the bootstrap Job)
ELSEWHERE = "198.51.100.200"
EDGE_EU_EGRESS = "198.51.100.0/28"
EDGE_EU_NODE = "198.51.100.5"
PASSWORD = "the-password-the-bootstrap-set"


@dataclass
class Node:
    vault: LoopbackVault
    root: str
    hub: Recording

    @property
    def ip(self) -> str:
        return self.vault.layout.ips[0]

    def via_nodebalancer(
        self, client: str, method: str, path: str, *, body: dict[str, Any] | None = None, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """A request the NodeBalancer forwards from ``client``: from the trusted address, with its header."""
        port = self.vault.layout.ports[EXTERNAL_API_PORT]
        return https_call(
            self.ip,
            port,
            method,
            path,
            body=body,
            token=token,
            ca_file=self.vault.ca_file,
            server_name=self.vault.spec.external_hostname,
            header=proxy_v2_header(client, 41000, self.ip, port),
        )

    def direct(
        self,
        source: str,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        token: str | None = None,
        external: bool = False,
        header: bytes = b"",
    ) -> tuple[int, dict[str, Any]]:
        """A request from the loopback address ``source`` itself (in-cluster listener unless ``external``)."""
        port = self.vault.layout.ports[EXTERNAL_API_PORT if external else API_PORT]
        server_name = self.vault.spec.external_hostname if external else "vault-active.vault.svc"
        return https_call(
            self.ip,
            port,
            method,
            path,
            body=body,
            token=token,
            ca_file=self.vault.ca_file,
            server_name=server_name,
            source=source,
            header=header,
        )


def bound_hub() -> Recording:
    config, secret_keys = load_stack_file("hub")
    config = copy.deepcopy(config)
    config["fedobs:vault"]["exposure"]["nodeBalancerRanges"] = ["127.0.0.1/32"]
    config["fedobs:vault"]["adminCidrs"] = [f"{OPERATOR}/32", f"{RUNNER}/32"]
    config["fedobs:edges"] = [{"name": "edge-eu", "egressCidrs": [EDGE_EU_EGRESS]}, {"name": "edge-ap"}]
    # the identities trust a test key, not GitHub (OpenBao would fetch GitHub's discovery document)
    recording = run_program("hub", trusting(config, DeployKey()), secret_keys)
    assert recording.error is None, recording.error
    return recording


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    hub = bound_hub()
    with single_hub_pod(hub, tmp_path_factory.mktemp("cidr")) as (vault, root):
        url = vault.urls[0]

        def root_call(method: str, path: str, body: dict[str, Any]) -> None:
            answer = api(url, method, path, token=root, body=body, ca_file=vault.ca_file)
            assert answer.status in (200, 204), (path, answer.text)

        # as programs/vault_bootstrap leaves it: the admin policy and the userpass admin
        policy = hub.one("vault:index/policy:Policy", "hub-vault-admin-acl").inputs["policy"]
        root_call("PUT", "sys/policies/acl/fedobs-admin", {"policy": policy})
        root_call("POST", "sys/auth/userpass-pulumi", {"type": "userpass"})
        root_call(
            "POST", "auth/userpass-pulumi/users/pulumi", {"password": PASSWORD, "token_policies": ["fedobs-admin"]}
        )
        declared = [hub.one("vault:generic/endpoint:Endpoint", "hub-vault-admin-cidrs"), *edge_link_resources(hub)]
        VaultApplier(url, root, ca_file=vault.ca_file).apply(declared)
        yield Node(vault, root, hub)


def admin_login(status_body: tuple[int, dict[str, Any]]) -> str | None:
    status, body = status_body
    if status == 200:
        return str(body["auth"]["client_token"])
    assert status in (400, 403), (status, body)
    return None


LOGIN = "auth/userpass-pulumi/login/pulumi"


def test_the_admin_logs_in_only_from_a_bound_address(node: Node) -> None:
    body = {"password": PASSWORD}
    # through the NodeBalancer: the header's client address decides
    assert admin_login(node.via_nodebalancer(OPERATOR, "POST", LOGIN, body=body)) is not None
    assert admin_login(node.via_nodebalancer(ELSEWHERE, "POST", LOGIN, body=body)) is None
    # directly: the TCP peer decides (a bound loopback address, and one that is not bound)
    assert admin_login(node.direct(RUNNER, "POST", LOGIN, body=body)) is not None
    assert admin_login(node.direct("127.0.0.2", "POST", LOGIN, body=body)) is None
    # a header from a peer that is not the NodeBalancer is ignored: claiming a bound address gains nothing
    port = node.vault.layout.ports[EXTERNAL_API_PORT]
    spoofed = proxy_v2_header(OPERATOR, 41001, node.ip, port)
    assert admin_login(node.direct("127.0.0.2", "POST", LOGIN, body=body, external=True, header=spoofed)) is None


def test_the_admin_token_works_only_from_a_bound_address(node: Node) -> None:
    token = admin_login(node.via_nodebalancer(OPERATOR, "POST", LOGIN, body={"password": PASSWORD}))
    assert token is not None
    assert node.via_nodebalancer(OPERATOR, "GET", "sys/auth", token=token)[0] == 200
    assert node.direct(RUNNER, "GET", "sys/auth", token=token)[0] == 200
    assert node.via_nodebalancer(ELSEWHERE, "GET", "sys/auth", token=token)[0] == 403
    assert node.direct("127.0.0.2", "GET", "sys/auth", token=token)[0] == 403


def test_the_binding_is_the_only_thing_the_write_changed(node: Node) -> None:
    user = api(
        node.vault.urls[0], "GET", "auth/userpass-pulumi/users/pulumi", token=node.root, ca_file=node.vault.ca_file
    ).data
    assert sorted(user["token_bound_cidrs"]) == sorted([OPERATOR, RUNNER])  # Vault prints a /32 bare
    assert user["token_policies"] == ["fedobs-admin"]


SECRET_ID_OF = "auth/approle-edges/role/{edge}/secret-id"
APPROLE_LOGIN = "auth/approle-edges/login"


def secret_id(node: Node, edge: str) -> str:
    answer = api(
        node.vault.urls[0], "POST", SECRET_ID_OF.format(edge=edge), token=node.root, ca_file=node.vault.ca_file
    )
    assert answer.status == 200, answer.text
    return str(answer.data["secret_id"])


def test_an_edge_credential_works_only_from_its_egress(node: Node) -> None:
    body = {"role_id": "edge-edge-eu", "secret_id": secret_id(node, "edge-eu")}
    refused, _ = node.via_nodebalancer(ELSEWHERE, "POST", APPROLE_LOGIN, body=body)
    assert refused in (400, 403)
    assert node.direct("127.0.0.2", "POST", APPROLE_LOGIN, body=body)[0] in (400, 403)
    status, answer = node.via_nodebalancer(EDGE_EU_NODE, "POST", APPROLE_LOGIN, body=body)
    assert status == 200, answer
    token = answer["auth"]["client_token"]
    # the token is bound too: from elsewhere refused (a use is spent on it), from the egress accepted
    assert node.via_nodebalancer(ELSEWHERE, "POST", "auth/token/revoke-self", token=token)[0] == 403
    assert node.via_nodebalancer(EDGE_EU_NODE, "POST", "auth/token/revoke-self", token=token)[0] in (200, 204)


def test_an_edge_without_egress_cidrs_is_not_bound(node: Node) -> None:
    body = {"role_id": "edge-edge-ap", "secret_id": secret_id(node, "edge-ap")}
    assert node.via_nodebalancer(ELSEWHERE, "POST", APPROLE_LOGIN, body=body)[0] == 200


def test_an_empty_list_unbinds_the_admin(node: Node, tmp_path: Path) -> None:
    declared = node.hub.one("vault:generic/endpoint:Endpoint", "hub-vault-admin-cidrs")
    unbound = dataclasses.replace(
        declared, inputs={**declared.inputs, "dataJson": json.dumps({"token_bound_cidrs": []})}
    )
    VaultApplier(node.vault.urls[0], node.root, ca_file=node.vault.ca_file).apply([unbound])
    assert admin_login(node.direct("127.0.0.2", "POST", LOGIN, body={"password": PASSWORD})) is not None
    VaultApplier(node.vault.urls[0], node.root, ca_file=node.vault.ca_file).apply([declared])
    assert admin_login(node.direct("127.0.0.2", "POST", LOGIN, body={"password": PASSWORD})) is None
