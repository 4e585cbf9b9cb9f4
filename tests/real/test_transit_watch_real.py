"""The hub's transit-unseal watch for real, and the recovery of an edge whose seal token ran out.

The hub: a node of the hub stack's server HCL, bootstrapped by its Job, with what the hub declares for
its edges (transit keys, token roles, deploy identities) and its Kubernetes auth roles applied by the
applier against a loopback Kubernetes API (``rig.kube_api``) that signs and reviews the watch's
ServiceAccount token. Each edge's seal token is created on that hub by the edge's own deploy identity,
through its real token role, as its ``HubLink`` declares (``rig.deploy_identity.edge_on_real_hub``).
The watch is the hub's ``transit-watch`` CronJob: its Pod template run in the pod sandbox
(``rig.pod_sandbox``) with the programs environment, as its ServiceAccount, against the real hub.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from offline.engine import Recording
from rig.applier import VaultApplier
from rig.deploy_identity import edge_on_real_hub
from rig.hub_edge import children, k8s_object, kubernetes_auth_overrides, pod_template, secret_value
from rig.kube_api import KubeAPIServer
from rig.openbao import BaoNode, api, wait_until
from rig.pod_sandbox import Cluster, PodSandbox, programs_image
from tests.real.test_transit_unseal import Hub, bootstrapped_edge, real_hub

pytestmark = pytest.mark.real

__all__ = ["real_hub"]  # the hub fixture, shared with tests/real/test_transit_unseal.py

EXIT_ALERT = 4
#: A seal token this short-lived runs out while its edge is down for a few seconds.
SHORT_PERIOD = 12


@dataclass
class WatchedHub:
    hub: Hub
    kube: KubeAPIServer
    base: Path
    #: the seal token each edge's stack holds now
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return api(self.hub.url, method, path, token=self.hub.token, body=body, ca_file=self.hub.vault.ca_file)

    def link(self, edge: str) -> Recording:
        """``pulumi up`` of ``edge``'s stack: its HubLink creates its seal token on the hub; a token
        its stack held before is revoked, as the provider's replacement does (``vault_token`` delete)."""
        hub = self.hub
        recording, applied = edge_on_real_hub(hub.recording, hub.key, hub.outputs, hub.url, hub.vault.ca_file, edge)
        assert list(applied.tokens) == [f"{edge}-hub-transit-token"]
        previous = self.tokens.get(edge)
        if previous is not None:  # already gone when it expired: then there is nothing to revoke
            self.api("POST", "auth/token/revoke", {"token": previous})
        self.tokens[edge] = secret_value(recording, "vault-seal", "token")
        return recording

    def revoked_logins(self) -> int:
        """How many Kubernetes-auth login tokens the hub has revoked (its log says each one)."""
        (node,) = self.hub.vault.cluster.nodes
        return node.log_text().count("revoked lease: lease_id=auth/kubernetes/login/")

    def watch(self, run: str) -> tuple[int, str, str]:
        """One run of the hub's ``transit-watch`` CronJob: (exit code, stdout, stderr)."""
        recording = self.hub.recording
        cronjob = k8s_object(recording, "CronJob", "transit-watch")
        template = pod_template(recording, "CronJob", "transit-watch")
        namespace = cronjob["metadata"]["namespace"]
        account = template["spec"]["serviceAccountName"]

        def token(audience: str | None, seconds: int) -> str:
            return self.kube.mint_service_account_token(
                namespace, account, audiences=[audience] if audience else None, ttl=seconds
            )

        ca_pem = Path(self.hub.vault.ca_file).read_text()
        cluster = Cluster(namespace, secrets={"vault-server-tls": {"ca.crt": ca_pem}}, token=token)
        box = PodSandbox(template, "watch", programs_image(), cluster, self.base / run, pod_name=f"transit-watch-{run}")
        result = box.run(env_overrides={"VAULT_ADDR": self.hub.url}, timeout=60)  # localised: where the hub is
        return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def watched(real_hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WatchedHub]:
    with KubeAPIServer() as kube:
        applier = VaultApplier(
            real_hub.url,
            real_hub.token,
            ca_file=real_hub.vault.ca_file,
            in_cluster_overrides=kubernetes_auth_overrides(kube),
        )
        applier.apply(children(real_hub.recording, "hub-kubernetes-auth"))
        yield WatchedHub(real_hub, kube, tmp_path_factory.mktemp("transit-watch"))


