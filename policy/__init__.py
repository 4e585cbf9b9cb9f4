"""The fedobs Pulumi policy pack: the rules are in :mod:`policy.rules`, the pack in ``__main__.py``."""
