"""Workloads that get short-lived database and AWS credentials: Pods the stack or the user defines
through the Vault Agent Injector, a NotebookValidationJob through VSO (components/notebook_validation.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field, model_validator

from components.agent_injector import (
    SECRETS_DIR,
    TOKEN_FILE,
    Format,
    InjectedCredential,
    InjectorTarget,
    Kind,
    pod_template_metadata,
    token_volume,
)
from components.kubernetes_auth import WorkloadRole
from components.notebook_validation import (
    NotebookJobSettings,
    notebook_problems,
    notebook_vso_role,
)
from components.pod_security import (
    PROGRAMS_UID,
    baseline_namespace,
    restricted_container,
    restricted_namespace,
    restricted_pod,
)
from components.settings import CONFIG_NAMESPACE, DnsLabel, RuleProblem, Settings
from components.vault_config import Consumer, CredentialRef, VaultConfigSettings

TYPE_TOKEN = "fedobs:secrets:DynamicSecrets"


class InjectedFileSettings(Settings):
    """One file the Vault Agent renders into the workload's Pods (``/vault/secrets/<name>``)."""

    name: DnsLabel
    credential: CredentialRef
    format: Format = "dotenv"
    env_prefix: str = Field(default="", pattern=r"^[A-Z0-9_]*$")


class DynamicWorkloadSettings(Settings):
    """``fedobs:dynamicSecrets[i]``: a consumer's workloads get its credentials just in time through
    the Agent Injector."""

    consumer: DnsLabel
    example_job: bool = True
    files: tuple[InjectedFileSettings, ...] = ()
    #: A NotebookValidationJob whose Pod gets its credentials from VSO (the injector cannot reach it).
    notebook_job: NotebookJobSettings | None = None

    @model_validator(mode="after")
    def _something_to_deliver(self) -> DynamicWorkloadSettings:
        if not self.files and self.notebook_job is None:
            raise ValueError("declare files (Vault Agent Injector) or a notebookJob (VSO), or both")
        if self.example_job and not self.files:
            raise ValueError("exampleJob needs files: the example Job reads the injected files")
        return self


def dynamic_secret_problems(
    workloads: tuple[DynamicWorkloadSettings, ...], vault_config: VaultConfigSettings, sync_namespaces: set[str]
) -> list[RuleProblem]:
    """An injected file or notebook credential names a declared consumer and one of that consumer's
    credentials; a consumer's namespace (which this component creates) is not also a VSO sync target
    (which ``VaultSecretsOperator`` creates)."""
    problems: list[RuleProblem] = []
    names_read = tuple(f"vaultConfig.consumers[{k}].name" for k in range(len(vault_config.consumers)))
    for i, workload in enumerate(workloads):
        consumer = vault_config.consumer(workload.consumer)
        if consumer is None:
            problems.append(
                RuleProblem(
                    f"dynamicSecrets[{i}].consumer",
                    f"'{workload.consumer}' is not in {CONFIG_NAMESPACE}:vaultConfig.consumers",
                    (f"dynamicSecrets[{i}].consumer", *names_read),
                )
            )
            continue
        index = vault_config.consumers.index(consumer)
        problems.extend(
            RuleProblem(
                f"dynamicSecrets[{i}].files[{j}].credential",
                f"'{file.credential}' is not among the credentials of consumer '{consumer.name}'",
                (f"dynamicSecrets[{i}].files[{j}]", f"vaultConfig.consumers[{index}].credentials", *names_read),
            )
            for j, file in enumerate(workload.files)
            if file.credential not in consumer.credentials
        )
        if workload.notebook_job is not None:
            problems += notebook_problems(
                f"dynamicSecrets[{i}].notebookJob", workload.notebook_job, consumer, f"vaultConfig.consumers[{index}]"
            )
        if consumer.namespace in sync_namespaces:
            problems.append(
                RuleProblem(
                    f"dynamicSecrets[{i}].consumer",
                    f"namespace '{consumer.namespace}' of consumer '{consumer.name}' is also a target of "
                    f"{CONFIG_NAMESPACE}:distribution.syncs or the collector: both would create it",
                    (f"dynamicSecrets[{i}].consumer", f"vaultConfig.consumers[{index}]", "distribution.syncs"),
                )
            )
    return problems


def notebook_vso_roles(
    workloads: tuple[DynamicWorkloadSettings, ...], vault_config: VaultConfigSettings
) -> list[WorkloadRole]:
    """VSO's role in each consumer namespace that runs a notebook job (config.py has checked that the
    consumer is declared)."""
    roles = []
    for workload in workloads:
        consumer = vault_config.consumer(workload.consumer)
        if workload.notebook_job is not None and consumer is not None:
            roles.append(notebook_vso_role(consumer, workload.notebook_job, vault_config))
    return roles


def injected_credentials(
    files: tuple[InjectedFileSettings, ...], vault_config: VaultConfigSettings
) -> tuple[InjectedCredential, ...]:
    """``database/readonly`` -> the file rendered from ``<database mount>/creds/readonly``."""
    credentials = []
    for file in files:
        engine, _, role = file.credential.partition("/")
        kind: Kind = "database" if engine == "database" else "aws"
        credentials.append(
            InjectedCredential(
                name=file.name,
                path=f"{vault_config.engine_path(engine)}/creds/{role}",
                kind=kind,
                format=file.format,
                env_prefix=file.env_prefix,
                connection=vault_config.connection_data(engine, role),
            )
        )
    return tuple(credentials)


@dataclass(frozen=True)
class WorkloadPlan:
    """The consumer's namespace and ServiceAccount, the role its agents log in to, their files."""

    namespace: str
    service_account: str
    injector: InjectorTarget
    credentials: tuple[InjectedCredential, ...]
    #: The programs image the example Job runs (``fedobs:programsImage``).
    image: str


