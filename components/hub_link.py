"""The one link between stacks: an edge reads the hub's outputs through a StackReference."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi

TYPE_TOKEN = "fedobs:link:HubLink"

_HTTPS_URL = re.compile(r"^https://[^/\s]+$")
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----")


class HubOutputError(ValueError):
    """A hub output the edge needs is missing or malformed; the message names the output."""


def _checked(stack: str, output: str, valid: Callable[[Any], bool], expected: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is None or not valid(value):
            raise HubOutputError(
                f"hub stack '{stack}' output '{output}' is missing or malformed: expected {expected}; "
                f"run 'pulumi up' on the hub stack first"
            )
        return value

    return check


@dataclass(frozen=True)
class HubLinkArgs:
    stack_name: str
    edge_name: str


class HubLink(pulumi.ComponentResource):
    """Reads the hub stack (one direction only: the hub never reads an edge).

    Guarantees: every output the edge uses is validated and a missing or malformed one fails
    with an error naming it; secret hub outputs stay secret.
    """

    vault_address: pulumi.Output[str]
    vault_ca_cert: pulumi.Output[str]

    def __init__(self, name: str, args: HubLinkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        self.reference = pulumi.StackReference(
            f"{name}-ref", stack_name=args.stack_name, opts=pulumi.ResourceOptions(parent=self)
        )
        self.stack_name = args.stack_name
        self.edge_name = args.edge_name
        self.vault_address = self.output(
            "vaultAddress", lambda v: isinstance(v, str) and bool(_HTTPS_URL.match(v)), "an https:// URL"
        )
        self.vault_ca_cert = self.output(
            "vaultCaCert", lambda v: isinstance(v, str) and bool(_PEM_CERT.search(v)), "a PEM certificate"
        )
        self.register_outputs({"vault_address": self.vault_address, "vault_ca_cert": self.vault_ca_cert})

    def output(self, output_name: str, valid: Callable[[Any], bool], expected: str) -> pulumi.Output[Any]:
        """A validated hub output."""
        raw = self.reference.get_output(output_name)
        return raw.apply(_checked(self.stack_name, output_name, valid, expected))
