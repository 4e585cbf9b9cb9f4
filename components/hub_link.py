"""The one link between stacks: an edge reads the hub's public outputs and, logged in to the hub's
Vault with its own deploy identity, creates its own hub credentials there."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_vault as vault

from components.edge_identity import deploy_role
from components.transit_unseal import transit_token_role
from components.vault import write_ca_file
from components.vault_config import edge_role_id
from components.vault_names import EDGE_APPROLE_MOUNT, EDGE_DEPLOY_JWT_MOUNT

TYPE_TOKEN = "fedobs:link:HubLink"

_HTTPS_URL = re.compile(r"^https://[^/\s]+$")
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----")


class HubOutputError(ValueError):
    """Hub outputs the edge needs are missing or malformed; the message names each of them."""


#: Every hub output an edge reads, with its validity check and what is expected. Nothing here is
#: per edge or secret: what every edge may know.
HUB_OUTPUT_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "vaultAddress": (lambda v: isinstance(v, str) and bool(_HTTPS_URL.match(v)), "an https:// URL"),
    "vaultCaCert": (lambda v: isinstance(v, str) and bool(_PEM_CERT.search(v)), "a PEM certificate"),
    "otlpEndpoint": (
        lambda v: isinstance(v, str) and bool(_HTTPS_URL.match(v)),
        "the hub's OTLP endpoint, an https:// URL (is fedobs:pki set on the hub?)",
    ),
}


def validate_hub_outputs(stack: str, outputs: dict[str, Any]) -> dict[str, Any]:
    problems = [
        f"hub stack '{stack}' output '{name}' is missing or malformed: expected {expected}"
        for name, (valid, expected) in HUB_OUTPUT_RULES.items()
        if outputs.get(name) is None or not valid(outputs[name])
    ]
    if problems:
        raise HubOutputError("; ".join(problems) + "; run 'pulumi up' on the hub stack first")
    return outputs


class HubLink(pulumi.ComponentResource):
    """The edge's side of the hub: its public outputs, and this edge's own hub credentials.

    Guarantees: the hub is read in one direction only (the hub never reads an edge) and only its
    public outputs (address, CA, OTLP endpoint), each validated, with one error naming every bad
    one. The hub's Vault is reached over TLS with the hub's CA, logged in as this edge's deploy
    role (its JWT from ``TERRAFORM_VAULT_AUTH_JWT``, never in state) without a child token; with it
    the edge creates its own transit-unseal token and cert-sync secret_id, which exist in this
    edge's state only, as secrets. The secret_id is the first one only: the edge's cert-sync follower
    replaces it at 2/3 of its TTL and destroys it (``programs.cert_sync.follow``). A ``pulumi refresh``
    then drops it from the state (terraform-provider-vault's read of a destroyed accessor removes the
    resource) and the next ``pulumi up`` mints another, which no Secret receives
    (``components.cert_sync``: Pulumi ignores ``hub-secret-id``'s data) and the follower destroys at
    its next rotation.
    """

    vault_address: pulumi.Output[str]
    vault_hostname: pulumi.Output[str]
    vault_ca_cert: pulumi.Output[str]
    transit_token: pulumi.Output[str]
    otlp_endpoint: pulumi.Output[str]
    hub_credential: pulumi.Output[dict[str, str]]

    def __init__(
        self,
        name: str,
        *,
        stack_name: str,
        edge_name: str,
        local_ca_dir: Path = Path(".fedobs"),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``stack_name``: ``fedobs:hubStack``; ``edge_name``: this edge, whose deploy role logs in."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.reference = pulumi.StackReference(f"{name}-ref", stack_name=stack_name, opts=child)
        names = list(HUB_OUTPUT_RULES)
        validated = pulumi.Output.all(*[self.reference.get_output(n) for n in names]).apply(
            lambda values: validate_hub_outputs(stack_name, dict(zip(names, values, strict=True)))
        )
        self.vault_address = validated.apply(lambda o: str(o["vaultAddress"]))
        self.vault_hostname = self.vault_address.apply(lambda url: url.removeprefix("https://").split(":")[0])
        self.vault_ca_cert = validated.apply(lambda o: str(o["vaultCaCert"]))
        self.otlp_endpoint = validated.apply(lambda o: str(o["otlpEndpoint"]))
        on_hub = pulumi.ResourceOptions(parent=self, provider=self._hub_provider(name, edge_name, local_ca_dir))
        token = vault.Token(
            f"{name}-transit-token",
            role_name=transit_token_role(edge_name),
            policies=[transit_token_role(edge_name)],
            no_default_policy=True,
            renewable=True,
            # Periodic through the role's token_period: asking for a period directly needs sudo.
            display_name=transit_token_role(edge_name),
            opts=on_hub,
        )
        secret_id = vault.approle.AuthBackendRoleSecretId(
            f"{name}-secret-id", backend=EDGE_APPROLE_MOUNT, role_name=edge_name, opts=on_hub
        )
        self.transit_token = pulumi.Output.secret(token.client_token)
        self.hub_credential = pulumi.Output.secret(
            secret_id.secret_id.apply(
                lambda secret: {"mount": EDGE_APPROLE_MOUNT, "roleId": edge_role_id(edge_name), "secretId": secret}
            )
        )
        self.register_outputs(
            {
                "vault_address": self.vault_address,
                "vault_ca_cert": self.vault_ca_cert,
                "transit_token": self.transit_token,
                "hub_credential": self.hub_credential,
                "otlp_endpoint": self.otlp_endpoint,
            }
        )

    def _hub_provider(self, name: str, edge_name: str, local_ca_dir: Path) -> vault.Provider:
        ca_file = pulumi.Output.all(self.vault_ca_cert, pulumi.get_stack()).apply(
            lambda parts: write_ca_file(local_ca_dir, parts[1], parts[0], "hub-vault-ca.pem")
        )
        return vault.Provider(
            f"{name}-vault",
            address=self.vault_address,
            ca_cert_file=ca_file,
            # The deploy token can create no child token (its policy grants no auth/token/create), and
            # needs none: it lives for one run. Without this the provider creates a child token first
            # (terraform-provider-vault, provider docs "skip_child_token"); the refusal would fail the run.
            skip_child_token=True,
            auth_login_jwt=vault.ProviderAuthLoginJwtArgs(role=deploy_role(edge_name), mount=EDGE_DEPLOY_JWT_MOUNT),
            opts=pulumi.ResourceOptions(parent=self),
        )
