"""Pod-template annotations for the Vault Agent Injector, and the templates its agent renders.

The injector reads its annotations from the **Pod** (for a Deployment, Job or CronJob: the Pod
template's ``metadata.annotations``), never from the ServiceAccount: :func:`pod_template_metadata`
is the only way this project produces them, and it returns Pod-template metadata, so they cannot
end up anywhere else.

Rendered files (``/vault/secrets/<name>``, mode 0400, owned by the workload's own user through
``agent-run-as-same-user``) come in two formats every consumer can read without evaluating them:
``dotenv`` (``KEY='value'`` lines, single-quoted) and ``json``. ``programs/credentials.py`` is the
loader; it parses, never executes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from components.vault_names import KUBERNETES_AUTH_MOUNT, in_cluster_address, in_cluster_host

PREFIX = "vault.hashicorp.com/"
SECRETS_DIR = "/vault/secrets"
#: Where ``tls-secret`` mounts the Vault CA Secret into the agent containers.
TLS_MOUNT = "/vault/tls"
#: Where ``agent-inject-token`` makes the agent write its own token (a second file sink beside
#: ``/home/vault/.vault-token``; vault-k8s ``agent-inject/agent/config.go``): the token whose leases
#: are the rendered credentials. A Job revokes it when done (``programs.credentials revoke-after``).
TOKEN_FILE = f"{SECRETS_DIR}/token"

Format = Literal["dotenv", "json"]
Kind = Literal["database", "aws"]

#: The fields of Vault's answer per engine, and the variable each becomes in a dotenv file.
FIELDS: dict[Kind, tuple[tuple[str, str], ...]] = {
    "database": (("username", "USERNAME"), ("password", "PASSWORD")),
    "aws": (
        ("access_key", "AWS_ACCESS_KEY_ID"),
        ("secret_key", "AWS_SECRET_ACCESS_KEY"),
        ("security_token", "AWS_SESSION_TOKEN"),
    ),
}


#: Where the credential is used, per engine: the connection data the stack knows (json key, dotenv
#: variable), written into the file beside Vault's answer so a consumer needs nothing else.
CONNECTION_FIELDS: dict[Kind, tuple[tuple[str, str], ...]] = {
    "database": (("host", "HOST"), ("port", "PORT"), ("database", "NAME")),
    "aws": (("region", "AWS_REGION"),),
}


@dataclass(frozen=True)
class InjectedCredential:
    """One credential file: ``/vault/secrets/<name>`` from Vault path ``path``, with the connection
    data (``CONNECTION_FIELDS`` of its kind, by json key) the consumer needs to use it."""

    name: str
    path: str
    kind: Kind
    format: Format = "dotenv"
    #: dotenv only: prefix of the variable names (``DB_`` gives ``DB_USERNAME``).
    env_prefix: str = ""
    connection: Mapping[str, str | int] = field(default_factory=dict)


#: How the agent of a run-to-completion workload (a Job's init container, the only agent it has) ends
#: on a failure: with a non-zero exit and the reason in its log, so that the Pod fails and the Job
#: reports it, instead of the injector's default of retrying until ``activeDeadlineSeconds``.
#: (vault-k8s v1.7.6 ``agent-inject/agent/``; the agent's side: docs/dynamic-secrets.md.)
#:
#: - ``agent-auto-auth-exit-on-err`` (``annotations.go:333``; default false, ``agent.go:39``): a
#:   refused login (wrong role or ServiceAccount), a TLS name mismatch or an unreachable Vault ends
#:   the agent at once; without it the login is retried forever (1 s doubling to 5 min).
#: - ``auth-min-backoff``/``auth-max-backoff`` (``annotations.go:307-313``, Go durations): with
#:   exit-on-err they never pause a login; the agent also uses them as the base and cap of its
#:   template retries (12, fixed: the injector writes no ``vault.retry``), so a read that keeps
#:   failing (a path outside the role's policy, a database error) ends after 0.5+1+10x2 = 21.5 s of
#:   pauses instead of about 304 s (250 ms doubling to 1 min). That is also how long a Job's start
#:   rides out a Vault that answers errors; a retried Pod (``backoffLimit``) gets the same again.
#:   OpenBao's agent wants min < max.
#: - ``template-config-exit-on-retry-failure`` (``annotations.go:283``): true is the injector's
#:   default already (``agent.go:36``, the chart's ``agentDefaults.templateConfig``); set here so that
#:   an injector deployed with another default cannot turn a failed render into an agent that keeps
#:   running with missing files.
#:
#: Long-running Pods (the agent as a sidecar) keep the injector's defaults: a sidecar that exits
#: restarts, and a Deployment's Pod waits in ``Init`` rather than failing.
PRE_POPULATE_FAILURE: Mapping[str, str] = {
    "agent-auto-auth-exit-on-err": "true",
    "auth-min-backoff": "500ms",
    "auth-max-backoff": "2s",
    "template-config-exit-on-retry-failure": "true",
}


#: A projected service-account token for audience ``vault`` (the roles require that audience);
#: the agent logs in with it instead of the Kubernetes API token.
TOKEN_VOLUME = "vault-token"


@dataclass(frozen=True)
class InjectorTarget:
    """Which Vault role the injected agent logs in to, and where that Vault is."""

    role: str
    vault_address: str = in_cluster_address()
    tls_server_name: str = in_cluster_host()
    #: A Secret in the workload's namespace holding the Vault CA as ``ca.crt``.
    ca_secret: str = "vault-ca"
    auth_path: str = f"auth/{KUBERNETES_AUTH_MOUNT}"


def token_volume() -> dict[str, object]:
    """The Pod volume the agent's login token comes from (``agent-service-account-token-volume-name``)."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "sources": [{"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 3600}}]
        },
    }


