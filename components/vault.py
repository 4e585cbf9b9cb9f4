"""HashiCorp Vault in HA Raft mode on one cluster, and the Vault provider that configures it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import pulumi_tls as tls
import pulumi_vault as vault
from pydantic import AfterValidator, Field, field_validator

from components import versions
from components.admin_identity import AdminDeployIdentitySettings, jwt_login
from components.cluster import Platform
from components.linode_exposure import NODEBALANCER_SOURCE_RANGES, load_balancer_annotations
from components.pod_security import SECRET_FILE_MODE, restricted_container, restricted_namespace, restricted_pod
from components.raft_snapshots import SnapshotSettings
from components.settings import (
    CONFIG_NAMESPACE,
    AccessKeyPair,
    Cidr,
    DnsName,
    Quantity,
    RuleProblem,
    Settings,
    quantity_bytes,
)
from components.vault_audit import AUDIT_DEVICES, rotation_sidecar
from components.vault_names import ADMIN_AUTH_MOUNT, ADMIN_POLICY, API_PORT, EXTERNAL_API_PORT
from components.vault_server_config import (
    HUB_CA_DIR,
    SERVER_CERTIFICATE_IP_ADDRESSES,
    TLS_DIR,
    AwsKmsSeal,
    ExternalListener,
    Seal,
    SealSpec,
    ShamirSeal,
    TransitSealSpec,
    VaultServerSpec,
    key_split,
    render_server_hcl,
    server_certificate_dns_names,
)

TYPE_TOKEN = "fedobs:vault:Vault"
ADMIN_USERNAME = "pulumi"
#: Where the bootstrap Job keeps the init result (unseal or recovery keys, never the root token).
INIT_STATE_SECRET = "vault-init"
#: The server Pods' readiness probe (the chart's ``server.readinessProbe.path``, an HTTPS GET by the
#: kubelet, Ready on 200-399: kubernetes/kubernetes pkg/probe/http/http.go). ``sys/health`` answers 200
#: for the active node and, with ``standbyok``, for an unsealed standby; 503 when sealed and 501 when not
#: initialised (Vault API docs "/sys/health"; openbao/openbao internal/http/sys_health.go). So a sealed or
#: uninitialised pod is NOT Ready and the PodDisruptionBudget counts it as disrupted: a drain cannot take
#: a second pod while one is sealed. Bootstrap and ``retry_join`` still reach such pods: they use the
#: per-pod names of the chart's ``vault-internal`` headless Service, which publishes not-ready addresses
#: (vault-helm v0.34.1 templates/server-headless-service.yaml, ``publishNotReadyAddresses: true``).
#: Proven on a real server: tests/real/test_pods.py, tests/real/test_vault_bootstrap.py.
READINESS_PROBE_PATH = "/v1/sys/health?standbyok=true"
#: The Linode Block Storage CSI driver's class that keeps a volume when its claim is deleted (LKE only):
#: Raft data and the audit trail outlive the StatefulSet (linode/linode-blockstorage-csi-driver
#: helm-chart/csi-driver/templates/linode-block-storage-retain.yaml: provisioner
#: ``linodebs.csi.linode.com``, ``reclaimPolicy: Retain``, ``allowVolumeExpansion: true``).
LINODE_STORAGE_CLASS = "linode-block-storage-retain"
#: Every class of that driver is named so (``linode-block-storage``, ``-retain``, ``-encrypted``,
#: ``-topology-aware``...): none exists outside Linode, so an existing-cluster stack may not name one.
LINODE_STORAGE_CLASS_PREFIX = "linode-block-storage"
#: Certificates renew at 2/3 of their lifetime (renewBefore = 1/3 of the duration).
SERVER_CERT_DURATION_HOURS = 2160
CA_VALIDITY_HOURS = 87600


#: How the shipped ``Pulumi.hub.yaml`` spells its ``operatorPgpKeys`` slots until the key holders' own keys
#: are put there (like the programs image's placeholder digest, a config error naming the key).
PGP_KEY_PLACEHOLDER_PREFIX = "placeholder-"
#: OpenPGP packet tag of a Public-Key packet (RFC 9580 section 5.5.1.1): what an exported public key starts with.
_PUBLIC_KEY_PACKET_TAG = 6


def _packet_tag(first: int) -> int | None:
    """The tag of an OpenPGP packet from its first octet (RFC 9580 section 4.2: bit 7 set; bit 6 set =
    the OpenPGP format, tag in bits 5-0; clear = the legacy format, tag in bits 5-2)."""
    if not first & 0x80:
        return None
    return first & 0x3F if first & 0x40 else (first >> 2) & 0x0F


def _operator_pgp_key(value: str) -> str:
    """A base64 OpenPGP public key (``gpg --export <key id> | base64 -w0``), as Vault's ``pgp_keys`` take it."""
    if value.startswith(PGP_KEY_PLACEHOLDER_PREFIX):
        raise ValueError(
            f"{value!r} is a placeholder shipped in Pulumi.<stack>.yaml: give a key holder's OpenPGP public key, "
            "base64 (gpg --export <key id> | base64 -w0)"
        )
    try:
        packets = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64: give the key as `gpg --export <key id> | base64 -w0` prints it") from None
    if not packets or _packet_tag(packets[0]) != _PUBLIC_KEY_PACKET_TAG:
        raise ValueError("not an OpenPGP public key (binary export, base64; not ASCII armor, not a private key)")
    return value


OperatorPgpKey = Annotated[str, AfterValidator(_operator_pgp_key)]


