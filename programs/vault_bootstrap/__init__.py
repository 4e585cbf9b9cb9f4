"""fedobs Vault bootstrap Job: init once, unseal, wait for voters, hand over to an admin userpass login.

See :mod:`programs.vault_bootstrap.bootstrap` for the guarantees and ``python -m programs.vault_bootstrap
--help`` for the flags.
"""

from programs.vault_bootstrap.bootstrap import (
    EXIT_ADMIN_LOGIN,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_OPERATOR_ACTION,
    EXIT_USAGE,
    Bootstrap,
    BootstrapError,
    Config,
    FileStateStore,
    KubernetesSecretStateStore,
    Peer,
    StateStore,
    VaultClient,
    run,
)

__all__ = [
    "EXIT_ADMIN_LOGIN",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_OPERATOR_ACTION",
    "EXIT_USAGE",
    "Bootstrap",
    "BootstrapError",
    "Config",
    "FileStateStore",
    "KubernetesSecretStateStore",
    "Peer",
    "StateStore",
    "VaultClient",
    "run",
]
