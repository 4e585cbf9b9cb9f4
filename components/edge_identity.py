"""On the hub: who may deploy each edge, proven by a signed JWT, and what that identity may mint.

An edge's stack logs in to the hub's Vault with its own deploy identity (a GitHub Actions OIDC
token in CI, a token signed with an operator key outside it) and creates its own hub credentials
there: its transit-unseal token and its cert-sync AppRole secret. The hub exports no credential, so
no stack reference and no referencing state holds another edge's secrets.
"""

from __future__ import annotations

from typing import Annotated, Self

import pulumi
import pulumi_vault as vault
from pydantic import AfterValidator, Field, field_validator, model_validator

from components.settings import Settings
from components.transit_unseal import transit_token_role
from components.vault_names import EDGE_APPROLE_MOUNT, EDGE_DEPLOY_JWT_MOUNT, EDGE_DEPLOY_PREFIX
from components.vault_policies import Grant, render_policy, token_role_use

TYPE_TOKEN = "fedobs:vault:EdgeDeployIdentity"
#: The placeholder of ``subjectTemplate`` that becomes the edge's name.
EDGE_PLACEHOLDER = "{edge}"
#: A deploy login lives for one ``pulumi up``; nothing it mints depends on it staying alive.
DEFAULT_TOKEN_TTL_SECONDS = 900


def _https(value: str) -> str:
    if not value.startswith("https://"):
        raise ValueError(f"{value!r} is not an https:// URL")
    return value


def _pem_public_key(value: str) -> str:
    if "-----BEGIN PUBLIC KEY-----" not in value:
        raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY-----)")
    return value


HttpsUrl = Annotated[str, AfterValidator(_https)]
PemPublicKey = Annotated[str, AfterValidator(_pem_public_key)]


class DeployIssuerSettings(Settings):
    """Who signs deploy JWTs and for which audience: the JWT's ``iss`` must equal ``issuer`` and its
    ``aud`` contain ``audience``. Keys come from ``oidcDiscoveryUrl`` (GitHub: the issuer itself) or
    ``jwtValidationPubkeys`` (an operator's key pair): exactly one of the two."""

    issuer: HttpsUrl
    audience: str = Field(min_length=1)
    oidc_discovery_url: HttpsUrl | None = None
    jwt_validation_pubkeys: tuple[PemPublicKey, ...] = ()
    token_ttl: int = Field(default=DEFAULT_TOKEN_TTL_SECONDS, ge=60, le=3600)

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if (self.oidc_discovery_url is None) == (not self.jwt_validation_pubkeys):
            raise ValueError("set exactly one of oidcDiscoveryUrl and jwtValidationPubkeys")
        return self


class EdgeDeployIdentitySettings(DeployIssuerSettings):
    """``fedobs:edgeDeployIdentity``: how the hub recognises the deploy identity of each edge.

    Besides issuer, audience and keys (:class:`DeployIssuerSettings`), the JWT's ``sub`` must
    equal the edge's subject: ``subjectTemplate`` with ``{edge}`` replaced by the edge's name
    (GitHub Actions: ``repo:<owner>/<repo>:environment:<edge>``), or the edge's ``deploySubject``.
    """

    subject_template: str = Field(min_length=1)

    @field_validator("subject_template")
    @classmethod
    def _one_subject_per_edge(cls, template: str) -> str:
        if template.count(EDGE_PLACEHOLDER) != 1:
            raise ValueError(f"must contain {EDGE_PLACEHOLDER} exactly once, or every edge would share one identity")
        return template

    def subject(self, edge: str, override: str | None = None) -> str:
        return override if override is not None else self.subject_template.replace(EDGE_PLACEHOLDER, edge)


def deploy_role(edge: str) -> str:
    """The JWT role (and policy) of ``edge``'s deploy identity on the hub."""
    return f"{EDGE_DEPLOY_PREFIX}{edge}"


def deploy_grants(edge: str) -> list[Grant]:
    """What an edge's deploy identity needs for its own hub credentials, and nothing of another edge.

    The Vault provider's ``vault_token`` reads and revokes the token it made by accessor
    (``auth/token/lookup-accessor``, ``revoke-accessor``); ``approle_auth_backend_role_secret_id``
    reads and destroys its secret through the role's ``secret-id-accessor`` paths.
    """
    role = f"auth/{EDGE_APPROLE_MOUNT}/role/{edge}"
    return [
        *token_role_use(transit_token_role(edge)),
        Grant("auth/token/lookup-accessor", ("update",)),
        Grant("auth/token/revoke-accessor", ("update",)),
        Grant("auth/token/lookup-self", ("read",)),
        Grant(f"{role}/secret-id", ("update",)),
        Grant(f"{role}/secret-id-accessor/lookup", ("update",)),
        Grant(f"{role}/secret-id-accessor/destroy", ("update",)),
    ]


def deploy_policy_hcl(edge: str) -> str:
    return render_policy(deploy_role(edge), deploy_grants(edge), token_roles=(transit_token_role(edge),))


class EdgeDeployIdentity(pulumi.ComponentResource):
    """The hub's JWT auth mount for edge deploys, with one role per configured edge.

    Guarantees: a role accepts only a JWT from the configured issuer and audience whose ``sub`` is
    that edge's subject; its token (``tokenTtl``, no ``default`` policy) can mint only that edge's
    transit-unseal token (through the edge's token role) and that edge's cert-sync secret_id;
    an edge removed from ``fedobs:edges`` loses its role, and with it every way to mint more.
    """

    roles: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        settings: EdgeDeployIdentitySettings,
        *,
        subjects: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``subjects``: each edge's JWT subject; the hub's Vault provider comes through ``opts``."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        backend = vault.jwt.AuthBackend(
            f"{name}-jwt",
            path=EDGE_DEPLOY_JWT_MOUNT,
            type="jwt",
            description="Deploy identities of the edge stacks, one role per edge",
            bound_issuer=settings.issuer,
            oidc_discovery_url=settings.oidc_discovery_url,
            jwt_validation_pubkeys=list(settings.jwt_validation_pubkeys) or None,
            jwt_supported_algs=["RS256", "ES256"],
            opts=child,
        )
        self.roles = {}
        for edge, subject in subjects.items():
            policy = vault.Policy(
                f"{name}-{edge}-policy", name=deploy_role(edge), policy=deploy_policy_hcl(edge), opts=child
            )
            role = vault.jwt.AuthBackendRole(
                f"{name}-{edge}-role",
                backend=EDGE_DEPLOY_JWT_MOUNT,
                role_name=deploy_role(edge),
                role_type="jwt",
                user_claim="sub",
                bound_subject=subject,
                bound_audiences=[settings.audience],
                token_policies=[policy.name],
                token_no_default_policy=True,
                token_ttl=settings.token_ttl,
                token_max_ttl=settings.token_ttl,
                # the path is known up front; the dependency orders the role after its mount
                opts=pulumi.ResourceOptions(parent=self, depends_on=[backend]),
            )
            self.roles[edge] = role.role_name
        self.register_outputs({"mount": backend.path, "roles": self.roles})
