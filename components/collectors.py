"""The OpenTelemetry collector of a stack: the hub's mTLS OTLP gateway, or an edge's collector
that forwards to it with its own client certificate."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components import versions
from components.pod_security import restricted_container, restricted_pod

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


def selector_labels(args: CollectorArgs) -> dict[str, str]:
    """The labels that pick this collector's Pods (Deployment, Service, NetworkPolicy, PDB)."""
    return {"app.kubernetes.io/name": args.deployment, **COMPONENT_LABEL}


def secret_dir(secret_name: str) -> str:
    """Where a mounted Secret's keys appear in the collector's container."""
    return f"{SECRETS_DIR}/{secret_name}"


@dataclass(frozen=True)
class MtlsReceiver:
    """The hub: OTLP accepted only from clients whose certificate chains to ``client_ca_secret``
    (its ``ca.crt``), served with ``server_tls_secret`` (``tls.crt``/``tls.key``) behind a
    LoadBalancer that only ``allowed_source_ranges`` may reach."""

    server_tls_secret: str
    client_ca_secret: str
    hostname: str
    allowed_source_ranges: tuple[str, ...]


@dataclass(frozen=True)
class MtlsExporter:
    """An edge: OTLP forwarded to ``endpoint`` (``host:port``) with ``client_tls_secret``'s
    certificate, verifying the hub's receiver with the same Secret's ``ca.crt``."""

    endpoint: pulumi.Input[str]
    client_tls_secret: str


@dataclass(frozen=True)
class CollectorArgs:
    provider: k8s.Provider
    deployment: str
    namespace: str
    #: What must exist first: the VaultStaticSecrets it mounts (VSO), and the admission policy.
    after: tuple[pulumi.Resource, ...]
    replicas: int = 2
    tls_min_version: str = "1.3"
    memory_limit: str = "512Mi"
    receiver: MtlsReceiver | None = None
    exporter: MtlsExporter | None = None


def mounted_secrets(args: CollectorArgs) -> tuple[str, ...]:
    """Every Secret the collector mounts (each one synced by VSO)."""
    if args.receiver is not None:
        return (args.receiver.server_tls_secret, args.receiver.client_ca_secret)
    if args.exporter is not None:
        return (args.exporter.client_tls_secret,)
    return ()


def receiver_tls(args: CollectorArgs) -> dict[str, Any] | None:
    """The OTLP receiver's TLS settings (the collector's ``configtls.ServerConfig``)."""
    if args.receiver is None:
        return None
    return {
        "cert_file": f"{secret_dir(args.receiver.server_tls_secret)}/tls.crt",
        "key_file": f"{secret_dir(args.receiver.server_tls_secret)}/tls.key",
        "client_ca_file": f"{secret_dir(args.receiver.client_ca_secret)}/ca.crt",
        "min_version": args.tls_min_version,
    }


