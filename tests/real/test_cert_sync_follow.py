"""The edge's cert-sync follower (``python -m programs.cert_sync follow``) against real peers.

The peers of ``tests/real/test_cert_sync.py`` (its ``env`` fixture: a real hub and edge OpenBao with
file audit devices, the edge AppRoles with the project's own ``edge_access_policy`` and the role's
declared token and secret_id lifetimes, the Kubernetes API stand-ins). Hub requests are counted in
the hub's real audit log, by path.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.cert_sync_cadence import EDGE_SECRET_ID_TTL_SECONDS, EDGE_TOKEN_NUM_USES, EDGE_TOKEN_TTL_SECONDS
from components.vault_names import EDGE_APPROLE_MOUNT
from programs.cert_sync.follow import HubFollower
from programs.cert_sync.sync import EXIT_INVALID, EXIT_SOURCE, EXIT_TARGET, SourceError
from programs.vault_http import VaultHttp
from rig.kube_api import Rule
from tests.real import test_cert_sync as peers
from tests.real.test_cert_sync import (
    EDGE,
    EDGE_KV,
    EDGE_SECRET,
    LOCAL_KV,
    OTHER_EDGE,
    SYNC_NS,
    SYNC_SA,
    Env,
)

pytestmark = pytest.mark.real

#: The peers and fixtures of tests/real/test_cert_sync.py (module-scoped: started once for this module).
env = peers.env
restore_secrets = peers.restore_secrets

CREDENTIAL_NS, CREDENTIAL = "fedobs-cert-sync", "hub-secret-id"
ROLE = f"auth/{EDGE_APPROLE_MOUNT}/role"


def follow(
    env: Env, *args: str, extra: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The follower, as its Deployment runs it (env), with ``args`` added (``--polls`` ends it)."""
    return env.run("follow", *args, env=env.edge_env(extra), timeout=timeout)


def hub_requests(env: Env, mark: int) -> dict[str, int]:
    """Requests at the hub since ``mark`` by path (the hub's real audit log)."""
    counts: dict[str, int] = {}
    for request in env.hub.audit_requests(mark):
        path = str(request.get("path"))
        counts[path] = counts.get(path, 0) + 1
    return counts


def hub_follower(env: Env, edge: str = EDGE, secret_id: str | None = None) -> HubFollower:
    return HubFollower(
        VaultHttp(env.hub.url, env.hub.ca_file, label="hub Vault"),
        approle_mount=EDGE_APPROLE_MOUNT,
        role_id=env.files[f"{edge}_role_id"].read_text().strip(),
        secret_id=secret_id or env.files[f"{edge}_secret_id"].read_text().strip(),
        kv_mount="kv",
        edge=edge,
    )


def test_an_unchanged_poll_is_one_hub_request(env: Env) -> None:
    env.synced()
    mark = env.hub.audit_mark()
    edge_mark = env.edge.audit_mark()
    result = follow(env, "--poll", "0.5", "--polls", "6")
    assert result.returncode == 0, result.stderr
    counts = hub_requests(env, mark)
    metadata = f"kv/metadata/{EDGE_KV}"
    # one login, six metadata reads, ONE data read (the first poll: nothing applied yet), one revoke
    assert counts == {
        f"auth/{EDGE_APPROLE_MOUNT}/login": 1,
        metadata: 6,
        f"kv/data/{EDGE_KV}": 1,
        "auth/token/revoke-self": 1,
    }, counts
    assert env.edge.kv_writes(edge_mark) == []  # the edge held it already: nothing written
    assert result.stdout.count("hub version") == 1, result.stdout  # only the first poll applied


