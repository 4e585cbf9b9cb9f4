"""The Vault Agent Injector pattern as declared: annotations on the Pod template, never elsewhere."""

from __future__ import annotations

import re
from typing import Any

import pytest

from components.agent_injector import InjectedCredential, InjectorTarget, injector_annotations, render_template
from offline.engine import Recording

#: The injector's documented annotations (hashicorp/vault-k8s, agent/annotations.go), without the
#: per-secret suffix for the families that take one.
DOCUMENTED = {
    "agent-inject",
    "agent-inject-status",
    "agent-inject-containers",
    "agent-inject-default-template",
    "agent-inject-token",
    "agent-image",
    "agent-request-namespace",
    "agent-init-first",
    "agent-pre-populate",
    "agent-pre-populate-only",
    "agent-configmap",
    "agent-extra-secret",
    "agent-limits-cpu",
    "agent-limits-mem",
    "agent-limits-ephemeral",
    "agent-requests-cpu",
    "agent-requests-mem",
    "agent-requests-ephemeral",
    "agent-revoke-on-shutdown",
    "agent-revoke-grace",
    "namespace",
    "agent-run-as-user",
    "agent-run-as-group",
    "agent-run-as-same-user",
    "agent-share-process-namespace",
    "agent-set-security-context",
    "agent-service-account-token-volume-name",
    "service",
    "proxy-address",
    "tls-skip-verify",
    "tls-secret",
    "tls-server-name",
    "ca-cert",
    "ca-key",
    "client-cert",
    "client-key",
    "client-max-retries",
    "client-timeout",
    "go-max-procs",
    "log-level",
    "log-format",
    "role",
    "auth-type",
    "auth-path",
    "secret-volume-path",
    "preserve-secret-case",
    "agent-cache-enable",
    "agent-cache-use-auto-auth-token",
    "agent-cache-listener-port",
    "agent-cache-exit-on-err",
    "agent-copy-volume-mounts",
    "template-config-exit-on-retry-failure",
    "template-static-secret-render-interval",
    "template-max-connections-per-host",
    "agent-enable-quit",
    "auth-min-backoff",
    "auth-max-backoff",
    "agent-disable-idle-connections",
    "agent-disable-keep-alives",
    "agent-auto-auth-exit-on-err",  # v1.7.6 annotations.go:333-334
}
PER_SECRET = (
    "agent-inject-secret-",
    "agent-inject-template-",
    "agent-inject-file-",
    "agent-inject-perms-",
    "agent-inject-command-",
    "agent-inject-template-file-",
    "auth-config-",
)


def example_job(recording: Recording) -> dict[str, Any]:
    return next(
        o
        for o in recording.kubernetes_objects()
        if o["kind"] == "Job" and o["metadata"]["name"] == "notebook-validation-example"
    )


def test_every_annotation_is_one_the_injector_documents(hub: Recording) -> None:
    annotations = example_job(hub)["spec"]["template"]["metadata"]["annotations"]
    for key in annotations:
        assert key.startswith("vault.hashicorp.com/"), key
        name = key.removeprefix("vault.hashicorp.com/")
        assert name in DOCUMENTED or name.startswith(PER_SECRET), name


