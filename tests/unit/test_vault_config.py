"""What lives inside Vault, under mocks: mounts, roles, generated policies, engines, edge credentials."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from components.vault_policies import Grant, render_policy
from offline.engine import SECRET_PLACEHOLDER, Recording, load_stack_file, run_program
from rig.schemas import schemas_dir


def parse_policy(text: str) -> dict[str, list[str]]:
    parsed = hcl2.loads(
        text, serialization_options=SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    )
    return {path: rule["capabilities"] for entry in parsed.get("path", []) for path, rule in entry.items()}


def policy_of(recording: Recording, name: str) -> dict[str, list[str]]:
    policy = next(r for r in recording.of_type("vault:index/policy:Policy") if r.inputs["name"] == name)
    return parse_policy(policy.inputs["policy"])


@cache
def provider_schema() -> dict[str, Any]:
    path = schemas_dir() / "pulumi" / "pulumi-vault-v7.7.0.selected-resources.schema.json"
    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_inputs_conform_to_the_provider_schema(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    resources = provider_schema()["resources"]
    checked = 0
    for resource in recording.resources:
        schema = resources.get(resource.type)
        if schema is None:
            continue
        unknown = set(resource.inputs) - set(schema["inputProperties"]) - {"__defaults"}
        assert not unknown, f"{resource.type} {resource.name}: unknown inputs {unknown}"
        missing = set(schema.get("requiredInputs", [])) - set(resource.inputs)
        assert not missing, f"{resource.type} {resource.name}: missing required inputs {missing}"
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_kv_v2_requires_check_and_set(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    mount = next(r for r in recording.of_type("vault:index/mount:Mount") if r.inputs["path"] == "kv")
    assert mount.inputs["type"] == "kv" and mount.inputs["options"] == {"version": "2"}
    config = recording.one("vault:kv/secretBackendV2:SecretBackendV2")
    assert config.inputs == {**config.inputs, "mount": "kv", "casRequired": True, "maxVersions": 10}


def test_consumer_roles_are_bound_to_exactly_one_service_account(hub: Recording, edge: Recording) -> None:
    expected = [
        (hub, "vso-observability", ("vso-auth", "observability", 600)),
        (hub, "notebook-validation", ("vault-notebook-sa", "notebook-validation", 3600)),
        (hub, "raft-snapshot", ("vault-snapshot", "vault", 600)),
        (edge, "vso-observability", ("vso-auth", "observability", 600)),
        (edge, "raft-snapshot", None),
    ]
    for recording, role_name, binding in expected:
        roles = [
            r
            for r in recording.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
            if r.inputs["roleName"] == role_name
        ]
        if binding is None:
            assert roles == []
            continue
        (role,) = roles
        assert role.inputs["boundServiceAccountNames"] == [binding[0]]
        assert role.inputs["boundServiceAccountNamespaces"] == [binding[1]]
        assert role.inputs["tokenTtl"] == binding[2]
        assert role.inputs["audience"] == "vault"
        assert role.inputs["tokenPolicies"] == [role_name]
    for recording in (hub, edge):
        for role in recording.of_type("vault:kubernetes/authBackendRole:AuthBackendRole"):
            for value in (*role.inputs["boundServiceAccountNames"], *role.inputs["boundServiceAccountNamespaces"]):
                assert "*" not in value


def test_consumer_policies_grant_exactly_the_declared_access(hub: Recording, edge: Recording) -> None:
    assert policy_of(hub, "vso-observability") == {
        "kv/data/otel/client-ca": ["read"],
        "kv/data/otel/otel-gateway-tls": ["read"],
    }
    assert policy_of(hub, "notebook-validation") == {
        "aws/creds/s3-readonly": ["read"],
        "database/creds/readonly": ["read"],
        "database/creds/results-readonly": ["read"],
    }
    assert policy_of(edge, "vso-observability") == {"kv/data/otel/otel-client-tls": ["read"]}


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_no_workload_policy_holds_sudo_or_sys(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    for policy in recording.of_type("vault:index/policy:Policy"):
        if policy.inputs["name"] == "fedobs-admin":
            continue  # Pulumi's own identity: tests/unit/test_admin_policy.py
        rules = parse_policy(policy.inputs["policy"])
        for path, capabilities in rules.items():
            if policy.inputs["name"] == "transit-watch":
                continue  # the hub's watch lists lease prefixes: tests/unit/test_transit_watch.py
            assert "sudo" not in capabilities, (policy.inputs["name"], path)
            if path.startswith("sys/"):
                # the one exception, read-only: what the snapshot CronJob downloads
                assert (policy.inputs["name"], path, capabilities) == (
                    "raft-snapshot",
                    "sys/storage/raft/snapshot",
                    ["read"],
                )


def test_policy_rendering_refuses_admin_paths() -> None:
    for grant in (
        Grant("sys/mounts/x", ("read",)),
        Grant("kv/data/x", ("read", "sudo")),
        Grant("auth/token/create", ("update",)),
    ):
        with pytest.raises(ValueError, match="policy p"):
            render_policy("p", [grant])
    text = render_policy("p", [Grant("kv/data/a", ("read",)), Grant("kv/data/a", ("update", "create"))])
    assert parse_policy(text) == {"kv/data/a": ["create", "read", "update"]}


def test_database_connections_use_templated_urls_and_secret_admin_logins(hub: Recording) -> None:
    connections = {
        r.inputs["name"]: r for r in hub.of_type("vault:database/secretBackendConnection:SecretBackendConnection")
    }
    assert set(connections) == {"telemetry-pg", "results-mysql"}
    pg = connections["telemetry-pg"]
    assert pg.inputs["postgresql"]["connectionUrl"] == (
        "postgresql://{{username}}:{{password}}@telemetry-pg.data.svc.cluster.local:5432/telemetry?sslmode=require"
    )
    assert pg.inputs["allowedRoles"] == ["readonly"] and pg.inputs["verifyConnection"] is True
    mysql = connections["results-mysql"]
    assert mysql.inputs["mysql"]["connectionUrl"] == (
        "{{username}}:{{password}}@tcp(results-mysql.data.svc.cluster.local:3306)/results?tls=true"
    )
    for connection, engine in ((pg, "postgresql"), (mysql, "mysql")):
        url = connection.inputs[engine]["connectionUrl"]
        assert SECRET_PLACEHOLDER not in url and "{{password}}" in url
        assert connection.is_secret_input(f"{engine}.password") and connection.is_secret_input(f"{engine}.username")
        assert connection.ignore_changes == [f"{engine}.password"]


def test_database_roles_and_root_rotation(hub: Recording) -> None:
    role = hub.one("vault:database/secretBackendRole:SecretBackendRole", "hub-vault-config-db-telemetry-pg-readonly")
    assert role.inputs["dbName"] == "telemetry-pg" and role.inputs["backend"] == "database"
    assert (role.inputs["defaultTtl"], role.inputs["maxTtl"]) == (3600, 86400)
    assert role.inputs["creationStatements"] == [
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        'GRANT USAGE ON SCHEMA app TO "{{name}}";',
        'GRANT SELECT ON ALL TABLES IN SCHEMA app TO "{{name}}";',
    ]
    assert role.inputs["revocationStatements"][-1] == 'DROP ROLE IF EXISTS "{{name}}";'
    mysql_role = hub.one(
        "vault:database/secretBackendRole:SecretBackendRole", "hub-vault-config-db-results-mysql-results-readonly"
    )
    assert mysql_role.inputs["creationStatements"][1] == "GRANT SELECT ON results.* TO '{{name}}'@'%';"
    rotate = hub.one("vault:generic/endpoint:Endpoint", "hub-vault-config-db-telemetry-pg-rotate-root")
    assert rotate.inputs["path"] == "database/rotate-root/telemetry-pg"
    assert rotate.inputs["disableRead"] is True and rotate.inputs["disableDelete"] is True
    assert role.urn in rotate.dependencies, "root rotation must come after the roles are set up"


def test_aws_engine_issues_assumed_roles_only(hub: Recording) -> None:
    backend = hub.one("vault:aws/secretBackend:SecretBackend")
    assert backend.inputs["path"] == "aws" and backend.inputs["region"] == "eu-central-1"
    assert backend.is_secret_input("accessKey") and backend.is_secret_input("secretKey")
    role = hub.one("vault:aws/secretBackendRole:SecretBackendRole")
    assert role.inputs["credentialType"] == "assumed_role"
    assert role.inputs["roleArns"] == ["arn:aws:iam::123456789012:role/fedobs-notebook-s3-readonly"]
    assert (role.inputs["defaultStsTtl"], role.inputs["maxStsTtl"]) == (3600, 3600)
    assert backend.urn in role.dependencies


def test_each_edge_hub_credential_fits_its_job(hub: Recording) -> None:
    """The edge follower's hub login reads the edge's own copies and their KV metadata (the version it
    polls), replaces its own role's secret_id and revokes itself: no transit (the seal token's job),
    no other role, no default policy; a 20-minute token good for 40 requests; secret_ids live 30 days
    (components/cert_sync_cadence.py says why)."""
    for edge in ("edge-eu", "edge-ap"):
        role_path = f"auth/approle-edges/role/{edge}"
        assert policy_of(hub, f"hub-access-{edge}") == {
            f"kv/data/edges/{edge}/*": ["read"],
            f"kv/metadata/edges/{edge}/*": ["read"],
            f"{role_path}/secret-id": ["update", "list"],
            f"{role_path}/secret-id/lookup": ["update"],
            f"{role_path}/secret-id-accessor/destroy": ["update"],
            "auth/token/revoke-self": ["update"],
        }
        role = next(
            r for r in hub.of_type("vault:appRole/authBackendRole:AuthBackendRole") if r.inputs["roleName"] == edge
        )
        assert role.inputs["backend"] == "approle-edges"
        assert role.inputs["tokenPolicies"] == [f"hub-access-{edge}"]
        assert role.inputs["roleId"] == f"edge-{edge}"
        assert role.inputs["tokenNoDefaultPolicy"] is True
        assert (role.inputs["tokenTtl"], role.inputs["tokenMaxTtl"], role.inputs["tokenNumUses"]) == (1200, 1200, 40)
        assert (role.inputs["secretIdTtl"], role.inputs["secretIdNumUses"]) == (30 * 24 * 3600, 0)


def test_edge_stack_mints_its_hub_credential_as_a_secret(edge: Recording) -> None:
    assert not edge.of_type("vault:appRole/authBackendRole:AuthBackendRole"), "edges serve no other edges"
    secret = edge.one("kubernetes:core/v1:Secret", "edge-eu-cert-sync-hub-secret-id")
    assert secret.is_secret_input("stringData.secret-id")
    assert secret.inputs["stringData"]["secret-id"].startswith("mock-secret-id-")


def run_hub_with(change: dict[str, Any]) -> Recording:
    config, secret_keys = load_stack_file("hub")
    config = copy.deepcopy(config)
    config["fedobs:vaultConfig"].update(change)
    return run_program("hub", config, secret_keys)


def test_switching_an_engine_off_removes_it_and_its_consumers_must_follow() -> None:
    recording = run_hub_with({"aws": {"enabled": False, "region": "eu-central-1"}})
    assert recording.error is not None
    assert (
        "fedobs:vaultConfig.consumers[0].credentials[2]: names aws role 's3-readonly' but "
        "fedobs:vaultConfig.aws is not enabled"
    ) in str(recording.error)
    assert recording.resources == []
    consumers = load_stack_file("hub")[0]["fedobs:vaultConfig"]["consumers"]
    consumers = [
        {**c, "credentials": [x for x in c.get("credentials", []) if not x.startswith("aws/")]} for c in consumers
    ]
    config, secret_keys = load_stack_file("hub")
    config = copy.deepcopy(config)
    config["fedobs:vaultConfig"].update({"aws": {"enabled": False, "region": "eu-central-1"}, "consumers": consumers})
    for workload in config["fedobs:dynamicSecrets"]:
        workload["files"] = [f for f in workload["files"] if not f["credential"].startswith("aws/")]
        job = workload.get("notebookJob")
        if job:
            job["credentials"] = [c for c in job["credentials"] if not c["credential"].startswith("aws/")]
    recording = run_program("hub", config, secret_keys)
    assert recording.error is None, recording.error
    assert not recording.of_type("vault:aws/secretBackend:SecretBackend")


def test_every_credential_role_has_the_reviewed_ttls(hub: Recording) -> None:
    """Each role's lease lifetimes, as a reviewer would check them (a changed TTL fails here, not only
    in the generated docs/vault-config.md, which `make docs` would turn green again)."""
    database = {
        r.inputs["name"]: (r.inputs["defaultTtl"], r.inputs["maxTtl"])
        for r in hub.of_type("vault:database/secretBackendRole:SecretBackendRole")
    }
    assert database == {"readonly": (3600, 86400), "results-readonly": (3600, 86400)}
    aws = {
        r.inputs["name"]: (r.inputs["defaultStsTtl"], r.inputs["maxStsTtl"])
        for r in hub.of_type("vault:aws/secretBackendRole:SecretBackendRole")
    }
    assert aws == {"s3-readonly": (3600, 3600)}
    kubernetes = {
        r.inputs["roleName"]: (r.inputs["tokenTtl"], r.inputs["tokenMaxTtl"])
        for r in hub.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
    }
    assert kubernetes == {
        "cert-sync": (300, 600),
        "notebook-validation": (3600, 14400),
        "raft-snapshot": (600, 900),
        "transit-watch": (300, 600),
        "vso-notebook-validation": (3600, 14400),  # the consumer's: its leases end with VSO's token
        "vso-observability": (600, 1200),
    }
