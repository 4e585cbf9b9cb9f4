"""The resource tree of both shipped stacks: parenting, naming, providers, secrets, protection."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest

from offline.engine import RecordedResource, Recording, run_stack_file

COMPONENT_TOKEN = re.compile(r"^fedobs:[a-z]+:[A-Z][A-Za-z]+$")


def components(recording: Recording) -> list[RecordedResource]:
    return [r for r in recording.resources if not r.custom and r.type.startswith("fedobs:")]


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_every_resource_is_inside_a_named_component(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    stack_urn_suffix = "::pulumi:pulumi:Stack::fedobs-" + stack
    for component in components(recording):
        assert COMPONENT_TOKEN.match(component.type), component.type
        assert component.parent.endswith(stack_urn_suffix), f"{component.name} is not a top-level component"
    for resource in recording.resources:
        if not resource.custom:
            continue
        parent = recording.by_urn(resource.parent)
        assert parent is not None and not parent.custom, f"orphan resource {resource.type} {resource.name}"
        assert resource.name.startswith(parent.name + "-"), (
            f"{resource.name} is not prefixed by its component's name {parent.name}"
        )


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_resources_use_the_stack_providers(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    k8s_provider = recording.one("pulumi:providers:kubernetes")
    prefix = "hub" if stack == "hub" else "edge-eu"
    vault_provider = recording.one("pulumi:providers:vault", f"{prefix}-vault-provider")
    # An edge also reaches the hub's Vault: only its HubLink's resources, through the hub provider.
    hub_provider = recording.one("pulumi:providers:vault", "edge-eu-hub-vault") if stack == "edge" else None
    for resource in recording.resources:
        if resource.type.startswith("kubernetes:"):
            assert resource.provider.startswith(k8s_provider.urn + "::"), resource.name
        if resource.type.startswith("vault:"):
            on_hub = hub_provider is not None and resource.name.startswith("edge-eu-hub-")
            expected = hub_provider if on_hub else vault_provider
            assert expected is not None and resource.provider.startswith(expected.urn + "::"), resource.name
    if hub_provider is not None:
        on_hub = sorted(r.type for r in recording.resources if r.provider.startswith(hub_provider.urn + "::"))
        assert on_hub == [
            "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId",
            "vault:index/token:Token",
        ]


def _values(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _values(v)]
    if isinstance(node, list):
        return [s for v in node for s in _values(v)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_no_secret_value_in_plain_outputs_or_inputs(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    # Values the mocks generate for secret material, and secure config placeholders.
    secret_marker = re.compile(r"mock-password-|mock-token-|mock-secret-id-|PRIVATE KEY|\[secret-placeholder-value\]")
    for name, value in recording.outputs.items():
        if name not in recording.secret_outputs:
            assert not any(secret_marker.search(s) for s in _values(value)), f"output {name} leaks a secret"
    for resource in recording.resources:
        for path, value in _flatten(resource.inputs):
            if isinstance(value, str) and secret_marker.search(value):
                assert resource.is_secret_input(path), (
                    f"{resource.type} {resource.name} input {path} holds a secret in plain text"
                )
    if stack == "edge":
        assert "kubeconfig" in recording.secret_outputs


def _flatten(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for k, v in node.items() for item in _flatten(v, f"{path}.{k}" if path else k)]
    if isinstance(node, list):
        return [item for i, v in enumerate(node) for item in _flatten(v, f"{path}.{i}" if path else str(i))]
    return [(path, node)]


def test_hub_exports_only_what_every_edge_may_know(hub: Recording) -> None:
    """A StackReference reads every output, and the edge keeps what it read in its state: the hub
    exports no credential, no kubeconfig and nothing per edge."""
    assert hub.outputs == {
        "role": "hub",
        "vaultAddress": "https://vault.hub.fedobs.example.com:8200",
        "vaultCaCert": hub.outputs["vaultCaCert"],
        "otlpEndpoint": "https://otlp.hub.fedobs.example.com:4317",
    }
    assert hub.outputs["vaultCaCert"].startswith("-----BEGIN CERTIFICATE-----")
    assert hub.secret_outputs == set()
    assert not hub.of_type("vault:index/token:Token"), "the hub mints no edge's token"
    assert not hub.of_type("vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId")
    assert not hub.of_type("pulumi:pulumi:StackReference"), "the hub must read no other stack"


def test_an_edge_state_holds_its_own_hub_credentials_only(hub: Recording, edge: Recording) -> None:
    """What the edge's state holds of the hub: its public outputs, and the two secrets its own deploy
    identity created (its seal token and cert-sync secret_id), nothing of edge-ap."""
    assert not any("edge-ap" in s for s in _values(edge.outputs))
    for resource in edge.resources:
        for path, value in _flatten(resource.inputs):
            assert not (isinstance(value, str) and "edge-ap" in value), f"{resource.name} {path} names edge-ap"
    token = edge.one("vault:index/token:Token")
    assert token.inputs["roleName"] == "transit-unseal-edge-eu"
    secret_id = edge.one("vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId")
    assert (secret_id.inputs["backend"], secret_id.inputs["roleName"]) == ("approle-edges", "edge-eu")
    provider = edge.one("pulumi:providers:vault", "edge-eu-hub-vault")
    login = json.loads(provider.inputs["authLoginJwt"])
    assert login == {"role": "edge-deploy-edge-eu", "mount": "jwt-edges"}, "the JWT itself comes from the environment"
    assert provider.inputs["skipChildToken"] == "true"
    assert provider.inputs["address"] == hub.outputs["vaultAddress"]
    assert provider.inputs["caCertFile"].endswith(".fedobs/edge/hub-vault-ca.pem")


def test_edge_reads_the_hub_through_one_stack_reference(edge: Recording) -> None:
    reference = edge.one("pulumi:pulumi:StackReference")
    assert reference.inputs["name"] == "organization/fedobs/hub"
    assert edge.outputs["hubVaultAddress"] == "https://vault.hub.fedobs.example.com:8200"
    assert edge.outputs["hubOtlpEndpoint"] == "https://otlp.hub.fedobs.example.com:4317"


@pytest.mark.parametrize(
    ("outputs", "named"),
    [
        ({}, "vaultAddress"),
        ({"vaultAddress": "http://vault.hub:8200"}, "vaultAddress"),
        ({"vaultAddress": "https://vault.hub:8200", "vaultCaCert": "not a pem"}, "vaultCaCert"),
        ({"vaultAddress": "https://vault.hub:8200"}, "otlpEndpoint"),
    ],
)
def test_missing_or_malformed_hub_output_is_named(outputs: dict[str, Any], named: str) -> None:
    recording = run_stack_file("edge", {"organization/fedobs/hub": outputs})
    assert recording.error is not None
    assert f"hub stack 'organization/fedobs/hub' output '{named}' is missing or malformed" in str(recording.error)


def test_stateful_resources_are_protected(hub: Recording, edge: Recording) -> None:
    for recording in (hub, edge):
        assert recording.one("linode:index/lkeCluster:LkeCluster").protect
        release = next(r for r in recording.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault")
        assert release.protect
        vault_ns = next(
            r for r in recording.of_type("kubernetes:core/v1:Namespace") if r.inputs["metadata"]["name"] == "vault"
        )
        assert vault_ns.protect


def test_program_opens_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Preview safety: evaluating the program under mocks (preview mode) makes no connection."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError(f"the program tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, a[0]))  # type: ignore[misc]
    hub = run_stack_file("hub", preview=True)
    assert hub.error is None, hub.error
    edge = run_stack_file(
        "edge",
        {
            "organization/fedobs/hub": json.loads(
                json.dumps(
                    {
                        "vaultAddress": "https://vault.hub.fedobs.example.com:8200",
                        "vaultCaCert": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
                        "otlpEndpoint": "https://otlp.hub:4317",
                    }
                )
            )
        },
        preview=True,
    )
    assert edge.error is None, edge.error
    assert attempts == []