def collector_config(args: CollectorArgs, exporter_endpoint: str | None) -> dict[str, Any]:
    """The collector's configuration. Pure: the tests read the receiver's and exporter's TLS from it."""
    tls = receiver_tls(args)

    def protocol(port: int) -> dict[str, Any]:
        settings: dict[str, Any] = {"endpoint": f"${{env:MY_POD_IP}}:{port}"}
        if tls is not None:
            settings["tls"] = tls
        return settings

    exporters: dict[str, Any]
    if args.exporter is not None:
        assert exporter_endpoint is not None
        client_dir = secret_dir(args.exporter.client_tls_secret)
        exporters = {
            "otlp/hub": {
                "endpoint": exporter_endpoint,
                "tls": {
                    "insecure": False,
                    "ca_file": f"{client_dir}/ca.crt",
                    "cert_file": f"{client_dir}/tls.crt",
                    "key_file": f"{client_dir}/tls.key",
                    "min_version": args.tls_min_version,
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


def deployment_spec(args: CollectorArgs, config_text: str) -> dict[str, Any]:
    """The Deployment spec: restricted, read-only, no API token, only VSO-synced Secrets mounted.
    The config's digest in the Pod template rolls the Pods when the config changes."""
    labels = selector_labels(args)
    secrets = mounted_secrets(args)
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": f"{args.deployment}-config"}}]
    volumes += [{"name": name, "secret": {"secretName": name, "defaultMode": 0o440}} for name in secrets]
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    mounts += [{"name": name, "mountPath": secret_dir(name), "readOnly": True} for name in secrets]
    probe = {"httpGet": {"path": "/", "port": HEALTH_PORT}, "periodSeconds": 10}
    return {
        "replicas": args.replicas,
        "selector": {"matchLabels": labels},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": {"fedobs.io/config-sha256": hashlib.sha256(config_text.encode()).hexdigest()},
            },
            "spec": {
                "serviceAccountName": args.deployment,
                "automountServiceAccountToken": False,
                "securityContext": {**restricted_pod(COLLECTOR_UID), "fsGroup": COLLECTOR_UID},
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
                            {"name": "GOMEMLIMIT", "value": _go_memory_limit(args.memory_limit)},
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
                            "limits": {"cpu": "1", "memory": args.memory_limit},
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


def service_spec(args: CollectorArgs) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Service's metadata extras and spec: the hub's receiver behind a restricted NodeBalancer
    (TLS passes through to the collector), an edge's receiver inside its cluster only."""
    selector = selector_labels(args)
    ports = [
        {"name": "otlp-grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "protocol": "TCP"},
        {"name": "otlp-http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"},
    ]
    if args.receiver is None:
        return {}, {"type": "ClusterIP", "selector": selector, "ports": ports}
    annotations = {
        "service.beta.kubernetes.io/linode-loadbalancer-default-protocol": "tcp",
        "external-dns.alpha.kubernetes.io/hostname": args.receiver.hostname,
    }
    return {"annotations": annotations}, {
        "type": "LoadBalancer",
        "selector": selector,
        "ports": ports,
        "loadBalancerSourceRanges": list(args.receiver.allowed_source_ranges),
        "externalTrafficPolicy": "Local",
    }


def network_policy_spec(args: CollectorArgs) -> dict[str, Any]:
    """Ingress to the OTLP ports only: from anywhere for the hub's gateway (the LoadBalancer's
    source ranges and mTLS decide), from this cluster's own Pods for an edge's collector."""
    selector = {"matchLabels": selector_labels(args)}
    ports = [{"port": GRPC_PORT, "protocol": "TCP"}, {"port": HTTP_PORT, "protocol": "TCP"}]
    rule: dict[str, Any] = {"ports": ports}
    if args.receiver is None:
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

    def __init__(self, name: str, args: CollectorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        metadata = {"name": args.deployment, "namespace": args.namespace, "labels": dict(COMPONENT_LABEL)}
        endpoint = pulumi.Output.from_input(args.exporter.endpoint if args.exporter else "")
        config_text = endpoint.apply(lambda value: render_config(collector_config(args, value or None)))
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=metadata, automount_service_account_token=False, opts=k8s_opts
        )
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={**metadata, "name": f"{args.deployment}-config"},
            data={"config.yaml": config_text},
            opts=k8s_opts,
        )
        # Only the Pods need their Secrets' VaultStaticSecrets and the admission policy in place.
        after = pulumi.ResourceOptions.merge(
            k8s_opts, pulumi.ResourceOptions(depends_on=[account, config_map, *args.after])
        )
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=metadata,
            spec=config_text.apply(lambda text: deployment_spec(args, text)),
            opts=after,
        )
        service_extras, spec = service_spec(args)
        k8s.core.v1.Service(f"{name}-service", metadata={**metadata, **service_extras}, spec=spec, opts=k8s_opts)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy", metadata=metadata, spec=network_policy_spec(args), opts=k8s_opts
        )
        if args.replicas > 1:
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=metadata,
                spec={"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(args)}},
                opts=k8s_opts,
            )
        self.register_outputs(
            {
                "deployment": f"{args.namespace}/{args.deployment}",
                "secrets": list(mounted_secrets(args)),
                "deploymentUid": deployment.metadata.uid,
            }
        )
