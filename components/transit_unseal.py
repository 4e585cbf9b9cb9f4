"""On the hub: one transit key per edge, and a token that can only encrypt/decrypt with it."""

from __future__ import annotations

import pulumi
import pulumi_vault as vault

from components.vault_names import TRANSIT_MOUNT, TRANSIT_UNSEAL_PREFIX

TYPE_TOKEN = "fedobs:vault:TransitUnseal"
#: The seal renews its token long before this; a period survives a hub outage of days.
TOKEN_PERIOD_SECONDS = 768 * 3600


def transit_policy_hcl(edge: str, mount: str = TRANSIT_MOUNT) -> str:
    """Exactly what an edge's seal needs: encrypt and decrypt with its own key, and keep its own
    periodic token alive (the seal renews it; the token has no ``default`` policy)."""
    return (
        f'path "{mount}/encrypt/{edge}" {{ capabilities = ["update"] }}\n'
        f'path "{mount}/decrypt/{edge}" {{ capabilities = ["update"] }}\n'
        'path "auth/token/renew-self" { capabilities = ["update"] }\n'
        'path "auth/token/lookup-self" { capabilities = ["read"] }\n'
    )


def transit_token_role(edge: str) -> str:
    """The token role (and policy) through which ``edge``'s seal token is created."""
    return f"{TRANSIT_UNSEAL_PREFIX}{edge}"


class TransitUnseal(pulumi.ComponentResource):
    """The hub side of transit auto-unseal for every configured edge.

    Guarantees: the transit mount and each edge's key are protected (``protect=True``: unmounting
    deletes every key); each key is non-exportable and cannot be deleted by accident; each edge's
    token role issues only orphan periodic tokens whose only policy allows ``update`` on its own
    key's ``encrypt`` and ``decrypt`` paths (and renewing itself). The hub mints no token: each
    edge's deploy identity creates its own through its role (``components.edge_identity``), so the
    token lives only in that edge's state. Through a role, the creator needs no ``sudo`` and does
    not have to hold the token's policy itself.
    """

    def __init__(
        self,
        name: str,
        edges: tuple[str, ...],
        *,
        retired: tuple[str, ...] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """The hub's Vault provider comes through ``opts``; children inherit it. ``retired``: edges
        cut off (``fedobs:retiredEdges``) whose keys stay, under the same names and still protected,
        with no policy and no token role: nothing can encrypt or decrypt with them any more."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        vault_opts = pulumi.ResourceOptions(parent=self)
        mount = vault.Mount(
            f"{name}-mount",
            path=TRANSIT_MOUNT,
            type="transit",
            description="Auto-unseal keys of the edge Vaults",
            opts=pulumi.ResourceOptions.merge(vault_opts, pulumi.ResourceOptions(protect=True)),
        )
        self.roles: dict[str, pulumi.Output[str]] = {}
        keys = {
            edge: vault.transit.SecretBackendKey(
                f"{name}-{edge}-key",
                backend=mount.path,
                name=edge,
                type="aes256-gcm96",
                deletion_allowed=False,
                exportable=False,
                allow_plaintext_backup=False,
                opts=pulumi.ResourceOptions.merge(vault_opts, pulumi.ResourceOptions(protect=True)),
            )
            for edge in (*edges, *retired)
        }
        for edge in edges:
            key = keys[edge]
            policy = vault.Policy(
                f"{name}-{edge}-policy", name=transit_token_role(edge), policy=transit_policy_hcl(edge), opts=vault_opts
            )
            role = vault.tokenauth.AuthBackendRole(
                f"{name}-{edge}-token-role",
                role_name=transit_token_role(edge),
                allowed_policies=[policy.name],
                orphan=True,
                renewable=True,
                token_period=TOKEN_PERIOD_SECONDS,
                token_no_default_policy=True,
                opts=pulumi.ResourceOptions.merge(vault_opts, pulumi.ResourceOptions(depends_on=[key])),
            )
            self.roles[edge] = role.role_name
        self.register_outputs({"roles": self.roles})