class LoadBalancerExposure(Settings):
    """A LoadBalancer Service in front of the active Vault node; TLS terminates at Vault itself. Only
    ``allowedSourceRanges`` may connect.

    On LKE the Service is a Linode NodeBalancer: the Cloud Firewall the CCM builds from the Service's
    ``firewall-acl`` annotation enforces the ranges (``components/linode_exposure.py``); the NodeBalancer
    sends PROXY protocol v2, and Vault's external listener believes the header only from
    ``nodeBalancerRanges``, where NodeBalancers connect from (default ``192.168.255.0/24``, LKE only). On
    an existing cluster whatever serves LoadBalancers there (MetalLB, k3s servicelb, another cloud's
    controller) gets a plain Service: the ranges as ``spec.loadBalancerSourceRanges`` (kube-proxy
    enforces them), no Linode annotation and no PROXY protocol listener."""

    type: Literal["loadBalancer"]
    hostname: DnsName
    allowed_source_ranges: tuple[Cidr, ...] = Field(min_length=1)
    #: LKE only; unset there: ``NODEBALANCER_SOURCE_RANGES`` (``VaultSettings.for_platform``).
    node_balancer_ranges: tuple[Cidr, ...] | None = Field(default=None, min_length=1)


class AddressExposure(Settings):
    """The operator provides the address (an ingress, a tunnel, a port-forward) by which Pulumi
    and the edges reach this Vault; the stack creates no external Service."""

    type: Literal["address"]
    address: str = Field(pattern=r"^https://[^/]+$")
    hostname: DnsName


Exposure = Annotated[LoadBalancerExposure | AddressExposure, Field(discriminator="type")]


class VaultSettings(Settings):
    """``fedobs:vault``: the Vault server of this cluster, how it is reached and how it unseals."""

    replicas: int = Field(default=3, ge=1, le=7)
    seal: Seal = ShamirSeal(type="shamir")
    exposure: Exposure
    #: Unset: on LKE the retained Linode Block Storage class (``LINODE_STORAGE_CLASS``), elsewhere the
    #: cluster's default StorageClass (the chart's ``storageClass: null`` leaves it out of the PVCs).
    storage_class: str | None = None
    data_storage_size: Quantity = "10Gi"
    audit_storage_size: Quantity = "10Gi"
    injector_replicas: int = Field(default=2, ge=1, le=5)
    #: Base64 OpenPGP public keys, one per key share: the bootstrap stores each unseal (or recovery) key
    #: encrypted to one key holder (:func:`unseal_key_problems`: required with a Shamir seal).
    operator_pgp_keys: tuple[OperatorPgpKey, ...] = ()
    #: Loudly named: a Shamir seal without ``operatorPgpKeys``, so Secret ``vault/vault-init`` holds the
    #: unseal keys in plain text. A development stack only (``fedobs:developmentMode``; the policy pack's
    #: ``vault-unseal-keys-encrypted`` refuses it everywhere else).
    insecure_plaintext_unseal_keys_for_development: bool = False
    #: Bump to rotate the password Pulumi's own Vault login uses (docs/vault.md, "Rotation").
    admin_credential_generation: int = Field(default=1, ge=1)
    #: Where the userpass admin may log in from and use its token (``token_bound_cidrs`` of the user):
    #: operators, CI runners and this cluster's pod network (the bootstrap Job logs in from a Pod).
    #: Empty: anywhere the exposure admits. Needs an exposure that passes client addresses (config.py).
    admin_cidrs: tuple[Cidr, ...] = ()
    snapshots: SnapshotSettings | None = None

    @field_validator("replicas")
    @classmethod
    def _odd_replicas(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"replicas must be odd for a Raft quorum, got {value}")
        return value

    def for_platform(self, platform: Platform) -> VaultSettings:
        """These settings with the platform's defaults filled in: on LKE ``storage_class`` and the
        exposure's ``node_balancer_ranges``; elsewhere nothing (config.py refuses Linode-only values)."""
        if not platform.linode:
            return self
        update: dict[str, Any] = {}
        if self.storage_class is None:
            update["storage_class"] = LINODE_STORAGE_CLASS
        exposure = self.exposure
        if isinstance(exposure, LoadBalancerExposure) and exposure.node_balancer_ranges is None:
            update["exposure"] = exposure.model_copy(update={"node_balancer_ranges": NODEBALANCER_SOURCE_RANGES})
        return self.model_copy(update=update) if update else self

    @property
    def enabled_snapshots(self) -> SnapshotSettings | None:
        return self.snapshots if self.snapshots is not None and self.snapshots.enabled else None


#: The bootstrap's flag for it (programs/vault_bootstrap; the policy pack refuses a Job that passes it).
PLAINTEXT_UNSEAL_KEYS_FLAG = "--insecure-plaintext-unseal-keys-for-development"
#: The development setting, as an operator writes it (the policy pack names the same key).
PLAINTEXT_UNSEAL_KEYS_KEY = f"{CONFIG_NAMESPACE}:vault.insecurePlaintextUnsealKeysForDevelopment"


