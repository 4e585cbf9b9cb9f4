"""The Vault Agent, run from the injector annotations the project puts on Pod templates, against a
real hub OpenBao configured as the hub stack declares it.

The hub stack is evaluated under mocks against real PostgreSQL 15 and MariaDB on loopback
(``rig.local_hub``), and the provider calls of its ``VaultConfiguration`` and
``KubernetesAuth`` components are applied to a real TLS OpenBao (``rig.tls_vault``) whose
Kubernetes auth asks a loopback Kubernetes API (TokenReview). The agent is the real ``bao agent``
with the config :func:`rig.agent.agent_config_from_annotations` derives from the
annotations, logging in with a token that API minted for ``notebook-validation/vault-notebook-sa``
(audience ``vault``, as the Pod's projected token). The consumer reads the rendered files with
:mod:`programs.credentials` only.

AWS: OpenBao has no AWS secrets engine. A KV v1 mount at ``aws/`` (default lease TTL = the role's
declared ``defaultStsTtl``) holds at ``creds/s3-readonly`` the fields Vault's ``aws/creds/<role>``
answer carries for an ``assumed_role`` role (``access_key``, ``secret_key``, ``security_token``,
``arn``; a non-renewable lease of the STS lifetime), from one real ``sts:AssumeRole`` of the declared
role ARN on moto, made as the IAM user Vault's ``aws/config/root`` would hold (it may only assume
that role). moto runs with IAM authentication ON, so S3 honours exactly those credentials and the
role's permissions (read-only: the role's AWS-side policy, outside the stack, is assumed to be
``s3:GetObject``/``s3:ListBucket``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from components.agent_injector import (
    PRE_POPULATE_FAILURE,
    InjectedCredential,
    InjectorTarget,
    injector_annotations,
)
from offline.engine import Recording
from programs import credentials
from rig import processes
from rig.agent import (
    PREFIX,
    agent_config_from_annotations,
    continuous_agent,
    pre_stop_revocation,
    run_agent,
    template_retry_sleeps,
)
from rig.applier import VaultApplier
from rig.databases import MariaDBServer, PostgresServer
from rig.hub_edge import children, kubernetes_auth_overrides, pod_template
from rig.kube_api import KubeAPIServer
from rig.local_hub import AWS_TYPES, hub_against, use_results, use_telemetry
from rig.openbao import api
from rig.pki import TestCA, write_private_file
from rig.programs_env import REPO, programs_python
from rig.s3 import MotoS3
from rig.tls_vault import Vault, initialise, start_vault
from tests.support.local_databases import local_databases

pytestmark = pytest.mark.real

NAMESPACE, SERVICE_ACCOUNT = "notebook-validation", "vault-notebook-sa"
#: What the annotations' ``service`` says (the stack's in-cluster address); the agent is pointed at
#: the test server instead, since that address does not exist here.
IN_CLUSTER_VAULT = "https://vault-active.vault.svc:8200"
#: A name the test server's certificate carries (``start_vault`` issues ``localhost`` and
#: ``127.0.0.1``) and the agent's address does not: the agent must verify against this name.
TLS_SERVER_NAME = "vault-active.vault.svc"  # what the stack declares; the test Vault's certificate has it
JOB_CREDENTIALS = (
    InjectedCredential("db", "database/creds/readonly", "database", "dotenv", "DB_"),
    InjectedCredential("results", "database/creds/results-readonly", "database", "json"),
    InjectedCredential("aws", "aws/creds/s3-readonly", "aws", "dotenv"),
)
BUCKET, OBJECT_KEY, OBJECT_BODY = "fedobs-notebook-results", "runs/r1.json", b'{"run": "r1", "ok": 1}'
#: TEST-ONLY database role (not in the stack): same statements as ``readonly``, leases of 20 s
#: renewable to at most 40 s, so that renewal and re-rendering happen within this module's budget.
SHORT_ROLE, SHORT_K8S_ROLE = "short", "notebook-validation-short"
#: How long a pre-populate run may take beyond the retry pauses its annotations set, success or failure.
FAST_FAIL_SECONDS = 15.0
#: What docs/dynamic-secrets.md promises for a Job's agent: any failure ends it within 40 s (a read
#: that keeps failing is retried 12 times first, 21.5 s of pauses with the stack's annotations; with
#: the injector's defaults that would be 304 s, and a refused login would never end).
JOB_AGENT_FAILS_WITHIN_SECONDS = 40.0


def job_annotations(
    *,
    role: str = "notebook-validation",
    tls_server_name: str = TLS_SERVER_NAME,
    files: tuple[InjectedCredential, ...] = JOB_CREDENTIALS,
    run_to_completion: bool = True,
) -> dict[str, str]:
    """THE annotations of the example Job's Pod template (the one place they come from; the
    defaults are exactly the Job's declaration). Variations are for the failure and continuous
    cases only."""
    settings = InjectorTarget(role=role, vault_address=IN_CLUSTER_VAULT, tls_server_name=tls_server_name)
    return injector_annotations(settings, files, run_to_completion=run_to_completion)


# --------------------------------------------------------------------------------------------------
# the hub: Vault configured as declared, databases, Kubernetes API, AWS on moto
# --------------------------------------------------------------------------------------------------
@dataclass
class Hub:
    recording: Recording
    vault: Vault
    kube: KubeAPIServer
    pg: PostgresServer
    mysql: MariaDBServer
    moto: MotoS3
    admin_s3: Any
    base: Path
    #: the keys of Vault's AWS root user (``aws/config/root``): what every AssumeRole is made with
    vault_aws_user: dict[str, str]

    def pod(self, name: str) -> Pod:
        """Directories standing for one Pod's volumes: ``/vault/secrets``, the agents' homes (init
        container and sidecar have one each, as the injector mounts them) and the projected SA token."""
        root = self.base / name
        pod = Pod(root / "secrets", root / "home-init", root / "home-sidecar", root / "token")
        pod.secrets.mkdir(parents=True)
        write_private_file(
            pod.jwt, self.kube.mint_service_account_token(NAMESPACE, SERVICE_ACCOUNT, audiences=["vault"])
        )
        return pod

    def config(
        self, annotations: dict[str, str], pod: Pod, *, home: Path, exit_after_auth_override: bool | None = None
    ) -> str:
        return agent_config_from_annotations(
            annotations,
            vault_addr=self.vault.url,
            ca_file=self.vault.ca_file,
            jwt_file=str(pod.jwt),
            secrets_dir=str(pod.secrets),
            home_dir=str(home),
            exit_after_auth_override=exit_after_auth_override,
        )

    def token_valid(self, home: Path) -> bool:
        """Whether the token the agent's sink wrote under ``home`` still works."""
        token = (home / ".vault-token").read_text().strip()
        answer = api(self.vault.url, "GET", "auth/token/lookup-self", token=token, ca_file=self.vault.ca_file)
        return answer.status == 200


