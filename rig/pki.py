"""A throw-away test PKI built with ``cryptography``.

Guarantees:

* ``TestCA(common_name)`` is a self-signed CA (``BasicConstraints(ca=True, path_length=0)``, key usage
  ``keyCertSign``/``cRLSign``) valid from one hour ago for ``days`` days.
* ``TestCA.issue(...)`` returns an :class:`IssuedCert` whose SubjectAlternativeName holds EXACTLY the
  DNS names and IP addresses given (in that order, nothing added, the common name is not copied into
  it); no SAN extension at all when both lists are empty. Key usage is ``digitalSignature`` (+
  ``keyEncipherment`` for RSA); ExtendedKeyUsage is ``serverAuth`` and/or ``clientAuth`` as
  requested. The leaf is signed by the CA and carries SubjectKeyIdentifier/AuthorityKeyIdentifier.
* Private keys are PKCS#8 PEM, unencrypted; every writer here creates key files with mode 0600
  (created with that mode, never chmod-ed after the fact) and certificate files with 0644.

Nothing here talks to the network or any CA outside the process.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["IssuedCert", "TestCA", "write_private_file", "write_public_file"]

KeyAlgorithm = Literal["ECDSA", "RSA"]
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def write_private_file(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` with mode 0600 (the file is created with that mode; an existing
    file is replaced atomically). Returns the path."""
    target = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # independent of the umask
        os.write(fd, raw)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    return target


def write_public_file(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write a certificate or other public file with mode 0644. Returns the path."""
    target = Path(path)
    target.write_bytes(data.encode() if isinstance(data, str) else data)
    target.chmod(0o644)
    return target


def _new_key(algorithm: KeyAlgorithm) -> _PrivateKey:
    if algorithm == "ECDSA":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported key algorithm {algorithm!r} (use 'ECDSA' or 'RSA')")


def _key_pem(key: _PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass(frozen=True)
class IssuedCert:
    """A leaf certificate and its private key, both PEM text."""

    cert_pem: str
    key_pem: str

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    def write(
        self, directory: str | os.PathLike[str], *, cert_name: str = "tls.crt", key_name: str = "tls.key"
    ) -> tuple[Path, Path]:
        """Write ``cert_name`` (0644) and ``key_name`` (0600) into ``directory``; returns both paths."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        return write_public_file(d / cert_name, self.cert_pem), write_private_file(d / key_name, self.key_pem)


class TestCA:
    """A self-signed ECDSA P-256 certificate authority for tests."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, common_name: str, *, days: int = 1) -> None:
        self.common_name = common_name
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _dt.datetime.now(_dt.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem: str = self._cert.public_bytes(serialization.Encoding.PEM).decode()
        self.key_pem: str = _key_pem(self._key)

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def write(self, directory: str | os.PathLike[str], name: str = "ca.crt") -> Path:
        """Write the CA certificate (not its key) as ``directory/name``; returns the path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        return write_public_file(d / name, self.cert_pem)

    def issue(
        self,
        common_name: str,
        dns_names: list[str],
        ip_addresses: list[str],
        *,
        server: bool = True,
        client: bool = False,
        key_algorithm: KeyAlgorithm = "ECDSA",
        days: int = 1,
    ) -> IssuedCert:
        """Issue a leaf certificate whose SAN is exactly ``dns_names`` + ``ip_addresses``."""
        if not (server or client):
            raise ValueError("a certificate must be issued for server and/or client use")
        key = _new_key(key_algorithm)
        now = _dt.datetime.now(_dt.UTC)
        usages: list[x509.ObjectIdentifier] = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=key_algorithm == "RSA",
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCert(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))