def unseal_key_problems(vault: VaultSettings, development_mode: bool) -> list[RuleProblem]:
    """Where the unseal keys would be stored in plain text, or the PGP keys do not fit the key split.

    A Shamir seal's unseal keys are the cluster: whoever reads them unseals it (and, with a threshold of
    them, generates a root token). The bootstrap stores them in Secret ``vault/vault-init``, which
    cluster-wide controllers and anyone who can run a pod in ``vault`` can read; so a Shamir stack must
    give ``operatorPgpKeys`` (one per share), and only a development stack (``fedobs:developmentMode``)
    may opt out, by name, with ``insecurePlaintextUnsealKeysForDevelopment``."""
    problems: list[RuleProblem] = []
    shares, _ = key_split(vault.seal)
    keys = vault.operator_pgp_keys
    plaintext = vault.insecure_plaintext_unseal_keys_for_development
    inputs = ("vault.seal", "vault.operatorPgpKeys", "vault.insecurePlaintextUnsealKeysForDevelopment")
    if isinstance(vault.seal, ShamirSeal) and not keys and not plaintext:
        problems.append(
            RuleProblem(
                "vault.operatorPgpKeys",
                f"required with a Shamir seal: one OpenPGP public key per key share ({shares}, keyShares), so the "
                "bootstrap stores each unseal key encrypted to one key holder instead of in plain text in Secret "
                f"vault/{INIT_STATE_SECRET}; on a development stack only, set {PLAINTEXT_UNSEAL_KEYS_KEY}: true",
                inputs,
            )
        )
    if keys and len(keys) != shares:
        problems.append(
            RuleProblem(
                "vault.operatorPgpKeys",
                f"{len(keys)} keys for {shares} key shares: give exactly one per share",
                inputs,
            )
        )
    if plaintext and keys:
        problems.append(
            RuleProblem(
                "vault.insecurePlaintextUnsealKeysForDevelopment",
                "set together with operatorPgpKeys: the keys are encrypted to them; remove this setting",
                inputs,
            )
        )
    if plaintext and not development_mode:
        problems.append(
            RuleProblem(
                "vault.insecurePlaintextUnsealKeysForDevelopment",
                f"stores the unseal keys in plain text: allowed only on a stack that sets {CONFIG_NAMESPACE}:"
                "developmentMode: true (give operatorPgpKeys instead)",
                (*inputs, "developmentMode"),
            )
        )
    return problems


@dataclass(frozen=True)
class TransitSealInput:
    """An edge's transit seal: the hub's address, TLS name, CA and this edge's token come from
    the hub stack. The token and CA reach the pod as Secrets, never through the HCL ConfigMap."""

    address: pulumi.Input[str]
    key_name: str
    tls_server_name: pulumi.Input[str]
    token: pulumi.Input[str]
    hub_ca_cert: pulumi.Input[str]


def server_spec(settings: VaultSettings, cluster_name: str, seal: SealSpec = None) -> VaultServerSpec:
    """What the server's HCL and certificate depend on; ``seal`` is the resolved auto-unseal target."""
    if seal is None and isinstance(settings.seal, AwsKmsSeal):
        seal = settings.seal
    exposure = settings.exposure
    # the PROXY protocol listener behind a NodeBalancer: only where its ranges are known (LKE)
    external = (
        ExternalListener(authorized_addrs=exposure.node_balancer_ranges)
        if isinstance(exposure, LoadBalancerExposure) and exposure.node_balancer_ranges is not None
        else None
    )
    return VaultServerSpec(
        cluster_name=cluster_name,
        external_hostname=exposure.hostname,
        replicas=settings.replicas,
        seal=seal,
        external_listener=external,
    )


def server_pod_labels(spec: VaultServerSpec) -> dict[str, str]:
    """The labels the chart puts on every Vault server Pod (``vault.server.labels`` selector)."""
    return {"app.kubernetes.io/name": "vault", "app.kubernetes.io/instance": spec.release, "component": "server"}


def _seal_environment(spec: VaultServerSpec) -> list[dict[str, str]]:
    """The seal's credentials, as environment variables
    from the ``vault-seal`` Secret."""
    if isinstance(spec.seal, TransitSealSpec):
        return [{"envName": "VAULT_TOKEN", "secretName": "vault-seal", "secretKey": "token"}]
    if isinstance(spec.seal, AwsKmsSeal):
        return [
            {"envName": "AWS_ACCESS_KEY_ID", "secretName": "vault-seal", "secretKey": "access-key-id"},
            {"envName": "AWS_SECRET_ACCESS_KEY", "secretName": "vault-seal", "secretKey": "secret-access-key"},
        ]
    return []