@dataclass
class Pod:
    secrets: Path
    home_init: Path
    home_sidecar: Path
    jwt: Path


def _aws_client(service: str, endpoint: str, key: str, secret: str, token: str | None = None) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name="eu-central-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


#: The AWS account as it exists, written down independently of the stack: the one role the platform
#: team made for notebooks. The stack's declared ARN must name it, or AssumeRole is refused (moto's STS
#: alone would accept any well-formed ARN; its IAM policy evaluation, switched on below, does not).
ACCOUNT_ROLE_ARN = "arn:aws:iam::123456789012:role/fedobs-notebook-s3-readonly"


@contextlib.contextmanager
def moto_with_iam_auth(moto: MotoS3, role_arn: str = ACCOUNT_ROLE_ARN) -> Iterator[tuple[dict[str, str], Any]]:
    """IAM as ``awsRootCredentials`` and the account's role describe it, then IAM authentication on
    (moto's process-wide switch, restored on exit). Yields the Vault IAM user's keys and an admin S3
    client."""
    from moto import settings

    iam = _aws_client("iam", moto.endpoint_url, "AKIASETUPSETUPSETUP0", "setup" * 8)
    allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.create_user(UserName="fedobs-admin")
    iam.put_user_policy(UserName="fedobs-admin", PolicyName="all", PolicyDocument=json.dumps(allow))
    admin = iam.create_access_key(UserName="fedobs-admin")["AccessKey"]
    iam.create_user(UserName="vault-aws")  # Vault's aws/config/root user: may only assume the roles
    iam.put_user_policy(
        UserName="vault-aws",
        PolicyName="assume",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}],
            }
        ),
    )
    vault_user = iam.create_access_key(UserName="vault-aws")["AccessKey"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Principal": {"AWS": "arn:aws:iam::123456789012:user/vault-aws"},
            }
        ],
    }
    role_name = role_arn.rsplit("/", 1)[1]
    iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=role_name,
        PolicyName="s3-readonly",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}],
            }
        ),
    )
    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield (
            {"key": vault_user["AccessKeyId"], "secret": vault_user["SecretAccessKey"]},
            _aws_client("s3", moto.endpoint_url, admin["AccessKeyId"], admin["SecretAccessKey"]),
        )
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def serve_aws_creds(vault: Vault, hub: Recording, moto: MotoS3, vault_user: dict[str, str]) -> None:
    """What OpenBao cannot serve (module docstring): Vault's answer to a read of
    ``aws/creds/s3-readonly``, from one AssumeRole as Vault's AWS engine makes it."""
    backend = hub.one(AWS_TYPES[0])
    role = hub.one(AWS_TYPES[1])
    assert role.inputs["credentialType"] == "assumed_role" and role.inputs["backend"] == backend.inputs["path"]
    ttl = int(role.inputs["defaultStsTtl"])
    sts = _aws_client("sts", moto.endpoint_url, vault_user["key"], vault_user["secret"])
    answer = sts.assume_role(
        RoleArn=role.inputs["roleArns"][0],
        DurationSeconds=ttl,
        RoleSessionName=f"vault-kubernetes-{role.inputs['name']}-{int(time.time())}"[:64],
    )
    issued = answer["Credentials"]
    vault.ok(
        "POST",
        f"sys/mounts/{backend.inputs['path']}",
        {
            "type": "kv",
            "options": {"version": "1"},
            "description": "TEST: stands in for the AWS engine",
            "config": {"default_lease_ttl": f"{ttl}s", "max_lease_ttl": f"{ttl}s"},
        },
    )
    vault.ok(
        "POST",
        f"{backend.inputs['path']}/creds/{role.inputs['name']}",
        {
            "access_key": issued["AccessKeyId"],
            "secret_key": issued["SecretAccessKey"],
            "security_token": issued["SessionToken"],
            "arn": answer["AssumedRoleUser"]["Arn"],
        },
    )


