"""The cluster component in both modes, with the arguments the providers receive."""

from __future__ import annotations

import base64
import copy
from typing import Any

import yaml

from config import ExistingClusterSettings, parse_stack_config
from offline.engine import FAKE_KUBECONFIG, ROOT, Recording, load_stack_file, run_program


def test_lke_cluster_arguments(hub: Recording) -> None:
    lke = hub.one("linode:index/lkeCluster:LkeCluster")
    assert lke.name == "hub-cluster-lke" and lke.protect
    assert (lke.inputs["label"], lke.inputs["region"], lke.inputs["k8sVersion"]) == ("fedobs-hub", "us-ord", "1.33")
    assert lke.inputs["tags"] == ["fedobs", "hub"]
    assert lke.inputs["controlPlane"] == {
        "highAvailability": True,
        "acl": {"enabled": True, "addresses": [{"ipv4s": ["203.0.113.0/24"], "ipv6s": ["2001:db8:1234::/48"]}]},
    }
    assert lke.inputs["pools"] == [
        {
            "type": "g6-standard-4",
            "count": 3,
            "autoscaler": {"min": 3, "max": 6},
            "labels": {"fedobs.io/pool": "platform"},
            "taints": [],
            "tags": ["fedobs-platform"],
        }
    ]
    # The autoscaler owns the live node count; the kubeconfig is a secret output.
    assert lke.ignore_changes == ["pools[0].count"]
    assert "kubeconfig" in lke.additional_secret_outputs


def test_kubernetes_provider_uses_the_lke_kubeconfig(hub: Recording) -> None:
    provider = hub.one("pulumi:providers:kubernetes")
    assert provider.is_secret_input("kubeconfig")
    assert provider.inputs["kubeconfig"] == FAKE_KUBECONFIG  # decoded from LKE's base64 form
    assert "kubeconfig" not in hub.outputs, "a stack reference to the hub must not reach its cluster"


def test_edge_pool_taints_and_no_ha(edge: Recording) -> None:
    lke = edge.one("linode:index/lkeCluster:LkeCluster")
    assert lke.inputs["controlPlane"]["highAvailability"] is False
    assert lke.inputs["controlPlane"]["acl"]["addresses"] == [{"ipv4s": ["203.0.113.0/24"], "ipv6s": []}]


