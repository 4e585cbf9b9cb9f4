"""What VSO writes into a VaultDynamicSecret's Secret, and what a NotebookValidationJob's Pod then sees.

VSO cannot run here (it is a controller of a real cluster). Its Secret data is modelled from its
source, hashicorp/vault-secrets-operator v1.4.1 (commit 9b840a5a), for the constructs fedobs uses:

- templates (helpers/template.go ``renderTemplates``; template/template.go: Go ``text/template`` with
  sprig functions): only literal text and the action ``{{ .Secrets.<field> }}`` are rendered here,
  ``.Secrets`` being Vault's ``data`` (``WithVaultData``); a missing field prints ``<no value>``, as
  ``text/template`` does for a map without ``missingkey``. Any other action raises: render only what
  is used, and fail loudly if the stack starts using more.
- ``excludeRaw``/``excludes``/``includes`` (helpers/secrets.go ``makeK8sData``, helpers/template.go
  ``FilterData``): ``_raw`` unless excluded; the templates' keys; then Vault's fields that the
  regular expressions (Go ``MatchString``: unanchored) let through and no template already wrote.

The Pod: the Jupyter Notebook Validator Operator v1.0.8 (commit 2d4323d4) builds one validation
container (internal/controller/notebookvalidationjob_controller.go ``createValidationPod``,
``buildEnvFromSources``; papermill_helper.go ``buildPapermillValidationContainer``,
``buildValidationConfigEnvVars``): without ``podConfig.env`` its environment is the operator's own
variables, then ``envFrom`` (and ``credentials``) Secrets, a later source winning a duplicate key and
explicit variables winning over ``envFrom`` (Kubernetes' rule). ``podConfig.env`` is not modelled
(the controller then replaces the container's variables; fedobs never sets it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
SECRETS_FIELD = re.compile(r"^\s*\.Secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*$")
RAW_KEY = "_raw"


def render(text: str, secrets: Mapping[str, Any]) -> str:
    """One template over ``.Secrets`` (only ``{{ .Secrets.<field> }}`` actions)."""

    def action(match: re.Match[str]) -> str:
        field = SECRETS_FIELD.match(match.group(1))
        if field is None:
            raise NotImplementedError(f"template action {match.group(0)!r} is not modelled (rig/vso_secret.py)")
        value = secrets.get(field.group(1))
        if value is None:
            return "<no value>"
        if not isinstance(value, str):
            raise NotImplementedError(f"printing a {type(value).__name__} is not modelled")
        return value

    return ACTION.sub(action, text)


def _kept(key: str, patterns: list[str]) -> bool:
    return any(re.search(p, key) for p in patterns)


def secret_data(spec: Mapping[str, Any], vault_data: Mapping[str, Any]) -> dict[str, str]:
    """The destination Secret's data (decoded) for a VaultDynamicSecret ``spec`` and Vault's answer's
    ``data``."""
    transformation = spec["destination"].get("transformation", {})
    unmodelled = set(transformation) - {"templates", "excludes", "includes", "excludeRaw"}
    if unmodelled:
        raise NotImplementedError(f"transformation keys {sorted(unmodelled)} are not modelled")
    data: dict[str, str] = {}
    if not transformation.get("excludeRaw", False):
        data[RAW_KEY] = json.dumps(dict(vault_data))
    for key, template in transformation.get("templates", {}).items():
        data[key] = render(template["text"], vault_data)
    excludes, includes = transformation.get("excludes", []), transformation.get("includes", [])
    for key, value in vault_data.items():
        if excludes and _kept(key, excludes):
            continue
        if includes and not _kept(key, includes):
            continue
        data.setdefault(key, value if isinstance(value, str) else json.dumps(value))
    return data


#: The validation container's own variables when the CR sets no ``podConfig.env`` and no
#: ``validationConfig`` (papermill_helper.go).
OPERATOR_ENV = {
    "VALIDATION_LEVEL": "development",
    "VALIDATION_STRICT_MODE": "false",
    "VALIDATION_FAIL_ON_STDERR": "false",
    "VALIDATION_FAIL_ON_WARNINGS": "false",
    "VALIDATION_DETECT_SILENT_FAILURES": "true",
    "HOME": "/workspace",
    "PYTHONUSERBASE": "/workspace/.local",
    "PIP_USER": "1",
    "PIP_NO_CACHE_DIR": "1",
}


def pod_environment(job: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The validation container's environment for the NotebookValidationJob ``job``, with the Secrets
    of its namespace by name (a missing one raises: the kubelet would not start the container)."""
    pod_config = job["spec"]["podConfig"]
    if pod_config.get("env") or job["spec"].get("validationConfig") or job["spec"].get("modelValidation"):
        raise NotImplementedError("podConfig.env, validationConfig and modelValidation are not modelled")
    sources = [s["secretRef"]["name"] for s in pod_config.get("envFrom", [])]
    sources += list(pod_config.get("credentials", []))
    from_sources: dict[str, str] = {}
    for name in sources:
        from_sources.update(secrets[name])
    return {**from_sources, **OPERATOR_ENV}


def pod_files(job: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Path -> content of every file the CR's Secret volumes put into the validation container."""
    pod_config = job["spec"]["podConfig"]
    volumes = {v["name"]: v for v in pod_config.get("volumes", [])}
    files = {}
    for mount in pod_config.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if set(volume) != {"name", "secret"} or set(volume["secret"]) != {"secretName"} or "subPath" in mount:
            raise NotImplementedError(f"volume {volume} is not modelled")
        for key, value in secrets[volume["secret"]["secretName"]].items():
            files[f"{mount['mountPath']}/{key}"] = value
    return files