def render_template(credential: InjectedCredential) -> str:
    """The consul-template text the agent renders for one credential: Vault's fields, then the
    connection data as literals (values the config validators restrict to safe characters)."""
    opening = '{{- with secret "' + credential.path + '" -}}'
    static = [
        (key, variable, credential.connection[key])
        for key, variable in CONNECTION_FIELDS[credential.kind]
        if key in credential.connection
    ]
    if credential.format == "json":
        members = [f'"{key}": {{{{ .Data.{key} | toJSON }}}}' for key, _ in FIELDS[credential.kind]]
        members += [f"{json.dumps(key)}: {json.dumps(value)}" for key, _, value in static]
        return opening + "{" + ", ".join(members) + "}{{- end }}\n"
    prefix = credential.env_prefix
    lines = [f"{prefix}{variable}='{{{{ .Data.{key} }}}}'" for key, variable in FIELDS[credential.kind]]
    lines += [f"{prefix}{variable}='{value}'" for _, variable, value in static]
    return opening + "\n" + "\n".join(lines) + "\n{{- end }}\n"


def injector_annotations(
    settings: InjectorTarget, credentials: tuple[InjectedCredential, ...], *, run_to_completion: bool
) -> dict[str, str]:
    """Annotations for a Pod template. ``run_to_completion`` (Jobs, CronJobs): the agent only
    pre-populates and exits, because a sidecar would keep the Pod from finishing; its token goes to
    :data:`TOKEN_FILE` so that the workload can revoke it, and the credentials with it, when done;
    and it fails fast (:data:`PRE_POPULATE_FAILURE`)."""
    if not credentials:
        raise ValueError("a workload with injected credentials needs at least one credential")
    if run_to_completion and any(c.name == TOKEN_FILE.rsplit("/", 1)[1] for c in credentials):
        raise ValueError(f"a credential file may not be called 'token': {TOKEN_FILE} is the agent's token")
    annotations = {
        "agent-inject": "true",
        "role": settings.role,
        "auth-path": settings.auth_path,
        "service": settings.vault_address,
        "tls-secret": settings.ca_secret,
        "ca-cert": f"{TLS_MOUNT}/ca.crt",
        "tls-server-name": settings.tls_server_name,
        "agent-revoke-on-shutdown": "true",
        "agent-run-as-same-user": "true",
        "agent-pre-populate-only": "true" if run_to_completion else "false",
        # Jobs: the agent's token in /vault/secrets/token, for the workload to revoke when done
        # (agent-revoke-on-shutdown applies to sidecars only); sidecars revoke it themselves
        "agent-inject-token": "true" if run_to_completion else "false",
        "agent-service-account-token-volume-name": TOKEN_VOLUME,
        **(PRE_POPULATE_FAILURE if run_to_completion else {}),
    }
    for credential in credentials:
        annotations[f"agent-inject-secret-{credential.name}"] = credential.path
        annotations[f"agent-inject-template-{credential.name}"] = render_template(credential)
        annotations[f"agent-inject-perms-{credential.name}"] = "0400"
    return {PREFIX + key: value for key, value in annotations.items()}


def pod_template_metadata(
    settings: InjectorTarget,
    credentials: tuple[InjectedCredential, ...],
    *,
    run_to_completion: bool,
    labels: dict[str, str],
) -> dict[str, object]:
    """``spec.template.metadata`` of a workload whose Pods get these credentials."""
    return {
        "labels": dict(labels),
        "annotations": injector_annotations(settings, credentials, run_to_completion=run_to_completion),
    }
