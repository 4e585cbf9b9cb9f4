"""Vault Raft snapshots to S3-compatible object storage: the program of the snapshot CronJob.

Run it as ``python -m programs.raft_snapshot [take|list|restore] ...``; see
:mod:`programs.raft_snapshot.snapshot` for the behaviour, options, and exit codes.
:data:`programs.raft_snapshot.snapshot.SNAPSHOT_POLICY_HCL` is the Vault policy its Kubernetes auth role needs.
"""
