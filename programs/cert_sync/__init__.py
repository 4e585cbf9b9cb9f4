"""Certificates from cert-manager Secrets into Vault KV, hub -> edge: the program of the cert-sync
CronJobs.

Run it as ``python -m programs.cert_sync hub|edge ...``; see :mod:`programs.cert_sync.sync` for the
behaviour, options (flags and environment variables), the Vault capabilities it needs, and the
exit codes. :func:`programs.cert_sync.sync.validate_bundle` is the check every copied certificate
passes first.
"""
