"""A NotebookValidationJob whose Pod gets short-lived database and AWS credentials from VSO.

The Jupyter Notebook Validator Operator (tosin2013/jupyter-notebook-validator-operator v1.0.8,
commit 2d4323d4) builds the validation Pod itself: ``spec.podConfig`` has ``serviceAccountName``,
``env``, ``envFrom``, ``credentials``, ``volumes`` and ``volumeMounts`` but no Pod annotations, and
``createValidationPod`` (internal/controller/notebookvalidationjob_controller.go) gives the Pod fixed
labels and no annotations, so the Vault Agent Injector cannot serve it (docs/dynamic-secrets.md).
Instead, per declared credential, a VSO ``VaultDynamicSecret`` keeps an Opaque Secret filled with
the credential and its connection data under the variable names of the agent's dotenv files
(``agent_injector.FIELDS``/``CONNECTION_FIELDS``, e.g. ``DB_USERNAME`` ... ``DB_NAME``, ``AWS_*`` with
``AWS_REGION``). The CR takes each Secret through ``podConfig.envFrom`` (the controller's
``buildEnvFromSources`` copies it to the container; the ``credentials`` sugar is left out because the
webhook rewrites it to the same) and mounts it read-only under :data:`CREDENTIALS_DIR` (files follow a
renewed Secret; environment variables do not).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

import pulumi
import pulumi_kubernetes as k8s
from pydantic import AfterValidator, Field

from components.agent_injector import CONNECTION_FIELDS, FIELDS, Kind
from components.kubernetes_auth import WorkloadRole
from components.settings import DnsLabel, RuleProblem, Settings, pattern_check
from components.vault_config import Consumer, CredentialRef, VaultConfigSettings
from components.vault_policies import credentials as credential_grants
from components.vso import (
    SERVICE_ACCOUNT as VSO_SERVICE_ACCOUNT,
)
from components.vso import (
    VAULT_AUTH,
    DynamicSync,
    auth_spec,
    connection_spec,
    dynamic_secret_spec,
    dynamic_vso_role,
)

TYPE_TOKEN = "fedobs:secrets:NotebookValidation"
API_VERSION = "mlops.mlops.dev/v1alpha1"
KIND = "NotebookValidationJob"
#: Where each credential's Secret is mounted in the validation container: ``<dir>/<name>/<VARIABLE>``.
CREDENTIALS_DIR = "/var/run/secrets/fedobs"

GitUrl = Annotated[
    str, AfterValidator(pattern_check(re.compile(r"^https://[A-Za-z0-9.-]+/\S+$"), "https://github.com/org/repo.git"))
]
NotebookPath = Annotated[
    str, AfterValidator(pattern_check(re.compile(r"^[A-Za-z0-9._/-]+\.ipynb$"), "notebooks/validate.ipynb"))
]
#: The CRD's ``spec.timeout`` pattern (``^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$``), one unit per part.
Duration = Annotated[str, AfterValidator(pattern_check(re.compile(r"^([0-9]+(ms|s|m|h))+$"), "30m"))]


class GitSourceSettings(Settings):
    """Where the notebook is: an HTTPS git URL, a ref and the notebook's path in the repository."""

    url: GitUrl
    ref: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._/-]+$")
    path: NotebookPath


class NotebookCredentialSettings(Settings):
    """One credential in the notebook's environment: ``envPrefix`` + the variables of its kind."""

    name: DnsLabel
    credential: CredentialRef
    env_prefix: str = Field(default="", pattern=r"^[A-Z0-9_]*$")


class NotebookJobSettings(Settings):
    """``fedobs:dynamicSecrets[i].notebookJob``: a NotebookValidationJob in the consumer's namespace."""

    name: DnsLabel
    image: str = Field(min_length=1, pattern=r"^\S+$")
    #: The validation Pod's ServiceAccount (it needs no Vault role: VSO reads the credentials).
    service_account: DnsLabel = "notebook-validation"
    notebook: GitSourceSettings
    timeout: Duration = "30m"
    credentials: tuple[NotebookCredentialSettings, ...] = Field(min_length=1)


