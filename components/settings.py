"""The base of every component's settings model, and the value types they share.

A component's settings model is the typed form of its part of the ``fedobs:`` stack config:
camelCase keys, unknown keys rejected, immutable. ``config.py`` composes the stack models from
them; the component takes its model as its args.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: The config namespace of every key (``fedobs:vault.replicas``).
CONFIG_NAMESPACE = "fedobs"

#: Field metadata marking a value that must be a Pulumi secret.
SECRET: dict[str, Any] = {"fedobs_secret": True}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
CRON = re.compile(r"^(\S+\s+){4}\S+$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|m|k|M|G)?$")


def pattern_check(pattern: re.Pattern[str], example: str) -> Callable[[str], str]:
    """A validator that names an example of a valid value in its message."""

    def validate(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not valid (expected something like {example!r})")
        return value

    return validate


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        raise ValueError(f"{value!r} is not a CIDR block such as '203.0.113.0/24' ({err})") from None
    return value


DnsLabel = Annotated[str, AfterValidator(pattern_check(DNS_LABEL, "edge-eu-1"))]
DnsName = Annotated[str, AfterValidator(pattern_check(DNS_NAME, "vault.hub.example.com"))]
Cidr = Annotated[str, AfterValidator(_cidr)]
LabelKey = Annotated[str, AfterValidator(pattern_check(LABEL_KEY, "fedobs.io/pool"))]
Cron = Annotated[str, AfterValidator(pattern_check(CRON, "0 * * * *"))]
Quantity = Annotated[str, AfterValidator(pattern_check(QUANTITY, "10Gi"))]


#: Bytes per unit of every suffix ``QUANTITY`` accepts (Kubernetes ``resource.Quantity`` notation).
QUANTITY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "m": 10**-3}


def quantity_bytes(value: str) -> int:
    """A validated :data:`Quantity` (``10Gi``) in bytes."""
    match = QUANTITY.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a quantity such as '10Gi'")
    unit = match.group(2) or ""
    return int(float(value[: len(value) - len(unit)]) * QUANTITY_UNITS.get(unit, 1))


class Settings(BaseModel):
    """Base of every settings model: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class AccessKeyPair(Settings):
    """An access key pair (AWS, or S3-compatible Object Storage); both values are Pulumi secrets."""

    access_key_id: str = Field(min_length=16, json_schema_extra=SECRET)
    secret_access_key: str = Field(min_length=16, json_schema_extra=SECRET)


class RuleProblem(NamedTuple):
    """A rule's finding: the config key it is about and what is wrong (keys without the namespace).

    ``inputs`` are the keys the rule read: when the config also has field errors, the rule is
    evaluated on the rest of the config, and a finding whose inputs had to be dropped is not reported.
    """

    key: str
    message: str
    inputs: tuple[str, ...] = ()