def edge_line(stdout: str, edge: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(f"{edge}: "))


def fresh(line: str) -> bool:
    """The line reports a token with (nearly) its whole 768 h period left: created or renewed just now."""
    found = re.search(r": ttl (\d+)d(\d+)h(\d+)m ", line)
    assert found, line
    days, hours, minutes = map(int, found.groups())
    return 768 * 3600 - 600 <= days * 86400 + hours * 3600 + minutes * 60 <= 768 * 3600


def test_the_watch_reports_each_edges_token_and_names_the_one_missing(watched: WatchedHub) -> None:
    watched.link("edge-eu")
    code, out, err = watched.watch("one-edge-linked")
    assert code == EXIT_ALERT, out + err
    assert edge_line(out, "edge-eu").startswith("edge-eu: ok: ") and fresh(edge_line(out, "edge-eu")), out
    assert "last renewal never" in edge_line(out, "edge-eu")
    assert edge_line(out, "edge-ap").startswith("edge-ap: MISSING"), out
    assert err.strip() == (
        "transit-watch: error: 1 of 2 edges need attention: "
        "edge-ap (no live transit-unseal token: expired, revoked or never created)"
    )

    watched.link("edge-ap")
    code, out, err = watched.watch("both-edges-linked")
    assert code == 0, out + err
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["ok", "ok"], out

    # a second token through edge-eu's role (stale, or minted by someone else): named, until revoked
    extra = watched.api("POST", "auth/token/create/transit-unseal-edge-eu", {"policies": ["transit-unseal-edge-eu"]})
    assert extra.status == 200, extra.text
    code, out, err = watched.watch("extra-token")
    assert code == EXIT_ALERT and edge_line(out, "edge-eu").startswith("edge-eu: EXTRA: "), out + err
    assert re.search(r", 2 live tokens \(ttls \d+d\d+h\d+m, \d+d\d+h\d+m\)$", edge_line(out, "edge-eu")), out
    assert err.strip().endswith("edge-eu (2 live transit-unseal tokens where its stack holds one)")
    assert watched.api("POST", "auth/token/revoke", {"token": extra.body["auth"]["client_token"]}).status == 204
    revoked_logins = watched.revoked_logins()
    assert watched.watch("extra-revoked")[0] == 0
    assert watched.revoked_logins() == revoked_logins + 1  # the watch revoked its own token on the way out


def test_the_watch_sees_nothing_but_the_edges_token_leases(watched: WatchedHub) -> None:
    """The watch role's token, logged in as the CronJob's ServiceAccount: every other lease and token is refused."""
    jwt = watched.kube.mint_service_account_token("vault", "transit-watch", audiences=["vault"], ttl=600)
    login = api(
        watched.hub.url,
        "POST",
        "auth/kubernetes/login",
        body={"role": "transit-watch", "jwt": jwt},
        ca_file=watched.hub.vault.ca_file,
    )
    assert login.status == 200, login.text
    token = login.body["auth"]["client_token"]

    def status(method: str, path: str, body: dict[str, Any] | None = None) -> int:
        return api(watched.hub.url, method, path, token=token, body=body, ca_file=watched.hub.vault.ca_file).status

    assert status("LIST", "sys/leases/lookup/auth/token/create/transit-unseal-edge-eu/") in (200, 404)
    for path in (
        "sys/leases/lookup/auth/token/create/",
        "sys/leases/lookup/auth/token/create/transit-unseal-other/",
        "sys/leases/lookup/auth/kubernetes/login/",
        "auth/token/accessors",
    ):
        assert status("LIST", path) == 403, path
    assert status("POST", "auth/token/lookup-accessor", {"accessor": "x"}) == 403
    assert status("PUT", "sys/leases/revoke", {"lease_id": "auth/token/create/transit-unseal-edge-eu/x"}) == 403
    assert status("POST", "transit/decrypt/edge-eu", {"ciphertext": "vault:v1:AAAA"}) == 403