def existing_cluster_hub(cluster: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The shipped hub, every feature on, on an existing cluster: without its two Linode-only values
    (the storage class and a bucket to create; both are config errors there), its snapshots going to
    an existing bucket at another S3-compatible endpoint."""
    config, secret_keys = load_stack_file("hub")
    config = copy.deepcopy(config)
    config["fedobs:cluster"] = cluster
    vault = config["fedobs:vault"]
    del vault["storageClass"]
    vault["snapshots"]["bucket"] = {
        "name": "fedobs-snapshots",
        "region": "us-east-1",
        "endpoint": "https://minio.example.internal:9000",
    }
    return config, secret_keys


def run_existing(
    cluster: dict[str, Any], extra: dict[str, object] | None = None, secret: tuple[str, ...] = ()
) -> Recording:
    config, secret_keys = existing_cluster_hub(cluster)
    config.update(extra or {})
    recording = run_program("hub", config, [*secret_keys, *secret])
    assert recording.error is None, recording.error
    return recording


def test_existing_cluster_from_a_context_declares_no_cloud_resource() -> None:
    recording = run_existing({"mode": "existing", "context": "kind-fedobs"})
    assert not [r for r in recording.resources if r.type.startswith("linode:index/lkeCluster")]
    provider = recording.one("pulumi:providers:kubernetes")
    assert provider.inputs["context"] == "kind-fedobs"
    assert "kubeconfig" not in provider.inputs
    # everything else is the same stack, on that provider
    assert recording.one("fedobs:vault:Vault", "hub-vault")
    assert all(r.provider.startswith(provider.urn) for r in recording.resources if r.type.startswith("kubernetes:"))


def test_existing_cluster_from_a_secret_kubeconfig() -> None:
    kubeconfig = yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []})
    recording = run_existing({"mode": "existing"}, {"fedobs:kubeconfig": kubeconfig}, secret=("fedobs:kubeconfig",))
    provider = recording.one("pulumi:providers:kubernetes")
    assert provider.inputs["kubeconfig"] == kubeconfig and provider.is_secret_input("kubeconfig")
    assert "context" not in provider.inputs
    assert "kubeconfig" not in recording.outputs, "the hub exports no kubeconfig, given or created"


def test_fake_kubeconfig_is_what_lke_returns_encoded() -> None:
    assert base64.b64decode(base64.b64encode(FAKE_KUBECONFIG.encode())).decode() == FAKE_KUBECONFIG


# --------------------------------------------------------------------------------------------------
# existing-cluster mode declares nothing Linode-only (issue 17)
# --------------------------------------------------------------------------------------------------
EXAMPLE = ROOT / "examples" / "kind"
#: The classes of Linode's Block Storage CSI driver (linode-block-storage, -retain, -encrypted...).
LINODE_STORAGE_CLASSES = "linode-block-storage"
LINODE_ANNOTATIONS = "service.beta.kubernetes.io/linode-"


def linode_traces(recording: Recording) -> list[str]:
    """Everything Linode-only a recording declares: a ``linode:`` resource or provider, a
    ``service.beta.kubernetes.io/linode-*`` annotation or a Linode storage class anywhere in any
    resource's inputs (Kubernetes objects and Helm values alike)."""
    found = [
        f"resource {r.type} {r.name}"
        for r in recording.resources
        if r.type.startswith(("linode:", "pulumi:providers:linode"))
    ]

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if str(key).startswith(LINODE_ANNOTATIONS):
                    found.append(f"{where}: annotation {key}")
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")
        elif isinstance(value, str) and value.startswith(LINODE_STORAGE_CLASSES):
            found.append(f"{where}: {value}")

    for resource in recording.resources:
        walk(resource.inputs, f"{resource.type} {resource.name}")
    return found


def test_the_detector_sees_the_lke_hubs_linode_values(hub: Recording) -> None:
    traces = "\n".join(linode_traces(hub))
    for expected in (
        "resource linode:index/lkeCluster:LkeCluster hub-cluster-lke",
        "resource linode:index/objectStorageBucket:ObjectStorageBucket hub-raft-snapshots-bucket",
        "kubernetes:core/v1:Service hub-vault-external.metadata.annotations: annotation "
        "service.beta.kubernetes.io/linode-loadbalancer-default-protocol",
        "kubernetes:core/v1:Service hub-collector-service.metadata.annotations: annotation "
        "service.beta.kubernetes.io/linode-loadbalancer-default-protocol",
        "kubernetes:helm.sh/v3:Release hub-vault-release.values.server.dataStorage.storageClass: "
        "linode-block-storage-retain",
    ):
        assert expected in traces, traces


def test_an_existing_cluster_with_every_feature_declares_nothing_linode() -> None:
    recording = run_existing({"mode": "existing", "context": "kind-fedobs"})
    assert linode_traces(recording) == []
    # the same features, without Linode: snapshots to the configured endpoint, plain LoadBalancers,
    # the cluster's default StorageClass for the Vault volumes
    cronjob = next(o for o in recording.kubernetes_objects() if o["metadata"]["name"] == "vault-raft-snapshot")
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SNAPSHOT_S3_ENDPOINT"] == "https://minio.example.internal:9000"
    services = {o["metadata"]["name"]: o for o in recording.kubernetes_objects() if o["kind"] == "Service"}
    balanced = sorted(name for name, s in services.items() if s["spec"]["type"] == "LoadBalancer")
    assert balanced == ["otel-gateway", "vault-external"]
    # the cluster's own load balancer: the ranges as loadBalancerSourceRanges (kube-proxy enforces them),
    # Vault's plain listener (no NodeBalancer sends PROXY headers), no PROXY protocol listener at all
    vault_lb = services["vault-external"]["spec"]
    assert vault_lb["loadBalancerSourceRanges"] == ["203.0.113.0/24", "198.51.100.0/24", "2001:db8:1234::/48"]
    assert vault_lb["ports"] == [{"name": "https", "port": 8200, "targetPort": 8200, "protocol": "TCP"}]
    assert services["otel-gateway"]["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    hcl = next(r for r in recording.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault")
    assert "proxy_protocol" not in hcl.inputs["values"]["server"]["ha"]["raft"]["config"]
    release = next(r for r in recording.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault")
    server = release.inputs["values"]["server"]
    # unset (the SDK drops None from the values it sends): the chart's default, storageClass null, so
    # the claims name no class and the cluster's default StorageClass provisions them
    assert "storageClass" not in server["dataStorage"] and "storageClass" not in server["auditStorage"]


def test_the_kind_example_validates_and_declares_nothing_linode() -> None:
    # an example to copy, not a stack the deploy workflow would pick up from the repository root
    assert (EXAMPLE / "Pulumi.kind.yaml").is_file() and not (ROOT / "Pulumi.kind.yaml").exists()
    config, secret_keys = load_stack_file("kind", EXAMPLE)
    raw = {k.removeprefix("fedobs:"): v for k, v in config.items() if k.startswith("fedobs:")}
    parsed = parse_stack_config("kind", raw, [k.removeprefix("fedobs:") for k in secret_keys])
    assert isinstance(parsed.cluster, ExistingClusterSettings) and parsed.cluster.context == "kind-fedobs"
    recording = run_program("kind", config, secret_keys)
    assert recording.error is None, recording.error
    assert linode_traces(recording) == []
    provider = recording.one("pulumi:providers:kubernetes")
    assert provider.inputs["context"] == "kind-fedobs"
    assert recording.outputs["vaultAddress"] == "https://127.0.0.1:8200"