def test_a_change_on_the_hub_is_read_once_and_written_once(env: Env) -> None:
    env.synced()
    follower = hub_follower(env)
    try:
        first = follower.poll()
        assert first is not None and first.data == env.current[EDGE_SECRET]
        assert follower.poll() is None
        mark = env.hub.audit_mark()
        env.put_secret(EDGE_SECRET, env.new_client_cert())
        assert env.run_hub().returncode == 0
        hub_mark = env.hub.audit_mark()
        changed = follower.poll()
        assert changed is not None and changed.data == env.current[EDGE_SECRET]
        assert changed.version == first.version + 1
        assert hub_requests(env, hub_mark) == {f"kv/metadata/{EDGE_KV}": 1, f"kv/data/{EDGE_KV}": 1}
        assert follower.poll() is None
        assert mark  # the hub run happened in between
        assert follower.logins == 1  # the kept token served every poll
        # the login answer's TTL and use count are the role's, and the follower keeps count of them
        token = follower._token
        assert token is not None and token.uses_left == EDGE_TOKEN_NUM_USES - 6  # 4 metadata + 2 data reads
        assert 0 < token.deadline - time.time() <= EDGE_TOKEN_TTL_SECONDS
        lookup = env.hub.ok("POST", "auth/token/lookup", {"token": token.value})  # as root: spends none of its uses
        assert lookup.data["num_uses"] == token.uses_left
    finally:
        follower.close()


def test_a_revoked_token_is_replaced_in_the_same_poll(env: Env) -> None:
    env.synced()
    follower = hub_follower(env)
    try:
        assert follower.poll() is not None
        token = follower._token
        assert token is not None
        env.hub.ok("POST", "auth/token/revoke", {"token": token.value})
        assert follower.poll() is None  # refused, logged in again, read again: unchanged
        assert follower.logins == 2
    finally:
        follower.close()


def test_the_follower_applies_a_rotation_and_logs_nothing_secret(env: Env) -> None:
    env.synced()
    env.put_secret(EDGE_SECRET, env.new_client_cert())
    assert env.run_hub().returncode == 0
    result = follow(env, "--poll", "0.5", "--polls", "2")
    assert result.returncode == 0, result.stderr
    assert "synced 1, unchanged 0" in result.stdout
    assert env.edge.kv(LOCAL_KV) == env.current[EDGE_SECRET]


# ---------------------------------------------------------------------------------------------
# failures: the edge Vault untouched, a line on stderr, the exit code after --max-failures
# ---------------------------------------------------------------------------------------------
def test_hub_unreachable_changes_nothing_and_exits_non_zero(env: Env) -> None:
    env.synced()
    before, mark = env.edge.kv(LOCAL_KV), env.edge.audit_mark()
    dead = "https://127.0.0.1:9"
    result = follow(env, "--hub-addr", dead, "--poll", "0.2", "--polls", "3", "--max-failures", "2")
    assert result.returncode == EXIT_SOURCE, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("cert-sync: error: ") for line in lines), lines
    assert "connection refused" in lines[0] and dead in lines[0]
    assert env.edge.kv(LOCAL_KV) == before
    assert env.edge.count(mark, "auth/kubernetes/login") == 0  # it never even logged in to the edge


def test_a_refused_login_changes_nothing(env: Env, tmp_path: Path) -> None:
    env.synced()
    before = env.edge.kv(LOCAL_KV)
    wrong = tmp_path / "secret-id"
    wrong.write_text("00000000-0000-0000-0000-000000000000\n")
    result = follow(env, "--poll", "0.2", "--polls", "1", extra={"CERT_SYNC_HUB_SECRET_ID_FILE": str(wrong)})
    assert result.returncode == EXIT_SOURCE, result.stderr
    assert "AppRole login to the hub Vault" in result.stderr and "HTTP 400" in result.stderr
    assert env.edge.kv(LOCAL_KV) == before


