"""The hub cert-sync's trust bundles (programs.cert_sync.trust and sync.plan_hub), with certificates
issued as cert-manager issues them (rig.cert_manager_pki) and the clock given to each pass.

A pass here is what one hub pass plans from the Secrets and the KV as stored before it; the KV is
then what it wrote. The TLS handshakes through a whole rotation are in tests/real/test_otlp_mtls.py."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from programs.cert_sync import sync, trust
from programs.cert_sync.sync import InvalidCertificateError, SecretSpec, TrustPlan, UsageError, parse_args
from programs.vault_http import KvState
from rig.cert_manager_pki import Issued, issue

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
LEAD = dt.timedelta(minutes=5)
HOUR = dt.timedelta(hours=1)
KEY = {"algorithm": "ECDSA", "size": 256}
ROOT = {"isCA": True, "usages": ["cert sign", "crl sign"], "privateKey": KEY, "duration": "43800h"}
CLIENT = {"usages": ["client auth", "digital signature"], "privateKey": KEY, "duration": "24h"}


def root(name: str, at: dt.datetime = NOW) -> Issued:
    return issue({**ROOT, "commonName": name}, None, at=at)


def client(ca: Issued, edge: str = "edge-eu", at: dt.datetime = NOW) -> Issued:
    return issue({**CLIENT, "commonName": edge}, ca, at=at)


def certs(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


class Hub:
    """Two edge Secrets in one trust group (``otel/client-ca``), and the KV between passes."""

    def __init__(self, ca: Issued) -> None:
        self.secrets: dict[str, dict[str, str]] = {e: client(ca, e).secret_data for e in ("edge-eu", "edge-ap")}
        self.kv: dict[str, dict[str, str]] = {}
        self.options = TrustPlan({"otel/client-ca": ["pki/edge-ap", "pki/edge-eu"]}, {}, LEAD)

    def run(self, now: dt.datetime) -> dict[str, dict[str, str]]:
        sources = [sync.source_of(SecretSpec("pki", e, f"edges/{e}"), data, now) for e, data in self.secrets.items()]
        stored = {path: KvState(1, data) for path, data in self.kv.items()}
        written = {item.kv_path: item.bundle for item in sync.plan_hub(sources, self.options, stored, now)}
        self.kv.update(written)
        return written

    def bundle(self) -> list[trust.Entry]:
        return trust.parse_bundle(self.kv["otel/client-ca"]["ca.crt"])

    def trusted(self) -> list[x509.Certificate]:
        return [e.certificate for e in self.bundle()]


def test_the_bundle_is_the_cas_of_the_leaves_and_its_text_is_stable() -> None:
    ca = root("client-ca")
    hub = Hub(ca)
    first = hub.run(NOW)
    assert hub.trusted() == [ca.certificate]
    assert hub.bundle() == [trust.Entry(ca.certificate, NOW, None)]
    assert first["edges/edge-eu"] == hub.secrets["edge-eu"]  # copied byte for byte
    text = first["otel/client-ca"]["ca.crt"]
    assert "# trusted since: " + NOW.strftime("%Y-%m-%dT%H:%M:%SZ") in text
    # the same inputs an hour later give the same text: nothing is rewritten
    assert hub.run(NOW + HOUR)["otel/client-ca"]["ca.crt"] == text


def test_the_dates_are_explanatory_text_that_tls_libraries_skip(tmp_path: Path) -> None:
    old, new = root("old"), root("new")
    text = trust.render_bundle([trust.Entry(new.certificate, NOW), trust.Entry(old.certificate, None, NOW + HOUR)])
    assert certs(text) == [new.certificate, old.certificate]
    bundle = tmp_path / "ca.crt"
    bundle.write_text(text)
    context = ssl.create_default_context(cafile=str(bundle))  # OpenSSL's PEM reader
    assert len(context.get_ca_certs()) == 2
    assert trust.parse_bundle(text) == [
        trust.Entry(new.certificate, NOW),
        trust.Entry(old.certificate, None, NOW + HOUR),
    ]
    assert trust.parse_bundle("garbage\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") == []


def test_a_rotated_ca_is_trusted_before_any_certificate_it_signed_is_published() -> None:
    later = NOW + 2 * HOUR
    old, new = root("client-ca"), root("client-ca", later)  # cert-manager's renewal: same name, new key
    hub = Hub(old)
    hub.run(NOW)
    published = hub.kv["edges/edge-eu"]
    hub.secrets["edge-eu"] = client(new, at=later).secret_data  # edge-eu renews from the new CA
    hub.run(later)
    assert hub.trusted() == [new.certificate, old.certificate]  # both active: edge-ap is still old's
    assert hub.bundle()[0].since == later
    assert hub.kv["edges/edge-eu"] == published  # held back: the gateway may not trust new yet
    hub.run(later + LEAD - dt.timedelta(seconds=1))
    assert hub.kv["edges/edge-eu"] == published
    hub.run(later + LEAD)
    assert hub.kv["edges/edge-eu"] == hub.secrets["edge-eu"]  # published once the lead has passed


def test_a_retired_ca_stays_until_every_certificate_it_signed_may_have_expired() -> None:
    later = NOW + 2 * HOUR
    old, new = root("client-ca"), root("client-ca", later)
    hub = Hub(old)
    hub.run(NOW)
    old_leaves = {e: certs(hub.kv[f"edges/{e}"]["tls.crt"])[0] for e in ("edge-eu", "edge-ap")}
    hub.secrets = {e: client(new, e, at=later).secret_data for e in hub.secrets}
    hub.run(later)  # old signs no current leaf any more: it retires
    (active, retired) = hub.bundle()
    assert active == trust.Entry(new.certificate, later, None)
    new_leaf = certs(hub.secrets["edge-eu"]["tls.crt"])[0]
    lifetime = new_leaf.not_valid_after_utc - new_leaf.not_valid_before_utc  # 24 h (and the rig's 5 min)
    latest = max(leaf.not_valid_after_utc for leaf in old_leaves.values())
    assert retired.certificate == old.certificate and retired.until == max(latest, later + lifetime)
    assert retired.since == NOW
    text = hub.kv["otel/client-ca"]["ca.crt"]
    hub.run(later + LEAD)  # the leaves are published; the retired CA's date does not move
    assert hub.kv["otel/client-ca"]["ca.crt"] == text
    assert all(hub.kv[f"edges/{e}"] == hub.secrets[e] for e in hub.secrets)
    assert retired.until is not None
    hub.secrets = {e: client(new, e, at=retired.until - HOUR).secret_data for e in hub.secrets}  # renewed again
    hub.run(retired.until - dt.timedelta(seconds=1))
    assert hub.trusted() == [new.certificate, old.certificate]
    hub.run(retired.until)
    assert hub.trusted() == [new.certificate]


def test_nothing_is_held_without_a_valid_published_copy_or_when_the_ca_did_not_change() -> None:
    old, new = root("client-ca"), root("client-ca")
    hub = Hub(new)
    hub.run(NOW)  # a first run: nothing published before, nothing held
    assert all(hub.kv[f"edges/{e}"] == hub.secrets[e] for e in hub.secrets)
    hub.secrets["edge-eu"] = client(new).secret_data  # a renewal from the same CA, within the lead
    hub.run(NOW + dt.timedelta(seconds=30))
    assert hub.kv["edges/edge-eu"] == hub.secrets["edge-eu"]
    # a published copy that expires within the lead is replaced at once
    # issued at the test's NOW, not the wall clock (NOW is taken when the module is imported)
    expiring = issue({**CLIENT, "commonName": "edge-ap", "duration": "6m"}, old, at=NOW).secret_data
    hub.kv["edges/edge-ap"] = expiring
    hub.secrets["edge-ap"] = client(root("client-ca"), "edge-ap").secret_data
    hub.run(NOW + dt.timedelta(minutes=2))
    assert hub.kv["edges/edge-ap"] == hub.secrets["edge-ap"]


def test_an_edge_bundle_carries_the_server_bundle_as_its_ca() -> None:
    client_ca, server_ca = root("client-ca"), root("server-ca")
    gateway = issue({"commonName": "gw", "usages": ["server auth"], "privateKey": KEY}, server_ca).secret_data
    edge = client(client_ca).secret_data
    options = TrustPlan(
        {"otel/client-ca": ["pki/edge"], "otel/server-ca": ["pki/gw"]}, {"edges/edge-eu": "otel/server-ca"}, LEAD
    )
    sources = [
        sync.source_of(SecretSpec("pki", "edge", "edges/edge-eu"), edge),
        sync.source_of(SecretSpec("pki", "gw", "otel/gw"), gateway),
    ]
    written = {i.kv_path: i.bundle for i in sync.plan_hub(sources, options, {}, NOW)}
    assert list(written)[:2] == ["otel/client-ca", "otel/server-ca"]  # bundles before the leaves
    assert written["edges/edge-eu"]["ca.crt"] == written["otel/server-ca"]["ca.crt"]
    assert certs(written["edges/edge-eu"]["ca.crt"]) == [server_ca.certificate]
    assert certs(written["otel/client-ca"]["ca.crt"]) == [client_ca.certificate]
    assert written["otel/gw"] == gateway and {k: written["edges/edge-eu"][k] for k in ("tls.crt", "tls.key")} == {
        k: edge[k] for k in ("tls.crt", "tls.key")
    }


def test_a_ca_crt_that_did_not_sign_the_leaf_is_never_trusted() -> None:
    leaf = client(root("client-ca")).secret_data
    foreign = root("someone else's CA").secret_data["tls.crt"]
    source = sync.source_of(SecretSpec("pki", "edge", "edges/edge-eu"), {**leaf, "ca.crt": foreign})
    with pytest.raises(InvalidCertificateError, match=r"no CA certificate in ca.crt signed its certificate"):
        source.issuer()


def parsed(*flags: str) -> TrustPlan:
    args = parse_args(
        ["hub", "--vault-addr", "https://v:8200", "--secret", "pki/a=edges/a", "--secret", "pki/g=otel/g", *flags]
    )
    plan: TrustPlan = args.trust
    return plan


def test_the_trust_flags() -> None:
    plan = parsed(
        "--trust", "pki/a=otel/client-ca", "--trust", "pki/g=otel/server-ca", "--peer-ca", "edges/a=otel/server-ca"
    )
    assert plan == TrustPlan(
        {"otel/client-ca": ["pki/a"], "otel/server-ca": ["pki/g"]}, {"edges/a": "otel/server-ca"}, LEAD
    )
    assert parsed("--trust-lead", "2").lead == dt.timedelta(seconds=2)
    for flags, message in (
        (("--trust", "pki/x=otel/client-ca"), "pki/x is not a --secret"),
        (("--trust", "pki/a=otel/g"), "is the KV path of --secret pki/g"),
        (("--peer-ca", "edges/a=otel/server-ca"), "BUNDLE_PATH of a --trust"),
        (("--trust", "pki/a=otel/c", "--peer-ca", "edges/x=otel/c"), "KV_PATH of a --secret"),
    ):
        with pytest.raises(UsageError, match=message):
            parsed(*flags)
    with pytest.raises(UsageError):
        parsed("--ca-secret", "pki/client-ca=otel/client-ca")  # a CA's Secret is never read