def set_token_period(watched: WatchedHub, edge: str, seconds: int) -> None:
    """Drift on the hub: someone changed the edge's token role (what ``pulumi refresh`` would show)."""
    path = f"auth/token/roles/transit-unseal-{edge}"
    role = watched.api("GET", path).data
    changed = {k: role[k] for k in ("allowed_policies", "orphan", "renewable", "token_no_default_policy")}
    assert watched.api("POST", path, {**changed, "token_period": seconds}).status == 204


def this_start(node: BaoNode) -> str:
    """The node's log since its last start."""
    return node.log_text().rsplit("==== fedobs test: start #", 1)[-1]


def seal_token_gone(watched: WatchedHub, seal_token: str) -> bool:
    return watched.api("POST", "auth/token/lookup", {"token": seal_token}).status in (400, 403)


def test_an_expired_seal_token_is_reported_and_the_documented_steps_unseal_the_edge(
    watched: WatchedHub, tmp_path: Path
) -> None:
    watched.link("edge-ap")  # the other edge is healthy throughout
    set_token_period(watched, "edge-eu", SHORT_PERIOD)
    edge_plan = watched.link("edge-eu")
    seal_token = secret_value(edge_plan, "vault-seal", "token")
    assert watched.api("POST", "auth/token/lookup", {"token": seal_token}).data["creation_ttl"] == SHORT_PERIOD

    with bootstrapped_edge(edge_plan, tmp_path) as node:
        # while the edge runs, its seal renews the token: alive, but far below the threshold
        code, out, err = watched.watch("short-token")
        assert code == EXIT_ALERT and edge_line(out, "edge-eu").startswith("edge-eu: LOW: ttl "), out + err
        assert "edge-eu (ttl " in err and "edge-ap" not in err

        node.stop()  # the edge is down longer than its token's period: nothing renews it
        wait_until(lambda: seal_token_gone(watched, seal_token), SHORT_PERIOD + 20, 0.5, "the seal token to expire")
        node.start(wait=False)
        # the restarted edge cannot even configure its seal: OpenBao exits (in a cluster the pod
        # crash-loops), so it never unseals
        wait_until(lambda: not node.running, 20, 0.2, "the edge Vault to give up on its seal")
        log = this_start(node)
        assert 'Error configuring seal "transit"' in log and "permission denied" in log, log[-2000:]

        code, out, err = watched.watch("expired-token")
        assert code == EXIT_ALERT, out + err
        assert edge_line(out, "edge-eu").startswith("edge-eu: MISSING"), out
        assert edge_line(out, "edge-ap").startswith("edge-ap: ok"), out
        assert err.strip() == (
            "transit-watch: error: 1 of 2 edges need attention: "
            "edge-eu (no live transit-unseal token: expired, revoked or never created)"
        )

        # the runbook (docs/security.md, "When an edge's seal token runs low or out"):
        # 1. hub: refresh and update -- what drifted (here the edge's token role) back as the hub declares it
        drifted = watched.hub.recording.one(
            "vault:tokenauth/authBackendRole:AuthBackendRole", "hub-transit-unseal-edge-eu-token-role"
        )
        VaultApplier(watched.hub.url, watched.hub.token, ca_file=watched.hub.vault.ca_file).apply([drifted])
        assert watched.api("GET", "auth/token/roles/transit-unseal-edge-eu").data["token_period"] == 768 * 3600
        # 2. edge: refresh (the vanished token leaves the state) and update: its HubLink creates a new one
        recovered = watched.link("edge-eu")
        new_token = secret_value(recovered, "vault-seal", "token")
        assert new_token != seal_token
        # 3. the edge's Vault pods restarted, with the vault-seal Secret's new token in their environment
        node.env.update({"VAULT_TOKEN": new_token, "BAO_TOKEN": new_token})
        node.start(wait=False)
        wait_until(
            lambda: node.seal_status().get("sealed") is False,
            20,
            0.2,
            "the restarted edge to auto-unseal through the hub again",
            ignore=(OSError,),
        )

        code, out, err = watched.watch("recovered")
        assert code == 0, out + err
        assert edge_line(out, "edge-eu").startswith("edge-eu: ok: ") and fresh(edge_line(out, "edge-eu")), out
        assert "last renewal 20" in edge_line(out, "edge-eu")  # the restarted seal renewed it at once