def test_example_job_annotations(hub: Recording) -> None:
    job = example_job(hub)
    annotations = {
        k.removeprefix("vault.hashicorp.com/"): v for k, v in job["spec"]["template"]["metadata"]["annotations"].items()
    }
    assert annotations["agent-inject"] == "true" and annotations["role"] == "notebook-validation"
    assert annotations["agent-pre-populate-only"] == "true"  # a Job: no sidecar that never exits
    assert annotations["agent-revoke-on-shutdown"] == "true"
    # pre-populate-only has no sidecar to revoke: the agent's token goes to /vault/secrets/token,
    # and the workload revokes it (and with it the credentials) when done
    assert annotations["agent-inject-token"] == "true"
    # a failed login ends the agent at once, a failed read after 12 retries paused 0.5 s doubling to
    # 2 s (docs/dynamic-secrets.md "When the agent fails"); values as vault-k8s parses them
    # (parseutil.ParseBool, time.ParseDuration: annotations.go:562-584, 856-889)
    assert annotations["agent-auto-auth-exit-on-err"] == "true"
    assert annotations["template-config-exit-on-retry-failure"] == "true"
    assert (annotations["auth-min-backoff"], annotations["auth-max-backoff"]) == ("500ms", "2s")
    assert annotations["service"] == "https://vault-active.vault.svc:8200"
    assert annotations["tls-server-name"] == "vault-active.vault.svc"
    assert annotations["tls-secret"] == "vault-ca" and annotations["ca-cert"] == "/vault/tls/ca.crt"
    assert annotations["agent-service-account-token-volume-name"] == "vault-token"
    secrets = {
        k.removeprefix("agent-inject-secret-"): v
        for k, v in annotations.items()
        if k.startswith("agent-inject-secret-")
    }
    assert secrets == {
        "db": "database/creds/readonly",
        "results": "database/creds/results-readonly",
        "aws": "aws/creds/s3-readonly",
    }
    for name in secrets:
        assert annotations[f"agent-inject-perms-{name}"] == "0400"
        assert f'secret "{secrets[name]}"' in annotations[f"agent-inject-template-{name}"]
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "vault-notebook-sa"
    assert pod["containers"][0]["securityContext"]["runAsUser"] == 65532  # agent-run-as-same-user reads it
    assert pod["volumes"] == [
        {
            "name": "vault-token",
            "projected": {
                "sources": [{"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 3600}}]
            },
        },
        {"name": "vault-ca", "secret": {"secretName": "vault-ca"}},
    ]
    container = pod["containers"][0]
    # the injector mounts tls-secret into its own containers only: the workload mounts the CA itself
    assert container["volumeMounts"] == [{"name": "vault-ca", "mountPath": "/vault/ca", "readOnly": True}]
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "VAULT_ADDR": annotations["service"],
        "VAULT_CACERT": "/vault/ca/ca.crt",
        "VAULT_TLS_SERVER_NAME": annotations["tls-server-name"],
    }
    # loads the files, then revokes the agent's token (argv[1]) and with it the credentials
    command = container["command"]
    assert command[:2] == ["python", "-c"] and "revoked_when_done(sys.argv[1])" in command[2]
    assert command[3] == "/vault/secrets/token"
    assert sorted(command[4:]) == sorted(f"/vault/secrets/{name}" for name in secrets)


def test_a_job_credential_may_not_be_called_token() -> None:
    token = InjectedCredential("token", "database/creds/readonly", "database")
    with pytest.raises(ValueError, match="may not be called 'token'"):
        injector_annotations(InjectorTarget(role="r"), (token,), run_to_completion=True)
    assert injector_annotations(InjectorTarget(role="r"), (token,), run_to_completion=False)


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_no_service_account_carries_injector_annotations(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    for account in (o for o in recording.kubernetes_objects() if o["kind"] == "ServiceAccount"):
        assert not any(k.startswith("vault.hashicorp.com/") for k in account["metadata"].get("annotations", {}))


def test_the_consumer_role_reads_exactly_its_credentials(hub: Recording) -> None:
    role = next(
        r
        for r in hub.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
        if r.inputs["roleName"] == "notebook-validation"
    )
    assert role.inputs["boundServiceAccountNames"] == ["vault-notebook-sa"]
    assert role.inputs["boundServiceAccountNamespaces"] == ["notebook-validation"]
    assert role.inputs["tokenTtl"] == 3600


def test_templates() -> None:
    dotenv = render_template(InjectedCredential("db", "database/creds/readonly", "database", "dotenv", "DB_"))
    assert dotenv == (
        '{{- with secret "database/creds/readonly" -}}\n'
        "DB_USERNAME='{{ .Data.username }}'\nDB_PASSWORD='{{ .Data.password }}'\n{{- end }}\n"
    )
    aws = render_template(InjectedCredential("aws", "aws/creds/s3", "aws", "dotenv"))
    assert re.findall(r"^(\w+)=", aws, re.M) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    assert render_template(InjectedCredential("r", "database/creds/r", "database", "json")) == (
        '{{- with secret "database/creds/r" -}}'
        '{"username": {{ .Data.username | toJSON }}, "password": {{ .Data.password | toJSON }}}{{- end }}\n'
    )


def test_every_file_carries_its_connection_data(hub: Recording) -> None:
    """ADR 017's variables: a consumer connects with the file alone (host, port, database name; the
    AWS region), taken from the declared connection that holds the role."""
    annotations = example_job(hub)["spec"]["template"]["metadata"]["annotations"]
    db = annotations["vault.hashicorp.com/agent-inject-template-db"]
    assert re.findall(r"^(\w+)='([^']*)'", db, re.M)[2:] == [
        ("DB_HOST", "telemetry-pg.data.svc.cluster.local"),
        ("DB_PORT", "5432"),
        ("DB_NAME", "telemetry"),
    ]
    results = annotations["vault.hashicorp.com/agent-inject-template-results"]
    assert '"host": "results-mysql.data.svc.cluster.local", "port": 3306, "database": "results"}' in results
    aws = annotations["vault.hashicorp.com/agent-inject-template-aws"]
    assert "AWS_REGION='eu-central-1'" in aws


def test_long_running_workloads_keep_the_agent_as_a_sidecar() -> None:
    settings = InjectorTarget(role="r", vault_address="https://v:8200", tls_server_name="v")
    credential = (InjectedCredential("db", "database/creds/r", "database"),)
    assert (
        injector_annotations(settings, credential, run_to_completion=False)[
            "vault.hashicorp.com/agent-pre-populate-only"
        ]
        == "false"
    )
    with pytest.raises(ValueError, match="at least one credential"):
        injector_annotations(settings, (), run_to_completion=True)
