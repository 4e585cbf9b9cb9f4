"""The Linode CCM annotations of a LoadBalancer Service (components/linode_exposure.py), read back the
way the CCM reads them (cloud/linode/services/firewalls.go: JSON into ``aclConfig``, exactly one of
``allowList``/``denyList``, each ``{"ipv4": [...], "ipv6": [...]}``)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from components.linode_exposure import (
    DEFAULT_PROTOCOL,
    DEFAULT_PROXY_PROTOCOL,
    FIREWALL_ACL,
    NODEBALANCER_SOURCE_RANGES,
    firewall_acl,
    load_balancer_annotations,
)

#: The keys of linodego's NetworkAddresses as the CCM unmarshals them.
CCM_FAMILIES = {"ipv4": 4, "ipv6": 6}


def ccm_allow_list(annotation: str) -> dict[str, list[str]]:
    """What the CCM takes from the annotation; fails where it would (ErrInvalidFWConfig)."""
    acl = json.loads(annotation)
    assert set(acl) <= {"allowList", "denyList"}, acl
    assert ("allowList" in acl) != ("denyList" in acl), "specify either an allowList or a denyList"
    allow = acl["allowList"]
    assert set(allow) <= set(CCM_FAMILIES), allow
    for family, addresses in allow.items():
        assert addresses and all(ipaddress.ip_network(a).version == CCM_FAMILIES[family] for a in addresses)
    return allow  # type: ignore[no-any-return]


def test_ranges_are_split_by_address_family_in_order() -> None:
    ranges = ["203.0.113.0/24", "2001:db8:1234::/48", "198.51.100.7/32", "2001:db8:ffff::1/128"]
    assert ccm_allow_list(firewall_acl(ranges)) == {
        "ipv4": ["203.0.113.0/24", "198.51.100.7/32"],
        "ipv6": ["2001:db8:1234::/48", "2001:db8:ffff::1/128"],
    }


@pytest.mark.parametrize(
    ("ranges", "families"),
    [(["203.0.113.0/24"], {"ipv4"}), (["2001:db8::/32"], {"ipv6"})],
)
def test_a_family_without_ranges_is_left_out_and_so_dropped(ranges: list[str], families: set[str]) -> None:
    # With an allowList the CCM sets the firewall's inbound policy to DROP (processACL).
    assert set(ccm_allow_list(firewall_acl(ranges))) == families


def test_no_range_is_refused_rather_than_an_empty_allow_list() -> None:
    with pytest.raises(ValueError, match="at least one allowed range"):
        firewall_acl([])


def test_annotations_of_a_restricted_pass_through_load_balancer() -> None:
    plain = load_balancer_annotations(["203.0.113.0/24"])
    assert plain == {DEFAULT_PROTOCOL: "tcp", FIREWALL_ACL: firewall_acl(["203.0.113.0/24"])}
    proxied = load_balancer_annotations(["203.0.113.0/24"], proxy_protocol=True)
    assert proxied == {**plain, DEFAULT_PROXY_PROTOCOL: "v2"}
    assert FIREWALL_ACL == "service.beta.kubernetes.io/linode-loadbalancer-firewall-acl"
    assert DEFAULT_PROXY_PROTOCOL == "service.beta.kubernetes.io/linode-loadbalancer-default-proxy-protocol"


def test_nodebalancers_connect_from_linodes_private_range() -> None:
    assert NODEBALANCER_SOURCE_RANGES == ("192.168.255.0/24",)