#: Where the example Job's own container mounts the Vault CA Secret (the injector mounts
#: ``tls-secret`` into its agent containers only).
VAULT_CA_MOUNT = "/vault/ca"


#: The example Job's program: load every file (printing no secret), then revoke the agent's token
#: (argv[1]) and with it the credentials, whatever happened (``programs.credentials.revoked_when_done``).
EXAMPLE_CHECK = """import sys, programs.credentials as c
with c.revoked_when_done(sys.argv[1]):
    loaded = [c.load(p) for p in sys.argv[2:]]
    print(f'{len(loaded)} credential files loaded')
"""


def example_job_container(args: WorkloadPlan) -> dict[str, Any]:
    """The example Job's container: loads its injected credentials, then revokes them, so the
    database users are dropped when the Job is done rather than at the end of their TTL. It reaches
    Vault as the agent does (``VAULT_ADDR``, ``VAULT_CACERT``, ``VAULT_TLS_SERVER_NAME``)."""
    files = [f"{SECRETS_DIR}/{c.name}" for c in args.credentials]
    return {
        "name": "validate",
        "image": args.image,
        "command": ["python", "-c", EXAMPLE_CHECK, TOKEN_FILE, *files],
        "env": [
            {"name": "VAULT_ADDR", "value": args.injector.vault_address},
            {"name": "VAULT_CACERT", "value": f"{VAULT_CA_MOUNT}/ca.crt"},
            {"name": "VAULT_TLS_SERVER_NAME", "value": args.injector.tls_server_name},
        ],
        "volumeMounts": [{"name": "vault-ca", "mountPath": VAULT_CA_MOUNT, "readOnly": True}],
        # agent-run-as-same-user takes the agent's UID from the first container's own context
        "securityContext": {**restricted_container(), "runAsUser": PROGRAMS_UID, "runAsGroup": PROGRAMS_UID},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
    }


def example_job_spec(args: WorkloadPlan) -> dict[str, Any]:
    """A Job that loads its injected credentials and revokes them when done, printing no secret."""
    return {
        "backoffLimit": 1,
        "activeDeadlineSeconds": 600,
        "ttlSecondsAfterFinished": 3600,
        "template": {
            "metadata": pod_template_metadata(
                args.injector,
                args.credentials,
                run_to_completion=True,
                labels={"app.kubernetes.io/name": "notebook-validation-example"},
            ),
            "spec": {
                "serviceAccountName": args.service_account,
                "automountServiceAccountToken": False,
                "restartPolicy": "Never",
                "securityContext": restricted_pod(),
                "volumes": [token_volume(), {"name": "vault-ca", "secret": {"secretName": args.injector.ca_secret}}],
                "containers": [example_job_container(args)],
            },
        },
    }


class DynamicSecrets(pulumi.ComponentResource):
    """A workload namespace whose Pods get database/AWS credentials just in time.

    Guarantees: the namespace runs restricted Pods; its ServiceAccount is the one the consumer's
    Vault role is bound to (the role and its read-only policy come from the consumer declaration);
    the injector annotations are on the Pod template, never on the ServiceAccount; Jobs use
    pre-populate-only agents that end the Pod with the reason when they cannot log in or render
    (``agent_injector.PRE_POPULATE_FAILURE``); tokens are revoked on shutdown.
    """

    def __init__(
        self,
        name: str,
        settings: DynamicWorkloadSettings,
        *,
        consumer: Consumer,
        vault_config: VaultConfigSettings,
        vault_ca_cert: pulumi.Input[str],
        image: str,
        vault_ready: tuple[pulumi.Resource, ...] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``image``: the programs image (``fedobs:programsImage``). The Kubernetes provider comes
        through ``opts``. Only the example Job waits for ``vault_ready`` (the consumer's Vault role and
        the engines it reads). A ``notebookJob`` is the stack's :class:`NotebookValidation`, after this."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        args = WorkloadPlan(
            namespace=consumer.namespace,
            service_account=consumer.service_account,
            injector=InjectorTarget(role=consumer.name),
            credentials=injected_credentials(settings.files, vault_config),
            image=image,
        )
        k8s_opts = pulumi.ResourceOptions(parent=self)
        if settings.notebook_job is None:
            namespace = restricted_namespace(f"{name}-namespace", args.namespace, k8s_opts)
        else:  # the operator's Pod meets "baseline" only (pod_security.baseline_namespace)
            namespace = baseline_namespace(f"{name}-namespace", args.namespace, k8s_opts)
        in_ns = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[namespace]))
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={"name": args.service_account, "namespace": args.namespace},
            automount_service_account_token=False,
            opts=in_ns,
        )
        ca = k8s.core.v1.Secret(
            f"{name}-vault-ca",
            metadata={"name": args.injector.ca_secret, "namespace": args.namespace},
            string_data={"ca.crt": vault_ca_cert},
            opts=in_ns,
        )
        #: What a Pod of this namespace needs before it is created: the namespace and its Vault CA
        #: Secret (not the example Job, which waits for the Vault roles).
        self.ready_for_pods: tuple[pulumi.Resource, ...] = (namespace, ca)
        if settings.example_job:
            k8s.batch.v1.Job(
                f"{name}-example-job",
                metadata={"name": f"{args.namespace}-example", "namespace": args.namespace},
                spec=example_job_spec(args),
                opts=pulumi.ResourceOptions.merge(
                    in_ns, pulumi.ResourceOptions(depends_on=[account, ca, *vault_ready])
                ),
            )
        self.register_outputs({"namespace": args.namespace, "service_account": args.service_account})
