"""The hub's watch on each edge's transit-unseal token: the program of the transit-watch CronJob.

Run it as ``python -m programs.transit_watch``; see :mod:`programs.transit_watch.watch` for the
behaviour, options and exit codes. :func:`programs.transit_watch.watch.watch_policy_hcl` is the Vault
policy its Kubernetes auth role needs.
"""
