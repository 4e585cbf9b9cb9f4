"""How a LoadBalancer Service is exposed on Linode: the CCM annotations, built in one place.

On LKE a ``type: LoadBalancer`` Service becomes a NodeBalancer, made by the Linode Cloud Controller
Manager (CCM). What restricts who may connect to it, and how it passes the client's address on, is
read from these annotations only (linode/linode-cloud-controller-manager, commit ``b9aa9012``):

* ``cloud/annotations/annotations.go`` declares every annotation the CCM reads. It has no
  ``loadBalancerSourceRanges`` handling, and nothing in the CCM reads ``spec.loadBalancerSourceRanges``
  (``git grep -i loadBalancerSourceRanges`` finds no line in the whole repository): a NodeBalancer
  ignores it. The Services
  here therefore do not set it; the one control is the Cloud Firewall below.
* ``AnnLinodeCloudFirewallACL`` = ``service.beta.kubernetes.io/linode-loadbalancer-firewall-acl``:
  ``cloud/linode/services/firewalls.go`` (``aclConfig``, ``CreateFirewallOptsForSvc``, ``processACL``)
  unmarshals it as JSON ``{"allowList": {"ipv4": [...], "ipv6": [...]}}`` (or ``denyList``; exactly one
  of the two, else ``ErrInvalidFWConfig``), creates a Cloud Firewall whose inbound rules ACCEPT TCP on
  the Service's ports from those addresses with inbound policy DROP (an allowList), and attaches it
  to the NodeBalancer. ``docs/configuration/firewall.md`` documents the same format.
* ``AnnLinodeDefaultProxyProtocol`` = ``service.beta.kubernetes.io/linode-loadbalancer-default-proxy-protocol``:
  ``cloud/linode/loadbalancers_helpers.go`` (``getPortProxyProtocol``) accepts ``none``, ``v1``, ``v2``
  (``docs/configuration/annotations.md``: "Specifies whether to use a version of Proxy Protocol on the
  underlying NodeBalancer").
* ``AnnLinodeDefaultProtocol``: ``tcp`` makes the NodeBalancer pass TLS through untouched.

Where a NodeBalancer connects to its backends from: Linode's private range ``192.168.255.0/24``
(Akamai TechDocs, "LKE network and firewall details": "Allow NodeBalancer traffic: TCP/UDP port
range 30000-32767 from 192.168.255.0/24"; linode/cloud-firewall-controller
``internal/rules/defaults.go`` opens the NodePorts to exactly that range). With
``externalTrafficPolicy: Local`` kube-proxy forwards to a local Pod without SNAT, so that is the
source address the Pod sees. :data:`NODEBALANCER_SOURCE_RANGES` is the default of the setting that
Vault trusts PROXY headers from (``vault.exposure.nodeBalancerRanges``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable

ANNOTATION_PREFIX = "service.beta.kubernetes.io/linode-loadbalancer-"
DEFAULT_PROTOCOL = f"{ANNOTATION_PREFIX}default-protocol"
DEFAULT_PROXY_PROTOCOL = f"{ANNOTATION_PREFIX}default-proxy-protocol"
FIREWALL_ACL = f"{ANNOTATION_PREFIX}firewall-acl"
FIREWALL_ID = f"{ANNOTATION_PREFIX}firewall-id"
#: The annotations of which one restricts a NodeBalancer (the CCM prefers the id when both are set).
FIREWALL_ANNOTATIONS = (FIREWALL_ACL, FIREWALL_ID)

#: Where NodeBalancers connect to backends from (see the module docstring for the sources).
NODEBALANCER_SOURCE_RANGES = ("192.168.255.0/24",)


def firewall_acl(allowed: Iterable[str]) -> str:
    """The ``firewall-acl`` annotation value allowing only ``allowed`` (CIDRs), split by address family.

    A family with no entry is left out: with an ``allowList`` the firewall's inbound policy is DROP,
    so that family is refused entirely."""
    networks = [ipaddress.ip_network(cidr, strict=True) for cidr in allowed]
    if not networks:
        raise ValueError("a firewall ACL needs at least one allowed range: an empty allowList drops everything")
    allow: dict[str, list[str]] = {}
    for family, version in (("ipv4", 4), ("ipv6", 6)):
        listed = [str(n) for n in networks if n.version == version]
        if listed:
            allow[family] = listed
    return json.dumps({"allowList": allow}, separators=(",", ":"))


def load_balancer_annotations(allowed: Iterable[str], *, proxy_protocol: bool = False) -> dict[str, str]:
    """Annotations of a TCP pass-through NodeBalancer reachable only from ``allowed``; with
    ``proxy_protocol`` it prepends a PROXY protocol v2 header carrying the client's address."""
    annotations = {DEFAULT_PROTOCOL: "tcp", FIREWALL_ACL: firewall_acl(allowed)}
    if proxy_protocol:
        annotations[DEFAULT_PROXY_PROTOCOL] = "v2"
    return annotations