def _server_volumes(spec: VaultServerSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The server's extra volumes and their mounts: its TLS,
    a writable /tmp, the hub's CA (transit seal)."""
    # The chart's start command (vault-helm v0.34.1 templates/_helpers.tpl, vault.args, lines 223-251)
    # copies its config to /tmp/storageconfig.hcl before exec'ing the server: with readOnlyRootFilesystem
    # it needs a writable /tmp. Proven on rung 5 (tests/real/test_pods.py; docs/testing.md).
    volumes: list[dict[str, Any]] = [
        {"name": "vault-server-tls", "secret": {"secretName": "vault-server-tls"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "vault-server-tls", "mountPath": TLS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if isinstance(spec.seal, TransitSealSpec):
        volumes.append({"name": "hub-vault-ca", "secret": {"secretName": "hub-vault-ca"}})
        mounts.append({"name": "hub-vault-ca", "mountPath": HUB_CA_DIR, "readOnly": True})
    return volumes, mounts


def _injector_values(settings: VaultSettings) -> dict[str, Any]:
    """The Agent Injector: pinned images, leader election, restricted containers."""
    return {
        "enabled": True,
        "replicas": settings.injector_replicas,
        "leaderElector": {"enabled": True},
        "image": {"repository": versions.VAULT_K8S_IMAGE, "tag": versions.VAULT_K8S_VERSION},
        "agentImage": {"repository": versions.VAULT_IMAGE, "tag": versions.VAULT_VERSION},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "250m", "memory": "256Mi"}},
        "securityContext": {"container": restricted_container()},
    }


def _storage(settings: VaultSettings, size: str, mount_path: str) -> dict[str, Any]:
    """One of the server's volume claims (Raft data, audit log)."""
    return {
        "enabled": True,
        "size": size,
        "storageClass": settings.storage_class,
        "mountPath": mount_path,
        "accessMode": "ReadWriteOnce",
    }


def _server_values(settings: VaultSettings, spec: VaultServerSpec) -> dict[str, Any]:
    """The HA Raft server StatefulSet: image, probes, files,
    anti-affinity, storage, security."""
    volumes, mounts = _server_volumes(spec)
    server_labels = server_pod_labels(spec)
    return {
        "image": {"repository": versions.VAULT_IMAGE, "tag": versions.VAULT_VERSION},
        # OnDelete: a chart upgrade never restarts Vault pods by itself; docs/vault.md rolls
        # them one by one, standbys first, the active node last.
        "updateStrategyType": "OnDelete",
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "readinessProbe": {"enabled": True, "path": READINESS_PROBE_PATH},
        # The file audit device's log is rotated and bounded by a sidecar that signals Vault
        # (components/vault_audit.py, which also says why Vault needs a second audit device).
        "shareProcessNamespace": True,
        "extraContainers": [rotation_sidecar(quantity_bytes(settings.audit_storage_size))],
        "extraEnvironmentVars": {
            "VAULT_CACERT": f"{TLS_DIR}/ca.crt",
            "VAULT_TLS_SERVER_NAME": spec.peer_hostname(0),
        },
        "extraSecretEnvironmentVars": _seal_environment(spec),
        "volumes": volumes,
        "volumeMounts": mounts,
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": server_labels}, "topologyKey": "kubernetes.io/hostname"}
                ]
            }
        },
        "dataStorage": _storage(settings, settings.data_storage_size, "/vault/data"),
        "auditStorage": _storage(settings, settings.audit_storage_size, "/vault/audit"),
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
    }


def vault_chart_values(settings: VaultSettings, spec: VaultServerSpec) -> dict[str, Any]:
    """The ``vault`` chart values (validated in tests against the chart's values.schema.json)."""
    return {
        "global": {"enabled": True, "tlsDisable": False, "psp": {"enable": False}},
        "injector": _injector_values(settings),
        "server": _server_values(settings, spec),
        "ui": {"enabled": True, "serviceType": "ClusterIP"},
        "serverTelemetry": {"serviceMonitor": {"enabled": False}},
    }


def _resolved_values(
    settings: VaultSettings, spec: VaultServerSpec, transit: TransitSealInput | None
) -> pulumi.Input[dict[str, Any]]:
    """Chart values; a transit seal's hub address comes from the hub stack, so wait for it."""
    if transit is None:
        return vault_chart_values(settings, spec)

    def values(parts: list[str]) -> dict[str, Any]:
        seal = TransitSealSpec(address=parts[0], key_name=transit.key_name, tls_server_name=parts[1])
        return vault_chart_values(settings, server_spec(settings, spec.cluster_name, seal))

    return pulumi.Output.all(transit.address, transit.tls_server_name).apply(values)


def bootstrap_command(settings: VaultSettings, spec: VaultServerSpec) -> list[str]:
    """The bootstrap Job's command line (programs/vault_bootstrap)."""
    shares, threshold = key_split(settings.seal)
    command = [
        "python",
        "-m",
        "programs.vault_bootstrap",
        "--seal",
        "shamir" if isinstance(settings.seal, ShamirSeal) else "auto",
        "--key-shares",
        str(shares),
        "--key-threshold",
        str(threshold),
        "--ca-file",
        f"{TLS_DIR}/ca.crt",
        "--admin-mount",
        ADMIN_AUTH_MOUNT,
        "--admin-username",
        ADMIN_USERNAME,
        "--admin-password-file",
        "/fedobs/admin/password",
        # A new password in the mounted Secret (a new adminCredentialGeneration) is rotated to, from the
        # previous generation's, which the same Secret carries (Vault._admin_passwords).
        "--admin-previous-password-file",
        "/fedobs/admin/previous-password",
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
    for key in settings.operator_pgp_keys:
        command += ["--pgp-key", key]
    if settings.insecure_plaintext_unseal_keys_for_development:
        command += [PLAINTEXT_UNSEAL_KEYS_FLAG, "true"]
    return command


def admin_user_path() -> str:
    """The userpass user Pulumi logs in as (created by the bootstrap Job)."""
    return f"auth/{ADMIN_AUTH_MOUNT}/users/{ADMIN_USERNAME}"


def _bootstrap_job_name(command: list[str], admin_password: pulumi.Output[str]) -> pulumi.Output[str]:
    """A new Job (new name) whenever what it does or the admin password changes; an unchanged
    one is not re-run. Only a digest of the password shows in the name. The admin policy is not
    part of it: after the first run the stack manages that policy (``Vault._server_settings``)."""
    return pulumi.Output.unsecret(
        admin_password.apply(
            lambda password: (
                "vault-bootstrap-" + hashlib.sha256(json.dumps([command, password]).encode()).hexdigest()[:10]
            )
        )
    )


#: The bootstrap Job's ServiceAccount, and the Role that names what it may do while a Job runs.
BOOTSTRAP_ACCOUNT = "vault-bootstrap"
#: Labels the Job controller puts on every Pod of a Job (kubernetes/kubernetes pkg/apis/batch/types.go,
#: ``JobNameLabel`` and ``ControllerUidLabel``, since 1.27), which the downward API hands the container.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"


def bootstrap_rbac_rules(job_name: str) -> list[dict[str, Any]]:
    """What the bootstrap may do: read and update the init state Secret (created empty by the stack, so
    no ``create``, which RBAC cannot scope to a name), and make its own RoleBinding (named like its
    Job) a dependent of the Job. ``patch`` changes only the binding's ownerReferences (the program's
    merge patch; Kubernetes admits a change of those garbage-collection fields without the escalation
    check, kubernetes/kubernetes pkg/registry/rbac/rolebinding/policybased/storage.go,
    ``IsOnlyMutatingGCFields``); ``delete`` on that one binding is what the OwnerReferencesPermission
    Enforcement admission plugin requires of whoever sets an ownerReference (plugin/pkg/admission/gc/
    gc_admission.go: "cannot set an ownerRef on a resource you can't delete"), and deleting its own
    grant gives the holder nothing."""
    return [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [INIT_STATE_SECRET], "verbs": ["get", "update"]},
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["rolebindings"],
            "resourceNames": [job_name],
            "verbs": ["patch", "delete"],
        },
    ]


