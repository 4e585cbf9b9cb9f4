"""The cluster component in both modes, with the arguments the providers receive."""

from __future__ import annotations

import base64
import copy

import yaml

from offline.engine import FAKE_KUBECONFIG, Recording, load_stack_file, run_program


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


def run_existing(
    cluster: dict[str, object], extra: dict[str, object] | None = None, secret: tuple[str, ...] = ()
) -> Recording:
    config, secret_keys = load_stack_file("hub")
    config = copy.deepcopy(config)
    config["fedobs:cluster"] = cluster
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
