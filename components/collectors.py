"""The OpenTelemetry collector of a stack: the hub's mTLS OTLP gateway, or an edge's collector
that forwards to it with its own client certificate."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pydantic import Field

from components import versions
from components.cluster import Platform
from components.linode_exposure import load_balancer_annotations
from components.otlp_pki import (
    CLIENT_CA_KV_PATH,
    CLIENT_CA_SECRET,
    CLIENT_TLS_SECRET,
    EDGE_CLIENT_TLS_KV_PATH,
    GATEWAY_TLS_KV_PATH,
    GATEWAY_TLS_SECRET,
)
from components.pod_security import SECRET_FILE_MODE, restricted_container, restricted_pod
from components.settings import Cidr, DnsLabel, Quantity, Settings
from components.vso import RestartTargetSettings, SyncSettings, WorkloadRef

TYPE_TOKEN = "fedobs:observability:OtelCollector"
GRPC_PORT = 4317
HTTP_PORT = 4318
HEALTH_PORT = 13133
#: The collector image's own non-root user.
COLLECTOR_UID = 10001
SECRETS_DIR = "/etc/otelcol/secrets"
CONFIG_DIR = "/etc/otelcol/config"
COMPONENT_LABEL = {"app.kubernetes.io/component": "opentelemetry-collector"}


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated values out in full (no YAML anchors): the ConfigMap stays readable."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_config(config: dict[str, Any]) -> str:
    return yaml.dump(config, Dumper=_PlainDumper, sort_keys=False)


def selector_labels(plan: CollectorPlan) -> dict[str, str]:
    """The labels that pick this collector's Pods (Deployment, Service, NetworkPolicy, PDB)."""
    return {"app.kubernetes.io/name": plan.deployment, **COMPONENT_LABEL}


def secret_dir(secret_name: str) -> str:
    """Where a mounted Secret's keys appear in the collector's container."""
    return f"{SECRETS_DIR}/{secret_name}"


class CollectorSettings(Settings):
    """``fedobs:collector``: this stack's OpenTelemetry collector, the hub's mTLS OTLP gateway or an
    edge's collector forwarding to it. It mounts only Secrets VSO syncs, and the stack derives
    those syncs itself (:func:`collector_syncs`)."""

    enabled: bool = True
    namespace: DnsLabel = "observability"
    replicas: int = Field(default=2, ge=1, le=20)
    #: Hub only: who may reach the OTLP LoadBalancer (the edges' egress addresses).
    allowed_source_ranges: tuple[Cidr, ...] = ()
    tls_min_version: Literal["1.2", "1.3"] = "1.3"
    memory_limit: Quantity = "512Mi"


@dataclass(frozen=True)
class MountedSecret:
    """A Secret the collector mounts, and the KV path VSO fills it from."""

    name: str
    kv_path: str
    secret_type: Literal["kubernetes.io/tls", "Opaque"] = "kubernetes.io/tls"


@dataclass(frozen=True)
class CollectorShape:
    """What a role's collector Deployment is called and which VSO-synced Secrets it mounts."""

    deployment: str
    mounted: tuple[MountedSecret, ...]


#: The hub runs the mTLS OTLP gateway (server certificate + the client CA it trusts); an edge runs
#: a collector that forwards to it with its own client certificate. Hub and edge differ by this data.
GATEWAY = CollectorShape(
    "otel-gateway",
    (
        MountedSecret(GATEWAY_TLS_SECRET, GATEWAY_TLS_KV_PATH),
        MountedSecret(CLIENT_CA_SECRET, CLIENT_CA_KV_PATH, "Opaque"),
    ),
)
FORWARDER = CollectorShape("otel-collector", (MountedSecret(CLIENT_TLS_SECRET, EDGE_CLIENT_TLS_KV_PATH),))


def collector_workload(settings: CollectorSettings, shape: CollectorShape) -> WorkloadRef:
    return WorkloadRef(kind="Deployment", namespace=settings.namespace, name=shape.deployment)


def collector_syncs(settings: CollectorSettings, shape: CollectorShape) -> tuple[SyncSettings, ...]:
    """The VSO syncs of every Secret the collector mounts, each restarting the collector."""
    restart = (RestartTargetSettings(kind="Deployment", name=shape.deployment),)
    return tuple(
        SyncSettings(
            namespace=settings.namespace,
            secret_name=secret.name,
            kv_path=secret.kv_path,
            secret_type=secret.secret_type,
            restart=restart,
        )
        for secret in shape.mounted
    )


@dataclass(frozen=True)
class MtlsReceiver:
    """The hub: OTLP accepted only from clients whose certificate chains to the client CA Secret's
    ``ca.crt``, served with the gateway's own certificate on ``hostname``."""

    hostname: str


@dataclass(frozen=True)
class MtlsExporter:
    """An edge: OTLP forwarded to ``endpoint`` (``host:port``) with the edge's client certificate,
    verifying the hub's receiver with the same Secret's ``ca.crt``."""

    endpoint: pulumi.Input[str]


