"""Issue certificates the way cert-manager would from a stack's ``Certificate`` specs.

:func:`issue_secrets` walks the hub's ``Issuer``/``Certificate`` objects (self-signed root, CA
issuers chained to it) and returns, per Certificate, the Secret data cert-manager writes:

* ``tls.crt``: the leaf followed by its issuer's chain, without the self-signed root (cert-manager's
  CA issuer returns the issuer's chain and keeps the root out of ``tls.crt``);
* ``tls.key``: the leaf's private key (PKCS#8 PEM);
* ``ca.crt``: the root-most certificate of the chain (the CA issuer's ``ca.crt``).

From each spec it honours ``commonName``, ``dnsNames``, ``subject.organizations``, ``isCA``,
``usages`` (key usages and extended key usages, by cert-manager's names),
``privateKey.algorithm``/``size``, ``duration`` and ``nameConstraints`` (``permitted``/``excluded``
``dnsDomains`` and ``ipRanges``, ``critical``: cert-manager's ``pkg/util/pki/nameconstraints.go``
encodes them the same way). Anything else in a spec raises, so a new field in a stack's
Certificate cannot be silently ignored by the tests that rely on this module.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

_KEY_USAGES = {
    "digital signature": "digital_signature",
    "key encipherment": "key_encipherment",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
    "content commitment": "content_commitment",
    "data encipherment": "data_encipherment",
    "key agreement": "key_agreement",
}
_EXTENDED_USAGES = {"server auth": ExtendedKeyUsageOID.SERVER_AUTH, "client auth": ExtendedKeyUsageOID.CLIENT_AUTH}
_KNOWN_FIELDS = {
    "commonName",
    "dnsNames",
    "subject",
    "isCA",
    "usages",
    "privateKey",
    "duration",
    "renewBefore",
    "secretName",
    "issuerRef",
    "nameConstraints",
}
_NAME_CONSTRAINT_KINDS = {"dnsDomains", "ipRanges"}


@dataclass(frozen=True)
class Issued:
    """A certificate cert-manager would have issued, with its Secret's data."""

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]  # the issuers above it, nearest first, root last

    @property
    def secret_data(self) -> dict[str, str]:
        above = [c for c in self.chain if c.subject != c.issuer]
        root = self.chain[-1] if self.chain else self.certificate
        return {
            "tls.crt": "".join(_pem(c) for c in (self.certificate, *above)),
            "tls.key": _key_pem(self.key),
            "ca.crt": _pem(root),
        }


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def new_key(private_key: dict[str, Any]) -> PrivateKey:
    algorithm, size = private_key.get("algorithm", "RSA"), private_key.get("size")
    if algorithm == "ECDSA":
        return ec.generate_private_key({256: ec.SECP256R1(), 384: ec.SECP384R1()}[size or 256])
    if algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=size or 2048)
    if algorithm == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported privateKey.algorithm {algorithm!r}")


def _hours(text: str) -> float:
    units = {"h": 1.0, "m": 1 / 60, "s": 1 / 3600}
    return float(text[:-1]) * units[text[-1]]


def _subtrees(items: dict[str, list[str]] | None) -> list[x509.GeneralName] | None:
    if not items:
        return None
    unknown = set(items) - _NAME_CONSTRAINT_KINDS
    if unknown:
        raise ValueError(f"nameConstraints this test PKI does not implement: {sorted(unknown)}")
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in items.get("dnsDomains", [])]
    names += [x509.IPAddress(ipaddress.ip_network(r)) for r in items.get("ipRanges", [])]
    return names or None


def name_constraints(spec: dict[str, Any]) -> tuple[x509.NameConstraints, bool] | None:
    """A CA spec's ``nameConstraints`` as the X.509 extension and its criticality."""
    constraints = spec.get("nameConstraints")
    if not constraints:
        return None
    if not spec.get("isCA"):
        raise ValueError("nameConstraints on a certificate that is not a CA (cert-manager refuses it)")
    permitted, excluded = _subtrees(constraints.get("permitted")), _subtrees(constraints.get("excluded"))
    return x509.NameConstraints(permitted, excluded), bool(constraints.get("critical"))


def issue(
    spec: dict[str, Any], issuer: Issued | None, *, key: PrivateKey | None = None, at: dt.datetime | None = None
) -> Issued:
    """Issue ``spec`` signed by ``issuer`` (self-signed when ``None``), ``at`` a moment (now by default;
    notBefore is five minutes earlier)."""
    unknown = set(spec) - _KNOWN_FIELDS
    if unknown:
        raise ValueError(f"Certificate spec fields this test PKI does not implement: {sorted(unknown)}")
    key = key or new_key(spec.get("privateKey", {}))
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.get("subject", {}).get("organizations", [])
    ]
    if spec.get("commonName"):
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, spec["commonName"]))
    subject = x509.Name(attributes)
    usages = list(spec.get("usages", ["digital signature", "key encipherment"]))
    flags = {name: False for name in _KEY_USAGES.values()}
    flags.update({_KEY_USAGES[u]: True for u in usages if u in _KEY_USAGES})
    extended = [_EXTENDED_USAGES[u] for u in usages if u in _EXTENDED_USAGES]
    unknown_usages = [u for u in usages if u not in _KEY_USAGES and u not in _EXTENDED_USAGES]
    if unknown_usages:
        raise ValueError(f"usages this test PKI does not implement: {unknown_usages}")
    now = at or dt.datetime.now(dt.UTC)
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=_hours(spec.get("duration", "2160h"))))
        .add_extension(x509.BasicConstraints(ca=bool(spec.get("isCA")), path_length=None), critical=True)
        .add_extension(x509.KeyUsage(encipher_only=False, decipher_only=False, **flags), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    constraints = name_constraints(spec)
    if constraints is not None:
        builder = builder.add_extension(constraints[0], critical=constraints[1])
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if spec.get("dnsNames"):
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in spec["dnsNames"]]), critical=False
        )
    algorithm = None if isinstance(signer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    certificate = builder.sign(signer_key, algorithm)
    chain = (issuer.certificate, *issuer.chain) if issuer else ()
    return Issued(certificate, key, chain)


def issue_secrets(objects: list[dict[str, Any]], namespace: str) -> dict[str, Issued]:
    """Every Certificate of ``namespace`` issued through its Issuer chain, by Secret name."""
    issuers = {
        o["metadata"]["name"]: o["spec"]
        for o in objects
        if o["kind"] == "Issuer" and o["metadata"]["namespace"] == namespace
    }
    certificates = {
        o["spec"]["secretName"]: o["spec"]
        for o in objects
        if o["kind"] == "Certificate" and o["metadata"]["namespace"] == namespace
    }
    issued: dict[str, Issued] = {}

    def resolve(secret_name: str) -> Issued:
        if secret_name not in issued:
            spec = certificates[secret_name]
            issuer_spec = issuers[spec["issuerRef"]["name"]]
            signer = None if "selfSigned" in issuer_spec else resolve(issuer_spec["ca"]["secretName"])
            issued[secret_name] = issue(spec, signer)
        return issued[secret_name]

    for name in certificates:
        resolve(name)
    return issued
