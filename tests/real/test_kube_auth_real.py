"""OpenBao's Kubernetes auth method against the fake Kubernetes API (rig/kube_api.py).

A real ``bao server -dev`` is configured with ``kubernetes_host`` = the fake API (HTTPS, its CA as
``kubernetes_ca_cert``) and a reviewer token of Vault's own service account, which holds the
``create tokenreviews`` grant (what the chart's ``system:auth-delegator`` binding gives it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rig.kube_api import KubeAPIServer, service_account_username
from rig.openbao import DevServer, dev_server

pytestmark = pytest.mark.real

TR_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
COLLECTOR_POLICY = 'path "kv/data/otel/*" { capabilities = ["read"] }'


@dataclass
class Peers:
    vault: DevServer
    kube: KubeAPIServer


@pytest.fixture(scope="module")
def peers() -> Iterator[Peers]:
    with KubeAPIServer() as kube, dev_server() as vault:
        reviewer_user = service_account_username("vault", "vault")
        kube.allow_token_reviews(reviewer_user)
        for method, path, body in [
            ("POST", "sys/auth/kubernetes", {"type": "kubernetes"}),
            (
                "POST",
                "auth/kubernetes/config",
                {
                    "kubernetes_host": kube.url,
                    "kubernetes_ca_cert": kube.ca_pem,
                    "token_reviewer_jwt": kube.mint_service_account_token("vault", "vault"),
                },
            ),
            ("PUT", "sys/policies/acl/collector", {"policy": COLLECTOR_POLICY}),
            (
                "POST",
                "auth/kubernetes/role/collector",
                {
                    "bound_service_account_names": ["otel-collector"],
                    "bound_service_account_namespaces": ["otel"],
                    "token_policies": ["collector"],
                },
            ),
        ]:
            resp = vault.api(method, path, body)
            assert resp.status in (200, 204), (path, resp.status, resp.text)
        yield Peers(vault, kube)


def _login(peers: Peers, jwt: str, role: str = "collector") -> tuple[int, dict[str, object]]:
    resp = peers.vault.api("POST", "auth/kubernetes/login", {"role": role, "jwt": jwt}, token=None)
    return resp.status, resp.body


def test_bound_service_account_logs_in(peers: Peers) -> None:
    peers.kube.clear_log()
    jwt = peers.kube.mint_service_account_token("otel", "otel-collector")
    status, body = _login(peers, jwt)
    assert status == 200, body
    auth = body["auth"]
    assert isinstance(auth, dict)
    assert auth["policies"] == ["collector", "default"]
    assert auth["metadata"]["service_account_name"] == "otel-collector"  # type: ignore[index]
    assert auth["metadata"]["service_account_namespace"] == "otel"  # type: ignore[index]
    # Vault asked the Kubernetes API, as its own service account
    assert peers.kube.count("POST", TR_PATH, user=service_account_username("vault", "vault"), status=201) == 1


def test_other_service_account_is_refused(peers: Peers) -> None:
    peers.kube.clear_log()
    jwt = peers.kube.mint_service_account_token("otel", "someone-else")
    status, body = _login(peers, jwt)
    assert status == 403
    assert body["errors"] == ["service account name not authorized"]


def test_token_review_decides(peers: Peers) -> None:
    """A token the API no longer accepts (service account deleted) is refused by Vault too."""
    jwt = peers.kube.mint_service_account_token("otel", "otel-collector")
    peers.kube.delete_service_account("otel", "otel-collector")
    try:
        status, body = _login(peers, jwt)
        assert status == 403
        assert body["errors"] == ["permission denied"]
        assert peers.kube.count("POST", TR_PATH, status=201) >= 1
    finally:
        peers.kube.create_service_account("otel", "otel-collector")
