"""Step (a) of cutting an edge off as the hub's plan declares it (docs/security.md, "Cutting an edge
off"); proven on OpenBao in tests/real/test_edge_cutoff_real.py."""

from __future__ import annotations

import json
import re

from components.cert_manager import cert_manager_values
from offline.engine import Recording, load_stack_file, run_program

KEY = "hub-transit-unseal-edge-ap-key"


def record(**config: object) -> Recording:
    base, secret_keys = load_stack_file("hub")
    recording = run_program("hub", {**base, **config}, secret_keys)
    assert recording.error is None, recording.error
    return recording


def test_a_retired_edge_keeps_only_its_protected_transit_key() -> None:
    before = record()
    after = record(**{"fedobs:edges": [{"name": "edge-eu"}], "fedobs:retiredEdges": ["edge-ap"]})
    kept = {r.urn: r for r in after.resources}
    removed = {(r.type, r.name) for r in before.resources if r.urn not in kept}
    assert removed == {
        ("kubernetes:cert-manager.io/v1:Certificate", "hub-otlp-pki-otel-client-tls-edge-ap"),
        ("vault:index/policy:Policy", "hub-vault-config-edge-edge-ap-policy"),
        ("vault:appRole/authBackendRole:AuthBackendRole", "hub-vault-config-edge-edge-ap-role"),
        ("vault:index/policy:Policy", "hub-transit-unseal-edge-ap-policy"),
        ("vault:tokenauth/authBackendRole:AuthBackendRole", "hub-transit-unseal-edge-ap-token-role"),
        ("vault:index/policy:Policy", "hub-edge-identity-edge-ap-policy"),
        ("vault:jwt/authBackendRole:AuthBackendRole", "hub-edge-identity-edge-ap-role"),
    }
    key_before = before.one("vault:transit/secretBackendKey:SecretBackendKey", KEY)
    key_after = kept[key_before.urn]
    assert key_after.protect and key_after.inputs == key_before.inputs
    assert key_after.inputs["deletionAllowed"] is False
    # nothing else of the hub names the retired edge any more (its cert-sync copies it no longer)
    rest = [r for r in after.resources if r.urn != key_before.urn]
    assert not re.search(r"edge-ap\b", json.dumps([[r.name, r.inputs] for r in rest]))


def test_cert_manager_keeps_a_deleted_certificate_s_secret() -> None:
    """The flow's step (c) deletes the Secret by hand: cert-manager runs without
    --enable-certificate-owner-ref, so deleting the Certificate leaves its Secret."""
    assert "owner-ref" not in json.dumps(cert_manager_values()).lower()