def kind_of(credential: str) -> Kind:
    return "database" if credential.partition("/")[0] == "database" else "aws"


def variables(entry: NotebookCredentialSettings) -> list[str]:
    """The environment variables one credential gives the notebook (its Secret's keys)."""
    kind = kind_of(entry.credential)
    return [f"{entry.env_prefix}{v}" for _, v in (*FIELDS[kind], *CONNECTION_FIELDS[kind])]


def notebook_problems(at: str, job: NotebookJobSettings, consumer: Consumer, consumer_key: str) -> list[RuleProblem]:
    """Each credential is one of the consumer's; names and variables are distinct; the Pod's account
    is not VSO's."""
    problems = [
        RuleProblem(
            f"{at}.credentials[{j}].credential",
            f"'{entry.credential}' is not among the credentials of consumer '{consumer.name}'",
            (f"{at}.credentials[{j}]", f"{consumer_key}.credentials"),
        )
        for j, entry in enumerate(job.credentials)
        if entry.credential not in consumer.credentials
    ]
    seen_names: set[str] = set()
    seen_variables: dict[str, int] = {}
    for j, entry in enumerate(job.credentials):
        if entry.name in seen_names:
            problems.append(RuleProblem(f"{at}.credentials[{j}].name", f"'{entry.name}' is used twice", (at,)))
        seen_names.add(entry.name)
        clashes = [v for v in variables(entry) if v in seen_variables]
        if clashes:
            problems.append(
                RuleProblem(
                    f"{at}.credentials[{j}].envPrefix",
                    f"{', '.join(clashes)} also set by credentials[{seen_variables[clashes[0]]}]: "
                    "give a distinct envPrefix",
                    (at,),
                )
            )
        seen_variables.update((v, j) for v in variables(entry) if v not in seen_variables)
    if job.service_account in (VSO_SERVICE_ACCOUNT, "default"):
        problems.append(
            RuleProblem(
                f"{at}.serviceAccount",
                f"'{job.service_account}' is VSO's login account or the namespace's default one; give the notebook's "
                "Pod an account of its own",
                (at,),
            )
        )
    if job.service_account == consumer.service_account:
        problems.append(
            RuleProblem(
                f"{at}.serviceAccount",
                f"'{consumer.service_account}' is the consumer's Vault identity ({consumer_key}.serviceAccount); "
                "the notebook gets its credentials from VSO and runs as an account Vault does not know",
                (at, consumer_key),
            )
        )
    return problems


def secret_templates(entry: NotebookCredentialSettings, vault_config: VaultConfigSettings) -> dict[str, str]:
    """Secret key -> VSO template: Vault's fields from ``.Secrets``, the connection data as literal
    text (values the config validators restrict to host names, ports, names and region ids)."""
    engine, _, role = entry.credential.partition("/")
    kind = kind_of(entry.credential)
    connection = vault_config.connection_data(engine, role)
    templates = {f"{entry.env_prefix}{variable}": f"{{{{ .Secrets.{key} }}}}" for key, variable in FIELDS[kind]}
    templates |= {
        f"{entry.env_prefix}{variable}": str(connection[key])
        for key, variable in CONNECTION_FIELDS[kind]
        if key in connection
    }
    return templates


def secret_name(job: NotebookJobSettings, entry: NotebookCredentialSettings) -> str:
    return f"{job.name}-{entry.name}"


def dynamic_syncs(
    namespace: str, job: NotebookJobSettings, vault_config: VaultConfigSettings
) -> tuple[DynamicSync, ...]:
    """One VaultDynamicSecret per declared credential of the job."""
    syncs = []
    for entry in job.credentials:
        engine, _, role = entry.credential.partition("/")
        syncs.append(
            DynamicSync(
                namespace=namespace,
                secret_name=secret_name(job, entry),
                mount=vault_config.engine_path(engine),
                path=f"creds/{role}",
                templates=secret_templates(entry, vault_config),
            )
        )
    return tuple(syncs)


