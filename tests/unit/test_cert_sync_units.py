"""Unit tests of programs.cert_sync: certificate validation (certificates from rig.pki),
the command line, and error texts. The real-server behaviour is in tests/real/test_cert_sync.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import pytest
from cryptography.hazmat.primitives import serialization

from programs.cert_sync import sync
from programs.cert_sync.sync import (
    EXIT_USAGE,
    InvalidCertificateError,
    SecretSpec,
    UsageError,
    hub_kv_path,
    main,
    parse_args,
    parse_secret_spec,
    validate_bundle,
)
from rig.pki import IssuedCert, TestCA

SECOND = dt.timedelta(seconds=1)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("unit-client-ca")


@pytest.fixture(scope="module")
def leaf(ca: TestCA) -> IssuedCert:
    return ca.issue("edge-eu", [], [], server=False, client=True)


def bundle(ca: TestCA, cert: IssuedCert) -> dict[str, str]:
    return {"tls.crt": cert.cert_pem, "tls.key": cert.key_pem, "ca.crt": ca.cert_pem}


def rejected(data: Mapping[str, object], match: str, now: dt.datetime | None = None) -> str:
    with pytest.raises(InvalidCertificateError, match=match) as info:
        validate_bundle(data, "Secret otel/x", now=now)
    message = str(info.value)
    assert message.startswith("Secret otel/x: ")
    assert "PRIVATE KEY" not in message and "-----" not in message and "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["ECDSA", "RSA"])
def test_a_valid_bundle_passes(ca: TestCA, algorithm: str) -> None:
    cert = ca.issue("edge-eu", [], [], server=False, client=True, key_algorithm=algorithm)  # type: ignore[arg-type]
    summary = validate_bundle(bundle(ca, cert), "x")
    assert summary.subject == "CN=edge-eu"
    assert summary.serial == cert.certificate.serial_number
    assert summary.not_after == cert.certificate.not_valid_after_utc
    assert (summary.chain_length, summary.ca_certificates) == (1, 1)


def test_a_chain_and_a_ca_bundle_pass(ca: TestCA, leaf: IssuedCert) -> None:
    other = TestCA("another-ca")
    data = {"tls.crt": leaf.cert_pem + ca.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca.cert_pem + other.cert_pem}
    summary = validate_bundle(data, "x")
    assert (summary.chain_length, summary.ca_certificates) == (2, 2)


def test_a_ca_secret_from_cert_manager_passes(ca: TestCA) -> None:
    """cert-manager's CA Secret: tls.crt is the CA itself, with its key."""
    validate_bundle({"tls.crt": ca.cert_pem, "tls.key": ca.key_pem, "ca.crt": ca.cert_pem}, "x")


def test_a_key_of_another_certificate_is_rejected(ca: TestCA, leaf: IssuedCert) -> None:
    other = ca.issue("other", [], [], server=False, client=True)
    message = rejected({**bundle(ca, leaf), "tls.key": other.key_pem}, "tls.key does not match the certificate")
    assert "CN=edge-eu" in message and f"{leaf.certificate.serial_number:x}" in message


def test_the_key_must_match_the_leaf_not_a_later_certificate(ca: TestCA, leaf: IssuedCert) -> None:
    rejected({"tls.crt": ca.cert_pem + leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca.cert_pem}, "does not match")


def test_validity_window_is_enforced(ca: TestCA, leaf: IssuedCert) -> None:
    cert = leaf.certificate
    data = bundle(ca, leaf)
    validate_bundle(data, "x", now=cert.not_valid_after_utc)  # inclusive bounds
    validate_bundle(data, "x", now=cert.not_valid_before_utc)
    message = rejected(data, "expired at", now=cert.not_valid_after_utc + SECOND)
    assert cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ") in message
    rejected(data, "not valid yet", now=cert.not_valid_before_utc - SECOND)


def test_a_certificate_issued_for_zero_days_is_expired_at_once(ca: TestCA) -> None:
    rejected(bundle(ca, ca.issue("edge-eu", [], [], server=False, client=True, days=0)), "expired at")