def add_short_lived_role(hub: Hub) -> None:
    """TEST-ONLY (not declared by the stack): database role ``short`` on the hub's ``telemetry-pg``
    connection (``readonly``'s statements, default_ttl 20 s, max_ttl 40 s), a policy reading only its
    creds and a Kubernetes role for the same ServiceAccount. Made short to watch renewal happen."""
    vault = hub.vault
    readonly = vault.ok("GET", "database/roles/readonly").data
    allowed = vault.ok("GET", "database/config/telemetry-pg").data["allowed_roles"]
    vault.ok("POST", "database/config/telemetry-pg", {"allowed_roles": sorted({*allowed, SHORT_ROLE})})
    vault.ok(
        "POST",
        f"database/roles/{SHORT_ROLE}",
        {
            "db_name": "telemetry-pg",
            "creation_statements": readonly["creation_statements"],
            "revocation_statements": readonly["revocation_statements"],
            "default_ttl": 20,
            "max_ttl": 40,
        },
    )
    vault.ok(
        "PUT",
        "sys/policies/acl/test-short-lived-db",
        {"policy": f'path "database/creds/{SHORT_ROLE}" {{ capabilities = ["read"] }}'},
    )
    vault.ok(
        "POST",
        f"auth/kubernetes/role/{SHORT_K8S_ROLE}",
        {
            "bound_service_account_names": [SERVICE_ACCOUNT],
            "bound_service_account_namespaces": [NAMESPACE],
            "audience": "vault",
            "token_policies": ["test-short-lived-db"],
            "token_ttl": 3600,
        },
    )


