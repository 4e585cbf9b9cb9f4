"""cert-sync as declared: the hub's CronJob and the edge's follower Deployment."""

from __future__ import annotations

import itertools
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from components.cert_sync import HubSource, command
from components.cert_sync_cadence import (
    EDGE_SECRET_ID_TTL_SECONDS,
    EDGE_TOKEN_MAX_TTL_SECONDS,
    EDGE_TOKEN_NUM_USES,
    EDGE_TOKEN_TTL_SECONDS,
    FOLLOW_POLL_SECONDS,
    LAST_PASS_ROOM_SECONDS,
    interval_problem,
    passes_per_run,
)
from offline.engine import Recording


def find(recording: Recording, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return next(
        o
        for o in recording.kubernetes_objects()
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and (namespace is None or o["metadata"]["namespace"] == namespace)
    )


def cert_sync_pod(recording: Recording) -> dict[str, Any]:
    """The pod spec of the hub's CronJob or of the edge's Deployment."""
    if recording.stack == "hub":
        return dict(find(recording, "CronJob", "cert-sync")["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(find(recording, "Deployment", "cert-sync", "fedobs-cert-sync")["spec"]["template"]["spec"])


def test_the_hub_cronjob_never_overlaps(hub: Recording) -> None:
    spec = find(hub, "CronJob", "cert-sync", "fedobs-cert-sync")["spec"]
    assert spec["schedule"] == "* * * * *" and spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 50 and spec["failedJobsHistoryLimit"] == 5
    job = spec["jobTemplate"]["spec"]
    # every Job is over before the next every-minute run, which Forbid would otherwise skip
    assert job["activeDeadlineSeconds"] == 55 and job["backoffLimit"] == 1
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_the_edge_follows_with_one_replica_never_two(edge: Recording) -> None:
    assert not [o for o in edge.kubernetes_objects() if o["kind"] == "CronJob" and o["metadata"]["name"] == "cert-sync"]
    spec = find(edge, "Deployment", "cert-sync", "fedobs-cert-sync")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    assert spec["template"]["spec"]["restartPolicy"] == "Always"


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_the_pod_is_restricted(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    pod = cert_sync_pod(recording)
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"] == {"cpu": "200m", "memory": "128Mi"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["VAULT_ADDR"] == "https://vault-active.vault.svc:8200"
    token = pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"path": "token", "audience": "vault", "expirationSeconds": 600}


def test_hub_may_get_exactly_the_named_secrets(hub: Recording) -> None:
    role = find(hub, "Role", "cert-sync-reader", "fedobs-pki")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            # leaf Secrets only: no CA's Secret (tests/unit/test_otlp_pki.py)
            "resourceNames": ["otel-client-tls-edge-ap", "otel-client-tls-edge-eu", "otel-gateway-tls"],
        }
    ]
    binding = find(hub, "RoleBinding", "cert-sync-reader", "fedobs-pki")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cert-sync", "namespace": "fedobs-cert-sync"}]
    assert cert_sync_pod(hub)["automountServiceAccountToken"] is True  # it reads Secrets from the API


def policy(recording: Recording, name: str) -> dict[str, list[str]]:
    text = next(r for r in recording.of_type("vault:index/policy:Policy") if r.inputs["name"] == name).inputs["policy"]
    parsed = hcl2.loads(
        text, serialization_options=SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    )
    return {path: rule["capabilities"] for entry in parsed["path"] for path, rule in entry.items()}


def published_paths(recording: Recording) -> set[str]:
    """Every KV path the cert-sync command line writes (copies, trust bundles and the hub's index)."""
    parts = cert_sync_pod(recording)["containers"][0]["command"]
    paths = {value.split("=", 1)[1] for flag, value in itertools.pairwise(parts) if flag in ("--secret", "--trust")}
    for flag in ("--kv-path", "--index"):
        if flag in parts:
            paths.add(parts[parts.index(flag) + 1])
    return paths


def test_vault_roles_write_exactly_the_synced_paths(hub: Recording, edge: Recording) -> None:
    write = ["create", "read", "update"]
    assert policy(hub, "cert-sync") == {
        "kv/data/edges/edge-ap/otel-client-tls": write,
        "kv/data/edges/edge-eu/otel-client-tls": write,
        "kv/data/otel/client-ca": write,
        "kv/data/otel/server-ca": write,
        "kv/data/otel/otel-gateway-tls": write,
        "kv/data/otel/cert-sync-index": write,  # the hub pass's index (programs.cert_sync.index)
    }
    # nothing it does not publish, on either side
    for recording in (hub, edge):
        assert set(policy(recording, "cert-sync")) == {f"kv/data/{path}" for path in published_paths(recording)}
    assert policy(edge, "cert-sync") == {"kv/data/otel/otel-client-tls": write}
    for recording in (hub, edge):
        role = next(
            r
            for r in recording.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
            if r.inputs["roleName"] == "cert-sync"
        )
        assert role.inputs["boundServiceAccountNames"] == ["cert-sync"]
        assert role.inputs["boundServiceAccountNamespaces"] == ["fedobs-cert-sync"]


def test_edge_gets_its_hub_credential_as_a_mounted_secret_and_owns_its_secret_id(
    edge: Recording, hub: Recording
) -> None:
    secret = next(r for r in edge.of_type("kubernetes:core/v1:Secret") if r.name == "edge-eu-cert-sync-hub-credential")
    assert secret.is_secret_input("stringData.role-id")
    assert secret.inputs["stringData"] == {"role-id": "edge-edge-eu", "ca.crt": hub.outputs["vaultCaCert"]}
    owned = next(r for r in edge.of_type("kubernetes:core/v1:Secret") if r.name == "edge-eu-cert-sync-hub-secret-id")
    minted = edge.one("vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId")
    assert owned.is_secret_input("stringData.secret-id")
    assert owned.inputs["stringData"] == {"secret-id": minted.outputs["secretId"]}
    assert owned.inputs["metadata"] == {"name": "hub-secret-id", "namespace": "fedobs-cert-sync"}
    # written once: the follower replaces it, and Pulumi never writes the one it minted over that
    assert sorted(owned.ignore_changes) == ["data", "stringData"]
    # the follower may get and update that one Secret, nothing else
    role = find(edge, "Role", "cert-sync-secret-id", "fedobs-cert-sync")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hub-secret-id"], "verbs": ["get", "update"]}
    ]
    binding = find(edge, "RoleBinding", "cert-sync-secret-id", "fedobs-cert-sync")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cert-sync", "namespace": "fedobs-cert-sync"}]
    assert binding["roleRef"]["name"] == "cert-sync-secret-id"
    pod = cert_sync_pod(edge)
    assert pod["automountServiceAccountToken"] is True  # it reads and replaces its secret_id through the API
    container = pod["containers"][0]
    assert container["command"] == [
        "python",
        "-m",
        "programs.cert_sync",
        "follow",
        "--edge",
        "edge-eu",
        "--kv-path",
        "otel/otel-client-tls",
        "--hub-ca-file",
        "/fedobs/hub/ca.crt",
        "--hub-role-id-file",
        "/fedobs/hub/role-id",
        "--hub-credential",
        "fedobs-cert-sync/hub-secret-id",
        "--poll",
        str(FOLLOW_POLL_SECONDS),
        "--max-failures",
        "8",
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CERT_SYNC_HUB_ADDR"] == "https://vault.hub.fedobs.example.com:8200"
    hub_volume = next(v for v in pod["volumes"] if v["name"] == "hub")
    # 0440 + fsGroup: the kubelet keeps the file root-owned, so uid 65532 reads it only through the fsGroup
    # (group 65532, group read added); 0440 rather than the default 0644 keeps it from others
    # (tests/real/test_pods.py checks owner, group and mode in the running pod)
    assert hub_volume == {"name": "hub", "secret": {"secretName": "hub-credential", "defaultMode": 0o440}}
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 65532


def test_the_shipped_hub_cadence_syncs_every_20_seconds_and_ends_before_the_next_run(hub: Recording) -> None:
    spec = find(hub, "CronJob", "cert-sync", "fedobs-cert-sync")["spec"]
    command = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-4:] == ["--passes", "3", "--interval", "20"]
    last_pass_start = (3 - 1) * 20
    deadline = spec["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    assert last_pass_start + LAST_PASS_ROOM_SECONDS <= deadline < 60  # room for the last pass, no overlap


def test_the_edge_credential_fits_the_follower(hub: Recording) -> None:
    """The edge AppRole as the hub declares it: a token that lives through (1200 - 60) / 75 = 15 polls
    with the uses they need, an amortised cost under one hub request a minute, a secret_id that expires."""
    role = next(
        r for r in hub.of_type("vault:appRole/authBackendRole:AuthBackendRole") if r.inputs["roleName"] == "edge-eu"
    )
    assert role.inputs["tokenTtl"] == EDGE_TOKEN_TTL_SECONDS == role.inputs["tokenMaxTtl"] == EDGE_TOKEN_MAX_TTL_SECONDS
    assert role.inputs["tokenNumUses"] == EDGE_TOKEN_NUM_USES
    assert role.inputs["secretIdTtl"] == EDGE_SECRET_ID_TTL_SECONDS == 30 * 24 * 3600
    assert role.inputs["tokenNoDefaultPolicy"] is True
    reserve = 60  # programs.cert_sync.follow.TOKEN_RESERVE_SECONDS
    polls_per_token = (EDGE_TOKEN_TTL_SECONDS - reserve) // FOLLOW_POLL_SECONDS
    assert 2 * polls_per_token + 5 + 1 <= EDGE_TOKEN_NUM_USES  # metadata + data reads, one rotation, the revoke
    per_minute = 60 / FOLLOW_POLL_SECONDS + 2 * 60 / (EDGE_TOKEN_TTL_SECONDS - reserve)
    assert per_minute <= 1.0, per_minute
    # and the worst case from a changed hub Secret to the edge Vault stays inside two minutes
    assert 20 + FOLLOW_POLL_SECONDS + 10 < 120


@pytest.mark.parametrize(
    ("interval", "flags"),
    [(60, []), (30, ["--passes", "2", "--interval", "30"]), (20, ["--passes", "3", "--interval", "20"])],
)
def test_the_interval_decides_the_passes(interval: int, flags: list[str]) -> None:
    assert command(HubSource({"ns/a": "a"}, {}), interval) == [
        "python",
        "-m",
        "programs.cert_sync",
        "hub",
        "--secret",
        "ns/a=a",
        "--index",
        "otel/cert-sync-index",
        *flags,
    ]
    assert passes_per_run(interval) * interval == 60


@pytest.mark.parametrize(
    ("interval", "reason"),
    [(25, "does not divide 60"), (15, "less than 15 s"), (10, "less than 15 s"), (0, "not between 1 and 60")],
)
def test_intervals_that_do_not_cover_the_minute_are_refused(interval: int, reason: str) -> None:
    assert reason in (interval_problem(interval) or "")
    with pytest.raises(ValueError, match=reason):
        passes_per_run(interval)