@dataclass(frozen=True)
class CollectorPlan:
    """One collector as the pure functions below render it: its settings and its role's data."""

    settings: CollectorSettings
    shape: CollectorShape
    receiver: MtlsReceiver | None = None
    exporter: MtlsExporter | None = None
    #: On LKE (``cluster.Platform``): the receiver's LoadBalancer is a NodeBalancer, set by Linode annotations.
    linode: bool = False

    @property
    def deployment(self) -> str:
        return self.shape.deployment

    @property
    def namespace(self) -> str:
        return self.settings.namespace


def mounted_secrets(plan: CollectorPlan) -> tuple[str, ...]:
    """Every Secret the collector mounts (each one synced by VSO)."""
    return tuple(secret.name for secret in plan.shape.mounted)


def receiver_tls(plan: CollectorPlan) -> dict[str, Any] | None:
    """The OTLP receiver's TLS settings (the collector's ``configtls.ServerConfig``)."""
    if plan.receiver is None:
        return None
    return {
        "cert_file": f"{secret_dir(GATEWAY_TLS_SECRET)}/tls.crt",
        "key_file": f"{secret_dir(GATEWAY_TLS_SECRET)}/tls.key",
        "client_ca_file": f"{secret_dir(CLIENT_CA_SECRET)}/ca.crt",
        "min_version": plan.settings.tls_min_version,
    }


def collector_config(plan: CollectorPlan, exporter_endpoint: str | None) -> dict[str, Any]:
    """The collector's configuration. Pure: the tests read the receiver's and exporter's TLS from it."""
    tls = receiver_tls(plan)

    def protocol(port: int) -> dict[str, Any]:
        settings: dict[str, Any] = {"endpoint": f"${{env:MY_POD_IP}}:{port}"}
        if tls is not None:
            settings["tls"] = tls
        return settings

    exporters: dict[str, Any]
    if plan.exporter is not None:
        assert exporter_endpoint is not None
        client_dir = secret_dir(CLIENT_TLS_SECRET)
        exporters = {
            "otlp/hub": {
                "endpoint": exporter_endpoint,
                "tls": {
                    "insecure": False,
                    "ca_file": f"{client_dir}/ca.crt",
                    "cert_file": f"{client_dir}/tls.crt",
                    "key_file": f"{client_dir}/tls.key",
                    "min_version": plan.settings.tls_min_version,
                },
                "sending_queue": {"enabled": True},
                "retry_on_failure": {"enabled": True},
            }
        }
    else:
        # The hub's storage backends are not part of the secrets plane; the debug exporter keeps the
        # pipeline whole until one is added.
        exporters = {"debug": {"verbosity": "basic"}}
    pipeline = {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": sorted(exporters)}
    return {
        "extensions": {"health_check": {"endpoint": f"${{env:MY_POD_IP}}:{HEALTH_PORT}"}},
        "receivers": {"otlp": {"protocols": {"grpc": protocol(GRPC_PORT), "http": protocol(HTTP_PORT)}}},
        "processors": {
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20},
            "batch": {},
        },
        "exporters": exporters,
        "service": {
            "extensions": ["health_check"],
            "pipelines": {signal: dict(pipeline) for signal in ("traces", "metrics", "logs")},
        },
    }


def deployment_spec(plan: CollectorPlan, config_text: str) -> dict[str, Any]:
    """The Deployment spec: restricted, read-only, no API token, only VSO-synced Secrets mounted.
    The config's digest in the Pod template rolls the Pods when the config changes."""
    labels = selector_labels(plan)
    secrets = mounted_secrets(plan)
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": f"{plan.deployment}-config"}}]
    volumes += [{"name": name, "secret": {"secretName": name, "defaultMode": SECRET_FILE_MODE}} for name in secrets]
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    mounts += [{"name": name, "mountPath": secret_dir(name), "readOnly": True} for name in secrets]
    probe = {"httpGet": {"path": "/", "port": HEALTH_PORT}, "periodSeconds": 10}
    return {
        "replicas": plan.settings.replicas,
        "selector": {"matchLabels": labels},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": {"fedobs.io/config-sha256": hashlib.sha256(config_text.encode()).hexdigest()},
            },
            "spec": {
                "serviceAccountName": plan.deployment,
                "automountServiceAccountToken": False,
                "securityContext": restricted_pod(COLLECTOR_UID, reads_secret_files=True),
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": labels},
                    }
                ],
                "volumes": volumes,
                "containers": [
                    {
                        "name": "otelcol",
                        "image": f"{versions.OTEL_COLLECTOR_IMAGE}:{versions.OTEL_COLLECTOR_VERSION}",
                        "args": [f"--config={CONFIG_DIR}/config.yaml"],
                        "env": [
                            {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "GOMEMLIMIT", "value": _go_memory_limit(plan.settings.memory_limit)},
                        ],
                        "ports": [
                            {"name": "otlp-grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                            {"name": "otlp-http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
                        ],
                        "volumeMounts": mounts,
                        "livenessProbe": probe,
                        "readinessProbe": probe,
                        "securityContext": restricted_container(),
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"cpu": "1", "memory": plan.settings.memory_limit},
                        },
                    }
                ],
            },
        },
    }


