"""The OTel collectors as the hub and edge stacks declare them (under mocks)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml

from components import versions
from offline.engine import Recording, load_stack_file, run_program
from rig.schemas import validate_kubernetes_object


def objects(recording: Recording, kind: str, namespace: str = "observability") -> list[dict[str, Any]]:
    return [
        o for o in recording.kubernetes_objects() if o["kind"] == kind and o["metadata"].get("namespace") == namespace
    ]


def one(recording: Recording, kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects(recording, kind) if o["metadata"]["name"] == name]
    return found


def pod_spec(recording: Recording, deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(recording, "Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def mounted_secret_names(recording: Recording, deployment: str) -> list[str]:
    return sorted(v["secret"]["secretName"] for v in pod_spec(recording, deployment)["volumes"] if "secret" in v)


def config(recording: Recording, deployment: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(one(recording, "ConfigMap", f"{deployment}-config")["data"]["config.yaml"])
    return loaded


@pytest.mark.parametrize(
    ("stack", "deployment", "secrets"),
    [
        ("hub", "otel-gateway", ["otel-client-ca", "otel-gateway-tls"]),
        ("edge", "otel-collector", ["otel-client-tls"]),
    ],
)
def test_collectors_mount_only_vso_secrets_that_restart_them(
    stack: str, deployment: str, secrets: list[str], hub: Recording, edge: Recording
) -> None:
    recording = {"hub": hub, "edge": edge}[stack]
    assert mounted_secret_names(recording, deployment) == secrets
    synced = {o["spec"]["destination"]["name"]: o["spec"] for o in objects(recording, "VaultStaticSecret")}
    for secret in secrets:
        assert synced[secret]["destination"]["create"] is True
        assert {"kind": "Deployment", "name": deployment} in synced[secret]["rolloutRestartTargets"]
    spec = pod_spec(recording, deployment)
    assert not spec.get("imagePullSecrets")
    for container in spec["containers"]:
        assert not container.get("envFrom")
        assert all("secretKeyRef" not in e.get("valueFrom", {}) for e in container.get("env", []))


def test_collector_waits_for_the_vault_static_secrets(hub: Recording) -> None:
    collector = next(r for r in hub.resources if r.name == "hub-collector")
    deployment = next(r for r in hub.resources if r.name == "hub-collector-deployment")
    assert deployment.parent == collector.urn
    static_secrets = {
        r.urn
        for r in hub.of_type("kubernetes:secrets.hashicorp.com/v1beta1:VaultStaticSecret")
        if r.get("metadata.name") in ("otel-gateway-tls", "otel-client-ca")
    }
    assert len(static_secrets) == 2
    assert static_secrets <= set(deployment.dependencies)


def test_hub_receiver_requires_client_certificates_from_client_ca(hub: Recording) -> None:
    receivers = config(hub, "otel-gateway")["receivers"]["otlp"]["protocols"]
    mounts = {m["name"]: m["mountPath"] for m in pod_spec(hub, "otel-gateway")["containers"][0]["volumeMounts"]}
    for protocol in ("grpc", "http"):
        assert receivers[protocol]["tls"] == {
            "cert_file": f"{mounts['otel-gateway-tls']}/tls.crt",
            "key_file": f"{mounts['otel-gateway-tls']}/tls.key",
            "client_ca_file": f"{mounts['otel-client-ca']}/ca.crt",
            "min_version": "1.3",
        }


def test_hub_receiver_is_a_restricted_load_balancer_on_the_certificate_name(hub: Recording) -> None:
    service = one(hub, "Service", "otel-gateway")
    assert service["spec"]["type"] == "LoadBalancer"
    # The Linode CCM ignores loadBalancerSourceRanges; its Cloud Firewall (from this annotation) restricts.
    assert "loadBalancerSourceRanges" not in service["spec"]
    annotations = service["metadata"]["annotations"]
    acl = annotations["service.beta.kubernetes.io/linode-loadbalancer-firewall-acl"]
    assert json.loads(acl) == {"allowList": {"ipv4": ["198.51.100.0/24"]}}
    assert annotations["service.beta.kubernetes.io/linode-loadbalancer-default-protocol"] == "tcp"
    # The collector's receiver speaks no PROXY protocol: the NodeBalancer must not send it one.
    assert "service.beta.kubernetes.io/linode-loadbalancer-default-proxy-protocol" not in annotations
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert [p["port"] for p in service["spec"]["ports"]] == [4317, 4318]
    hostname = service["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"]
    assert hub.outputs["otlpEndpoint"] == f"https://{hostname}:4317"
    certificate = next(
        o
        for o in hub.kubernetes_objects()
        if o["kind"] == "Certificate" and o["metadata"]["name"] == "otel-gateway-tls"
    )
    assert hostname in certificate["spec"]["dnsNames"]


def test_edge_exports_to_the_hub_with_its_client_certificate(hub: Recording, edge: Recording) -> None:
    exporters = config(edge, "otel-collector")["exporters"]
    assert list(exporters) == ["otlp/hub"]
    exporter = exporters["otlp/hub"]
    assert exporter["endpoint"] == hub.outputs["otlpEndpoint"].removeprefix("https://")
    mount = next(
        m["mountPath"]
        for m in pod_spec(edge, "otel-collector")["containers"][0]["volumeMounts"]
        if m["name"] == "otel-client-tls"
    )
    assert exporter["tls"] == {
        "insecure": False,
        "ca_file": f"{mount}/ca.crt",
        "cert_file": f"{mount}/tls.crt",
        "key_file": f"{mount}/tls.key",
        "min_version": "1.3",
    }
    service = one(edge, "Service", "otel-collector")
    assert service["spec"]["type"] == "ClusterIP"
    policy = one(edge, "NetworkPolicy", "otel-collector")["spec"]
    assert policy["ingress"] == [
        {
            "ports": [{"port": 4317, "protocol": "TCP"}, {"port": 4318, "protocol": "TCP"}],
            "from": [{"namespaceSelector": {}}],
        }
    ]


@pytest.mark.parametrize(("stack", "deployment"), [("hub", "otel-gateway"), ("edge", "otel-collector")])
def test_collector_pods_are_restricted_and_pinned(stack: str, deployment: str, hub: Recording, edge: Recording) -> None:
    recording = {"hub": hub, "edge": edge}[stack]
    spec = pod_spec(recording, deployment)
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["image"] == f"{versions.OTEL_COLLECTOR_IMAGE}:{versions.OTEL_COLLECTOR_VERSION}"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert {"name": "GOMEMLIMIT", "value": "409MiB"} in container["env"]
    namespace = next(
        o
        for o in recording.kubernetes_objects()
        if o["kind"] == "Namespace" and o["metadata"]["name"] == "observability"
    )
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_config_change_rolls_the_pods(hub: Recording) -> None:
    text = one(hub, "ConfigMap", "otel-gateway-config")["data"]["config.yaml"]
    annotations = one(hub, "Deployment", "otel-gateway")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["fedobs.io/config-sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert "&id" not in text, "the rendered config must not use YAML anchors"


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_collector_objects_conform_to_kubernetes(stack: str, hub: Recording, edge: Recording) -> None:
    recording = {"hub": hub, "edge": edge}[stack]
    kinds = set()
    for obj in recording.kubernetes_objects():
        if obj["metadata"].get("namespace") == "observability" and obj["kind"] not in (
            "VaultConnection",
            "VaultAuth",
            "VaultStaticSecret",
            "Secret",
        ):
            assert validate_kubernetes_object(obj) == []
            kinds.add(obj["kind"])
    assert kinds >= {"Deployment", "Service", "ConfigMap", "ServiceAccount", "NetworkPolicy"}


def test_disabled_collector_declares_nothing_and_frees_its_restart_target() -> None:
    config, secret_keys = load_stack_file("hub")
    config["fedobs:collector"] = {"enabled": False}
    config["fedobs:distribution"] = {
        "syncs": [{"namespace": "observability", "secretName": "otel-gateway-tls", "kvPath": "otel/otel-gateway-tls"}]
    }
    recording = run_program("hub", config, secret_keys)
    assert recording.error is None, recording.error
    assert not [r for r in recording.resources if r.type == "fedobs:observability:OtelCollector"]
    assert not [o for o in recording.kubernetes_objects() if o["kind"] == "Deployment"]


def test_admission_stands_without_collector_or_syncs_and_can_be_switched_off() -> None:
    config, secret_keys = load_stack_file("edge")
    config["fedobs:collector"] = {"enabled": False}
    config["fedobs:distribution"] = {"syncs": []}
    hub = run_program("hub", *load_stack_file("hub"))
    recording = run_program("edge", config, secret_keys, {"organization/fedobs/hub": hub.outputs})
    assert recording.error is None, recording.error
    (policy,) = [o for o in recording.kubernetes_objects() if o["kind"] == "ValidatingPolicy"]
    # no collector namespace: only the placement rule, which refuses every Pod or controller labelled
    # as a collector (no lookup rule, nothing to read)
    assert policy["metadata"]["name"] == "otel-collectors-in-collector-namespaces"
    assert policy["spec"]["validations"][0]["expression"] == "object.metadata.namespace in []"
    assert not [r for r in recording.resources if r.type.endswith(":Role") and r.name.endswith("-lookups")]
    config["fedobs:admission"] = {"enabled": False}
    switched_off = run_program("edge", config, secret_keys, {"organization/fedobs/hub": hub.outputs})
    assert switched_off.error is None, switched_off.error
    assert not [r for r in switched_off.resources if r.type == "fedobs:guardrails:Admission"]


@pytest.mark.parametrize(
    ("limit", "expected"),
    [("512Mi", "409MiB"), ("1Gi", "819MiB"), ("512M", "390MiB"), ("1G", "762MiB"), ("2048Ki", "1MiB")],
)
def test_go_memory_limit_reads_every_quantity_suffix_the_config_accepts(limit: str, expected: str) -> None:
    from components.collectors import _go_memory_limit

    assert _go_memory_limit(limit) == expected