def bao_agents_of_this_process() -> list[str]:
    """Command lines of ``bao agent`` processes that are children of this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and len(cmdline) > 1 and cmdline[0].endswith(b"bao") and cmdline[1] == b"agent":
            found.append(b" ".join(cmdline).decode(errors="replace"))
    return found


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("agent")
    with local_databases() as (pg, mysql), KubeAPIServer() as kube, MotoS3() as moto:
        recording = hub_against(pg, mysql)
        node = start_vault(
            "hub", base / "vault", TestCA("fedobs-test-vault-ca"), dns_names=("localhost", TLS_SERVER_NAME)
        )
        try:
            vault = initialise("hub", node, kv=False)
            applied = VaultApplier(
                vault.url,
                vault.root,
                ca_file=vault.ca_file,
                not_in_openbao=AWS_TYPES,
                in_cluster_overrides=kubernetes_auth_overrides(kube),
            ).apply(children(recording, "hub-vault-config", "hub-kubernetes-auth"))
            assert sorted(t for t, _ in applied.skipped) == sorted(AWS_TYPES)
            with moto_with_iam_auth(moto) as (vault_user, admin_s3):
                serve_aws_creds(vault, recording, moto, vault_user)
                admin_s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
                admin_s3.put_object(Bucket=BUCKET, Key=OBJECT_KEY, Body=OBJECT_BODY)
                yield Hub(recording, vault, kube, pg, mysql, moto, admin_s3, base, vault_user)
        finally:
            node.stop()
    leftovers = bao_agents_of_this_process()
    assert not leftovers, leftovers


# --------------------------------------------------------------------------------------------------
# the consumer: reads the files with programs.credentials only
# --------------------------------------------------------------------------------------------------
def use_postgres(hub: Hub, creds: dict[str, str]) -> None:
    """SELECT works, INSERT is refused (``rig.local_hub.use_telemetry``, as ``make demo`` uses it)."""
    assert use_telemetry(hub.pg, creds["DB_USERNAME"], creds["DB_PASSWORD"]) == (1, "InsufficientPrivilege")


def postgres_login_works(hub: Hub, username: str, password: str) -> bool:
    """A NEW connection (sessions opened before a revocation survive it)."""
    import psycopg

    try:
        with hub.pg.connect(username, password, "telemetry") as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def job_credentials(hub: Hub) -> tuple[InjectedCredential, ...]:
    """The example Job's files with the connection data of this module's servers."""
    pg = {"host": hub.pg.host, "port": hub.pg.port, "database": "telemetry"}
    mysql = {"host": hub.mysql.host, "port": hub.mysql.port, "database": "results"}
    db, results, aws = JOB_CREDENTIALS
    return (
        replace(db, connection=pg),
        replace(results, connection=mysql),
        replace(aws, connection={"region": "eu-central-1"}),
    )


def connect_with_files_alone(db: dict[str, str], results: dict[str, Any]) -> None:
    """New connections from the rendered values only (host, port, database, user, password)."""
    import psycopg
    import pymysql

    with psycopg.connect(
        host=db["DB_HOST"],
        port=int(db["DB_PORT"]),
        dbname=db["DB_NAME"],
        user=db["DB_USERNAME"],
        password=db["DB_PASSWORD"],
        sslmode="disable",
    ) as connection:
        assert connection.execute("SELECT value FROM app.metrics WHERE name = 'up'").fetchone() == (1,)
    mysql = pymysql.connect(
        host=results["host"],
        port=int(results["port"]),
        database=results["database"],
        user=results["username"],
        password=results["password"],
    )
    try:
        with mysql.cursor() as cursor:
            cursor.execute("SELECT ok FROM results WHERE run = 'r1'")
            assert cursor.fetchone() == (1,)
    finally:
        mysql.close()


def use_mariadb(hub: Hub, creds: dict[str, Any]) -> None:
    value, refused = use_results(hub.mysql, creds["username"], creds["password"])
    assert value == 1 and refused is not None
    assert refused.startswith("OperationalError: ") and "INSERT command denied" in refused


def use_s3(hub: Hub, creds: dict[str, str]) -> None:
    s3 = _aws_client(
        "s3",
        hub.moto.endpoint_url,
        creds["AWS_ACCESS_KEY_ID"],
        creds["AWS_SECRET_ACCESS_KEY"],
        creds["AWS_SESSION_TOKEN"],
    )
    assert s3.get_object(Bucket=BUCKET, Key=OBJECT_KEY)["Body"].read() == OBJECT_BODY
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == [OBJECT_KEY]
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket=BUCKET, Key="runs/r2.json", Body=b"{}")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    without_session = _aws_client(
        "s3", hub.moto.endpoint_url, creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"]
    )
    with pytest.raises(ClientError):  # the session token is part of the credential
        without_session.get_object(Bucket=BUCKET, Key=OBJECT_KEY)


# --------------------------------------------------------------------------------------------------
# leases on the real server, database users on the real databases
# --------------------------------------------------------------------------------------------------
def lease_ids(hub: Hub, prefix: str) -> set[str]:
    """The ids of the live leases under ``prefix`` (``LIST sys/leases/lookup/<prefix>/``, as root)."""
    answer = hub.vault.api("LIST", f"sys/leases/lookup/{prefix}/")
    if answer.status == 404:
        return set()
    assert answer.status == 200, answer.text
    return {f"{prefix}/{key}" for key in answer.data.get("keys", [])}


def lease(hub: Hub, lease_id: str) -> dict[str, Any] | None:
    """``sys/leases/lookup`` of one lease (``None``: revoked or expired, Vault knows it no more)."""
    answer = hub.vault.api("PUT", "sys/leases/lookup", {"lease_id": lease_id})
    if answer.status == 400 and "invalid lease" in answer.text:
        return None
    assert answer.status == 200, answer.text
    return answer.data


def epoch(timestamp: str) -> float:
    """An RFC 3339 time of Vault's (nanoseconds, ``Z`` or an offset) in seconds since the epoch."""
    from datetime import datetime

    head, _, rest = timestamp.partition(".")
    zone = rest.lstrip("0123456789") if rest else timestamp[19:]
    fraction = rest[: len(rest) - len(zone)] if rest else ""
    moment = datetime.fromisoformat(head + (zone.replace("Z", "+00:00") or "+00:00"))
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def postgres_role_exists(hub: Hub, username: str) -> bool:
    with hub.pg.connect() as admin:
        return admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone() is not None


def mariadb_user_exists(hub: Hub, username: str) -> bool:
    admin = hub.mysql.connect()
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM mysql.user WHERE User = %s", (username,))
            row = cursor.fetchone()
    finally:
        admin.close()
    return bool(row and row[0])


def mariadb_login_works(hub: Hub, username: str, password: str) -> bool:
    """A NEW connection as ``username``."""
    import pymysql

    try:
        hub.mysql.connect(username, password, "results").close()
    except pymysql.err.OperationalError:
        return False
    return True