#: Bytes per unit of every Kubernetes quantity suffix the config accepts (``config.QUANTITY``).
_QUANTITY_BYTES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "m": 10**-3,
    "": 1,
}


def _go_memory_limit(limit: str) -> str:
    """80% of the container's memory limit, in the Go runtime's notation (``MiB``)."""
    number = limit.rstrip("KMGTimk")
    mebibytes = float(number) * _QUANTITY_BYTES[limit[len(number) :]] / 2**20
    return f"{int(mebibytes * 0.8)}MiB"


def service_spec(plan: CollectorPlan) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Service's metadata extras and spec: the hub's receiver behind a restricted NodeBalancer
    (TLS passes through to the collector), an edge's receiver inside its cluster only."""
    selector = selector_labels(plan)
    ports = [
        {"name": "otlp-grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "protocol": "TCP"},
        {"name": "otlp-http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"},
    ]
    if plan.receiver is None:
        return {}, {"type": "ClusterIP", "selector": selector, "ports": ports}
    annotations = {"external-dns.alpha.kubernetes.io/hostname": plan.receiver.hostname}
    spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "selector": selector,
        "ports": ports,
        "externalTrafficPolicy": "Local",
    }
    if plan.linode:
        # TLS passes through to the collector; the CCM's Cloud Firewall admits only the allowed
        # ranges (components/linode_exposure.py: the Linode CCM ignores loadBalancerSourceRanges).
        annotations.update(load_balancer_annotations(plan.settings.allowed_source_ranges))
    else:
        # the cluster's own LoadBalancer implementation; kube-proxy enforces loadBalancerSourceRanges
        spec["loadBalancerSourceRanges"] = list(plan.settings.allowed_source_ranges)
    return {"annotations": annotations}, spec


def network_policy_spec(plan: CollectorPlan) -> dict[str, Any]:
    """Ingress to the OTLP ports only: from anywhere for the hub's gateway (the NodeBalancer's
    Cloud Firewall and mTLS decide), from this cluster's own Pods for an edge's collector."""
    selector = {"matchLabels": selector_labels(plan)}
    ports = [{"port": GRPC_PORT, "protocol": "TCP"}, {"port": HTTP_PORT, "protocol": "TCP"}]
    rule: dict[str, Any] = {"ports": ports}
    if plan.receiver is None:
        rule["from"] = [{"namespaceSelector": {}}]
    return {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": [rule]}


class OtelCollector(pulumi.ComponentResource):
    """One OpenTelemetry collector Deployment and what it needs.

    Guarantees: the image is pinned; Pods run restricted (non-root, read-only, no capabilities, no
    Kubernetes API token); the only Secrets mounted are the VSO-synced ones named in the args (the
    Deployment is created after their VaultStaticSecrets, which restart it on change); on the hub
    the OTLP receiver requires TLS ``tls_min_version``+ and a client certificate signed by the client
    CA, behind a LoadBalancer limited to the allowed ranges; on an edge the exporter presents the
    edge's client certificate and verifies the hub's receiver; a config change rolls the Pods.
    """

    def __init__(
        self,
        name: str,
        settings: CollectorSettings,
        *,
        shape: CollectorShape,
        platform: Platform,
        receiver: MtlsReceiver | None = None,
        exporter: MtlsExporter | None = None,
        secrets_ready: tuple[pulumi.Resource, ...] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """The Kubernetes provider comes through ``opts``. Only the Deployment waits for
        ``secrets_ready`` (the VaultStaticSecrets it mounts, and the admission policy)."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        plan = CollectorPlan(settings, shape, receiver, exporter, linode=platform.linode)
        k8s_opts = pulumi.ResourceOptions(parent=self)
        metadata = {"name": plan.deployment, "namespace": plan.namespace, "labels": dict(COMPONENT_LABEL)}
        endpoint = pulumi.Output.from_input(plan.exporter.endpoint if plan.exporter else "")
        config_text = endpoint.apply(lambda value: render_config(collector_config(plan, value or None)))
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=metadata, automount_service_account_token=False, opts=k8s_opts
        )
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={**metadata, "name": f"{plan.deployment}-config"},
            data={"config.yaml": config_text},
            opts=k8s_opts,
        )
        # Only the Pods need their Secrets' VaultStaticSecrets and the admission policy in place.
        after = pulumi.ResourceOptions.merge(
            k8s_opts, pulumi.ResourceOptions(depends_on=[account, config_map, *secrets_ready])
        )
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=metadata,
            spec=config_text.apply(lambda text: deployment_spec(plan, text)),
            opts=after,
        )
        service_extras, spec = service_spec(plan)
        k8s.core.v1.Service(f"{name}-service", metadata={**metadata, **service_extras}, spec=spec, opts=k8s_opts)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy", metadata=metadata, spec=network_policy_spec(plan), opts=k8s_opts
        )
        if plan.settings.replicas > 1:
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=metadata,
                spec={"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(plan)}},
                opts=k8s_opts,
            )
        self.register_outputs(
            {
                "deployment": f"{plan.namespace}/{plan.deployment}",
                "secrets": list(mounted_secrets(plan)),
                "deploymentUid": deployment.metadata.uid,
            }
        )
