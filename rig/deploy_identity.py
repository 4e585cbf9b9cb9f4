"""Edge deploy identities made real here: a signing key the test owns, JWTs signed with it, the hub
configured to trust it, and an edge stack that creates its own hub credentials on a real hub Vault.

In CI the JWT is GitHub's OIDC token; outside it, one an operator signs. Both reach Vault's JWT auth
the same way: a compact JWS whose ``iss``, ``aud`` and ``sub`` the hub's role checks. Here the key
pair is generated per test run (ES256, P-256), and the hub's ``fedobs:edgeDeployIdentity`` lists its
public key in ``jwtValidationPubkeys`` instead of GitHub's discovery URL (no network here).

``DeployKey.sign(subject, audience)``
    A JWT as an identity provider issues it (``iss``, ``sub``, ``aud``, ``iat``, ``nbf``, ``exp``).
``trusting(config, key)``
    The hub's config with its edge deploy identity and its own CI identity (``fedobs:hubDeployIdentity``)
    verified by ``key`` (issuer and keys replaced).
``edge_jwt(key, hub, edge)`` / ``edge_link_resources(hub)``
    A JWT with the subject and audience the hub's role for ``edge`` expects / the resources the hub
    declares for its edges (what an edge's deploy identity needs to exist on the hub).
``deploy_login(url, ca_file, edge, jwt)``
    The login the edge's hub provider makes (``auth/jwt-edges/login`` as ``edge-deploy-<edge>``).
``edge_on_real_hub(hub, key, hub_outputs, url, ca_file, edge=None)``
    The edge stack with the credentials its deploy identity created on the hub: its ``HubLink``'s
    Vault resources applied to the hub with its own deploy login, then the stack recorded again
    with what the hub returned, as a real ``pulumi up`` would hold them.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from components.edge_identity import deploy_role
from components.vault_names import EDGE_DEPLOY_JWT_MOUNT
from offline.engine import RecordedResource, Recording, load_stack_file, run_program
from rig.applier import AppliedVault, VaultApplier
from rig.hub_edge import children
from rig.openbao import ApiResponse, api

#: The issuer the test identity provider signs as (any https URL: Vault compares it, never fetches it).
TEST_ISSUER = "https://deploy-identity.fedobs.test"
IDENTITY_KEY = "fedobs:edgeDeployIdentity"
#: Pulumi's own CI login on the hub (components.admin_identity), trusted the same way.
HUB_IDENTITY_KEY = "fedobs:hubDeployIdentity"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class DeployKey:
    """An ES256 signing key of a test identity provider."""

    issuer: str = TEST_ISSUER
    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def sign(self, subject: str, audience: str, *, issuer: str | None = None, ttl: int = 300) -> str:
        now = int(time.time())
        header = {"alg": "ES256", "typ": "JWT"}
        claims = {
            "iss": issuer or self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now - 5,
            "exp": now + ttl,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = self.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def trusting(config: Mapping[str, Any], key: DeployKey) -> dict[str, Any]:
    """``config`` (a hub's) with its edge deploy identity, and its own CI identity where it declares
    one, verified by ``key``; subjects and audiences unchanged."""
    changed = copy.deepcopy(dict(config))
    for name in (IDENTITY_KEY, HUB_IDENTITY_KEY):
        if name not in changed:
            continue
        identity = dict(changed[name])
        identity.pop("oidcDiscoveryUrl", None)
        changed[name] = {**identity, "issuer": key.issuer, "jwtValidationPubkeys": [key.public_pem]}
    return changed


def edge_jwt(key: DeployKey, hub: Recording, edge: str) -> str:
    """A JWT of ``edge``'s deploy identity as the hub's role for it expects (its subject and audience)."""
    role = hub.one("vault:jwt/authBackendRole:AuthBackendRole", f"hub-edge-identity-{edge}-role")
    return key.sign(role.inputs["boundSubject"], role.inputs["boundAudiences"][0])


def edge_link_resources(hub: Recording) -> list[RecordedResource]:
    """What the hub declares for its edges: the transit keys and token roles, the deploy identities,
    and from its Vault configuration the edges' AppRole mount, roles and policies."""
    own = children(hub, "hub-transit-unseal", "hub-edge-identity")
    return own + [r for r in children(hub, "hub-vault-config") if r.name.startswith("hub-vault-config-edge")]


def deploy_login(url: str, ca_file: str | None, edge: str, jwt: str) -> ApiResponse:
    return api(
        url,
        "POST",
        f"auth/{EDGE_DEPLOY_JWT_MOUNT}/login",
        body={"role": deploy_role(edge), "jwt": jwt},
        ca_file=ca_file,
    )


def deploy_token(url: str, ca_file: str | None, edge: str, jwt: str) -> str:
    """A deploy login's token (``RuntimeError`` if the hub refuses it)."""
    login = deploy_login(url, ca_file, edge, jwt)
    if login.status != 200:
        raise RuntimeError(f"deploy login of {edge} refused: {login.status} {login.text.strip()}")
    return str(login.body["auth"]["client_token"])


def hub_link_outputs(applied: AppliedVault) -> dict[str, dict[str, Any]]:
    """What the hub returned for the edge's HubLink resources, by resource name, as provider outputs."""
    return {
        **{name: {"clientToken": token} for name, token in applied.tokens.items()},
        **{name: {"secretId": secret_id} for name, secret_id in applied.secret_ids.items()},
    }


def edge_on_real_hub(
    hub: Recording,
    key: DeployKey,
    hub_outputs: Mapping[str, Any],
    url: str,
    ca_file: str | None,
    edge: str | None = None,
) -> tuple[Recording, AppliedVault]:
    """``pulumi up`` of the shipped edge stack (as ``edge``, when given) against the hub at ``url``:
    its stack reference (``fedobs:hubStack``) reads ``hub_outputs``; its deploy identity (a JWT of
    ``key`` for the subject ``hub`` binds it to) logs in and creates its hub credentials as its
    HubLink declares them; the stack is then recorded again with the hub's answers (its seal token
    and cert-sync secret_id) in place."""
    config, secret_keys = load_stack_file("edge")
    name = edge or str(config["fedobs:edgeName"])
    config = {**config, "fedobs:edgeName": name}
    references = {str(config["fedobs:hubStack"]): hub_outputs}
    token = deploy_token(url, ca_file, name, edge_jwt(key, hub, name))

    def record(provider_outputs: Mapping[str, Mapping[str, Any]] | None = None) -> Recording:
        return run_program("edge", config, secret_keys, references, provider_outputs=provider_outputs)

    first = record()
    if first.error is not None:
        raise RuntimeError(f"the edge stack failed under mocks: {first.error}")
    link = first.one("fedobs:link:HubLink")
    applied = VaultApplier(url, token, ca_file=ca_file).apply(r for r in first.resources if r.parent == link.urn)
    recording = record(hub_link_outputs(applied))
    if recording.error is not None:
        raise RuntimeError(f"the edge stack failed under mocks: {recording.error}")
    return recording, applied