@pytest.mark.usefixtures("restore_secrets")
def test_bad_data_on_the_hub_changes_nothing_and_is_read_again(env: Env) -> None:
    env.synced()
    before, good = env.edge.kv(LOCAL_KV), dict(env.hub.kv(EDGE_KV) or {})
    env.hub.put(EDGE_KV, {**good, "tls.key": env.new_client_cert()["tls.key"]})  # a key of another certificate
    mark = env.hub.audit_mark()
    result = follow(env, "--poll", "0.2", "--polls", "2", "--max-failures", "2")
    assert result.returncode == EXIT_INVALID, result.stderr
    assert result.stderr.count("does not match the certificate in tls.crt") == 2
    assert env.edge.kv(LOCAL_KV) == before
    assert hub_requests(env, mark) == {  # forgotten after a failure: the data is read again at every poll
        f"auth/{EDGE_APPROLE_MOUNT}/login": 1,
        f"kv/metadata/{EDGE_KV}": 2,
        f"kv/data/{EDGE_KV}": 2,
        "auth/token/revoke-self": 1,
    }
    env.hub.put(EDGE_KV, good)


def test_edge_vault_down_is_reported_and_the_next_poll_applies(env: Env) -> None:
    env.synced()
    env.put_secret(EDGE_SECRET, env.new_client_cert())
    assert env.run_hub().returncode == 0
    dead = "https://127.0.0.1:9"
    down = follow(env, "--vault-addr", dead, "--poll", "0.2", "--polls", "1")
    assert down.returncode == EXIT_TARGET, down.stderr
    assert env.edge.kv(LOCAL_KV) != env.current[EDGE_SECRET]
    up = follow(env, "--poll", "0.2", "--polls", "1")
    assert up.returncode == 0 and env.edge.kv(LOCAL_KV) == env.current[EDGE_SECRET], up.stderr


def test_nothing_on_the_hub_is_a_source_failure(env: Env) -> None:
    follower = hub_follower(env, OTHER_EDGE)  # the hub's cert-sync never publishes edge-ap here
    try:
        with pytest.raises(SourceError, match="nothing is stored there"):
            follower.poll()
    finally:
        follower.close()


# ---------------------------------------------------------------------------------------------
# the secret_id: replaced without a human, only for its own role
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def credential(env: Env) -> Iterator[str]:
    """A fresh secret_id of edge-eu in the edge's Kubernetes Secret, readable and writable by the
    follower's ServiceAccount only (RBAC of the stand-in: get and update on that one Secret)."""
    secret_id = env.hub.ok("POST", f"{ROLE}/{EDGE}/secret-id").data["secret_id"]
    env.secrets.append(secret_id)
    env.edge_kube.put_secret(CREDENTIAL_NS, CREDENTIAL, {"secret-id": secret_id})
    rules = [
        env.edge_kube.allow_service_account(
            SYNC_NS, SYNC_SA, [verb], ["secrets"], namespace=CREDENTIAL_NS, resource_names=[CREDENTIAL]
        )
        for verb in ("get", "update")
    ]
    RULES[:] = rules
    yield secret_id
    for rule in RULES:
        env.edge_kube.revoke(rule)


#: The credential fixture's RBAC rules (get, update), for a test that takes one away.
RULES: list[Rule] = []


def login_status(env: Env, secret_id: str) -> int:
    role_id = env.files[f"{EDGE}_role_id"].read_text().strip()
    return env.hub.api("POST", f"auth/{EDGE_APPROLE_MOUNT}/login", {"role_id": role_id, "secret_id": secret_id}).status


