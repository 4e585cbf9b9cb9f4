"""The one link between stacks: an edge reads the hub's outputs through a StackReference."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pulumi

TYPE_TOKEN = "fedobs:link:HubLink"

_HTTPS_URL = re.compile(r"^https://[^/\s]+$")
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----")


class HubOutputError(ValueError):
    """Hub outputs the edge needs are missing or malformed; the message names each of them."""


def hub_output_rules(edge_name: str) -> dict[str, tuple[Callable[[Any], bool], str]]:
    """Every hub output an edge reads, with its validity check and what is expected."""
    return {
        "vaultAddress": (lambda v: isinstance(v, str) and bool(_HTTPS_URL.match(v)), "an https:// URL"),
        "vaultCaCert": (lambda v: isinstance(v, str) and bool(_PEM_CERT.search(v)), "a PEM certificate"),
        "otlpEndpoint": (
            lambda v: isinstance(v, str) and bool(_HTTPS_URL.match(v)),
            "the hub's OTLP endpoint, an https:// URL (is fedobs:pki set on the hub?)",
        ),
        "edgeTransitTokens": (
            lambda v: isinstance(v, dict) and isinstance(v.get(edge_name), str),
            f"a map holding this edge's transit token under '{edge_name}' "
            f"(is the edge listed in the hub's fedobs:edges?)",
        ),
        "edgeCredentials": (
            lambda v: (
                isinstance(v, dict)
                and isinstance(v.get(edge_name), dict)
                and {"mount", "roleId", "secretId"} <= set(v[edge_name])
            ),
            f"a map holding this edge's AppRole credential (mount, roleId, secretId) under '{edge_name}'",
        ),
    }


def validate_hub_outputs(stack: str, edge_name: str, outputs: dict[str, Any]) -> dict[str, Any]:
    problems = [
        f"hub stack '{stack}' output '{name}' is missing or malformed: expected {expected}"
        for name, (valid, expected) in hub_output_rules(edge_name).items()
        if outputs.get(name) is None or not valid(outputs[name])
    ]
    if problems:
        raise HubOutputError("; ".join(problems) + "; run 'pulumi up' on the hub stack first")
    return outputs


class HubLink(pulumi.ComponentResource):
    """Reads the hub stack (one direction only: the hub never reads an edge).

    Guarantees: every output the edge uses is validated, and missing or malformed ones fail
    with one error naming each; secret hub outputs stay secret.
    """

    vault_address: pulumi.Output[str]
    vault_hostname: pulumi.Output[str]
    vault_ca_cert: pulumi.Output[str]
    transit_token: pulumi.Output[str]
    otlp_endpoint: pulumi.Output[str]
    hub_credential: pulumi.Output[dict[str, str]]

    def __init__(
        self, name: str, *, stack_name: str, edge_name: str, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        """``stack_name``: ``fedobs:hubStack``; ``edge_name``: this edge, whose own hub outputs are read."""
        super().__init__(TYPE_TOKEN, name, None, opts)
        self.reference = pulumi.StackReference(
            f"{name}-ref", stack_name=stack_name, opts=pulumi.ResourceOptions(parent=self)
        )
        names = list(hub_output_rules(edge_name))
        validated = pulumi.Output.all(*[self.reference.get_output(n) for n in names]).apply(
            lambda values: validate_hub_outputs(stack_name, edge_name, dict(zip(names, values, strict=True)))
        )
        self.vault_address = validated.apply(lambda o: str(o["vaultAddress"]))
        self.vault_hostname = self.vault_address.apply(lambda url: url.removeprefix("https://").split(":")[0])
        self.vault_ca_cert = validated.apply(lambda o: str(o["vaultCaCert"]))
        self.transit_token = pulumi.Output.secret(validated.apply(lambda o: str(o["edgeTransitTokens"][edge_name])))
        self.otlp_endpoint = validated.apply(lambda o: str(o["otlpEndpoint"]))
        self.hub_credential = pulumi.Output.secret(
            validated.apply(lambda o: {k: str(v) for k, v in o["edgeCredentials"][edge_name].items()})
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
