"""The hub's Vault configuration, applied to a real OpenBao server and exercised.

The hub stack is evaluated under mocks with its shipped config, changed only where a real peer
must be named (database hosts, ports, admin logins, TLS off on loopback); the applier then makes
the provider's calls for every resource of the hub's ``VaultConfiguration``, ``KubernetesAuth`` and
``TransitUnseal`` components (AWS resources are checked separately: OpenBao has no AWS engine).
Then every role is logged into, every policy's capabilities are checked, database credentials are
issued against real PostgreSQL 15 and MariaDB, and each edge's hub credential is confined to its
own prefix and key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from components.cert_sync_cadence import EDGE_TOKEN_NUM_USES, EDGE_TOKEN_TTL_SECONDS
from offline.engine import RecordedResource, Recording
from rig.applier import AppliedVault, VaultApplier
from rig.databases import MariaDBServer, PostgresServer
from rig.deploy_identity import DeployKey, edge_on_real_hub
from rig.kube_api import KubeAPIServer
from rig.local_hub import (
    AWS_TYPES,
    MYSQL_ADMIN,
    PG_ADMIN,
    hub_against,
    use_results,
    use_telemetry,
)
from rig.openbao import DevServer, api, dev_server
from rig.s3 import MotoS3
from tests.support.local_databases import local_databases

pytestmark = pytest.mark.real

CONFIG_COMPONENTS = ("hub-vault-config", "hub-kubernetes-auth", "hub-transit-unseal", "hub-edge-identity")


@dataclass
class Configured:
    vault: DevServer
    hub: Recording
    applied: AppliedVault
    kube: KubeAPIServer
    pg: PostgresServer
    mysql: MariaDBServer

    def login(self, role: str, namespace: str, service_account: str) -> Any:
        jwt = self.kube.mint_service_account_token(namespace, service_account, audiences=["vault"])
        return api(self.vault.url, "POST", "auth/kubernetes/login", body={"role": role, "jwt": jwt})

    def token(self, role: str, namespace: str, service_account: str) -> str:
        response = self.login(role, namespace, service_account)
        assert response.status == 200, response.text
        return str(response.body["auth"]["client_token"])

    def capabilities(self, token: str, paths: list[str]) -> dict[str, list[str]]:
        # sys/capabilities as root: tokens without the default policy may not ask for themselves
        answer = api(
            self.vault.url, "POST", "sys/capabilities", token=self.vault.token, body={"token": token, "paths": paths}
        )
        assert answer.status == 200, answer.text
        return {path: answer.body[path] for path in paths}


def configuration_resources(recording: Recording) -> list[RecordedResource]:
    components = {r.urn for r in recording.resources if not r.custom and r.name in CONFIG_COMPONENTS}
    return [r for r in recording.resources if r.parent in components]


@pytest.fixture(scope="module")
def configured() -> Iterator[Configured]:
    with local_databases() as (pg, mysql), KubeAPIServer() as kube, dev_server() as vault:
        key = DeployKey()
        hub = hub_against(pg, mysql, key)
        kube.allow_token_reviews("system:serviceaccount:vault:vault")
        applier = VaultApplier(
            vault.url,
            vault.token,
            not_in_openbao=AWS_TYPES,
            in_cluster_overrides={
                "vault:kubernetes/authBackendConfig:AuthBackendConfig": {
                    "kubernetesHost": kube.url,
                    "kubernetesCaCert": kube.ca_pem,
                    "disableLocalCaJwt": True,
                    "tokenReviewerJwt": kube.mint_service_account_token("vault", "vault"),
                }
            },
        )
        applied = applier.apply(configuration_resources(hub))
        # Each edge's seal token and cert-sync secret_id, created by its own deploy identity through
        # what its edge stack declares (rig.deploy_identity), as in a real `pulumi up` of the edge.
        # (The edge stack sees the hub's declared address; the applier talks to this plain-HTTP dev server.)
        for edge in ("edge-eu", "edge-ap"):
            _, minted = edge_on_real_hub(hub, key, hub.outputs, vault.url, None, edge)
            applied.tokens.update(minted.tokens)
            applied.secret_ids.update(minted.secret_ids)
        yield Configured(vault, hub, applied, kube, pg, mysql)


def consumer_roles(recording: Recording) -> list[RecordedResource]:
    return recording.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")


def test_aws_resources_were_not_silently_dropped(configured: Configured) -> None:
    assert sorted(configured.applied.skipped) == [
        (AWS_TYPES[0], "hub-vault-config-aws"),
        (AWS_TYPES[1], "hub-vault-config-aws-s3-readonly"),
    ]


def test_every_role_accepts_its_service_account_and_no_other(configured: Configured) -> None:
    roles = consumer_roles(configured.hub)
    assert {r.inputs["roleName"] for r in roles} == {
        "vso-observability",
        "vso-notebook-validation",
        "notebook-validation",
        "raft-snapshot",
        "cert-sync",
        "transit-watch",
    }
    for role in roles:
        name = role.inputs["roleName"]
        (namespace,) = role.inputs["boundServiceAccountNamespaces"]
        (account,) = role.inputs["boundServiceAccountNames"]
        assert configured.login(name, namespace, account).status == 200
        other_account = configured.login(name, namespace, account + "-other")
        assert other_account.status == 403 and "service account name not authorized" in other_account.text
        other_namespace = configured.login(name, namespace + "-other", account)
        assert other_namespace.status == 403 and "namespace not authorized" in other_namespace.text


SENSITIVE = [
    "sys/mounts/kv",
    "sys/policies/acl/vso-observability",
    "auth/token/create",
    "auth/kubernetes/role/x",
    "kv/data/edges/edge-eu/otel-client-tls",
    "kv/metadata/otel/otel-gateway-tls",
    "transit/decrypt/edge-eu",
    "database/config/telemetry-pg",
    "database/rotate-root/telemetry-pg",
    "sys/leases/lookup/auth/token/create/",
    "sys/leases/lookup/auth/token/create/transit-unseal-other/",
    "sys/leases/revoke",
    "auth/token/accessors",
]


def test_every_consumer_policy_grants_exactly_what_was_declared(configured: Configured) -> None:
    expected = {
        "vso-observability": {"kv/data/otel/otel-gateway-tls": ["read"], "kv/data/otel/client-ca": ["read"]},
        "notebook-validation": {
            "database/creds/readonly": ["read"],
            "database/creds/results-readonly": ["read"],
            "aws/creds/s3-readonly": ["read"],
        },
        # VSO for the NotebookValidationJob: the job's credentials, nothing else
        "vso-notebook-validation": {
            "database/creds/readonly": ["read"],
            "database/creds/results-readonly": ["read"],
            "aws/creds/s3-readonly": ["read"],
        },
        "raft-snapshot": {"sys/storage/raft/snapshot": ["read"]},
        # the hub's watch: list each edge's seal-token leases (a root path), look a lease up
        "transit-watch": {
            "sys/leases/lookup/auth/token/create/transit-unseal-edge-eu/": ["list", "sudo"],
            "sys/leases/lookup/auth/token/create/transit-unseal-edge-ap/": ["list", "sudo"],
            "sys/leases/lookup": ["update"],
        },
        "cert-sync": {
            f"kv/data/{path}": ["create", "read", "update"]
            for path in (
                "otel/client-ca",
                "otel/server-ca",
                "otel/otel-gateway-tls",
                "edges/edge-eu/otel-client-tls",
                "edges/edge-ap/otel-client-tls",
            )
        },
    }
    siblings = [
        "kv/data/otel/otel-client-tls",
        "kv/data/otel",
        "kv/data/otel/client-ca/x",
        "database/creds/other",
        "aws/creds/other",
    ]
    for role in consumer_roles(configured.hub):
        name = role.inputs["roleName"]
        token = configured.token(
            name, role.inputs["boundServiceAccountNamespaces"][0], role.inputs["boundServiceAccountNames"][0]
        )
        granted = configured.capabilities(token, list(expected[name]))
        assert granted == expected[name], name
        for path, capabilities in configured.capabilities(token, siblings + SENSITIVE).items():
            if path not in expected[name]:
                assert capabilities == ["deny"], (name, path, capabilities)


def test_each_edge_credential_reads_its_own_prefix_and_nothing_else(configured: Configured) -> None:
    url, root = configured.vault.url, configured.vault.token
    for edge in ("edge-eu", "edge-ap"):
        written = api(
            url,
            "POST",
            f"kv/data/edges/{edge}/otel-client-tls",
            token=root,
            body={"options": {"cas": 0}, "data": {"edge": edge}},
        )
        assert written.status == 200, written.text
    for edge, other in (("edge-eu", "edge-ap"), ("edge-ap", "edge-eu")):
        role_id = configured.applied.role_ids[f"hub-vault-config-edge-{edge}-role"]
        assert role_id == f"edge-{edge}"
        secret_id = configured.applied.secret_ids[f"{edge}-hub-secret-id"]
        login = api(url, "POST", "auth/approle-edges/login", body={"role_id": role_id, "secret_id": secret_id})
        assert login.status == 200, login.text
        token = login.body["auth"]["client_token"]
        assert login.body["auth"]["policies"] == [f"hub-access-{edge}"]  # no default policy
        assert login.body["auth"]["lease_duration"] == EDGE_TOKEN_TTL_SECONDS
        paths = ["sys/mounts", "auth/token/create", f"kv/data/edges/{other}/x", f"transit/encrypt/{edge}"]
        assert configured.capabilities(token, paths) == {
            "sys/mounts": ["deny"],
            "auth/token/create": ["deny"],
            f"kv/data/edges/{other}/x": ["deny"],
            f"transit/encrypt/{edge}": ["deny"],
        }
        own = api(url, "GET", f"kv/data/edges/{edge}/otel-client-tls", token=token)
        assert own.status == 200 and own.data["data"] == {"edge": edge}
        denied = api(url, "GET", f"kv/data/edges/{other}/otel-client-tls", token=token)
        assert denied.status == 403 and "permission denied" in denied.text
        assert api(url, "POST", f"transit/encrypt/{edge}", token=token, body={"plaintext": "eA=="}).status == 403
        # a fresh login's token serves exactly its declared number of uses, then is gone
        fresh = api(url, "POST", "auth/approle-edges/login", body={"role_id": role_id, "secret_id": secret_id})
        assert fresh.status == 200, fresh.text
        fresh_token = fresh.body["auth"]["client_token"]
        statuses = [
            api(url, "GET", f"kv/data/edges/{edge}/otel-client-tls", token=fresh_token).status
            for _ in range(EDGE_TOKEN_NUM_USES + 1)
        ]
        assert statuses == [200] * EDGE_TOKEN_NUM_USES + [403], statuses


def test_kv_requires_check_and_set(configured: Configured) -> None:
    answer = api(
        configured.vault.url,
        "POST",
        "kv/data/otel/client-ca",
        token=configured.vault.token,
        body={"data": {"ca.crt": "x"}},
    )
    assert answer.status == 400 and "check-and-set parameter required" in answer.text


def notebook_token(configured: Configured) -> str:
    return configured.token("notebook-validation", "notebook-validation", "vault-notebook-sa")


def test_postgres_credentials_have_exactly_the_granted_privileges(configured: Configured) -> None:
    import psycopg

    token = notebook_token(configured)
    issued = api(configured.vault.url, "GET", "database/creds/readonly", token=token)
    assert issued.status == 200, issued.text
    assert issued.body["lease_duration"] == 3600  # defaultTtl
    user, password = issued.data["username"], issued.data["password"]
    assert use_telemetry(configured.pg, user, password) == (1, "InsufficientPrivilege")
    lease = issued.body["lease_id"]
    renewed = api(
        configured.vault.url,
        "PUT",
        "sys/leases/renew",
        token=configured.vault.token,
        body={"lease_id": lease, "increment": 7200},
    )
    assert renewed.status == 200 and 0 < renewed.body["lease_duration"] <= 86400  # within maxTtl
    revoked = api(
        configured.vault.url, "PUT", "sys/leases/revoke", token=configured.vault.token, body={"lease_id": lease}
    )
    assert revoked.status == 204, revoked.text
    with pytest.raises(psycopg.OperationalError):
        configured.pg.connect(user, password, "telemetry")  # a new connection: the user is gone


def test_mariadb_credentials_have_exactly_the_granted_privileges(configured: Configured) -> None:
    import pymysql

    token = notebook_token(configured)
    issued = api(configured.vault.url, "GET", "database/creds/results-readonly", token=token)
    assert issued.status == 200, issued.text
    user, password = issued.data["username"], issued.data["password"]
    assert len(user) <= 32
    value, refused = use_results(configured.mysql, user, password)
    assert value == 1 and refused is not None
    assert refused.startswith("OperationalError: ") and "INSERT command denied" in refused
    revoked = api(
        configured.vault.url,
        "PUT",
        "sys/leases/revoke",
        token=configured.vault.token,
        body={"lease_id": issued.body["lease_id"]},
    )
    assert revoked.status == 204
    with pytest.raises(pymysql.err.OperationalError):
        configured.mysql.connect(user, password, "results")


def test_root_credentials_were_rotated_after_setup(configured: Configured) -> None:
    import psycopg
    import pymysql

    with pytest.raises(psycopg.OperationalError):
        configured.pg.connect(*PG_ADMIN, "telemetry")
    with pytest.raises(pymysql.err.OperationalError):
        configured.mysql.connect(*MYSQL_ADMIN, "results")
    # ... and Vault still manages users with the password only it knows
    assert api(configured.vault.url, "GET", "database/creds/readonly", token=notebook_token(configured)).status == 200


def test_aws_role_arns_are_assumable_for_the_declared_ttl(configured: Configured) -> None:
    """OpenBao has no AWS engine: the declared role ARNs are exercised with moto's STS AssumeRole."""
    role = configured.hub.one("vault:aws/secretBackendRole:SecretBackendRole")
    with MotoS3() as moto:
        sts = boto3.client(
            "sts",
            endpoint_url=moto.endpoint_url,
            region_name="eu-central-1",
            aws_access_key_id="AKIAEXAMPLEEXAMPLE0",
            aws_secret_access_key="x" * 40,
        )
        for arn in role.inputs["roleArns"]:
            before = time.time()
            answer = sts.assume_role(
                RoleArn=arn, RoleSessionName="vault-notebook-validation", DurationSeconds=role.inputs["defaultStsTtl"]
            )
            credentials = answer["Credentials"]
            assert answer["AssumedRoleUser"]["Arn"].startswith(
                arn.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/")
            )
            lifetime = credentials["Expiration"].timestamp() - before
            assert abs(lifetime - role.inputs["defaultStsTtl"]) < 60


