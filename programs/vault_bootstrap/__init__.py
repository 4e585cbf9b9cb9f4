"""fedobs Vault bootstrap Job: init once, unseal, wait for voters, hand over to an admin userpass login.

See :mod:`programs.vault_bootstrap.bootstrap` for the guarantees and ``python -m programs.vault_bootstrap
--help`` for the flags.
"""
