"""On the hub: one transit key per edge, and a token that can only encrypt/decrypt with it."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_vault as vault

TYPE_TOKEN = "fedobs:vault:TransitUnseal"
MOUNT_PATH = "transit"


def transit_policy_hcl(edge: str, mount: str = MOUNT_PATH) -> str:
    """Exactly what an edge's seal needs: encrypt and decrypt with its own key, nothing else."""
    return (
        f'path "{mount}/encrypt/{edge}" {{ capabilities = ["update"] }}\n'
        f'path "{mount}/decrypt/{edge}" {{ capabilities = ["update"] }}\n'
    )


@dataclass(frozen=True)
class TransitUnsealArgs:
    vault_provider: vault.Provider
    edges: tuple[str, ...]


class TransitUnseal(pulumi.ComponentResource):
    """The hub side of transit auto-unseal for every configured edge.

    Guarantees: each edge's key is non-exportable and cannot be deleted by accident; each edge's
    token is an orphan periodic token whose only policy allows ``update`` on its own key's
    ``encrypt`` and ``decrypt`` paths; tokens are secret outputs.
    """

    tokens: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: TransitUnsealArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        vault_opts = pulumi.ResourceOptions(parent=self, provider=args.vault_provider)
        mount = vault.Mount(f"{name}-mount", path=MOUNT_PATH, type="transit",
                            description="Auto-unseal keys of the edge Vaults", opts=vault_opts)
        self.tokens = {}
        for edge in args.edges:
            key = vault.transit.SecretBackendKey(
                f"{name}-{edge}-key", backend=mount.path, name=edge, type="aes256-gcm96",
                deletion_allowed=False, exportable=False, allow_plaintext_backup=False,
                opts=pulumi.ResourceOptions.merge(vault_opts, pulumi.ResourceOptions(protect=True)))
            policy = vault.Policy(f"{name}-{edge}-policy", name=f"transit-unseal-{edge}",
                                  policy=transit_policy_hcl(edge), opts=vault_opts)
            token = vault.Token(
                f"{name}-{edge}-token",
                policies=[policy.name],
                no_parent=True,
                no_default_policy=True,
                renewable=True,
                period="768h",
                display_name=f"transit-unseal-{edge}",
                opts=pulumi.ResourceOptions.merge(vault_opts, pulumi.ResourceOptions(depends_on=[key])),
            )
            self.tokens[edge] = pulumi.Output.secret(token.client_token)
        self.register_outputs({"tokens": self.tokens})