def _label_env(variable: str, label: str) -> dict[str, Any]:
    """An environment variable holding one of the Pod's labels (the downward API's ``fieldRef``)."""
    return {"name": variable, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{label}']"}}}


def _bootstrap_container(command: list[str], image: str) -> dict[str, Any]:
    """The bootstrap container: the programs image, restricted,
    its three files mounted read-only, its Job's name and uid from its labels (the grant it hands over)."""
    return {
        "name": "bootstrap",
        "image": image,
        "command": command,
        # the binding that grants this run its access is named like the Job (Vault._bootstrap_rbac)
        "env": [
            _label_env("VAULT_BOOTSTRAP_ROLE_BINDING", JOB_NAME_LABEL),
            _label_env("VAULT_BOOTSTRAP_JOB_NAME", JOB_NAME_LABEL),
            _label_env("VAULT_BOOTSTRAP_JOB_UID", JOB_UID_LABEL),
        ],
        # The Job and its Pods are deleted as soon as it finishes: a failure's one stderr line becomes the
        # container's termination message, which pulumi-kubernetes's Job await reports (provider/pkg/
        # await/checker/pod/check.go, containerTerminatedError: "[Error] <message>").
        "terminationMessagePolicy": "FallbackToLogsOnError",
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


def _bootstrap_volumes() -> list[dict[str, Any]]:
    """The CA of the server certificate, the admin password and the admin policy."""
    return [
        {"name": "tls", "secret": {"secretName": "vault-server-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"name": "admin", "secret": {"secretName": "vault-admin-credential", "defaultMode": SECRET_FILE_MODE}},
        {"name": "policy", "configMap": {"name": "vault-admin-policy"}},
    ]


def bootstrap_job_spec(command: list[str], image: str) -> dict[str, Any]:
    """The bootstrap Job's spec: a few retries, a deadline, deleted as soon as it finished.

    ``ttlSecondsAfterFinished: 0``: the TTL-after-finished controller deletes the Job right after it
    completes or fails, "cascadingly, i.e. delete its dependent objects together with it" (kubernetes/
    website content/en/docs/concepts/workloads/controllers/ttlafterfinished.md): its Pods and the
    RoleBinding the run made its dependent, so the grant ends with the run. ``pulumi up`` still sees
    the run end: pulumi-kubernetes waits for the Job's ``Complete`` condition (provider/pkg/await/job.go,
    ``jobInitAwaiter``, 10 minutes by default), and the Job is deleted only after that condition is set.
    A later ``pulumi refresh`` finds the Job and its binding gone (provider/pkg/provider/provider.go
    ``Read``: a 404 marks the resource deleted), so ``pulumi up --refresh`` creates both again and the
    new Job runs once more (the bootstrap changes nothing on an unchanged cluster) and takes its
    binding with it again: no grant outlives a run."""
    return {
        "backoffLimit": 3,
        "activeDeadlineSeconds": 900,
        "ttlSecondsAfterFinished": 0,
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "vault-bootstrap"}},
            "spec": {
                "serviceAccountName": BOOTSTRAP_ACCOUNT,
                "restartPolicy": "Never",
                "securityContext": restricted_pod(reads_secret_files=True),
                "containers": [_bootstrap_container(command, image)],
                "volumes": _bootstrap_volumes(),
            },
        },
    }


def write_ca_file(directory: Path, stack: str, pem: str, filename: str = "vault-ca.pem") -> str:
    """The path of a local file holding ``pem``, for a Vault provider's ``ca_cert_file``."""
    # The Vault provider reads its CA from a file only. Writing it locally is idempotent and
    # talks to no network, so it is safe in preview too.
    path = directory / stack / filename
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
    admin_policy: vault.Policy

    def __init__(
        self,
        name: str,
        settings: VaultSettings,
        *,
        cluster_name: str,
        platform: Platform,
        cert_manager: pulumi.Resource,
        programs_image: str,
        admin_policy_hcl: str,
        admin_identity: AdminDeployIdentitySettings | None = None,
        transit_seal: TransitSealInput | None = None,
        aws_kms_credentials: AccessKeyPair | None = None,
        local_ca_dir: Path = Path(".fedobs"),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``programs_image``: what the bootstrap Job runs (``fedobs:programsImage``);
        ``admin_policy_hcl``: the policy of Pulumi's own login (``components.admin_policy``), written by
        the bootstrap once and managed as a ``vault.Policy`` from then on; ``admin_identity``: the JWT
        login of Pulumi in CI (``components.admin_identity``), hub only. The Kubernetes
        provider comes through ``opts`` (children inherit it); only cert-manager's Issuer and Certificate
        wait for ``cert_manager`` (its CRDs), the rest starts at once."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        self.platform = platform
        self.settings = settings = settings.for_platform(platform)
        self.programs_image = programs_image
        self.admin_policy_hcl = admin_policy_hcl
        self.admin_identity = admin_identity
        self.spec = spec = server_spec(settings, cluster_name)
        self.namespace = spec.namespace
        self.release_name = spec.release
        namespace = restricted_namespace(
            f"{name}-namespace", spec.namespace, pulumi.ResourceOptions(parent=self, protect=True)
        )
        ns_opts = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        self.ca_cert = self._tls(name, ns_opts, cert_manager)
        seal_secrets = self._seal_secrets(name, ns_opts, transit_seal, aws_kms_credentials)
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=spec.release,
            chart=versions.VAULT_CHART,
            version=versions.VAULT_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=versions.VAULT_CHART_REPO),
            namespace=spec.namespace,
            values=_resolved_values(settings, spec, transit_seal),
            # Not after the Certificate: its Pods wait for the Secret cert-manager writes (see _tls).
            opts=pulumi.ResourceOptions.merge(ns_opts, pulumi.ResourceOptions(protect=True, depends_on=seal_secrets)),
        )
        self.address = self._exposure(name, ns_opts)
        admin_password, previous_password = self._admin_passwords(name)
        job = self._bootstrap_job(name, ns_opts, admin_password, previous_password)
        self.vault_provider = self._login_provider(name, local_ca_dir, admin_password, job)
        self._server_settings(name)
        self.register_outputs(
            {
                "address": self.address,
                "ca_cert": self.ca_cert,
                "namespace": spec.namespace,
                "chart_version": versions.VAULT_CHART_VERSION,
            }
        )

    def _admin_passwords(self, name: str) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """The admin password of the current generation and of the previous one.

        One random password per generation parity, each kept until a generation of its parity replaces
        it: bumping ``adminCredentialGeneration`` from N to N+1 replaces only the slot of N+1's parity,
        so N's password is still in the other slot, and the bootstrap logs in with it to set the new one
        (programs/vault_bootstrap, 'Admin password rotation'). Nothing in the cluster has to remember a
        password for that. The current slot takes over the single password resource of earlier versions
        (alias), so an upgrade keeps the password Vault has; the other slot then starts as a password
        Vault never had, which no login accepts."""
        generation = self.settings.admin_credential_generation
        slots: dict[int, pulumi.Output[str]] = {}
        for parity, label in ((1, "odd"), (0, "even")):
            current = generation % 2 == parity
            slot = random.RandomPassword(
                f"{name}-admin-password-{label}",
                length=40,
                special=False,
                keepers={"generation": str(generation if current else generation - 1)},
                opts=pulumi.ResourceOptions(
                    parent=self, aliases=[pulumi.Alias(name=f"{name}-admin-password")] if current else None
                ),
            )
            slots[parity] = slot.result
        return slots[generation % 2], slots[(generation + 1) % 2]

    def _tls(self, name: str, ns_opts: pulumi.ResourceOptions, cert_manager: pulumi.Resource) -> pulumi.Output[str]:
        """A per-cluster CA (kept in Pulumi state as a secret) issuing the server certificate via cert-manager."""
        spec = self.spec
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
        k8s.core.v1.Secret(
            f"{name}-ca-secret",
            metadata={"name": "vault-ca", "namespace": spec.namespace},
            type="kubernetes.io/tls",
            string_data={"tls.crt": ca_cert.cert_pem, "tls.key": ca_key.private_key_pem},
            opts=ns_opts,
        )
        # cert-manager waits for the CA Secret by itself; only its CRDs must exist first.
        after_crds = pulumi.ResourceOptions.merge(ns_opts, pulumi.ResourceOptions(depends_on=[cert_manager]))
        k8s.apiextensions.CustomResource(
            f"{name}-issuer",
            api_version="cert-manager.io/v1",
            kind="Issuer",
            metadata={"name": "vault-ca", "namespace": spec.namespace},
            spec={"ca": {"secretName": "vault-ca"}},
            opts=after_crds,
        )
        # Issued as soon as the Issuer is ready (cert-manager retries); the server Pods wait for
        # the Secret it writes before they start, so neither has to be created before the other.
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
            opts=after_crds,
        )
        return ca_cert.cert_pem

    def _seal_secrets(
        self,
        name: str,
        ns_opts: pulumi.ResourceOptions,
        transit: TransitSealInput | None,
        aws_kms_credentials: AccessKeyPair | None,
    ) -> list[pulumi.Resource]:
        """Seal material, as Secrets the chart turns into environment variables and files."""
        namespace = self.spec.namespace
        if transit is not None:
            token = k8s.core.v1.Secret(
                f"{name}-seal-secret",
                metadata={"name": "vault-seal", "namespace": namespace},
                string_data={"token": pulumi.Output.secret(transit.token)},
                opts=ns_opts,
            )
            hub_ca = k8s.core.v1.Secret(
                f"{name}-hub-ca",
                metadata={"name": "hub-vault-ca", "namespace": namespace},
                string_data={"ca.crt": transit.hub_ca_cert},
                opts=ns_opts,
            )
            return [token, hub_ca]
        if isinstance(self.settings.seal, AwsKmsSeal):
            if aws_kms_credentials is None:
                raise ValueError("an awskms seal needs aws_kms_credentials")
            key_pair = k8s.core.v1.Secret(
                f"{name}-seal-secret",
                metadata={"name": "vault-seal", "namespace": namespace},
                string_data={
                    "access-key-id": pulumi.Output.secret(aws_kms_credentials.access_key_id),
                    "secret-access-key": pulumi.Output.secret(aws_kms_credentials.secret_access_key),
                },
                opts=ns_opts,
            )
            return [key_pair]
        return []

    def _exposure(self, name: str, ns_opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        """How Pulumi and the edges reach this Vault: a restricted LoadBalancer, or the operator's address."""
        exposure = self.settings.exposure
        if isinstance(exposure, AddressExposure):
            return pulumi.Output.from_input(exposure.address)
        spec = self.spec
        service_metadata: Any = {
            "name": f"{spec.release}-external",
            "namespace": spec.namespace,
            "annotations": {"external-dns.alpha.kubernetes.io/hostname": spec.external_hostname},
        }
        service_spec: Any = {
            "type": "LoadBalancer",
            "selector": {**server_pod_labels(spec), "vault-active": "true"},
            # Clients keep port 8200; the NodeBalancer reaches the PROXY protocol listener
            # (vault_server_config.ExternalListener), never the one in-cluster clients use.
            "ports": [{"name": "https", "port": API_PORT, "targetPort": EXTERNAL_API_PORT, "protocol": "TCP"}],
            # Local: no SNAT, so Vault sees the NodeBalancer's address and believes its PROXY header.
            "externalTrafficPolicy": "Local",
        }
        if self.platform.linode:
            # TLS passes through the NodeBalancer and terminates at Vault; the CCM's Cloud Firewall
            # admits only the allowed ranges; PROXY v2 carries the client address (linode_exposure.py).
            service_metadata["annotations"].update(
                load_balancer_annotations(exposure.allowed_source_ranges, proxy_protocol=True)
            )
        else:
            # Elsewhere the cluster's own LoadBalancer implementation serves the Service (MetalLB, k3s
            # servicelb, another cloud's controller): no PROXY protocol, the plain listener, and the
            # ranges as loadBalancerSourceRanges, which kube-proxy enforces for the load balancer's IP.
            service_spec["ports"][0]["targetPort"] = API_PORT
            service_spec["loadBalancerSourceRanges"] = list(exposure.allowed_source_ranges)
        k8s.core.v1.Service(
            f"{name}-external",
            metadata=service_metadata,
            spec=service_spec,
            opts=pulumi.ResourceOptions.merge(ns_opts, pulumi.ResourceOptions(depends_on=[self.release])),
        )
        return pulumi.Output.from_input(f"https://{spec.external_hostname}:{API_PORT}")

    def _login_provider(
        self, name: str, local_ca_dir: Path, admin_password: pulumi.Output[str], job: pulumi.Resource
    ) -> vault.Provider:
        """The Vault provider: it logs in on every run, so no token that could expire is kept in state;
        through ``jwt-pulumi`` when the hub declares its deploy identity and the run carries a JWT,
        through userpass otherwise (first run, operators: components/admin_identity.py)."""
        ca_file = pulumi.Output.all(self.ca_cert, pulumi.get_stack()).apply(
            lambda parts: write_ca_file(local_ca_dir, parts[1], parts[0])
        )
        jwt = jwt_login(self.admin_identity)
        login = admin_password.apply(
            lambda password: vault.ProviderAuthLoginUserpassArgs(
                mount=ADMIN_AUTH_MOUNT, username=ADMIN_USERNAME, password=password
            )
        )
        return vault.Provider(
            f"{name}-provider",
            address=self.address,
            ca_cert_file=ca_file,
            tls_server_name=self.spec.external_hostname,
            skip_child_token=False,
            # Exactly one login block (they conflict): the CI JWT when the run carries one, else userpass.
            auth_login_userpass=None if jwt is not None else cast(Any, pulumi.Output.secret(login)),
            auth_login_jwt=jwt,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[job]),
        )

    def _server_settings(self, name: str) -> None:
        """Pulumi's own policy, Raft autopilot and the audit devices, through the Vault provider."""
        vault_opts = pulumi.ResourceOptions(parent=self, provider=self.vault_provider)
        # The bootstrap wrote it to hand Pulumi a login; from here on the stack manages it.
        #: What a role granting the admin policy waits for (components.admin_identity).
        self.admin_policy = vault.Policy(
            f"{name}-admin-acl", name=ADMIN_POLICY, policy=self.admin_policy_hcl, opts=vault_opts
        )
        self._admin_user_cidrs(name, vault_opts)
        vault.RaftAutopilot(
            f"{name}-autopilot",
            cleanup_dead_servers=True,
            dead_server_last_contact_threshold="10m",
            last_contact_threshold="10s",
            max_trailing_logs=1000,
            min_quorum=self.spec.replicas,
            server_stabilization_time="10s",
            opts=vault_opts,
        )
        # Two devices, so that a full audit volume cannot stop Vault (components/vault_audit.py). The
        # file device keeps its first name and inputs: a changed audit device is replaced.
        for device in AUDIT_DEVICES:
            vault.Audit(
                f"{name}-audit" if device.path == "file" else f"{name}-audit-{device.path}",
                type=device.type,
                path=device.path,
                description=device.description,
                options=device.options,
                opts=vault_opts,
            )

    def _admin_user_cidrs(self, name: str, vault_opts: pulumi.ResourceOptions) -> None:
        """Where Pulumi's userpass identity may log in from and use its token (``vault.adminCidrs``)."""
        # The bootstrap creates the user; this writes its address binding alone. Userpass keeps every
        # field a write leaves out, the password too (openbao internal/builtin/credential/userpass/
        # path_users.go, pathUserWrite: the password only when given; tokenutil.ParseTokenFields: only
        # the token_* fields given). Empty list: no binding. Never read back (Vault prints a /32 as the
        # bare address) and never deleted (that would delete the user).
        vault.generic.Endpoint(
            f"{name}-admin-cidrs",
            path=admin_user_path(),
            data_json=json.dumps({"token_bound_cidrs": list(self.settings.admin_cidrs)}),
            disable_read=True,
            disable_delete=True,
            opts=vault_opts,
        )

    def _bootstrap_job(
        self,
        name: str,
        ns_opts: pulumi.ResourceOptions,
        admin_password: pulumi.Output[str],
        previous_password: pulumi.Output[str],
    ) -> k8s.batch.v1.Job:
        """Init once, unseal, the admin auth path, root token revoked (programs/vault_bootstrap)."""
        spec = self.spec
        command = bootstrap_command(self.settings, spec)
        job_name = _bootstrap_job_name(command, admin_password)
        files = self._bootstrap_files(name, ns_opts, admin_password, previous_password)
        rbac = self._bootstrap_rbac(name, ns_opts, job_name)
        return k8s.batch.v1.Job(
            f"{name}-bootstrap",
            metadata={"name": job_name, "namespace": spec.namespace},
            spec=bootstrap_job_spec(command, self.programs_image),
            opts=pulumi.ResourceOptions.merge(
                ns_opts, pulumi.ResourceOptions(depends_on=[self.release, *files, *rbac])
            ),
        )

    def _bootstrap_files(
        self,
        name: str,
        ns_opts: pulumi.ResourceOptions,
        admin_password: pulumi.Output[str],
        previous_password: pulumi.Output[str],
    ) -> list[pulumi.Resource]:
        """What the Job reads: the admin password and the previous generation's (a Secret; a rotation
        logs in with the previous one) and the admin policy (a ConfigMap);
        and where it writes: the init state Secret, created empty here so that the Job needs no
        ``create`` on Secrets (unscoped in RBAC: it would let it mint any ServiceAccount's token)."""
        namespace = self.spec.namespace
        init_state = k8s.core.v1.Secret(
            f"{name}-init-state",
            metadata={
                "name": INIT_STATE_SECRET,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "fedobs-vault-bootstrap"},
            },
            type="Opaque",
            # The Job writes the init result into it; the stack never touches it again, and never
            # deletes it (it holds the unseal or recovery keys).
            opts=pulumi.ResourceOptions.merge(
                ns_opts,
                pulumi.ResourceOptions(protect=True, retain_on_delete=True, ignore_changes=["data", "stringData"]),
            ),
        )
        admin_secret = k8s.core.v1.Secret(
            f"{name}-admin-credential",
            metadata={"name": "vault-admin-credential", "namespace": namespace},
            string_data={"password": admin_password, "previous-password": previous_password},
            opts=ns_opts,
        )
        policy_map = k8s.core.v1.ConfigMap(
            f"{name}-admin-policy",
            metadata={"name": "vault-admin-policy", "namespace": namespace},
            data={"admin.hcl": self.admin_policy_hcl},
            opts=ns_opts,
        )
        return [init_state, admin_secret, policy_map]

    def _bootstrap_rbac(
        self, name: str, ns_opts: pulumi.ResourceOptions, job_name: pulumi.Output[str]
    ) -> list[pulumi.Resource]:
        """The Job's ServiceAccount and its grant, which reaches the init state Secret only and lasts only
        while the Job runs (:func:`bootstrap_rbac_rules`, :func:`bootstrap_job_spec`).

        The RoleBinding is named like the Job: a new Job (a new command or password) comes with a new
        binding, and the old one goes with the old Job. Its first act is to make the binding a dependent
        of the Job (programs/vault_bootstrap, ``hand_grant_to_job``); the Job is deleted as soon as it
        finishes (``ttlSecondsAfterFinished: 0``), and the garbage collector deletes the binding with
        it, so the ServiceAccount holds nothing between runs."""
        namespace = self.spec.namespace
        account = k8s.core.v1.ServiceAccount(
            f"{name}-bootstrap-sa",
            metadata={"name": BOOTSTRAP_ACCOUNT, "namespace": namespace},
            automount_service_account_token=True,
            opts=ns_opts,
        )
        role = k8s.rbac.v1.Role(
            f"{name}-bootstrap-role",
            metadata={"name": BOOTSTRAP_ACCOUNT, "namespace": namespace},
            rules=cast(Any, job_name.apply(bootstrap_rbac_rules)),
            opts=ns_opts,
        )
        subjects: Any = [{"kind": "ServiceAccount", "name": BOOTSTRAP_ACCOUNT, "namespace": namespace}]
        binding = k8s.rbac.v1.RoleBinding(
            f"{name}-bootstrap-binding",
            metadata={"name": job_name, "namespace": namespace},
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": BOOTSTRAP_ACCOUNT},
            subjects=subjects,
            opts=ns_opts,
        )
        return [account, role, binding]
