"""Workloads that get short-lived database and AWS credentials from the Vault Agent Injector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.agent_injector import (
    SECRETS_DIR,
    InjectedCredential,
    InjectorSettings,
    pod_template_metadata,
    token_volume,
)
from components.pod_security import PROGRAMS_UID, restricted_container, restricted_namespace, restricted_pod

TYPE_TOKEN = "fedobs:secrets:DynamicSecrets"


@dataclass(frozen=True)
class DynamicSecretsArgs:
    provider: k8s.Provider
    namespace: str
    service_account: str
    injector: InjectorSettings
    credentials: tuple[InjectedCredential, ...]
    vault_ca_cert: pulumi.Input[str]
    example_job: bool = True
    #: What the example Job waits for: the consumer's Vault role and the engines it reads.
    vault_ready: tuple[pulumi.Resource, ...] = ()


def example_job_spec(args: DynamicSecretsArgs) -> dict[str, Any]:
    """A Job that loads its injected credentials and proves they are there, printing no secret."""
    files = [f"{SECRETS_DIR}/{c.name}" for c in args.credentials]
    check = (
        "import sys, programs.credentials as c; loaded = [c.load(p) for p in sys.argv[1:]]; "
        "print(f'{len(loaded)} credential files loaded')"
    )
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
                "volumes": [token_volume()],
                "containers": [
                    {
                        "name": "validate",
                        "image": versions.PROGRAMS_IMAGE,
                        "command": ["python", "-c", check, *files],
                        # agent-run-as-same-user takes the agent's UID from the first container's own context
                        "securityContext": {
                            **restricted_container(),
                            "runAsUser": PROGRAMS_UID,
                            "runAsGroup": PROGRAMS_UID,
                        },
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"cpu": "500m", "memory": "256Mi"},
                        },
                    }
                ],
            },
        },
    }


class DynamicSecrets(pulumi.ComponentResource):
    """A workload namespace whose Pods get database/AWS credentials just in time.

    Guarantees: the namespace runs restricted Pods; its ServiceAccount is the one the consumer's
    Vault role is bound to (the role and its read-only policy come from the consumer declaration);
    the injector annotations are on the Pod template, never on the ServiceAccount; Jobs use
    pre-populate-only agents; tokens are revoked on shutdown.
    """

    def __init__(self, name: str, args: DynamicSecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        namespace = restricted_namespace(f"{name}-namespace", args.namespace, k8s_opts)
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
            string_data={"ca.crt": args.vault_ca_cert},
            opts=in_ns,
        )
        if args.example_job:
            k8s.batch.v1.Job(
                f"{name}-example-job",
                metadata={"name": f"{args.namespace}-example", "namespace": args.namespace},
                spec=example_job_spec(args),
                opts=pulumi.ResourceOptions.merge(
                    in_ns, pulumi.ResourceOptions(depends_on=[account, ca, *args.vault_ready])
                ),
            )
        self.register_outputs({"namespace": args.namespace, "service_account": args.service_account})