def test_each_transit_seal_token_can_use_only_its_own_key(configured: Configured) -> None:
    tokens = {name.removesuffix("-hub-transit-token"): token for name, token in configured.applied.tokens.items()}
    assert set(tokens) == {"edge-eu", "edge-ap"}
    for edge, other in (("edge-eu", "edge-ap"), ("edge-ap", "edge-eu")):
        paths = [
            f"transit/encrypt/{edge}",
            f"transit/decrypt/{edge}",
            f"transit/encrypt/{other}",
            f"transit/decrypt/{other}",
            f"transit/keys/{edge}",
            "kv/data/edges/" + edge + "/x",
            "sys/mounts",
            "auth/token/create",
        ]
        assert configured.capabilities(tokens[edge], paths) == {
            f"transit/encrypt/{edge}": ["update"],
            f"transit/decrypt/{edge}": ["update"],
            f"transit/encrypt/{other}": ["deny"],
            f"transit/decrypt/{other}": ["deny"],
            f"transit/keys/{edge}": ["deny"],
            f"kv/data/edges/{edge}/x": ["deny"],
            "sys/mounts": ["deny"],
            "auth/token/create": ["deny"],
        }
        me = api(
            configured.vault.url,
            "POST",
            "auth/token/lookup",
            token=configured.vault.token,
            body={"token": tokens[edge]},
        )
        assert me.status == 200 and me.data["policies"] == [f"transit-unseal-{edge}"]
        assert me.data["orphan"] is True and me.data["creation_ttl"] == 768 * 3600
        assert me.data["explicit_max_ttl"] == 0  # periodic: renewable for as long as it is renewed
        renewed = api(configured.vault.url, "POST", "auth/token/renew-self", token=tokens[edge])
        assert renewed.status == 200 and renewed.body["auth"]["lease_duration"] == 768 * 3600