def follow_with_credential(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return follow(
        env,
        "--hub-credential",
        f"{CREDENTIAL_NS}/{CREDENTIAL}",
        *args,
        extra={
            "CERT_SYNC_KUBE_API": env.edge_kube.url,
            "CERT_SYNC_KUBE_CA_FILE": env.edge_kube.ca_file,
            "CERT_SYNC_KUBE_TOKEN_FILE": str(env.files["edge_jwt"]),
        },
    )


def stored_secret_id(env: Env) -> str:
    data = env.edge_kube.secret_data(CREDENTIAL_NS, CREDENTIAL)
    assert data is not None
    return data["secret-id"].decode()


def accessors(env: Env, edge: str = EDGE) -> list[str]:
    answer = env.hub.api("LIST", f"{ROLE}/{edge}/secret-id")
    return list(answer.data.get("keys") or []) if answer.status == 200 else []


def test_a_young_secret_id_is_kept(env: Env, credential: str) -> None:
    env.synced()
    mark = env.hub.audit_mark()
    result = follow_with_credential(env, "--poll", "0.2", "--polls", "2")
    assert result.returncode == 0, result.stderr
    assert stored_secret_id(env) == credential
    counts = hub_requests(env, mark)
    assert counts.get(f"{ROLE}/{EDGE}/secret-id/lookup") == 1  # once per process
    assert f"{ROLE}/{EDGE}/secret-id" not in counts
    lookup = env.hub.ok("POST", f"{ROLE}/{EDGE}/secret-id/lookup", {"secret_id": credential}).data
    assert lookup["secret_id_ttl"] == EDGE_SECRET_ID_TTL_SECONDS  # the role's TTL applies


def test_a_due_secret_id_is_replaced_stored_and_the_old_one_destroyed(env: Env, credential: str) -> None:
    env.synced()
    # a secret_id without TTL (made before the role had one) is due at once; so is one past 2/3 of it
    ttl_free = env.hub.ok("POST", f"{ROLE}/{EDGE}/secret-id").data
    env.hub.ok("POST", f"auth/{EDGE_APPROLE_MOUNT}/role/{EDGE}", {"secret_id_ttl": 0})
    old = env.hub.ok("POST", f"{ROLE}/{EDGE}/secret-id").data
    env.hub.ok("POST", f"auth/{EDGE_APPROLE_MOUNT}/role/{EDGE}", {"secret_id_ttl": EDGE_SECRET_ID_TTL_SECONDS})
    env.secrets += [ttl_free["secret_id"], old["secret_id"]]
    env.edge_kube.put_secret(CREDENTIAL_NS, CREDENTIAL, {"secret-id": old["secret_id"]})
    result = follow_with_credential(env, "--poll", "0.2", "--polls", "2")
    assert result.returncode == 0, result.stderr
    new = stored_secret_id(env)
    env.secrets.append(new)
    assert new != old["secret_id"]
    assert "replaced this edge's hub secret_id" in result.stdout
    remaining = accessors(env)
    assert len(remaining) == 1  # the old one, the stray one and the fixture's: all destroyed
    assert old["secret_id_accessor"] not in remaining and ttl_free["secret_id_accessor"] not in remaining
    for gone in (old["secret_id"], credential):
        assert login_status(env, gone) == 400
    assert login_status(env, new) == 200
    lookup = env.hub.ok("POST", f"{ROLE}/{EDGE}/secret-id/lookup", {"secret_id": new}).data
    assert lookup["secret_id_ttl"] == EDGE_SECRET_ID_TTL_SECONDS
    again = follow_with_credential(env, "--poll", "0.2", "--polls", "1")  # the new one logs in, is young
    assert again.returncode == 0 and "replaced" not in again.stdout, again.stderr
    # the files the other tests use name a secret_id the sweep destroyed: give them a live one
    fresh = env.hub.ok("POST", f"{ROLE}/{EDGE}/secret-id").data["secret_id"]
    env.secrets.append(fresh)
    env.files[f"{EDGE}_secret_id"].write_text(fresh + "\n")


def test_a_secret_id_that_cannot_be_stored_is_destroyed_and_the_old_one_kept(env: Env, credential: str) -> None:
    env.synced()
    env.hub.ok("POST", f"auth/{EDGE_APPROLE_MOUNT}/role/{EDGE}", {"secret_id_ttl": 0})
    old = env.hub.ok("POST", f"{ROLE}/{EDGE}/secret-id").data
    env.hub.ok("POST", f"auth/{EDGE_APPROLE_MOUNT}/role/{EDGE}", {"secret_id_ttl": EDGE_SECRET_ID_TTL_SECONDS})
    env.secrets.append(old["secret_id"])
    env.edge_kube.put_secret(CREDENTIAL_NS, CREDENTIAL, {"secret-id": old["secret_id"]})
    before = set(accessors(env))
    env.edge_kube.revoke(RULES.pop())  # get stays, update is taken away
    result = follow_with_credential(env, "--poll", "0.2", "--polls", "1")
    assert result.returncode == EXIT_TARGET, result.stderr
    assert "storing the new secret_id" in result.stderr and "403" in result.stderr
    assert stored_secret_id(env) == old["secret_id"]
    assert set(accessors(env)) == before  # the new one destroyed again, the old one alive


def test_an_edge_cannot_touch_another_edges_secret_ids(env: Env) -> None:
    env.synced()
    follower = hub_follower(env)
    try:
        follower.poll()
        token = follower._token
        assert token is not None
        for method, path, body in (
            ("POST", f"{ROLE}/{OTHER_EDGE}/secret-id", {}),
            ("LIST", f"{ROLE}/{OTHER_EDGE}/secret-id", None),
            ("POST", f"{ROLE}/{OTHER_EDGE}/secret-id/lookup", {"secret_id": "x"}),
            ("POST", f"{ROLE}/{OTHER_EDGE}/secret-id-accessor/destroy", {"secret_id_accessor": "x"}),
            ("POST", f"{ROLE}/{EDGE}/custom-secret-id", {"secret_id": "chosen-by-the-edge"}),
            ("POST", f"{ROLE}/{EDGE}/secret-id/destroy", {"secret_id": "x"}),
            ("GET", f"{ROLE}/{EDGE}/role-id", None),
            ("POST", f"{ROLE}/{EDGE}", {"secret_id_ttl": 0}),
            ("GET", f"kv/metadata/edges/{OTHER_EDGE}/otel-client-tls", None),
        ):
            answer = env.hub.api(method, path, body, token=token.value)
            assert answer.status == 403, (method, path, answer.status)
        # its own role: a secret_id it mints may not outlive the role's TTL (OpenBao refuses the ask)
        longer = env.hub.api(
            "POST", f"{ROLE}/{EDGE}/secret-id", {"ttl": EDGE_SECRET_ID_TTL_SECONDS + 1}, token=token.value
        )
        assert longer.status == 400 and "ttl cannot be longer" in longer.text, longer
    finally:
        follower.close()


def test_the_follower_reads_its_secret_id_from_the_kubernetes_api(env: Env, credential: str, tmp_path: Path) -> None:
    env.synced()
    stale = tmp_path / "secret-id"
    stale.write_text("not-the-secret-id\n")  # a mounted file (kubelet-refreshed late) is not used
    before = env.edge_kube.count("GET", f"/api/v1/namespaces/{CREDENTIAL_NS}/secrets/{CREDENTIAL}", status=200)
    result = follow_with_credential(env, "--poll", "0.2", "--polls", "1", "--hub-secret-id-file", str(stale))
    assert result.returncode == 0, result.stderr
    assert env.edge_kube.count("GET", f"/api/v1/namespaces/{CREDENTIAL_NS}/secrets/{CREDENTIAL}", status=200) > before


def test_a_secret_id_is_replaced_at_two_thirds_of_its_ttl(env: Env, credential: str) -> None:
    """Real time on the real server: a role whose secret_ids live 9 s; before 6 s the follower keeps its
    secret_id, after 6 s it replaces it, and the new one carries the role's TTL."""
    env.synced()
    role = f"auth/{EDGE_APPROLE_MOUNT}/role/{EDGE}"
    env.hub.ok("POST", role, {"secret_id_ttl": 9})
    try:
        young = env.hub.ok("POST", f"{ROLE}/{EDGE}/secret-id").data
        created = time.monotonic()
        env.secrets.append(young["secret_id"])
        env.edge_kube.put_secret(CREDENTIAL_NS, CREDENTIAL, {"secret-id": young["secret_id"]})
        kept = follow_with_credential(env, "--poll", "0.2", "--polls", "1")
        assert time.monotonic() - created < 6, "too slow to check the young case"
        assert kept.returncode == 0 and stored_secret_id(env) == young["secret_id"], kept.stderr
        time.sleep(max(0.0, created + 6.5 - time.monotonic()))
        replaced = follow_with_credential(env, "--poll", "0.2", "--polls", "1")
        assert replaced.returncode == 0, replaced.stderr
        new = stored_secret_id(env)
        env.secrets.append(new)
        assert new != young["secret_id"] and "TTL 9 s" in replaced.stdout
        assert login_status(env, new) == 200 and login_status(env, young["secret_id"]) == 400
    finally:
        env.hub.ok("POST", role, {"secret_id_ttl": EDGE_SECRET_ID_TTL_SECONDS})
        fresh = env.hub.ok("POST", f"{ROLE}/{EDGE}/secret-id").data["secret_id"]  # for the files other tests use
        env.secrets.append(fresh)
        env.files[f"{EDGE}_secret_id"].write_text(fresh + "\n")


@pytest.mark.parametrize(
    ("role_change", "pause", "polls"),
    [
        # a token of 63 s has 3 s of use before the 60 s reserve: the poll after 4 s logs in again
        ({"token_ttl": 63, "token_max_ttl": 63}, 4.0, 2),
        # a token of 10 uses: after 2 polls (3 uses) fewer than the 8 a poll may need are left
        ({"token_num_uses": 10}, 0.0, 3),
    ],
)
def test_the_follower_logs_in_again_before_its_token_ends_and_revokes_the_old_one(
    env: Env, role_change: dict[str, int], pause: float, polls: int
) -> None:
    env.synced()
    role = f"auth/{EDGE_APPROLE_MOUNT}/role/{EDGE}"
    env.hub.ok("POST", role, role_change)
    follower = hub_follower(env)
    try:
        follower.poll()
        first = follower._token
        assert first is not None
        for _ in range(polls - 1):
            time.sleep(pause)
            follower.poll()
        assert follower.logins == 2
        assert follower._token is not None and follower._token.value != first.value
        gone = env.hub.api("POST", "auth/token/lookup", {"token": first.value}, token=env.hub.root)
        assert gone.status in (400, 403), gone.text  # revoked when it was replaced
    finally:
        follower.close()
        env.hub.ok(
            "POST",
            role,
            {
                "token_ttl": EDGE_TOKEN_TTL_SECONDS,
                "token_max_ttl": EDGE_TOKEN_TTL_SECONDS,
                "token_num_uses": EDGE_TOKEN_NUM_USES,
            },
        )


def test_a_secret_id_the_follower_mints_is_bound_by_the_roles_cidrs(env: Env) -> None:
    """h18a's CIDR binding (``secret_id_bound_cidrs`` on the role, from ``fedobs:edges[].egressCidrs``)
    holds for the secret_ids the follower mints too: OpenBao checks the role's CIDRs at every login."""
    env.synced()
    role = f"auth/{EDGE_APPROLE_MOUNT}/role/{EDGE}"
    follower = hub_follower(env)
    try:
        follower.poll()
        assert follower._token is not None
        minted = env.hub.api("POST", f"{ROLE}/{EDGE}/secret-id", {}, token=follower._token.value)
        assert minted.status == 200, minted.text
        env.secrets.append(minted.data["secret_id"])
        env.hub.ok("POST", role, {"secret_id_bound_cidrs": ["10.0.0.0/8"]})
        assert login_status(env, minted.data["secret_id"]) in (400, 403)  # 127.0.0.1 is not in it
        env.hub.ok("POST", role, {"secret_id_bound_cidrs": ["127.0.0.0/8"]})
        assert login_status(env, minted.data["secret_id"]) == 200
    finally:
        follower.close()
        env.hub.ok("POST", role, {"secret_id_bound_cidrs": []})