class LeaseWatch:
    """Lookups (``sys/leases/lookup``) of the leases under ``prefix`` issued after it was made, each
    time :meth:`observe` is called: what the real server says about renewal and replacement."""

    def __init__(self, hub: Hub, prefix: str) -> None:
        self.hub, self.prefix = hub, prefix
        self.ignored = lease_ids(hub, prefix)
        #: lease id -> [(wall clock of the lookup, the lookup's data, or None once Vault knows it no more)]
        self.history: dict[str, list[tuple[float, dict[str, Any] | None]]] = {}

    def observe(self) -> None:
        now = time.time()  # one time per round: lookups of the same round count as simultaneous
        for lease_id in sorted((lease_ids(self.hub, self.prefix) - self.ignored) | set(self.history)):
            self.history.setdefault(lease_id, []).append((now, lease(self.hub, lease_id)))

    def issued(self) -> list[str]:
        """The watched leases, oldest first (by their ``issue_time``)."""
        first = {i: next(d for _, d in h if d is not None) for i, h in self.history.items() if any(d for _, d in h)}
        return sorted(first, key=lambda i: epoch(first[i]["issue_time"]))

    def assert_renewed_to_max_ttl_then_replaced_before_expiry(self, *, max_ttl: float) -> None:
        order = self.issued()
        assert len(order) == 2, self.history  # the first render's lease and its replacement
        old, new = (self.history[i] for i in order)
        seen = [d for _, d in old if d is not None]
        issued = epoch(seen[0]["issue_time"])
        expiries = [epoch(d["expire_time"]) for d in seen]
        # the SAME lease renewed: its expiry moved later, never beyond issue + max TTL, and reached it.
        # Near the cap OpenBao once reported an expiry 0.24 s before the previous lookup's (a fresh-clone
        # run: 20.19 s then 19.95 s after the first lookup; cause not traced, likely its rounding of a
        # capped TTL), so a step back within a second is not counted as the lease being replaced.
        assert all(later >= earlier - 1 for earlier, later in itertools.pairwise(expiries)), expiries
        assert expiries[-1] > expiries[0], expiries
        assert seen[-1]["last_renewal"] and seen[-1]["renewable"] is True, seen[-1]
        assert all(e <= issued + max_ttl + 1 for e in expiries), (issued, expiries)
        assert expiries[-1] >= issued + max_ttl - 1, (issued, expiries)
        # the new lease was issued before the old one expired, and the old one was still live then
        new_first = next((at, d) for at, d in new if d is not None)
        assert epoch(new_first[1]["issue_time"]) < expiries[-1], (new_first, expiries)
        live_then = [d for at, d in old if at >= new_first[0]]
        assert live_then and live_then[0] is not None, "the old lease was gone when the new one arrived"
        print(
            f"lease {order[0]}: issued, renewed to {expiries[-1] - issued:.1f} s (max TTL {max_ttl:g} s); "
            f"the next issued {expiries[-1] - epoch(new_first[1]['issue_time']):.1f} s before it expired"
        )


