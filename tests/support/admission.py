"""Objects and requests for the admission policies' tests: a collector namespace as VSO leaves it,
the Pod controllers of every kind, and who makes each request."""

from __future__ import annotations

import copy
from typing import Any

from components.admission_policies import VSO_MANAGED_BY, VSO_MANAGED_BY_LABEL, VSO_OWNER_UID_LABEL
from components.vso import CONTROLLER_USERNAME
from rig.kyverno_cel import Cluster, vso_secret

NS = "observability"
VSO = CONTROLLER_USERNAME
#: Who applies the stack (any identity that is not VSO's).
PULUMI = "fedobs-deployer"
#: Who tries to walk around the guardrail: may create and update objects in the collector namespace.
INTRUDER = "system:serviceaccount:observability:intruder"
DEPLOYMENT_CONTROLLER = "system:serviceaccount:kube-system:deployment-controller"
REPLICASET_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"
COLLECTOR_LABELS = {"app.kubernetes.io/component": "opentelemetry-collector"}
IMAGE = "otel/opentelemetry-collector-k8s:0.117.0"


def static_secret(
    name: str,
    namespace: str = NS,
    *,
    create: bool = True,
    uid: str | None = None,
    destination: str | None = None,
    auth: str = "vault",
) -> dict[str, Any]:
    """A VaultStaticSecret as the API server holds it (with its ``uid``)."""
    return {
        "apiVersion": "secrets.hashicorp.com/v1beta1",
        "kind": "VaultStaticSecret",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{namespace}-{name}"},
        "spec": {
            "vaultAuthRef": auth,
            "type": "kv-v2",
            "mount": "kv",
            "path": f"otel/{name}",
            "destination": {"name": destination or name, "create": create, "type": "kubernetes.io/tls"},
        },
    }


def synced(static: dict[str, Any]) -> dict[str, Any]:
    """The Secret VSO creates for ``static`` (owner reference with the VaultStaticSecret's UID)."""
    return vso_secret(static, uid=static["metadata"]["uid"])


def plain_secret(name: str, namespace: str = NS, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "type": "Opaque",
        "data": {},
    }


def vso_labels(uid: str) -> dict[str, str]:
    """Every label VSO puts on a Secret it owns (helpers/secrets.go, ``OwnerLabelsForObj``)."""
    return {
        VSO_MANAGED_BY_LABEL: VSO_MANAGED_BY,
        "app.kubernetes.io/name": "vault-secrets-operator",
        "app.kubernetes.io/component": "secret-sync",
        VSO_OWNER_UID_LABEL: uid,
    }


def owner_reference(name: str, uid: str) -> dict[str, str]:
    return {"apiVersion": "secrets.hashicorp.com/v1beta1", "kind": "VaultStaticSecret", "name": name, "uid": uid}


def pod_spec(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hub gateway's Pod spec (its two VSO Secrets mounted); ``extra`` lists are appended."""
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "otelcol",
                "image": IMAGE,
                "volumeMounts": [{"name": "tls", "mountPath": "/tls"}, {"name": "ca", "mountPath": "/ca"}],
            }
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": "otel-gateway-config"}},
            {"name": "tls", "secret": {"secretName": "otel-gateway-tls"}},
            {"name": "ca", "secret": {"secretName": "otel-client-ca"}},
        ],
    }
    for key, value in (extra or {}).items():
        spec[key] = spec.get(key, []) + value if isinstance(value, list) else value
    return spec


def workload(
    kind: str,
    extra: dict[str, Any] | None = None,
    *,
    name: str = "otel-gateway",
    namespace: str = NS,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Pod or Pod controller of ``kind`` whose Pod spec is :func:`pod_spec` (``extra`` merged in),
    with the Pod spec where that kind keeps it."""
    spec = pod_spec(extra)
    metadata = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    selector = {"matchLabels": {"app": name}}
    api, body = {
        "Pod": ("v1", spec),
        "Deployment": ("apps/v1", {"replicas": 2, "selector": selector, "template": template}),
        "StatefulSet": ("apps/v1", {"serviceName": name, "selector": selector, "template": template}),
        "DaemonSet": ("apps/v1", {"selector": selector, "template": template}),
        "ReplicaSet": ("apps/v1", {"replicas": 1, "selector": selector, "template": template}),
        "ReplicationController": ("v1", {"replicas": 1, "selector": {"app": name}, "template": template}),
        "Job": ("batch/v1", {"template": {**template, "spec": {**spec, "restartPolicy": "Never"}}}),
        "CronJob": (
            "batch/v1",
            {
                "schedule": "* * * * *",
                "jobTemplate": {"spec": {"template": {**template, "spec": {**spec, "restartPolicy": "Never"}}}},
            },
        ),
    }[kind]
    return {"apiVersion": api, "kind": kind, "metadata": metadata, "spec": body}


def replica_set_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """The ReplicaSet the Deployment controller creates for ``deployment``."""
    name = deployment["metadata"]["name"]
    template = copy.deepcopy(deployment["spec"]["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = "5d4f8b7c9"
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{name}-5d4f8b7c9",
            "namespace": deployment["metadata"]["namespace"],
            "labels": dict(template["metadata"]["labels"]),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": name,
                    "uid": "uid-deployment",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": deployment["spec"].get("replicas", 1),
            "selector": copy.deepcopy(deployment["spec"]["selector"]),
            "template": template,
        },
    }


def pod_of(controller: dict[str, Any]) -> dict[str, Any]:
    """A Pod ``controller`` (a ReplicaSet, StatefulSet...) creates from its template, named as the
    API server generates it before validating admission."""
    name = controller["metadata"]["name"]
    template = controller["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-x2x9z",
            "generateName": f"{name}-",
            "namespace": controller["metadata"]["namespace"],
            "labels": dict(template.get("metadata", {}).get("labels", {})),
            "ownerReferences": [
                {
                    "apiVersion": controller["apiVersion"],
                    "kind": controller["kind"],
                    "name": name,
                    "uid": "uid-controller",
                    "controller": True,
                }
            ],
        },
        "spec": copy.deepcopy(template["spec"]),
    }


def with_ephemeral_container(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """``pod`` after ``kubectl debug`` added ``container`` through ``pods/ephemeralcontainers``."""
    changed = copy.deepcopy(pod)
    changed["spec"].setdefault("ephemeralContainers", []).append(container)
    return changed


def collector_namespace() -> Cluster:
    """The hub's collector namespace once VSO synced: the gateway's two VaultStaticSecrets and their
    Secrets, the VaultConnection CA Secret Pulumi made, and a Secret made by hand."""
    statics = [static_secret("otel-gateway-tls"), static_secret("otel-client-ca")]
    return Cluster(
        [
            *statics,
            *(synced(s) for s in statics),
            plain_secret("vault-ca"),
            plain_secret("hand-made"),
            synced(static_secret("elsewhere-tls", namespace="apps")),
        ]
    )
