"""HashiCorp Vault in HA Raft mode on one cluster, and the Vault provider that configures it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import pulumi_tls as tls
import pulumi_vault as vault

from components import versions
from components.pod_security import PROGRAMS_UID, restricted_container, restricted_namespace, restricted_pod
from components.vault_server_config import (
    API_PORT,
    HUB_CA_DIR,
    SERVER_CERTIFICATE_IP_ADDRESSES,
    TLS_DIR,
    AwsKmsSealSpec,
    TransitSealSpec,
    VaultServerSpec,
    render_server_hcl,
    server_certificate_dns_names,
)

TYPE_TOKEN = "fedobs:vault:Vault"
ADMIN_POLICY = "fedobs-admin"
ADMIN_AUTH_MOUNT = "userpass-pulumi"
ADMIN_USERNAME = "pulumi"
#: Where the bootstrap Job keeps the init result (unseal or recovery keys, never the root token).
INIT_STATE_SECRET = "vault-init"
#: Certificates renew at 2/3 of their lifetime (renewBefore = 1/3 of the duration).
SERVER_CERT_DURATION_HOURS = 2160
CA_VALIDITY_HOURS = 87600

#: The admin policy the auth path Pulumi uses gets: everything Pulumi declares, nothing else of
#: ``sys/`` than what those declarations need. Root-token operations stay out (no ``sudo`` on
#: ``sys/generate-root`` or ``sys/rekey``).
ADMIN_POLICY_HCL = """\
# fedobs-admin: what Pulumi needs to declare this Vault's configuration.
path "sys/mounts" { capabilities = ["read", "list"] }
path "sys/mounts/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/auth" { capabilities = ["read", "list"] }
path "sys/auth/*" { capabilities = ["create", "read", "update", "delete", "sudo"] }
path "sys/policies/acl" { capabilities = ["list"] }
path "sys/policies/acl/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/policy/*" { capabilities = ["create", "read", "update", "delete"] }
path "sys/audit" { capabilities = ["read", "sudo"] }
path "sys/audit/*" { capabilities = ["create", "read", "update", "delete", "sudo"] }
path "sys/storage/raft/autopilot/configuration" { capabilities = ["read", "update"] }
path "sys/storage/raft/configuration" { capabilities = ["read"] }
path "sys/storage/raft/autopilot/state" { capabilities = ["read"] }
path "sys/seal-status" { capabilities = ["read"] }
path "auth/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "kv/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "transit/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "database/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "aws/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "auth/token/create" { capabilities = ["create", "update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
"""


@dataclass(frozen=True)
class LoadBalancerAccess:
    allowed_source_ranges: tuple[str, ...]


@dataclass(frozen=True)
class OperatorAddress:
    address: str


@dataclass(frozen=True)
class TransitSealInput:
    """An edge's transit seal: the hub's address, TLS name, CA and this edge's token come from
    the hub stack. The token and CA reach the pod as Secrets, never through the HCL ConfigMap."""

    address: pulumi.Input[str]
    key_name: str
    tls_server_name: pulumi.Input[str]
    token: pulumi.Input[str]
    hub_ca_cert: pulumi.Input[str]


@dataclass(frozen=True)
class AwsKmsCredentials:
    """The AWS key pair an ``awskms`` seal uses, given to the pod as a Secret."""

    access_key_id: pulumi.Input[str]
    secret_access_key: pulumi.Input[str]


@dataclass(frozen=True)
class VaultArgs:
    provider: k8s.Provider
    server: VaultServerSpec
    access: LoadBalancerAccess | OperatorAddress
    cert_manager: pulumi.Resource
    storage_class: str = "linode-block-storage-retain"
    data_storage_size: str = "10Gi"
    audit_storage_size: str = "10Gi"
    injector_replicas: int = 2
    #: Set for an edge that auto-unseals through the hub (``server.seal`` stays None then).
    transit_seal: TransitSealInput | None = None
    aws_kms_credentials: AwsKmsCredentials | None = None
    key_shares: int = 5
    key_threshold: int = 3
    operator_pgp_keys: tuple[str, ...] = ()
    admin_credential_generation: int = 1
    #: Where the stack writes the Vault CA for the Vault provider (it reads CA files only).
    local_ca_dir: Path = Path(".fedobs")


def vault_chart_values(args: VaultArgs) -> dict[str, Any]:
    """The ``vault`` chart values (validated in tests against the chart's values.schema.json)."""
    spec = args.server
    env_secrets: list[dict[str, str]] = []
    # The chart's start command (vault.args) writes /tmp/storageconfig.hcl before exec'ing the server:
    # with readOnlyRootFilesystem it needs a writable /tmp (docs/testing.md, rung 5).
    volumes: list[dict[str, Any]] = [
        {"name": "vault-server-tls", "secret": {"secretName": "vault-server-tls"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "vault-server-tls", "mountPath": TLS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if isinstance(spec.seal, TransitSealSpec):
        env_secrets.append({"envName": "VAULT_TOKEN", "secretName": "vault-seal", "secretKey": "token"})
        volumes.append({"name": "hub-vault-ca", "secret": {"secretName": "hub-vault-ca"}})
        mounts.append({"name": "hub-vault-ca", "mountPath": HUB_CA_DIR, "readOnly": True})
    elif isinstance(spec.seal, AwsKmsSealSpec):
        env_secrets += [
            {"envName": "AWS_ACCESS_KEY_ID", "secretName": "vault-seal", "secretKey": "access-key-id"},
            {"envName": "AWS_SECRET_ACCESS_KEY", "secretName": "vault-seal", "secretKey": "secret-access-key"},
        ]
    server_labels = {
        "app.kubernetes.io/name": "vault",
        "app.kubernetes.io/instance": spec.release,
        "component": "server",
    }
    return {
        "global": {"enabled": True, "tlsDisable": False, "psp": {"enable": False}},
        "injector": {
            "enabled": True,
            "replicas": args.injector_replicas,
            "leaderElector": {"enabled": True},
            "image": {"repository": versions.VAULT_K8S_IMAGE, "tag": versions.VAULT_K8S_VERSION},
            "agentImage": {"repository": versions.VAULT_IMAGE, "tag": versions.VAULT_VERSION},
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "250m", "memory": "256Mi"}},
            "securityContext": {"container": restricted_container()},
        },
        "server": {
            "image": {"repository": versions.VAULT_IMAGE, "tag": versions.VAULT_VERSION},
            # OnDelete: a chart upgrade never restarts Vault pods by itself; docs/vault.md rolls
            # them one by one, standbys first, the active node last.
            "updateStrategyType": "OnDelete",
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "readinessProbe": {"enabled": True, "path": "/v1/sys/health?standbyok=true&sealedcode=204&uninitcode=204"},
            "extraEnvironmentVars": {
                "VAULT_CACERT": f"{TLS_DIR}/ca.crt",
                "VAULT_TLS_SERVER_NAME": spec.peer_hostname(0),
            },
            "extraSecretEnvironmentVars": env_secrets,
            "volumes": volumes,
            "volumeMounts": mounts,
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": server_labels}, "topologyKey": "kubernetes.io/hostname"}
                    ]
                }
            },
            "dataStorage": {
                "enabled": True,
                "size": args.data_storage_size,
                "storageClass": args.storage_class,
                "mountPath": "/vault/data",
                "accessMode": "ReadWriteOnce",
            },
            "auditStorage": {
                "enabled": True,
                "size": args.audit_storage_size,
                "storageClass": args.storage_class,
                "mountPath": "/vault/audit",
                "accessMode": "ReadWriteOnce",
            },
            # Raft data outlives the StatefulSet: deleting or scaling it never deletes a volume.
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "statefulSet": {
                "securityContext": {
                    "pod": {
                        "runAsNonRoot": True,
                        "runAsUser": 100,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "container": restricted_container(),
                }
            },
            "service": {"enabled": True, "type": "ClusterIP"},
            "ha": {
                "enabled": True,
                "replicas": spec.replicas,
                "raft": {"enabled": True, "setNodeId": True, "config": render_server_hcl(spec)},
                "disruptionBudget": {"enabled": True, "maxUnavailable": (spec.replicas - 1) // 2},
            },
        },
        "ui": {"enabled": True, "serviceType": "ClusterIP"},
        "serverTelemetry": {"serviceMonitor": {"enabled": False}},
    }


def _resolved_values(args: VaultArgs) -> pulumi.Input[dict[str, Any]]:
    """Chart values; a transit seal's hub address comes from the hub stack, so wait for it."""
    transit = args.transit_seal
    if transit is None:
        return vault_chart_values(args)

    def values(parts: list[str]) -> dict[str, Any]:
        seal = TransitSealSpec(address=parts[0], key_name=transit.key_name, tls_server_name=parts[1])
        return vault_chart_values(replace(args, server=replace(args.server, seal=seal)))

    return pulumi.Output.all(transit.address, transit.tls_server_name).apply(values)


def bootstrap_command(args: VaultArgs) -> list[str]:
    """The bootstrap Job's command line (programs/vault_bootstrap)."""
    spec = args.server
    command = [
        "python",
        "-m",
        "programs.vault_bootstrap",
        "--seal",
        "shamir" if spec.seal is None and args.transit_seal is None else "auto",
        "--key-shares",
        str(args.key_shares),
        "--key-threshold",
        str(args.key_threshold),
        "--ca-file",
        f"{TLS_DIR}/ca.crt",
        "--admin-mount",
        ADMIN_AUTH_MOUNT,
        "--admin-username",
        ADMIN_USERNAME,
        "--admin-password-file",
        "/fedobs/admin/password",
        # A new password in the mounted Secret (a new adminCredentialGeneration) is rotated to.
        "--rotate-admin-password",
        "true",
        "--admin-policy-name",
        ADMIN_POLICY,
        "--admin-policy-file",
        "/fedobs/policy/admin.hcl",
        "--state-kubernetes-secret",
        f"{spec.namespace}/{INIT_STATE_SECRET}",
    ]
    for i in range(spec.replicas):
        command += ["--peer", f"https://{spec.peer_hostname(i)}:{API_PORT}"]
    for key in args.operator_pgp_keys:
        command += ["--pgp-key", key]
    return command


def _write_ca_file(directory: Path, stack: str, pem: str) -> str:
    # The Vault provider reads its CA from a file only. Writing it locally is idempotent and
    # talks to no network, so it is safe in preview too.
    path = directory / stack / "vault-ca.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != pem:
        path.write_text(pem)
    return str(path.resolve())


class Vault(pulumi.ComponentResource):
    """A production-shaped Vault: HA Raft over TLS, bootstrapped once, configured by Pulumi.

    Guarantees: TLS on the API and cluster ports with a certificate whose SANs cover every name
    in use; Raft peers join only over verified TLS (``leader_tls_servername``); init happens once,
    in a Job, never during preview; the root token is revoked by that Job and Pulumi's own
    provider logs in through ``userpass-pulumi`` on every run; the release and its volumes are
    protected and retained.
    """

    address: pulumi.Output[str]
    ca_cert: pulumi.Output[str]
    vault_provider: vault.Provider

    def __init__(self, name: str, args: VaultArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        spec = args.server
        self.namespace = spec.namespace
        self.release_name = spec.release
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)

        namespace = restricted_namespace(
            f"{name}-namespace",
            spec.namespace,
            pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(protect=True)),
        )
        ns_opts = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[namespace]))

        # --- TLS: a per-cluster CA (kept in Pulumi state as a secret) issues via cert-manager.
        ca_key = tls.PrivateKey(
            f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=pulumi.ResourceOptions(parent=self)
        )
        ca_cert = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing"],
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"{spec.cluster_name} Vault CA", organization="fedobs"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.ca_cert = ca_cert.cert_pem
        k8s.core.v1.Secret(
            f"{name}-ca-secret",
            metadata={"name": "vault-ca", "namespace": spec.namespace},
            type="kubernetes.io/tls",
            string_data={"tls.crt": ca_cert.cert_pem, "tls.key": ca_key.private_key_pem},
            opts=ns_opts,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-issuer",
            api_version="cert-manager.io/v1",
            kind="Issuer",
            metadata={"name": "vault-ca", "namespace": spec.namespace},
            spec={"ca": {"secretName": "vault-ca"}},
            # cert-manager waits for the CA Secret by itself; only its CRDs must exist first.
            opts=pulumi.ResourceOptions.merge(ns_opts, pulumi.ResourceOptions(depends_on=[args.cert_manager])),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-server-certificate",
            api_version="cert-manager.io/v1",
            kind="Certificate",
            metadata={"name": "vault-server-tls", "namespace": spec.namespace},
            spec={
                "secretName": "vault-server-tls",
                "commonName": spec.peer_hostname(0),
                "dnsNames": server_certificate_dns_names(spec),
                "ipAddresses": list(SERVER_CERTIFICATE_IP_ADDRESSES),
                "duration": f"{SERVER_CERT_DURATION_HOURS}h",
                "renewBefore": f"{SERVER_CERT_DURATION_HOURS // 3}h",
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
                "issuerRef": {"name": "vault-ca", "kind": "Issuer", "group": "cert-manager.io"},
            },
            # Issued as soon as the Issuer is ready (cert-manager retries); the server Pods wait for
            # the Secret it writes before they start, so neither has to be created before the other.
            opts=pulumi.ResourceOptions.merge(ns_opts, pulumi.ResourceOptions(depends_on=[args.cert_manager])),
        )

        # --- seal material, as Secrets the chart turns into environment variables.
        seal_dependencies: list[pulumi.Resource] = []
        if args.transit_seal is not None:
            seal_dependencies.append(
                k8s.core.v1.Secret(
                    f"{name}-seal-secret",
                    metadata={"name": "vault-seal", "namespace": spec.namespace},
                    string_data={"token": pulumi.Output.secret(args.transit_seal.token)},
                    opts=ns_opts,
                )
            )
            seal_dependencies.append(
                k8s.core.v1.Secret(
                    f"{name}-hub-ca",
                    metadata={"name": "hub-vault-ca", "namespace": spec.namespace},
                    string_data={"ca.crt": args.transit_seal.hub_ca_cert},
                    opts=ns_opts,
                )
            )
        elif isinstance(spec.seal, AwsKmsSealSpec):
            if args.aws_kms_credentials is None:
                raise ValueError("an awskms seal needs aws_kms_credentials")
            seal_dependencies.append(
                k8s.core.v1.Secret(
                    f"{name}-seal-secret",
                    metadata={"name": "vault-seal", "namespace": spec.namespace},
                    string_data={
                        "access-key-id": pulumi.Output.secret(args.aws_kms_credentials.access_key_id),
                        "secret-access-key": pulumi.Output.secret(args.aws_kms_credentials.secret_access_key),
                    },
                    opts=ns_opts,
                )
            )

        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=spec.release,
            chart=versions.VAULT_CHART,
            version=versions.VAULT_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=versions.VAULT_CHART_REPO),
            namespace=spec.namespace,
            values=_resolved_values(args),
            opts=pulumi.ResourceOptions.merge(
                ns_opts,
                pulumi.ResourceOptions(
                    # Not after the Certificate: its Pods wait for the Secret cert-manager writes (see above).
                    protect=True,
                    depends_on=seal_dependencies,
                ),
            ),
        )

        # --- how Pulumi and the edges reach this Vault.
        if isinstance(args.access, LoadBalancerAccess):
            service_metadata: Any = {
                "name": f"{spec.release}-external",
                "namespace": spec.namespace,
                "annotations": {
                    # TLS passes through the NodeBalancer and terminates at Vault.
                    "service.beta.kubernetes.io/linode-loadbalancer-default-protocol": "tcp",
                    "external-dns.alpha.kubernetes.io/hostname": spec.external_hostname,
                },
            }
            service_spec: Any = {
                "type": "LoadBalancer",
                "selector": {
                    "app.kubernetes.io/name": "vault",
                    "app.kubernetes.io/instance": spec.release,
                    "component": "server",
                    "vault-active": "true",
                },
                "ports": [{"name": "https", "port": API_PORT, "targetPort": API_PORT, "protocol": "TCP"}],
                "loadBalancerSourceRanges": list(args.access.allowed_source_ranges),
                "externalTrafficPolicy": "Local",
            }
            k8s.core.v1.Service(
                f"{name}-external",
                metadata=service_metadata,
                spec=service_spec,
                opts=pulumi.ResourceOptions.merge(ns_opts, pulumi.ResourceOptions(depends_on=[self.release])),
            )
            self.address = pulumi.Output.from_input(f"https://{spec.external_hostname}:{API_PORT}")
        else:
            self.address = pulumi.Output.from_input(args.access.address)

        # --- bootstrap: init once, unseal, admin auth path, root token revoked.
        # A new generation is a new password: the next bootstrap Job logs in with the one it applied
        # last time and sets this one (programs/vault_bootstrap, "rotation").
        admin_password = random.RandomPassword(
            f"{name}-admin-password",
            length=40,
            special=False,
            keepers={"generation": str(args.admin_credential_generation)},
            opts=pulumi.ResourceOptions(parent=self),
        )
        admin_secret = k8s.core.v1.Secret(
            f"{name}-admin-credential",
            metadata={"name": "vault-admin-credential", "namespace": spec.namespace},
            string_data={"password": admin_password.result},
            opts=ns_opts,
        )
        policy_map = k8s.core.v1.ConfigMap(
            f"{name}-admin-policy",
            metadata={"name": "vault-admin-policy", "namespace": spec.namespace},
            data={"admin.hcl": ADMIN_POLICY_HCL},
            opts=ns_opts,
        )
        job = self._bootstrap_job(name, args, ns_opts, [self.release, admin_secret, policy_map], admin_password.result)

        ca_file = pulumi.Output.all(ca_cert.cert_pem, pulumi.get_stack()).apply(
            lambda parts: _write_ca_file(args.local_ca_dir, parts[1], parts[0])
        )
        self.vault_provider = vault.Provider(
            f"{name}-provider",
            address=self.address,
            ca_cert_file=ca_file,
            tls_server_name=spec.external_hostname,
            skip_child_token=False,
            # The provider logs in on every run, so no token that could expire is kept in state.
            auth_login_userpass=cast(
                Any,
                pulumi.Output.secret(
                    admin_password.result.apply(
                        lambda password: vault.ProviderAuthLoginUserpassArgs(
                            mount=ADMIN_AUTH_MOUNT, username=ADMIN_USERNAME, password=password
                        )
                    )
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[job]),
        )
        vault_opts = pulumi.ResourceOptions(parent=self, provider=self.vault_provider)
        vault.RaftAutopilot(
            f"{name}-autopilot",
            cleanup_dead_servers=True,
            dead_server_last_contact_threshold="10m",
            last_contact_threshold="10s",
            max_trailing_logs=1000,
            min_quorum=spec.replicas,
            server_stabilization_time="10s",
            opts=vault_opts,
        )
        vault.Audit(
            f"{name}-audit",
            type="file",
            path="file",
            description="Every request and response, HMAC'd, on the audit volume",
            options={"file_path": "/vault/audit/audit.log", "mode": "0600"},
            opts=vault_opts,
        )
        self.register_outputs(
            {
                "address": self.address,
                "ca_cert": self.ca_cert,
                "namespace": spec.namespace,
                "chart_version": versions.VAULT_CHART_VERSION,
            }
        )

    def _bootstrap_job(
        self,
        name: str,
        args: VaultArgs,
        ns_opts: pulumi.ResourceOptions,
        depends_on: list[pulumi.Resource],
        admin_password: pulumi.Output[str],
    ) -> k8s.batch.v1.Job:
        spec = args.server
        account = k8s.core.v1.ServiceAccount(
            f"{name}-bootstrap-sa",
            metadata={"name": "vault-bootstrap", "namespace": spec.namespace},
            automount_service_account_token=True,
            opts=ns_opts,
        )
        rules: Any = [
            # create cannot be limited by name in RBAC; get/update are limited to the state Secret.
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [INIT_STATE_SECRET],
                "verbs": ["get", "update"],
            },
        ]
        role = k8s.rbac.v1.Role(
            f"{name}-bootstrap-role",
            metadata={"name": "vault-bootstrap", "namespace": spec.namespace},
            rules=rules,
            opts=ns_opts,
        )
        subjects: Any = [{"kind": "ServiceAccount", "name": "vault-bootstrap", "namespace": spec.namespace}]
        binding = k8s.rbac.v1.RoleBinding(
            f"{name}-bootstrap-binding",
            metadata={"name": "vault-bootstrap", "namespace": spec.namespace},
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": "vault-bootstrap"},
            subjects=subjects,
            opts=ns_opts,
        )
        command = bootstrap_command(args)
        # A new Job (new name) whenever what it does or the admin password changes; an unchanged
        # one is not re-run. Only a digest of the password shows in the name.
        job_name = pulumi.Output.unsecret(
            admin_password.apply(
                lambda password: (
                    "vault-bootstrap-"
                    + hashlib.sha256(json.dumps([command, ADMIN_POLICY_HCL, password]).encode()).hexdigest()[:10]
                )
            )
        )
        job_spec: Any = {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 900,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "vault-bootstrap"}},
                "spec": {
                    "serviceAccountName": "vault-bootstrap",
                    "restartPolicy": "Never",
                    # fsGroup: the kubelet makes the 0440 credential files group-readable by the program
                    "securityContext": {**restricted_pod(), "fsGroup": PROGRAMS_UID},
                    "containers": [
                        {
                            "name": "bootstrap",
                            "image": versions.PROGRAMS_IMAGE,
                            "command": command,
                            "securityContext": restricted_container(),
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"cpu": "200m", "memory": "128Mi"},
                            },
                            "volumeMounts": [
                                {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
                                {"name": "admin", "mountPath": "/fedobs/admin", "readOnly": True},
                                {"name": "policy", "mountPath": "/fedobs/policy", "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "tls",
                            "secret": {
                                "secretName": "vault-server-tls",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            },
                        },
                        {"name": "admin", "secret": {"secretName": "vault-admin-credential", "defaultMode": 0o440}},
                        {"name": "policy", "configMap": {"name": "vault-admin-policy"}},
                    ],
                },
            },
        }
        return k8s.batch.v1.Job(
            f"{name}-bootstrap",
            metadata={"name": job_name, "namespace": spec.namespace},
            spec=job_spec,
            opts=pulumi.ResourceOptions.merge(
                ns_opts, pulumi.ResourceOptions(depends_on=[*depends_on, account, role, binding])
            ),
        )