def notebook_vso_role(consumer: Consumer, job: NotebookJobSettings, vault_config: VaultConfigSettings) -> WorkloadRole:
    """VSO's role in the consumer's namespace: exactly the job's credentials, nothing else."""
    grants = [
        g
        for engine, _, role in (entry.credential.partition("/") for entry in job.credentials)
        for g in credential_grants(vault_config.engine_path(engine), role)
    ]
    return dynamic_vso_role(
        consumer.namespace, grants, token_ttl=consumer.token_ttl, token_max_ttl=consumer.token_max_ttl
    )


def notebook_job_manifest(namespace: str, job: NotebookJobSettings) -> dict[str, Any]:
    """The NotebookValidationJob (checked against the operator's CRD in the tests)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": job.name, "namespace": namespace},
        "spec": {
            "notebook": {"git": {"url": job.notebook.url, "ref": job.notebook.ref}, "path": job.notebook.path},
            "timeout": job.timeout,
            "podConfig": {
                "containerImage": job.image,
                "serviceAccountName": job.service_account,
                "envFrom": [{"secretRef": {"name": secret_name(job, e)}} for e in job.credentials],
                "volumes": [
                    {"name": f"credentials-{e.name}", "secret": {"secretName": secret_name(job, e)}}
                    for e in job.credentials
                ],
                "volumeMounts": [
                    {"name": f"credentials-{e.name}", "mountPath": f"{CREDENTIALS_DIR}/{e.name}", "readOnly": True}
                    for e in job.credentials
                ],
                "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
            },
        },
    }


class NotebookValidation(pulumi.ComponentResource):
    """A NotebookValidationJob and the VSO objects that deliver its credentials.

    Guarantees: in the consumer's namespace, VSO's ``vso-auth`` account logs in (its own VaultAuth and
    VaultConnection, TLS verified with the Vault CA) to a role that may read exactly the job's declared
    credentials; one VaultDynamicSecret per credential keeps a Secret holding only the credential and
    its connection data; the job's Pod takes those Secrets as environment and read-only files and runs
    as an account of its own (no Vault identity, no token mounted).
    """

    def __init__(
        self,
        name: str,
        job: NotebookJobSettings,
        *,
        namespace: str,
        vault_config: VaultConfigSettings,
        depends_on: Sequence[pulumi.Resource],
        job_depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``depends_on``: the consumer's DynamicSecrets (namespace, Vault CA Secret ``vault-ca``) and VSO (its CRDs).
        ``job_depends_on``: what the job waits for besides (the Vault roles and engines)."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=list(depends_on))
        accounts = [
            k8s.core.v1.ServiceAccount(
                f"{name}-{account}-sa",
                metadata={"name": account, "namespace": namespace},
                automount_service_account_token=False,
                opts=in_ns,
            )
            for account in (VSO_SERVICE_ACCOUNT, job.service_account)
        ]
        custom = [
            self._custom(f"{name}-connection", "VaultConnection", namespace, "vault", connection_spec(), in_ns),
            self._custom(
                f"{name}-auth", "VaultAuth", namespace, VAULT_AUTH, auth_spec(namespace, global_auth=False), in_ns
            ),
        ]
        for sync in dynamic_syncs(namespace, job, vault_config):
            custom.append(
                self._custom(
                    f"{name}-{sync.secret_name}",
                    "VaultDynamicSecret",
                    namespace,
                    sync.secret_name,
                    dynamic_secret_spec(sync),
                    in_ns,
                )
            )
        manifest = notebook_job_manifest(namespace, job)
        k8s.apiextensions.CustomResource(
            f"{name}-job",
            api_version=API_VERSION,
            kind=KIND,
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*depends_on, *accounts, *custom, *job_depends_on]),
        )
        self.register_outputs({"namespace": namespace, "job": job.name})

    @staticmethod
    def _custom(
        resource: str, kind: str, namespace: str, object_name: str, spec: dict[str, Any], opts: pulumi.ResourceOptions
    ) -> k8s.apiextensions.CustomResource:
        return k8s.apiextensions.CustomResource(
            resource,
            api_version="secrets.hashicorp.com/v1beta1",
            kind=kind,
            metadata={"name": object_name, "namespace": namespace},
            spec=spec,
            opts=opts,
        )