def run_job_workload(hub: Hub, recording: Recording, pod: Pod) -> subprocess.CompletedProcess[str]:
    """The example Job's container command exactly as the stack declares it, run with the programs
    interpreter (for the image's ``python``) and the container's declared environment. Replaced, as
    :mod:`rig.agent` replaces them for the agent: ``/vault/secrets`` by this Pod's directory, the
    in-cluster ``VAULT_ADDR`` by the test server's, and the mounted Vault CA (``VAULT_CACERT``, the
    ``vault-ca`` Secret's ``ca.crt``) by the test server's CA. ``VAULT_TLS_SERVER_NAME`` is kept: the
    workload must verify the server under the stack's name, as the agent does."""
    template = pod_template(recording, "Job", "notebook-validation-example")
    (container,) = template["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (mount,) = container["volumeMounts"]
    assert env["VAULT_CACERT"].startswith(mount["mountPath"] + "/")
    assert env["VAULT_ADDR"] == IN_CLUSTER_VAULT and env["VAULT_TLS_SERVER_NAME"] == TLS_SERVER_NAME
    env |= {"VAULT_ADDR": hub.vault.url, "VAULT_CACERT": hub.vault.ca_file}
    command = list(container["command"])
    assert command[0] == "python"
    argv = [
        str(pod.secrets / part.removeprefix("/vault/secrets/")) if part.startswith("/vault/secrets/") else part
        for part in command[1:]
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    return processes.run([programs_python(), *argv], cwd=REPO, env=base | env, capture_output=True, timeout=60)


# --------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------
def test_aws_stand_in_answers_like_the_aws_engine(hub: Hub) -> None:
    answer = hub.vault.ok("GET", "aws/creds/s3-readonly")
    assert sorted(answer.data) == ["access_key", "arn", "secret_key", "security_token"]
    assert answer.body["renewable"] is False and answer.body["lease_duration"] == 3600  # defaultStsTtl
    assert ":assumed-role/fedobs-notebook-s3-readonly/" in answer.data["arn"]


def recorded_job_annotations(recording: Recording) -> dict[str, str]:
    return dict(pod_template(recording, "Job", "notebook-validation-example")["metadata"]["annotations"])


def test_pre_populate_renders_private_files_the_consumer_uses(hub: Hub) -> None:
    # exactly what the hub stack puts on its example Job's Pod template: with the connection data of
    # the servers this module started (the hub's connections point at them, rig.local_hub)
    annotations = recorded_job_annotations(hub.recording)
    assert annotations == job_annotations(files=job_credentials(hub))
    pod = hub.pod("job")
    started = time.monotonic()
    result = run_agent(
        hub.config(annotations, pod, home=pod.home_init), pod.home_init.parent / "agent-init", timeout=30
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout
    assert elapsed < FAST_FAIL_SECONDS, elapsed
    rendered = sorted(p.name for p in pod.secrets.iterdir())
    assert rendered == ["aws", "db", "results", "token"]  # token: agent-inject-token, the agent's sink
    for path in pod.secrets.iterdir():
        expected = 0o640 if path.name == "token" else 0o400  # the file sink's default mode
        assert path.stat().st_mode & 0o777 == expected, (path.name, oct(path.stat().st_mode))

    db = credentials.load_dotenv(pod.secrets / "db")
    assert sorted(db) == ["DB_HOST", "DB_NAME", "DB_PASSWORD", "DB_PORT", "DB_USERNAME"]
    results = credentials.load_json(pod.secrets / "results")
    assert sorted(results) == ["database", "host", "password", "port", "username"]
    aws = credentials.load(pod.secrets / "aws")
    assert sorted(aws) == ["AWS_ACCESS_KEY_ID", "AWS_REGION", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    assert aws["AWS_REGION"] == "eu-central-1"
    assert credentials.load(pod.secrets / "results") == results and credentials.load(pod.secrets / "db") == db
    use_postgres(hub, db)
    use_mariadb(hub, results)
    use_s3(hub, aws)
    # ADR 017's notebook connects with the file alone: nothing but its values
    connect_with_files_alone(db, results)

    # pre-populate-only Pods have no agent sidecar, hence no preStop hook: agent-revoke-on-shutdown
    # does not apply, and the init container's token and leases outlive it (as with the injector)
    # until the workload revokes them (test_a_jobs_database_users_are_gone_within_a_minute_...)
    assert (
        pre_stop_revocation(
            annotations, vault_addr=hub.vault.url, ca_file=hub.vault.ca_file, secrets_dir=str(pod.secrets)
        )
        is None
    )
    assert hub.token_valid(pod.home_init)
    assert postgres_login_works(hub, db["DB_USERNAME"], db["DB_PASSWORD"])


def test_continuous_mode_renews_credentials_and_revokes_them_on_shutdown(hub: Hub) -> None:
    add_short_lived_role(hub)
    annotations = job_annotations(
        role=SHORT_K8S_ROLE,
        run_to_completion=False,
        files=(InjectedCredential("db", f"database/creds/{SHORT_ROLE}", "database", "dotenv", "DB_"),),
    )
    pod = hub.pod("deployment")
    db_file = pod.secrets / "db"

    # the injector's init container first (exit_after_auth), then the sidecar
    init = run_agent(
        hub.config(annotations, pod, home=pod.home_init, exit_after_auth_override=True),
        pod.home_init.parent / "agent-init",
        timeout=30,
    )
    assert init.returncode == 0, init.stdout
    init_user = credentials.load_dotenv(db_file)["DB_USERNAME"]

    pre_stop = pre_stop_revocation(
        annotations,
        vault_addr=hub.vault.url,
        ca_file=hub.vault.ca_file,
        secrets_dir=str(pod.secrets),
        home_dir=str(pod.home_sidecar),
    )
    assert pre_stop is not None and pre_stop.argv[1:3] == ("token", "revoke") and pre_stop.argv[-1] == "-self"
    audit_mark = hub.vault.audit_mark()
    seen: list[dict[str, str]] = []
    leases = LeaseWatch(hub, f"database/creds/{SHORT_ROLE}")  # the init container's lease is not watched
    with continuous_agent(
        hub.config(annotations, pod, home=pod.home_sidecar), pod.home_sidecar.parent / "agent", pre_stop=pre_stop
    ) as agent:
        deadline = time.monotonic() + 10
        while credentials.load_dotenv(db_file)["DB_USERNAME"] == init_user:  # the sidecar's own first render
            assert agent.running(), agent.log_text()
            assert time.monotonic() < deadline, "the sidecar rendered nothing within 10 s"
            time.sleep(0.2)
        first_render = time.monotonic()
        seen.append(credentials.load_dotenv(db_file))
        deadline = first_render + 45  # max_ttl 40 s: the new credentials must come before that
        while True:
            leases.observe()
            current = credentials.load_dotenv(db_file)
            use_postgres(hub, current)  # the consumer keeps working throughout
            if current["DB_USERNAME"] != seen[-1]["DB_USERNAME"]:
                break
            assert agent.running(), agent.log_text()
            assert time.monotonic() < deadline, f"no new credentials within 45 s:\n{agent.log_text()}"
            time.sleep(0.5)
        rotated_after = time.monotonic() - first_render
        leases.observe()
        seen.append(current)
        leases.assert_renewed_to_max_ttl_then_replaced_before_expiry(max_ttl=40)
        # rendered BEFORE the old ones expired: the old user still logs in (new connection)
        assert postgres_login_works(hub, seen[0]["DB_USERNAME"], seen[0]["DB_PASSWORD"])
        assert rotated_after < 40, rotated_after
        use_postgres(hub, seen[-1])
    requests = hub.vault.audit_requests(audit_mark)
    renewals = [r for r in requests if r.get("path") == "sys/leases/renew"]
    print(
        f"continuous: new credentials {rotated_after:.1f} s after the first render; "
        f"{len(renewals)} lease renewals by the agent"
    )

    assert agent.pre_stop_result is not None, "the preStop hook did not run"
    assert agent.pre_stop_result.returncode == 0, agent.pre_stop_result.stdout + agent.pre_stop_result.stderr
    assert "Revoked token" in agent.pre_stop_result.stdout
    assert [r["path"] for r in requests if r.get("path", "").startswith("auth/token/revoke")] == [
        "auth/token/revoke-self"
    ]
    assert not agent.running()
    assert not hub.token_valid(pod.home_sidecar)
    for creds in seen:  # the sidecar's token is revoked, and with it every lease it created
        assert not postgres_login_works(hub, creds["DB_USERNAME"], creds["DB_PASSWORD"]), creds["DB_USERNAME"]
    # the init container's token is not covered by agent-revoke-on-shutdown (injector behaviour)
    assert hub.token_valid(pod.home_init)


def failure_case_annotations(case: str, *, run_to_completion: bool = True) -> dict[str, str]:
    """The stack's own annotations (:func:`job_annotations`), with the one mistake ``case`` names."""
    if case == "wrong role":  # a role bound to another ServiceAccount
        return job_annotations(role="vso-observability", run_to_completion=run_to_completion)
    if case == "denied path":  # another consumer's secret, outside this role's policy
        gateway = InjectedCredential("gateway", "kv/data/otel/otel-gateway-tls", "database", "json")
        return job_annotations(files=(*JOB_CREDENTIALS, gateway), run_to_completion=run_to_completion)
    assert case == "wrong TLS server name"
    return job_annotations(tls_server_name="vault.elsewhere.svc", run_to_completion=run_to_completion)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong role", "service account name not authorized"),
        ("denied path", "permission denied"),
        ("wrong TLS server name", "x509: certificate is valid for"),
    ],
)
def test_failures_end_the_pre_populate_run_with_the_reason(hub: Hub, case: str, reason: str) -> None:
    """With only the annotations the stack puts on a Job (``PRE_POPULATE_FAILURE``), mapped as the
    injector maps them: a refused login or TLS name ends the agent at once (``exit_on_err``); a
    denied read ends it after the template engine's 12 retries, whose pauses the stack's
    ``auth-min/max-backoff`` bound (21.5 s: the run must take at least that, showing the retries
    happened as modelled). Every case ends within the documented bound."""
    annotations = failure_case_annotations(case)
    retrying = sum(template_retry_sleeps(annotations)) if case == "denied path" else 0.0
    deadline = JOB_AGENT_FAILS_WITHIN_SECONDS if case == "denied path" else FAST_FAIL_SECONDS
    pod = hub.pod(case.replace(" ", "-"))
    started = time.monotonic()
    try:
        result = run_agent(
            hub.config(annotations, pod, home=pod.home_init), pod.home_init.parent / "agent-init", timeout=deadline
        )
    except subprocess.TimeoutExpired as timed_out:
        tail = (timed_out.output or b"")[-2000:]
        pytest.fail(f"{case}: the agent still ran after {deadline:.1f} s:\n{tail!r}")
    elapsed = time.monotonic() - started
    print(f"{case}: exit {result.returncode} after {elapsed:.1f} s (template retry pauses {retrying} s)")
    assert result.returncode != 0, result.stdout
    assert reason in result.stdout, result.stdout
    assert retrying <= elapsed < deadline, (elapsed, result.stdout)  # (the timeout would have fired first)
    if case == "denied path":  # the pauses the agent logged are the modelled ones; then it gave up
        assert logged_retry_pauses(result.stdout) == list(template_retry_sleeps(annotations)), result.stdout
        assert "(exceeded maximum retries)" in result.stdout


GO_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def logged_retry_pauses(log: str) -> list[float]:
    """The pauses (seconds) in the agent's ``(retry attempt <n> after "<Go duration>")`` lines, in order."""
    pauses = []
    for number, (attempt, duration) in enumerate(re.findall(r'\(retry attempt (\d+) after "([^"]+)"\)', log), 1):
        assert int(attempt) == number, log
        parts = re.findall(r"([0-9.]+)(ms|s|m|h)", duration)  # Go's format: 500ms, 2s, 1m0s
        assert "".join(number + unit for number, unit in parts) == duration, duration
        pauses.append(sum(float(number) * GO_UNITS[unit] for number, unit in parts))
    return pauses


def test_a_long_running_pods_agent_keeps_retrying_a_refused_login(hub: Hub) -> None:
    """Pods with an agent sidecar get no ``PRE_POPULATE_FAILURE``: their init container has the
    injector's defaults, so a refused login is retried with a growing pause and the Pod waits in
    ``Init`` (docs/troubleshooting.md). Asserted on the real agent: still running after 5 s, having
    logged the reason at least twice."""
    annotations = failure_case_annotations("wrong role", run_to_completion=False)
    assert not {PREFIX + k for k in PRE_POPULATE_FAILURE} & set(annotations)
    pod = hub.pod("sidecar-wrong-role")
    config = hub.config(annotations, pod, home=pod.home_init, exit_after_auth_override=True)
    with continuous_agent(config, pod.home_init.parent / "agent-init") as agent:
        time.sleep(5)
        assert agent.running(), agent.log_text()
        log = agent.log_text()
    assert log.count("service account name not authorized") >= 2, log
    assert not any(pod.secrets.iterdir())


@pytest.mark.real
def test_a_role_arn_the_account_does_not_have_is_refused(hub: Hub) -> None:
    """The AWS proof can fail: AssumeRole of the declared ARN works only because the account has that
    role; a misspelt or undeclared ARN is refused as real AWS refuses it (AccessDenied)."""
    from botocore.exceptions import ClientError

    declared = hub.recording.one(AWS_TYPES[1]).inputs["roleArns"]
    assert declared == [ACCOUNT_ROLE_ARN]
    # as Vault's AWS engine calls STS: with its root user's keys (IAM authentication is on)
    user = hub.vault_aws_user
    sts = _aws_client("sts", hub.moto.endpoint_url, user["key"], user["secret"])
    for misspelt in (
        ACCOUNT_ROLE_ARN.replace("readonly", "read-only"),
        ACCOUNT_ROLE_ARN.replace("123456789012", "210987654321"),
        "arn:aws:iam::123456789012:role/fedobs-admin",
    ):
        with pytest.raises(ClientError, match="AccessDenied"):
            sts.assume_role(RoleArn=misspelt, RoleSessionName="vault-misspelt")
    assumed = sts.assume_role(RoleArn=declared[0], RoleSessionName="vault-declared")
    assert assumed["AssumedRoleUser"]["Arn"].startswith("arn:aws:sts::123456789012:assumed-role/fedobs-notebook")


DATABASE_LEASES = ("database/creds/readonly", "database/creds/results-readonly")
#: "Within a minute after the Job's workload exits".
GONE_WITHIN_SECONDS = 60.0


def test_a_jobs_database_users_are_gone_within_a_minute_after_its_workload_exits(hub: Hub) -> None:
    """Pre-populate-only has no sidecar to revoke anything: the stack's Job gets the agent's token
    (``agent-inject-token``) and its workload revokes it when done; Vault revokes the token's leases
    and the database engine drops the users, long before their 1 h TTL."""
    annotations = recorded_job_annotations(hub.recording)
    assert annotations[PREFIX + "agent-inject-token"] == "true"
    before = {prefix: lease_ids(hub, prefix) for prefix in DATABASE_LEASES}
    pod = hub.pod("job-revoked")
    result = run_agent(
        hub.config(annotations, pod, home=pod.home_init), pod.home_init.parent / "agent-init", timeout=30
    )
    assert result.returncode == 0, result.stdout
    # the token file is the agent's own auto-auth token (the one its sink also writes at home)
    token_file = pod.secrets / "token"
    assert token_file.read_text().strip() == (pod.home_init / ".vault-token").read_text().strip()
    leases = {prefix: lease_ids(hub, prefix) - before[prefix] for prefix in DATABASE_LEASES}
    assert all(len(new) == 1 for new in leases.values()), leases  # one credential each, from this agent
    db = credentials.load_dotenv(pod.secrets / "db")
    results = credentials.load_json(pod.secrets / "results")
    users = (db["DB_USERNAME"], results["username"])
    assert postgres_role_exists(hub, users[0]) and mariadb_user_exists(hub, users[1])
    use_postgres(hub, db)  # what a notebook does with them
    use_mariadb(hub, results)

    workload = run_job_workload(hub, hub.recording, pod)
    exited = time.monotonic()
    assert workload.returncode == 0, workload.stdout + workload.stderr
    assert "3 credential files loaded" in workload.stdout
    assert db["DB_PASSWORD"] not in workload.stdout + workload.stderr

    while True:
        remaining = [lease_id for ids in leases.values() for lease_id in ids if lease(hub, lease_id) is not None]
        present = [postgres_role_exists(hub, users[0]), mariadb_user_exists(hub, users[1])]
        if not remaining and not any(present):
            break
        assert time.monotonic() - exited < GONE_WITHIN_SECONDS, (
            f"a minute after the workload exited: leases {remaining}, users present {present}"
        )
        time.sleep(0.5)
    gone_after = time.monotonic() - exited
    print(f"job: leases revoked and database users dropped {gone_after:.1f} s after the workload exited")
    assert not hub.token_valid(pod.home_init)
    assert not postgres_login_works(hub, db["DB_USERNAME"], db["DB_PASSWORD"])
    assert not mariadb_login_works(hub, results["username"], results["password"])
