"""docs/vault-config.md is generated from the shipped stacks; it must not drift from the code."""

from __future__ import annotations

from offline.vault_config_doc import DOC, render


def test_vault_config_doc_is_current() -> None:
    assert DOC.read_text() == render(), "docs/vault-config.md is out of date: run python -m offline.vault_config_doc"
