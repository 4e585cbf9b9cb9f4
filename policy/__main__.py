"""The fedobs policy pack, as ``pulumi preview --policy-pack policy`` starts it.

The CLI runs this directory as a program (``python -m pulumi.policy <engine> .`` inside the pack's
virtual environment, ``policy/venv``, with this directory first on ``sys.path``); the rules live in
``rules.py`` beside it. This is the only place a ``PolicyPack`` is built: building one starts the
analyzer's gRPC server and blocks.
"""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, PolicyPack

try:
    from policy import rules
except ImportError:  # run by the CLI: the repository root is not on sys.path, this directory is
    import rules  # type: ignore[no-redef]

# Validations must see which inputs the engine sent as secrets (see rules.keep_secret_markers).
rules.keep_secret_markers()

PolicyPack(
    name=rules.PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=rules.policies(),
    description="fedobs guardrails checked before any change: Vault TLS, no dev server, hardened listeners, "
    "exact Kubernetes auth bindings, bounded and typed Vault policies and roles, VSO TLS, pinned charts and "
    "images, secret inputs, no plain credentials in config, enforcing admission, encrypted unseal keys, the "
    "hub's control-plane ACL, "
    "firewalled LoadBalancers, protected state.",
)
