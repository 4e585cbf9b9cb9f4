"""The NotebookValidationJob path against real peers: VSO's identity on a real OpenBao, the Secrets it
would write, and a notebook run with exactly its Pod's environment on real PostgreSQL, MariaDB and
S3 on moto.

The hub is ``tests/real/test_vault_agent.py``'s module fixture (the hub's Vault configuration and
Kubernetes auth roles applied to a real TLS OpenBao whose Kubernetes auth asks the Kubernetes API
stand-in; real databases; the AWS answer from one real AssumeRole on moto with IAM auth on). VSO
itself cannot run here: it logs in as ``notebook-validation/vso-auth`` with a token that API minted
(audience ``vault``, ``KUBERNETES_LOGIN``), reads each VaultDynamicSecret's ``<mount>/<path>``, renews
as VSO does (``sys/leases/renew`` with the lease's duration as increment), and its Secret data is
rendered from the stack's templates by ``rig.vso_secret`` (VSO's template subset, from its source).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from components.vso import KUBERNETES_LOGIN, SERVICE_ACCOUNT, role_name
from rig.hub_edge import k8s_object
from rig.kube_api import service_account_username
from rig.openbao import api
from rig.vso_secret import pod_environment, pod_files, secret_data
from tests.real import test_vault_agent as agent_tests

pytestmark = pytest.mark.real

hub = agent_tests.hub  # the same fixture (module scope: one hub for this module)

NAMESPACE = agent_tests.NAMESPACE
TR_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
CONSUMER = Path(__file__).resolve().parents[1] / "support" / "notebook_consumer.py"
#: ADR 017's variables, and the same for the results database under its declared prefix.
DB_VARIABLES = ("USERNAME", "PASSWORD", "HOST", "PORT", "NAME")
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")


def vso_login(hub: agent_tests.Hub, service_account: str = SERVICE_ACCOUNT) -> tuple[int, dict[str, Any]]:
    jwt = hub.kube.mint_service_account_token(NAMESPACE, service_account, audiences=KUBERNETES_LOGIN["audiences"])
    answer = api(
        hub.vault.url,
        "POST",
        "auth/kubernetes/login",
        body={"role": role_name(NAMESPACE), "jwt": jwt},
        ca_file=hub.vault.ca_file,
    )
    return answer.status, answer.body


def as_vso(hub: agent_tests.Hub, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return api(hub.vault.url, method, path, token=token, body=body, ca_file=hub.vault.ca_file)


def declared(hub: agent_tests.Hub) -> list[dict[str, Any]]:
    """The hub plan's VaultDynamicSecrets in the consumer's namespace."""
    found = [
        o
        for o in hub.recording.kubernetes_objects()
        if o["kind"] == "VaultDynamicSecret" and o["metadata"]["namespace"] == NAMESPACE
    ]
    assert len(found) == 3
    return found


def test_vso_logs_in_reads_exactly_the_declared_credentials_and_renews(hub: agent_tests.Hub) -> None:
    hub.kube.clear_log()
    status, body = vso_login(hub)
    assert status == 200, body
    auth = body["auth"]
    assert sorted(auth["policies"]) == ["default", role_name(NAMESPACE)]
    assert hub.kube.count("POST", TR_PATH, status=201) == 1  # Vault asked the Kubernetes API
    assert auth["lease_duration"] == 3600  # the consumer's tokenTtl
    token = auth["client_token"]
    # only VSO's account of the namespace may log in to that role (not the notebook's own account)
    other, refused = vso_login(hub, "notebook-runner")
    assert other == 403, refused

    for vds in declared(hub):
        spec = vds["spec"]
        answer = as_vso(hub, token, "GET", f"{spec['mount']}/{spec['path']}")
        assert answer.status == 200, (spec["path"], answer.text)
        if spec["mount"] == "database":
            assert answer.body["renewable"] is True
            lease_id, duration = answer.body["lease_id"], answer.body["lease_duration"]
            renewed = as_vso(hub, token, "PUT", "sys/leases/renew", {"lease_id": lease_id, "increment": duration})
            assert renewed.status == 200, renewed.text
            assert renewed.body["lease_id"] == lease_id and renewed.body["lease_duration"] == duration

    # nothing else: an undeclared database role (a real one on the same connection), the engine's
    # configuration, other leases' revocation, another consumer's way in
    agent_tests.add_short_lived_role(hub)
    for method, path, body in [
        ("GET", f"database/creds/{agent_tests.SHORT_ROLE}", None),
        ("GET", "database/roles/readonly", None),
        ("GET", "database/config/telemetry-pg", None),
        ("PUT", "sys/leases/revoke", {"lease_id": "database/creds/readonly/x"}),
        ("LIST", "sys/leases/lookup/database/creds/readonly/", None),
        ("POST", "auth/token/create", {}),
    ]:
        answer = as_vso(hub, token, method, path, body)
        assert answer.status == 403, (method, path, answer.status, answer.text)


def test_the_notebook_pod_environment_reaches_every_peer(hub: agent_tests.Hub) -> None:
    """The Secrets VSO would write (from the declared templates and Vault's real answers), the
    environment the operator's Pod would get from the declared CR, and a program using it alone."""
    status, body = vso_login(hub)
    assert status == 200, body
    token = body["auth"]["client_token"]
    secrets: dict[str, dict[str, str]] = {}
    for vds in declared(hub):
        spec = vds["spec"]
        answer = as_vso(hub, token, "GET", f"{spec['mount']}/{spec['path']}")
        assert answer.status == 200, answer.text
        secrets[spec["destination"]["name"]] = secret_data(spec, answer.data)

    job = k8s_object(hub.recording, "NotebookValidationJob", "telemetry-validation")
    env = pod_environment(job, secrets)
    expected = {f"DB_{v}" for v in DB_VARIABLES} | {f"RESULTS_DB_{v}" for v in DB_VARIABLES} | set(AWS_VARIABLES)
    credential_keys = {k for data in secrets.values() for k in data}
    assert credential_keys == expected  # nothing of Vault's own naming, no _raw
    assert env["DB_HOST"] == "127.0.0.1" and env["DB_PORT"] == str(hub.pg.port) and env["DB_NAME"] == "telemetry"
    assert env["RESULTS_DB_PORT"] == str(hub.mysql.port) and env["RESULTS_DB_NAME"] == "results"
    assert env["AWS_REGION"] == "eu-central-1"
    files = pod_files(job, secrets)  # the same values as files, for a notebook that re-reads them
    assert files["/var/run/secrets/fedobs/db/DB_PASSWORD"] == env["DB_PASSWORD"]

    run_env = {**env, "AWS_ENDPOINT_URL": hub.moto.endpoint_url}  # where S3 is: the one localisation
    result = subprocess.run(
        [sys.executable, str(CONSUMER), agent_tests.BUCKET, agent_tests.OBJECT_KEY],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["postgres"] == {"select": 1, "insert_refused": "InsufficientPrivilege"}
    assert outcome["mariadb"]["select"] == 1
    assert "INSERT command denied" in outcome["mariadb"]["insert_refused"]
    assert outcome["s3"] == {"get": agent_tests.OBJECT_BODY.decode(), "put_refused": "AccessDenied"}
    for value in (env["DB_PASSWORD"], env["RESULTS_DB_PASSWORD"], env["AWS_SECRET_ACCESS_KEY"]):
        assert value not in result.stdout + result.stderr


def test_the_database_users_end_with_vsos_token(hub: agent_tests.Hub) -> None:
    """What happens when VSO's token ends (at the latest the consumer's ``tokenMaxTtl``): Vault
    revokes every lease the token got, and the database engine drops the users."""
    status, body = vso_login(hub)
    assert status == 200, body
    token = body["auth"]["client_token"]
    pg = as_vso(hub, token, "GET", "database/creds/readonly").data["username"]
    mysql = as_vso(hub, token, "GET", "database/creds/results-readonly").data["username"]
    assert agent_tests.postgres_role_exists(hub, pg) and agent_tests.mariadb_user_exists(hub, mysql)
    assert as_vso(hub, token, "POST", "auth/token/revoke-self").status == 204
    deadline = time.monotonic() + 30
    while agent_tests.postgres_role_exists(hub, pg) or agent_tests.mariadb_user_exists(hub, mysql):
        assert time.monotonic() < deadline, "the users outlived VSO's token by 30 s"
        time.sleep(0.2)


def test_the_vso_identity_is_the_namespaces_own(hub: agent_tests.Hub) -> None:
    """The role is bound to exactly ``notebook-validation/vso-auth`` (audience ``vault``)."""
    role = hub.vault.ok("GET", f"auth/kubernetes/role/{role_name(NAMESPACE)}").data
    assert role["bound_service_account_names"] == [SERVICE_ACCOUNT]
    assert role["bound_service_account_namespaces"] == [NAMESPACE]
    assert role["audience"] == "vault"
    assert service_account_username(NAMESPACE, SERVICE_ACCOUNT) == f"system:serviceaccount:{NAMESPACE}:vso-auth"
