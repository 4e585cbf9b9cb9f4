"""Vault Raft snapshots to S3-compatible object storage: the program of the snapshot CronJob.

Run it as ``python -m programs.raft_snapshot [take|list|restore] ...``; see
:mod:`programs.raft_snapshot.snapshot` for the behaviour, options, and exit codes.
:data:`SNAPSHOT_POLICY_HCL` is the Vault policy its Kubernetes auth role needs.
"""

from programs.raft_snapshot.snapshot import (
    EXIT_RETENTION,
    EXIT_STORAGE,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    EXIT_VAULT,
    EXIT_VERIFY,
    SNAPSHOT_POLICY_HCL,
    SnapshotError,
    SnapshotInvalidError,
    main,
    snapshot_key,
    verify_snapshot,
)

__all__ = [
    "EXIT_RETENTION",
    "EXIT_STORAGE",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "EXIT_VAULT",
    "EXIT_VERIFY",
    "SNAPSHOT_POLICY_HCL",
    "SnapshotError",
    "SnapshotInvalidError",
    "main",
    "snapshot_key",
    "verify_snapshot",
]
