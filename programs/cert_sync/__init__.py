"""Certificates from cert-manager Secrets into Vault KV, hub -> edge: the program of the cert-sync
CronJobs.

Run it as ``python -m programs.cert_sync hub|edge ...``; see :mod:`programs.cert_sync.sync` for the
behaviour, options (flags and environment variables), the Vault capabilities it needs, and the
exit codes. :func:`validate_bundle` is the check every copied certificate passes first.
"""

from programs.cert_sync.sync import (
    DEFAULT_HUB_APPROLE_MOUNT,
    DEFAULT_JWT_FILE,
    DEFAULT_KV_MOUNT,
    DEFAULT_KV_PATH,
    EXIT_CONFLICT,
    EXIT_INVALID,
    EXIT_SOURCE,
    EXIT_TARGET,
    EXIT_TERMINATED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    HUB_KV_NAME,
    TLS_KEYS,
    CertSummary,
    ConflictError,
    InvalidCertificateError,
    SecretSpec,
    SourceError,
    SyncError,
    TargetError,
    UsageError,
    hub_kv_path,
    main,
    parse_secret_spec,
    validate_bundle,
)

__all__ = [
    "DEFAULT_HUB_APPROLE_MOUNT",
    "DEFAULT_JWT_FILE",
    "DEFAULT_KV_MOUNT",
    "DEFAULT_KV_PATH",
    "EXIT_CONFLICT",
    "EXIT_INVALID",
    "EXIT_SOURCE",
    "EXIT_TARGET",
    "EXIT_TERMINATED",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "HUB_KV_NAME",
    "TLS_KEYS",
    "CertSummary",
    "ConflictError",
    "InvalidCertificateError",
    "SecretSpec",
    "SourceError",
    "SyncError",
    "TargetError",
    "UsageError",
    "hub_kv_path",
    "main",
    "parse_secret_spec",
    "validate_bundle",
]