@pytest.mark.parametrize("key", sync.TLS_KEYS)
def test_every_key_is_required(ca: TestCA, leaf: IssuedCert, key: str) -> None:
    data: dict[str, object] = dict(bundle(ca, leaf))
    del data[key]
    rejected(data, f"{key} is missing")
    rejected({**data, key: "  \n"}, f"{key} is empty")
    rejected({**data, key: 42}, f"{key} is not text")


def test_tls_crt_must_hold_only_certificates(ca: TestCA, leaf: IssuedCert) -> None:
    data = bundle(ca, leaf)
    rejected({**data, "tls.crt": "not a certificate"}, "tls.crt holds no PEM certificate")
    rejected(
        {**data, "tls.crt": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
        "tls.crt is not valid PEM certificate data",
    )
    rejected({**data, "tls.crt": leaf.cert_pem + leaf.key_pem}, r"tls.crt holds PEM blocks that are not certificates")


def test_ca_crt_must_parse(ca: TestCA, leaf: IssuedCert) -> None:
    data = bundle(ca, leaf)
    rejected({**data, "ca.crt": "garbage"}, "ca.crt holds no PEM certificate")
    rejected(
        {**data, "ca.crt": ca.cert_pem + ca.key_pem},
        r"ca.crt holds PEM blocks that are not certificates \(private key\)",
    )
    broken = ca.cert_pem.replace("\n", "\n!", 3)
    rejected({**data, "ca.crt": broken}, "ca.crt")


def test_tls_key_must_be_one_unencrypted_private_key(ca: TestCA, leaf: IssuedCert) -> None:
    data = bundle(ca, leaf)
    key = serialization.load_pem_private_key(leaf.key_pem.encode(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    ).decode()
    rejected({**data, "tls.key": encrypted}, "tls.key is encrypted")
    rejected({**data, "tls.key": leaf.key_pem + leaf.key_pem}, "exactly one PEM private key")
    rejected({**data, "tls.key": leaf.cert_pem}, "exactly one PEM private key")
    rejected(
        {**data, "tls.key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
        "tls.key is not a valid PEM private key",
    )


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def test_secret_specs() -> None:
    assert parse_secret_spec("otel/otel-client-tls-edge-eu=edges/edge-eu/otel-client-tls") == SecretSpec(
        "otel", "otel-client-tls-edge-eu", "edges/edge-eu/otel-client-tls"
    )
    for bad in (
        "otel-client-tls=kv",
        "otel/x",
        "Otel/x=a",
        "otel/x=",
        "otel/x=/a",
        "otel/x=a/",
        "otel/x=a/../b",
        "otel/x=a//b",
        "otel/X_y=a",
    ):
        with pytest.raises(UsageError):
            parse_secret_spec(bad)
    assert hub_kv_path("edge-eu") == "edges/edge-eu/otel-client-tls"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith(("VAULT_", "CERT_SYNC_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_everything_comes_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CERT_SYNC_MODE", "hub")
    clean_env.setenv("VAULT_ADDR", "https://vault.vault.svc:8200")
    clean_env.setenv("CERT_SYNC_SECRETS", "otel/a=edges/e/a, otel/b=otel/b\notel/c=otel/c")
    clean_env.setenv("CERT_SYNC_TIMEOUT", "7")
    args = parse_args([])
    assert args.mode == "hub" and args.timeout == 7.0
    assert [s.kv_path for s in args.secrets] == ["edges/e/a", "otel/b", "otel/c"]
    assert args.jwt_file == "/var/run/secrets/vault/token"
    assert args.kube_api == "https://kubernetes.default.svc"
    # flags win over the environment
    args = parse_args(["hub", "--secret", "otel/z=otel/z", "--timeout", "2"])
    assert [s.ref for s in args.secrets] == ["otel/z"] and args.timeout == 2.0

    clean_env.setenv("CERT_SYNC_MODE", "edge")
    clean_env.setenv("CERT_SYNC_EDGE", "edge-eu")
    clean_env.setenv("CERT_SYNC_HUB_ADDR", "https://hub.example.net:8200")
    clean_env.setenv("CERT_SYNC_HUB_ROLE_ID_FILE", "/r")
    clean_env.setenv("CERT_SYNC_HUB_SECRET_ID_FILE", "/s")
    args = parse_args([])
    assert (args.mode, args.edge, args.kv_path, args.hub_approle_mount, args.kv_mount) == (
        "edge",
        "edge-eu",
        "otel/otel-client-tls",
        "approle-edges",
        "kv",
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["hub"], "missing --vault-addr"),
        (["hub", "--vault-addr", "https://v"], "missing --secret"),
        (["hub", "--vault-addr", "http://v:8200", "--secret", "a/b=c"], "must be an https:// URL"),
        (["hub", "--vault-addr", "https://v", "--secret", "a/b=c", "--secret", "a/d=c"], "KV path c is given twice"),
        (["hub", "--vault-addr", "https://v", "--secret", "a/b=c", "--kube-api", "http://k"], "--kube-api"),
        (["hub", "--vault-addr", "https://v", "--secret", "a/b=c", "--timeout", "0"], "must be positive"),
        (["edge", "--vault-addr", "https://v"], "missing --edge"),
        (
            [
                "edge",
                "--vault-addr",
                "https://v",
                "--edge",
                "Edge_1",
                "--hub-addr",
                "https://h",
                "--hub-role-id-file",
                "r",
                "--hub-secret-id-file",
                "s",
            ],
            "not a valid edge name",
        ),
        (
            [
                "edge",
                "--vault-addr",
                "https://v",
                "--edge",
                "e",
                "--hub-addr",
                "https://h",
                "--hub-role-id-file",
                "/nonexistent/r",
                "--hub-secret-id-file",
                "s",
                "--jwt-file",
                "/nonexistent/j",
            ],
            "cannot read the Vault service-account token file /nonexistent/j",
        ),
        (["sideways"], "invalid choice"),
        (
            [
                "follow",
                "--vault-addr",
                "https://v",
                "--edge",
                "e",
                "--hub-addr",
                "https://h",
                "--hub-role-id-file",
                "r",
            ],
            "missing --poll (CERT_SYNC_POLL), --hub-credential (CERT_SYNC_HUB_CREDENTIAL) or --hub-secret-id-file",
        ),
        (
            [
                "follow",
                "--vault-addr",
                "https://v",
                "--edge",
                "e",
                "--hub-addr",
                "https://h",
                "--hub-role-id-file",
                "r",
                "--poll",
                "75",
                "--hub-credential",
                "no-slash",
            ],
            "--hub-credential 'no-slash' must be NAMESPACE/NAME of a Secret",
        ),
        (
            [
                "follow",
                "--vault-addr",
                "https://v",
                "--edge",
                "e",
                "--hub-addr",
                "https://h",
                "--hub-role-id-file",
                "/nonexistent/r",
                "--poll",
                "75",
                "--hub-secret-id-file",
                "s",
            ],
            "cannot read the AppRole role_id file /nonexistent/r",
        ),
        (
            ["hub", "--vault-addr", "https://v", "--secret", "a/b=c", "--passes", "3"],
            "missing --interval (CERT_SYNC_INTERVAL), needed with --passes 3",
        ),
        (["hub", "--vault-addr", "https://v", "--secret", "a/b=c", "--passes", "0"], "must be between 1 and 60"),
        (["hub", "--vault-addr", "https://v", "--secret", "a/b=c", "--passes", "two"], "'two' is not a whole number"),
        (
            ["hub", "--vault-addr", "https://v", "--secret", "a/b=c", "--passes", "2", "--interval", "0"],
            "must be more than 0",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("cert-sync: error: "), err
    assert needle in err, err


# ---------------------------------------------------------------------------------------------
# passes
# ---------------------------------------------------------------------------------------------
class Clock:
    """A fake monotonic clock: each sync takes ``run`` seconds, sleeps advance it."""

    def __init__(self, run: float) -> None:
        self.now, self.run, self.sleeps = 100.0, run, []  # type: ignore[var-annotated]

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def hub_argv(*extra: str) -> list[str]:
    return ["hub", "--vault-addr", "https://v", "--secret", "a/b=c", *extra]


@pytest.mark.parametrize(("run", "sleeps"), [(1.0, [19.0, 19.0]), (25.0, [0.0, 0.0])])
def test_passes_start_on_a_fixed_schedule(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], run: float, sleeps: list[float]
) -> None:
    clock = Clock(run)
    starts: list[float] = []

    def fake_sync(args: object) -> sync.Outcome:
        starts.append(clock.now)
        clock.now += clock.run
        return sync.Outcome([], [("kv/data/c", 4)])

    clean_env.setattr(sync, "cmd_hub", fake_sync)
    clean_env.setattr(sync.time, "monotonic", clock.monotonic)
    clean_env.setattr(sync.time, "sleep", clock.sleep)
    assert main(hub_argv("--passes", "3", "--interval", "20")) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        f"cert-sync: pass {k} of 3: synced 0, unchanged 1 (unchanged kv/data/c (version 4))" for k in (1, 2, 3)
    ]
    # pass k starts k * 20 s after the first; one that ran over starts right after the one before
    assert clock.sleeps == sleeps
    assert [s - starts[0] for s in starts] == ([0.0, 20.0, 40.0] if run < 20 else [0.0, 25.0, 50.0])


def test_the_first_failed_pass_ends_the_run_with_its_exit_code(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock(1.0)
    calls: list[int] = []

    def fake_sync(args: object) -> sync.Outcome:
        calls.append(1)
        clock.now += clock.run
        if len(calls) == 2:
            raise sync.ConflictError("writing kv/data/c: HTTP 400: check-and-set parameter did not match")
        return sync.Outcome([("kv/data/c", 5)], [])

    clean_env.setattr(sync, "cmd_hub", fake_sync)
    clean_env.setattr(sync.time, "monotonic", clock.monotonic)
    clean_env.setattr(sync.time, "sleep", clock.sleep)
    assert main(hub_argv("--passes", "3", "--interval", "20")) == sync.EXIT_CONFLICT
    out, err = capsys.readouterr()
    assert len(calls) == 2  # no third pass after the failure
    assert out == "cert-sync: pass 1 of 3: synced 1, unchanged 0 (written kv/data/c (version 5))\n"
    assert err == (
        "cert-sync: error: pass 2 of 3: writing kv/data/c: HTTP 400: check-and-set parameter did not match\n"
    )


def test_one_pass_is_todays_single_run(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setattr(sync, "cmd_hub", lambda args: sync.Outcome([("kv/data/c", 1)], []))
    clean_env.setattr(sync.time, "sleep", lambda seconds: pytest.fail("one pass never sleeps"))
    assert main(hub_argv()) == 0
    assert capsys.readouterr().out == "cert-sync: synced 1, unchanged 0 (written kv/data/c (version 1))\n"
    clean_env.setenv("CERT_SYNC_PASSES", "2")
    clean_env.setenv("CERT_SYNC_INTERVAL", "0.5")
    args = parse_args(hub_argv())
    assert (args.passes, args.interval) == (2, 0.5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-06T03:00:00Z", 1796526000.0),
        ("2026-12-06T03:00:00.123456789Z", 1796526000.123456),  # Vault's nanoseconds, cut to micro
        ("2026-12-06T04:00:00+01:00", 1796526000.0),
        ("", None),
        ("yesterday", None),
        (12, None),
    ],
)
def test_vault_times_are_read_as_posix_seconds(text: object, expected: float | None) -> None:
    from programs.cert_sync.follow import _timestamp

    value = _timestamp(text)
    assert value == pytest.approx(expected) if expected is not None else value is None
