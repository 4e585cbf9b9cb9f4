"""The hub's watch on the edges' transit-unseal tokens, as the stacks declare it, and the program's
own logic (what it reports and when it fails). Proven on OpenBao in tests/real/test_transit_watch_real.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from components.pod_security import PROGRAMS_UID
from components.transit_watch import MIN_TTL_SECONDS, SCHEDULE
from components.vault_names import TRANSIT_UNSEAL_PREFIX, TRANSIT_WATCH_ROLE
from offline.engine import Recording
from policy.rules import WATCH_POLICY_NAME, WATCH_SUDO_PATH, policy_problems
from programs.transit_watch.watch import EXIT_ALERT, EdgeReport, TokenLease, duration, main
from rig.hub_edge import k8s_object, pod_template
from rig.schemas import validate_kubernetes_object

HUB_EDGES = "edge-eu,edge-ap"


def watch_policy(recording: Recording) -> dict[str, list[str]]:
    text = next(r for r in recording.of_type("vault:index/policy:Policy") if r.inputs["name"] == "transit-watch")
    parsed = hcl2.loads(
        text.inputs["policy"],
        serialization_options=SerializationOptions(strip_string_quotes=True, explicit_blocks=False),
    )
    return {path: rule["capabilities"] for entry in parsed["path"] for path, rule in entry.items()}


def test_the_watch_policy_is_exactly_listing_each_edges_token_leases(hub: Recording) -> None:
    assert watch_policy(hub) == {
        "sys/leases/lookup/auth/token/create/transit-unseal-edge-ap/": ["list", "sudo"],
        "sys/leases/lookup/auth/token/create/transit-unseal-edge-eu/": ["list", "sudo"],
        "sys/leases/lookup": ["update"],
    }


def test_the_watch_role_is_bound_to_its_service_account_only(hub: Recording) -> None:
    role = hub.one("vault:kubernetes/authBackendRole:AuthBackendRole", "hub-kubernetes-auth-transit-watch-role")
    assert role.inputs["boundServiceAccountNames"] == ["transit-watch"]
    assert role.inputs["boundServiceAccountNamespaces"] == ["vault"]
    assert role.inputs["audience"] == "vault" and role.inputs["tokenPolicies"] == ["transit-watch"]
    assert (role.inputs["tokenTtl"], role.inputs["tokenMaxTtl"]) == (300, 600)


def test_the_cronjob_is_restricted_hourly_and_valid(hub: Recording) -> None:
    cronjob = k8s_object(hub, "CronJob", "transit-watch")
    assert cronjob["metadata"]["namespace"] == "vault"
    assert validate_kubernetes_object(cronjob) == []  # upstream schema, unknown keys refused
    spec = cronjob["spec"]
    assert spec["schedule"] == SCHEDULE == "17 * * * *" and spec["concurrencyPolicy"] == "Forbid"
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 1
    pod = pod_template(hub, "CronJob", "transit-watch")["spec"]
    assert pod["serviceAccountName"] == "transit-watch" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": PROGRAMS_UID,
        "runAsGroup": PROGRAMS_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["command"] == ["python", "-m", "programs.transit_watch"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TRANSIT_WATCH_EDGES"] == HUB_EDGES and env["TRANSIT_WATCH_TOKEN_ROLE_PREFIX"] == "transit-unseal-"
    assert env["TRANSIT_WATCH_MIN_TTL"] == str(MIN_TTL_SECONDS) == str(7 * 86400)
    assert env["VAULT_ADDR"] == "https://vault-active.vault.svc:8200"
    token = pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"path": "token", "audience": "vault", "expirationSeconds": 600}
    namespace = k8s_object(hub, "Namespace", "vault")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_misspelled_cronjob_is_refused(hub: Recording) -> None:
    cronjob = k8s_object(hub, "CronJob", "transit-watch")
    broken = {**cronjob, "spec": {**cronjob["spec"], "concurrencyPolicyy": "Forbid"}}
    assert any("concurrencyPolicyy" in p for p in validate_kubernetes_object(broken))


def test_edges_declare_no_watch(edge: Recording) -> None:
    assert not [o for o in edge.kubernetes_objects() if o["metadata"]["name"] == "transit-watch"]
    assert not [r for r in edge.of_type("vault:index/policy:Policy") if r.inputs["name"] == "transit-watch"]


# ----------------------------------------------------------------------------------------------
# the program's verdicts
# ----------------------------------------------------------------------------------------------
NOW = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)


def lease(ttl: int, issued_hours_ago: int = 1) -> TokenLease:
    issued = NOW - dt.timedelta(hours=issued_hours_ago)
    return TokenLease(issued, NOW + dt.timedelta(seconds=ttl), None, ttl, True)


@pytest.mark.parametrize(
    ("leases", "status", "problem"),
    [
        ((lease(768 * 3600),), "ok", ""),
        ((lease(MIN_TTL_SECONDS),), "ok", ""),
        ((lease(MIN_TTL_SECONDS - 1),), "LOW", "edge-eu (ttl 6d23h59m < 7d0h00m)"),
        ((), "MISSING", "edge-eu (no live transit-unseal token: expired, revoked or never created)"),
        # a second live token: the hub cannot tell which one the edge holds, and a long-lived stale one
        # must not hide the edge's own running out
        (
            (lease(768 * 3600, issued_hours_ago=48), lease(30, issued_hours_ago=0)),
            "EXTRA",
            "edge-eu (2 live transit-unseal tokens where its stack holds one)",
        ),
    ],
)
def test_a_report_says_ok_low_or_missing(leases: tuple[TokenLease, ...], status: str, problem: str) -> None:
    report = EdgeReport("edge-eu", leases, MIN_TTL_SECONDS)
    assert (report.status, report.problem) == (status, problem)
    assert report.line().startswith(f"edge-eu: {status}")


def test_durations_read_as_days_hours_minutes() -> None:
    assert [duration(s) for s in (12, 90, 3600, 768 * 3600 - 60)] == ["12s", "0h01m", "1h00m", "31d23h59m"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([], "missing --vault-addr (VAULT_ADDR), --role"),
        (["--vault-addr", "http://vault:8200"], "--vault-addr"),
        (["--edges", "Edge_EU"], "not edge names (DNS labels): Edge_EU"),
        (["--min-ttl", "a week"], "--min-ttl (TRANSIT_WATCH_MIN_TTL) is not a number of seconds"),
    ],
)
def test_usage_errors_exit_2_naming_the_setting(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("VAULT_ADDR", "TRANSIT_WATCH_VAULT_ROLE", "TRANSIT_WATCH_EDGES", "TRANSIT_WATCH_TOKEN_ROLE_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    jwt = tmp_path / "token"
    jwt.write_text("jwt")
    complete: dict[str, Any] = {
        "--vault-addr": "https://127.0.0.1:1",
        "--role": "transit-watch",
        "--edges": "edge-eu",
        "--token-role-prefix": "transit-unseal-",
        "--jwt-file": str(jwt),
    }
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [] if not args else [x for k, v in {**complete, **given}.items() for x in (k, v)]
    assert main(argv) == 2
    assert named in capsys.readouterr().err
    assert EXIT_ALERT == 4


# ----------------------------------------------------------------------------------------------
# the policy pack's one workload exception to "sudo only in fedobs-admin"
# ----------------------------------------------------------------------------------------------
def test_the_pack_allows_the_watch_policy_and_nothing_broader(hub: Recording) -> None:
    # the pack cannot import the product: its copies of the names are the product's
    assert WATCH_POLICY_NAME == TRANSIT_WATCH_ROLE
    assert WATCH_SUDO_PATH.pattern.startswith(f"sys/leases/lookup/auth/token/create/{TRANSIT_UNSEAL_PREFIX}")
    shipped = next(r for r in hub.of_type("vault:index/policy:Policy") if r.inputs["name"] == "transit-watch")
    assert policy_problems("transit-watch", shipped.inputs["policy"]) == []
    for name, path, capabilities in (
        ("transit-watch", "sys/leases/lookup/auth/token/create/", '["list", "sudo"]'),
        ("transit-watch", "sys/leases/lookup/auth/token/create/transit-unseal-*", '["list", "sudo"]'),
        ("transit-watch", "sys/leases/lookup/auth/token/create/transit-unseal-edge-eu/", '["read", "list", "sudo"]'),
        ("transit-watch", "sys/leases/revoke-prefix/auth/token/create/transit-unseal-edge-eu/", '["update", "sudo"]'),
        ("someone-else", "sys/leases/lookup/auth/token/create/transit-unseal-edge-eu/", '["list", "sudo"]'),
    ):
        text = f'path "{path}" {{ capabilities = {capabilities} }}\n'
        assert any("grants sudo" in p for p in policy_problems(name, text)), (name, path, capabilities)
