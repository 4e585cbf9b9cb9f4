"""Pulumi's own Vault identity in CI: a JWT login beside the userpass one, declared by the hub stack.

The hub's Vault provider logs in as ``fedobs-admin`` either through userpass (``userpass-pulumi``, the
password the bootstrap Job set, kept in the stack's state) or, when the hub declares
``fedobs:hubDeployIdentity`` and the run carries a deploy JWT in ``TERRAFORM_VAULT_AUTH_JWT``, through
the JWT mount ``jwt-pulumi`` declared here: a GitHub Actions OIDC token of the hub's deploy job (its
``sub`` names the repository and the job's environment), or a token an operator signs with a key pair
outside CI. The login's token carries the admin policy and nothing else, and lives ``tokenTtl``
seconds at most (no renewal past it).

Which login the provider makes is decided when the program runs, from the environment: the two
``auth_login_*`` blocks of terraform-provider-vault conflict with each other (``internal/provider/
auth.go``, ``mustAddLoginSchema``: ``ConflictsWith`` every other registered login field), so the
program sets exactly one. Switching between them changes the provider's configuration only: pulumi-vault
marks no provider field ``ForcesProviderReplace`` (pulumi/pulumi-vault v7.7.0 ``provider/resources.go``),
and the bridge's ``DiffConfig`` asks for a provider replacement only for such fields
(pulumi/pulumi-terraform-bridge PR #1683), so no resource of the provider is replaced.

Chicken and egg: the mount and its role are created BY a run of this stack, so the run that first
declares them cannot log in through them. The first ``pulumi up`` after ``fedobs:hubDeployIdentity``
is set (and the very first run of a hub) logs in with userpass: an operator's run without
``TERRAFORM_VAULT_AUTH_JWT``, or the deploy workflow dispatched with ``hub_login: userpass``
(docs/vault.md, "Pulumi's login in CI").
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pulumi
import pulumi_vault as vault
from pydantic import Field

from components.edge_identity import DeployIssuerSettings
from components.vault_names import ADMIN_JWT_MOUNT, ADMIN_JWT_ROLE, ADMIN_POLICY, DEPLOY_JWT_ENV

TYPE_TOKEN = "fedobs:vault:AdminDeployIdentity"
#: The admin login of a CI run lives as long as the userpass one (the bootstrap's ``--admin-token-ttl``
#: default, 20 minutes): the provider logs in once, when its inputs are known, and applies with it.
DEFAULT_ADMIN_TOKEN_TTL_SECONDS = 1200


class AdminDeployIdentitySettings(DeployIssuerSettings):
    """``fedobs:hubDeployIdentity``: the JWT of the hub's own deploy job, which Pulumi's Vault provider
    logs in with when the run carries one (``TERRAFORM_VAULT_AUTH_JWT``).

    The JWT's ``iss``, ``aud`` and keys as for edges (:class:`DeployIssuerSettings`); its ``sub`` must
    equal ``subject`` (GitHub Actions: ``repo:<owner>/<repo>:environment:<hub environment>``, so only a
    job of that repository running in that environment, with its reviewers, gets one). ``tokenTtl``:
    the lifetime of the login's token, which cannot be renewed past it.
    """

    subject: str = Field(min_length=1)
    token_ttl: int = Field(default=DEFAULT_ADMIN_TOKEN_TTL_SECONDS, ge=300, le=3600)


def jwt_login(
    settings: AdminDeployIdentitySettings | None, environ: Mapping[str, str] = os.environ
) -> vault.ProviderAuthLoginJwtArgs | None:
    """The provider's JWT login when the stack declares the identity and the run carries a JWT; else
    None (userpass). The JWT itself stays in the environment: the provider reads it from there."""
    if settings is None or not environ.get(DEPLOY_JWT_ENV):
        return None
    return vault.ProviderAuthLoginJwtArgs(role=ADMIN_JWT_ROLE, mount=ADMIN_JWT_MOUNT)


class AdminDeployIdentity(pulumi.ComponentResource):
    """The JWT mount ``jwt-pulumi`` and its role ``pulumi`` for Pulumi's own login in CI.

    Guarantees: the role accepts only a JWT from the configured issuer (checked against its keys)
    whose ``aud`` contains ``audience`` and whose ``sub`` is ``subject``; its token holds
    ``fedobs-admin`` and no ``default`` policy, and lives ``tokenTtl`` seconds at most
    (``token_max_ttl`` = ``token_ttl``). Proven on a real OpenBao by tests/real/test_admin_identity_real.py.
    """

    def __init__(
        self,
        name: str,
        settings: AdminDeployIdentitySettings,
        *,
        admin_policy: pulumi.Resource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``admin_policy``: the ``fedobs-admin`` policy resource the role grants; the Vault provider
        comes through ``opts``."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        backend = vault.jwt.AuthBackend(
            f"{name}-jwt",
            path=ADMIN_JWT_MOUNT,
            type="jwt",
            description="Pulumi's own login from the hub's deploy job (CI)",
            bound_issuer=settings.issuer,
            oidc_discovery_url=settings.oidc_discovery_url,
            jwt_validation_pubkeys=list(settings.jwt_validation_pubkeys) or None,
            jwt_supported_algs=["RS256", "ES256"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        role = vault.jwt.AuthBackendRole(
            f"{name}-role",
            backend=ADMIN_JWT_MOUNT,
            role_name=ADMIN_JWT_ROLE,
            role_type="jwt",
            user_claim="sub",
            bound_subject=settings.subject,
            bound_audiences=[settings.audience],
            token_policies=[ADMIN_POLICY],
            token_no_default_policy=True,
            token_ttl=settings.token_ttl,
            token_max_ttl=settings.token_ttl,
            # the path is known up front; the dependencies order the role after its mount and policy
            opts=pulumi.ResourceOptions(parent=self, depends_on=[backend, admin_policy]),
        )
        self.register_outputs({"mount": backend.path, "role": role.role_name})
